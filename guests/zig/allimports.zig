//! `zig_allimports`: calls every `shoal_v1` import through the Zig SDK
//! (sdk/zig/shoal.zig) and checks each result.
//!
//! Modes (first argument):
//!
//! - `allimports [<self-ref>]` (or no argument): the checks. `<self-ref>`
//!   (default: argv[0]) is how this module is spawned again as a helper, so
//!   it must be a registered name or `sha256:` reference (`shoal run` of a
//!   pushed name passes the name as argv[0]; `shoal deploy` passes the file
//!   name, so give the reference explicitly there). Prints `ok <import>:
//!   <what>` or `FAIL <import>: <what>: <got>` per check and finally `all
//!   imports ok` (exit 0), or `allimports: <n> checks failed` (exit 1).
//!   Off a cluster (`shoal run`) names, key-value and locks answer
//!   `NO_NODE`, as the ABI says; the checks then expect exactly that and
//!   print `standalone: ...` first. In a cluster (even of one node:
//!   `shoal node start` + `shoal deploy`) they are checked for real.
//! - `helper`: the peer. Loops on `recv_any`: a call `echo:<x>` is answered
//!   `<x>`; a call `lock:<name>` does `try_lock` and answers `locked
//!   <token>` or `err <code>`; a plain message `ping` is answered (plain)
//!   `pong`; a plain message `exit <code>` exits with that code.

const std = @import("std");
const shoal = @import("shoal");
const util = @import("util.zig");

const wait_ms: u64 = 5000;

var failures: u32 = 0;
var checks: u32 = 0;
var buf: [64 * 1024]u8 = undefined;
var reply_buf: [64 * 1024]u8 = undefined;
// Key-value batches: encoded keys and entries, records, a 3000-byte value.
var batch_keys: [4096]u8 = undefined;
var batch_entries: [8192]u8 = undefined;
var many_buf: [8192]u8 = undefined;
var big_value: [3000]u8 = undefined;

fn ok(import: []const u8, what: []const u8) void {
    checks += 1;
    util.print("ok {s}: {s}\n", .{ import, what });
}

fn fail(import: []const u8, what: []const u8, got: []const u8) void {
    checks += 1;
    failures += 1;
    util.print("FAIL {s}: {s}: got {s}\n", .{ import, what, got });
}

fn failFmt(import: []const u8, what: []const u8, comptime fmt: []const u8, args: anytype) void {
    var text: [256]u8 = undefined;
    fail(import, what, std.fmt.bufPrint(&text, fmt, args) catch "?");
}

fn failErr(import: []const u8, what: []const u8, e: anyerror) void {
    fail(import, what, shoal.errorName(e));
}

fn expect(import: []const u8, what: []const u8, cond: bool) void {
    if (cond) ok(import, what) else fail(import, what, "false");
}

/// `res` must be the error `want`.
fn expectErr(import: []const u8, what: []const u8, res: anytype, want: shoal.Error) void {
    if (res) |_| {
        failFmt(import, what, "success, expected {s}", .{shoal.errorName(want)});
    } else |e| {
        if (e == want) ok(import, what) else failFmt(import, what, "{s}, expected {s}", .{ shoal.errorName(e), shoal.errorName(want) });
    }
}

/// `rc` (a raw result) must be `want`.
fn expectCode(import: []const u8, what: []const u8, rc: i32, want: i32) void {
    if (rc == want) ok(import, what) else failFmt(import, what, "{d} ({s}), expected {d} ({s})", .{ rc, shoal.codeName(rc), want, shoal.codeName(want) });
}

pub fn main() void {
    const argv = util.args();
    if (argv.len == 2 and std.mem.eql(u8, argv[1], "helper")) helper();
    const self_ref: []const u8 = if (argv.len >= 2) argv[1] else if (argv.len == 1) argv[0] else "";
    if (argv.len > 2) {
        util.eprint("usage: zig_allimports [<self-ref>] | helper\n", .{});
        shoal.exit(2);
    }
    run(self_ref);
    if (failures == 0) {
        util.print("all imports ok ({d} checks)\n", .{checks});
        shoal.exit(0);
    }
    util.print("allimports: {d} of {d} checks failed\n", .{ failures, checks });
    shoal.exit(1);
}

// ---- helper ------------------------------------------------------------------

