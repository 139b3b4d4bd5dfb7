//! [`Error`]: every ABI error code, plus the SDK's own failures.

use core::fmt;

use crate::sys;

/// A `Result` whose error is [`Error`].
///
/// ```
/// fn first_byte(msg: &shoal::Message) -> shoal::Result<u8> {
///     msg.data.first().copied().ok_or(shoal::Error::Invalid)
/// }
/// # let _ = first_byte;
/// ```
pub type Result<T, E = Error> = core::result::Result<T, E>;

/// Why a Shoal call failed.
///
/// The first variants map one-to-one to the ABI's error codes (see `sdk/ABI.md`
/// and [`Error::code`]); the last ones come from the SDK itself.
///
/// ```no_run
/// use std::time::Duration;
///
/// match shoal::recv(Some(Duration::from_millis(100))) {
///     Ok(msg) => println!("{} bytes from {}", msg.data.len(), msg.sender),
///     Err(shoal::Error::Timeout) => println!("nothing yet"),
///     Err(e) => eprintln!("recv failed: {e}"),
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// `FAULT` (-1): a pointer/length range was outside linear memory.
    Fault,
    /// `INVALID` (-2): a malformed argument (negative length, bad UTF-8, an
    /// argument containing NUL, an out-of-range value).
    Invalid,
    /// `NO_PROCESS` (-3): no live process has that pid.
    NoProcess,
    /// `TIMEOUT` (-4): the wait ended because its timeout elapsed.
    Timeout,
    /// `BUFFER_TOO_SMALL` (-5): the next message needs `needed` bytes; it is
    /// still queued. `needed` is 0 when the size is not known.
    BufferTooSmall {
        /// Size of the buffer the message needs, in bytes.
        needed: usize,
    },
    /// `TOO_LARGE` (-6): the message is over the per-message limit
    /// ([`MAX_MESSAGE_SIZE`](crate::MAX_MESSAGE_SIZE)).
    TooLarge,
    /// `MAILBOX_FULL` (-7): the receiver's mailbox is full; retry later (or use
    /// [`send_blocking`](crate::send_blocking)).
    MailboxFull,
    /// `NO_MODULE` (-8): no module with that hash or name is known.
    NoModule,
    /// `SPAWN_FAILED` (-9): the module exists but could not be started.
    SpawnFailed,
    /// `LIMIT` (-10): a node limit (process count) was reached.
    Limit,
    /// `NO_NODE` (-11): no node fits a spawn's placement target.
    NoNode,
    /// `CALLEE_DOWN` (-12): the callee ended before it replied.
    CalleeDown(crate::DownReason),
    /// `NODE_DOWN` (-13): the callee's node was declared dead before it
    /// replied.
    NodeDown,
    /// `NAME_TAKEN` (-14): another process of the same owner holds that name.
    NameTaken,
    /// `NOT_CALLABLE` (-15): the callee cannot receive calls (its module
    /// imports neither `recv_any` nor `recv_match`); nothing was queued.
    NotCallable,
    /// `NOT_FOUND` (-16): `kv_get`: the key does not exist.
    NotFound,
    /// `VERSION_MISMATCH` (-17): `kv_cas`: the key is not at the expected version.
    VersionMismatch,
    /// `FENCED` (-18): a fenced write or `lock_check` named a token that is not the lock's current holder's.
    Fenced,
    /// `BAD_KEY` (-19): a key is empty or longer than 256 bytes.
    BadKey,
    /// `VALUE_TOO_LARGE` (-20): a value is larger than 1 MiB.
    ValueTooLarge,
    /// `BAD_BUCKET` (-21): a bucket name is empty or longer than 64 bytes.
    BadBucket,
    /// `QUOTA` (-22): the owner's key-value or lock quota is used up.
    Quota,
    /// `RATE_LIMITED` (-23): the owner writes faster than its write-rate quota; retry later.
    RateLimited,
    /// `NOT_A_COUNTER` (-24): `kv_increment` of a value that is not a counter.
    NotACounter,
    /// `OVERFLOW` (-25): `kv_increment` would overflow.
    Overflow,
    /// `BUSY` (-26): `try_lock`: another process holds the lock.
    Busy,
    /// `DEADLOCK` (-27): `lock`: waiting would close a cycle of lock waits; nothing is held.
    Deadlock,
    /// `LOCK_LOST` (-28): `unlock`: the caller no longer holds the lock under that token.
    LockLost,
    /// `UNAVAILABLE` (-29): the cluster could not confirm the operation; a write may still apply.
    Unavailable,
    /// `BAD_BATCH` (-30): a key-value batch is empty, has more than 100 entries or more than 4 MiB.
    BadBatch,
    /// A negative code this SDK does not know (from a newer host).
    Unknown(i32),
    /// Not running inside a Shoal host (the crate was built for a non-wasm32
    /// target, where every call is a stub).
    Unsupported,
    /// A typed message could not be encoded (see [`send_msg`](crate::send_msg)).
    Encode(String),
    /// A message could not be decoded as the requested type (see
    /// [`recv_msg`](crate::recv_msg)).
    Decode(String),
}

