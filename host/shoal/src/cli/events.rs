//! `shoal events`: what failover did to processes.

use super::remote::{block_on, Target};
use clap::Args;

/// Arguments of `shoal events`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  shoal events
  shoal events --json | jq '.[] | select(.kind == \"resumed\")'

One line per event, oldest first (the cluster keeps the latest 1024):
  resumed    its node was declared dead; it runs again on another node, from
             its latest replicated checkpoint (or fresh if it had none)
  lost       its node was declared dead and it does not come back (restart
             policy never, or no node had room for it)
  restarted  it ended and its restart policy started it again

A client sees the events of its own processes only.")]
pub struct EventsArgs {
    /// Print JSON: a list of {seq, pid, at_unix_ms, kind, node, to,
    /// checkpoint_seq, checkpoint_age_ms, incarnation, text}.
    #[arg(long)]
    json: bool,
}

/// List the events.
pub fn events(args: EventsArgs, target: &Target) -> anyhow::Result<i32> {
    let list = block_on(target.client().events())??;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(0);
    }
    let rows: Vec<[String; 4]> = list
        .iter()
        .map(|e| {
            [
                e.seq.to_string(),
                e.pid.to_string(),
                e.kind.clone(),
                e.text
                    .chars()
                    .map(|c| if c.is_control() { '?' } else { c })
                    .collect(),
            ]
        })
        .collect();
    super::term::print_table(["SEQ", "PID", "EVENT", "WHAT"], &rows)?;
    Ok(0)
}
