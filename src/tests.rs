//! End-to-end tests of the core: real segments in /dev/shm, real fork/kill.
//! One file per part of the core they test; here, what they share: a
//! cache of their own (`TestCache`, unlinked at the end of the test).

mod cache;
mod eviction;
mod keyscan;
mod migrate;
mod model;
mod recover;
mod segment;
mod shard_ops;
mod verify;

use crate::cache::{ShmCache, Wait};
use crate::mem::layout::Config;
use crate::shard::encoding::Int;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

static N: AtomicU32 = AtomicU32::new(0);

/// A cache with a unique name that is unlinked when the test ends.
struct TestCache(Option<ShmCache>);
impl std::ops::Deref for TestCache {
    type Target = ShmCache;
    fn deref(&self) -> &ShmCache {
        self.0.as_ref().unwrap()
    }
}
impl Drop for TestCache {
    fn drop(&mut self) {
        if let Some(c) = &self.0 {
            crate::mem::segment::destroy(c.name()).unwrap();
        }
    }
}
impl TestCache {
    /// Detach without removing the segment.
    fn close_keep(mut self) {
        self.0.take();
    }
}
fn unique() -> String {
    format!("rust-test-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}
fn cache(size: u64, max_item: u64) -> TestCache {
    let cfg = Config { size, max_item_size: max_item, shards: 0 };
    TestCache(Some(ShmCache::open(&unique(), &cfg, Duration::from_millis(500)).unwrap()))
}

/// `ShmCache::incr` by an i64, without `create`.
fn incr(c: &ShmCache, k: &[u8], d: i64) -> crate::Result<Int> {
    c.incr(k, &Int::Small(d), false, Wait::Bounded)
}

fn get(c: &ShmCache, k: &[u8]) -> Option<Vec<u8>> {
    c.get(k).unwrap().map(|(_, v)| v)
}
