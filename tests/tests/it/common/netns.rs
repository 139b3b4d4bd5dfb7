//! A cluster of real `shoal node start` processes, each in its own Linux
//! network namespace, for tests of what a user sees when nodes die or the
//! network splits.
//!
//! Topology, all created by the test and removed when the [`Lab`] drops
//! (also when the test panics):
//!
//! ```text
//!   <lab>-n1 (10.77.0.1, eth0) ─┐
//!   <lab>-n2 (10.77.0.2, eth0) ─┼─ v1 v2 v3 on bridge br0 in <lab>-br
//!   <lab>-n3 (10.77.0.3, eth0) ─┘
//! ```
//!
//! Each node namespace has one veth end (`eth0`) with a private address;
//! the other end (`v<i>`) sits on a bridge inside a namespace of its own,
//! so nothing is added to the host's network and no traffic leaves the
//! lab. `<lab>` is unique per lab (process id and a counter), so tests can
//! run in parallel. [`Lab::partition`] sets a node's bridge port down (the
//! node is cut off from every other node), [`Lab::heal`] sets it up.
//!
//! Nodes are OS processes: [`Lab::kill`] sends SIGKILL. CLI verbs run in a
//! node's namespace on its data dir ([`Lab::cli`]).
//!
//! Where namespaces cannot be created (not root, no `ip`), [`Lab::new`]
//! panics: these tests fail, they never skip.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The subnet every lab uses inside its own namespaces.
const SUBNET: &str = "10.77.0";
/// The port every node listens on (each in its own namespace).
pub const PORT: u16 = 7700;

static LABS: AtomicU32 = AtomicU32::new(0);

