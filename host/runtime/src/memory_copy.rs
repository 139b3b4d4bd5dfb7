//! A process's linear memory as of its last capture, kept up to date by
//! copying only the pages written since ([`crate::dirty`]).
//!
//! A capture used to copy all of linear memory into a fresh buffer: at
//! 64 MiB that is tens of ms with the process paused, most of it the page
//! faults of the new buffer. The kept copy is written in place instead —
//! only the pages the guest wrote since the previous capture, plus what
//! the memory grew by — and handed out shared ([`Arc`]), so the process goes
//! on while the snapshot writer hashes it. The next capture writes into the
//! same buffer when no one holds the previous image any more; if someone
//! still does, it copies the buffer first (correct, only slower).
//!
//! Every capture gets a node-wide unique number, and the image says which
//! capture its written ranges are relative to ([`MemoryDelta`]), so a
//! consumer that kept that capture's page hashes (the snapshot store) or
//! bytes (a migration's pre-copy) only looks at the written pages.
//!
//! The price: a process once captured keeps a second copy of its memory
//! for as long as it lives (a checkpointed process is captured every few
//! seconds, so the copy is what makes each of them cheap).

use crate::dirty::{WriteTracker, HOST_PAGE_BYTES};
use crate::image_memory::{ImageMemory, PagedMemory};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// What changed in an image's memory since an earlier capture of the same
/// process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryDelta {
    /// This capture's number (unique on this node; 0: none).
    pub capture: u64,
    /// The capture `written` is relative to; `None`: unknown, every page
    /// may differ.
    pub since: Option<u64>,
    /// Byte ranges of memory written since then (sorted, page-aligned);
    /// bytes past the earlier capture's memory size are included.
    pub written: Vec<Range<usize>>,
    /// Whether writes are tracked from this capture on, so the process's
    /// next capture will say what changed since this one (unless another
    /// capture comes between).
    pub tracked: bool,
    /// Whether this capture copied all of memory: writes were not tracked,
    /// or the kept copy was still held by an earlier image (so it was
    /// copied before the written pages went in). Only the pages written
    /// since the previous capture are copied otherwise.
    pub copied_all: bool,
}

impl MemoryDelta {
    /// A fresh capture number.
    pub fn next_capture() -> u64 {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        NEXT.fetch_add(1, Ordering::Relaxed)
    }

    /// The written ranges relative to capture `earlier`, when this delta
    /// is relative to it.
    pub fn since(&self, earlier: u64) -> Option<&[Range<usize>]> {
        (earlier != 0 && self.since == Some(earlier)).then_some(&self.written[..])
    }
}

/// The kept copy of one process's memory.
///
/// Lives in the process's store data and is dropped only with it — after
/// the instance is dead, before the engine resets its memory slot — so its
/// drop gives the tracked memory's pages back ([`WriteTracker::discard`]);
/// never replace it in a live store.
#[derive(Debug, Default)]
pub struct MemoryCopy {
    copy: Arc<Vec<u8>>,
    /// The copy as a restore's snapshot pages, while their bytes are not
    /// taken yet: `copy` is then empty, and the next capture takes them
    /// (assembled in the background meanwhile, or then).
    paged: Option<Arc<PagedMemory>>,
    tracker: Option<WriteTracker>,
    /// The capture `copy` holds (0: none).
    last: u64,
}

impl Drop for MemoryCopy {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        if let Some(tracker) = self.tracker.take() {
            // SAFETY: a MemoryCopy is dropped only with its store (see the
            // type's documentation): the instance whose memory this is
            // will never run again, and wasmtime zeroes the slot next.
            unsafe { tracker.discard() };
        }
    }
}

