//! `shoal ca`: keep the cluster CA safe from the loss of its node.
//!
//! `backup` copies the CA (certificate and key) out of the CA node's data
//! dir into one 0600 file; `restore` puts the key into another member's
//! data dir (stopped), checking it is this cluster's CA; `takeover` asks
//! that member, started again, to become the CA node. See the README's
//! "Losing a node" section for the whole recovery.

use super::remote::{block_on, Target};
use anyhow::Context;
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};

/// Arguments of `shoal ca`.
#[derive(Args, Debug)]
pub struct CaArgs {
    #[command(subcommand)]
    command: CaCommand,
}

#[derive(Subcommand, Debug)]
enum CaCommand {
    /// Write a backup of the cluster CA (its certificate and private key)
    /// from this data dir, which must hold the CA, to a new file (mode
    /// 0600; never overwritten).
    ///
    /// The backup can issue any certificate of the cluster: keep it
    /// offline. Without one, losing the CA node means no node, client or
    /// admin certificate can be renewed or issued again.
    #[command(after_help = "Example (on the CA node's machine):
  shoal --data-dir /srv/shoal ca backup --out /media/safe/shoal-ca.pem")]
    Backup {
        /// The file to write.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Put the CA key from a backup into this data dir, of a member that is
    /// stopped; refused unless the backup is of this node's cluster CA.
    ///
    /// Then start the node and run `shoal ca takeover` against it.
    #[command(
        after_help = "Example (the CA node n1 is lost; n2 takes over; stop n2's node first):
  shoal --data-dir /srv/shoal-n2 ca restore /media/safe/shoal-ca.pem
  shoal --data-dir /srv/shoal-n2 node start ...
  shoal --data-dir /srv/shoal-n2 ca takeover"
    )]
    Restore {
        /// The backup file written by `shoal ca backup`.
        #[arg(value_name = "BACKUP")]
        backup: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Make the node this CLI talks to the CA node (admin only): it must
    /// hold the cluster's CA key (`shoal ca restore`). Joins and
    /// certificate renewals go to it from then on.
    #[command(after_help = "Examples:
  shoal --data-dir /srv/shoal-n2 ca takeover
  shoal --addr n2.example:7700 --creds ~/.shoal/admin ca takeover --name n2 --json")]
    Takeover {
        /// The name of the node asked (it becomes the CA node; the admin's
        /// signature names it). Default: the node whose data dir this is.
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Whether `shoal ca <name>` talks to a node (only `takeover` does).
pub fn talks_to_node(subcommand: Option<&str>) -> bool {
    subcommand == Some("takeover")
}

/// Run `shoal ca`.
pub fn ca(args: CaArgs, data_dir: &Path, target: &Target) -> anyhow::Result<i32> {
    match args.command {
        CaCommand::Backup { out, json } => {
            let pin = shoal_pki::backup::backup_ca(data_dir, &out)?;
            if json {
                let v = serde_json::json!({ "ca_pin": pin.to_string(), "file": out });
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "Wrote a backup of the cluster CA ({pin}) to {}.",
                    out.display()
                );
                println!("It can issue any certificate of the cluster: keep it offline.");
            }
            Ok(0)
        }
        CaCommand::Restore { backup, json } => {
            let pin = shoal_pki::backup::restore_ca(data_dir, &backup)?;
            // The takeover is an admin's signed request: this data dir
            // holds the CA key now, so it gets an admin credential too.
            let admin = shoal_daemon::credentials::ensure_admin_credentials(data_dir)?;
            if json {
                let v = serde_json::json!({
                    "ca_pin": pin.to_string(),
                    "data_dir": data_dir,
                    "admin_credentials": admin,
                });
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "Restored the cluster CA key ({pin}) into {}.",
                    data_dir.display()
                );
                if let Some(dir) = &admin {
                    println!("Wrote admin credentials issued by it to {}.", dir.display());
                }
                println!("Start the node, then make it the CA node: shoal ca takeover");
            }
            Ok(0)
        }
        CaCommand::Takeover { name, json } => {
            let name = match name {
                Some(n) => n,
                None => shoal_pki::Identity::load(data_dir)
                    .map(|i| i.info().id.clone())
                    .with_context(|| {
                        format!(
                            "no node identity in {}: name the node asked with --name NAME",
                            data_dir.display()
                        )
                    })?,
            };
            let signer = target.signer("making a node the CA node")?;
            let client = target.client();
            let t = block_on(client.take_over_ca(&name, &signer))??;
            if json {
                println!("{}", serde_json::to_string_pretty(&t)?);
            } else {
                println!(
                    "Node {} (id {}) is now the CA node ({}): joins and renewals go to it.",
                    t.node, t.id, t.ca_pin
                );
            }
            Ok(0)
        }
    }
}
