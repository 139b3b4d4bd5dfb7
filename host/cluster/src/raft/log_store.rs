//! openraft's log storage over the redb [`Store`]: entries, vote, committed
//! pointer and purge point, each write fsynced before it is acknowledged.

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
        let last: Option<Entry<TypeConfig>> = self.store.last()?;
        Ok(purged.is_some() || last.is_some())
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
        self.store
            .range(start, end, READ_ENTRIES_MAX)
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
        let last: Option<Entry<TypeConfig>> = self
            .store
            .last()
            .map_err(|e| StorageIOError::read_logs(&e))?;
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
        // Not fsynced: losing it only means re-applying from the last
        // snapshot / saved state machine, which openraft does.
        self.store
            .put(KEY_COMMITTED, &committed, false)
            .map_err(|e| StorageIOError::write(&e).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
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
        let result = self.store.append(&encoded);
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
            .truncate_from(log_id.index)
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let bytes =
            super::codec::encode(&Some(log_id)).map_err(|e| StorageIOError::write_logs(&e))?;
        self.store
            .purge_upto(log_id.index, &bytes)
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}
