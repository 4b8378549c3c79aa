//! Verification of one shard (tests, `shmcache verify`, the fuzzing
//! harnesses): a walk of the whole log, checked against the shard header and
//! the index with the same checks reclaiming and sweeping make.

use super::{Shard, ShardGuard};
use crate::error::{Error, Result};
use crate::shard::log::{skippable, LogWalk, Step, KIND_LIVE};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

impl Shard {
    /// Check the whole shard under its lock (`ShardGuard::verify`). A shard
    /// found damaged is wiped, as `with_lock` wipes it, and the damage is
    /// still reported (`Error::Corrupt`), so that a check says what it found.
    pub fn verify(&self, timeout: Option<Duration>) -> Result<(u64, u64)> {
        let mut g = self.lock(timeout)?;
        let r = g.verify();
        if let Err(Error::Corrupt(_)) = r {
            g.wipe();
        }
        r
    }
}

impl ShardGuard<'_> {
    /// Walk the whole log and check it against the header and the index
    /// (tests and diagnostics): returns (live items, live bytes).
    pub fn verify(&self) -> Result<(u64, u64)> {
        let log = self.log();
        let size = log.size();
        let h = self.h();
        let (head, tail) = (h.head.load(Relaxed), h.tail.load(Relaxed));
        // The sweep restarts from the tail when its cursor fell behind it, but
        // trusts a cursor up to the head to sit on a record boundary (and one
        // past the head would land inside records once the head moves on).
        let cursor = h.cursor.load(Relaxed);
        let mut cursor_ok = cursor < tail || cursor == head;
        let (mut items, mut bytes) = (0u64, 0u64);
        // The same checks reclaiming and sweeping make (one `LogWalk`), so
        // that a shard that passes here cannot fail them later.
        for step in LogWalk::new(log, tail, head) {
            let step = step?;
            cursor_ok |= step.at() == cursor;
            let Step::Rec { phys, hdr: rh, len, .. } = step else { continue };
            if rh.kind == KIND_LIVE {
                log.check_live(phys, &rh)?;
                self.shard.index().slot_of(rh.hash, phys)?;
                items += 1;
                bytes += len;
            } else if !skippable(&rh, phys, len, size) {
                return Err(Error::Corrupt("unknown record kind"));
            }
        }
        if !cursor_ok {
            return Err(Error::Corrupt("sweep cursor inside a record"));
        }
        if items != h.items.load(Relaxed) || bytes != h.live_bytes.load(Relaxed) {
            return Err(Error::Corrupt("header counts disagree with the log"));
        }
        // Every live record has its slot (above); no slot may point elsewhere.
        if self.shard.index().occupied() != items {
            return Err(Error::Corrupt("index entries without a live record"));
        }
        Ok((items, bytes))
    }
}
