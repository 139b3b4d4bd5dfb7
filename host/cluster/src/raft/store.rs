//! The node's durable Raft store: the log in a write-ahead file
//! ([`super::wal`]), and one redb file holding the vote, the committed
//! pointer and the purge point.
//!
//! Log writes are fsynced by the WAL and vote and purge-point writes commit
//! with `Durability::Immediate` (fsync before returning), as Raft's safety
//! needs. The applied state itself
//! is not stored: it is "snapshot + committed log", rebuilt on start (see
//! the state machine). Values are binary ([`super::codec`]); the current
//! snapshot lives in a file of its own beside the database, written and
//! read as a stream (see the state machine).

use std::path::Path;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;

/// Where earlier builds kept the log entries (by index, each encoded by
/// [`super::codec`]): moved into the WAL on open.
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

/// One change to the log or its pointers, applied by [`Store::write`].
#[derive(Debug)]
pub(crate) enum LogOp {
    /// Put (or overwrite) the entry at `index` (encoded by [`super::codec`]).
    Insert { index: u64, bytes: Vec<u8> },
    /// Delete the entries with index >= `index`.
    TruncateFrom { index: u64 },
    /// Delete the entries with index <= `index` and record `last_purged`
    /// (an encoded log id) with them.
    PurgeUpto { index: u64, last_purged: Vec<u8> },
    /// Put one META value (already encoded).
    Meta { key: &'static str, bytes: Vec<u8> },
}

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
    /// The log's writer thread has stopped (Raft is shutting down).
    #[error("raft store: the log writer has stopped")]
    WriterStopped,
    /// The log's writer thread could not be started.
    #[error("raft store: starting the log writer thread: {0}")]
    Thread(#[source] std::io::Error),
    /// A grouped write failed (its error was logged by the writer).
    #[error("raft store: a log write failed (see the log for the cause)")]
    WriteFailed,
    /// The write-ahead log failed.
    #[error(transparent)]
    Wal(#[from] super::wal::WalError),
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

impl StoreError {
    /// A value under `key` that did not encode or decode.
    pub(crate) fn codec(key: &str, source: super::codec::CodecError) -> StoreError {
        StoreError::Codec {
            key: key.to_string(),
            source,
        }
    }
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
    wal: super::wal::Wal,
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
        let wal = super::wal::Wal::open(dir)?;
        migrate_log_to_wal(&db_file, &wal)?;
        let last_purged: Option<Option<openraft::LogId<crate::state::NodeId>>> = {
            let txn = db_file.begin_read().map_err(db)?;
            let table = txn.open_table(META).map_err(db)?;
            match table.get(KEY_LAST_PURGED).map_err(db)? {
                Some(raw) => {
                    Some(super::codec::decode(raw.value()).map_err(codec(KEY_LAST_PURGED))?)
                }
                None => None,
            }
        };
        if let Some(Some(purged)) = last_purged {
            // A purge whose segment deletion a crash interrupted.
            wal.forget_upto(purged.index);
        }
        let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
        Ok((
            Store {
                db: db_file,
                wal,
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

    /// Apply `ops` in order: the log's in one WAL append (one fsync for
    /// all of them), then the META values in one redb transaction, durable
    /// unless it holds only the committed pointer (which openraft treats as
    /// optional; a purge point is durable before its segments go). This is
    /// how the log writer groups the writes that queued while the previous
    /// fsync ran.
    pub(crate) fn write(&self, ops: &[LogOp]) -> Result<(), StoreError> {
        let mut wal_ops: Vec<super::wal::WalOp<'_>> = Vec::new();
        let mut meta_ops: Vec<(&'static str, &[u8])> = Vec::new();
        let mut purge_upto: Option<u64> = None;
        for op in ops {
            match op {
                LogOp::Insert { index, bytes } => wal_ops.push(super::wal::WalOp::Entry {
                    index: *index,
                    bytes,
                }),
                LogOp::TruncateFrom { index } => {
                    wal_ops.push(super::wal::WalOp::TruncateFrom { index: *index })
                }
                LogOp::PurgeUpto { index, last_purged } => {
                    meta_ops.push((KEY_LAST_PURGED, last_purged));
                    purge_upto = Some(purge_upto.map_or(*index, |p: u64| p.max(*index)));
                }
                LogOp::Meta { key, bytes } => meta_ops.push((key, bytes)),
            }
        }
        self.wal.write(&wal_ops)?;
        if !meta_ops.is_empty() {
            let mut txn = self.db.begin_write().map_err(db)?;
            let durable = meta_ops.iter().any(|(key, _)| *key != KEY_COMMITTED);
            if !durable {
                txn.set_durability(Durability::None).map_err(db)?;
            }
            {
                let mut meta = txn.open_table(META).map_err(db)?;
                for (key, bytes) in meta_ops {
                    meta.insert(key, bytes).map_err(db)?;
                }
            }
            txn.commit().map_err(db)?;
        }
        if let Some(upto) = purge_upto {
            self.wal.purge_upto(upto)?;
        }
        Ok(())
    }

    /// Log entries with `start <= index < end` (`end = None`: to the last),
    /// decoded, at most `count_max` of them.
    pub(crate) fn range<T: DeserializeOwned>(
        &self,
        start: u64,
        end: Option<u64>,
        count_max: usize,
    ) -> Result<Vec<T>, StoreError> {
        if end.is_some_and(|end| end <= start) {
            return Ok(Vec::new());
        }
        self.wal
            .range(start, end, count_max)?
            .into_iter()
            .map(|(_, bytes)| super::codec::decode(&bytes).map_err(codec("raft_log")))
            .collect()
    }

    /// The last log entry, decoded.
    pub(crate) fn last<T: DeserializeOwned>(&self) -> Result<Option<T>, StoreError> {
        match self.wal.last()? {
            None => Ok(None),
            Some((_, bytes)) => super::codec::decode(&bytes)
                .map(Some)
                .map_err(codec("raft_log")),
        }
    }
}

/// Move the entries an earlier build kept in redb's `raft_log` table into
/// an empty WAL (durably), then empty the table.
fn migrate_log_to_wal(db_file: &Database, wal: &super::wal::Wal) -> Result<(), StoreError> {
    let old: Vec<(u64, Vec<u8>)> = {
        let txn = db_file.begin_read().map_err(db)?;
        let table = txn.open_table(LOG).map_err(db)?;
        let mut old = Vec::new();
        for item in table.iter().map_err(db)? {
            let (k, v) = item.map_err(db)?;
            old.push((k.value(), v.value().to_vec()));
        }
        old
    };
    if old.is_empty() {
        return Ok(());
    }
    if wal.is_empty() {
        let ops: Vec<super::wal::WalOp<'_>> = old
            .iter()
            .map(|(index, bytes)| super::wal::WalOp::Entry {
                index: *index,
                bytes,
            })
            .collect();
        wal.write(&ops)?;
    }
    let txn = db_file.begin_write().map_err(db)?;
    txn.open_table(LOG)
        .map_err(db)?
        .retain(|_, _| false)
        .map_err(db)?;
    txn.commit().map_err(db)
}
