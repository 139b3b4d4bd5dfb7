//! The control API of a cluster node: the single-node routes of
//! [`crate::api`], made cluster-wide where that is what a user means, plus
//! the cluster's own verbs.
//!
//! | method | path | role | answer |
//! | --- | --- | --- | --- |
//! | GET | `/v1/nodes` | any | list of [`NodeSummary`] |
//! | DELETE | `/v1/nodes/{name}` | admin | the removed [`NodeSummary`] (its certificates are revoked) |
//! | POST | `/v1/nodes/{name}/cordon`, `/uncordon` | admin | [`NodeSummary`] |
//! | POST, GET, DELETE | `/v1/nodes/{name}/drain` | admin | start, read, cancel a drain: [`crate::migrate::drain::DrainStatus`] |
//! | POST | `/v1/tokens` | admin | [`TokenCreated`] |
//! | POST | `/v1/ca/takeover` | admin | `shoal_api::cluster::CaTakeover`: this node, holding the restored CA key, is the CA node ([`crate::certs`]) |
//! | POST | `/v1/certs/revoke` | admin | `shoal_api::cluster::Revoked`: every certificate of the identity revoked, cluster-wide ([`crate::certs`]) |
//! | POST | `/v1/cluster/members` | node (itself) | `{}`: made a voter by joint consensus |
//! | POST | `/v1/node/stop` | admin | `{stopping, already, processes}`: this node drains (or, `kill`, kills) its processes and exits ([`crate::stop`]) |
//! | GET | `/v1/events` | any | failover events (`resumed`, `lost`, `restarted`): a client's own processes' only |
//! | GET | `/v1/processes` | any | every node's processes, each with its node |
//! | POST | `/v1/processes` | any | placed by the scheduler (`node`, `labels`) |
//! | DELETE | `/v1/processes/{pid}` | any | forwarded to the pid's node |
//! | GET | `/v1/processes/{pid}/logs` | any | streamed from the node that runs it or that it ended on, followed across moves ([`crate::logs`]) |
//! | POST | `/v1/modules`, PUT `/v1/names/{n}` | any | stored here, recorded in the module index and name registry |
//! | POST | `/v1/snapshots/{id}/restore` | any | restored here with what the caller grants (admin: any directory but the data dir; client and node: the `--grantable-dir` ones), recorded in Raft with the caller's identity ([`crate::records::grants`]) |
//! | POST | `/v1/processes` (again) | any | the env and memory cap it grants are recorded in Raft with the caller's identity |
//! | GET, PUT, DELETE | `/v1/kv/{bucket}/{key}` | any | an entry of the caller's bucket (`owner=ROLE:ID`: another owner's, admin only); reads linearizable unless `stale=true`; writes are `Command::KvByCaller` on behalf of the caller ([`shoal_api::kv`]) |
//! | GET | `/v1/kv/{bucket}` | any | a page of its keys (`prefix`, `after`, `limit`) |
//! | GET | `/v1/locks` | any | the locks held or waited for: a client's own, an admin's all, each with its holder's node |
//!
//! Everything else is [`crate::api::routes`] on this node.
//!
//! **Ownership** ([`crate::records::owners`], rule in `shoal_pki::owner`): every
//! route about a process (`/v1/processes/{pid}/...`: kill, logs, snapshot,
//! migrate), about a snapshot (`/v1/snapshots/{id}`, its restore, and a
//! restore with `replace` over a live process) and every module-name write
//! (`POST /v1/modules?name=`, `PUT /v1/names/{n}`) acts only if the caller
//! may act on the resource's owner: a client on its own, an admin on all.
//! `GET /v1/processes` lists a client's own processes only. What the caller
//! creates (deploys, restores, names, snapshots) is recorded as its own.
//! Refusals are typed 403s (`shoal_pki::Forbidden` as the error's
//! `detail`). A node acting as itself owns nothing of a client's; it may
//! only move processes (the rebalancer and drains use the migrate route),
//! and relays a caller's identity for a process on another node.

use super::link::{Link, SpawnAtError};
use super::peer_api::{PeerSpawnRequest, PATH_PEER_KILL, PATH_PEER_PROCESSES};
use super::{encode_json, from_net, Inner};
use crate::api::routes::{self, ApiBody};
use crate::api::types::{
    ExitReport, ModuleAdded, NameRequest, NodeReach, NodeReachState, ProcessState, ProcessSummary,
    RestoreRequest, SpawnRequest, Spawned,
};
use crate::api::{handlers, JSON_BYTES_MAX, MODULE_BYTES_MAX};
use crate::records::{refused, set_cordon, write_err};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use serde::Serialize;
pub use shoal_api::cluster::{
    MemberRequest, MigrateRequest, NodeSummary, TokenCreated, TokenRequest,
};
use shoal_cluster::sched::Target;
use shoal_cluster::{Command, MemberInfo, NodeId, NodeStatus};
use shoal_net::{self, Caller, NetError, Peers, RemoteError};
use shoal_pki::{Owner, Role};
use shoal_runtime::pid::Pid;
use std::sync::Arc;
use std::time::Duration;

/// A joined node asks to become a voter.
pub const PATH_MEMBERS: &str = "/v1/cluster/members";
/// Longest a token may live.
pub const TOKEN_TTL_MAX: Duration = Duration::from_secs(7 * 24 * 3600);

