//! The `call` namespace: calls between processes and monitors (see
//! [`crate::calls`] for the design and `sdk/ABI.md` for the contract).
//!
//! Everything here is opt-in: a guest that imports only `send`/`recv`
//! never meets a call, a reply or a DOWN (`recv` skips them).

use super::memory::{check_writable, read_bytes, write_bytes};
use super::{arg_i32, arg_i64, deadline_of, errno, remaining_ms, Registrar};
use crate::calls::DownReason;
use crate::capture::{self, wait_or_capture, Entry, PendingCall, Waited};
use crate::mailbox::{Bounce, Head, Message, PushError, Tag, Want};
use crate::pid::Pid;
use crate::process::ProcessCtx;
use shoal_abi::calls::{
    DOWN_INFO_BYTES, KIND_CALL, KIND_DOWN, KIND_MESSAGE, KIND_REPLY, MATCH_FROM, MATCH_REPLY,
    REASON_NODE_DOWN, REASON_NOPROC, REASON_NOT_CALLABLE, REASON_TRAP, RECV_ANY_INFO_BYTES,
};
use std::time::Instant;
use wasmtime::{Caller, Val};

/// Import name of `call`, as recorded in a pending call.
const CALL: &str = "shoal_v1.call";
/// Import name of `recv_any`, as recorded in a pending call.
const RECV_ANY: &str = "shoal_v1.recv_any";
/// Import name of `recv_match`, as recorded in a pending call.
const RECV_MATCH: &str = "shoal_v1.recv_match";

/// Send the refusals a take produced (from this process).
pub(crate) fn send_bounces(caller: &Caller<'_, ProcessCtx>, bounces: Vec<Bounce>) {
    if bounces.is_empty() {
        return;
    }
    let (host, me) = (caller.data().host.clone(), caller.data().pid);
    for b in bounces {
        let _ = host.send_message(
            b.to,
            Message {
                seq: 0,
                life: 0,
                sender: me,
                data: b.data,
                tag: b.tag,
            },
        );
    }
}

/// `recv_any`'s info record for `m` (as taken), and the payload the guest
/// gets (a DOWN's payload is its trap message).
fn describe(m: &Message) -> ([u8; 32], &[u8]) {
    let mut info = [0u8; 32];
    info[..8].copy_from_slice(&m.sender.0.to_le_bytes());
    let (kind, reference, reason, code, payload) = match m.tag {
        Tag::Call(handle) => (KIND_CALL, handle, 0, 0, &m.data[..]),
        Tag::Reply(r) => (KIND_REPLY, r, 0, 0, &m.data[..]),
        Tag::Down(r) => {
            let (reason, code, msg) = DownReason::split(&m.data);
            (KIND_DOWN, r, reason, code, msg)
        }
        _ => (KIND_MESSAGE, 0, 0, 0, &m.data[..]),
    };
    info[8..12].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    info[12..16].copy_from_slice(&kind.to_le_bytes());
    info[16..24].copy_from_slice(&reference.to_le_bytes());
    info[24..28].copy_from_slice(&reason.to_le_bytes());
    info[28..32].copy_from_slice(&code.to_le_bytes());
    (info, payload)
}

