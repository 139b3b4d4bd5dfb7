//! A volume's content as data: captured from its directory into a
//! [`VolumeTree`] of content-addressed chunks, checked when it comes from
//! outside, and written back into a directory.

use super::{Entry, EntryKind, Mounted, VolumeError, VolumeMount, VolumeTree, CHUNK_BYTES};
use shoal_registry::{Registry, Sha256};
use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// Longest path inside a volume, in bytes.
pub const ENTRY_PATH_BYTES_MAX: usize = 4096;
/// A file's hashes are reused only if its last change is at least this
/// much older than when they were taken: file times tick coarsely, so a
/// write in the same tick as the hashing could leave them unchanged
/// ("racy clean" in git's words).
const RACY_NS: i128 = 100_000_000;

/// What a file looked like when its chunks were hashed.
#[derive(Debug, Clone)]
struct Cached {
    size: u64,
    ino: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    hashed_at_ns: i128,
    chunks: Vec<Sha256>,
}

/// Chunk hashes of a volume's files from its last capture, by path.
#[derive(Debug, Default)]
pub struct HashCache {
    files: HashMap<String, Cached>,
}

/// What a capture read and stored, for reports and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// Bytes read and hashed (files whose metadata changed).
    pub bytes_hashed: u64,
    /// Chunks the registry did not have.
    pub chunks_new: u64,
}

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

fn times_ns(meta: &std::fs::Metadata) -> (i128, i128) {
    let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
    (
        ns(meta.mtime(), meta.mtime_nsec()),
        ns(meta.ctime(), meta.ctime_nsec()),
    )
}

/// Capture `volume`: walk its directory (directories and regular files;
/// anything else is skipped), hash each changed file by chunk, and store
/// in `registry` the chunks it lacks. The process must be paused (a
/// capture point), so nothing changes meanwhile.
pub fn capture(
    volume: &Mounted,
    registry: &Registry,
) -> Result<(VolumeTree, CaptureStats), VolumeError> {
    let mut cache = volume.cache.lock().unwrap_or_else(|p| p.into_inner());
    // The process is paused: nothing is written until the next capture
    // takes this set again.
    let written = volume.usage.take_written();
    let mut next = HashMap::with_capacity(cache.files.len());
    let mut entries = Vec::new();
    let mut stats = CaptureStats::default();
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let dir = volume.root.join(&rel);
        let mut names: Vec<(String, std::fs::Metadata)> = Vec::new();
        for item in std::fs::read_dir(&dir).map_err(|e| VolumeError::io(&dir, e))? {
            let item = item.map_err(|e| VolumeError::io(&dir, e))?;
            let Ok(name) = item.file_name().into_string() else {
                continue;
            };
            let meta = item
                .metadata()
                .map_err(|e| VolumeError::io(&item.path(), e))?;
            names.push((name, meta));
        }
        names.sort_by(|a, b| a.0.cmp(&b.0));
        // Directories are walked after this one's entries, in name order
        // (pushed reversed onto the stack).
        let mut subdirs = Vec::new();
        for (name, meta) in names {
            let path = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            if meta.is_dir() {
                entries.push(Entry {
                    path: path.clone(),
                    kind: EntryKind::Dir,
                });
                subdirs.push(path);
            } else if meta.is_file() {
                let (mtime_ns, ctime_ns) = times_ns(&meta);
                let hit = cache.files.get(&path).filter(|c| {
                    c.size == meta.len()
                        && c.ino == meta.ino()
                        && c.mtime_ns == mtime_ns
                        && c.ctime_ns == ctime_ns
                        // Changed within a tick of its hashing, its times
                        // alone cannot show a later write; the volume's own
                        // record of writes can.
                        && (c.ctime_ns + RACY_NS < c.hashed_at_ns || !written.contains(&c.ino))
                });
                let cached = match hit {
                    Some(c) => c.clone(),
                    None => {
                        let hashed_at_ns = now_ns();
                        let full = volume.root.join(&path);
                        let (chunks, new) = hash_file(&full, meta.len(), registry)?;
                        stats.bytes_hashed += meta.len();
                        stats.chunks_new += new;
                        Cached {
                            size: meta.len(),
                            ino: meta.ino(),
                            mtime_ns,
                            ctime_ns,
                            hashed_at_ns,
                            chunks,
                        }
                    }
                };
                entries.push(Entry {
                    path: path.clone(),
                    kind: EntryKind::File {
                        size: cached.size,
                        chunks: cached.chunks.clone(),
                    },
                });
                next.insert(path, cached);
            }
        }
        stack.extend(subdirs.into_iter().rev());
    }
    cache.files = next;
    Ok((
        VolumeTree {
            guest: volume.mount.guest.clone(),
            entries,
        },
        stats,
    ))
}

