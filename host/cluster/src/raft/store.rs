//! The node's durable Raft store: one redb file holding the log, the vote,
//! the committed pointer, the applied state machine and the current snapshot.
//!
//! Log, vote and snapshot writes commit with `Durability::Immediate` (fsync
//! before returning), which Raft's safety needs. The applied state itself
//! is not stored: it is "snapshot + committed log", rebuilt on start (see
//! the state machine). Values are binary ([`super::codec`]); the current
//! snapshot lives in a file of its own beside the database, written and
//! read as a stream (see the state machine).

use std::path::Path;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Log entries by index, each encoded by [`super::codec`].
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
/// Single values by name, each encoded by [`super::codec`] (see the
/// `KEY_*` constants).
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");

/// The vote (term + candidate) this node last granted or holds.
pub(crate) const KEY_VOTE: &str = "vote";
/// The last log id known committed.
pub(crate) const KEY_COMMITTED: &str = "committed";
/// The last log id removed from the log by purging.
pub(crate) const KEY_LAST_PURGED: &str = "last_purged";
/// Where stores of older builds kept a copy of the applied state (deleted
/// on open: the snapshot and the log supersede it).
pub(crate) const KEY_STATE_MACHINE: &str = "state_machine";
/// Where earlier builds kept the current snapshot (its metadata and its
/// bytes as one JSON value); read once, then replaced by the snapshot file.
pub(crate) const KEY_SNAPSHOT: &str = "snapshot";

/// File name of the store inside the node's Raft directory.
pub(crate) const FILE_NAME: &str = "raft.redb";

