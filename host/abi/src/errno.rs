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
/// `kv_get`: the key does not exist.
pub const NOT_FOUND: i32 = -16;
/// `kv_cas`: the key is not at the expected version.
pub const VERSION_MISMATCH: i32 = -17;
/// A fenced write or `lock_check` named a token that is not the lock's
/// current holder's: the writer lost the lock (or never held it).
pub const FENCED: i32 = -18;
/// A key is empty or longer than 256 bytes.
pub const BAD_KEY: i32 = -19;
/// A value is larger than 1 MiB.
pub const VALUE_TOO_LARGE: i32 = -20;
/// A bucket name is empty or longer than 64 bytes.
pub const BAD_BUCKET: i32 = -21;
/// The owner's key-value quota (keys or bytes) or lock quota is used up.
pub const QUOTA: i32 = -22;
/// The owner writes faster than its write-rate quota on this node; retry
/// later.
pub const RATE_LIMITED: i32 = -23;
/// `kv_increment` of a value that is not a counter (8 bytes, i64 LE).
pub const NOT_A_COUNTER: i32 = -24;
/// `kv_increment` would overflow.
pub const OVERFLOW: i32 = -25;
/// `try_lock`: another process holds the lock.
pub const BUSY: i32 = -26;
/// `lock`: waiting would close a cycle of lock waits; this wait (the
/// youngest of the cycle) is refused and nothing is held.
pub const DEADLOCK: i32 = -27;
/// `unlock`: the caller no longer holds the lock under that token (it was
/// released when its node was declared dead, or when it was restored as a
/// new incarnation).
pub const LOCK_LOST: i32 = -28;
/// The cluster could not confirm the operation (no quorum or no leader
/// reachable in time). A write may still be applied later.
pub const UNAVAILABLE: i32 = -29;
/// A key-value batch (`kv_get_many`, `kv_set_many`, `kv_delete_many`) has
/// no entries, more than `kv::BATCH_ENTRIES_MAX`, more than
/// `kv::BATCH_BYTES_MAX` bytes, or a malformed encoding.
pub const BAD_BATCH: i32 = -30;

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
    (NOT_FOUND, "NOT_FOUND"),
    (VERSION_MISMATCH, "VERSION_MISMATCH"),
    (FENCED, "FENCED"),
    (BAD_KEY, "BAD_KEY"),
    (VALUE_TOO_LARGE, "VALUE_TOO_LARGE"),
    (BAD_BUCKET, "BAD_BUCKET"),
    (QUOTA, "QUOTA"),
    (RATE_LIMITED, "RATE_LIMITED"),
    (NOT_A_COUNTER, "NOT_A_COUNTER"),
    (OVERFLOW, "OVERFLOW"),
    (BUSY, "BUSY"),
    (DEADLOCK, "DEADLOCK"),
    (LOCK_LOST, "LOCK_LOST"),
    (UNAVAILABLE, "UNAVAILABLE"),
    (BAD_BATCH, "BAD_BATCH"),
];

/// The symbolic name of a code, for messages.
pub fn name(code: i32) -> &'static str {
    ALL.iter()
        .find(|(c, _)| *c == code)
        .map(|(_, n)| *n)
        .unwrap_or("UNKNOWN")
}
