//! Keeping a moved process's pages in this node's registry, in the
//! background, so that a later move to this node sends only what changed.
//!
//! Both ends of a move keep its pages: the source the pre-copy, the target
//! every pre-copy page it received. Writing thousands of small page blobs
//! takes seconds for a large memory (a file each), so it is not on the
//! path of the move: the move returns as soon as the process runs on the
//! target, and the pages are written behind it. Until a page is written
//! the keeper holds it ([`Keeper::page`]), so a later offer to this node
//! finds every kept page, written or not, without waiting for the writer
//! (a move straight back used to wait seconds for it). The queue is
//! bounded in bytes; pages beyond it are not kept (a later move sends them
//! again, nothing else is lost).
//!
//! A page is kept under the hash its sender named. The registry checks
//! each page against that hash as it writes it, and [`Keeper::page`]
//! before it hands a page out: a page under a hash that is not its own is
//! never used for another process.

use shoal_registry::{Registry, Sha256};
use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Bytes of pages waiting to be written, at most.
pub const KEEP_QUEUE_BYTES_MAX: u64 = 512 << 20;

/// Pages written in one registry call; a refused call is retried page by
/// page, so one bad page costs at most this many retries. Between calls
/// the writer pauses while moves run here ([`Keeper::quiet`]): a call
/// takes a few ms.
const KEEP_WRITE_PAGES: usize = 64;

/// How long after the last move here ended the writer waits before it
/// writes: moves in a row (a drain, a rebalance) find their pages in
/// memory meanwhile, and their freezes do not share the disk (a switch's
/// Raft fsync) or the cores with thousands of page files being written.
pub const KEEP_IDLE_AFTER_MOVE: Duration = Duration::from_millis(500);

/// A move older than this no longer holds the writer back
/// ([`Keeper::quiet`]), so one that never ends cannot stop the keeping.
pub const QUIET_WAIT_MAX: Duration = Duration::from_secs(10);

/// `memory` as [`bytes::Bytes`] for [`Keeper::keep`], shared, not copied.
pub fn shared_bytes(memory: Arc<Vec<u8>>) -> bytes::Bytes {
    /// A shared buffer seen as bytes.
    struct Shared(Arc<Vec<u8>>);
    impl AsRef<[u8]> for Shared {
        fn as_ref(&self) -> &[u8] {
            &self.0
        }
    }
    bytes::Bytes::from_owner(Shared(memory))
}

/// The node's page writer queue.
#[derive(Debug, Default)]
pub struct Keeper {
    queued_bytes: Mutex<u64>,
    /// Pages queued and not written yet, by the hash they are kept under
    /// (each a slice of its batch: no copy). At most
    /// [`KEEP_QUEUE_BYTES_MAX`] bytes of batches are held.
    pending: Mutex<HashMap<Sha256, bytes::Bytes>>,
    settled: Notify,
    /// Moves in progress on this node ([`Keeper::quiet`]); the writer's
    /// wake-up when one ends.
    moves: Mutex<Moves>,
    move_ended: Condvar,
}

/// Moves in progress on a node, as its page writer sees them.
#[derive(Debug, Default)]
struct Moves {
    /// The last number given to a move.
    numbered: u64,
    /// Moves in progress, by number: when each began.
    running: HashMap<u64, Instant>,
    /// When the last one ended.
    last_end: Option<Instant>,
}

impl Moves {
    /// How long the writer should still wait at `now`: while a move
    /// younger than [`QUIET_WAIT_MAX`] runs, and for
    /// [`KEEP_IDLE_AFTER_MOVE`] after the last one ended. `None`: write.
    fn wait_left(&self, now: Instant) -> Option<Duration> {
        let running = self
            .running
            .values()
            .filter_map(|began| (*began + QUIET_WAIT_MAX).checked_duration_since(now));
        let idle = self
            .last_end
            .and_then(|end| (end + KEEP_IDLE_AFTER_MOVE).checked_duration_since(now));
        running.chain(idle).filter(|d| !d.is_zero()).max()
    }
}

