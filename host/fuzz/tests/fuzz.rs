//! The fuzz targets as ordinary tests: every saved input in `corpus/`
//! (crashes found once, kept so they stay fixed) and a fixed number of
//! seeded mutations of the seeds, each reproducible from its seed
//! (`SHOAL_FUZZ_SEED` picks another; `SHOAL_FUZZ_EXECUTIONS` runs more).

use shoal_fuzz::{call, run, seeds::seeds, target, targets, TARGETS};
use std::path::Path;

fn executions() -> u64 {
    std::env::var("SHOAL_FUZZ_EXECUTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

fn seed() -> u64 {
    std::env::var("SHOAL_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5_40a1)
}

fn fuzz(name: &str) {
    let t = target(name).expect("a target");
    let corpus = seeds(name);
    assert!(!corpus.is_empty(), "{name} has no seeds");
    let stats = run(t, &corpus, seed(), executions());
    if let Some(c) = stats.crash {
        panic!(
            "{name} panicked at execution {} of seed {} ({}); input ({} bytes): {:?}",
            c.execution,
            c.seed,
            c.message,
            c.input.len(),
            &c.input[..c.input.len().min(256)]
        );
    }
    assert_eq!(stats.executions, corpus.len() as u64 + executions());
}

#[test]
fn snapshot_file_survives_seeded_mutations() {
    fuzz("snapshot_file");
}

#[test]
fn lane_frames_survive_seeded_mutations() {
    fuzz("lane_frames");
}

#[test]
fn api_bodies_survive_seeded_mutations() {
    fuzz("api_bodies");
}

#[test]
fn log_stream_survives_seeded_mutations() {
    fuzz("log_stream");
}

#[test]
fn migration_wire_survives_seeded_mutations() {
    fuzz("migration_wire");
}

/// Every input saved under `corpus/<target>/` (by a long run or by hand)
/// runs again; a crash once found stays fixed.
#[test]
fn the_saved_corpus_replays() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut replayed = 0;
    for (name, f) in TARGETS {
        let Ok(entries) = std::fs::read_dir(dir.join(name)) else {
            continue;
        };
        for e in entries {
            let path = e.expect("corpus entry").path();
            let input = std::fs::read(&path).expect("read corpus file");
            if let Err(m) = call(*f, &input) {
                panic!("{} panics: {m}", path.display());
            }
            replayed += 1;
        }
    }
    assert!(replayed > 0, "no saved input under {}", dir.display());
}

/// The seeds are what they claim: valid inputs that the parsers accept
/// (so mutations start from bytes that get past the first checks).
#[test]
fn the_seeds_are_accepted_by_their_parsers() {
    for file in seeds("snapshot_file") {
        shoal_snapshot_format::decode_file(&file, None).expect("a seed snapshot decodes");
    }
    for body in seeds("api_bodies") {
        let (which, json) = body.split_first().expect("a selector");
        if *which < 14 {
            serde_json::from_slice::<serde_json::Value>(json).expect("JSON");
        }
    }
    let spawn = &seeds("api_bodies")[0][1..];
    let r: shoal_api::types::SpawnRequest = serde_json::from_slice(spawn).expect("a spawn request");
    assert_eq!(r.count, 3);
    let pages = &seeds("migration_wire")[0][2..];
    let (h, _) = shoal_api::migrate::decode_pages(pages, 8).expect("a page batch");
    assert_eq!(h.indices, vec![1, 4]);
}

/// The harness reports a panic with what reproduces it: a parser that
/// breaks on a byte the mutator can write is caught, and the same seed
/// finds it at the same execution again.
#[test]
fn a_panicking_parser_is_caught_with_its_seed() {
    fn fragile(data: &[u8]) {
        assert!(!data.contains(&0xff), "0xff found");
    }
    let corpus = vec![b"abc".to_vec()];
    let first = run(("fragile", fragile), &corpus, 3, 100_000);
    let crash = first.crash.expect("the mutator writes 0xff");
    assert!(crash.message.contains("0xff found"), "{}", crash.message);
    assert!(crash.input.contains(&0xff));
    let again = run(("fragile", fragile), &corpus, 3, 100_000);
    assert_eq!(again.crash.map(|c| c.execution), Some(crash.execution));
    // And a sealed file really passes the envelope.
    let sealed = targets::seal(b"not a manifest at all, but sealed");
    let err = shoal_snapshot_format::decode_file(&sealed, None).expect_err("bad body");
    assert!(
        !matches!(
            err,
            shoal_snapshot_format::SnapshotFormatError::ChecksumMismatch { .. }
        ),
        "{err:?}"
    );
}
