//! The module's exceptions, and each core error mapped to one of them
//! (or to the built-in exception Python code expects: ValueError,
//! KeyError, TypeError, OSError).

use crate::error::Error;
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyKeyError, PyOSError, PyTypeError, PyValueError};
use pyo3::PyErr;

create_exception!(_core, ShmCacheError, PyException, "Base class of shmcache errors.");
create_exception!(_core, LockTimeout, ShmCacheError, "A shard lock was not obtained within LOCK_TIMEOUT.");
create_exception!(_core, SegmentError, ShmCacheError, "The shared segment cannot be created or used.");
create_exception!(_core, ValueTooLarge, ShmCacheError, "Key plus value exceed MAX_ITEM_SIZE.");
create_exception!(
    _core,
    SnapshotError,
    ShmCacheError,
    "A snapshot file is damaged, truncated or of another format version (nothing was loaded)."
);

pub(super) fn to_py(e: Error) -> PyErr {
    let msg = e.to_string();
    match e {
        Error::Config { .. } => PyValueError::new_err(msg),
        Error::LockTimeout | Error::WouldBlock => LockTimeout::new_err(msg),
        Error::TooLarge { .. } => ValueTooLarge::new_err(msg),
        Error::NotFound => PyKeyError::new_err(msg),
        Error::NotInteger => PyTypeError::new_err(msg),
        Error::Snapshot(_) => SnapshotError::new_err(msg),
        // OSError(errno, msg): Python picks the subclass (FileNotFoundError, ...).
        Error::Io { errno, .. } if errno != 0 => PyOSError::new_err((errno, msg)),
        Error::Io { .. } => PyOSError::new_err(msg),
        Error::NoSpace { .. }
        | Error::Untrusted(_)
        | Error::NotCreated(_)
        | Error::GeometryMismatch(_)
        | Error::Os { .. }
        | Error::Poisoned
        | Error::Moved
        | Error::Migrating
        | Error::Corrupt(_) => SegmentError::new_err(msg),
    }
}
