//! `shoal logs`: a process's captured output, optionally followed.

use super::remote::{block_on, Target};
use super::term::TermText;
use clap::Args;
use shoal_api::types::LogFrame;
use shoal_api::ClientError;
use shoal_runtime::log::Stream;
use shoal_runtime::Pid;
use std::io::{IsTerminal, Write};

/// Arguments of `shoal logs`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  shoal logs 4                 what process 4 wrote so far (stdout and stderr)
  shoal logs -f 4              ...and keep printing until it exits
  shoal logs 4 2>/dev/null     its stdout only

The whole output comes from any node, also of a process that moved or that
ended on another node; -f follows it across moves, each byte once, in order.
The node keeps the newest output of each process (1 MiB by default), also
for a while after the process exits; a note on stderr says, where the gap
is, how many bytes of older output were dropped.")]
pub struct LogsArgs {
    /// Keep printing new output until the process exits (Ctrl-C to stop
    /// watching; the process goes on).
    #[arg(short, long)]
    follow: bool,

    /// The process (see `shoal ps`).
    #[arg(value_name = "PID")]
    pid: Pid,
}

/// Where output frames are printed: stdout and stderr, each escaped when
/// it is a terminal ([`TermText`]), so guest bytes cannot drive it.
struct Printer {
    stdout: Option<TermText>,
    stderr: Option<TermText>,
}

impl Printer {
    fn new() -> Printer {
        Printer {
            stdout: std::io::stdout().is_terminal().then(TermText::default),
            stderr: std::io::stderr().is_terminal().then(TermText::default),
        }
    }

    fn write_frame(&mut self, frame: &LogFrame) -> std::io::Result<()> {
        match frame {
            LogFrame::Output {
                stream: Stream::Stdout,
                data,
            } => {
                let mut out = std::io::stdout().lock();
                match &mut self.stdout {
                    Some(t) => out.write_all(&t.push(data))?,
                    None => out.write_all(data)?,
                }
                out.flush()
            }
            LogFrame::Output {
                stream: Stream::Stderr,
                data,
            } => {
                let mut err = std::io::stderr().lock();
                match &mut self.stderr {
                    Some(t) => err.write_all(&t.push(data)),
                    None => err.write_all(data),
                }
            }
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
                let line = match self.stderr {
                    // A log line is one message: escaped on its own.
                    Some(_) => TermText::default().push(data),
                    None => data.clone(),
                };
                let text = String::from_utf8_lossy(&line);
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

    /// Print what is left of a character cut off at the end.
    fn finish(&mut self) -> std::io::Result<()> {
        if let Some(t) = &mut self.stdout {
            let mut out = std::io::stdout().lock();
            out.write_all(&t.finish())?;
            out.flush()?;
        }
        if let Some(t) = &mut self.stderr {
            std::io::stderr().lock().write_all(&t.finish())?;
        }
        Ok(())
    }
}

/// Print the output; with --follow, until the process ends. The client
/// finds the process wherever it runs or ended, and follows it across its
/// moves, each byte once ([`shoal_api::Client::logs`]).
pub fn logs(args: LogsArgs, target: &Target) -> anyhow::Result<i32> {
    let client = target.client();
    let mut printer = Printer::new();
    let result = block_on(client.logs(args.pid, args.follow, |frame| printer.write_frame(frame)))?;
    match result {
        Ok(end) => {
            match printer.finish() {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(0),
                other => other?,
            }
            if let (true, Some(report)) = (args.follow, end) {
                eprintln!("shoal: {}", report.message);
            }
            Ok(0)
        }
        Err(ClientError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(0),
        Err(e) => Err(e.into()),
    }
}
