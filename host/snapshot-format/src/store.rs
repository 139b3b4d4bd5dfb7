//! Snapshots in the registry: pages and manifests are plain blobs.
//!
//! A page blob is the raw bytes of one page, named by its sha256, so a page
//! shared by several snapshots (of one process over time, or of processes
//! running the same module) is stored once. A manifest blob is the
//! canonical JSON of the [`Manifest`]; its blob name is the snapshot id.
//! A manifest is only stored once every page it lists is in the registry,
//! so a stored snapshot id is always restorable (until pages are deleted).

use std::collections::HashSet;
use std::ops::Range;
use std::sync::Arc;

use shoal_registry::{Registry, RegistryError, Sha256};

use super::error::SnapshotFormatError;
use super::file::{decode_file, encode_file};
use super::manifest::Manifest;
use super::pages::page_range_usize;
use super::MAX_HEADER_BYTES;

/// Store a snapshot: the `new_pages` (from [`split_pages`](super::split_pages),
/// byte ranges of `memory`) that the registry does not hold yet, then the
/// manifest. Returns the snapshot id ([`Manifest::id`]).
///
/// Nothing is written unless every page the manifest lists is either in
/// `new_pages` or already stored (pages reused from a parent snapshot must
/// still be there), else [`SnapshotFormatError::PageMissing`]; so a stored
/// id is always restorable. Each page written is checked against its hash
/// ([`SnapshotFormatError::PageCorrupt`]). `memory.len()` must equal
/// `memory_bytes`, and each range must be one whole page of the manifest's
/// page size (else `BadHeader`). Pages are written before the manifest, so
/// a crash in between leaves only unreferenced pages.
pub fn store_snapshot(
    registry: &Registry,
    manifest: &Manifest,
    memory: &[u8],
    new_pages: &[(Sha256, Range<usize>)],
) -> Result<Sha256, SnapshotFormatError> {
    store_snapshot_over(registry, manifest, memory, new_pages, &[])
}

/// [`store_snapshot`] of a snapshot incremental over a stored one whose
/// page list is `parent_pages` (sorted by index): a page the manifest
/// lists with the parent's hash at the same index is known to be stored
/// (the parent's store checked it, and pages are never deleted), so only
/// the others are looked up in the registry — one file-system lookup per
/// page was most of the cost of storing a large, mostly unchanged memory.
pub fn store_snapshot_over(
    registry: &Registry,
    manifest: &Manifest,
    memory: &[u8],
    new_pages: &[(Sha256, Range<usize>)],
    parent_pages: &[super::PageRef],
) -> Result<Sha256, SnapshotFormatError> {
    let in_parent = |page: &super::PageRef| {
        parent_pages
            .binary_search_by_key(&page.index, |p| p.index)
            .is_ok_and(|at| parent_pages[at].hash == page.hash)
    };
    manifest.validate()?;
    if memory.len() as u64 != manifest.memory_bytes {
        return Err(SnapshotFormatError::MemorySizeMismatch {
            expected: manifest.memory_bytes,
            got: memory.len() as u64,
        });
    }
    let encoded = manifest.encode();
    if encoded.len() as u64 > MAX_HEADER_BYTES {
        return Err(SnapshotFormatError::TooLarge {
            what: "manifest",
            bytes: encoded.len() as u64,
            max: MAX_HEADER_BYTES,
        });
    }
    let page_bytes = manifest.page_bytes as usize;
    // Refuse before writing anything, so a refused snapshot leaves no
    // orphan pages behind.
    let new_hashes: HashSet<&Sha256> = new_pages.iter().map(|(h, _)| h).collect();
    for page in &manifest.pages {
        if !new_hashes.contains(&page.hash) && !in_parent(page) && !registry.contains(&page.hash) {
            return Err(SnapshotFormatError::PageMissing { hash: page.hash });
        }
    }
    // Its other blobs (volume chunks) are stored by whoever captured them.
    if let Some(b) = manifest.blobs.iter().find(|b| !registry.contains(&b.hash)) {
        return Err(SnapshotFormatError::PageMissing { hash: b.hash });
    }
    // Every range must be a whole page of this manifest's page size (catches
    // a manifest whose `page_bytes` is not the one the memory was split at).
    for (_, range) in new_pages {
        let index = range.start / page_bytes;
        let fits = range.start % page_bytes == 0
            && u32::try_from(index).is_ok_and(|i| {
                u64::from(i) < manifest.page_count() && page_range_usize(manifest, i) == *range
            });
        if !fits {
            return Err(SnapshotFormatError::BadHeader(format!(
                "page range {range:?} is not a page of {page_bytes} bytes of the {}-byte memory",
                memory.len()
            )));
        }
    }
    // All pages, durable (their fsyncs in parallel), then the manifest.
    let pages: Vec<(Sha256, &[u8])> = new_pages
        .iter()
        .map(|(hash, range)| (*hash, &memory[range.clone()]))
        .collect();
    match registry.put_many(&pages) {
        Ok(_) => {}
        Err(RegistryError::Corrupt { hash, actual, .. }) => {
            let index = new_pages
                .iter()
                .find(|(h, _)| *h == hash)
                .and_then(|(_, r)| u32::try_from(r.start / page_bytes).ok())
                .unwrap_or(u32::MAX);
            return Err(SnapshotFormatError::PageCorrupt {
                index,
                expected: hash,
                actual,
            });
        }
        Err(e) => return Err(e.into()),
    }
    Ok(registry.put(&encoded)?)
}

