//! Modules prepared ahead (#17, `host/daemon/src/modules_ahead.rs`): a
//! module added on one node is fetched and prepared by every other node in
//! the background, before anything runs it there, so a spawn or a move to
//! any of them finds it compiled; with `--prepare-ahead off` nothing
//! happens until a node needs the module.

use crate::common;

use common::cluster::{wait_until, TestCluster};
use common::procs::{exit_of, move_to, spawn, WAIT};
use shoal_registry::Sha256;
use std::time::Instant;

/// Wait until every node of `c` has compiled `hash` (ahead: nothing runs it).
async fn wait_compiled_everywhere(c: &TestCluster, hash: &Sha256, what: &str) {
    for (i, daemon) in c.running().enumerate() {
        let node = daemon.node().clone();
        wait_until(&format!("n{} to prepare {what} ahead", i + 1), WAIT, || {
            node.is_compiled(hash)
        })
        .await;
        assert!(node.registry().contains(hash));
    }
}

/// A pong that moved to n2 answers there (asked from n3), then ends on
/// `stop`.
async fn answers_then_stops_on_n2(c: &TestCluster, pong: shoal_runtime::Pid) {
    let mb = c.node(2).node().open_mailbox();
    mb.send(pong, b"after the move".to_vec()).expect("send");
    let reply = mb.recv(WAIT).await.expect("a reply from n2");
    assert_eq!(reply.data, b"after the move");
    mb.send(pong, b"stop".to_vec()).expect("send stop");
    assert!(exit_of(c, 1, pong).await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_node_prepares_a_module_added_on_one_before_it_runs_there() {
    let c = TestCluster::start(3).await;
    let hash = c.add_guest(0, shoal_tests::PING_PONG, "ping_pong").await;
    let t = Instant::now();
    // Nobody runs it or asks for it on n2 and n3.
    wait_compiled_everywhere(&c, &hash, "ping_pong").await;
    println!("ping_pong prepared ahead on 3 nodes in {:?}", t.elapsed());
    // A pong started on n1 moves to n2, which compiled it ahead; it
    // answers there.
    let pong = spawn(&c, 0, &["ping_pong", "pong"]).await;
    move_to(&c, 0, pong, 1).await;
    answers_then_stops_on_n2(&c, pong).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_prepare_ahead_off_a_node_fetches_a_module_only_when_it_needs_it() {
    let c = TestCluster::start_with(2, |config| config.prepare_ahead = false).await;
    let hash = c.add_guest(0, shoal_tests::PING_PONG, "ping_pong").await;
    // n1's own spawn compiles it there; n2 is never asked.
    let pong = spawn(&c, 0, &["ping_pong", "pong"]).await;
    let n1 = c.node(0).node().clone();
    wait_until("n1 to compile the module it runs", WAIT, || {
        n1.is_compiled(&hash)
    })
    .await;
    let mb = c.node(0).node().open_mailbox();
    mb.send(pong, b"stop".to_vec()).expect("send stop");
    assert!(exit_of(&c, 0, pong).await.success());
    // The module was recorded long ago (the spawn needed it); n2, which
    // would have fetched it ahead by now, still has nothing.
    assert!(!c.node(1).node().registry().contains(&hash));
    assert!(!c.node(1).node().is_compiled(&hash));
    c.shutdown().await;
}

/// A big module prepared ahead on every node at once (the 2 MB Go guest:
/// seconds of Asyncify and compilation each, at the low priority of all
/// preparation) does not make any node look dead: the failure detector
/// delivers no verdict while they prepare, and Raft keeps its leader. A Go
/// process then moves to one of them without waiting for preparation.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn preparing_a_big_module_everywhere_makes_no_node_look_dead() {
    let c = TestCluster::start(3).await;
    let leader = c.leader().expect("a Raft leader");
    let leader_id = c.node(leader).id();
    let mut verdicts = c.node(leader).raft().subscribe_liveness();
    let t = Instant::now();
    let hash = c
        .add_guest(0, shoal_tests::GO_PINGPONG, "go_pingpong")
        .await;
    wait_compiled_everywhere(&c, &hash, "the Go module").await;
    println!(
        "go_pingpong prepared ahead on 3 nodes (one process, two cores) in {:?}",
        t.elapsed()
    );
    match verdicts.try_recv() {
        Err(tokio::sync::broadcast::error::TryRecvError::Empty) => {}
        other => panic!("a liveness verdict while preparing: {other:?}"),
    }
    assert_eq!(
        c.node(leader).raft().view().leader,
        Some(leader_id),
        "the leader changed while preparing"
    );
    // A Go pong moves to a node that prepared it ahead: the move waits for
    // no preparation (the figure the issue names: 10 s per move before,
    // nearly all of it preparing on the target), and it answers there.
    let pong = spawn(&c, 0, &["go_pingpong", "pong"]).await;
    let t = Instant::now();
    move_to(&c, 0, pong, 1).await;
    println!(
        "go_pingpong moved to a node that prepared it ahead in {:?}",
        t.elapsed()
    );
    answers_then_stops_on_n2(&c, pong).await;
    c.shutdown().await;
}
