//! A process's WASI monotonic clock, carried across snapshot, restore and
//! migration.
//!
//! wasi-common's monotonic clock counts from the creation of the WASI
//! context (`clock_time_get(MONOTONIC)` is "now minus creation"), and a
//! process gets a fresh context at every restore and arrival. So that its
//! monotonic time never goes backwards, a capture records the process's
//! reading ([`monotonic_now`]) in the image, and the new context's clock
//! starts from that reading ([`clocks_from`]): it is the host's monotonic
//! clock shifted forward by the reading. Time spent captured (stored, or
//! in transfer) is not counted, as for a paused machine; relative waits
//! carry what was left of them separately ([`crate::capture::PendingCall`]).

use cap_std::time::{Duration, Instant};
use wasi_common::clocks::{WasiClocks, WasiMonotonicClock, WasiMonotonicOffsetClock};
use wasi_common::WasiCtx;

/// The host's monotonic clock, shifted forward by a fixed amount.
struct Shifted {
    host: Box<dyn WasiMonotonicClock>,
    shift: Duration,
}

impl WasiMonotonicClock for Shifted {
    fn resolution(&self) -> Duration {
        self.host.resolution()
    }

    fn now(&self, precision: Duration) -> Instant {
        let now = self.host.now(precision);
        // A shift is at most a process's lifetime: adding it to the host's
        // clock cannot overflow in practice; if it did, time would stand
        // still rather than go back.
        now.checked_add(self.shift).unwrap_or(now)
    }
}

/// WASI clocks (the host's system clock and a monotonic clock) whose
/// monotonic time starts at `start` rather than at zero.
pub fn clocks_from(start: std::time::Duration) -> WasiClocks {
    let mut clocks = wasi_common::tokio::clocks_ctx();
    if let Some(host) = clocks.monotonic.take() {
        // Guest time is `abs_clock.now() - creation_time`: with the clock
        // shifted by `start` and the creation at the unshifted now, it
        // begins at `start`. Absolute deadlines (`creation_time + t`) and
        // relative ones (`abs_clock.now() + d`) stay in the same frame.
        let creation_time = host.abs_clock.now(host.abs_clock.resolution());
        clocks.monotonic = Some(WasiMonotonicOffsetClock {
            creation_time,
            abs_clock: Box::new(Shifted {
                host: host.abs_clock,
                shift: start,
            }),
        });
    }
    clocks
}

/// What `clock_time_get(MONOTONIC)` reads now in `ctx`.
pub fn monotonic_now(ctx: &WasiCtx) -> std::time::Duration {
    match ctx.clocks.monotonic() {
        Ok(clock) => {
            let now = clock.abs_clock.now(clock.abs_clock.resolution());
            now.duration_since(clock.creation_time)
        }
        Err(_) => std::time::Duration::ZERO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shifted_clock_starts_at_its_start_and_goes_on() {
        let start = std::time::Duration::from_secs(3600);
        let ctx = WasiCtx::new(
            wasi_common::tokio::random_ctx(),
            clocks_from(start),
            wasi_common::tokio::sched::sched_ctx(),
            wasi_common::Table::new(),
        );
        let a = monotonic_now(&ctx);
        assert!(
            a >= start && a < start + std::time::Duration::from_secs(60),
            "{a:?}"
        );
        let b = monotonic_now(&ctx);
        assert!(b >= a);
        let fresh = WasiCtx::new(
            wasi_common::tokio::random_ctx(),
            clocks_from(std::time::Duration::ZERO),
            wasi_common::tokio::sched::sched_ctx(),
            wasi_common::Table::new(),
        );
        assert!(monotonic_now(&fresh) < std::time::Duration::from_secs(60));
    }
}
