//! The long run on the stable toolchain: drive the targets for a while,
//! print executions and their rate, and save any crashing input under
//! `corpus/<target>/` (where the tests replay it).
//!
//! ```text
//! shoal-fuzz [TARGET|all] [--seconds N] [--seed S] [--corpus DIR]
//! ```

use shoal_fuzz::{run, seeds::seeds, Stats, TARGETS};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Executions per batch between clock checks.
const BATCH: u64 = 20_000;

fn usage() -> ExitCode {
    eprintln!(
        "usage: shoal-fuzz [TARGET|all] [--seconds N] [--seed S] [--corpus DIR]\n\
         targets: {}",
        TARGETS
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut which = "all".to_string();
    let mut seconds = 60u64;
    let mut seed = 1u64;
    let mut corpus_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| match args.next() {
            Some(v) => Ok(v),
            None => Err(format!("{name} needs a value")),
        };
        let parsed = match a.as_str() {
            "--seconds" => value("--seconds").and_then(|v| {
                v.parse()
                    .map_err(|e| format!("--seconds: {e}"))
                    .map(|v| seconds = v)
            }),
            "--seed" => value("--seed").and_then(|v| {
                v.parse()
                    .map_err(|e| format!("--seed: {e}"))
                    .map(|v| seed = v)
            }),
            "--corpus" => value("--corpus").map(|v| corpus_dir = v.into()),
            "-h" | "--help" => return usage(),
            t if !t.starts_with('-') => {
                which = t.to_string();
                Ok(())
            }
            other => Err(format!("unknown option {other}")),
        };
        if let Err(e) = parsed {
            eprintln!("shoal-fuzz: {e}");
            return usage();
        }
    }
    let chosen: Vec<_> = TARGETS
        .iter()
        .copied()
        .filter(|(n, _)| which == "all" || *n == which)
        .collect();
    if chosen.is_empty() {
        eprintln!("shoal-fuzz: no target named {which}");
        return usage();
    }
    // Silence the default panic print: a crash is reported below, once.
    std::panic::set_hook(Box::new(|_| {}));
    let share = Duration::from_secs(seconds) / chosen.len() as u32;
    let mut failed = false;
    for t in chosen {
        let corpus = load_corpus(&corpus_dir, t.0, seeds(t.0));
        let started = Instant::now();
        let mut total = Stats::default();
        let mut batch_seed = seed;
        while started.elapsed() < share && total.crash.is_none() {
            let s = run(t, &corpus, batch_seed, BATCH);
            total.executions += s.executions;
            total.crash = s.crash;
            batch_seed = batch_seed.wrapping_add(1);
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{:<16} {:>12} executions in {:>6.1} s ({:>9.0}/s), corpus {}",
            t.0,
            total.executions,
            secs,
            total.executions as f64 / secs.max(1e-9),
            corpus.len()
        );
        if let Some(c) = total.crash {
            failed = true;
            let dir = corpus_dir.join(t.0);
            let path = dir.join(format!("crash-seed{}-exec{}", c.seed, c.execution));
            let saved = std::fs::create_dir_all(&dir).and_then(|_| std::fs::write(&path, &c.input));
            println!(
                "  CRASH: {} (seed {}, execution {}); input {}: {}",
                c.message,
                c.seed,
                c.execution,
                match saved {
                    Ok(()) => "saved".to_string(),
                    Err(e) => format!("not saved ({e})"),
                },
                path.display()
            );
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The seeds plus every saved input of `target` under `dir`.
fn load_corpus(dir: &std::path::Path, target: &str, mut corpus: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    if let Ok(entries) = std::fs::read_dir(dir.join(target)) {
        let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for p in paths {
            if let Ok(bytes) = std::fs::read(&p) {
                corpus.push(bytes);
            }
        }
    }
    corpus
}
