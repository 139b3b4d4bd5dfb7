//! The cluster verbs of [`Client`]: nodes, join tokens, node removal,
//! cordons, certificate revocation and renewal (`shoal-daemon`'s `cluster_api` serves the routes).

use super::{Client, ClientError};
use crate::cluster::{CaTakeover, NodeSummary, RenewRequest, RevokeRequest, Revoked, TokenCreated};
use bytes::Bytes;
use hyper::Method;
use std::time::Duration;

/// Cluster calls are answered after a Raft write at most; allow for an
/// election on the way.
const CLUSTER_CALL_TIMEOUT: Duration = Duration::from_secs(30);

fn encode_name(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Client {
    /// `GET /v1/nodes`: every node of the cluster, with health and load.
    pub async fn nodes(&self) -> Result<Vec<NodeSummary>, ClientError> {
        self.call(
            Method::GET,
            "/v1/nodes",
            None,
            Bytes::new(),
            CLUSTER_CALL_TIMEOUT,
        )
        .await
    }

    /// `POST /v1/tokens`: a one-time join token for `role`, valid for
    /// `ttl_ms` (admin only). The token is made here and its record signed
    /// by `signer` (an admin); the node stores the hash only.
    pub async fn create_token(
        &self,
        role: shoal_pki::Role,
        ttl_ms: u64,
        signer: &shoal_pki::Signer,
    ) -> Result<TokenCreated, ClientError> {
        let (token, req, proof) = crate::cluster::signed_token_request(signer, role, ttl_ms)
            .map_err(|e| self.protocol(format!("cannot sign the request: {e}")))?;
        let created: TokenCreated = self
            .signed(&proof)
            .call_json(Method::POST, "/v1/tokens", &req, CLUSTER_CALL_TIMEOUT)
            .await?;
        Ok(crate::cluster::with_token(created, &token))
    }

    /// `POST /v1/certs/revoke`: revoke every certificate of an identity
    /// (admin only, signed by `signer`; a client gets a typed 403,
    /// [`ClientError::Forbidden`]).
    pub async fn revoke_certificate(
        &self,
        req: &RevokeRequest,
        signer: &shoal_pki::Signer,
    ) -> Result<Revoked, ClientError> {
        let proof = self.sign(
            signer,
            shoal_pki::Intent::RevokeIdentity {
                role: req.role,
                id: req.id.clone(),
            },
        )?;
        self.signed(&proof)
            .call_json(Method::POST, "/v1/certs/revoke", req, CLUSTER_CALL_TIMEOUT)
            .await
    }

    /// `POST /v1/ca/takeover`: make the node we talk to, called `node`,
    /// the CA node (admin only, signed by `signer`; it must hold the
    /// cluster's CA key, restored from a backup).
    pub async fn take_over_ca(
        &self,
        node: &str,
        signer: &shoal_pki::Signer,
    ) -> Result<CaTakeover, ClientError> {
        let proof = self.sign(
            signer,
            shoal_pki::Intent::TakeOverCa {
                node: node.to_string(),
            },
        )?;
        self.signed(&proof)
            .call_json(Method::POST, "/v1/ca/takeover", &(), CLUSTER_CALL_TIMEOUT)
            .await
    }

    fn sign(
        &self,
        signer: &shoal_pki::Signer,
        intent: shoal_pki::Intent,
    ) -> Result<shoal_pki::Proof, ClientError> {
        signer
            .sign(intent)
            .map_err(|e| self.protocol(format!("cannot sign the request: {e}")))
    }

    /// `POST /v1/certs/renew`: a new certificate for the key of the one we
    /// connect with (same role, id and generation), signed by the CA node
    /// (any node forwards it there).
    pub async fn renew_certificate(
        &self,
        req: &RenewRequest,
    ) -> Result<shoal_pki::IssuedCert, ClientError> {
        self.call_json(Method::POST, "/v1/certs/renew", req, CLUSTER_CALL_TIMEOUT)
            .await
    }

    /// `DELETE /v1/nodes/{name}`: remove a node for good (admin only,
    /// signed by `signer`).
    pub async fn remove_node(
        &self,
        name: &str,
        signer: &shoal_pki::Signer,
    ) -> Result<Option<NodeSummary>, ClientError> {
        let path = format!("/v1/nodes/{}", encode_name(name));
        let proof = self.sign(
            signer,
            shoal_pki::Intent::RemoveNode {
                node: name.to_string(),
            },
        )?;
        self.signed(&proof)
            .call(
                Method::DELETE,
                &path,
                None,
                Bytes::new(),
                CLUSTER_CALL_TIMEOUT,
            )
            .await
    }

    /// `POST /v1/nodes/{name}/cordon|uncordon` (admin only).
    pub async fn cordon(
        &self,
        name: &str,
        cordoned: bool,
    ) -> Result<Option<NodeSummary>, ClientError> {
        let verb = if cordoned { "cordon" } else { "uncordon" };
        let path = format!("/v1/nodes/{}/{verb}", encode_name(name));
        self.call(
            Method::POST,
            &path,
            None,
            Bytes::new(),
            CLUSTER_CALL_TIMEOUT,
        )
        .await
    }
}

impl Client {
    /// `POST /v1/processes/{pid}/migrate`: move a process to node `to` (by
    /// name) or to the scheduler's choice; answered once it runs there.
    pub async fn migrate(
        &self,
        pid: shoal_abi::pid::Pid,
        to: Option<&str>,
    ) -> Result<crate::cluster::MigrateReport, ClientError> {
        let req = crate::cluster::MigrateRequest {
            to: to.map(str::to_string),
        };
        self.call_json(
            Method::POST,
            &format!("/v1/processes/{pid}/migrate"),
            &req,
            MIGRATE_CALL_TIMEOUT,
        )
        .await
    }
}

/// A migration copies the whole memory before the freeze: allow for large
/// processes on slow links.
const MIGRATE_CALL_TIMEOUT: Duration = Duration::from_secs(300);

impl Client {
    /// `POST /v1/node/stop`: stop the node this client talks to, after
    /// moving its processes away unless `req.kill` (admin only).
    pub async fn stop_node(
        &self,
        req: &crate::cluster::StopRequest,
    ) -> Result<crate::cluster::StopAccepted, ClientError> {
        self.call_json(Method::POST, "/v1/node/stop", req, CLUSTER_CALL_TIMEOUT)
            .await
    }

    /// `POST /v1/nodes/{name}/drain`: cordon node `name` and start moving
    /// its processes away (admin only); answers the drain's first status.
    pub async fn drain_start(
        &self,
        name: &str,
        deadline: Option<Duration>,
    ) -> Result<crate::cluster::DrainStatus, ClientError> {
        let req = crate::cluster::DrainRequest {
            deadline_ms: deadline.map(|d| d.as_millis().min(u128::from(u64::MAX)) as u64),
        };
        let path = format!("/v1/nodes/{}/drain", encode_name(name));
        self.call_json(Method::POST, &path, &req, CLUSTER_CALL_TIMEOUT)
            .await
    }

    /// `GET /v1/nodes/{name}/drain`: the progress of node `name`'s latest
    /// drain (admin only).
    pub async fn drain_status(
        &self,
        name: &str,
    ) -> Result<crate::cluster::DrainStatus, ClientError> {
        let path = format!("/v1/nodes/{}/drain", encode_name(name));
        self.call(Method::GET, &path, None, Bytes::new(), CLUSTER_CALL_TIMEOUT)
            .await
    }

    /// `DELETE /v1/nodes/{name}/drain`: cancel node `name`'s running drain
    /// (admin only); answers once the moves in flight finished.
    pub async fn drain_cancel(
        &self,
        name: &str,
    ) -> Result<crate::cluster::DrainStatus, ClientError> {
        let path = format!("/v1/nodes/{}/drain", encode_name(name));
        // The node waits up to `CANCEL_WAIT` for the moves in flight.
        let timeout = CLUSTER_CALL_TIMEOUT + crate::cluster::CANCEL_WAIT;
        self.call(Method::DELETE, &path, None, Bytes::new(), timeout)
            .await
    }
}
