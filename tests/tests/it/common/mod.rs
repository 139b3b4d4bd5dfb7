//! Shared set-up for the integration tests: a node in a temporary directory
//! and helpers to load the guests built by `build.rs`.

#![allow(dead_code)]

pub mod certs;
pub mod cluster;
pub mod linearizability;
pub mod netns;
pub mod procs;
pub mod tally;

use shoal_registry::Sha256;
use shoal_runtime::{Node, NodeConfig, Pid, SpawnSpec};
use std::time::Duration;

/// A node with its own temporary data directory (removed on drop).
pub struct TestNode {
    pub node: Node,
    pub dir: tempfile::TempDir,
}

#[allow(clippy::new_without_default)]
impl TestNode {
    /// A node with test-friendly defaults (Asyncify asserts on).
    pub fn new() -> TestNode {
        Self::with(|_| {})
    }

    /// A node whose config `tweak` may change.
    pub fn with(tweak: impl FnOnce(&mut NodeConfig)) -> TestNode {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = NodeConfig::new(dir.path());
        config.engine.processes_max = 64;
        config.asyncify_asserts = true;
        tweak(&mut config);
        let node = Node::new(config).expect("node starts");
        TestNode { node, dir }
    }

    /// Put a guest (by path) into the registry, also under `name`.
    pub fn add_guest(&self, path: &str, name: &str) -> Sha256 {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
        let hash = self.node.add_module(&bytes).expect("put module");
        self.node
            .registry()
            .set_name(name, &hash)
            .expect("name module");
        hash
    }

    /// Spawn `hash` with argv[0] = name and the given args.
    pub async fn spawn(&self, hash: Sha256, argv: &[&str]) -> Pid {
        let spec = SpawnSpec::new(hash, argv.iter().map(|s| s.to_string()).collect());
        self.node.spawn(spec).await.expect("spawn")
    }

    /// Wait for a process with a generous bound; panics with its output if it
    /// does not end in time.
    pub async fn wait(&self, pid: Pid, timeout: Duration) -> shoal_runtime::ExitStatus {
        match tokio::time::timeout(timeout, self.node.wait(pid)).await {
            Ok(Some(s)) => s,
            Ok(None) => panic!("process {pid} unknown"),
            Err(_) => panic!(
                "process {pid} did not finish within {timeout:?}; stdout so far:\n{}",
                self.node.stdout_text(pid)
            ),
        }
    }

    /// Stdout of a process as text.
    pub fn stdout(&self, pid: Pid) -> String {
        self.node.stdout_text(pid)
    }

    /// Stderr of a process as text.
    pub fn stderr(&self, pid: Pid) -> String {
        self.node
            .log(pid)
            .map(|l| {
                String::from_utf8_lossy(&l.stream_bytes(shoal_runtime::log::Stream::Stderr))
                    .into_owned()
            })
            .unwrap_or_default()
    }
}

/// Assert a process exited with code 0, showing its output if not.
pub fn assert_success(t: &TestNode, status: &shoal_runtime::ExitStatus) {
    assert!(
        status.success(),
        "{status}\nstdout:\n{}\nstderr:\n{}",
        t.stdout(status.pid),
        t.stderr(status.pid)
    );
}
