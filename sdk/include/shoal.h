/*
 * shoal.h - Shoal guest ABI v1 for C, C++ and anything that links through clang.
 *
 * Every function here is a WebAssembly import from the module "shoal_v1".
 * The full contract (argument checks, blocking/capture points, limits) is in
 * sdk/ABI.md; the host's source of truth is host/src/abi/table.rs and
 * host/src/abi/errno.rs.
 *
 * Build a guest with:
 *     clang --target=wasm32-wasi -O2 -I<repo>/sdk/include -o guest.wasm guest.c
 *
 * Conventions:
 *   - Pointers are 32-bit offsets into linear memory (wasm32), lengths are
 *     int32_t; a negative length is SHOAL_EINVALID, a range outside memory is
 *     SHOAL_EFAULT, and both are checked before the call does anything else.
 *   - Pids are opaque, non-zero, cluster-unique 64-bit values (shoal_pid_t);
 *     print them with PRIu64.
 *   - Fallible calls return SHOAL_OK (0) or a non-negative length on success,
 *     and one of the negative SHOAL_E* codes on failure.
 *   - Blocking calls (capture points: the process can be snapshotted while
 *     inside them): shoal_sleep_ms, shoal_yield_now, shoal_recv, and the WASI
 *     calls poll_oneoff, fd_read and sched_yield.
 */
#ifndef SHOAL_H
#define SHOAL_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Version ----------------------------------------------------------- */

/** ABI version implemented by this header; also in the import module name. */
#define SHOAL_ABI_VERSION 1
/** Import module every function below lives in. */
#define SHOAL_ABI_MODULE "shoal_v1"

/* ---- Error codes (stable; see the table in sdk/ABI.md) ------------------ */

/** Success. */
#define SHOAL_OK 0
/** A pointer/length range is not inside the guest's linear memory. */
#define SHOAL_EFAULT -1
/** A malformed argument: negative length, bad UTF-8, out-of-range value. */
#define SHOAL_EINVALID -2
/** No live process has that pid. */
#define SHOAL_ENO_PROCESS -3
/** The wait ended because its timeout elapsed. */
#define SHOAL_ETIMEOUT -4
/** The receive buffer is smaller than the next message (which stays queued). */
#define SHOAL_EBUFFER_TOO_SMALL -5
/** The message is larger than the per-message limit (SHOAL_MAX_MESSAGE_SIZE). */
#define SHOAL_ETOO_LARGE -6
/** The receiver's mailbox is full; nothing was queued, retry later. */
#define SHOAL_EMAILBOX_FULL -7
/** No module with that hash or name is known. */
#define SHOAL_ENO_MODULE -8
/** The module exists but could not be prepared or instantiated. */
#define SHOAL_ESPAWN_FAILED -9
/** A node limit (process count) was reached. */
#define SHOAL_ELIMIT -10
/* No node fits a spawn's placement target. */
#define SHOAL_ENO_NODE -11
#define SHOAL_ECALLEE_DOWN -12
#define SHOAL_ENODE_DOWN -13
#define SHOAL_ENAME_TAKEN -14
/* The callee cannot receive calls (imports neither recv_any nor recv_match). */
#define SHOAL_ENOT_CALLABLE -15
/* Key-value and locks (see ABI.md, "Key-value and locks"). */
#define SHOAL_ENOT_FOUND -16
#define SHOAL_EVERSION_MISMATCH -17
#define SHOAL_EFENCED -18
#define SHOAL_EBAD_KEY -19
#define SHOAL_EVALUE_TOO_LARGE -20
#define SHOAL_EBAD_BUCKET -21
#define SHOAL_EQUOTA -22
#define SHOAL_ERATE_LIMITED -23
#define SHOAL_ENOT_A_COUNTER -24
#define SHOAL_EOVERFLOW -25
#define SHOAL_EBUSY -26
#define SHOAL_EDEADLOCK -27
#define SHOAL_ELOCK_LOST -28
/* The cluster could not confirm it; a write may still be applied later. */
#define SHOAL_EUNAVAILABLE -29
#define SHOAL_EBAD_BATCH -30

