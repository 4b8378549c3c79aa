//! The thin PyO3 layer: argument conversion, the GIL released around lock
//! waits, core errors mapped to Python exceptions. No cache logic here.
//!
//! Lock discipline: every operation first tries the shard lock without
//! waiting, with the GIL held (the common, uncontended case: the value is
//! copied straight from shared memory into a new `bytes`). If the lock is
//! busy, the GIL is released for a bounded wait and the whole operation runs
//! detached, copying into a Rust buffer; the GIL is never awaited while a
//! shard lock is held and a shard lock is never awaited with the GIL held.

use crate::cache::{ShmCache, Wait};
use crate::error::Error;
use crate::handle::Handle;
use crate::mem::layout::Config;
use crate::mem::segment;
use crate::shard::encoding::{Int, IntBytes};
use crate::shard::encoding::{ENC_BIGINT, ENC_BYTES, ENC_INT, ENC_PICKLE, ENC_STR};
use crate::shard::ops::{Item, SetMode, Ttl};
use crate::shard::ShardGuard;
use crate::tier::{FillToken, LiveRead, LiveReads, TierCounter, TIER_COUNTERS, TIER_COUNTER_NAMES};
use crate::time::{self, LazyNow};
use num_bigint::BigInt;
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyKeyError, PyOSError, PyOverflowError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyInt, PyList, PyString, PyTuple};
use std::borrow::Cow;
use std::time::Duration;

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

fn to_py(e: Error) -> PyErr {
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

/// A value as Python passes it: an exact `bytes`, `str` or `int` (any size:
/// `ENC_INT` if it fits an i64, else `ENC_BIGINT`) is stored natively; a
/// tuple `(encoding, bytes)` is what the Python layer encoded itself
/// (pickle). Subclasses (`bool`, `SafeString`) are not native: the Python
/// layer pickles them, so they come back as themselves.
enum Val<'a> {
    Raw(u8, &'a [u8]),
    Int(IntBytes),
}

impl Val<'_> {
    #[inline]
    fn parts(&self) -> (u8, &[u8]) {
        match self {
            Val::Raw(e, b) => (*e, b),
            Val::Int(b) => b.parts(),
        }
    }
}

/// A Python int of any size (an i64 without allocating).
#[inline]
fn int(v: &Bound<'_, PyAny>) -> PyResult<Int> {
    match v.extract::<i64>() {
        Ok(i) => Ok(Int::Small(i)),
        Err(e) if e.is_instance_of::<PyOverflowError>(v.py()) => Ok(Int::from(v.extract::<BigInt>()?)),
        Err(e) => Err(e),
    }
}

fn int_out<'py>(py: Python<'py>, i: &Int) -> Bound<'py, PyAny> {
    match i {
        Int::Small(i) => i.into_pyobject(py).expect("int").into_any(),
        Int::Big(b) => b.into_pyobject(py).expect("int").into_any(),
    }
}

/// UnicodeEncodeError (lone surrogates) tells the Python layer to pickle
/// the value instead.
#[inline]
fn val<'a>(v: &'a Bound<'_, PyAny>) -> PyResult<Val<'a>> {
    if v.is_exact_instance_of::<PyBytes>() {
        return Ok(Val::Raw(ENC_BYTES, v.cast::<PyBytes>()?.as_bytes()));
    }
    if v.is_exact_instance_of::<PyString>() {
        return Ok(Val::Raw(ENC_STR, v.cast::<PyString>()?.to_str()?.as_bytes()));
    }
    if v.is_exact_instance_of::<PyInt>() {
        return Ok(Val::Int(int(v)?.encode()));
    }
    if let Ok(t) = v.cast::<PyTuple>() {
        if t.len() == 2 {
            let enc: u8 = t.get_item(0)?.extract()?;
            let b = t.get_borrowed_item(1)?;
            if let Ok(b) = b.cast::<PyBytes>() {
                let data: &[u8] = b.as_ref();
                // SAFETY: the bytes object is held by the tuple `v`, which outlives 'a,
                // and bytes objects are immutable, so the buffer stays valid and unchanged.
                let data: &'a [u8] = unsafe { std::slice::from_raw_parts(data.as_ptr(), data.len()) };
                return Ok(Val::Raw(enc, data));
            }
        }
    }
    Err(PyTypeError::new_err(format!(
        "cannot store a {} natively: pass bytes, str, int, or (encoding, bytes)",
        v.get_type().name()?
    )))
}

