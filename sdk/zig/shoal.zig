//! shoal.zig - the Shoal guest ABI v1 for Zig.
//!
//! Every function of the import module `shoal_v1` (see `sdk/ABI.md`, the one
//! contract; `sdk/include/shoal.h` is the C view of the same table) is
//! declared in `raw`, with the exact core Wasm signature, and wrapped below in
//! Zig idioms: slices instead of pointer/length pairs, error unions instead of
//! negative codes, `?u64` timeouts in milliseconds (`null` waits forever).
//!
//! Build a guest for `wasm32-wasi` with this file as the module `shoal`:
//!
//!     zig build-exe -target wasm32-wasi -O ReleaseSmall \
//!         --dep shoal -Mroot=guest.zig -Mshoal=sdk/zig/shoal.zig
//!
//! and in the guest:
//!
//!     const shoal = @import("shoal");
//!     const msg = try shoal.recv(&buf, null);
//!     try shoal.sendBlocking(msg.sender, msg.data);
//!
//! Nothing here allocates unless a function takes an `std.mem.Allocator`
//! (`recvAlloc`, `Bucket.getAlloc`, `Bucket.getManyAlloc`); everything else
//! works on buffers the caller owns, and results that are bytes are slices
//! of those buffers.
//!
//! Blocking calls (capture points: the process may be snapshotted or moved
//! while inside them and resumes there): `sleepMs`, `yieldNow`, `recv*`,
//! `call`, `recvAny`, `recvFrom`, `receiveResponse`, `Lock.acquire`, and the
//! retries inside `sendBlocking` and `reply`.

const std = @import("std");

// ---- Version and constants ---------------------------------------------------

/// ABI version implemented here; also in the import module name.
pub const abi_version: u32 = 1;
/// The import module every function below lives in.
pub const abi_module = "shoal_v1";

/// Largest message `send` accepts, in bytes (1 MiB).
pub const max_message_size: usize = 1 << 20;
/// Largest key-value value, in bytes (1 MiB).
pub const max_value_size: usize = 1 << 20;
/// Largest key, in bytes.
pub const max_key_size: usize = 256;
/// Largest bucket name, in bytes.
pub const max_bucket_name_size: usize = 64;
/// Largest lock, process or group name, in bytes.
pub const max_name_size: usize = 255;
/// `kv_get`/`kv_exists`/`kv_list` flag: read this node's applied state.
pub const kv_stale: i32 = 1;
/// Most entries (keys) in one batch (`kv_get_many`, `kv_set_many`,
/// `kv_delete_many`); more is `BadBatch`.
pub const max_batch_entries: usize = 100;
/// Most bytes of keys and values in one batch (4 MiB); more is `BadBatch`.
pub const max_batch_bytes: usize = 4 << 20;
/// Bytes of a `kv_get_many` record before its value: version (u64), length (u32).
pub const kv_many_record_header: usize = 12;

/// `recv_any`/`recv_match` record kinds.
pub const kind_message: u32 = 0;
pub const kind_call: u32 = 1;
pub const kind_down: u32 = 2;
pub const kind_reply: u32 = 3;

/// `recv_match` filters.
pub const match_from: i32 = 1;
pub const match_reply: i32 = 2;

/// Why a process went down (DOWN records, `CALLEE_DOWN`).
pub const reason_exit: i32 = 1;
pub const reason_trap: i32 = 2;
pub const reason_killed: i32 = 3;
pub const reason_noproc: i32 = 4;
pub const reason_node_down: i32 = 5;
pub const reason_overloaded: i32 = 6;
pub const reason_not_callable: i32 = 7;

// ---- Records the host reads or writes (little-endian, as wasm32 is) -----------

/// What `recv` writes at `info` (16 bytes).
pub const RecvInfo = extern struct {
    sender_pid: u64 = 0,
    length: u32 = 0,
    reserved: u32 = 0,
};

/// What `recv_any` and `recv_match` write at `info` (32 bytes).
pub const RecvAnyInfo = extern struct {
    sender_pid: u64 = 0,
    length: u32 = 0,
    kind: u32 = 0,
    reference: u64 = 0,
    reason: i32 = 0,
    code: i32 = 0,
};

/// What `call` writes at `down` on `CALLEE_DOWN`, `NODE_DOWN`, `NOT_CALLABLE`.
pub const DownInfo = extern struct {
    reason: i32 = 0,
    code: i32 = 0,
};

/// What `kv_get` writes at `info` (16 bytes).
pub const KvInfo = extern struct {
    version: u64 = 0,
    length: u64 = 0,
};

/// A fenced write's lock and token (16 bytes, wasm32 pointer).
pub const Fence = extern struct {
    token: u64,
    name_ptr: u32,
    name_len: u32,
};

comptime {
    std.debug.assert(@sizeOf(RecvInfo) == 16);
    std.debug.assert(@sizeOf(RecvAnyInfo) == 32);
    std.debug.assert(@sizeOf(DownInfo) == 8);
    std.debug.assert(@sizeOf(KvInfo) == 16);
    std.debug.assert(@sizeOf(Fence) == 16);
}

// ---- The raw imports ----------------------------------------------------------

