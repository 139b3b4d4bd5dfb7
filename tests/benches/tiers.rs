//! What the baseline tier costs at run time (#17, `shoal_runtime::modules`): the same
//! CPU-bound work in a process that got Winch's code and in one that got Cranelift's.
//!
//! Run with `cargo bench -p shoal-tests --bench tiers` (from `tests/`). Each round makes two
//! fresh nodes (no artifact cache): one that puts every module in the baseline tier first
//! (`baseline_tier_bytes_min = 0`) and one with tiers off. On the first, the module is loaded
//! (Winch) and the process spawned at once, before the background Cranelift compile of the
//! guest is done; a run whose process got the optimizing tier anyway is not counted. While a
//! baseline run goes on, that compile runs at nice 5 beside it (as on a real node): ~70 ms for
//! the 100 KB `cpu_bound`, seconds for the 12 MB Python interpreter, which makes the Python
//! figures of the baseline tier pessimistic on a two-core machine. Best of `ROUNDS`,
//! interleaved. The compile of the module is outside the timed run.

use shoal_registry::Sha256;
use shoal_runtime::modules::Tier;
use shoal_runtime::{Node, NodeConfig, SpawnSpec};
use shoal_tests as guests;
use std::time::{Duration, Instant};

/// Rounds of each workload (best kept).
const ROUNDS: usize = 5;

/// A fresh node, its copy of `guest`, loaded.
fn node(dir: &std::path::Path, baseline: bool, guest: &str) -> (Node, Sha256) {
    let mut config = NodeConfig::new(dir);
    config.engine.processes_max = 8;
    config.baseline_tier_bytes_min = baseline.then_some(0);
    let node = Node::new(config).expect("node");
    let wasm = std::fs::read(guest).expect("guest");
    let hash = node.add_module(&wasm).expect("add");
    node.load_module(&hash).expect("load");
    (node, hash)
}

/// Runs `argv` (`{hash}` replaced by the module's hash) to its end, which
/// must be exit code `code`: the time and the tier it ran in.
async fn run(node: &Node, hash: Sha256, argv: &[&str], code: i32) -> (Duration, Tier) {
    let argv: Vec<String> = argv
        .iter()
        .map(|a| a.replace("{hash}", &hash.to_string()))
        .collect();
    let spec = SpawnSpec::new(hash, argv);
    let t = Instant::now();
    let pid = node.spawn(spec).await.expect("spawn");
    let tier = node
        .processes()
        .into_iter()
        .find(|p| p.pid == pid)
        .map_or(Tier::Optimized, |p| p.tier);
    let status = node.wait(pid).await.expect("status");
    assert_eq!(status.code(), code, "{status}: {}", node.stdout_text(pid));
    (t.elapsed(), tier)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        println!("run time of the baseline tier (Winch) against the optimizing tier (Cranelift); best of {ROUNDS}");
        let workloads: [(&str, &str, &[&str], i32); 4] = [
            ("cpu_bound work 20000000", guests::CPU_BOUND, &["cpu_bound", "work", "20000000"], 0),
            ("cpu_bound sieve 30000000", guests::CPU_BOUND, &["cpu_bound", "sieve", "30000000"], 0),
            // Bad arguments: the interpreter starts, prints its usage and exits 2.
            ("python start (usage, exit 2)", guests::PY_PINGPONG, &["py_pingpong"], 2),
            (
                "python ping-pong, 2000 round trips (both Python)",
                guests::PY_PINGPONG,
                &["py_pingpong", "ping", "{hash}", "2000"],
                0,
            ),
        ];
        for (what, guest, argv, code) in workloads {
            let mut best = [Duration::MAX; 2];
            let mut skipped = 0;
            for _ in 0..ROUNDS {
                for (k, baseline) in [true, false].into_iter().enumerate() {
                    let dir = tempfile::tempdir().expect("tempdir");
                    let (node, hash) = node(dir.path(), baseline, guest);
                    let (took, tier) = run(&node, hash, argv, code).await;
                    let wanted = if baseline { Tier::Baseline } else { Tier::Optimized };
                    if tier == wanted {
                        best[k] = best[k].min(took);
                    } else {
                        skipped += 1;
                    }
                }
            }
            println!(
                "{what}: baseline {:?}, optimized {:?}: ratio {:.2} ({skipped} runs in the other tier not counted)",
                best[0],
                best[1],
                best[0].as_secs_f64() / best[1].as_secs_f64()
            );
        }
    });
}
