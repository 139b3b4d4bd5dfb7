//! Fuzz targets for the parsers that read bytes from a file, a peer or a
//! client, in a crate that does not link wasmtime (so each target is
//! cheap to run many times, and runs the same under libFuzzer and here).
//!
//! - [`targets`]: one function per parser. Each must return for every
//!   input, never panic, and hold its properties: what decodes re-encodes
//!   to something that decodes the same; two decoders of one format
//!   (whole file, stream) agree; sizes stay within their bounds.
//! - [`mutate`]: a seeded mutator (bit flips, interesting values, inserts,
//!   deletes, splices) over a corpus of valid inputs ([`seeds`]), so a run
//!   is reproducible from its seed on the stable toolchain.
//! - [`run`]: drive a target for a number of executions, catching a panic
//!   and returning the input that caused it (to save in `corpus/`).
//!
//! `cargo fuzz` (nightly, libFuzzer with coverage) drives the same targets
//! from `host/fuzz/nightly`; `cargo run --release -p shoal-fuzz --bin
//! shoal-fuzz -- all --seconds 600` is the long run on stable; the tests
//! of this crate replay `corpus/` and a fixed number of seeded executions
//! of every target in CI.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod mutate;
pub mod seeds;
pub mod targets;

use std::panic::{catch_unwind, AssertUnwindSafe};

/// A target: a name and the function that parses one input.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, by name.
pub const TARGETS: &[Target] = &[
    ("snapshot_file", targets::snapshot_file),
    ("lane_frames", targets::lane_frames),
    ("api_bodies", targets::api_bodies),
    ("log_stream", targets::log_stream),
    ("migration_wire", targets::migration_wire),
];

/// The target named `name`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().copied().find(|(n, _)| *n == name)
}

/// An input that made a target panic, with what reproduces it.
#[derive(Debug, Clone)]
pub struct Crash {
    /// The target.
    pub target: &'static str,
    /// The run's seed.
    pub seed: u64,
    /// Which execution of the run (0-based).
    pub execution: u64,
    /// The input.
    pub input: Vec<u8>,
    /// The panic message.
    pub message: String,
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Inputs the target parsed.
    pub executions: u64,
    /// The first panic, if any (the run stops there).
    pub crash: Option<Crash>,
}

/// Run target `t` on `inputs` (the corpus) as they are, then on
/// `executions` mutations of them drawn from `seed`, stopping at the
/// first panic. The same seed and corpus give the same inputs.
pub fn run(t: Target, corpus: &[Vec<u8>], seed: u64, executions: u64) -> Stats {
    let (name, f) = t;
    let mut stats = Stats::default();
    let mut rng = mutate::Rng::new(seed);
    let check = |input: Vec<u8>, execution: u64, stats: &mut Stats| {
        stats.executions += 1;
        if let Err(Panicked(message)) = call(f, &input) {
            stats.crash = Some(Crash {
                target: name,
                seed,
                execution,
                input,
                message,
            });
            return false;
        }
        true
    };
    for (i, input) in corpus.iter().enumerate() {
        if !check(input.clone(), i as u64, &mut stats) {
            return stats;
        }
    }
    for i in 0..executions {
        let input = mutate::mutate(&mut rng, corpus, mutate::INPUT_BYTES_MAX);
        if !check(input, i, &mut stats) {
            return stats;
        }
    }
    stats
}

/// A target panicked on an input: the panic's message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Panicked(pub String);

impl std::fmt::Display for Panicked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Panicked {}

/// Call `f` on `input`, turning a panic into its message.
pub fn call(f: fn(&[u8]), input: &[u8]) -> Result<(), Panicked> {
    catch_unwind(AssertUnwindSafe(|| f(input))).map_err(|payload| {
        Panicked(
            payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic without a message".to_string()),
        )
    })
}
