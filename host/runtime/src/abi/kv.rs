//! The `kv` and `locks` namespaces: replicated key-value in the calling
//! process's owner's buckets (`kv_get`, `kv_exists`, `kv_set`, `kv_cas`,
//! `kv_delete`, `kv_increment`, `kv_list`, named after wasi-keyvalue), and
//! cluster-wide locks with fencing tokens (`lock`, `try_lock`, `unlock`,
//! `lock_check`).
//!
//! Everything here is asked of the cluster through
//! [`crate::host::ProcessHost::kv`]; the rules (owners, bounds, fencing,
//! deadlocks) live in the replicated state machine. This file checks the
//! guest's arguments (every length bounded before anything is read) and
//! moves bytes. Only `lock` waits, and it is a capture point: its wait is
//! held in Raft, so a process captured (or moved) while waiting asks again
//! where it resumes and finds its place in the queue, or its grant.
//!
//! Under output commit (issue #16) the writes, `lock` and `try_lock` are
//! effects ([`effect`]): each waits, captured inside the call, until a
//! recorded checkpoint covers it, so no other process sees a write or a
//! grant that the history a failover resumes might not make. A lock
//! request needs no effect key: a copy resumed after a failover is a new
//! incarnation, whose predecessor's grants and waits the cluster released
//! before it may ask (`Command::Reincarnated`), so asking again is asking
//! once. `unlock` is not held back: a failover releases what the lost copy
//! held anyway.

use super::effect::{self, Gate};
use super::memory::{check_writable, read_bytes, write_bytes};
use super::{arg_i32, arg_i64, deadline_of, errno, remaining_ms, Registrar};
use crate::capture::{self, wait_or_capture, Entry, PendingCall, Waited};
use crate::cluster_link::{
    EffectKey, KvBatchWrite, KvFence, KvWrite, KvWritten, LockAnswer, ReadMode,
};
use crate::process::ProcessCtx;
use shoal_abi::kv as abi;
use std::time::Instant;
use wasmtime::{Caller, Val};

const LOCK: &str = "shoal_v1.lock";
const TRY_LOCK: &str = "shoal_v1.try_lock";
const KV_SET: &str = "shoal_v1.kv_set";
const KV_CAS: &str = "shoal_v1.kv_cas";
const KV_DELETE: &str = "shoal_v1.kv_delete";
const KV_INCREMENT: &str = "shoal_v1.kv_increment";
const KV_SET_MANY: &str = "shoal_v1.kv_set_many";
const KV_DELETE_MANY: &str = "shoal_v1.kv_delete_many";

/// Read a guest string of 1..=`max` bytes of UTF-8 (`bad` otherwise).
fn read_text(
    caller: &mut Caller<'_, ProcessCtx>,
    (ptr, len): (i32, i32),
    max: usize,
    bad: i32,
) -> Result<String, i32> {
    if len < 1 || len as usize > max {
        return Err(bad);
    }
    String::from_utf8(read_bytes(caller, ptr, len)?).map_err(|_| bad)
}

/// Read a bucket name argument.
fn read_bucket(caller: &mut Caller<'_, ProcessCtx>, arg: (i32, i32)) -> Result<String, i32> {
    read_text(caller, arg, abi::BUCKET_BYTES_MAX, errno::BAD_BUCKET)
}

/// Read a key argument: 1..=`KEY_BYTES_MAX` bytes, any encoding.
fn read_key(caller: &mut Caller<'_, ProcessCtx>, (ptr, len): (i32, i32)) -> Result<Vec<u8>, i32> {
    if len < 1 || len as usize > abi::KEY_BYTES_MAX {
        return Err(errno::BAD_KEY);
    }
    read_bytes(caller, ptr, len)
}

/// Read a lock name argument.
fn read_lock_name(caller: &mut Caller<'_, ProcessCtx>, arg: (i32, i32)) -> Result<String, i32> {
    read_text(caller, arg, abi::LOCK_NAME_BYTES_MAX, errno::INVALID)
}

/// Check a lock request's arguments before it costs anything (a
/// checkpoint under output commit, a Raft write): the token slot of 8
/// bytes at `out`, the name, and that this node can ask the cluster.
fn checked_lock_name(
    caller: &mut Caller<'_, ProcessCtx>,
    name: (i32, i32),
    out: i32,
) -> Result<String, i32> {
    check_writable(caller, out, 8)?;
    let name = read_lock_name(caller, name)?;
    caller.data().host.kv()?;
    Ok(name)
}

