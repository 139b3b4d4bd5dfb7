//! Replicated key-value for guests (issue #14): the part of the replicated
//! state machine ([`crate::state`]) that `kv_get`, `kv_set`, `kv_delete`,
//! `kv_exists`, `kv_list`, `kv_increment` and `kv_cas` use.
//!
//! - Buckets belong to their owner (the identity that deployed the process,
//!   [`Owner`]): `(owner, bucket, key)` names an entry, so two owners'
//!   buckets of the same name never meet.
//! - Every entry has a **version**: the book's write counter when it was
//!   last written, strictly increasing across the whole book (what
//!   `kv_cas` compares, and what a later fenced write will check).
//! - Bounds, each refused with its own [`KvRefusal`]: a key is 1 to
//!   [`KEY_BYTES_MAX`] bytes, a value at most [`VALUE_BYTES_MAX`], a bucket
//!   name 1 to [`BUCKET_BYTES_MAX`] bytes; an owner holds at most
//!   [`OWNER_KEYS_MAX`] keys and [`OWNER_BYTES_MAX`] bytes (keys + values),
//!   checked before anything changes.
//! - Applying is deterministic: nothing here reads a clock or a random
//!   source; what a command does depends only on the book and the command.
//!
//! The book lives in persistent maps ([`Table`]): the state machine's
//! per-apply clone shares it, and a write costs what it changes.

use crate::state::{kv_disk, Table};
use serde::{Deserialize, Serialize};

pub use shoal_pki::Owner;

/// Longest key, in bytes (Spin's limit; the ABI's).
pub const KEY_BYTES_MAX: usize = shoal_abi::kv::KEY_BYTES_MAX;
/// Largest value, in bytes (Spin's limit: 1 MB; the ABI's).
pub const VALUE_BYTES_MAX: usize = shoal_abi::kv::VALUE_BYTES_MAX;
/// Longest bucket name, in bytes (the ABI's).
pub const BUCKET_BYTES_MAX: usize = shoal_abi::kv::BUCKET_BYTES_MAX;
/// Most keys one owner may hold, over all its buckets.
pub const OWNER_KEYS_MAX: u64 = 100_000;
/// Most bytes (keys and values) one owner may hold, over all its buckets.
pub const OWNER_BYTES_MAX: u64 = 64 << 20;
/// Most entries in one batch (the ABI's).
pub const BATCH_ENTRIES_MAX: usize = shoal_abi::kv::BATCH_ENTRIES_MAX;
/// Most bytes (keys and values) in one batch (the ABI's).
pub const BATCH_BYTES_MAX: usize = shoal_abi::kv::BATCH_BYTES_MAX;
/// Most keys one `list` answer holds (then a cursor to go on).
pub const LIST_KEYS_MAX: usize = shoal_abi::kv::LIST_KEYS_MAX;

/// Where an entry lives: whose, which bucket, which key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct KvKey {
    /// The owner of the bucket.
    pub owner: Owner,
    /// The bucket.
    pub bucket: String,
    /// The key (bytes: any encoding the guest likes).
    #[serde(with = "serde_bytes_vec")]
    pub key: Vec<u8>,
}

/// One entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvEntry {
    /// The value.
    #[serde(with = "serde_bytes_vec")]
    pub value: Vec<u8>,
    /// The book's write counter when it was last written (> 0).
    pub version: u64,
}

/// What one owner holds, for its quota.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvUsage {
    /// Keys held.
    pub keys: u64,
    /// Bytes held (keys and values).
    pub bytes: u64,
}

/// Why a key-value command changed nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum KvRefusal {
    /// The key is empty or too long.
    #[error("key of {len} bytes: keys are 1 to {max} bytes")]
    BadKey {
        /// Its length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// The value is too large.
    #[error("value of {len} bytes: values are at most {max} bytes")]
    ValueTooLarge {
        /// Its length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// The bucket name is empty or too long.
    #[error("bucket name of {len} bytes: bucket names are 1 to {max} bytes")]
    BadBucket {
        /// Its length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// The owner would hold more keys or bytes than it may.
    #[error("owner {owner} would hold {keys} keys and {bytes} bytes (at most {keys_max} keys and {bytes_max} bytes)")]
    Quota {
        /// The owner.
        owner: String,
        /// Keys it would hold.
        keys: u64,
        /// Bytes it would hold.
        bytes: u64,
        /// The key bound.
        keys_max: u64,
        /// The byte bound.
        bytes_max: u64,
    },
    /// `cas` found another version (0: the key does not exist).
    #[error("version mismatch: expected {expected}, the key is at {current}")]
    VersionMismatch {
        /// What the command expected.
        expected: u64,
        /// What the key is at (0: absent).
        current: u64,
    },
    /// `increment` of a value that is not an 8-byte little-endian integer.
    #[error("the value is not a counter (8 bytes, little-endian i64)")]
    NotACounter,
    /// `increment` would overflow.
    #[error("the counter would overflow")]
    Overflow,
    /// A batch is empty, has more than [`BATCH_ENTRIES_MAX`] entries or
    /// more than [`BATCH_BYTES_MAX`] bytes of keys and values.
    #[error("batch of {entries} entries and {bytes} bytes: batches are 1 to {entries_max} entries and at most {bytes_max} bytes")]
    BadBatch {
        /// Its entries.
        entries: usize,
        /// Its bytes (keys and values).
        bytes: usize,
        /// The entry bound.
        entries_max: usize,
        /// The byte bound.
        bytes_max: usize,
    },
    /// The asking process is not live.
    #[error("pid {0} is not a live process")]
    NotLive(u64),
    /// The bucket named is not the asking process's owner's.
    #[error("pid {pid} belongs to {owner}: it may use only that owner's buckets")]
    NotTheOwner {
        /// The asking process.
        pid: u64,
        /// Its owner.
        owner: String,
    },
}

/// A key-value write, as a Raft command carries it
/// ([`crate::state::Command::Kv`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvOp {
    /// `kv_set` (→ `KvVersion`).
    Set {
        /// The value.
        #[serde(with = "serde_bytes_vec")]
        value: Vec<u8>,
    },
    /// `kv_cas` (→ `KvVersion`, or `VersionMismatch`).
    Cas {
        /// The version the key must be at (0: absent).
        expected: u64,
        /// The value.
        #[serde(with = "serde_bytes_vec")]
        value: Vec<u8>,
    },
    /// `kv_increment` (→ `KvCounter`).
    Increment {
        /// What to add.
        delta: i64,
    },
    /// `kv_delete` (→ `KvDeleted`).
    Delete,
}

/// A batch write, as a Raft command carries it
/// ([`crate::state::Command::KvBatch`]): all of it or nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvBatchOp {
    /// `kv_set_many` (→ `KvCount`: how many were set).
    Set {
        /// The entries, in order (a key named twice: the last one wins).
        entries: Vec<KvPair>,
    },
    /// `kv_delete_many` (→ `KvCount`: how many existed).
    Delete {
        /// The keys.
        keys: Vec<KvPair>,
    },
}