/* ---- Limits and constants ----------------------------------------------- */

/** Largest message shoal_send accepts, in bytes (1 MiB). */
#define SHOAL_MAX_MESSAGE_SIZE 1048576

/** shoal_log levels. */
#define SHOAL_LOG_ERROR 0
#define SHOAL_LOG_WARN 1
#define SHOAL_LOG_INFO 2
#define SHOAL_LOG_DEBUG 3
#define SHOAL_LOG_TRACE 4

/** shoal_recv timeout that waits forever (any negative value does). */
#define SHOAL_WAIT_FOREVER ((int64_t)-1)
/** shoal_recv timeout that only polls. */
#define SHOAL_NO_WAIT ((int64_t)0)

/* ---- Types -------------------------------------------------------------- */

/** A process id: opaque, non-zero, unique in the cluster. */
typedef uint64_t shoal_pid_t;

/**
 * What shoal_recv writes at info_ptr (16 bytes, little-endian):
 * the sender's pid, the message length, and a reserved word (always 0).
 * On SHOAL_EBUFFER_TOO_SMALL only `length` is meaningful: the size needed.
 */
typedef struct shoal_recv_info {
    uint64_t sender_pid; /**< pid of the process that sent the message */
    uint32_t length;     /**< message length in bytes */
    uint32_t reserved;   /**< always 0 */
} shoal_recv_info_t;

#ifdef __cplusplus
static_assert(sizeof(shoal_recv_info_t) == 16, "shoal_recv_info_t must be 16 bytes");
#else
_Static_assert(sizeof(shoal_recv_info_t) == 16, "shoal_recv_info_t must be 16 bytes");
#endif

/* ---- Imports ------------------------------------------------------------ */

#if defined(__wasm__)
#define SHOAL_IMPORT(name) __attribute__((import_module("shoal_v1"), import_name(name)))
#else
/* Not WebAssembly: the declarations still parse (for tooling), but there is
 * nothing to link against. */
#define SHOAL_IMPORT(name)
#endif

/**
 * Returns the pid of the calling process (non-zero, stable for its life).
 * Never fails. Import: shoal_v1.self_pid () -> i64.
 */
SHOAL_IMPORT("self_pid")
shoal_pid_t shoal_self_pid(void);

/**
 * Starts a new process and writes its pid to *pid_out (8 bytes, only on
 * success). Blocks only in a process under output commit (--restart
 * on-failure|always): it waits, as a capture point, for a recorded checkpoint
 * (see ABI.md, spawn).
 *
 * module/module_len: UTF-8 module reference, "sha256:<64 lowercase hex>" or a
 *   registered name (no NUL terminator needed).
 * args/args_len: zero or more NUL-terminated UTF-8 strings back to back, which
 *   become argv[1..] (argv[0] is the module reference). args_len 0 = none.
 *   Example: "pong\0" "7\0" with args_len 7.
 * The child gets no environment variables and no preopened directories.
 *
 * Returns SHOAL_OK, or SHOAL_EFAULT, SHOAL_EINVALID, SHOAL_ENO_MODULE,
 * SHOAL_ESPAWN_FAILED, SHOAL_ELIMIT.
 * Import: shoal_v1.spawn (i32, i32, i32, i32, i32) -> i32.
 */
SHOAL_IMPORT("spawn")
int32_t shoal_spawn(const void *module, int32_t module_len,
                    const void *args, int32_t args_len,
                    shoal_pid_t *pid_out);

/**
 * shoal_spawn with a placement target (UTF-8, no NUL needed): "" lets the
 * cluster's scheduler choose, a node name picks that node, "k=v[,k=v]" picks
 * among nodes with those labels. Waits for the chosen node to start the
 * process; a capture point only under output commit, as shoal_spawn.
 * Returns as shoal_spawn, plus SHOAL_ENO_NODE.
 * Import: shoal_v1.spawn_on (i32, i32, i32, i32, i32, i32, i32) -> i32.
 */
