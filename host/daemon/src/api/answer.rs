//! Answers to peers and remote clients: a JSON body, or a peer's failure
//! passed on as this node's own answer.

/// Encode an answer body as JSON (failing to is this node's fault: 500).
pub fn encode_json<T: serde::Serialize>(value: &T) -> Result<bytes::Bytes, shoal_net::RemoteError> {
    serde_json::to_vec(value)
        .map(bytes::Bytes::from)
        .map_err(|e| shoal_net::RemoteError::new(500, format!("cannot encode the answer: {e}")))
}

/// A failed call to a peer, as our own answer: the peer's refusal passes
/// through with its status; not reaching it is a 503 saying `what` failed.
pub fn from_net(e: shoal_net::NetError, what: &str) -> shoal_net::RemoteError {
    match e {
        shoal_net::NetError::Remote {
            status,
            message,
            detail,
        } => shoal_net::RemoteError {
            status,
            message,
            detail,
        },
        other => shoal_net::RemoteError::new(503, format!("{what}: {other}")),
    }
}
