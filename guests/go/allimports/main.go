// Command go_allimports calls every shoal_v1 import through the Go SDK
// (sdk/go) and checks each result.
//
// Modes (first argument):
//
//   - allimports [<self-ref>] (or no argument): the checks. <self-ref>
//     (default: argv[0]) is how this module is spawned again as a helper, so
//     it must be a registered name or sha256: reference (shoal run of a
//     pushed name passes the name as argv[0]; shoal deploy passes the file
//     name, so give the reference explicitly there). Prints "ok <import>:
//     <what>" or "FAIL <import>: <what>: <got>" per check and finally "all
//     imports ok" (exit 0), or "allimports: <n> of <m> checks failed" (exit
//     1). Off a cluster (shoal run) names, key-value and locks answer
//     NO_NODE, as the ABI says; the checks then expect exactly that and
//     print "standalone: ..." first. In a cluster (even of one node: shoal
//     node start + shoal deploy) they are checked for real.
//   - helper: the peer. Loops on recv_any: a call "echo:<x>" is answered
//     "<x>"; a call "lock:<name>" does try_lock and answers "locked <token>"
//     or "err <code>"; a plain message "ping" is answered (plain) "pong"; a
//     plain message "exit <code>" exits with that code.
package main

import (
	"bytes"
	"errors"
	"os"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"shoal"
	"shoal/raw"
)

const wait = 5 * time.Second

var failures, checks int

func out(s string) { os.Stdout.WriteString(s + "\n") }

func ok(imp, what string) {
	checks++
	out("ok " + imp + ": " + what)
}

func fail(imp, what, got string) {
	checks++
	failures++
	out("FAIL " + imp + ": " + what + ": got " + got)
}

func expect(imp, what string, cond bool) {
	if cond {
		ok(imp, what)
	} else {
		fail(imp, what, "false")
	}
}

// check: err must be nil.
func check(imp, what string, err error) bool {
	if err != nil {
		fail(imp, what, shoal.ErrorName(err))
		return false
	}
	return true
}

// expectErr: err must be (or wrap) want.
func expectErr(imp, what string, err error, want shoal.Errno) {
	switch {
	case err == nil:
		fail(imp, what, "success, expected "+want.Name())
	case errors.Is(err, want):
		ok(imp, what)
	default:
		fail(imp, what, shoal.ErrorName(err)+", expected "+want.Name())
	}
}

// expectCode: a raw result must be want.
func expectCode(imp, what string, rc int32, want shoal.Errno) {
	if rc == int32(want) {
		ok(imp, what)
	} else {
		fail(imp, what, strconv.Itoa(int(rc))+" ("+shoal.CodeName(rc)+"), expected "+strconv.Itoa(int(want))+" ("+want.Name()+")")
	}
}

func u64(v uint64) string { return strconv.FormatUint(v, 10) }

func main() {
	if len(os.Args) == 2 && os.Args[1] == "helper" {
		helper()
	}
	if len(os.Args) > 2 {
		os.Stderr.WriteString("usage: go_allimports [<self-ref>] | helper\n")
		shoal.Exit(2)
	}
	selfRef := ""
	if len(os.Args) == 2 {
		selfRef = os.Args[1]
	} else if len(os.Args) == 1 {
		selfRef = os.Args[0]
	}
	run(selfRef)
	if failures == 0 {
		out("all imports ok (" + strconv.Itoa(checks) + " checks)")
		shoal.Exit(0)
	}
	out("allimports: " + strconv.Itoa(failures) + " of " + strconv.Itoa(checks) + " checks failed")
	shoal.Exit(1)
}

// ---- helper ----

