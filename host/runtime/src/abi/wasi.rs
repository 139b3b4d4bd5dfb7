//! The WASI calls that wait, replaced by capturable versions.
//!
//! wasi-common implements WASI preview 1; these few imports can block, so
//! Shoal implements them itself to make them capture points:
//! - `poll_oneoff` waiting on exactly one relative clock (how
//!   `std::thread::sleep` and `nanosleep` sleep) is a capturable sleep;
//!   any other subscription set is handed to wasi-common unchanged.
//! - `sched_yield` yields to other processes and is capturable.
//! - `sock_shutdown` answers `NOTSOCK` for a descriptor that is not a
//!   socket, as wasmtime's own WASI does (wasi-common says `BADF`).
//! - `path_open` and `fd_renumber` go to wasi-common unchanged (as does
//!   `fd_close`, in [`super::wasi_shared`]), but Shoal remembers which
//!   files are open so a snapshot can record their positions and a restore
//!   can reopen them under the same fds ([`crate::open_files`]).

use super::memory::{checked_range, guest_memory};
use super::{arg_i32, Registrar};
use crate::capture::{self, wait_or_capture, Entry, PendingCall, Waited};
use crate::process::OpenFile;
use std::time::{Duration, Instant};
use wasi_common::snapshots::preview_1::wasi_snapshot_preview1 as preview1;
use wasmtime::Val;

const POLL_ONEOFF: &str = "wasi_snapshot_preview1.poll_oneoff";
const SCHED_YIELD: &str = "wasi_snapshot_preview1.sched_yield";

/// WASI `errno` values used here.
const ERRNO_SUCCESS: i32 = 0;
const ERRNO_FAULT: i32 = 21;
const ERRNO_INVAL: i32 = 28;
const ERRNO_NOTSOCK: i32 = 57;

/// WASI `filetype` values of sockets.
const FILETYPE_SOCKET_DGRAM: u8 = 5;
const FILETYPE_SOCKET_STREAM: u8 = 6;

/// Size of a WASI `fdstat`.
const FDSTAT_BYTES: usize = 24;

/// Size of a WASI `subscription` and of an `event`.
const SUBSCRIPTION_BYTES: i32 = 48;
const EVENT_BYTES: i32 = 32;

/// A single relative-clock subscription: the only shape handled here.
struct Sleep {
    userdata: u64,
    timeout_ns: u64,
}

fn as_single_sleep(bytes: &[u8]) -> Option<Sleep> {
    // subscription: userdata u64 @0, tag u8 @8 (0 = clock),
    // clock: id u32 @16, timeout u64 @24, precision u64 @32, flags u16 @40.
    let tag = bytes[8];
    let clock_id = u32::from_le_bytes(bytes[16..20].try_into().ok()?);
    let flags = u16::from_le_bytes(bytes[40..42].try_into().ok()?);
    // Clock ids 0 (realtime) and 1 (monotonic); flags 0 = relative timeout.
    if tag != 0 || flags != 0 || clock_id > 1 {
        return None;
    }
    Some(Sleep {
        userdata: u64::from_le_bytes(bytes[0..8].try_into().ok()?),
        timeout_ns: u64::from_le_bytes(bytes[24..32].try_into().ok()?),
    })
}

fn clock_event(userdata: u64) -> [u8; 32] {
    // event: userdata u64 @0, error u16 @8 (0), type u8 @10 (0 = clock).
    let mut e = [0u8; 32];
    e[..8].copy_from_slice(&userdata.to_le_bytes());
    e
}

/// `random_get` fills at most this much before it yields the worker thread.
const RANDOM_CHUNK_BYTES: usize = 64 * 1024;

