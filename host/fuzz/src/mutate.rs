//! A seeded mutator: the same seed and corpus give the same inputs, on any
//! machine, so a crash is reproduced from its seed and execution number.

/// Inputs never grow past this (the parsers' own bounds are far larger;
/// what matters here is structure, not size).
pub const INPUT_BYTES_MAX: usize = 64 << 10;

/// splitmix64: small, fast, and the same everywhere.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
}

/// Values that sit on the edges parsers get wrong: zero, one, signs,
/// powers of two and their neighbours, all ones.
const INTERESTING: &[u64] = &[
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0x100,
    0x7fff,
    0x8000,
    0xffff,
    0x1_0000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    0x7fff_ffff_ffff_ffff,
    u64::MAX,
    4096,
    65536,
];

/// One input: a corpus entry (or nothing) changed by one to four
/// mutations, at most `max_len` bytes.
pub fn mutate(rng: &mut Rng, corpus: &[Vec<u8>], max_len: usize) -> Vec<u8> {
    let mut data = if corpus.is_empty() {
        Vec::new()
    } else {
        corpus[rng.below(corpus.len())].clone()
    };
    for _ in 0..1 + rng.below(4) {
        mutate_once(rng, &mut data, corpus);
    }
    data.truncate(max_len);
    data
}

fn mutate_once(rng: &mut Rng, data: &mut Vec<u8>, corpus: &[Vec<u8>]) {
    let len = data.len();
    match rng.below(9) {
        // Flip one bit.
        0 if len > 0 => {
            let i = rng.below(len);
            data[i] ^= 1 << rng.below(8);
        }
        // Set one byte.
        1 if len > 0 => {
            let i = rng.below(len);
            data[i] = rng.next_u64() as u8;
        }
        // Write an interesting value, 1 to 8 bytes, either byte order.
        2 if len > 0 => {
            let v = INTERESTING[rng.below(INTERESTING.len())];
            let width = [1, 2, 4, 8][rng.below(4)];
            let bytes = if rng.below(2) == 0 {
                v.to_le_bytes()
            } else {
                v.to_be_bytes()
            };
            let bytes = if rng.below(2) == 0 {
                &bytes[..width]
            } else {
                &bytes[8 - width..]
            };
            let at = rng.below(len);
            for (k, b) in bytes.iter().enumerate() {
                if let Some(slot) = data.get_mut(at + k) {
                    *slot = *b;
                }
            }
        }
        // Insert random bytes.
        3 => {
            let at = rng.below(len + 1);
            let n = 1 + rng.below(16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            data.splice(at..at, bytes);
        }
        // Delete a range.
        4 if len > 0 => {
            let at = rng.below(len);
            let n = 1 + rng.below((len - at).min(64));
            data.drain(at..at + n);
        }
        // Duplicate a range.
        5 if len > 0 => {
            let at = rng.below(len);
            let n = 1 + rng.below((len - at).min(64));
            let copy = data[at..at + n].to_vec();
            let to = rng.below(len + 1);
            data.splice(to..to, copy);
        }
        // Splice in part of another corpus entry.
        6 if !corpus.is_empty() => {
            let other = &corpus[rng.below(corpus.len())];
            if !other.is_empty() {
                let from = rng.below(other.len());
                let n = 1 + rng.below(other.len() - from);
                let at = rng.below(len + 1);
                let end = (at + n).min(len);
                data.splice(at..end, other[from..from + n].iter().copied());
            }
        }
        // Cut the end off (truncation is the commonest real damage).
        7 if len > 0 => {
            let keep = rng.below(len);
            data.truncate(keep);
        }
        // Change an ASCII digit (JSON numbers, lengths in text).
        _ => {
            let digits: Vec<usize> = (0..len).filter(|&i| data[i].is_ascii_digit()).collect();
            if !digits.is_empty() {
                let i = digits[rng.below(digits.len())];
                data[i] = b"0123456789"[rng.below(10)];
                if rng.below(2) == 0 {
                    data.splice(i..i, b"99999999999999999999".iter().copied());
                }
            } else if len > 0 {
                data[rng.below(len)] = rng.next_u64() as u8;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_inputs() {
        let corpus = vec![b"hello, world".to_vec(), vec![0; 40]];
        let a: Vec<_> = {
            let mut r = Rng::new(7);
            (0..200).map(|_| mutate(&mut r, &corpus, 128)).collect()
        };
        let b: Vec<_> = {
            let mut r = Rng::new(7);
            (0..200).map(|_| mutate(&mut r, &corpus, 128)).collect()
        };
        assert_eq!(a, b);
        let distinct: std::collections::BTreeSet<_> = a.iter().collect();
        assert!(distinct.len() > 150, "{}", distinct.len());
        assert!(a.iter().all(|x| x.len() <= 128));
    }
}
