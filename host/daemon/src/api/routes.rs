//! HTTP/1.1 over the handlers: paths, methods, body limits, JSON and
//! status codes (see the route table in [`super`]).
//!
//! [`route`] is generic over the request body, so any transport that yields
//! `http::Request`s (the Unix socket today, TCP + mTLS later) serves the
//! same API.

use super::error::ApiError;
use super::handlers::{self, LogCursor};
use super::types::{
    ErrorBody, LogFrame, LogQuery, NameRequest, RestoreRequest, SnapshotImported, SnapshotRequest,
    SpawnRequest, LOG_STREAM_CONTENT_TYPE,
};
use super::{percent_decode, JSON_BYTES_MAX, MODULE_BYTES_MAX, SNAPSHOT_FILE_BYTES_MAX};
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Body, Frame};
use hyper::{header, Method, Request, Response, StatusCode};
use shoal_registry::Sha256;
use shoal_runtime::grants::DirAuthority;
use shoal_runtime::node::Node;
use shoal_runtime::pid::Pid;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// The body of every response.
pub type ApiBody = BoxBody<Bytes, Infallible>;

/// MIME type of snapshot files.
pub use super::SNAPSHOT_CONTENT_TYPE;

/// Answer one request from a caller who may grant host directories as far
/// as `authority` reaches (the local socket's owner: any; a remote
/// client: only the grantable ones).
pub async fn route<B>(node: &Node, req: Request<B>, authority: DirAuthority) -> Response<ApiBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    match dispatch(node, req, authority).await {
        Ok(resp) => resp,
        Err(e) => error_response(&e),
    }
}

/// The JSON error response for `e`.
pub fn error_response(e: &ApiError) -> Response<ApiBody> {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(
        status,
        &ErrorBody {
            error: e.to_string(),
            gone: None,
            detail: None,
        },
    )
}

fn json_response<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<ApiBody> {
    let body = match serde_json::to_vec(value) {
        Ok(b) => b,
        Err(e) => {
            return error_response(&ApiError::Internal(format!(
                "cannot encode the answer: {e}"
            )))
        }
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)).boxed());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn ok<T: serde::Serialize>(value: &T) -> Result<Response<ApiBody>, ApiError> {
    Ok(json_response(StatusCode::OK, value))
}

/// The query parameter `key`, percent-decoded.
fn query_param(query: Option<&str>, key: &str) -> Result<Option<String>, ApiError> {
    let Some(q) = query else { return Ok(None) };
    for pair in q.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == key {
            return percent_decode(v).map(Some).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "query parameter `{key}` is not valid percent-encoded UTF-8"
                ))
            });
        }
    }
    Ok(None)
}

fn query_u64(query: Option<&str>, key: &str) -> Result<Option<u64>, ApiError> {
    query_param(query, key)?
        .map(|v| {
            v.parse::<u64>().map_err(|_| {
                ApiError::BadRequest(format!(
                    "query parameter `{key}` must be a whole number, not `{v}`"
                ))
            })
        })
        .transpose()
}

/// The query of a logs request (`follow`, `from`, `epoch`).
pub(crate) fn log_query(query: Option<&str>) -> Result<LogQuery, ApiError> {
    Ok(LogQuery {
        follow: query_flag(query, "follow")?,
        from: query_u64(query, "from")?.unwrap_or(0),
        epoch: query_u64(query, "epoch")?,
    })
}

fn query_flag(query: Option<&str>, key: &str) -> Result<bool, ApiError> {
    match query_param(query, key)?.as_deref() {
        None | Some("false") | Some("0") => Ok(false),
        Some("") | Some("true") | Some("1") => Ok(true),
        Some(other) => Err(ApiError::BadRequest(format!(
            "query parameter `{key}` must be true or false, not `{other}`"
        ))),
    }
}

/// Read a whole body, refusing more than `max` bytes (before reading, by
/// `Content-Length`, and while reading).
async fn read_body<B>(req: Request<B>, max: u64, what: &str) -> Result<Bytes, ApiError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let too_large = || ApiError::TooLarge(format!("{what} is over the limit of {max} bytes"));
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > max {
            return Err(too_large());
        }
    }
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    match Limited::new(req.into_body(), limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(too_large()),
        Err(e) => Err(ApiError::BadRequest(format!(
            "reading the {what} failed: {e}"
        ))),
    }
}

