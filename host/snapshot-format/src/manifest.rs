//! The [`Manifest`]: everything in a snapshot except page contents.
//!
//! The manifest is small (about 90 bytes per non-zero page plus the host
//! state), human readable (JSON) and content addressed: its id is the sha256
//! of its canonical encoding, which is also its name in the registry. It
//! lists *every* non-zero page of the memory by hash, so one manifest is
//! enough to restore a process; `parent` only records which earlier snapshot
//! the pages were diffed against (pages that did not change keep their hash
//! and are therefore shared, not copied).

use serde::{Deserialize, Serialize};
use shoal_registry::Sha256;

use super::error::SnapshotFormatError;
use super::{
    FORMAT_VERSION, FORMAT_VERSION_MIN, MAX_HEADER_BYTES, MAX_MEMORY_BYTES, MAX_PAGES,
    MAX_PAGE_BYTES, MIN_PAGE_BYTES,
};

/// Everything a snapshot holds except the bytes of its memory pages.
///
/// Serialized as JSON (see [`Manifest::encode`]); unknown fields are refused
/// so that a reader never silently drops state a newer writer recorded (a
/// newer writer bumps [`FORMAT_VERSION`] instead).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Format of this manifest and of the file around it; read when from
    /// [`FORMAT_VERSION_MIN`] to [`FORMAT_VERSION`].
    pub format_version: u32,
    /// sha256 of the (un-prepared) module the process runs; the module
    /// itself is fetched from the registry, never stored in the snapshot.
    pub module: Sha256,
    /// The captured process's pid (pids are location free, so the process
    /// keeps it when restored elsewhere).
    pub pid: u64,
    /// Id of the earlier snapshot of the same process this one was diffed
    /// against, if any. Informational for restore (the page list below is
    /// complete); used for the memcmp fast path of [`split_pages`] and to
    /// tell which snapshots share pages.
    ///
    /// [`split_pages`]: super::split_pages
    pub parent: Option<Sha256>,
    /// Wall-clock time of the capture, milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// Size of the linear memory at capture, in bytes (at most 4 GiB).
    pub memory_bytes: u64,
    /// Granularity of `pages`, in bytes: [`page_bytes_for`] `memory_bytes`
    /// when written by this build (set it from [`SplitPages::page_bytes`]).
    /// Recorded so the format describes itself and the choice can change
    /// without breaking old snapshots; any power of two from 4 KiB to
    /// 64 KiB is read, provided the memory has at most [`MAX_PAGES`] pages.
    ///
    /// [`page_bytes_for`]: super::page_bytes_for
    /// [`SplitPages::page_bytes`]: super::SplitPages::page_bytes
    pub page_bytes: u32,
    /// The non-zero pages, sorted by index, no index twice. Pages not listed
    /// are all zeros. The last page may be shorter than `page_bytes` when
    /// `memory_bytes` is not a multiple of it.
    pub pages: Vec<PageRef>,
    /// The module's mutable globals (exported by module preparation), by
    /// export name: `__stack_pointer`, the Asyncify globals and any others.
    pub globals: Vec<GlobalValue>,
    /// Host-side process state (mailbox, timer, WASI, limits, Asyncify
    /// buffer, pending call…), opaque to this module: the runtime defines
    /// and validates it.
    pub state: serde_json::Value,
    /// Other content-addressed blobs the state refers to (the chunks of
    /// the process's private volumes), each once, in the order the file
    /// form stores them. Absent when empty, so a snapshot without any
    /// encodes exactly as before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blobs: Vec<BlobRef>,
}

/// A blob a snapshot carries besides its pages: its hash and length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlobRef {
    /// sha256 of its bytes (its registry name).
    pub hash: Sha256,
    /// Its length in bytes (at most [`MAX_BLOB_RECORD_BYTES`]).
    pub bytes: u32,
}

/// The longest blob a snapshot may carry besides its pages.
pub const MAX_BLOB_RECORD_BYTES: u32 = 1 << 20;

/// One non-zero page of memory: where it is and the sha256 of its bytes
/// (which is also its registry blob name).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageRef {
    /// Page index: the page covers bytes `index * page_bytes ..` of memory.
    pub index: u32,
    /// sha256 of the page's bytes.
    pub hash: Sha256,
}

/// The value of one mutable global, named by its export.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalValue {
    /// The export name module preparation gave the global.
    pub export: String,
    /// Its value at capture.
    pub value: GlobalVal,
}

/// A Wasm global value. Floats are kept as their bit patterns so that NaN
/// payloads and negative zero survive exactly (JSON numbers would not).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GlobalVal {
    /// An `i32` global.
    I32(i32),
    /// An `i64` global.
    I64(i64),
    /// An `f32` global, as `f32::to_bits`.
    F32(u32),
    /// An `f64` global, as `f64::to_bits`.
    F64(u64),
}

