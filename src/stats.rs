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
pub const COUNTER_NAMES: [&str; N_COUNTERS] = [
    "hits", "misses", "sets", "evictions", "expirations", "lock_recoveries", "lock_timeouts",
    "shard_wipes",
];

/// The counters as stored in a shard header.
#[repr(C)]
pub struct ShardCounters([AtomicU64; N_COUNTERS]);

impl ShardCounters {
    #[inline]
    pub fn add(&self, c: Counter, n: u64) {
        self.0[c as usize].fetch_add(n, Ordering::Relaxed);
    }
    /// Add 1 while holding the shard lock, for counters only ever changed
    /// under it (a plain load and store, no locked read-modify-write).
    /// `LockTimeouts`, `Hits` and `Misses` also change without the lock
    /// (timed-out waits, lock-free gets) and must use `add`.
    #[inline]
    pub fn bump_locked(&self, c: Counter) {
        let a = &self.0[c as usize];
        a.store(a.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
    }

    #[inline]
    pub fn get(&self, c: usize) -> u64 {
        self.0[c].load(Ordering::Relaxed)
    }
}

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
