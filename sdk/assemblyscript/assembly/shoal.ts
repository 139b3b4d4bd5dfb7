// shoal.ts - the Shoal guest ABI v1 for AssemblyScript.
//
// Declares every import of the module "shoal_v1" (the contract is
// sdk/ABI.md; sdk/include/shoal.h is the C view of the same table) as
// `shoal_<name>`, and wraps them for AssemblyScript: Uint8Array for bytes,
// string for names and text (sent as UTF-8), u64 pids, and Result<T> (or a
// plain i32 code for calls without a value) instead of exceptions, which
// AssemblyScript turns into aborts.
//
// Build a guest (with @assemblyscript/wasi-shim for argv/stdout):
//
//   asc guest.ts --config ./node_modules/@assemblyscript/wasi-shim/asconfig.json \
//       --runtime incremental -O3z -o guest.wasm
//
// and in the guest:
//
//   import * as shoal from "<path>/sdk/assemblyscript/assembly/shoal";
//   const msg = shoal.recv();
//   if (msg.ok) shoal.sendBlocking(msg.value.sender, msg.value.data);
//
// Use `--runtime incremental` (or `minimal`) for anything long-lived: the
// `stub` runtime never frees memory.
//
// Blocking calls (capture points: the process may be snapshotted or moved
// while inside them and resumes there): sleepMs, yieldNow, recv*, call*,
// recvAny, recvFrom, receiveResponse, Lock.acquire, and the retries of
// sendBlocking and reply.

// ---- Error codes -------------------------------------------------------------

export const OK: i32 = 0;
export const FAULT: i32 = -1;
export const INVALID: i32 = -2;
export const NO_PROCESS: i32 = -3;
export const TIMEOUT: i32 = -4;
export const BUFFER_TOO_SMALL: i32 = -5;
export const TOO_LARGE: i32 = -6;
export const MAILBOX_FULL: i32 = -7;
export const NO_MODULE: i32 = -8;
export const SPAWN_FAILED: i32 = -9;
export const LIMIT: i32 = -10;
export const NO_NODE: i32 = -11;
export const CALLEE_DOWN: i32 = -12;
export const NODE_DOWN: i32 = -13;
export const NAME_TAKEN: i32 = -14;
export const NOT_CALLABLE: i32 = -15;
export const NOT_FOUND: i32 = -16;
export const VERSION_MISMATCH: i32 = -17;
export const FENCED: i32 = -18;
export const BAD_KEY: i32 = -19;
export const VALUE_TOO_LARGE: i32 = -20;
export const BAD_BUCKET: i32 = -21;
export const QUOTA: i32 = -22;
export const RATE_LIMITED: i32 = -23;
export const NOT_A_COUNTER: i32 = -24;
export const OVERFLOW: i32 = -25;
export const BUSY: i32 = -26;
export const DEADLOCK: i32 = -27;
export const LOCK_LOST: i32 = -28;
export const UNAVAILABLE: i32 = -29;
export const BAD_BATCH: i32 = -30;

const CODE_NAMES: string[] = [
  "OK", "FAULT", "INVALID", "NO_PROCESS", "TIMEOUT", "BUFFER_TOO_SMALL", "TOO_LARGE",
  "MAILBOX_FULL", "NO_MODULE", "SPAWN_FAILED", "LIMIT", "NO_NODE", "CALLEE_DOWN", "NODE_DOWN",
  "NAME_TAKEN", "NOT_CALLABLE", "NOT_FOUND", "VERSION_MISMATCH", "FENCED", "BAD_KEY",
  "VALUE_TOO_LARGE", "BAD_BUCKET", "QUOTA", "RATE_LIMITED", "NOT_A_COUNTER", "OVERFLOW", "BUSY",
  "DEADLOCK", "LOCK_LOST", "UNAVAILABLE", "BAD_BATCH",
];

/** The ABI name of a code ("NO_PROCESS"); "UNKNOWN" for one this SDK does not know. */
export function codeName(code: i32): string {
  if (code <= 0 && -code < CODE_NAMES.length) return CODE_NAMES[-code];
  return "UNKNOWN";
}

// ---- Constants -----------------------------------------------------------------

export const ABI_VERSION: i32 = 1;
export const ABI_MODULE = "shoal_v1";
/** Largest message, in bytes (1 MiB). */
export const MAX_MESSAGE_SIZE: i32 = 1 << 20;
/** Timeouts: wait forever / only poll. */
export const FOREVER: i64 = -1;
export const NO_WAIT: i64 = 0;

export const LOG_ERROR: i32 = 0;
export const LOG_WARN: i32 = 1;
export const LOG_INFO: i32 = 2;
export const LOG_DEBUG: i32 = 3;
export const LOG_TRACE: i32 = 4;

export const KIND_MESSAGE: u32 = 0;
export const KIND_CALL: u32 = 1;
export const KIND_DOWN: u32 = 2;
export const KIND_REPLY: u32 = 3;

export const MATCH_FROM: i32 = 1;
export const MATCH_REPLY: i32 = 2;

export const REASON_EXIT: i32 = 1;
export const REASON_TRAP: i32 = 2;
export const REASON_KILLED: i32 = 3;
export const REASON_NOPROC: i32 = 4;
export const REASON_NODE_DOWN: i32 = 5;
export const REASON_OVERLOADED: i32 = 6;
export const REASON_NOT_CALLABLE: i32 = 7;

/** kv_get/kv_exists/kv_list flag: read this node's applied state. */
export const KV_STALE: i32 = 1;
/** Most entries (keys) in one key-value batch; more (or none) is BAD_BATCH. */
export const MAX_BATCH_ENTRIES: i32 = 100;
/** Most bytes of keys and values in one batch (4 MiB); more is BAD_BATCH. */
export const MAX_BATCH_BYTES: i32 = 4 << 20;
/** Bytes of a kv_get_many record before its value: version (u64), length (u32). */
export const KV_MANY_RECORD_HEADER: i32 = 12;

