//! The `shoal` binary as a user meets it: exit codes, streamed output,
//! grants, and clear errors (never a panic) for mistakes.
// Test code: clippy.toml allows unwrap in tests, which clippy only applies
// to #[test] functions, not to the helpers of an integration test crate.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::{Command, Output};

mod common;

use common::{assert_no_panic, p, text, SHOAL};

/// Writes "hi\n" to stdout, "oops\n" to stderr, then exits with the code in
/// the environment variable count (number of env vars, so `--env` is seen).
const ECHO_WAT: &str = r#"
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $env_sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "hi\n")
  (data (i32.const 200) "oops\n")
  (func (export "_start")
    ;; iovec at 0: {100, 3}
    (i32.store (i32.const 0) (i32.const 100))
    (i32.store (i32.const 4) (i32.const 3))
    (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16)))
    (i32.store (i32.const 0) (i32.const 200))
    (i32.store (i32.const 4) (i32.const 5))
    (drop (call $write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 16)))
    (drop (call $env_sizes (i32.const 32) (i32.const 36)))
    (call $exit (i32.load (i32.const 32)))))
"#;

const TRAP_WAT: &str = r#"(module (memory (export "memory") 1) (func $boom unreachable) (func (export "_start") call $boom))"#;

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn wat(&self, name: &str, wat: &str) -> PathBuf {
        self.file(name, &wat::parse_str(wat).unwrap())
    }

    fn shoal(&self, args: &[&str]) -> Output {
        Command::new(SHOAL)
            .args(args)
            .env("SHOAL_DATA_DIR", self.dir.path().join("data"))
            .env_remove("RUST_BACKTRACE")
            .output()
            .expect("run shoal")
    }
}

#[test]
fn run_streams_output_and_propagates_the_exit_code() {
    let env = Env::new();
    let m = env.wat("echo.wasm", ECHO_WAT);
    let out = env.shoal(&["run", p(&m)]);
    assert_eq!(text(&out.stdout), "hi\n");
    assert_eq!(text(&out.stderr), "oops\n");
    assert_eq!(out.status.code(), Some(0), "no env vars granted");
    let out = env.shoal(&["run", "--env", "A=1", "--env", "B=2", p(&m)]);
    assert_eq!(out.status.code(), Some(2), "two env vars granted");
}

#[test]
fn a_trap_exits_134_with_a_message_naming_the_function() {
    let env = Env::new();
    let m = env.wat("trap.wasm", TRAP_WAT);
    let out = env.shoal(&["run", p(&m)]);
    assert_eq!(out.status.code(), Some(134));
    let err = text(&out.stderr);
    assert!(err.contains("trapped"), "{err}");
    assert!(err.contains("unreachable"), "{err}");
    assert!(err.contains("boom"), "names the function: {err}");
    assert_no_panic(&out);
}

#[test]
fn user_mistakes_get_clear_errors() {
    let env = Env::new();
    let out = env.shoal(&["run", "/no/such/file.wasm"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("neither a file nor a module"),
        "{}",
        text(&out.stderr)
    );
    assert_no_panic(&out);

    let bad = env.file("bad.wasm", b"\0asm\x01\0\0\0\x01\x05junk!");
    let out = env.shoal(&["run", p(&bad)]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("invalid module") && err.contains("offset"),
        "{err}"
    );
    assert_no_panic(&out);

    let m = env.wat("echo.wasm", ECHO_WAT);
    let out = env.shoal(&["run", "--dir", "/no/such/dir", p(&m)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not a directory"),
        "{}",
        text(&out.stderr)
    );

    let out = env.shoal(&["run", "--memory-max", "lots", p(&m)]);
    assert_eq!(out.status.code(), Some(2), "usage error");
    assert!(
        text(&out.stderr).contains("not a size"),
        "{}",
        text(&out.stderr)
    );

    let out = env.shoal(&["push", p(&bad)]);
    assert_eq!(out.status.code(), Some(1));
    assert_no_panic(&out);
}

#[test]
fn push_ls_inspect_and_run_by_name() {
    let env = Env::new();
    let m = env.wat("echo.wasm", ECHO_WAT);
    let out = env.shoal(&["push", p(&m), "--name", "echo:v1", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let pushed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let hash = pushed["hash"].as_str().unwrap().to_string();
    assert!(hash.starts_with("sha256:"));

    let out = env.shoal(&["ls", "--json"]);
    let ls: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ls["names"][0]["name"], "echo:v1");
    assert_eq!(ls["names"][0]["hash"], hash.as_str());

    let out = env.shoal(&["inspect", "echo:v1", "--json"]);
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["hash"], hash.as_str());
    assert_eq!(info["abi_version"], serde_json::Value::Null);
    assert_eq!(info["compiled_cached"], false);
    assert_eq!(info["loops"], 0);
    assert!(info["imports"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["name"] == "fd_write"));

    let out = env.shoal(&["run", "echo:v1"]);
    assert_eq!(text(&out.stdout), "hi\n");
    // The preemptible variant of a module without loops only gains the import.
    let out = env.shoal(&["run", "--preemptible", "echo:v1"]);
    assert_eq!(text(&out.stdout), "hi\n", "{}", text(&out.stderr));
    let out = env.shoal(&["inspect", &hash, "--json"]);
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        info["compiled_cached"], true,
        "the run cached the compiled artifact"
    );
}

#[test]
fn help_teaches() {
    let env = Env::new();
    let out = env.shoal(&["run", "--help"]);
    let help = text(&out.stdout);
    assert!(
        help.contains("--dir") && help.contains("HOST_DIR[::GUEST_DIR]"),
        "{help}"
    );
    assert!(help.contains("Examples"), "{help}");
}