/// A move in progress: the keeper's writer waits until it is dropped (see
/// [`Keeper::quiet`]).
pub struct Quiet(Arc<Keeper>, u64);

impl Drop for Quiet {
    fn drop(&mut self) {
        let mut moves = self.0.moves.lock().unwrap_or_else(|p| p.into_inner());
        moves.running.remove(&self.1);
        moves.last_end = Some(Instant::now());
        self.0.move_ended.notify_all();
    }
}

impl Keeper {
    /// Write `pages` — hashes and their ranges of `memory`, each checked
    /// against its hash by the registry — in the background, skipping
    /// those the registry has. Returns false, keeping nothing, when the
    /// queue is full.
    pub fn keep(
        self: &Arc<Self>,
        registry: Registry,
        memory: bytes::Bytes,
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
        let pages: Vec<(Sha256, bytes::Bytes)> = pages
            .into_iter()
            .filter(|(_, r)| r.start <= r.end && r.end <= memory.len())
            .map(|(h, r)| (h, memory.slice(r)))
            .collect();
        {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            for (hash, page) in &pages {
                pending.insert(*hash, page.clone());
            }
        }
        let keeper = self.clone();
        // Behind the moves: at a lower priority, so that a move (or any
        // process) that wants a core meanwhile gets most of it.
        tokio::task::spawn_blocking(move || {
            shoal_runtime::low_priority::on_own_thread(|| keeper.write(&registry, &pages, bytes))
        });
        true
    }

    /// Write `pages` (`bytes` of them, queued) into `registry`, then let
    /// [`Keeper::page`] forget them.
    fn write(&self, registry: &Registry, pages: &[(Sha256, bytes::Bytes)], bytes: u64) {
        // Only a later move pays for a failure: it sends these again.
        // A page that does not match its hash (a lying source) is refused
        // by the registry and the rest still kept; one the registry holds
        // is skipped there. Every step, even looking, waits while moves
        // run here ([`Keeper::quiet`]).
        for part in pages.chunks(KEEP_WRITE_PAGES) {
            self.wait_quiet();
            let refs: Vec<(Sha256, &[u8])> = part.iter().map(|(h, p)| (*h, &p[..])).collect();
            if let Err(e) = registry.put_many_unsynced(&refs) {
                tracing::warn!("cannot keep the pages of a moved process: {e}");
                for one in &refs {
                    let _ = registry.put_many_unsynced(std::slice::from_ref(one));
                }
            }
        }
        {
            // Written (or refused): the registry answers for them now.
            // An entry a later batch put under the same hash stays.
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            for (hash, page) in pages {
                if pending
                    .get(hash)
                    .is_some_and(|p| p.as_ptr() == page.as_ptr())
                {
                    pending.remove(hash);
                }
            }
        }
        let mut queued = self.queued_bytes.lock().unwrap_or_else(|p| p.into_inner());
        *queued = queued.saturating_sub(bytes);
        if *queued == 0 {
            self.settled.notify_waiters();
        }
    }

    /// Hold the writer back while a move runs here (until the guard
    /// drops, at most [`QUIET_WAIT_MAX`]) and for [`KEEP_IDLE_AFTER_MOVE`]
    /// after: writing thousands of page files competes with the move's
    /// freeze for the cores and the disk (its switch's Raft fsync).
    pub fn quiet(self: &Arc<Self>) -> Quiet {
        let mut moves = self.moves.lock().unwrap_or_else(|p| p.into_inner());
        moves.numbered += 1;
        let id = moves.numbered;
        moves.running.insert(id, Instant::now());
        Quiet(self.clone(), id)
    }

