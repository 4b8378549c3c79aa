//! One shard: a crash domain with its own robust lock, index and log.
//!
//! Every structural change happens between `begin_write` (seq becomes odd) and
//! the guard's drop (seq becomes even). A process that dies in between leaves
//! seq odd; the next locker sees EOWNERDEAD and an odd seq and rebuilds this
//! shard's index from its log (`shard/recover.rs`), keeping every item the
//! dead writer was not changing. Any inconsistency found while reading shared
//! memory is reported as `Error::Corrupt`, after which the caller wipes the
//! shard.
//!
//! This module holds those rules (the header, the lock, the guard, the wipe)
//! and the operations on one shard (get, set, delete, touch, incr, ttl,
//! contains). Log housekeeping (placing records, reclaiming the tail, the
//! expiry sweep) is in `shard/reclaim.rs`; crash recovery in
//! `shard/recover.rs`; the full check in `shard/verify.rs`;
//! a key scan's walk under the lock in `shard/scan.rs`.

mod inval;
mod reclaim;
mod recover;
mod scan;
mod verify;

#[cfg(test)]
pub(crate) use inval::stripe_of;
pub use scan::ScanPos;

use crate::error::{Error, Result};
use crate::index::Index;
use crate::int::Int;
use crate::log::{Log, RecHdr, FLAG_PINNED, KIND_DEAD, KIND_LIVE, KIND_PENDING};
use crate::mem::layout::{rec_size, Geometry, REC_HDR, SHARD_HEADER_SIZE};
use crate::mem::lock::{Acquired, LockError, MutexRef, MUTEX_SLOT};
use crate::stats::{Counter, ShardCounters};
use crate::time::{self, Time};
use reclaim::SWEEP_PER_WRITE;
use std::sync::atomic::{
    fence, AtomicU64,
    Ordering::{Acquire, Relaxed, Release},
};
use std::time::Duration;

/// Value encodings (a tag stored with each item). The core treats them as
/// opaque except the integers `incr` accepts (`int.rs`): `ENC_INT` (8-byte
/// little-endian i64) and `ENC_BIGINT` (any other integer: minimal signed
/// two's-complement little-endian bytes); the Python layer uses BYTES, STR
/// (UTF-8), INT, BIGINT and PICKLE.
pub const ENC_BYTES: u8 = 0;
pub const ENC_PICKLE: u8 = 1;
pub const ENC_INT: u8 = 2;
pub const ENC_STR: u8 = 3;
pub const ENC_BIGINT: u8 = 4;

#[repr(C, align(64))]
pub struct ShardHeader {
    mutex: [u8; MUTEX_SLOT],
    /// Odd while a write is in progress.
    seq: AtomicU64,
    /// Incremented on every wipe.
    generation: AtomicU64,
    head: AtomicU64,
    tail: AtomicU64,
    cursor: AtomicU64,
    items: AtomicU64,
    live_bytes: AtomicU64,
    /// The counters start on a cache line of their own: readers write them,
    /// and must not dirty the line holding `seq`, which every reader reads.
    _pad: u64,
    pub counters: ShardCounters,
    /// Invalidation stripes of a tiered cache's L1 (`shard/inval.rs`): a
    /// key's stripe is bumped under the lock whenever it is invalidated.
    inval: [AtomicU64; inval::STRIPES],
}
const _: () = assert!(std::mem::size_of::<ShardHeader>() as u64 <= SHARD_HEADER_SIZE);
const _: () = assert!(std::mem::offset_of!(ShardHeader, inval) == 448);
// A shard starts with its mutex (`mem/init.rs` initialises it there).
const _: () = assert!(std::mem::offset_of!(ShardHeader, mutex) == 0);
const _: () =
    assert!(std::mem::offset_of!(ShardHeader, seq) == 64 && std::mem::offset_of!(ShardHeader, counters) == 128);

/// Test hook: when non-zero, a set sleeps this long half-way through copying
/// its value, while holding the lock with the shard marked mid-write.
#[cfg(any(test, feature = "test-hooks"))]
static TEST_PAUSE_MS: AtomicU64 = AtomicU64::new(0);

#[cfg(any(test, feature = "test-hooks"))]
pub fn set_test_pause_ms(ms: u64) {
    TEST_PAUSE_MS.store(ms, Relaxed);
}

/// Test-only crash points (`core_tests::a_writer_killed_at_each_crash_point_*`):
/// a forked child that stores n here is SIGKILLed when it reaches
/// `crash_point(n)` for the `CRASH_SKIP`+1-th time. Outside `cfg(test)` the
/// call is empty.
#[cfg(test)]
pub(crate) static CRASH_AT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
#[cfg(test)]
pub(crate) static CRASH_SKIP: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

