//! End-to-end tests of the core: real segments in /dev/shm, real fork/kill.

use crate::cache::{ShmCache, Wait};
use crate::error::Error;
use crate::mem::layout::{Config, Geometry};
use crate::mem::segment;
use crate::shard::encoding::Int;
use crate::shard::encoding::{ENC_BIGINT, ENC_BYTES, ENC_INT, ENC_STR};
use crate::shard::ops::{Item, SetMode, Ttl};
use crate::shard::stats::Counter;
use crate::shard::ShardGuard;
use crate::time;
use num_bigint::BigInt;
use std::collections::HashMap;
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
            segment::destroy(c.name()).unwrap();
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

#[test]
fn basic_operations() {
    let c = cache(4 << 20, 64 << 10);
    assert_eq!(get(&c, b"a"), None);
    assert!(c.set(b"a", ENC_BYTES, b"1", 0).unwrap());
    assert_eq!(get(&c, b"a"), Some(b"1".to_vec()));
    assert!(!c.add(b"a", ENC_BYTES, b"2", 0).unwrap());
    assert!(c.add(b"b", ENC_BYTES, b"2", 0).unwrap());
    assert!(c.set(b"a", ENC_BYTES, b"overwritten", 0).unwrap());
    assert_eq!(get(&c, b"a"), Some(b"overwritten".to_vec()));
    assert!(c.delete(b"a", Wait::Bounded).unwrap());
    assert!(!c.delete(b"a", Wait::Bounded).unwrap());
    assert!(!c.contains(b"a", Wait::Bounded).unwrap());
    assert!(c.contains(b"b", Wait::Bounded).unwrap());
    assert_eq!(c.ttl(b"b", Wait::Bounded).unwrap(), Ttl::Never);
    assert_eq!(c.ttl(b"zz", Wait::Bounded).unwrap(), Ttl::Missing);
    // integers
    c.set(b"n", ENC_INT, &5i64.to_le_bytes(), 0).unwrap();
    assert_eq!(incr(&c, b"n", 10), Ok(Int::Small(15)));
    assert_eq!(incr(&c, b"n", -20), Ok(Int::Small(-5)));
    assert_eq!(incr(&c, b"missing", 1), Err(Error::NotFound));
    assert_eq!(incr(&c, b"b", 1), Err(Error::NotInteger));
    c.set(b"big", ENC_INT, &(i64::MAX - 1).to_le_bytes(), 0).unwrap();
    assert_eq!(incr(&c, b"big", 1), Ok(Int::Small(i64::MAX)));
    assert_eq!(incr(&c, b"big", -1), Ok(Int::Small(i64::MAX - 1)));
    // too large: refused, nothing else lost
    let big = vec![7u8; 64 << 10];
    assert!(matches!(c.set(b"x", ENC_BYTES, &big, 0), Err(Error::TooLarge { .. })));
    assert_eq!(get(&c, b"b"), Some(b"2".to_vec()));
    // empty key and value
    c.set(b"", ENC_BYTES, b"", 0).unwrap();
    assert_eq!(get(&c, b""), Some(vec![]));
    let s = c.stats();
    assert_eq!(s.items, 4);
    assert!(s.counter(Counter::Hits) >= 4 && s.counter(Counter::Misses) >= 1);
    c.verify().unwrap();
    c.clear().unwrap();
    assert_eq!(c.stats().items, 0);
    assert_eq!(get(&c, b"b"), None);
}

#[test]
fn ttl_with_controlled_clock() {
    let c = cache(4 << 20, 64 << 10);
    let k = b"k";
    let h = c.hash(k);
    let max = c.geometry().max_item_size;
    c.with_shard(h, Wait::Bounded, |g| {
        g.set(&Item { key: k, hash: h, enc: ENC_BYTES, value: b"v", expires: 2000 }, SetMode::Set, 1000, max)
    })
    .unwrap();
    let at = |now| c.with_shard(h, Wait::Bounded, |g| g.get(k, h, now, |_, v| v.to_vec())).unwrap();
    assert_eq!(at(1999), Some(b"v".to_vec()));
    assert_eq!(c.with_shard(h, Wait::Bounded, |g| g.ttl(k, h, 1500)).unwrap(), Ttl::Ms(500));
    // touch extends
    assert!(c.with_shard(h, Wait::Bounded, |g| g.touch(k, h, 3000, 1999)).unwrap());
    assert_eq!(at(2500), Some(b"v".to_vec()));
    assert_eq!(at(3000), None, "expired exactly at its deadline");
    assert_eq!(c.stats().counter(Counter::Expirations), 1);
    // add over an expired item succeeds
    c.with_shard(h, Wait::Bounded, |g| {
        g.set(&Item { key: k, hash: h, enc: ENC_BYTES, value: b"old", expires: 10 }, SetMode::Set, 5, max)
    })
    .unwrap();
    assert!(c
        .with_shard(h, Wait::Bounded, |g| g.set(
            &Item { key: k, hash: h, enc: ENC_BYTES, value: b"new", expires: 0 },
            SetMode::Add,
            20,
            max
        ))
        .unwrap());
    assert_eq!(at(30), Some(b"new".to_vec()));
}

#[test]
fn same_size_overwrite_is_written_in_place() {
    let c = cache(4 << 20, 64 << 10);
    let k = b"in-place-key";
    c.set(k, ENC_BYTES, &[1u8; 100], 0).unwrap();
    c.set(b"neighbour", ENC_BYTES, b"n", 0).unwrap();
    let sh = c.shard_for(c.hash(k));
    let (head0, s0) = (sh.log_head(), c.stats());
    for i in 0..1000u32 {
        // 97 to 100 value bytes round up to the same 144-byte record.
        let v = vec![i as u8; 97 + (i % 4) as usize];
        c.set(k, ENC_BYTES, &v, 0).unwrap();
        assert_eq!(get(&c, k), Some(v));
    }
    assert_eq!(sh.log_head(), head0, "same-size overwrites used log space");
    let s1 = c.stats();
    assert_eq!((s1.items, s1.bytes_used), (s0.items, s0.bytes_used));
    assert_eq!(s1.counter(Counter::Sets), s0.counter(Counter::Sets) + 1000);
    c.verify().unwrap();

    // Another record size is appended; the old record is left dead.
    c.set(k, ENC_BYTES, &[9u8; 300], 0).unwrap();
    assert!(sh.log_head() > head0);
    assert_eq!((c.stats().items, get(&c, k)), (s0.items, Some(vec![9u8; 300])));
    assert_eq!(get(&c, b"neighbour"), Some(b"n".to_vec()));

    // In place, the encoding and the expiry change too: an expired item
    // overwritten in place is live again with its new expiry.
    let h = c.hash(k);
    let max = c.geometry().max_item_size;
    let put = |enc, v: &[u8], exp, now| {
        c.with_shard(h, Wait::Bounded, |g| {
            g.set(&Item { key: k, hash: h, enc, value: v, expires: exp }, SetMode::Set, now, max)
        })
        .unwrap()
    };
    let at = |now| c.with_shard(h, Wait::Bounded, |g| g.get(k, h, now, |e, v| (e, v.to_vec()))).unwrap();
    put(ENC_BYTES, b"8 bytes!", 2000, 1000);
    let head1 = sh.log_head();
    put(ENC_INT, &7i64.to_le_bytes(), 0, 3000);
    assert_eq!(sh.log_head(), head1);
    assert_eq!(at(3000), Some((ENC_INT, 7i64.to_le_bytes().to_vec())));
    assert_eq!(
        c.with_shard(h, Wait::Bounded, |g| g.incr(k, h, &Int::Small(1), false, 3000, max)).unwrap(),
        Int::Small(8)
    );
    c.verify().unwrap();
}

#[test]
fn sweep_reclaims_expired_items_nobody_reads() {
    let c = cache(1 << 20, 1024);
    let max = c.geometry().max_item_size;
    // Shard 0 only, to watch one sweep cursor.
    let keys: Vec<Vec<u8>> =
        (0..2000u32).map(|i| i.to_le_bytes().to_vec()).filter(|k| c.shard_of(c.hash(k)) == 0).collect();
    for k in &keys[..50] {
        let h = c.hash(k);
        c.with_shard(h, Wait::Bounded, |g| {
            g.set(&Item { key: k, hash: h, enc: ENC_BYTES, value: b"x", expires: 100 }, SetMode::Set, 10, max)
        })
        .unwrap();
    }
    for k in &keys[50..100] {
        let h = c.hash(k);
        c.with_shard(h, Wait::Bounded, |g| {
            g.set(&Item { key: k, hash: h, enc: ENC_BYTES, value: b"y", expires: 0 }, SetMode::Set, 200, max)
        })
        .unwrap();
    }
    assert!(c.stats().counter(Counter::Expirations) >= 40, "{:?}", c.stats());
    c.verify().unwrap();
}

#[test]
fn eviction_keeps_sets_succeeding_and_hot_items_alive() {
    let c = cache(2 << 20, 16 << 10);
    let cap = c.stats().bytes_capacity;
    let val = vec![1u8; 1000];
    c.set(b"hot", ENC_BYTES, b"hot value", 0).unwrap();
    let mut i = 0u64;
    let mut written = 0;
    while written < 10 * cap {
        c.set(&i.to_le_bytes(), ENC_BYTES, &val[..(i as usize * 37) % 1000], 0).unwrap();
        written += 1000;
        i += 1;
        if i.is_multiple_of(50) {
            assert_eq!(get(&c, b"hot"), Some(b"hot value".to_vec()), "hot item evicted at {i}");
        }
    }
    let s = c.stats();
    assert!(s.counter(Counter::Evictions) > 1000);
    assert!(s.bytes_used <= s.bytes_capacity);
    assert!(s.bytes_used * 10 > s.bytes_capacity * 7, "log under-used: {s:?}");
    c.verify().unwrap();
    // a max-size item always fits, even when full
    let m = vec![9u8; (16 << 10) - 3];
    c.set(b"max", ENC_BYTES, &m, 0).unwrap();
    assert_eq!(get(&c, b"max"), Some(m));
    c.verify().unwrap();
}

#[test]
fn index_full_evicts_instead_of_failing() {
    // Tiny items: the index, not the log, is what fills up.
    let c = cache(1 << 20, 1024);
    for i in 0..200_000u32 {
        c.set(&i.to_le_bytes(), ENC_BYTES, b"", 0).unwrap();
    }
    let s = c.stats();
    assert!(s.items > 1000 && s.counter(Counter::Evictions) > 100_000, "{s:?}");
    c.verify().unwrap();
}

