//! Foundation: real guests on one real node.

use crate::common;

use common::{assert_success, TestNode};
use shoal_runtime::ExitReason;
use shoal_tests as guests;
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_prints_args_env_and_pid() {
    let t = TestNode::new();
    let hash = t.add_guest(guests::HELLO, "hello");
    let mut spec =
        shoal_runtime::SpawnSpec::new(hash, vec!["hello".into(), "a".into(), "b c".into()]);
    spec.env = vec![("GREETING".into(), "hi there".into())];
    let pid = t.node.spawn(spec).await.unwrap();
    let status = t.wait(pid, LONG).await;
    assert_success(&t, &status);
    let out = t.stdout(pid);
    assert!(
        out.contains(&format!("hello from shoal pid={pid}")),
        "{out}"
    );
    assert!(out.contains("args=a b c"), "{out}");
    assert!(out.contains("GREETING=hi there"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_code_is_propagated() {
    let t = TestNode::new();
    let hash = t.add_guest(guests::HELLO, "hello");
    let pid = t.spawn(hash, &["hello", "exit", "3"]).await;
    let status = t.wait(pid, LONG).await;
    assert_eq!(status.reason, ExitReason::Exited { code: 3 });
    assert_eq!(status.code(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn granted_directory_is_visible_and_nothing_else() {
    let t = TestNode::new();
    let hash = t.add_guest(guests::HELLO, "hello");
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("b.txt"), "bee").unwrap();
    std::fs::write(data.path().join("a.txt"), "ay").unwrap();
    let mut spec =
        shoal_runtime::SpawnSpec::new(hash, vec!["hello".into(), "ls".into(), "/data".into()]);
    spec.dirs = vec![shoal_runtime::node::DirGrant::parse(&format!(
        "{}::/data",
        data.path().display()
    ))];
    let pid = t.node.spawn(spec).await.unwrap();
    let status = t.wait(pid, LONG).await;
    assert_success(&t, &status);
    let out = t.stdout(pid);
    let a = out.find("a.txt").expect("a.txt listed");
    let b = out.find("b.txt").expect("b.txt listed");
    assert!(a < b, "sorted listing: {out}");

    // Without the grant the same path is not reachable.
    let pid = t.spawn(hash, &["hello", "cat", "/data/a.txt"]).await;
    let status = t.wait(pid, LONG).await;
    assert!(
        !status.success(),
        "reading an ungranted path must fail: {}",
        t.stdout(pid)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_pong_spawns_and_exchanges_messages() {
    let t = TestNode::new();
    let hash = t.add_guest(guests::PING_PONG, "ping_pong");
    let pid = t
        .spawn(hash, &["ping_pong", "ping", "ping_pong", "500"])
        .await;
    let status = t.wait(pid, LONG).await;
    assert_success(&t, &status);
    assert!(
        t.stdout(pid).contains("ping-pong done 500 round trips"),
        "{}",
        t.stdout(pid)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_pair_order_is_kept_under_load() {
    let t = TestNode::new();
    let hash = t.add_guest(guests::PING_PONG, "ping_pong");
    // Two blasters feed their own sinks concurrently; each sink checks order.
    let a = t
        .spawn(hash, &["ping_pong", "blast", "ping_pong", "20000", "16"])
        .await;
    let b = t
        .spawn(hash, &["ping_pong", "blast", "ping_pong", "20000", "64"])
        .await;
    for pid in [a, b] {
        let status = t.wait(pid, LONG).await;
        assert_success(&t, &status);
    }
    // The sinks are the blasters' children; wait for every process to end.
    let deadline = Instant::now() + LONG;
    while !t.node.processes().is_empty() {
        assert!(
            Instant::now() < deadline,
            "sinks did not finish: {:?}",
            t.node.processes()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sinks: Vec<_> = (1..=8)
        .map(shoal_runtime::Pid)
        .filter(|p| t.stdout(*p).contains("sink got"))
        .collect();
    assert_eq!(sinks.len(), 2, "two sinks report");
    for s in sinks {
        let status = t.node.wait(s).await.unwrap();
        assert_success(&t, &status);
        assert!(
            t.stdout(s).contains("sink got 20000 in order"),
            "{}",
            t.stdout(s)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter_keeps_state_between_messages() {
    let t = TestNode::new();
    let hash = t.add_guest(guests::COUNTER, "counter");
    let me = t.node.open_mailbox();
    let pid = t.spawn(hash, &["counter"]).await;
    for n in [5, 7, 30] {
        me.send(pid, format!("add {n}")).unwrap();
    }
    me.send(pid, "get").unwrap();
    let reply = me.recv(LONG).await.expect("counter replies");
    assert_eq!(reply.sender, pid);
    assert_eq!(String::from_utf8(reply.data).unwrap(), "42");
    me.send(pid, "stop").unwrap();
    let status = t.wait(pid, LONG).await;
    assert_success(&t, &status);
    assert!(
        t.stdout(pid).contains("counter total=42 adds=3"),
        "{}",
        t.stdout(pid)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_guest_speaks_the_abi() {
    let t = TestNode::new();
    let hash = t.add_guest(guests::C_PONG, "c_pong");
    let me = t.node.open_mailbox();
    let pid = t.spawn(hash, &["c_pong"]).await;
    me.send(pid, "hello").unwrap();
    let reply = me.recv(LONG).await.expect("c_pong replies");
    assert_eq!(reply.data, b"c:hello");
    me.send(pid, "stop").unwrap();
    let status = t.wait(pid, LONG).await;
    assert_success(&t, &status);
    let out = t.stdout(pid);
    assert!(out.contains(&format!("c_pong ready pid={pid}")), "{out}");
    assert!(out.contains("c_pong done 1 messages"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spinning_guests_do_not_starve_a_ping_pong_pair() {
    let t = TestNode::new();
    let spin = t.add_guest(guests::CPU_BOUND, "cpu_bound");
    let pp = t.add_guest(guests::PING_PONG, "ping_pong");
    // More spinners than worker threads: without preemption none of the
    // ping-pong pair's tasks would ever be polled again.
    let mut spinners = Vec::new();
    for _ in 0..3 {
        spinners.push(t.spawn(spin, &["cpu_bound", "spin"]).await);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let pid = t
        .spawn(pp, &["ping_pong", "ping", "ping_pong", "200"])
        .await;
    let status = t.wait(pid, LONG).await;
    assert_success(&t, &status);
    for s in &spinners {
        assert!(
            t.node.processes().iter().any(|p| p.pid == *s),
            "spinner {s} still running"
        );
        t.node.kill(*s).unwrap();
    }
    for s in spinners {
        assert_eq!(t.wait(s, LONG).await.reason, ExitReason::Killed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_cap_kills_the_greedy_guest_only() {
    let t = TestNode::with(|c| c.process_memory_bytes_max = 64 << 20);
    let greedy = t.add_guest(guests::GREEDY, "greedy");
    let hello = t.add_guest(guests::HELLO, "hello");
    let g = t.spawn(greedy, &["greedy"]).await;
    let h = t.spawn(hello, &["hello"]).await;
    let status = t.wait(g, LONG).await;
    match &status.reason {
        ExitReason::MemoryLimit {
            limit_bytes,
            requested_bytes,
        } => {
            assert_eq!(*limit_bytes, 64 << 20);
            assert!(*requested_bytes > 64 << 20);
        }
        other => panic!("expected a memory-limit kill, got {other}"),
    }
    assert!(
        status.to_string().contains("memory limit exceeded"),
        "{status}"
    );
    assert!(t.stdout(g).contains("allocated 48 MiB"), "{}", t.stdout(g));
    assert_success(&t, &t.wait(h, LONG).await);
    // The node still runs new processes.
    let h2 = t.spawn(hello, &["hello"]).await;
    assert_success(&t, &t.wait(h2, LONG).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuel_limit_stops_a_spinner() {
    let t = TestNode::with(|c| c.process_fuel = Some(5_000_000));
    let spin = t.add_guest(guests::CPU_BOUND, "cpu_bound");
    let pid = t.spawn(spin, &["cpu_bound", "spin"]).await;
    let status = t.wait(pid, LONG).await;
    assert_eq!(status.reason, ExitReason::FuelExhausted { fuel: 5_000_000 });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_module_is_rejected_with_a_clear_error() {
    let t = TestNode::new();
    let hash = t
        .node
        .add_module(b"\0asm\x01\0\0\0\x01\x05garbage")
        .unwrap();
    let err = t
        .node
        .spawn(shoal_runtime::SpawnSpec::new(hash, vec!["bad".into()]))
        .await
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains(&hash.to_string()), "names the module: {text}");
    assert!(text.contains("offset"), "says where: {text}");
    // Not a wasm module at all.
    let hash = t.node.add_module(b"#!/bin/sh\necho hi\n").unwrap();
    let err = t
        .node
        .spawn(shoal_runtime::SpawnSpec::new(hash, vec!["bad".into()]))
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("invalid module"), "{err:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_pointers_get_error_codes_and_harm_nothing() {
    let t = TestNode::new();
    let bad = t.add_guest(guests::BAD_POINTER, "bad_pointer");
    let counter = t.add_guest(guests::COUNTER, "counter");
    let me = t.node.open_mailbox();
    let c = t.spawn(counter, &["counter"]).await;
    me.send(c, "add 1").unwrap();
    let pid = t.spawn(bad, &["bad_pointer"]).await;
    let status = t.wait(pid, LONG).await;
    assert_success(&t, &status);
    assert!(
        t.stdout(pid).contains("bad_pointer all checks passed"),
        "{}",
        t.stdout(pid)
    );
    // A bystander is unaffected.
    me.send(c, "get").unwrap();
    let reply = me.recv(LONG).await.expect("counter still answers");
    assert_eq!(reply.data, b"1");
    me.send(c, "stop").unwrap();
    assert_success(&t, &t.wait(c, LONG).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_load_uses_the_compiled_artifact_cache() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(guests::HELLO).unwrap();
    let hash = {
        let node = shoal_runtime::Node::new(shoal_runtime::NodeConfig::new(dir.path())).unwrap();
        let hash = node.add_module(&bytes).unwrap();
        assert!(!node.is_compiled(&hash));
        let m = node.load_module(&hash).unwrap();
        assert!(matches!(
            m.origin,
            shoal_runtime::modules::LoadOrigin::Compiled { .. }
        ));
        hash
    };
    let node = shoal_runtime::Node::new(shoal_runtime::NodeConfig::new(dir.path())).unwrap();
    assert!(node.is_compiled(&hash));
    let m = node.load_module(&hash).unwrap();
    assert!(
        matches!(
            m.origin,
            shoal_runtime::modules::LoadOrigin::ArtifactCache { .. }
        ),
        "{:?}",
        m.origin
    );
}
