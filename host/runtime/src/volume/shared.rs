//! Shared volumes as WASI directories: `--volume NAME:/shared`.
//!
//! The tree (directories, file versions) is in Raft; file content is in
//! 256 KiB chunks on the volume's replicas (see the daemon's side of
//! [`SharedFiles`]). A guest sees plain WASI:
//!
//! - **open** reads the path's current version linearizably and copies it,
//!   whole, into a private scratch file on this node (chunks this node
//!   lacks are fetched from their holders, each checked against its hash);
//!   reads and writes go to that copy;
//! - **close** (the last fd dropped), `fsync` / `fdatasync`, and any
//!   capture of the process (a snapshot, a move) publish a written copy:
//!   its chunks are stored on the replicas, then one Raft write replaces
//!   the file's version, whole. Others see it when they next open it
//!   (close-to-open, as AFS does). Two writers closing the same file: the
//!   later close wins, whole; the earlier version is never torn;
//! - directories, `mkdir`, `unlink`, `rmdir` and `rename` are single Raft
//!   writes (a rename is atomic);
//! - `O_APPEND` from two nodes at once is **not** atomic across nodes: each
//!   appends to its own copy, and the later close wins.
//!
//! A failed publish at `fd_close` is reported by it (`EDQUOT`, `EIO`:
//! `crate::abi::wasi_shared` publishes before it closes), and the fd is
//! closed all the same; the copy is lost. A copy dropped otherwise (its
//! process ended with the file open) is published by its drop, where a
//! failure can only be logged.
//!
//! **Under output commit** (a process that may resume from a checkpoint,
//! issue #16) every write that others can see — a publish at `close`,
//! `fsync` or `fdatasync`, `mkdir`, `unlink`, `rmdir`, `rename` — is an
//! effect: the WASI call waits, captured inside itself, until a recorded
//! checkpoint covers it, and the write goes under the effect's key, so a
//! copy resumed from that checkpoint repeats it without making it twice
//! (`crate::abi::wasi_shared`). A capture then publishes nothing: the
//! written copies of open files travel in the image as chunks
//! ([`SharedCopyImage`]), and a restore puts them back, so a copy resumed
//! from an older checkpoint never shows what the lost one wrote. A kill
//! or a move publishes nothing either; an exit of the process's own
//! publishes what it left open (its end is final).
//!
//! Paths never leave the volume: they are resolved lexically (a shared
//! volume has no symlinks), `..` cannot climb above the directory fd, and
//! absolute paths are refused. Every operation acts for the process, so
//! the cluster checks at each write that the volume is its owner's.

