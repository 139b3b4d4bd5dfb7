//! `shoal demo`: live migration on a local 3-node cluster, end to end.
//!
//! [`run`] starts three full nodes ([`Daemon`]s: Raft, mutual-TLS HTTP/2
//! transport, process host) in this process on 127.0.0.1, stores the
//! `migrant` guest cluster-wide, starts a `migrant tally` (a counter that
//! checks numbered messages per sender) on node 1 and a sender on node 3,
//! then moves the tally n1 → n2 → n3 → n1 while the messages flow, drains
//! node 2, and checks that the counter never reset and that no message was
//! lost, duplicated or reordered. It lives in the library (not the binary's
//! `cli` module) so the integration tests can run it and check its
//! [`DemoSummary`].
//!
//! Once the nodes run, the demo is a client like any other: everything it
//! does and reads goes through the nodes' control API over mutual TLS,
//! with the admin credential the new cluster wrote (storing the module,
//! spawning, `ps`, `logs`, `migrate`, `drain`, join tokens, node health).
//! It reads the tally by starting a short `migrant call <tally> get` and
//! reading its output, as a user of the CLI would.

use serde::Serialize;
use shoal_api::cluster::{DrainState, MigrateReport};
use shoal_api::types::{LogFrame, SpawnRequest};
use shoal_api::{Client, ClientError};
use shoal_daemon::{Daemon, DaemonConfig, JoinSpec};
use shoal_runtime::pid::Pid;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where the guests are built by default, relative to the current dir.
pub const GUESTS_DIR_DEFAULT: &str = "target/guests/wasm32-wasip1/release";
/// The command that builds the guests (printed when they are missing).
pub const GUESTS_BUILD_COMMAND: &str = "cargo build --release --manifest-path guests/Cargo.toml --target wasm32-wasip1 --target-dir target/guests";
/// Longest any one step of the demo may take before it gives up.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// How often conditions are polled.
const POLL: Duration = Duration::from_millis(20);
/// Longest the drain of node 2 may go on starting migrations.
const DRAIN_DEADLINE: Duration = Duration::from_secs(60);
/// Pause before each move, so the counter visibly goes on between them.
const BETWEEN_MOVES: Duration = Duration::from_millis(300);
/// The node names, in order.
const NODE_NAMES: [&str; 3] = ["n1", "n2", "n3"];

/// What the demo does; [`DemoOptions::default`] is what `shoal demo` runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The directory holding `migrant.wasm`; `None` tries
    /// [`GUESTS_DIR_DEFAULT`], then `$CARGO_TARGET_DIR/guests/...`.
    pub guests_dir: Option<PathBuf>,
    /// How many numbered messages the sender sends.
    pub messages: u64,
    /// The sender's pause between messages, ms (keeps it sending during
    /// all the moves).
    pub pause_ms: u64,
    /// Extra tallies placed on node 2 before it is drained.
    pub drain_processes: usize,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            guests_dir: None,
            messages: 4000,
            pause_ms: 1,
            drain_processes: 5,
        }
    }
}

