//! `shoal deploy`: send a module to the running node and start processes.

use super::remote::{block_on, parse_env, Target};
use super::units::{parse_bytes, parse_duration};
use anyhow::Context;
use clap::Args;
use shoal_api::types::SpawnRequest;
use shoal_cluster::state::failover::{RestartMode, RestartPolicy};
use std::path::Path;

/// Arguments of `shoal deploy`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  shoal deploy app.wasm                        one process; prints its pid
  shoal deploy app.wasm --name app:v1 --count 3
  shoal deploy app:v1 --env MODE=fast --env HOME -- --port 8080
  shoal deploy app.wasm --json                 [{\"pid\": 4, \"module\": \"sha256:...\"}]
  shoal deploy app.wasm --count 6              spread over the cluster's nodes
  shoal deploy app.wasm --node node-b          on node-b
  shoal deploy app.wasm --label zone=eu        on a node labelled zone=eu
  shoal deploy app.wasm --volume /data         a private volume at /data that moves with it
  shoal deploy app.wasm --volume /data --volume-bytes-max 64MiB
  shoal deploy app.wasm --restart on-failure   resumes elsewhere if its node dies
  shoal deploy app.wasm --restart always --checkpoint-every 500ms --replicas 2")]
pub struct DeployArgs {
    /// The module: a .wasm (or .wat) file, sent to the node; or, if no such
    /// file exists, a name or sha256 already in the node's registry.
    #[arg(value_name = "MODULE")]
    module: String,

    /// Also record the module in the node's registry under this name
    /// (e.g. `app:v1`), replacing any module that had the name.
    #[arg(long, value_name = "NAME")]
    name: Option<String>,

    /// How many processes to start (all or none).
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..))]
    count: u32,

    /// Pass an environment variable: NAME=VALUE, or NAME to copy it from
    /// this shell's environment. Repeatable.
    #[arg(long = "env", value_name = "NAME[=VALUE]")]
    env: Vec<String>,

    /// Memory cap of each process, e.g. 64MiB (default: the node's).
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes)]
    memory_max: Option<u64>,

    /// In a cluster: run on this node (by name, see `shoal nodes`).
    /// Default: the scheduler picks the node with the most free memory,
    /// least CPU load and fewest processes.
    #[arg(long = "node", value_name = "NAME", conflicts_with = "labels")]
    node: Option<String>,

    /// In a cluster: run only on nodes with this label (K=V, as given to
    /// `shoal node start --label`). Repeatable; all must match.
    #[arg(long = "label", value_name = "K=V", value_parser = parse_label)]
    labels: Vec<(String, String)>,

    /// Make every loop a capture point, so the process can be snapshotted
    /// while it computes, not only in a blocking call. Costs CPU in loops
    /// (measured +1% to +16% on loop-bound benchmarks, most in the tightest
    /// loops) and code size (prepared module about 1.8x larger); the module
    /// is prepared and compiled a second time for it.
    #[arg(long)]
    preemptible: bool,

    /// Give each process a private volume at this guest path (e.g.
    /// `/data`): an empty directory, plain WASI to the program (`std::fs`,
    /// `fopen`), that belongs to the process. Snapshots include it, moves
    /// and drains carry it (only chunks the target lacks travel), restores
    /// bring it back. Repeatable.
    ///
    /// `NAME:/path` mounts your shared volume NAME instead (see `shoal
    /// volume --help`): readable and writable from processes on any node,
    /// close-to-open consistent; it does not move with the process (it is
    /// everywhere) and its quotas are the volume's.
    #[arg(long = "volume", value_name = "[NAME:]GUEST_PATH", value_parser = parse_volume)]
    volumes: Vec<String>,

    /// Byte quota of each volume, e.g. 256MiB (default 1GiB). Past it,
    /// writes fail with EDQUOT and write nothing.
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes, requires = "volumes")]
    volume_bytes_max: Option<u64>,

    /// Most files and directories in each volume (default 100000); past
    /// it, creating one fails with EDQUOT.
    #[arg(long, value_name = "N", requires = "volumes")]
    volume_files_max: Option<u64>,

    /// When the processes come back: `never` (the default: nothing is
    /// checkpointed, so nothing is spent; a process whose node dies is
    /// shown `lost`), `on-failure` (after the loss of its node it resumes
    /// on a survivor from its latest replicated checkpoint, under its pid),
    /// or `always`. Resumption is at-least-once for now: what the process
    /// did after its checkpoint it does again (see README, "Failover").
    #[arg(long, value_name = "POLICY", default_value = "never")]
    restart: RestartMode,

    /// How often a process with a restart policy is checkpointed, e.g.
    /// 500ms or 2s. What it did since its latest checkpoint is what it
    /// repeats after a failover.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "1s")]
    checkpoint_every: std::time::Duration,

    /// On how many other nodes each checkpoint is kept (1 to 7).
    #[arg(long, value_name = "R", default_value_t = 1,
          value_parser = clap::value_parser!(u8).range(1..=7))]
    replicas: u8,

    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,

    /// Arguments passed to the program, after `--`.
    #[arg(value_name = "ARGS", last = true)]
    args: Vec<String>,
}