fn json_reply<T: Serialize>(v: &T) -> Result<Response<ApiBody>, RemoteError> {
    let mut r = shoal_net::reply(200, encode_json(v)?);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

async fn read_json<T: serde::de::DeserializeOwned>(
    req: Request<Incoming>,
) -> Result<T, RemoteError> {
    let body = shoal_net::read_body(req, JSON_BYTES_MAX as usize).await?;
    let body = if body.is_empty() {
        Bytes::from_static(b"{}")
    } else {
        body
    };
    serde_json::from_slice(&body).map_err(|e| RemoteError::new(400, format!("bad JSON body: {e}")))
}

/// The node list, as this node knows it: health is the failure
/// detector's verdict in Raft ([`shoal_cluster::detector`]); `leader` only
/// marks a leader this node heard from recently; this node's own row
/// carries its Raft view (term, role, last contact with the leader).
pub fn nodes(inner: &Inner) -> Vec<NodeSummary> {
    let state = inner.raft.state();
    let now = shoal_pki::now_unix_ms();
    let view = inner.raft.view();
    let current_leader = view.leader.filter(|_| view.leader_current);
    state
        .nodes
        .values()
        .map(|n| NodeSummary {
            id: n.id,
            name: n.name.clone(),
            addr: n.addr.clone(),
            status: match n.status {
                NodeStatus::Active => "active",
                NodeStatus::Cordoned => "cordoned",
                NodeStatus::Removed => "removed",
            }
            .into(),
            healthy: super::link::is_up(&state, n.id),
            heartbeat_age_ms: now.saturating_sub(n.last_heartbeat_ms),
            leader: current_leader == Some(n.id),
            dead: state.liveness.get(&n.id).filter(|l| l.dead).map(|l| {
                shoal_api::cluster::DeadVerdict {
                    epoch: l.epoch,
                    since_unix_ms: l.since_unix_ms,
                    silent_ms: l.silent_ms,
                    by: l.by,
                }
            }),
            liveness_epoch: state.liveness_epoch(n.id),
            raft: (n.id == inner.me).then(|| view.clone()),
            ca: state.ca_node == Some(n.id),
            labels: n.labels.clone(),
            load: n.load.clone(),
        })
        .collect()
}

fn node_named(inner: &Inner, name: &str) -> Result<NodeId, RemoteError> {
    inner
        .raft
        .state()
        .member_by_name(name)
        .map(|n| n.id)
        .ok_or_else(|| RemoteError::new(404, format!("no node named `{name}` in the cluster")))
}

fn summary_of(inner: &Inner, id: NodeId) -> Result<Response<ApiBody>, RemoteError> {
    let s = nodes(inner).into_iter().find(|n| n.id == id);
    json_reply(&s)
}

/// Ask the cluster (through `addr`) to make node `id` a voter.
pub async fn ask_membership(
    peers: &Peers,
    addr: &str,
    id: NodeId,
    name: &str,
    my_addr: &str,
) -> Result<(), NetError> {
    let body = serde_json::to_vec(&MemberRequest {
        id,
        name: name.to_string(),
        addr: my_addr.to_string(),
    })
    .unwrap_or_default();
    // Adding a member waits for it to catch up: allow time.
    peers
        .call_with_timeout(
            addr,
            PATH_MEMBERS,
            Bytes::from(body),
            Duration::from_secs(60),
        )
        .await
        .map(|_| ())
}

/// Create a join token (replicated; only its hash is stored) on behalf of
/// `by` (an admin: the leader checks it too). The record is the admin's
/// own, signed in the request's proof (`headers`): the secret never
/// reaches a node, so the answer leaves it out
/// ([`shoal_api::cluster::TOKEN_PLACEHOLDER`]).
pub async fn create_token(
    inner: &Inner,
    req: TokenRequest,
    by: &Owner,
    headers: &hyper::HeaderMap,
) -> Result<TokenCreated, RemoteError> {
    let role = match req.role.as_deref().unwrap_or("node") {
        "node" => Role::Node,
        "client" => Role::Client,
        "admin" => Role::Admin,
        other => {
            return Err(RemoteError::new(
                400,
                format!("unknown role `{other}` (node, client, admin)"),
            ))
        }
    };
    if req.ttl_ms == 0 || req.ttl_ms > TOKEN_TTL_MAX.as_millis() as u64 {
        return Err(RemoteError::new(
            400,
            format!(
                "token lifetime must be between 1 ms and {} days",
                TOKEN_TTL_MAX.as_secs() / 86_400
            ),
        ));
    }
    let record = req.record.ok_or_else(|| {
        RemoteError::new(
            400,
            "a token request carries the token's record, signed by the admin who asks \
             (a shoal CLI older than the node?)",
        )
    })?;
    let lifetime_ms = record.expires_unix_ms.checked_sub(record.created_unix_ms);
    if record.role != role || lifetime_ms != Some(req.ttl_ms) || record.used {
        return Err(RemoteError::new(
            400,
            "the token record does not match the request (role, lifetime, unused)",
        ));
    }
    let intent = shoal_pki::Intent::create_token(&record);
    let proof = crate::records::signed::checked_proof(&inner.raft.state(), headers, &intent)?;
    let expires = record.expires_unix_ms;
    let cmd = crate::records::signed::signed(proof, Command::CreateToken { record });
    let r = inner.raft.write_as(cmd, by).await.map_err(write_err)?;
    refused(r)?;
    let ca_hash = shoal_pki::CaPin::of_cert_der(inner.trust.ca_cert_der())
        .map_err(|e| RemoteError::new(500, e.to_string()))?
        .to_string();
    let token = shoal_api::cluster::TOKEN_PLACEHOLDER;
    let command = format!(
        "shoal node start --name NAME --listen HOST:PORT --join {} --token {token} --ca-hash {}",
        inner.addr, ca_hash
    );
    Ok(TokenCreated {
        token: token.to_string(),
        ca_hash,
        addr: inner.addr.clone(),
        expires_unix_ms: expires,
        command,
    })
}

async fn remove_node(
    inner: &Inner,
    name: &str,
    by: &Owner,
    headers: &hyper::HeaderMap,
) -> Result<Response<ApiBody>, RemoteError> {
    let id = node_named(inner, name)?;
    // Checked before the membership change, which comes first.
    let intent = shoal_pki::Intent::RemoveNode {
        node: name.to_string(),
    };
    let proof = crate::records::signed::checked_proof(&inner.raft.state(), headers, &intent)?;
    if id == inner.me
        && inner
            .raft
            .state()
            .nodes
            .values()
            .filter(|n| n.status != NodeStatus::Removed)
            .count()
            == 1
    {
        return Err(RemoteError::new(
            409,
            "cannot remove the last node of the cluster",
        ));
    }
    inner.raft.remove_member(id, by).await.map_err(write_err)?;
    let r = inner
        .raft
        .write_as(
            crate::records::signed::signed(
                proof,
                Command::RemoveNode {
                    id,
                    now_ms: shoal_pki::now_unix_ms(),
                },
            ),
            by,
        )
        .await
        .map_err(write_err)?;
    refused(r)?;
    if let Some(addr) = inner.raft.state().nodes.get(&id).map(|n| n.addr.clone()) {
        inner.peers.forget(&addr);
    }
    tracing::info!("removed node {name:?} (id {id}); its certificates are revoked");
    summary_of(inner, id)
}

async fn cordon(
    inner: &Inner,
    name: &str,
    cordoned: bool,
    by: &Owner,
) -> Result<Response<ApiBody>, RemoteError> {
    let id = node_named(inner, name)?;
    set_cordon(&inner.raft, id, cordoned, Some(by)).await?;
    summary_of(inner, id)
}

/// `/v1/nodes/{name}/drain` (see [`crate::migrate::drain`]): served by the
/// drained node itself; asked of another node, forwarded to it.
async fn drain(
    inner: &Arc<Inner>,
    name: &str,
    who: &Owner,
    req: Request<Incoming>,
) -> Result<Response<ApiBody>, RemoteError> {
    use crate::migrate::drain::{self, DrainRequest};
    let id = node_named(inner, name)?;
    let method = req.method().clone();
    if id != inner.me {
        let addr = inner.link.addr_of(id).ok_or_else(|| {
            RemoteError::new(404, format!("no node named `{name}` in the cluster"))
        })?;
        let pq = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| req.uri().path().to_string());
        let body = shoal_net::read_body(req, JSON_BYTES_MAX as usize).await?;
        return super::proxy::forward(inner, &addr, method, &pq, body, Some(who)).await;
    }
    let status = match method {
        Method::POST => {
            let r: DrainRequest = read_json(req).await?;
            drain::start(&inner.migration, r.deadline_ms.map(Duration::from_millis)).await
        }
        Method::DELETE => drain::cancel(&inner.migration).await,
        _ => drain::status(&inner.migration),
    }
    .map_err(|e| RemoteError::new(e.status(), e.to_string()))?;
    json_reply(&status)
}