/// A key and a value (empty for a delete's key).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvPair {
    /// The key.
    #[serde(with = "serde_bytes_vec")]
    pub key: Vec<u8>,
    /// The value.
    #[serde(with = "serde_bytes_vec")]
    pub value: Vec<u8>,
}

impl KvBatchOp {
    fn pairs(&self) -> &[KvPair] {
        match self {
            KvBatchOp::Set { entries } => entries,
            KvBatchOp::Delete { keys } => keys,
        }
    }

    /// How many entries (or keys) the batch has.
    pub fn len(&self) -> usize {
        self.pairs().len()
    }

    /// Whether it has none (then [`KvBatchOp::check`] refuses it).
    pub fn is_empty(&self) -> bool {
        self.pairs().is_empty()
    }

    /// Refuse a batch out of bounds (before anything is applied).
    pub fn check(&self) -> Result<(), KvRefusal> {
        let pairs = self.pairs();
        let bytes: usize = pairs.iter().map(|p| p.key.len() + p.value.len()).sum();
        if pairs.is_empty() || pairs.len() > BATCH_ENTRIES_MAX || bytes > BATCH_BYTES_MAX {
            return Err(KvRefusal::BadBatch {
                entries: pairs.len(),
                bytes,
                entries_max: BATCH_ENTRIES_MAX,
                bytes_max: BATCH_BYTES_MAX,
            });
        }
        Ok(())
    }
}

/// Most entries the book holds in memory before the state machine flushes
/// them to disk ([`KvBook::overlay_full`]).
pub const OVERLAY_ENTRIES_MAX: usize = 512;
/// Most key and value bytes written into memory before the state machine
/// flushes them (one batch may pass it by at most [`BATCH_BYTES_MAX`]).
pub const OVERLAY_BYTES_MAX: u64 = 4 << 20;

/// The replicated key-value book (see the module docs): the entries
/// flushed to disk ([`kv_disk`]'s base, a snapshot of its table) under an
/// overlay of the writes applied since (`None`: deleted), with each
/// owner's usage and the write counter.
///
/// Two books are equal when they hold the same entries, usage and counter,
/// wherever each entry lives.
#[derive(Clone, Default)]
pub struct KvBook {
    overlay: Table<KvKey, Option<KvEntry>>,
    /// Key and value bytes written into the overlay since the last flush.
    overlay_bytes: u64,
    usage: Table<Owner, KvUsage>,
    /// Writes applied so far: the last version handed out.
    writes: u64,
    base: Option<kv_disk::Base>,
    /// Flushes so far (every [`kv_disk::FLUSHES_PER_DURABLE`]th is durable).
    flushes: u64,
    /// Encoded without its entries, which follow it in the snapshot file
    /// ([`KvBook::detached`]); read back as "entries to load".
    entries_follow: bool,
}

impl std::fmt::Debug for KvBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvBook")
            .field("writes", &self.writes)
            .field("owners", &self.usage.len())
            .field("overlay", &self.overlay.len())
            .field("base", &self.base)
            .finish()
    }
}

impl PartialEq for KvBook {
    fn eq(&self, other: &Self) -> bool {
        let all = |b: &KvBook| b.iter().collect::<std::collections::BTreeMap<_, _>>();
        self.writes == other.writes && self.usage == other.usage && all(self) == all(other)
    }
}

impl Eq for KvBook {}

/// The book as encoded: its entries (in the snapshot file, after it), each
/// owner's usage, the counter.
#[derive(Deserialize)]
struct KvBookEncoded {
    #[serde(with = "pairs")]
    entries: Table<KvKey, KvEntry>,
    #[serde(with = "pairs")]
    usage: Table<Owner, KvUsage>,
    writes: u64,
    #[serde(default)]
    entries_follow: bool,
}

