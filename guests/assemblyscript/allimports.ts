// as_allimports: calls every shoal_v1 import through the AssemblyScript SDK
// (sdk/assemblyscript/assembly/shoal.ts) and checks each result.
//
// Modes (first argument):
//
// - `[<self-ref>]` (no argument, or one that is not `helper`): the checks.
//   <self-ref> (default: argv[0]) is how this module is spawned again as a
//   helper, so it must be a registered name or `sha256:` reference
//   (`shoal run` of a pushed name passes the name as argv[0]; `shoal deploy`
//   passes the file name, so give the reference explicitly there). Prints
//   `ok <import>: <what>` or `FAIL <import>: <what>: <got>` per check and
//   finally `all imports ok (<n> checks)` (exit 0), or `allimports: <n> of
//   <m> checks failed` (exit 1). Off a cluster (`shoal run`) names,
//   key-value and locks answer NO_NODE, as the ABI says; the checks then
//   expect exactly that and print `standalone: ...` first. In a cluster
//   (even of one node: `shoal node start` + `shoal deploy`) they are checked
//   for real.
// - `helper`: the peer. Loops on recv_any: a call `echo:<x>` is answered
//   `<x>`; a call `lock:<name>` does try_lock and answers `locked <token>` or
//   `err <code>`; a plain message `ping` is answered (plain) `pong`; a plain
//   message `exit <code>` exits with that code.
import * as shoal from "../../sdk/assemblyscript/assembly/shoal";

const WAIT: i64 = 5000;
let checks = 0;
let failures = 0;

function ok(imp: string, what: string): void {
  checks++;
  console.log("ok " + imp + ": " + what);
}

function fail(imp: string, what: string, got: string): void {
  checks++;
  failures++;
  console.log("FAIL " + imp + ": " + what + ": got " + got);
}

function expect(imp: string, what: string, cond: bool): void {
  if (cond) ok(imp, what);
  else fail(imp, what, "false");
}

function describe(code: i32): string {
  return shoal.codeName(code) + " (" + code.toString() + ")";
}

/** A code (from an i32 result or a Result's .code) must be `want`. */
function expectCode(imp: string, what: string, code: i32, want: i32): void {
  if (code == want) ok(imp, what);
  else fail(imp, what, (code >= 0 ? "success" : describe(code)) + ", expected " + describe(want));
}

/** A code must be a success; returns whether it was. */
function expectOk(imp: string, what: string, code: i32): bool {
  if (code >= 0) return true;
  fail(imp, what, describe(code));
  return false;
}

function u8(s: string): Uint8Array {
  return shoal.utf8(s);
}

