//! `toucher`: a process with a chosen amount of touched memory, for snapshot
//! benchmarks.
//!
//! `toucher <MiB>` fills a heap buffer of that size with non-zero bytes,
//! prints `toucher ready <MiB> MiB`, then serves messages in `recv`:
//! `touch [N]` changes one byte of each of N pages (default 1) and replies
//! `ok`; `sum` replies the
//! wrapping sum of the buffer; `stop` exits.

fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1);
    let mut buffer = vec![0u8; mib << 20];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for chunk in buffer.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        for (b, v) in chunk.iter_mut().zip(x.to_le_bytes()) {
            *b = v | 1;
        }
    }
    println!("toucher ready {mib} MiB");
    let mut next_page = 0usize;
    loop {
        let msg = shoal::recv(None).expect("recv");
        match msg.data.as_slice() {
            m if m.starts_with(b"touch") => {
                // `touch` or `touch N`: change one byte of each of N pages.
                let pages: usize = std::str::from_utf8(&m[5..])
                    .ok()
                    .and_then(|n| n.trim().parse().ok())
                    .unwrap_or(1);
                for _ in 0..pages {
                    let at = (next_page * 4096) % buffer.len();
                    buffer[at] = buffer[at].wrapping_add(2) | 1;
                    next_page += 97;
                }
                shoal::send_blocking(msg.sender, b"ok").expect("reply");
            }
            b"sum" => {
                let sum = buffer
                    .iter()
                    .fold(0u64, |s, b| s.wrapping_add(u64::from(*b)));
                shoal::send_blocking(msg.sender, sum.to_string().as_bytes()).expect("reply");
            }
            b"stop" => return,
            _ => {}
        }
    }
}