/// The `shoal_v1` imports exactly as the host provides them: pointers are
/// 32-bit offsets (wasm32 pointers), lengths `i32`, pids and milliseconds
/// 64-bit; results are `0`, a non-negative length, or a negative code
/// (`Error.fromCode`). Prefer the wrappers below.
pub const raw = struct {
    pub extern "shoal_v1" fn self_pid() u64;
    pub extern "shoal_v1" fn spawn(module: [*]const u8, module_len: i32, args: [*]const u8, args_len: i32, pid_out: *u64) i32;
    pub extern "shoal_v1" fn spawn_on(target: [*]const u8, target_len: i32, module: [*]const u8, module_len: i32, args: [*]const u8, args_len: i32, pid_out: *u64) i32;
    pub extern "shoal_v1" fn sleep_ms(ms: i64) i32;
    pub extern "shoal_v1" fn yield_now() i32;
    /// Reserved for the host (it inserts calls into preemptible modules).
    pub extern "shoal_v1" fn preempt() void;
    pub extern "shoal_v1" fn exit(code: i32) noreturn;
    pub extern "shoal_v1" fn log(level: i32, ptr: [*]const u8, len: i32) i32;
    pub extern "shoal_v1" fn send(pid: u64, data: [*]const u8, len: i32) i32;
    pub extern "shoal_v1" fn recv(buf: [*]u8, buf_len: i32, timeout_ms: i64, info: ?*RecvInfo) i32;
    pub extern "shoal_v1" fn call(pid: u64, req: [*]const u8, req_len: i32, reply: [*]u8, reply_len: i32, timeout_ms: i64, down: ?*DownInfo) i32;
    pub extern "shoal_v1" fn recv_any(buf: [*]u8, buf_len: i32, timeout_ms: i64, info: *RecvAnyInfo) i32;
    pub extern "shoal_v1" fn reply(handle: u64, data: [*]const u8, len: i32) i32;
    pub extern "shoal_v1" fn monitor(pid: u64, ref_out: *u64) i32;
    pub extern "shoal_v1" fn demonitor(reference: u64) i32;
    pub extern "shoal_v1" fn send_request(pid: u64, req: [*]const u8, req_len: i32, ref_out: *u64) i32;
    pub extern "shoal_v1" fn recv_match(filter: i32, value: u64, buf: [*]u8, buf_len: i32, timeout_ms: i64, info: *RecvAnyInfo) i32;
    pub extern "shoal_v1" fn register(name: [*]const u8, name_len: i32) i32;
    pub extern "shoal_v1" fn unregister(name: [*]const u8, name_len: i32) i32;
    pub extern "shoal_v1" fn whereis(name: [*]const u8, name_len: i32, pid_out: *u64) i32;
    pub extern "shoal_v1" fn join_group(name: [*]const u8, name_len: i32) i32;
    pub extern "shoal_v1" fn leave_group(name: [*]const u8, name_len: i32) i32;
    pub extern "shoal_v1" fn group_pick(name: [*]const u8, name_len: i32, pid_out: *u64) i32;
    pub extern "shoal_v1" fn kv_get(bucket: [*]const u8, bucket_len: i32, key: [*]const u8, key_len: i32, flags: i32, buf: [*]u8, buf_len: i32, info: *KvInfo) i32;
    pub extern "shoal_v1" fn kv_exists(bucket: [*]const u8, bucket_len: i32, key: [*]const u8, key_len: i32, flags: i32) i32;
    pub extern "shoal_v1" fn kv_set(bucket: [*]const u8, bucket_len: i32, key: [*]const u8, key_len: i32, value: [*]const u8, value_len: i32, fence: ?*const Fence, version_out: *u64) i32;
    pub extern "shoal_v1" fn kv_cas(bucket: [*]const u8, bucket_len: i32, key: [*]const u8, key_len: i32, expected_version: u64, value: [*]const u8, value_len: i32, fence: ?*const Fence, version_out: *u64) i32;
    pub extern "shoal_v1" fn kv_delete(bucket: [*]const u8, bucket_len: i32, key: [*]const u8, key_len: i32, fence: ?*const Fence) i32;
    pub extern "shoal_v1" fn kv_increment(bucket: [*]const u8, bucket_len: i32, key: [*]const u8, key_len: i32, delta: i64, value_out: *i64) i32;
    pub extern "shoal_v1" fn kv_list(bucket: [*]const u8, bucket_len: i32, prefix: [*]const u8, prefix_len: i32, cursor: [*]const u8, cursor_len: i32, flags: i32, buf: [*]u8, buf_len: i32) i32;
    pub extern "shoal_v1" fn kv_get_many(bucket: [*]const u8, bucket_len: i32, keys: [*]const u8, keys_len: i32, flags: i32, buf: [*]u8, buf_len: i32, size_out: *u64) i32;
    pub extern "shoal_v1" fn kv_set_many(bucket: [*]const u8, bucket_len: i32, entries: [*]const u8, entries_len: i32, fence: ?*const Fence) i32;
    pub extern "shoal_v1" fn kv_delete_many(bucket: [*]const u8, bucket_len: i32, keys: [*]const u8, keys_len: i32, fence: ?*const Fence) i32;
    pub extern "shoal_v1" fn lock(name: [*]const u8, name_len: i32, timeout_ms: i64, token_out: *u64) i32;
    pub extern "shoal_v1" fn try_lock(name: [*]const u8, name_len: i32, token_out: *u64) i32;
    pub extern "shoal_v1" fn unlock(name: [*]const u8, name_len: i32, token: u64) i32;
    pub extern "shoal_v1" fn lock_check(name: [*]const u8, name_len: i32, token: u64) i32;
};

// ---- Errors -------------------------------------------------------------------

/// One error per ABI error code (`Unknown` for a code this SDK does not know).
pub const Error = error{
    /// -1: a pointer/length range is not inside linear memory.
    Fault,
    /// -2: a malformed argument.
    Invalid,
    /// -3: no live process has that pid (or name, or group member).
    NoProcess,
    /// -4: the wait ended because its timeout elapsed.
    Timeout,
    /// -5: the buffer is smaller than the message (which, for receives, stays queued).
    BufferTooSmall,
    /// -6: the message is over `max_message_size`.
    TooLarge,
    /// -7: the receiver's mailbox is full; retry later (`sendBlocking` does).
    MailboxFull,
    /// -8: no module with that hash or name.
    NoModule,
    /// -9: the module exists but could not be started.
    SpawnFailed,
    /// -10: a node limit was reached.
    Limit,
    /// -11: no node fits the target, or the cluster could not be reached
    /// (also every name, key-value and lock call off a cluster).
    NoNode,
    /// -12: the callee ended before it replied.
    CalleeDown,
    /// -13: the callee's node was declared dead.
    NodeDown,
    /// -14: another process of the same owner holds that name.
    NameTaken,
    /// -15: the callee cannot receive calls.
    NotCallable,
    /// -16: the key does not exist.
    NotFound,
    /// -17: the key is not at the expected version.
    VersionMismatch,
    /// -18: the token is not the lock's current holder's.
    Fenced,
    /// -19: a key is empty or longer than 256 bytes.
    BadKey,
    /// -20: a value is larger than 1 MiB.
    ValueTooLarge,
    /// -21: a bucket name is empty or longer than 64 bytes.
    BadBucket,
    /// -22: the owner's key-value or lock quota is used up.
    Quota,
    /// -23: the owner writes too fast; retry later.
    RateLimited,
    /// -24: the value is not an 8-byte counter.
    NotACounter,
    /// -25: the increment would overflow.
    Overflow,
    /// -26: another process holds the lock.
    Busy,
    /// -27: waiting would close a cycle of lock waits.
    Deadlock,
    /// -28: the caller no longer holds the lock under that token.
    LockLost,
    /// -29: the cluster could not confirm it; a write may still be applied.
    Unavailable,
    /// -30: a key-value batch is empty, has more than `max_batch_entries`
    /// entries or more than `max_batch_bytes`, or is malformed.
    BadBatch,
    /// A negative code this SDK does not know.
    Unknown,
};

