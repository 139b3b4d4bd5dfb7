//! Small WASI helpers shared by the Zig example guests: the command line and
//! unbuffered output, straight through `wasi_snapshot_preview1` (no
//! allocator, no `std.Io` instance needed).

const std = @import("std");
const wasi = std.os.wasi;

var arg_storage: [8192]u8 = undefined;
var arg_list: [64][]const u8 = undefined;

/// `argv` (argv[0] is the module reference the process was started from).
/// At most 64 arguments and 8 KiB of text; more prints an error and exits 2.
pub fn args() []const []const u8 {
    var count: usize = 0;
    var size: usize = 0;
    if (wasi.args_sizes_get(&count, &size) != .SUCCESS or count > arg_list.len or size > arg_storage.len) {
        eprint("arguments too long or unreadable\n", .{});
        wasi.proc_exit(2);
    }
    var ptrs: [64][*:0]u8 = undefined;
    if (wasi.args_get(&ptrs, &arg_storage) != .SUCCESS) {
        eprint("arguments unreadable\n", .{});
        wasi.proc_exit(2);
    }
    for (ptrs[0..count], 0..) |p, i| arg_list[i] = std.mem.span(p);
    return arg_list[0..count];
}

/// Writes all of `bytes` to file descriptor `fd`.
pub fn writeAll(fd: wasi.fd_t, bytes: []const u8) void {
    var rest = bytes;
    while (rest.len > 0) {
        const iov = [_]wasi.ciovec_t{.{ .base = rest.ptr, .len = rest.len }};
        var written: usize = 0;
        if (wasi.fd_write(fd, &iov, 1, &written) != .SUCCESS or written == 0) return;
        rest = rest[written..];
    }
}

fn printTo(fd: wasi.fd_t, comptime fmt: []const u8, a: anytype) void {
    var buf: [1024]u8 = undefined;
    const text = std.fmt.bufPrint(&buf, fmt, a) catch "(line longer than 1 KiB not printed)\n";
    writeAll(fd, text);
}

/// Formatted output to stdout (unbuffered: nothing to flush before exit).
pub fn print(comptime fmt: []const u8, a: anytype) void {
    printTo(1, fmt, a);
}

/// Formatted output to stderr.
pub fn eprint(comptime fmt: []const u8, a: anytype) void {
    printTo(2, fmt, a);
}
