//! The node's control API: how `shoal deploy`, `ps`, `logs`, `kill`,
//! `snapshot` and `restore` talk to a running node (`shoal node start`).
//!
//! # Layers
//!
//! - this crate, `shoal-api`: [`types`] and [`cluster`] (the request and
//!   response bodies), the shared limits and the [`client`] the CLI uses.
//!   It links neither the runtime nor the daemon.
//! - `shoal-daemon`'s `api` module: the handlers (what each request does to
//!   a node), the routes (HTTP on top of them) and the listeners.
//!
//! # Routes
//!
//! | method | path | body | answer |
//! | --- | --- | --- | --- |
//! | GET | `/v1/node` | — | [`types::NodeStatus`] |
//! | POST | `/v1/modules?name=N` | wasm bytes (≤ [`MODULE_BYTES_MAX`]) | [`types::ModuleAdded`] |
//! | PUT | `/v1/names/{name}` | [`types::NameRequest`] | [`types::ModuleAdded`] |
//! | POST | `/v1/processes` | [`types::SpawnRequest`] | list of [`types::Spawned`] |
//! | GET | `/v1/processes` | — | list of [`types::ProcessSummary`] |
//! | GET | `/v1/processes/{pid}/logs?follow=true&from=N&epoch=E` ([`types::LogQuery`]) | — | stream of [`types::LogFrame`] |
//! | DELETE | `/v1/processes/{pid}` | — | [`types::ExitReport`] |
//! | POST | `/v1/processes/{pid}/snapshot` | [`types::SnapshotRequest`] | [`types::SnapshotReport`] |
//! | GET | `/v1/snapshots/{id}` | — | snapshot file bytes |
//! | POST | `/v1/snapshots` | snapshot file bytes (≤ [`SNAPSHOT_FILE_BYTES_MAX`]) | [`types::SnapshotImported`] |
//! | POST | `/v1/snapshots/{id}/restore` | [`types::RestoreRequest`] | [`types::Restored`] |
//! | GET | `/v1/kv/{bucket}/{key}?owner=&stale=` | — | [`kv::KvEntryView`] (404 if absent) |
//! | PUT | `/v1/kv/{bucket}/{key}?owner=` | the value's bytes (≤ [`kv::VALUE_BYTES_MAX`]) | [`kv::KvWritten`] |
//! | DELETE | `/v1/kv/{bucket}/{key}?owner=` | — | [`kv::KvDeleted`] |
//! | GET | `/v1/kv/{bucket}?prefix=&after=&limit=&owner=&stale=` | — | [`kv::KvPage`] |
//! | GET | `/v1/locks?stale=` | — | list of [`kv::LockSummary`] |
//!
//! JSON bodies are at most [`JSON_BYTES_MAX`]. Errors are JSON
//! [`types::ErrorBody`] `{"error": "..."}` with a status from
//! [`ApiError::status`]; the client prints them as `error: ...`.
//!
//! # Who may talk to the node
//!
//! The local daemon listens on `<data_dir>/node.sock`, a Unix socket created
//! with mode 0600 (bound in a private 0700 directory, then linked into
//! place, so it is never reachable with wider permissions). Connecting to a
//! Unix socket needs write permission on it, so **the socket's file
//! permissions are the authentication**: only the user who started the node
//! (and root) can deploy, kill or snapshot its processes. There is no other
//! check on the local socket; do not loosen its mode or put it in a
//! directory other users control.
//!
//! # Bounds
//!
//! Every body has a size limit (the `*_MAX` constants) checked against
//! `Content-Length` before reading and enforced while reading; every wait is
//! bounded ([`KILL_WAIT_MAX`], [`SNAPSHOT_WAIT_MAX`], request header reads),
//! except following a log, which lasts until the process ends or the client
//! hangs up. Snapshot uploads are never held whole: the node decodes them
//! as they arrive, holding at most the header and one page, stores each
//! verified page, and the snapshot exists only once the whole file's
//! checksum is right. An upload is refused as soon as its envelope
//! announces more than the node takes (enough for the largest memory a
//! process may have there, at most [`SNAPSHOT_FILE_BYTES_MAX`]), or as soon
//! as more bytes arrive than that.
//!
//! A restore grants the process only what the request grants
//! ([`types::RestoreRequest`]: directories, environment, memory cap), never
//! what the snapshot says; the local socket's owner is the node's operator
//! and may grant any directory but the data dir.
//!
//! # Ownership
//!
//! Processes, module names and snapshots belong to the identity (the
//! certificate's role and id) that created them; a guest's children are
//! its owner's. A client acts only on its own (kill, logs, snapshot,
//! migrate, restore over it, export or restore its snapshots, repoint its
//! module names) and `GET /v1/processes` lists only its own; an admin acts
//! on all (`shoal_pki::may_act`). A refusal is a 403 whose JSON `detail` is
//! a `shoal_pki::Forbidden` (`{"code": "not_owner" | "needs_admin", ...}`),
//! which the client returns as [`ClientError::Forbidden`].
//!
//! Buckets and locks belong to the owner of the processes that use them.
//! The key-value routes act on the caller's own buckets; `owner=ROLE:ID`
//! (or `cluster`) names another owner's, which only an admin may. Reads
//! are linearizable unless `stale=true`; writes go through Raft on behalf
//! of the caller's certificate, checked again when applied.
//! `GET /v1/locks` lists a client's own locks only, an admin's all.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod client;
pub mod cluster;
pub mod kv;
pub mod migrate;
pub mod types;
pub mod volumes;