const code_table = [_]Error{
    error.Fault,         error.Invalid,         error.NoProcess,  error.Timeout,
    error.BufferTooSmall, error.TooLarge,       error.MailboxFull, error.NoModule,
    error.SpawnFailed,   error.Limit,           error.NoNode,     error.CalleeDown,
    error.NodeDown,      error.NameTaken,       error.NotCallable, error.NotFound,
    error.VersionMismatch, error.Fenced,        error.BadKey,     error.ValueTooLarge,
    error.BadBucket,     error.Quota,           error.RateLimited, error.NotACounter,
    error.Overflow,      error.Busy,            error.Deadlock,   error.LockLost,
    error.Unavailable,   error.BadBatch,
};

/// The error for a negative ABI code.
pub fn errorFromCode(code: i32) Error {
    if (code < 0 and code >= -@as(i32, code_table.len)) {
        return code_table[@intCast(-code - 1)];
    }
    return error.Unknown;
}

/// The ABI code of an error (`Unknown` has none: `minInt(i32)`).
pub fn errorCode(err: Error) i32 {
    for (code_table, 0..) |e, i| {
        if (e == err) return -@as(i32, @intCast(i + 1));
    }
    return std.math.minInt(i32);
}

/// The ABI name of a code (`"NO_PROCESS"`), for messages.
pub fn codeName(code: i32) []const u8 {
    const names = [_][]const u8{
        "FAULT",         "INVALID",          "NO_PROCESS",   "TIMEOUT",
        "BUFFER_TOO_SMALL", "TOO_LARGE",     "MAILBOX_FULL", "NO_MODULE",
        "SPAWN_FAILED",  "LIMIT",            "NO_NODE",      "CALLEE_DOWN",
        "NODE_DOWN",     "NAME_TAKEN",       "NOT_CALLABLE", "NOT_FOUND",
        "VERSION_MISMATCH", "FENCED",        "BAD_KEY",      "VALUE_TOO_LARGE",
        "BAD_BUCKET",    "QUOTA",            "RATE_LIMITED", "NOT_A_COUNTER",
        "OVERFLOW",      "BUSY",             "DEADLOCK",     "LOCK_LOST",
        "UNAVAILABLE",   "BAD_BATCH",
    };
    if (code == 0) return "OK";
    if (code < 0 and code >= -@as(i32, names.len)) return names[@intCast(-code - 1)];
    return "UNKNOWN";
}

/// The ABI name of an error of this SDK (`"NO_MODULE"`), or Zig's own name
/// for any other error.
pub fn errorName(err: anyerror) []const u8 {
    for (code_table, 0..) |e, i| {
        if (e == err) return codeName(-@as(i32, @intCast(i + 1)));
    }
    return @errorName(err);
}

/// A raw result: its non-negative value, or the error for its code.
pub fn check(rc: i32) Error!u32 {
    if (rc < 0) return errorFromCode(rc);
    return @intCast(rc);
}

// ---- Helpers ------------------------------------------------------------------

var empty_byte: u8 = 0;

/// A pointer for a possibly empty slice (Zig's empty slices may carry any
/// address; the host accepts any in-memory pointer for length 0, so use a
/// real one).
inline fn ptrOf(s: []const u8) [*]const u8 {
    return if (s.len == 0) @ptrCast(&empty_byte) else s.ptr;
}

inline fn mutPtrOf(s: []u8) [*]u8 {
    return if (s.len == 0) @ptrCast(&empty_byte) else s.ptr;
}

inline fn lenOf(s: []const u8) Error!i32 {
    return std.math.cast(i32, s.len) orelse error.Invalid;
}

/// Buffer lengths are capped at what the ABI can describe.
inline fn bufLen(s: []const u8) i32 {
    return std.math.cast(i32, s.len) orelse std.math.maxInt(i32);
}

/// `null` (forever) is -1; a number saturates at `maxInt(i64)`.
inline fn timeoutMs(timeout_ms: ?u64) i64 {
    const t = timeout_ms orelse return -1;
    return std.math.cast(i64, t) orelse std.math.maxInt(i64);
}

// ---- Processes ------------------------------------------------------------------

/// A process id: opaque, non-zero, unique in the cluster. Compare with `==`,
/// print `toInt()` as unsigned decimal.
pub const Pid = enum(u64) {
    _,

    pub fn fromInt(value: u64) Pid {
        return @enumFromInt(value);
    }

    pub fn toInt(self: Pid) u64 {
        return @intFromEnum(self);
    }
};

/// The calling process's pid. Never fails.
pub fn selfPid() Pid {
    return Pid.fromInt(raw.self_pid());
}

/// Errors of `spawn`/`spawnOn` with an argument list: the ABI's, plus
/// `ArgsTooLong` when the packed arguments do not fit `spawn_args_max`
/// (use `spawnPacked` then) and `Invalid` for an argument containing NUL.
pub const SpawnError = Error || error{ArgsTooLong};

/// The most bytes of packed arguments `spawn` packs on the stack.
pub const spawn_args_max = 4096;

/// Packs `args` as NUL-terminated strings back to back into `out`.
pub fn packArgs(args: []const []const u8, out: []u8) SpawnError![]const u8 {
    var n: usize = 0;
    for (args) |arg| {
        if (std.mem.indexOfScalar(u8, arg, 0) != null) return error.Invalid;
        if (n + arg.len + 1 > out.len) return error.ArgsTooLong;
        @memcpy(out[n .. n + arg.len], arg);
        out[n + arg.len] = 0;
        n += arg.len + 1;
    }
    return out[0..n];
}

/// Starts `module` (`"sha256:<hex>"` or a registered name) with `args` as its
/// `argv[1..]`, on this node; returns the child's pid without waiting for it.
pub fn spawn(module: []const u8, args: []const []const u8) SpawnError!Pid {
    var buf: [spawn_args_max]u8 = undefined;
    return spawnPacked(module, try packArgs(args, &buf));
}

