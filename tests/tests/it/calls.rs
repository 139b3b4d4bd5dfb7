//! Calls between processes on real 3-node clusters with real guests (the
//! `kv` service and its `kv_client`, see `guests/`): request/reply across
//! nodes, callee death failing pending calls at once with its reason,
//! monitors, selective receive, and calls that survive either side moving.

use crate::common;

use common::cluster::{wait_until, TestCluster};
use common::procs::{exit_of, home_of, move_to, spawn, stdout, wait_stdout, WAIT};
use common::tally::{add_guest_everywhere as add_guest, ask, field};
use shoal_runtime::Pid;
use std::time::{Duration, Instant};

async fn guests(c: &TestCluster) {
    add_guest(c, shoal_tests::KV, "kv").await;
    add_guest(c, shoal_tests::KV_CLIENT, "kv_client").await;
}

/// Wait until `pid`, on node `i`, has `letters` messages queued: mail from
/// different senders is not ordered, so a test that needs it all in the
/// mailbox before some other event waits for it here.
async fn wait_mail(c: &TestCluster, i: usize, pid: Pid, letters: usize) {
    let node = c.node(i).node().clone();
    wait_until("the mail to be queued", WAIT, || {
        node.processes()
            .iter()
            .any(|p| p.pid == pid && p.mailbox_len == letters)
    })
    .await;
}