use super::link::{SharedError, SharedFiles, SharedInfo, SharedOp, SharedStat};
use super::quota::{QuotaFile, Usage};
use super::{blocking, CHUNK_BYTES};
use serde::{Deserialize, Serialize};
use shoal_abi::pid::Pid;
use shoal_abi::process::EffectKey;
use shoal_registry::{Registry, Sha256};
use std::any::Any;
use std::io::{IoSlice, IoSliceMut, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use wasi_common::dir::{OpenResult, ReaddirCursor, ReaddirEntity, WasiDir};
use wasi_common::file::{Advice, FdFlags, FileType, Filestat, OFlags, WasiFile};
use wasi_common::snapshots::preview_1::types::Errno;
use wasi_common::{Error, ErrorExt, SystemTimeSpec};

/// The WASI errno of a failed shared-volume operation.
fn errno(e: SharedError) -> Error {
    match e {
        SharedError::NotFound => Errno::Noent,
        SharedError::Exists => Errno::Exist,
        SharedError::NotDir => Errno::Notdir,
        SharedError::IsDir => Errno::Isdir,
        SharedError::NotEmpty => Errno::Notempty,
        SharedError::Quota => Errno::Dquot,
        SharedError::Invalid => Errno::Inval,
        SharedError::Forbidden => Errno::Acces,
        SharedError::Busy => Errno::Busy,
        SharedError::Unavailable => Errno::Io,
        SharedError::NoSpace => Errno::Nospc,
    }
    .into()
}

/// The parent of a volume path (`""` for the root's children).
fn parent(path: &str) -> &str {
    path.rsplit_once('/').map(|(p, _)| p).unwrap_or("")
}

/// A stable inode number for a path of a volume.
fn inode(device: u64, path: &str) -> u64 {
    let h = Sha256::of(format!("{device}/{path}").as_bytes());
    u64::from_le_bytes(h.0[..8].try_into().unwrap_or([0; 8]))
}

fn time_of(ms: u64) -> Option<SystemTime> {
    UNIX_EPOCH.checked_add(Duration::from_millis(ms))
}

/// What the shared mounts of one process share.
pub struct SharedSession {
    /// What the newest open made, taken by the tracked `path_open` to know
    /// which fds are shared ones (wasi-common's fd table is private).
    opened: Mutex<Option<SharedHandle>>,
    /// The effect the process's next shared-volume write is, set by a
    /// gated WASI call under output commit.
    effect: Mutex<Option<EffectKey>>,
    /// Publish written copies when they are dropped. Off under output
    /// commit until the process ends on its own.
    publish_on_drop: AtomicBool,
}

impl SharedSession {
    /// A session that publishes dropped copies (`publish_on_drop`).
    pub fn new(publish_on_drop: bool) -> Arc<SharedSession> {
        Arc::new(SharedSession {
            opened: Mutex::new(None),
            effect: Mutex::new(None),
            publish_on_drop: AtomicBool::new(publish_on_drop),
        })
    }

    /// Forget what the last open made (before an open).
    pub fn clear_opened(&self) {
        *self.opened.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// What the last open made, if it was in a shared volume.
    pub fn take_opened(&self) -> Option<SharedHandle> {
        self.opened.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    fn set_opened(&self, h: SharedHandle) {
        *self.opened.lock().unwrap_or_else(|p| p.into_inner()) = Some(h);
    }

    /// The next write is effect `key` (`None`: not an effect).
    pub fn set_effect(&self, key: Option<EffectKey>) {
        *self.effect.lock().unwrap_or_else(|p| p.into_inner()) = key;
    }

    fn take_effect(&self) -> Option<EffectKey> {
        self.effect.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Publish (or not) written copies when they are dropped.
    pub fn set_publish_on_drop(&self, on: bool) {
        self.publish_on_drop.store(on, Ordering::Release);
    }
}

/// A shared-volume fd of a process.
#[derive(Clone)]
pub enum SharedHandle {
    /// A directory of a shared volume.
    Dir,
    /// An open file: its private copy.
    File(Arc<OpenCopy>),
}

/// A written, unpublished copy of an open shared file, as an image
/// carries it under output commit: its chunks are in the registry (not
/// published: nobody else refers to them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedCopyImage {
    /// Its length.
    pub size: u64,
    /// Its chunks, in order.
    pub chunks: Vec<Sha256>,
    /// Opened with `O_CREAT | O_EXCL` and not yet published.
    pub exclusive: bool,
}

/// Most chunks the [`SharedCopyImage`]s of one image may list in all:
/// as many as one file of a shared volume may have (4 GiB).
pub const COPY_CHUNKS_MAX: usize = 16_384;

/// A shared volume mounted for one process on this node.
pub struct SharedMount {
    link: Arc<dyn SharedFiles>,
    pid: Pid,
    volume: String,
    guest: String,
    registry: Registry,
    /// This process's scratch directory for open copies (removed with it).
    scratch: PathBuf,
    next_copy: AtomicU64,
    info: tokio::sync::OnceCell<SharedInfo>,
    /// Open copies, to publish at a capture.
    open: Mutex<Vec<Weak<OpenCopy>>>,
    device: u64,
    session: Arc<SharedSession>,
}

impl SharedMount {
    /// Mount `owner's` volume `volume` at `guest` for `pid`, with open
    /// copies under `scratch`.
    pub fn new(
        link: Arc<dyn SharedFiles>,
        pid: Pid,
        volume: &str,
        guest: &str,
        registry: Registry,
        scratch: PathBuf,
        session: Arc<SharedSession>,
    ) -> Result<Arc<SharedMount>, super::VolumeError> {
        std::fs::create_dir_all(&scratch).map_err(|e| super::VolumeError::io(&scratch, e))?;
        let device = inode(0, volume);
        Ok(Arc::new(SharedMount {
            link,
            pid,
            volume: volume.to_string(),
            guest: guest.to_string(),
            registry,
            scratch,
            next_copy: AtomicU64::new(0),
            info: tokio::sync::OnceCell::new(),
            open: Mutex::new(Vec::new()),
            device,
            session,
        }))
    }

    /// The volume's name.
    pub fn volume(&self) -> &str {
        &self.volume
    }

    /// The guest path it is mounted at.
    pub fn guest(&self) -> &str {
        &self.guest
    }

    /// The WASI directory of its root.
    pub fn open_wasi(self: &Arc<Self>) -> Box<dyn WasiDir> {
        Box::new(SharedDir {
            mount: self.clone(),
            prefix: String::new(),
        })
    }

    async fn info(&self) -> Result<SharedInfo, Error> {
        self.info
            .get_or_try_init(|| self.link.vol_info(self.pid, &self.volume))
            .await
            .copied()
            .map_err(errno)
    }

    async fn stat(&self, path: &str) -> Result<Option<SharedStat>, Error> {
        self.link
            .vol_stat(self.pid, &self.volume, path)
            .await
            .map_err(errno)
    }

    /// Write `op` to the volume, as the effect a gated call set, if any.
    async fn write(&self, op: SharedOp) -> Result<u64, Error> {
        let effect = self.session.take_effect();
        self.link
            .vol_write(self.pid, &self.volume, op, effect)
            .await
            .map_err(errno)
    }

    fn filestat(&self, path: &str, s: &SharedStat) -> Filestat {
        Filestat {
            device_id: self.device,
            inode: inode(self.device, path),
            filetype: if s.is_dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            },
            nlink: 1,
            size: s.size,
            atim: time_of(s.mtime_ms),
            mtim: time_of(s.mtime_ms),
            ctim: time_of(s.mtime_ms),
        }
    }

    /// Publish every written open copy (a capture point: the image and the
    /// volume must agree). Stops at the first failure.
    pub async fn publish_all(&self) -> Result<(), Error> {
        let open: Vec<Arc<OpenCopy>> = {
            let mut list = self.open.lock().unwrap_or_else(|p| p.into_inner());
            list.retain(|w| w.strong_count() > 0);
            list.iter().filter_map(Weak::upgrade).collect()
        };
        for copy in open {
            copy.publish().await?;
        }
        Ok(())
    }

    /// A private copy of `stat`'s content (or an empty one) in the
    /// scratch directory, open for reading and writing.
    async fn copy_of(&self, stat: Option<&SharedStat>) -> Result<(PathBuf, std::fs::File), Error> {
        if let Some(s) = stat {
            let missing: Vec<Sha256> = s
                .chunks
                .iter()
                .filter(|c| !self.registry.contains(c))
                .copied()
                .collect();
            if !missing.is_empty() {
                self.link
                    .vol_fetch(&s.holders, &missing)
                    .await
                    .map_err(errno)?;
            }
        }
        let n = self.next_copy.fetch_add(1, Ordering::Relaxed);
        let path = self.scratch.join(n.to_string());
        let chunks: Vec<Sha256> = stat.map(|s| s.chunks.clone()).unwrap_or_default();
        let size = stat.map(|s| s.size).unwrap_or(0);
        let registry = self.registry.clone();
        let file = blocking(|| -> Result<std::fs::File, Error> {
            let mut f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(io_error)?;
            write_chunks(&mut f, &chunks, size, &registry)?;
            // The guest starts reading (or writing) at the beginning.
            f.seek(SeekFrom::Start(0)).map_err(io_error)?;
            Ok(f)
        })?;
        Ok((path, file))
    }
}

fn io_error(e: std::io::Error) -> Error {
    if e.raw_os_error() == Some(28) {
        return Errno::Nospc.into();
    }
    tracing::warn!("shared volume scratch file: {e}");
    Errno::Io.into()
}

/// Write `chunks` from `registry` (each checked against its hash by
/// `get`) to `f`, which must then hold `size` bytes.
fn write_chunks(
    f: &mut std::fs::File,
    chunks: &[Sha256],
    size: u64,
    registry: &Registry,
) -> Result<(), Error> {
    let mut written = 0u64;
    for c in chunks {
        let bytes = registry.get(c).map_err(|e| {
            tracing::warn!("shared volume chunk {c}: {e}");
            Error::from(Errno::Io)
        })?;
        f.write_all(&bytes).map_err(io_error)?;
        written += bytes.len() as u64;
    }
    if written != size {
        tracing::warn!("shared volume file of {size} bytes assembled to {written}");
        return Err(Errno::Io.into());
    }
    Ok(())
}

/// Split the file at `path` into chunks, store them in `registry` (synced:
/// they are published), and return its size and chunk hashes.
fn store_chunks(path: &std::path::Path, registry: &Registry) -> Result<(u64, Vec<Sha256>), Error> {
    let mut f = std::fs::File::open(path).map_err(io_error)?;
    let mut chunks = Vec::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; CHUNK_BYTES as usize];
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            let n = f.read(&mut buf[filled..]).map_err(io_error)?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            break;
        }
        let hash = registry.put(&buf[..filled]).map_err(|e| {
            tracing::warn!("cannot store a shared volume chunk: {e}");
            Error::from(Errno::Io)
        })?;
        chunks.push(hash);
        size += filled as u64;
        if filled < buf.len() {
            break;
        }
    }
    Ok((size, chunks))
}