func helper() {
	for {
		in, err := shoal.RecvAny(shoal.Forever)
		if err != nil {
			os.Stderr.WriteString("go_allimports helper: recv_any: " + shoal.ErrorName(err) + "\n")
			shoal.Exit(1)
		}
		switch in.Kind {
		case shoal.KindCall:
			req := string(in.Data)
			answer := "?"
			if x, found := strings.CutPrefix(req, "echo:"); found {
				answer = x
			} else if name, found := strings.CutPrefix(req, "lock:"); found {
				if l, err := shoal.TryLock(name); err != nil {
					answer = "err " + strconv.Itoa(int(shoal.ErrorCode(err)))
				} else {
					answer = "locked " + u64(l.Token)
				}
			}
			if err := shoal.Reply(in.Handle, []byte(answer)); err != nil {
				os.Stderr.WriteString("go_allimports helper: reply: " + shoal.ErrorName(err) + "\n")
			}
		case shoal.KindMessage:
			msg := string(in.Data)
			if msg == "ping" {
				if err := shoal.SendBlocking(in.From, []byte("pong")); err != nil {
					os.Stderr.WriteString("go_allimports helper: send: " + shoal.ErrorName(err) + "\n")
				}
			} else if c, found := strings.CutPrefix(msg, "exit "); found {
				code, err := strconv.Atoi(c)
				if err != nil {
					code = 1
				}
				shoal.Exit(code)
			}
		}
	}
}

// ---- the checks ----