/// Read a value argument: at most `VALUE_BYTES_MAX` bytes.
fn read_value(caller: &mut Caller<'_, ProcessCtx>, (ptr, len): (i32, i32)) -> Result<Vec<u8>, i32> {
    if len < 0 {
        return Err(errno::INVALID);
    }
    if len as usize > abi::VALUE_BYTES_MAX {
        return Err(errno::VALUE_TOO_LARGE);
    }
    read_bytes(caller, ptr, len)
}

/// Read the fence record at `ptr` (0: none).
fn read_fence(caller: &mut Caller<'_, ProcessCtx>, ptr: i32) -> Result<Option<KvFence>, i32> {
    if ptr == 0 {
        return Ok(None);
    }
    let record = read_bytes(caller, ptr, abi::FENCE_BYTES)?;
    let token = u64::from_le_bytes(record[0..8].try_into().map_err(|_| errno::FAULT)?);
    let name_ptr = i32::from_le_bytes(record[8..12].try_into().map_err(|_| errno::FAULT)?);
    let name_len = i32::from_le_bytes(record[12..16].try_into().map_err(|_| errno::FAULT)?);
    let lock = read_lock_name(caller, (name_ptr, name_len))?;
    Ok(Some(KvFence { lock, token }))
}

/// The read mode `flags` ask for (`INVALID` for unknown bits).
fn read_mode(flags: i32) -> Result<ReadMode, i32> {
    match flags {
        0 => Ok(ReadMode::Linearizable),
        abi::KV_STALE => Ok(ReadMode::Stale),
        _ => Err(errno::INVALID),
    }
}

/// The ABI result of a host function body that answers a code.
fn code(r: Result<i32, i32>) -> wasmtime::Result<Option<Val>> {
    Ok(Some(Val::I32(r.unwrap_or_else(|e| e))))
}

/// Write a `u64`/`i64` result at `ptr`.
fn write_u64(caller: &mut Caller<'_, ProcessCtx>, ptr: i32, v: u64) -> Result<(), i32> {
    write_bytes(caller, ptr, &v.to_le_bytes())
}

/// What an effect import does after [`gated`].
enum Gated<A> {
    /// Make the write: its checked arguments and its effect key.
    Go(A, Option<EffectKey>),
    /// Answer this code now (a refused argument, or the guest unwinds).
    Done(i32),
}

