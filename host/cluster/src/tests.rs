//! Multi-node tests of the Raft layer over an in-memory transport with
//! partitions, each node with its own redb store in a temp dir.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tempfile::TempDir;

use super::*;

/// Generous bound for anything that should happen "soon" on a loaded
/// 2-core machine.
const SETTLE: Duration = Duration::from_secs(60);

/// The shared in-memory network: running nodes by id, and isolated nodes.
#[derive(Default)]
struct MemNet {
    nodes: Mutex<BTreeMap<NodeId, Raft>>,
    isolated: Mutex<BTreeSet<NodeId>>,
    /// Log replication to this node arrives this late (a slow follower).
    slow: Mutex<Option<(NodeId, Duration)>>,
}

impl MemNet {
    fn is_isolated(&self, id: NodeId) -> bool {
        self.isolated.lock().expect("lock").contains(&id)
    }
}

/// One node's view of the network.
struct MemTransport {
    from: NodeId,
    net: Arc<MemNet>,
}

#[async_trait]
impl RaftTransport for MemTransport {
    async fn rpc(
        &self,
        target: NodeId,
        _addr: &str,
        kind: RpcKind,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, TransportError> {
        let unreachable = |reason: &str| TransportError::Unreachable {
            target,
            reason: reason.to_string(),
        };
        if self.net.is_isolated(self.from) || self.net.is_isolated(target) {
            return Err(unreachable("partitioned"));
        }
        let slow = *self.net.slow.lock().expect("lock");
        if let Some((node, late)) = slow {
            if node == target && kind == RpcKind::AppendEntries {
                tokio::time::sleep(late).await;
            }
        }
        let raft = self.net.nodes.lock().expect("lock").get(&target).cloned();
        let raft = raft.ok_or_else(|| unreachable("not running"))?;
        let answer = raft
            .handle_rpc(kind, &body, &format!("n{}", self.from))
            .await
            .map_err(|e| TransportError::Failed {
                target,
                reason: e.to_string(),
            })?;
        // A partition that starts mid-call also loses the answer.
        if self.net.is_isolated(self.from) || self.net.is_isolated(target) {
            return Err(unreachable("partitioned"));
        }
        Ok(answer)
    }
}

/// An admin's identity, for role-bearing writes.
fn admin() -> shoal_pki::Owner {
    shoal_pki::Owner {
        role: shoal_pki::Role::Admin,
        id: "root".into(),
    }
}

fn info(id: NodeId) -> MemberInfo {
    MemberInfo {
        name: format!("n{id}"),
        addr: format!("mem:{id}"),
    }
}

fn test_config() -> RaftConfig {
    RaftConfig {
        write_timeout_ms: 5000,
        ..RaftConfig::default()
    }
}

struct TestCluster {
    net: Arc<MemNet>,
    dirs: BTreeMap<NodeId, TempDir>,
    config: RaftConfig,
}

impl TestCluster {
    fn new(config: RaftConfig) -> Self {
        TestCluster {
            net: Arc::new(MemNet::default()),
            dirs: BTreeMap::new(),
            config,
        }
    }

    /// Open node `id` (reusing its directory if it ran before) and put it on
    /// the network.
    async fn start(&mut self, id: NodeId) -> Raft {
        self.dirs
            .entry(id)
            .or_insert_with(|| tempfile::tempdir().expect("temp dir"));
        let dir = self.dirs[&id].path().to_path_buf();
        let transport = Arc::new(MemTransport {
            from: id,
            net: self.net.clone(),
        });
        let raft = Raft::open(id, info(id), &dir, transport, self.config.clone())
            .await
            .expect("open raft");
        self.net
            .nodes
            .lock()
            .expect("lock")
            .insert(id, raft.clone());
        raft
    }

    /// Take node `id` off the network and shut it down.
    async fn stop(&self, id: NodeId) {
        let raft = self.net.nodes.lock().expect("lock").remove(&id);
        if let Some(raft) = raft {
            raft.shutdown().await.expect("shutdown");
        }
    }

    fn node(&self, id: NodeId) -> Raft {
        self.net.nodes.lock().expect("lock")[&id].clone()
    }

    fn isolate(&self, id: NodeId) {
        self.net.isolated.lock().expect("lock").insert(id);
    }

