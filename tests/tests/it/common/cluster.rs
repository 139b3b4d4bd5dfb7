//! Real multi-node clusters for tests: every node is a full
//! [`Daemon`] (Raft, mTLS HTTP/2 transport, process host) listening on its
//! own loopback port, all in this test process.

use shoal_daemon::{Daemon, DaemonConfig, JoinSpec};
use shoal_registry::Sha256;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A cluster of `n` nodes named `n1`, `n2`, ...
pub struct TestCluster {
    /// The running daemons (`None` while stopped).
    pub nodes: Vec<Option<Daemon>>,
    /// Each node's data dir (kept across restarts).
    pub dirs: Vec<tempfile::TempDir>,
    /// Each node's listen address (kept across restarts).
    pub addrs: Vec<SocketAddr>,
    /// Applied to every node's config.
    pub tweak: fn(&mut DaemonConfig),
}

/// Test-friendly settings: fast Raft and heartbeats, small limits.
pub fn config(dir: &std::path::Path, name: &str, listen: SocketAddr) -> DaemonConfig {
    let mut c = DaemonConfig::new(dir, name, listen);
    c.node.engine.processes_max = 128;
    c.node.asyncify_asserts = true;
    c.heartbeat_interval = Duration::from_millis(200);
    c.raft.heartbeat_interval_ms = 50;
    c.raft.election_timeout_min_ms = 300;
    c.raft.election_timeout_max_ms = 600;
    c.raft.write_timeout_ms = 2_000;
    c.rebalance.enabled = false;
    // As a real node: each preparation in a worker process of the `shoal`
    // binary, at the priority the node gives it, bounded in time.
    if let Some(program) = shoal_bin_path() {
        c.node.prepare_worker = Some(shoal_prepare::worker::WorkerConfig {
            program,
            args: vec!["__prepare-worker".to_string()],
            timeout: Duration::from_secs(300),
            parallel_max: std::thread::available_parallelism().map_or(2, |n| n.get()),
        });
    }
    c
}

/// The `shoal` binary: `$SHOAL_BIN`, else the one cargo built beside this
/// test binary (`target/<profile>/shoal`), if it exists.
pub fn shoal_bin_path() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("SHOAL_BIN") {
        return Some(std::path::PathBuf::from(p));
    }
    // target/<profile>/deps/<test> → target/<profile>/shoal
    let bin = std::env::current_exe()
        .ok()?
        .parent()?
        .parent()?
        .join("shoal");
    bin.exists().then_some(bin)
}

