//! The Raft log as a write-ahead log of its own: segment files, zero-filled
//! when made, into which records are written in place and made durable
//! with one `fdatasync` per append.
//!
//! Why not the redb database that keeps the vote and the snapshot: every
//! write waits for two log fsyncs in a row (the leader's append, then a
//! follower's), and a redb commit (B-tree pages, header, a growing file)
//! cost 180–300 µs here where an overwrite of an already written block
//! costs 100–160 µs: no file size or block allocation changes, so the
//! file system has no metadata to journal.
//!
//! A record is `len: u32 | crc32(index, payload): u32 | index: u64 |
//! payload`, little-endian; a zero `len` ends a segment. A segment file is
//! named after the index of its first record (`wal-<20 digits>`). Indexes
//! are contiguous across the log. On open, the first record that is torn,
//! fails its checksum or breaks the sequence ends the log: it and all
//! after it are erased (zeroed, later segments removed). Only a record
//! whose append never returned can be there: an append returns after its
//! data is synced, and a segment is only ever extended at its end.
//!
//! Truncation (a follower's conflicting suffix) zeroes the records it
//! removes before it returns, so an old record can never reappear behind a
//! shorter new one. Purging removes whole segments; the purge point itself
//! is kept by the caller (in redb) before segments go.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// Bytes of a new segment (a larger record gets a segment of its size).
pub(crate) const SEGMENT_BYTES: u64 = 8 << 20;
/// Bytes of a log's first segment: most logs stay small (a test cluster,
/// a node that just joined and installs a snapshot), and zero-filling
/// costs a write of the whole segment.
const FIRST_SEGMENT_BYTES: u64 = 1 << 20;
/// Bytes of a record's header.
const HEADER_BYTES: usize = 16;
/// Largest record payload accepted, written or read (bounds what a
/// damaged length field can make us allocate).
pub(crate) const RECORD_BYTES_MAX: usize = 256 << 20;
/// Zeroes are written in chunks of this size.
const ZERO_CHUNK_BYTES: usize = 1 << 20;

/// A failure of the write-ahead log.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// A file operation failed.
    #[error("raft log {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// An append that does not follow the log.
    #[error("raft log: entry {got} appended where {expected} comes next")]
    Gap {
        /// The next index.
        expected: u64,
        /// The index given.
        got: u64,
    },
    /// A record over [`RECORD_BYTES_MAX`].
    #[error("raft log: a {bytes}-byte entry (at most {RECORD_BYTES_MAX})")]
    TooLarge {
        /// The payload's size.
        bytes: usize,
    },
    /// A record read back is not the one the index says is there.
    #[error("raft log {path}: record at {offset} is damaged")]
    Damaged {
        /// The segment.
        path: PathBuf,
        /// Where.
        offset: u64,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One segment file.
#[derive(Debug)]
struct Segment {
    path: PathBuf,
    file: Arc<File>,
    /// The file's (zero-filled) size.
    size: u64,
    /// Where the next record goes.
    end: u64,
}

/// Where one record lives.
#[derive(Clone, Copy, Debug)]
struct Loc {
    /// The first index of its segment (the segment's key).
    segment: u64,
    offset: u64,
    len: u32,
}

#[derive(Debug)]
struct Inner {
    /// Segments by the index of their first record.
    segments: BTreeMap<u64, Segment>,
    /// `locs[i]` is where index `first + i` lives.
    locs: VecDeque<Loc>,
    /// The index of `locs[0]`; when empty, the index that comes next.
    first: u64,
}

impl Inner {
    fn next(&self) -> u64 {
        self.first + self.locs.len() as u64
    }

    fn loc(&self, index: u64) -> Option<Loc> {
        let at = index.checked_sub(self.first)?;
        self.locs.get(usize::try_from(at).ok()?).copied()
    }

    fn check(&self) {
        debug_assert!(self
            .locs
            .iter()
            .all(|l| self.segments.contains_key(&l.segment)));
        debug_assert!(self
            .locs
            .iter()
            .zip(self.locs.iter().skip(1))
            .all(|(a, b)| (a.segment, a.offset) < (b.segment, b.offset)));
    }
}

/// The write-ahead log of one node.
#[derive(Debug)]
pub(crate) struct Wal {
    dir: PathBuf,
    inner: Mutex<Inner>,
}

fn checksum(index: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&index.to_le_bytes());
    h.update(payload);
    h.finalize()
}

