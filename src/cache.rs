//! `ShmCache`: a segment plus its shards and a lock timeout. This module
//! opens and attaches it, finds a key's shard, takes shard locks (waiting
//! as the caller allows; a moved segment's calls forwarded to its
//! successor). Below it: `shards.rs` (key to shard, what is done to every
//! shard), the operations on one key and on the whole cache (`ops.rs`), on
//! many keys (`batch.rs`), and key iteration (`keyscan.rs`). The features
//! above the cache (snapshots, migration, a tier's words) add their own
//! `impl ShmCache` blocks in their modules.

mod batch;
pub(crate) mod keyscan;
mod ops;
pub(crate) mod shards;

use crate::error::{Error, Result};
use crate::mem::init::{init_segment, seed_from_os};
use crate::mem::layout::{Config, Geometry, SegHeader};
use crate::mem::segment::{self, Fit, Segment};
use crate::shard::{Shard, ShardGuard};
use shards::Shards;
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
    /// Any lock timeout is taken, brought within 1 ms to 60 s.
    pub fn attach_existing(location: &str, lock_timeout: Duration) -> Result<ShmCache> {
        let lock_timeout = lock_timeout.clamp(Duration::from_millis(1), Duration::from_secs(60));
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

    /// The shard that owns `hash`.
    #[inline]
    pub fn shard_for(&self, hash: u64) -> &Shard {
        self.shards.shard(self.shard_of(hash))
    }

    /// Whether this process created the segment when it opened it (a fresh,
    /// empty cache: after a reboot, the time to load a snapshot).
    pub fn created(&self) -> bool {
        self.seg.created()
    }

    /// Test/diagnostic access to a shard.
    pub fn shard(&self, i: usize) -> &Shard {
        self.shards.shard(i)
    }
}
