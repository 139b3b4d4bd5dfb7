//! Raw Shoal ABI v1 imports, exactly as the host provides them.
//!
//! These are the functions of the import module `shoal_v1` (see `sdk/ABI.md`),
//! with pointers as Rust raw pointers (32-bit on wasm32) and results as raw
//! `i32` codes ([`OK`], a length, or one of the negative error constants below).
//! Prefer the safe wrappers at the crate root; this module is for code that
//! needs exact control, such as tests of the host's argument checks.
//!
//! # Targets
//!
//! On `wasm32` the functions are real imports. On every other target they are
//! stubs so that `cargo check`, `cargo doc` and doctests work on a development
//! machine: each fallible stub returns [`UNSUPPORTED`] (which the safe API turns
//! into [`Error::Unsupported`](crate::Error::Unsupported)), [`self_pid`] returns
//! `0` (never a valid pid) and [`exit`] panics.
//!
//! # Example
//!
//! ```no_run
//! use shoal::sys;
//!
//! let text = "hello";
//! // SAFETY: the pointer and length describe a live string.
//! let rc = unsafe { sys::log(2, text.as_ptr(), text.len() as i32) };
//! assert_eq!(rc, sys::OK);
//! ```

/// The import module every function of this ABI lives in.
pub use shoal_abi::table::SHOAL_ABI_MODULE as ABI_MODULE;

/// The ABI version this crate implements (also carried by [`ABI_MODULE`]).
pub use shoal_abi::table::SHOAL_ABI_VERSION as ABI_VERSION;

// The error codes: one table, in `shoal-abi`, shared with the host.
pub use shoal_abi::errno::{
    BAD_BATCH, BAD_BUCKET, BAD_KEY, BUFFER_TOO_SMALL, BUSY, CALLEE_DOWN, DEADLOCK, FAULT, FENCED,
    INVALID, LIMIT, LOCK_LOST, MAILBOX_FULL, NAME_TAKEN, NODE_DOWN, NOT_A_COUNTER, NOT_CALLABLE,
    NOT_FOUND, NO_MODULE, NO_NODE, NO_PROCESS, OK, OVERFLOW, QUOTA, RATE_LIMITED, SPAWN_FAILED,
    TIMEOUT, TOO_LARGE, UNAVAILABLE, VALUE_TOO_LARGE, VERSION_MISMATCH,
};

// Key-value and locks: flags, record sizes and bounds.
pub use shoal_abi::kv::{
    BATCH_BYTES_MAX, BATCH_ENTRIES_MAX, BUCKET_BYTES_MAX, FENCE_BYTES, KEY_BYTES_MAX,
    KV_INFO_BYTES, KV_STALE, LIST_KEYS_MAX, LOCK_NAME_BYTES_MAX, MANY_RECORD_HEADER_BYTES,
    VALUE_BYTES_MAX,
};

/// What [`kv_get`] writes at its `info` pointer: 16 bytes, little-endian.
///
/// ```
/// assert_eq!(core::mem::size_of::<shoal::sys::KvInfo>(), 16);
/// ```
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KvInfo {
    /// The entry's version.
    pub version: u64,
    /// The value's length in bytes (also on [`BUFFER_TOO_SMALL`]).
    pub length: u64,
}

const _: () = assert!(core::mem::size_of::<KvInfo>() == 16);

/// The fence record a fenced write points to: 16 bytes, little-endian
/// (pointers are 32-bit on wasm32).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    /// The token [`lock`] or [`try_lock`] returned.
    pub token: u64,
    /// The lock's name (UTF-8).
    pub name_ptr: u32,
    /// The name's length in bytes.
    pub name_len: u32,
}

const _: () = assert!(core::mem::size_of::<Fence>() == 16);

// What `recv_any` says a message is, and why a process went down.
pub use shoal_abi::calls::{
    KIND_CALL, KIND_DOWN, KIND_MESSAGE, KIND_REPLY, MATCH_FROM, MATCH_REPLY, REASON_EXIT,
    REASON_KILLED, REASON_NODE_DOWN, REASON_NOPROC, REASON_NOT_CALLABLE, REASON_OVERLOADED,
    REASON_TRAP,
};

