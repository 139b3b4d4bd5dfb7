//! Replicated key-value and cluster-wide locks (see `sdk/ABI.md`,
//! "Key-value and locks").
//!
//! A [`Bucket`] is a namespace of keys belonging to this process's owner:
//! two owners' buckets of the same name never meet. Every write goes
//! through the cluster's Raft log and is on a majority's disk before it
//! returns; reads are linearizable (they see every write completed before
//! they started, anywhere) unless asked [`Bucket::stale`].
//!
//! A [`Lock`] is held by this process until it unlocks, ends, is restored
//! as a new incarnation, or its node is declared dead (after the
//! lock-delay). Each grant carries a **fencing token**, strictly larger
//! than every earlier grant's: pass it to a fenced write
//! ([`Bucket::set_fenced`]) and the write is refused with
//! [`Error::Fenced`] if the lock has since gone to someone else.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! let counters = shoal::Bucket::new("counters");
//! let guard = shoal::Lock::acquire("tally", Some(Duration::from_secs(5)))?;
//! let n = counters.get(b"total")?.map_or(0, |e| {
//!     i64::from_le_bytes(e.value.try_into().unwrap_or([0; 8]))
//! });
//! counters.set_fenced(b"total", &(n + 1).to_le_bytes(), &guard)?;
//! guard.unlock()?;
//! # Ok::<(), shoal::Error>(())
//! ```

use crate::error::{check, Error, Result};
use crate::sys;
use std::time::Duration;

/// One entry as read: its value and version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The value.
    pub value: Vec<u8>,
    /// The version: the cluster's write counter when it was last written
    /// (what [`Bucket::cas`] compares).
    pub version: u64,
}

/// A bucket of this process's owner (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    name: String,
    flags: i32,
}

fn len_of(bytes: &[u8]) -> Result<i32> {
    i32::try_from(bytes.len()).map_err(|_| Error::Invalid)
}

impl Bucket {
    /// The bucket `name` (1 to 64 bytes; checked when used).
    pub fn new(name: &str) -> Bucket {
        Bucket {
            name: name.to_string(),
            flags: 0,
        }
    }

    /// The same bucket, read without asking the leader: cheaper, and may
    /// miss writes completed elsewhere a moment ago.
    pub fn stale(&self) -> Bucket {
        Bucket {
            name: self.name.clone(),
            flags: sys::KV_STALE,
        }
    }

