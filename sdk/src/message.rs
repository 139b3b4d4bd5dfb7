//! Messages: send bytes or typed values to a pid, receive from the mailbox.

use core::cell::RefCell;
use core::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{check, Error, Result};
use crate::pid::Pid;
use crate::process::{duration_to_ms, sleep, yield_now};
use crate::sys;

/// Largest message the ABI accepts, in bytes (1 MiB). [`send`] of more fails
/// with [`Error::TooLarge`].
pub const MAX_MESSAGE_SIZE: usize = 1 << 20;

/// Size of the buffer [`recv`] starts with (64 KiB); it grows on demand and is
/// reused across calls.
pub const RECV_BUFFER_SIZE: usize = 64 * 1024;

/// How many times [`send_blocking`] retries a send that found the mailbox
/// full before it gives up with [`Error::MailboxFull`].
///
/// The first [`SEND_BLOCKING_YIELDS`] retries only yield; after that each
/// retry sleeps, starting at 1 ms and doubling up to
/// [`SEND_BLOCKING_MAX_BACKOFF`]. With these values a receiver that never
/// drains its mailbox makes `send_blocking` give up after about 10 seconds.
pub const SEND_BLOCKING_MAX_RETRIES: u32 = 1_000;

/// Retries of [`send_blocking`] that call [`yield_now`] instead of sleeping.
pub const SEND_BLOCKING_YIELDS: u32 = 16;

/// Longest sleep between two retries of [`send_blocking`].
pub const SEND_BLOCKING_MAX_BACKOFF: Duration = Duration::from_millis(10);

/// A received message: who sent it and the bytes.
///
/// ```no_run
/// let msg = shoal::recv(None)?;
/// if msg.data == b"ping" {
///     shoal::send(msg.sender, b"pong")?;
/// }
/// # Ok::<(), shoal::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Pid of the process that sent it.
    pub sender: Pid,
    /// The payload, exactly as sent.
    pub data: Vec<u8>,
}

/// Converts an optional timeout into the ABI's `timeout_ms` (`-1` forever).
fn timeout_to_ms(timeout: Option<Duration>) -> i64 {
    timeout.map_or(-1, duration_to_ms)
}

/// Queues a copy of `data` in `pid`'s mailbox. Never blocks; not a capture
/// point.
///
/// Success means the message was queued, not that it was read. Messages from
/// one sender to one receiver arrive in order.
///
/// # Errors
///
/// [`Error::NoProcess`] (no live process `pid`), [`Error::TooLarge`] (over
/// [`MAX_MESSAGE_SIZE`]), [`Error::MailboxFull`] (retry later, or use
/// [`send_blocking`]).
///
/// ```no_run
/// let pid: shoal::Pid = "17".parse().unwrap();
/// shoal::send(pid, b"add 5")?;
/// # Ok::<(), shoal::Error>(())
/// ```
pub fn send(pid: Pid, data: &[u8]) -> Result<()> {
    let len = i32::try_from(data.len()).map_err(|_| Error::TooLarge)?;
    // SAFETY: the pointer is valid for `len` bytes; the host copies them.
    check(unsafe { sys::send(pid.as_u64() as i64, data.as_ptr(), len) }).map(drop)
}

