//! The one error type of module preparation.

/// Why a module could not be prepared.
///
/// Every variant carries enough text to be shown to the person who uploaded the module:
/// what is wrong and, for malformed input, where.
#[derive(thiserror::Error, Debug, serde::Serialize, serde::Deserialize)]
pub enum PrepareError {
    /// The bytes are not a valid core module for the feature set Shoal runs with
    /// (wasmtime 46's defaults, see [`crate::wasm_features`]).
    #[error("invalid module at byte offset {offset:#x}: {message}")]
    Invalid {
        /// Byte offset into the input where the problem was found.
        offset: usize,
        /// What the validator reported.
        message: String,
    },
    /// The module is valid WebAssembly but uses something Shoal cannot snapshot or
    /// that Asyncify cannot instrument (`what` names it).
    #[error("unsupported module: {what}")]
    Unsupported {
        /// The unsupported construct, in words.
        what: String,
    },
    /// The caller passed options that cannot be honoured (e.g. an optimisation level above 4).
    #[error("invalid preparation options: {0}")]
    InvalidOptions(String),
    /// Asyncify failed to read, instrument or write the module (an internal error).
    #[error("asyncify instrumentation failed: {0}")]
    Asyncify(String),
    /// Re-encoding the instrumented module (export or name section) failed, or the
    /// result did not validate.
    #[error("re-encoding the prepared module failed: {0}")]
    Encode(String),
    /// Preparation took longer than the node allows (it runs in a worker
    /// process, killed at the bound).
    #[error("preparation took longer than {timeout_ms} ms and was stopped (the module is too complex to prepare here)")]
    TimedOut {
        /// The bound.
        timeout_ms: u64,
    },
    /// The worker process could not run, died, or answered nonsense.
    #[error("the preparation worker failed: {0}")]
    Worker(String),
}

impl PrepareError {
    /// Builds an [`PrepareError::Unsupported`] from anything printable.
    pub(crate) fn unsupported(what: impl Into<String>) -> Self {
        PrepareError::Unsupported { what: what.into() }
    }

    /// Converts a wasmparser error about the *input* module into [`PrepareError::Invalid`].
    pub(crate) fn invalid(err: &wasmparser::BinaryReaderError) -> Self {
        PrepareError::Invalid {
            offset: err.offset(),
            message: err.message().to_string(),
        }
    }
}
