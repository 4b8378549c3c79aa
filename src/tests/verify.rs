//! Damage (`shard/verify.rs`, and the checks every operation makes): detected, wiped, reported; never a panic or an out-of-bounds access.

use super::{cache, get, incr};
use crate::cache::Wait;
use crate::error::Error;
use crate::shard::encoding::ENC_BYTES;
use crate::shard::stats::Counter;

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
    // SAFETY: the same index slot as above, inside our mapping.
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
    // SAFETY: the kind byte of the dead record found above, inside the shard's log; a stray writer.
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
        // SAFETY: the words of `word` above, inside shard 0's header.
        let hdr = unsafe { (word(80).read(), word(88).read(), word(96).read()) };
        assert_eq!(hdr.0 - hdr.1, 20 * crate::mem::layout::rec_size(4, 100));
        hdr
    };
    for which in 0..2 {
        let (head, tail, _) = fill();
        let bad = [head + 8, tail + 8][which];
        // SAFETY: shard 0's sweep cursor word, inside our mapping; a stray writer.
        unsafe { word(96).write(bad) };
        let wipes = c.stats().counter(Counter::ShardWipes);
        match c.verify() {
            Err(Error::Corrupt(m)) => assert!(m.contains("cursor"), "{m}"),
            r => panic!("cursor {bad} (head {head}) not seen: {r:?}"),
        }
        assert_eq!(c.stats().counter(Counter::ShardWipes), wipes + 1, "verify did not wipe the damaged shard");
    }
    let (_, _, cursor) = fill();
    // SAFETY: as above: the cursor put back.
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
