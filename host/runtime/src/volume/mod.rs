//! Private volumes: directories that belong to a process and move with it.
//!
//! `shoal deploy app.wasm --volume /data` gives the process an empty
//! directory preopened at `/data`. It is plain WASI to the guest (`std::fs`,
//! `fopen`): a host directory on the node the process runs on, under
//! `<data dir>/volumes/`, reached through cap-std (so `..`, absolute paths
//! and symlinks can never leave it) and wrapped by [`quota`], which
//! enforces the volume's byte and file quotas with `EDQUOT`.
//!
//! A volume is part of the process like its memory:
//!
//! - a capture ([`tree::capture`]) walks the directory, splits every file
//!   into [`CHUNK_BYTES`] chunks named by sha256 and stores the chunks the
//!   node's registry lacks — the same content addressing and verification
//!   as memory pages. Files whose metadata did not change since the last
//!   capture are not read again ([`tree::HashCache`]). The image carries
//!   the tree ([`VolumeTree`]): paths, sizes, chunk hashes;
//! - a move sends the target only the chunks it lacks (see the daemon's
//!   migration), and a snapshot holds them in the registry;
//! - a restore or an arrival rebuilds the directory from the tree
//!   ([`tree::apply_changes`], from nothing or from what was staged during
//!   a move's pre-copy), every chunk checked against its hash, after
//!   [`tree::check`] has bounded everything a hostile image controls.
//!
//! The volume's directory is removed when the process ends on this node
//! (exit, trap, kill, snapshot-and-stop or move): by then its content is in
//! the image or gone with the process.
//!
//! Capabilities: a private volume reaches nothing on the host but its own
//! directory; its quotas come from who deployed or restored the process
//! (or the node's defaults), never from an image.

pub mod cluster_dir;
pub mod link;
pub mod quota;
pub mod shared;
pub mod tree;

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Size of the chunks volume files are split into and addressed by.
pub const CHUNK_BYTES: u64 = 256 * 1024;
/// Most volumes a process may have.
pub const VOLUMES_MAX: usize = 16;
/// Default byte quota of a private volume.
pub const VOLUME_BYTES_MAX_DEFAULT: u64 = 1 << 30;
/// Default file quota of a private volume (files and directories).
pub const VOLUME_FILES_MAX_DEFAULT: u64 = 100_000;
/// The largest byte quota anyone may grant a volume.
pub const VOLUME_BYTES_MAX_CEILING: u64 = 1 << 40;
/// The largest file quota anyone may grant a volume.
pub const VOLUME_FILES_MAX_CEILING: u64 = 10_000_000;
/// Longest guest mount path, in bytes.
pub const MOUNT_PATH_BYTES_MAX: usize = 256;
/// Longest shared volume name, in bytes (the cluster's bound).
pub const SHARED_NAME_BYTES_MAX: usize = 64;

/// A private volume as granted: where the guest sees it and its quotas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMount {
    /// The path the guest sees (absolute, e.g. `/data`).
    pub guest: String,
    /// Most bytes its files may hold together.
    pub bytes_max: u64,
    /// Most files and directories it may hold.
    pub files_max: u64,
    /// A shared volume of the process's owner, by name ([`shared`]); its
    /// quotas are the volume's own (the two above are unused). `None`: a
    /// private volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<String>,
}

impl VolumeMount {
    /// A volume at `guest` with the default quotas.
    pub fn new(guest: impl Into<String>) -> VolumeMount {
        VolumeMount {
            guest: guest.into(),
            bytes_max: VOLUME_BYTES_MAX_DEFAULT,
            files_max: VOLUME_FILES_MAX_DEFAULT,
            shared: None,
        }
    }

    /// The shared volume `name` at `guest`.
    pub fn shared(name: impl Into<String>, guest: impl Into<String>) -> VolumeMount {
        VolumeMount {
            shared: Some(name.into()),
            ..VolumeMount::new(guest)
        }
    }

