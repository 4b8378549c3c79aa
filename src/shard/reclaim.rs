//! Log housekeeping of one shard, under its lock: placing a record at the
//! head (`alloc`), reclaiming the record at the tail (`reclaim_one`: skip,
//! expire, move or evict it, as `eviction.rs` decides) and the amortised
//! expiry sweep (`sweep`).

use super::ShardGuard;
use crate::error::{Error, Result};
use crate::shard::eviction::{self, Action, Budget, Tail, MOVE_BUDGET};
use crate::shard::log::{skippable, LogWalk, Step, FLAG_PINNED, KIND_DEAD, KIND_LIVE};
use crate::shard::stats::Counter;
use crate::time;
use std::sync::atomic::Ordering::{Relaxed, Release};

/// Items examined by the amortised expiry sweep on each write.
pub(super) const SWEEP_PER_WRITE: u32 = 4;

impl ShardGuard<'_> {
    /// Find `n` contiguous bytes at the head, reclaiming from the tail.
    pub(super) fn alloc(&mut self, n: u64, now: u64) -> Result<u64> {
        let log = self.log();
        let size = log.size();
        let mut budget = Budget::PER_WRITE;
        // Each step reclaims or moves one record; a full lap (plus the
        // moves of both budgets) is the most needed.
        for _ in 0..(size / 8 + 2 * MOVE_BUDGET as u64 + 2) {
            let h = self.h();
            let (head, tail) = (h.head.load(Relaxed), h.tail.load(Relaxed));
            let skip = log.skip_for(head, n);
            let free = size - (head - tail);
            let index_full = h.items.load(Relaxed) >= self.shard.max_items;
            if !index_full && free >= skip + n + self.shard.reserve {
                log.write_wrap(head, skip);
                let at = log.phys(head + skip);
                // Headers first, then the head passes them (log.rs's protocol).
                log.write_pending(at, n);
                super::crash_point(1);
                h.head.store(head + skip + n, Release);
                return Ok(at);
            }
            self.reclaim_one(now, &mut budget, index_full)?;
        }
        Err(Error::Corrupt("allocator made no progress"))
    }

    /// Process the record at the tail: skip, expire, move or evict it.
    fn reclaim_one(&mut self, now: u64, budget: &mut Budget, force: bool) -> Result<()> {
        let log = self.log();
        let size = log.size();
        let h = self.h();
        let (head, tail) = (h.head.load(Relaxed), h.tail.load(Relaxed));
        let mut walk = LogWalk::new(log, tail, head);
        let (phys, rh, len) = match walk.next().ok_or(Error::Corrupt("log empty but no room"))?? {
            Step::Gap { len, .. } => {
                h.tail.store(tail + len, Relaxed);
                return Ok(());
            }
            Step::Rec { phys, hdr, len, .. } => (phys, hdr, len),
        };
        if rh.kind == KIND_LIVE {
            log.check_live(phys, &rh)?;
            let visited = log.visited(phys).load(Relaxed) != 0;
            let skip = log.skip_for(head, len);
            let room = size - (head - tail) >= skip + len;
            let slot = self.shard.index().slot_of(rh.hash, phys)?;
            let full = eviction::memory_full(h.live_bytes.load(Relaxed), size);
            let tail_item = Tail { expires_ms: rh.expires, visited, pinned: rh.flags & FLAG_PINNED != 0 };
            match eviction::decide(tail_item, now, *budget, room, force, full) {
                action @ (Action::Keep | Action::SecondChance | Action::KeepPinned) => {
                    if action == Action::KeepPinned {
                        budget.pinned -= 1;
                    } else {
                        budget.moves -= 1;
                    }
                    log.write_wrap(head, skip);
                    let to = log.phys(head + skip);
                    log.move_record(phys, to, len);
                    super::crash_point(7);
                    if action == Action::SecondChance {
                        log.visited(to).store(0, Relaxed);
                    }
                    self.shard.index().repoint(slot, rh.hash, to);
                    // The copy is complete before the head passes it.
                    h.head.store(head + skip + len, Release);
                    super::crash_point(8);
                    // The original, about to fall behind the tail, is DEAD:
                    // no stale LIVE header is left in free space.
                    log.set_kind(phys, KIND_DEAD);
                }
                Action::Expire => self.unlink(slot, phys, &rh, Some(Counter::Expirations))?,
                Action::Evict => self.unlink(slot, phys, &rh, Some(Counter::Evictions))?,
            }
        } else if !skippable(&rh, phys, len, size) {
            return Err(Error::Corrupt("unknown record kind at tail"));
        }
        h.tail.store(tail + len, Relaxed);
        Ok(())
    }

    /// Examine a few records after the sweep cursor and drop expired ones,
    /// so expired items are reclaimed even when nobody reads them.
    pub(super) fn sweep(&mut self, now: u64, count: u32) -> Result<()> {
        let log = self.log();
        let h = self.h();
        let (head, tail) = (h.head.load(Relaxed), h.tail.load(Relaxed));
        let mut cur = h.cursor.load(Relaxed);
        if cur < tail || cur > head {
            cur = tail;
        }
        let mut walk = LogWalk::new(log, cur, head);
        let mut lap_done = false;
        for _ in 0..count {
            // (A gap at the region's end counts as one of the `count` steps.)
            let Some(step) = walk.next() else {
                lap_done = true; // at the head: start again from the tail
                break;
            };
            if let Step::Rec { phys, hdr: rh, .. } = step? {
                if rh.kind == KIND_LIVE && time::expired(rh.expires, now) {
                    log.check_live(phys, &rh)?;
                    let slot = self.shard.index().slot_of(rh.hash, phys)?;
                    self.unlink(slot, phys, &rh, Some(Counter::Expirations))?;
                }
            }
        }
        h.cursor.store(if lap_done { tail } else { walk.pos() }, Relaxed);
        Ok(())
    }
}
