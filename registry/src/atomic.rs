//! Crash-safe file primitives shared by blobs, names and artifacts.
//!
//! Every file the registry publishes is written to a uniquely named temp
//! file in `<root>/tmp/`, fsynced, renamed into place (atomic on POSIX
//! within one filesystem) and then the destination directory is fsynced.
//! A crash therefore leaves either the old file, the complete new file, or
//! an orphan in `tmp/` that [`clean_tmp`] removes later; never a torn file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::RegistryError;

/// Process-wide counter making temp names unique among threads and among
/// several `Registry` handles on the same root in one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A temp file untouched for this long is considered abandoned even if we
/// cannot tell whether its writer is alive (e.g. another pid namespace).
const STALE_TMP_AGE: Duration = Duration::from_secs(60 * 60);

/// How often a write is retried when its temp file was deleted under it by
/// another process's [`clean_tmp`] (which can misjudge a live writer).
const WRITE_ATTEMPTS: usize = 3;

/// A string unique across threads, processes and time: `<pid>-<counter>-<nanos>`.
fn unique_suffix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{}-{n}-{nanos}", std::process::id())
}

/// A fresh temp path `<tmp_dir>/<pid>-<counter>-<nanos>.tmp`.
pub(crate) fn temp_path(tmp_dir: &Path) -> PathBuf {
    tmp_dir.join(format!("{}.tmp", unique_suffix()))
}

/// Make a directory's entries (creations, renames, removals) durable.
/// A no-op where directories cannot be opened (non-Unix).
pub(crate) fn fsync_dir(dir: &Path) -> Result<(), RegistryError> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| RegistryError::io(dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Mode of every file the registry writes: guest memory pages, modules,
/// compiled code and names are the node's alone.
pub(crate) const FILE_MODE: u32 = 0o600;
/// Mode of every directory the registry creates.
pub(crate) const DIR_MODE: u32 = 0o700;

/// Restrict an existing directory to [`DIR_MODE`] (one a registry from
/// before this rule created world-readable).
pub(crate) fn restrict_dir(dir: &Path) -> Result<(), RegistryError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE))
            .map_err(|e| RegistryError::io(dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Create `dir` (and parents) if missing, mode [`DIR_MODE`], making the new
/// entry durable.
pub(crate) fn ensure_dir(dir: &Path) -> Result<(), RegistryError> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, DIR_MODE);
    builder.create(dir).map_err(|e| RegistryError::io(dir, e))?;
    match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => fsync_dir(parent),
        _ => Ok(()),
    }
}

/// Write `bytes` to a new file at `path`, mode [`FILE_MODE`], synced.
pub(crate) fn write_new_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_temp_with(path, &[bytes], true)
}

/// Write the concatenation of `parts` to a new temp file and fsync it.
fn write_temp(tmp: &Path, parts: &[&[u8]]) -> io::Result<()> {
    write_temp_with(tmp, parts, true)
}

fn write_temp_with(tmp: &Path, parts: &[&[u8]], sync: bool) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, FILE_MODE);
    let mut file = options.open(tmp)?;
    for part in parts {
        file.write_all(part)?;
    }
    if sync {
        file.sync_all()?;
    }
    Ok(())
}

/// [`write_atomic`] without any fsync: readers still see old or new
/// content in full (rename), but after a crash the file may be missing or
/// hold garbage. Only for blobs whose every read is verified against their
/// hash, so garbage is caught and the blob treated as missing.
pub(crate) fn write_atomic_unsynced(
    tmp_dir: &Path,
    dest: &Path,
    bytes: &[u8],
) -> Result<(), RegistryError> {
    let tmp = temp_path(tmp_dir);
    if let Err(e) = write_temp_with(&tmp, &[bytes], false) {
        let _ = fs::remove_file(&tmp);
        return Err(RegistryError::io(&tmp, e));
    }
    fs::rename(&tmp, dest).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        RegistryError::io(dest, e)
    })
}

/// Atomically create or replace `dest` with the concatenation of `parts`
/// (see the module docs for the protocol). Readers see either the old or
/// the new content in full.
pub(crate) fn write_atomic(
    tmp_dir: &Path,
    dest: &Path,
    parts: &[&[u8]],
) -> Result<(), RegistryError> {
    let dest_dir = dest.parent().unwrap_or(Path::new("."));
    let mut attempt = 0;
    loop {
        attempt += 1;
        let tmp = temp_path(tmp_dir);
        if let Err(e) = write_temp(&tmp, parts) {
            let _ = fs::remove_file(&tmp);
            if e.kind() == io::ErrorKind::AlreadyExists && attempt < WRITE_ATTEMPTS {
                continue;
            }
            return Err(RegistryError::io(&tmp, e));
        }
        match fs::rename(&tmp, dest) {
            Ok(()) => return fsync_dir(dest_dir),
            Err(e) => {
                // Our temp file may have been removed by a concurrent
                // `clean_tmp`, or the destination directory deleted by an
                // operator: repair and retry a bounded number of times.
                let tmp_gone = !tmp.exists();
                let _ = fs::remove_file(&tmp);
                if attempt < WRITE_ATTEMPTS && (tmp_gone || !dest_dir.is_dir()) {
                    ensure_dir(dest_dir)?;
                    continue;
                }
                return Err(RegistryError::io(dest, e));
            }
        }
    }
}

