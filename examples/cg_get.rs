//! Instruction-count probe for valgrind --tool=callgrind (see docs/benchmarks.md):
//! 1,000 hot keys, 1,000,000 gets and 100,000 sets through the core API.
use shmcache::{ShmCache, Wait, ENC_BYTES};
use std::time::Duration;

fn main() {
    let cfg = shmcache::Config { size: 64 << 20, max_item_size: 1 << 20, shards: 0 };
    let c = ShmCache::open(&format!("cg-get-{}", std::process::id()), &cfg, Duration::from_millis(100)).unwrap();
    let keys: Vec<Vec<u8>> = (0..1000).map(|i| format!("key:{i:06}").into_bytes()).collect();
    let v = [7u8; 100];
    for k in &keys {
        c.set(k, ENC_BYTES, &v, 0).unwrap();
    }
    let now = shmcache::now_ms();
    let len = |_: u8, v: &[u8]| v.len();
    let mut total = 0usize;
    for r in 0..1000 {
        for k in &keys {
            total += c.get_with(k, now, Wait::Bounded, len, len).unwrap().unwrap_or(0);
        }
        if r % 10 == 0 {
            for k in &keys {
                c.set(k, ENC_BYTES, &v, 0).unwrap();
            }
        }
    }
    println!("{total}");
    shmcache::destroy(c.name()).unwrap();
}
