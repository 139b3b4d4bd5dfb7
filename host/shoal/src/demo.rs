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

use serde::Serialize;
use shoal_daemon::migrate::drain::{self, DrainState};
use shoal_daemon::migrate::source::{migrate, MigrateError};
use shoal_daemon::migrate::MigrateReport;
use shoal_daemon::{Daemon, DaemonConfig, JoinSpec};
use shoal_runtime::node::HostMailbox;
use shoal_runtime::pid::Pid;
use std::io::Write;
use std::path::{Path, PathBuf};
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
    #[error("node {name} did not start: {why}")]
    NodeStart {
        /// The node.
        name: String,
        /// The cause.
        why: String,
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
    #[error("moving the tally from {from} to {to}: {source}")]
    Migrate {
        /// The node it was on.
        from: String,
        /// Where it was going (`any` for the scheduler's choice).
        to: String,
        /// The cause (boxed: it is large).
        source: Box<MigrateError>,
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

/// Poll `cond` every [`POLL`] until it holds, at most [`STEP_TIMEOUT`].
async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) -> Result<(), DemoError> {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > STEP_TIMEOUT {
            return Err(DemoError::Timeout {
                what: what.to_string(),
                timeout_s: STEP_TIMEOUT.as_secs(),
            });
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(())
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

/// Start node 1 as a new cluster and join the others through it.
async fn start_cluster(dir: &Path) -> Result<Vec<Daemon>, DemoError> {
    let mut nodes: Vec<Daemon> = Vec::new();
    for name in NODE_NAMES {
        let mut cfg = node_config(dir, name);
        if let Some(first) = nodes.first() {
            let token = first
                .create_join_token("node", Duration::from_secs(600))
                .await
                .map_err(|e| DemoError::Cluster {
                    what: "creating a join token".into(),
                    why: e.message,
                })?;
            cfg.join = Some(JoinSpec {
                addr: token.addr.clone(),
                token: token.token.clone(),
                ca_pin: token.ca_hash.clone(),
            });
        }
        match Daemon::start(cfg).await {
            Ok(d) => nodes.push(d),
            Err(e) => {
                shutdown(nodes).await;
                return Err(DemoError::NodeStart {
                    name: name.to_string(),
                    why: format!("{e:#}"),
                });
            }
        }
    }
    for d in &nodes {
        let raft = d.raft().clone();
        wait_for(&format!("{} to see 3 healthy nodes", d.name()), || {
            let now = shoal_pki::now_unix_ms();
            raft.state()
                .nodes
                .values()
                .filter(|r| now.saturating_sub(r.last_heartbeat_ms) < 2_000)
                .count()
                >= NODE_NAMES.len()
        })
        .await?;
    }
    Ok(nodes)
}

/// Stop every node.
async fn shutdown(nodes: Vec<Daemon>) {
    for d in nodes {
        d.shutdown().await;
    }
}

/// The name of the node the directory (as `via` sees it) places `pid` on.
fn home_of(via: &Daemon, pid: Pid) -> Option<String> {
    let state = via.raft().state();
    let id = state.directory.get(&pid.0)?.node;
    state.member(id).map(|m| m.name.clone())
}

/// Ask the tally for its counters through the host mailbox `mb`.
async fn ask(mb: &HostMailbox, tally: Pid) -> Result<TallyLine, DemoError> {
    let start = Instant::now();
    while mb.send(tally, b"get".to_vec()).is_err() {
        if start.elapsed() > STEP_TIMEOUT {
            return Err(DemoError::Timeout {
                what: format!("the tally ({tally}) to take a message"),
                timeout_s: STEP_TIMEOUT.as_secs(),
            });
        }
        tokio::time::sleep(POLL).await;
    }
    let reply = mb
        .recv(STEP_TIMEOUT)
        .await
        .ok_or_else(|| DemoError::Timeout {
            what: format!("the tally ({tally}) to answer"),
            timeout_s: STEP_TIMEOUT.as_secs(),
        })?;
    let text = String::from_utf8_lossy(&reply.data).into_owned();
    TallyLine::parse(&text).ok_or_else(|| DemoError::Cluster {
        what: "asking the tally for its counters".into(),
        why: format!("unexpected answer {text:?}"),
    })
}

/// Start `argv` (module `migrant`) on `node`.
async fn spawn(node: &Daemon, args: &[String]) -> Result<Pid, DemoError> {
    node.node()
        .spawn_by_reference("migrant", args.to_vec())
        .await
        .map_err(|code| DemoError::Cluster {
            what: format!("starting `migrant {}` on {}", args.join(" "), node.name()),
            why: format!("error {code}"),
        })
}

/// Wait until process `pid` on `node` has printed `text`.
async fn wait_stdout(node: &Daemon, pid: Pid, text: &str) -> Result<(), DemoError> {
    let n = node.node().clone();
    wait_for(&format!("process {pid} to print {text:?}"), || {
        n.stdout_text(pid).contains(text)
    })
    .await
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
    let nodes = start_cluster(dir.path()).await?;
    let result = run_on(opts, &wasm, &nodes, out, started).await;
    shutdown(nodes).await;
    drop(dir);
    result
}

/// The demo proper, on a running cluster (shut down by the caller).
async fn run_on(
    opts: &DemoOptions,
    wasm: &[u8],
    nodes: &[Daemon],
    out: &mut (dyn Write + Send),
    started: Instant,
) -> Result<DemoSummary, DemoError> {
    let names: Vec<String> = nodes.iter().map(|d| d.name().to_string()).collect();
    say(
        out,
        format_args!(
            "  nodes {} up in {:.1} s",
            nodes
                .iter()
                .map(|d| format!("{} ({})", d.name(), d.local_addr()))
                .collect::<Vec<_>>()
                .join(", "),
            started.elapsed().as_secs_f64()
        ),
    )?;

    // The guest, known everywhere.
    let hash = nodes[0]
        .add_module(wasm, Some("migrant"))
        .await
        .map_err(|e| DemoError::Cluster {
            what: "storing the migrant guest".into(),
            why: e.message,
        })?;
    let hex = hash.to_hex();
    for d in nodes {
        let raft = d.raft().clone();
        wait_for(&format!("{} to know the migrant module", d.name()), || {
            let s = raft.state();
            s.module_names.get("migrant") == Some(&hex)
                && s.modules.get(&hex).is_some_and(|m| !m.holders.is_empty())
        })
        .await?;
    }

    // Every node fetches and compiles it now, so the moves' times are
    // their own.
    for d in nodes {
        let node = d.node().clone();
        let failed = |why: String| DemoError::Cluster {
            what: format!("preparing the migrant guest on {}", d.name()),
            why,
        };
        let h = node
            .fetch_module("migrant")
            .await
            .map_err(|code| failed(format!("error {code}")))?;
        tokio::task::spawn_blocking(move || node.load_module(&h).map(|_| ()))
            .await
            .map_err(|e| failed(e.to_string()))?
            .map_err(|e| failed(e.to_string()))?;
    }

    // The tally on n1, the sender on n3.
    let tally = spawn(&nodes[0], &["tally".to_string()]).await?;
    wait_stdout(&nodes[0], tally, "tally ready").await?;
    let sender_args = vec![
        "send".to_string(),
        tally.0.to_string(),
        opts.messages.to_string(),
        opts.pause_ms.to_string(),
    ];
    let sender = spawn(&nodes[2], &sender_args).await?;
    say(
        out,
        format_args!(
            "Started a counter (pid {tally}) on n1 and a sender (pid {sender}) on n3 sending it {} numbered messages",
            opts.messages
        ),
    )?;
    let mb = nodes[0].node().open_mailbox();
    // Let a few messages arrive first.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let first = ask(&mb, tally).await?;
    let mut ticks = vec![first.ticks];

    // n1 → n2 → n3 → n1.
    let mut moves = Vec::new();
    for (from, to) in [(0usize, 1usize), (1, 2), (2, 0)] {
        tokio::time::sleep(BETWEEN_MOVES).await;
        let before = ask(&mb, tally).await?;
        let report: MigrateReport = migrate(nodes[from].migration(), tally, Some(&names[to]))
            .await
            .map_err(|source| DemoError::Migrate {
                from: names[from].clone(),
                to: names[to].clone(),
                source: Box::new(source),
            })?;
        let sender_running = nodes[2].node().router().is_local(sender);
        let after = ask(&mb, tally).await?;
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
    let drained = &nodes[1];
    for _ in 0..opts.drain_processes {
        let pid = spawn(drained, &["tally".to_string()]).await?;
        wait_stdout(drained, pid, "tally ready").await?;
    }
    let (drain_method, drained_moved) = drain(drained, out).await?;
    let drained_left = drained.node().processes().len();
    say(
        out,
        format_args!(
            "  drained {}: {} processes moved away, {} left",
            drained.name(),
            drained_moved,
            drained_left
        ),
    )?;

    // The sender finishes; the tally has every message.
    let status = tokio::time::timeout(Duration::from_secs(60), nodes[2].node().wait(sender))
        .await
        .map_err(|_| DemoError::Timeout {
            what: format!("the sender ({sender}) to finish"),
            timeout_s: 60,
        })?;
    if let Some(st) = status.filter(|st| !st.success()) {
        return Err(DemoError::Cluster {
            what: format!("the sender ({sender})"),
            why: format!("it ended badly: {st}"),
        });
    }
    // Idle now, the tally counts ticks again (it counts only the 5 ms
    // waits in which no message came).
    tokio::time::sleep(Duration::from_millis(250)).await;
    let mut last = ask(&mb, tally).await?;
    let deadline = Instant::now() + STEP_TIMEOUT;
    while last.received < opts.messages && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        last = ask(&mb, tally).await?;
    }
    ticks.push(last.ticks);
    let tally_node = home_of(&nodes[0], tally)
        .filter(|n| {
            nodes
                .iter()
                .any(|d| d.name() == n && d.node().router().is_local(tally))
        })
        .unwrap_or_else(|| "?".to_string());
    let summary = DemoSummary {
        nodes: names,
        tally,
        sender,
        moves,
        ticks,
        sent: opts.messages,
        last,
        tally_node,
        drained_node: drained.name().to_string(),
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

/// Drain `node` with [`shoal_daemon::migrate::drain`] (cordon, then move every
/// process to the scheduler's choice), printing progress. Returns how (for
/// the summary) and how many moved.
async fn drain(node: &Daemon, out: &mut (dyn Write + Send)) -> Result<(String, usize), DemoError> {
    let name = node.name().to_string();
    let failed = |why: String| DemoError::Cluster {
        what: format!("draining {name}"),
        why,
    };
    let first = drain::start(node.migration(), Some(DRAIN_DEADLINE))
        .await
        .map_err(|e| failed(e.to_string()))?;
    say(
        out,
        format_args!(
            "  draining {name}: cordoned, moving {} processes",
            first.total
        ),
    )?;
    let start = Instant::now();
    let mut shown = 0;
    let status = loop {
        let s = drain::status(node.migration()).map_err(|e| failed(e.to_string()))?;
        if s.moved != shown && s.state == DrainState::Running {
            shown = s.moved;
            say(out, format_args!("    {} of {} moved", s.moved, s.total))?;
        }
        if s.state != DrainState::Running {
            break s;
        }
        if start.elapsed() > DRAIN_DEADLINE + STEP_TIMEOUT {
            return Err(DemoError::Timeout {
                what: format!("the drain of {name} to end"),
                timeout_s: (DRAIN_DEADLINE + STEP_TIMEOUT).as_secs(),
            });
        }
        tokio::time::sleep(POLL).await;
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
