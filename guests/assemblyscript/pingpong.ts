// as_pingpong: the ping_pong protocol (guests/ping_pong, Rust) in
// AssemblyScript, built against sdk/assemblyscript/assembly/shoal.ts, so that
// either side can be Rust and the other AssemblyScript.
//
// Modes (first argument):
//
// - `pong`: loops on recv (no timeout). A message equal to `stop` ends the
//   process with code 0 (through shoal.exit); any other message is sent back
//   unchanged to its sender.
// - `ping <module-ref> <N> [<target>]`: spawns <module-ref> with the argument
//   `pong` (with <target>: through spawnOn), then for i in 0..N sends the
//   decimal text of i and waits for the reply, which must be the same bytes
//   from the same pid (otherwise prints `MISMATCH at <i>` and exits 1). Then
//   sends `stop`, prints `ping-pong done <N> round trips` and exits 0.
//
// Bad arguments print a usage line to stderr and exit 2; a Shoal error prints
// `as_pingpong: <what>: <error>` to stderr and exits 1.
import * as shoal from "../../sdk/assemblyscript/assembly/shoal";

function usage(): void {
  process.stderr.write("usage: as_pingpong pong | ping <module-ref> <N> [<target>]\n");
  shoal.exit(2);
}

function die(what: string, code: i32): void {
  process.stderr.write("as_pingpong: " + what + ": " + shoal.codeName(code) + "\n");
  shoal.exit(1);
}

function isDecimal(s: string): bool {
  if (s.length == 0 || s.length > 19) return false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 48 || c > 57) return false;
  }
  return true;
}

function pong(): void {
  for (;;) {
    const msg = shoal.recv();
    if (!msg.ok) die("recv", msg.code);
    const m = msg.value;
    if (shoal.bytesEqual(m.data, "stop")) shoal.exit(0);
    const rc = shoal.sendBlocking(m.sender, m.data);
    if (rc < 0) {
      // The peer may be gone; keep serving others.
      process.stderr.write("as_pingpong: pong reply to " + m.sender.toString() + ": " + shoal.codeName(rc) + "\n");
    }
  }
}

function ping(module: string, n: u64, target: string | null): void {
  const peer = target != null ? shoal.spawnOn(target, module, ["pong"]) : shoal.spawn(module, ["pong"]);
  if (!peer.ok) die(target != null ? "spawn_on" : "spawn", peer.code);
  const pid = peer.value;
  for (let i: u64 = 0; i < n; i++) {
    const payload = shoal.utf8(i.toString());
    let rc = shoal.sendBlocking(pid, payload);
    if (rc < 0) die("send", rc);
    const reply = shoal.recv();
    if (!reply.ok) die("recv", reply.code);
    const r = reply.value;
    if (r.sender != pid || r.data.length != payload.length ||
        memory.compare(r.data.dataStart, payload.dataStart, <usize>payload.length) != 0) {
      console.log("MISMATCH at " + i.toString());
      shoal.exit(1);
    }
  }
  const rc = shoal.sendBlocking(pid, shoal.utf8("stop"));
  if (rc < 0) die("send stop", rc);
  console.log("ping-pong done " + n.toString() + " round trips");
}

const argv = process.argv;
if (argv.length == 2 && argv[1] == "pong") {
  pong();
} else if ((argv.length == 4 || argv.length == 5) && argv[1] == "ping") {
  if (!isDecimal(argv[3])) {
    process.stderr.write("as_pingpong: not a number: " + argv[3] + "\n");
    usage();
  }
  ping(argv[2], U64.parseInt(argv[3], 10), argv.length == 5 ? argv[4] : null);
  shoal.exit(0);
} else {
  usage();
}
