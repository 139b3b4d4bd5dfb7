"""py_pingpong: the ping_pong protocol (guests/ping_pong, Rust) in Python,
over the SDK in sdk/python, so that either side can be Rust and the other
Python.

Modes (first argument):

- ``pong``: loops on recv (no timeout). A message equal to ``stop`` ends the
  process with code 0; any other message is sent back unchanged to its
  sender.
- ``ping <module-ref> <N> [<target>]``: spawns <module-ref> with the
  argument ``pong`` (with <target>: through spawn_on), then for i in 0..N
  sends the decimal text of i and waits for the reply, which must be the
  same bytes from the same pid (otherwise prints ``MISMATCH at <i>`` and
  exits 1). Then sends ``stop``, prints ``ping-pong done <N> round trips``
  and exits 0.

Bad arguments print a usage line to stderr and exit 2; a Shoal error prints
``py_pingpong: <what>: <error>`` to stderr and exits 1.
"""

import sys

import shoal


def usage():
    sys.stderr.write("usage: py_pingpong pong | ping <module-ref> <N> [<target>]\n")
    shoal.exit(2)


def die(what, err):
    sys.stderr.write("py_pingpong: %s: %s\n" % (what, err))
    shoal.exit(1)


def pong():
    while True:
        try:
            msg = shoal.recv()
        except shoal.ShoalError as e:
            die("recv", e)
        if msg.data == b"stop":
            shoal.exit(0)
        try:
            shoal.send_blocking(msg.sender, msg.data)
        except shoal.ShoalError as e:
            # The peer may be gone; keep serving others.
            sys.stderr.write("py_pingpong: pong reply to %d: %s\n" % (msg.sender, e))


def ping(module, n, target):
    try:
        peer = shoal.spawn_on(target, module, "pong") if target is not None else shoal.spawn(module, "pong")
    except shoal.ShoalError as e:
        die("spawn_on" if target is not None else "spawn", e)
    for i in range(n):
        payload = str(i).encode()
        try:
            shoal.send_blocking(peer, payload)
            reply = shoal.recv()
        except shoal.ShoalError as e:
            die("round trip %d" % i, e)
        if reply.sender != peer or reply.data != payload:
            print("MISMATCH at %d" % i)
            shoal.exit(1)
    try:
        shoal.send_blocking(peer, b"stop")
    except shoal.ShoalError as e:
        die("send stop", e)
    print("ping-pong done %d round trips" % n)


def main(argv):
    if len(argv) == 2 and argv[1] == "pong":
        pong()
    if len(argv) in (4, 5) and argv[1] == "ping":
        if not argv[3].isdigit():
            sys.stderr.write("py_pingpong: not a number: %s\n" % argv[3])
            usage()
        ping(argv[2], int(argv[3]), argv[4] if len(argv) == 5 else None)
        shoal.exit(0)
    usage()


main(sys.argv)