/// The number of cross-node calls of the stream test (every reply checked
/// against its request in the guest).
const STREAM_CALLS: u64 = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_calls_from_n1_to_a_server_on_n2_each_get_their_own_reply() {
    let c = TestCluster::start(3).await;
    guests(&c).await;
    let server = spawn(&c, 1, &["kv"]).await;
    wait_stdout(&c, 1, server, "kv ready").await;
    let n = STREAM_CALLS.to_string();
    let start = Instant::now();
    let client = spawn(&c, 0, &["kv_client", "stream", &server.0.to_string(), &n]).await;
    let st = exit_of(&c, 0, client).await;
    let took = start.elapsed();
    let out = stdout(&c, 0, client);
    assert!(st.success(), "{st}: {out}");
    assert!(
        out.contains(&format!(
            "stream done calls={n} ok={n} bad=0 errors=0 first_error=-"
        )),
        "{out}"
    );
    println!(
        "{STREAM_CALLS} cross-node calls n1 -> n2 in {took:?}: {:.0} calls/s, {:.1} µs per call (one caller, sequential)",
        STREAM_CALLS as f64 / took.as_secs_f64(),
        took.as_secs_f64() * 1e6 / STREAM_CALLS as f64
    );
    // The server counted them all, once each.
    let line = ask(&c, 1, server, "stats").await;
    assert_eq!(field(&line, "calls"), STREAM_CALLS, "{line}");

    // The same to a group spread over n2 and n3: every reply checked in the
    // guest, and the members together served each call once.
    let members = [
        (1, spawn(&c, 1, &["kv", "member", "pool"]).await),
        (2, spawn(&c, 2, &["kv", "member", "pool"]).await),
    ];
    for (i, pid) in members {
        wait_stdout(&c, i, pid, "kv ready").await;
    }
    let start = Instant::now();
    let client = spawn(&c, 0, &["kv_client", "group", "pool", &n]).await;
    let st = exit_of(&c, 0, client).await;
    let took = start.elapsed();
    let out = stdout(&c, 0, client);
    assert!(st.success(), "{st}: {out}");
    assert!(
        out.contains(&format!("group done calls={n} ok={n} bad=0 errors=0")),
        "{out}"
    );
    let mut served = 0;
    for (i, pid) in members {
        let line = ask(&c, i, pid, "stats").await;
        let calls = field(&line, "calls");
        assert!(
            out.contains(&format!("served_by {} {calls}\n", pid.0)),
            "member {pid} counted {calls}: {out}"
        );
        assert!(calls > 0, "both members serve: {out}");
        served += calls;
    }
    assert_eq!(served, STREAM_CALLS, "each group call served once");
    println!(
        "{STREAM_CALLS} group calls n1 -> members on n2, n3 in {took:?}: {:.0} calls/s",
        STREAM_CALLS as f64 / took.as_secs_f64()
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_kv_example_puts_and_gets_through_the_sdk_serve_loop_and_by_hand() {
    let c = TestCluster::start(3).await;
    guests(&c).await;
    for mode in ["serve", "simple"] {
        let server = spawn(&c, 2, &["kv", mode]).await;
        wait_stdout(&c, 2, server, "ready").await;
        let client = spawn(&c, 0, &["kv_client", "kv", &server.0.to_string()]).await;
        let st = exit_of(&c, 0, client).await;
        assert!(st.success(), "{mode}: {st}: {}", stdout(&c, 0, client));
        assert_eq!(stdout(&c, 0, client), "kv ok\n", "{mode}");
        c.node(2).node().kill(server).expect("kill");
    }
    c.shutdown().await;
}

/// How the server ends in [`pending_calls_fail_at_once_when_the_callee_ends`].
#[derive(Debug, Clone, Copy)]
enum End {
    Exit,
    Trap,
    Kill,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pending_calls_fail_at_once_when_the_callee_ends() {
    let c = TestCluster::start(3).await;
    guests(&c).await;
    for end in [End::Exit, End::Trap, End::Kill] {
        let server = spawn(&c, 1, &["kv"]).await;
        wait_stdout(&c, 1, server, "kv ready").await;
        let s = server.0.to_string();
        // Callers on the server's node and on the two others; their
        // deadline (10 min) is far beyond anything this test waits for.
        let callers = [
            (0, spawn(&c, 0, &["kv_client", "hold", &s, "600000"]).await),
            (1, spawn(&c, 1, &["kv_client", "hold", &s, "600000"]).await),
            (2, spawn(&c, 2, &["kv_client", "hold", &s, "600000"]).await),
        ];
        wait_stdout(&c, 1, server, "held 3").await;
        // Mail for a caller while it waits: it must stay queued, in order.
        let mb = c.node(2).node().open_mailbox();
        for m in ["m1", "m2", "m3"] {
            mb.send(callers[0].1, m.as_bytes().to_vec()).expect("send");
        }
        // (Different senders are not ordered: let the mail arrive first.)
        wait_mail(&c, 0, callers[0].1, 3).await;
        // When each process ends, as its node sees it (no polling): the
        // callers end right after printing their result.
        let ended_at = |i: usize, pid: Pid| {
            let node = c.node(i).node().clone();
            tokio::spawn(async move {
                node.wait(pid).await;
                Instant::now()
            })
        };
        let server_end = ended_at(1, server);
        let caller_ends: Vec<_> = callers.iter().map(|&(i, pid)| ended_at(i, pid)).collect();
        match end {
            End::Exit => mb.send(server, b"exit 3".to_vec()).expect("send exit"),
            End::Trap => mb.send(server, b"trap".to_vec()).expect("send trap"),
            End::Kill => c.node(1).node().kill(server).expect("kill"),
        }
        let server_end = tokio::time::timeout(WAIT, server_end)
            .await
            .expect("the server ends")
            .expect("join");
        let mut took = Vec::new();
        for h in caller_ends {
            let at = tokio::time::timeout(WAIT, h)
                .await
                .expect("the caller ends")
                .expect("join");
            took.push(at.saturating_duration_since(server_end));
        }
        for (i, pid) in callers {
            let st = exit_of(&c, i, pid).await;
            let out = stdout(&c, i, pid);
            assert!(st.success(), "{st}: {out}");
            let want = match end {
                End::Exit => "result err=CALLEE_DOWN reason=Exit(3)",
                // The trap's message comes with the failed call.
                End::Trap => "instruction executed",
                End::Kill => "result err=CALLEE_DOWN reason=Killed",
            };
            assert!(out.contains(want), "{end:?}: {out}");
            if let End::Trap = end {
                assert!(
                    out.contains("result err=CALLEE_DOWN reason=Trap(\"error while executing")
                        && out.contains("wasm trap: wasm `unreachable` instruction executed"),
                    "{out}"
                );
            }
        }
        let out = stdout(&c, 0, callers[0].1);
        assert!(
            out.ends_with("mail m1\nmail m2\nmail m3\ndone\n"),
            "the caller's other mail, in order, after the call: {out}"
        );
        println!("{end:?}: callers on n1, n2, n3 had CALLEE_DOWN and ended {took:?} after the server ended");
        let slowest = took.iter().max().copied().unwrap_or_default();
        assert!(
            slowest < Duration::from_millis(100),
            "{end:?}: a caller ended {slowest:?} after the callee, not within 100 ms"
        );
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn monitors_see_the_reason_and_calls_to_nobody_say_so() {
    let c = TestCluster::start(3).await;
    guests(&c).await;
    let server = spawn(&c, 1, &["kv"]).await;
    wait_stdout(&c, 1, server, "kv ready").await;
    let s = server.0.to_string();
    let watchers = [
        (0, spawn(&c, 0, &["kv_client", "monitor", &s]).await),
        (2, spawn(&c, 2, &["kv_client", "monitor", &s]).await),
    ];
    for (i, pid) in watchers {
        wait_stdout(&c, i, pid, "monitoring").await;
    }
    // "monitoring" means the request left the watcher's node, not that it
    // reached node 1: an exit there before it arrives is rightly seen as
    // `NoProc` (a stressed run did). Wait until both monitors are there.
    wait_until("both monitors to reach the server", WAIT, || {
        c.node(1).node().router().watcher_count(server) == Some(2)
    })
    .await;
    c.node(0)
        .node()
        .send(Pid(0), server, b"exit 9".to_vec())
        .expect("send");
    for (i, pid) in watchers {
        exit_of(&c, i, pid).await;
        assert!(
            stdout(&c, i, pid).contains("down reason=Exit(9)"),
            "{}",
            stdout(&c, i, pid)
        );
    }
    wait_until("the exit to reach the directory", WAIT, || {
        home_of(&c, server).is_none()
    })
    .await;
    // Now it is gone: a monitor says `noproc` at once, a call NO_PROCESS,
    // from its old node and from elsewhere.
    for i in [0, 1] {
        let late = spawn(&c, i, &["kv_client", "monitor", &s]).await;
        exit_of(&c, i, late).await;
        assert!(
            stdout(&c, i, late).contains("down reason=NoProc"),
            "{}",
            stdout(&c, i, late)
        );
        let call = spawn(&c, i, &["kv_client", "noproc", &s]).await;
        exit_of(&c, i, call).await;
        assert_eq!(stdout(&c, i, call), "result err=NO_PROCESS\n");
    }
    c.shutdown().await;
}

/// Monitors across nodes see each kind of end with its reason (a trap with
/// its message, a kill), and a withdrawn monitor never fires: `unwatch`
/// monitors, demonitors, monitors again, and must see the second one's
/// DOWN (it fails on `ref=first`). A call with a deadline and no reply
/// fails with `TIMEOUT` after the deadline, not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn monitors_see_traps_and_kills_demonitor_withdraws_and_deadlines_hold() {
    let c = TestCluster::start(2).await;
    guests(&c).await;
    for end in [End::Trap, End::Kill] {
        let server = spawn(&c, 1, &["kv"]).await;
        wait_stdout(&c, 1, server, "kv ready").await;
        let s = server.0.to_string();
        let watcher = spawn(&c, 0, &["kv_client", "monitor", &s]).await;
        let unwatch = spawn(&c, 0, &["kv_client", "unwatch", &s]).await;
        wait_stdout(&c, 0, watcher, "monitoring").await;
        wait_stdout(&c, 0, unwatch, "unwatched").await;
        // "monitoring" means the request left node 0, not that it reached
        // node 1: a kill done at node 1 before it arrives is rightly seen
        // as `NoProc`. Wait until both monitors are there.
        wait_until("both monitors to reach the server", WAIT, || {
            c.node(1).node().router().watcher_count(server) == Some(2)
        })
        .await;
        match end {
            End::Trap => c
                .node(0)
                .node()
                .send(Pid(0), server, b"trap".to_vec())
                .expect("send trap"),
            End::Kill => c.node(1).node().kill(server).expect("kill"),
            End::Exit => unreachable!(),
        }
        let want = match end {
            End::Trap => "wasm trap: wasm `unreachable` instruction executed",
            _ => "reason=Killed",
        };
        for pid in [watcher, unwatch] {
            let st = exit_of(&c, 0, pid).await;
            let out = stdout(&c, 0, pid);
            assert!(st.success() && out.contains(want), "{end:?}: {st}: {out}");
        }
        assert!(stdout(&c, 0, unwatch).contains("down ref=second"));
    }
    // A deadline: 300 ms with a server that holds the call unanswered.
    let server = spawn(&c, 1, &["kv"]).await;
    wait_stdout(&c, 1, server, "kv ready").await;
    let caller = spawn(&c, 0, &["kv_client", "hold", &server.0.to_string(), "300"]).await;
    exit_of(&c, 0, caller).await;
    let out = stdout(&c, 0, caller);
    assert!(out.contains("result err=TIMEOUT"), "{out}");
    assert!(ms_of(&out) >= 300, "timed out before its deadline: {out}");
    c.shutdown().await;
}

/// A copy restored (under a new pid) from a snapshot of a process blocked
/// in `call`, or holding a monitor, never sent that request or that monitor
/// request: its call returns `TIMEOUT` at once (the reply goes to the
/// original), and its monitor is asked again under its own pid so the
/// target's end reaches it. (Before: the copy's call waited out its
/// 10-minute deadline, and the copy's monitor never fired.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_copy_restored_mid_call_returns_at_once_and_keeps_its_monitors() {
    let c = TestCluster::start(1).await;
    guests(&c).await;
    let node = c.node(0).node();
    let server = spawn(&c, 0, &["kv"]).await;
    wait_stdout(&c, 0, server, "kv ready").await;
    let s = server.0.to_string();
    let caller = spawn(&c, 0, &["kv_client", "hold", &s, "600000"]).await;
    let watcher = spawn(&c, 0, &["kv_client", "monitor", &s]).await;
    wait_stdout(&c, 0, server, "held 1").await;
    wait_stdout(&c, 0, watcher, "monitoring").await;
    let grants = shoal_runtime::grants::Grants::default();
    let mut copies = Vec::new();
    for pid in [caller, watcher] {
        let snap = node
            .snapshot(pid, false, Duration::from_secs(10))
            .await
            .expect("snapshot");
        let copy = node
            .restore_snapshot(&snap.id, false, &grants)
            .await
            .expect("restore a copy");
        assert_ne!(copy, pid);
        copies.push(copy);
    }
    let (caller_copy, watcher_copy) = (copies[0], copies[1]);
    exit_of(&c, 0, caller_copy).await;
    let out = stdout(&c, 0, caller_copy);
    assert!(out.contains("result err=TIMEOUT"), "{out}");
    assert!(ms_of(&out) < 600_000, "{out}");
    // The original still waits; the server's end reaches it, and both
    // watchers.
    node.send(Pid(0), server, b"exit 9".to_vec()).expect("send");
    exit_of(&c, 0, caller).await;
    assert!(
        stdout(&c, 0, caller).contains("result err=CALLEE_DOWN reason=Exit(9)"),
        "{}",
        stdout(&c, 0, caller)
    );
    for pid in [watcher, watcher_copy] {
        exit_of(&c, 0, pid).await;
        let out = stdout(&c, 0, pid);
        assert!(out.contains("down reason=Exit(9)"), "{pid}: {out}");
    }
    c.shutdown().await;
}

/// A copy restored from a snapshot is a new incarnation: the watchers of
/// the original are not its watchers. Killing the copy tells them nothing;
/// the original's own end reaches them with its own reason. (Before, the
/// copy carried the original's watchers in its image: its kill used up
/// their monitor, and the original's end never reached them — the watcher
/// waited forever; checked with the fix switched off: it did not end in
/// 120 s.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restored_copy_does_not_inherit_the_originals_watchers() {
    let c = TestCluster::start(1).await;
    guests(&c).await;
    let node = c.node(0).node();
    let server = spawn(&c, 0, &["kv"]).await;
    wait_stdout(&c, 0, server, "kv ready").await;
    let watcher = spawn(&c, 0, &["kv_client", "monitor", &server.0.to_string()]).await;
    wait_stdout(&c, 0, watcher, "monitoring").await;
    let snap = node
        .snapshot(server, false, Duration::from_secs(10))
        .await
        .expect("snapshot of the watched server");
    let copy = node
        .restore_snapshot(&snap.id, false, &shoal_runtime::grants::Grants::default())
        .await
        .expect("restore a copy");
    assert_ne!(copy, server);
    node.kill(copy).expect("kill the copy");
    node.wait(copy).await;
    node.send(Pid(0), server, b"exit 9".to_vec()).expect("send");
    exit_of(&c, 0, watcher).await;
    let out = stdout(&c, 0, watcher);
    assert!(
        out.contains("down reason=Exit(9)") && !out.contains("Killed"),
        "{out}"
    );
    c.shutdown().await;
}

/// The `ms=` a `kv_client hold`/`request` result line reports.
fn ms_of(out: &str) -> u64 {
    out.split_whitespace()
        .find_map(|w| w.strip_prefix("ms="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no ms= in {out:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_guest_that_only_uses_recv_never_sees_a_call_and_calls_to_it_fail_at_once() {
    let c = TestCluster::start(3).await;
    guests(&c).await;
    add_guest(&c, shoal_tests::MIGRANT, "migrant").await;
    // `migrant tally` predates calls: it receives with `recv` only.
    let tally = spawn(&c, 1, &["migrant", "tally"]).await;
    wait_stdout(&c, 1, tally, "tally ready").await;
    let t = tally.0.to_string();
    // From another node and from its own, by `call` and by `send_request`:
    // refused with NOT_CALLABLE in a round trip, not at the deadline (10 min).
    for (i, mode) in [(0, "hold"), (1, "hold"), (0, "request"), (2, "request")] {
        let argv: Vec<&str> = if mode == "hold" {
            vec!["kv_client", "hold", &t, "600000"]
        } else {
            vec!["kv_client", "request", &t]
        };
        let client = spawn(&c, i, &argv).await;
        exit_of(&c, i, client).await;
        let out = stdout(&c, i, client);
        assert!(
            out.contains("result err=NOT_CALLABLE reason=- ms="),
            "{mode} from node {i}: {out}"
        );
        let ms = ms_of(&out);
        println!("{mode} from node {i} to an old guest on node 2: NOT_CALLABLE after {ms} ms");
        assert!(ms < 2_000, "{mode} from node {i}: refused after {ms} ms");
    }
    // Nothing piled up unseen in its mailbox; it saw nothing and works on.
    let n2 = c.node(1).node().clone();
    let queued = n2
        .processes()
        .iter()
        .find(|p| p.pid == tally)
        .map(|p| p.mailbox_len);
    assert_eq!(queued, Some(0), "the refused calls were not queued");
    let line = ask(&c, 1, tally, "get").await;
    assert_eq!(field(&line, "received"), 0, "{line}");
    assert_eq!(field(&line, "gaps"), 0, "{line}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn selective_receive_takes_one_sender_or_one_answer_and_keeps_the_rest_across_moves() {
    let c = TestCluster::start(3).await;
    guests(&c).await;
    let mb = c.node(0).node().open_mailbox();

    // recv_from: blocked waiting for `peer` only, it moves n1 -> n2; mail
    // from others, before and after the move, waits in order behind it.
    let peer = c.node(2).node().open_mailbox();
    let waiter = spawn(&c, 0, &["kv_client", "from", &peer.pid().0.to_string()]).await;
    wait_stdout(&c, 0, waiter, "waiting").await;
    mb.send(waiter, b"x1".to_vec()).expect("send");
    wait_mail(&c, 0, waiter, 1).await;
    move_to(&c, 0, waiter, 1).await;
    mb.send(waiter, b"x2".to_vec()).expect("send");
    wait_mail(&c, 1, waiter, 2).await;
    assert_eq!(
        stdout(&c, 1, waiter),
        "waiting
",
        "x1, x2 did not wake it"
    );
    peer.send(waiter, b"go".to_vec()).expect("send");
    let st = exit_of(&c, 1, waiter).await;
    let out = stdout(&c, 1, waiter);
    assert!(st.success(), "{st}: {out}");
    assert_eq!(out, "waiting\nfrom go\nmail x1\nmail x2\ndone\n");

    // send_request + receive_response: blocked waiting for one answer, it
    // moves n1 -> n2 -> n3; the answer comes once, the mail after it.
    let server = spawn(&c, 2, &["kv"]).await;
    wait_stdout(&c, 2, server, "kv ready").await;
    let caller = spawn(&c, 0, &["kv_client", "request", &server.0.to_string()]).await;
    wait_stdout(&c, 2, server, "held 1").await;
    mb.send(caller, b"before".to_vec()).expect("send");
    move_to(&c, 0, caller, 1).await;
    mb.send(caller, b"between".to_vec()).expect("send");
    move_to(&c, 1, caller, 2).await;
    mb.send(caller, b"after".to_vec()).expect("send");
    wait_mail(&c, 2, caller, 3).await;
    c.node(1)
        .node()
        .send(Pid(0), server, b"release".to_vec())
        .expect("release");
    let st = exit_of(&c, 2, caller).await;
    let out = stdout(&c, 2, caller);
    assert!(st.success(), "{st}: {out}");
    assert_eq!(
        out,
        "requested\nresult ok released=7\nmail before\nmail between\nmail after\ndone\n"
    );

    // Many requests pending at once to servers on n2 and n3, each answer
    // taken by its own reference, newest first.
    let a = spawn(&c, 1, &["kv"]).await;
    wait_stdout(&c, 1, a, "kv ready").await;
    let (a, b) = (a.0.to_string(), server.0.to_string());
    let fan = spawn(&c, 0, &["kv_client", "fanout", "300", &a, &b]).await;
    let st = exit_of(&c, 0, fan).await;
    let out = stdout(&c, 0, fan);
    assert!(st.success(), "{st}: {out}");
    assert_eq!(out, "fanout ok=600 bad=0 errors=0\n");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_caller_blocked_in_call_moves_and_gets_its_reply_once() {
    let c = TestCluster::start(3).await;
    guests(&c).await;
    let server = spawn(&c, 2, &["kv"]).await;
    wait_stdout(&c, 2, server, "kv ready").await;
    let caller = spawn(
        &c,
        0,
        &["kv_client", "hold", &server.0.to_string(), "600000"],
    )
    .await;
    wait_stdout(&c, 2, server, "held 1").await;
    let mb = c.node(0).node().open_mailbox();
    mb.send(caller, b"before".to_vec()).expect("send");
    // Blocked in `call`: it moves n1 -> n2, then n2 -> n3 (the server's node).
    move_to(&c, 0, caller, 1).await;
    mb.send(caller, b"between".to_vec()).expect("send");
    move_to(&c, 1, caller, 2).await;
    mb.send(caller, b"after".to_vec()).expect("send");
    // Different senders are not ordered (the mail from n1 may still be on
    // its way through n2 when the release reaches the server): let all
    // three letters arrive before the answer can.
    wait_mail(&c, 2, caller, 3).await;
    c.node(1)
        .node()
        .send(Pid(0), server, b"release".to_vec())
        .expect("release");
    let st = exit_of(&c, 2, caller).await;
    let out = stdout(&c, 2, caller);
    assert!(st.success(), "{st}: {out}");
    assert_eq!(
        out,
        "calling\nresult ok released=7\nmail before\nmail between\nmail after\ndone\n"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_server_moves_back_and_forth_during_a_stream_of_calls() {
    let c = TestCluster::start(3).await;
    guests(&c).await;
    let server = spawn(&c, 1, &["kv"]).await;
    wait_stdout(&c, 1, server, "kv ready").await;
    let client = spawn(
        &c,
        0,
        &["kv_client", "stream", &server.0.to_string(), "30000"],
    )
    .await;
    wait_stdout(&c, 0, client, "progress 500").await;
    let mut moves = 0;
    let mut at = 1;
    while !stdout(&c, 0, client).contains("stream done") && moves < 6 {
        let to = if at == 1 { 2 } else { 1 };
        move_to(&c, at, server, to).await;
        at = to;
        moves += 1;
    }
    let st = exit_of(&c, 0, client).await;
    let out = stdout(&c, 0, client);
    assert!(st.success(), "{st}: {out}");
    assert!(
        out.contains("stream done calls=30000 ok=30000 bad=0 errors=0"),
        "{out}"
    );
    assert!(moves >= 2, "the stream ended before the server moved twice");
    assert_eq!(home_of(&c, server), Some(at));
    let line = ask(&c, 0, server, "stats").await;
    assert_eq!(
        field(&line, "calls"),
        30000,
        "each call served once: {line}"
    );
    println!("the server moved {moves} times during 30000 calls");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn names_one_of_two_racing_registrations_wins_and_a_name_dies_with_its_process() {
    let c = TestCluster::start(3).await;
    guests(&c).await;
    // Two processes of one owner race for one name from two nodes.
    let (a, b) = tokio::join!(
        spawn(&c, 1, &["kv", "named", "store"]),
        spawn(&c, 2, &["kv", "named", "store"])
    );
    let outcome = |i: usize, pid: Pid| {
        let out = stdout(&c, i, pid);
        if out.contains("registered store") {
            Some(true)
        } else if out.contains("register failed NAME_TAKEN") {
            Some(false)
        } else {
            None
        }
    };
    wait_until("both registrations to be decided", WAIT, || {
        outcome(1, a).is_some() && outcome(2, b).is_some()
    })
    .await;
    let (won_a, won_b) = (outcome(1, a) == Some(true), outcome(2, b) == Some(true));
    assert!(won_a ^ won_b, "exactly one wins: a={won_a} b={won_b}");
    let (winner, winner_node) = if won_a { (a, 1) } else { (b, 2) };
    // whereis from every node, and a call by name.
    for i in 0..3 {
        let w = spawn(&c, i, &["kv_client", "whereis", "store"]).await;
        exit_of(&c, i, w).await;
        assert_eq!(stdout(&c, i, w), format!("whereis {}\n", winner.0));
    }
    let by = spawn(&c, 0, &["kv_client", "byname", "store"]).await;
    exit_of(&c, 0, by).await;
    assert_eq!(stdout(&c, 0, by), "byname ok\n");
    // The name moves with its process.
    let to = if winner_node == 1 { 2 } else { 1 };
    move_to(&c, winner_node, winner, to).await;
    let w = spawn(&c, 0, &["kv_client", "whereis", "store"]).await;
    exit_of(&c, 0, w).await;
    assert_eq!(stdout(&c, 0, w), format!("whereis {}\n", winner.0));
    // It dies with it; then the name is free again.
    c.node(to).node().kill(winner).expect("kill");
    let raft = c.node(0).raft().clone();
    wait_until("the name to go with its process", WAIT, || {
        raft.state()
            .names
            .whereis(&shoal_cluster::names::Owner::cluster(), "store")
            .is_none()
    })
    .await;
    let w = spawn(&c, 0, &["kv_client", "whereis", "store"]).await;
    exit_of(&c, 0, w).await;
    assert_eq!(stdout(&c, 0, w), "whereis err=NO_PROCESS\n");
    let again = spawn(&c, 0, &["kv", "named", "store"]).await;
    wait_stdout(&c, 0, again, "registered store").await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_to_a_group_spread_over_n2_and_n3_prefer_the_callers_node_and_fail_over() {
    let c = TestCluster::start(3).await;
    guests(&c).await;
    let members = [
        (1, spawn(&c, 1, &["kv", "member", "pool"]).await),
        (2, spawn(&c, 2, &["kv", "member", "pool"]).await),
    ];
    for (i, pid) in members {
        wait_stdout(&c, i, pid, "kv ready").await;
    }
    // From n1 (no member there): every call answered, spread over both.
    let client = spawn(&c, 0, &["kv_client", "group", "pool", "2000"]).await;
    let st = exit_of(&c, 0, client).await;
    let out = stdout(&c, 0, client);
    assert!(st.success(), "{st}: {out}");
    assert!(
        out.contains("group done calls=2000 ok=2000 bad=0 errors=0"),
        "{out}"
    );
    for (_, pid) in members {
        assert!(out.contains(&format!("served_by {} ", pid.0)), "{out}");
    }
    // From n2: its own member serves them all.
    let local = spawn(&c, 1, &["kv_client", "group", "pool", "200"]).await;
    exit_of(&c, 1, local).await;
    let out = stdout(&c, 1, local);
    assert!(
        out.contains(&format!("served_by {} 200", members[0].1 .0)),
        "{out}"
    );
    // n2's member ends: a call from n2 goes to the live one.
    c.node(1).node().kill(members[0].1).expect("kill");
    let after = spawn(&c, 1, &["kv_client", "groupcall", "pool"]).await;
    exit_of(&c, 1, after).await;
    assert_eq!(stdout(&c, 1, after), "groupcall ok\n");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn names_survive_a_leader_change() {
    let mut c = TestCluster::start(3).await;
    guests(&c).await;
    wait_until("a leader", WAIT, || c.leader().is_some()).await;
    let leader = c.leader().expect("a leader");
    let others: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let (home, asker) = (others[0], others[1]);
    let named = spawn(&c, home, &["kv", "named", "store"]).await;
    wait_stdout(&c, home, named, "registered store").await;
    let raft = c.node(asker).raft().clone();
    wait_until("the name to reach the asker's node", WAIT, || {
        raft.state()
            .names
            .whereis(&shoal_cluster::names::Owner::cluster(), "store")
            == Some(named.0)
    })
    .await;
    // Before the change: the asker's node resolves it and refuses a second
    // holder (which also brings both modules to that node: the leader's
    // node, about to stop, may be the only one holding them).
    let w = spawn(&c, asker, &["kv_client", "whereis", "store"]).await;
    exit_of(&c, asker, w).await;
    assert_eq!(stdout(&c, asker, w), format!("whereis {}\n", named.0));
    let loser = spawn(&c, asker, &["kv", "named", "store"]).await;
    wait_stdout(&c, asker, loser, "register failed NAME_TAKEN").await;
    // The leader goes away; the two left elect another.
    c.stop(leader).await;
    wait_until("a new leader", WAIT, || c.leader().is_some()).await;
    println!(
        "leader n{} stopped; n{} leads now",
        leader + 1,
        c.leader().map_or(0, |l| l + 1)
    );
    // The name still names the process, and a call by name reaches it.
    let w = spawn(&c, asker, &["kv_client", "whereis", "store"]).await;
    exit_of(&c, asker, w).await;
    assert_eq!(stdout(&c, asker, w), format!("whereis {}\n", named.0));
    let by = spawn(&c, asker, &["kv_client", "byname", "store"]).await;
    exit_of(&c, asker, by).await;
    assert_eq!(stdout(&c, asker, by), "byname ok\n");
    // The new leader's name book still decides: the name is still taken,
    // and a new one can be had.
    let again = spawn(&c, asker, &["kv", "named", "store"]).await;
    wait_stdout(&c, asker, again, "register failed NAME_TAKEN").await;
    let other = spawn(&c, asker, &["kv", "named", "store2"]).await;
    wait_stdout(&c, asker, other, "registered store2").await;
    c.shutdown().await;
}
