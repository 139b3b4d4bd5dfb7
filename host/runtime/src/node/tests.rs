//! The node's process table and lifecycle, with real (tiny) modules: a
//! process ends exactly once, leaves the table whatever ends it, the exit
//! history is bounded, and limits refuse with their own errors.

use super::*;
use crate::process::ExitReason;

/// A module that prints `hi\n` to stdout and returns.
const PRINTS: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hi\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 3))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

/// A module that waits in `recv` with no deadline (a capture point).
const WAITS: &str = r#"(module
  (import "shoal_v1" "recv" (func $recv (param i32 i32 i64 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (drop (call $recv (i32.const 64) (i32.const 64) (i64.const -1) (i32.const 0)))))"#;

fn node_with(dir: &std::path::Path, tune: impl FnOnce(&mut NodeConfig)) -> Node {
    let mut config = NodeConfig::new(dir);
    config.engine.processes_max = 4;
    config.engine.memory_bytes_max = 16 << 20;
    tune(&mut config);
    Node::new(config).expect("node starts")
}

fn module(node: &Node, wat_text: &str) -> Sha256 {
    let wasm = wat::parse_str(wat_text).expect("valid wat");
    node.add_module(&wasm).expect("module stored")
}

#[tokio::test]
async fn the_exit_history_is_bounded_and_keeps_the_newest() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = node_with(dir.path(), |c| c.exited_history_max = 3);
    let prints = module(&node, PRINTS);
    let mut pids = Vec::new();
    for _ in 0..5 {
        let pid = node
            .spawn(SpawnSpec::new(prints, vec!["p".into()]))
            .await
            .expect("spawned");
        let status = node.wait(pid).await.expect("known while running");
        assert_eq!(status.reason, ExitReason::Exited { code: 0 }, "{status:?}");
        pids.push(pid);
    }
    assert!(node.processes().is_empty(), "every process left the table");
    for (i, pid) in pids.iter().enumerate() {
        let remembered = i >= 2;
        assert_eq!(node.wait(*pid).await.is_some(), remembered, "pid #{i}");
        assert_eq!(node.log(*pid).is_some(), remembered, "log of pid #{i}");
        assert_eq!(node.exit_record(*pid).is_some(), remembered);
    }
    assert_eq!(node.stdout_text(pids[4]), "hi\n");
}

#[tokio::test]
async fn a_killed_process_leaves_the_table_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = node_with(dir.path(), |_| {});
    let waits = module(&node, WAITS);
    let pid = node
        .spawn(SpawnSpec::new(waits, vec!["w".into()]))
        .await
        .expect("spawned");
    assert_eq!(node.processes().len(), 1);
    assert!(
        node.exit_record(pid).is_none(),
        "no exit record while it runs"
    );
    node.kill(pid).expect("live process can be killed");
    let status = node.wait(pid).await.expect("known");
    assert_eq!(status.reason, ExitReason::Killed);
    assert!(node.processes().is_empty());
    assert!(matches!(node.kill(pid), Err(NodeError::NoProcess(p)) if p == pid));
    let (record, _at) = node.exit_record(pid).expect("recorded");
    assert_eq!(record.reason, ExitReason::Killed);
}

#[tokio::test]
async fn the_process_limit_refuses_with_its_error_and_frees_on_exit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = node_with(dir.path(), |c| c.engine.processes_max = 2);
    let waits = module(&node, WAITS);
    let a = node
        .spawn(SpawnSpec::new(waits, vec!["a".into()]))
        .await
        .expect("first");
    node.spawn(SpawnSpec::new(waits, vec!["b".into()]))
        .await
        .expect("second");
    let third = node.spawn(SpawnSpec::new(waits, vec!["c".into()])).await;
    assert!(
        matches!(third, Err(NodeError::ProcessLimit(2))),
        "{third:?}"
    );
    assert_eq!(node.processes().len(), 2, "the refused spawn left nothing");
    node.kill(a).expect("kill");
    node.wait(a).await.expect("ended");
    node.spawn(SpawnSpec::new(waits, vec!["d".into()]))
        .await
        .expect("room again after an exit");
}

