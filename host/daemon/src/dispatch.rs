//! Every request to a node arrives here: who may call what, and where it
//! goes.
//!
//! | path | who (certificate role) | served by |
//! | --- | --- | --- |
//! | `POST /v1/lane` | node | [`shoal_net`] (messages, then [`Dispatch::deliver`]) |
//! | `POST /v1/join` | anyone (the join token authenticates) | [`super::join`] |
//! | `POST /v1/raft/*` | node | [`shoal_cluster::Raft::handle_rpc`] |
//! | `POST /v1/peer/*` | node | [`super::peer_api`]; `/v1/peer/renew`: [`super::certs`] |
//! | `POST /v1/certs/renew` | client, admin, node (its own certificate) | [`super::certs`], forwarded to the CA node |
//! | `POST /v1/cluster/members` | node (itself) | [`super::cluster_api`] |
//! | `POST /v1/tokens`, `DELETE /v1/nodes/{name}`, cordon | admin | [`super::cluster_api`] |
//! | everything else under `/v1/` | client, admin, node | [`super::cluster_api`], else [`crate::api::routes`] |
//!
//! A connection without a certificate reaches only `/v1/join`. Certificates
//! from another CA, expired, revoked or of an unknown role never get this far:
//! the TLS handshake refuses them and the server logs why. A certificate
//! revoked while its connection is open (a removed node, a revoked client)
//! loses the connection as soon as this node applies the revocation, and a
//! request that races that close is refused with a typed 403
//! ([`Handler::revocations`]).

use super::certs::{self, PATH_PEER_RENEW, PATH_RENEW};
use super::cluster_api;
use super::join::{self, JoinBody, PATH_JOIN};
use super::peer_api::PATH_PEER_JOIN;
use super::{encode_json, from_net, Inner};
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use shoal_cluster::RpcKind;
use shoal_net::{self, BoxBody, Caller, Delivery, Handler, LaneMessage, RemoteError};
use shoal_pki::Role;
use shoal_runtime::mailbox::{Message, PushError, Tag};
use shoal_runtime::pid::Pid;
use std::sync::Arc;
use std::time::Duration;

/// Largest join or renewal body.
pub const JOIN_BYTES_MAX: usize = 64 << 10;
/// Largest Raft RPC body (snapshots of the state included).
pub const RAFT_BYTES_MAX: usize = 64 << 20;
/// Largest peer request body.
pub const PEER_BYTES_MAX: usize = 1 << 20;
/// How long a message from another node waits for room in a full mailbox
/// before it is dropped (its lane is held up meanwhile).
pub const DELIVER_WAIT: Duration = Duration::from_secs(10);

/// The node's request handler.
pub struct Dispatch {
    inner: Arc<Inner>,
}

impl Dispatch {
    /// A handler for the daemon's parts.
    pub fn new(inner: Arc<Inner>) -> Self {
        Dispatch { inner }
    }
}

fn role_of(caller: &Caller) -> Option<Role> {
    caller.cert.as_ref().map(|c| c.role)
}

fn need(caller: &Caller, allowed: &[Role], what: &str) -> Result<(), RemoteError> {
    match role_of(caller) {
        None => Err(RemoteError::new(
            401,
            format!("{what} needs a client certificate of this cluster"),
        )),
        Some(r) if allowed.contains(&r) => Ok(()),
        Some(r) => {
            let id = caller.cert.as_ref().map(|c| c.id.as_str()).unwrap_or("");
            tracing::warn!(
                "refused {what} to {} {id:?} from {}",
                r.as_str(),
                caller.addr
            );
            Err(RemoteError::new(
                403,
                format!(
                    "{what} is not allowed with a {} certificate (needs {})",
                    r.as_str(),
                    allowed
                        .iter()
                        .map(|r| r.as_str())
                        .collect::<Vec<_>>()
                        .join(" or ")
                ),
            ))
        }
    }
}

impl Dispatch {
    async fn join(&self, req: Request<Incoming>) -> Result<Bytes, RemoteError> {
        let body = shoal_net::read_body(req, JOIN_BYTES_MAX).await?;
        self.admit_or_forward(body).await
    }

    async fn admit_or_forward(&self, body: Bytes) -> Result<Bytes, RemoteError> {
        let state = self.inner.raft.state();
        let ca_node = state
            .ca_node
            .ok_or_else(|| RemoteError::new(503, "the cluster has no CA node (it was removed)"))?;
        if ca_node == self.inner.me {
            let ca = self.inner.ca.as_ref().ok_or_else(|| {
                RemoteError::new(500, "this node should hold the CA but its key is missing")
            })?;
            let parsed: JoinBody = serde_json::from_slice(&body)
                .map_err(|e| RemoteError::new(400, format!("bad join request: {e}")))?;
            let answer = join::admit(&self.inner.raft, ca, parsed, self.inner.cert_ttl).await?;
            return encode_json(&answer);
        }
        let addr = state
            .member(ca_node)
            .map(|n| n.addr.clone())
            .ok_or_else(|| RemoteError::new(503, "the CA node is not a member"))?;
        self.inner
            .peers
            .call(&addr, PATH_PEER_JOIN, body)
            .await
            .map_err(|e| {
                from_net(
                    e,
                    &format!("the CA node ({addr}) cannot be reached to sign the join"),
                )
            })
    }

    /// The cluster id of the node behind a lane (0 if unknown).
    fn origin_of(&self, caller: &Caller) -> u64 {
        let Some(cert) = &caller.cert else { return 0 };
        self.inner
            .raft
            .state()
            .member_by_name(&cert.id)
            .map_or(0, |n| n.id)
    }