/// Why the demo could not run (a failed check is not an error: see
/// [`DemoSummary::ok`]).
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// `migrant.wasm` is not where we looked.
    #[error("the migrant guest is not built (looked for {looked}); build the guests with:\n  {GUESTS_BUILD_COMMAND}\nor point --guests at the directory holding migrant.wasm")]
    GuestMissing {
        /// The paths tried.
        looked: String,
    },
    /// A file could not be read or a directory created.
    #[error("{what}: {source}")]
    Io {
        /// What we were doing.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A node did not start or join.
    #[error("node {name} did not start")]
    NodeStart {
        /// The node.
        name: String,
        /// The cause (boxed: it is large).
        source: Box<shoal_daemon::StartError>,
    },
    /// The admin credential the new cluster wrote is not usable.
    #[error("the admin credential in {} is not usable", dir.display())]
    Credential {
        /// Its directory.
        dir: PathBuf,
        /// The cause.
        source: shoal_pki::PkiError,
    },
    /// A node's control API refused or failed a request.
    #[error("{what}")]
    Api {
        /// What we asked.
        what: String,
        /// The answer (boxed: it is large).
        source: Box<ClientError>,
    },
    /// The cluster refused something (module, token, spawn).
    #[error("{what}: {why}")]
    Cluster {
        /// What we asked.
        what: String,
        /// The answer.
        why: String,
    },
    /// A migration failed.
    #[error("moving the tally from {from} to {to}")]
    Migrate {
        /// The node it was on.
        from: String,
        /// Where it was going.
        to: String,
        /// The node's answer (boxed: it is large).
        source: Box<ClientError>,
    },
    /// Something did not happen in time.
    #[error("timed out after {timeout_s} s waiting for {what}")]
    Timeout {
        /// What we waited for.
        what: String,
        /// How long, seconds.
        timeout_s: u64,
    },
    /// The progress output could not be written.
    #[error("cannot write the demo's output: {0}")]
    Output(#[source] std::io::Error),
}

/// The tally's counters, as it answers `get`.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct TallyLine {
    /// 5 ms timeouts counted (its own heap state: never resets).
    pub ticks: u64,
    /// Numbered messages received.
    pub received: u64,
    /// Senders seen.
    pub senders: u64,
    /// Numbers received twice.
    pub dups: u64,
    /// Numbers skipped (lost or out of order).
    pub gaps: u64,
}

impl TallyLine {
    /// Parse `ticks=1 received=2 senders=1 dups=0 gaps=0`.
    pub fn parse(line: &str) -> Option<TallyLine> {
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                .and_then(|v| v.parse().ok())
        };
        Some(TallyLine {
            ticks: field("ticks")?,
            received: field("received")?,
            senders: field("senders")?,
            dups: field("dups")?,
            gaps: field("gaps")?,
        })
    }
}

/// One move of the tally.
#[derive(Debug, Clone, Serialize)]
pub struct DemoMove {
    /// The node it left.
    pub from: String,
    /// The node it went to.
    pub to: String,
    /// The whole migration, ms.
    pub total_ms: f64,
    /// Frozen (no instruction run), ms.
    pub frozen_ms: f64,
    /// Pages sent (pre-copy; the delta is on top).
    pub pages_sent: usize,
    /// Non-zero pages of its memory.
    pub pages_total: usize,
    /// Pages that changed during the copy.
    pub delta_pages: usize,
    /// Whether the sender was still sending when the move ended.
    pub sender_running: bool,
    /// The tally just before the move.
    pub before: TallyLine,
    /// The tally just after.
    pub after: TallyLine,
}

/// What the demo saw; [`DemoSummary::ok`] is the verdict.
#[derive(Debug, Clone, Serialize)]
pub struct DemoSummary {
    /// The nodes, in order.
    pub nodes: Vec<String>,
    /// The tally's pid.
    pub tally: Pid,
    /// The sender's pid.
    pub sender: Pid,
    /// The tally's moves.
    pub moves: Vec<DemoMove>,
    /// The tally's `ticks`, at the start, after each move and at the end.
    pub ticks: Vec<u64>,
    /// Messages the sender sent.
    pub sent: u64,
    /// The tally's final counters.
    pub last: TallyLine,
    /// The node the tally runs on at the end (by the directory).
    pub tally_node: String,
    /// The node that was drained.
    pub drained_node: String,
    /// How it was drained.
    pub drain_method: String,
    /// Processes that were on it and moved away.
    pub drained_moved: usize,
    /// Processes still on it afterwards (0 when drained).
    pub drained_left: usize,
    /// The whole demo, ms (cluster start to verdict).
    pub elapsed_ms: u64,
}

impl DemoSummary {
    /// Did the counter never go back?
    pub fn ticks_monotonic(&self) -> bool {
        self.ticks.windows(2).all(|w| w[0] <= w[1]) && self.ticks.first() < self.ticks.last()
    }

    /// Every message once and in order?
    pub fn messages_exact(&self) -> bool {
        self.last.received == self.sent && self.last.dups == 0 && self.last.gaps == 0
    }