/// Random operations against a HashMap model, with a controllable clock.
/// With no eviction the cache must agree exactly; in a small cache, any value
/// returned must still be the model's (never stale, never foreign).
fn model_run(size: u64, seed: u64, exact: bool) {
    let c = cache(size, 4096);
    let max = c.geometry().max_item_size;
    let mut rng = seed;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut model: HashMap<Vec<u8>, (Vec<u8>, u64)> = HashMap::new();
    let mut now = 1_000u64;
    for step in 0..30_000 {
        now += next() % 3;
        let k = format!("key{}", next() % 500).into_bytes();
        let h = c.hash(&k);
        let live = |m: &HashMap<Vec<u8>, (Vec<u8>, u64)>, now| {
            m.get(&k).filter(|(_, e)| *e == 0 || now < *e).map(|(v, _)| v.clone())
        };
        match next() % 6 {
            0 | 1 => {
                let v = vec![(step % 251) as u8; (next() % 600) as usize];
                let exp = if next() % 3 == 0 { now + next() % 200 + 1 } else { 0 };
                let add = next() % 4 == 0;
                let mode = if add { SetMode::Add } else { SetMode::Set };
                let stored = c
                    .with_shard(h, Wait::Bounded, |g| {
                        g.set(&Item { key: &k, hash: h, enc: ENC_BYTES, value: &v, expires: exp }, mode, now, max)
                    })
                    .unwrap();
                let should = !add || live(&model, now).is_none();
                if exact {
                    assert_eq!(stored, should, "step {step}");
                }
                if stored {
                    model.insert(k.clone(), (v, exp));
                }
            }
            2 => {
                let got = c.with_shard(h, Wait::Bounded, |g| g.delete(&k, h, now)).unwrap();
                let had = live(&model, now).is_some();
                if exact {
                    assert_eq!(got, had, "step {step}");
                }
                model.remove(&k);
            }
            3 => {
                let exp = now + 50;
                let got = c.with_shard(h, Wait::Bounded, |g| g.touch(&k, h, exp, now)).unwrap();
                if live(&model, now).is_some() {
                    if exact {
                        assert!(got, "step {step}");
                    }
                    model.get_mut(&k).unwrap().1 = exp;
                } else {
                    assert!(!got, "touched a missing key at step {step}");
                }
            }
            _ => {
                let got = c.with_shard(h, Wait::Bounded, |g| g.get(&k, h, now, |_, v| v.to_vec())).unwrap();
                let want = live(&model, now);
                if exact {
                    assert_eq!(got, want, "step {step}");
                } else if got.is_some() {
                    assert_eq!(got, want, "stale or foreign value at step {step}");
                }
            }
        }
        if step % 5000 == 0 {
            c.verify().unwrap();
        }
    }
    c.verify().unwrap();
}

#[test]
fn model_exact_without_eviction() {
    model_run(16 << 20, 0x9E37_79B9_7F4A_7C15, true);
}

#[test]
fn model_never_lies_under_eviction() {
    model_run(1 << 20, 0xDEAD_BEEF_1234_5678, false);
}

#[test]
fn batch_get_many() {
    let c = cache(4 << 20, 1024);
    for i in 0..100u32 {
        c.set(&i.to_le_bytes(), ENC_BYTES, &i.to_be_bytes(), 0).unwrap();
    }
    let keys: Vec<[u8; 4]> = (0..120u32).map(|i| i.to_le_bytes()).collect();
    let (got, timed_out) = c.get_many(&keys).unwrap();
    assert_eq!(timed_out, 0);
    for (i, g) in got.iter().enumerate() {
        if i < 100 {
            assert_eq!(g.as_ref().unwrap().1, (i as u32).to_be_bytes());
        } else {
            assert!(g.is_none());
        }
    }
}

#[test]
fn reopen_shares_and_another_geometry_in_use_is_adopted() {
    let c = cache(4 << 20, 1024);
    c.set(b"k", ENC_BYTES, b"v", 0).unwrap();
    let name = c.name().to_string();
    let cfg = Config { size: 4 << 20, max_item_size: 1024, shards: 0 };
    let c2 = ShmCache::open_named(&name, &cfg, Duration::from_millis(100)).unwrap();
    assert_eq!(get(&c2, b"k"), Some(b"v".to_vec()));
    drop(c2);
    let other = Config { size: 8 << 20, ..cfg };
    // In use with another geometry: attached as it is, one cache for both.
    let c2 = ShmCache::open_named(&name, &other, Duration::from_millis(100)).unwrap();
    assert_eq!(c2.geometry(), c.geometry());
    assert_eq!(*c2.requested(), Geometry::compute(&other).unwrap());
    assert_eq!(c2.segment().inode(), c.segment().inode());
    assert_eq!(get(&c2, b"k"), Some(b"v".to_vec()));
    c2.delete(b"k", Wait::Bounded).unwrap();
    assert_eq!(get(&c, b"k"), None, "a delete by the adopter is seen by the other");
    c2.set(b"k", ENC_BYTES, b"v", 0).unwrap();
    drop(c2);
    assert_eq!(get(&c, b"k"), Some(b"v".to_vec()));
    // Once nobody else is attached, the segment is still adopted as it is
    // (its items kept): migrating it is the handle's job (migrate.rs).
    c.close_keep();
    let c3 = TestCache(Some(ShmCache::open_named(&name, &other, Duration::from_millis(100)).unwrap()));
    assert_ne!(c3.geometry(), c3.requested());
    assert_eq!(get(&c3, b"k"), Some(b"v".to_vec()));
}

fn migrated(old: &ShmCache, cfg: &Config) -> (TestCache, crate::migrate::MigrateStats) {
    let (c, st) = crate::migrate::migrate(old, cfg, false).unwrap();
    (TestCache(Some(c)), st)
}

#[test]
fn a_migration_carries_items_and_forwards_calls_on_the_old_segment() {
    let c = cache(4 << 20, 1024);
    let far = crate::time::now_ms() + 3_600_000;
    c.set(b"plain", ENC_BYTES, b"v", 0).unwrap();
    c.set(b"ttl", ENC_BYTES, b"t", far).unwrap();
    c.set(b"held", ENC_BYTES, b"token", 0).unwrap();
    assert!(c.pin(b"held").unwrap());
    c.incr(b"n", &Int::Small(41), true, Wait::Bounded).unwrap();
    let other = Config { size: 8 << 20, max_item_size: 2048, shards: 0 };
    let (new, st) = migrated(&c, &other);
    assert_eq!(st.items, 4);
    assert_eq!(st.dropped, 0);
    assert_eq!(*new.geometry(), Geometry::compute(&other).unwrap());
    assert!(c.moved() && !new.moved());
    // The name now leads to the successor.
    let again = ShmCache::open_named(c.name(), &other, Duration::from_millis(100)).unwrap();
    assert_eq!(again.segment().inode(), new.segment().inode());
    assert_eq!(get(&new, b"plain"), Some(b"v".to_vec()));
    assert!(matches!(new.ttl(b"ttl", Wait::Bounded).unwrap(), Ttl::Ms(ms) if ms > 3_500_000));
    assert_eq!(incr(&new, b"n", 1).unwrap(), Int::Small(42));
    // Calls on the old segment run on the successor.
    assert_eq!(get(&c, b"plain"), Some(b"v".to_vec()));
    c.set(b"late", ENC_BYTES, b"w", 0).unwrap();
    assert_eq!(get(&new, b"late"), Some(b"w".to_vec()));
    c.delete(b"plain", Wait::Bounded).unwrap();
    assert_eq!(get(&new, b"plain"), None);
    assert_eq!(get(&c, b"plain"), None, "no stale read from the old segment");
    let (got, _) = c.get_many(&[b"late".as_slice(), b"plain"]).unwrap();
    assert_eq!(got[0].as_ref().map(|v| v.1.clone()), Some(b"w".to_vec()));
    assert!(got[1].is_none());
    // The pin came along: the held key survives a full successor.
    for i in 0..20_000u32 {
        new.set(format!("fill{i}").as_bytes(), ENC_BYTES, &[7u8; 900], 0).unwrap();
    }
    assert_eq!(get(&new, b"held"), Some(b"token".to_vec()));
    // A second migration of the moved segment is refused.
    assert!(matches!(crate::migrate::migrate(&c, &other, false), Err(Error::Moved)));
}

#[test]
fn a_smaller_successor_keeps_the_hottest_items() {
    let c = cache(16 << 20, 1024);
    let n = 12_000u32;
    for i in 0..n {
        c.set(format!("k{i}").as_bytes(), ENC_BYTES, &[1u8; 1000], 0).unwrap();
    }
    // Read one key in ten: they are the hot ones.
    for i in (0..n).step_by(10) {
        let _ = get(&c, format!("k{i}").as_bytes());
    }
    let small = Config { size: 4 << 20, max_item_size: 1024, shards: 0 };
    let (new, st) = migrated(&c, &small);
    assert!(st.dropped > 0 && st.items > 0, "{st:?}");
    let hot = (0..n).step_by(10).filter(|i| get(&new, format!("k{i}").as_bytes()).is_some()).count();
    assert!(hot as u32 >= n / 10 * 9 / 10, "only {hot} of {} hot items kept", n / 10);
}

#[test]
fn writers_racing_a_migration_lose_no_write() {
    // Sized so that nothing is evicted: every write must be found after.
    let c = std::sync::Arc::new(cache(16 << 20, 1024));
    let started = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let writers: Vec<_> = (0..3)
        .map(|t| {
            let (c, started) = (c.clone(), started.clone());
            std::thread::spawn(move || {
                // Each writer counts its own key up; every incr that returned
                // must be in the final value.
                let key = format!("counter{t}");
                let mut done = 0i64;
                c.incr(key.as_bytes(), &Int::Small(0), true, Wait::Bounded).unwrap();
                while done < 15_000 {
                    started.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    assert_eq!(incr(&c, key.as_bytes(), 1).unwrap(), Int::Small(done + 1));
                    done += 1;
                    let k = format!("w{t}-{done}");
                    c.set(k.as_bytes(), ENC_BYTES, k.as_bytes(), 0).unwrap();
                }
                done
            })
        })
        .collect();
    while started.load(std::sync::atomic::Ordering::Relaxed) < 3000 {
        std::thread::yield_now();
    }
    let bigger = Config { size: 32 << 20, max_item_size: 1024, shards: 0 };
    let (new, st) = migrated(&c, &bigger);
    assert!(st.items > 0);
    assert!(started.load(std::sync::atomic::Ordering::Relaxed) < 45_000, "the writers finished before the migration");
    for (t, w) in writers.into_iter().enumerate() {
        let done = w.join().unwrap();
        let key = format!("counter{t}");
        assert_eq!(incr(&new, key.as_bytes(), 0).unwrap(), Int::Small(done), "writer {t}");
        for i in 1..=done {
            let k = format!("w{t}-{i}");
            assert_eq!(get(&new, k.as_bytes()), Some(k.clone().into_bytes()), "lost {k}");
        }
    }
}

