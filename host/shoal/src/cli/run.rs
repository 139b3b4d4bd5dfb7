//! `shoal run`: run one module on an embedded single node.

use super::units::parse_bytes;
use anyhow::Context;
use clap::Args;
use shoal_runtime::node::DirGrant;
use shoal_runtime::process::ExitReason;
use shoal_runtime::{Node, NodeConfig, SpawnSpec};
use std::path::Path;

/// Arguments of `shoal run`.
#[derive(Args, Debug)]
#[command(trailing_var_arg = true)]
pub struct RunArgs {
    /// Pass an environment variable: NAME=VALUE, or NAME to copy it from the
    /// host's environment. Repeatable.
    #[arg(long = "env", value_name = "NAME[=VALUE]")]
    env: Vec<String>,

    /// Grant a host directory: HOST_DIR[::GUEST_DIR] (the guest sees HOST_DIR
    /// under its own name unless GUEST_DIR is given). Repeatable.
    #[arg(long = "dir", value_name = "HOST_DIR[::GUEST_DIR]")]
    dir: Vec<String>,

    /// Memory cap of the process, e.g. 64MiB (default 512MiB).
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes)]
    memory_max: Option<u64>,

    /// Stop the process after this much fuel (roughly, Wasm instructions).
    #[arg(long, value_name = "UNITS")]
    fuel: Option<u64>,

    /// Make every loop a capture point, so the process can be snapshotted
    /// while it computes, not only in a blocking call. Costs CPU in loops
    /// (measured +1% to +16% on loop-bound benchmarks, most in the tightest
    /// loops) and code size (prepared module about 1.8x larger); the module
    /// is prepared and compiled a second time for it.
    #[arg(long)]
    preemptible: bool,

    /// The module: a .wasm file, or a name or sha256 from the registry.
    #[arg(value_name = "MODULE")]
    module: String,

    /// Arguments passed to the program (after MODULE, or after `--`).
    #[arg(value_name = "ARGS", allow_hyphen_values = true)]
    args: Vec<String>,
}

/// Run the module and return its exit code.
pub fn run(args: RunArgs, data_dir: &Path) -> anyhow::Result<i32> {
    let env = args
        .env
        .iter()
        .map(|e| super::remote::parse_env(e))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let dirs: Vec<DirGrant> = args.dir.iter().map(|d| DirGrant::parse(d)).collect();
    for d in &dirs {
        if !d.host.is_dir() {
            anyhow::bail!("--dir {}: not a directory on this host", d.host.display());
        }
    }
    let mut config = NodeConfig::new(data_dir);
    if let Some(m) = args.memory_max {
        config.engine.memory_bytes_max = config.engine.memory_bytes_max.max(m);
        config.process_memory_bytes_max = m;
    }
    config.process_fuel = args.fuel;
    config.engine.processes_max = 256;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let node = Node::new(config).context("cannot start the node")?;
        let hash = super::module_from_arg(node.registry(), &args.module)?;
        let mut argv = vec![args.module.clone()];
        argv.extend(args.args);
        let mut spec = SpawnSpec::new(hash, argv);
        spec.env = env;
        spec.dirs = dirs;
        spec.inherit_stdin = true;
        spec.forward_output = true;
        spec.preemptible = args.preemptible;
        let pid = node
            .spawn(spec)
            .await
            .with_context(|| format!("cannot run {}", args.module))?;
        let status = node
            .wait(pid)
            .await
            .context("the process vanished without an exit status")?;
        match &status.reason {
            ExitReason::Exited { .. } => {}
            other => eprintln!("error: {} ({})", other, args.module),
        }
        Ok(status.code())
    })
}
