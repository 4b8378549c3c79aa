//! `ShmCache`'s operations on many keys: grouped by shard, so that each
//! shard's lock is taken once per batch.

use super::ops::copy;
use super::{ShmCache, Value, Wait};
use crate::error::{Error, Result};
use crate::shard::ops::{Item, SetMode};
use crate::shard::ShardGuard;
use crate::time::{self, LazyNow};

impl ShmCache {
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
        plan.retain(|&(s, h, i)| match self.shards.shard(s).get_optimistic(keys[i].as_ref(), h, now, copy) {
            Some(r) => {
                out[i] = r;
                false
            }
            None => true,
        });
        if self.moved() {
            // Moved during the lock-free pass: what it read may be stale.
            return self.successor()?.get_many(keys);
        }
        let (mut err, mut timed_out) = (None, 0);
        self.batch(
            &plan,
            |g, h, i| {
                out[i] = g.get(keys[i].as_ref(), h, now, copy)?;
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

    /// Run `f(guard, key, hash)` for each of `keys` (one lock pass per
    /// shard, as `batch`): how many times it returned true, or the first
    /// error (a shard it could not run in: its lock timed out), after every
    /// other shard has been done.
    pub(crate) fn count_many<K: AsRef<[u8]>>(
        &self,
        keys: &[K],
        mut f: impl FnMut(&mut ShardGuard, &[u8], u64) -> Result<bool>,
    ) -> Result<usize> {
        let plan = self.plan(keys);
        let (mut n, mut err) = (0, None);
        self.batch(
            &plan,
            |g, h, i| {
                n += f(g, keys[i].as_ref(), h)? as usize;
                Ok(())
            },
            |_, e| {
                err.get_or_insert_with(|| e.clone());
            },
        );
        err.map_or(Ok(n), Err)
    }

    /// Store `values[i]` (encoding, bytes) under `keys[i]` until `expires`,
    /// one lock pass per shard: the positions not stored, in order (too
    /// large for MAX_ITEM_SIZE, or their shard's lock timed out).
    pub fn set_many<K: AsRef<[u8]>>(&self, keys: &[K], values: &[(u8, &[u8])], expires: u64, now: u64) -> Vec<usize> {
        let max = self.geo.max_item_size;
        let plan = self.plan(keys);
        let (mut failed, mut locked_out) = (Vec::new(), Vec::new());
        self.batch(
            &plan,
            |g, h, i| {
                let (enc, value) = values[i];
                match g.set(&Item { key: keys[i].as_ref(), hash: h, enc, value, expires }, SetMode::Set, now, max) {
                    Err(Error::TooLarge { .. }) => {
                        failed.push(i);
                        Ok(())
                    }
                    r => r.map(|_| ()),
                }
            },
            |i, _| locked_out.push(i),
        );
        failed.extend(locked_out);
        failed.sort_unstable();
        failed.dedup();
        failed
    }

    /// Delete many keys, one lock pass per shard: how many existed. An
    /// error (a shard's lock timed out) fails the call.
    pub fn delete_many<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<usize> {
        let now = time::now_ms();
        self.count_many(keys, |g, k, h| g.delete(k, h, now))
    }
}