/// `path`, relative to the directory at `prefix` (a path in the volume,
/// `""` for its root), as a path in the volume: lexically resolved (a
/// volume has no symlinks), never above that directory, never absolute.
pub(super) fn resolve_in(prefix: &str, path: &str) -> Result<String, Error> {
    if path.starts_with('/') {
        return Err(Errno::Notcapable.into());
    }
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(Errno::Notcapable.into());
                }
            }
            c => parts.push(c),
        }
    }
    let rel = parts.join("/");
    Ok(match (prefix.is_empty(), rel.is_empty()) {
        (true, _) => rel,
        (false, true) => prefix.to_string(),
        (false, false) => format!("{prefix}/{rel}"),
    })
}

/// A directory of a shared volume (its root or one below).
pub struct SharedDir {
    mount: Arc<SharedMount>,
    /// Its path in the volume (`""`: the root).
    prefix: String,
}

impl SharedDir {
    fn resolve(&self, path: &str) -> Result<String, Error> {
        resolve_in(&self.prefix, path)
    }

    /// `dest` as a directory of the same mount, or `EXDEV`.
    fn same_mount<'a>(&self, dest: &'a dyn WasiDir) -> Result<&'a SharedDir, Error> {
        let dest = dest
            .as_any()
            .downcast_ref::<SharedDir>()
            .ok_or(Error::from(Errno::Xdev))?;
        if !Arc::ptr_eq(&self.mount, &dest.mount) {
            return Err(Errno::Xdev.into());
        }
        Ok(dest)
    }

    fn not_root(p: &str) -> Result<(), Error> {
        if p.is_empty() {
            return Err(Errno::Inval.into());
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl WasiDir for SharedDir {
    fn as_any(&self) -> &dyn Any {
        self
    }

    async fn open_file(
        &self,
        _symlink_follow: bool,
        path: &str,
        oflags: OFlags,
        read: bool,
        write: bool,
        fdflags: FdFlags,
    ) -> Result<OpenResult, Error> {
        let p = self.resolve(path)?;
        let m = &self.mount;
        let stat = m.stat(&p).await?;
        let create = oflags.contains(OFlags::CREATE);
        let exclusive = create && oflags.contains(OFlags::EXCLUSIVE);
        let truncate = oflags.contains(OFlags::TRUNCATE);
        match &stat {
            Some(s) if s.is_dir => {
                if write || truncate {
                    return Err(Errno::Isdir.into());
                }
                if exclusive {
                    return Err(Errno::Exist.into());
                }
                m.session.set_opened(SharedHandle::Dir);
                return Ok(OpenResult::Dir(Box::new(SharedDir {
                    mount: m.clone(),
                    prefix: p,
                })));
            }
            Some(_) if oflags.contains(OFlags::DIRECTORY) => return Err(Errno::Notdir.into()),
            Some(_) if exclusive => return Err(Errno::Exist.into()),
            Some(_) => {}
            None if !create => return Err(Errno::Noent.into()),
            None => match m.stat(parent(&p)).await? {
                Some(d) if d.is_dir => {}
                Some(_) => return Err(Errno::Notdir.into()),
                None => return Err(Errno::Noent.into()),
            },
        }
        let _ = read;
        let info = m.info().await?;
        let content = stat.as_ref().filter(|_| !truncate);
        let (scratch, file) = m.copy_of(content).await?;
        let size = content.map(|s| s.size).unwrap_or(0);
        let mut inner = wasi_common::tokio::File::from_cap_std(cap_std::fs::File::from_std(file));
        let append = fdflags & FdFlags::APPEND;
        if !append.is_empty() {
            inner.set_fdflags(append).await?;
        }
        // While written, the copy is bounded by the volume's byte quota
        // (the cluster checks the whole volume's at publish).
        let usage = Arc::new(Usage::new(info.bytes_max, u64::MAX));
        usage.set(size, 0);

        let copy = Arc::new(OpenCopy {
            mount: m.clone(),
            path: p,
            scratch,
            // A new or truncated file is published even if never written.
            dirty: AtomicBool::new(stat.is_none() || truncate),
            exclusive: AtomicBool::new(stat.is_none() && exclusive),
            publishing: tokio::sync::Mutex::new(()),
            usage: usage.clone(),
        });
        m.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::downgrade(&copy));
        m.session.set_opened(SharedHandle::File(copy.clone()));
        Ok(OpenResult::File(Box::new(SharedFile {
            inner: QuotaFile::wrap(Box::new(inner), usage, append).await?,
            copy,
        })))
    }

    async fn create_dir(&self, path: &str) -> Result<(), Error> {
        let p = self.resolve(path)?;
        Self::not_root(&p)?;
        self.mount.write(SharedOp::Mkdir(p)).await.map(|_| ())
    }

    async fn readdir(
        &self,
        cursor: ReaddirCursor,
    ) -> Result<Box<dyn Iterator<Item = Result<ReaddirEntity, Error>> + Send>, Error> {
        let m = &self.mount;
        let list = m
            .link
            .vol_list(m.pid, &m.volume, &self.prefix)
            .await
            .map_err(errno)?;
        let mut out = Vec::with_capacity(list.len() + 2);
        let me = inode(m.device, &self.prefix);
        let up = inode(m.device, parent(&self.prefix));
        for (name, ino, filetype) in [
            (".".to_string(), me, FileType::Directory),
            ("..".to_string(), up, FileType::Directory),
        ]
        .into_iter()
        .chain(list.into_iter().map(|(name, s)| {
            let path = if self.prefix.is_empty() {
                name.clone()
            } else {
                format!("{}/{name}", self.prefix)
            };
            let filetype = if s.is_dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            };
            (name, inode(m.device, &path), filetype)
        })) {
            let next = ReaddirCursor::from(out.len() as u64 + 1);
            out.push(ReaddirEntity {
                next,
                inode: ino,
                name,
                filetype,
            });
        }
        let skip = u64::from(cursor) as usize;
        Ok(Box::new(out.into_iter().skip(skip).map(Ok)))
    }

    async fn symlink(&self, _old_path: &str, _new_path: &str) -> Result<(), Error> {
        Err(Error::not_supported())
    }

    async fn remove_dir(&self, path: &str) -> Result<(), Error> {
        let p = self.resolve(path)?;
        Self::not_root(&p)?;
        self.mount.write(SharedOp::Rmdir(p)).await.map(|_| ())
    }

    async fn unlink_file(&self, path: &str) -> Result<(), Error> {
        let p = self.resolve(path)?;
        Self::not_root(&p)?;
        self.mount.write(SharedOp::Unlink(p)).await.map(|_| ())
    }

    async fn read_link(&self, _path: &str) -> Result<std::path::PathBuf, Error> {
        Err(Errno::Inval.into())
    }

    async fn get_filestat(&self) -> Result<Filestat, Error> {
        let s = self.mount.stat(&self.prefix).await?.ok_or(Errno::Noent)?;
        Ok(self.mount.filestat(&self.prefix, &s))
    }

    async fn get_path_filestat(
        &self,
        path: &str,
        _follow_symlinks: bool,
    ) -> Result<Filestat, Error> {
        let p = self.resolve(path)?;
        let s = self.mount.stat(&p).await?.ok_or(Errno::Noent)?;
        Ok(self.mount.filestat(&p, &s))
    }

    async fn rename(
        &self,
        path: &str,
        dest_dir: &dyn WasiDir,
        dest_path: &str,
    ) -> Result<(), Error> {
        let dest = self.same_mount(dest_dir)?;
        let from = self.resolve(path)?;
        let to = dest.resolve(dest_path)?;
        Self::not_root(&from)?;
        Self::not_root(&to)?;
        self.mount
            .write(SharedOp::Rename { from, to })
            .await
            .map(|_| ())
    }

    async fn hard_link(
        &self,
        _path: &str,
        _target_dir: &dyn WasiDir,
        _target_path: &str,
    ) -> Result<(), Error> {
        Err(Error::not_supported())
    }

    async fn set_times(
        &self,
        _path: &str,
        _atime: Option<SystemTimeSpec>,
        _mtime: Option<SystemTimeSpec>,
        _follow_symlinks: bool,
    ) -> Result<(), Error> {
        Err(Error::not_supported())
    }
}