    fn heal(&self) {
        self.net.isolated.lock().expect("lock").clear();
    }

    /// Bootstrap node 1, add nodes 2 and 3 (as state records and as voters).
    async fn three_nodes(&mut self) -> [Raft; 3] {
        let n1 = self.start(1).await;
        n1.bootstrap(BTreeMap::new(), String::new(), 1000)
            .await
            .expect("bootstrap");
        for id in [2, 3] {
            let r = n1
                .write(Command::AddNode {
                    name: format!("n{id}"),
                    addr: format!("mem:{id}"),
                    labels: BTreeMap::new(),
                    now_ms: 1000 + id,
                })
                .await
                .expect("add node record");
            assert_eq!(r, CommandResult::NodeId(id));
        }
        let n2 = self.start(2).await;
        let n3 = self.start(3).await;
        n1.add_member(2, info(2)).await.expect("add member 2");
        // Node 2 is a voter now: adding 3 through it is forwarded to the leader.
        n2.add_member(3, info(3)).await.expect("add member 3");
        for n in [&n1, &n2, &n3] {
            wait_until("all see three voters", || {
                n.status().voters == vec![1, 2, 3]
            })
            .await;
        }
        [n1, n2, n3]
    }
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let started = Instant::now();
    while !cond() {
        assert!(started.elapsed() < SETTLE, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Wait until every node's applied state equals the first one's, and all
/// have applied at least `min_blocks` pid blocks.
async fn wait_converged(nodes: &[&Raft], min_blocks: usize) {
    wait_until("states converge", || {
        let first = nodes[0].state();
        first.pid_blocks.len() >= min_blocks && nodes.iter().all(|n| *n.state() == *first)
    })
    .await;
}

async fn alloc(raft: &Raft, node: NodeId) -> u64 {
    match raft.write(Command::AllocPidBlock { node }).await {
        Ok(CommandResult::PidBlock(first)) => first,
        other => panic!("AllocPidBlock via node {}: {other:?}", raft.id()),
    }
}

/// `count` operators' key-value writes through `raft`, from key `from` on
/// (a hundred at a time, which the leader batches): past
/// [`crate::state::kv::OVERLAY_ENTRIES_MAX`], the state machines flush
/// entries to their key-value files.
async fn kv_puts(raft: &Raft, from: u32, count: u32) {
    let owner = shoal_pki::Owner {
        role: shoal_pki::Role::Client,
        id: "kv-owner".into(),
    };
    let keys: Vec<u32> = (from..from + count).collect();
    for chunk in keys.chunks(100) {
        let writes = chunk.iter().map(|i| {
            raft.write(Command::KvByCaller {
                owner: owner.clone(),
                bucket: "b".into(),
                key: i.to_be_bytes().to_vec(),
                op: crate::state::kv::KvOp::Set {
                    value: vec![*i as u8; 64],
                },
                by: owner.clone(),
            })
        });
        for r in futures_util::future::join_all(writes).await {
            assert!(matches!(r, Ok(CommandResult::KvVersion(_))), "{r:?}");
        }
    }
}

/// How many key-value entries `raft` holds, and whether its book equals
/// `other`'s.
fn kv_agrees(raft: &Raft, other: &Raft) -> (usize, bool) {
    let (a, b) = (raft.state(), other.state());
    (a.kv.iter().count(), a.kv == b.kv)
}

fn current_leader(nodes: &[&Raft]) -> Option<NodeId> {
    nodes.iter().find(|n| n.status().is_leader).map(|n| n.id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_apply_writes_from_any_node() {
    let mut c = TestCluster::new(test_config());
    let [n1, n2, n3] = c.three_nodes().await;
    let st = n1.state();
    assert_eq!(st.ca_node, Some(1));
    assert_eq!(st.nodes.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);

    // Each node writes; followers' writes are forwarded to the leader.
    let mut firsts = BTreeSet::new();
    for n in [&n1, &n2, &n3] {
        firsts.insert(alloc(n, n.id()).await);
    }
    assert_eq!(firsts.len(), 3, "three distinct blocks: {firsts:?}");
    wait_converged(&[&n1, &n2, &n3], 3).await;
    for n in [&n1, &n2, &n3] {
        let st = n.state();
        for first in &firsts {
            assert!(st.pid_blocks.contains_key(first));
        }
        assert!(n.is_initialized());
        assert!(n.leader().is_some());
    }
    // A refused command travels back as a value, not an error.
    let r = n3
        .write_as(
            Command::SetCordon {
                id: 99,
                cordoned: true,
            },
            &admin(),
        )
        .await
        .expect("write");
    assert_eq!(r, CommandResult::Refused(Refusal::NoNode { id: 99 }));

    // Subscribers see the applied index move.
    let mut rx = n2.subscribe();
    let before = *rx.borrow_and_update();
    alloc(&n1, 1).await;
    tokio::time::timeout(SETTLE, rx.changed())
        .await
        .expect("subscriber woken")
        .expect("sender alive");
    assert!(*rx.borrow() > before);

    for id in [1, 2, 3] {
        c.stop(id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_failover_elects_a_new_leader_and_writes_continue() {
    let mut c = TestCluster::new(test_config());
    let nodes = c.three_nodes().await;
    let all: Vec<&Raft> = nodes.iter().collect();
    wait_until("a leader", || current_leader(&all).is_some()).await;
    let old = current_leader(&all).expect("leader");
    alloc(&nodes[0], 1).await;

    let survivors: Vec<&Raft> = nodes.iter().filter(|n| n.id() != old).collect();
    let killed_at = Instant::now();
    c.stop(old).await;
    wait_until("a new leader among the survivors", || {
        survivors.iter().any(|n| n.status().is_leader)
            && survivors
                .iter()
                .all(|n| n.leader().is_some_and(|l| l != old))
    })
    .await;
    let elected_ms = killed_at.elapsed().as_millis();
    let new = current_leader(&survivors).expect("new leader");
    println!("leader {old} killed; node {new} elected after {elected_ms} ms (election timeout 400-800 ms)");
    assert_ne!(new, old);

    for n in &survivors {
        alloc(n, n.id()).await;
    }
    wait_converged(&survivors, 3).await;
    for n in &survivors {
        c.stop(n.id()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minority_partition_refuses_writes_then_catches_up() {
    let mut c = TestCluster::new(test_config());
    let nodes = c.three_nodes().await;
    let all: Vec<&Raft> = nodes.iter().collect();
    wait_until("a leader", || current_leader(&all).is_some()).await;
    // Cut off the leader itself: the hardest case (it still believes it leads).
    let cut = current_leader(&all).expect("leader");
    let minority = c.node(cut);
    let majority: Vec<&Raft> = nodes.iter().filter(|n| n.id() != cut).collect();
    c.isolate(cut);

    let started = Instant::now();
    let err = minority
        .write(Command::AllocPidBlock { node: cut })
        .await
        .expect_err("a write in the minority must fail");
    let waited = started.elapsed();
    let text = err.to_string();
    println!(
        "minority write refused after {} ms: {text}",
        waited.as_millis()
    );
    assert!(
        matches!(
            err,
            ClusterError::NoQuorum {
                reachable: 1,
                voters: 3,
                // The cut-off leader proposed it: it cannot know it will
                // not commit, and must not say it was refused.
                sent: true,
            }
        ),
        "{err:?}"
    );
    assert!(
        text.contains("no quorum (this node sees 1 of 3 voters)")
            && text.contains("not confirmed")
            && text.contains("may still apply"),
        "{text}"
    );
    // Bounded by write_timeout (plus scheduling slack).
    assert!(waited < Duration::from_millis(5000 + 10_000), "{waited:?}");

    // The majority elects a leader among itself and keeps writing.
    for n in &majority {
        for _ in 0..5 {
            alloc(n, n.id()).await;
        }
    }
    wait_converged(&majority, 10).await;
    assert!(minority.state().pid_blocks.len() < 10);

    c.heal();
    let everyone: Vec<&Raft> = nodes.iter().collect();
    wait_converged(&everyone, 10).await;
    // And the old leader takes writes again (as a follower, forwarding).
    alloc(&minority, cut).await;
    wait_converged(&everyone, 11).await;
    for id in [1, 2, 3] {
        c.stop(id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_node_keeps_its_state_and_rejoins() {
    let mut c = TestCluster::new(test_config());
    let [n1, n2, n3] = c.three_nodes().await;
    for _ in 0..3 {
        alloc(&n1, 1).await;
    }
    wait_converged(&[&n1, &n2, &n3], 3).await;
    let before = n3.state();
    let term_before = n3.status().term;
    c.stop(3).await;
    drop(n3);

    // The cluster moves on while node 3 is down.
    for _ in 0..2 {
        alloc(&n2, 2).await;
    }

    let n3 = c.start(3).await;
    // Straight from its own disk, before talking to anyone:
    assert!(n3.is_initialized());
    let reopened = n3.state();
    assert_eq!(reopened.pid_blocks.len(), before.pid_blocks.len().max(3));
    assert!(before
        .pid_blocks
        .keys()
        .all(|k| reopened.pid_blocks.contains_key(k)));
    assert!(n3.status().term >= term_before);
    assert_eq!(n3.status().voters, vec![1, 2, 3]);

    wait_converged(&[&n1, &n2, &n3], 5).await;
    alloc(&n3, 3).await;
    wait_converged(&[&n1, &n2, &n3], 6).await;
    for id in [1, 2, 3] {
        c.stop(id).await;
    }
}

/// The applied state is not stored: a restarted node rebuilds it from its
/// last snapshot plus the committed log after it, and must come back with
/// exactly the state it had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_rebuilds_its_state_from_its_snapshot_and_log() {
    let config = RaftConfig {
        snapshot_after_entries: 20,
        entries_kept_after_snapshot: 5,
        ..test_config()
    };
    let mut c = TestCluster::new(config);
    let [n1, n2, n3] = c.three_nodes().await;
    // Past two snapshots, and some entries after the last one; key-value
    // entries before and after them, enough to be flushed to disk.
    kv_puts(&n1, 0, 700).await;
    for _ in 0..47 {
        alloc(&n1, 1).await;
    }
    kv_puts(&n1, 600, 30).await;
    wait_converged(&[&n1, &n2, &n3], 47).await;
    wait_until("node 3 to apply every key-value write", || {
        kv_agrees(&n3, &n1) == (700, true)
    })
    .await;
    wait_until("node 3 to build a snapshot", || {
        n3.status().snapshot_index.is_some()
    })
    .await;
    let before = n3.state();
    c.stop(3).await;
    drop(n3);

    let n3 = c.start(3).await;
    let s3 = n3.status();
    assert!(
        s3.snapshot_index.is_some(),
        "it restarted from a snapshot: {s3:?}"
    );
    // Straight from its own disk, before talking to anyone (heartbeats
    // change other parts of the state meanwhile; the blocks only moved by
    // the writes above).
    let after = n3.state();
    assert_eq!(after.pid_blocks, before.pid_blocks);
    assert!(
        after.kv == before.kv,
        "the key-value book came back different"
    );
    assert_eq!(after.kv.iter().count(), 700);
    assert_eq!(after.next_pid_block, before.next_pid_block);
    assert_eq!(
        after.nodes.keys().collect::<Vec<_>>(),
        before.nodes.keys().collect::<Vec<_>>()
    );
    for id in [1, 2, 3] {
        c.stop(id).await;
    }
}

/// A follower cut off from everyone must not raise its term while it is
/// away (openraft has no pre-vote; see `raft/prevote.rs`): when the
/// partition heals, the leader keeps leading in the same term instead of
/// stepping down for a new election.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healed_follower_does_not_unseat_the_leader() {
    let config = RaftConfig {
        dead_after_ms: 2000,
        ..test_config()
    };
    let mut c = TestCluster::new(config);
    let [n1, n2, n3] = c.three_nodes().await;
    wait_converged(&[&n1, &n2, &n3], 0).await;
    let leader_id = current_leader(&[&n1, &n2, &n3]).expect("a leader");
    let leader = c.node(leader_id);
    let follower_id = [1, 2, 3]
        .into_iter()
        .find(|id| *id != leader_id)
        .expect("a follower");
    let follower = c.node(follower_id);
    let term = leader.status().term;

    c.isolate(follower_id);
    // Its election timer (400-800 ms) fires over and over meanwhile.
    wait_until("the leader to declare the cut-off follower dead", || {
        leader.state().node_dead(follower_id).is_some()
    })
    .await;
    let cut_term = follower.status().term;
    c.heal();
    alloc(&leader, leader_id).await;
    wait_until("the healed follower to catch up", || {
        follower.status().last_applied >= leader.status().last_applied
            && follower.status().leader == Some(leader_id)
    })
    .await;
    assert_eq!(cut_term, term, "the cut-off follower raised its term");
    let now = leader.status();
    assert!(
        now.is_leader && now.term == term,
        "the leader was unseated: {now:?}"
    );
    for id in [1, 2, 3] {
        c.stop(id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_node_catches_up_by_snapshot() {
    let config = RaftConfig {
        snapshot_after_entries: 20,
        entries_kept_after_snapshot: 0,
        ..test_config()
    };
    let mut c = TestCluster::new(config);
    let [n1, n2, n3] = c.three_nodes().await;
    wait_converged(&[&n1, &n2, &n3], 0).await;
    c.isolate(3);
    let lag_at = n3.status().last_log_index.unwrap_or(0);

    // Far more than snapshot_after_entries entries while node 3 is away,
    // with key-value entries enough to be flushed to disk.
    for _ in 0..60 {
        alloc(&n1, 1).await;
    }
    kv_puts(&n1, 0, 600).await;
    wait_until("the majority purged its log past node 3", || {
        [&n1, &n2].iter().all(|n| {
            let s = n.status();
            s.snapshot_index.is_some() && s.purged_index.is_some_and(|p| p > lag_at)
        })
    })
    .await;

    c.heal();
    wait_converged(&[&n1, &n2, &n3], 60).await;
    wait_until("node 3 to hold every key-value entry", || {
        kv_agrees(&n3, &n1) == (600, true)
    })
    .await;
    let s3 = n3.status();
    assert!(
        s3.snapshot_index.is_some_and(|i| i > lag_at),
        "node 3 should hold a snapshot past its lag point: {s3:?}"
    );
    // The log stays bounded on every node.
    for n in [&n1, &n2, &n3] {
        let s = n.status();
        let kept = s.last_log_index.unwrap_or(0) - s.purged_index.unwrap_or(0);
        assert!(
            kept <= 2 * 20 + 5,
            "node {} keeps {kept} entries: {s:?}",
            n.id()
        );
    }

    // The installed snapshot survives a restart of node 3.
    c.stop(3).await;
    drop(n3);
    let n3 = c.start(3).await;
    assert!(n3.state().pid_blocks.len() >= 60);
    assert_eq!(n3.state().kv.iter().count(), 600);
    for id in [1, 2, 3] {
        c.stop(id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_member_writes_are_refused() {
    let mut c = TestCluster::new(test_config());
    let [n1, n2, n3] = c.three_nodes().await;
    n1.remove_member(3, &admin())
        .await
        .expect("remove member 3");
    for n in [&n1, &n2] {
        wait_until("voters are 1 and 2", || n.status().voters == vec![1, 2]).await;
        assert!(!n.members().contains_key(&3));
    }
    // Removing again is a no-op.
    n2.remove_member(3, &admin())
        .await
        .expect("idempotent removal");

    let err = n3
        .write(Command::AllocPidBlock { node: 3 })
        .await
        .expect_err("a removed member cannot write");
    println!("removed node's write refused: {err}");
    assert!(
        matches!(
            err,
            ClusterError::NotMember { id: 3 }
                | ClusterError::NoQuorum { .. }
                | ClusterError::NoLeader { .. }
        ),
        "{err:?}"
    );

    // The remaining two still form a quorum.
    alloc(&n2, 2).await;
    wait_converged(&[&n1, &n2], 1).await;
    for id in [1, 2, 3] {
        c.stop(id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uninitialized_and_double_bootstrap_are_refused() {
    let mut c = TestCluster::new(test_config());
    let fresh = c.start(7).await;
    assert!(!fresh.is_initialized());
    let err = fresh
        .write(Command::AllocPidBlock { node: 7 })
        .await
        .expect_err("no cluster yet");
    assert!(matches!(err, ClusterError::NotInitialized), "{err:?}");

    fresh
        .bootstrap(BTreeMap::new(), String::new(), 5)
        .await
        .expect("bootstrap");
    assert_eq!(fresh.state().ca_node, Some(7));
    let err = fresh
        .bootstrap(BTreeMap::new(), String::new(), 6)
        .await
        .expect_err("second bootstrap");
    assert!(matches!(err, ClusterError::AlreadyInitialized), "{err:?}");
    c.stop(7).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handle_rpc_rejects_garbage() {
    let mut c = TestCluster::new(test_config());
    let n = c.start(1).await;
    for kind in RpcKind::ALL {
        let err = n
            .handle_rpc(kind, b"{not json", "n1")
            .await
            .expect_err("garbage body");
        assert!(matches!(err, ClusterError::BadRpc { .. }), "{err:?}");
        assert_eq!(RpcKind::from_path(kind.as_path()), Some(kind));
    }
    c.stop(1).await;
}

/// Poll `cond` (20 ms steps) for at most `within`; the time it took.
async fn took(what: &str, within: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !cond() {
        assert!(
            started.elapsed() < within,
            "timed out after {within:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_declares_a_silent_node_dead_in_raft_and_alive_when_it_returns() {
    let dead_after = Duration::from_millis(3_000);
    let mut c = TestCluster::new(RaftConfig {
        dead_after_ms: 3_000,
        ..test_config()
    });
    let nodes = c.three_nodes().await;
    let all: Vec<&Raft> = nodes.iter().collect();
    wait_until("a leader", || current_leader(&all).is_some()).await;
    let leader = current_leader(&all).expect("leader");
    let cut = [1, 2, 3]
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    let other = [1, 2, 3]
        .into_iter()
        .find(|id| *id != leader && *id != cut)
        .expect("the other follower");
    let mut events = c.node(other).subscribe_liveness();

    // Partition one follower away: the leader declares it dead, on its own
    // clock, no sooner than the window and not much later.
    c.isolate(cut);
    let majority = [c.node(leader), c.node(other)];
    let waited = took(
        "the cut node is declared dead",
        Duration::from_secs(20),
        || majority.iter().all(|n| n.state().node_dead(cut).is_some()),
    )
    .await;
    println!("declared dead {} ms after the cut", waited.as_millis());
    assert!(
        waited >= dead_after - Duration::from_millis(150),
        "{waited:?}"
    );
    assert!(waited <= dead_after + Duration::from_secs(2), "{waited:?}");
    let s = c.node(leader).state();
    assert_eq!(s.node_dead(cut), Some(1));
    assert_eq!(s.liveness[&cut].by, leader);
    assert!(s.liveness[&cut].silent_ms >= 3_000);
    assert_eq!(s.node_dead(leader), None);
    assert_eq!(s.node_dead(other), None);
    let e = tokio::time::timeout(SETTLE, events.recv())
        .await
        .expect("an event")
        .expect("not lagged");
    assert_eq!(
        e,
        crate::LivenessChange {
            node: cut,
            epoch: 1,
            dead: true
        }
    );
    // The cut-off node never judged anyone: its own state has no verdict.
    assert!(c.node(cut).state().liveness.is_empty());
    let view = c.node(cut).view();
    assert!(!view.leader_current, "cut off: {view:?}");

    // Heal: it is heard from again and declared alive, everywhere. (The
    // cut node itself never saw the verdict, so "not dead" is true there
    // at once: wait for it to apply both records, liveness epoch 2.)
    c.heal();
    took(
        "the node is alive again everywhere",
        Duration::from_secs(20),
        || {
            [leader, cut, other].iter().all(|id| {
                let s = c.node(*id).state();
                s.node_dead(cut).is_none() && s.liveness_epoch(cut) == 2
            })
        },
    )
    .await;
    assert_eq!(c.node(cut).state().liveness_epoch(cut), 2);
    let e = tokio::time::timeout(SETTLE, events.recv())
        .await
        .expect("an event")
        .expect("not lagged");
    assert_eq!((e.node, e.epoch, e.dead), (cut, 2, false));

    // Kill the leader: the new one gives the surviving peer a fresh grace
    // period (never declares it dead) and declares the old leader dead no
    // sooner than the window after the stop.
    c.stop(leader).await;
    let survivors = [c.node(cut), c.node(other)];
    let waited = took(
        "the old leader is declared dead",
        Duration::from_secs(20),
        || {
            survivors
                .iter()
                .all(|n| n.state().node_dead(leader).is_some())
        },
    )
    .await;
    println!(
        "old leader declared dead {} ms after it stopped",
        waited.as_millis()
    );
    assert!(waited >= dead_after, "{waited:?}");
    for n in &survivors {
        let s = n.state();
        assert_eq!(s.node_dead(cut), None);
        assert_eq!(s.node_dead(other), None);
    }
    for id in [cut, other] {
        c.stop(id).await;
    }
}

/// A linearizable read on any node sees every write that completed before
/// it began, wherever it was made (ReadIndex through the leader, then the
/// reader waits to apply that far); a node cut off from the majority
/// cannot read linearizably at all (it cannot confirm a leader).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linearizable_reads_see_every_completed_write_and_a_minority_cannot_read() {
    let mut c = TestCluster::new(test_config());
    let nodes = c.three_nodes().await;
    let all: Vec<&Raft> = nodes.iter().collect();
    wait_until("a leader", || current_leader(&all).is_some()).await;
    // One follower lags: replication reaches it 40 ms late, so the
    // others commit without it and its own state is behind. A stale read
    // there misses the write just completed; a linearizable one may not.
    let leader = current_leader(&all).expect("leader");
    let lagging = all
        .iter()
        .map(|n| n.id())
        .find(|id| *id != leader)
        .expect("a follower");
    *c.net.slow.lock().expect("lock") = Some((lagging, Duration::from_millis(40)));
    let mut stale_missed = 0;
    for round in 0..20u64 {
        let writer = all[(round % 3) as usize];
        let reader = c.node(lagging);
        let first = alloc(writer, writer.id()).await;
        if !reader.state().pid_blocks.contains_key(&first) {
            stale_missed += 1;
        }
        let seen = reader
            .linearizable_state()
            .await
            .expect("linearizable read");
        assert!(
            seen.pid_blocks.contains_key(&first),
            "round {round}: node {} read before node {}'s completed write of block {first}",
            reader.id(),
            writer.id()
        );
    }
    println!("stale reads on the lagging follower missed {stale_missed} of 20 completed writes; linearizable reads missed none");
    assert!(
        stale_missed > 0,
        "the follower did not lag: the test shows nothing"
    );
    *c.net.slow.lock().expect("lock") = None;
    let leader = current_leader(&all).expect("leader");
    let cut = all
        .iter()
        .map(|n| n.id())
        .find(|id| *id != leader)
        .expect("a follower");
    c.isolate(cut);
    let err = c
        .node(cut)
        .linearizable_state()
        .await
        .expect_err("a cut-off node read linearizably");
    println!("a cut-off follower's linearizable read: {err}");
    c.heal();
    let back = c
        .node(cut)
        .linearizable_state()
        .await
        .expect("read after heal");
    assert!(back.pid_blocks.len() >= 20);
    for id in [1, 2, 3] {
        c.stop(id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_log_entries_and_each_gets_its_own_result() {
    let mut c = TestCluster::new(test_config());
    let [n1, n2, n3] = c.three_nodes().await;
    let before = n1.status().last_log_index.unwrap_or(0);
    const WRITES: usize = 300;
    let mut tasks = Vec::new();
    for k in 0..WRITES {
        let via = [&n1, &n2, &n3][k % 3].clone();
        let node = via.id();
        tasks.push(tokio::spawn(async move { alloc(&via, node).await }));
    }
    let mut firsts = BTreeSet::new();
    for t in tasks {
        firsts.insert(t.await.expect("writer"));
    }
    // Each write applied once, with its own answer.
    assert_eq!(firsts.len(), WRITES, "distinct blocks");
    wait_converged(&[&n1, &n2, &n3], WRITES).await;
    let st = n1.state();
    for first in &firsts {
        assert!(st.pid_blocks.contains_key(first), "block {first} applied");
    }
    // Fewer entries than writes: concurrent writes went in together.
    let entries = n1.status().last_log_index.unwrap_or(0) - before;
    println!("{WRITES} concurrent writes in {entries} log entries");
    assert!(
        (entries as usize) < WRITES,
        "{WRITES} concurrent writes took {entries} entries"
    );
    for id in [1, 2, 3] {
        c.stop(id).await;
    }
}
