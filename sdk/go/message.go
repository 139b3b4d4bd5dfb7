//go:build wasip1

package shoal

import (
	"runtime"
	"sync"
	"time"
	"unsafe"

	"shoal/raw"
)

// Message is a received message.
type Message struct {
	// Sender is the pid of the process that sent it.
	Sender Pid
	// Data is its bytes (for RecvInto, a slice of the caller's buffer).
	Data []byte
}

// Send queues a copy of data in pid's mailbox and returns at once (never
// blocks). ErrNoProcess, ErrTooLarge (over MaxMessageSize), ErrMailboxFull
// (nothing was queued: retry later, as SendBlocking does).
func Send(pid Pid, data []byte) error {
	if len(data) > maxInt32 {
		return ErrTooLarge
	}
	rc := raw.Send(uint64(pid), bytesPtr(data), int32(len(data)))
	runtime.KeepAlive(data)
	_, err := Check(rc)
	return err
}

// Retries of SendBlocking, as the Rust SDK's send_blocking.
const (
	// SendBlockingMaxRetries is how often SendBlocking retries before it
	// gives up with ErrMailboxFull.
	SendBlockingMaxRetries = 1000
	// SendBlockingYields is how many of those retries only Yield first.
	SendBlockingYields = 16
	// SendBlockingMaxBackoff is the longest sleep between two retries.
	SendBlockingMaxBackoff = 10 * time.Millisecond
)

// SendBlocking is Send, retrying while the mailbox is full: Yield 16
// times, then sleeps doubling from 1 ms to 10 ms, 1000 retries in all.
func SendBlocking(pid Pid, data []byte) error {
	backoff := time.Millisecond
	for retries := 0; ; retries++ {
		err := Send(pid, data)
		if err != ErrMailboxFull || retries >= SendBlockingMaxRetries {
			return err
		}
		if retries < SendBlockingYields {
			if err := Yield(); err != nil {
				return err
			}
			continue
		}
		if err := Sleep(backoff); err != nil {
			return err
		}
		backoff = min(backoff*2, SendBlockingMaxBackoff)
	}
}

// RecvInfo is recv's record of the message it took (or, on
// ErrBufferTooSmall, the Length of the one still queued).
type RecvInfo = raw.RecvInfo

// RecvWithInfo is recv as the ABI has it: the oldest message into buf,
// waiting at most timeout; info gets its sender and length. Returns the
// length. On ErrBufferTooSmall the message stays queued and info.Length is
// the size it needs. A capture point.
func RecvWithInfo(buf []byte, timeout time.Duration, info *RecvInfo) (int, error) {
	rc := raw.Recv(bytesPtr(buf), bufLen(buf), timeoutMs(timeout), unsafe.Pointer(info))
	runtime.KeepAlive(buf)
	n, err := Check(rc)
	if err != nil {
		return 0, err
	}
	if n > len(buf) {
		return 0, ErrInvalid // a host bug: never hand out unwritten bytes
	}
	return n, nil
}

// RecvInto takes the oldest message into buf (Data is a slice of buf),
// waiting at most timeout (Forever, or 0 to poll). A message longer than
// buf stays queued: the error is a *BufferTooSmallError with its size.
// ErrTimeout when none came. A capture point.
func RecvInto(buf []byte, timeout time.Duration) (Message, error) {
	var info RecvInfo
	n, err := RecvWithInfo(buf, timeout, &info)
	if err == ErrBufferTooSmall {
		return Message{}, &BufferTooSmallError{Need: int(info.Length)}
	}
	if err != nil {
		return Message{}, err
	}
	return Message{Sender: Pid(info.Sender), Data: buf[:n]}, nil
}

// ScratchSize is the size of the buffer Recv, RecvAny, RecvFrom and
// ReceiveResponse receive into before copying out; a longer message takes
// a buffer of its own size.
const ScratchSize = 64 << 10

// scratch is shared by the receives that return copies. A host call stops
// every goroutine, but the copy out does not, hence the mutex.
var (
	scratchMu sync.Mutex
	scratch   [ScratchSize]byte
)

// Recv takes the oldest message, of any size, waiting at most timeout
// (Forever, or 0 to poll). Data is a fresh copy. ErrTimeout when none
// came. A capture point.
func Recv(timeout time.Duration) (Message, error) {
	scratchMu.Lock()
	defer scratchMu.Unlock()
	var info RecvInfo
	n, err := RecvWithInfo(scratch[:], timeout, &info)
	if err == nil {
		return Message{Sender: Pid(info.Sender), Data: clone(scratch[:n])}, nil
	}
	if err != ErrBufferTooSmall {
		return Message{}, err
	}
	// Still queued and still the oldest: take it into a buffer of its size
	// (a second BufferTooSmall would be a host bug).
	if info.Length > MaxMessageSize {
		return Message{}, ErrInvalid
	}
	buf := make([]byte, info.Length)
	n, err = RecvWithInfo(buf, 0, &info)
	if err != nil {
		return Message{}, err
	}
	return Message{Sender: Pid(info.Sender), Data: buf[:n]}, nil
}

func clone(b []byte) []byte {
	c := make([]byte, len(b))
	copy(c, b)
	return c
}
