//! openraft's state machine: applies committed [`Command`]s to the
//! [`ClusterState`], builds and installs snapshots (binary, streamed to and
//! from a file: [`super::snapshot_file`]), and publishes every change to
//! readers.
//!
//! **The state lives in memory, but for the guests' key-value entries; the
//! disk holds the log and the last snapshot.** An apply changes the
//! in-memory state (its tables are persistent maps,
//! [`crate::state::Table`]) and publishes it with an O(1) clone: it costs
//! what it changes, not what the state holds. The key-value entries live in
//! a redb file of their own (`kv.redb`, [`crate::state::kv_disk`]): an apply
//! adds its writes to the book's in-memory overlay, and once that passes
//! its bound the apply flushes it to the file (without fsync: the file is
//! rebuilt from the snapshot on start). On start the state machine opens at
//! its last snapshot and openraft re-applies the committed log after it (the log is kept from
//! the snapshot on: purging never passes the snapshot). A snapshot is
//! built every `snapshot_after_entries` entries, in openraft's background
//! task, and saved durably.

use std::sync::{Arc, RwLock};

use openraft::storage::RaftStateMachine;
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, Snapshot, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::snapshot_file;
use super::store::{Store, StoreError, KEY_SNAPSHOT, KEY_STATE_MACHINE};
use super::TypeConfig;
use crate::detector::{LivenessChange, LIVENESS_BUFFERED_MAX};
use crate::state::kv_disk;
use crate::state::{ClusterState, Command, CommandResult, MemberInfo, NodeId};
use shoal_pki::SharedRevocations;

/// What readers of the local state see; updated after every applied batch
/// and every installed snapshot.
#[derive(Debug)]
pub(crate) struct Published {
    state: RwLock<Arc<ClusterState>>,
    applied_tx: watch::Sender<u64>,
    moves_tx: tokio::sync::broadcast::Sender<MoveApplied>,
    dropped_tx: tokio::sync::broadcast::Sender<DroppedChild>,
    liveness_tx: tokio::sync::broadcast::Sender<LivenessChange>,
    revocations: SharedRevocations,
}

impl Published {
    pub(crate) fn new() -> Self {
        let (applied_tx, _) = watch::channel(0);
        let (moves_tx, _) = tokio::sync::broadcast::channel(MOVES_BUFFERED_MAX);
        let (dropped_tx, _) = tokio::sync::broadcast::channel(MOVES_BUFFERED_MAX);
        let (liveness_tx, _) = tokio::sync::broadcast::channel(LIVENESS_BUFFERED_MAX);
        Published {
            state: RwLock::new(Arc::new(ClusterState::default())),
            applied_tx,
            moves_tx,
            dropped_tx,
            liveness_tx,
            revocations: SharedRevocations::default(),
        }
    }

    /// The latest applied state.
    pub(crate) fn state(&self) -> Arc<ClusterState> {
        // Writers only swap an Arc, so a poisoned lock still holds a whole value.
        self.state.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A receiver woken with the applied index on every change.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.applied_tx.subscribe()
    }

    /// A receiver of every directory move applied from now on, each sent
    /// after the state that contains it is published.
    pub(crate) fn subscribe_moves(&self) -> tokio::sync::broadcast::Receiver<MoveApplied> {
        self.moves_tx.subscribe()
    }

    /// A receiver of every recorded child dropped from the directory as
    /// failed from now on, each sent after the state without it is
    /// published.
    pub(crate) fn subscribe_dropped_children(
        &self,
    ) -> tokio::sync::broadcast::Receiver<DroppedChild> {
        self.dropped_tx.subscribe()
    }

    /// A receiver of every liveness verdict applied from now on, each sent
    /// after the state that contains it is published.
    pub(crate) fn subscribe_liveness(&self) -> tokio::sync::broadcast::Receiver<LivenessChange> {
        self.liveness_tx.subscribe()
    }

