//! The shards of one cache: which shard owns a key (the seeded hash) and
//! what is done to every shard (clear, verify, the sums of `stats`). Shared
//! by `ShmCache` (shards in a segment) and the fuzzing harness's `HeapCache`
//! (the same shards on heap memory).

use crate::error::{Error, Result};
use crate::shard::stats::{Stats, N_COUNTERS};
use crate::shard::{Shard, ShardGuard};
use std::time::Duration;

pub struct Shards {
    shards: Vec<Shard>,
    /// `shards.len()`, as the hash-to-shard mapping uses it.
    nshards: u64,
    /// The segment's hash seed (all processes must agree on it).
    seed: u64,
}

impl Shards {
    pub fn new(shards: Vec<Shard>, seed: u64) -> Shards {
        let nshards = shards.len() as u64;
        Shards { shards, nshards, seed }
    }

    #[inline]
    pub fn hash(&self, key: &[u8]) -> u64 {
        xxhash_rust::xxh3::xxh3_64_with_seed(key, self.seed)
    }

    /// The shard owning `hash`: its high 32 bits scaled to the shard count.
    #[inline]
    pub fn shard_of(&self, hash: u64) -> usize {
        (((hash >> 32) * self.nshards) >> 32) as usize
    }

    #[inline]
    pub fn shard(&self, i: usize) -> &Shard {
        &self.shards[i]
    }

    pub fn count(&self) -> usize {
        self.shards.len()
    }

    /// Run `f` on shard `idx` under its lock (`Shard::with_lock`: a shard `f`
    /// finds corrupt is wiped and `f` reruns on the clean shard). `timeout`
    /// None only tries the lock.
    #[inline]
    pub fn with_shard_index<R>(
        &self,
        idx: usize,
        timeout: Option<Duration>,
        f: &mut impl FnMut(&mut ShardGuard) -> Result<R>,
    ) -> Result<R> {
        self.shards[idx].with_lock(timeout, f)
    }

    /// Drop every item in every shard.
    pub fn clear(&self, timeout: Option<Duration>) -> Result<()> {
        for i in 0..self.shards.len() {
            self.with_shard_index(i, timeout, &mut |g: &mut ShardGuard| {
                g.wipe();
                Ok(())
            })?;
        }
        Ok(())
    }

    /// Check every shard's log against its index and counts (takes each
    /// lock): (items, bytes). Every damaged shard is wiped (`Shard::verify`)
    /// and the first damage found is returned as `Error::Corrupt`.
    pub fn verify(&self, timeout: Option<Duration>) -> Result<(u64, u64)> {
        let (mut items, mut bytes, mut damage) = (0, 0, None);
        for sh in &self.shards {
            match sh.verify(timeout) {
                Ok((i, b)) => {
                    items += i;
                    bytes += b;
                }
                Err(e @ Error::Corrupt(_)) => {
                    damage.get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
        }
        match damage {
            None => Ok((items, bytes)),
            Some(e) => Err(e),
        }
    }

    /// Add every shard's counts and counters to `s` (items, bytes used and
    /// capacity, counters; `bytes_free` follows from them).
    pub fn add_stats(&self, s: &mut Stats) {
        for sh in &self.shards {
            add_shard(s, sh);
        }
        s.bytes_free = s.bytes_capacity.saturating_sub(s.bytes_used);
    }

    /// Each shard's counts and counters on its own, in shard order (read
    /// like `add_stats`: no lock taken); `shards` is 1 and `segment_size` 0.
    pub fn shard_stats(&self) -> Vec<Stats> {
        self.shards
            .iter()
            .map(|sh| {
                let mut s = Stats { shards: 1, ..Stats::default() };
                add_shard(&mut s, sh);
                s.bytes_free = s.bytes_capacity.saturating_sub(s.bytes_used);
                s
            })
            .collect()
    }
}

/// Add one shard's counts and counters to `s`. Read without the lock from
/// shared memory: a damaged shard (wiped at its next lock) may hold any
/// values, so no sum may overflow (a panic with overflow checks). Counters
/// wrap like the counters themselves.
fn add_shard(s: &mut Stats, sh: &Shard) {
    s.items = s.items.saturating_add(sh.items());
    s.bytes_used = s.bytes_used.saturating_add(sh.live_bytes());
    s.bytes_capacity = s.bytes_capacity.saturating_add(sh.capacity());
    for c in 0..N_COUNTERS {
        s.counters[c] = s.counters[c].wrapping_add(sh.header().counters.get(c));
    }
}
