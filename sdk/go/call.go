//go:build wasip1

package shoal

import (
	"runtime"
	"strconv"
	"time"
	"unsafe"

	"shoal/raw"
)

// CallHandle identifies a call request, to answer with Reply.
type CallHandle uint64

// RequestRef is a request made with SendRequest.
type RequestRef uint64

// MonitorRef is a monitor made with Monitor.
type MonitorRef uint64

// Kind is what RecvAny and RecvFrom received.
type Kind uint32

// Kinds of Incoming.
const (
	KindMessage Kind = 0 // a plain message
	KindCall    Kind = 1 // a call request: answer it with Reply(Handle, ...)
	KindDown    Kind = 2 // a DOWN notice of a monitor (or of a request)
	KindReply   Kind = 3 // the answer to a request (only through RecvMatchWithInfo)
)

// Filters of recv_match.
const (
	// MatchFrom selects what RecvAny would return, only from one pid.
	MatchFrom int32 = 1
	// MatchReply selects only the answer to one request.
	MatchReply int32 = 2
)

// DownReason is why a process went down (DOWN notices, DownError).
type DownReason int32

// Reasons; a newer host may add others (treat them as "down").
const (
	ReasonExit        DownReason = 1 // it exited; Code is its exit code
	ReasonTrap        DownReason = 2 // it trapped (also limits, a failed start)
	ReasonKilled      DownReason = 3 // it was killed (or stopped by a snapshot)
	ReasonNoProc      DownReason = 4 // it was not there
	ReasonNodeDown    DownReason = 5 // its node was declared dead
	ReasonOverloaded  DownReason = 6 // it refused: too many calls or watchers
	ReasonNotCallable DownReason = 7 // it cannot receive calls
)

// String is the reason's name ("exit", "noproc", ...).
func (r DownReason) String() string {
	switch r {
	case ReasonExit:
		return "exit"
	case ReasonTrap:
		return "trap"
	case ReasonKilled:
		return "killed"
	case ReasonNoProc:
		return "noproc"
	case ReasonNodeDown:
		return "node_down"
	case ReasonOverloaded:
		return "overloaded"
	case ReasonNotCallable:
		return "not_callable"
	}
	return "reason " + strconv.Itoa(int(r))
}

// RecvAnyInfo is the record recv_any and recv_match write (32 bytes).
type RecvAnyInfo = raw.RecvAnyInfo

// Incoming is what RecvAny and RecvFrom return: a message, a call request
// or a DOWN notice, told apart by Kind.
type Incoming struct {
	Kind Kind
	// From is the sender (of a message or a call), or for a DOWN the
	// process that went down.
	From Pid
	// Data is the message, the request, the reply, or for a DOWN with
	// ReasonTrap the trap message.
	Data []byte
	// Handle answers a KindCall (Reply).
	Handle CallHandle
	// Monitor is the reference of a KindDown's monitor (through
	// RecvMatchWithInfo with MatchReply: the request's reference).
	Monitor MonitorRef
	// Request is the reference a KindReply answers.
	Request RequestRef
	// Reason is why a KindDown's process went down.
	Reason DownReason
	// Code is a KindDown's exit code, for ReasonExit.
	Code int32
}

func incomingFrom(info *RecvAnyInfo, data []byte) Incoming {
	in := Incoming{Kind: Kind(info.Kind), From: Pid(info.Sender), Data: data}
	switch in.Kind {
	case KindCall:
		in.Handle = CallHandle(info.Reference)
	case KindDown:
		in.Monitor = MonitorRef(info.Reference)
		in.Reason = DownReason(info.Reason)
		in.Code = info.Code
	case KindReply:
		in.Request = RequestRef(info.Reference)
	default:
		in.Kind = KindMessage
	}
	return in
}

// DownError is a call or request whose callee went down before it replied
// (Err is ErrCalleeDown, ErrNodeDown, ErrNotCallable or ErrNoProcess), with
// why. errors.Is(err, shoal.ErrCalleeDown) and the like hold.
type DownError struct {
	Err    Errno
	Reason DownReason
	// Code is the exit code for ReasonExit.
	Code int32
	// Trap is the trap message for ReasonTrap (cut to the reply buffer).
	Trap string
}

func (e *DownError) Error() string {
	s := e.Err.Error() + ": " + e.Reason.String()
	switch e.Reason {
	case ReasonExit:
		s += " " + strconv.Itoa(int(e.Code))
	case ReasonTrap:
		s += ": " + e.Trap
	}
	return s
}

// Unwrap is Err.
func (e *DownError) Unwrap() error { return e.Err }

