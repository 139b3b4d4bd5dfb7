//! The node↔node transport: HTTP/2 over mutual TLS, one connection per peer.
//!
//! Every Shoal node listens on one TCP port ([`serve`]) and keeps one
//! multiplexed HTTP/2 connection to each peer it talks to ([`Peers`]). Two
//! kinds of traffic share that connection:
//!
//! 1. **Unary requests** (Raft RPCs, remote spawn, blob fetch, join, the
//!    control API): an ordinary HTTP/2 request with a whole body, answered by
//!    the node's [`Handler::request`].
//! 2. **The message lane**: one long-lived HTTP/2 stream per (sending node,
//!    receiving node) pair carrying process→process messages as binary
//!    frames, delivered through [`Handler::deliver`]. Messages are *not* one
//!    request each: many frames ride in one HTTP/2 DATA frame.
//!
//! # Wire protocol (reference)
//!
//! ## Connection
//!
//! - TCP, `TCP_NODELAY` on both ends, then TLS 1.3 with certificates from the
//!   cluster CA on both ends (see [`shoal_pki::tls`]): the server is verified
//!   by CA + `Role::Node`, never by host name; the client sends
//!   [`placeholder_server_name`](shoal_pki::tls::placeholder_server_name) as
//!   the server name. A server may make client certificates optional (joining
//!   nodes have none yet); the handler then sees [`Caller::cert`] `None`.
//! - Then HTTP/2 with prior knowledge (no ALPN, no HTTP/1.1 upgrade). The
//!   client waits for the server's first bytes (its SETTINGS frame, which an
//!   HTTP/2 server sends unprompted) before sending its own preface: in TLS
//!   1.3 a refused client certificate shows up only as an alert on that
//!   first read, and this way it fails the connect, with backoff.
//!   Request URIs are `https://<peer addr><path>`.
//! - Limits the server advertises: at most [`NetConfig::streams_per_connection_max`]
//!   concurrent streams, header lists up to [`NetConfig::header_bytes_max`],
//!   stream/connection windows of [`NetConfig::stream_window_bytes`] /
//!   [`NetConfig::connection_window_bytes`]. The server accepts at most
//!   [`NetConfig::connections_max`] connections; one more is closed right
//!   after `accept`. TLS handshakes must finish within
//!   [`NetConfig::handshake_timeout_ms`].
//! - A certificate revoked while its connection is open (a removed node, a
//!   revoked client) ends the connection as soon as the node applies the
//!   revocation, on both ends: the server closes the connections of a
//!   caller whose certificate [`Handler::revocations`] now revokes, and
//!   refuses (typed `403`) any request that races that; a [`Peers`] pool
//!   given the list ([`Peers::watch_revocations`]) drops its connection to
//!   a peer whose server certificate it revokes.
//! - A pool told which node lives at an address ([`Peers::pin`], from the
//!   cluster's node records) checks that the server certificate it meets
//!   there names that node, and refuses to talk to any other
//!   ([`NetError::WrongPeer`]): a node that takes over a member's address
//!   does not receive what is meant for that member.
//! - Both ends send HTTP/2 PINGs every [`NetConfig::keepalive_interval_ms`]
//!   and drop the connection when one is unanswered for
//!   [`NetConfig::keepalive_timeout_ms`], so a silently dead peer is noticed.
//!
//! ## Unary requests
//!
//! Any method and path except `POST /v1/lane` goes to the node's handler.
//! Node-to-node calls made with [`Peers::call`] are `POST` with the whole
//! request in the body (at most [`NetConfig::request_bytes_max`]); the answer
//! is the whole response body (at most [`NetConfig::response_bytes_max`]).
//! A 2xx status is success. Any other status is an error whose body is
//! JSON `{"error": "<message>"}` (as the control API answers), surfaced to the
//! caller as [`NetError::Remote`]. A request body over the handler's limit is
//! answered `413`; an unknown path `404`.
//!
//! ## The lane: `POST /v1/lane`
//!
//! The client (sending node) opens one stream `POST /v1/lane` per peer and
//! keeps it open; the request body is an endless sequence of *frames* from
//! client to server. The server answers `200` at once and streams frames back
//! in the response body. Only a caller whose certificate has `Role::Node`
//! may open a lane: anyone else gets `403` and the refusal is logged.
//!
//! Every frame, in both directions, is:
//!
//! ```text
//! +----------------+-----------+---------------------+
//! | len: u32 (BE)  | kind: u8  | body: len - 1 bytes |
//! +----------------+-----------+---------------------+
//! ```
//!
//! `len` counts the kind byte and the body (not itself); it must be at least
//! 1 and at most [`NetConfig::frame_bytes_max`] — the receiver checks it
//! before buffering the frame. All integers are big-endian. Frames may be
//! split across, or packed several into, HTTP/2 DATA frames at will.
//!
//! | kind | name  | direction     | body                                              |
//! |------|-------|---------------|---------------------------------------------------|
//! | 1    | Hello | client→server | `lane_id: u128`, `first_seq: u64` (24 bytes)      |
//! | 2    | Data  | client→server | `seq: u64`, `from: u64`, `to: u64`, payload bytes |
//! | 3    | Ack   | server→client | `seq: u64` (8 bytes)                              |
//! | 4    | Dead  | server→client | `seq: u64`, `pid: u64` (16 bytes)                 |
//! | 5    | Tagged Data | client→server | as Data, then `tag_kind: u8` (≠ 0), `reference: u64`, payload |
//!
//! - **Hello** is the first frame of every lane stream, and only there.
//!   `lane_id` is chosen at random once per sender lane *instance* (it
//!   survives reconnects, not a restart of the sending node); `first_seq` is
//!   the seq of the first Data frame that follows.
//! - **Data** carries one message from process `from` to process `to`.
//!   `seq` starts at 1 for a lane instance and grows by exactly 1 per
//!   message. The payload is at most `frame_bytes_max - 25` bytes.
//! - **Ack** is cumulative: every Data frame with a seq ≤ `seq` has been
//!   handled by the receiver (delivered, refused as `Dead`, or dropped by the
//!   receiving node) and will never be delivered again. The server acks after
//!   each DATA frame it read from the stream (so acks are batched per read,
//!   never delayed by a timer). Right after Hello, if the server remembers
//!   `lane_id`, it sends an Ack with the last seq it handled.
//! - **Tagged Data** is a Data frame for a message that is not plain (a
//!   call, a reply, a monitor, a DOWN notice: [`LaneTag`]); it shares Data's
//!   sequence numbers, acks and rules. Plain messages are always kind 2, so
//!   a lane that carries no calls is byte for byte what it was.
//! - **Dead** reports that message `seq` was addressed to `pid`, which does
//!   not exist on the receiving node. It precedes (or shares a DATA frame
//!   with) the Ack that covers `seq`. The sender hands `pid` to its
//!   dead-letter hook ([`Peers::set_dead_letter_hook`]).
//!
//! ## Delivery guarantees and reconnect rules
//!
//! - Frames are sent and delivered in seq order, so messages keep the order
//!   in which [`Peers::send`] accepted them, per (sender node, receiver node)
//!   and therefore per (sender pid, receiver pid).
//! - The sender keeps every Data frame until it is acked. At most
//!   [`NetConfig::lane_unacked_frames_max`] frames and
//!   [`NetConfig::lane_unacked_bytes_max`] bytes (payload + 29 bytes of frame
//!   per message) are kept per lane; beyond that [`Peers::send`] refuses with
//!   [`LaneError::LaneFull`] — that is the back-pressure signal. What the
//!   receiver is owed (a call's reply, a DOWN, a demonitor) goes through
//!   [`Peers::send_owed`], which may use up to twice those bounds, so plain
//!   mail filling a lane never makes a reply or a DOWN be dropped.
//! - When the stream or connection fails, the sender reconnects (backoff
//!   below) and opens a new `POST /v1/lane` starting with
//!   `Hello{same lane_id, first_seq = oldest unacked seq}` followed by every
//!   unacked frame, in order.
//! - The receiver remembers, per `lane_id`, the last seq it handled (a table
//!   of at most [`NetConfig::lane_ids_max`] lanes; the least recently used
//!   idle entry is forgotten first). It skips Data frames with a seq it has
//!   already handled and ends the stream on a gap (a seq beyond the next
//!   one). A newer stream with the same `lane_id` supersedes an older one,
//!   which stops at its next DATA frame. Result: no loss, no duplicate, no
//!   reordering across reconnects, as long as neither node restarts.
//! - A malformed frame (bad length, unknown kind, wrong body size, Hello not
//!   first, seq gap) ends the stream; the receiving side logs the problem
//!   with a `net:` prefix.
//! - Delivery may wait (a full mailbox): the receiver then stops reading the
//!   stream, HTTP/2 flow control stops the sender's writer, unacked frames
//!   pile up to the bound, and `send` returns `LaneFull`.
//!
//! ## Backoff
//!
//! A failed connect to a peer makes the next attempt wait
//! `backoff_initial_ms · 2^(failures-1)`, capped at `backoff_max_ms`, with
//! ±25 % random jitter; a successful connect resets it. A lane whose stream
//! fails on a live connection waits the same way before reopening.
//!
//! # Modules
//!
//! - [`frame`]: lane frame encoding and the bounded decoder.
//! - [`body`]: request/response body helpers for handlers.
//! - [`server`]: [`serve`], the accept loop and per-connection HTTP/2 server.
//! - [`receiver`]: the server side of the lane (dedupe table, acks).
//! - [`peers`]: the client pool [`Peers`], unary calls, backoff.
//! - [`lane`]: the client side of the lane (bounded buffer, writer, acks).
//! - `replay`: lets the client read the server's first bytes while
//!   connecting, so a refused client certificate fails the connect.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod body;
pub mod frame;
pub mod lane;
pub mod peers;
pub mod receiver;
mod replay;
pub mod server;

