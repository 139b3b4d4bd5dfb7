//! Preemptible processes: every loop is a capture point, so a process that
//! never calls a blocking import can still be captured, moved and resumed.

use crate::common;

use common::{assert_success, TestNode};
use shoal_registry::Sha256;
use shoal_runtime::{ExitReason, NodeError, Pid, SpawnSpec};
use shoal_tests as guests;
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(120);
/// The bound the task asks for: a preemptible spinner is captured within it.
const CAPTURE_WAIT: Duration = Duration::from_secs(5);

async fn spawn(t: &TestNode, hash: Sha256, argv: &[&str], preemptible: bool) -> Pid {
    let mut spec = SpawnSpec::new(hash, argv.iter().map(|s| s.to_string()).collect());
    spec.preemptible = preemptible;
    t.node.spawn(spec).await.expect("spawn")
}

/// Wait (generously) until `pid` has printed `text`.
async fn wait_for_output(t: &TestNode, pid: Pid, text: &str) {
    let deadline = Instant::now() + LONG;
    while !t.stdout(pid).contains(text) {
        assert!(
            Instant::now() < deadline,
            "process {pid} did not print {text:?}; stdout: {}",
            t.stdout(pid)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preemptible_spinner_is_captured_and_a_normal_one_is_not() {
    let t = TestNode::new();
    let hash = t.add_guest(guests::CPU_BOUND, "cpu_bound");
    // Both variants of one module, side by side on one node.
    let normal = spawn(&t, hash, &["cpu_bound", "spin"], false).await;
    let preemptible = spawn(&t, hash, &["cpu_bound", "spin"], true).await;
    wait_for_output(&t, normal, "cpu_bound spinning").await;
    wait_for_output(&t, preemptible, "cpu_bound spinning").await;

    for _ in 0..3 {
        let image = t
            .node
            .capture(preemptible, false, CAPTURE_WAIT)
            .await
            .expect("a preemptible spinner is captured in a loop");
        assert_eq!(image.pending.import, "shoal_v1.preempt");
        assert!(image.spec.preemptible);
    }
    let err = t
        .node
        .capture(normal, false, Duration::from_secs(2))
        .await
        .expect_err("a spinner without preemption points never reaches a capture point");
    assert!(
        matches!(err, NodeError::CaptureTimeout { pid, .. } if pid == normal),
        "{err}"
    );

    // Move the preemptible spinner to a fresh node: it keeps spinning there, and can be
    // captured there again.
    let image = t
        .node
        .capture(preemptible, true, CAPTURE_WAIT)
        .await
        .expect("capture with stop");
    assert_eq!(
        t.wait(preemptible, LONG).await.reason,
        ExitReason::Snapshotted
    );
    let b = TestNode::new();
    b.add_guest(guests::CPU_BOUND, "cpu_bound");
    let moved = b.node.restore(hash, image).await.expect("restore");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let again = b
        .node
        .capture(moved, false, CAPTURE_WAIT)
        .await
        .expect("the restored spinner is capturable too");
    assert_eq!(again.pending.import, "shoal_v1.preempt");
    for (node, pid) in [(&t, normal), (&b, moved)] {
        node.node.kill(pid).expect("kill");
        assert_eq!(node.wait(pid, LONG).await.reason, ExitReason::Killed);
    }
}

/// Run `cpu_bound <args>` to its end on a fresh node; its stdout.
async fn uninterrupted(args: &[&str], preemptible: bool) -> String {
    let t = TestNode::new();
    let hash = t.add_guest(guests::CPU_BOUND, "cpu_bound");
    let mut argv = vec!["cpu_bound"];
    argv.extend_from_slice(args);
    let pid = spawn(&t, hash, &argv, preemptible).await;
    assert_success(&t, &t.wait(pid, LONG).await);
    t.stdout(pid)
}

/// Iterations of `cpu_bound work`: long enough (about a second with Asyncify asserts on) that
/// the first capture, 40 ms in, always finds it running.
const WORK_ITERATIONS: &str = "60000000";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preemptible_work_gives_the_same_result() {
    for args in [&["work", WORK_ITERATIONS][..], &["sieve", "2000000"][..]] {
        let normal = uninterrupted(args, false).await;
        let preemptible = uninterrupted(args, true).await;
        assert!(
            normal.contains("work result=") || normal.contains("primes below"),
            "{normal}"
        );
        assert_eq!(normal, preemptible, "{args:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_captured_mid_loop_finishes_identically_in_fresh_nodes() {
    let want = uninterrupted(&["work", WORK_ITERATIONS], false).await;

    let mut node = TestNode::new();
    let hash = node.add_guest(guests::CPU_BOUND, "cpu_bound");
    let mut pid = spawn(&node, hash, &["cpu_bound", "work", WORK_ITERATIONS], true).await;
    let mut out = String::new();
    let mut hops = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(40)).await;
        if hops == 3 {
            break;
        }
        match node.node.capture(pid, true, LONG).await {
            Ok(image) => {
                assert_eq!(image.pending.import, "shoal_v1.preempt");
                assert_eq!(node.wait(pid, LONG).await.reason, ExitReason::Snapshotted);
                out += &node.stdout(pid);
                hops += 1;
                let next = TestNode::new();
                next.add_guest(guests::CPU_BOUND, "cpu_bound");
                pid = next.node.restore(hash, image).await.expect("restore");
                node = next;
            }
            Err(NodeError::ExitedBeforeCapture(..)) => break,
            Err(e) => panic!("capture failed: {e}"),
        }
    }
    assert!(hops >= 1, "the process finished before the first capture");
    let status = node.wait(pid, LONG).await;
    assert_success(&node, &status);
    out += &node.stdout(pid);
    assert_eq!(out, want, "after {hops} hops");
}

/// A guest that prints `a`, asks WASI `random_get` for 256 MiB in one call,
/// prints `b` and ends. Nothing in between yields on its own: no loop, no
/// wasm call.
const BIG_RANDOM_WAT: &str = r#"
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get"
    (func $random_get (param i32 i32) (result i32)))
  (memory (export "memory") 4097)
  (data (i32.const 0) "\10\00\00\00\01\00\00\00")
  (data (i32.const 16) "a")
  (data (i32.const 32) "\30\00\00\00\01\00\00\00")
  (data (i32.const 48) "b")
  (func (export "_start")
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 64)))
    (drop (call $random_get (i32.const 65536) (i32.const 268435456)))
    (drop (call $fd_write (i32.const 1) (i32.const 32) (i32.const 1) (i32.const 64)))))
