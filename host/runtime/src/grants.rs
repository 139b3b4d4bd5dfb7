//! What a restored or arriving process may touch on this node, and the
//! checks every captured image passes before it is used.
//!
//! A snapshot file or a peer's migration stream describes a process: its
//! memory, its globals, the call it is in, its queued messages, its open
//! files. It never decides what the process may reach on the host. The
//! capabilities — preopened host directories, environment, memory cap,
//! stdin and output forwarding — come from [`Grants`], which the caller
//! builds from what the restorer grants now (a restore) or from what the
//! cluster recorded (an arrival). [`spec_for`] joins the two: the image's
//! argv and module variant, the grants' capabilities, and a refusal naming
//! every guest path the process had that is not granted again.
//!
//! [`check_image`] bounds every field of an image a hostile writer controls
//! (memory size a whole number of 64 KiB Wasm pages within the cap, the
//! Asyncify buffer inside memory, the open-file table consistent with the
//! preopens) so that nothing later can panic or index out of range.

use crate::process::CapturedProcess;
use crate::spec::{DirGrant, SpawnSpec};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Size of a Wasm page: linear memory is always a whole number of them.
pub const WASM_PAGE_BYTES: u64 = 65536;
/// Most open files a captured image may list.
pub const OPEN_FILES_MAX: usize = 1024;
/// Highest fd a captured open file may have.
pub const FD_MAX: u32 = 1 << 16;
/// Longest path of a captured open file, in bytes.
pub const OPEN_PATH_BYTES_MAX: usize = 4096;
/// Most mutable globals a captured image may list.
pub const GLOBALS_MAX: usize = 65536;
/// Longest import name of a captured pending call, in bytes.
pub const IMPORT_NAME_BYTES_MAX: usize = 512;
/// The first fd WASI gives a preopened directory (0–2 are stdio).
pub const FIRST_PREOPEN_FD: u32 = 3;

/// The capabilities a restored or arriving process gets on this node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grants {
    /// Host directories preopened for it.
    #[serde(default)]
    pub dirs: Vec<DirGrant>,
    /// Its environment variables.
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Its memory cap in bytes (`None`: the node's default).
    #[serde(default)]
    pub memory_bytes_max: Option<u64>,
    /// Its private volumes, with their quotas ([`crate::volume`]).
    #[serde(default)]
    pub volumes: Vec<crate::volume::VolumeMount>,
}

impl Grants {
    /// True when nothing is granted beyond the node's defaults.
    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty()
            && self.env.is_empty()
            && self.memory_bytes_max.is_none()
            && self.volumes.is_empty()
    }
}

