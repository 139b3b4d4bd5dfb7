//! `shoal logs`: a process's captured output, optionally followed.

use super::remote::{block_on, Target};
use clap::Args;
use shoal_api::types::LogFrame;
use shoal_api::ClientError;
use shoal_runtime::log::Stream;
use shoal_runtime::Pid;
use std::io::Write;

/// Arguments of `shoal logs`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  shoal logs 4                 what process 4 wrote so far (stdout and stderr)
  shoal logs -f 4              ...and keep printing until it exits
  shoal logs 4 2>/dev/null     its stdout only

The node keeps the newest output of each process (1 MiB by default), also
for a while after the process exits; a note on stderr says when older output
was dropped.")]
pub struct LogsArgs {
    /// Keep printing new output until the process exits (Ctrl-C to stop
    /// watching; the process goes on).
    #[arg(short, long)]
    follow: bool,

    /// The process (see `shoal ps`).
    #[arg(value_name = "PID")]
    pid: Pid,
}

fn write_frame(frame: &LogFrame) -> std::io::Result<()> {
    match frame {
        LogFrame::Output {
            stream: Stream::Stdout,
            data,
        } => {
            let mut out = std::io::stdout().lock();
            out.write_all(data)?;
            out.flush()
        }
        LogFrame::Output {
            stream: Stream::Stderr,
            data,
        } => std::io::stderr().lock().write_all(data),
        LogFrame::Output {
            stream: Stream::Log(level),
            data,
        } => {
            let name = match level {
                0 => "error",
                1 => "warn",
                2 => "info",
                3 => "debug",
                _ => "trace",
            };
            let text = String::from_utf8_lossy(data);
            let mut err = std::io::stderr().lock();
            writeln!(err, "[{name}] {}", text.trim_end_matches('\n'))
        }
        LogFrame::Dropped(n) => {
            writeln!(
                std::io::stderr().lock(),
                "[shoal: {n} bytes of older output were dropped]"
            )
        }
        LogFrame::End(_) => Ok(()),
    }
}

/// Print the output; with --follow, until the process ends.
pub fn logs(args: LogsArgs, target: &Target) -> anyhow::Result<i32> {
    let client = target.client();
    // Output bytes already printed: when the process moves to another node
    // its log goes with it, so the follow goes on there, skipping these.
    let mut printed: u64 = 0;
    let mut moves = 0;
    loop {
        let mut skip = printed;
        let result = block_on(client.logs(args.pid, args.follow, |frame| {
            if let LogFrame::Output { stream, data } = frame {
                let len = data.len() as u64;
                if skip >= len {
                    skip -= len;
                    return Ok(());
                }
                let rest = data[skip as usize..].to_vec();
                skip = 0;
                printed += rest.len() as u64;
                return write_frame(&LogFrame::Output {
                    stream: *stream,
                    data: rest,
                });
            }
            write_frame(frame)
        }))?;
        match result {
            Ok(Some(report))
                if args.follow
                    && report.reason == shoal_runtime::process::ExitReason::Moved
                    && moves < FOLLOW_MOVES_MAX =>
            {
                // Ask again: the cluster sends the request to its new node
                // (give the directory a moment to show it there).
                moves += 1;
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Ok(end) => {
                if let (true, Some(report)) = (args.follow, end) {
                    eprintln!("shoal: {}", report.message);
                }
                return Ok(0);
            }
            Err(ClientError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                return Ok(0)
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Most moves `logs -f` follows a process across.
const FOLLOW_MOVES_MAX: u32 = 10_000;
