//! The thin PyO3 layer: argument conversion, the GIL released around lock
//! waits, core errors mapped to Python exceptions. No cache logic here:
//! every call is one call of the core's API (`ShmCache`, `Attachment`,
//! `LiveReads`), never a shard or its guard.
//!
//! Lock discipline: every operation on a key first runs with
//! `Wait::No` (the shard lock only tried), with the GIL held: the common,
//! uncontended case, where a value is copied straight from shared memory
//! into a new `bytes`. If the lock is busy (`Error::WouldBlock`), the GIL
//! is released and the operation runs again detached with
//! `Wait::Bounded`, copying into a Rust buffer (`cache::attempt`,
//! `cache::read`); calls that may wait longer (batches, clear, verify,
//! snapshots, scans) and the tier's fills and invalidations
//! (`set_if_token`, `invalidate`: after a Redis round trip, rare) run
//! detached from the start. So the GIL is never awaited while a
//! shard lock is held and a shard lock is never awaited with the GIL held.
//!
//! By concern: `errors.rs` (the exceptions, and core errors mapped to
//! them), `convert.rs` (keys, values, timeouts), `cache.rs` (the class
//! `Cache` and its operations on keys), `tier.rs` (a tiered L1's calls),
//! `admin.rs` (whole-cache and admin calls, the module's functions),
//! `scan.rs` (key iteration). This module registers them.

mod admin;
mod cache;
mod convert;
mod errors;
mod scan;
mod tier;

use crate::{ENC_BIGINT, ENC_BYTES, ENC_INT, ENC_PICKLE, ENC_STR};
use errors::{LockTimeout, SegmentError, ShmCacheError, SnapshotError, ValueTooLarge};
use pyo3::prelude::*;

// Sound without the GIL (free-threaded CPython 3.13t/3.14t), so marked as not
// needing it: nothing here relies on the GIL for mutual exclusion. `Cache` is
// a `frozen` pyclass (no `&mut self`, no borrow flag), and everything it holds
// is `Sync` and already shared between processes: the shard data is guarded
// by the shared-memory robust mutexes (or read optimistically and validated
// by a sequence number), the handle's current segment is an `ArcSwap` and
// its recheck time an atomic; the module's exception types are created once
// by PyO3. The keys and values borrowed during a call are `bytes`/`str`
// objects, which are immutable. Waiting stays bounded: a shard lock is only
// awaited detached (`py.detach`), so an attached thread holding one never
// waits for a stop-the-world pause that needs a thread blocked on that lock.
// An abi3 wheel cannot be loaded by a free-threaded interpreter anyway; this
// matters for a version-specific cp313t/cp314t build (docs/install.md).
#[pymodule(gil_used = false)]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<cache::Cache>()?;
    m.add_class::<scan::KeyScan>()?;
    m.add("ShmCacheError", m.py().get_type::<ShmCacheError>())?;
    m.add("LockTimeout", m.py().get_type::<LockTimeout>())?;
    m.add("SegmentError", m.py().get_type::<SegmentError>())?;
    m.add("ValueTooLarge", m.py().get_type::<ValueTooLarge>())?;
    m.add("SnapshotError", m.py().get_type::<SnapshotError>())?;
    m.add("SNAPSHOT_VERSION", crate::snapshot::VERSION)?;
    m.add("ENC_BYTES", ENC_BYTES)?;
    m.add("ENC_PICKLE", ENC_PICKLE)?;
    m.add("ENC_INT", ENC_INT)?;
    m.add("ENC_STR", ENC_STR)?;
    m.add("ENC_BIGINT", ENC_BIGINT)?;
    m.add("LAYOUT_VERSION", crate::LAYOUT_VERSION)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(admin::segment_name, m)?)?;
    m.add_function(wrap_pyfunction!(admin::destroy, m)?)?;
    m.add_function(wrap_pyfunction!(tier::monotonic_ms, m)?)?;
    m.add_function(wrap_pyfunction!(admin::resize, m)?)?;
    #[cfg(feature = "test-hooks")]
    {
        m.add_function(wrap_pyfunction!(admin::_set_test_pause_ms, m)?)?;
        m.add_function(wrap_pyfunction!(admin::_set_clock_offset_ms, m)?)?;
    }
    Ok(())
}
