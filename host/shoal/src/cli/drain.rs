//! `shoal node drain NODE`: cordon a node and move every process off it
//! (see `shoal_daemon::migrate::drain`), showing progress until it ends.

use super::remote::{block_on, Target};
use anyhow::Context;
use clap::Args;
use shoal_api::{Client, ClientError};
use shoal_daemon::migrate::drain::{DrainState, DrainStatus};
use std::time::Duration;

/// How often the CLI asks for progress.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Most status reads that may fail in a row before the CLI gives up (the
/// drain goes on on the node).
const POLL_FAILURES_MAX: u32 = 20;

/// Arguments of `shoal node drain`.
#[derive(Args, Debug)]
pub struct DrainArgs {
    /// The node to drain (see `shoal nodes`).
    #[arg(value_name = "NODE")]
    name: String,

    /// Stop starting migrations after this long: 500ms, 90s, 5m, 1h (at
    /// most 7d). Processes not moved by then stay on the node.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = super::units::parse_duration)]
    deadline: Duration,

    /// Cancel the node's running drain instead (moved processes stay
    /// moved; the node stays cordoned: `shoal node uncordon NODE`).
    #[arg(long)]
    cancel: bool,

    /// Print the final status as JSON instead of progress lines.
    #[arg(long)]
    json: bool,
}

fn progress_line(s: &DrainStatus) -> String {
    format!(
        "moved {}/{}, {} failed, {} remaining{}",
        s.moved,
        s.total,
        s.failed.len(),
        s.remaining.len(),
        if s.gone > 0 {
            format!(", {} exited", s.gone)
        } else {
            String::new()
        }
    )
}

fn print_final(s: &DrainStatus, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(s)?);
        return Ok(());
    }
    let took_ms = s
        .ended_unix_ms
        .unwrap_or_else(shoal_pki::now_unix_ms)
        .saturating_sub(s.started_unix_ms);
    let how = match s.state {
        DrainState::Done if s.failed.is_empty() => "drained",
        DrainState::Done => "drained, with failures,",
        DrainState::Cancelled => "drain cancelled on",
        DrainState::DeadlinePassed => "drain deadline passed on",
        DrainState::Running => "still draining",
    };
    println!(
        "{how} node {} in {:.1} s: {}",
        s.node,
        took_ms as f64 / 1000.0,
        progress_line(s)
    );
    for f in &s.failed {
        println!("  process {} did not move: {}", f.pid, f.why);
    }
    if !s.remaining.is_empty() {
        let list: Vec<String> = s.remaining.iter().map(|p| p.to_string()).collect();
        println!("  left on {}: {}", s.node, list.join(" "));
    }
    if s.state != DrainState::Running {
        println!(
            "  {} stays cordoned (`shoal node uncordon {}` to place processes there again)",
            s.node, s.node
        );
    }
    Ok(())
}

fn exit_code(s: &DrainStatus) -> i32 {
    if s.is_complete() {
        0
    } else {
        1
    }
}

/// Run `shoal node drain`.
pub fn drain(args: DrainArgs, target: &Target) -> anyhow::Result<i32> {
    let client = target.client();
    block_on(async move {
        if args.cancel {
            let s = client
                .drain_cancel(&args.name)
                .await
                .with_context(|| format!("cannot cancel the drain of node {}", args.name))?;
            if !args.json {
                println!("cancelled the drain of node {}", args.name);
            }
            print_final(&s, args.json)?;
            return Ok(1);
        }
        let first = client
            .drain_start(&args.name, Some(args.deadline))
            .await
            .with_context(|| format!("cannot drain node {}", args.name))?;
        if !args.json {
            println!(
                "draining node {}: cordoned, {} process(es) to move",
                first.node, first.total
            );
        }
        follow(&client, &args, first).await
    })?
}

/// Poll the drain until it ends; Ctrl-C cancels it.
async fn follow(client: &Client, args: &DrainArgs, first: DrainStatus) -> anyhow::Result<i32> {
    let mut last = progress_line(&first);
    let mut status = first;
    let mut failures = 0;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    // Bounded by the drain's deadline (plus the moves in flight then) and
    // by the failure count below.
    while status.state == DrainState::Running {
        tokio::select! {
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
            r = &mut ctrl_c => {
                r.context("cannot listen for Ctrl-C")?;
                eprintln!("interrupted: cancelling the drain of node {} (moves in flight finish)", args.name);
                let s = client
                    .drain_cancel(&args.name)
                    .await
                    .with_context(|| format!("cannot cancel the drain of node {}", args.name))?;
                print_final(&s, args.json)?;
                return Ok(1);
            }
        }
        match client.drain_status(&args.name).await {
            Ok(s) => {
                failures = 0;
                status = s;
            }
            Err(e) if failures < POLL_FAILURES_MAX && transient(&e) => {
                failures += 1;
                continue;
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "lost track of the drain of node {} (it goes on there; `shoal node drain {} --cancel` stops it)",
                    args.name, args.name
                )))
            }
        }
        let line = progress_line(&status);
        if !args.json && line != last && status.state == DrainState::Running {
            println!("{line}");
        }
        last = line;
    }
    print_final(&status, args.json)?;
    Ok(exit_code(&status))
}

/// Worth asking again (the node may be busy or electing a leader)?
fn transient(e: &ClientError) -> bool {
    !matches!(e.status(), Some(400..=499))
}