impl Error {
    /// The error for a raw negative ABI code.
    ///
    /// [`Error::BufferTooSmall`] gets `needed: 0`; [`sys::UNSUPPORTED`] maps to
    /// [`Error::Unsupported`] and unlisted codes to [`Error::Unknown`].
    ///
    /// ```
    /// assert_eq!(shoal::Error::from_code(-3), shoal::Error::NoProcess);
    /// assert_eq!(shoal::Error::from_code(-99), shoal::Error::Unknown(-99));
    /// ```
    pub fn from_code(code: i32) -> Self {
        match code {
            sys::FAULT => Error::Fault,
            sys::INVALID => Error::Invalid,
            sys::NO_PROCESS => Error::NoProcess,
            sys::TIMEOUT => Error::Timeout,
            sys::BUFFER_TOO_SMALL => Error::BufferTooSmall { needed: 0 },
            sys::TOO_LARGE => Error::TooLarge,
            sys::MAILBOX_FULL => Error::MailboxFull,
            sys::NO_MODULE => Error::NoModule,
            sys::SPAWN_FAILED => Error::SpawnFailed,
            sys::LIMIT => Error::Limit,
            sys::NO_NODE => Error::NoNode,
            sys::CALLEE_DOWN => Error::CalleeDown(crate::DownReason::Unknown(0)),
            sys::NODE_DOWN => Error::NodeDown,
            sys::NAME_TAKEN => Error::NameTaken,
            sys::NOT_CALLABLE => Error::NotCallable,
            sys::NOT_FOUND => Error::NotFound,
            sys::VERSION_MISMATCH => Error::VersionMismatch,
            sys::FENCED => Error::Fenced,
            sys::BAD_KEY => Error::BadKey,
            sys::VALUE_TOO_LARGE => Error::ValueTooLarge,
            sys::BAD_BUCKET => Error::BadBucket,
            sys::QUOTA => Error::Quota,
            sys::RATE_LIMITED => Error::RateLimited,
            sys::NOT_A_COUNTER => Error::NotACounter,
            sys::OVERFLOW => Error::Overflow,
            sys::BUSY => Error::Busy,
            sys::DEADLOCK => Error::Deadlock,
            sys::LOCK_LOST => Error::LockLost,
            sys::UNAVAILABLE => Error::Unavailable,
            sys::BAD_BATCH => Error::BadBatch,
            sys::UNSUPPORTED => Error::Unsupported,
            other => Error::Unknown(other),
        }
    }