#[test]
fn a_damaged_moved_mark_is_cleared_not_followed_forever() {
    let c = cache(4 << 20, 1024);
    c.set(b"k", ENC_BYTES, b"v", 0).unwrap();
    c.segment().header().moved.store(1, std::sync::atomic::Ordering::SeqCst);
    // The first call finds no successor and reports damage; then all is as before.
    assert!(matches!(c.set(b"k2", ENC_BYTES, b"v", 0), Err(Error::Corrupt(_))));
    assert!(!c.moved());
    assert_eq!(get(&c, b"k"), Some(b"v".to_vec()));
    c.set(b"k2", ENC_BYTES, b"v2", 0).unwrap();
    assert_eq!(get(&c, b"k2"), Some(b"v2".to_vec()));
}

#[test]
fn too_big_for_dev_shm_is_a_clear_error() {
    let cfg = Config { size: 1 << 40, max_item_size: 1 << 20, shards: 0 };
    let name = unique();
    match ShmCache::open(&name, &cfg, Duration::from_millis(100)) {
        Err(e @ Error::NoSpace { .. }) => assert!(e.to_string().contains("SIZE"), "{e}"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a 1 TiB segment fit?"),
    }
    let seg = segment::segment_name(&name).unwrap();
    assert!(!std::path::Path::new(&format!("/dev/shm{seg}")).exists(), "failed segment left behind");
}

#[test]
fn names_cannot_escape_dev_shm() {
    let n = segment::segment_name("../../etc/passwd").unwrap();
    assert!(n.starts_with("/shmcache-") && n[1..].find('/').is_none() && !n.contains(".."), "{n}");
    assert!(segment::segment_name("").is_err());
    assert!(segment::segment_name("a\0b").is_err());
    assert_ne!(segment::segment_name("a/b").unwrap(), segment::segment_name("a_b").unwrap());
}

#[test]
fn killed_writer_mid_set_keeps_every_other_item() {
    killed_writer_mid_set(false);
}

#[test]
fn killed_writer_mid_in_place_overwrite_keeps_every_other_item() {
    killed_writer_mid_set(true);
}

/// A child dies halfway through copying a 50,000-byte value into shard 0:
/// into a fresh record, or (`in_place`) over a record of the same size. The
/// next locker rebuilds the shard from its log (shard/recover.rs): every
/// other item of the shard survives; the victim reads as its old value (a
/// fresh record was still PENDING) or, changed in place, as a miss; never torn.
fn killed_writer_mid_set(in_place: bool) {
    let c = cache(4 << 20, 64 << 10);
    assert!(c.geometry().nshards > 1);
    // Keys in shard 0 and in other shards.
    let keys: Vec<Vec<u8>> = (0..400u32).map(|i| format!("k{i}").into_bytes()).collect();
    for k in &keys {
        c.set(k, ENC_BYTES, k, 0).unwrap();
    }
    let victim = keys.iter().find(|k| c.shard_of(c.hash(k)) == 0).unwrap().clone();
    if in_place {
        c.set(&victim, ENC_BYTES, &vec![b'o'; 50_000], 0).unwrap();
    }
    let head0 = c.shard(0).log_head();
    let gen0 = c.shard(0).generation();
    // SAFETY: test-only fork; the child only runs a cache set and then sleeps.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        crate::shard::ops::set_test_pause_ms(60_000);
        let _ = c.set(&victim, ENC_BYTES, &vec![b'x'; 50_000], 0);
        unsafe { libc::_exit(0) };
    }
    // Wait until the child holds shard 0's lock *and* has begun writing
    // (seq odd). Holding the lock alone is not enough: a child killed between
    // taking the lock and its first change leaves seq even, the recovery
    // rightly keeps the data, and the victim's old value is still there
    // (seen once under valgrind, which can stall a process for that long).
    let mut held = false;
    for _ in 0..5000 {
        match c.shard(0).lock(None) {
            Err(Error::WouldBlock) if c.shard(0).write_in_progress() => {
                held = true;
                break;
            }
            Err(Error::WouldBlock) => {}
            Ok(g) => drop(g),
            Err(e) => panic!("{e}"),
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(held, "child never began its write under the lock");
    assert_eq!(c.shard(0).log_head() == head0, in_place, "in place iff the record size is the same");
    assert_eq!(c.get(&victim), Err(Error::LockTimeout), "lock wait must be bounded");
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
    let t = std::time::Instant::now();
    let want = if in_place { None } else { Some(victim.clone()) };
    assert_eq!(get(&c, &victim), want, "a half-written value must never be read");
    assert!(t.elapsed() < Duration::from_secs(1));
    assert_eq!(c.shard(0).generation(), gen0, "recovered, not wiped");
    let s = c.stats();
    assert_eq!(s.counter(Counter::LockRecoveries), 1, "{s:?}");
    assert_eq!(s.counter(Counter::ShardWipes), 0, "{s:?}");
    c.verify().unwrap();
    for k in keys.iter().filter(|k| **k != victim) {
        assert_eq!(get(&c, k).as_deref(), Some(&k[..]), "every other item survives, its shard's too");
    }
    c.set(&victim, ENC_BYTES, b"again", 0).unwrap();
    assert_eq!(get(&c, &victim), Some(b"again".to_vec()));
}

#[test]
fn owner_killed_before_its_first_change_keeps_the_data() {
    let c = cache(4 << 20, 64 << 10);
    let keys: Vec<Vec<u8>> = (0..200u32).map(|i| format!("k{i}").into_bytes()).collect();
    for k in &keys {
        c.set(k, ENC_BYTES, k, 0).unwrap();
    }
    let gen0 = c.shard(0).generation();
    // SAFETY: test-only fork; the child only takes a lock and sleeps.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let g = c.shard(0).lock(None);
        std::thread::sleep(Duration::from_secs(60));
        drop(g);
        unsafe { libc::_exit(0) };
    }
    let mut held = false;
    for _ in 0..5000 {
        match c.shard(0).lock(None) {
            Err(Error::WouldBlock) => {
                held = true;
                break;
            }
            Ok(g) => drop(g),
            Err(e) => panic!("{e}"),
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(held, "child never took the lock");
    assert!(!c.shard(0).write_in_progress());
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
    c.with_shard_index(0, Wait::Bounded, &mut |_| Ok(())).unwrap(); // takes over the dead owner's lock
    let s = c.stats();
    assert_eq!(s.counter(Counter::LockRecoveries), 1, "{s:?}");
    assert_eq!(s.counter(Counter::ShardWipes), 0, "seq was even: nothing to wipe {s:?}");
    assert_eq!(c.shard(0).generation(), gen0);
    for k in &keys {
        assert_eq!(get(&c, k).as_deref(), Some(&k[..]), "every shard keeps its data");
    }
    c.verify().unwrap();
}

#[test]
fn corrupted_bytes_are_detected_and_wiped_never_ub() {
    let c = cache(2 << 20, 4096);
    let g = *c.geometry();
    let mut rng = 0x1234_5678_9abc_def1u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for round in 0..200 {
        for i in 0..300u32 {
            let k = format!("k{}", i + round);
            let _ = c.set(k.as_bytes(), ENC_BYTES, &vec![i as u8; (i % 300) as usize], 0);
        }
        // Flip random bytes anywhere in the shards (headers, index, log) except the mutexes.
        for _ in 0..20 {
            let shard = next() % g.nshards;
            let off = 64 + next() % (g.shard_size - 64);
            let at = g.shard_offset(shard) + off;
            // SAFETY: at < total_size, inside our mapping; this simulates a hostile writer.
            unsafe { *c.segment().base().add(at as usize) ^= (next() | 1) as u8 };
        }
        for i in 0..300u32 {
            let k = format!("k{}", i + round);
            if let Some((_, v)) = c.get(k.as_bytes()).unwrap() {
                // Flipped value bytes can't be detected without checksums;
                // flipped structure must never cause a panic or out-of-bounds read.
                let _ = v;
            }
            let _ = c.delete(format!("k{}", i * 7).as_bytes(), Wait::Bounded);
            let _ = incr(&c, k.as_bytes(), 1);
        }
    }
    assert!(c.stats().counter(Counter::ShardWipes) > 0);
}

#[test]
fn overwrites_never_evict_live_items_while_memory_is_not_full() {
    let c = cache(2 << 20, 16 << 10);
    for i in 0..500u32 {
        c.set(format!("cold{i}").as_bytes(), ENC_BYTES, &[1u8; 200], 0).unwrap();
    }
    // Rewrite a few hot keys many times: the log laps many times over dead records.
    for round in 0..20_000u32 {
        c.set(format!("hot{}", round % 10).as_bytes(), ENC_BYTES, &[2u8; 900], 0).unwrap();
    }
    let s = c.stats();
    assert_eq!(s.counter(Counter::Evictions), 0, "{s:?}");
    for i in 0..500u32 {
        assert!(get(&c, format!("cold{i}").as_bytes()).is_some(), "cold{i} lost");
    }
    c.verify().unwrap();
}

#[test]
fn admin_attach_adopts_the_existing_geometry() {
    let loc = unique();
    let cfg = Config { size: 3 << 20, max_item_size: 2048, shards: 0 };
    let c = ShmCache::open(&loc, &cfg, Duration::from_millis(100)).unwrap();
    c.set(b"k", ENC_BYTES, b"v", 0).unwrap();
    let a = ShmCache::attach_existing(&loc, Duration::from_millis(100)).unwrap();
    assert_eq!(a.geometry(), c.geometry());
    assert_eq!(get(&a, b"k"), Some(b"v".to_vec()));
    segment::destroy(c.name()).unwrap();
    let e = ShmCache::attach_existing(&loc, Duration::from_millis(100)).err().expect("no segment: an error");
    assert_eq!(e, Error::NotCreated(loc.clone()));
    assert_eq!(e.to_string(), format!("no process on this host has created the cache '{loc}' yet"));
}

#[test]
fn an_admin_attachment_follows_a_migration_wanting_no_geometry() {
    let loc = unique();
    let cfg = Config { size: 4 << 20, max_item_size: 1024, shards: 0 };
    let c = TestCache(Some(ShmCache::open(&loc, &cfg, Duration::from_millis(100)).unwrap()));
    c.set(b"k", ENC_BYTES, b"v", 0).unwrap();
    let admin = ShmCache::attach_existing(&loc, Duration::from_millis(100)).unwrap();
    let old = *c.geometry();
    let other = Config { size: 8 << 20, max_item_size: 2048, shards: 0 };
    let (new, _) = migrated(&c, &other);
    let new_geo = *new.geometry();
    assert_eq!(get(&admin, b"k"), Some(b"v".to_vec()), "the admin's calls follow to the successor");
    assert_eq!(admin.successor().unwrap().geometry(), &new_geo);
    assert_eq!(admin.successor().unwrap().requested(), &new_geo, "an admin's request is what is in force");
    new.close_keep();
    // The admin's attachment to the successor wants no geometry: the old one
    // is not wanted there. (The new one may be, for a moment, by a child that
    // a concurrent test forked while `new` was open: it inherits the open.)
    let observer = ShmCache::attach_existing(&loc, Duration::from_millis(100)).unwrap();
    assert_eq!(observer.segment().inode(), admin.successor().unwrap().segment().inode());
    assert!(!observer.segment().wanted(old.key()), "the admin's successor wants the old geometry");
    segment::destroy(observer.name()).unwrap();
}

/// A self-checking value: every byte derives from (key index, round).
fn stamp(i: u32, round: u32, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + 8);
    v.extend_from_slice(&i.to_le_bytes());
    v.extend_from_slice(&round.to_le_bytes());
    v.extend((0..len).map(|j| (i.wrapping_mul(31).wrapping_add(round).wrapping_add(j as u32)) as u8));
    v
}
fn stamp_ok(i: u32, v: &[u8]) -> bool {
    if v.len() < 8 {
        return false;
    }
    let ki = u32::from_le_bytes(v[..4].try_into().unwrap());
    let round = u32::from_le_bytes(v[4..8].try_into().unwrap());
    ki == i && v == stamp(i, round, v.len() - 8)
}

#[test]
fn lock_free_reads_never_see_torn_or_foreign_values() {
    // Sizes change between rounds: fresh records, compaction and eviction.
    torn_read_check(|round, i| ((round as usize * 7 + i * 13) % 3000) + 1);
}

#[test]
fn lock_free_reads_never_see_torn_values_of_in_place_overwrites() {
    // Each key keeps its size: every overwrite after the first is in place.
    torn_read_check(|_, i| 1000 + i * 24);
}

/// Readers check every value they get (lock-free and locked) while a writer
/// overwrites 64 keys with values of `len(round, key index)` bytes.
fn torn_read_check(len: fn(u32, usize) -> usize) {
    // One small shard so writers constantly overwrite, compact and evict
    // exactly where readers read.
    let cfg = Config { size: 256 << 10, max_item_size: 4096, shards: 1 };
    let c = TestCache(Some(ShmCache::open(&unique(), &cfg, Duration::from_millis(500)).unwrap()));
    let keys: Vec<Vec<u8>> = (0..64u32).map(|i| format!("key{i}").into_bytes()).collect();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (checked, lockfree) = (AtomicU32::new(0), AtomicU32::new(0));
    let enough = || checked.load(Ordering::Relaxed) > 1000 && lockfree.load(Ordering::Relaxed) > 100;
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut round = 0u32;
            while !stop.load(Ordering::Relaxed) {
                for (i, k) in keys.iter().enumerate() {
                    let len = len(round, i);
                    // A lock timeout is allowed (a descheduled holder; under
                    // valgrind often): this test is about what reads return.
                    match c.set(k, ENC_BYTES, &stamp(i as u32, round, len), 0) {
                        Ok(_) | Err(Error::LockTimeout) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
                round += 1;
            }
        });
        // Readers run for 1.5 s, and on until they have checked enough
        // values (valgrind runs this some 50x slower), for at most 60 s.
        let readers: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let t = std::time::Instant::now();
                    while (t.elapsed() < Duration::from_millis(1500) || !enough())
                        && t.elapsed() < Duration::from_secs(60)
                    {
                        for (i, k) in keys.iter().enumerate() {
                            let h = c.hash(k);
                            let now = crate::time::now_ms();
                            // Count how often the lock-free path itself answers.
                            if let Some(Some(v)) = c.shard_for(h).get_optimistic(k, h, now, |_, v| v.to_vec()) {
                                assert!(stamp_ok(i as u32, &v), "torn or foreign value via the lock-free path");
                                lockfree.fetch_add(1, Ordering::Relaxed);
                            }
                            match c.get(k) {
                                Ok(Some((_, v))) => {
                                    assert!(stamp_ok(i as u32, &v), "torn or foreign value");
                                    checked.fetch_add(1, Ordering::Relaxed);
                                }
                                Ok(None) | Err(Error::LockTimeout) => {}
                                Err(e) => panic!("{e}"),
                            }
                        }
                    }
                })
            })
            .collect();
        // Stop the writer before re-raising a reader's panic, or the scope
        // would wait for the writer forever instead of failing.
        let joined: Vec<_> = readers.into_iter().map(|r| r.join()).collect();
        stop.store(true, Ordering::Relaxed);
        for r in joined {
            if let Err(p) = r {
                std::panic::resume_unwind(p);
            }
        }
    });
    assert!(checked.load(Ordering::Relaxed) > 1000);
    assert!(lockfree.load(Ordering::Relaxed) > 100, "lock-free path never answered");
    c.verify().unwrap();
}

