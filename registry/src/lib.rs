//! `shoal-registry`: a content-addressed (sha256) blob store on disk.
//!
//! The node keeps Wasm modules, compiled artifacts (wasmtime-serialized
//! modules keyed by module hash and engine fingerprint) and, later,
//! snapshot pages here. The crate knows nothing about Wasm or the network;
//! it only guarantees that:
//!
//! * every blob is named by the sha256 of its bytes, checked on write and
//!   re-checked on every read; a corrupt blob is reported, moved to
//!   `<root>/quarantine/` and never served;
//! * writes are atomic (temp file, fsync, rename, fsync dir), so a crash
//!   never leaves a torn blob, name or artifact;
//! * several threads and several OS processes may share one root: all
//!   mutations are single atomic renames or unlinks of immutable files,
//!   so no locks are needed.
//!
//! On-disk layout under the root:
//!
//! ```text
//! blobs/sha256/ab/abcdef…     blob bytes, named by their hash
//! names/<base32 of name>      "sha256:<hex>\n" – a tag pointing at a blob
//! artifacts/<hex of key id>   header + compiled artifact bytes
//! tmp/                        in-flight writes (orphans cleaned by open)
//! quarantine/                 files that failed verification
//! ```
#![cfg_attr(test, allow(clippy::unwrap_used))]
#![warn(missing_docs)]

mod artifacts;
mod atomic;
mod cache;
mod decoded;
mod error;
mod hash;
mod names;
mod store;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use artifacts::ArtifactKey;
pub use cache::{PAGE_CACHE_BLOB_BYTES_MAX, PAGE_CACHE_BYTES_MAX};
pub use decoded::{DECODED_CACHE_BYTES_MAX, DECODED_CACHE_ENTRIES_MAX};
pub use error::RegistryError;
pub use hash::{Sha256, SHA256_PREFIX};
pub use names::{validate_name, MAX_NAME_LEN};
pub use store::{BlobInfo, MAX_BLOB_BYTES, PUT_MANY_THREADS};

/// Handle on a registry directory. Cheap to clone (an `Arc` inside) and
/// `Send + Sync`, so one handle can be shared by all tasks of a node; other
/// processes may open the same root concurrently.
#[derive(Clone, Debug)]
pub struct Registry {
    inner: Arc<Paths>,
}

/// The directories of one registry root (see the crate docs).
#[derive(Debug)]
struct Paths {
    root: PathBuf,
    blobs: PathBuf,
    names: PathBuf,
    artifacts: PathBuf,
    tmp: PathBuf,
    quarantine: PathBuf,
    /// Authenticates compiled artifacts (see [`artifacts`]).
    mac_key: artifacts::MacKey,
    /// Recent snapshot pages, verified ([`cache`]).
    pages: std::sync::Mutex<cache::PageCache>,
    /// Recently decoded blobs ([`decoded`]).
    decoded: std::sync::Mutex<decoded::DecodedCache>,
}

impl Registry {
    /// Open (creating if needed) the registry rooted at `root`, and delete
    /// temp files abandoned by crashed writers.
    pub fn open(root: impl AsRef<Path>) -> Result<Registry, RegistryError> {
        let root = root.as_ref().to_path_buf();
        let tmp = root.join("tmp");
        atomic::ensure_dir(&root)?;
        atomic::ensure_dir(&tmp)?;
        let mac_key = artifacts::MacKey::load_or_create(&root, &tmp)?;
        let paths = Paths {
            blobs: root.join("blobs").join("sha256"),
            names: root.join("names"),
            artifacts: root.join("artifacts"),
            tmp,
            quarantine: root.join("quarantine"),
            mac_key,
            root,
            pages: Default::default(),
            decoded: Default::default(),
        };
        atomic::ensure_dir(&paths.root)?;
        // The registry holds guest memory (snapshot pages) and compiled
        // code: only the node's user may read or change it.
        atomic::restrict_dir(&paths.root)?;
        for dir in [
            &paths.blobs,
            &paths.names,
            &paths.artifacts,
            &paths.tmp,
            &paths.quarantine,
        ] {
            atomic::ensure_dir(dir)?;
        }
        atomic::clean_tmp(&paths.tmp);
        Ok(Registry {
            inner: Arc::new(paths),
        })
    }

    /// The directory this registry lives in.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Turn a user-supplied reference into a hash: `sha256:<hex>` or bare
    /// 64-hex text is parsed as a hash (without checking that the blob is
    /// stored; [`Registry::get`] reports that), anything else is looked up
    /// as a name. Errors: [`RegistryError::BadHash`] for malformed
    /// `sha256:` text, [`RegistryError::BadName`] /
    /// [`RegistryError::UnknownName`] for names.
    pub fn resolve(&self, reference: &str) -> Result<Sha256, RegistryError> {
        if Sha256::looks_like_reference(reference) {
            reference.parse()
        } else {
            self.resolve_name(reference)
        }
    }
}

#[cfg(test)]
mod tests;
