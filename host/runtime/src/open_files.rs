//! The files a guest has open, kept across a snapshot: which ones
//! ([`OpenFile`], recorded by the capturable `path_open` in
//! [`crate::abi`]), where each stood when the process was captured
//! ([`positions`]), and how a restore reopens them under the same fds at
//! the same positions ([`reopen`]). It talks to wasi-common directly, with
//! a host-side scratch buffer as "guest memory", so the guest's own memory
//! is never touched.

use crate::process::ProcessCtx;
use crate::volume::shared::SharedHandle;
use serde::{Deserialize, Serialize};
use wasi_common::snapshots::preview_1::wasi_snapshot_preview1 as preview1;

/// WASI `errno` of success.
const ERRNO_SUCCESS: i32 = 0;

/// A file the guest opened: how to reopen it, and (in a snapshot) where it
/// was positioned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenFile {
    /// The fd the guest holds.
    pub fd: u32,
    /// The directory fd it was opened relative to (a preopen or another dir).
    pub dir_fd: u32,
    /// WASI lookup flags.
    pub dirflags: i32,
    /// The path relative to `dir_fd`.
    pub path: String,
    /// WASI open flags as given.
    pub oflags: i32,
    /// Rights asked for.
    pub rights_base: i64,
    /// Inheriting rights asked for.
    pub rights_inheriting: i64,
    /// fd flags (append, nonblock, ...).
    pub fdflags: i32,
    /// Position at capture (`None` for directories or unseekable files).
    pub offset: Option<u64>,
    /// A shared-volume file's written, unpublished copy, carried by an
    /// image under output commit (its capture publishes nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy: Option<crate::volume::shared::SharedCopyImage>,
}

// Which fds are in a shared volume: wasi-common's fd table is private, so
// the tracked `path_open`, `fd_close` and `fd_renumber` keep it
// (`ProcessCtx::shared_fds`), as they keep the open files.

/// After a successful `path_open` of `fd`: remember whether it is in a
/// shared volume (what the open made, if anything, is in the session).
pub fn track_shared(ctx: &mut ProcessCtx, fd: u32) {
    let opened = ctx.volumes.session().and_then(|s| s.take_opened());
    match opened {
        Some(h) => {
            ctx.shared_fds.insert(fd, h);
        }
        None => {
            ctx.shared_fds.remove(&fd);
        }
    }
}

/// Before a `path_open`: forget what an earlier open made.
pub fn before_open(ctx: &ProcessCtx) {
    if let Some(s) = ctx.volumes.session() {
        s.clear_opened();
    }
}

/// After a successful `fd_close` of `fd`.
pub fn forget_shared(ctx: &mut ProcessCtx, fd: u32) {
    ctx.shared_fds.remove(&fd);
}

/// After a successful `fd_renumber` of `from` to `to`.
pub fn renumber_shared(ctx: &mut ProcessCtx, from: u32, to: u32) {
    ctx.shared_fds.remove(&to);
    if let Some(h) = ctx.shared_fds.remove(&from) {
        ctx.shared_fds.insert(to, h);
    }
}

/// WASI `whence` values and `oflags` bits used when reopening.
const WHENCE_SET: i32 = 0;
const WHENCE_CUR: i32 = 1;
const OFLAGS_CREAT: i32 = 1;
const OFLAGS_EXCL: i32 = 4;
const OFLAGS_TRUNC: i32 = 8;

/// The open files of a paused process with their current positions. Calls
/// wasi-common with a host-side scratch buffer as "guest memory", so the
/// guest's own memory is not touched.
///
/// Under output commit a shared-volume file's written copy is stored in
/// the registry and recorded with it ([`OpenFile::copy`]); a failure to
/// store one fails the capture.
pub async fn positions(ctx: &mut ProcessCtx) -> Result<Vec<OpenFile>, wasi_common::Error> {
    let fds: Vec<u32> = ctx.open_files.keys().copied().collect();
    let mut out = Vec::with_capacity(fds.len());
    let mut scratch = [0u8; 8];
    for fd in fds {
        let mut guest = wiggle::GuestMemory::Unshared(&mut scratch);
        let r = preview1::fd_seek(&mut ctx.wasi, &mut guest, fd as i32, 0, WHENCE_CUR, 0).await;
        let offset = match r {
            Ok(ERRNO_SUCCESS) => Some(u64::from_le_bytes(scratch)),
            _ => None,
        };
        let copy = match ctx.shared_fds.get(&fd) {
            Some(SharedHandle::File(c)) if ctx.mailbox.output_commit() => c.image()?,
            _ => None,
        };
        if let Some(f) = ctx.open_files.get(&fd) {
            out.push(OpenFile {
                offset,
                copy,
                ..f.clone()
            });
        }
    }
    Ok(out)
}

