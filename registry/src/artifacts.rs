//! Cache of compiled artifacts (e.g. wasmtime-serialized modules), keyed
//! by the module hash and a fingerprint of the engine configuration that
//! produced them.
//!
//! Each entry is one file `<root>/artifacts/<hex of ArtifactKey::id>`:
//!
//! ```text
//! shoal-artifact-v1\n
//! {"key":{…},"payload":"sha256:…","size":N}\n
//! <N payload bytes>
//! ```
//!
//! Artifacts are kept apart from blobs so they never show up as modules
//! and can be dropped wholesale; the header lets every read verify the
//! payload and that the entry really belongs to the requested key.
//!
//! A compiled artifact is native code the node will run, so a hash the
//! file declares about itself proves nothing: anyone who can write the file
//! can write a matching hash. Each header therefore carries `mac`, an
//! HMAC-SHA256 over the key and the payload under a random key that this
//! registry created and keeps in `<root>/artifact.key` (mode 0600) and
//! that never leaves the node; an entry without the right MAC is a miss
//! (recompiled from the module). Artifacts never travel between nodes.

use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::atomic::{self, Quarantined, ReadOutcome};
use crate::store::check_size;
use crate::{Registry, RegistryError, Sha256, MAX_BLOB_BYTES};

/// First line of every artifact file (format version marker).
const MAGIC: &[u8] = b"shoal-artifact-v1\n";

/// Room allowed for the magic line and JSON header on top of the payload.
const MAX_HEADER_BYTES: u64 = 64 * 1024;

/// How many times a read is retried after a concurrent writer healed an
/// entry we were quarantining.
const GET_ATTEMPTS: usize = 3;

/// Identifies one compiled artifact: which module, compiled by which
/// engine configuration. An artifact is only valid for the exact engine
/// settings (version, target, flags) that produced it, hence the
/// fingerprint.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ArtifactKey {
    /// Hash of the source module blob.
    pub module: Sha256,
    /// Opaque description of the engine configuration (any string; the
    /// host decides what goes in it).
    pub engine_fingerprint: String,
}

impl ArtifactKey {
    /// Convenience constructor.
    pub fn new(module: Sha256, engine_fingerprint: impl Into<String>) -> ArtifactKey {
        ArtifactKey {
            module,
            engine_fingerprint: engine_fingerprint.into(),
        }
    }

    /// Stable digest of the key, used as the artifact's file name. The
    /// module hash has a fixed-length text form, so the encoding is
    /// unambiguous whatever the fingerprint contains.
    pub fn id(&self) -> Sha256 {
        let text = format!(
            "shoal-artifact-key-v1\0{}\0{}",
            self.module, self.engine_fingerprint
        );
        Sha256::of(text.as_bytes())
    }
}

/// The JSON header line of an artifact file.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    key: ArtifactKey,
    payload: Sha256,
    size: u64,
    /// HMAC-SHA256 (hex) of the key id and the payload under the
    /// registry's own [`MacKey`].
    mac: String,
}

/// The node-local secret that authenticates artifacts.
pub(crate) struct MacKey([u8; 32]);

impl std::fmt::Debug for MacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MacKey(..)")
    }
}

/// Name of the key file under the registry root.
const MAC_KEY_FILE: &str = "artifact.key";

