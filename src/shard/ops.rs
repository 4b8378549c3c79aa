//! The operations on one shard: the lock-free read (`Shard::get_optimistic`)
//! and, under the lock, get, set (new, in place, add), delete, touch, pin,
//! incr, ttl, contains, compare-and-set and compare-and-delete.

use super::encoding::{Int, ENC_INT};
use super::log::{RecHdr, FLAG_PINNED, KIND_DEAD, KIND_LIVE, KIND_PENDING};
use super::reclaim::SWEEP_PER_WRITE;
use super::stats::Counter;
use super::{crash_point, Shard, ShardGuard};
#[cfg(test)]
use super::{CRASH_AT, CRASH_SKIP};
use crate::error::{Error, Result};
use crate::mem::layout::{rec_size, REC_HDR};
use crate::time::{self, Time};
#[cfg(any(test, feature = "test-hooks"))]
use std::sync::atomic::AtomicU64;
use std::sync::atomic::{
    fence,
    Ordering::{Acquire, Relaxed},
};
#[cfg(any(test, feature = "test-hooks"))]
use std::time::Duration;

/// Test hook: when non-zero, a set sleeps this long half-way through copying
/// its value, while holding the lock with the shard marked mid-write.
#[cfg(any(test, feature = "test-hooks"))]
static TEST_PAUSE_MS: AtomicU64 = AtomicU64::new(0);

#[cfg(any(test, feature = "test-hooks"))]
pub fn set_test_pause_ms(ms: u64) {
    TEST_PAUSE_MS.store(ms, Relaxed);
}

/// An item to store (`ShardGuard::set`).
#[derive(Debug, Clone, Copy)]
pub struct Item<'a> {
    pub key: &'a [u8],
    /// The key's hash (`ShmCache::hash`).
    pub hash: u64,
    /// Value encoding (`ENC_*`).
    pub enc: u8,
    pub value: &'a [u8],
    /// Absolute expiry in wall-clock ms; `time::NEVER` (0) = never.
    pub expires: u64,
}

/// How `set` behaves when the key exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetMode {
    Set,
    /// Only if absent (or expired).
    Add,
}

/// What `ttl` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    Missing,
    Never,
    /// Milliseconds left.
    Ms(u64),
}

impl Shard {
    /// A get without the lock (seqlock-style): readers never wait for each
    /// other and write nothing but a counter. `f` may see bytes a writer is
    /// changing; its result is kept only if the shard's `seq` was even and
    /// unchanged across the whole read, else it is dropped and `None` tells
    /// the caller to take the lock. Also `None` when the lock is needed for
    /// bookkeeping: an expired item (to reclaim it) or an item not yet marked
    /// visited (a lock-free write there could land in reused space).
    #[inline]
    pub fn get_optimistic<R>(
        &self,
        key: &[u8],
        hash: u64,
        now: impl Time,
        f: impl FnOnce(u8, &[u8]) -> R,
    ) -> Option<Option<R>> {
        let h = self.header();
        let s1 = h.seq.load(Acquire);
        if s1 & 1 == 1 {
            return None;
        }
        // Any inconsistency may be a concurrent write: the lock path decides.
        let found = self.find(key, hash).ok()?;
        let r = match found {
            None => None,
            Some((_, off, rh)) => {
                if time::expired(rh.expires, now) || self.log.visited(off).load(Relaxed) == 0 {
                    return None;
                }
                Some(f(rh.enc, self.log.value(off, &rh)))
            }
        };
        fence(Acquire);
        if h.seq.load(Relaxed) != s1 {
            return None;
        }
        h.counters.read(r.is_some());
        Some(r)
    }
}