SHOAL_IMPORT("spawn_on")
int32_t shoal_spawn_on(const void *target, int32_t target_len,
                       const void *module, int32_t module_len,
                       const void *args, int32_t args_len,
                       shoal_pid_t *pid_out);

/**
 * Blocks for at least `ms` milliseconds. Capture point.
 * Returns SHOAL_OK, or SHOAL_EINVALID if ms < 0.
 * Import: shoal_v1.sleep_ms (i64) -> i32.
 */
SHOAL_IMPORT("sleep_ms")
int32_t shoal_sleep_ms(int64_t ms);

/**
 * Lets other processes run, then returns SHOAL_OK. Capture point.
 * Import: shoal_v1.yield_now () -> i32.
 */
SHOAL_IMPORT("yield_now")
int32_t shoal_yield_now(void);

/**
 * Reserved for the host: it inserts calls to this import into every loop of
 * a module spawned as preemptible (a capture point every few thousand loop
 * iterations). Guests have no reason to call it; doing so is harmless (it
 * returns at once unless a capture is requested, and is then a capture
 * point). Declared only so the header lists the whole ABI.
 * Import: shoal_v1.preempt () -> ().
 */
SHOAL_IMPORT("preempt")
void shoal_preempt(void);

/**
 * Ends the calling process with exit code `code`; never returns. Queued
 * messages are dropped. Flush stdio first (fflush(NULL)): the host does not
 * see libc's buffers.
 * Import: shoal_v1.exit (i32) -> ().
 */
SHOAL_IMPORT("exit")
__attribute__((noreturn))
void shoal_exit(int32_t code);

/**
 * Appends UTF-8 text (ptr/len, no NUL needed) to the process log at `level`
 * (SHOAL_LOG_ERROR .. SHOAL_LOG_TRACE). Not stdout. Does not block.
 * Returns SHOAL_OK, or SHOAL_EFAULT, SHOAL_EINVALID (negative len, bad level,
 * not UTF-8).
 * Import: shoal_v1.log (i32, i32, i32) -> i32.
 */
SHOAL_IMPORT("log")
int32_t shoal_log(int32_t level, const void *ptr, int32_t len);

/**
 * Queues a copy of data/data_len (0 .. SHOAL_MAX_MESSAGE_SIZE bytes) in the
 * mailbox of `pid`; never blocks. Messages from one sender to one receiver
 * arrive in order.
 * Returns SHOAL_OK, or SHOAL_EFAULT, SHOAL_EINVALID, SHOAL_ENO_PROCESS,
 * SHOAL_ETOO_LARGE, SHOAL_EMAILBOX_FULL (nothing queued: yield/sleep and retry).
 * Import: shoal_v1.send (i64, i32, i32) -> i32.
 */
SHOAL_IMPORT("send")
int32_t shoal_send(shoal_pid_t pid, const void *data, int32_t data_len);

/**
 * Waits for the oldest message in the caller's mailbox (timeout_ms < 0:
 * forever, 0: poll) and copies it into buf/buf_len. Capture point.
 *
 * Returns the message length (>= 0) and removes the message; if info is not
 * NULL, fills *info (sender pid, length). Returns SHOAL_EBUFFER_TOO_SMALL if
 * the message is longer than buf_len: the message stays queued and
 * info->length (if info is not NULL) holds the size needed. Other errors:
 * SHOAL_EFAULT, SHOAL_EINVALID, SHOAL_ETIMEOUT.
 * Import: shoal_v1.recv (i32, i32, i64, i32) -> i32.
 */
SHOAL_IMPORT("recv")
int32_t shoal_recv(void *buf, int32_t buf_len, int64_t timeout_ms,
                   shoal_recv_info_t *info);

/* ---- Calls between processes (opt-in; see ABI.md "Calls between processes") ---- */

/** recv_any info kinds. */
#define SHOAL_KIND_MESSAGE 0
#define SHOAL_KIND_CALL 1
#define SHOAL_KIND_DOWN 2
/** The reply to a request made with shoal_send_request (recv_match only). */
#define SHOAL_KIND_REPLY 3

