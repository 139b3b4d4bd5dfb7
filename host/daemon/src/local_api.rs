//! The cluster's verbs on the local socket: every verb the node's TLS
//! endpoint serves ([`crate::cluster_api::route`]), answered for the
//! operator who reached the socket (mode 0600) as an admin
//! (`local-socket`), so a CLI on the node's data dir never needs TCP. The
//! socket itself is [`crate::api::UnixServer`].

use crate::api::server::Connections;
use crate::api::{UnixServer, HEADER_READ_TIMEOUT};
use crate::Inner;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};

/// Serve the cluster's verbs on `server` until `shutdown` completes.
pub async fn serve(
    server: UnixServer,
    inner: Arc<Inner>,
    shutdown: impl Future<Output = ()>,
) -> Connections {
    server
        .serve_each(shutdown, move |stream| {
            serve_cluster_connection(stream, inner.clone())
        })
        .await
}

/// Who a request on the local socket comes from: the node's operator
/// (whoever can open the 0600 socket), with an admin's rights.
fn local_operator() -> shoal_net::Caller {
    shoal_net::Caller {
        addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        cert: Some(shoal_pki::CertInfo {
            role: shoal_pki::Role::Admin,
            id: "local-socket".to_string(),
            serial: shoal_pki::Serial::from_bytes(&[0]),
            not_before_unix_ms: 0,
            not_after_unix_ms: u64::MAX,
            generation: 0,
        }),
    }
}

/// Serve one socket connection with the cluster's routes.
async fn serve_cluster_connection<IO>(io: IO, inner: Arc<Inner>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let caller = Arc::new(local_operator());
    let service = service_fn(move |req| {
        let inner = inner.clone();
        let caller = caller.clone();
        async move {
            let resp = match crate::cluster_api::route(&inner, &caller, req).await {
                Ok(r) => r,
                Err(e) => shoal_net::error_reply(&e),
            };
            Ok::<_, Infallible>(resp)
        }
    });
    let result = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(io), service)
        .await;
    let _ = result;
}