// ---- The raw imports (pointers are usize offsets, as in shoal.h) -----------------

// @ts-ignore: decorator
@external("shoal_v1", "self_pid")
export declare function shoal_self_pid(): u64;
// @ts-ignore: decorator
@external("shoal_v1", "spawn")
export declare function shoal_spawn(module: usize, moduleLen: i32, args: usize, argsLen: i32, pidOut: usize): i32;
// @ts-ignore: decorator
@external("shoal_v1", "spawn_on")
export declare function shoal_spawn_on(target: usize, targetLen: i32, module: usize, moduleLen: i32, args: usize, argsLen: i32, pidOut: usize): i32;
// @ts-ignore: decorator
@external("shoal_v1", "sleep_ms")
export declare function shoal_sleep_ms(ms: i64): i32;
// @ts-ignore: decorator
@external("shoal_v1", "yield_now")
export declare function shoal_yield_now(): i32;
/** Reserved for the host (it inserts calls into preemptible modules). */
// @ts-ignore: decorator
@external("shoal_v1", "preempt")
export declare function shoal_preempt(): void;
// @ts-ignore: decorator
@external("shoal_v1", "exit")
export declare function shoal_exit(code: i32): void;
// @ts-ignore: decorator
@external("shoal_v1", "log")
export declare function shoal_log(level: i32, ptr: usize, len: i32): i32;
// @ts-ignore: decorator
@external("shoal_v1", "send")
export declare function shoal_send(pid: u64, data: usize, len: i32): i32;
// @ts-ignore: decorator
@external("shoal_v1", "recv")
export declare function shoal_recv(buf: usize, bufLen: i32, timeoutMs: i64, info: usize): i32;
// @ts-ignore: decorator
@external("shoal_v1", "call")
export declare function shoal_call(pid: u64, req: usize, reqLen: i32, reply: usize, replyLen: i32, timeoutMs: i64, down: usize): i32;
// @ts-ignore: decorator
@external("shoal_v1", "recv_any")
export declare function shoal_recv_any(buf: usize, bufLen: i32, timeoutMs: i64, info: usize): i32;
// @ts-ignore: decorator
@external("shoal_v1", "reply")
export declare function shoal_reply(handle: u64, data: usize, len: i32): i32;
// @ts-ignore: decorator
@external("shoal_v1", "monitor")
export declare function shoal_monitor(pid: u64, refOut: usize): i32;
// @ts-ignore: decorator
@external("shoal_v1", "demonitor")
export declare function shoal_demonitor(ref: u64): i32;
// @ts-ignore: decorator
@external("shoal_v1", "send_request")
export declare function shoal_send_request(pid: u64, req: usize, reqLen: i32, refOut: usize): i32;
// @ts-ignore: decorator
@external("shoal_v1", "recv_match")
export declare function shoal_recv_match(filter: i32, value: u64, buf: usize, bufLen: i32, timeoutMs: i64, info: usize): i32;
// @ts-ignore: decorator
@external("shoal_v1", "register")
export declare function shoal_register(name: usize, nameLen: i32): i32;
// @ts-ignore: decorator
@external("shoal_v1", "unregister")
export declare function shoal_unregister(name: usize, nameLen: i32): i32;
// @ts-ignore: decorator
@external("shoal_v1", "whereis")
export declare function shoal_whereis(name: usize, nameLen: i32, pidOut: usize): i32;
// @ts-ignore: decorator
@external("shoal_v1", "join_group")
export declare function shoal_join_group(name: usize, nameLen: i32): i32;
// @ts-ignore: decorator
@external("shoal_v1", "leave_group")
export declare function shoal_leave_group(name: usize, nameLen: i32): i32;
// @ts-ignore: decorator
@external("shoal_v1", "group_pick")
export declare function shoal_group_pick(name: usize, nameLen: i32, pidOut: usize): i32;
// @ts-ignore: decorator
@external("shoal_v1", "kv_get")
export declare function shoal_kv_get(bucket: usize, bucketLen: i32, key: usize, keyLen: i32, flags: i32, buf: usize, bufLen: i32, info: usize): i32;
// @ts-ignore: decorator
@external("shoal_v1", "kv_exists")
export declare function shoal_kv_exists(bucket: usize, bucketLen: i32, key: usize, keyLen: i32, flags: i32): i32;
// @ts-ignore: decorator
@external("shoal_v1", "kv_set")
export declare function shoal_kv_set(bucket: usize, bucketLen: i32, key: usize, keyLen: i32, value: usize, valueLen: i32, fence: usize, versionOut: usize): i32;
// @ts-ignore: decorator
@external("shoal_v1", "kv_cas")
export declare function shoal_kv_cas(bucket: usize, bucketLen: i32, key: usize, keyLen: i32, expectedVersion: u64, value: usize, valueLen: i32, fence: usize, versionOut: usize): i32;
// @ts-ignore: decorator
@external("shoal_v1", "kv_delete")
export declare function shoal_kv_delete(bucket: usize, bucketLen: i32, key: usize, keyLen: i32, fence: usize): i32;
// @ts-ignore: decorator
@external("shoal_v1", "kv_increment")
export declare function shoal_kv_increment(bucket: usize, bucketLen: i32, key: usize, keyLen: i32, delta: i64, valueOut: usize): i32;
// @ts-ignore: decorator
@external("shoal_v1", "kv_list")
export declare function shoal_kv_list(bucket: usize, bucketLen: i32, prefix: usize, prefixLen: i32, cursor: usize, cursorLen: i32, flags: i32, buf: usize, bufLen: i32): i32;
// @ts-ignore: decorator
@external("shoal_v1", "kv_get_many")
export declare function shoal_kv_get_many(bucket: usize, bucketLen: i32, keys: usize, keysLen: i32, flags: i32, buf: usize, bufLen: i32, sizeOut: usize): i32;
// @ts-ignore: decorator
@external("shoal_v1", "kv_set_many")
export declare function shoal_kv_set_many(bucket: usize, bucketLen: i32, entries: usize, entriesLen: i32, fence: usize): i32;
// @ts-ignore: decorator
@external("shoal_v1", "kv_delete_many")
export declare function shoal_kv_delete_many(bucket: usize, bucketLen: i32, keys: usize, keysLen: i32, fence: usize): i32;
// @ts-ignore: decorator
@external("shoal_v1", "lock")
export declare function shoal_lock(name: usize, nameLen: i32, timeoutMs: i64, tokenOut: usize): i32;
// @ts-ignore: decorator
@external("shoal_v1", "try_lock")
export declare function shoal_try_lock(name: usize, nameLen: i32, tokenOut: usize): i32;
// @ts-ignore: decorator
@external("shoal_v1", "unlock")
export declare function shoal_unlock(name: usize, nameLen: i32, token: u64): i32;
// @ts-ignore: decorator
@external("shoal_v1", "lock_check")
export declare function shoal_lock_check(name: usize, nameLen: i32, token: u64): i32;

