//! The files a guest has open, kept across a snapshot: which ones
//! ([`OpenFile`], recorded by the capturable `path_open` in
//! [`crate::abi`]), where each stood when the process was captured
//! ([`positions`]), and how a restore reopens them under the same fds at
//! the same positions ([`reopen`]). It talks to wasi-common directly, with
//! a host-side scratch buffer as "guest memory", so the guest's own memory
//! is never touched.

use crate::process::ProcessCtx;
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
pub async fn positions(ctx: &mut ProcessCtx) -> Vec<OpenFile> {
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
        if let Some(f) = ctx.open_files.get(&fd) {
            out.push(OpenFile {
                offset,
                ..f.clone()
            });
        }
    }
    out
}

/// Reopen a snapshot's files in a fresh WASI context, under their original
/// fds and at their original positions. Creation and truncation flags are
/// dropped: the file already exists and its contents are not reset.
pub async fn reopen(ctx: &mut ProcessCtx, files: &[OpenFile]) -> wasmtime::Result<()> {
    for f in files {
        let path = f.path.as_bytes();
        let mut scratch = vec![0u8; path.len() + 8];
        scratch[8..].copy_from_slice(path);
        let oflags = f.oflags & !(OFLAGS_CREAT | OFLAGS_EXCL | OFLAGS_TRUNC);
        let mut guest = wiggle::GuestMemory::Unshared(&mut scratch);
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
        if new_fd != f.fd {
            ctx.wasi.table().renumber(new_fd, f.fd).map_err(|e| {
                wasmtime::Error::msg(format!(
                    "cannot move reopened `{}` to fd {}: {e}",
                    f.path, f.fd
                ))
            })?;
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
                ..f.clone()
            },
        );
    }
    Ok(())
}
