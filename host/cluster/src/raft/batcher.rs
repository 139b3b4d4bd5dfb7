//! Group commit on the leader: writes that arrive while earlier ones are
//! in flight go into the log together, as one [`Command::Batch`] entry.
//!
//! Why: openraft 0.9 appends (and fsyncs) each proposal on its own inside
//! its core task, so N concurrent writers cost N leader fsyncs in a row.
//! The batcher keeps at most [`IN_FLIGHT_MAX`] proposals open; whatever
//! queues meanwhile (up to [`BATCH_COMMANDS_MAX`] writes and
//! [`BATCH_BYTES_MAX`] encoded bytes) becomes the next entry, so one fsync
//! and one replication round serve the whole group. A lone writer is
//! proposed at once, alone, exactly as before: the batcher adds no wait.
//!
//! Each write in a batch is applied as if alone (its own `Once` key, its
//! own result), and gets its own result back; a failure of the proposal
//! (not the leader any more, Raft stopped) goes to every write in it,
//! which then retries as it would have alone.

use std::sync::Arc;

use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::OpenRaft;
use crate::state::{Command, CommandResult, BATCH_BYTES_MAX, BATCH_COMMANDS_MAX};

/// Proposals open at once: one appending on the leader while the one
/// before it replicates.
const IN_FLIGHT_MAX: usize = 2;

/// Writes that may wait for the batcher before a sender waits for room
/// (back-pressure on the writers, bounded memory).
const QUEUE_MAX: usize = 4 * BATCH_COMMANDS_MAX;

/// How one proposed write ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Committed and applied: the write's own result.
    Done(CommandResult),
    /// This node no longer leads: try the leader.
    NotLeader,
    /// openraft refused the proposal (a membership change in progress…).
    Refused(String),
    /// Raft stopped on this node.
    Stopped(String),
}

struct Pending {
    cmd: Command,
    bytes: usize,
    done: oneshot::Sender<Outcome>,
}

/// The sending side, kept by the node; the task ends when it is dropped.
#[derive(Debug)]
pub(crate) struct Batcher {
    tx: mpsc::Sender<Pending>,
}

impl Batcher {
    /// Start the batcher task over `raft`.
    pub(crate) fn start(raft: OpenRaft) -> (Batcher, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE_MAX);
        let task = tokio::spawn(run(raft, rx));
        (Batcher { tx }, task)
    }

    /// Propose `cmd` (this node should lead) and wait for its outcome.
    /// Dropping the future abandons the wait, not the proposal.
    pub(crate) async fn propose(&self, cmd: Command) -> Outcome {
        let bytes = super::codec::encoded_len(&cmd);
        let (done, wait) = oneshot::channel();
        let pending = Pending { cmd, bytes, done };
        if self.tx.send(pending).await.is_err() {
            return Outcome::Stopped("the write batcher stopped".to_string());
        }
        wait.await
            .unwrap_or_else(|_| Outcome::Stopped("the write batcher stopped".to_string()))
    }
}

async fn run(raft: OpenRaft, mut rx: mpsc::Receiver<Pending>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT_MAX));
    let mut carried: Option<Pending> = None;
    loop {
        let first = match carried.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        // Wait for a free slot first: what queues meanwhile joins this one.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut bytes = first.bytes;
        let mut group = vec![first];
        while group.len() < BATCH_COMMANDS_MAX {
            let Ok(next) = rx.try_recv() else { break };
            if bytes.saturating_add(next.bytes) > BATCH_BYTES_MAX {
                carried = Some(next);
                break;
            }
            bytes = bytes.saturating_add(next.bytes);
            group.push(next);
        }
        debug_assert!(!group.is_empty() && group.len() <= BATCH_COMMANDS_MAX);
        let raft = raft.clone();
        tokio::spawn(async move {
            propose(&raft, group).await;
            drop(slot);
        });
    }
}

/// Propose `group` as one entry (alone if it is one write) and answer
/// each write. The commands move into the entry: nothing is copied.
async fn propose(raft: &OpenRaft, group: Vec<Pending>) {
    let (mut cmds, dones): (Vec<Command>, Vec<oneshot::Sender<Outcome>>) =
        group.into_iter().map(|p| (p.cmd, p.done)).unzip();
    let count = cmds.len();
    let entry = match cmds.pop() {
        Some(only) if cmds.is_empty() => only,
        Some(last) => {
            cmds.push(last);
            Command::Batch { cmds }
        }
        None => return,
    };
    let outcomes: Vec<Outcome> = match raft.client_write(entry).await {
        Ok(resp) => match resp.data {
            CommandResult::Batch(results) if count > 1 && results.len() == count => {
                results.into_iter().map(Outcome::Done).collect()
            }
            // One write's result; or a batch refused whole (cannot happen
            // within our bounds): the same answer to each write.
            result => vec![result; count].into_iter().map(Outcome::Done).collect(),
        },
        Err(e) => {
            let each = || match &e {
                RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => Outcome::NotLeader,
                RaftError::APIError(e) => Outcome::Refused(e.to_string()),
                RaftError::Fatal(e) => Outcome::Stopped(e.to_string()),
            };
            (0..count).map(|_| each()).collect()
        }
    };
    for (done, outcome) in dones.into_iter().zip(outcomes) {
        let _ = done.send(outcome);
    }
}
