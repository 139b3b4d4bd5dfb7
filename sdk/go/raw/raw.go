//go:build wasip1

// Package raw declares every import of the Shoal guest ABI v1 (the Wasm
// import module "shoal_v1"; the contract is sdk/ABI.md) with its exact core
// Wasm signature: pointers are unsafe.Pointer (an i32 offset into linear
// memory), lengths int32, pids, references and milliseconds 64-bit.
//
// Results are 0, a non-negative length or count, or a negative error code
// (shoal.Errno). Prefer the wrappers of package shoal, which check lengths,
// keep the memory they pass alive and turn codes into errors.
//
// A call into any of these stops the whole Go runtime until it returns:
// while one goroutine waits in Recv, no other goroutine runs.
package raw

import "unsafe"

// Module is the import module every function here lives in; it carries
// the ABI version.
const Module = "shoal_v1"

// RecvInfo is what Recv writes at info (16 bytes, little-endian).
type RecvInfo struct {
	Sender   uint64
	Length   uint32
	Reserved uint32
}

// RecvAnyInfo is what RecvAny and RecvMatch write at info (32 bytes).
type RecvAnyInfo struct {
	Sender    uint64
	Length    uint32
	Kind      uint32
	Reference uint64
	Reason    int32
	Code      int32
}

// DownInfo is what Call writes at down on CALLEE_DOWN, NODE_DOWN and
// NOT_CALLABLE (8 bytes).
type DownInfo struct {
	Reason int32
	Code   int32
}

// KvInfo is what KvGet writes at info (16 bytes).
type KvInfo struct {
	Version uint64
	Length  uint64
}

// Fence is a fenced write's lock and token (16 bytes): NamePtr and NameLen
// describe the lock name in linear memory.
type Fence struct {
	Token   uint64
	NamePtr uint32
	NameLen uint32
}

// Sizes the host relies on; a compile error here means a layout changed.
var (
	_ [16]byte = [unsafe.Sizeof(RecvInfo{})]byte{}
	_ [32]byte = [unsafe.Sizeof(RecvAnyInfo{})]byte{}
	_ [8]byte  = [unsafe.Sizeof(DownInfo{})]byte{}
	_ [16]byte = [unsafe.Sizeof(KvInfo{})]byte{}
	_ [16]byte = [unsafe.Sizeof(Fence{})]byte{}
)

// ---- process ----

//go:wasmimport shoal_v1 self_pid
func SelfPid() uint64

//go:wasmimport shoal_v1 spawn
func Spawn(module unsafe.Pointer, moduleLen int32, args unsafe.Pointer, argsLen int32, pidOut unsafe.Pointer) int32

//go:wasmimport shoal_v1 spawn_on
func SpawnOn(target unsafe.Pointer, targetLen int32, module unsafe.Pointer, moduleLen int32, args unsafe.Pointer, argsLen int32, pidOut unsafe.Pointer) int32

//go:wasmimport shoal_v1 sleep_ms
func SleepMs(ms int64) int32

//go:wasmimport shoal_v1 yield_now
func YieldNow() int32

// Preempt is reserved for the host, which inserts calls to it into the
// loops of preemptible processes; calling it is harmless.
//
//go:wasmimport shoal_v1 preempt
func Preempt()

// Exit never returns.
//
//go:wasmimport shoal_v1 exit
func Exit(code int32)

//go:wasmimport shoal_v1 log
func Log(level int32, ptr unsafe.Pointer, length int32) int32

// ---- messages ----

//go:wasmimport shoal_v1 send
func Send(pid uint64, data unsafe.Pointer, length int32) int32

//go:wasmimport shoal_v1 recv
func Recv(buf unsafe.Pointer, bufLen int32, timeoutMs int64, info unsafe.Pointer) int32

// ---- calls, monitors, selective receive ----

//go:wasmimport shoal_v1 call
func Call(pid uint64, req unsafe.Pointer, reqLen int32, reply unsafe.Pointer, replyLen int32, timeoutMs int64, down unsafe.Pointer) int32

//go:wasmimport shoal_v1 recv_any
func RecvAny(buf unsafe.Pointer, bufLen int32, timeoutMs int64, info unsafe.Pointer) int32

//go:wasmimport shoal_v1 reply
func Reply(handle uint64, data unsafe.Pointer, length int32) int32

//go:wasmimport shoal_v1 monitor
func Monitor(pid uint64, refOut unsafe.Pointer) int32

