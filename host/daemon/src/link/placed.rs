//! Placements this node made that the chosen nodes' load, as last heard in
//! their heartbeats, may not show yet.
//!
//! The scheduler scores nodes by the load each reports about once per
//! heartbeat. Without this book, every placement between two heartbeats
//! sees the same figures and picks the same node: a drain of fifty
//! processes, or fifty `shoal run`s in a row, all went to one node. Each
//! placement is counted against its node (one process,
//! [`sched::placement::ASSUMED_PROCESS_BYTES`] of memory) until that node's
//! next heartbeat is applied, which reports the load as it then is.

use shoal_cluster::sched::{self, Candidate};
use shoal_cluster::{ClusterState, NodeId};
use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Clone, Copy, Debug)]
struct Pending {
    /// Placements on the node since `heard_ms`.
    count: u32,
    /// The node's last heartbeat when the first of them was made.
    heard_ms: u64,
}

/// The book (one per node, bounded by the number of members).
#[derive(Debug, Default)]
pub struct PlacedBook {
    pending: Mutex<BTreeMap<NodeId, Pending>>,
}

fn heard_ms(state: &ClusterState, id: NodeId) -> Option<u64> {
    state.nodes.get(&id).map(|n| n.last_heartbeat_ms)
}

impl PlacedBook {
    /// `candidates` with the placements their heartbeats do not show yet
    /// counted in; forgets those a newer heartbeat covers.
    pub fn adjust(&self, state: &ClusterState, candidates: &mut [Candidate]) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.retain(|id, p| heard_ms(state, *id).is_some_and(|h| h <= p.heard_ms));
        for c in candidates {
            if let Some(p) = pending.get(&c.id) {
                c.process_count = c.process_count.saturating_add(p.count);
                c.memory_bytes_free = c.memory_bytes_free.saturating_sub(
                    sched::placement::ASSUMED_PROCESS_BYTES.saturating_mul(u64::from(p.count)),
                );
            }
        }
    }

    /// Count a placement on each of `ids`.
    pub fn record(&self, state: &ClusterState, ids: &[NodeId]) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        for &id in ids {
            let Some(heard) = heard_ms(state, id) else {
                continue;
            };
            let p = pending.entry(id).or_insert(Pending {
                count: 0,
                heard_ms: heard,
            });
            p.count = p.count.saturating_add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_cluster::sched::Target;
    use shoal_cluster::{Command, NodeLoad};

    fn cluster() -> ClusterState {
        let mut s = ClusterState::default();
        s.apply(&Command::Bootstrap {
            ca_cert_pem: String::new(),
            ca_node: 1,
            name: "n1".into(),
            addr: "n1:1".into(),
            labels: Default::default(),
            now_ms: 1,
        });
        for name in ["n2", "n3"] {
            s.apply(&Command::AddNode {
                name: name.into(),
                addr: format!("{name}:1"),
                labels: Default::default(),
                now_ms: 1,
            });
        }
        heartbeat(&mut s, 10);
        s
    }

    /// Every node reports the same load at `now_ms`.
    fn heartbeat(s: &mut ClusterState, now_ms: u64) {
        for id in [1, 2, 3] {
            s.apply(&Command::Heartbeat {
                id,
                load: NodeLoad {
                    memory_bytes_free: 8 << 30,
                    memory_bytes_total: 16 << 30,
                    cpu_load_milli: 100,
                    process_count: 0,
                },
                now_ms,
            });
        }
    }

    fn place_away(book: &PlacedBook, s: &ClusterState) -> NodeId {
        let mut candidates: Vec<Candidate> = crate::link::Link::candidates(s, 1000)
            .into_iter()
            .filter(|c| c.id != 1)
            .collect();
        book.adjust(s, &mut candidates);
        let id = sched::place(&candidates, &Target::Any).expect("placed");
        book.record(s, &[id]);
        id
    }

    #[test]
    fn placements_between_heartbeats_spread_and_a_heartbeat_clears_them() {
        let mut s = cluster();
        let book = PlacedBook::default();
        let mut spread = BTreeMap::new();
        for _ in 0..50 {
            *spread.entry(place_away(&book, &s)).or_insert(0) += 1;
        }
        assert_eq!(spread.get(&2), Some(&25), "{spread:?}");
        assert_eq!(spread.get(&3), Some(&25), "{spread:?}");
        // Without the book, all fifty go to the same node (an empty book
        // changes nothing, so each placement sees the same figures).
        assert_eq!(place_away(&PlacedBook::default(), &s), 2);
        // A newer heartbeat reports the load as it is: the book forgets.
        heartbeat(&mut s, 20);
        let mut c: Vec<Candidate> = crate::link::Link::candidates(&s, 1000);
        book.adjust(&s, &mut c);
        assert!(c.iter().all(|c| c.process_count == 0), "{c:?}");
    }
}
