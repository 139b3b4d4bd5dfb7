//! The ABI contract: the spec, the host table and the linker agree, and
//! calls behave as the spec says for hand-written modules.

use crate::common;

use common::TestNode;
use shoal_abi::table::{Provider, Ty, IMPORTS, SHOAL_ABI_MODULE};
use shoal_runtime::ExitReason;
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(60);

/// One row of a table in sdk/ABI.md.
#[derive(Debug, PartialEq)]
struct SpecRow {
    name: String,
    params: Vec<String>,
    results: Vec<String>,
    blocks: bool,
}

fn parse_types(cell: &str) -> Vec<String> {
    let cell = cell.trim();
    if cell == "—" || cell == "-" || cell.is_empty() {
        return Vec::new();
    }
    cell.split(',').map(|t| t.trim().to_string()).collect()
}

/// The rows of the table whose header's first cell is `first_header`.
fn spec_table(first_header: &str) -> Vec<SpecRow> {
    let spec = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../sdk/ABI.md"))
        .expect("read ABI.md");
    let mut rows = Vec::new();
    let mut in_table = false;
    for line in spec.lines() {
        let cells: Vec<&str> = line
            .trim()
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim())
            .collect();
        if !line.trim_start().starts_with('|') {
            in_table = false;
            continue;
        }
        if cells[0] == first_header {
            in_table = true;
            continue;
        }
        if !in_table || cells[0].starts_with("---") {
            continue;
        }
        assert_eq!(cells.len(), 4, "malformed ABI.md row: {line}");
        rows.push(SpecRow {
            name: cells[0].trim_matches('`').to_string(),
            params: parse_types(cells[1]),
            results: parse_types(cells[2]),
            blocks: cells[3] == "yes",
        });
    }
    assert!(!rows.is_empty(), "no `{first_header}` table in ABI.md");
    rows
}

fn ty_name(t: &Ty) -> String {
    match t {
        Ty::I32 => "i32".into(),
        Ty::I64 => "i64".into(),
    }
}

#[test]
fn spec_and_host_table_agree() {
    let spec = spec_table("import");
    let host: Vec<SpecRow> = IMPORTS
        .iter()
        .filter(|i| i.provider == Provider::Shoal)
        .map(|i| SpecRow {
            name: i.name.to_string(),
            params: i.params.iter().map(ty_name).collect(),
            results: i.results.iter().map(ty_name).collect(),
            blocks: i.blocking,
        })
        .collect();
    assert_eq!(spec, host, "sdk/ABI.md and host/src/abi/table.rs disagree");

    let wasi_spec = spec_table("WASI import");
    let wasi_host: Vec<SpecRow> = IMPORTS
        .iter()
        .filter(|i| i.provider == Provider::Wasi && i.blocking)
        .map(|i| SpecRow {
            name: i.name.to_string(),
            params: i.params.iter().map(ty_name).collect(),
            results: i.results.iter().map(ty_name).collect(),
            blocks: i.blocking,
        })
        .collect();
    assert_eq!(wasi_spec, wasi_host, "blocking WASI imports disagree");

    let header = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../sdk/include/shoal.h"
    ))
    .unwrap();
    for row in &spec {
        assert!(
            header.contains(&format!("SHOAL_IMPORT(\"{}\")", row.name)),
            "shoal.h lacks {}",
            row.name
        );
    }
    for (code, name) in shoal_abi::errno::ALL {
        let define = if *code == 0 {
            "#define SHOAL_OK 0".to_string()
        } else {
            format!("#define SHOAL_E{name} {code}")
        };
        assert!(header.contains(&define), "shoal.h lacks `{define}`");
    }
}

fn wat_sig(params: &[String], results: &[String]) -> String {
    let mut s = String::new();
    if !params.is_empty() {
        s += &format!(" (param {})", params.join(" "));
    }
    if !results.is_empty() {
        s += &format!(" (result {})", results.join(" "));
    }
    s
}