    /// Check what a requester asked for: an absolute, clean guest path and
    /// quotas within the ceilings.
    pub fn check(&self) -> Result<(), VolumeError> {
        let g = &self.guest;
        let clean = g.starts_with('/')
            && g.len() <= MOUNT_PATH_BYTES_MAX
            && g.len() > 1
            && !g.ends_with('/')
            && g[1..]
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains('\0'));
        if !clean {
            return Err(VolumeError::BadMount(g.clone()));
        }
        if let Some(name) = &self.shared {
            let ok = !name.is_empty()
                && name.len() <= SHARED_NAME_BYTES_MAX
                && name.as_bytes()[0].is_ascii_alphanumeric()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
            if !ok {
                return Err(VolumeError::BadName(name.chars().take(80).collect()));
            }
        }
        if self.bytes_max > VOLUME_BYTES_MAX_CEILING || self.files_max > VOLUME_FILES_MAX_CEILING {
            return Err(VolumeError::QuotaOverCeiling {
                guest: g.clone(),
                bytes_max: self.bytes_max,
                files_max: self.files_max,
            });
        }
        Ok(())
    }
}

/// The volume `had` (from an image) as `granted` gives it, or with the
/// default quotas when the grant does not name it (a process restored
/// without quotas). A shared volume stays the one it names: every use of
/// it is checked against the process's owner, who is the restorer.
pub fn mount_for(granted: &[VolumeMount], had: &VolumeMount) -> VolumeMount {
    if had.shared.is_some() {
        return VolumeMount::shared(had.shared.clone().unwrap_or_default(), had.guest.clone());
    }
    private_mount_for(granted, &had.guest)
}

/// The private volume at `guest` as `granted` gives it, or with the
/// default quotas.
pub fn private_mount_for(granted: &[VolumeMount], guest: &str) -> VolumeMount {
    granted
        .iter()
        .find(|m| m.guest == guest && m.shared.is_none())
        .cloned()
        .unwrap_or_else(|| VolumeMount::new(guest))
}

/// Check a list of mounts: each valid, no guest path twice, at most
/// [`VOLUMES_MAX`].
pub fn check_mounts(mounts: &[VolumeMount]) -> Result<(), VolumeError> {
    if mounts.len() > VOLUMES_MAX {
        return Err(VolumeError::TooMany {
            count: mounts.len(),
            max: VOLUMES_MAX,
        });
    }
    let mut seen = std::collections::BTreeSet::new();
    for m in mounts {
        m.check()?;
        if !seen.insert(m.guest.as_str()) {
            return Err(VolumeError::Duplicate(m.guest.clone()));
        }
    }
    Ok(())
}

/// A captured volume: where it is mounted and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct VolumeTree {
    /// The guest mount path.
    pub guest: String,
    /// Every directory and file, parents before children.
    pub entries: Vec<Entry>,
}

impl VolumeTree {
    /// A volume at `guest` holding nothing.
    pub fn empty(guest: &str) -> VolumeTree {
        VolumeTree {
            guest: guest.to_string(),
            entries: Vec::new(),
        }
    }

    /// Bytes of all its files.
    pub fn bytes(&self) -> u64 {
        self.entries
            .iter()
            .map(|e| match &e.kind {
                EntryKind::File { size, .. } => *size,
                EntryKind::Dir => 0,
            })
            .fold(0u64, u64::saturating_add)
    }
}

/// One directory or file of a volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Its path inside the volume, `/`-separated, relative, no `.`/`..`.
    pub path: String,
    /// What it is.
    pub kind: EntryKind,
}

/// A directory, or a file with its content by chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A regular file.
    File {
        /// Its length in bytes.
        size: u64,
        /// Its content, [`CHUNK_BYTES`] at a time (the last may be
        /// shorter), by sha256.
        chunks: Vec<shoal_registry::Sha256>,
    },
}