impl<'de> Deserialize<'de> for KvBook {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let e = KvBookEncoded::deserialize(d)?;
        let overlay_bytes = e
            .entries
            .iter()
            .map(|(k, v)| (k.key.len() + v.value.len()) as u64)
            .sum();
        Ok(KvBook {
            overlay: e.entries.into_iter().map(|(k, v)| (k, Some(v))).collect(),
            overlay_bytes,
            usage: e.usage,
            writes: e.writes,
            base: None,
            flushes: 0,
            entries_follow: e.entries_follow,
        })
    }
}

impl Serialize for KvBook {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        /// The entries as a sequence, read as they are written (from disk).
        struct Entries<'a>(&'a KvBook);
        impl Serialize for Entries<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0.iter())
            }
        }
        struct Usage<'a>(&'a Table<Owner, KvUsage>);
        impl Serialize for Usage<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                pairs::serialize(self.0, s)
            }
        }
        let mut st = s.serialize_struct("KvBook", 3 + usize::from(self.entries_follow))?;
        st.serialize_field("entries", &Entries(self))?;
        st.serialize_field("usage", &Usage(&self.usage))?;
        st.serialize_field("writes", &self.writes)?;
        if self.entries_follow {
            st.serialize_field("entries_follow", &true)?;
        }
        st.end()
    }
}

/// What entries hold, counted as they go by (to check a book's usage and
/// counter against them).
#[derive(Default)]
struct Counted {
    usage: std::collections::BTreeMap<Owner, KvUsage>,
    /// The first version outside `1..=writes` seen, with the bound.
    bad_version: Option<(u64, u64)>,
}

impl Counted {
    fn add(&mut self, k: &KvKey, e: &KvEntry, writes: u64) {
        if (e.version == 0 || e.version > writes) && self.bad_version.is_none() {
            self.bad_version = Some((e.version, writes));
        }
        let u = self.usage.entry(k.owner.clone()).or_default();
        u.keys += 1;
        u.bytes += (k.key.len() + e.value.len()) as u64;
    }

    fn agrees(&self, usage: &Table<Owner, KvUsage>) -> Result<(), String> {
        if let Some((version, writes)) = self.bad_version {
            return Err(format!("version {version} outside 1..={writes}"));
        }
        let recorded: std::collections::BTreeMap<Owner, KvUsage> =
            usage.iter().map(|(o, u)| (o.clone(), *u)).collect();
        if self.usage != recorded {
            return Err(format!(
                "usage {recorded:?} but entries count {:?}",
                self.usage
            ));
        }
        Ok(())
    }
}

fn check_names(bucket: &str, key: &[u8]) -> Result<(), KvRefusal> {
    if bucket.is_empty() || bucket.len() > BUCKET_BYTES_MAX {
        return Err(KvRefusal::BadBucket {
            len: bucket.len(),
            max: BUCKET_BYTES_MAX,
        });
    }
    if key.is_empty() || key.len() > KEY_BYTES_MAX {
        return Err(KvRefusal::BadKey {
            len: key.len(),
            max: KEY_BYTES_MAX,
        });
    }
    Ok(())
}

fn check_value(value: &[u8]) -> Result<(), KvRefusal> {
    if value.len() > VALUE_BYTES_MAX {
        return Err(KvRefusal::ValueTooLarge {
            len: value.len(),
            max: VALUE_BYTES_MAX,
        });
    }
    Ok(())
}

impl KvBook {
    /// The entry at `at`, if any: written since the last flush, or on disk.
    fn entry(&self, at: &KvKey) -> Option<KvEntry> {
        match self.overlay.get(at) {
            Some(recent) => recent.clone(),
            None => self.base.as_ref().and_then(|b| kv_disk::get(b, at)),
        }
    }

    /// The entry at `(owner, bucket, key)`, if any.
    pub fn get(&self, owner: &Owner, bucket: &str, key: &[u8]) -> Option<KvEntry> {
        self.entry(&KvKey {
            owner: owner.clone(),
            bucket: bucket.to_string(),
            key: key.to_vec(),
        })
    }

