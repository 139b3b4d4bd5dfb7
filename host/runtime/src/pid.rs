//! Pid allocation: blocks of cluster-unique pids handed out on this node.

pub use shoal_abi::pid::{Pid, PidParseError};

/// Hands out pids that no other live or past process of the cluster used.
///
/// On a single node this is one endless range starting at 1. In a cluster,
/// each node is granted blocks of pids through the replicated state
/// ([`PidAllocator::add_block`]); the allocator uses its current block and
/// holds at most one spare, and says when it wants another
/// ([`PidAllocator::wants_block`]) so a background task can fetch it before
/// the current one runs out. Pids never encode a location: a block only says
/// who *issued* a pid, not where it runs now.
#[derive(Debug)]
pub struct PidAllocator {
    blocks: std::sync::Mutex<Blocks>,
    refill: tokio::sync::Notify,
    granted: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct Blocks {
    /// Next pid to hand out and the end (exclusive) of the current block.
    next: u64,
    end: u64,
    /// A block granted ahead of need.
    spare: Option<(u64, u64)>,
}

impl PidAllocator {
    /// An allocator whose first pid is `first` (must be non-zero), with no
    /// end: a single node.
    pub fn starting_at(first: u64) -> Self {
        assert!(first != 0, "pid 0 is reserved");
        PidAllocator {
            blocks: std::sync::Mutex::new(Blocks {
                next: first,
                end: u64::MAX,
                spare: None,
            }),
            refill: tokio::sync::Notify::new(),
            granted: tokio::sync::Notify::new(),
        }
    }

    /// An allocator with no pids until a block is added: a cluster node.
    pub fn empty() -> Self {
        PidAllocator {
            blocks: std::sync::Mutex::new(Blocks::default()),
            refill: tokio::sync::Notify::new(),
            granted: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Blocks> {
        // Every mutation is a few integer stores; a panic cannot leave the
        // blocks inconsistent, so poisoning is ignored.
        self.blocks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Grant the pids `first..first + len` (from the replicated state). The
    /// first block granted to a single-node allocator replaces its endless
    /// range: the node has joined a cluster.
    pub fn add_block(&self, first: u64, len: u64) {
        assert!(first != 0 && len != 0, "empty or zero-based pid block");
        let end = first.saturating_add(len);
        let mut b = self.lock();
        if b.next >= b.end || b.end == u64::MAX {
            b.next = first;
            b.end = end;
        } else {
            b.spare = Some((first, end));
        }
        drop(b);
        self.granted.notify_waiters();
    }

    /// True when the allocator has no spare block (time to ask for one).
    pub fn wants_block(&self) -> bool {
        let b = self.lock();
        b.spare.is_none() && b.end != u64::MAX
    }

    /// Wait until the allocator wants another block.
    pub async fn block_wanted(&self) {
        loop {
            let n = self.refill.notified();
            if self.wants_block() {
                return;
            }
            n.await;
        }
    }

    /// The next unused pid, or `None` when every granted block is used up
    /// (the caller waits for a block and retries).
    pub fn try_allocate(&self) -> Option<Pid> {
        let mut b = self.lock();
        if b.next >= b.end {
            let (first, end) = b.spare.take()?;
            b.next = first;
            b.end = end;
            self.refill.notify_waiters();
        }
        let n = b.next;
        b.next += 1;
        Some(Pid(n))
    }

    /// The next unused pid, waiting up to `wait` for a block to be granted.
    pub async fn allocate_wait(&self, wait: std::time::Duration) -> Option<Pid> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let granted = self.granted.notified();
            if let Some(p) = self.try_allocate() {
                return Some(p);
            }
            self.refill.notify_waiters();
            if tokio::time::timeout_at(deadline, granted).await.is_err() {
                return self.try_allocate();
            }
        }
    }

    /// The next unused pid of a single-node allocator.
    ///
    /// # Panics
    /// If the allocator is out of blocks; cluster nodes use
    /// [`PidAllocator::try_allocate`].
    pub fn allocate(&self) -> Pid {
        self.try_allocate().expect("pid allocator out of blocks")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_used_in_order_and_ask_for_more() {
        let a = PidAllocator::empty();
        assert!(a.try_allocate().is_none());
        assert!(a.wants_block());
        a.add_block(100, 2);
        assert!(a.wants_block(), "no spare yet");
        a.add_block(500, 2);
        assert!(!a.wants_block());
        let got: Vec<u64> = (0..4).map(|_| a.try_allocate().unwrap().0).collect();
        assert_eq!(got, vec![100, 101, 500, 501]);
        assert!(a.try_allocate().is_none());
        assert!(a.wants_block());
        let single = PidAllocator::starting_at(1);
        assert_eq!(single.allocate(), Pid(1));
        assert!(!single.wants_block());
    }

    #[test]
    fn parse_and_print() {
        assert_eq!("42".parse::<Pid>().unwrap(), Pid(42));
        assert!("0".parse::<Pid>().is_err());
        assert!("x".parse::<Pid>().is_err());
        assert_eq!(Pid(7).to_string(), "7");
    }

    #[test]
    fn allocator_is_unique() {
        let a = PidAllocator::starting_at(1);
        let p1 = a.allocate();
        let p2 = a.allocate();
        assert_ne!(p1, p2);
    }
}
