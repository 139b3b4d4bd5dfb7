//! Replicated key-value and locks (issue #14) against etcd, side by side in
//! one run on this machine:
//!
//! - etcd 3.4 (Debian's `etcd-server`) as a 3-member cluster on loopback,
//!   driven through its JSON gateway over HTTP by one keep-alive client on
//!   the leader (`common/etcd.rs`);
//! - Shoal: a 3-node in-process cluster on loopback (mutual TLS), driven by
//!   a `locker bench` guest on the leader, timing each call inside the
//!   guest (and one on a follower, whose writes are forwarded).
//!
//! Same durability: both fsync before acknowledging a write (etcd's WAL;
//! Shoal's Raft log, a write-ahead log synced with `fdatasync` per
//! append), on a majority. Writes that arrive together share one entry on
//! both sides (etcd batches proposals; Shoal's leader groups them).
//! Figures: put, linearizable get, lock+unlock (etcd: `/v3/lock/lock` then
//! `/v3/lock/unlock` under a lease), each p50/p99; and puts/s with 64
//! concurrent clients (etcd: 64 HTTP clients over the 3 members; Shoal: 64
//! guests over the 3 nodes). The aim: Shoal ≤ etcd on each latency, shown
//! as a ratio. Prints figures; never fails on a slow machine.
//!
//! Run with `cargo bench -p shoal-tests --bench kv` (needs
//! `apt-get install etcd-server`; without it the etcd side says so).

#[allow(dead_code)]
#[path = "../tests/it/common/cluster.rs"]
mod cluster;
#[path = "common/etcd.rs"]
mod etcd;
#[allow(dead_code)]
#[path = "../tests/it/common/procs.rs"]
mod procs;

use cluster::TestCluster;
use shoal_runtime::Pid;
use std::time::Instant;

/// Sequential operations per latency figure.
const OPS: usize = 2_000;
/// Concurrent clients for the throughput figure.
const CLIENTS: usize = 64;
/// Puts each of them makes.
const PUTS_EACH: usize = 100;
/// The owner's write quota for this bench (far above what either side
/// reaches; printed).
const BENCH_WRITES_PER_S_MAX: u32 = 1_000_000;

/// (p50, p99) in µs of one `bench <op>` line a guest printed.
fn figures(out: &str, op: &str) -> (u64, u64) {
    let line = out
        .lines()
        .find(|l| l.starts_with(&format!("bench {op} ")))
        .unwrap_or_else(|| panic!("no {op} line in {out:?}"));
    let field = |key: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {line:?}"))
    };
    (field("p50_us"), field("p99_us"))
}

/// Run `locker bench` on node `i`; its output.
async fn guest_bench(c: &TestCluster, i: usize) -> String {
    let n = OPS.to_string();
    let p = procs::spawn(c, i, &["locker", "bench", &n]).await;
    let st = procs::exit_of(c, i, p).await;
    let out = procs::stdout(c, i, p);
    assert!(st.success(), "locker bench on node {i}: {st}: {out}");
    out
}

/// 64 guests over the three nodes, `PUTS_EACH` sets each, started
/// together: puts per second from the start signal to the last one's end.
async fn guest_throughput(c: &TestCluster) -> f64 {
    let n = PUTS_EACH.to_string();
    let mut guests: Vec<(usize, Pid)> = Vec::new();
    for k in 0..CLIENTS {
        let i = k % 3;
        guests.push((i, procs::spawn(c, i, &["locker", "puts", &n, "go"]).await));
    }
    let start = Instant::now();
    for (i, p) in &guests {
        c.node(*i)
            .node()
            .send(Pid(0), *p, b"go".to_vec())
            .expect("send go");
    }
    for (i, p) in &guests {
        let st = procs::exit_of(c, *i, *p).await;
        assert!(st.success(), "{}", procs::stdout(c, *i, *p));
    }
    (CLIENTS * PUTS_EACH) as f64 / start.elapsed().as_secs_f64()
}

/// Write back every dirty page on the machine (`sync`), so that neither
/// side's measurement pays for the other's writes.
fn settle_disk() {
    if let Err(e) = std::process::Command::new("sync").status() {
        println!("sync failed ({e}): figures may include the other side's write-back");
    }
}

