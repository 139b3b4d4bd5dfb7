//! The cluster PKI: who may talk to whom in a Shoal cluster.
//!
//! Every node↔node and CLI↔node connection is mutual TLS. Trust is rooted in
//! one cluster CA whose private key stays in the data directory of the node
//! that ran `shoal cluster init` (file mode 0600, never sent anywhere).
//! Certificates carry their holder's [`Role`] (node / client / admin) and id in
//! a URI SAN `shoal://<role>/<id>`; peers are checked by *CA + role +
//! validity + revocation*, never by host name.
//!
//! The pieces, each usable on its own by the transport, CLI and Raft state
//! machine that come later:
//!
//! - [`ca`]: create/load the CA, sign CSRs (the CA decides role and SAN, it
//!   never copies names from a CSR), issue CLI credentials, the CA pin.
//! - [`role`]: the [`Role`] enum and reading role/id/serial/validity back out
//!   of a certificate.
//! - [`token`]: kubeadm-style one-time join tokens and the replicated
//!   [`TokenBook`].
//! - [`revocation`]: the replicated [`RevocationList`] and the shared handle
//!   every verifier reads on each handshake.
//! - [`tls`]: rustls server/client configs with verifiers that refuse, with a
//!   typed [`Rejection`], certificates from another CA, expired / not yet
//!   valid / revoked ones, and certificates of the wrong role.
//! - [`join`]: the join and renewal handshakes as plain functions.
//! - [`owner`]: the [`Owner`] every resource records and the one rule,
//!   [`may_act`], that says who may act on it.
//! - [`proof`]: an admin's signed request ([`Proof`]), carried by the
//!   Raft entries that mint or take away credentials and checked when they
//!   are applied.
//! - [`files`]: on-disk layout `<data>/pki/{ca.key,ca.crt,node.key,node.crt}`
//!   with atomic writes and 0600 keys.
//!
//! All times are Unix milliseconds (`u64`) passed in by the caller, so the
//! replicated state machine can apply token and revocation changes
//! deterministically.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod backup;
pub mod ca;
pub mod files;
pub mod join;
pub mod owner;
pub mod proof;
pub mod revocation;
pub mod role;
pub mod tls;
pub mod token;

#[cfg(test)]
mod tests;

pub use ca::{CaPin, ClusterCa, IssuedCert, IssuedCredentials, Validity};
pub use files::PkiPaths;
pub use join::{JoinCommand, JoinError, JoinRequest, JoinResponse};
pub use owner::{may_act, need_admin, Forbidden, Owner};
pub use proof::{Intent, Proof, ProofError, Signer};
pub use revocation::{
    Revocation, RevocationList, RevocationsFull, Serial, SharedRevocations, REVOCATIONS_MAX,
};
pub use role::{CertInfo, Role};
pub use tls::{ClusterTrust, Identity, Rejection};
pub use token::{JoinToken, TokenBook, TokenError, TokenRecord};

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Errors of the PKI that are not a verification refusal ([`Rejection`]), a
/// token problem ([`TokenError`]) or a join problem ([`JoinError`]): file
/// I/O, malformed input, and refusals to clobber or to use insecure files.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Reading or writing a PKI file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// `cluster init` found a CA already there; it never overwrites one.
    #[error("a cluster CA already exists at {0} (refusing to overwrite it)")]
    CaExists(PathBuf),
    /// No CA in this data directory (this node did not run `cluster init`).
    #[error("no cluster CA at {0}")]
    CaMissing(PathBuf),
    /// A CA backup of another cluster than this node's.
    #[error("the backup is of another cluster's CA ({backup}), not of this node's ({ours})")]
    OtherCluster {
        /// This node's CA pin.
        ours: CaPin,
        /// The backup's CA pin.
        backup: CaPin,
    },
    /// A file that is not a CA backup.
    #[error("bad CA backup: {0}")]
    BadBackup(String),
    /// A private key file is readable by group or others.
    #[error("{path} has mode {mode:o}: a private key must be 0600 (owner only)")]
    InsecureKeyFile {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A certificate signing request could not be parsed or its signature
    /// (proof that the requester holds the key) did not verify.
    #[error("bad certificate signing request: {0}")]
    BadCsr(String),
    /// A certificate could not be parsed, or lacks what Shoal puts in one.
    #[error("bad certificate: {0}")]
    BadCertificate(String),
    /// A private key could not be parsed.
    #[error("bad private key: {0}")]
    BadKey(String),
    /// A node/client id is not acceptable in a certificate.
    #[error(
        "invalid id {0:?}: use 1-63 characters [A-Za-z0-9._-], starting with a letter or digit"
    )]
    InvalidId(String),
    /// A CA pin string is not `sha256:<64 hex digits>`.
    #[error("invalid CA pin {0:?}: expected sha256:<64 hex digits>")]
    BadPin(String),
    /// The requested validity window is empty or outside the CA's own.
    #[error("invalid validity: {0}")]
    BadValidity(String),
    /// Certificate generation or signing failed inside rcgen.
    #[error("certificate generation failed: {0}")]
    Generate(String),
    /// Building a rustls configuration failed.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The system random number generator failed.
    #[error("system random number generator failed")]
    Random,
}

impl From<rcgen::Error> for PkiError {
    fn from(e: rcgen::Error) -> Self {
        PkiError::Generate(e.to_string())
    }
}

/// Result alias for [`PkiError`].
pub type Result<T, E = PkiError> = std::result::Result<T, E>;

/// The current wall-clock time in Unix milliseconds (0 if the clock is
/// before 1970). The one place this module reads the clock; everything else
/// takes `now` as a parameter so tests and the state machine control it.
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// `Duration` to whole milliseconds, saturating.
pub(crate) fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Fill `buf` from the operating system's CSPRNG.
pub(crate) fn random_bytes(buf: &mut [u8]) -> Result<()> {
    use ring::rand::SecureRandom;
    ring::rand::SystemRandom::new()
        .fill(buf)
        .map_err(|_| PkiError::Random)
}

/// The crypto provider used for every rustls config here: *ring*, so the
/// build never needs aws-lc.
pub(crate) fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}
