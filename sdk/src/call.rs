//! Calls between processes and monitors: typed request/reply with a
//! deadline ([`call`]), a server loop ([`serve`]), and DOWN notices when a
//! watched process ends ([`monitor`]). All of it comes through imports a
//! guest opts into; plain [`recv`](crate::recv) never returns a call or a
//! DOWN.
//!
//! ```no_run
//! use serde::{Deserialize, Serialize};
//! use std::time::Duration;
//!
//! #[derive(Serialize, Deserialize)]
//! enum Req { Get(String) }
//!
//! # let kv = shoal::Pid::from_raw(1);
//! let value: Option<Vec<u8>> =
//!     shoal::call(kv, &Req::Get("k".into()), Some(Duration::from_secs(5)))?;
//! # Ok::<(), shoal::Error>(())
//! ```

use core::cell::RefCell;
use core::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{check, Error, Result};
use crate::message::Message;
use crate::pid::Pid;
use crate::process::duration_to_ms;
use crate::sys;

/// The deadline [`serve`]-style callers use when they have none in mind
/// (Erlang's `gen_server:call` default).
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Size of the buffer a reply is received into (64 KiB): a larger reply
/// fails the call with [`Error::BufferTooSmall`].
pub const CALL_REPLY_BUFFER_SIZE: usize = 64 * 1024;

/// Why a process went down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownReason {
    /// It exited with this code.
    Exit(i32),
    /// It trapped, with the trap message (empty from a host before the
    /// message was passed to a failed call).
    Trap(String),
    /// It was killed.
    Killed,
    /// It did not exist.
    NoProc,
    /// Its node was declared dead.
    NodeDown,
    /// It refused (too many calls in service or watchers).
    Overloaded,
    /// It cannot receive calls (its module imports neither `recv_any` nor
    /// `recv_match`): the request was refused, not queued.
    NotCallable,
    /// A reason code this SDK does not know (from a newer host).
    Unknown(i32),
}

impl DownReason {
    fn from_codes(reason: i32, code: i32, message: &[u8]) -> DownReason {
        match reason {
            sys::REASON_EXIT => DownReason::Exit(code),
            sys::REASON_TRAP => DownReason::Trap(String::from_utf8_lossy(message).into_owned()),
            sys::REASON_KILLED => DownReason::Killed,
            sys::REASON_NOPROC => DownReason::NoProc,
            sys::REASON_NODE_DOWN => DownReason::NodeDown,
            sys::REASON_OVERLOADED => DownReason::Overloaded,
            sys::REASON_NOT_CALLABLE => DownReason::NotCallable,
            other => DownReason::Unknown(other),
        }
    }
}

/// The handle of a call request received, to [`reply`] with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallHandle(pub u64);

/// A request made with [`send_request`], to receive the answer to with
/// [`receive_response`] (or withdraw with [`cancel_request`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct RequestRef(pub u64);

/// A monitor held, to [`demonitor`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct MonitorRef(pub u64);

/// A watched process went down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Down {
    /// The process.
    pub pid: Pid,
    /// The monitor that saw it.
    pub reference: MonitorRef,
    /// Why.
    pub reason: DownReason,
}

/// What [`recv_any`] received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A plain message.
    Message(Message),
    /// A call request: answer with [`reply`] (or [`reply_raw`]).
    Call {
        /// The caller.
        from: Pid,
        /// The handle to answer with.
        handle: CallHandle,
        /// The request bytes.
        data: Vec<u8>,
    },
    /// A monitored process went down.
    Down(Down),
}

fn timeout_to_ms(timeout: Option<Duration>) -> i64 {
    timeout.map_or(-1, duration_to_ms)
}

std::thread_local! {
    static REPLY_BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static RECV_ANY_BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn with_buffer<R>(
    key: &'static std::thread::LocalKey<RefCell<Vec<u8>>>,
    f: impl FnOnce(&mut Vec<u8>) -> R,
) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => f(&mut buf),
        Err(_) => f(&mut Vec::new()),
    })
}