    /// The ABI code of this error, or `None` for the SDK's own errors
    /// ([`Unsupported`](Error::Unsupported), [`Encode`](Error::Encode),
    /// [`Decode`](Error::Decode)).
    ///
    /// ```
    /// assert_eq!(shoal::Error::MailboxFull.code(), Some(-7));
    /// assert_eq!(shoal::Error::Decode("eof".into()).code(), None);
    /// ```
    pub fn code(&self) -> Option<i32> {
        Some(match self {
            Error::Fault => sys::FAULT,
            Error::Invalid => sys::INVALID,
            Error::NoProcess => sys::NO_PROCESS,
            Error::Timeout => sys::TIMEOUT,
            Error::BufferTooSmall { .. } => sys::BUFFER_TOO_SMALL,
            Error::TooLarge => sys::TOO_LARGE,
            Error::MailboxFull => sys::MAILBOX_FULL,
            Error::NoModule => sys::NO_MODULE,
            Error::SpawnFailed => sys::SPAWN_FAILED,
            Error::Limit => sys::LIMIT,
            Error::NoNode => sys::NO_NODE,
            Error::CalleeDown(_) => sys::CALLEE_DOWN,
            Error::NodeDown => sys::NODE_DOWN,
            Error::NameTaken => sys::NAME_TAKEN,
            Error::NotCallable => sys::NOT_CALLABLE,
            Error::NotFound => sys::NOT_FOUND,
            Error::VersionMismatch => sys::VERSION_MISMATCH,
            Error::Fenced => sys::FENCED,
            Error::BadKey => sys::BAD_KEY,
            Error::ValueTooLarge => sys::VALUE_TOO_LARGE,
            Error::BadBucket => sys::BAD_BUCKET,
            Error::Quota => sys::QUOTA,
            Error::RateLimited => sys::RATE_LIMITED,
            Error::NotACounter => sys::NOT_A_COUNTER,
            Error::Overflow => sys::OVERFLOW,
            Error::Busy => sys::BUSY,
            Error::Deadlock => sys::DEADLOCK,
            Error::LockLost => sys::LOCK_LOST,
            Error::Unavailable => sys::UNAVAILABLE,
            Error::BadBatch => sys::BAD_BATCH,
            Error::Unknown(code) => *code,
            Error::Unsupported | Error::Encode(_) | Error::Decode(_) => return None,
        })
    }

