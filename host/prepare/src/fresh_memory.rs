//! Where a fresh instance's linear memory may hold non-zero bytes.
//!
//! A restore writes a snapshot's pages into a freshly made instance and must zero every page
//! the snapshot does not list but the instance holds non-zero. Checking each page below the
//! initial memory size reads it, and reading a page a fresh instance never touched costs a
//! page fault (0.5 µs each: 135 µs of a 0.8 ms restore at 1 MiB). By the Wasm semantics, a
//! fresh memory is zero except where active data segments wrote it at instantiation (and
//! where a start function wrote, which cannot be known without running it). This module reads
//! those ranges from the module, so a restore checks only them.
//!
//! Preparation copies the data section and adds no start function, so the ranges of a module
//! as given are those of each prepared variant (`tests::fresh_memory_ranges_survive_preparation`).

use std::ops::Range;
use wasmparser::{DataKind, Operator, Parser, Payload, TypeRef};

/// The byte ranges of memory 0 that a fresh instance of `wasm` may hold non-zero (sorted,
/// merged), or `None` when they cannot be known from the module alone: a start function (it
/// may write anything), an imported memory (its contents are the host's), a data segment whose
/// offset is not a constant, more than one memory, or a module that does not parse.
pub fn fresh_memory_nonzero(wasm: &[u8]) -> Option<Vec<Range<u64>>> {
    let mut ranges: Vec<Range<u64>> = Vec::new();
    let mut memories = 0u32;
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.ok()? {
            Payload::StartSection { .. } => return None,
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    if matches!(import.ok()?.ty, TypeRef::Memory(_)) {
                        return None;
                    }
                }
            }
            Payload::MemorySection(reader) => memories = memories.checked_add(reader.count())?,
            Payload::DataSection(reader) => {
                for data in reader {
                    let data = data.ok()?;
                    let DataKind::Active {
                        memory_index,
                        offset_expr,
                    } = data.kind
                    else {
                        continue; // passive: written only by `memory.init`, at run time
                    };
                    if memory_index != 0 {
                        return None;
                    }
                    if data.data.is_empty() {
                        continue;
                    }
                    let mut ops = offset_expr.get_operators_reader();
                    let start = match ops.read().ok()? {
                        Operator::I32Const { value } => u64::from(value as u32),
                        Operator::I64Const { value } => value as u64,
                        _ => return None,
                    };
                    if !matches!(ops.read().ok()?, Operator::End) {
                        return None; // an extended constant expression
                    }
                    let end = start.checked_add(data.data.len() as u64)?;
                    ranges.push(start..end);
                }
            }
            Payload::End(_) => break,
            _ => {}
        }
    }
    if memories > 1 {
        return None;
    }
    ranges.sort_unstable_by_key(|r| r.start);
    let mut merged: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match merged.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    Some(merged)
}
