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
//! | `POST /v1/peer/checkpoint-pull` | [`crate::link::checkpoints::CheckpointPull`] | empty, once the copy is complete |
//! | `POST /v1/peer/join` | a forwarded join (see [`super::join`]) | `JoinAnswer` |

use super::encode_json;
use crate::api::handlers;
use serde::{Deserialize, Serialize};
use shoal_net::RemoteError;
use shoal_registry::Sha256;
use shoal_runtime::node::Node;
use shoal_runtime::pid::Pid;

pub use crate::link::paths::{
    PATH_PEER_BLOB, PATH_PEER_CHECKPOINT_PULL, PATH_PEER_ENDED, PATH_PEER_JOIN, PATH_PEER_KILL,
    PATH_PEER_PROCESSES, PATH_PEER_SPAWN, PATH_PEER_VOLUME_PULL,
};

pub use crate::link::spawn::{
    spawn_here, PeerSpawnRequest, PeerSpawned, SpawnRefusal, PEER_SPAWN_COUNT_MAX,
};

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
        PATH_PEER_VOLUME_PULL => {
            let req: crate::link::volumes::PullRequest = serde_json::from_slice(&body)
                .map_err(|e| RemoteError::new(400, format!("bad pull request: {e}")))?;
            link.pull_chunks(&req)
                .await
                .map_err(|e| RemoteError::new(409, e.to_string()))?;
            Ok(bytes::Bytes::new())
        }
        PATH_PEER_CHECKPOINT_PULL => {
            let req: crate::link::checkpoints::CheckpointPull = serde_json::from_slice(&body)
                .map_err(|e| RemoteError::new(400, format!("bad checkpoint pull: {e}")))?;
            link.pull_checkpoint(&req)
                .await
                .map_err(|e| RemoteError::new(409, e.to_string()))?;
            Ok(bytes::Bytes::new())
        }
        PATH_PEER_PROCESSES => encode_json(&handlers::processes(node).await?),
        PATH_PEER_KILL => {
            let text = std::str::from_utf8(&body).unwrap_or("");
            let pid: Pid = text
                .trim()
                .parse()
                .map_err(|_| RemoteError::new(400, format!("bad pid {text:?}")))?;
            if link.cancel_restart(pid) {
                return encode_json(&crate::cluster_api::killed_while_waiting(pid));
            }
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