    /// Tell subscribers about every verdict that differs between `old` and
    /// `new` (after `new` is published).
    fn send_liveness_changes(&self, old: &ClusterState, new: &ClusterState) {
        if old.liveness == new.liveness {
            return;
        }
        for (node, l) in &new.liveness {
            if old.liveness.get(node).map(|o| o.epoch) != Some(l.epoch) {
                // No subscriber is fine: nobody is waiting on a node.
                let _ = self.liveness_tx.send(LivenessChange {
                    node: *node,
                    epoch: l.epoch,
                    dead: l.dead,
                });
            }
        }
    }

    /// The revocation handle TLS verifiers read.
    pub(crate) fn revocations(&self) -> SharedRevocations {
        self.revocations.clone()
    }

    fn publish(&self, state: &Arc<ClusterState>, applied: Option<LogId<NodeId>>) {
        let old = std::mem::replace(
            &mut *self.state.write().unwrap_or_else(|e| e.into_inner()),
            state.clone(),
        );
        // O(1): the list counts its changes (it may hold 65,536 entries).
        if old.revocations.version() != state.revocations.version() {
            self.revocations.replace(state.revocations.clone());
        }
        self.applied_tx
            .send_replace(applied.map(|l| l.index).unwrap_or(0));
    }
}

/// The key-value file's name in the node's Raft directory.
pub(crate) const KV_FILE_NAME: &str = "kv.redb";

/// Most applied moves buffered for a slow subscriber (beyond, it misses the
/// oldest and is told how many it lagged).
pub const MOVES_BUFFERED_MAX: usize = 4096;

/// A `MovePid` command that was applied: `pid` now runs on `to` at `epoch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MoveApplied {
    /// The process.
    pub pid: u64,
    /// The node it left.
    pub from: NodeId,
    /// The node it runs on now.
    pub to: NodeId,
    /// Its new directory epoch.
    pub epoch: u64,
}

/// A `SpawnEffectFailed` command that was applied and dropped the child's
/// directory entry: if `pid` runs on `node` after all (its start request
/// arrived but the answer was lost), `node` must kill it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DroppedChild {
    /// The child.
    pub pid: u64,
    /// The node its entry named.
    pub node: NodeId,
}

/// The state machine as saved on disk (and held in memory).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct SmData {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, MemberInfo>,
    state: ClusterState,
}

/// A snapshot as earlier builds saved it (in the store, as JSON); read
/// once on open and rewritten as the snapshot file.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, MemberInfo>,
    data: Vec<u8>,
}

/// The node's state machine.
#[derive(Debug)]
pub(crate) struct StateMachine {
    store: Arc<Store>,
    /// Where the key-value book's entries live ([`kv_disk`]).
    kv_db: Arc<redb::Database>,
    /// Whether a durable commit of `kv_db` is under way.
    kv_syncing: Arc<std::sync::atomic::AtomicBool>,
    data: SmData,
    /// The state as last published (shared with readers; cloned on write).
    current: Arc<ClusterState>,
    published: Arc<Published>,
    snapshots_built: u64,
}

fn read_sm(e: StoreError) -> StorageError<NodeId> {
    StorageIOError::read_state_machine(&e).into()
}

