//! The one table of every import a guest may use.
//!
//! Both the linker (`abi::register_all`) and the Asyncify import list used by
//! module preparation (`runtime::prepare`) are built from [`IMPORTS`], so the set
//! of calls a process can be captured in can never drift from the set of calls
//! that can block. `sdk/ABI.md` documents the same table for guest authors, and
//! a test checks the two agree.

/// The import module every Shoal ABI v1 function lives in.
pub const SHOAL_ABI_MODULE: &str = "shoal_v1";

/// The ABI version a module targets, named by its import module.
pub const SHOAL_ABI_VERSION: u32 = 1;

/// The WASI import module (preview 1) whose functions wasi-common provides.
pub const WASI_MODULE: &str = "wasi_snapshot_preview1";

/// A core Wasm value type, as used in import signatures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    /// 32-bit integer (also every guest pointer and length).
    I32,
    /// 64-bit integer (pids, durations in milliseconds).
    I64,
}

/// Who provides the host side of an import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// Shoal's own ABI, registered by one of the `abi::*` namespace files.
    Shoal,
    /// WASI preview 1, registered by wasi-common.
    Wasi,
}

/// One importable function: where it lives, its signature, and whether a
/// guest can be suspended (and later captured) inside it.
#[derive(Debug, Clone, Copy)]
pub struct ImportSpec {
    /// Import module name.
    pub module: &'static str,
    /// Import field name.
    pub name: &'static str,
    /// Parameter types, in order.
    pub params: &'static [Ty],
    /// Result types, in order.
    pub results: &'static [Ty],
    /// True when the call may wait (for a message, a timer, the scheduler).
    /// Exactly these imports are listed to Asyncify as unwind points.
    pub blocking: bool,
    /// Which host component implements it.
    pub provider: Provider,
}

use Ty::{I32, I64};

const fn shoal(
    name: &'static str,
    params: &'static [Ty],
    results: &'static [Ty],
    blocking: bool,
) -> ImportSpec {
    ImportSpec {
        module: SHOAL_ABI_MODULE,
        name,
        params,
        results,
        blocking,
        provider: Provider::Shoal,
    }
}

const fn wasi(name: &'static str, params: &'static [Ty], results: &'static [Ty]) -> ImportSpec {
    ImportSpec {
        module: WASI_MODULE,
        name,
        params,
        results,
        blocking: true,
        provider: Provider::Wasi,
    }
}

const fn wasi_tracked(
    name: &'static str,
    params: &'static [Ty],
    results: &'static [Ty],
) -> ImportSpec {
    ImportSpec {
        blocking: false,
        ..wasi(name, params, results)
    }
}