/// A key as bytes: `bytes` as is, `str` as UTF-8 (lone surrogates kept, as
/// `surrogatepass` would); anything else is a TypeError naming the type.
#[inline]
fn key<'a>(k: &'a Bound<'_, PyAny>) -> PyResult<Cow<'a, [u8]>> {
    if let Ok(b) = k.cast::<PyBytes>() {
        return Ok(Cow::Borrowed(b.as_bytes()));
    }
    if let Ok(s) = k.cast::<PyString>() {
        return match s.to_str() {
            Ok(s) => Ok(Cow::Borrowed(s.as_bytes())),
            Err(_) => {
                let b = s.call_method1("encode", ("utf-8", "surrogatepass"))?;
                Ok(Cow::Owned(b.cast::<PyBytes>()?.as_bytes().to_vec()))
            }
        };
    }
    Err(PyTypeError::new_err(format!("cache keys must be str or bytes, not {}", k.get_type().name()?)))
}

/// The absolute expiry for `timeout` seconds from `now`.
fn expires(timeout: Option<f64>, now: u64) -> PyResult<u64> {
    match timeout {
        None => Ok(time::NEVER),
        Some(t) if t.is_finite() && t > 0.0 && t < 1e11 => Ok(now + (t * 1000.0).ceil() as u64),
        Some(t) => Err(PyValueError::new_err(format!(
            "timeout {t} must be a positive number of seconds below 1e11, or None for never"
        ))),
    }
}

/// A stored value as Python sees it: bytes, str or int (`ENC_INT`,
/// `ENC_BIGINT`) for the native encodings, `(encoding, bytes)` for the rest (the Python layer unpickles).
#[inline]
fn out<'py>(py: Python<'py>, enc: u8, v: &[u8]) -> Bound<'py, PyAny> {
    match enc {
        ENC_BYTES => return PyBytes::new(py, v).into_any(),
        ENC_STR => {
            if let Ok(s) = std::str::from_utf8(v) {
                return PyString::new(py, s).into_any();
            }
        }
        ENC_INT if v.len() == 8 => {
            return i64::from_le_bytes(v.try_into().expect("8 bytes")).into_pyobject(py).expect("int").into_any();
        }
        ENC_BIGINT => return BigInt::from_signed_bytes_le(v).into_pyobject(py).expect("int").into_any(),
        _ => {}
    }
    let e = enc.into_pyobject(py).expect("int").into_any();
    PyTuple::new(py, [e, PyBytes::new(py, v).into_any()]).expect("tuple").into_any()
}

/// What a lock-free read makes of bytes that may be changing: a copy into a
/// bytes object or an int (any bytes are fine, and the result is discarded
/// unless the read validates), or a plain copy to convert once validated
/// (decoding a str reads the memory twice, and must see stable bytes).
enum Racy<'py> {
    Done(Bound<'py, PyAny>),
    Copied(u8, Vec<u8>),
}

#[inline]
fn racy_out<'py>(py: Python<'py>, enc: u8, v: &[u8]) -> Racy<'py> {
    match enc {
        ENC_BYTES => Racy::Done(PyBytes::new(py, v).into_any()),
        ENC_INT if v.len() == 8 => Racy::Done(out(py, enc, v)),
        _ => Racy::Copied(enc, v.to_vec()),
    }
}

#[pyclass(frozen, module = "shmcache._core")]
struct Cache {
    /// Either a handle that follows the LOCATION's name (normal use) or a
    /// fixed attachment (admin tools on an existing segment).
    inner: Inner,
    /// A tiered client's reading rules (`get_live`; `set_live_reads`).
    live_reads: LiveReads,
}

