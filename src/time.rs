//! Wall-clock milliseconds used for expiry. Expiry times are absolute
//! `CLOCK_REALTIME` milliseconds so every process agrees on them; `0` means
//! "never expires". A clock step makes items expire early or late, never lets
//! a value be returned after the clock says it has expired.

use std::cell::Cell;
#[cfg(feature = "test-hooks")]
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Expiry value meaning "never expires".
pub const NEVER: u64 = 0;

/// Test hook: a shift of this process's clock (test builds only).
#[cfg(feature = "test-hooks")]
static OFFSET_MS: AtomicI64 = AtomicI64::new(0);

/// Milliseconds since the Unix epoch (plus the test offset in test builds,
/// normally 0). Never 0.
#[inline]
pub fn now_ms() -> u64 {
    let ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(1);
    #[cfg(feature = "test-hooks")]
    let ms = ms + OFFSET_MS.load(Ordering::Relaxed);
    ms.max(1) as u64
}

/// Shift this process's clock (test builds only: lets a test expire items
/// without sleeping).
#[cfg(feature = "test-hooks")]
pub fn set_offset_ms(ms: i64) {
    OFFSET_MS.store(ms, Ordering::Relaxed);
}

/// Is an item with this expiry dead at `now`? The clock is read only for
/// an item that has an expiry (most cached items in a hot path have none).
#[inline]
pub fn expired(expires_ms: u64, now: impl Time) -> bool {
    expires_ms != NEVER && now.ms() >= expires_ms
}

/// A time to judge expiry by: a fixed `u64` of milliseconds, or a
/// [`LazyNow`] that reads the wall clock only when first asked.
pub trait Time: Copy {
    fn ms(self) -> u64;
}

impl Time for u64 {
    #[inline(always)]
    fn ms(self) -> u64 {
        self
    }
}

/// The wall clock read at most once, on first use. Reading it costs about as
/// much as a whole cache-hot get (a `clock_gettime`), and a get only needs it
/// when the item found has an expiry.
#[derive(Default)]
pub struct LazyNow(Cell<u64>);

impl LazyNow {
    #[inline]
    pub fn new() -> LazyNow {
        LazyNow(Cell::new(0))
    }
}

impl Time for &LazyNow {
    #[inline]
    fn ms(self) -> u64 {
        match self.0.get() {
            0 => {
                let t = now_ms(); // never 0
                self.0.set(t);
                t
            }
            t => t,
        }
    }
}

/// Coarse monotonic milliseconds (`CLOCK_MONOTONIC_COARSE`: a few ns, ticks
/// every few ms, and may fall further behind). For periodic housekeeping
/// (`handle.rs`) only: never for expiry, nor for a tiered L1's liveness
/// (`tier.rs` reads the precise clock). Built where `handle.rs` is.
#[cfg(any(test, feature = "python"))]
#[inline]
pub fn coarse_ms() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant the kernel supports.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn never_and_past() {
        assert!(!expired(NEVER, u64::MAX));
        assert!(expired(10, 10));
        assert!(!expired(11, 10));
        assert!(now_ms() > 1_600_000_000_000);
    }

    #[test]
    fn lazy_now_reads_once_and_only_when_asked() {
        let n = LazyNow::new();
        assert_eq!(n.0.get(), 0);
        assert!(!expired(NEVER, &n));
        assert_eq!(n.0.get(), 0, "no expiry, no clock read");
        assert!(expired(1, &n));
        let t = n.0.get();
        assert!(t > 1_600_000_000_000);
        assert_eq!((&n).ms(), t, "read at most once");
        assert!(coarse_ms() > 0);
    }
}
