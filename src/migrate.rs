//! Geometry migration: a segment's items copied into a new segment of
//! another geometry (SIZE, MAX_ITEM_SIZE, SHARDS), which then takes the name.
//!
//! Who migrates, and when (`handle.rs`): every process says which geometry
//! it wants by an OFD read lock on a byte of the segment file standing for
//! it (`Segment::want`; released by the kernel when the process dies). A
//! process whose request differs from the segment's geometry migrates to
//! its request once no live process wants the geometry in force (checked
//! when it attaches and then once a second). So while old and new settings
//! overlap they share the segment as it is; once only the new run, the
//! first to look migrates; and nobody migrates away from a geometry that a
//! live process asks for, so alternating starts never flap. An explicit
//! `resize` records its time in the new header: processes started before it
//! do not migrate away from it.
//!
//! The migration ([`migrate`]), under the segment's migration lease (an OFD
//! write lock, so one at a time and released if the migrator dies):
//! 1. create the successor under a temporary name (`<name>.m<nonce>`) with
//!    the same hash seed, all of it allocated (no SIGBUS when /dev/shm fills:
//!    that fails here, and nothing changes);
//! 2. set `migrating` and take every shard lock (writers that find a lock
//!    held then wait past LOCK_TIMEOUT; lock-free reads go on);
//! 3. copy the items, hottest first when the successor is smaller (the
//!    rank of `rank.rs`: CLOCK's visited bit, then log position), keeping
//!    absolute expiry, encodings and pins (held locks);
//! 4. set `moved_to` and `moved`, rename the successor over the name, and
//!    release the locks.
//!
//! After `moved`, a call on the old segment is forwarded (`ShmCache::
//! successor`): writers see `moved` under the shard lock, readers after
//! their lock-free read. So every call runs either before the copy (and is
//! copied) or on the successor: nothing written is lost, nothing stale is
//! read. Each process drops the old segment once its handle follows the
//! name (at its next call that sees `moved`, or within a second).
//!
//! A migrator that dies before `moved` leaves the old segment as it was (it
//! only read it) and a successor nobody uses, removed by the next
//! migration; one that dies between `moved` and the rename leaves the
//! rename to the first follower (`moved_to` names the successor).

use crate::cache::{ShmCache, Wait};
use crate::error::{Error, Result};
use crate::mem::init::{init_segment, seed_from_os};
use crate::mem::layout::{Config, Geometry};
use crate::mem::segment::{self, Segment};
use crate::rank::{rank, Histogram};
use crate::shard::ops::{Item, SetMode};
use crate::shard::ShardGuard;
use crate::time;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

/// Longest wait for all the shard locks before a migration gives up.
pub const LOCK_ALL_WAIT: Duration = Duration::from_secs(5);

/// What a migration did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MigrateStats {
    /// Items copied, and their key and value bytes.
    pub items: u64,
    pub bytes: u64,
    /// Items left out: ranked below what fits the successor, or larger than
    /// its MAX_ITEM_SIZE.
    pub dropped: u64,
    /// How long every shard lock was held (writers paused), in ms.
    pub pause_ms: u64,
}

impl ShmCache {
    /// Migrate the existing cache `location` to the geometry of `cfg` now
    /// (`python -m shmcache resize`; `migrate.rs`). Processes started before
    /// it keep the new geometry.
    pub fn resize(location: &str, cfg: &Config, lock_timeout: Duration) -> Result<MigrateStats> {
        let old = Self::attach_existing(location, lock_timeout)?;
        if *old.geometry() == Geometry::compute(cfg)? {
            return Ok(MigrateStats::default());
        }
        migrate(&old, cfg, true).map(|(_, st)| st)
    }
}

/// Migrate `old` to the geometry of `cfg` (module doc); returns the cache on
/// the successor, now under the name. `explicit`: a `resize` (recorded, so
/// processes started before it keep it). `Error::Migrating` if another
/// process is migrating it; `Error::Moved` if it has already moved.
pub fn migrate(old: &ShmCache, cfg: &Config, explicit: bool) -> Result<(ShmCache, MigrateStats)> {
    let geo = Geometry::compute(cfg)?;
    if !old.segment().try_lease() {
        return Err(Error::Migrating);
    }
    let r = leased(old, cfg, &geo, explicit);
    old.segment().release_lease();
    r
}

