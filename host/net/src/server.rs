//! The listening side: accept TCP, TLS handshake, HTTP/2 server per
//! connection; `POST /v1/lane` goes to the lane receiver, every other
//! request to the node's [`Handler`].

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::receiver::{open_lane, LaneContext, LaneTable};
use super::{Caller, Handler, NetConfig, LANE_PATH};

/// Live counters of a server, shared with whoever wants to watch them.
#[derive(Debug, Default)]
pub struct ServerCounters {
    /// TCP connections accepted and handed to TLS.
    pub connections_accepted: AtomicU64,
    /// TCP connections closed at once because `connections_max` were open.
    pub connections_refused: AtomicU64,
    /// TLS handshakes that failed (refused certificate, timeout, garbage).
    pub handshakes_failed: AtomicU64,
    /// Authenticated connections closed because their certificate was
    /// revoked while they were open.
    pub connections_revoked: AtomicU64,
    /// Requests refused because the caller's certificate was revoked (on a
    /// connection that was being closed for it).
    pub requests_revoked: AtomicU64,
    /// Requests handed to the handler.
    pub requests: AtomicU64,
    /// Lane streams accepted.
    pub lanes_opened: AtomicU64,
    /// Lane streams refused (caller not a node).
    pub lanes_refused: AtomicU64,
    /// Lane streams ended by an error (malformed frame, gap, broken stream).
    pub lane_errors: AtomicU64,
    /// Lane messages delivered.
    pub lane_frames_delivered: AtomicU64,
    /// Lane messages skipped as already handled (resent after a reconnect).
    pub lane_frames_duplicate: AtomicU64,
    /// Lane messages for a missing pid.
    pub lane_frames_dead: AtomicU64,
    /// Lane messages the handler dropped.
    pub lane_frames_dropped: AtomicU64,
}

/// A snapshot of [`ServerCounters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// See [`ServerCounters::connections_accepted`].
    pub connections_accepted: u64,
    /// See [`ServerCounters::connections_refused`].
    pub connections_refused: u64,
    /// See [`ServerCounters::handshakes_failed`].
    pub handshakes_failed: u64,
    /// See [`ServerCounters::connections_revoked`].
    pub connections_revoked: u64,
    /// See [`ServerCounters::requests_revoked`].
    pub requests_revoked: u64,
    /// See [`ServerCounters::requests`].
    pub requests: u64,
    /// See [`ServerCounters::lanes_opened`].
    pub lanes_opened: u64,
    /// See [`ServerCounters::lanes_refused`].
    pub lanes_refused: u64,
    /// See [`ServerCounters::lane_errors`].
    pub lane_errors: u64,
    /// See [`ServerCounters::lane_frames_delivered`].
    pub lane_frames_delivered: u64,
    /// See [`ServerCounters::lane_frames_duplicate`].
    pub lane_frames_duplicate: u64,
    /// See [`ServerCounters::lane_frames_dead`].
    pub lane_frames_dead: u64,
    /// See [`ServerCounters::lane_frames_dropped`].
    pub lane_frames_dropped: u64,
}

impl ServerCounters {
    /// The current values.
    pub fn snapshot(&self) -> ServerStats {
        ServerStats {
            connections_accepted: self.connections_accepted.load(Relaxed),
            connections_refused: self.connections_refused.load(Relaxed),
            handshakes_failed: self.handshakes_failed.load(Relaxed),
            connections_revoked: self.connections_revoked.load(Relaxed),
            requests_revoked: self.requests_revoked.load(Relaxed),
            requests: self.requests.load(Relaxed),
            lanes_opened: self.lanes_opened.load(Relaxed),
            lanes_refused: self.lanes_refused.load(Relaxed),
            lane_errors: self.lane_errors.load(Relaxed),
            lane_frames_delivered: self.lane_frames_delivered.load(Relaxed),
            lane_frames_duplicate: self.lane_frames_duplicate.load(Relaxed),
            lane_frames_dead: self.lane_frames_dead.load(Relaxed),
            lane_frames_dropped: self.lane_frames_dropped.load(Relaxed),
        }
    }
}

/// Serve node↔node traffic on `listener` until `shutdown` completes, then
/// close open connections (gracefully, then forcibly after
/// `shutdown_grace_ms`). Returns the final counters.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    handler: Arc<dyn Handler>,
    config: NetConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> ServerStats {
    let counters = Arc::new(ServerCounters::default());
    serve_with_stats(listener, tls, handler, config, counters, shutdown).await
}