func run(selfRef string) {
	// self_pid
	me := shoal.SelfPid()
	expect("self_pid", "non-zero", me != 0)

	// log
	if check("log", "info line", shoal.Log(shoal.LevelInfo, "go_allimports: start")) {
		ok("log", "info line")
	}
	x := []byte("x")
	expectCode("log", "level 9 is INVALID", raw.Log(9, unsafe.Pointer(&x[0]), 1), shoal.ErrInvalid)

	// sleep_ms, yield_now, preempt
	if check("sleep_ms", "1 ms", shoal.Sleep(time.Millisecond)) {
		ok("sleep_ms", "1 ms")
	}
	expectCode("sleep_ms", "-1 is INVALID", raw.SleepMs(-1), shoal.ErrInvalid)
	if check("yield_now", "returns OK", shoal.Yield()) {
		ok("yield_now", "returns OK")
	}
	shoal.Preempt()
	ok("preempt", "returns (reserved for the host; harmless)")

	// spawn, spawn_on
	_, err := shoal.Spawn("no-such-module-go-allimports")
	expectErr("spawn", "unknown module is NO_MODULE", err, shoal.ErrNoModule)
	helperPid, err := shoal.Spawn(selfRef, "helper")
	if err != nil {
		fail("spawn", "a helper from <self-ref>", shoal.ErrorName(err))
		out("allimports: cannot spawn '" + selfRef + "': run it by a registered name or pass its reference as the argument")
		return
	}
	expect("spawn", "a helper from <self-ref>", helperPid != me)
	_, err = shoal.SpawnOn("no-such-node-go", selfRef, "helper")
	expectErr("spawn_on", "unknown node is NO_NODE", err, shoal.ErrNoNode)
	helper2, err := shoal.SpawnOn("", selfRef, "helper")
	if err != nil {
		fail("spawn_on", "empty target starts a second helper", shoal.ErrorName(err))
		return
	}
	ok("spawn_on", "empty target starts a second helper")

	// send, recv
	if check("send", "to self", shoal.Send(me, []byte("note"))) {
		ok("send", "to self")
	}
	{
		var info shoal.RecvInfo
		_, err := shoal.RecvWithInfo(nil, 0, &info)
		expectErr("recv", "0-byte buffer is BUFFER_TOO_SMALL", err, shoal.ErrBufferTooSmall)
		expect("recv", "info.length tells the size (4)", info.Length == 4)
		_, err = shoal.RecvInto(make([]byte, 2), 0)
		var small *shoal.BufferTooSmallError
		expect("recv", "RecvInto's *BufferTooSmallError says 4", errors.As(err, &small) && small.Need == 4)
		if m, err := shoal.Recv(wait); check("recv", "the message is still queued", err) {
			expect("recv", "the message is still queued and arrives whole", m.Sender == me && string(m.Data) == "note")
		}
		_, err = shoal.Recv(0)
		expectErr("recv", "empty mailbox polls TIMEOUT", err, shoal.ErrTimeout)
	}
	expectErr("send", "unknown pid is NO_PROCESS", shoal.Send(shoal.Pid(0xFFFF_FFFF_FFFF_FFF0), x), shoal.ErrNoProcess)
	{
		// A message longer than the SDK's scratch buffer, through Recv.
		big := bytes.Repeat([]byte("0123456789abcdef"), (shoal.ScratchSize+4096)/16)
		if check("send", "a 68 KiB message to self", shoal.Send(me, big)) {
			m, err := shoal.Recv(wait)
			if check("recv", "a message longer than the scratch buffer", err) {
				expect("recv", "a message longer than the scratch buffer arrives whole", bytes.Equal(m.Data, big))
			}
		}
	}

	// call, reply (the helper replies)
	if r, err := shoal.Call(helperPid, []byte("echo:hello"), wait); check("call", "helper echoes (reply)", err) {
		expect("call", "helper echoes (reply)", string(r) == "hello")
	}
	_, err = shoal.Call(me, []byte("echo:x"), wait)
	expectErr("call", "calling oneself is INVALID", err, shoal.ErrInvalid)
	expectErr("reply", "unknown handle is INVALID", shoal.Reply(shoal.CallHandle(0x7777_0000_1234), x), shoal.ErrInvalid)

	// send_request, recv_match (MATCH_REPLY)
	if req, err := shoal.SendRequest(helperPid, []byte("echo:request")); check("send_request", "to the helper", err) {
		ok("send_request", "to the helper")
		if r, err := shoal.ReceiveResponse(req, wait); check("recv_match", "MATCH_REPLY gets the answer", err) {
			expect("recv_match", "MATCH_REPLY gets the answer", string(r) == "request")
		}
	}

	// recv_match (MATCH_FROM) leaves other mail queued
	_ = shoal.Send(me, []byte("mine"))
	check("send", "ping to the helper", shoal.Send(helperPid, []byte("ping")))
	if in, err := shoal.RecvFrom(helperPid, wait); check("recv_match", "MATCH_FROM takes the helper's pong", err) {
		expect("recv_match", "MATCH_FROM takes the helper's pong", in.Kind == shoal.KindMessage && in.From == helperPid && string(in.Data) == "pong")
	}
	if m, err := shoal.Recv(0); check("recv", "own message skipped by MATCH_FROM is still queued", err) {
		expect("recv", "own message skipped by MATCH_FROM is still queued", string(m.Data) == "mine")
	}

	// monitor, demonitor, recv_any (DOWN), exit (the helper's)
	if m1, err := shoal.Monitor(helperPid); check("monitor", "the helper", err) {
		ok("monitor", "the helper")
		if check("demonitor", "withdraws it", shoal.Demonitor(m1)) {
			ok("demonitor", "withdraws it")
		}
		expectErr("demonitor", "again is INVALID", shoal.Demonitor(m1), shoal.ErrInvalid)
	}
	_, err = shoal.Monitor(me)
	expectErr("monitor", "oneself is INVALID", err, shoal.ErrInvalid)
	if m2, err := shoal.Monitor(helperPid); check("monitor", "the helper again", err) {
		check("send", "exit 7 to the helper", shoal.Send(helperPid, []byte("exit 7")))
		if in, err := shoal.RecvAny(wait); check("recv_any", "DOWN of the helper", err) {
			expect("recv_any", "DOWN of the helper with this monitor", in.Kind == shoal.KindDown && in.From == helperPid && in.Monitor == m2)
			expect("exit", "the helper's exit(7) is the DOWN's reason", in.Reason == shoal.ReasonExit && in.Code == 7)
		}
	}
	_, err = shoal.Call(helperPid, []byte("echo:x"), wait)
	expectErr("call", "a process that exited is NO_PROCESS", err, shoal.ErrNoProcess)

	// names, key-value, locks: need a cluster
	name := "go-allimports-" + me.String()
	err = shoal.Register(name)
	switch {
	case err == nil:
		ok("register", "a fresh name")
		clusterChecks(me, helper2, name)
	case errors.Is(err, shoal.ErrNoNode):
		out("standalone: no cluster here (shoal run), so names, key-value and locks must answer NO_NODE")
		ok("register", "NO_NODE off a cluster")
		standaloneChecks(name)
	default:
		fail("register", "a fresh name", shoal.ErrorName(err))
		clusterChecks(me, helper2, name)
	}

	// End the second helper and wait for it, so nothing is left running.
	if m3, err := shoal.Monitor(helper2); check("monitor", "the second helper", err) {
		check("send", "exit 0 to the second helper", shoal.Send(helper2, []byte("exit 0")))
		if in, err := shoal.RecvAny(wait); check("recv_any", "DOWN of the second helper", err) {
			expect("exit", "the second helper's exit(0) is its DOWN's reason", in.Kind == shoal.KindDown && in.From == helper2 && in.Monitor == m3 && in.Reason == shoal.ReasonExit && in.Code == 0)
		}
	}
}

