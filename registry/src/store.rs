//! Blob storage: put/get/remove/list of content-addressed bytes.

use std::fs;
use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::atomic::{self, Quarantined, ReadOutcome};
use crate::{Registry, RegistryError, Sha256};

/// Largest blob (and compiled artifact) the registry accepts: 4 GiB, the
/// maximum size of a 32-bit Wasm memory. Bounds memory use on reads and
/// protects against hostile peers.
pub const MAX_BLOB_BYTES: u64 = 4 << 30;

/// Threads [`Registry::put_many`] writes and syncs with.
pub const PUT_MANY_THREADS: usize = 8;

/// How many times [`Registry::get`] re-reads a blob that a concurrent
/// writer healed while we were quarantining it.
const GET_ATTEMPTS: usize = 3;

/// One stored blob, as listed by [`Registry::list_blobs`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobInfo {
    /// The blob's content hash.
    pub hash: Sha256,
    /// Its size on disk in bytes.
    pub size_bytes: u64,
}

/// Reject data over [`MAX_BLOB_BYTES`].
pub(crate) fn check_size(len: usize) -> Result<(), RegistryError> {
    let size = len as u64;
    if size > MAX_BLOB_BYTES {
        return Err(RegistryError::TooLarge {
            size,
            max: MAX_BLOB_BYTES,
        });
    }
    Ok(())
}

impl Registry {
    /// Where the blob `hash` lives: `<root>/blobs/sha256/<2 hex>/<64 hex>`
    /// (the fan-out keeps directories small).
    fn blob_path(&self, hash: &Sha256) -> PathBuf {
        let hex = hash.to_hex();
        self.inner.blobs.join(&hex[..2]).join(hex)
    }

    /// Store `bytes` and return their hash. Idempotent: storing the same
    /// bytes again (from any thread or process) keeps a single copy.
    pub fn put(&self, bytes: &[u8]) -> Result<Sha256, RegistryError> {
        check_size(bytes.len())?;
        let hash = Sha256::of(bytes);
        self.store(&hash, bytes)?;
        Ok(hash)
    }

    /// `bytes` within the size bound and hashing to `hash`, else
    /// [`RegistryError::Corrupt`] naming where the blob would live.
    fn check_blob(&self, hash: &Sha256, bytes: &[u8]) -> Result<(), RegistryError> {
        check_size(bytes.len())?;
        let actual = Sha256::of(bytes);
        if actual != *hash {
            return Err(RegistryError::Corrupt {
                hash: *hash,
                actual,
                path: self.blob_path(hash),
            });
        }
        Ok(())
    }

    /// Store `bytes` only if they hash to `expected` (for blobs fetched
    /// from peers, which are untrusted). On mismatch nothing is stored and
    /// [`RegistryError::Corrupt`] is returned.
    pub fn put_expecting(&self, expected: &Sha256, bytes: &[u8]) -> Result<(), RegistryError> {
        self.check_blob(expected, bytes)?;
        self.store(expected, bytes)?;
        self.page_cache().insert(*expected, bytes);
        Ok(())
    }

    /// Store many small blobs whose hashes the caller vouches for (each is
    /// checked anyway), without an fsync per blob: for snapshot pages a
    /// migration target keeps so a later migration need not send them
    /// again. Every read verifies a blob's hash ([`Registry::get`]), so a
    /// page torn by a crash is caught and treated as missing. Returns how
    /// many were new.
    pub fn put_many_unsynced(&self, blobs: &[(Sha256, &[u8])]) -> Result<usize, RegistryError> {
        let mut added = 0;
        for (hash, bytes) in blobs {
            check_size(bytes.len())?;
            let path = self.blob_path(hash);
            if path.is_file() {
                continue;
            }
            let actual = Sha256::of(bytes);
            if actual != *hash {
                return Err(RegistryError::Corrupt {
                    hash: *hash,
                    actual,
                    path,
                });
            }
            if let Some(dir) = path.parent() {
                if !dir.is_dir() {
                    atomic::ensure_dir(dir)?;
                }
            }
            atomic::write_atomic_unsynced(&self.inner.tmp, &path, bytes)?;
            self.page_cache().insert(*hash, bytes);
            added += 1;
        }
        Ok(added)
    }