// ---- Result ----------------------------------------------------------------------

/**
 * A value or an ABI error code. Test `ok`, then read `value`; on an error
 * `value` is 0 / null and `code` is negative. `unwrap()` aborts the process
 * (with the error's name) on an error.
 */
export class Result<T> {
  constructor(public code: i32, public value: T) {}

  get ok(): bool { return this.code >= 0; }
  /** True if this is the error `code`. */
  is(code: i32): bool { return this.code == code; }
  get errorName(): string { return codeName(this.code); }

  unwrap(what: string = "shoal"): T {
    if (this.code < 0) throw new Error(what + ": " + codeName(this.code));
    return this.value;
  }

}

/** A successful Result. */
export function okResult<T>(value: T): Result<T> {
  return new Result<T>(0, value);
}

/** A failed Result with the (negative) code; its value is 0 / null. */
export function errResult<T>(code: i32): Result<T> {
  if (isReference<T>()) return new Result<T>(code, changetype<T>(0));
  else return new Result<T>(code, <T>0);
}

// ---- Helpers ----------------------------------------------------------------------

/** Scratch memory for the fixed-size records the host writes (one call at a time). */
const SCRATCH: usize = memory.data(64, 8);

/** UTF-8 bytes of a string. */
export function utf8(s: string): Uint8Array {
  return Uint8Array.wrap(String.UTF8.encode(s, false));
}

/** A string from UTF-8 bytes. */
export function str(bytes: Uint8Array): string {
  return String.UTF8.decodeUnsafe(bytes.dataStart, bytes.length, false);
}

/** True if `bytes` are exactly the UTF-8 of `s`. */
export function bytesEqual(bytes: Uint8Array, s: string): bool {
  const want = String.UTF8.encode(s, false);
  if (bytes.length != want.byteLength) return false;
  return memory.compare(bytes.dataStart, changetype<usize>(want), <usize>bytes.length) == 0;
}

// ---- Processes -----------------------------------------------------------------------

/** This process's pid: opaque, non-zero, unique in the cluster. Never fails. */
export function selfPid(): u64 {
  return shoal_self_pid();
}

/** Packs arguments as NUL-terminated UTF-8 strings back to back. */
export function packArgs(args: string[]): Uint8Array {
  let total = 0;
  const parts = new Array<ArrayBuffer>(args.length);
  for (let i = 0; i < args.length; i++) {
    parts[i] = String.UTF8.encode(args[i], true);
    total += parts[i].byteLength;
  }
  const out = new Uint8Array(total);
  let at = 0;
  for (let i = 0; i < parts.length; i++) {
    memory.copy(out.dataStart + at, changetype<usize>(parts[i]), parts[i].byteLength);
    at += parts[i].byteLength;
  }
  return out;
}

function hasNul(args: string[]): bool {
  for (let i = 0; i < args.length; i++) if (args[i].indexOf("\0") >= 0) return true;
  return false;
}

/**
 * Starts `module` ("sha256:<hex>" or a registered name) on this node with
 * `args` as argv[1..]; the child's pid, without waiting for it to run.
 * Errors: INVALID (an argument with NUL), NO_MODULE, SPAWN_FAILED, LIMIT.
 */
export function spawn(module: string, args: string[] = []): Result<u64> {
  if (hasNul(args)) return errResult<u64>(INVALID);
  const m = String.UTF8.encode(module, false);
  const a = packArgs(args);
  const rc = shoal_spawn(changetype<usize>(m), m.byteLength, a.dataStart, a.length, SCRATCH);
  return rc < 0 ? errResult<u64>(rc) : okResult<u64>(load<u64>(SCRATCH));
}

/**
 * spawn() with a placement target: "" (the scheduler picks), a node name, or
 * labels "k=v[,k=v]". NO_NODE when nothing fits.
 */
export function spawnOn(target: string, module: string, args: string[] = []): Result<u64> {
  if (hasNul(args)) return errResult<u64>(INVALID);
  const t = String.UTF8.encode(target, false);
  const m = String.UTF8.encode(module, false);
  const a = packArgs(args);
  const rc = shoal_spawn_on(changetype<usize>(t), t.byteLength, changetype<usize>(m), m.byteLength, a.dataStart, a.length, SCRATCH);
  return rc < 0 ? errResult<u64>(rc) : okResult<u64>(load<u64>(SCRATCH));
}

/** Blocks for at least `ms` milliseconds. A capture point. OK or INVALID. */
export function sleepMs(ms: i64): i32 {
  return shoal_sleep_ms(ms);
}

