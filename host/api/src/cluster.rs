//! Wire types of the cluster-wide control API: nodes, tokens, membership,
//! migration and drains. The daemon serves them, the CLI reads them.

use serde::{Deserialize, Serialize};
use shoal_abi::pid::Pid;
use shoal_cluster::NodeLoad;
pub use shoal_cluster::{RaftRole, RaftView};
use std::collections::BTreeMap;
use std::time::Duration;

pub use shoal_cluster::NodeId;

/// How long a drain cancel waits for moves in flight to finish before it
/// answers (still `running` then).
pub const CANCEL_WAIT: Duration = Duration::from_secs(30);

/// One node, as `shoal nodes` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeSummary {
    /// Cluster id.
    pub id: NodeId,
    /// Name.
    pub name: String,
    /// Address.
    pub addr: String,
    /// `active`, `cordoned` or `removed`.
    pub status: String,
    /// A member the Raft leader's failure detector has not declared dead
    /// (the one verdict every feature goes by; see `dead`).
    pub healthy: bool,
    /// Milliseconds between its last heartbeat's timestamp (its clock) and
    /// the answering node's clock: load freshness, for information only;
    /// never used to judge whether the node is up.
    pub heartbeat_age_ms: u64,
    /// The leader, as far as the answering node currently knows: its Raft
    /// names this node leader AND it heard from that leader (or, on the
    /// leader itself, from a quorum) recently. A leader cut off by a
    /// partition is not shown as leader; `raft` on the answering node's
    /// row says what it knows instead.
    pub leader: bool,
    /// The failure detector's death verdict on this node, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead: Option<DeadVerdict>,
    /// The node's liveness epoch (bumped by each death and return).
    #[serde(default)]
    pub liveness_epoch: u64,
    /// On the row of the node that answered only: its Raft view (term,
    /// role, the leader it knows and how long since it heard from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raft: Option<RaftView>,
    /// Holds the cluster CA?
    pub ca: bool,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Last reported load.
    pub load: NodeLoad,
}

/// The leader declared a node dead (`NodeDead` in Raft).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadVerdict {
    /// The node's liveness epoch at that death.
    pub epoch: u64,
    /// When the leader declared it, Unix ms (the leader's clock).
    pub since_unix_ms: u64,
    /// How long the leader had heard nothing from it then, ms.
    pub silent_ms: u64,
    /// The leader that declared it.
    pub by: NodeId,
}

/// `POST /v1/tokens` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenRequest {
    /// Lifetime, ms.
    pub ttl_ms: u64,
    /// Role granted: `node` (default), `client`, `admin`.
    #[serde(default)]
    pub role: Option<String>,
    /// The token's record, made by the admin who asks (it keeps the
    /// secret; the record holds its hash) and signed in the request's
    /// proof ([`shoal_pki::proof`]): the node stores exactly this.
    #[serde(default)]
    pub record: Option<shoal_pki::TokenRecord>,
}

/// Where the answer to a signed token request leaves the token out: the
/// node never sees the secret, so the client puts it in.
pub const TOKEN_PLACEHOLDER: &str = "<TOKEN>";

/// A join token for `role` valid for `ttl_ms` from now, made here, and the
/// request for it signed by `signer` (the proof goes in the
/// [`shoal_pki::proof::PROOF_HEADER`]). Keep the token: the node stores
/// only its hash and answers without it ([`with_token`]).
pub fn signed_token_request(
    signer: &shoal_pki::Signer,
    role: shoal_pki::Role,
    ttl_ms: u64,
) -> Result<(shoal_pki::JoinToken, TokenRequest, shoal_pki::Proof), shoal_pki::PkiError> {
    let token = shoal_pki::JoinToken::generate()?;
    let record = shoal_pki::TokenRecord::new(
        &token,
        role,
        shoal_pki::now_unix_ms(),
        std::time::Duration::from_millis(ttl_ms),
    );
    let proof = signer.sign(shoal_pki::Intent::create_token(&record))?;
    let req = TokenRequest {
        ttl_ms,
        role: Some(role.as_str().to_string()),
        record: Some(record),
    };
    Ok((token, req, proof))
}