/// Why a volume cannot be mounted, captured or rebuilt.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// A shared volume name that is not one.
    #[error("volume name `{0}`: 1 to 64 bytes of a-z, 0-9, `.`, `_`, `-`, starting with a letter or digit")]
    BadName(String),
    /// A shared volume on a node without a cluster.
    #[error("shared volume `{0}` needs a cluster (this node runs alone)")]
    NoCluster(String),
    /// The guest path is not an absolute clean path.
    #[error("volume mount path `{0}` is not an absolute path without `.`, `..` or empty parts (at most 256 bytes)")]
    BadMount(String),
    /// The same guest path twice.
    #[error("volume `{0}` is mounted twice")]
    Duplicate(String),
    /// Too many volumes.
    #[error("{count} volumes (at most {max})")]
    TooMany {
        /// How many.
        count: usize,
        /// The bound.
        max: usize,
    },
    /// A quota beyond what may be granted.
    #[error("volume `{guest}` asks for {bytes_max} bytes and {files_max} files: over the ceiling of 1 TiB and 10,000,000 files")]
    QuotaOverCeiling {
        /// The mount.
        guest: String,
        /// Asked bytes.
        bytes_max: u64,
        /// Asked files.
        files_max: u64,
    },
    /// An image's tree is malformed (a hostile or damaged writer).
    #[error("volume `{guest}` in the image: {why}")]
    BadTree {
        /// The mount.
        guest: String,
        /// What is wrong.
        why: String,
    },
    /// An image's tree does not fit the volume's quota here.
    #[error("volume `{guest}` holds {bytes} bytes in {files} entries: over its quota of {bytes_max} bytes and {files_max} files")]
    OverQuota {
        /// The mount.
        guest: String,
        /// Bytes in the image.
        bytes: u64,
        /// Entries in the image.
        files: u64,
        /// The quota.
        bytes_max: u64,
        /// The quota.
        files_max: u64,
    },
    /// A chunk is not in this node's registry, or is corrupt.
    #[error("volume chunk {0}: {1}")]
    Chunk(shoal_registry::Sha256, shoal_registry::RegistryError),
    /// The host file system failed.
    #[error("volume `{path}`: {source}")]
    Io {
        /// Where.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl VolumeError {
    fn io(path: &Path, source: std::io::Error) -> VolumeError {
        VolumeError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// A volume mounted for a live process on this node: its directory, its
/// usage and its capture cache. Dropping it (with the process's store)
/// removes the directory.
pub struct Mounted {
    /// How it was granted.
    pub mount: VolumeMount,
    /// Its directory on this node.
    pub root: PathBuf,
    /// Bytes and files in use, shared with its open files.
    pub usage: Arc<quota::Usage>,
    /// Hashes of files unchanged since the last capture.
    pub cache: std::sync::Mutex<tree::HashCache>,
}

impl Mounted {
    /// Create the (empty) directory of `mount` at `root`.
    pub fn create(mount: VolumeMount, root: PathBuf) -> Result<Mounted, VolumeError> {
        std::fs::create_dir_all(&root).map_err(|e| VolumeError::io(&root, e))?;
        let usage = Arc::new(quota::Usage::new(mount.bytes_max, mount.files_max));
        Ok(Mounted {
            mount,
            root,
            usage,
            cache: Default::default(),
        })
    }

    /// The WASI directory the guest is given.
    pub fn open_wasi(&self) -> Result<Box<dyn wasi_common::WasiDir>, VolumeError> {
        let dir = cap_std::fs::Dir::open_ambient_dir(&self.root, cap_std::ambient_authority())
            .map_err(|e| VolumeError::io(&self.root, e))?;
        Ok(Box::new(quota::QuotaDir::new(
            wasi_common::tokio::Dir::from_cap_std(dir),
            self.usage.clone(),
        )))
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        remove_tree(&self.root);
    }
}

/// Remove the volume directories under `dir` (a node's `volumes`), left by
/// a node that stopped without its processes ending (a crash, SIGKILL).
pub fn remove_leftovers(dir: &Path) {
    remove_tree(dir);
}

/// Remove `dir` and everything in it; a directory already gone is fine,
/// any other failure is logged (nothing waits on it).
fn remove_tree(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!("cannot remove volume directory {}: {e}", dir.display());
        }
    }
}