/** Lets other processes run. A capture point. */
export function yieldNow(): i32 {
  return shoal_yield_now();
}

/**
 * Reserved for the host, which inserts calls to it into preemptible modules'
 * loops. Harmless to call; guests have no reason to.
 */
export function preempt(): void {
  shoal_preempt();
}

/** Ends the process with `code` (queued messages are dropped). */
export function exit(code: i32): void {
  shoal_exit(code);
  unreachable();
}

/** Appends UTF-8 `message` to the process log kept by the node (LOG_*). */
export function log(level: i32, message: string): i32 {
  const m = String.UTF8.encode(message, false);
  return shoal_log(level, changetype<usize>(m), m.byteLength);
}

// ---- Messages -------------------------------------------------------------------------

/** A received message (its bytes are a copy, owned by it). */
export class Message {
  constructor(public sender: u64, public data: Uint8Array) {}
  /** The payload decoded as UTF-8. */
  text(): string { return str(this.data); }
}

/** Queues a copy of `data` in `pid`'s mailbox; never blocks. */
export function send(pid: u64, data: Uint8Array): i32 {
  return shoal_send(pid, data.dataStart, data.length);
}

/** send() of a string's UTF-8. */
export function sendString(pid: u64, text: string): i32 {
  return send(pid, utf8(text));
}

export const SEND_BLOCKING_MAX_RETRIES: i32 = 1000;
export const SEND_BLOCKING_YIELDS: i32 = 16;

/**
 * send(), retrying while the receiver's mailbox is full: 16 yields, then
 * sleeps doubling from 1 to 10 ms, 1000 retries in all (as the Rust SDK).
 */
export function sendBlocking(pid: u64, data: Uint8Array): i32 {
  let backoff: i64 = 1;
  for (let retries = 0; ; retries++) {
    const rc = send(pid, data);
    if (rc != MAILBOX_FULL || retries >= SEND_BLOCKING_MAX_RETRIES) return rc;
    if (retries < SEND_BLOCKING_YIELDS) {
      yieldNow();
    } else {
      sleepMs(backoff);
      backoff = backoff * 2 > 10 ? 10 : backoff * 2;
    }
  }
  return MAILBOX_FULL; // not reached
}

/** What recvInto() learns besides the length (`length` is the size needed on BUFFER_TOO_SMALL). */
export class RecvInfo {
  sender: u64 = 0;
  length: u32 = 0;
}

/**
 * Takes the oldest message into `buf` (a capture point), waiting at most
 * `timeoutMs` (FOREVER, NO_WAIT, or ms): its length or an error code.
 * BUFFER_TOO_SMALL leaves it queued with the size needed in `info.length`.
 */
export function recvInto(buf: Uint8Array, timeoutMs: i64, info: RecvInfo): i32 {
  store<u64>(SCRATCH, 0);
  store<u64>(SCRATCH, 0, 8);
  const rc = shoal_recv(buf.dataStart, buf.length, timeoutMs, SCRATCH);
  info.sender = load<u64>(SCRATCH);
  info.length = load<u32>(SCRATCH, 8);
  return rc;
}

let recvBuf = new Uint8Array(64 * 1024);

/** Takes the oldest message, of any size, waiting at most `timeoutMs`. A capture point. */
export function recv(timeoutMs: i64 = FOREVER): Result<Message> {
  const info = new RecvInfo();
  for (;;) {
    const rc = recvInto(recvBuf, timeoutMs, info);
    if (rc >= 0) return okResult<Message>(new Message(info.sender, recvBuf.slice(0, rc)));
    if (rc == BUFFER_TOO_SMALL && <i32>info.length > recvBuf.length) {
      recvBuf = new Uint8Array(<i32>info.length);
      continue;
    }
    return errResult<Message>(rc);
  }
  return errResult<Message>(INVALID); // not reached
}

// ---- Calls, monitors, selective receive -----------------------------------------------

/** What recvAny()/recvFrom() return. */
export class Incoming {
  /** KIND_MESSAGE, KIND_CALL, KIND_DOWN or KIND_REPLY. */
  kind: u32 = 0;
  /** The sender; for a DOWN, the process that went down. */
  from: u64 = 0;
  /** Call: the reply handle; DOWN: the monitor reference; reply: the request reference. */
  reference: u64 = 0;
  /** DOWN: REASON_*. */
  reason: i32 = 0;
  /** DOWN with REASON_EXIT: the exit code. */
  code: i32 = 0;
  /** The payload (for a DOWN with REASON_TRAP: the trap message). */
  data: Uint8Array = new Uint8Array(0);

  get isMessage(): bool { return this.kind == KIND_MESSAGE; }
  get isCall(): bool { return this.kind == KIND_CALL; }
  get isDown(): bool { return this.kind == KIND_DOWN; }
  text(): string { return str(this.data); }
}

/** Why a call failed with CALLEE_DOWN / NODE_DOWN / NOT_CALLABLE. */
export class Down {
  reason: i32 = 0;
  /** The exit code for REASON_EXIT. */
  code: i32 = 0;
  /** The trap message for REASON_TRAP. */
  message: string = "";
}

export const CALL_REPLY_BUFFER_SIZE: i32 = 64 * 1024;
let replyBuf = new Uint8Array(CALL_REPLY_BUFFER_SIZE);

/**
 * Calls `pid` with `request` and waits at most `timeoutMs` for its reply (at
 * most 64 KiB). A capture point; other mail stays queued. On CALLEE_DOWN,
 * NODE_DOWN, NOT_CALLABLE, `down` (if given) says why.
 */
