//! The operations of `ShmCache` (`cache.rs`, `cache/ops.rs`, `cache/batch.rs`): one key, many keys, stats, opening and attaching.

use super::{cache, get, incr, unique, TestCache};
use crate::cache::{ShmCache, Wait};
use crate::error::Error;
use crate::mem::layout::{Config, Geometry};
use crate::mem::segment;
use crate::shard::encoding::{Int, ENC_BYTES, ENC_INT};
use crate::shard::ops::Ttl;
use crate::shard::stats::Counter;
use std::time::Duration;

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
