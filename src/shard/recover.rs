//! Recovery of a shard whose writer died mid-write (the lock came back
//! `EOWNERDEAD` with `seq` odd): the index and the counts are rebuilt from
//! the log, so the items the dead writer was not changing survive. Dropping
//! the whole shard instead would lose live data other processes rely on (a
//! held `cache.lock()` among them: its loss would let a second process in).
//!
//! Sound because of the log's write protocol (`log.rs`): whatever instruction
//! the writer was killed at, every record start in [tail, head) holds a
//! header of the current lap and every LIVE record there is complete. The
//! cut-short operation leaves at most one key with two LIVE records (an
//! overwrite: old and new; a move: original and copy); the later one in the
//! log is the newer, and wins. A PENDING record (a new value being written,
//! or a value being changed in place) is dropped: that key reads as a miss or
//! its old value, never as a torn one. Everything read is bounds-checked as
//! for any walk (`LogWalk`); anything unexpected ends the walk there, and
//! records past it are given up (head moves back), which only loses items.

use super::ShardGuard;
use crate::shard::log::{skippable, LogWalk, Step, KIND_DEAD, KIND_LIVE, KIND_PENDING};
use crate::shard::stats::Counter;
use crate::time;
use std::sync::atomic::Ordering::Relaxed;

impl ShardGuard<'_> {
    /// Rebuild the shard from its log (see the module). Falls back to a
    /// wipe when the header's head and tail are not even plausible.
    pub(super) fn recover(&mut self, now: u64) {
        self.begin_write();
        let log = self.log();
        let size = log.size();
        let h = self.h();
        let (head, tail) = (h.head.load(Relaxed), h.tail.load(Relaxed));
        if head < tail || head - tail > size {
            self.wipe();
            return;
        }
        let index = self.shard.index();
        index.clear();
        let (mut items, mut bytes) = (0u64, 0u64);
        let mut end = head;
        let mut walk = LogWalk::new(log, tail, head);
        while let Some(step) = walk.next() {
            if items == 8 {
                super::crash_point(13); // a recovery killed half-way is redone by the next locker
            }
            let Ok(step) = step else {
                end = walk.pos(); // the walk stops before the bad record
                break;
            };
            let Step::Rec { at, phys, hdr: rh, len } = step else { continue };
            match rh.kind {
                KIND_LIVE => {
                    if log.check_live(phys, &rh).is_err() {
                        log.set_kind(phys, KIND_DEAD);
                        continue;
                    }
                    if time::expired(rh.expires, now) {
                        log.set_kind(phys, KIND_DEAD);
                        h.counters.bump_locked(Counter::Expirations);
                        continue;
                    }
                    match self.shard.find(log.key(phys, &rh), rh.hash) {
                        Ok(Some((slot, old, oldh))) => {
                            // The cut-short overwrite or move: the later record wins.
                            log.set_kind(old, KIND_DEAD);
                            index.repoint(slot, rh.hash, phys);
                            bytes = bytes - oldh.rec_len as u64 + len;
                        }
                        Ok(None) if items < self.shard.max_items => match index.insert(rh.hash, phys) {
                            Ok(()) => {
                                items += 1;
                                bytes += len;
                            }
                            Err(_) => log.set_kind(phys, KIND_DEAD),
                        },
                        _ => log.set_kind(phys, KIND_DEAD),
                    }
                }
                KIND_PENDING => log.set_kind(phys, KIND_DEAD),
                _ if skippable(&rh, phys, len, size) => {}
                _ => {
                    end = at;
                    break;
                }
            }
        }
        if end != head {
            h.head.store(end, Relaxed);
            // Positions past the new head are void: scans restart the shard.
            h.generation.fetch_add(1, Relaxed);
        }
        h.items.store(items, Relaxed);
        h.live_bytes.store(bytes, Relaxed);
        h.cursor.store(tail, Relaxed);
    }
}