/// A storage failure: the database or an undecodable stored value.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// redb failed (I/O, corruption, lock held by another process...).
    #[error("raft store: {0}")]
    Db(#[from] redb::Error),
    /// The store's directory could not be created.
    #[error("raft store directory {path}: {source}")]
    Dir {
        /// The directory.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A stored value did not decode (or a value did not encode).
    #[error("raft store: bad stored value under {key:?}: {source}")]
    Codec {
        /// Which key or table.
        key: String,
        /// What went wrong.
        #[source]
        source: super::codec::CodecError,
    },
    /// The snapshot file could not be written or read.
    #[error("raft store: snapshot file {path}: {source}")]
    SnapshotFile {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

fn codec(key: &str) -> impl FnOnce(super::codec::CodecError) -> StoreError + '_ {
    move |source| StoreError::Codec {
        key: key.to_string(),
        source,
    }
}

fn db<E: Into<redb::Error>>(e: E) -> StoreError {
    StoreError::Db(e.into())
}

/// The opened redb database (shared by the log store and state machine).
#[derive(Debug)]
pub(crate) struct Store {
    db: Database,
    /// The directory of the database (and of the snapshot file).
    dir: std::path::PathBuf,
    /// Dropped after `db` (fields drop in order), so its receiver learns
    /// when the database file is really closed and may be reopened.
    _closed: tokio::sync::oneshot::Sender<()>,
}

impl Store {
    /// Open or create `dir/raft.redb` (creating `dir`) and make sure both
    /// tables exist.
    /// Also returns a receiver that completes once the store is dropped and
    /// its file closed.
    pub(crate) fn open(
        dir: &Path,
    ) -> Result<(Store, tokio::sync::oneshot::Receiver<()>), StoreError> {
        let dir_err = |source| StoreError::Dir {
            path: dir.to_path_buf(),
            source,
        };
        {
            use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(dir_err)?;
            // The store holds tokens, grants and the cluster's membership:
            // the node's alone (also when an older build made it 0644).
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(dir_err)?;
            let path = dir.join(FILE_NAME);
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)
                .map_err(dir_err)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(dir_err)?;
        }
        let db_file = Database::create(dir.join(FILE_NAME)).map_err(db)?;
        let txn = db_file.begin_write().map_err(db)?;
        {
            txn.open_table(LOG).map_err(db)?;
            txn.open_table(META).map_err(db)?;
        }
        txn.commit().map_err(db)?;
        let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
        Ok((
            Store {
                db: db_file,
                dir: dir.to_path_buf(),
                _closed: closed_tx,
            },
            closed_rx,
        ))
    }

    /// Read and decode one META value.
    pub(crate) fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        let txn = self.db.begin_read().map_err(db)?;
        let table = txn.open_table(META).map_err(db)?;
        let Some(raw) = table.get(key).map_err(db)? else {
            return Ok(None);
        };
        super::codec::decode(raw.value())
            .map(Some)
            .map_err(codec(key))
    }

    /// The directory of the store (the snapshot file lives there).
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Encode and write one META value; `durable` selects an fsync commit.
    pub(crate) fn put<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        durable: bool,
    ) -> Result<(), StoreError> {
        let bytes = super::codec::encode(value).map_err(codec(key))?;
        let mut txn = self.db.begin_write().map_err(db)?;
        if !durable {
            txn.set_durability(Durability::None).map_err(db)?;
        }
        {
            let mut table = txn.open_table(META).map_err(db)?;
            table.insert(key, bytes.as_slice()).map_err(db)?;
        }
        txn.commit().map_err(db)
    }

    /// Durably delete one META value (absent is fine).
    pub(crate) fn delete(&self, key: &str) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db)?;
        let removed = txn
            .open_table(META)
            .map_err(db)?
            .remove(key)
            .map_err(db)?
            .is_some();
        if removed {
            txn.commit().map_err(db)
        } else {
            txn.abort().map_err(db)
        }
    }

    /// Durably append (or overwrite) log entries, given as `(index, bytes)`
    /// (encoded by [`super::codec`]).
    pub(crate) fn append(&self, entries: &[(u64, Vec<u8>)]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db)?;
        {
            let mut table = txn.open_table(LOG).map_err(db)?;
            for (index, bytes) in entries {
                table.insert(*index, bytes.as_slice()).map_err(db)?;
            }
        }
        txn.commit().map_err(db)
    }

    /// Durably delete log entries with index >= `from`.
    pub(crate) fn truncate_from(&self, from: u64) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db)?;
        {
            let mut table = txn.open_table(LOG).map_err(db)?;
            table.retain_in(from.., |_, _| false).map_err(db)?;
        }
        txn.commit().map_err(db)
    }

    /// Durably delete log entries with index <= `upto` and record
    /// `last_purged` (encoded) in the same transaction.
    pub(crate) fn purge_upto(&self, upto: u64, last_purged: &[u8]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db)?;
        {
            let mut table = txn.open_table(LOG).map_err(db)?;
            table.retain_in(..=upto, |_, _| false).map_err(db)?;
            let mut meta = txn.open_table(META).map_err(db)?;
            meta.insert(KEY_LAST_PURGED, last_purged).map_err(db)?;
        }
        txn.commit().map_err(db)
    }

    /// Log entries with `start <= index < end` (`end = None`: to the last),
    /// decoded, at most `count_max` of them.
    pub(crate) fn range<T: DeserializeOwned>(
        &self,
        start: u64,
        end: Option<u64>,
        count_max: usize,
    ) -> Result<Vec<T>, StoreError> {
        let txn = self.db.begin_read().map_err(db)?;
        let table = txn.open_table(LOG).map_err(db)?;
        let iter = match end {
            Some(end) if end <= start => return Ok(Vec::new()),
            Some(end) => table.range(start..end).map_err(db)?,
            None => table.range(start..).map_err(db)?,
        };
        let mut out = Vec::new();
        for item in iter.take(count_max) {
            let (_, value) = item.map_err(db)?;
            out.push(super::codec::decode(value.value()).map_err(codec("raft_log"))?);
        }
        Ok(out)
    }

    /// The last log entry, decoded.
    pub(crate) fn last<T: DeserializeOwned>(&self) -> Result<Option<T>, StoreError> {
        let txn = self.db.begin_read().map_err(db)?;
        let table = txn.open_table(LOG).map_err(db)?;
        let Some((_, value)) = table.last().map_err(db)? else {
            return Ok(None);
        };
        super::codec::decode(value.value())
            .map(Some)
            .map_err(codec("raft_log"))
    }
}