func clusterChecks(me, helper2 shoal.Pid, name string) {
	// names
	if p, err := shoal.Whereis(name); check("whereis", "finds oneself", err) {
		expect("whereis", "finds oneself", p == me)
	}
	if check("unregister", "the name", shoal.Unregister(name)) {
		ok("unregister", "the name")
	}
	expectErr("unregister", "again is INVALID", shoal.Unregister(name), shoal.ErrInvalid)
	_, err := shoal.Whereis(name)
	expectErr("whereis", "a free name is NO_PROCESS", err, shoal.ErrNoProcess)
	if check("join_group", "a fresh group", shoal.JoinGroup(name)) {
		ok("join_group", "a fresh group")
	}
	if p, err := shoal.GroupPick(name); check("group_pick", "picks the only member", err) {
		expect("group_pick", "picks the only member", p == me)
	}
	if check("leave_group", "the group", shoal.LeaveGroup(name)) {
		ok("leave_group", "the group")
	}
	expectErr("leave_group", "again is INVALID", shoal.LeaveGroup(name), shoal.ErrInvalid)
	_, err = shoal.GroupPick(name)
	expectErr("group_pick", "an empty group is NO_PROCESS", err, shoal.ErrNoProcess)

	// key-value
	bucket := shoal.OpenBucket("go-allimports")
	key := "k-" + me.String()
	ctr := "n-" + me.String()
	if e, err := bucket.Get(key); check("kv_get", "a fresh key is absent", err) {
		expect("kv_get", "a fresh key is absent (NOT_FOUND)", e == nil)
	}
	if ex, err := bucket.Exists(key); check("kv_exists", "a fresh key", err) {
		expect("kv_exists", "a fresh key: 0", !ex)
	}
	var v1 uint64
	if v, err := bucket.Set(key, []byte("v1")); check("kv_set", "returns a version", err) {
		v1 = v
		expect("kv_set", "returns a version", v > 0)
	}
	if e, err := bucket.Get(key); check("kv_get", "reads the value and version", err) {
		expect("kv_get", "reads the value and version", e != nil && string(e.Value) == "v1" && e.Version == v1)
	}
	{
		var info shoal.KvInfo
		_, err := bucket.GetWithInfo(key, make([]byte, 1), &info)
		expectErr("kv_get", "1-byte buffer is BUFFER_TOO_SMALL", err, shoal.ErrBufferTooSmall)
		expect("kv_get", "info.length tells the size (2)", info.Length == 2)
	}
	if e, err := bucket.Stale().Get(key); check("kv_get", "KV_STALE read", err) {
		expect("kv_get", "KV_STALE read on the writer's node", e != nil && string(e.Value) == "v1")
	}
	if ex, err := bucket.Exists(key); check("kv_exists", "after set", err) {
		expect("kv_exists", "after set: 1", ex)
	}
	_, err = bucket.Cas(key, 0, []byte("no"))
	expectErr("kv_cas", "expecting absent (0) is VERSION_MISMATCH", err, shoal.ErrVersionMismatch)
	if v2, err := bucket.Cas(key, v1, []byte("v2")); check("kv_cas", "at the right version", err) {
		expect("kv_cas", "at the right version", v2 > v1)
	}
	if n, err := bucket.Increment(ctr, 5); check("kv_increment", "absent + 5", err) {
		expect("kv_increment", "absent + 5 = 5", n == 5)
	}
	if n, err := bucket.Increment(ctr, -2); check("kv_increment", "5 - 2", err) {
		expect("kv_increment", "5 - 2 = 3", n == 3)
	}
	_, err = bucket.Increment(key, 1)
	expectErr("kv_increment", "a 2-byte value is NOT_A_COUNTER", err, shoal.ErrNotACounter)
	if keys, err := bucket.List(key, ""); check("kv_list", "the prefix lists the one key", err) {
		expect("kv_list", "the prefix lists the one key", len(keys) == 1 && keys[0] == key)
		if keys, err := bucket.List(key, key); check("kv_list", "after the last key", err) {
			expect("kv_list", "after the last key: 0", len(keys) == 0)
		}
	}
	if keys, err := bucket.Keys(key); check("kv_list", "Keys pages through the prefix", err) {
		expect("kv_list", "Keys pages through the prefix", len(keys) == 1 && keys[0] == key)
	}
	batchChecks(bucket, me)

	// locks (and fenced writes)
	lockName := "go-allimports-" + me.String()
	lockCall := []byte("lock:" + lockName)
	l, err := shoal.AcquireLock(lockName, wait)
	if !check("lock", "a free lock", err) {
		return
	}
	ok("lock", "a free lock")
	if check("lock_check", "the current token", shoal.CheckLock(lockName, l.Token)) {
		ok("lock_check", "the current token")
	}
	expectErr("lock_check", "another token is FENCED", shoal.CheckLock(lockName, l.Token+1), shoal.ErrFenced)
	if again, err := shoal.TryLock(lockName); check("try_lock", "held by oneself", err) {
		expect("try_lock", "held by oneself: the same token", again.Token == l.Token)
	}
	if _, err := bucket.SetFenced(key, []byte("v3"), l); check("kv_set", "fenced by the held lock", err) {
		ok("kv_set", "fenced by the held lock")
	}
	oneEntry := shoal.KeyValue{Key: key, Value: []byte("v3")}
	if n, err := bucket.SetManyFenced(l, oneEntry); check("kv_set_many", "fenced by the held lock", err) {
		expect("kv_set_many", "fenced by the held lock: 1", n == 1)
	}
	if r, err := shoal.Call(helper2, lockCall, wait); check("call", "the second helper's try_lock", err) {
		expect("try_lock", "held by another process: BUSY (-26)", string(r) == "err -26")
	}
	if check("unlock", "the held lock", l.Unlock()) {
		ok("unlock", "the held lock")
	}
	expectErr("unlock", "again is LOCK_LOST", l.Unlock(), shoal.ErrLockLost)
	// The second helper takes it now; the old token is fenced out.
	if r, err := shoal.Call(helper2, lockCall, wait); check("call", "the second helper's try_lock", err) {
		expect("try_lock", "the second helper gets the free lock", strings.HasPrefix(string(r), "locked "))
	}
	_, err = bucket.SetFenced(key, []byte("v4"), l)
	expectErr("kv_set", "fenced by a lost lock is FENCED", err, shoal.ErrFenced)
	_, err = bucket.CasFenced(key, 0, []byte("v4"), l)
	expectErr("kv_cas", "fenced by a lost lock is FENCED", err, shoal.ErrFenced)
	_, err = bucket.DeleteFenced(key, l)
	expectErr("kv_delete", "fenced by a lost lock is FENCED", err, shoal.ErrFenced)
	_, err = bucket.SetManyFenced(l, oneEntry)
	expectErr("kv_set_many", "fenced by a lost lock is FENCED", err, shoal.ErrFenced)
	_, err = bucket.DeleteManyFenced(l, key)
	expectErr("kv_delete_many", "fenced by a lost lock is FENCED", err, shoal.ErrFenced)

	if ex, err := bucket.Delete(key); check("kv_delete", "an existing key", err) {
		expect("kv_delete", "an existing key: 1", ex)
	}
	if ex, err := bucket.Delete(key); check("kv_delete", "again", err) {
		expect("kv_delete", "again: 0", !ex)
	}
	if ex, err := bucket.Delete(ctr); check("kv_delete", "the counter", err) {
		expect("kv_delete", "the counter: 1", ex)
	}
}

