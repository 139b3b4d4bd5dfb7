//! Request and response bodies of the control API, shared by the server and
//! the client so the two cannot drift apart.
//!
//! Every JSON body is one of these structs. They are wire types, separate
//! from the node's own types on purpose: the node can change its internals
//! (e.g. how it measures a snapshot) without changing what scripts see, and a
//! later transport (TCP + mTLS between cluster nodes) sends the same bodies.
//!
//! Process output is not JSON: `GET /v1/processes/{pid}/logs` answers with a
//! stream of binary [`LogFrame`]s, so output bytes arrive exactly as the
//! process wrote them (no lossy text conversion, no base64), and a follower
//! can print each chunk as soon as it arrives.

use serde::{Deserialize, Serialize};
use shoal_abi::pid::Pid;
use shoal_abi::process::ExitStatus;
use shoal_abi::Stream;
use shoal_registry::Sha256;

/// The body of every error response: `{"error": "..."}`, with the HTTP
/// status telling the class of failure (see [`super::ApiError`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, in words meant for the person at the terminal.
    pub error: String,
    /// With status 410 (`Gone`): the process asked about has exited, and
    /// what is known of its end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gone: Option<ProcessGone>,
    /// The typed error, for programs (e.g. with status 403 a
    /// [`shoal_pki::Forbidden`], tagged by its `code`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
}

/// A process that has exited, as a `410 Gone` answer describes it (e.g. to
/// `POST /v1/processes/{pid}/migrate`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessGone {
    /// The process.
    pub pid: Pid,
    /// When it ended, Unix ms, if the answering node saw it end.
    pub exited_unix_ms: Option<u64>,
    /// How it ended, if the answering node saw it end.
    pub reason: Option<shoal_abi::process::ExitReason>,
}

/// `GET /v1/node`: who is answering, so clients can check they reached a
/// Shoal node and what it can take.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The `shoal` version the node runs.
    pub version: String,
    /// The node's data directory.
    pub data_dir: String,
    /// Live processes now.
    pub processes_live: usize,
    /// Most processes the node runs at once.
    pub processes_max: u32,
    /// Default memory cap of a process, in bytes.
    pub process_memory_bytes_max: u64,
}

/// `POST /v1/modules` (and `PUT /v1/names/{name}`): a module now in the
/// node's registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleAdded {
    /// Its content hash, the stable way to refer to it.
    pub hash: Sha256,
    /// The name it was recorded under, if one was asked for.
    pub name: Option<String>,
    /// Its size in bytes.
    pub size_bytes: u64,
}

/// `PUT /v1/names/{name}`: point a registry name at a module the node
/// already has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameRequest {
    /// The module: `sha256:…`, bare hex, or another name.
    pub module: String,
}

/// `POST /v1/processes`: start `count` processes of one module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpawnRequest {
    /// The module: `sha256:…`, bare hex, or a registry name.
    pub module: String,
    /// `argv[0]` the program sees (default: `module` as given).
    #[serde(default)]
    pub argv0: Option<String>,
    /// Arguments after `argv[0]`.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment variables, in order.
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// How many identical processes to start (at least 1). All or none:
    /// if one fails to start, those already started are killed.
    #[serde(default = "one")]
    pub count: u32,
    /// Memory cap of each process, in bytes (default: the node's).
    #[serde(default)]
    pub memory_bytes_max: Option<u64>,
    /// In a cluster: run on this node (by name). Default: the scheduler
    /// chooses (a node without a cluster runs everything itself).
    #[serde(default)]
    pub node: Option<String>,
    /// In a cluster: run only on nodes carrying all these labels.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Run the preemptible variant: every loop is a capture point, so the
    /// processes can be snapshotted even while they compute (costs CPU in
    /// loops; see `SpawnSpec::preemptible`).
    #[serde(default)]
    pub preemptible: bool,
    /// Private volumes: a directory per process at each guest path, empty
    /// at first, that its snapshots and moves carry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeRequest>,
    /// When the processes come back (`shoal deploy --restart`), how often
    /// they are checkpointed and on how many other nodes. `None`: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<shoal_cluster::state::failover::RestartPolicy>,
}