/// How long `shoal ps` waits for a node that is not declared dead: at
/// most the failure detector's window (a node silent that long is, or is
/// about to be, declared dead).
fn listing_timeout(inner: &Inner) -> Duration {
    Duration::from_millis(inner.raft.dead_after_ms()).min(Duration::from_secs(5))
}

/// The processes the directory places on `node`, as `unknown` entries
/// saying what is known of the node.
fn unknown_processes(
    state: &shoal_cluster::ClusterState,
    node: &shoal_cluster::NodeRecord,
    reach: NodeReach,
) -> Vec<ProcessSummary> {
    state
        .directory
        .iter()
        .filter(|(_, e)| e.node == node.id)
        .map(|(pid, _)| {
            let lost = state
                .failover
                .lost
                .get(pid)
                .filter(|_| reach.state == NodeReachState::Dead)
                .map(|why| format!("its node {} was declared dead and {why}", node.name));
            ProcessSummary {
                pid: Pid(*pid),
                module: None,
                module_names: Vec::new(),
                started_at_unix_ms: None,
                age_ms: None,
                mailbox_len: None,
                node: Some(node.name.clone()),
                state: if lost.is_some() {
                    ProcessState::Lost
                } else {
                    ProcessState::Unknown
                },
                node_state: Some(reach.clone()),
                lost,
                restart: None,
                code_tier: None,
            }
        })
        .collect()
}

/// What the cluster records of `pid`'s restart policy and checkpoint.
fn restart_info(
    state: &shoal_cluster::ClusterState,
    pid: Pid,
    now_ms: u64,
) -> Option<crate::api::types::RestartInfo> {
    let r = state.failover.recoverable.get(&pid.0)?;
    let name = |id: &NodeId| {
        state
            .nodes
            .get(id)
            .map_or_else(|| id.to_string(), |n| n.name.clone())
    };
    Some(crate::api::types::RestartInfo {
        policy: r.policy.mode.as_str().to_string(),
        checkpoint_every_ms: r.policy.checkpoint_every_ms,
        replicas: r.policy.replicas,
        incarnation: r.incarnation,
        checkpoint_seq: r.checkpoint.as_ref().map(|c| c.seq),
        checkpoint_age_ms: r
            .checkpoint
            .as_ref()
            .map(|c| now_ms.saturating_sub(c.taken_unix_ms)),
        checkpoint_holders: r
            .checkpoint
            .as_ref()
            .map(|c| c.holders.iter().map(name).collect())
            .unwrap_or_default(),
    })
}

/// The failover events, oldest first, as the API shows them.
fn events(state: &shoal_cluster::ClusterState) -> Vec<crate::api::types::ProcessEvent> {
    use shoal_cluster::state::failover::EventKind;
    let name = |id: &NodeId| {
        state
            .nodes
            .get(id)
            .map_or_else(|| id.to_string(), |n| n.name.clone())
    };
    state
        .failover
        .events_after(None)
        .map(|e| {
            let mut v = crate::api::types::ProcessEvent {
                seq: e.seq,
                pid: Pid(e.pid),
                at_unix_ms: e.at_unix_ms,
                kind: String::new(),
                node: String::new(),
                to: None,
                checkpoint_seq: None,
                checkpoint_age_ms: None,
                incarnation: None,
                text: String::new(),
            };
            match &e.kind {
                EventKind::Resumed {
                    from,
                    to,
                    checkpoint_seq,
                    checkpoint_age_ms,
                    incarnation,
                } => {
                    v.kind = "resumed".into();
                    v.node = name(from);
                    v.to = Some(name(to));
                    v.checkpoint_seq = *checkpoint_seq;
                    v.checkpoint_age_ms = *checkpoint_age_ms;
                    v.incarnation = Some(*incarnation);
                    v.text = match (checkpoint_seq, checkpoint_age_ms) {
                        (Some(seq), Some(age)) => format!(
                            "node {} declared dead: resumed on {} from checkpoint {seq}, {age} ms old",
                            name(from),
                            name(to)
                        ),
                        _ => format!(
                            "node {} declared dead: started fresh on {} (no checkpoint yet)",
                            name(from),
                            name(to)
                        ),
                    };
                }
                EventKind::Lost { node, why } => {
                    v.kind = "lost".into();
                    v.node = name(node);
                    v.text = format!("node {} declared dead: lost, {why}", name(node));
                }
                EventKind::Restarted {
                    node,
                    incarnation,
                    why,
                } => {
                    v.kind = "restarted".into();
                    v.node = name(node);
                    v.incarnation = Some(*incarnation);
                    v.text = format!("restarted on {} after it {why}", name(node));
                }
            }
            v
        })
        .collect()
}

/// Every node's processes. A node declared dead by the failure detector is
/// not asked; its processes (from the directory) are listed as `unknown`,
/// as are those of a node that does not answer within
/// [`listing_timeout`]. Nothing is left out silently.
async fn all_processes(inner: &Inner) -> Result<Vec<ProcessSummary>, RemoteError> {
    let state = inner.raft.state();
    let mut out = Vec::new();
    let mut asks = Vec::new();
    let timeout = listing_timeout(inner);
    for n in state
        .nodes
        .values()
        .filter(|n| n.status != NodeStatus::Removed)
    {
        if n.id == inner.me {
            let mut mine = handlers::processes(&inner.node).await?;
            for p in &mut mine {
                p.node = Some(n.name.clone());
            }
            out.extend(mine);
        } else if let Some(l) = state.liveness.get(&n.id).filter(|l| l.dead) {
            let reach = NodeReach {
                state: NodeReachState::Dead,
                liveness_epoch: l.epoch,
                dead_since_unix_ms: Some(l.since_unix_ms),
                detail: format!(
                    "node {} was declared dead by leader {} after {} ms without contact",
                    n.name, l.by, l.silent_ms
                ),
            };
            out.extend(unknown_processes(&state, n, reach));
        } else {
            let link = inner.link.clone();
            let (addr, id) = (n.addr.clone(), n.id);
            asks.push(tokio::spawn(async move {
                let r = link
                    .call_unless_dead(id, &addr, PATH_PEER_PROCESSES, Bytes::new(), timeout)
                    .await;
                (id, r)
            }));
        }
    }
    for ask in asks {
        let Ok((id, r)) = ask.await else { continue };
        let Some(n) = state.nodes.get(&id) else {
            continue;
        };
        match r.map_err(|e| e.to_string()).and_then(|b| {
            serde_json::from_slice::<Vec<ProcessSummary>>(&b).map_err(|e| e.to_string())
        }) {
            Ok(mut list) => {
                for p in &mut list {
                    p.node = Some(n.name.clone());
                }
                out.extend(list);
            }
            Err(e) => {
                tracing::warn!("node {} did not list its processes: {e}", n.name);
                let reach = NodeReach {
                    state: NodeReachState::Unreachable,
                    liveness_epoch: state.liveness_epoch(id),
                    dead_since_unix_ms: None,
                    detail: format!("node {} did not answer: {e}", n.name),
                };
                out.extend(unknown_processes(&state, n, reach));
            }
        }
    }
    out.sort_by_key(|p| p.pid);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    for p in &mut out {
        p.restart = restart_info(&state, p.pid, now_ms);
    }
    Ok(out)
}

