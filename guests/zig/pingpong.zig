//! `zig_pingpong`: the `ping_pong` protocol (guests/ping_pong, Rust) in Zig,
//! so that either side can be Rust and the other Zig.
//!
//! Modes (first argument):
//!
//! - `pong`: loops on `recv` (no timeout). A message equal to `stop` ends the
//!   process with code 0 (through `shoal.exit`); any other message is sent
//!   back unchanged to its sender.
//! - `ping <module-ref> <N> [<target>]`: spawns `<module-ref>` with the
//!   argument `pong` (with `<target>`: through `spawnOn`), then for `i` in
//!   `0..N` sends the decimal text of `i` and waits for the reply, which must
//!   be the same bytes from the same pid (otherwise prints `MISMATCH at <i>`
//!   and exits 1). Then sends `stop`, prints `ping-pong done <N> round trips`
//!   and exits 0.
//!
//! Bad arguments print a usage line to stderr and exit 2; a Shoal error
//! prints `zig_pingpong: <what>: <error>` to stderr and exits 1.

const std = @import("std");
const shoal = @import("shoal");
const util = @import("util.zig");

const usage_line = "usage: zig_pingpong pong | ping <module-ref> <N> [<target>]\n";

/// Receive buffer; a longer message is taken through `recvAlloc`.
var buf: [64 * 1024]u8 = undefined;

pub fn main() void {
    const argv = util.args();
    const a = if (argv.len > 0) argv[1..] else argv;
    if (a.len == 1 and std.mem.eql(u8, a[0], "pong")) pong();
    if ((a.len == 3 or a.len == 4) and std.mem.eql(u8, a[0], "ping")) {
        const n = std.fmt.parseInt(u64, a[2], 10) catch {
            util.eprint("zig_pingpong: not a number: {s}\n", .{a[2]});
            usage();
        };
        ping(a[1], n, if (a.len == 4) a[3] else null);
        shoal.exit(0);
    }
    usage();
}

fn usage() noreturn {
    util.eprint(usage_line, .{});
    shoal.exit(2);
}

fn die(what: []const u8, err: anyerror) noreturn {
    util.eprint("zig_pingpong: {s}: {s}\n", .{ what, shoal.errorName(err) });
    shoal.exit(1);
}

fn pong() noreturn {
    while (true) {
        var owned: ?shoal.OwnedMessage = null;
        const msg: shoal.Message = shoal.recv(&buf, null) catch |e| switch (e) {
            error.BufferTooSmall => blk: {
                owned = shoal.recvAlloc(std.heap.wasm_allocator, null) catch |e2| die("recv", e2);
                break :blk .{ .sender = owned.?.sender, .data = owned.?.data };
            },
            else => die("recv", e),
        };
        defer if (owned) |o| o.deinit(std.heap.wasm_allocator);
        if (std.mem.eql(u8, msg.data, "stop")) shoal.exit(0);
        shoal.sendBlocking(msg.sender, msg.data) catch |e| {
            // The peer may be gone; keep serving others.
            util.eprint("zig_pingpong: pong reply to {d}: {s}\n", .{ msg.sender.toInt(), shoal.errorName(e) });
        };
    }
}

fn ping(module: []const u8, n: u64, target: ?[]const u8) void {
    const peer = if (target) |t|
        shoal.spawnOn(t, module, &.{"pong"}) catch |e| die("spawn_on", e)
    else
        shoal.spawn(module, &.{"pong"}) catch |e| die("spawn", e);
    var i: u64 = 0;
    while (i < n) : (i += 1) {
        var text: [20]u8 = undefined;
        const payload = std.fmt.bufPrint(&text, "{d}", .{i}) catch unreachable;
        shoal.sendBlocking(peer, payload) catch |e| die("send", e);
        const reply = shoal.recv(&buf, null) catch |e| die("recv", e);
        if (reply.sender != peer or !std.mem.eql(u8, reply.data, payload)) {
            util.print("MISMATCH at {d}\n", .{i});
            shoal.exit(1);
        }
    }
    shoal.sendBlocking(peer, "stop") catch |e| die("send stop", e);
    util.print("ping-pong done {d} round trips\n", .{n});
}
