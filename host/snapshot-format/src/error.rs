//! The single error type of the snapshot format.
//!
//! Every way a snapshot can be refused has its own variant, so a user (and a
//! test) can tell a truncated download from a flipped bit, a snapshot from a
//! newer Shoal, or a snapshot of a different program. A snapshot that fails
//! any check is refused as a whole: nothing is ever half-restored.

use shoal_registry::{RegistryError, Sha256};

/// Why a snapshot could not be encoded, decoded, stored or loaded.
#[derive(thiserror::Error, Debug)]
pub enum SnapshotFormatError {
    /// The bytes do not start with the snapshot magic `SHOALSNP` (or the
    /// registry blob is not a snapshot manifest): this is some other kind of
    /// file.
    #[error("not a Shoal snapshot (bad magic or not a manifest)")]
    NotASnapshot,

    /// The data ends before a part that it announces: typically an
    /// interrupted download or copy. `what` names the part that is cut.
    #[error("snapshot is truncated: {what} needs {needed} bytes, only {got} present")]
    Truncated {
        /// Bytes needed up to the end of that part.
        needed: usize,
        /// Bytes actually present.
        got: usize,
        /// Which part is cut short (e.g. `"snapshot file"`, `"magic"`).
        what: &'static str,
    },

    /// Written by a Shoal whose snapshot format this build does not read.
    #[error(
        "snapshot format version {found} is not supported (this build reads versions {} to {supported})",
        super::FORMAT_VERSION_MIN
    )]
    UnsupportedVersion {
        /// The version found in the snapshot.
        found: u32,
        /// The newest version this build reads (and the one it writes).
        supported: u32,
    },

    /// The trailing sha256 over the whole file does not match its content:
    /// some byte was altered (disk or transfer corruption, tampering).
    #[error("snapshot checksum mismatch: file says {expected}, content hashes to {actual}")]
    ChecksumMismatch {
        /// The checksum stored in the file.
        expected: Sha256,
        /// The checksum of the bytes actually present.
        actual: Sha256,
    },

    /// The bytes of one memory page do not hash to what the manifest says.
    #[error("memory page {index} is corrupt: expected {expected}, content hashes to {actual}")]
    PageCorrupt {
        /// Index of the page (in units of the manifest's `page_bytes`).
        index: u32,
        /// The hash the manifest records for the page.
        expected: Sha256,
        /// The hash of the bytes actually found.
        actual: Sha256,
    },

    /// A page has the right hash but not the length its position requires
    /// (only possible with a crafted manifest that reuses one hash for pages
    /// of different lengths, e.g. a full page and a short last page).
    #[error("memory page {index} has {got} bytes, its position needs {expected}")]
    PageWrongLength {
        /// Index of the page.
        index: u32,
        /// The length the page must have at that index.
        expected: u64,
        /// The length found.
        got: u64,
    },

    /// A page the manifest refers to is neither in the file nor in the
    /// registry (e.g. the earlier snapshot it shares pages with was deleted).
    #[error("memory page {hash} is missing")]
    PageMissing {
        /// Hash of the missing page.
        hash: Sha256,
    },

    /// The snapshot was taken of a different module than the one expected.
    #[error("snapshot is of module {snapshot}, expected module {expected}")]
    WrongModule {
        /// The module the snapshot records.
        snapshot: Sha256,
        /// The module the caller expected.
        expected: Sha256,
    },

    /// The manifest is well delimited and checksummed but its content is
    /// invalid (unparsable JSON, unsorted or out-of-range pages, unknown
    /// flags…); the message says what is wrong. With a valid checksum this
    /// means the writer was faulty or hostile.
    #[error("invalid snapshot header: {0}")]
    BadHeader(String),

    /// A memory buffer handed to this module does not have the size the
    /// manifest records (a caller bug, not bad input data).
    #[error("memory buffer is {got} bytes, the snapshot's memory is {expected} bytes")]
    MemorySizeMismatch {
        /// The manifest's `memory_bytes`.
        expected: u64,
        /// The length of the buffer given.
        got: u64,
    },

    /// The registry failed (I/O error, corrupt blob, unknown hash…).
    #[error(transparent)]
    Registry(#[from] RegistryError),

    /// A size announced or produced exceeds a hard bound; refused before any
    /// allocation so that a hostile file cannot exhaust memory.
    #[error("{what} of {bytes} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// What is too large (e.g. `"header"`, `"memory"`).
        what: &'static str,
        /// Its size in bytes.
        bytes: u64,
        /// The limit in bytes.
        max: u64,
    },
}
