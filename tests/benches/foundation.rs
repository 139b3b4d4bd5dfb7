//! Foundation benchmarks: spawn rate, local messaging, Asyncify overhead.
//!
//! Run with `cargo bench -p shoal-tests --bench foundation`. Prints figures
//! (and the issue's aims beside them); it never fails on a slow machine.

use shoal_registry::Sha256;
use shoal_runtime::modules::LoadOrigin;
use shoal_runtime::{Node, NodeConfig, Pid, SpawnSpec};
use shoal_tests as guests;
use std::time::{Duration, Instant};

const TINY_WAT: &str = r#"(module (memory (export "memory") 1) (func (export "_start")))"#;

fn node(dir: &std::path::Path, tweak: impl FnOnce(&mut NodeConfig)) -> Node {
    let mut config = NodeConfig::new(dir);
    config.engine.processes_max = 2000;
    config.engine.memory_bytes_max = 64 << 20;
    config.process_memory_bytes_max = 64 << 20;
    tweak(&mut config);
    Node::new(config).expect("node")
}

fn add(node: &Node, path: &str, name: &str) -> Sha256 {
    let hash = node
        .add_module(&std::fs::read(path).expect("guest built"))
        .unwrap();
    node.registry().set_name(name, &hash).unwrap();
    node.load_module(&hash).unwrap();
    hash
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p) as usize]
}

async fn bench_spawn(node: &Node) {
    let hash = node.add_module(&wat::parse_str(TINY_WAT).unwrap()).unwrap();
    node.load_module(&hash).unwrap();
    // Latency: spawn and wait, one at a time.
    let mut lat = Vec::new();
    for _ in 0..2000 {
        let t = Instant::now();
        let pid = node
            .spawn(SpawnSpec::new(hash, vec!["tiny".into()]))
            .await
            .unwrap();
        node.wait(pid).await.unwrap();
        lat.push(t.elapsed());
    }
    lat.sort();
    println!(
        "spawn+exit latency (tiny guest, sequential): p50 {:?}  p99 {:?}",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );
    // Throughput: keep up to 256 in flight.
    let n = 40_000;
    let t = Instant::now();
    let mut in_flight = std::collections::VecDeque::new();
    for _ in 0..n {
        if in_flight.len() >= 256 {
            let pid: Pid = in_flight.pop_front().unwrap();
            node.wait(pid).await.unwrap();
        }
        in_flight.push_back(
            node.spawn(SpawnSpec::new(hash, vec!["tiny".into()]))
                .await
                .unwrap(),
        );
    }
    for pid in in_flight {
        node.wait(pid).await.unwrap();
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    println!("spawns/s (tiny guest, 256 in flight): {rate:.0}   [aim >= 20000]");
}

async fn run_to_end(node: &Node, hash: Sha256, argv: &[&str]) -> (Pid, Duration) {
    let t = Instant::now();
    let pid = node
        .spawn(SpawnSpec::new(
            hash,
            argv.iter().map(|s| s.to_string()).collect(),
        ))
        .await
        .unwrap();
    let status = node.wait(pid).await.unwrap();
    assert!(status.success(), "{status}: {}", node.stdout_text(pid));
    (pid, t.elapsed())
}

async fn bench_messages(node: &Node) {
    let pp = add(node, guests::PING_PONG, "ping_pong");
    let n = 50_000;
    let (_, elapsed) = run_to_end(
        node,
        pp,
        &["ping_pong", "ping", "ping_pong", &n.to_string()],
    )
    .await;
    println!(
        "local round trip (guest<->guest): {:.2} us avg over {n}",
        elapsed.as_secs_f64() * 1e6 / n as f64
    );
    let n = 500_000;
    let (_, elapsed) = run_to_end(
        node,
        pp,
        &["ping_pong", "blast", "ping_pong", &n.to_string(), "16"],
    )
    .await;
    // wait for the sink too: it ends after receiving everything
    let deadline = Instant::now() + Duration::from_secs(120);
    while !node.processes().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let total = elapsed.max(Duration::from_nanos(1));
    println!(
        "one-way local messages/s (16 B, sender to sink): {:.0}   [aim >= 500000]",
        n as f64 / total.as_secs_f64()
    );
}

async fn bench_asyncify() {
    for mode in ["sieve", "sieve-yield"] {
        let mut results = Vec::new();
        for instrumented in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let node = node(dir.path(), |c| c.instrument = instrumented);
            let hash = add(&node, guests::CPU_BOUND, "cpu_bound");
            if let LoadOrigin::Compiled {
                report: Some(report),
                ..
            } = &node.load_module(&hash).unwrap().origin
            {
                if mode == "sieve" {
                    println!(
                        "asyncify (cpu_bound): {} of {} functions instrumented, {} -> {} bytes",
                        report.functions_instrumented,
                        report.functions_total,
                        report.input_bytes,
                        report.output_bytes
                    );
                }
            }
            let mut best = Duration::MAX;
            for _ in 0..7 {
                let (_, e) = run_to_end(&node, hash, &["cpu_bound", mode, "20000000"]).await;
                best = best.min(e);
            }
            results.push(best);
        }
        let overhead = (results[1].as_secs_f64() / results[0].as_secs_f64() - 1.0) * 100.0;
        println!(
            "asyncify CPU overhead ({mode} 2e7, best of 7): plain {:?}, prepared {:?}, overhead {overhead:+.1}%   [aim <= 5%]",
            results[0], results[1]
        );
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let node = node(dir.path(), |_| {});
        println!(
            "== shoal foundation benchmarks ({} cores)",
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        );
        bench_spawn(&node).await;
        bench_messages(&node).await;
        bench_asyncify().await;
    });
}