/// [`serve`] updating `counters` that the caller can watch while it runs.
pub async fn serve_with_stats(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    handler: Arc<dyn Handler>,
    config: NetConfig,
    counters: Arc<ServerCounters>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> ServerStats {
    let acceptor = TlsAcceptor::from(tls);
    let slots = Slots {
        authenticated: Arc::new(Semaphore::new(config.connections_max.max(1))),
        anonymous: Arc::new(Semaphore::new(config.anonymous_connections_max.max(1))),
        handshakes: Arc::new(Semaphore::new(config.handshakes_max.max(1))),
        per_ip: Arc::new(Mutex::new(HashMap::new())),
    };
    let table = Arc::new(LaneTable::new(config.lane_ids_max));
    let (down_tx, down_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            a = listener.accept() => a,
        };
        // Reap finished connection tasks so the set stays small.
        while connections.try_join_next().is_some() {}
        let (tcp, addr) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // E.g. out of file descriptors: wait a little, keep serving.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(handshake) = slots.handshake(addr.ip(), &config) else {
            counters.connections_refused.fetch_add(1, Relaxed);
            tracing::warn!(
                "refusing connection from {addr}: {} handshakes in progress ({} from one address at most)",
                config.handshakes_max,
                config.handshakes_per_ip_max
            );
            continue;
        };
        counters.connections_accepted.fetch_add(1, Relaxed);
        let conn = Connection {
            acceptor: acceptor.clone(),
            handler: handler.clone(),
            table: table.clone(),
            config: config.clone(),
            counters: counters.clone(),
            shutdown: down_rx.clone(),
            slots: slots.clone(),
        };
        connections.spawn(conn.run(tcp, addr, handshake));
    }
    let _ = down_tx.send(true);
    let grace = Duration::from_millis(config.shutdown_grace_ms);
    if tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        connections.shutdown().await;
    }
    counters.snapshot()
}

