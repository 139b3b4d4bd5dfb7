//! `cpu_bound`: computation with few or no host calls, for scheduling,
//! preemption and benchmark tests. Pure WASI.
//!
//! - `sieve <N>`: counts the primes below `N` with a sieve of Eratosthenes in
//!   a heap vector and prints `primes below <N>: <count>`. It calls
//!   `shoal::yield_now` (a capture point) before and after, like a real
//!   process that does work between blocking calls: `main` is then
//!   instrumented by Asyncify, the sieve itself is not.
//! - `sieve-yield <N>`: the same, but the sieve's outer loop yields every
//!   4096 candidates, so the hot function itself can be captured and is
//!   instrumented (the worst case for Asyncify overhead).
//! - `spin`: prints `cpu_bound spinning` and then loops forever doing
//!   arithmetic, with no host calls at all in the loop.
//! - `work <iterations>`: a deterministic xorshift + FNV-1a loop over a 4 KiB
//!   buffer; prints `work result=<16 lowercase hex digits>`. The result depends
//!   only on `iterations`, so runs on different engines can be compared.
//!
//! Bad arguments print a usage line to stderr and exit 2.

use std::hint::black_box;
use std::io::Write;
use std::process::exit;

const USAGE: &str = "usage: cpu_bound sieve <N> | sieve-yield <N> | spin | work <iterations>";

fn yield_now() {
    if let Err(e) = shoal::yield_now() {
        eprintln!("cpu_bound: yield failed: {e}");
        exit(1)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["sieve", n] => {
            let n = parse(n);
            yield_now();
            let count = count_primes_below(n, false);
            yield_now();
            println!("primes below {n}: {count}");
        }
        ["sieve-yield", n] => {
            let n = parse(n);
            println!("primes below {n}: {}", count_primes_below(n, true));
        }
        ["spin"] => {
            println!("cpu_bound spinning");
            let _ = std::io::stdout().flush();
            spin()
        }
        ["work", iterations] => println!("work result={:016x}", work(parse(iterations))),
        _ => {
            eprintln!("{USAGE}");
            exit(2)
        }
    }
}

fn parse<T: std::str::FromStr>(text: &str) -> T {
    text.parse().unwrap_or_else(|_| {
        eprintln!("cpu_bound: not a number: {text}\n{USAGE}");
        exit(2)
    })
}

/// Number of primes `p < n`; with `yielding`, yields every 4096 candidates.
#[inline(never)]
fn count_primes_below(n: usize, yielding: bool) -> usize {
    if n < 3 {
        return 0;
    }
    let mut composite = vec![false; n];
    let mut count = 0;
    for i in 2..n {
        if yielding && i % 4096 == 0 {
            yield_now();
        }
        if composite[i] {
            continue;
        }
        count += 1;
        let mut multiple = i.saturating_mul(i);
        while multiple < n {
            composite[multiple] = true;
            multiple += i;
        }
    }
    count
}

/// Arithmetic forever; `black_box` keeps the loop from being optimised away.
fn spin() -> ! {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    loop {
        x = black_box(x)
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        x ^= x >> 29;
    }
}

/// One xorshift64 step.
fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

/// Deterministic hash work: each iteration advances a xorshift generator,
/// mixes it into a 4 KiB buffer and folds the touched 8 bytes into an FNV-1a
/// hash.
fn work(iterations: u64) -> u64 {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut buffer = vec![0u8; 4096];
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for byte in buffer.iter_mut() {
        x = xorshift(x);
        *byte = x as u8;
    }
    let mut hash = FNV_OFFSET;
    for i in 0..iterations {
        x = xorshift(x);
        let slot = ((x >> 32) as usize % (buffer.len() / 8)) * 8;
        let word = &mut buffer[slot..slot + 8];
        for (b, k) in word.iter_mut().zip(x.to_le_bytes()) {
            *b ^= k;
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(FNV_PRIME);
        }
        hash ^= i;
    }
    black_box(hash)
}
