//! `shoal cluster init`: make this node the first node of a new cluster.
//!
//! Creates, under `<data-dir>/pki/`: the cluster CA (`ca.key` 0600, never
//! overwritten), this node's own certificate signed by it (`node.key`,
//! `node.crt`), and admin credentials for the CLI in `admin/` (`ca.crt`,
//! `client.crt`, `client.key`). `shoal node start` calls the same
//! [`init_cluster_pki`] when the data directory has no PKI yet.

use super::cert::{write_credentials, CA_FILE, CERT_FILE, KEY_FILE};
use anyhow::Context;
use clap::{Args, Subcommand};
use shoal_host::pki::ca::{DEFAULT_CLIENT_CERT_TTL, DEFAULT_NODE_CERT_TTL};
use shoal_host::pki::{CaPin, ClusterCa, Identity, PkiError, PkiPaths, Role, Serial};
use std::path::{Path, PathBuf};

/// The id of the admin credentials `cluster init` writes.
pub const ADMIN_ID: &str = "admin";

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

/// What [`init_cluster_pki`] created.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InitReport {
    /// `<data-dir>/pki`.
    pub pki_dir: PathBuf,
    /// The new CA's pin, `sha256:<hex>`.
    pub ca_pin: CaPin,
    /// This node's id in its certificate.
    pub node_name: String,
    /// Serial of this node's certificate.
    pub node_cert_serial: Serial,
    /// When this node's certificate expires, Unix ms.
    pub node_cert_expires_unix_ms: u64,
    /// The admin credentials directory (`ca.crt`, `client.crt`,
    /// `client.key`).
    pub admin_dir: PathBuf,
}

/// Create the cluster PKI in `data_dir`: the CA, this node's certificate
/// (id `node_name`, role node) and admin CLI credentials in
/// `<data-dir>/pki/admin/`.
///
/// Refuses, before creating anything, if a CA, a node identity or admin
/// credentials already exist there (a data directory belongs to at most
/// one cluster; its trust root is never replaced). The CA is created with
/// no-overwrite semantics, so of two racing inits only one proceeds.
pub fn init_cluster_pki(data_dir: &Path, node_name: &str) -> anyhow::Result<InitReport> {
    shoal_host::pki::role::validate_id(node_name).context("the node name")?;
    let paths = PkiPaths::new(data_dir);
    let admin_dir = paths.dir().join("admin");
    if paths.ca_key().exists() || paths.ca_cert().exists() {
        anyhow::bail!(
            "a cluster already exists in {}: this data directory already has a CA \
             (refusing to overwrite it)",
            paths.dir().display()
        );
    }
    let taken: Vec<String> = [
        paths.node_key(),
        paths.node_cert(),
        admin_dir.join(CA_FILE),
        admin_dir.join(CERT_FILE),
        admin_dir.join(KEY_FILE),
    ]
    .into_iter()
    .filter(|p| p.exists())
    .map(|p| p.display().to_string())
    .collect();
    if !taken.is_empty() {
        anyhow::bail!(
            "this data directory already holds cluster credentials ({}); refusing to \
             overwrite them (did this node join another cluster?)",
            taken.join(", ")
        );
    }

    let ca = match ClusterCa::init(data_dir) {
        Ok(ca) => ca,
        Err(PkiError::CaExists(p)) => anyhow::bail!(
            "a cluster CA already exists at {} (refusing to overwrite it)",
            p.display()
        ),
        Err(e) => return Err(anyhow::Error::new(e).context("cannot create the cluster CA")),
    };
    let node = ca
        .issue_with_new_key(Role::Node, node_name, DEFAULT_NODE_CERT_TTL)
        .context("cannot issue this node's certificate")?;
    Identity::save_pem(
        data_dir,
        &node.cert.cert_pem,
        &node.key_pem,
        ca.ca_cert_pem(),
    )
    .context("cannot save this node's certificate")?;
    let admin = ca
        .issue_with_new_key(Role::Admin, ADMIN_ID, DEFAULT_CLIENT_CERT_TTL)
        .context("cannot issue the admin credentials")?;
    write_credentials(&admin_dir, &admin, ca.ca_cert_pem(), false)
        .context("cannot save the admin credentials")?;
    Ok(InitReport {
        pki_dir: paths.dir().to_path_buf(),
        ca_pin: ca.ca_pin(),
        node_name: node.cert.id,
        node_cert_serial: node.cert.serial,
        node_cert_expires_unix_ms: node.cert.not_after_unix_ms,
        admin_dir,
    })
}

/// This machine's host name if it is usable as a node id, else
/// [`FALLBACK_NODE_NAME`].
pub fn default_node_name() -> String {
    let from_kernel = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string());
    match from_kernel {
        Some(h) if shoal_host::pki::role::validate_id(&h).is_ok() => h,
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