#[cfg(test)]
mod tests;

pub use body::{error_detail, error_message, error_reply, read_body, reply, BoxBody, RemoteError};
pub use lane::LaneError;
pub use peers::{PeerStats, Peers};
pub use server::{serve, serve_with_stats, ServerCounters, ServerStats};

use std::net::SocketAddr;

/// The lane's route: the server handles it itself.
pub const LANE_PATH: &str = "/v1/lane";

/// Every limit and timeout of the transport. The defaults suit a LAN cluster;
/// tests shrink them.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// TCP connect plus TLS and HTTP/2 handshakes, client side.
    pub connect_timeout_ms: u64,
    /// TLS handshake of an accepted connection, server side.
    pub handshake_timeout_ms: u64,
    /// Default per-call timeout of [`Peers::call`].
    pub request_timeout_ms: u64,
    /// Largest request body [`Peers::call`] sends (snapshots, blobs).
    pub request_bytes_max: usize,
    /// Largest response body [`Peers::call`] accepts.
    pub response_bytes_max: usize,
    /// Largest HTTP/2 header list accepted, both ends.
    pub header_bytes_max: u32,
    /// Largest lane frame (`len` field: kind + body). The largest message
    /// payload is this minus [`frame::DATA_OVERHEAD_BYTES`].
    pub frame_bytes_max: usize,
    /// Unacked messages kept per lane before `send` says `LaneFull`.
    pub lane_unacked_frames_max: usize,
    /// Unacked bytes (payload + frame overhead) kept per lane before `send`
    /// says `LaneFull`.
    pub lane_unacked_bytes_max: usize,
    /// The lane writer packs frames into chunks of up to this many bytes
    /// (one frame larger than this goes alone).
    pub lane_chunk_bytes_max: usize,
    /// Chunks queued between a lane writer and its HTTP/2 stream (and acks
    /// queued on the server side of a lane).
    pub lane_chunks_queued_max: usize,
    /// Lane ids the receiver remembers for de-duplication.
    pub lane_ids_max: usize,
    /// First reconnect delay.
    pub backoff_initial_ms: u64,
    /// Longest reconnect delay.
    pub backoff_max_ms: u64,
    /// Most authenticated connections (a client certificate the cluster
    /// trusts) open at once. Anonymous ones (joiners) never take these.
    pub connections_max: usize,
    /// Most TLS handshakes in progress at once (before anyone is known).
    pub handshakes_max: usize,
    /// Most TLS handshakes in progress from one IP address, so one source
    /// cannot hold every handshake slot.
    pub handshakes_per_ip_max: usize,
    /// Most connections without a client certificate open at once: they
    /// have their own slots, so a flood of them leaves room for nodes,
    /// admins and clients.
    pub anonymous_connections_max: usize,
    /// How long a connection without a client certificate may stay open
    /// (a join is one request); it is closed after, request or not.
    pub anonymous_connection_ms: u64,
    /// Concurrent HTTP/2 streams per connection (server advertises it).
    pub streams_per_connection_max: u32,
    /// HTTP/2 stream flow-control window, both ends.
    pub stream_window_bytes: u32,
    /// HTTP/2 connection flow-control window, both ends.
    pub connection_window_bytes: u32,
    /// Largest HTTP/2 frame we accept, both ends.
    pub http2_frame_bytes_max: u32,
    /// HTTP/2 PING interval, both ends.
    pub keepalive_interval_ms: u64,
    /// A PING unanswered this long closes the connection.
    pub keepalive_timeout_ms: u64,
    /// On shutdown, how long open connections get to finish before they
    /// are dropped.
    pub shutdown_grace_ms: u64,
}