/// A file's private copy while it is open, and how to publish it.
pub struct OpenCopy {
    mount: Arc<SharedMount>,
    /// Its path in the volume (where it is published).
    path: String,
    scratch: PathBuf,
    /// Written since the last publish.
    dirty: AtomicBool,
    /// Opened with `O_CREAT | O_EXCL` and not yet published.
    exclusive: AtomicBool,
    /// One publish at a time.
    publishing: tokio::sync::Mutex<()>,
    /// What the copy counts against the volume's quota while written.
    usage: Arc<Usage>,
}

impl OpenCopy {
    /// Has it something to publish (written, created or truncated since
    /// its last publish)?
    pub fn needs_publish(&self) -> bool {
        self.dirty.load(Ordering::Acquire)
    }

    /// The copy as an image carries it, if it has something to publish:
    /// its chunks are stored in the registry (and not published).
    pub fn image(&self) -> Result<Option<SharedCopyImage>, Error> {
        if !self.needs_publish() {
            return Ok(None);
        }
        let registry = self.mount.registry.clone();
        let (size, chunks) = blocking(|| store_chunks(&self.scratch, &registry))?;
        Ok(Some(SharedCopyImage {
            size,
            chunks,
            exclusive: self.exclusive.load(Ordering::Acquire),
        }))
    }

