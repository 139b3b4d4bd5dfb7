//! Module preparation: turn an uploaded Wasm module into one whose blocked processes can be
//! captured and resumed elsewhere.
//!
//! `prepare` = [`validate`] → (optionally, [`PrepareOptions::preempt`]: preemption points in every
//! loop, `preempt`) → call-graph analysis (`callgraph`) → Asyncify on exactly the functions that
//! can be on the stack during a blocking import (`asyncify`) → export every mutable global
//! (`globals`). It is deterministic for given bytes and options, so the host caches its output
//! by the input's sha256.
//!
//! # Why this Asyncify (chosen by measurement)
//!
//! 1. A *sound* call graph of the module (`callgraph`): an indirect call of type `T` can only
//!    reach address-taken functions of type `T` (the runtime signature check of `call_indirect`
//!    guarantees it); a function is instrumented iff it can reach a blocking import. Binaryen's
//!    default, by contrast, treats every indirect call as able to unwind, and Rust and C reach
//!    `main`, formatting and panics through indirect calls, so nearly every function got
//!    instrumented (+37–45% CPU on the guest below); `asyncify-ignore-indirect` is fast but
//!    unsound.
//! 2. Inside an instrumented function, only the calls that can unwind (a blocking import, an
//!    instrumented function, an indirect call whose type can reach one) are capture points; an
//!    indirect call whose type cannot block costs nothing.
//! 3. The instrumentation itself is Shoal's (`asyncify`), not Binaryen's pass: it works on the
//!    stack machine code as it is, one function per thread, guards whole runs of code between
//!    capture points, and saves only the locals live across one. Binaryen 116 flattened every
//!    instrumented function and needed 7.6 s for a 2 MB Go program (10× wasmtime's compile
//!    time all told); this pass needs well under a second for the 7 MB Python interpreter.
//!
//! Measured with wasmtime 46 (Cranelift) on a Rust 1.95 `wasm32-wasip1` guest (trait-object
//! loop, sieve, sort, `HashMap`, `format!`, a blocking `shoal_v1.recv` per round, ~100 KB), with
//! Binaryen's pass: the call graph instrumented 7 of 251 functions (`_start`, `__main_void`,
//! `lang_start_internal`, the `lang_start` closure and its vtable shim,
//! `__rust_begin_short_backtrace`, `main`) and the guest ran at its original speed (−2…0%). The
//! preparation benchmark (`tests/benches/prepare.rs`) prints, for each example guest, the
//! preparation and compile time against wasmtime compiling the module as given.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod asyncify;
mod callgraph;
mod error;
mod fresh_memory;
mod globals;
mod names;
mod preempt;
mod sections;
mod validate;
pub mod worker;

#[cfg(test)]
mod tests;

pub use asyncify::ASYNCIFY_EXPORTS;
pub use error::PrepareError;
pub use fresh_memory::fresh_memory_nonzero;
pub use globals::{GlobalExport, GLOBAL_EXPORT_PREFIX};
pub use preempt::{
    loop_count, COUNTDOWN_GLOBAL_NAME, PREEMPT_FUNCTION_NAME, PREEMPT_IMPORT, PREEMPT_INTERVAL,
};
pub use validate::{
    validate, wasm_features, ExportSummary, ExternKind, ImportSummary, ModuleSummary,
    SHOAL_ABI_V1_MODULE,
};

/// Version of [`prepare`]'s output: changes whenever the same input and options would give
/// different bytes. Put it in the key of anything cached from prepared modules (compiled
/// artifacts), so a new host never loads code prepared by an older one.
pub const PREPARE_VERSION: &str = "prepare-8";

/// How to prepare a module.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    /// Make every loop a capture point (the `preempt` module): import `shoal_v1.preempt` and
    /// call it every [`PREEMPT_INTERVAL`] loop iterations, so a process that never blocks can
    /// still be captured. Costs CPU in loops and code size (see the `preempt` module docs);
    /// `shoal_v1.preempt` must then be one of [`PrepareOptions::blocking_imports`].
    pub preempt: bool,
}