impl StateMachine {
    /// Open at the saved snapshot (or empty) and publish it; openraft then
    /// re-applies the committed log that follows.
    pub(crate) fn open(store: Arc<Store>, published: Arc<Published>) -> Result<Self, StoreError> {
        let dir = store.dir().to_path_buf();
        let kv_db = kv_disk::open(&dir.join(KV_FILE_NAME))?;
        let data = match snapshot_file::read(&snapshot_file::current_path(&dir), &kv_db)? {
            Some((meta, state)) => SmData {
                last_applied: meta.last_log_id,
                membership: meta.last_membership,
                state,
            },
            None => {
                let mut data = match store.get::<StoredSnapshot>(KEY_SNAPSHOT)? {
                    // An earlier build's snapshot: moved to the file, once.
                    Some(old) => {
                        let state: ClusterState =
                            super::codec::decode(&old.data).map_err(|source| {
                                StoreError::Codec {
                                    key: KEY_SNAPSHOT.to_string(),
                                    source,
                                }
                            })?;
                        snapshot_file::write(&dir, &old.meta, &state)?;
                        store.delete(KEY_SNAPSHOT)?;
                        SmData {
                            last_applied: old.meta.last_log_id,
                            membership: old.meta.last_membership,
                            state,
                        }
                    }
                    None => SmData::default(),
                };
                // The book reads the file from here on (with the entries an
                // earlier build's snapshot held inside its state).
                data.state
                    .kv
                    .load::<String>(&kv_db, std::iter::empty())?
                    .map_err(|why| StoreError::Codec {
                        key: KV_FILE_NAME.to_string(),
                        source: super::codec::CodecError::Cbor(why),
                    })?;
                data
            }
        };
        // Stores written before the state lived in memory also hold a
        // copy of it: the snapshot and the log supersede it.
        store.delete(KEY_STATE_MACHINE)?;
        let current = Arc::new(data.state.clone());
        published.publish(&current, data.last_applied);
        Ok(StateMachine {
            store,
            kv_db,
            kv_syncing: Default::default(),
            data,
            current,
            published,
            snapshots_built: 0,
        })
    }

    /// Publish the applied state (an O(1) clone of persistent maps).
    fn publish(&mut self) {
        self.current = Arc::new(self.data.state.clone());
        self.published
            .publish(&self.current, self.data.last_applied);
    }
}