/// A node's answer to a signed token request with the token put in.
pub fn with_token(mut created: TokenCreated, token: &shoal_pki::JoinToken) -> TokenCreated {
    let token = token.to_string();
    created.command = created.command.replace(TOKEN_PLACEHOLDER, &token);
    created.token = token;
    created
}

/// `POST /v1/tokens` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenCreated {
    /// The token (`id.secret`); shown once, only its hash is stored.
    pub token: String,
    /// The CA pin to check the cluster with.
    pub ca_hash: String,
    /// A member address to join through.
    pub addr: String,
    /// When the token stops working, Unix ms.
    pub expires_unix_ms: u64,
    /// The command a new node runs.
    pub command: String,
}

/// `POST /v1/certs/revoke` body (admin only): revoke every certificate of
/// one identity issued so far, and every renewal of one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeRequest {
    /// The identity's role.
    pub role: shoal_pki::Role,
    /// Its id (the certificate's name).
    pub id: String,
    /// Why (kept with the revocation, shown in refusals; cut at 256
    /// characters).
    #[serde(default)]
    pub reason: Option<String>,
}

/// `POST /v1/ca/takeover` answer: the node that is now the CA node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaTakeover {
    /// The new CA node's name.
    pub node: String,
    /// Its id.
    pub id: u64,
    /// The CA's pin (`sha256:…`), unchanged: the same CA, on another node.
    pub ca_pin: String,
}

/// `POST /v1/certs/revoke` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revoked {
    /// The identity's role.
    pub role: shoal_pki::Role,
    /// Its id.
    pub id: String,
    /// Its new generation: every certificate below it is revoked, and the
    /// identity's next certificates (a new `cert create`, a new join) are
    /// issued at it.
    pub generation: u64,
    /// When, Unix ms (the answering node's clock).
    pub revoked_unix_ms: u64,
}

/// `POST /v1/certs/renew` body (any role, for its own certificate; nodes
/// send it to the CA node as `POST /v1/peer/renew`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewRequest {
    /// A PKCS#10 CSR, PEM, for the key of `cert_pem` (renewal keeps the key).
    pub csr_pem: String,
    /// The certificate to renew, PEM: the one the caller connected with.
    pub cert_pem: String,
}

/// `POST /v1/cluster/members` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberRequest {
    /// The node's id (from its join).
    pub id: NodeId,
    /// Its name (must match its certificate).
    pub name: String,
    /// Its address.
    pub addr: String,
}

/// `POST /v1/processes/{pid}/migrate`: move a process to another node.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct MigrateRequest {
    /// The node to move to, by name (default: the scheduler chooses).
    #[serde(default)]
    pub to: Option<String>,
}

/// What a migration did, for `shoal migrate` and benchmarks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MigrateReport {
    /// The process (same pid on the target).
    pub pid: Pid,
    /// The node it left.
    pub from: String,
    /// The node it runs on now.
    pub to: String,
    /// Its new directory epoch.
    pub epoch: u64,
    /// Its linear memory at the freeze.
    pub memory_bytes: u64,
    /// Its linear memory at the pre-copy (less than `memory_bytes` when it
    /// grew during the move).
    #[serde(default)]
    pub memory_bytes_offered: u64,
    /// Non-zero pages at the pre-copy.
    pub pages_total: usize,
    /// Pages the target lacked and was sent in the pre-copy.
    pub pages_sent: usize,
    /// Pages the target already held (not sent).
    pub pages_known: usize,
    /// Pages that changed between the pre-copy and the freeze (sent then).
    pub delta_pages: usize,
    /// Bytes sent in migration requests (pages, headers, state).
    pub bytes_sent: u64,
    /// Bytes of private-volume chunks the target lacked and fetched (the
    /// rest it already held).
    #[serde(default)]
    pub volume_bytes_sent: u64,
    /// From the freeze request on the source to the process running on
    /// the target, its memory written, µs (the two nodes' clocks; exact on
    /// one machine).
    pub freeze_us: u64,
    /// Whether the freeze's capture copied all of the process's memory
    /// (writes not tracked on this kernel, or its kept copy still shared)
    /// instead of only the pages written since the pre-copy.
    #[serde(default)]
    pub freeze_copied_memory: bool,
    /// False if the target did not confirm the start in time (the move
    /// still happened: the directory names the target).
    pub resumed: bool,
    /// The whole migration, µs.
    pub total_us: u64,
    /// Time per phase, µs, in order.
    pub phases_us: Vec<(String, u64)>,
}

