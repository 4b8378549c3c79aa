//! `ShmCache`: a segment plus its shards (`shards.rs`: key to shard, clear,
//! verify) and a lock timeout; taking locks with a bounded wait, single-key
//! and batch operations (one lock pass per shard).

use crate::error::{Error, Result};
use crate::mem::init::{init_segment, seed_from_os};
use crate::mem::layout::{Config, Geometry, SegHeader};
use crate::mem::segment::{self, Fit, Segment};
use crate::migrate::MigrateStats;
use crate::scan::KeyScan;
use crate::shard::encoding::Int;
use crate::shard::ops::{Item, SetMode, Ttl};
use crate::shard::stats::Stats;
use crate::shard::{Shard, ShardGuard};
use crate::shards::Shards;
use crate::snapshot::{self, DumpStats, LoadStats};
use crate::time::{self, LazyNow, Time};
use std::sync::atomic::Ordering::SeqCst;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// How long a writer waits for a migration that holds its shard's lock
/// (past LOCK_TIMEOUT: a migration is not contention).
pub const MIGRATION_WAIT: Duration = Duration::from_secs(30);

pub struct ShmCache {
    shards: Shards,
    geo: Geometry,
    /// What this process asked for: its geometry, and its options to open a
    /// successor with. None for an admin attachment, which wants none.
    request: Option<(Geometry, Config)>,
    lock_timeout: Duration,
    /// The segment this one's items moved to (`migrate.rs`), once looked up.
    successor: OnceLock<Arc<ShmCache>>,
    // Last field: unmapped after the shards (which point into it) are gone.
    seg: Segment,
}

/// A stored value as the core returns it: (encoding, bytes).
pub type Value = (u8, Vec<u8>);

/// Which waits are allowed when taking a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Fail with `Error::WouldBlock` if busy.
    No,
    /// Wait up to the cache's lock timeout.
    Bounded,
}

impl ShmCache {
    /// Attach to (or create) the cache named `location`.
    pub fn open(location: &str, cfg: &Config, lock_timeout: Duration) -> Result<ShmCache> {
        let name = segment::segment_name(location)?;
        Self::open_named(&name, cfg, lock_timeout)
    }

    pub fn open_named(name: &str, cfg: &Config, lock_timeout: Duration) -> Result<ShmCache> {
        if lock_timeout.is_zero() || lock_timeout > Duration::from_secs(60) {
            return Err(Error::Config {
                option: "LOCK_TIMEOUT",
                message: format!("{lock_timeout:?}; must be more than 0 and at most 60 seconds"),
            });
        }
        let geo = Geometry::compute(cfg)?;
        let seg = Segment::open(
            name,
            geo.total_size,
            |h: &SegHeader| {
                h.check_format(name)?;
                let have = h.geometry();
                if have == geo {
                    return Ok(Fit::Same);
                }
                // Another geometry, in use: attachable if it is self-consistent.
                have.check_untrusted()?;
                Ok(Fit::Other(have.total_size))
            },
            |base| init_segment(base, &geo, seed_from_os()),
        )?;
        // The segment's own geometry, which may differ from the request when
        // the segment was in use with another one (SegHeader cannot change
        // while we hold LOCK_SH; checked again as it is shared memory).
        let have = seg.header().geometry();
        if have != geo {
            have.check_untrusted()?;
        }
        // Say that this process wants `geo` (migrate.rs: nobody migrates
        // away from a geometry that a live process wants).
        seg.want(geo.key())?;
        Ok(Self::from_segment(seg, have, Some((geo, *cfg)), lock_timeout))
    }

    /// A cache on a segment just made (a migration's successor), with the
    /// request `cfg` of the process that made it.
    pub(crate) fn on_new_segment(seg: Segment, cfg: &Config, lock_timeout: Duration) -> Result<ShmCache> {
        let geo = seg.header().geometry();
        seg.want(geo.key())?;
        Ok(Self::from_segment(seg, geo, Some((geo, *cfg)), lock_timeout))
    }

    pub(crate) fn segment_mut(&mut self) -> &mut Segment {
        &mut self.seg
    }

    /// Whether this segment's items moved to a successor (`migrate.rs`).
    #[inline]
    pub fn moved(&self) -> bool {
        self.seg.header().moved.load(SeqCst) != 0
    }