#[tokio::test]
async fn a_spawn_that_cannot_start_leaves_no_entry() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = node_with(dir.path(), |_| {});
    let waits = module(&node, WAITS);
    let outside = tempfile::tempdir().expect("temp dir");
    let missing = outside.path().join("missing");
    let mut spec = SpawnSpec::new(waits, vec!["w".into()]);
    spec.dirs
        .push(DirGrant::parse(missing.to_str().expect("utf-8 path")));
    let refused = node.spawn(spec).await;
    assert!(matches!(refused, Err(NodeError::Grant(_))), "{refused:?}");
    let file = outside.path().join("a-file");
    std::fs::write(&file, b"not a directory").expect("write");
    let mut spec = SpawnSpec::new(waits, vec!["w".into()]);
    spec.dirs
        .push(DirGrant::parse(file.to_str().expect("utf-8 path")));
    let refused = node.spawn(spec).await;
    assert!(matches!(refused, Err(NodeError::Dir { .. })), "{refused:?}");
    let mut spec = SpawnSpec::new(waits, vec!["w".into()]);
    spec.dirs
        .push(DirGrant::parse(dir.path().to_str().expect("utf-8 path")));
    let refused = node.spawn(spec).await;
    assert!(
        matches!(refused, Err(NodeError::Grant(_))),
        "the data dir: {refused:?}"
    );
    assert!(node.processes().is_empty());
}

#[tokio::test]
async fn a_host_mailbox_gets_its_own_pid_and_is_detached_when_dropped() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = node_with(dir.path(), |_| {});
    let a = node.open_mailbox();
    let b = node.open_mailbox();
    assert_ne!(a.pid(), b.pid());
    a.send(b.pid(), b"ping".to_vec())
        .expect("delivered locally");
    let got = b
        .recv(Duration::from_secs(5))
        .await
        .expect("the message arrives");
    assert_eq!(got.sender, a.pid());
    assert_eq!(got.data, b"ping");
    let gone = b.pid();
    drop(b);
    assert!(
        matches!(a.send(gone, b"x".to_vec()), Err(PushError::Closed)),
        "a dropped mailbox is no longer reachable"
    );
}

/// [`WAITS`] with 1 MiB of memory (16 pages).
const WAITS_1MIB: &str = r#"(module
  (import "shoal_v1" "recv" (func $recv (param i32 i32 i64 i32) (result i32)))
  (memory (export "memory") 16)
  (func (export "_start")
    (drop (call $recv (i32.const 64) (i32.const 64) (i64.const -1) (i32.const 0)))))"#;

#[tokio::test]
async fn the_memory_budget_refuses_with_its_error_and_frees_on_exit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = node_with(dir.path(), |c| {
        c.engine.processes_max = 8;
        c.memory_budget_bytes = 3 << 20;
    });
    let waits = module(&node, WAITS_1MIB);
    let mut live = Vec::new();
    for name in ["a", "b", "c"] {
        live.push(
            node.spawn(SpawnSpec::new(waits, vec![name.into()]))
                .await
                .expect("fits the budget"),
        );
    }
    let fourth = node.spawn(SpawnSpec::new(waits, vec!["d".into()])).await;
    assert!(
        matches!(
            fourth,
            Err(NodeError::MemoryBudget {
                needed_bytes: 1048576,
                used_bytes: 3145728,
                budget_bytes: 3145728
            })
        ),
        "{fourth:?}"
    );
    assert_eq!(node.processes().len(), 3, "the refused spawn left nothing");
    node.kill(live[0]).expect("kill");
    node.wait(live[0]).await.expect("ended");
    node.spawn(SpawnSpec::new(waits, vec!["e".into()]))
        .await
        .expect("room again after an exit");
}

/// A move's source parks the frozen process's store until the process
/// runs at the target (`parking`): while parked, its memory stays
/// charged to the node's budget; `release_now` gives it back before it
/// returns (a move called off starts the process here again at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_store_keeps_its_memory_until_released() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = node_with(dir.path(), |c| {
        c.engine.processes_max = 8;
        // Two processes, and the 64 KiB page a capture adds for its stack.
        c.memory_budget_bytes = (2 << 20) + (128 << 10);
    });
    let waits = module(&node, WAITS_1MIB);
    let a = node
        .spawn(SpawnSpec::new(waits, vec!["a".into()]))
        .await
        .expect("fits");
    node.spawn(SpawnSpec::new(waits, vec!["b".into()]))
        .await
        .expect("fits");
    let parked = node.park_store(a);
    let image = node
        .freeze(a, Duration::from_secs(10))
        .await
        .expect("frozen");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !parked.holds_store() {
        assert!(
            std::time::Instant::now() < deadline,
            "the moved process's store was never parked"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let refused = node.spawn(SpawnSpec::new(waits, vec!["c".into()])).await;
    assert!(
        matches!(refused, Err(NodeError::MemoryBudget { .. })),
        "{refused:?}"
    );
    parked.release_now();
    node.spawn(SpawnSpec::new(waits, vec!["c".into()]))
        .await
        .expect("its memory is back in the budget");
    drop(image);
}