fn helper() noreturn {
    while (true) {
        const in = shoal.recvAny(&buf, null) catch |e| {
            util.eprint("zig_allimports helper: recv_any: {s}\n", .{shoal.errorName(e)});
            shoal.exit(1);
        };
        switch (in) {
            .call => |c| {
                var out: [64]u8 = undefined;
                const answer: []const u8 = if (std.mem.startsWith(u8, c.data, "echo:"))
                    c.data[5..]
                else if (std.mem.startsWith(u8, c.data, "lock:")) blk: {
                    const l = shoal.Lock.tryAcquire(c.data[5..]) catch |e|
                        break :blk std.fmt.bufPrint(&out, "err {d}", .{shoal.errorCode(e)}) catch unreachable;
                    break :blk std.fmt.bufPrint(&out, "locked {d}", .{l.token}) catch unreachable;
                } else "?";
                shoal.reply(c.handle, answer) catch |e|
                    util.eprint("zig_allimports helper: reply: {s}\n", .{shoal.errorName(e)});
            },
            .message => |m| {
                if (std.mem.eql(u8, m.data, "ping")) {
                    shoal.sendBlocking(m.sender, "pong") catch |e|
                        util.eprint("zig_allimports helper: send: {s}\n", .{shoal.errorName(e)});
                } else if (std.mem.startsWith(u8, m.data, "exit ")) {
                    const code = std.fmt.parseInt(i32, m.data[5..], 10) catch 1;
                    shoal.exit(code);
                }
            },
            else => {},
        }
    }
}

// ---- the checks ------------------------------------------------------------------