    /// Wait (the writer, between registry calls) while [`Keeper::quiet`]
    /// says to.
    fn wait_quiet(&self) {
        let mut moves = self.moves.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(left) = moves.wait_left(Instant::now()) {
            moves = self
                .move_ended
                .wait_timeout(moves, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// The page kept under `hash` and not written yet, if its bytes have
    /// that hash (checked here: the sender named it).
    pub fn page(&self, hash: &Sha256) -> Option<bytes::Bytes> {
        let page = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(hash)
            .cloned()?;
        (Sha256::of(&page) == *hash).then_some(page)
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
        assert!(keeper.keep(registry.clone(), memory.into(), pages));
        keeper.settled(Duration::from_secs(30)).await;
        assert_eq!(keeper.queued_bytes(), 0);
        assert!(hashes.iter().all(|h| registry.contains(h)));
        // A page under a hash that is not its own (a lying source) is not
        // kept; the others of its batch are.
        let (a, b, c) = (vec![9u8; 4096], vec![8u8; 4096], vec![7u8; 4096]);
        let batch: Vec<u8> = [a.clone(), b.clone(), c.clone()].concat();
        let lie = Sha256::of(b"not this page");
        let named = vec![
            (Sha256::of(&a), 0..4096),
            (lie, 4096..8192),
            (Sha256::of(&c), 8192..12288),
        ];
        assert!(keeper.keep(registry.clone(), batch.into(), named));
        keeper.settled(Duration::from_secs(30)).await;
        assert!(
            !registry.contains(&lie),
            "a page was kept under a hash not its own"
        );
        assert!(registry.contains(&Sha256::of(&a)) && registry.contains(&Sha256::of(&c)));
        // More than the queue takes is refused whole, not half-kept.
        let huge = vec![(Sha256::of(b"x"), 0..(KEEP_QUEUE_BYTES_MAX as usize + 1))];
        assert!(!keeper.keep(registry.clone(), bytes::Bytes::new(), huge));
        assert_eq!(keeper.queued_bytes(), 0);
    }

    #[test]
    fn a_pending_page_is_handed_out_only_under_its_own_hash() {
        let keeper = Keeper::default();
        let (a, b) = (vec![3u8; 4096], vec![4u8; 4096]);
        let lie = Sha256::of(&b);
        {
            let mut pending = keeper.pending.lock().unwrap();
            pending.insert(Sha256::of(&a), bytes::Bytes::from(a.clone()));
            pending.insert(lie, bytes::Bytes::from(a.clone()));
        }
        assert_eq!(keeper.page(&Sha256::of(&a)).as_deref(), Some(&a[..]));
        assert!(
            keeper.page(&lie).is_none(),
            "a page was handed out under a hash not its own"
        );
        assert!(keeper.page(&Sha256::of(b"absent")).is_none());
    }

    #[test]
    fn the_writer_waits_for_moves_and_a_while_after_the_last() {
        let t = Instant::now();
        let mut moves = Moves::default();
        assert_eq!(moves.wait_left(t), None, "no move: write");
        moves.running.insert(1, t);
        assert_eq!(moves.wait_left(t), Some(QUIET_WAIT_MAX));
        // A move that never ends holds the writer back only so long.
        assert_eq!(moves.wait_left(t + QUIET_WAIT_MAX), None);
        moves.running.clear();
        moves.last_end = Some(t);
        assert_eq!(moves.wait_left(t), Some(KEEP_IDLE_AFTER_MOVE));
        assert_eq!(moves.wait_left(t + KEEP_IDLE_AFTER_MOVE), None);
    }

    #[test]
    fn the_writer_pauses_while_a_freeze_is_in_progress() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).unwrap();
        let keeper = Arc::new(Keeper::default());
        let page = vec![5u8; 4096];
        let pages = vec![(Sha256::of(&page), bytes::Bytes::from(page))];
        let quiet = keeper.quiet();
        let written = std::thread::scope(|scope| {
            let writer = scope.spawn(|| keeper.write(&registry, &pages, 4096));
            // Paused: nothing written while the freeze lasts.
            std::thread::sleep(Duration::from_millis(200));
            let during = registry.contains(&pages[0].0);
            drop(quiet);
            writer.join().unwrap();
            during
        });
        assert!(!written, "the writer wrote during a freeze");
        assert!(registry.contains(&pages[0].0));
    }
}
