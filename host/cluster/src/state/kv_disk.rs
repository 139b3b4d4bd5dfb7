//! Where the key-value book ([`super::kv`]) keeps its entries: a redb file
//! of the node's own (`kv.redb` beside the Raft store), in tables of its
//! own, binary-encoded.
//!
//! The book is an overlay of recent writes (a persistent map, cloned with
//! the state) over a **base**: a read-only view of the `kv_entries` table
//! at one commit. redb's read transactions are snapshots, so every clone
//! of the state (a reader's, the snapshot builder's) keeps reading exactly
//! the entries it was cloned with while the state machine goes on.
//!
//! - **Flush** ([`flush`]): the state machine writes its book's overlay into
//!   the table, then reads it back as the new base with an empty overlay.
//!   The logical content does not change, so applying stays deterministic;
//!   only where each entry lives does.
//! - **Load** ([`load`]): on open and on installing a snapshot, the table is
//!   replaced by the snapshot's entries (streamed in, never held whole) and
//!   the load's *generation* goes up. A base remembers its generation and a
//!   flush checks it: a book never writes its changes over entries that are
//!   not the ones it read.
//! - **Durability**: the table needs none of its own. What the node has
//!   applied is "snapshot + committed log", rebuilt on start; so flushes
//!   commit without fsync ([`Durability::None`]). After every
//!   [`FLUSHES_PER_DURABLE`]th flush the state machine makes one empty
//!   durable commit ([`sync`]) off its apply path, only because redb reuses
//!   the pages that non-durable commits freed after a durable one.
//! - A failing disk is fatal ([`fatal`]): a state machine that cannot read
//!   or write what it applied must not answer as if it had.

use std::sync::Arc;

use redb::{Database, Durability, ReadOnlyTable, ReadableDatabase, ReadableTable, TableDefinition};

use super::kv::{KvEntry, KvKey};
use shoal_pki::{Owner, Role};

/// Entries: [`encode_key`] → [`encode_entry`].
const ENTRIES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv_entries");
/// Single values by name.
const META: TableDefinition<&str, u64> = TableDefinition::new("kv_meta");
/// How many loads the table has seen (see the module docs).
const KEY_GENERATION: &str = "generation";

/// One flush in this many commits durably (see the module docs).
pub const FLUSHES_PER_DURABLE: u64 = 16;

/// The read-only view of the table at one commit.
pub(crate) type BaseTable = ReadOnlyTable<&'static [u8], &'static [u8]>;

/// A book's flushed entries: the table at one commit, and which load it
/// belongs to.
#[derive(Clone)]
pub(crate) struct Base {
    pub(crate) table: Arc<BaseTable>,
    pub(crate) generation: u64,
    /// Kept open while a base reads it (redb refuses reads once it closes),
    /// for as long as any clone of any state holds one.
    _db: Arc<Database>,
}

impl std::fmt::Debug for Base {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Base")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// Stop the node: its key-value store cannot be read or written. Applying
/// must be the same on every node, so there is no answer to give instead.
pub(crate) fn fatal(what: &str, e: impl std::fmt::Display) -> ! {
    tracing::error!("key-value store: {what}: {e}; stopping the node");
    eprintln!("shoal: key-value store: {what}: {e}; stopping the node");
    std::process::abort()
}

/// Open (create) the key-value file at `path`, emptied: what it held is
/// rebuilt from the snapshot ([`load`]) on every open. Only the node may
/// read it (0600, like the rest of the Raft store): it holds every owner's
/// entries.
pub fn open(path: &std::path::Path) -> Result<Arc<Database>, redb::Error> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(redb::Error::Io(e)),
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(redb::Error::Io)?;
    let backend = redb::backends::FileBackend::new(file)?;
    Ok(Arc::new(Database::builder().create_with_backend(backend)?))
}

/// A fresh in-memory store (tests).
#[cfg(test)]
pub fn open_in_memory() -> Result<Arc<Database>, redb::Error> {
    Ok(Arc::new(Database::builder().create_with_backend(
        redb::backends::InMemoryBackend::new(),
    )?))
}