    /// Put back what `image` holds (a restore): the copy's content becomes
    /// the image's, to be published as written. Its chunks must be in the
    /// registry (a restore fetched them with the image); each is checked
    /// against its hash.
    pub fn restore(&self, image: &SharedCopyImage) -> Result<(), Error> {
        if image.chunks.len() > COPY_CHUNKS_MAX {
            return Err(Errno::Inval.into());
        }
        let registry = self.mount.registry.clone();
        blocking(|| -> Result<(), Error> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(&self.scratch)
                .map_err(io_error)?;
            write_chunks(&mut f, &image.chunks, image.size, &registry)
        })?;
        self.usage.set(image.size, 0);
        self.exclusive.store(image.exclusive, Ordering::Release);
        self.dirty.store(true, Ordering::Release);
        Ok(())
    }

    /// Publish the copy if it was written since the last publish.
    pub async fn publish(&self) -> Result<(), Error> {
        let _one = self.publishing.lock().await;
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let registry = self.mount.registry.clone();
        let stored = blocking(|| store_chunks(&self.scratch, &registry));
        let (size, chunks) = match stored {
            Ok(x) => x,
            Err(e) => {
                self.dirty.store(true, Ordering::Release);
                return Err(e);
            }
        };
        let op = SharedOp::Put {
            path: self.path.clone(),
            size,
            chunks,
            exclusive: self.exclusive.load(Ordering::Acquire),
        };
        if let Err(e) = self.mount.write(op).await {
            self.dirty.store(true, Ordering::Release);
            return Err(e);
        }
        // Published: a later publish replaces it.
        self.exclusive.store(false, Ordering::Release);
        Ok(())
    }
}

