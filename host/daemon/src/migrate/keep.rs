//! Keeping a moved process's pages in this node's registry, in the
//! background, so that a later move to this node sends only what changed.
//!
//! Both ends of a move keep its pages: the source the pre-copy, the target
//! every verified page it received. Writing thousands of small page blobs
//! takes seconds for a large memory (a file each), so it is not on the
//! path of the move: the move returns as soon as the process runs on the
//! target, and the pages are written behind it. A later offer to this node
//! first waits (bounded) for the writes queued before it
//! ([`Keeper::settled`]), so what it finds in the registry does not depend
//! on timing. The queue is bounded in bytes; pages beyond it are not kept
//! (a later move sends them again, nothing else is lost).

use shoal_registry::{Registry, Sha256};
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// Bytes of pages waiting to be written, at most.
pub const KEEP_QUEUE_BYTES_MAX: u64 = 512 << 20;

/// How long an offer waits for earlier pages to be written before it looks
/// in the registry anyway.
pub const KEEP_SETTLE_WAIT: Duration = Duration::from_secs(20);

/// The node's page writer queue.
#[derive(Debug, Default)]
pub struct Keeper {
    queued_bytes: Mutex<u64>,
    settled: Notify,
}

impl Keeper {
    /// Write `pages` — hashes and their ranges of `memory`, each checked
    /// against its hash by the registry — in the background, skipping
    /// those the registry has. Returns false, keeping nothing, when the
    /// queue is full.
    pub fn keep(
        self: &Arc<Self>,
        registry: Registry,
        memory: Arc<Vec<u8>>,
        pages: Vec<(Sha256, Range<usize>)>,
    ) -> bool {
        if pages.is_empty() {
            return true;
        }
        let bytes: u64 = pages.iter().map(|(_, r)| r.len() as u64).sum();
        {
            let mut queued = self.queued_bytes.lock().unwrap_or_else(|p| p.into_inner());
            if queued.saturating_add(bytes) > KEEP_QUEUE_BYTES_MAX {
                tracing::debug!("not keeping {bytes} bytes of moved pages: the writer is behind");
                return false;
            }
            *queued += bytes;
        }
        let keeper = self.clone();
        tokio::task::spawn_blocking(move || {
            let refs: Vec<(Sha256, &[u8])> = pages
                .iter()
                .filter_map(|(h, r)| Some((*h, memory.get(r.clone())?)))
                .filter(|(h, _)| !registry.contains(h))
                .collect();
            // Only a later move pays for a failure: it sends these again.
            if let Err(e) = registry.put_many_unsynced(&refs) {
                tracing::warn!("cannot keep the pages of a moved process: {e}");
            }
            let mut queued = keeper
                .queued_bytes
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            *queued = queued.saturating_sub(bytes);
            if *queued == 0 {
                keeper.settled.notify_waiters();
            }
        });
        true
    }

    /// Bytes still to be written.
    pub fn queued_bytes(&self) -> u64 {
        *self.queued_bytes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wait until every page queued so far is written (or `wait_max`).
    pub async fn settled(&self, wait_max: Duration) {
        let _ = tokio::time::timeout(wait_max, async {
            loop {
                let notified = self.settled.notified();
                if self.queued_bytes() == 0 {
                    return;
                }
                notified.await;
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn kept_pages_are_in_the_registry_once_settled_and_the_queue_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).unwrap();
        let keeper = Arc::new(Keeper::default());
        let memory: Vec<u8> = (0..64u8)
            .flat_map(|i| vec![i.wrapping_add(1); 4096])
            .collect();
        let pages: Vec<(Sha256, Range<usize>)> = memory
            .chunks(4096)
            .enumerate()
            .map(|(i, b)| (Sha256::of(b), i * 4096..(i + 1) * 4096))
            .collect();
        let hashes: Vec<Sha256> = pages.iter().map(|(h, _)| *h).collect();
        assert!(keeper.keep(registry.clone(), Arc::new(memory), pages));
        keeper.settled(Duration::from_secs(30)).await;
        assert_eq!(keeper.queued_bytes(), 0);
        assert!(hashes.iter().all(|h| registry.contains(h)));
        // More than the queue takes is refused whole, not half-kept.
        let huge = vec![(Sha256::of(b"x"), 0..(KEEP_QUEUE_BYTES_MAX as usize + 1))];
        assert!(!keeper.keep(registry.clone(), Arc::new(Vec::new()), huge));
        assert_eq!(keeper.queued_bytes(), 0);
    }
}