    /// The verdict: counter monotonic, messages exact, the tally back on
    /// node 1, the drained node empty.
    pub fn ok(&self) -> bool {
        self.ticks_monotonic()
            && self.messages_exact()
            && self.moves.len() == 3
            && self.tally_node == NODE_NAMES[0]
            && self.drained_left == 0
    }

    /// What is wrong, one reason per item (empty when [`DemoSummary::ok`]).
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !self.ticks_monotonic() {
            p.push(format!("the counter went back: ticks {:?}", self.ticks));
        }
        if !self.messages_exact() {
            p.push(format!(
                "messages: received {} of {}, {} duplicated, {} lost or out of order",
                self.last.received, self.sent, self.last.dups, self.last.gaps
            ));
        }
        if self.moves.len() != 3 || self.tally_node != NODE_NAMES[0] {
            p.push(format!(
                "the tally ended on {} after {} moves (expected n1 after 3)",
                self.tally_node,
                self.moves.len()
            ));
        }
        if self.drained_left != 0 {
            p.push(format!(
                "node {} still runs {} processes after the drain",
                self.drained_node, self.drained_left
            ));
        }
        p
    }
}

/// Find `migrant.wasm`: in `dir` if given, else in the default places.
pub fn find_migrant(dir: Option<&Path>) -> Result<PathBuf, DemoError> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    match dir {
        Some(d) => dirs.push(d.to_path_buf()),
        None => {
            dirs.push(PathBuf::from(GUESTS_DIR_DEFAULT));
            if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
                dirs.push(PathBuf::from(t).join("guests/wasm32-wasip1/release"));
            }
        }
    }
    let candidates: Vec<PathBuf> = dirs.iter().map(|d| d.join("migrant.wasm")).collect();
    if let Some(found) = candidates.iter().find(|p| p.is_file()) {
        return Ok(found.clone());
    }
    let looked = candidates
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    Err(DemoError::GuestMissing { looked })
}

/// A bounded wait: [`Deadline::tick`] sleeps one [`POLL`], or fails once
/// the time is up, naming what was awaited.
struct Deadline {
    what: String,
    until: Instant,
    timeout: Duration,
}

impl Deadline {
    fn new(what: impl Into<String>, timeout: Duration) -> Deadline {
        Deadline {
            what: what.into(),
            until: Instant::now() + timeout,
            timeout,
        }
    }

    async fn tick(&self) -> Result<(), DemoError> {
        if Instant::now() >= self.until {
            return Err(DemoError::Timeout {
                what: self.what.clone(),
                timeout_s: self.timeout.as_secs(),
            });
        }
        tokio::time::sleep(POLL).await;
        Ok(())
    }
}

fn api(what: impl Into<String>) -> impl FnOnce(ClientError) -> DemoError {
    let what = what.into();
    move |source| DemoError::Api {
        what,
        source: Box::new(source),
    }
}

/// Fast Raft and heartbeats for a cluster on one machine.
fn node_config(dir: &Path, name: &str) -> DaemonConfig {
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let mut c = DaemonConfig::new(dir.join(name), name, listen);
    c.node.engine.processes_max = 128;
    c.heartbeat_interval = Duration::from_millis(200);
    c.raft.heartbeat_interval_ms = 50;
    c.raft.election_timeout_min_ms = 300;
    c.raft.election_timeout_max_ms = 600;
    c.raft.write_timeout_ms = 2_000;
    // The demo moves processes itself; the leader's rebalancing would
    // move them too and blur what is shown.
    c.rebalance.enabled = false;
    c
}

