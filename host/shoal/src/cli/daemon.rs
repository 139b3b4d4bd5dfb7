//! `shoal node start` and `shoal node status`: the long-running node and
//! a check on it.

use super::remote::{human_bytes, Target};
use super::units::parse_bytes;
use anyhow::Context;
use clap::{Args, Subcommand};
use shoal_daemon::api::UnixServer;
use std::io::Write;
use std::time::Duration;

/// How long open API connections (e.g. followed logs) get to finish when
/// the node stops.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Arguments of `shoal node`.
#[derive(Args, Debug)]
pub struct NodeArgs {
    #[command(subcommand)]
    command: NodeCommand,
}

// Parsed once per run: the size of its largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum NodeCommand {
    /// Run a node in the foreground until Ctrl-C or SIGTERM.
    ///
    /// With no --join, a data dir without a cluster becomes a new
    /// single-node cluster at once: the node creates the cluster CA (its key
    /// stays in <data-dir>/pki, mode 0600), its own certificate, and an admin
    /// credential in <data-dir>/pki/admin/. With --join ADDR --token T
    /// --ca-hash sha256:H (the line `shoal token create` prints) it joins an
    /// existing cluster: its key is generated here, the CA signs a
    /// short-lived certificate for it, and it becomes a Raft voter. Started
    /// again on the same data dir, a node comes back as the same member.
    ///
    /// Everything (peers, CLIs, joiners) uses the one --listen address,
    /// over mutual TLS. The node also serves its local Unix socket
    /// (<data-dir>/node.sock, mode 0600). When ready it prints
    /// `shoal node listening on <socket>` and `shoal node <name> (id N)
    /// serving on <addr>`. On Ctrl-C or SIGTERM it moves its processes to
    /// other nodes (see `shoal node stop`), kills what is left and exits.
    #[command(after_help = "Examples:
  A 3-node cluster on one machine:
    shoal --data-dir /tmp/a node start --name a --listen 127.0.0.1:7701 &
    shoal --data-dir /tmp/a token create --ttl 1h     # prints the join line
    shoal --data-dir /tmp/b node start --name b --listen 127.0.0.1:7702 \\
          --join 127.0.0.1:7701 --token <T> --ca-hash sha256:<H> &
    (again for c, with a new token)
    shoal --data-dir /tmp/a nodes
  Limits and labels:
    shoal node start --memory-max 64MiB --processes-max 100 --label zone=eu")]
    Start(StartArgs),
    /// Stop the node on this data dir (or --node): it first moves its
    /// processes to other nodes by live migration (as `shoal node drain`),
    /// within a deadline, then kills what is left and exits. SIGTERM and
    /// Ctrl-C on `shoal node start` do the same; a second signal kills at
    /// once. Admin only.
    #[command(after_help = "Examples:
  shoal node stop                    drain (up to --stop-deadline), then exit
  shoal node stop --deadline 2m
  shoal node stop --kill             kill its processes and exit at once")]
    Stop(StopArgs),
    /// Check that a node is running and show what it can take.
    #[command(after_help = "Examples:
  shoal node status
  shoal node status --json")]
    Status(StatusArgs),
    /// Remove a node from the cluster for good: it stops being a Raft
    /// member, its processes leave the directory, and its certificates are
    /// revoked (every node refuses its next handshake). Admin only.
    #[command(after_help = "Example:
  shoal node remove node-c")]
    Remove(NodeNameArgs),
    /// Stop placing new processes on a node (its processes keep running).
    #[command(after_help = "Example:
  shoal node cordon node-b")]
    Cordon(NodeNameArgs),
    /// Let the scheduler place processes on a cordoned node again.
    #[command(after_help = "Example:
  shoal node uncordon node-b")]
    Uncordon(NodeNameArgs),
    /// Move every process off a node by live migration: cordon it, then
    /// migrate its processes (4 at a time, the scheduler choosing each
    /// target), printing progress until done. Ctrl-C cancels (processes
    /// already moved stay moved). Exit 0 only if every process moved.
    /// Admin only.
    #[command(after_help = "Examples:
  shoal node drain node-b
  shoal node drain node-b --deadline 10m --json
  shoal node drain node-b --cancel
  shoal node uncordon node-b          (take processes again afterwards)")]
    Drain(super::drain::DrainArgs),
}

