//! Eviction policy: CLOCK (second chance) over each shard's circular log.
//!
//! Items are appended at the log's head; space is reclaimed at its tail. When
//! a write needs room, the item at the tail is examined:
//! * dead (deleted or overwritten) or a wrap marker: its bytes are reclaimed;
//! * expired: reclaimed and counted as an expiration;
//! * memory not full (live items fill less than 7/8 of the log): the item is
//!   moved to the head untouched. This is compaction, not eviction: a log
//!   full of overwritten or deleted records never costs a live item;
//! * memory full and visited since it was last examined: second chance, i.e.
//!   its visited bit is cleared and it is moved to the head;
//! * otherwise: evicted.
//!
//! Moves are bounded per write ([`MOVE_BUDGET`]) and need room in the log;
//! when either runs out the item is evicted, so a write's work is bounded.
//!
//! Why this and not LRU: a hit only sets one byte (`visited`) and never
//! relinks a list, so the read path does no list surgery and stays short
//! (SIEVE, CLOCK and S3-FIFO share this property). Why CLOCK rather than
//! SIEVE: SIEVE keeps survivors in place, which needs a free-list allocator
//! that fragments with variable-size items; moving survivors to the head keeps
//! a log that never fragments and gives memcached-class hit ratios.

use crate::time;

/// What to do with the live item at the tail of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Expire,
    /// Move to the head keeping the visited bit (compaction).
    Keep,
    /// Move to the head clearing the visited bit (second chance).
    SecondChance,
    Evict,
}

/// Most items moved per write: bounds the work (and lock hold time) of one
/// set even when everything in the shard is hot.
pub const MOVE_BUDGET: u32 = 64;

/// Is memory full, i.e. should reclaiming evict rather than compact?
#[inline]
pub fn memory_full(live_bytes: u64, capacity: u64) -> bool {
    live_bytes >= capacity - capacity / 8
}

/// Decide the fate of the live item at the tail.
/// `room`: the log has space to move the item; `force`: an index slot is
/// needed, which only an eviction (not a move) frees; `full`: see [`memory_full`].
#[inline]
pub fn decide(expires_ms: u64, visited: bool, now: u64, budget: u32, room: bool, force: bool, full: bool) -> Action {
    if time::expired(expires_ms, now) {
        Action::Expire
    } else if force || budget == 0 || !room {
        Action::Evict
    } else if !full {
        Action::Keep
    } else if visited {
        Action::SecondChance
    } else {
        Action::Evict
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn policy() {
        assert_eq!(decide(5, true, 10, 3, true, false, true), Action::Expire);
        assert_eq!(decide(0, true, 10, 3, true, false, true), Action::SecondChance);
        assert_eq!(decide(0, false, 10, 3, true, false, false), Action::Keep);
        assert_eq!(decide(0, true, 10, 0, true, false, true), Action::Evict);
        assert_eq!(decide(0, true, 10, 3, false, false, false), Action::Evict);
        assert_eq!(decide(0, true, 10, 3, true, true, false), Action::Evict);
        assert_eq!(decide(0, false, 10, 3, true, false, true), Action::Evict);
        assert!(memory_full(875, 1000) && !memory_full(874, 1000));
    }
}
