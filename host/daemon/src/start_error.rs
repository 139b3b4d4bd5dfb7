//! Why a node could not start ([`StartError`]): each step of
//! [`crate::Daemon::start`] has its own variant, with the cause as its
//! source, so the CLI prints the whole chain and programs can match.

use crate::credentials::CredentialsError;
use crate::join::JoinError;
use crate::tasks::PidBlockError;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A file or directory of the data dir could not be used.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was being done ("create", "read", "restrict").
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The node-id file holds something else.
    #[error("{} does not hold a node id", path.display())]
    BadNodeId {
        /// The file.
        path: PathBuf,
    },
    /// A certificate without the node id that goes with it.
    #[error(
        "{} has a certificate but no node id ({}); the data dir is damaged",
        data_dir.display(),
        id_path.display()
    )]
    Damaged {
        /// The data dir.
        data_dir: PathBuf,
        /// Where the id should be.
        id_path: PathBuf,
    },
    /// The listening address could not be bound.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// Creating the new cluster's PKI failed.
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    /// Joining the cluster failed.
    #[error(transparent)]
    Join(#[from] JoinError),
    /// This node's identity, the CA certificate or the TLS set-up failed.
    #[error(transparent)]
    Pki(#[from] shoal_pki::PkiError),
    /// The Raft store or engine could not be opened.
    #[error("cannot start Raft")]
    Raft(#[source] shoal_cluster::ClusterError),
    /// The process runtime could not be set up.
    #[error("cannot start the node")]
    Node(#[source] shoal_runtime::node::NodeError),
    /// The first node could not initialize the cluster.
    #[error("cannot bootstrap the cluster")]
    Bootstrap(#[source] shoal_cluster::ClusterError),
    /// A joined node could not be made a voter.
    #[error("joined, but could not become a member")]
    Membership(#[source] shoal_net::NetError),
    /// A joined node never heard from the leader.
    #[error(
        "this node was added to the cluster but never heard from its leader within {waited_ms} ms"
    )]
    NoLeaderContact {
        /// How long it waited.
        waited_ms: u64,
    },
    /// The cluster granted no pid block (no quorum?).
    #[error("cannot get a pid block after {attempts} attempts")]
    PidBlock {
        /// How many requests were made.
        attempts: u64,
        /// The last failure.
        source: PidBlockError,
    },
}
