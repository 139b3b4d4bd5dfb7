//! Function and global names across the Binaryen round trip.
//!
//! Binaryen's Asyncify selects functions by *name*, and its list parser (Binaryen 116,
//! `src/passes/Asyncify.cpp` + `src/support/string.h`) cannot carry arbitrary names:
//!
//! * a list (inline or `@file`) is `String::trim`med (trailing whitespace only) and split on
//!   `,` — **not** on newlines: a one-name-per-line file is read as a single name;
//! * pieces are re-joined while `(`, `<`, `[`, `{` are unbalanced, so `Box<F,A>` survives, but
//!   a name with an unbalanced bracket, such as the demangled `fn() -> T`, ends in
//!   `Fatal: Asyncify: failed to parse lists`, which aborts the host process (a C++ exception
//!   the `wasm-opt` crate does not catch in its pass runner);
//! * an entry containing `*` is a wildcard pattern, and Binaryen's matcher can throw
//!   `std::out_of_range` on some pattern/name pairs, which aborts the host process;
//! * names are compared after Binaryen's `\xx` escaping of non-identifier bytes, which mangles
//!   bytes >= 0x80 (signed `char`), so UTF-8 names come back corrupted in the output.
//!
//! So Binaryen never sees the guest's names. Preparation gives it a name section in which every
//! function is `shoal$i<index>` and every global `shoal$g<index>` (identifier characters only,
//! unique, no collision with Asyncify's own `asyncify_*` / `__asyncify_*` names), and rewrites
//! the output's name section back to the *display* names afterwards, matching by those internal
//! names (not by position). Display names are the guest's own names, made unique: a name used by
//! one function is kept, a duplicated one gets `$<index>`, an unnamed function is
//! `shoal$f<index>`.
//!
//! Only module, function and global names are carried over; local, label, type, table, memory,
//! element and data names are dropped from an instrumented module (Asyncify rewrites locals, so
//! their names would be wrong).

use super::sections::{assemble, sections};
use super::PrepareError;
use std::collections::{HashMap, HashSet};
use wasm_encoder::{NameMap, NameSection, Section};
use wasmparser::{KnownCustom, Name};

/// Prefix of the function names Binaryen sees.
const INTERNAL_FUNC: &str = "shoal$i";
/// Prefix of the global names Binaryen sees.
const INTERNAL_GLOBAL: &str = "shoal$g";

/// The names of a module, as preparation reports and writes them.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    /// The module's own name, if its name section has one.
    pub module: Option<String>,
    /// Unique display name of every function, by function index.
    pub functions: Vec<String>,
    /// The guest's name of each global, by global index.
    pub globals: Vec<Option<String>>,
}

/// The name Binaryen sees for function `index`.
pub(crate) fn internal_function_name(index: u32) -> String {
    format!("{INTERNAL_FUNC}{index}")
}

fn internal_global_name(index: u32) -> String {
    format!("{INTERNAL_GLOBAL}{index}")
}

/// Inverse of the internal naming: `shoal$i12` → 12. Strict, so `shoal$i012` is not 12.
fn parse_internal(name: &str, prefix: &str) -> Option<u32> {
    let digits = name.strip_prefix(prefix)?;
    let n: u32 = digits.parse().ok()?;
    (n.to_string() == digits).then_some(n)
}

/// Reads the function and global names of `wasm` and makes the function names unique.
/// A malformed name section is ignored (names are debug information only).
pub(crate) fn read(
    wasm: &[u8],
    total_funcs: u32,
    total_globals: u32,
) -> Result<Names, PrepareError> {
    let mut module = None;
    let mut raw_funcs: HashMap<u32, String> = HashMap::new();
    let mut globals: Vec<Option<String>> = vec![None; total_globals as usize];
    for s in sections(wasm)? {
        let Some(custom) = &s.custom else { continue };
        let KnownCustom::Name(reader) = custom.as_known() else {
            continue;
        };
        for sub in reader {
            let Ok(sub) = sub else { break };
            match sub {
                Name::Module { name, .. } => module = Some(name.to_string()),
                Name::Function(map) => {
                    for naming in map.into_iter().flatten() {
                        if naming.index < total_funcs {
                            raw_funcs.insert(naming.index, naming.name.to_string());
                        }
                    }
                }
                Name::Global(map) => {
                    for naming in map.into_iter().flatten() {
                        if let Some(slot) = globals.get_mut(naming.index as usize) {
                            *slot = Some(naming.name.to_string());
                        }
                    }
                }
                _ => {}
            }
        }
    }
    Ok(Names {
        module,
        functions: unique_names(total_funcs, &raw_funcs),
        globals,
    })
}