/// Refuse early (before storing anything) a module name `who` may not
/// point: one owned by someone else. The state machine checks again when
/// it applies the write, so a racing writer cannot slip past.
fn may_name(inner: &Inner, who: &Owner, name: &str) -> Result<(), RemoteError> {
    match inner.raft.state().module_name_owner(name) {
        Some(owner) => shoal_pki::may_act(who, &owner, &format!("module name {name:?}"))
            .map_err(crate::records::owners::forbidden),
        None => Ok(()),
    }
}

/// Record cluster-wide that this node holds module `hash` and, if asked,
/// point `name` at it on behalf of `who` (authorized by the ownership rule
/// when applied); then point this node's registry name too. The node's
/// own registry name is written only after the cluster accepted it, so a
/// refused repoint changes nothing anywhere.
async fn record_module(
    inner: &Inner,
    who: &Owner,
    hash: shoal_registry::Sha256,
    size_bytes: u64,
    name: Option<String>,
) -> Result<ModuleAdded, RemoteError> {
    let hex = hash.to_hex();
    let r = inner
        .raft
        .write(Command::ModuleHeld {
            hash: hex.clone(),
            node: inner.me,
            size_bytes,
        })
        .await
        .map_err(write_err)?;
    refused(r)?;
    if let Some(name) = &name {
        let r = inner
            .raft
            .write_as(
                Command::NameModule {
                    name: name.clone(),
                    hash: hex,
                    by: who.clone(),
                },
                who,
            )
            .await
            .map_err(write_err)?;
        refused(r)?;
        let node = inner.node.clone();
        let local = name.clone();
        tokio::task::spawn_blocking(move || node.registry().set_name(&local, &hash))
            .await
            .map_err(|e| RemoteError::new(500, format!("registry writer failed: {e}")))?
            .map_err(crate::api::ApiError::from)?;
    }
    Ok(ModuleAdded {
        hash,
        name,
        size_bytes,
    })
}

/// Store a module here and record it (and `name`, on behalf of `who`)
/// cluster-wide.
pub async fn add_module_as(
    inner: &Inner,
    who: &Owner,
    wasm: Bytes,
    name: Option<String>,
) -> Result<ModuleAdded, RemoteError> {
    if let Some(n) = &name {
        may_name(inner, who, n)?;
    }
    let added = handlers::add_module(&inner.node, wasm, None).await?;
    record_module(inner, who, added.hash, added.size_bytes, name).await
}

/// The node's operator (the daemon's own API and its local socket): an
/// admin.
pub fn operator() -> Owner {
    Owner {
        role: Role::Admin,
        id: "local-socket".to_string(),
    }
}

/// Store a module here and record it (and its name) cluster-wide, as the
/// node's operator.
pub async fn add_module(
    inner: &Inner,
    wasm: Bytes,
    name: Option<String>,
) -> Result<shoal_registry::Sha256, RemoteError> {
    Ok(add_module_as(inner, &operator(), wasm, name).await?.hash)
}

/// `PUT /v1/names/{name}`: point `name` at a module this node has, on
/// behalf of `who`.
async fn set_name(
    inner: &Inner,
    who: &Owner,
    name: String,
    req: NameRequest,
) -> Result<ModuleAdded, RemoteError> {
    may_name(inner, who, &name)?;
    let node = inner.node.clone();
    let (hash, size_bytes) = tokio::task::spawn_blocking(move || {
        let hash = node.resolve(&req.module)?;
        let size = node
            .registry()
            .size_of(&hash)
            .map_err(shoal_runtime::node::NodeError::Registry)?;
        Ok::<_, shoal_runtime::node::NodeError>((hash, size))
    })
    .await
    .map_err(|e| RemoteError::new(500, format!("registry reader failed: {e}")))?
    .map_err(crate::api::ApiError::from)?;
    record_module(inner, who, hash, size_bytes, Some(name)).await
}

/// Placed spawn: choose nodes, start the processes there; all or none.
async fn spawn(
    inner: &Inner,
    req: SpawnRequest,
    granted_by: shoal_cluster::Granter,
    owner: Owner,
) -> Result<Vec<Spawned>, RemoteError> {
    if req.count == 0 {
        return Err(RemoteError::new(400, "count must be at least 1"));
    }
    handlers::check_env(&req.env)?;
    let volumes = handlers::volume_mounts(&req.volumes)?;
    // A shared volume must exist and be the owner's (checked again at
    // each use: this only turns a typo into a clear error now).
    if volumes.iter().any(|v| v.shared.is_some()) {
        let state = inner.raft.linearizable_state().await.map_err(write_err)?;
        for name in volumes
            .iter()
            .filter_map(|v| v.shared.as_deref())
            .filter(|n| *n != shoal_runtime::volume::cluster_dir::CLUSTER_VOLUME)
        {
            if state.volumes.get(&owner, name).is_none() {
                return Err(RemoteError::new(
                    404,
                    format!("{owner} has no shared volume {name:?} (create it with `shoal volume create {name}`)"),
                ));
            }
        }
    }
    let grants = shoal_runtime::grants::Grants {
        dirs: Vec::new(),
        env: req.env.clone(),
        memory_bytes_max: req.memory_bytes_max,
        volumes: volumes.clone(),
    };
    let target = match (&req.node, req.labels.is_empty()) {
        (Some(n), _) => Target::Node(n.clone()),
        (None, false) => Target::Labels(req.labels.clone()),
        (None, true) => Target::Any,
    };
    // Resolve the module here first, so a typo fails before any placement.
    let module = match inner.node.resolve(&req.module) {
        Ok(h) => h.to_string(),
        Err(_) => inner
            .node
            .fetch_module(&req.module)
            .await
            .map_err(|_| {
                RemoteError::new(
                    404,
                    format!("`{}` is not a module of this cluster; deploy a .wasm file, or see `shoal ls`", req.module),
                )
            })?
            .to_string(),
    };
    let chosen = inner
        .link
        .place(&target, req.count as usize)
        .map_err(|e| match e {
            shoal_cluster::sched::PlacementError::TooMany { .. } => {
                RemoteError::new(400, e.to_string())
            }
            _ => RemoteError::new(409, e.to_string()),
        })?;
    let mut argv = vec![req.argv0.clone().unwrap_or_else(|| req.module.clone())];
    argv.extend(req.args.iter().cloned());
    let peer_req = PeerSpawnRequest {
        module,
        args: argv,
        env: req.env.clone(),
        memory_bytes_max: req.memory_bytes_max,
        preemptible: req.preemptible,
        owner: Some(owner),
        volumes,
        restart: req
            .restart
            .clone()
            .filter(|p| p.mode != shoal_cluster::state::failover::RestartMode::Never),
        recorded: None,
    };
    let mut started: Vec<Spawned> = Vec::with_capacity(chosen.len());
    for id in chosen {
        // Started, then its grants on record (so a move keeps them); a
        // process whose grants cannot be recorded does not run.
        let outcome = match spawn_placed(inner, &target, id, &peer_req).await {
            Ok((id, s)) => {
                match crate::records::grants::record(
                    &inner.raft,
                    id,
                    s.pid,
                    &grants,
                    granted_by.clone(),
                )
                .await
                {
                    Ok(()) => Ok((id, s)),
                    Err(e) => {
                        let _ = kill(inner, s.pid).await;
                        Err(e.to_string())
                    }
                }
            }
            Err(e) => Err(e.to_string()),
        };
        match outcome {
            Ok((id, s)) => started.push(Spawned {
                pid: s.pid,
                module: s.module,
                // The state now: the process may have been placed again on a
                // node chosen after the first placement (members are never
                // deleted from it, only marked removed).
                node: inner.raft.state().nodes.get(&id).map(|n| n.name.clone()),
            }),
            Err(e) => {
                for s in &started {
                    let _ = kill(inner, s.pid).await;
                }
                return Err(RemoteError::new(
                    409,
                    format!("cannot start {} on node {id}: {e} (after starting {} of {}: those were killed)", req.module, started.len(), req.count),
                ));
            }
        }
    }
    // Each node records its processes' owners with their registration:
    // answer once this node sees them, so the caller's next request here
    // finds them.
    let pids: Vec<Pid> = started.iter().map(|s| s.pid).collect();
    crate::records::owners::wait_applied(&inner.raft, &pids).await;
    Ok(started)
}

