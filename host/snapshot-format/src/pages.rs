//! Splitting linear memory into hashed pages, and putting it back together.
//!
//! Capture side ([`split_pages`]): zero pages are skipped (a fresh Wasm
//! memory is mostly zeros), every other page is named by its sha256, and
//! when the previous snapshot's memory is at hand a page equal to it (one
//! `memcmp`) keeps the previous hash without being hashed again — the hash
//! is by far the most expensive step.
//!
//! Restore side ([`assemble_into`], [`assemble_memory`]): every page is
//! fetched once per distinct hash, checked (sha256 and length) and copied
//! into place; unlisted pages are made zero.

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use shoal_registry::Sha256;

use super::error::SnapshotFormatError;
use super::manifest::{Manifest, PageRef};
use super::{MAX_PAGES, MAX_PAGE_BYTES, PAGE_BYTES};

/// What [`split_pages`] returns: the fields [`Manifest::page_bytes`] and
/// [`Manifest::pages`] must be set to, and the pages to store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitPages {
    /// The page size used ([`page_bytes_for`] the memory size).
    pub page_bytes: u32,
    /// The non-zero pages, sorted by index, with their hashes.
    pub pages: Vec<PageRef>,
    /// The pages that must be stored (for
    /// [`store_snapshot`](super::store_snapshot)): hash and byte range in
    /// `memory`, each distinct hash once, none already in the parent.
    pub new_pages: Vec<(Sha256, Range<usize>)>,
}

/// The page size for a memory of `memory_bytes`: [`PAGE_BYTES`] (4 KiB),
/// or for memories over 256 MiB the smallest power of two up to 64 KiB that
/// keeps the page count at most [`MAX_PAGES`] (so a manifest stays under
/// about 7 MB however large the memory).
pub fn page_bytes_for(memory_bytes: u64) -> u32 {
    let mut page = PAGE_BYTES as u64;
    while page < MAX_PAGE_BYTES as u64 && memory_bytes.div_ceil(page) > MAX_PAGES {
        page *= 2;
    }
    page as u32
}

/// Split `memory` into pages of [`page_bytes_for`] its size for a
/// [`Manifest`]: zero pages are omitted, every other page is listed with its
/// sha256. Copy all three fields of the result into the manifest.
///
/// `parent` is the previous snapshot of the same process, with the memory
/// bytes it was taken from (same page size; otherwise it is ignored). A page
/// byte-identical to the parent's page at the same index reuses the parent's
/// hash without being hashed, and is not returned for storing (the parent
/// stored it). The second list holds only pages whose hash is new: not in
/// the parent and not already earlier in this memory.
///
/// `memory` may be the live linear memory of the paused process: nothing is
/// copied here, the caller copies (or stores) only the returned ranges. If
/// the parent's bytes do not match its manifest, the wrong hashes are caught
/// when the snapshot is restored ([`SnapshotFormatError::PageCorrupt`]),
/// never silently used. A parent page that is zero in its manifest is never
/// trusted: such pages are zero-checked as usual.
///
/// Time: one read of `memory` for the zero check (or two, of `memory` and
/// the parent, for the memcmp) plus sha256 of every changed non-zero page;
/// see the module documentation of [`super`] for measured figures.
pub fn split_pages(memory: &[u8], parent: Option<(&Manifest, &[u8])>) -> SplitPages {
    split_pages_sized(memory, parent, page_bytes_for(memory.len() as u64) as usize)
}

