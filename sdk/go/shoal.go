//go:build wasip1

// Package shoal is the Shoal guest ABI v1 for Go programs built with
// GOOS=wasip1 GOARCH=wasm.
//
// Every function of the Wasm import module "shoal_v1" (sdk/ABI.md is the one
// contract) is declared in package shoal/raw with its exact core Wasm
// signature, and wrapped here in Go idioms: byte slices and strings instead
// of pointer/length pairs, errors instead of negative codes (an Errno per
// ABI code, comparable with errors.Is), time.Duration timeouts (Forever, or
// any negative duration, waits without limit; 0 only polls).
//
//	msg, err := shoal.Recv(shoal.Forever)
//	if err != nil { ... }
//	err = shoal.SendBlocking(msg.Sender, msg.Data)
//
// A call into the host stops the whole Go runtime until it returns: while
// one goroutine waits in Recv (or Call, Lock, Sleep, ...), no other
// goroutine runs, and timers fire only afterwards. The blocking calls are
// the capture points: a process can be snapshotted or moved while inside
// one of them (and in the Go runtime's own sleeps, which go through WASI
// poll_oneoff) and resumes there.
package shoal

import (
	"strconv"
	"time"
	"unsafe"
)

// ABIVersion is the ABI version this package implements; it is also in the
// import module name, "shoal_v1".
const ABIVersion = 1

// Bounds of the ABI.
const (
	// MaxMessageSize is the largest message Send accepts, in bytes (1 MiB).
	MaxMessageSize = 1 << 20
	// MaxValueSize is the largest key-value value, in bytes (1 MiB).
	MaxValueSize = 1 << 20
	// MaxKeySize is the largest key, in bytes.
	MaxKeySize = 256
	// MaxBucketNameSize is the largest bucket name, in bytes.
	MaxBucketNameSize = 64
	// MaxNameSize is the largest lock, process or group name, in bytes.
	MaxNameSize = 255
	// MaxBatchEntries is the most entries (keys) in one key-value batch.
	MaxBatchEntries = 100
	// MaxBatchBytes is the most bytes of keys and values in one batch (4 MiB).
	MaxBatchBytes = 4 << 20
	// KvManyRecordHeader is the size of a GetMany record before its value:
	// the version (u64) and the value's length (u32).
	KvManyRecordHeader = 12
)

// Forever, as a timeout, waits without limit (so does any negative
// duration); a timeout of 0 only polls.
const Forever time.Duration = -1

// Errno is an ABI error code (negative). Each code has a constant below;
// compare with errors.Is(err, shoal.ErrTimeout). A code from a newer host
// that this package does not know is still an Errno (Name "UNKNOWN").
type Errno int32

// The ABI's error codes (sdk/ABI.md, "Error codes").
const (
	ErrFault           Errno = -1  // a pointer/length range is outside linear memory
	ErrInvalid         Errno = -2  // a malformed argument
	ErrNoProcess       Errno = -3  // no live process has that pid (or name, or member)
	ErrTimeout         Errno = -4  // the wait ended because its timeout elapsed
	ErrBufferTooSmall  Errno = -5  // the buffer is smaller than the message (which stays queued)
	ErrTooLarge        Errno = -6  // the message is over MaxMessageSize
	ErrMailboxFull     Errno = -7  // the receiver's mailbox is full; retry later
	ErrNoModule        Errno = -8  // no module with that hash or name
	ErrSpawnFailed     Errno = -9  // the module exists but could not be started
	ErrLimit           Errno = -10 // a node or owner limit was reached
	ErrNoNode          Errno = -11 // no node fits, or no cluster (names, key-value, locks off a cluster)
	ErrCalleeDown      Errno = -12 // the callee ended before it replied
	ErrNodeDown        Errno = -13 // the callee's node was declared dead
	ErrNameTaken       Errno = -14 // another process of the same owner holds that name
	ErrNotCallable     Errno = -15 // the callee cannot receive calls
	ErrNotFound        Errno = -16 // the key does not exist
	ErrVersionMismatch Errno = -17 // the key is not at the expected version
	ErrFenced          Errno = -18 // the token is not the lock's current holder's
	ErrBadKey          Errno = -19 // a key is empty or longer than MaxKeySize
	ErrValueTooLarge   Errno = -20 // a value is larger than MaxValueSize
	ErrBadBucket       Errno = -21 // a bucket name is empty or longer than MaxBucketNameSize
	ErrQuota           Errno = -22 // the owner's key-value or lock quota is used up
	ErrRateLimited     Errno = -23 // the owner writes too fast; retry later
	ErrNotACounter     Errno = -24 // the value is not an 8-byte counter
	ErrOverflow        Errno = -25 // the increment would overflow
	ErrBusy            Errno = -26 // another process holds the lock
	ErrDeadlock        Errno = -27 // waiting would close a cycle of lock waits
	ErrLockLost        Errno = -28 // the caller no longer holds the lock under that token
	ErrUnavailable     Errno = -29 // the cluster could not confirm it; a write may still be applied
	ErrBadBatch        Errno = -30 // a key-value batch is empty, too large or malformed
)

