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
//! This module holds those rules (the header, the lock, the guard, the
//! wipe, unlinking a record) and what its children share. Below it, one
//! way: the leaves `encoding.rs` (the value encodings), `log.rs` (the
//! circular log), `index.rs` (the hash index), `eviction.rs` (the CLOCK
//! policy) and `stats.rs` (the counters); log housekeeping (placing
//! records, reclaiming the tail, the expiry sweep) in `reclaim.rs`; the
//! operations (get, set, delete, touch, incr, ...) in `ops.rs`, over it;
//! invalidation stripes in `inval.rs`, over them; crash recovery in
//! `recover.rs`; the full check in `verify.rs`; a walk of one slice of
//! the log under the lock (key scans, snapshots, migrations) in `scan.rs`.

pub(crate) mod encoding;
pub(crate) mod eviction;
pub(crate) mod index;
mod inval;
pub(crate) mod log;
pub(crate) mod ops;
mod reclaim;
mod recover;
pub(crate) mod scan;
pub(crate) mod stats;
mod verify;

#[cfg(test)]
pub(crate) use inval::stripe_of;

use crate::error::{Error, Result};
use crate::mem::layout::{Geometry, SHARD_HEADER_SIZE};
use crate::mem::lock::{Acquired, LockError, MutexRef, MUTEX_SLOT};
use crate::time;
use index::Index;
use log::{Log, RecHdr, KIND_DEAD};
use stats::{Counter, ShardCounters};
use std::sync::atomic::{
    fence, AtomicU64,
    Ordering::{Acquire, Relaxed, Release},
};
use std::time::Duration;

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
}
