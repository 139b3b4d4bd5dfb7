//! The client side of the control API, used by the `shoal` CLI.
//!
//! One connection per call to one node, over either kind of [`Endpoint`]:
//! the node's local Unix socket (HTTP/1.1; the socket's file permissions
//! are the authentication), or a node's TCP port with mutual TLS and HTTP/2
//! (a client certificate issued by the cluster CA is the authentication;
//! see [`shoal_pki::tls`]). Every call is bounded in time (see each
//! method) except following a log. Error answers come back as
//! [`ClientError::Api`] carrying the node's message, which the CLI prints
//! as `error: <message>`; transport failures name what went wrong (who
//! refused whose certificate, nothing listening, ...).

mod tls_client;

use super::types::{
    ErrorBody, ExitReport, LogFrameError, ModuleAdded, NameRequest, NodeStatus, ProcessSummary,
    RestoreRequest, Restored, SnapshotImported, SnapshotReport, SnapshotRequest, SpawnRequest,
    Spawned,
};
use super::{percent_encode, JSON_RESPONSE_BYTES_MAX, SNAPSHOT_FILE_BYTES_MAX};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::{header, Method, Request, Response};
use hyper_util::rt::TokioIo;
use shoal_abi::pid::Pid;
use shoal_pki::Rejection;
use shoal_registry::Sha256;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How long connecting to the node may take (for TLS: TCP connect and TLS
/// handshake together).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an ordinary call (request sent, answer read) may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// The authority sent in HTTP/2 requests (HTTP/2 needs one; the node does
/// not look at it, it goes by our certificate).
const TLS_AUTHORITY: &str = "shoal-node";

/// Why a call to the node failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket.
    #[error("no Shoal node is running at {} (start one with `shoal node start`)", .0.display())]
    NotRunning(PathBuf),
    /// The socket exists but this user may not use it.
    #[error(
        "permission denied on {}: only the user who started the node may control it",
        .0.display()
    )]
    PermissionDenied(PathBuf),
    /// No TCP connection could be made to the node's address.
    #[error("cannot reach node {addr}: {reason}")]
    Unreachable {
        /// The address, `host:port`.
        addr: String,
        /// Why, e.g. `connection refused`.
        reason: String,
    },
    /// We refused the certificate the node presented (another cluster's
    /// CA, expired, revoked, not a node certificate, ...).
    #[error("TLS handshake with {addr} failed: {}", tls_client::describe_rejection(.rejection))]
    NodeCertificateRefused {
        /// The node's address.
        addr: String,
        /// Why our verifier refused it.
        rejection: Rejection,
    },
    /// The node refused the certificate we presented.
    #[error("the node refused our certificate: {reason} (node {addr}, TLS alert {alert})")]
    CertificateRefusedByNode {
        /// The node's address.
        addr: String,
        /// The TLS alert the node sent, e.g. `CertificateUnknown`.
        alert: String,
        /// What the node's TLS alert says, in words.
        reason: String,
    },
    /// The TLS handshake failed for another reason (the port does not
    /// speak TLS, protocol mismatch, ...).
    #[error("TLS handshake with {addr} failed: {reason}")]
    Handshake {
        /// The node's address.
        addr: String,
        /// What went wrong.
        reason: String,
    },
    /// The node answered with an error.
    #[error("{message}")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The node's message.
        message: String,
    },
    /// The node answered `403 Forbidden` with the typed reason: the
    /// ownership rule or a role check refused.
    #[error("{0}")]
    Forbidden(shoal_pki::Forbidden),
    /// The node answered `410 Gone`: the process has exited.
    #[error("{message}")]
    Gone {
        /// The node's message.
        message: String,
        /// What it knows of the process's end.
        gone: crate::types::ProcessGone,
    },
    /// The call took longer than its bound.
    #[error("the node did not answer within {0:?}")]
    Timeout(Duration),
    /// The connection failed or the answer was not understood.
    #[error("talking to {node}: {message}")]
    Protocol {
        /// Which node ([`Client::describe`]).
        node: String,
        /// What went wrong.
        message: String,
    },
    /// A log stream could not be decoded.
    #[error(transparent)]
    LogStream(#[from] LogFrameError),
    /// Writing received output failed (e.g. a closed pipe).
    #[error("cannot write the output: {0}")]
    Output(std::io::Error),
    /// A followed process moved more often than a follower goes after it.
    #[error("stopped following process {pid} after {moves} moves")]
    TooManyMoves {
        /// The process.
        pid: Pid,
        /// The moves followed.
        moves: u32,
    },
}