/// Start one process of a placed spawn on `first`. If that node is declared
/// dead meanwhile (it became unreachable just as it was chosen: the request
/// is given up on within the failure detector's window), and the spawn was
/// not pinned to it (`--node`), place it again among the nodes alive now,
/// at most once per member. The node it started on, and what it said.
async fn spawn_placed(
    inner: &Inner,
    target: &Target,
    first: NodeId,
    request: &PeerSpawnRequest,
) -> Result<(NodeId, crate::link::spawn::PeerSpawned), SpawnAtError> {
    let mut id = first;
    let mut tried = std::collections::BTreeSet::new();
    loop {
        tried.insert(id);
        match inner.link.spawn_at(id, request).await {
            Ok(s) => return Ok((id, s)),
            Err(SpawnAtError::Dead(dead)) if !matches!(target, Target::Node(_)) => {
                let again = inner
                    .link
                    .place(target, 1)
                    .ok()
                    .and_then(|v| v.first().copied());
                match again {
                    Some(next) if !tried.contains(&next) => {
                        tracing::warn!("{dead}; placing that process elsewhere");
                        id = next;
                    }
                    _ => return Err(SpawnAtError::Dead(dead)),
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// The node a live pid is on, if known.
fn node_of(inner: &Inner, pid: Pid) -> Option<NodeId> {
    if inner.node.router().is_local(pid) {
        return Some(inner.me);
    }
    Link::locate(&inner.raft.state(), pid.0)
}

async fn kill(inner: &Inner, pid: Pid) -> Result<ExitReport, RemoteError> {
    match node_of(inner, pid) {
        Some(id) if id != inner.me => {
            let addr = inner
                .link
                .addr_of(id)
                .ok_or_else(|| RemoteError::new(404, format!("no process with pid {pid}")))?;
            let b = inner
                .peers
                .call(&addr, PATH_PEER_KILL, Bytes::from(pid.to_string()))
                .await
                .map_err(|e| from_net(e, &format!("node {id}")))?;
            serde_json::from_slice(&b).map_err(|e| RemoteError::new(502, e.to_string()))
        }
        _ => {
            if inner.link.cancel_restart(pid) {
                return Ok(killed_while_waiting(pid));
            }
            Ok(handlers::kill(&inner.node, pid).await?)
        }
    }
}

/// What a kill of a process waiting for its restart reports: it was
/// killed (and will not be restarted).
pub(crate) fn killed_while_waiting(pid: Pid) -> ExitReport {
    ExitReport::from(&shoal_runtime::ExitStatus {
        pid,
        reason: shoal_abi::process::ExitReason::Killed,
    })
}

/// `/v1/processes/{pid}...` → the pid.
fn pid_in_path(path: &str) -> Option<Pid> {
    path.strip_prefix("/v1/processes/")?
        .split('/')
        .next()?
        .parse()
        .ok()
}

/// Answer one control-API request. Who acts is the caller's certificate
/// ([`crate::records::owners::acting`]); process routes, snapshots and module names
/// are authorized by the ownership rule ([`shoal_pki::may_act`]), the
/// cluster's verbs by role; refusals are typed 403s.
pub async fn route(
    inner: &Arc<Inner>,
    caller: &Caller,
    req: Request<Incoming>,
) -> Result<Response<ApiBody>, RemoteError> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    // Who acts: the certificate; a node's relayed caller only on the
    // routes nodes relay (a process on another node, a drain).
    let who = crate::records::owners::acting(caller, req.headers());
    let direct = crate::records::owners::acting(caller, &hyper::HeaderMap::new());
    let admin = |what: &str| {
        shoal_pki::need_admin(&direct, what).map_err(crate::records::owners::forbidden)
    };
    match (&method, path.as_str()) {
        (&Method::GET, "/v1/nodes") => return json_reply(&nodes(inner)),
        (&Method::POST, "/v1/tokens") => {
            admin("creating a join token")?;
            let headers = req.headers().clone();
            let r: TokenRequest = read_json(req).await?;
            return json_reply(&create_token(inner, r, &direct, &headers).await?);
        }
        (&Method::POST, crate::certs::PATH_REVOKE) => {
            admin("revoking a certificate")?;
            let headers = req.headers().clone();
            let r: shoal_api::cluster::RevokeRequest = read_json(req).await?;
            return json_reply(&crate::certs::revoke(inner, r, &direct, &headers).await?);
        }
        (&Method::POST, crate::certs::PATH_CA_TAKEOVER) => {
            admin("making a node the CA node")?;
            return json_reply(&crate::certs::take_over_ca(inner, &direct, req.headers()).await?);
        }
        (&Method::POST, PATH_MEMBERS) => {
            let r: MemberRequest = read_json(req).await?;
            let cert = caller
                .cert
                .as_ref()
                .ok_or_else(|| RemoteError::new(401, "no certificate"))?;
            if cert.role != Role::Node || cert.id != r.name {
                return Err(RemoteError::new(403, "a node may only add itself"));
            }
            let known = inner.raft.state().member(r.id).map(|n| n.name.clone());
            if known.as_deref() != Some(r.name.as_str()) {
                return Err(RemoteError::new(
                    403,
                    format!("node id {} is not {:?} in the cluster", r.id, r.name),
                ));
            }
            inner
                .raft
                .add_member(
                    r.id,
                    MemberInfo {
                        name: r.name,
                        addr: r.addr,
                    },
                )
                .await
                .map_err(write_err)?;
            return json_reply(&serde_json::json!({}));
        }
        (&Method::GET, "/v1/processes") => {
            let mut all = all_processes(inner).await?;
            if direct.role == Role::Client {
                // A client sees its own processes only (a node holds the
                // whole directory in its Raft state anyway).
                let state = inner.raft.state();
                all.retain(|p| {
                    inner.link.owners.claimed(p.pid).as_ref() == Some(&direct)
                        || state.owners.get(&p.pid.0) == Some(&direct)
                });
            }
            return json_reply(&all);
        }
        (&Method::POST, "/v1/node/stop") => {
            admin("stopping a node")?;
            let r: crate::stop::StopRequest = read_json(req).await?;
            let accepted = inner.stop.request(r);
            return json_reply(&crate::stop::StopAccepted {
                stopping: true,
                already: !accepted,
                processes: inner.node.processes().len(),
            });
        }
        (&Method::GET, "/v1/events") => {
            let state = inner.raft.state();
            let mut list = events(&state);
            if direct.role == Role::Client {
                // A client sees its own processes' events only.
                list.retain(|e| {
                    inner.link.owners.claimed(e.pid).as_ref() == Some(&direct)
                        || state.owners.get(&e.pid.0) == Some(&direct)
                });
            }
            return json_reply(&list);
        }
        (&Method::POST, "/v1/processes") => {
            let r: SpawnRequest = read_json(req).await?;
            return json_reply(
                &spawn(
                    inner,
                    r,
                    crate::records::grants::granter_of(caller),
                    direct.clone(),
                )
                .await?,
            );
        }
        (&Method::POST, "/v1/modules") => {
            let name = req
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("name=")))
                .and_then(crate::api::percent_decode)
                .filter(|n| !n.is_empty());
            if let Some(n) = &name {
                may_name(inner, &direct, n)?;
            }
            let body = shoal_net::read_body(req, MODULE_BYTES_MAX as usize).await?;
            return json_reply(&add_module_as(inner, &direct, body, name).await?);
        }
        (&Method::POST, "/v1/snapshots") => {
            let imported = routes::import_streamed(&inner.node, req).await?;
            inner.link.owners.own_snapshot(imported.id, direct.clone());
            return json_reply(&imported);
        }
        _ => {}
    }
    if path == "/v1/locks" {
        return match method {
            Method::GET => json_reply(&locks(inner, &direct, req.uri().query()).await?),
            m => Err(RemoteError::new(
                405,
                format!("method {m} is not allowed on /v1/locks (allowed: GET)"),
            )),
        };
    }
    if let Some(rest) = path.strip_prefix("/v1/volumes") {
        if rest.is_empty() || rest.starts_with('/') {
            return crate::volumes_api::route(inner, &direct, rest, req).await;
        }
    }
    if let Some(rest) = path.strip_prefix("/v1/kv/") {
        return kv(inner, &direct, rest, req).await;
    }
    if let Some(name) = path.strip_prefix("/v1/nodes/") {
        let (name, action) = name.split_once('/').unwrap_or((name, ""));
        let name = name.to_string();
        return match (&method, action) {
            (&Method::DELETE, "") => {
                admin("removing a node")?;
                remove_node(inner, &name, &direct, req.headers()).await
            }
            (&Method::POST, "cordon") => {
                admin("cordoning a node")?;
                cordon(inner, &name, true, &direct).await
            }
            (&Method::POST, "uncordon") => {
                admin("uncordoning a node")?;
                cordon(inner, &name, false, &direct).await
            }
            (&Method::POST | &Method::GET | &Method::DELETE, "drain") => {
                // A node relays a drain request to the drained node, naming
                // the admin who asked.
                shoal_pki::need_admin(&who, "draining a node")
                    .map_err(crate::records::owners::forbidden)?;
                drain(inner, &name, &who, req).await
            }
            _ => Err(RemoteError::new(404, format!("no route {method} {path}"))),
        };
    }
    if let Some(name) = path.strip_prefix("/v1/names/") {
        if method == Method::PUT {
            let name = crate::api::percent_decode(name)
                .ok_or_else(|| RemoteError::new(400, "bad name encoding"))?;
            let r: NameRequest = read_json(req).await?;
            return json_reply(&set_name(inner, &direct, name, r).await?);
        }
    }
    if let Some(pid) = pid_in_path(&path) {
        if method == Method::GET && path.trim_end_matches('/').ends_with("/logs") {
            // Wherever it runs or ended, across its moves; authorized where
            // the log is.
            return crate::logs::serve(inner, &who, &direct, pid, req).await;
        }
        let is_migrate = method == Method::POST && path.trim_end_matches('/').ends_with("/migrate");
        // A node acting as itself may move any process: the leader's
        // rebalancer and drains ask a process's node over this route.
        // Nothing else about a process is a node's to do.
        let scheduler = is_migrate && who.role == Role::Node && who == direct;
        let here =
            inner.node.router().is_local(pid) || node_of(inner, pid).is_none_or(|n| n == inner.me);
        let is_kill = method == Method::DELETE && !path.trim_end_matches('/').ends_with("/logs");
        // Checked where the process is (or was): a request relayed to its
        // node is checked there, for the identity relayed.
        if !scheduler && (here || is_kill) {
            crate::access::authorize_pid(inner, &who, pid).await?;
        }
        if is_kill {
            return json_reply(&kill(inner, pid).await?);
        }
        if !here {
            // Logs, snapshots, anything else about a process on another
            // node: ask that node (naming who asks), and stream its answer
            // back.
            let id = node_of(inner, pid).unwrap_or(inner.me);
            let addr = inner
                .link
                .addr_of(id)
                .ok_or_else(|| RemoteError::new(404, format!("no process with pid {pid}")))?;
            let pq = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or(path.clone());
            let body = shoal_net::read_body(req, JSON_BYTES_MAX as usize).await?;
            let relay = (!scheduler).then_some(&who);
            return super::proxy::forward(inner, &addr, method, &pq, body, relay).await;
        }
        if is_migrate {
            let r: MigrateRequest = read_json(req).await?;
            return match crate::migrate::source::migrate(&inner.migration, pid, r.to.as_deref())
                .await
            {
                Ok(report) => json_reply(&report),
                // Typed: the client learns when and how it ended.
                Err(crate::migrate::source::MigrateError::Exited { mut gone }) => {
                    if gone.exited_unix_ms.is_none() {
                        // It ended on another node: that node knows when.
                        if let Ok((_, ended)) = crate::logs::find_holder(inner, pid).await {
                            gone.exited_unix_ms = ended.ended_unix_ms;
                            gone.reason = ended.ended.map(|r| r.reason);
                        }
                    }
                    let body = shoal_api::types::ErrorBody {
                        error: crate::migrate::source::MigrateError::Exited { gone: gone.clone() }
                            .to_string(),
                        gone: Some(gone),
                        detail: None,
                    };
                    let mut r = shoal_net::reply(410, encode_json(&body)?);
                    r.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        hyper::header::HeaderValue::from_static("application/json"),
                    );
                    Ok(r)
                }
                Err(e) => Err(RemoteError::new(e.status(), e.to_string())),
            };
        }
        if method == Method::POST && path.trim_end_matches('/').ends_with("/snapshot") {
            let r: crate::api::types::SnapshotRequest = read_json(req).await?;
            let report = handlers::snapshot(&inner.node, pid, r).await?;
            // The snapshot is its taker's (and the process owner's).
            inner.link.owners.own_snapshot(report.id, who.clone());
            let owner = inner.link.owner_of(pid);
            if !owner.is_cluster() {
                inner.link.owners.own_snapshot(report.id, owner);
            }
            return json_reply(&report);
        }
    }
    let role = direct.role;
    if let Some(rest) = path.strip_prefix("/v1/snapshots/") {
        let rest = rest.trim_end_matches('/');
        let id_text = rest.strip_suffix("/restore").unwrap_or(rest);
        let id = crate::api::percent_decode(id_text)
            .and_then(|t| t.parse::<shoal_registry::Sha256>().ok())
            .ok_or_else(|| {
                RemoteError::new(
                    400,
                    format!("`{id_text}` is not a snapshot id (expected sha256:<64 hex>)"),
                )
            })?;
        inner.link.owners.may_use_snapshot(&direct, &id)?;
        if method == Method::POST && rest.ends_with("/restore") {
            let r: RestoreRequest = read_json(req).await?;
            return json_reply(&restore(inner, &direct, id, r).await?);
        }
    }
    let resp = routes::route(&inner.node, req, crate::records::grants::authority_of(role)).await;
    Ok(resp.map(|b| b.boxed()))
}

/// `POST /v1/snapshots/{id}/restore` on behalf of `who`: with `replace`,
/// only over a process `who` may act on (it keeps its owner); otherwise the
/// new process is `who`'s, noted before it runs. Its grants are recorded in
/// Raft with the caller's identity.
async fn restore(
    inner: &Inner,
    who: &Owner,
    id: shoal_registry::Sha256,
    r: RestoreRequest,
) -> Result<crate::api::types::Restored, RemoteError> {
    let mut owner = who.clone();
    let registry = inner.node.registry().clone();
    let manifest = tokio::task::spawn_blocking(move || {
        shoal_runtime::snapshot::format::load_manifest(&registry, &id)
    })
    .await
    .map_err(|e| RemoteError::new(500, format!("snapshot reader failed: {e}")))?
    .map_err(|e| crate::api::ApiError::from(shoal_runtime::node::NodeError::Snapshot(e)))?;
    // The snapshot names its module by hash; a node that never ran it gets
    // the bytes from a node of the cluster that holds them (checked
    // against the hash) rather than refusing the restore.
    if !inner.node.registry().contains(&manifest.module) {
        let reference = manifest.module.to_string();
        inner.node.fetch_module(&reference).await.map_err(|code| {
            RemoteError::new(
                409,
                format!(
                    "the snapshot's module {} is not on this node and no node of the cluster could give it ({})",
                    manifest.module,
                    shoal_runtime::abi::errno::name(code)
                ),
            )
        })?;
    }
    if r.replace {
        let original = Pid(manifest.pid);
        if inner.node.module_of(original).is_some() {
            crate::access::authorize_pid(inner, who, original).await?;
            owner = inner.link.owner_of(original);
        }
    }
    let fresh = inner
        .node
        .pids()
        .allocate_wait(Duration::from_secs(5))
        .await
        .ok_or_else(|| {
            RemoteError::new(503, "no pids left and the cluster granted no new block")
        })?;
    inner.link.owners.claim(fresh, who.clone());
    let authority = crate::records::grants::authority_of(who.role);
    let (restored, grants) =
        match handlers::restore(&inner.node, id, r, authority, Some(fresh)).await {
            Ok(x) => x,
            Err(e) => {
                inner.link.owners.unclaim(fresh);
                return Err(e.into());
            }
        };
    if restored.pid != fresh {
        // It took its original's pid, and keeps its original's owner.
        inner.link.owners.unclaim(fresh);
        inner.link.owners.claim(restored.pid, owner);
    }
    let granter = shoal_cluster::Granter {
        role: who.role,
        id: who.id.clone(),
    };
    if let Err(e) =
        crate::records::grants::record(&inner.raft, inner.me, restored.pid, &grants, granter).await
    {
        // A process whose grants are not on record would lose them if it
        // moved: it does not run.
        let _ = handlers::kill(&inner.node, restored.pid).await;
        return Err(e);
    }
    crate::records::owners::wait_applied(&inner.raft, &[restored.pid]).await;
    Ok(restored)
}

/// The query parameter `name`, percent-decoded to bytes.
fn query_bytes(query: Option<&str>, name: &str) -> Result<Option<Vec<u8>>, RemoteError> {
    let Some(q) = query else { return Ok(None) };
    for pair in q.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == name {
            return shoal_api::kv::percent_decode_bytes(v)
                .map(Some)
                .ok_or_else(|| {
                    RemoteError::new(
                        400,
                        format!("query parameter `{name}` is not percent-encoded"),
                    )
                });
        }
    }
    Ok(None)
}

