//! `shoal kill`: end processes on the running node.

use super::remote::{block_on, Target};
use clap::Args;
use shoal_runtime::Pid;

/// Arguments of `shoal kill`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  shoal kill 4                 prints `process 4 killed`
  shoal kill 4 5 6
  shoal kill 4 --json          {\"pid\": 4, \"code\": 137, \"reason\": {\"kind\": \"killed\"}, ...}")]
pub struct KillArgs {
    /// The processes to kill (see `shoal ps`).
    #[arg(value_name = "PID", required = true)]
    pids: Vec<Pid>,

    /// Print JSON (one object per process, one per line) instead of text.
    #[arg(long)]
    json: bool,
}

/// Kill each process and print how it ended. Exit 1 if any could not be
/// killed (the others still are).
pub fn kill(args: KillArgs, target: &Target) -> anyhow::Result<i32> {
    let client = target.client();
    block_on(async {
        let mut failed = None;
        for pid in &args.pids {
            match client.kill(*pid).await {
                Ok(report) => {
                    if args.json {
                        println!("{}", serde_json::to_string(&report)?);
                    } else {
                        println!("{}", report.message);
                    }
                }
                Err(e) if args.pids.len() == 1 => return Err(e.into()),
                Err(e) => {
                    eprintln!("error: {e}");
                    failed = Some(e);
                }
            }
        }
        Ok(if failed.is_some() { 1 } else { 0 })
    })?
}
