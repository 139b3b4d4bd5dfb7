//! Raft's messages over the node's mTLS HTTP/2 connections.

use bytes::Bytes;
use shoal_cluster::{NodeId, RaftTransport, RpcKind, TransportError};
use shoal_net::{NetError, Peers};

/// [`RaftTransport`] on [`Peers`]: each RPC is a `POST` to the kind's path
/// (`/v1/raft/append`, …) on the peer's one multiplexed connection.
pub struct PeersTransport {
    peers: Peers,
}

impl PeersTransport {
    /// Raft over `peers`.
    pub fn new(peers: Peers) -> Self {
        PeersTransport { peers }
    }
}

#[async_trait::async_trait]
impl RaftTransport for PeersTransport {
    async fn rpc(
        &self,
        target: NodeId,
        addr: &str,
        kind: RpcKind,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, TransportError> {
        match self
            .peers
            .call(addr, kind.as_path(), Bytes::from(body))
            .await
        {
            Ok(b) => Ok(b.to_vec()),
            Err(e @ NetError::Remote { .. }) => Err(TransportError::Failed {
                target,
                reason: e.to_string(),
            }),
            Err(e) => Err(TransportError::Unreachable {
                target,
                reason: e.to_string(),
            }),
        }
    }
}
