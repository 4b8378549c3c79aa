//! A process's handle on a cache by LOCATION that follows the name.
//!
//! If the segment's name is removed from /dev/shm while processes run
//! (systemd-logind's `RemoveIPC`, a manual `rm`, `shmcache destroy`), each
//! process notices within [`RECHECK_MS`] (one `stat` per second, amortised
//! into the operations; no thread) and re-attaches by name. `shm_open` with
//! `O_CREAT` is atomic, so all processes converge on one new segment.
//!
//! It also carries out this process's geometry request (`migrate.rs`): when
//! it attaches and at each check, if the segment's geometry is not the one
//! asked for and no live process wants the one in force, it migrates. A
//! call that finds the segment moved follows it at once.
//!
//! An [`Attachment`] is what the binding holds: such a handle (normal use),
//! or a fixed attachment to an existing segment (admin tools), whose calls
//! a migration forwards (`ShmCache::successor`).

use crate::cache::ShmCache;
use crate::error::Result;
use crate::mem::layout::Config;
use crate::time;
use arc_swap::{ArcSwap, Guard};
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// How often (ms) a process checks that its segment is still the named one.
pub const RECHECK_MS: u64 = 1000;

pub struct Handle {
    location: String,
    cfg: Config,
    lock_timeout: Duration,
    current: ArcSwap<ShmCache>,
    next_check: AtomicU64,
    /// Wall-clock ms when this handle was made: an explicit `resize` made
    /// after it is kept (`migrate.rs`).
    started_ms: u64,
}

impl Handle {
    pub fn open(location: &str, cfg: &Config, lock_timeout: Duration) -> Result<Handle> {
        let c = ShmCache::open(location, cfg, lock_timeout)?;
        let h = Handle {
            location: location.to_string(),
            cfg: *cfg,
            lock_timeout,
            current: ArcSwap::from_pointee(c),
            next_check: AtomicU64::new(time::coarse_ms() + RECHECK_MS),
            started_ms: time::now_ms(),
        };
        h.maybe_migrate();
        Ok(h)
    }

    /// The cache to use now. The check is timed by the coarse monotonic
    /// clock (a few ns to read), not the wall clock a get would pay for.
    #[inline]
    pub fn cache(&self) -> Guard<Arc<ShmCache>> {
        let due = self.next_check.load(Relaxed);
        let now = time::coarse_ms();
        // One thread per period wins the exchange and checks (no lock, so
        // nothing can be left held across a fork).
        if now >= due && self.next_check.compare_exchange(due, now + RECHECK_MS, Relaxed, Relaxed).is_ok() {
            self.recheck();
        }
        let c = self.current.load();
        if c.moved() {
            drop(c);
            self.follow();
            return self.current.load();
        }
        c
    }

    #[cold]
    fn recheck(&self) {
        if self.current.load().segment().name_is_current() {
            self.maybe_migrate();
            return;
        }
        self.follow();
    }

    /// Attach to (or create) the segment now under the name. On failure keep
    /// the old mapping (its calls are forwarded) and try again at the next check.
    #[cold]
    fn follow(&self) {
        let cur = self.current.load_full();
        // A moved segment's successor is the one under the name (already
        // opened by the calls it forwarded, or opened now).
        let next = if cur.moved() {
            cur.successor_arc().cloned()
        } else {
            ShmCache::open(&self.location, &self.cfg, self.lock_timeout).map(Arc::new)
        };
        if let Ok(c) = next {
            if !c.moved() {
                self.current.store(c);
            }
        }
    }

    /// Migrate to this process's request if nobody wants the geometry in
    /// force (module doc). Failures leave everything as it is: tried again
    /// at the next check.
    #[cold]
    fn maybe_migrate(&self) {
        let cur = self.current.load_full();
        let have = *cur.geometry();
        if have == *cur.requested()
            || cur.segment().header().explicit_ms.load(Relaxed) > self.started_ms
            || cur.segment().wanted(have.key())
        {
            return;
        }
        if let Ok((c, _)) = crate::migrate::migrate(&cur, &self.cfg, false) {
            self.current.store(Arc::new(c));
        }
    }

    /// Check now rather than within a second (tests, admin).
    pub fn recheck_now(&self) {
        self.next_check.store(time::coarse_ms() + RECHECK_MS, Relaxed);
        self.recheck();
    }
}

/// A cache by LOCATION as a process uses it: a [`Handle`] that follows
/// the name, or a fixed attachment to an existing segment (admin tools).
pub enum Attachment {
    Named(Handle),
    Fixed(Arc<ShmCache>),
}

