//! `_core.Cache`: the class, its construction, and its operations on keys
//! (each one call of `ShmCache`'s API). `tier.rs`, `admin.rs` and
//! `scan.rs` add the class's other methods.

use super::convert::{expires, int, int_out, key, key_list, lock_timeout_secs, out, racy_out, val, Racy, Val};
use super::errors::to_py;
use crate::cache::{ShmCache, Wait};
use crate::error::Error;
use crate::handle::{Attachment, Current};
use crate::tier::LiveReads;
use crate::time::{self, LazyNow};
use crate::Config;
use crate::{SetMode, Ttl};
use pyo3::prelude::*;
use pyo3::types::PyList;
use std::borrow::Cow;

#[pyclass(frozen, module = "shmcache._core")]
pub(crate) struct Cache {
    /// Either a handle that follows the LOCATION's name (normal use) or a
    /// fixed attachment (admin tools on an existing segment).
    pub(super) inner: Attachment,
    /// A tiered client's reading rules (`get_live`; `set_live_reads`).
    pub(super) live_reads: LiveReads,
}

impl Cache {
    /// The cache to use for this call.
    #[inline]
    pub(super) fn cache(&self) -> Current<'_> {
        self.inner.cache()
    }

    /// `f` on the cache in use and `key`'s bytes, run as `attempt` runs it:
    /// the one shape of every operation on one key.
    #[inline]
    fn on_key<R: Send>(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        f: impl Fn(&ShmCache, &[u8], Wait) -> Result<R, Error> + Sync,
    ) -> PyResult<R> {
        let k = self::key(key)?;
        let c = self.cache();
        let (key, c) = (&*k, &*c);
        attempt(py, |wait| f(c, key, wait))
    }
}

/// Run `f` without waiting for a shard lock, with the GIL held (the common,
/// uncontended case); if a lock was busy, run it again detached (the GIL
/// released), waiting at most LOCK_TIMEOUT.
#[inline]
fn attempt<R: Send>(py: Python<'_>, f: impl Fn(Wait) -> Result<R, Error> + Sync) -> PyResult<R> {
    match f(Wait::No) {
        Err(Error::WouldBlock) => py.detach(|| f(Wait::Bounded)).map_err(to_py),
        r => r.map_err(to_py),
    }
}

/// `get` on the cache in use for this call. The lock-free read copies
/// straight into a new `bytes` or `int` (`racy_out`: only copies, as the
/// bytes may be changing until the read validates; a str is decoded from a
/// private copy afterwards); under the lock, with the GIL held, any value
/// is converted directly (`out`); detached, it is copied first.
#[inline]
pub(super) fn read<'py>(py: Python<'py>, c: &ShmCache, key: &Bound<'_, PyAny>) -> PyResult<Option<Bound<'py, PyAny>>> {
    let k = self::key(key)?;
    let key: &[u8] = &k;
    let now = &LazyNow::new();
    match c.get_with(key, now, Wait::No, |e, v| racy_out(py, e, v), |e, v| Racy::Done(out(py, e, v))) {
        Ok(r) => Ok(r.map(|r| r.into_object(py))),
        Err(Error::WouldBlock) => {
            let r = py.detach(|| c.get(key)).map_err(to_py)?;
            Ok(r.map(|(e, v)| out(py, e, &v)))
        }
        Err(e) => Err(to_py(e)),
    }
}

#[pymethods]
impl Cache {
    #[new]
    #[pyo3(signature = (location, size, max_item_size, shards=0, lock_timeout=0.1))]
    fn new(
        py: Python<'_>,
        location: &str,
        size: u64,
        max_item_size: u64,
        shards: u32,
        lock_timeout: f64,
    ) -> PyResult<Self> {
        let cfg = Config { size, max_item_size, shards };
        let t = lock_timeout_secs(lock_timeout)?;
        let location = location.to_string();
        let inner = py.detach(move || Attachment::open(&location, &cfg, t)).map_err(to_py)?;
        Ok(Cache { inner, live_reads: LiveReads::new() })
    }

    /// Attach to an existing segment whatever its SIZE (admin tools).
    #[staticmethod]
    #[pyo3(signature = (location, lock_timeout=1.0))]
    fn attach_existing(py: Python<'_>, location: &str, lock_timeout: f64) -> PyResult<Self> {
        let t = lock_timeout_secs(lock_timeout)?;
        let location = location.to_string();
        let inner = py.detach(move || Attachment::attach_existing(&location, t)).map_err(to_py)?;
        Ok(Cache { inner, live_reads: LiveReads::new() })
    }

    /// The value (bytes, str or int; `(encoding, bytes)` for other
    /// encodings) or None.
    fn get<'py>(&self, py: Python<'py>, key: &Bound<'_, PyAny>) -> PyResult<Option<Bound<'py, PyAny>>> {
        read(py, &self.cache(), key)
    }

    /// Store; with `add=True` only if absent. Returns whether it stored.
    /// `pin=True` keeps the stored item from eviction (a held lock).
    #[pyo3(signature = (key, value, timeout, add=false, pin=false))]
    fn set(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
        timeout: Option<f64>,
        add: bool,
        pin: bool,
    ) -> PyResult<bool> {
        let v = val(value)?;
        let now = time::now_ms();
        let exp = expires(timeout, now)?;
        let mode = if add { SetMode::Add } else { SetMode::Set };
        self.on_key(py, key, |c, key, wait| c.store(key, v.parts(), exp, now, mode, pin, wait))
    }