/// Run `f`, which reads or writes a volume's files (tens of ms for tens of
/// MiB), without stalling the other tasks of a multi-threaded runtime's
/// worker: there it runs as blocking (`block_in_place`); elsewhere (a
/// current-thread runtime, no runtime) inline.
pub fn blocking<R>(f: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// The volumes of one live process, and the registry their chunks go to.
#[derive(Default)]
pub struct Volumes {
    registry: Option<shoal_registry::Registry>,
    mounted: Vec<Mounted>,
    /// Shared volumes mounted for the process.
    shared: Vec<Arc<shared::SharedMount>>,
    /// `/cluster` namespaces: guest path and how to render them.
    cluster: Vec<(String, SharedAccess)>,
    /// Every mount in the spec's order (the preopen order).
    order: Vec<Mount>,
    /// What each mounted volume was last rebuilt from (empty trees for
    /// new volumes), for [`Volumes::update`].
    built: Vec<VolumeTree>,
    /// The process's directory of volumes, removed (once its volumes are)
    /// when it goes.
    root: Option<PathBuf>,
    /// What its shared mounts share (`None` without shared mounts).
    session: Option<Arc<shared::SharedSession>>,
}

/// A volume's guest path and the WASI directory the guest is given.
pub type Preopen = (String, Box<dyn wasi_common::WasiDir>);

/// Where a mount of [`Volumes`] is.
#[derive(Clone, Copy)]
enum Mount {
    /// `mounted[i]`.
    Private(usize),
    /// `shared[i]`.
    Shared(usize),
    /// The read-only `/cluster` namespace at this guest path.
    Cluster(usize),
}

/// What a process's shared volumes act through: the cluster, as `pid`.
#[derive(Clone)]
pub struct SharedAccess {
    /// The cluster.
    pub link: Arc<dyn link::SharedFiles>,
    /// The process.
    pub pid: shoal_abi::pid::Pid,
}

impl Drop for Volumes {
    fn drop(&mut self) {
        self.mounted.clear();
        self.shared.clear();
        if let Some(root) = &self.root {
            let _ = std::fs::remove_dir(root);
        }
    }
}

impl Volumes {
    /// Create the directories of `mounts` under `root` (one per volume,
    /// named by index) and, for a restored or arriving process, rebuild
    /// each from its tree in `trees` (matched by guest path; checked
    /// first). A process with no volumes gets no directory.
    pub fn create(
        mounts: &[VolumeMount],
        root: &Path,
        trees: &[VolumeTree],
        registry: &shoal_registry::Registry,
        access: Option<SharedAccess>,
    ) -> Result<Volumes, VolumeError> {
        check_mounts(mounts)?;
        if mounts.is_empty() && trees.is_empty() {
            return Ok(Volumes::default());
        }
        let mut volumes = Volumes {
            registry: Some(registry.clone()),
            mounted: Vec::with_capacity(mounts.len()),
            shared: Vec::new(),
            cluster: Vec::new(),
            order: Vec::with_capacity(mounts.len()),
            built: Vec::with_capacity(mounts.len()),
            root: Some(root.to_path_buf()),
            session: None,
        };
        for (i, m) in mounts.iter().enumerate() {
            let dir = root.join(i.to_string());
            // Pushed as soon as it exists: on an error it is removed.
            if let Some(name) = &m.shared {
                let access = access
                    .as_ref()
                    .ok_or_else(|| VolumeError::NoCluster(name.clone()))?;
                if name == cluster_dir::CLUSTER_VOLUME {
                    volumes.order.push(Mount::Cluster(volumes.cluster.len()));
                    volumes.cluster.push((m.guest.clone(), access.clone()));
                    continue;
                }
                volumes.order.push(Mount::Shared(volumes.shared.len()));
                let session = volumes
                    .session
                    .get_or_insert_with(|| shared::SharedSession::new(true))
                    .clone();
                volumes.shared.push(shared::SharedMount::new(
                    access.link.clone(),
                    access.pid,
                    name,
                    &m.guest,
                    registry.clone(),
                    dir,
                    session,
                )?);
                continue;
            }
            volumes.order.push(Mount::Private(volumes.mounted.len()));
            volumes.mounted.push(Mounted::create(m.clone(), dir)?);
            volumes.built.push(VolumeTree::empty(&m.guest));
        }
        // Empty directories brought to the image's trees.
        volumes.update(trees)?;
        Ok(volumes)
    }

    /// The mounts these volumes were created with, in order.
    pub fn mounts(&self) -> Vec<VolumeMount> {
        self.order
            .iter()
            .map(|m| match *m {
                Mount::Private(i) => self.mounted[i].mount.clone(),
                Mount::Shared(i) => {
                    VolumeMount::shared(self.shared[i].volume(), self.shared[i].guest())
                }
                Mount::Cluster(i) => {
                    VolumeMount::shared(cluster_dir::CLUSTER_VOLUME, self.cluster[i].0.clone())
                }
            })
            .collect()
    }

    /// Each volume's guest path and WASI directory, in the spec's order
    /// (the order they are preopened in, from fd 3).
    pub fn preopens(&self) -> Result<Vec<Preopen>, VolumeError> {
        self.order
            .iter()
            .map(|m| match *m {
                Mount::Private(i) => {
                    let v = &self.mounted[i];
                    Ok((v.mount.guest.clone(), v.open_wasi()?))
                }
                Mount::Shared(i) => {
                    let v = &self.shared[i];
                    Ok((v.guest().to_string(), v.open_wasi()))
                }
                Mount::Cluster(i) => {
                    let (guest, access) = &self.cluster[i];
                    let dir = cluster_dir::ClusterDir::new(access.link.clone(), access.pid);
                    Ok((
                        guest.clone(),
                        Box::new(dir) as Box<dyn wasi_common::WasiDir>,
                    ))
                }
            })
            .collect()
    }

    /// What the process's shared mounts share, if it has any.
    pub fn session(&self) -> Option<&Arc<shared::SharedSession>> {
        self.session.as_ref()
    }

    /// Where the shared volumes are among the preopens (0 for the first:
    /// preopens are in the spec's order, from the first preopen fd).
    pub fn shared_preopen_positions(&self) -> Vec<u32> {
        self.order
            .iter()
            .enumerate()
            .filter(|(_, m)| matches!(m, Mount::Shared(_)))
            .filter_map(|(i, _)| u32::try_from(i).ok())
            .collect()
    }

    /// Under output commit, written copies are published only by the
    /// calls that publish (effects), never when dropped by a kill or a
    /// move; [`Volumes::ended_on_its_own`] turns that back on.
    pub fn set_output_commit(&self, on: bool) {
        if let Some(s) = &self.session {
            s.set_publish_on_drop(!on);
        }
    }

    /// The process ended on its own (an exit, a trap): its end is final,
    /// so the files it left open are published as they close.
    pub fn ended_on_its_own(&self) {
        if let Some(s) = &self.session {
            s.set_publish_on_drop(true);
        }
    }

    /// Publish the written files the process has open in its shared
    /// volumes (at a capture: what others see agrees with the image).
    pub async fn publish_shared(&self) -> Result<(), wasi_common::Error> {
        for s in &self.shared {
            s.publish_all().await?;
        }
        Ok(())
    }

    /// Bring volumes built from earlier trees (an arrival staged during
    /// the pre-copy) to `trees`, the ones captured at the freeze: only
    /// files whose chunks changed are written, and only their changed
    /// chunks. Each tree is checked first.
    pub fn update(&mut self, trees: &[VolumeTree]) -> Result<(), VolumeError> {
        let Some(registry) = self.registry.clone() else {
            return Ok(());
        };
        if let Some(t) = trees
            .iter()
            .find(|t| !self.mounted.iter().any(|m| m.mount.guest == t.guest))
        {
            return Err(VolumeError::BadTree {
                guest: t.guest.clone(),
                why: "the process has no such volume".into(),
            });
        }
        for (volume, built) in self.mounted.iter().zip(self.built.iter_mut()) {
            let empty = VolumeTree::empty(&volume.mount.guest);
            let next = trees
                .iter()
                .find(|t| t.guest == volume.mount.guest)
                .unwrap_or(&empty);
            blocking(|| tree::apply_changes(volume, built, next, &registry))?;
            *built = next.clone();
        }
        Ok(())
    }

    /// The mounted volumes, in preopen order.
    pub fn mounted(&self) -> &[Mounted] {
        &self.mounted
    }

    /// Capture every volume (see [`tree::capture`]).
    pub fn capture(&self) -> Result<Vec<VolumeTree>, VolumeError> {
        // No registry: no volumes (see `Volumes::create`).
        let Some(registry) = &self.registry else {
            return Ok(Vec::new());
        };
        blocking(|| {
            self.mounted
                .iter()
                .map(|v| tree::capture(v, registry).map(|(t, _)| t))
                .collect()
        })
    }
}