/// A module importing every function the spec lists, with the spec's
/// signatures; `_start` does nothing.
fn all_imports_module(tweak: impl Fn(&SpecRow) -> (String, String)) -> Vec<u8> {
    let mut wat = String::from("(module\n");
    for row in spec_table("import") {
        let (name, sig) = tweak(&row);
        wat += &format!("  (import \"{SHOAL_ABI_MODULE}\" \"{name}\" (func{sig}))\n");
    }
    for row in spec_table("WASI import") {
        wat += &format!(
            "  (import \"wasi_snapshot_preview1\" \"{}\" (func{}))\n",
            row.name,
            wat_sig(&row.params, &row.results)
        );
    }
    wat += "  (memory (export \"memory\") 1)\n  (func (export \"_start\"))\n)\n";
    wat::parse_str(&wat).expect("generated WAT parses")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_importing_every_abi_function_links() {
    let t = TestNode::new();
    let wasm = all_imports_module(|row| (row.name.clone(), wat_sig(&row.params, &row.results)));
    let hash = t.node.add_module(&wasm).unwrap();
    let pid = t.spawn(hash, &["all_imports"]).await;
    assert_eq!(
        t.wait(pid, LONG).await.reason,
        ExitReason::Exited { code: 0 }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_signature_is_a_clear_link_error() {
    let t = TestNode::new();
    let wasm = all_imports_module(|row| {
        if row.name == "send" {
            (row.name.clone(), " (param i32) (result i32)".to_string())
        } else {
            (row.name.clone(), wat_sig(&row.params, &row.results))
        }
    });
    let hash = t.node.add_module(&wasm).unwrap();
    let err = t
        .node
        .spawn(shoal_runtime::SpawnSpec::new(hash, vec!["x".into()]))
        .await
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("send"), "names the import: {text}");
    assert!(text.contains("cannot be linked"), "{text}");

    let wasm = all_imports_module(|row| {
        if row.name == "send" {
            (
                "no_such_call".to_string(),
                wat_sig(&row.params, &row.results),
            )
        } else {
            (row.name.clone(), wat_sig(&row.params, &row.results))
        }
    });
    let hash = t.node.add_module(&wasm).unwrap();
    let err = t
        .node
        .spawn(shoal_runtime::SpawnSpec::new(hash, vec!["x".into()]))
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("no_such_call"), "{err:#}");
}

const RECV_TIMEOUT_WAT: &str = r#"
(module
  (import "shoal_v1" "recv" (func $recv (param i32 i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (call $exit (i32.sub (i32.const 0)
      (call $recv (i32.const 0) (i32.const 1024) (i64.const 200) (i32.const 2048))))))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recv_times_out() {
    let t = TestNode::new();
    let hash = t
        .node
        .add_module(&wat::parse_str(RECV_TIMEOUT_WAT).unwrap())
        .unwrap();
    t.node.load_module(&hash).unwrap();
    let started = Instant::now();
    let pid = t.spawn(hash, &["recv_timeout"]).await;
    let status = t.wait(pid, LONG).await;
    let elapsed = started.elapsed();
    // -TIMEOUT = 4
    assert_eq!(
        status.reason,
        ExitReason::Exited {
            code: -shoal_abi::errno::TIMEOUT
        }
    );
    assert!(
        elapsed >= Duration::from_millis(200),
        "returned after {elapsed:?}"
    );
}

const RECV_SMALL_BUFFER_WAT: &str = r#"
(module
  (import "shoal_v1" "recv" (func $recv (param i32 i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    ;; too small: BUFFER_TOO_SMALL (-5), needed length in info.len
    (if (i32.ne (call $recv (i32.const 0) (i32.const 10) (i64.const -1) (i32.const 2048)) (i32.const -5))
      (then (call $exit (i32.const 10))))
    (if (i32.ne (i32.load (i32.const 2056)) (i32.const 100))
      (then (call $exit (i32.const 11))))
    ;; large enough: the same message, 100 bytes
    (if (i32.ne (call $recv (i32.const 0) (i32.const 1024) (i64.const 0) (i32.const 2048)) (i32.const 100))
      (then (call $exit (i32.const 12))))
    ;; buffer partly outside memory: FAULT (-1)
    (if (i32.ne (call $recv (i32.const 65500) (i32.const 100) (i64.const 0) (i32.const 0)) (i32.const -1))
      (then (call $exit (i32.const 13))))
    ;; empty mailbox, poll: TIMEOUT (-4)
    (if (i32.ne (call $recv (i32.const 0) (i32.const 1024) (i64.const 0) (i32.const 0)) (i32.const -4))
      (then (call $exit (i32.const 14))))
    (call $exit (i32.const 0))))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recv_keeps_a_message_that_does_not_fit() {
    let t = TestNode::new();
    let hash = t
        .node
        .add_module(&wat::parse_str(RECV_SMALL_BUFFER_WAT).unwrap())
        .unwrap();
    let me = t.node.open_mailbox();
    let pid = t.spawn(hash, &["recv_small"]).await;
    me.send(pid, vec![7u8; 100]).unwrap();
    let status = t.wait(pid, LONG).await;
    assert_eq!(
        status.reason,
        ExitReason::Exited { code: 0 },
        "exit code names the failed step"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_to_a_dead_pid_and_oversized_messages_fail_cleanly() {
    let t = TestNode::new();
    let me = t.node.open_mailbox();
    assert!(me.send(shoal_runtime::Pid(999_999), "x").is_err());
    let wat = r#"
    (module
      (import "shoal_v1" "send" (func $send (param i64 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
      (memory (export "memory") 17)
      (func (export "_start")
        (if (i32.ne (call $send (i64.const 999999) (i32.const 0) (i32.const 4)) (i32.const -3))
          (then (call $exit (i32.const 1))))
        ;; 1 MiB + 1 bytes: TOO_LARGE (-6)
        (if (i32.ne (call $send (i64.const 999999) (i32.const 0) (i32.const 1048577)) (i32.const -6))
          (then (call $exit (i32.const 2))))
        (call $exit (i32.const 0))))
    "#;
    let hash = t.node.add_module(&wat::parse_str(wat).unwrap()).unwrap();
    let pid = t.spawn(hash, &["send_errors"]).await;
    assert_eq!(
        t.wait(pid, LONG).await.reason,
        ExitReason::Exited { code: 0 }
    );
}

/// `recv_match`, `send_request` and `demonitor` against hostile arguments:
/// each check answers its own code, pointers first; the exit code names
/// the step that answered wrong.
const SELECTIVE_HOSTILE_WAT: &str = r#"
(module
  (import "shoal_v1" "recv_match" (func $match (param i32 i64 i32 i32 i64 i32) (result i32)))
  (import "shoal_v1" "send_request" (func $request (param i64 i32 i32 i32) (result i32)))
  (import "shoal_v1" "demonitor" (func $demonitor (param i64) (result i32)))
  (import "shoal_v1" "self_pid" (func $self (result i64)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func $expect (param $got i32) (param $want i32) (param $step i32)
    (if (i32.ne (local.get $got) (local.get $want)) (then (call $exit (local.get $step)))))
  (func (export "_start")
    ;; an unknown filter: INVALID
    (call $expect (call $match (i32.const 99) (i64.const 0) (i32.const 0) (i32.const 1024) (i64.const 0) (i32.const 2048)) (i32.const -2) (i32.const 1))
    ;; a reply to a request never made: INVALID (it would wait forever)
    (call $expect (call $match (i32.const 2) (i64.const 12345) (i32.const 0) (i32.const 1024) (i64.const -1) (i32.const 2048)) (i32.const -2) (i32.const 2))
    ;; the buffer outside memory: FAULT, before the filter is looked at
    (call $expect (call $match (i32.const 1) (i64.const 5) (i32.const 65500) (i32.const 100) (i64.const 0) (i32.const 2048)) (i32.const -1) (i32.const 3))
    (call $expect (call $match (i32.const 99) (i64.const 0) (i32.const 65500) (i32.const 100) (i64.const 0) (i32.const 2048)) (i32.const -1) (i32.const 4))
    ;; the 32-byte info partly outside memory: FAULT
    (call $expect (call $match (i32.const 1) (i64.const 5) (i32.const 0) (i32.const 1024) (i64.const 0) (i32.const 65520)) (i32.const -1) (i32.const 5))
    ;; a negative length: INVALID
    (call $expect (call $match (i32.const 1) (i64.const 5) (i32.const 0) (i32.const -1) (i64.const 0) (i32.const 2048)) (i32.const -2) (i32.const 6))
    ;; a request to itself: INVALID
    (call $expect (call $request (call $self) (i32.const 0) (i32.const 4) (i32.const 3000)) (i32.const -2) (i32.const 7))
    ;; the reference outside memory: FAULT
    (call $expect (call $request (i64.const 999999) (i32.const 0) (i32.const 4) (i32.const 65532)) (i32.const -1) (i32.const 8))
    ;; over the message limit: TOO_LARGE
    (call $expect (call $request (i64.const 999999) (i32.const 0) (i32.const 1048577) (i32.const 3000)) (i32.const -6) (i32.const 9))
    ;; nobody there: NO_PROCESS, and no request is left pending
    (call $expect (call $request (i64.const 999999) (i32.const 0) (i32.const 4) (i32.const 3000)) (i32.const -3) (i32.const 10))
    ;; nothing from pid 5: a poll times out
    (call $expect (call $match (i32.const 1) (i64.const 5) (i32.const 0) (i32.const 1024) (i64.const 0) (i32.const 2048)) (i32.const -4) (i32.const 11))
    ;; withdrawing what is not held: INVALID
    (call $expect (call $demonitor (i64.const 777)) (i32.const -2) (i32.const 12))
    (call $exit (i32.const 0))))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selective_receive_and_requests_refuse_hostile_arguments() {
    let t = TestNode::new();
    let hash = t
        .node
        .add_module(&wat::parse_str(SELECTIVE_HOSTILE_WAT).unwrap())
        .unwrap();
    let pid = t.spawn(hash, &["selective_hostile"]).await;
    assert_eq!(
        t.wait(pid, LONG).await.reason,
        ExitReason::Exited { code: 0 },
        "exit code names the failed step"
    );
}