/// Hash `path` (of `size` bytes) chunk by chunk, storing new chunks.
/// Returns the hashes and how many chunks were new.
fn hash_file(
    path: &Path,
    size: u64,
    registry: &Registry,
) -> Result<(Vec<Sha256>, u64), VolumeError> {
    let mut file = std::fs::File::open(path).map_err(|e| VolumeError::io(path, e))?;
    let mut chunks = Vec::with_capacity(size.div_ceil(CHUNK_BYTES) as usize);
    let mut buf = vec![0u8; CHUNK_BYTES as usize];
    let mut new = 0;
    let mut left = size;
    while left > 0 {
        let want = left.min(CHUNK_BYTES) as usize;
        file.read_exact(&mut buf[..want])
            .map_err(|e| VolumeError::io(path, e))?;
        let bytes = &buf[..want];
        let hash = Sha256::of(bytes);
        // Skips a chunk already stored, and counts the others.
        new += registry
            .put_many_unsynced(&[(hash, bytes)])
            .map_err(|e| VolumeError::Chunk(hash, e))? as u64;
        chunks.push(hash);
        left -= want as u64;
    }
    Ok((chunks, new))
}

/// Check a tree from an image against the volume it is to be rebuilt in:
/// its paths clean and relative, each parent listed before its children,
/// no path twice, chunk lists matching sizes, and everything within the
/// volume's quotas. A hostile image gets an error, never a panic or an
/// allocation it sized.
pub fn check(tree: &VolumeTree, mount: &VolumeMount) -> Result<(), VolumeError> {
    let bad = |why: String| VolumeError::BadTree {
        guest: mount.guest.clone(),
        why,
    };
    let files = tree.entries.len() as u64;
    let bytes = tree.bytes();
    if files > mount.files_max || bytes > mount.bytes_max {
        return Err(VolumeError::OverQuota {
            guest: mount.guest.clone(),
            bytes,
            files,
            bytes_max: mount.bytes_max,
            files_max: mount.files_max,
        });
    }
    let mut dirs: BTreeSet<&str> = BTreeSet::new();
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    for e in &tree.entries {
        let p = e.path.as_str();
        let clean = !p.is_empty()
            && p.len() <= ENTRY_PATH_BYTES_MAX
            && p.split('/')
                .all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains('\0'));
        if !clean {
            return Err(bad(format!("path {p:?} is not a clean relative path")));
        }
        if !seen.insert(p) {
            return Err(bad(format!("path {p:?} is listed twice")));
        }
        if let Some((parent, _)) = p.rsplit_once('/') {
            if !dirs.contains(parent) {
                return Err(bad(format!("{p:?} comes before its directory")));
            }
        }
        match &e.kind {
            EntryKind::Dir => {
                dirs.insert(p);
            }
            EntryKind::File { size, chunks } => {
                if chunks.len() as u64 != size.div_ceil(CHUNK_BYTES) {
                    return Err(bad(format!(
                        "{p:?} has {} chunks for {size} bytes",
                        chunks.len()
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Change `volume`'s directory, built from `old`, into `new` (checked
/// here first): entries gone from `new` are removed, new ones created,
/// and a file whose chunks changed gets only those chunks written (and its
/// length set). Every chunk written is read from `registry` and checked.
pub fn apply_changes(
    volume: &Mounted,
    old: &VolumeTree,
    new: &VolumeTree,
    registry: &Registry,
) -> Result<(), VolumeError> {
    check(new, &volume.mount)?;
    let dir = cap_std::fs::Dir::open_ambient_dir(&volume.root, cap_std::ambient_authority())
        .map_err(|e| VolumeError::io(&volume.root, e))?;
    let was: HashMap<&str, &EntryKind> = old
        .entries
        .iter()
        .map(|e| (e.path.as_str(), &e.kind))
        .collect();
    let now: HashMap<&str, &EntryKind> = new
        .entries
        .iter()
        .map(|e| (e.path.as_str(), &e.kind))
        .collect();
    // Removed, or changed between file and directory: children first.
    let mut gone: Vec<&Entry> = old
        .entries
        .iter()
        .filter(|e| {
            now.get(e.path.as_str())
                .is_none_or(|k| std::mem::discriminant(*k) != std::mem::discriminant(&e.kind))
        })
        .collect();
    gone.sort_by(|a, b| b.path.cmp(&a.path));
    for e in gone {
        let at = volume.root.join(&e.path);
        let r = match e.kind {
            EntryKind::Dir => dir.remove_dir_all(&e.path),
            EntryKind::File { .. } => dir.remove_file(&e.path),
        };
        match r {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(VolumeError::io(&at, err)),
        }
    }
    for e in &new.entries {
        let at = volume.root.join(&e.path);
        let before = was
            .get(e.path.as_str())
            .filter(|k| std::mem::discriminant(**k) == std::mem::discriminant(&e.kind));
        match &e.kind {
            EntryKind::Dir => {
                if before.is_none() {
                    dir.create_dir(&e.path)
                        .map_err(|err| VolumeError::io(&at, err))?;
                }
            }
            EntryKind::File { size, chunks } => {
                let old_chunks: &[Sha256] = match before {
                    Some(EntryKind::File { size: s, chunks: c }) if s == size && c == chunks => {
                        continue;
                    }
                    Some(EntryKind::File { chunks: c, .. }) => c,
                    _ => &[],
                };
                let mut options = cap_std::fs::OpenOptions::new();
                options.write(true).create(true);
                let mut file = dir
                    .open_with(&e.path, &options)
                    .map_err(|err| VolumeError::io(&at, err))?;
                file.set_len(*size)
                    .map_err(|err| VolumeError::io(&at, err))?;
                for (i, hash) in chunks.iter().enumerate() {
                    if old_chunks.get(i) == Some(hash) {
                        continue;
                    }
                    let start = i as u64 * CHUNK_BYTES;
                    let want = size.saturating_sub(start).min(CHUNK_BYTES);
                    let bytes = registry
                        .get(hash)
                        .map_err(|err| VolumeError::Chunk(*hash, err))?;
                    if bytes.len() as u64 != want {
                        return Err(VolumeError::BadTree {
                            guest: volume.mount.guest.clone(),
                            why: format!(
                                "chunk {} of {:?} has the wrong length",
                                hash.short(),
                                e.path
                            ),
                        });
                    }
                    use std::io::Seek;
                    file.seek(std::io::SeekFrom::Start(start))
                        .map_err(|err| VolumeError::io(&at, err))?;
                    file.write_all(&bytes)
                        .map_err(|err| VolumeError::io(&at, err))?;
                }
            }
        }
    }
    volume.usage.set(new.bytes(), new.entries.len() as u64);
    Ok(())
}

/// Every chunk of `trees` with its length, each once, in tree order: what
/// a snapshot lists so its file form carries them.
pub fn chunk_refs(trees: &[VolumeTree]) -> Vec<shoal_snapshot_format::BlobRef> {
    let files = trees
        .iter()
        .flat_map(|t| &t.entries)
        .filter_map(|e| match &e.kind {
            EntryKind::File { size, chunks } => Some((*size, &chunks[..])),
            _ => None,
        });
    file_chunk_refs(files)
}

/// The chunks of files given as (size, chunk hashes), each with its length
/// (the last one of a file may be short), each distinct chunk once, in
/// order of first use.
pub fn file_chunk_refs<'a>(
    files: impl IntoIterator<Item = (u64, &'a [Sha256])>,
) -> Vec<shoal_snapshot_format::BlobRef> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (size, chunks) in files {
        for (i, hash) in chunks.iter().enumerate() {
            let start = (i as u64).saturating_mul(CHUNK_BYTES);
            let bytes = size.saturating_sub(start).min(CHUNK_BYTES);
            if seen.insert(*hash) {
                out.push(shoal_snapshot_format::BlobRef {
                    hash: *hash,
                    // At most CHUNK_BYTES (256 KiB).
                    bytes: bytes as u32,
                });
            }
        }
    }
    out
}

/// The chunks of `trees` that `registry` lacks, each once.
pub fn missing_chunks(trees: &[VolumeTree], registry: &Registry) -> Vec<Sha256> {
    chunk_refs(trees)
        .into_iter()
        .map(|b| b.hash)
        .filter(|h| !registry.contains(h))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rebuild `tree` into `volume`'s empty directory.
    fn materialize(
        volume: &Mounted,
        tree: &VolumeTree,
        registry: &Registry,
    ) -> Result<(), VolumeError> {
        apply_changes(volume, &VolumeTree::default(), tree, registry)
    }

    fn mounted(root: &Path, bytes_max: u64) -> Mounted {
        let mut m = VolumeMount::new("/data");
        m.bytes_max = bytes_max;
        Mounted::create(m, root.to_path_buf()).unwrap()
    }

    #[test]
    fn a_captured_volume_is_rebuilt_byte_for_byte_and_unchanged_files_are_not_reread() {
        let tmp = tempfile::tempdir().unwrap();
        let registry = Registry::open(tmp.path().join("reg")).unwrap();
        let a = mounted(&tmp.path().join("a"), 1 << 30);
        std::fs::create_dir_all(a.root.join("sub/deeper")).unwrap();
        let big: Vec<u8> = (0..(CHUNK_BYTES * 3 + 17))
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(a.root.join("sub/big"), &big).unwrap();
        std::fs::write(a.root.join("empty"), b"").unwrap();
        std::fs::write(a.root.join("sub/deeper/small"), b"hello").unwrap();
        let (tree, stats) = capture(&a, &registry).unwrap();
        assert_eq!(stats.bytes_hashed, big.len() as u64 + 5);
        assert_eq!(tree.entries.len(), 5, "{tree:?}");
        check(&tree, &a.mount).unwrap();
        // Hashed long enough ago: the next capture reuses the hashes.
        for c in a.cache.lock().unwrap().files.values_mut() {
            c.hashed_at_ns += 2 * RACY_NS;
        }
        let (again, stats) = capture(&a, &registry).unwrap();
        assert_eq!(again, tree);
        assert_eq!(stats.bytes_hashed, 0);
        let b = mounted(&tmp.path().join("b"), 1 << 30);
        materialize(&b, &tree, &registry).unwrap();
        assert_eq!(std::fs::read(b.root.join("sub/big")).unwrap(), big);
        assert_eq!(
            std::fs::read(b.root.join("sub/deeper/small")).unwrap(),
            b"hello"
        );
        assert_eq!(b.usage.bytes(), big.len() as u64 + 5);
        assert_eq!(b.usage.files(), 5);
        let root = b.root.clone();
        drop(b);
        assert!(!root.exists(), "the directory goes with the volume");
    }

    #[test]
    fn hostile_trees_are_refused_before_anything_is_written() {
        let tmp = tempfile::tempdir().unwrap();
        let registry = Registry::open(tmp.path().join("reg")).unwrap();
        let v = mounted(&tmp.path().join("v"), 1000);
        let file = |path: &str, size: u64, n: usize| Entry {
            path: path.into(),
            kind: EntryKind::File {
                size,
                chunks: vec![Sha256::of(b"x"); n],
            },
        };
        let dir = |path: &str| Entry {
            path: path.into(),
            kind: EntryKind::Dir,
        };
        for (entries, what) in [
            (vec![file("../escape", 1, 1)], "parent path"),
            (vec![file("/etc/passwd", 1, 1)], "absolute path"),
            (vec![file("a//b", 1, 1)], "empty part"),
            (vec![file("a/b", 1, 1)], "missing parent"),
            (vec![file("a", 1, 1), file("a", 1, 1)], "duplicate"),
            (vec![file("a", 1, 2)], "chunk count"),
            (vec![file("a", 2000, 1)], "over the byte quota"),
            (vec![dir("d"), file("d/./x", 1, 1)], "dot part"),
        ] {
            let tree = VolumeTree {
                guest: "/data".into(),
                entries,
            };
            assert!(materialize(&v, &tree, &registry).is_err(), "{what}");
        }
        assert_eq!(std::fs::read_dir(&v.root).unwrap().count(), 0);
        // A chunk whose bytes are not what the tree says is refused too.
        let tree = VolumeTree {
            guest: "/data".into(),
            entries: vec![file("a", 1, 1)],
        };
        assert!(matches!(
            materialize(&v, &tree, &registry),
            Err(VolumeError::Chunk(..))
        ));
    }

    #[test]
    fn an_update_writes_only_what_changed_and_ends_equal_to_a_fresh_rebuild() {
        let tmp = tempfile::tempdir().unwrap();
        let registry = Registry::open(tmp.path().join("reg")).unwrap();
        let src = mounted(&tmp.path().join("src"), 1 << 30);
        std::fs::create_dir_all(src.root.join("d/e")).unwrap();
        let big: Vec<u8> = (0..(CHUNK_BYTES * 4)).map(|i| (i % 253) as u8).collect();
        std::fs::write(src.root.join("big"), &big).unwrap();
        std::fs::write(src.root.join("d/e/x"), b"x").unwrap();
        std::fs::write(src.root.join("goes"), b"bye").unwrap();
        let (before, _) = capture(&src, &registry).unwrap();
        // Staged from the first tree.
        let staged = mounted(&tmp.path().join("staged"), 1 << 30);
        materialize(&staged, &before, &registry).unwrap();
        // Then: one chunk of `big` changes and it shrinks, a file goes, a
        // directory becomes a file, a new file comes.
        let mut changed = big.clone();
        changed[(CHUNK_BYTES + 5) as usize] ^= 0xff;
        changed.truncate((CHUNK_BYTES * 3 + 9) as usize);
        std::fs::write(src.root.join("big"), &changed).unwrap();
        std::fs::remove_file(src.root.join("goes")).unwrap();
        std::fs::remove_dir_all(src.root.join("d/e")).unwrap();
        std::fs::write(src.root.join("d/e"), b"now a file").unwrap();
        std::fs::write(src.root.join("new"), b"hello").unwrap();
        src.cache.lock().unwrap().files.clear();
        let (after, _) = capture(&src, &registry).unwrap();
        apply_changes(&staged, &before, &after, &registry).unwrap();
        // Equal to what a fresh rebuild gives, entry for entry.
        let (rebuilt, _) = capture(&staged, &registry).unwrap();
        assert_eq!(rebuilt.entries, after.entries);
        assert_eq!(std::fs::read(staged.root.join("big")).unwrap(), changed);
        assert!(!staged.root.join("goes").exists());
        assert_eq!(staged.usage.files(), after.entries.len() as u64);
        assert_eq!(staged.usage.bytes(), after.bytes());
    }

    /// A file changed just before its hashing is trusted afterwards only
    /// while the volume records no write to it.
    #[test]
    fn a_recently_changed_file_is_hashed_again_only_if_written_since() {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().unwrap();
        let registry = Registry::open(tmp.path().join("reg")).unwrap();
        let v = mounted(&tmp.path().join("v"), 1 << 30);
        std::fs::write(v.root.join("f"), vec![1u8; 1000]).unwrap();
        let (_, first) = capture(&v, &registry).unwrap();
        assert_eq!(first.bytes_hashed, 1000);
        // Within the racy margin, nothing written: trusted.
        let (_, again) = capture(&v, &registry).unwrap();
        assert_eq!(again.bytes_hashed, 0);
        // Written (as a QuotaFile would note) with the same length and,
        // here, the same times: hashed again.
        let ino = std::fs::metadata(v.root.join("f")).unwrap().ino();
        v.usage.mark_written(ino);
        let (_, after_write) = capture(&v, &registry).unwrap();
        assert_eq!(after_write.bytes_hashed, 1000);
    }
}
