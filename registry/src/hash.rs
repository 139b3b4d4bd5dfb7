//! The [`Sha256`] digest type that names every blob in the registry.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256 as Sha256Hasher};

use crate::RegistryError;

/// Prefix of the canonical textual form of a digest (`sha256:<64 hex>`).
pub const SHA256_PREFIX: &str = "sha256:";

/// A sha256 digest: the content address of a blob.
///
/// `Display`/`FromStr` use `"sha256:<64 lowercase hex>"`; `FromStr` also
/// accepts the bare 64-hex form (either case) so users can paste digests
/// from other tools. Serialized (serde) as the canonical string so that
/// JSON files and wire messages stay human readable.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256(pub [u8; 32]);

impl Sha256 {
    /// Hash `bytes`. This is the one function that defines a blob's name.
    pub fn of(bytes: &[u8]) -> Sha256 {
        Sha256(Sha256Hasher::digest(bytes).into())
    }

    /// The 64 lowercase hex characters of the digest, without the
    /// `sha256:` prefix (used for file names).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 12 hex characters: a compact form for logs and UIs only;
    /// never use it to address a blob.
    pub fn short(&self) -> String {
        let mut s = self.to_hex();
        s.truncate(12);
        s
    }

    /// Parse exactly 64 hex characters (no prefix).
    pub(crate) fn from_bare_hex(text: &str) -> Option<Sha256> {
        if text.len() != 64 {
            return None;
        }
        // Refuses any character that is not a hex digit.
        let mut out = [0u8; 32];
        hex::decode_to_slice(text, &mut out).ok()?;
        Some(Sha256(out))
    }

    /// Whether `text` looks like a hash reference (has the `sha256:` prefix
    /// or is 64 hex characters), i.e. must be parsed as a hash rather than
    /// treated as a name.
    pub(crate) fn looks_like_reference(text: &str) -> bool {
        text.starts_with(SHA256_PREFIX) || Sha256::from_bare_hex(text).is_some()
    }

    /// Bytes of the canonical text form, `sha256:` and 64 hex characters.
    const TEXT_BYTES: usize = SHA256_PREFIX.len() + 64;

    /// Write the canonical text form into `buf`, with no allocation:
    /// manifests hold one per page, and their encoding is on the restore
    /// path.
    fn write_text<'b>(&self, buf: &'b mut [u8; Sha256::TEXT_BYTES]) -> &'b str {
        let (prefix, hex_part) = buf.split_at_mut(SHA256_PREFIX.len());
        prefix.copy_from_slice(SHA256_PREFIX.as_bytes());
        // 64 bytes of room for 32 bytes: the length always fits.
        let encoded = hex::encode_to_slice(self.0, hex_part);
        debug_assert!(encoded.is_ok());
        // Only ASCII was written (the prefix and lowercase hex digits).
        std::str::from_utf8(buf).unwrap_or_default()
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.write_text(&mut [0; Sha256::TEXT_BYTES]))
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Sha256 {
    type Err = RegistryError;

    /// Accepts `sha256:<64 hex>` or bare `<64 hex>`; anything else is
    /// [`RegistryError::BadHash`].
    fn from_str(text: &str) -> Result<Sha256, RegistryError> {
        let bare = text.strip_prefix(SHA256_PREFIX).unwrap_or(text);
        Sha256::from_bare_hex(bare).ok_or_else(|| RegistryError::BadHash(text.to_string()))
    }
}

impl Serialize for Sha256 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.write_text(&mut [0; Sha256::TEXT_BYTES]))
    }
}

impl<'de> Deserialize<'de> for Sha256 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Sha256, D::Error> {
        // Parsed from the borrowed text where the format allows it: no
        // string is allocated per hash.
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = Sha256;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a sha256 digest (`sha256:` and 64 hex characters)")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Sha256, E> {
                text.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_parse_roundtrip() {
        let h = Sha256::of(b"abc");
        let text = h.to_string();
        assert_eq!(
            text,
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(format!("{h:?}"), text);
        assert_eq!(h.short(), "ba7816bf8f01");
        assert_eq!(text.parse::<Sha256>().unwrap(), h);
        assert_eq!(h.to_hex().parse::<Sha256>().unwrap(), h);
        assert_eq!(h.to_hex().to_uppercase().parse::<Sha256>().unwrap(), h);
        for bad in [
            "",
            "sha256:",
            "sha256:abc",
            "xyz",
            &format!("sha256:{}0", h.to_hex()),
        ] {
            assert!(
                matches!(bad.parse::<Sha256>(), Err(RegistryError::BadHash(_))),
                "{bad}"
            );
        }
        // Non-ASCII input must not panic on byte-length checks.
        assert!("é".repeat(32).parse::<Sha256>().is_err());
    }

    #[test]
    fn serde_as_string() {
        let h = Sha256::of(b"abc");
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(json, format!("\"{h}\""));
        assert_eq!(serde_json::from_str::<Sha256>(&json).unwrap(), h);
        assert!(serde_json::from_str::<Sha256>("\"nope\"").is_err());
    }
}
