//! What the verbs that talk to a running node share: where its socket is,
//! the client, and a small async runtime to drive it.

use anyhow::Context;
use shoal_host::api::Client;
use std::future::Future;
use std::path::PathBuf;

/// Where the node's data and socket are, from `--data-dir` and `--socket`.
#[derive(Debug, Clone)]
pub struct Target {
    /// The data directory.
    pub data_dir: PathBuf,
    /// The node's control socket (default `<data_dir>/node.sock`).
    pub socket: PathBuf,
}

impl Target {
    /// A client of the node at this target's socket.
    pub fn client(&self) -> Client {
        Client::new(&self.socket)
    }
}

/// Run `future` on a single-threaded runtime (a CLI call is one request).
pub fn block_on<F: Future>(future: F) -> anyhow::Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    Ok(runtime.block_on(future))
}

/// Format a byte count for people: `512 B`, `12.0 KiB`, `1.5 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// Format a duration in milliseconds compactly for tables: `850ms`, `42s`,
/// `5m3s`, `2h10m`, `3d4h`.
pub fn human_age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// Parse an environment spec: `NAME=VALUE`, or `NAME` to copy the
/// variable from this shell's environment.
pub fn parse_env(spec: &str) -> anyhow::Result<(String, String)> {
    match spec.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        Some(_) => anyhow::bail!("--env `{spec}`: the variable name is empty"),
        None => {
            let v = std::env::var(spec).with_context(|| {
                format!("--env {spec}: no such variable in this shell's environment")
            })?;
            Ok((spec.to_string(), v))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(human_bytes(10), "10 B");
        assert_eq!(human_bytes(12 << 10), "12.0 KiB");
        assert_eq!(human_bytes(3 << 20), "3.0 MiB");
        assert_eq!(human_age(850), "850ms");
        assert_eq!(human_age(42_000), "42s");
        assert_eq!(human_age(303_000), "5m3s");
        assert_eq!(human_age(7_800_000), "2h10m");
        assert_eq!(human_age(100_000_000), "1d3h");
    }
}