/// Reopen a snapshot's files in a fresh WASI context, under their original
/// fds and at their original positions. Creation and truncation flags are
/// dropped: the file already exists and its contents are not reset.
pub async fn reopen(ctx: &mut ProcessCtx, files: &[OpenFile]) -> wasmtime::Result<()> {
    for f in files {
        let path = f.path.as_bytes();
        let mut scratch = vec![0u8; path.len() + 8];
        scratch[8..].copy_from_slice(path);
        let mut oflags = f.oflags & !(OFLAGS_CREAT | OFLAGS_EXCL | OFLAGS_TRUNC);
        if f.copy.is_some() {
            // An unpublished new file is not in the volume yet.
            oflags |= OFLAGS_CREAT;
        }
        let mut guest = wiggle::GuestMemory::Unshared(&mut scratch);
        before_open(ctx);
        let errno = preview1::path_open(
            &mut ctx.wasi,
            &mut guest,
            f.dir_fd as i32,
            f.dirflags,
            8,
            path.len() as i32,
            oflags,
            f.rights_base,
            f.rights_inheriting,
            f.fdflags,
            0,
        )
        .await?;
        if errno != ERRNO_SUCCESS {
            return Err(wasmtime::Error::msg(format!(
                "cannot reopen `{}` (fd {}) on this node: WASI errno {errno}",
                f.path, f.fd
            )));
        }
        let new_fd = u32::from_le_bytes([scratch[0], scratch[1], scratch[2], scratch[3]]);
        track_shared(ctx, new_fd);
        if let Some(image) = &f.copy {
            let Some(SharedHandle::File(copy)) = ctx.shared_fds.get(&new_fd) else {
                return Err(wasmtime::Error::msg(format!(
                    "`{}` (fd {}) carries a shared-volume copy but is not a shared file here",
                    f.path, f.fd
                )));
            };
            copy.restore(image).map_err(|e| {
                wasmtime::Error::msg(format!(
                    "cannot restore the written copy of `{}`: {e}",
                    f.path
                ))
            })?;
        }
        if new_fd != f.fd {
            ctx.wasi.table().renumber(new_fd, f.fd).map_err(|e| {
                wasmtime::Error::msg(format!(
                    "cannot move reopened `{}` to fd {}: {e}",
                    f.path, f.fd
                ))
            })?;
            renumber_shared(ctx, new_fd, f.fd);
        }
        if let Some(offset) = f.offset {
            let mut guest = wiggle::GuestMemory::Unshared(&mut scratch[..8]);
            let errno = preview1::fd_seek(
                &mut ctx.wasi,
                &mut guest,
                f.fd as i32,
                offset as i64,
                WHENCE_SET,
                0,
            )
            .await?;
            if errno != ERRNO_SUCCESS {
                return Err(wasmtime::Error::msg(format!(
                    "cannot seek `{}` to {offset}: WASI errno {errno}",
                    f.path
                )));
            }
        }
        ctx.open_files.insert(
            f.fd,
            OpenFile {
                offset: None,
                copy: None,
                ..f.clone()
            },
        );
    }
    Ok(())
}

/// The chunks of the shared-volume copies `files` carry, each once, for an
/// image's list of blobs (a replica or a move's target fetches them).
pub fn copy_chunk_refs(files: &[OpenFile]) -> Vec<shoal_snapshot_format::BlobRef> {
    crate::volume::tree::file_chunk_refs(
        files
            .iter()
            .filter_map(|f| f.copy.as_ref())
            .map(|c| (c.size, &c.chunks[..])),
    )
}