    /// Every entry, flushed ones first (in the table's order), then the
    /// recent ones (in key order).
    pub fn iter(&self) -> impl Iterator<Item = (KvKey, KvEntry)> + '_ {
        let flushed = self
            .base
            .iter()
            .flat_map(kv_disk::entries)
            .filter(|(k, _)| !self.overlay.contains_key(k));
        let recent = self
            .overlay
            .iter()
            .filter_map(|(k, e)| e.as_ref().map(|e| (k.clone(), e.clone())));
        flushed.chain(recent)
    }

    /// What `owner` holds.
    pub fn usage(&self, owner: &Owner) -> KvUsage {
        self.usage.get(owner).copied().unwrap_or_default()
    }

    /// Keys of `owner`'s `bucket` that start with `prefix`, after `cursor`
    /// (exclusive; `None`: from the first), at most `count_max` (bounded by
    /// [`LIST_KEYS_MAX`]), in byte order. The last key returned is the
    /// cursor for the next page; fewer than asked means the end.
    pub fn list(
        &self,
        owner: &Owner,
        bucket: &str,
        prefix: &[u8],
        cursor: Option<&[u8]>,
        count_max: usize,
    ) -> Vec<Vec<u8>> {
        let from = match cursor {
            Some(c) if c >= prefix => c.to_vec(),
            _ => prefix.to_vec(),
        };
        let start = KvKey {
            owner: owner.clone(),
            bucket: bucket.to_string(),
            key: from.clone(),
        };
        // Both in key byte order: one bucket is one range of each.
        let mut recent = self
            .overlay
            .range(start..)
            .take_while(|(k, _)| k.owner == *owner && k.bucket == bucket)
            .map(|(k, e)| (k.key.clone(), e.is_some()))
            .peekable();
        let mut flushed = self
            .base
            .iter()
            .flat_map(|b| kv_disk::bucket_from(b, owner, bucket, &from))
            .map(|(k, _)| (k, true))
            .peekable();
        let count_max = count_max.min(LIST_KEYS_MAX);
        let mut keys = Vec::new();
        while keys.len() < count_max {
            // The smaller key next; on a tie the recent write wins.
            let next = match (flushed.peek(), recent.peek()) {
                (None, None) => break,
                (Some(_), None) => flushed.next(),
                (None, Some(_)) => recent.next(),
                (Some((f, _)), Some((r, _))) if f < r => flushed.next(),
                (Some((f, _)), Some((r, _))) => {
                    if f == r {
                        flushed.next();
                    }
                    recent.next()
                }
            };
            let Some((key, live)) = next else { break };
            if cursor.is_some_and(|c| key.as_slice() <= c) {
                continue;
            }
            if !key.starts_with(prefix) {
                break;
            }
            if live {
                keys.push(key);
            }
        }
        keys
    }

    /// Record a write of `at` in the overlay.
    fn write(&mut self, at: KvKey, entry: Option<KvEntry>) {
        let bytes = at.key.len() + entry.as_ref().map_or(0, |e| e.value.len());
        self.overlay_bytes = self.overlay_bytes.saturating_add(bytes as u64);
        if entry.is_none() && self.base.is_none() {
            // Nothing on disk to hide.
            self.overlay.remove(&at);
        } else {
            self.overlay.insert(at, entry);
        }
    }

    /// Replace the entry (or create it) after the quota check; its new
    /// version.
    fn put(&mut self, at: KvKey, value: Vec<u8>) -> Result<u64, KvRefusal> {
        let before = self
            .entry(&at)
            .map(|e| (at.key.len() + e.value.len()) as u64);
        let usage = self.usage(&at.owner);
        let keys = usage.keys + u64::from(before.is_none());
        let bytes = usage.bytes - before.unwrap_or(0) + (at.key.len() + value.len()) as u64;
        if keys > OWNER_KEYS_MAX || bytes > OWNER_BYTES_MAX {
            return Err(KvRefusal::Quota {
                owner: at.owner.to_string(),
                keys,
                bytes,
                keys_max: OWNER_KEYS_MAX,
                bytes_max: OWNER_BYTES_MAX,
            });
        }
        self.writes += 1;
        let version = self.writes;
        self.usage.insert(at.owner.clone(), KvUsage { keys, bytes });
        self.write(at, Some(KvEntry { value, version }));
        Ok(version)
    }

    /// `kv_set`: the entry's new version.
    pub fn set(
        &mut self,
        owner: &Owner,
        bucket: &str,
        key: &[u8],
        value: &[u8],
    ) -> Result<u64, KvRefusal> {
        check_names(bucket, key)?;
        check_value(value)?;
        self.put(
            KvKey {
                owner: owner.clone(),
                bucket: bucket.to_string(),
                key: key.to_vec(),
            },
            value.to_vec(),
        )
    }

    /// `kv_cas`: set only if the key is at `expected` (0: absent); the new
    /// version.
    pub fn cas(
        &mut self,
        owner: &Owner,
        bucket: &str,
        key: &[u8],
        expected: u64,
        value: &[u8],
    ) -> Result<u64, KvRefusal> {
        check_names(bucket, key)?;
        check_value(value)?;
        let current = self.get(owner, bucket, key).map_or(0, |e| e.version);
        if current != expected {
            return Err(KvRefusal::VersionMismatch { expected, current });
        }
        self.set(owner, bucket, key, value)
    }

    /// `kv_increment`: add `delta` to the counter (absent: 0); its new
    /// value.
    pub fn increment(
        &mut self,
        owner: &Owner,
        bucket: &str,
        key: &[u8],
        delta: i64,
    ) -> Result<i64, KvRefusal> {
        check_names(bucket, key)?;
        let now = match self.get(owner, bucket, key) {
            None => 0,
            Some(e) => {
                let bytes: [u8; 8] = e
                    .value
                    .as_slice()
                    .try_into()
                    .map_err(|_| KvRefusal::NotACounter)?;
                i64::from_le_bytes(bytes)
            }
        };
        let next = now.checked_add(delta).ok_or(KvRefusal::Overflow)?;
        self.set(owner, bucket, key, &next.to_le_bytes())?;
        Ok(next)
    }

    /// `kv_delete`: whether the key existed.
    pub fn delete(&mut self, owner: &Owner, bucket: &str, key: &[u8]) -> Result<bool, KvRefusal> {
        check_names(bucket, key)?;
        let at = KvKey {
            owner: owner.clone(),
            bucket: bucket.to_string(),
            key: key.to_vec(),
        };
        let Some(gone) = self.entry(&at) else {
            return Ok(false);
        };
        let usage = self.usage(owner);
        let left = KvUsage {
            keys: usage.keys - 1,
            bytes: usage.bytes - (at.key.len() + gone.value.len()) as u64,
        };
        self.write(at, None);
        if left.keys == 0 {
            self.usage.remove(owner);
        } else {
            self.usage.insert(owner.clone(), left);
        }
        Ok(true)
    }

    /// A batch, all or nothing: on the first refusal the book is as it
    /// was (a persistent map: the copy shares everything and costs what
    /// the batch changes). The count set, or of keys that existed.
    pub fn batch(&mut self, owner: &Owner, bucket: &str, op: &KvBatchOp) -> Result<u64, KvRefusal> {
        op.check()?;
        let mut next = self.clone();
        let mut count = 0u64;
        match op {
            KvBatchOp::Set { entries } => {
                for p in entries {
                    next.set(owner, bucket, &p.key, &p.value)?;
                    count += 1;
                }
            }
            KvBatchOp::Delete { keys } => {
                for p in keys {
                    count += u64::from(next.delete(owner, bucket, &p.key)?);
                }
            }
        }
        *self = next;
        Ok(count)
    }

    /// Check the book's invariants (tests and debug assertions): the usage
    /// table equals a count of the entries, and no version is above the
    /// write counter.
    pub fn check(&self) -> Result<(), String> {
        let mut counted = Counted::default();
        for (k, e) in self.iter() {
            counted.add(&k, &e, self.writes);
        }
        counted.agrees(&self.usage)
    }

    /// Whether the overlay has grown past [`OVERLAY_ENTRIES_MAX`] or
    /// [`OVERLAY_BYTES_MAX`]: then the state machine flushes it.
    pub(crate) fn overlay_full(&self) -> bool {
        self.overlay.len() >= OVERLAY_ENTRIES_MAX || self.overlay_bytes >= OVERLAY_BYTES_MAX
    }

    /// Write the overlay into `db`'s table (which this book's base must have
    /// read: the state machine's own book) and read it back as the base.
    /// The book's content does not change. A disk that fails stops the node.
    /// Whether a durable commit is due ([`kv_disk::sync`]).
    pub(crate) fn flush(&mut self, db: &std::sync::Arc<redb::Database>) -> bool {
        if self.overlay.is_empty() {
            return false;
        }
        self.flushes += 1;
        let base = kv_disk::flush(db, self.base.as_ref(), self.overlay.iter())
            .unwrap_or_else(|e| kv_disk::fatal("flushing", e));
        self.base = Some(base);
        self.overlay = Table::new();
        self.overlay_bytes = 0;
        self.flushes.is_multiple_of(kv_disk::FLUSHES_PER_DURABLE)
    }

    /// Replace `db`'s table with this book's entries (those decoded with it,
    /// from an earlier build's snapshot) and then `more` (those that
    /// followed it in the snapshot file), and read them from there on.
    /// All or nothing: the entries must agree with the book's usage and
    /// counter (as [`KvBook::check`] asks), checked as they stream by.
    pub(crate) fn load<E: From<String>>(
        &mut self,
        db: &std::sync::Arc<redb::Database>,
        more: impl IntoIterator<Item = Result<(KvKey, KvEntry), E>>,
    ) -> Result<Result<(), E>, redb::Error> {
        let decoded: Vec<(KvKey, KvEntry)> = self.iter().collect();
        let counted = std::cell::RefCell::new(Counted::default());
        let all = decoded.into_iter().map(Ok).chain(more).inspect(|entry| {
            if let Ok((k, e)) = entry {
                counted.borrow_mut().add(k, e, self.writes);
            }
        });
        let verify = || counted.borrow().agrees(&self.usage).map_err(E::from);
        let base = match kv_disk::load(db, all, verify)? {
            Ok(base) => base,
            Err(e) => return Ok(Err(e)),
        };
        *self = KvBook {
            overlay: Table::new(),
            overlay_bytes: 0,
            usage: self.usage.clone(),
            writes: self.writes,
            base: Some(base),
            flushes: 0,
            entries_follow: false,
        };
        Ok(Ok(()))
    }

    /// The book without its entries, encoded as "entries follow" (the
    /// snapshot file streams them after the state: [`KvBook::iter`]).
    pub(crate) fn detached(&self) -> KvBook {
        KvBook {
            overlay: Table::new(),
            overlay_bytes: 0,
            usage: self.usage.clone(),
            writes: self.writes,
            base: None,
            flushes: 0,
            entries_follow: true,
        }
    }

    /// Whether this book was decoded without its entries, which follow it.
    pub(crate) fn entries_follow(&self) -> bool {
        self.entries_follow
    }
}

