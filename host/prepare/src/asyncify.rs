//! Step 3 of preparation: run Binaryen's Asyncify (wasm-opt 0.116 = Binaryen 116) on exactly
//! the functions the call-graph analysis selected.
//!
//! Binaryen is C++ linked into this process, and several of its failure paths end in `Fatal()`
//! or an assertion inside the pass runner, which the `wasm-opt` crate does not turn into a
//! `Result`: they abort the whole host. [`check_supported`] therefore refuses, before Binaryen
//! runs, every module known to reach one of those paths.

use super::callgraph::CallGraph;
use super::names::internal_function_name;
use super::validate::ModuleSummary;
use super::{PrepareError, PrepareOptions};
use std::sync::Mutex;
use wasm_opt::{Feature, OptimizationOptions, OptimizeLevel, Pass, ShrinkLevel};

/// Exports Asyncify adds to an instrumented module (its runtime API).
pub const ASYNCIFY_EXPORTS: [&str; 5] = [
    "asyncify_start_unwind",
    "asyncify_stop_unwind",
    "asyncify_start_rewind",
    "asyncify_stop_rewind",
    "asyncify_get_state",
];

/// Binaryen keeps process-wide state (interned names, type stores, a thread pool); runs are
/// serialised so two preparations never share it concurrently. A run takes well under a second
/// for typical guests, and preparation is cached by module hash.
static BINARYEN: Mutex<()> = Mutex::new(());

/// Characters that Binaryen's `asyncify-imports` list cannot carry: `,` splits the list, `*` is a
/// wildcard (whose matcher can throw and abort), and trailing whitespace/NUL is trimmed.
fn import_name_ok(s: &str) -> bool {
    !s.chars()
        .any(|c| c == ',' || c == '*' || c == '\0' || c.is_whitespace())
}

/// Refuses modules Binaryen 116's Asyncify would abort on or mis-instrument.
pub(crate) fn check_supported(
    summary: &ModuleSummary,
    graph: &CallGraph,
    display_names: &[String],
) -> Result<(), PrepareError> {
    if let Some((func, offset)) = graph.tail_call {
        return Err(PrepareError::unsupported(format!(
            "tail calls (in function `{}` at byte offset {offset:#x}): Binaryen's Asyncify \
             cannot instrument a module that contains return_call instructions",
            display_names
                .get(func as usize)
                .map(String::as_str)
                .unwrap_or("?")
        )));
    }
    if summary.memory_count == 0 {
        return Err(PrepareError::unsupported(
            "no linear memory: Asyncify saves the stack into linear memory",
        ));
    }
    if let Some(i) = summary.imports.iter().find(|i| i.module == "asyncify") {
        return Err(PrepareError::unsupported(format!(
            "an import from the reserved module `asyncify` (`{}`)",
            i.name
        )));
    }
    if let Some(e) = summary
        .exports
        .iter()
        .find(|e| ASYNCIFY_EXPORTS.contains(&e.name.as_str()))
    {
        return Err(PrepareError::unsupported(format!(
            "an export named `{}`: the module looks already Asyncify-instrumented",
            e.name
        )));
    }
    for &b in &graph.blocking {
        if let Some((m, n)) = graph.func_imports.get(b as usize) {
            if !import_name_ok(m) || !import_name_ok(n) {
                return Err(PrepareError::unsupported(format!(
                    "blocking import `{m}`.`{n}`: its name contains ',', '*' or whitespace, \
                     which Binaryen's asyncify-imports list cannot express"
                )));
            }
        }
    }
    for (f, instrument) in graph.instrument.iter().enumerate() {
        if !instrument {
            continue;
        }
        if let Some(Some(why)) = graph.asyncify_blocker.get(f) {
            return Err(PrepareError::unsupported(format!(
                "function `{}` can be on the stack during a blocking call but contains {why}, \
                 which Binaryen's Asyncify cannot save and restore",
                display_names.get(f).map(String::as_str).unwrap_or("?")
            )));
        }
    }
    Ok(())
}