/// Why a captured image cannot be started here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// Its pending call names an effect its outbox never numbered
    /// ([`crate::abi::effect`]).
    #[error("its pending call is effect {effect}, but only {produced} were numbered")]
    EffectBeyondOutput {
        /// The effect's number.
        effect: u64,
        /// The outbox's last number.
        produced: u64,
    },
    /// Its numbered channels break their bounds or invariants
    /// ([`crate::outbox`]).
    #[error("its message channels: {0}")]
    Channels(#[from] crate::outbox::ChannelError),
    /// Linear memory is always a whole number of 64 KiB pages.
    #[error("memory size {bytes} is not a multiple of 64 KiB")]
    MemoryNotPageMultiple {
        /// The size in the image.
        bytes: u64,
    },
    /// The memory is larger than the process may have.
    #[error("memory size {bytes} is over the process's cap of {max} bytes")]
    MemoryOverCap {
        /// The size in the image.
        bytes: u64,
        /// The cap.
        max: u64,
    },
    /// The Asyncify buffer must lie inside memory.
    #[error("capture buffer at {at} is outside the memory of {memory_bytes} bytes")]
    BufferOutsideMemory {
        /// Its address.
        at: u32,
        /// The memory size.
        memory_bytes: u64,
    },
    /// Too many globals.
    #[error("{count} globals (at most {max})")]
    TooManyGlobals {
        /// How many the image lists.
        count: usize,
        /// The bound.
        max: usize,
    },
    /// The pending call's name is too long.
    #[error("pending call name of {bytes} bytes (at most {max})")]
    ImportNameTooLong {
        /// Its length.
        bytes: usize,
        /// The bound.
        max: usize,
    },
    /// Too many monitors, watchers or calls served.
    #[error("{count} {what} (at most {max})")]
    TooManyCalls {
        /// Which list.
        what: &'static str,
        /// How many the image lists.
        count: usize,
        /// The bound.
        max: usize,
    },
    /// An open file's shared-volume copy lists more chunks than any file
    /// may have (all copies together), or a size its chunks cannot hold.
    #[error("open file fd {fd}: a shared-volume copy of {size} bytes in {chunks} chunks (at most {max} chunks in all)")]
    BadSharedCopy {
        /// The file.
        fd: u32,
        /// Its size.
        size: u64,
        /// Its chunks.
        chunks: usize,
        /// The bound on all copies' chunks.
        max: usize,
    },
    /// Too many open files.
    #[error("{count} open files (at most {max})")]
    TooManyOpenFiles {
        /// How many the image lists.
        count: usize,
        /// The bound.
        max: usize,
    },
    /// An open file's fd is out of range or collides with stdio, a
    /// preopen or another open file.
    #[error("open file fd {fd} is out of range or used twice")]
    BadFd {
        /// The fd.
        fd: u32,
    },
    /// An open file is relative to a directory fd the process does not have.
    #[error("open file fd {fd} is relative to fd {dir_fd}, which is neither a granted directory nor an open file")]
    UnknownDirFd {
        /// The file's fd.
        fd: u32,
        /// The directory fd it names.
        dir_fd: u32,
    },
    /// An open file's path is too long.
    #[error("open file fd {fd} has a path of {bytes} bytes (at most {max})")]
    PathTooLong {
        /// The file's fd.
        fd: u32,
        /// The path length.
        bytes: usize,
        /// The bound.
        max: usize,
    },
    /// The process had guest directories that are not granted again.
    #[error("the process had these guest directories, which are not granted now: {}; grant them again (e.g. --dir HOST::{})", .0.join(", "), .0.first().map(String::as_str).unwrap_or(""))]
    UngrantedDirs(Vec<String>),
    /// Two grants name the same guest path.
    #[error("guest directory {0} is granted twice")]
    DuplicateGuestDir(String),
    /// A volume of the image, or asked for, is not usable here.
    #[error("{0}")]
    Volume(String),
}

/// How far a granter's authority over host directories reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirAuthority {
    /// Any host directory but the node's data dir (the node's operator, an
    /// admin).
    Any,
    /// Only directories the node's operator lists as grantable
    /// (`--grantable-dir`), or directories under them (a client).
    Listed,
}

