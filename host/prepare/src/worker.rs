//! Preparation in a worker process, bounded in time.
//!
//! Preparation reads hostile bytes. A node therefore prepares each module in
//! a child process ([`Worker`]): several at once (tenants do not wait for
//! each other), each at the priority its caller asked for, each killed when
//! it passes the node's time bound, and a crash (a bug, memory exhaustion)
//! costs only that child. Preparation is linear in the module's size (its
//! analyses have work bounds), so the time bound is a second line of
//! defence, not the expected end of any valid module.
//!
//! The child is any program that calls [`serve`] on its stdin and stdout
//! (the `shoal` binary's hidden `__prepare-worker` command). Protocol, one
//! request per process: the parent writes `u32` length + JSON
//! [`PrepareOptions`], then `u64` length + the module; the child answers
//! `u32` length + JSON `Result<PrepareReport, PrepareError>`, then (on
//! success) `u64` length + the prepared module. Lengths are little-endian
//! and bounded before anything is allocated.

use super::{prepare, PrepareError, PrepareOptions, PrepareReport, PreparedWasm};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Condvar, Mutex};
use std::time::Duration;

/// Largest JSON header either side sends.
const HEADER_BYTES_MAX: u32 = 16 << 20;
/// Largest module either side sends.
const MODULE_BYTES_MAX: u64 = 1 << 30;

/// How a node runs preparation workers.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The program to run (e.g. the `shoal` binary).
    pub program: PathBuf,
    /// Its arguments (e.g. `["__prepare-worker"]`).
    pub args: Vec<String>,
    /// A worker still running after this long is killed.
    pub timeout: Duration,
    /// Most workers at once.
    pub parallel_max: usize,
}

/// Runs preparations in worker processes (see the module docs).
#[derive(Debug)]
pub struct Worker {
    config: WorkerConfig,
    running: Mutex<usize>,
    freed: Condvar,
}

impl Worker {
    /// A runner with `config`.
    pub fn new(config: WorkerConfig) -> Self {
        Worker {
            config,
            running: Mutex::new(0),
            freed: Condvar::new(),
        }
    }

    /// Prepare `input` with `opts` in a worker process. Blocks the calling
    /// thread (call it off the async workers) until a worker slot is free
    /// and the worker answered, died, or ran out of time.
    pub fn prepare(
        &self,
        input: &[u8],
        opts: &PrepareOptions,
    ) -> Result<PreparedWasm, PrepareError> {
        self.prepare_with(input, opts, &[])
    }

    /// [`Worker::prepare`] with `extra_args` after the configured ones
    /// (e.g. one asking the worker to lower its priority).
    pub fn prepare_with(
        &self,
        input: &[u8],
        opts: &PrepareOptions,
        extra_args: &[&str],
    ) -> Result<PreparedWasm, PrepareError> {
        let _slot = self.slot();
        self.run(input, opts, extra_args)
    }

    fn slot(&self) -> SlotGuard<'_> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        while *running >= self.config.parallel_max.max(1) {
            running = self.freed.wait(running).unwrap_or_else(|p| p.into_inner());
        }
        *running += 1;
        SlotGuard { worker: self }
    }

    fn run(
        &self,
        input: &[u8],
        opts: &PrepareOptions,
        extra_args: &[&str],
    ) -> Result<PreparedWasm, PrepareError> {
        let worker_err =
            |what: &str, e: &dyn std::fmt::Display| PrepareError::Worker(format!("{what}: {e}"));
        let mut child = Command::new(&self.config.program)
            .args(&self.config.args)
            .args(extra_args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| worker_err("cannot start it", &e))?;
        let (Some(mut stdin), Some(mut stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(PrepareError::Worker("no pipes to it".into()));
        };
        let request = encode_request(input, opts)?;
        // Writing and reading on their own threads: neither side can block
        // the other, and the deadline below holds whatever the child does.
        let writer = std::thread::spawn(move || stdin.write_all(&request));
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            let _ = tx.send(read_answer(&mut stdout));
        });
        let answer = match rx.recv_timeout(self.config.timeout) {
            Ok(answer) => answer,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = writer.join();
                let _ = reader.join();
                return Err(PrepareError::TimedOut {
                    timeout_ms: self.config.timeout.as_millis() as u64,
                });
            }
        };
        let status = child.wait().map_err(|e| worker_err("lost it", &e))?;
        let _ = writer.join();
        let _ = reader.join();
        match answer {
            Ok(result) => result,
            Err(e) => Err(PrepareError::Worker(format!(
                "it ended ({status}) without an answer: {e}"
            ))),
        }
    }
}

/// A held worker slot; frees it on drop.
struct SlotGuard<'a> {
    worker: &'a Worker,
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        let mut running = self
            .worker
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *running -= 1;
        self.worker.freed.notify_one();
    }
}

fn encode_request(input: &[u8], opts: &PrepareOptions) -> Result<Vec<u8>, PrepareError> {
    let header = serde_json::to_vec(opts).map_err(|e| PrepareError::Worker(e.to_string()))?;
    let mut out = Vec::with_capacity(12 + header.len() + input.len());
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&(input.len() as u64).to_le_bytes());
    out.extend_from_slice(input);
    Ok(out)
}