export function call(pid: u64, request: Uint8Array, timeoutMs: i64 = 5000, down: Down | null = null): Result<Uint8Array> {
  store<u64>(SCRATCH, 0);
  const rc = shoal_call(pid, request.dataStart, request.length, replyBuf.dataStart, replyBuf.length, timeoutMs, SCRATCH);
  if (rc >= 0) return okResult<Uint8Array>(replyBuf.slice(0, rc));
  if (down != null) {
    down.reason = load<i32>(SCRATCH);
    down.code = load<i32>(SCRATCH, 4);
    down.message = down.reason == REASON_TRAP && down.code > 0
      ? String.UTF8.decodeUnsafe(replyBuf.dataStart, <usize>min(down.code, replyBuf.length), false)
      : "";
  }
  return errResult<Uint8Array>(rc);
}

let anyBuf = new Uint8Array(64 * 1024);

function receive(match: bool, filter: i32, value: u64, timeoutMs: i64): Result<Incoming> {
  for (;;) {
    memory.fill(SCRATCH, 0, 32);
    const rc = match
      ? shoal_recv_match(filter, value, anyBuf.dataStart, anyBuf.length, timeoutMs, SCRATCH)
      : shoal_recv_any(anyBuf.dataStart, anyBuf.length, timeoutMs, SCRATCH);
    const length = load<u32>(SCRATCH, 8);
    if (rc >= 0) {
      const inc = new Incoming();
      inc.from = load<u64>(SCRATCH);
      const kind = load<u32>(SCRATCH, 12);
      inc.kind = kind > KIND_REPLY ? KIND_MESSAGE : kind;
      inc.reference = load<u64>(SCRATCH, 16);
      inc.reason = load<i32>(SCRATCH, 24);
      inc.code = load<i32>(SCRATCH, 28);
      inc.data = anyBuf.slice(0, rc);
      return okResult<Incoming>(inc);
    }
    if (rc == BUFFER_TOO_SMALL && <i32>length > anyBuf.length) {
      anyBuf = new Uint8Array(<i32>length);
      continue;
    }
    return errResult<Incoming>(rc);
  }
  return errResult<Incoming>(INVALID); // not reached
}

/** recv() that also receives call requests and DOWN notices. A capture point. */
export function recvAny(timeoutMs: i64 = FOREVER): Result<Incoming> {
  return receive(false, 0, 0, timeoutMs);
}

/** What recvAny() would return, only from `pid`; the rest stays queued. */
export function recvFrom(pid: u64, timeoutMs: i64 = FOREVER): Result<Incoming> {
  return receive(true, MATCH_FROM, pid, timeoutMs);
}

/** The raw selective receive (MATCH_FROM or MATCH_REPLY). */
export function recvMatch(filter: i32, value: u64, timeoutMs: i64 = FOREVER): Result<Incoming> {
  return receive(true, filter, value, timeoutMs);
}

/**
 * Answers the call that carried `handle`; retries (1 ms sleeps) while even
 * the room kept for replies is in use. INVALID: unknown or answered.
 */
export function reply(handle: u64, data: Uint8Array): i32 {
  for (;;) {
    const rc = shoal_reply(handle, data.dataStart, data.length);
    if (rc != MAILBOX_FULL) return rc;
    sleepMs(1);
  }
  return MAILBOX_FULL; // not reached
}

/** A call that does not wait: its reference, for receiveResponse(). */
export function sendRequest(pid: u64, request: Uint8Array): Result<u64> {
  const rc = shoal_send_request(pid, request.dataStart, request.length, SCRATCH);
  return rc < 0 ? errResult<u64>(rc) : okResult<u64>(load<u64>(SCRATCH));
}

/**
 * Waits for the answer to `request` (a capture point): the reply, or
 * NO_PROCESS, NODE_DOWN, NOT_CALLABLE, CALLEE_DOWN (`down` says why).
 * TIMEOUT leaves the request pending.
 */
export function receiveResponse(request: u64, timeoutMs: i64 = FOREVER, down: Down | null = null): Result<Uint8Array> {
  const r = receive(true, MATCH_REPLY, request, timeoutMs);
  if (!r.ok) return errResult<Uint8Array>(r.code);
  const inc = r.value;
  if (inc.kind == KIND_REPLY) return okResult<Uint8Array>(inc.data);
  if (down != null) {
    down.reason = inc.reason;
    down.code = inc.code;
    down.message = inc.reason == REASON_TRAP ? inc.text() : "";
  }
  if (inc.reason == REASON_NOPROC) return errResult<Uint8Array>(NO_PROCESS);
  if (inc.reason == REASON_NODE_DOWN) return errResult<Uint8Array>(NODE_DOWN);
  if (inc.reason == REASON_NOT_CALLABLE) return errResult<Uint8Array>(NOT_CALLABLE);
  return errResult<Uint8Array>(CALLEE_DOWN);
}

/** Withdraws a pending request: its answer, queued or to come, is dropped. */
export function cancelRequest(request: u64): i32 {
  return shoal_demonitor(request);
}

/** Asks for a DOWN (through recvAny) when `pid` ends; the monitor's reference. */
export function monitor(pid: u64): Result<u64> {
  const rc = shoal_monitor(pid, SCRATCH);
  return rc < 0 ? errResult<u64>(rc) : okResult<u64>(load<u64>(SCRATCH));
}

/** Withdraws a monitor: a DOWN not yet received never will be. */
export function demonitor(ref: u64): i32 {
  return shoal_demonitor(ref);
}

// ---- Names and groups ----------------------------------------------------------------

/** Gives this process `name` in its owner's namespace, cluster-wide. */
export function register(name: string): i32 {
  const n = String.UTF8.encode(name, false);
  return shoal_register(changetype<usize>(n), n.byteLength);
}

/** Gives `name` up. */
export function unregister(name: string): i32 {
  const n = String.UTF8.encode(name, false);
  return shoal_unregister(changetype<usize>(n), n.byteLength);
}