/// Builds a snapshot of the state machine as it was when the builder was
/// made.
#[derive(Debug)]
pub(crate) struct SnapshotBuilder {
    store: Arc<Store>,
    data: SmData,
    seq: u64,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let snapshot_id = match self.data.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, self.seq),
            None => format!("empty-{}", self.seq),
        };
        let meta = SnapshotMeta {
            last_log_id: self.data.last_applied,
            last_membership: self.data.membership.clone(),
            snapshot_id,
        };
        // Encoded straight into the file, off the async threads (the state
        // is an O(1) copy of persistent maps, taken when the builder was
        // made).
        let dir = self.store.dir().to_path_buf();
        let state = self.data.state.clone();
        let written = {
            let (dir, meta) = (dir.clone(), meta.clone());
            tokio::task::spawn_blocking(move || snapshot_file::write(&dir, &meta, &state)).await
        };
        let write_err = |e: openraft::AnyError| {
            StorageError::from(StorageIOError::write_snapshot(Some(meta.signature()), e))
        };
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(write_err(openraft::AnyError::new(&e))),
            Err(e) => return Err(write_err(openraft::AnyError::new(&e))),
        }
        let file = tokio::fs::File::open(snapshot_file::current_path(&dir))
            .await
            .map_err(|e| write_err(openraft::AnyError::new(&e)))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(file),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, MemberInfo>), StorageError<NodeId>>
    {
        Ok((self.data.last_applied, self.data.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut results = Vec::new();
        let mut moves = Vec::new();
        let mut dropped = Vec::new();
        let before = self.current.clone();
        for entry in entries {
            self.data.last_applied = Some(entry.log_id);
            let result = match entry.payload {
                EntryPayload::Blank => CommandResult::Ok,
                EntryPayload::Normal(cmd) => {
                    let writes = cmd.writes();
                    let repeats: Vec<bool> = writes
                        .iter()
                        .map(|w| self.data.state.is_repeat(w))
                        .collect();
                    // Where each failed child's entry was before.
                    let failed_at: Vec<Option<(u64, NodeId)>> = writes
                        .iter()
                        .map(|w| match w.unwrapped() {
                            Command::SpawnEffectFailed { child, .. } => {
                                let e = self.data.state.directory.get(child)?;
                                Some((*child, e.node))
                            }
                            _ => None,
                        })
                        .collect();
                    let result = self.data.state.apply(&cmd);
                    let results: &[CommandResult] = match &result {
                        CommandResult::Batch(each) => each,
                        one => std::slice::from_ref(one),
                    };
                    for ((write, result), repeat) in writes.iter().zip(results).zip(repeats) {
                        if let (Command::MovePid { pid, from, to, .. }, CommandResult::Ok, false) =
                            (write.unwrapped(), result, repeat)
                        {
                            let epoch = self.data.state.directory.get(pid).map_or(0, |e| e.epoch);
                            moves.push(MoveApplied {
                                pid: *pid,
                                from: *from,
                                to: *to,
                                epoch,
                            });
                        }
                    }
                    for (pid, node) in failed_at.into_iter().flatten() {
                        if !self.data.state.directory.contains_key(&pid) {
                            dropped.push(DroppedChild { pid, node });
                        }
                    }
                    result
                }
                EntryPayload::Membership(m) => {
                    self.data.membership = StoredMembership::new(Some(entry.log_id), m);
                    CommandResult::Ok
                }
            };
            results.push(result);
        }
        if self.data.state.kv.overlay_full()
            && self.data.state.kv.flush(&self.kv_db)
            && !self
                .kv_syncing
                .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            // Off the apply path, one at a time (see kv_disk::sync).
            let (db, syncing) = (self.kv_db.clone(), self.kv_syncing.clone());
            tokio::task::spawn_blocking(move || {
                kv_disk::sync(&db);
                syncing.store(false, std::sync::atomic::Ordering::Release);
            });
        }
        self.publish();
        self.published.send_liveness_changes(&before, &self.current);
        for m in moves {
            // No subscriber is fine: nobody needs to fence.
            let _ = self.published.moves_tx.send(m);
        }
        for d in dropped {
            // No subscriber is fine: no node runs it.
            let _ = self.published.dropped_tx.send(d);
        }
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.snapshots_built = self.snapshots_built.wrapping_add(1);
        SnapshotBuilder {
            store: self.store.clone(),
            data: self.data.clone(),
            seq: self.snapshots_built,
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<tokio::fs::File>, StorageError<NodeId>> {
        // Received in chunks straight into a file (bounded per chunk by the
        // RPC handler, see `snapshot_file::SNAPSHOT_BYTES_MAX`).
        let path = snapshot_file::incoming_path(self.store.dir());
        let file = snapshot_file::create_private(&path)
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        Ok(Box::new(tokio::fs::File::from_std(file)))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, MemberInfo>,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError<NodeId>> {
        let read_err = |e: openraft::AnyError| {
            StorageError::from(StorageIOError::read_snapshot(Some(meta.signature()), e))
        };
        let mut file = *snapshot;
        tokio::io::AsyncWriteExt::flush(&mut file)
            .await
            .map_err(|e| read_err(openraft::AnyError::new(&e)))?;
        drop(file);
        let dir = self.store.dir().to_path_buf();
        let installed = {
            let (meta, kv_db) = (meta.clone(), self.kv_db.clone());
            tokio::task::spawn_blocking(move || snapshot_file::install(&dir, &meta, &kv_db)).await
        };
        let state = match installed {
            Ok(Ok(state)) => state,
            Ok(Err(e)) => return Err(read_err(openraft::AnyError::new(&e))),
            Err(e) => return Err(read_err(openraft::AnyError::new(&e))),
        };
        self.data = SmData {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            state,
        };
        let before = std::mem::replace(&mut self.current, Arc::new(self.data.state.clone()));
        self.published
            .publish(&self.current, self.data.last_applied);
        self.published.send_liveness_changes(&before, &self.current);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let dir = self.store.dir().to_path_buf();
        let opened = tokio::task::spawn_blocking(move || snapshot_file::open_current(&dir)).await;
        let (meta, file) = match opened {
            Ok(Ok(Some(found))) => found,
            Ok(Ok(None)) => return Ok(None),
            Ok(Err(e)) => return Err(read_sm(e)),
            Err(e) => return Err(StorageIOError::read_state_machine(&e).into()),
        };
        let file = tokio::fs::File::from_std(file);
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(file),
        }))
    }
}
