//! The single error type of the registry.

use std::path::PathBuf;

use crate::Sha256;

/// Everything that can go wrong in the registry. Each variant carries
/// enough context (path, hash, name) for an operator to act on the message.
#[derive(thiserror::Error, Debug)]
pub enum RegistryError {
    /// A filesystem operation failed; the message names the path involved.
    #[error("registry I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory the failed operation was about.
        path: PathBuf,
        /// The underlying OS error.
        #[source]
        source: std::io::Error,
    },

    /// No blob with this hash is stored (never stored, removed, or
    /// quarantined after being found corrupt).
    #[error("blob {0} is not in the registry")]
    NotFound(Sha256),

    /// Bytes do not hash to the name they were stored (or offered) under.
    /// Corrupt data is never served: on read the file is moved to
    /// `<root>/quarantine/` and `path` is where it now lives (or the
    /// original path if it could not be moved); for
    /// [`Registry::put_expecting`](crate::Registry::put_expecting) nothing
    /// was written and `path` is where the blob would have been stored.
    #[error("blob {hash} is corrupt: its content hashes to {actual} ({})", path.display())]
    Corrupt {
        /// The hash the data was supposed to have.
        hash: Sha256,
        /// The hash the data actually has.
        actual: Sha256,
        /// See the variant documentation.
        path: PathBuf,
    },

    /// A tag name broke the naming rules (see
    /// [`validate_name`](crate::validate_name)).
    #[error("invalid registry name {name:?}: {reason}")]
    BadName {
        /// The rejected name.
        name: String,
        /// Which rule it broke.
        reason: &'static str,
    },

    /// A syntactically valid name that is not bound to any blob.
    #[error("no registry name {0:?}")]
    UnknownName(String),

    /// Text that should have been a hash (`sha256:<64 hex>` or bare 64
    /// hex) but is not, or a name file whose content is not a hash.
    #[error("invalid sha256 reference {0:?}")]
    BadHash(String),

    /// Data larger than [`MAX_BLOB_BYTES`](crate::MAX_BLOB_BYTES); refused
    /// so a bad peer or file cannot make the node allocate without bound.
    #[error("blob of {size} bytes exceeds the registry limit of {max} bytes")]
    TooLarge {
        /// Size of the offending data in bytes.
        size: u64,
        /// The limit in bytes.
        max: u64,
    },
}

impl RegistryError {
    /// Shorthand for building [`RegistryError::Io`].
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> RegistryError {
        RegistryError::Io {
            path: path.into(),
            source,
        }
    }
}
