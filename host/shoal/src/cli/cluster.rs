//! `shoal cluster init`: make this node the first node of a new cluster.
//!
//! Creates, under `<data-dir>/pki/`: the cluster CA (`ca.key` 0600, never
//! overwritten), this node's own certificate signed by it (`node.key`,
//! `node.crt`), and admin credentials for the CLI in `admin/` (`ca.crt`,
//! `client.crt`, `client.key`). `shoal node start` calls the same
//! [`init_cluster_pki`] when the data directory has no PKI yet.

use clap::{Args, Subcommand};
use shoal_daemon::credentials::init_cluster_pki;
use std::path::Path;

/// Node name used when neither `--name` nor a usable host name is there.
const FALLBACK_NODE_NAME: &str = "node-1";

/// Arguments of `shoal cluster`.
#[derive(Args, Debug)]
pub struct ClusterArgs {
    #[command(subcommand)]
    command: ClusterCommand,
}

#[derive(Subcommand, Debug)]
enum ClusterCommand {
    /// Create a new cluster with this node as its first member.
    ///
    /// Creates the cluster CA in <data-dir>/pki (its key, ca.key, mode 0600,
    /// never leaves this node and is never overwritten: a second init
    /// refuses), this node's certificate signed by it (node.crt, node.key),
    /// and admin credentials for the CLI in <data-dir>/pki/admin/. Prints
    /// the CA pin (sha256:...), which nodes joining later use to recognise
    /// this cluster. Issue credentials for other users with `shoal cert
    /// create`.
    #[command(after_help = "Examples:
  shoal cluster init
  shoal cluster init --name node-a
  SHOAL_DATA_DIR=/srv/shoal shoal cluster init --json

Then:
  shoal node start --listen 0.0.0.0:7700
  export SHOAL_CREDS=<data-dir>/pki/admin SHOAL_ADDR=<this host>:7700
  shoal ps")]
    Init(InitArgs),
}

/// Arguments of `shoal cluster init`.
#[derive(Args, Debug)]
struct InitArgs {
    /// This node's name in the cluster, written into its certificate
    /// (1-63 characters [A-Za-z0-9._-], starting with a letter or digit;
    /// default: the host name, if it is one).
    #[arg(long, value_name = "NODE_NAME")]
    name: Option<String>,

    /// Print JSON {pki_dir, ca_pin, node_name, node_cert_serial,
    /// node_cert_expires_unix_ms, admin_dir} instead of text.
    #[arg(long)]
    json: bool,
}

/// This machine's host name if it is usable as a node id, else
/// [`FALLBACK_NODE_NAME`].
pub fn default_node_name() -> String {
    let from_kernel = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string());
    match from_kernel {
        Some(h) if shoal_pki::role::validate_id(&h).is_ok() => h,
        _ => FALLBACK_NODE_NAME.to_string(),
    }
}

/// Run `shoal cluster ...`.
pub fn cluster(args: ClusterArgs, data_dir: &Path) -> anyhow::Result<i32> {
    match args.command {
        ClusterCommand::Init(a) => init(a, data_dir),
    }
}

fn init(args: InitArgs, data_dir: &Path) -> anyhow::Result<i32> {
    let name = args.name.unwrap_or_else(default_node_name);
    let report = init_cluster_pki(data_dir, &name)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(0);
    }
    let pki = std::fs::canonicalize(&report.pki_dir).unwrap_or(report.pki_dir.clone());
    let admin = pki.join("admin");
    println!("Created a new Shoal cluster in {}", pki.display());
    println!("  CA pin      {}", report.ca_pin);
    println!(
        "  this node   {} ({}, {})",
        report.node_name,
        pki.join("node.crt").display(),
        pki.join("node.key").display()
    );
    println!(
        "  admin CLI   {} (ca.crt, client.crt, client.key)",
        admin.display()
    );
    println!(
        "  CA key      {} (keep it private; mode 0600)",
        pki.join("ca.key").display()
    );
    println!();
    println!("Next steps:");
    println!("  shoal node start --listen 0.0.0.0:7700");
    println!(
        "  export SHOAL_CREDS={} SHOAL_ADDR=<this host>:7700",
        admin.display()
    );
    println!("  shoal ps");
    println!("Credentials for other users: shoal cert create --client --name NAME -o DIR");
    Ok(0)
}
