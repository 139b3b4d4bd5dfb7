//! Preparation and compilation at a lower CPU priority.
//!
//! Preparing a big module is seconds of CPU on every core (a 7 MB Python
//! interpreter: ~13 s of Asyncify and ~4 s of compilation on two cores). A
//! node does it while its heartbeats, calls and running processes go on,
//! and also ahead of need, in the background. That background work runs at
//! nice [`PREPARE_NICE`]: it still takes every core a node leaves idle, but
//! a thread of normal priority that wants a core gets about three quarters
//! of it (CFS weights 1024 against 335), so a long preparation never makes
//! a node look dead or its processes stall.
//!
//! Only preparations *ahead of need* run so ([`Priority::Ahead`]: every
//! node preparing the modules the cluster records, and the holders of a
//! checkpoint warming its module). A preparation someone waits for — a
//! spawn, a restore, a move, a failover here — runs at normal priority
//! ([`Priority::Waited`]): at nice 5 on a machine kept busy by other work
//! it would take about four times as long, and the wait is the user's.
//!
//! Three places: the preparation worker processes lower themselves
//! ([`lower_this_thread`] before they start preparing, whose threads inherit
//! it); a preparation in this process runs on a thread of its own, lowered
//! ([`on_own_thread`]; the threads Asyncify starts from it inherit it); and wasmtime's (rayon-parallel) compilation runs on a pool
//! of threads, one per core, each lowered when it starts ([`run`]). Only
//! compilations share that pool, so a small module never waits there
//! behind a long preparation. Linux keeps a nice value per thread, so
//! nothing else in the process is affected.

use std::sync::OnceLock;

/// Who waits for a preparation, which sets its priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// A spawn, restore, move or failover waits for it: normal priority.
    Waited,
    /// Nobody waits yet (preparing ahead): nice [`PREPARE_NICE`].
    Ahead,
}

/// The argument after the worker command that makes a preparation worker
/// lower itself ([`Priority::Ahead`]).
pub const WORKER_LOWER_ARG: &str = "--lower-priority";

/// The nice value of preparation and compilation (0 is normal, 19 lowest).
/// Not lower: on a machine kept busy by other work at normal priority, a
/// preparation must still finish in a bounded multiple of its idle time
/// (at nice 5, about 4× when every core is taken).
pub const PREPARE_NICE: i32 = 5;

static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();

/// Run `f` on the low-priority pool (see the module docs), blocking the
/// calling thread until it returns; rayon-parallel work inside `f`
/// (wasmtime's compilation) runs on the same pool. Where the pool cannot be
/// built, `f` runs on the calling thread.
pub fn run<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    match POOL.get_or_init(build) {
        Some(pool) => pool.install(f),
        None => f(),
    }
}

/// Run `f` on a new thread at the lower priority and wait for it: for a
/// preparation in this process (no worker), so that neither the calling
/// thread's priority nor the compilation pool is held. Where no thread can
/// be started, `f` runs on the calling thread.
pub fn on_own_thread<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let mut f = Some(f);
    let ran = std::thread::scope(|scope| {
        let handle = std::thread::Builder::new()
            .name("shoal-prepare".to_string())
            .spawn_scoped(scope, || {
                lower_this_thread();
                f.take().map(|f| f())
            })
            .ok()?;
        // A panic of `f` goes on in the caller, as if it had run there.
        handle
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    });
    match (ran, f) {
        (Some(r), _) => r,
        // No thread could be started: `f` was never taken.
        (None, Some(f)) => f(),
        (None, None) => unreachable!("a started preparation thread always returns its result"),
    }
}

fn build() -> Option<rayon::ThreadPool> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    match rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("shoal-prepare-{i}"))
        .start_handler(|_| lower_this_thread())
        .build()
    {
        Ok(pool) => Some(pool),
        Err(e) => {
            tracing::warn!("no low-priority preparation pool ({e}): preparing at normal priority");
            None
        }
    }
}

/// Lower the calling thread to nice [`PREPARE_NICE`] (and threads it starts
/// afterwards, which inherit it). A failure leaves it as it was.
#[allow(unsafe_code)]
pub fn lower_this_thread() {
    // SAFETY: setpriority(2) only reads its three integer arguments and
    // touches no memory of ours; `who = 0` with PRIO_PROCESS is the calling
    // thread on Linux, where the nice value is per thread.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, PREPARE_NICE) };
    if rc != 0 {
        tracing::debug!(
            "setpriority({PREPARE_NICE}) failed: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// The calling thread's nice value (for tests).
#[allow(unsafe_code)]
pub fn this_thread_nice() -> i32 {
    // SAFETY: as in `lower_this_thread`; getpriority(2) reads its integer
    // arguments only.
    unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_on_the_pool_and_its_parallel_parts_run_at_the_lower_priority() {
        let before = this_thread_nice();
        let (outer, inner) = run(|| {
            use rayon::prelude::*;
            let inner: Vec<i32> = (0..64)
                .into_par_iter()
                .map(|_| this_thread_nice())
                .collect();
            (this_thread_nice(), inner)
        });
        assert_eq!(outer, PREPARE_NICE.max(before));
        assert!(
            inner.iter().all(|n| *n == PREPARE_NICE.max(before)),
            "{inner:?}"
        );
        // The caller is untouched.
        assert_eq!(this_thread_nice(), before);
    }

    #[test]
    fn a_preparation_on_its_own_thread_runs_at_the_lower_priority() {
        let before = this_thread_nice();
        let (nice, pool_idle) =
            on_own_thread(|| (this_thread_nice(), rayon::current_thread_index()));
        assert_eq!(nice, PREPARE_NICE.max(before));
        assert_eq!(pool_idle, None, "not on a pool thread");
        assert_eq!(this_thread_nice(), before);
    }
}
