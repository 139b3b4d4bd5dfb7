//! The crate map of README.md, enforced: every dependency edge between the
//! workspace's crates (and the few external crates that mark a layer) must be
//! one the map allows. A new edge, or a new crate, fails this test until the
//! map — here and in README.md — says it may exist.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

/// Each crate of the workspace and the workspace crates it may depend on
/// (normal and build dependencies; dev-dependencies may also name crates of
/// lower layers, checked the same way).
const MAP: &[(&str, &[&str])] = &[
    ("shoal-abi", &[]),
    ("shoal-registry", &[]),
    ("shoal-prepare", &[]),
    ("shoal-pki", &[]),
    (
        "shoal-runtime",
        &["shoal-abi", "shoal-prepare", "shoal-registry"],
    ),
    ("shoal-net", &["shoal-pki"]),
    ("shoal-cluster", &["shoal-abi", "shoal-pki"]),
    (
        "shoal-api",
        &["shoal-abi", "shoal-pki", "shoal-cluster", "shoal-registry"],
    ),
    (
        "shoal-daemon",
        &[
            "shoal-abi",
            "shoal-prepare",
            "shoal-runtime",
            "shoal-pki",
            "shoal-net",
            "shoal-cluster",
            "shoal-api",
            "shoal-registry",
        ],
    ),
    (
        "shoal",
        &[
            "shoal-abi",
            "shoal-prepare",
            "shoal-runtime",
            "shoal-pki",
            "shoal-cluster",
            "shoal-api",
            "shoal-daemon",
            "shoal-registry",
        ],
    ),
    // The integration tests may use every crate.
    (
        "shoal-tests",
        &[
            "shoal-abi",
            "shoal-prepare",
            "shoal-runtime",
            "shoal-pki",
            "shoal-net",
            "shoal-cluster",
            "shoal-api",
            "shoal-daemon",
            "shoal-registry",
            "shoal",
        ],
    ),
];

/// External crates that only certain layers may use: the engine stays in
/// the runtime, the CLI's parser and catch-all errors stay in the binary.
const EXTERNAL: &[(&str, &[&str])] = &[
    ("wasmtime", &["shoal-runtime"]),
    ("wasi-common", &["shoal-runtime"]),
    ("clap", &["shoal"]),
    ("anyhow", &["shoal"]),
    ("openraft", &["shoal-cluster"]),
    ("redb", &["shoal-cluster"]),
];

/// One dependency edge: (from crate, to crate, kind).
type Edge = (String, String, String);

fn workspace_edges() -> (BTreeSet<String>, Vec<Edge>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(&root)
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata is JSON");
    let mut names = BTreeSet::new();
    let mut edges = Vec::new();
    for pkg in meta["packages"].as_array().expect("packages") {
        let name = pkg["name"].as_str().expect("name").to_string();
        names.insert(name.clone());
        for dep in pkg["dependencies"].as_array().expect("dependencies") {
            let kind = dep["kind"].as_str().unwrap_or("normal").to_string();
            edges.push((
                name.clone(),
                dep["name"].as_str().expect("dep name").to_string(),
                kind,
            ));
        }
    }
    (names, edges)
}

/// The edges that break the map, as readable lines (empty when it holds).
fn violations(names: &BTreeSet<String>, edges: &[Edge]) -> Vec<String> {
    let map: BTreeMap<&str, &[&str]> = MAP.iter().copied().collect();
    let external: BTreeMap<&str, &[&str]> = EXTERNAL.iter().copied().collect();
    let mut bad = Vec::new();
    for name in names {
        if !map.contains_key(name.as_str()) {
            bad.push(format!("crate {name} is not in the crate map"));
        }
    }
    for (from, to, kind) in edges {
        if names.contains(to) {
            let allowed = map.get(from.as_str()).copied().unwrap_or(&[]);
            if !allowed.contains(&to.as_str()) {
                bad.push(format!("{from} -> {to} ({kind}) is not in the crate map"));
            }
        } else if let Some(users) = external.get(to.as_str()) {
            // Dev-dependencies may pull the engine in to test a lower layer.
            if kind != "dev" && !users.contains(&from.as_str()) {
                bad.push(format!(
                    "{from} -> {to} ({kind}): only {users:?} may use {to}"
                ));
            }
        }
    }
    bad
}

#[test]
fn every_dependency_edge_is_in_the_crate_map() {
    let (names, edges) = workspace_edges();
    for expected in ["shoal-abi", "shoal-runtime", "shoal-daemon", "shoal"] {
        assert!(
            names.contains(expected),
            "{expected} missing from {names:?}"
        );
    }
    let bad = violations(&names, &edges);
    assert!(bad.is_empty(), "layering broken:\n{}", bad.join("\n"));
}

#[test]
fn the_check_catches_an_upward_edge_and_an_unmapped_crate() {
    let (mut names, mut edges) = workspace_edges();
    edges.push(("shoal-runtime".into(), "shoal-net".into(), "normal".into()));
    edges.push(("shoal-api".into(), "shoal-daemon".into(), "normal".into()));
    edges.push(("shoal-daemon".into(), "clap".into(), "normal".into()));
    names.insert("shoal-stray".into());
    let bad = violations(&names, &edges);
    assert!(
        bad.iter()
            .any(|l| l.starts_with("shoal-runtime -> shoal-net")),
        "{bad:?}"
    );
    assert!(
        bad.iter()
            .any(|l| l.starts_with("shoal-api -> shoal-daemon")),
        "{bad:?}"
    );
    assert!(
        bad.iter().any(|l| l.starts_with("shoal-daemon -> clap")),
        "{bad:?}"
    );
    assert!(bad.iter().any(|l| l.contains("shoal-stray")), "{bad:?}");
}