/// Calls `target` with the request bytes and waits (up to `timeout`;
/// `None`: forever) for its reply. A capture point: the caller may be
/// snapshotted or moved while it waits, and so may the callee. Other
/// messages that arrive meanwhile stay queued, in order.
///
/// # Errors
///
/// [`Error::NoProcess`] (no such process), [`Error::Timeout`],
/// [`Error::CalleeDown`] (it ended before replying, with the reason),
/// [`Error::NodeDown`], [`Error::TooLarge`], [`Error::MailboxFull`],
/// [`Error::BufferTooSmall`] (a reply over [`CALL_REPLY_BUFFER_SIZE`]),
/// [`Error::Invalid`] (calling itself).
pub fn call_raw(target: Pid, request: &[u8], timeout: Option<Duration>) -> Result<Vec<u8>> {
    let req_len = i32::try_from(request.len()).map_err(|_| Error::TooLarge)?;
    with_buffer(&REPLY_BUFFER, |buf| {
        if buf.len() < CALL_REPLY_BUFFER_SIZE {
            buf.resize(CALL_REPLY_BUFFER_SIZE, 0);
        }
        let mut down = sys::DownInfo::default();
        // SAFETY: every pointer is valid for its length for the call.
        let rc = unsafe {
            sys::call(
                target.as_u64() as i64,
                request.as_ptr(),
                req_len,
                buf.as_mut_ptr(),
                i32::try_from(buf.len()).unwrap_or(i32::MAX),
                timeout_to_ms(timeout),
                &mut down,
            )
        };
        match check(rc) {
            Ok(len) if (len as usize) <= buf.len() => Ok(buf[..len as usize].to_vec()),
            Ok(_) => Err(Error::Invalid),
            Err(Error::CalleeDown(_)) => {
                // A trap's message is where the reply would have been, its
                // length in `code` (an older host leaves it 0: no message).
                let message: &[u8] = if down.reason == sys::REASON_TRAP {
                    let len = usize::try_from(down.code).unwrap_or(0).min(buf.len());
                    &buf[..len]
                } else {
                    &[]
                };
                Err(Error::CalleeDown(DownReason::from_codes(
                    down.reason,
                    down.code,
                    message,
                )))
            }
            Err(e) => Err(e),
        }
    })
}

/// [`call_raw`] with the request and the reply encoded with postcard (as
/// [`send_msg`](crate::send_msg)): the callee decodes a `Req` and replies
/// with a `Resp` (see [`serve`]).
///
/// # Errors
///
/// As [`call_raw`], plus [`Error::Encode`] and [`Error::Decode`].
pub fn call<Req: Serialize + ?Sized, Resp: DeserializeOwned>(
    target: Pid,
    request: &Req,
    timeout: Option<Duration>,
) -> Result<Resp> {
    let bytes = postcard::to_allocvec(request).map_err(|e| Error::Encode(e.to_string()))?;
    let reply = call_raw(target, &bytes, timeout)?;
    postcard::from_bytes(&reply).map_err(|e| Error::Decode(e.to_string()))
}

/// Receives the oldest message, call request or DOWN notice. A capture
/// point. `timeout` as for [`recv`](crate::recv).
///
/// # Errors
///
/// [`Error::Timeout`] if nothing arrived in time.
pub fn recv_any(timeout: Option<Duration>) -> Result<Incoming> {
    receive(None, timeout).map(incoming)
}

/// Receives the oldest message, call request or DOWN notice from `from`
/// (a DOWN of a monitor of `from`), leaving everything else queued, in
/// order. A capture point: the process may be moved while it waits.
///
/// # Errors
///
/// [`Error::Timeout`] if nothing from `from` arrived in time.
pub fn recv_from(from: Pid, timeout: Option<Duration>) -> Result<Incoming> {
    receive(Some((sys::MATCH_FROM, from.as_u64() as i64)), timeout).map(incoming)
}

fn incoming((info, data): (sys::RecvAnyInfo, Vec<u8>)) -> Incoming {
    let from = Pid::from_raw(info.sender_pid);
    match info.kind {
        sys::KIND_CALL => Incoming::Call {
            from,
            handle: CallHandle(info.reference),
            data,
        },
        sys::KIND_DOWN => Incoming::Down(Down {
            pid: from,
            reference: MonitorRef(info.reference),
            reason: DownReason::from_codes(info.reason, info.code, &data),
        }),
        _ => Incoming::Message(Message { sender: from, data }),
    }
}

