//! The self-contained file form of a snapshot (`shoal snapshot -o FILE`).
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! offset  size  field
//!      0     8  magic "SHOALSNP"
//!      8     4  format version (u32) = the manifest's format_version
//!     12     4  flags (u32), none defined: must be 0
//!     16     8  total file length in bytes, trailer included (u64)
//!     24     8  bitwise NOT of the total length (u64)
//!     32     4  header length H (u32, ≤ 16 MiB)
//!     36     H  header: the canonical JSON manifest (Manifest::encode)
//!      …        page records, one per distinct page hash, in manifest
//!               order of first use: index (u32), length (u32), bytes
//!      …        blob records, one per manifest `blobs` entry, in order:
//!               length (u32), bytes (none when `blobs` is absent)
//!  len-32   32  sha256 of every byte before it
//! ```
//!
//! The first 32 bytes and the trailer are the *envelope*, kept by every
//! future version, so that any file can be checked before its version is
//! interpreted. The total length tells a truncated file (most common:
//! interrupted copy) from a corrupt one; it is stored twice (plain and
//! inverted) so that damage to the length itself is reported as corruption,
//! not truncation. Pages sharing a hash are stored once: later uses of that
//! hash have no record.
//!
//! Decoding checks, in order: magic, envelope length, truncation, checksum,
//! version, flags, header bounds and validity, module, then each page's
//! length and sha256 — each with its own [`SnapshotFormatError`] variant.

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use shoal_registry::Sha256;

use super::error::SnapshotFormatError;
use super::manifest::{BlobRef, Manifest, PageRef};
use super::pages::{memory_len, page_range_usize, verify_page};
use super::{FILE_MAGIC, FORMAT_VERSION, MAX_HEADER_BYTES};

/// Length of the envelope prefix: magic, version, flags, length, !length.
const ENVELOPE_PREFIX: usize = 32;
/// Offset of the header length field (first field of the v1 body).
const HEADER_LEN_AT: usize = ENVELOPE_PREFIX;
/// Offset of the header.
const HEADER_AT: usize = HEADER_LEN_AT + 4;
/// Length of the trailing checksum.
const CHECKSUM_LEN: usize = 32;
/// Size of a page record before its bytes: index and length.
const RECORD_PREFIX: usize = 8;

/// Encode a snapshot as a self-contained file, fetching each distinct page
/// with `fetch(hash)` (e.g. [`fetch_from_registry`](super::fetch_from_registry)
/// or a map from [`decode_file`]). Every page is checked (length, sha256)
/// before it is written, so a corrupt store never yields a file.
pub fn encode_file<B: AsRef<[u8]>>(
    manifest: &Manifest,
    fetch: impl FnMut(&Sha256) -> Result<B, SnapshotFormatError>,
) -> Result<Vec<u8>, SnapshotFormatError> {
    let fetch = std::cell::RefCell::new(fetch);
    encode_with(
        manifest,
        |page, _| (fetch.borrow_mut())(&page.hash),
        |hash| (fetch.borrow_mut())(hash),
    )
}

/// Encode a snapshot as a file taking page bytes straight from the memory
/// they were split from (`memory.len()` must equal `memory_bytes`): the
/// direct path from a capture to a file, without the registry.
pub fn encode_file_from_memory(
    manifest: &Manifest,
    memory: &[u8],
) -> Result<Vec<u8>, SnapshotFormatError> {
    if memory.len() as u64 != manifest.memory_bytes {
        return Err(SnapshotFormatError::MemorySizeMismatch {
            expected: manifest.memory_bytes,
            got: memory.len() as u64,
        });
    }
    if !manifest.blobs.is_empty() {
        return Err(SnapshotFormatError::BadHeader(
            "a snapshot carrying blobs is encoded from a store (encode_file)".into(),
        ));
    }
    encode_with(
        manifest,
        |_, range| Ok(&memory[range]),
        |_| Ok(&memory[..0]),
    )
}

