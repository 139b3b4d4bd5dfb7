// Command go_pingpong is the ping_pong protocol (guests/ping_pong, Rust) in
// Go, so that either side can be Rust and the other Go.
//
// Modes (first argument):
//
//   - pong: loops on recv (no timeout). A message equal to "stop" ends the
//     process with code 0 (through shoal.Exit); any other message is sent
//     back unchanged to its sender.
//   - ping <module-ref> <N> [<target>]: spawns <module-ref> with the
//     argument "pong" (with <target>: through SpawnOn), then for i in 0..N
//     sends the decimal text of i and waits for the reply, which must be the
//     same bytes from the same pid (otherwise prints "MISMATCH at <i>" and
//     exits 1). Then sends "stop", prints "ping-pong done <N> round trips"
//     and exits 0.
//
// Bad arguments print a usage line to stderr and exit 2; a Shoal error
// prints "go_pingpong: <what>: <error>" to stderr and exits 1.
package main

import (
	"bytes"
	"errors"
	"os"
	"strconv"

	"shoal"
)

const usageLine = "usage: go_pingpong pong | ping <module-ref> <N> [<target>]\n"

// buf receives; a longer message is taken through shoal.Recv.
var buf [64 << 10]byte

func main() {
	a := os.Args[min(1, len(os.Args)):]
	switch {
	case len(a) == 1 && a[0] == "pong":
		pong()
	case (len(a) == 3 || len(a) == 4) && a[0] == "ping":
		n, err := strconv.ParseUint(a[2], 10, 64)
		if err != nil {
			os.Stderr.WriteString("go_pingpong: not a number: " + a[2] + "\n")
			usage()
		}
		target := ""
		if len(a) == 4 {
			target = a[3]
		}
		ping(a[1], n, len(a) == 4, target)
		shoal.Exit(0)
	}
	usage()
}

func usage() {
	os.Stderr.WriteString(usageLine)
	shoal.Exit(2)
}

func die(what string, err error) {
	os.Stderr.WriteString("go_pingpong: " + what + ": " + shoal.ErrorName(err) + "\n")
	shoal.Exit(1)
}

func pong() {
	for {
		msg, err := shoal.RecvInto(buf[:], shoal.Forever)
		if errors.Is(err, shoal.ErrBufferTooSmall) {
			msg, err = shoal.Recv(shoal.Forever)
		}
		if err != nil {
			die("recv", err)
		}
		if string(msg.Data) == "stop" {
			shoal.Exit(0)
		}
		if err := shoal.SendBlocking(msg.Sender, msg.Data); err != nil {
			// The peer may be gone; keep serving others.
			os.Stderr.WriteString("go_pingpong: pong reply to " + msg.Sender.String() + ": " + shoal.ErrorName(err) + "\n")
		}
	}
}

func ping(module string, n uint64, on bool, target string) {
	var peer shoal.Pid
	var err error
	if on {
		peer, err = shoal.SpawnOn(target, module, "pong")
		if err != nil {
			die("spawn_on", err)
		}
	} else {
		peer, err = shoal.Spawn(module, "pong")
		if err != nil {
			die("spawn", err)
		}
	}
	var text []byte
	for i := uint64(0); i < n; i++ {
		text = strconv.AppendUint(text[:0], i, 10)
		if err := shoal.SendBlocking(peer, text); err != nil {
			die("send", err)
		}
		reply, err := shoal.RecvInto(buf[:], shoal.Forever)
		if err != nil {
			die("recv", err)
		}
		if reply.Sender != peer || !bytes.Equal(reply.Data, text) {
			os.Stdout.WriteString("MISMATCH at " + strconv.FormatUint(i, 10) + "\n")
			shoal.Exit(1)
		}
	}
	if err := shoal.SendBlocking(peer, []byte("stop")); err != nil {
		die("send stop", err)
	}
	os.Stdout.WriteString("ping-pong done " + strconv.FormatUint(n, 10) + " round trips\n")
}
