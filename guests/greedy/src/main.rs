//! `greedy`: allocates memory until something stops it, for memory-limit
//! tests. Pure WASI.
//!
//! Allocates 1 MiB vectors forever, writing to every 4 KiB page of each and
//! keeping all of them alive, and prints `allocated <n> MiB` after every 16
//! MiB. The host's memory cap must end it (its `memory.grow` fails and the
//! allocation error aborts, or the host kills it).

use std::hint::black_box;

const MIB: usize = 1 << 20;
const PAGE: usize = 4096;

fn main() {
    let mut kept: Vec<Vec<u8>> = Vec::new();
    let mut mib: u64 = 0;
    loop {
        let mut block = vec![0u8; MIB];
        for (i, byte) in block.iter_mut().step_by(PAGE).enumerate() {
            *byte = (i as u8) | 1;
        }
        kept.push(black_box(block));
        mib += 1;
        if mib % 16 == 0 {
            println!("allocated {mib} MiB");
        }
    }
}
