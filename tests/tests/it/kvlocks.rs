//! Replicated key-value and cluster-wide locks from real guests (`locker`,
//! see `guests/locker`) on in-process 3-node clusters: every call and
//! refusal through a follower, mutual exclusion with a holder moved and a
//! holder killed, a replaced holder's fenced write refused, and deadlocks
//! of two and three processes on different nodes. (A holder's node killed
//! with SIGKILL, and the linearizability check under faults, are in
//! `netns`.)

use crate::common;

use common::cluster::{wait_until, TestCluster};
use common::procs::{exit_of, move_to, spawn, stdout, wait_stdout, WAIT};
use common::tally::add_guest_everywhere as add_guest;
use shoal_cluster::Owner;
use shoal_runtime::Pid;
use std::collections::BTreeMap;
use std::time::Duration;

async fn guests(c: &TestCluster) {
    add_guest(c, shoal_tests::LOCKER, "locker").await;
}

/// Every key-value call and each of its refusals, from a guest on a
/// follower (writes forwarded to the leader, reads by ReadIndex) and one
/// on the leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_kv_call_and_refusal_works_from_guests_on_any_node() {
    let c = TestCluster::start(3).await;
    guests(&c).await;
    for i in [1, 0] {
        let bucket = format!("ops{i}");
        let p = spawn(&c, i, &["locker", "ops", &bucket]).await;
        let st = exit_of(&c, i, p).await;
        let out = stdout(&c, i, p);
        assert!(
            st.success() && out.contains("ops done bad=0"),
            "node {i}: {out}"
        );
    }
    c.shutdown().await;
}

/// The pid holding `tally`'s lock in `state`.
fn holder(state: &shoal_cluster::ClusterState) -> Option<u64> {
    state
        .locks
        .get(&Owner::cluster(), "tally")
        .and_then(|l| l.holder)
        .map(|h| h.pid)
}

/// Wait until node 0 applies a grant of `tally`'s lock to `pid` (woken by
/// each apply, so a short hold is not missed).
async fn until_held_by(c: &TestCluster, pid: Pid) {
    c.node(0)
        .raft()
        .wait_for(WAIT, |s| holder(s) == Some(pid.0))
        .await
        .unwrap_or_else(|_| {
            let state = c.node(0).raft().state();
            let lock = state.locks.get(&Owner::cluster(), "tally").cloned();
            let out: Vec<String> = (0..3).map(|i| stdout(c, i, pid)).collect();
            panic!("{pid} never held the lock: {lock:?}; it printed {out:?}")
        });
}

/// Mutual exclusion: six guests on three nodes each add 1 to a counter 25
/// times under one lock (read, pause 10 ms holding it, cas fenced by it).
/// One is moved to another node while it holds the lock, one is killed
/// while it holds it. Every increment a guest reports is distinct, the
/// counter ends at the number of increments (plus at most the killed
/// one's last, whose report it did not live to print), no cas ever meets a
/// version it did not read, and each guest's tokens strictly increase.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn guests_on_three_nodes_count_exactly_under_one_lock_with_holders_moved_and_killed() {
    let c = TestCluster::start(3).await;
    guests(&c).await;
    let mut procs = Vec::new();
    for i in 0..6 {
        let node = i % 3;
        // The one to kill (the fifth) counts on until it is killed.
        let n = if i == 4 { "100000" } else { "25" };
        let p = spawn(&c, node, &["locker", "count", "tally", n, "10", "go"]).await;
        procs.push((node, p));
    }
    for (node, p) in &procs {
        c.node(*node)
            .node()
            .send(Pid(0), *p, b"go".to_vec())
            .expect("send go");
    }
    // Move the first one while it holds the lock.
    let (home, mover) = procs[0];
    until_held_by(&c, mover).await;
    move_to(&c, home, mover, 1).await;
    procs[0].0 = 1;
    // Kill another while it holds the lock.
    let (victim_node, victim) = procs[4];
    until_held_by(&c, victim).await;
    c.node(victim_node).node().kill(victim).expect("kill");
    let mut values: Vec<i64> = Vec::new();
    for (node, p) in &procs {
        if *p != victim {
            wait_stdout(&c, *node, *p, "count done 25").await;
        }
        // A moved process's output moves with it.
        let out = stdout(&c, *node, *p);
        assert!(!out.contains("VIOLATION"), "{p}: {out}");
        let mut last_token = 0;
        for line in out.lines().filter(|l| l.starts_with("inc ")) {
            let mut words = line.split_whitespace().skip(1);
            let v: i64 = words.next().and_then(|v| v.parse().ok()).expect(line);
            let t: u64 = words
                .next()
                .and_then(|t| t.strip_prefix("token="))
                .and_then(|t| t.parse().ok())
                .expect(line);
            assert!(t > last_token, "{p}: token {t} after {last_token}");
            last_token = t;
            values.push(v);
        }
    }
    values.sort_unstable();
    let reported = values.len();
    values.dedup();
    assert_eq!(values.len(), reported, "an increment was reported twice");
    let state = c
        .node(2)
        .raft()
        .linearizable_state()
        .await
        .expect("a linearizable read");
    let entry = state
        .kv
        .get(&Owner::cluster(), "tally", b"total")
        .expect("the counter");
    let total = i64::from_le_bytes(entry.value.as_slice().try_into().expect("8 bytes"));
    // 5 guests × 25, plus what the killed one did before it died.
    assert!(reported >= 125, "{reported} increments reported");
    assert!(
        total == reported as i64 || total == reported as i64 + 1,
        "the counter is {total}, {reported} increments were reported"
    );
    let missing: Vec<i64> = (1..=total)
        .filter(|v| values.binary_search(v).is_err())
        .collect();
    assert!(missing.len() <= 1, "values never reported: {missing:?}");
    println!("counter {total}, {reported} increments reported, unreported {missing:?}");
    assert!(holder(&state).is_none(), "the lock is free at the end");
    c.shutdown().await;
}

