//! Process identifiers.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A process identifier: unique across the cluster, and free of location —
/// a pid never says which node runs the process, so a process keeps its pid
/// when it moves.
///
/// Pids are plain non-zero `u64`s handed out by a [`PidAllocator`]; they print
/// as short decimal numbers (`42`) because people type them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Pid(pub u64);

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pid({})", self.0)
    }
}

/// The text given is not a pid.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not a pid (expected a positive integer such as 42)")]
pub struct PidParseError(String);

impl FromStr for Pid {
    type Err = PidParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().parse::<u64>() {
            Ok(0) | Err(_) => Err(PidParseError(s.to_string())),
            Ok(n) => Ok(Pid(n)),
        }
    }
}
