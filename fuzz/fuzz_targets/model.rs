//! Random operation sequences against a HashMap model (see
//! `shmcache::fuzz_model::run_model`). Run: `cargo +nightly fuzz run model`
//! (or `tools/fuzz.sh`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use shmcache::fuzz_model::{run_model, shm_cache, HeapCache, COLLIDING_HASH, EXACT, SMALL};
use shmcache::ShmCache;
use std::sync::OnceLock;

/// Per fuzzing process: an exact and a small cache on real segments (their
/// names unlinked at once), and the same on heap memory, where each shard is
/// its own allocation so AddressSanitizer sees any access past a shard.
/// Every input starts by clearing the cache it uses.
struct Caches {
    shm: (ShmCache, ShmCache),
    heap: (HeapCache, HeapCache),
    /// Heap caches whose hash collides often (shared index tags).
    colliding: (HeapCache, HeapCache),
}
// SAFETY: HeapCache holds raw pointers to its own allocations; libFuzzer runs
// inputs on one thread.
unsafe impl Send for Caches {}
unsafe impl Sync for Caches {}
static CACHES: OnceLock<Caches> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let c = CACHES.get_or_init(|| Caches {
        shm: (shm_cache(&EXACT), shm_cache(&SMALL)),
        heap: (HeapCache::new(&EXACT).unwrap(), HeapCache::new(&SMALL).unwrap()),
        colliding: (
            HeapCache::with_hash_mask(&EXACT, COLLIDING_HASH).unwrap(),
            HeapCache::with_hash_mask(&SMALL, COLLIDING_HASH).unwrap(),
        ),
    });
    // run_model reads bits 0-1 of the first byte; bits 6-7 pick the backend.
    let _ = match data.first().map_or(0, |b| b >> 6) {
        0 | 1 => run_model(&c.shm.0, &c.shm.1, data),
        2 => run_model(&c.heap.0, &c.heap.1, data),
        _ => run_model(&c.colliding.0, &c.colliding.1, data),
    };
});