/// Result of [`read_file`].
#[derive(Debug)]
pub(crate) enum ReadOutcome {
    /// The file does not exist.
    Missing,
    /// The file is larger than the allowed maximum (its size); not read.
    TooLarge(u64),
    /// The whole content.
    Bytes(Vec<u8>),
}

/// Read a whole file. `max` bounds the allocation so a bogus huge file
/// cannot exhaust memory.
pub(crate) fn read_file(path: &Path, max: u64) -> Result<ReadOutcome, RegistryError> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(ReadOutcome::Missing),
        Err(e) => return Err(RegistryError::io(path, e)),
    };
    let len = file
        .metadata()
        .map_err(|e| RegistryError::io(path, e))?
        .len();
    if len > max {
        return Ok(ReadOutcome::TooLarge(len));
    }
    let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    // `take` guards against a file that grows while we read it.
    (&mut file)
        .take(max.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(|e| RegistryError::io(path, e))?;
    if buf.len() as u64 > max {
        return Ok(ReadOutcome::TooLarge(buf.len() as u64));
    }
    Ok(ReadOutcome::Bytes(buf))
}

/// Remove a file; `Ok(false)` if it was already gone. The removal is made
/// durable by fsyncing its directory.
pub(crate) fn remove_file(path: &Path) -> Result<bool, RegistryError> {
    match fs::remove_file(path) {
        Ok(()) => {
            if let Some(dir) = path.parent() {
                fsync_dir(dir)?;
            }
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(RegistryError::io(path, e)),
    }
}

/// What [`quarantine`] did with a file that failed verification.
#[derive(Debug)]
pub(crate) enum Quarantined {
    /// Moved to this path under `<root>/quarantine/`.
    Moved(PathBuf),
    /// Someone else already moved or removed it.
    Vanished,
    /// A concurrent writer had replaced it with valid content between our
    /// read and our move; it was put back and the caller should re-read.
    Restored,
    /// Could neither be moved nor deleted; it stays in place (reads keep
    /// verifying it, so it is still never served).
    Stuck,
}

/// Move the failed file `path` out of service into `qdir`, naming it after
/// `stem` plus a unique suffix so repeated corruptions do not collide.
/// After the move the file (if at most `max` bytes) is re-checked with
/// `is_valid` to close the race with a concurrent writer that healed it
/// (see [`Quarantined::Restored`]).
pub(crate) fn quarantine(
    qdir: &Path,
    path: &Path,
    stem: &str,
    max: u64,
    is_valid: impl Fn(&[u8]) -> bool,
) -> Quarantined {
    let _ = ensure_dir(qdir);
    let target = qdir.join(format!("{stem}.{}", unique_suffix()));
    match fs::rename(path, &target) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Quarantined::Vanished,
        Err(_) => {
            return match fs::remove_file(path) {
                Ok(()) => Quarantined::Vanished,
                Err(e) if e.kind() == io::ErrorKind::NotFound => Quarantined::Vanished,
                Err(_) => Quarantined::Stuck,
            };
        }
    }
    if let Some(dir) = path.parent() {
        let _ = fsync_dir(dir);
    }
    let _ = fsync_dir(qdir);
    let healthy = matches!(read_file(&target, max), Ok(ReadOutcome::Bytes(b)) if is_valid(&b));
    if healthy && fs::rename(&target, path).is_ok() {
        return Quarantined::Restored;
    }
    Quarantined::Moved(target)
}

/// Whether a temp file left in `tmp/` can be deleted: it is not one of
/// ours, its writer process is dead (Linux), or it is very old.
fn is_stale_temp(path: &Path, meta: &fs::Metadata) -> bool {
    let name = match path.file_name().and_then(|n| n.to_str()) {
        Some(n) => n,
        None => return true,
    };
    let pid = name
        .strip_suffix(".tmp")
        .and_then(|s| s.split('-').next())
        .and_then(|p| p.parse::<u32>().ok());
    let Some(pid) = pid else { return true };
    if pid != std::process::id() && writer_is_dead(pid) {
        return true;
    }
    meta.modified()
        .ok()
        .and_then(|m| m.elapsed().ok())
        .is_some_and(|age| age > STALE_TMP_AGE)
}

/// Best-effort liveness check of another process (Linux `/proc` only; a
/// process in another pid namespace looks dead, which `write_atomic`
/// tolerates by retrying).
fn writer_is_dead(pid: u32) -> bool {
    cfg!(target_os = "linux")
        && Path::new("/proc/self").exists()
        && !Path::new("/proc").join(pid.to_string()).exists()
}

/// Delete abandoned temp files (left by crashed writers) from `tmp_dir`.
/// Errors are ignored: cleanup is an optimisation, never required for
/// correctness since nothing reads `tmp/`.
pub(crate) fn clean_tmp(tmp_dir: &Path) {
    let Ok(entries) = fs::read_dir(tmp_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            continue;
        }
        if is_stale_temp(&path, &meta) {
            let _ = fs::remove_file(&path);
        }
    }
}
