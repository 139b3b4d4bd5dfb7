//! Recently written or read snapshot pages, kept in memory, verified.
//!
//! A restore reads hundreds or thousands of page blobs: a file each, each
//! hashed on read. Most restores read pages this node wrote or read a
//! moment ago (the checkpoint it just received, the snapshot it just took
//! or imported), so a bounded cache of small blobs whose hash was checked
//! when they entered it serves them from memory instead. Only
//! [`crate::Registry::get_page`] reads through it; [`crate::Registry::get`]
//! always reads and checks the file.

use crate::Sha256;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Largest blob the cache takes: a snapshot page (4–64 KiB).
pub const PAGE_CACHE_BLOB_BYTES_MAX: usize = 64 << 10;

/// Bytes the cache holds at most (first in, first out).
pub const PAGE_CACHE_BYTES_MAX: usize = 64 << 20;

/// Verified small blobs by hash, bounded in bytes.
#[derive(Debug, Default)]
pub(crate) struct PageCache {
    map: HashMap<Sha256, Arc<[u8]>>,
    order: VecDeque<Sha256>,
    bytes: usize,
}

impl PageCache {
    /// The cached bytes of `hash`.
    pub(crate) fn get(&self, hash: &Sha256) -> Option<Arc<[u8]>> {
        self.map.get(hash).cloned()
    }

    /// Remember `bytes` under `hash`. The caller has checked that they hash
    /// to it (debug builds check again).
    pub(crate) fn insert(&mut self, hash: Sha256, bytes: &[u8]) {
        if bytes.len() > PAGE_CACHE_BLOB_BYTES_MAX || self.map.contains_key(&hash) {
            return;
        }
        debug_assert_eq!(Sha256::of(bytes), hash, "only verified bytes are cached");
        while self.bytes + bytes.len() > PAGE_CACHE_BYTES_MAX {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(b) = self.map.remove(&old) {
                self.bytes -= b.len();
            }
        }
        self.bytes += bytes.len();
        self.order.push_back(hash);
        self.map.insert(hash, Arc::from(bytes));
        debug_assert!(self.bytes <= PAGE_CACHE_BYTES_MAX);
    }

    /// Forget `hash` (its blob was removed).
    pub(crate) fn remove(&mut self, hash: &Sha256) {
        if let Some(b) = self.map.remove(hash) {
            self.bytes -= b.len();
            self.order.retain(|h| h != hash);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_at_most_its_bound_and_drops_the_oldest_first() {
        let mut c = PageCache::default();
        let page = |i: u32| {
            let mut b = vec![0u8; PAGE_CACHE_BLOB_BYTES_MAX];
            b[..4].copy_from_slice(&i.to_le_bytes());
            b
        };
        let n = (PAGE_CACHE_BYTES_MAX / PAGE_CACHE_BLOB_BYTES_MAX) as u32;
        for i in 0..n + 3 {
            let b = page(i);
            c.insert(Sha256::of(&b), &b);
        }
        assert!(c.bytes <= PAGE_CACHE_BYTES_MAX);
        assert!(c.get(&Sha256::of(&page(0))).is_none(), "oldest dropped");
        let last = page(n + 2);
        assert_eq!(c.get(&Sha256::of(&last)).as_deref(), Some(&last[..]));
        c.remove(&Sha256::of(&last));
        assert!(c.get(&Sha256::of(&last)).is_none());
        // Too large for a page: not kept.
        let big = vec![1u8; PAGE_CACHE_BLOB_BYTES_MAX + 1];
        c.insert(Sha256::of(&big), &big);
        assert!(c.get(&Sha256::of(&big)).is_none());
    }
}
