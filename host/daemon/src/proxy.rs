//! Streaming a response from another node to our caller (e.g. following
//! the log of a process that runs elsewhere).
//!
//! Unary node-to-node calls go through [`shoal_net::Peers`], which reads
//! whole bodies; a followed log never ends while the process lives, so it
//! gets its own HTTP/2 connection, and its frames are copied through a
//! bounded channel as they arrive (a slow reader slows the source, memory
//! stays bounded).

use super::Inner;
use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use shoal_net::{BoxBody, RemoteError};
use std::convert::Infallible;
use std::time::Duration;

/// Frames buffered between the source node and our caller.
pub const PROXY_FRAMES_QUEUED_MAX: usize = 64;
/// Connect + handshake limit.
pub const PROXY_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

fn unreachable(addr: &str, e: impl std::fmt::Display) -> RemoteError {
    RemoteError::new(503, format!("node {addr} cannot be reached: {e}"))
}

/// `GET path_and_query` on the node at `addr`, streamed back.
pub async fn get_stream(
    inner: &Inner,
    addr: &str,
    path_and_query: &str,
) -> Result<Response<BoxBody>, RemoteError> {
    forward(
        inner,
        addr,
        hyper::Method::GET,
        path_and_query,
        Bytes::new(),
        None,
    )
    .await
}

/// `method path_and_query` with `body` on the node at `addr` (as this
/// node, over mTLS, naming `relay` as the caller it asks for: see
/// [`crate::records::owners::RELAY_HEADER`]), its answer streamed back.
pub async fn forward(
    inner: &Inner,
    addr: &str,
    method: hyper::Method,
    path_and_query: &str,
    body: Bytes,
    relay: Option<&shoal_pki::Owner>,
) -> Result<Response<BoxBody>, RemoteError> {
    forward_with(inner, addr, method, path_and_query, body, relay, &[]).await
}

/// [`forward`], with `headers` added to the request.
pub async fn forward_with(
    inner: &Inner,
    addr: &str,
    method: hyper::Method,
    path_and_query: &str,
    body: Bytes,
    relay: Option<&shoal_pki::Owner>,
    headers: &[(&'static str, String)],
) -> Result<Response<BoxBody>, RemoteError> {
    let connect = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| unreachable(addr, e))?;
        let _ = tcp.set_nodelay(true);
        let tls = tokio_rustls::TlsConnector::from(inner.client_tls.clone())
            .connect(shoal_pki::tls::placeholder_server_name(), tcp)
            .await
            .map_err(|e| unreachable(addr, e))?;
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .map_err(|e| unreachable(addr, e))
    };
    let (mut sender, conn) = tokio::time::timeout(PROXY_CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| unreachable(addr, "timed out"))??;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = Request::builder()
        .method(method)
        .uri(path_and_query)
        .header(hyper::header::HOST, "shoal-node")
        .header(hyper::header::CONTENT_TYPE, "application/json");
    if let Some(who) = relay {
        req = req.header(
            crate::records::owners::RELAY_HEADER,
            crate::records::owners::relay_value(who),
        );
    }
    for (name, value) in headers {
        req = req.header(*name, value.as_str());
    }
    let req = req
        .body(http_body_util::Full::new(body))
        .map_err(|e| RemoteError::new(500, e.to_string()))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| unreachable(addr, e))?;
    let (parts, mut body) = resp.into_parts();
    let (tx, rx) =
        tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(PROXY_FRAMES_QUEUED_MAX);
    tokio::spawn(async move {
        // Keep the connection's sender alive while streaming.
        let _sender = sender;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            if let Ok(data) = frame.into_data() {
                if tx.send(Ok(Frame::data(data))).await.is_err() {
                    break;
                }
            }
        }
    });
    let stream = tokio_stream_from(rx);
    Ok(Response::from_parts(
        parts,
        BodyExt::boxed(StreamBody::new(stream)),
    ))
}

/// A `Stream` over an mpsc receiver.
fn tokio_stream_from<T>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static
where
    T: Send + 'static,
{
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