    /// The value and version of `key`, `None` if absent.
    ///
    /// # Errors
    ///
    /// [`Error::BadKey`], [`Error::BadBucket`], [`Error::Unavailable`].
    pub fn get(&self, key: &[u8]) -> Result<Option<Entry>> {
        let mut buf = vec![0u8; 256];
        loop {
            let mut info = sys::KvInfo::default();
            // SAFETY: every pointer is valid for its length; `info` for 16
            // bytes.
            let rc = unsafe {
                sys::kv_get(
                    self.name.as_ptr(),
                    len_of(self.name.as_bytes())?,
                    key.as_ptr(),
                    len_of(key)?,
                    self.flags,
                    buf.as_mut_ptr(),
                    len_of(&buf)?,
                    &mut info,
                )
            };
            match check(rc) {
                Ok(n) => {
                    buf.truncate(n as usize);
                    return Ok(Some(Entry {
                        value: buf,
                        version: info.version,
                    }));
                }
                Err(Error::NotFound) => return Ok(None),
                Err(Error::BufferTooSmall { .. }) => {
                    let needed = usize::try_from(info.length).map_err(|_| Error::Invalid)?;
                    if needed > sys::VALUE_BYTES_MAX || needed <= buf.len() {
                        return Err(Error::Invalid);
                    }
                    buf = vec![0u8; needed];
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether `key` exists.
    ///
    /// # Errors
    ///
    /// As [`Bucket::get`].
    pub fn exists(&self, key: &[u8]) -> Result<bool> {
        // SAFETY: every pointer is valid for its length.
        let rc = unsafe {
            sys::kv_exists(
                self.name.as_ptr(),
                len_of(self.name.as_bytes())?,
                key.as_ptr(),
                len_of(key)?,
                self.flags,
            )
        };
        check(rc).map(|n| n == 1)
    }

    fn write(
        &self,
        key: &[u8],
        value: &[u8],
        expected: Option<u64>,
        fence: Option<&Lock>,
    ) -> Result<u64> {
        let fence = fence.map(Lock::fence).transpose()?;
        let fence_ptr = fence
            .as_ref()
            .map_or(core::ptr::null(), |f| f as *const sys::Fence);
        let mut version = 0u64;
        let (bucket, bucket_len) = (self.name.as_ptr(), len_of(self.name.as_bytes())?);
        let (key_len, value_len) = (len_of(key)?, len_of(value)?);
        // SAFETY: every pointer is valid for its length; the fence (if
        // any) points to a live record whose name outlives the call.
        let rc = unsafe {
            match expected {
                None => sys::kv_set(
                    bucket,
                    bucket_len,
                    key.as_ptr(),
                    key_len,
                    value.as_ptr(),
                    value_len,
                    fence_ptr,
                    &mut version,
                ),
                Some(expected) => sys::kv_cas(
                    bucket,
                    bucket_len,
                    key.as_ptr(),
                    key_len,
                    expected as i64,
                    value.as_ptr(),
                    value_len,
                    fence_ptr,
                    &mut version,
                ),
            }
        };
        check(rc).map(|_| version)
    }

    /// Set `key` to `value`: its new version.
    ///
    /// # Errors
    ///
    /// [`Error::ValueTooLarge`], [`Error::Quota`], [`Error::RateLimited`],
    /// [`Error::Unavailable`] (the write may still apply), ...
    pub fn set(&self, key: &[u8], value: &[u8]) -> Result<u64> {
        self.write(key, value, None, None)
    }

    /// [`Bucket::set`], only while `lock` is still held under its token:
    /// [`Error::Fenced`] otherwise (and nothing is written).
    ///
    /// # Errors
    ///
    /// As [`Bucket::set`], and [`Error::Fenced`].
    pub fn set_fenced(&self, key: &[u8], value: &[u8], lock: &Lock) -> Result<u64> {
        self.write(key, value, None, Some(lock))
    }

    /// Set `key` to `value` only if it is at version `expected` (0: only
    /// if absent): its new version, or [`Error::VersionMismatch`].
    ///
    /// # Errors
    ///
    /// As [`Bucket::set`], and [`Error::VersionMismatch`].
    pub fn cas(&self, key: &[u8], expected: u64, value: &[u8]) -> Result<u64> {
        self.write(key, value, Some(expected), None)
    }

    /// [`Bucket::cas`], fenced by `lock` as [`Bucket::set_fenced`].
    ///
    /// # Errors
    ///
    /// As [`Bucket::cas`], and [`Error::Fenced`].
    pub fn cas_fenced(&self, key: &[u8], expected: u64, value: &[u8], lock: &Lock) -> Result<u64> {
        self.write(key, value, Some(expected), Some(lock))
    }

    /// Delete `key`: whether it existed.
    ///
    /// # Errors
    ///
    /// As [`Bucket::set`].
    pub fn delete(&self, key: &[u8]) -> Result<bool> {
        // SAFETY: every pointer is valid for its length; no fence.
        let rc = unsafe {
            sys::kv_delete(
                self.name.as_ptr(),
                len_of(self.name.as_bytes())?,
                key.as_ptr(),
                len_of(key)?,
                core::ptr::null(),
            )
        };
        check(rc).map(|n| n == 1)
    }

    /// Add `delta` to the counter at `key` (absent: 0): its new value.
    ///
    /// # Errors
    ///
    /// [`Error::NotACounter`], [`Error::Overflow`], or as [`Bucket::set`].
    pub fn increment(&self, key: &[u8], delta: i64) -> Result<i64> {
        let mut value = 0i64;
        // SAFETY: every pointer is valid for its length, `value` for 8.
        let rc = unsafe {
            sys::kv_increment(
                self.name.as_ptr(),
                len_of(self.name.as_bytes())?,
                key.as_ptr(),
                len_of(key)?,
                delta,
                &mut value,
            )
        };
        check(rc).map(|_| value)
    }

    /// The entries of `keys` (at most [`sys::BATCH_ENTRIES_MAX`]), all
    /// read from one state (one consistent view, one round to the leader
    /// when linearizable), in order; `None` for an absent key.
    ///
    /// # Errors
    ///
    /// [`Error::BadBatch`], or as [`Bucket::get`].
    pub fn get_many<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<Option<Entry>>> {
        let encoded = shoal_abi::kv::encode_keys(keys);
        let mut buf = vec![0u8; 4096];
        loop {
            let mut size = 0u64;
            // SAFETY: every pointer is valid for its length; `size` for 8.
            let rc = unsafe {
                sys::kv_get_many(
                    self.name.as_ptr(),
                    len_of(self.name.as_bytes())?,
                    encoded.as_ptr(),
                    len_of(&encoded)?,
                    self.flags,
                    buf.as_mut_ptr(),
                    len_of(&buf)?,
                    &mut size,
                )
            };
            match check(rc) {
                Ok(n) => return decode_many(&buf[..n as usize], keys.len()),
                Err(Error::BufferTooSmall { .. }) => {
                    let needed = usize::try_from(size).map_err(|_| Error::Invalid)?;
                    if needed <= buf.len() || i32::try_from(needed).is_err() {
                        return Err(Error::Invalid);
                    }
                    buf = vec![0u8; needed];
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Set every `(key, value)` in one write, all or nothing (at most
    /// [`sys::BATCH_ENTRIES_MAX`] entries and [`sys::BATCH_BYTES_MAX`]
    /// bytes): how many were set.
    ///
    /// # Errors
    ///
    /// [`Error::BadBatch`], or as [`Bucket::set`] (one refusal refuses
    /// the whole batch).
    pub fn set_many<K: AsRef<[u8]>, V: AsRef<[u8]>>(&self, entries: &[(K, V)]) -> Result<u64> {
        let encoded = shoal_abi::kv::encode_entries(entries);
        // SAFETY: `batch` passes pointers valid for their lengths.
        self.batch(&encoded, |b, bl, e, el| unsafe {
            sys::kv_set_many(b, bl, e, el, core::ptr::null())
        })
    }

    /// Delete every key in one write, all or nothing: how many existed.
    ///
    /// # Errors
    ///
    /// As [`Bucket::set_many`].
    pub fn delete_many<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<u64> {
        let encoded = shoal_abi::kv::encode_keys(keys);
        // SAFETY: `batch` passes pointers valid for their lengths.
        self.batch(&encoded, |b, bl, k, kl| unsafe {
            sys::kv_delete_many(b, bl, k, kl, core::ptr::null())
        })
    }

    /// Call a batch write import with this bucket's name and `encoded`
    /// (pointers valid for their lengths): its count.
    fn batch(
        &self,
        encoded: &[u8],
        write: impl FnOnce(*const u8, i32, *const u8, i32) -> i32,
    ) -> Result<u64> {
        let rc = write(
            self.name.as_ptr(),
            len_of(self.name.as_bytes())?,
            encoded.as_ptr(),
            len_of(encoded)?,
        );
        check(rc).map(u64::from)
    }

    /// Every key starting with `prefix`, in byte order (paging through
    /// the cluster [`sys::LIST_KEYS_MAX`] at a time).
    ///
    /// # Errors
    ///
    /// As [`Bucket::get`].
    pub fn keys(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>> {
        let mut all: Vec<Vec<u8>> = Vec::new();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let cursor: &[u8] = all.last().map_or(&[], |k| k.as_slice());
            // SAFETY: every pointer is valid for its length.
            let rc = unsafe {
                sys::kv_list(
                    self.name.as_ptr(),
                    len_of(self.name.as_bytes())?,
                    prefix.as_ptr(),
                    len_of(prefix)?,
                    cursor.as_ptr(),
                    len_of(cursor)?,
                    self.flags,
                    buf.as_mut_ptr(),
                    len_of(&buf)?,
                )
            };
            let count = check(rc)? as usize;
            if count == 0 {
                return Ok(all);
            }
            let mut at = 0usize;
            for _ in 0..count {
                let len_bytes = buf.get(at..at + 2).ok_or(Error::Invalid)?;
                let len = u16::from_le_bytes([len_bytes[0], len_bytes[1]]) as usize;
                let key = buf.get(at + 2..at + 2 + len).ok_or(Error::Invalid)?;
                all.push(key.to_vec());
                at += 2 + len;
            }
        }
    }
}

/// Decode `kv_get_many`'s records: exactly `count` of them.
fn decode_many(mut bytes: &[u8], count: usize) -> Result<Vec<Option<Entry>>> {
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let header = bytes
            .get(..sys::MANY_RECORD_HEADER_BYTES)
            .ok_or(Error::Invalid)?;
        let version = u64::from_le_bytes(header[0..8].try_into().map_err(|_| Error::Invalid)?);
        let len =
            u32::from_le_bytes(header[8..12].try_into().map_err(|_| Error::Invalid)?) as usize;
        let value = bytes
            .get(sys::MANY_RECORD_HEADER_BYTES..sys::MANY_RECORD_HEADER_BYTES + len)
            .ok_or(Error::Invalid)?;
        out.push((version != 0).then(|| Entry {
            value: value.to_vec(),
            version,
        }));
        bytes = &bytes[sys::MANY_RECORD_HEADER_BYTES + len..];
    }
    Ok(out)
}

/// A held lock (see the module docs). Dropping it does not unlock: call
/// [`Lock::unlock`] (a lock held by a process that forgot it is released
/// when the process ends).
#[derive(Debug, PartialEq, Eq)]
pub struct Lock {
    name: String,
    token: u64,
}

impl Lock {
    /// Wait until this process holds lock `name` (in its owner's
    /// namespace), at most `timeout` (`None`: no limit). A capture point:
    /// the process can be snapshotted or moved while it waits.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`], [`Error::Deadlock`] (waiting would close a
    /// cycle of lock waits: this wait is refused, nothing is held, and the
    /// others in the cycle go on), [`Error::LockLost`], [`Error::Quota`],
    /// [`Error::Unavailable`].
    pub fn acquire(name: &str, timeout: Option<Duration>) -> Result<Lock> {
        let timeout_ms = timeout.map_or(-1, |t| i64::try_from(t.as_millis()).unwrap_or(i64::MAX));
        let mut token = 0u64;
        // SAFETY: the name is valid for its length, `token` for 8 bytes.
        let rc = unsafe {
            sys::lock(
                name.as_ptr(),
                len_of(name.as_bytes())?,
                timeout_ms,
                &mut token,
            )
        };
        check(rc)?;
        Ok(Lock {
            name: name.to_string(),
            token,
        })
    }

    /// Take lock `name` if it is free (or already this process's).
    ///
    /// # Errors
    ///
    /// [`Error::Busy`] if another process holds it; as [`Lock::acquire`].
    pub fn try_acquire(name: &str) -> Result<Lock> {
        let mut token = 0u64;
        // SAFETY: the name is valid for its length, `token` for 8 bytes.
        let rc = unsafe { sys::try_lock(name.as_ptr(), len_of(name.as_bytes())?, &mut token) };
        check(rc)?;
        Ok(Lock {
            name: name.to_string(),
            token,
        })
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its fencing token: larger than every earlier grant's.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// Release it.
    ///
    /// # Errors
    ///
    /// [`Error::LockLost`] if it was no longer held (released by the
    /// cluster meanwhile: see the module docs).
    pub fn unlock(self) -> Result<()> {
        // SAFETY: the name is valid for its length.
        let rc = unsafe {
            sys::unlock(
                self.name.as_ptr(),
                len_of(self.name.as_bytes())?,
                self.token as i64,
            )
        };
        check(rc).map(drop)
    }

    /// Whether `token` is the current holder's token of lock `name` (of
    /// this process's owner): a callee checking the token a caller sent.
    ///
    /// # Errors
    ///
    /// [`Error::Fenced`] if it is not; [`Error::Unavailable`].
    pub fn check(name: &str, token: u64) -> Result<()> {
        // SAFETY: the name is valid for its length.
        let rc = unsafe { sys::lock_check(name.as_ptr(), len_of(name.as_bytes())?, token as i64) };
        check(rc).map(drop)
    }

    fn fence(&self) -> Result<sys::Fence> {
        Ok(sys::Fence {
            token: self.token,
            name_ptr: self.name.as_ptr() as usize as u32,
            name_len: u32::try_from(self.name.len()).map_err(|_| Error::Invalid)?,
        })
    }
}
