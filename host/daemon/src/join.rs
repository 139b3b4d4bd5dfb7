//! Joining a cluster, both ends.
//!
//! 1. The joiner generates its key locally and sends `POST /v1/join` to any
//!    node with a [`JoinBody`]: the one-time token, a CSR, its name, address
//!    and labels. It has no certificate yet, so this is the one route a
//!    connection without a client certificate may use; the joiner checks the
//!    server against the CA pin from the join command (`--ca-hash`).
//! 2. A node that does not hold the CA key forwards the body to the one
//!    that does (`POST /v1/peer/join`, node-to-node mTLS).
//! 3. The CA node spends the token through Raft (`RedeemToken`: atomic, so a
//!    token works once cluster-wide even if two joins race), admits the node
//!    (`AddNode`, which assigns its id) and signs the CSR for the token's
//!    role and the requested name, short-lived ([`NODE_CERT_TTL`]).
//! 4. The joiner checks the answer (pin, its key, its name), saves key and
//!    certificate (key mode 0600), starts its Raft and listener, and asks to
//!    be made a voter (`POST /v1/cluster/members`, now with its certificate).
//!
//! Renewal: a node renews its certificate from 2/3 of its lifetime on by
//! sending its certificate and a CSR for its key to the CA node
//! (`POST /v1/peer/renew`); see [`super::tasks`] and [`crate::certs`] (what
//! the CA node checks: membership, revocation, the key).
//!
//! Generations: the CA signs a joiner's certificate at its identity's
//! generation in the applied revocation list, so a name that was removed (or
//! revoked) and joins again gets a new generation, while certificates from
//! before the removal stay revoked.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use shoal_cluster::{Command, CommandResult, NodeId, Raft, Refusal};
use shoal_net::{NetConfig, NetError, Peers, RemoteError};
use shoal_pki::{self, CaPin, ClusterCa, Identity, JoinRequest, JoinResponse, Role, Validity};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// The join route (no client certificate needed).
pub const PATH_JOIN: &str = "/v1/join";
/// Certificate renewal on the CA node ([`crate::certs`]).
pub use crate::certs::PATH_PEER_RENEW;
/// Lifetime of node certificates: short, renewed from 2/3 of it on.
pub const NODE_CERT_TTL: Duration = Duration::from_secs(24 * 3600);
/// Longest a join may take end to end.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Joiner → any node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinBody {
    /// Token, CSR and name.
    pub request: JoinRequest,
    /// Where the joiner listens (`host:port`).
    pub addr: String,
    /// Its labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// CA node → joiner.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinAnswer {
    /// The certificate and the CA certificate.
    pub response: JoinResponse,
    /// The joiner's node id (for a node token; 0 for a client token).
    pub node_id: NodeId,
}

/// Renewal request: the certificate to renew and a CSR for its key.
pub type RenewBody = shoal_api::cluster::RenewRequest;