/// The server's connection slots. A connection first takes a handshake
/// slot (bounded overall and per source address); once the handshake says
/// who it is, it takes an authenticated slot (a trusted client
/// certificate) or an anonymous one (joiners), each pool its own, so
/// anonymous connections can never crowd out nodes, admins and clients.
#[derive(Clone)]
struct Slots {
    authenticated: Arc<Semaphore>,
    anonymous: Arc<Semaphore>,
    handshakes: Arc<Semaphore>,
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// A handshake slot: released (globally and for its address) on drop.
struct Handshake {
    _permit: OwnedSemaphorePermit,
    ip: IpAddr,
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for Handshake {
    fn drop(&mut self) {
        let mut map = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

impl Slots {
    /// A handshake slot for a connection from `ip`, if one is free.
    fn handshake(&self, ip: IpAddr, config: &NetConfig) -> Option<Handshake> {
        let mut map = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= config.handshakes_per_ip_max.max(1) {
            return None;
        }
        let permit = self.handshakes.clone().try_acquire_owned().ok()?;
        *n += 1;
        Some(Handshake {
            _permit: permit,
            ip,
            per_ip: self.per_ip.clone(),
        })
    }
}

/// One accepted connection and what it needs.
struct Connection {
    acceptor: TlsAcceptor,
    handler: Arc<dyn Handler>,
    table: Arc<LaneTable>,
    config: NetConfig,
    counters: Arc<ServerCounters>,
    shutdown: watch::Receiver<bool>,
    slots: Slots,
}

impl Connection {
    async fn run(mut self, tcp: TcpStream, addr: SocketAddr, handshake_slot: Handshake) {
        let _ = tcp.set_nodelay(true);
        let handshake = Duration::from_millis(self.config.handshake_timeout_ms);
        let tls = match tokio::time::timeout(handshake, self.acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                self.counters.handshakes_failed.fetch_add(1, Relaxed);
                match shoal_pki::tls::rejection_of(&e) {
                    Some(r) => tracing::info!("TLS handshake from {addr} refused: {r}"),
                    None => tracing::info!("TLS handshake from {addr} failed: {e}"),
                }
                return;
            }
            Err(_) => {
                self.counters.handshakes_failed.fetch_add(1, Relaxed);
                tracing::info!(
                    "TLS handshake from {addr} timed out after {} ms",
                    self.config.handshake_timeout_ms
                );
                return;
            }
        };
        drop(handshake_slot);
        let caller = Arc::new(Caller {
            addr,
            cert: shoal_pki::tls::peer_info(tls.get_ref().1.peer_certificates()),
        });
        let anonymous = caller.cert.is_none();
        let pool = if anonymous {
            &self.slots.anonymous
        } else {
            &self.slots.authenticated
        };
        // A certificate revoked while the connection is open ends it
        // (`until_revoked` checks now and at every change of the list), and
        // every request is checked too, for one that races the close.
        let revocations = if anonymous {
            None
        } else {
            self.handler.revocations()
        };
        let revoked = super::until_revoked(revocations.clone(), caller.cert.clone());
        // Held until the connection ends.
        let Ok(_slot) = pool.clone().try_acquire_owned() else {
            self.counters.connections_refused.fetch_add(1, Relaxed);
            tracing::warn!(
                "closing connection from {addr}: {} {} connections open",
                if anonymous {
                    self.config.anonymous_connections_max
                } else {
                    self.config.connections_max
                },
                if anonymous {
                    "anonymous"
                } else {
                    "authenticated"
                }
            );
            return;
        };
        // An anonymous connection lives a bounded time, whatever it sends
        // (or does not: no preface, an idle stream).
        let lifetime_ms = self.config.anonymous_connection_ms;
        let expiry = async move {
            if anonymous {
                tokio::time::sleep(Duration::from_millis(lifetime_ms)).await
            } else {
                std::future::pending().await
            }
        };
        let service = {
            let handler = self.handler.clone();
            let table = self.table.clone();
            let config = self.config.clone();
            let counters = self.counters.clone();
            let shutdown = self.shutdown.clone();
            let revocations = revocations.clone();
            service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let caller = caller.clone();
                let handler = handler.clone();
                let refused = match (&revocations, &caller.cert) {
                    (Some(r), Some(cert)) => {
                        r.check(cert).map(|why| shoal_pki::Forbidden::Revoked {
                            who: shoal_pki::Owner::of(cert),
                            reason: why.reason,
                        })
                    }
                    _ => None,
                };
                let lane = (req.method() == hyper::Method::POST && req.uri().path() == LANE_PATH)
                    .then(|| LaneContext {
                        handler: handler.clone(),
                        table: table.clone(),
                        config: config.clone(),
                        counters: counters.clone(),
                        shutdown: shutdown.clone(),
                    });
                let counters = counters.clone();
                async move {
                    if let Some(why) = refused {
                        counters.requests_revoked.fetch_add(1, Relaxed);
                        tracing::info!("refused a request from {}: {why}", caller.addr);
                        let e = super::RemoteError::typed(403, &why);
                        return Ok::<_, Infallible>(super::error_reply(&e));
                    }
                    let resp = match lane {
                        Some(ctx) => open_lane(caller, req, ctx),
                        None => {
                            counters.requests.fetch_add(1, Relaxed);
                            handler.request(&caller, req).await
                        }
                    };
                    Ok::<_, Infallible>(resp)
                }
            })
        };
        let cfg = &self.config;
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .max_concurrent_streams(cfg.streams_per_connection_max)
            .max_header_list_size(cfg.header_bytes_max)
            .initial_stream_window_size(cfg.stream_window_bytes)
            .initial_connection_window_size(cfg.connection_window_bytes)
            .max_frame_size(cfg.http2_frame_bytes_max)
            .keep_alive_interval(Duration::from_millis(cfg.keepalive_interval_ms))
            .keep_alive_timeout(Duration::from_millis(cfg.keepalive_timeout_ms));
        let conn = builder.serve_connection(TokioIo::new(tls), service);
        tokio::pin!(conn);
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    if !is_routine_close(&e) {
                        tracing::debug!("connection from {addr}: {e}");
                    }
                }
            }
            _ = expiry => {
                tracing::info!("closing anonymous connection from {addr} after {lifetime_ms} ms");
            }
            (cert, why) = revoked => {
                self.counters.connections_revoked.fetch_add(1, Relaxed);
                tracing::info!(
                    "closed connection of {}/{} from {addr}: certificate revoked ({})",
                    cert.role,
                    cert.id,
                    why.reason
                );
            }
            _ = super::until_true(&mut self.shutdown) => {
                conn.as_mut().graceful_shutdown();
                let grace = Duration::from_millis(self.config.shutdown_grace_ms);
                let _ = tokio::time::timeout(grace, conn).await;
            }
        }
    }
}

/// A connection that ended because the peer went away is not worth a log
/// line.
fn is_routine_close(e: &hyper::Error) -> bool {
    if e.is_incomplete_message() || e.is_canceled() {
        return true;
    }
    let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    for _ in 0..16 {
        let Some(err) = cur else { break };
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::ConnectionAborted
            );
        }
        cur = err.source();
    }
    false
}
