//! Conversion between Python objects and the core's arguments and results:
//! keys, values (native `bytes`, `str` and `int`, or `(encoding, bytes)`),
//! timeouts and lock timeouts, integers of any size.

use super::errors::to_py;
use crate::error::Error;
use crate::time;
use crate::{Int, IntBytes, ENC_BIGINT, ENC_BYTES, ENC_INT, ENC_STR};
use num_bigint::BigInt;
use pyo3::exceptions::{PyOverflowError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyInt, PyString, PyTuple};
use std::borrow::Cow;
use std::time::Duration;

/// A value as Python passes it: an exact `bytes`, `str` or `int` (any size:
/// `ENC_INT` if it fits an i64, else `ENC_BIGINT`) is stored natively; a
/// tuple `(encoding, bytes)` is what the Python layer encoded itself
/// (pickle). Subclasses (`bool`, `SafeString`) are not native: the Python
/// layer pickles them, so they come back as themselves.
pub(super) enum Val<'a> {
    Raw(u8, &'a [u8]),
    Int(IntBytes),
}

impl Val<'_> {
    #[inline]
    pub(super) fn parts(&self) -> (u8, &[u8]) {
        match self {
            Val::Raw(e, b) => (*e, b),
            Val::Int(b) => b.parts(),
        }
    }
}

/// A Python int of any size (an i64 without allocating).
#[inline]
pub(super) fn int(v: &Bound<'_, PyAny>) -> PyResult<Int> {
    match v.extract::<i64>() {
        Ok(i) => Ok(Int::Small(i)),
        Err(e) if e.is_instance_of::<PyOverflowError>(v.py()) => Ok(Int::from(v.extract::<BigInt>()?)),
        Err(e) => Err(e),
    }
}

pub(super) fn int_out<'py>(py: Python<'py>, i: &Int) -> Bound<'py, PyAny> {
    match i {
        Int::Small(i) => i.into_pyobject(py).expect("int").into_any(),
        Int::Big(b) => b.into_pyobject(py).expect("int").into_any(),
    }
}

/// UnicodeEncodeError (lone surrogates) tells the Python layer to pickle
/// the value instead.
#[inline]
pub(super) fn val<'a>(v: &'a Bound<'_, PyAny>) -> PyResult<Val<'a>> {
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
pub(super) fn key<'a>(k: &'a Bound<'_, PyAny>) -> PyResult<Cow<'a, [u8]>> {
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

/// Many keys ([`key`]).
pub(super) fn key_list<'a>(ks: &'a [Bound<'_, PyAny>]) -> PyResult<Vec<Cow<'a, [u8]>>> {
    ks.iter().map(key).collect()
}

/// The absolute expiry for `timeout` seconds from `now`.
pub(super) fn expires(timeout: Option<f64>, now: u64) -> PyResult<u64> {
    match timeout {
        None => Ok(time::NEVER),
        Some(t) if t.is_finite() && t > 0.0 && t < 1e11 => Ok(now + (t * 1000.0).ceil() as u64),
        Some(t) => Err(PyValueError::new_err(format!(
            "timeout {t} must be a positive number of seconds below 1e11, or None for never"
        ))),
    }
}

/// LOCK_TIMEOUT seconds as a Duration. Only the conversion is checked here
/// (NaN, infinite, negative or huge: a ValueError naming LOCK_TIMEOUT); the
/// range is the core's to check (`ShmCache::open_named`).
pub(super) fn lock_timeout_secs(secs: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(secs).map_err(|_| {
        to_py(Error::Config {
            option: "LOCK_TIMEOUT",
            message: format!("{secs}; must be more than 0 and at most 60 seconds"),
        })
    })
}

/// A stored value as Python sees it: bytes, str or int (`ENC_INT`,
/// `ENC_BIGINT`) for the native encodings, `(encoding, bytes)` for the rest (the Python layer unpickles).
#[inline]
pub(super) fn out<'py>(py: Python<'py>, enc: u8, v: &[u8]) -> Bound<'py, PyAny> {
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
pub(super) enum Racy<'py> {
    Done(Bound<'py, PyAny>),
    Copied(u8, Vec<u8>),
}

impl<'py> Racy<'py> {
    /// The object, once the read that made it has validated.
    #[inline]
    pub(super) fn into_object(self, py: Python<'py>) -> Bound<'py, PyAny> {
        match self {
            Racy::Done(obj) => obj,
            Racy::Copied(e, v) => out(py, e, &v),
        }
    }
}

#[inline]
pub(super) fn racy_out<'py>(py: Python<'py>, enc: u8, v: &[u8]) -> Racy<'py> {
    match enc {
        ENC_BYTES => Racy::Done(PyBytes::new(py, v).into_any()),
        ENC_INT if v.len() == 8 => Racy::Done(out(py, enc, v)),
        _ => Racy::Copied(enc, v.to_vec()),
    }
}
