//! Module preparation: turn an uploaded Wasm module into one whose blocked processes can be
//! captured and resumed elsewhere.
//!
//! `prepare` = [`validate`] → call-graph analysis ([`callgraph`]) → Binaryen Asyncify on exactly
//! the functions that can be on the stack during a blocking import ([`asyncify`]) → export every
//! mutable global ([`globals`]). It is deterministic for given bytes and options, so the host
//! caches its output by the input's sha256.
//!
//! # Why an only-list computed here, rather than Binaryen's own choice
//!
//! Measured on a Rust `wasm32-wasip1` guest (figures below and in
//! `shared/notes/snapshot-technique.md`): Binaryen's default analysis treats *every* indirect
//! call as able to unwind, and Rust/C code reaches `main`, formatting and panics through indirect
//! calls, so nearly every function is instrumented (+70% code, +40–50% CPU).
//! `asyncify-ignore-indirect` is fast but unsound: an indirect call on the stack at capture time
//! (a trait object, a closure, an async executor) is silently not saved, and the rewind fails
//! later. Instead the host computes, over the original module, a *sound* call graph in which an
//! indirect call of type `T` can only reach address-taken functions of type `T` — the runtime
//! signature check of `call_indirect` guarantees nothing else can be called — and instruments a
//! function iff it can reach a blocking import. That set goes to Binaryen as
//! `asyncify-onlylist`; indirect calls *inside* instrumented functions stay instrumented.
//! Hot loops that never block (the ones that dominate CPU time) are left untouched.

mod asyncify;
mod callgraph;
mod error;
mod globals;
mod names;
mod sections;
mod validate;

#[cfg(test)]
mod tests;

pub use asyncify::ASYNCIFY_EXPORTS;
pub use error::PrepareError;
pub use globals::{GlobalExport, GLOBAL_EXPORT_PREFIX};
pub use validate::{
    validate, wasm_features, ExportSummary, ExternKind, ImportSummary, ModuleSummary,
    SHOAL_ABI_V1_MODULE,
};

/// How to prepare a module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrepareOptions {
    /// `(module, name)` of every import that can block; ONLY these may unwind.
    ///
    /// The host ABI table provides this list and it should never be empty. If none of these is
    /// imported by a module (e.g. a pure WASI program), nothing can ever unwind: Asyncify is
    /// skipped entirely (no instrumentation, no `asyncify_*` exports) and only the mutable
    /// globals are exported. An empty list is therefore safe: it means "nothing blocks".
    pub blocking_imports: Vec<(String, String)>,
    /// Insert Asyncify runtime asserts: an unwind through an uninstrumented frame then traps at
    /// unwind time instead of corrupting the later rewind. Costs CPU in every function; tests
    /// use it.
    pub asyncify_asserts: bool,
    /// Binaryen optimisation level (0–4) passed to the Asyncify pass, default 1.
    ///
    /// No general optimisation pass is run at any level (the output stays comparable to the
    /// input); the level only drives Asyncify's own clean-up — local coalescing before
    /// instrumentation and function-level optimisation of the instrumented functions — which
    /// Binaryen runs only at levels above 0. Without it each instrumented function saves every
    /// flattened temporary local, which is larger and slower.
    pub optimize_level: u32,
}

impl PrepareOptions {
    /// Options for the given blocking imports, without asserts, at optimisation level 1.
    pub fn new(blocking_imports: Vec<(String, String)>) -> Self {
        PrepareOptions {
            blocking_imports,
            asyncify_asserts: false,
            optimize_level: 1,
        }
    }
}

/// A prepared module and what preparation did to it.
#[derive(Debug, Clone)]
pub struct PreparedWasm {
    /// The prepared module, ready for `wasmtime::Module::new`.
    pub bytes: Vec<u8>,
    /// What was found and changed.
    pub report: PrepareReport,
}

