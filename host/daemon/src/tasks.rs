//! The daemon's background work: each task is a bounded loop that ends
//! with the daemon.
//!
//! - **heartbeat**: every interval, this node's load (free memory, CPU load,
//!   process count) goes into the replicated node table; the scheduler reads
//!   it. Whether a node is down is not judged from these: the Raft
//!   leader's failure detector decides ([`shoal_cluster::detector`]).
//! - **pid blocks**: keep one spare block of pids granted ahead of need.
//! - **directory**: write batched process starts/exits.
//! - **revocations**: every applied change to the replicated revocation list
//!   is copied into the list the TLS verifiers read, so a removed node's or
//!   revoked client's next handshake fails and the connections it holds are
//!   closed (and into `<data>/pki/revocations.json`, for `cert create`).
//! - **peer pins**: the peer pool expects at each member's address the
//!   member the cluster records there, and talks to no other node there.
//! - **dropped children**: kill a recorded child that runs here though
//!   its parent's node recorded its start as failed
//!   ([`crate::records::spawns::kill_dropped`]).
//! - **modules ahead**: fetch and prepare every recorded module in the
//!   background ([`crate::modules_ahead`]).
//! - **renewal**: from 2/3 of its lifetime on, the node sends its
//!   certificate and a CSR for its key to the CA node ([`crate::certs`]:
//!   refused once the node is removed or its certificate revoked) and
//!   presents the new certificate from the next handshake on (saved to disk
//!   too, so a restart keeps it).

use super::Inner;
use shoal_cluster::{Command, CommandResult, NodeId, NodeLoad, PID_BLOCK_SIZE};
use shoal_pki::SharedRevocations;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// Pause after a failed Raft write before trying again (doubling to the max).
const RETRY_INITIAL: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// How long starts/exits gather before one directory write.
const DIRECTORY_BATCH: Duration = Duration::from_millis(5);

/// Start every task.
pub fn start(inner: Arc<Inner>, revocations: SharedRevocations) -> Vec<JoinHandle<()>> {
    vec![
        tokio::spawn(heartbeat(inner.clone())),
        tokio::spawn(pid_blocks(inner.clone())),
        tokio::spawn(directory(inner.clone())),
        tokio::spawn(sync_revocations(inner.clone(), revocations)),
        tokio::spawn(pin_peers(inner.clone())),
        tokio::spawn(crate::migrate::fence::run(inner.migration.clone())),
        tokio::spawn(crate::migrate::rebalance::run(inner.migration.clone())),
        tokio::spawn(crate::node_down::follow(
            inner.node.clone(),
            inner.raft.clone(),
        )),
        tokio::spawn(crate::lock_expiry::run(inner.clone())),
        tokio::spawn(crate::records::spawns::kill_dropped(
            inner.node.clone(),
            inner.raft.clone(),
            inner.link.started.clone(),
            inner.me,
        )),
        tokio::spawn(crate::checkpoints::run(inner.clone())),
        tokio::spawn(crate::failover::run(inner.clone())),
        tokio::spawn(crate::lease::run(inner.clone())),
        tokio::spawn(crate::modules_ahead::run(inner.clone())),
        tokio::spawn(renew_certificate(inner)),
    ]
}

/// This machine's load as the scheduler wants it.
pub fn local_load(inner: &Inner) -> NodeLoad {
    let (total, available) = meminfo().unwrap_or((0, 0));
    let cores = std::thread::available_parallelism()
        .map(|n| n.get() as f64)
        .unwrap_or(1.0);
    let load1 = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    NodeLoad {
        memory_bytes_free: available,
        memory_bytes_total: total,
        cpu_load_milli: ((load1 / cores) * 1000.0).clamp(0.0, u32::MAX as f64) as u32,
        process_count: inner.node.processes().len() as u32,
    }
}

/// (MemTotal, MemAvailable) in bytes.
fn meminfo() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    };
    Some((field("MemTotal:")?, field("MemAvailable:")?))
}

async fn heartbeat(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(inner.heartbeat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let cmd = Command::Heartbeat {
            id: inner.me,
            load: local_load(&inner),
            now_ms: shoal_pki::now_unix_ms(),
        };
        // A failed heartbeat (no quorum) is simply retried next tick.
        let _ = inner.raft.write(cmd).await;
    }
}

