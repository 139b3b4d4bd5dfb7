//! Shared volumes (issue #15): the part of the replicated state machine
//! that names them and holds their directory trees.
//!
//! A shared volume belongs to its owner (`(owner, name)` names it, like a
//! key-value bucket). Its metadata lives here, in Raft: every directory and
//! every file's current **version** — its size, its content as a list of
//! 256 KiB chunks by sha256, and the nodes that hold those chunks. File
//! content never enters Raft: the chunks live in the holders' registries.
//!
//! Consistency is close-to-open: a writer's node stores the chunks of a
//! closed (or synced) file on the volume's replicas first, then commits
//! one [`VolumeOp::Put`] replacing the whole entry. Another node opening
//! the file after that commit reads this version whole. Two writers
//! closing the same file: the later commit wins, whole; neither is torn.
//! A rename is one command, so it is atomic.
//!
//! Applying is deterministic: times come inside the commands.

use crate::state::{NodeId, Table};
use serde::{Deserialize, Serialize};

pub use shoal_pki::Owner;

/// The name `--volume cluster:/path` gives the `/cluster` namespace.
pub const RESERVED_NAME: &str = "cluster";
/// Longest volume name, in bytes (`[a-z0-9][a-z0-9._-]*`).
pub const VOLUME_NAME_BYTES_MAX: usize = 64;
/// Longest path inside a volume, in bytes.
pub const PATH_BYTES_MAX: usize = 1024;
/// Longest path component, in bytes.
pub const COMPONENT_BYTES_MAX: usize = 255;
/// Most shared volumes one owner may have.
pub const OWNER_VOLUMES_MAX: usize = 64;
/// Most copies of each chunk a volume may ask for.
pub const REPLICAS_MAX: u8 = 5;
/// Size of the chunks files are split into (the runtime's `CHUNK_BYTES`;
/// a daemon test checks they agree).
pub const CHUNK_BYTES: u64 = 256 * 1024;
/// Most chunks one file may have (a 4 GiB file).
pub const FILE_CHUNKS_MAX: usize = 16_384;
/// Most nodes listed as holding one file's chunks.
pub const HOLDERS_MAX: usize = 8;
/// Most entries one rename may move (a directory and what is under it):
/// one apply stays short, so heartbeats sharing the log are not delayed.
pub const RENAME_ENTRIES_MAX: usize = 10_000;
/// The largest byte quota a shared volume may have (1 TiB).
pub const VOLUME_BYTES_MAX_CEILING: u64 = 1 << 40;
/// The largest file quota a shared volume may have.
pub const VOLUME_FILES_MAX_CEILING: u64 = 10_000_000;

/// Names a shared volume: whose, and which.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct VolumeKey {
    /// Its owner.
    pub owner: Owner,
    /// Its name.
    pub name: String,
}

/// A shared volume: its settings, usage and tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedVolume {
    /// Copies of each chunk (on distinct nodes when there are enough).
    pub replicas: u8,
    /// Most bytes its files may hold together.
    pub bytes_max: u64,
    /// Most files and directories.
    pub files_max: u64,
    /// Unix ms of its creation (display only).
    pub created_ms: u64,
    /// Bytes its files hold.
    pub bytes: u64,
    /// Files and directories it holds.
    pub files: u64,
    /// Every directory and file by path (relative, `/`-separated; the
    /// root, `""`, is implicit).
    pub entries: Table<String, VolEntry>,
}

/// One directory or file version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolEntry {
    /// What it is.
    pub kind: VolKind,
    /// The book's write counter when it was last written (> 0).
    pub version: u64,
    /// Unix ms of the write (from the writer's node).
    pub mtime_ms: u64,
}

/// A directory, or a file's content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VolKind {
    /// A directory.
    Dir,
    /// A regular file.
    File {
        /// Its length.
        size: u64,
        /// Its content, [`CHUNK_BYTES`] at a time, by sha256 hex.
        chunks: Vec<String>,
        /// The nodes that stored its chunks before the commit.
        holders: Vec<NodeId>,
    },
}