/// The admin whose credential the new cluster wrote into node 1's data
/// dir: a TLS client configuration for the control API, and a signer for
/// the requests that write credentials (join tokens).
fn admin_credentials(
    first_node_dir: &Path,
) -> Result<(Arc<rustls::ClientConfig>, shoal_pki::Signer), DemoError> {
    use shoal_pki::{files, ClusterTrust, Identity, PkiPaths, SharedRevocations, Signer};
    let dir = PkiPaths::new(first_node_dir).admin_dir();
    let refused = |source| DemoError::Credential {
        dir: dir.clone(),
        source,
    };
    let cert = files::read_certificate(&dir.join("client.crt")).map_err(refused)?;
    let key = files::read_private_key(&dir.join("client.key")).map_err(refused)?;
    let ca = files::read_certificate(&dir.join("ca.crt")).map_err(refused)?;
    let identity = Identity::from_pem(&cert, &key, &ca).map_err(refused)?;
    let trust = ClusterTrust::new(&ca, SharedRevocations::default()).map_err(refused)?;
    let signer = Signer::from_pem(&cert, &key, &ca).map_err(refused)?;
    let tls = shoal_pki::tls::client_config(&identity, &trust).map_err(refused)?;
    Ok((tls, signer))
}

/// The running cluster as the demo sees it: the nodes (kept to stop them
/// at the end) and one control-API client per node.
struct Cluster {
    nodes: Vec<Daemon>,
    names: Vec<String>,
    clients: Vec<Client>,
}

impl Cluster {
    /// The client of the node called `name`.
    fn on(&self, name: &str) -> &Client {
        let i = self.names.iter().position(|n| n == name).unwrap_or(0);
        &self.clients[i]
    }

    async fn shutdown(self) {
        for d in self.nodes {
            d.shutdown().await;
        }
    }
}

/// Start node 1 as a new cluster and join the others through it with
/// tokens asked of its control API; wait until every node sees all three
/// healthy.
async fn start_cluster(dir: &Path) -> Result<Cluster, DemoError> {
    let mut cluster = Cluster {
        nodes: Vec::new(),
        names: Vec::new(),
        clients: Vec::new(),
    };
    // Read once node 1 has created the cluster.
    let mut admin: Option<(Arc<rustls::ClientConfig>, shoal_pki::Signer)> = None;
    for name in NODE_NAMES {
        let mut cfg = node_config(dir, name);
        if let (Some(first), Some((_, signer))) = (cluster.clients.first(), &admin) {
            let token = first
                .create_token(shoal_pki::Role::Node, 600_000, signer)
                .await
                .map_err(api("creating a join token"))?;
            cfg.join = Some(JoinSpec {
                addr: token.addr.clone(),
                token: token.token.clone(),
                ca_pin: token.ca_hash.clone(),
            });
        }
        let daemon = match Daemon::start(cfg).await {
            Ok(d) => d,
            Err(source) => {
                cluster.shutdown().await;
                return Err(DemoError::NodeStart {
                    name: name.to_string(),
                    source: Box::new(source),
                });
            }
        };
        let config = match &admin {
            Some((c, _)) => Arc::clone(c),
            None => {
                let (c, signer) = admin_credentials(&dir.join(NODE_NAMES[0]))?;
                admin = Some((Arc::clone(&c), signer));
                c
            }
        };
        cluster
            .clients
            .push(Client::tls(daemon.local_addr().to_string(), config));
        cluster.names.push(name.to_string());
        cluster.nodes.push(daemon);
    }
    for (client, name) in cluster.clients.iter().zip(&cluster.names) {
        let wait = Deadline::new(format!("{name} to see 3 healthy nodes"), STEP_TIMEOUT);
        loop {
            let nodes = client
                .nodes()
                .await
                .map_err(api(format!("listing the nodes on {name}")))?;
            if nodes.iter().filter(|n| n.healthy).count() >= NODE_NAMES.len() {
                break;
            }
            wait.tick().await?;
        }
    }
    Ok(cluster)
}

/// Start `migrant ARGS` on node `node` (by name) through `client`.
async fn spawn(client: &Client, node: &str, args: &[String]) -> Result<Pid, DemoError> {
    let req = SpawnRequest {
        module: "migrant".into(),
        argv0: None,
        args: args.to_vec(),
        env: Vec::new(),
        count: 1,
        memory_bytes_max: None,
        node: Some(node.to_string()),
        labels: Default::default(),
        preemptible: false,
        volumes: Vec::new(),
        restart: None,
    };
    let started = client.spawn(&req).await.map_err(api(format!(
        "starting `migrant {}` on {node}",
        args.join(" ")
    )))?;
    started
        .first()
        .map(|s| s.pid)
        .ok_or_else(|| DemoError::Cluster {
            what: format!("starting `migrant {}` on {node}", args.join(" ")),
            why: "the node started nothing".into(),
        })
}