/** The pid `name` names, or NO_PROCESS. */
export function whereis(name: string): Result<u64> {
  const n = String.UTF8.encode(name, false);
  const rc = shoal_whereis(changetype<usize>(n), n.byteLength, SCRATCH);
  return rc < 0 ? errResult<u64>(rc) : okResult<u64>(load<u64>(SCRATCH));
}

/** whereis() then call(). */
export function callName(name: string, request: Uint8Array, timeoutMs: i64 = 5000, down: Down | null = null): Result<Uint8Array> {
  const pid = whereis(name);
  if (!pid.ok) return errResult<Uint8Array>(pid.code);
  return call(pid.value, request, timeoutMs, down);
}

/** Joins the group `name`. */
export function joinGroup(name: string): i32 {
  const n = String.UTF8.encode(name, false);
  return shoal_join_group(changetype<usize>(n), n.byteLength);
}

/** Leaves the group `name`. */
export function leaveGroup(name: string): i32 {
  const n = String.UTF8.encode(name, false);
  return shoal_leave_group(changetype<usize>(n), n.byteLength);
}

/** One live member of the group (this node's first, in turn), or NO_PROCESS. */
export function groupPick(name: string): Result<u64> {
  const n = String.UTF8.encode(name, false);
  const rc = shoal_group_pick(changetype<usize>(n), n.byteLength, SCRATCH);
  return rc < 0 ? errResult<u64>(rc) : okResult<u64>(load<u64>(SCRATCH));
}

// ---- Locks ----------------------------------------------------------------------------

/** A cluster-wide lock held by this process, with its fencing token. */
export class Lock {
  private nameBytes: ArrayBuffer;
  private fenceRecord: usize;

  constructor(public name: string, public token: u64) {
    this.nameBytes = String.UTF8.encode(name, false);
    this.fenceRecord = 0;
  }

  /** Waits (a capture point) at most `timeoutMs` until this process holds `name`. */
  static acquire(name: string, timeoutMs: i64 = FOREVER): Result<Lock> {
    const n = String.UTF8.encode(name, false);
    const rc = shoal_lock(changetype<usize>(n), n.byteLength, timeoutMs, SCRATCH);
    return rc < 0 ? errResult<Lock>(rc) : okResult<Lock>(new Lock(name, load<u64>(SCRATCH)));
  }

  /** acquire() without waiting: BUSY if another process holds it. */
  static tryAcquire(name: string): Result<Lock> {
    const n = String.UTF8.encode(name, false);
    const rc = shoal_try_lock(changetype<usize>(n), n.byteLength, SCRATCH);
    return rc < 0 ? errResult<Lock>(rc) : okResult<Lock>(new Lock(name, load<u64>(SCRATCH)));
  }

  /** OK if `token` is the current grant of lock `name`, else FENCED. */
  static check(name: string, token: u64): i32 {
    const n = String.UTF8.encode(name, false);
    return shoal_lock_check(changetype<usize>(n), n.byteLength, token);
  }

  /** Releases it; LOCK_LOST if it is not held under this token any more. */
  unlock(): i32 {
    return shoal_unlock(changetype<usize>(this.nameBytes), this.nameBytes.byteLength, this.token);
  }

  /** The 16-byte fence record for writes guarded by this lock (valid while the Lock lives). */
  fence(): usize {
    if (this.fenceRecord == 0) {
      const rec = new ArrayBuffer(16);
      // Kept alive by this object: a field holding the record.
      this.fenceBuf = rec;
      this.fenceRecord = changetype<usize>(rec);
    }
    store<u64>(this.fenceRecord, this.token);
    store<u32>(this.fenceRecord, <u32>changetype<usize>(this.nameBytes), 8);
    store<u32>(this.fenceRecord, <u32>this.nameBytes.byteLength, 12);
    return this.fenceRecord;
  }

  private fenceBuf: ArrayBuffer | null = null;
}

// ---- Key-value ---------------------------------------------------------------------------

/** A value read from a Bucket, with its version. */
export class Entry {
  constructor(public value: Uint8Array, public version: u64) {}
  text(): string { return str(this.value); }
}

/** What Bucket.getInto() learns (version; length also on BUFFER_TOO_SMALL). */
export class KvInfo {
  version: u64 = 0;
  length: u64 = 0;
}

/** What Bucket.getManyInto() learns: the records' total size (also on BUFFER_TOO_SMALL). */
export class KvManyInfo {
  size: u64 = 0;
}

/** One entry of a setMany() batch. */
export class KeyValue {
  constructor(public key: Uint8Array, public value: Uint8Array) {}
}

/**
 * Encodes `keys` as kv_get_many and kv_delete_many take them (and kv_list
 * answers them): each a 2-byte little-endian length, then the key.
 * BAD_KEY for a key whose length does not fit 2 bytes (the host refuses
 * keys over 256 bytes with BAD_KEY too); the batch's bounds are the host's
 * to check (BAD_BATCH).
 */
export function encodeKeys(keys: Uint8Array[]): Result<Uint8Array> {
  let total = 0;
  for (let i = 0; i < keys.length; i++) {
    if (keys[i].length > 0xFFFF) return errResult<Uint8Array>(BAD_KEY);
    total += 2 + keys[i].length;
  }
  const out = new Uint8Array(total);
  let at = 0;
  for (let i = 0; i < keys.length; i++) {
    const k = keys[i];
    store<u16>(out.dataStart + at, <u16>k.length);
    memory.copy(out.dataStart + at + 2, k.dataStart, k.length);
    at += 2 + k.length;
  }
  return okResult<Uint8Array>(out);
}

/**
 * Encodes `entries` as kv_set_many takes them: each a 2-byte little-endian
 * key length, the key, a 4-byte little-endian value length and the value.
 * BAD_KEY for a key whose length does not fit 2 bytes.
 */