/// Enter effect import `import` (a key-value write, a lock request), check its arguments
/// with `check`, then wait until a recorded checkpoint covers it
/// ([`effect::commit_first`]; at once without output commit). A refused
/// argument costs no checkpoint.
async fn gated<A>(
    caller: &mut Caller<'_, ProcessCtx>,
    import: &str,
    check: impl FnOnce(&mut Caller<'_, ProcessCtx>) -> Result<A, i32>,
) -> wasmtime::Result<Gated<A>> {
    let entry = capture::enter(caller, import).await?;
    let args = match check(caller).and_then(|a| caller.data().host.kv().map(|_| a)) {
        Ok(a) => a,
        Err(e) => return Ok(Gated::Done(e)),
    };
    Ok(match effect::commit_first(caller, import, entry).await? {
        Gate::Make(key) => Gated::Go(args, key),
        Gate::Unwound => Gated::Done(effect::UNWINDING),
    })
}

/// A single-key write's checked arguments.
struct KeyWrite {
    bucket: String,
    key: Vec<u8>,
    fence: Option<KvFence>,
}

/// Check a single-key write's bucket, key and fence (`out`: a result
/// slot of 8 bytes, if any).
fn check_key_write(
    caller: &mut Caller<'_, ProcessCtx>,
    (bucket, key): ((i32, i32), (i32, i32)),
    fence_ptr: i32,
    out: Option<i32>,
) -> Result<KeyWrite, i32> {
    if let Some(out) = out {
        check_writable(caller, out, 8)?;
    }
    Ok(KeyWrite {
        bucket: read_bucket(caller, bucket)?,
        key: read_key(caller, key)?,
        fence: read_fence(caller, fence_ptr)?,
    })
}

/// Make a single-key write (after [`gated`]).
async fn write_key(
    caller: &mut Caller<'_, ProcessCtx>,
    w: KeyWrite,
    op: KvWrite,
    effect: Option<EffectKey>,
) -> Result<KvWritten, i32> {
    let (kv, me) = (caller.data().host.kv()?, caller.data().pid);
    kv.kv_write(me, &w.bucket, &w.key, op, w.fence, effect)
        .await
}

/// `kv_set`, `kv_cas`: write and put the new version at `out`.
async fn versioned_write(
    caller: &mut Caller<'_, ProcessCtx>,
    import: &str,
    target: ((i32, i32), (i32, i32)),
    value: (i32, i32),
    expected: Option<u64>,
    (fence_ptr, out): (i32, i32),
) -> wasmtime::Result<Result<i32, i32>> {
    let checked = gated(caller, import, |c| {
        let w = check_key_write(c, target, fence_ptr, Some(out))?;
        Ok((w, read_value(c, value)?))
    })
    .await?;
    let ((w, value), effect) = match checked {
        Gated::Go(a, effect) => (a, effect),
        Gated::Done(code) => return Ok(Ok(code)),
    };
    let op = match expected {
        None => KvWrite::Set(value),
        Some(expected) => KvWrite::Cas { expected, value },
    };
    Ok(match write_key(caller, w, op, effect).await {
        Ok(KvWritten::Version(v)) => write_u64(caller, out, v).map(|()| errno::OK),
        Ok(_) => Err(errno::INVALID),
        Err(e) => Err(e),
    })
}

/// Most bytes a batch argument may span: every entry's bytes plus its
/// length fields. Checked before the guest's memory is read.
const BATCH_ENCODED_BYTES_MAX: usize = abi::BATCH_BYTES_MAX + abi::BATCH_ENTRIES_MAX * 6;

/// Read a batch argument's bytes (bounded first: `BAD_BATCH`).
fn read_batch(caller: &mut Caller<'_, ProcessCtx>, (ptr, len): (i32, i32)) -> Result<Vec<u8>, i32> {
    if len < 0 {
        return Err(errno::INVALID);
    }
    if len as usize > BATCH_ENCODED_BYTES_MAX {
        return Err(errno::BAD_BATCH);
    }
    read_bytes(caller, ptr, len)
}

/// `kv_set_many`, `kv_delete_many`: the count the batch answers.
async fn batch_write(
    caller: &mut Caller<'_, ProcessCtx>,
    bucket: (i32, i32),
    batch: (i32, i32),
    set: bool,
    fence_ptr: i32,
) -> wasmtime::Result<Result<i32, i32>> {
    let import = if set { KV_SET_MANY } else { KV_DELETE_MANY };
    let checked = gated(caller, import, |c| {
        let bucket = read_bucket(c, bucket)?;
        let bytes = read_batch(c, batch)?;
        let batch = if set {
            KvBatchWrite::Set(abi::decode_entries(&bytes)?)
        } else {
            KvBatchWrite::Delete(abi::decode_keys(&bytes)?)
        };
        Ok((bucket, batch, read_fence(c, fence_ptr)?))
    })
    .await?;
    let ((bucket, batch, fence), effect) = match checked {
        Gated::Go(a, effect) => (a, effect),
        Gated::Done(code) => return Ok(Ok(code)),
    };
    let made = async {
        let (kv, me) = (caller.data().host.kv()?, caller.data().pid);
        let count = kv.kv_write_many(me, &bucket, batch, fence, effect).await?;
        i32::try_from(count).map_err(|_| errno::INVALID)
    };
    Ok(made.await)
}

/// Encode keys for `kv_list`'s buffer: as many whole entries as fit in
/// `room` bytes; `None` if there are keys and not even one fits.
fn encode_keys(keys: &[Vec<u8>], room: usize) -> Option<(Vec<u8>, usize)> {
    let mut out = Vec::new();
    let mut count = 0;
    for k in keys {
        if out.len() + 2 + k.len() > room {
            break;
        }
        out.extend_from_slice(&(k.len() as u16).to_le_bytes());
        out.extend_from_slice(k);
        count += 1;
    }
    (count > 0 || keys.is_empty()).then_some((out, count))
}

/// Register the namespaces' imports.
pub fn register(r: &mut Registrar<'_>) -> wasmtime::Result<()> {
    r.define("kv_get", |mut caller, params| {
        let a: Vec<i32> = (0..8).map(|i| arg_i32(params, i)).collect();
        Box::new(async move {
            let r = async {
                let (buf_ptr, buf_len, info_ptr) = (a[5], a[6], a[7]);
                check_writable(&mut caller, info_ptr, abi::KV_INFO_BYTES)?;
                if buf_len < 0 {
                    return Err(errno::INVALID);
                }
                check_writable(&mut caller, buf_ptr, buf_len)?;
                let bucket = read_bucket(&mut caller, (a[0], a[1]))?;
                let key = read_key(&mut caller, (a[2], a[3]))?;
                let mode = read_mode(a[4])?;
                let (kv, me) = (caller.data().host.kv()?, caller.data().pid);
                let (value, version) = kv
                    .kv_read(me, &bucket, &key, mode)
                    .await?
                    .ok_or(errno::NOT_FOUND)?;
                let mut info = [0u8; 16];
                info[0..8].copy_from_slice(&version.to_le_bytes());
                info[8..16].copy_from_slice(&(value.len() as u64).to_le_bytes());
                write_bytes(&mut caller, info_ptr, &info)?;
                if value.len() > buf_len as usize {
                    return Err(errno::BUFFER_TOO_SMALL);
                }
                write_bytes(&mut caller, buf_ptr, &value)?;
                Ok(value.len() as i32)
            }
            .await;
            code(r)
        })
    })?;
    r.define("kv_exists", |mut caller, params| {
        let a: Vec<i32> = (0..5).map(|i| arg_i32(params, i)).collect();
        Box::new(async move {
            let r = async {
                let bucket = read_bucket(&mut caller, (a[0], a[1]))?;
                let key = read_key(&mut caller, (a[2], a[3]))?;
                let mode = read_mode(a[4])?;
                let (kv, me) = (caller.data().host.kv()?, caller.data().pid);
                let found = kv.kv_read(me, &bucket, &key, mode).await?;
                Ok(i32::from(found.is_some()))
            }
            .await;
            code(r)
        })
    })?;
    r.define("kv_set", |mut caller, params| {
        let a: Vec<i32> = (0..8).map(|i| arg_i32(params, i)).collect();
        Box::new(async move {
            let target = ((a[0], a[1]), (a[2], a[3]));
            code(
                versioned_write(
                    &mut caller,
                    KV_SET,
                    target,
                    (a[4], a[5]),
                    None,
                    (a[6], a[7]),
                )
                .await?,
            )
        })
    })?;
    r.define("kv_cas", |mut caller, params| {
        let a: Vec<i32> = [0, 1, 2, 3, 5, 6, 7, 8]
            .iter()
            .map(|i| arg_i32(params, *i))
            .collect();
        let expected = arg_i64(params, 4) as u64;
        Box::new(async move {
            let target = ((a[0], a[1]), (a[2], a[3]));
            let (value, fence_out) = ((a[4], a[5]), (a[6], a[7]));
            code(
                versioned_write(
                    &mut caller,
                    KV_CAS,
                    target,
                    value,
                    Some(expected),
                    fence_out,
                )
                .await?,
            )
        })
    })?;
    r.define("kv_delete", |mut caller, params| {
        let a: Vec<i32> = (0..5).map(|i| arg_i32(params, i)).collect();
        Box::new(async move {
            let target = ((a[0], a[1]), (a[2], a[3]));
            let checked = gated(&mut caller, KV_DELETE, |c| {
                check_key_write(c, target, a[4], None)
            })
            .await?;
            let (w, effect) = match checked {
                Gated::Go(w, effect) => (w, effect),
                Gated::Done(c) => return code(Ok(c)),
            };
            code(
                match write_key(&mut caller, w, KvWrite::Delete, effect).await {
                    Ok(KvWritten::Deleted(existed)) => Ok(i32::from(existed)),
                    Ok(_) => Err(errno::INVALID),
                    Err(e) => Err(e),
                },
            )
        })
    })?;
    r.define("kv_increment", |mut caller, params| {
        let a: Vec<i32> = [0, 1, 2, 3, 5]
            .iter()
            .map(|i| arg_i32(params, *i))
            .collect();
        let delta = arg_i64(params, 4);
        Box::new(async move {
            let target = ((a[0], a[1]), (a[2], a[3]));
            let checked = gated(&mut caller, KV_INCREMENT, |c| {
                check_key_write(c, target, 0, Some(a[4]))
            })
            .await?;
            let (w, effect) = match checked {
                Gated::Go(w, effect) => (w, effect),
                Gated::Done(c) => return code(Ok(c)),
            };
            code(
                match write_key(&mut caller, w, KvWrite::Increment(delta), effect).await {
                    Ok(KvWritten::Counter(n)) => {
                        write_u64(&mut caller, a[4], n as u64).map(|()| errno::OK)
                    }
                    Ok(_) => Err(errno::INVALID),
                    Err(e) => Err(e),
                },
            )
        })
    })?;
    r.define("kv_list", |mut caller, params| {
        let a: Vec<i32> = (0..9).map(|i| arg_i32(params, i)).collect();
        Box::new(async move {
            let r = async {
                let (buf_ptr, buf_len) = (a[7], a[8]);
                if buf_len < 0 || a[3] < 0 || a[5] < 0 {
                    return Err(errno::INVALID);
                }
                check_writable(&mut caller, buf_ptr, buf_len)?;
                let bucket = read_bucket(&mut caller, (a[0], a[1]))?;
                // An empty prefix lists all; an empty cursor starts at the
                // first key (keys are never empty).
                let prefix = match a[3] {
                    0 => Vec::new(),
                    _ => read_key(&mut caller, (a[2], a[3]))?,
                };
                let cursor = match a[5] {
                    0 => None,
                    _ => Some(read_key(&mut caller, (a[4], a[5]))?),
                };
                let mode = read_mode(a[6])?;
                let (kv, me) = (caller.data().host.kv()?, caller.data().pid);
                let keys = kv
                    .kv_list(me, &bucket, &prefix, cursor.as_deref(), mode)
                    .await?;
                let (bytes, count) =
                    encode_keys(&keys, buf_len as usize).ok_or(errno::BUFFER_TOO_SMALL)?;
                write_bytes(&mut caller, buf_ptr, &bytes)?;
                Ok(count as i32)
            }
            .await;
            code(r)
        })
    })?;
    r.define("kv_get_many", |mut caller, params| {
        let a: Vec<i32> = (0..8).map(|i| arg_i32(params, i)).collect();
        Box::new(async move {
            let r = async {
                let (buf_ptr, buf_len, size_ptr) = (a[5], a[6], a[7]);
                check_writable(&mut caller, size_ptr, 8)?;
                if buf_len < 0 {
                    return Err(errno::INVALID);
                }
                check_writable(&mut caller, buf_ptr, buf_len)?;
                let bucket = read_bucket(&mut caller, (a[0], a[1]))?;
                let keys = abi::decode_keys(&read_batch(&mut caller, (a[2], a[3]))?)?;
                let mode = read_mode(a[4])?;
                let (kv, me) = (caller.data().host.kv()?, caller.data().pid);
                let found = kv.kv_read_many(me, &bucket, &keys, mode).await?;
                let size: usize = found
                    .iter()
                    .map(|f| abi::MANY_RECORD_HEADER_BYTES + f.as_ref().map_or(0, |(v, _)| v.len()))
                    .sum();
                write_u64(&mut caller, size_ptr, size as u64)?;
                if size > buf_len as usize {
                    return Err(errno::BUFFER_TOO_SMALL);
                }
                let mut out = Vec::with_capacity(size);
                for f in &found {
                    let (value, version) = f
                        .as_ref()
                        .map_or((&[][..], 0), |(v, version)| (v.as_slice(), *version));
                    out.extend_from_slice(&version.to_le_bytes());
                    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
                    out.extend_from_slice(value);
                }
                write_bytes(&mut caller, buf_ptr, &out)?;
                i32::try_from(size).map_err(|_| errno::BUFFER_TOO_SMALL)
            }
            .await;
            code(r)
        })
    })?;
    for (import, set) in [("kv_set_many", true), ("kv_delete_many", false)] {
        r.define(import, move |mut caller, params| {
            let a: Vec<i32> = (0..5).map(|i| arg_i32(params, i)).collect();
            Box::new(async move {
                code(batch_write(&mut caller, (a[0], a[1]), (a[2], a[3]), set, a[4]).await?)
            })
        })?;
    }
    r.define("lock", |mut caller, params| {
        let (ptr, len) = (arg_i32(params, 0), arg_i32(params, 1));
        let timeout_ms = arg_i64(params, 2);
        let out = arg_i32(params, 3);
        Box::new(async move {
            let entry = capture::enter(&mut caller, LOCK).await?;
            let timeout_ms = match &entry {
                Entry::Fresh => timeout_ms,
                Entry::Resumed(p) => p.remaining_ms.map_or(-1, |ms| ms as i64),
            };
            let deadline = deadline_of(timeout_ms);
            let name = match checked_lock_name(&mut caller, (ptr, len), out) {
                Ok(name) => name,
                Err(e) => return code(Err(e)),
            };
            // Captured while waiting in the queue: the request was made
            // (behind its gate, if any); ask again where it resumed.
            let asked_before = matches!(&entry, Entry::Resumed(p) if p.effect.is_none());
            if !asked_before {
                if let Gate::Unwound =
                    effect::commit_first_within(&mut caller, LOCK, entry, deadline).await?
                {
                    return code(Ok(effect::UNWINDING));
                }
            }
            let asked = async {
                let (kv, me) = (caller.data().host.kv()?, caller.data().pid);
                let answer = kv.lock(me, &name, true).await?;
                Ok((kv, me, answer))
            }
            .await;
            let (kv, me, answer) = match asked {
                Ok(a) => a,
                Err(e) => return code(Err(e)),
            };
            let token = match answer {
                LockAnswer::Granted(t) => t,
                LockAnswer::Queued => {
                    let signal = caller.data().capture.clone();
                    let capturable = caller.data().capturable;
                    let wait_max = deadline.map(|d| d.saturating_duration_since(Instant::now()));
                    let wait = kv.lock_wait(me, &name, wait_max);
                    match wait_or_capture(&signal, capturable, wait).await {
                        Waited::Done(Ok(t)) => t,
                        Waited::Done(Err(e)) => return code(Err(e)),
                        Waited::Capture => {
                            let pending = PendingCall {
                                import: LOCK.to_string(),
                                remaining_ms: remaining_ms(deadline),
                                effect: None,
                            };
                            capture::unwind(&mut caller, pending).await?;
                            // Ignored: the guest is unwinding.
                            return code(Ok(errno::OK));
                        }
                    }
                }
            };
            code(write_u64(&mut caller, out, token).map(|()| errno::OK))
        })
    })?;
    r.define("try_lock", |mut caller, params| {
        let (ptr, len, out) = (arg_i32(params, 0), arg_i32(params, 1), arg_i32(params, 2));
        Box::new(async move {
            let checked = gated(&mut caller, TRY_LOCK, |c| {
                check_writable(c, out, 8)?;
                read_lock_name(c, (ptr, len))
            })
            .await?;
            // No effect key: see the module docs.
            let name = match checked {
                Gated::Go(name, _) => name,
                Gated::Done(c) => return code(Ok(c)),
            };
            let r = async {
                let (kv, me) = (caller.data().host.kv()?, caller.data().pid);
                match kv.lock(me, &name, false).await? {
                    LockAnswer::Granted(t) => write_u64(&mut caller, out, t).map(|()| errno::OK),
                    LockAnswer::Queued => Err(errno::BUSY),
                }
            }
            .await;
            code(r)
        })
    })?;
    for (import, check) in [("unlock", false), ("lock_check", true)] {
        r.define(import, move |mut caller, params| {
            let (ptr, len) = (arg_i32(params, 0), arg_i32(params, 1));
            let token = arg_i64(params, 2) as u64;
            Box::new(async move {
                let r = async {
                    let name = read_lock_name(&mut caller, (ptr, len))?;
                    let (kv, me) = (caller.data().host.kv()?, caller.data().pid);
                    let done = if check {
                        kv.lock_check(me, &name, token).await
                    } else {
                        kv.unlock(me, &name, token).await
                    };
                    done.map(|()| errno::OK)
                }
                .await;
                code(r)
            })
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::encode_keys;

    #[test]
    fn list_entries_are_whole_and_at_least_one_or_refused() {
        let keys = vec![b"ab".to_vec(), b"cde".to_vec()];
        assert_eq!(
            encode_keys(&keys, 100),
            Some((b"\x02\0ab\x03\0cde".to_vec(), 2))
        );
        assert_eq!(encode_keys(&keys, 8), Some((b"\x02\0ab".to_vec(), 1)));
        assert_eq!(encode_keys(&keys, 3), None);
        assert_eq!(encode_keys(&[], 0), Some((Vec::new(), 0)));
    }
}