/// Read a JSON body; an empty body means `{}` (all defaults).
async fn read_json<T, B>(req: Request<B>) -> Result<T, ApiError>
where
    T: serde::de::DeserializeOwned,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let bytes = read_body(req, JSON_BYTES_MAX, "JSON request body").await?;
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &bytes
    };
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON request: {e}")))
}

fn parse_pid(text: &str) -> Result<Pid, ApiError> {
    text.parse::<Pid>()
        .map_err(|e| ApiError::BadRequest(e.to_string()))
}

fn parse_id(text: &str) -> Result<Sha256, ApiError> {
    let text = percent_decode(text).unwrap_or_else(|| text.to_string());
    text.parse::<Sha256>().map_err(|_| {
        ApiError::BadRequest(format!(
            "`{text}` is not a snapshot id (expected sha256:<64 hex>)"
        ))
    })
}

fn method_not_allowed(method: &Method, allowed: &str) -> ApiError {
    ApiError::MethodNotAllowed(format!(
        "method {method} is not allowed here (allowed: {allowed})"
    ))
}

async fn dispatch<B>(
    node: &Node,
    req: Request<B>,
    authority: DirAuthority,
) -> Result<Response<ApiBody>, ApiError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let query = query.as_deref();
    let segments: Vec<&str> = path
        .trim_start_matches('/')
        .trim_end_matches('/')
        .split('/')
        .collect();
    match segments.as_slice() {
        ["v1", "node"] => match method {
            Method::GET => ok(&handlers::status(node)),
            m => Err(method_not_allowed(&m, "GET")),
        },
        ["v1", "modules"] => match method {
            Method::POST => {
                let name = query_param(query, "name")?.filter(|n| !n.is_empty());
                let wasm = read_body(req, MODULE_BYTES_MAX, "module").await?;
                ok(&handlers::add_module(node, wasm, name).await?)
            }
            m => Err(method_not_allowed(&m, "POST")),
        },
        ["v1", "names", name] => match method {
            Method::PUT => {
                let name = percent_decode(name).ok_or_else(|| {
                    ApiError::BadRequest("the name is not valid percent-encoded UTF-8".into())
                })?;
                let body: NameRequest = read_json(req).await?;
                ok(&handlers::set_name(node, name, body).await?)
            }
            m => Err(method_not_allowed(&m, "PUT")),
        },
        ["v1", "processes"] => match method {
            Method::GET => ok(&handlers::processes(node).await?),
            Method::POST => {
                let body: SpawnRequest = read_json(req).await?;
                ok(&handlers::spawn(node, body).await?)
            }
            m => Err(method_not_allowed(&m, "GET, POST")),
        },
        ["v1", "processes", pid] => match method {
            Method::DELETE => ok(&handlers::kill(node, parse_pid(pid)?).await?),
            m => Err(method_not_allowed(&m, "DELETE")),
        },
        ["v1", "processes", pid, "logs"] => match method {
            Method::GET => {
                let q = log_query(query)?;
                let cursor = LogCursor::open_at(node, parse_pid(pid)?, q.from)?;
                Ok(log_stream(cursor, q.follow))
            }
            m => Err(method_not_allowed(&m, "GET")),
        },
        ["v1", "processes", pid, "snapshot"] => match method {
            Method::POST => {
                let pid = parse_pid(pid)?;
                let body: SnapshotRequest = read_json(req).await?;
                ok(&handlers::snapshot(node, pid, body).await?)
            }
            m => Err(method_not_allowed(&m, "POST")),
        },
        ["v1", "snapshots"] => match method {
            Method::POST => ok(&import_streamed(node, req).await?),
            m => Err(method_not_allowed(&m, "POST")),
        },
        ["v1", "snapshots", id] => match method {
            Method::GET => {
                let bytes = handlers::export_snapshot(node, parse_id(id)?).await?;
                let mut resp = Response::new(Full::new(Bytes::from(bytes)).boxed());
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static(SNAPSHOT_CONTENT_TYPE),
                );
                Ok(resp)
            }
            m => Err(method_not_allowed(&m, "GET")),
        },
        ["v1", "snapshots", id, "restore"] => match method {
            Method::POST => {
                let id = parse_id(id)?;
                let body: RestoreRequest = read_json(req).await?;
                let (restored, _) = handlers::restore(node, id, body, authority, None).await?;
                ok(&restored)
            }
            m => Err(method_not_allowed(&m, "POST")),
        },
        _ => Err(ApiError::NotFound(format!(
            "no API route {method} {path} (is the CLI newer than the node?)"
        ))),
    }
}