impl MemoryCopy {
    /// Copy `memory` as it is now (the process is paused). Returns the
    /// image and what changed since the previous capture.
    pub fn capture(&mut self, memory: &[u8]) -> (Arc<Vec<u8>>, MemoryDelta) {
        let capture = MemoryDelta::next_capture();
        let since = self.update(memory);
        let delta = match since {
            Some((written, held)) => MemoryDelta {
                capture,
                since: Some(self.last),
                written,
                tracked: self.tracker.is_some(),
                copied_all: held,
            },
            None => MemoryDelta {
                capture,
                since: None,
                written: Vec::new(),
                tracked: self.tracker.is_some(),
                copied_all: true,
            },
        };
        self.last = capture;
        debug_assert_eq!(self.copy.len(), memory.len());
        (self.copy.clone(), delta)
    }

    /// Take `image` (what a restore just wrote into `memory`, which equals
    /// it) as the copy of capture `capture`, and track from here. A paged
    /// image's bytes are taken only at the next capture.
    pub fn seed(&mut self, memory: &[u8], image: ImageMemory, capture: u64) {
        debug_assert_eq!(image.len(), memory.len());
        self.tracker = None;
        match image {
            ImageMemory::Bytes(bytes) => {
                self.copy = bytes;
                self.paged = None;
            }
            ImageMemory::Paged(paged) => {
                self.copy = Arc::default();
                self.paged = Some(paged);
            }
        }
        self.last = if capture == 0 {
            MemoryDelta::next_capture()
        } else {
            capture
        };
        self.tracker = WriteTracker::new(memory.as_ptr(), memory.len()).ok();
    }

