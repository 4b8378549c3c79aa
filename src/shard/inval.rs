//! A tiered cache's fill protection, per shard: invalidation stripes.
//!
//! A worker that misses L1 reads the key's stripe (lock-free), reads L2,
//! then stores the value only if, under the shard lock, the stripe is
//! unchanged (`ShardGuard::set_if_stripe`). Every invalidation bumps the
//! stripe of its key under the same lock (`ShardGuard::invalidate`), so an
//! invalidation that lands between the L2 read and the fill makes the fill
//! a no-op. Keys share a stripe (`STRIPES` per shard): a collision only
//! drops a fill, never keeps a stale one. The segment-wide epoch
//! (`tier.rs`) covers flushes.

use super::ops::{Item, SetMode};
use super::{Shard, ShardGuard};
use crate::error::Result;
use std::sync::atomic::Ordering::{Acquire, Release};

/// Stripes per shard (the 64 bytes left at the end of the shard header).
pub const STRIPES: usize = 8;

#[inline]
pub fn stripe_of(hash: u64) -> usize {
    // Bits used neither by the shard choice (the high 32) nor, mostly, by
    // the index position (the low bits).
    ((hash >> 24) as usize) % STRIPES
}

impl Shard {
    /// The current value of `hash`'s invalidation stripe (lock-free).
    #[inline]
    pub fn inval_stripe(&self, hash: u64) -> u64 {
        self.header().inval[stripe_of(hash)].load(Acquire)
    }
}

impl ShardGuard<'_> {
    /// Delete `key` (if present) and bump its stripe, so that a fill that
    /// read its stripe before now is refused. Returns whether it was present.
    pub fn invalidate(&mut self, key: &[u8], hash: u64, now: u64) -> Result<bool> {
        let had = self.delete(key, hash, now)?;
        self.h().inval[stripe_of(hash)].fetch_add(1, Release);
        Ok(had)
    }

    /// Store `item` only if `hash`'s stripe still reads `stripe` (nothing
    /// invalidated it since the fill read it). Returns whether it stored.
    pub fn set_if_stripe(&mut self, item: &Item, stripe: u64, now: u64, max_item: u64) -> Result<bool> {
        if self.h().inval[stripe_of(item.hash)].load(Acquire) != stripe {
            return Ok(false);
        }
        self.set(item, SetMode::Set, now, max_item)
    }
}