/** shoal_recv_match filters. */
#define SHOAL_MATCH_FROM 1  /* value: a pid; what recv_any would return, from it only */
#define SHOAL_MATCH_REPLY 2 /* value: a request reference; only its answer */

/** Why a process went down (DOWN notices, CALLEE_DOWN). */
#define SHOAL_REASON_EXIT 1
#define SHOAL_REASON_TRAP 2
#define SHOAL_REASON_KILLED 3
#define SHOAL_REASON_NOPROC 4
#define SHOAL_REASON_NODE_DOWN 5
#define SHOAL_REASON_OVERLOADED 6
#define SHOAL_REASON_NOT_CALLABLE 7

/** What shoal_recv_any writes at info (32 bytes, little-endian). */
typedef struct shoal_recv_any_info {
    uint64_t sender_pid; /* for a DOWN: the process that went down */
    uint32_t length;     /* payload length */
    uint32_t kind;       /* SHOAL_KIND_* */
    uint64_t reference;  /* call: reply handle; DOWN: monitor reference */
    int32_t reason;      /* DOWN: SHOAL_REASON_* */
    int32_t code;        /* DOWN with SHOAL_REASON_EXIT: the exit code */
} shoal_recv_any_info_t;

/** What shoal_call writes at down on SHOAL_ECALLEE_DOWN / SHOAL_ENODE_DOWN. */
typedef struct shoal_down_info {
    int32_t reason; /* SHOAL_REASON_* */
    int32_t code;   /* the exit code for SHOAL_REASON_EXIT */
} shoal_down_info_t;

/**
 * Calls pid with the request and waits up to timeout_ms (< 0: forever) for
 * its reply, copied into reply/reply_len. Capture point; other messages stay
 * queued in order. Returns the reply length, or SHOAL_EFAULT, SHOAL_EINVALID,
 * SHOAL_ETOO_LARGE, SHOAL_EMAILBOX_FULL, SHOAL_ENO_PROCESS, SHOAL_ETIMEOUT,
 * SHOAL_EBUFFER_TOO_SMALL (reply lost), SHOAL_ECALLEE_DOWN or
 * SHOAL_ENODE_DOWN (then *down, if down is not NULL, says why).
 * Import: shoal_v1.call (i64, i32, i32, i32, i32, i64, i32) -> i32.
 */
SHOAL_IMPORT("call")
int32_t shoal_call(uint64_t pid, const void *req, int32_t req_len, void *reply,
                   int32_t reply_len, int64_t timeout_ms, shoal_down_info_t *down);

/**
 * shoal_recv that also receives call requests and DOWN notices, told apart
 * by info->kind (info is required). Capture point.
 * Import: shoal_v1.recv_any (i32, i32, i64, i32) -> i32.
 */
SHOAL_IMPORT("recv_any")
int32_t shoal_recv_any(void *buf, int32_t buf_len, int64_t timeout_ms,
                       shoal_recv_any_info_t *info);

/**
 * Answers the call whose request carried handle. SHOAL_OK, or SHOAL_EINVALID
 * (unknown or already answered), SHOAL_EFAULT, SHOAL_ETOO_LARGE.
 * Import: shoal_v1.reply (i64, i32, i32) -> i32.
 */
SHOAL_IMPORT("reply")
int32_t shoal_reply(uint64_t handle, const void *data, int32_t data_len);

/**
 * Be told (a DOWN through shoal_recv_any) when pid ends; writes the monitor
 * reference at *ref. SHOAL_OK, SHOAL_EINVALID, SHOAL_ELIMIT,
 * SHOAL_EMAILBOX_FULL, SHOAL_EFAULT.
 * Import: shoal_v1.monitor (i64, i32) -> i32.
 */
SHOAL_IMPORT("monitor")
int32_t shoal_monitor(uint64_t pid, uint64_t *ref);