/// A private volume asked for at spawn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRequest {
    /// The absolute path the guest sees, e.g. `/data`.
    pub guest: String,
    /// Most bytes its files may hold (default 1 GiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_max: Option<u64>,
    /// Most files and directories (default 100,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files_max: Option<u64>,
    /// Mount the caller's shared volume of this name instead (its quotas
    /// are the volume's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<String>,
}

fn one() -> u32 {
    1
}

/// One started process, in the answer to `POST /v1/processes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spawned {
    /// Its pid.
    pub pid: Pid,
    /// Its module.
    pub module: Sha256,
    /// The node it runs on (in a cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// One live process, in the answer to `GET /v1/processes`.
///
/// In a cluster, a process whose node could not be asked (declared dead
/// by the failure detector, or not answering) is still listed, from the
/// replicated directory, with `state: unknown`, its node, and
/// `node_state` saying what is known of that node; the fields only its
/// node could tell (module, age, mailbox) are then `null`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessSummary {
    /// Its pid.
    pub pid: Pid,
    /// Its module's hash (`None` when its node could not be asked).
    pub module: Option<Sha256>,
    /// Registry names pointing at that module (possibly none).
    pub module_names: Vec<String>,
    /// When it started, in milliseconds since the Unix epoch.
    pub started_at_unix_ms: Option<u64>,
    /// How long it has been running, in milliseconds, when the node answered.
    pub age_ms: Option<u64>,
    /// Messages waiting in its mailbox.
    pub mailbox_len: Option<usize>,
    /// The node it runs on (in a cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// `running` (its node listed it just now) or `unknown`.
    #[serde(default)]
    pub state: ProcessState,
    /// For an `unknown` or `lost` process: what is known of its node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_state: Option<NodeReach>,
    /// For a `lost` process: why it does not come back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost: Option<String>,
    /// Its restart policy and latest checkpoint, if it may come back
    /// (`shoal deploy --restart`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<RestartInfo>,
    /// Which compiler made the code it runs (`None` when its node could
    /// not be asked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_tier: Option<CodeTier>,
}

/// Which compiler made a process's code: a process that had to wait for a
/// big module starts with the baseline compiler's code (fast to compile,
/// slower to run) while the optimizing compile goes on in the background;
/// processes started after it run the optimized code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CodeTier {
    /// wasmtime's Winch.
    Baseline,
    /// wasmtime's Cranelift.
    Optimized,
}

/// A process's restart policy and latest complete checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartInfo {
    /// `on-failure` or `always`.
    pub policy: String,
    /// Its checkpoint interval, ms.
    pub checkpoint_every_ms: u64,
    /// Copies of each checkpoint on other nodes.
    pub replicas: u8,
    /// 0 for its first run; one more per resume or restart.
    pub incarnation: u64,
    /// Its latest complete checkpoint's number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_seq: Option<u64>,
    /// How old that checkpoint is, ms (two nodes' wall clocks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_age_ms: Option<u64>,
    /// The nodes holding it, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checkpoint_holders: Vec<String>,
}

/// One failover event (`GET /v1/events`, `shoal events`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessEvent {
    /// Cluster-wide sequence number.
    pub seq: u64,
    /// The process.
    pub pid: Pid,
    /// When, Unix ms.
    pub at_unix_ms: u64,
    /// `resumed`, `lost` or `restarted`.
    pub kind: String,
    /// The node it was on (`resumed`, `lost`) or restarted on.
    pub node: String,
    /// Where it resumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// The checkpoint it resumed from (`None`: fresh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_seq: Option<u64>,
    /// How old that checkpoint was, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_age_ms: Option<u64>,
    /// Its incarnation after the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incarnation: Option<u64>,
    /// In words, e.g. `resumed on n3 from checkpoint 41, 180 ms old`.
    pub text: String,
}

/// Whether a listed process was seen by its node just now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessState {
    /// Its node answered and lists it.
    #[default]
    Running,
    /// Its node could not be asked: the directory says it runs there, and
    /// nothing more is known.
    Unknown,
    /// Its node was declared dead and it does not come back (its restart
    /// policy is `never`, or no node had room): it runs again only if its
    /// node returns.
    Lost,
}

