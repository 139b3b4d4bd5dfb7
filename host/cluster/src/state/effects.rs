//! Effects of processes under output commit, applied once each (issue
//! #16).
//!
//! A process that may resume from a checkpoint (`--restart
//! on-failure|always`) re-executes after a failover from the state its
//! last recorded checkpoint holds. A key-value write it made after that
//! checkpoint would stay visible though the resumed history may never make
//! it, so such a write is an *effect* under output commit: the process is
//! checkpointed inside the call first (the checkpoint records the call as
//! pending, with its number), and only once that checkpoint is recorded
//! is the write sent, keyed by `(pid, life, seq)`. A copy resumed from that
//! checkpoint is inside the same call and sends it again under the same
//! key; this book answers the repeat with the first result instead of
//! applying it twice.
//!
//! A spawn is such an effect too ([`super::Command::SpawnEffect`]): its
//! answer is the child's pid, registered before the child runs, so a
//! resumed copy's repeat gets the first child and starts none.
//!
//! One slot per process is enough: an effect is sent only after a
//! recorded checkpoint covers its call, and the next effect only after a
//! later one, so a resumed copy can only ever repeat the newest effect.
//! Slots are dropped with their process's directory entry, so the book is
//! bounded by the directory.

use super::{CommandResult, Table};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Which effect of which run of a process a write is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EffectKey {
    /// The process's life (drawn when it was first created, kept across
    /// moves and resumes; a fresh restart draws another).
    pub life: u64,
    /// The effect's number in the process's output (its outbox's `gseq`).
    pub seq: u64,
}

/// The newest effect a process applied, and what it answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Slot {
    key: EffectKey,
    result: CommandResult,
}

/// The newest effect of each live process ([`super::Command::Kv`] and
/// [`super::Command::KvBatch`] with an `effect`, and
/// [`super::Command::SpawnEffect`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EffectBook {
    slots: Table<u64, Slot>,
}

impl EffectBook {
    /// What `pid`'s effect `key` answered, if it was applied.
    pub fn done(&self, pid: u64, key: &EffectKey) -> Option<&CommandResult> {
        self.slots
            .get(&pid)
            .filter(|s| s.key == *key)
            .map(|s| &s.result)
    }

    /// Record that `pid` (a live process) applied effect `key`.
    pub fn record(&mut self, pid: u64, key: EffectKey, result: CommandResult) {
        self.slots.insert(pid, Slot { key, result });
    }

    /// `pid`'s effect `key`, recorded as the spawn of `child`, failed:
    /// answer its repeats with `failed` instead. False, and nothing
    /// changes, if the slot holds another effect or answer.
    pub fn child_failed(
        &mut self,
        pid: u64,
        key: &EffectKey,
        child: u64,
        failed: CommandResult,
    ) -> bool {
        let recorded = self
            .slots
            .get(&pid)
            .is_some_and(|slot| slot.key == *key && slot.result == CommandResult::Child(child));
        if recorded {
            self.slots.insert(
                pid,
                Slot {
                    key: *key,
                    result: failed,
                },
            );
        }
        recorded
    }

    /// Forget the slots of processes that are gone.
    pub fn forget(&mut self, gone: &BTreeSet<u64>) {
        for pid in gone {
            self.slots.remove(pid);
        }
    }

    /// Processes with a slot.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// No slot at all.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}
