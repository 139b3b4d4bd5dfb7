//! Node-to-node requests (callers must hold a `node` certificate): remote
//! spawn, blob fetch, and the per-node halves of cluster-wide `ps` and
//! `kill`.
//!
//! | path | body | answer |
//! | --- | --- | --- |
//! | `POST /v1/peer/spawn` | [`PeerSpawnRequest`] | [`PeerSpawned`] |
//! | `POST /v1/peer/blob` | sha256 hex | the blob's bytes |
//! | `POST /v1/peer/processes` | — | this node's `ProcessSummary` list |
//! | `POST /v1/peer/kill` | pid (decimal) | `ExitReport` |
//! | `POST /v1/peer/join` | a forwarded join (see [`super::join`]) | `JoinAnswer` |

use super::encode_json;
use crate::api::handlers;
use serde::{Deserialize, Serialize};
use shoal_net::RemoteError;
use shoal_registry::Sha256;
use shoal_runtime::node::{Node, NodeError, SpawnSpec};
use shoal_runtime::pid::Pid;

/// Remote spawn.
pub const PATH_PEER_SPAWN: &str = "/v1/peer/spawn";
/// Fetch a module blob by hash.
pub const PATH_PEER_BLOB: &str = "/v1/peer/blob";
/// This node's processes.
pub const PATH_PEER_PROCESSES: &str = "/v1/peer/processes";
/// Kill a process on this node.
pub const PATH_PEER_KILL: &str = "/v1/peer/kill";
/// A join forwarded to the node holding the CA.
pub const PATH_PEER_JOIN: &str = "/v1/peer/join";

/// Most processes one remote spawn may start.
pub const PEER_SPAWN_COUNT_MAX: u32 = 10_000;

/// Start processes on the receiving node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerSpawnRequest {
    /// Module reference: `sha256:…` or a cluster-wide name.
    pub module: String,
    /// Full argv (argv[0] included).
    pub args: Vec<String>,
    /// Environment.
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Memory cap per process, bytes.
    #[serde(default)]
    pub memory_bytes_max: Option<u64>,
    /// Run the preemptible variant of the module (see `SpawnSpec::preemptible`).
    #[serde(default)]
    pub preemptible: bool,
}

/// A started process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerSpawned {
    /// Its pid.
    pub pid: Pid,
    /// Its module.
    pub module: Sha256,
}

/// Resolve the module (fetching it from a peer if needed) and start one
/// process here. Errors are text naming the ABI code where there is one.
pub async fn spawn_here(node: &Node, req: &PeerSpawnRequest) -> Result<PeerSpawned, String> {
    let hash = match node.resolve(&req.module) {
        // A hash resolves even when the blob is elsewhere: fetch it then.
        Ok(h) if node.registry().contains(&h) => h,
        _ => node.fetch_module(&req.module).await.map_err(|code| {
            format!("{} ({})", req.module, shoal_runtime::abi::errno::name(code))
        })?,
    };
    let mut spec = SpawnSpec::new(hash, req.args.clone());
    spec.env = req.env.clone();
    spec.memory_bytes_max = req.memory_bytes_max;
    spec.preemptible = req.preemptible;
    match node.spawn(spec).await {
        Ok(pid) => Ok(PeerSpawned { pid, module: hash }),
        Err(NodeError::ProcessLimit(n)) => {
            Err(format!("LIMIT: this node runs at most {n} processes"))
        }
        Err(e) => Err(format!("SPAWN_FAILED: {e}")),
    }
}

/// Answer a `/v1/peer/*` request (not join, which [`super::join`] serves).
pub async fn handle(
    node: &Node,
    path: &str,
    body: bytes::Bytes,
) -> Result<bytes::Bytes, RemoteError> {
    match path {
        PATH_PEER_SPAWN => {
            let req: PeerSpawnRequest = serde_json::from_slice(&body)
                .map_err(|e| RemoteError::new(400, format!("bad spawn request: {e}")))?;
            match spawn_here(node, &req).await {
                Ok(s) => encode_json(&s),
                Err(e) => Err(RemoteError::new(409, e)),
            }
        }
        PATH_PEER_BLOB => {
            let text = std::str::from_utf8(&body).unwrap_or("");
            let hash: Sha256 = text
                .trim()
                .parse()
                .map_err(|_| RemoteError::new(400, format!("bad blob hash {text:?}")))?;
            let registry = node.registry().clone();
            let bytes = tokio::task::spawn_blocking(move || registry.get(&hash))
                .await
                .map_err(|e| RemoteError::new(500, format!("blob reader failed: {e}")))?
                .map_err(|e| RemoteError::new(404, format!("{e}")))?;
            Ok(bytes::Bytes::from(bytes))
        }
        PATH_PEER_PROCESSES => encode_json(&handlers::processes(node).await?),
        PATH_PEER_KILL => {
            let text = std::str::from_utf8(&body).unwrap_or("");
            let pid: Pid = text
                .trim()
                .parse()
                .map_err(|_| RemoteError::new(400, format!("bad pid {text:?}")))?;
            encode_json(&handlers::kill(node, pid).await?)
        }
        other => Err(RemoteError::new(404, format!("no peer route {other}"))),
    }
}
