//! Keeping Asyncify away from indirect calls that cannot block.
//!
//! With an only-list, Binaryen 116 instruments *every* indirect call inside a listed function
//! (it cannot tell where the call goes). Rust reaches `main` through a `dyn Fn`, so `main` is
//! listed, and every trait-object call in `main`'s hot loops paid for instrumentation: measured
//! +14–21% CPU on the benchmark guest although those calls can never unwind.
//!
//! The call-graph analysis knows which indirect call *types* can reach a blocking import. Before
//! Binaryen runs, each `call_indirect (type T) (table X)` of a non-blocking type inside an
//! instrumented function is replaced by `call $tramp`, where `$tramp` is a new, uninstrumented
//! function `(params of T ++ index) -> results of T` whose body is exactly
//! `local.get 0 .. local.get n; call_indirect (type T) (table X)`. Asyncify never instruments a
//! direct call to an uninstrumented function. After Binaryen, [`inline_back`] replaces every
//! `call $tramp` by the trampoline's own `call_indirect` instruction (copied from Binaryen's
//! output, so its type and table indices are the output's): the operand stack is the same, so
//! the semantics are identical, and the instrumented function pays nothing for that call. The
//! trampolines stay in the module as dead code (removing them would shift function indices).
//!
//! With `asyncify_asserts`, calls are left going through the trampolines, which Binaryen gives
//! assertions: if the analysis were ever wrong, an unwind through such a call traps.

use super::callgraph::CallGraph;
use super::PrepareError;
use std::collections::{BTreeMap, HashMap};
use wasm_encoder::Encode;
use wasmparser::types::Types;
use wasmparser::{BinaryReader, FunctionBody, Operator, Parser, Payload, ValType};

const TYPE_SECTION: u8 = 1;
const FUNCTION_SECTION: u8 = 3;
const CODE_SECTION: u8 = 10;

/// Trampolines added to a module.
#[derive(Debug, Default)]
pub(crate) struct Added {
    /// Function index of the first trampoline; the others follow.
    pub first: u32,
    /// Number of trampolines.
    pub count: u32,
    /// Number of call sites redirected to them.
    pub call_sites: usize,
}

fn err(e: wasmparser::BinaryReaderError) -> PrepareError {
    PrepareError::invalid(&e)
}

fn val_byte(v: &ValType) -> Option<u8> {
    match v {
        ValType::I32 => Some(0x7f),
        ValType::I64 => Some(0x7e),
        ValType::F32 => Some(0x7d),
        ValType::F64 => Some(0x7c),
        ValType::V128 => Some(0x7b),
        ValType::Ref(_) => None,
    }
}

/// Splits a vector section into (count, entries bytes).
fn split_count(data: &[u8], offset: usize) -> Result<(u32, &[u8]), PrepareError> {
    let mut r = BinaryReader::new(data, offset);
    let count = r.read_var_u32().map_err(err)?;
    let rest = data.get(r.current_position()..).unwrap_or_default();
    Ok((count, rest))
}

/// Splits a code section's data into the bodies (without their size prefix).
fn bodies(data: &[u8], offset: usize) -> Result<Vec<(usize, &[u8])>, PrepareError> {
    let mut r = BinaryReader::new(data, offset);
    let count = r.read_var_u32().map_err(err)?;
    let mut out = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let size = r.read_var_u32().map_err(err)? as usize;
        let start = r.original_position();
        out.push((start, r.read_bytes(size).map_err(err)?));
    }
    Ok(out)
}

