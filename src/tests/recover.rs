//! Crash recovery (`shard/recover.rs`): writers SIGKILLed mid-write, at each crash point of the write path and at random instructions.

use super::{cache, get, unique, TestCache};
use crate::cache::{ShmCache, Wait};
use crate::error::Error;
use crate::mem::layout::Config;
use crate::shard::encoding::{Int, ENC_BYTES};
use crate::shard::stats::Counter;
use crate::time;
use std::sync::atomic::Ordering;
use std::time::Duration;

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
        // SAFETY: _exit in a forked child ends it without running the parent's destructors or atexit handlers.
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
    // SAFETY: pid is our own child: killing and reaping it touches no memory of ours.
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
        // SAFETY: _exit in a forked child ends it without running the parent's destructors or atexit handlers.
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
    // SAFETY: pid is our own child: killing and reaping it touches no memory of ours.
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
                    6 => {
                        let now = time::now_ms();
                        c.touch(k, now + 60_000, now, Wait::Bounded)
                    }
                    _ => c.add(k, ENC_BYTES, &self_checking(k, counter, 100), 0),
                };
            }
            // SAFETY: _exit in a forked child ends it without running the parent's destructors or atexit handlers.
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
            _ => {
                let now = time::now_ms();
                c.touch(k, now + 60_000, now, Wait::Bounded)
            }
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
                    // SAFETY: _exit in a forked child ends it without running the parent's destructors or atexit handlers.
                    unsafe { libc::_exit(0) };
                }
                // SAFETY: gc is this process's own child; a null status pointer is allowed.
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
            // SAFETY: _exit in a forked child ends it without running the parent's destructors or atexit handlers.
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