impl MacKey {
    /// Read `<root>/artifact.key`, or create it (32 random bytes, mode
    /// 0600, atomically: written aside, then linked into place, so two
    /// registries opening at once agree on one key).
    pub(crate) fn load_or_create(
        root: &std::path::Path,
        tmp: &std::path::Path,
    ) -> Result<MacKey, RegistryError> {
        let path = root.join(MAC_KEY_FILE);
        for _ in 0..2 {
            match std::fs::read(&path) {
                Ok(bytes) => {
                    let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                        RegistryError::io(
                            &path,
                            io::Error::new(
                                io::ErrorKind::InvalidData,
                                "the artifact key is not 32 bytes (delete it and the artifacts)",
                            ),
                        )
                    })?;
                    return Ok(MacKey(key));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(RegistryError::io(&path, e)),
            }
            let mut key = [0u8; 32];
            std::fs::File::open("/dev/urandom")
                .and_then(|mut f| io::Read::read_exact(&mut f, &mut key))
                .map_err(|e| RegistryError::io(std::path::Path::new("/dev/urandom"), e))?;
            let staged = atomic::temp_path(tmp);
            atomic::write_new_private(&staged, &key).map_err(|e| RegistryError::io(&staged, e))?;
            let linked = std::fs::hard_link(&staged, &path);
            let _ = std::fs::remove_file(&staged);
            match linked {
                Ok(()) => return Ok(MacKey(key)),
                // Another opener won: read theirs.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(RegistryError::io(&path, e)),
            }
        }
        Err(RegistryError::io(
            &path,
            io::Error::other("cannot create or read the artifact key"),
        ))
    }

    /// HMAC-SHA256 (RFC 2104) of `key`'s id and `payload`.
    fn mac(&self, key: &ArtifactKey, payload: &[u8]) -> [u8; 32] {
        use sha2::Digest;
        let mut block = [0u8; 64];
        block[..32].copy_from_slice(&self.0);
        let pad = |byte: u8| block.map(|b| b ^ byte);
        let inner = sha2::Sha256::new()
            .chain_update(pad(0x36))
            .chain_update(b"shoal-artifact-mac-v1\0")
            .chain_update(key.id().0)
            .chain_update((payload.len() as u64).to_le_bytes())
            .chain_update(payload)
            .finalize();
        sha2::Sha256::new()
            .chain_update(pad(0x5c))
            .chain_update(inner)
            .finalize()
            .into()
    }

    /// True when `mac_hex` is this key's MAC of `key` and `payload`
    /// (compared in constant time).
    fn check(&self, key: &ArtifactKey, payload: &[u8], mac_hex: &str) -> bool {
        let Ok(given) = hex::decode(mac_hex) else {
            return false;
        };
        let want = self.mac(key, payload);
        given.len() == want.len()
            && given
                .iter()
                .zip(want)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

/// Check a whole artifact file against `key`; on success return the
/// payload's offset in `file`.
fn verify(file: &[u8], key: &ArtifactKey, mac_key: &MacKey) -> Option<usize> {
    let rest = file.strip_prefix(MAGIC)?;
    let nl = rest.iter().position(|&b| b == b'\n')?;
    let header: Header = serde_json::from_slice(&rest[..nl]).ok()?;
    let payload = &rest[nl + 1..];
    let ok = header.key == *key
        && header.size == payload.len() as u64
        && Sha256::of(payload) == header.payload
        && mac_key.check(key, payload, &header.mac);
    ok.then_some(MAGIC.len() + nl + 1)
}

impl Registry {
    /// File holding the artifact for `key`.
    fn artifact_path(&self, key: &ArtifactKey) -> PathBuf {
        self.inner.artifacts.join(key.id().to_hex())
    }

    /// The cached artifact for `key`, or `Ok(None)` on a cache miss.
    ///
    /// A corrupt entry (bad header, wrong key, payload hash mismatch) is
    /// moved to `<root>/quarantine/` and reported as a miss, `Ok(None)`,
    /// rather than an error: the caller simply recompiles from the module
    /// and calls [`Registry::artifact_put`], which is the right recovery
    /// for a cache. Only I/O failures are errors.
    pub fn artifact_get(&self, key: &ArtifactKey) -> Result<Option<Vec<u8>>, RegistryError> {
        let path = self.artifact_path(key);
        let max = MAX_BLOB_BYTES + MAX_HEADER_BYTES;
        for _ in 0..GET_ATTEMPTS {
            let file = match atomic::read_file(&path, max)? {
                ReadOutcome::Missing => return Ok(None),
                ReadOutcome::TooLarge(_) => None,
                ReadOutcome::Bytes(bytes) => Some(bytes),
            };
            if let Some(mut bytes) = file {
                if let Some(offset) = verify(&bytes, key, &self.inner.mac_key) {
                    bytes.drain(..offset);
                    return Ok(Some(bytes));
                }
            }
            let stem = format!("artifact-{}", key.id().to_hex());
            let outcome = atomic::quarantine(&self.inner.quarantine, &path, &stem, max, |b| {
                verify(b, key, &self.inner.mac_key).is_some()
            });
            if !matches!(outcome, Quarantined::Restored) {
                return Ok(None);
            }
        }
        Ok(None)
    }

    /// Store (or atomically replace) the artifact for `key`. Payloads over
    /// [`MAX_BLOB_BYTES`], or an engine fingerprint so long that the header
    /// exceeds 64 KiB, are refused with [`RegistryError::TooLarge`].
    pub fn artifact_put(&self, key: &ArtifactKey, bytes: &[u8]) -> Result<(), RegistryError> {
        check_size(bytes.len())?;
        let path = self.artifact_path(key);
        let header = Header {
            key: key.clone(),
            payload: Sha256::of(bytes),
            size: bytes.len() as u64,
            mac: hex::encode(self.inner.mac_key.mac(key, bytes)),
        };
        let json = serde_json::to_vec(&header)
            .map_err(|e| RegistryError::io(&path, io::Error::new(io::ErrorKind::InvalidData, e)))?;
        let header_len = (MAGIC.len() + json.len() + 1) as u64;
        if header_len > MAX_HEADER_BYTES {
            return Err(RegistryError::TooLarge {
                size: header_len,
                max: MAX_HEADER_BYTES,
            });
        }
        atomic::write_atomic(&self.inner.tmp, &path, &[MAGIC, &json, b"\n", bytes])
    }

    /// Whether an artifact file exists for `key` (not verified; a corrupt
    /// one still turns into a miss in [`Registry::artifact_get`]).
    pub fn artifact_contains(&self, key: &ArtifactKey) -> bool {
        self.artifact_path(key).is_file()
    }

    /// Drop the artifact for `key`; `Ok(false)` if there was none.
    pub fn artifact_remove(&self, key: &ArtifactKey) -> Result<bool, RegistryError> {
        atomic::remove_file(&self.artifact_path(key))
    }
}