/// Operators of a body with their start and end offsets (relative to the body).
fn ops_with_ranges(body: &[u8]) -> Result<Vec<(Operator<'_>, usize, usize)>, PrepareError> {
    let fb = FunctionBody::new(BinaryReader::new(body, 0));
    let mut reader = fb.get_operators_reader().map_err(err)?;
    let mut ops: Vec<(Operator<'_>, usize, usize)> = Vec::new();
    while !reader.eof() {
        let (op, start) = reader.read_with_offset().map_err(err)?;
        if let Some(last) = ops.last_mut() {
            last.2 = start;
        }
        ops.push((op, start, body.len()));
    }
    Ok(ops)
}

/// Replaces byte ranges of `body` (sorted, disjoint) and returns the new body.
fn splice(body: &[u8], edits: &[(usize, usize, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + edits.len() * 4);
    let mut at = 0;
    for (start, end, bytes) in edits {
        out.extend_from_slice(&body[at..*start]);
        out.extend_from_slice(bytes);
        at = *end;
    }
    out.extend_from_slice(&body[at..]);
    out
}

fn encode_code_section(bodies: &[Vec<u8>]) -> Vec<u8> {
    let mut data = Vec::new();
    (bodies.len() as u32).encode(&mut data);
    for b in bodies {
        (b.len() as u32).encode(&mut data);
        data.extend_from_slice(b);
    }
    data
}

/// Redirects the non-blocking indirect calls of instrumented functions to new trampolines.
/// Returns the new module and what was added (count 0: `wasm` unchanged).
pub(crate) fn insert(
    wasm: &[u8],
    graph: &CallGraph,
    types: &Types,
) -> Result<(Vec<u8>, Added), PrepareError> {
    let tref = types.as_ref();
    let first = graph.total_funcs;
    // (type index, table) -> trampoline number.
    let mut tramps: BTreeMap<(u32, u32), u32> = BTreeMap::new();
    let mut new_bodies: HashMap<usize, Vec<u8>> = HashMap::new();
    let mut call_sites = 0usize;
    let mut sections: Vec<(u8, std::ops::Range<usize>)> = Vec::new();

    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(err)?;
        if let Some((id, range)) = payload.as_section() {
            sections.push((id, range));
        }
        if let Payload::CodeSectionStart { range, .. } = payload {
            let data = wasm.get(range.clone()).unwrap_or_default();
            for (k, (_, body)) in bodies(data, range.start)?.into_iter().enumerate() {
                let func = graph.imported_funcs as usize + k;
                if !graph.instrument.get(func).copied().unwrap_or(false) {
                    continue;
                }
                let mut edits = Vec::new();
                for (op, start, end) in ops_with_ranges(body)? {
                    let Operator::CallIndirect {
                        type_index,
                        table_index,
                    } = op
                    else {
                        continue;
                    };
                    if graph
                        .indirect_may_block
                        .get(&type_index)
                        .copied()
                        .unwrap_or(true)
                    {
                        continue;
                    }
                    let Some(ft) = super::validate::func_type_at(types, type_index) else {
                        continue;
                    };
                    if ft
                        .params()
                        .iter()
                        .chain(ft.results())
                        .any(|v| val_byte(v).is_none())
                    {
                        continue;
                    }
                    let next = tramps.len() as u32;
                    let n = *tramps.entry((type_index, table_index)).or_insert(next);
                    let mut call = vec![0x10];
                    (first + n).encode(&mut call);
                    edits.push((start, end, call));
                }
                if !edits.is_empty() {
                    call_sites += edits.len();
                    new_bodies.insert(k, splice(body, &edits));
                }
            }
        }
    }
    if tramps.is_empty() {
        return Ok((wasm.to_vec(), Added::default()));
    }

    // New types (one per trampoline), function entries and bodies.
    let type_base = tref.core_type_count_in_module();
    let mut type_entries = Vec::new();
    let mut func_entries = Vec::new();
    let mut tramp_bodies = Vec::new();
    for (k, (&(type_index, table), _)) in tramps.iter().enumerate() {
        let ft = super::validate::func_type_at(types, type_index)
            .ok_or_else(|| PrepareError::Encode("trampoline type vanished".to_string()))?;
        let index_byte = if table < tref.table_count() && tref.table_at(table).table64 {
            0x7e
        } else {
            0x7f
        };
        let params: Vec<u8> = ft
            .params()
            .iter()
            .filter_map(val_byte)
            .chain([index_byte])
            .collect();
        let results: Vec<u8> = ft.results().iter().filter_map(val_byte).collect();
        type_entries.push(0x60);
        (params.len() as u32).encode(&mut type_entries);
        type_entries.extend_from_slice(&params);
        (results.len() as u32).encode(&mut type_entries);
        type_entries.extend_from_slice(&results);
        (type_base + k as u32).encode(&mut func_entries);
        let mut body = vec![0x00]; // no locals
        for p in 0..params.len() as u32 {
            body.push(0x20);
            p.encode(&mut body);
        }
        body.push(0x11);
        type_index.encode(&mut body);
        table.encode(&mut body);
        body.push(0x0b);
        tramp_bodies.push(body);
    }

    let count = tramps.len() as u32;
    let mut module = wasm_encoder::Module::new();
    for (id, range) in sections {
        let data = wasm.get(range.clone()).unwrap_or_default();
        let new_data = match id {
            TYPE_SECTION | FUNCTION_SECTION => {
                let (n, rest) = split_count(data, range.start)?;
                let mut d = Vec::new();
                (n + count).encode(&mut d);
                d.extend_from_slice(rest);
                d.extend_from_slice(if id == TYPE_SECTION {
                    &type_entries
                } else {
                    &func_entries
                });
                d
            }
            CODE_SECTION => {
                let mut all: Vec<Vec<u8>> = bodies(data, range.start)?
                    .into_iter()
                    .enumerate()
                    .map(|(k, (_, b))| new_bodies.remove(&k).unwrap_or_else(|| b.to_vec()))
                    .collect();
                all.extend(tramp_bodies.iter().cloned());
                encode_code_section(&all)
            }
            _ => data.to_vec(),
        };
        module.section(&wasm_encoder::RawSection {
            id,
            data: &new_data,
        });
    }
    Ok((
        module.finish(),
        Added {
            first,
            count,
            call_sites,
        },
    ))
}

/// In Binaryen's `output`, replaces every call to a trampoline (given by its output function
/// index) by the trampoline's own `call_indirect`. Trampolines whose body is not exactly
/// `local.get*; call_indirect; end` are left alone (still correct, only slower).
pub(crate) fn inline_back(output: &[u8], trampolines: &[u32]) -> Result<Vec<u8>, PrepareError> {
    let enc =
        |e: wasmparser::BinaryReaderError| PrepareError::Encode(format!("Binaryen output: {e}"));
    let mut imported = 0u32;
    let mut sections: Vec<(u8, std::ops::Range<usize>)> = Vec::new();
    let mut code: Option<std::ops::Range<usize>> = None;
    for payload in Parser::new(0).parse_all(output) {
        let payload = payload.map_err(enc)?;
        if let Some((id, range)) = payload.as_section() {
            sections.push((id, range.clone()));
            if id == CODE_SECTION {
                code = Some(range);
            }
        }
        if let Payload::ImportSection(r) = payload {
            for i in r.into_imports() {
                if matches!(i.map_err(enc)?.ty, wasmparser::TypeRef::Func(_)) {
                    imported += 1;
                }
            }
        }
    }
    let Some(code) = code else {
        return Ok(output.to_vec());
    };
    let data = output.get(code.clone()).unwrap_or_default();
    let all = bodies(data, code.start)?;

    // Trampoline index -> the bytes of its call_indirect.
    let mut replacement: HashMap<u32, Vec<u8>> = HashMap::new();
    for &t in trampolines {
        let Some((_, body)) = t.checked_sub(imported).and_then(|k| all.get(k as usize)) else {
            continue;
        };
        let ops = ops_with_ranges(body)?;
        let shape_ok = ops.len() >= 2
            && ops[..ops.len() - 2]
                .iter()
                .enumerate()
                .all(|(i, (op, _, _))| matches!(op, Operator::LocalGet { local_index } if *local_index as usize == i))
            && matches!(ops[ops.len() - 2].0, Operator::CallIndirect { .. })
            && matches!(ops[ops.len() - 1].0, Operator::End);
        if shape_ok {
            let (_, s, e) = &ops[ops.len() - 2];
            replacement.insert(t, body[*s..*e].to_vec());
        }
    }
    if replacement.is_empty() {
        return Ok(output.to_vec());
    }
    let mut new_bodies = Vec::with_capacity(all.len());
    for (_, body) in &all {
        let mut edits = Vec::new();
        for (op, start, end) in ops_with_ranges(body)? {
            if let Operator::Call { function_index } = op {
                if let Some(bytes) = replacement.get(&function_index) {
                    edits.push((start, end, bytes.clone()));
                }
            }
        }
        new_bodies.push(if edits.is_empty() {
            body.to_vec()
        } else {
            splice(body, &edits)
        });
    }
    let new_code = encode_code_section(&new_bodies);
    let mut module = wasm_encoder::Module::new();
    for (id, range) in sections {
        if id == CODE_SECTION {
            module.section(&wasm_encoder::RawSection {
                id,
                data: &new_code,
            });
        } else {
            let data = output.get(range).unwrap_or_default();
            module.section(&wasm_encoder::RawSection { id, data });
        }
    }
    Ok(module.finish())
}
