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
/// Most keys one `kv_list` returns.
pub const LIST_KEYS_MAX: usize = 1000;