fn run(self_ref: []const u8) void {
    // self_pid
    const me = shoal.selfPid();
    expect("self_pid", "non-zero", me.toInt() != 0);

    // log
    if (shoal.log(.info, "zig_allimports: start")) |_| ok("log", "info line") else |e| failErr("log", "info line", e);
    expectCode("log", "level 9 is INVALID", shoal.raw.log(9, "x", 1), -2);

    // sleep_ms, yield_now, preempt
    if (shoal.sleepMs(1)) |_| ok("sleep_ms", "1 ms") else |e| failErr("sleep_ms", "1 ms", e);
    expectCode("sleep_ms", "-1 is INVALID", shoal.raw.sleep_ms(-1), -2);
    if (shoal.yieldNow()) |_| ok("yield_now", "returns OK") else |e| failErr("yield_now", "returns OK", e);
    shoal.preempt();
    ok("preempt", "returns (reserved for the host; harmless)");

    // spawn, spawn_on
    expectErr("spawn", "unknown module is NO_MODULE", shoal.spawn("no-such-module-zig-allimports", &.{}), error.NoModule);
    const helper_pid = shoal.spawn(self_ref, &.{"helper"}) catch |e| {
        failErr("spawn", "a helper from <self-ref>", e);
        util.print("allimports: cannot spawn '{s}': run it by a registered name or pass its reference as the argument\n", .{self_ref});
        return;
    };
    expect("spawn", "a helper from <self-ref>", helper_pid != me);
    expectErr("spawn_on", "unknown node is NO_NODE", shoal.spawnOn("no-such-node-zig", self_ref, &.{"helper"}), error.NoNode);
    const helper2 = shoal.spawnOn("", self_ref, &.{"helper"}) catch |e| {
        failErr("spawn_on", "empty target starts a second helper", e);
        return;
    };
    ok("spawn_on", "empty target starts a second helper");

    // send, recv
    if (shoal.send(me, "note")) |_| ok("send", "to self") else |e| failErr("send", "to self", e);
    {
        var info: shoal.RecvInfo = .{};
        const r = shoal.recvInfo(buf[0..0], 0, &info);
        expectErr("recv", "0-byte buffer is BUFFER_TOO_SMALL", r, error.BufferTooSmall);
        expect("recv", "info.length tells the size (4)", info.length == 4);
        if (shoal.recv(&buf, wait_ms)) |m| {
            expect("recv", "the message is still queued and arrives whole", m.sender == me and std.mem.eql(u8, m.data, "note"));
        } else |e| failErr("recv", "the message is still queued", e);
        expectErr("recv", "empty mailbox polls TIMEOUT", shoal.recv(&buf, 0), error.Timeout);
    }
    expectErr("send", "unknown pid is NO_PROCESS", shoal.send(shoal.Pid.fromInt(0xFFFF_FFFF_FFFF_FFF0), "x"), error.NoProcess);

    // call, reply (the helper replies)
    if (shoal.call(helper_pid, "echo:hello", &reply_buf, wait_ms, null)) |r| {
        expect("call", "helper echoes (reply)", std.mem.eql(u8, r, "hello"));
    } else |e| failErr("call", "helper echoes (reply)", e);
    expectErr("call", "calling oneself is INVALID", shoal.call(me, "echo:x", &reply_buf, wait_ms, null), error.Invalid);
    expectErr("reply", "unknown handle is INVALID", shoal.reply(@enumFromInt(0x7777_0000_1234), "x"), error.Invalid);

    // send_request, recv_match (MATCH_REPLY)
    if (shoal.sendRequest(helper_pid, "echo:request")) |req| {
        ok("send_request", "to the helper");
        if (shoal.receiveResponse(req, &reply_buf, wait_ms, null)) |r| {
            expect("recv_match", "MATCH_REPLY gets the answer", std.mem.eql(u8, r, "request"));
        } else |e| failErr("recv_match", "MATCH_REPLY gets the answer", e);
    } else |e| failErr("send_request", "to the helper", e);

    // recv_match (MATCH_FROM) leaves other mail queued
    _ = shoal.send(me, "mine") catch {};
    if (shoal.send(helper_pid, "ping")) |_| {} else |e| failErr("send", "ping to the helper", e);
    if (shoal.recvFrom(helper_pid, &buf, wait_ms)) |in| switch (in) {
        .message => |m| expect("recv_match", "MATCH_FROM takes the helper's pong", m.sender == helper_pid and std.mem.eql(u8, m.data, "pong")),
        else => fail("recv_match", "MATCH_FROM takes the helper's pong", @tagName(in)),
    } else |e| failErr("recv_match", "MATCH_FROM takes the helper's pong", e);
    if (shoal.recv(&buf, 0)) |m| {
        expect("recv", "own message skipped by MATCH_FROM is still queued", std.mem.eql(u8, m.data, "mine"));
    } else |e| failErr("recv", "own message skipped by MATCH_FROM is still queued", e);

    // monitor, demonitor, recv_any (DOWN), exit (the helper's)
    if (shoal.monitor(helper_pid)) |m1| {
        ok("monitor", "the helper");
        if (shoal.demonitor(m1)) |_| ok("demonitor", "withdraws it") else |e| failErr("demonitor", "withdraws it", e);
        expectErr("demonitor", "again is INVALID", shoal.demonitor(m1), error.Invalid);
    } else |e| failErr("monitor", "the helper", e);
    expectErr("monitor", "oneself is INVALID", shoal.monitor(me), error.Invalid);
    if (shoal.monitor(helper_pid)) |m2| {
        _ = shoal.send(helper_pid, "exit 7") catch |e| failErr("send", "exit 7 to the helper", e);
        if (shoal.recvAny(&buf, wait_ms)) |in| switch (in) {
            .down => |d| {
                expect("recv_any", "DOWN of the helper with this monitor", d.pid == helper_pid and d.reference == m2);
                const code: i32 = switch (d.reason) {
                    .exit => |c| c,
                    else => -1000,
                };
                expect("exit", "the helper's exit(7) is the DOWN's reason", code == 7);
            },
            else => fail("recv_any", "DOWN of the helper", @tagName(in)),
        } else |e| failErr("recv_any", "DOWN of the helper", e);
    } else |e| failErr("monitor", "the helper again", e);
    expectErr("call", "a process that exited is NO_PROCESS", shoal.call(helper_pid, "echo:x", &reply_buf, wait_ms, null), error.NoProcess);

    // names, key-value, locks: need a cluster
    var name_buf: [64]u8 = undefined;
    const name = std.fmt.bufPrint(&name_buf, "zig-allimports-{d}", .{me.toInt()}) catch unreachable;
    const cluster = if (shoal.register(name)) |_| true else |e| switch (e) {
        error.NoNode => false,
        else => blk: {
            failErr("register", "a fresh name", e);
            break :blk true;
        },
    };
    if (cluster) {
        ok("register", "a fresh name");
        clusterChecks(me, helper2, name);
    } else {
        util.print("standalone: no cluster here (shoal run), so names, key-value and locks must answer NO_NODE\n", .{});
        ok("register", "NO_NODE off a cluster");
        standaloneChecks(name);
    }

    // End the second helper and wait for it, so nothing is left running.
    if (shoal.monitor(helper2)) |m3| {
        _ = shoal.send(helper2, "exit 0") catch |e| failErr("send", "exit 0 to the second helper", e);
        if (shoal.recvAny(&buf, wait_ms)) |in| switch (in) {
            .down => |d| expect("exit", "the second helper's exit(0) is its DOWN's reason", d.pid == helper2 and d.reference == m3 and std.meta.eql(d.reason, shoal.DownReason{ .exit = 0 })),
            else => fail("recv_any", "DOWN of the second helper", @tagName(in)),
        } else |e| failErr("recv_any", "DOWN of the second helper", e);
    } else |e| failErr("monitor", "the second helper", e);
}