#[inline(always)]
pub(crate) fn crash_point(_n: u32) {
    #[cfg(test)]
    if CRASH_AT.load(Relaxed) == _n && CRASH_SKIP.fetch_sub(1, Relaxed) == 0 {
        // SAFETY: raise only sends a signal to this (test child) process.
        unsafe { libc::raise(libc::SIGKILL) };
    }
}

/// This process's view of one shard: pointers computed from the validated
/// local geometry, never read from shared memory.
pub struct Shard {
    hdr: *const ShardHeader,
    mutex: MutexRef,
    index: *const AtomicU64,
    index_cap: usize,
    log: Log,
    max_items: u64,
    reserve: u64,
    /// MAX_ITEM_SIZE of this shard's geometry: a caller's limit is clamped
    /// to it (a call forwarded from a segment of another geometry).
    max_item: u64,
}

// SAFETY: the shard's shared state is only touched through atomics or under its lock.
unsafe impl Send for Shard {}
unsafe impl Sync for Shard {}

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
    /// # Safety
    /// `base` must point at `geo.shard_size` mapped bytes (64-aligned) that
    /// outlive the Shard.
    pub unsafe fn new(base: *mut u8, geo: &Geometry) -> Shard {
        let index = base.add(SHARD_HEADER_SIZE as usize);
        let data = index.add(geo.index_cap as usize * 8);
        Shard {
            hdr: base.cast(),
            mutex: MutexRef::new(base),
            index: index.cast(),
            index_cap: geo.index_cap as usize,
            log: Log::new(data, geo.data_size),
            max_items: geo.max_items(),
            reserve: geo.reserve,
            max_item: geo.max_item_size,
        }
    }

    /// Initialise a zeroed shard (segment creation only).
    ///
    /// # Safety
    /// No other process may use the shard yet.
    pub unsafe fn init(&self) -> Result<()> {
        self.mutex.init().map_err(|_| Error::Poisoned)
    }

    #[inline]
    pub fn header(&self) -> &ShardHeader {
        // SAFETY: hdr points into the live mapping (constructor contract), 64-aligned.
        unsafe { &*self.hdr }
    }

    /// The log's logical head (tests: did a write use log space?).
    #[cfg(test)]
    pub(crate) fn log_head(&self) -> u64 {
        self.header().head.load(Relaxed)
    }

    /// The log's logical tail (tests: were records reclaimed or moved?).
    #[cfg(test)]
    pub(crate) fn log_tail(&self) -> u64 {
        self.header().tail.load(Relaxed)
    }

    fn index(&self) -> Index<'_> {
        // SAFETY: index_cap u64 slots follow the header inside the shard (Geometry).
        Index::new(unsafe { std::slice::from_raw_parts(self.index, self.index_cap) })
    }

    pub fn items(&self) -> u64 {
        self.header().items.load(Relaxed)
    }
    pub fn live_bytes(&self) -> u64 {
        self.header().live_bytes.load(Relaxed)
    }
    pub fn capacity(&self) -> u64 {
        self.log.size()
    }
    pub fn generation(&self) -> u64 {
        self.header().generation.load(Relaxed)
    }

    /// Is a write in progress (or was its writer killed mid-write)?
    pub fn write_in_progress(&self) -> bool {
        self.header().seq.load(Acquire) & 1 == 1
    }

    /// Find a well-formed live record for `key`: (slot, offset, header).
    /// Reads only; every offset checked, every loop bounded.
    #[inline]
    fn find(&self, key: &[u8], hash: u64) -> Result<Option<(usize, u64, RecHdr)>> {
        let log = self.log;
        self.index().find(hash, |slot, off| {
            let rh = log.hdr(off)?;
            log.check_live(off, &rh)?;
            if rh.hash as u32 != hash as u32 {
                return Err(Error::Corrupt("index tag does not match record"));
            }
            // The tag is 32 bits of the hash: another key can share it (about
            // one pair in 2^32, so certain in a big cache). Not damage: probe on.
            if rh.hash != hash {
                return Ok(None);
            }
            Ok((log.key(off, &rh) == key).then_some((slot, off, rh)))
        })
    }

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

    /// Run `f` under the lock (see `lock` for `timeout`). If `f` finds the
    /// shard corrupt, the shard is wiped and `f` runs once more on the clean
    /// shard, so callers see a miss rather than damage.
    pub fn with_lock<R>(
        &self,
        timeout: Option<Duration>,
        f: &mut impl FnMut(&mut ShardGuard) -> Result<R>,
    ) -> Result<R> {
        let mut g = self.lock(timeout)?;
        match f(&mut g) {
            Err(Error::Corrupt(_)) => {
                g.wipe();
                f(&mut g)
            }
            r => r,
        }
    }

    /// Take the lock: without waiting (`timeout` None) or for at most `timeout`.
    /// Repairs the shard if its previous owner died mid-write.
    pub fn lock(&self, timeout: Option<Duration>) -> Result<ShardGuard<'_>> {
        let r = match timeout {
            None => self.mutex.try_lock(),
            Some(t) => self.mutex.lock_timeout(t),
        };
        let how = match r {
            Ok(a) => a,
            Err(LockError::Busy) => return Err(Error::WouldBlock),
            Err(LockError::Timeout) => {
                self.header().counters.add(Counter::LockTimeouts, 1);
                return Err(Error::LockTimeout);
            }
            Err(_) => return Err(Error::Poisoned),
        };
        let mut g = ShardGuard { shard: self, dirty: false };
        if how == Acquired::OwnerDied {
            let h = self.header();
            h.counters.bump_locked(Counter::LockRecoveries);
            if h.seq.load(Relaxed) % 2 == 1 {
                // Killed mid-write: rebuild from the log (shard/recover.rs).
                g.recover(time::now_ms());
            }
            self.mutex.mark_consistent();
        }
        if !g.sane() {
            g.wipe();
        }
        Ok(g)
    }
}

