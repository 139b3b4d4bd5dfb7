//! WASI preview 1 as Shoal's processes see it, checked against what
//! wasmtime's own WASI answers for the same calls.

use crate::common;

use common::TestNode;
use shoal_runtime::node::DirGrant;
use shoal_runtime::{ExitReason, SpawnSpec};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

/// Run a WAT module to its end (with `dirs` granted); its exit code.
async fn exit_code(wat: &str, dirs: Vec<DirGrant>) -> i32 {
    let t = TestNode::new();
    let hash = t
        .node
        .add_module(&wat::parse_str(wat).expect("WAT parses"))
        .expect("module");
    let mut spec = SpawnSpec::new(hash, vec!["probe".into()]);
    spec.dirs = dirs;
    let pid = t.node.spawn(spec).await.expect("spawn");
    match t.wait(pid, LONG).await.reason {
        ExitReason::Exited { code } => code,
        other => panic!("the probe did not exit: {other}"),
    }
}

/// `poll_oneoff` on stdin (read) and stdout (write): exits with its errno,
/// 100 if no event came back, or an event's error.
const POLL_STDIO_WAT: &str = r#"
(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start") (local $r i32) (local $n i32)
    ;; subscription 0 @0: userdata 11, tag 1 (fd_read), fd 0
    (i64.store (i32.const 0) (i64.const 11))
    (i32.store8 (i32.const 8) (i32.const 1))
    (i32.store (i32.const 16) (i32.const 0))
    ;; subscription 1 @48: userdata 22, tag 2 (fd_write), fd 1
    (i64.store (i32.const 48) (i64.const 22))
    (i32.store8 (i32.const 56) (i32.const 2))
    (i32.store (i32.const 64) (i32.const 1))
    (local.set $r (call $poll (i32.const 0) (i32.const 256) (i32.const 2) (i32.const 512)))
    (if (local.get $r) (then (call $exit (local.get $r))))
    (local.set $n (i32.load (i32.const 512)))
    (if (i32.eqz (local.get $n)) (then (call $exit (i32.const 100))))
    (if (i32.load16_u (i32.const 264)) (then (call $exit (i32.load16_u (i32.const 264)))))
    (if (i32.gt_u (local.get $n) (i32.const 1))
      (then (if (i32.load16_u (i32.const 296)) (then (call $exit (i32.load16_u (i32.const 296)))))))
    (call $exit (i32.const 0))))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_oneoff_on_stdio_reports_it_ready() {
    // wasmtime: an empty stdin is readable (at its end), stdout writable.
    assert_eq!(exit_code(POLL_STDIO_WAT, Vec::new()).await, 0);
}

/// `sock_shutdown(fd, RD | WR)`: exits with its errno.
fn sock_shutdown_wat(fd: u32) -> String {
    format!(
        r#"
(module
  (import "wasi_snapshot_preview1" "sock_shutdown" (func $shutdown (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (call $exit (call $shutdown (i32.const {fd}) (i32.const 3)))))
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sock_shutdown_of_a_non_socket_is_notsock() {
    // NOTSOCK (57) for a descriptor that is not a socket (stdout, a
    // preopened directory), BADF (8) for one that is not open.
    let dir = tempfile::tempdir().expect("tempdir");
    let grant = || DirGrant {
        host: dir.path().to_path_buf(),
        guest: "/data".into(),
    };
    assert_eq!(exit_code(&sock_shutdown_wat(1), Vec::new()).await, 57);
    assert_eq!(exit_code(&sock_shutdown_wat(3), vec![grant()]).await, 57);
    assert_eq!(exit_code(&sock_shutdown_wat(99), Vec::new()).await, 8);
}

/// Opens `log.txt` in the preopened dir with O_APPEND, writes `abc`, then
/// `pwrite`s `XY` at offset 0. Exits with the first errno that is not 0.
const APPEND_PWRITE_WAT: &str = r#"
(module
  (import "wasi_snapshot_preview1" "path_open" (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_pwrite" (func $pwrite (param i32 i32 i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "log.txt")
  (data (i32.const 200) "abc")
  (data (i32.const 210) "XY")
  (func (export "_start") (local $e i32) (local $fd i32)
    ;; path_open(3, 0, "log.txt", CREAT, all rights, all, APPEND, &fd @600)
    (local.set $e (call $open (i32.const 3) (i32.const 0) (i32.const 100) (i32.const 7)
      (i32.const 1) (i64.const 0x1fffffff) (i64.const 0x1fffffff) (i32.const 1) (i32.const 600)))
    (if (local.get $e) (then (call $exit (local.get $e))))
    (local.set $fd (i32.load (i32.const 600)))
    (i32.store (i32.const 0) (i32.const 200))
    (i32.store (i32.const 4) (i32.const 3))
    (local.set $e (call $write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 620)))
    (if (local.get $e) (then (call $exit (local.get $e))))
    (i32.store (i32.const 0) (i32.const 210))
    (i32.store (i32.const 4) (i32.const 2))
    (call $exit (call $pwrite (local.get $fd) (i32.const 0) (i32.const 1) (i64.const 0) (i32.const 620)))))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pwrite_on_a_file_opened_for_append_appends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let grant = DirGrant {
        host: dir.path().to_path_buf(),
        guest: "/data".into(),
    };
    assert_eq!(exit_code(APPEND_PWRITE_WAT, vec![grant]).await, 0);
    // As on Linux and in wasmtime: in append mode the offset is ignored.
    let written = std::fs::read_to_string(dir.path().join("log.txt")).expect("the file");
    assert_eq!(written, "abcXY");
}