/// Why a node's processes could not be listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeReachState {
    /// The Raft leader's failure detector declared it dead: not asked.
    Dead,
    /// Not declared dead, but it did not answer the listing.
    Unreachable,
}

/// What is known of a node whose processes could not be listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeReach {
    /// Dead or unreachable.
    pub state: NodeReachState,
    /// Its liveness epoch.
    pub liveness_epoch: u64,
    /// When it was declared dead, Unix ms (the leader's clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_since_unix_ms: Option<u64>,
    /// What happened, in words.
    pub detail: String,
}

/// How a process ended: the answer to `DELETE /v1/processes/{pid}`, and the
/// end of a followed log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitReport {
    /// The process.
    pub pid: Pid,
    /// The exit code a shell would see (137 after a kill, 134 after a trap).
    pub code: i32,
    /// Why it ended, machine readable.
    pub reason: shoal_abi::process::ExitReason,
    /// Why it ended, in words (`process 3 killed`).
    pub message: String,
    /// With reason `moved`, at the end of a log stream: where it went, once
    /// the node that streamed it saw the move decided. A follower asks
    /// again with `epoch` (see [`LogQuery`]), so the node it asks waits
    /// until it knows of the move too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved_to: Option<MovedTo>,
}

impl From<&ExitStatus> for ExitReport {
    fn from(s: &ExitStatus) -> Self {
        ExitReport {
            pid: s.pid,
            code: s.code(),
            reason: s.reason.clone(),
            message: s.to_string(),
            moved_to: None,
        }
    }
}

/// Where a process went (see [`ExitReport::moved_to`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MovedTo {
    /// The node's name.
    pub node: String,
    /// The process's directory epoch after the move.
    pub epoch: u64,
}

/// `GET /v1/processes/{pid}/logs?follow=&from=&epoch=`: what to read.
///
/// Positions count every byte the process wrote to any stream, also on
/// the nodes it ran on before, and the bytes the log cap dropped; they are
/// the same on every node (see `shoal_runtime::log::LogView`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogQuery {
    /// Keep streaming until the process ends (or moves away).
    #[serde(default)]
    pub follow: bool,
    /// Start at this position: the bytes the reader already has (output
    /// received plus bytes reported dropped). Nothing before it is sent.
    #[serde(default)]
    pub from: u64,
    /// The reader saw the process move to this directory epoch
    /// ([`MovedTo::epoch`]): the node asked waits (bounded) until its own
    /// view of the directory is that recent before it looks for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
}

impl LogQuery {
    /// The query string, without `?`.
    pub fn to_query(&self) -> String {
        let mut q = format!("follow={}&from={}", self.follow, self.from);
        if let Some(e) = self.epoch {
            q.push_str(&format!("&epoch={e}"));
        }
        q
    }
}

/// `POST /v1/processes/{pid}/snapshot`: capture a process at its next
/// blocking call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRequest {
    /// Stop the process once captured (else it goes on).
    #[serde(default)]
    pub stop: bool,
    /// Longest wait for the process to reach a blocking call, in
    /// milliseconds (default [`super::SNAPSHOT_WAIT_DEFAULT`], at most
    /// [`super::SNAPSHOT_WAIT_MAX`]).
    #[serde(default)]
    pub wait_max_ms: Option<u64>,
}

/// The answer to `POST /v1/processes/{pid}/snapshot`: what was captured and
/// what it cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotReport {
    /// The snapshot's id (sha256 of its manifest).
    pub id: Sha256,
    /// The process captured.
    pub pid: Pid,
    /// Its module.
    pub module: Sha256,
    /// The snapshot this one is an increment of, if any.
    pub parent: Option<Sha256>,
    /// Size of the process's linear memory, in bytes.
    pub memory_bytes: u64,
    /// Non-zero pages in the snapshot (zero pages are not stored).
    pub pages_total: usize,
    /// Pages not already in the registry (the rest were deduplicated).
    pub pages_new: usize,
    /// Bytes of those new pages.
    pub bytes_new: u64,
    /// How long the node waited for the process to reach a blocking call
    /// (including the unwind and copy-out of its state), in milliseconds.
    pub waited_ms: f64,
    /// How long hashing and storing the pages and manifest took after the
    /// copy-out, in milliseconds.
    pub capture_ms: f64,
    /// The blocking call the process was captured in (e.g. `recv`).
    pub pending_call: String,
    /// True when the process was stopped after the capture.
    pub stopped: bool,
}