impl Manifest {
    /// The canonical encoding: compact JSON with fields in declaration
    /// order. It is the manifest's registry blob, the header of the file
    /// form, and what [`Manifest::id`] hashes.
    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain structs, strings, integers and a
        // `serde_json::Value` (whose map keys are always strings) into a
        // Vec cannot fail.
        serde_json::to_vec(self).expect("a Manifest always serializes to JSON")
    }

    /// The snapshot id: sha256 of [`Manifest::encode`], equal to the hash
    /// under which [`store_snapshot`](super::store_snapshot) stores it.
    pub fn id(&self) -> Sha256 {
        Sha256::of(&self.encode())
    }

    /// Parse and [`validate`](Manifest::validate) an encoded manifest.
    /// Input longer than [`MAX_HEADER_BYTES`] is refused unread.
    pub fn decode(bytes: &[u8]) -> Result<Manifest, SnapshotFormatError> {
        if bytes.len() as u64 > MAX_HEADER_BYTES {
            return Err(SnapshotFormatError::TooLarge {
                what: "manifest",
                bytes: bytes.len() as u64,
                max: MAX_HEADER_BYTES,
            });
        }
        if bytes.first() != Some(&b'{') {
            return Err(SnapshotFormatError::NotASnapshot);
        }
        let manifest: Manifest = serde_json::from_slice(bytes).map_err(|e| {
            // Report a newer version as such even if its fields differ.
            match serde_json::from_slice::<VersionOnly>(bytes) {
                Ok(v) if !readable(v.format_version) => SnapshotFormatError::UnsupportedVersion {
                    found: v.format_version,
                    supported: FORMAT_VERSION,
                },
                _ => SnapshotFormatError::BadHeader(format!("manifest is not valid: {e}")),
            }
        })?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Check every bound a hostile writer controls: the version (from
    /// [`FORMAT_VERSION_MIN`] to [`FORMAT_VERSION`]), the page
    /// size, `memory_bytes` ≤ 4 GiB, at most [`MAX_PAGES`] pages, pages sorted with no index twice and
    /// every index inside the memory (so the page count is at most
    /// `memory_bytes / page_bytes` rounded up), and no global named twice.
    pub fn validate(&self) -> Result<(), SnapshotFormatError> {
        if !readable(self.format_version) {
            return Err(SnapshotFormatError::UnsupportedVersion {
                found: self.format_version,
                supported: FORMAT_VERSION,
            });
        }
        let mut blobs = std::collections::HashSet::with_capacity(self.blobs.len());
        for b in &self.blobs {
            if b.bytes > MAX_BLOB_RECORD_BYTES || !blobs.insert(b.hash) {
                return Err(SnapshotFormatError::BadHeader(format!(
                    "blob {} is listed twice or is over {MAX_BLOB_RECORD_BYTES} bytes",
                    b.hash
                )));
            }
        }
        let page = self.page_bytes;
        if !page.is_power_of_two() || !(MIN_PAGE_BYTES..=MAX_PAGE_BYTES).contains(&(page as usize))
        {
            return Err(SnapshotFormatError::BadHeader(format!(
                "page size {page} is not a power of two between {MIN_PAGE_BYTES} and {MAX_PAGE_BYTES}"
            )));
        }
        if self.memory_bytes > MAX_MEMORY_BYTES {
            return Err(SnapshotFormatError::TooLarge {
                what: "memory",
                bytes: self.memory_bytes,
                max: MAX_MEMORY_BYTES,
            });
        }
        let page_count = self.page_count();
        if page_count > MAX_PAGES {
            return Err(SnapshotFormatError::BadHeader(format!(
                "{page_count} pages of {page} bytes exceed the limit of {MAX_PAGES} pages"
            )));
        }
        if self.pages.len() as u64 > page_count {
            return Err(SnapshotFormatError::BadHeader(format!(
                "{} pages listed, a memory of {} bytes has only {page_count}",
                self.pages.len(),
                self.memory_bytes
            )));
        }
        let mut previous: Option<u32> = None;
        for p in &self.pages {
            if u64::from(p.index) >= page_count {
                return Err(SnapshotFormatError::BadHeader(format!(
                    "page index {} is outside the memory ({page_count} pages)",
                    p.index
                )));
            }
            if let Some(prev) = previous {
                if p.index <= prev {
                    return Err(SnapshotFormatError::BadHeader(format!(
                        "page index {} follows {prev}: pages must be sorted, each index once",
                        p.index
                    )));
                }
            }
            previous = Some(p.index);
        }
        let mut names: Vec<&str> = self.globals.iter().map(|g| g.export.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(SnapshotFormatError::BadHeader(format!(
                "global {:?} is listed twice",
                w[0]
            )));
        }
        Ok(())
    }

    /// Refuse the snapshot unless it was taken of module `expected`.
    pub fn check_module(&self, expected: &Sha256) -> Result<(), SnapshotFormatError> {
        if self.module != *expected {
            return Err(SnapshotFormatError::WrongModule {
                snapshot: self.module,
                expected: *expected,
            });
        }
        Ok(())
    }

    /// Number of pages (zero or not) the memory is divided into:
    /// `memory_bytes / page_bytes` rounded up. Only meaningful once
    /// `page_bytes` is validated non-zero (returns 0 otherwise).
    pub fn page_count(&self) -> u64 {
        match u64::from(self.page_bytes) {
            0 => 0,
            page => self.memory_bytes.div_ceil(page),
        }
    }

    /// The byte range of page `index` in memory (the last page may be
    /// short). Assumes a validated manifest and an index below
    /// [`Manifest::page_count`]; the range is clamped to `memory_bytes`.
    pub fn page_range(&self, index: u32) -> std::ops::Range<u64> {
        let page = u64::from(self.page_bytes);
        let start = (u64::from(index) * page).min(self.memory_bytes);
        let end = (start + page).min(self.memory_bytes);
        start..end
    }
}

/// Just the version of a manifest, to report a newer format as
/// [`SnapshotFormatError::UnsupportedVersion`] rather than as a parse error.
#[derive(Deserialize)]
struct VersionOnly {
    format_version: u32,
}

/// True for the format versions this build reads.
pub(super) fn readable(version: u32) -> bool {
    (FORMAT_VERSION_MIN..=FORMAT_VERSION).contains(&version)
}