/// Poll `cond` until true or `timeout`; panics with `what`.
pub async fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl TestCluster {
    /// A client of the cluster's control API on node `via`, over mTLS with
    /// the admin credential node 1 wrote when it created the cluster.
    pub fn admin_client(&self, via: usize) -> shoal_api::Client {
        let paths = shoal_pki::PkiPaths::new(self.dirs[0].path());
        let admin = paths.admin_dir();
        let ca_pem = std::fs::read_to_string(paths.ca_cert()).expect("CA certificate");
        let id = shoal_pki::Identity::from_pem(
            &std::fs::read_to_string(admin.join("client.crt")).expect("admin certificate"),
            &std::fs::read_to_string(admin.join("client.key")).expect("admin key"),
            &ca_pem,
        )
        .expect("admin identity");
        let trust = shoal_pki::ClusterTrust::new(&ca_pem, shoal_pki::SharedRevocations::default())
            .expect("trust");
        shoal_api::Client::tls(
            self.addrs[via].to_string(),
            shoal_pki::tls::client_config(&id, &trust).expect("TLS config"),
        )
    }

    /// Start node 1 as a new cluster, then join the others one by one.
    pub async fn start(n: usize) -> TestCluster {
        Self::start_with(n, |_| {}).await
    }

    /// [`TestCluster::start`] with `tweak` applied to every node's config.
    pub async fn start_with(n: usize, tweak: fn(&mut DaemonConfig)) -> TestCluster {
        let mut c = TestCluster {
            nodes: Vec::new(),
            dirs: Vec::new(),
            addrs: Vec::new(),
            tweak,
        };
        for _ in 0..n {
            c.add_node().await;
        }
        c.wait_healthy(n).await;
        c
    }

    /// Join one more node (through node 1, or the first running node).
    pub async fn add_node(&mut self) -> usize {
        let name = format!("n{}", self.nodes.len() + 1);
        self.add_node_named(&name).await
    }

    /// [`TestCluster::add_node`] under `name` (a removed node's name may
    /// join again).
    pub async fn add_node_named(&mut self, name: &str) -> usize {
        let i = self.nodes.len();
        let name = name.to_string();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = config(dir.path(), &name, "127.0.0.1:0".parse().unwrap());
        (self.tweak)(&mut cfg);
        if i > 0 {
            let via = self.running().next().expect("a running node");
            // Signed by the cluster's admin (node 0's data dir holds it),
            // whichever node is asked.
            // (The benches include this file without `certs`.)
            let admin = shoal_pki::PkiPaths::new(self.dirs[0].path()).admin_dir();
            let signer = shoal_pki::Signer::load(&admin).expect("the cluster's admin credential");
            let token = via
                .create_join_token_signed(shoal_pki::Role::Node, 600_000, &signer)
                .await
                .expect("token");
            cfg.join = Some(JoinSpec {
                addr: token.addr.clone(),
                token: token.token.clone(),
                ca_pin: token.ca_hash.clone(),
            });
        }
        let d = Daemon::start(cfg)
            .await
            .unwrap_or_else(|e| panic!("node {name} does not start: {e:#}"));
        self.addrs.push(d.local_addr());
        self.nodes.push(Some(d));
        self.dirs.push(dir);
        i
    }

    /// Wait until the join token `token` (`id.secret`) is recorded on
    /// every running node: a write made after others orders them before it.
    pub async fn wait_token_on_every_node(&self, token: &str) {
        let id = token.split('.').next().unwrap_or_default().to_string();
        wait_until("the token on every node", Duration::from_secs(60), || {
            self.running()
                .all(|d| d.raft().state().tokens.get(&id).is_some())
        })
        .await;
    }

    /// The running daemons.
    pub fn running(&self) -> impl Iterator<Item = &Daemon> {
        self.nodes.iter().flatten()
    }

    /// Daemon `i` (panics if stopped).
    pub fn node(&self, i: usize) -> &Daemon {
        self.nodes[i].as_ref().expect("node is running")
    }

    /// Index of the current Raft leader among running nodes.
    pub fn leader(&self) -> Option<usize> {
        let id = self.running().find_map(|d| d.raft().leader())?;
        self.nodes
            .iter()
            .position(|d| d.as_ref().map(|d| d.id()) == Some(id))
    }

    /// Wait until every running node sees `n` members that have sent a
    /// heartbeat (their load is known) and that the leader's failure
    /// detector has not declared dead (the one health verdict; no clock
    /// comparison of heartbeat times).
    pub async fn wait_healthy(&self, n: usize) {
        for d in self.running() {
            let raft = d.raft().clone();
            wait_until(
                &format!("{} to see {n} healthy nodes", d.name()),
                Duration::from_secs(30),
                || {
                    let s = raft.state();
                    s.nodes
                        .values()
                        .filter(|r| r.last_heartbeat_ms > 0 && s.node_dead(r.id).is_none())
                        .count()
                        >= n
                },
            )
            .await;
        }
    }

    /// Stop node `i` (its data dir stays).
    pub async fn stop(&mut self, i: usize) {
        if let Some(d) = self.nodes[i].take() {
            d.shutdown().await;
        }
    }

    /// Start node `i` again on the same data dir and address.
    pub async fn restart(&mut self, i: usize) {
        assert!(self.nodes[i].is_none(), "node {i} is running");
        let name = format!("n{}", i + 1);
        let mut cfg = config(self.dirs[i].path(), &name, self.addrs[i]);
        (self.tweak)(&mut cfg);
        let start = Instant::now();
        // The port may take a moment to be free again.
        let d = loop {
            match Daemon::start(cfg.clone()).await {
                Ok(d) => break d,
                Err(e) if start.elapsed() < Duration::from_secs(10) => {
                    eprintln!("restart {name}: {e:#}; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("node {name} does not restart: {e:#}"),
            }
        };
        self.nodes[i] = Some(d);
    }

    /// Deploy a guest file on node `i` under `name` (cluster-wide name).
    pub async fn add_guest(&self, i: usize, path: &str, name: &str) -> Sha256 {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
        self.node(i)
            .add_module(&bytes, Some(name))
            .await
            .unwrap_or_else(|e| panic!("add {name}: {}", e.message))
    }

    /// Stop every node.
    pub async fn shutdown(mut self) {
        for i in 0..self.nodes.len() {
            self.stop(i).await;
        }
    }
}
