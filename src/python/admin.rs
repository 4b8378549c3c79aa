//! `_core.Cache`'s whole-cache and administrative calls (clear, stats,
//! verify, dump, load, what the segment is), and the module's functions on
//! a LOCATION (its segment's name, destroy, resize) and test hooks.

use super::cache::Cache;
use super::convert::lock_timeout_secs;
use super::errors::to_py;
use crate::cache::ShmCache;
use crate::Config;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

#[pymethods]
impl Cache {
    fn clear(&self, py: Python<'_>) -> PyResult<()> {
        let c = self.cache();
        let c = &*c;
        py.detach(|| c.clear()).map_err(to_py)
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        let c = self.cache();
        for (k, v) in c.stats().pairs() {
            d.set_item(k, v)?;
        }
        d.set_item("max_item_size", c.geometry().max_item_size)?;
        d.set_item("segment", c.name())?;
        Ok(d)
    }

    /// Each shard's items, bytes and counters (read-only, no lock), in shard
    /// order: a list of dicts with the keys of `stats()` but for
    /// `segment_size`, `shards`, `max_item_size` and `segment`, plus `shard`.
    fn shard_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        for (i, st) in self.cache().shard_stats().iter().enumerate() {
            let d = PyDict::new(py);
            d.set_item("shard", i)?;
            for (k, v) in st.pairs() {
                if k != "segment_size" && k != "shards" {
                    d.set_item(k, v)?;
                }
            }
            out.append(d)?;
        }
        Ok(out)
    }

    /// Walk every shard and check it (tests, `shmcache verify`): (items, bytes).
    fn verify(&self, py: Python<'_>) -> PyResult<(u64, u64)> {
        let c = self.cache();
        let c = &*c;
        py.detach(|| c.verify()).map_err(to_py)
    }

    /// Write every live item to the file `path` (docs/architecture.md,
    /// "Snapshots"), GIL released: `{"records", "bytes", "file_bytes"}`.
    fn dump<'py>(&self, py: Python<'py>, path: std::path::PathBuf) -> PyResult<Bound<'py, PyDict>> {
        let c = self.cache();
        let c = &*c;
        let s = py.detach(|| c.dump(&path)).map_err(to_py)?;
        let d = PyDict::new(py);
        d.set_item("records", s.records)?;
        d.set_item("bytes", s.bytes)?;
        d.set_item("file_bytes", s.file_bytes)?;
        Ok(d)
    }

    /// Store the items of the snapshot `path`, GIL released: the whole file
    /// is checked first (SnapshotError, nothing written, if it is damaged);
    /// `{"records", "loaded", "bytes", "expired", "dropped", "too_large"}`.
    fn load<'py>(&self, py: Python<'py>, path: std::path::PathBuf) -> PyResult<Bound<'py, PyDict>> {
        let c = self.cache();
        let c = &*c;
        let s = py.detach(|| c.load(&path)).map_err(to_py)?;
        let d = PyDict::new(py);
        for (k, v) in [
            ("records", s.records),
            ("loaded", s.loaded),
            ("bytes", s.bytes),
            ("expired", s.expired),
            ("dropped", s.dropped),
            ("too_large", s.too_large),
        ] {
            d.set_item(k, v)?;
        }
        Ok(d)
    }

    /// Whether this process created the segment in use (a fresh, empty
    /// cache), rather than attaching to one that existed.
    #[getter]
    fn created(&self) -> bool {
        self.cache().created()
    }

    #[getter]
    fn segment(&self) -> String {
        self.cache().name().to_string()
    }

    /// Inode of the segment in use (it changes if the name was removed and
    /// the processes moved to a new segment).
    #[getter]
    fn inode(&self) -> u64 {
        self.cache().segment().inode()
    }

    #[getter]
    fn max_item_size(&self) -> u64 {
        self.cache().geometry().max_item_size
    }

    /// The segment's (size, max_item_size, shards): the geometry in force.
    #[getter]
    fn geometry(&self) -> (u64, u64, u64) {
        let c = self.cache();
        let g = c.geometry();
        (g.total_size, g.max_item_size, g.nshards)
    }

    /// This process's requested (size, max_item_size, shards), as computed
    /// from its options; differs from `geometry` when the segment was in use
    /// with other options.
    #[getter]
    fn requested_geometry(&self) -> (u64, u64, u64) {
        let c = self.cache();
        let g = c.requested();
        (g.total_size, g.max_item_size, g.nshards)
    }
}

/// The /dev/shm name a LOCATION maps to for this user.
#[pyfunction]
pub(super) fn segment_name(location: &str) -> PyResult<String> {
    crate::segment_name(location).map_err(to_py)
}

/// Unlink the segment of LOCATION; attached processes keep working on their
/// mapping until they exit. Returns False if there was none.
#[pyfunction]
pub(super) fn destroy(location: &str) -> PyResult<bool> {
    crate::destroy(&crate::segment_name(location).map_err(to_py)?).map_err(to_py)
}

/// Migrate the existing cache LOCATION to a new geometry now, under live
/// processes (`python -m shmcache resize`). Returns what was copied.
#[pyfunction]
#[pyo3(signature = (location, size, max_item_size, shards=0, lock_timeout=1.0))]
pub(super) fn resize<'py>(
    py: Python<'py>,
    location: &str,
    size: u64,
    max_item_size: u64,
    shards: u32,
    lock_timeout: f64,
) -> PyResult<Bound<'py, PyDict>> {
    let cfg = Config { size, max_item_size, shards };
    let t = lock_timeout_secs(lock_timeout)?;
    let st = py.detach(|| ShmCache::resize(location, &cfg, t)).map_err(to_py)?;
    let d = PyDict::new(py);
    d.set_item("items", st.items)?;
    d.set_item("bytes", st.bytes)?;
    d.set_item("dropped", st.dropped)?;
    d.set_item("pause_ms", st.pause_ms)?;
    Ok(d)
}

/// Test hook (feature `test-hooks`): sets sleep `ms` half-way through
/// writing a value, holding the lock.
#[cfg(feature = "test-hooks")]
#[pyfunction]
pub(super) fn _set_test_pause_ms(ms: u64) {
    crate::set_test_pause_ms(ms);
}

/// Test hook (feature `test-hooks`): shift this process's clock by `ms`.
#[cfg(feature = "test-hooks")]
#[pyfunction]
pub(super) fn _set_clock_offset_ms(ms: i64) {
    crate::time::set_offset_ms(ms);
}
