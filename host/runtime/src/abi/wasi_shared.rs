//! The WASI calls that change a shared volume, as effects under output
//! commit (issue #16).
//!
//! A shared volume's writes are seen by every other process that opens
//! the file or lists the directory, so for a process that may resume from
//! a checkpoint they are output like its messages: a write the lost copy
//! made after its last recorded checkpoint would stay visible though the
//! resumed history may never make it (or make another). So each call that
//! writes the volume's tree — `fd_close` and `fd_sync` / `fd_datasync` of
//! a written file (they publish it), `path_create_directory`,
//! `path_unlink_file`, `path_remove_directory`, `path_rename` — waits,
//! captured inside the call, until a recorded checkpoint covers it
//! ([`effect::commit_first`]), and its write then goes under the effect's
//! key. A copy resumed from that checkpoint is inside the same call and
//! writes again; the state machine answers the repeat with the first
//! result. A call on anything else (a private volume, a granted
//! directory, a file only read) is not held back.
//!
//! These calls are blocking imports for every module (Asyncify instruments
//! the way to them); without output commit they act at once, as before.
//! Which fds are shared ones is kept per process by the tracked
//! `path_open`, `fd_close` and `fd_renumber` ([`crate::open_files`]).

use super::effect::{self, Gate};
use super::memory::guest_memory;
use super::{arg_i32, Registrar};
use crate::capture::{self, Entry};
use crate::process::ProcessCtx;
use crate::volume::shared::SharedHandle;
use wasi_common::snapshots::preview_1::wasi_snapshot_preview1 as preview1;
use wasmtime::{Caller, Val};

const FD_CLOSE: &str = "wasi_snapshot_preview1.fd_close";
const FD_SYNC: &str = "wasi_snapshot_preview1.fd_sync";
const FD_DATASYNC: &str = "wasi_snapshot_preview1.fd_datasync";
const PATH_CREATE_DIRECTORY: &str = "wasi_snapshot_preview1.path_create_directory";
const PATH_UNLINK_FILE: &str = "wasi_snapshot_preview1.path_unlink_file";
const PATH_REMOVE_DIRECTORY: &str = "wasi_snapshot_preview1.path_remove_directory";
const PATH_RENAME: &str = "wasi_snapshot_preview1.path_rename";

const ERRNO_SUCCESS: i32 = 0;
const ERRNO_FAULT: i32 = 21;

/// Is `fd` a directory of a shared volume?
fn shared_dir(ctx: &ProcessCtx, fd: i32) -> bool {
    shared_handle(ctx, fd).is_some_and(|h| matches!(h, SharedHandle::Dir))
}

/// Is `fd` a file of a shared volume with something to publish?
fn shared_written(ctx: &ProcessCtx, fd: i32) -> bool {
    shared_handle(ctx, fd).is_some_and(|h| matches!(h, SharedHandle::File(c) if c.needs_publish()))
}

/// What `fd` is in a shared volume, if it is in one.
fn shared_handle(ctx: &ProcessCtx, fd: i32) -> Option<&SharedHandle> {
    u32::try_from(fd)
        .ok()
        .and_then(|fd| ctx.shared_fds.get(&fd))
}

/// Enter `import` and, when it writes a shared volume (`writes`) or is
/// where the process resumes, wait until a recorded checkpoint covers it.
/// `Some(code)`: return it now (the guest unwinds). Otherwise the next
/// shared-volume write goes under the effect's key, if there is one.
async fn gate(
    caller: &mut Caller<'_, ProcessCtx>,
    import: &str,
    writes: impl FnOnce(&ProcessCtx) -> bool,
) -> wasmtime::Result<Option<i32>> {
    let entry = capture::enter(caller, import).await?;
    if matches!(entry, Entry::Fresh) && !writes(caller.data()) {
        return Ok(None);
    }
    match effect::commit_first(caller, import, entry).await? {
        Gate::Make(key) => {
            if let Some(s) = caller.data().volumes.session() {
                s.set_effect(key);
            }
            Ok(None)
        }
        Gate::Unwound => Ok(Some(effect::UNWINDING)),
    }
}

/// The effect key is for one write: drop it if the call made none.
fn end_effect(ctx: &ProcessCtx) {
    if let Some(s) = ctx.volumes.session() {
        s.set_effect(None);
    }
}

/// Register a path call `(fd, path_ptr, path_len) -> errno` of a
/// directory, gated when the directory is a shared volume's.
macro_rules! path_call {
    ($r:expr, $name:literal, $import:expr, $f:path) => {
        $r.define_wasi($name, |mut caller, params| {
            let (fd, ptr, len) = (arg_i32(params, 0), arg_i32(params, 1), arg_i32(params, 2));
            Box::new(async move {
                if let Some(code) = gate(&mut caller, $import, |c| shared_dir(c, fd)).await? {
                    return Ok(Some(Val::I32(code)));
                }
                let Ok(memory) = guest_memory(&mut caller) else {
                    return Ok(Some(Val::I32(ERRNO_FAULT)));
                };
                let (data, ctx) = memory.data_and_store_mut(&mut caller);
                let mut guest = wiggle::GuestMemory::Unshared(data);
                let errno = $f(&mut ctx.wasi, &mut guest, fd, ptr, len).await;
                end_effect(ctx);
                Ok(Some(Val::I32(errno?)))
            })
        })?;
    };
}

