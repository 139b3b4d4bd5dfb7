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

/// Hands out pids that no other live or past process of this allocator used.
///
/// On a single node this is a counter starting at 1. A cluster hands each node
/// blocks of pids through its replicated state, so the same type serves both.
#[derive(Debug)]
pub struct PidAllocator {
    next: std::sync::atomic::AtomicU64,
}

impl PidAllocator {
    /// An allocator whose first pid is `first` (must be non-zero).
    pub fn starting_at(first: u64) -> Self {
        assert!(first != 0, "pid 0 is reserved");
        PidAllocator {
            next: std::sync::atomic::AtomicU64::new(first),
        }
    }

    /// The next unused pid.
    pub fn allocate(&self) -> Pid {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        assert!(n != 0, "pid space exhausted");
        Pid(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print() {
        assert_eq!("42".parse::<Pid>().unwrap(), Pid(42));
        assert!("0".parse::<Pid>().is_err());
        assert!("x".parse::<Pid>().is_err());
        assert_eq!(Pid(7).to_string(), "7");
    }

    #[test]
    fn allocator_is_unique() {
        let a = PidAllocator::starting_at(1);
        let p1 = a.allocate();
        let p2 = a.allocate();
        assert_ne!(p1, p2);
    }
}
