//! What preemption points cost, and what they buy.
//!
//! Run with `cargo bench -p shoal-tests --bench preempt`. Prints:
//!
//! * code size: the `cpu_bound` guest as given, prepared normally, prepared preemptible;
//! * CPU: `cpu_bound work <N>` and `cpu_bound sieve <N>` run to completion, normal vs
//!   preemptible variant of the same module on the same node, best of `ROUNDS` runs each,
//!   interleaved (normal, preemptible, normal, ...) so both see the same machine load;
//! * the bound: time from a capture request to the captured image of a preemptible
//!   `cpu_bound spin` process (which a normal module never reaches at all).
//!
//! It never fails on a slow machine; the figures go into `host/src/prepare/preempt.rs`.

use shoal_abi::table::blocking_imports;
use shoal_prepare::{prepare, PrepareOptions, PREEMPT_INTERVAL};
use shoal_registry::Sha256;
use shoal_runtime::{Node, NodeConfig, Pid, SpawnSpec};
use shoal_tests as guests;
use std::time::{Duration, Instant};

/// Runs of each variant per workload (best one kept).
const ROUNDS: usize = 7;
/// Captures of the spinner timed.
const CAPTURES: usize = 50;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p) as usize]
}

fn spec(hash: Sha256, argv: &[&str], preemptible: bool) -> SpawnSpec {
    let mut spec = SpawnSpec::new(hash, argv.iter().map(|s| s.to_string()).collect());
    spec.preemptible = preemptible;
    spec
}

async fn run_to_end(node: &Node, hash: Sha256, argv: &[&str], preemptible: bool) -> Duration {
    let t = Instant::now();
    let pid = node.spawn(spec(hash, argv, preemptible)).await.unwrap();
    let status = node.wait(pid).await.unwrap();
    assert!(status.success(), "{status}: {}", node.stdout_text(pid));
    t.elapsed()
}

fn bench_size(wasm: &[u8]) {
    let normal = prepare(wasm, &PrepareOptions::new(blocking_imports())).unwrap();
    let preempt = prepare(
        wasm,
        &PrepareOptions {
            preempt: true,
            ..PrepareOptions::new(blocking_imports())
        },
    )
    .unwrap();
    let (n, p) = (&normal.report, &preempt.report);
    println!(
        "code size (cpu_bound): input {} B, prepared {} B, preemptible {} B: ratio {:.2}",
        wasm.len(),
        n.output_bytes,
        p.output_bytes,
        p.output_bytes as f64 / n.output_bytes as f64
    );
    println!(
        "functions instrumented: normal {} of {}, preemptible {} of {} ({} loops checked, interval {PREEMPT_INTERVAL})",
        n.functions_instrumented,
        n.functions_total,
        p.functions_instrumented,
        p.functions_total,
        p.preempt_loops
    );
}

async fn bench_cpu(node: &Node, hash: Sha256) {
    for args in [["work", "20000000"], ["sieve", "30000000"]] {
        let argv = ["cpu_bound", args[0], args[1]];
        let mut best = [Duration::MAX; 2];
        for _ in 0..ROUNDS {
            for (k, preemptible) in [false, true].into_iter().enumerate() {
                best[k] = best[k].min(run_to_end(node, hash, &argv, preemptible).await);
            }
        }
        println!(
            "CPU {} {} (best of {ROUNDS}, interleaved): normal {:?}, preemptible {:?}: ratio {:.3}",
            args[0],
            args[1],
            best[0],
            best[1],
            best[1].as_secs_f64() / best[0].as_secs_f64()
        );
    }
}

async fn bench_capture(node: &Node, hash: Sha256) {
    let pid: Pid = node
        .spawn(spec(hash, &["cpu_bound", "spin"], true))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !node.stdout_text(pid).contains("spinning") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut lat = Vec::with_capacity(CAPTURES);
    let mut memory_bytes = 0;
    for _ in 0..CAPTURES {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let t = Instant::now();
        let image = node
            .capture(pid, false, Duration::from_secs(30))
            .await
            .expect("preemptible spinner captured");
        lat.push(t.elapsed());
        memory_bytes = image.memory.len();
    }
    lat.sort();
    println!(
        "capture request -> image of a preemptible spinner ({memory_bytes} B memory, {CAPTURES} captures): p50 {:?}  p99 {:?}  max {:?}",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat[lat.len() - 1]
    );
    let normal = node
        .spawn(spec(hash, &["cpu_bound", "spin"], false))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    match node.capture(normal, false, Duration::from_secs(2)).await {
        Ok(_) => println!("unexpected: a normal spinner was captured"),
        Err(e) => println!("same spinner without preemption points: {e}"),
    }
    for p in [pid, normal] {
        node.kill(p).unwrap();
        node.wait(p).await;
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let node = Node::new(NodeConfig::new(dir.path())).expect("node");
        let wasm = std::fs::read(guests::CPU_BOUND).expect("guest built");
        let hash = node.add_module(&wasm).unwrap();
        // Compile both variants before timing anything.
        node.load_module_variant(&hash, false).unwrap();
        node.load_module_variant(&hash, true).unwrap();
        println!(
            "== shoal preemption benchmarks ({} cores)",
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        );
        bench_size(&wasm);
        bench_cpu(&node, hash).await;
        bench_capture(&node, hash).await;
    });
}