/// The encoder behind both public forms; `page` gives the bytes of a page
/// (its ref and its range in memory).
fn encode_with<B: AsRef<[u8]>>(
    manifest: &Manifest,
    mut page: impl FnMut(&PageRef, Range<usize>) -> Result<B, SnapshotFormatError>,
    mut blob: impl FnMut(&Sha256) -> Result<B, SnapshotFormatError>,
) -> Result<Vec<u8>, SnapshotFormatError> {
    manifest.validate()?;
    memory_len(manifest)?;
    let header = manifest.encode();
    if header.len() as u64 > MAX_HEADER_BYTES {
        return Err(SnapshotFormatError::TooLarge {
            what: "header",
            bytes: header.len() as u64,
            max: MAX_HEADER_BYTES,
        });
    }
    let mut seen = HashSet::with_capacity(manifest.pages.len());
    let unique: Vec<&PageRef> = manifest
        .pages
        .iter()
        .filter(|p| seen.insert(p.hash))
        .collect();
    let page_bytes: usize = unique
        .iter()
        .map(|p| RECORD_PREFIX + page_range_usize(manifest, p.index).len())
        .sum();
    let mut out = Vec::with_capacity(HEADER_AT + header.len() + page_bytes + CHECKSUM_LEN);
    out.extend_from_slice(FILE_MAGIC);
    // The manifest's own version: an older snapshot keeps its version.
    out.extend_from_slice(&manifest.format_version.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    // The total length and its inverse, filled in below.
    out.extend_from_slice(&[0u8; 16]);
    // Fits: checked against MAX_HEADER_BYTES (16 MiB) above.
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(&header);
    for p in unique {
        let range = page_range_usize(manifest, p.index);
        let fetched = page(p, range.clone())?;
        let bytes = fetched.as_ref();
        verify_page(p, &range, bytes)?;
        out.extend_from_slice(&p.index.to_le_bytes());
        // A page is at most 64 KiB (validated page size).
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(bytes);
    }
    for b in &manifest.blobs {
        let fetched = blob(&b.hash)?;
        let bytes = fetched.as_ref();
        verify_blob(b, bytes)?;
        out.extend_from_slice(&b.bytes.to_le_bytes());
        out.extend_from_slice(bytes);
    }
    let total = (out.len() + CHECKSUM_LEN) as u64;
    out[16..24].copy_from_slice(&total.to_le_bytes());
    out[24..32].copy_from_slice(&(!total).to_le_bytes());
    let checksum = Sha256::of(&out);
    out.extend_from_slice(&checksum.0);
    Ok(out)
}

/// Decode and fully verify a snapshot file: returns the manifest and the
/// bytes of every page it lists, by hash (each checked). With
/// `expected_module`, a snapshot of another module is refused
/// ([`SnapshotFormatError::WrongModule`]) before any page is read.
///
/// Nothing is trusted before the checksum is verified, every length is
/// bounded, and any defect is an error naming it (see the module docs):
/// the result is complete and correct or there is no result.
pub fn decode_file(
    bytes: &[u8],
    expected_module: Option<&Sha256>,
) -> Result<(Manifest, HashMap<Sha256, Vec<u8>>), SnapshotFormatError> {
    let body = check_envelope(bytes)?;
    let mut r = Reader {
        bytes: body,
        pos: 0,
    };
    r.take(FILE_MAGIC.len(), "magic")?;
    let version = r.u32("format version")?;
    if !super::manifest::readable(version) {
        return Err(SnapshotFormatError::UnsupportedVersion {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let flags = r.u32("flags")?;
    if flags != 0 {
        return Err(SnapshotFormatError::BadHeader(format!(
            "unknown flags {flags:#x}"
        )));
    }
    r.take(16, "file length")?;
    let header_len = r.u32("header length")?;
    if u64::from(header_len) > MAX_HEADER_BYTES {
        return Err(SnapshotFormatError::TooLarge {
            what: "header",
            bytes: u64::from(header_len),
            max: MAX_HEADER_BYTES,
        });
    }
    let header = r.take(header_len as usize, "header")?;
    let manifest = Manifest::decode(header)?;
    if manifest.format_version != version {
        return Err(SnapshotFormatError::BadHeader(format!(
            "a version {version} file holds a version {} manifest",
            manifest.format_version
        )));
    }
    if let Some(expected) = expected_module {
        manifest.check_module(expected)?;
    }
    memory_len(&manifest)?;

    let mut pages: HashMap<Sha256, Vec<u8>> = HashMap::with_capacity(manifest.pages.len());
    for p in &manifest.pages {
        if pages.contains_key(&p.hash) {
            continue;
        }
        let index = r.u32("page record")?;
        if index != p.index {
            return Err(SnapshotFormatError::BadHeader(format!(
                "page record for index {index} where index {} was expected",
                p.index
            )));
        }
        let len = r.u32("page record")? as usize;
        let range = page_range_usize(&manifest, p.index);
        if len != range.len() {
            return Err(SnapshotFormatError::PageWrongLength {
                index: p.index,
                expected: range.len() as u64,
                got: len as u64,
            });
        }
        let data = r.take(len, "page data")?;
        verify_page(p, &range, data)?;
        pages.insert(p.hash, data.to_vec());
    }
    for b in &manifest.blobs {
        let len = r.u32("blob record")?;
        check_blob_len(b, len)?;
        let data = r.take(len as usize, "blob data")?;
        verify_blob(b, data)?;
        pages.insert(b.hash, data.to_vec());
    }
    if r.pos != body.len() {
        return Err(SnapshotFormatError::BadHeader(format!(
            "{} unexpected bytes after the last page",
            body.len() - r.pos
        )));
    }
    Ok((manifest, pages))
}

/// Check a blob record's length against its listing.
fn check_blob_len(b: &BlobRef, len: u32) -> Result<(), SnapshotFormatError> {
    if len != b.bytes {
        return Err(SnapshotFormatError::BadHeader(format!(
            "blob {} has {len} bytes where {} were listed",
            b.hash, b.bytes
        )));
    }
    Ok(())
}

/// Check a blob's length and sha256 against its listing.
fn verify_blob(b: &BlobRef, bytes: &[u8]) -> Result<(), SnapshotFormatError> {
    let actual = Sha256::of(bytes);
    if bytes.len() as u64 != u64::from(b.bytes) || actual != b.hash {
        return Err(SnapshotFormatError::BadHeader(format!(
            "blob {} does not match its listing ({} bytes, sha256 {actual})",
            b.hash,
            bytes.len()
        )));
    }
    Ok(())
}

/// Check the envelope (magic, length, checksum) and return the checksummed
/// part, i.e. everything before the trailer.
fn check_envelope(bytes: &[u8]) -> Result<&[u8], SnapshotFormatError> {
    let got = bytes.len();
    let magic_len = got.min(FILE_MAGIC.len());
    if bytes[..magic_len] != FILE_MAGIC[..magic_len] {
        return Err(SnapshotFormatError::NotASnapshot);
    }
    if got < FILE_MAGIC.len() {
        return Err(SnapshotFormatError::Truncated {
            needed: FILE_MAGIC.len(),
            got,
            what: "magic",
        });
    }
    let prefix = bytes
        .get(..ENVELOPE_PREFIX)
        .ok_or(SnapshotFormatError::Truncated {
            needed: ENVELOPE_PREFIX,
            got,
            what: "file prefix",
        })?;
    let total = u64::from_le_bytes(le8(&prefix[16..24]));
    let inverted = u64::from_le_bytes(le8(&prefix[24..32]));
    // A length that disagrees with its inverse is damaged: leave the
    // verdict to the checksum below rather than report a truncation.
    if total == !inverted && total > got as u64 {
        return Err(SnapshotFormatError::Truncated {
            needed: usize::try_from(total).unwrap_or(usize::MAX),
            got,
            what: "snapshot file",
        });
    }
    let min = ENVELOPE_PREFIX + CHECKSUM_LEN;
    if got < min {
        return Err(SnapshotFormatError::Truncated {
            needed: min,
            got,
            what: "checksum",
        });
    }
    let (body, trailer) = bytes.split_at(got - CHECKSUM_LEN);
    let expected = Sha256(le32(trailer));
    let actual = Sha256::of(body);
    if expected != actual {
        return Err(SnapshotFormatError::ChecksumMismatch { expected, actual });
    }
    if total != !inverted || total != got as u64 {
        return Err(SnapshotFormatError::BadHeader(format!(
            "length field says {total} bytes, the file has {got}"
        )));
    }
    Ok(body)
}

/// Copy an 8-byte slice into an array (callers pass exactly 8 bytes).
fn le8(bytes: &[u8]) -> [u8; 8] {
    let mut out = [0u8; 8];
    out.copy_from_slice(bytes);
    out
}

/// Copy a 32-byte slice into an array (callers pass exactly 32 bytes).
fn le32(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(bytes);
    out
}

/// A bounds-checked forward reader over the checksummed body.
struct Reader<'a> {
    /// The body being read.
    bytes: &'a [u8],
    /// Offset of the next unread byte.
    pos: usize,
}

impl<'a> Reader<'a> {
    /// The next `n` bytes, or [`SnapshotFormatError::Truncated`] naming
    /// `what` if the body ends first.
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], SnapshotFormatError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(SnapshotFormatError::Truncated {
                needed: self.pos.saturating_add(n),
                got: self.bytes.len(),
                what,
            });
        };
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    /// The next little-endian `u32`.
    fn u32(&mut self, what: &'static str) -> Result<u32, SnapshotFormatError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// Read exactly `buf.len()` bytes, reporting an early end as truncation of
/// `what` (`at` bytes were read before).
fn read_exact_or_truncated(
    reader: &mut dyn std::io::Read,
    buf: &mut [u8],
    at: u64,
    what: &'static str,
) -> Result<(), SnapshotFormatError> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => {
                return Err(SnapshotFormatError::Truncated {
                    needed: usize::try_from(at).unwrap_or(usize::MAX) + buf.len(),
                    got: usize::try_from(at).unwrap_or(usize::MAX) + filled,
                    what,
                })
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(SnapshotFormatError::BadHeader(format!(
                    "reading the snapshot failed: {e}"
                )))
            }
        }
    }
    Ok(())
}

