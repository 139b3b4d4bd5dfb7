//! `shoal node start` and the verbs that talk to it, as a user meets them:
//! a real daemon process on a Unix socket in a temporary data directory,
//! driven by the real `shoal` binary.
// A test that cannot set up its fixture should stop right there.
#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{assert_no_panic, ok_stdout, p, parse_json, run_shoal, shoal_command, text};

/// How long anything in these tests may take before it is a failure.
const LONG: Duration = Duration::from_secs(60);

/// Prints one line to stdout and one to stderr, then blocks forever in
/// `shoal_v1.recv` with timeout -1 (and again after any message).
const BLOCKER_WAT: &str = r#"
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (import "shoal_v1" "recv" (func $recv (param i32 i32 i64 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "hello from shoal\n")
  (data (i32.const 200) "warming up\n")
  (func $print (param $fd i32) (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 16))))
  (func (export "_start")
    (call $print (i32.const 1) (i32.const 100) (i32.const 17))
    (call $print (i32.const 2) (i32.const 200) (i32.const 11))
    (loop $forever
      (drop (call $recv (i32.const 1024) (i32.const 1024) (i64.const -1) (i32.const 0)))
      (br $forever))))
"#;

/// Forever: count up (the counter lives in linear memory), print
/// `tick <n>`, then block in `shoal_v1.recv` for 50 ms. A restored copy
/// goes on counting where the captured one stopped.
const TICKER_WAT: &str = r#"
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (import "shoal_v1" "recv" (func $recv (param i32 i32 i64 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 400) "tick ")
  (func $tick (local $n i32) (local $len i32) (local $p i32)
    (i32.store (i32.const 300) (i32.add (i32.load (i32.const 300)) (i32.const 1)))
    (local.set $n (i32.load (i32.const 300)))
    (loop $count
      (local.set $len (i32.add (local.get $len) (i32.const 1)))
      (local.set $n (i32.div_u (local.get $n) (i32.const 10)))
      (br_if $count (i32.ne (local.get $n) (i32.const 0))))
    (local.set $n (i32.load (i32.const 300)))
    (local.set $p (i32.add (i32.const 405) (local.get $len)))
    (i32.store8 (local.get $p) (i32.const 10))
    (loop $digits
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p) (i32.add (i32.const 48) (i32.rem_u (local.get $n) (i32.const 10))))
      (local.set $n (i32.div_u (local.get $n) (i32.const 10)))
      (br_if $digits (i32.ne (local.get $n) (i32.const 0))))
    (i32.store (i32.const 0) (i32.const 400))
    (i32.store (i32.const 4) (i32.add (local.get $len) (i32.const 6)))
    (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16))))
  (func (export "_start")
    (loop $forever
      (call $tick)
      (drop (call $recv (i32.const 1024) (i32.const 1024) (i64.const 50) (i32.const 0)))
      (br $forever))))
"#;