/// Register the namespace's imports.
pub fn register(r: &mut Registrar<'_>) -> wasmtime::Result<()> {
    // wasi-common fills the whole buffer in one go on the async worker: a
    // guest asking for hundreds of MiB in a loop held a worker for seconds
    // per call and stalled the node's API. Fill in chunks, yielding between.
    r.define_wasi("random_get", |mut caller, params| {
        let (buf_ptr, buf_len) = (arg_i32(params, 0), arg_i32(params, 1));
        Box::new(async move {
            let Ok(memory) = guest_memory(&mut caller) else {
                return Ok(Some(Val::I32(ERRNO_FAULT)));
            };
            let Ok(range) = checked_range(buf_ptr, buf_len, memory.data_size(&caller)) else {
                return Ok(Some(Val::I32(ERRNO_FAULT)));
            };
            let mut at = range.start;
            while at < range.end {
                let end = range.end.min(at + RANDOM_CHUNK_BYTES);
                // Linear memory never shrinks: the range checked above
                // stays in bounds.
                rand::RngCore::fill_bytes(
                    &mut rand::thread_rng(),
                    &mut memory.data_mut(&mut caller)[at..end],
                );
                at = end;
                if at < range.end {
                    tokio::task::yield_now().await;
                }
            }
            Ok(Some(Val::I32(ERRNO_SUCCESS)))
        })
    })?;

    r.define_wasi("poll_oneoff", |mut caller, params| {
        let (subs_ptr, events_ptr, nsubs, nevents_ptr) = (
            arg_i32(params, 0),
            arg_i32(params, 1),
            arg_i32(params, 2),
            arg_i32(params, 3),
        );
        Box::new(async move {
            let resumed = match capture::enter(&mut caller, POLL_ONEOFF).await? {
                Entry::Fresh => None,
                Entry::Resumed(p) => Some(p.remaining_ms.unwrap_or(0)),
            };
            let Ok(memory) = guest_memory(&mut caller) else {
                return Ok(Some(Val::I32(ERRNO_FAULT)));
            };
            let size = memory.data_size(&caller);
            let sleep = if nsubs == 1 {
                match checked_range(subs_ptr, SUBSCRIPTION_BYTES, size) {
                    Ok(range) => as_single_sleep(&memory.data(&caller)[range]),
                    Err(_) => return Ok(Some(Val::I32(ERRNO_FAULT))),
                }
            } else {
                None
            };
            let Some(sleep) = sleep else {
                // Not a plain sleep: wasi-common handles it (not a capture point).
                let (data, ctx) = memory.data_and_store_mut(&mut caller);
                let mut guest = wiggle::GuestMemory::Unshared(data);
                let r = wasi_common::snapshots::preview_1::wasi_snapshot_preview1::poll_oneoff(
                    &mut ctx.wasi,
                    &mut guest,
                    subs_ptr,
                    events_ptr,
                    nsubs,
                    nevents_ptr,
                )
                .await?;
                return Ok(Some(Val::I32(r)));
            };
            let (Ok(event_range), Ok(n_range)) = (
                checked_range(events_ptr, EVENT_BYTES, size),
                checked_range(nevents_ptr, 4, size),
            ) else {
                return Ok(Some(Val::I32(ERRNO_FAULT)));
            };
            let wait = match resumed {
                Some(ms) => Duration::from_millis(ms),
                None => Duration::from_nanos(sleep.timeout_ns),
            };
            let Some(deadline) = Instant::now().checked_add(wait) else {
                return Ok(Some(Val::I32(ERRNO_INVAL)));
            };
            let signal = caller.data().capture.clone();
            let capturable = caller.data().capturable;
            let sleeping = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline));
            if let Waited::Capture = wait_or_capture(&signal, capturable, sleeping).await {
                let left = deadline.saturating_duration_since(Instant::now());
                // Round up so a resumed sleep never ends early.
                let left_ms = left.as_nanos().div_ceil(1_000_000) as u64;
                let pending = PendingCall {
                    import: POLL_ONEOFF.to_string(),
                    remaining_ms: Some(left_ms),
                    effect: None,
                };
                capture::unwind(&mut caller, pending).await?;
                return Ok(Some(Val::I32(ERRNO_SUCCESS)));
            }
            let data = memory.data_mut(&mut caller);
            data[event_range].copy_from_slice(&clock_event(sleep.userdata));
            data[n_range].copy_from_slice(&1u32.to_le_bytes());
            Ok(Some(Val::I32(ERRNO_SUCCESS)))
        })
    })?;

    r.define_wasi("path_open", |mut caller, params| {
        let (dir_fd, dirflags, path_ptr, path_len) = (
            arg_i32(params, 0),
            arg_i32(params, 1),
            arg_i32(params, 2),
            arg_i32(params, 3),
        );
        let oflags = arg_i32(params, 4);
        let (rights_base, rights_inheriting) = (params[5].unwrap_i64(), params[6].unwrap_i64());
        let (fdflags, fd_out) = (arg_i32(params, 7), arg_i32(params, 8));
        Box::new(async move {
            let Ok(memory) = guest_memory(&mut caller) else {
                return Ok(Some(Val::I32(ERRNO_FAULT)));
            };
            let (data, ctx) = memory.data_and_store_mut(&mut caller);
            let path = checked_range(path_ptr, path_len, data.len())
                .ok()
                .and_then(|r| std::str::from_utf8(&data[r]).ok().map(str::to_string));
            let mut guest = wiggle::GuestMemory::Unshared(data);
            crate::open_files::before_open(ctx);
            let errno = preview1::path_open(
                &mut ctx.wasi,
                &mut guest,
                dir_fd,
                dirflags,
                path_ptr,
                path_len,
                oflags,
                rights_base,
                rights_inheriting,
                fdflags,
                fd_out,
            )
            .await?;
            if errno == ERRNO_SUCCESS {
                let fd = checked_range(fd_out, 4, memory.data_size(&caller))
                    .ok()
                    .map(|r| {
                        u32::from_le_bytes(memory.data(&caller)[r].try_into().unwrap_or([0; 4]))
                    });
                if let Some(fd) = fd {
                    crate::open_files::track_shared(caller.data_mut(), fd);
                }
                if let (Some(fd), Some(path)) = (fd, path) {
                    let file = OpenFile {
                        fd,
                        dir_fd: dir_fd as u32,
                        dirflags,
                        path,
                        oflags,
                        rights_base,
                        rights_inheriting,
                        fdflags,
                        offset: None,
                        copy: None,
                    };
                    caller.data_mut().open_files.insert(fd, file);
                }
            }
            Ok(Some(Val::I32(errno)))
        })
    })?;

    r.define_wasi("fd_renumber", |mut caller, params| {
        let (from, to) = (arg_i32(params, 0), arg_i32(params, 1));
        Box::new(async move {
            let Ok(memory) = guest_memory(&mut caller) else {
                return Ok(Some(Val::I32(ERRNO_FAULT)));
            };
            let (data, ctx) = memory.data_and_store_mut(&mut caller);
            let mut guest = wiggle::GuestMemory::Unshared(data);
            let errno = preview1::fd_renumber(&mut ctx.wasi, &mut guest, from, to).await?;
            if errno == ERRNO_SUCCESS {
                crate::open_files::renumber_shared(caller.data_mut(), from as u32, to as u32);
                let files = &mut caller.data_mut().open_files;
                files.remove(&(to as u32));
                if let Some(mut f) = files.remove(&(from as u32)) {
                    f.fd = to as u32;
                    files.insert(to as u32, f);
                }
            }
            Ok(Some(Val::I32(errno)))
        })
    })?;

    r.define_wasi("sock_shutdown", |mut caller, params| {
        let (fd, how) = (arg_i32(params, 0), arg_i32(params, 1));
        Box::new(async move {
            // What the descriptor is, asked with a host-side scratch buffer
            // (a bad fd answers BADF here).
            let ctx = caller.data_mut();
            let mut scratch = [0u8; FDSTAT_BYTES];
            let mut guest = wiggle::GuestMemory::Unshared(&mut scratch);
            let errno = preview1::fd_fdstat_get(&mut ctx.wasi, &mut guest, fd, 0).await?;
            if errno != ERRNO_SUCCESS {
                return Ok(Some(Val::I32(errno)));
            }
            if !matches!(scratch[0], FILETYPE_SOCKET_DGRAM | FILETYPE_SOCKET_STREAM) {
                return Ok(Some(Val::I32(ERRNO_NOTSOCK)));
            }
            let mut guest = wiggle::GuestMemory::Unshared(&mut scratch);
            let errno = preview1::sock_shutdown(&mut ctx.wasi, &mut guest, fd, how).await?;
            Ok(Some(Val::I32(errno)))
        })
    })?;

    r.define_wasi("sched_yield", |mut caller, _params| {
        Box::new(async move {
            if let Entry::Resumed(_) = capture::enter(&mut caller, SCHED_YIELD).await? {
                return Ok(Some(Val::I32(ERRNO_SUCCESS)));
            }
            if caller.data().capturable && caller.data().capture.is_requested() {
                let pending = PendingCall {
                    import: SCHED_YIELD.to_string(),
                    remaining_ms: None,
                    effect: None,
                };
                capture::unwind(&mut caller, pending).await?;
                return Ok(Some(Val::I32(ERRNO_SUCCESS)));
            }
            tokio::task::yield_now().await;
            Ok(Some(Val::I32(ERRNO_SUCCESS)))
        })
    })?;
    Ok(())
}
