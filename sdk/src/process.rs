//! Process calls: identity, spawning, time, scheduling, exit and logging.

use core::time::Duration;
use std::io::Write;

use crate::error::{check, Error, Result};
use crate::pid::Pid;
use crate::sys;

/// The pid of the calling process.
///
/// # Panics
///
/// Only outside a Shoal host (a non-wasm32 build), where there is no process.
///
/// ```no_run
/// println!("I am {}", shoal::self_pid());
/// ```
pub fn self_pid() -> Pid {
    // SAFETY: no arguments; the import only returns a value.
    let raw = unsafe { sys::self_pid() } as u64;
    assert!(raw != 0, "shoal::self_pid: not running inside a Shoal host");
    Pid::from_raw(raw)
}

/// Starts a new process from `module` with arguments `args`, and returns its
/// pid without waiting for it to run.
///
/// `module` is `"sha256:<64 lowercase hex>"` or a name registered on the node.
/// `args` become the child's `argv[1..]`; its `argv[0]` is `module`. The child
/// gets no environment variables and no preopened directories.
///
/// In a process under output commit (`--restart on-failure|always`) the call
/// first waits, as a capture point, for a recorded checkpoint: a copy resumed
/// after a failover then gets the same child instead of starting a second.
///
/// # Errors
///
/// [`Error::Invalid`] if an argument contains a NUL byte (or the host finds
/// the reference malformed), [`Error::NoModule`], [`Error::SpawnFailed`],
/// [`Error::Limit`].
///
/// ```no_run
/// let child = shoal::spawn("ping_pong", &["pong"])?;
/// shoal::send(child, b"hi")?;
/// # Ok::<(), shoal::Error>(())
/// ```
pub fn spawn(module: &str, args: &[&str]) -> Result<Pid> {
    let packed = pack_args(args)?;
    let module_len = i32::try_from(module.len()).map_err(|_| Error::Invalid)?;
    let args_len = i32::try_from(packed.len()).map_err(|_| Error::Invalid)?;
    let mut pid: u64 = 0;
    // SAFETY: both pointers are valid for their lengths and `pid` is 8
    // writable bytes that outlive the call.
    let rc = unsafe {
        sys::spawn(
            module.as_ptr(),
            module_len,
            packed.as_ptr(),
            args_len,
            &mut pid,
        )
    };
    check(rc)?;
    Ok(Pid::from_raw(pid))
}

/// Starts a process somewhere in the cluster, like [`spawn`] but with a
/// placement `target`:
///
/// - `""`: the cluster's scheduler picks a node (free memory, CPU load,
///   process count; cordoned and down nodes are skipped);
/// - a node name, e.g. `"node-b"`: exactly that node;
/// - label constraints `"k=v[,k=v]"`, e.g. `"zone=eu,disk=ssd"`: the
///   scheduler picks among nodes carrying all of them.
///
/// The call waits for the chosen node to start the process (a network round
/// trip when it is another node); it is a capture point only under output
/// commit, as [`spawn`] is. The pid works
/// the same wherever the process runs.
///
/// # Errors
///
/// As [`spawn`], plus [`Error::NoNode`] when no node fits the target.
///
/// ```no_run
/// let worker = shoal::spawn_on("node-b", "ping_pong", &["pong"])?;
/// shoal::send(worker, b"hi")?;
/// # Ok::<(), shoal::Error>(())
/// ```
pub fn spawn_on(target: &str, module: &str, args: &[&str]) -> Result<Pid> {
    let packed = pack_args(args)?;
    let target_len = i32::try_from(target.len()).map_err(|_| Error::Invalid)?;
    let module_len = i32::try_from(module.len()).map_err(|_| Error::Invalid)?;
    let args_len = i32::try_from(packed.len()).map_err(|_| Error::Invalid)?;
    let mut pid: u64 = 0;
    // SAFETY: every pointer is valid for its length and `pid` is 8 writable
    // bytes that outlive the call.
    let rc = unsafe {
        sys::spawn_on(
            target.as_ptr(),
            target_len,
            module.as_ptr(),
            module_len,
            packed.as_ptr(),
            args_len,
            &mut pid,
        )
    };
    check(rc)?;
    Ok(Pid::from_raw(pid))
}

