//! Key iteration (`KeyScan`): every key of the cache, in bounded slices,
//! each slice under one shard lock, no lock held between slices.
//!
//! The shards are scanned in order; in each, the log is walked by logical
//! position from the tail towards the head (`ShardGuard::scan_slice`), at
//! most `count` steps per slice. The keys already returned from the shard
//! are kept (its seen-set) and never returned again: a record moved to the
//! head by reclaim (compaction, second chance) or an overwrite of another
//! size appends the key again further on. If the tail passed the walk's
//! position between slices, the walk goes on from the tail (what it skipped
//! was reclaimed: dropped, or moved to the head, ahead of the walk); if the
//! shard was wiped (another `generation`), from the new tail, with the
//! seen-set kept. The shard is done when a slice reaches the head observed
//! under its lock.
//!
//! Guarantee: a key live and unexpired from the start of the scan to its end
//! is returned exactly once. Its record at the last slice of its shard lies
//! between that slice's tail and head; if the walk did not pass over it then,
//! it lies before where the previous slices stopped, and a record at a
//! position the walk has passed was already there when the walk passed it
//! (records are only written at the head, and a position keeps its record
//! until the tail passes it), live and unexpired, so an earlier slice
//! returned it. Keys set or deleted during the scan may or may not be
//! returned, never twice, unless the segment is migrated to another
//! geometry during the scan: the scan then starts over on the successor and
//! may return keys a second time (`KeyScan::restart_forwarded`).
//!
//! Termination under continuous writes: each shard may be walked, in
//! `count`-step slices, for `CHASE` times the bytes its log held at its first
//! slice; after that its next slice walks to the head in one pass under one
//! lock (at most the log's size: `data_size` bytes). Every slice that does not
//! reach the head walks `count` steps of at least 8 bytes each, so a shard
//! takes at most `CHASE * occupied / (8 * count) + 2` slices.

use super::shards::Shards;
use super::ShmCache;
use crate::error::Result;
use crate::shard::scan::ScanPos;
use crate::shard::ShardGuard;
use crate::time;
use std::collections::HashSet;
use std::time::Duration;

/// A shard's slices may walk this many times the bytes its log held at its
/// first slice before the shard is finished in one pass.
pub const CHASE: u64 = 2;

/// The state of one key scan (all of it in this process: a scan holds no
/// lock and nothing in shared memory between slices).
#[derive(Debug)]
pub struct KeyScan {
    prefix: Vec<u8>,
    count: usize,
    /// The shard being walked.
    shard: usize,
    /// Where the walk stands in it (`None`: not started).
    at: Option<ScanPos>,
    /// Bytes walked in it, and how many its slices may walk.
    walked: u64,
    budget: u64,
    /// Keys of this shard already returned.
    seen: HashSet<Box<[u8]>>,
    /// Steps of the last slice (tests: the bound of a slice).
    last_steps: usize,
    last_final: bool,
    /// The segment moved (`migrate.rs`) during the scan: it started over on
    /// the successor, where it goes on.
    forwarded: bool,
}

impl KeyScan {
    /// A scan of the keys starting with `prefix`, `count` (at least 1) log
    /// steps per slice.
    pub fn new(prefix: &[u8], count: usize) -> KeyScan {
        KeyScan {
            prefix: prefix.to_vec(),
            count: count.max(1),
            shard: 0,
            at: None,
            walked: 0,
            budget: 0,
            seen: HashSet::new(),
            last_steps: 0,
            last_final: false,
            forwarded: false,
        }
    }

    /// Whether the scan goes on in the successor of the segment it began in.
    pub fn forwarded(&self) -> bool {
        self.forwarded
    }

    /// Start over, on the successor of a segment that moved: keys already
    /// returned may come again (the one exception to "never twice").
    pub fn restart_forwarded(&mut self) {
        *self = KeyScan { forwarded: true, ..KeyScan::new(&self.prefix, self.count) };
    }

    /// Every shard walked to its head?
    pub fn done(&self, shards: &Shards) -> bool {
        self.shard >= shards.count()
    }

    /// The shard being walked and the position in it (tests).
    #[cfg(test)]
    pub(crate) fn position(&self) -> (usize, Option<ScanPos>) {
        (self.shard, self.at)
    }

    /// Log steps the last slice walked, and whether it was a shard's final
    /// pass (unbounded by `count`; see the module doc).
    pub fn last_slice(&self) -> (usize, bool) {
        (self.last_steps, self.last_final)
    }

    /// One slice: one lock of the current shard (a bounded wait of
    /// `timeout`; a shard found corrupt is wiped and the slice rerun, as for
    /// any operation). The keys it found (maybe none). On an error nothing
    /// advances: calling again retries the same slice.
    pub fn slice(&mut self, shards: &Shards, timeout: Option<Duration>) -> Result<Vec<Vec<u8>>> {
        if self.done(shards) {
            return Ok(Vec::new());
        }
        let now = time::now_ms();
        let last = self.at.is_some() && self.walked >= self.budget;
        let max_steps = if last { usize::MAX } else { self.count };
        let (prefix, seen, at) = (&self.prefix[..], &self.seen, self.at);
        let mut keys = Vec::new();
        let s = shards.with_shard_index(self.shard, timeout, &mut |g: &mut ShardGuard| {
            keys.clear();
            g.scan_slice(at, max_steps, now, |k| {
                if k.starts_with(prefix) && !seen.contains(k) {
                    keys.push(k.to_vec());
                }
            })
        })?;
        if self.at.is_none() {
            self.budget = CHASE * s.occupied;
        }
        (self.walked, self.last_steps, self.last_final) = (self.walked + s.bytes, s.steps, last);
        if s.at_head {
            self.shard += 1;
            (self.at, self.walked) = (None, 0);
            self.seen.clear();
        } else {
            self.at = Some(s.next);
            self.seen.extend(keys.iter().map(|k| k.clone().into_boxed_slice()));
        }
        Ok(keys)
    }

    /// Slices until one finds keys (`Some`, not empty) or the scan ends (`None`).
    pub fn next_keys(&mut self, shards: &Shards, timeout: Option<Duration>) -> Result<Option<Vec<Vec<u8>>>> {
        while !self.done(shards) {
            let keys = self.slice(shards, timeout)?;
            if !keys.is_empty() {
                return Ok(Some(keys));
            }
        }
        Ok(None)
    }
}

impl ShmCache {
    /// A scan of the keys starting with `prefix`, at most `count` log steps
    /// per lock (this module's doc: exactly once for keys live throughout).
    pub fn scan(&self, prefix: &[u8], count: usize) -> KeyScan {
        KeyScan::new(prefix, count)
    }

    /// The next keys of `scan` (never empty), or `None` at its end; each
    /// slice under one shard lock, waiting at most the lock timeout.
    pub fn scan_next(&self, scan: &mut KeyScan) -> Result<Option<Vec<Vec<u8>>>> {
        if scan.forwarded() || self.moved() {
            // The shards changed under the scan: it starts over on the
            // successor (every key live throughout still comes, some twice).
            if !scan.forwarded() {
                scan.restart_forwarded();
            }
            return self.successor()?.scan_next(scan);
        }
        let r = scan.next_keys(&self.shards, Some(self.lock_timeout))?;
        if self.moved() {
            scan.restart_forwarded();
            return self.successor()?.scan_next(scan);
        }
        Ok(r)
    }
}
