//! The cluster verbs of [`Client`]: nodes, join tokens, node removal and
//! cordons (see `crate::daemon::cluster_api` for the routes).

use super::{Client, ClientError};
use crate::daemon::cluster_api::{NodeSummary, TokenCreated, TokenRequest};
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

    /// `POST /v1/tokens`: a one-time join token (admin only).
    pub async fn create_token(&self, req: &TokenRequest) -> Result<TokenCreated, ClientError> {
        self.call_json(Method::POST, "/v1/tokens", req, CLUSTER_CALL_TIMEOUT)
            .await
    }

    /// `DELETE /v1/nodes/{name}`: remove a node for good (admin only).
    pub async fn remove_node(&self, name: &str) -> Result<Option<NodeSummary>, ClientError> {
        let path = format!("/v1/nodes/{}", encode_name(name));
        self.call(
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
        pid: crate::pid::Pid,
        to: Option<&str>,
    ) -> Result<crate::migrate::MigrateReport, ClientError> {
        let req = crate::daemon::cluster_api::MigrateRequest {
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