/// Decode a snapshot file as it arrives from `reader`, holding at most its
/// header and one page at a time: each page is checked (length, sha256)
/// and handed to `page` as soon as it is read, the whole file's checksum
/// at the end. A file whose envelope announces more than `file_bytes_max`
/// bytes is refused after its first 32 bytes. Returns the manifest once
/// everything checked; on any error, the pages handed out so far are
/// content-addressed blobs that no manifest refers to.
pub fn decode_stream(
    reader: &mut dyn std::io::Read,
    file_bytes_max: u64,
    mut page: impl FnMut(&PageRef, &[u8]) -> Result<(), SnapshotFormatError>,
    mut blob: impl FnMut(&BlobRef, &[u8]) -> Result<(), SnapshotFormatError>,
) -> Result<Manifest, SnapshotFormatError> {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    let mut prefix = [0u8; ENVELOPE_PREFIX];
    read_exact_or_truncated(reader, &mut prefix[..FILE_MAGIC.len()], 0, "magic")?;
    if &prefix[..FILE_MAGIC.len()] != FILE_MAGIC {
        return Err(SnapshotFormatError::NotASnapshot);
    }
    read_exact_or_truncated(
        reader,
        &mut prefix[FILE_MAGIC.len()..],
        FILE_MAGIC.len() as u64,
        "file prefix",
    )?;
    hasher.update(prefix);
    let total = u64::from_le_bytes(le8(&prefix[16..24]));
    let inverted = u64::from_le_bytes(le8(&prefix[24..32]));
    if total != !inverted {
        return Err(SnapshotFormatError::BadHeader(
            "the file length field is damaged".into(),
        ));
    }
    if total > file_bytes_max {
        return Err(SnapshotFormatError::TooLarge {
            what: "snapshot file",
            bytes: total,
            max: file_bytes_max,
        });
    }
    let min = (HEADER_AT + CHECKSUM_LEN) as u64;
    if total < min {
        return Err(SnapshotFormatError::BadHeader(format!(
            "length field says {total} bytes, less than the smallest snapshot file ({min})"
        )));
    }
    let version = u32::from_le_bytes([prefix[8], prefix[9], prefix[10], prefix[11]]);
    if version != FORMAT_VERSION {
        return Err(SnapshotFormatError::UnsupportedVersion {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let flags = u32::from_le_bytes([prefix[12], prefix[13], prefix[14], prefix[15]]);
    if flags != 0 {
        return Err(SnapshotFormatError::BadHeader(format!(
            "unknown flags {flags:#x}"
        )));
    }
    // Everything before the checksum, read so far.
    let body_len = total - CHECKSUM_LEN as u64;
    let mut at = ENVELOPE_PREFIX as u64;
    let mut read = |reader: &mut dyn std::io::Read,
                    buf: &mut [u8],
                    what: &'static str|
     -> Result<(), SnapshotFormatError> {
        if at + buf.len() as u64 > body_len {
            return Err(SnapshotFormatError::BadHeader(format!(
                "{what} runs past the length the file announces ({total} bytes)"
            )));
        }
        read_exact_or_truncated(reader, buf, at, what)?;
        hasher.update(&*buf);
        at += buf.len() as u64;
        Ok(())
    };
    let mut word = [0u8; 4];
    read(reader, &mut word, "header length")?;
    let header_len = u32::from_le_bytes(word);
    if u64::from(header_len) > MAX_HEADER_BYTES {
        return Err(SnapshotFormatError::TooLarge {
            what: "header",
            bytes: u64::from(header_len),
            max: MAX_HEADER_BYTES,
        });
    }
    let mut header = vec![0u8; header_len as usize];
    read(reader, &mut header, "header")?;
    let manifest = Manifest::decode(&header)?;
    drop(header);
    memory_len(&manifest)?;
    let mut seen = HashSet::with_capacity(manifest.pages.len());
    let mut data = Vec::with_capacity(manifest.page_bytes as usize);
    for p in &manifest.pages {
        if !seen.insert(p.hash) {
            continue;
        }
        read(reader, &mut word, "page record")?;
        let index = u32::from_le_bytes(word);
        if index != p.index {
            return Err(SnapshotFormatError::BadHeader(format!(
                "page record for index {index} where index {} was expected",
                p.index
            )));
        }
        read(reader, &mut word, "page record")?;
        let len = u32::from_le_bytes(word) as usize;
        let range = page_range_usize(&manifest, p.index);
        if len != range.len() {
            return Err(SnapshotFormatError::PageWrongLength {
                index: p.index,
                expected: range.len() as u64,
                got: len as u64,
            });
        }
        data.resize(len, 0);
        read(reader, &mut data, "page data")?;
        verify_page(p, &range, &data)?;
        page(p, &data)?;
    }
    for b in &manifest.blobs {
        read(reader, &mut word, "blob record")?;
        let len = u32::from_le_bytes(word);
        // Before anything is allocated for it.
        check_blob_len(b, len)?;
        data.resize(len as usize, 0);
        read(reader, &mut data, "blob data")?;
        verify_blob(b, &data)?;
        blob(b, &data)?;
    }
    if at != body_len {
        return Err(SnapshotFormatError::BadHeader(format!(
            "{} unexpected bytes after the last page",
            body_len - at
        )));
    }
    let mut trailer = [0u8; CHECKSUM_LEN];
    read_exact_or_truncated(reader, &mut trailer, at, "checksum")?;
    let expected = Sha256(trailer);
    let actual = Sha256(hasher.finalize().into());
    if expected != actual {
        return Err(SnapshotFormatError::ChecksumMismatch { expected, actual });
    }
    let mut extra = [0u8; 1];
    loop {
        match reader.read(&mut extra) {
            Ok(0) => break,
            Ok(_) => {
                return Err(SnapshotFormatError::BadHeader(format!(
                    "bytes after the {total} the file announces"
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(SnapshotFormatError::BadHeader(format!(
                    "reading the snapshot failed: {e}"
                )))
            }
        }
    }
    Ok(manifest)
}