/// `spawn` with arguments already packed (NUL-terminated, back to back).
pub fn spawnPacked(module: []const u8, packed_args: []const u8) Error!Pid {
    var pid: u64 = 0;
    _ = try check(raw.spawn(ptrOf(module), try lenOf(module), ptrOf(packed_args), try lenOf(packed_args), &pid));
    return Pid.fromInt(pid);
}

/// `spawn` with a placement target: `""` (the scheduler picks), a node name,
/// or labels `"k=v[,k=v]"`. `NoNode` when nothing fits.
pub fn spawnOn(target: []const u8, module: []const u8, args: []const []const u8) SpawnError!Pid {
    var buf: [spawn_args_max]u8 = undefined;
    return spawnOnPacked(target, module, try packArgs(args, &buf));
}

/// `spawnOn` with arguments already packed.
pub fn spawnOnPacked(target: []const u8, module: []const u8, packed_args: []const u8) Error!Pid {
    var pid: u64 = 0;
    _ = try check(raw.spawn_on(ptrOf(target), try lenOf(target), ptrOf(module), try lenOf(module), ptrOf(packed_args), try lenOf(packed_args), &pid));
    return Pid.fromInt(pid);
}

/// Blocks for at least `ms` milliseconds. A capture point.
pub fn sleepMs(ms: u64) Error!void {
    _ = try check(raw.sleep_ms(std.math.cast(i64, ms) orelse std.math.maxInt(i64)));
}

/// Lets other processes run. A capture point.
pub fn yieldNow() Error!void {
    _ = try check(raw.yield_now());
}

/// Reserved for the host, which inserts calls to it into the loops of
/// preemptible processes. Calling it is harmless (it returns at once unless
/// a capture was asked for); guests have no reason to.
pub fn preempt() void {
    raw.preempt();
}

/// Ends the process with `code`. Queued messages are dropped. Anything the
/// guest buffered itself is not flushed by the host: flush it first.
pub fn exit(code: i32) noreturn {
    raw.exit(code);
}

/// `log` levels.
pub const Level = enum(i32) {
    err = 0,
    warn = 1,
    info = 2,
    debug = 3,
    trace = 4,
};

/// Appends UTF-8 `message` to the process log kept by the node (not stdout).
pub fn log(level: Level, message: []const u8) Error!void {
    _ = try check(raw.log(@intFromEnum(level), ptrOf(message), try lenOf(message)));
}

// ---- Messages -------------------------------------------------------------------

/// A received message; `data` is a slice of the caller's buffer.
pub const Message = struct {
    sender: Pid,
    data: []u8,
};

/// Queues a copy of `data` in `pid`'s mailbox; never blocks.
pub fn send(pid: Pid, data: []const u8) Error!void {
    const len = std.math.cast(i32, data.len) orelse return error.TooLarge;
    _ = try check(raw.send(pid.toInt(), ptrOf(data), len));
}

/// Retries of `sendBlocking` before it gives up with `MailboxFull`.
pub const send_blocking_max_retries: u32 = 1000;
/// Retries that only yield before `sendBlocking` starts sleeping.
pub const send_blocking_yields: u32 = 16;
/// The longest sleep between two retries, in ms.
pub const send_blocking_max_backoff_ms: u64 = 10;

/// `send`, retrying while the mailbox is full: `yieldNow` 16 times, then
/// sleeps doubling from 1 ms to 10 ms, 1000 retries in all (as the Rust SDK).
pub fn sendBlocking(pid: Pid, data: []const u8) Error!void {
    var retries: u32 = 0;
    var backoff: u64 = 1;
    while (true) : (retries += 1) {
        send(pid, data) catch |e| switch (e) {
            error.MailboxFull => if (retries < send_blocking_max_retries) {
                if (retries < send_blocking_yields) {
                    try yieldNow();
                } else {
                    try sleepMs(backoff);
                    backoff = @min(backoff * 2, send_blocking_max_backoff_ms);
                }
                continue;
            } else return e,
            else => return e,
        };
        return;
    }
}

/// `recv` with the raw info record: returns the length; on `BufferTooSmall`
/// the message stays queued and `info.length` is the size it needs.
pub fn recvInfo(buf: []u8, timeout_ms: ?u64, info: *RecvInfo) Error!usize {
    const n = try check(raw.recv(mutPtrOf(buf), bufLen(buf), timeoutMs(timeout_ms), info));
    if (n > buf.len) return error.Invalid; // a host bug: never hand out unwritten bytes
    return n;
}

/// Takes the oldest message into `buf`, waiting at most `timeout_ms`
/// (`null`: forever, `0`: poll). A capture point. `BufferTooSmall` leaves
/// the message queued (`recvInfo` says its size; `recvAlloc` grows).
pub fn recv(buf: []u8, timeout_ms: ?u64) Error!Message {
    var info: RecvInfo = .{};
    const n = try recvInfo(buf, timeout_ms, &info);
    return .{ .sender = Pid.fromInt(info.sender_pid), .data = buf[0..n] };
}

/// A message that owns its bytes (free `data` with the allocator given).
pub const OwnedMessage = struct {
    sender: Pid,
    data: []u8,

    pub fn deinit(self: OwnedMessage, gpa: std.mem.Allocator) void {
        gpa.free(self.data);
    }
};

/// `recv` of a message of any size, into memory from `gpa`.
pub fn recvAlloc(gpa: std.mem.Allocator, timeout_ms: ?u64) (Error || error{OutOfMemory})!OwnedMessage {
    var buf = try gpa.alloc(u8, 64 * 1024);
    errdefer gpa.free(buf);
    while (true) {
        var info: RecvInfo = .{};
        const n = recvInfo(buf, timeout_ms, &info) catch |e| switch (e) {
            error.BufferTooSmall => if (info.length > buf.len) {
                buf = try gpa.realloc(buf, info.length);
                continue;
            } else return e,
            else => return e,
        };
        buf = try gpa.realloc(buf, n);
        return .{ .sender = Pid.fromInt(info.sender_pid), .data = buf };
    }
}

// ---- Calls, monitors, selective receive ---------------------------------------------

/// Identifies a call request to answer with `reply`.
pub const CallHandle = enum(u64) { _ };
/// A pending request made with `sendRequest`.
pub const RequestRef = enum(u64) { _ };
/// A monitor made with `monitor`.
pub const MonitorRef = enum(u64) { _ };

