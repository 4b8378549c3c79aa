//! Value encodings: the tag stored with each item (`ENC_*`), and the
//! integer ones' arithmetic (`Int`).
//!
//! The core treats the tags as opaque except the integers `incr` accepts
//! (and the binding, which hands BYTES, STR, INT and BIGINT to Python as
//! `bytes`, `str` and `int`). The Python layer (`_codec.py`) adds its own
//! tags, JSON 5 and MSGPACK 6, and a compressor in the high four bits:
//! docs/architecture.md, "Value encodings".
//!
//! `ENC_INT` is an 8-byte little-endian i64 (what every counter is);
//! `ENC_BIGINT` is any other integer, as the minimal signed two's-complement
//! little-endian bytes (`num-bigint`'s `to_signed_bytes_le`). `Int` is an
//! integer in its canonical form: `Small` whenever it fits an i64, so a
//! result is stored as `ENC_INT` whenever it can be (a counter that went
//! past i64 and came back is a plain i64 again).

use num_bigint::BigInt;
use num_traits::ToPrimitive;

/// Raw bytes.
pub const ENC_BYTES: u8 = 0;
/// A pickle (the Python layer's own encodings: see the module doc).
pub const ENC_PICKLE: u8 = 1;
/// An 8-byte little-endian i64.
pub const ENC_INT: u8 = 2;
/// UTF-8 text.
pub const ENC_STR: u8 = 3;
/// Any other integer: minimal signed two's-complement little-endian bytes.
pub const ENC_BIGINT: u8 = 4;

/// An integer of any size; `Big` never holds a value that fits an i64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Int {
    Small(i64),
    Big(BigInt),
}

impl From<i64> for Int {
    fn from(i: i64) -> Int {
        Int::Small(i)
    }
}

impl From<BigInt> for Int {
    fn from(b: BigInt) -> Int {
        match b.to_i64() {
            Some(i) => Int::Small(i),
            None => Int::Big(b),
        }
    }
}

/// An `Int` as stored: (encoding, bytes) without allocating for an i64.
pub enum IntBytes {
    Small([u8; 8]),
    Big(Vec<u8>),
}

impl IntBytes {
    #[inline]
    pub fn parts(&self) -> (u8, &[u8]) {
        match self {
            IntBytes::Small(b) => (ENC_INT, b),
            IntBytes::Big(b) => (ENC_BIGINT, b),
        }
    }
}

impl Int {
    /// The integer a stored value holds, or `None` if it is not an integer
    /// (another encoding, or an `ENC_INT` that is not 8 bytes long). Any
    /// bytes are a valid `ENC_BIGINT` (none is zero).
    pub fn decode(enc: u8, v: &[u8]) -> Option<Int> {
        match enc {
            ENC_INT => Some(Int::Small(i64::from_le_bytes(v.try_into().ok()?))),
            ENC_BIGINT => Some(Int::from(BigInt::from_signed_bytes_le(v))),
            _ => None,
        }
    }

    /// The canonical stored form: `ENC_INT` if it fits an i64, else `ENC_BIGINT`.
    #[inline]
    pub fn encode(&self) -> IntBytes {
        match self {
            Int::Small(i) => IntBytes::Small(i.to_le_bytes()),
            Int::Big(b) => IntBytes::Big(b.to_signed_bytes_le()),
        }
    }

    /// The exact sum (an i64 sum that does not overflow allocates nothing).
    pub fn add(&self, o: &Int) -> Int {
        if let (Int::Small(a), Int::Small(b)) = (self, o) {
            if let Some(s) = a.checked_add(*b) {
                return Int::Small(s);
            }
        }
        Int::from(self.to_bigint() + o.to_bigint())
    }

    pub fn to_bigint(&self) -> BigInt {
        match self {
            Int::Small(i) => BigInt::from(*i),
            Int::Big(b) => b.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn big(s: &str) -> BigInt {
        s.parse().unwrap()
    }

    #[test]
    fn canonical_forms_and_round_trips() {
        for s in ["0", "1", "-1", "127", "128", "-128", "-129", "9223372036854775807", "-9223372036854775808"] {
            assert!(matches!(Int::from(big(s)), Int::Small(_)), "{s}");
        }
        for s in ["9223372036854775808", "-9223372036854775809", "1267650600228229401496703205376"] {
            let i = Int::from(big(s));
            assert!(matches!(i, Int::Big(_)), "{s}");
            let e = i.encode();
            let (enc, b) = e.parts();
            assert_eq!(enc, ENC_BIGINT);
            assert_eq!(Int::decode(enc, b), Some(i.clone()));
        }
        // Minimal two's complement: 2**63 is 9 bytes (a 0 sign byte), -(2**63)-1 too.
        assert_eq!(Int::from(big("9223372036854775808")).encode().parts().1, &[0, 0, 0, 0, 0, 0, 0, 0x80, 0]);
        assert_eq!(
            Int::from(big("-9223372036854775809")).encode().parts().1,
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0xff]
        );
        // A non-canonical big encoding of a small value decodes to Small.
        assert_eq!(Int::decode(ENC_BIGINT, &[5, 0, 0]), Some(Int::Small(5)));
        assert_eq!(Int::decode(ENC_BIGINT, &[]), Some(Int::Small(0)));
        assert_eq!(Int::decode(ENC_INT, &[1, 2, 3]), None);
        assert_eq!(Int::decode(0, &[0; 8]), None);
    }

    #[test]
    fn sums_promote_and_demote() {
        let max = Int::Small(i64::MAX);
        let over = max.add(&Int::Small(1));
        assert_eq!(over, Int::Big(big("9223372036854775808")));
        assert_eq!(over.add(&Int::Small(-1)), max);
        let min = Int::Small(i64::MIN);
        assert_eq!(min.add(&Int::Small(-1)).add(&Int::Small(1)), min);
        assert_eq!(Int::Small(2).add(&Int::Small(3)), Int::Small(5));
    }
}
