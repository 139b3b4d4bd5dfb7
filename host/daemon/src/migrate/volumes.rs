//! Private volumes on the move: the target fetches the chunks it lacks
//! from the source, by hash, and checks each against it.
//!
//! Twice: for the chunks the source offered at the pre-copy, while the
//! process still runs there ([`fetch_offered`]); and after the freeze for
//! those of the final trees still missing (chunks written since the
//! offer), before the target accepts the final state ([`fetch_final`]).
//! A chunk the target already holds — from an earlier stay of the same
//! process, or another process's identical content — never travels.

use super::Ctx;
use futures_util::stream::{self, StreamExt};
use shoal_cluster::NodeId;
use shoal_net::RemoteError;
use shoal_registry::Sha256;
use shoal_runtime::volume::{private_mount_for, tree, VolumeMount, VolumeTree, CHUNK_BYTES};
use std::sync::Arc;

/// Chunk requests in flight at once, per migration.
const FETCHES_IN_FLIGHT: usize = 8;

fn err(status: u16, msg: impl Into<String>) -> RemoteError {
    RemoteError::new(status, msg.into())
}

/// The address of the member `source`.
pub(super) fn source_addr(ctx: &Ctx, source: NodeId) -> Result<String, RemoteError> {
    ctx.raft
        .state()
        .member(source)
        .map(|n| n.addr.clone())
        .ok_or_else(|| err(409, format!("the source node {source} is not a member")))
}

/// Ask the node at `addr` for the blob `hash` from its registry (not yet
/// checked: the caller stores it only if it hashes right).
pub(super) async fn peer_blob(
    ctx: &Ctx,
    addr: &str,
    hash: &Sha256,
) -> Result<bytes::Bytes, shoal_net::NetError> {
    crate::link::volumes::peer_blob(&ctx.peers, addr, hash).await
}

/// Fetch `hashes` (each checked, each stored) from the node `source`.
/// Returns the bytes fetched.
async fn fetch(ctx: &Arc<Ctx>, source: NodeId, hashes: Vec<Sha256>) -> Result<u64, RemoteError> {
    if hashes.is_empty() {
        return Ok(0);
    }
    let addr = source_addr(ctx, source)?;
    let results: Vec<Result<u64, RemoteError>> = stream::iter(hashes)
        .map(|hash| {
            let addr = addr.clone();
            async move {
                let bytes = peer_blob(ctx, &addr, &hash)
                    .await
                    .map_err(|e| err(409, format!("cannot get volume chunk {hash}: {e}")))?;
                if bytes.len() as u64 > CHUNK_BYTES {
                    return Err(err(
                        409,
                        format!("the source sent {} bytes for a volume chunk", bytes.len()),
                    ));
                }
                let registry = ctx.node.registry().clone();
                let n = bytes.len() as u64;
                // Checked against its hash before it is kept.
                tokio::task::spawn_blocking(move || registry.put_many_unsynced(&[(hash, &bytes)]))
                    .await
                    .map_err(|e| err(500, format!("chunk writer failed: {e}")))?
                    .map_err(|e| err(409, format!("the source sent a bad volume chunk: {e}")))?;
                Ok(n)
            }
        })
        .buffer_unordered(FETCHES_IN_FLIGHT)
        .collect()
        .await;
    results.into_iter().sum()
}

/// Fetch the offered chunks this node lacks; returns the bytes fetched.
pub async fn fetch_offered(
    ctx: &Arc<Ctx>,
    source: NodeId,
    offered: &[String],
) -> Result<u64, RemoteError> {
    let registry = ctx.node.registry();
    let mut missing = std::collections::BTreeSet::new();
    for hex in offered {
        let h: Sha256 = hex
            .parse()
            .map_err(|_| err(400, format!("bad chunk hash {hex:?}")))?;
        if !registry.contains(&h) {
            missing.insert(h);
        }
    }
    fetch(ctx, source, missing.into_iter().collect()).await
}

/// Check the final trees against the volumes `mounts` grants (bounds
/// first: a hostile source cannot make this node fetch without limit),
/// then fetch what is missing. Afterwards every chunk is here, so the
/// start cannot fail for want of one. Returns the bytes fetched.
pub async fn fetch_final(
    ctx: &Arc<Ctx>,
    source: NodeId,
    trees: &[VolumeTree],
    mounts: &[VolumeMount],
) -> Result<u64, RemoteError> {
    for t in trees {
        tree::check(t, &private_mount_for(mounts, &t.guest))
            .map_err(|e| err(400, e.to_string()))?;
    }
    let missing = tree::missing_chunks(trees, ctx.node.registry());
    fetch(ctx, source, missing).await
}

/// Fetch the chunks of the shared-volume copies the final state's open
/// files carry (a process under output commit publishes nothing when it
/// moves), those this node lacks. Bounded first, as a restore checks them.
pub async fn fetch_copies(
    ctx: &Arc<Ctx>,
    source: NodeId,
    files: &[shoal_runtime::process::OpenFile],
) -> Result<u64, RemoteError> {
    let listed: usize = files
        .iter()
        .filter_map(|f| f.copy.as_ref())
        .map(|c| c.chunks.len())
        .sum();
    let max = shoal_runtime::volume::shared::COPY_CHUNKS_MAX;
    if listed > max {
        return Err(err(
            400,
            format!("open files carry {listed} shared-volume chunks (at most {max})"),
        ));
    }
    let registry = ctx.node.registry();
    let missing: std::collections::BTreeSet<Sha256> = files
        .iter()
        .filter_map(|f| f.copy.as_ref())
        .flat_map(|c| c.chunks.iter().copied())
        .filter(|h| !registry.contains(h))
        .collect();
    fetch(ctx, source, missing.into_iter().collect()).await
}

/// Rebuild the volumes of `pid` from the pre-copy's `trees` (as offered:
/// checked here against the quotas the cluster recorded for it), while
/// it still runs on the source. Its start then writes only what changed.
pub async fn stage(
    ctx: &Arc<Ctx>,
    pid: shoal_runtime::pid::Pid,
    trees: serde_json::Value,
) -> Result<(), RemoteError> {
    let trees: Vec<VolumeTree> =
        serde_json::from_value(trees).map_err(|e| err(400, format!("bad volume trees: {e}")))?;
    let grants = crate::records::grants::recorded(&ctx.raft, &ctx.node, pid)?;
    // In capture order, which is the order of the process's volumes.
    let mounts: Vec<VolumeMount> = trees
        .iter()
        .map(|t| private_mount_for(&grants.volumes, &t.guest))
        .collect();
    let node = ctx.node.clone();
    tokio::task::spawn_blocking(move || node.stage_volumes(pid, &mounts, &trees))
        .await
        .map_err(|e| err(500, format!("volume builder failed: {e}")))?
        .map_err(|e| err(409, format!("cannot rebuild the volumes of {pid}: {e}")))
}