/// A blocking [`std::io::Read`] over body chunks sent from an async task.
struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    buf: Bytes,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.buf.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.buf = b,
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf[..n]);
        let _ = self.buf.split_to(n);
        Ok(n)
    }
}

/// `POST /v1/snapshots`: import a snapshot file as it arrives. The body is
/// never held whole: a blocking decoder checks and stores it chunk by chunk
/// ([`Node::import_snapshot_stream`]), and the upload is cut off as soon as
/// it passes the node's bound, or the decoder refuses it.
pub(crate) async fn import_streamed<B>(
    node: &Node,
    req: Request<B>,
) -> Result<SnapshotImported, ApiError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let max = node.snapshot_file_bytes_max().min(SNAPSHOT_FILE_BYTES_MAX);
    let too_large = || {
        ApiError::TooLarge(format!(
            "the snapshot file is over the limit of {max} bytes"
        ))
    };
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > max {
            return Err(too_large());
        }
    }
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let decoder = {
        let node = node.clone();
        tokio::task::spawn_blocking(move || {
            let mut reader = ChannelReader {
                rx,
                buf: Bytes::new(),
            };
            node.import_snapshot_stream(&mut reader)
        })
    };
    let mut decoder = decoder;
    let mut body = std::pin::pin!(req.into_body());
    let mut received: u64 = 0;
    let decided = loop {
        tokio::select! {
            // The decoder can refuse the file before it has all arrived
            // (e.g. after the 32 bytes that announce its length): answer
            // at once, whatever the client still means to send.
            verdict = &mut decoder => break Some(verdict),
            frame = body.frame() => {
                let Some(frame) = frame else { break None };
                let frame = frame.map_err(|e| {
                    ApiError::BadRequest(format!("reading the snapshot file failed: {e}"))
                })?;
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                received += data.len() as u64;
                if received > max {
                    return Err(too_large());
                }
                // Fails only once the decoder has stopped: its verdict
                // comes next.
                let _ = tx.send(data).await;
            }
        }
    };
    drop(tx);
    let verdict = match decided {
        Some(v) => v,
        None => decoder.await,
    };
    let id = verdict.map_err(|e| ApiError::Internal(format!("snapshot reader failed: {e}")))??;
    Ok(SnapshotImported { id })
}

/// A response body fed by a channel of log frames.
struct LogBody {
    rx: mpsc::Receiver<LogFrame>,
}

impl Body for LogBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|f| {
            f.map(|f| {
                let mut out = Vec::new();
                f.encode(&mut out);
                Ok(Frame::data(Bytes::from(out)))
            })
        })
    }
}

/// Stream a process's log: a task pumps frames into a small channel, the
/// response body drains it. When the client hangs up the body is dropped,
/// the channel closes and the pump stops.
fn log_stream(cursor: LogCursor, follow: bool) -> Response<ApiBody> {
    let (tx, rx) = mpsc::channel(LOG_FRAMES_QUEUED_MAX);
    tokio::spawn(cursor.pump(follow, tx));
    log_response(rx)
}

/// Frames queued between a log pump and its response body.
pub(crate) const LOG_FRAMES_QUEUED_MAX: usize = 16;

/// A log response whose body is the frames `rx` receives, as they come.
pub(crate) fn log_response(rx: mpsc::Receiver<LogFrame>) -> Response<ApiBody> {
    let mut resp = Response::new(LogBody { rx }.boxed());
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(LOG_STREAM_CONTENT_TYPE),
    );
    resp
}
