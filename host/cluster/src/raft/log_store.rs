//! openraft's log storage over the redb [`Store`]: entries, vote, committed
//! pointer and purge point, each write fsynced before it is acknowledged.
//!
//! **Writes never block Raft.** One writer thread per store owns every
//! write ([`writer`]). `append` puts its entries in an in-memory table that
//! readers see at once, queues them and returns; the writer commits all
//! that queued while its previous fsync ran in one transaction (group
//! commit) and only then calls openraft's flush callbacks. So the leader
//! replicates an entry while its own fsync runs (as etcd's WAL does), and
//! 64 concurrent writers share fsyncs instead of taking turns. A vote, a
//! truncation and a purge also go through the queue (keeping the order of
//! writes) and return once durable; the committed pointer is queued and not
//! awaited (openraft treats it as optional).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    Entry, LogId, LogState, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote,
};
use tokio::sync::{mpsc, oneshot};

use super::store::{LogOp, Store, StoreError, KEY_COMMITTED, KEY_LAST_PURGED, KEY_VOTE};
use super::TypeConfig;
use crate::state::NodeId;

/// Most entries one read returns (openraft reads in batches of at most
/// `max_payload_entries` anyway; this bounds a pathological range).
const READ_ENTRIES_MAX: usize = 100_000;
/// Most writes queued for the writer; `append` waits (back-pressure on
/// Raft, hence on clients) when the disk falls this far behind.
const JOBS_QUEUED_MAX: usize = 4_096;
/// Most queued writes the writer commits in one transaction.
const JOBS_PER_COMMIT_MAX: usize = 1_024;

/// Entries appended but not yet committed to disk, by index, each with the
/// number of the append that wrote it (a later append may overwrite an
/// index: only the matching append's commit removes it).
type Unflushed = BTreeMap<u64, (u64, Entry<TypeConfig>)>;

/// The Raft log of one node. Cheap to clone (shares the database, the
/// unflushed entries and the writer).
#[derive(Clone, Debug)]
pub(crate) struct LogStore {
    store: Arc<Store>,
    unflushed: Arc<Mutex<Unflushed>>,
    jobs: mpsc::Sender<writer::Job>,
    /// Numbers appends (see [`Unflushed`]); only RaftCore appends.
    next_append: Arc<std::sync::atomic::AtomicU64>,
}

impl LogStore {
    /// The log over `store`, starting its writer thread (which ends once
    /// every clone is dropped and the queue is drained).
    pub(crate) fn new(store: Arc<Store>) -> Result<Self, StoreError> {
        let unflushed = Arc::new(Mutex::new(Unflushed::new()));
        let jobs = writer::start(store.clone(), unflushed.clone())?;
        Ok(LogStore {
            store,
            unflushed,
            jobs,
            next_append: Arc::new(std::sync::atomic::AtomicU64::new(1)),
        })
    }

    /// Whether this node ever had a log (entries now, or purged ones):
    /// i.e. it belongs to a cluster and should come back as a member.
    pub(crate) fn has_history(&self) -> Result<bool, StoreError> {
        let purged: Option<LogId<NodeId>> = self.store.get(KEY_LAST_PURGED)?;
        let last: Option<Entry<TypeConfig>> = self.store.last()?;
        Ok(purged.is_some() || last.is_some() || !self.unflushed().is_empty())
    }

