//! Body helpers: bounded reading, replies, and the channel-fed streaming
//! body the lane uses in both directions.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame};
use tokio::sync::mpsc;

/// The body type of every response and request the transport builds; the
/// same as `shoal_daemon::api::routes::ApiBody`.
pub type BoxBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// An error to answer a request with: HTTP status, message for people and,
/// where the caller must act on the kind of failure, a typed `detail` (a
/// serialized error enum of the route's own). Sent as JSON
/// `{"error": message, "detail": …}`; callers decode `detail`, never the
/// message text.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct RemoteError {
    /// HTTP status code.
    pub status: u16,
    /// What went wrong, for the caller.
    pub message: String,
    /// The typed error, for programs (absent where the status says all).
    pub detail: Option<serde_json::Value>,
}

impl RemoteError {
    /// An error with `status` and `message`.
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        RemoteError {
            status,
            message: message.into(),
            detail: None,
        }
    }

    /// An error carrying `detail` (a typed error) beside its message, which
    /// is `detail`'s `Display`.
    pub fn typed<E: serde::Serialize + std::fmt::Display>(status: u16, detail: &E) -> Self {
        RemoteError {
            status,
            message: detail.to_string(),
            detail: serde_json::to_value(detail).ok(),
        }
    }
}

/// Read a whole body of at most `bytes_max` bytes. Over the limit (by its
/// `content-length` or as it arrives) it stops reading and returns a 413
/// [`RemoteError`]; a broken stream is a 400.
pub async fn read_body(
    req: hyper::Request<hyper::body::Incoming>,
    bytes_max: usize,
) -> Result<Bytes, RemoteError> {
    let too_large = || {
        RemoteError::new(
            413,
            format!("request body exceeds the limit of {bytes_max} bytes"),
        )
    };
    if let Some(len) = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > bytes_max as u64 {
            return Err(too_large());
        }
    }
    read_limited(req.into_body(), bytes_max)
        .await
        .map_err(|e| match e {
            ReadError::TooLarge => too_large(),
            ReadError::Body(m) => RemoteError::new(400, format!("reading the request body: {m}")),
        })
}

/// Why [`read_limited`] failed.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// More than the limit.
    TooLarge,
    /// The stream failed.
    Body(String),
}

/// Collect `body` up to `bytes_max` bytes.
pub(crate) async fn read_limited<B>(mut body: B, bytes_max: usize) -> Result<Bytes, ReadError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut out = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ReadError::Body(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > bytes_max {
                return Err(ReadError::TooLarge);
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out.freeze())
}

/// A response with `status` (500 if invalid) and `body`.
pub fn reply(status: u16, body: Bytes) -> hyper::Response<BoxBody> {
    let mut resp = hyper::Response::new(Full::new(body).boxed());
    *resp.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    resp
}

/// The JSON error response `{"error": message}` for `err`, like the
/// control API's.
pub fn error_reply(err: &RemoteError) -> hyper::Response<BoxBody> {
    let body = match &err.detail {
        Some(detail) => serde_json::json!({ "error": err.message, "detail": detail }),
        None => serde_json::json!({ "error": err.message }),
    }
    .to_string();
    let mut resp = reply(err.status, Bytes::from(body));
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// The message of an error body: its JSON `error` field, else the text.
pub fn error_message(body: &[u8]) -> String {
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(body) {
        if let Some(serde_json::Value::String(m)) = map.get("error") {
            return m.clone();
        }
    }
    String::from_utf8_lossy(body).into_owned()
}

/// The typed `detail` of a JSON error body, if it has one.
pub fn error_detail(body: &[u8]) -> Option<serde_json::Value> {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(mut map)) => map.remove("detail"),
        _ => None,
    }
}

/// A streaming body fed by a bounded channel of chunks; ends when every
/// sender is dropped. The channel's bound is the back-pressure.
#[derive(Debug)]
pub(crate) struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl ChannelBody {
    /// A body and the sender that feeds it, holding at most `chunks_max`
    /// chunks.
    pub(crate) fn channel(chunks_max: usize) -> (mpsc::Sender<Bytes>, ChannelBody) {
        let (tx, rx) = mpsc::channel(chunks_max.max(1));
        (tx, ChannelBody { rx })
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b))))
    }
}
