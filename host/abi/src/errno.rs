//! Stable error codes returned by Shoal ABI v1 calls.
//!
//! Every fallible import returns `0` (or a non-negative length) on success and
//! one of these negative codes on failure. The numbers are part of the ABI and
//! never change meaning; `sdk/ABI.md` and `sdk/include/shoal.h` list the same
//! values.

/// Success.
pub const OK: i32 = 0;
/// A pointer/length pair does not lie inside the guest's linear memory.
pub const FAULT: i32 = -1;
/// An argument is malformed (negative length, bad UTF-8, bad encoding).
pub const INVALID: i32 = -2;
/// No live process has that pid.
pub const NO_PROCESS: i32 = -3;
/// The wait ended because its timeout elapsed.
pub const TIMEOUT: i32 = -4;
/// The receive buffer is smaller than the next message (which stays queued).
pub const BUFFER_TOO_SMALL: i32 = -5;
/// The message is larger than the node's per-message limit.
pub const TOO_LARGE: i32 = -6;
/// The receiver's mailbox is full; retry later.
pub const MAILBOX_FULL: i32 = -7;
/// No module with that hash or name is known.
pub const NO_MODULE: i32 = -8;
/// The module exists but could not be prepared or instantiated.
pub const SPAWN_FAILED: i32 = -9;
/// A node limit (process count) was reached.
pub const LIMIT: i32 = -10;
/// No node fits a spawn's placement target (unknown or down node, no node
/// with those labels), or the cluster could not be reached to place it.
pub const NO_NODE: i32 = -11;
/// The callee of a `call` ended (exited, trapped, was killed) before it
/// replied; the reason is written at the call's `down_ptr`.
pub const CALLEE_DOWN: i32 = -12;
/// The node the callee ran on was declared dead by the cluster before it
/// replied.
pub const NODE_DOWN: i32 = -13;
/// `register`: another process of the same owner holds that name.
pub const NAME_TAKEN: i32 = -14;
/// `call`: the callee cannot receive calls — its module imports neither
/// `recv_any` nor `recv_match` (it was built before calls, or never
/// serves them). The request was not queued: nothing piles up unseen.
pub const NOT_CALLABLE: i32 = -15;

/// Every code with its symbolic name, for docs, the C header test and logs.
pub const ALL: &[(i32, &str)] = &[
    (OK, "OK"),
    (FAULT, "FAULT"),
    (INVALID, "INVALID"),
    (NO_PROCESS, "NO_PROCESS"),
    (TIMEOUT, "TIMEOUT"),
    (BUFFER_TOO_SMALL, "BUFFER_TOO_SMALL"),
    (TOO_LARGE, "TOO_LARGE"),
    (MAILBOX_FULL, "MAILBOX_FULL"),
    (NO_MODULE, "NO_MODULE"),
    (SPAWN_FAILED, "SPAWN_FAILED"),
    (LIMIT, "LIMIT"),
    (NO_NODE, "NO_NODE"),
    (CALLEE_DOWN, "CALLEE_DOWN"),
    (NODE_DOWN, "NODE_DOWN"),
    (NAME_TAKEN, "NAME_TAKEN"),
    (NOT_CALLABLE, "NOT_CALLABLE"),
];

/// The symbolic name of a code, for messages.
pub fn name(code: i32) -> &'static str {
    ALL.iter()
        .find(|(c, _)| *c == code)
        .map(|(_, n)| *n)
        .unwrap_or("UNKNOWN")
}
