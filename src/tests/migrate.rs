//! Geometry migration (`migrate.rs`): items carried, calls forwarded, the hottest kept, no write lost.

use super::{cache, get, incr, unique, TestCache};
use crate::cache::{ShmCache, Wait};
use crate::error::Error;
use crate::mem::layout::{Config, Geometry};
use crate::mem::segment;
use crate::shard::encoding::{Int, ENC_BYTES};
use crate::shard::ops::Ttl;
use std::time::Duration;

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
