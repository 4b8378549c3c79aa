//! One slice of a key scan under the shard's lock (`scan.rs` holds the scan
//! itself: the shards in order, the keys already returned, the bounds).
//!
//! A scan walks the log by logical position from the tail towards the head.
//! Positions only grow and records are only ever written at the head, so the
//! records between the tail and the head keep their boundaries from one lock
//! to the next (the sweep cursor relies on the same): a position the walk
//! stopped at is still a record boundary while the tail has not passed it
//! and the shard was not wiped (its `generation` unchanged). Read only: the
//! walk changes nothing (no visited bit, no expiry reclaimed), so it needs no
//! `begin_write`.

use super::ShardGuard;
use crate::error::{Error, Result};
use crate::shard::log::{skippable, LogWalk, Step, FLAG_PINNED, KIND_LIVE};
use crate::time;
use std::sync::atomic::Ordering::Relaxed;

/// Where a scan stands in one shard: a logical log position, valid in the
/// shard's `generation` it was taken in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanPos {
    pub pos: u64,
    pub generation: u64,
}

/// A live, unexpired record a slice walked over (borrowed from shared
/// memory, valid for the callback only).
#[derive(Debug, Clone, Copy)]
pub struct Walked<'a> {
    pub key: &'a [u8],
    pub value: &'a [u8],
    pub enc: u8,
    pub expires: u64,
    /// Hit since the tail last passed it (CLOCK's visited bit).
    pub visited: bool,
    /// Pinned against eviction (a held lock, `FLAG_PINNED`).
    pub pinned: bool,
    /// Its logical position, and the tail and head of this slice's lock hold.
    pub at: u64,
    pub tail: u64,
    pub head: u64,
}

/// What one slice walked.
#[derive(Debug, Clone, Copy)]
pub struct Slice {
    /// Where the next slice starts.
    pub next: ScanPos,
    /// Log steps walked (records of any kind, and the gap at the region's end).
    pub steps: usize,
    /// Bytes of log walked.
    pub bytes: u64,
    /// The walk reached the head observed under this lock.
    pub at_head: bool,
    /// Bytes between tail and head under this lock.
    pub occupied: u64,
}

impl ShardGuard<'_> {
    /// Walk at most `max_steps` steps of the log from `from`: or from the
    /// tail when `from` is `None`, the tail has passed it, or the shard was
    /// wiped since (another generation). `f` gets the key of every live,
    /// unexpired record walked. Every header is read through `LogWalk`'s
    /// bounds checks and every live record through `check_live`.
    pub fn scan_slice(
        &self,
        from: Option<ScanPos>,
        max_steps: usize,
        now: u64,
        mut f: impl FnMut(&[u8]),
    ) -> Result<Slice> {
        self.walk_slice(from, max_steps, now, |r| {
            f(r.key);
            true
        })
    }

    /// `scan_slice` for whole records (snapshots): `f` gets every live,
    /// unexpired record walked, and returns false to end the slice after it.
    pub fn walk_slice(
        &self,
        from: Option<ScanPos>,
        max_steps: usize,
        now: u64,
        mut f: impl FnMut(&Walked) -> bool,
    ) -> Result<Slice> {
        let log = self.log();
        let h = self.h();
        let (head, tail, generation) = (h.head.load(Relaxed), h.tail.load(Relaxed), h.generation.load(Relaxed));
        let start = match from {
            Some(p) if p.generation == generation && (tail..=head).contains(&p.pos) => p.pos,
            _ => tail,
        };
        let mut walk = LogWalk::new(log, start, head);
        let mut steps = 0;
        while steps < max_steps {
            let Some(step) = walk.next() else { break };
            steps += 1;
            if let Step::Rec { at, phys, hdr: rh, len } = step? {
                if rh.kind == KIND_LIVE {
                    log.check_live(phys, &rh)?;
                    if !time::expired(rh.expires, now) {
                        let r = Walked {
                            key: log.key(phys, &rh),
                            value: log.value(phys, &rh),
                            enc: rh.enc,
                            expires: rh.expires,
                            visited: log.visited(phys).load(Relaxed) != 0,
                            pinned: rh.flags & FLAG_PINNED != 0,
                            at,
                            tail,
                            head,
                        };
                        if !f(&r) {
                            break;
                        }
                    }
                } else if !skippable(&rh, phys, len, log.size()) {
                    return Err(Error::Corrupt("unknown record kind"));
                }
            }
        }
        let pos = walk.pos();
        Ok(Slice {
            next: ScanPos { pos, generation },
            steps,
            bytes: pos - start,
            at_head: pos >= head,
            occupied: head - tail,
        })
    }
}