/// The cache to use for one call ([`Attachment::cache`]).
pub enum Current<'a> {
    Named(Guard<Arc<ShmCache>>),
    Fixed(&'a ShmCache),
}

impl Deref for Current<'_> {
    type Target = ShmCache;
    #[inline]
    fn deref(&self) -> &ShmCache {
        match self {
            Current::Named(g) => g,
            Current::Fixed(c) => c,
        }
    }
}

impl Attachment {
    /// Attach to (or create) the cache `location` (a [`Handle`]).
    pub fn open(location: &str, cfg: &Config, lock_timeout: Duration) -> Result<Attachment> {
        Handle::open(location, cfg, lock_timeout).map(Attachment::Named)
    }

    /// Attach to the existing cache `location` whatever its geometry
    /// (`ShmCache::attach_existing`).
    pub fn attach_existing(location: &str, lock_timeout: Duration) -> Result<Attachment> {
        ShmCache::attach_existing(location, lock_timeout).map(|c| Attachment::Fixed(Arc::new(c)))
    }

    /// The cache to use for this call.
    #[inline]
    pub fn cache(&self) -> Current<'_> {
        match self {
            Attachment::Named(h) => Current::Named(h.cache()),
            Attachment::Fixed(c) => Current::Fixed(c),
        }
    }

    /// The cache to use from now on, shared (a key scan keeps the segment
    /// it started on).
    pub fn cache_arc(&self) -> Arc<ShmCache> {
        match self {
            Attachment::Named(h) => Arc::clone(&h.cache()),
            Attachment::Fixed(c) => Arc::clone(c),
        }
    }

    /// Check now whether the segment's name was removed, and follow it
    /// (a fixed attachment has nothing to follow).
    pub fn recheck_now(&self) {
        if let Attachment::Named(h) = self {
            h.recheck_now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::segment;
    use crate::shard::encoding::ENC_BYTES;

    #[test]
    fn follows_a_removed_segment_to_its_replacement() {
        let loc = format!("handle-test-{}", std::process::id());
        let cfg = Config { size: 2 << 20, max_item_size: 1024, shards: 0 };
        let a = Handle::open(&loc, &cfg, Duration::from_millis(100)).unwrap();
        let b = Handle::open(&loc, &cfg, Duration::from_millis(100)).unwrap();
        a.cache().set(b"k", ENC_BYTES, b"old", 0).unwrap();
        let old_inode = a.cache().segment().inode();
        segment::destroy(&segment::segment_name(&loc).unwrap()).unwrap();
        // Before the recheck both still use the old mapping.
        assert!(b.cache().get(b"k").unwrap().is_some());
        a.recheck_now();
        b.recheck_now();
        let (ca, cb) = (a.cache(), b.cache());
        assert_ne!(ca.segment().inode(), old_inode);
        assert_eq!(ca.segment().inode(), cb.segment().inode(), "split brain");
        ca.set(b"k2", ENC_BYTES, b"new", 0).unwrap();
        assert_eq!(cb.get(b"k2").unwrap().unwrap().1, b"new");
        segment::destroy(ca.name()).unwrap();
    }

    #[test]
    fn an_attachment_is_a_following_handle_or_a_fixed_segment() {
        let loc = format!("attachment-test-{}", std::process::id());
        let cfg = Config { size: 2 << 20, max_item_size: 1024, shards: 0 };
        let named = Attachment::open(&loc, &cfg, Duration::from_millis(100)).unwrap();
        named.cache().set(b"k", ENC_BYTES, b"v", 0).unwrap();
        // An admin's lock timeout is brought within 1 ms to 60 s.
        let fixed = Attachment::attach_existing(&loc, Duration::ZERO).unwrap();
        assert_eq!(fixed.cache().lock_timeout(), Duration::from_millis(1));
        assert_eq!(fixed.cache().get(b"k").unwrap().unwrap().1, b"v");
        assert_eq!(fixed.cache_arc().segment().inode(), named.cache_arc().segment().inode());
        // The name removed: the handle follows it, the fixed attachment stays.
        let old_inode = named.cache().segment().inode();
        segment::destroy(named.cache().name()).unwrap();
        named.recheck_now();
        fixed.recheck_now();
        assert_ne!(named.cache().segment().inode(), old_inode);
        assert_eq!(fixed.cache().segment().inode(), old_inode);
        segment::destroy(named.cache().name()).unwrap();
    }
}