#[test]
fn lock_free_get_defers_bookkeeping_to_the_lock() {
    let c = cache(4 << 20, 1024);
    let k = b"k";
    let h = c.hash(k);
    c.set(k, ENC_BYTES, b"v", 0).unwrap();
    let sh = c.shard_for(h);
    let now = crate::time::now_ms();
    // Not yet visited: the first read must take the lock (to set the bit).
    assert_eq!(sh.get_optimistic(k, h, now, |_, v| v.to_vec()), None);
    assert_eq!(get(&c, k), Some(b"v".to_vec()));
    assert_eq!(sh.get_optimistic(k, h, now, |_, v| v.to_vec()), Some(Some(b"v".to_vec())));
    assert_eq!(sh.get_optimistic(b"nope", c.hash(b"nope"), now, |_, v| v.to_vec()), Some(None));
    // Expired: the lock path reclaims it.
    let max = c.geometry().max_item_size;
    c.with_shard(h, Wait::Bounded, |g| {
        g.set(&Item { key: k, hash: h, enc: ENC_BYTES, value: b"v", expires: now + 5 }, SetMode::Set, now, max)
    })
    .unwrap();
    c.with_shard(h, Wait::Bounded, |g| g.get(k, h, now, |_, _| ())).unwrap();
    assert_eq!(sh.get_optimistic(k, h, now + 10, |_, v| v.to_vec()), None);
    // A writer holding the lock mid-write sends readers to the lock.
    let mut g = sh.lock(None).unwrap();
    g.delete(b"other", c.hash(b"other"), now).unwrap();
    g.touch(k, h, 0, now).unwrap();
    assert_eq!(sh.get_optimistic(k, h, now, |_, v| v.to_vec()), None);
    drop(g);
    assert_eq!(sh.get_optimistic(k, h, now, |_, v| v.to_vec()), Some(Some(b"v".to_vec())));
}

/// Regression (found by fuzz_model's corruption harness): an index slot whose
/// offset half was damaged to 0 (tag intact) made `entry_off` compute 0 - 1:
/// a panic wherever overflow checks are on (debug builds, cargo fuzz). It
/// must be detected as corruption instead: the shard is wiped, a miss results.
#[test]
fn damaged_index_slot_with_zero_offset_is_corruption_not_a_panic() {
    let c = cache(2 << 20, 4096);
    let g = *c.geometry();
    let k = b"victim";
    let h = c.hash(k);
    c.set(k, ENC_BYTES, b"v", 0).unwrap();
    let index = g.shard_offset(c.shard_of(h) as u64) + crate::mem::layout::SHARD_HEADER_SIZE;
    let mut damaged = 0;
    for i in 0..g.index_cap {
        // SAFETY: slot i of this shard's index lies inside our mapping; a stray writer.
        unsafe {
            let p = c.segment().base().add((index + i * 8) as usize).cast::<u64>();
            if p.read() >> 32 == h & 0xffff_ffff {
                p.write(p.read() & !0xffff_ffff);
                damaged += 1;
            }
        }
    }
    assert_eq!(damaged, 1);
    let wipes = c.stats().counter(Counter::ShardWipes);
    assert_eq!(get(&c, k), None);
    assert_eq!(c.stats().counter(Counter::ShardWipes), wipes + 1, "damage must wipe the shard");
    c.verify().unwrap();
    c.set(k, ENC_BYTES, b"again", 0).unwrap();
    assert_eq!(get(&c, k), Some(b"again".to_vec()));
}

/// Regression (fuzz_model corruption harness): `stats()` reads every shard's
/// counts and counters without the locks; damaged ones made its sums
/// overflow (a panic with overflow checks). They must saturate/wrap, and the
/// damaged shard is wiped at its next lock.
#[test]
fn stats_of_a_damaged_shard_do_not_overflow() {
    let c = cache(2 << 20, 4096);
    let g = *c.geometry();
    assert!(g.nshards > 1);
    for i in 0..2 {
        c.shard(i).header().counters.add(Counter::Hits, u64::MAX - 1);
        // SAFETY: the shard header's `items` word (offset 104, checked) lies in our mapping.
        unsafe {
            let p = c.segment().base().add((g.shard_offset(i as u64) + 104) as usize).cast::<u64>();
            assert_eq!(p.read(), c.shard(i).items());
            p.write(u64::MAX);
        }
    }
    let s = c.stats();
    assert_eq!(s.items, u64::MAX);
    for i in 0..g.nshards as usize {
        drop(c.shard(i).lock(None).unwrap()); // insane counts: wiped here
    }
    assert_eq!(c.stats().items, 0);
    c.verify().unwrap();
}

/// Regression (fuzz_model corruption harness): `verify()` passed a shard
/// whose index held a slot pointing at no live record, or whose log held a
/// record of unknown kind; the damage surfaced later as a wipe. Both are
/// reported now.
#[test]
fn verify_sees_stray_index_slots_and_unknown_record_kinds() {
    let c = cache(2 << 20, 4096);
    let g = *c.geometry();
    for i in 0..50u32 {
        c.set(&i.to_le_bytes(), ENC_BYTES, b"value", 0).unwrap();
    }
    c.delete(&7u32.to_le_bytes(), Wait::Bounded).unwrap(); // a dead record at a known key's place
    c.verify().unwrap();
    let base = c.segment().base();
    let index = g.shard_offset(0) + crate::mem::layout::SHARD_HEADER_SIZE;
    // SAFETY: slots of shard 0's index, inside our mapping; a stray writer.
    let slot = |i: u64| unsafe { base.add((index + i * 8) as usize).cast::<u64>() };
    let empty = (0..g.index_cap).find(|&i| unsafe { slot(i).read() } == 0).unwrap();
    unsafe { slot(empty).write(crate::shard::index::entry(0xdead_beef, 8)) };
    match c.verify() {
        Err(Error::Corrupt(m)) => assert!(m.contains("index"), "{m}"),
        r => panic!("stray slot not seen: {r:?}"),
    }
    // verify() wiped shard 0 (its index too): the slot is empty again.
    assert_eq!(unsafe { slot(empty).read() }, 0, "verify did not wipe the damaged shard");
    c.verify().unwrap();
    // A dead record whose kind byte was damaged, in a fresh cache (the wipe
    // left shard 0's old records in its log bytes).
    drop(c);
    let c = cache(2 << 20, 4096);
    let base = c.segment().base();
    for i in 0..50u32 {
        c.set(&i.to_le_bytes(), ENC_BYTES, b"value", 0).unwrap();
    }
    c.delete(&7u32.to_le_bytes(), Wait::Bounded).unwrap();
    c.verify().unwrap();
    let h = c.hash(&7u32.to_le_bytes());
    let s = c.shard_of(h) as u64;
    let log = g.shard_offset(s) + crate::mem::layout::SHARD_HEADER_SIZE + g.index_cap * 8;
    let kinds: Vec<u64> = (0..g.data_size / 8)
        // SAFETY: reads of the shard's log, inside our mapping.
        .filter(|&w| unsafe { *base.add((log + w * 8) as usize) } == crate::shard::log::KIND_DEAD
            && unsafe { base.add((log + w * 8 + 4) as usize).cast::<u32>().read() } == crate::mem::layout::rec_size(4, 5) as u32)
        .collect();
    assert_eq!(kinds.len(), 1, "exactly one dead record");
    unsafe { *base.add((log + kinds[0] * 8) as usize) = 9 };
    match c.verify() {
        Err(Error::Corrupt(m)) => assert!(m.contains("kind"), "{m}"),
        r => panic!("unknown kind not seen: {r:?}"),
    }
}

