//go:build wasip1

package shoal

import (
	"runtime"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"shoal/raw"
)

// Pid is a process id: opaque, non-zero, unique in the cluster. Compare
// pids with ==; String prints them as unsigned decimal.
type Pid uint64

// String is the pid in unsigned decimal, as Shoal prints pids.
func (p Pid) String() string { return strconv.FormatUint(uint64(p), 10) }

// ParsePid reads a pid printed by String (or by the shoal CLI).
func ParsePid(s string) (Pid, error) {
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil || v == 0 {
		return 0, ErrInvalid
	}
	return Pid(v), nil
}

// SelfPid is the calling process's pid. It never fails and stays the same
// for the life of the process (also across moves).
func SelfPid() Pid { return Pid(raw.SelfPid()) }

// PackArgs packs arguments as spawn takes them: NUL-terminated strings,
// back to back. ErrInvalid for an argument that contains a NUL.
func PackArgs(args []string) ([]byte, error) {
	n := 0
	for _, a := range args {
		if strings.IndexByte(a, 0) >= 0 {
			return nil, ErrInvalid
		}
		n += len(a) + 1
	}
	packed := make([]byte, 0, n)
	for _, a := range args {
		packed = append(packed, a...)
		packed = append(packed, 0)
	}
	return packed, nil
}

// Spawn starts module ("sha256:<hex>" or a registered name) on this node
// with args as its argv[1:], and returns the child's pid without waiting
// for it to run. ErrNoModule, ErrSpawnFailed, ErrLimit, ErrInvalid.
func Spawn(module string, args ...string) (Pid, error) {
	packed, err := PackArgs(args)
	if err != nil {
		return 0, err
	}
	return SpawnPacked(module, packed)
}

// SpawnPacked is Spawn with arguments already packed (PackArgs).
func SpawnPacked(module string, packedArgs []byte) (Pid, error) {
	ml, err := inLen(len(module))
	if err != nil {
		return 0, err
	}
	al, err := inLen(len(packedArgs))
	if err != nil {
		return 0, err
	}
	var pid uint64
	rc := raw.Spawn(strPtr(module), ml, bytesPtr(packedArgs), al, unsafe.Pointer(&pid))
	runtime.KeepAlive(module)
	runtime.KeepAlive(packedArgs)
	if _, err := Check(rc); err != nil {
		return 0, err
	}
	return Pid(pid), nil
}

// SpawnOn is Spawn with a placement target: "" (the cluster's scheduler
// picks), a node name, or labels "k=v[,k=v]". ErrNoNode when nothing fits.
func SpawnOn(target, module string, args ...string) (Pid, error) {
	packed, err := PackArgs(args)
	if err != nil {
		return 0, err
	}
	return SpawnOnPacked(target, module, packed)
}

// SpawnOnPacked is SpawnOn with arguments already packed (PackArgs).
func SpawnOnPacked(target, module string, packedArgs []byte) (Pid, error) {
	tl, err := inLen(len(target))
	if err != nil {
		return 0, err
	}
	ml, err := inLen(len(module))
	if err != nil {
		return 0, err
	}
	al, err := inLen(len(packedArgs))
	if err != nil {
		return 0, err
	}
	var pid uint64
	rc := raw.SpawnOn(strPtr(target), tl, strPtr(module), ml, bytesPtr(packedArgs), al, unsafe.Pointer(&pid))
	runtime.KeepAlive(target)
	runtime.KeepAlive(module)
	runtime.KeepAlive(packedArgs)
	if _, err := Check(rc); err != nil {
		return 0, err
	}
	return Pid(pid), nil
}

// Sleep blocks for at least d (rounded up to whole milliseconds) through
// the host's sleep_ms. A capture point. It stops every goroutine, unlike
// time.Sleep, which lets the others run (and sleeps in WASI poll_oneoff,
// a capture point too).
func Sleep(d time.Duration) error {
	if d < 0 {
		d = 0
	}
	_, err := Check(raw.SleepMs(timeoutMs(d)))
	return err
}

// Yield lets other processes run (not other goroutines: use
// runtime.Gosched for those). A capture point.
func Yield() error {
	_, err := Check(raw.YieldNow())
	return err
}

// Preempt is reserved for the host, which inserts calls to it into the
// loops of preemptible processes. Calling it is harmless (it returns at
// once unless a capture was asked for); guests have no reason to.
func Preempt() { raw.Preempt() }

// Exit ends the process with code at once: deferred functions do not run
// and queued messages are dropped. os.Stdout and os.Stderr are not
// buffered in Go, so nothing written to them is lost; flush any bufio
// writer first. (os.Exit ends the process the same way, through WASI.)
func Exit(code int) {
	raw.Exit(int32(code))
	panic("shoal: exit returned")
}

// Level is a process-log level.
type Level int32

// Process-log levels.
const (
	LevelError Level = 0
	LevelWarn  Level = 1
	LevelInfo  Level = 2
	LevelDebug Level = 3
	LevelTrace Level = 4
)

// Log appends UTF-8 text to the process log the node keeps (not to stdout
// or stderr). ErrInvalid for a bad level or text that is not UTF-8.
func Log(level Level, text string) error {
	n, err := inLen(len(text))
	if err != nil {
		return err
	}
	rc := raw.Log(int32(level), strPtr(text), n)
	runtime.KeepAlive(text)
	_, err = Check(rc)
	return err
}
