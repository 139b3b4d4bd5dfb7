//! A process's output in a checkpoint (issue #16): the log, cut at fixed
//! positions into blocks stored in the registry like pages.
//!
//! A checkpoint carries what the process's log held, so the copy that
//! resumes after a failover shows the same output at the same positions: a
//! reader of `shoal logs` sees no gap and no repeat. Block `k` holds the
//! output at positions `[k * LOG_BLOCK_BYTES, (k + 1) * LOG_BLOCK_BYTES)`:
//! once written past, a block never changes until the log's cap drops its
//! start, so consecutive checkpoints share all blocks but the last one (and
//! the first, as the log's oldest bytes drop) and a replica fetches only
//! those.
//!
//! A block is a run of records `stream: u8, level: u8, len: u32 LE, data`;
//! a write that crosses a block boundary is split in two records. Decoding
//! checks every length and that each block covers exactly its positions.

use crate::log::{Chunk, LogView, Stream};
use serde::{Deserialize, Serialize};
use shoal_registry::{Registry, Sha256};
use shoal_snapshot_format::{BlobRef, SnapshotFormatError};

/// Output positions one block covers.
pub const LOG_BLOCK_BYTES: u64 = 64 * 1024;
/// Most output a checkpoint carries (what any node's log may hold is far
/// less; a manifest asking for more is refused before anything is read).
pub const LOG_CARRIED_BYTES_MAX: u64 = 64 << 20;
/// Bytes of a record's header.
const RECORD_HEADER_BYTES: usize = 6;

/// Where a checkpoint's output lies: positions `start..end`, in `blocks`
/// (block `start / LOG_BLOCK_BYTES` first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogRef {
    /// Position of the first byte carried (bytes dropped before it).
    pub start: u64,
    /// Position after the last byte carried.
    pub end: u64,
    /// The blocks, in position order.
    pub blocks: Vec<Sha256>,
}

fn stream_code(stream: Stream) -> (u8, u8) {
    match stream {
        Stream::Stdout => (0, 0),
        Stream::Stderr => (1, 0),
        Stream::Log(level) => (2, level),
    }
}

fn stream_of(code: u8, level: u8) -> Option<Stream> {
    match code {
        0 => Some(Stream::Stdout),
        1 => Some(Stream::Stderr),
        2 => Some(Stream::Log(level)),
        _ => None,
    }
}

/// Cut `view` into its encoded blocks, in position order.
pub fn encode(view: &LogView) -> Vec<Vec<u8>> {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    let mut at = view.start;
    let mut current: Option<u64> = None;
    for chunk in &view.chunks {
        let mut data: &[u8] = &chunk.data;
        while !data.is_empty() {
            let block = at / LOG_BLOCK_BYTES;
            if current != Some(block) {
                blocks.push(Vec::new());
                current = Some(block);
            }
            let room = ((block + 1) * LOG_BLOCK_BYTES - at) as usize;
            let (here, rest) = data.split_at(room.min(data.len()));
            let (code, level) = stream_code(chunk.stream);
            if let Some(out) = blocks.last_mut() {
                out.push(code);
                out.push(level);
                out.extend_from_slice(&(here.len() as u32).to_le_bytes());
                out.extend_from_slice(here);
            }
            at += here.len() as u64;
            data = rest;
        }
    }
    blocks
}

/// Store `view`'s blocks in `registry` (those it lacks): the reference to
/// put in the image's state and the blobs its manifest lists.
pub fn store(
    registry: &Registry,
    view: &LogView,
) -> Result<(LogRef, Vec<BlobRef>), SnapshotFormatError> {
    let mut refs = Vec::new();
    let mut blobs = Vec::new();
    for block in encode(view) {
        let hash = Sha256::of(&block);
        if !registry.contains(&hash) {
            registry
                .put_expecting(&hash, &block)
                .map_err(|e| SnapshotFormatError::BadHeader(format!("log block: {e}")))?;
        }
        refs.push(hash);
        blobs.push(BlobRef {
            hash,
            bytes: u32::try_from(block.len()).unwrap_or(u32::MAX),
        });
    }
    let log = LogRef {
        start: view.start,
        end: view.end(),
        blocks: refs,
    };
    Ok((log, blobs))
}

