//! The client side: [`Peers`], a pool of one HTTP/2 connection per peer
//! address (created lazily, shared by every caller, re-created with backoff
//! when it dies), unary calls, and the message lanes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rand::Rng;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use super::body::{error_detail, error_message, read_limited, ReadError};
use super::lane::{self, Lane, LaneBacklog, LaneError};
use super::replay::Replay;
use super::{classify_hyper_error, tls_reason, BoxBody, LaneMessage, NetConfig, NetError};

/// The dead-letter hook: called with each pid a peer reported missing.
pub type DeadLetterHook = Arc<dyn Fn(u64) + Send + Sync>;

/// Counters of a [`Peers`] pool (monotonic since it was created).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// Connections established.
    pub connects: u64,
    /// Of those, connections to a peer we had been connected to before.
    pub reconnects: u64,
    /// Connect attempts that failed (TCP, TLS, HTTP/2 or timeout).
    pub connect_failures: u64,
    /// Failures that were TLS: our verifier refused the peer, or the peer
    /// refused our certificate.
    pub tls_failures: u64,
    /// Unary calls made.
    pub calls: u64,
    /// Unary calls that failed (any [`NetError`], remote errors included).
    pub call_failures: u64,
    /// Lane messages accepted by `send`.
    pub frames_queued: u64,
    /// Lane frames written to a stream (resends included).
    pub frames_sent: u64,
    /// Lane frames written again after a reconnect.
    pub frames_resent: u64,
    /// Lane frames acked by peers.
    pub frames_acked: u64,
    /// `send` calls refused with `LaneFull`.
    pub lane_full: u64,
    /// Dead frames received (pids reported missing).
    pub dead_letters: u64,
    /// Lane streams opened.
    pub lane_streams_opened: u64,
    /// Lane streams (or their connection attempts) that failed.
    pub lane_stream_failures: u64,
}

/// Atomic twins of [`PeerStats`].
#[derive(Debug, Default)]
pub(crate) struct PeerCounters {
    pub(crate) connects: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    pub(crate) connect_failures: AtomicU64,
    pub(crate) tls_failures: AtomicU64,
    pub(crate) calls: AtomicU64,
    pub(crate) call_failures: AtomicU64,
    pub(crate) frames_queued: AtomicU64,
    pub(crate) frames_sent: AtomicU64,
    pub(crate) frames_resent: AtomicU64,
    pub(crate) frames_acked: AtomicU64,
    pub(crate) lane_full: AtomicU64,
    pub(crate) dead_letters: AtomicU64,
    pub(crate) lane_streams_opened: AtomicU64,
    pub(crate) lane_stream_failures: AtomicU64,
}

impl PeerCounters {
    fn snapshot(&self) -> PeerStats {
        PeerStats {
            connects: self.connects.load(Relaxed),
            reconnects: self.reconnects.load(Relaxed),
            connect_failures: self.connect_failures.load(Relaxed),
            tls_failures: self.tls_failures.load(Relaxed),
            calls: self.calls.load(Relaxed),
            call_failures: self.call_failures.load(Relaxed),
            frames_queued: self.frames_queued.load(Relaxed),
            frames_sent: self.frames_sent.load(Relaxed),
            frames_resent: self.frames_resent.load(Relaxed),
            frames_acked: self.frames_acked.load(Relaxed),
            lane_full: self.lane_full.load(Relaxed),
            dead_letters: self.dead_letters.load(Relaxed),
            lane_streams_opened: self.lane_streams_opened.load(Relaxed),
            lane_stream_failures: self.lane_stream_failures.load(Relaxed),
        }
    }
}

/// What lane drivers share with the pool without keeping it alive.
#[derive(Default)]
pub(crate) struct Shared {
    pub(crate) counters: PeerCounters,
    /// Notified whenever any lane frees room (acks) or closes: what a
    /// sender that was told `LaneFull` by a layer above the lane (the
    /// directory picks the lane) waits on. See [`Peers::room`].
    pub(crate) room: Arc<tokio::sync::Notify>,
    hook: RwLock<Option<DeadLetterHook>>,
    /// The node name expected at each address ([`Peers::pin`]).
    pins: RwLock<HashMap<String, String>>,
    /// The revocation list the peers' server certificates answer to (see
    /// [`Peers::watch_revocations`]).
    revocations: RwLock<Option<shoal_pki::SharedRevocations>>,
}