/// Held by each lab while it lives: labs run one at a time (the issue asks
/// it of these tests: real processes and timing-sensitive detection, on a
/// 2-core machine already busy with the other tests). A lab that panicked
/// leaves it poisoned; the next one takes it anyway.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The `shoal` binary: `$SHOAL_BIN`, else the one cargo built beside this
/// test binary (`target/release/shoal`). Panics, saying how to build it,
/// when there is none.
pub fn shoal_bin() -> PathBuf {
    // Not `cluster::shoal_bin_path`: the failover bench includes this file
    // without the cluster helpers.
    if let Some(p) = std::env::var_os("SHOAL_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> → target/<profile>/shoal
    let bin = exe
        .parent()
        .and_then(std::path::Path::parent)
        .map(|d| d.join("shoal"))
        .expect("a target dir");
    assert!(
        bin.exists(),
        "{} is missing: build it first (cargo build --release -p shoal), or set SHOAL_BIN",
        bin.display()
    );
    bin
}

/// Run `ip args...`; panics with its stderr if it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip` (iproute2 is needed for netns tests): {e}"));
    assert!(
        out.status.success(),
        "`ip {}` failed (netns tests need root and iproute2; they do not skip): {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One node of a lab.
pub struct LabNode {
    /// Its name (`n1`, ...), also its cluster name.
    pub name: String,
    /// Its network namespace.
    pub ns: String,
    /// Its address inside the lab.
    pub ip: String,
    /// Its data dir.
    pub data_dir: PathBuf,
    /// The running `shoal node start`, if any.
    child: Option<Child>,
}

impl LabNode {
    /// `ip:port` where it listens.
    pub fn addr(&self) -> String {
        format!("{}:{PORT}", self.ip)
    }
}

/// Network namespaces on one bridge, and the nodes in them.
pub struct Lab {
    /// Unique prefix of every namespace of this lab.
    pub tag: String,
    bridge_ns: String,
    /// The nodes, in order (`n1` is index 0).
    pub nodes: Vec<LabNode>,
    dir: tempfile::TempDir,
    shoal: PathBuf,
    /// Extra arguments of every `node start`.
    pub start_args: Vec<String>,
    /// The turn of this lab (released after `Drop` removed everything:
    /// fields drop after it).
    _turn: std::sync::MutexGuard<'static, ()>,
}

impl Lab {
    /// A lab of `n` empty namespaces (no node started yet).
    pub fn new(n: usize) -> Lab {
        assert!((1..=200).contains(&n));
        let shoal = shoal_bin();
        let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        let tag = format!(
            "shoal-{}-{}",
            std::process::id(),
            LABS.fetch_add(1, Ordering::SeqCst)
        );
        let bridge_ns = format!("{tag}-br");
        let mut lab = Lab {
            tag: tag.clone(),
            bridge_ns: bridge_ns.clone(),
            nodes: Vec::new(),
            dir: tempfile::tempdir().expect("tempdir"),
            shoal,
            start_args: Vec::new(),
            _turn: turn,
        };
        // From here on, Drop removes whatever was made.
        ip(&["netns", "add", &bridge_ns]);
        ip(&["-n", &bridge_ns, "link", "set", "lo", "up"]);
        ip(&["-n", &bridge_ns, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &bridge_ns, "link", "set", "br0", "up"]);
        for i in 1..=n {
            let ns = format!("{tag}-n{i}");
            ip(&["netns", "add", &ns]);
            let node = LabNode {
                name: format!("n{i}"),
                ns: ns.clone(),
                ip: format!("{SUBNET}.{i}"),
                data_dir: lab.dir.path().join(format!("n{i}")),
                child: None,
            };
            let port = format!("v{i}");
            lab.nodes.push(node);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            ip(&[
                "-n", &bridge_ns, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ]);
            ip(&["-n", &bridge_ns, "link", "set", &port, "master", "br0"]);
            ip(&["-n", &bridge_ns, "link", "set", &port, "up"]);
            let cidr = format!("{SUBNET}.{i}/24");
            ip(&["-n", &ns, "addr", "add", &cidr, "dev", "eth0"]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        }
        lab
    }

    /// Node `i` (0-based).
    pub fn node(&self, i: usize) -> &LabNode {
        &self.nodes[i]
    }

    /// A command running `shoal` in node `i`'s namespace, hermetic (none
    /// of the caller's Shoal environment), on its data dir.
    fn shoal_in(&self, i: usize, args: &[&str]) -> Command {
        self.shoal_in_ns(&self.nodes[i].ns, i, args)
    }

    /// Run a CLI verb on node `i`'s data dir from the bridge's namespace,
    /// where no node listens and no lab address is reachable: only the
    /// node's local socket can answer.
    pub fn cli_from_elsewhere(&self, i: usize, args: &[&str]) -> Output {
        self.shoal_in_ns(&self.bridge_ns, i, args)
            .output()
            .expect("run shoal in the bridge namespace")
    }

    fn shoal_in_ns(&self, ns: &str, i: usize, args: &[&str]) -> Command {
        let n = &self.nodes[i];
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns])
            .arg(&self.shoal)
            .arg("--data-dir")
            .arg(&n.data_dir)
            .args(args)
            .env_remove("SHOAL_SOCKET")
            .env_remove("SHOAL_ADDR")
            .env_remove("SHOAL_CREDS")
            .env_remove("SHOAL_CERT")
            .env_remove("SHOAL_KEY")
            .env_remove("SHOAL_CA")
            .env_remove("SHOAL_DATA_DIR")
            .env_remove("RUST_BACKTRACE")
            .stdin(Stdio::null());
        c
    }

    /// Run a CLI verb against node `i` (in its namespace); no panic may
    /// reach the user.
    pub fn cli(&self, i: usize, args: &[&str]) -> Output {
        let out = self
            .shoal_in(i, args)
            .output()
            .expect("run shoal in a namespace");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
            "a panic reached the user: {err}"
        );
        out
    }

    /// Start a CLI verb against node `i` in the background, its stdout and
    /// stderr piped (e.g. `logs -f`).
    pub fn cli_spawn(&self, i: usize, args: &[&str]) -> Child {
        self.shoal_in(i, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start shoal in a namespace")
    }

    /// A verb that must succeed: its stdout.
    pub fn cli_ok(&self, i: usize, args: &[&str]) -> String {
        let out = self.cli(i, args);
        assert!(
            out.status.success(),
            "shoal {args:?} on {} failed: {}{}",
            self.nodes[i].name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A verb with `--json` that must succeed: its output parsed.
    pub fn cli_json(&self, i: usize, args: &[&str]) -> serde_json::Value {
        let out = self.cli_ok(i, args);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("shoal {args:?}: no JSON ({e}): {out}"))
    }

    /// Start node `i`: the first node without `--join` makes the cluster;
    /// later ones join through node 0 with a fresh token. Returns once it
    /// answers `shoal nodes`.
    pub fn start(&mut self, i: usize) {
        let mut args: Vec<String> = vec![
            "node".into(),
            "start".into(),
            "--name".into(),
            self.nodes[i].name.clone(),
            "--listen".into(),
            self.nodes[i].addr(),
            "--rebalance".into(),
            "off".into(),
        ];
        args.extend(self.start_args.iter().cloned());
        let joined = self.nodes[i].data_dir.join("pki").exists();
        if i > 0 && !joined {
            let t = self.cli_json(0, &["token", "create", "--ttl", "10m", "--json"]);
            let token = t["token"].as_str().expect("token").to_string();
            let pin = t["ca_hash"].as_str().expect("ca_hash").to_string();
            args.extend([
                "--join".into(),
                self.nodes[0].addr(),
                "--token".into(),
                token,
                "--ca-hash".into(),
                pin,
            ]);
        }
        let log = self.dir.path().join(format!("{}.log", self.nodes[i].name));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("node log");
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let child = self
            .shoal_in(i, &argv)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start a node");
        self.nodes[i].child = Some(child);
        let name = self.nodes[i].name.clone();
        wait_for(&format!("{name} to serve"), Duration::from_secs(60), || {
            self.assert_running(i);
            self.nodes[i].data_dir.join("node.addr").exists()
                && self.cli(i, &["nodes", "--json"]).status.success()
        });
    }

    /// Start nodes 0..n in order, then wait until node 0 sees all of them up.
    pub fn start_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.start(i);
        }
        let n = self.nodes.len();
        wait_for(
            "every node to be a healthy member",
            Duration::from_secs(60),
            || {
                let list = self.cli_json(0, &["nodes", "--json"]);
                list.as_array().is_some_and(|a| {
                    a.len() == n
                        && a.iter()
                            .all(|r| r["healthy"] == serde_json::Value::Bool(true))
                })
            },
        );
    }

    /// Panics (with its log) if node `i`'s process has exited.
    fn assert_running(&mut self, i: usize) {
        if let Some(child) = self.nodes[i].child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "node {} exited ({status}):\n{}",
                    self.nodes[i].name,
                    self.log(i)
                );
            }
        }
    }

    /// What node `i` printed so far.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{}.log", self.nodes[i].name)))
            .unwrap_or_default()
    }

    /// SIGKILL node `i`'s process and reap it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Send node `i`'s process SIGTERM (a graceful stop: it drains first).
    pub fn terminate(&self, i: usize) {
        self.signal(i, "-TERM");
    }

    /// Whether node `i`'s process has exited (reaped if so).
    pub fn exited(&mut self, i: usize) -> bool {
        match self.nodes[i].child.as_mut() {
            None => true,
            Some(child) => match child.try_wait() {
                Ok(Some(_)) => {
                    self.nodes[i].child = None;
                    true
                }
                _ => false,
            },
        }
    }

    /// Stop node `i`'s process (SIGSTOP): a long pause, as a stalled VM or a
    /// swapped-out process has, with its connections left open.
    pub fn pause(&self, i: usize) {
        self.signal(i, "-STOP");
    }

    /// Undo [`Lab::pause`] (SIGCONT).
    pub fn resume(&self, i: usize) {
        self.signal(i, "-CONT");
    }

    fn signal(&self, i: usize, sig: &str) {
        let child = self.nodes[i].child.as_ref().expect("node is running");
        let status = Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {sig} node {i}");
    }

    /// Cut node `i` off from every other node (its bridge port down).
    pub fn partition(&self, i: usize) {
        ip(&[
            "-n",
            &self.bridge_ns,
            "link",
            "set",
            &format!("v{}", i + 1),
            "down",
        ]);
    }

    /// Slow what reaches node `i` to `rate` (a `tc` rate such as `20mbit`:
    /// a token bucket on its bridge port), so that a transfer to it lasts
    /// long enough to be cut in the middle.
    pub fn shape(&self, i: usize, rate: &str) {
        let port = format!("v{}", i + 1);
        let out = Command::new("tc")
            .args([
                "-n",
                &self.bridge_ns,
                "qdisc",
                "replace",
                "dev",
                &port,
                "root",
            ])
            .args(["tbf", "rate", rate, "burst", "64kbit", "latency", "2s"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run `tc` (iproute2): {e}"));
        assert!(
            out.status.success(),
            "tc failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Bytes sent so far towards node `i` (its bridge port's counter).
    pub fn bytes_to(&self, i: usize) -> u64 {
        let path = format!("/sys/class/net/v{}/statistics/tx_bytes", i + 1);
        let out = Command::new("ip")
            .args(["netns", "exec", &self.bridge_ns, "cat", &path])
            .output()
            .expect("ip netns exec");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    }

    /// Undo [`Lab::partition`].
    pub fn heal(&self, i: usize) {
        ip(&[
            "-n",
            &self.bridge_ns,
            "link",
            "set",
            &format!("v{}", i + 1),
            "up",
        ]);
    }

    /// A path in the lab dir (nothing is created).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Write `wasm` bytes to a file in the lab dir and return its path.
    pub fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, bytes).expect("write file");
        path
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        for n in &self.nodes {
            let _ = Command::new("ip").args(["netns", "del", &n.ns]).output();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.bridge_ns])
            .output();
    }
}

/// Poll `cond` every 100 ms until it holds; panics after `within`.
pub fn wait_for(what: &str, within: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    loop {
        if cond() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
