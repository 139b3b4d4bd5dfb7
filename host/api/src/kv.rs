//! Wire types of the key-value and lock routes (`shoal kv`, `shoal locks`)
//! and what the CLI and the node share to speak them: owners as text,
//! bytes in JSON and in URLs.
//!
//! Keys and values are bytes. In a JSON answer each appears twice: as
//! `key`/`value`, its text when it is valid UTF-8 (else `null`), and as
//! `key_base64`/`value_base64`, the exact bytes (standard base64 with
//! padding), always. In a path or query a key is percent-encoded byte by
//! byte ([`percent_encode_bytes`]; `+` is a plus, never a space). A value
//! to write is the raw request body.
//!
//! An owner is named `ROLE:ID` (`client:alice`, `admin:ops`, `node:n1`),
//! or `cluster` for [`Owner::cluster`], the owner of what nobody deployed
//! through the API ([`owner_text`], [`parse_owner`]).

use serde::{Deserialize, Serialize};
use shoal_abi::pid::Pid;
use shoal_pki::{Owner, Role};

pub use shoal_abi::kv::{BUCKET_BYTES_MAX, KEY_BYTES_MAX, VALUE_BYTES_MAX};

/// Most keys one `GET /v1/kv/{bucket}` page holds (the guests' `kv_list`
/// bound).
pub const KV_PAGE_MAX: usize = shoal_abi::kv::LIST_KEYS_MAX;

/// `GET /v1/kv/{bucket}/{key}`: one entry (also what `shoal kv get --json`
/// prints).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvEntryView {
    /// Whose bucket ([`owner_text`]).
    pub owner: String,
    /// The bucket.
    pub bucket: String,
    /// The key as text, if it is UTF-8.
    pub key: Option<String>,
    /// The key's bytes, base64.
    pub key_base64: String,
    /// The value as text, if it is UTF-8.
    pub value: Option<String>,
    /// The value's bytes, base64.
    pub value_base64: String,
    /// The entry's version: the cluster's key-value write counter when it
    /// was last written.
    pub version: u64,
}

impl KvEntryView {
    /// The entry of `key` holding `value` at `version`.
    pub fn new(owner: &Owner, bucket: &str, key: &[u8], value: &[u8], version: u64) -> Self {
        KvEntryView {
            owner: owner_text(owner),
            bucket: bucket.to_string(),
            key: text_of(key),
            key_base64: base64_encode(key),
            value: text_of(value),
            value_base64: base64_encode(value),
            version,
        }
    }

    /// The key's bytes.
    pub fn key_bytes(&self) -> Result<Vec<u8>, Base64Error> {
        base64_decode(&self.key_base64)
    }

    /// The value's bytes.
    pub fn value_bytes(&self) -> Result<Vec<u8>, Base64Error> {
        base64_decode(&self.value_base64)
    }
}

/// One key of a listing (what `shoal kv ls --json` prints per key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvKeyView {
    /// The key as text, if it is UTF-8.
    pub key: Option<String>,
    /// The key's bytes, base64.
    pub key_base64: String,
}

impl KvKeyView {
    /// The view of `key`.
    pub fn new(key: &[u8]) -> Self {
        KvKeyView {
            key: text_of(key),
            key_base64: base64_encode(key),
        }
    }

    /// The key's bytes.
    pub fn bytes(&self) -> Result<Vec<u8>, Base64Error> {
        base64_decode(&self.key_base64)
    }
}

/// `GET /v1/kv/{bucket}?prefix=&after=&limit=`: one page of keys, in byte
/// order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvPage {
    /// Whose bucket ([`owner_text`]).
    pub owner: String,
    /// The bucket.
    pub bucket: String,
    /// The keys after `after` that start with `prefix`, at most `limit`.
    pub keys: Vec<KvKeyView>,
    /// No keys follow this page (it held fewer than `limit`). Otherwise ask
    /// again with `after` = its last key.
    pub complete: bool,
}

/// `PUT /v1/kv/{bucket}/{key}`: what was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvWritten {
    /// Whose bucket ([`owner_text`]).
    pub owner: String,
    /// The bucket.
    pub bucket: String,
    /// The key as text, if it is UTF-8.
    pub key: Option<String>,
    /// The key's bytes, base64.
    pub key_base64: String,
    /// The entry's new version.
    pub version: u64,
}

