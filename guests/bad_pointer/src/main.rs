//! `bad_pointer`: checks that the host validates every pointer and length.
//!
//! Calls each Shoal import that takes a pointer (`spawn`, `log`, `send`,
//! `recv`) through the raw `shoal::sys` functions with ranges outside linear
//! memory, and expects the codes `sdk/ABI.md` specifies:
//!
//! - a range not inside memory (`ptr = 0xFFFF_FFF0, len = 64`;
//!   `ptr = memory size, len = 64`; `ptr = memory size - 8, len = 64`;
//!   for the fixed 8/16-byte outputs, a pointer 4 bytes before the end)
//!   → `FAULT` (-1);
//! - a negative length → `INVALID` (-2);
//! - and, not a pointer but in the same spirit, `sleep_ms(-1)` → `INVALID`.
//!
//! Every other argument of each call is valid (or harmless: `send` targets the
//! process itself, `spawn` names a module that does not exist, `recv` polls
//! an empty mailbox), so a host that skipped a check would return a different
//! code (`NO_MODULE`, `TIMEOUT`, ...) rather than do damage.
//!
//! Prints `ok <import>` for each passing check and finally
//! `bad_pointer all checks passed` (exit 0); on the first unexpected code
//! prints `UNEXPECTED <import> returned <code>` and exits 1.

use shoal::sys;

/// A module reference that is well-formed but names no module.
const NO_SUCH_MODULE: &[u8] =
    b"sha256:0000000000000000000000000000000000000000000000000000000000000000";

/// Linear memory size in bytes (memory 0).
#[cfg(target_arch = "wasm32")]
fn memory_size() -> usize {
    core::arch::wasm32::memory_size(0) * 65536
}

/// Off wasm32 there is no linear memory; any value keeps the crate compiling.
#[cfg(not(target_arch = "wasm32"))]
fn memory_size() -> usize {
    1 << 20
}

/// Checks `got == want`, printing `ok <import>` or failing the run.
fn expect(import: &str, got: i32, want: i32) {
    if got == want {
        println!("ok {import}");
    } else {
        println!("UNEXPECTED {import} returned {got}");
        std::process::exit(1);
    }
}

/// The three out-of-memory ranges (each 64 bytes long), computed from the
/// memory size at the moment of the call: printing may grow memory, so a
/// range computed earlier could have become valid.
fn bad_range(which: usize) -> (*const u8, i32) {
    let mem = memory_size();
    match which {
        0 => (0xFFFF_FFF0usize as *const u8, 64), // wraps around a 32-bit end
        1 => (mem as *const u8, 64),              // starts at the end
        _ => ((mem - 8) as *const u8, 64),        // straddles the end
    }
}

/// The two bad places for a fixed-size output (8-byte pid, 16-byte info):
/// a wild pointer, and one 4 bytes before the end of memory.
fn bad_out(which: usize) -> *mut u8 {
    match which {
        0 => 0xFFFF_FFF0usize as *mut u8,
        _ => (memory_size() - 4) as *mut u8,
    }
}

fn main() {
    let text = b"bad_pointer";
    let args = b"x\0";
    let me = shoal::self_pid().as_u64() as i64;
    let mut buf = [0u8; 64];
    let mut pid_out: u64 = 0;

    // SAFETY (whole block): every call either passes valid ranges or ranges
    // outside linear memory, which the host must reject without touching
    // memory; nothing in this program's memory is written by a failed call.
    unsafe {
        // log(level, ptr, len)
        for i in 0..3 {
            let (ptr, len) = bad_range(i);
            expect("log", sys::log(2, ptr, len), sys::FAULT);
        }
        expect("log", sys::log(2, text.as_ptr(), -1), sys::INVALID);

        // send(pid, data_ptr, data_len) — to ourselves, a live pid.
        for i in 0..3 {
            let (ptr, len) = bad_range(i);
            expect("send", sys::send(me, ptr, len), sys::FAULT);
        }
        expect("send", sys::send(me, text.as_ptr(), -1), sys::INVALID);

        // recv(buf_ptr, buf_len, timeout_ms = 0, info_ptr)
        for i in 0..3 {
            let (ptr, len) = bad_range(i);
            expect(
                "recv",
                sys::recv(ptr.cast_mut(), len, 0, core::ptr::null_mut()),
                sys::FAULT,
            );
        }
        expect(
            "recv",
            sys::recv(buf.as_mut_ptr(), -1, 0, core::ptr::null_mut()),
            sys::INVALID,
        );
        for i in 0..2 {
            expect(
                "recv",
                sys::recv(buf.as_mut_ptr(), 64, 0, bad_out(i).cast()),
                sys::FAULT,
            );
        }

        // spawn(module_ptr, module_len, args_ptr, args_len, pid_out_ptr)
        let module = NO_SUCH_MODULE.as_ptr();
        let module_len = NO_SUCH_MODULE.len() as i32;
        for i in 0..3 {
            let (ptr, len) = bad_range(i);
            expect(
                "spawn",
                sys::spawn(ptr, len, args.as_ptr(), 2, &mut pid_out),
                sys::FAULT,
            );
        }
        expect(
            "spawn",
            sys::spawn(module, -1, args.as_ptr(), 2, &mut pid_out),
            sys::INVALID,
        );
        for i in 0..3 {
            let (ptr, len) = bad_range(i);
            expect(
                "spawn",
                sys::spawn(module, module_len, ptr, len, &mut pid_out),
                sys::FAULT,
            );
        }
        expect(
            "spawn",
            sys::spawn(module, module_len, args.as_ptr(), -1, &mut pid_out),
            sys::INVALID,
        );
        for i in 0..2 {
            expect(
                "spawn",
                sys::spawn(module, module_len, args.as_ptr(), 2, bad_out(i).cast()),
                sys::FAULT,
            );
        }

        // sleep_ms(ms): negative duration.
        expect("sleep_ms", sys::sleep_ms(-1), sys::INVALID);
    }

    println!("bad_pointer all checks passed");
}