/// The answer to `POST /v1/snapshots`: a snapshot file imported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotImported {
    /// The snapshot's id, for `POST /v1/snapshots/{id}/restore`.
    pub id: Sha256,
}

/// `POST /v1/snapshots/{id}/restore`: start a process from a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreRequest {
    /// Replace the process the snapshot was taken from if it still runs
    /// here, instead of running beside it (the node's semantics of
    /// `Node::restore_snapshot(.., replace)`).
    #[serde(default)]
    pub replace: bool,
    /// Host directories to preopen for the restored process. A snapshot
    /// grants nothing by itself: every guest directory the process had
    /// must be granted again, or the restore is refused naming it. A
    /// client may grant only directories the node lists as grantable
    /// (`shoal node start --grantable-dir`); nobody may grant the node's
    /// data dir.
    #[serde(default)]
    pub dirs: Vec<shoal_cluster::GrantedDir>,
    /// Environment variables of the restored process (none from the
    /// snapshot).
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Memory cap of the restored process, in bytes (default: the node's).
    #[serde(default)]
    pub memory_bytes_max: Option<u64>,
}

/// The answer to `POST /v1/snapshots/{id}/restore`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restored {
    /// The snapshot restored.
    pub id: Sha256,
    /// The new process's pid.
    pub pid: Pid,
}

/// MIME type of the log stream (`GET /v1/processes/{pid}/logs`).
pub const LOG_STREAM_CONTENT_TYPE: &str = "application/vnd.shoal.log-frames";

/// Largest frame payload a decoder accepts (a process log holds at most a
/// few MiB; this keeps a broken peer from making a client allocate without
/// bound).
pub const LOG_FRAME_BYTES_MAX: usize = 64 << 20;

/// One item of a log stream.
///
/// On the wire a frame is `kind: u8`, `length: u32 LE`, then `length`
/// payload bytes:
///
/// | kind | frame | payload |
/// | --- | --- | --- |
/// | 1 | stdout output | the bytes |
/// | 2 | stderr output | the bytes |
/// | 3 | a `log` call | level (u8), then the bytes |
/// | 4 | output was lost | u64 LE: bytes dropped (log full, or older than what the node keeps) |
/// | 5 | end | JSON [`ExitReport`] if the process has ended, else `null` |
///
/// A stream always ends with exactly one `End` frame; a stream cut short
/// without one means the connection (or the node) went away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogFrame {
    /// Bytes the process wrote.
    Output {
        /// Which stream.
        stream: Stream,
        /// The bytes.
        data: Vec<u8>,
    },
    /// Output bytes that were lost before they could be sent.
    Dropped(u64),
    /// The stream is over; the exit report if the process has ended.
    End(Option<ExitReport>),
}

/// A log stream could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum LogFrameError {
    /// A frame of unknown kind (a newer node?).
    #[error("log stream: unknown frame kind {0}")]
    UnknownKind(u8),
    /// A frame larger than [`LOG_FRAME_BYTES_MAX`].
    #[error("log stream: frame of {0} bytes is over the limit")]
    TooLarge(usize),
    /// A frame whose payload does not match its kind.
    #[error("log stream: malformed frame: {0}")]
    Malformed(String),
}

impl LogFrame {
    /// Append the wire form of this frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let (kind, payload): (u8, std::borrow::Cow<'_, [u8]>) = match self {
            LogFrame::Output {
                stream: Stream::Stdout,
                data,
            } => (1, data.as_slice().into()),
            LogFrame::Output {
                stream: Stream::Stderr,
                data,
            } => (2, data.as_slice().into()),
            LogFrame::Output {
                stream: Stream::Log(level),
                data,
            } => {
                let mut p = Vec::with_capacity(data.len() + 1);
                p.push(*level);
                p.extend_from_slice(data);
                (3, p.into())
            }
            LogFrame::Dropped(n) => (4, n.to_le_bytes().to_vec().into()),
            LogFrame::End(report) => (
                5,
                serde_json::to_vec(report)
                    .unwrap_or_else(|_| b"null".to_vec())
                    .into(),
            ),
        };
        out.push(kind);
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&payload);
    }
}

