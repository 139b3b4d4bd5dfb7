//! `shoal demo`: a local 3-node cluster showing live migration (the logic
//! is [`shoal_demo`], shared with the integration tests).

use anyhow::Context;
use clap::Args;
use shoal_demo::{self as demo, DemoOptions};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Set in the child that runs the demo while its parent holds the nodes'
/// log lines back.
const CHILD_ENV: &str = "SHOAL_DEMO_CHILD";
/// Node log lines kept to show if the demo fails.
const LOG_LINES_MAX: usize = 200;

/// Arguments of `shoal demo`.
#[derive(Args, Debug)]
#[command(
    after_help = "Starts three nodes in this process on 127.0.0.1 (random ports, mutual TLS,
data in a temporary directory removed at the end), moves a counter that
receives numbered messages n1 -> n2 -> n3 -> n1 while they flow, drains n2,
and checks that the counter never reset and that no message was lost,
duplicated or reordered. Exits 0 if all is well, 1 otherwise. Needs the
guests built first:
  cargo build --release --manifest-path guests/Cargo.toml --target wasm32-wasip1 --target-dir target/guests

Examples:
  shoal demo
  shoal demo --guests /path/to/guests/wasm32-wasip1/release
  shoal demo --json                {\"moves\": [...], \"last\": {\"received\": 4000, ...}, ...}"
)]
pub struct DemoArgs {
    /// The directory holding migrant.wasm (default:
    /// target/guests/wasm32-wasip1/release, then
    /// $CARGO_TARGET_DIR/guests/wasm32-wasip1/release).
    #[arg(long, value_name = "DIR")]
    guests: Option<PathBuf>,

    /// How many numbered messages the sender sends.
    #[arg(long, value_name = "N", default_value_t = 4000)]
    messages: u64,

    /// Print a JSON summary instead of the progress lines.
    #[arg(long)]
    json: bool,

    /// Also show the nodes' own log lines as they come (by default they
    /// are shown only if the demo fails).
    #[arg(long)]
    verbose: bool,
}

/// Run the demo in a child process (this binary again) with its stderr,
/// where the three nodes log, held back: shown only if it fails. `None` if
/// the child could not be started (the demo then runs here).
fn run_quietly() -> Option<i32> {
    let exe = std::env::current_exe().ok()?;
    let mut child = Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(CHILD_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let mut kept = std::collections::VecDeque::new();
    if let Some(stderr) = child.stderr.take() {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if kept.len() == LOG_LINES_MAX {
                kept.pop_front();
            }
            kept.push_back(line);
        }
    }
    let code = match child.wait() {
        Ok(status) => status.code().unwrap_or(1),
        Err(_) => 1,
    };
    if code != 0 {
        for line in kept {
            eprintln!("{line}");
        }
    }
    Some(code)
}

/// Run the demo and print what it saw; exit 1 if any check failed.
pub fn demo(args: DemoArgs) -> anyhow::Result<i32> {
    if !args.verbose && std::env::var_os(CHILD_ENV).is_none() {
        if let Some(code) = run_quietly() {
            return Ok(code);
        }
    }
    let opts = DemoOptions {
        guests_dir: args.guests,
        messages: args.messages,
        ..DemoOptions::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let summary = if args.json {
        runtime.block_on(demo::run(&opts, &mut std::io::sink()))?
    } else {
        runtime.block_on(demo::run(&opts, &mut std::io::stdout()))?
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    }
    let problems = summary.problems();
    if problems.is_empty() {
        if !args.json {
            println!(
                "All well: the counter moved 3 times and {} was drained, in {:.1} s.",
                summary.drained_node,
                summary.elapsed_ms as f64 / 1000.0
            );
        }
        Ok(0)
    } else {
        for p in problems {
            eprintln!("error: {p}");
        }
        Ok(1)
    }
}