/// Regression (fuzz_model corruption harness): a damaged sweep cursor past
/// the head (or inside a record) passed `verify()`, then made the sweep read
/// a record header mid-record once the head moved on: a wipe long after
/// verify said the shard was sound. `verify()` reports it now.
#[test]
fn verify_sees_a_damaged_sweep_cursor() {
    let c = cache(2 << 20, 4096);
    let g = *c.geometry();
    let keys: Vec<[u8; 4]> =
        (0..2000u32).map(|i| i.to_le_bytes()).filter(|k| c.shard_of(c.hash(k)) == 0).take(20).collect();
    for k in &keys {
        c.set(k, ENC_BYTES, &[1u8; 100], 0).unwrap();
    }
    c.verify().unwrap();
    // SAFETY: words of shard 0's header (offsets checked against `items`), inside our mapping.
    let word = |off: u64| unsafe { c.segment().base().add((g.shard_offset(0) + off) as usize).cast::<u64>() };
    assert_eq!(unsafe { word(104).read() }, c.shard(0).items(), "ShardHeader layout changed");
    // (head, tail, cursor) of shard 0 after (re)filling it; verify() wipes
    // the shard it finds damaged, so each damage starts from a refill.
    let fill = || {
        for k in &keys {
            c.set(k, ENC_BYTES, &[1u8; 100], 0).unwrap();
        }
        let hdr = unsafe { (word(80).read(), word(88).read(), word(96).read()) };
        assert_eq!(hdr.0 - hdr.1, 20 * crate::mem::layout::rec_size(4, 100));
        hdr
    };
    for which in 0..2 {
        let (head, tail, _) = fill();
        let bad = [head + 8, tail + 8][which];
        unsafe { word(96).write(bad) };
        let wipes = c.stats().counter(Counter::ShardWipes);
        match c.verify() {
            Err(Error::Corrupt(m)) => assert!(m.contains("cursor"), "{m}"),
            r => panic!("cursor {bad} (head {head}) not seen: {r:?}"),
        }
        assert_eq!(c.stats().counter(Counter::ShardWipes), wipes + 1, "verify did not wipe the damaged shard");
    }
    let (_, _, cursor) = fill();
    unsafe { word(96).write(cursor) };
    c.verify().unwrap();
}

/// `verify()` wipes a shard it finds damaged (its `Error::Corrupt` says
/// so), through the same wipe as an operation that finds damage, and still
/// reports the damage; other shards keep their items, and the wiped one works.
#[test]
fn verify_wipes_a_damaged_shard_and_reports_it() {
    let c = cache(2 << 20, 4096);
    let g = *c.geometry();
    assert!(g.nshards > 1);
    let keys: Vec<[u8; 4]> = (0..200u32).map(|i| i.to_le_bytes()).collect();
    for k in &keys {
        c.set(k, ENC_BYTES, b"value", 0).unwrap();
    }
    let (items, _) = c.verify().unwrap();
    assert_eq!(items, 200);
    let in0 = keys.iter().filter(|k| c.shard_of(c.hash(&k[..])) == 0).count() as u64;
    assert!(in0 > 0 && in0 < 200);
    // Damage shard 0's live byte count (the header's `live_bytes`, offset 112).
    // SAFETY: a word of shard 0's header inside our mapping; a stray writer.
    let p = unsafe { c.segment().base().add((g.shard_offset(0) + 112) as usize).cast::<u64>() };
    assert_eq!(unsafe { p.read() }, c.shard(0).live_bytes(), "ShardHeader layout changed");
    unsafe { p.write(p.read() - 8) };
    let (wipes, gen) = (c.stats().counter(Counter::ShardWipes), c.shard(0).generation());
    match c.verify() {
        Err(e @ Error::Corrupt(_)) => assert!(e.to_string().contains("wiped"), "{e}"),
        r => panic!("damage not reported: {r:?}"),
    }
    assert_eq!(c.stats().counter(Counter::ShardWipes), wipes + 1);
    assert_eq!(c.shard(0).generation(), gen + 1);
    assert_eq!(c.shard(0).items(), 0);
    assert_eq!(c.verify().unwrap(), (200 - in0, (200 - in0) * crate::mem::layout::rec_size(4, 5)));
    let k0 = keys.iter().find(|k| c.shard_of(c.hash(&k[..])) == 0).unwrap();
    assert_eq!(get(&c, k0), None);
    c.set(k0, ENC_BYTES, b"again", 0).unwrap();
    assert_eq!(get(&c, k0), Some(b"again".to_vec()));
}

/// `get_many` counts the keys whose shard lock timed out (they are None, not
/// misses); the other keys are answered.
#[test]
fn get_many_counts_keys_whose_lock_timed_out() {
    let c = cache(4 << 20, 1024);
    let keys: Vec<[u8; 4]> = (0..64u32).map(|i| i.to_le_bytes()).collect();
    for k in &keys {
        c.set(k, ENC_BYTES, k, 0).unwrap();
    }
    let busy = c.shard_of(c.hash(&keys[0]));
    let in_busy = keys.iter().filter(|k| c.shard_of(c.hash(&k[..])) == busy).count();
    assert!(in_busy < keys.len());
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let (cr, k0) = (&*c, keys[0]);
    std::thread::scope(|s| {
        s.spawn(move || {
            // A write in progress (seq odd): lock-free reads of this shard give up.
            cr.with_shard(cr.hash(&k0), Wait::Bounded, |g| {
                g.delete(&k0, cr.hash(&k0), crate::time::now_ms())?;
                locked_tx.send(()).unwrap();
                done_rx.recv().unwrap();
                Ok(())
            })
            .unwrap();
        });
        locked_rx.recv().unwrap();
        let (got, timed_out) = c.get_many(&keys).unwrap();
        done_tx.send(()).unwrap();
        assert_eq!(timed_out, in_busy);
        for (k, v) in keys.iter().zip(&got) {
            if c.shard_of(c.hash(k)) == busy {
                assert!(v.is_none());
            } else {
                assert_eq!(v.as_ref().unwrap().1, k);
            }
        }
    });
    assert!(c.stats().counter(Counter::LockTimeouts) >= 1);
}

#[test]
fn keys_sharing_the_32_bit_tag_are_not_corruption() {
    // The index keeps 32 bits of the hash as a tag; two keys of one shard
    // with equal tags are a collision (certain in a big cache), which once
    // was taken for damage and wiped the shard.
    let c = cache(8 << 20, 1024);
    let mut seen: HashMap<u32, Vec<u8>> = HashMap::new();
    let (a, b) = (0u64..)
        .find_map(|i| {
            let k = format!("key:{i}").into_bytes();
            let h = c.hash(&k);
            match seen.get(&(h as u32)) {
                Some(other) if c.shard_of(c.hash(other)) == c.shard_of(h) => Some((other.clone(), k)),
                _ => {
                    seen.insert(h as u32, k);
                    None
                }
            }
        })
        .unwrap();
    assert_ne!(c.hash(&a), c.hash(&b));
    for (k, v) in [(&a, b"A"), (&b, b"B")] {
        c.set(k, ENC_BYTES, v, 0).unwrap();
    }
    assert_eq!(get(&c, &a).as_deref(), Some(&b"A"[..]));
    assert_eq!(get(&c, &b).as_deref(), Some(&b"B"[..]));
    c.set(&b, ENC_BYTES, b"B2", 0).unwrap();
    assert_eq!(get(&c, &b).as_deref(), Some(&b"B2"[..]));
    assert!(c.delete(&a, Wait::Bounded).unwrap());
    assert_eq!(get(&c, &a), None);
    assert_eq!(get(&c, &b).as_deref(), Some(&b"B2"[..]));
    c.verify().unwrap();
    assert_eq!(c.stats().counter(Counter::ShardWipes), 0, "a tag collision wiped a shard");
}

