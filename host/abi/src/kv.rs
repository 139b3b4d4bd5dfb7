//! The plain data of key-value and locks shared by host and guests: flags,
//! record layouts and bounds (see `sdk/ABI.md`, "Key-value and locks").
//!
//! `kv_get` writes a [`KV_INFO_BYTES`]-byte info record (little-endian):
//!
//! ```text
//! offset size field
//!      0    8 the entry's version (strictly increasing over all writes)
//!      8    8 the value's length in bytes (also on BUFFER_TOO_SMALL)
//! ```
//!
//! A fenced write (`kv_set`, `kv_cas`, `kv_delete`) passes a pointer to a
//! [`FENCE_BYTES`]-byte fence record, or 0 for none:
//!
//! ```text
//! offset size field
//!      0    8 the fencing token `lock` or `try_lock` returned
//!      8    4 pointer to the lock's name (UTF-8)
//!     12    4 the name's length in bytes
//! ```
//!
//! `kv_list` fills its buffer with keys back to back, each a 2-byte
//! little-endian length then the key's bytes, and returns how many.
//!
//! Batches (wasi-keyvalue's `batch`): `kv_get_many` and `kv_delete_many`
//! take keys in that same encoding; `kv_set_many` takes entries back to
//! back, each a 2-byte key length, the key, a 4-byte value length and the
//! value (little-endian). `kv_get_many` answers one record per key, in
//! order:
//!
//! ```text
//! offset size field
//!      0    8 the entry's version (0: the key is absent)
//!      8    4 the value's length in bytes (0 when absent)
//!     12    - the value
//! ```

/// Read flag: answer from this node's applied state without asking the
/// leader (cheaper; may miss writes completed elsewhere a moment ago).
/// Without it reads are linearizable.
pub const KV_STALE: i32 = 1;
/// Size of `kv_get`'s info record.
pub const KV_INFO_BYTES: i32 = 16;
/// Size of a fence record.
pub const FENCE_BYTES: i32 = 16;
/// Longest key, in bytes.
pub const KEY_BYTES_MAX: usize = 256;
/// Largest value, in bytes.
pub const VALUE_BYTES_MAX: usize = 1 << 20;
/// Longest bucket name, in bytes.
pub const BUCKET_BYTES_MAX: usize = 64;
/// Longest lock name, in bytes.
pub const LOCK_NAME_BYTES_MAX: usize = 255;
/// Most entries (keys) in one batch.
pub const BATCH_ENTRIES_MAX: usize = 100;
/// Most bytes (keys and values, without the length fields) in one batch.
pub const BATCH_BYTES_MAX: usize = 4 << 20;
/// Bytes of a `kv_get_many` record before its value.
pub const MANY_RECORD_HEADER_BYTES: usize = 12;
/// Most keys one `kv_list` returns.
pub const LIST_KEYS_MAX: usize = 1000;

use alloc::vec::Vec;

/// Why a batch encoding was refused: always `BAD_BATCH`, except a key or
/// value out of its own bounds (`BAD_KEY`, `VALUE_TOO_LARGE`).
pub type BatchError = i32;

/// Decode keys encoded back to back (2-byte little-endian length, bytes),
/// checking the batch bounds before keeping anything.
pub fn decode_keys(bytes: &[u8]) -> Result<Vec<Vec<u8>>, BatchError> {
    let mut keys = Vec::new();
    let mut rest = bytes;
    let mut total = 0usize;
    while !rest.is_empty() {
        if keys.len() == BATCH_ENTRIES_MAX {
            return Err(crate::errno::BAD_BATCH);
        }
        let (key, after) = take(rest, 2)?;
        check_key(key.len())?;
        total += key.len();
        keys.push(key.to_vec());
        rest = after;
    }
    if keys.is_empty() || total > BATCH_BYTES_MAX {
        return Err(crate::errno::BAD_BATCH);
    }
    Ok(keys)
}

/// A batch's `(key, value)` entries.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// Decode `(key, value)` entries encoded back to back (2-byte key length,
/// key, 4-byte value length, value), checking every bound first.
pub fn decode_entries(bytes: &[u8]) -> Result<Entries, BatchError> {
    let mut entries = Vec::new();
    let mut rest = bytes;
    let mut total = 0usize;
    while !rest.is_empty() {
        if entries.len() == BATCH_ENTRIES_MAX {
            return Err(crate::errno::BAD_BATCH);
        }
        let (key, after) = take(rest, 2)?;
        check_key(key.len())?;
        let (value, after) = take(after, 4)?;
        if value.len() > VALUE_BYTES_MAX {
            return Err(crate::errno::VALUE_TOO_LARGE);
        }
        total += key.len() + value.len();
        if total > BATCH_BYTES_MAX {
            return Err(crate::errno::BAD_BATCH);
        }
        entries.push((key.to_vec(), value.to_vec()));
        rest = after;
    }
    if entries.is_empty() {
        return Err(crate::errno::BAD_BATCH);
    }
    Ok(entries)
}

