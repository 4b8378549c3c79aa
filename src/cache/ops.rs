//! `ShmCache`'s operations on one key (each under its shard's lock, a
//! read lock-free when it can be) and on the whole cache (clear, stats,
//! verify).
//!
//! Every operation on one key takes a [`Wait`]: `Wait::Bounded` waits for
//! a busy shard lock up to the lock timeout; `Wait::No` fails at once with
//! `Error::WouldBlock`, so that a caller that must not wait while holding
//! something else (the binding holds the GIL) can let go of it and call
//! again with `Wait::Bounded`. `get`, `set`, `add` and `pin` are the Rust
//! callers' shorthands: they wait (`Wait::Bounded`).

use super::{ShmCache, Value, Wait};
use crate::error::{Error, Result};
use crate::shard::encoding::Int;
use crate::shard::ops::{Item, SetMode, Ttl};
use crate::shard::stats::Stats;
use crate::shard::ShardGuard;
use crate::time::{self, LazyNow, Time};

/// A stored value's (encoding, bytes), copied out.
pub(super) fn copy(enc: u8, v: &[u8]) -> Value {
    (enc, v.to_vec())
}

/// After a store under the same lock: pin the stored item if asked
/// (`ShardGuard::pin`); whether it was stored.
fn pin_if(g: &mut ShardGuard, stored: bool, pin: bool, key: &[u8], hash: u64, now: u64) -> Result<bool> {
    Ok(stored && (!pin || g.pin(key, hash, now)?))
}

impl ShmCache {
    /// Read `key`: lock-free when possible, else under its shard's lock,
    /// waiting as `wait` allows. `racy` gets (encoding, value) of the
    /// lock-free attempt: bytes a writer may be changing, so its result is
    /// dropped unless the read validates (it may copy them, never decode
    /// them twice); `locked` gets them under the lock (stable).
    #[inline]
    pub fn get_with<R>(
        &self,
        key: &[u8],
        now: impl Time,
        wait: Wait,
        racy: impl FnOnce(u8, &[u8]) -> R,
        mut locked: impl FnMut(u8, &[u8]) -> R,
    ) -> Result<Option<R>> {
        let h = self.hash(key);
        if let Some(r) = self.shard_for(h).get_optimistic(key, h, now, racy) {
            // Checked after the read: not moved then, so read before the copy.
            if !self.moved() {
                return Ok(r);
            }
        }
        self.with_shard(h, wait, |g| g.get(key, h, now, &mut locked))
    }

    /// `get_with`, copying the (encoding, value) out, waiting.
    pub fn get(&self, key: &[u8]) -> Result<Option<Value>> {
        self.get_with(key, &LazyNow::new(), Wait::Bounded, copy, copy)
    }

    /// Read `key` and its expiry under the lock, as of `now`: `f` gets
    /// (encoding, value, absolute expiry or `NEVER`).
    pub fn get_entry<R>(
        &self,
        key: &[u8],
        now: u64,
        wait: Wait,
        mut f: impl FnMut(u8, &[u8], u64) -> R,
    ) -> Result<Option<R>> {
        let h = self.hash(key);
        self.with_shard(h, wait, |g| g.get_entry(key, h, now, &mut f))
    }

    /// Store `(encoding, value)` under `key` until `expires` (absolute ms;
    /// `NEVER`: no expiry), as `mode` says (`SetMode::Add`: only if absent);
    /// with `pin`, the stored item is also pinned against eviction (a held
    /// lock), under the same lock hold. Whether it stored. `now` is the
    /// caller's reading of `time::now_ms()` (the one `expires` came from:
    /// the clock is read once per call).
    #[allow(clippy::too_many_arguments)]
    pub fn store(
        &self,
        key: &[u8],
        (enc, value): (u8, &[u8]),
        expires: u64,
        now: u64,
        mode: SetMode,
        pin: bool,
        wait: Wait,
    ) -> Result<bool> {
        let (h, max) = (self.hash(key), self.geo.max_item_size);
        self.with_shard(h, wait, |g| {
            let stored = g.set(&Item { key, hash: h, enc, value, expires }, mode, now, max)?;
            pin_if(g, stored, pin, key, h, now)
        })
    }