/// Load and validate the manifest of snapshot `id`. Refuses blobs that are
/// not manifests ([`SnapshotFormatError::NotASnapshot`] or `BadHeader`),
/// larger than [`MAX_HEADER_BYTES`] (checked before reading), of another
/// format version, or not in canonical form (so `id` always equals
/// [`Manifest::id`] of the result).
///
/// Served from memory when this registry stored, imported or loaded it
/// lately ([`Registry::get_decoded`]): a restore soon after a checkpoint
/// arrived does not parse its page list again.
pub fn load_manifest(
    registry: &Registry,
    id: &Sha256,
) -> Result<Arc<Manifest>, SnapshotFormatError> {
    let loaded = registry.get_decoded(id, MAX_HEADER_BYTES, |bytes| {
        let manifest = Manifest::decode(bytes)?;
        if manifest.encode() != bytes {
            return Err(SnapshotFormatError::BadHeader(format!(
                "manifest {id} is not in canonical form"
            )));
        }
        Ok(manifest)
    });
    match loaded {
        Err(SnapshotFormatError::Registry(RegistryError::TooLarge { size, max })) => {
            Err(SnapshotFormatError::TooLarge {
                what: "manifest",
                bytes: size,
                max,
            })
        }
        other => other,
    }
}

/// Store `manifest` (checked) in the registry and remember it decoded, for
/// a restore that comes soon ([`load_manifest`]).
fn put_manifest(registry: &Registry, manifest: Manifest) -> Result<Sha256, SnapshotFormatError> {
    let encoded = manifest.encode();
    let id = registry.put(&encoded)?;
    registry.remember_decoded(&id, encoded.len(), Arc::new(manifest));
    Ok(id)
}

/// A page fetcher for [`assemble_into`](super::assemble_into) /
/// [`encode_file`] reading from the registry; an absent page is reported as
/// [`SnapshotFormatError::PageMissing`]. (The registry checks the hash on
/// read; the caller checks it again, which costs one sha256 per page.)
pub fn fetch_from_registry(
    registry: &Registry,
) -> impl FnMut(&Sha256) -> Result<std::sync::Arc<[u8]>, SnapshotFormatError> + '_ {
    move |hash| match registry.get_page(hash) {
        Ok(bytes) => Ok(bytes),
        Err(RegistryError::NotFound(_)) => Err(SnapshotFormatError::PageMissing { hash: *hash }),
        Err(e) => Err(e.into()),
    }
}

/// Import a snapshot file ([`decode_file`], fully verified) into the
/// registry: its pages the registry lacks, then its manifest. Returns the
/// snapshot id. Check the module with [`load_manifest`] and
/// [`Manifest::check_module`] before restoring, or call [`decode_file`]
/// with the expected module first.
pub fn import_file(registry: &Registry, bytes: &[u8]) -> Result<Sha256, SnapshotFormatError> {
    let (manifest, pages) = decode_file(bytes, None)?;
    for page in &manifest.pages {
        if registry.contains(&page.hash) {
            continue;
        }
        if let Some(data) = pages.get(&page.hash) {
            store_page(registry, page.index, &page.hash, data)?;
        }
    }
    for b in &manifest.blobs {
        if let Some(data) = pages.get(&b.hash).filter(|_| !registry.contains(&b.hash)) {
            registry.put_expecting(&b.hash, data)?;
        }
    }
    // Every page the manifest lists was in the (fully verified) file.
    put_manifest(registry, manifest)
}

/// [`import_file`] for a file arriving from `reader`: decoded as it comes
/// ([`super::decode_stream`]), holding at most the header and one page;
/// a file announcing more than `file_bytes_max` bytes is refused at once.
/// Each verified page is stored as it arrives; the manifest, which makes
/// the snapshot exist, only once the whole file's checksum is right.
pub fn import_stream(
    registry: &Registry,
    reader: &mut dyn std::io::Read,
    file_bytes_max: u64,
) -> Result<Sha256, SnapshotFormatError> {
    let manifest = super::decode_stream(
        reader,
        file_bytes_max,
        |page, data| {
            if registry.contains(&page.hash) {
                return Ok(());
            }
            store_page(registry, page.index, &page.hash, data)
        },
        |blob, data| {
            if !registry.contains(&blob.hash) {
                registry.put_expecting(&blob.hash, data)?;
            }
            Ok(())
        },
    )?;
    put_manifest(registry, manifest)
}

/// Export snapshot `id` from the registry as a self-contained file
/// ([`encode_file`]); a page no longer stored is
/// [`SnapshotFormatError::PageMissing`].
pub fn export_file(registry: &Registry, id: &Sha256) -> Result<Vec<u8>, SnapshotFormatError> {
    let manifest = load_manifest(registry, id)?;
    encode_file(&manifest, fetch_from_registry(registry))
}

/// Write one page blob, reporting a hash mismatch as a corrupt page.
fn store_page(
    registry: &Registry,
    index: u32,
    hash: &Sha256,
    bytes: &[u8],
) -> Result<(), SnapshotFormatError> {
    match registry.put_expecting(hash, bytes) {
        Ok(()) => Ok(()),
        Err(RegistryError::Corrupt { actual, .. }) => Err(SnapshotFormatError::PageCorrupt {
            index,
            expected: *hash,
            actual,
        }),
        Err(e) => Err(e.into()),
    }
}