/// The query parameter `name` as text.
fn query_text(query: Option<&str>, name: &str) -> Result<Option<String>, RemoteError> {
    query_bytes(query, name)?
        .map(|b| {
            String::from_utf8(b).map_err(|_| {
                RemoteError::new(400, format!("query parameter `{name}` is not UTF-8"))
            })
        })
        .transpose()
}

/// The query flag `name` (absent: false).
fn query_flag(query: Option<&str>, name: &str) -> Result<bool, RemoteError> {
    match query_text(query, name)?.as_deref() {
        None | Some("false") | Some("0") => Ok(false),
        Some("") | Some("true") | Some("1") => Ok(true),
        Some(other) => Err(RemoteError::new(
            400,
            format!("query parameter `{name}` must be true or false, not `{other}`"),
        )),
    }
}

/// The state a read answers from: linearizable (every write that
/// completed before it began), or with `stale` this node's applied state.
async fn read_state(
    inner: &Inner,
    stale: bool,
) -> Result<Arc<shoal_cluster::ClusterState>, RemoteError> {
    if stale {
        Ok(inner.raft.state())
    } else {
        inner.raft.linearizable_state().await.map_err(write_err)
    }
}

/// A key-value bound broken by a request, as the state machine would
/// refuse it (typed, with its status).
fn kv_refused(why: shoal_cluster::state::kv::KvRefusal) -> RemoteError {
    let why = shoal_cluster::state::Refusal::Kv(why);
    RemoteError::typed(why.http_status(), &why)
}