export function encodeEntries(entries: KeyValue[]): Result<Uint8Array> {
  let total = 0;
  for (let i = 0; i < entries.length; i++) {
    if (entries[i].key.length > 0xFFFF) return errResult<Uint8Array>(BAD_KEY);
    total += 2 + entries[i].key.length + 4 + entries[i].value.length;
  }
  const out = new Uint8Array(total);
  let at = 0;
  for (let i = 0; i < entries.length; i++) {
    const k = entries[i].key;
    const v = entries[i].value;
    store<u16>(out.dataStart + at, <u16>k.length);
    memory.copy(out.dataStart + at + 2, k.dataStart, k.length);
    at += 2 + k.length;
    store<u32>(out.dataStart + at, <u32>v.length);
    memory.copy(out.dataStart + at + 4, v.dataStart, v.length);
    at += 4 + v.length;
  }
  return okResult<Uint8Array>(out);
}

/**
 * Decodes kv_get_many's records (from Bucket.getManyInto()): one per key, in
 * order, null for an absent key; the values are copies. INVALID if malformed.
 */
export function decodeMany(records: Uint8Array): Result<Array<Entry | null>> {
  const out = new Array<Entry | null>(0);
  let at = 0;
  while (at < records.length) {
    if (records.length - at < KV_MANY_RECORD_HEADER) return errResult<Array<Entry | null>>(INVALID);
    const version = load<u64>(records.dataStart + at);
    const len = load<u32>(records.dataStart + at + 8);
    const start = at + KV_MANY_RECORD_HEADER;
    if (<u32>(records.length - start) < len) return errResult<Array<Entry | null>>(INVALID);
    out.push(version == 0 ? null : new Entry(records.slice(start, start + <i32>len), version));
    at = start + <i32>len;
  }
  return okResult<Array<Entry | null>>(out);
}

/**
 * A bucket of keys of this process's owner, replicated by the cluster. Keys
 * and values are bytes (utf8() makes them from strings). Reads are
 * linearizable unless the bucket is stale().
 */
export class Bucket {
  private nameBytes: ArrayBuffer;

  constructor(public name: string, public flags: i32 = 0) {
    this.nameBytes = String.UTF8.encode(name, false);
  }

  /** The same bucket, read from this node's applied state. */
  stale(): Bucket { return new Bucket(this.name, KV_STALE); }

  private get b(): usize { return changetype<usize>(this.nameBytes); }
  private get bl(): i32 { return this.nameBytes.byteLength; }

  /** kv_get into `buf`: the value's length or an error (NOT_FOUND if absent). */
  getInto(key: Uint8Array, buf: Uint8Array, info: KvInfo): i32 {
    memory.fill(SCRATCH, 0, 16);
    const rc = shoal_kv_get(this.b, this.bl, key.dataStart, key.length, this.flags, buf.dataStart, buf.length, SCRATCH);
    info.version = load<u64>(SCRATCH);
    info.length = load<u64>(SCRATCH, 8);
    return rc;
  }

  /** The entry at `key` (any size), or null if absent. */
  get(key: Uint8Array): Result<Entry | null> {
    let buf = new Uint8Array(256);
    const info = new KvInfo();
    for (;;) {
      const rc = this.getInto(key, buf, info);
      if (rc >= 0) return okResult<Entry | null>(new Entry(buf.slice(0, rc), info.version));
      if (rc == NOT_FOUND) return okResult<Entry | null>(null);
      if (rc == BUFFER_TOO_SMALL && info.length > <u64>buf.length && info.length <= <u64>MAX_MESSAGE_SIZE) {
        buf = new Uint8Array(<i32>info.length);
        continue;
      }
      return errResult<Entry | null>(rc);
    }
    return errResult<Entry | null>(INVALID); // not reached
  }

  /** Whether `key` exists. */
  exists(key: Uint8Array): Result<bool> {
    const rc = shoal_kv_exists(this.b, this.bl, key.dataStart, key.length, this.flags);
    return rc < 0 ? errResult<bool>(rc) : okResult<bool>(rc == 1);
  }

  private write(key: Uint8Array, value: Uint8Array, cas: bool, expected: u64, fence: usize): Result<u64> {
    const rc = cas
      ? shoal_kv_cas(this.b, this.bl, key.dataStart, key.length, expected, value.dataStart, value.length, fence, SCRATCH)
      : shoal_kv_set(this.b, this.bl, key.dataStart, key.length, value.dataStart, value.length, fence, SCRATCH);
    return rc < 0 ? errResult<u64>(rc) : okResult<u64>(load<u64>(SCRATCH));
  }

  /** Sets `key`; the entry's new version. */
  set(key: Uint8Array, value: Uint8Array): Result<u64> { return this.write(key, value, false, 0, 0); }
  /** set() applied only while `lock` is the lock's current grant (else FENCED). */
  setFenced(key: Uint8Array, value: Uint8Array, lock: Lock): Result<u64> { return this.write(key, value, false, 0, lock.fence()); }
  /** set() only if `key` is at `expected` (0: absent), else VERSION_MISMATCH. */
  cas(key: Uint8Array, expected: u64, value: Uint8Array): Result<u64> { return this.write(key, value, true, expected, 0); }
  /** cas() fenced by `lock`. */
  casFenced(key: Uint8Array, expected: u64, value: Uint8Array, lock: Lock): Result<u64> {
    return this.write(key, value, true, expected, lock.fence());
  }

  /** Deletes `key`; whether it existed. */
  delete(key: Uint8Array): Result<bool> {
    const rc = shoal_kv_delete(this.b, this.bl, key.dataStart, key.length, 0);
    return rc < 0 ? errResult<bool>(rc) : okResult<bool>(rc == 1);
  }