function helper(): void {
  for (;;) {
    const r = shoal.recvAny();
    if (!r.ok) {
      process.stderr.write("as_allimports helper: recv_any: " + r.errorName + "\n");
      shoal.exit(1);
    }
    const inc = r.value;
    if (inc.isCall) {
      const text = inc.text();
      let answer = "?";
      if (text.startsWith("echo:")) {
        answer = text.substring(5);
      } else if (text.startsWith("lock:")) {
        const l = shoal.Lock.tryAcquire(text.substring(5));
        answer = l.ok ? "locked " + l.value.token.toString() : "err " + l.code.toString();
      }
      const rc = shoal.reply(inc.reference, u8(answer));
      if (rc < 0) process.stderr.write("as_allimports helper: reply: " + shoal.codeName(rc) + "\n");
    } else if (inc.isMessage) {
      const text = inc.text();
      if (text == "ping") {
        const rc = shoal.sendBlocking(inc.from, u8("pong"));
        if (rc < 0) process.stderr.write("as_allimports helper: send: " + shoal.codeName(rc) + "\n");
      } else if (text.startsWith("exit ")) {
        shoal.exit(I32.parseInt(text.substring(5), 10));
      }
    }
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): bool {
  return a.length == b.length && memory.compare(a.dataStart, b.dataStart, <usize>a.length) == 0;
}

/** The 4 records of getMany [k1, absent, k2, k3] after setMany of k1 (`v1`), k2 ("two"), k3 ("three"). */
function manyAsSet(got: Array<shoal.Entry | null>, v1: Uint8Array): bool {
  if (got.length != 4) return false;
  const e0 = got[0];
  const e1 = got[1];
  const e2 = got[2];
  const e3 = got[3];
  if (e0 == null || e1 != null || e2 == null || e3 == null) return false;
  return sameBytes(e0.value, v1) && e0.version > 0 && e2.text() == "two" && e2.version > 0 && e3.text() == "three" && e3.version > 0;
}

function batchChecks(bucket: shoal.Bucket, me: u64): void {
  const id = me.toString();
  const k1 = u8("b1-" + id);
  const k2 = u8("b2-" + id);
  const k3 = u8("b3-" + id);
  const k4 = u8("b4-" + id);
  const absent = u8("b0-" + id);
  const big = u8("abcdefghijklmnopqrstuvwxyz".repeat(116).substring(0, 3000));

  // kv_set_many: 3 entries, k1's value 3000 bytes
  const s3 = bucket.setMany([new shoal.KeyValue(k1, big), new shoal.KeyValue(k2, u8("two")), new shoal.KeyValue(k3, u8("three"))]);
  if (expectOk("kv_set_many", "3 entries", s3.code)) expect("kv_set_many", "3 entries: 3", s3.value == 3);

  // kv_get_many [k1, absent, k2, k3]
  const keys: Uint8Array[] = [k1, absent, k2, k3];
  const enc = shoal.encodeKeys(keys);
  if (expectOk("kv_get_many", "encode 4 keys", enc.code)) {
    const want: u64 = <u64>(4 * shoal.KV_MANY_RECORD_HEADER + big.length + 3 + 5);
    const info = new shoal.KvManyInfo();
    expectCode("kv_get_many", "a 256-byte buffer is BUFFER_TOO_SMALL", bucket.getManyInto(enc.value, new Uint8Array(256), info), shoal.BUFFER_TOO_SMALL);
    if (info.size == want) ok("kv_get_many", "the size written tells the total (3056)");
    else fail("kv_get_many", "the size written tells the total", info.size.toString() + ", expected " + want.toString());
    const grown = new Uint8Array(<i32>min(info.size, <u64>(1 << 20)));
    const rc = bucket.getManyInto(enc.value, grown, new shoal.KvManyInfo());
    if (expectOk("kv_get_many", "a buffer of that size", rc)) {
      const got = shoal.decodeMany(grown.subarray(0, rc));
      expect("kv_get_many", "a buffer of that size: the 4 in order, the absent one null", got.ok && manyAsSet(got.value, big));
    }
  }
  let gm = bucket.getMany(keys);
  if (expectOk("kv_get_many", "getMany", gm.code)) expect("kv_get_many", "getMany grows from 256 bytes: the 4 in order", manyAsSet(gm.value, big));
  gm = bucket.stale().getMany(keys);
  if (expectOk("kv_get_many", "KV_STALE read", gm.code)) expect("kv_get_many", "KV_STALE read on the writer's node", manyAsSet(gm.value, big));

  // kv_set_many with an empty key: refused whole
  expectCode("kv_set_many", "an empty key in the batch is BAD_KEY",
    bucket.setMany([new shoal.KeyValue(k4, u8("x")), new shoal.KeyValue(new Uint8Array(0), u8("y"))]).code, shoal.BAD_KEY);
  const x4 = bucket.exists(k4);
  if (expectOk("kv_exists", "the refused batch's other key", x4.code)) expect("kv_set_many", "the refused batch set nothing (its other key: 0)", !x4.value);

  // batch bounds
  expectCode("kv_get_many", "0 keys is BAD_BATCH", bucket.getMany([]).code, shoal.BAD_BATCH);
  const many = new Array<Uint8Array>(0);
  for (let i = 0; i <= shoal.MAX_BATCH_ENTRIES; i++) many.push(u8("b-" + i.toString()));
  expectCode("kv_get_many", "101 keys is BAD_BATCH", bucket.getMany(many).code, shoal.BAD_BATCH);

  // kv_delete_many [k1, absent, k3]
  const dm = bucket.deleteMany([k1, absent, k3]);
  if (expectOk("kv_delete_many", "[k1, absent, k3]", dm.code)) expect("kv_delete_many", "[k1, absent, k3]: 2", dm.value == 2);
  const x1 = bucket.exists(k1);
  if (expectOk("kv_exists", "k1 after kv_delete_many", x1.code)) expect("kv_delete_many", "k1 is gone", !x1.value);
  const d2 = bucket.delete(k2);
  if (expectOk("kv_delete", "the batch's k2", d2.code)) expect("kv_delete", "the batch's k2, left alone: 1", d2.value);
}

function clusterChecks(me: u64, helper2: u64, name: string): void {
  // names
  const w = shoal.whereis(name);
  if (expectOk("whereis", "finds oneself", w.code)) expect("whereis", "finds oneself", w.value == me);
  if (expectOk("unregister", "the name", shoal.unregister(name))) ok("unregister", "the name");
  expectCode("unregister", "again is INVALID", shoal.unregister(name), shoal.INVALID);
  expectCode("whereis", "a free name is NO_PROCESS", shoal.whereis(name).code, shoal.NO_PROCESS);
  if (expectOk("join_group", "a fresh group", shoal.joinGroup(name))) ok("join_group", "a fresh group");
  const gp = shoal.groupPick(name);
  if (expectOk("group_pick", "picks the only member", gp.code)) expect("group_pick", "picks the only member", gp.value == me);
  if (expectOk("leave_group", "the group", shoal.leaveGroup(name))) ok("leave_group", "the group");
  expectCode("leave_group", "again is INVALID", shoal.leaveGroup(name), shoal.INVALID);
  expectCode("group_pick", "an empty group is NO_PROCESS", shoal.groupPick(name).code, shoal.NO_PROCESS);

  // key-value
  const bucket = new shoal.Bucket("as-allimports");
  const keyText = "k-" + me.toString();
  const key = u8(keyText);
  const ctr = u8("n-" + me.toString());
  let g = bucket.get(key);
  if (expectOk("kv_get", "a fresh key is absent", g.code)) expect("kv_get", "a fresh key is absent (NOT_FOUND)", g.value == null);
  let x = bucket.exists(key);
  if (expectOk("kv_exists", "a fresh key", x.code)) expect("kv_exists", "a fresh key: 0", !x.value);
  let v1: u64 = 0;
  const s1 = bucket.set(key, u8("v1"));
  if (expectOk("kv_set", "returns a version", s1.code)) {
    v1 = s1.value;
    expect("kv_set", "returns a version", v1 > 0);
  }
  g = bucket.get(key);
  if (expectOk("kv_get", "reads the value and version", g.code)) {
    const e = g.value;
    expect("kv_get", "reads the value and version", e != null && e.text() == "v1" && e.version == v1);
  }
  {
    const info = new shoal.KvInfo();
    expectCode("kv_get", "1-byte buffer is BUFFER_TOO_SMALL", bucket.getInto(key, new Uint8Array(1), info), shoal.BUFFER_TOO_SMALL);
    expect("kv_get", "info.length tells the size (2)", info.length == 2);
  }
  g = bucket.stale().get(key);
  if (expectOk("kv_get", "KV_STALE read", g.code)) {
    const e = g.value;
    expect("kv_get", "KV_STALE read on the writer's node", e != null && e.text() == "v1");
  }
  x = bucket.exists(key);
  if (expectOk("kv_exists", "after set", x.code)) expect("kv_exists", "after set: 1", x.value);
  expectCode("kv_cas", "expecting absent (0) is VERSION_MISMATCH", bucket.cas(key, 0, u8("no")).code, shoal.VERSION_MISMATCH);
  const c2 = bucket.cas(key, v1, u8("v2"));
  if (expectOk("kv_cas", "at the right version", c2.code)) expect("kv_cas", "at the right version", c2.value > v1);
  let n = bucket.increment(ctr, 5);
  if (expectOk("kv_increment", "absent + 5", n.code)) expect("kv_increment", "absent + 5 = 5", n.value == 5);
  n = bucket.increment(ctr, -2);
  if (expectOk("kv_increment", "5 - 2", n.code)) expect("kv_increment", "5 - 2 = 3", n.value == 3);
  expectCode("kv_increment", "a 2-byte value is NOT_A_COUNTER", bucket.increment(key, 1).code, shoal.NOT_A_COUNTER);
  let page = bucket.listPage(key, new Uint8Array(0));
  if (expectOk("kv_list", "the prefix lists the one key", page.code))
    expect("kv_list", "the prefix lists the one key", page.value.length == 1 && shoal.str(page.value[0]) == keyText);
  page = bucket.listPage(key, key);
  if (expectOk("kv_list", "after the last key", page.code)) expect("kv_list", "after the last key: 0", page.value.length == 0);
  batchChecks(bucket, me);

  // locks (and fenced writes)
  const lockName = "as-allimports-" + me.toString();
  const lockCall = u8("lock:" + lockName);
  const lr = shoal.Lock.acquire(lockName, WAIT);
  if (expectOk("lock", "a free lock", lr.code)) {
    ok("lock", "a free lock");
    const l = lr.value;
    if (expectOk("lock_check", "the current token", shoal.Lock.check(lockName, l.token))) ok("lock_check", "the current token");
    expectCode("lock_check", "another token is FENCED", shoal.Lock.check(lockName, l.token + 1), shoal.FENCED);
    const again = shoal.Lock.tryAcquire(lockName);
    if (expectOk("try_lock", "held by oneself", again.code)) expect("try_lock", "held by oneself: the same token", again.value.token == l.token);
    if (expectOk("kv_set", "fenced by the held lock", bucket.setFenced(key, u8("v3"), l).code)) ok("kv_set", "fenced by the held lock");
    const sf = bucket.setManyFenced([new shoal.KeyValue(key, u8("v3"))], l);
    if (expectOk("kv_set_many", "fenced by the held lock", sf.code)) expect("kv_set_many", "fenced by the held lock: 1", sf.value == 1);
    let r = shoal.call(helper2, lockCall, WAIT);
    if (expectOk("call", "the second helper's try_lock", r.code))
      expect("try_lock", "held by another process: BUSY (-26)", shoal.str(r.value) == "err -26");
    if (expectOk("unlock", "the held lock", l.unlock())) ok("unlock", "the held lock");
    expectCode("unlock", "again is LOCK_LOST", l.unlock(), shoal.LOCK_LOST);
    r = shoal.call(helper2, lockCall, WAIT);
    if (expectOk("call", "the second helper's try_lock", r.code))
      expect("try_lock", "the second helper gets the free lock", shoal.str(r.value).startsWith("locked "));
    expectCode("kv_set", "fenced by a lost lock is FENCED", bucket.setFenced(key, u8("v4"), l).code, shoal.FENCED);
    expectCode("kv_cas", "fenced by a lost lock is FENCED", bucket.casFenced(key, 0, u8("v4"), l).code, shoal.FENCED);
    expectCode("kv_delete", "fenced by a lost lock is FENCED", bucket.deleteFenced(key, l).code, shoal.FENCED);
    expectCode("kv_set_many", "fenced by a lost lock is FENCED", bucket.setManyFenced([new shoal.KeyValue(key, u8("v4"))], l).code, shoal.FENCED);
    expectCode("kv_delete_many", "fenced by a lost lock is FENCED", bucket.deleteManyFenced([key], l).code, shoal.FENCED);
  }

  let d = bucket.delete(key);
  if (expectOk("kv_delete", "an existing key", d.code)) expect("kv_delete", "an existing key: 1", d.value);
  d = bucket.delete(key);
  if (expectOk("kv_delete", "again", d.code)) expect("kv_delete", "again: 0", !d.value);
  d = bucket.delete(ctr);
  if (expectOk("kv_delete", "the counter", d.code)) expect("kv_delete", "the counter: 1", d.value);
}

function standaloneChecks(name: string): void {
  const nn = shoal.NO_NODE;
  expectCode("unregister", "NO_NODE", shoal.unregister(name), nn);
  expectCode("whereis", "NO_NODE", shoal.whereis(name).code, nn);
  expectCode("join_group", "NO_NODE", shoal.joinGroup(name), nn);
  expectCode("leave_group", "NO_NODE", shoal.leaveGroup(name), nn);
  expectCode("group_pick", "NO_NODE", shoal.groupPick(name).code, nn);
  const b = new shoal.Bucket("as-allimports");
  expectCode("kv_get", "NO_NODE", b.get(u8("k")).code, nn);
  expectCode("kv_exists", "NO_NODE", b.exists(u8("k")).code, nn);
  expectCode("kv_set", "NO_NODE", b.set(u8("k"), u8("v")).code, nn);
  expectCode("kv_cas", "NO_NODE", b.cas(u8("k"), 0, u8("v")).code, nn);
  expectCode("kv_delete", "NO_NODE", b.delete(u8("k")).code, nn);
  expectCode("kv_increment", "NO_NODE", b.increment(u8("n"), 1).code, nn);
  expectCode("kv_list", "NO_NODE", b.listPage(new Uint8Array(0), new Uint8Array(0)).code, nn);
  expectCode("kv_get_many", "NO_NODE", b.getMany([u8("k")]).code, nn);
  expectCode("kv_set_many", "NO_NODE", b.setMany([new shoal.KeyValue(u8("k"), u8("v"))]).code, nn);
  expectCode("kv_delete_many", "NO_NODE", b.deleteMany([u8("k")]).code, nn);
  expectCode("lock", "NO_NODE", shoal.Lock.acquire(name, 100).code, nn);
  expectCode("try_lock", "NO_NODE", shoal.Lock.tryAcquire(name).code, nn);
  // No lock was granted: unlock through a Lock value made by hand.
  expectCode("unlock", "NO_NODE", new shoal.Lock(name, 1).unlock(), nn);
  expectCode("lock_check", "NO_NODE", shoal.Lock.check(name, 1), nn);
}

function run(selfRef: string): void {
  // self_pid
  const me = shoal.selfPid();
  expect("self_pid", "non-zero", me != 0);

  // log
  if (expectOk("log", "info line", shoal.log(shoal.LOG_INFO, "as_allimports: start"))) ok("log", "info line");
  const x = shoal.utf8("x");
  expectCode("log", "level 9 is INVALID", shoal.shoal_log(9, x.dataStart, x.length), shoal.INVALID);

  // sleep_ms, yield_now, preempt
  if (expectOk("sleep_ms", "1 ms", shoal.sleepMs(1))) ok("sleep_ms", "1 ms");
  expectCode("sleep_ms", "-1 is INVALID", shoal.sleepMs(-1), shoal.INVALID);
  if (expectOk("yield_now", "returns OK", shoal.yieldNow())) ok("yield_now", "returns OK");
  shoal.preempt();
  ok("preempt", "returns (reserved for the host; harmless)");

  // spawn, spawn_on
  expectCode("spawn", "unknown module is NO_MODULE", shoal.spawn("no-such-module-as-allimports").code, shoal.NO_MODULE);
  const h = shoal.spawn(selfRef, ["helper"]);
  if (!h.ok) {
    fail("spawn", "a helper from <self-ref>", describe(h.code));
    console.log("allimports: cannot spawn '" + selfRef + "': run it by a registered name or pass its reference as the argument");
    return;
  }
  const helper = h.value;
  expect("spawn", "a helper from <self-ref>", helper != me);
  expectCode("spawn_on", "unknown node is NO_NODE", shoal.spawnOn("no-such-node-as", selfRef, ["helper"]).code, shoal.NO_NODE);
  const h2 = shoal.spawnOn("", selfRef, ["helper"]);
  if (!h2.ok) {
    fail("spawn_on", "empty target starts a second helper", describe(h2.code));
    return;
  }
  ok("spawn_on", "empty target starts a second helper");
  const helper2 = h2.value;

  // send, recv
  if (expectOk("send", "to self", shoal.sendString(me, "note"))) ok("send", "to self");
  {
    const info = new shoal.RecvInfo();
    expectCode("recv", "0-byte buffer is BUFFER_TOO_SMALL", shoal.recvInto(new Uint8Array(0), 0, info), shoal.BUFFER_TOO_SMALL);
    expect("recv", "info.length tells the size (4)", info.length == 4);
    const m = shoal.recv(WAIT);
    if (expectOk("recv", "the message is still queued", m.code))
      expect("recv", "the message is still queued and arrives whole", m.value.sender == me && m.value.text() == "note");
    expectCode("recv", "empty mailbox polls TIMEOUT", shoal.recv(0).code, shoal.TIMEOUT);
  }
  expectCode("send", "unknown pid is NO_PROCESS", shoal.sendString(0xFFFFFFFFFFFFFFF0, "x"), shoal.NO_PROCESS);

  // call, reply (the helper replies)
  const c = shoal.call(helper, u8("echo:hello"), WAIT);
  if (expectOk("call", "helper echoes (reply)", c.code)) expect("call", "helper echoes (reply)", shoal.str(c.value) == "hello");
  expectCode("call", "calling oneself is INVALID", shoal.call(me, u8("echo:x"), WAIT).code, shoal.INVALID);
  expectCode("reply", "unknown handle is INVALID", shoal.reply(0x777700001234, u8("x")), shoal.INVALID);

  // send_request, recv_match (MATCH_REPLY)
  const req = shoal.sendRequest(helper, u8("echo:request"));
  if (expectOk("send_request", "to the helper", req.code)) {
    ok("send_request", "to the helper");
    const r = shoal.receiveResponse(req.value, WAIT);
    if (expectOk("recv_match", "MATCH_REPLY gets the answer", r.code))
      expect("recv_match", "MATCH_REPLY gets the answer", shoal.str(r.value) == "request");
  }

  // recv_match (MATCH_FROM) leaves other mail queued
  shoal.sendString(me, "mine");
  const pr = shoal.sendString(helper, "ping");
  if (pr < 0) fail("send", "ping to the helper", describe(pr));
  const from = shoal.recvFrom(helper, WAIT);
  if (expectOk("recv_match", "MATCH_FROM takes the helper's pong", from.code))
    expect("recv_match", "MATCH_FROM takes the helper's pong", from.value.isMessage && from.value.from == helper && from.value.text() == "pong");
  const mine = shoal.recv(0);
  if (expectOk("recv", "own message skipped by MATCH_FROM", mine.code))
    expect("recv", "own message skipped by MATCH_FROM is still queued", mine.value.text() == "mine");

  // monitor, demonitor, recv_any (DOWN), exit (the helper's)
  const m1 = shoal.monitor(helper);
  if (expectOk("monitor", "the helper", m1.code)) {
    ok("monitor", "the helper");
    if (expectOk("demonitor", "withdraws it", shoal.demonitor(m1.value))) ok("demonitor", "withdraws it");
    expectCode("demonitor", "again is INVALID", shoal.demonitor(m1.value), shoal.INVALID);
  }
  expectCode("monitor", "oneself is INVALID", shoal.monitor(me).code, shoal.INVALID);
  const m2 = shoal.monitor(helper);
  if (expectOk("monitor", "the helper again", m2.code)) {
    const er = shoal.sendString(helper, "exit 7");
    if (er < 0) fail("send", "exit 7 to the helper", describe(er));
    const down = shoal.recvAny(WAIT);
    if (expectOk("recv_any", "DOWN of the helper", down.code)) {
      const dv = down.value;
      expect("recv_any", "DOWN of the helper with this monitor", dv.isDown && dv.from == helper && dv.reference == m2.value);
      expect("exit", "the helper's exit(7) is the DOWN's reason", dv.reason == shoal.REASON_EXIT && dv.code == 7);
    }
  }
  expectCode("call", "a process that exited is NO_PROCESS", shoal.call(helper, u8("echo:x"), WAIT).code, shoal.NO_PROCESS);

  // names, key-value, locks: need a cluster
  const name = "as-allimports-" + me.toString();
  const reg = shoal.register(name);
  if (reg == shoal.NO_NODE) {
    console.log("standalone: no cluster here (shoal run), so names, key-value and locks must answer NO_NODE");
    ok("register", "NO_NODE off a cluster");
    standaloneChecks(name);
  } else {
    if (expectOk("register", "a fresh name", reg)) ok("register", "a fresh name");
    clusterChecks(me, helper2, name);
  }

  // End the second helper and wait for it, so nothing is left running.
  const m3 = shoal.monitor(helper2);
  if (expectOk("monitor", "the second helper", m3.code)) {
    const xr = shoal.sendString(helper2, "exit 0");
    if (xr < 0) fail("send", "exit 0 to the second helper", describe(xr));
    const d3 = shoal.recvAny(WAIT);
    if (expectOk("recv_any", "DOWN of the second helper", d3.code)) {
      const dv = d3.value;
      expect("exit", "the second helper's exit(0) is its DOWN's reason",
        dv.isDown && dv.from == helper2 && dv.reference == m3.value && dv.reason == shoal.REASON_EXIT && dv.code == 0);
    }
  }
}

const argv = process.argv;
if (argv.length == 2 && argv[1] == "helper") helper();
if (argv.length > 2) {
  process.stderr.write("usage: as_allimports [<self-ref>] | helper\n");
  shoal.exit(2);
}
run(argv.length == 2 ? argv[1] : argv.length == 1 ? argv[0] : "");
if (failures == 0) {
  console.log("all imports ok (" + checks.toString() + " checks)");
  shoal.exit(0);
}
console.log("allimports: " + failures.toString() + " of " + checks.toString() + " checks failed");
shoal.exit(1);
