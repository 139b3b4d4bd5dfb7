//! A snapshot's memory as its fetched pages, not yet written anywhere.
//!
//! A restore has two places to put a snapshot's memory: the new instance's
//! linear memory, and the kept copy that the process's next capture is
//! taken against. Assembling the whole memory into a buffer first and
//! copying that buffer into the instance writes every byte twice and, on
//! a fresh instance, takes a page fault for every page of memory, zero or
//! not. [`FetchedPages`] holds the listed pages (shared with the
//! registry's page cache, so fetching copies nothing) and writes them
//! where each place needs them: into the instance only the listed pages,
//! plus zeros where the instance is not zero already
//! ([`FetchedPages::write_into`]); into a buffer of its own for the kept
//! copy, later and off the restore's path ([`FetchedPages::to_vec`]).

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use shoal_registry::Sha256;

use super::error::SnapshotFormatError;
use super::manifest::Manifest;
use super::pages::{check_length, memory_len, page_range_usize, zero_pages_except};

/// The non-zero pages of a snapshot's memory, each of the right length and
/// (read from the registry) the right hash.
#[derive(Clone)]
pub struct FetchedPages {
    memory_bytes: usize,
    page_bytes: usize,
    /// Sorted by range, none overlapping, each inside `memory_bytes`
    /// (the manifest's own validation).
    pages: Vec<(Range<usize>, Arc<[u8]>)>,
}

impl std::fmt::Debug for FetchedPages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FetchedPages")
            .field("memory_bytes", &self.memory_bytes)
            .field("page_bytes", &self.page_bytes)
            .field("pages", &self.pages.len())
            .finish()
    }
}

/// Fetch every page `manifest` lists from this node's registry, whose reads
/// check each page's sha256 already ([`shoal_registry::Registry::get_page`],
/// served from its page cache when the page was written or read lately):
/// only lengths are checked here. A repeated page is fetched once.
pub fn fetch_pages_from_registry(
    manifest: &Manifest,
    registry: &shoal_registry::Registry,
) -> Result<FetchedPages, SnapshotFormatError> {
    manifest.validate()?;
    let memory_bytes = memory_len(manifest)?;
    let mut fetch = super::store::fetch_from_registry(registry);
    let mut seen: HashMap<Sha256, Arc<[u8]>> = HashMap::with_capacity(manifest.pages.len());
    let mut pages = Vec::with_capacity(manifest.pages.len());
    for page in &manifest.pages {
        let range = page_range_usize(manifest, page.index);
        let bytes = match seen.get(&page.hash) {
            Some(bytes) => bytes.clone(),
            None => {
                let bytes = fetch(&page.hash)?;
                seen.insert(page.hash, bytes.clone());
                bytes
            }
        };
        check_length(page, &range, &bytes)?;
        pages.push((range, bytes));
    }
    Ok(FetchedPages {
        memory_bytes,
        page_bytes: manifest.page_bytes as usize,
        pages,
    })
}

impl FetchedPages {
    /// Bytes of the memory the pages belong to.
    pub fn memory_bytes(&self) -> usize {
        self.memory_bytes
    }

    /// The byte ranges the listed pages cover, adjacent pages merged, in
    /// order.
    pub fn listed_runs(&self) -> Vec<Range<usize>> {
        let mut runs: Vec<Range<usize>> = Vec::new();
        for (range, _) in &self.pages {
            match runs.last_mut() {
                Some(last) if last.end == range.start => last.end = range.end,
                _ => runs.push(range.clone()),
            }
        }
        runs
    }

    /// Make `dest` (exactly [`FetchedPages::memory_bytes`] long) equal to
    /// the snapshot's memory. `dest` is zero outside `maybe_nonzero`
    /// (byte ranges; for a fresh instance: where its data
    /// segments are, or all of its initial memory when those are not
    /// known), so only listed pages are written elsewhere. Unlisted pages
    /// that meet `maybe_nonzero` are zeroed where they are not zero
    /// already: a page that is zero on both sides is only read, never
    /// written, and a page outside it is not even read (a fresh instance's
    /// untouched page costs a fault to read).
    pub fn write_into(
        &self,
        dest: &mut [u8],
        maybe_nonzero: &[Range<usize>],
    ) -> Result<(), SnapshotFormatError> {
        if dest.len() != self.memory_bytes {
            return Err(SnapshotFormatError::MemorySizeMismatch {
                expected: self.memory_bytes as u64,
                got: dest.len() as u64,
            });
        }
        for (range, bytes) in &self.pages {
            dest[range.clone()].copy_from_slice(bytes);
        }
        let page = self.page_bytes;
        zero_pages_except(dest, page, maybe_nonzero, |index| {
            self.pages
                .binary_search_by_key(&(index * page), |(range, _)| range.start)
                .is_ok()
        });
        Ok(())
    }

    /// The snapshot's memory in a buffer of its own. Only the listed pages
    /// are written: the rest of the buffer is left as the allocator's
    /// zeroed memory, which the OS backs only when it is written.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut memory = vec![0u8; self.memory_bytes];
        for (range, bytes) in &self.pages {
            memory[range.clone()].copy_from_slice(bytes);
        }
        memory
    }
}
