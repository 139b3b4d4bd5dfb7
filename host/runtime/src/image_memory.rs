//! A captured process's linear memory, in the form its source gave it.
//!
//! A capture has the bytes at hand (its kept copy, [`crate::memory_copy`]),
//! and so does an arrival, assembled as its pages came. A restore from a
//! stored snapshot has the snapshot's non-zero pages, read from the
//! registry ([`FetchedPages`]): writing those straight into the new
//! instance, and building the bytes for the process's kept copy only
//! afterwards, in the background, keeps an assembly buffer and a second
//! copy of every byte off the restore's path
//! ([`crate::process`]'s `apply_image`).

use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use shoal_snapshot_format::FetchedPages;

/// The linear memory of a [`crate::process::CapturedProcess`].
#[derive(Clone, Debug)]
pub enum ImageMemory {
    /// All of its bytes.
    Bytes(Arc<Vec<u8>>),
    /// Its non-zero pages, from a stored snapshot.
    Paged(Arc<PagedMemory>),
}

/// A memory known by its pages, whose bytes are assembled once, when first
/// asked for.
#[derive(Debug)]
pub struct PagedMemory {
    pages: FetchedPages,
    bytes: OnceLock<Arc<Vec<u8>>>,
}

impl PagedMemory {
    /// The pages of a memory.
    pub fn new(pages: FetchedPages) -> PagedMemory {
        PagedMemory {
            pages,
            bytes: OnceLock::new(),
        }
    }

    /// The pages it was made of.
    pub fn pages(&self) -> &FetchedPages {
        &self.pages
    }

    /// Its bytes: assembled by the first caller; a second one waits for
    /// that assembly instead of doing it again.
    pub fn bytes(&self) -> Arc<Vec<u8>> {
        self.bytes
            .get_or_init(|| Arc::new(self.pages.to_vec()))
            .clone()
    }

    /// Its bytes, the buffer given away unshared when `paged` is the last
    /// handle (so the taker can write to it without a copy).
    pub fn into_bytes(paged: Arc<PagedMemory>) -> Arc<Vec<u8>> {
        match Arc::try_unwrap(paged) {
            Ok(memory) => {
                let PagedMemory { pages, bytes } = memory;
                bytes
                    .into_inner()
                    .unwrap_or_else(|| Arc::new(pages.to_vec()))
            }
            Err(shared) => shared.bytes(),
        }
    }
}

impl ImageMemory {
    /// Bytes of the memory.
    pub fn len(&self) -> usize {
        match self {
            ImageMemory::Bytes(bytes) => bytes.len(),
            ImageMemory::Paged(paged) => paged.pages.memory_bytes(),
        }
    }

    /// Whether the memory has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All of its bytes (assembled from its pages the first time, for a
    /// paged memory).
    pub fn bytes(&self) -> Arc<Vec<u8>> {
        match self {
            ImageMemory::Bytes(bytes) => bytes.clone(),
            ImageMemory::Paged(paged) => paged.bytes(),
        }
    }

    /// All of its bytes, giving up this handle (a paged memory's buffer
    /// unshared when this was its last handle).
    pub fn into_bytes(self) -> Arc<Vec<u8>> {
        match self {
            ImageMemory::Bytes(bytes) => bytes,
            ImageMemory::Paged(paged) => PagedMemory::into_bytes(paged),
        }
    }
}

impl From<Vec<u8>> for ImageMemory {
    fn from(bytes: Vec<u8>) -> ImageMemory {
        ImageMemory::Bytes(Arc::new(bytes))
    }
}

/// Written as its bytes, whatever its form.
impl Serialize for ImageMemory {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.bytes().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ImageMemory {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ImageMemory, D::Error> {
        Vec::<u8>::deserialize(deserializer).map(ImageMemory::from)
    }
}