// manyAsSet: the 4 entries of get_many [k1, absent, k2, k3] after set_many
// of k1 (big), k2 ("two"), k3 ("three").
func manyAsSet(got []*shoal.Entry, big []byte) bool {
	return len(got) == 4 &&
		got[0] != nil && bytes.Equal(got[0].Value, big) && got[0].Version > 0 &&
		got[1] == nil &&
		got[2] != nil && string(got[2].Value) == "two" && got[2].Version > 0 &&
		got[3] != nil && string(got[3].Value) == "three" && got[3].Version > 0
}

func batchChecks(bucket shoal.Bucket, me shoal.Pid) {
	k1, k2, k3, k4 := "b1-"+me.String(), "b2-"+me.String(), "b3-"+me.String(), "b4-"+me.String()
	absent := "b0-" + me.String()
	big := make([]byte, 3000)
	for i := range big {
		big[i] = byte('a' + i%26)
	}

	// kv_set_many: 3 entries, k1's value 3000 bytes
	if n, err := bucket.SetMany(
		shoal.KeyValue{Key: k1, Value: big},
		shoal.KeyValue{Key: k2, Value: []byte("two")},
		shoal.KeyValue{Key: k3, Value: []byte("three")},
	); check("kv_set_many", "3 entries", err) {
		expect("kv_set_many", "3 entries: 3", n == 3)
	}

	// kv_get_many [k1, absent, k2, k3]
	keys := []string{k1, absent, k2, k3}
	enc, err := shoal.EncodeKeys(keys...)
	if check("kv_get_many", "encode 4 keys", err) {
		want := uint64(4*shoal.KvManyRecordHeader + len(big) + len("two") + len("three"))
		_, err := bucket.GetManyInto(enc, make([]byte, 256))
		expectErr("kv_get_many", "a 256-byte buffer is BUFFER_TOO_SMALL", err, shoal.ErrBufferTooSmall)
		var small *shoal.BufferTooSmallError
		if errors.As(err, &small) && uint64(small.Need) == want {
			ok("kv_get_many", "the size needed tells the total (3056)")
		} else {
			fail("kv_get_many", "the size needed tells the total (3056)", shoal.ErrorName(err))
		}
		var size uint64
		_, err = bucket.GetManyWithSize(enc, make([]byte, 256), &size)
		expect("kv_get_many", "the size written tells the total (3056)", errors.Is(err, shoal.ErrBufferTooSmall) && size == want)
		if got, err := bucket.GetManyInto(enc, make([]byte, size)); check("kv_get_many", "a buffer of that size", err) {
			expect("kv_get_many", "a buffer of that size: the 4 in order, the absent one nil", manyAsSet(got, big))
		}
		if got, err := bucket.Stale().GetManyInto(enc, make([]byte, 8192)); check("kv_get_many", "KV_STALE read", err) {
			expect("kv_get_many", "KV_STALE read on the writer's node", manyAsSet(got, big))
		}
	}
	if got, err := bucket.GetMany(keys...); check("kv_get_many", "GetMany", err) {
		expect("kv_get_many", "GetMany: the 4 in order", manyAsSet(got, big))
	}

	// kv_set_many with an empty key: refused whole
	_, err = bucket.SetMany(shoal.KeyValue{Key: k4, Value: []byte("x")}, shoal.KeyValue{Key: "", Value: []byte("y")})
	expectErr("kv_set_many", "an empty key in the batch is BAD_KEY", err, shoal.ErrBadKey)
	if ex, err := bucket.Exists(k4); check("kv_exists", "the refused batch's other key", err) {
		expect("kv_set_many", "the refused batch set nothing (its other key: 0)", !ex)
	}

	// batch bounds
	_, err = bucket.GetMany()
	expectErr("kv_get_many", "0 keys is BAD_BATCH", err, shoal.ErrBadBatch)
	many := make([]string, shoal.MaxBatchEntries+1)
	for i := range many {
		many[i] = "b-" + strconv.Itoa(i)
	}
	_, err = bucket.GetMany(many...)
	expectErr("kv_get_many", "101 keys is BAD_BATCH", err, shoal.ErrBadBatch)

	// kv_delete_many [k1, absent, k3]
	if n, err := bucket.DeleteMany(k1, absent, k3); check("kv_delete_many", "[k1, absent, k3]", err) {
		expect("kv_delete_many", "[k1, absent, k3]: 2", n == 2)
	}
	if ex, err := bucket.Exists(k1); check("kv_exists", "k1 after kv_delete_many", err) {
		expect("kv_delete_many", "k1 is gone", !ex)
	}
	if ex, err := bucket.Delete(k2); check("kv_delete", "the batch's k2", err) {
		expect("kv_delete", "the batch's k2, left alone: 1", ex)
	}
}