fn segment_name(first: u64) -> String {
    format!("wal-{first:020}")
}

fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("wal-")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Write `len` zero bytes at `offset`.
fn zero(file: &File, path: &Path, mut offset: u64, len: u64) -> Result<(), WalError> {
    let chunk = vec![0u8; ZERO_CHUNK_BYTES];
    let end = offset.saturating_add(len);
    while offset < end {
        let n = usize::try_from(end - offset).map_or(ZERO_CHUNK_BYTES, |n| n.min(ZERO_CHUNK_BYTES));
        file.write_all_at(&chunk[..n], offset).map_err(io(path))?;
        offset += n as u64;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

impl Wal {
    /// Open (creating) the log in `dir`, recovering what it holds. Records
    /// at or below `purged` are dropped (they were purged before a crash
    /// could remove their segment).
    pub(crate) fn open(dir: &Path, purged: Option<u64>) -> Result<Wal, WalError> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io(dir))?;
        let mut firsts = Vec::new();
        for item in std::fs::read_dir(dir).map_err(io(dir))? {
            let item = item.map_err(io(dir))?;
            if let Some(first) = item.file_name().to_str().and_then(parse_name) {
                firsts.push(first);
            }
        }
        firsts.sort_unstable();
        let mut inner = Inner {
            segments: BTreeMap::new(),
            locs: VecDeque::new(),
            first: purged.map_or(0, |p| p.saturating_add(1)),
        };
        let mut erase_from: Option<usize> = None;
        for (k, &first) in firsts.iter().enumerate() {
            let path = dir.join(segment_name(first));
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(io(&path))?;
            let size = file.metadata().map_err(io(&path))?.len();
            // A segment must start where the log goes on.
            let continues = inner.locs.is_empty() || first == inner.next();
            if !continues {
                erase_from = Some(k);
                break;
            }
            if inner.locs.is_empty() {
                inner.first = first;
            }
            let (end, torn) = scan(&file, &path, size, first, &mut inner.locs)?;
            if torn {
                // Zero what follows the last good record: never read again.
                zero(&file, &path, end, size - end)?;
                file.sync_data().map_err(io(&path))?;
                tracing::warn!(segment = %path.display(), offset = end, "raft log: erased a torn or damaged tail");
            }
            inner.segments.insert(
                first,
                Segment {
                    path,
                    file: Arc::new(file),
                    size,
                    end,
                },
            );
            if torn {
                erase_from = Some(k + 1);
                break;
            }
        }
        if let Some(k) = erase_from {
            for &first in &firsts[k..] {
                let path = dir.join(segment_name(first));
                std::fs::remove_file(&path).map_err(io(&path))?;
                tracing::warn!(segment = %path.display(), "raft log: removed a segment past the end of the log");
            }
            sync_dir(dir)?;
        }
        let wal = Wal {
            dir: dir.to_path_buf(),
            inner: Mutex::new(inner),
        };
        if let Some(p) = purged {
            wal.purge_upto(p)?;
        }
        wal.lock().check();
        Ok(wal)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The index the next append must start at.
    pub(crate) fn next_index(&self) -> u64 {
        self.lock().next()
    }

    /// Whether the log holds no record.
    pub(crate) fn is_empty(&self) -> bool {
        self.lock().locs.is_empty()
    }

    /// Append `(index, payload)` records, durably: returns once synced.
    /// The first index must be the next one, or an earlier one (whose
    /// suffix is then truncated first); the rest must follow it.
    pub(crate) fn append(&self, entries: &[(u64, Vec<u8>)]) -> Result<(), WalError> {
        let Some((first_index, _)) = entries.first() else {
            return Ok(());
        };
        if *first_index < self.next_index() {
            self.truncate_from(*first_index)?;
        }
        let mut touched: Vec<(Arc<File>, PathBuf)> = Vec::new();
        {
            let mut inner = self.lock();
            let mut created = false;
            for (index, payload) in entries {
                if payload.len() > RECORD_BYTES_MAX {
                    return Err(WalError::TooLarge {
                        bytes: payload.len(),
                    });
                }
                if !inner.locs.is_empty() && *index != inner.next() {
                    return Err(WalError::Gap {
                        expected: inner.next(),
                        got: *index,
                    });
                }
                if inner.locs.is_empty() {
                    inner.first = *index;
                }
                let record_bytes = (HEADER_BYTES + payload.len()) as u64;
                let room = inner
                    .segments
                    .last_key_value()
                    .is_some_and(|(_, s)| s.end + record_bytes <= s.size);
                if !room {
                    self.roll_over(&mut inner, *index, record_bytes)?;
                    created = true;
                }
                let Some((&key, seg)) = inner.segments.iter_mut().next_back() else {
                    unreachable!("a segment was just made");
                };
                let mut record = Vec::with_capacity(HEADER_BYTES + payload.len());
                record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
                record.extend_from_slice(&checksum(*index, payload).to_le_bytes());
                record.extend_from_slice(&index.to_le_bytes());
                record.extend_from_slice(payload);
                seg.file
                    .write_all_at(&record, seg.end)
                    .map_err(io(&seg.path))?;
                let loc = Loc {
                    segment: key,
                    offset: seg.end,
                    len: payload.len() as u32,
                };
                seg.end += record_bytes;
                if !touched.iter().any(|(f, _)| Arc::ptr_eq(f, &seg.file)) {
                    touched.push((seg.file.clone(), seg.path.clone()));
                }
                inner.locs.push_back(loc);
            }
            inner.check();
            if created {
                sync_dir(&self.dir)?;
            }
        }
        // Outside the lock: readers need not wait for the disk.
        for (file, path) in touched {
            file.sync_data().map_err(io(&path))?;
        }
        Ok(())
    }

    /// Start a segment for a record of `record_bytes` at `index`.
    fn roll_over(&self, inner: &mut Inner, index: u64, record_bytes: u64) -> Result<(), WalError> {
        // The segment before it ends here: its tail is already zero.
        let base = if inner.segments.is_empty() {
            FIRST_SEGMENT_BYTES
        } else {
            SEGMENT_BYTES
        };
        let size = base.max(record_bytes.next_multiple_of(4096));
        let path = self.dir.join(segment_name(index));
        let file = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)
                .map_err(io(&path))?
        };
        // Written zeroes, not a sparse or fallocated file: later appends
        // then overwrite allocated, initialised blocks, which fdatasync
        // flushes without a journal commit.
        zero(&file, &path, 0, size)?;
        file.sync_all().map_err(io(&path))?;
        if let Some(old) = inner.segments.insert(
            index,
            Segment {
                path: path.clone(),
                file: Arc::new(file),
                size,
                end: 0,
            },
        ) {
            // An emptied segment of the same first index (after a
            // truncation): replaced by the new file.
            debug_assert_eq!(old.end, 0);
        }
        Ok(())
    }

    /// Remove records with index ≥ `from`, durably (their bytes zeroed).
    pub(crate) fn truncate_from(&self, from: u64) -> Result<(), WalError> {
        let mut inner = self.lock();
        if from >= inner.next() {
            return Ok(());
        }
        let Some(at) = inner.loc(from.max(inner.first)) else {
            return Ok(());
        };
        let later: Vec<u64> = inner
            .segments
            .range(at.segment.saturating_add(1)..)
            .map(|(k, _)| *k)
            .collect();
        let mut removed = false;
        for key in later {
            if let Some(seg) = inner.segments.remove(&key) {
                std::fs::remove_file(&seg.path).map_err(io(&seg.path))?;
                removed = true;
            }
        }
        if let Some(seg) = inner.segments.get_mut(&at.segment) {
            zero(&seg.file, &seg.path, at.offset, seg.end - at.offset)?;
            seg.file.sync_data().map_err(io(&seg.path))?;
            seg.end = at.offset;
        }
        let keep = usize::try_from(from.max(inner.first) - inner.first).unwrap_or(usize::MAX);
        inner.locs.truncate(keep);
        if removed {
            sync_dir(&self.dir)?;
        }
        inner.check();
        Ok(())
    }

    /// Forget records with index ≤ `upto`; remove the segments that hold
    /// nothing else. The log's next index is at least `upto + 1` after.
    pub(crate) fn purge_upto(&self, upto: u64) -> Result<(), WalError> {
        let mut inner = self.lock();
        let next = upto.saturating_add(1);
        while inner.first < next && !inner.locs.is_empty() {
            inner.locs.pop_front();
            inner.first += 1;
        }
        inner.first = inner.first.max(next);
        // A segment may go when no kept record lives in it.
        let kept_from = inner.locs.front().map(|l| l.segment);
        let gone: Vec<u64> = inner
            .segments
            .keys()
            .copied()
            .filter(|k| kept_from.is_none_or(|f| *k < f))
            .collect();
        let mut removed = false;
        for key in gone {
            if let Some(seg) = inner.segments.remove(&key) {
                std::fs::remove_file(&seg.path).map_err(io(&seg.path))?;
                removed = true;
            }
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        inner.check();
        Ok(())
    }

    /// Payloads of records `start ≤ index < end` (`None`: to the last), at
    /// most `count_max`.
    pub(crate) fn range(
        &self,
        start: u64,
        end: Option<u64>,
        count_max: usize,
    ) -> Result<Vec<Vec<u8>>, WalError> {
        let inner = self.lock();
        let end = end.unwrap_or(u64::MAX).min(inner.next());
        let start = start.max(inner.first);
        let mut out = Vec::new();
        let mut index = start;
        while index < end && out.len() < count_max {
            let Some(loc) = inner.loc(index) else { break };
            out.push(read(&inner, index, loc)?);
            index += 1;
        }
        Ok(out)
    }

    /// The last record's payload.
    pub(crate) fn last(&self) -> Result<Option<Vec<u8>>, WalError> {
        let inner = self.lock();
        let Some(index) = inner.next().checked_sub(1) else {
            return Ok(None);
        };
        match inner.loc(index) {
            Some(loc) => read(&inner, index, loc).map(Some),
            None => Ok(None),
        }
    }
}

