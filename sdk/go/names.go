//go:build wasip1

package shoal

import (
	"runtime"
	"unsafe"

	"shoal/raw"
)

// nameCall runs a names-namespace import that takes a name (and maybe a
// pid out).
func nameCall(name string, f func(p unsafe.Pointer, n int32) int32) error {
	n, err := inLen(len(name))
	if err != nil {
		return err
	}
	rc := f(strPtr(name), n)
	runtime.KeepAlive(name)
	_, err = Check(rc)
	return err
}

// Register gives the calling process name (UTF-8, 1 to 255 bytes) in its
// owner's namespace, cluster-wide, until it ends or Unregisters (a move
// keeps it). ErrNameTaken, ErrLimit, ErrInvalid, ErrNoNode (off a cluster).
func Register(name string) error { return nameCall(name, raw.Register) }

// Unregister gives name up. ErrInvalid if the caller does not hold it.
func Unregister(name string) error { return nameCall(name, raw.Unregister) }

// Whereis is the pid name names in the caller's owner's namespace, or
// ErrNoProcess. It reads this node's applied copy of the cluster state.
func Whereis(name string) (Pid, error) {
	var pid uint64
	err := nameCall(name, func(p unsafe.Pointer, n int32) int32 {
		return raw.Whereis(p, n, unsafe.Pointer(&pid))
	})
	if err != nil {
		return 0, err
	}
	return Pid(pid), nil
}

// JoinGroup adds the calling process to the group name (created on the
// first join). Moving keeps it in; ending takes it out.
func JoinGroup(name string) error { return nameCall(name, raw.JoinGroup) }

// LeaveGroup takes the calling process out of the group. ErrInvalid if it
// is not a member.
func LeaveGroup(name string) error { return nameCall(name, raw.LeaveGroup) }

// GroupPick is one live member of the group, members on this node first,
// taken in turn; ErrNoProcess if there is none.
func GroupPick(name string) (Pid, error) {
	var pid uint64
	err := nameCall(name, func(p unsafe.Pointer, n int32) int32 {
		return raw.GroupPick(p, n, unsafe.Pointer(&pid))
	})
	if err != nil {
		return 0, err
	}
	return Pid(pid), nil
}