fn clusterChecks(me: shoal.Pid, helper2: shoal.Pid, name: []const u8) void {
    // names
    if (shoal.whereis(name)) |p| expect("whereis", "finds oneself", p == me) else |e| failErr("whereis", "finds oneself", e);
    if (shoal.unregister(name)) |_| ok("unregister", "the name") else |e| failErr("unregister", "the name", e);
    expectErr("unregister", "again is INVALID", shoal.unregister(name), error.Invalid);
    expectErr("whereis", "a free name is NO_PROCESS", shoal.whereis(name), error.NoProcess);
    if (shoal.joinGroup(name)) |_| ok("join_group", "a fresh group") else |e| failErr("join_group", "a fresh group", e);
    if (shoal.groupPick(name)) |p| expect("group_pick", "picks the only member", p == me) else |e| failErr("group_pick", "picks the only member", e);
    if (shoal.leaveGroup(name)) |_| ok("leave_group", "the group") else |e| failErr("leave_group", "the group", e);
    expectErr("leave_group", "again is INVALID", shoal.leaveGroup(name), error.Invalid);
    expectErr("group_pick", "an empty group is NO_PROCESS", shoal.groupPick(name), error.NoProcess);

    // key-value
    const bucket = shoal.Bucket.init("zig-allimports");
    var key_buf: [64]u8 = undefined;
    var ctr_buf: [64]u8 = undefined;
    const key = std.fmt.bufPrint(&key_buf, "k-{d}", .{me.toInt()}) catch unreachable;
    const ctr = std.fmt.bufPrint(&ctr_buf, "n-{d}", .{me.toInt()}) catch unreachable;
    var vbuf: [256]u8 = undefined;
    if (bucket.get(key, &vbuf)) |e| expect("kv_get", "a fresh key is absent (NOT_FOUND)", e == null) else |e| failErr("kv_get", "a fresh key is absent", e);
    if (bucket.exists(key)) |x| expect("kv_exists", "a fresh key: 0", !x) else |e| failErr("kv_exists", "a fresh key", e);
    var v1: u64 = 0;
    if (bucket.set(key, "v1")) |v| {
        v1 = v;
        expect("kv_set", "returns a version", v > 0);
    } else |e| failErr("kv_set", "returns a version", e);
    if (bucket.get(key, &vbuf)) |got| {
        expect("kv_get", "reads the value and version", got != null and std.mem.eql(u8, got.?.value, "v1") and got.?.version == v1);
    } else |e| failErr("kv_get", "reads the value and version", e);
    {
        var info: shoal.KvInfo = .{};
        expectErr("kv_get", "1-byte buffer is BUFFER_TOO_SMALL", bucket.getInfo(key, vbuf[0..1], &info), error.BufferTooSmall);
        expect("kv_get", "info.length tells the size (2)", info.length == 2);
    }
    if (bucket.stale().get(key, &vbuf)) |got| {
        expect("kv_get", "KV_STALE read on the writer's node", got != null and std.mem.eql(u8, got.?.value, "v1"));
    } else |e| failErr("kv_get", "KV_STALE read", e);
    if (bucket.exists(key)) |x| expect("kv_exists", "after set: 1", x) else |e| failErr("kv_exists", "after set", e);
    expectErr("kv_cas", "expecting absent (0) is VERSION_MISMATCH", bucket.cas(key, 0, "no"), error.VersionMismatch);
    if (bucket.cas(key, v1, "v2")) |v2| expect("kv_cas", "at the right version", v2 > v1) else |e| failErr("kv_cas", "at the right version", e);
    if (bucket.increment(ctr, 5)) |n| expect("kv_increment", "absent + 5 = 5", n == 5) else |e| failErr("kv_increment", "absent + 5", e);
    if (bucket.increment(ctr, -2)) |n| expect("kv_increment", "5 - 2 = 3", n == 3) else |e| failErr("kv_increment", "5 - 2", e);
    expectErr("kv_increment", "a 2-byte value is NOT_A_COUNTER", bucket.increment(key, 1), error.NotACounter);
    {
        var lbuf: [1024]u8 = undefined;
        if (bucket.list(key, "", &lbuf)) |page_const| {
            var page = page_const;
            const first = page.next();
            expect("kv_list", "the prefix lists the one key", page.count == 1 and first != null and std.mem.eql(u8, first.?, key));
            if (bucket.list(key, key, &lbuf)) |p2| expect("kv_list", "after the last key: 0", p2.count == 0) else |e| failErr("kv_list", "after the last key", e);
        } else |e| failErr("kv_list", "the prefix lists the one key", e);
    }
    batchChecks(bucket, me);

    // locks (and fenced writes)
    var lock_buf: [64]u8 = undefined;
    const lock_name = std.fmt.bufPrint(&lock_buf, "zig-allimports-{d}", .{me.toInt()}) catch unreachable;
    var call_text: [80]u8 = undefined;
    const lock_call = std.fmt.bufPrint(&call_text, "lock:{s}", .{lock_name}) catch unreachable;
    if (shoal.Lock.acquire(lock_name, wait_ms)) |l| {
        ok("lock", "a free lock");
        if (shoal.Lock.check(lock_name, l.token)) |_| ok("lock_check", "the current token") else |e| failErr("lock_check", "the current token", e);
        expectErr("lock_check", "another token is FENCED", shoal.Lock.check(lock_name, l.token + 1), error.Fenced);
        if (shoal.Lock.tryAcquire(lock_name)) |again| expect("try_lock", "held by oneself: the same token", again.token == l.token) else |e| failErr("try_lock", "held by oneself", e);
        if (bucket.setFenced(key, "v3", l)) |_| ok("kv_set", "fenced by the held lock") else |e| failErr("kv_set", "fenced by the held lock", e);
        var fenced_entries: [128]u8 = undefined;
        var fenced_keys: [128]u8 = undefined;
        const one_entry = shoal.encodeEntries(&.{.{ .key = key, .value = "v3" }}, &fenced_entries) catch unreachable;
        const one_key = shoal.encodeKeys(&.{key}, &fenced_keys) catch unreachable;
        if (bucket.setManyFenced(one_entry, l)) |n| expect("kv_set_many", "fenced by the held lock: 1", n == 1) else |e| failErr("kv_set_many", "fenced by the held lock", e);
        if (shoal.call(helper2, lock_call, &reply_buf, wait_ms, null)) |r| {
            expect("try_lock", "held by another process: BUSY (-26)", std.mem.eql(u8, r, "err -26"));
        } else |e| failErr("call", "the second helper's try_lock", e);
        if (l.unlock()) |_| ok("unlock", "the held lock") else |e| failErr("unlock", "the held lock", e);
        expectErr("unlock", "again is LOCK_LOST", l.unlock(), error.LockLost);
        // The second helper takes it now; the old token is fenced out.
        if (shoal.call(helper2, lock_call, &reply_buf, wait_ms, null)) |r| {
            expect("try_lock", "the second helper gets the free lock", std.mem.startsWith(u8, r, "locked "));
        } else |e| failErr("call", "the second helper's try_lock", e);
        expectErr("kv_set", "fenced by a lost lock is FENCED", bucket.setFenced(key, "v4", l), error.Fenced);
        expectErr("kv_cas", "fenced by a lost lock is FENCED", bucket.casFenced(key, 0, "v4", l), error.Fenced);
        expectErr("kv_delete", "fenced by a lost lock is FENCED", bucket.deleteFenced(key, l), error.Fenced);
        expectErr("kv_set_many", "fenced by a lost lock is FENCED", bucket.setManyFenced(one_entry, l), error.Fenced);
        expectErr("kv_delete_many", "fenced by a lost lock is FENCED", bucket.deleteManyFenced(one_key, l), error.Fenced);
    } else |e| failErr("lock", "a free lock", e);

    if (bucket.delete(key)) |x| expect("kv_delete", "an existing key: 1", x) else |e| failErr("kv_delete", "an existing key", e);
    if (bucket.delete(key)) |x| expect("kv_delete", "again: 0", !x) else |e| failErr("kv_delete", "again", e);
    if (bucket.delete(ctr)) |x| expect("kv_delete", "the counter: 1", x) else |e| failErr("kv_delete", "the counter", e);
}