impl Default for NetConfig {
    fn default() -> Self {
        const MIB: usize = 1024 * 1024;
        NetConfig {
            connect_timeout_ms: 3_000,
            handshake_timeout_ms: 5_000,
            request_timeout_ms: 10_000,
            request_bytes_max: 64 * MIB,
            response_bytes_max: 64 * MIB,
            header_bytes_max: 64 * 1024,
            frame_bytes_max: MIB + frame::DATA_OVERHEAD_BYTES,
            lane_unacked_frames_max: 65_536,
            lane_unacked_bytes_max: 64 * MIB,
            lane_chunk_bytes_max: 256 * 1024,
            lane_chunks_queued_max: 8,
            lane_ids_max: 1024,
            backoff_initial_ms: 50,
            backoff_max_ms: 2_000,
            connections_max: 1024,
            handshakes_max: 256,
            handshakes_per_ip_max: 64,
            anonymous_connections_max: 64,
            anonymous_connection_ms: 30_000,
            streams_per_connection_max: 256,
            stream_window_bytes: 4 * 1024 * 1024,
            connection_window_bytes: 8 * 1024 * 1024,
            http2_frame_bytes_max: 64 * 1024,
            keepalive_interval_ms: 5_000,
            keepalive_timeout_ms: 10_000,
            shutdown_grace_ms: 2_000,
        }
    }
}