/// `recv_any` (no filter) or `recv_match` (a filter and its value): the
/// info record and the payload, the buffer grown as the host asks.
fn receive(
    filter: Option<(i32, i64)>,
    timeout: Option<Duration>,
) -> Result<(sys::RecvAnyInfo, Vec<u8>)> {
    with_buffer(&RECV_ANY_BUFFER, |buf| {
        if buf.len() < crate::RECV_BUFFER_SIZE {
            buf.resize(crate::RECV_BUFFER_SIZE, 0);
        }
        loop {
            let mut info = sys::RecvAnyInfo::default();
            let buf_len = i32::try_from(buf.len()).unwrap_or(i32::MAX);
            let timeout_ms = timeout_to_ms(timeout);
            // SAFETY: `buf` and `info` are valid for writes for the call.
            let rc = unsafe {
                match filter {
                    None => sys::recv_any(buf.as_mut_ptr(), buf_len, timeout_ms, &mut info),
                    Some((f, value)) => {
                        sys::recv_match(f, value, buf.as_mut_ptr(), buf_len, timeout_ms, &mut info)
                    }
                }
            };
            match check(rc) {
                Ok(len) => {
                    let len = len as usize;
                    if len > buf.len() {
                        return Err(Error::Invalid);
                    }
                    return Ok((info, buf[..len].to_vec()));
                }
                Err(Error::BufferTooSmall { .. }) if (info.length as usize) > buf.len() => {
                    buf.resize(info.length as usize, 0)
                }
                Err(e) => return Err(e),
            }
        }
    })
}

/// Sends the request bytes to `target` as a call and returns at once; the
/// answer is received later with [`receive_response_raw`], which leaves
/// other mail queued. Several requests may be pending at once (at most
/// 1,024), to different processes: a caller can fan out and then collect.
///
/// # Errors
///
/// [`Error::NoProcess`], [`Error::TooLarge`], [`Error::MailboxFull`],
/// [`Error::Limit`] (too many requests pending), [`Error::Invalid`]
/// (itself).
pub fn send_request_raw(target: Pid, request: &[u8]) -> Result<RequestRef> {
    let len = i32::try_from(request.len()).map_err(|_| Error::TooLarge)?;
    let mut reference = 0u64;
    // SAFETY: the request is valid for `len` bytes, `reference` for 8.
    check(unsafe {
        sys::send_request(
            target.as_u64() as i64,
            request.as_ptr(),
            len,
            &mut reference,
        )
    })?;
    Ok(RequestRef(reference))
}

/// [`send_request_raw`] with the request encoded with postcard.
///
/// # Errors
///
/// As [`send_request_raw`], plus [`Error::Encode`].
pub fn send_request<Req: Serialize + ?Sized>(target: Pid, request: &Req) -> Result<RequestRef> {
    let bytes = postcard::to_allocvec(request).map_err(|e| Error::Encode(e.to_string()))?;
    send_request_raw(target, &bytes)
}

/// Waits (up to `timeout`; `None`: forever) for the answer to `request`
/// and nothing else: other mail stays queued, in order. A capture point.
/// On [`Error::Timeout`] the request is still pending (wait again, or
/// [`cancel_request`]); any other outcome ends it.
///
/// # Errors
///
/// [`Error::Timeout`], [`Error::CalleeDown`] (with the reason),
/// [`Error::NodeDown`], [`Error::NoProcess`], [`Error::NotCallable`],
/// [`Error::Invalid`] (not a pending request).
pub fn receive_response_raw(request: RequestRef, timeout: Option<Duration>) -> Result<Vec<u8>> {
    let (info, data) = receive(Some((sys::MATCH_REPLY, request.0 as i64)), timeout)?;
    if info.kind == sys::KIND_REPLY {
        return Ok(data);
    }
    Err(
        match DownReason::from_codes(info.reason, info.code, &data) {
            DownReason::NoProc => Error::NoProcess,
            DownReason::NodeDown => Error::NodeDown,
            DownReason::NotCallable => Error::NotCallable,
            other => Error::CalleeDown(other),
        },
    )
}

/// [`receive_response_raw`] with the reply decoded with postcard.
///
/// # Errors
///
/// As [`receive_response_raw`], plus [`Error::Decode`].
pub fn receive_response<Resp: DeserializeOwned>(
    request: RequestRef,
    timeout: Option<Duration>,
) -> Result<Resp> {
    let reply = receive_response_raw(request, timeout)?;
    postcard::from_bytes(&reply).map_err(|e| Error::Decode(e.to_string()))
}

/// Withdraw a pending request: its answer, queued or to come, is dropped.
///
/// # Errors
///
/// [`Error::Invalid`] if it is not pending (answered, or withdrawn).
pub fn cancel_request(request: RequestRef) -> Result<()> {
    // SAFETY: no pointers.
    check(unsafe { sys::demonitor(request.0 as i64) }).map(drop)
}