/// Register the namespace's imports.
pub fn register(r: &mut Registrar<'_>) -> wasmtime::Result<()> {
    r.define("call", |mut caller, params| {
        let target = Pid(arg_i64(params, 0) as u64);
        let (req_ptr, req_len) = (arg_i32(params, 1), arg_i32(params, 2));
        let (reply_ptr, reply_len) = (arg_i32(params, 3), arg_i32(params, 4));
        let timeout_ms = arg_i64(params, 5);
        let down_ptr = arg_i32(params, 6);
        Box::new(async move {
            let entry = capture::enter(&mut caller, CALL).await?;
            let mailbox = caller.data().mailbox.clone();
            let (reference, deadline) = match entry {
                Entry::Resumed(p) => {
                    // Resumed (here or on another node) while waiting: the
                    // request went out before the capture; wait on.
                    let Some(c) = mailbox.current_call() else {
                        return Ok(Some(Val::I32(errno::TIMEOUT)));
                    };
                    (
                        c.reference,
                        deadline_of(p.remaining_ms.map_or(-1, |ms| ms as i64)),
                    )
                }
                Entry::Fresh => {
                    if let Err(e) = check_writable(&mut caller, reply_ptr, reply_len) {
                        return Ok(Some(Val::I32(e)));
                    }
                    if down_ptr != 0 {
                        if let Err(e) = check_writable(&mut caller, down_ptr, DOWN_INFO_BYTES) {
                            return Ok(Some(Val::I32(e)));
                        }
                    }
                    let host = caller.data().host.clone();
                    let me = caller.data().pid;
                    if target == me {
                        // It would wait for itself until the deadline.
                        return Ok(Some(Val::I32(errno::INVALID)));
                    }
                    if req_len >= 0 && req_len as usize > host.message_bytes_max() {
                        return Ok(Some(Val::I32(errno::TOO_LARGE)));
                    }
                    let data = match read_bytes(&mut caller, req_ptr, req_len) {
                        Ok(d) => d,
                        Err(e) => return Ok(Some(Val::I32(e))),
                    };
                    // A call left behind by a trap in a host function
                    // cannot be: `call` blocks. End any such one anyway.
                    mailbox.end_call();
                    let reference = mailbox.begin_call(target);
                    let request = Message {
                        seq: 0,
                        life: 0,
                        sender: me,
                        data,
                        tag: Tag::Call(reference),
                    };
                    match host.send_message(target, request) {
                        Ok(()) => {}
                        Err(e) => {
                            mailbox.end_call();
                            return Ok(Some(Val::I32(match e {
                                PushError::Closed => errno::NO_PROCESS,
                                PushError::Full => errno::MAILBOX_FULL,
                            })));
                        }
                    }
                    (reference, deadline_of(timeout_ms))
                }
            };
            let signal = caller.data().capture.clone();
            let capturable = caller.data().capturable;
            let code = loop {
                if let Some(answer) = mailbox.take_answer(reference) {
                    mailbox.end_call();
                    break match answer.tag {
                        Tag::Reply(_) => {
                            if answer.data.len() > reply_len.max(0) as usize {
                                errno::BUFFER_TOO_SMALL
                            } else {
                                match write_bytes(&mut caller, reply_ptr, &answer.data) {
                                    Ok(()) => answer.data.len() as i32,
                                    Err(e) => e,
                                }
                            }
                        }
                        _ => {
                            let (reason, mut code, message) = DownReason::split(&answer.data);
                            if reason == REASON_TRAP && !message.is_empty() {
                                // The trap message goes where the reply
                                // would have, cut to fit; its length in
                                // `code` (0 before: additive).
                                let cut = message.len().min(reply_len.max(0) as usize);
                                if let Err(e) = write_bytes(&mut caller, reply_ptr, &message[..cut])
                                {
                                    break e;
                                }
                                code = cut as i32;
                            }
                            if down_ptr != 0 {
                                let mut info = [0u8; 8];
                                info[..4].copy_from_slice(&reason.to_le_bytes());
                                info[4..].copy_from_slice(&code.to_le_bytes());
                                if let Err(e) = write_bytes(&mut caller, down_ptr, &info) {
                                    break e;
                                }
                            }
                            match reason {
                                REASON_NOPROC => errno::NO_PROCESS,
                                REASON_NODE_DOWN => errno::NODE_DOWN,
                                REASON_NOT_CALLABLE => errno::NOT_CALLABLE,
                                _ => errno::CALLEE_DOWN,
                            }
                        }
                    };
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    mailbox.end_call();
                    break errno::TIMEOUT;
                }
                match wait_or_capture(&signal, capturable, mailbox.wait_arrival(deadline)).await {
                    Waited::Done(_) => {}
                    Waited::Capture => {
                        let pending = PendingCall {
                            import: CALL.to_string(),
                            remaining_ms: remaining_ms(deadline),
                            effect: None,
                        };
                        capture::unwind(&mut caller, pending).await?;
                        // Ignored: the guest is unwinding.
                        return Ok(Some(Val::I32(0)));
                    }
                }
            };
            Ok(Some(Val::I32(code)))
        })
    })?;

    r.define("recv_any", |mut caller, params| {
        let (ptr, len) = (arg_i32(params, 0), arg_i32(params, 1));
        let timeout_ms = arg_i64(params, 2);
        let info_ptr = arg_i32(params, 3);
        Box::new(async move {
            let timeout_ms = match capture::enter(&mut caller, RECV_ANY).await? {
                Entry::Fresh => timeout_ms,
                Entry::Resumed(p) => p.remaining_ms.map_or(-1, |ms| ms as i64),
            };
            let want = Ok(Want::Any);
            receive(
                &mut caller,
                RECV_ANY,
                want,
                (ptr, len),
                timeout_ms,
                info_ptr,
            )
            .await
        })
    })?;

    r.define("recv_match", |mut caller, params| {
        let (filter, value) = (arg_i32(params, 0), arg_i64(params, 1));
        let (ptr, len) = (arg_i32(params, 2), arg_i32(params, 3));
        let timeout_ms = arg_i64(params, 4);
        let info_ptr = arg_i32(params, 5);
        Box::new(async move {
            let timeout_ms = match capture::enter(&mut caller, RECV_MATCH).await? {
                Entry::Fresh => timeout_ms,
                Entry::Resumed(p) => p.remaining_ms.map_or(-1, |ms| ms as i64),
            };
            let want = match filter {
                MATCH_FROM => Ok(Want::From(Pid(value as u64))),
                // Waiting for an answer nobody owes would last forever.
                MATCH_REPLY if caller.data().mailbox.has_request(value as u64) => {
                    Ok(Want::Answer(value as u64))
                }
                _ => Err(errno::INVALID),
            };
            receive(
                &mut caller,
                RECV_MATCH,
                want,
                (ptr, len),
                timeout_ms,
                info_ptr,
            )
            .await
        })
    })?;

    r.define("send_request", |mut caller, params| {
        let target = Pid(arg_i64(params, 0) as u64);
        let (req_ptr, req_len) = (arg_i32(params, 1), arg_i32(params, 2));
        let ref_ptr = arg_i32(params, 3);
        Box::new(async move {
            if let Err(e) = check_writable(&mut caller, ref_ptr, 8) {
                return Ok(Some(Val::I32(e)));
            }
            let (host, me) = (caller.data().host.clone(), caller.data().pid);
            if target == me {
                // Its answer could only come from itself.
                return Ok(Some(Val::I32(errno::INVALID)));
            }
            if req_len >= 0 && req_len as usize > host.message_bytes_max() {
                return Ok(Some(Val::I32(errno::TOO_LARGE)));
            }
            let data = match read_bytes(&mut caller, req_ptr, req_len) {
                Ok(d) => d,
                Err(e) => return Ok(Some(Val::I32(e))),
            };
            let mailbox = caller.data().mailbox.clone();
            // Recorded before it is sent: the answer's slot is reserved.
            let Some(reference) = mailbox.begin_request(target) else {
                return Ok(Some(Val::I32(errno::LIMIT)));
            };
            let request = Message {
                seq: 0,
                life: 0,
                sender: me,
                data,
                tag: Tag::Call(reference),
            };
            if let Err(e) = host.send_message(target, request) {
                mailbox.end_request(reference);
                return Ok(Some(Val::I32(match e {
                    PushError::Closed => errno::NO_PROCESS,
                    PushError::Full => errno::MAILBOX_FULL,
                })));
            }
            let r = write_bytes(&mut caller, ref_ptr, &reference.to_le_bytes());
            Ok(Some(Val::I32(r.err().unwrap_or(errno::OK))))
        })
    })?;

    r.define("reply", |mut caller, params| {
        let handle = arg_i64(params, 0) as u64;
        let (ptr, len) = (arg_i32(params, 1), arg_i32(params, 2));
        Box::new(async move {
            let host = caller.data().host.clone();
            if len >= 0 && len as usize > host.message_bytes_max() {
                return Ok(Some(Val::I32(errno::TOO_LARGE)));
            }
            let data = match read_bytes(&mut caller, ptr, len) {
                Ok(d) => d,
                Err(e) => return Ok(Some(Val::I32(e))),
            };
            let Some((to, reference)) = caller.data().mailbox.take_serving(handle) else {
                // Answered before, or never given: nobody waits on it.
                return Ok(Some(Val::I32(errno::INVALID)));
            };
            let reply = Message {
                seq: 0,
                life: 0,
                sender: caller.data().pid,
                data,
                tag: Tag::Reply(reference),
            };
            // The caller gone (it timed out and ended) is not this
            // process's error: the reply is dropped like a late one.
            let code = match host.send_message(to, reply) {
                Ok(()) | Err(PushError::Closed) => errno::OK,
                Err(PushError::Full) => {
                    // Past even the owed room: the handle stays good, so
                    // the guest can reply again once there is room.
                    caller
                        .data()
                        .mailbox
                        .put_back_serving(handle, to, reference);
                    errno::MAILBOX_FULL
                }
            };
            Ok(Some(Val::I32(code)))
        })
    })?;

    r.define("monitor", |mut caller, params| {
        let target = Pid(arg_i64(params, 0) as u64);
        let ref_ptr = arg_i32(params, 1);
        Box::new(async move {
            if let Err(e) = check_writable(&mut caller, ref_ptr, 8) {
                return Ok(Some(Val::I32(e)));
            }
            let (host, me) = (caller.data().host.clone(), caller.data().pid);
            let mailbox = caller.data().mailbox.clone();
            if target == me {
                return Ok(Some(Val::I32(errno::INVALID)));
            }
            let Some(reference) = mailbox.add_monitor(target) else {
                return Ok(Some(Val::I32(errno::LIMIT)));
            };
            let request = Message {
                seq: 0,
                life: 0,
                sender: me,
                data: Vec::new(),
                tag: Tag::Monitor(reference),
            };
            match host.send_message(target, request) {
                Ok(()) => {}
                Err(PushError::Closed) => {
                    // Already gone: the DOWN comes at once, as a message.
                    let _ = mailbox.push(Message {
                        seq: 0,
                        life: 0,
                        sender: target,
                        data: DownReason::NoProc.encode(),
                        tag: Tag::Down(reference),
                    });
                }
                Err(PushError::Full) => {
                    mailbox.remove_monitor(reference);
                    return Ok(Some(Val::I32(errno::MAILBOX_FULL)));
                }
            }
            let r = write_bytes(&mut caller, ref_ptr, &reference.to_le_bytes());
            Ok(Some(Val::I32(r.err().unwrap_or(errno::OK))))
        })
    })?;

    r.define("demonitor", |caller, params| {
        let reference = arg_i64(params, 0) as u64;
        Box::new(async move {
            let (host, me) = (caller.data().host.clone(), caller.data().pid);
            let mailbox = caller.data().mailbox.clone();
            let Some(target) = mailbox.remove_monitor(reference) else {
                // A pending request is withdrawn the same way: its answer,
                // queued or to come, is dropped (the callee is not told).
                let withdrawn = mailbox.end_request(reference).is_some();
                return Ok(Some(Val::I32(if withdrawn {
                    errno::OK
                } else {
                    errno::INVALID
                })));
            };
            let withdraw = Message {
                seq: 0,
                life: 0,
                sender: me,
                data: Vec::new(),
                tag: Tag::Demonitor(reference),
            };
            // Best effort: a DOWN that still comes is dropped here.
            let _ = host.send_message(target, withdraw);
            Ok(Some(Val::I32(errno::OK)))
        })
    })?;
    Ok(())
}

