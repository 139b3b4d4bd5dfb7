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

    // The first capture copies all of memory and starts write tracking.
    let first = a.snapshot(pid, false, LONG).await.unwrap();
    // Then captures with nothing written but the capture's own stack.
    let mut capture = Vec::new();
    let mut info = None;
    for _ in 0..5 {
        let i = a.snapshot(pid, false, LONG).await.unwrap();
        capture.push(i.waited);
        info = Some(i);
    }
    let info = info.unwrap();
    capture.sort();
    // The peers measured in this run: what a capture and a store used to
    // cost, a fresh copy of all of memory and a sha256 of it.
    let bytes = vec![1u8; info.memory_bytes as usize];
    let t = Instant::now();
    let copied = bytes.to_vec();
    let copy_all = t.elapsed();
    let t = Instant::now();
    let _ = shoal_registry::Sha256::of(&copied);
    let hash_all = t.elapsed();
    drop(copied);
    println!(
        "{mib:>4} MiB touched: first capture {:>9.3?} (all of memory); capture with few pages written p50 {:>9.3?} (min {:>9.3?}), \
         {:.3}x a fresh copy of all memory ({:>9.3?}); store {:>9.3?}, {:.3}x a sha256 of all memory ({:>9.3?})",
        first.waited,
        capture[capture.len() / 2],
        capture[0],
        ratio(capture[capture.len() / 2], copy_all),
        copy_all,
        info.store_time,
        ratio(info.store_time, hash_all),
        hash_all,
    );
    // Checkpoint cost against the pages written since the last one.
    let mut inc = None;
    for touched in [1usize, 64, 1024] {
        me.send(pid, format!("touch {touched}").as_bytes()).unwrap();
        me.recv(LONG).await.unwrap();
        let i = a.snapshot(pid, false, LONG).await.unwrap();
        println!(
            "       {touched:>5} pages written: capture {:>9.3?} + store {:>9.3?} = {:>9.3?} per checkpoint; {} new pages ({} KiB)",
            i.waited,
            i.store_time,
            i.waited + i.store_time,
            i.pages_new,
            i.bytes_new >> 10
        );
        inc.get_or_insert(i);
    }
    let inc = inc.unwrap();

    let file = a.export_snapshot(&info.id).unwrap();
    let id = b.import_snapshot(&file).unwrap();
    // Restored five times (each a new copy that answers, then stops).
    let me_b = b.open_mailbox();
    let mut restores = Vec::new();
    let mut answered = Vec::new();
    let rounds: usize = std::env::var("SHOAL_BENCH_RESTORES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(11);
    for _ in 0..rounds {
        let t = Instant::now();
        let restored = b
            .restore_snapshot(&id, false, &Default::default())
            .await
            .unwrap();
        restores.push(t.elapsed());
        // Running again: it answers from inside the `recv` it was
        // captured in (`touch 0` does no work).
        me_b.send(restored, "touch 0").unwrap();
        me_b.recv(LONG).await.expect("restored toucher answers");
        answered.push(t.elapsed());
        me_b.send(restored, "sum").unwrap();
        me_b.recv(LONG).await.expect("restored toucher answers");
        me_b.send(restored, "stop").unwrap();
        b.wait(restored).await.unwrap();
    }
    restores.sort();
    answered.sort();
    println!(
        "       restore p50 {:>9.3?} (min {:>9.3?}) to its first answer, of which the call returned in {:>9.3?}; memory {} MiB, \
         snapshot pages {} ({:.1} MiB), file {:.1} MiB; incremental after one touch: {} new pages ({} B)",
        answered[answered.len() / 2],
        answered[0],
        restores[restores.len() / 2],
        info.memory_bytes >> 20,
        info.pages_total,
        info.pages_total as f64 * 4096.0 / (1 << 20) as f64,
        file.len() as f64 / (1 << 20) as f64,
        inc.pages_new,
        inc.bytes_new
    );
    me.send(pid, "stop").unwrap();
}

/// `a / b`, for the ratios printed beside each figure.
fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-9)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        println!(
            "== shoal snapshot benchmarks (aims: capture with few pages written <= 0.5 ms at 1 MiB and <= 5 ms at 16 MiB; \
             restore <= 1 ms at 1 MiB; incremental <= 2 pages; write tracking: {})",
            if shoal_runtime::dirty::WriteTracker::supported() { "on" } else { "off" }
        );
        let sizes: Vec<usize> = std::env::var("SHOAL_BENCH_MIB")
            .ok()
            .map(|s| s.split(',').filter_map(|x| x.parse().ok()).collect())
            .unwrap_or_else(|| vec![1, 16, 256]);
        for mib in sizes {
            one_size(mib).await;
        }
    });
}
