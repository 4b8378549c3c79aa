//! Random operation sequences against a HashMap model (see
//! `shmcache::fuzz_model::run_model`). Run: `cargo +nightly fuzz run model`
//! (or `tools/fuzz.sh`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use shmcache::fuzz_model::{run_model, shm_cache, HeapCache, EXACT, SMALL};
use shmcache::ShmCache;
use std::sync::OnceLock;

/// Per fuzzing process: an exact and a small cache on real segments (their
/// names unlinked at once), and the same on heap memory, where each shard is
/// its own allocation so AddressSanitizer sees any access past a shard.
/// Every input starts by clearing the cache it uses.
struct Caches {
    shm: (ShmCache, ShmCache),
    heap: (HeapCache, HeapCache),
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
    });
    // run_model reads bits 0-1 of the first byte; bit 7 picks the backend.
    if data.first().is_some_and(|b| b & 0x80 != 0) {
        run_model(&c.heap.0, &c.heap.1, data);
    } else {
        run_model(&c.shm.0, &c.shm.1, data);
    }
});