fn level(n: u32) -> Result<OptimizeLevel, PrepareError> {
    Ok(match n {
        0 => OptimizeLevel::Level0,
        1 => OptimizeLevel::Level1,
        2 => OptimizeLevel::Level2,
        3 => OptimizeLevel::Level3,
        4 => OptimizeLevel::Level4,
        _ => {
            return Err(PrepareError::InvalidOptions(format!(
                "optimize_level {n} (Binaryen levels are 0 to 4)"
            )))
        }
    })
}

/// Checks the options before any work is done.
pub(crate) fn check_options(opts: &PrepareOptions) -> Result<(), PrepareError> {
    level(opts.optimize_level).map(|_| ())
}

/// Runs Asyncify on `input` (a module carrying the internal names of [`super::names`]).
///
/// * `asyncify-imports`: the blocking imports present (`module.name`, comma separated) —
///   never empty here, since an empty list means "every import may unwind".
/// * `asyncify-onlylist`: the internal names of the functions to instrument, comma separated
///   (Binaryen 116 splits lists on `,` only; see [`super::names`]). Both lists go through
///   response files (`@path`) in a temporary directory.
/// * no default optimisation passes: only Asyncify runs, so the output differs from the input
///   only by the instrumentation; `optimize_level` is still passed because Asyncify's *own*
///   clean-up (local coalescing before, function-level optimisation after instrumenting) only
///   runs at levels above 0.
/// * `debug_info`: the wasm-opt writer emits function names only when debug info is kept.
/// * features: those wasmtime enables by default and Binaryen 116 knows, added to whatever the
///   module's `target_features` section declares.
pub(crate) fn run(
    input: &[u8],
    blocking: &[(String, String)],
    instrument: &[u32],
    opts: &PrepareOptions,
) -> Result<Vec<u8>, PrepareError> {
    if blocking.is_empty() || instrument.is_empty() {
        return Err(PrepareError::Asyncify(
            "internal: Asyncify needs a non-empty import list and only-list".to_string(),
        ));
    }
    let io = |what: &str, e: std::io::Error| PrepareError::Asyncify(format!("{what}: {e}"));
    let dir = tempfile::tempdir().map_err(|e| io("creating a temporary directory", e))?;
    let in_path = dir.path().join("in.wasm");
    let out_path = dir.path().join("out.wasm");
    let imports_path = dir.path().join("imports.txt");
    let only_path = dir.path().join("onlylist.txt");

    let imports: Vec<String> = blocking.iter().map(|(m, n)| format!("{m}.{n}")).collect();
    let only: Vec<String> = instrument
        .iter()
        .map(|&f| internal_function_name(f))
        .collect();
    std::fs::write(&in_path, input).map_err(|e| io("writing the input module", e))?;
    std::fs::write(&imports_path, imports.join(",")).map_err(|e| io("writing imports", e))?;
    std::fs::write(&only_path, only.join(",")).map_err(|e| io("writing the only-list", e))?;

    let mut o = OptimizationOptions::new_opt_level_0();
    o.add_default_passes(false)
        .optimize_level(level(opts.optimize_level)?)
        .shrink_level(ShrinkLevel::Level0)
        .debug_info(true)
        .add_pass(Pass::Asyncify)
        .set_pass_arg("asyncify-imports", &format!("@{}", imports_path.display()))
        .set_pass_arg("asyncify-onlylist", &format!("@{}", only_path.display()));
    for f in [
        Feature::MutableGlobals,
        Feature::TruncSat,
        Feature::SignExt,
        Feature::BulkMemory,
        Feature::ReferenceTypes,
        Feature::Multivalue,
        Feature::Simd,
        Feature::RelaxedSimd,
        Feature::ExtendedConst,
    ] {
        o.enable_feature(f);
    }
    if opts.asyncify_asserts {
        o.set_pass_arg("asyncify-asserts", "");
    }
    {
        let _guard = BINARYEN
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        o.run(&in_path, &out_path).map_err(|e| {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            PrepareError::Asyncify(msg)
        })?;
    }
    std::fs::read(&out_path).map_err(|e| io("reading the output module", e))
}