/// Why a process went down.
pub const DownReason = union(enum) {
    exit: i32,
    /// The trap message (a slice of the receive buffer; may be empty).
    trap: []const u8,
    killed,
    noproc,
    node_down,
    overloaded,
    not_callable,
    unknown: i32,

    pub fn fromCodes(reason: i32, code: i32, message: []const u8) DownReason {
        return switch (reason) {
            reason_exit => .{ .exit = code },
            reason_trap => .{ .trap = message },
            reason_killed => .killed,
            reason_noproc => .noproc,
            reason_node_down => .node_down,
            reason_overloaded => .overloaded,
            reason_not_callable => .not_callable,
            else => .{ .unknown = reason },
        };
    }
};

/// A DOWN notice: `pid` ended, seen through the monitor `reference`.
pub const Down = struct {
    pid: Pid,
    reference: MonitorRef,
    reason: DownReason,
};

/// What `recvAny`/`recvFrom` return; bytes are slices of the caller's buffer.
pub const Incoming = union(enum) {
    message: Message,
    call: struct { from: Pid, handle: CallHandle, data: []u8 },
    down: Down,
    /// Only through `recvMatchInfo` with `match_reply` (see `receiveResponse`).
    reply: struct { reference: RequestRef, data: []u8 },

    fn from(info: RecvAnyInfo, data: []u8) Incoming {
        const pid = Pid.fromInt(info.sender_pid);
        return switch (info.kind) {
            kind_call => .{ .call = .{ .from = pid, .handle = @enumFromInt(info.reference), .data = data } },
            kind_down => .{ .down = .{ .pid = pid, .reference = @enumFromInt(info.reference), .reason = DownReason.fromCodes(info.reason, info.code, data) } },
            kind_reply => .{ .reply = .{ .reference = @enumFromInt(info.reference), .data = data } },
            else => .{ .message = .{ .sender = pid, .data = data } },
        };
    }
};

/// Calls `pid` with `request` and waits at most `timeout_ms` for its reply,
/// copied into `reply_buf`. A capture point; other mail stays queued.
/// On `CalleeDown`/`NodeDown`/`NotCallable`, `down` (if given) says why
/// (for a trap, `down.code` bytes of the trap message are at `reply_buf`).
pub fn call(pid: Pid, request: []const u8, reply_buf: []u8, timeout_ms: ?u64, down: ?*DownInfo) Error![]u8 {
    const req_len = std.math.cast(i32, request.len) orelse return error.TooLarge;
    const n = try check(raw.call(pid.toInt(), ptrOf(request), req_len, mutPtrOf(reply_buf), bufLen(reply_buf), timeoutMs(timeout_ms), down));
    if (n > reply_buf.len) return error.Invalid;
    return reply_buf[0..n];
}

/// `whereis` then `call`.
pub fn callName(name: []const u8, request: []const u8, reply_buf: []u8, timeout_ms: ?u64, down: ?*DownInfo) Error![]u8 {
    return call(try whereis(name), request, reply_buf, timeout_ms, down);
}

/// `recv_any` with the raw info record (on `BufferTooSmall`, `info.length`).
pub fn recvAnyInfo(buf: []u8, timeout_ms: ?u64, info: *RecvAnyInfo) Error!usize {
    const n = try check(raw.recv_any(mutPtrOf(buf), bufLen(buf), timeoutMs(timeout_ms), info));
    if (n > buf.len) return error.Invalid;
    return n;
}

/// `recv` that also receives call requests and DOWN notices. A capture point.
pub fn recvAny(buf: []u8, timeout_ms: ?u64) Error!Incoming {
    var info: RecvAnyInfo = .{};
    const n = try recvAnyInfo(buf, timeout_ms, &info);
    return Incoming.from(info, buf[0..n]);
}

/// `recv_match` with the raw info record.
pub fn recvMatchInfo(filter: i32, value: u64, buf: []u8, timeout_ms: ?u64, info: *RecvAnyInfo) Error!usize {
    const n = try check(raw.recv_match(filter, value, mutPtrOf(buf), bufLen(buf), timeoutMs(timeout_ms), info));
    if (n > buf.len) return error.Invalid;
    return n;
}

/// What `recvAny` would return, but only from `pid`; the rest stays queued.
pub fn recvFrom(pid: Pid, buf: []u8, timeout_ms: ?u64) Error!Incoming {
    var info: RecvAnyInfo = .{};
    const n = try recvMatchInfo(match_from, pid.toInt(), buf, timeout_ms, &info);
    return Incoming.from(info, buf[0..n]);
}

/// Answers the call that carried `handle`. Retries (1 ms sleeps) while even
/// the room kept for replies is in use. `Invalid`: unknown or answered.
pub fn reply(handle: CallHandle, data: []const u8) Error!void {
    const len = std.math.cast(i32, data.len) orelse return error.TooLarge;
    while (true) {
        _ = check(raw.reply(@intFromEnum(handle), ptrOf(data), len)) catch |e| switch (e) {
            error.MailboxFull => {
                sleepMs(1) catch {};
                continue;
            },
            else => return e,
        };
        return;
    }
}

/// A call that does not wait: take its answer with `receiveResponse`.
pub fn sendRequest(pid: Pid, request: []const u8) Error!RequestRef {
    const len = std.math.cast(i32, request.len) orelse return error.TooLarge;
    var reference: u64 = 0;
    _ = try check(raw.send_request(pid.toInt(), ptrOf(request), len, &reference));
    return @enumFromInt(reference);
}

/// Waits for the answer to `request` (a capture point): the reply's bytes,
/// or `NoProcess`, `NodeDown`, `NotCallable`, `CalleeDown` (`down`, if
/// given, gets the reason and code). `Timeout` leaves the request pending.
pub fn receiveResponse(request: RequestRef, buf: []u8, timeout_ms: ?u64, down: ?*DownInfo) Error![]u8 {
    var info: RecvAnyInfo = .{};
    const n = try recvMatchInfo(match_reply, @intFromEnum(request), buf, timeout_ms, &info);
    if (info.kind == kind_reply) return buf[0..n];
    if (down) |d| d.* = .{ .reason = info.reason, .code = info.code };
    return switch (info.reason) {
        reason_noproc => error.NoProcess,
        reason_node_down => error.NodeDown,
        reason_not_callable => error.NotCallable,
        else => error.CalleeDown,
    };
}

/// Withdraws a pending request: its answer, queued or to come, is dropped.
pub fn cancelRequest(request: RequestRef) Error!void {
    _ = try check(raw.demonitor(@intFromEnum(request)));
}