/// `DELETE /v1/kv/{bucket}/{key}`: what was deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvDeleted {
    /// Whose bucket ([`owner_text`]).
    pub owner: String,
    /// The bucket.
    pub bucket: String,
    /// The key as text, if it is UTF-8.
    pub key: Option<String>,
    /// The key's bytes, base64.
    pub key_base64: String,
    /// Whether the key was there (deleting a missing key is not an error).
    pub existed: bool,
}

/// `GET /v1/locks`: one lock held or waited for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockSummary {
    /// Whose namespace ([`owner_text`]).
    pub owner: String,
    /// The lock's name.
    pub name: String,
    /// The process holding it (none only for a lock whose holder was just
    /// released while waiters are being granted).
    pub holder_pid: Option<Pid>,
    /// The node that process runs on, by name, if the directory knows it.
    pub holder_node: Option<String>,
    /// The holder's fencing token.
    pub token: Option<u64>,
    /// The processes waiting for it, first come first.
    pub waiters: Vec<Pid>,
}

/// Why a base64 text is not the bytes of a key or value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not standard base64 with padding: {0}")]
pub struct Base64Error(String);

/// Why an owner text is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{given}` is not an owner: {why} (write ROLE:ID, e.g. client:alice or admin:ops, or `cluster` for what nobody deployed)")]
pub struct OwnerParseError {
    /// What was given.
    pub given: String,
    /// What is wrong with it.
    pub why: String,
}

/// An owner as text: `cluster` for [`Owner::cluster`], else `ROLE:ID`.
pub fn owner_text(owner: &Owner) -> String {
    if owner.is_cluster() {
        "cluster".to_string()
    } else {
        owner.namespace()
    }
}

/// Parse [`owner_text`]'s form: `cluster`, or `ROLE:ID` with ROLE one of
/// `client`, `admin`, `node` and ID a certificate name (1 to 63 of
/// `A-Za-z0-9._-`, starting with a letter or digit).
pub fn parse_owner(text: &str) -> Result<Owner, OwnerParseError> {
    let err = |why: &str| OwnerParseError {
        given: text.chars().take(100).collect(),
        why: why.to_string(),
    };
    if text == "cluster" {
        return Ok(Owner::cluster());
    }
    let Some((role, id)) = text.split_once(':') else {
        return Err(err("no `:` between the role and the id"));
    };
    let role: Role = role
        .parse()
        .map_err(|_| err(&format!("unknown role `{role}` (client, admin or node)")))?;
    if shoal_pki::role::validate_id(id).is_err() {
        return Err(err(
            "the id must be 1 to 63 of A-Za-z0-9._- starting with a letter or digit",
        ));
    }
    Ok(Owner {
        role,
        id: id.to_string(),
    })
}

/// `bytes` as text, if they are UTF-8.
pub fn text_of(bytes: &[u8]) -> Option<String> {
    std::str::from_utf8(bytes).ok().map(str::to_string)
}

/// A key for people, one line, unambiguous: its text if it is UTF-8 with
/// no control characters and does not start with `0x`; else `0x` and its
/// bytes in lowercase hex (what [`parse_key_text`] reads back).
pub fn show_key(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(t) if !t.starts_with("0x") && !t.chars().any(char::is_control) => t.to_string(),
        _ => format!("0x{}", hex(key)),
    }
}

/// A key as a person writes it ([`show_key`]'s form): `0x` then an even
/// number of hex digits is those bytes; anything else is its UTF-8 text.
pub fn parse_key_text(text: &str) -> Result<Vec<u8>, String> {
    match text.strip_prefix("0x") {
        None => Ok(text.as_bytes().to_vec()),
        Some(digits) => unhex(digits).ok_or_else(|| {
            format!(
                "`{text}` starts with 0x but is not an even number of hex digits after it \
                 (0x introduces a key given as hex bytes; a text key cannot start with 0x)"
            )
        }),
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(digits: &str) -> Option<Vec<u8>> {
    if !digits.len().is_multiple_of(2) || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).ok())
        .collect()
}

