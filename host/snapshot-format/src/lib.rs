//! The snapshot format: pure data, no wasmtime (`shoal_runtime::snapshot`
//! captures and restores; this crate only writes down, checks and stores).
//!
//! A snapshot captures a Wasm process blocked in a host call: its linear
//! memory, its mutable globals and its host-side state. This module defines
//! how that is written down, checked and stored; the runtime captures and
//! restores.
//!
//! - [`Manifest`] (`manifest.rs`): everything except page contents —
//!   version, module sha256, pid, parent snapshot, memory size, the list of
//!   non-zero pages by sha256, globals, opaque host state. Its id is the
//!   sha256 of its canonical JSON.
//! - [`split_pages`] / [`assemble_into`] (`pages.rs`): memory to hashed
//!   pages and back. Zero pages are omitted; against a parent snapshot an
//!   unchanged page is found by `memcmp` and keeps its hash unhashed.
//! - [`store_snapshot`] / [`load_manifest`] (`store.rs`): pages and
//!   manifests as registry blobs, deduplicated by hash — a later snapshot
//!   stores only the pages that changed.
//! - [`encode_file`] / [`decode_file`] (`file.rs`): one self-contained,
//!   checksummed file for `shoal snapshot -o FILE`.
//! - [`SnapshotFormatError`] (`error.rs`): one variant per reason a
//!   snapshot is refused; a snapshot is accepted whole or not at all.
//!
//! # Page size: 4 KiB
//!
//! Measured on the 2-core dev VM (SHA-NI, release build, shared with other
//! builds, best of 10; `tests.rs`, `bench_split_pages`):
//!
//! - sha256 (sha2 0.10, SHA-NI): 1.7 GB/s on cached data (as `openssl
//!   speed`), 0.95–1.4 GB/s over 16 MiB; the same per byte for 4, 16 and
//!   64 KiB pages. The zero check and `memcmp` (~14 GB/s) cost little.
//! - So CPU time does not depend on the page size: all pages new, 1 MiB
//!   takes 0.57–0.65 ms and 16 MiB 13–16 ms at every size; unchanged
//!   against a parent, 14 µs and 0.61 ms.
//! - Granularity does: with one byte changed every 400 KiB of 16 MiB, an
//!   increment is 164 KiB at 4 KiB (1.6 ms) against 2.6 MiB at 64 KiB
//!   (2.9 ms). A small real guest touches its stack, heap and data for
//!   every message; at 64 KiB those are most of its non-zero pages, so
//!   increments would be nearly whole snapshots.
//! - The cost of 4 KiB is per page: 95 bytes of manifest per page (2.3 %
//!   of the touched bytes; 392 KB for 16 MiB) and one registry blob per
//!   page. The registry fsyncs each blob twice (~5 ms here), so storing
//!   16 MiB of new pages takes 7–19 s at 4 KiB against 1.5–3 s at 64 KiB.
//!   That belongs to the registry's write path and should be fixed there
//!   (a batched put with one sync), not by coarser pages.
//!
//! Memories over 256 MiB use larger pages (up to 64 KiB), so that a
//! manifest never lists more than [`MAX_PAGES`] pages and always fits
//! [`MAX_HEADER_BYTES`] ([`page_bytes_for`]). The manifest records its page
//! size, so changing [`PAGE_BYTES`] later does not break stored snapshots.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod error;
mod fetched;
mod file;
mod manifest;
mod pages;
mod store;

pub use error::SnapshotFormatError;
pub use fetched::{fetch_pages_from_registry, FetchedPages};
pub use file::{decode_file, decode_stream, encode_file, encode_file_from_memory};
pub use manifest::{BlobRef, GlobalVal, GlobalValue, Manifest, PageRef, MAX_BLOB_RECORD_BYTES};
pub use pages::{
    assemble_into, assemble_memory, page_bytes_for, pages_touched, split_pages,
    split_pages_parallel, split_pages_written, zero_pages_except, SplitPages,
};
pub use store::{
    export_file, fetch_from_registry, import_file, import_stream, load_manifest, store_snapshot,
    store_snapshot_over,
};

/// The snapshot format version this build writes. Bumped on any change to
/// the manifest fields, the host state it carries or the file layout.
///
/// - 1: the first format.
/// - 2: the host state carries the process's monotonic clock reading
///   (`monotonic_ns`), so that its clock never goes back after a restore.
/// - 3: the host state carries the process's calls and monitors (`calls`:
///   its call in progress, monitors, watchers, calls it serves) and queued
///   messages may carry a `tag` (call, reply, monitor, DOWN). Both are
///   optional when read: a version 1 or 2 snapshot restores with no calls
///   and plain messages. A build that reads only up to 2 refuses a
///   version 3 file (it would lose the tags), which is why the number moves.
///   Later in version 3, `calls` may also list pending requests
///   (`requests`, from `send_request`; absent means none). No version
///   change: a process holding one imports `send_request`, which a host
///   without it cannot link, so such an image never restores there.
pub const FORMAT_VERSION: u32 = 3;

/// The oldest format version this build reads: every version from here to
/// [`FORMAT_VERSION`] is read (a version 1 snapshot restores with its
/// monotonic clock starting at zero, as it did before version 2). A
/// snapshot keeps its version when exported again.
pub const FORMAT_VERSION_MIN: u32 = 1;

/// Granularity at which memory is split, hashed, deduplicated and stored:
/// 4 KiB, for every memory up to 256 MiB (see the module docs for why).
/// Larger memories use larger pages, see [`page_bytes_for`].
pub const PAGE_BYTES: usize = 4 * 1024;

/// Most pages a memory is divided into (zero or not): 65,536, so a
/// manifest lists at most that many pages (about 6.5 MB of JSON) and stays
/// under [`MAX_HEADER_BYTES`] for any memory up to 4 GiB.
pub const MAX_PAGES: u64 = 65_536;

/// Smallest page size a manifest may declare (the usual OS page).
pub const MIN_PAGE_BYTES: usize = 4 * 1024;

/// Largest page size a manifest may declare (the Wasm page).
pub const MAX_PAGE_BYTES: usize = 64 * 1024;

/// Largest encoded manifest (file header or registry blob) accepted:
/// 16 MiB, refused before it is read or parsed.
pub const MAX_HEADER_BYTES: u64 = 16 << 20;

/// Largest memory a snapshot may describe: 4 GiB, the most a 32-bit Wasm
/// memory can hold.
pub const MAX_MEMORY_BYTES: u64 = 4 << 30;

/// First 8 bytes of every snapshot file.
pub const FILE_MAGIC: &[u8; 8] = b"SHOALSNP";

#[cfg(test)]
mod tests;