// CallReplyMax is the longest reply Call and CallName take; use CallInto
// with a larger buffer for more (up to MaxMessageSize).
const CallReplyMax = 64 << 10

// CallInto calls pid with request and waits at most timeout for its reply,
// copied into reply (the result is a slice of it). A capture point; other
// mail stays queued meanwhile. ErrTimeout, ErrNoProcess, ErrMailboxFull,
// ErrInvalid (oneself), ErrBufferTooSmall (the reply was longer: it is
// lost), or a *DownError (the callee ended, its node died, or it cannot
// take calls).
func CallInto(pid Pid, request, reply []byte, timeout time.Duration) ([]byte, error) {
	if len(request) > maxInt32 {
		return nil, ErrTooLarge
	}
	var down raw.DownInfo
	rc := raw.Call(uint64(pid), bytesPtr(request), int32(len(request)), bytesPtr(reply), bufLen(reply), timeoutMs(timeout), unsafe.Pointer(&down))
	runtime.KeepAlive(request)
	runtime.KeepAlive(reply)
	n, err := Check(rc)
	switch err {
	case nil:
		if n > len(reply) {
			return nil, ErrInvalid
		}
		return reply[:n], nil
	case ErrCalleeDown, ErrNodeDown, ErrNotCallable:
		de := &DownError{Err: err.(Errno), Reason: DownReason(down.Reason), Code: down.Code}
		if de.Reason == ReasonTrap && down.Code > 0 {
			de.Trap = string(reply[:min(int(down.Code), len(reply))])
		}
		return nil, de
	}
	return nil, err
}

// Call is CallInto with a reply of up to CallReplyMax bytes, returned as a
// fresh slice.
func Call(pid Pid, request []byte, timeout time.Duration) ([]byte, error) {
	scratchMu.Lock()
	defer scratchMu.Unlock()
	r, err := CallInto(pid, request, scratch[:CallReplyMax], timeout)
	if err != nil {
		return nil, err
	}
	return clone(r), nil
}

// CallName is Whereis then Call.
func CallName(name string, request []byte, timeout time.Duration) ([]byte, error) {
	pid, err := Whereis(name)
	if err != nil {
		return nil, err
	}
	return Call(pid, request, timeout)
}

// RecvAnyWithInfo is recv_any as the ABI has it: returns the payload's
// length, and info says what it is; on ErrBufferTooSmall the item stays
// queued and info.Length is its size. A capture point.
func RecvAnyWithInfo(buf []byte, timeout time.Duration, info *RecvAnyInfo) (int, error) {
	rc := raw.RecvAny(bytesPtr(buf), bufLen(buf), timeoutMs(timeout), unsafe.Pointer(info))
	runtime.KeepAlive(buf)
	return checkLen(rc, buf)
}

// RecvMatchWithInfo is recv_match as the ABI has it (filter MatchFrom with
// a pid, or MatchReply with a RequestRef); everything it does not select
// stays queued, in order. A capture point.
func RecvMatchWithInfo(filter int32, value uint64, buf []byte, timeout time.Duration, info *RecvAnyInfo) (int, error) {
	rc := raw.RecvMatch(filter, value, bytesPtr(buf), bufLen(buf), timeoutMs(timeout), unsafe.Pointer(info))
	runtime.KeepAlive(buf)
	return checkLen(rc, buf)
}

func checkLen(rc int32, buf []byte) (int, error) {
	n, err := Check(rc)
	if err != nil {
		return 0, err
	}
	if n > len(buf) {
		return 0, ErrInvalid
	}
	return n, nil
}

// RecvAnyInto is Recv that also receives call requests and DOWN notices,
// into buf (Data is a slice of it). A longer item stays queued: a
// *BufferTooSmallError says its size. A capture point.
func RecvAnyInto(buf []byte, timeout time.Duration) (Incoming, error) {
	var info RecvAnyInfo
	n, err := RecvAnyWithInfo(buf, timeout, &info)
	if err == ErrBufferTooSmall {
		return Incoming{}, &BufferTooSmallError{Need: int(info.Length)}
	}
	if err != nil {
		return Incoming{}, err
	}
	return incomingFrom(&info, buf[:n]), nil
}