/// [`split_pages`] with an explicit page size (benchmarks compare sizes).
pub(super) fn split_pages_sized(
    memory: &[u8],
    parent: Option<(&Manifest, &[u8])>,
    page_bytes: usize,
) -> SplitPages {
    let parent = parent.filter(|(m, _)| m.page_bytes as usize == page_bytes);
    let parent_pages: &[PageRef] = parent.map_or(&[], |(m, _)| &m.pages);
    let parent_memory: &[u8] = parent.map_or(&[], |(_, mem)| mem);
    // Built on first use: only needed when some page actually changed.
    let mut parent_hashes: Option<HashSet<Sha256>> = None;
    let mut new_hashes: HashSet<Sha256> = HashSet::new();
    let mut cursor = 0usize;
    let mut refs = Vec::new();
    let mut new_pages = Vec::new();

    for (i, page) in memory.chunks(page_bytes).enumerate() {
        // A 32-bit memory has at most 2^20 pages of 4 KiB: unreachable.
        let Ok(index) = u32::try_from(i) else { break };
        let start = i * page_bytes;
        let range = start..start + page.len();

        while parent_pages.get(cursor).is_some_and(|p| p.index < index) {
            cursor += 1;
        }
        let parent_hash = parent_pages
            .get(cursor)
            .filter(|p| p.index == index)
            .map(|p| p.hash);
        if let Some(hash) = parent_hash {
            if parent_memory.get(range.clone()) == Some(page) {
                refs.push(PageRef { index, hash });
                continue;
            }
        }
        if is_zero(page) {
            continue;
        }
        let hash = Sha256::of(page);
        refs.push(PageRef { index, hash });
        if !parent_pages.is_empty() {
            let known =
                parent_hashes.get_or_insert_with(|| parent_pages.iter().map(|p| p.hash).collect());
            if known.contains(&hash) {
                continue;
            }
        }
        if new_hashes.insert(hash) {
            new_pages.push((hash, range));
        }
    }
    SplitPages {
        // At most MAX_PAGE_BYTES (callers pass page_bytes_for or a test size).
        page_bytes: page_bytes as u32,
        pages: refs,
        new_pages,
    }
}