/**
 * Withdraw a monitor, or a pending request (its answer is then dropped).
 * SHOAL_OK or SHOAL_EINVALID.
 * Import: shoal_v1.demonitor (i64) -> i32.
 */
SHOAL_IMPORT("demonitor")
int32_t shoal_demonitor(uint64_t ref);

/**
 * A call that does not wait: sends the request to pid, writes its reference
 * at *ref and returns. Receive the answer with shoal_recv_match and
 * SHOAL_MATCH_REPLY. SHOAL_OK, or SHOAL_EFAULT, SHOAL_EINVALID (itself),
 * SHOAL_ETOO_LARGE, SHOAL_ELIMIT (1024 pending), SHOAL_ENO_PROCESS,
 * SHOAL_EMAILBOX_FULL.
 * Import: shoal_v1.send_request (i64, i32, i32, i32) -> i32.
 */
SHOAL_IMPORT("send_request")
int32_t shoal_send_request(uint64_t pid, const void *req, int32_t req_len,
                           uint64_t *ref);

/**
 * Selective receive: with SHOAL_MATCH_FROM, what shoal_recv_any would
 * return, only from pid value; with SHOAL_MATCH_REPLY, only the answer to
 * request value (SHOAL_KIND_REPLY, or SHOAL_KIND_DOWN with the reason, which
 * ends the request). Other mail stays queued in order. Capture point.
 * Results as shoal_recv_any; SHOAL_EINVALID for an unknown filter or a
 * request that is not pending.
 * Import: shoal_v1.recv_match (i32, i64, i32, i32, i64, i32) -> i32.
 */
SHOAL_IMPORT("recv_match")
int32_t shoal_recv_match(int32_t filter, int64_t value, void *buf,
                         int32_t buf_len, int64_t timeout_ms,
                         shoal_recv_any_info_t *info);

/**
 * Gives the caller the name (UTF-8, 1..255 bytes) in its owner's namespace,
 * held by the cluster until it unregisters or ends. SHOAL_OK,
 * SHOAL_ENAME_TAKEN, SHOAL_ELIMIT, SHOAL_EINVALID, SHOAL_EFAULT, SHOAL_ENO_NODE.
 * Import: shoal_v1.register (i32, i32) -> i32.
 */
SHOAL_IMPORT("register")
int32_t shoal_register(const char *name, int32_t name_len);

/**
 * Gives the name up. SHOAL_OK or SHOAL_EINVALID (not held by the caller).
 * Import: shoal_v1.unregister (i32, i32) -> i32.
 */
SHOAL_IMPORT("unregister")
int32_t shoal_unregister(const char *name, int32_t name_len);

/**
 * Writes the pid the name names (caller's owner's namespace) at *pid.
 * SHOAL_OK or SHOAL_ENO_PROCESS, SHOAL_EINVALID, SHOAL_EFAULT.
 * Import: shoal_v1.whereis (i32, i32, i32) -> i32.
 */
SHOAL_IMPORT("whereis")
int32_t shoal_whereis(const char *name, int32_t name_len, uint64_t *pid);

/**
 * Joins the group (caller's owner's namespace). SHOAL_OK, SHOAL_ELIMIT,
 * SHOAL_EINVALID, SHOAL_EFAULT, SHOAL_ENO_NODE.
 * Import: shoal_v1.join_group (i32, i32) -> i32.
 */
SHOAL_IMPORT("join_group")
int32_t shoal_join_group(const char *name, int32_t name_len);

/**
 * Leaves the group. SHOAL_OK or SHOAL_EINVALID (not a member).
 * Import: shoal_v1.leave_group (i32, i32) -> i32.
 */
SHOAL_IMPORT("leave_group")
int32_t shoal_leave_group(const char *name, int32_t name_len);

/**
 * Writes one live member of the group at *pid, preferring the caller's node.
 * SHOAL_OK or SHOAL_ENO_PROCESS, SHOAL_EINVALID, SHOAL_EFAULT.
 * Import: shoal_v1.group_pick (i32, i32, i32) -> i32.
 */