impl VolEntry {
    /// Bytes it counts against the quota.
    pub fn size(&self) -> u64 {
        match &self.kind {
            VolKind::File { size, .. } => *size,
            VolKind::Dir => 0,
        }
    }

    /// Whether it is a directory.
    pub fn is_dir(&self) -> bool {
        matches!(self.kind, VolKind::Dir)
    }
}

/// What a volume command does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VolumeOp {
    /// Create the volume (operators only).
    Create {
        /// Copies of each chunk, 1 to [`REPLICAS_MAX`].
        replicas: u8,
        /// Byte quota.
        bytes_max: u64,
        /// File quota.
        files_max: u64,
        /// Unix ms.
        now_ms: u64,
    },
    /// Remove the volume and everything in it (operators only).
    Remove,
    /// Replace (or create) the file at `path` by a new version, whole.
    Put {
        /// Where.
        path: String,
        /// Its length.
        size: u64,
        /// Its chunks by sha256 hex.
        chunks: Vec<String>,
        /// The nodes holding them.
        holders: Vec<NodeId>,
        /// Unix ms.
        mtime_ms: u64,
        /// Create only: refuse if anything is at `path`.
        exclusive: bool,
    },
    /// Create a directory.
    Mkdir {
        /// Where.
        path: String,
        /// Unix ms.
        mtime_ms: u64,
    },
    /// Remove a file.
    Unlink {
        /// Which.
        path: String,
    },
    /// Remove an empty directory.
    Rmdir {
        /// Which.
        path: String,
    },
    /// Move a file or directory (atomically; a file at `to` is replaced,
    /// an empty directory at `to` is replaced by a directory).
    Rename {
        /// From.
        from: String,
        /// To.
        to: String,
    },
}

/// Why a volume command changed nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum VolumeRefusal {
    /// The volume name is empty, too long or has other characters.
    #[error("volume name {name:?}: 1 to 64 bytes of a-z, 0-9, `.`, `_`, `-`, starting with a letter or digit")]
    BadName {
        /// The name (at most 80 characters of it).
        name: String,
    },
    /// A path is not a clean relative path within the bounds.
    #[error("path {path:?} is not a clean relative path (at most 1024 bytes, components of at most 255)")]
    BadPath {
        /// The path (at most 80 characters of it).
        path: String,
    },
    /// The volume exists already.
    #[error("volume {name:?} exists already")]
    VolumeExists {
        /// Its name.
        name: String,
    },
    /// No such volume.
    #[error("no volume {name:?}")]
    NoVolume {
        /// Its name.
        name: String,
    },
    /// The owner has as many volumes as allowed.
    #[error("at most {max} shared volumes per owner")]
    TooManyVolumes {
        /// The bound.
        max: usize,
    },
    /// Replicas or quotas beyond what may be asked.
    #[error("replicas {replicas} (1 to 5), quotas {bytes_max} bytes and {files_max} files (at most 1 TiB and 10,000,000)")]
    BadSettings {
        /// Asked replicas.
        replicas: u8,
        /// Asked bytes.
        bytes_max: u64,
        /// Asked files.
        files_max: u64,
    },
    /// Nothing at a path.
    #[error("{path:?}: no such file or directory")]
    NotFound {
        /// The path.
        path: String,
    },
    /// Something is at a path that must be free.
    #[error("{path:?} exists")]
    Exists {
        /// The path.
        path: String,
    },
    /// A path's parent, or what it names, is not a directory.
    #[error("{path:?} is not a directory")]
    NotADirectory {
        /// The path.
        path: String,
    },
    /// A file operation names a directory.
    #[error("{path:?} is a directory")]
    IsADirectory {
        /// The path.
        path: String,
    },
    /// A directory to remove or replace is not empty.
    #[error("directory {path:?} is not empty")]
    NotEmpty {
        /// The path.
        path: String,
    },
    /// A directory moved into itself.
    #[error("cannot move {from:?} into itself ({to:?})")]
    IntoItself {
        /// From.
        from: String,
        /// To.
        to: String,
    },
    /// A rename that would move too many entries in one apply.
    #[error("renaming {path:?} moves {entries} entries (at most {max} at once)")]
    RenameTooLarge {
        /// The path.
        path: String,
        /// Entries under it.
        entries: usize,
        /// The bound.
        max: usize,
    },
    /// Over the volume's quota.
    #[error("volume {name:?} would hold {bytes} bytes in {files} entries: over its quota of {bytes_max} bytes and {files_max} files")]
    Quota {
        /// The volume.
        name: String,
        /// Bytes after.
        bytes: u64,
        /// Entries after.
        files: u64,
        /// The quota.
        bytes_max: u64,
        /// The quota.
        files_max: u64,
    },
    /// A file version whose chunks or holders do not fit its size.
    #[error("file version refused: {why}")]
    BadContent {
        /// What is wrong.
        why: String,
    },
    /// `cluster` names the read-only `/cluster` namespace, not a volume.
    #[error(
        "`cluster` is reserved: `--volume cluster:/path` mounts the read-only /cluster namespace"
    )]
    ReservedName,
    /// Only an operator may create or remove a volume.
    #[error("a process cannot create or remove volumes")]
    NotForProcesses,
}

