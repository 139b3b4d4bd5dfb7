//! What a shared volume asks of the cluster ([`SharedFiles`]), which the
//! cluster layer implements as part of its `ClusterLink`. Defined here so
//! the volume code depends on nothing above it.

use shoal_abi::pid::Pid;
use shoal_abi::process::EffectKey;
use shoal_registry::Sha256;

/// A shared volume's directory or file version, as a node read it from the
/// replicated tree (see `shoal_cluster::state::volumes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedStat {
    /// A directory (else a regular file).
    pub is_dir: bool,
    /// Length of the file.
    pub size: u64,
    /// The write that made this version.
    pub version: u64,
    /// Unix ms of that write.
    pub mtime_ms: u64,
    /// The file's content by chunk.
    pub chunks: Vec<Sha256>,
    /// The nodes that hold its chunks.
    pub holders: Vec<u64>,
}

/// A shared volume's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedInfo {
    /// Most bytes its files may hold.
    pub bytes_max: u64,
    /// Most files and directories.
    pub files_max: u64,
}

/// A change to a shared volume's tree (see [`SharedFiles::vol_write`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SharedOp {
    /// Replace or create the file at `path` by this content, whole. The
    /// chunks are in this node's registry.
    Put {
        /// Where.
        path: String,
        /// Its length.
        size: u64,
        /// Its chunks.
        chunks: Vec<Sha256>,
        /// Create only (`O_EXCL`).
        exclusive: bool,
    },
    /// Create a directory.
    Mkdir(String),
    /// Remove a file.
    Unlink(String),
    /// Remove an empty directory.
    Rmdir(String),
    /// Move a file or directory.
    Rename {
        /// From.
        from: String,
        /// To.
        to: String,
    },
}

/// Why a shared-volume operation failed, as the guest's WASI errno sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SharedError {
    /// `ENOENT`.
    #[error("no such file, directory or volume")]
    NotFound,
    /// `EEXIST`.
    #[error("exists")]
    Exists,
    /// `ENOTDIR`.
    #[error("not a directory")]
    NotDir,
    /// `EISDIR`.
    #[error("is a directory")]
    IsDir,
    /// `ENOTEMPTY`.
    #[error("directory not empty")]
    NotEmpty,
    /// `EDQUOT`.
    #[error("over the volume's quota")]
    Quota,
    /// `EINVAL`.
    #[error("invalid path or operation")]
    Invalid,
    /// `EACCES`.
    #[error("not the volume's owner")]
    Forbidden,
    /// `EBUSY` (rate limited, or too much to move at once).
    #[error("busy")]
    Busy,
    /// `EIO`: the cluster could not be reached or a chunk not fetched.
    #[error("cluster unavailable")]
    Unavailable,
    /// `ENOSPC`: this node's disk is full.
    #[error("no space left on this node")]
    NoSpace,
}

/// Shared volumes for guests: reads of the replicated tree, writes to it,
/// and chunks fetched from the nodes that hold them.
#[async_trait::async_trait]
pub trait SharedFiles: Send + Sync {
    /// The settings of volume `volume` of `pid`'s owner.
    async fn vol_info(&self, pid: Pid, volume: &str) -> Result<SharedInfo, SharedError>;
    /// What is at `path` (`""`: the root), read linearizably (it sees
    /// every version committed before the call), or `None`.
    async fn vol_stat(
        &self,
        pid: Pid,
        volume: &str,
        path: &str,
    ) -> Result<Option<SharedStat>, SharedError>;
    /// The entries directly inside directory `dir`, by name (linearizable).
    async fn vol_list(
        &self,
        pid: Pid,
        volume: &str,
        dir: &str,
    ) -> Result<Vec<(String, SharedStat)>, SharedError>;
    /// Change the tree. For a [`SharedOp::Put`], the chunks are first
    /// stored on the volume's replicas. Returns the write's version.
    /// `effect`: which of the process's effects it is, under output commit
    /// (a resumed copy's repeat answers the first result).
    async fn vol_write(
        &self,
        pid: Pid,
        volume: &str,
        op: SharedOp,
        effect: Option<EffectKey>,
    ) -> Result<u64, SharedError>;
    /// Make sure this node's registry holds `chunks`, fetching the missing
    /// ones from `holders` (each checked against its hash).
    async fn vol_fetch(&self, holders: &[u64], chunks: &[Sha256]) -> Result<(), SharedError>;
    /// The read-only `/cluster` namespace as `pid` sees it now: every file
    /// by path (relative, `/`-separated) with its content. Directories are
    /// the paths' parents. See [`super::cluster_dir`].
    async fn cluster_view(&self, pid: Pid) -> Result<Vec<(String, Vec<u8>)>, SharedError>;
}
