//! The Rust core alone, on one core, without Python: gets/s and sets/s.
//!
//!     cargo run --release --example core_bench            # ~25 s
//!     cargo run --release --example core_bench -- --quick # about a second
//!
//! Prints one JSON object. `bench/run.py` runs it and puts the numbers into
//! docs/benchmarks.md. A criterion-free measurement (no dev-dependency): each
//! figure is the median of 5 timed rounds of at least `min_round` each.
//!
//! The main thread is pinned to the last CPU (the figures are "on one core");
//! the two threads of the 2-thread figure are pinned to CPUs 0 and 1.
//!
//! Gets are measured through both public copy-free paths: `get_with` (the
//! lock-free seqlock read the Python layer uses, falling back to the lock;
//! given one closure for both)
//! and `with_shard` + `ShardGuard::get` (always under the shard lock).
//!
//! Workload: 100,000 keys of 12 bytes with 100-byte values in a 256 MB cache
//! (MAX_ITEM_SIZE 1 MB, auto shards). The keys to look up are laid out one
//! after the other in the order they are used (a "stream"), so fetching the
//! next key costs the benchmark nothing and what is measured is the cache's
//! own work and memory traffic. Orders: shuffled (the items are all over
//! the ~17 MB of records and index, so most gets miss the CPU caches), the
//! order the keys were stored (each shard's log read front to back), and
//! 1,000 hot keys (their cache lines fit in L2; after the shuffled overwrites
//! that change the record size, their index slots and records sit on ~2,000
//! different pages, so TLB misses remain; `--profile-get --hot` runs before
//! the overwrites, records contiguous). Sets are measured both ways: same
//! size (in place) and alternating sizes (appended at the log head).
//! Beside them, the raw Python API's workload exactly (`raw_workload_*`: a
//! fresh 64 MB cache of just 1,000 keys, read in the order stored), so the
//! core and the Python layer above it compare one to one.
//!
//! `--profile-get N [--locked] [--hot]` runs just N shuffled gets (of the
//! 1,000 hot keys with `--hot`) in `profile_gets`,
//! for `valgrind --tool=callgrind --toggle-collect='*profile_gets*'`.

use shmcache::{now_ms, LazyNow, ShmCache, Wait, ENC_BYTES};
use std::hint::black_box;
use std::time::{Duration, Instant};

const KEY_LEN: usize = 12;
type Key = [u8; KEY_LEN];

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

/// Pin the calling thread to `cpu` ("on one core": no migration to a core
/// whose caches are cold mid-round). Best effort: ignored if not allowed.
fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes inside it; the call reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn key(prefix: &str, i: usize) -> Key {
    let s = format!("{prefix}:{i:08}");
    s.as_bytes().try_into().expect("12-byte key")
}

