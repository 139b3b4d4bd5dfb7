//! File benchmarks (#15): a private volume against a host directory granted
//! with `--dir` on the same disk, in the same run, through the same guest
//! (`journal bench`, timed inside the guest with the WASI monotonic clock):
//! sequential write and read throughput, small-file create and stat rates.
//! Then what a process's volume costs to capture (first and repeat) and to
//! rebuild on another node.
//!
//! Run with `cargo bench -p shoal-tests --bench volumes`. Prints figures and
//! the ratio to the host directory (aim for private volumes: ≥ 0.5×);
//! never fails on a slow machine.

use shoal_runtime::node::DirGrant;
use shoal_runtime::volume::VolumeMount;
use shoal_runtime::{HostMailbox, Node, NodeConfig, Pid, SpawnSpec};
use shoal_tests as guests;
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(300);
/// Bytes of the sequential file.
const SEQ_BYTES: u64 = 256 << 20;
/// Small files created and stat'ed.
const FILES: u64 = 5_000;
/// Runs per configuration (the median is printed).
const RUNS: usize = 5;

fn node(dir: &std::path::Path) -> Node {
    let mut config = NodeConfig::new(dir.join("node"));
    config.engine.processes_max = 8;
    Node::new(config).expect("node")
}

async fn ask(mb: &HostMailbox, pid: Pid, text: &str) -> String {
    mb.send(pid, text.as_bytes().to_vec()).expect("send");
    let reply = mb.recv(LONG).await.expect("an answer");
    String::from_utf8_lossy(&reply.data).into_owned()
}

/// The median of each of the four `bench` figures over RUNS runs.
async fn figures(mb: &HostMailbox, pid: Pid) -> [f64; 4] {
    let mut runs: Vec<[f64; 4]> = Vec::new();
    for _ in 0..RUNS {
        let a = ask(mb, pid, &format!("bench {SEQ_BYTES} {FILES}")).await;
        let v: Vec<f64> = a
            .split(' ')
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        assert_eq!(v.len(), 4, "bench answer: {a}");
        runs.push([v[0], v[1], v[2], v[3]]);
    }
    let mut out = [0.0; 4];
    for (k, o) in out.iter_mut().enumerate() {
        let mut col: Vec<f64> = runs.iter().map(|r| r[k]).collect();
        col.sort_by(|a, b| a.total_cmp(b));
        *o = col[col.len() / 2];
    }
    out
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let host_dir = tmp.path().join("host-dir");
    std::fs::create_dir_all(&host_dir).expect("host dir");
    let a = node(tmp.path());
    let wasm = std::fs::read(guests::JOURNAL).expect("journal.wasm");
    let hash = a.add_module(&wasm).expect("add");
    a.load_module(&hash).expect("load");
    let mb = a.open_mailbox();

    let mut on_host = SpawnSpec::new(hash, vec!["journal".into(), "/host".into()]);
    on_host.dirs = vec![DirGrant {
        host: host_dir.clone(),
        guest: "/host".into(),
    }];
    let host_pid = a.spawn(on_host).await.expect("journal on a host dir");
    let mut on_volume = SpawnSpec::new(hash, vec!["journal".into(), "/data".into()]);
    on_volume.volumes = vec![VolumeMount::new("/data")];
    let vol_pid = a.spawn(on_volume).await.expect("journal on a volume");

    let host = figures(&mb, host_pid).await;
    let vol = figures(&mb, vol_pid).await;
    println!(
        "files: {} MiB sequential, {FILES} small files, median of {RUNS} runs (same disk, same guest)",
        SEQ_BYTES >> 20
    );
    println!(
        "{:<22} {:>14} {:>14} {:>8}",
        "", "host --dir", "private volume", "ratio"
    );
    for (k, what) in [
        "sequential write MB/s",
        "sequential read MB/s",
        "creates/s",
        "stats/s",
    ]
    .iter()
    .enumerate()
    {
        println!(
            "{what:<22} {:>14.1} {:>14.1} {:>7.2}x  (aim >= 0.5x)",
            host[k],
            vol[k],
            vol[k] / host[k]
        );
    }

    // Capture: 64 MiB of files, then again with 1 MiB changed.
    ask(&mb, vol_pid, "write big 67108864 7").await;
    // Past the racy-clean margin, so the repeat capture may reuse hashes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = Instant::now();
    let first = a.snapshot(vol_pid, false, LONG).await.expect("snapshot");
    let first_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let unchanged = a.snapshot(vol_pid, false, LONG).await.expect("snapshot");
    let unchanged_ms = t.elapsed().as_secs_f64() * 1e3;
    ask(&mb, vol_pid, "patch big 4194304 1048576 9").await;
    let t = Instant::now();
    a.snapshot(vol_pid, false, LONG).await.expect("snapshot");
    let changed_ms = t.elapsed().as_secs_f64() * 1e3;
    println!(
        "capture with a 64 MiB volume: first {first_ms:.1} ms, nothing changed {unchanged_ms:.1} ms, 1 MiB of one file changed {changed_ms:.1} ms"
    );
    // Rebuild elsewhere: export, import and restore on a second node.
    let b_dir = tempfile::tempdir().expect("tempdir");
    let b = node(b_dir.path());
    b.add_module(&wasm).expect("add");
    b.load_module(&hash).expect("load");
    let file = a.export_snapshot(&first.id).expect("export");
    let id = b.import_snapshot(&file).expect("import");
    let t = Instant::now();
    let restored = b
        .restore_snapshot(&id, false, &Default::default())
        .await
        .expect("restore");
    let mb_b = b.open_mailbox();
    let digest = ask(&mb_b, restored, "digest").await;
    let restore_ms = t.elapsed().as_secs_f64() * 1e3;
    println!(
        "restore with a 64 MiB volume on another node: {restore_ms:.1} ms to the first answer ({digest}); snapshot file {} MiB; repeat snapshot {}",
        file.len() >> 20,
        unchanged.id.short()
    );
}