/// Read back the output `log` names from `registry`, every block checked
/// against its hash and its positions.
pub fn load(registry: &Registry, log: &LogRef) -> Result<LogView, SnapshotFormatError> {
    let bad = |why: String| SnapshotFormatError::BadHeader(format!("log: {why}"));
    if log.end < log.start || log.end - log.start > LOG_CARRIED_BYTES_MAX {
        return Err(bad(format!("positions {}..{}", log.start, log.end)));
    }
    let first = log.start / LOG_BLOCK_BYTES;
    let wanted = if log.end == log.start {
        0
    } else {
        (log.end - 1) / LOG_BLOCK_BYTES - first + 1
    };
    if log.blocks.len() as u64 != wanted {
        return Err(bad(format!(
            "{} blocks for positions {}..{}",
            log.blocks.len(),
            log.start,
            log.end
        )));
    }
    let mut chunks: Vec<Chunk> = Vec::new();
    let mut at = log.start;
    for (i, hash) in log.blocks.iter().enumerate() {
        let block_end = ((first + i as u64 + 1) * LOG_BLOCK_BYTES).min(log.end);
        // A block's records cost at most their header each, one per byte.
        let size = registry
            .size_of(hash)
            .map_err(|e| bad(format!("block {hash}: {e}")))?;
        if size > (block_end - at) * (1 + RECORD_HEADER_BYTES as u64) {
            return Err(bad(format!("block {hash} is {size} bytes")));
        }
        let bytes = registry
            .get(hash)
            .map_err(|e| bad(format!("block {hash}: {e}")))?;
        if Sha256::of(&bytes) != *hash {
            return Err(bad(format!("block {hash} does not match its hash")));
        }
        let mut rest: &[u8] = &bytes;
        while !rest.is_empty() {
            if rest.len() < RECORD_HEADER_BYTES {
                return Err(bad(format!("block {hash}: a torn record")));
            }
            let stream = stream_of(rest[0], rest[1])
                .ok_or_else(|| bad(format!("block {hash}: stream {}", rest[0])))?;
            let len = u32::from_le_bytes([rest[2], rest[3], rest[4], rest[5]]) as usize;
            let data = rest
                .get(RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + len)
                .ok_or_else(|| bad(format!("block {hash}: a record past its end")))?;
            if len == 0 || at + len as u64 > block_end {
                return Err(bad(format!("block {hash}: past position {block_end}")));
            }
            at += len as u64;
            match chunks.last_mut() {
                Some(last) if last.stream == stream && !matches!(stream, Stream::Log(_)) => {
                    last.data.extend_from_slice(data)
                }
                _ => chunks.push(Chunk {
                    stream,
                    data: data.to_vec(),
                }),
            }
            rest = &rest[RECORD_HEADER_BYTES + len..];
        }
        if at != block_end {
            return Err(bad(format!("block {hash} ends at {at}, not {block_end}")));
        }
    }
    Ok(LogView {
        start: log.start,
        chunks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(start: u64, parts: &[(Stream, usize)]) -> LogView {
        LogView {
            start,
            chunks: parts
                .iter()
                .enumerate()
                .map(|(i, (s, n))| Chunk {
                    stream: *s,
                    data: vec![b'a' + i as u8; *n],
                })
                .collect(),
        }
    }

    fn bytes_of(v: &LogView) -> Vec<(Stream, u8)> {
        v.chunks
            .iter()
            .flat_map(|c| c.data.iter().map(move |b| (c.stream, *b)))
            .collect()
    }

    #[test]
    fn blocks_round_trip_and_split_at_fixed_positions() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).unwrap();
        let v = view(
            100_000,
            &[
                (Stream::Stdout, 70_000),
                (Stream::Log(3), 10),
                (Stream::Stderr, 100_000),
            ],
        );
        let (log, blobs) = store(&registry, &v).unwrap();
        assert_eq!(log.end, 100_000 + 170_010);
        assert_eq!(blobs.len(), log.blocks.len());
        let back = load(&registry, &log).unwrap();
        assert_eq!(back.start, v.start);
        assert_eq!(bytes_of(&back), bytes_of(&v));
        // More output later changes only the last block.
        let mut more = v.clone();
        more.chunks.push(Chunk {
            stream: Stream::Stdout,
            data: b"tail".to_vec(),
        });
        let (log2, _) = store(&registry, &more).unwrap();
        let shared = log
            .blocks
            .iter()
            .zip(&log2.blocks)
            .filter(|(a, b)| a == b)
            .count();
        assert_eq!(shared, log.blocks.len() - 1);
    }

    #[test]
    fn a_forged_log_reference_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).unwrap();
        let v = view(0, &[(Stream::Stdout, 1000)]);
        let (log, _) = store(&registry, &v).unwrap();
        // Claims more output than its blocks hold.
        let mut longer = log.clone();
        longer.end += 10;
        assert!(load(&registry, &longer).is_err());
        // Too much to carry.
        let mut huge = log.clone();
        huge.end = LOG_CARRIED_BYTES_MAX + 1;
        assert!(load(&registry, &huge).is_err());
        // A block of another range.
        let other = view(0, &[(Stream::Stdout, 999)]);
        let (other_log, _) = store(&registry, &other).unwrap();
        let mut swapped = log.clone();
        swapped.blocks = other_log.blocks;
        assert!(load(&registry, &swapped).is_err());
        // A block with an unknown stream.
        let evil = vec![9u8, 0, 1, 0, 0, 0, b'x'];
        let hash = registry.put(&evil).unwrap();
        let forged = LogRef {
            start: 0,
            end: 1,
            blocks: vec![hash],
        };
        assert!(load(&registry, &forged).is_err());
    }
}
