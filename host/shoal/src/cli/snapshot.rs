//! `shoal snapshot` and `shoal restore`: capture a running process to a
//! file, and start a process again from one.

use super::remote::{block_on, human_bytes, Target};
use anyhow::Context;
use clap::Args;
use shoal_api::types::{RestoreRequest, SnapshotRequest};
use shoal_api::SNAPSHOT_FILE_BYTES_MAX;
use shoal_registry::Sha256;
use shoal_runtime::Pid;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Arguments of `shoal snapshot`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  shoal snapshot 4                       capture process 4; it keeps running
  shoal snapshot 4 --stop -o app.snap    capture, stop it, write the file
  shoal restore app.snap                 ...and start it again (new pid)
  shoal snapshot 4 --wait-max 30s --json

A process is captured when it is inside a blocking call (recv, sleep,
yield); a busy process is waited for, at most --wait-max. The snapshot is
stored in the node's registry, incremental over the process's previous
snapshot; -o also writes it as one self-contained file (mode 0600: it holds
the process's memory).")]
pub struct SnapshotArgs {
    /// The process (see `shoal ps`).
    #[arg(value_name = "PID")]
    pid: Pid,

    /// Also write the snapshot to FILE (atomically: a complete file or none).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,

    /// Stop the process once captured (e.g. to move it elsewhere).
    #[arg(long)]
    stop: bool,

    /// Longest wait for the process to reach a blocking call, e.g. 500ms,
    /// 10s, 2m (default 10s, at most 10m).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    wait_max: Option<Duration>,

    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Arguments of `shoal restore`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  shoal restore app.snap                 prints the new pid
  shoal restore app.snap --replace       take the place of the original process
  shoal restore sha256:4f0c...           a snapshot already in the node's registry
  shoal restore app.snap --json          {\"id\": \"sha256:...\", \"pid\": 7}
  shoal restore app.snap --dir /srv/data::/data --env MODE=fast

The file is verified completely (checksum, every page) before anything is
stored. The snapshot's module must be in the node's registry (deploy it
first if the node has never seen it). The process continues inside the call
it was captured in.")]
pub struct RestoreArgs {
    /// A snapshot file written by `shoal snapshot -o`, or the id of a
    /// snapshot in the node's registry.
    #[arg(value_name = "FILE|ID")]
    snapshot: String,

    /// If the process the snapshot was taken from still runs on this node,
    /// kill it and give its pid to the restored process (else the restored
    /// process gets a new pid).
    #[arg(long)]
    replace: bool,

    /// Grant a host directory of the node: HOST_DIR[::GUEST_DIR].
    /// Repeatable. A snapshot grants nothing by itself: every guest
    /// directory the process had must be granted again (the node refuses,
    /// naming them). A client may grant only the node's --grantable-dir
    /// directories.
    #[arg(long = "dir", value_name = "HOST_DIR[::GUEST_DIR]")]
    dir: Vec<String>,

    /// Pass an environment variable: NAME=VALUE, or NAME to copy it from
    /// this shell. Repeatable (the snapshot's environment is not used).
    #[arg(long = "env", value_name = "NAME[=VALUE]")]
    env: Vec<String>,

    /// Memory cap of the restored process, e.g. 64MiB (default: the node's).
    #[arg(long, value_name = "SIZE", value_parser = super::units::parse_bytes)]
    memory_max: Option<u64>,

    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Parse `500ms`, `10s`, `2m`, `1h`, or a bare number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    super::units::parse_duration_with(
        text,
        super::units::DurationRules {
            bare_is_secs: true,
            zero_ok: true,
            max: Duration::from_secs(7 * 86_400),
            max_words: "7 days",
            examples: "10s or 500ms",
        },
    )
}

/// Write `bytes` to `path` atomically, mode 0600 (a temporary file in the
/// same directory, synced, then renamed over `path`).
fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".shoal-snapshot-")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))?;
    tmp.write_all(bytes)
        .and_then(|_| tmp.as_file().sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Capture the process; print what it cost; maybe write the file.
pub fn snapshot(args: SnapshotArgs, target: &Target) -> anyhow::Result<i32> {
    let client = target.client();
    block_on(async {
        let req = SnapshotRequest {
            stop: args.stop,
            wait_max_ms: args.wait_max.map(|d| d.as_millis() as u64),
        };
        let report = client
            .snapshot(args.pid, &req)
            .await
            .with_context(|| format!("cannot snapshot process {}", args.pid))?;
        let mut file_bytes = None;
        if let Some(path) = &args.output {
            let bytes = client.export_snapshot(&report.id).await.with_context(|| {
                format!(
                    "snapshot {} was taken (it is in the node's registry) but could not be exported",
                    report.id
                )
            })?;
            write_atomic(path, &bytes).with_context(|| {
                format!("snapshot {} was taken but could not be saved", report.id)
            })?;
            file_bytes = Some(bytes.len() as u64);
        }
        if args.json {
            let mut v = serde_json::to_value(&report)?;
            if let (Some(path), Some(n)) = (&args.output, file_bytes) {
                v["file"] = serde_json::Value::from(path.display().to_string());
                v["file_bytes"] = serde_json::Value::from(n);
            }
            println!("{}", serde_json::to_string_pretty(&v)?);
            return Ok(0);
        }
        println!("snapshot  {}", report.id);
        println!(
            "process   {} ({})",
            report.pid,
            if report.stopped {
                "stopped"
            } else {
                "still running"
            }
        );
        println!("call      {}", report.pending_call);
        println!(
            "waited    {:.1} ms for the process to reach a blocking call",
            report.waited_ms
        );
        println!(
            "capture   {:.1} ms to hash and store the pages",
            report.capture_ms
        );
        println!(
            "pages     {} new of {} ({} new; memory {})",
            report.pages_new,
            report.pages_total,
            human_bytes(report.bytes_new),
            human_bytes(report.memory_bytes)
        );
        if let Some(parent) = &report.parent {
            println!("parent    {parent}");
        }
        if let (Some(path), Some(n)) = (&args.output, file_bytes) {
            println!("file      {} ({})", path.display(), human_bytes(n));
        }
        Ok(0)
    })?
}

/// Where `shoal restore` takes the snapshot from.
enum Source {
    /// A file's bytes, to send to the node.
    File(Vec<u8>),
    /// A snapshot already in the node's registry.
    Stored(Sha256),
}

/// Send the file (or name the stored snapshot) and start it; print the pid.
pub fn restore(args: RestoreArgs, target: &Target) -> anyhow::Result<i32> {
    let path = Path::new(&args.snapshot);
    let source = if path.is_file() {
        let len = std::fs::metadata(path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .len();
        if len > SNAPSHOT_FILE_BYTES_MAX {
            anyhow::bail!(
                "{} is {} bytes, over the snapshot file limit of {} bytes",
                path.display(),
                len,
                SNAPSHOT_FILE_BYTES_MAX
            );
        }
        Source::File(
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
        )
    } else {
        Source::Stored(args.snapshot.parse::<Sha256>().map_err(|_| {
            anyhow::anyhow!(
                "`{}` is neither a file nor a snapshot id (sha256:<64 hex>)",
                args.snapshot
            )
        })?)
    };
    let dirs: Vec<shoal_cluster::GrantedDir> = args
        .dir
        .iter()
        .map(|d| {
            let g = shoal_runtime::node::DirGrant::parse(d);
            shoal_cluster::GrantedDir {
                host: g.host.display().to_string(),
                guest: g.guest,
            }
        })
        .collect();
    let env = args
        .env
        .iter()
        .map(|e| super::remote::parse_env(e))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let client = target.client();
    block_on(async {
        let id = match source {
            Source::File(bytes) => client
                .import_snapshot(bytes)
                .await
                .with_context(|| format!("cannot restore {}", args.snapshot))?,
            Source::Stored(id) => id,
        };
        let restored = client
            .restore(
                &id,
                &RestoreRequest {
                    replace: args.replace,
                    dirs: dirs.clone(),
                    env: env.clone(),
                    memory_bytes_max: args.memory_max,
                },
            )
            .await
            .with_context(|| format!("cannot restore {}", args.snapshot))?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&restored)?);
        } else {
            println!("{}", restored.pid);
        }
        Ok(0)
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 fortnights").is_err());
    }
}