/// What a request handler sees about the caller.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The TCP peer address.
    pub addr: SocketAddr,
    /// The caller's verified certificate (role, id), if it presented one.
    pub cert: Option<shoal_pki::CertInfo>,
}

/// One process→process message carried by a lane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaneMessage {
    /// Sending pid.
    pub from: u64,
    /// Receiving pid (on the receiving node).
    pub to: u64,
    /// What kind of message it is; plain messages use the default.
    pub tag: LaneTag,
    /// The message bytes.
    pub data: bytes::Bytes,
}

/// The kind of a lane message, opaque to the transport: `kind` 0 is a plain
/// message (sent as a kind-2 Data frame); any other kind travels in a
/// kind-5 Tagged Data frame with its `reference` (the runtime's calls,
/// replies, monitors and DOWN notices: `shoal_runtime::mailbox::Tag`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LaneTag {
    /// 0: plain; others are the runtime's to define.
    pub kind: u8,
    /// The call or monitor reference the message belongs to.
    pub reference: u64,
    /// The message's number on its sender's numbered channel (0: none;
    /// the runtime's `outbox`).
    pub seq: u64,
    /// The sender's life, with a numbered message (the runtime's
    /// `outbox`).
    pub life: u64,
}

impl LaneTag {
    /// True for a plain message.
    pub fn is_plain(&self) -> bool {
        self.kind == 0
    }

