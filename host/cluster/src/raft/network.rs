//! Raft RPCs over an abstract [`RaftTransport`]: openraft's network traits,
//! JSON bodies, a hard timeout on every call, and a record of which peers
//! answered recently (to tell "no quorum" from other write failures).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::TypeConfig;
use crate::state::{MemberInfo, NodeId};

/// Which Raft RPC a request is. The transport routes by it (one HTTP path
/// per kind, see [`RpcKind::as_path`]); the receiver passes it back to
/// [`Raft::handle_rpc`](super::Raft::handle_rpc).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RpcKind {
    /// Log replication and heartbeats (leader → follower).
    AppendEntries,
    /// Leader election (candidate → voter).
    Vote,
    /// One chunk of a snapshot (leader → lagging follower).
    InstallSnapshot,
    /// A write forwarded to the leader.
    ClientWrite,
    /// A membership addition forwarded to the leader.
    AddMember,
    /// A membership removal forwarded to the leader.
    RemoveMember,
    /// "Have you a live leader?" — asked by a voter before it may start an
    /// election ([`super::prevote`]).
    PreVote,
    /// "Up to which index must I apply to read linearizably?" — a
    /// follower's ReadIndex request to the leader.
    ReadIndex,
}

impl RpcKind {
    /// Every kind, for routing tables.
    pub const ALL: [RpcKind; 8] = [
        RpcKind::AppendEntries,
        RpcKind::Vote,
        RpcKind::InstallSnapshot,
        RpcKind::ClientWrite,
        RpcKind::AddMember,
        RpcKind::RemoveMember,
        RpcKind::PreVote,
        RpcKind::ReadIndex,
    ];

    /// The HTTP path the real transport uses for this kind.
    pub fn as_path(self) -> &'static str {
        match self {
            RpcKind::AppendEntries => "/v1/raft/append",
            RpcKind::Vote => "/v1/raft/vote",
            RpcKind::InstallSnapshot => "/v1/raft/snapshot",
            RpcKind::ClientWrite => "/v1/raft/write",
            RpcKind::AddMember => "/v1/raft/add-member",
            RpcKind::RemoveMember => "/v1/raft/remove-member",
            RpcKind::PreVote => "/v1/raft/prevote",
            RpcKind::ReadIndex => "/v1/raft/read-index",
        }
    }

    /// The kind served at `path`, if any.
    pub fn from_path(path: &str) -> Option<RpcKind> {
        RpcKind::ALL.into_iter().find(|k| k.as_path() == path)
    }
}

/// A transport could not deliver a request or get its answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// No connection to the peer (down, partitioned, refused, TLS failure).
    #[error("node {target} is unreachable: {reason}")]
    Unreachable {
        /// The peer.
        target: NodeId,
        /// What failed.
        reason: String,
    },
    /// Connected, but the exchange failed (reset, bad status, too large).
    #[error("RPC to node {target} failed: {reason}")]
    Failed {
        /// The peer.
        target: NodeId,
        /// What failed.
        reason: String,
    },
}

/// Abstract transport so tests can use an in-memory network with
/// partitions, and the integrator plugs in the real mTLS HTTP/2 transport.
///
/// `rpc` sends `body` to node `target` at `addr` as request `kind` and
/// returns the response body, which the receiving side got from
/// [`Raft::handle_rpc`](super::Raft::handle_rpc). The caller bounds every
/// call with a timeout; an implementation should still not hang forever.
/// The receiving side must check that the peer is a cluster node (its
/// certificate has role `node`) before calling `handle_rpc`.
#[async_trait]
pub trait RaftTransport: Send + Sync + 'static {
    /// Deliver one request and return the response body.
    async fn rpc(
        &self,
        target: NodeId,
        addr: &str,
        kind: RpcKind,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, TransportError>;
}

/// When each peer last answered us or sent us a Raft message.
#[derive(Debug, Default)]
pub(crate) struct Reachability {
    seen: Mutex<BTreeMap<NodeId, Instant>>,
}

impl Reachability {
    /// `peer` talked to us just now.
    pub(crate) fn mark(&self, peer: NodeId) {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(peer, Instant::now());
    }

    /// When `peer` last talked to us (monotonic), if ever.
    pub(crate) fn last(&self, peer: NodeId) -> Option<Instant> {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&peer)
            .copied()
    }

    /// How long ago `peer` last talked to us, if ever.
    pub(crate) fn age(&self, peer: NodeId) -> Option<Duration> {
        self.last(peer).map(|t| t.elapsed())
    }

    /// Whether `peer` talked to us within `window`.
    pub(crate) fn recent(&self, peer: NodeId, window: Duration) -> bool {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&peer)
            .is_some_and(|t| t.elapsed() <= window)
    }
}

/// Makes one [`Network`] per peer.
pub(crate) struct NetworkFactory {
    pub(crate) transport: Arc<dyn RaftTransport>,
    pub(crate) reach: Arc<Reachability>,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Network;

    async fn new_client(&mut self, target: NodeId, node: &MemberInfo) -> Network {
        Network {
            target,
            addr: node.addr.clone(),
            transport: self.transport.clone(),
            reach: self.reach.clone(),
        }
    }
}

/// The connection to one peer, as openraft sees it.
pub(crate) struct Network {
    target: NodeId,
    addr: String,
    transport: Arc<dyn RaftTransport>,
    reach: Arc<Reachability>,
}

/// Why a call failed before a response body was decoded.
#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("RPC to node {target} timed out after {timeout_ms} ms")]
    Timeout { target: NodeId, timeout_ms: u128 },
    #[error("RPC to node {target}: bad message: {source}")]
    Codec {
        target: NodeId,
        source: serde_json::Error,
    },
}

impl Network {
    /// Send `req`, wait at most `ttl`, decode the peer's `Result`.
    async fn call<Req, Resp, E>(
        &self,
        kind: RpcKind,
        req: &Req,
        ttl: Duration,
    ) -> Result<Resp, RPCError<NodeId, MemberInfo, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let target = self.target;
        let body = serde_json::to_vec(req).map_err(|source| {
            RPCError::Network(NetworkError::new(&CallError::Codec { target, source }))
        })?;
        let sent =
            tokio::time::timeout(ttl, self.transport.rpc(target, &self.addr, kind, body)).await;
        let answer = match sent {
            Err(_) => {
                let e = CallError::Timeout {
                    target,
                    timeout_ms: ttl.as_millis(),
                };
                return Err(RPCError::Unreachable(Unreachable::new(&e)));
            }
            Ok(Err(e)) => {
                return Err(RPCError::Unreachable(Unreachable::new(&CallError::from(e))));
            }
            Ok(Ok(answer)) => answer,
        };
        self.reach.mark(target);
        let decoded: Result<Resp, RaftError<NodeId, E>> =
            serde_json::from_slice(&answer).map_err(|source| {
                RPCError::Network(NetworkError::new(&CallError::Codec { target, source }))
            })?;
        decoded.map_err(|e| RPCError::RemoteError(RemoteError::new(target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Network {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, MemberInfo, RaftError<NodeId>>>
    {
        self.call(RpcKind::AppendEntries, &rpc, option.hard_ttl())
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, MemberInfo, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(RpcKind::InstallSnapshot, &rpc, option.hard_ttl())
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, MemberInfo, RaftError<NodeId>>> {
        self.call(RpcKind::Vote, &rpc, option.hard_ttl()).await
    }
}