    /// [`Registry::put_expecting`] for many blobs, durable when it returns,
    /// with the writes and their fsyncs spread over
    /// [`PUT_MANY_THREADS`] threads: the file system folds fsyncs that
    /// wait at the same time into one journal commit, so 256 page blobs
    /// take about 14 ms here instead of 42 ms one after the other. (One
    /// `syncfs` for all would take 3 ms on an idle disk but flushes every
    /// other writer's dirty data too: 200 ms with 400 MB of it pending.)
    /// Every blob is checked against its hash first; on a mismatch
    /// nothing is written. Returns how many were new.
    pub fn put_many(&self, blobs: &[(Sha256, &[u8])]) -> Result<usize, RegistryError> {
        for (hash, bytes) in blobs {
            self.check_blob(hash, bytes)?;
        }
        let per_thread = blobs.len().div_ceil(PUT_MANY_THREADS).max(1);
        std::thread::scope(|scope| {
            let workers: Vec<_> = blobs
                .chunks(per_thread)
                .map(|part| {
                    scope.spawn(move || {
                        let mut added = 0;
                        for (hash, bytes) in part {
                            added += usize::from(self.store(hash, bytes)?);
                            self.page_cache().insert(*hash, bytes);
                        }
                        Ok::<usize, RegistryError>(added)
                    })
                })
                .collect();
            let mut added = 0;
            for w in workers {
                added += w.join().unwrap_or_else(|p| std::panic::resume_unwind(p))?;
            }
            Ok(added)
        })
    }

    /// Write verified `bytes` under `hash` unless an entry of the same size
    /// is already there (dedup). An existing entry of the wrong size is
    /// corrupt and gets atomically replaced; a same-size corrupt entry is
    /// caught and quarantined by the next [`Registry::get`].
    /// Returns whether it wrote (false: it was there).
    fn store(&self, hash: &Sha256, bytes: &[u8]) -> Result<bool, RegistryError> {
        let path = self.blob_path(hash);
        if let Ok(meta) = fs::metadata(&path) {
            if meta.is_file() && meta.len() == bytes.len() as u64 {
                return Ok(false);
            }
        }
        if let Some(dir) = path.parent() {
            atomic::ensure_dir(dir)?;
        }
        atomic::write_atomic(&self.inner.tmp, &path, &[bytes])?;
        Ok(true)
    }

    /// Read the blob `hash`, verifying its sha256. A mismatch yields
    /// [`RegistryError::Corrupt`] and moves the file to
    /// `<root>/quarantine/`, so later reads report
    /// [`RegistryError::NotFound`] and the blob can be fetched again.
    pub fn get(&self, hash: &Sha256) -> Result<Vec<u8>, RegistryError> {
        let path = self.blob_path(hash);
        let mut last = RegistryError::NotFound(*hash);
        for _ in 0..GET_ATTEMPTS {
            let bytes = match atomic::read_file(&path, MAX_BLOB_BYTES)? {
                ReadOutcome::Missing => return Err(RegistryError::NotFound(*hash)),
                ReadOutcome::TooLarge(size) => {
                    return Err(RegistryError::TooLarge {
                        size,
                        max: MAX_BLOB_BYTES,
                    })
                }
                ReadOutcome::Bytes(bytes) => bytes,
            };
            let actual = Sha256::of(&bytes);
            if actual == *hash {
                return Ok(bytes);
            }
            let outcome = atomic::quarantine(
                &self.inner.quarantine,
                &path,
                &hash.to_hex(),
                MAX_BLOB_BYTES,
                |b| Sha256::of(b) == *hash,
            );
            let path = match outcome {
                Quarantined::Restored => {
                    last = RegistryError::Corrupt {
                        hash: *hash,
                        actual,
                        path: path.clone(),
                    };
                    continue;
                }
                Quarantined::Moved(to) => to,
                Quarantined::Vanished | Quarantined::Stuck => path,
            };
            return Err(RegistryError::Corrupt {
                hash: *hash,
                actual,
                path,
            });
        }
        Err(last)
    }

    /// Whether a blob file for `hash` exists. Cheap (no read, no
    /// verification): use [`Registry::get`] to actually trust the content.
    pub fn contains(&self, hash: &Sha256) -> bool {
        self.blob_path(hash).is_file()
    }