    /// True for what a plain Data frame carries: a plain, unnumbered
    /// message.
    pub fn is_bare(&self) -> bool {
        self.kind == 0 && self.seq == 0
    }
}

/// What the receiving node did with one lane message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Put in the receiver's mailbox.
    Delivered,
    /// No process with that pid here: the sender is told (Dead frame).
    NoSuchProcess,
    /// The receiving node gave up on it (e.g. waited too long); it counts
    /// as handled and is acked, the sender is not told.
    Dropped,
}

/// The node's side of the server: routes unary requests and sinks lane
/// messages. The net server handles `POST /v1/lane` itself (calling
/// [`deliver`](Handler::deliver) per message) and hands every other request
/// to [`request`](Handler::request).
#[async_trait::async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Answer one request (any method and path except `POST /v1/lane`).
    /// Read the body with [`read_body`] to enforce a size limit.
    async fn request(
        &self,
        caller: &Caller,
        req: hyper::Request<hyper::body::Incoming>,
    ) -> hyper::Response<BoxBody>;

    /// The revocation list this node's connections answer to: an
    /// authenticated connection whose certificate it comes to revoke is
    /// closed as soon as the list changes, and every request is checked
    /// against it before it is served (one that races the close is refused
    /// with a typed 403, [`shoal_pki::Forbidden::Revoked`]). `None` (the
    /// default): certificates are checked at the handshake only.
    fn revocations(&self) -> Option<shoal_pki::SharedRevocations> {
        None
    }

    /// The lane sink: deliver one message that arrived on a lane. May wait
    /// when the receiver's mailbox is full — that back-pressures the whole
    /// lane, which is intended.
    async fn deliver(&self, caller: &Caller, msg: LaneMessage) -> Delivery;
}

