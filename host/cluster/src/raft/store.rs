//! The node's durable Raft store: a redb file holding the vote and the
//! purge point, the log in a write-ahead log of its own beside it
//! ([`super::wal`], in `log/`), the committed pointer in a small file
//! there, and the current snapshot in a file of its own.
//!
//! Vote, purge point, log and snapshot writes are synced before they
//! return, which Raft's safety needs. The applied state itself is not
//! stored: it is "snapshot + committed log", rebuilt on start (see the
//! state machine). Values are binary ([`super::codec`]). Stores of
//! earlier builds kept the log in redb (`raft_log`): it moves to the
//! write-ahead log when such a store is opened.

use std::path::Path;

use redb::{Database, Durability, ReadableDatabase, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Where earlier builds kept the log entries by index (each encoded by
/// [`super::codec`]); emptied into the write-ahead log on open.
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
/// Single values by name, each encoded by [`super::codec`] (see the
/// `KEY_*` constants).
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");

/// The vote (term + candidate) this node last granted or holds.
pub(crate) const KEY_VOTE: &str = "vote";
/// Where earlier builds kept the last log id known committed (now the
/// [`COMMITTED_FILE`]; read when that file is missing).
pub(crate) const KEY_COMMITTED: &str = "committed";
/// The committed pointer's file in the log directory: written in place,
/// never synced (losing it only means applying again from the snapshot).
const COMMITTED_FILE: &str = "committed";
/// The write-ahead log's directory inside the store's.
const LOG_DIR: &str = "log";
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
    /// A file of the store could not be opened, written or read.
    #[error("raft store file {path}: {source}")]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
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
    /// The Raft log.
    wal: super::wal::Wal,
    /// The committed pointer's file (in the log directory).
    committed: std::fs::File,
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
        let log_dir = dir.join(LOG_DIR);
        let purged =
            read_meta::<Option<openraft::LogId<crate::state::NodeId>>>(&db_file, KEY_LAST_PURGED)?
                .flatten();
        let wal = super::wal::Wal::open(&log_dir, purged.map(|p| p.index))?;
        move_legacy_log(&db_file, &wal)?;
        let committed = {
            use std::os::unix::fs::OpenOptionsExt;
            let path = log_dir.join(COMMITTED_FILE);
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)
                .map_err(|source| StoreError::File { path, source })?
        };
        let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
        Ok((
            Store {
                db: db_file,
                wal,
                committed,
                dir: dir.to_path_buf(),
                _closed: closed_tx,
            },
            closed_rx,
        ))
    }

    /// The Raft log.
    pub(crate) fn wal(&self) -> &super::wal::Wal {
        &self.wal
    }

    /// Record the committed pointer (encoded), in place, not synced.
    pub(crate) fn put_committed(&self, bytes: &[u8]) -> Result<(), StoreError> {
        use std::os::unix::fs::FileExt;
        // Length first, so a torn write reads as garbage, not a shorter value.
        let mut record = Vec::with_capacity(4 + bytes.len());
        record.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        record.extend_from_slice(bytes);
        self.committed
            .write_all_at(&record, 0)
            .map_err(|source| StoreError::File {
                path: self.dir.join(LOG_DIR).join(COMMITTED_FILE),
                source,
            })
    }

    /// The committed pointer's bytes as [`Store::put_committed`] left them
    /// (`None`: never written by this build).
    pub(crate) fn get_committed(&self) -> Option<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let mut len = [0u8; 4];
        self.committed.read_exact_at(&mut len, 0).ok()?;
        let len = u32::from_le_bytes(len) as usize;
        if len == 0 || len > 4096 {
            return None;
        }
        let mut bytes = vec![0u8; len];
        self.committed.read_exact_at(&mut bytes, 4).ok()?;
        Some(bytes)
    }

    /// Read and decode one META value.
    pub(crate) fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        read_meta(&self.db, key)
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
}

/// Read and decode one META value of `db`.
fn read_meta<T: DeserializeOwned>(db_file: &Database, key: &str) -> Result<Option<T>, StoreError> {
    let txn = db_file.begin_read().map_err(db)?;
    let table = txn.open_table(META).map_err(db)?;
    let Some(raw) = table.get(key).map_err(db)? else {
        return Ok(None);
    };
    super::codec::decode(raw.value())
        .map(Some)
        .map_err(codec(key))
}

/// Log entries an earlier build kept in redb go to the write-ahead log
/// (synced), then leave redb. A crash in between finds them in both: the
/// write-ahead log then already holds them and redb is emptied again.
fn move_legacy_log(db_file: &Database, wal: &super::wal::Wal) -> Result<(), StoreError> {
    /// Entries moved per append.
    const CHUNK_ENTRIES: usize = 1024;
    let mut from = 0u64;
    let mut moved = 0usize;
    loop {
        let chunk: Vec<(u64, Vec<u8>)> = {
            let txn = db_file.begin_read().map_err(db)?;
            let table = txn.open_table(LOG).map_err(db)?;
            let mut out = Vec::new();
            for item in table.range(from..).map_err(db)?.take(CHUNK_ENTRIES) {
                let (index, value) = item.map_err(db)?;
                out.push((index.value(), value.value().to_vec()));
            }
            out
        };
        let Some((last, _)) = chunk.last() else { break };
        from = last.saturating_add(1);
        // Already there (an interrupted move, or purged since): skip.
        let fresh: Vec<(u64, Vec<u8>)> = chunk
            .into_iter()
            .filter(|(index, _)| *index >= wal.next_index() || wal.is_empty())
            .collect();
        moved += fresh.len();
        wal.append(&fresh)?;
    }
    if from > 0 {
        let txn = db_file.begin_write().map_err(db)?;
        {
            let mut table = txn.open_table(LOG).map_err(db)?;
            table.retain(|_, _| false).map_err(db)?;
        }
        txn.commit().map_err(db)?;
        tracing::info!(
            entries = moved,
            "raft log moved from redb to the write-ahead log"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store of an earlier build (log entries in redb) opens with its log
    /// moved to the write-ahead log, once.
    #[test]
    fn an_earlier_builds_log_moves_to_the_write_ahead_log() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db_file = Database::create(dir.path().join(FILE_NAME)).unwrap();
            let txn = db_file.begin_write().unwrap();
            {
                let mut table = txn.open_table(LOG).unwrap();
                for index in 3..2500u64 {
                    table.insert(index, index.to_le_bytes().as_slice()).unwrap();
                }
            }
            txn.commit().unwrap();
        }
        for _ in 0..2 {
            let (store, _closed) = Store::open(dir.path()).unwrap();
            let got = store.wal().range(0, None, usize::MAX).unwrap();
            assert_eq!(got.len(), 2497);
            assert_eq!(got[0], 3u64.to_le_bytes());
            assert_eq!(store.wal().next_index(), 2500);
            let txn = store.db.begin_read().unwrap();
            let left = redb::ReadableTableMetadata::len(&txn.open_table(LOG).unwrap()).unwrap();
            assert_eq!(left, 0, "redb's copy is gone");
        }
    }
}
