//! Function and global names of a prepared module.
//!
//! Preparation reports functions by their *display* names: the guest's own names, made unique
//! (a name used by one function is kept, a duplicated one gets `$<index>`, an unnamed function
//! is `shoal$f<index>`). An instrumented module's name section is rewritten with the module,
//! function and global names only: local and label names would be wrong after Asyncify adds
//! locals and frames, and the other subsections are dropped with them.

use super::sections::sections;
use super::PrepareError;
use std::collections::{HashMap, HashSet};
use wasm_encoder::{NameMap, NameSection};
use wasmparser::{KnownCustom, Name};

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

/// The name section of a prepared module: the module name, the display names of the functions
/// and the guest's names of the globals (with the names of what Asyncify added).
pub(crate) fn section(names: &Names) -> NameSection {
    let mut section = NameSection::new();
    if let Some(m) = &names.module {
        section.module(m);
    }
    let mut fmap = NameMap::new();
    for (i, n) in names.functions.iter().enumerate() {
        fmap.append(i as u32, n);
    }
    section.functions(&fmap);
    if names.globals.iter().any(Option::is_some) {
        let mut gmap = NameMap::new();
        for (i, n) in names.globals.iter().enumerate() {
            if let Some(n) = n {
                gmap.append(i as u32, n);
            }
        }
        section.globals(&gmap);
    }
    section
}