/// Where a drain job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DrainState {
    /// Moving processes.
    Running,
    /// Every process was tried (see `failed` for those that did not move).
    Done,
    /// Cancelled; processes not yet started stay here.
    Cancelled,
    /// The deadline passed before every process was tried.
    DeadlinePassed,
}

/// A process the drain could not move, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainFailure {
    /// The process (still on the drained node).
    pub pid: Pid,
    /// Why it did not move.
    pub why: String,
}

/// A drain's progress, as `GET /v1/nodes/{name}/drain` answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainStatus {
    /// The drained node.
    pub node: String,
    /// Processes found on the node (grows if more start while it runs).
    pub total: usize,
    /// Processes moved to other nodes.
    pub moved: usize,
    /// Processes that exited (or left by other means) before their turn.
    pub gone: usize,
    /// Processes that could not be moved.
    pub failed: Vec<DrainFailure>,
    /// Processes not moved yet: waiting or in flight (after the job ended,
    /// those it never started).
    pub remaining: Vec<Pid>,
    /// Where the job is.
    pub state: DrainState,
    /// When it started, Unix ms.
    pub started_unix_ms: u64,
    /// When it ended, Unix ms (`None` while running).
    pub ended_unix_ms: Option<u64>,
    /// Its deadline, ms after the start.
    pub deadline_ms: u64,
}

/// `POST /v1/nodes/{name}/drain` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DrainRequest {
    /// Stop starting migrations this long after the start (default
    /// [`DEADLINE_DEFAULT`]).
    #[serde(default)]
    pub deadline_ms: Option<u64>,
}

/// Text for people: `moved pid 42 a → b in 12.3 ms (frozen 2.1 ms), ...`.
impl std::fmt::Display for MigrateReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |us: u64| us as f64 / 1000.0;
        write!(
            f,
            "moved process {} from {} to {} in {:.1} ms, frozen {:.2} ms; memory {:.1} MiB, {} of {} pages sent ({} already there, {} changed during the copy), {:.1} KiB on the wire",
            self.pid,
            self.from,
            self.to,
            ms(self.total_us),
            ms(self.freeze_us),
            self.memory_bytes as f64 / (1 << 20) as f64,
            self.pages_sent,
            self.pages_total,
            self.pages_known,
            self.delta_pages,
            self.bytes_sent as f64 / 1024.0,
        )?;
        if self.volume_bytes_sent > 0 {
            write!(
                f,
                ", {:.1} KiB of volume chunks the target lacked",
                self.volume_bytes_sent as f64 / 1024.0
            )?;
        }
        Ok(())
    }
}

impl std::fmt::Display for DrainState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DrainState::Running => "running",
            DrainState::Done => "done",
            DrainState::Cancelled => "cancelled",
            DrainState::DeadlinePassed => "deadline_passed",
        })
    }
}

impl DrainStatus {
    /// Did every process leave the node?
    pub fn is_complete(&self) -> bool {
        self.state == DrainState::Done && self.failed.is_empty() && self.remaining.is_empty()
    }
}

/// `POST /v1/node/stop` body: stop the node that answers (`shoal node
/// stop`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopRequest {
    /// Kill its processes instead of moving them to other nodes first.
    #[serde(default)]
    pub kill: bool,
    /// Give the drain this long (default: the node's `--stop-deadline`).
    #[serde(default)]
    pub deadline_ms: Option<u64>,
}

/// `POST /v1/node/stop` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopAccepted {
    /// The node stops.
    pub stopping: bool,
    /// A stop was asked before (this one changes nothing).
    pub already: bool,
    /// Processes it ran when asked.
    pub processes: usize,
}
