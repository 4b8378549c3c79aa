//! The operations on one shard (`shard/ops.rs`): expiry, in-place overwrites, compare-and-set, integers of any size, hash tags shared by two keys, and the lock-free read.

use super::{cache, get, incr, unique, TestCache};
use crate::cache::{ShmCache, Wait};
use crate::error::Error;
use crate::mem::layout::Config;
use crate::shard::encoding::{Int, ENC_BIGINT, ENC_BYTES, ENC_INT, ENC_STR};
use crate::shard::ops::{Item, SetMode, Ttl};
use crate::shard::stats::Counter;
use crate::shard::ShardGuard;
use crate::time;
use num_bigint::BigInt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

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
fn compare_and_set_and_delete() {
    let c = cache(4 << 20, 64 << 10);
    let k = b"lock:job";
    let (h, max) = (c.hash(k), c.geometry().max_item_size);
    let mine = (ENC_BYTES, &b"owner-1"[..]);
    let theirs = (ENC_BYTES, &b"owner-2"[..]);
    // Missing: nothing stored, nothing deleted.
    assert!(!c.compare_and_set(k, mine, (ENC_BYTES, b"x"), 0, time::now_ms(), false, Wait::Bounded).unwrap());
    assert!(!c.compare_and_delete(k, mine, Wait::Bounded).unwrap());
    assert_eq!(get(&c, k), None);
    c.set(k, ENC_BYTES, b"owner-1", 0).unwrap();
    // Unequal bytes, or equal bytes under another encoding: refused.
    assert!(!c.compare_and_set(k, theirs, (ENC_BYTES, b"x"), 0, time::now_ms(), false, Wait::Bounded).unwrap());
    assert!(!c
        .compare_and_set(k, (ENC_STR, b"owner-1"), (ENC_BYTES, b"x"), 0, time::now_ms(), false, Wait::Bounded)
        .unwrap());
    assert!(!c.compare_and_delete(k, theirs, Wait::Bounded).unwrap());
    assert_eq!(get(&c, k), Some(b"owner-1".to_vec()));
    // Equal, same record size: written in place (no log space), expiry set.
    let sh = c.shard_for(h);
    let head = sh.log_head();
    let far = time::now_ms() + 100_000;
    assert!(c.compare_and_set(k, mine, (ENC_BYTES, b"owner-2"), far, time::now_ms(), false, Wait::Bounded).unwrap());
    assert_eq!(sh.log_head(), head, "a same-size compare-and-set used log space");
    assert_eq!(get(&c, k), Some(b"owner-2".to_vec()));
    assert!(matches!(c.ttl(k, Wait::Bounded).unwrap(), Ttl::Ms(ms) if ms > 99_000));
    // Equal, another size: appended, the old record dead, the value new, expiry never.
    let long = vec![b'z'; 500];
    assert!(c.compare_and_set(k, theirs, (ENC_INT, &long), 0, time::now_ms(), false, Wait::Bounded).unwrap());
    assert!(sh.log_head() > head);
    assert_eq!(c.get(k).unwrap(), Some((ENC_INT, long.clone())));
    assert_eq!(c.ttl(k, Wait::Bounded).unwrap(), Ttl::Never);
    assert_eq!(c.stats().items, 1);
    c.verify().unwrap();
    // Too large a new value: refused whether or not it matches, nothing changed.
    let huge = vec![0u8; 64 << 10];
    assert!(matches!(
        c.compare_and_set(k, (ENC_INT, &long), (ENC_BYTES, &huge), 0, time::now_ms(), false, Wait::Bounded),
        Err(Error::TooLarge { .. })
    ));
    assert!(matches!(
        c.compare_and_set(k, mine, (ENC_BYTES, &huge), 0, time::now_ms(), false, Wait::Bounded),
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