impl Drop for OpenCopy {
    fn drop(&mut self) {
        let publish = self.mount.session.publish_on_drop.load(Ordering::Acquire);
        if publish && self.dirty.load(Ordering::Acquire) {
            use tokio::runtime::{Handle, RuntimeFlavor};
            match Handle::try_current() {
                Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
                    // A runtime shutting down (the node stopping) panics
                    // on new timers: then the copy is lost, as on a crash.
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        tokio::task::block_in_place(|| h.block_on(self.publish()))
                    }))
                    .unwrap_or_else(|_| Err(Errno::Io.into()));
                    if let Err(e) = r {
                        tracing::warn!(
                            pid = %self.mount.pid,
                            "closing {}:{}: the file could not be published: {e}",
                            self.mount.volume,
                            self.path
                        );
                    }
                }
                _ => tracing::warn!(
                    "closing {}:{} outside a multi-threaded runtime: not published",
                    self.mount.volume,
                    self.path
                ),
            }
        }
        if let Err(e) = std::fs::remove_file(&self.scratch) {
            tracing::warn!("cannot remove {}: {e}", self.scratch.display());
        }
    }
}

impl Drop for SharedMount {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

/// An open file of a shared volume: its private copy, bounded by the
/// volume's byte quota, published when closed or synced.
pub struct SharedFile {
    inner: QuotaFile,
    copy: Arc<OpenCopy>,
}

impl SharedFile {
    fn written(&self) {
        self.copy.dirty.store(true, Ordering::Release);
    }
}

#[async_trait::async_trait]
impl WasiFile for SharedFile {
    fn as_any(&self) -> &dyn Any {
        self
    }