fn role_byte(role: Role) -> u8 {
    match role {
        Role::Node => 0,
        Role::Client => 1,
        Role::Admin => 2,
    }
}

fn push_text(out: &mut Vec<u8>, text: &str) {
    // Owner ids and bucket names are far below 4 GiB (certificates, the
    // ABI's bucket bound).
    out.extend_from_slice(&(text.len() as u32).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
}

/// The prefix every key of `owner`'s `bucket` starts with: the owner's role,
/// then its id and the bucket name, each length-prefixed, so one bucket's
/// keys are one contiguous range in key byte order.
pub(crate) fn bucket_prefix(owner: &Owner, bucket: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + owner.id.len() + bucket.len());
    out.push(role_byte(owner.role));
    push_text(&mut out, &owner.id);
    push_text(&mut out, bucket);
    out
}

/// An entry's key in the table.
pub(crate) fn encode_key(k: &KvKey) -> Vec<u8> {
    let mut out = bucket_prefix(&k.owner, &k.bucket);
    out.extend_from_slice(&k.key);
    out
}

fn take_text<'a>(bytes: &mut &'a [u8]) -> Option<&'a str> {
    let (len, rest) = bytes.split_first_chunk::<4>()?;
    let len = u32::from_be_bytes(*len) as usize;
    if rest.len() < len {
        return None;
    }
    let (text, rest) = rest.split_at(len);
    *bytes = rest;
    std::str::from_utf8(text).ok()
}

/// The key [`encode_key`] wrote (`None`: not one of its keys).
pub(crate) fn decode_key(mut bytes: &[u8]) -> Option<KvKey> {
    let (&role, rest) = bytes.split_first()?;
    bytes = rest;
    let role = match role {
        0 => Role::Node,
        1 => Role::Client,
        2 => Role::Admin,
        _ => return None,
    };
    let id = take_text(&mut bytes)?.to_string();
    let bucket = take_text(&mut bytes)?.to_string();
    Some(KvKey {
        owner: Owner { role, id },
        bucket,
        key: bytes.to_vec(),
    })
}

/// An entry in the table: its version (8 bytes, little-endian), then its
/// value.
pub(crate) fn encode_entry(e: &KvEntry) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + e.value.len());
    out.extend_from_slice(&e.version.to_le_bytes());
    out.extend_from_slice(&e.value);
    out
}

/// The entry [`encode_entry`] wrote (`None`: too short).
pub(crate) fn decode_entry(bytes: &[u8]) -> Option<KvEntry> {
    let (version, value) = bytes.split_first_chunk::<8>()?;
    Some(KvEntry {
        version: u64::from_le_bytes(*version),
        value: value.to_vec(),
    })
}

/// The table's generation as `txn` sees it (0: never loaded).
fn generation(txn: &redb::WriteTransaction) -> Result<u64, redb::Error> {
    Ok(txn
        .open_table(META)?
        .get(KEY_GENERATION)?
        .map_or(0, |g| g.value()))
}

/// The table as last committed, as a base.
fn read_base(db: &Arc<Database>) -> Result<Base, redb::Error> {
    let txn = db.begin_read()?;
    let generation = txn
        .open_table(META)?
        .get(KEY_GENERATION)?
        .map_or(0, |g| g.value());
    let table = txn.open_table(ENTRIES)?;
    Ok(Base {
        table: Arc::new(table),
        generation,
        _db: db.clone(),
    })
}

/// Replace the table's entries with `entries` (a new generation) and
/// return the base that reads them. All or nothing: an `Err` from the
/// source, or from `verify` (called after the last entry, before the
/// commit), leaves the table as it was.
pub(crate) fn load<E>(
    db: &Arc<Database>,
    entries: impl IntoIterator<Item = Result<(KvKey, KvEntry), E>>,
    verify: impl FnOnce() -> Result<(), E>,
) -> Result<Result<Base, E>, redb::Error> {
    let txn = db.begin_write()?;
    {
        let generation = generation(&txn)?;
        txn.delete_table(ENTRIES)?;
        let mut table = txn.open_table(ENTRIES)?;
        for entry in entries {
            let (k, e) = match entry {
                Ok(kv) => kv,
                Err(e) => {
                    drop(table);
                    txn.abort()?;
                    return Ok(Err(e));
                }
            };
            table.insert(encode_key(&k).as_slice(), encode_entry(&e).as_slice())?;
        }
        drop(table);
        if let Err(e) = verify() {
            txn.abort()?;
            return Ok(Err(e));
        }
        txn.open_table(META)?
            .insert(KEY_GENERATION, generation.wrapping_add(1))?;
    }
    txn.commit()?;
    Ok(Ok(read_base(db)?))
}

