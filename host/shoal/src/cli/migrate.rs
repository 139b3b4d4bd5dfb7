//! `shoal migrate`: move running processes to another node.

use super::remote::{block_on, Target};
use clap::Args;
use shoal_runtime::Pid;

/// Arguments of `shoal migrate`.
#[derive(Args, Debug)]
#[command(
    after_help = "The process keeps its pid, its memory, the call it is blocked in, its
queued messages and its open files; messages sent to it while it moves are
delivered there, none lost, duplicated or reordered. It is copied while it
runs, then frozen for the last changes only: the report says how long.

Examples:
  shoal migrate 4                  the scheduler picks the node
  shoal migrate 4 --to node-b
  shoal migrate 4 5 6 --to node-c
  shoal migrate 4 --json           {\"pid\": 4, \"from\": \"a\", \"to\": \"b\", \"freeze_us\": 2100, ...}"
)]
pub struct MigrateArgs {
    /// The processes to move (see `shoal ps`).
    #[arg(value_name = "PID", required = true)]
    pids: Vec<Pid>,

    /// The node to move them to, by name (see `shoal nodes`). Default: the
    /// scheduler chooses among the other healthy, uncordoned nodes.
    #[arg(long, value_name = "NODE")]
    to: Option<String>,

    /// Print JSON (one report per process, one per line) instead of text.
    #[arg(long)]
    json: bool,
}

/// Move each process and print what happened. Exit 1 if any did not move
/// (it then goes on where it was).
pub fn migrate(args: MigrateArgs, target: &Target) -> anyhow::Result<i32> {
    let client = target.client();
    block_on(async {
        let mut failed = false;
        for pid in &args.pids {
            match client.migrate(*pid, args.to.as_deref()).await {
                Ok(report) => {
                    if args.json {
                        println!("{}", serde_json::to_string(&report)?);
                    } else {
                        println!("{report}");
                        let phases: Vec<String> = report
                            .phases_us
                            .iter()
                            .map(|(name, us)| format!("{name} {:.2} ms", *us as f64 / 1000.0))
                            .collect();
                        println!("  phases: {}", phases.join(", "));
                    }
                }
                Err(e) if args.pids.len() == 1 => return Err(e.into()),
                Err(e) => {
                    eprintln!("error: process {pid}: {e}");
                    failed = true;
                }
            }
        }
        Ok(if failed { 1 } else { 0 })
    })?
}