func standaloneChecks(name string) {
	nn := shoal.ErrNoNode
	expectErr("unregister", "NO_NODE", shoal.Unregister(name), nn)
	_, err := shoal.Whereis(name)
	expectErr("whereis", "NO_NODE", err, nn)
	expectErr("join_group", "NO_NODE", shoal.JoinGroup(name), nn)
	expectErr("leave_group", "NO_NODE", shoal.LeaveGroup(name), nn)
	_, err = shoal.GroupPick(name)
	expectErr("group_pick", "NO_NODE", err, nn)
	b := shoal.OpenBucket("go-allimports")
	_, err = b.Get("k")
	expectErr("kv_get", "NO_NODE", err, nn)
	_, err = b.Exists("k")
	expectErr("kv_exists", "NO_NODE", err, nn)
	_, err = b.Set("k", []byte("v"))
	expectErr("kv_set", "NO_NODE", err, nn)
	_, err = b.Cas("k", 0, []byte("v"))
	expectErr("kv_cas", "NO_NODE", err, nn)
	_, err = b.Delete("k")
	expectErr("kv_delete", "NO_NODE", err, nn)
	_, err = b.Increment("n", 1)
	expectErr("kv_increment", "NO_NODE", err, nn)
	_, err = b.List("", "")
	expectErr("kv_list", "NO_NODE", err, nn)
	_, err = b.GetMany("k")
	expectErr("kv_get_many", "NO_NODE", err, nn)
	_, err = b.SetMany(shoal.KeyValue{Key: "k", Value: []byte("v")})
	expectErr("kv_set_many", "NO_NODE", err, nn)
	_, err = b.DeleteMany("k")
	expectErr("kv_delete_many", "NO_NODE", err, nn)
	_, err = shoal.AcquireLock(name, 100*time.Millisecond)
	expectErr("lock", "NO_NODE", err, nn)
	_, err = shoal.TryLock(name)
	expectErr("try_lock", "NO_NODE", err, nn)
	expectErr("unlock", "NO_NODE", shoal.Lock{Name: name, Token: 1}.Unlock(), nn)
	expectErr("lock_check", "NO_NODE", shoal.CheckLock(name, 1), nn)
}