/// Errors of unary calls and connections.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The peer address is not usable in a URI (`host:port` expected).
    #[error("invalid peer address {addr:?}: {reason}")]
    BadAddress {
        /// The address given.
        addr: String,
        /// What is wrong with it.
        reason: String,
    },
    /// TCP connect failed.
    #[error("connect to {addr}: {source}")]
    Connect {
        /// The peer.
        addr: String,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// Connecting (TCP + TLS + HTTP/2) took too long.
    #[error("connect to {addr} timed out after {timeout_ms} ms")]
    ConnectTimeout {
        /// The peer.
        addr: String,
        /// The limit.
        timeout_ms: u64,
    },
    /// The TLS handshake failed or the peer refused our certificate.
    #[error("TLS with {addr} failed: {reason}")]
    Tls {
        /// The peer.
        addr: String,
        /// Why (our verifier's rejection, or the peer's alert).
        reason: String,
    },
    /// The peer at `addr` proved to be another node than the one this
    /// pool was told lives there ([`Peers::pin`]): nothing is sent to it.
    #[error("the node at {addr} is {found:?}, not {expected:?} as the cluster records")]
    WrongPeer {
        /// The address dialled.
        addr: String,
        /// The node name the cluster records at that address.
        expected: String,
        /// The name the peer's certificate carries (empty if none).
        found: String,
    },
    /// An HTTP/2 protocol or connection error.
    #[error("HTTP/2 with {addr}: {reason}")]
    Http {
        /// The peer.
        addr: String,
        /// What happened.
        reason: String,
    },
    /// The call did not complete in time.
    #[error("call {path} to {addr} timed out after {timeout_ms} ms")]
    Timeout {
        /// The peer.
        addr: String,
        /// The route.
        path: String,
        /// The limit.
        timeout_ms: u64,
    },
    /// The peer answered with a non-2xx status.
    #[error("remote error {status}: {message}")]
    Remote {
        /// HTTP status.
        status: u16,
        /// The `error` of a JSON error body, else the body as text.
        message: String,
        /// The typed `detail` of a JSON error body (see
        /// [`RemoteError::typed`]), if any.
        detail: Option<serde_json::Value>,
    },
    /// Our request body is over [`NetConfig::request_bytes_max`].
    #[error("request body of {bytes} bytes exceeds the limit of {bytes_max} bytes")]
    RequestTooLarge {
        /// Its size.
        bytes: usize,
        /// The limit.
        bytes_max: usize,
    },
    /// The peer's response body is over [`NetConfig::response_bytes_max`].
    #[error("response from {addr} exceeds the limit of {bytes_max} bytes")]
    ResponseTooLarge {
        /// The peer.
        addr: String,
        /// The limit.
        bytes_max: usize,
    },
    /// No tokio runtime to run the connection on.
    #[error("no tokio runtime: the transport must be used from within one")]
    NoRuntime,
}

/// Walk an error's source chain for a rustls error (possibly inside an
/// `io::Error`) and describe it: how TLS failures surface through hyper.
pub(crate) fn tls_reason(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    if let Some(r) = shoal_pki::tls::rejection_of(err) {
        return Some(r.to_string());
    }
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    // Source chains are short; the bound only guards against a cycle.
    for _ in 0..32 {
        let Some(e) = cur else { break };
        if let Some(t) = e.downcast_ref::<rustls::Error>() {
            return Some(t.to_string());
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                if let Some(t) = inner.downcast_ref::<rustls::Error>() {
                    return Some(t.to_string());
                }
            }
        }
        cur = e.source();
    }
    None
}

/// A hyper error as a [`NetError`]: TLS problems (e.g. the server refused
/// our certificate, which TLS 1.3 reports only after our handshake ended)
/// become [`NetError::Tls`], the rest [`NetError::Http`].
pub(crate) fn classify_hyper_error(addr: &str, err: &hyper::Error) -> NetError {
    match tls_reason(err) {
        Some(reason) => NetError::Tls {
            addr: addr.to_string(),
            reason,
        },
        None => {
            let mut reason = err.to_string();
            let mut cur = std::error::Error::source(err);
            for _ in 0..8 {
                let Some(e) = cur else { break };
                reason.push_str(": ");
                reason.push_str(&e.to_string());
                cur = e.source();
            }
            NetError::Http {
                addr: addr.to_string(),
                reason,
            }
        }
    }
}

/// Resolves, with the certificate and its revocation, once `revocations`
/// revokes `cert`: checked at once, then at every change of the list
/// (subscribed before the first check, so no change slips between them).
/// Never resolves when either is `None`.
pub(crate) async fn until_revoked(
    revocations: Option<shoal_pki::SharedRevocations>,
    cert: Option<shoal_pki::CertInfo>,
) -> (shoal_pki::CertInfo, shoal_pki::Revocation) {
    let (Some(revocations), Some(cert)) = (revocations, cert) else {
        return std::future::pending().await;
    };
    let mut changes = revocations.subscribe();
    loop {
        if let Some(why) = revocations.check(&cert) {
            return (cert, why);
        }
        if changes.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// Wait until a shutdown/closed flag turns true (or its sender is gone).
pub(crate) async fn until_true(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|flag| *flag).await;
}
