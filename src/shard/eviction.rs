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
//! A *pinned* item (a held lock) is moved, not evicted, even when memory is
//! full, out of a budget of its own, so that a busy cache never drops a lock
//! its holder still holds; only a shard whose log is all pinned items (more
//! than the budget per write) evicts one.
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
    /// Move a pinned item to the head (its own budget).
    KeepPinned,
    Evict,
}

/// The live item at the tail, as `decide` sees it.
#[derive(Debug, Clone, Copy)]
pub struct Tail {
    pub expires_ms: u64,
    pub visited: bool,
    pub pinned: bool,
}

/// What one write may still spend on moves.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub moves: u32,
    pub pinned: u32,
}

impl Budget {
    pub const PER_WRITE: Budget = Budget { moves: MOVE_BUDGET, pinned: MOVE_BUDGET };
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
pub fn decide(item: Tail, now: u64, budget: Budget, room: bool, force: bool, full: bool) -> Action {
    if time::expired(item.expires_ms, now) {
        Action::Expire
    } else if item.pinned && room && budget.pinned > 0 {
        Action::KeepPinned
    } else if force || budget.moves == 0 || !room {
        Action::Evict
    } else if !full {
        Action::Keep
    } else if item.visited {
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
        let t = |expires_ms, visited| Tail { expires_ms, visited, pinned: false };
        let b = |moves| Budget { moves, pinned: 3 };
        assert_eq!(decide(t(5, true), 10, b(3), true, false, true), Action::Expire);
        assert_eq!(decide(t(0, true), 10, b(3), true, false, true), Action::SecondChance);
        assert_eq!(decide(t(0, false), 10, b(3), true, false, false), Action::Keep);
        assert_eq!(decide(t(0, true), 10, b(0), true, false, true), Action::Evict);
        assert_eq!(decide(t(0, true), 10, b(3), false, false, false), Action::Evict);
        assert_eq!(decide(t(0, true), 10, b(3), true, true, false), Action::Evict);
        assert_eq!(decide(t(0, false), 10, b(3), true, false, true), Action::Evict);
        assert!(memory_full(875, 1000) && !memory_full(874, 1000));
    }

    #[test]
    fn pinned_items_move_out_of_their_own_budget_until_it_runs_out() {
        let p = |expires_ms| Tail { expires_ms, visited: false, pinned: true };
        let b = |pinned| Budget { moves: 0, pinned };
        // Memory full, index full, no move budget left: still moved.
        assert_eq!(decide(p(0), 10, b(1), true, true, true), Action::KeepPinned);
        assert_eq!(decide(p(5), 10, b(1), true, false, true), Action::Expire);
        assert_eq!(decide(p(0), 10, b(0), true, false, true), Action::Evict);
        assert_eq!(decide(p(0), 10, b(1), false, false, true), Action::Evict);
    }
}