/// [`split_pages`] with no parent, its hashing spread over `threads`
/// threads (each a contiguous run of pages): the same result, in about
/// 1/`threads` of the time when the cores are free. For a whole memory
/// hashed on a latency path (a move's offer: 64 MiB is ~38 ms on one core).
pub fn split_pages_parallel(memory: &[u8], threads: usize) -> SplitPages {
    let page_bytes = page_bytes_for(memory.len() as u64) as usize;
    let pages = memory.len().div_ceil(page_bytes);
    let threads = threads.clamp(1, pages.max(1));
    if threads == 1 {
        return split_pages_sized(memory, None, page_bytes);
    }
    let per_part = pages.div_ceil(threads) * page_bytes;
    let parts: Vec<SplitPages> = std::thread::scope(|scope| {
        let running: Vec<_> = memory
            .chunks(per_part)
            .map(|part| scope.spawn(move || split_pages_sized(part, None, page_bytes)))
            .collect();
        running
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    let mut merged = SplitPages {
        page_bytes: page_bytes as u32,
        pages: Vec::with_capacity(parts.iter().map(|p| p.pages.len()).sum()),
        new_pages: Vec::new(),
    };
    let mut seen: HashSet<Sha256> = HashSet::new();
    for (k, part) in parts.into_iter().enumerate() {
        let offset = k * per_part;
        // A 32-bit memory has at most 2^20 pages of 4 KiB.
        let first = u32::try_from(offset / page_bytes).unwrap_or(u32::MAX);
        merged.pages.extend(part.pages.into_iter().map(|p| PageRef {
            index: p.index + first,
            hash: p.hash,
        }));
        for (hash, range) in part.new_pages {
            if seen.insert(hash) {
                merged
                    .new_pages
                    .push((hash, range.start + offset..range.end + offset));
            }
        }
    }
    merged
}

/// [`split_pages`] when the caller knows which bytes of `memory` were
/// written since the parent snapshot's memory was taken (a kept copy with
/// write tracking: `shoal_runtime::memory_copy`). Pages no written range
/// touches keep the parent's entry unread — its hash, or its absence (a
/// zero page) — so the cost is the written pages, not the memory. Bytes
/// past `parent_memory_bytes` count as written whether listed or not.
///
/// `None` when the parent is of another page size (the caller falls back to
/// [`split_pages`]). The pages to store are the written non-zero pages,
/// each distinct hash once; the caller skips those the registry holds.
///
/// Correctness rests on `written` being complete: a write it misses keeps
/// the parent's hash for a page whose bytes differ, which a restore would
/// not notice. That is why only a kernel-tracked delta is passed here.
pub fn split_pages_written(
    memory: &[u8],
    parent_pages: &[PageRef],
    parent_page_bytes: u32,
    parent_memory_bytes: u64,
    written: &[Range<usize>],
) -> Option<SplitPages> {
    let page_bytes = page_bytes_for(memory.len() as u64) as usize;
    if page_bytes != parent_page_bytes as usize {
        return None;
    }
    let count = memory.len().div_ceil(page_bytes);
    let mut dirty = pages_touched(written, page_bytes, count);
    let grown_from = usize::try_from(parent_memory_bytes)
        .unwrap_or(usize::MAX)
        .div_ceil(page_bytes);
    for d in dirty.iter_mut().skip(grown_from) {
        *d = true;
    }
    let mut refs = Vec::with_capacity(parent_pages.len());
    let mut new_hashes: HashSet<Sha256> = HashSet::new();
    let mut new_pages = Vec::new();
    let mut cursor = 0usize;
    for (i, is_dirty) in dirty.iter().enumerate() {
        let Ok(index) = u32::try_from(i) else { break };
        while parent_pages.get(cursor).is_some_and(|p| p.index < index) {
            cursor += 1;
        }
        if !is_dirty {
            if let Some(p) = parent_pages.get(cursor).filter(|p| p.index == index) {
                refs.push(*p);
            }
            continue;
        }
        let start = i * page_bytes;
        let range = start..(start + page_bytes).min(memory.len());
        let page = &memory[range.clone()];
        if is_zero(page) {
            continue;
        }
        let hash = Sha256::of(page);
        refs.push(PageRef { index, hash });
        if new_hashes.insert(hash) {
            new_pages.push((hash, range));
        }
    }
    Some(SplitPages {
        page_bytes: page_bytes as u32,
        pages: refs,
        new_pages,
    })
}

/// Which of the first `count` pages of `page_bytes` the byte ranges
/// `written` touch (ranges past them are ignored).
pub fn pages_touched(written: &[Range<usize>], page_bytes: usize, count: usize) -> Vec<bool> {
    let mut touched = vec![false; count];
    for r in written.iter().filter(|r| r.start < r.end) {
        let last = ((r.end - 1) / page_bytes).min(count.saturating_sub(1));
        for t in touched.iter_mut().take(last + 1).skip(r.start / page_bytes) {
            *t = true;
        }
    }
    touched
}

/// Whether every byte is zero. Branch-free OR over 256-byte blocks (which
/// the compiler vectorizes) with an early exit between blocks, so a non-zero
/// page usually costs one block and a zero page runs at memory bandwidth.
pub(super) fn is_zero(bytes: &[u8]) -> bool {
    let mut blocks = bytes.chunks_exact(256);
    for block in &mut blocks {
        if block.iter().fold(0u8, |acc, &b| acc | b) != 0 {
            return false;
        }
    }
    blocks.remainder().iter().all(|&b| b == 0)
}

/// Rebuild the memory a manifest describes: `memory_bytes` bytes, listed
/// pages fetched with `fetch(hash)` and checked, all others zero.
///
/// `fetch` is called once per distinct hash (a repeated page is copied from
/// its first occurrence); it may return owned or borrowed bytes, and should
/// report a page it cannot find as [`SnapshotFormatError::PageMissing`] (see
/// [`fetch_from_registry`](super::fetch_from_registry)). Allocates
/// `memory_bytes` (at most 4 GiB, zeroed lazily by the OS): check it against
/// the process's memory limit first. Prefer [`assemble_into`] to write
/// straight into a restored instance's memory.
pub fn assemble_memory<B: AsRef<[u8]>>(
    manifest: &Manifest,
    fetch: impl FnMut(&Sha256) -> Result<B, SnapshotFormatError>,
) -> Result<Vec<u8>, SnapshotFormatError> {
    manifest.validate()?;
    let len = memory_len(manifest)?;
    let mut memory = vec![0u8; len];
    assemble_validated(manifest, &mut memory, fetch, true, false)?;
    Ok(memory)
}

/// Like [`assemble_memory`] but writes into `dest`, which must be exactly
/// `memory_bytes` long (e.g. the linear memory of a fresh instance, grown to
/// the captured size). Pages the manifest does not list are zeroed, since a
/// fresh instance holds its data segments there; a page that is already
/// zero is only read, not written, so untouched memory stays unbacked.
///
/// On error `dest` is partly written and must be discarded (the restore is
/// aborted): the process is never resumed from it.
pub fn assemble_into<B: AsRef<[u8]>>(
    manifest: &Manifest,
    dest: &mut [u8],
    fetch: impl FnMut(&Sha256) -> Result<B, SnapshotFormatError>,
) -> Result<(), SnapshotFormatError> {
    check_dest(manifest, dest)?;
    assemble_validated(manifest, dest, fetch, false, false)
}

/// A valid manifest, and a destination of its memory's size.
fn check_dest(manifest: &Manifest, dest: &[u8]) -> Result<(), SnapshotFormatError> {
    manifest.validate()?;
    if dest.len() as u64 != manifest.memory_bytes {
        return Err(SnapshotFormatError::MemorySizeMismatch {
            expected: manifest.memory_bytes,
            got: dest.len() as u64,
        });
    }
    Ok(())
}

/// `memory_bytes` as a `usize` (only fails on hosts narrower than 64 bits).
pub(super) fn memory_len(manifest: &Manifest) -> Result<usize, SnapshotFormatError> {
    usize::try_from(manifest.memory_bytes).map_err(|_| SnapshotFormatError::TooLarge {
        what: "memory",
        bytes: manifest.memory_bytes,
        max: usize::MAX as u64,
    })
}

/// Byte range of page `index` as `usize` (valid once `memory_len` succeeded).
pub(super) fn page_range_usize(manifest: &Manifest, index: u32) -> Range<usize> {
    let r = manifest.page_range(index);
    // Both ends are ≤ memory_bytes, which fits in usize (see memory_len).
    r.start as usize..r.end as usize
}

/// Check that `bytes` are the page `page` at `range`: its length, then its
/// sha256.
pub(super) fn verify_page(
    page: &PageRef,
    range: &Range<usize>,
    bytes: &[u8],
) -> Result<(), SnapshotFormatError> {
    let actual = Sha256::of(bytes);
    if actual != page.hash {
        return Err(SnapshotFormatError::PageCorrupt {
            index: page.index,
            expected: page.hash,
            actual,
        });
    }
    check_length(page, range, bytes)
}

/// A page's bytes fill exactly its range.
pub(super) fn check_length(
    page: &PageRef,
    range: &Range<usize>,
    bytes: &[u8],
) -> Result<(), SnapshotFormatError> {
    if bytes.len() != range.len() {
        return Err(SnapshotFormatError::PageWrongLength {
            index: page.index,
            expected: range.len() as u64,
            got: bytes.len() as u64,
        });
    }
    Ok(())
}

/// The body of [`assemble_into`] for a validated manifest and a `dest` of
/// the right size; `dest_is_zero` skips the zeroing of unlisted pages;
/// `hashes_checked` says `fetch` returns only bytes checked against the
/// hash asked for (the registry), so only lengths are checked here.
fn assemble_validated<B: AsRef<[u8]>>(
    manifest: &Manifest,
    dest: &mut [u8],
    mut fetch: impl FnMut(&Sha256) -> Result<B, SnapshotFormatError>,
    dest_is_zero: bool,
    hashes_checked: bool,
) -> Result<(), SnapshotFormatError> {
    let page_bytes = manifest.page_bytes as usize;
    let mut first_at: HashMap<Sha256, Range<usize>> = HashMap::with_capacity(manifest.pages.len());
    let mut zero_from = 0usize;
    for page in &manifest.pages {
        let range = page_range_usize(manifest, page.index);
        if !dest_is_zero {
            zero_pages(&mut dest[zero_from..range.start], page_bytes);
        }
        zero_from = range.end;
        match first_at.get(&page.hash) {
            Some(src) if src.len() == range.len() => dest.copy_within(src.clone(), range.start),
            _ => {
                let fetched = fetch(&page.hash)?;
                let bytes = fetched.as_ref();
                if hashes_checked {
                    check_length(page, &range, bytes)?;
                } else {
                    verify_page(page, &range, bytes)?;
                }
                dest[range.clone()].copy_from_slice(bytes);
                first_at.entry(page.hash).or_insert(range);
            }
        }
    }
    if !dest_is_zero {
        zero_pages(&mut dest[zero_from..], page_bytes);
    }
    Ok(())
}

/// Zero the pages of `page_bytes` of `dest` that meet a range of
/// `maybe_nonzero` (byte ranges; `dest` is known to be zero elsewhere) and
/// that `keep` (by page index) does not name, writing only pages that are
/// not zero already. A page outside those ranges is not even read: a fresh
/// instance's untouched page costs a fault to read.
pub fn zero_pages_except(
    dest: &mut [u8],
    page_bytes: usize,
    maybe_nonzero: &[Range<usize>],
    keep: impl Fn(usize) -> bool,
) {
    assert!(page_bytes > 0);
    let len = dest.len();
    for range in maybe_nonzero {
        for index in range.start / page_bytes..range.end.min(len).div_ceil(page_bytes) {
            let page = &mut dest[index * page_bytes..((index + 1) * page_bytes).min(len)];
            if !keep(index) && !is_zero(page) {
                page.fill(0);
            }
        }
    }
}

/// Zero `bytes` page by page, writing only pages that are not zero already.
pub(super) fn zero_pages(bytes: &mut [u8], page_bytes: usize) {
    for page in bytes.chunks_mut(page_bytes) {
        if !is_zero(page) {
            page.fill(0);
        }
    }
}
