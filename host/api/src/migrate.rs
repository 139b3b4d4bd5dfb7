//! What source and target say to each other during a migration (the
//! frozen process's own state, `Final`, is `shoal_daemon::migrate::wire`'s:
//! it carries the runtime's host state).
//!
//! Unary node-to-node requests (`POST`, node certificates only):
//!
//! | path | body | answer |
//! | --- | --- | --- |
//! | [`PATH_OFFER`] | JSON [`Offer`]: the module, memory size, every non-zero page's hash | JSON [`OfferAnswer`]: the pages the target lacks |
//! | [`PATH_PAGES`] | [`encode_pages`]: [`PagesHeader`] + those pages | `{}`; the target keeps each page under its offered hash once the process runs there, if its registry finds that hash right |
//! | [`PATH_DELTA`] | [`encode_pages`]: [`PagesHeader`] (with the frozen memory size, which may exceed the offered one) + pages changed since the offer (frozen process; no hashes) | `{}` |
//! | [`PATH_FINAL`] | JSON `Final`: memory size, zeroed pages, globals, host state | `{}`: the target holds the process, ready to start |
//! | [`PATH_ABORT`] | JSON [`Abort`] | `{}`: the target forgot it |
//! | [`PATH_STARTED`] | JSON [`Abort`] (the id) | JSON [`Started`], once the process runs there |
//!
//! Lane control messages ([`Control`]) travel on the ordinary per-peer
//! message lane, from the reserved sender pid `shoal_runtime::node::CONTROL_SENDER`
//! to the migrating pid, so that they stay in order with the messages
//! around them.

use serde::{Deserialize, Serialize};
use shoal_cluster::NodeId;

/// Offer a process: the target answers which pages it lacks.
pub const PATH_OFFER: &str = "/v1/peer/migrate/offer";
/// Pages the target asked for (kept there by their offered hashes, which
/// its registry checks).
pub const PATH_PAGES: &str = "/v1/peer/migrate/pages";
/// Pages that changed while the process ran on during the transfer.
pub const PATH_DELTA: &str = "/v1/peer/migrate/delta";
/// The rest of the frozen process.
pub const PATH_FINAL: &str = "/v1/peer/migrate/final";
/// The move is off: forget the process.
pub const PATH_ABORT: &str = "/v1/peer/migrate/abort";
/// Wait until the process runs on the target.
pub const PATH_STARTED: &str = "/v1/peer/migrate/started";

/// Largest body of a migration request: page batches are cut to fit.
pub const MIGRATE_BYTES_MAX: usize = 48 << 20;
/// Page bytes per [`PATH_PAGES`] / [`PATH_DELTA`] request.
pub const PAGES_CHUNK_BYTES: usize = 16 << 20;

/// A process offered to a target.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Offer {
    /// Names this migration in the requests that follow.
    pub id: String,
    /// The process (it keeps its pid).
    pub pid: u64,
    /// Its module (sha256 hex); the target fetches it if it lacks it.
    pub module: String,
    /// The node it comes from.
    pub source: NodeId,
    /// Its directory epoch now (the switch makes it `epoch + 1`).
    pub epoch: u64,
    /// Linear memory size at the offer.
    pub memory_bytes: u64,
    /// Page size of the page list.
    pub page_bytes: u32,
    /// Every non-zero page: (index, sha256 hex). Missing indices are zero.
    pub pages: Vec<(u32, String)>,
    /// The module was prepared with preemption points (the target compiles
    /// the same variant ahead of the freeze).
    #[serde(default)]
    pub preemptible: bool,
    /// The chunks of the process's private volumes at the pre-copy
    /// (sha256 hex, each once): the target fetches those it lacks from the
    /// source while the process still runs there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<String>,
    /// Its private volumes at the pre-copy (the runtime's `VolumeTree`s):
    /// the target rebuilds them while the process still runs on the
    /// source, so that after the freeze it writes only what changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_trees: Option<serde_json::Value>,
}

/// The pages a target lacks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OfferAnswer {
    /// Volume chunk bytes the target fetched for the offer.
    #[serde(default)]
    pub chunk_bytes_fetched: u64,
    /// Page indices to send, ascending.
    pub need: Vec<u32>,
}

/// Which pages a page batch carries, in order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PagesHeader {
    /// The migration.
    pub id: String,
    /// Page indices; the payload is `indices.len() * page_bytes` bytes.
    pub indices: Vec<u32>,
    /// On a [`PATH_DELTA`] batch: the linear memory size at the freeze.
    /// Memory may have grown since the offer; the target grows its image to
    /// this size (bounded by its limits) before it writes the pages, and
    /// checks every index against it. Absent on pre-copy batches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
}

/// Names a migration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Abort {
    /// The migration.
    pub id: String,
}