/// Write `changes` (`None`: deleted) over the table, which must still be
/// at `base`'s generation, without fsync, and return the new base.
pub(crate) fn flush<'a>(
    db: &Arc<Database>,
    base: Option<&Base>,
    changes: impl IntoIterator<Item = (&'a KvKey, &'a Option<KvEntry>)>,
) -> Result<Base, redb::Error> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::None)
        .map_err(|e| redb::Error::Corrupted(e.to_string()))?;
    {
        let generation = generation(&txn)?;
        let expected = base.map_or(0, |b| b.generation);
        if generation != expected {
            fatal(
                "flush",
                format!("the table is at load {generation}, the book read load {expected}"),
            );
        }
        let mut table = txn.open_table(ENTRIES)?;
        for (k, e) in changes {
            let key = encode_key(k);
            match e {
                Some(e) => {
                    table.insert(key.as_slice(), encode_entry(e).as_slice())?;
                }
                None => {
                    table.remove(key.as_slice())?;
                }
            }
        }
    }
    txn.commit()?;
    read_base(db)
}

/// Make the non-durable commits so far durable (an empty durable commit),
/// so that redb may reuse the pages they freed. A failing disk stops the
/// node.
pub fn sync(db: &Database) {
    let done = db
        .begin_write()
        .map_err(redb::Error::from)
        .and_then(|txn| txn.commit().map_err(redb::Error::from));
    if let Err(e) = done {
        fatal("syncing", e);
    }
}

/// Every entry of `base` (in table order).
pub(crate) fn entries(base: &Base) -> impl Iterator<Item = (KvKey, KvEntry)> + '_ {
    let range = match base.table.iter() {
        Ok(r) => r,
        Err(e) => fatal("reading the entries", e),
    };
    range.map(|item| {
        let (k, v) = match item {
            Ok(kv) => kv,
            Err(e) => fatal("reading the entries", e),
        };
        decoded(k.value(), v.value())
    })
}

fn decoded(k: &[u8], v: &[u8]) -> (KvKey, KvEntry) {
    match (decode_key(k), decode_entry(v)) {
        (Some(k), Some(e)) => (k, e),
        _ => fatal(
            "decoding an entry",
            "a key or entry this node did not write",
        ),
    }
}

/// The entry at `key` in `base`.
pub(crate) fn get(base: &Base, key: &KvKey) -> Option<KvEntry> {
    match base.table.get(encode_key(key).as_slice()) {
        Ok(found) => found.map(|v| match decode_entry(v.value()) {
            Some(e) => e,
            None => fatal("decoding an entry", "too short"),
        }),
        Err(e) => fatal("reading an entry", e),
    }
}

/// The keys (without their bucket prefix) and entries of `owner`'s
/// `bucket` from `from` on, in byte order.
pub(crate) fn bucket_from<'a>(
    base: &'a Base,
    owner: &Owner,
    bucket: &str,
    from: &[u8],
) -> impl Iterator<Item = (Vec<u8>, KvEntry)> + 'a {
    let prefix = bucket_prefix(owner, bucket);
    let mut start = prefix.clone();
    start.extend_from_slice(from);
    let range = match base.table.range::<&[u8]>(start.as_slice()..) {
        Ok(r) => r,
        Err(e) => fatal("reading a bucket", e),
    };
    range
        .map(|item| match item {
            Ok(kv) => kv,
            Err(e) => fatal("reading a bucket", e),
        })
        .take_while(move |(k, _)| k.value().starts_with(&prefix))
        .map(|(k, v)| {
            let (key, entry) = decoded(k.value(), v.value());
            (key.key, entry)
        })
}
