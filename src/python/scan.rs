//! Key iteration from Python: `_core.Cache.scan` and its iterator,
//! `_core.KeyScan` (each `next()` one `ShmCache::scan_next`, GIL released).

use super::cache::Cache;
use super::convert::key;
use super::errors::to_py;
use crate::cache::ShmCache;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use std::sync::Arc;

#[pymethods]
impl Cache {
    /// An iterator over the keys (raw stored bytes) starting with `prefix`:
    /// each `next()` gives a non-empty list of keys. A key live from the
    /// start to the end of the iteration comes exactly once (see
    /// docs/architecture.md); each lock hold walks at most `count` log
    /// records, no lock is held between calls, and the GIL is released
    /// while it walks. It keeps the segment it started on.
    #[pyo3(signature = (prefix=None, count=1000), text_signature = "(self, prefix=b'', count=1000)")]
    fn scan(&self, prefix: Option<&Bound<'_, PyAny>>, count: usize) -> PyResult<KeyScan> {
        if count == 0 {
            return Err(PyValueError::new_err("count must be at least 1"));
        }
        let prefix = match prefix {
            Some(p) => key(p)?.into_owned(),
            None => Vec::new(),
        };
        let cache = self.inner.cache_arc();
        let scan = cache.scan(&prefix, count);
        Ok(KeyScan { cache, scan })
    }
}

/// A scan of the keys (`Cache.scan`): `next()` gives a non-empty list of
/// keys as bytes, or raises StopIteration at the end; LockTimeout if a shard
/// lock was not had in LOCK_TIMEOUT (nothing advanced: `next()` again retries).
#[pyclass(module = "shmcache._core")]
pub(crate) struct KeyScan {
    cache: Arc<ShmCache>,
    scan: crate::cache::keyscan::KeyScan,
}

#[pymethods]
impl KeyScan {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyList>>> {
        let (c, s) = (&*self.cache, &mut self.scan);
        match py.detach(|| c.scan_next(s)).map_err(to_py)? {
            Some(keys) => Ok(Some(PyList::new(py, keys.iter().map(|k| PyBytes::new(py, k)))?)),
            None => Ok(None),
        }
    }
}