"#;

/// Two guests looping a large WASI `random_get` used to stall the node's
/// async runtime (its API answered after 5–9 s): wasi-common filled the
/// whole buffer on the worker thread in one go. On a one-thread runtime,
/// another task now runs while one 256 MiB request is being filled; before
/// the fix it could not run at all until the call returned.
#[tokio::test(flavor = "current_thread")]
async fn a_huge_random_get_does_not_hold_the_worker_thread() {
    let t = TestNode::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big_random.wasm");
    std::fs::write(&path, wat::parse_str(BIG_RANDOM_WAT).unwrap()).unwrap();
    let hash = t.add_guest(path.to_str().unwrap(), "big_random");
    let pid = t.spawn(hash, &["big_random"]).await;
    let node = t.node.clone();
    // Counts the turns this task got while the request was being filled
    // (the guest had printed `a`, not yet `b`).
    let probe = tokio::spawn(async move {
        let mut during = 0u64;
        loop {
            match node.stdout_text(pid).as_str() {
                "a" => during += 1,
                "ab" => return during,
                _ => {}
            }
            tokio::task::yield_now().await;
        }
    });
    let status = t.wait(pid, LONG).await;
    assert_success(&t, &status);
    let during = tokio::time::timeout(LONG, probe).await.unwrap().unwrap();
    eprintln!("another task ran {during} times during one 256 MiB random_get");
    // Filled in 64 KiB chunks with a yield after each: 4095 turns for
    // 256 MiB. Before, only the guest's own output calls could yield.
    assert!(
        during >= 1000,
        "the worker thread was held for the call ({during} turns)"
    );
}
