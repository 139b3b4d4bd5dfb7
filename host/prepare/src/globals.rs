//! Step 4 of preparation: make every mutable global reachable from the host (Wizer's technique).
//!
//! wasmtime can only read and write a global through an export (short of the slow
//! `guest_debug` mode), and compilers do not export `__stack_pointer`; Asyncify adds
//! `__asyncify_state` and `__asyncify_data` without exporting them either. A snapshot needs all
//! of them, so the export section is rebuilt with one extra export per mutable global that is not
//! already exported. Only the export section changes; every other section is copied byte for byte
//! (see [`super::sections::assemble`]), so no index moves.

use super::PrepareError;
use std::collections::{HashMap, HashSet};
use wasm_encoder::{ExportKind, ExportSection};
use wasmparser::{ExternalKind, Payload, TypeRef};

/// Prefix of the exports added for mutable globals: `shoal$global$<global index>`.
pub const GLOBAL_EXPORT_PREFIX: &str = "shoal$global$";

/// How the host reaches one mutable global of a prepared module.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GlobalExport {
    /// Index of the global in the module's global index space (imports first).
    pub global_index: u32,
    /// Name of the export to use (an existing export, or `shoal$global$<index>`).
    pub export_name: String,
    /// The global's value type in text (`i32`, `i64`, `f64`, `v128`, `funcref`, ...).
    pub ty: String,
    /// The global is imported (its value is owned by whoever provides the import).
    pub imported: bool,
    /// The export was added by preparation (false: the module already exported it).
    pub added: bool,
    /// The global's name from the name section (e.g. `__stack_pointer`), if any.
    pub debug_name: Option<String>,
}

/// The export section to write (None: keep the module's own) and the global map.
pub(crate) struct ExportPlan {
    /// Replacement export section, present only when an export was added.
    pub section: Option<ExportSection>,
    /// One entry per mutable global, by global index.
    pub globals: Vec<GlobalExport>,
}

fn encode_kind(kind: ExternalKind) -> Result<ExportKind, PrepareError> {
    Ok(match kind {
        ExternalKind::Func => ExportKind::Func,
        ExternalKind::Table => ExportKind::Table,
        ExternalKind::Memory => ExportKind::Memory,
        ExternalKind::Global => ExportKind::Global,
        ExternalKind::Tag => ExportKind::Tag,
        ExternalKind::FuncExact => {
            return Err(PrepareError::Encode(
                "exact function exports cannot be re-encoded".to_string(),
            ))
        }
    })
}

/// Plans the exports of `wasm` so that every mutable global is exported.
/// `global_names` gives the debug name of each global index, if known.
pub(crate) fn plan(
    wasm: &[u8],
    global_names: &[Option<String>],
) -> Result<ExportPlan, PrepareError> {
    // (index, type text, imported) of every mutable global.
    let mut mutable: Vec<(u32, String, bool)> = Vec::new();
    let mut global_count = 0u32;
    let mut exports: Vec<(String, ExternalKind, u32)> = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        match payload.map_err(|e| PrepareError::invalid(&e))? {
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    let import = import.map_err(|e| PrepareError::invalid(&e))?;
                    if let TypeRef::Global(g) = import.ty {
                        if g.mutable {
                            mutable.push((global_count, g.content_type.to_string(), true));
                        }
                        global_count += 1;
                    }
                }
            }
            Payload::GlobalSection(reader) => {
                for global in reader {
                    let global = global.map_err(|e| PrepareError::invalid(&e))?;
                    if global.ty.mutable {
                        mutable.push((global_count, global.ty.content_type.to_string(), false));
                    }
                    global_count += 1;
                }
            }
            Payload::ExportSection(reader) => {
                for export in reader {
                    let export = export.map_err(|e| PrepareError::invalid(&e))?;
                    exports.push((export.name.to_string(), export.kind, export.index));
                }
            }
            _ => {}
        }
    }

    let mut existing: HashMap<u32, &str> = HashMap::new();
    for (name, kind, index) in &exports {
        if *kind == ExternalKind::Global {
            existing.entry(*index).or_insert(name.as_str());
        }
    }
    let mut taken: HashSet<String> = exports.iter().map(|(n, _, _)| n.clone()).collect();
    let mut globals = Vec::with_capacity(mutable.len());
    let mut added: Vec<(String, u32)> = Vec::new();
    for (index, ty, imported) in mutable {
        let debug_name = global_names.get(index as usize).cloned().flatten();
        let (export_name, was_added) = match existing.get(&index) {
            Some(name) => (name.to_string(), false),
            None => {
                let base = format!("{GLOBAL_EXPORT_PREFIX}{index}");
                let mut name = base.clone();
                let mut k = 1u32;
                while taken.contains(&name) {
                    name = format!("{base}${k}");
                    k += 1;
                }
                taken.insert(name.clone());
                added.push((name.clone(), index));
                (name, true)
            }
        };
        globals.push(GlobalExport {
            global_index: index,
            export_name,
            ty,
            imported,
            added: was_added,
            debug_name,
        });
    }

    let section = if added.is_empty() {
        None
    } else {
        let mut section = ExportSection::new();
        for (name, kind, index) in &exports {
            section.export(name, encode_kind(*kind)?, *index);
        }
        for (name, index) in &added {
            section.export(name, ExportKind::Global, *index);
        }
        Some(section)
    };
    Ok(ExportPlan { section, globals })
}
