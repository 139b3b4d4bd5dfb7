//! A volume's quotas, enforced between WASI and the host directory.
//!
//! [`QuotaDir`] and [`QuotaFile`] wrap wasi-common's own cap-std directory
//! and file (so path resolution, and the refusal of `..`, absolute paths
//! and symlinks leaving the volume, are cap-std's) and charge a shared
//! [`Usage`]: a new file or directory counts one file, growing a file
//! counts its new bytes; unlinking, truncating and replacing by rename give
//! them back. A write that would pass a quota fails with `EDQUOT` and
//! writes nothing.
//!
//! Not supported inside a volume (`ENOTSUP`): symlinks and hard links (a
//! volume is a tree of directories and regular files, which is what a
//! capture records), and renames to another volume (`EXDEV`).

use std::any::Any;
use std::io::{IoSlice, IoSliceMut, SeekFrom};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use wasi_common::dir::{OpenResult, ReaddirCursor, ReaddirEntity, WasiDir};
use wasi_common::file::{Advice, FdFlags, FileType, Filestat, OFlags, WasiFile};
use wasi_common::snapshots::preview_1::types::Errno;
use wasi_common::{Error, ErrorExt, SystemTimeSpec};

/// What a volume holds, against its quotas. Shared by the directory and
/// every file opened in it.
#[derive(Debug)]
pub struct Usage {
    bytes: AtomicU64,
    files: AtomicU64,
    /// Inodes of the files written or truncated through the volume since
    /// the last capture took them ([`Usage::take_written`]): a capture
    /// trusts the hashes of a file not among them even when its times are
    /// too recent to tell a later write apart.
    written: std::sync::Mutex<std::collections::HashSet<u64>>,
    /// Most bytes.
    pub bytes_max: u64,
    /// Most files and directories.
    pub files_max: u64,
}

impl Usage {
    /// An empty volume with these quotas.
    pub fn new(bytes_max: u64, files_max: u64) -> Usage {
        Usage {
            bytes: AtomicU64::new(0),
            files: AtomicU64::new(0),
            written: Default::default(),
            bytes_max,
            files_max,
        }
    }

    /// Bytes in use.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Acquire)
    }

    /// Files and directories in use.
    pub fn files(&self) -> u64 {
        self.files.load(Ordering::Acquire)
    }

    /// Note that the file with inode `ino` was written or truncated.
    pub fn mark_written(&self, ino: u64) {
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(ino);
    }

    /// The inodes written since the last call, and forget them.
    pub fn take_written(&self) -> std::collections::HashSet<u64> {
        std::mem::take(&mut *self.written.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Start from what a rebuilt volume holds.
    pub fn set(&self, bytes: u64, files: u64) {
        self.bytes.store(bytes, Ordering::Release);
        self.files.store(files, Ordering::Release);
    }

    fn reserve(counter: &AtomicU64, n: u64, max: u64) -> Result<(), Error> {
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&t| t <= max)
            })
            .map(|_| ())
            .map_err(|_| Error::from(Errno::Dquot))
    }

    fn release(counter: &AtomicU64, n: u64) {
        let _ = counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
            Some(used.saturating_sub(n))
        });
    }

    /// Take `n` bytes, or `EDQUOT`.
    pub fn reserve_bytes(&self, n: u64) -> Result<(), Error> {
        Self::reserve(&self.bytes, n, self.bytes_max)
    }

    /// Give back `n` bytes.
    pub fn release_bytes(&self, n: u64) {
        Self::release(&self.bytes, n)
    }

    /// Take one file, or `EDQUOT`.
    pub fn reserve_file(&self) -> Result<(), Error> {
        Self::reserve(&self.files, 1, self.files_max)
    }

    /// Give back one file.
    pub fn release_file(&self) {
        Self::release(&self.files, 1)
    }

    /// Correct the byte count after an operation changed a file from
    /// `before` to `after` bytes, having reserved `reserved` for it.
    fn settle(&self, reserved: u64, before: u64, after: u64) {
        let grew = after.saturating_sub(before);
        let shrank = before.saturating_sub(after);
        if grew > reserved {
            // Another fd grew the same file meanwhile: count what is there.
            self.bytes.fetch_add(grew - reserved, Ordering::AcqRel);
        } else {
            self.release_bytes(reserved - grew);
        }
        self.release_bytes(shrank);
    }
}

/// A directory inside a volume.
pub struct QuotaDir {
    /// wasi-common's directory (its `rename` finds the destination's own
    /// directory through `as_any`).
    inner: Box<dyn WasiDir>,
    usage: Arc<Usage>,
}

impl QuotaDir {
    /// Wrap `inner`, charging `usage`.
    pub fn new(inner: wasi_common::tokio::Dir, usage: Arc<Usage>) -> QuotaDir {
        QuotaDir {
            inner: Box::new(inner),
            usage,
        }
    }