/// Every import of Shoal ABI v1, plus the WASI imports that can block.
///
/// Signatures are the contract of `sdk/ABI.md` and `sdk/include/shoal.h`.
pub const IMPORTS: &[ImportSpec] = &[
    // process namespace (abi/process.rs)
    shoal("self_pid", &[], &[I64], false),
    // spawn(module_ptr, module_len, args_ptr, args_len, pid_out_ptr) -> errno
    // Blocking: under output commit a spawn waits for a checkpoint.
    shoal("spawn", &[I32, I32, I32, I32, I32], &[I32], true),
    // spawn_on(target_ptr, target_len, module_ptr, module_len, args_ptr,
    //          args_len, pid_out_ptr) -> errno
    shoal(
        "spawn_on",
        &[I32, I32, I32, I32, I32, I32, I32],
        &[I32],
        true,
    ),
    // sleep_ms(duration_ms) -> errno
    shoal("sleep_ms", &[I64], &[I32], true),
    // yield_now() -> errno
    shoal("yield_now", &[], &[I32], true),
    // preempt() -> nothing. Inserted by the host into every loop of a
    // preemptible module (prepare/preempt.rs), never called by guest code:
    // returns at once unless a capture is requested, then unwinds there.
    shoal("preempt", &[], &[], true),
    // exit(code) -> never returns
    shoal("exit", &[I32], &[], false),
    // log(level, ptr, len) -> errno
    shoal("log", &[I32, I32, I32], &[I32], false),
    // message namespace (abi/message.rs)
    // send(pid, data_ptr, data_len) -> errno
    shoal("send", &[I64, I32, I32], &[I32], false),
    // recv(buf_ptr, buf_len, timeout_ms, info_ptr) -> length or errno
    shoal("recv", &[I32, I32, I64, I32], &[I32], true),
    // calls namespace (abi/call.rs; opt-in, see sdk/ABI.md "Calls between
    // processes"): nothing here changes what `send`/`recv` do.
    // call(pid, req_ptr, req_len, reply_ptr, reply_len, timeout_ms,
    //      down_ptr) -> reply length or errno
    shoal("call", &[I64, I32, I32, I32, I32, I64, I32], &[I32], true),
    // recv_any(buf_ptr, buf_len, timeout_ms, info_ptr) -> length or errno:
    // messages, call requests and DOWN notices, told apart by the info.
    shoal("recv_any", &[I32, I32, I64, I32], &[I32], true),
    // reply(handle, data_ptr, data_len) -> errno
    shoal("reply", &[I64, I32, I32], &[I32], false),
    // monitor(pid, ref_out_ptr) -> errno
    shoal("monitor", &[I64, I32], &[I32], false),
    // demonitor(ref) -> errno (also withdraws a pending request)
    shoal("demonitor", &[I64], &[I32], false),
    // send_request(pid, req_ptr, req_len, ref_out_ptr) -> errno: a call
    // that does not wait; its answer comes through recv_match
    shoal("send_request", &[I64, I32, I32, I32], &[I32], false),
    // recv_match(filter, value, buf_ptr, buf_len, timeout_ms, info_ptr)
    // -> length or errno: selective receive (only from a pid, or only the
    // answer to one request), other mail left queued in order
    shoal("recv_match", &[I32, I64, I32, I32, I64, I32], &[I32], true),
    // names namespace (abi/names.rs), held in Raft in the owner's namespace
    // register(name_ptr, name_len) -> errno
    shoal("register", &[I32, I32], &[I32], false),
    // unregister(name_ptr, name_len) -> errno
    shoal("unregister", &[I32, I32], &[I32], false),
    // whereis(name_ptr, name_len, pid_out_ptr) -> errno
    shoal("whereis", &[I32, I32, I32], &[I32], false),
    // join_group(name_ptr, name_len) -> errno
    shoal("join_group", &[I32, I32], &[I32], false),
    // leave_group(name_ptr, name_len) -> errno
    shoal("leave_group", &[I32, I32], &[I32], false),
    // group_pick(name_ptr, name_len, pid_out_ptr) -> errno: one live member,
    // preferring the caller's node
    shoal("group_pick", &[I32, I32, I32], &[I32], false),
    // kv namespace (abi/kv.rs): replicated key-value in the owner's
    // buckets, named after wasi-keyvalue (store, atomics). Not capture
    // points: a capture waits for them to finish.
    // kv_get(bucket_ptr, bucket_len, key_ptr, key_len, flags, buf_ptr,
    //        buf_len, info_ptr) -> value length or errno
    shoal(
        "kv_get",
        &[I32, I32, I32, I32, I32, I32, I32, I32],
        &[I32],
        false,
    ),
    // kv_exists(bucket_ptr, bucket_len, key_ptr, key_len, flags) -> 1, 0
    // or errno
    shoal("kv_exists", &[I32, I32, I32, I32, I32], &[I32], false),
    // kv_set(bucket_ptr, bucket_len, key_ptr, key_len, value_ptr,
    //        value_len, fence_ptr, version_out_ptr) -> errno
    shoal(
        "kv_set",
        &[I32, I32, I32, I32, I32, I32, I32, I32],
        &[I32],
        true,
    ),
    // kv_cas(bucket_ptr, bucket_len, key_ptr, key_len, expected_version,
    //        value_ptr, value_len, fence_ptr, version_out_ptr) -> errno
    shoal(
        "kv_cas",
        &[I32, I32, I32, I32, I64, I32, I32, I32, I32],
        &[I32],
        true,
    ),
    // kv_delete(bucket_ptr, bucket_len, key_ptr, key_len, fence_ptr)
    // -> 1 (it existed), 0 or errno
    shoal("kv_delete", &[I32, I32, I32, I32, I32], &[I32], true),
    // kv_increment(bucket_ptr, bucket_len, key_ptr, key_len, delta,
    //              value_out_ptr) -> errno
    shoal(
        "kv_increment",
        &[I32, I32, I32, I32, I64, I32],
        &[I32],
        true,
    ),
    // kv_list(bucket_ptr, bucket_len, prefix_ptr, prefix_len, cursor_ptr,
    //         cursor_len, flags, buf_ptr, buf_len) -> key count or errno
    shoal(
        "kv_list",
        &[I32, I32, I32, I32, I32, I32, I32, I32, I32],
        &[I32],
        false,
    ),
    // kv_get_many(bucket_ptr, bucket_len, keys_ptr, keys_len, flags,
    //             buf_ptr, buf_len, size_out_ptr) -> bytes written or errno
    //             (one consistent read of up to 100 keys)
    shoal(
        "kv_get_many",
        &[I32, I32, I32, I32, I32, I32, I32, I32],
        &[I32],
        false,
    ),
    // kv_set_many(bucket_ptr, bucket_len, entries_ptr, entries_len,
    //             fence_ptr) -> entries set or errno (all or nothing)
    shoal("kv_set_many", &[I32, I32, I32, I32, I32], &[I32], true),
    // kv_delete_many(bucket_ptr, bucket_len, keys_ptr, keys_len, fence_ptr)
    // -> keys that existed or errno (all or nothing)
    shoal("kv_delete_many", &[I32, I32, I32, I32, I32], &[I32], true),
    // locks namespace (abi/kv.rs): cluster-wide locks with fencing tokens.
    // lock(name_ptr, name_len, timeout_ms, token_out_ptr) -> errno
    shoal("lock", &[I32, I32, I64, I32], &[I32], true),
    // try_lock(name_ptr, name_len, token_out_ptr) -> errno; never waits
    // for the lock, but a capture point under output commit (its grant is
    // an effect, like lock's: abi/effect.rs)
    shoal("try_lock", &[I32, I32, I32], &[I32], true),
    // unlock(name_ptr, name_len, token) -> errno
    shoal("unlock", &[I32, I32, I64], &[I32], false),
    // lock_check(name_ptr, name_len, token) -> errno
    shoal("lock_check", &[I32, I32, I64], &[I32], false),
    // WASI calls that wait, replaced by capturable versions in abi/wasi.rs:
    // a guest sleeping through std::thread::sleep (poll_oneoff on one
    // relative clock) or yielding can be captured there too.
    wasi("poll_oneoff", &[I32, I32, I32, I32], &[I32]),
    wasi("sched_yield", &[], &[I32]),
    // WASI calls that do not wait but that Shoal wraps to remember which
    // files a process has open (and where), so a snapshot can reopen them.
    wasi_tracked(
        "path_open",
        &[I32, I32, I32, I32, I32, I64, I64, I32, I32],
        &[I32],
    ),
    wasi_tracked("fd_renumber", &[I32, I32], &[I32]),
    // WASI calls that change a shared volume (runtime abi/wasi_shared.rs):
    // under output commit each is an effect, captured inside the call
    // until a recorded checkpoint covers it. `fd_close` also forgets the
    // file, as the tracked calls above do.
    wasi("fd_close", &[I32], &[I32]),
    wasi("fd_sync", &[I32], &[I32]),
    wasi("fd_datasync", &[I32], &[I32]),
    wasi("path_create_directory", &[I32, I32, I32], &[I32]),
    wasi("path_unlink_file", &[I32, I32, I32], &[I32]),
    wasi("path_remove_directory", &[I32, I32, I32], &[I32]),
    wasi("path_rename", &[I32, I32, I32, I32, I32, I32], &[I32]),
    // WASI calls Shoal wraps to answer as wasmtime's own WASI does.
    wasi_tracked("sock_shutdown", &[I32, I32], &[I32]),
    // WASI calls Shoal wraps so a large request cannot hold a node's worker
    // thread: random_get fills in chunks, yielding between them.
    wasi_tracked("random_get", &[I32, I32], &[I32]),
];

/// Look up a Shoal ABI import by field name.
pub fn shoal_import(name: &str) -> Option<&'static ImportSpec> {
    IMPORTS
        .iter()
        .find(|i| i.provider == Provider::Shoal && i.name == name)
}

/// The blocking imports as (module, name) pairs, for module preparation.
#[cfg(feature = "host")]
pub fn blocking_imports() -> Vec<(String, String)> {
    IMPORTS
        .iter()
        .filter(|i| i.blocking)
        .map(|i| (i.module.to_string(), i.name.to_string()))
        .collect()
}