    /// Whether a migration holds (or is taking) every shard lock.
    pub fn migrating(&self) -> bool {
        self.seg.header().migrating.load(SeqCst) != 0
    }

    /// The segment this one's items moved to: the one under the name now.
    /// It has the same hash seed (so a hash computed here is valid there);
    /// if the migrator died before its rename, the rename is done here.
    pub fn successor(&self) -> Result<&ShmCache> {
        self.successor_arc().map(|s| &**s)
    }

    /// [`Self::successor`], shared (a handle switching to it keeps it).
    pub(crate) fn successor_arc(&self) -> Result<&Arc<ShmCache>> {
        if let Some(s) = self.successor.get() {
            return Ok(s);
        }
        if self.seg.name_is_current() {
            let tmp = segment::successor_name(self.seg.name(), self.seg.header().moved_to.load(SeqCst));
            // Someone else may have just done it (ENOENT): the name is checked below.
            let _ = segment::rename(&tmp, self.seg.name());
            if self.seg.name_is_current() {
                // No successor to rename: the mark is damage, not a migration.
                self.seg.header().moved.store(0, SeqCst);
                return Err(Error::Corrupt("a moved mark in the segment header without a successor; cleared"));
            }
        }
        let next = match &self.request {
            Some((_, cfg)) => ShmCache::open_named(self.seg.name(), cfg, self.lock_timeout)?,
            None => ShmCache::attach_existing_named(self.seg.name(), self.lock_timeout)?,
        };
        if next.seg.inode() == self.seg.inode() || next.seg.header().hash_seed != self.seg.header().hash_seed {
            return Err(Error::GeometryMismatch(format!(
                "shared segment {} was migrated, but its successor is gone (removed or re-created); retry",
                self.seg.name()
            )));
        }
        let _ = self.successor.set(Arc::new(next));
        Ok(self.successor.get().expect("just set"))
    }

    /// Attach to an existing segment whatever its geometry (admin tools:
    /// stats, clear, verify). Fails if it does not exist.
    /// It wants no geometry, nor does its successor if the segment moves.
    pub fn attach_existing(location: &str, lock_timeout: Duration) -> Result<ShmCache> {
        Self::attach_existing_named(&segment::segment_name(location)?, lock_timeout).map_err(|e| match e {
            Error::NotCreated(_) => Error::NotCreated(location.to_owned()),
            e => e,
        })
    }

    fn attach_existing_named(name: &str, lock_timeout: Duration) -> Result<ShmCache> {
        let seg = Segment::attach_existing(name, |h| {
            let g = h.geometry();
            g.check_untrusted()?;
            h.check(&g, name)?;
            Ok(g.total_size)
        })?;
        let geo = seg.header().geometry();
        Ok(Self::from_segment(seg, geo, None, lock_timeout))
    }

    /// Migrate the existing cache `location` to the geometry of `cfg` now
    /// (`python -m shmcache resize`; `migrate.rs`). Processes started before
    /// it keep the new geometry.
    pub fn resize(location: &str, cfg: &Config, lock_timeout: Duration) -> Result<MigrateStats> {
        let old = Self::attach_existing(location, lock_timeout)?;
        if *old.geometry() == Geometry::compute(cfg)? {
            return Ok(MigrateStats::default());
        }
        crate::migrate::migrate(&old, cfg, true).map(|(_, st)| st)
    }

    fn from_segment(
        seg: Segment,
        geo: Geometry,
        request: Option<(Geometry, Config)>,
        lock_timeout: Duration,
    ) -> ShmCache {
        let shards = (0..geo.nshards)
            // SAFETY: the segment maps geo.total_size bytes, validated against the header.
            .map(|i| unsafe { Shard::new(seg.base().add(geo.shard_offset(i) as usize), &geo) })
            .collect();
        ShmCache {
            shards: Shards::new(shards, seg.header().hash_seed),
            geo,
            request,
            lock_timeout,
            successor: OnceLock::new(),
            seg,
        }
    }

    /// The segment's geometry, the one in force.
    pub fn geometry(&self) -> &Geometry {
        &self.geo
    }
    /// The geometry this process asked for (SIZE, MAX_ITEM_SIZE, SHARDS);
    /// differs from [`Self::geometry`] when the segment already existed,
    /// in use by a process with other options. An admin attachment's is
    /// the one in force.
    pub fn requested(&self) -> &Geometry {
        self.request.as_ref().map_or(&self.geo, |(g, _)| g)
    }
    pub fn name(&self) -> &str {
        self.seg.name()
    }
    pub fn segment(&self) -> &Segment {
        &self.seg
    }
    pub fn lock_timeout(&self) -> Duration {
        self.lock_timeout
    }

