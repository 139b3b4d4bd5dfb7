//! Blobs recently decoded into values, kept in memory.
//!
//! A snapshot's manifest lists every page by hash: parsing it is most of
//! what a restore does before it touches memory (about 0.1–0.3 ms for a
//! 1 MiB process here). A node decodes the manifests it stores, imports or
//! receives as a checkpoint's replica right then, and a restore of one of
//! them comes soon after (a failover, a move back, a `restore`). Blobs
//! never change, so neither does what they decode to: a bounded cache of
//! the decoded values, keyed by hash and type, serves the restore. Only
//! [`crate::Registry::get_decoded`] reads through it.

use crate::Sha256;
use std::any::{Any, TypeId};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Values the cache holds at most (first in, first out).
pub const DECODED_CACHE_ENTRIES_MAX: usize = 256;

/// Encoded bytes of the values the cache holds at most.
pub const DECODED_CACHE_BYTES_MAX: usize = 32 << 20;

type Key = (Sha256, TypeId);

/// Decoded values by blob hash and type, bounded in count and bytes.
#[derive(Debug, Default)]
pub(crate) struct DecodedCache {
    map: HashMap<Key, (Arc<dyn Any + Send + Sync>, usize)>,
    order: VecDeque<Key>,
    bytes: usize,
}

impl DecodedCache {
    /// The value of type `T` decoded from blob `hash`.
    pub(crate) fn get<T: Any + Send + Sync>(&self, hash: &Sha256) -> Option<Arc<T>> {
        let (value, _) = self.map.get(&(*hash, TypeId::of::<T>()))?;
        value.clone().downcast::<T>().ok()
    }

    /// Remember `value`, decoded from blob `hash` of `encoded_bytes`. The
    /// caller decoded it from bytes that hash to `hash`.
    pub(crate) fn insert<T: Any + Send + Sync>(
        &mut self,
        hash: Sha256,
        encoded_bytes: usize,
        value: Arc<T>,
    ) {
        let key = (hash, TypeId::of::<T>());
        if encoded_bytes > DECODED_CACHE_BYTES_MAX || self.map.contains_key(&key) {
            return;
        }
        while self.bytes + encoded_bytes > DECODED_CACHE_BYTES_MAX
            || self.map.len() >= DECODED_CACHE_ENTRIES_MAX
        {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some((_, b)) = self.map.remove(&old) {
                self.bytes -= b;
            }
        }
        self.bytes += encoded_bytes;
        self.order.push_back(key);
        self.map.insert(key, (value, encoded_bytes));
        debug_assert!(self.bytes <= DECODED_CACHE_BYTES_MAX);
        debug_assert!(self.map.len() <= DECODED_CACHE_ENTRIES_MAX);
    }

    /// Forget every value decoded from `hash` (its blob was removed).
    pub(crate) fn remove(&mut self, hash: &Sha256) {
        let keys: Vec<Key> = self.map.keys().filter(|k| k.0 == *hash).copied().collect();
        for key in keys {
            if let Some((_, b)) = self.map.remove(&key) {
                self.bytes -= b;
            }
            self.order.retain(|k| *k != key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_at_most_its_bounds_keyed_by_hash_and_type() {
        let mut c = DecodedCache::default();
        let hash = |i: usize| Sha256::of(&i.to_le_bytes());
        for i in 0..DECODED_CACHE_ENTRIES_MAX + 5 {
            c.insert(hash(i), 10, Arc::new(i));
        }
        assert_eq!(c.map.len(), DECODED_CACHE_ENTRIES_MAX);
        assert!(c.get::<usize>(&hash(0)).is_none(), "oldest dropped");
        let last = DECODED_CACHE_ENTRIES_MAX + 4;
        assert_eq!(c.get::<usize>(&hash(last)).as_deref(), Some(&last));
        // Another type under the same hash is another value.
        assert!(c.get::<String>(&hash(last)).is_none());
        c.insert(hash(last), 10, Arc::new(String::from("s")));
        assert_eq!(
            c.get::<String>(&hash(last)).as_deref().map(String::as_str),
            Some("s")
        );
        c.remove(&hash(last));
        assert!(c.get::<usize>(&hash(last)).is_none());
        assert!(c.get::<String>(&hash(last)).is_none());
        // By bytes: a large value pushes out as many as it needs.
        c.insert(hash(1 << 20), DECODED_CACHE_BYTES_MAX - 5, Arc::new(0usize));
        assert!(c.bytes <= DECODED_CACHE_BYTES_MAX);
        assert!(c.get::<usize>(&hash(1 << 20)).is_some());
        // Too large for the whole cache: not kept.
        c.insert(hash(1 << 21), DECODED_CACHE_BYTES_MAX + 1, Arc::new(0usize));
        assert!(c.get::<usize>(&hash(1 << 21)).is_none());
    }
}