/// A node name argument.
#[derive(Args, Debug)]
struct NodeNameArgs {
    /// The node's name (see `shoal nodes`).
    #[arg(value_name = "NODE")]
    name: String,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Arguments of `shoal node start`.
#[derive(Args, Debug)]
struct StartArgs {
    /// Default memory cap of each process, e.g. 64MiB (default 512MiB).
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes)]
    memory_max: Option<u64>,

    /// The most linear memory all processes together may use, e.g. 16GiB
    /// (default: 80% of this machine's memory). A process that would pass
    /// it is refused at start ("memory budget is full"), and a guest's
    /// memory.grow past it returns -1, before the kernel's OOM killer has
    /// to choose.
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes)]
    memory_budget: Option<u64>,

    /// How long preparing one new module may take before it is stopped
    /// and the module refused, e.g. 30s (default 60s). Modules are
    /// prepared in worker processes, several at once, so one slow module
    /// holds up no one else.
    #[arg(long, value_name = "DURATION", value_parser = super::units::parse_duration)]
    prepare_timeout: Option<std::time::Duration>,

    /// Most processes alive at once (default 1000).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    processes_max: Option<u32>,

    /// This node's name in the cluster (its certificate id): letters,
    /// digits, `.`, `_`, `-`. Default: the host name. Kept across restarts.
    #[arg(long, value_name = "NAME")]
    name: Option<String>,

    /// Address for peers, CLIs and joiners (mutual TLS).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,

    /// The address other nodes should use, if not --listen (e.g. behind NAT).
    #[arg(long, value_name = "HOST:PORT")]
    advertise: Option<String>,

    /// A label for placement (`shoal deploy --label K=V`). Repeatable.
    #[arg(long = "label", value_name = "K=V")]
    labels: Vec<String>,

    /// A host directory clients may grant to the processes they restore
    /// (`shoal restore --dir`), with everything under it. Repeatable.
    /// Admins may grant any directory; nobody may grant the data dir, so a
    /// grantable directory may not hold it.
    #[arg(long = "grantable-dir", value_name = "DIR")]
    grantable_dirs: Vec<std::path::PathBuf>,

    /// Join the cluster of the node at this address (see `shoal token create`).
    #[arg(long, value_name = "HOST:PORT", requires_all = ["token", "ca_hash"])]
    join: Option<String>,

    /// The one-time join token.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "SHOAL_JOIN_TOKEN",
        requires = "join"
    )]
    token: Option<String>,

    /// The cluster CA's public-key pin, sha256:<hex>; the joiner refuses a
    /// cluster whose CA does not match it.
    #[arg(long, value_name = "sha256:HEX", requires = "join")]
    ca_hash: Option<String>,

    /// Rebalancing: when this node leads the cluster, move processes from
    /// the busiest node to the least busy one (on|off, default on).
    #[arg(long, value_name = "on|off", value_parser = ["on", "off"])]
    rebalance: Option<String>,

    /// Preparing modules ahead: fetch every module the cluster records and
    /// prepare it (Asyncify, compilation) in the background, at a low CPU
    /// priority, so spawns, restores and moves to this node never wait
    /// for a preparation (on|off, default on). With off, a module is
    /// fetched and prepared when first needed here.
    #[arg(long, value_name = "on|off", value_parser = ["on", "off"])]
    prepare_ahead: Option<String>,

    /// Tiered compilation: a spawn, restore or move that has to wait for a
    /// big module (1 MiB or more once prepared) gets code from wasmtime's
    /// baseline compiler (Winch, several times faster to compile, slower to
    /// run) while Cranelift compiles it in the background; processes
    /// started after that run Cranelift's code (on|off, default on). With
    /// off, every module waits for Cranelift.
    #[arg(long, value_name = "on|off", value_parser = ["on", "off"])]
    baseline_tier: Option<String>,

    /// Largest difference in process count between two nodes that
    /// rebalancing leaves alone (default 2).
    #[arg(long, value_name = "N")]
    rebalance_skew: Option<u32>,

    /// How often rebalancing looks: 500ms, 5s, 1m (default 5s).
    #[arg(long, value_name = "DURATION", value_parser = super::units::parse_duration)]
    rebalance_interval: Option<Duration>,

    /// The failure detector's window: when this node leads, it declares a
    /// node dead after hearing nothing from it for this long on its own
    /// monotonic clock, and alive when it hears from it again (default 5s;
    /// more than the 800ms election timeout). Use the same value on every
    /// node: whichever node leads applies its own.
    #[arg(long, value_name = "DURATION", value_parser = super::units::parse_duration)]
    dead_after: Option<Duration>,

    /// The lock-delay: how long the locks of processes on a node declared
    /// dead stay held after the verdict before others may take them
    /// (default 5s). Their fenced writes are refused once they are
    /// released.
    #[arg(long, value_name = "DURATION", value_parser = super::units::parse_duration)]
    lock_delay: Option<Duration>,

    /// Key-value writes and lock commands one identity's guests may make
    /// per second in the whole cluster (default 5000; give every node the
    /// same value): each node allows the share of it that matches the share
    /// of the identity's processes it runs. `shoal kv set|del` counts
    /// against the caller, at the whole rate on the node asked. Over it,
    /// guests get RATE_LIMITED and operators HTTP 429; retry later.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    kv_writes_per_s_max: Option<u32>,

    /// On SIGTERM, Ctrl-C or `shoal node stop`: move the node's processes
    /// to other nodes by live migration first, starting no move after this
    /// long (default 60s); what is left then is killed. A second signal
    /// kills at once.
    #[arg(long, value_name = "DURATION", value_parser = super::units::parse_duration, default_value = "60s")]
    stop_deadline: Duration,
}

