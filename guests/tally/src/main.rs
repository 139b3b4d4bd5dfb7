//! `tally`: exactly-once calls across the death of a node (issue #16).
//!
//! Modes (first argument):
//!
//! - `count <name> <senders> <N>`: registers `<name>`, then serves calls
//!   whose request is a number `n` (postcard `u64`). For each caller it
//!   keeps how many calls it took (`count`) and a digest of its replies; it
//!   answers `(count, nonce)`, where `nonce` is drawn from the wall clock
//!   for this reply, so a copy of the process re-executing from an older
//!   state answers with other nonces than the lost one did. Once
//!   `<senders>` callers have each been counted `<N>` times it prints, per
//!   caller in pid order, `tally <pid> count <count> digest <hex>`, then
//!   `tally done`, and goes on serving.
//! - `send <name> <N>`: finds `<name>` (waiting for it), then calls it with
//!   `1..=N` in order, one at a time. Each reply's count must be the number
//!   just sent — a lost call gives less, a call taken twice more — else it
//!   prints `BAD call <n> count <count>` and exits 1. Every 10 calls it
//!   prints `at <n>`; at the end `sent <N> digest <hex>` (the same digest
//!   the tally keeps: equal only if every reply this sender saw is one the
//!   tally's surviving history produced), and exits 0.
//!
//! Bad arguments print a usage line to stderr and exit 2.

use std::collections::BTreeMap;
use std::process::exit;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shoal::{Error, Pid};

const USAGE: &str = "usage: tally count <name> <senders> <N> | send <name> <N>";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["count", name, senders, n] => count(name, parse(senders), parse(n)),
        ["send", name, n] => send(name, parse(n)),
        _ => {
            eprintln!("{USAGE}");
            exit(2)
        }
    }
}

fn parse<T: std::str::FromStr>(text: &str) -> T {
    text.parse().unwrap_or_else(|_| {
        eprintln!("tally: not a number: {text}\n{USAGE}");
        exit(2)
    })
}

/// The digest both sides keep: a fold of (n, count, nonce).
fn fold(digest: u64, n: u64, count: u64, nonce: u64) -> u64 {
    let mut h = digest ^ 0x9e37_79b9_7f4a_7c15;
    for v in [n, count, nonce] {
        h = (h ^ v).wrapping_mul(0x0000_0100_0000_01b3).rotate_left(29);
    }
    h
}

fn count(name: &str, senders: usize, n: u64) -> ! {
    if let Err(e) = shoal::register(name) {
        eprintln!("tally: register {name}: {e}");
        exit(1)
    }
    // Caller → (count, digest).
    let mut tallies: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    let mut reported = false;
    let mut drawn: u64 = 0;
    let served = shoal::serve(
        |from: Pid, k: u64| {
            let t = tallies.entry(from.as_u64()).or_insert((0, 0));
            t.0 += 1;
            drawn += 1;
            let nonce = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
                ^ drawn.rotate_left(40);
            t.1 = fold(t.1, k, t.0, nonce);
            let reply = (t.0, nonce);
            if !reported
                && tallies.len() >= senders
                && tallies.values().filter(|(c, _)| *c >= n).count() >= senders
            {
                reported = true;
                for (pid, (c, d)) in &tallies {
                    println!("tally {pid} count {c} digest {d:016x}");
                }
                println!("tally done");
            }
            reply
        },
        |_| true,
    );
    eprintln!("tally: serve: {served:?}");
    exit(1)
}

fn send(name: &str, n: u64) -> ! {
    let tally = loop {
        match shoal::whereis(name) {
            Ok(p) => break p,
            Err(_) => {
                let _ = shoal::sleep(Duration::from_millis(20));
            }
        }
    };
    let mut digest = 0u64;
    for k in 1..=n {
        let (count, nonce): (u64, u64) = loop {
            match shoal::call(tally, &k, Some(Duration::from_secs(300))) {
                Ok(r) => break r,
                // The way is full (its node is dying): the call was not
                // sent; try again.
                Err(Error::MailboxFull) => {
                    let _ = shoal::sleep(Duration::from_millis(20));
                }
                Err(e) => {
                    println!("BAD call {k} failed: {e}");
                    exit(1)
                }
            }
        };
        if count != k {
            println!("BAD call {k} count {count}");
            exit(1)
        }
        digest = fold(digest, k, count, nonce);
        if k % 10 == 0 {
            println!("at {k}");
        }
    }
    println!("sent {n} digest {digest:016x}");
    exit(0)
}
