//! `_core.Cache`'s calls for a tiered cache's L1 (`shmcache.tiered`):
//! live reads, fill tokens, invalidation, the listener's words and the
//! tier's counters (`tier.rs` in the core), and `monotonic_ms`.

use super::cache::{read, Cache};
use super::convert::{expires, key, key_list, val};
use super::errors::to_py;
use crate::tier::{FillToken, LiveRead, TierCounter};
use crate::time;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict};

#[pymethods]
impl Cache {
    /// A tiered client's rules for `get_live` and `lag_due`: the L1 is used
    /// while the watermark is younger than `max_staleness_ms`; once it is
    /// older than `lag_ms` (0: never), one read per `lag_ms` is told to
    /// check on the listener. Until set, nothing is live.
    fn set_live_reads(&self, max_staleness_ms: u64, lag_ms: u64) {
        self.live_reads.configure(max_staleness_ms, lag_ms);
    }

    /// A tiered cache's L1 read: `get` while the L1 is live, else False
    /// without reading; True without reading when this call is to check on
    /// a lagging listener (then read again). See `set_live_reads`.
    fn get_live<'py>(&self, py: Python<'py>, key: &Bound<'_, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let c = self.cache();
        match self.live_reads.for_read(&c) {
            LiveRead::Read => Ok(read(py, &c, key)?.unwrap_or_else(|| py.None().into_bound(py))),
            LiveRead::Skip => Ok(PyBool::new(py, false).to_owned().into_any()),
            LiveRead::CheckListener => Ok(PyBool::new(py, true).to_owned().into_any()),
        }
    }

    /// Whether this call is to check on a lagging listener (`get_live`'s
    /// True, for reads of many keys).
    fn lag_due(&self) -> bool {
        self.live_reads.check(&self.cache()) == LiveRead::CheckListener
    }

    /// Whether the L1 is live (see `get_live`).
    fn live(&self, max_staleness_ms: u64) -> bool {
        self.cache().live(max_staleness_ms)
    }

    /// The fill token of `key` (take it before the L2 read; `set_if_token`).
    fn fill_token(&self, key: &Bound<'_, PyAny>) -> PyResult<(u64, u64)> {
        let t = self.cache().fill_token(&self::key(key)?);
        Ok((t.epoch, t.stripe))
    }

    /// Store only if `key` was neither invalidated nor flushed since
    /// `token` was taken. Returns whether it stored.
    fn set_if_token(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
        timeout: Option<f64>,
        token: (u64, u64),
    ) -> PyResult<bool> {
        let k = self::key(key)?;
        let v = val(value)?;
        let (e, bytes) = v.parts();
        let now = time::now_ms();
        let exp = expires(timeout, now)?;
        let c = self.cache();
        let (key, tok) = (&*k, FillToken { epoch: token.0, stripe: token.1 });
        py.detach(|| c.set_if_token(key, e, bytes, exp, now, tok)).map_err(to_py)
    }

    /// Delete `key` and refuse fills of it in flight; whether it was present.
    fn invalidate(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        let k = self::key(key)?;
        let c = self.cache();
        py.detach(|| c.invalidate(&k)).map_err(to_py)
    }

    /// `invalidate` for many keys; how many were present.
    fn invalidate_many(&self, py: Python<'_>, keys: Vec<Bound<'_, PyAny>>) -> PyResult<usize> {
        let owned = key_list(&keys)?;
        let c = self.cache();
        py.detach(|| c.invalidate_many(&owned)).map_err(to_py)
    }

    /// Drop everything and refuse every fill in flight.
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        let c = self.cache();
        py.detach(|| c.flush()).map_err(to_py)
    }

    /// The listener's liveness watermark (`CLOCK_MONOTONIC` ms; 0 = none).
    #[getter]
    fn watermark_ms(&self) -> u64 {
        self.cache().watermark_ms()
    }

    fn set_watermark_ms(&self, ms: u64) {
        self.cache().set_watermark_ms(ms)
    }

    #[getter]
    fn listener_pid(&self) -> u64 {
        self.cache().listener_pid()
    }

    fn set_listener_pid(&self, pid: u64) {
        self.cache().set_listener_pid(pid)
    }

    /// Add `n` to the tier counter `name` (a key of `tier_stats`).
    fn tier_add(&self, name: &str, n: u64) -> PyResult<()> {
        let c = TierCounter::from_name(name)
            .ok_or_else(|| PyValueError::new_err(format!("unknown tier counter {name:?}")))?;
        self.cache().tier_add(c, n);
        Ok(())
    }

    /// The tier's host-wide counters.
    fn tier_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (k, v) in self.cache().tier_stats() {
            d.set_item(k, v)?;
        }
        Ok(d)
    }
}

/// `CLOCK_MONOTONIC` in milliseconds (rounded down): the watermark's clock.
#[pyfunction]
pub(super) fn monotonic_ms() -> u64 {
    crate::tier::monotonic_ms()
}