pub use client::{Client, ClientError};

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Largest module accepted by `POST /v1/modules`: 256 MiB.
pub const MODULE_BYTES_MAX: u64 = 256 << 20;

/// Largest JSON request body: 1 MiB.
pub const JSON_BYTES_MAX: u64 = 1 << 20;

/// Largest JSON response a client reads: 64 MiB (a list of many
/// processes).
pub const JSON_RESPONSE_BYTES_MAX: u64 = 64 << 20;

/// Largest snapshot file accepted by `POST /v1/snapshots` (and read back by
/// the client from `GET /v1/snapshots/{id}`): 4 GiB of memory (the most a
/// 32-bit Wasm memory holds) plus 64 MiB for the header and page records.
pub const SNAPSHOT_FILE_BYTES_MAX: u64 = (4 << 30) + (64 << 20);

/// How long `DELETE /v1/processes/{pid}` waits for the process to end.
pub const KILL_WAIT_MAX: Duration = Duration::from_secs(10);

/// How long a snapshot waits for the process to reach a blocking call when
/// the request does not say.
pub const SNAPSHOT_WAIT_DEFAULT: Duration = Duration::from_secs(10);

/// The longest wait a snapshot request may ask for.
pub const SNAPSHOT_WAIT_MAX: Duration = Duration::from_secs(600);

/// How long a connection may take to send its request headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The media type of a snapshot file in a request or response body.
pub const SNAPSHOT_CONTENT_TYPE: &str = "application/vnd.shoal.snapshot";

/// The file name of the local daemon's socket in the data directory.
pub const SOCKET_FILE_NAME: &str = "node.sock";

/// Where the local daemon of `data_dir` listens: `<data_dir>/node.sock`.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_FILE_NAME)
}

/// Percent-encode a query or path component (everything but unreserved
/// characters).
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decode a percent-encoded component (`+` is a space, as in forms).
/// `None` if it is malformed or not UTF-8.
pub fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// How long a snapshot request may wait for the process to reach a capture
/// point: the asked time within [`SNAPSHOT_WAIT_MAX`], else
/// [`SNAPSHOT_WAIT_DEFAULT`]. Shared so the client's own timeout covers it.
pub fn snapshot_wait(wait_max_ms: Option<u64>) -> Duration {
    wait_max_ms
        .map(Duration::from_millis)
        .unwrap_or(SNAPSHOT_WAIT_DEFAULT)
        .min(SNAPSHOT_WAIT_MAX)
}
