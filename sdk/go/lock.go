//go:build wasip1

package shoal

import (
	"runtime"
	"time"
	"unsafe"

	"shoal/raw"
)

// Lock is a cluster-wide lock held by this process, with its fencing
// token: strictly larger than every earlier grant of any lock. A lock is
// held by a process incarnation: it survives a live move, not a restore.
type Lock struct {
	// Name is the lock's name (1 to 255 bytes of UTF-8, per owner).
	Name string
	// Token is the fencing token of this grant.
	Token uint64
}

func lockCall(name string, f func(p unsafe.Pointer, n int32, token *uint64) int32) (Lock, error) {
	n, err := inLen(len(name))
	if err != nil {
		return Lock{}, err
	}
	var token uint64
	rc := f(strPtr(name), n, &token)
	runtime.KeepAlive(name)
	if _, err := Check(rc); err != nil {
		return Lock{}, err
	}
	return Lock{Name: name, Token: token}, nil
}

// AcquireLock waits at most timeout (Forever: no limit) until this process
// holds the lock name, first come first served. A capture point: the wait
// is held by the cluster and survives a snapshot or a move. ErrTimeout,
// ErrDeadlock (waiting would close a cycle; nothing new is held), ErrQuota,
// ErrNoNode (off a cluster). Asking again for a lock held returns its
// token at once.
func AcquireLock(name string, timeout time.Duration) (Lock, error) {
	ms := timeoutMs(timeout)
	return lockCall(name, func(p unsafe.Pointer, n int32, token *uint64) int32 {
		return raw.Lock(p, n, ms, unsafe.Pointer(token))
	})
}

// TryLock is AcquireLock without waiting: ErrBusy if another process
// holds it.
func TryLock(name string) (Lock, error) {
	return lockCall(name, func(p unsafe.Pointer, n int32, token *uint64) int32 {
		return raw.TryLock(p, n, unsafe.Pointer(token))
	})
}

// Unlock releases it. ErrLockLost if this process does not hold it under
// this token any more.
func (l Lock) Unlock() error {
	n, err := inLen(len(l.Name))
	if err != nil {
		return err
	}
	rc := raw.Unlock(strPtr(l.Name), n, l.Token)
	runtime.KeepAlive(l.Name)
	_, err = Check(rc)
	return err
}

// CheckLock is nil if token is the current grant of the lock name (of the
// caller's owner), else ErrFenced: what a callee checks of a token its
// caller sent. Linearizable.
func CheckLock(name string, token uint64) error {
	n, err := inLen(len(name))
	if err != nil {
		return err
	}
	rc := raw.LockCheck(strPtr(name), n, token)
	runtime.KeepAlive(name)
	_, err = Check(rc)
	return err
}

// fence is the record of a write fenced by l. It points at l.Name: keep
// the name alive until the host has read it.
func (l *Lock) fence() (*raw.Fence, error) {
	if l == nil {
		return nil, nil
	}
	n, err := inLen(len(l.Name))
	if err != nil {
		return nil, err
	}
	return &raw.Fence{Token: l.Token, NamePtr: addr(strPtr(l.Name)), NameLen: uint32(n)}, nil
}
