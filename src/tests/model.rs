//! Random operations on one shard's lock against a `HashMap` model (`shard/ops.rs`), with a controlled clock.

use super::cache;
use crate::cache::Wait;
use crate::shard::encoding::ENC_BYTES;
use crate::shard::ops::{Item, SetMode};
use std::collections::HashMap;

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