  /** delete() fenced by `lock`. */
  deleteFenced(key: Uint8Array, lock: Lock): Result<bool> {
    const rc = shoal_kv_delete(this.b, this.bl, key.dataStart, key.length, lock.fence());
    return rc < 0 ? errResult<bool>(rc) : okResult<bool>(rc == 1);
  }

  /** Adds `delta` to the counter at `key` (8 bytes LE; absent: 0); its new value. */
  increment(key: Uint8Array, delta: i64): Result<i64> {
    const rc = shoal_kv_increment(this.b, this.bl, key.dataStart, key.length, delta, SCRATCH);
    return rc < 0 ? errResult<i64>(rc) : okResult<i64>(load<i64>(SCRATCH));
  }

  /**
   * One page of the keys starting with `prefix`, after `cursor` (empty: from
   * the first), in byte order. An empty page is the end; pass the page's last
   * key as the next cursor.
   */
  listPage(prefix: Uint8Array, cursor: Uint8Array, bufSize: i32 = 64 * 1024): Result<Uint8Array[]> {
    const buf = new Uint8Array(bufSize);
    const rc = shoal_kv_list(this.b, this.bl, prefix.dataStart, prefix.length, cursor.dataStart, cursor.length, this.flags, buf.dataStart, buf.length);
    if (rc < 0) return errResult<Uint8Array[]>(rc);
    const keys = new Array<Uint8Array>(0);
    let at = 0;
    for (let i = 0; i < rc; i++) {
      if (at + 2 > buf.length) return errResult<Uint8Array[]>(INVALID);
      const len = <i32>buf[at] | (<i32>buf[at + 1] << 8);
      if (at + 2 + len > buf.length) return errResult<Uint8Array[]>(INVALID);
      keys.push(buf.slice(at + 2, at + 2 + len));
      at += 2 + len;
    }
    return okResult<Uint8Array[]>(keys);
  }

  /**
   * kv_get_many into `buf`, of keys encoded by encodeKeys(): the records'
   * length (decode them with decodeMany()) or an error; `info.size` gets
   * their total, also on BUFFER_TOO_SMALL (then: the buffer size needed).
   */
  getManyInto(encodedKeys: Uint8Array, buf: Uint8Array, info: KvManyInfo): i32 {
    store<u64>(SCRATCH, 0);
    const rc = shoal_kv_get_many(this.b, this.bl, encodedKeys.dataStart, encodedKeys.length, this.flags, buf.dataStart, buf.length, SCRATCH);
    info.size = load<u64>(SCRATCH);
    return rc;
  }

  /**
   * The entries of `keys` (1 to MAX_BATCH_ENTRIES), all read from one state,
   * in order; null for an absent key. Any size: the buffer starts small and
   * grows to the size the host asks for. BAD_BATCH, or as get().
   */
  getMany(keys: Uint8Array[]): Result<Array<Entry | null>> {
    const enc = encodeKeys(keys);
    if (!enc.ok) return errResult<Array<Entry | null>>(enc.code);
    const encoded = enc.value;
    let buf = new Uint8Array(256);
    const info = new KvManyInfo();
    for (;;) {
      const rc = this.getManyInto(encoded, buf, info);
      if (rc >= 0) {
        if (rc > buf.length) return errResult<Array<Entry | null>>(INVALID);
        const r = decodeMany(buf.subarray(0, rc));
        if (r.ok && r.value.length != keys.length) return errResult<Array<Entry | null>>(INVALID);
        return r;
      }
      if (rc == BUFFER_TOO_SMALL && info.size > <u64>buf.length && info.size <= <u64>i32.MAX_VALUE) {
        buf = new Uint8Array(<i32>info.size);
        continue;
      }
      return errResult<Array<Entry | null>>(rc);
    }
    return errResult<Array<Entry | null>>(INVALID); // not reached
  }

  private writeMany(isSet: bool, encoded: Result<Uint8Array>, fence: usize): Result<i32> {
    if (!encoded.ok) return errResult<i32>(encoded.code);
    const e = encoded.value;
    const rc = isSet
      ? shoal_kv_set_many(this.b, this.bl, e.dataStart, e.length, fence)
      : shoal_kv_delete_many(this.b, this.bl, e.dataStart, e.length, fence);
    return rc < 0 ? errResult<i32>(rc) : okResult<i32>(rc);
  }

  /**
   * Sets every entry (1 to MAX_BATCH_ENTRIES, at most MAX_BATCH_BYTES) in one
   * write, all or nothing (a key named twice: the last value wins); how
   * many. BAD_BATCH, or as set() (one refusal refuses the whole batch).
   */
  setMany(entries: KeyValue[]): Result<i32> { return this.writeMany(true, encodeEntries(entries), 0); }
  /** setMany() fenced by `lock` (one check covers the whole batch). */
  setManyFenced(entries: KeyValue[], lock: Lock): Result<i32> { return this.writeMany(true, encodeEntries(entries), lock.fence()); }
  /** Deletes every key in one write, all or nothing; how many existed. As setMany(). */
  deleteMany(keys: Uint8Array[]): Result<i32> { return this.writeMany(false, encodeKeys(keys), 0); }
  /** deleteMany() fenced by `lock`. */
  deleteManyFenced(keys: Uint8Array[], lock: Lock): Result<i32> { return this.writeMany(false, encodeKeys(keys), lock.fence()); }

  /** Every key starting with `prefix`, all pages. */
  keys(prefix: Uint8Array = new Uint8Array(0)): Result<Uint8Array[]> {
    const all = new Array<Uint8Array>(0);
    for (;;) {
      const page = this.listPage(prefix, all.length > 0 ? all[all.length - 1] : new Uint8Array(0));
      if (!page.ok) return page;
      if (page.value.length == 0) return okResult<Uint8Array[]>(all);
      for (let i = 0; i < page.value.length; i++) all.push(page.value[i]);
    }
    return errResult<Uint8Array[]>(INVALID); // not reached
  }
}
