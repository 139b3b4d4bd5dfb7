//! [`Pid`]: the address of a process.

use core::fmt;
use core::str::FromStr;

/// A process id: opaque, non-zero, unique in the cluster.
///
/// Pids are only compared, printed (as unsigned decimal, by [`Display`]) and
/// passed around (in messages, as arguments); their bits mean nothing.
///
/// [`Display`]: core::fmt::Display
///
/// ```
/// use shoal::Pid;
///
/// let pid: Pid = "42".parse().unwrap();
/// assert_eq!(pid.as_u64(), 42);
/// assert_eq!(pid.to_string(), "42");
/// assert_eq!(Pid::from_raw(42), pid);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pid(u64);

impl Pid {
    /// Wraps a raw pid, e.g. one received in a message or on the command line.
    ///
    /// Nothing is checked: a pid that names no live process makes
    /// [`send`](crate::send) fail with [`Error::NoProcess`](crate::Error::NoProcess).
    ///
    /// ```
    /// let pid = shoal::Pid::from_raw(7);
    /// assert_eq!(u64::from(pid), 7);
    /// ```
    pub const fn from_raw(raw: u64) -> Self {
        Pid(raw)
    }

    /// The raw `u64` value, e.g. to put the pid into a message.
    ///
    /// ```
    /// let pid = shoal::Pid::from_raw(7);
    /// let bytes = pid.as_u64().to_le_bytes();
    /// assert_eq!(shoal::Pid::from_raw(u64::from_le_bytes(bytes)), pid);
    /// ```
    pub const fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pid({})", self.0)
    }
}

impl From<u64> for Pid {
    fn from(raw: u64) -> Self {
        Pid(raw)
    }
}

impl From<Pid> for u64 {
    fn from(pid: Pid) -> Self {
        pid.0
    }
}

impl FromStr for Pid {
    type Err = core::num::ParseIntError;

    /// Parses the unsigned decimal form that [`Display`](core::fmt::Display)
    /// prints.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(Pid)
    }
}

/// Serialized as a plain `u64`, so pids can travel inside typed messages.
impl serde::Serialize for Pid {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(self.0)
    }
}

/// Deserialized from a plain `u64`.
impl<'de> serde::Deserialize<'de> for Pid {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        <u64 as serde::Deserialize>::deserialize(deserializer).map(Pid)
    }
}