/// Like [`send`], but when the receiver's mailbox is full it waits and
/// retries, a bounded number of times.
///
/// Retry policy: up to [`SEND_BLOCKING_MAX_RETRIES`] retries; the first
/// [`SEND_BLOCKING_YIELDS`] call [`yield_now`] (which usually lets the
/// receiver drain its mailbox), later ones sleep with exponential backoff from
/// 1 ms up to [`SEND_BLOCKING_MAX_BACKOFF`] (about 10 s in all). Every wait is
/// a capture point.
///
/// # Errors
///
/// [`Error::MailboxFull`] once the retries are used up, and any other error of
/// [`send`] at once.
///
/// ```no_run
/// # let sink = shoal::Pid::from_raw(1);
/// for i in 0u64..10_000 {
///     shoal::send_blocking(sink, &i.to_le_bytes())?;
/// }
/// # Ok::<(), shoal::Error>(())
/// ```
pub fn send_blocking(pid: Pid, data: &[u8]) -> Result<()> {
    let mut backoff = Duration::from_millis(1);
    let mut retries = 0;
    loop {
        match send(pid, data) {
            Err(Error::MailboxFull) if retries < SEND_BLOCKING_MAX_RETRIES => {
                if retries < SEND_BLOCKING_YIELDS {
                    yield_now()?;
                } else {
                    sleep(backoff)?;
                    backoff = (backoff * 2).min(SEND_BLOCKING_MAX_BACKOFF);
                }
                retries += 1;
            }
            other => return other,
        }
    }
}

/// Receives the oldest message into `buf`, returning the sender and the
/// message length (`buf[..len]` holds it). A capture point.
///
/// `timeout`: `None` waits forever, `Some(Duration::ZERO)` only polls, other
/// values are rounded up to whole milliseconds.
///
/// # Errors
///
/// [`Error::Timeout`] if nothing arrived in time;
/// [`Error::BufferTooSmall`] with the size `needed` if the message does not
/// fit — it stays queued, so call again with a larger buffer.
///
/// ```no_run
/// let mut buf = [0u8; 256];
/// match shoal::recv_into(&mut buf, None) {
///     Ok((sender, len)) => println!("{sender} sent {:?}", &buf[..len]),
///     Err(shoal::Error::BufferTooSmall { needed }) => println!("need {needed} bytes"),
///     Err(e) => return Err(e),
/// }
/// # Ok::<(), shoal::Error>(())
/// ```
pub fn recv_into(buf: &mut [u8], timeout: Option<Duration>) -> Result<(Pid, usize)> {
    // A slice is never longer than isize::MAX, which is i32::MAX on wasm32;
    // elsewhere only offer what the ABI can describe.
    let buf_len = i32::try_from(buf.len()).unwrap_or(i32::MAX);
    let mut info = sys::RecvInfo::default();
    // SAFETY: `buf` is valid for `buf_len` bytes of writes and `info` for a
    // RecvInfo; both outlive the call.
    let rc = unsafe { sys::recv(buf.as_mut_ptr(), buf_len, timeout_to_ms(timeout), &mut info) };
    match check(rc) {
        Ok(len) => {
            let len = len as usize;
            if len > buf.len() {
                // A host bug; never hand out bytes that were not written.
                return Err(Error::Invalid);
            }
            Ok((Pid::from_raw(info.sender_pid), len))
        }
        Err(Error::BufferTooSmall { .. }) => Err(Error::BufferTooSmall {
            needed: info.length as usize,
        }),
        Err(e) => Err(e),
    }
}

std::thread_local! {
    /// The reusable receive buffer of [`recv`] (guests are single-threaded).
    static RECV_BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Receives into `buf`, growing it until the oldest message fits.
fn recv_growing(buf: &mut Vec<u8>, timeout: Option<Duration>) -> Result<Message> {
    if buf.len() < RECV_BUFFER_SIZE {
        buf.resize(RECV_BUFFER_SIZE, 0);
    }
    loop {
        match recv_into(buf, timeout) {
            Ok((sender, len)) => {
                return Ok(Message {
                    sender,
                    data: buf[..len].to_vec(),
                })
            }
            // The message stays queued: grow and take it. The size strictly
            // grows each round, so this ends.
            Err(Error::BufferTooSmall { needed }) if needed > buf.len() => buf.resize(needed, 0),
            Err(e) => return Err(e),
        }
    }
}

/// Receives the oldest message from the mailbox. A capture point.
///
/// `timeout`: `None` waits forever, `Some(Duration::ZERO)` only polls, other
/// values are rounded up to whole milliseconds. Any size up to the host's
/// limit is received: a reusable buffer starts at [`RECV_BUFFER_SIZE`] and
/// grows when the host answers `BUFFER_TOO_SMALL`.
///
/// # Errors
///
/// [`Error::Timeout`] if nothing arrived in time.
///
/// ```no_run
/// loop {
///     let msg = shoal::recv(None)?;
///     if msg.data == b"stop" {
///         break;
///     }
///     shoal::send_blocking(msg.sender, &msg.data)?; // echo
/// }
/// # Ok::<(), shoal::Error>(())
/// ```
pub fn recv(timeout: Option<Duration>) -> Result<Message> {
    RECV_BUFFER.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => recv_growing(&mut buf, timeout),
        // Only reachable if recv were re-entered; use a fresh buffer then.
        Err(_) => recv_growing(&mut Vec::new(), timeout),
    })
}

