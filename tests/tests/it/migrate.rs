//! Live migration on real loopback clusters: processes keep their pid, their
//! state and their messages while they move between nodes.

use crate::common;

use common::cluster::{wait_until, TestCluster};
use common::procs::{home_of, stderr, stdout, wait_stdout};
use common::tally::{add_guest_everywhere as add_guest, ask, field};
use shoal_daemon::migrate::drain::{self, DrainState};
use shoal_daemon::migrate::source::{migrate, MigrateError};
use shoal_daemon::migrate::MigrateReport;
use shoal_registry::Sha256;
use shoal_runtime::Pid;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);

/// Start `argv` on node `i`; the module (argv[0], a cluster-wide name) is
/// fetched there if needed.
async fn spawn(c: &TestCluster, i: usize, _hash: Sha256, argv: &[&str]) -> Pid {
    let args = argv[1..].iter().map(|s| s.to_string()).collect();
    c.node(i)
        .node()
        .spawn_by_reference(argv[0], args)
        .await
        .unwrap_or_else(|code| panic!("spawn {argv:?} on node {i}: error {code}"))
}

/// A `migrant hold <mib>` on node 0, once it holds its memory.
async fn hold(c: &TestCluster, m: Sha256, mib: u32) -> Pid {
    let pid = spawn(c, 0, m, &["migrant", "hold", &mib.to_string()]).await;
    wait_stdout(c, 0, pid, &format!("holding {mib} MiB")).await;
    pid
}