/// Why a directory may not be granted.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    /// The directory is, contains, or is inside the node's data dir.
    #[error("{} is or holds the node's data dir: it is never granted", .0.display())]
    DataDir(PathBuf),
    /// A client asked for a directory the operator does not offer.
    #[error("{} is not a grantable directory on this node (the operator allows: {})", .path.display(), list(.allowed))]
    NotGrantable {
        /// The directory asked for.
        path: PathBuf,
        /// What the node allows.
        allowed: Vec<PathBuf>,
    },
    /// The directory cannot be resolved on this host.
    #[error("cannot grant {}: {source}", .path.display())]
    Unresolvable {
        /// The directory asked for.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Too many directories or variables, or one too long.
    #[error("too many grants: {0}")]
    TooMany(&'static str),
    /// A volume asked for is malformed or over the ceilings.
    #[error(transparent)]
    Volume(#[from] crate::volume::VolumeError),
}

fn list(dirs: &[PathBuf]) -> String {
    if dirs.is_empty() {
        return "none".into();
    }
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Most directories one process may be granted.
pub const DIRS_MAX: usize = 64;
/// Most environment variables one process may be granted.
pub const ENV_MAX: usize = 1024;
/// Longest environment variable or path, in bytes.
pub const GRANT_TEXT_BYTES_MAX: usize = 4096;

/// True when `a` and `b` (canonical paths) overlap: one is the other or
/// lies inside it.
fn overlaps(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// The canonical form of `path` (symlinks resolved), as an error naming it.
pub fn canonical(path: &Path) -> Result<PathBuf, GrantError> {
    std::fs::canonicalize(path).map_err(|source| GrantError::Unresolvable {
        path: path.to_path_buf(),
        source,
    })
}

/// Refuse a host directory that is, contains, or is inside `data_dir`
/// (canonical).
pub fn refuse_data_dir(host: &Path, data_dir: &Path) -> Result<PathBuf, GrantError> {
    let host = canonical(host)?;
    if overlaps(&host, data_dir) {
        return Err(GrantError::DataDir(host));
    }
    Ok(host)
}

/// Check `grants` against what `authority` may grant on a node whose
/// (canonical) data dir is `data_dir` and whose operator offers
/// `grantable` (canonical): the result has canonical host paths. Env and
/// sizes are bounded too.
pub fn admit(
    grants: &Grants,
    authority: DirAuthority,
    grantable: &[PathBuf],
    data_dir: &Path,
) -> Result<Grants, GrantError> {
    if grants.dirs.len() > DIRS_MAX {
        return Err(GrantError::TooMany("more than 64 directories"));
    }
    if grants.env.len() > ENV_MAX {
        return Err(GrantError::TooMany("more than 1024 environment variables"));
    }
    let long = |t: &str| t.len() > GRANT_TEXT_BYTES_MAX;
    if grants.env.iter().any(|(k, v)| long(k) || long(v))
        || grants
            .dirs
            .iter()
            .any(|d| long(&d.guest) || d.host.as_os_str().len() > GRANT_TEXT_BYTES_MAX)
    {
        return Err(GrantError::TooMany("a path or variable over 4096 bytes"));
    }
    crate::volume::check_mounts(&grants.volumes)?;
    let mut dirs = Vec::with_capacity(grants.dirs.len());
    for d in &grants.dirs {
        let host = refuse_data_dir(&d.host, data_dir)?;
        if authority == DirAuthority::Listed && !grantable.iter().any(|g| host.starts_with(g)) {
            return Err(GrantError::NotGrantable {
                path: host,
                allowed: grantable.to_vec(),
            });
        }
        dirs.push(DirGrant {
            host,
            guest: d.guest.clone(),
        });
    }
    Ok(Grants {
        dirs,
        env: grants.env.clone(),
        memory_bytes_max: grants.memory_bytes_max,
        volumes: grants.volumes.clone(),
    })
}

/// The spec a captured process of `module` starts from here: argv and
/// module variant from the image; every capability from `grants`, nothing from the image.
/// The granted directories are ordered as the image had them (so the
/// preopen fds its open files refer to stay the same), any extra ones
/// after. Refuses, naming them, guest directories the image had that
/// `grants` lacks.
pub fn spec_for(
    module: shoal_registry::Sha256,
    image: &CapturedProcess,
    grants: &Grants,
) -> Result<SpawnSpec, ImageError> {
    let mut seen = std::collections::BTreeSet::new();
    for g in &grants.dirs {
        if !seen.insert(g.guest.as_str()) {
            return Err(ImageError::DuplicateGuestDir(g.guest.clone()));
        }
    }
    let mut dirs = Vec::with_capacity(grants.dirs.len());
    let mut missing = Vec::new();
    for had in &image.spec.dirs {
        match grants.dirs.iter().find(|g| g.guest == had.guest) {
            Some(g) => {
                if !dirs.contains(g) {
                    dirs.push(g.clone());
                }
            }
            None => missing.push(had.guest.clone()),
        }
    }
    if !missing.is_empty() {
        return Err(ImageError::UngrantedDirs(missing));
    }
    for g in &grants.dirs {
        if !dirs.contains(g) {
            dirs.push(g.clone());
        }
    }
    let mut spec = SpawnSpec::new(module, image.spec.args.clone());
    spec.volumes = volumes_for(image, grants)?;
    spec.env = grants.env.clone();
    spec.dirs = dirs;
    spec.inherit_stdin = false;
    spec.forward_output = false;
    spec.memory_bytes_max = grants.memory_bytes_max;
    spec.preemptible = image.spec.preemptible;
    Ok(spec)
}

/// The volumes a captured process gets here: exactly those its image had,
/// in the same order (their preopen fds come first), each with the quotas
/// `grants` gives that guest path or the defaults — never the image's. A
/// granted volume the image does not have is refused: a restore cannot add
/// one.
fn volumes_for(
    image: &CapturedProcess,
    grants: &Grants,
) -> Result<Vec<crate::volume::VolumeMount>, ImageError> {
    crate::volume::check_mounts(&image.spec.volumes)
        .map_err(|e| ImageError::Volume(e.to_string()))?;
    if let Some(extra) = grants
        .volumes
        .iter()
        .find(|g| !image.spec.volumes.iter().any(|v| v.guest == g.guest))
    {
        return Err(ImageError::Volume(format!(
            "the process has no volume at {}: a restore keeps the volumes it had",
            extra.guest
        )));
    }
    Ok(image
        .spec
        .volumes
        .iter()
        .map(|had| crate::volume::mount_for(&grants.volumes, had))
        .collect())
}

/// Check every field of `image` a writer controls before it is used:
/// `memory_bytes_max` is the cap the process will run under, `preopens`
/// how many directories it is granted.
pub fn check_image(
    image: &CapturedProcess,
    memory_bytes_max: u64,
    preopens: usize,
) -> Result<(), ImageError> {
    let bytes = image.memory.len() as u64;
    if !bytes.is_multiple_of(WASM_PAGE_BYTES) {
        return Err(ImageError::MemoryNotPageMultiple { bytes });
    }
    if bytes > memory_bytes_max {
        return Err(ImageError::MemoryOverCap {
            bytes,
            max: memory_bytes_max,
        });
    }
    if u64::from(image.asyncify_buffer) >= bytes {
        return Err(ImageError::BufferOutsideMemory {
            at: image.asyncify_buffer,
            memory_bytes: bytes,
        });
    }
    if image.globals.len() > GLOBALS_MAX {
        return Err(ImageError::TooManyGlobals {
            count: image.globals.len(),
            max: GLOBALS_MAX,
        });
    }
    if image.pending.import.len() > IMPORT_NAME_BYTES_MAX {
        return Err(ImageError::ImportNameTooLong {
            bytes: image.pending.import.len(),
            max: IMPORT_NAME_BYTES_MAX,
        });
    }
    let calls = &image.calls;
    for (what, count, max) in [
        (
            "monitors",
            calls.monitors.len(),
            shoal_abi::calls::MONITORS_MAX,
        ),
        (
            "watchers",
            calls.watchers.len(),
            shoal_abi::calls::WATCHERS_MAX,
        ),
        (
            "calls served",
            calls.serving.len(),
            shoal_abi::calls::SERVING_MAX,
        ),
        (
            "requests",
            calls.requests.len(),
            shoal_abi::calls::REQUESTS_MAX,
        ),
    ] {
        if count > max {
            return Err(ImageError::TooManyCalls { what, count, max });
        }
    }
    image
        .outbox
        .check()
        .and_then(|()| image.inbox.check())
        .map_err(ImageError::Channels)?;
    if let Some(effect) = image.pending.effect {
        let produced = image.outbox.produced();
        if effect == 0 || effect > produced {
            return Err(ImageError::EffectBeyondOutput { effect, produced });
        }
    }
    if image.volumes.len() > crate::volume::VOLUMES_MAX {
        return Err(ImageError::Volume(format!(
            "{} volumes in the image (at most {})",
            image.volumes.len(),
            crate::volume::VOLUMES_MAX
        )));
    }
    if image.open_files.len() > OPEN_FILES_MAX {
        return Err(ImageError::TooManyOpenFiles {
            count: image.open_files.len(),
            max: OPEN_FILES_MAX,
        });
    }
    // Preopens take fds 3.. in order; open files are reopened in list
    // order, each relative to a preopen or to a file reopened before it.
    let preopen_end = FIRST_PREOPEN_FD.saturating_add(u32::try_from(preopens).unwrap_or(u32::MAX));
    let mut known = std::collections::BTreeSet::new();
    for f in &image.open_files {
        if f.fd < preopen_end || f.fd > FD_MAX || known.contains(&f.fd) {
            return Err(ImageError::BadFd { fd: f.fd });
        }
        let dir_ok =
            (FIRST_PREOPEN_FD..preopen_end).contains(&f.dir_fd) || known.contains(&f.dir_fd);
        if !dir_ok {
            return Err(ImageError::UnknownDirFd {
                fd: f.fd,
                dir_fd: f.dir_fd,
            });
        }
        if f.path.len() > OPEN_PATH_BYTES_MAX {
            return Err(ImageError::PathTooLong {
                fd: f.fd,
                bytes: f.path.len(),
                max: OPEN_PATH_BYTES_MAX,
            });
        }
        known.insert(f.fd);
    }
    let max = crate::volume::shared::COPY_CHUNKS_MAX;
    let mut chunks_total = 0usize;
    for f in &image.open_files {
        let Some(c) = &f.copy else { continue };
        chunks_total = chunks_total.saturating_add(c.chunks.len());
        let n = c.chunks.len() as u64;
        let fits = c.size <= n.saturating_mul(crate::volume::CHUNK_BYTES)
            && c.size
                > n.saturating_sub(1)
                    .saturating_mul(crate::volume::CHUNK_BYTES)
            || (n == 0 && c.size == 0);
        if chunks_total > max || !fits {
            return Err(ImageError::BadSharedCopy {
                fd: f.fd,
                size: c.size,
                chunks: c.chunks.len(),
                max,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn the_data_dir_is_never_granted_and_clients_only_get_listed_dirs() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        let offered = root.path().join("offered");
        std::fs::create_dir_all(data.join("pki")).unwrap();
        std::fs::create_dir_all(offered.join("sub")).unwrap();
        let data = canonical(&data).unwrap();
        let offered = canonical(&offered).unwrap();
        let ask = |host: &Path| Grants {
            dirs: vec![DirGrant {
                host: host.to_path_buf(),
                guest: "/g".into(),
            }],
            ..Grants::default()
        };
        let grantable = [offered.clone()];
        for bad in [Path::new("/"), root.path(), &data, &data.join("pki")] {
            for auth in [DirAuthority::Any, DirAuthority::Listed] {
                let e = admit(&ask(bad), auth, &grantable, &data).unwrap_err();
                assert!(
                    matches!(e, GrantError::DataDir(_) | GrantError::NotGrantable { .. }),
                    "{bad:?}: {e}"
                );
            }
            assert!(matches!(
                admit(&ask(bad), DirAuthority::Any, &grantable, &data),
                Err(GrantError::DataDir(_))
            ));
        }
        let ok = admit(
            &ask(&offered.join("sub")),
            DirAuthority::Listed,
            &grantable,
            &data,
        );
        assert_eq!(ok.unwrap().dirs[0].host, offered.join("sub"));
        let other = tempfile::tempdir().unwrap();
        assert!(matches!(
            admit(&ask(other.path()), DirAuthority::Listed, &grantable, &data),
            Err(GrantError::NotGrantable { .. })
        ));
        assert!(admit(&ask(other.path()), DirAuthority::Any, &grantable, &data).is_ok());
        // A symlink into the data dir is resolved, then refused.
        let link = other.path().join("link");
        std::os::unix::fs::symlink(&data, &link).unwrap();
        assert!(matches!(
            admit(&ask(&link), DirAuthority::Any, &grantable, &data),
            Err(GrantError::DataDir(_))
        ));
    }
    use crate::capture::PendingCall;
    use crate::process::OpenFile;
    use shoal_registry::Sha256;

    /// A minimal image for tests: `memory_bytes` of zeros, `dirs` asked for.
    pub(crate) fn image(memory_bytes: usize, dirs: &[&str]) -> CapturedProcess {
        let mut spec = SpawnSpec::new(Sha256::of(b"m"), vec!["m".into()]);
        spec.dirs = dirs
            .iter()
            .map(|g| DirGrant {
                host: "/".into(),
                guest: g.to_string(),
            })
            .collect();
        spec.env = vec![("SECRET".into(), "1".into())];
        spec.inherit_stdin = true;
        spec.forward_output = true;
        spec.memory_bytes_max = Some(u64::MAX);
        CapturedProcess {
            outbox: Default::default(),
            log_visible: None,
            inbox: Default::default(),
            memory: vec![0; memory_bytes].into(),
            delta: Default::default(),
            globals: Vec::new(),
            pending: PendingCall {
                import: "shoal_v1.recv".into(),
                remaining_ms: None,
                effect: None,
            },
            asyncify_buffer: 16,
            mailbox: Vec::new(),
            spec,
            fuel_remaining: None,
            open_files: Vec::new(),
            log: Vec::new(),
            log_start: 0,
            monotonic_ns: 0,
            calls: Default::default(),
            volumes: Vec::new(),
        }
    }

    fn file(fd: u32, dir_fd: u32) -> OpenFile {
        OpenFile {
            fd,
            dir_fd,
            dirflags: 0,
            path: "f".into(),
            oflags: 0,
            rights_base: 0,
            rights_inheriting: 0,
            fdflags: 0,
            offset: None,
            copy: None,
        }
    }

    #[test]
    fn capabilities_come_from_the_grants_never_the_image() {
        let img = image(65536, &["/"]);
        let err = spec_for(img.spec.module, &img, &Grants::default()).unwrap_err();
        assert_eq!(err, ImageError::UngrantedDirs(vec!["/".into()]));
        assert!(err.to_string().contains("/"), "{err}");
        let img = image(65536, &[]);
        let spec = spec_for(img.spec.module, &img, &Grants::default()).unwrap();
        assert!(spec.dirs.is_empty());
        assert!(spec.env.is_empty());
        assert!(!spec.inherit_stdin && !spec.forward_output);
        assert_eq!(spec.memory_bytes_max, None);
    }

    #[test]
    fn granted_dirs_keep_the_images_order() {
        let img = image(65536, &["/a", "/b"]);
        let g = |h: &str, guest: &str| DirGrant {
            host: h.into(),
            guest: guest.into(),
        };
        let grants = Grants {
            dirs: vec![g("/x", "/c"), g("/y", "/b"), g("/z", "/a")],
            ..Grants::default()
        };
        let spec = spec_for(img.spec.module, &img, &grants).unwrap();
        let guests: Vec<&str> = spec.dirs.iter().map(|d| d.guest.as_str()).collect();
        assert_eq!(guests, ["/a", "/b", "/c"]);
        let twice = Grants {
            dirs: vec![g("/x", "/a"), g("/y", "/a")],
            ..Grants::default()
        };
        assert!(matches!(
            spec_for(img.spec.module, &img, &twice),
            Err(ImageError::DuplicateGuestDir(_))
        ));
    }

    #[test]
    fn an_image_cannot_name_an_effect_it_never_numbered() {
        let mut img = image(65536, &[]);
        img.pending.effect = Some(1);
        assert_eq!(
            check_image(&img, 1 << 20, 0),
            Err(ImageError::EffectBeyondOutput {
                effect: 1,
                produced: 0
            })
        );
        img.outbox.produced = 1;
        assert!(check_image(&img, 1 << 20, 0).is_ok());
        img.pending.effect = Some(0);
        assert!(check_image(&img, 1 << 20, 0).is_err());
    }

    #[test]
    fn every_image_field_is_bounded() {
        assert!(check_image(&image(65536, &[]), 1 << 20, 0).is_ok());
        assert_eq!(
            check_image(&image(65536 + 1, &[]), 1 << 20, 0),
            Err(ImageError::MemoryNotPageMultiple { bytes: 65537 })
        );
        assert!(matches!(
            check_image(&image(2 * 65536, &[]), 65536, 0),
            Err(ImageError::MemoryOverCap { .. })
        ));
        let mut img = image(65536, &[]);
        img.asyncify_buffer = 65536;
        assert!(matches!(
            check_image(&img, 1 << 20, 0),
            Err(ImageError::BufferOutsideMemory { .. })
        ));
        let mut img = image(65536, &[]);
        img.open_files = vec![file(4, 3), file(5, 4)];
        assert!(check_image(&img, 1 << 20, 1).is_ok());
        assert!(matches!(
            check_image(&img, 1 << 20, 0),
            Err(ImageError::BadFd { fd: 4 } | ImageError::UnknownDirFd { .. })
        ));
        img.open_files = vec![file(4, 9)];
        assert!(matches!(
            check_image(&img, 1 << 20, 1),
            Err(ImageError::UnknownDirFd { fd: 4, dir_fd: 9 })
        ));
        img.open_files = vec![file(4, 3), file(4, 3)];
        assert!(matches!(
            check_image(&img, 1 << 20, 1),
            Err(ImageError::BadFd { fd: 4 })
        ));
        img.open_files = vec![file(FD_MAX + 1, 3)];
        assert!(matches!(
            check_image(&img, 1 << 20, 1),
            Err(ImageError::BadFd { .. })
        ));
        // A shared-volume copy is bounded before anything is fetched or
        // written: its chunks (all copies together) and a size they hold.
        let chunk = crate::volume::CHUNK_BYTES;
        let copy = |size: u64, chunks: usize| {
            Some(crate::volume::shared::SharedCopyImage {
                size,
                chunks: vec![shoal_registry::Sha256([7; 32]); chunks],
                exclusive: false,
            })
        };
        let with = |copies: Vec<Option<crate::volume::shared::SharedCopyImage>>| {
            let mut img = img.clone();
            img.open_files = copies
                .into_iter()
                .enumerate()
                .map(|(i, c)| OpenFile {
                    copy: c,
                    ..file(4 + i as u32, 3)
                })
                .collect();
            check_image(&img, 1 << 20, 1)
        };
        assert!(with(vec![copy(0, 0), copy(chunk + 1, 2), copy(chunk, 1)]).is_ok());
        for bad in [copy(1, 0), copy(chunk + 1, 1), copy(chunk, 2), copy(0, 1)] {
            assert!(
                matches!(
                    with(vec![bad.clone()]),
                    Err(ImageError::BadSharedCopy { .. })
                ),
                "{bad:?}"
            );
        }
        let max = crate::volume::shared::COPY_CHUNKS_MAX;
        let half = max / 2 + 1;
        let size = half as u64 * chunk;
        assert!(with(vec![copy(size, half)]).is_ok());
        assert!(matches!(
            with(vec![copy(size, half), copy(size, half)]),
            Err(ImageError::BadSharedCopy { .. })
        ));
    }
}