/// Parse `K=V`.
fn parse_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!("`{text}` is not K=V")),
    }
}

/// Parse a `--volume`: an absolute guest path (a private volume), or
/// `NAME:/path` (a shared volume).
fn parse_volume(text: &str) -> Result<String, String> {
    let mount = volume_mount(text);
    mount.check().map_err(|e| e.to_string())?;
    Ok(text.to_string())
}

/// The mount a checked `--volume` asks for.
fn volume_mount(text: &str) -> shoal_runtime::volume::VolumeMount {
    match text.split_once(':') {
        Some((name, path)) => shoal_runtime::volume::VolumeMount::shared(name, path),
        None => shoal_runtime::volume::VolumeMount::new(text),
    }
}

/// Deploy and print the new pids.
pub fn deploy(args: DeployArgs, target: &Target) -> anyhow::Result<i32> {
    let env = args
        .env
        .iter()
        .map(|e| parse_env(e))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let path = Path::new(&args.module);
    let wasm = if path.is_file() {
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read module file {}", path.display()))?;
        Some(super::wasm_or_wat(path, bytes)?)
    } else {
        None
    };
    let client = target.client();
    block_on(async {
        let module = match wasm {
            Some(bytes) => {
                let added = client
                    .add_module(bytes, args.name.as_deref())
                    .await
                    .with_context(|| format!("cannot deploy {}", args.module))?;
                added.hash.to_string()
            }
            None => {
                if let Some(name) = &args.name {
                    client.set_name(name, &args.module).await?;
                }
                args.module.clone()
            }
        };
        let req = SpawnRequest {
            module,
            argv0: Some(args.module.clone()),
            args: args.args.clone(),
            env,
            count: args.count,
            memory_bytes_max: args.memory_max,
            node: args.node.clone(),
            labels: args.labels.iter().cloned().collect(),
            preemptible: args.preemptible,
            volumes: args
                .volumes
                .iter()
                .map(|text| {
                    let m = volume_mount(text);
                    shoal_api::types::VolumeRequest {
                        guest: m.guest,
                        bytes_max: args.volume_bytes_max.filter(|_| m.shared.is_none()),
                        files_max: args.volume_files_max.filter(|_| m.shared.is_none()),
                        shared: m.shared,
                    }
                })
                .collect(),
            restart: (args.restart != RestartMode::Never).then_some(RestartPolicy {
                mode: args.restart,
                checkpoint_every_ms: args.checkpoint_every.as_millis() as u64,
                replicas: args.replicas,
            }),
        };
        let spawned = client
            .spawn(&req)
            .await
            .with_context(|| format!("cannot start {}", args.module))?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&spawned)?);
        } else {
            for s in &spawned {
                println!("{}", s.pid);
            }
        }
        Ok(0)
    })?
}
