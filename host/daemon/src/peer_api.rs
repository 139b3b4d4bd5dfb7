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
//! | `POST /v1/peer/ended` | pid (decimal) | [`PeerEnded`]: does this node run it, or hold its final log |
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
/// Does this node run a pid, or remember how it ended (its final log)?
pub const PATH_PEER_ENDED: &str = "/v1/peer/ended";
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
    /// Whose the processes are: the identity that deployed them, or the
    /// spawning guest's owner (the asking node vouches for it). `None`:
    /// the cluster's.
    #[serde(default)]
    pub owner: Option<shoal_pki::Owner>,
}

/// A started process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerSpawned {
    /// Its pid.
    pub pid: Pid,
    /// Its module.
    pub module: Sha256,
}

/// What a node knows of a pid ([`PATH_PEER_ENDED`]): whether it runs it,
/// and whether it ended here (not by moving away), so this node holds its
/// final log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerEnded {
    /// It runs here.
    pub live: bool,
    /// How it ended here, if it did (and is still remembered).
    pub ended: Option<crate::api::types::ExitReport>,
    /// When it ended here, Unix ms.
    pub ended_unix_ms: Option<u64>,
}

impl PeerEnded {
    /// What `node` knows of `pid`.
    pub fn of(node: &Node, pid: Pid) -> PeerEnded {
        let record = node.exit_record(pid);
        PeerEnded {
            live: node.module_of(pid).is_some(),
            ended_unix_ms: record.as_ref().map(|(_, at)| {
                at.duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0)
            }),
            ended: record
                .as_ref()
                .map(|(status, _)| crate::api::types::ExitReport::from(status)),
        }
    }

    /// It runs here or ended here: this node holds its whole log.
    pub fn holds_log(&self) -> bool {
        self.live || self.ended.is_some()
    }
}

/// Why a node refused a spawn: sent typed on the wire (the `detail` of the
/// 409 answer) so the asking node maps it to the guest's errno without
/// reading any text (a module's name could otherwise change the errno).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "refusal", rename_all = "snake_case")]
pub enum SpawnRefusal {
    /// The module could not be had: `errno` is the ABI code the fetch
    /// failed with (`NO_MODULE`, `NO_NODE`, …).
    #[error("module {module}: {}", shoal_runtime::abi::errno::name(*errno))]
    Module {
        /// The reference asked for.
        module: String,
        /// The ABI error code of the fetch.
        errno: i32,
    },
    /// The node runs as many processes as it may.
    #[error("this node runs at most {processes_max} processes")]
    Limit {
        /// Its process limit.
        processes_max: u32,
    },
    /// The node's memory budget cannot hold the process.
    #[error("this node's memory budget is full ({used_bytes} of {budget_bytes} bytes in use, {needed_bytes} needed)")]
    MemoryBudget {
        /// The process's memory.
        needed_bytes: u64,
        /// In use.
        used_bytes: u64,
        /// The budget.
        budget_bytes: u64,
    },
    /// The process could not be started (the module does not instantiate,
    /// a spec was refused, …).
    #[error("the process could not start: {why}")]
    Failed {
        /// What the node said.
        why: String,
    },
}

impl SpawnRefusal {
    /// The ABI error code a guest's `spawn_on` returns for this refusal.
    pub fn errno(&self) -> i32 {
        use shoal_runtime::abi::errno;
        match self {
            SpawnRefusal::Module { errno, .. } => *errno,
            SpawnRefusal::Limit { .. } | SpawnRefusal::MemoryBudget { .. } => errno::LIMIT,
            SpawnRefusal::Failed { .. } => errno::SPAWN_FAILED,
        }
    }
}