enum Inner {
    Named(Handle),
    Fixed(std::sync::Arc<ShmCache>),
}

/// The cache to use for one call.
enum Current<'a> {
    Named(arc_swap::Guard<std::sync::Arc<ShmCache>>),
    Fixed(&'a ShmCache),
}

impl std::ops::Deref for Current<'_> {
    type Target = ShmCache;
    #[inline]
    fn deref(&self) -> &ShmCache {
        match self {
            Current::Named(g) => g,
            Current::Fixed(c) => c,
        }
    }
}

impl Cache {
    #[inline]
    fn cache(&self) -> Current<'_> {
        match &self.inner {
            Inner::Named(h) => Current::Named(h.cache()),
            Inner::Fixed(c) => Current::Fixed(c),
        }
    }

    /// A one-key operation: convert the key, find its shard, run `f(guard,
    /// key, hash)` under the shard's lock (see [`run`]).
    fn keyed<R: Send>(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        mut f: impl FnMut(&mut ShardGuard, &[u8], u64) -> Result<R, Error> + Send,
    ) -> PyResult<R> {
        let k = self::key(key)?;
        let key: &[u8] = &k;
        let c = self.cache();
        let h = c.hash(key);
        run(&c, py, h, |g| f(g, key, h))
    }
}

/// LOCK_TIMEOUT seconds as a Duration. Only the conversion is checked here
/// (NaN, infinite, negative or huge: a ValueError naming LOCK_TIMEOUT); the
/// range is the core's to check (`ShmCache::open_named`).
fn lock_timeout_secs(secs: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(secs).map_err(|_| {
        to_py(Error::Config {
            option: "LOCK_TIMEOUT",
            message: format!("{secs}; must be more than 0 and at most 60 seconds"),
        })
    })
}

/// Try without waiting while attached; on contention, detach and wait
/// (bounded) for the lock, then run `f` detached.
fn run<R: Send>(
    c: &ShmCache,
    py: Python<'_>,
    hash: u64,
    mut f: impl FnMut(&mut ShardGuard) -> Result<R, Error> + Send,
) -> PyResult<R> {
    match c.with_shard(hash, Wait::No, &mut f) {
        Err(Error::WouldBlock) => py.detach(|| c.with_shard(hash, Wait::Bounded, f)).map_err(to_py),
        r => r.map_err(to_py),
    }
}