impl ShardGuard<'_> {
    /// Look up `key`, dropping it if expired.
    fn lookup_live(&mut self, key: &[u8], hash: u64, now: impl Time) -> Result<Option<(usize, u64, RecHdr)>> {
        match self.lookup(key, hash)? {
            Some((slot, off, rh)) if time::expired(rh.expires, now) => {
                self.unlink(slot, off, &rh, Some(Counter::Expirations))?;
                Ok(None)
            }
            found => Ok(found),
        }
    }

    /// Read `key`; `f` receives (encoding, value bytes) while the lock is held.
    #[inline]
    pub fn get<R>(
        &mut self,
        key: &[u8],
        hash: u64,
        now: impl Time,
        f: impl FnOnce(u8, &[u8]) -> R,
    ) -> Result<Option<R>> {
        self.get_entry(key, hash, now, |enc, v, _| f(enc, v))
    }

    /// Read `key` with its expiry; `f` receives (encoding, value bytes,
    /// absolute expiry or `NEVER`) while the lock is held.
    pub fn get_entry<R>(
        &mut self,
        key: &[u8],
        hash: u64,
        now: impl Time,
        f: impl FnOnce(u8, &[u8], u64) -> R,
    ) -> Result<Option<R>> {
        match self.lookup_live(key, hash, now)? {
            Some((_, off, rh)) => {
                let log = self.log();
                let v = log.visited(off);
                if v.load(Relaxed) == 0 {
                    v.store(1, Relaxed);
                }
                self.h().counters.read(true);
                Ok(Some(f(rh.enc, log.value(off, &rh), rh.expires)))
            }
            None => {
                self.h().counters.read(false);
                Ok(None)
            }
        }
    }

    /// Present and not expired? Counts neither a hit nor a miss.
    pub fn contains(&mut self, key: &[u8], hash: u64, now: u64) -> Result<bool> {
        Ok(self.lookup_live(key, hash, now)?.is_some())
    }

    pub fn ttl(&mut self, key: &[u8], hash: u64, now: u64) -> Result<Ttl> {
        Ok(match self.lookup_live(key, hash, now)? {
            None => Ttl::Missing,
            Some((_, _, rh)) if rh.expires == time::NEVER => Ttl::Never,
            Some((_, _, rh)) => Ttl::Ms(rh.expires - now),
        })
    }

    pub fn delete(&mut self, key: &[u8], hash: u64, now: u64) -> Result<bool> {
        match self.lookup_live(key, hash, now)? {
            Some((slot, off, rh)) => {
                self.unlink(slot, off, &rh, None)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Give a live key a new expiry. `expires` 0 = never.
    pub fn touch(&mut self, key: &[u8], hash: u64, expires: u64, now: u64) -> Result<bool> {
        match self.lookup_live(key, hash, now)? {
            Some((_, off, _)) => {
                self.begin_write();
                self.log().set_expires(off, expires);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Pin a live key (`FLAG_PINNED`, see `eviction.rs`): moved rather than
    /// evicted while it lives. A later plain set of the key unpins it.
    pub fn pin(&mut self, key: &[u8], hash: u64, now: u64) -> Result<bool> {
        match self.lookup_live(key, hash, now)? {
            Some((_, off, rh)) => {
                self.begin_write();
                self.log().set_flags(off, rh.flags | FLAG_PINNED);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Add `delta` to an integer value (`ENC_INT` or `ENC_BIGINT`); returns
    /// the exact sum, stored as `ENC_INT` if it fits an i64, else as
    /// `ENC_BIGINT`, with the item's expiry kept. An i64 sum that does not
    /// overflow is written in place without allocating (the common case);
    /// any other result goes through `set` (in place if the record keeps its
    /// size, else appended). A missing or expired key is `NotFound`, or with
    /// `create` is stored as `delta` with no expiry (Redis INCRBY); a value
    /// that is not an integer is `NotInteger`; a result too large for
    /// MAX_ITEM_SIZE is `TooLarge`, the stored value unchanged.
    pub fn incr(&mut self, key: &[u8], hash: u64, delta: &Int, create: bool, now: u64, max_item: u64) -> Result<Int> {
        let Some((_, off, rh)) = self.lookup_live(key, hash, now)? else {
            if !create {
                return Err(Error::NotFound);
            }
            let b = delta.encode();
            let (enc, value) = b.parts();
            self.set(&Item { key, hash, enc, value, expires: time::NEVER }, SetMode::Set, now, max_item)?;
            return Ok(delta.clone());
        };
        let log = self.log();
        let cur = log.value(off, &rh);
        if let (ENC_INT, Ok(cur), Int::Small(d)) = (rh.enc, <[u8; 8]>::try_from(cur), delta) {
            if let Some(new) = i64::from_le_bytes(cur).checked_add(*d) {
                self.begin_write();
                let at = off + REC_HDR + rh.key_len as u64;
                log.write_int_in_place(off, at, new);
                self.h().counters.bump_locked(Counter::Sets);
                return Ok(Int::Small(new));
            }
        }
        let new = Int::decode(rh.enc, cur).ok_or(Error::NotInteger)?.add(delta);
        let b = new.encode();
        let (enc, value) = b.parts();
        self.set(&Item { key, hash, enc, value, expires: rh.expires }, SetMode::Set, now, max_item)?;
        Ok(new)
    }

    /// Is `key` live with exactly the value `expected` (encoding, bytes)?
    fn holds(&mut self, key: &[u8], hash: u64, expected: (u8, &[u8]), now: u64) -> Result<bool> {
        Ok(match self.lookup_live(key, hash, now)? {
            Some((_, off, rh)) => rh.enc == expected.0 && self.log().value(off, &rh) == expected.1,
            None => false,
        })
    }

    /// Compare-and-set: if `item.key` is live and its (encoding, bytes) are
    /// `expected`, store `item` (as `set` does: in place if the record keeps
    /// its size, else appended) and return true; else change nothing and
    /// return false. A new value too large is refused whatever is stored.
    pub fn compare_and_set(&mut self, item: &Item, expected: (u8, &[u8]), now: u64, max_item: u64) -> Result<bool> {
        let size = item.key.len() as u64 + item.value.len() as u64;
        if size > max_item {
            return Err(Error::TooLarge { size, max: max_item });
        }
        if !self.holds(item.key, item.hash, expected, now)? {
            return Ok(false);
        }
        self.set(item, SetMode::Set, now, max_item)
    }

    /// Compare-and-delete: delete `key` if it is live with the value
    /// `expected` (encoding, bytes); returns whether it deleted.
    pub fn compare_and_delete(&mut self, key: &[u8], hash: u64, expected: (u8, &[u8]), now: u64) -> Result<bool> {
        if !self.holds(key, hash, expected, now)? {
            return Ok(false);
        }
        self.delete(key, hash, now)
    }

    /// Store `key` -> (enc, value). Returns false only for `SetMode::Add`
    /// when a live item exists. Evicts as needed; never fails for lack of room.
    pub fn set(&mut self, item: &Item, mode: SetMode, now: u64, max_item: u64) -> Result<bool> {
        let &Item { key, hash, enc, value, expires } = item;
        let size = key.len() as u64 + value.len() as u64;
        let max_item = max_item.min(self.shard.max_item);
        if size > max_item {
            return Err(Error::TooLarge { size, max: max_item });
        }
        if mode == SetMode::Add && self.lookup_live(key, hash, now)?.is_some() {
            return Ok(false);
        }
        let n = rec_size(key.len() as u64, value.len() as u64);
        // Written PENDING, made LIVE once complete (log.rs's write protocol).
        let mut rh = RecHdr {
            kind: KIND_PENDING,
            enc,
            visited: 0,
            flags: 0,
            rec_len: n as u32,
            key_len: key.len() as u32,
            val_len: value.len() as u32,
            expires,
            hash,
        };
        // An overwrite whose record keeps its size is written in place, as
        // incr and touch are: no log space used, no dead record left to
        // compact, and the bytes written are ones the last set made hot.
        // Lock-free readers see seq odd and retry, exactly as for a move.
        // The set counts as a use (visited), since it keeps the old position.
        // (An add got here only if no live record exists: nothing to look up.)
        let existing = if mode == SetMode::Set { self.lookup(key, hash)? } else { None };
        if let Some((_, off, old)) = existing {
            if old.rec_len as u64 == n {
                self.begin_write();
                rh.visited = 1;
                let log = self.log();
                log.begin_in_place(off);
                crash_point(9);
                log.write_hdr(off, &rh);
                self.write_value(off + REC_HDR + key.len() as u64, value);
                crash_point(10);
                log.set_kind(off, KIND_LIVE);
                self.h().counters.bump_locked(Counter::Sets);
                self.sweep(now, SWEEP_PER_WRITE)?;
                return Ok(true);
            }
        }
        self.begin_write();
        let off = self.alloc(n, now)?;
        crash_point(2);
        let log = self.log();
        log.write_hdr(off, &rh);
        // SAFETY: the allocator handed out n bytes at off; the key fits in n - REC_HDR.
        unsafe {
            std::ptr::copy_nonoverlapping(key.as_ptr(), log.bytes_mut(off + REC_HDR, key.len() as u64), key.len())
        };
        self.write_value(off + REC_HDR + key.len() as u64, value);
        crash_point(3);
        log.set_kind(off, KIND_LIVE);
        crash_point(4);
        let h = self.h();
        // `alloc` may have moved or dropped the old record: find it again. A
        // key that was absent is still absent (reclaiming never adds one).
        let old = if existing.is_some() { self.lookup(key, hash)? } else { None };
        match old {
            Some((slot, old, oldh)) => {
                log.set_kind(old, KIND_DEAD);
                crash_point(5);
                h.live_bytes.fetch_sub(oldh.rec_len as u64, Relaxed);
                self.shard.index().repoint(slot, hash, off);
            }
            None => {
                self.shard.index().insert(hash, off)?;
                h.items.fetch_add(1, Relaxed);
            }
        }
        crash_point(6);
        h.live_bytes.fetch_add(n, Relaxed);
        h.counters.bump_locked(Counter::Sets);
        self.sweep(now, SWEEP_PER_WRITE)?;
        Ok(true)
    }

    /// Copy `value` to `at`, the value bytes of a record sized for it (a
    /// record just allocated, or one of the same size being overwritten).
    /// Under `set_test_pause_ms` (test builds only) it stops halfway, mid-write.
    fn write_value(&self, at: u64, value: &[u8]) {
        let dst = self.log().bytes_mut(at, value.len() as u64);
        #[cfg(test)]
        if CRASH_AT.load(Relaxed) == 14 && CRASH_SKIP.load(Relaxed) > 0 {
            CRASH_SKIP.fetch_sub(1, Relaxed);
        } else if CRASH_AT.load(Relaxed) == 14 {
            // SAFETY: as below, for the first half only; then the test kills this process.
            unsafe { std::ptr::copy_nonoverlapping(value.as_ptr(), dst, value.len() / 2) };
            crash_point(14);
        }
        #[cfg(any(test, feature = "test-hooks"))]
        {
            let pause = TEST_PAUSE_MS.load(Relaxed);
            if pause > 0 {
                let half = value.len() / 2;
                // SAFETY: the caller's record (allocated or validated by lookup) spans at..at + value.len().
                unsafe {
                    std::ptr::copy_nonoverlapping(value.as_ptr(), dst, half);
                    std::thread::sleep(Duration::from_millis(pause));
                    std::ptr::copy_nonoverlapping(value.as_ptr().add(half), dst.add(half), value.len() - half);
                }
                return;
            }
        }
        // SAFETY: the caller's record (allocated or validated by lookup) spans at..at + value.len().
        unsafe { std::ptr::copy_nonoverlapping(value.as_ptr(), dst, value.len()) };
    }
}