    async fn renew(&self, req: Request<Incoming>) -> Result<Bytes, RemoteError> {
        let body = shoal_net::read_body(req, JOIN_BYTES_MAX).await?;
        let renew: shoal_api::cluster::RenewRequest = serde_json::from_slice(&body)
            .map_err(|e| RemoteError::new(400, format!("bad renewal request: {e}")))?;
        // A node renews its own certificate, or forwards a client's: the CA
        // node checks the certificate and the CSR's key either way. Never
        // forwarded again (so two nodes that disagree on the CA node do not
        // bounce it).
        encode_json(&certs::renew_here(&self.inner, &renew)?)
    }

    async fn route(
        &self,
        caller: &Caller,
        req: Request<Incoming>,
    ) -> Result<Response<BoxBody>, RemoteError> {
        let path = req.uri().path().to_string();
        if path == PATH_JOIN && req.method() == Method::POST {
            return self.join(req).await.map(|b| shoal_net::reply(200, b));
        }
        if let Some(kind) = RpcKind::from_path(&path) {
            need(caller, &[Role::Node], "a Raft RPC")?;
            // The sender is the node its certificate names, whatever the
            // body claims.
            let sender = caller
                .cert
                .as_ref()
                .map(|c| c.id.clone())
                .unwrap_or_default();
            let body = shoal_net::read_body(req, RAFT_BYTES_MAX).await?;
            return match self.inner.raft.handle_rpc(kind, &body, &sender).await {
                Ok(b) => Ok(shoal_net::reply(200, Bytes::from(b))),
                Err(e) => Err(RemoteError::new(503, e.to_string())),
            };
        }
        if path.starts_with("/v1/peer/") {
            need(caller, &[Role::Node], "a node-to-node request")?;
            if path == PATH_PEER_JOIN {
                let body = shoal_net::read_body(req, JOIN_BYTES_MAX).await?;
                return self
                    .admit_or_forward(body)
                    .await
                    .map(|b| shoal_net::reply(200, b));
            }
            if path == PATH_PEER_RENEW {
                return self.renew(req).await.map(|b| shoal_net::reply(200, b));
            }
            if path.starts_with("/v1/peer/migrate/") {
                let body =
                    shoal_net::read_body(req, crate::migrate::wire::MIGRATE_BYTES_MAX).await?;
                return crate::migrate::target::handle(&self.inner.migration, &path, body)
                    .await
                    .map(|b| shoal_net::reply(200, b));
            }
            let body = shoal_net::read_body(req, PEER_BYTES_MAX).await?;
            return super::peer_api::handle(&self.inner.node, &self.inner.link, &path, body)
                .await
                .map(|b| shoal_net::reply(200, b));
        }
        if path == PATH_RENEW && req.method() == Method::POST {
            // Anyone renews its own certificate, through any node.
            need(caller, &Role::ALL, "certificate renewal")?;
            let body = shoal_net::read_body(req, JOIN_BYTES_MAX).await?;
            let renew: shoal_api::cluster::RenewRequest = serde_json::from_slice(&body)
                .map_err(|e| RemoteError::new(400, format!("bad renewal request: {e}")))?;
            return certs::renew_own(&self.inner, caller, &renew)
                .await
                .map(|b| shoal_net::reply(200, b));
        }
        need(caller, &Role::ALL, "the control API")?;
        cluster_api::route(&self.inner, caller, req).await
    }
}

#[async_trait::async_trait]
impl Handler for Dispatch {
    fn revocations(&self) -> Option<shoal_pki::SharedRevocations> {
        Some(self.inner.trust.revocations().clone())
    }

    async fn request(&self, caller: &Caller, req: Request<Incoming>) -> Response<BoxBody> {
        match self.route(caller, req).await {
            Ok(r) => r,
            Err(e) => shoal_net::error_reply(&e),
        }
    }

    async fn deliver(&self, caller: &Caller, msg: LaneMessage) -> Delivery {
        if msg.from == shoal_runtime::node::CONTROL_SENDER.0 {
            crate::migrate::on_control(&self.inner.migration, Pid(msg.to), &msg.data).await;
            return Delivery::Delivered;
        }
        // Which node sent it matters only while a process is arriving here.
        let origin = if self.inner.node.router().has_handoffs() {
            self.origin_of(caller)
        } else {
            0
        };
        let Some(tag) = Tag::from_wire(msg.tag.kind, msg.tag.reference) else {
            tracing::warn!(
                "dropped a message of unknown kind {} from pid {} to pid {}",
                msg.tag.kind,
                msg.from,
                msg.to
            );
            return Delivery::Dropped;
        };
        let message = Message {
            seq: msg.tag.seq,
            life: msg.tag.life,
            sender: Pid(msg.from),
            data: msg.data.to_vec(),
            tag,
        };
        match self
            .inner
            .node
            .router()
            .deliver_remote(origin, Pid(msg.to), message, DELIVER_WAIT)
            .await
        {
            Ok(()) => Delivery::Delivered,
            Err(PushError::Closed) => Delivery::NoSuchProcess,
            Err(PushError::Full) => {
                tracing::warn!(
                    "dropped a message from pid {} to pid {}: its mailbox stayed full for {} s",
                    msg.from,
                    msg.to,
                    DELIVER_WAIT.as_secs()
                );
                Delivery::Dropped
            }
        }
    }
}