impl Shared {
    /// The node name pinned at `addr`, if any.
    pub(crate) fn pinned(&self, addr: &str) -> Option<String> {
        self.pins.read().ok().and_then(|p| p.get(addr).cloned())
    }

    /// Hand a missing pid to the hook, if one is set.
    pub(crate) fn dead_letter(&self, pid: u64) {
        let hook = self.hook.read().ok().and_then(|h| h.clone());
        if let Some(hook) = hook {
            hook(pid);
        }
    }
}

/// One peer's connection and its backoff.
#[derive(Default)]
struct Slot {
    sender: Option<SendRequest<BoxBody>>,
    /// The node name the open connection's server certificate carries.
    peer_name: Option<String>,
    failures: u32,
    retry_at: Option<Instant>,
    ever_connected: bool,
}

type SharedSlot = Arc<tokio::sync::Mutex<Slot>>;

/// The pool proper. Lane drivers hold it weakly: dropping the last
/// [`Peers`] closes every lane.
pub(crate) struct Inner {
    connector: TlsConnector,
    config: NetConfig,
    slots: Mutex<HashMap<String, SharedSlot>>,
    lanes: Mutex<HashMap<String, Arc<Lane>>>,
    shared: Arc<Shared>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(lanes) = self.lanes.get_mut() {
            for lane in lanes.values() {
                lane.close();
                self.shared.room.notify_waiters();
            }
        }
    }
}

/// The delay before connect attempt number `failures + 1`:
/// `backoff_initial_ms · 2^(failures-1)`, capped at `backoff_max_ms`, ±25 %
/// jitter.
pub(crate) fn backoff_ms(config: &NetConfig, failures: u32) -> u64 {
    let doublings = failures.saturating_sub(1).min(30);
    let base = config
        .backoff_initial_ms
        .saturating_mul(1u64 << doublings)
        .min(config.backoff_max_ms)
        .max(1);
    let spread = base / 4;
    rand::thread_rng().gen_range(base - spread..=base + spread)
}

impl Inner {
    fn slot(&self, addr: &str) -> SharedSlot {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.entry(addr.to_string()).or_default().clone()
    }

