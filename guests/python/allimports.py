"""py_allimports: calls every shoal_v1 import through the Python SDK
(sdk/python) and checks each result.

Modes (first argument):

- ``allimports [<self-ref>]`` (or no argument): the checks. <self-ref>
  (default: argv[0]) is how this module is spawned again as a helper, so it
  must be a registered name or sha256: reference. Prints ``ok <import>:
  <what>`` or ``FAIL <import>: <what>: got <x>`` per check and finally ``all
  imports ok`` (exit 0), or ``allimports: <n> of <m> checks failed`` (exit
  1). Off a cluster (shoal run) names, key-value and locks answer NO_NODE,
  as the ABI says; the checks then expect exactly that and print
  ``standalone: ...`` first.
- ``helper``: the peer. Loops on recv_any: a call ``echo:<x>`` is answered
  ``<x>``; a call ``lock:<name>`` does try_lock and answers ``locked
  <token>`` or ``err <code>``; a plain message ``ping`` is answered (plain)
  ``pong``; a plain message ``exit <code>`` exits with that code.
"""

import sys

import _shoal
import shoal

WAIT = 5.0

failures = 0
checks = 0


def ok(imp, what):
    global checks
    checks += 1
    print("ok %s: %s" % (imp, what))


def fail(imp, what, got):
    global checks, failures
    checks += 1
    failures += 1
    print("FAIL %s: %s: got %s" % (imp, what, got))


def expect(imp, what, cond):
    if cond:
        ok(imp, what)
    else:
        fail(imp, what, "false")


def attempt(imp, what, fn, *args):
    """fn(*args); a ShoalError fails the check. Returns (succeeded, result)."""
    try:
        return True, fn(*args)
    except shoal.ShoalError as e:
        fail(imp, what, e.name)
        return False, None


def expect_err(imp, what, want, fn, *args):
    """fn(*args) must raise the ShoalError subclass `want`."""
    try:
        fn(*args)
    except want:
        ok(imp, what)
        return
    except shoal.ShoalError as e:
        fail(imp, what, "%s, expected %s" % (e.name, want().name))
        return
    fail(imp, what, "success, expected %s" % want().name)


def expect_code(imp, what, rc, want):
    if rc == want.code:
        ok(imp, what)
    else:
        fail(imp, what, "%d (%s), expected %d (%s)" % (rc, shoal.code_name(rc), want.code, want().name))


# ---- helper ----


def helper():
    while True:
        try:
            inc = shoal.recv_any()
        except shoal.ShoalError as e:
            sys.stderr.write("py_allimports helper: recv_any: %s\n" % e.name)
            shoal.exit(1)
        if inc.kind == shoal.KIND_CALL:
            req = inc.data.decode()
            answer = "?"
            if req.startswith("echo:"):
                answer = req[len("echo:"):]
            elif req.startswith("lock:"):
                try:
                    answer = "locked %d" % shoal.try_lock(req[len("lock:"):]).token
                except shoal.ShoalError as e:
                    answer = "err %d" % e.code
            try:
                shoal.reply(inc.handle, answer)
            except shoal.ShoalError as e:
                sys.stderr.write("py_allimports helper: reply: %s\n" % e.name)
        elif inc.kind == shoal.KIND_MESSAGE:
            msg = inc.data.decode()
            if msg == "ping":
                try:
                    shoal.send_blocking(inc.sender, b"pong")
                except shoal.ShoalError as e:
                    sys.stderr.write("py_allimports helper: send: %s\n" % e.name)
            elif msg.startswith("exit "):
                try:
                    code = int(msg[len("exit "):])
                except ValueError:
                    code = 1
                shoal.exit(code)


# ---- the checks ----


