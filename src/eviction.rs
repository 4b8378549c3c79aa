//! Eviction policy: CLOCK (second chance) over each shard's circular log.
//!
//! Items are appended at the log's head; space is reclaimed at its tail. When
//! a write needs room, the item at the tail is examined:
//! * dead (deleted or overwritten) or a wrap marker: its bytes are reclaimed;
//! * expired: reclaimed and counted as an expiration;
//! * visited since it was last examined: given a second chance, i.e. its
//!   visited bit is cleared and it is moved to the head (a bounded number per
//!   write, and only while the log has room for the move);
//! * otherwise: evicted.
//!
//! Why this and not LRU: a hit only sets one byte (`visited`) and never
//! relinks a list, so the read path does no list surgery and stays short
//! (SIEVE, CLOCK and S3-FIFO share this property). Why CLOCK rather than
//! SIEVE: SIEVE keeps survivors in place, which needs a free-list allocator
//! that fragments with variable-size items; moving survivors to the head keeps
//! a log that never fragments and gives memcached-class hit ratios.

use crate::clock;

/// What to do with the live item at the tail of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Expire,
    Reinsert,
    Evict,
}

/// Most survivors moved per write: bounds the work (and lock hold time) of
/// one set even when everything in the shard is hot.
pub const REINSERT_BUDGET: u32 = 16;

/// Decide the fate of the live item at the tail.
/// `room`: the log has space to move the item; `force`: an index slot is
/// needed, which only an eviction (not a move) frees.
#[inline]
pub fn decide(expires_ms: u64, visited: bool, now: u64, budget: u32, room: bool, force: bool) -> Action {
    if clock::expired(expires_ms, now) {
        Action::Expire
    } else if visited && budget > 0 && room && !force {
        Action::Reinsert
    } else {
        Action::Evict
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn policy() {
        assert_eq!(decide(5, true, 10, 3, true, false), Action::Expire);
        assert_eq!(decide(0, true, 10, 3, true, false), Action::Reinsert);
        assert_eq!(decide(0, true, 10, 0, true, false), Action::Evict);
        assert_eq!(decide(0, true, 10, 3, false, false), Action::Evict);
        assert_eq!(decide(0, true, 10, 3, true, true), Action::Evict);
        assert_eq!(decide(0, false, 10, 3, true, false), Action::Evict);
    }
}
