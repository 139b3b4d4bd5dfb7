//! What one Raft write costs as the replicated state grows.
//!
//! A one-node cluster (its own redb store in a temp dir; a write is one
//! fsynced log append, then the apply) holds N live processes in its
//! directory, N = 1,000 → 100,000; at each size it times single-pid
//! `Register`/`Unregister` writes, and beside them what the state machine
//! used to do after every applied batch — encode the whole state as JSON,
//! write it to redb and clone it for readers — measured on the same state
//! in the same run. The aim of #12 item 12: a write costs what it changes,
//! so its latency stays flat while the state grows a hundredfold.
//!
//! At each size it also encodes the whole state the way a snapshot is
//! written now (CBOR, streamed into a file) beside the JSON buffer earlier
//! builds made, and prints both sizes and times.
//!
//! Run with `cargo bench -p shoal-cluster --bench apply`. Prints figures;
//! never fails on a slow machine.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_cluster::{
    ClusterState, Command, CommandResult, MemberInfo, Raft, RaftConfig, RaftTransport, RpcKind,
    TransportError, PIDS_PER_COMMAND_MAX, PID_BLOCK_SIZE,
};

/// A one-node cluster sends nothing; any RPC is a bug.
struct Alone;

#[async_trait::async_trait]
impl RaftTransport for Alone {
    async fn rpc(
        &self,
        target: u64,
        _addr: &str,
        _kind: RpcKind,
        _body: Vec<u8>,
    ) -> Result<Vec<u8>, TransportError> {
        Err(TransportError::Unreachable {
            target,
            reason: "a one-node bench cluster".into(),
        })
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p) as usize]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

async fn write(raft: &Raft, cmd: Command) -> CommandResult {
    let result = raft.write(cmd).await.expect("write");
    assert!(
        !matches!(result, CommandResult::Refused(_)),
        "refused: {result:?}"
    );
    result
}

/// Grow the directory to `target` live pids, handing out blocks as needed.
async fn grow(raft: &Raft, blocks: &mut Vec<u64>, live: &mut u64, target: u64) {
    while *live < target {
        let block_index = *live / PID_BLOCK_SIZE;
        while blocks.len() as u64 <= block_index {
            match write(raft, Command::AllocPidBlock { node: 1 }).await {
                CommandResult::PidBlock(first) => blocks.push(first),
                other => panic!("AllocPidBlock: {other:?}"),
            }
        }
        let in_block = *live % PID_BLOCK_SIZE;
        let count = (target - *live)
            .min(PIDS_PER_COMMAND_MAX as u64)
            .min(PID_BLOCK_SIZE - in_block);
        let first = blocks[block_index as usize] + in_block;
        let pids: Vec<u64> = (first..first + count).collect();
        write(raft, Command::Register { node: 1, pids }).await;
        *live += count;
    }
}