fn cut(s: &str) -> String {
    s.chars().take(80).collect()
}

/// Check a volume name.
pub fn check_name(name: &str) -> Result<(), VolumeRefusal> {
    if name == RESERVED_NAME {
        return Err(VolumeRefusal::ReservedName);
    }
    let ok = !name.is_empty()
        && name.len() <= VOLUME_NAME_BYTES_MAX
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(VolumeRefusal::BadName { name: cut(name) })
    }
}

/// Check a path inside a volume: relative, `/`-separated, no empty, `.` or
/// `..` component, no NUL, within the bounds. The root (`""`) is not a
/// path a command may name.
pub fn check_path(path: &str) -> Result<(), VolumeRefusal> {
    let ok = !path.is_empty()
        && path.len() <= PATH_BYTES_MAX
        && path.split('/').all(|c| {
            !c.is_empty()
                && c != "."
                && c != ".."
                && c.len() <= COMPONENT_BYTES_MAX
                && !c.contains('\0')
        });
    if ok {
        Ok(())
    } else {
        Err(VolumeRefusal::BadPath { path: cut(path) })
    }
}

/// The parent of a checked path (`""` for the root).
pub fn parent(path: &str) -> &str {
    path.rsplit_once('/').map(|(p, _)| p).unwrap_or("")
}

fn valid_hex(h: &str) -> bool {
    h.len() == 64
        && h.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl SharedVolume {
    /// The entry at `path` (`None` for the root or nothing).
    pub fn entry(&self, path: &str) -> Option<&VolEntry> {
        self.entries.get(path)
    }

    /// Whether `path` is a directory (the root is).
    pub fn is_dir(&self, path: &str) -> bool {
        path.is_empty() || self.entries.get(path).is_some_and(VolEntry::is_dir)
    }

    /// The entries directly inside directory `dir` (`""`: the root), by
    /// name, in name order.
    pub fn list(&self, dir: &str) -> Vec<(String, VolEntry)> {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        self.entries
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter_map(|(k, v)| {
                let rest = &k[prefix.len()..];
                (!rest.is_empty() && !rest.contains('/')).then(|| (rest.to_string(), v.clone()))
            })
            .collect()
    }

    /// Paths at or under `path` (the entry itself first).
    fn subtree(&self, path: &str) -> Vec<String> {
        let prefix = format!("{path}/");
        let mut out: Vec<String> = self
            .entries
            .get(path)
            .map(|_| path.to_string())
            .into_iter()
            .collect();
        out.extend(
            self.entries
                .range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .map(|(k, _)| k.clone()),
        );
        out
    }

    fn has_children(&self, path: &str) -> bool {
        let prefix = format!("{path}/");
        self.entries
            .range(prefix.clone()..)
            .next()
            .is_some_and(|(k, _)| k.starts_with(&prefix))
    }

    fn parent_is_dir(&self, path: &str) -> Result<(), VolumeRefusal> {
        let p = parent(path);
        if p.is_empty() {
            return Ok(());
        }
        match self.entries.get(p) {
            Some(e) if e.is_dir() => Ok(()),
            Some(_) => Err(VolumeRefusal::NotADirectory { path: cut(p) }),
            None => Err(VolumeRefusal::NotFound { path: cut(p) }),
        }
    }

    fn check_quota(&self, name: &str, bytes: u64, files: u64) -> Result<(), VolumeRefusal> {
        if bytes > self.bytes_max || files > self.files_max {
            return Err(VolumeRefusal::Quota {
                name: name.to_string(),
                bytes,
                files,
                bytes_max: self.bytes_max,
                files_max: self.files_max,
            });
        }
        Ok(())
    }
}

/// Every shared volume, by owner and name, and the write counter.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeBook {
    volumes: Table<VolumeKey, SharedVolume>,
    /// Counts successful writes: the version of the latest.
    written: u64,
}