    fn unflushed(&self) -> std::sync::MutexGuard<'_, Unflushed> {
        // Holders only insert or remove whole entries: a poisoned map is whole.
        self.unflushed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue `ops` and wait until they are durable.
    async fn write_durably(&self, ops: Vec<LogOp>) -> Result<(), StoreError> {
        let (done, result) = oneshot::channel();
        self.jobs
            .send(writer::Job::Write { ops, done })
            .await
            .map_err(|_| writer::stopped())?;
        result.await.map_err(|_| writer::stopped())?
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
        // Unflushed entries first, then the disk: an entry the writer
        // commits in between is then found on disk, never missed.
        let mut found: BTreeMap<u64, Entry<TypeConfig>> = self
            .unflushed()
            .range((
                Bound::Included(start),
                end.map_or(Bound::Unbounded, Bound::Excluded),
            ))
            .take(READ_ENTRIES_MAX)
            .map(|(i, (_, e))| (*i, e.clone()))
            .collect();
        let on_disk: Vec<Entry<TypeConfig>> = self
            .store
            .range(start, end, READ_ENTRIES_MAX)
            .map_err(|e| StorageIOError::read_logs(&e))?;
        for entry in on_disk {
            found.entry(entry.log_id.index).or_insert(entry);
        }
        Ok(found.into_values().take(READ_ENTRIES_MAX).collect())
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
        let unflushed_last = self
            .unflushed()
            .last_key_value()
            .map(|(_, (_, e))| e.log_id);
        let last_log_id = unflushed_last
            .or(last.map(|e| e.log_id))
            .or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let write = |e: StoreError| StorageIOError::write_vote(&e);
        let bytes =
            super::codec::encode(vote).map_err(|e| write(StoreError::codec(KEY_VOTE, e)))?;
        self.write_durably(vec![LogOp::Meta {
            key: KEY_VOTE,
            bytes,
        }])
        .await
        .map_err(|e| write(e).into())
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
        // Queued, not awaited, and not fsynced by itself: losing it only
        // means re-applying from the last snapshot, which openraft does.
        let write = |e: StoreError| StorageIOError::write(&e);
        let bytes = super::codec::encode(&committed)
            .map_err(|e| write(StoreError::codec(KEY_COMMITTED, e)))?;
        self.jobs
            .send(writer::Job::Committed { bytes })
            .await
            .map_err(|_| write(writer::stopped()).into())
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
        let append = self
            .next_append
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut ops = Vec::new();
        let mut visible = Vec::new();
        for entry in entries {
            let bytes = super::codec::encode(&entry)
                .map_err(|e| StorageIOError::write_log_entry(entry.log_id, &e))?;
            ops.push(LogOp::Insert {
                index: entry.log_id.index,
                bytes,
            });
            visible.push(entry);
        }
        let indexes: Vec<u64> = visible.iter().map(|e| e.log_id.index).collect();
        {
            let mut unflushed = self.unflushed();
            for entry in visible {
                unflushed.insert(entry.log_id.index, (append, entry));
            }
        }
        self.jobs
            .send(writer::Job::Append {
                append,
                indexes,
                ops,
                callback,
            })
            .await
            .map_err(|_| StorageIOError::write_logs(&writer::stopped()).into())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.unflushed().retain(|index, _| *index < log_id.index);
        self.write_durably(vec![LogOp::TruncateFrom {
            index: log_id.index,
        }])
        .await
        .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let last_purged = super::codec::encode(&Some(log_id))
            .map_err(|e| StorageIOError::write_logs(&StoreError::codec(KEY_LAST_PURGED, e)))?;
        self.unflushed().retain(|index, _| *index > log_id.index);
        self.write_durably(vec![LogOp::PurgeUpto {
            index: log_id.index,
            last_purged,
        }])
        .await
        .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}

/// The thread that performs every write of the log, in queue order.
mod writer {
    use super::*;

    /// One queued write.
    pub(super) enum Job {
        /// Entries of one `append`: committed, then removed from the
        /// unflushed table (where still theirs), then `callback` is called.
        Append {
            append: u64,
            indexes: Vec<u64>,
            ops: Vec<LogOp>,
            callback: LogFlushed<TypeConfig>,
        },
        /// The committed pointer: written with the next commit, fsynced
        /// only if something else in it needs that.
        Committed { bytes: Vec<u8> },
        /// Anything else: durable when `done` is answered.
        Write {
            ops: Vec<LogOp>,
            done: oneshot::Sender<Result<(), StoreError>>,
        },
    }

    /// The error for a writer that has stopped (its thread ended).
    pub(super) fn stopped() -> StoreError {
        StoreError::WriterStopped
    }

    /// Start the writer thread of `store`; its queue.
    pub(super) fn start(
        store: Arc<Store>,
        unflushed: Arc<Mutex<Unflushed>>,
    ) -> Result<mpsc::Sender<Job>, StoreError> {
        let (tx, rx) = mpsc::channel(JOBS_QUEUED_MAX);
        std::thread::Builder::new()
            .name("shoal-raft-log".to_string())
            .spawn(move || run(&store, &unflushed, rx))
            .map_err(StoreError::Thread)?;
        Ok(tx)
    }