/// `get` on the cache in use for this call.
#[inline]
fn read<'py>(py: Python<'py>, c: &ShmCache, key: &Bound<'_, PyAny>) -> PyResult<Option<Bound<'py, PyAny>>> {
    let k = self::key(key)?;
    let key: &[u8] = &k;
    let now = &LazyNow::new();
    let h = c.hash(key);
    // Lock-free first. The bytes read may be changing under us until the
    // seq check after `racy_out` validates them, so only copies are made
    // there (bytes, int); a str is decoded from a private copy afterwards.
    if let Some(r) = c.shard_for(h).get_optimistic(key, h, now, |e, v| racy_out(py, e, v)) {
        // Not moved after the read: it read the segment in force (migrate.rs).
        if !c.moved() {
            return Ok(r.map(|r| match r {
                Racy::Done(obj) => obj,
                Racy::Copied(e, v) => out(py, e, &v),
            }));
        }
    }
    match c.with_shard(h, Wait::No, |g| g.get(key, h, now, |e, v| out(py, e, v))) {
        Err(Error::WouldBlock) => {
            let r =
                py.detach(|| c.with_shard(h, Wait::Bounded, |g| g.get(key, h, time::now_ms(), |e, v| (e, v.to_vec()))));
            Ok(r.map_err(to_py)?.map(|(e, v)| out(py, e, &v)))
        }
        r => r.map_err(to_py),
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
        let h = py.detach(move || Handle::open(&location, &cfg, t)).map_err(to_py)?;
        Ok(Cache { inner: Inner::Named(h), live_reads: LiveReads::new() })
    }

    /// Attach to an existing segment whatever its SIZE (admin tools).
    #[staticmethod]
    #[pyo3(signature = (location, lock_timeout=1.0))]
    fn attach_existing(py: Python<'_>, location: &str, lock_timeout: f64) -> PyResult<Self> {
        let t = lock_timeout_secs(lock_timeout)?.clamp(Duration::from_millis(1), Duration::from_secs(60));
        let location = location.to_string();
        let c = py.detach(move || ShmCache::attach_existing(&location, t)).map_err(to_py)?;
        Ok(Cache { inner: Inner::Fixed(std::sync::Arc::new(c)), live_reads: LiveReads::new() })
    }

    /// The value (bytes, str or int; `(encoding, bytes)` for other
    /// encodings) or None.
    fn get<'py>(&self, py: Python<'py>, key: &Bound<'_, PyAny>) -> PyResult<Option<Bound<'py, PyAny>>> {
        read(py, &self.cache(), key)
    }

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
        match self.live_reads.check(&c) {
            LiveRead::Read => Ok(read(py, &c, key)?.unwrap_or_else(|| py.None().into_bound(py))),
            LiveRead::Skip => {
                c.tier_add(TierCounter::NotLiveReads, 1);
                Ok(pyo3::types::PyBool::new(py, false).to_owned().into_any())
            }
            LiveRead::CheckListener => Ok(pyo3::types::PyBool::new(py, true).to_owned().into_any()),
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
        let exp = expires(timeout, time::now_ms())?;
        let c = self.cache();
        let (key, tok) = (&*k, FillToken { epoch: token.0, stripe: token.1 });
        py.detach(|| c.set_if_token(key, e, bytes, exp, tok)).map_err(to_py)
    }

    /// Delete `key` and refuse fills of it in flight; whether it was present.
    fn invalidate(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        let k = self::key(key)?;
        let c = self.cache();
        py.detach(|| c.invalidate(&k)).map_err(to_py)
    }

    /// `invalidate` for many keys; how many were present.
    fn invalidate_many(&self, py: Python<'_>, keys: Vec<Bound<'_, PyAny>>) -> PyResult<usize> {
        let owned: Vec<Cow<[u8]>> = keys.iter().map(key).collect::<PyResult<_>>()?;
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
        let i = TIER_COUNTER_NAMES
            .iter()
            .position(|c| *c == name)
            .ok_or_else(|| PyValueError::new_err(format!("unknown tier counter {name:?}")))?;
        self.cache().tier_add(TIER_COUNTERS[i], n);
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
        let k = self::key(key)?;
        let key: &[u8] = &k;
        let v = val(value)?;
        let (e, bytes) = v.parts();
        let now = time::now_ms();
        let c = self.cache();
        let (h, exp, max) = (c.hash(key), expires(timeout, now)?, c.geometry().max_item_size);
        let mode = if add { SetMode::Add } else { SetMode::Set };
        run(&c, py, h, |g| {
            let stored = g.set(&Item { key, hash: h, enc: e, value: bytes, expires: exp }, mode, now, max)?;
            Ok(stored && (!pin || g.pin(key, h, now)?))
        })
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
        let owned: Vec<Cow<[u8]>> = items.iter().map(|(k, _)| key(k)).collect::<PyResult<_>>()?;
        let keys: Vec<&[u8]> = owned.iter().map(|k| &**k).collect();
        let c = self.cache();
        let c = &*c;
        let max = c.geometry().max_item_size;
        let plan = c.plan(&keys);
        let vals_ref = &vals;
        let keys_ref = &keys;
        let failed = py.detach(move || {
            let (mut failed, mut locked_out) = (Vec::new(), Vec::new());
            c.batch(
                &plan,
                |g, h, i| {
                    let (e, b) = vals_ref[i].parts();
                    match g.set(
                        &Item { key: keys_ref[i], hash: h, enc: e, value: b, expires: exp },
                        SetMode::Set,
                        now,
                        max,
                    ) {
                        Err(Error::TooLarge { .. }) => {
                            failed.push(i);
                            Ok(())
                        }
                        r => r.map(|_| ()),
                    }
                },
                |i, _| locked_out.push(i),
            );
            failed.extend(locked_out);
            failed.sort_unstable();
            failed.dedup();
            failed
        });
        Ok(failed)
    }

    /// `(values, timed_out)`: a list, per key, of the value (as `get`
    /// returns it) or None, and how many keys are None because their shard's
    /// lock timed out (not misses). Other errors raise.
    fn get_many<'py>(&self, py: Python<'py>, keys: Vec<Bound<'_, PyAny>>) -> PyResult<(Bound<'py, PyList>, usize)> {
        let owned: Vec<Cow<[u8]>> = keys.iter().map(key).collect::<PyResult<_>>()?;
        let c = self.cache();
        let c = &*c;
        let (got, timed_out) = py.detach(|| c.get_many(&owned)).map_err(to_py)?;
        Ok((PyList::new(py, got.iter().map(|o| o.as_ref().map(|(e, v)| out(py, *e, v))))?, timed_out))
    }

    /// `(value, ttl_ms)` read together under the lock (`ttl_ms` -1: never
    /// expires), or None if missing.
    fn get_with_ttl<'py>(&self, py: Python<'py>, key: &Bound<'_, PyAny>) -> PyResult<Option<(Bound<'py, PyAny>, i64)>> {
        let now = time::now_ms();
        let got = self.keyed(py, key, |g, k, h| g.get_entry(k, h, now, |e, v, exp| (e, v.to_vec(), exp)))?;
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
        let (expected, (enc, value)) = (want.parts(), v.parts());
        let now = time::now_ms();
        let exp = expires(timeout, now)?;
        let max = self.cache().geometry().max_item_size;
        self.keyed(py, key, |g, key, hash| {
            let stored = g.compare_and_set(&Item { key, hash, enc, value, expires: exp }, expected, now, max)?;
            Ok(stored && (!pin || g.pin(key, hash, now)?))
        })
    }

    /// Delete `key` only if it is live and holds exactly `expected`.
    fn compare_and_delete(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        expected: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        let want = val(expected)?;
        let expected = want.parts();
        let now = time::now_ms();
        self.keyed(py, key, |g, k, h| g.compare_and_delete(k, h, expected, now))
    }

    fn delete(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        let now = time::now_ms();
        self.keyed(py, key, |g, k, h| g.delete(k, h, now))
    }

    /// Delete many keys; returns how many existed.
    fn delete_many(&self, py: Python<'_>, keys: Vec<Bound<'_, PyAny>>) -> PyResult<usize> {
        let keys: Vec<Cow<[u8]>> = keys.iter().map(key).collect::<PyResult<_>>()?;
        let now = time::now_ms();
        let c = self.cache();
        let c = &*c;
        let plan = c.plan(&keys);
        let (n, err) = py.detach(|| {
            let (mut n, mut err) = (0, None);
            c.batch(
                &plan,
                |g, h, i| {
                    n += g.delete(&keys[i], h, now)? as usize;
                    Ok(())
                },
                |_, e| err = Some(e.clone()),
            );
            (n, err)
        });
        match err {
            Some(e) => Err(to_py(e)),
            None => Ok(n),
        }
    }

    #[pyo3(signature = (key, timeout))]
    fn touch(&self, py: Python<'_>, key: &Bound<'_, PyAny>, timeout: Option<f64>) -> PyResult<bool> {
        let now = time::now_ms();
        let exp = expires(timeout, now)?;
        self.keyed(py, key, |g, k, h| g.touch(k, h, exp, now))
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
        let now = time::now_ms();
        let max = self.cache().geometry().max_item_size;
        let r = self.keyed(py, key, |g, k, h| g.incr(k, h, &delta, create, now, max))?;
        Ok(int_out(py, &r))
    }

    fn has(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        let now = time::now_ms();
        self.keyed(py, key, |g, k, h| g.contains(k, h, now))
    }

    /// Milliseconds left; -1 if it never expires; -2 if missing (like Redis TTL).
    fn ttl_ms(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<i64> {
        let now = time::now_ms();
        Ok(match self.keyed(py, key, |g, k, h| g.ttl(k, h, now))? {
            Ttl::Missing => -2,
            Ttl::Never => -1,
            Ttl::Ms(ms) => ms.min(i64::MAX as u64) as i64,
        })
    }

    fn clear(&self, py: Python<'_>) -> PyResult<()> {
        {
            let c = self.cache();
            let c = &*c;
            py.detach(|| c.clear())
        }
        .map_err(to_py)
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
        {
            let c = self.cache();
            let c = &*c;
            py.detach(|| c.verify())
        }
        .map_err(to_py)
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

    /// Shard index of a key (tests: aim at a shard).
    fn shard_of(&self, key: &Bound<'_, PyAny>) -> PyResult<usize> {
        let k = self::key(key)?;
        let c = self.cache();
        Ok(c.shard_of(c.hash(&k)))
    }

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
        let cache = match &self.inner {
            Inner::Named(h) => std::sync::Arc::clone(&h.cache()),
            Inner::Fixed(c) => std::sync::Arc::clone(c),
        };
        let scan = cache.scan(&prefix, count);
        Ok(KeyScan { cache, scan })
    }

    /// Check now whether the segment's name was removed, and follow it.
    fn recheck(&self) {
        if let Inner::Named(h) = &self.inner {
            h.recheck_now();
        }
    }
}

