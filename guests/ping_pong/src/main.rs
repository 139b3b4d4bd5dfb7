//! `ping_pong`: message round trips and one-way throughput.
//!
//! Modes (first argument):
//!
//! - `pong`: loops on `recv` (no timeout). A message equal to `stop` ends the
//!   process with code 0 (through `shoal::exit`); any other message is sent
//!   back unchanged to its sender.
//! - `ping <module-ref> <N>`: spawns `<module-ref>` with the argument `pong`,
//!   then for `i` in `0..N` sends the decimal text of `i` and waits for the
//!   reply, which must be the same bytes from the same pid (otherwise prints
//!   `MISMATCH at <i>` and exits 1). Then sends `stop`, prints
//!   `ping-pong done <N> round trips` and exits 0.
//! - `sink <N>`: receives `N` messages whose first 8 bytes must be the `u64`
//!   little-endian sequence numbers `0..N` in order. On the first one that is
//!   not, prints `ORDER VIOLATION expected <e> got <g>` and exits 1 (a message
//!   shorter than 8 bytes prints `SHORT MESSAGE at <e> len=<len>` and exits
//!   1). Otherwise prints `sink got <N> in order` and exits 0.
//! - `blast <module-ref> <N> <size>`: spawns `<module-ref>` with the arguments
//!   `sink <N>`, sends it `N` messages of `<size>` bytes (`size >= 8`; the first
//!   8 bytes are the sequence number as `u64` LE) with `send_blocking`, prints
//!   `blast sent <N>` and exits 0 without waiting for the sink.
//!
//! - `ping <module-ref> <N> <target>` and `blast <module-ref> <N> <size>
//!   <target>`: the same, but the child is started with `spawn_on(<target>,
//!   ...)`: a node name, `k=v` labels, or `""` for the cluster's scheduler.
//!
//! Bad arguments print a usage line to stderr and exit 2; an SDK error prints
//! `ping_pong: <what>: <error>` to stderr and exits 1.

use std::process::exit;

use shoal::{Message, Pid};

const USAGE: &str =
    "usage: ping_pong pong | ping <module-ref> <N> [<target>] | sink <N> | blast <module-ref> <N> <size> [<target>]";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["pong"] => pong(),
        ["ping", module, n] => ping(module, parse(n), None),
        ["ping", module, n, target] => ping(module, parse(n), Some(target)),
        ["sink", n] => sink(parse(n)),
        ["blast", module, n, size] => blast(module, parse(n), parse(size), None),
        ["blast", module, n, size, target] => blast(module, parse(n), parse(size), Some(target)),
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!("{USAGE}");
    exit(2)
}

/// Parses a numeric argument or exits with the usage line.
fn parse<T: std::str::FromStr>(text: &str) -> T {
    text.parse().unwrap_or_else(|_| {
        eprintln!("ping_pong: not a number: {text}");
        usage()
    })
}

/// Unwraps an SDK result or exits 1 with a message naming the step.
fn or_die<T>(result: shoal::Result<T>, what: &str) -> T {
    result.unwrap_or_else(|e| {
        eprintln!("ping_pong: {what}: {e}");
        exit(1)
    })
}

fn pong() -> ! {
    loop {
        let Message { sender, data } = or_die(shoal::recv(None), "recv");
        if data == b"stop" {
            shoal::exit(0);
        }
        if let Err(e) = shoal::send_blocking(sender, &data) {
            // The peer may be gone; keep serving others.
            eprintln!("ping_pong: pong reply to {sender}: {e}");
        }
    }
}

/// Start `module` with `args`, here or at `target`.
fn start(module: &str, args: &[&str], target: Option<&str>) -> Pid {
    match target {
        None => or_die(shoal::spawn(module, args), "spawn"),
        Some(t) => or_die(shoal::spawn_on(t, module, args), "spawn_on"),
    }
}

fn ping(module: &str, n: u64, target: Option<&str>) {
    let pong = start(module, &["pong"], target);
    for i in 0..n {
        let payload = i.to_string();
        or_die(shoal::send_blocking(pong, payload.as_bytes()), "send");
        let reply = or_die(shoal::recv(None), "recv");
        if reply.sender != pong || reply.data != payload.as_bytes() {
            println!("MISMATCH at {i}");
            exit(1);
        }
    }
    or_die(shoal::send_blocking(pong, b"stop"), "send stop");
    println!("ping-pong done {n} round trips");
}

fn sink(n: u64) {
    for expected in 0..n {
        let msg = or_die(shoal::recv(None), "recv");
        let Some(head) = msg.data.first_chunk::<8>() else {
            println!("SHORT MESSAGE at {expected} len={}", msg.data.len());
            exit(1);
        };
        let got = u64::from_le_bytes(*head);
        if got != expected {
            println!("ORDER VIOLATION expected {expected} got {got}");
            exit(1);
        }
    }
    println!("sink got {n} in order");
}

fn blast(module: &str, n: u64, size: usize, target: Option<&str>) {
    if size < 8 {
        eprintln!("ping_pong: blast: size must be at least 8");
        usage();
    }
    let count = n.to_string();
    let sink: Pid = start(module, &["sink", &count], target);
    let mut payload = vec![0xA5u8; size];
    for seq in 0..n {
        payload[..8].copy_from_slice(&seq.to_le_bytes());
        or_die(shoal::send_blocking(sink, &payload), "send");
    }
    println!("blast sent {n}");
}