/// Asks for a DOWN (through `recvAny`) when `pid` ends.
pub fn monitor(pid: Pid) Error!MonitorRef {
    var reference: u64 = 0;
    _ = try check(raw.monitor(pid.toInt(), &reference));
    return @enumFromInt(reference);
}

/// Withdraws a monitor: a DOWN not yet received never will be.
pub fn demonitor(reference: MonitorRef) Error!void {
    _ = try check(raw.demonitor(@intFromEnum(reference)));
}

// ---- Names and groups -----------------------------------------------------------

/// Gives the caller `name` in its owner's namespace (cluster-wide).
pub fn register(name: []const u8) Error!void {
    _ = try check(raw.register(ptrOf(name), try lenOf(name)));
}

/// Gives `name` up.
pub fn unregister(name: []const u8) Error!void {
    _ = try check(raw.unregister(ptrOf(name), try lenOf(name)));
}

/// The pid `name` names, or `NoProcess`.
pub fn whereis(name: []const u8) Error!Pid {
    var pid: u64 = 0;
    _ = try check(raw.whereis(ptrOf(name), try lenOf(name), &pid));
    return Pid.fromInt(pid);
}

/// Joins the group `name`.
pub fn joinGroup(name: []const u8) Error!void {
    _ = try check(raw.join_group(ptrOf(name), try lenOf(name)));
}

/// Leaves the group `name`.
pub fn leaveGroup(name: []const u8) Error!void {
    _ = try check(raw.leave_group(ptrOf(name), try lenOf(name)));
}

/// One live member of the group (this node's first, in turn), or `NoProcess`.
pub fn groupPick(name: []const u8) Error!Pid {
    var pid: u64 = 0;
    _ = try check(raw.group_pick(ptrOf(name), try lenOf(name), &pid));
    return Pid.fromInt(pid);
}

// ---- Key-value --------------------------------------------------------------------

/// An entry read by `Bucket.get`: `value` is a slice of the caller's buffer.
pub const Entry = struct {
    value: []u8,
    version: u64,
};

/// The keys of one `Bucket.list` page: iterate with `next`.
pub const KeyPage = struct {
    count: u32,
    bytes: []const u8,
    at: usize = 0,
    seen: u32 = 0,

    /// The next key (a slice of the page buffer), or null at the end of the page.
    pub fn next(self: *KeyPage) ?[]const u8 {
        if (self.seen >= self.count or self.at + 2 > self.bytes.len) return null;
        const len = std.mem.readInt(u16, self.bytes[self.at..][0..2], .little);
        const start = self.at + 2;
        if (start + len > self.bytes.len) return null;
        self.at = start + len;
        self.seen += 1;
        return self.bytes[start .. start + len];
    }
};

/// One entry of a `kv_set_many` batch (`encodeEntries`).
pub const KeyValue = struct {
    key: []const u8,
    value: []const u8,
};

/// The bytes `encodeKeys` writes for `keys`.
pub fn encodedKeysLen(keys: []const []const u8) usize {
    var n: usize = 0;
    for (keys) |k| n += 2 + k.len;
    return n;
}

/// Encodes `keys` into `out` as `kv_get_many` and `kv_delete_many` take
/// them (and `kv_list` answers them): each a 2-byte little-endian length,
/// then the key. Returns the written part of `out`. `BufferTooSmall` if
/// `out` is shorter than `encodedKeysLen(keys)`; `BadKey` for a key whose
/// length does not fit 2 bytes (the host refuses any key over
/// `max_key_size` with `BadKey` too). Bounds of the batch itself (1 to
/// `max_batch_entries` keys) are the host's to check (`BadBatch`).
pub fn encodeKeys(keys: []const []const u8, out: []u8) Error![]u8 {
    var at: usize = 0;
    for (keys) |k| {
        const len = std.math.cast(u16, k.len) orelse return error.BadKey;
        if (out.len - at < 2 + k.len) return error.BufferTooSmall;
        std.mem.writeInt(u16, out[at..][0..2], len, .little);
        @memcpy(out[at + 2 .. at + 2 + k.len], k);
        at += 2 + k.len;
    }
    return out[0..at];
}

/// The bytes `encodeEntries` writes for `entries`.
pub fn encodedEntriesLen(entries: []const KeyValue) usize {
    var n: usize = 0;
    for (entries) |e| n += 2 + e.key.len + 4 + e.value.len;
    return n;
}

/// Encodes `entries` into `out` as `kv_set_many` takes them: each a 2-byte
/// little-endian key length, the key, a 4-byte little-endian value length
/// and the value. Returns the written part of `out`. `BufferTooSmall` if
/// `out` is shorter than `encodedEntriesLen(entries)`; `BadKey` or
/// `ValueTooLarge` for a length that does not fit its field.
pub fn encodeEntries(entries: []const KeyValue, out: []u8) Error![]u8 {
    var at: usize = 0;
    for (entries) |e| {
        const klen = std.math.cast(u16, e.key.len) orelse return error.BadKey;
        const vlen = std.math.cast(u32, e.value.len) orelse return error.ValueTooLarge;
        if (out.len - at < 2 + e.key.len + 4 + e.value.len) return error.BufferTooSmall;
        std.mem.writeInt(u16, out[at..][0..2], klen, .little);
        at += 2;
        @memcpy(out[at .. at + e.key.len], e.key);
        at += e.key.len;
        std.mem.writeInt(u32, out[at..][0..4], vlen, .little);
        at += 4;
        @memcpy(out[at .. at + e.value.len], e.value);
        at += e.value.len;
    }
    return out[0..at];
}

/// Decodes `kv_get_many`'s records (`Bucket.getManyInfo`) into `out`, one
/// per key, in order: null for an absent key, else an entry whose value is
/// a slice of `records`. Returns the filled part of `out`; `Invalid` if
/// the records are malformed or there are more than `out.len`.
pub fn decodeMany(records: []u8, out: []?Entry) Error![]?Entry {
    var at: usize = 0;
    var n: usize = 0;
    while (at < records.len) : (n += 1) {
        if (n >= out.len or records.len - at < kv_many_record_header) return error.Invalid;
        const version = std.mem.readInt(u64, records[at..][0..8], .little);
        const len = std.mem.readInt(u32, records[at + 8 ..][0..4], .little);
        const start = at + kv_many_record_header;
        if (records.len - start < len) return error.Invalid;
        out[n] = if (version == 0) null else .{ .value = records[start .. start + len], .version = version };
        at = start + len;
    }
    return out[0..n];
}