/// The receive loop of `recv_any` and `recv_match`: take the oldest entry
/// `want` selects (waiting up to `timeout_ms`, a capture point), copy its
/// payload to `buf` and its description to the 32-byte info record. Ranges
/// are checked first; then a bad filter (`want` is `Err`) is reported.
async fn receive(
    caller: &mut Caller<'_, ProcessCtx>,
    import: &'static str,
    want: Result<Want, i32>,
    (ptr, len): (i32, i32),
    timeout_ms: i64,
    info_ptr: i32,
) -> wasmtime::Result<Option<Val>> {
    if let Err(e) = check_writable(caller, ptr, len) {
        return Ok(Some(Val::I32(e)));
    }
    // The info tells a call from a message: it is required.
    if let Err(e) = check_writable(caller, info_ptr, RECV_ANY_INFO_BYTES) {
        return Ok(Some(Val::I32(e)));
    }
    let want = match want {
        Ok(w) => w,
        Err(e) => return Ok(Some(Val::I32(e))),
    };
    let deadline = deadline_of(timeout_ms);
    let mailbox = caller.data().mailbox.clone();
    let signal = caller.data().capture.clone();
    let capturable = caller.data().capturable;
    let pending = |deadline| PendingCall {
        import: import.to_string(),
        remaining_ms: remaining_ms(deadline),
        effect: None,
    };
    // A capture asked for while messages keep arriving would never see
    // this call wait: serve it on entry.
    if capturable && signal.is_requested() {
        capture::unwind(caller, pending(deadline)).await?;
        // Ignored: the guest is unwinding.
        return Ok(Some(Val::I32(0)));
    }
    let code = loop {
        let mut bounces = Vec::new();
        let head = mailbox.take_wanted(len.max(0) as usize, want, &mut bounces);
        send_bounces(caller, bounces);
        match head {
            Head::Taken(m) => {
                let (info, payload) = describe(&m);
                if payload.len() > len.max(0) as usize {
                    // Only a DOWN's payload shrinks; never larger.
                    break errno::BUFFER_TOO_SMALL;
                }
                let r = write_bytes(caller, ptr, payload)
                    .and_then(|_| write_bytes(caller, info_ptr, &info));
                break match r {
                    Ok(()) => payload.len() as i32,
                    Err(e) => e,
                };
            }
            Head::TooBig {
                sender,
                len: needed,
            } => {
                let mut info = [0u8; 32];
                info[..8].copy_from_slice(&sender.0.to_le_bytes());
                info[8..12].copy_from_slice(&(needed as u32).to_le_bytes());
                if let Err(e) = write_bytes(caller, info_ptr, &info) {
                    break e;
                }
                break errno::BUFFER_TOO_SMALL;
            }
            Head::Empty => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break errno::TIMEOUT;
                }
                let waited =
                    wait_or_capture(&signal, capturable, mailbox.wait_arrival(deadline)).await;
                if let Waited::Capture = waited {
                    capture::unwind(caller, pending(deadline)).await?;
                    return Ok(Some(Val::I32(0)));
                }
            }
        }
    };
    Ok(Some(Val::I32(code)))
}
