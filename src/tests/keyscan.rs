//! Key iteration (`cache/keyscan.rs`, `shard/scan.rs`): every key live throughout exactly once, in bounded slices.

use super::cache;
use crate::cache::{ShmCache, Wait};
use crate::shard::encoding::ENC_BYTES;
use crate::shard::ops::{Item, SetMode};
use crate::shard::stats::Counter;
use crate::shard::ShardGuard;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

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
