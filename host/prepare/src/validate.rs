//! Step 1 of preparation: validate the module and summarise its interface.
//!
//! Validation uses the exact feature set wasmtime 46 enables by default (so a module accepted
//! here is one wasmtime would accept), then rejects the valid modules Shoal cannot snapshot.

use super::PrepareError;
use wasmparser::types::Types;
use wasmparser::{
    CompositeInnerType, ExternalKind, FuncType, Parser, Payload, TypeRef, Validator, WasmFeatures,
};

/// Module name of the Shoal host ABI, version 1.
pub const SHOAL_ABI_V1_MODULE: &str = "shoal_v1";

/// The WebAssembly features wasmtime 46 enables by default, built the way Shoal builds it
/// (workspace `Cargo.toml`: no `gc`, `threads` or `component-model` Cargo features).
///
/// This mirrors `wasmtime::Config::features()` in wasmtime 46.0.3: the WebAssembly 2.0 set plus
/// multi-memory, relaxed SIMD, tail calls, extended const and memory64. `GC_TYPES` (externref)
/// and `THREADS` are on in wasmtime only with its `gc` / `threads` Cargo features, which Shoal
/// does not enable; the GC proposal, typed function references, exceptions and stack switching
/// are off by default anyway. Modules using any of those are [`PrepareError::Invalid`] here,
/// exactly as wasmtime would refuse them (a test checks the two agree). If the workspace's
/// wasmtime features change, change this set too.
pub fn wasm_features() -> WasmFeatures {
    (WasmFeatures::WASM2
        | WasmFeatures::MULTI_MEMORY
        | WasmFeatures::RELAXED_SIMD
        | WasmFeatures::TAIL_CALL
        | WasmFeatures::EXTENDED_CONST
        | WasmFeatures::MEMORY64)
        .difference(WasmFeatures::GC_TYPES)
}

/// The kind of an imported or exported item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExternKind {
    /// A function.
    Func,
    /// A table.
    Table,
    /// A linear memory.
    Memory,
    /// A global.
    Global,
    /// An exception tag.
    Tag,
}

/// One import of a module, as shown to a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportSummary {
    /// Import module name (e.g. `shoal_v1`, `wasi_snapshot_preview1`).
    pub module: String,
    /// Import field name.
    pub name: String,
    /// What kind of item is imported.
    pub kind: ExternKind,
    /// Its type in text, e.g. `func (i32, i32) -> i32`, `memory 17 pages`, `global mut i32`.
    pub ty: String,
}

/// One export of a module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSummary {
    /// Export name.
    pub name: String,
    /// What kind of item is exported.
    pub kind: ExternKind,
    /// Index of the item in its index space.
    pub index: u32,
}

/// What [`validate`] learned about a module: enough for a CLI to describe it and for the
/// host to check it links against the ABI before spending time on preparation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleSummary {
    /// Every import, in import-section order.
    pub imports: Vec<ImportSummary>,
    /// Every export, in export-section order.
    pub exports: Vec<ExportSummary>,
    /// Number of memories, imported and defined (Shoal accepts at most one).
    pub memory_count: u32,
    /// Number of functions defined by the module (imports excluded).
    pub defined_function_count: u32,
    /// Whether the module carries a `name` custom section (function names in traps).
    pub has_name_section: bool,
    /// Shoal ABI version the module targets: `Some(1)` if it imports any function from
    /// `shoal_v1`, `None` for a pure WASI module.
    pub abi_version: Option<u32>,
}

/// Result of the full check, shared with the later preparation steps.
pub(crate) struct Checked {
    /// The public summary.
    pub summary: ModuleSummary,
    /// wasmparser's type information (canonical type ids for the call-graph analysis).
    pub types: Types,
}

/// Validates `wasm` as a core module for wasmtime 46's default features and returns its summary.
///
/// Errors: [`PrepareError::Invalid`] (with the byte offset) for malformed or invalid bytes;
/// [`PrepareError::Unsupported`] for valid input Shoal cannot snapshot: a component, more than
/// one memory, a 64-bit memory, a shared memory. These are the same checks [`super::prepare`]
/// starts with, so a module that passes here fails preparation only for Asyncify-specific
/// reasons.
pub fn validate(wasm: &[u8]) -> Result<ModuleSummary, PrepareError> {
    check(wasm).map(|c| c.summary)
}

