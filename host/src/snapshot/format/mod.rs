//! The snapshot format: pure data, no wasmtime.
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
//! # Page size
//!
//! [`PAGE_BYTES`] is 64 KiB (the Wasm page). Measured on the 2-core dev VM
//! (SHA-NI, release build, see `tests.rs`, `bench_split_pages`): sha256
//! runs at ~1.9 GB/s and dominates; its cost per byte is the same for 4 KiB
//! and 64 KiB pages, and the zero check (~20 GB/s) and memcmp (~10 GB/s)
//! are cheap at either size. So CPU does not choose; the size is a trade
//! between finer dedup (4 KiB: sparser memory, smaller increments) and
//! per-page overhead (64 KiB: 16× fewer registry blobs, each a file with
//! two fsyncs; 16× smaller manifests, ~90 bytes of JSON per page, so a
//! full 4 GiB memory fits the 16 MiB header bound, which at 4 KiB it does
//! not). The figures are in the report that accompanies this module; the
//! manifest records its page size, so changing [`PAGE_BYTES`] later does
//! not break stored snapshots.

mod error;
mod file;
mod manifest;
mod pages;
mod store;

pub use error::SnapshotFormatError;
pub use file::{decode_file, encode_file, encode_file_from_memory};
pub use manifest::{GlobalVal, GlobalValue, Manifest, PageRef};
pub use pages::{assemble_into, assemble_memory, page_bytes_for, split_pages, SplitPages};
pub use store::{export_file, fetch_from_registry, import_file, load_manifest, store_snapshot};

/// The snapshot format version this build writes and the only one it reads.
/// Bumped on any change to the manifest fields or the file layout.
pub const FORMAT_VERSION: u32 = 1;

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
