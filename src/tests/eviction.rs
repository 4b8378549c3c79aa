//! Making room (`shard/reclaim.rs`, `shard/eviction.rs`): the expiry sweep, eviction, compaction, pinned items.

use super::{cache, get};
use crate::cache::Wait;
use crate::shard::encoding::{ENC_BYTES, ENC_STR};
use crate::shard::ops::{Item, SetMode};
use crate::shard::stats::Counter;
use crate::time;
use std::time::Duration;

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