impl VolumeBook {
    /// The volume `name` of `owner`.
    pub fn get(&self, owner: &Owner, name: &str) -> Option<&SharedVolume> {
        self.volumes.get(&VolumeKey {
            owner: owner.clone(),
            name: name.to_string(),
        })
    }

    /// Every volume, in key order.
    pub fn all(&self) -> impl Iterator<Item = (&VolumeKey, &SharedVolume)> {
        self.volumes.iter()
    }

    fn owner_count(&self, owner: &Owner) -> usize {
        self.volumes.keys().filter(|k| k.owner == *owner).count()
    }

    /// Apply `op` to `owner`'s volume `name` (`by_process`: a guest asks,
    /// which may not create or remove). Returns the write's version.
    /// Changes nothing when it refuses.
    pub fn apply(
        &mut self,
        owner: &Owner,
        name: &str,
        op: &VolumeOp,
        by_process: bool,
        is_node: impl Fn(NodeId) -> bool,
    ) -> Result<u64, VolumeRefusal> {
        check_name(name)?;
        let key = VolumeKey {
            owner: owner.clone(),
            name: name.to_string(),
        };
        let version = self.written + 1;
        match op {
            VolumeOp::Create {
                replicas,
                bytes_max,
                files_max,
                now_ms,
            } => {
                if by_process {
                    return Err(VolumeRefusal::NotForProcesses);
                }
                if *replicas == 0
                    || *replicas > REPLICAS_MAX
                    || *bytes_max > VOLUME_BYTES_MAX_CEILING
                    || *files_max > VOLUME_FILES_MAX_CEILING
                {
                    return Err(VolumeRefusal::BadSettings {
                        replicas: *replicas,
                        bytes_max: *bytes_max,
                        files_max: *files_max,
                    });
                }
                if self.volumes.contains_key(&key) {
                    return Err(VolumeRefusal::VolumeExists { name: key.name });
                }
                if self.owner_count(owner) >= OWNER_VOLUMES_MAX {
                    return Err(VolumeRefusal::TooManyVolumes {
                        max: OWNER_VOLUMES_MAX,
                    });
                }
                self.volumes.insert(
                    key,
                    SharedVolume {
                        replicas: *replicas,
                        bytes_max: *bytes_max,
                        files_max: *files_max,
                        created_ms: *now_ms,
                        bytes: 0,
                        files: 0,
                        entries: Table::new(),
                    },
                );
            }
            VolumeOp::Remove => {
                if by_process {
                    return Err(VolumeRefusal::NotForProcesses);
                }
                if self.volumes.remove(&key).is_none() {
                    return Err(VolumeRefusal::NoVolume { name: key.name });
                }
            }
            op => {
                let vol = self
                    .volumes
                    .get(&key)
                    .ok_or_else(|| VolumeRefusal::NoVolume {
                        name: name.to_string(),
                    })?;
                let next = apply_entry_op(vol, name, op, version, &is_node)?;
                self.volumes.insert(key, next);
            }
        }
        self.written = version;
        Ok(version)
    }
}