var errnoNames = [...]string{
	"FAULT", "INVALID", "NO_PROCESS", "TIMEOUT", "BUFFER_TOO_SMALL",
	"TOO_LARGE", "MAILBOX_FULL", "NO_MODULE", "SPAWN_FAILED", "LIMIT",
	"NO_NODE", "CALLEE_DOWN", "NODE_DOWN", "NAME_TAKEN", "NOT_CALLABLE",
	"NOT_FOUND", "VERSION_MISMATCH", "FENCED", "BAD_KEY", "VALUE_TOO_LARGE",
	"BAD_BUCKET", "QUOTA", "RATE_LIMITED", "NOT_A_COUNTER", "OVERFLOW",
	"BUSY", "DEADLOCK", "LOCK_LOST", "UNAVAILABLE", "BAD_BATCH",
}

// CodeName is the ABI name of a raw result code: "OK" for 0 (and any
// non-negative result), "NO_PROCESS" for -3, "UNKNOWN" for a code this
// package does not know.
func CodeName(code int32) string {
	if code >= 0 {
		return "OK"
	}
	if code >= -int32(len(errnoNames)) {
		return errnoNames[-code-1]
	}
	return "UNKNOWN"
}

// Name is the code's ABI name ("NO_PROCESS").
func (e Errno) Name() string { return CodeName(int32(e)) }

// Code is the raw ABI code (-3).
func (e Errno) Code() int32 { return int32(e) }

// Error is "shoal: NAME (code)".
func (e Errno) Error() string {
	return "shoal: " + e.Name() + " (" + strconv.Itoa(int(e)) + ")"
}

// ErrorName is the ABI name of the Errno err is or wraps ("TIMEOUT"), or
// err.Error() for any other error, or "OK" for nil.
func ErrorName(err error) string {
	if err == nil {
		return "OK"
	}
	if e, ok := asErrno(err); ok {
		return e.Name()
	}
	return err.Error()
}

// ErrorCode is the raw ABI code of the Errno err is or wraps, 0 for nil,
// or ErrInvalid's code for an error of another kind.
func ErrorCode(err error) int32 {
	if err == nil {
		return 0
	}
	if e, ok := asErrno(err); ok {
		return int32(e)
	}
	return int32(ErrInvalid)
}

// asErrno finds the Errno in err's chain (errors.As without reflection).
func asErrno(err error) (Errno, bool) {
	for err != nil {
		if e, ok := err.(Errno); ok {
			return e, true
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return 0, false
		}
		err = u.Unwrap()
	}
	return 0, false
}

// Check turns a raw result into a non-negative value or an Errno.
func Check(rc int32) (int, error) {
	if rc < 0 {
		return 0, Errno(rc)
	}
	return int(rc), nil
}

// BufferTooSmallError is ErrBufferTooSmall with the size the buffer needs
// (the message, value or records stay where they were: retry with a buffer
// of Need bytes). errors.Is(err, ErrBufferTooSmall) holds.
type BufferTooSmallError struct {
	// Need is the size needed, in bytes.
	Need int
}

func (e *BufferTooSmallError) Error() string {
	return "shoal: BUFFER_TOO_SMALL (-5): " + strconv.Itoa(e.Need) + " bytes needed"
}

// Unwrap is ErrBufferTooSmall.
func (e *BufferTooSmallError) Unwrap() error { return ErrBufferTooSmall }

// ---- memory helpers ----

// empty gives zero-length ranges a real address in linear memory.
var empty [1]byte

func bytesPtr(b []byte) unsafe.Pointer {
	if len(b) == 0 {
		return unsafe.Pointer(&empty[0])
	}
	return unsafe.Pointer(unsafe.SliceData(b))
}

func strPtr(s string) unsafe.Pointer {
	if len(s) == 0 {
		return unsafe.Pointer(&empty[0])
	}
	return unsafe.Pointer(unsafe.StringData(s))
}

// addr is the linear-memory offset of p (wasm addresses fit 32 bits).
func addr(p unsafe.Pointer) uint32 { return uint32(uintptr(p)) }

const maxInt32 = 1<<31 - 1

// inLen is the length of an input range, or ErrInvalid when the ABI cannot
// describe it (over 2 GiB).
func inLen(n int) (int32, error) {
	if n > maxInt32 {
		return 0, ErrInvalid
	}
	return int32(n), nil
}

// bufLen is the length of an output buffer, capped at what the ABI can
// describe (the host writes no more than that).
func bufLen(b []byte) int32 {
	if len(b) > maxInt32 {
		return maxInt32
	}
	return int32(len(b))
}

// timeoutMs is a timeout in whole milliseconds, rounded up: -1 (forever)
// for a negative one.
func timeoutMs(d time.Duration) int64 {
	if d < 0 {
		return -1
	}
	ms := int64(d / time.Millisecond)
	if d%time.Millisecond != 0 {
		ms++
	}
	return ms
}