    /// `store`, unpinned, waiting.
    pub fn set(&self, key: &[u8], enc: u8, value: &[u8], expires: u64) -> Result<bool> {
        self.store(key, (enc, value), expires, time::now_ms(), SetMode::Set, false, Wait::Bounded)
    }

    /// `store` only if absent, unpinned, waiting.
    pub fn add(&self, key: &[u8], enc: u8, value: &[u8], expires: u64) -> Result<bool> {
        self.store(key, (enc, value), expires, time::now_ms(), SetMode::Add, false, Wait::Bounded)
    }

    /// Pin a live key against eviction (`ShardGuard::pin`), waiting.
    pub fn pin(&self, key: &[u8]) -> Result<bool> {
        let (h, now) = (self.hash(key), time::now_ms());
        self.with_shard(h, Wait::Bounded, |g| g.pin(key, h, now))
    }

    pub fn delete(&self, key: &[u8], wait: Wait) -> Result<bool> {
        let (h, now) = (self.hash(key), time::now_ms());
        self.with_shard(h, wait, |g| g.delete(key, h, now))
    }

    /// Store `new` (encoding, bytes) until `expires` only if `key` is live
    /// with the value `expected` (encoding, bytes), atomically
    /// (`ShardGuard::compare_and_set`); `now` and `pin` as for `store`.
    #[allow(clippy::too_many_arguments)]
    pub fn compare_and_set(
        &self,
        key: &[u8],
        expected: (u8, &[u8]),
        (enc, value): (u8, &[u8]),
        expires: u64,
        now: u64,
        pin: bool,
        wait: Wait,
    ) -> Result<bool> {
        let (h, max) = (self.hash(key), self.geo.max_item_size);
        self.with_shard(h, wait, |g| {
            let stored = g.compare_and_set(&Item { key, hash: h, enc, value, expires }, expected, now, max)?;
            pin_if(g, stored, pin, key, h, now)
        })
    }

    /// Delete `key` only if it is live with the value `expected` (encoding, bytes).
    pub fn compare_and_delete(&self, key: &[u8], expected: (u8, &[u8]), wait: Wait) -> Result<bool> {
        let (h, now) = (self.hash(key), time::now_ms());
        self.with_shard(h, wait, |g| g.compare_and_delete(key, h, expected, now))
    }

    /// Give a live key the expiry `expires` (`NEVER`: none); `now` as for `store`.
    pub fn touch(&self, key: &[u8], expires: u64, now: u64, wait: Wait) -> Result<bool> {
        let h = self.hash(key);
        self.with_shard(h, wait, |g| g.touch(key, h, expires, now))
    }

    /// Add `delta` to an integer of any size (`ShardGuard::incr`: the exact
    /// sum, never an overflow; `create` stores `delta` into a missing key).
    pub fn incr(&self, key: &[u8], delta: &Int, create: bool, wait: Wait) -> Result<Int> {
        let (h, now, max) = (self.hash(key), time::now_ms(), self.geo.max_item_size);
        self.with_shard(h, wait, |g| g.incr(key, h, delta, create, now, max))
    }

    /// Live and unexpired? Counts neither a hit nor a miss.
    pub fn contains(&self, key: &[u8], wait: Wait) -> Result<bool> {
        let (h, now) = (self.hash(key), time::now_ms());
        self.with_shard(h, wait, |g| g.contains(key, h, now))
    }

    pub fn ttl(&self, key: &[u8], wait: Wait) -> Result<Ttl> {
        let (h, now) = (self.hash(key), time::now_ms());
        self.with_shard(h, wait, |g| g.ttl(key, h, now))
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