/// What `Bucket.getManyAlloc` returns; free it with `deinit`.
pub const ManyEntries = struct {
    /// One per key, in order: null for an absent key.
    entries: []?Entry,
    /// The records the values are slices of.
    bytes: []u8,

    pub fn deinit(self: ManyEntries, gpa: std.mem.Allocator) void {
        gpa.free(self.entries);
        gpa.free(self.bytes);
    }
};

/// A bucket of keys of this process's owner, replicated by the cluster.
/// Reads are linearizable unless the bucket was made with `stale()`.
pub const Bucket = struct {
    name: []const u8,
    flags: i32 = 0,

    pub fn init(name: []const u8) Bucket {
        return .{ .name = name };
    }

    /// The same bucket, read from this node's applied state (cheaper, may
    /// miss writes completed a moment ago elsewhere).
    pub fn stale(self: Bucket) Bucket {
        return .{ .name = self.name, .flags = kv_stale };
    }

    /// `kv_get` with the raw info record (version, and length even on
    /// `BufferTooSmall`). Returns the value's length.
    pub fn getInfo(self: Bucket, key: []const u8, buf: []u8, info: *KvInfo) Error!usize {
        const n = try check(raw.kv_get(ptrOf(self.name), try lenOf(self.name), ptrOf(key), try lenOf(key), self.flags, mutPtrOf(buf), bufLen(buf), info));
        if (n > buf.len) return error.Invalid;
        return n;
    }

    /// The entry at `key` (value copied into `buf`), or null if absent.
    pub fn get(self: Bucket, key: []const u8, buf: []u8) Error!?Entry {
        var info: KvInfo = .{};
        const n = self.getInfo(key, buf, &info) catch |e| switch (e) {
            error.NotFound => return null,
            else => return e,
        };
        return .{ .value = buf[0..n], .version = info.version };
    }

    /// `get` of a value of any size into memory from `gpa` (free `value`).
    pub fn getAlloc(self: Bucket, gpa: std.mem.Allocator, key: []const u8) (Error || error{OutOfMemory})!?Entry {
        var buf = try gpa.alloc(u8, 256);
        errdefer gpa.free(buf);
        while (true) {
            var info: KvInfo = .{};
            const n = self.getInfo(key, buf, &info) catch |e| switch (e) {
                error.NotFound => {
                    gpa.free(buf);
                    return null;
                },
                error.BufferTooSmall => if (info.length > buf.len and info.length <= max_value_size) {
                    buf = try gpa.realloc(buf, @intCast(info.length));
                    continue;
                } else return error.Invalid,
                else => return e,
            };
            buf = try gpa.realloc(buf, n);
            return .{ .value = buf, .version = info.version };
        }
    }

    /// Whether `key` exists.
    pub fn exists(self: Bucket, key: []const u8) Error!bool {
        return (try check(raw.kv_exists(ptrOf(self.name), try lenOf(self.name), ptrOf(key), try lenOf(key), self.flags))) == 1;
    }

    fn write(self: Bucket, key: []const u8, value: []const u8, expected: ?u64, lock: ?Lock) Error!u64 {
        var fence: Fence = undefined;
        var fence_ptr: ?*const Fence = null;
        if (lock) |l| {
            fence = try l.fence();
            fence_ptr = &fence;
        }
        var version: u64 = 0;
        const b = ptrOf(self.name);
        const bl = try lenOf(self.name);
        const rc = if (expected) |v|
            raw.kv_cas(b, bl, ptrOf(key), try lenOf(key), v, ptrOf(value), try lenOf(value), fence_ptr, &version)
        else
            raw.kv_set(b, bl, ptrOf(key), try lenOf(key), ptrOf(value), try lenOf(value), fence_ptr, &version);
        _ = try check(rc);
        return version;
    }

    /// Sets `key` to `value`; returns the entry's new version.
    pub fn set(self: Bucket, key: []const u8, value: []const u8) Error!u64 {
        return self.write(key, value, null, null);
    }

    /// `set`, applied only while `lock` is still the lock's current grant
    /// (else `Fenced`).
    pub fn setFenced(self: Bucket, key: []const u8, value: []const u8, lock: Lock) Error!u64 {
        return self.write(key, value, null, lock);
    }

    /// `set` only if `key` is at version `expected` (0: absent), else
    /// `VersionMismatch`.
    pub fn cas(self: Bucket, key: []const u8, expected: u64, value: []const u8) Error!u64 {
        return self.write(key, value, expected, null);
    }

    /// `cas` fenced by `lock`.
    pub fn casFenced(self: Bucket, key: []const u8, expected: u64, value: []const u8, lock: Lock) Error!u64 {
        return self.write(key, value, expected, lock);
    }

    /// Deletes `key`; whether it existed.
    pub fn delete(self: Bucket, key: []const u8) Error!bool {
        return (try check(raw.kv_delete(ptrOf(self.name), try lenOf(self.name), ptrOf(key), try lenOf(key), null))) == 1;
    }

    /// `delete` fenced by `lock`.
    pub fn deleteFenced(self: Bucket, key: []const u8, lock: Lock) Error!bool {
        const fence = try lock.fence();
        return (try check(raw.kv_delete(ptrOf(self.name), try lenOf(self.name), ptrOf(key), try lenOf(key), &fence))) == 1;
    }

    /// Adds `delta` to the counter at `key` (8 bytes LE; absent counts as 0)
    /// and returns its new value.
    pub fn increment(self: Bucket, key: []const u8, delta: i64) Error!i64 {
        var value: i64 = 0;
        _ = try check(raw.kv_increment(ptrOf(self.name), try lenOf(self.name), ptrOf(key), try lenOf(key), delta, &value));
        return value;
    }

    /// One page of the keys starting with `prefix`, after `cursor` (empty:
    /// from the first), in byte order, written into `buf`. Pass the page's
    /// last key as the next cursor; a page with `count == 0` is the end.
    pub fn list(self: Bucket, prefix: []const u8, cursor: []const u8, buf: []u8) Error!KeyPage {
        const n = try check(raw.kv_list(ptrOf(self.name), try lenOf(self.name), ptrOf(prefix), try lenOf(prefix), ptrOf(cursor), try lenOf(cursor), self.flags, mutPtrOf(buf), bufLen(buf)));
        return .{ .count = n, .bytes = buf };
    }

    /// `kv_get_many` of keys encoded by `encodeKeys`: writes one record per
    /// key into `buf` (version, 0 if absent; value length; value) and
    /// returns their length; `size` gets their total, also on
    /// `BufferTooSmall` (then it is the size of buffer to pass).
    pub fn getManyInfo(self: Bucket, encoded_keys: []const u8, buf: []u8, size: *u64) Error!usize {
        size.* = 0;
        const n = try check(raw.kv_get_many(ptrOf(self.name), try lenOf(self.name), ptrOf(encoded_keys), try lenOf(encoded_keys), self.flags, mutPtrOf(buf), bufLen(buf), size));
        if (n > buf.len) return error.Invalid;
        return n;
    }

    /// The entries of the keys encoded by `encodeKeys` (1 to
    /// `max_batch_entries`), all read from one state, into `out` (one slot
    /// per key) in order: null for an absent key, values are slices of
    /// `buf`. `BufferTooSmall` if `buf` cannot hold them all (`getManyInfo`
    /// tells the size; `getManyAlloc` grows), `BadBatch`, or as `get`.
    pub fn getMany(self: Bucket, encoded_keys: []const u8, buf: []u8, out: []?Entry) Error![]?Entry {
        var size: u64 = 0;
        const n = try self.getManyInfo(encoded_keys, buf, &size);
        return decodeMany(buf[0..n], out);
    }

    /// `getMany` of `keys` into memory from `gpa`, any size (the buffer
    /// starts small and grows to the size the host asks for). Free the
    /// result with `deinit`.
    pub fn getManyAlloc(self: Bucket, gpa: std.mem.Allocator, keys: []const []const u8) (Error || error{OutOfMemory})!ManyEntries {
        const encoded = try gpa.alloc(u8, encodedKeysLen(keys));
        defer gpa.free(encoded);
        _ = try encodeKeys(keys, encoded);
        var buf = try gpa.alloc(u8, 256);
        errdefer gpa.free(buf);
        while (true) {
            var size: u64 = 0;
            const n = self.getManyInfo(encoded, buf, &size) catch |e| switch (e) {
                error.BufferTooSmall => if (size > buf.len and size <= std.math.maxInt(i32)) {
                    buf = try gpa.realloc(buf, @intCast(size));
                    continue;
                } else return error.Invalid,
                else => return e,
            };
            const entries = try gpa.alloc(?Entry, keys.len);
            errdefer gpa.free(entries);
            const got = try decodeMany(buf[0..n], entries);
            if (got.len != keys.len) return error.Invalid;
            return .{ .entries = entries, .bytes = buf };
        }
    }

    fn writeMany(self: Bucket, set_many: bool, encoded: []const u8, lock: ?Lock) Error!u32 {
        var fence: Fence = undefined;
        var fence_ptr: ?*const Fence = null;
        if (lock) |l| {
            fence = try l.fence();
            fence_ptr = &fence;
        }
        const b = ptrOf(self.name);
        const bl = try lenOf(self.name);
        const rc = if (set_many)
            raw.kv_set_many(b, bl, ptrOf(encoded), try lenOf(encoded), fence_ptr)
        else
            raw.kv_delete_many(b, bl, ptrOf(encoded), try lenOf(encoded), fence_ptr);
        return check(rc);
    }

    /// Sets every entry encoded by `encodeEntries` (1 to
    /// `max_batch_entries`, at most `max_batch_bytes`) in one write, all or
    /// nothing (a key named twice: the last value wins); returns how many.
    /// `BadBatch`, or as `set` (one refusal refuses the whole batch).
    pub fn setMany(self: Bucket, encoded_entries: []const u8) Error!u32 {
        return self.writeMany(true, encoded_entries, null);
    }

    /// `setMany` fenced by `lock` (one check covers the whole batch).
    pub fn setManyFenced(self: Bucket, encoded_entries: []const u8, lock: Lock) Error!u32 {
        return self.writeMany(true, encoded_entries, lock);
    }

    /// Deletes every key encoded by `encodeKeys` in one write, all or
    /// nothing; returns how many existed. As `setMany`.
    pub fn deleteMany(self: Bucket, encoded_keys: []const u8) Error!u32 {
        return self.writeMany(false, encoded_keys, null);
    }

    /// `deleteMany` fenced by `lock`.
    pub fn deleteManyFenced(self: Bucket, encoded_keys: []const u8, lock: Lock) Error!u32 {
        return self.writeMany(false, encoded_keys, lock);
    }
};

