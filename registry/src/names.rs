//! Human names (tags) pointing at blobs, e.g. `counter:v2` -> `sha256:…`.
//!
//! Each name is one file `<root>/names/<base32 of the name>` holding the
//! hash text, replaced atomically. Base32 (lowercase) keeps file names
//! free of `/`, safe on case-insensitive filesystems and, for the longest
//! allowed name, within the usual 255-byte file-name limit.

use std::io;
use std::path::PathBuf;

use crate::atomic::{self, ReadOutcome};
use crate::store::read_dir;
use crate::{Registry, RegistryError, Sha256};

/// Longest allowed name, in characters (all allowed characters are ASCII,
/// so also in bytes). 128 keeps encoded file names under 255 bytes.
pub const MAX_NAME_LEN: usize = 128;

/// Upper bound on a name file's size; real ones are 72 bytes.
const MAX_NAME_FILE_BYTES: u64 = 1024;

/// RFC 4648 base32 alphabet, lowercased.
const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// Check a name against the naming rules: 1..=[`MAX_NAME_LEN`] characters
/// of `[A-Za-z0-9._-/:@]`, no `..`, not starting with `/` or `.`, and not
/// itself a hash reference (`sha256:` prefix or 64 hex characters), so
/// [`Registry::resolve`] is never ambiguous. Errors with
/// [`RegistryError::BadName`].
pub fn validate_name(name: &str) -> Result<(), RegistryError> {
    let bad = |reason| {
        Err(RegistryError::BadName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("name is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("name is longer than 128 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-/:@".contains(&b))
    {
        return bad("name may only contain A-Z a-z 0-9 . _ - / : @");
    }
    if name.contains("..") {
        return bad("name must not contain \"..\"");
    }
    if name.starts_with('/') || name.starts_with('.') {
        return bad("name must not start with '/' or '.'");
    }
    if Sha256::looks_like_reference(name) {
        return bad("name must not look like a sha256 reference");
    }
    Ok(())
}

/// Base32-encode (lowercase, unpadded) a name into a file name.
fn encode_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len() * 8 / 5 + 1);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in name.as_bytes() {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(BASE32[((acc >> bits) & 31) as usize]));
        }
        acc &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(char::from(BASE32[((acc << (5 - bits)) & 31) as usize]));
    }
    out
}

/// Inverse of [`encode_name`]; `None` for anything that is not the
/// canonical encoding of a valid name (stray files are ignored).
fn decode_name(file: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(file.len() * 5 / 8);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in file.bytes() {
        let v = BASE32.iter().position(|&a| a == c)? as u32;
        acc = (acc << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            bytes.push((acc >> bits) as u8);
        }
        acc &= (1 << bits) - 1;
    }
    let name = String::from_utf8(bytes).ok()?;
    (validate_name(&name).is_ok() && encode_name(&name) == file).then_some(name)
}

impl Registry {
    /// File holding the binding of (already validated) `name`.
    fn name_path(&self, name: &str) -> PathBuf {
        self.inner.names.join(encode_name(name))
    }

    /// Read and parse one name file; `Ok(None)` if it does not exist.
    fn read_name_file(&self, path: &std::path::Path) -> Result<Option<Sha256>, RegistryError> {
        let bytes = match atomic::read_file(path, MAX_NAME_FILE_BYTES)? {
            ReadOutcome::Missing => return Ok(None),
            ReadOutcome::Bytes(b) => b,
            ReadOutcome::TooLarge(_) => Vec::new(),
        };
        let text = String::from_utf8_lossy(&bytes);
        text.trim().parse().map(Some).map_err(|_| {
            let msg = "name file does not contain a sha256 reference";
            RegistryError::io(path, io::Error::new(io::ErrorKind::InvalidData, msg))
        })
    }

    /// Point `name` at `hash`, replacing any previous binding atomically.
    /// The blob must be stored ([`RegistryError::NotFound`] otherwise) so
    /// names never start out dangling.
    pub fn set_name(&self, name: &str, hash: &Sha256) -> Result<(), RegistryError> {
        validate_name(name)?;
        if !self.contains(hash) {
            return Err(RegistryError::NotFound(*hash));
        }
        let content = format!("{hash}\n");
        atomic::write_atomic(
            &self.inner.tmp,
            &self.name_path(name),
            &[content.as_bytes()],
        )
    }

    /// The hash `name` points at; [`RegistryError::UnknownName`] if unset.
    /// The blob itself may since have been removed.
    pub fn resolve_name(&self, name: &str) -> Result<Sha256, RegistryError> {
        validate_name(name)?;
        self.read_name_file(&self.name_path(name))?
            .ok_or_else(|| RegistryError::UnknownName(name.to_string()))
    }

    /// All names with their hashes, sorted by name. Stray files in
    /// `names/` are ignored; a garbled name file is an error.
    pub fn names(&self) -> Result<Vec<(String, Sha256)>, RegistryError> {
        let mut out = Vec::new();
        for entry in read_dir(&self.inner.names)? {
            let Some(name) = entry.file_name().to_str().and_then(decode_name) else {
                continue;
            };
            // `None`: removed while we were listing.
            if let Some(hash) = self.read_name_file(&entry.path())? {
                out.push((name, hash));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Delete the binding of `name`; `Ok(false)` if it was not set. The
    /// blob is not touched.
    pub fn remove_name(&self, name: &str) -> Result<bool, RegistryError> {
        validate_name(name)?;
        atomic::remove_file(&self.name_path(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32_roundtrip() {
        for name in [
            "a",
            "ab",
            "abc",
            "abcd",
            "abcde",
            "org/app:v1.2@x",
            &"z".repeat(MAX_NAME_LEN),
        ] {
            let enc = encode_name(name);
            assert!(enc.len() <= 255, "{}", enc.len());
            assert_eq!(decode_name(&enc).as_deref(), Some(name));
        }
        assert_eq!(encode_name("foobar"), "mzxw6ytboi");
        assert_eq!(decode_name("MZXW6YTBOI"), None);
        assert_eq!(decode_name("mzxw6ytboj"), None); // non-canonical trailing bits
        assert_eq!(decode_name("x.tmp"), None);
    }
}