/// A holder restored from its snapshot with `--replace` is a new
/// incarnation: it holds nothing its predecessor held, so a waiter gets the
/// lock, and the restored guest, which still believes it holds it, has its
/// fenced write refused (`FENCED`), its unlock refused (`LOCK_LOST`) and
/// its token fails `lock_check`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_holder_restored_as_a_new_incarnation_has_lost_its_lock_and_is_fenced() {
    let c = TestCluster::start(1).await;
    guests(&c).await;
    let node = c.node(0).node();
    let holder_pid = spawn(&c, 0, &["locker", "hold", "tally"]).await;
    wait_stdout(&c, 0, holder_pid, "held token=").await;
    let waiter = spawn(&c, 0, &["locker", "count", "tally", "3"]).await;
    wait_until("the waiter to queue", WAIT, || {
        let state = c.node(0).raft().state();
        state.locks.waiting_for(waiter.0).is_some()
    })
    .await;
    let snap = node
        .snapshot(holder_pid, false, Duration::from_secs(10))
        .await
        .expect("snapshot");
    let grants = shoal_runtime::grants::Grants::default();
    let restored = node
        .restore_snapshot(&snap.id, true, &grants)
        .await
        .expect("restore over the original");
    assert_eq!(restored, holder_pid);
    wait_stdout(&c, 0, waiter, "count done 3").await;
    node.send(Pid(0), holder_pid, b"go".to_vec()).expect("send");
    wait_stdout(&c, 0, holder_pid, "write ").await;
    let out = stdout(&c, 0, holder_pid);
    assert!(
        out.contains("write err=FENCED unlock err=LOCK_LOST check err=FENCED"),
        "{out}"
    );
    c.shutdown().await;
}

/// Deadlocks across nodes: two processes locking `a`,`b` and `b`,`a`, and
/// three locking `x`,`y` / `y`,`z` / `z`,`x`, each pair or ring on
/// different nodes. Exactly one of each cycle gets `DEADLOCK` (at the
/// apply that would have closed the cycle), releases its lock, and the
/// others go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn opposite_lock_orders_on_different_nodes_fail_exactly_one_waiter_with_deadlock() {
    let c = TestCluster::start(3).await;
    guests(&c).await;
    for ring in [&["a", "b"][..], &["x", "y", "z"][..]] {
        let mut procs = Vec::new();
        for (k, first) in ring.iter().enumerate() {
            let second = ring[(k + 1) % ring.len()];
            let p = spawn(&c, k % 3, &["locker", "pair", first, second]).await;
            procs.push((k % 3, p, *first));
        }
        for (node, p, first) in &procs {
            wait_stdout(&c, *node, *p, &format!("have {first}")).await;
        }
        for (node, p, _) in &procs {
            c.node(*node)
                .node()
                .send(Pid(0), *p, b"go".to_vec())
                .expect("send");
        }
        let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
        for (node, p, _) in &procs {
            wait_stdout(&c, *node, *p, "released").await;
            let out = stdout(&c, *node, *p);
            let second = out
                .lines()
                .find(|l| l.starts_with("second "))
                .unwrap_or_else(|| panic!("{out}"))
                .to_string();
            *outcomes.entry(second).or_default() += 1;
        }
        let want = BTreeMap::from([
            ("second err=DEADLOCK".to_string(), 1),
            ("second ok".to_string(), ring.len() - 1),
        ]);
        assert_eq!(outcomes, want, "ring {ring:?}");
    }
    c.shutdown().await;
}

/// `lock` is a capture point: a guest waiting for a lock is moved to
/// another node mid-wait, keeps its place in the queue (the wait is held
/// by the cluster and asked again where it resumes), and gets the lock
/// there once the holder lets go.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_guest_moved_while_waiting_for_a_lock_gets_it_on_its_new_node() {
    let c = TestCluster::start(2).await;
    guests(&c).await;
    let holder_pid = spawn(&c, 0, &["locker", "hold", "tally"]).await;
    wait_stdout(&c, 0, holder_pid, "held token=").await;
    let waiter = spawn(&c, 0, &["locker", "count", "tally", "1"]).await;
    c.node(0)
        .raft()
        .wait_for(WAIT, |s| s.locks.waiting_for(waiter.0).is_some())
        .await
        .expect("the waiter queues");
    move_to(&c, 0, waiter, 1).await;
    let state = c.node(1).raft().state();
    assert!(
        state.locks.waiting_for(waiter.0).is_some(),
        "still queued after the move"
    );
    c.node(0)
        .node()
        .send(Pid(0), holder_pid, b"go".to_vec())
        .expect("send");
    wait_stdout(&c, 0, holder_pid, "write ok unlock ok").await;
    wait_stdout(&c, 1, waiter, "count done 1").await;
    let out = stdout(&c, 1, waiter);
    assert!(out.contains("inc 1 token="), "{out}");
    c.shutdown().await;
}
