//! Errors of the core. The PyO3 layer maps each to a Python exception.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A configuration value is invalid; `option` names the option to change.
    Config { option: &'static str, message: String },
    /// /dev/shm has no room for the segment.
    NoSpace { requested: u64, free: u64, path: String },
    /// The segment exists but was made by someone else, or has a wider mode.
    Untrusted(String),
    /// The segment exists with another geometry (SIZE, MAX_ITEM_SIZE, SHARDS).
    GeometryMismatch(String),
    /// No segment by that name exists: no process on this host has created
    /// the cache yet (admin tools attach to existing caches only). Holds the
    /// LOCATION (or the segment's name where no LOCATION is known).
    NotCreated(String),
    /// An OS call failed.
    Os { call: &'static str, errno: i32 },
    /// A shard lock could not be taken within the lock timeout.
    LockTimeout,
    /// The shard lock is busy (non-blocking attempt only).
    WouldBlock,
    /// The shard's lock is permanently broken (only through corruption).
    Poisoned,
    /// A shard's contents failed a consistency check; it has been wiped.
    Corrupt(&'static str),
    /// Key plus value exceed MAX_ITEM_SIZE.
    TooLarge { size: u64, max: u64 },
    /// incr/decr on a missing key.
    NotFound,
    /// incr/decr on a value that is not an integer.
    NotInteger,
    /// A snapshot file is damaged, truncated or of another format version.
    Snapshot(String),
    /// The segment's items were moved to a segment of another geometry
    /// (`migrate.rs`); internal: `ShmCache` forwards the call there.
    Moved,
    /// Another process is migrating this segment right now.
    Migrating,
    /// Reading or writing a snapshot file failed (the message names the
    /// file; `errno` 0 if the OS gave none).
    Io { errno: i32, message: String },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config { option, message } => write!(f, "invalid {option}: {message}"),
            Error::NoSpace { requested, free, path } => write!(
                f,
                "SIZE={requested} bytes does not fit in {path}: only {free} bytes free; \
                 lower SIZE or make {path} larger (e.g. docker --shm-size)"
            ),
            Error::Untrusted(m) => write!(f, "refusing shared segment: {m}"),
            Error::NotCreated(what) => write!(f, "no process on this host has created the cache '{what}' yet"),
            Error::GeometryMismatch(m) => write!(f, "{m}"),
            Error::Os { call, errno } => {
                write!(f, "{call} failed: {}", std::io::Error::from_raw_os_error(*errno))
            }
            Error::LockTimeout => write!(f, "timed out waiting for a shard lock (LOCK_TIMEOUT)"),
            Error::WouldBlock => write!(f, "shard lock busy"),
            Error::Poisoned => write!(f, "shard lock is not recoverable; destroy and recreate the cache"),
            Error::Corrupt(what) => write!(f, "corrupted shard detected ({what}); the shard was wiped"),
            Error::TooLarge { size, max } => {
                write!(f, "item of {size} bytes exceeds MAX_ITEM_SIZE={max} bytes")
            }
            Error::NotFound => write!(f, "key not found"),
            Error::NotInteger => write!(f, "value is not an integer"),
            Error::Moved => write!(f, "the segment was migrated to a new geometry; retry"),
            Error::Migrating => write!(f, "another process is migrating this segment; try again in a moment"),
            Error::Snapshot(m) | Error::Io { message: m, .. } => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for Error {}

impl Error {
    pub(crate) fn io(e: &std::io::Error, message: String) -> Error {
        Error::Io { errno: e.raw_os_error().unwrap_or(0), message }
    }

    pub(crate) fn os(call: &'static str, e: rustix::io::Errno) -> Error {
        Error::Os { call, errno: e.raw_os_error() }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