fn shuffled(keys: &[Key], rng: &mut Rng) -> Vec<Key> {
    let mut v = keys.to_vec();
    for i in (1..v.len()).rev() {
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

/// What the gets measured make of a value: its length (no copy).
fn len(_enc: u8, v: &[u8]) -> usize {
    v.len()
}

/// What the sanity checks make of a value: nothing (is it there?).
fn unit(_enc: u8, _v: &[u8]) {}

#[inline(always)]
fn get_free(cache: &ShmCache, stream: &[Key]) {
    for k in stream {
        black_box(cache.get_with(k, &LazyNow::new(), Wait::Bounded, len, len).unwrap());
    }
}

#[inline(always)]
fn get_locked(cache: &ShmCache, stream: &[Key]) {
    for k in stream {
        let hash = cache.hash(k);
        let now = &LazyNow::new();
        black_box(cache.with_shard(hash, Wait::Bounded, |g| g.get(k, hash, now, |_enc, v| v.len())).unwrap());
    }
}

/// The get loop alone, not inlined, so that a profiler can collect just it.
#[inline(never)]
fn profile_gets(cache: &ShmCache, stream: &[Key], n: usize, locked: bool) -> usize {
    let mut total = 0;
    for j in 0..n {
        let k = &stream[j % stream.len()];
        let now = &LazyNow::new();
        let r = if locked {
            let hash = cache.hash(k);
            cache.with_shard(hash, Wait::Bounded, |g| g.get(k, hash, now, |_enc, v| v.len()))
        } else {
            cache.get_with(k, now, Wait::Bounded, len, len)
        };
        total += black_box(r.unwrap().unwrap());
    }
    total
}

/// A fresh cache of `size` bytes (MAX_ITEM_SIZE 1 MB, auto shards) of its own.
fn open(tag: &str, size: u64) -> ShmCache {
    let cfg = shmcache::Config { size, max_item_size: 1 << 20, shards: 0 };
    let location = format!("core-bench-{tag}-{}", std::process::id());
    ShmCache::open(&location, &cfg, Duration::from_millis(100)).expect("open segment")
}

/// Detach and remove the segment.
fn close(cache: ShmCache) {
    let name = cache.name().to_string();
    drop(cache);
    shmcache::destroy(&name).expect("destroy segment");
}

/// gets/s and sets/s on the raw Python API's workload (see its call site).
fn raw_api_workload(min_round: Duration) -> (f64, f64) {
    let cache = open("raw", 64 << 20);
    let keys: Vec<Key> = (0..1_000).map(|i| key("raw", i)).collect();
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let value: Vec<u8> = (0..100).map(|_| rng.next() as u8).collect();
    for k in &keys {
        assert!(cache.set(k, ENC_BYTES, &value, 0).expect("set"));
    }
    for k in &keys {
        black_box(cache.get(k).unwrap().unwrap());
    }
    let gets = measure(min_round, keys.len(), || get_free(&cache, &keys));
    let sets = measure(min_round, keys.len(), || {
        for k in &keys {
            black_box(cache.set(k, ENC_BYTES, &value, 0).unwrap());
        }
    });
    let present =
        keys.iter().filter(|k| cache.get_with(&k[..], 0, Wait::Bounded, unit, unit).unwrap().is_some()).count();
    assert_eq!(present, keys.len(), "keys lost in the raw-API workload");
    close(cache);
    (gets, sets)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let profile_locked = args.iter().any(|a| a == "--locked");
    let profile_n: Option<usize> = args
        .iter()
        .position(|a| a == "--profile-get")
        .map(|i| args.get(i + 1).and_then(|s| s.parse().ok()).unwrap_or(200_000));
    let min_round = if quick { Duration::from_millis(20) } else { Duration::from_millis(400) };
    let n = if quick { 20_000 } else { 100_000 };
    let hot_n = 1_000;

    let ncpu = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    pin(ncpu - 1);
    let cache = open("main", 256 << 20);
    let value = vec![b'v'; 100];
    let keys: Vec<Key> = (0..n).map(|i| key("key", i)).collect();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let stream = shuffled(&keys, &mut rng);
    let miss_stream: Vec<Key> = (0..n).map(|i| key("nok", i)).collect::<Vec<_>>();
    let miss_stream = shuffled(&miss_stream, &mut rng);
    let hot = shuffled(&keys[..hot_n], &mut rng);

    for k in &keys {
        assert!(cache.set(k, ENC_BYTES, &value, 0).expect("set"));
    }
    // Read everything once: an item is marked visited on its first (locked)
    // read; later reads of it can take the lock-free path.
    for k in &keys {
        black_box(cache.get(k).unwrap().unwrap());
    }

    if let Some(count) = profile_n {
        let hot_only = args.iter().any(|a| a == "--hot");
        let total = profile_gets(&cache, if hot_only { &hot } else { &stream }, count, profile_locked);
        println!("{{\"profile_gets\": {count}, \"locked\": {profile_locked}, \"bytes\": {total}}}");
        close(cache);
        return;
    }

    // Before any overwrite, the stored order is each shard's log front to back.
    let gets_seq = measure(min_round, n, || get_free(&cache, &keys));

    // set: overwrite existing keys (the steady state of a cache), shuffled.
    // Same size, so in place.
    let sets = measure(min_round, n, || {
        for k in &stream {
            black_box(cache.set(k, ENC_BYTES, &value, 0).unwrap());
        }
    });
    // Overwrites that change the record size (100 <-> 164 bytes each pass)
    // are appended at the log head and compact the log. They also scatter
    // the records in shuffled order for the gets below.
    let values = [vec![b'w'; 164], value.clone()];
    let mut pass = 0usize;
    let sets_append = measure(min_round, n, || {
        pass += 1;
        for k in &stream {
            black_box(cache.set(k, ENC_BYTES, &values[pass % 2], 0).unwrap());
        }
    });
    if pass.is_multiple_of(2) {
        // End on the 100-byte values (the gets' workload).
        for k in &stream {
            black_box(cache.set(k, ENC_BYTES, &value, 0).unwrap());
        }
    }

    let gets = measure(min_round, n, || get_free(&cache, &stream));
    let gets_hot = measure(min_round, hot_n, || get_free(&cache, &hot));
    let gets_locked = measure(min_round, n, || get_locked(&cache, &stream));
    let gets_locked_hot = measure(min_round, hot_n, || get_locked(&cache, &hot));
    let gets_miss = measure(min_round, n, || get_free(&cache, &miss_stream));
    // The copying API (a Vec per hit).
    let gets_copy = measure(min_round, n, || {
        for k in &stream {
            black_box(cache.get(k).unwrap());
        }
    });

    // Two threads on the two cores reading the same 1,000 hot keys at once
    // (threads share the mapping exactly as processes do): aggregate gets/s.
    // Readers write nothing but a hit counter, so this should be ~2x.
    let gets_hot_2 = std::thread::scope(|s| {
        let hs: Vec<_> = (0..2)
            .map(|i| {
                let (cache, hot) = (&cache, &hot);
                s.spawn(move || {
                    pin(i % ncpu);
                    measure(min_round, hot_n, || get_free(cache, hot))
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum::<f64>()
    });

    // The raw Python API's workload exactly (bench/workloads.py `_raw_api`):
    // a fresh 64 MB cache holding just 1,000 keys "raw:%08d" with 100-byte
    // values, read and overwritten in the order stored. The two layers'
    // figures compare one to one.
    let (raw_gets, raw_sets) = raw_api_workload(min_round);

    // The pieces of a get, to see where its time goes.
    let hash_only = measure(min_round, n, || {
        for k in &stream {
            black_box(cache.hash(black_box(k)));
        }
    });
    let now_only = measure(min_round, n, || {
        for _ in 0..n {
            black_box(now_ms());
        }
    });
    let lock_only = measure(min_round, n, || {
        for k in &stream {
            let hash = cache.hash(k);
            black_box(cache.with_shard(hash, Wait::Bounded, |_g| Ok(hash)).unwrap());
        }
    });

    // Sanity: every key must still be there (nothing was evicted), and the
    // item count in the stats must agree.
    let now = now_ms();
    let present =
        keys.iter().filter(|k| cache.get_with(&k[..], now, Wait::Bounded, unit, unit).unwrap().is_some()).count();
    let st = cache.stats();
    assert_eq!(present, n, "keys lost");
    assert_eq!(st.counter(shmcache::Counter::ShardWipes), 0, "a shard was wiped in a single-process run: {st:?}");
    let ns = |r: f64| 1e9 / r;
    println!(
        "{{\"gets_per_sec\": {gets:.0}, \"gets_hot_per_sec\": {gets_hot:.0}, \"gets_hot_2threads_per_sec\": {gets_hot_2:.0}, \"gets_seq_per_sec\": {gets_seq:.0}, \
         \"gets_locked_per_sec\": {gets_locked:.0}, \"gets_locked_hot_per_sec\": {gets_locked_hot:.0}, \
         \"gets_copy_per_sec\": {gets_copy:.0}, \"raw_workload_gets_per_sec\": {raw_gets:.0}, \"raw_workload_sets_per_sec\": {raw_sets:.0}, \"gets_miss_per_sec\": {gets_miss:.0}, \"sets_per_sec\": {sets:.0}, \"sets_append_per_sec\": {sets_append:.0}, \
         \"ns_per_get\": {:.1}, \"ns_per_set\": {:.1}, \
         \"ns_hash\": {:.1}, \"ns_now_ms\": {:.1}, \"ns_hash_lock_unlock\": {:.1}, \
         \"keys\": {n}, \"hot_keys\": {hot_n}, \"value_bytes\": {}, \"shards\": {}, \"items\": {}, \"keys_present\": {present}, \
         \"evictions\": {}, \"quick\": {quick}}}",
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
    close(cache);
}