#[test]
fn compare_and_set_and_delete() {
    let c = cache(4 << 20, 64 << 10);
    let k = b"lock:job";
    let (h, max) = (c.hash(k), c.geometry().max_item_size);
    let mine = (ENC_BYTES, &b"owner-1"[..]);
    let theirs = (ENC_BYTES, &b"owner-2"[..]);
    // Missing: nothing stored, nothing deleted.
    assert!(!c.compare_and_set(k, mine, (ENC_BYTES, b"x"), 0, false, Wait::Bounded).unwrap());
    assert!(!c.compare_and_delete(k, mine, Wait::Bounded).unwrap());
    assert_eq!(get(&c, k), None);
    c.set(k, ENC_BYTES, b"owner-1", 0).unwrap();
    // Unequal bytes, or equal bytes under another encoding: refused.
    assert!(!c.compare_and_set(k, theirs, (ENC_BYTES, b"x"), 0, false, Wait::Bounded).unwrap());
    assert!(!c.compare_and_set(k, (ENC_STR, b"owner-1"), (ENC_BYTES, b"x"), 0, false, Wait::Bounded).unwrap());
    assert!(!c.compare_and_delete(k, theirs, Wait::Bounded).unwrap());
    assert_eq!(get(&c, k), Some(b"owner-1".to_vec()));
    // Equal, same record size: written in place (no log space), expiry set.
    let sh = c.shard_for(h);
    let head = sh.log_head();
    let far = time::now_ms() + 100_000;
    assert!(c.compare_and_set(k, mine, (ENC_BYTES, b"owner-2"), far, false, Wait::Bounded).unwrap());
    assert_eq!(sh.log_head(), head, "a same-size compare-and-set used log space");
    assert_eq!(get(&c, k), Some(b"owner-2".to_vec()));
    assert!(matches!(c.ttl(k, Wait::Bounded).unwrap(), Ttl::Ms(ms) if ms > 99_000));
    // Equal, another size: appended, the old record dead, the value new, expiry never.
    let long = vec![b'z'; 500];
    assert!(c.compare_and_set(k, theirs, (ENC_INT, &long), 0, false, Wait::Bounded).unwrap());
    assert!(sh.log_head() > head);
    assert_eq!(c.get(k).unwrap(), Some((ENC_INT, long.clone())));
    assert_eq!(c.ttl(k, Wait::Bounded).unwrap(), Ttl::Never);
    assert_eq!(c.stats().items, 1);
    c.verify().unwrap();
    // Too large a new value: refused whether or not it matches, nothing changed.
    let huge = vec![0u8; 64 << 10];
    assert!(matches!(
        c.compare_and_set(k, (ENC_INT, &long), (ENC_BYTES, &huge), 0, false, Wait::Bounded),
        Err(Error::TooLarge { .. })
    ));
    assert!(matches!(
        c.compare_and_set(k, mine, (ENC_BYTES, &huge), 0, false, Wait::Bounded),
        Err(Error::TooLarge { .. })
    ));
    assert_eq!(c.get(k).unwrap(), Some((ENC_INT, long.clone())));
    // Delete only by the owner.
    assert!(!c.compare_and_delete(k, (ENC_BYTES, &long), Wait::Bounded).unwrap());
    assert!(c.compare_and_delete(k, (ENC_INT, &long), Wait::Bounded).unwrap());
    assert_eq!(get(&c, k), None);
    assert!(!c.compare_and_delete(k, (ENC_INT, &long), Wait::Bounded).unwrap());
    // Expired counts as missing (a dead holder's lock is taken with a plain add).
    let at = |f: &mut dyn FnMut(&mut ShardGuard) -> crate::Result<bool>| c.with_shard(h, Wait::Bounded, f).unwrap();
    assert!(at(&mut |g| g.set(
        &Item { key: k, hash: h, enc: ENC_BYTES, value: b"old", expires: 2000 },
        SetMode::Set,
        1000,
        max
    )));
    let new = Item { key: k, hash: h, enc: ENC_BYTES, value: b"new", expires: 0 };
    assert!(!at(&mut |g| g.compare_and_set(&new, (ENC_BYTES, b"old"), 2000, max)));
    assert!(!at(&mut |g| g.compare_and_delete(k, h, (ENC_BYTES, b"old"), 2000)));
    assert!(at(&mut |g| g.set(
        &Item { key: k, hash: h, enc: ENC_BYTES, value: b"old", expires: 2000 },
        SetMode::Set,
        1000,
        max
    )));
    assert!(at(&mut |g| g.compare_and_set(&new, (ENC_BYTES, b"old"), 1999, max)));
    assert_eq!(get(&c, k), Some(b"new".to_vec()));
    c.verify().unwrap();
}

#[test]
fn incr_of_any_size_promotes_and_demotes() {
    let c = cache(4 << 20, 64 << 10);
    let big = |s: &str| Int::from(s.parse::<BigInt>().unwrap());
    let two63 = big("9223372036854775808");
    let k = b"n";
    let sh = c.shard_for(c.hash(k));
    // i64::MAX + 1 = 2**63: promoted to ENC_BIGINT (9 bytes: the same 48-byte
    // record as 8 bytes with a 1-byte key, so rewritten in place), and back.
    c.set(k, ENC_INT, &i64::MAX.to_le_bytes(), 0).unwrap();
    let head = sh.log_head();
    assert_eq!(incr(&c, k, 1), Ok(two63.clone()));
    assert_eq!(c.get(k).unwrap(), Some((ENC_BIGINT, vec![0, 0, 0, 0, 0, 0, 0, 0x80, 0])));
    assert_eq!(sh.log_head(), head, "a same-size promotion used log space");
    assert_eq!(incr(&c, k, -1), Ok(Int::Small(i64::MAX)));
    assert_eq!(c.get(k).unwrap(), Some((ENC_INT, i64::MAX.to_le_bytes().to_vec())));
    // Below i64::MIN and back.
    c.set(k, ENC_INT, &i64::MIN.to_le_bytes(), 0).unwrap();
    assert_eq!(incr(&c, k, -1), Ok(big("-9223372036854775809")));
    assert_eq!(c.get(k).unwrap().unwrap().0, ENC_BIGINT);
    assert_eq!(incr(&c, k, 1), Ok(Int::Small(i64::MIN)));
    // Big deltas on small values, big plus big, a big value growing past a
    // record size (appended: the set path), a sum that cancels to an i64.
    c.set(k, ENC_INT, &0i64.to_le_bytes(), 0).unwrap();
    let d = big("1267650600228229401496703205376"); // 2**100
    assert_eq!(c.incr(k, &d, false, Wait::Bounded), Ok(d.clone()));
    let head = sh.log_head();
    let mut want = d.to_bigint();
    for _ in 0..40 {
        // Each step doubles: 2**100 .. 2**140, the record grows from 56 to 64 bytes.
        want *= 2;
        let cur = Int::from(want.clone() / 2);
        assert_eq!(c.incr(k, &cur, false, Wait::Bounded), Ok(Int::from(want.clone())));
    }
    assert!(sh.log_head() > head, "the grown value was not appended");
    assert_eq!(c.get(k).unwrap(), Some((ENC_BIGINT, want.to_signed_bytes_le())));
    assert_eq!(c.incr(k, &Int::from(-want.clone() + 7), false, Wait::Bounded), Ok(Int::Small(7)));
    assert_eq!(c.get(k).unwrap(), Some((ENC_INT, 7i64.to_le_bytes().to_vec())));
    // A stored ENC_BIGINT from elsewhere (any bytes, even non-minimal).
    c.set(k, ENC_BIGINT, &[5, 0, 0, 0], 0).unwrap();
    assert_eq!(incr(&c, k, 1), Ok(Int::Small(6)));
    assert_eq!(c.stats().items, 1);
    c.verify().unwrap();

    // The expiry is kept, whether in place, promoted or appended.
    let (h, max) = (c.hash(k), c.geometry().max_item_size);
    let put = |enc, v: &[u8], exp| {
        c.with_shard(h, Wait::Bounded, |g| {
            g.set(&Item { key: k, hash: h, enc, value: v, expires: exp }, SetMode::Set, 1000, max)
        })
        .unwrap()
    };
    let inc = |d: &Int, create, now| c.with_shard(h, Wait::Bounded, |g| g.incr(k, h, d, create, now, max));
    let ttl = |now| c.with_shard(h, Wait::Bounded, |g| g.ttl(k, h, now)).unwrap();
    put(ENC_INT, &(i64::MAX - 1).to_le_bytes(), 5000);
    assert_eq!(inc(&Int::Small(1), false, 1000), Ok(Int::Small(i64::MAX)));
    assert_eq!(inc(&Int::Small(1), false, 1000), Ok(two63.clone()));
    assert_eq!(inc(&d, false, 1000).map(|_| ()), Ok(()));
    assert_eq!(ttl(1000), Ttl::Ms(4000));
    // Expired: gone (KeyError), or with create stored as delta with no expiry.
    assert_eq!(inc(&Int::Small(1), false, 5000), Err(Error::NotFound));
    put(ENC_INT, &9i64.to_le_bytes(), 5000);
    assert_eq!(inc(&Int::Small(3), true, 5000), Ok(Int::Small(3)));
    assert_eq!(ttl(5000), Ttl::Never);
    // Missing with create, small and big.
    assert_eq!(c.incr(b"fresh", &Int::Small(-4), true, Wait::Bounded), Ok(Int::Small(-4)));
    assert_eq!(c.get(b"fresh").unwrap(), Some((ENC_INT, (-4i64).to_le_bytes().to_vec())));
    assert_eq!(c.incr(b"fresh2", &two63, true, Wait::Bounded), Ok(two63.clone()));
    assert_eq!(c.get(b"fresh2").unwrap().unwrap().0, ENC_BIGINT);
    assert_eq!(incr(&c, b"nothing", 1), Err(Error::NotFound));
    assert_eq!(get(&c, b"nothing"), None);
    // Not an integer: refused, with or without create, nothing changed.
    for (enc, v) in [(ENC_BYTES, &b"12345678"[..]), (ENC_STR, b"7"), (ENC_INT, b"1234")] {
        c.set(b"s", enc, v, 0).unwrap();
        assert_eq!(c.incr(b"s", &Int::Small(1), true, Wait::Bounded), Err(Error::NotInteger));
        assert_eq!(c.incr(b"s", &two63, false, Wait::Bounded), Err(Error::NotInteger));
        assert_eq!(c.get(b"s").unwrap(), Some((enc, v.to_vec())));
    }
    // A sum too large for MAX_ITEM_SIZE is refused and changes nothing.
    // The largest positive integer of its length (0xff.. 0x7f): plus 1 needs one more byte.
    let huge = vec![0xffu8; (64 << 10) - 2];
    c.set(b"h", ENC_BIGINT, &[&huge[..], &[0x7f]].concat(), 0).unwrap();
    let r = c.incr(b"h", &big("1"), false, Wait::Bounded);
    assert!(matches!(r, Err(Error::TooLarge { .. })), "{r:?}");
    assert_eq!(c.get(b"h").unwrap().unwrap().1.len(), huge.len() + 1);
    c.verify().unwrap();
}

/// Run `scan` to its end slice by slice, checking each slice's bound
/// (at most `count` steps, unless it is a shard's final pass), with `between`
/// run after every slice; every key returned, in order.
fn scan_all(c: &ShmCache, prefix: &[u8], count: usize, mut between: impl FnMut(usize)) -> Vec<Vec<u8>> {
    let mut s = c.scan(prefix, count);
    let (mut out, mut n) = (Vec::new(), 0);
    while !s.done(c.shards()) {
        let keys = s.slice(c.shards(), Some(c.lock_timeout())).unwrap();
        let (steps, last) = s.last_slice();
        assert!(last || steps <= count, "a slice walked {steps} steps, more than count={count}");
        out.extend(keys);
        n += 1;
        between(n);
    }
    out
}

/// Each key of `want` exactly once in `got`, and nothing in `got` twice.
fn exactly_once(got: &[Vec<u8>], want: &[Vec<u8>]) {
    let mut n: HashMap<&[u8], usize> = HashMap::new();
    for k in got {
        *n.entry(k).or_default() += 1;
    }
    if let Some((k, c)) = n.iter().find(|(_, c)| **c > 1) {
        panic!("{:?} returned {c} times", String::from_utf8_lossy(k));
    }
    let missing: Vec<_> = want.iter().filter(|k| !n.contains_key(&k[..])).map(|k| String::from_utf8_lossy(k)).collect();
    assert!(missing.is_empty(), "{} keys never returned, e.g. {:?}", missing.len(), &missing[..missing.len().min(5)]);
}