/// [`validate`], also returning wasmparser's [`Types`].
pub(crate) fn check(wasm: &[u8]) -> Result<Checked, PrepareError> {
    if Parser::is_component(wasm) {
        return Err(PrepareError::unsupported(
            "a component (Shoal runs core WebAssembly modules only)",
        ));
    }
    let types = Validator::new_with_features(wasm_features())
        .validate_all(wasm)
        .map_err(|e| PrepareError::invalid(&e))?;

    let mut summary = ModuleSummary {
        imports: Vec::new(),
        exports: Vec::new(),
        memory_count: 0,
        defined_function_count: 0,
        has_name_section: false,
        abi_version: None,
    };
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.map_err(|e| PrepareError::invalid(&e))? {
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    let import = import.map_err(|e| PrepareError::invalid(&e))?;
                    if let TypeRef::Memory(m) = import.ty {
                        check_memory(&m, summary.memory_count)?;
                        summary.memory_count += 1;
                    }
                    if matches!(import.ty, TypeRef::Func(_) | TypeRef::FuncExact(_))
                        && import.module == SHOAL_ABI_V1_MODULE
                    {
                        summary.abi_version = Some(1);
                    }
                    summary.imports.push(ImportSummary {
                        module: import.module.to_string(),
                        name: import.name.to_string(),
                        kind: kind_of_type_ref(&import.ty),
                        ty: type_ref_text(&import.ty, &types),
                    });
                }
            }
            Payload::FunctionSection(reader) => summary.defined_function_count = reader.count(),
            Payload::MemorySection(reader) => {
                for memory in reader {
                    let memory = memory.map_err(|e| PrepareError::invalid(&e))?;
                    check_memory(&memory, summary.memory_count)?;
                    summary.memory_count += 1;
                }
            }
            Payload::ExportSection(reader) => {
                for export in reader {
                    let export = export.map_err(|e| PrepareError::invalid(&e))?;
                    summary.exports.push(ExportSummary {
                        name: export.name.to_string(),
                        kind: kind_of_external(export.kind),
                        index: export.index,
                    });
                }
            }
            Payload::CustomSection(reader) if reader.name() == "name" => {
                summary.has_name_section = true;
            }
            _ => {}
        }
    }
    Ok(Checked { summary, types })
}

/// Rejects the memory shapes Shoal cannot snapshot. `seen` counts memories before this one.
fn check_memory(m: &wasmparser::MemoryType, seen: u32) -> Result<(), PrepareError> {
    if seen >= 1 {
        return Err(PrepareError::unsupported(
            "more than one memory (multi-memory): a snapshot covers exactly one linear memory",
        ));
    }
    if m.memory64 {
        return Err(PrepareError::unsupported(
            "a 64-bit memory (memory64): Asyncify and snapshots assume a 32-bit linear memory",
        ));
    }
    if m.shared {
        return Err(PrepareError::unsupported(
            "a shared memory (threads): another thread could change memory during a capture",
        ));
    }
    Ok(())
}

fn kind_of_type_ref(ty: &TypeRef) -> ExternKind {
    match ty {
        TypeRef::Func(_) | TypeRef::FuncExact(_) => ExternKind::Func,
        TypeRef::Table(_) => ExternKind::Table,
        TypeRef::Memory(_) => ExternKind::Memory,
        TypeRef::Global(_) => ExternKind::Global,
        TypeRef::Tag(_) => ExternKind::Tag,
    }
}

pub(crate) fn kind_of_external(kind: ExternalKind) -> ExternKind {
    match kind {
        ExternalKind::Func | ExternalKind::FuncExact => ExternKind::Func,
        ExternalKind::Table => ExternKind::Table,
        ExternalKind::Memory => ExternKind::Memory,
        ExternalKind::Global => ExternKind::Global,
        ExternalKind::Tag => ExternKind::Tag,
    }
}

/// The function type at module type index `idx`, if it is one.
pub(crate) fn func_type_at(types: &Types, idx: u32) -> Option<&FuncType> {
    let tref = types.as_ref();
    if idx >= tref.core_type_count_in_module() {
        return None;
    }
    let id = tref.core_type_at_in_module(idx);
    match &types[id].composite_type.inner {
        CompositeInnerType::Func(f) => Some(f),
        _ => None,
    }
}

/// `func (i32, i64) -> f32` style text for a function type.
pub(crate) fn func_type_text(f: &FuncType) -> String {
    let list = |tys: &[wasmparser::ValType]| {
        tys.iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match f.results() {
        [] => format!("func ({})", list(f.params())),
        [one] => format!("func ({}) -> {one}", list(f.params())),
        many => format!("func ({}) -> ({})", list(f.params()), list(many)),
    }
}

fn limits_text(initial: u64, maximum: Option<u64>) -> String {
    match maximum {
        Some(max) => format!("{initial}..{max}"),
        None => format!("{initial}.."),
    }
}

fn type_ref_text(ty: &TypeRef, types: &Types) -> String {
    match ty {
        TypeRef::Func(idx) | TypeRef::FuncExact(idx) => match func_type_at(types, *idx) {
            Some(f) => func_type_text(f),
            None => format!("func (type {idx})"),
        },
        TypeRef::Table(t) => format!(
            "table {} {}",
            t.element_type,
            limits_text(t.initial, t.maximum)
        ),
        TypeRef::Memory(m) => format!(
            "memory {} pages{}{}",
            limits_text(m.initial, m.maximum),
            if m.memory64 { " i64" } else { "" },
            if m.shared { " shared" } else { "" }
        ),
        TypeRef::Global(g) => format!(
            "global {}{}",
            if g.mutable { "mut " } else { "" },
            g.content_type
        ),
        TypeRef::Tag(t) => match func_type_at(types, t.func_type_idx) {
            Some(f) => format!("tag {}", func_type_text(f).trim_start_matches("func ")),
            None => format!("tag (type {})", t.func_type_idx),
        },
    }
}
