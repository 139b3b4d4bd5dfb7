//! openraft's log storage over the [`Store`]: entries in its write-ahead
//! log ([`super::wal`]), vote and purge point in redb, each synced before
//! it is acknowledged; the committed pointer written in place, unsynced.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    Entry, LogId, LogState, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote,
};

use super::store::{Store, StoreError, KEY_COMMITTED, KEY_LAST_PURGED, KEY_VOTE};
use super::TypeConfig;
use crate::state::NodeId;

/// Most entries one read returns (openraft reads in batches of at most
/// `max_payload_entries` anyway; this bounds a pathological range).
const READ_ENTRIES_MAX: usize = 100_000;

/// The Raft log of one node. Cheap to clone (shares the database).
#[derive(Clone, Debug)]
pub(crate) struct LogStore {
    store: Arc<Store>,
}

impl LogStore {
    pub(crate) fn new(store: Arc<Store>) -> Self {
        LogStore { store }
    }

    /// Whether this node ever had a log (entries now, or purged ones):
    /// i.e. it belongs to a cluster and should come back as a member.
    pub(crate) fn has_history(&self) -> Result<bool, StoreError> {
        let purged: Option<LogId<NodeId>> = self.store.get(KEY_LAST_PURGED)?;
        Ok(purged.is_some() || !self.store.wal().is_empty())
    }

    /// The last entry, decoded.
    fn last(&self) -> Result<Option<Entry<TypeConfig>>, StoreError> {
        let Some(bytes) = self.store.wal().last()? else {
            return Ok(None);
        };
        super::codec::decode(&bytes)
            .map(Some)
            .map_err(|source| StoreError::Codec {
                key: "raft log".to_string(),
                source,
            })
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let start = match range.start_bound() {
            Bound::Included(x) => *x,
            Bound::Excluded(x) => x.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(x) => Some(x.saturating_add(1)),
            Bound::Excluded(x) => Some(*x),
            Bound::Unbounded => None,
        };
        let raw = self
            .store
            .wal()
            .range(start, end, READ_ENTRIES_MAX)
            .map_err(|e| StorageIOError::read_logs(&e))?;
        raw.iter()
            .map(|bytes| super::codec::decode(bytes))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StorageIOError::read_logs(&e).into())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let last_purged_log_id: Option<LogId<NodeId>> = self
            .store
            .get(KEY_LAST_PURGED)
            .map_err(|e| StorageIOError::read_logs(&e))?;
        let last = self.last().map_err(|e| StorageIOError::read_logs(&e))?;
        let last_log_id = last.map(|e| e.log_id).or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.store
            .put(KEY_VOTE, vote, true)
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        self.store
            .get(KEY_VOTE)
            .map_err(|e| StorageIOError::read_vote(&e).into())
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        // Not synced: losing it only means applying again from the last
        // snapshot, which openraft does.
        let bytes = super::codec::encode(&committed).map_err(|e| StorageIOError::write(&e))?;
        self.store
            .put_committed(&bytes)
            .map_err(|e| StorageIOError::write(&e).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        // A torn or unreadable pointer is no pointer: apply from the
        // snapshot instead. A store of an earlier build kept it in redb.
        if let Some(bytes) = self.store.get_committed() {
            return Ok(super::codec::decode::<Option<LogId<NodeId>>>(&bytes)
                .ok()
                .flatten());
        }
        let committed: Option<Option<LogId<NodeId>>> = self
            .store
            .get(KEY_COMMITTED)
            .map_err(|e| StorageIOError::read(&e))?;
        Ok(committed.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut encoded = Vec::new();
        for entry in entries {
            let bytes = super::codec::encode(&entry)
                .map_err(|e| StorageIOError::write_log_entry(entry.log_id, &e))?;
            encoded.push((entry.log_id.index, bytes));
        }
        let result = self.store.wal().append(&encoded);
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(StorageIOError::write_logs(&e).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.store
            .wal()
            .truncate_from(log_id.index)
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        // The purge point first (synced): a crash before the segments go
        // leaves records that the next open drops.
        self.store
            .put(KEY_LAST_PURGED, &Some(log_id), true)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        self.store
            .wal()
            .purge_upto(log_id.index)
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}