//go:wasmimport shoal_v1 demonitor
func Demonitor(ref uint64) int32

//go:wasmimport shoal_v1 send_request
func SendRequest(pid uint64, req unsafe.Pointer, reqLen int32, refOut unsafe.Pointer) int32

//go:wasmimport shoal_v1 recv_match
func RecvMatch(filter int32, value uint64, buf unsafe.Pointer, bufLen int32, timeoutMs int64, info unsafe.Pointer) int32

// ---- names and groups ----

//go:wasmimport shoal_v1 register
func Register(name unsafe.Pointer, nameLen int32) int32

//go:wasmimport shoal_v1 unregister
func Unregister(name unsafe.Pointer, nameLen int32) int32

//go:wasmimport shoal_v1 whereis
func Whereis(name unsafe.Pointer, nameLen int32, pidOut unsafe.Pointer) int32

//go:wasmimport shoal_v1 join_group
func JoinGroup(name unsafe.Pointer, nameLen int32) int32

//go:wasmimport shoal_v1 leave_group
func LeaveGroup(name unsafe.Pointer, nameLen int32) int32

//go:wasmimport shoal_v1 group_pick
func GroupPick(name unsafe.Pointer, nameLen int32, pidOut unsafe.Pointer) int32

// ---- key-value ----

//go:wasmimport shoal_v1 kv_get
func KvGet(bucket unsafe.Pointer, bucketLen int32, key unsafe.Pointer, keyLen int32, flags int32, buf unsafe.Pointer, bufLen int32, info unsafe.Pointer) int32

//go:wasmimport shoal_v1 kv_exists
func KvExists(bucket unsafe.Pointer, bucketLen int32, key unsafe.Pointer, keyLen int32, flags int32) int32

//go:wasmimport shoal_v1 kv_set
func KvSet(bucket unsafe.Pointer, bucketLen int32, key unsafe.Pointer, keyLen int32, value unsafe.Pointer, valueLen int32, fence unsafe.Pointer, versionOut unsafe.Pointer) int32

//go:wasmimport shoal_v1 kv_cas
func KvCas(bucket unsafe.Pointer, bucketLen int32, key unsafe.Pointer, keyLen int32, expectedVersion uint64, value unsafe.Pointer, valueLen int32, fence unsafe.Pointer, versionOut unsafe.Pointer) int32

//go:wasmimport shoal_v1 kv_delete
func KvDelete(bucket unsafe.Pointer, bucketLen int32, key unsafe.Pointer, keyLen int32, fence unsafe.Pointer) int32

//go:wasmimport shoal_v1 kv_increment
func KvIncrement(bucket unsafe.Pointer, bucketLen int32, key unsafe.Pointer, keyLen int32, delta int64, valueOut unsafe.Pointer) int32

//go:wasmimport shoal_v1 kv_list
func KvList(bucket unsafe.Pointer, bucketLen int32, prefix unsafe.Pointer, prefixLen int32, cursor unsafe.Pointer, cursorLen int32, flags int32, buf unsafe.Pointer, bufLen int32) int32

//go:wasmimport shoal_v1 kv_get_many
func KvGetMany(bucket unsafe.Pointer, bucketLen int32, keys unsafe.Pointer, keysLen int32, flags int32, buf unsafe.Pointer, bufLen int32, sizeOut unsafe.Pointer) int32

//go:wasmimport shoal_v1 kv_set_many
func KvSetMany(bucket unsafe.Pointer, bucketLen int32, entries unsafe.Pointer, entriesLen int32, fence unsafe.Pointer) int32

//go:wasmimport shoal_v1 kv_delete_many
func KvDeleteMany(bucket unsafe.Pointer, bucketLen int32, keys unsafe.Pointer, keysLen int32, fence unsafe.Pointer) int32

// ---- locks ----

//go:wasmimport shoal_v1 lock
func Lock(name unsafe.Pointer, nameLen int32, timeoutMs int64, tokenOut unsafe.Pointer) int32

//go:wasmimport shoal_v1 try_lock
func TryLock(name unsafe.Pointer, nameLen int32, tokenOut unsafe.Pointer) int32

//go:wasmimport shoal_v1 unlock
func Unlock(name unsafe.Pointer, nameLen int32, token uint64) int32

//go:wasmimport shoal_v1 lock_check
func LockCheck(name unsafe.Pointer, nameLen int32, token uint64) int32