/// The volume after `op` (a file or directory operation), or why not.
fn apply_entry_op(
    vol: &SharedVolume,
    name: &str,
    op: &VolumeOp,
    version: u64,
    is_node: &impl Fn(NodeId) -> bool,
) -> Result<SharedVolume, VolumeRefusal> {
    let mut v = vol.clone();
    match op {
        VolumeOp::Put {
            path,
            size,
            chunks,
            holders,
            mtime_ms,
            exclusive,
        } => {
            check_path(path)?;
            check_content(*size, chunks, holders, is_node)?;
            v.parent_is_dir(path)?;
            let (old_bytes, new_file) = match v.entries.get(path.as_str()) {
                Some(e) if e.is_dir() => {
                    return Err(VolumeRefusal::IsADirectory { path: cut(path) })
                }
                Some(_) if *exclusive => return Err(VolumeRefusal::Exists { path: cut(path) }),
                Some(e) => (e.size(), false),
                None => (0, true),
            };
            let bytes = v.bytes - old_bytes + size;
            let files = v.files + u64::from(new_file);
            v.check_quota(name, bytes, files)?;
            v.bytes = bytes;
            v.files = files;
            v.entries.insert(
                path.clone(),
                VolEntry {
                    kind: VolKind::File {
                        size: *size,
                        chunks: chunks.clone(),
                        holders: holders.clone(),
                    },
                    version,
                    mtime_ms: *mtime_ms,
                },
            );
        }
        VolumeOp::Mkdir { path, mtime_ms } => {
            check_path(path)?;
            v.parent_is_dir(path)?;
            if v.entries.contains_key(path.as_str()) {
                return Err(VolumeRefusal::Exists { path: cut(path) });
            }
            v.check_quota(name, v.bytes, v.files + 1)?;
            v.files += 1;
            v.entries.insert(
                path.clone(),
                VolEntry {
                    kind: VolKind::Dir,
                    version,
                    mtime_ms: *mtime_ms,
                },
            );
        }
        VolumeOp::Unlink { path } => {
            check_path(path)?;
            match v.entries.get(path.as_str()) {
                None => return Err(VolumeRefusal::NotFound { path: cut(path) }),
                Some(e) if e.is_dir() => {
                    return Err(VolumeRefusal::IsADirectory { path: cut(path) })
                }
                Some(e) => {
                    v.bytes -= e.size();
                    v.files -= 1;
                }
            }
            v.entries.remove(path.as_str());
        }
        VolumeOp::Rmdir { path } => {
            check_path(path)?;
            match v.entries.get(path.as_str()) {
                None => return Err(VolumeRefusal::NotFound { path: cut(path) }),
                Some(e) if !e.is_dir() => {
                    return Err(VolumeRefusal::NotADirectory { path: cut(path) })
                }
                Some(_) if v.has_children(path) => {
                    return Err(VolumeRefusal::NotEmpty { path: cut(path) })
                }
                Some(_) => v.files -= 1,
            }
            v.entries.remove(path.as_str());
        }
        VolumeOp::Rename { from, to } => {
            check_path(from)?;
            check_path(to)?;
            let moving = v
                .entries
                .get(from.as_str())
                .cloned()
                .ok_or_else(|| VolumeRefusal::NotFound { path: cut(from) })?;
            if from == to {
                return Ok(v);
            }
            if to.starts_with(&format!("{from}/")) {
                return Err(VolumeRefusal::IntoItself {
                    from: cut(from),
                    to: cut(to),
                });
            }
            v.parent_is_dir(to)?;
            // What is at `to` is replaced: a file by a file, an empty
            // directory by a directory.
            if let Some(there) = v.entries.get(to.as_str()).cloned() {
                match (moving.is_dir(), there.is_dir()) {
                    (false, true) => return Err(VolumeRefusal::IsADirectory { path: cut(to) }),
                    (true, false) => return Err(VolumeRefusal::NotADirectory { path: cut(to) }),
                    (true, true) if v.has_children(to) => {
                        return Err(VolumeRefusal::NotEmpty { path: cut(to) })
                    }
                    _ => {}
                }
                v.bytes -= there.size();
                v.files -= 1;
                v.entries.remove(to.as_str());
            }
            let moved = v.subtree(from);
            if moved.len() > RENAME_ENTRIES_MAX {
                return Err(VolumeRefusal::RenameTooLarge {
                    path: cut(from),
                    entries: moved.len(),
                    max: RENAME_ENTRIES_MAX,
                });
            }
            for old in moved {
                if let Some(e) = v.entries.remove(old.as_str()) {
                    let new = format!("{to}{}", &old[from.len()..]);
                    if new.len() > PATH_BYTES_MAX {
                        return Err(VolumeRefusal::BadPath { path: cut(&new) });
                    }
                    v.entries.insert(new, e);
                }
            }
        }
        VolumeOp::Create { .. } | VolumeOp::Remove => {
            unreachable!("handled by VolumeBook::apply")
        }
    }
    Ok(v)
}