/// A temporary data directory and the `shoal` binary pointed at it.
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn socket(&self) -> PathBuf {
        self.data_dir().join("node.sock")
    }

    fn wat(&self, name: &str, wat: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, wat::parse_str(wat).unwrap()).unwrap();
        p
    }

    fn command(&self, args: &[&str]) -> Command {
        shoal_command(&self.data_dir(), args)
    }

    fn shoal(&self, args: &[&str]) -> Output {
        run_shoal(&self.data_dir(), args)
    }

    /// Run a verb that must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        ok_stdout(&self.shoal(args), args)
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        parse_json(&self.ok(args), args)
    }

    /// Start `shoal node start` and wait until its socket accepts.
    fn start_daemon(&self) -> Daemon {
        self.try_start_daemon()
            .unwrap_or_else(|(status, out, err)| {
                panic!("the daemon did not start ({status}): {out}{err}")
            })
    }

    fn try_start_daemon(&self) -> Result<Daemon, (String, String, String)> {
        self.try_start_daemon_with(&[], &[])
    }

    /// Start the daemon with extra arguments and environment variables.
    fn try_start_daemon_with(
        &self,
        extra_args: &[&str],
        vars: &[(&str, &str)],
    ) -> Result<Daemon, (String, String, String)> {
        let out_path = self.dir.path().join(format!("daemon-{}.out", now_ns()));
        let err_path = out_path.with_extension("err");
        let mut args = vec!["node", "start", "--processes-max", "16"];
        args.extend_from_slice(extra_args);
        let child = self
            .command(&args)
            .envs(vars.iter().copied())
            .stdout(File::create(&out_path).unwrap())
            .stderr(File::create(&err_path).unwrap())
            .spawn()
            .expect("spawn the daemon");
        let mut daemon = Daemon {
            child,
            out_path,
            err_path,
        };
        let deadline = Instant::now() + LONG;
        loop {
            if let Some(status) = daemon.child.try_wait().unwrap() {
                return Err((status.to_string(), daemon.stdout(), daemon.stderr()));
            }
            let ready = daemon.stdout().contains("shoal node listening on")
                && std::os::unix::net::UnixStream::connect(self.socket()).is_ok();
            if ready {
                return Ok(daemon);
            }
            assert!(
                Instant::now() < deadline,
                "the daemon took too long to start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// A running `shoal node start`; killed when dropped, even if the test
/// panics.
struct Daemon {
    child: Child,
    out_path: PathBuf,
    err_path: PathBuf,
}

impl Daemon {
    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out_path).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err_path).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send SIGTERM and wait (bounded) for the daemon to exit.
    fn terminate(&mut self) -> std::process::ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success());
        wait_bounded(&mut self.child)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_bounded(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + LONG;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "a child process did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Poll `f` every 50 ms until it returns `Some`, for at most [`LONG`].
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + LONG;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn pids_in_ps(env: &Env) -> Vec<u64> {
    env.json(&["ps", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pid"].as_u64().unwrap())
        .collect()
}

/// The numbers of the `tick <n>` lines in `stdout`.
fn ticks(stdout: &str) -> Vec<u64> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("tick ")?.parse().ok())
        .collect()
}

/// The node's log lines go through `tracing`: `info` by default, `RUST_LOG`
/// chooses when set, `--log-level` wins over both, and a bad filter is a
/// clear usage error.
#[test]
fn log_level_and_rust_log_choose_what_the_node_logs() {
    let env = Env::new();
    let run = |args: &[&str], vars: &[(&str, &str)]| {
        let mut d = env
            .try_start_daemon_with(args, vars)
            .unwrap_or_else(|e| panic!("the daemon did not start: {e:?}"));
        assert!(d.terminate().success());
        d.stderr()
    };
    let stopped = |err: &str| {
        err.lines()
            .any(|l| l.contains("INFO") && l.ends_with("stopped"))
    };
    let start_up = |err: &str| err.contains("start-up: raft open");

    let default = run(&[], &[("RUST_LOG", "")]);
    assert!(stopped(&default) && !start_up(&default), "{default}");
    let quiet = run(&[], &[("RUST_LOG", "warn")]);
    assert!(!stopped(&quiet) && !start_up(&quiet), "{quiet}");
    let chatty = run(&[], &[("RUST_LOG", "debug")]);
    assert!(stopped(&chatty) && start_up(&chatty), "{chatty}");
    let flag = run(
        &["--log-level", "shoal_daemon=debug,info"],
        &[("RUST_LOG", "warn")],
    );
    assert!(stopped(&flag) && start_up(&flag), "{flag}");

    let out = env.shoal(&["--log-level", "shoal_daemon=loud", "ps"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr)
            .starts_with("error: --log-level \"shoal_daemon=loud\" is not a log filter"),
        "{}",
        text(&out.stderr)
    );
    assert_no_panic(&out);
}

#[test]
fn deploy_ps_logs_kill() {
    let env = Env::new();
    let _daemon = env.start_daemon();
    let m = env.wat("blocker.wasm", BLOCKER_WAT);

    let out = env.ok(&["deploy", p(&m), "--name", "blocker:v1"]);
    let pid: u64 = out.trim().parse().expect("deploy prints the pid");

    let ps = env.json(&["ps", "--json"]);
    let me = ps
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == pid)
        .unwrap_or_else(|| panic!("ps lists {pid}: {ps}"));
    assert!(me["module"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(me["module_names"][0], "blocker:v1");
    assert_eq!(me["mailbox_len"], 0);

    let table = env.ok(&["ps"]);
    assert!(table.starts_with("PID"), "{table}");
    assert!(table.contains("blocker:v1"), "{table}");

    // The process printed before blocking; its output is captured.
    let logs = eventually("the process's output", || {
        let out = env.shoal(&["logs", &pid.to_string()]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let (o, e) = (text(&out.stdout), text(&out.stderr));
        (o.contains("hello from shoal") && e.contains("warming up")).then_some(o)
    });
    assert_eq!(logs, "hello from shoal\n", "stdout only on stdout");

    let out = env.ok(&["kill", &pid.to_string()]);
    assert_eq!(out.trim(), format!("process {pid} killed"));
    assert!(!pids_in_ps(&env).contains(&pid), "a killed process is gone");

    // The logs of a process that ended are still there.
    let out = env.ok(&["logs", &pid.to_string()]);
    assert_eq!(out, "hello from shoal\n");

    // Killing it again is a clear error.
    let out = env.shoal(&["kill", &pid.to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with(&format!("error: no process with pid {pid}")),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn deploy_count_three_and_by_name() {
    let env = Env::new();
    let _daemon = env.start_daemon();
    let m = env.wat("blocker.wasm", BLOCKER_WAT);
    let spawned = env.json(&["deploy", p(&m), "--count", "3", "--name", "b:v1", "--json"]);
    let pids: Vec<u64> = spawned
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["pid"].as_u64().unwrap())
        .collect();
    assert_eq!(pids.len(), 3, "{spawned}");
    let mut unique = pids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 3);
    let hash = spawned[0]["module"].as_str().unwrap().to_string();
    assert!(spawned
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["module"] == hash.as_str()));

    // By registry name, with arguments and environment: no file needed.
    let out = env.ok(&["deploy", "b:v1", "--env", "MODE=fast", "--", "--flag"]);
    let fourth: u64 = out.trim().parse().unwrap();

    let live = pids_in_ps(&env);
    for pid in pids.iter().chain([&fourth]) {
        assert!(live.contains(pid), "{pid} in {live:?}");
    }

    // kill takes several pids.
    let args: Vec<String> = pids.iter().map(u64::to_string).collect();
    let mut argv = vec!["kill"];
    argv.extend(args.iter().map(String::as_str));
    let out = env.ok(&argv);
    assert_eq!(out.lines().count(), 3, "{out}");
    assert_eq!(pids_in_ps(&env), vec![fourth]);
}

#[test]
fn user_mistakes_get_clear_errors() {
    let env = Env::new();
    let _daemon = env.start_daemon();

    let out = env.shoal(&["kill", "999999"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.starts_with("error: no process with pid 999999"),
        "{err}"
    );

    let out = env.shoal(&["logs", "999999"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no process with pid 999999"),
        "{}",
        text(&out.stderr)
    );

    let out = env.shoal(&["deploy", "no-such-module:v9"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("is not a module of this cluster"), "{err}");

    let bad = env.dir.path().join("bad.wasm");
    std::fs::write(&bad, b"\0asm\x01\0\0\0\x01\x05junk!").unwrap();
    let out = env.shoal(&["deploy", p(&bad)]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("not a usable WebAssembly module"), "{err}");
    assert!(err.contains("offset"), "{err}");

    let out = env.shoal(&["snapshot", "999999"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no process with pid 999999"),
        "{}",
        text(&out.stderr)
    );

    let junk = env.dir.path().join("junk.snap");
    std::fs::write(&junk, b"this is not a snapshot").unwrap();
    let out = env.shoal(&["restore", p(&junk)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not a Shoal snapshot"),
        "{}",
        text(&out.stderr)
    );

    let out = env.shoal(&["restore", "neither-file-nor-id"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("neither a file nor a snapshot id"),
        "{}",
        text(&out.stderr)
    );

    let out = env.shoal(&["kill", "zero"]);
    assert_eq!(out.status.code(), Some(2), "usage error");
}

#[test]
fn verbs_without_a_daemon_say_how_to_start_one() {
    let env = Env::new();
    let expected = format!(
        "no Shoal node is running at {} (start one with `shoal node start`)",
        env.socket().display()
    );
    let m = env.wat("blocker.wasm", BLOCKER_WAT);
    for args in [
        vec!["ps"],
        vec!["deploy", p(&m)],
        vec!["logs", "1"],
        vec!["kill", "1"],
        vec!["snapshot", "1"],
        vec!["node", "status"],
    ] {
        let out = env.shoal(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = text(&out.stderr);
        assert!(err.starts_with("error: "), "{args:?}: {err}");
        assert!(err.contains(&expected), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
    }
    // --socket (and SHOAL_SOCKET) point elsewhere.
    let other = env.dir.path().join("other.sock");
    let out = env.shoal(&["--socket", p(&other), "ps"]);
    assert!(
        text(&out.stderr).contains(&format!("no Shoal node is running at {}", other.display())),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn one_daemon_per_socket_and_the_socket_is_private() {
    let env = Env::new();
    let mut first = env.start_daemon();
    let meta = std::fs::metadata(env.socket()).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "owner only");

    let out = env
        .command(&["node", "start"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.starts_with(&format!(
            "error: a Shoal node is already running at {}",
            env.socket().display()
        )),
        "{err}"
    );
    assert_no_panic(&out);
    // The first one is unharmed.
    assert!(env.ok(&["ps"]).starts_with("PID"));
    let status = env.json(&["node", "status", "--json"]);
    assert_eq!(status["processes_max"], 16);

    // A node killed without cleaning up leaves a stale socket: the next
    // node removes it and starts.
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    assert!(env.socket().exists(), "SIGKILL leaves the socket file");
    let _second = env.start_daemon();
    assert!(env.ok(&["ps"]).starts_with("PID"));
}

#[test]
fn sigterm_kills_processes_and_removes_the_socket() {
    let env = Env::new();
    let mut daemon = env.start_daemon();
    let m = env.wat("blocker.wasm", BLOCKER_WAT);
    env.ok(&["deploy", p(&m), "--count", "2"]);
    let status = daemon.terminate();
    assert!(status.success(), "{status}: {}", daemon.stderr());
    assert!(!env.socket().exists(), "the socket is removed");
    assert!(
        daemon.stderr().contains("killing 2 process(es)"),
        "{}",
        daemon.stderr()
    );
    let out = env.shoal(&["ps"]);
    assert!(text(&out.stderr).contains("no Shoal node is running"));
}

#[test]
fn logs_follow_until_the_process_ends() {
    let env = Env::new();
    let _daemon = env.start_daemon();
    let m = env.wat("ticker.wasm", TICKER_WAT);
    let pid = env.ok(&["deploy", p(&m)]).trim().to_string();
    let follower = env
        .command(&["logs", "-f", &pid])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Let it follow a few ticks live, then end the process.
    eventually("a few ticks", || {
        (ticks(&env.ok(&["logs", &pid])).len() >= 5).then_some(())
    });
    env.ok(&["kill", &pid]);
    let out = follower.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let seen = ticks(&text(&out.stdout));
    assert!(seen.len() >= 5, "{}", text(&out.stdout));
    assert_eq!(
        seen,
        (1..=seen.len() as u64).collect::<Vec<_>>(),
        "every tick once, in order"
    );
    assert!(
        text(&out.stderr).contains(&format!("process {pid} killed")),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn snapshot_stop_to_a_file_then_restore_it() {
    let env = Env::new();
    let _daemon = env.start_daemon();

    // A process blocked in recv(-1): capture it and keep it running.
    let blocker = env.wat("blocker.wasm", BLOCKER_WAT);
    let b = env.ok(&["deploy", p(&blocker)]).trim().to_string();
    eventually("the blocker's output", || {
        env.ok(&["logs", &b]).contains("hello").then_some(())
    });
    let report = env.json(&["snapshot", &b, "--json"]);
    assert_eq!(report["pending_call"], "shoal_v1.recv");
    assert_eq!(report["stopped"], false);
    assert!(pids_in_ps(&env).contains(&b.parse().unwrap()));

    // A ticking process: stop it into a file, restore it, and it goes on
    // counting from where it was.
    let ticker = env.wat("ticker.wasm", TICKER_WAT);
    let t = env.ok(&["deploy", p(&ticker)]).trim().to_string();
    eventually("a few ticks", || {
        (ticks(&env.ok(&["logs", &t])).len() >= 3).then_some(())
    });
    let file = env.dir.path().join("ticker.snap");
    let out = env.ok(&["snapshot", &t, "--stop", "-o", p(&file)]);
    for field in ["snapshot  sha256:", "waited", "capture", "pages", "file"] {
        assert!(out.contains(field), "{field} in {out}");
    }
    assert!(out.contains("(stopped)"), "{out}");
    let meta = std::fs::metadata(&file).unwrap();
    assert!(meta.len() > 0);
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert!(
        !pids_in_ps(&env).contains(&t.parse().unwrap()),
        "--stop ends the process"
    );
    let before = ticks(&env.ok(&["logs", &t]));
    let last = *before.last().unwrap();

    let restored = env.json(&["restore", p(&file), "--json"]);
    let new_pid = restored["pid"].as_u64().unwrap();
    assert_ne!(new_pid.to_string(), t);
    assert!(pids_in_ps(&env).contains(&new_pid));
    let after = eventually("the restored process's ticks", || {
        let seen = ticks(&env.ok(&["logs", &new_pid.to_string()]));
        (seen.len() >= 2).then_some(seen)
    });
    assert_eq!(
        after[0],
        last + 1,
        "the restored counter continues: before {before:?}, after {after:?}"
    );

    // The same snapshot by id, a second copy.
    let id = restored["id"].as_str().unwrap();
    let again = env.ok(&["restore", id]);
    let third: u64 = again.trim().parse().unwrap();
    assert!(pids_in_ps(&env).contains(&third));
}

#[test]
fn help_teaches() {
    let env = Env::new();
    for verb in [
        vec!["node", "start"],
        vec!["deploy"],
        vec!["ps"],
        vec!["logs"],
        vec!["kill"],
        vec!["snapshot"],
        vec!["restore"],
    ] {
        let mut args = verb.clone();
        args.push("--help");
        let help = env.ok(&args);
        assert!(help.contains("Examples:"), "{verb:?}: {help}");
    }
    let help = env.ok(&["node", "start", "--help"]);
    assert!(help.contains("0600"), "{help}");
    assert!(env.ok(&["--help"]).contains("deploy"));
}

/// Run `shoal args` with stdout a pipe whose reader is already gone (as in
/// `shoal ps | true`): it must end quietly, by `SIGPIPE` or with 0, never
/// with a panic (exit 101).
fn assert_quiet_into_a_closed_pipe(env: &Env, args: &[&str]) {
    use std::os::unix::process::ExitStatusExt;
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let out = env
        .command(args)
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("run shoal");
    assert_no_panic(&out);
    assert!(
        out.status.signal() == Some(libc::SIGPIPE) || out.status.code() == Some(0),
        "shoal {args:?} into a closed pipe: {} {}",
        out.status,
        text(&out.stderr)
    );
    assert_eq!(text(&out.stderr), "", "shoal {args:?} says nothing");
}

#[test]
fn verbs_end_quietly_when_the_reader_of_their_output_is_gone() {
    let env = Env::new();
    let _daemon = env.start_daemon();
    let m = env.wat("blocker.wasm", BLOCKER_WAT);
    let pid = env.ok(&["deploy", p(&m)]).trim().to_string();
    assert_quiet_into_a_closed_pipe(&env, &["ps"]);
    assert_quiet_into_a_closed_pipe(&env, &["nodes"]);
    assert_quiet_into_a_closed_pipe(&env, &["inspect", p(&m)]);
    assert_quiet_into_a_closed_pipe(&env, &["logs", &pid]);
}

/// Prints bytes that would drive a terminal (clear the screen, set the
/// window title, ring the bell, return the carriage), then blocks.
const ESCAPER_WAT: &str = r#"
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (import "shoal_v1" "recv" (func $recv (param i32 i32 i64 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "\1b[2J\1b]0;pwned\07bold\0d\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 100))
    (i32.store (i32.const 4) (i32.const 20))
    (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16)))
    (loop $forever
      (drop (call $recv (i32.const 1024) (i32.const 1024) (i64.const -1) (i32.const 0)))
      (br $forever))))
"#;

/// A new pseudo-terminal: (master, slave).
#[allow(unsafe_code)]
fn open_pty() -> (File, File) {
    use std::os::fd::FromRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    // SAFETY: plain libc calls on a descriptor this function owns; the
    // name buffer is large enough and NUL-terminated by `ptsname_r`.
    let (master, path) = unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        assert!(master >= 0, "posix_openpt");
        assert_eq!(libc::grantpt(master), 0, "grantpt");
        assert_eq!(libc::unlockpt(master), 0, "unlockpt");
        let mut name = [0 as libc::c_char; 256];
        assert_eq!(libc::ptsname_r(master, name.as_mut_ptr(), name.len()), 0);
        let path = std::ffi::CStr::from_ptr(name.as_ptr())
            .to_string_lossy()
            .into_owned();
        (File::from_raw_fd(master), path)
    };
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(path)
        .expect("open the pty's slave");
    (master, slave)
}

#[test]
fn logs_escape_control_characters_on_a_terminal_only() {
    use std::io::Read;
    let env = Env::new();
    let _daemon = env.start_daemon();
    let m = env.wat("escaper.wasm", ESCAPER_WAT);
    let pid = env.ok(&["deploy", p(&m)]).trim().to_string();
    // Into a pipe, the bytes are passed as they are.
    let raw = eventually("the escaper's output", || {
        let out = env.ok(&["logs", &pid]);
        (!out.is_empty()).then_some(out)
    });
    assert_eq!(raw, "\x1b[2J\x1b]0;pwned\x07bold\r\n");
    // On a terminal, they are shown, not obeyed.
    let (mut master, slave) = open_pty();
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        // Ends with EIO once no one holds the slave.
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        seen
    });
    let mut child = env
        .command(&["logs", &pid])
        .stdout(slave)
        .stderr(Stdio::piped())
        .spawn()
        .expect("run shoal logs");
    let status = wait_bounded(&mut child);
    assert!(status.success(), "{status}");
    let seen = reader.join().expect("the pty reader");
    let shown = text(&seen);
    assert!(
        !seen.contains(&0x1b) && !seen.contains(&0x07),
        "control bytes reached the terminal: {shown:?}"
    );
    assert!(
        shown.contains("\\x1b[2J\\x1b]0;pwned\\x07bold\\r"),
        "{shown:?}"
    );
}

/// A module whose one function nests `depth` blocks around a blocking
/// `recv`: valid WebAssembly that kept Binaryen's Asyncify busy for a long
/// time (300 KB of it held a node's preparation for 64 s).
fn deeply_nested_wat(depth: usize) -> String {
    let mut w = String::from(
        r#"(module
  (import "shoal_v1" "recv" (func $recv (param i32 i32 i64 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
"#,
    );
    // Flat (not folded) instructions: the text parser needs no recursion.
    w.push_str(&"block\n".repeat(depth));
    w.push_str("i32.const 0 i32.const 0 i64.const 0 i32.const 0 call $recv drop\n");
    w.push_str(&"end\n".repeat(depth));
    w.push_str("))\n");
    w
}

/// The module that held Binaryen's Asyncify for a minute (100,000 nested
/// blocks) is prepared well inside a 10 s bound now that Shoal instruments
/// modules itself: the deploy succeeds, nothing panics, the node serves.
/// (The bound itself, which stops a worker that runs too long, is tested in
/// `shoal_prepare::worker` with a worker that hangs: no valid module takes
/// long enough any more.)
#[test]
fn a_module_that_held_binaryen_for_a_minute_deploys_within_the_bound() {
    let env = Env::new();
    let _daemon = env
        .try_start_daemon_with(&["--prepare-timeout", "10s"], &[])
        .unwrap_or_else(|e| panic!("the daemon did not start: {e:?}"));
    let nested = env.dir.path().join("nested.wasm");
    std::fs::write(&nested, wat::parse_str(deeply_nested_wat(100_000)).unwrap()).unwrap();
    let out = env.command(&["deploy", p(&nested)]).output().unwrap();
    assert_no_panic(&out);
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
        .trim()
        .parse::<u64>()
        .expect("deploy prints the pid");
    // The node still serves.
    let m = env.wat("blocker.wasm", BLOCKER_WAT);
    env.ok(&["deploy", p(&m)]);
}

/// Issue #11 item 3 from the command line, on a real node: a client renews
/// its certificate (`cert renew`), may not revoke (typed 403), an admin
/// revokes it (`cert revoke`), after which neither its certificate nor the
/// renewed one works, and `cert create` for the same name issues the new
/// generation, which does.
#[test]
fn cert_renew_and_revoke_from_the_command_line() {
    let env = Env::new();
    let _d = env.start_daemon();
    let addr = std::fs::read_to_string(env.data_dir().join("node.addr")).unwrap();
    let addr = addr.trim().to_string();
    let creds = env.dir.path().join("alice");
    env.ok(&[
        "cert",
        "create",
        "--client",
        "--name",
        "alice",
        "-o",
        p(&creds),
    ]);
    let as_alice = |args: &[&str]| {
        let mut all = vec!["--addr", addr.as_str(), "--creds", p(&creds)];
        all.extend_from_slice(args);
        run_shoal(&env.data_dir(), &all)
    };
    let before = std::fs::read_to_string(creds.join("client.crt")).unwrap();
    let out = as_alice(&["cert", "renew", "--json"]);
    let renewed = parse_json(&ok_stdout(&out, &["cert", "renew"]), &["cert", "renew"]);
    assert_eq!(renewed["role"], "client");
    assert_eq!(renewed["name"], "alice");
    assert_eq!(renewed["generation"], 0);
    let after = std::fs::read_to_string(creds.join("client.crt")).unwrap();
    assert_ne!(before, after, "client.crt replaced");
    ok_stdout(&as_alice(&["ps"]), &["ps"]);
    // A client may not revoke.
    let out = as_alice(&["cert", "revoke", "--role", "client", "bob"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("needs an admin certificate"), "{err}");
    // The admin (local socket) revokes alice.
    let r = env.json(&["cert", "revoke", "--role", "client", "alice", "--json"]);
    assert_eq!(r["generation"], 1);
    assert_eq!(r["id"], "alice");
    let out = as_alice(&["ps"]);
    assert!(!out.status.success(), "a revoked client served");
    let out = as_alice(&["cert", "renew"]);
    assert!(!out.status.success(), "a revoked client renewed");
    // New credentials for the name get the new generation (once the node
    // has saved the list it applied), and work.
    let again = env.dir.path().join("alice2");
    eventually("the revocation saved for cert create", || {
        let list = std::fs::read_to_string(env.data_dir().join("pki/revocations.json")).ok()?;
        list.contains("client/alice").then_some(())
    });
    let created = env.json(&[
        "cert",
        "create",
        "--client",
        "--name",
        "alice",
        "-o",
        p(&again),
        "--json",
    ]);
    assert_eq!(created["generation"], 1);
    let out = run_shoal(
        &env.data_dir(),
        &["--addr", addr.as_str(), "--creds", p(&again), "ps"],
    );
    ok_stdout(&out, &["ps"]);
    // `--help` teaches.
    for verb in ["revoke", "renew"] {
        let help = env.ok(&["cert", verb, "--help"]);
        assert!(help.contains("Examples"), "{help}");
    }
}