def run(self_ref):
    # self_pid
    me = shoal.self_pid()
    expect("self_pid", "non-zero", me != 0)

    # log
    if attempt("log", "info line", shoal.log, "py_allimports: start", shoal.LOG_INFO)[0]:
        ok("log", "info line")
    expect_code("log", "level 9 is INVALID", _shoal.log(9, b"x"), shoal.Invalid)

    # sleep_ms, yield_now, preempt
    if attempt("sleep_ms", "1 ms", shoal.sleep, 0.001)[0]:
        ok("sleep_ms", "1 ms")
    expect_code("sleep_ms", "-1 is INVALID", _shoal.sleep_ms(-1), shoal.Invalid)
    if attempt("yield_now", "returns OK", shoal.yield_now)[0]:
        ok("yield_now", "returns OK")
    shoal.preempt()
    ok("preempt", "returns (reserved for the host; harmless)")

    # spawn, spawn_on
    expect_err("spawn", "unknown module is NO_MODULE", shoal.NoModule, shoal.spawn, "no-such-module-py-allimports")
    try:
        helper_pid = shoal.spawn(self_ref, "helper")
    except shoal.ShoalError as e:
        fail("spawn", "a helper from <self-ref>", e.name)
        print("allimports: cannot spawn %r: run it by a registered name or pass its reference as the argument" % self_ref)
        return
    expect("spawn", "a helper from <self-ref>", helper_pid != me)
    expect_err("spawn_on", "unknown node is NO_NODE", shoal.NoNode, shoal.spawn_on, "no-such-node-py", self_ref, "helper")
    done, helper2 = attempt("spawn_on", "empty target starts a second helper", shoal.spawn_on, "", self_ref, "helper")
    if not done:
        return
    ok("spawn_on", "empty target starts a second helper")

    # send, recv
    if attempt("send", "to self", shoal.send, me, b"note")[0]:
        ok("send", "to self")
    try:
        shoal.recv_into_size(0, 0)
        fail("recv", "0-byte buffer is BUFFER_TOO_SMALL", "success")
    except shoal.BufferTooSmall as e:
        ok("recv", "0-byte buffer is BUFFER_TOO_SMALL")
        expect("recv", "the error tells the size (4)", e.detail == "4")
    except shoal.ShoalError as e:
        fail("recv", "0-byte buffer is BUFFER_TOO_SMALL", e.name)
    done, m = attempt("recv", "the message is still queued", shoal.recv, WAIT)
    if done:
        expect("recv", "the message is still queued and arrives whole", m.sender == me and m.data == b"note")
    expect_err("recv", "empty mailbox polls TIMEOUT", shoal.Timeout, shoal.recv, 0)
    expect_err("send", "unknown pid is NO_PROCESS", shoal.NoProcess, shoal.send, 0xFFFF_FFFF_FFFF_FFF0, b"x")
    # A message longer than the SDK's scratch buffer, through recv.
    big = b"0123456789abcdef" * ((shoal.SCRATCH_SIZE + 4096) // 16)
    if attempt("send", "a 68 KiB message to self", shoal.send, me, big)[0]:
        done, m = attempt("recv", "a message longer than the scratch buffer", shoal.recv, WAIT)
        if done:
            expect("recv", "a message longer than the scratch buffer arrives whole", m.data == big)

    # call, reply (the helper replies)
    done, r = attempt("call", "helper echoes (reply)", shoal.call, helper_pid, b"echo:hello", WAIT)
    if done:
        expect("call", "helper echoes (reply)", r == b"hello")
    expect_err("call", "calling oneself is INVALID", shoal.Invalid, shoal.call, me, b"echo:x", WAIT)
    expect_err("reply", "unknown handle is INVALID", shoal.Invalid, shoal.reply, 0x7777_0000_1234, b"x")

    # send_request, recv_match (MATCH_REPLY)
    done, req = attempt("send_request", "to the helper", shoal.send_request, helper_pid, b"echo:request")
    if done:
        ok("send_request", "to the helper")
        done, r = attempt("recv_match", "MATCH_REPLY gets the answer", shoal.receive_response, req, WAIT)
        if done:
            expect("recv_match", "MATCH_REPLY gets the answer", r == b"request")

    # recv_match (MATCH_FROM) leaves other mail queued
    shoal.send(me, b"mine")
    attempt("send", "ping to the helper", shoal.send, helper_pid, b"ping")
    done, inc = attempt("recv_match", "MATCH_FROM takes the helper's pong", shoal.recv_from, helper_pid, WAIT)
    if done:
        expect(
            "recv_match",
            "MATCH_FROM takes the helper's pong",
            inc.kind == shoal.KIND_MESSAGE and inc.sender == helper_pid and inc.data == b"pong",
        )
    done, m = attempt("recv", "own message skipped by MATCH_FROM is still queued", shoal.recv, 0)
    if done:
        expect("recv", "own message skipped by MATCH_FROM is still queued", m.data == b"mine")

    # monitor, demonitor, recv_any (DOWN), exit (the helper's)
    done, m1 = attempt("monitor", "the helper", shoal.monitor, helper_pid)
    if done:
        ok("monitor", "the helper")
        if attempt("demonitor", "withdraws it", shoal.demonitor, m1)[0]:
            ok("demonitor", "withdraws it")
        expect_err("demonitor", "again is INVALID", shoal.Invalid, shoal.demonitor, m1)
    expect_err("monitor", "oneself is INVALID", shoal.Invalid, shoal.monitor, me)
    done, m2 = attempt("monitor", "the helper again", shoal.monitor, helper_pid)
    if done:
        attempt("send", "exit 7 to the helper", shoal.send, helper_pid, b"exit 7")
        done, inc = attempt("recv_any", "DOWN of the helper", shoal.recv_any, WAIT)
        if done:
            expect(
                "recv_any",
                "DOWN of the helper with this monitor",
                inc.kind == shoal.KIND_DOWN and inc.sender == helper_pid and inc.monitor == m2,
            )
            expect("exit", "the helper's exit(7) is the DOWN's reason", inc.reason == shoal.REASON_EXIT and inc.exit_code == 7)
    expect_err("call", "a process that exited is NO_PROCESS", shoal.NoProcess, shoal.call, helper_pid, b"echo:x", WAIT)

    # names, key-value, locks: need a cluster
    name = "py-allimports-%d" % me
    try:
        shoal.register(name)
        ok("register", "a fresh name")
        cluster_checks(me, helper2, name)
    except shoal.NoNode:
        print("standalone: no cluster here (shoal run), so names, key-value and locks must answer NO_NODE")
        ok("register", "NO_NODE off a cluster")
        standalone_checks(name)
    except shoal.ShoalError as e:
        fail("register", "a fresh name", e.name)
        cluster_checks(me, helper2, name)

    # End the second helper and wait for it, so nothing is left running.
    done, m3 = attempt("monitor", "the second helper", shoal.monitor, helper2)
    if done:
        attempt("send", "exit 0 to the second helper", shoal.send, helper2, b"exit 0")
        done, inc = attempt("recv_any", "DOWN of the second helper", shoal.recv_any, WAIT)
        if done:
            expect(
                "exit",
                "the second helper's exit(0) is its DOWN's reason",
                inc.kind == shoal.KIND_DOWN
                and inc.sender == helper2
                and inc.monitor == m3
                and inc.reason == shoal.REASON_EXIT
                and inc.exit_code == 0,
            )


def cluster_checks(me, helper2, name):
    # names
    done, p = attempt("whereis", "finds oneself", shoal.whereis, name)
    if done:
        expect("whereis", "finds oneself", p == me)
    if attempt("unregister", "the name", shoal.unregister, name)[0]:
        ok("unregister", "the name")
    expect_err("unregister", "again is INVALID", shoal.Invalid, shoal.unregister, name)
    expect_err("whereis", "a free name is NO_PROCESS", shoal.NoProcess, shoal.whereis, name)
    if attempt("join_group", "a fresh group", shoal.join_group, name)[0]:
        ok("join_group", "a fresh group")
    done, p = attempt("group_pick", "picks the only member", shoal.group_pick, name)
    if done:
        expect("group_pick", "picks the only member", p == me)
    if attempt("leave_group", "the group", shoal.leave_group, name)[0]:
        ok("leave_group", "the group")
    expect_err("leave_group", "again is INVALID", shoal.Invalid, shoal.leave_group, name)
    expect_err("group_pick", "an empty group is NO_PROCESS", shoal.NoProcess, shoal.group_pick, name)

    # key-value
    bucket = shoal.Bucket("py-allimports")
    key = "k-%d" % me
    ctr = "n-%d" % me
    done, e = attempt("kv_get", "a fresh key is absent", bucket.get, key)
    if done:
        expect("kv_get", "a fresh key is absent (NOT_FOUND)", e is None)
    done, ex = attempt("kv_exists", "a fresh key", bucket.exists, key)
    if done:
        expect("kv_exists", "a fresh key: 0", not ex)
    v1 = 0
    done, v = attempt("kv_set", "returns a version", bucket.set, key, b"v1")
    if done:
        v1 = v
        expect("kv_set", "returns a version", v > 0)
    done, e = attempt("kv_get", "reads the value and version", bucket.get, key)
    if done:
        expect("kv_get", "reads the value and version", e is not None and e.value == b"v1" and e.version == v1)
    try:
        bucket.get_with_size(key, 1)
        fail("kv_get", "1-byte buffer is BUFFER_TOO_SMALL", "success")
    except shoal.BufferTooSmall as err:
        ok("kv_get", "1-byte buffer is BUFFER_TOO_SMALL")
        expect("kv_get", "the error tells the size (2)", err.detail == "2")
    except shoal.ShoalError as err:
        fail("kv_get", "1-byte buffer is BUFFER_TOO_SMALL", err.name)
    done, e = attempt("kv_get", "KV_STALE read", bucket.stale().get, key)
    if done:
        expect("kv_get", "KV_STALE read on the writer's node", e is not None and e.value == b"v1")
    done, ex = attempt("kv_exists", "after set", bucket.exists, key)
    if done:
        expect("kv_exists", "after set: 1", ex)
    expect_err("kv_cas", "expecting absent (0) is VERSION_MISMATCH", shoal.VersionMismatch, bucket.cas, key, 0, b"no")
    done, v2 = attempt("kv_cas", "at the right version", bucket.cas, key, v1, b"v2")
    if done:
        expect("kv_cas", "at the right version", v2 > v1)
    done, n = attempt("kv_increment", "absent + 5", bucket.increment, ctr, 5)
    if done:
        expect("kv_increment", "absent + 5 = 5", n == 5)
    done, n = attempt("kv_increment", "5 - 2", bucket.increment, ctr, -2)
    if done:
        expect("kv_increment", "5 - 2 = 3", n == 3)
    expect_err("kv_increment", "a 2-byte value is NOT_A_COUNTER", shoal.NotACounter, bucket.increment, key, 1)
    done, keys = attempt("kv_list", "the prefix lists the one key", bucket.list, key, "")
    if done:
        expect("kv_list", "the prefix lists the one key", keys == [key])
        done, keys = attempt("kv_list", "after the last key", bucket.list, key, key)
        if done:
            expect("kv_list", "after the last key: 0", keys == [])
    done, keys = attempt("kv_list", "keys() pages through the prefix", bucket.keys, key)
    if done:
        expect("kv_list", "keys() pages through the prefix", keys == [key])
    batch_checks(bucket, me)

    # locks (and fenced writes)
    lock_name = "py-allimports-%d" % me
    lock_call = ("lock:" + lock_name).encode()
    done, lk = attempt("lock", "a free lock", shoal.lock, lock_name, WAIT)
    if not done:
        return
    ok("lock", "a free lock")
    if attempt("lock_check", "the current token", shoal.lock_check, lock_name, lk.token)[0]:
        ok("lock_check", "the current token")
    expect_err("lock_check", "another token is FENCED", shoal.Fenced, shoal.lock_check, lock_name, lk.token + 1)
    done, again = attempt("try_lock", "held by oneself", shoal.try_lock, lock_name)
    if done:
        expect("try_lock", "held by oneself: the same token", again.token == lk.token)
    if attempt("kv_set", "fenced by the held lock", bucket.set, key, b"v3", lk)[0]:
        ok("kv_set", "fenced by the held lock")
    one_entry = [(key, b"v3")]
    done, n = attempt("kv_set_many", "fenced by the held lock", bucket.set_many, one_entry, lk)
    if done:
        expect("kv_set_many", "fenced by the held lock: 1", n == 1)
    done, r = attempt("call", "the second helper's try_lock", shoal.call, helper2, lock_call, WAIT)
    if done:
        expect("try_lock", "held by another process: BUSY (-26)", r == b"err -26")
    if attempt("unlock", "the held lock", lk.unlock)[0]:
        ok("unlock", "the held lock")
    expect_err("unlock", "again is LOCK_LOST", shoal.LockLost, lk.unlock)
    # The second helper takes it now; the old token is fenced out.
    done, r = attempt("call", "the second helper's try_lock", shoal.call, helper2, lock_call, WAIT)
    if done:
        expect("try_lock", "the second helper gets the free lock", r.startswith(b"locked "))
    expect_err("kv_set", "fenced by a lost lock is FENCED", shoal.Fenced, bucket.set, key, b"v4", lk)
    expect_err("kv_cas", "fenced by a lost lock is FENCED", shoal.Fenced, bucket.cas, key, 0, b"v4", lk)
    expect_err("kv_delete", "fenced by a lost lock is FENCED", shoal.Fenced, bucket.delete, key, lk)
    expect_err("kv_set_many", "fenced by a lost lock is FENCED", shoal.Fenced, bucket.set_many, one_entry, lk)
    expect_err("kv_delete_many", "fenced by a lost lock is FENCED", shoal.Fenced, bucket.delete_many, [key], lk)

    done, ex = attempt("kv_delete", "an existing key", bucket.delete, key)
    if done:
        expect("kv_delete", "an existing key: 1", ex)
    done, ex = attempt("kv_delete", "again", bucket.delete, key)
    if done:
        expect("kv_delete", "again: 0", not ex)
    done, ex = attempt("kv_delete", "the counter", bucket.delete, ctr)
    if done:
        expect("kv_delete", "the counter: 1", ex)


def many_as_set(got, big):
    """The 4 entries of get_many [k1, absent, k2, k3] after set_many of k1
    (big), k2 ("two"), k3 ("three")."""
    return (
        len(got) == 4
        and got[0] is not None and got[0].value == big and got[0].version > 0
        and got[1] is None
        and got[2] is not None and got[2].value == b"two" and got[2].version > 0
        and got[3] is not None and got[3].value == b"three" and got[3].version > 0
    )


def batch_checks(bucket, me):
    k1, k2, k3, k4 = ("b%d-%d" % (i, me) for i in (1, 2, 3, 4))
    absent = "b0-%d" % me
    big = bytes(ord("a") + i % 26 for i in range(3000))

    # kv_set_many: 3 entries, k1's value 3000 bytes
    done, n = attempt("kv_set_many", "3 entries", bucket.set_many, [(k1, big), (k2, b"two"), (k3, b"three")])
    if done:
        expect("kv_set_many", "3 entries: 3", n == 3)

    # kv_get_many [k1, absent, k2, k3]
    keys = [k1, absent, k2, k3]
    want = 4 * shoal.KV_MANY_RECORD_HEADER + len(big) + len("two") + len("three")
    size = 0
    try:
        bucket.get_many_with_size(keys, 256)
        fail("kv_get_many", "a 256-byte buffer is BUFFER_TOO_SMALL", "success")
    except shoal.BufferTooSmall as err:
        ok("kv_get_many", "a 256-byte buffer is BUFFER_TOO_SMALL")
        size = int(err.detail)
        expect("kv_get_many", "the size needed tells the total (3056)", size == want)
    except shoal.ShoalError as err:
        fail("kv_get_many", "a 256-byte buffer is BUFFER_TOO_SMALL", err.name)
    done, got = attempt("kv_get_many", "a buffer of that size", bucket.get_many_with_size, keys, size)
    if done:
        expect("kv_get_many", "a buffer of that size: the 4 in order, the absent one None", many_as_set(got[0], big))
    done, got = attempt("kv_get_many", "KV_STALE read", bucket.stale().get_many_with_size, keys, 8192)
    if done:
        expect("kv_get_many", "KV_STALE read on the writer's node", many_as_set(got[0], big))
    done, got = attempt("kv_get_many", "get_many", bucket.get_many, keys)
    if done:
        expect("kv_get_many", "get_many: the 4 in order", many_as_set(got, big))

    # kv_set_many with an empty key: refused whole
    expect_err("kv_set_many", "an empty key in the batch is BAD_KEY", shoal.BadKey, bucket.set_many, [(k4, b"x"), ("", b"y")])
    done, ex = attempt("kv_exists", "the refused batch's other key", bucket.exists, k4)
    if done:
        expect("kv_set_many", "the refused batch set nothing (its other key: 0)", not ex)

    # batch bounds
    expect_err("kv_get_many", "0 keys is BAD_BATCH", shoal.BadBatch, bucket.get_many, [])
    many = ["b-%d" % i for i in range(shoal.MAX_BATCH_ENTRIES + 1)]
    expect_err("kv_get_many", "101 keys is BAD_BATCH", shoal.BadBatch, bucket.get_many, many)

    # kv_delete_many [k1, absent, k3]
    done, n = attempt("kv_delete_many", "[k1, absent, k3]", bucket.delete_many, [k1, absent, k3])
    if done:
        expect("kv_delete_many", "[k1, absent, k3]: 2", n == 2)
    done, ex = attempt("kv_exists", "k1 after kv_delete_many", bucket.exists, k1)
    if done:
        expect("kv_delete_many", "k1 is gone", not ex)
    done, ex = attempt("kv_delete", "the batch's k2", bucket.delete, k2)
    if done:
        expect("kv_delete", "the batch's k2, left alone: 1", ex)


def standalone_checks(name):
    nn = shoal.NoNode
    expect_err("unregister", "NO_NODE", nn, shoal.unregister, name)
    expect_err("whereis", "NO_NODE", nn, shoal.whereis, name)
    expect_err("join_group", "NO_NODE", nn, shoal.join_group, name)
    expect_err("leave_group", "NO_NODE", nn, shoal.leave_group, name)
    expect_err("group_pick", "NO_NODE", nn, shoal.group_pick, name)
    b = shoal.Bucket("py-allimports")
    expect_err("kv_get", "NO_NODE", nn, b.get, "k")
    expect_err("kv_exists", "NO_NODE", nn, b.exists, "k")
    expect_err("kv_set", "NO_NODE", nn, b.set, "k", b"v")
    expect_err("kv_cas", "NO_NODE", nn, b.cas, "k", 0, b"v")
    expect_err("kv_delete", "NO_NODE", nn, b.delete, "k")
    expect_err("kv_increment", "NO_NODE", nn, b.increment, "n", 1)
    expect_err("kv_list", "NO_NODE", nn, b.list, "", "")
    expect_err("kv_get_many", "NO_NODE", nn, b.get_many, ["k"])
    expect_err("kv_set_many", "NO_NODE", nn, b.set_many, [("k", b"v")])
    expect_err("kv_delete_many", "NO_NODE", nn, b.delete_many, ["k"])
    expect_err("lock", "NO_NODE", nn, shoal.lock, name, 0.1)
    expect_err("try_lock", "NO_NODE", nn, shoal.try_lock, name)
    expect_err("unlock", "NO_NODE", nn, shoal.Lock(name, 1).unlock)
    expect_err("lock_check", "NO_NODE", nn, shoal.lock_check, name, 1)


def main(argv):
    if len(argv) == 2 and argv[1] == "helper":
        helper()
    if len(argv) > 2:
        sys.stderr.write("usage: py_allimports [<self-ref>] | helper\n")
        shoal.exit(2)
    self_ref = argv[1] if len(argv) == 2 else argv[0]
    run(self_ref)
    if failures == 0:
        print("all imports ok (%d checks)" % checks)
        shoal.exit(0)
    print("allimports: %d of %d checks failed" % (failures, checks))
    shoal.exit(1)


main(sys.argv)
