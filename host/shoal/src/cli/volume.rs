//! `shoal volume create|ls|rm|cp`: shared volumes, which processes on any
//! node mount with `shoal deploy app.wasm --volume NAME:/path`.

use super::remote::{block_on, Target};
use super::units::parse_bytes;
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use shoal_api::kv::parse_owner;
use shoal_api::volumes::{VolumeCreate, VolumeEntryView, VolumeSummary};
use shoal_pki::Owner;
use std::path::PathBuf;

macro_rules! volume_notes {
    () => {
        "A shared volume belongs to the identity that created it (your certificate,
or the local socket's operator). Processes that identity deploys mount it
with `shoal deploy app.wasm --volume NAME:/path` and read and write it with
plain file calls (std::fs, fopen) from any node.

Consistency is close-to-open: a file's new version becomes visible to
others, whole, when its writer closes or syncs it; a reader sees the
version current when it opened the file. Renames are atomic. When writers
on two nodes close the same file, the later close wins, whole. O_APPEND
from two nodes at once is not atomic across nodes (each appends to its own
copy; the later close wins). The tree lives in Raft; file content lives in
256 KiB chunks copied to --replicas nodes before a version is published,
so a file stays readable while one of its holders is down (replicas >= 2)."
    };
}

/// Arguments of `shoal volume`.
#[derive(Args, Debug)]
#[command(after_help = concat!("Examples:
  shoal volume create shared --replicas 2
  shoal volume cp ./config.toml shared:/etc/config.toml
  shoal deploy app.wasm --volume shared:/shared
  shoal volume ls shared:/etc
  shoal volume cp shared:/out/report.csv ./report.csv
  shoal volume rm shared

", volume_notes!()))]
pub struct VolumeArgs {
    #[command(subcommand)]
    command: VolumeCommand,
}

#[derive(Subcommand, Debug)]
enum VolumeCommand {
    /// Create a shared volume.
    #[command(after_help = "Examples:
  shoal volume create shared
  shoal volume create media --replicas 3 --bytes-max 100G --files-max 1000000

Names are 1-64 bytes of a-z, 0-9, `.`, `_`, `-`, starting with a letter or
digit. Each owner may have 64 shared volumes.")]
    Create(CreateArgs),
    /// List your shared volumes, or the entries of a directory of one
    /// (`NAME:/dir`).
    #[command(after_help = "Examples:
  shoal volume ls                    your volumes: replicas, usage, quotas
  shoal volume ls --all              everyone's (admins)
  shoal volume ls shared:/           the root directory of `shared`
  shoal volume ls shared:/logs --json")]
    Ls(LsArgs),
    /// Remove a shared volume and everything in it.
    Rm(RmArgs),
    /// Copy a file into a shared volume or out of one.
    #[command(after_help = "Examples:
  shoal volume cp ./data.bin shared:/in/data.bin     missing directories are created
  shoal volume cp shared:/out/result.txt ./result.txt
  shoal volume cp shared:/out/result.txt -           to stdout

One side is a host path (`-`: stdin or stdout), the other NAME:/path.
The new version replaces the file whole (at most 4 GiB per file).")]
    Cp(CpArgs),
}