/// Answers the call `handle` with the reply bytes. In the rare case that
/// even the room kept for replies is in use (`MAILBOX_FULL`), it waits a
/// millisecond and tries again: the handle stays good.
///
/// # Errors
///
/// [`Error::Invalid`] (answered already, or no such call),
/// [`Error::TooLarge`].
pub fn reply_raw(handle: CallHandle, data: &[u8]) -> Result<()> {
    let len = i32::try_from(data.len()).map_err(|_| Error::TooLarge)?;
    loop {
        // SAFETY: the pointer is valid for `len` bytes; the host copies them.
        match check(unsafe { sys::reply(handle.0 as i64, data.as_ptr(), len) }) {
            // Even the room kept for replies is in use: the handle stays
            // good, so try again once some has been acknowledged.
            Err(Error::MailboxFull) => {
                let _ = crate::sleep(Duration::from_millis(1));
            }
            other => return other.map(drop),
        }
    }
}

/// [`reply_raw`] with the value encoded with postcard.
///
/// # Errors
///
/// As [`reply_raw`], plus [`Error::Encode`].
pub fn reply<T: Serialize + ?Sized>(handle: CallHandle, value: &T) -> Result<()> {
    let bytes = postcard::to_allocvec(value).map_err(|e| Error::Encode(e.to_string()))?;
    reply_raw(handle, &bytes)
}