/// What [`recv_any`] writes at its `info` pointer: 32 bytes, little-endian
/// (see `sdk/ABI.md`, "recv_any").
///
/// ```
/// assert_eq!(core::mem::size_of::<shoal::sys::RecvAnyInfo>(), 32);
/// ```
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecvAnyInfo {
    /// Pid of the sender (for a DOWN: the process that went down).
    pub sender_pid: u64,
    /// Length of the payload in bytes.
    pub length: u32,
    /// [`KIND_MESSAGE`], [`KIND_CALL`] or [`KIND_DOWN`].
    pub kind: u32,
    /// For a call: the reply handle; for a DOWN: the monitor's reference.
    pub reference: u64,
    /// For a DOWN: `REASON_*`.
    pub reason: i32,
    /// For a DOWN with [`REASON_EXIT`]: the exit code.
    pub code: i32,
}

const _: () = assert!(core::mem::size_of::<RecvAnyInfo>() == 32);

/// What [`call`] writes at `down` when the callee went down: 8 bytes.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DownInfo {
    /// `REASON_*`.
    pub reason: i32,
    /// The exit code for [`REASON_EXIT`].
    pub code: i32,
}

const _: () = assert!(core::mem::size_of::<DownInfo>() == 8);

/// Returned by the non-wasm32 stubs only; never by a Shoal host.
pub const UNSUPPORTED: i32 = i32::MIN;

/// What [`recv`] writes at its `info` pointer: 16 bytes, little-endian.
///
/// On [`BUFFER_TOO_SMALL`] only [`length`](RecvInfo::length) is meaningful:
/// the buffer size the message needs.
///
/// ```
/// assert_eq!(core::mem::size_of::<shoal::sys::RecvInfo>(), 16);
/// ```
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecvInfo {
    /// Pid of the sender (a `u64`; the ABI passes pids as `i64`).
    pub sender_pid: u64,
    /// Length of the message in bytes.
    pub length: u32,
    /// Always 0.
    pub reserved: u32,
}

const _: () = assert!(core::mem::size_of::<RecvInfo>() == 16);