/// Process `pid`'s stdout so far (or, with `follow`, until it ends), and
/// its exit report if it has ended.
async fn stdout_of(
    client: &Client,
    pid: Pid,
    follow: bool,
) -> Result<(String, Option<shoal_api::types::ExitReport>), DemoError> {
    let mut out = Vec::new();
    let read = client.logs(pid, follow, |frame| {
        if let LogFrame::Output {
            stream: shoal_abi::Stream::Stdout,
            data,
        } = frame
        {
            out.extend_from_slice(data);
        }
        Ok(())
    });
    let report = if follow {
        tokio::time::timeout(STEP_TIMEOUT, read)
            .await
            .map_err(|_| DemoError::Timeout {
                what: format!("process {pid} to end"),
                timeout_s: STEP_TIMEOUT.as_secs(),
            })?
    } else {
        read.await
    }
    .map_err(api(format!("reading the output of process {pid}")))?;
    Ok((String::from_utf8_lossy(&out).into_owned(), report))
}

/// Wait until process `pid` has printed `text`.
async fn wait_stdout(client: &Client, pid: Pid, text: &str) -> Result<(), DemoError> {
    let wait = Deadline::new(format!("process {pid} to print {text:?}"), STEP_TIMEOUT);
    loop {
        if stdout_of(client, pid, false).await?.0.contains(text) {
            return Ok(());
        }
        wait.tick().await?;
    }
}

/// Ask the tally for its counters: start `migrant call <tally> get` on
/// `node`, which prints the answer as `reply ticks=...`, and read it.
async fn ask(client: &Client, node: &str, tally: Pid) -> Result<TallyLine, DemoError> {
    let args = ["call".to_string(), tally.0.to_string(), "get".to_string()];
    let asker = spawn(client, node, &args).await?;
    let (text, report) = stdout_of(client, asker, true).await?;
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("reply "))
        .and_then(TallyLine::parse);
    match (line, report) {
        (Some(line), Some(r)) if r.code == 0 => Ok(line),
        (_, report) => Err(DemoError::Cluster {
            what: format!("asking the tally ({tally}) for its counters"),
            why: format!(
                "the asker (pid {asker}) printed {text:?} and ended with {}",
                report.map_or_else(|| "no exit report".to_string(), |r| r.message)
            ),
        }),
    }
}

/// The node `ps` (through `client`) shows `pid` on, if it runs.
async fn home_of(client: &Client, pid: Pid) -> Result<Option<String>, DemoError> {
    let procs = client
        .processes()
        .await
        .map_err(api("listing the processes"))?;
    Ok(procs
        .into_iter()
        .find(|p| p.pid == pid)
        .and_then(|p| p.node))
}