    /// `dest` as a directory of the same volume, or `EXDEV`.
    fn same_volume<'a>(&self, dest: &'a dyn WasiDir) -> Result<&'a QuotaDir, Error> {
        let dest = dest
            .as_any()
            .downcast_ref::<QuotaDir>()
            .ok_or(Error::from(Errno::Xdev))?;
        if !Arc::ptr_eq(&self.usage, &dest.usage) {
            return Err(Errno::Xdev.into());
        }
        Ok(dest)
    }

    /// What is at `path` (not following a final symlink), if anything.
    async fn stat(&self, path: &str) -> Option<Filestat> {
        self.inner.get_path_filestat(path, false).await.ok()
    }
}

#[async_trait::async_trait]
impl WasiDir for QuotaDir {
    fn as_any(&self) -> &dyn Any {
        self
    }

    async fn open_file(
        &self,
        symlink_follow: bool,
        path: &str,
        oflags: OFlags,
        read: bool,
        write: bool,
        fdflags: FdFlags,
    ) -> Result<OpenResult, Error> {
        let existing = self.stat(path).await;
        let creates = oflags.contains(OFlags::CREATE) && existing.is_none();
        if creates {
            self.usage.reserve_file()?;
        }
        let truncated = match &existing {
            Some(s) if oflags.contains(OFlags::TRUNCATE) && s.filetype == FileType::RegularFile => {
                s.size
            }
            _ => 0,
        };
        let opened = self
            .inner
            .open_file(symlink_follow, path, oflags, read, write, fdflags)
            .await;
        match opened {
            Ok(OpenResult::File(f)) => {
                self.usage.release_bytes(truncated);
                let file = QuotaFile::with_meta(f, self.usage.clone(), fdflags).await?;
                if oflags.contains(OFlags::TRUNCATE) {
                    self.usage.mark_written(file.ino);
                }
                Ok(OpenResult::File(Box::new(file)))
            }
            Ok(OpenResult::Dir(d)) => Ok(OpenResult::Dir(Box::new(QuotaDir {
                inner: d,
                usage: self.usage.clone(),
            }))),
            Err(e) => {
                if creates {
                    self.usage.release_file();
                }
                Err(e)
            }
        }
    }

    async fn create_dir(&self, path: &str) -> Result<(), Error> {
        self.usage.reserve_file()?;
        let r = self.inner.create_dir(path).await;
        if r.is_err() {
            self.usage.release_file();
        }
        r
    }

    async fn readdir(
        &self,
        cursor: ReaddirCursor,
    ) -> Result<Box<dyn Iterator<Item = Result<ReaddirEntity, Error>> + Send>, Error> {
        self.inner.readdir(cursor).await
    }

    async fn symlink(&self, _old_path: &str, _new_path: &str) -> Result<(), Error> {
        Err(Error::not_supported())
    }

    async fn remove_dir(&self, path: &str) -> Result<(), Error> {
        self.inner.remove_dir(path).await?;
        self.usage.release_file();
        Ok(())
    }

    async fn unlink_file(&self, path: &str) -> Result<(), Error> {
        let size = match self.stat(path).await {
            Some(s) if s.filetype == FileType::RegularFile => s.size,
            _ => 0,
        };
        self.inner.unlink_file(path).await?;
        self.usage.release_file();
        self.usage.release_bytes(size);
        Ok(())
    }

    async fn read_link(&self, path: &str) -> Result<std::path::PathBuf, Error> {
        self.inner.read_link(path).await
    }

    async fn get_filestat(&self) -> Result<Filestat, Error> {
        self.inner.get_filestat().await
    }

    async fn get_path_filestat(
        &self,
        path: &str,
        follow_symlinks: bool,
    ) -> Result<Filestat, Error> {
        self.inner.get_path_filestat(path, follow_symlinks).await
    }

    async fn rename(
        &self,
        path: &str,
        dest_dir: &dyn WasiDir,
        dest_path: &str,
    ) -> Result<(), Error> {
        let dest = self.same_volume(dest_dir)?;
        let replaced = dest.stat(dest_path).await;
        self.inner.rename(path, &*dest.inner, dest_path).await?;
        if let Some(s) = replaced {
            // The entry it replaced is gone (an empty directory, or a file).
            self.usage.release_file();
            if s.filetype == FileType::RegularFile {
                self.usage.release_bytes(s.size);
            }
        }
        Ok(())
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
        path: &str,
        atime: Option<SystemTimeSpec>,
        mtime: Option<SystemTimeSpec>,
        follow_symlinks: bool,
    ) -> Result<(), Error> {
        self.inner
            .set_times(path, atime, mtime, follow_symlinks)
            .await
    }
}

/// A regular file inside a volume.
///
/// wasi-common's tokio file runs every operation in `block_in_place`,
/// which costs tens of microseconds; the size and position the quota needs
/// are read instead through `meta`, a duplicate of the same open file
/// (same offset), with plain `fstat`/`lseek` calls that never block.
pub struct QuotaFile {
    inner: Box<dyn WasiFile>,
    usage: Arc<Usage>,
    /// Its inode, for [`Usage::mark_written`].
    ino: u64,
    /// The same open file, for `fstat` and `lseek` without a detour.
    meta: Option<std::fs::File>,
    /// Opened (or set) with `O_APPEND`.
    append: std::sync::atomic::AtomicBool,
}