fn leased(old: &ShmCache, cfg: &Config, geo: &Geometry, explicit: bool) -> Result<(ShmCache, MigrateStats)> {
    if old.moved() {
        return Err(Error::Moved);
    }
    segment::remove_dead_successors(old.name());
    let nonce = seed_from_os() | 1;
    let tmp = segment::successor_name(old.name(), nonce);
    let seed = old.segment().header().hash_seed;
    let seg = Segment::create_exclusive(&tmp, geo.total_size, |base| init_segment(base, geo, seed))?;
    let mut new = match ShmCache::on_new_segment(seg, cfg, old.lock_timeout()) {
        Ok(c) => c,
        Err(e) => {
            let _ = segment::destroy(&tmp);
            return Err(e);
        }
    };
    let hdr = old.segment().header();
    hdr.migrating.store(1, SeqCst);
    let r = copy_and_switch(old, &mut new, nonce, explicit);
    hdr.migrating.store(0, SeqCst);
    match r {
        Ok(st) => Ok((new, st)),
        Err(e) => {
            let _ = segment::destroy(&tmp);
            Err(e)
        }
    }
}

/// Steps 2 to 4 (module doc); on an error nothing has changed in `old`.
fn copy_and_switch(old: &ShmCache, new: &mut ShmCache, nonce: u64, explicit: bool) -> Result<MigrateStats> {
    let guards = lock_all(old)?;
    let t0 = Instant::now();
    let mut st = copy(&guards, new)?;
    new.inherit_tier(old);
    if explicit {
        new.segment().header().explicit_ms.store(time::now_ms().max(1), SeqCst);
    }
    let hdr = old.segment().header();
    hdr.moved_to.store(nonce, SeqCst);
    hdr.moved.store(1, SeqCst);
    if let Err(e) = new.segment_mut().rename_to(old.name()) {
        // Nobody can have reached the successor (only this rename puts it
        // under the name), so undoing `moved` is safe.
        hdr.moved.store(0, SeqCst);
        return Err(e);
    }
    drop(guards);
    st.pause_ms = t0.elapsed().as_millis() as u64;
    Ok(st)
}

/// Every shard lock of `old`, in order, waiting up to [`LOCK_ALL_WAIT`].
fn lock_all(old: &ShmCache) -> Result<Vec<ShardGuard<'_>>> {
    let deadline = Instant::now() + LOCK_ALL_WAIT;
    let mut guards = Vec::with_capacity(old.shards().count());
    for i in 0..old.shards().count() {
        loop {
            match old.shard(i).lock(Some(Duration::from_millis(100))) {
                Ok(g) => {
                    guards.push(g);
                    break;
                }
                Err(Error::LockTimeout) if Instant::now() < deadline => continue,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(guards)
}

/// Copy every live item of the locked shards into `new`: all of them if
/// they fit, else the highest ranks (`rank.rs`) that do.
fn copy(guards: &[ShardGuard], new: &ShmCache) -> Result<MigrateStats> {
    let now = time::now_ms();
    let max = new.geometry().max_item_size;
    let mut hist = Histogram::new();
    for g in guards {
        // A damaged shard (Corrupt) is not copied: its items are dropped.
        let _ = g.walk_slice(None, usize::MAX, now, |r| {
            if (r.key.len() + r.value.len()) as u64 <= max {
                hist.add(rank(r), r.key.len(), r.value.len());
            }
            true
        });
    }
    let mut cut = hist.cut(new.geometry());
    let mut st = MigrateStats::default();
    let mut err = None;
    for g in guards {
        let _ = g.walk_slice(None, usize::MAX, now, |r| {
            let size = (r.key.len() + r.value.len()) as u64;
            if size > max || !cut.admit(rank(r), r.key.len(), r.value.len()) {
                st.dropped += 1;
                return true;
            }
            let h = new.hash(r.key);
            let item = Item { key: r.key, hash: h, enc: r.enc, value: r.value, expires: r.expires };
            let res = new.with_shard(h, Wait::Bounded, |ng| {
                ng.set(&item, SetMode::Set, now, max)?;
                if r.pinned {
                    ng.pin(r.key, h, now)?;
                }
                Ok(())
            });
            match res {
                Ok(()) => {
                    st.items += 1;
                    st.bytes += size;
                    true
                }
                Err(e) => {
                    err = Some(e);
                    false
                }
            }
        });
        if let Some(e) = err {
            return Err(e);
        }
    }
    Ok(st)
}
