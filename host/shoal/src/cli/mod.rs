//! The `shoal` command line: argument parsing and one file per verb.
//!
//! Errors from user mistakes are printed as `error: …` with the cause chain
//! and exit code 1 (2 for usage errors, from clap); never a panic or a
//! backtrace.

mod ca;
mod cert;
mod cluster;
mod daemon;
mod demo;
mod deploy;
mod drain;
mod events;
mod inspect;
mod kill;
mod kv;
mod logging;
mod logs;
mod migrate;
mod nodes;
mod ps;
mod registry;
mod remote;
mod run;
mod snapshot;
mod term;
mod units;
mod volume;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::path::PathBuf;

/// Shoal runs WebAssembly processes that can be snapshotted and moved.
///
/// Start with `shoal run app.wasm`. Modules are WASI (wasm32-wasip1)
/// programs in any language; those built against the Shoal SDK can also
/// spawn processes and exchange messages.
#[derive(Parser, Debug)]
#[command(
    name = "shoal",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Where the node keeps its registry (modules, compiled code, snapshots).
    #[arg(long, global = true, env = "SHOAL_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// The running node's control socket (default: <DATA_DIR>/node.sock).
    #[arg(long, global = true, env = "SHOAL_SOCKET", value_name = "PATH")]
    socket: Option<PathBuf>,

    /// Talk to the cluster node at this address over mutual TLS instead of
    /// the local socket (deploy, ps, logs, kill, snapshot, restore, kv,
    /// locks, node status).
    #[arg(long, global = true, env = "SHOAL_ADDR", value_name = "HOST:PORT")]
    addr: Option<String>,

    /// Credentials for --addr: a directory holding ca.crt, client.crt and
    /// client.key, as written by `shoal cert create` (default: this data
    /// directory's own node certificate in <DATA_DIR>/pki/, if any).
    #[arg(long, global = true, env = "SHOAL_CREDS", value_name = "DIR")]
    creds: Option<PathBuf>,

    /// Our certificate for --addr (overrides the one in --creds).
    #[arg(long, global = true, env = "SHOAL_CERT", value_name = "FILE")]
    cert: Option<PathBuf>,

    /// Our private key for --addr, mode 0600 (overrides the one in --creds).
    #[arg(long, global = true, env = "SHOAL_KEY", value_name = "FILE")]
    key: Option<PathBuf>,

    /// The cluster CA certificate for --addr (overrides the one in --creds).
    #[arg(long, global = true, env = "SHOAL_CA", value_name = "FILE")]
    ca: Option<PathBuf>,

    /// Which log lines to print on stderr: `error`, `warn`, `info`,
    /// `debug`, `trace`, or a filter such as `shoal_daemon=debug,warn`
    /// [default: the RUST_LOG environment variable, else `info`].
    #[arg(long, global = true, value_name = "FILTER")]
    log_level: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a WebAssembly module as a Shoal process on an embedded node.
    ///
    /// Behaves like `wasmtime run`: stdout and stderr are streamed, the
    /// exit code is the guest's, and nothing on the host is reachable unless
    /// granted with --dir or --env.
    ///
    /// Examples:
    ///   shoal run hello.wasm
    ///   shoal run --env GREETING=hi --dir ./data::/data app.wasm -- --verbose
    ///   shoal run my-app            (a name pushed with `shoal push --name`)
    Run(run::RunArgs),
    /// Show a module's hash, imports, exports, Shoal ABI version and cache state.
    ///
    /// Example:
    ///   shoal inspect app.wasm --json
    Inspect(inspect::InspectArgs),
    /// Store a module in the local registry (optionally under a name).
    ///
    /// Example:
    ///   shoal push app.wasm --name app:v1
    Push(registry::PushArgs),
    /// List what the local registry holds: names and blobs.
    ///
    /// Example:
    ///   shoal ls --json
    Ls(registry::LsArgs),
    /// Run a long-lived node (`shoal node start`) that the verbs below talk
    /// to, or check on it (`shoal node status`).
    Node(daemon::NodeArgs),
    /// Send a module to the running node and start processes of it.
    ///
    /// Prints the new pids, one per line. The module is validated and
    /// stored in the node's registry; with --count N, N identical processes
    /// start (all or none).
    Deploy(deploy::DeployArgs),
    /// List the running node's live processes.
    Ps(ps::PsArgs),
    /// What failover did: processes resumed on another node after the
    /// death of theirs (from which checkpoint, how old), lost, restarted.
    Events(events::EventsArgs),
    /// Print a process's output (stdout, stderr and log lines) from the
    /// running node; with -f, keep following it until the process exits.
    Logs(logs::LogsArgs),
    /// Kill processes on the running node and print how each ended.
    Kill(kill::KillArgs),
    /// Move running processes to another node of the cluster (live).
    ///
    /// Prints the phases, the bytes sent and how long the process was frozen.
    Migrate(migrate::MigrateArgs),
    /// Capture a process on the running node at its next blocking call.
    ///
    /// Prints how long the node waited for the process to block, how long
    /// the capture took, and how many pages and bytes were new.
    Snapshot(snapshot::SnapshotArgs),
    /// Start a process on the running node from a snapshot file or id.
    ///
    /// Prints the new pid.
    Restore(snapshot::RestoreArgs),
    /// Create a cluster (`shoal cluster init`): its CA, this node's
    /// certificate and admin credentials.
    Cluster(cluster::ClusterArgs),
    /// The cluster CA: back it up, restore it on another node, and make
    /// that node the CA node when the first is lost.
    Ca(ca::CaArgs),
    /// CLI credentials: issue them from the cluster CA (`shoal cert
    /// create`), revoke an identity cluster-wide (`shoal cert revoke`),
    /// renew your own (`shoal cert renew`).
    Cert(cert::CertArgs),
    /// Read and write the replicated key-value store guests use
    /// (`shoal kv get|set|ls|del`), in your own buckets or, as an admin,
    /// any owner's.
    Kv(kv::KvArgs),
    /// List the cluster's locks held or waited for: owner, name, holder
    /// pid and node, fencing token, waiters.
    Locks(kv::LocksArgs),
    /// Shared volumes: create, list, remove, copy files in and out
    /// (`shoal volume create|ls|rm|cp`); processes mount them with
    /// `shoal deploy --volume NAME:/path`.
    Volume(volume::VolumeArgs),
    /// List the cluster's nodes: status, health, load, labels, leader.
    Nodes(nodes::NodesArgs),
    /// Create join tokens (`shoal token create --ttl 1h`).
    Token(nodes::TokenArgs),
    /// Start a local 3-node cluster and watch a process move between its
    /// nodes without losing its state or a message.
    ///
    /// Example:
    ///   shoal demo
    Demo(demo::DemoArgs),
}