impl QuotaFile {
    /// Wrap `inner`, charging `usage` (a shared volume's open copy of a
    /// file, bounded by the volume's byte quota while it is written).
    pub async fn wrap(
        inner: Box<dyn WasiFile>,
        usage: Arc<Usage>,
        fdflags: FdFlags,
    ) -> Result<QuotaFile, Error> {
        QuotaFile::with_meta(inner, usage, fdflags).await
    }

    /// Wrap `inner`, with a duplicate of its fd for metadata.
    async fn with_meta(
        inner: Box<dyn WasiFile>,
        usage: Arc<Usage>,
        fdflags: FdFlags,
    ) -> Result<QuotaFile, Error> {
        use std::os::unix::fs::MetadataExt;
        let meta = inner
            .pollable()
            .and_then(|fd| fd.try_clone_to_owned().ok())
            .map(std::fs::File::from);
        let ino = match &meta {
            Some(m) => m.metadata().map_err(Error::from)?.ino(),
            None => inner.get_filestat().await?.inode,
        };
        Ok(QuotaFile {
            inner,
            usage,
            ino,
            meta,
            append: std::sync::atomic::AtomicBool::new(fdflags.contains(FdFlags::APPEND)),
        })
    }

    async fn size(&self) -> Result<u64, Error> {
        match &self.meta {
            Some(m) => Ok(m.metadata().map_err(Error::from)?.len()),
            None => Ok(self.inner.get_filestat().await?.size),
        }
    }

    async fn position(&self) -> Result<u64, Error> {
        use std::io::Seek;
        match &self.meta {
            Some(m) => {
                let mut m: &std::fs::File = m;
                m.stream_position().map_err(Error::from)
            }
            None => self.inner.seek(SeekFrom::Current(0)).await,
        }
    }

    /// Reserve what writing `len` bytes at `at` (`None`: the current
    /// position, or the end when appending) may add; returns the size
    /// before and the reservation.
    async fn reserve_write(&self, len: u64, at: Option<u64>) -> Result<(u64, u64), Error> {
        let before = self.size().await?;
        let start = match at {
            Some(at) => at,
            None if self.append.load(Ordering::Acquire) => before,
            None => self.position().await?,
        };
        let grows = start.saturating_add(len).saturating_sub(before);
        self.usage.reserve_bytes(grows)?;
        Ok((before, grows))
    }

    async fn settle(&self, before: u64, reserved: u64) {
        self.usage.mark_written(self.ino);
        match self.size().await {
            Ok(after) => self.usage.settle(reserved, before, after),
            Err(_) => self.usage.release_bytes(reserved),
        }
    }
}

fn total(bufs: &[IoSlice<'_>]) -> u64 {
    bufs.iter().map(|b| b.len() as u64).sum()
}

#[async_trait::async_trait]
impl WasiFile for QuotaFile {
    fn as_any(&self) -> &dyn Any {
        self
    }

    async fn get_filetype(&self) -> Result<FileType, Error> {
        self.inner.get_filetype().await
    }

    #[cfg(unix)]
    fn pollable(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.inner.pollable()
    }

    fn isatty(&self) -> bool {
        self.inner.isatty()
    }

    async fn datasync(&self) -> Result<(), Error> {
        self.inner.datasync().await
    }

    async fn sync(&self) -> Result<(), Error> {
        self.inner.sync().await
    }

    async fn get_fdflags(&self) -> Result<FdFlags, Error> {
        self.inner.get_fdflags().await
    }

    async fn set_fdflags(&mut self, flags: FdFlags) -> Result<(), Error> {
        self.inner.set_fdflags(flags).await?;
        self.append
            .store(flags.contains(FdFlags::APPEND), Ordering::Release);
        Ok(())
    }

    async fn get_filestat(&self) -> Result<Filestat, Error> {
        self.inner.get_filestat().await
    }

    async fn set_filestat_size(&self, size: u64) -> Result<(), Error> {
        let before = self.size().await?;
        let grows = size.saturating_sub(before);
        self.usage.reserve_bytes(grows)?;
        let r = self.inner.set_filestat_size(size).await;
        self.settle(before, grows).await;
        r
    }

    async fn advise(&self, offset: u64, len: u64, advice: Advice) -> Result<(), Error> {
        self.inner.advise(offset, len, advice).await
    }

    async fn set_times(
        &self,
        atime: Option<SystemTimeSpec>,
        mtime: Option<SystemTimeSpec>,
    ) -> Result<(), Error> {
        self.inner.set_times(atime, mtime).await
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
        let (before, reserved) = self.reserve_write(total(bufs), None).await?;
        let r = self.inner.write_vectored(bufs).await;
        self.settle(before, reserved).await;
        r
    }

    async fn write_vectored_at<'a>(&self, bufs: &[IoSlice<'a>], offset: u64) -> Result<u64, Error> {
        let (before, reserved) = self.reserve_write(total(bufs), Some(offset)).await?;
        let r = self.inner.write_vectored_at(bufs, offset).await;
        self.settle(before, reserved).await;
        r
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
