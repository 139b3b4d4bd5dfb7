//! The plain data of calls and monitors shared by host and guests: what
//! `recv_any` says a message is, and why a monitored process went down.
//!
//! `recv_any` writes a [`RECV_ANY_INFO_BYTES`]-byte info record
//! (little-endian):
//!
//! ```text
//! offset size field
//!      0    8 sender pid (for a DOWN: the process that went down)
//!      8    4 length of the payload in bytes
//!     12    4 kind: KIND_MESSAGE | KIND_CALL | KIND_DOWN | KIND_REPLY
//!     16    8 KIND_CALL: the reply handle; KIND_DOWN: the monitor ref
//!             (or the request ref, through `recv_match`); KIND_REPLY:
//!             the request ref
//!     24    4 KIND_DOWN: the reason (REASON_*)
//!     28    4 KIND_DOWN with REASON_EXIT: the exit code
//! ```
//!
//! `call` writes the same reason and code (8 bytes) at its `down_ptr` when
//! it fails with `CALLEE_DOWN` or `NODE_DOWN`. A DOWN's payload is the
//! trap message for `REASON_TRAP` (UTF-8), else empty.

/// Size of `recv_any`'s info record.
pub const RECV_ANY_INFO_BYTES: i32 = 32;
/// Size of the record `call` writes at `down_ptr`.
pub const DOWN_INFO_BYTES: i32 = 8;

/// A plain message (what `send` sent).
pub const KIND_MESSAGE: u32 = 0;
/// A call request: answer it with `reply(handle, ..)`.
pub const KIND_CALL: u32 = 1;
/// A monitored process went down (or was never there).
pub const KIND_DOWN: u32 = 2;
/// The reply to a request made with `send_request` (only `recv_match`
/// with [`MATCH_REPLY`] returns it).
pub const KIND_REPLY: u32 = 3;

/// `recv_match` filter: what `recv_any` would return, but only from the
/// pid given as the filter's value (plain messages, call requests, DOWNs of
/// monitors of that pid).
pub const MATCH_FROM: i32 = 1;
/// `recv_match` filter: only the answer (a reply, or a DOWN saying why none
/// will come) to the request whose reference is the filter's value.
pub const MATCH_REPLY: i32 = 2;

/// It exited (returned from `_start` or called `exit`), with a code.
pub const REASON_EXIT: i32 = 1;
/// It trapped (or ran out of memory or fuel, or could not start).
pub const REASON_TRAP: i32 = 2;
/// It was killed (or stopped by a snapshot).
pub const REASON_KILLED: i32 = 3;
/// It did not exist when the monitor or call reached it.
pub const REASON_NOPROC: i32 = 4;
/// Its node was declared dead by the cluster.
pub const REASON_NODE_DOWN: i32 = 5;
/// It refused: it already serves or is watched by as many as it may hold.
pub const REASON_OVERLOADED: i32 = 6;
/// It cannot receive calls (its module imports neither `recv_any` nor
/// `recv_match`): the request was refused, not queued.
pub const REASON_NOT_CALLABLE: i32 = 7;

/// Calls a process may have taken (through `recv_any`) and not yet
/// answered; one more is answered `CALLEE_DOWN` with
/// [`REASON_OVERLOADED`].
pub const SERVING_MAX: usize = 65_536;
/// Monitors on one process; one more is answered at once with a DOWN of
/// [`REASON_OVERLOADED`].
pub const WATCHERS_MAX: usize = 65_536;
/// Monitors one process may hold; `monitor` answers `LIMIT` beyond.
pub const MONITORS_MAX: usize = 4_096;
/// Requests (`send_request`) one process may have unanswered at once;
/// `send_request` answers `LIMIT` beyond.
pub const REQUESTS_MAX: usize = 1_024;
