//! Counters kept per shard in shared memory (atomics, so they can be read
//! without the lock) and summed by [`crate::ShmCache::stats`].

use std::sync::atomic::{AtomicU64, Ordering};

#[repr(usize)]
#[derive(Debug, Clone, Copy)]
pub enum Counter {
    Hits = 0,
    Misses,
    Sets,
    Evictions,
    Expirations,
    LockRecoveries,
    LockTimeouts,
    ShardWipes,
}

pub const N_COUNTERS: usize = 8;
pub const COUNTER_NAMES: [&str; N_COUNTERS] =
    ["hits", "misses", "sets", "evictions", "expirations", "lock_recoveries", "lock_timeouts", "shard_wipes"];

/// Stripes of the hit and miss counters, one cache line each.
pub const STRIPES: usize = 4;

/// The counters as stored in a shard header: 8 words for the counters
/// changed under the lock (plus the rare lock timeouts), then the hit and
/// miss counters in [`STRIPES`] stripes of one cache line each.
///
/// Every get bumps a hit or miss counter, lock-free gets included. With one
/// counter per shard, readers on two cores fight over its cache line (and,
/// when it shared a line with `seq`, over the line every reader must read).
/// So each CPU adds to the stripe `cpu % STRIPES`: no line is shared
/// between CPUs unless there are more CPUs than stripes, and the counts stay
/// exact (an atomic add; a plain load and store measured no faster).
/// `stats()` sums the stripes.
#[repr(C)]
pub struct ShardCounters {
    /// Indexed by `Counter`. Its `Hits` and `Misses` words stay 0 (those two
    /// live in `reads`); they are kept so that a counter's slot is its index.
    main: [AtomicU64; N_COUNTERS],
    reads: [[AtomicU64; 8]; STRIPES],
}

/// This CPU's stripe. `sched_getcpu` is a read of the rseq area (glibc
/// 2.35+) or a vDSO call: a few ns, no system call.
#[inline]
fn stripe() -> usize {
    // SAFETY: sched_getcpu takes no arguments and only reads per-thread state; -1 (error) maps to a valid stripe too.
    (unsafe { libc::sched_getcpu() } as usize) % STRIPES
}

impl ShardCounters {
    /// Add `n`, atomically (for counters that change without the lock).
    #[inline]
    pub fn add(&self, c: Counter, n: u64) {
        match c {
            Counter::Hits | Counter::Misses => self.reads[0][c as usize].fetch_add(n, Ordering::Relaxed),
            _ => self.main[c as usize].fetch_add(n, Ordering::Relaxed),
        };
    }

    /// Count a get: a hit or a miss, in this CPU's stripe (see the type).
    #[inline]
    pub fn read(&self, hit: bool) {
        self.reads[stripe()][!hit as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Add 1 while holding the shard lock, for counters only ever changed
    /// under it (a plain load and store, no locked read-modify-write).
    /// `LockTimeouts` also changes without the lock (timed-out waits) and
    /// must use `add`; hits and misses use `read`.
    #[inline]
    pub fn bump_locked(&self, c: Counter) {
        let a = &self.main[c as usize];
        a.store(a.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
    }

    /// The value of counter `c` (by index), stripes summed.
    #[inline]
    pub fn get(&self, c: usize) -> u64 {
        if c == Counter::Hits as usize || c == Counter::Misses as usize {
            self.reads.iter().fold(0u64, |n, s| n.wrapping_add(s[c].load(Ordering::Relaxed)))
        } else {
            self.main[c].load(Ordering::Relaxed)
        }
    }
}

const _: () = assert!(std::mem::size_of::<ShardCounters>() == 64 * (1 + STRIPES));
const _: () = assert!(Counter::Hits as usize == 0 && Counter::Misses as usize == 1);

/// A snapshot of the whole cache.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub items: u64,
    /// Bytes of live items (headers, keys, values, padding).
    pub bytes_used: u64,
    /// Bytes of item storage not holding live items.
    pub bytes_free: u64,
    /// Total item storage (all shards' logs).
    pub bytes_capacity: u64,
    /// Size of the whole segment, header and indexes included.
    pub segment_size: u64,
    pub shards: u64,
    pub counters: [u64; N_COUNTERS],
}

impl Stats {
    pub fn counter(&self, c: Counter) -> u64 {
        self.counters[c as usize]
    }
    /// (name, value) pairs, for the Python dict and the CLI.
    pub fn pairs(&self) -> Vec<(&'static str, u64)> {
        let mut v = vec![
            ("items", self.items),
            ("bytes_used", self.bytes_used),
            ("bytes_free", self.bytes_free),
            ("bytes_capacity", self.bytes_capacity),
            ("segment_size", self.segment_size),
            ("shards", self.shards),
        ];
        v.extend(COUNTER_NAMES.iter().copied().zip(self.counters));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn striped_hits_and_misses_sum_exactly_across_threads() {
        // SAFETY: an all-zero bit pattern is a valid AtomicU64 (and so a valid ShardCounters).
        let c: ShardCounters = unsafe { std::mem::zeroed() };
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| (0..30_000).for_each(|i| c.read(i % 3 != 0)));
            }
        });
        assert_eq!(c.get(Counter::Hits as usize), 4 * 20_000);
        assert_eq!(c.get(Counter::Misses as usize), 4 * 10_000);
        c.add(Counter::Hits, 5);
        c.bump_locked(Counter::Sets);
        assert_eq!(c.get(Counter::Hits as usize), 80_005);
        assert_eq!(c.get(Counter::Sets as usize), 1);
    }
}