/// Register `fd_sync` / `fd_datasync`: they publish a written shared file.
macro_rules! sync_call {
    ($r:expr, $name:literal, $import:expr, $f:path) => {
        $r.define_wasi($name, |mut caller, params| {
            let fd = arg_i32(params, 0);
            Box::new(async move {
                if let Some(code) = gate(&mut caller, $import, |c| shared_written(c, fd)).await? {
                    return Ok(Some(Val::I32(code)));
                }
                let Ok(memory) = guest_memory(&mut caller) else {
                    return Ok(Some(Val::I32(ERRNO_FAULT)));
                };
                let (data, ctx) = memory.data_and_store_mut(&mut caller);
                let mut guest = wiggle::GuestMemory::Unshared(data);
                let errno = $f(&mut ctx.wasi, &mut guest, fd).await;
                end_effect(ctx);
                Ok(Some(Val::I32(errno?)))
            })
        })?;
    };
}

/// Register the namespace's imports.
pub fn register(r: &mut Registrar<'_>) -> wasmtime::Result<()> {
    // Close publishes a written shared file first (as its `fd_datasync`
    // does, so a failure is reported: `EDQUOT`, `EIO`), then closes it
    // whatever the publish answered, as POSIX `close` releases the fd.
    r.define_wasi("fd_close", |mut caller, params| {
        let fd = arg_i32(params, 0);
        Box::new(async move {
            if let Some(code) = gate(&mut caller, FD_CLOSE, |c| shared_written(c, fd)).await? {
                return Ok(Some(Val::I32(code)));
            }
            let Ok(memory) = guest_memory(&mut caller) else {
                return Ok(Some(Val::I32(ERRNO_FAULT)));
            };
            let (data, ctx) = memory.data_and_store_mut(&mut caller);
            let mut guest = wiggle::GuestMemory::Unshared(data);
            let published = if shared_written(ctx, fd) {
                let r = preview1::fd_datasync(&mut ctx.wasi, &mut guest, fd).await;
                end_effect(ctx);
                r?
            } else {
                ERRNO_SUCCESS
            };
            let errno = preview1::fd_close(&mut ctx.wasi, &mut guest, fd).await?;
            if errno == ERRNO_SUCCESS {
                let ctx = caller.data_mut();
                ctx.open_files.remove(&(fd as u32));
                crate::open_files::forget_shared(ctx, fd as u32);
            }
            Ok(Some(Val::I32(if errno == ERRNO_SUCCESS {
                published
            } else {
                errno
            })))
        })
    })?;
    sync_call!(r, "fd_sync", FD_SYNC, preview1::fd_sync);
    sync_call!(r, "fd_datasync", FD_DATASYNC, preview1::fd_datasync);
    path_call!(
        r,
        "path_create_directory",
        PATH_CREATE_DIRECTORY,
        preview1::path_create_directory
    );
    path_call!(
        r,
        "path_unlink_file",
        PATH_UNLINK_FILE,
        preview1::path_unlink_file
    );
    path_call!(
        r,
        "path_remove_directory",
        PATH_REMOVE_DIRECTORY,
        preview1::path_remove_directory
    );
    r.define_wasi("path_rename", |mut caller, params| {
        let (fd, old_ptr, old_len) = (arg_i32(params, 0), arg_i32(params, 1), arg_i32(params, 2));
        let (new_fd, new_ptr, new_len) =
            (arg_i32(params, 3), arg_i32(params, 4), arg_i32(params, 5));
        Box::new(async move {
            let shared = |c: &ProcessCtx| shared_dir(c, fd) || shared_dir(c, new_fd);
            if let Some(code) = gate(&mut caller, PATH_RENAME, shared).await? {
                return Ok(Some(Val::I32(code)));
            }
            let Ok(memory) = guest_memory(&mut caller) else {
                return Ok(Some(Val::I32(ERRNO_FAULT)));
            };
            let (data, ctx) = memory.data_and_store_mut(&mut caller);
            let mut guest = wiggle::GuestMemory::Unshared(data);
            let errno = preview1::path_rename(
                &mut ctx.wasi,
                &mut guest,
                fd,
                old_ptr,
                old_len,
                new_fd,
                new_ptr,
                new_len,
            )
            .await;
            end_effect(ctx);
            Ok(Some(Val::I32(errno?)))
        })
    })?;
    Ok(())
}