impl ClientError {
    /// The HTTP status of an error answer from the node, if this is one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            ClientError::Gone { .. } => Some(410),
            ClientError::Forbidden(_) => Some(403),
            _ => None,
        }
    }
}

/// Where a node's control API is reached.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// The node's local Unix socket (HTTP/1.1).
    Unix(PathBuf),
    /// A node's TCP address with mutual TLS (HTTP/2).
    Tls {
        /// `host:port`.
        addr: String,
        /// Our certificate and the cluster trust (see
        /// [`shoal_pki::tls::client_config`]).
        config: Arc<rustls::ClientConfig>,
    },
}

/// A client of one node's control API.
#[derive(Debug, Clone)]
pub struct Client {
    endpoint: Endpoint,
    /// A signed request's proof, sent in the
    /// [`shoal_pki::proof::PROOF_HEADER`] ([`Client::signed`]).
    proof_header: Option<String>,
}

impl Client {
    /// A client of the node listening at `socket` (nothing is connected
    /// until the first call).
    pub fn new(socket: impl Into<PathBuf>) -> Client {
        Client {
            endpoint: Endpoint::Unix(socket.into()),
            proof_header: None,
        }
    }

    /// A client of the node at `addr` (`host:port`) over mutual TLS with
    /// `config` (nothing is connected until the first call). HTTP/2 is
    /// offered by ALPN if `config` offers no protocol of its own.
    pub fn tls(addr: impl Into<String>, config: Arc<rustls::ClientConfig>) -> Client {
        let config = if config.alpn_protocols.is_empty() {
            let mut c = (*config).clone();
            c.alpn_protocols = vec![b"h2".to_vec()];
            Arc::new(c)
        } else {
            config
        };
        Client {
            endpoint: Endpoint::Tls {
                addr: addr.into(),
                config,
            },
            proof_header: None,
        }
    }

    /// This client, sending `proof` with every request (the routes that
    /// write credentials want an admin's signed request).
    pub fn signed(&self, proof: &shoal_pki::Proof) -> Client {
        Client {
            endpoint: self.endpoint.clone(),
            proof_header: Some(shoal_pki::proof::to_header(proof)),
        }
    }

    /// Where this client connects.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The socket this client talks to, if it uses a Unix socket.
    pub fn socket(&self) -> Option<&Path> {
        match &self.endpoint {
            Endpoint::Unix(p) => Some(p),
            Endpoint::Tls { .. } => None,
        }
    }

    /// The node, for messages: `the node at <socket>` or `node <addr>`.
    pub fn describe(&self) -> String {
        match &self.endpoint {
            Endpoint::Unix(p) => format!("the node at {}", p.display()),
            Endpoint::Tls { addr, .. } => format!("node {addr}"),
        }
    }

    fn protocol(&self, message: impl std::fmt::Display) -> ClientError {
        ClientError::Protocol {
            node: self.describe(),
            message: message.to_string(),
        }
    }

    /// Connect, send one request, return the response head (body unread).
    async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<Response<Incoming>, ClientError> {
        match &self.endpoint {
            Endpoint::Unix(socket) => {
                let req = self.request(method, path_and_query, content_type, body)?;
                self.send_unix(socket, req).await
            }
            Endpoint::Tls { addr, config } => {
                let uri = format!("https://{TLS_AUTHORITY}{path_and_query}");
                let req = self.request(method, &uri, content_type, body)?;
                let mut conn = tls_client::connect(addr, config).await?;
                conn.sender.send_request(req).await.map_err(|e| {
                    tls_client::request_failed(addr, &conn.tls_errors, "the request", &e)
                })
            }
        }
    }