SHOAL_IMPORT("group_pick")
int32_t shoal_group_pick(const char *name, int32_t name_len, uint64_t *pid);

/* ---- Key-value and locks ------------------------------------------------ */

/** kv_get/kv_exists/kv_list flag: read this node's state (no ReadIndex). */
#define SHOAL_KV_STALE 1

/** Batch bounds: entries, and bytes of keys and values. */
#define SHOAL_KV_BATCH_ENTRIES_MAX 100
#define SHOAL_KV_BATCH_BYTES_MAX (4 * 1024 * 1024)
/** Bytes of a shoal_kv_get_many record before its value. */
#define SHOAL_KV_MANY_RECORD_HEADER_BYTES 12

/** What shoal_kv_get writes at info: 16 bytes. */
typedef struct shoal_kv_info {
    uint64_t version; /* the entry's version */
    uint64_t length;  /* the value's length (also on SHOAL_EBUFFER_TOO_SMALL) */
} shoal_kv_info;

/** A fenced write's lock and token: 16 bytes (wasm32 pointers). */
typedef struct shoal_fence {
    uint64_t token;
    uint32_t name_ptr; /* (uint32_t)(uintptr_t)name */
    uint32_t name_len;
} shoal_fence;

/**
 * Copies the value of key into buf and returns its length; the version and
 * length at *info. SHOAL_ENOT_FOUND, SHOAL_EBUFFER_TOO_SMALL, SHOAL_EBAD_KEY,
 * SHOAL_EBAD_BUCKET, SHOAL_EUNAVAILABLE, SHOAL_EFAULT.
 * Import: shoal_v1.kv_get (i32, i32, i32, i32, i32, i32, i32, i32) -> i32.
 */
SHOAL_IMPORT("kv_get")
int32_t shoal_kv_get(const char *bucket, int32_t bucket_len, const uint8_t *key,
                     int32_t key_len, int32_t flags, uint8_t *buf, int32_t buf_len,
                     shoal_kv_info *info);

/** 1 if key exists, 0 if not. Import: shoal_v1.kv_exists (i32 x5) -> i32. */
SHOAL_IMPORT("kv_exists")
int32_t shoal_kv_exists(const char *bucket, int32_t bucket_len, const uint8_t *key,
                        int32_t key_len, int32_t flags);

/**
 * Sets key to value (fence: NULL or a shoal_fence); the new version at
 * *version. SHOAL_EFENCED, SHOAL_EVALUE_TOO_LARGE, SHOAL_EQUOTA,
 * SHOAL_ERATE_LIMITED, SHOAL_EUNAVAILABLE (may still apply), ...
 * Import: shoal_v1.kv_set (i32, i32, i32, i32, i32, i32, i32, i32) -> i32.
 */
SHOAL_IMPORT("kv_set")
int32_t shoal_kv_set(const char *bucket, int32_t bucket_len, const uint8_t *key,
                     int32_t key_len, const uint8_t *value, int32_t value_len,
                     const shoal_fence *fence, uint64_t *version);

/**
 * shoal_kv_set only if key is at expected_version (0: absent), else
 * SHOAL_EVERSION_MISMATCH.
 * Import: shoal_v1.kv_cas (i32, i32, i32, i32, i64, i32, i32, i32, i32) -> i32.
 */
SHOAL_IMPORT("kv_cas")
int32_t shoal_kv_cas(const char *bucket, int32_t bucket_len, const uint8_t *key,
                     int32_t key_len, int64_t expected_version, const uint8_t *value,
                     int32_t value_len, const shoal_fence *fence, uint64_t *version);

/** 1 if key existed, 0 if not. Import: shoal_v1.kv_delete (i32 x5) -> i32. */
SHOAL_IMPORT("kv_delete")
int32_t shoal_kv_delete(const char *bucket, int32_t bucket_len, const uint8_t *key,
                        int32_t key_len, const shoal_fence *fence);

/**
 * Adds delta to the counter at key (absent: 0); its new value at *value.
 * SHOAL_ENOT_A_COUNTER, SHOAL_EOVERFLOW, ...
 * Import: shoal_v1.kv_increment (i32, i32, i32, i32, i64, i32) -> i32.
 */