/// Arguments of `shoal node stop`.
#[derive(Args, Debug)]
struct StopArgs {
    /// Kill the processes instead of moving them away first.
    #[arg(long)]
    kill: bool,
    /// Stop starting moves this long after the stop (moves in flight
    /// finish; what is left is killed). Default: the node's
    /// --stop-deadline.
    #[arg(long, value_name = "DURATION", value_parser = super::units::parse_duration, conflicts_with = "kill")]
    deadline: Option<Duration>,
}

/// Arguments of `shoal node status`.
#[derive(Args, Debug)]
struct StatusArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Run `shoal node ...`.
pub fn node(args: NodeArgs, target: &Target) -> anyhow::Result<i32> {
    match args.command {
        NodeCommand::Start(a) => start(a, target),
        NodeCommand::Status(a) => status(a, target),
        NodeCommand::Stop(a) => stop(a, target),
        NodeCommand::Remove(a) => super::nodes::remove(&a.name, a.json, target),
        NodeCommand::Cordon(a) => super::nodes::cordon(&a.name, true, a.json, target),
        NodeCommand::Uncordon(a) => super::nodes::cordon(&a.name, false, a.json, target),
        NodeCommand::Drain(a) => super::drain::drain(a, target),
    }
}

/// The file where a running node records its TCP address, for people and
/// tools (`--addr`). CLI verbs on the same data dir use the local socket,
/// never this address.
pub fn addr_file(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("node.addr")
}

fn default_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| shoal_pki::role::validate_id(s).is_ok())
        .unwrap_or_else(|| "node".to_string())
}