/// Move `pid` from node `from` to node `to` (indices).
async fn move_to(
    c: &TestCluster,
    from: usize,
    pid: Pid,
    to: usize,
) -> Result<MigrateReport, MigrateError> {
    let name = c.node(to).name().to_string();
    migrate(c.node(from).migration(), pid, Some(&name)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tally_moves_a_to_b_to_c_to_a_under_two_full_speed_senders() {
    let c = TestCluster::start(3).await;
    let m = add_guest(&c, shoal_tests::MIGRANT, "migrant").await;
    let tally = spawn(&c, 0, m, &["migrant", "tally"]).await;
    wait_stdout(&c, 0, tally, "tally ready").await;
    const N: u64 = 1_500_000;
    let n = N.to_string();
    let t = tally.0.to_string();
    // Senders on the two other nodes, sending as fast as they can.
    let s2 = spawn(&c, 1, m, &["migrant", "send", &t, &n]).await;
    let s3 = spawn(&c, 2, m, &["migrant", "send", &t, &n]).await;
    let before = ask(&c, 1, tally, "get").await;
    let mut reports = Vec::new();
    // A → B → C → A, while the messages flow.
    let mut senders_were_running = 0;
    for (from, to) in [(0, 1), (1, 2), (2, 0)] {
        let running =
            c.node(1).node().router().is_local(s2) && c.node(2).node().router().is_local(s3);
        let r = move_to(&c, from, tally, to).await.expect("migrate");
        if running
            && c.node(1).node().router().is_local(s2)
            && c.node(2).node().router().is_local(s3)
        {
            senders_were_running += 1;
        }
        println!("{r}\n  {:?}", r.phases_us);
        assert_eq!(r.pid, tally);
        assert_eq!(home_of(&c, tally), Some(to));
        assert!(c.node(to).node().router().is_local(tally));
        assert!(!c.node(from).node().router().is_local(tally));
        reports.push(r);
    }
    for (i, s) in [(1, s2), (2, s3)] {
        let st = tokio::time::timeout(WAIT, c.node(i).node().wait(s))
            .await
            .expect("sender finishes")
            .expect("sender known");
        assert!(
            st.success(),
            "sender {s}: {st}\nstderr:\n{}",
            stderr(&c, i, s)
        );
    }
    // Every message arrived once and in order, per sender.
    let node0 = c.node(0).node().clone();
    let mut line = String::new();
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        line = ask(&c, 0, tally, "get").await;
        if field(&line, "received") >= 2 * N {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("before: {before}\nafter:  {line}");
    for d in c.running() {
        let err = d.node().log(tally).map(|l| {
            String::from_utf8_lossy(&l.stream_bytes(shoal_runtime::log::Stream::Stderr))
                .into_owned()
        });
        if let Some(e) = err.filter(|e| !e.is_empty()) {
            println!("stderr of the tally on {}: {e}", d.name());
        }
    }
    println!("senders: {s2} on n2, {s3} on n3");
    assert_eq!(field(&line, "received"), 2 * N, "{line}");
    assert_eq!(field(&line, "dups"), 0, "{line}");
    assert_eq!(field(&line, "gaps"), 0, "{line}");
    assert_eq!(field(&line, "senders"), 2, "{line}");
    // Its counter went on, it never restarted.
    assert!(
        field(&line, "ticks") >= field(&before, "ticks"),
        "{before} / {line}"
    );
    // Its log came along: the line it printed on node 0 at the start.
    assert!(node0.stdout_text(tally).contains("tally ready"));
    // The moves happened while both senders were sending.
    assert!(
        senders_were_running >= 2,
        "only {senders_were_running} moves overlapped the senders"
    );
    assert_eq!(reports.len(), 3);
    c.shutdown().await;
}

/// The target makes the arriving instance ahead and writes the pages into
/// it as they arrive; a fresh instance holds the module's data segments,
/// so pages the process zeroed there (sent as nothing: they are zero)
/// must be zeroed in it. A process that wiped 16 KiB of its static data
/// keeps it wiped across moves both ways, and the rest of its memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn static_data_a_process_zeroed_stays_zero_when_it_moves() {
    let c = TestCluster::start(2).await;
    let m = add_guest(&c, shoal_tests::MIGRANT, "migrant").await;
    let pid = hold(&c, m, 1).await;
    assert_eq!(ask(&c, 0, pid, "statics").await, (0x5a * 16384).to_string());
    assert_eq!(ask(&c, 0, pid, "wipe").await, "ok");
    let sum = ask(&c, 0, pid, "sum").await;
    for (from, to) in [(0, 1), (1, 0), (0, 1)] {
        move_to(&c, from, pid, to).await.expect("migrate");
        let (a, b) = (from + 1, to + 1);
        assert_eq!(ask(&c, to, pid, "statics").await, "0", "after n{a} → n{b}");
        assert_eq!(ask(&c, to, pid, "sum").await, sum);
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_repeat_migration_sends_only_the_pages_that_changed() {
    let c = TestCluster::start(2).await;
    let m = add_guest(&c, shoal_tests::MIGRANT, "migrant").await;
    let pid = hold(&c, m, 16).await;
    let sum = ask(&c, 0, pid, "sum").await;
    let first = move_to(&c, 0, pid, 1).await.expect("migrate");
    println!("{first}");
    assert!(first.pages_total >= 4096, "{first}");
    assert!(first.pages_sent + first.pages_known == first.pages_total);
    // With writes tracked, the freeze copies only what the process wrote
    // since the pre-copy: the pre-copy let go of its image of memory.
    if shoal_runtime::dirty::WriteTracker::supported() {
        assert!(!first.freeze_copied_memory, "{first:?}");
    }
    assert_eq!(ask(&c, 0, pid, "touch 8").await, "ok");
    // Back to the node it came from: that node kept its pages.
    let back = move_to(&c, 1, pid, 0).await.expect("migrate back");
    println!("{back}");
    assert!(
        back.pages_sent * 10 <= back.pages_total,
        "repeat migration sent {} of {} pages",
        back.pages_sent,
        back.pages_total
    );
    // And forth again: the target kept what it was sent the first time.
    assert_eq!(ask(&c, 1, pid, "touch 8").await, "ok");
    let again = move_to(&c, 0, pid, 1).await.expect("migrate again");
    println!("{again}");
    assert!(again.pages_sent * 10 <= again.pages_total, "{again}");
    if shoal_runtime::dirty::WriteTracker::supported() {
        for report in [&back, &again] {
            assert!(!report.freeze_copied_memory, "{report:?}");
        }
    }
    assert_ne!(ask(&c, 1, pid, "sum").await, sum, "the touches are kept");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sleeping_process_wakes_on_time_after_moving() {
    let c = TestCluster::start(2).await;
    let m = add_guest(&c, shoal_tests::MIGRANT, "migrant").await;
    let started = Instant::now();
    let pid = spawn(&c, 0, m, &["migrant", "sleep", "1500"]).await;
    wait_stdout(&c, 0, pid, "sleeping 1500").await;
    // The sleep began before this: what it took to start (preparing the
    // module on a loaded machine) is not part of it.
    let asleep = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = move_to(&c, 0, pid, 1).await.expect("migrate");
    let moved = asleep.elapsed();
    println!("moved {moved:?} after the sleep was seen to begin: {r}");
    let names: Vec<&str> = r.phases_us.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        &names[..7],
        [
            "precopy_capture",
            "offer",
            "precopy_pages",
            "freeze_capture",
            "final",
            "switch",
            "resume"
        ]
    );
    wait_stdout(&c, 1, pid, "woke").await;
    let woke = asleep.elapsed();
    println!("woke {woke:?} after the sleep was seen to begin");
    // Its deadline moved with it: it wakes on the target, never early,
    // and in bounded time (a lost timer never wakes). The bound runs from
    // when the sleep was seen to begin, not from the spawn: preparing the
    // module on a loaded machine once took most of 17 s before it.
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "woke after {:?}",
        started.elapsed()
    );
    assert!(
        woke < moved.max(Duration::from_millis(1500)) + Duration::from_millis(10_000),
        "woke {woke:?} after the sleep was seen to begin, the move ended at {moved:?}"
    );
    assert_eq!(stdout(&c, 1, pid), "sleeping 1500\nwoke\n");
    c.node(1)
        .node()
        .send(Pid(0), pid, b"stop".to_vec())
        .expect("stop");
    let st = tokio::time::timeout(WAIT, c.node(1).node().wait(pid))
        .await
        .unwrap()
        .unwrap();
    assert!(st.success(), "{st}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pending_cross_node_call_completes_after_the_caller_moves() {
    let c = TestCluster::start(3).await;
    let m = add_guest(&c, shoal_tests::MIGRANT, "migrant").await;
    // The server answers only when told to: the caller is surely blocked
    // in its call while it moves, however slow the machine.
    let server = spawn(&c, 2, m, &["migrant", "server", "gated"]).await;
    wait_stdout(&c, 2, server, "server ready").await;
    let caller = spawn(&c, 0, m, &["migrant", "call", &server.0.to_string()]).await;
    wait_stdout(&c, 0, caller, "asked").await;
    // The caller is blocked in recv, waiting for the server's answer.
    move_to(&c, 0, caller, 1).await.expect("migrate");
    c.node(2)
        .node()
        .send(Pid(0), server, b"release".to_vec())
        .expect("release the answer");
    let st = tokio::time::timeout(WAIT, c.node(1).node().wait(caller))
        .await
        .unwrap()
        .unwrap();
    assert!(st.success(), "{st}");
    assert_eq!(stdout(&c, 1, caller), "asked\nreply answer\n");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_c_guest_moves_mid_conversation() {
    let c = TestCluster::start(3).await;
    let h = add_guest(&c, shoal_tests::C_PONG, "c_pong").await;
    let pong = spawn(&c, 0, h, &["c_pong"]).await;
    wait_stdout(&c, 0, pong, "c_pong ready").await;
    let mb = c.node(1).node().open_mailbox();
    let round = |i: u32| {
        let payload = format!("m{i}");
        mb.send(pong, payload.clone().into_bytes()).expect("send");
        payload
    };
    for i in 0..50 {
        let p = round(i);
        let reply = mb.recv(WAIT).await.expect("reply");
        assert_eq!(reply.data, format!("c:{p}").into_bytes());
    }
    // Queue some, then move it with them in its mailbox.
    for i in 50..60 {
        round(i);
    }
    move_to(&c, 0, pong, 2).await.expect("migrate");
    for i in 60..100 {
        round(i);
    }
    for i in 50..100 {
        let reply = mb.recv(WAIT).await.expect("reply");
        assert_eq!(reply.data, format!("c:m{i}").into_bytes(), "reply {i}");
        assert_eq!(reply.sender, pong);
    }
    mb.send(pong, b"stop".to_vec()).unwrap();
    let st = tokio::time::timeout(WAIT, c.node(2).node().wait(pong))
        .await
        .unwrap()
        .unwrap();
    assert!(st.success(), "{st}");
    assert!(
        stdout(&c, 2, pong).contains("c_pong done 100 messages"),
        "{}",
        stdout(&c, 2, pong)
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn when_the_target_dies_mid_transfer_the_process_resumes_on_the_source() {
    let mut c = TestCluster::start(3).await;
    let m = add_guest(&c, shoal_tests::MIGRANT, "migrant").await;
    let pid = hold(&c, m, 96).await;
    let sum_before = ask(&c, 0, pid, "sum").await;
    let inner = c.node(0).migration().clone();
    let target_name = c.node(2).name().to_string();
    let moving = tokio::spawn(async move { migrate(&inner, pid, Some(&target_name)).await });
    // Stop the target once the transfer has begun.
    let n3 = c.node(2).migration().clone();
    wait_until("the transfer to begin", WAIT, || !n3.arrivals.is_empty()).await;
    c.stop(2).await;
    let result = moving.await.unwrap();
    let err = result.expect_err("the move cannot succeed");
    println!("{err}");
    assert!(
        matches!(err, MigrateError::Resumed { .. }),
        "expected a resume on the source, got {err}"
    );
    // One live copy, on the source, with its memory whole.
    assert!(c.node(0).node().router().is_local(pid));
    assert_eq!(home_of(&c, pid), Some(0));
    assert_eq!(ask(&c, 0, pid, "sum").await, sum_before);
    assert_eq!(ask(&c, 1, pid, "touch 3").await, "ok");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn when_the_source_dies_after_the_switch_the_target_owns_the_process() {
    let mut c = TestCluster::start_with(3, |cfg| {
        // Only n1 halts (the others are sources nowhere here).
        if cfg.name == "n1" {
            cfg.faults.halt_after_switch = true;
        }
    })
    .await;
    let m = add_guest(&c, shoal_tests::MIGRANT, "migrant").await;
    let tally = spawn(&c, 0, m, &["migrant", "tally"]).await;
    wait_stdout(&c, 0, tally, "tally ready").await;
    let mb = c.node(0).node().open_mailbox();
    for n in 0..100 {
        mb.send(tally, format!("seq {n}").into_bytes()).unwrap();
    }
    let before = ask(&c, 1, tally, "get").await;
    let err = move_to(&c, 0, tally, 1).await.expect_err("halted");
    assert!(format!("{err}").contains("fault injected"), "{err}");
    // The source is gone right after the switch.
    c.stop(0).await;
    // The target takes the process from the directory and runs it.
    let n2 = c.node(1).node().clone();
    wait_until("the target to start the process", WAIT, || {
        n2.router().is_local(tally)
    })
    .await;
    // Ask from n3 only once n3 itself routes by the switch: a message it
    // sent while it still named n1 would wait on its lane to the dead n1
    // (re-routing in-flight messages of a dead node is failover's work).
    let (n3, n2_id) = (c.node(2).raft().clone(), c.node(1).id());
    wait_until("n3 to apply the switch", WAIT, || {
        n3.state().directory.get(&tally.0).map(|e| e.node) == Some(n2_id)
    })
    .await;
    // The asking node routes by its own view of the directory: wait until
    // it shows the switch (it may lag on a loaded machine).
    let n2_id = c.node(1).id();
    let n3 = c.node(2).raft().clone();
    wait_until("n3 to see the process on n2", WAIT, || {
        n3.state().directory.get(&tally.0).map(|e| e.node) == Some(n2_id)
    })
    .await;
    let after = ask(&c, 2, tally, "get").await;
    println!("before: {before}\nafter: {after}");
    assert_eq!(field(&after, "received"), 100, "{after}");
    assert_eq!(field(&after, "gaps"), 0, "{after}");
    assert!(field(&after, "ticks") >= field(&before, "ticks"));
    assert_eq!(home_of(&c, tally), Some(1));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refusals_name_the_problem() {
    let c = TestCluster::start(2).await;
    let m = add_guest(&c, shoal_tests::MIGRANT, "migrant").await;
    let pid = spawn(&c, 0, m, &["migrant", "tally"]).await;
    wait_stdout(&c, 0, pid, "tally ready").await;
    let e = migrate(c.node(0).migration(), pid, Some("nope"))
        .await
        .unwrap_err();
    assert!(format!("{e}").contains("nope"), "{e}");
    let e = migrate(c.node(0).migration(), pid, Some("n1"))
        .await
        .unwrap_err();
    assert!(format!("{e}").contains("already runs on node n1"), "{e}");
    let e = migrate(c.node(1).migration(), pid, None).await.unwrap_err();
    assert!(format!("{e}").contains("does not run on this node"), "{e}");
    // Nothing moved.
    assert!(c.node(0).node().router().is_local(pid));
    assert_eq!(field(&ask(&c, 1, pid, "get").await, "received"), 0);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_preemptible_process_spinning_in_guest_code_moves_too() {
    let c = TestCluster::start(2).await;
    let h = add_guest(&c, shoal_tests::CPU_BOUND, "cpu_bound").await;
    // `spin` never calls the host: only the preemption points the
    // preparation put in its loops make it capturable.
    let mut spec = shoal_runtime::SpawnSpec::new(h, vec!["cpu_bound".into(), "spin".into()]);
    spec.preemptible = true;
    let pid = c.node(0).node().spawn(spec).await.expect("spawn");
    wait_stdout(&c, 0, pid, "cpu_bound spinning").await;
    let r = move_to(&c, 0, pid, 1)
        .await
        .expect("migrate a spinning process");
    println!("{r}");
    assert!(c.node(1).node().router().is_local(pid));
    // It spins on there, and can move again.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(c.node(1).node().router().is_local(pid));
    let back = move_to(&c, 1, pid, 0).await.expect("migrate back");
    println!("{back}");
    assert!(c.node(0).node().router().is_local(pid));
    c.node(0).node().kill(pid).unwrap();
    c.shutdown().await;
}

/// The last line of `text` that starts with `prefix`.
fn line_starting<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines()
        .rev()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_process_that_allocates_while_it_moves_is_moved_and_drained_exactly() {
    let c = TestCluster::start(3).await;
    let m = add_guest(&c, shoal_tests::MIGRANT, "migrant").await;
    // 8 KiB a step, a step a millisecond: its memory grows by a Wasm page
    // every few milliseconds, also between a move's pre-copy and freeze.
    let pid = spawn(&c, 0, m, &["migrant", "grow", "8"]).await;
    wait_stdout(&c, 0, pid, "step 100\n").await;
    let mut grew = 0;
    for (from, to) in [(0, 1), (1, 2), (2, 0)] {
        let r = move_to(&c, from, pid, to)
            .await
            .unwrap_or_else(|e| panic!("move n{} -> n{}: {e}", from + 1, to + 1));
        println!("{r}; offered {} bytes", r.memory_bytes_offered);
        assert!(r.memory_bytes >= r.memory_bytes_offered, "{r}");
        if r.memory_bytes > r.memory_bytes_offered {
            grew += 1;
        }
        assert!(c.node(to).node().router().is_local(pid));
        assert_eq!(home_of(&c, pid), Some(to));
    }
    assert!(
        grew >= 1,
        "the memory never grew during a move, so this test showed nothing"
    );
    // Then its node is drained.
    let inner = c.node(0).migration().clone();
    drain::start(&inner, None).await.expect("the drain starts");
    wait_until("the drain to end", WAIT, || {
        drain::status(&inner).is_ok_and(|s| s.state != DrainState::Running)
    })
    .await;
    let end = drain::status(&inner).expect("a drain status");
    println!("{end:?}");
    assert!(end.is_complete() && end.moved == 1, "{end:?}");
    wait_until("the directory to show it moved off n1", WAIT, || {
        home_of(&c, pid).is_some_and(|i| i != 0)
    })
    .await;
    let home = home_of(&c, pid).expect("in the directory");
    assert!(c.node(home).node().router().is_local(pid));
    // It goes on allocating there, then stops and checks every block.
    let node = c.node(home).node().clone();
    let steps_before = stdout(&c, home, pid).lines().count();
    wait_until("it to go on after the drain", WAIT, || {
        node.stdout_text(pid).lines().count() > steps_before
    })
    .await;
    node.send(Pid(0), pid, b"stop".to_vec()).expect("stop");
    let st = tokio::time::timeout(WAIT, node.wait(pid))
        .await
        .expect("it ends")
        .expect("it is known");
    assert!(st.success(), "{st}");
    let out = stdout(&c, home, pid);
    let last = line_starting(&out, "grown ");
    assert!(last.ends_with("check=ok"), "{last}");
    // Exactly what a run that never moved computes and prints.
    let steps = field(last, "steps").to_string();
    let alone = common::TestNode::new();
    let h = alone.add_guest(shoal_tests::MIGRANT, "migrant");
    let still = alone.spawn(h, &["migrant", "grow", "8", &steps]).await;
    let st = alone.wait(still, WAIT).await;
    common::assert_success(&alone, &st);
    let expected = alone.stdout(still);
    assert_eq!(line_starting(&expected, "grown "), last);
    let body = |text: &str| text.lines().skip(1).collect::<Vec<_>>().join("\n");
    assert_eq!(
        body(&out),
        body(&expected),
        "the output after its first line"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn moving_a_process_that_exited_says_it_exited_and_when() {
    let c = TestCluster::start(2).await;
    let m = add_guest(&c, shoal_tests::MIGRANT, "migrant").await;
    // Sends nothing, prints `sent 0` and exits 0.
    let pid = spawn(&c, 0, m, &["migrant", "send", "1", "0"]).await;
    let st = tokio::time::timeout(WAIT, c.node(0).node().wait(pid))
        .await
        .expect("it ends")
        .expect("it is known");
    assert!(st.success(), "{st}");
    // Asked of the node it ran on: how and when it ended.
    let e = migrate(c.node(0).migration(), pid, None).await.unwrap_err();
    println!("{e}");
    assert_eq!(e.status(), 410, "{e}");
    let text = e.to_string();
    assert!(
        text.contains(&format!("process {pid} exited with code 0 at ")),
        "{text}"
    );
    assert!(
        text.contains(" UTC (") && text.contains(" s ago)"),
        "{text}"
    );
    assert!(!text.contains("does not run on this node"), "{text}");
    // Asked of another node, once it has seen the exit: it exited.
    let raft = c.node(1).raft().clone();
    wait_until("n2 to see the exit", WAIT, || raft.state().is_gone(pid.0)).await;
    let e = migrate(c.node(1).migration(), pid, None).await.unwrap_err();
    assert_eq!(e.status(), 410, "{e}");
    assert!(
        e.to_string().contains(&format!("process {pid} has exited")),
        "{e}"
    );
    // Through the control API: a typed 410 with the time of the exit.
    match c.admin_client(0).migrate(pid, None).await {
        Err(shoal_api::ClientError::Gone { message, gone }) => {
            assert_eq!(gone.pid, pid);
            assert!(gone.exited_unix_ms.is_some(), "{gone:?}");
            assert_eq!(
                gone.reason,
                Some(shoal_abi::process::ExitReason::Exited { code: 0 })
            );
            assert!(message.contains("exited with code 0 at"), "{message}");
        }
        other => panic!("expected 410 Gone, got {other:?}"),
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_monotonic_clock_never_goes_back_across_moves() {
    let c = TestCluster::start(2).await;
    let m = add_guest(&c, shoal_tests::MIGRANT, "migrant").await;
    let pid = spawn(&c, 0, m, &["migrant", "clock"]).await;
    wait_stdout(&c, 0, pid, "clock ready").await;
    let reading = |via: usize| {
        let c = &c;
        async move {
            let line = ask(c, via, pid, "now").await;
            (field(&line, "mono"), field(&line, "back"))
        }
    };
    // Until its clock reads well over what a move and a question take.
    let mut before = 0;
    while before < 1_000_000_000 {
        before = reading(0).await.0;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (from, to) in [(0, 1), (1, 0)] {
        move_to(&c, from, pid, to).await.expect("migrate");
        let (after, back) = reading(to).await;
        println!("before {before} ns, after the move {after} ns");
        assert!(after >= before, "the clock went back: {before} -> {after}");
        assert_eq!(back, 0);
        before = after;
    }
    c.node(0).node().kill(pid).unwrap();
    c.shutdown().await;
}

/// An arrival whose source never sends its final state (it died, or a
/// faulty peer offers moves and goes silent) is dropped once its time is
/// up. Before, it stayed for good with its memory, its instance made
/// ahead (charged to the node's memory budget) and its share of the
/// node's arrival bounds, until the same process moved there again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_arrival_whose_source_goes_silent_is_dropped_in_time() {
    let c = TestCluster::start_with(3, |cfg| {
        cfg.arrival_ttl = Duration::from_millis(500);
    })
    .await;
    let module = add_guest(&c, shoal_tests::MIGRANT, "migrant").await;
    let target = c.node(1).migration().clone();
    let source = c.node(0).migration().me;
    let offer = shoal_daemon::migrate::wire::Offer {
        id: "silent-1".into(),
        pid: 4_000_000_001,
        module: module.to_hex(),
        source,
        epoch: 1,
        memory_bytes: 16 << 20,
        page_bytes: 4096,
        pages: Vec::new(),
        preemptible: false,
        chunks: Vec::new(),
        volume_trees: None,
    };
    let body = bytes::Bytes::from(serde_json::to_vec(&offer).expect("offer json"));
    shoal_daemon::migrate::target::handle(&target, shoal_daemon::migrate::wire::PATH_OFFER, body)
        .await
        .unwrap_or_else(|e| panic!("the offer was refused: {e:?}"));
    assert_eq!(target.arrivals.len(), 1, "the offer made an arrival");
    // Nothing more comes: the arrival goes, with what it held.
    wait_until("the silent arrival to be dropped", WAIT, || {
        target.arrivals.is_empty()
    })
    .await;
    c.shutdown().await;
}