/// A file version's chunks must be valid hashes, as many as its size
/// needs, held by 1 to [`HOLDERS_MAX`] known nodes.
fn check_content(
    size: u64,
    chunks: &[String],
    holders: &[NodeId],
    is_node: &impl Fn(NodeId) -> bool,
) -> Result<(), VolumeRefusal> {
    let bad = |why: String| Err(VolumeRefusal::BadContent { why });
    if chunks.len() > FILE_CHUNKS_MAX {
        return bad(format!(
            "{} chunks (at most {FILE_CHUNKS_MAX})",
            chunks.len()
        ));
    }
    let want = size.div_ceil(CHUNK_BYTES);
    if chunks.len() as u64 != want {
        return bad(format!(
            "{} chunks for {size} bytes (want {want})",
            chunks.len()
        ));
    }
    if let Some(h) = chunks.iter().find(|h| !valid_hex(h)) {
        return bad(format!("chunk {:?} is not a sha256 hex", cut(h)));
    }
    if !chunks.is_empty() && (holders.is_empty() || holders.len() > HOLDERS_MAX) {
        return bad(format!("{} holders (1 to {HOLDERS_MAX})", holders.len()));
    }
    if let Some(n) = holders.iter().find(|n| !is_node(**n)) {
        return bad(format!("holder {n} is not a member"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_pki::Role;

    fn alice() -> Owner {
        Owner {
            role: Role::Client,
            id: "alice".into(),
        }
    }

    fn create(b: &mut VolumeBook, name: &str, bytes_max: u64, files_max: u64) {
        let op = VolumeOp::Create {
            replicas: 2,
            bytes_max,
            files_max,
            now_ms: 1,
        };
        b.apply(&alice(), name, &op, false, |_| true)
            .expect("created");
    }

    fn put(path: &str, size: u64) -> VolumeOp {
        VolumeOp::Put {
            path: path.into(),
            size,
            chunks: (0..size.div_ceil(CHUNK_BYTES))
                .map(|_| "a".repeat(64))
                .collect(),
            holders: vec![1],
            mtime_ms: 2,
            exclusive: false,
        }
    }

    #[test]
    fn files_dirs_renames_and_quotas_keep_the_tree_and_usage_exact() {
        let mut b = VolumeBook::default();
        create(&mut b, "v", 1 << 20, 4);
        let ap = |b: &mut VolumeBook, op: VolumeOp| b.apply(&alice(), "v", &op, true, |n| n == 1);
        // A file needs its parent.
        assert!(matches!(
            ap(&mut b, put("d/f", 10)),
            Err(VolumeRefusal::NotFound { .. })
        ));
        ap(
            &mut b,
            VolumeOp::Mkdir {
                path: "d".into(),
                mtime_ms: 1,
            },
        )
        .unwrap();
        let v1 = ap(&mut b, put("d/f", 10)).unwrap();
        let v2 = ap(&mut b, put("d/f", 300_000)).unwrap();
        assert!(v2 > v1);
        let vol = b.get(&alice(), "v").unwrap();
        assert_eq!((vol.bytes, vol.files), (300_000, 2));
        assert_eq!(vol.list("").len(), 1);
        assert_eq!(vol.list("d")[0].0, "f");
        // Over the byte quota: refused, nothing changed.
        let before = b.clone();
        assert!(matches!(
            ap(&mut b, put("d/g", 1 << 20)),
            Err(VolumeRefusal::Quota { .. })
        ));
        assert_eq!(b, before);
        // Chunks that do not fit the size, an unknown holder: refused.
        let mut bad = put("d/g", 10);
        if let VolumeOp::Put { chunks, .. } = &mut bad {
            chunks.push("b".repeat(64));
        }
        assert!(matches!(
            ap(&mut b, bad),
            Err(VolumeRefusal::BadContent { .. })
        ));
        let mut bad = put("d/g", 10);
        if let VolumeOp::Put { holders, .. } = &mut bad {
            *holders = vec![7];
        }
        assert!(matches!(
            ap(&mut b, bad),
            Err(VolumeRefusal::BadContent { .. })
        ));
        // Rename a directory: its files move with it.
        ap(
            &mut b,
            VolumeOp::Rename {
                from: "d".into(),
                to: "e".into(),
            },
        )
        .unwrap();
        let vol = b.get(&alice(), "v").unwrap();
        assert!(vol.entry("e/f").is_some() && vol.entry("d/f").is_none());
        assert!(matches!(
            ap(
                &mut b,
                VolumeOp::Rename {
                    from: "e".into(),
                    to: "e/x".into()
                }
            ),
            Err(VolumeRefusal::IntoItself { .. })
        ));
        assert!(matches!(
            ap(&mut b, VolumeOp::Rmdir { path: "e".into() }),
            Err(VolumeRefusal::NotEmpty { .. })
        ));
        // A file replacing a file by rename gives back its bytes.
        ap(&mut b, put("g", 5)).unwrap();
        ap(
            &mut b,
            VolumeOp::Rename {
                from: "g".into(),
                to: "e/f".into(),
            },
        )
        .unwrap();
        let vol = b.get(&alice(), "v").unwrap();
        assert_eq!((vol.bytes, vol.files), (5, 2));
        ap(&mut b, VolumeOp::Unlink { path: "e/f".into() }).unwrap();
        ap(&mut b, VolumeOp::Rmdir { path: "e".into() }).unwrap();
        let vol = b.get(&alice(), "v").unwrap();
        assert_eq!((vol.bytes, vol.files, vol.entries.len()), (0, 0, 0));
        // Paths that are not clean, and processes creating volumes.
        for p in ["", "/a", "a/../b", "a//b", "./a", "a/"] {
            assert!(
                matches!(ap(&mut b, put(p, 1)), Err(VolumeRefusal::BadPath { .. })),
                "{p}"
            );
        }
        let op = VolumeOp::Create {
            replicas: 1,
            bytes_max: 1,
            files_max: 1,
            now_ms: 0,
        };
        assert_eq!(
            b.apply(&alice(), "w", &op, true, |_| true),
            Err(VolumeRefusal::NotForProcesses)
        );
    }

    #[test]
    fn names_settings_and_counts_are_bounded() {
        let mut b = VolumeBook::default();
        for n in ["", "A", "-a", "a/b", &"a".repeat(65)] {
            assert!(
                matches!(check_name(n), Err(VolumeRefusal::BadName { .. })),
                "{n:?}"
            );
        }
        let op = VolumeOp::Create {
            replicas: 6,
            bytes_max: 1,
            files_max: 1,
            now_ms: 0,
        };
        assert!(matches!(
            b.apply(&alice(), "v", &op, false, |_| true),
            Err(VolumeRefusal::BadSettings { .. })
        ));
        for i in 0..OWNER_VOLUMES_MAX {
            create(&mut b, &format!("v{i}"), 1, 1);
        }
        let op = VolumeOp::Create {
            replicas: 1,
            bytes_max: 1,
            files_max: 1,
            now_ms: 0,
        };
        assert!(matches!(
            b.apply(&alice(), "x", &op, false, |_| true),
            Err(VolumeRefusal::TooManyVolumes { .. })
        ));
        assert!(matches!(
            b.apply(&alice(), "v0", &op, false, |_| true),
            Err(VolumeRefusal::VolumeExists { .. })
        ));
    }
}