/// Splits a byte stream into [`LogFrame`]s, however the bytes are chunked.
#[derive(Debug, Default)]
pub struct LogFrameDecoder {
    buf: Vec<u8>,
}

impl LogFrameDecoder {
    /// A decoder with nothing buffered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// True when bytes of an incomplete frame are buffered.
    pub fn has_partial(&self) -> bool {
        !self.buf.is_empty()
    }

    /// The next complete frame, if one is buffered.
    pub fn next_frame(&mut self) -> Result<Option<LogFrame>, LogFrameError> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let kind = self.buf[0];
        let len = u32::from_le_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > LOG_FRAME_BYTES_MAX {
            return Err(LogFrameError::TooLarge(len));
        }
        if self.buf.len() < 5 + len {
            return Ok(None);
        }
        let payload: Vec<u8> = self.buf[5..5 + len].to_vec();
        self.buf.drain(..5 + len);
        let frame = match kind {
            1 => LogFrame::Output {
                stream: Stream::Stdout,
                data: payload,
            },
            2 => LogFrame::Output {
                stream: Stream::Stderr,
                data: payload,
            },
            3 => {
                let (level, data) = payload
                    .split_first()
                    .ok_or_else(|| LogFrameError::Malformed("log frame without a level".into()))?;
                LogFrame::Output {
                    stream: Stream::Log(*level),
                    data: data.to_vec(),
                }
            }
            4 => {
                let n: [u8; 8] = payload
                    .as_slice()
                    .try_into()
                    .map_err(|_| LogFrameError::Malformed("dropped frame is not 8 bytes".into()))?;
                LogFrame::Dropped(u64::from_le_bytes(n))
            }
            5 => LogFrame::End(
                serde_json::from_slice(&payload)
                    .map_err(|e| LogFrameError::Malformed(format!("end frame: {e}")))?,
            ),
            other => return Err(LogFrameError::UnknownKind(other)),
        };
        Ok(Some(frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_abi::process::ExitReason;

    #[test]
    fn log_frames_roundtrip_in_any_chunking() {
        let frames = vec![
            LogFrame::Output {
                stream: Stream::Stdout,
                data: b"hello\n".to_vec(),
            },
            LogFrame::Output {
                stream: Stream::Stderr,
                data: vec![0xff, 0, 1],
            },
            LogFrame::Output {
                stream: Stream::Log(2),
                data: b"note".to_vec(),
            },
            LogFrame::Dropped(12345),
            LogFrame::End(Some(ExitReport::from(&ExitStatus {
                pid: Pid(7),
                reason: ExitReason::Killed,
            }))),
            LogFrame::End(None),
        ];
        let mut wire = Vec::new();
        for f in &frames {
            f.encode(&mut wire);
        }
        for step in [1, 3, 7, wire.len()] {
            let mut d = LogFrameDecoder::new();
            let mut got = Vec::new();
            for chunk in wire.chunks(step) {
                d.push(chunk);
                while let Some(f) = d.next_frame().unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got, frames, "chunks of {step}");
            assert!(!d.has_partial());
        }
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        let mut d = LogFrameDecoder::new();
        d.push(&[9, 0, 0, 0, 0]);
        assert!(matches!(d.next_frame(), Err(LogFrameError::UnknownKind(9))));
        let mut d = LogFrameDecoder::new();
        d.push(&[1, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(d.next_frame(), Err(LogFrameError::TooLarge(_))));
        let mut d = LogFrameDecoder::new();
        d.push(&[4, 2, 0, 0, 0, 1, 2]);
        assert!(matches!(d.next_frame(), Err(LogFrameError::Malformed(_))));
    }

    #[test]
    fn spawn_request_defaults() {
        let r: SpawnRequest = serde_json::from_str(r#"{"module":"app:v1"}"#).unwrap();
        assert_eq!(r.count, 1);
        assert!(r.args.is_empty() && r.env.is_empty() && r.argv0.is_none());
    }
}