    /// The shards, for what is done to all of them (and the fuzzing harness).
    pub fn shards(&self) -> &Shards {
        &self.shards
    }

    #[inline]
    pub fn hash(&self, key: &[u8]) -> u64 {
        self.shards.hash(key)
    }

    #[inline]
    pub fn shard_of(&self, hash: u64) -> usize {
        self.shards.shard_of(hash)
    }

    /// Run `f` on the shard owning `hash` under its lock (`Shard::with_lock`:
    /// a shard `f` finds corrupt is wiped and `f` reruns on the clean shard).
    /// If this segment moved (`migrate.rs`), `f` runs on the successor.
    #[inline]
    pub fn with_shard<R>(&self, hash: u64, wait: Wait, mut f: impl FnMut(&mut ShardGuard) -> Result<R>) -> Result<R> {
        match self.with_shard_index(self.shard_of(hash), wait, &mut f) {
            Err(Error::Moved) => self.successor()?.with_shard(hash, wait, f),
            r => r,
        }
    }

    pub fn with_shard_index<R>(
        &self,
        idx: usize,
        wait: Wait,
        f: &mut impl FnMut(&mut ShardGuard) -> Result<R>,
    ) -> Result<R> {
        let timeout = match wait {
            Wait::No => None,
            Wait::Bounded => Some(self.lock_timeout),
        };
        // Only read the clock once a migration makes us wait (not per call).
        let mut until: Option<Instant> = None;
        loop {
            let r = self.shards.with_shard_index(idx, timeout, &mut |g: &mut ShardGuard| {
                // Under the lock: a migration sets `moved` while it holds
                // every lock, so a call either ran before the copy or sees it.
                if self.moved() {
                    return Err(Error::Moved);
                }
                f(g)
            });
            match r {
                Err(Error::LockTimeout)
                    if self.migrating()
                        && Instant::now() < *until.get_or_insert_with(|| Instant::now() + MIGRATION_WAIT) =>
                {
                    continue
                }
                r => return r,
            }
        }
    }

    // ---- single-key operations (waiting up to the lock timeout) ----

    /// The shard that owns `hash`.
    #[inline]
    pub fn shard_for(&self, hash: u64) -> &Shard {
        self.shards.shard(self.shard_of(hash))
    }

