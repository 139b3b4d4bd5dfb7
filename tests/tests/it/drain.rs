//! Draining a node and rebalancing a cluster by live migration, on real
//! loopback clusters with real `migrant tally` guests.

use crate::common;

use common::cluster::{wait_until, TestCluster};
use common::procs::spawn;
use common::tally::{add_guest_everywhere as add_guest, ask, field};
use shoal_cluster::{Command, NodeStatus};
use shoal_daemon::migrate::drain::{self, DrainState, DrainStatus};
use shoal_daemon::DaemonConfig;
use shoal_runtime::Pid;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);
/// A whole drain on a loaded 2-core machine.
const DRAIN_WAIT: Duration = Duration::from_secs(600);

/// `n` tallies on node `i`, each ready.
async fn tallies(c: &TestCluster, i: usize, n: usize) -> Vec<Pid> {
    let mut pids = Vec::with_capacity(n);
    for _ in 0..n {
        pids.push(spawn(c, i, &["migrant", "tally"]).await);
    }
    let node = c.node(i).node().clone();
    for pid in &pids {
        wait_until(&format!("{pid} to be ready"), WAIT, || {
            node.stdout_text(*pid).contains("tally ready")
        })
        .await;
    }
    pids
}

/// Send tally `k` of `pids` numbered messages `seq 0` .. `seq k%5` (so
/// each has its own count to keep), from a host mailbox on node `via`.
/// Returns the count each should have received.
fn send_numbered(c: &TestCluster, via: usize, pids: &[Pid]) -> Vec<u64> {
    let mb = c.node(via).node().open_mailbox();
    pids.iter()
        .enumerate()
        .map(|(k, pid)| {
            let count = (k % 5 + 1) as u64;
            for n in 0..count {
                mb.send(*pid, format!("seq {n}").into_bytes())
                    .unwrap_or_else(|e| panic!("send to {pid}: {e:?}"));
            }
            count
        })
        .collect()
}

/// Every tally answers from node `via` with exactly its messages, in order.
async fn assert_counts_intact(c: &TestCluster, via: usize, pids: &[Pid], counts: &[u64]) {
    for (pid, count) in pids.iter().zip(counts) {
        let line = ask(c, via, *pid, "get").await;
        assert_eq!(field(&line, "received"), *count, "{pid}: {line}");
        assert_eq!(field(&line, "gaps"), 0, "{pid}: {line}");
        assert_eq!(field(&line, "dups"), 0, "{pid}: {line}");
    }
}

/// Index of the node the directory (as node `via` sees it) places `pid` on.
fn home_of(c: &TestCluster, via: usize, pid: Pid) -> Option<usize> {
    let id = c.node(via).raft().state().directory.get(&pid.0)?.node;
    c.nodes
        .iter()
        .position(|d| d.as_ref().map(|d| d.id()) == Some(id))
}

/// How many of `pids` each node index runs, per the directory.
fn spread(c: &TestCluster, pids: &[Pid]) -> BTreeMap<usize, usize> {
    let mut counts: BTreeMap<usize, usize> = (0..c.nodes.len()).map(|i| (i, 0)).collect();
    for pid in pids {
        if let Some(i) = home_of(c, 0, *pid) {
            *counts.entry(i).or_insert(0) += 1;
        }
    }
    counts
}

fn is_cordoned(c: &TestCluster, i: usize) -> bool {
    let id = c.node(i).id();
    c.node(0).raft().state().nodes.get(&id).map(|n| n.status) == Some(NodeStatus::Cordoned)
}

/// Wait for node `i`'s drain to end.
async fn wait_drain(c: &TestCluster, i: usize) -> DrainStatus {
    let inner = c.node(i).migration().clone();
    wait_until("the drain to end", DRAIN_WAIT, || {
        drain::status(&inner).is_ok_and(|s| s.state != DrainState::Running)
    })
    .await;
    drain::status(&inner).expect("a drain status")
}