    /// Store many `(key, value)`; returns the indexes that were not stored
    /// (too large for MAX_ITEM_SIZE, or their shard's lock timed out).
    fn set_many(
        &self,
        py: Python<'_>,
        items: Vec<(Bound<'_, PyAny>, Bound<'_, PyAny>)>,
        timeout: Option<f64>,
    ) -> PyResult<Vec<usize>> {
        let now = time::now_ms();
        let exp = expires(timeout, now)?;
        let vals: Vec<Val> = items.iter().map(|(_, v)| val(v)).collect::<PyResult<_>>()?;
        let keys: Vec<Cow<[u8]>> = items.iter().map(|(k, _)| key(k)).collect::<PyResult<_>>()?;
        let values: Vec<(u8, &[u8])> = vals.iter().map(Val::parts).collect();
        let c = self.cache();
        let c = &*c;
        Ok(py.detach(|| c.set_many(&keys, &values, exp, now)))
    }

    /// `(values, timed_out)`: a list, per key, of the value (as `get`
    /// returns it) or None, and how many keys are None because their shard's
    /// lock timed out (not misses). Other errors raise.
    fn get_many<'py>(&self, py: Python<'py>, keys: Vec<Bound<'_, PyAny>>) -> PyResult<(Bound<'py, PyList>, usize)> {
        let owned = key_list(&keys)?;
        let c = self.cache();
        let c = &*c;
        let (got, timed_out) = py.detach(|| c.get_many(&owned)).map_err(to_py)?;
        Ok((PyList::new(py, got.iter().map(|o| o.as_ref().map(|(e, v)| out(py, *e, v))))?, timed_out))
    }

    /// `(value, ttl_ms)` read together under the lock (`ttl_ms` -1: never
    /// expires), or None if missing.
    fn get_with_ttl<'py>(&self, py: Python<'py>, key: &Bound<'_, PyAny>) -> PyResult<Option<(Bound<'py, PyAny>, i64)>> {
        let now = time::now_ms();
        let got = self.on_key(py, key, |c, key, wait| c.get_entry(key, now, wait, |e, v, exp| (e, v.to_vec(), exp)))?;
        Ok(got.map(|(e, v, exp)| {
            let ms = if exp == time::NEVER { -1 } else { exp.saturating_sub(now).min(i64::MAX as u64) as i64 };
            (out(py, e, &v), ms)
        }))
    }

    /// Store `new` (with `timeout`, as `set`) only if `key` is live and holds
    /// exactly `expected` (same encoding and bytes); atomic under the shard
    /// lock. False if missing, expired or different. `pin` as for `set`.
    #[pyo3(signature = (key, expected, new, timeout, pin=false))]
    fn compare_and_set(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        expected: &Bound<'_, PyAny>,
        new: &Bound<'_, PyAny>,
        timeout: Option<f64>,
        pin: bool,
    ) -> PyResult<bool> {
        let (want, v) = (val(expected)?, val(new)?);
        let now = time::now_ms();
        let exp = expires(timeout, now)?;
        self.on_key(py, key, |c, key, wait| c.compare_and_set(key, want.parts(), v.parts(), exp, now, pin, wait))
    }

    /// Delete `key` only if it is live and holds exactly `expected`.
    fn compare_and_delete(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        expected: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        let want = val(expected)?;
        self.on_key(py, key, |c, key, wait| c.compare_and_delete(key, want.parts(), wait))
    }

    fn delete(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.on_key(py, key, |c, key, wait| c.delete(key, wait))
    }

    /// Delete many keys; returns how many existed.
    fn delete_many(&self, py: Python<'_>, keys: Vec<Bound<'_, PyAny>>) -> PyResult<usize> {
        let owned = key_list(&keys)?;
        let c = self.cache();
        let c = &*c;
        py.detach(|| c.delete_many(&owned)).map_err(to_py)
    }

    #[pyo3(signature = (key, timeout))]
    fn touch(&self, py: Python<'_>, key: &Bound<'_, PyAny>, timeout: Option<f64>) -> PyResult<bool> {
        let now = time::now_ms();
        let exp = expires(timeout, now)?;
        self.on_key(py, key, |c, key, wait| c.touch(key, exp, now, wait))
    }

    /// Atomically add `delta` (any int) to an integer of any size; returns
    /// the exact result (no overflow: past 64 bits it is stored as
    /// `ENC_BIGINT`), keeping the expiry. Missing or expired: KeyError, or
    /// with `create=True` stores `delta` with no expiry and returns it (Redis
    /// INCRBY). TypeError if the value is not an integer.
    #[pyo3(signature = (key, delta, create=false))]
    fn incr<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'_, PyAny>,
        delta: &Bound<'_, PyAny>,
        create: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let delta = int(delta)?;
        let r = self.on_key(py, key, |c, key, wait| c.incr(key, &delta, create, wait))?;
        Ok(int_out(py, &r))
    }

    fn has(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.on_key(py, key, |c, key, wait| c.contains(key, wait))
    }

    /// Milliseconds left; -1 if it never expires; -2 if missing (like Redis TTL).
    fn ttl_ms(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<i64> {
        Ok(match self.on_key(py, key, |c, key, wait| c.ttl(key, wait))? {
            Ttl::Missing => -2,
            Ttl::Never => -1,
            Ttl::Ms(ms) => ms.min(i64::MAX as u64) as i64,
        })
    }

    /// Shard index of a key (tests: aim at a shard).
    fn shard_of(&self, key: &Bound<'_, PyAny>) -> PyResult<usize> {
        let k = self::key(key)?;
        let c = self.cache();
        Ok(c.shard_of(c.hash(&k)))
    }

    /// Check now whether the segment's name was removed, and follow it.
    fn recheck(&self) {
        self.inner.recheck_now();
    }
}
