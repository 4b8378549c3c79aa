//! The hash index of one shard: open addressing with linear probing and
//! backward-shift deletion (no tombstones, so probe chains never rot).
//!
//! A slot is a `u64`: the low 32 bits of the key's hash (the tag, whose low
//! bits are also the home slot) and the item's log offset / 8 + 1 (0 = empty).
//! Slots live in shared memory and are untrusted: every offset is bounds
//! checked by the caller before use and every probe loop is bounded.

use crate::error::{Error, Result};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[inline]
pub fn entry(hash: u64, off: u64) -> u64 {
    ((hash as u32 as u64) << 32) | (off / 8 + 1)
}
/// The log offset of a non-empty entry. Slots are untrusted: a damaged one
/// (tag set, offset part 0) must not underflow (a panic with overflow checks);
/// it wraps to an offset `Log::hdr` rejects as out of bounds.
#[inline]
pub fn entry_off(e: u64) -> u64 {
    (e & 0xffff_ffff).wrapping_sub(1).wrapping_mul(8)
}
#[inline]
fn entry_tag(e: u64) -> u32 {
    (e >> 32) as u32
}

pub struct Index<'a> {
    slots: &'a [AtomicU64],
    mask: usize,
}

impl<'a> Index<'a> {
    /// `slots.len()` must be a power of two.
    pub fn new(slots: &'a [AtomicU64]) -> Index<'a> {
        debug_assert!(slots.len().is_power_of_two());
        Index { slots, mask: slots.len() - 1 }
    }

    #[inline]
    fn home(&self, tag: u32) -> usize {
        tag as usize & self.mask
    }

    /// Visit the entries whose tag matches `hash`, in probe order, until `f`
    /// returns `Some` or an empty slot ends the chain. `f` gets (slot, offset).
    #[inline]
    pub fn find<R>(&self, hash: u64, mut f: impl FnMut(usize, u64) -> Result<Option<R>>) -> Result<Option<R>> {
        let tag = hash as u32;
        let mut i = self.home(tag);
        for _ in 0..self.slots.len() {
            let e = self.slots[i].load(Relaxed);
            if e == 0 {
                return Ok(None);
            }
            if entry_tag(e) == tag {
                if let Some(r) = f(i, entry_off(e))? {
                    return Ok(Some(r));
                }
            }
            i = (i + 1) & self.mask;
        }
        Err(Error::Corrupt("index has no empty slot"))
    }

    /// The slot that points at `off` for `hash`.
    pub fn slot_of(&self, hash: u64, off: u64) -> Result<usize> {
        let want = entry(hash, off);
        let tag = hash as u32;
        let mut i = self.home(tag);
        for _ in 0..self.slots.len() {
            let e = self.slots[i].load(Relaxed);
            if e == want {
                return Ok(i);
            }
            if e == 0 {
                break;
            }
            i = (i + 1) & self.mask;
        }
        Err(Error::Corrupt("live item missing from index"))
    }

    pub fn insert(&self, hash: u64, off: u64) -> Result<()> {
        let mut i = self.home(hash as u32);
        for _ in 0..self.slots.len() {
            if self.slots[i].load(Relaxed) == 0 {
                self.slots[i].store(entry(hash, off), Relaxed);
                return Ok(());
            }
            i = (i + 1) & self.mask;
        }
        Err(Error::Corrupt("index has no empty slot"))
    }

    /// Point an existing slot at a new offset (same key, so same hash).
    pub fn repoint(&self, slot: usize, hash: u64, off: u64) {
        self.slots[slot].store(entry(hash, off), Relaxed);
    }

    /// Empty `slot`, shifting later members of the probe chain back.
    pub fn remove(&self, slot: usize) -> Result<()> {
        let mut hole = slot;
        let mut j = slot;
        for _ in 0..self.slots.len() {
            j = (j + 1) & self.mask;
            let e = self.slots[j].load(Relaxed);
            if e == 0 {
                self.slots[hole].store(0, Relaxed);
                return Ok(());
            }
            let k = self.home(entry_tag(e));
            // Entry at j may move to the hole unless its home lies cyclically in (hole, j].
            let stays = if hole <= j { hole < k && k <= j } else { hole < k || k <= j };
            if !stays {
                self.slots[hole].store(e, Relaxed);
                hole = j;
            }
        }
        Err(Error::Corrupt("index has no empty slot"))
    }

    /// Number of non-empty slots (verification).
    pub fn occupied(&self) -> u64 {
        self.slots.iter().filter(|s| s.load(Relaxed) != 0).count() as u64
    }

    pub fn clear(&self) {
        for s in self.slots {
            s.store(0, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_find_remove_with_collisions() {
        let slots: Vec<AtomicU64> = (0..16).map(|_| AtomicU64::new(0)).collect();
        let ix = Index::new(&slots);
        // hashes 3, 19, 35 share home slot 3; 4 has home 4 (displaced).
        for (h, off) in [(3u64, 8u64), (19, 16), (4, 24), (35, 32)] {
            ix.insert(h, off).unwrap();
        }
        let find = |h: u64| ix.find(h, |_, off| Ok(Some(off))).unwrap();
        assert_eq!(find(19), Some(16));
        assert_eq!(find(4), Some(24));
        let s = ix.slot_of(3, 8).unwrap();
        ix.remove(s).unwrap();
        assert_eq!(find(3), None);
        assert_eq!(find(19), Some(16));
        assert_eq!(find(4), Some(24));
        assert_eq!(find(35), Some(32));
        let s = ix.slot_of(19, 16).unwrap();
        ix.remove(s).unwrap();
        assert_eq!(find(35), Some(32));
        assert_eq!(find(4), Some(24));
        // wrap-around chain
        ix.insert(15, 40).unwrap();
        ix.insert(31, 48).unwrap(); // goes to slot 0
        ix.remove(ix.slot_of(15, 40).unwrap()).unwrap();
        assert_eq!(find(31), Some(48));
    }

    #[test]
    fn full_garbage_index_is_an_error_not_a_hang() {
        let slots: Vec<AtomicU64> = (0..16).map(|_| AtomicU64::new(u64::MAX)).collect();
        let ix = Index::new(&slots);
        assert!(ix.find(1, |_, _| Ok(None::<()>)).is_err());
        assert!(ix.insert(1, 8).is_err());
        assert!(ix.remove(0).is_err());
    }
}