/// The accounting every status must satisfy.
fn assert_accounted(s: &DrainStatus) {
    assert_eq!(
        s.moved + s.gone + s.failed.len() + s.remaining.len(),
        s.total,
        "{s:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn draining_a_node_moves_its_fifty_tallies_with_their_counts() {
    let c = TestCluster::start(3).await;
    add_guest(&c, shoal_tests::MIGRANT, "migrant").await;
    let pids = tallies(&c, 0, 50).await;
    let counts = send_numbered(&c, 0, &pids);
    let started = Instant::now();
    let first = drain::start(c.node(0).migration(), Some(DRAIN_WAIT))
        .await
        .expect("the drain starts");
    assert_eq!(first.state, DrainState::Running);
    assert_eq!(first.total, 50, "{first:?}");
    assert!(is_cordoned(&c, 0), "cordoned first");
    // A second drain while one runs is refused.
    let e = drain::start(c.node(0).migration(), None)
        .await
        .expect_err("one drain at a time");
    assert_eq!(e.status(), 409, "{e}");
    let end = wait_drain(&c, 0).await;
    let took = started.elapsed();
    println!("drained 50 tallies in {took:?}: {end:?}");
    assert_eq!(end.state, DrainState::Done, "{end:?}");
    assert_eq!(end.moved, 50, "{end:?}");
    assert!(end.failed.is_empty() && end.remaining.is_empty(), "{end:?}");
    assert!(end.is_complete());
    assert_accounted(&end);
    for pid in &pids {
        assert!(
            !c.node(0).node().router().is_local(*pid),
            "{pid} still on n1"
        );
        let home = home_of(&c, 0, *pid);
        assert!(matches!(home, Some(1 | 2)), "{pid} is on {home:?}");
        let i = home.unwrap_or(0);
        assert!(
            c.node(i).node().router().is_local(*pid),
            "{pid} not running on node {i}"
        );
    }
    let s = spread(&c, &pids);
    println!("spread: {s:?}");
    assert!(s[&1] > 0 && s[&2] > 0, "both other nodes used: {s:?}");
    assert_eq!(s[&0], 0);
    assert_counts_intact(&c, 0, &pids, &counts).await;
    assert!(is_cordoned(&c, 0), "still cordoned after the drain");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_drain_asked_of_another_node_is_forwarded_and_can_be_cancelled() {
    let c = TestCluster::start(3).await;
    add_guest(&c, shoal_tests::MIGRANT, "migrant").await;
    let pids = tallies(&c, 0, 16).await;
    let counts = send_numbered(&c, 0, &pids);
    // Through n2's control API: forwarded to n1, which runs the job.
    let client = c.admin_client(1);
    let first = client
        .drain_start("n1", Some(Duration::from_secs(600)))
        .await
        .expect("drain started through n2");
    assert_eq!(first.node, "n1");
    assert_eq!(first.total, 16, "{first:?}");
    let cancelled = client.drain_cancel("n1").await.expect("cancel");
    println!("after cancel: {cancelled:?}");
    assert_eq!(cancelled.state, DrainState::Cancelled, "{cancelled:?}");
    assert_accounted(&cancelled);
    assert!(
        !cancelled.remaining.is_empty(),
        "cancelled early, something is left: {cancelled:?}"
    );
    // The status stays readable, through any node.
    let again = client.drain_status("n1").await.expect("status");
    assert_eq!(again, cancelled);
    // Nothing left to cancel now.
    let e = client.drain_cancel("n1").await.expect_err("not running");
    assert_eq!(e.status(), Some(409), "{e}");
    // What was left stays on n1; what moved stays moved; n1 stays cordoned.
    for pid in &cancelled.remaining {
        assert!(c.node(0).node().router().is_local(*pid), "{pid} left on n1");
    }
    let s = spread(&c, &pids);
    assert_eq!(s[&0], cancelled.remaining.len(), "{s:?}");
    assert!(is_cordoned(&c, 0));
    assert_counts_intact(&c, 2, &pids, &counts).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_drain_past_its_deadline_reports_what_is_left() {
    let c = TestCluster::start(2).await;
    add_guest(&c, shoal_tests::MIGRANT, "migrant").await;
    let pids = tallies(&c, 0, 10).await;
    let first = drain::start(c.node(0).migration(), Some(Duration::from_millis(1)))
        .await
        .expect("the drain starts");
    assert_eq!(first.deadline_ms, 1);
    let end = wait_drain(&c, 0).await;
    println!("{end:?}");
    assert_eq!(end.state, DrainState::DeadlinePassed, "{end:?}");
    assert!(!end.remaining.is_empty(), "{end:?}");
    assert!(!end.is_complete());
    assert_accounted(&end);
    for pid in &end.remaining {
        assert!(c.node(0).node().router().is_local(*pid), "{pid} left on n1");
    }
    for pid in &pids {
        assert_eq!(field(&ask(&c, 1, *pid, "get").await, "received"), 0);
    }
    // A bad deadline is refused.
    let e = drain::start(c.node(0).migration(), Some(Duration::ZERO))
        .await
        .expect_err("zero deadline");
    assert_eq!(e.status(), 400, "{e}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_process_with_nowhere_to_go_is_reported_as_failed() {
    let c = TestCluster::start(2).await;
    add_guest(&c, shoal_tests::MIGRANT, "migrant").await;
    let pids = tallies(&c, 0, 2).await;
    // The only other node takes nothing.
    let n2 = c.node(1).id();
    c.node(0)
        .raft()
        .write_as(
            Command::SetCordon {
                id: n2,
                cordoned: true,
            },
            &shoal_pki::Owner {
                role: shoal_pki::Role::Admin,
                id: "root".into(),
            },
        )
        .await
        .expect("cordon n2");
    drain::start(c.node(0).migration(), None)
        .await
        .expect("the drain starts");
    let end = wait_drain(&c, 0).await;
    println!("{end:?}");
    assert_eq!(end.state, DrainState::Done, "{end:?}");
    assert_eq!(end.failed.len(), 2, "{end:?}");
    for f in &end.failed {
        assert!(f.why.contains("no node can take"), "{f:?}");
    }
    assert!(!end.is_complete());
    for pid in &pids {
        assert!(c.node(0).node().router().is_local(*pid));
    }
    c.shutdown().await;
}

fn rebalancing(cfg: &mut DaemonConfig) {
    cfg.rebalance.enabled = true;
    cfg.rebalance.interval = Duration::from_millis(300);
}

fn not_rebalancing(cfg: &mut DaemonConfig) {
    cfg.rebalance.enabled = false;
    cfg.rebalance.interval = Duration::from_millis(300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_joins_gets_its_share_of_the_processes() {
    let mut c = TestCluster::start_with(2, rebalancing).await;
    add_guest(&c, shoal_tests::MIGRANT, "migrant").await;
    // All on n1; they start moving to n2 at once (that is the point).
    let pids = tallies(&c, 0, 8).await;
    let counts = send_numbered(&c, 1, &pids);
    let skew_max = 2;
    wait_until("n1 and n2 to even out", DRAIN_WAIT, || {
        let s = spread(&c, &pids);
        s.values().sum::<usize>() == pids.len() && s[&0].abs_diff(s[&1]) <= skew_max
    })
    .await;
    println!("two nodes: {:?}", spread(&c, &pids));
    let started = Instant::now();
    c.add_node().await;
    c.wait_healthy(3).await;
    wait_until("n3 to take its share", DRAIN_WAIT, || {
        let s = spread(&c, &pids);
        let (max, min) = (s.values().max(), s.values().min());
        s.values().sum::<usize>() == pids.len()
            && s[&2] >= 2
            && max.zip(min).is_some_and(|(a, b)| a - b <= skew_max)
    })
    .await;
    println!(
        "three nodes after {:?}: {:?}",
        started.elapsed(),
        spread(&c, &pids)
    );
    assert_counts_intact(&c, 2, &pids, &counts).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_rebalancing_off_nothing_moves() {
    let c = TestCluster::start_with(2, not_rebalancing).await;
    add_guest(&c, shoal_tests::MIGRANT, "migrant").await;
    let pids = tallies(&c, 0, 8).await;
    // A rebalancer would move some: 8 against 0 is past the skew allowed.
    let ctx = c.node(0).migration().clone();
    let mut on = ctx.rebalance.clone();
    on.enabled = true;
    let raft = c.node(0).raft().clone();
    wait_until("a plan that would move some", WAIT, || {
        shoal_daemon::migrate::rebalance::plan(&raft.state(), &on, |_| false)
            .is_some_and(|p| !p.pids.is_empty())
    })
    .await;
    // Off, the rebalancing task ends at once instead of looping (no
    // waiting for intervals to pass: it has nothing that could run later).
    tokio::time::timeout(WAIT, shoal_daemon::migrate::rebalance::run(ctx))
        .await
        .expect("with rebalancing off the task returns at once");
    let s = spread(&c, &pids);
    assert_eq!(s[&0], 8, "{s:?}");
    for pid in &pids {
        assert!(c.node(0).node().router().is_local(*pid));
    }
    c.shutdown().await;
}