/// Declares every import once: as a real `shoal_v1` import on wasm32, and as
/// a documented stub (returning `$stub`) everywhere else.
macro_rules! imports {
    ($(
        $(#[$meta:meta])*
        fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty => $stub:expr;
    )*) => {
        #[cfg(target_arch = "wasm32")]
        #[link(wasm_import_module = "shoal_v1")]
        extern "C" {
            $(
                $(#[$meta])*
                pub fn $name($($arg: $ty),*) -> $ret;
            )*
        }

        #[cfg(not(target_arch = "wasm32"))]
        mod stubs {
            #[allow(unused_imports)]
            use super::*;
            $(
                $(#[$meta])*
                #[allow(unused_variables, clippy::too_many_arguments)]
                pub unsafe fn $name($($arg: $ty),*) -> $ret {
                    $stub
                }
            )*
        }

        #[cfg(not(target_arch = "wasm32"))]
        pub use stubs::*;
    };
}

imports! {
    /// `shoal_v1.self_pid() -> i64`: the caller's pid (non-zero, opaque).
    ///
    /// # Safety
    ///
    /// Always safe to call; it is `unsafe` only because it is an import.
    fn self_pid() -> i64 => 0;

    /// `shoal_v1.spawn(module_ptr, module_len, args_ptr, args_len, pid_out_ptr) -> i32`.
    ///
    /// Starts the module named by the UTF-8 text at `module_ptr` with the
    /// arguments at `args_ptr` (NUL-terminated strings back to back) and writes
    /// the child's pid at `pid_out` on success. Returns [`OK`] or
    /// [`FAULT`], [`INVALID`], [`NO_MODULE`], [`SPAWN_FAILED`], [`LIMIT`].
    ///
    /// # Safety
    ///
    /// Every pointer must be valid for its length (`pid_out` for 8 bytes of
    /// writes), or the call must be meant to test the host's checks; the host
    /// never touches memory outside the ranges.
    fn spawn(
        module_ptr: *const u8,
        module_len: i32,
        args_ptr: *const u8,
        args_len: i32,
        pid_out: *mut u64,
    ) -> i32 => UNSUPPORTED;

    /// `shoal_v1.spawn_on(target_ptr, target_len, module_ptr, module_len,
    /// args_ptr, args_len, pid_out_ptr) -> i32`.
    ///
    /// [`spawn`] with a placement target (UTF-8 at `target_ptr`): empty
    /// (the cluster's scheduler chooses), a node name, or label constraints
    /// `k=v[,k=v]`. Additionally returns [`NO_NODE`].
    ///
    /// # Safety
    ///
    /// As for [`spawn`].
    fn spawn_on(
        target_ptr: *const u8,
        target_len: i32,
        module_ptr: *const u8,
        module_len: i32,
        args_ptr: *const u8,
        args_len: i32,
        pid_out: *mut u64,
    ) -> i32 => UNSUPPORTED;

    /// `shoal_v1.sleep_ms(ms: i64) -> i32`: blocks at least `ms` milliseconds.
    /// Capture point. [`INVALID`] if `ms < 0`.
    ///
    /// # Safety
    ///
    /// Always safe to call; it is `unsafe` only because it is an import.
    fn sleep_ms(ms: i64) -> i32 => UNSUPPORTED;

    /// `shoal_v1.yield_now() -> i32`: lets other processes run. Capture point.
    ///
    /// # Safety
    ///
    /// Always safe to call; it is `unsafe` only because it is an import.
    fn yield_now() -> i32 => UNSUPPORTED;

    /// `shoal_v1.exit(code: i32)`: ends the process; never returns.
    ///
    /// # Safety
    ///
    /// No destructors run and Rust's stdout buffer is not flushed; the safe
    /// [`crate::exit`] flushes first.
    fn exit(code: i32) -> ! => panic!("shoal::sys::exit({code}) called outside a Shoal host");

    /// `shoal_v1.log(level, ptr, len) -> i32`: appends UTF-8 text to the
    /// process log at `level` (0 error .. 4 trace). Returns [`OK`] or
    /// [`FAULT`], [`INVALID`].
    ///
    /// # Safety
    ///
    /// `ptr` must be valid for `len` bytes of reads (or the call must be meant
    /// to test the host's checks).
    fn log(level: i32, ptr: *const u8, len: i32) -> i32 => UNSUPPORTED;

    /// `shoal_v1.send(pid, data_ptr, data_len) -> i32`: queues a copy of the
    /// bytes in `pid`'s mailbox without blocking. Returns [`OK`] or [`FAULT`],
    /// [`INVALID`], [`NO_PROCESS`], [`TOO_LARGE`], [`MAILBOX_FULL`].
    ///
    /// # Safety
    ///
    /// `data_ptr` must be valid for `data_len` bytes of reads (or the call must
    /// be meant to test the host's checks).
    fn send(pid: i64, data_ptr: *const u8, data_len: i32) -> i32 => UNSUPPORTED;

    /// `shoal_v1.recv(buf_ptr, buf_len, timeout_ms, info_ptr) -> i32`: waits up
    /// to `timeout_ms` (negative: forever, 0: poll) for the oldest message and
    /// copies it into the buffer. Capture point.
    ///
    /// Returns the message length (≥ 0), or [`FAULT`], [`INVALID`],
    /// [`TIMEOUT`], [`BUFFER_TOO_SMALL`] (the message stays queued and
    /// `info.length` holds the size needed). `info` may be null.
    ///
    /// # Safety
    ///
    /// `buf_ptr` must be valid for `buf_len` bytes of writes and `info`, if not
    /// null, for a [`RecvInfo`] (or the call must be meant to test the host's
    /// checks).
    fn recv(buf_ptr: *mut u8, buf_len: i32, timeout_ms: i64, info: *mut RecvInfo) -> i32 => UNSUPPORTED;

    /// `shoal_v1.call(pid, req_ptr, req_len, reply_ptr, reply_len,
    /// timeout_ms, down_ptr) -> i32`: sends the request to `pid` as a call
    /// and waits up to `timeout_ms` (negative: forever) for its reply,
    /// copied into the reply buffer. Capture point. Other messages stay
    /// queued, in order.
    ///
    /// Returns the reply length (≥ 0), or [`FAULT`], [`INVALID`] (calling
    /// itself), [`TOO_LARGE`], [`MAILBOX_FULL`], [`NO_PROCESS`],
    /// [`TIMEOUT`], [`BUFFER_TOO_SMALL`] (the reply was larger than the
    /// buffer; it is lost), [`CALLEE_DOWN`] or [`NODE_DOWN`] (then `down`,
    /// if not null, holds the reason).
    ///
    /// # Safety
    ///
    /// Each pointer must be valid for its length (`down`, if not null, for a
    /// [`DownInfo`]).
    fn call(
        pid: i64,
        req_ptr: *const u8,
        req_len: i32,
        reply_ptr: *mut u8,
        reply_len: i32,
        timeout_ms: i64,
        down: *mut DownInfo,
    ) -> i32 => UNSUPPORTED;

    /// `shoal_v1.recv_any(buf_ptr, buf_len, timeout_ms, info_ptr) -> i32`:
    /// [`recv`] that also receives call requests and DOWN notices, told
    /// apart by `info.kind`. Capture point. `info` is required.
    ///
    /// # Safety
    ///
    /// `buf_ptr` must be valid for `buf_len` bytes of writes and `info` for
    /// a [`RecvAnyInfo`].
    fn recv_any(buf_ptr: *mut u8, buf_len: i32, timeout_ms: i64, info: *mut RecvAnyInfo) -> i32 => UNSUPPORTED;

    /// `shoal_v1.reply(handle, data_ptr, data_len) -> i32`: answers the call
    /// whose request carried `handle`. Returns [`OK`], or [`INVALID`] (no
    /// such call, or answered already), [`FAULT`], [`TOO_LARGE`].
    ///
    /// # Safety
    ///
    /// `data_ptr` must be valid for `data_len` bytes of reads.
    fn reply(handle: i64, data_ptr: *const u8, data_len: i32) -> i32 => UNSUPPORTED;

    /// `shoal_v1.monitor(pid, ref_out) -> i32`: be told (a DOWN through
    /// [`recv_any`]) when `pid` ends; writes the monitor's reference.
    /// Returns [`OK`], [`INVALID`] (itself), [`LIMIT`], [`MAILBOX_FULL`],
    /// [`FAULT`]. A pid already gone gives a DOWN `noproc` at once.
    ///
    /// # Safety
    ///
    /// `ref_out` must be valid for 8 bytes of writes.
    fn monitor(pid: i64, ref_out: *mut u64) -> i32 => UNSUPPORTED;

    /// `shoal_v1.demonitor(ref) -> i32`: withdraw a monitor; its DOWN, if
    /// not received yet, never will be. [`OK`] or [`INVALID`].
    ///
    /// # Safety
    ///
    /// Always safe to call; it is `unsafe` only because it is an import.
    fn demonitor(reference: i64) -> i32 => UNSUPPORTED;

    /// `shoal_v1.send_request(pid, req_ptr, req_len, ref_out) -> i32`: a
    /// [`call`] that does not wait: sends the request, writes its reference
    /// at `ref_out` and returns. The answer (a reply, or a DOWN saying why
    /// none will come) is received with [`recv_match`] and
    /// [`MATCH_REPLY`]; [`demonitor`] withdraws the request. Returns [`OK`],
    /// or [`FAULT`], [`INVALID`] (itself), [`TOO_LARGE`], [`LIMIT`] (1,024
    /// requests pending), [`NO_PROCESS`], [`MAILBOX_FULL`].
    ///
    /// # Safety
    ///
    /// `req_ptr` must be valid for `req_len` bytes of reads and `ref_out`
    /// for 8 bytes of writes.
    fn send_request(pid: i64, req_ptr: *const u8, req_len: i32, ref_out: *mut u64) -> i32 => UNSUPPORTED;

    /// `shoal_v1.recv_match(filter, value, buf_ptr, buf_len, timeout_ms,
    /// info_ptr) -> i32`: selective receive. [`MATCH_FROM`]: what
    /// [`recv_any`] would return, only from pid `value`; [`MATCH_REPLY`]:
    /// only the answer to request `value` ([`KIND_REPLY`], or [`KIND_DOWN`]
    /// with the reason). Everything else stays queued, in order. Capture
    /// point. Results as [`recv_any`]; [`INVALID`] for an unknown filter or
    /// a request that is not pending.
    ///
    /// # Safety
    ///
    /// `buf_ptr` must be valid for `buf_len` bytes of writes and `info` for
    /// a [`RecvAnyInfo`].
    fn recv_match(filter: i32, value: i64, buf_ptr: *mut u8, buf_len: i32, timeout_ms: i64, info: *mut RecvAnyInfo) -> i32 => UNSUPPORTED;

    /// `shoal_v1.register(name_ptr, name_len) -> i32`: gives the caller the
    /// name (UTF-8, 1..=255 bytes) in its owner's namespace, held by the
    /// cluster until it unregisters or ends (kept when it moves). Returns
    /// [`OK`], [`NAME_TAKEN`], [`LIMIT`] (the owner's quota), [`INVALID`],
    /// [`FAULT`], [`NO_NODE`] (the cluster could not be asked).
    ///
    /// # Safety
    ///
    /// `name_ptr` must be valid for `name_len` bytes of reads.
    fn register(name_ptr: *const u8, name_len: i32) -> i32 => UNSUPPORTED;

    /// `shoal_v1.unregister(name_ptr, name_len) -> i32`: gives the name up.
    /// [`OK`], or [`INVALID`] if the caller does not hold it.
    ///
    /// # Safety
    ///
    /// As for [`register`].
    fn unregister(name_ptr: *const u8, name_len: i32) -> i32 => UNSUPPORTED;

    /// `shoal_v1.whereis(name_ptr, name_len, pid_out) -> i32`: the pid the
    /// name names in the caller's owner's namespace. [`OK`] or
    /// [`NO_PROCESS`], [`INVALID`], [`FAULT`].
    ///
    /// # Safety
    ///
    /// `name_ptr` must be valid for `name_len` bytes of reads and `pid_out`
    /// for 8 bytes of writes.
    fn whereis(name_ptr: *const u8, name_len: i32, pid_out: *mut u64) -> i32 => UNSUPPORTED;

    /// `shoal_v1.join_group(name_ptr, name_len) -> i32`: joins the group
    /// (created on first join) in the caller's owner's namespace; left when
    /// the caller ends. [`OK`], [`LIMIT`], [`INVALID`], [`FAULT`], [`NO_NODE`].
    ///
    /// # Safety
    ///
    /// As for [`register`].
    fn join_group(name_ptr: *const u8, name_len: i32) -> i32 => UNSUPPORTED;

    /// `shoal_v1.leave_group(name_ptr, name_len) -> i32`: [`OK`] or
    /// [`INVALID`] (not a member).
    ///
    /// # Safety
    ///
    /// As for [`register`].
    fn leave_group(name_ptr: *const u8, name_len: i32) -> i32 => UNSUPPORTED;

    /// `shoal_v1.group_pick(name_ptr, name_len, pid_out) -> i32`: one live
    /// member of the group, preferring members on the caller's node (in
    /// turn). [`OK`] or [`NO_PROCESS`] (no live member), [`INVALID`],
    /// [`FAULT`].
    ///
    /// # Safety
    ///
    /// As for [`whereis`].
    fn group_pick(name_ptr: *const u8, name_len: i32, pid_out: *mut u64) -> i32 => UNSUPPORTED;

    /// `shoal_v1.kv_get(bucket_ptr, bucket_len, key_ptr, key_len, flags,
    /// buf_ptr, buf_len, info) -> i32`: the value's length, copied to
    /// `buf`, with [`KvInfo`] at `info`. `flags`: 0 (linearizable) or
    /// [`KV_STALE`]. [`NOT_FOUND`], [`BUFFER_TOO_SMALL`] (the length is in
    /// `info`), [`BAD_BUCKET`], [`BAD_KEY`], [`UNAVAILABLE`], [`FAULT`].
    ///
    /// # Safety
    ///
    /// Each pointer must be valid for its length (`info` for 16 bytes of
    /// writes).
    fn kv_get(
        bucket_ptr: *const u8,
        bucket_len: i32,
        key_ptr: *const u8,
        key_len: i32,
        flags: i32,
        buf_ptr: *mut u8,
        buf_len: i32,
        info: *mut KvInfo,
    ) -> i32 => UNSUPPORTED;

    /// `shoal_v1.kv_exists(bucket_ptr, bucket_len, key_ptr, key_len, flags)
    /// -> i32`: 1 or 0, or an error as for [`kv_get`].
    ///
    /// # Safety
    ///
    /// Each pointer must be valid for its length.
    fn kv_exists(
        bucket_ptr: *const u8,
        bucket_len: i32,
        key_ptr: *const u8,
        key_len: i32,
        flags: i32,
    ) -> i32 => UNSUPPORTED;

    /// `shoal_v1.kv_set(bucket_ptr, bucket_len, key_ptr, key_len,
    /// value_ptr, value_len, fence, version_out) -> i32`: [`OK`] with the
    /// new version at `version_out`; [`FENCED`] (a `fence` whose token is
    /// not the lock's current one), [`VALUE_TOO_LARGE`], [`QUOTA`],
    /// [`RATE_LIMITED`], [`UNAVAILABLE`] (may still apply), ...
    ///
    /// # Safety
    ///
    /// Each pointer must be valid for its length; `fence` null or valid
    /// for 16 bytes, its name valid for its length; `version_out` valid for
    /// 8 bytes of writes.
    fn kv_set(
        bucket_ptr: *const u8,
        bucket_len: i32,
        key_ptr: *const u8,
        key_len: i32,
        value_ptr: *const u8,
        value_len: i32,
        fence: *const Fence,
        version_out: *mut u64,
    ) -> i32 => UNSUPPORTED;

    /// `shoal_v1.kv_cas(bucket_ptr, bucket_len, key_ptr, key_len,
    /// expected_version, value_ptr, value_len, fence, version_out) -> i32`:
    /// [`kv_set`] only if the key is at `expected_version` (0: absent),
    /// else [`VERSION_MISMATCH`].
    ///
    /// # Safety
    ///
    /// As for [`kv_set`].
    fn kv_cas(
        bucket_ptr: *const u8,
        bucket_len: i32,
        key_ptr: *const u8,
        key_len: i32,
        expected_version: i64,
        value_ptr: *const u8,
        value_len: i32,
        fence: *const Fence,
        version_out: *mut u64,
    ) -> i32 => UNSUPPORTED;

    /// `shoal_v1.kv_delete(bucket_ptr, bucket_len, key_ptr, key_len,
    /// fence) -> i32`: 1 (it existed), 0, or an error as for [`kv_set`].
    ///
    /// # Safety
    ///
    /// As for [`kv_set`].
    fn kv_delete(
        bucket_ptr: *const u8,
        bucket_len: i32,
        key_ptr: *const u8,
        key_len: i32,
        fence: *const Fence,
    ) -> i32 => UNSUPPORTED;

    /// `shoal_v1.kv_increment(bucket_ptr, bucket_len, key_ptr, key_len,
    /// delta, value_out) -> i32`: adds `delta` to the counter (8 bytes,
    /// i64 little-endian; absent: 0) and writes its new value.
    /// [`NOT_A_COUNTER`], [`OVERFLOW`], or an error as for [`kv_set`].
    ///
    /// # Safety
    ///
    /// Each pointer must be valid for its length, `value_out` for 8 bytes.
    fn kv_increment(
        bucket_ptr: *const u8,
        bucket_len: i32,
        key_ptr: *const u8,
        key_len: i32,
        delta: i64,
        value_out: *mut i64,
    ) -> i32 => UNSUPPORTED;

    /// `shoal_v1.kv_list(bucket_ptr, bucket_len, prefix_ptr, prefix_len,
    /// cursor_ptr, cursor_len, flags, buf_ptr, buf_len) -> i32`: how many
    /// keys (starting with the prefix, after the cursor; empty: from the
    /// first) were written to `buf`, each a 2-byte little-endian length
    /// then the key. Fewer than [`LIST_KEYS_MAX`] and not cut by the
    /// buffer means the end. [`BUFFER_TOO_SMALL`] if not even one fits.
    ///
    /// # Safety
    ///
    /// Each pointer must be valid for its length.
    fn kv_list(
        bucket_ptr: *const u8,
        bucket_len: i32,
        prefix_ptr: *const u8,
        prefix_len: i32,
        cursor_ptr: *const u8,
        cursor_len: i32,
        flags: i32,
        buf_ptr: *mut u8,
        buf_len: i32,
    ) -> i32 => UNSUPPORTED;

    /// `shoal_v1.kv_get_many(bucket_ptr, bucket_len, keys_ptr, keys_len,
    /// flags, buf_ptr, buf_len, size_out) -> i32`: reads every key
    /// (encoded as for [`kv_list`]'s output: 2-byte length, key; at most
    /// [`BATCH_ENTRIES_MAX`]) from one state and writes one record per key,
    /// in order: version (u64, 0: absent), value length (u32), value. The
    /// bytes written; their total is also written at `size_out` (8 bytes),
    /// with [`BUFFER_TOO_SMALL`] when `buf` is shorter. [`BAD_BATCH`],
    /// [`BAD_KEY`], or an error as for [`kv_get`].
    ///
    /// # Safety
    ///
    /// Each pointer must be valid for its length, `size_out` for 8 bytes.
    fn kv_get_many(
        bucket_ptr: *const u8,
        bucket_len: i32,
        keys_ptr: *const u8,
        keys_len: i32,
        flags: i32,
        buf_ptr: *mut u8,
        buf_len: i32,
        size_out: *mut u64,
    ) -> i32 => UNSUPPORTED;

    /// `shoal_v1.kv_set_many(bucket_ptr, bucket_len, entries_ptr,
    /// entries_len, fence) -> i32`: sets every entry (2-byte key length,
    /// key, 4-byte value length, value; at most [`BATCH_ENTRIES_MAX`] and
    /// [`BATCH_BYTES_MAX`]) in one write, all or nothing: how many.
    /// [`BAD_BATCH`], or an error as for [`kv_set`].
    ///
    /// # Safety
    ///
    /// Each pointer must be valid for its length; `fence` null or valid.
    fn kv_set_many(
        bucket_ptr: *const u8,
        bucket_len: i32,
        entries_ptr: *const u8,
        entries_len: i32,
        fence: *const Fence,
    ) -> i32 => UNSUPPORTED;

    /// `shoal_v1.kv_delete_many(bucket_ptr, bucket_len, keys_ptr, keys_len,
    /// fence) -> i32`: deletes every key (encoded as for [`kv_get_many`])
    /// in one write, all or nothing: how many existed. As [`kv_set_many`].
    ///
    /// # Safety
    ///
    /// Each pointer must be valid for its length; `fence` null or valid.
    fn kv_delete_many(
        bucket_ptr: *const u8,
        bucket_len: i32,
        keys_ptr: *const u8,
        keys_len: i32,
        fence: *const Fence,
    ) -> i32 => UNSUPPORTED;

    /// `shoal_v1.lock(name_ptr, name_len, timeout_ms, token_out) -> i32`:
    /// waits (a capture point) until the caller holds the lock, at most
    /// `timeout_ms` (negative: no limit), and writes its fencing token.
    /// [`TIMEOUT`], [`DEADLOCK`] (waiting would close a cycle: nothing is
    /// held), [`LOCK_LOST`] (the wait was dropped), [`QUOTA`], ...
    ///
    /// # Safety
    ///
    /// `name_ptr` valid for `name_len` bytes, `token_out` for 8 bytes of
    /// writes.
    fn lock(name_ptr: *const u8, name_len: i32, timeout_ms: i64, token_out: *mut u64)
        -> i32 => UNSUPPORTED;

    /// `shoal_v1.try_lock(name_ptr, name_len, token_out) -> i32`: [`lock`]
    /// without waiting: [`BUSY`] if another process holds it. Under output
    /// commit a capture point, as [`lock`] (the request waits for a
    /// recorded checkpoint first).
    ///
    /// # Safety
    ///
    /// As for [`lock`].
    fn try_lock(name_ptr: *const u8, name_len: i32, token_out: *mut u64) -> i32 => UNSUPPORTED;

    /// `shoal_v1.unlock(name_ptr, name_len, token) -> i32`: [`OK`], or
    /// [`LOCK_LOST`] if the caller no longer holds it under `token`.
    ///
    /// # Safety
    ///
    /// `name_ptr` valid for `name_len` bytes.
    fn unlock(name_ptr: *const u8, name_len: i32, token: i64) -> i32 => UNSUPPORTED;

    /// `shoal_v1.lock_check(name_ptr, name_len, token) -> i32`: [`OK`] if
    /// `token` is the current holder's token of the caller's owner's lock
    /// (a callee checking a caller's sequencer), else [`FENCED`].
    ///
    /// # Safety
    ///
    /// As for [`unlock`].
    fn lock_check(name_ptr: *const u8, name_len: i32, token: i64) -> i32 => UNSUPPORTED;
}
