//! What preparing a module costs, against wasmtime compiling the same module (#17).
//!
//! Run with `cargo bench -p shoal-tests --bench prepare` (from `tests/`). For each example
//! guest (Rust, C, Zig, C++, AssemblyScript, Go, Python ping-pong), best of `ROUNDS` runs each,
//! interleaved so both see the same machine load:
//!
//! * **wasmtime**: `Module::new` of the module as given, on the node's engine configuration
//!   (the peer figure: what running it on plain wasmtime 46 costs);
//! * **prepare**: `shoal_prepare::prepare` with the node's blocking imports, split into its
//!   steps (validation, call graph, Asyncify, finish);
//! * **compile**: `Module::new` of the prepared module (Cranelift, the optimizing tier);
//! * **baseline**: `Module::new` of the prepared module on the node's baseline engine (Winch),
//!   which is what a spawn that waits for a module of 1 MiB or more (prepared) gets first,
//!   while the optimizing compile runs in the background (`shoal_runtime::modules`);
//!
//! and two ratios to wasmtime's own compile: **ready** = (prepare + the compile a waiting spawn
//! needs: baseline for modules of 1 MiB or more prepared, else compile) / wasmtime, whose aim is
//! ≤ 2 (the time until the module runs); **optimized** = (prepare + compile) / wasmtime (the
//! time until it runs Cranelift's code, in the background). Preparation here runs in
//! this process; a node runs the same code in a worker process (plus a pipe of the module each
//! way). It never fails on a slow machine: the figures go into the README.
//!
//! `SHOAL_BENCH_MODULES=go,py` limits the modules (by the names printed).

use shoal_abi::table::blocking_imports;
use shoal_prepare::{prepare, PrepareOptions, PrepareTimings};
use shoal_runtime::engine::{build_baseline_engine, build_engine, EngineSettings};
use shoal_runtime::node::BASELINE_TIER_BYTES_MIN;
use std::time::{Duration, Instant};

/// Runs of each measurement (best kept).
const ROUNDS: usize = 3;

fn best(runs: &[Duration]) -> Duration {
    runs.iter().copied().min().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn ms_us(us: u64) -> f64 {
    us as f64 / 1e3
}

struct Figures {
    wasmtime: Duration,
    prepare: Duration,
    compile: Duration,
    baseline: Duration,
    timings: PrepareTimings,
    instrumented: usize,
    functions: usize,
    output_bytes: usize,
}

fn measure(engine: &wasmtime::Engine, baseline: &wasmtime::Engine, wasm: &[u8]) -> Figures {
    let opts = PrepareOptions::new(blocking_imports());
    let mut wasmtime_runs = Vec::new();
    let mut prepare_runs = Vec::new();
    let mut compile_runs = Vec::new();
    let mut baseline_runs = Vec::new();
    let mut best_timings: Option<(Duration, PrepareTimings)> = None;
    let mut report = None;
    for _ in 0..ROUNDS {
        let t = Instant::now();
        wasmtime::Module::new(engine, wasm).expect("wasmtime compiles the module as given");
        wasmtime_runs.push(t.elapsed());

        let t = Instant::now();
        let prepared = prepare(wasm, &opts).expect("the module prepares");
        let took = t.elapsed();
        prepare_runs.push(took);
        if best_timings.as_ref().is_none_or(|(d, _)| took < *d) {
            best_timings = Some((took, prepared.report.timings.clone()));
        }

        let t = Instant::now();
        wasmtime::Module::new(engine, &prepared.bytes)
            .expect("wasmtime compiles the prepared module");
        compile_runs.push(t.elapsed());

        let t = Instant::now();
        wasmtime::Module::new(baseline, &prepared.bytes)
            .expect("the baseline engine compiles the prepared module");
        baseline_runs.push(t.elapsed());
        report = Some(prepared.report);
    }
    let report = report.expect("ROUNDS > 0");
    Figures {
        wasmtime: best(&wasmtime_runs),
        prepare: best(&prepare_runs),
        compile: best(&compile_runs),
        baseline: best(&baseline_runs),
        timings: best_timings.map(|(_, t)| t).unwrap_or_default(),
        instrumented: report.functions_instrumented,
        functions: report.functions_total,
        output_bytes: report.output_bytes,
    }
}

fn main() {
    let modules: [(&str, &str); 7] = [
        ("rust", shoal_tests::PING_PONG),
        ("c", shoal_tests::C_PONG),
        ("zig", shoal_tests::ZIG_PINGPONG),
        ("cpp", shoal_tests::CPP_PINGPONG),
        ("as", shoal_tests::AS_PINGPONG),
        ("go", shoal_tests::GO_PINGPONG),
        ("py", shoal_tests::PY_PINGPONG),
    ];
    let only: Option<Vec<String>> = std::env::var("SHOAL_BENCH_MODULES")
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect());
    let engine = build_engine(&EngineSettings::default()).expect("engine");
    let baseline = build_baseline_engine(&EngineSettings::default()).expect("baseline engine");
    println!(
        "preparation against wasmtime 46 compiling the same module; best of {ROUNDS}; {} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "{:<5} {:>9} {:>10} {:>10} {:>10} {:>10} {:>7} {:>9} | {:>8} {:>9} {:>9} {:>9} {:>8} | {:>11}",
        "guest",
        "bytes",
        "wasmtime",
        "prepare",
        "compile",
        "baseline",
        "ready",
        "optimized",
        "validate",
        "callgraph",
        "asyncify",
        "finish",
        "out/in",
        "instrumented"
    );
    for (name, path) in modules {
        if only.as_ref().is_some_and(|o| !o.iter().any(|m| m == name)) {
            continue;
        }
        let wasm = std::fs::read(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
        let f = measure(&engine, &baseline, &wasm);
        let t = &f.timings;
        let first_compile = if f.output_bytes >= BASELINE_TIER_BYTES_MIN {
            f.baseline
        } else {
            f.compile
        };
        println!(
            "{:<5} {:>9} {:>8.1}ms {:>8.1}ms {:>8.1}ms {:>8.1}ms {:>6.2}x {:>8.2}x | {:>6.1}ms {:>7.1}ms {:>7.1}ms {:>7.1}ms {:>7.2}x | {:>5}/{:<5}",
            name,
            wasm.len(),
            ms(f.wasmtime),
            ms(f.prepare),
            ms(f.compile),
            ms(f.baseline),
            (f.prepare + first_compile).as_secs_f64() / f.wasmtime.as_secs_f64(),
            (f.prepare + f.compile).as_secs_f64() / f.wasmtime.as_secs_f64(),
            ms_us(t.validate_us),
            ms_us(t.callgraph_us),
            ms_us(t.asyncify_us),
            ms_us(t.finish_us),
            f.output_bytes as f64 / wasm.len() as f64,
            f.instrumented,
            f.functions
        );
    }
    println!(
        "ready = (prepare + the compile a waiting spawn needs: baseline from {} KiB prepared, else compile) / wasmtime compile of the module as given; aim <= 2",
        BASELINE_TIER_BYTES_MIN / 1024
    );
    println!("optimized = (prepare + compile) / wasmtime: until new processes run Cranelift's code (in the background)");
}
