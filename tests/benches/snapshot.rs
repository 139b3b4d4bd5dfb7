//! Snapshot benchmarks: capture time, restore time and snapshot size against
//! touched memory, and the size of an incremental snapshot.
//!
//! Run with `cargo bench -p shoal-tests --bench snapshot`. Prints figures
//! with the aims beside them; never fails on a slow machine.

use shoal_runtime::{Node, NodeConfig, SpawnSpec};
use shoal_tests as guests;
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(120);

fn node(dir: &std::path::Path) -> Node {
    let mut config = NodeConfig::new(dir);
    config.engine.processes_max = 8;
    config.engine.memory_bytes_max = 1 << 30;
    config.process_memory_bytes_max = 1 << 30;
    Node::new(config).expect("node")
}

async fn one_size(mib: usize) {
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let a = node(dir_a.path());
    let b = node(dir_b.path());
    let wasm = std::fs::read(guests::TOUCHER).unwrap();
    let hash = a.add_module(&wasm).unwrap();
    b.add_module(&wasm).unwrap();
    a.load_module(&hash).unwrap();
    b.load_module(&hash).unwrap();
    let me = a.open_mailbox();
    let pid = a
        .spawn(SpawnSpec::new(
            hash,
            vec!["toucher".into(), mib.to_string()],
        ))
        .await
        .unwrap();
    // Wait until it is filled and blocked in recv.
    me.send(pid, "sum").unwrap();
    me.recv(LONG).await.expect("toucher answers");

    let mut capture = Vec::new();
    let mut info = None;
    for _ in 0..5 {
        let i = a.snapshot(pid, false, LONG).await.unwrap();
        capture.push(i.waited);
        info = Some(i);
    }
    let info = info.unwrap();
    capture.sort();
    // Incremental: touch one page, snapshot again.
    me.send(pid, "touch").unwrap();
    me.recv(LONG).await.unwrap();
    let inc = a.snapshot(pid, false, LONG).await.unwrap();

    let file = a.export_snapshot(&info.id).unwrap();
    let id = b.import_snapshot(&file).unwrap();
    let t = Instant::now();
    let restored = b
        .restore_snapshot(&id, false, &Default::default())
        .await
        .unwrap();
    let restore_time = t.elapsed();
    let me_b = b.open_mailbox();
    me_b.send(restored, "sum").unwrap();
    me_b.recv(LONG).await.expect("restored toucher answers");
    println!(
        "{mib:>4} MiB touched: capture p50 {:>9.3?} (min {:>9.3?}), store {:>9.3?}, restore {:>9.3?}; memory {} MiB, \
         snapshot pages {} ({:.1} MiB), file {:.1} MiB; incremental after one touch: {} new pages ({} B)",
        capture[capture.len() / 2],
        capture[0],
        info.store_time,
        restore_time,
        info.memory_bytes >> 20,
        info.pages_total,
        info.pages_total as f64 * 4096.0 / (1 << 20) as f64,
        file.len() as f64 / (1 << 20) as f64,
        inc.pages_new,
        inc.bytes_new
    );
    me.send(pid, "stop").unwrap();
    me_b.send(restored, "stop").unwrap();
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        println!("== shoal snapshot benchmarks (aims: 1 MiB capture+restore <= 500 us each, 16 MiB <= 5 ms, incremental <= 2 pages)");
        let sizes: Vec<usize> = std::env::var("SHOAL_BENCH_MIB")
            .ok()
            .map(|s| s.split(',').filter_map(|x| x.parse().ok()).collect())
            .unwrap_or_else(|| vec![1, 16, 256]);
        for mib in sizes {
            one_size(mib).await;
        }
    });
}
