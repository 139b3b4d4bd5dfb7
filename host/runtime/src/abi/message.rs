//! The `message` namespace: send and receive.

use super::memory::{check_writable, read_bytes, write_bytes};
use super::{arg_i32, arg_i64, deadline_of, errno, remaining_ms, Registrar};
use crate::capture::{self, wait_or_capture, Entry, PendingCall, Waited};
use crate::mailbox::{Head, PushError};
use crate::pid::Pid;

/// Import name of `recv`, as recorded in a pending call.
const RECV: &str = "shoal_v1.recv";
use std::time::Instant;
use wasmtime::Val;

/// Size of the `recv` info struct: u64 sender, u32 length, u32 reserved.
pub const RECV_INFO_BYTES: i32 = 16;

fn info_bytes(sender: Pid, len: usize) -> [u8; 16] {
    let mut info = [0u8; 16];
    info[..8].copy_from_slice(&sender.0.to_le_bytes());
    info[8..12].copy_from_slice(&(len as u32).to_le_bytes());
    info
}

/// Register the namespace's imports.
pub fn register(r: &mut Registrar<'_>) -> wasmtime::Result<()> {
    r.define("send", |mut caller, params| {
        let to = Pid(arg_i64(params, 0) as u64);
        let (ptr, len) = (arg_i32(params, 1), arg_i32(params, 2));
        Box::new(async move {
            let host = caller.data().host.clone();
            let code = if len >= 0 && len as usize > host.message_bytes_max() {
                errno::TOO_LARGE
            } else {
                match read_bytes(&mut caller, ptr, len) {
                    Err(e) => e,
                    Ok(data) => match host.send(caller.data().pid, to, data) {
                        Ok(()) => errno::OK,
                        Err(PushError::Full) => errno::MAILBOX_FULL,
                        Err(PushError::Closed) => errno::NO_PROCESS,
                    },
                }
            };
            Ok(Some(Val::I32(code)))
        })
    })?;

    r.define("recv", |mut caller, params| {
        let (ptr, len) = (arg_i32(params, 0), arg_i32(params, 1));
        let timeout_ms = arg_i64(params, 2);
        let info_ptr = arg_i32(params, 3);
        Box::new(async move {
            // Resumed from a snapshot: the wait goes on for what was left.
            let timeout_ms = match capture::enter(&mut caller, RECV).await? {
                Entry::Fresh => timeout_ms,
                Entry::Resumed(p) => p.remaining_ms.map_or(-1, |ms| ms as i64),
            };
            // Check every pointer before waiting, so a bad call fails at once.
            if let Err(e) = check_writable(&mut caller, ptr, len) {
                return Ok(Some(Val::I32(e)));
            }
            if info_ptr != 0 {
                if let Err(e) = check_writable(&mut caller, info_ptr, RECV_INFO_BYTES) {
                    return Ok(Some(Val::I32(e)));
                }
            }
            let deadline = deadline_of(timeout_ms);
            let mailbox = caller.data().mailbox.clone();
            let signal = caller.data().capture.clone();
            let capturable = caller.data().capturable;
            // A capture asked for while messages keep arriving would never
            // see this call wait: serve it on entry.
            if capturable && signal.is_requested() {
                let pending = PendingCall {
                    import: RECV.to_string(),
                    remaining_ms: remaining_ms(deadline),
                    effect: None,
                };
                capture::unwind(&mut caller, pending).await?;
                return Ok(Some(Val::I32(0)));
            }
            let code = loop {
                let mut bounces = Vec::new();
                let head = mailbox.take_visible(len as usize, false, &mut bounces);
                crate::abi::call::send_bounces(&caller, bounces);
                match head {
                    Head::Taken(m) => {
                        // Both ranges were checked above and memory never shrinks.
                        let r = write_bytes(&mut caller, ptr, &m.data).and_then(|_| {
                            if info_ptr != 0 {
                                write_bytes(
                                    &mut caller,
                                    info_ptr,
                                    &info_bytes(m.sender, m.data.len()),
                                )
                            } else {
                                Ok(())
                            }
                        });
                        break match r {
                            Ok(()) => m.data.len() as i32,
                            Err(e) => e,
                        };
                    }
                    Head::TooBig {
                        sender,
                        len: needed,
                    } => {
                        if info_ptr != 0 {
                            if let Err(e) =
                                write_bytes(&mut caller, info_ptr, &info_bytes(sender, needed))
                            {
                                break e;
                            }
                        }
                        break errno::BUFFER_TOO_SMALL;
                    }
                    Head::Empty => {
                        if deadline.is_some_and(|d| Instant::now() >= d) {
                            break errno::TIMEOUT;
                        }
                        let waited =
                            wait_or_capture(&signal, capturable, mailbox.wait_arrival(deadline))
                                .await;
                        match waited {
                            // Look again: at the deadline, the check above ends it.
                            Waited::Done(_) => {}
                            Waited::Capture => {
                                let pending = PendingCall {
                                    import: RECV.to_string(),
                                    remaining_ms: remaining_ms(deadline),
                                    effect: None,
                                };
                                capture::unwind(&mut caller, pending).await?;
                                // Ignored: the guest is unwinding.
                                return Ok(Some(Val::I32(0)));
                            }
                        }
                    }
                }
            };
            Ok(Some(Val::I32(code)))
        })
    })?;
    Ok(())
}
