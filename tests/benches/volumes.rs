//! File benchmarks (#15): a private volume against a host directory granted
//! with `--dir` on the same disk, in the same run, through the same guest
//! (`journal bench`, timed inside the guest with the WASI monotonic clock):
//! sequential write and read throughput, small-file create and stat rates.
//! Then what a process's volume costs to capture (first and repeat) and to
//! rebuild on another node.
//!
//! Then, on a 3-node cluster in the same run: a **shared volume** (R=2)
//! against the same host directory with the same (smaller) sizes — every
//! small file there is a published version, a Raft write and a replica
//! copy — and the **bytes a move sends** for a process with 64 MiB of
//! files, first and after 1 MiB changed.
//!
//! Run with `cargo bench -p shoal-tests --bench volumes`. Prints figures and
//! the ratio to the host directory (aim for private volumes: ≥ 0.5×);
//! never fails on a slow machine.

#[path = "../tests/it/common/cluster.rs"]
#[allow(dead_code)] // the shared helpers this bench does not use
mod cluster;

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
/// The shared volume's sequential file and small files (each small file
/// is a Raft write and a replica copy).
const SHARED_SEQ_BYTES: u64 = 64 << 20;
const SHARED_FILES: u64 = 200;
/// Runs for the shared volume.
const SHARED_RUNS: usize = 3;

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

/// The medians of the four `bench` figures of `a` and `b`, over RUNS runs
/// taken in turn.
async fn figures_pair(mb: &HostMailbox, a: Pid, b: Pid) -> ([f64; 4], [f64; 4]) {
    let (mut ra, mut rb) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        ra.push(figures_of(mb, a, SEQ_BYTES, FILES, 1).await);
        rb.push(figures_of(mb, b, SEQ_BYTES, FILES, 1).await);
    }
    (median(&ra), median(&rb))
}

fn median(runs: &[[f64; 4]]) -> [f64; 4] {
    let mut out = [0.0; 4];
    for (k, o) in out.iter_mut().enumerate() {
        let mut col: Vec<f64> = runs.iter().map(|r| r[k]).collect();
        col.sort_by(|a, b| a.total_cmp(b));
        *o = col[col.len() / 2];
    }
    out
}

/// The median of each of the four `bench` figures over `runs` runs.
async fn figures_of(mb: &HostMailbox, pid: Pid, bytes: u64, files: u64, runs_n: usize) -> [f64; 4] {
    let mut runs: Vec<[f64; 4]> = Vec::new();
    for _ in 0..runs_n {
        let a = ask(mb, pid, &format!("bench {bytes} {files}")).await;
        let v: Vec<f64> = a
            .split(' ')
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        assert_eq!(v.len(), 4, "bench answer: {a}");
        runs.push([v[0], v[1], v[2], v[3]]);
    }
    median(&runs)
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

    // Interleaved runs: each configuration's creates follow the other's
    // deletions equally (ext4 scans recently deleted inodes when it
    // allocates new ones: whichever ran second would pay for that alone).
    let (host, vol) = figures_pair(&mb, host_pid, vol_pid).await;
    println!(
        "files: {} MiB sequential, {FILES} small files, median of {RUNS} runs (same disk, same guest)",
        SEQ_BYTES >> 20
    );
    println!(
        "{:<22} {:>14} {:>14} {:>8}",
        "", "host --dir", "private volume", "ratio"
    );
    print_ratios(&host, &vol, "(aim >= 0.5x)");

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

    // A shared volume on a 3-node cluster, against the same host dir with
    // the same sizes, measured now.
    let host_small = figures_of(&mb, host_pid, SHARED_SEQ_BYTES, SHARED_FILES, SHARED_RUNS).await;
    let c = cluster::TestCluster::start(3).await;
    c.add_guest(0, guests::JOURNAL, "journal").await;
    let admin = c.admin_client(0);
    admin
        .volume_create(&shoal_api::volumes::VolumeCreate {
            name: "bench".into(),
            replicas: 2,
            bytes_max: None,
            files_max: None,
        })
        .await
        .expect("create the shared volume");
    admin
        .volume_put(None, "bench", "b/.keep", Vec::new())
        .await
        .expect("mkdir");
    let deploy = |args: Vec<String>, volume: shoal_api::types::VolumeRequest, on: usize| {
        let admin = c.admin_client(0);
        let node = c.node(on).name().to_string();
        async move {
            admin
                .spawn(&shoal_api::types::SpawnRequest {
                    module: "journal".into(),
                    argv0: Some("journal".into()),
                    args,
                    env: Vec::new(),
                    count: 1,
                    memory_bytes_max: None,
                    node: Some(node),
                    labels: Default::default(),
                    preemptible: false,
                    volumes: vec![volume],
                    restart: None,
                })
                .await
                .expect("deploy journal")[0]
                .pid
        }
    };
    let shared_pid = deploy(
        vec!["/shared/b".into()],
        shoal_api::types::VolumeRequest {
            guest: "/shared".into(),
            bytes_max: None,
            files_max: None,
            shared: Some("bench".into()),
        },
        0,
    )
    .await;
    let mb_c = c.node(0).node().open_mailbox();
    let shared = figures_of(
        &mb_c,
        shared_pid,
        SHARED_SEQ_BYTES,
        SHARED_FILES,
        SHARED_RUNS,
    )
    .await;
    println!(
        "shared volume (R=2, 3 nodes on loopback): {} MiB sequential, {SHARED_FILES} small files, median of {SHARED_RUNS} runs",
        SHARED_SEQ_BYTES >> 20
    );
    println!(
        "{:<22} {:>14} {:>14} {:>8}",
        "", "host --dir", "shared volume", "ratio"
    );
    print_ratios(&host_small, &shared, "");

    // Bytes a move sends for a process with 64 MiB of files.
    let moved = deploy(
        vec!["/data".into()],
        shoal_api::types::VolumeRequest {
            guest: "/data".into(),
            bytes_max: None,
            files_max: None,
            shared: None,
        },
        0,
    )
    .await;
    ask(&mb_c, moved, "write big 67108864 7").await;
    let go = |from: usize, to: usize| {
        let name = c.node(to).name().to_string();
        let m = std::sync::Arc::clone(c.node(from).migration());
        async move {
            shoal_daemon::migrate::source::migrate(&m, moved, Some(&name))
                .await
                .expect("migrate")
        }
    };
    let first = go(0, 1).await;
    ask(&mb_c, moved, "patch big 4194304 1048576 9").await;
    let repeat = go(1, 0).await;
    println!(
        "move with 64 MiB of files: first {} volume bytes sent (froze {:.1} ms); back after 1 MiB changed: {} bytes (froze {:.1} ms)",
        first.volume_bytes_sent,
        first.freeze_us as f64 / 1e3,
        repeat.volume_bytes_sent,
        repeat.freeze_us as f64 / 1e3
    );
    c.shutdown().await;
}

fn print_ratios(host: &[f64; 4], other: &[f64; 4], aim: &str) {
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
            "{what:<22} {:>14.1} {:>14.1} {:>7.2}x  {aim}",
            host[k],
            other[k],
            other[k] / host[k]
        );
    }
}