/// A table as a sequence of `(key, value)` pairs: its keys are structs,
/// which JSON (still read and written by tests and earlier snapshots)
/// cannot use as map keys.
pub(crate) mod pairs {
    use crate::state::Table;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<K, V, S>(table: &Table<K, V>, s: S) -> Result<S::Ok, S::Error>
    where
        K: Serialize + Ord + Clone,
        V: Serialize + Clone,
        S: Serializer,
    {
        s.collect_seq(table.iter())
    }

    pub fn deserialize<'de, K, V, D>(d: D) -> Result<Table<K, V>, D::Error>
    where
        K: Deserialize<'de> + Ord + Clone,
        V: Deserialize<'de> + Clone,
        D: Deserializer<'de>,
    {
        let pairs: Vec<(K, V)> = Vec::deserialize(d)?;
        Ok(pairs.into_iter().collect())
    }
}

/// Bytes as CBOR byte strings (and JSON arrays), not arrays of integers.
mod serde_bytes_vec {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        d.deserialize_byte_buf(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use shoal_pki::Role;

    fn owner(id: &str) -> Owner {
        Owner {
            role: Role::Client,
            id: id.into(),
        }
    }

    fn pair(key: &[u8], value: &[u8]) -> KvPair {
        KvPair {
            key: key.to_vec(),
            value: value.to_vec(),
        }
    }

    #[test]
    fn a_batch_applies_whole_or_not_at_all() {
        let a = owner("alice");
        let mut kv = KvBook::default();
        let set = KvBatchOp::Set {
            entries: vec![pair(b"x", b"1"), pair(b"y", b"2"), pair(b"x", b"3")],
        };
        assert_eq!(kv.batch(&a, "b", &set), Ok(3));
        assert_eq!(kv.get(&a, "b", b"x").unwrap().value, b"3", "the last wins");
        // Quota: fill the owner up to 50 bytes short of its bound; then a
        // batch whose second entry would pass it applies nothing.
        let mut i = 0u32;
        loop {
            let room = OWNER_BYTES_MAX - kv.usage(&a).bytes;
            let key = format!("fill{i:04}");
            if room < 50 + key.len() as u64 {
                break;
            }
            let len = (room - 50 - key.len() as u64).min(VALUE_BYTES_MAX as u64) as usize;
            kv.set(&a, "fill", key.as_bytes(), &vec![0u8; len]).unwrap();
            i += 1;
        }
        assert_eq!(OWNER_BYTES_MAX - kv.usage(&a).bytes, 50);
        let before = kv.clone();
        let over = KvBatchOp::Set {
            entries: vec![pair(b"s1", &[1u8; 10]), pair(b"s2", &[2u8; 100])],
        };
        assert!(matches!(
            kv.batch(&a, "b", &over),
            Err(KvRefusal::Quota { .. })
        ));
        assert_eq!(kv, before, "a refused batch changes nothing");
        let bad_key = KvBatchOp::Set {
            entries: vec![pair(b"ok", b"1"), pair(b"", b"2")],
        };
        assert!(matches!(
            kv.batch(&a, "b", &bad_key),
            Err(KvRefusal::BadKey { .. })
        ));
        assert_eq!(kv, before);
        let too_many = KvBatchOp::Delete {
            keys: (0..=BATCH_ENTRIES_MAX as u32)
                .map(|i| pair(&i.to_le_bytes(), b""))
                .collect(),
        };
        assert!(matches!(
            kv.batch(&a, "b", &too_many),
            Err(KvRefusal::BadBatch { .. })
        ));
        let empty = KvBatchOp::Set { entries: vec![] };
        assert!(matches!(
            kv.batch(&a, "b", &empty),
            Err(KvRefusal::BadBatch { .. })
        ));
        let del = KvBatchOp::Delete {
            keys: vec![pair(b"x", b""), pair(b"nope", b""), pair(b"y", b"")],
        };
        assert_eq!(kv.batch(&a, "b", &del), Ok(2));
        assert!(kv.get(&a, "b", b"y").is_none());
        kv.check().unwrap();
    }

    #[test]
    fn buckets_belong_to_their_owner_and_versions_only_grow() {
        let (a, b) = (owner("alice"), owner("bob"));
        let mut kv = KvBook::default();
        let v1 = kv.set(&a, "cfg", b"k", b"1").unwrap();
        let v2 = kv.set(&b, "cfg", b"k", b"2").unwrap();
        assert!(v2 > v1);
        assert_eq!(kv.get(&a, "cfg", b"k").unwrap().value, b"1");
        assert_eq!(kv.get(&b, "cfg", b"k").unwrap().value, b"2");
        // cas: the version, or 0 for absent.
        assert_eq!(
            kv.cas(&a, "cfg", b"k", v2, b"x"),
            Err(KvRefusal::VersionMismatch {
                expected: v2,
                current: v1
            })
        );
        let v3 = kv.cas(&a, "cfg", b"k", v1, b"3").unwrap();
        assert!(v3 > v2);
        assert!(kv.cas(&a, "cfg", b"new", 0, b"n").is_ok());
        assert!(kv.cas(&a, "cfg", b"new", 0, b"n").is_err());
        // Counters.
        assert_eq!(kv.increment(&a, "c", b"n", 5), Ok(5));
        assert_eq!(kv.increment(&a, "c", b"n", -7), Ok(-2));
        assert_eq!(
            kv.increment(&a, "cfg", b"k", 1),
            Err(KvRefusal::NotACounter)
        );
        kv.set(&a, "c", b"max", &i64::MAX.to_le_bytes()).unwrap();
        assert_eq!(kv.increment(&a, "c", b"max", 1), Err(KvRefusal::Overflow));
        // Delete.
        assert_eq!(kv.delete(&a, "cfg", b"k"), Ok(true));
        assert_eq!(kv.delete(&a, "cfg", b"k"), Ok(false));
        assert!(kv.get(&b, "cfg", b"k").is_some());
        kv.check().unwrap();
    }

    #[test]
    fn every_bound_is_its_own_refusal_and_changes_nothing() {
        let a = owner("alice");
        let mut kv = KvBook::default();
        let long_key = vec![b'k'; KEY_BYTES_MAX + 1];
        assert!(matches!(
            kv.set(&a, "b", &long_key, b""),
            Err(KvRefusal::BadKey { .. })
        ));
        assert!(matches!(
            kv.set(&a, "b", b"", b""),
            Err(KvRefusal::BadKey { .. })
        ));
        let big = vec![0u8; VALUE_BYTES_MAX + 1];
        assert!(matches!(
            kv.set(&a, "b", b"k", &big),
            Err(KvRefusal::ValueTooLarge { .. })
        ));
        let long_bucket = "b".repeat(BUCKET_BYTES_MAX + 1);
        assert!(matches!(
            kv.set(&a, &long_bucket, b"k", b""),
            Err(KvRefusal::BadBucket { .. })
        ));
        assert!(matches!(
            kv.set(&a, "", b"k", b""),
            Err(KvRefusal::BadBucket { .. })
        ));
        assert_eq!(kv.usage(&a), KvUsage::default());
        // The byte quota: 64 values of 1 MiB fill it; the next is refused,
        // and replacing one in place is not.
        let mib = vec![7u8; VALUE_BYTES_MAX];
        let mut held = 0u64;
        loop {
            match kv.set(&a, "big", &held.to_le_bytes(), &mib) {
                Ok(_) => held += 1,
                Err(KvRefusal::Quota { .. }) => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert!((60..64).contains(&held), "{held}");
        assert!(kv.set(&a, "big", &0u64.to_le_bytes(), &mib).is_ok());
        // Another owner is not affected.
        assert!(kv.set(&owner("bob"), "big", b"k", &mib).is_ok());
        kv.check().unwrap();
    }

    #[test]
    fn the_book_round_trips_through_the_stores_encodings() {
        let a = owner("alice");
        let mut kv = KvBook::default();
        kv.set(&a, "b", &[0, 255, 7], &[1, 2, 3]).unwrap();
        kv.increment(&a, "c", b"n", 41).unwrap();
        let json: KvBook = serde_json::from_slice(&serde_json::to_vec(&kv).unwrap()).unwrap();
        assert_eq!(json, kv);
        let mut cbor = Vec::new();
        ciborium::into_writer(&kv, &mut cbor).unwrap();
        let back: KvBook = ciborium::from_reader(cbor.as_slice()).unwrap();
        assert_eq!(back, kv);
        // Keys and values are CBOR byte strings, not arrays of integers.
        let mut value = Vec::new();
        ciborium::into_writer(&kv.get(&a, "b", &[0, 255, 7]).unwrap(), &mut value).unwrap();
        assert!(value.windows(4).any(|w| w == [0x43, 1, 2, 3]), "{value:?}");
    }

    #[test]
    fn list_pages_through_a_prefix_in_order() {
        let a = owner("alice");
        let mut kv = KvBook::default();
        for i in 0..2500u32 {
            kv.set(&a, "b", format!("user/{i:05}").as_bytes(), b"")
                .unwrap();
        }
        kv.set(&a, "b", b"zzz", b"").unwrap();
        kv.set(&a, "other", b"user/x", b"").unwrap();
        kv.set(&owner("bob"), "b", b"user/y", b"").unwrap();
        let mut all = Vec::new();
        let mut cursor: Option<Vec<u8>> = None;
        loop {
            let page = kv.list(&a, "b", b"user/", cursor.as_deref(), 1000);
            all.extend(page.iter().cloned());
            if page.len() < 1000 {
                break;
            }
            cursor = page.last().cloned();
        }
        assert_eq!(all.len(), 2500);
        assert!(all.windows(2).all(|w| w[0] < w[1]));
        assert!(all.iter().all(|k| k.starts_with(b"user/")));
        assert!(kv.list(&a, "b", b"", None, usize::MAX).len() <= LIST_KEYS_MAX);
    }

    /// `SHOAL_KV_SEED`, or `default`, and a generator seeded with it.
    fn seeded(default: u64) -> (u64, rand::rngs::StdRng) {
        let seed: u64 = std::env::var("SHOAL_KV_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default);
        (seed, rand::rngs::StdRng::seed_from_u64(seed))
    }

    /// Random sequences of every command keep the invariants (usage equals
    /// the entries, versions within the counter). `SHOAL_KV_SEED` repeats a
    /// failure.
    #[test]
    fn the_book_keeps_its_invariants_after_any_sequence() {
        let (seed, mut rng) = seeded(0x5eed_4b56);
        let owners = [owner("a"), owner("b"), owner("c")];
        let mut kv = KvBook::default();
        let mut last_version = 0;
        for step in 0..20_000 {
            let o = &owners[rng.gen_range(0..owners.len())];
            let bucket = ["x", "y"][rng.gen_range(0..2)];
            let key = [rng.gen_range(b'a'..=b'h')];
            let value = vec![0u8; rng.gen_range(0..32)];
            let version = match rng.gen_range(0..4) {
                0 => kv.set(o, bucket, &key, &value).ok(),
                1 => {
                    let expected = kv.get(o, bucket, &key).map_or(0, |e| e.version);
                    let expected = if rng.gen_bool(0.5) {
                        expected
                    } else {
                        expected + 1
                    };
                    kv.cas(o, bucket, &key, expected, &value).ok()
                }
                2 => kv
                    .increment(o, bucket, &key, rng.gen_range(-5..5))
                    .ok()
                    .map(|_| kv.get(o, bucket, &key).map_or(0, |e| e.version)),
                _ => {
                    let _ = kv.delete(o, bucket, &key);
                    None
                }
            };
            if let Some(v) = version {
                assert!(
                    v > last_version,
                    "seed {seed} step {step}: version {v} after {last_version}"
                );
                last_version = v;
            }
            if let Err(e) = kv.check() {
                panic!("seed {seed} step {step}: {e}");
            }
        }
    }

    /// A book flushed to disk (at random points and whenever its overlay
    /// is full), and reloaded as a snapshot would be, reads and lists as
    /// the same book kept in memory; a clone taken before a flush reads
    /// what it was cloned with after later writes and flushes.
    #[test]
    fn a_book_on_disk_reads_and_lists_as_one_in_memory() {
        let (seed, mut rng) = seeded(0xd15c_4b56);
        let owners = [owner("a"), owner("b")];
        let mut db = kv_disk::open_in_memory().unwrap();
        let (mut mem, mut disk) = (KvBook::default(), KvBook::default());
        disk.load::<String>(&db, std::iter::empty())
            .unwrap()
            .unwrap();
        let mut kept: Option<(KvBook, KvBook)> = None;
        let (mut flushes, mut loads) = (0, 0);
        for step in 0..30_000 {
            let o = &owners[rng.gen_range(0..owners.len())];
            let bucket = ["x", "y"][rng.gen_range(0..2)];
            let key = [rng.gen_range(b'a'..=b'd'), rng.gen_range(b'a'..=b'z')];
            let value = vec![step as u8; rng.gen_range(0..16)];
            match rng.gen_range(0..5) {
                0 | 1 => {
                    assert_eq!(
                        mem.set(o, bucket, &key, &value),
                        disk.set(o, bucket, &key, &value)
                    )
                }
                2 => assert_eq!(
                    mem.increment(o, bucket, &key, 3),
                    disk.increment(o, bucket, &key, 3)
                ),
                3 => {
                    let keys: Vec<KvPair> = (0..rng.gen_range(1..4))
                        .map(|i| KvPair {
                            key: vec![key[0], key[1].wrapping_add(i)],
                            value: vec![],
                        })
                        .collect();
                    let op = KvBatchOp::Delete { keys };
                    assert_eq!(mem.batch(o, bucket, &op), disk.batch(o, bucket, &op));
                }
                _ => assert_eq!(mem.delete(o, bucket, &key), disk.delete(o, bucket, &key)),
            }
            assert_eq!(
                mem.get(o, bucket, &key),
                disk.get(o, bucket, &key),
                "seed {seed} step {step}"
            );
            if disk.overlay_full() || rng.gen_range(0..40) == 0 {
                disk.flush(&db);
                flushes += 1;
                assert!(disk.overlay.is_empty());
            }
            if step % 600 == 0 {
                let prefix = [rng.gen_range(b'a'..=b'd')];
                let cursor = [prefix[0], rng.gen_range(b'a'..=b'z')];
                for c in [None, Some(&cursor[..])] {
                    assert_eq!(
                        mem.list(o, bucket, &prefix, c, 7),
                        disk.list(o, bucket, &prefix, c, 7),
                        "seed {seed} step {step}"
                    );
                    assert_eq!(
                        mem.list(o, bucket, b"", c, LIST_KEYS_MAX),
                        disk.list(o, bucket, b"", c, LIST_KEYS_MAX)
                    );
                }
                assert!(mem == disk, "seed {seed} step {step}");
                disk.check().unwrap();
                if let Some((m, d)) = kept.take() {
                    assert!(m == d, "seed {seed} step {step}: a clone changed");
                }
                kept = Some((mem.clone(), disk.clone()));
            }
            if step % 7_000 == 6_999 {
                // As a snapshot is read: the counters, then the entries
                // streamed into a store of their own.
                let fresh = kv_disk::open_in_memory().unwrap();
                let mut again = disk.detached();
                again
                    .load::<String>(&fresh, disk.iter().map(Ok))
                    .unwrap()
                    .unwrap();
                assert!(again == mem, "seed {seed} step {step}: reloaded");
                (disk, db) = (again, fresh);
                loads += 1;
            }
        }
        assert!(
            flushes > 100 && loads == 4,
            "{flushes} flushes, {loads} loads"
        );
        assert!(mem.usage.len() == 2 && disk.base.is_some());
    }

    /// Entries that disagree with the book's usage or counter are refused
    /// and leave the store as it was.
    #[test]
    fn a_load_that_disagrees_with_the_book_changes_nothing() {
        let a = owner("a");
        let db = kv_disk::open_in_memory().unwrap();
        let mut kv = KvBook::default();
        kv.set(&a, "b", b"k", b"v").unwrap();
        kv.load::<String>(&db, std::iter::empty()).unwrap().unwrap();
        assert_eq!(kv.get(&a, "b", b"k").unwrap().value, b"v");
        let entry = |v: u64| {
            let k = KvKey {
                owner: a.clone(),
                bucket: "b".into(),
                key: b"other".to_vec(),
            };
            Ok((
                k,
                KvEntry {
                    value: b"v".to_vec(),
                    version: v,
                },
            ))
        };
        for more in [
            vec![entry(1)],                     // usage: 2 keys, not 1
            vec![entry(9)],                     // version above the counter
            vec![Err("cut short".to_string())], // a bad file
        ] {
            let mut fresh = kv.detached();
            assert!(fresh.load::<String>(&db, more).unwrap().is_err());
        }
        // The store still holds what the first load put there.
        assert_eq!(kv.get(&a, "b", b"k").unwrap().value, b"v");
        let mut same = kv.detached();
        same.load::<String>(&db, kv.iter().map(Ok))
            .unwrap()
            .unwrap();
        assert!(same == kv);
    }
}