#[derive(Args, Debug)]
struct CreateArgs {
    /// The volume's name.
    name: String,
    /// Copies of each chunk, on distinct nodes (1 to 5).
    #[arg(long, default_value_t = 1)]
    replicas: u8,
    /// Most bytes its files may hold (e.g. 10G; default 10 GiB).
    #[arg(long, value_parser = parse_bytes)]
    bytes_max: Option<u64>,
    /// Most files and directories (default 1,000,000).
    #[arg(long)]
    files_max: Option<u64>,
    /// Print the created volume as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct LsArgs {
    /// `NAME:/dir` to list a directory (none: list the volumes).
    at: Option<String>,
    /// Every owner's volumes (admins only).
    #[arg(long)]
    all: bool,
    /// Another owner's volume (admins only): ROLE:ID.
    #[arg(long, value_parser = parse_owner_arg)]
    owner: Option<Owner>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct RmArgs {
    /// The volume's name.
    name: String,
    /// Another owner's volume (admins only): ROLE:ID.
    #[arg(long, value_parser = parse_owner_arg)]
    owner: Option<Owner>,
}

#[derive(Args, Debug)]
struct CpArgs {
    /// From: a host path (`-`: stdin) or NAME:/path.
    from: String,
    /// To: NAME:/path or a host path (`-`: stdout).
    to: String,
    /// Another owner's volume (admins only): ROLE:ID.
    #[arg(long, value_parser = parse_owner_arg)]
    owner: Option<Owner>,
    /// Print what was written as JSON (copies into a volume).
    #[arg(long)]
    json: bool,
}

fn parse_owner_arg(s: &str) -> Result<Owner, String> {
    parse_owner(s).map_err(|e| e.to_string())
}

/// `NAME:/path` split, or `None` for a host path.
fn volume_ref(s: &str) -> Option<(&str, &str)> {
    let (name, path) = s.split_once(':')?;
    if name.is_empty() || !path.starts_with('/') || name.contains('/') {
        return None;
    }
    Some((name, path))
}

/// Run `shoal volume`.
pub fn volume(args: VolumeArgs, target: &Target) -> anyhow::Result<i32> {
    match args.command {
        VolumeCommand::Create(a) => create(a, target),
        VolumeCommand::Ls(a) => ls(a, target),
        VolumeCommand::Rm(a) => rm(a, target),
        VolumeCommand::Cp(a) => cp(a, target),
    }
}

fn create(a: CreateArgs, target: &Target) -> anyhow::Result<i32> {
    let req = VolumeCreate {
        name: a.name,
        replicas: a.replicas,
        bytes_max: a.bytes_max,
        files_max: a.files_max,
    };
    let v = block_on(target.client().volume_create(&req))??;
    if a.json {
        println!("{}", serde_json::to_string(&v)?);
    } else {
        println!(
            "created volume {} ({} replica{}, quota {} bytes, {} files)",
            v.name,
            v.replicas,
            if v.replicas == 1 { "" } else { "s" },
            v.bytes_max,
            v.files_max
        );
    }
    Ok(0)
}

fn print_volumes(list: &[VolumeSummary]) {
    println!(
        "{:<24} {:<20} {:>8} {:>14} {:>10} {:>14} {:>10}",
        "NAME", "OWNER", "REPLICAS", "BYTES", "FILES", "BYTES MAX", "FILES MAX"
    );
    for v in list {
        println!(
            "{:<24} {:<20} {:>8} {:>14} {:>10} {:>14} {:>10}",
            v.name, v.owner, v.replicas, v.bytes, v.files, v.bytes_max, v.files_max
        );
    }
}

fn print_entries(list: &[VolumeEntryView]) {
    println!(
        "{:<5} {:>12} {:>10} {:<16} NAME",
        "KIND", "SIZE", "VERSION", "HOLDERS"
    );
    for e in list {
        let holders: Vec<String> = e.holders.iter().map(|h| h.to_string()).collect();
        println!(
            "{:<5} {:>12} {:>10} {:<16} {}",
            e.kind,
            e.size,
            e.version,
            holders.join(","),
            e.name
        );
    }
}

fn ls(a: LsArgs, target: &Target) -> anyhow::Result<i32> {
    let client = target.client();
    match a.at.as_deref() {
        None => {
            let list = block_on(client.volumes(a.all))??;
            if a.json {
                println!("{}", serde_json::to_string(&list)?);
            } else {
                print_volumes(&list);
            }
        }
        Some(at) => {
            let (name, dir) = volume_ref(at)
                .with_context(|| format!("`{at}` is not NAME:/dir (e.g. shared:/logs)"))?;
            let list = block_on(client.volume_list(a.owner.as_ref(), name, dir))??;
            if a.json {
                println!("{}", serde_json::to_string(&list)?);
            } else {
                print_entries(&list);
            }
        }
    }
    Ok(0)
}

fn rm(a: RmArgs, target: &Target) -> anyhow::Result<i32> {
    let v = block_on(target.client().volume_remove(a.owner.as_ref(), &a.name))??;
    println!(
        "removed volume {} ({} bytes in {} files)",
        v.name, v.bytes, v.files
    );
    Ok(0)
}

fn cp(a: CpArgs, target: &Target) -> anyhow::Result<i32> {
    use std::io::{Read, Write};
    let client = target.client();
    match (volume_ref(&a.from), volume_ref(&a.to)) {
        (None, Some((name, path))) => {
            let content = if a.from == "-" {
                let mut b = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut b)
                    .context("cannot read stdin")?;
                b
            } else {
                let p = PathBuf::from(&a.from);
                std::fs::read(&p).with_context(|| format!("cannot read {}", p.display()))?
            };
            let w = block_on(client.volume_put(a.owner.as_ref(), name, path, content))??;
            if a.json {
                println!("{}", serde_json::to_string(&w)?);
            } else {
                eprintln!(
                    "wrote {}:/{} ({} bytes, version {}, on nodes {:?})",
                    w.volume, w.path, w.size, w.version, w.holders
                );
            }
        }
        (Some((name, path)), None) => {
            let bytes = block_on(client.volume_get(a.owner.as_ref(), name, path))??;
            if a.to == "-" {
                let mut out = std::io::stdout().lock();
                out.write_all(&bytes)?;
                out.flush()?;
            } else {
                std::fs::write(&a.to, &bytes).with_context(|| format!("cannot write {}", a.to))?;
            }
        }
        (Some(_), Some(_)) => bail!("copy between two volumes is not supported: copy out, then in"),
        (None, None) => bail!(
            "one side must be NAME:/path (a shared volume), e.g. `shoal volume cp ./f shared:/f`"
        ),
    }
    Ok(0)
}
