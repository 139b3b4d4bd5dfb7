//! `shoal node start` and `shoal node status`: the long-running node and
//! a check on it.

use super::remote::{human_bytes, Target};
use super::units::parse_bytes;
use anyhow::Context;
use clap::{Args, Subcommand};
use shoal_host::api::{handlers, UnixServer};
use shoal_host::{Node, NodeConfig};
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

#[derive(Subcommand, Debug)]
enum NodeCommand {
    /// Run a node in the foreground until Ctrl-C or SIGTERM.
    ///
    /// The node listens on a Unix socket, `<data-dir>/node.sock` unless
    /// --socket says otherwise, created with mode 0600: only the user who
    /// started the node (and root) can control it. Other verbs (deploy, ps,
    /// logs, kill, snapshot, restore) talk to it there. When it is ready it
    /// prints `shoal node listening on <socket>`. On Ctrl-C or SIGTERM it
    /// kills its processes, removes the socket and exits. Only one node can
    /// run per socket: a second one refuses to start.
    #[command(after_help = "Examples:
  shoal node start
  shoal node start --memory-max 64MiB --processes-max 100
  SHOAL_DATA_DIR=/srv/shoal shoal node start &
  shoal --socket /run/user/1000/shoal.sock node start")]
    Start(StartArgs),
    /// Check that a node is running and show what it can take.
    #[command(after_help = "Examples:
  shoal node status
  shoal node status --json")]
    Status(StatusArgs),
}

/// Arguments of `shoal node start`.
#[derive(Args, Debug)]
struct StartArgs {
    /// Default memory cap of each process, e.g. 64MiB (default 512MiB).
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes)]
    memory_max: Option<u64>,

    /// Most processes alive at once (default 1000).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    processes_max: Option<u32>,
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
    }
}

fn start(args: StartArgs, target: &Target) -> anyhow::Result<i32> {
    let mut config = NodeConfig::new(&target.data_dir);
    if let Some(m) = args.memory_max {
        config.engine.memory_bytes_max = config.engine.memory_bytes_max.max(m);
        config.process_memory_bytes_max = m;
    }
    if let Some(n) = args.processes_max {
        config.engine.processes_max = n;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        use tokio::signal::unix::{signal, SignalKind};
        // Take the socket first: a second node refuses before building an
        // engine.
        let server = UnixServer::bind(&target.socket)?;
        let node = Node::new(config).context("cannot start the node")?;
        let mut sigterm = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
        let mut sigint = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
        println!("shoal node listening on {}", server.path().display());
        let _ = std::io::stdout().flush();
        let shutdown = async move {
            tokio::select! {
                _ = sigterm.recv() => {}
                _ = sigint.recv() => {}
            }
        };
        let connections = server.serve(node.clone(), shutdown).await;
        let live = node.processes().len();
        eprintln!("shoal node: stopping, killing {live} process(es)");
        handlers::kill_all(&node).await;
        connections.drain(DRAIN_GRACE).await;
        eprintln!("shoal node: stopped");
        Ok(0)
    })
}

fn status(args: StatusArgs, target: &Target) -> anyhow::Result<i32> {
    let client = target.client();
    let s = super::remote::block_on(client.status())??;
    if args.json {
        let mut v = serde_json::to_value(&s)?;
        v["socket"] = serde_json::Value::from(target.socket.display().to_string());
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
