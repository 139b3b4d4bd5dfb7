//! At-most-once application of retried writes.
//!
//! A write whose answer was lost (a leader change, a timeout after the
//! entry was appended) may still commit; retrying it blindly would apply
//! it twice (a token spent twice, a pid block handed out twice). Every
//! [`crate::Raft::write`] therefore goes into the log wrapped as
//! [`Command::Once`](super::Command::Once) with its writer's random client
//! id and a sequence number, and retries reuse both: the state machine
//! applies a `(client, seq)` once and answers a repeat with the result it
//! recorded.
//!
//! Bounded: each client keeps its newest [`ONCE_SEQS_PER_CLIENT_MAX`]
//! results (a retry only ever repeats a recent write), and at most
//! [`ONCE_CLIENTS_MAX`] clients are remembered, the least recently seen
//! forgotten first (a client is one run of one node). Deterministic like
//! the rest of `apply`: ordered maps, a counter instead of a clock.

use super::CommandResult;
use super::Table;
use serde::{Deserialize, Serialize};

/// Results remembered per client.
pub const ONCE_SEQS_PER_CLIENT_MAX: usize = 256;
/// Clients remembered.
pub const ONCE_CLIENTS_MAX: usize = 1024;

/// One client's recent results.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Client {
    /// When it was last seen, in [`OnceBook::clock`] ticks.
    seen_at: u64,
    /// seq → result.
    results: Table<u64, CommandResult>,
}

/// What was applied, by `(client, seq)`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnceBook {
    clients: Table<u64, Client>,
    /// Counts recorded writes (orders clients by recency).
    clock: u64,
}

impl OnceBook {
    /// The result recorded for `(client, seq)`, if it was applied.
    pub fn seen(&self, client: u64, seq: u64) -> Option<&CommandResult> {
        self.clients.get(&client)?.results.get(&seq)
    }