/// `/v1/kv/{bucket}[/{key}]` ([`shoal_api::kv`]) for `direct`, the
/// caller's certificate: its own buckets, or with `owner=ROLE:ID` another
/// owner's if the ownership rule lets it (an admin; a client gets a typed
/// 403). Reads are linearizable unless `stale=true`; writes are
/// `Command::KvByCaller` on `direct`'s behalf, which the state machine
/// authorizes again when it applies them.
async fn kv(
    inner: &Inner,
    direct: &Owner,
    rest: &str,
    req: Request<Incoming>,
) -> Result<Response<ApiBody>, RemoteError> {
    use shoal_api::kv::{
        owner_text, parse_owner, percent_decode_bytes, show_key, KvDeleted, KvEntryView, KvKeyView,
        KvPage, KvWritten, BUCKET_BYTES_MAX, KEY_BYTES_MAX, KV_PAGE_MAX, VALUE_BYTES_MAX,
    };
    use shoal_cluster::state::kv::{KvOp, KvRefusal};
    use shoal_cluster::CommandResult;
    let method = req.method().clone();
    let query = req.uri().query().map(str::to_string);
    let query = query.as_deref();
    let (bucket, key) = match rest.split_once('/') {
        Some((b, k)) => (b, Some(k)),
        None => (rest, None),
    };
    let bucket = percent_decode_bytes(bucket)
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| RemoteError::new(400, "the bucket name is not percent-encoded UTF-8"))?;
    if bucket.is_empty() || bucket.len() > BUCKET_BYTES_MAX {
        return Err(kv_refused(KvRefusal::BadBucket {
            len: bucket.len(),
            max: BUCKET_BYTES_MAX,
        }));
    }
    let owner = match query_text(query, "owner")? {
        Some(text) => parse_owner(&text).map_err(|e| RemoteError::new(400, e.to_string()))?,
        None => direct.clone(),
    };
    shoal_pki::may_act(direct, &owner, &format!("bucket {bucket:?} of {owner}"))
        .map_err(crate::records::owners::forbidden)?;
    let not_allowed = |m: &Method, allowed: &str| {
        RemoteError::new(
            405,
            format!("method {m} is not allowed here (allowed: {allowed})"),
        )
    };
    let Some(key) = key else {
        if method != Method::GET {
            return Err(not_allowed(&method, "GET"));
        }
        let prefix = query_bytes(query, "prefix")?.unwrap_or_default();
        let after = query_bytes(query, "after")?;
        let limit = match query_text(query, "limit")? {
            None => KV_PAGE_MAX,
            Some(t) => match t.parse::<usize>() {
                Ok(n) if (1..=KV_PAGE_MAX).contains(&n) => n,
                _ => {
                    return Err(RemoteError::new(
                        400,
                        format!("limit must be 1 to {KV_PAGE_MAX}, not `{t}`"),
                    ))
                }
            },
        };
        let state = read_state(inner, query_flag(query, "stale")?).await?;
        let keys = state
            .kv
            .list(&owner, &bucket, &prefix, after.as_deref(), limit);
        return json_reply(&KvPage {
            owner: owner_text(&owner),
            complete: keys.len() < limit,
            keys: keys.iter().map(|k| KvKeyView::new(k)).collect(),
            bucket,
        });
    };
    let key = percent_decode_bytes(key)
        .ok_or_else(|| RemoteError::new(400, "the key is not percent-encoded"))?;
    if key.is_empty() || key.len() > KEY_BYTES_MAX {
        return Err(kv_refused(KvRefusal::BadKey {
            len: key.len(),
            max: KEY_BYTES_MAX,
        }));
    }
    let write = |op: KvOp| Command::KvByCaller {
        owner: owner.clone(),
        bucket: bucket.clone(),
        key: key.clone(),
        op,
        by: direct.clone(),
    };
    let unexpected =
        |r: CommandResult| RemoteError::new(500, format!("the key-value write answered {r:?}"));
    // Operators' writes share the log with guests': the same quota, on the
    // identity that asked.
    let take_rate = || {
        let rates = inner.link.kv_rates();
        rates.take(direct).map_err(|_| {
            RemoteError::typed(
                429,
                &shoal_api::kv::KvRateLimited {
                    who: owner_text(direct),
                    writes_per_s_max: rates.per_s_max(),
                },
            )
        })
    };
    match method {
        Method::GET => {
            let state = read_state(inner, query_flag(query, "stale")?).await?;
            match state.kv.get(&owner, &bucket, &key) {
                Some(e) => json_reply(&KvEntryView::new(
                    &owner, &bucket, &key, &e.value, e.version,
                )),
                None => Err(RemoteError::new(
                    404,
                    format!(
                        "no key {} in bucket {bucket:?} of {}",
                        show_key(&key),
                        owner_text(&owner)
                    ),
                )),
            }
        }
        Method::PUT => {
            take_rate()?;
            let value = shoal_net::read_body(req, VALUE_BYTES_MAX + 1).await?;
            if value.len() > VALUE_BYTES_MAX {
                return Err(kv_refused(KvRefusal::ValueTooLarge {
                    len: value.len(),
                    max: VALUE_BYTES_MAX,
                }));
            }
            let cmd = write(KvOp::Set {
                value: value.to_vec(),
            });
            let r = inner.raft.write_as(cmd, direct).await.map_err(write_err)?;
            match refused(r)? {
                CommandResult::KvVersion(version) => json_reply(&KvWritten {
                    owner: owner_text(&owner),
                    bucket: bucket.clone(),
                    key: shoal_api::kv::text_of(&key),
                    key_base64: shoal_api::kv::base64_encode(&key),
                    version,
                }),
                other => Err(unexpected(other)),
            }
        }
        Method::DELETE => {
            take_rate()?;
            let r = inner
                .raft
                .write_as(write(KvOp::Delete), direct)
                .await
                .map_err(write_err)?;
            match refused(r)? {
                CommandResult::KvDeleted(existed) => json_reply(&KvDeleted {
                    owner: owner_text(&owner),
                    bucket: bucket.clone(),
                    key: shoal_api::kv::text_of(&key),
                    key_base64: shoal_api::kv::base64_encode(&key),
                    existed,
                }),
                other => Err(unexpected(other)),
            }
        }
        m => Err(not_allowed(&m, "GET, PUT, DELETE")),
    }
}

/// `GET /v1/locks`: every lock held or waited for that `direct` may act
/// on (a client: its own owner's; an admin: all), with the holder's node
/// from the directory. Linearizable unless `stale=true`.
async fn locks(
    inner: &Inner,
    direct: &Owner,
    query: Option<&str>,
) -> Result<Vec<shoal_api::kv::LockSummary>, RemoteError> {
    let state = read_state(inner, query_flag(query, "stale")?).await?;
    let node_of = |pid: u64| {
        state
            .directory
            .get(&pid)
            .and_then(|e| state.nodes.get(&e.node))
            .map(|n| n.name.clone())
    };
    Ok(state
        .locks
        .iter()
        .filter(|(name, _)| shoal_pki::may_act(direct, &name.owner, "a lock").is_ok())
        .map(|(name, lock)| shoal_api::kv::LockSummary {
            owner: shoal_api::kv::owner_text(&name.owner),
            name: name.name.clone(),
            holder_pid: lock.holder.map(|h| Pid(h.pid)),
            holder_node: lock.holder.and_then(|h| node_of(h.pid)),
            token: lock.holder.map(|h| h.token),
            waiters: lock.waiters.iter().map(|&p| Pid(p)).collect(),
        })
        .collect())
}