/// Encode keys back to back (the inverse of [`decode_keys`]).
pub fn encode_keys<K: AsRef<[u8]>>(keys: &[K]) -> Vec<u8> {
    let mut out = Vec::new();
    for k in keys {
        let k = k.as_ref();
        out.extend_from_slice(&(k.len().min(u16::MAX as usize) as u16).to_le_bytes());
        out.extend_from_slice(k);
    }
    out
}

/// Encode entries back to back (the inverse of [`decode_entries`]).
pub fn encode_entries<K: AsRef<[u8]>, V: AsRef<[u8]>>(entries: &[(K, V)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in entries {
        let (k, v) = (k.as_ref(), v.as_ref());
        out.extend_from_slice(&(k.len().min(u16::MAX as usize) as u16).to_le_bytes());
        out.extend_from_slice(k);
        out.extend_from_slice(&(v.len().min(u32::MAX as usize) as u32).to_le_bytes());
        out.extend_from_slice(v);
    }
    out
}

fn check_key(len: usize) -> Result<(), BatchError> {
    if len == 0 || len > KEY_BYTES_MAX {
        return Err(crate::errno::BAD_KEY);
    }
    Ok(())
}

/// Split a length-prefixed item (`width`: 2 or 4 bytes of little-endian
/// length) off the front of `bytes`: the item and what follows.
fn take(bytes: &[u8], width: usize) -> Result<(&[u8], &[u8]), BatchError> {
    if bytes.len() < width {
        return Err(crate::errno::BAD_BATCH);
    }
    let (len_bytes, rest) = bytes.split_at(width);
    let len = len_bytes
        .iter()
        .rev()
        .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
    if rest.len() < len {
        return Err(crate::errno::BAD_BATCH);
    }
    Ok(rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errno::{BAD_BATCH, BAD_KEY, VALUE_TOO_LARGE};

    #[test]
    fn batches_round_trip() {
        let keys = vec![b"a".to_vec(), vec![7u8; KEY_BYTES_MAX]];
        assert_eq!(decode_keys(&encode_keys(&keys)), Ok(keys.clone()));
        let entries = vec![(b"k".to_vec(), Vec::new()), (b"j".to_vec(), vec![1, 2, 3])];
        assert_eq!(decode_entries(&encode_entries(&entries)), Ok(entries));
    }

    #[test]
    fn every_bound_is_refused_with_its_code() {
        assert_eq!(decode_keys(&[]), Err(BAD_BATCH), "empty");
        assert_eq!(decode_entries(&[]), Err(BAD_BATCH), "empty");
        let many: Vec<Vec<u8>> = (0..=BATCH_ENTRIES_MAX)
            .map(|i| i.to_le_bytes().to_vec())
            .collect();
        assert_eq!(decode_keys(&encode_keys(&many)), Err(BAD_BATCH), "101 keys");
        assert_eq!(decode_keys(&encode_keys(&[Vec::<u8>::new()])), Err(BAD_KEY));
        assert_eq!(
            decode_keys(&encode_keys(&[vec![0u8; KEY_BYTES_MAX + 1]])),
            Err(BAD_KEY)
        );
        assert_eq!(decode_keys(&[5, 0, 1, 2]), Err(BAD_BATCH), "cut short");
        assert_eq!(decode_keys(&[1]), Err(BAD_BATCH), "half a length");
        let big = vec![(b"k".to_vec(), vec![0u8; VALUE_BYTES_MAX + 1])];
        assert_eq!(decode_entries(&encode_entries(&big)), Err(VALUE_TOO_LARGE));
        let five: Vec<(Vec<u8>, Vec<u8>)> = (0..5u8)
            .map(|i| (vec![i], vec![0u8; VALUE_BYTES_MAX]))
            .collect();
        assert_eq!(
            decode_entries(&encode_entries(&five)),
            Err(BAD_BATCH),
            "5 MiB"
        );
    }
}
