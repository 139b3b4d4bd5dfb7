//! Modules prepared ahead (#17): every node keeps a copy of every module
//! the cluster records and prepares it (Asyncify, compilation) in the
//! background as soon as it learns of it, so a spawn, restore, failover or
//! move to any node finds the module compiled and never waits for its
//! preparation (seconds for a 2 MB Go program, ~17 s for a 7 MB Python
//! interpreter on two cores; a move used to spend nearly all its time
//! there).
//!
//! Each node prepares for itself: only the module's bytes travel, fetched
//! from a holder and checked against their hash by the registry
//! ([`shoal_runtime::Node::fetch_module`]); native code and prepared modules
//! never do. The work runs at the low priority of all preparation
//! ([`shoal_runtime::low_priority`]), one module at a time per node,
//! smallest first, so it takes the cores a node leaves idle and never
//! starves its heartbeats, calls or processes.
//!
//! Bounded: only modules of at most [`shoal_api::MODULE_BYTES_MAX`] with a
//! live holder; a module that could not be fetched or prepared is tried
//! again after a backoff that doubles from [`RETRY_INITIAL`] to
//! [`RETRY_MAX`] (a module that cannot be prepared anywhere costs one
//! attempt per node per [`RETRY_MAX`]). `shoal node start --prepare-ahead
//! off` turns it off: modules are then fetched and prepared when first
//! needed, as before.

use crate::Inner;
use shoal_registry::Sha256;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// First pause before a failed module is tried again.
pub const RETRY_INITIAL: Duration = Duration::from_secs(5);
/// Longest pause before a failed module is tried again.
pub const RETRY_MAX: Duration = Duration::from_secs(300);
/// How often the list is looked at without a Raft change (retries due).
const TICK: Duration = Duration::from_secs(1);

/// A module that failed: when to try again, and the pause after that.
struct Retry {
    at: Instant,
    pause: Duration,
}

/// Prepare every recorded module ahead (see the module docs). Runs for the
/// daemon's life; returns at once when turned off.
pub async fn run(inner: Arc<Inner>) {
    if !inner.prepare_ahead {
        return;
    }
    let mut applied = inner.raft.subscribe();
    let mut failed: BTreeMap<String, Retry> = BTreeMap::new();
    loop {
        let Some((hex, hash)) = next(&inner, &failed) else {
            // Nothing to do until the cluster records something or a
            // retry falls due.
            let _ = tokio::time::timeout(TICK, applied.changed()).await;
            continue;
        };
        let started = Instant::now();
        match prepare_ahead(&inner, &hex, hash).await {
            Ok(()) => {
                failed.remove(&hex);
                tracing::info!(
                    "module {hex} prepared ahead in {:.1} s",
                    started.elapsed().as_secs_f64()
                );
            }
            Err(why) => {
                let pause = failed
                    .get(&hex)
                    .map_or(RETRY_INITIAL, |r| (r.pause * 2).min(RETRY_MAX));
                tracing::warn!(
                    "module {hex} could not be prepared ahead ({why}); trying again in {} s",
                    pause.as_secs()
                );
                failed.insert(
                    hex,
                    Retry {
                        at: Instant::now() + pause,
                        pause,
                    },
                );
            }
        }
    }
}

/// The smallest recorded module this node has not compiled yet, has not
/// given up on for now, and some live member holds (or this node does).
fn next(inner: &Inner, failed: &BTreeMap<String, Retry>) -> Option<(String, Sha256)> {
    let state = inner.raft.state();
    let now = Instant::now();
    let mut best: Option<(u64, String, Sha256)> = None;
    for (hex, record) in state.modules.iter() {
        if record.size_bytes > shoal_api::MODULE_BYTES_MAX
            || best
                .as_ref()
                .is_some_and(|(size, _, _)| *size <= record.size_bytes)
            || failed.get(hex).is_some_and(|r| r.at > now)
        {
            continue;
        }
        let live_holder = record.holders.iter().any(|h| {
            *h == inner.me || (state.member(*h).is_some() && state.node_dead(*h).is_none())
        });
        if !live_holder {
            continue;
        }
        let Ok(hash) = hex.parse::<Sha256>() else {
            continue;
        };
        if inner.node.is_compiled(&hash) {
            continue;
        }
        best = Some((record.size_bytes, hex.clone(), hash));
    }
    best.map(|(_, hex, hash)| (hex, hash))
}

/// Fetch `hash` if this node lacks it, then prepare and compile it.
async fn prepare_ahead(inner: &Inner, hex: &str, hash: Sha256) -> Result<(), String> {
    if !inner.node.registry().contains(&hash) {
        let fetched = inner
            .node
            .fetch_module(hex)
            .await
            .map_err(|code| format!("fetching it failed with code {code}"))?;
        if fetched != hash {
            return Err(format!("fetching it gave module {fetched}"));
        }
    }
    inner
        .node
        .warm_module(hash, false)
        .await
        .map_err(|e| e.to_string())
}