/// Serves calls forever: each request is decoded as a `Req`, handed to
/// `handler` with the caller's pid, and its `Resp` is the reply. Plain
/// messages and DOWN notices are passed to `other` (return `false` from it
/// to stop serving). A request that does not decode is not answered (its
/// caller times out) and is logged.
///
/// # Errors
///
/// The first receive or reply error.
pub fn serve<Req, Resp, F, O>(mut handler: F, mut other: O) -> Result<()>
where
    Req: DeserializeOwned,
    Resp: Serialize,
    F: FnMut(Pid, Req) -> Resp,
    O: FnMut(Incoming) -> bool,
{
    loop {
        match recv_any(None)? {
            Incoming::Call { from, handle, data } => match postcard::from_bytes::<Req>(&data) {
                Ok(req) => {
                    let resp = handler(from, req);
                    match reply(handle, &resp) {
                        // The caller gave up meanwhile: not this server's error.
                        Ok(()) | Err(Error::Invalid) => {}
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => {
                    let _ = crate::log(
                        crate::Level::Warn,
                        &format!("call from {from}: undecodable request: {e}"),
                    );
                }
            },
            incoming => {
                if !other(incoming) {
                    return Ok(());
                }
            }
        }
    }
}

/// Gives this process `name` (UTF-8, 1..=255 bytes) in its owner's
/// namespace, held by the cluster until it unregisters or ends (kept when
/// it moves). Of two processes of one owner racing for a name, exactly one
/// gets it.
///
/// # Errors
///
/// [`Error::NameTaken`], [`Error::Limit`] (the owner's quota of names),
/// [`Error::Invalid`] (a bad name), [`Error::NoNode`] (no cluster to ask).
pub fn register(name: &str) -> Result<()> {
    let len = i32::try_from(name.len()).map_err(|_| Error::Invalid)?;
    // SAFETY: the pointer is valid for `len` bytes.
    check(unsafe { sys::register(name.as_ptr(), len) }).map(drop)
}

/// Gives `name` up.
///
/// # Errors
///
/// [`Error::Invalid`] if this process does not hold it.
pub fn unregister(name: &str) -> Result<()> {
    let len = i32::try_from(name.len()).map_err(|_| Error::Invalid)?;
    // SAFETY: the pointer is valid for `len` bytes.
    check(unsafe { sys::unregister(name.as_ptr(), len) }).map(drop)
}

/// The process `name` names in this process's owner's namespace.
///
/// # Errors
///
/// [`Error::NoProcess`] if no live process holds it.
pub fn whereis(name: &str) -> Result<Pid> {
    let len = i32::try_from(name.len()).map_err(|_| Error::Invalid)?;
    let mut pid = 0u64;
    // SAFETY: the name is valid for `len` bytes, `pid` for 8 bytes of writes.
    check(unsafe { sys::whereis(name.as_ptr(), len, &mut pid) })?;
    Ok(Pid::from_raw(pid))
}

/// [`call`] the process `name` names ([`whereis`], then [`call`]).
///
/// # Errors
///
/// As [`whereis`] and [`call`].
pub fn call_name<Req: Serialize + ?Sized, Resp: DeserializeOwned>(
    name: &str,
    request: &Req,
    timeout: Option<Duration>,
) -> Result<Resp> {
    call(whereis(name)?, request, timeout)
}

/// Joins group `name` (in this process's owner's namespace); the group
/// forgets it when it ends, keeps it when it moves.
///
/// # Errors
///
/// [`Error::Limit`] (the owner's quota, or a full group),
/// [`Error::Invalid`], [`Error::NoNode`].
pub fn join_group(name: &str) -> Result<()> {
    let len = i32::try_from(name.len()).map_err(|_| Error::Invalid)?;
    // SAFETY: the pointer is valid for `len` bytes.
    check(unsafe { sys::join_group(name.as_ptr(), len) }).map(drop)
}

/// Leaves group `name`.
///
/// # Errors
///
/// [`Error::Invalid`] if this process is not a member.
pub fn leave_group(name: &str) -> Result<()> {
    let len = i32::try_from(name.len()).map_err(|_| Error::Invalid)?;
    // SAFETY: the pointer is valid for `len` bytes.
    check(unsafe { sys::leave_group(name.as_ptr(), len) }).map(drop)
}

/// One live member of group `name`, preferring this node's.
///
/// # Errors
///
/// [`Error::NoProcess`] if it has no live member.
pub fn group_pick(name: &str) -> Result<Pid> {
    let len = i32::try_from(name.len()).map_err(|_| Error::Invalid)?;
    let mut pid = 0u64;
    // SAFETY: the name is valid for `len` bytes, `pid` for 8 bytes of writes.
    check(unsafe { sys::group_pick(name.as_ptr(), len, &mut pid) })?;
    Ok(Pid::from_raw(pid))
}

/// How many members [`call_group`] tries before it gives up.
pub const CALL_GROUP_ATTEMPTS: u32 = 3;

/// [`call`] one live member of group `name` (preferring this node's). If
/// the member is found down ([`Error::NoProcess`], [`Error::CalleeDown`],
/// [`Error::NodeDown`], [`Error::NotCallable`]) another is picked, up to [`CALL_GROUP_ATTEMPTS`]
/// in all: a request may then have reached a member that ended before
/// replying, so group requests should be safe to repeat.
///
/// # Errors
///
/// As [`group_pick`] and [`call`] (the last attempt's error).
pub fn call_group<Req: Serialize + ?Sized, Resp: DeserializeOwned>(
    name: &str,
    request: &Req,
    timeout: Option<Duration>,
) -> Result<Resp> {
    let mut last = Error::NoProcess;
    for _ in 0..CALL_GROUP_ATTEMPTS {
        let member = group_pick(name)?;
        match call(member, request, timeout) {
            Err(
                e
                @ (Error::NoProcess | Error::CalleeDown(_) | Error::NodeDown | Error::NotCallable),
            ) => last = e,
            other => return other,
        }
    }
    Err(last)
}

/// Be told when `pid` ends: a [`Down`] then arrives through [`recv_any`]
/// (at once, `noproc`, if it is already gone). Follows `pid` when it
/// moves; moving is not ending.
///
/// # Errors
///
/// [`Error::Invalid`] (itself), [`Error::Limit`] (too many monitors),
/// [`Error::MailboxFull`].
pub fn monitor(pid: Pid) -> Result<MonitorRef> {
    let mut reference = 0u64;
    // SAFETY: `reference` is valid for 8 bytes of writes.
    check(unsafe { sys::monitor(pid.as_u64() as i64, &mut reference) })?;
    Ok(MonitorRef(reference))
}

/// Withdraw a monitor: its DOWN, if not received yet, never will be.
///
/// # Errors
///
/// [`Error::Invalid`] if it is not held (withdrawn, or its DOWN received).
pub fn demonitor(reference: MonitorRef) -> Result<()> {
    // SAFETY: no pointers.
    check(unsafe { sys::demonitor(reference.0 as i64) }).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons() {
        assert_eq!(DownReason::from_codes(1, 3, &[]), DownReason::Exit(3));
        assert_eq!(
            DownReason::from_codes(2, 0, b"boom"),
            DownReason::Trap("boom".into())
        );
        assert_eq!(DownReason::from_codes(99, 0, &[]), DownReason::Unknown(99));
    }

    #[test]
    #[cfg(not(target_arch = "wasm32"))]
    fn unsupported_off_wasm() {
        assert_eq!(
            call_raw(Pid::from_raw(1), b"x", None),
            Err(Error::Unsupported)
        );
        assert_eq!(monitor(Pid::from_raw(1)), Err(Error::Unsupported));
    }
}
