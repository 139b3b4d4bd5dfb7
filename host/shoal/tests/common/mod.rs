//! What the CLI tests share: running the built `shoal` binary hermetically
//! and reading what it printed.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output, Stdio};

/// The `shoal` binary under test.
pub const SHOAL: &str = env!("CARGO_BIN_EXE_shoal");

/// A `shoal` command on `data_dir`, with none of the caller's Shoal
/// environment (socket, address, credentials) and no backtraces.
pub fn shoal_command(data_dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(SHOAL);
    c.args(args)
        .env("SHOAL_DATA_DIR", data_dir)
        .env_remove("SHOAL_SOCKET")
        .env_remove("SHOAL_ADDR")
        .env_remove("SHOAL_CREDS")
        .env_remove("SHOAL_CERT")
        .env_remove("SHOAL_KEY")
        .env_remove("SHOAL_CA")
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null());
    c
}

/// Run `shoal args` on `data_dir`; no panic may reach the user.
pub fn run_shoal(data_dir: &Path, args: &[&str]) -> Output {
    let out = shoal_command(data_dir, args).output().expect("run shoal");
    assert_no_panic(&out);
    out
}

/// The stdout of a run that must have succeeded.
pub fn ok_stdout(out: &Output, args: &[&str]) -> String {
    assert!(
        out.status.success(),
        "shoal {args:?} failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// `stdout` parsed as JSON.
pub fn parse_json(stdout: &str, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(stdout)
        .unwrap_or_else(|e| panic!("shoal {args:?} printed no JSON ({e}): {stdout}"))
}

/// Bytes as text, lossily.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A path as `&str`.
pub fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A user must never see a Rust panic or a backtrace hint.
pub fn assert_no_panic(out: &Output) {
    let err = text(&out.stderr);
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "a panic reached the user: {err}"
    );
}