impl PrepareOptions {
    /// Options for the given blocking imports, without asserts or preemption points.
    pub fn new(blocking_imports: Vec<(String, String)>) -> Self {
        PrepareOptions {
            blocking_imports,
            asyncify_asserts: false,
            preempt: false,
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
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    /// `loop` instructions given a preemption check (0 unless [`PrepareOptions::preempt`]).
    pub preempt_loops: usize,
    /// Where the time went.
    #[serde(default)]
    pub timings: PrepareTimings,
}

/// Where a preparation spent its time, in microseconds per step (see [`prepare`]). Varies from
/// run to run; for logs and benchmarks, never part of a cache key.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PrepareTimings {
    /// Validation of the input (and of the module with preemption points).
    pub validate_us: u64,
    /// Inserting preemption points (0 unless asked for).
    pub preempt_us: u64,
    /// The call-graph analysis and reading the names.
    pub callgraph_us: u64,
    /// Asyncify: reading the module, instrumenting, writing it.
    pub asyncify_us: u64,
    /// Names, exported globals, assembly and the final validation.
    pub finish_us: u64,
}

fn micros_since(t: std::time::Instant) -> u64 {
    u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Prepares `wasm` for capture and resume. See the module documentation for the steps.
///
/// Errors: [`PrepareError::Invalid`] / [`PrepareError::Unsupported`] from validation and from the
/// Asyncify guards, [`PrepareError::InvalidOptions`], [`PrepareError::Asyncify`] on an internal
/// error of the instrumentation, [`PrepareError::Encode`] if the result cannot be re-encoded or does not validate.
pub fn prepare(input: &[u8], opts: &PrepareOptions) -> Result<PreparedWasm, PrepareError> {
    let mut timings = PrepareTimings::default();
    let t = std::time::Instant::now();
    let checked = validate::check(input)?;
    timings.validate_us = micros_since(t);
    let t = std::time::Instant::now();
    let mut dropped = Vec::new();
    let mut preempt_loops = 0;
    let preempted;
    let (wasm, checked): (&[u8], _) = if opts.preempt {
        let import = (SHOAL_ABI_V1_MODULE.to_string(), PREEMPT_IMPORT.to_string());
        if !opts.blocking_imports.contains(&import) {
            return Err(PrepareError::InvalidOptions(format!(
                "preempt needs `{SHOAL_ABI_V1_MODULE}.{PREEMPT_IMPORT}` among the blocking imports"
            )));
        }
        let rewritten = preempt::insert(input, &checked.types)?;
        preempt_loops = rewritten.loops;
        dropped.extend(rewritten.dropped_custom_sections);
        preempted = rewritten.bytes;
        let checked = validate::check(&preempted).map_err(|e| {
            PrepareError::Encode(format!(
                "the module with preemption points does not validate: {e}"
            ))
        })?;
        (&preempted, checked)
    } else {
        (input, checked)
    };
    if opts.preempt {
        timings.preempt_us = micros_since(t);
    }
    let t = std::time::Instant::now();
    let graph = callgraph::analyse(wasm, &checked.types, &opts.blocking_imports)?;
    let total_globals = checked.types.as_ref().global_count();
    let mut names = names::read(wasm, graph.total_funcs, total_globals)?;

    let instrument: Vec<u32> = (0..graph.total_funcs)
        .filter(|&f| graph.instrument.get(f as usize).copied().unwrap_or(false))
        .collect();
    let instrumented_functions: Vec<String> = instrument
        .iter()
        .map(|&f| names.functions.get(f as usize).cloned().unwrap_or_default())
        .collect();
    let blocking_used: Vec<(String, String)> = graph
        .blocking
        .iter()
        .filter_map(|&b| graph.func_imports.get(b as usize).cloned())
        .collect();

    // Asyncify only when some function can actually be on the stack during a blocking call.
    let asyncified = !instrument.is_empty();
    timings.callgraph_us = micros_since(t);
    let t = std::time::Instant::now();
    let instrumented_bytes;
    let base: &[u8] = if asyncified {
        asyncify::check_supported(&checked.summary, &graph, &names.functions)?;
        for s in sections::sections(wasm)? {
            if let Some(n) = s.custom_name() {
                if n.starts_with(".debug_") {
                    dropped.push(n.to_string());
                }
            }
        }
        let added = asyncify::run(wasm, &graph, opts.asyncify_asserts)?;
        debug_assert_eq!(added.first_function, graph.total_funcs);
        debug_assert_eq!(added.first_global as usize, names.globals.len());
        names
            .functions
            .extend(ASYNCIFY_EXPORTS.iter().map(|n| n.to_string()));
        names
            .functions
            .push(asyncify::PUSH_FUNCTION_NAME.to_string());
        names.globals.extend(
            asyncify::ASYNCIFY_GLOBALS
                .iter()
                .map(|n| Some(n.to_string())),
        );
        timings.asyncify_us = micros_since(t);
        instrumented_bytes = added.bytes;
        &instrumented_bytes
    } else {
        wasm
    };

    let t_finish = std::time::Instant::now();
    let name_section = if asyncified {
        Some(names::section(&names))
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
        input_bytes: input.len(),
        output_bytes: bytes.len(),
        global_exports: plan.globals,
        asyncified,
        instrumented_functions,
        open_world: graph.open_world.clone(),
        start_can_block: graph
            .start
            .is_some_and(|s| graph.instrument.get(s as usize).copied().unwrap_or(false)),
        dropped_custom_sections: dropped,
        preempt_loops,
        timings: PrepareTimings {
            finish_us: timings.finish_us + micros_since(t_finish),
            ..timings
        },
    };
    Ok(PreparedWasm { bytes, report })
}