/// Where the data directory is when not given: $XDG_DATA_HOME/shoal, else
/// ~/.local/share/shoal, else ./.shoal.
fn default_data_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(x).join("shoal");
    }
    if let Some(h) = std::env::var_os("HOME") {
        return PathBuf::from(h).join(".local/share/shoal");
    }
    PathBuf::from(".shoal")
}

/// Whether the parsed command talks to a node (and so needs `--addr`'s
/// TLS endpoint when one is given).
fn talks_to_node(command: &Command, matches: &clap::ArgMatches) -> bool {
    match command {
        Command::Deploy(_)
        | Command::Ps(_)
        | Command::Events(_)
        | Command::Logs(_)
        | Command::Kill(_)
        | Command::Migrate(_)
        | Command::Snapshot(_)
        | Command::Restore(_)
        | Command::Nodes(_)
        | Command::Kv(_)
        | Command::Locks(_)
        | Command::Volume(_)
        | Command::Token(_) => true,
        // `cert revoke|renew` ask a node; `cert create` signs here.
        Command::Cert(_) => cert::talks_to_node(
            matches
                .subcommand_matches("cert")
                .and_then(|m| m.subcommand_name()),
        ),
        Command::Ca(_) => ca::talks_to_node(
            matches
                .subcommand_matches("ca")
                .and_then(|m| m.subcommand_name()),
        ),
        // `node status|remove|cordon|uncordon` ask a node; `node start` runs one.
        Command::Node(_) => matches
            .subcommand_matches("node")
            .and_then(|m| m.subcommand_name())
            .is_some_and(|name| name != "start"),
        Command::Run(_)
        | Command::Inspect(_)
        | Command::Push(_)
        | Command::Ls(_)
        | Command::Cluster(_)
        | Command::Demo(_) => false,
    }
}