/// The 4 records of get_many [k1, absent, k2, k3] after set_many of k1
/// (`big_value`), k2 ("two"), k3 ("three").
fn manyAsSet(got: []const ?shoal.Entry) bool {
    return got.len == 4 and
        got[0] != null and std.mem.eql(u8, got[0].?.value, &big_value) and got[0].?.version > 0 and
        got[1] == null and
        got[2] != null and std.mem.eql(u8, got[2].?.value, "two") and got[2].?.version > 0 and
        got[3] != null and std.mem.eql(u8, got[3].?.value, "three") and got[3].?.version > 0;
}

fn batchChecks(bucket: shoal.Bucket, me: shoal.Pid) void {
    var kb: [5][32]u8 = undefined;
    const k1 = std.fmt.bufPrint(&kb[0], "b1-{d}", .{me.toInt()}) catch unreachable;
    const k2 = std.fmt.bufPrint(&kb[1], "b2-{d}", .{me.toInt()}) catch unreachable;
    const k3 = std.fmt.bufPrint(&kb[2], "b3-{d}", .{me.toInt()}) catch unreachable;
    const k4 = std.fmt.bufPrint(&kb[3], "b4-{d}", .{me.toInt()}) catch unreachable;
    const absent = std.fmt.bufPrint(&kb[4], "b0-{d}", .{me.toInt()}) catch unreachable;
    for (&big_value, 0..) |*b, i| b.* = @intCast('a' + i % 26);

    // kv_set_many: 3 entries, k1's value 3000 bytes
    if (shoal.encodeEntries(&.{
        .{ .key = k1, .value = &big_value },
        .{ .key = k2, .value = "two" },
        .{ .key = k3, .value = "three" },
    }, &batch_entries)) |entries| {
        if (bucket.setMany(entries)) |n| expect("kv_set_many", "3 entries: 3", n == 3) else |e| failErr("kv_set_many", "3 entries", e);
    } else |e| failErr("kv_set_many", "encode 3 entries", e);

    // kv_get_many [k1, absent, k2, k3]
    const keys = [_][]const u8{ k1, absent, k2, k3 };
    var out: [4]?shoal.Entry = undefined;
    if (shoal.encodeKeys(&keys, &batch_keys)) |enc| {
        const want: u64 = 4 * shoal.kv_many_record_header + big_value.len + "two".len + "three".len;
        var size: u64 = 0;
        expectErr("kv_get_many", "a 256-byte buffer is BUFFER_TOO_SMALL", bucket.getManyInfo(enc, many_buf[0..256], &size), error.BufferTooSmall);
        if (size == want) ok("kv_get_many", "the size written tells the total (3056)") else failFmt("kv_get_many", "the size written tells the total", "{d}, expected {d}", .{ size, want });
        const grown = many_buf[0..@min(size, many_buf.len)];
        if (bucket.getMany(enc, grown, &out)) |got| {
            expect("kv_get_many", "a buffer of that size: the 4 in order, the absent one null", manyAsSet(got));
        } else |e| failErr("kv_get_many", "a buffer of that size", e);
        if (bucket.stale().getMany(enc, &many_buf, &out)) |got| {
            expect("kv_get_many", "KV_STALE read on the writer's node", manyAsSet(got));
        } else |e| failErr("kv_get_many", "KV_STALE read", e);
    } else |e| failErr("kv_get_many", "encode 4 keys", e);
    if (bucket.getManyAlloc(std.heap.wasm_allocator, &keys)) |many| {
        defer many.deinit(std.heap.wasm_allocator);
        expect("kv_get_many", "getManyAlloc grows from 256 bytes: the 4 in order", manyAsSet(many.entries) and many.bytes.len >= 3056);
    } else |e| failErr("kv_get_many", "getManyAlloc", e);

    // kv_set_many with an empty key: refused whole
    if (shoal.encodeEntries(&.{
        .{ .key = k4, .value = "x" },
        .{ .key = "", .value = "y" },
    }, &batch_entries)) |entries| {
        expectErr("kv_set_many", "an empty key in the batch is BAD_KEY", bucket.setMany(entries), error.BadKey);
    } else |e| failErr("kv_set_many", "encode a batch with an empty key", e);
    if (bucket.exists(k4)) |x| expect("kv_set_many", "the refused batch set nothing (its other key: 0)", !x) else |e| failErr("kv_exists", "the refused batch's other key", e);

    // batch bounds
    expectErr("kv_get_many", "0 keys is BAD_BATCH", bucket.getMany("", &many_buf, &out), error.BadBatch);
    {
        var names: [shoal.max_batch_entries + 1][8]u8 = undefined;
        var many_keys: [shoal.max_batch_entries + 1][]const u8 = undefined;
        for (&many_keys, &names, 0..) |*k, *n, i| k.* = std.fmt.bufPrint(n, "b-{d}", .{i}) catch unreachable;
        if (shoal.encodeKeys(&many_keys, &batch_keys)) |enc| {
            expectErr("kv_get_many", "101 keys is BAD_BATCH", bucket.getMany(enc, &many_buf, &out), error.BadBatch);
        } else |e| failErr("kv_get_many", "encode 101 keys", e);
    }

    // kv_delete_many [k1, absent, k3]
    if (shoal.encodeKeys(&.{ k1, absent, k3 }, &batch_keys)) |enc| {
        if (bucket.deleteMany(enc)) |n| expect("kv_delete_many", "[k1, absent, k3]: 2", n == 2) else |e| failErr("kv_delete_many", "[k1, absent, k3]", e);
    } else |e| failErr("kv_delete_many", "encode 3 keys", e);
    if (bucket.exists(k1)) |x| expect("kv_delete_many", "k1 is gone", !x) else |e| failErr("kv_exists", "k1 after kv_delete_many", e);
    if (bucket.delete(k2)) |x| expect("kv_delete", "the batch's k2, left alone: 1", x) else |e| failErr("kv_delete", "the batch's k2", e);
}