    /// A live connection to `addr`: the shared one, or a new one (after
    /// waiting out the backoff of earlier failures).
    pub(crate) async fn sender(&self, addr: &str) -> Result<SendRequest<BoxBody>, NetError> {
        let slot = self.slot(addr);
        let mut s = slot.lock().await;
        let pinned = self.shared.pinned(addr);
        if let Some(tx) = &s.sender {
            // A connection made before the pin (or under another one) is
            // checked again by reconnecting.
            let same_peer = pinned.is_none() || pinned == s.peer_name;
            if !tx.is_closed() && same_peer {
                return Ok(tx.clone());
            }
            s.sender = None;
        }
        if let Some(at) = s.retry_at {
            tokio::time::sleep_until(at).await;
        }
        let timeout_ms = self.config.connect_timeout_ms;
        let attempt = tokio::time::timeout(
            Duration::from_millis(timeout_ms),
            self.connect(addr, pinned.as_deref()),
        );
        let result = match attempt.await {
            Ok(Ok((tx, name))) => {
                s.peer_name = Some(name);
                Ok(tx)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(NetError::ConnectTimeout {
                addr: addr.to_string(),
                timeout_ms,
            }),
        };
        match result {
            Ok(tx) => {
                self.shared.counters.connects.fetch_add(1, Relaxed);
                if s.ever_connected {
                    self.shared.counters.reconnects.fetch_add(1, Relaxed);
                }
                s.ever_connected = true;
                s.failures = 0;
                s.retry_at = None;
                s.sender = Some(tx.clone());
                Ok(tx)
            }
            Err(e) => {
                self.shared.counters.connect_failures.fetch_add(1, Relaxed);
                if matches!(e, NetError::Tls { .. }) {
                    self.shared.counters.tls_failures.fetch_add(1, Relaxed);
                }
                Self::fail(&mut s, &self.config);
                Err(e)
            }
        }
    }

    fn fail(s: &mut Slot, config: &NetConfig) {
        s.sender = None;
        s.failures = s.failures.saturating_add(1);
        s.retry_at = Some(Instant::now() + Duration::from_millis(backoff_ms(config, s.failures)));
    }

    /// A new connection to `addr` and the node name its server
    /// certificate carries (empty if it carries none); refused right after
    /// the TLS handshake when that is not `pinned`.
    async fn connect(
        &self,
        addr: &str,
        pinned: Option<&str>,
    ) -> Result<(SendRequest<BoxBody>, String), NetError> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|source| NetError::Connect {
                addr: addr.to_string(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let tls = self
            .connector
            .connect(shoal_pki::tls::placeholder_server_name(), tcp)
            .await
            .map_err(|e| NetError::Tls {
                addr: addr.to_string(),
                reason: tls_reason(&e).unwrap_or_else(|| e.to_string()),
            })?;
        let server_cert = shoal_pki::tls::peer_info(tls.get_ref().1.peer_certificates());
        let server_name = server_cert
            .as_ref()
            .filter(|c| c.role == shoal_pki::Role::Node)
            .map(|c| c.id.clone())
            .unwrap_or_default();
        if let Some(expected) = pinned.filter(|p| *p != server_name) {
            return Err(NetError::WrongPeer {
                addr: addr.to_string(),
                expected: expected.to_string(),
                found: server_name,
            });
        }
        // Wait for the server's first bytes: a refused client certificate
        // surfaces here (see `replay`).
        let tls = Replay::first_bytes(tls, 4096)
            .await
            .map_err(|e| NetError::Tls {
                addr: addr.to_string(),
                reason: tls_reason(&e).unwrap_or_else(|| e.to_string()),
            })?;
        let cfg = &self.config;
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .initial_stream_window_size(cfg.stream_window_bytes)
            .initial_connection_window_size(cfg.connection_window_bytes)
            .max_frame_size(cfg.http2_frame_bytes_max)
            .max_header_list_size(cfg.header_bytes_max)
            .keep_alive_interval(Duration::from_millis(cfg.keepalive_interval_ms))
            .keep_alive_timeout(Duration::from_millis(cfg.keepalive_timeout_ms))
            .keep_alive_while_idle(true);
        let (tx, conn) = builder
            .handshake(TokioIo::new(tls))
            .await
            .map_err(|e| classify_hyper_error(addr, &e))?;
        let peer = addr.to_string();
        let revocations = self.shared.revocations.read().ok().and_then(|r| r.clone());
        // A peer whose certificate is revoked while connected (a removed
        // node) is talked to no more: the connection is dropped.
        let revoked = super::until_revoked(revocations, server_cert);
        tokio::spawn(async move {
            tokio::select! {
                r = conn => {
                    if let Err(e) = r {
                        tracing::debug!("connection to {peer} ended: {e}");
                    }
                }
                (cert, why) = revoked => {
                    tracing::info!(
                        "closed connection to {peer} ({}/{}): its certificate was revoked ({})",
                        cert.role,
                        cert.id,
                        why.reason
                    );
                }
            }
        });
        Ok((tx, server_name))
    }
}

/// The node's connections to its peers: unary calls and message lanes.
/// Cheap to clone (one shared pool).
#[derive(Clone)]
pub struct Peers {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peers")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Peers {
    /// A pool presenting `tls` (see [`shoal_pki::tls::client_config`]).
    pub fn new(tls: Arc<rustls::ClientConfig>, config: NetConfig) -> Peers {
        Peers {
            inner: Arc::new(Inner {
                connector: TlsConnector::from(tls),
                config,
                slots: Mutex::new(HashMap::new()),
                lanes: Mutex::new(HashMap::new()),
                shared: Arc::new(Shared::default()),
            }),
        }
    }

    /// Close every connection (open or future) to a peer whose server
    /// certificate `revocations` revokes, as soon as the list changes.
    /// Connections opened before this call are not watched.
    pub fn watch_revocations(&self, revocations: shoal_pki::SharedRevocations) {
        if let Ok(mut r) = self.inner.shared.revocations.write() {
            *r = Some(revocations);
        }
    }

    /// Pin the node name expected at each address (`addr → name`, the
    /// cluster's records of its live members), replacing earlier pins.
    /// A connection is used only if the server certificate met at its
    /// address names the pinned node ([`NetError::WrongPeer`] otherwise);
    /// an open connection whose peer differs from a new pin is checked again
    /// by reconnecting. Addresses without a pin (a seed dialled to join) are
    /// served by any node of the cluster.
    pub fn pin(&self, pins: HashMap<String, String>) {
        if let Ok(mut p) = self.inner.shared.pins.write() {
            *p = pins;
        }
    }

    /// Unary call `POST https://<addr><path>` with the default timeout
    /// ([`NetConfig::request_timeout_ms`]). Non-2xx → [`NetError::Remote`].
    pub async fn call(&self, addr: &str, path: &str, body: Bytes) -> Result<Bytes, NetError> {
        let timeout = Duration::from_millis(self.inner.config.request_timeout_ms);
        self.call_with_timeout(addr, path, body, timeout).await
    }

    /// [`call`](Self::call) with its own timeout (connecting included).
    pub async fn call_with_timeout(
        &self,
        addr: &str,
        path: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, NetError> {
        self.inner.shared.counters.calls.fetch_add(1, Relaxed);
        let result = match tokio::time::timeout(timeout, self.call_inner(addr, path, body)).await {
            Ok(r) => r,
            Err(_) => Err(NetError::Timeout {
                addr: addr.to_string(),
                path: path.to_string(),
                timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            }),
        };
        if result.is_err() {
            self.inner
                .shared
                .counters
                .call_failures
                .fetch_add(1, Relaxed);
        }
        result
    }

    async fn call_inner(&self, addr: &str, path: &str, body: Bytes) -> Result<Bytes, NetError> {
        let cfg = &self.inner.config;
        if body.len() > cfg.request_bytes_max {
            return Err(NetError::RequestTooLarge {
                bytes: body.len(),
                bytes_max: cfg.request_bytes_max,
            });
        }
        let bad = |reason: String| NetError::BadAddress {
            addr: addr.to_string(),
            reason,
        };
        if !path.starts_with('/') {
            return Err(bad(format!("path {path:?} must start with '/'")));
        }
        let uri: hyper::Uri = format!("https://{addr}{path}")
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| bad(e.to_string()))?;
        let req = hyper::Request::post(uri)
            .body(Full::new(body).boxed())
            .map_err(|e| bad(e.to_string()))?;
        let mut sender = self.inner.sender(addr).await?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| classify_hyper_error(addr, &e))?;
        let status = resp.status();
        let bytes = read_limited(resp.into_body(), cfg.response_bytes_max)
            .await
            .map_err(|e| match e {
                ReadError::TooLarge => NetError::ResponseTooLarge {
                    addr: addr.to_string(),
                    bytes_max: cfg.response_bytes_max,
                },
                ReadError::Body(reason) => NetError::Http {
                    addr: addr.to_string(),
                    reason: format!("reading the response: {reason}"),
                },
            })?;
        if status.is_success() {
            Ok(bytes)
        } else {
            Err(NetError::Remote {
                status: status.as_u16(),
                message: error_message(&bytes),
                detail: error_detail(&bytes),
            })
        }
    }

    /// Queue a message on the lane to `addr` (opened on first use). Never
    /// blocks: `Err(LaneFull)` when the lane's unacked buffer is at its
    /// bound. Must be called within a tokio runtime.
    pub fn send(&self, addr: &str, msg: LaneMessage) -> Result<(), LaneError> {
        let lane = self.lane(addr)?;
        lane.send(msg, &self.inner.shared)
    }

    /// [`Peers::send`] of a message the receiver is owed — a call's reply,
    /// a DOWN, a demonitor — which may use room beyond the lane's bounds
    /// that plain sends never take (up to twice the bounds), so a lane
    /// filled by plain mail does not make it be dropped.
    pub fn send_owed(&self, addr: &str, msg: LaneMessage) -> Result<(), LaneError> {
        let lane = self.lane(addr)?;
        lane.send_owed(msg, &self.inner.shared)
    }

    /// Notified whenever any lane of this pool frees room or closes. A
    /// sender that must retry a `LaneFull` picked by a layer above (a send
    /// through the directory) registers `room().notified()` *before* its
    /// attempt and awaits it after a refusal: woken by acks, never polling.
    pub fn room(&self) -> Arc<tokio::sync::Notify> {
        self.inner.shared.room.clone()
    }

    /// [`Peers::send`], waiting until `deadline` for room while the lane
    /// is full (woken by the peer's acks). For senders that must not drop
    /// a message to a busy peer (migration's control and forwarded mail).
    pub async fn send_wait(
        &self,
        addr: &str,
        msg: LaneMessage,
        deadline: tokio::time::Instant,
    ) -> Result<(), LaneError> {
        let lane = self.lane(addr)?;
        lane.send_wait(msg, &self.inner.shared, deadline).await
    }

    fn lane(&self, addr: &str) -> Result<Arc<Lane>, LaneError> {
        let mut lanes = self.inner.lanes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(lane) = lanes.get(addr) {
            return Ok(lane.clone());
        }
        if let Err(e) = format!("https://{addr}/").parse::<hyper::Uri>() {
            return Err(LaneError::BadAddress {
                addr: addr.to_string(),
                reason: e.to_string(),
            });
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| LaneError::NoRuntime)?;
        let lane = Arc::new(Lane::new(addr, self.inner.config.clone()));
        runtime.spawn(lane::drive(
            lane.clone(),
            Arc::downgrade(&self.inner),
            self.inner.shared.clone(),
        ));
        lanes.insert(addr.to_string(), lane.clone());
        Ok(lane)
    }

    /// Set the dead-letter hook: called (on a transport task, so keep it
    /// short and non-blocking) with every pid a peer reported as missing
    /// (Dead frame), so later sends to it can fail fast. Replaces any
    /// earlier hook. Without a hook, dead letters are only counted.
    pub fn set_dead_letter_hook(&self, f: Arc<dyn Fn(u64) + Send + Sync>) {
        if let Ok(mut hook) = self.inner.shared.hook.write() {
            *hook = Some(f);
        }
    }

    /// Drop the connection and lane to `addr` (peer removed). Unacked lane
    /// messages are discarded.
    pub fn forget(&self, addr: &str) {
        let lane = self
            .inner
            .lanes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(addr);
        if let Some(lane) = lane {
            lane.close();
            self.inner.shared.room.notify_waiters();
        }
        self.inner
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(addr);
    }

    /// Unacked messages on the lane to `addr`, if that lane exists.
    pub fn lane_backlog(&self, addr: &str) -> Option<LaneBacklog> {
        let lanes = self.inner.lanes.lock().unwrap_or_else(|p| p.into_inner());
        lanes.get(addr).map(|l| l.backlog())
    }

    /// The pooled HTTP/2 connection to `addr`, for tests that speak the
    /// lane protocol by hand.
    #[cfg(test)]
    pub(crate) async fn raw_sender(&self, addr: &str) -> Result<SendRequest<BoxBody>, NetError> {
        self.inner.sender(addr).await
    }

    /// Counters since the pool was created.
    pub fn stats(&self) -> PeerStats {
        self.inner.shared.counters.snapshot()
    }
}