/// Sends `value` encoded with [postcard](https://docs.rs/postcard) (compact,
/// not self-describing) — the receiver must decode the same type with
/// [`recv_msg`]. Does not block, like [`send`].
///
/// # Errors
///
/// [`Error::Encode`] if `value` cannot be encoded, then as [`send`].
///
/// ```no_run
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// enum Cmd { Add(u64), Get }
///
/// # let counter = shoal::Pid::from_raw(1);
/// shoal::send_msg(counter, &Cmd::Add(5))?;
/// # Ok::<(), shoal::Error>(())
/// ```
pub fn send_msg<T: Serialize + ?Sized>(pid: Pid, value: &T) -> Result<()> {
    let bytes = postcard::to_allocvec(value).map_err(|e| Error::Encode(e.to_string()))?;
    send(pid, &bytes)
}

/// Receives the oldest message (as [`recv`]) and decodes it as a `T` that was
/// sent with [`send_msg`]. A capture point.
///
/// # Errors
///
/// As [`recv`], and [`Error::Decode`] if the bytes are not a valid `T`; the
/// message is consumed either way.
///
/// ```no_run
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// enum Cmd { Add(u64), Get }
///
/// let mut total = 0;
/// let (sender, cmd) = shoal::recv_msg::<Cmd>(None)?;
/// match cmd {
///     Cmd::Add(n) => total += n,
///     Cmd::Get => shoal::send_msg(sender, &total)?,
/// }
/// # Ok::<(), shoal::Error>(())
/// ```
pub fn recv_msg<T: DeserializeOwned>(timeout: Option<Duration>) -> Result<(Pid, T)> {
    let msg = recv(timeout)?;
    let value = postcard::from_bytes(&msg.data).map_err(|e| Error::Decode(e.to_string()))?;
    Ok((msg.sender, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts() {
        assert_eq!(timeout_to_ms(None), -1);
        assert_eq!(timeout_to_ms(Some(Duration::ZERO)), 0);
        assert_eq!(timeout_to_ms(Some(Duration::from_micros(1))), 1);
    }

    #[test]
    #[cfg(not(target_arch = "wasm32"))]
    fn calls_are_unsupported_off_wasm() {
        assert_eq!(send(Pid::from_raw(1), b"x"), Err(Error::Unsupported));
        assert_eq!(
            send_blocking(Pid::from_raw(1), b"x"),
            Err(Error::Unsupported)
        );
        assert_eq!(recv(Some(Duration::ZERO)), Err(Error::Unsupported));
        assert_eq!(send_msg(Pid::from_raw(1), &5u32), Err(Error::Unsupported));
    }

    #[test]
    fn postcard_round_trip() {
        let bytes = postcard::to_allocvec(&(Pid::from_raw(9), "x")).expect("encode");
        let (pid, s): (Pid, String) = postcard::from_bytes(&bytes).expect("decode");
        assert_eq!((pid, s.as_str()), (Pid::from_raw(9), "x"));
    }
}