    fn request(
        &self,
        method: Method,
        uri: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, ClientError> {
        let mut req = Request::builder().method(method).uri(uri);
        if matches!(self.endpoint, Endpoint::Unix(_)) {
            req = req.header(header::HOST, "shoal-node");
        }
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        if let Some(proof) = &self.proof_header {
            req = req.header(shoal_pki::proof::PROOF_HEADER, proof.as_str());
        }
        req.body(Full::new(body))
            .map_err(|e| self.protocol(format!("cannot build the request: {e}")))
    }

    async fn send_unix(
        &self,
        socket: &Path,
        req: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, ClientError> {
        let stream =
            match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::UnixStream::connect(socket))
                .await
            {
                Err(_) => return Err(ClientError::Timeout(CONNECT_TIMEOUT)),
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    return Err(match e.kind() {
                        ErrorKind::NotFound | ErrorKind::ConnectionRefused => {
                            ClientError::NotRunning(socket.to_path_buf())
                        }
                        ErrorKind::PermissionDenied => {
                            ClientError::PermissionDenied(socket.to_path_buf())
                        }
                        _ => self.protocol(format!("cannot connect: {e}")),
                    })
                }
            };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.protocol(format!("handshake failed: {e}")))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        sender
            .send_request(req)
            .await
            .map_err(|e| self.protocol(format!("the request failed: {e}")))
    }

    /// Read a whole body of at most `max` bytes.
    async fn body(&self, resp: Response<Incoming>, max: u64) -> Result<Bytes, ClientError> {
        let limit = usize::try_from(max).unwrap_or(usize::MAX);
        match Limited::new(resp.into_body(), limit).collect().await {
            Ok(c) => Ok(c.to_bytes()),
            Err(e) if e.is::<LengthLimitError>() => {
                Err(self.protocol(format!("the answer is over {max} bytes")))
            }
            Err(e) => Err(self.protocol(format!("reading the answer failed: {e}"))),
        }
    }

    /// Turn a non-success response into [`ClientError::Api`].
    async fn check(&self, resp: Response<Incoming>) -> Result<Response<Incoming>, ClientError> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = self.body(resp, JSON_RESPONSE_BYTES_MAX).await?;
        let message = match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(ErrorBody {
                error,
                gone: Some(gone),
                ..
            }) if status.as_u16() == 410 => {
                return Err(ClientError::Gone {
                    message: error,
                    gone,
                })
            }
            Ok(ErrorBody {
                error,
                detail: Some(detail),
                ..
            }) if status.as_u16() == 403 => {
                match serde_json::from_value::<shoal_pki::Forbidden>(detail) {
                    Ok(f) => return Err(ClientError::Forbidden(f)),
                    Err(_) => error,
                }
            }
            Ok(e) => e.error,
            Err(_) => format!(
                "the node answered {status} ({})",
                String::from_utf8_lossy(&body[..body.len().min(200)]).trim()
            ),
        };
        Err(ClientError::Api {
            status: status.as_u16(),
            message,
        })
    }

    /// One bounded call with a JSON answer.
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path_and_query: &str,
        content_type: Option<&str>,
        body: Bytes,
        timeout: Duration,
    ) -> Result<T, ClientError> {
        let work = async {
            let resp = self
                .send(method, path_and_query, content_type, body)
                .await?;
            let resp = self.check(resp).await?;
            let bytes = self.body(resp, JSON_RESPONSE_BYTES_MAX).await?;
            serde_json::from_slice(&bytes)
                .map_err(|e| self.protocol(format!("cannot understand the answer: {e}")))
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| ClientError::Timeout(timeout))?
    }

    async fn call_json<T: serde::de::DeserializeOwned, B: serde::Serialize>(
        &self,
        method: Method,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_vec(body)
            .map_err(|e| self.protocol(format!("cannot encode the request: {e}")))?;
        self.call(
            method,
            path,
            Some("application/json"),
            Bytes::from(body),
            timeout,
        )
        .await
    }

    /// `GET /v1/node`: is a node there, and what is it.
    pub async fn status(&self) -> Result<NodeStatus, ClientError> {
        self.call(Method::GET, "/v1/node", None, Bytes::new(), CALL_TIMEOUT)
            .await
    }

    /// `POST /v1/modules`: store a module (validated by the node),
    /// optionally under `name`.
    pub async fn add_module(
        &self,
        wasm: Vec<u8>,
        name: Option<&str>,
    ) -> Result<ModuleAdded, ClientError> {
        let path = match name {
            Some(n) => format!("/v1/modules?name={}", percent_encode(n)),
            None => "/v1/modules".to_string(),
        };
        self.call(
            Method::POST,
            &path,
            Some("application/wasm"),
            Bytes::from(wasm),
            CALL_TIMEOUT,
        )
        .await
    }

    /// `PUT /v1/names/{name}`: name a module the node already has.
    pub async fn set_name(&self, name: &str, module: &str) -> Result<ModuleAdded, ClientError> {
        let path = format!("/v1/names/{}", percent_encode(name));
        let body = NameRequest {
            module: module.to_string(),
        };
        self.call_json(Method::PUT, &path, &body, CALL_TIMEOUT)
            .await
    }

    /// `POST /v1/processes`: start processes.
    pub async fn spawn(&self, req: &SpawnRequest) -> Result<Vec<Spawned>, ClientError> {
        self.call_json(Method::POST, "/v1/processes", req, CALL_TIMEOUT)
            .await
    }

    /// `GET /v1/processes`: the live processes.
    pub async fn processes(&self) -> Result<Vec<ProcessSummary>, ClientError> {
        self.call(
            Method::GET,
            "/v1/processes",
            None,
            Bytes::new(),
            CALL_TIMEOUT,
        )
        .await
    }

    /// `GET /v1/events`: what failover did to processes, oldest first.
    pub async fn events(&self) -> Result<Vec<crate::types::ProcessEvent>, ClientError> {
        self.call(Method::GET, "/v1/events", None, Bytes::new(), CALL_TIMEOUT)
            .await
    }

    /// `DELETE /v1/processes/{pid}`: kill a process; how it ended.
    pub async fn kill(&self, pid: Pid) -> Result<ExitReport, ClientError> {
        let path = format!("/v1/processes/{pid}");
        self.call(Method::DELETE, &path, None, Bytes::new(), CALL_TIMEOUT)
            .await
    }

    /// `POST /v1/processes/{pid}/snapshot`: capture a process (bounded by
    /// the request's wait plus [`CALL_TIMEOUT`]).
    pub async fn snapshot(
        &self,
        pid: Pid,
        req: &SnapshotRequest,
    ) -> Result<SnapshotReport, ClientError> {
        let path = format!("/v1/processes/{pid}/snapshot");
        let timeout = super::snapshot_wait(req.wait_max_ms) + CALL_TIMEOUT;
        self.call_json(Method::POST, &path, req, timeout).await
    }

    /// `GET /v1/snapshots/{id}`: a stored snapshot as file bytes.
    pub async fn export_snapshot(&self, id: &Sha256) -> Result<Vec<u8>, ClientError> {
        let path = format!("/v1/snapshots/{}", percent_encode(&id.to_string()));
        let work = async {
            let resp = self.send(Method::GET, &path, None, Bytes::new()).await?;
            let resp = self.check(resp).await?;
            Ok(self.body(resp, SNAPSHOT_FILE_BYTES_MAX).await?.to_vec())
        };
        tokio::time::timeout(CALL_TIMEOUT, work)
            .await
            .map_err(|_| ClientError::Timeout(CALL_TIMEOUT))?
    }

    /// `POST /v1/snapshots`: send a snapshot file; the node verifies and
    /// stores it and answers its id.
    pub async fn import_snapshot(&self, file: Vec<u8>) -> Result<Sha256, ClientError> {
        let r: SnapshotImported = self
            .call(
                Method::POST,
                "/v1/snapshots",
                Some(super::SNAPSHOT_CONTENT_TYPE),
                Bytes::from(file),
                CALL_TIMEOUT,
            )
            .await?;
        Ok(r.id)
    }

    /// `POST /v1/snapshots/{id}/restore`: start a process from a snapshot.
    pub async fn restore(
        &self,
        id: &Sha256,
        req: &RestoreRequest,
    ) -> Result<Restored, ClientError> {
        let path = format!("/v1/snapshots/{}/restore", percent_encode(&id.to_string()));
        self.call_json(Method::POST, &path, req, CALL_TIMEOUT).await
    }
}

mod cluster;
mod kv;
mod logs;
mod volumes;

pub use logs::FOLLOW_MOVES_MAX;
