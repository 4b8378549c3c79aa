//! The Rust core alone, on one core, without Python: gets/s and sets/s.
//!
//!     cargo run --release --example core_bench            # ~10 s
//!     cargo run --release --example core_bench -- --quick # well under a second
//!
//! Prints one JSON object. `bench/run.py` runs it and puts the numbers into
//! docs/benchmarks.md. A criterion-free measurement (no dev-dependency): each
//! figure is the median of 5 timed rounds of at least `min_round` each.
//!
//! Workload: 100,000 keys of 12 bytes with 100-byte values in a 256 MB cache
//! (MAX_ITEM_SIZE 1 MB, auto shards), touched in a shuffled order so the
//! working set (~17 MB with index) lives in L3/RAM rather than L1; plus a
//! "hot" variant over 1,000 keys (L1/L2-resident), which is the best case.

use shmcache::{clock, ShmCache, Wait, ENC_BYTES};
use std::hint::black_box;
use std::time::{Duration, Instant};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn shuffled(n: usize, rng: &mut Rng) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        v.swap(i, (rng.next() % (i as u64 + 1)) as usize);
    }
    v
}

/// Median ops/s of 5 rounds; each round repeats `pass` (which performs
/// `ops_per_pass` operations) until `min_round` has elapsed.
fn measure(min_round: Duration, ops_per_pass: usize, mut pass: impl FnMut()) -> f64 {
    pass(); // warm-up
    let mut rates: Vec<f64> = (0..5)
        .map(|_| {
            let t0 = Instant::now();
            let mut ops = 0usize;
            loop {
                pass();
                ops += ops_per_pass;
                let e = t0.elapsed();
                if e >= min_round {
                    return ops as f64 / e.as_secs_f64();
                }
            }
        })
        .collect();
    rates.sort_by(|a, b| a.partial_cmp(b).unwrap());
    rates[2]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let min_round = if quick { Duration::from_millis(20) } else { Duration::from_millis(400) };
    let n = if quick { 20_000 } else { 100_000 };
    let hot_n = 1_000;

    let cfg = shmcache::Config { size: 256 << 20, max_item_size: 1 << 20, shards: 0 };
    let location = format!("core-bench-{}", std::process::id());
    let cache = ShmCache::open(&location, &cfg, Duration::from_millis(100)).expect("open segment");
    let value = vec![b'v'; 100];
    let keys: Vec<Vec<u8>> = (0..n).map(|i| format!("key:{i:08}").into_bytes()).collect();
    let miss_keys: Vec<Vec<u8>> = (0..n).map(|i| format!("nok:{i:08}").into_bytes()).collect();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let order = shuffled(n, &mut rng);
    let hot_order = shuffled(hot_n, &mut rng);

    for k in &keys {
        assert!(cache.set(k, ENC_BYTES, &value, 0).expect("set"));
    }

    // set: overwrite existing keys (the steady state of a cache), shuffled order.
    let sets = measure(min_round, n, || {
        for &i in &order {
            black_box(cache.set(&keys[i], ENC_BYTES, &value, 0).unwrap());
        }
    });

    // get via the copying API (allocates a Vec per hit, as the Python layer's
    // contended path does).
    let gets_copy = measure(min_round, n, || {
        for &i in &order {
            black_box(cache.get(&keys[i]).unwrap().unwrap());
        }
    });

    // Copy-free get: hash, lock the shard, probe, look at the value in place.
    let get_nocopy = |ord: &[usize]| {
        for &i in ord {
            let key = &keys[i];
            let hash = cache.hash(key);
            let now = clock::now_ms();
            let r = cache.with_shard(hash, Wait::Bounded, |g| g.get(key, hash, now, |_enc, v| v.len()));
            black_box(r.unwrap().unwrap());
        }
    };
    let gets = measure(min_round, n, || get_nocopy(&order));
    let gets_hot = measure(min_round, hot_n, || get_nocopy(&hot_order));

    let gets_miss = measure(min_round, n, || {
        for &i in &order {
            let key = &miss_keys[i];
            let hash = cache.hash(key);
            let now = clock::now_ms();
            let r = cache.with_shard(hash, Wait::Bounded, |g| g.get(key, hash, now, |_enc, v| v.len()));
            black_box(r.unwrap());
        }
    });

    // The pieces of a get, to see where its time goes.
    let hash_only = measure(min_round, n, || {
        for &i in &order {
            black_box(cache.hash(black_box(&keys[i])));
        }
    });
    let now_only = measure(min_round, n, || {
        for _ in 0..n {
            black_box(clock::now_ms());
        }
    });
    let lock_only = measure(min_round, n, || {
        for &i in &order {
            let hash = cache.hash(&keys[i]);
            black_box(cache.with_shard(hash, Wait::Bounded, |_g| Ok(())).unwrap());
        }
    });

    let st = cache.stats();
    let ns = |r: f64| 1e9 / r;
    println!(
        "{{\"gets_per_sec\": {gets:.0}, \"gets_hot_per_sec\": {gets_hot:.0}, \"gets_copy_per_sec\": {gets_copy:.0}, \
         \"gets_miss_per_sec\": {gets_miss:.0}, \"sets_per_sec\": {sets:.0}, \
         \"ns_per_get\": {:.1}, \"ns_per_set\": {:.1}, \
         \"ns_hash\": {:.1}, \"ns_now_ms\": {:.1}, \"ns_hash_lock_unlock\": {:.1}, \
         \"keys\": {n}, \"hot_keys\": {hot_n}, \"value_bytes\": {}, \"shards\": {}, \"items\": {}, \"evictions\": {}, \
         \"quick\": {quick}}}",
        ns(gets),
        ns(sets),
        ns(hash_only),
        ns(now_only),
        ns(lock_only),
        value.len(),
        st.shards,
        st.items,
        st.counter(shmcache::Counter::Evictions),
    );
    let name = cache.name().to_string();
    drop(cache);
    shmcache::segment::destroy(&name).expect("destroy segment");
}