/// A scan of the keys (`Cache.scan`): `next()` gives a non-empty list of
/// keys as bytes, or raises StopIteration at the end; LockTimeout if a shard
/// lock was not had in LOCK_TIMEOUT (nothing advanced: `next()` again retries).
#[pyclass(module = "shmcache._core")]
struct KeyScan {
    cache: std::sync::Arc<ShmCache>,
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

/// The /dev/shm name a LOCATION maps to for this user.
#[pyfunction]
fn segment_name(location: &str) -> PyResult<String> {
    segment::segment_name(location).map_err(to_py)
}

/// Unlink the segment of LOCATION; attached processes keep working on their
/// mapping until they exit. Returns False if there was none.
#[pyfunction]
fn destroy(location: &str) -> PyResult<bool> {
    segment::destroy(&segment::segment_name(location).map_err(to_py)?).map_err(to_py)
}

/// Migrate the existing cache LOCATION to a new geometry now, under live
/// processes (`python -m shmcache resize`). Returns what was copied.
#[pyfunction]
#[pyo3(signature = (location, size, max_item_size, shards=0, lock_timeout=1.0))]
fn resize<'py>(
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

/// `CLOCK_MONOTONIC` in milliseconds (rounded down): the watermark's clock.
#[pyfunction]
fn monotonic_ms() -> u64 {
    crate::tier::monotonic_ms()
}

/// Test hook (feature `test-hooks`): sets sleep `ms` half-way through
/// writing a value, holding the lock.
#[cfg(feature = "test-hooks")]
#[pyfunction]
fn _set_test_pause_ms(ms: u64) {
    crate::shard::ops::set_test_pause_ms(ms);
}

/// Test hook (feature `test-hooks`): shift this process's clock by `ms`.
#[cfg(feature = "test-hooks")]
#[pyfunction]
fn _set_clock_offset_ms(ms: i64) {
    time::set_offset_ms(ms);
}

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
    m.add_class::<Cache>()?;
    m.add_class::<KeyScan>()?;
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
    m.add("LAYOUT_VERSION", crate::mem::layout::LAYOUT_VERSION)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(segment_name, m)?)?;
    m.add_function(wrap_pyfunction!(destroy, m)?)?;
    m.add_function(wrap_pyfunction!(monotonic_ms, m)?)?;
    m.add_function(wrap_pyfunction!(resize, m)?)?;
    #[cfg(feature = "test-hooks")]
    {
        m.add_function(wrap_pyfunction!(_set_test_pause_ms, m)?)?;
        m.add_function(wrap_pyfunction!(_set_clock_offset_ms, m)?)?;
    }
    Ok(())
}
