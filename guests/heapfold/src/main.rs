//! `heapfold`: a deterministic guest for snapshot exactness tests.
//!
//! `heapfold <seed> <steps> [<heap KiB>]` keeps a heap buffer (default
//! 256 KiB) plus a growing list of boxed vectors. Each step it mutates the
//! buffer with a PRNG seeded by `seed`, sometimes allocates or frees a
//! vector (so the heap grows, also after a restore), folds the whole heap
//! into a hash chain, prints `step <i> hash=<h>`, and then blocks in one of
//! the capture points, chosen by the PRNG: `shoal::yield_now`,
//! `shoal::sleep` (1 ms), `std::thread::sleep` (1 ms, WASI `poll_oneoff`),
//! `std::thread::yield_now` (WASI `sched_yield`), or `recv` with a 1 ms
//! timeout. At the end it prints `heapfold seed=<seed> steps=<n> hash=<h>`.
//!
//! The output depends only on the arguments, so a run captured and restored
//! any number of times must print exactly what an uninterrupted run prints.

use std::time::Duration;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let parse =
        |i: usize, default: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let seed = parse(1, 1);
    let steps = parse(2, 100);
    let heap_kib = parse(3, 256) as usize;
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut buffer = vec![0u8; heap_kib * 1024];
    let mut extra: Vec<Vec<u8>> = Vec::new();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for step in 0..steps {
        for _ in 0..64 {
            let r = rng.next();
            let at = (r as usize) % buffer.len();
            buffer[at] = (r >> 40) as u8;
        }
        match rng.next() % 8 {
            0 | 1 => {
                let len = 1024 + (rng.next() % (64 * 1024)) as usize;
                let fill = rng.next() as u8;
                extra.push(vec![fill; len]);
            }
            2 if !extra.is_empty() => {
                let i = (rng.next() as usize) % extra.len();
                extra.swap_remove(i);
            }
            _ => {}
        }
        hash = fnv(hash, &buffer);
        for v in &extra {
            hash = fnv(hash, v);
        }
        hash = fnv(hash, &step.to_le_bytes());
        println!("step {step} hash={hash:016x}");
        match rng.next() % 5 {
            0 => shoal::yield_now().expect("yield_now"),
            1 => shoal::sleep(Duration::from_millis(1)).expect("sleep"),
            2 => std::thread::sleep(Duration::from_millis(1)),
            3 => std::thread::yield_now(),
            _ => match shoal::recv(Some(Duration::from_millis(1))) {
                Err(shoal::Error::Timeout) => {}
                Ok(m) => hash = fnv(hash, &m.data),
                Err(e) => panic!("recv: {e}"),
            },
        }
    }
    println!("heapfold seed={seed} steps={steps} hash={hash:016x}");
}