/// Read record `index` at `loc`, checking it is that record.
fn read(inner: &Inner, index: u64, loc: Loc) -> Result<Vec<u8>, WalError> {
    let seg = &inner.segments[&loc.segment];
    let mut buf = vec![0u8; HEADER_BYTES + loc.len as usize];
    seg.file
        .read_exact_at(&mut buf, loc.offset)
        .map_err(io(&seg.path))?;
    let damaged = || WalError::Damaged {
        path: seg.path.clone(),
        offset: loc.offset,
    };
    let (header, payload) = buf.split_at(HEADER_BYTES);
    let len = u32::from_le_bytes(header[0..4].try_into().map_err(|_| damaged())?);
    let at = u64::from_le_bytes(header[8..16].try_into().map_err(|_| damaged())?);
    if len != loc.len || at != index {
        return Err(damaged());
    }
    Ok(payload.to_vec())
}

/// Read the records of one segment into `locs` (the first must be
/// `first`, each next one the following index). Returns where the good
/// records end, and whether something else (torn, damaged, out of
/// sequence) was found there instead of the zero end mark.
fn scan(
    file: &File,
    path: &Path,
    size: u64,
    first: u64,
    locs: &mut VecDeque<Loc>,
) -> Result<(u64, bool), WalError> {
    let mut offset = 0u64;
    let mut expected = first;
    let mut header = [0u8; HEADER_BYTES];
    loop {
        if offset + HEADER_BYTES as u64 > size {
            // No room for another record: a clean end only if zero.
            return Ok((offset, false));
        }
        file.read_exact_at(&mut header, offset).map_err(io(path))?;
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let index = u64::from_le_bytes([
            header[8], header[9], header[10], header[11], header[12], header[13], header[14],
            header[15],
        ]);
        if len == 0 {
            // The end mark; anything else in the header is garbage.
            let clean = header.iter().all(|b| *b == 0);
            return Ok((offset, !clean));
        }
        let record_end = offset + (HEADER_BYTES + len) as u64;
        if len > RECORD_BYTES_MAX || record_end > size || index != expected {
            return Ok((offset, true));
        }
        let mut payload = vec![0u8; len];
        file.read_exact_at(&mut payload, offset + HEADER_BYTES as u64)
            .map_err(io(path))?;
        if checksum(index, &payload) != crc {
            return Ok((offset, true));
        }
        locs.push_back(Loc {
            segment: first,
            offset,
            len: len as u32,
        });
        expected += 1;
        offset = record_end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn payload(index: u64, len: usize) -> Vec<u8> {
        (0..len).map(|k| (index as usize * 31 + k) as u8).collect()
    }

    fn all(wal: &Wal) -> Vec<Vec<u8>> {
        wal.range(0, None, usize::MAX).unwrap()
    }

    #[test]
    fn appends_survive_a_reopen_and_read_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), None).unwrap();
        assert!(wal.is_empty());
        assert_eq!(wal.next_index(), 0);
        let entries: Vec<_> = (0..100).map(|i| (i, payload(i, 10 + i as usize))).collect();
        wal.append(&entries[..40]).unwrap();
        wal.append(&entries[40..]).unwrap();
        assert_eq!(wal.last().unwrap(), Some(payload(99, 109)));
        drop(wal);
        let wal = Wal::open(dir.path(), None).unwrap();
        assert_eq!(wal.next_index(), 100);
        let got = all(&wal);
        assert_eq!(got.len(), 100);
        for (i, p) in got.iter().enumerate() {
            assert_eq!(*p, payload(i as u64, 10 + i));
        }
        assert_eq!(wal.range(10, Some(13), 100).unwrap().len(), 3);
        assert_eq!(wal.range(10, Some(13), 2).unwrap().len(), 2);
        assert!(wal.range(13, Some(10), 100).unwrap().is_empty());
        // Out of sequence is refused.
        assert!(matches!(
            wal.append(&[(150, vec![1])]),
            Err(WalError::Gap { .. })
        ));
    }

    #[test]
    fn a_truncated_suffix_never_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), None).unwrap();
        let entries: Vec<_> = (0..50).map(|i| (i, payload(i, 100))).collect();
        wal.append(&entries).unwrap();
        wal.truncate_from(20).unwrap();
        assert_eq!(wal.next_index(), 20);
        // Shorter records where longer ones were: the old ones past them
        // must not be read as a continuation after a crash.
        let short: Vec<_> = (20..25).map(|i| (i, payload(i + 1000, 3))).collect();
        wal.append(&short).unwrap();
        drop(wal);
        let wal = Wal::open(dir.path(), None).unwrap();
        assert_eq!(wal.next_index(), 25);
        assert_eq!(all(&wal)[22], payload(1022, 3));
        // An append that starts earlier replaces the suffix too.
        wal.append(&[(10, vec![9, 9])]).unwrap();
        drop(wal);
        let wal = Wal::open(dir.path(), None).unwrap();
        assert_eq!(wal.next_index(), 11);
        assert_eq!(wal.last().unwrap(), Some(vec![9, 9]));
    }

    #[test]
    fn segments_roll_over_and_purging_removes_whole_ones() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), None).unwrap();
        // ~1 MiB records: eight to a segment.
        let big = 1 << 20;
        let entries: Vec<_> = (1..=20).map(|i| (i, payload(i, big))).collect();
        for e in &entries {
            wal.append(std::slice::from_ref(e)).unwrap();
        }
        let files = || std::fs::read_dir(dir.path()).unwrap().count();
        assert!(files() >= 3, "{} segments", files());
        // A record larger than a segment gets one of its own.
        wal.append(&[(21, payload(21, SEGMENT_BYTES as usize + 5))])
            .unwrap();
        wal.purge_upto(12).unwrap();
        assert_eq!(wal.range(0, None, 100).unwrap().len(), 9);
        assert_eq!(wal.range(13, Some(14), 1).unwrap()[0], payload(13, big));
        let after_purge = files();
        drop(wal);
        // A reopen with the purge point drops what was purged.
        let wal = Wal::open(dir.path(), Some(12)).unwrap();
        assert_eq!(wal.next_index(), 22);
        assert_eq!(wal.range(0, None, 100).unwrap().len(), 9);
        assert_eq!(files(), after_purge);
        // Purging past the end (a snapshot installed) empties the log; the
        // next append starts after it.
        wal.purge_upto(40).unwrap();
        assert!(wal.is_empty());
        assert_eq!(wal.next_index(), 41);
        assert_eq!(files(), 0);
        wal.append(&[(41, vec![1])]).unwrap();
        drop(wal);
        let wal = Wal::open(dir.path(), Some(40)).unwrap();
        assert_eq!(all(&wal), vec![vec![1]]);
        assert_eq!(wal.next_index(), 42);
    }

    /// Crash images: the log file cut or scribbled at a random place past
    /// the last synced record, as a crash mid-append leaves it. The
    /// reopened log holds exactly a prefix that includes every record
    /// acknowledged before the damage. Reproducible by seed.
    #[test]
    fn a_torn_or_damaged_tail_ends_the_log_and_is_erased() {
        for seed in 0..40u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let dir = tempfile::tempdir().unwrap();
            let wal = Wal::open(dir.path(), None).unwrap();
            let n = rng.gen_range(5..60u64);
            let entries: Vec<_> = (0..n)
                .map(|i| (i, payload(i, rng.gen_range(1..3000))))
                .collect();
            wal.append(&entries).unwrap();
            drop(wal);
            // Damage one byte of record `victim` or later: its header or
            // its payload.
            let victim = rng.gen_range(0..n);
            let path = dir.path().join(segment_name(0));
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .unwrap();
            let mut offset = 0u64;
            for (_, p) in &entries[..victim as usize] {
                offset += (HEADER_BYTES + p.len()) as u64;
            }
            let span = (HEADER_BYTES + entries[victim as usize].1.len()) as u64;
            let at = offset + rng.gen_range(0..span);
            let mut byte = [0u8; 1];
            file.read_exact_at(&mut byte, at).unwrap();
            file.write_all_at(&[byte[0] ^ (1 + rng.gen_range(0..255u8))], at)
                .unwrap();
            drop(file);
            let wal = Wal::open(dir.path(), None).unwrap();
            let got = all(&wal);
            assert_eq!(got.len() as u64, victim, "seed {seed}");
            for (i, p) in got.iter().enumerate() {
                assert_eq!(*p, entries[i].1, "seed {seed}");
            }
            // Appending goes on from there, and what was erased stays gone.
            wal.append(&[(victim, vec![7])]).unwrap();
            drop(wal);
            let wal = Wal::open(dir.path(), None).unwrap();
            assert_eq!(wal.next_index(), victim + 1, "seed {seed}");
        }
    }

    #[test]
    fn a_segment_that_does_not_continue_the_log_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), None).unwrap();
        wal.append(&[(0, vec![1]), (1, vec![2])]).unwrap();
        drop(wal);
        // A later segment whose start does not follow (left by an append
        // across a roll-over that never completed).
        std::fs::write(dir.path().join(segment_name(5)), vec![0u8; 64]).unwrap();
        let wal = Wal::open(dir.path(), None).unwrap();
        assert_eq!(wal.next_index(), 2);
        assert!(!dir.path().join(segment_name(5)).exists());
        // Foreign files are left alone.
        std::fs::write(dir.path().join("notes"), b"x").unwrap();
        drop(wal);
        assert_eq!(Wal::open(dir.path(), None).unwrap().next_index(), 2);
    }
}