    /// The ABI's symbolic name for this error (`"NO_PROCESS"`, ...), as in
    /// `sdk/ABI.md`; SDK-only errors get their own upper-case names.
    ///
    /// ```
    /// assert_eq!(shoal::Error::Timeout.name(), "TIMEOUT");
    /// ```
    pub fn name(&self) -> &'static str {
        match self {
            Error::Fault => "FAULT",
            Error::Invalid => "INVALID",
            Error::NoProcess => "NO_PROCESS",
            Error::Timeout => "TIMEOUT",
            Error::BufferTooSmall { .. } => "BUFFER_TOO_SMALL",
            Error::TooLarge => "TOO_LARGE",
            Error::MailboxFull => "MAILBOX_FULL",
            Error::NoModule => "NO_MODULE",
            Error::SpawnFailed => "SPAWN_FAILED",
            Error::Limit => "LIMIT",
            Error::NoNode => "NO_NODE",
            Error::CalleeDown(_) => "CALLEE_DOWN",
            Error::NodeDown => "NODE_DOWN",
            Error::NameTaken => "NAME_TAKEN",
            Error::NotCallable => "NOT_CALLABLE",
            Error::NotFound => "NOT_FOUND",
            Error::VersionMismatch => "VERSION_MISMATCH",
            Error::Fenced => "FENCED",
            Error::BadKey => "BAD_KEY",
            Error::ValueTooLarge => "VALUE_TOO_LARGE",
            Error::BadBucket => "BAD_BUCKET",
            Error::Quota => "QUOTA",
            Error::RateLimited => "RATE_LIMITED",
            Error::NotACounter => "NOT_A_COUNTER",
            Error::Overflow => "OVERFLOW",
            Error::Busy => "BUSY",
            Error::Deadlock => "DEADLOCK",
            Error::LockLost => "LOCK_LOST",
            Error::Unavailable => "UNAVAILABLE",
            Error::BadBatch => "BAD_BATCH",
            Error::Unknown(_) => "UNKNOWN",
            Error::Unsupported => "UNSUPPORTED",
            Error::Encode(_) => "ENCODE",
            Error::Decode(_) => "DECODE",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Fault => f.write_str("pointer or length outside guest memory (FAULT)"),
            Error::Invalid => f.write_str("invalid argument (INVALID)"),
            Error::NoProcess => f.write_str("no such process (NO_PROCESS)"),
            Error::Timeout => f.write_str("timed out (TIMEOUT)"),
            Error::BufferTooSmall { needed } => {
                write!(
                    f,
                    "receive buffer too small, message needs {needed} bytes (BUFFER_TOO_SMALL)"
                )
            }
            Error::TooLarge => f.write_str("message larger than the per-message limit (TOO_LARGE)"),
            Error::MailboxFull => f.write_str("receiver's mailbox is full (MAILBOX_FULL)"),
            Error::NoModule => f.write_str("no such module (NO_MODULE)"),
            Error::SpawnFailed => f.write_str("module could not be started (SPAWN_FAILED)"),
            Error::Limit => f.write_str("node limit reached (LIMIT)"),
            Error::NoNode => f.write_str("no node fits the placement target (NO_NODE)"),
            Error::CalleeDown(why) => write!(f, "the callee went down: {why:?} (CALLEE_DOWN)"),
            Error::NodeDown => f.write_str("the callee's node was declared dead (NODE_DOWN)"),
            Error::NameTaken => f.write_str("the name is taken (NAME_TAKEN)"),
            Error::NotCallable => f.write_str("the callee cannot receive calls (NOT_CALLABLE)"),
            Error::NotFound => f.write_str("the key does not exist (NOT_FOUND)"),
            Error::VersionMismatch => {
                f.write_str("the key is at another version (VERSION_MISMATCH)")
            }
            Error::Fenced => {
                f.write_str("the fencing token is not the lock's current one (FENCED)")
            }
            Error::BadKey => f.write_str("keys are 1 to 256 bytes (BAD_KEY)"),
            Error::ValueTooLarge => f.write_str("values are at most 1 MiB (VALUE_TOO_LARGE)"),
            Error::BadBucket => f.write_str("bucket names are 1 to 64 bytes (BAD_BUCKET)"),
            Error::Quota => f.write_str("the owner's quota is used up (QUOTA)"),
            Error::RateLimited => {
                f.write_str("the owner's write rate is over its quota (RATE_LIMITED)")
            }
            Error::NotACounter => f.write_str("the value is not a counter (NOT_A_COUNTER)"),
            Error::Overflow => f.write_str("the counter would overflow (OVERFLOW)"),
            Error::Busy => f.write_str("another process holds the lock (BUSY)"),
            Error::Deadlock => f.write_str("waiting would deadlock (DEADLOCK)"),
            Error::LockLost => f.write_str("the lock was lost (LOCK_LOST)"),
            Error::Unavailable => f.write_str("the cluster could not confirm it (UNAVAILABLE)"),
            Error::BadBatch => {
                f.write_str("a batch is 1 to 100 entries and at most 4 MiB (BAD_BATCH)")
            }
            Error::Unknown(code) => write!(f, "unknown Shoal error code {code}"),
            Error::Unsupported => f.write_str("not running inside a Shoal host (non-wasm32 build)"),
            Error::Encode(why) => write!(f, "cannot encode message: {why}"),
            Error::Decode(why) => write!(f, "cannot decode message: {why}"),
        }
    }
}

impl std::error::Error for Error {}

/// Turns a raw result (`>= 0` success, negative error) into a `Result`.
pub(crate) fn check(code: i32) -> Result<u32> {
    u32::try_from(code).map_err(|_| Error::from_code(code))
}