    async fn get_filetype(&self) -> Result<FileType, Error> {
        Ok(FileType::RegularFile)
    }

    async fn datasync(&self) -> Result<(), Error> {
        self.copy.publish().await
    }

    async fn sync(&self) -> Result<(), Error> {
        self.copy.publish().await
    }

    async fn get_fdflags(&self) -> Result<FdFlags, Error> {
        self.inner.get_fdflags().await
    }

    async fn set_fdflags(&mut self, flags: FdFlags) -> Result<(), Error> {
        self.inner.set_fdflags(flags).await
    }

    async fn get_filestat(&self) -> Result<Filestat, Error> {
        let mut s = self.inner.get_filestat().await?;
        s.device_id = self.copy.mount.device;
        s.inode = inode(self.copy.mount.device, &self.copy.path);
        Ok(s)
    }

    async fn set_filestat_size(&self, size: u64) -> Result<(), Error> {
        self.written();
        self.inner.set_filestat_size(size).await
    }

    async fn advise(&self, offset: u64, len: u64, advice: Advice) -> Result<(), Error> {
        self.inner.advise(offset, len, advice).await
    }

    async fn set_times(
        &self,
        _atime: Option<SystemTimeSpec>,
        _mtime: Option<SystemTimeSpec>,
    ) -> Result<(), Error> {
        Err(Error::not_supported())
    }

    async fn read_vectored<'a>(&self, bufs: &mut [IoSliceMut<'a>]) -> Result<u64, Error> {
        self.inner.read_vectored(bufs).await
    }

    async fn read_vectored_at<'a>(
        &self,
        bufs: &mut [IoSliceMut<'a>],
        offset: u64,
    ) -> Result<u64, Error> {
        self.inner.read_vectored_at(bufs, offset).await
    }

    async fn write_vectored<'a>(&self, bufs: &[IoSlice<'a>]) -> Result<u64, Error> {
        self.written();
        self.inner.write_vectored(bufs).await
    }

    async fn write_vectored_at<'a>(&self, bufs: &[IoSlice<'a>], offset: u64) -> Result<u64, Error> {
        self.written();
        self.inner.write_vectored_at(bufs, offset).await
    }

    async fn seek(&self, pos: SeekFrom) -> Result<u64, Error> {
        self.inner.seek(pos).await
    }

    async fn peek(&self, buf: &mut [u8]) -> Result<u64, Error> {
        self.inner.peek(buf).await
    }

    fn num_ready_bytes(&self) -> Result<u64, Error> {
        self.inner.num_ready_bytes()
    }

    async fn readable(&self) -> Result<(), Error> {
        self.inner.readable().await
    }

    async fn writable(&self) -> Result<(), Error> {
        self.inner.writable().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_inside_their_directory_only() {
        assert_eq!(resolve_in("", "a/./b//c").unwrap(), "a/b/c");
        assert_eq!(resolve_in("", "a/../b").unwrap(), "b");
        assert_eq!(resolve_in("d", "x/..").unwrap(), "d");
        assert_eq!(resolve_in("d", "e").unwrap(), "d/e");
        for (prefix, path) in [("", ".."), ("", "a/../../b"), ("d", "../x"), ("", "/etc")] {
            assert!(resolve_in(prefix, path).is_err(), "{prefix:?} {path:?}");
        }
    }

    #[test]
    fn inodes_are_stable_and_distinct() {
        assert_eq!(inode(1, "a/b"), inode(1, "a/b"));
        assert_ne!(inode(1, "a/b"), inode(1, "a/c"));
        assert_ne!(inode(1, "a"), inode(2, "a"));
        assert_eq!(parent("a/b/c"), "a/b");
        assert_eq!(parent("a"), "");
    }
}
