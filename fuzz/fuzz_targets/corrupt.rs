//! Damage a live cache's shards, then operate on it (see
//! `shmcache::fuzz_model::run_corrupt`). Run: `cargo +nightly fuzz run corrupt`
//! (or `tools/fuzz.sh`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use shmcache::fuzz_model::{run_corrupt, shm_cache, HeapCache, CORRUPT};
use shmcache::ShmCache;
use std::sync::OnceLock;

/// A real segment (name unlinked at once) and the same shards on heap
/// memory, one allocation per shard so AddressSanitizer sees any access
/// past a shard.
struct Caches {
    shm: ShmCache,
    heap: HeapCache,
}
// SAFETY: HeapCache holds raw pointers to its own allocations; libFuzzer runs
// inputs on one thread.
unsafe impl Send for Caches {}
unsafe impl Sync for Caches {}
static CACHES: OnceLock<Caches> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let c = CACHES.get_or_init(|| Caches { shm: shm_cache(&CORRUPT), heap: HeapCache::new(&CORRUPT).unwrap() });
    // Odd lengths run on the heap backend, even ones on the segment.
    if data.len() % 2 == 1 {
        run_corrupt(&c.heap, data);
    } else {
        run_corrupt(&c.shm, data);
    }
});