/// Parse arguments, run the verb, and return the process exit code.
pub fn main() -> i32 {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if let Err(e) = logging::init(cli.log_level.as_deref()) {
        eprintln!("error: {e}");
        return 2;
    }
    // A closed pipe ends a verb quietly, except where this process runs
    // nodes (`node start`, `demo`).
    let runs_nodes = match &cli.command {
        Command::Demo(_) => true,
        Command::Node(_) => {
            matches
                .subcommand_matches("node")
                .and_then(|m| m.subcommand_name())
                == Some("start")
        }
        _ => false,
    };
    if !runs_nodes {
        term::default_sigpipe();
    }
    let data_dir = cli.data_dir.clone().unwrap_or_else(default_data_dir);
    // Without --addr, a node running on this data dir is reached at its
    // local socket, which serves every verb (cluster-wide ones included);
    // never at a TCP address, which from another network namespace could
    // be anyone's.
    let addr = cli.addr.clone();
    let flags = remote::CredentialFlags {
        creds: cli.creds.clone(),
        cert: cli.cert.clone(),
        key: cli.key.clone(),
        ca: cli.ca.clone(),
    };
    let tls = match (&addr, talks_to_node(&cli.command, &matches)) {
        (Some(addr), true) => match remote::tls_target(addr, &flags, &data_dir) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("error: {e:#}");
                return 1;
            }
        },
        _ => None,
    };
    let target = remote::Target {
        socket: cli
            .socket
            .clone()
            .unwrap_or_else(|| shoal_api::socket_path(&data_dir)),
        data_dir: data_dir.clone(),
        tls,
        creds: remote::credential_files(&flags, &data_dir, addr.as_deref().unwrap_or("-")).ok(),
    };
    let result = match cli.command {
        Command::Run(args) => run::run(args, &data_dir),
        Command::Inspect(args) => inspect::inspect(args, &data_dir),
        Command::Push(args) => registry::push(args, &data_dir),
        Command::Ls(args) => registry::ls(args, &data_dir),
        Command::Node(args) => daemon::node(args, &target),
        Command::Deploy(args) => deploy::deploy(args, &target),
        Command::Ps(args) => ps::ps(args, &target),
        Command::Events(args) => events::events(args, &target),
        Command::Logs(args) => logs::logs(args, &target),
        Command::Kill(args) => kill::kill(args, &target),
        Command::Migrate(args) => migrate::migrate(args, &target),
        Command::Snapshot(args) => snapshot::snapshot(args, &target),
        Command::Restore(args) => snapshot::restore(args, &target),
        Command::Cluster(args) => cluster::cluster(args, &data_dir),
        Command::Ca(args) => ca::ca(args, &data_dir, &target),
        Command::Cert(args) => cert::cert(args, &data_dir, cli.addr.as_deref(), &target, &flags),
        Command::Nodes(args) => nodes::nodes(args, &target),
        Command::Kv(args) => kv::kv(args, &target),
        Command::Locks(args) => kv::locks(args, &target),
        Command::Volume(args) => volume::volume(args, &target),
        Command::Token(args) => nodes::token(args, &target),
        Command::Demo(args) => demo::demo(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

/// Read a module given as a file path, or (if no such file) look it up in
/// the registry by name or hash. Returns the bytes' hash.
fn module_from_arg(
    node_registry: &shoal_registry::Registry,
    arg: &str,
) -> anyhow::Result<shoal_registry::Sha256> {
    use anyhow::Context;
    let path = std::path::Path::new(arg);
    if path.exists() {
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read module file {}", path.display()))?;
        let bytes = wasm_or_wat(path, bytes)?;
        return node_registry
            .put(&bytes)
            .with_context(|| format!("cannot store {} in the registry", path.display()));
    }
    node_registry.resolve(arg).with_context(|| {
        format!("`{arg}` is neither a file nor a module in the registry (see `shoal ls`)")
    })
}

/// Accept WebAssembly text as `wasmtime run` does: a file that is not a
/// binary module but is UTF-8 text is parsed as WAT.
fn wasm_or_wat(path: &std::path::Path, bytes: Vec<u8>) -> anyhow::Result<Vec<u8>> {
    if bytes.starts_with(b"\0asm") || std::str::from_utf8(&bytes).is_err() {
        return Ok(bytes);
    }
    wat::parse_bytes(&bytes)
        .map(|b| b.into_owned())
        .map_err(|e| {
            anyhow::anyhow!(
        "{} is not a WebAssembly module (no \\0asm header), nor valid WebAssembly text: {e}",
        path.display()
    )
        })
}
