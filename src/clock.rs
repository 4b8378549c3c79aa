//! Wall-clock milliseconds used for expiry. Expiry times are absolute
//! `CLOCK_REALTIME` milliseconds so every process agrees on them; `0` means
//! "never expires". A clock step makes items expire early or late, never lets
//! a value be returned after the clock says it has expired.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Expiry value meaning "never expires".
pub const NEVER: u64 = 0;

static OFFSET_MS: AtomicI64 = AtomicI64::new(0);

/// Milliseconds since the Unix epoch (plus the test offset, normally 0).
#[inline]
pub fn now_ms() -> u64 {
    let ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(1);
    (ms + OFFSET_MS.load(Ordering::Relaxed)).max(1) as u64
}

/// Shift this process's clock (tests only: lets a test expire items
/// without sleeping).
pub fn set_offset_ms(ms: i64) {
    OFFSET_MS.store(ms, Ordering::Relaxed);
}

/// Is an item with this expiry dead at `now`?
#[inline]
pub fn expired(expires_ms: u64, now: u64) -> bool {
    expires_ms != NEVER && now >= expires_ms
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
}