    /// Record that `(client, seq)` was applied with `result`.
    pub fn record(&mut self, client: u64, seq: u64, result: CommandResult) {
        self.clock += 1;
        let entry = self.clients.entry(client).or_default();
        entry.seen_at = self.clock;
        entry.results.insert(seq, result);
        while entry.results.len() > ONCE_SEQS_PER_CLIENT_MAX {
            let Some(oldest) = entry.results.get_min().map(|(seq, _)| *seq) else {
                break;
            };
            entry.results.remove(&oldest);
        }
        if self.clients.len() > ONCE_CLIENTS_MAX {
            let stalest = self
                .clients
                .iter()
                .min_by_key(|(id, c)| (c.seen_at, **id))
                .map(|(id, _)| *id);
            if let Some(id) = stalest {
                self.clients.remove(&id);
            }
        }
        debug_assert!(self.clients.len() <= ONCE_CLIENTS_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::super::{ClusterState, Command, CommandResult, Refusal};
    use super::*;

    fn once(seq: u64, cmd: Command) -> Command {
        Command::Once {
            client: 7,
            seq,
            cmd: Box::new(cmd),
        }
    }

    fn boot() -> Command {
        Command::Bootstrap {
            ca_cert_pem: String::new(),
            ca_node: 1,
            name: "n1".into(),
            addr: "n1:1".into(),
            labels: Default::default(),
            now_ms: 1,
        }
    }

    #[test]
    fn a_retried_write_applies_once_and_answers_the_same() {
        let mut s = ClusterState::default();
        assert_eq!(s.apply(&once(1, boot())), CommandResult::NodeId(1));
        let alloc = once(2, Command::AllocPidBlock { node: 1 });
        let first = s.apply(&alloc);
        let next = s.next_pid_block;
        // The retry: the same answer, nothing handed out twice.
        assert_eq!(s.apply(&alloc), first);
        assert_eq!(s.next_pid_block, next);
        // A new seq is a new write.
        assert_ne!(s.apply(&once(3, Command::AllocPidBlock { node: 1 })), first);
        // A refusal is remembered too: its retry is refused the same way.
        let bad = once(4, Command::AllocPidBlock { node: 9 });
        let refused = s.apply(&bad);
        assert_eq!(refused, CommandResult::Refused(Refusal::NoNode { id: 9 }));
        assert_eq!(s.apply(&bad), refused);
        // An envelope in an envelope is refused.
        let nested = once(5, once(6, Command::AllocPidBlock { node: 1 }));
        assert!(matches!(s.apply(&nested), CommandResult::Refused(_)));
    }

    #[test]
    fn a_batch_applies_each_write_as_if_alone() {
        use crate::state::BATCH_COMMANDS_MAX;
        let mut s = ClusterState::default();
        s.apply(&once(1, boot()));
        let a = once(2, Command::AllocPidBlock { node: 1 });
        let bad = once(3, Command::AllocPidBlock { node: 9 });
        let b = once(4, Command::AllocPidBlock { node: 1 });
        let batch = Command::Batch {
            cmds: vec![a.clone(), bad.clone(), b.clone()],
        };
        let CommandResult::Batch(results) = s.apply(&batch) else {
            panic!("a batch answers a batch");
        };
        assert_eq!(results.len(), 3);
        assert!(matches!(results[0], CommandResult::PidBlock(_)));
        assert_eq!(
            results[1],
            CommandResult::Refused(Refusal::NoNode { id: 9 }),
            "one refused write refuses only itself"
        );
        assert!(matches!(results[2], CommandResult::PidBlock(_)));
        assert_ne!(results[0], results[2]);
        // Each write's retry, alone or in another batch, answers the same.
        assert_eq!(s.apply(&a), results[0]);
        let next = s.next_pid_block;
        let again = s.apply(&Command::Batch {
            cmds: vec![b.clone(), a.clone()],
        });
        assert_eq!(
            again,
            CommandResult::Batch(vec![results[2].clone(), results[0].clone()])
        );
        assert_eq!(s.next_pid_block, next, "nothing handed out twice");
        // A batch inside a batch or an envelope is refused, changing nothing.
        let inner = Command::Batch {
            cmds: vec![once(5, Command::AllocPidBlock { node: 1 })],
        };
        let nested = s.apply(&Command::Batch {
            cmds: vec![inner.clone()],
        });
        assert_eq!(
            nested,
            CommandResult::Batch(vec![CommandResult::Refused(Refusal::NestedOnce)])
        );
        let wrapped = Command::Once {
            client: 7,
            seq: 6,
            cmd: Box::new(inner),
        };
        assert!(matches!(s.apply(&wrapped), CommandResult::Refused(_)));
        // Too long a batch is refused whole.
        let long = Command::Batch {
            cmds: (0..=BATCH_COMMANDS_MAX as u64)
                .map(|k| once(100 + k, Command::AllocPidBlock { node: 1 }))
                .collect(),
        };
        assert!(matches!(
            s.apply(&long),
            CommandResult::Refused(Refusal::BatchTooLarge { .. })
        ));
        assert_eq!(s.next_pid_block, next);
    }

    #[test]
    fn the_book_stays_bounded() {
        let mut book = OnceBook::default();
        for seq in 0..(ONCE_SEQS_PER_CLIENT_MAX as u64 + 10) {
            book.record(1, seq, CommandResult::Ok);
        }
        assert_eq!(book.clients[&1].results.len(), ONCE_SEQS_PER_CLIENT_MAX);
        assert!(book.seen(1, 0).is_none(), "the oldest result was forgotten");
        for client in 2..(ONCE_CLIENTS_MAX as u64 + 5) {
            book.record(client, 0, CommandResult::Ok);
        }
        assert_eq!(book.clients.len(), ONCE_CLIENTS_MAX);
        assert!(
            book.seen(1, 20).is_none(),
            "the stalest client was forgotten"
        );
        book.record(3, 1, CommandResult::Ok);
        assert!(book.seen(3, 1).is_some());
    }
}