/// Keeps names used once, suffixes duplicates with `$<index>`, names the unnamed `shoal$f<index>`.
fn unique_names(total: u32, raw: &HashMap<u32, String>) -> Vec<String> {
    let mut uses: HashMap<&str, usize> = HashMap::new();
    for name in raw.values() {
        *uses.entry(name.as_str()).or_default() += 1;
    }
    let mut taken: HashSet<String> = raw
        .values()
        .filter(|n| !n.is_empty() && uses.get(n.as_str()) == Some(&1))
        .cloned()
        .collect();
    (0..total)
        .map(|i| match raw.get(&i) {
            Some(n) if !n.is_empty() && uses.get(n.as_str()) == Some(&1) => n.clone(),
            other => {
                let base = match other {
                    Some(n) if !n.is_empty() => format!("{n}${i}"),
                    _ => format!("shoal$f{i}"),
                };
                let mut candidate = base.clone();
                let mut k = 1u32;
                while taken.contains(&candidate) {
                    candidate = format!("{base}${k}");
                    k += 1;
                }
                taken.insert(candidate.clone());
                candidate
            }
        })
        .collect()
}

/// Custom sections that must not reach Binaryen: the name section (replaced by internal names)
/// and DWARF (`.debug_*`), which would be stale after instrumentation and which the wasm-opt
/// crate built without its `dwarf` feature cannot rewrite.
pub(crate) fn dropped_before_binaryen(name: &str) -> bool {
    name == "name" || name.starts_with(".debug_")
}

/// The module Binaryen is given: `wasm` with internal names and without DWARF.
pub(crate) fn binaryen_input(
    wasm: &[u8],
    total_funcs: u32,
    total_globals: u32,
) -> Result<Vec<u8>, PrepareError> {
    let mut funcs = NameMap::new();
    for i in 0..total_funcs {
        funcs.append(i, &internal_function_name(i));
    }
    let mut globals = NameMap::new();
    for i in 0..total_globals {
        globals.append(i, &internal_global_name(i));
    }
    let mut section = NameSection::new();
    section.functions(&funcs);
    section.globals(&globals);
    // The guest's name section is dropped wherever it was and the internal one appended last,
    // after the code it names (where Binaryen's reader expects it).
    let mut bytes = assemble(wasm, None, None, &dropped_before_binaryen)?;
    section.append_to(&mut bytes);
    Ok(bytes)
}

/// Output function index of each internal function index in `wanted`, read from the name
/// section of Binaryen's `output` (Binaryen keeps function order, but this does not rely on it).
pub(crate) fn output_function_indices(
    output: &[u8],
    wanted: std::ops::Range<u32>,
) -> Result<Vec<u32>, PrepareError> {
    let mut found = Vec::new();
    for s in sections(output)? {
        let Some(custom) = &s.custom else { continue };
        let KnownCustom::Name(reader) = custom.as_known() else {
            continue;
        };
        for sub in reader.into_iter().flatten() {
            if let Name::Function(map) = sub {
                for naming in map.into_iter().flatten() {
                    if parse_internal(naming.name, INTERNAL_FUNC)
                        .is_some_and(|i| wanted.contains(&i))
                    {
                        found.push(naming.index);
                    }
                }
            }
        }
    }
    Ok(found)
}

/// The name section for Binaryen's `output`: internal names mapped back to display names,
/// names Binaryen added (`asyncify_*`) kept.
pub(crate) fn restored_section(output: &[u8], names: &Names) -> Result<NameSection, PrepareError> {
    let mut funcs: Vec<(u32, String)> = Vec::new();
    let mut globals: Vec<(u32, String)> = Vec::new();
    for s in sections(output)? {
        let Some(custom) = &s.custom else { continue };
        let KnownCustom::Name(reader) = custom.as_known() else {
            continue;
        };
        for sub in reader {
            let sub =
                sub.map_err(|e| PrepareError::Encode(format!("Binaryen name section: {e}")))?;
            match sub {
                Name::Function(map) => {
                    for naming in map.into_iter().flatten() {
                        let name = match parse_internal(naming.name, INTERNAL_FUNC) {
                            Some(orig) => names.functions.get(orig as usize).cloned(),
                            None => Some(naming.name.to_string()),
                        };
                        if let Some(name) = name {
                            funcs.push((naming.index, name));
                        }
                    }
                }
                Name::Global(map) => {
                    for naming in map.into_iter().flatten() {
                        let name = match parse_internal(naming.name, INTERNAL_GLOBAL) {
                            Some(orig) => names.globals.get(orig as usize).cloned().flatten(),
                            None => Some(naming.name.to_string()),
                        };
                        if let Some(name) = name {
                            globals.push((naming.index, name));
                        }
                    }
                }
                _ => {}
            }
        }
    }
    let mut section = NameSection::new();
    if let Some(m) = &names.module {
        section.module(m);
    }
    // Name maps must be sorted by index.
    funcs.sort_by_key(|(i, _)| *i);
    globals.sort_by_key(|(i, _)| *i);
    let mut fmap = NameMap::new();
    for (i, n) in &funcs {
        fmap.append(*i, n);
    }
    section.functions(&fmap);
    if !globals.is_empty() {
        let mut gmap = NameMap::new();
        for (i, n) in &globals {
            gmap.append(*i, n);
        }
        section.globals(&gmap);
    }
    Ok(section)
}
