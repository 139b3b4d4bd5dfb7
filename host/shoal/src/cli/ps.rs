//! `shoal ps`: the running node's live processes.

use super::remote::{block_on, human_age, Target};
use clap::Args;

/// Arguments of `shoal ps`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  shoal ps
  shoal ps --json | jq '.[].pid'

Columns: PID, MODULE (short hash and registry names), AGE (time since it
started), MAILBOX (messages waiting to be received).")]
pub struct PsArgs {
    /// Print JSON instead of a table: a list of
    /// {pid, module, module_names, started_at_unix_ms, age_ms, mailbox_len}.
    #[arg(long)]
    json: bool,
}

/// List live processes.
pub fn ps(args: PsArgs, target: &Target) -> anyhow::Result<i32> {
    let list = block_on(target.client().processes())??;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(0);
    }
    let rows: Vec<[String; 5]> = list
        .iter()
        .map(|p| {
            let mut module = p.module.short();
            if !p.module_names.is_empty() {
                module.push(' ');
                module.push_str(&p.module_names.join(","));
            }
            [
                p.pid.to_string(),
                p.node.clone().unwrap_or_else(|| "-".into()),
                module,
                human_age(p.age_ms),
                p.mailbox_len.to_string(),
            ]
        })
        .collect();
    let header = ["PID", "NODE", "MODULE", "AGE", "MAILBOX"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    for r in std::iter::once(&header).chain(&rows) {
        println!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {:<w3$}  {}",
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3]
        );
    }
    Ok(0)
}