// receiveCopy receives through recv (recv_any or recv_match) into the
// shared scratch buffer, or a buffer of the item's size when it is longer,
// and returns a copy.
func receiveCopy(timeout time.Duration, recv func(buf []byte, timeout time.Duration, info *RecvAnyInfo) (int, error)) (Incoming, *RecvAnyInfo, error) {
	scratchMu.Lock()
	defer scratchMu.Unlock()
	info := new(RecvAnyInfo)
	n, err := recv(scratch[:], timeout, info)
	if err == nil {
		return incomingFrom(info, clone(scratch[:n])), info, nil
	}
	if err != ErrBufferTooSmall {
		return Incoming{}, nil, err
	}
	// Still queued, and still the first one selected.
	if info.Length > MaxMessageSize {
		return Incoming{}, nil, ErrInvalid
	}
	buf := make([]byte, info.Length)
	n, err = recv(buf, 0, info)
	if err != nil {
		return Incoming{}, nil, err
	}
	return incomingFrom(info, buf[:n]), info, nil
}

// RecvAny is RecvAnyInto of an item of any size; Data is a fresh copy.
func RecvAny(timeout time.Duration) (Incoming, error) {
	in, _, err := receiveCopy(timeout, RecvAnyWithInfo)
	return in, err
}

// RecvFrom is RecvAny, but only of what comes from pid (its messages, its
// call requests, the DOWN of a monitor of it); the rest stays queued, in
// order. A capture point.
func RecvFrom(pid Pid, timeout time.Duration) (Incoming, error) {
	in, _, err := receiveCopy(timeout, func(buf []byte, t time.Duration, info *RecvAnyInfo) (int, error) {
		return RecvMatchWithInfo(MatchFrom, uint64(pid), buf, t, info)
	})
	return in, err
}

// Reply answers the call whose request carried handle. It retries (1 ms
// sleeps) while even the room kept for replies on the way is in use.
// ErrInvalid: the handle is unknown or was answered already.
func Reply(handle CallHandle, data []byte) error {
	if len(data) > maxInt32 {
		return ErrTooLarge
	}
	for {
		rc := raw.Reply(uint64(handle), bytesPtr(data), int32(len(data)))
		runtime.KeepAlive(data)
		_, err := Check(rc)
		if err != ErrMailboxFull {
			return err
		}
		_ = Sleep(time.Millisecond)
	}
}

// SendRequest is a call that does not wait: it sends request to pid and
// returns the request's reference; take the answer with ReceiveResponse.
func SendRequest(pid Pid, request []byte) (RequestRef, error) {
	if len(request) > maxInt32 {
		return 0, ErrTooLarge
	}
	var ref uint64
	rc := raw.SendRequest(uint64(pid), bytesPtr(request), int32(len(request)), unsafe.Pointer(&ref))
	runtime.KeepAlive(request)
	if _, err := Check(rc); err != nil {
		return 0, err
	}
	return RequestRef(ref), nil
}

// ReceiveResponse waits at most timeout for the answer to request (a
// capture point) and returns the reply's bytes, or a *DownError (with
// ErrNoProcess, ErrNodeDown, ErrNotCallable or ErrCalleeDown). ErrTimeout
// leaves the request pending: wait again, or CancelRequest.
func ReceiveResponse(request RequestRef, timeout time.Duration) ([]byte, error) {
	in, info, err := receiveCopy(timeout, func(buf []byte, t time.Duration, info *RecvAnyInfo) (int, error) {
		return RecvMatchWithInfo(MatchReply, uint64(request), buf, t, info)
	})
	if err != nil {
		return nil, err
	}
	if in.Kind == KindReply {
		return in.Data, nil
	}
	de := &DownError{Reason: DownReason(info.Reason), Code: info.Code}
	switch de.Reason {
	case ReasonNoProc:
		de.Err = ErrNoProcess
	case ReasonNodeDown:
		de.Err = ErrNodeDown
	case ReasonNotCallable:
		de.Err = ErrNotCallable
	default:
		de.Err = ErrCalleeDown
	}
	if de.Reason == ReasonTrap {
		de.Trap = string(in.Data)
	}
	return nil, de
}

// CancelRequest withdraws a pending request: its answer, queued or to
// come, is dropped.
func CancelRequest(request RequestRef) error {
	_, err := Check(raw.Demonitor(uint64(request)))
	return err
}

// Monitor asks for a DOWN notice (through RecvAny) when pid ends; a pid
// already gone gives one with ReasonNoProc. ErrInvalid for oneself.
func Monitor(pid Pid) (MonitorRef, error) {
	var ref uint64
	rc := raw.Monitor(uint64(pid), unsafe.Pointer(&ref))
	if _, err := Check(rc); err != nil {
		return 0, err
	}
	return MonitorRef(ref), nil
}

// Demonitor withdraws a monitor: a DOWN not yet received never will be.
// ErrInvalid if it is not held.
func Demonitor(ref MonitorRef) error {
	_, err := Check(raw.Demonitor(uint64(ref)))
	return err
}
