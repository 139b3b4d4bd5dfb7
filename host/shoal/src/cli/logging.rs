//! Where the log lines of the libraries (`tracing` events: the node's
//! admissions, moves, drains, refused connections) go: stderr, filtered by
//! `--log-level`, else `RUST_LOG`, else `info`.

use tracing_subscriber::EnvFilter;

/// The filter used when neither `--log-level` nor `RUST_LOG` says one.
const DEFAULT_FILTER: &str = "info";

/// A `--log-level` or `RUST_LOG` that is not a filter.
#[derive(Debug, thiserror::Error)]
#[error("{source_name} {filter:?} is not a log filter (try error, warn, info, debug, trace or shoal_daemon=debug,info): {why}")]
pub struct BadFilter {
    /// Where the filter came from: `--log-level` or `RUST_LOG`.
    source_name: &'static str,
    /// The filter as given.
    filter: String,
    /// What the parser said.
    why: String,
}

/// Install the process-wide subscriber writing to stderr (with colours only
/// when stderr is a terminal). `flag` is `--log-level`, which wins over
/// `RUST_LOG`.
pub fn init(flag: Option<&str>) -> Result<(), BadFilter> {
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|s| !s.trim().is_empty());
    let (source_name, filter) = match (flag, from_env) {
        (Some(f), _) => ("--log-level", f.to_string()),
        (None, Some(f)) => ("RUST_LOG", f),
        (None, None) => ("the default", DEFAULT_FILTER.to_string()),
    };
    let env_filter = EnvFilter::try_new(&filter).map_err(|e| BadFilter {
        source_name,
        filter: filter.clone(),
        why: e.to_string(),
    })?;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // A second init (never done by the binary) would fail; nothing to do then.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
    Ok(())
}