    /// Read `key` (lock-free when possible); `f` gets (encoding, value).
    #[inline]
    pub fn get_with<R>(&self, key: &[u8], now: impl Time, mut f: impl FnMut(u8, &[u8]) -> R) -> Result<Option<R>> {
        let h = self.hash(key);
        if let Some(r) = self.shard_for(h).get_optimistic(key, h, now, &mut f) {
            // Checked after the read: not moved then, so read before the copy.
            if !self.moved() {
                return Ok(r);
            }
        }
        self.with_shard(h, Wait::Bounded, |g| g.get(key, h, now, &mut f))
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Value>> {
        self.get_with(key, &LazyNow::new(), |e, v| (e, v.to_vec()))
    }

    pub fn set(&self, key: &[u8], enc: u8, value: &[u8], expires: u64) -> Result<bool> {
        let (h, now, max) = (self.hash(key), time::now_ms(), self.geo.max_item_size);
        self.with_shard(h, Wait::Bounded, |g| {
            g.set(&Item { key, hash: h, enc, value, expires }, SetMode::Set, now, max)
        })
    }

    pub fn add(&self, key: &[u8], enc: u8, value: &[u8], expires: u64) -> Result<bool> {
        let (h, now, max) = (self.hash(key), time::now_ms(), self.geo.max_item_size);
        self.with_shard(h, Wait::Bounded, |g| {
            g.set(&Item { key, hash: h, enc, value, expires }, SetMode::Add, now, max)
        })
    }

    /// Pin a live key against eviction (`ShardGuard::pin`).
    pub fn pin(&self, key: &[u8]) -> Result<bool> {
        let (h, now) = (self.hash(key), time::now_ms());
        self.with_shard(h, Wait::Bounded, |g| g.pin(key, h, now))
    }

    pub fn delete(&self, key: &[u8]) -> Result<bool> {
        let (h, now) = (self.hash(key), time::now_ms());
        self.with_shard(h, Wait::Bounded, |g| g.delete(key, h, now))
    }

    /// Store (enc, value) with `expires` only if `key` is live with the value
    /// `expected` (encoding, bytes), atomically (`ShardGuard::compare_and_set`).
    pub fn compare_and_set(
        &self,
        key: &[u8],
        expected: (u8, &[u8]),
        enc: u8,
        value: &[u8],
        expires: u64,
    ) -> Result<bool> {
        let (h, now, max) = (self.hash(key), time::now_ms(), self.geo.max_item_size);
        self.with_shard(h, Wait::Bounded, |g| {
            g.compare_and_set(&Item { key, hash: h, enc, value, expires }, expected, now, max)
        })
    }

    /// Delete `key` only if it is live with the value `expected` (encoding, bytes).
    pub fn compare_and_delete(&self, key: &[u8], expected: (u8, &[u8])) -> Result<bool> {
        let (h, now) = (self.hash(key), time::now_ms());
        self.with_shard(h, Wait::Bounded, |g| g.compare_and_delete(key, h, expected, now))
    }

    pub fn touch(&self, key: &[u8], expires: u64) -> Result<bool> {
        let (h, now) = (self.hash(key), time::now_ms());
        self.with_shard(h, Wait::Bounded, |g| g.touch(key, h, expires, now))
    }

    /// Add `delta` to an integer of any size (`ShardGuard::incr`: the exact
    /// sum, never an overflow; `create` stores `delta` into a missing key).
    pub fn incr(&self, key: &[u8], delta: &Int, create: bool) -> Result<Int> {
        let (h, now, max) = (self.hash(key), time::now_ms(), self.geo.max_item_size);
        self.with_shard(h, Wait::Bounded, |g| g.incr(key, h, delta, create, now, max))
    }

    pub fn contains(&self, key: &[u8]) -> Result<bool> {
        let (h, now) = (self.hash(key), time::now_ms());
        self.with_shard(h, Wait::Bounded, |g| g.contains(key, h, now))
    }

    pub fn ttl(&self, key: &[u8]) -> Result<Ttl> {
        let (h, now) = (self.hash(key), time::now_ms());
        self.with_shard(h, Wait::Bounded, |g| g.ttl(key, h, now))
    }

    /// Group the positions of `keys` by shard so a batch takes each lock once.
    pub fn plan<K: AsRef<[u8]>>(&self, keys: &[K]) -> Vec<(usize, u64, usize)> {
        let mut plan: Vec<(usize, u64, usize)> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let h = self.hash(k.as_ref());
                (self.shard_of(h), h, i)
            })
            .collect();
        plan.sort_unstable_by_key(|p| p.0);
        plan
    }

    /// Run `f(guard, hash, position)` for every planned key, one lock pass per
    /// shard. A shard whose lock times out yields `Err(LockTimeout)` for its keys
    /// through `on_err`.
    pub fn batch(
        &self,
        plan: &[(usize, u64, usize)],
        mut f: impl FnMut(&mut ShardGuard, u64, usize) -> Result<()>,
        mut on_err: impl FnMut(usize, &Error),
    ) {
        for group in plan.chunk_by(|a, b| a.0 == b.0) {
            let r = self.with_shard_index(group[0].0, Wait::Bounded, &mut |g: &mut ShardGuard| {
                for &(_, h, i) in group {
                    f(g, h, i)?;
                }
                Ok(())
            });
            match r {
                Err(Error::Moved) => {
                    // Moved between plan and lock: each key on the successor.
                    for &(_, h, i) in group {
                        let r = self.successor().and_then(|s| s.with_shard(h, Wait::Bounded, |g| f(g, h, i)));
                        if let Err(e) = r {
                            on_err(i, &e);
                        }
                    }
                }
                Err(e) => {
                    for &(_, _, i) in group {
                        on_err(i, &e);
                    }
                }
                Ok(()) => {}
            }
        }
    }

    /// Values for `keys`, in order: lock-free where possible, then one lock
    /// pass per shard for the rest. Also returns how many keys are `None`
    /// because their shard's lock timed out (not misses); other errors fail.
    pub fn get_many<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<(Vec<Option<Value>>, usize)> {
        if self.moved() {
            return self.successor()?.get_many(keys);
        }
        let now = &LazyNow::new();
        let mut out = vec![None; keys.len()];
        let mut plan = self.plan(keys);
        plan.retain(|&(s, h, i)| {
            match self.shards.shard(s).get_optimistic(keys[i].as_ref(), h, now, |e, v| (e, v.to_vec())) {
                Some(r) => {
                    out[i] = r;
                    false
                }
                None => true,
            }
        });
        if self.moved() {
            // Moved during the lock-free pass: what it read may be stale.
            return self.successor()?.get_many(keys);
        }
        let (mut err, mut timed_out) = (None, 0);
        self.batch(
            &plan,
            |g, h, i| {
                out[i] = g.get(keys[i].as_ref(), h, now, |e, v| (e, v.to_vec()))?;
                Ok(())
            },
            // A timed-out shard's keys stay None (`f` never ran for them).
            |_, e| match e {
                Error::LockTimeout => timed_out += 1,
                e => err = Some(e.clone()),
            },
        );
        match err {
            None => Ok((out, timed_out)),
            Some(e) => Err(e),
        }
    }

    /// A scan of the keys starting with `prefix`, at most `count` log steps
    /// per lock (`scan.rs`: exactly once for keys live throughout).
    pub fn scan(&self, prefix: &[u8], count: usize) -> KeyScan {
        KeyScan::new(prefix, count)
    }

    /// The next keys of `scan` (never empty), or `None` at its end; each
    /// slice under one shard lock, waiting at most the lock timeout.
    pub fn scan_next(&self, scan: &mut KeyScan) -> Result<Option<Vec<Vec<u8>>>> {
        if scan.forwarded() || self.moved() {
            // The shards changed under the scan: it starts over on the
            // successor (every key live throughout still comes, some twice).
            if !scan.forwarded() {
                scan.restart_forwarded();
            }
            return self.successor()?.scan_next(scan);
        }
        let r = scan.next_keys(&self.shards, Some(self.lock_timeout))?;
        if self.moved() {
            scan.restart_forwarded();
            return self.successor()?.scan_next(scan);
        }
        Ok(r)
    }

    /// Write every live item to the file `path` (`snapshot.rs`: streaming,
    /// bounded lock holds, an atomic rename at the end).
    pub fn dump(&self, path: &std::path::Path) -> Result<DumpStats> {
        let r = snapshot::dump(self, path)?;
        if self.moved() {
            return self.successor()?.dump(path);
        }
        Ok(r)
    }

    /// Store the items of the snapshot `path` (`snapshot.rs`: the whole file
    /// checked before anything is written; the most recent that fit).
    pub fn load(&self, path: &std::path::Path) -> Result<LoadStats> {
        if self.moved() {
            return self.successor()?.load(path);
        }
        // Stores go through `batch`, which forwards a moved shard's keys.
        snapshot::load(self, path)
    }

    /// Whether this process created the segment when it opened it (a fresh,
    /// empty cache: after a reboot, the time to load a snapshot).
    pub fn created(&self) -> bool {
        self.seg.created()
    }

    /// Drop every item in every shard.
    pub fn clear(&self) -> Result<()> {
        for i in 0..self.shards.count() {
            let r = self.with_shard_index(i, Wait::Bounded, &mut |g: &mut ShardGuard| {
                g.wipe();
                Ok(())
            });
            match r {
                // Shards cleared here before the copy are empty there too.
                Err(Error::Moved) => return self.successor()?.clear(),
                r => r?,
            }
        }
        Ok(())
    }

    pub fn stats(&self) -> Stats {
        let mut s = Stats { segment_size: self.geo.total_size, shards: self.geo.nshards, ..Stats::default() };
        self.shards.add_stats(&mut s);
        s
    }

    /// Each shard's stats alone (`Shards::shard_stats`), for `shmcache top`.
    pub fn shard_stats(&self) -> Vec<Stats> {
        self.shards.shard_stats()
    }

    /// Check every shard (`Shards::verify`: a damaged shard is wiped and
    /// reported as `Error::Corrupt`): (items, bytes).
    pub fn verify(&self) -> Result<(u64, u64)> {
        if self.moved() {
            return self.successor()?.verify();
        }
        self.shards.verify(Some(self.lock_timeout))
    }

    /// Test/diagnostic access to a shard.
    pub fn shard(&self, i: usize) -> &Shard {
        self.shards.shard(i)
    }
}