fn ratio(shoal: u64, etcd: u64) -> String {
    if etcd == 0 {
        return "-".into();
    }
    format!("{:.2}", shoal as f64 / etcd as f64)
}

fn main() {
    println!("key-value and locks: Shoal against etcd, 3 members each on loopback");
    println!("durability: both fsync before acknowledging (etcd WAL; Shoal's write-ahead log, fdatasync per append), on a majority");
    println!("shoal's per-owner write quota lifted to {BENCH_WRITES_PER_S_MAX}/s (etcd has none)");
    // etcd first, alone on the machine.
    settle_disk();
    let etcd_figures = match etcd::EtcdCluster::start() {
        Ok(cluster) => {
            let config = etcd::MeasureConfig {
                sequential_ops: OPS,
                concurrent_clients: CLIENTS,
                ops_per_client: PUTS_EACH,
                ..Default::default()
            };
            match etcd::measure(&cluster, &config) {
                Ok(f) => {
                    println!("etcd {} ({} members)", f.etcd_version, f.members);
                    Some(f)
                }
                Err(e) => {
                    println!("etcd: the measurement failed: {e:#}");
                    None
                }
            }
        }
        Err(e) => {
            println!("etcd: not measured: {e:#}");
            None
        }
    };
    // etcd's preallocated WAL files leave dirty pages behind: written back
    // before Shoal is measured, not while (either side's fsync would wait
    // for them).
    settle_disk();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (leader_out, follower_out, puts_per_s) = rt.block_on(async {
        // etcd has no per-tenant write quota: lift Shoal's (5,000 writes/s
        // per owner by default) so the figure is the cluster's capacity.
        let c = TestCluster::start_with(3, |config| {
            config.kv_writes_per_s_max = BENCH_WRITES_PER_S_MAX;
        })
        .await;
        c.add_guest(0, shoal_tests::LOCKER, "locker").await;
        let leader = c.leader().unwrap_or(0);
        let follower = (leader + 1) % 3;
        // Warm the module cache on every node first.
        for i in 0..3 {
            let p = procs::spawn(&c, i, &["locker", "puts", "1"]).await;
            procs::exit_of(&c, i, p).await;
        }
        let leader_out = guest_bench(&c, leader).await;
        let follower_out = guest_bench(&c, follower).await;
        let puts_per_s = guest_throughput(&c).await;
        c.shutdown().await;
        (leader_out, follower_out, puts_per_s)
    });
    println!();
    println!(
        "{:<28} {:>10} {:>10} {:>12} {:>12} {:>8} {:>8}",
        "operation", "shoal p50", "shoal p99", "etcd p50", "etcd p99", "p50 x", "p99 x"
    );
    for (op, label) in [
        ("put", "put (on the leader)"),
        ("get", "linearizable get (leader)"),
        ("lock_unlock", "lock+unlock (leader)"),
    ] {
        let (p50, p99) = figures(&leader_out, op);
        let e = etcd_figures.as_ref().map(|f| match op {
            "put" => (f.put.p50_us, f.put.p99_us),
            "get" => (f.get.p50_us, f.get.p99_us),
            _ => (f.lock_unlock.p50_us, f.lock_unlock.p99_us),
        });
        let (e50, e99) = e.unwrap_or((0, 0));
        println!(
            "{label:<28} {p50:>8}µs {p99:>8}µs {e50:>10}µs {e99:>10}µs {:>8} {:>8}",
            ratio(p50, e50),
            ratio(p99, e99)
        );
    }
    for op in ["put", "get", "lock_unlock"] {
        let (p50, p99) = figures(&follower_out, op);
        println!(
            "{:<28} {p50:>8}µs {p99:>8}µs",
            format!("{op} (on a follower)")
        );
    }
    let etcd_puts = etcd_figures
        .as_ref()
        .map_or(0.0, |f| f.concurrent_put.ops_per_s);
    println!(
        "puts/s with {CLIENTS} clients: shoal {puts_per_s:.0}, etcd {etcd_puts:.0} (shoal/etcd {:.2}; aim ≥ 1)",
        if etcd_puts > 0.0 { puts_per_s / etcd_puts } else { 0.0 }
    );
    println!("aim: Shoal ≤ etcd on each latency (ratio ≤ 1.00)");
}