    /// Until every sender is gone: take what is queued (up to
    /// [`JOBS_PER_COMMIT_MAX`]), commit it as one transaction, answer it.
    fn run(store: &Store, unflushed: &Mutex<Unflushed>, mut rx: mpsc::Receiver<Job>) {
        let mut batch: Vec<Job> = Vec::new();
        while let Some(first) = rx.blocking_recv() {
            batch.push(first);
            while batch.len() < JOBS_PER_COMMIT_MAX {
                match rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            let mut ops: Vec<LogOp> = Vec::new();
            for job in &mut batch {
                match job {
                    Job::Append { ops: o, .. } | Job::Write { ops: o, .. } => ops.append(o),
                    Job::Committed { bytes } => ops.push(LogOp::Meta {
                        key: KEY_COMMITTED,
                        bytes: std::mem::take(bytes),
                    }),
                }
            }
            let result = store.write(&ops);
            if let Err(e) = &result {
                tracing::error!(error = %e, "raft log write failed");
            }
            for job in batch.drain(..) {
                match job {
                    Job::Append {
                        append,
                        indexes,
                        callback,
                        ..
                    } => {
                        if result.is_ok() {
                            let mut map = unflushed.lock().unwrap_or_else(|e| e.into_inner());
                            for index in indexes {
                                if map.get(&index).is_some_and(|(a, _)| *a == append) {
                                    map.remove(&index);
                                }
                            }
                        }
                        let io = match &result {
                            Ok(()) => Ok(()),
                            Err(e) => Err(std::io::Error::other(e.to_string())),
                        };
                        callback.log_io_completed(io);
                    }
                    Job::Write { done, .. } => {
                        let answer = match &result {
                            Ok(()) => Ok(()),
                            Err(_) => Err(StoreError::WriteFailed),
                        };
                        // The asker may have gone (Raft shutting down).
                        let _ = done.send(answer);
                    }
                    Job::Committed { .. } => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::state_machine::{Published, StateMachine};
    use super::*;
    use openraft::testing::{StoreBuilder, Suite};

    /// A fresh store in a temporary directory (kept alive by the suite).
    struct Fresh;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Fresh {
        async fn build(
            &self,
        ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<NodeId>> {
            let dir = tempfile::tempdir().map_err(|e| StorageIOError::write(&e))?;
            let (store, _closed) =
                Store::open(dir.path()).map_err(|e| StorageIOError::write(&e))?;
            let store = Arc::new(store);
            let sm = StateMachine::open(store.clone(), Arc::new(Published::new()))
                .map_err(|e| StorageIOError::write(&e))?;
            let log = LogStore::new(store).map_err(|e| StorageIOError::write(&e))?;
            Ok((dir, log, sm))
        }
    }

    type Conformance = Suite<TypeConfig, LogStore, StateMachine, Fresh, tempfile::TempDir>;

    /// openraft's own conformance suite for log storage (everything but the
    /// snapshot cases, whose made-up snapshot bytes are not a Shoal
    /// snapshot: the state machine rightly refuses them): reads see
    /// unflushed appends, flush callbacks come after the fsync, truncation
    /// and purging leave no holes, the vote and log state survive.
    #[test]
    fn openraft_log_storage_suite_passes() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        macro_rules! case {
            ($name:ident) => {
                rt.block_on(async {
                    let (_dir, log, sm) = Fresh.build().await.expect("build");
                    Conformance::$name(log, sm)
                        .await
                        .unwrap_or_else(|e| panic!("{}: {e}", stringify!($name)));
                })
            };
        }
        case!(last_membership_in_log_initial);
        case!(last_membership_in_log);
        case!(last_membership_in_log_multi_step);
        case!(get_membership_initial);
        case!(get_membership_from_log_and_empty_sm);
        case!(get_membership_from_empty_log_and_sm);
        case!(get_membership_from_log_le_sm_last_applied);
        case!(get_membership_from_log_gt_sm_last_applied_1);
        case!(get_membership_from_log_gt_sm_last_applied_2);
        case!(get_initial_state_without_init);
        case!(get_initial_state_membership_from_log_and_sm);
        case!(get_initial_state_with_state);
        case!(get_initial_state_last_log_gt_sm);
        case!(get_initial_state_last_log_lt_sm);
        case!(get_initial_state_log_ids);
        case!(get_initial_state_re_apply_committed);
        case!(save_vote);
        case!(get_log_entries);
        case!(limited_get_log_entries);
        case!(try_get_log_entry);
        case!(initial_logs);
        case!(get_log_state);
        case!(get_log_id);
        case!(last_id_in_log);
        case!(last_applied_state);
        case!(purge_logs_upto_0);
        case!(purge_logs_upto_5);
        case!(purge_logs_upto_20);
        case!(delete_logs_since_11);
        case!(delete_logs_since_0);
        case!(append_to_log);
    }
}