/// Write one progress line.
fn say(out: &mut (dyn Write + Send), line: std::fmt::Arguments<'_>) -> Result<(), DemoError> {
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(DemoError::Output)
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Run the demo, writing progress lines to `out`. Returns what it saw
/// (check [`DemoSummary::ok`]); an error means it could not run.
pub async fn run(
    opts: &DemoOptions,
    out: &mut (dyn Write + Send),
) -> Result<DemoSummary, DemoError> {
    let wasm_path = find_migrant(opts.guests_dir.as_deref())?;
    let wasm = std::fs::read(&wasm_path).map_err(|source| DemoError::Io {
        what: format!("cannot read {}", wasm_path.display()),
        source,
    })?;
    let dir = tempfile::Builder::new()
        .prefix("shoal-demo-")
        .tempdir()
        .map_err(|source| DemoError::Io {
            what: "cannot create a temporary directory for the nodes".into(),
            source,
        })?;
    say(
        out,
        format_args!("Starting a 3-node cluster on 127.0.0.1 with mutual TLS..."),
    )?;
    let started = Instant::now();
    let cluster = start_cluster(dir.path()).await?;
    let result = run_on(opts, wasm, &cluster, out, started).await;
    cluster.shutdown().await;
    drop(dir);
    result
}

/// The demo proper, on a running cluster (shut down by the caller).
async fn run_on(
    opts: &DemoOptions,
    wasm: Vec<u8>,
    cluster: &Cluster,
    out: &mut (dyn Write + Send),
    started: Instant,
) -> Result<DemoSummary, DemoError> {
    let names = cluster.names.clone();
    let (n1, n2, n3) = (&names[0], &names[1], &names[2]);
    let first = &cluster.clients[0];
    say(
        out,
        format_args!(
            "  nodes {} up in {:.1} s",
            cluster
                .nodes
                .iter()
                .map(|d| format!("{} ({})", d.name(), d.local_addr()))
                .collect::<Vec<_>>()
                .join(", "),
            started.elapsed().as_secs_f64()
        ),
    )?;

    // The guest, stored on n1 and named cluster-wide.
    first
        .add_module(wasm, Some("migrant"))
        .await
        .map_err(api("storing the migrant guest"))?;

    // The tally on n1.
    let tally = spawn(first, n1, &["tally".to_string()]).await?;
    wait_stdout(first, tally, "tally ready").await?;
    // Every other node fetches and compiles the guest now (a sender of no
    // messages), so the moves' times are their own. The name may take a
    // moment to reach them.
    for name in [n2, n3] {
        let client = cluster.on(name);
        let args = ["send".to_string(), tally.0.to_string(), "0".to_string()];
        let wait = Deadline::new(format!("{name} to run the migrant guest"), STEP_TIMEOUT);
        let warm = loop {
            match spawn(client, name, &args).await {
                Ok(pid) => break pid,
                Err(_) => wait.tick().await?,
            }
        };
        stdout_of(client, warm, true).await?;
    }

    // The sender on n3.
    let sender_args = vec![
        "send".to_string(),
        tally.0.to_string(),
        opts.messages.to_string(),
        opts.pause_ms.to_string(),
    ];
    let sender = spawn(cluster.on(n3), n3, &sender_args).await?;
    say(
        out,
        format_args!(
            "Started a counter (pid {tally}) on n1 and a sender (pid {sender}) on n3 sending it {} numbered messages",
            opts.messages
        ),
    )?;
    // Let a few messages arrive first.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let first_line = ask(first, n1, tally).await?;
    let mut ticks = vec![first_line.ticks];

    // n1 → n2 → n3 → n1.
    let mut moves = Vec::new();
    for (from, to) in [(0usize, 1usize), (1, 2), (2, 0)] {
        tokio::time::sleep(BETWEEN_MOVES).await;
        let here = cluster.on(&names[from]);
        let before = ask(here, &names[from], tally).await?;
        let report: MigrateReport =
            here.migrate(tally, Some(&names[to]))
                .await
                .map_err(|source| DemoError::Migrate {
                    from: names[from].clone(),
                    to: names[to].clone(),
                    source: Box::new(source),
                })?;
        let sender_running = home_of(here, sender).await?.as_deref() == Some(n3.as_str());
        let there = cluster.on(&names[to]);
        let after = ask(there, &names[to], tally).await?;
        say(
            out,
            format_args!(
                "  moved {} → {}: {:.1} ms, frozen {:.2} ms, {} of {} pages sent; ticks {} → {}, received {} → {}",
                names[from],
                names[to],
                ms(report.total_us),
                ms(report.freeze_us),
                report.pages_sent,
                report.pages_total,
                before.ticks,
                after.ticks,
                before.received,
                after.received
            ),
        )?;
        ticks.push(after.ticks);
        moves.push(DemoMove {
            from: names[from].clone(),
            to: names[to].clone(),
            total_ms: ms(report.total_us),
            frozen_ms: ms(report.freeze_us),
            pages_sent: report.pages_sent,
            pages_total: report.pages_total,
            delta_pages: report.delta_pages,
            sender_running,
            before,
            after,
        });
    }

    // Drain n2, holding a few extra tallies.
    let drained = cluster.on(n2);
    for _ in 0..opts.drain_processes {
        let pid = spawn(drained, n2, &["tally".to_string()]).await?;
        wait_stdout(drained, pid, "tally ready").await?;
    }
    let (drain_method, drained_moved) = drain(first, n2, out).await?;
    let drained_left = first
        .processes()
        .await
        .map_err(api("listing the processes"))?
        .iter()
        .filter(|p| p.node.as_deref() == Some(n2.as_str()))
        .count();
    say(
        out,
        format_args!("  drained {n2}: {drained_moved} processes moved away, {drained_left} left"),
    )?;

    // The sender finishes; the tally has every message.
    let (_, report) = stdout_of(cluster.on(n3), sender, true).await?;
    match report {
        Some(r) if r.code == 0 => {}
        other => {
            return Err(DemoError::Cluster {
                what: format!("the sender ({sender})"),
                why: format!(
                    "it ended badly: {}",
                    other.map_or_else(|| "no exit report".to_string(), |r| r.message)
                ),
            })
        }
    }
    // Idle now, the tally counts ticks again (it counts only the 5 ms
    // waits in which no message came).
    tokio::time::sleep(Duration::from_millis(250)).await;
    let tally_node = home_of(first, tally)
        .await?
        .unwrap_or_else(|| "?".to_string());
    let asked_on = cluster.on(&tally_node);
    let mut last = ask(asked_on, &tally_node, tally).await?;
    let wait = Deadline::new("the tally to count every message", STEP_TIMEOUT);
    while last.received < opts.messages {
        if wait.tick().await.is_err() {
            break;
        }
        last = ask(asked_on, &tally_node, tally).await?;
    }
    ticks.push(last.ticks);
    let summary = DemoSummary {
        nodes: names.clone(),
        tally,
        sender,
        moves,
        ticks,
        sent: opts.messages,
        last,
        tally_node,
        drained_node: n2.clone(),
        drain_method,
        drained_moved,
        drained_left,
        elapsed_ms: started.elapsed().as_millis() as u64,
    };
    let chain: Vec<String> = summary.ticks.iter().map(u64::to_string).collect();
    say(
        out,
        format_args!(
            "{} counter never reset: ticks {}",
            if summary.ticks_monotonic() {
                "✓"
            } else {
                "✗"
            },
            chain.join(" → ")
        ),
    )?;
    say(
        out,
        format_args!(
            "{} messages: received {} of {}, {} lost, {} duplicated, {} out of order",
            if summary.messages_exact() {
                "✓"
            } else {
                "✗"
            },
            last.received,
            summary.sent,
            summary.sent.saturating_sub(last.received),
            last.dups,
            last.gaps
        ),
    )?;
    Ok(summary)
}

/// Drain node `name` through the control API (`shoal node drain`: cordon,
/// then move every process to the scheduler's choice), printing progress.
/// Returns how (for the summary) and how many moved.
async fn drain(
    client: &Client,
    name: &str,
    out: &mut (dyn Write + Send),
) -> Result<(String, usize), DemoError> {
    let first = client
        .drain_start(name, Some(DRAIN_DEADLINE))
        .await
        .map_err(api(format!("draining {name}")))?;
    say(
        out,
        format_args!(
            "  draining {name}: cordoned, moving {} processes",
            first.total
        ),
    )?;
    let wait = Deadline::new(
        format!("the drain of {name} to end"),
        DRAIN_DEADLINE + STEP_TIMEOUT,
    );
    let mut shown = 0;
    let status = loop {
        let s = client
            .drain_status(name)
            .await
            .map_err(api(format!("asking how the drain of {name} goes")))?;
        if s.moved != shown && s.state == DrainState::Running {
            shown = s.moved;
            say(out, format_args!("    {} of {} moved", s.moved, s.total))?;
        }
        if s.state != DrainState::Running {
            break s;
        }
        wait.tick().await?;
    };
    for f in &status.failed {
        say(
            out,
            format_args!("    process {} did not move: {}", f.pid, f.why),
        )?;
    }
    Ok((
        format!(
            "shoal node drain: {} ({} moved, {} failed)",
            status.state,
            status.moved,
            status.failed.len()
        ),
        status.moved,
    ))
}
