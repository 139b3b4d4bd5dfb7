//! `shoal ps`: the running node's live processes.

use super::remote::{block_on, human_age, Target};
use clap::Args;
use shoal_api::types::{NodeReachState, ProcessState, ProcessSummary};

/// Arguments of `shoal ps`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  shoal ps
  shoal ps --json | jq '.[].pid'

Columns: PID, NODE, STATE, MODULE (short hash and registry names), AGE
(time since it started), MAILBOX (messages waiting to be received).

A process whose node cannot be asked (declared dead by the cluster's
failure detector, or not answering) is still listed, with STATE `unknown`
and `?` for what only its node knows; a warning on stderr names the node
and what is known of it. A process of a dead node that does not come back
(its restart policy is `never`, the default) is `lost`; one deployed with
`--restart on-failure|always` resumes on another node (see `shoal
events`).")]
pub struct PsArgs {
    /// Print JSON instead of a table: a list of {pid, node, state
    /// (running|unknown|lost), lost (why), restart ({policy,
    /// checkpoint_every_ms, replicas, incarnation, checkpoint_seq,
    /// checkpoint_age_ms, checkpoint_holders}), node_state (for unknown ones: {state dead|unreachable,
    /// liveness_epoch, dead_since_unix_ms, detail}), module, module_names,
    /// started_at_unix_ms, age_ms, mailbox_len, code_tier (baseline: it
    /// started before the optimizing compile of its module was done, and
    /// runs the baseline compiler's code; optimized)}.
    #[arg(long)]
    json: bool,
}

/// List live processes.
pub fn ps(args: PsArgs, target: &Target) -> anyhow::Result<i32> {
    let list = block_on(target.client().processes())??;
    if args.json {
        warn_unknown(&list);
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(0);
    }
    warn_unknown(&list);
    let unknown = "?".to_string();
    let rows: Vec<[String; 6]> = list
        .iter()
        .map(|p| {
            let mut module = p
                .module
                .map(|m| m.short())
                .unwrap_or_else(|| unknown.clone());
            if !p.module_names.is_empty() {
                module.push(' ');
                module.push_str(&p.module_names.join(","));
            }
            let state = match (p.state, &p.node_state) {
                (ProcessState::Running, _) => "running".to_string(),
                (ProcessState::Unknown, Some(n)) if n.state == NodeReachState::Dead => {
                    "unknown (node dead)".to_string()
                }
                (ProcessState::Unknown, _) => "unknown (node unreachable)".to_string(),
                (ProcessState::Lost, _) => "lost (node dead)".to_string(),
            };
            [
                p.pid.to_string(),
                p.node.clone().unwrap_or_else(|| "-".into()),
                state,
                module,
                p.age_ms.map(human_age).unwrap_or_else(|| unknown.clone()),
                p.mailbox_len
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| unknown.clone()),
            ]
        })
        .collect();
    super::term::print_table(["PID", "NODE", "STATE", "MODULE", "AGE", "MAILBOX"], &rows)?;
    Ok(0)
}

/// One stderr line per node whose processes are shown as unknown or lost.
fn warn_unknown(list: &[ProcessSummary]) {
    let mut seen = std::collections::BTreeMap::new();
    for p in list
        .iter()
        .filter(|p| matches!(p.state, ProcessState::Unknown | ProcessState::Lost))
    {
        let node = p.node.clone().unwrap_or_default();
        let shown = if p.state == ProcessState::Lost {
            "lost"
        } else {
            "unknown"
        };
        let entry = seen
            .entry((node, shown))
            .or_insert((0usize, p.node_state.clone()));
        entry.0 += 1;
    }
    for ((node, shown), (count, reach)) in seen {
        let detail = reach.map(|r| r.detail).unwrap_or_default();
        eprintln!(
            "warning: {count} process(es) on node {node} shown as {shown}: {}",
            detail
                .chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .collect::<String>()
        );
    }
}