#[test]
fn scan_returns_every_key_once_in_bounded_slices() {
    let c = cache(4 << 20, 4096);
    assert!(c.shards().count() > 1);
    let keys: Vec<Vec<u8>> = (0..5000u32).map(|i| format!("user:{i}").into_bytes()).collect();
    for (i, k) in keys.iter().enumerate() {
        c.set(k, ENC_BYTES, &vec![1u8; i % 300], 0).unwrap();
    }
    // Dead records (size-changing overwrites, deletes) and an expired item in the logs.
    for k in keys.iter().step_by(7) {
        c.set(k, ENC_BYTES, &[2u8; 333], 0).unwrap();
    }
    for i in 0..500u32 {
        let k = format!("gone:{i}").into_bytes();
        c.set(&k, ENC_BYTES, b"x", 0).unwrap();
        c.delete(&k, Wait::Bounded).unwrap();
    }
    let h = c.hash(b"user:expired");
    let max = c.geometry().max_item_size;
    c.with_shard(h, Wait::Bounded, |g| {
        g.set(&Item { key: b"user:expired", hash: h, enc: ENC_BYTES, value: b"v", expires: 1 }, SetMode::Set, 0, max)
    })
    .unwrap();
    c.set(b"other:1", ENC_BYTES, b"v", 0).unwrap();
    for count in [1, 3, 64, 1000, 100_000] {
        let mut all = keys.clone();
        all.push(b"other:1".to_vec());
        let got = scan_all(&c, b"", count, |_| {});
        exactly_once(&got, &all);
        assert_eq!(got.len(), all.len(), "count={count}: the expired item or a deleted key was returned");
    }
    // Prefix filtering: bytes of the stored key.
    let got = scan_all(&c, b"user:", 50, |_| {});
    exactly_once(&got, &keys);
    assert_eq!(got.len(), keys.len());
    let got = scan_all(&c, b"user:49", 50, |_| {});
    let want: Vec<Vec<u8>> = keys.iter().filter(|k| k.starts_with(b"user:49")).cloned().collect();
    exactly_once(&got, &want);
    assert_eq!(got.len(), 111); // 49, 490..=499, 4900..=4999
    assert!(scan_all(&c, b"nobody", 50, |_| {}).is_empty());
    // next_keys: never an empty batch; None at the end (and again after it).
    let mut s = c.scan(b"other", 10);
    assert_eq!(c.scan_next(&mut s).unwrap(), Some(vec![b"other:1".to_vec()]));
    assert_eq!(c.scan_next(&mut s).unwrap(), None);
    assert_eq!(c.scan_next(&mut s).unwrap(), None);
    // An empty cache: nothing.
    c.clear().unwrap();
    let mut s = c.scan(b"", 1000);
    assert_eq!(c.scan_next(&mut s).unwrap(), None);
}

#[test]
fn scan_survives_a_wiped_shard_mid_scan() {
    let c = cache(4 << 20, 4096);
    let keys: Vec<Vec<u8>> = (0..6000u32).map(|i| format!("k{i}").into_bytes()).collect();
    for k in &keys {
        c.set(k, ENC_BYTES, b"value", 0).unwrap();
    }
    // Part-way through shard 1 (its first slice done), wipe it and set its
    // keys again (new records at a fresh tail): none may come back twice.
    let in_shard = |i: usize| keys.iter().filter(|k| c.shard_of(c.hash(k)) == i).cloned().collect::<Vec<_>>();
    let (s1, s2) = (in_shard(1), in_shard(2));
    assert!(s1.len() > 40 && s2.len() > 40, "{} {}", s1.len(), s2.len());
    let mut s = c.scan(b"", 16);
    let mut got: Vec<Vec<u8>> = Vec::new();
    while s.last_slice().0 == 0 || got.iter().all(|k| c.shard_of(c.hash(k)) != 1) {
        assert!(!s.done(c.shards()));
        got.extend(s.slice(c.shards(), Some(c.lock_timeout())).unwrap());
    }
    let gen = c.shard(1).generation();
    c.with_shard_index(1, Wait::Bounded, &mut |g: &mut ShardGuard| {
        g.wipe();
        Ok(())
    })
    .unwrap();
    assert_eq!(c.shard(1).generation(), gen + 1);
    for k in &s1 {
        c.set(k, ENC_BYTES, b"again", 0).unwrap();
    }
    while let Some(k) = c.scan_next(&mut s).unwrap() {
        got.extend(k);
    }
    // Shard 1's keys: each at most once (some before the wipe, the rest after).
    // Every other shard's keys: exactly once.
    let others: Vec<Vec<u8>> = keys.iter().filter(|k| c.shard_of(c.hash(k)) != 1).cloned().collect();
    exactly_once(&got, &others);
    exactly_once(&got, &s2);
    assert_eq!(got.iter().filter(|k| c.shard_of(c.hash(k)) == 1).count(), s1.len());

    // A shard found corrupt by the slice is wiped (and the slice rerun): its
    // keys are lost, the others still exactly once.
    let mut s = c.scan(b"", 8);
    let mut got: Vec<Vec<u8>> = Vec::new();
    let pos = loop {
        if let (2, Some(p)) = s.position() {
            break p.pos;
        }
        assert!(!s.done(c.shards()));
        got.extend(s.slice(c.shards(), Some(c.lock_timeout())).unwrap());
    };
    let wipes = c.stats().counter(Counter::ShardWipes);
    let geo = c.geometry();
    let data = crate::mem::layout::SHARD_HEADER_SIZE + geo.index_cap * 8;
    // SAFETY: the test's own segment, nobody else using it; the record header
    // at the walk's next position in shard 2 (its rec_len field at +4) lies
    // inside the shard.
    unsafe {
        let base = c.segment().base().add(geo.shard_offset(2) as usize);
        base.add((data + pos % geo.data_size) as usize + 4).cast::<u32>().write_unaligned(u32::MAX);
    }
    while let Some(k) = c.scan_next(&mut s).unwrap() {
        got.extend(k);
    }
    assert_eq!(c.stats().counter(Counter::ShardWipes), wipes + 1, "the damaged shard was not wiped");
    let others: Vec<Vec<u8>> = keys.iter().filter(|k| ![1, 2].contains(&c.shard_of(c.hash(k)))).cloned().collect();
    exactly_once(&got, &others);
    c.verify().unwrap();
}

#[test]
fn scan_is_exactly_once_while_writers_move_and_overwrite_records() {
    // A small cache (16 KiB shards) whose logs fill with dead records all the
    // time, so reclaim keeps moving the live ones to the head (compaction):
    // live bytes stay far below 7/8 of the log, so nothing is evicted.
    let c = cache(1 << 20, 1024);
    let present: Vec<Vec<u8>> = (0..300u32).map(|i| format!("p{i}").into_bytes()).collect();
    for k in &present {
        c.set(k, ENC_BYTES, &[7u8; 20], 0).unwrap();
    }
    let stop = std::sync::atomic::AtomicBool::new(false);
    let writes = std::sync::atomic::AtomicU64::new(0);
    let nshards = c.shards().count();
    let (mut scans, mut best_lapped) = (0, 0);
    /// Stops the writer however the scanning ends (a failed check included:
    /// the scope would otherwise wait for the writer forever).
    struct Stop<'a>(&'a std::sync::atomic::AtomicBool);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    std::thread::scope(|t| {
        let _stop = Stop(&stop);
        t.spawn(|| {
            let mut rng = 0x2545_F491_4F6C_DD1Du64;
            while !stop.load(Ordering::Relaxed) {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let i = (rng >> 8) as usize;
                match rng % 8 {
                    // Present keys: overwritten in place (20..=24 bytes: one
                    // record size), or with another size (appended), and back.
                    0 => c.set(&present[i % 300], ENC_BYTES, &vec![1u8; 20 + i % 5], 0),
                    1 => c.set(&present[i % 300], ENC_BYTES, &vec![2u8; 40 + i % 200], 0),
                    // Other keys come and go.
                    2 | 3 => c.delete(format!("churn{}", i % 200).as_bytes(), Wait::Bounded),
                    _ => c.set(format!("churn{}", i % 200).as_bytes(), ENC_BYTES, &vec![3u8; i % 300], 0),
                }
                .unwrap();
                writes.fetch_add(1, Ordering::Relaxed);
            }
        });
        // Scan again and again while the writer runs, until one scan saw the
        // tail of most shards pass their head at its start (every record
        // there reclaimed: moved, as nothing is evicted) during the scan.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while (best_lapped * 10 < nshards * 9 || scans < 3) && std::time::Instant::now() < deadline {
            let heads: Vec<u64> = (0..nshards).map(|i| c.shard(i).log_head()).collect();
            let got = scan_all(&c, b"", 4, |_| {
                // Let the writer in between slices (two cores, shared).
                for _ in 0..4 {
                    std::thread::yield_now();
                }
            });
            exactly_once(&got, &present);
            let lapped = (0..nshards).filter(|&i| c.shard(i).log_tail() > heads[i]).count();
            best_lapped = best_lapped.max(lapped);
            scans += 1;
        }
    });
    assert!(
        best_lapped * 10 >= nshards * 9,
        "reclaim moved too little: {best_lapped} of {nshards} shards lapped in a scan"
    );
    assert_eq!(c.stats().counter(Counter::Evictions), 0, "the test must not evict (a present key would be lost)");
    assert!(writes.load(Ordering::Relaxed) > 10_000);
    c.verify().unwrap();
}

/// `shard_stats()` (for `shmcache top`): one entry per shard, each holding
/// only its own keys' counts, and together they add up to `stats()`.
#[test]
fn shard_stats_add_up_to_stats() {
    let c = cache(4 << 20, 4096);
    for i in 0..200u32 {
        c.set(&i.to_le_bytes(), ENC_BYTES, b"value", 0).unwrap();
    }
    for i in 0..300u32 {
        let _ = get(&c, &i.to_le_bytes());
    }
    let per = c.shard_stats();
    let all = c.stats();
    assert_eq!(per.len() as u64, all.shards);
    let k = 5u32.to_le_bytes();
    let owner = c.shard_of(c.hash(&k));
    assert!(per[owner].items >= 1);
    let sum = |f: &dyn Fn(&crate::shard::stats::Stats) -> u64| per.iter().map(f).sum::<u64>();
    assert_eq!(sum(&|s| s.items), all.items);
    assert_eq!(sum(&|s| s.bytes_used), all.bytes_used);
    assert_eq!(sum(&|s| s.bytes_capacity), all.bytes_capacity);
    assert_eq!(sum(&|s| s.bytes_free), all.bytes_free);
    assert_eq!(sum(&|s| s.counter(Counter::Hits)), 200);
    assert_eq!(sum(&|s| s.counter(Counter::Misses)), 100);
    assert_eq!(sum(&|s| s.counter(Counter::Sets)), all.counter(Counter::Sets));
}

/// A value that checks itself: key, counter, length, then the counter's low
/// byte repeated. Any mix of two writes (a torn value) fails `check_value`.
fn self_checking(key: &[u8], counter: u64, len: usize) -> Vec<u8> {
    let mut v = key.to_vec();
    v.extend_from_slice(&counter.to_le_bytes());
    v.extend_from_slice(&(len as u64).to_le_bytes());
    v.resize(v.len() + len, counter as u8);
    v
}