    /// Bring the copy up to `memory`. Returns the ranges written and
    /// whether the copy was still held by an earlier image (so all of it
    /// was copied first), or `None` when everything was copied from
    /// `memory`.
    fn update(&mut self, memory: &[u8]) -> Option<(Vec<Range<usize>>, bool)> {
        if let Some(paged) = self.paged.take() {
            self.copy = PagedMemory::into_bytes(paged);
        }
        let base = memory.as_ptr() as usize;
        let old_len = self.copy.len();
        let tracked = self
            .tracker
            .as_ref()
            .is_some_and(|t| t.start() == base && t.len() == old_len && old_len <= memory.len());
        if tracked {
            if let Some(mut written) = self.tracker.as_mut().and_then(|t| t.take_written().ok()) {
                let held = Arc::get_mut(&mut self.copy).is_none();
                let copy = Arc::make_mut(&mut self.copy);
                for r in &written {
                    copy[r.clone()].copy_from_slice(&memory[r.clone()]);
                }
                if memory.len() > old_len {
                    copy.extend_from_slice(&memory[old_len..]);
                    written.push(old_len..memory.len());
                    let extended = self.tracker.as_mut().map(|t| t.extend(memory.len()));
                    if !matches!(extended, Some(Ok(()))) {
                        self.tracker = None;
                    }
                }
                return Some((written, held));
            }
        }
        // Everything: into the kept buffer when no one else holds it (no
        // page faults), else a new one.
        self.tracker = None;
        match Arc::get_mut(&mut self.copy) {
            Some(copy) => {
                copy.clear();
                copy.extend_from_slice(memory);
            }
            None => self.copy = Arc::new(memory.to_vec()),
        }
        if base.is_multiple_of(HOST_PAGE_BYTES) {
            self.tracker = WriteTracker::new(memory.as_ptr(), memory.len()).ok();
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn every_capture_equals_memory_and_names_what_changed() {
        // A mapping reserved up front: memory grows in place, as a memory
        // slot's does.
        let pages = 512;
        let mut mapping = crate::dirty::Mapping::new(pages * HOST_PAGE_BYTES);
        let backing = mapping.bytes();
        let mut len = 64 * HOST_PAGE_BYTES;
        let mut copy = MemoryCopy::default();
        let seed = 0xc0_9e1;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let (first, d0) = copy.capture(&backing[..len]);
        assert_eq!(&first[..], &backing[..len]);
        assert_eq!(d0.since, None);
        drop(first);
        let mut last = d0.capture;
        let mut held = None;
        for round in 0..40 {
            for _ in 0..rng.gen_range(0..20) {
                let at = rng.gen_range(0..len);
                backing[at] = rng.gen();
            }
            if rng.gen_bool(0.2) && len < pages * HOST_PAGE_BYTES {
                len += 16 * HOST_PAGE_BYTES; // the memory grew
                let at = len - 1;
                backing[at] = 9;
            }
            let was_held = held.is_some();
            let (image, delta) = copy.capture(&backing[..len]);
            assert_eq!(&image[..], &backing[..len], "seed {seed:#x} round {round}");
            if WriteTracker::supported() {
                assert_eq!(delta.since, Some(last), "round {round}");
                assert_eq!(delta.copied_all, was_held, "round {round}");
            }
            drop(held.take());
            last = delta.capture;
            // Sometimes a consumer keeps the image across the next capture.
            held = rng.gen_bool(0.3).then_some(image);
        }
        drop(held);
    }

    /// `memory`'s pages, stored in a fresh registry and fetched back as a
    /// restore fetches them.
    fn paged(memory: &[u8]) -> (tempfile::TempDir, Arc<PagedMemory>) {
        use shoal_snapshot_format as format;
        let dir = tempfile::tempdir().unwrap();
        let registry = shoal_registry::Registry::open(dir.path()).unwrap();
        let split = format::split_pages(memory, None);
        for (hash, range) in &split.new_pages {
            registry
                .put_expecting(hash, &memory[range.clone()])
                .unwrap();
        }
        let manifest = format::Manifest {
            format_version: format::FORMAT_VERSION,
            module: shoal_registry::Sha256::of(b"module"),
            pid: 1,
            parent: None,
            created_unix_ms: 0,
            memory_bytes: memory.len() as u64,
            page_bytes: split.page_bytes,
            pages: split.pages,
            globals: Vec::new(),
            state: serde_json::Value::Null,
            blobs: Vec::new(),
        };
        let pages = format::fetch_pages_from_registry(&manifest, &registry).unwrap();
        (dir, Arc::new(PagedMemory::new(pages)))
    }

    #[test]
    fn a_copy_seeded_with_a_snapshots_pages_captures_like_one_seeded_with_its_bytes() {
        let pages = 256;
        let mut mapping = crate::dirty::Mapping::new(pages * HOST_PAGE_BYTES);
        let backing = mapping.bytes();
        let len = 128 * HOST_PAGE_BYTES;
        let seed = 0x5eed_c0b1;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for held_by_assembler in [false, true] {
            // Non-zero pages with zero pages between them, as a restore
            // writes them (a dropped copy gave the pages back: written
            // again each round).
            for page in 0..128 {
                let bytes = &mut backing[page * HOST_PAGE_BYTES..][..HOST_PAGE_BYTES];
                match page % 3 {
                    0 => bytes.fill(0),
                    _ => rng.fill(bytes),
                }
            }
            let (_dir, image) = paged(&backing[..len]);
            // An assembly in the background still holding the pages when
            // the capture comes (or not): the copy is right either way.
            let assembler = held_by_assembler.then(|| image.clone());
            let mut copy = MemoryCopy::default();
            let restored = MemoryDelta::next_capture();
            copy.seed(&backing[..len], ImageMemory::Paged(image), restored);
            for _ in 0..10 {
                let at = rng.gen_range(0..len);
                backing[at] = rng.gen();
            }
            let (captured, delta) = copy.capture(&backing[..len]);
            assert_eq!(&captured[..], &backing[..len], "seed {seed:#x}");
            if WriteTracker::supported() {
                assert_eq!(delta.since, Some(restored));
                assert!(delta.written.len() <= 10, "{delta:?}");
            }
            drop(assembler);
        }
    }

    #[test]
    fn a_delta_is_relative_to_exactly_one_earlier_capture() {
        let d = MemoryDelta {
            capture: 5,
            since: Some(4),
            written: vec![0..4096, 8192..12288],
            tracked: true,
            copied_all: false,
        };
        assert_eq!(d.since(4), Some(&[0..4096, 8192..12288][..]));
        assert_eq!(d.since(3), None);
        assert_eq!(d.since(0), None);
    }
}