/// Read a `u32`-length-prefixed block (bounded).
fn read_header(r: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len);
    if len > HEADER_BYTES_MAX {
        return Err(std::io::Error::other(format!("header of {len} bytes")));
    }
    let mut buf = vec![0u8; len as usize];
    r.read_exact(&mut buf)?;
    Ok(buf)
}

/// Read a `u64`-length-prefixed module (bounded).
fn read_module(r: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 8];
    r.read_exact(&mut len)?;
    let len = u64::from_le_bytes(len);
    if len > MODULE_BYTES_MAX {
        return Err(std::io::Error::other(format!("module of {len} bytes")));
    }
    let mut buf = Vec::new();
    r.take(len).read_to_end(&mut buf)?;
    if buf.len() as u64 != len {
        return Err(std::io::Error::other("module cut short"));
    }
    Ok(buf)
}

fn read_answer(r: &mut impl Read) -> std::io::Result<Result<PreparedWasm, PrepareError>> {
    let header = read_header(r)?;
    let result: Result<PrepareReport, PrepareError> =
        serde_json::from_slice(&header).map_err(std::io::Error::other)?;
    Ok(match result {
        Ok(report) => {
            let bytes = read_module(r)?;
            Ok(PreparedWasm { bytes, report })
        }
        Err(e) => Err(e),
    })
}

/// The worker's side: read one request from `input`, prepare it, write the
/// answer to `output`. An I/O error means the parent went away.
pub fn serve(input: &mut impl Read, output: &mut impl Write) -> std::io::Result<()> {
    let header = read_header(input)?;
    let opts: PrepareOptions = serde_json::from_slice(&header).map_err(std::io::Error::other)?;
    let module = read_module(input)?;
    let (result, bytes) = match prepare(&module, &opts) {
        Ok(p) => (Ok(p.report), Some(p.bytes)),
        Err(e) => (Err(e), None),
    };
    let result: Result<PrepareReport, PrepareError> = result;
    let header = serde_json::to_vec(&result).map_err(std::io::Error::other)?;
    output.write_all(&(header.len() as u32).to_le_bytes())?;
    output.write_all(&header)?;
    if let Some(bytes) = bytes {
        output.write_all(&(bytes.len() as u64).to_le_bytes())?;
        output.write_all(&bytes)?;
    }
    output.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_and_its_answer_cross_the_pipes() {
        let wasm = wat::parse_str(
            r#"(module
              (import "shoal_v1" "recv" (func $recv (param i32 i32 i64 i32) (result i32)))
              (memory (export "memory") 1)
              (func (export "_start")
                (drop (call $recv (i32.const 0) (i32.const 0) (i64.const 0) (i32.const 0)))))"#,
        )
        .unwrap();
        let opts = PrepareOptions::new(vec![("shoal_v1".into(), "recv".into())]);
        let request = encode_request(&wasm, &opts).unwrap();
        let mut answer = Vec::new();
        serve(&mut request.as_slice(), &mut answer).unwrap();
        let got = read_answer(&mut answer.as_slice()).unwrap().unwrap();
        let direct = prepare(&wasm, &opts).unwrap();
        assert_eq!(got.bytes, direct.bytes);
        // Everything but the time each step took, which varies.
        let (mut got_report, mut direct_report) = (got.report, direct.report);
        got_report.timings = Default::default();
        direct_report.timings = Default::default();
        assert_eq!(got_report, direct_report);
        // A refusal crosses as itself.
        let mut answer = Vec::new();
        let request = encode_request(b"not wasm", &opts).unwrap();
        serve(&mut request.as_slice(), &mut answer).unwrap();
        let refused = read_answer(&mut answer.as_slice()).unwrap();
        assert!(
            matches!(refused, Err(PrepareError::Invalid { .. })),
            "{refused:?}"
        );
    }

    #[test]
    fn hostile_lengths_are_refused_before_allocation() {
        let mut huge = Vec::new();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(read_header(&mut huge.as_slice()).is_err());
        let mut huge = Vec::new();
        huge.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(read_module(&mut huge.as_slice()).is_err());
    }

    #[test]
    fn a_worker_that_hangs_is_killed_at_the_bound_and_one_that_dies_is_reported() {
        let hang = Worker::new(WorkerConfig {
            program: "sleep".into(),
            args: vec!["600".into()],
            timeout: Duration::from_millis(300),
            parallel_max: 1,
        });
        let opts = PrepareOptions::new(Vec::new());
        let r = hang.prepare(b"\0asm\x01\0\0\0", &opts);
        assert!(
            matches!(r, Err(PrepareError::TimedOut { timeout_ms: 300 })),
            "{r:?}"
        );
        let dies = Worker::new(WorkerConfig {
            program: "true".into(),
            args: Vec::new(),
            timeout: Duration::from_secs(600),
            parallel_max: 1,
        });
        let r = dies.prepare(b"\0asm\x01\0\0\0", &opts);
        assert!(matches!(r, Err(PrepareError::Worker(_))), "{r:?}");
    }
}
