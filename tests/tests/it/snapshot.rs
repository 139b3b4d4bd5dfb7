//! Snapshots: capture a process blocked in a call, resume it elsewhere.

use crate::common;

use common::{assert_success, TestNode};
use shoal_runtime::ExitReason;
use shoal_tests as guests;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter_captured_in_recv_resumes_in_a_fresh_engine() {
    let a = TestNode::new();
    let hash = a.add_guest(guests::COUNTER, "counter");
    let me = a.node.open_mailbox();
    let pid = a.spawn(hash, &["counter"]).await;
    me.send(pid, "add 5").unwrap();
    me.send(pid, "get").unwrap();
    assert_eq!(me.recv(LONG).await.unwrap().data, b"5");
    let image = a.node.capture(pid, true, LONG).await.expect("capture");
    assert_eq!(image.pending.import, "shoal_v1.recv");
    assert_eq!(a.wait(pid, LONG).await.reason, ExitReason::Snapshotted);

    // A different node, a different engine: only the image and the module travel.
    let b = TestNode::new();
    let hash_b = b.add_guest(guests::COUNTER, "counter");
    assert_eq!(hash, hash_b);
    let restored = b.node.restore(hash, image).await.expect("restore");
    let me_b = b.node.open_mailbox();
    me_b.send(restored, "add 7").unwrap();
    me_b.send(restored, "get").unwrap();
    let reply = me_b.recv(LONG).await.expect("restored counter answers");
    assert_eq!(String::from_utf8(reply.data).unwrap(), "12");
    me_b.send(restored, "stop").unwrap();
    let status = b.wait(restored, LONG).await;
    assert_success(&b, &status);
    assert!(
        b.stdout(restored).contains("counter total=12 adds=2"),
        "{}",
        b.stdout(restored)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_without_stop_lets_the_process_go_on() {
    let t = TestNode::new();
    let hash = t.add_guest(guests::COUNTER, "counter");
    let me = t.node.open_mailbox();
    let pid = t.spawn(hash, &["counter"]).await;
    me.send(pid, "add 1").unwrap();
    for _ in 0..5 {
        t.node.capture(pid, false, LONG).await.expect("capture");
        me.send(pid, "add 1").unwrap();
    }
    me.send(pid, "get").unwrap();
    assert_eq!(me.recv(LONG).await.unwrap().data, b"6");
    me.send(pid, "stop").unwrap();
    assert_success(&t, &t.wait(pid, LONG).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_mailbox_is_delivered_in_order() {
    let a = TestNode::new();
    let hash = a.add_guest(guests::COUNTER, "counter");
    let me = a.node.open_mailbox();
    let pid = a.spawn(hash, &["counter"]).await;
    // Capture first, then queue messages the process has not read.
    me.send(pid, "get").unwrap();
    assert_eq!(me.recv(LONG).await.unwrap().data, b"0");
    let image = {
        let cap = a.node.capture(pid, true, LONG);
        cap.await.expect("capture")
    };
    assert!(image.mailbox.is_empty());
    let mut image = image;
    // Messages that were waiting at capture: inject as the mailbox would hold them.
    for n in 1..=3u64 {
        image.mailbox.push(shoal_runtime::mailbox::Message::plain(
            me.pid(),
            format!("add {n}").into_bytes(),
        ));
    }
    let b = TestNode::new();
    b.add_guest(guests::COUNTER, "counter");
    let restored = b.node.restore(hash, image).await.unwrap();
    let me_b = b.node.open_mailbox();
    me_b.send(restored, "get").unwrap();
    assert_eq!(me_b.recv(LONG).await.unwrap().data, b"6");
    me_b.send(restored, "stop").unwrap();
    assert!(b.wait(restored, LONG).await.success());
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Run heapfold to the end on one node, returning its stdout.
async fn heapfold_uninterrupted(seed: u64, steps: u64) -> String {
    let t = TestNode::new();
    let hash = t.add_guest(guests::HEAPFOLD, "heapfold");
    let pid = t
        .spawn(hash, &["heapfold", &seed.to_string(), &steps.to_string()])
        .await;
    assert_success(&t, &t.wait(pid, LONG).await);
    t.stdout(pid)
}

/// Run heapfold, capturing and restoring it on a fresh node at random
/// moments; returns the concatenated stdout of every hop and the hop count.
async fn heapfold_hopping(
    seed: u64,
    steps: u64,
    calls: &mut std::collections::BTreeSet<String>,
) -> (String, usize) {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut node = TestNode::new();
    let hash = node.add_guest(guests::HEAPFOLD, "heapfold");
    let mut pid = node
        .spawn(hash, &["heapfold", &seed.to_string(), &steps.to_string()])
        .await;
    let mut out = String::new();
    let mut hops = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(rng.next() % 40)).await;
        match node.node.snapshot(pid, true, LONG).await {
            Ok(info) => {
                calls.insert(info.pending_call.clone());
                assert_eq!(
                    node.wait(pid, LONG).await.reason,
                    ExitReason::Snapshotted,
                    "seed {seed}"
                );
                out += &node.stdout(pid);
                // Only the snapshot file's bytes travel to a fresh node (fresh engine).
                let file = node.node.export_snapshot(&info.id).expect("export");
                let next = TestNode::new();
                next.add_guest(guests::HEAPFOLD, "heapfold");
                let id = next
                    .node
                    .import_snapshot(&file)
                    .unwrap_or_else(|e| panic!("seed {seed}: import: {e}"));
                assert_eq!(
                    id, info.id,
                    "a snapshot's id is its manifest's hash wherever it is stored"
                );
                pid = next
                    .node
                    .restore_snapshot(&id, false, &Default::default())
                    .await
                    .unwrap_or_else(|e| panic!("seed {seed}: restore: {e}"));
                node = next;
                hops += 1;
            }
            Err(shoal_runtime::NodeError::ExitedBeforeCapture(..))
            | Err(shoal_runtime::NodeError::NoProcess(_)) => {
                let status = node.wait(pid, LONG).await;
                assert!(
                    status.success(),
                    "seed {seed}: {status}\n{}",
                    node.stderr(pid)
                );
                out += &node.stdout(pid);
                return (out, hops);
            }
            Err(e) => panic!("seed {seed}: capture failed: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heapfold_is_exact_across_random_captures_in_fresh_engines() {
    // SHOAL_SNAPSHOT_SEEDS=1,2,3 reproduces chosen seeds; default: 6 seeds.
    let seeds: Vec<u64> = match std::env::var("SHOAL_SNAPSHOT_SEEDS") {
        Ok(list) => list
            .split(',')
            .filter_map(|s| s.trim().parse().ok())
            .collect(),
        Err(_) => (1..=6).collect(),
    };
    let steps = 150;
    let mut calls = std::collections::BTreeSet::new();
    for seed in seeds {
        let expected = heapfold_uninterrupted(seed, steps).await;
        assert!(
            expected.contains(&format!("heapfold seed={seed} steps={steps}")),
            "{expected}"
        );
        let (got, hops) = heapfold_hopping(seed, steps, &mut calls).await;
        assert!(
            hops >= 1,
            "seed {seed}: the run ended before any capture; lengthen it"
        );
        assert_eq!(got, expected, "seed {seed} ({hops} hops): output differs from the uninterrupted run (rerun with SHOAL_SNAPSHOT_SEEDS={seed})");
        eprintln!("seed {seed}: {hops} hops, output identical");
    }
    eprintln!("captured in: {calls:?}");
    // std::thread::sleep waits longest, so captures land there most often.
    assert!(
        calls.contains("wasi_snapshot_preview1.poll_oneoff"),
        "no capture in a WASI sleep: {calls:?}"
    );
}

/// Live snapshots taken while heapfold runs are each incremental over the
/// last (only the pages the kernel saw written are hashed; the rest keep
/// the parent's hashes), and every one of them, restored in a fresh engine,
/// finishes exactly as the uninterrupted run does: a write the tracking
/// missed would leave a stale page in some snapshot and change its hashes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_snapshots_over_their_parents_restore_exactly() {
    let seed = 7;
    // A run long enough for six snapshots at the jitter below; on a busy
    // machine (slow captures) the run ends sooner, so it is run again,
    // twice as long, until at least two were taken.
    let mut steps = 300;
    let (a, snapshots, expected) = loop {
        let expected = heapfold_uninterrupted(seed, steps).await;
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let a = TestNode::new();
        let hash = a.add_guest(guests::HEAPFOLD, "heapfold");
        let pid = a
            .spawn(hash, &["heapfold", &seed.to_string(), &steps.to_string()])
            .await;
        let mut snapshots = Vec::new();
        while snapshots.len() < 6 {
            tokio::time::sleep(Duration::from_millis(rng.next() % 30)).await;
            match a.node.snapshot(pid, false, LONG).await {
                Ok(info) => snapshots.push(info),
                Err(shoal_runtime::NodeError::ExitedBeforeCapture(..))
                | Err(shoal_runtime::NodeError::NoProcess(_)) => break,
                Err(e) => panic!("snapshot {}: {e}", snapshots.len()),
            }
        }
        assert_success(&a, &a.wait(pid, LONG).await);
        if snapshots.len() >= 2 || steps >= 4800 {
            break (a, snapshots, expected);
        }
        steps *= 2;
    };
    assert!(snapshots.len() >= 2, "took {} snapshots", snapshots.len());
    if shoal_runtime::dirty::WriteTracker::supported() {
        for s in &snapshots[1..] {
            assert!(s.parent.is_some(), "{s:?}");
            assert!(
                s.pages_new < s.pages_total,
                "an incremental snapshot stored every page: {s:?}"
            );
        }
    }
    for (k, info) in snapshots.iter().enumerate() {
        let file = a.node.export_snapshot(&info.id).expect("export");
        let b = TestNode::new();
        b.add_guest(guests::HEAPFOLD, "heapfold");
        let id = b.node.import_snapshot(&file).expect("import");
        let copy = b
            .node
            .restore_snapshot(&id, false, &Default::default())
            .await
            .expect("restore");
        assert_success(&b, &b.wait(copy, LONG).await);
        let rest = b.stdout(copy);
        assert!(
            rest.contains("heapfold seed=") && expected.ends_with(&rest),
            "snapshot {k} ({} of {} pages new): the restored run's output is not the end of the uninterrupted one\n{rest}",
            info.pages_new,
            info.pages_total
        );
    }
}

/// A counter with some state, snapshotted to a file.
async fn counter_snapshot_file() -> (TestNode, Vec<u8>, shoal_registry::Sha256) {
    let a = TestNode::new();
    let hash = a.add_guest(guests::COUNTER, "counter");
    let me = a.node.open_mailbox();
    let pid = a.spawn(hash, &["counter"]).await;
    me.send(pid, "add 40").unwrap();
    me.send(pid, "get").unwrap();
    assert_eq!(me.recv(LONG).await.unwrap().data, b"40");
    let info = a.node.snapshot(pid, true, LONG).await.unwrap();
    let file = a.node.export_snapshot(&info.id).unwrap();
    (a, file, hash)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_file_restores_on_another_node() {
    let (_a, file, _) = counter_snapshot_file().await;
    let b = TestNode::new();
    b.add_guest(guests::COUNTER, "counter");
    let id = b.node.import_snapshot(&file).unwrap();
    let pid = b
        .node
        .restore_snapshot(&id, false, &Default::default())
        .await
        .unwrap();
    let me = b.node.open_mailbox();
    me.send(pid, "add 2").unwrap();
    me.send(pid, "get").unwrap();
    assert_eq!(me.recv(LONG).await.unwrap().data, b"42");
    me.send(pid, "stop").unwrap();
    assert_success(&b, &b.wait(pid, LONG).await);
}

/// Ask `pid` something and wait for its answer.
async fn ask(me: &shoal_runtime::HostMailbox, pid: shoal_runtime::Pid, what: &str) -> String {
    me.send(pid, what).unwrap();
    String::from_utf8(me.recv(LONG).await.expect("it answers").data).unwrap()
}

/// A restore writes only the snapshot's pages into a fresh instance, and
/// checks for bytes to zero only where the module's data segments put
/// some: a process that wiped 16 KiB of its static data must find it
/// wiped after a restore on another node, and the rest of its memory as
/// it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_data_a_process_zeroed_stays_zero_when_restored() {
    let a = TestNode::new();
    let hash = a.add_guest(guests::MIGRANT, "migrant");
    let me = a.node.open_mailbox();
    let pid = a.spawn(hash, &["migrant", "hold", "1"]).await;
    assert_eq!(ask(&me, pid, "statics").await, (0x5a * 16384).to_string());
    assert_eq!(ask(&me, pid, "wipe").await, "ok");
    let sum = ask(&me, pid, "sum").await;
    let info = a.node.snapshot(pid, true, LONG).await.expect("snapshot");
    let file = a.node.export_snapshot(&info.id).unwrap();
    let b = TestNode::new();
    b.add_guest(guests::MIGRANT, "migrant");
    let id = b.node.import_snapshot(&file).unwrap();
    let me_b = b.node.open_mailbox();
    let restored = b
        .node
        .restore_snapshot(&id, false, &Default::default())
        .await
        .unwrap();
    assert_eq!(ask(&me_b, restored, "statics").await, "0");
    assert_eq!(ask(&me_b, restored, "sum").await, sum);
    me_b.send(restored, "stop").unwrap();
    assert_success(&b, &b.wait(restored, LONG).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_snapshots_are_refused_and_nothing_starts() {
    let (_a, file, _) = counter_snapshot_file().await;
    let b = TestNode::new();
    b.add_guest(guests::COUNTER, "counter");
    // Truncated at several points.
    for cut in [0, 7, 12, 40, file.len() / 2, file.len() - 1] {
        let err = b
            .node
            .import_snapshot(&file[..cut])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("truncated")
                || err.contains("not a Shoal snapshot")
                || err.contains("checksum"),
            "cut at {cut}: {err}"
        );
    }
    // One flipped byte anywhere.
    for at in [10, file.len() / 3, file.len() - 5] {
        let mut bad = file.clone();
        bad[at] ^= 0x40;
        let err = b.node.import_snapshot(&bad).unwrap_err().to_string();
        assert!(!err.is_empty(), "flip at {at}");
    }
    // Wrong version.
    let mut bad = file.clone();
    bad[8] = 99;
    let err = b.node.import_snapshot(&bad).unwrap_err().to_string();
    assert!(err.contains("version") || err.contains("checksum"), "{err}");
    assert!(b.node.processes().is_empty(), "nothing was started");

    // A snapshot whose module this node lacks.
    let c = TestNode::new();
    let id = c.node.import_snapshot(&file).unwrap();
    let err = c
        .node
        .restore_snapshot(&id, false, &Default::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("not in this node's registry"), "{err}");
    assert!(c.node.processes().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_snapshot_stores_only_changed_pages() {
    let t = TestNode::new();
    let hash = t.add_guest(guests::COUNTER, "counter");
    let me = t.node.open_mailbox();
    let pid = t.spawn(hash, &["counter"]).await;
    let first = t.node.snapshot(pid, false, LONG).await.unwrap();
    assert!(first.pages_new > 0);
    me.send(pid, "add 1").unwrap();
    me.send(pid, "get").unwrap();
    assert_eq!(me.recv(LONG).await.unwrap().data, b"1");
    let second = t.node.snapshot(pid, false, LONG).await.unwrap();
    assert_eq!(second.parent, Some(first.id));
    assert!(
        // Handling one message touches the stack, the Asyncify buffer, the
        // allocator's and the counter's heap, and the receive buffer.
        second.pages_new <= 6 && second.pages_new < second.pages_total,
        "one message changes a few pages, got {} new of {} ({} bytes)",
        second.pages_new,
        second.pages_total,
        second.bytes_new
    );
    eprintln!(
        "first: {} pages, {} new; second: {} pages, {} new ({} bytes)",
        first.pages_total, first.pages_new, second.pages_total, second.pages_new, second.bytes_new
    );
    me.send(pid, "stop").unwrap();
    assert_success(&t, &t.wait(pid, LONG).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_c_guest_is_captured_in_recv_and_resumes() {
    let a = TestNode::new();
    let hash = a.add_guest(guests::C_PONG, "c_pong");
    let me = a.node.open_mailbox();
    let pid = a.spawn(hash, &["c_pong"]).await;
    me.send(pid, "one").unwrap();
    assert_eq!(me.recv(LONG).await.unwrap().data, b"c:one");
    let info = a
        .node
        .snapshot(pid, true, LONG)
        .await
        .expect("C guest is capturable");
    assert_eq!(info.pending_call, "shoal_v1.recv");
    let file = a.node.export_snapshot(&info.id).unwrap();

    let b = TestNode::new();
    b.add_guest(guests::C_PONG, "c_pong");
    let id = b.node.import_snapshot(&file).unwrap();
    let restored = b
        .node
        .restore_snapshot(&id, false, &Default::default())
        .await
        .unwrap();
    let me_b = b.node.open_mailbox();
    me_b.send(restored, "two").unwrap();
    assert_eq!(me_b.recv(LONG).await.unwrap().data, b"c:two");
    me_b.send(restored, "stop").unwrap();
    assert_success(&b, &b.wait(restored, LONG).await);
    // The message count lives in the C guest's memory: it survived the move.
    assert!(
        b.stdout(restored).contains("c_pong done 2 messages"),
        "{}",
        b.stdout(restored)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_files_keep_their_positions_across_a_restore() {
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("in.txt"), "HELLOworld").unwrap();
    let grant = format!("{}::/data", data.path().display());
    let a = TestNode::new();
    let hash = a.add_guest(guests::HELLO, "hello");
    let mut spec =
        shoal_runtime::SpawnSpec::new(hash, vec!["hello".into(), "files".into(), "/data".into()]);
    spec.dirs = vec![shoal_runtime::node::DirGrant::parse(&grant)];
    let pid = a.node.spawn(spec).await.unwrap();
    // Wait until it holds both files open and blocks in recv.
    let deadline = std::time::Instant::now() + LONG;
    while !a.stdout(pid).contains("files waiting") {
        assert!(std::time::Instant::now() < deadline, "{}", a.stdout(pid));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(a.stdout(pid).contains("head=HELLO"));
    let info = a.node.snapshot(pid, true, LONG).await.unwrap();
    let file = a.node.export_snapshot(&info.id).unwrap();

    let b = TestNode::new();
    b.add_guest(guests::HELLO, "hello");
    let id = b.node.import_snapshot(&file).unwrap();
    // The restorer grants the directory again: a snapshot grants nothing.
    let grants = shoal_runtime::grants::Grants {
        dirs: vec![shoal_runtime::node::DirGrant::parse(&grant)],
        ..Default::default()
    };
    let restored = b.node.restore_snapshot(&id, false, &grants).await.unwrap();
    let me = b.node.open_mailbox();
    me.send(restored, "go").unwrap();
    let status = b.wait(restored, LONG).await;
    assert_success(&b, &status);
    assert!(
        b.stdout(restored).contains("rest=world"),
        "read on from the same offset: {}",
        b.stdout(restored)
    );
    let out = std::fs::read_to_string(data.path().join("out.txt")).unwrap();
    assert_eq!(
        out, "first;second;",
        "written on from the same offset, not truncated again"
    );
}

/// Sleeps 300 ms in `sleep_ms`, then receives three messages and exits with
/// 0 if their first bytes are '1', '2', '3' in that order (else 10 + index).
const SLEEP_THEN_RECV_WAT: &str = r#"
(module
  (import "shoal_v1" "sleep_ms" (func $sleep (param i64) (result i32)))
  (import "shoal_v1" "recv" (func $recv (param i32 i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func $expect (param $i i32)
    (if (i32.lt_s (call $recv (i32.const 0) (i32.const 64) (i64.const 5000) (i32.const 0)) (i32.const 1))
      (then (call $exit (i32.add (i32.const 20) (local.get $i)))))
    (if (i32.ne (i32.load8_u (i32.const 0)) (i32.add (i32.const 49) (local.get $i)))
      (then (call $exit (i32.add (i32.const 10) (local.get $i))))))
  (func (export "_start")
    (drop (call $sleep (i64.const 300)))
    (call $expect (i32.const 0))
    (call $expect (i32.const 1))
    (call $expect (i32.const 2))
    (call $exit (i32.const 0))))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_queued_at_capture_arrive_after_restore_in_order() {
    let wasm = wat::parse_str(SLEEP_THEN_RECV_WAT).unwrap();
    let a = TestNode::new();
    let hash = a.node.add_module(&wasm).unwrap();
    let me = a.node.open_mailbox();
    let pid = a.spawn(hash, &["sleeper"]).await;
    for m in ["1", "2", "3"] {
        me.send(pid, m).unwrap();
    }
    let info = a.node.snapshot(pid, true, LONG).await.unwrap();
    assert_eq!(info.pending_call, "shoal_v1.sleep_ms");
    let file = a.node.export_snapshot(&info.id).unwrap();
    let b = TestNode::new();
    b.node.add_module(&wasm).unwrap();
    let id = b.node.import_snapshot(&file).unwrap();
    let restored = b
        .node
        .restore_snapshot(&id, false, &Default::default())
        .await
        .unwrap();
    assert_eq!(
        b.wait(restored, LONG).await.reason,
        ExitReason::Exited { code: 0 },
        "exit code names the failed step"
    );
}

/// Ask a `migrant clock` for its monotonic reading: (ns, times it went back).
async fn clock_reading(me: &shoal_runtime::HostMailbox, pid: shoal_runtime::Pid) -> (u64, u64) {
    me.send(pid, "now").unwrap();
    let reply = me.recv(LONG).await.expect("the clock answers");
    let line = String::from_utf8(reply.data).unwrap();
    let field = |name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {line:?}"))
    };
    (field("mono="), field("back="))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monotonic_clock_never_goes_back_across_snapshot_and_restore() {
    let a = TestNode::new();
    let hash = a.add_guest(guests::MIGRANT, "migrant");
    let me = a.node.open_mailbox();
    let pid = a.spawn(hash, &["migrant", "clock"]).await;
    // Until its clock reads well over what a restore and a question take
    // (a restarted clock would read less than this afterwards).
    let mut before = 0;
    while before < 1_000_000_000 {
        before = clock_reading(&me, pid).await.0;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let info = a.node.snapshot(pid, true, LONG).await.expect("snapshot");
    assert_eq!(a.wait(pid, LONG).await.reason, ExitReason::Snapshotted);
    let file = a.node.export_snapshot(&info.id).unwrap();
    // Restored on another node (a fresh engine and WASI context), twice.
    let b = TestNode::new();
    b.add_guest(guests::MIGRANT, "migrant");
    let id = b.node.import_snapshot(&file).unwrap();
    let me_b = b.node.open_mailbox();
    for _ in 0..2 {
        let restored = b
            .node
            .restore_snapshot(&id, false, &Default::default())
            .await
            .unwrap();
        let (after, back) = clock_reading(&me_b, restored).await;
        println!("before {before} ns, after restore {after} ns");
        assert!(after >= before, "the clock went back: {before} -> {after}");
        assert_eq!(back, 0);
        // And it goes on from there, while it runs.
        let (later, back) = clock_reading(&me_b, restored).await;
        assert!(later >= after && back == 0, "{after} -> {later}");
        me_b.send(restored, "stop").unwrap();
        assert_success(&b, &b.wait(restored, LONG).await);
    }
}