/// Proof that this thread holds the shard lock. Dropping it unlocks.
pub struct ShardGuard<'a> {
    shard: &'a Shard,
    dirty: bool,
}

impl Drop for ShardGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() && self.dirty {
            // A panic mid-write may have left the shard inconsistent.
            self.wipe();
        }
        if self.dirty {
            // Even again: publishes the changes to lock-free readers.
            self.shard.header().seq.fetch_add(1, Release);
        }
        self.shard.mutex.unlock();
    }
}

impl<'a> ShardGuard<'a> {
    #[inline]
    fn h(&self) -> &'a ShardHeader {
        self.shard.header()
    }
    #[inline]
    fn log(&self) -> Log {
        self.shard.log
    }

    fn begin_write(&mut self) {
        if !self.dirty {
            let h = self.h();
            let s = h.seq.load(Relaxed);
            // Make seq odd (it is even unless a wipe is pending) before any
            // change; the fence orders it before the changes for lock-free
            // readers (see `Shard::get_optimistic`).
            h.seq.store(s | 1, Relaxed);
            fence(Release);
            self.dirty = true;
        }
    }

    /// Cheap consistency checks of the shard header.
    fn sane(&self) -> bool {
        let h = self.h();
        let (head, tail) = (h.head.load(Relaxed), h.tail.load(Relaxed));
        head >= tail
            && head - tail <= self.log().size()
            && h.items.load(Relaxed) <= self.shard.max_items
            && h.live_bytes.load(Relaxed) <= head - tail
            && (self.dirty || h.seq.load(Relaxed).is_multiple_of(2))
    }

    /// Drop every item of this shard. Counters survive.
    pub fn wipe(&mut self) {
        self.begin_write();
        let h = self.h();
        self.shard.index().clear();
        for f in [&h.head, &h.tail, &h.cursor, &h.items, &h.live_bytes] {
            f.store(0, Relaxed);
        }
        h.generation.fetch_add(1, Relaxed);
        h.counters.bump_locked(Counter::ShardWipes);
    }

    /// Find a live, well-formed record for `key`: (slot, offset, header).
    #[inline]
    fn lookup(&self, key: &[u8], hash: u64) -> Result<Option<(usize, u64, RecHdr)>> {
        self.shard.find(key, hash)
    }

    /// Remove the live record at `off` (found at `slot`) from the shard.
    fn unlink(&mut self, slot: usize, off: u64, rh: &RecHdr, why: Option<Counter>) -> Result<()> {
        self.begin_write();
        self.shard.index().remove(slot)?;
        crash_point(11);
        self.log().set_kind(off, KIND_DEAD);
        crash_point(12);
        let h = self.h();
        h.items.fetch_sub(1, Relaxed);
        h.live_bytes.fetch_sub(rh.rec_len as u64, Relaxed);
        if let Some(c) = why {
            h.counters.bump_locked(c);
        }
        Ok(())
    }

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
