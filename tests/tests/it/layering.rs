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
    ("shoal-snapshot-format", &["shoal-registry"]),
    // The fuzz targets: only crates that do not link wasmtime.
    (
        "shoal-fuzz",
        &[
            "shoal-abi",
            "shoal-registry",
            "shoal-snapshot-format",
            "shoal-net",
            "shoal-api",
        ],
    ),
    (
        "shoal-runtime",
        &[
            "shoal-abi",
            "shoal-prepare",
            "shoal-registry",
            "shoal-snapshot-format",
        ],
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
            "shoal-snapshot-format",
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
            "shoal-snapshot-format",
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
            "shoal-snapshot-format",
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

/// The folder a source file belongs to, inside its crate's `src`: its top
/// folder (`node/table.rs` → `node`; `state.rs` beside a `state/` folder →
/// `state`), else `<root>` for files at the top (`lib.rs`, `process.rs`).
fn unit_of(src: &Path, first: &str) -> String {
    let name = first.strip_suffix(".rs").unwrap_or(first);
    if src.join(name).is_dir() {
        name.to_string()
    } else {
        "<root>".to_string()
    }
}

/// The names a line imports from its own crate: `crate::x::…` gives `x`,
/// `crate::{x, y::z}` gives `x` and `y`.
fn crate_paths(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("crate::") {
        // `shoal_crate::` or `my_crate::` are not this crate.
        let before = rest[..at].chars().last();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let head = item.trim().split("::").next().unwrap_or("").trim();
                if !head.is_empty() {
                    out.push(head.to_string());
                }
            }
        } else {
            let head: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !head.is_empty() {
                out.push(head);
            }
        }
    }
    out
}

/// Every `crate::` import between different folders of the crate whose
/// sources are in `src`: (from folder, to folder) → files making the edge.
/// Comment lines (docs included) are not imports. `mod` declarations are
/// not either: `lib.rs` declaring a folder does not depend on it.
fn folder_edges(src: &Path) -> BTreeMap<(String, String), BTreeSet<String>> {
    let mut edges: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let rel = path.strip_prefix(src).expect("under src");
            let first = rel
                .components()
                .next()
                .and_then(|c| c.as_os_str().to_str())
                .expect("a first component")
                .to_string();
            let from = unit_of(src, &first);
            let text = std::fs::read_to_string(&path).expect("read source");
            for line in text.lines() {
                if line.trim_start().starts_with("//") {
                    continue;
                }
                for name in crate_paths(line) {
                    let is_module =
                        src.join(&name).is_dir() || src.join(format!("{name}.rs")).is_file();
                    let to = if is_module {
                        unit_of(src, &name)
                    } else {
                        "<root>".to_string()
                    };
                    if to != from {
                        edges
                            .entry((from.clone(), to))
                            .or_default()
                            .insert(rel.display().to_string());
                    }
                }
            }
        }
    }
    edges
}

/// The import circles between folders: each as the folders around it and,
/// for each step, the files that make it.
fn folder_circles(edges: &BTreeMap<(String, String), BTreeSet<String>>) -> Vec<String> {
    let nodes: BTreeSet<&String> = edges.keys().flat_map(|(a, b)| [a, b]).collect();
    let reaches = |from: &String, to: &String| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from];
        while let Some(n) = todo.pop() {
            if n == to {
                return true;
            }
            if seen.insert(n) {
                todo.extend(edges.keys().filter(|(a, _)| a == n).map(|(_, b)| b));
            }
        }
        false
    };
    let mut circles = Vec::new();
    for ((a, b), files) in edges {
        // The edge a -> b lies on a circle when b leads back to a.
        if nodes.contains(b) && reaches(b, a) {
            circles.push(format!(
                "{a} -> {b} (in {files:?}) and {b} leads back to {a}"
            ));
        }
    }
    circles
}

/// "No import circle between files of different folders": within each
/// host crate, the folders (and the files at the top, together) import
/// each other in one direction only, so each folder is a layer that can be
/// read, tested and later split out without the rest.
#[test]
fn no_crate_has_an_import_circle_between_its_folders() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut crates: Vec<_> = std::fs::read_dir(root.join("host"))
        .expect("host/")
        .map(|e| e.expect("entry").path().join("src"))
        .filter(|p| p.is_dir())
        .collect();
    crates.push(root.join("registry/src"));
    crates.sort();
    assert!(crates.len() >= 9, "{crates:?}");
    let mut bad = Vec::new();
    for src in &crates {
        for circle in folder_circles(&folder_edges(src)) {
            bad.push(format!("{}: {circle}", src.display()));
        }
    }
    assert!(bad.is_empty(), "import circles:\n{}", bad.join("\n"));
}

/// The check sees a circle through the top files and through a `use
/// crate::{…}` group, and nothing in comments.
#[test]
fn the_folder_check_catches_a_circle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path();
    std::fs::create_dir(src.join("node")).expect("mkdir");
    std::fs::write(src.join("lib.rs"), "pub mod node;\npub mod spec;\n").expect("write");
    std::fs::write(src.join("spec.rs"), "use crate::{node::Node, pid};\n").expect("write");
    std::fs::write(src.join("pid.rs"), "/// see crate::node\npub struct Pid;\n").expect("write");
    std::fs::write(src.join("node/mod.rs"), "use crate::spec::Spec;\n").expect("write");
    let edges = folder_edges(src);
    let circles = folder_circles(&edges);
    assert_eq!(circles.len(), 2, "{circles:?}");
    assert!(circles[0].contains("spec.rs"), "{circles:?}");
    // Cut the upward import: no circle, and the doc comment never counted.
    std::fs::write(src.join("spec.rs"), "use crate::pid::Pid;\n").expect("write");
    assert!(folder_circles(&folder_edges(src)).is_empty());
}
