//! A fresh segment's contents: the header (geometry, hash seed, creator)
//! and every shard's robust mutex. The rest of a shard is valid as zeroed
//! memory (an empty shard), so nothing else is written.

use crate::mem::layout::{Geometry, SegHeader};
use crate::mem::lock::MutexRef;
use crate::time;

/// Fill a fresh, zeroed, exclusively held mapping of `geo.total_size`
/// bytes: the header (all but `state`) and every shard's mutex.
pub(crate) fn init_segment(base: *mut u8, geo: &Geometry, seed: u64) {
    // SAFETY: base is the fresh, zeroed, exclusively held mapping of total_size bytes.
    let h = unsafe { &mut *base.cast::<SegHeader>() };
    h.write_geometry(geo);
    h.hash_seed = seed;
    h.created_ms = time::now_ms();
    h.creator_pid = std::process::id() as u64;
    for i in 0..geo.nshards {
        // SAFETY: a shard starts with its mutex slot (`ShardHeader`, asserted in shard.rs),
        // inside the mapping per Geometry; nobody else is attached yet.
        unsafe { MutexRef::new(base.add(geo.shard_offset(i) as usize)).init() }
            .expect("pthread_mutex_init on fresh memory");
    }
}

/// 64 random bits from the OS (a segment's hash seed, a successor's nonce);
/// the clock and pid if `getrandom` fails.
pub(crate) fn seed_from_os() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: getrandom writes at most b.len() bytes into b.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n == 8 {
        u64::from_le_bytes(b)
    } else {
        time::now_ms() ^ ((std::process::id() as u64) << 32)
    }
}