/// Arguments as NUL-terminated strings back to back.
fn pack_args(args: &[&str]) -> Result<Vec<u8>> {
    let mut packed = Vec::with_capacity(args.iter().map(|a| a.len() + 1).sum());
    for arg in args {
        if arg.as_bytes().contains(&0) {
            return Err(Error::Invalid);
        }
        packed.extend_from_slice(arg.as_bytes());
        packed.push(0);
    }
    Ok(packed)
}

/// Converts a duration to whole milliseconds for the ABI, rounding up (so a
/// wait is never shorter than asked) and saturating at `i64::MAX`.
pub(crate) fn duration_to_ms(duration: Duration) -> i64 {
    let ms = duration.as_nanos().div_ceil(1_000_000);
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// Blocks for at least `duration` (rounded up to whole milliseconds). A capture
/// point: the process can be snapshotted while it sleeps.
///
/// `std::thread::sleep` works too (through WASI `poll_oneoff`, also a capture
/// point); this call goes straight to the Shoal scheduler.
///
/// # Errors
///
/// Only [`Error::Unsupported`] outside a Shoal host.
///
/// ```no_run
/// shoal::sleep(std::time::Duration::from_millis(10))?;
/// # Ok::<(), shoal::Error>(())
/// ```
pub fn sleep(duration: Duration) -> Result<()> {
    // SAFETY: plain value argument.
    check(unsafe { sys::sleep_ms(duration_to_ms(duration)) }).map(drop)
}

/// Lets other processes run. A capture point: call it in long computations so
/// the process can be snapshotted and others get time.
///
/// # Errors
///
/// Only [`Error::Unsupported`] outside a Shoal host.
///
/// ```no_run
/// for chunk in 0..1000 {
///     // ... a slice of work ...
///     # let _ = chunk;
///     shoal::yield_now()?;
/// }
/// # Ok::<(), shoal::Error>(())
/// ```
pub fn yield_now() -> Result<()> {
    // SAFETY: no arguments.
    check(unsafe { sys::yield_now() }).map(drop)
}

/// Ends the process with exit `code`, after flushing Rust's stdout and stderr.
/// Queued messages are dropped; destructors do not run.
///
/// Same effect as `std::process::exit`, through the Shoal ABI.
///
/// # Panics
///
/// Outside a Shoal host (non-wasm32 build).
///
/// ```no_run
/// shoal::exit(3);
/// ```
pub fn exit(code: i32) -> ! {
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: nothing runs after this; buffers were flushed above.
    unsafe { sys::exit(code) }
}

/// Severity of a [`log`] entry. The discriminants are the ABI's level numbers.
///
/// ```
/// assert_eq!(shoal::Level::Info as i32, 2);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(i32)]
pub enum Level {
    /// 0: something failed.
    Error = 0,
    /// 1: something looks wrong.
    Warn = 1,
    /// 2: normal operation.
    Info = 2,
    /// 3: detail for debugging.
    Debug = 3,
    /// 4: very fine detail.
    Trace = 4,
}

/// Appends `message` to the process log kept by the node (not to stdout) at
/// `level`. Does not block.
///
/// # Errors
///
/// [`Error::Invalid`] if the message is longer than `i32::MAX` bytes;
/// [`Error::Unsupported`] outside a Shoal host.
///
/// ```no_run
/// shoal::log(shoal::Level::Info, "starting")?;
/// # Ok::<(), shoal::Error>(())
/// ```
pub fn log(level: Level, message: &str) -> Result<()> {
    let len = i32::try_from(message.len()).map_err(|_| Error::Invalid)?;
    // SAFETY: the pointer is valid for `len` bytes.
    check(unsafe { sys::log(level as i32, message.as_ptr(), len) }).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_up() {
        assert_eq!(duration_to_ms(Duration::ZERO), 0);
        assert_eq!(duration_to_ms(Duration::from_nanos(1)), 1);
        assert_eq!(duration_to_ms(Duration::from_millis(5)), 5);
        assert_eq!(duration_to_ms(Duration::from_micros(5001)), 6);
        assert_eq!(duration_to_ms(Duration::MAX), i64::MAX);
    }
}