    /// Size in bytes of the stored blob `hash` (from metadata, not
    /// verified); [`RegistryError::NotFound`] if absent.
    pub fn size_of(&self, hash: &Sha256) -> Result<u64, RegistryError> {
        let path = self.blob_path(hash);
        match fs::metadata(&path) {
            Ok(meta) if meta.is_file() => Ok(meta.len()),
            Ok(_) => Err(RegistryError::NotFound(*hash)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(RegistryError::NotFound(*hash)),
            Err(e) => Err(RegistryError::io(path, e)),
        }
    }

    /// Delete the blob `hash`; `Ok(false)` if it was not stored. Names and
    /// artifacts referring to it are left alone (a later `get` through
    /// them reports `NotFound`). Readers that already opened it finish
    /// their read.
    pub fn remove(&self, hash: &Sha256) -> Result<bool, RegistryError> {
        self.page_cache().remove(hash);
        self.decoded_cache().remove(hash);
        atomic::remove_file(&self.blob_path(hash))
    }

    fn page_cache(&self) -> std::sync::MutexGuard<'_, crate::cache::PageCache> {
        self.inner.pages.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn decoded_cache(&self) -> std::sync::MutexGuard<'_, crate::decoded::DecodedCache> {
        self.inner.decoded.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Blob `hash` decoded by `decode`, which is given the blob's checked
    /// bytes ([`Registry::get`]); a blob over `bytes_max` is
    /// [`RegistryError::TooLarge`], refused before it is read. Served from
    /// memory when this registry decoded it into a `T` lately, by this call
    /// or [`Registry::remember_decoded`] ([`crate::decoded`]): `decode`
    /// must depend on the bytes alone, so that any decoding of them is as
    /// good as another. A failed decoding is not remembered.
    pub fn get_decoded<T, E>(
        &self,
        hash: &Sha256,
        bytes_max: u64,
        decode: impl FnOnce(&[u8]) -> Result<T, E>,
    ) -> Result<std::sync::Arc<T>, E>
    where
        T: std::any::Any + Send + Sync,
        E: From<RegistryError>,
    {
        if let Some(value) = self.decoded_cache().get::<T>(hash) {
            return Ok(value);
        }
        let size = self.size_of(hash)?;
        if size > bytes_max {
            return Err(RegistryError::TooLarge {
                size,
                max: bytes_max,
            }
            .into());
        }
        let bytes = self.get(hash)?;
        let value = std::sync::Arc::new(decode(&bytes)?);
        self.decoded_cache()
            .insert(*hash, bytes.len(), value.clone());
        Ok(value)
    }

    /// Remember `value` as what blob `hash`, `encoded_bytes` long, decodes
    /// to (a writer that stored the blob, or checked it, just now), for
    /// [`Registry::get_decoded`].
    pub fn remember_decoded<T: std::any::Any + Send + Sync>(
        &self,
        hash: &Sha256,
        encoded_bytes: usize,
        value: std::sync::Arc<T>,
    ) {
        self.decoded_cache().insert(*hash, encoded_bytes, value);
    }

    /// [`Registry::get`] for snapshot pages: served from memory when this
    /// registry wrote or read the blob lately ([`crate::cache`]), its hash
    /// checked when it entered the cache; otherwise read, checked, and
    /// cached.
    pub fn get_page(&self, hash: &Sha256) -> Result<std::sync::Arc<[u8]>, RegistryError> {
        if let Some(bytes) = self.page_cache().get(hash) {
            return Ok(bytes);
        }
        let bytes = self.get(hash)?;
        self.page_cache().insert(*hash, &bytes);
        Ok(std::sync::Arc::from(bytes))
    }

    /// Every stored blob with its size, sorted by hash. Files that are not
    /// well-formed blob names (e.g. strays) are ignored; content is not
    /// verified here.
    pub fn list_blobs(&self) -> Result<Vec<BlobInfo>, RegistryError> {
        let top = &self.inner.blobs;
        let mut out = Vec::new();
        for fanout in read_dir(top)? {
            let Some(prefix) = fanout.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let dir = fanout.path();
            if prefix.len() != 2 || !dir.is_dir() {
                continue;
            }
            for entry in read_dir(&dir)? {
                let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                let Some(hash) = Sha256::from_bare_hex(&name) else {
                    continue;
                };
                if hash.to_hex() != name || !name.starts_with(&prefix) {
                    continue;
                }
                match entry.metadata() {
                    Ok(meta) if meta.is_file() => out.push(BlobInfo {
                        hash,
                        size_bytes: meta.len(),
                    }),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {} // removed meanwhile
                    Err(e) => return Err(RegistryError::io(entry.path(), e)),
                }
            }
        }
        out.sort_by_key(|b| b.hash);
        Ok(out)
    }
}

/// List a directory's entries, treating a missing directory as empty and
/// skipping entries that vanish while we iterate.
pub(crate) fn read_dir(dir: &std::path::Path) -> Result<Vec<fs::DirEntry>, RegistryError> {
    let iter = match fs::read_dir(dir) {
        Ok(it) => it,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(RegistryError::io(dir, e)),
    };
    let mut out = Vec::new();
    for entry in iter {
        match entry {
            Ok(entry) => out.push(entry),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(RegistryError::io(dir, e)),
        }
    }
    Ok(out)
}