fn start(args: StartArgs, target: &Target) -> anyhow::Result<i32> {
    use shoal_daemon::{Daemon, DaemonConfig, JoinSpec};
    let name = args.name.clone().unwrap_or_else(default_name);
    let mut config = DaemonConfig::new(&target.data_dir, &name, args.listen);
    if let Some(m) = args.memory_max {
        config.node.engine.memory_bytes_max = config.node.engine.memory_bytes_max.max(m);
        config.node.process_memory_bytes_max = m;
    }
    if let Some(b) = args.memory_budget {
        config.node.memory_budget_bytes = b;
    }
    // Prepare modules in worker processes of this very binary.
    match std::env::current_exe() {
        Ok(program) => {
            config.node.prepare_worker = Some(shoal_prepare::worker::WorkerConfig {
                program,
                args: vec![crate::PREPARE_WORKER_ARG.to_string()],
                timeout: args
                    .prepare_timeout
                    .unwrap_or(std::time::Duration::from_secs(60)),
                parallel_max: std::thread::available_parallelism().map_or(2, |n| n.get()),
            })
        }
        Err(e) => tracing::warn!("preparing modules in this process: cannot find its binary: {e}"),
    }
    config.node.grantable_dirs = args.grantable_dirs.clone();
    if let Some(n) = args.processes_max {
        config.node.engine.processes_max = n;
    }
    config.advertise = args.advertise.clone();
    if let Some(on) = &args.rebalance {
        config.rebalance.enabled = on == "on";
    }
    if let Some(on) = &args.prepare_ahead {
        config.prepare_ahead = on == "on";
    }
    if args.baseline_tier.as_deref() == Some("off") {
        config.node.baseline_tier_bytes_min = None;
    }
    if let Some(n) = args.rebalance_skew {
        config.rebalance.skew_max = n;
    }
    if let Some(d) = args.rebalance_interval {
        config.rebalance.interval = d;
    }
    if let Some(d) = args.lock_delay {
        config.lock_delay = d;
    }
    if let Some(n) = args.kv_writes_per_s_max {
        config.kv_writes_per_s_max = n;
    }
    if let Some(d) = args.dead_after {
        config.raft.dead_after_ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    }
    for l in &args.labels {
        let (k, v) = l
            .split_once('=')
            .filter(|(k, _)| !k.trim().is_empty())
            .with_context(|| format!("--label `{l}`: expected K=V"))?;
        config
            .labels
            .insert(k.trim().to_string(), v.trim().to_string());
    }
    if let Some(addr) = &args.join {
        config.join = Some(JoinSpec {
            addr: addr.clone(),
            token: args.token.clone().unwrap_or_default(),
            ca_pin: args.ca_hash.clone().unwrap_or_default(),
        });
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        use tokio::signal::unix::{signal, SignalKind};
        // Take the socket first: a second node on this data dir refuses
        // before building anything.
        let server = UnixServer::bind(&target.socket)?;
        let daemon = Daemon::start(config)
            .await
            .context("cannot start the node")?;
        let node = daemon.node().clone();
        let addr = daemon.local_addr();
        let addr_path = addr_file(&target.data_dir);
        std::fs::write(&addr_path, format!("{addr}\n"))
            .with_context(|| format!("cannot write {}", addr_path.display()))?;
        let mut sigterm = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
        let mut sigint = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
        println!("shoal node listening on {}", server.path().display());
        println!(
            "shoal node {} (id {}) serving on {addr}",
            daemon.name(),
            daemon.id()
        );
        let _ = std::io::stdout().flush();
        let inner = daemon.inner().clone();
        let mut asked: Option<shoal_daemon::stop::StopRequest> = None;
        let shutdown = async {
            asked = Some(tokio::select! {
                _ = sigterm.recv() => Default::default(),
                _ = sigint.recv() => Default::default(),
                r = inner.stop.requested() => r,
            });
        };
        let connections = shoal_daemon::local_api::serve(server, inner.clone(), shutdown).await;
        let asked = asked.unwrap_or_default();
        let live = node.processes().len();
        if !asked.kill && live > 0 {
            let deadline = asked
                .deadline_ms
                .map(Duration::from_millis)
                .unwrap_or(args.stop_deadline);
            tracing::info!(
                "stopping: moving {live} process(es) to other nodes first (deadline {deadline:?}; \
                 signal again to kill them at once)"
            );
            tokio::select! {
                outcome = shoal_daemon::stop::drain_before_stop(&inner, deadline) => {
                    tracing::info!("before stopping: {outcome:?}");
                }
                _ = sigterm.recv() => tracing::warn!("second signal: killing the processes"),
                _ = sigint.recv() => tracing::warn!("second signal: killing the processes"),
            }
        }
        let live = node.processes().len();
        tracing::info!("stopping, killing {live} process(es)");
        let _ = std::fs::remove_file(&addr_path);
        daemon.shutdown().await;
        connections.drain(DRAIN_GRACE).await;
        tracing::info!("stopped");
        Ok(0)
    })
}

/// `shoal node stop`: ask the node to stop, then wait until it has.
fn stop(args: StopArgs, target: &Target) -> anyhow::Result<i32> {
    let client = target.client();
    let req = shoal_api::cluster::StopRequest {
        kill: args.kill,
        deadline_ms: args.deadline.map(|d| d.as_millis() as u64),
    };
    let accepted = super::remote::block_on(client.stop_node(&req))??;
    if accepted.already {
        eprintln!("the node was already stopping");
    }
    if args.kill || accepted.processes == 0 {
        eprintln!(
            "stopping the node ({} process(es) killed)",
            accepted.processes
        );
    } else {
        eprintln!(
            "stopping the node: moving its {} process(es) to other nodes first",
            accepted.processes
        );
    }
    // Over the local socket: wait for the node to go (its address file is
    // removed last). Over --node, the request is all this CLI can do.
    if target.tls.is_none() {
        let addr_path = addr_file(&target.data_dir);
        let limit = args.deadline.unwrap_or(Duration::from_secs(600)) + Duration::from_secs(60);
        let started = std::time::Instant::now();
        while addr_path.exists() {
            if started.elapsed() > limit {
                anyhow::bail!(
                    "the node is still running {} s after it was asked to stop",
                    started.elapsed().as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("stopped");
    }
    Ok(0)
}

fn status(args: StatusArgs, target: &Target) -> anyhow::Result<i32> {
    let client = target.client();
    let s = super::remote::block_on(client.status())??;
    if args.json {
        let mut v = serde_json::to_value(&s)?;
        // The socket only when that is how the node was reached (over
        // --addr, this CLI's default socket says nothing of the node).
        if target.tls.is_none() {
            v["socket"] = serde_json::Value::from(target.socket.display().to_string());
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    println!("node       running (shoal {})", s.version);
    println!("socket     {}", target.socket.display());
    println!("data dir   {}", s.data_dir);
    println!(
        "processes  {} of at most {}",
        s.processes_live, s.processes_max
    );
    println!(
        "memory     {} per process by default",
        human_bytes(s.process_memory_bytes_max)
    );
    Ok(0)
}