// ---- Locks -------------------------------------------------------------------------

/// A cluster-wide lock held by this process, with its fencing token.
/// `name` must outlive the value (it is not copied).
pub const Lock = struct {
    name: []const u8,
    token: u64,

    /// Waits (a capture point) at most `timeout_ms` (`null`: no limit) until
    /// this process holds `name`. `Timeout`, `Deadlock`, `Quota`, ...
    pub fn acquire(name: []const u8, timeout_ms: ?u64) Error!Lock {
        var token: u64 = 0;
        _ = try shoal_check(raw.lock(ptrOf(name), try lenOf(name), timeoutMs(timeout_ms), &token));
        return .{ .name = name, .token = token };
    }

    /// `acquire` without waiting: `Busy` if another process holds it.
    pub fn tryAcquire(name: []const u8) Error!Lock {
        var token: u64 = 0;
        _ = try shoal_check(raw.try_lock(ptrOf(name), try lenOf(name), &token));
        return .{ .name = name, .token = token };
    }

    /// Releases it; `LockLost` if it was not held under this token any more.
    pub fn unlock(self: Lock) Error!void {
        _ = try shoal_check(raw.unlock(ptrOf(self.name), try lenOf(self.name), self.token));
    }

    /// Whether `token` is the current grant of lock `name` (else `Fenced`):
    /// what a callee checks of a token its caller sent.
    pub fn check(name: []const u8, token: u64) Error!void {
        _ = try shoal_check(raw.lock_check(ptrOf(name), try lenOf(name), token));
    }

    /// The fence record for writes guarded by this lock.
    pub fn fence(self: Lock) Error!Fence {
        return .{
            .token = self.token,
            .name_ptr = @intCast(@intFromPtr(ptrOf(self.name))),
            .name_len = std.math.cast(u32, self.name.len) orelse return error.Invalid,
        };
    }
};

const shoal_check = check;