/// What the state machine used to do after each applied batch, timed on
/// `state`: encode it whole, write it to redb (not fsynced, as it was),
/// and deep-copy the directory for readers.
fn whole_state_rewrite(state: &ClusterState, db: &redb::Database) -> Duration {
    const TABLE: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("bench");
    let t = Instant::now();
    let bytes = serde_json::to_vec(state).expect("encode");
    let mut txn = db.begin_write().expect("txn");
    txn.set_durability(redb::Durability::None)
        .expect("durability");
    txn.open_table(TABLE)
        .expect("table")
        .insert("state_machine", bytes.as_slice())
        .expect("insert");
    txn.commit().expect("commit");
    let copy: BTreeMap<u64, shoal_cluster::DirEntry> =
        state.directory.iter().map(|(pid, e)| (*pid, *e)).collect();
    let took = t.elapsed();
    assert_eq!(copy.len(), state.directory.len());
    took
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Encode `state` as earlier builds did (one JSON buffer) and as a
/// snapshot is written now (CBOR streamed into a file, fsynced): the
/// process count, each size and each time.
fn snapshot_figures(
    state: &ClusterState,
    dir: &std::path::Path,
) -> (usize, u64, Duration, u64, Duration) {
    use std::io::Write;
    let t = Instant::now();
    let json = serde_json::to_vec(state).expect("json");
    let json_t = t.elapsed();
    let path = dir.join("bench-snapshot.bin");
    let t = Instant::now();
    let file = std::fs::File::create(&path).expect("file");
    let mut out = std::io::BufWriter::new(file);
    ciborium::into_writer(state, &mut out).expect("cbor");
    out.flush().expect("flush");
    let file = out.into_inner().expect("into_inner");
    file.sync_all().expect("fsync");
    let cbor_t = t.elapsed();
    let cbor_bytes = file.metadata().expect("metadata").len();
    (
        state.directory.len(),
        json.len() as u64,
        json_t,
        cbor_bytes,
        cbor_t,
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let me = MemberInfo {
        name: "n1".into(),
        addr: "bench:1".into(),
    };
    let raft = Raft::open(
        1,
        me,
        &dir.path().join("raft"),
        Arc::new(Alone),
        RaftConfig::default(),
    )
    .await
    .expect("open");
    raft.bootstrap(BTreeMap::new(), String::new(), 1)
        .await
        .expect("bootstrap");
    let old_db = redb::Database::create(dir.path().join("old.redb")).expect("old db");

    println!("one Raft write (fsynced log append + apply) against the live processes in the state");
    println!(
        "{:>9}  {:>10} {:>10}   {:>22}   {:>6}",
        "processes", "write p50", "write p99", "old per-batch rewrite", "old/new"
    );
    let (mut blocks, mut live) = (Vec::new(), 0u64);
    let mut p50_first = None;
    let mut snapshots = Vec::new();
    const WRITES: usize = 400;
    for size in [1_000u64, 10_000, 100_000] {
        grow(&raft, &mut blocks, &mut live, size).await;
        // One extra pid, registered and unregistered: each write changes
        // one row; the state stays at `size`.
        let spare = blocks[0] + PID_BLOCK_SIZE - 1;
        let mut lat = Vec::with_capacity(WRITES);
        for i in 0..WRITES {
            let cmd = if i % 2 == 0 {
                Command::Register {
                    node: 1,
                    pids: vec![spare],
                }
            } else {
                Command::Unregister {
                    node: 1,
                    pids: vec![spare],
                }
            };
            let t = Instant::now();
            write(&raft, cmd).await;
            lat.push(t.elapsed());
        }
        lat.sort();
        let state = raft.state();
        let mut old: Vec<Duration> = (0..20)
            .map(|_| whole_state_rewrite(&state, &old_db))
            .collect();
        old.sort();
        let (p50, p99, old50) = (
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
            percentile(&old, 0.5),
        );
        snapshots.push(snapshot_figures(&state, dir.path()));
        let first = *p50_first.get_or_insert(p50);
        println!(
            "{:>9}  {:>8.0}us {:>8.0}us   {:>18.0}us   {:>5.1}x   (p50 vs 1,000 processes: {:.2}x)",
            state.directory.len(),
            us(p50),
            us(p99),
            us(old50),
            (us(p50) + us(old50)) / us(p50),
            us(p50) / us(first),
        );
    }
    println!(
        "old/new: the write as it was (this write plus the whole-state rewrite) over the write now"
    );
    println!();
    println!(
        "a snapshot of the whole state: JSON in memory (before) vs CBOR streamed to a file (now)"
    );
    println!(
        "{:>9}  {:>10} {:>9}   {:>10} {:>9}   {:>5}",
        "processes", "JSON", "time", "CBOR file", "time", "size"
    );
    for (n, json_bytes, json_t, cbor_bytes, cbor_t) in snapshots {
        println!(
            "{n:>9}  {:>7.2}MiB {:>7.1}ms   {:>7.2}MiB {:>7.1}ms   {:>4.2}x",
            mib(json_bytes),
            ms(json_t),
            mib(cbor_bytes),
            ms(cbor_t),
            cbor_bytes as f64 / json_bytes.max(1) as f64
        );
    }
    raft.shutdown().await.expect("shutdown");
}
