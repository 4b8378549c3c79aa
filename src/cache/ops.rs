//! `ShmCache`'s operations on one key (each under its shard's lock, a
//! read lock-free when it can be) and on the whole cache (clear, stats,
//! verify).

use super::{ShmCache, Value, Wait};
use crate::error::{Error, Result};
use crate::shard::encoding::Int;
use crate::shard::ops::{Item, SetMode, Ttl};
use crate::shard::stats::Stats;
use crate::shard::ShardGuard;
use crate::time::{self, LazyNow, Time};

impl ShmCache {
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
}