fn check_value(key: &[u8], v: &[u8]) -> Result<(u64, usize), String> {
    let n = key.len();
    if v.len() < n + 16 || &v[..n] != key {
        return Err(format!("{} bytes, not this key's", v.len()));
    }
    let counter = u64::from_le_bytes(v[n..n + 8].try_into().unwrap());
    let len = u64::from_le_bytes(v[n + 8..n + 16].try_into().unwrap()) as usize;
    if v.len() != n + 16 + len || v[n + 16..].iter().any(|&b| b != counter as u8) {
        return Err(format!("torn: counter {counter}, length {len}, {} bytes", v.len()));
    }
    Ok((counter, len))
}

/// Writers SIGKILLed at random instructions, over and over, in a small
/// cache whose logs wrap (so moves, in-place overwrites, increments, deletes
/// and expiry changes are all cut short some of the time): after each kill
/// the next locker recovers the shard, `verify` passes, no value is torn, and
/// every item the writers never touched is still there. Nothing is wiped.
#[test]
fn writers_killed_at_random_never_lose_untouched_items_or_tear_values() {
    let c = TestCache(Some(
        ShmCache::open(
            &unique(),
            &Config { size: 1 << 20, max_item_size: 8 << 10, shards: 2 },
            Duration::from_millis(500),
        )
        .unwrap(),
    ));
    let pinned: Vec<Vec<u8>> = (0..100u32).map(|i| format!("pinned-{i}").into_bytes()).collect();
    for (i, k) in pinned.iter().enumerate() {
        c.set(k, ENC_BYTES, &self_checking(k, i as u64, 40 + i), 0).unwrap();
    }
    let keys: Vec<Vec<u8>> = (0..120u32).map(|i| format!("w-{i}").into_bytes()).collect();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let (mut kills, mut mid_write) = (0u32, 0u32);
    // Until enough kills landed mid-write (sampled just before the kill, so
    // an undercount): a loaded machine runs the children slower.
    for round in 0..4000u64 {
        if round >= 200 && mid_write >= 40 {
            break;
        }
        // SAFETY: test-only fork; the child only runs cache operations until killed.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let mut r = seed ^ round.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1;
            let mut next = move || {
                r ^= r << 13;
                r ^= r >> 7;
                r ^= r << 17;
                r
            };
            for counter in 0.. {
                let x = next();
                let k = &keys[(x % keys.len() as u64) as usize];
                let _ = match (x >> 8) % 8 {
                    0..=2 => c.set(k, ENC_BYTES, &self_checking(k, counter, ((x >> 16) % 3000) as usize), 0),
                    3 => match c.get(k) {
                        // Same length: an in-place overwrite.
                        Ok(Some((_, v))) => match check_value(k, &v) {
                            Ok((_, len)) => c.set(k, ENC_BYTES, &self_checking(k, counter, len), 0),
                            Err(_) => Ok(false),
                        },
                        _ => Ok(false),
                    },
                    4 => c.incr(b"counter", &Int::Small(1), true, Wait::Bounded).map(|_| true),
                    5 => c.delete(k, Wait::Bounded),
                    6 => c.touch(k, time::now_ms() + 60_000, Wait::Bounded),
                    _ => c.add(k, ENC_BYTES, &self_checking(k, counter, 100), 0),
                };
            }
            unsafe { libc::_exit(0) };
        }
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        std::thread::sleep(Duration::from_micros(500 + (seed >> 33) % 3000));
        let in_write = (0..2).any(|i| c.shard(i).write_in_progress());
        // SAFETY: pid is our child.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        kills += 1;
        mid_write += in_write as u32;
        c.verify().unwrap_or_else(|e| panic!("round {round}: {e}"));
        for (i, k) in pinned.iter().enumerate() {
            let v = get(&c, k).unwrap_or_else(|| panic!("round {round}: untouched {k:?} lost"));
            assert_eq!(check_value(k, &v), Ok((i as u64, 40 + i)), "round {round}");
        }
        for k in &keys {
            if let Some(v) = get(&c, k) {
                check_value(k, &v).unwrap_or_else(|e| panic!("round {round}: {k:?} {e}"));
            }
        }
    }
    let s = c.stats();
    assert_eq!(s.counter(Counter::ShardWipes), 0, "{s:?}");
    assert_eq!(s.counter(Counter::Evictions), 0, "the test relies on no eviction: {s:?}");
    assert!(mid_write >= 40, "only {mid_write} of {kills} kills landed mid-write");
    assert!(c.shard(0).log_head() > 4 * c.shard(0).capacity(), "the logs must wrap (moves)");
}

/// A pinned item (a held lock) is moved, never evicted, however hard a full
/// cache is written; it still expires and can be deleted; an unpinned twin
/// is evicted; and a shard holding more pinned items than one write's budget
/// of moves still takes every write (the budget runs out, one is evicted).
#[test]
fn pinned_items_survive_a_full_cache_but_not_their_expiry() {
    let c = cache(1 << 20, 4 << 10);
    c.set(b"lock", ENC_STR, b"token", 0).unwrap();
    assert!(c.pin(b"lock").unwrap());
    assert!(!c.pin(b"missing").unwrap());
    c.set(b"soon", ENC_STR, b"token", time::now_ms() + 200).unwrap();
    c.pin(b"soon").unwrap();
    c.set(b"plain", ENC_STR, b"token", 0).unwrap();
    let filler = vec![b'f'; 2000];
    for i in 0..20_000u32 {
        c.set(format!("fill-{i}").as_bytes(), ENC_BYTES, &filler, 0).unwrap();
        if i == 10_000 {
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    let s = c.stats();
    assert!(s.counter(Counter::Evictions) > 10_000, "the cache must have been full: {s:?}");
    assert_eq!(get(&c, b"lock").as_deref(), Some(&b"token"[..]), "a pinned item was evicted");
    assert_eq!(get(&c, b"plain"), None, "the unpinned twin should have been evicted");
    assert_eq!(get(&c, b"soon"), None, "a pinned item must still expire");
    assert!(c.delete(b"lock", Wait::Bounded).unwrap());
    c.verify().unwrap();

    // All pinned: more than a write's budget of moves. Writes never fail.
    let small = cache(1 << 20, 4 << 10);
    for i in 0..5_000u32 {
        let k = format!("p-{i}");
        small.set(k.as_bytes(), ENC_BYTES, &filler, 0).unwrap();
        small.pin(k.as_bytes()).unwrap();
    }
    assert_eq!(small.stats().counter(Counter::ShardWipes), 0);
    small.verify().unwrap();
}

/// The workload of `a_writer_killed_at_each_crash_point_*`: sets of new
/// sizes, same-size (in-place) overwrites, deletes, increments and expiry
/// changes on a few keys of a one-shard cache whose log wraps, so every
/// crash point of the write path is reached within a few thousand ops.
fn crash_workload(c: &ShmCache, keys: &[Vec<u8>], ops: u64) {
    for counter in 0..ops {
        let k = &keys[(counter.wrapping_mul(7919) % keys.len() as u64) as usize];
        let _ = match counter % 6 {
            0 | 1 => c.set(k, ENC_BYTES, &self_checking(k, counter, (counter * 37 % 1500) as usize), 0),
            2 => match c.get(k) {
                Ok(Some((_, v))) => match check_value(k, &v) {
                    Ok((_, len)) => c.set(k, ENC_BYTES, &self_checking(k, counter, len), 0),
                    Err(_) => Ok(false),
                },
                _ => Ok(false),
            },
            3 => c.delete(k, Wait::Bounded),
            4 => c.incr(b"n", &Int::Small(1), true, Wait::Bounded).map(|_| true),
            _ => c.touch(k, time::now_ms() + 60_000, Wait::Bounded),
        };
    }
}

/// A writer SIGKILLed at each numbered point of the write path (`crash_point`
/// in shard.rs, shard/ops.rs, shard/reclaim.rs, shard/recover.rs): allocating, between the
/// head and the header, mid-value, between LIVE and the old record's DEAD,
/// mid-move, mid in-place overwrite, mid-unlink, and a recovery itself killed
/// half-way. Each time the next locker recovers the shard: `verify` passes,
/// untouched items survive, no value is torn, nothing is wiped.
#[test]
fn a_writer_killed_at_each_crash_point_leaves_a_sound_shard() {
    for point in 1..=14u32 {
        let c = TestCache(Some(
            ShmCache::open(
                &unique(),
                &Config { size: 256 << 10, max_item_size: 2 << 10, shards: 1 },
                Duration::from_millis(500),
            )
            .unwrap(),
        ));
        let pinned: Vec<Vec<u8>> = (0..20u32).map(|i| format!("pinned-{i}").into_bytes()).collect();
        for (i, k) in pinned.iter().enumerate() {
            c.set(k, ENC_BYTES, &self_checking(k, i as u64, 50), 0).unwrap();
        }
        let keys: Vec<Vec<u8>> = (0..40u32).map(|i| format!("w-{i}").into_bytes()).collect();
        // SAFETY: test-only fork; the child only runs cache operations.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            if point == 13 {
                // Leave a dead writer behind, then die recovering after it.
                // SAFETY: as above.
                let gc = unsafe { libc::fork() };
                if gc == 0 {
                    crate::shard::CRASH_AT.store(3, Ordering::Relaxed);
                    crash_workload(&c, &keys, 1_000_000);
                    unsafe { libc::_exit(0) };
                }
                unsafe { libc::waitpid(gc, std::ptr::null_mut(), 0) };
                crate::shard::CRASH_AT.store(13, Ordering::Relaxed);
                let _ = c.get(b"anything");
            } else {
                // Late enough that the log has wrapped (stale bytes under
                // every new record), early enough to be reached.
                crate::shard::CRASH_SKIP.store(if point == 7 || point == 8 { 20 } else { 300 }, Ordering::Relaxed);
                crate::shard::CRASH_AT.store(point, Ordering::Relaxed);
                crash_workload(&c, &keys, 200_000);
            }
            unsafe { libc::_exit(0) }; // the point was never reached
        }
        let mut status = 0;
        // SAFETY: pid is our child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(
            libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL,
            "crash point {point} was never reached (status {status})"
        );
        c.verify().unwrap_or_else(|e| panic!("crash point {point}: {e}"));
        for (i, k) in pinned.iter().enumerate() {
            let v = get(&c, k).unwrap_or_else(|| panic!("crash point {point}: untouched {k:?} lost"));
            assert_eq!(check_value(k, &v), Ok((i as u64, 50)), "crash point {point}");
        }
        for k in &keys {
            if let Some(v) = get(&c, k) {
                check_value(k, &v).unwrap_or_else(|e| panic!("crash point {point}: {k:?} {e}"));
            }
        }
        let s = c.stats();
        assert!(s.counter(Counter::LockRecoveries) >= 1, "crash point {point}: {s:?}");
        assert_eq!(s.counter(Counter::ShardWipes), 0, "crash point {point}: {s:?}");
        // And the shard goes on working.
        crash_workload(&c, &keys, 2_000);
        c.verify().unwrap_or_else(|e| panic!("after crash point {point}: {e}"));
    }
}