/// Why this node could not join a cluster.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// `--ca-hash` is not a CA pin.
    #[error("--ca-hash {given:?}")]
    Pin {
        /// What was given.
        given: String,
        /// Why it is not a pin.
        source: shoal_pki::PkiError,
    },
    /// Preparing the request or checking the answer failed.
    #[error(transparent)]
    Protocol(#[from] shoal_pki::join::JoinError),
    /// A PKI step (TLS set-up, saving the identity) failed.
    #[error(transparent)]
    Pki(#[from] shoal_pki::PkiError),
    /// The cluster answered with a refusal.
    #[error("the cluster refused the join ({status}): {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Its reason.
        message: String,
    },
    /// The node given could not be reached.
    #[error("cannot join through {addr}")]
    Unreachable {
        /// The address tried.
        addr: String,
        /// Why.
        source: NetError,
    },
    /// The join request could not be encoded.
    #[error("cannot encode the join request")]
    Encode(#[source] serde_json::Error),
    /// The node's answer is not a join answer.
    #[error("the node's join answer is malformed")]
    Malformed(#[source] serde_json::Error),
}

/// Joiner side: run the join against `addr`, save the identity into
/// `data_dir`, return it with the assigned node id.
pub async fn join(
    data_dir: &Path,
    addr: &str,
    token: &str,
    ca_pin: &str,
    name: &str,
    my_addr: &str,
    labels: &BTreeMap<String, String>,
) -> Result<(Identity, NodeId), JoinError> {
    let pin: CaPin = ca_pin.parse().map_err(|source| JoinError::Pin {
        given: ca_pin.to_string(),
        source,
    })?;
    let (request, key_pem) = shoal_pki::join::prepare_join(token, name)?;
    let (tls, _pinned) = shoal_pki::join::pinned_client_config(pin)?;
    let peers = Peers::new(tls, NetConfig::default());
    let body = JoinBody {
        request,
        addr: my_addr.to_string(),
        labels: labels.clone(),
    };
    let answer = peers
        .call_with_timeout(
            addr,
            PATH_JOIN,
            Bytes::from(serde_json::to_vec(&body).map_err(JoinError::Encode)?),
            JOIN_TIMEOUT,
        )
        .await
        .map_err(|e| match e {
            NetError::Remote {
                status, message, ..
            } => JoinError::Refused { status, message },
            source => JoinError::Unreachable {
                addr: addr.to_string(),
                source,
            },
        })?;
    let answer: JoinAnswer = serde_json::from_slice(&answer).map_err(JoinError::Malformed)?;
    let identity = shoal_pki::join::finish_join(
        &answer.response,
        &key_pem,
        &pin,
        name,
        shoal_pki::now_unix_ms(),
    )?;
    Identity::save_pem(
        data_dir,
        &answer.response.cert.cert_pem,
        &key_pem,
        &answer.response.ca_pem,
    )?;
    Ok((identity, answer.node_id))
}

fn refused(status: u16, why: impl std::fmt::Display) -> RemoteError {
    RemoteError::new(status, why.to_string())
}

/// How long the CA node waits to apply its own log before it refuses a
/// token id it does not know.
const TOKEN_INDEX_WAIT: Duration = Duration::from_secs(2);

/// CA side: check the request, spend the token, admit the node, sign its
/// CSR.
///
/// Everything that can be checked without a write is checked first (the
/// name, the CSR, the token against the applied state, a node name held by
/// a live member), so a malformed or unauthorized request writes nothing to
/// Raft and spends no token.
pub async fn admit(
    raft: &Raft,
    ca: &ClusterCa,
    body: JoinBody,
    ttl: Duration,
) -> Result<JoinAnswer, RemoteError> {
    shoal_pki::role::validate_id(&body.request.node_name).map_err(|e| refused(400, e))?;
    shoal_pki::ca::check_csr(&body.request.csr_pem).map_err(|e| refused(400, e))?;
    let now = shoal_pki::now_unix_ms();
    let token = body.request.token.as_str();
    let token_id = token.split('.').next().unwrap_or_default();
    let state = match raft.state() {
        s if s.tokens.get(token_id).is_some() => s,
        // A token created through another node a moment ago may not be
        // applied here yet: catch up with this node's log (bounded, and
        // independent of what the request claims), then look again.
        _ => {
            raft.caught_up(TOKEN_INDEX_WAIT).await;
            raft.state()
        }
    };
    let role = state.tokens.check(token, now).map_err(|e| {
        tracing::warn!("join of {:?} refused: {e}", body.request.node_name);
        RemoteError::typed(403, &Refusal::Token(e))
    })?;
    if role == Role::Node {
        if let Some(holder) = state.member_by_name(&body.request.node_name) {
            let why = Refusal::NodeNameTaken {
                name: holder.name.clone(),
                id: holder.id,
            };
            tracing::warn!("join refused: {why}");
            return Err(RemoteError::typed(why.http_status(), &why));
        }
    }
    let role = match raft
        .write(Command::RedeemToken {
            token: token.to_string(),
            now_ms: now,
        })
        .await
    {
        Ok(CommandResult::Role(r)) => r,
        Ok(CommandResult::Refused(why)) => {
            tracing::warn!("join of {:?} refused: {why}", body.request.node_name);
            return Err(RemoteError::typed(403, &why));
        }
        Ok(other) => return Err(refused(500, format!("unexpected answer {other:?}"))),
        Err(e) => return Err(refused(503, e)),
    };
    let mut node_id = 0;
    if role == Role::Node {
        node_id = match raft
            .write(Command::AddNode {
                name: body.request.node_name.clone(),
                addr: body.addr.clone(),
                labels: body.labels.clone(),
                now_ms: now,
            })
            .await
        {
            Ok(CommandResult::NodeId(id)) => id,
            Ok(CommandResult::Refused(why)) => {
                return Err(RemoteError::typed(why.http_status(), &why))
            }
            Ok(other) => return Err(refused(500, format!("unexpected answer {other:?}"))),
            Err(e) => return Err(refused(503, e)),
        };
    }
    // The identity's generation as applied now (after the token was spent
    // and the node added): a name revoked before is admitted at its new
    // generation.
    let generation = raft
        .state()
        .revocations
        .generation(role, &body.request.node_name);
    let cert = ca
        .sign_csr_for(
            &body.request.csr_pem,
            role,
            &body.request.node_name,
            generation,
            Validity::for_ttl(now, ttl),
        )
        .map_err(|e| refused(400, e))?;
    tracing::info!(
        "admitted {} {:?} (id {node_id}, certificate serial {})",
        role.as_str(),
        body.request.node_name,
        cert.serial.as_hex()
    );
    Ok(JoinAnswer {
        response: JoinResponse {
            expires_unix_ms: cert.not_after_unix_ms,
            cert,
            ca_pem: ca.ca_cert_pem().to_string(),
        },
        node_id,
    })
}

/// Load the CA if this node's data dir holds it.
pub fn local_ca(data_dir: &Path) -> Option<ClusterCa> {
    ClusterCa::load(data_dir).ok()
}
