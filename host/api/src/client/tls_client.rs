//! The TCP + mutual TLS + HTTP/2 connector behind [`super::Client`]'s
//! [`Endpoint::Tls`](super::Endpoint::Tls) (a submodule of `client`, kept
//! in its own file).
//!
//! One connection per call, like the Unix socket: connect (bounded by
//! [`CONNECT_TIMEOUT`], TLS handshake included), then an HTTP/2 handshake,
//! then one request. Failures are turned into errors that say which side
//! refused what:
//!
//! - we refused the node's certificate: the handshake fails on our side with
//!   a [`Rejection`] in the error chain ([`rejection_of`]);
//! - the node refused ours: in TLS 1.3 the server checks the client
//!   certificate *after* our side of the handshake is done, so we only learn
//!   it from the alert that arrives on the first read. The stream is wrapped
//!   in [`Watched`], which keeps the first TLS error seen by any read or
//!   write, so a failed request can be explained by it.
//!
//! A node that refuses us sends its alert and closes the connection. Had we
//! already sent our request, the close would find it unread, the node's
//! kernel would answer with a reset, and the reset can overtake the alert:
//! we would only see "connection reset". So after the TLS handshake we
//! first wait (bounded by [`VERDICT_WAIT`]) for the node to speak: an HTTP/2
//! server sends its SETTINGS frame at once, so either those bytes come
//! (accepted; they are handed to HTTP/2 unchanged) or the alert does.

use super::{ClientError, CONNECT_TIMEOUT};
use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::AlertDescription;
use shoal_pki::tls::{placeholder_server_name, rejection_of};
use shoal_pki::Rejection;
use std::io::{self, ErrorKind};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// How long to wait after the TLS handshake for the node's first bytes
/// (its verdict on our certificate). A server that waits for the client to
/// speak first (not what a Shoal node does) costs this much per call, and
/// then the call goes on normally.
pub(crate) const VERDICT_WAIT: Duration = Duration::from_secs(2);

/// The most bytes read while waiting for the verdict (one TLS record's
/// plaintext at most).
const VERDICT_BYTES_MAX: usize = 16 << 10;

/// The first TLS error seen on a connection, shared between the stream
/// wrapper (which records it) and the caller (which explains failures).
#[derive(Clone, Debug, Default)]
pub(crate) struct TlsErrorSlot(Arc<Mutex<Option<rustls::Error>>>);

impl TlsErrorSlot {
    /// Keep `e`'s TLS error if it carries one and none was kept yet.
    fn record(&self, e: &io::Error) {
        let Some(tls) = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        else {
            return;
        };
        if let Ok(mut slot) = self.0.lock() {
            if slot.is_none() {
                *slot = Some(tls.clone());
            }
        }
    }

    /// The first TLS error seen, if any.
    pub(crate) fn get(&self) -> Option<rustls::Error> {
        self.0.lock().ok().and_then(|slot| slot.clone())
    }
}

/// A stream that records the first TLS error of its reads and writes in a
/// [`TlsErrorSlot`] and otherwise passes everything through.
#[derive(Debug)]
pub(crate) struct Watched<S> {
    inner: S,
    /// Bytes already read from `inner` (while waiting for the verdict),
    /// handed out before reading more.
    prefix: Bytes,
    slot: TlsErrorSlot,
}