/// What preparation found and changed; for logs, the CLI and the snapshot code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrepareReport {
    /// Functions defined by the module (imports excluded).
    pub functions_total: usize,
    /// Functions given Asyncify instrumentation (0: Asyncify did not run at all).
    pub functions_instrumented: usize,
    /// Export names of all mutable globals, in global-index order (see `global_exports`).
    pub exported_globals: Vec<String>,
    /// Every import (of any kind), `(module, name)`, in import order.
    pub imports: Vec<(String, String)>,
    /// The blocking imports this module actually imports (the ones that may unwind).
    pub blocking_imports_used: Vec<(String, String)>,
    /// Size of the input module in bytes.
    pub input_bytes: usize,
    /// Size of the prepared module in bytes.
    pub output_bytes: usize,
    /// Which export reaches which mutable global (existing exports are reused).
    pub global_exports: Vec<GlobalExport>,
    /// Whether Asyncify ran: the `asyncify_*` exports ([`ASYNCIFY_EXPORTS`]) exist iff true.
    pub asyncified: bool,
    /// Display names of the instrumented functions (unique; see the `names` module docs).
    pub instrumented_functions: Vec<String>,
    /// If set, host-provided funcrefs can reach the module's indirect calls (reason given), so
    /// every import was treated as a possible indirect-call target.
    pub open_world: Option<String>,
    /// The start function can reach a blocking import. A capture is impossible while the
    /// start function runs (it is not re-enterable through an export), so the host must not
    /// unwind during instantiation.
    pub start_can_block: bool,
    /// Custom sections removed (DWARF `.debug_*`, stale after instrumentation).
    pub dropped_custom_sections: Vec<String>,
}

/// Prepares `wasm` for capture and resume. See the module documentation for the steps.
///
/// Errors: [`PrepareError::Invalid`] / [`PrepareError::Unsupported`] from validation and from the
/// Asyncify guards, [`PrepareError::InvalidOptions`], [`PrepareError::Asyncify`] if Binaryen
/// fails, [`PrepareError::Encode`] if the result cannot be re-encoded or does not validate.
pub fn prepare(wasm: &[u8], opts: &PrepareOptions) -> Result<PreparedWasm, PrepareError> {
    asyncify::check_options(opts)?;
    let checked = validate::check(wasm)?;
    let graph = callgraph::analyse(wasm, &checked.types, &opts.blocking_imports)?;
    let total_globals = checked.types.as_ref().global_count();
    let names = names::read(wasm, graph.total_funcs, total_globals)?;

    let instrument: Vec<u32> = (0..graph.total_funcs)
        .filter(|&f| graph.instrument.get(f as usize).copied().unwrap_or(false))
        .collect();
    let display = |f: u32| names.functions.get(f as usize).cloned().unwrap_or_default();
    let blocking_used: Vec<(String, String)> = graph
        .blocking
        .iter()
        .filter_map(|&b| graph.func_imports.get(b as usize).cloned())
        .collect();

    // Asyncify only when some function can actually be on the stack during a blocking call.
    let asyncified = !instrument.is_empty();
    let mut dropped = Vec::new();
    let instrumented_bytes;
    let base: &[u8] = if asyncified {
        asyncify::check_supported(&checked.summary, &graph, &names.functions)?;
        for s in sections::sections(wasm)? {
            if let Some(n) = s.custom_name() {
                if n != "name" && names::dropped_before_binaryen(n) {
                    dropped.push(n.to_string());
                }
            }
        }
        let input = names::binaryen_input(wasm, graph.total_funcs, total_globals)?;
        instrumented_bytes = asyncify::run(&input, &blocking_used, &instrument, opts)?;
        &instrumented_bytes
    } else {
        wasm
    };

    let name_section = if asyncified {
        Some(names::restored_section(base, &names)?)
    } else {
        None
    };
    let plan = globals::plan(base, &names.globals)?;
    let bytes = sections::assemble(base, plan.section.as_ref(), name_section.as_ref(), &|_| {
        false
    })?;

    // The result must be a module wasmtime accepts, and carry the Asyncify API if instrumented.
    let out = validate::check(&bytes)
        .map_err(|e| PrepareError::Encode(format!("prepared module does not validate: {e}")))?;
    if asyncified {
        let summary = out.summary;
        for name in ASYNCIFY_EXPORTS {
            if !summary
                .exports
                .iter()
                .any(|e| e.name == name && e.kind == ExternKind::Func)
            {
                return Err(PrepareError::Asyncify(format!(
                    "the instrumented module lacks the `{name}` export"
                )));
            }
        }
    }

    let report = PrepareReport {
        functions_total: (graph.total_funcs - graph.imported_funcs) as usize,
        functions_instrumented: instrument.len(),
        exported_globals: plan.globals.iter().map(|g| g.export_name.clone()).collect(),
        imports: checked
            .summary
            .imports
            .iter()
            .map(|i| (i.module.clone(), i.name.clone()))
            .collect(),
        blocking_imports_used: blocking_used,
        input_bytes: wasm.len(),
        output_bytes: bytes.len(),
        global_exports: plan.globals,
        asyncified,
        instrumented_functions: instrument.iter().map(|&f| display(f)).collect(),
        open_world: graph.open_world.clone(),
        start_can_block: graph
            .start
            .is_some_and(|s| graph.instrument.get(s as usize).copied().unwrap_or(false)),
        dropped_custom_sections: dropped,
    };
    Ok(PreparedWasm { bytes, report })
}