/// The process runs on the target.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Started {
    /// Volume chunk bytes the target fetched after the freeze (chunks
    /// changed since the offer).
    #[serde(default)]
    pub chunk_bytes_fetched: u64,
    /// When its first instruction there ran, Unix µs (the target's clock).
    pub resumed_unix_us: u64,
}

/// A message between nodes about a migration, on the message lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Control {
    /// Source → target: the switch is committed at `epoch`; start the
    /// process. Everything the source forwards follows it.
    Go {
        /// The new directory epoch.
        epoch: u64,
    },
    /// Node `origin` applied the switch to `epoch` and sends directly to
    /// the target from now on; nothing it sent before is behind this.
    /// Sent by `origin` to the source.
    Fence {
        /// The node that fenced.
        origin: NodeId,
        /// The directory epoch it applied.
        epoch: u64,
    },
    /// A [`Control::Fence`] passed on by the source to the target, after
    /// everything `origin` sent to the source before it.
    Fenced {
        /// The node that fenced.
        origin: NodeId,
        /// The directory epoch it applied.
        epoch: u64,
    },
}

impl Control {
    /// The lane payload.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parse a lane payload.
    pub fn decode(bytes: &[u8]) -> Option<Control> {
        serde_json::from_slice(bytes).ok()
    }
}

/// A page batch body: `u32` (big-endian) header length, the JSON header,
/// then the pages back to back.
pub fn encode_pages(header: &PagesHeader, pages: &[&[u8]]) -> Vec<u8> {
    let json = serde_json::to_vec(header).unwrap_or_default();
    let total: usize = pages.iter().map(|p| p.len()).sum();
    let mut out = Vec::with_capacity(4 + json.len() + total);
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(&json);
    for p in pages {
        out.extend_from_slice(p);
    }
    out
}

/// Why a page batch body is malformed.
#[derive(Debug, thiserror::Error)]
pub enum PagesError {
    /// Fewer than 4 bytes.
    #[error("page batch shorter than its length prefix")]
    NoPrefix,
    /// The header length points past the end.
    #[error("page batch header runs past the body")]
    HeaderPastEnd,
    /// The header is not a [`PagesHeader`].
    #[error("bad page batch header")]
    Header(#[source] serde_json::Error),
    /// The payload is not exactly one page per index.
    #[error("page batch carries {payload_bytes} bytes for {pages} pages of {page_bytes} bytes")]
    Payload {
        /// Bytes after the header.
        payload_bytes: usize,
        /// Pages the header lists.
        pages: usize,
        /// Bytes per page.
        page_bytes: u32,
    },
}

/// Split a page batch body into its header and payload, checking that the
/// payload is exactly `indices.len() * page_bytes`.
pub fn decode_pages(body: &[u8], page_bytes: u32) -> Result<(PagesHeader, &[u8]), PagesError> {
    let len_bytes: [u8; 4] = body
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or(PagesError::NoPrefix)?;
    let len = u32::from_be_bytes(len_bytes) as usize;
    let json = body
        .get(4..4usize.saturating_add(len))
        .ok_or(PagesError::HeaderPastEnd)?;
    let header: PagesHeader = serde_json::from_slice(json).map_err(PagesError::Header)?;
    let payload = &body[4 + len..];
    let want = header.indices.len() as u64 * page_bytes as u64;
    if payload.len() as u64 != want {
        return Err(PagesError::Payload {
            payload_bytes: payload.len(),
            pages: header.indices.len(),
            page_bytes,
        });
    }
    Ok((header, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_batches_round_trip_and_refuse_wrong_sizes() {
        let h = PagesHeader {
            id: "m1".into(),
            indices: vec![3, 7],
            memory_bytes: None,
        };
        let a = [1u8; 8];
        let b = [2u8; 8];
        let body = encode_pages(&h, &[&a, &b]);
        let (back, payload) = decode_pages(&body, 8).unwrap();
        assert_eq!(back.indices, vec![3, 7]);
        assert_eq!(&payload[8..], &b);
        assert!(matches!(
            decode_pages(&body, 4),
            Err(PagesError::Payload {
                payload_bytes: 16,
                pages: 2,
                page_bytes: 4
            })
        ));
        assert!(matches!(
            decode_pages(&body[..3], 8),
            Err(PagesError::NoPrefix)
        ));
        assert!(matches!(
            decode_pages(&[0, 0, 1, 0], 8),
            Err(PagesError::HeaderPastEnd)
        ));
        // A length prefix near u32::MAX must not overflow the bound check.
        assert!(matches!(
            decode_pages(&[0xff, 0xff, 0xff, 0xff, 0], 8),
            Err(PagesError::HeaderPastEnd)
        ));
    }

    #[test]
    fn control_messages_round_trip() {
        let c = Control::Fence {
            origin: 3,
            epoch: 9,
        };
        assert_eq!(Control::decode(&c.encode()), Some(c));
        assert_eq!(Control::decode(b"nonsense"), None);
    }
}