/// Why the cluster granted no pid block.
#[derive(Debug, thiserror::Error)]
pub enum PidBlockError {
    /// The Raft write failed (no quorum, no leader, timed out).
    #[error(transparent)]
    Write(#[from] shoal_cluster::ClusterError),
    /// The state machine answered something other than a block.
    #[error("the cluster answered a pid block request with something else")]
    Unexpected,
}

/// Why this node's certificate could not be renewed.
#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    /// Reading the key, making the CSR or saving the new identity failed.
    #[error(transparent)]
    Pki(#[from] shoal_pki::PkiError),
    /// The CA (this node) refused to sign.
    #[error("the CA refused to sign ({}): {}", .0.status, .0.message)]
    Refused(shoal_net::RemoteError),
    /// The cluster state names no CA node.
    #[error("the cluster has no CA node")]
    NoCa,
    /// The CA node is not (any more) a member.
    #[error("the CA node (id {0}) is not a member")]
    CaNotMember(NodeId),
    /// The CA node could not be asked.
    #[error("the CA node ({addr})")]
    Unreachable {
        /// Its address.
        addr: String,
        /// Why.
        source: shoal_net::NetError,
    },
    /// The request or the CA node's answer could not be (de)coded.
    #[error("the renewal request or answer is malformed")]
    Codec(#[from] serde_json::Error),
}

/// Ask the cluster for one pid block and grant it to the node.
pub async fn grant_pid_block(inner: &Inner) -> Result<(), PidBlockError> {
    match inner
        .raft
        .write(Command::AllocPidBlock { node: inner.me })
        .await
    {
        Ok(CommandResult::PidBlock(first)) => {
            inner.node.pids().add_block(first, PID_BLOCK_SIZE);
            Ok(())
        }
        Ok(_) => Err(PidBlockError::Unexpected),
        Err(e) => Err(e.into()),
    }
}

async fn pid_blocks(inner: Arc<Inner>) {
    let mut wait = RETRY_INITIAL;
    loop {
        inner.node.pids().block_wanted().await;
        match grant_pid_block(&inner).await {
            Ok(()) => wait = RETRY_INITIAL,
            Err(e) => {
                tracing::warn!("cannot get a pid block: {e}");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(RETRY_MAX);
            }
        }
    }
}

async fn directory(inner: Arc<Inner>) {
    loop {
        inner.link.directory_changed().await;
        tokio::time::sleep(DIRECTORY_BATCH).await;
        inner.link.flush_directory().await;
    }
}

async fn sync_revocations(inner: Arc<Inner>, revocations: SharedRevocations) {
    let mut applied = inner.raft.subscribe();
    // Most applied entries are heartbeats: copy the list into the one the
    // handshakes read (a write lock) only when it changed.
    // Compared by the list's change count (O(1)), not entry by entry.
    let mut copied: Option<u64> = None;
    loop {
        let state = inner.raft.state();
        if copied != Some(state.revocations.version()) {
            revocations.replace(state.revocations.clone());
            copied = Some(state.revocations.version());
            // For `shoal cert create` on this data dir: the generations.
            if let Err(e) =
                crate::credentials::save_revocations(&inner.data_dir, &state.revocations)
            {
                tracing::warn!("cannot save the revocation list: {e}");
            }
        }
        if applied.changed().await.is_err() {
            return;
        }
    }
}

/// Keep the peer pool pinned to the cluster's records: the node at each
/// member's address must present that member's certificate
/// ([`shoal_net::Peers::pin`]), so a node that takes over another's address
/// receives nothing meant for it. Removed nodes are not pinned.
async fn pin_peers(inner: Arc<Inner>) {
    let mut applied = inner.raft.subscribe();
    let mut pinned: Option<HashMap<String, String>> = None;
    loop {
        let pins: HashMap<String, String> = {
            let state = inner.raft.state();
            state
                .nodes
                .values()
                .filter(|n| n.status != shoal_cluster::NodeStatus::Removed)
                .map(|n| (n.addr.clone(), n.name.clone()))
                .collect()
        };
        if pinned.as_ref() != Some(&pins) {
            inner.peers.pin(pins.clone());
            pinned = Some(pins);
        }
        if applied.changed().await.is_err() {
            return;
        }
    }
}

async fn renew_certificate(inner: Arc<Inner>) {
    loop {
        tokio::time::sleep(inner.renew_check_interval).await;
        let info = inner.identity.info();
        // Certificates are back-dated by the clock-skew allowance; count
        // the lifetime from when it was issued.
        let skew_ms = shoal_pki::ca::CLOCK_SKEW_ALLOWANCE.as_millis() as u64;
        let issued = info.not_before_unix_ms.saturating_add(skew_ms);
        let life = info.not_after_unix_ms.saturating_sub(issued);
        let due = issued.saturating_add(life / 3 * 2);
        if shoal_pki::now_unix_ms() < due {
            continue;
        }
        match renew_once(&inner).await {
            Ok(new) => tracing::info!(
                "renewed this node's certificate (serial {}, valid until {} ms)",
                new.serial.as_hex(),
                new.not_after_unix_ms
            ),
            Err(e) => tracing::warn!("certificate renewal failed (will retry): {e}"),
        }
    }
}

/// Get a fresh certificate for this node's key from the CA node.
pub async fn renew_once(inner: &Inner) -> Result<shoal_pki::CertInfo, RenewError> {
    use shoal_pki::{files, Identity, IssuedCert, PkiPaths};
    let paths = PkiPaths::new(&inner.data_dir);
    let key_pem = files::read_private_key(&paths.node_key())?;
    let ca_pem = files::read_certificate(&paths.ca_cert())?;
    let cert_pem = files::read_certificate(&paths.node_cert())?;
    let csr = shoal_pki::ca::csr_for_key_pem(&key_pem, &inner.name)?;
    let request = super::join::RenewBody {
        csr_pem: csr,
        cert_pem,
    };
    let state = inner.raft.state();
    let issued: IssuedCert = match (&inner.ca, state.ca_node) {
        (Some(_), Some(id)) if id == inner.me => {
            crate::certs::renew_here(inner, &request).map_err(RenewError::Refused)?
        }
        (_, Some(id)) => {
            let addr = state
                .member(id)
                .map(|n| n.addr.clone())
                .ok_or(RenewError::CaNotMember(id))?;
            let body = serde_json::to_vec(&request)?;
            let answer = inner
                .peers
                .call(
                    &addr,
                    super::join::PATH_PEER_RENEW,
                    bytes::Bytes::from(body),
                )
                .await
                .map_err(|source| RenewError::Unreachable {
                    addr: addr.clone(),
                    source,
                })?;
            serde_json::from_slice(&answer)?
        }
        (_, None) => return Err(RenewError::NoCa),
    };
    let identity = Identity::from_pem(&issued.cert_pem, &key_pem, &ca_pem)?;
    Identity::save_pem(&inner.data_dir, &issued.cert_pem, &key_pem, &ca_pem)?;
    inner.identity.replace(&identity)?;
    Ok(identity.info().clone())
}