fn standaloneChecks(name: []const u8) void {
    const nn = error.NoNode;
    expectErr("unregister", "NO_NODE", shoal.unregister(name), nn);
    expectErr("whereis", "NO_NODE", shoal.whereis(name), nn);
    expectErr("join_group", "NO_NODE", shoal.joinGroup(name), nn);
    expectErr("leave_group", "NO_NODE", shoal.leaveGroup(name), nn);
    expectErr("group_pick", "NO_NODE", shoal.groupPick(name), nn);
    const b = shoal.Bucket.init("zig-allimports");
    var vbuf: [16]u8 = undefined;
    var lbuf: [64]u8 = undefined;
    expectErr("kv_get", "NO_NODE", b.get("k", &vbuf), nn);
    expectErr("kv_exists", "NO_NODE", b.exists("k"), nn);
    expectErr("kv_set", "NO_NODE", b.set("k", "v"), nn);
    expectErr("kv_cas", "NO_NODE", b.cas("k", 0, "v"), nn);
    expectErr("kv_delete", "NO_NODE", b.delete("k"), nn);
    expectErr("kv_increment", "NO_NODE", b.increment("n", 1), nn);
    expectErr("kv_list", "NO_NODE", b.list("", "", &lbuf), nn);
    const one_key = shoal.encodeKeys(&.{"k"}, &batch_keys) catch unreachable;
    const one_entry = shoal.encodeEntries(&.{.{ .key = "k", .value = "v" }}, &batch_entries) catch unreachable;
    var out: [1]?shoal.Entry = undefined;
    expectErr("kv_get_many", "NO_NODE", b.getMany(one_key, &many_buf, &out), nn);
    expectErr("kv_set_many", "NO_NODE", b.setMany(one_entry), nn);
    expectErr("kv_delete_many", "NO_NODE", b.deleteMany(one_key), nn);
    expectErr("lock", "NO_NODE", shoal.Lock.acquire(name, 100), nn);
    expectErr("try_lock", "NO_NODE", shoal.Lock.tryAcquire(name), nn);
    const fake: shoal.Lock = .{ .name = name, .token = 1 };
    expectErr("unlock", "NO_NODE", fake.unlock(), nn);
    expectErr("lock_check", "NO_NODE", shoal.Lock.check(name, 1), nn);
}