SHOAL_IMPORT("kv_increment")
int32_t shoal_kv_increment(const char *bucket, int32_t bucket_len, const uint8_t *key,
                           int32_t key_len, int64_t delta, int64_t *value);

/**
 * Writes the keys starting with prefix, after cursor (empty: from the first),
 * to buf (each: 2-byte little-endian length, then the key); returns how many.
 * Import: shoal_v1.kv_list (i32 x9) -> i32.
 */
SHOAL_IMPORT("kv_list")
int32_t shoal_kv_list(const char *bucket, int32_t bucket_len, const uint8_t *prefix,
                      int32_t prefix_len, const uint8_t *cursor, int32_t cursor_len,
                      int32_t flags, uint8_t *buf, int32_t buf_len);

/**
 * Reads every key of a batch (keys back to back: 2-byte little-endian length,
 * key; at most SHOAL_KV_BATCH_ENTRIES_MAX) from one state; writes one record
 * per key to buf (version u64, 0 if absent; value length u32; value) and
 * returns the bytes written; their total also at *size (with
 * SHOAL_EBUFFER_TOO_SMALL when buf is shorter). SHOAL_EBAD_BATCH, ...
 * Import: shoal_v1.kv_get_many (i32 x8) -> i32.
 */
SHOAL_IMPORT("kv_get_many")
int32_t shoal_kv_get_many(const char *bucket, int32_t bucket_len, const uint8_t *keys,
                          int32_t keys_len, int32_t flags, uint8_t *buf, int32_t buf_len,
                          uint64_t *size);

/**
 * Sets every entry (2-byte key length, key, 4-byte value length, value) in
 * one write, all or nothing; returns how many. SHOAL_EBAD_BATCH, or as
 * shoal_kv_set. Import: shoal_v1.kv_set_many (i32 x5) -> i32.
 */
SHOAL_IMPORT("kv_set_many")
int32_t shoal_kv_set_many(const char *bucket, int32_t bucket_len, const uint8_t *entries,
                          int32_t entries_len, const shoal_fence *fence);

/**
 * Deletes every key (encoded as for shoal_kv_get_many) in one write, all or
 * nothing; returns how many existed. Import: shoal_v1.kv_delete_many (i32 x5).
 */
SHOAL_IMPORT("kv_delete_many")
int32_t shoal_kv_delete_many(const char *bucket, int32_t bucket_len, const uint8_t *keys,
                             int32_t keys_len, const shoal_fence *fence);

/**
 * Waits (a capture point) until the caller holds the lock, at most timeout_ms
 * (negative: no limit); its fencing token at *token. SHOAL_ETIMEOUT,
 * SHOAL_EDEADLOCK, SHOAL_ELOCK_LOST, SHOAL_EQUOTA, SHOAL_EUNAVAILABLE.
 * Import: shoal_v1.lock (i32, i32, i64, i32) -> i32.
 */
SHOAL_IMPORT("lock")
int32_t shoal_lock(const char *name, int32_t name_len, int64_t timeout_ms, uint64_t *token);

/** shoal_lock without waiting: SHOAL_EBUSY. Under output commit
 * (--restart on-failure|always) a capture point, as shoal_lock: the request
 * waits for a recorded checkpoint first. Import: shoal_v1.try_lock. */
SHOAL_IMPORT("try_lock")
int32_t shoal_try_lock(const char *name, int32_t name_len, uint64_t *token);

/** Releases the lock held under token; SHOAL_ELOCK_LOST. Import: shoal_v1.unlock. */
SHOAL_IMPORT("unlock")
int32_t shoal_unlock(const char *name, int32_t name_len, int64_t token);

/** SHOAL_OK if token is the lock's current one, else SHOAL_EFENCED. */
SHOAL_IMPORT("lock_check")
int32_t shoal_lock_check(const char *name, int32_t name_len, int64_t token);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* SHOAL_H */