impl<S> Watched<S> {
    fn note<T>(&self, result: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if let Poll::Ready(Err(e)) = &result {
            self.slot.record(e);
        }
        result
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let head = self.prefix.split_to(n);
            buf.put_slice(&head);
            return Poll::Ready(Ok(()));
        }
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.note(result)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note(result)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        self.note(result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.note(result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note(result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// An open HTTP/2 connection to a node, ready for one request.
pub(crate) struct Connection {
    /// Sends the request.
    pub(crate) sender: http2::SendRequest<Full<Bytes>>,
    /// The first TLS error of the connection, to explain a failed request.
    pub(crate) tls_errors: TlsErrorSlot,
}

/// Connect to `addr` (`host:port`), do the TLS handshake with `config` and
/// the HTTP/2 handshake. The TCP connect and the TLS handshake together are
/// bounded by [`CONNECT_TIMEOUT`].
pub(crate) async fn connect(
    addr: &str,
    config: &Arc<rustls::ClientConfig>,
) -> Result<Connection, ClientError> {
    let connector = TlsConnector::from(Arc::clone(config));
    let open = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| unreachable(addr, &e))?;
        // Requests are small and latency matters more than packet count.
        let _ = tcp.set_nodelay(true);
        connector
            .connect(placeholder_server_name(), tcp)
            .await
            .map_err(|e| handshake_failed(addr, &e))
    };
    let tls: TlsStream<TcpStream> = match tokio::time::timeout(CONNECT_TIMEOUT, open).await {
        Ok(result) => result?,
        Err(_) => {
            return Err(ClientError::Unreachable {
                addr: addr.to_string(),
                reason: format!("no answer within {CONNECT_TIMEOUT:?}"),
            })
        }
    };
    let mut tls = tls;
    let prefix = verdict(addr, &mut tls).await?;
    let tls_errors = TlsErrorSlot::default();
    let io = TokioIo::new(Watched {
        inner: tls,
        prefix,
        slot: tls_errors.clone(),
    });
    let handshake = http2::handshake(TokioExecutor::new(), io);
    let (sender, conn) = match tokio::time::timeout(CONNECT_TIMEOUT, handshake).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => return Err(request_failed(addr, &tls_errors, "HTTP/2 handshake", &e)),
        Err(_) => {
            return Err(ClientError::Unreachable {
                addr: addr.to_string(),
                reason: format!("no HTTP/2 handshake within {CONNECT_TIMEOUT:?}"),
            })
        }
    };
    tokio::spawn(async move {
        // Errors reach the caller through the request (and `tls_errors`).
        let _ = conn.await;
    });
    Ok(Connection { sender, tls_errors })
}

/// Wait (at most [`VERDICT_WAIT`]) for the node's first bytes after the TLS
/// handshake, before we send anything: they are its HTTP/2 SETTINGS if it
/// accepted our certificate, an alert if it did not. Returns the bytes read
/// (to hand to HTTP/2), empty if the node said nothing in time.
async fn verdict(addr: &str, tls: &mut TlsStream<TcpStream>) -> Result<Bytes, ClientError> {
    let mut buf = vec![0u8; VERDICT_BYTES_MAX];
    match tokio::time::timeout(VERDICT_WAIT, tls.read(&mut buf)).await {
        Err(_) => Ok(Bytes::new()),
        Ok(Ok(0)) => Err(ClientError::Handshake {
            addr: addr.to_string(),
            reason: "the node closed the connection right after the handshake".to_string(),
        }),
        Ok(Ok(n)) => {
            buf.truncate(n);
            Ok(Bytes::from(buf))
        }
        Ok(Err(e)) => Err(handshake_failed(addr, &e)),
    }
}

/// The error for a failed TCP connect.
fn unreachable(addr: &str, e: &io::Error) -> ClientError {
    let reason = match e.kind() {
        ErrorKind::ConnectionRefused => "connection refused".to_string(),
        ErrorKind::TimedOut => "connection timed out".to_string(),
        _ => e.to_string(),
    };
    ClientError::Unreachable {
        addr: addr.to_string(),
        reason,
    }
}

/// The error for a failed TLS handshake: we refused the node, the node
/// refused us, or something else (the port does not speak TLS, ...).
fn handshake_failed(addr: &str, e: &io::Error) -> ClientError {
    if let Some(rejection) = rejection_of(e) {
        return ClientError::NodeCertificateRefused {
            addr: addr.to_string(),
            rejection: rejection.clone(),
        };
    }
    let tls = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    if let Some(rustls::Error::AlertReceived(alert)) = tls {
        return refused_us(addr, *alert);
    }
    let reason = match (tls, e.kind()) {
        (Some(t), _) => t.to_string(),
        (None, ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset) => {
            "the node closed the connection (is this the node's TLS port?)".to_string()
        }
        (None, _) => e.to_string(),
    };
    ClientError::Handshake {
        addr: addr.to_string(),
        reason,
    }
}

/// The error for a request (or HTTP/2 handshake) that failed after the TLS
/// handshake: a TLS alert from the node means it refused our certificate.
pub(crate) fn request_failed(
    addr: &str,
    tls_errors: &TlsErrorSlot,
    what: &str,
    e: &hyper::Error,
) -> ClientError {
    match tls_errors.get() {
        Some(rustls::Error::AlertReceived(alert)) => refused_us(addr, alert),
        Some(other) => ClientError::Protocol {
            node: format!("node {addr}"),
            message: format!("{what} failed: TLS error: {other}"),
        },
        None => ClientError::Protocol {
            node: format!("node {addr}"),
            message: format!("{what} failed: {e}"),
        },
    }
}

/// The node sent `alert` about our certificate: say what it most likely
/// means (the node's own log names the exact reason).
fn refused_us(addr: &str, alert: AlertDescription) -> ClientError {
    let reason = match alert {
        AlertDescription::CertificateExpired => {
            "it has expired or is not valid yet; get new credentials with `shoal cert create`"
        }
        AlertDescription::CertificateRevoked => "it has been revoked",
        AlertDescription::CertificateRequired => "the node requires a client certificate",
        _ => {
            "it may be from another cluster's CA, revoked, expired, or of a role this node \
             does not accept; the node's log says which"
        }
    };
    ClientError::CertificateRefusedByNode {
        addr: addr.to_string(),
        alert: format!("{alert:?}"),
        reason: reason.to_string(),
    }
}

/// Describe why we refused the node's certificate, in the words a user
/// needs.
pub(crate) fn describe_rejection(rejection: &Rejection) -> String {
    match rejection {
        Rejection::OtherCa(detail) => format!(
            "the node's certificate is not from this cluster's CA ({detail}; is the CA \
             certificate you gave from another cluster?)"
        ),
        other => format!("the node's certificate was refused: {other}"),
    }
}