/// Percent-encode bytes for a path segment or query value: everything but
/// unreserved characters (`A-Za-z0-9-_.~`) as `%XX`.
pub fn percent_encode_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decode a percent-encoded path segment or query value to bytes (any
/// bytes, UTF-8 or not; `+` is a plus). `None` if a `%` is not followed by
/// two hex digits.
pub fn percent_decode_bytes(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let digits = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u8::from_str_radix(digits, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 (RFC 4648, with padding) of `bytes`.
pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(BASE64[((n >> (18 - 6 * i)) & 0x3f) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decode standard base64 with padding (as [`base64_encode`] writes it).
pub fn base64_decode(text: &str) -> Result<Vec<u8>, Base64Error> {
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return Err(Base64Error(format!(
            "its length {} is not a multiple of 4",
            bytes.len()
        )));
    }
    let value = |c: u8| -> Option<u32> {
        BASE64
            .iter()
            .position(|&x| x == c)
            .and_then(|p| u32::try_from(p).ok())
    };
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    let quads = bytes.len() / 4;
    for (q, quad) in bytes.chunks(4).enumerate() {
        let pad = quad.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && q + 1 != quads) {
            return Err(Base64Error("padding in the wrong place".into()));
        }
        let mut n = 0u32;
        for (i, &c) in quad[..4 - pad].iter().enumerate() {
            let v = value(c)
                .ok_or_else(|| Base64Error(format!("`{}` is not a base64 digit", c as char)))?;
            n |= v << (18 - 6 * i);
        }
        let take = 3 - pad;
        out.extend_from_slice(&n.to_be_bytes()[1..1 + take]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_and_matches_rfc_4648() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(plain.as_bytes()), coded);
            assert_eq!(base64_decode(coded).unwrap(), plain.as_bytes());
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(base64_decode(&base64_encode(&all)).unwrap(), all);
        for bad in ["Zg=", "Z===", "Zg==Zg==", "Zm9*"] {
            assert!(base64_decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_show_as_text_or_hex_and_read_back() {
        assert_eq!(show_key(b"user/1"), "user/1");
        assert_eq!(show_key(&[0xff, 0x00]), "0xff00");
        assert_eq!(show_key(b"a\nb"), "0x610a62");
        assert_eq!(show_key(b"0x12"), "0x30783132");
        for key in [&b"user/1"[..], &[0xff, 0x00], b"a\nb", b"0x12"] {
            assert_eq!(parse_key_text(&show_key(key)).unwrap(), key);
        }
        assert!(parse_key_text("0xzz").is_err());
        assert!(parse_key_text("0x1").is_err());
    }

    #[test]
    fn percent_encoding_carries_any_bytes() {
        let all: Vec<u8> = (0..=255).collect();
        let coded = percent_encode_bytes(&all);
        assert!(!coded.contains('/') && !coded.contains('+') && !coded.contains('?'));
        assert_eq!(percent_decode_bytes(&coded).unwrap(), all);
        assert_eq!(percent_decode_bytes("a+b").unwrap(), b"a+b");
        assert!(percent_decode_bytes("%4").is_none());
        assert!(percent_decode_bytes("%zz").is_none());
    }

    #[test]
    fn owners_read_as_they_are_written() {
        let alice = parse_owner("client:alice").unwrap();
        assert_eq!(alice.role, Role::Client);
        assert_eq!(owner_text(&alice), "client:alice");
        assert_eq!(parse_owner("cluster").unwrap(), Owner::cluster());
        assert_eq!(owner_text(&Owner::cluster()), "cluster");
        for bad in ["alice", "boss:alice", "client:", "client:a/b", "node:"] {
            let e = parse_owner(bad).unwrap_err();
            assert!(e.to_string().contains("ROLE:ID"), "{e}");
        }
    }
}

/// An operator's key-value write refused by the node's write-rate quota
/// (HTTP 429): retry later.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{who} makes key-value writes faster than {writes_per_s_max} per second on this node; retry later")]
pub struct KvRateLimited {
    /// The identity that asked.
    pub who: String,
    /// The node's bound.
    pub writes_per_s_max: u32,
}
