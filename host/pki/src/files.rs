//! PKI files on disk: layout, atomic writes, and permission checks.
//!
//! Layout under the node's data directory:
//!
//! ```text
//! <data>/pki/           mode 0700
//! <data>/pki/ca.key     mode 0600  (only on the node that ran `cluster init`)
//! <data>/pki/ca.crt     mode 0644
//! <data>/pki/node.key   mode 0600
//! <data>/pki/node.crt   mode 0644
//! ```
//!
//! Every write goes to a temporary file in the same directory, created with
//! its final mode (never chmod-ed afterwards, so a key is never briefly
//! world-readable), fsync-ed, then moved into place: by `rename` when
//! replacing, by `link` when the target must not exist (so two racing
//! `cluster init`s cannot both win). The directory is fsync-ed afterwards.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{PkiError, Result};

/// Mode of private key files: owner read/write only.
pub const KEY_MODE: u32 = 0o600;
/// Mode of certificate files: world-readable (they are public).
pub const CERT_MODE: u32 = 0o644;
/// Mode of the `pki` directory.
pub const DIR_MODE: u32 = 0o700;

/// Paths of the PKI files of one node, derived from its data directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PkiPaths {
    dir: PathBuf,
}

impl PkiPaths {
    /// The layout under `data_dir` (`<data_dir>/pki/...`). Touches nothing.
    pub fn new(data_dir: &Path) -> Self {
        PkiPaths {
            dir: data_dir.join("pki"),
        }
    }

    /// `<data>/pki`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA private key (PKCS#8 PEM).
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }

    /// The CA certificate (PEM).
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// This node's private key (PKCS#8 PEM), generated locally.
    pub fn node_key(&self) -> PathBuf {
        self.dir.join("node.key")
    }

    /// This node's certificate (PEM) as issued by the CA.
    pub fn node_cert(&self) -> PathBuf {
        self.dir.join("node.crt")
    }

    /// The admin credential of the node that created the cluster (or
    /// restored its CA): `client.crt`, `client.key`, `ca.crt`.
    pub fn admin_dir(&self) -> PathBuf {
        self.dir.join("admin")
    }

    /// Create `<data>/pki` (and parents) if missing; a new `pki` directory
    /// gets mode 0700.
    pub fn ensure_dir(&self) -> Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(&self.dir)
            .map_err(|source| io_err(&self.dir, source))
    }
}

/// Whether [`write_atomic`] may replace an existing file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overwrite {
    /// Replace the file atomically if it exists.
    Replace,
    /// Fail with `AlreadyExists` if the file exists (atomic check).
    Refuse,
}

pub(crate) fn io_err(path: &Path, source: std::io::Error) -> PkiError {
    PkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Write `bytes` to `path` atomically, the file having permission bits
/// `mode` (further restricted by the umask) from the moment it exists.
///
/// The parent directory must exist. With [`Overwrite::Refuse`] an existing
/// file is left untouched and the error is an `io::ErrorKind::AlreadyExists`.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32, overwrite: Overwrite) -> Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".to_string());
    let mut suffix = [0u8; 8];
    super::random_bytes(&mut suffix)?;
    let tmp = parent.join(format!(".{name}.tmp-{}", hex::encode(suffix)));

    let result = (|| -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        match overwrite {
            Overwrite::Replace => fs::rename(&tmp, path)?,
            Overwrite::Refuse => {
                fs::hard_link(&tmp, path)?;
                fs::remove_file(&tmp)?;
            }
        }
        // Make the directory entry durable too.
        File::open(&parent)?.sync_all()?;
        Ok(())
    })();
    if result.is_err() {
        // Best effort: the temp file is ours and useless now.
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(|source| io_err(path, source))
}

/// Write a private key (PEM) with mode 0600.
pub fn write_private_key(path: &Path, pem: &str, overwrite: Overwrite) -> Result<()> {
    write_atomic(path, pem.as_bytes(), KEY_MODE, overwrite)
}

/// Write a certificate (PEM) with mode 0644.
pub fn write_certificate(path: &Path, pem: &str, overwrite: Overwrite) -> Result<()> {
    write_atomic(path, pem.as_bytes(), CERT_MODE, overwrite)
}

/// Read a private key file, refusing it if group or others have any access
/// to it (like ssh does), since then it may have leaked.
pub fn read_private_key(path: &Path) -> Result<String> {
    let meta = fs::metadata(path).map_err(|source| io_err(path, source))?;
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(PkiError::InsecureKeyFile {
            path: path.to_path_buf(),
            mode,
        });
    }
    fs::read_to_string(path).map_err(|source| io_err(path, source))
}

/// Read a certificate file (PEM text).
pub fn read_certificate(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|source| io_err(path, source))
}

/// The permission bits (`mode & 0o777`) of a file, for checks and tests.
pub fn file_mode(path: &Path) -> Result<u32> {
    fs::metadata(path)
        .map(|m| m.mode() & 0o777)
        .map_err(|source| io_err(path, source))
}