/// How long a spawn waits for a pid block (granted ahead of need).
const PID_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Resolve the module (fetching it from a peer if needed) and start one
/// process here, its owner noted (in `link`) before it runs.
pub async fn spawn_here(
    node: &Node,
    link: &crate::link::Link,
    req: &PeerSpawnRequest,
) -> Result<PeerSpawned, SpawnRefusal> {
    let hash = match node.resolve(&req.module) {
        // A hash resolves even when the blob is elsewhere: fetch it then.
        Ok(h) if node.registry().contains(&h) => h,
        _ => node
            .fetch_module(&req.module)
            .await
            .map_err(|errno| SpawnRefusal::Module {
                module: req.module.clone(),
                errno,
            })?,
    };
    let mut spec = SpawnSpec::new(hash, req.args.clone());
    spec.env = req.env.clone();
    spec.memory_bytes_max = req.memory_bytes_max;
    spec.preemptible = req.preemptible;
    let pid = node
        .pids()
        .allocate_wait(PID_WAIT)
        .await
        .ok_or_else(|| SpawnRefusal::Failed {
            why: "no pids left and the cluster granted no new block (is there a quorum?)".into(),
        })?;
    if let Some(owner) = &req.owner {
        link.owners.claim(pid, owner.clone());
    }
    match node.spawn_as(spec, pid).await {
        Ok(pid) => Ok(PeerSpawned { pid, module: hash }),
        Err(e) => {
            link.owners.unclaim(pid);
            match e {
                NodeError::ProcessLimit(n) => Err(SpawnRefusal::Limit { processes_max: n }),
                NodeError::MemoryBudget {
                    needed_bytes,
                    used_bytes,
                    budget_bytes,
                } => Err(SpawnRefusal::MemoryBudget {
                    needed_bytes,
                    used_bytes,
                    budget_bytes,
                }),
                e => Err(SpawnRefusal::Failed { why: e.to_string() }),
            }
        }
    }
}

/// Answer a `/v1/peer/*` request (not join, which [`super::join`] serves).
pub async fn handle(
    node: &Node,
    link: &crate::link::Link,
    path: &str,
    body: bytes::Bytes,
) -> Result<bytes::Bytes, RemoteError> {
    match path {
        PATH_PEER_SPAWN => {
            let req: PeerSpawnRequest = serde_json::from_slice(&body)
                .map_err(|e| RemoteError::new(400, format!("bad spawn request: {e}")))?;
            match spawn_here(node, link, &req).await {
                Ok(s) => encode_json(&s),
                Err(refusal) => Err(RemoteError::typed(409, &refusal)),
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
        PATH_PEER_ENDED => {
            let text = std::str::from_utf8(&body).unwrap_or("");
            let pid: Pid = text
                .trim()
                .parse()
                .map_err(|_| RemoteError::new(400, format!("bad pid {text:?}")))?;
            encode_json(&PeerEnded::of(node, pid))
        }
        other => Err(RemoteError::new(404, format!("no peer route {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::SpawnRefusal;
    use http_body_util::BodyExt;
    use shoal_runtime::abi::errno;

    /// A refusal crosses the wire typed: the errno the asking node derives
    /// comes from its kind, whatever text (a module's name, a node's
    /// message) it carries. Decoding the text instead made a module named
    /// `LIMIT` or `NO_MODULE` change the errno a guest saw.
    #[tokio::test]
    async fn a_refusal_keeps_its_errno_whatever_its_text_says() {
        let cases = [
            (
                SpawnRefusal::Failed {
                    why: "module NO_MODULE-LIMIT traps at start".into(),
                },
                errno::SPAWN_FAILED,
            ),
            (
                SpawnRefusal::Module {
                    module: "LIMIT".into(),
                    errno: errno::NO_MODULE,
                },
                errno::NO_MODULE,
            ),
            (SpawnRefusal::Limit { processes_max: 3 }, errno::LIMIT),
        ];
        for (refusal, want) in cases {
            let answer = shoal_net::error_reply(&shoal_net::RemoteError::typed(409, &refusal));
            assert_eq!(answer.status(), 409);
            let body = answer.into_body().collect().await.unwrap().to_bytes();
            let detail = shoal_net::error_detail(&body).expect("a typed detail");
            let back: SpawnRefusal = serde_json::from_value(detail).unwrap();
            assert_eq!(back, refusal);
            assert_eq!(back.errno(), want, "{refusal}");
            assert_eq!(shoal_net::error_message(&body), refusal.to_string());
        }
    }
}
