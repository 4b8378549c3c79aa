//! Fuzzing harnesses, shared by the cargo-fuzz targets in `fuzz/` and by the
//! deterministic quick runs in `cargo test` (`tools/fuzz.sh` runs either).
//!
//! Both harnesses read their fuzz input as a stream of small numbers (zeros
//! once it runs out), so any byte string is a valid input and libFuzzer's
//! mutations map onto nearby operation sequences.
//!
//! * [`run_model`]: random operation sequences (set, add, get, lock-free
//!   get, delete, touch, incr, contains, ttl, compare-and-set and
//!   compare-and-delete, clear, batches of operations
//!   under one lock, clock jumps, oversize sets, bursts of tiny sets) with
//!   variable key and value sizes and a clock the input controls, checked
//!   against a `HashMap` model. In the [`EXACT`] cache (one shard, far
//!   larger than the key space) any divergence is a bug; in the [`SMALL`]
//!   cache (evicting all the time) a value the cache returns must be the
//!   model's current, unexpired value, and a cache answer "absent" only
//!   removes the key from the model. No shard may ever be wiped.
//! * [`run_corrupt`]: fill a cache, damage its shards (anywhere past each
//!   shard's 64-byte mutex slot: header fields, index slots, record headers,
//!   data), run operations, then check every shard: damage must surface as
//!   `Error::Corrupt` inside the core (the shard is wiped and the operation
//!   rerun), never as a panic, a hang or an out-of-bounds access;
//!   `verify()` must pass afterwards, and then no damage may be left for a
//!   later operation to find.
//!
//! The harnesses run on a [`Backend`]: the real [`ShmCache`] (a segment in
//! /dev/shm, unlinked as soon as it is mapped so nothing is left behind) or
//! [`HeapCache`], the same shards over heap memory (for Miri, which cannot
//! map shared memory, and for ASan/valgrind, which then see shard bounds).
//! See docs/reliability-fuzz.md.

use crate::cache::shards::Shards;
use crate::cache::ShmCache;
use crate::error::{Error, Result};
use crate::mem::layout::{Config, Geometry, REC_HDR, SHARD_HEADER_SIZE};
use crate::mem::lock::MUTEX_SLOT;
use crate::mem::segment;
use crate::shard::encoding::Int;
use crate::shard::encoding::{ENC_BIGINT, ENC_BYTES, ENC_INT};
use crate::shard::log::RecHdr;
use crate::shard::ops::{Item, SetMode, Ttl};
use crate::shard::stats::Counter;
use crate::shard::{Shard, ShardGuard};
use num_bigint::BigInt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// One shard far larger than the model's key space can fill: no evictions,
/// so the cache must agree with the model exactly.
pub const EXACT: Config = Config { size: 1 << 20, max_item_size: 4096, shards: 1 };
/// Two shards of 25 KiB logs (224 index slots each) for 1200 keys: both the
/// log and the index keep filling up, so it evicts all the time.
pub const SMALL: Config = Config { size: 64 << 10, max_item_size: 4096, shards: 2 };
/// Eight shards of 64 KiB for the corruption harness.
pub const CORRUPT: Config = Config { size: 512 << 10, max_item_size: 2048, shards: 0 };

/// Keys of the [`EXACT`] model: few enough that every live item fits and that
/// one allocation never runs out of moves (`MOVE_BUDGET`).
const NKEYS_EXACT: u64 = 48;
/// Keys of the [`SMALL`] model: more than its index holds.
const NKEYS_SMALL: u64 = 1200;
/// Half the operations go to these keys, so values get read back.
const HOT_KEYS: u64 = 32;
/// Key lengths, cycled by key id (key id `nkeys` is the empty key).
const KEY_LENS: [usize; 9] = [1, 2, 5, 8, 16, 40, 100, 250, 300];
const T0: u64 = 1_000_000;

/// The cache under test: the operations the harnesses need, on its
/// [`Shards`] (the same type in both backends).
pub trait Backend {
    fn geometry(&self) -> &Geometry;
    fn shards(&self) -> &Shards;
    /// The wait for a shard lock: the cache's lock timeout, or `None` (only
    /// tried: one thread).
    fn timeout(&self) -> Option<Duration>;
    /// Start of shard `i`'s `shard_size` bytes.
    fn shard_base(&self, i: usize) -> *mut u8;
    /// Whatever the backend reads without a lock for its statistics.
    fn read_stats(&self) {}

    fn hash(&self, key: &[u8]) -> u64 {
        self.shards().hash(key)
    }
    fn shard_of(&self, hash: u64) -> usize {
        self.shards().shard_of(hash)
    }
    fn shard(&self, i: usize) -> &Shard {
        self.shards().shard(i)
    }
    /// Run `f` under shard `idx`'s lock; a `Corrupt` result wipes the shard
    /// and reruns `f` (`Shard::with_lock`).
    fn with_shard_index<R>(&self, idx: usize, f: &mut impl FnMut(&mut ShardGuard) -> Result<R>) -> Result<R> {
        self.shards().with_shard_index(idx, self.timeout(), f)
    }
    fn clear(&self) -> Result<()> {
        self.shards().clear(self.timeout())
    }
    fn verify(&self) -> Result<(u64, u64)> {
        self.shards().verify(self.timeout())
    }
    fn with_shard<R>(&self, hash: u64, mut f: impl FnMut(&mut ShardGuard) -> Result<R>) -> Result<R> {
        self.with_shard_index(self.shard_of(hash), &mut f)
    }
    fn nshards(&self) -> usize {
        self.shards().count()
    }
    /// A counter summed over the shards (wrapping: damage may leave any value).
    fn counter(&self, c: Counter) -> u64 {
        (0..self.nshards()).fold(0u64, |n, i| n.wrapping_add(self.shard(i).header().counters.get(c as usize)))
    }
    /// (items, live bytes) as the shard headers count them.
    fn counts(&self) -> (u64, u64) {
        (0..self.nshards()).fold((0u64, 0u64), |(n, b), i| {
            (n.saturating_add(self.shard(i).items()), b.saturating_add(self.shard(i).live_bytes()))
        })
    }
}

impl Backend for ShmCache {
    fn geometry(&self) -> &Geometry {
        ShmCache::geometry(self)
    }
    fn shards(&self) -> &Shards {
        ShmCache::shards(self)
    }
    fn timeout(&self) -> Option<Duration> {
        Some(self.lock_timeout())
    }
    fn shard_base(&self, i: usize) -> *mut u8 {
        // SAFETY: shard i lies inside the mapping (Geometry).
        unsafe { self.segment().base().add(self.geometry().shard_offset(i as u64) as usize) }
    }
    fn read_stats(&self) {
        std::hint::black_box(self.stats());
    }
}

static N: AtomicU32 = AtomicU32::new(0);

/// The keys' hash seed of every fuzzing cache: runs are reproducible (a
/// segment's seed is otherwise random) and both backends hash alike.
pub const HASH_SEED: u64 = 0x5eed;

/// A fresh cache in /dev/shm with seed [`HASH_SEED`], whose name is removed
/// at once: the mapping stays valid for this process and nothing is left
/// behind, even on a crash.
pub fn shm_cache(cfg: &Config) -> ShmCache {
    let name = format!("/shmcache-fuzz-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
    let first = ShmCache::open_named(&name, cfg, Duration::from_secs(1)).expect("open fuzz segment");
    // SAFETY: our own fresh segment, nobody else attached; the header is
    // plain data at the start of the mapping. Attaching again reads the seed.
    unsafe { (*first.segment().base().cast::<crate::mem::layout::SegHeader>()).hash_seed = HASH_SEED };
    let c = ShmCache::open_named(&name, cfg, Duration::from_secs(1)).expect("attach fuzz segment");
    segment::destroy(&name).expect("unlink fuzz segment");
    assert_eq!(c.hash(b"k"), xxhash_rust::xxh3::xxh3_64_with_seed(b"k", HASH_SEED));
    c
}

/// The shards of a cache laid over zeroed heap memory, one allocation per
/// shard (so Miri, ASan and valgrind see any access past a shard). Same
/// shard code, same wipe-and-rerun rule as `ShmCache`; the lock is only
/// tried (one thread). Miri cannot map shared memory: this is its backend.
pub struct HeapCache {
    bases: Vec<*mut u8>,
    layout: std::alloc::Layout,
    geo: Geometry,
    shards: Shards,
    /// Bits of the real hash kept (all: `u64::MAX`). A narrow mask makes
    /// keys share the index's 32-bit tag, and now and then the whole hash.
    hash_mask: u64,
}

/// Keeps 16 high bits (the shard) and 6 low bits (the tag and home slot):
/// a few hundred keys give many tag collisions and some full-hash ones.
pub const COLLIDING_HASH: u64 = 0xFFFF_0000_0000_003F;

impl HeapCache {
    /// A heap cache whose hash keeps only the bits of `mask`.
    pub fn with_hash_mask(cfg: &Config, mask: u64) -> Result<HeapCache> {
        let mut c = HeapCache::new(cfg)?;
        c.hash_mask = mask;
        Ok(c)
    }

    pub fn new(cfg: &Config) -> Result<HeapCache> {
        let geo = Geometry::compute(cfg)?;
        let layout = std::alloc::Layout::from_size_align(geo.shard_size as usize, 4096).expect("layout");
        let bases: Vec<*mut u8> = (0..geo.nshards)
            .map(|_| {
                // SAFETY: the layout has a non-zero size.
                let p = unsafe { std::alloc::alloc_zeroed(layout) };
                if p.is_null() {
                    std::alloc::handle_alloc_error(layout);
                }
                p
            })
            .collect();
        // SAFETY: each base is a fresh, 4096-aligned allocation of shard_size bytes.
        let shards: Vec<Shard> = bases.iter().map(|&p| unsafe { Shard::new(p, &geo) }).collect();
        // Miri cannot make a robust process-shared mutex; zeroed memory is
        // glibc's PTHREAD_MUTEX_INITIALIZER, a plain mutex, which it can.
        #[cfg(not(miri))]
        for s in &shards {
            // SAFETY: fresh memory nobody else can see.
            unsafe { s.init()? };
        }
        Ok(HeapCache { bases, layout, geo, shards: Shards::new(shards, HASH_SEED), hash_mask: u64::MAX })
    }
}

impl Drop for HeapCache {
    fn drop(&mut self) {
        // (The shards are plain pointers into these blocks: nothing to drop.)
        for &p in &self.bases {
            // SAFETY: allocated in `new` with this layout; no shard points into it any more.
            unsafe { std::alloc::dealloc(p, self.layout) };
        }
    }
}

impl Backend for HeapCache {
    fn geometry(&self) -> &Geometry {
        &self.geo
    }
    fn shards(&self) -> &Shards {
        &self.shards
    }
    fn timeout(&self) -> Option<Duration> {
        None
    }
    fn hash(&self, key: &[u8]) -> u64 {
        self.shards.hash(key) & self.hash_mask
    }
    fn shard_base(&self, i: usize) -> *mut u8 {
        self.bases[i]
    }
}

/// Fuzz input read as a stream of numbers; zeros once exhausted.
pub struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { data, pos: 0 }
    }
    pub fn done(&self) -> bool {
        self.pos >= self.data.len()
    }
    pub fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    pub fn u64(&mut self) -> u64 {
        (self.u32() as u64) | ((self.u32() as u64) << 32)
    }
    /// A number in `0..n` (`n` > 0), reading as few bytes as it can.
    pub fn below(&mut self, n: u64) -> u64 {
        match n {
            0 | 1 => 0,
            2..=256 => self.u8() as u64 % n,
            257..=65536 => self.u16() as u64 % n,
            _ => self.u64() % n,
        }
    }
}

/// Key `id` (0..=nkeys; nkeys ≤ 2304): its length comes from `KEY_LENS`, its
/// first bytes number it among the keys of that length, so ids never collide.
fn key_bytes(id: u64, nkeys: u64) -> Vec<u8> {
    if id >= nkeys {
        return Vec::new();
    }
    let n = KEY_LENS.len() as u64;
    let mut k = vec![b'k'; KEY_LENS[(id % n) as usize]];
    for (d, s) in k.iter_mut().zip((id / n).to_le_bytes()) {
        *d = s;
    }
    k
}

/// An expiry for a set or touch: never, soon, or already past.
fn expiry(inp: &mut Input, now: u64) -> u64 {
    match inp.u8() % 4 {
        0 | 1 => 0,
        2 => now + 1 + inp.below(300),
        _ => 1 + inp.below(now), // <= now: dead on arrival
    }
}

/// An incr delta: small, huge, at the edges of i64, or past them.
fn delta(inp: &mut Input) -> Int {
    match inp.u8() % 8 {
        0 => Int::Small(i64::MAX),
        1 => Int::Small(i64::MIN),
        2 => Int::Small(inp.u64() as i64),
        3 => Int::from(BigInt::from(inp.u64()) * BigInt::from(inp.u64()) - BigInt::from(inp.u64())),
        4 => Int::from(BigInt::from(i64::MIN) - BigInt::from(inp.below(3))),
        _ => Int::Small(inp.below(7) as i64 - 3),
    }
}

/// The model's integer arithmetic, on `BigInt` (independent of `shard/encoding.rs`):
/// the value an integer encoding holds, and the canonical encoding of a sum.
fn model_int(enc: u8, v: &[u8]) -> Option<BigInt> {
    match enc {
        ENC_INT => Some(BigInt::from(i64::from_le_bytes(v.try_into().ok()?))),
        ENC_BIGINT => Some(BigInt::from_signed_bytes_le(v)),
        _ => None,
    }
}
fn model_encode(n: &BigInt) -> Value {
    match i64::try_from(n) {
        Ok(i) => (ENC_INT, i.to_le_bytes().to_vec()),
        Err(_) => (ENC_BIGINT, n.to_signed_bytes_le()),
    }
}

/// A value of the length class the input picks, stamped with `stamp` so a
/// stale copy never equals the current one.
fn value(inp: &mut Input, room: usize, stamp: u64) -> (u8, Vec<u8>) {
    let sel = inp.u8();
    if sel.is_multiple_of(8) {
        let n = match inp.u8() % 4 {
            0 => i64::MAX - inp.below(3) as i64,
            1 => i64::MIN + inp.below(3) as i64,
            _ => inp.below(2001) as i64 - 1000,
        };
        return (ENC_INT, n.to_le_bytes().to_vec());
    }
    let len = match (sel >> 3) % 8 {
        0 => 0,
        1 => 1 + inp.below(16) as usize,
        2 => 8, // an 8-byte value that is not an integer
        3..=5 => inp.below(room as u64 / 4 + 1) as usize,
        6 => inp.below(room as u64 + 1) as usize,
        _ => room, // exactly at MAX_ITEM_SIZE
    };
    let mut v = vec![(stamp as u8) ^ sel; len];
    for (d, s) in v.iter_mut().zip(stamp.to_le_bytes()) {
        *d = s;
    }
    // Mostly raw bytes; else encodings 1..=4, including ENC_INT with a value
    // that is not 8 bytes long (not an integer to incr).
    let enc = if sel & 1 == 0 { ENC_BYTES } else { 1 + (sel >> 6) % 4 };
    (enc, v)
}

/// (encoding, bytes)
type Value = (u8, Vec<u8>);
/// One operation of a batch: (0 get | 1 set | 2 delete, key, value, expiry).
type Planned = (u8, Vec<u8>, Value, u64);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Stored {
    enc: u8,
    val: Vec<u8>,
    exp: u64,
}

impl Stored {
    fn live(&self, now: u64) -> bool {
        self.exp == 0 || now < self.exp
    }
}

/// What a harness run did (for tests that check the harness is not idle).
#[derive(Debug, Default, Clone, Copy)]
pub struct Report {
    pub ops: u64,
    pub hits: u64,
    pub evictions: u64,
    /// Shards found damaged and wiped (corruption harness).
    pub wipes: u64,
    /// Operations that returned a value or changed something after damage.
    pub survived: u64,
    /// Most items the cache held at a check.
    pub max_items: u64,
}

impl std::ops::AddAssign for Report {
    fn add_assign(&mut self, o: Report) {
        self.ops += o.ops;
        self.hits += o.hits;
        self.evictions += o.evictions;
        self.wipes += o.wipes;
        self.survived += o.survived;
        self.max_items = self.max_items.max(o.max_items);
    }
}

/// Run one model input. The first byte picks the cache: bit 0 clear →
/// `exact` (must agree with the model on every answer), set → `small`
/// (evicting); bit 1 set → values of at most 24 bytes (in `small`, the
/// index fills before the log). Panics on any divergence.
pub fn run_model<B: Backend>(exact: &B, small: &B, data: &[u8]) -> Report {
    let mut inp = Input::new(data);
    let first = inp.u8();
    let is_exact = first & 1 == 0;
    let mut m = Model::new(if is_exact { exact } else { small }, is_exact);
    if first & 2 != 0 {
        m.room = 24;
        m.hot = 0; // spread over all keys so the index fills
    }
    m.run(&mut inp)
}

struct Model<'b, B: Backend> {
    b: &'b B,
    exact: bool,
    m: HashMap<Vec<u8>, Stored>,
    now: u64,
    max: u64,
    /// Wipes expected: one per shard per clear.
    wipes: u64,
    step: u64,
    hits: u64,
    evictions0: u64,
    nkeys: u64,
    /// Largest value length the input asks for (before the item limit).
    room: usize,
    /// Of 256, how many operations go to the hot keys.
    hot: u16,
    max_items: u64,
}

impl<'b, B: Backend> Model<'b, B> {
    fn new(b: &'b B, exact: bool) -> Self {
        b.clear().expect("clear");
        let wipes = b.counter(Counter::ShardWipes);
        let max = b.geometry().max_item_size;
        let nkeys = if exact { NKEYS_EXACT } else { NKEYS_SMALL };
        let evictions0 = b.counter(Counter::Evictions);
        Model {
            b,
            exact,
            m: HashMap::new(),
            now: T0,
            max,
            wipes,
            step: 0,
            hits: 0,
            evictions0,
            nkeys,
            room: usize::MAX,
            hot: 128,
            max_items: 0,
        }
    }

    fn live(&self, k: &[u8]) -> Option<&Stored> {
        self.m.get(k).filter(|it| it.live(self.now))
    }

    /// The cache says `k` is absent: with eviction that only drops it from
    /// the model; without, the model must agree.
    fn absent(&mut self, k: &[u8], what: &str) {
        if self.exact {
            assert!(
                self.live(k).is_none(),
                "step {}: {what}: cache lost {k:?}, model has {:?}",
                self.step,
                self.live(k)
            );
        }
        self.m.remove(k);
    }

    /// The cache says `k` is present: the model must say so too.
    fn present(&self, k: &[u8], what: &str) {
        assert!(
            self.live(k).is_some(),
            "step {}: {what}: cache has {k:?} the model lacks ({:?})",
            self.step,
            self.m.get(k)
        );
    }

    fn run(mut self, inp: &mut Input) -> Report {
        while !inp.done() {
            self.step += 1;
            self.now += inp.below(4);
            let op = inp.u8();
            let id = if (inp.u8() as u16) < self.hot { inp.below(HOT_KEYS) } else { inp.below(self.nkeys + 1) };
            let k = key_bytes(id, self.nkeys);
            match op % 16 {
                0..=2 => self.set(inp, &k, SetMode::Set),
                3 => self.set(inp, &k, SetMode::Add),
                4 | 5 => self.get(&k),
                6 => self.get_optimistic(&k),
                7 => self.delete(&k),
                8 => self.touch(inp, &k),
                9 => self.incr(inp, &k),
                10 => match op >> 4 {
                    0..=5 => self.contains(&k),
                    6..=11 => self.compare_and_set(inp, &k),
                    _ => self.compare_and_delete(inp, &k),
                },
                11 => self.ttl(&k),
                12 => self.batch(inp, &k),
                13 => self.oversize(inp, &k),
                14 => match (op >> 4, inp.u8()) {
                    (0, 0..=63) => self.clear(),
                    (1..=3, _) => self.now += inp.below(5000),
                    _ => self.check(),
                },
                _ if op >> 4 < 12 => self.now += inp.below(100),
                _ => self.burst(inp),
            }
        }
        self.check();
        Report {
            ops: self.step,
            hits: self.hits,
            evictions: self.b.counter(Counter::Evictions) - self.evictions0,
            max_items: self.max_items,
            ..Report::default()
        }
    }

    fn set(&mut self, inp: &mut Input, k: &[u8], mode: SetMode) {
        let (enc, v) = value(inp, (self.max as usize - k.len()).min(self.room), self.step);
        let exp = expiry(inp, self.now);
        let (h, now, max) = (self.b.hash(k), self.now, self.max);
        let stored =
            self.b.with_shard(h, |g| g.set(&Item { key: k, hash: h, enc, value: &v, expires: exp }, mode, now, max));
        let stored = stored.unwrap_or_else(|e| panic!("step {}: set {k:?} ({} bytes): {e}", self.step, v.len()));
        match mode {
            SetMode::Set => assert!(stored, "step {}: set returned false", self.step),
            SetMode::Add if stored => {
                if self.exact {
                    assert!(self.live(k).is_none(), "step {}: add stored over a live item", self.step);
                }
            }
            SetMode::Add => self.present(k, "add refused"),
        }
        if stored {
            self.m.insert(k.to_vec(), Stored { enc, val: v, exp });
        }
    }

    /// Many small sets in a row (cheap in input bytes): fills the index.
    fn burst(&mut self, inp: &mut Input) {
        let (start, n, len) = (inp.below(self.nkeys), inp.below(256), inp.below(17) as usize);
        for id in (start..self.nkeys).take(n as usize) {
            let k = key_bytes(id, self.nkeys);
            let v = self.step.to_le_bytes().iter().cycle().take(len).copied().collect::<Vec<u8>>();
            let (h, now, max) = (self.b.hash(&k), self.now, self.max);
            let stored = self.b.with_shard(h, |g| {
                g.set(&Item { key: &k, hash: h, enc: ENC_BYTES, value: &v, expires: 0 }, SetMode::Set, now, max)
            });
            assert_eq!(stored, Ok(true), "step {}: burst set", self.step);
            self.m.insert(k, Stored { enc: ENC_BYTES, val: v, exp: 0 });
        }
    }

    fn oversize(&mut self, inp: &mut Input, k: &[u8]) {
        let len = self.max as usize - k.len() + 1 + inp.below(64) as usize;
        let (h, now, max) = (self.b.hash(k), self.now, self.max);
        let v = vec![0xee; len];
        let add = inp.u8().is_multiple_of(2);
        let mode = if add { SetMode::Add } else { SetMode::Set };
        match self
            .b
            .with_shard(h, |g| g.set(&Item { key: k, hash: h, enc: ENC_BYTES, value: &v, expires: 0 }, mode, now, max))
        {
            Err(Error::TooLarge { size, max: m }) => {
                assert_eq!((size, m), ((k.len() + len) as u64, max), "step {}", self.step)
            }
            r => panic!("step {}: oversize set of {} bytes gave {r:?}", self.step, k.len() + len),
        }
        // Nothing else changed: the old value (if any) is still readable.
        self.get(k);
    }

    fn get(&mut self, k: &[u8]) {
        let (h, now) = (self.b.hash(k), self.now);
        let got = self.b.with_shard(h, |g| g.get(k, h, now, |e, v| (e, v.to_vec())));
        match got.unwrap_or_else(|e| panic!("step {}: get: {e}", self.step)) {
            Some((enc, val)) => {
                self.present(k, "get");
                let want = self.live(k).unwrap();
                assert!(enc == want.enc && val == want.val, "step {}: get {k:?}: stale or foreign value", self.step);
                self.hits += 1;
            }
            None => self.absent(k, "get"),
        }
    }

    /// The lock-free read path; `None` means "take the lock", which we do.
    fn get_optimistic(&mut self, k: &[u8]) {
        let (h, now) = (self.b.hash(k), self.now);
        match self.b.shard(self.b.shard_of(h)).get_optimistic(k, h, now, |e, v| (e, v.to_vec())) {
            Some(Some((enc, val))) => {
                self.present(k, "lock-free get");
                let want = self.live(k).unwrap();
                assert!(
                    enc == want.enc && val == want.val,
                    "step {}: lock-free get {k:?}: stale or foreign value",
                    self.step
                );
                self.hits += 1;
            }
            Some(None) => self.absent(k, "lock-free get"),
            None => self.get(k),
        }
    }

    fn delete(&mut self, k: &[u8]) {
        let (h, now) = (self.b.hash(k), self.now);
        let had =
            self.b.with_shard(h, |g| g.delete(k, h, now)).unwrap_or_else(|e| panic!("step {}: delete: {e}", self.step));
        if had {
            self.present(k, "delete");
        } else {
            self.absent(k, "delete");
        }
        self.m.remove(k);
    }

    fn touch(&mut self, inp: &mut Input, k: &[u8]) {
        let exp = expiry(inp, self.now);
        let (h, now) = (self.b.hash(k), self.now);
        let ok = self
            .b
            .with_shard(h, |g| g.touch(k, h, exp, now))
            .unwrap_or_else(|e| panic!("step {}: touch: {e}", self.step));
        if ok {
            self.present(k, "touch");
            self.m.get_mut(k).unwrap().exp = exp;
        } else {
            self.absent(k, "touch");
        }
    }

    fn incr(&mut self, inp: &mut Input, k: &[u8]) {
        let d = delta(inp);
        let create = inp.u8().is_multiple_of(4);
        let (h, now, max) = (self.b.hash(k), self.now, self.max);
        let got = self.b.with_shard(h, |g| g.incr(k, h, &d, create, now, max));
        let dm = d.to_bigint();
        let sum = |it: &Stored| model_int(it.enc, &it.val).map(|cur| cur + &dm);
        let live = self.live(k).cloned();
        // Small cache: the key may have been evicted, and then created anew.
        let lost = !self.exact
            && create
            && live.is_some()
            && got == Ok(d.clone())
            && live.as_ref().and_then(sum) != Some(dm.clone());
        let Some(it) = live.filter(|_| !lost) else {
            if lost {
                self.absent(k, "incr create");
            }
            if !create {
                return assert_eq!(got, Err(Error::NotFound), "step {}: incr of a missing key", self.step);
            }
            assert_eq!(got, Ok(d), "step {}: incr create {k:?}", self.step);
            let (enc, val) = model_encode(&dm);
            self.m.insert(k.to_vec(), Stored { enc, val, exp: 0 });
            return;
        };
        if got == Err(Error::NotFound) {
            return self.absent(k, "incr");
        }
        self.present(k, "incr");
        let want = match sum(&it) {
            None => Err(Error::NotInteger),
            Some(n) => {
                let (enc, val) = model_encode(&n);
                let size = (k.len() + val.len()) as u64;
                if size > max {
                    Err(Error::TooLarge { size, max })
                } else {
                    self.m.insert(k.to_vec(), Stored { enc, val, exp: it.exp });
                    Ok(Int::from(n))
                }
            }
        };
        assert_eq!(got, want, "step {}: incr {k:?} by {d:?}", self.step);
    }

    /// The value a compare-and-set/delete expects: mostly the model's
    /// current one (a match), else another (or the current one, stale).
    fn expected(&mut self, inp: &mut Input, k: &[u8]) -> Value {
        match (inp.u8() % 4, self.live(k)) {
            (0..=2, Some(it)) => (it.enc, it.val.clone()),
            _ => {
                let stamp = self.step.wrapping_sub(inp.below(3));
                value(inp, 40, stamp)
            }
        }
    }

    /// Does the model hold exactly `want` for `k`?
    fn holds(&self, k: &[u8], want: &Value) -> bool {
        self.live(k).is_some_and(|it| it.enc == want.0 && it.val == want.1)
    }

    /// The cache answered a compare-and-* with `done`: true needs the
    /// model's value to match; false with a match is a loss (eviction only).
    fn compared(&mut self, k: &[u8], want: &Value, done: bool, what: &str) {
        if done {
            assert!(
                self.holds(k, want),
                "step {}: {what} {k:?} matched, the model holds {:?}",
                self.step,
                self.m.get(k)
            );
        } else if self.holds(k, want) {
            self.absent(k, what);
        }
    }

    fn compare_and_set(&mut self, inp: &mut Input, k: &[u8]) {
        let want = self.expected(inp, k);
        let (enc, v) = value(inp, (self.max as usize - k.len()).min(self.room), self.step);
        let exp = expiry(inp, self.now);
        let (h, now, max) = (self.b.hash(k), self.now, self.max);
        let item = Item { key: k, hash: h, enc, value: &v, expires: exp };
        let done = self
            .b
            .with_shard(h, |g| g.compare_and_set(&item, (want.0, &want.1), now, max))
            .unwrap_or_else(|e| panic!("step {}: compare_and_set: {e}", self.step));
        self.compared(k, &want, done, "compare_and_set");
        if done {
            self.m.insert(k.to_vec(), Stored { enc, val: v, exp });
        }
    }

    fn compare_and_delete(&mut self, inp: &mut Input, k: &[u8]) {
        let want = self.expected(inp, k);
        let (h, now) = (self.b.hash(k), self.now);
        let done = self
            .b
            .with_shard(h, |g| g.compare_and_delete(k, h, (want.0, &want.1), now))
            .unwrap_or_else(|e| panic!("step {}: compare_and_delete: {e}", self.step));
        self.compared(k, &want, done, "compare_and_delete");
        if done {
            self.m.remove(k);
        }
    }

    fn contains(&mut self, k: &[u8]) {
        let (h, now) = (self.b.hash(k), self.now);
        if self
            .b
            .with_shard(h, |g| g.contains(k, h, now))
            .unwrap_or_else(|e| panic!("step {}: contains: {e}", self.step))
        {
            self.present(k, "contains");
        } else {
            self.absent(k, "contains");
        }
    }

    fn ttl(&mut self, k: &[u8]) {
        let (h, now) = (self.b.hash(k), self.now);
        let got = self.b.with_shard(h, |g| g.ttl(k, h, now)).unwrap_or_else(|e| panic!("step {}: ttl: {e}", self.step));
        if got == Ttl::Missing {
            return self.absent(k, "ttl");
        }
        self.present(k, "ttl");
        let exp = self.live(k).unwrap().exp;
        let want = if exp == 0 { Ttl::Never } else { Ttl::Ms(exp - now) };
        assert_eq!(got, want, "step {}: ttl {k:?}", self.step);
    }

    /// Several operations on one shard under a single lock, as the batch
    /// operations (`get_many`, `set_many`, `delete_many`) run them.
    fn batch(&mut self, inp: &mut Input, first: &[u8]) {
        let shard = self.b.shard_of(self.b.hash(first));
        let keys: Vec<Vec<u8>> = (0..self.nkeys + 1)
            .map(|id| key_bytes(id, self.nkeys))
            .filter(|k| self.b.shard_of(self.b.hash(k)) == shard)
            .take(1 + inp.below(6) as usize)
            .collect();
        let plan: Vec<Planned> = keys
            .into_iter()
            .map(|k| {
                let what = inp.u8() % 3;
                let v = value(inp, (self.max as usize - k.len()).min(self.room), self.step);
                (what, k, v, expiry(inp, self.now))
            })
            .collect();
        let (now, max, b) = (self.now, self.max, self.b);
        let mut out: Vec<(bool, Option<Value>)> = Vec::new();
        b.with_shard_index(shard, &mut |g: &mut ShardGuard| {
            out.clear();
            for (what, k, (enc, v), exp) in &plan {
                let h = b.hash(k);
                out.push(match what {
                    0 => (false, g.get(k, h, now, |e, v| (e, v.to_vec()))?),
                    1 => (
                        g.set(&Item { key: k, hash: h, enc: *enc, value: v, expires: *exp }, SetMode::Set, now, max)?,
                        None,
                    ),
                    _ => (g.delete(k, h, now)?, None),
                });
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("step {}: batch: {e}", self.step));
        for ((what, k, (enc, v), exp), (flag, got)) in plan.into_iter().zip(out) {
            match what {
                0 => match got {
                    Some(got) => {
                        self.present(&k, "batch get");
                        let it = self.live(&k).unwrap();
                        assert!(
                            got == (it.enc, it.val.clone()),
                            "step {}: batch get {k:?}: stale or foreign value",
                            self.step
                        );
                        self.hits += 1;
                    }
                    None => self.absent(&k, "batch get"),
                },
                1 => {
                    assert!(flag, "step {}: batch set returned false", self.step);
                    self.m.insert(k, Stored { enc, val: v, exp });
                }
                _ => {
                    if flag {
                        self.present(&k, "batch delete");
                    } else {
                        self.absent(&k, "batch delete");
                    }
                    self.m.remove(&k);
                }
            }
        }
    }

    fn clear(&mut self) {
        self.b.clear().expect("clear");
        self.wipes += self.b.nshards() as u64;
        self.m.clear();
    }

    /// Whole-cache checks: the log agrees with index and counts, and no
    /// shard was ever wiped behind our back (a wipe would look like eviction).
    fn check(&mut self) {
        let (items, bytes) = self.b.verify().unwrap_or_else(|e| panic!("step {}: verify: {e}", self.step));
        assert_eq!(self.b.counts(), (items, bytes), "step {}: header counts", self.step);
        self.max_items = self.max_items.max(items);
        assert_eq!(
            self.b.counter(Counter::ShardWipes),
            self.wipes,
            "step {}: a shard was wiped (corruption detected)",
            self.step
        );
        let live = self.m.values().filter(|it| it.live(self.now)).count() as u64;
        if self.exact {
            // Every live model item is in the cache; expired ones may linger until reclaimed.
            assert!(
                live <= items && items <= self.m.len() as u64,
                "step {}: cache holds {items} items, model {live} live of {}",
                self.step,
                self.m.len()
            );
            assert_eq!(
                self.b.counter(Counter::Evictions),
                self.evictions0,
                "step {}: the exact cache evicted",
                self.step
            );
        }
        // Every value the cache holds is the model's (sampled through get).
        // The exact model checks every key; the small one its own keys and the hot ones.
        let mut keys: Vec<Vec<u8>> = if self.exact { Vec::new() } else { self.m.keys().cloned().collect() };
        keys.extend((0..self.nkeys.min(NKEYS_EXACT) + 1).map(|id| key_bytes(id, self.nkeys)));
        for k in keys {
            self.get(&k);
        }
    }
}

/// Run one corruption input on `b`: fill, damage, operate, check. Panics
/// if damage escapes as anything but a wiped shard.
pub fn run_corrupt<B: Backend>(b: &B, data: &[u8]) -> Report {
    let mut inp = Input::new(data);
    let g = *b.geometry();
    let max = g.max_item_size;
    b.clear().expect("clear");
    let mut now = T0;
    let mut rep = Report::default();
    let key = |inp: &mut Input| -> Vec<u8> {
        let id = inp.below(400);
        let mut k = format!("k{id}").into_bytes();
        k.resize(k.len() + [0, 0, 3, 20, 200][id as usize % 5], b'.');
        k
    };
    let ok = |what: &str, r: Result<()>| match r {
        Ok(()) | Err(Error::NotFound | Error::NotInteger | Error::TooLarge { .. }) => {}
        Err(e) => panic!("{what} after damage: {e:?}"),
    };

    // 1. Fill: sets of all sizes, some expiring, some integers; deletes and
    //    overwrites leave dead records between the live ones.
    let n = 50 + inp.below(400);
    for i in 0..n {
        now += inp.below(3);
        let k = key(&mut inp);
        let h = b.hash(&k);
        match inp.u8() % 8 {
            0 => {
                b.with_shard(h, |g| g.delete(&k, h, now)).expect("delete");
            }
            1 => {
                let v = (inp.u16() as i64).to_le_bytes();
                b.with_shard(h, |g| {
                    g.set(&Item { key: &k, hash: h, enc: ENC_INT, value: &v, expires: 0 }, SetMode::Set, now, max)
                })
                .expect("set");
            }
            _ => {
                let (enc, v) = value(&mut inp, (max as usize).saturating_sub(k.len()), i);
                let exp = expiry(&mut inp, now);
                b.with_shard(h, |g| {
                    g.set(&Item { key: &k, hash: h, enc, value: &v, expires: exp }, SetMode::Set, now, max)
                })
                .expect("set");
            }
        }
    }
    b.verify().expect("verify before damage");

    // 2. Damage the structure: header fields, live index slots, live and
    //    tail record headers, and random bytes anywhere past the mutex slot.
    check_header_offsets(b);
    for _ in 0..1 + inp.below(8) {
        damage(b, &mut inp);
    }

    b.read_stats();
    // Generations may be damaged too; from here on only wipes change them.
    let gens0: Vec<u64> = (0..b.nshards()).map(|i| b.shard(i).generation()).collect();

    // 3. Operate on the damaged cache.
    let nops = 20 + inp.below(300);
    for i in 0..nops {
        now += inp.below(50);
        let k = key(&mut inp);
        let h = b.hash(&k);
        rep.ops += 1;
        let sel = inp.u8();
        match sel % 8 {
            0 => match b.with_shard(h, |g| g.get(&k, h, now, |_, v| v.len())) {
                Ok(Some(_)) => rep.survived += 1,
                r => ok("get", r.map(|_| ())),
            },
            1 => {
                if let Some(Some(_)) = b.shard(b.shard_of(h)).get_optimistic(&k, h, now, |_, v| v.len()) {
                    rep.survived += 1;
                }
            }
            2 | 3 => {
                let (enc, v) = value(&mut inp, (max as usize).saturating_sub(k.len()), n + i);
                let exp = expiry(&mut inp, now);
                let mode = if sel & 0x80 == 0 { SetMode::Set } else { SetMode::Add };
                let r = b
                    .with_shard(h, |g| g.set(&Item { key: &k, hash: h, enc, value: &v, expires: exp }, mode, now, max));
                assert!(r.is_ok(), "set after damage: {r:?}");
            }
            4 => ok("delete", b.with_shard(h, |g| g.delete(&k, h, now)).map(|_| ())),
            5 => {
                let (d, create) = (delta(&mut inp), inp.u8() & 1 == 1);
                ok("incr", b.with_shard(h, |g| g.incr(&k, h, &d, create, now, max)).map(|_| ()))
            }
            6 => {
                let exp = expiry(&mut inp, now);
                ok("touch", b.with_shard(h, |g| g.touch(&k, h, exp, now)).map(|_| ()))
            }
            _ => {
                ok("ttl", b.with_shard(h, |g| g.ttl(&k, h, now)).map(|_| ()));
                ok("contains", b.with_shard(h, |g| g.contains(&k, h, now)).map(|_| ()));
            }
        }
    }

    // 4. Every shard: damage the operations did not reach is found by the
    //    full walk, which wipes that shard; after that the cache is sound.
    for i in 0..b.nshards() {
        b.with_shard_index(i, &mut |g: &mut ShardGuard| g.verify())
            .unwrap_or_else(|e| panic!("shard {i} still fails verify after a wipe: {e}"));
    }
    b.read_stats();
    let (items, bytes) = b.verify().unwrap_or_else(|e| panic!("verify after damage: {e}"));
    assert_eq!(b.counts(), (items, bytes), "header counts after damage");
    rep.wipes = (0..b.nshards()).map(|i| b.shard(i).generation().wrapping_sub(gens0[i])).sum();
    // Nothing damaged is left: every shard works normally, without a wipe.
    let wipes = b.counter(Counter::ShardWipes);
    for i in 0..100 {
        let k = format!("after{i}").into_bytes();
        let h = b.hash(&k);
        assert!(b
            .with_shard(h, |g| g.set(
                &Item { key: &k, hash: h, enc: ENC_BYTES, value: b"v", expires: 0 },
                SetMode::Set,
                now,
                max
            ))
            .unwrap());
        let got = b.with_shard(h, |g| g.get(&k, h, now, |_, v| v.to_vec())).unwrap();
        assert_eq!(
            got.as_deref(),
            Some(&b"v"[..]),
            "a set after verify passed was lost (wipes {} -> {})",
            wipes,
            b.counter(Counter::ShardWipes)
        );
    }
    assert_eq!(b.counter(Counter::ShardWipes), wipes, "damage left after verify() passed");
    rep
}

/// Byte offsets of `ShardHeader`'s fields (private to shard.rs) after the
/// mutex slot; [`check_header_offsets`] fails loudly if the layout moves.
const HDR_GENERATION: u64 = 72;
const HDR_TAIL: u64 = 88;
const HDR_ITEMS: u64 = 104;
const HDR_LIVE_BYTES: u64 = 112;
/// End of the header's fields (seq … counters).
const HDR_END: u64 = 184;
/// (offset, width) of `RecHdr`'s fields.
const REC_FIELDS: [(u64, u64); 8] = [(0, 1), (1, 1), (2, 1), (4, 4), (8, 4), (12, 4), (16, 8), (24, 8)];

/// Read `width` bytes at `at` in shard `s` (little-endian).
fn read_at(b: &impl Backend, s: usize, at: u64, width: u64) -> u64 {
    assert!(at + width <= b.geometry().shard_size);
    let mut v = [0u8; 8];
    // SAFETY: in bounds of the shard (checked); plain bytes.
    unsafe { std::ptr::copy_nonoverlapping(b.shard_base(s).add(at as usize), v.as_mut_ptr(), width as usize) };
    u64::from_le_bytes(v)
}

fn check_header_offsets(b: &impl Backend) {
    for i in 0..b.nshards() {
        let sh = b.shard(i);
        assert_eq!(read_at(b, i, HDR_ITEMS, 8), sh.items(), "ShardHeader layout changed: update fuzz_model");
        assert_eq!(read_at(b, i, HDR_LIVE_BYTES, 8), sh.live_bytes(), "ShardHeader layout changed: update fuzz_model");
        assert_eq!(read_at(b, i, HDR_GENERATION, 8), sh.generation(), "ShardHeader layout changed: update fuzz_model");
    }
    const _: () = assert!(MUTEX_SLOT as u64 == 64 && std::mem::size_of::<RecHdr>() == 32);
}

/// One act of damage to one shard, past its mutex slot.
fn damage(b: &impl Backend, inp: &mut Input) {
    let g = *b.geometry();
    let s = inp.below(g.nshards) as usize;
    // Offsets within shard s.
    let index = SHARD_HEADER_SIZE;
    let log = index + g.index_cap * 8;
    let mutex_end = MUTEX_SLOT as u64;
    // A non-empty index slot at or after a random one, if any.
    let live_slot = |inp: &mut Input| {
        let start = inp.below(g.index_cap);
        (0..g.index_cap).map(|i| (start + i) % g.index_cap).find(|&i| read_at(b, s, index + 8 * i, 8) != 0)
    };
    let record_field = |inp: &mut Input, off: u64| {
        let (fo, w) = REC_FIELDS[inp.below(REC_FIELDS.len() as u64) as usize];
        (off.checked_add(REC_HDR)? <= g.data_size).then_some((log + off + fo, w))
    };
    let random_byte = (mutex_end + inp.below(g.shard_size - MUTEX_SLOT as u64), 1);
    let (at, width) = match inp.u8() % 8 {
        0 => (mutex_end + 8 * inp.below((HDR_END - MUTEX_SLOT as u64) / 8), 8),
        1 => (mutex_end + inp.below(SHARD_HEADER_SIZE - MUTEX_SLOT as u64), 1),
        2 => match live_slot(inp) {
            // The whole slot, or its offset or tag half.
            Some(i) => [(index + 8 * i, 8), (index + 8 * i, 4), (index + 8 * i + 4, 4)][inp.below(3) as usize],
            None => random_byte,
        },
        3 | 4 => live_slot(inp)
            .and_then(|i| record_field(inp, crate::shard::index::entry_off(read_at(b, s, index + 8 * i, 8))))
            .unwrap_or(random_byte),
        5 => record_field(inp, read_at(b, s, HDR_TAIL, 8) % g.data_size).unwrap_or(random_byte),
        6 => (log + inp.below(g.data_size), 1),
        _ => random_byte,
    };
    assert!(at >= mutex_end && at + width <= g.shard_size);
    let old = read_at(b, s, at, width);
    let bits = 8 * width;
    let new = match inp.u8() % 8 {
        0 => 0,
        1 => u64::MAX,
        2 => inp.u64(),
        3 => old.wrapping_add(1 + inp.below(64)),
        4 => old.wrapping_sub(1 + inp.below(64)),
        5 => old.wrapping_add(8 * (1 + inp.below(16))),
        6 => old.wrapping_sub(8 * (1 + inp.below(16))),
        _ => old ^ (1 << inp.below(bits)),
    };
    let bytes = new.to_le_bytes();
    // SAFETY: `at..at + width` lies inside one shard of the mapping, past its
    // mutex: a stray writer. Nobody else uses this cache; the core reads
    // shared bytes through atomics or validated copies only.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), b.shard_base(s).add(at as usize), width as usize) };
}

/// A small xorshift generator for the deterministic runs.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    /// Random input bytes of a random length up to `max_len`.
    pub fn input(&mut self, max_len: usize) -> Vec<u8> {
        let len = 1 + (self.next_u64() as usize) % max_len;
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

/// How long a deterministic run goes: `SHMCACHE_FUZZ_SECONDS` (run until
/// then), else `SHMCACHE_FUZZ_ITERS` inputs, else `default_iters`; inputs
/// come from `SHMCACHE_FUZZ_SEED` (default fixed, so `cargo test` is
/// reproducible). `SHMCACHE_FUZZ_INPUT=file` runs just that input (a saved
/// failure, or a cargo-fuzz artifact).
pub struct Budget {
    pub iters: u64,
    pub deadline: Option<std::time::Instant>,
    pub seed: u64,
}

impl Budget {
    pub fn from_env(default_iters: u64) -> Budget {
        let get = |name: &str| std::env::var(name).ok().and_then(|v| v.trim().parse::<u64>().ok());
        let secs = get("SHMCACHE_FUZZ_SECONDS");
        Budget {
            iters: if secs.is_some() { u64::MAX } else { get("SHMCACHE_FUZZ_ITERS").unwrap_or(default_iters) },
            deadline: secs.map(|s| std::time::Instant::now() + Duration::from_secs(s)),
            seed: get("SHMCACHE_FUZZ_SEED").unwrap_or(0x5DEE_CE66_D1CE_5EED),
        }
    }

    /// Run `one(i, input)` on random inputs (lengths up to `max_len(i)`)
    /// until the budget is spent. A failing input is printed (with the seed
    /// and its number) before the panic goes on. Returns the inputs run.
    /// `one` gets the input's number, or `None` for a file input.
    pub fn run(
        &self,
        name: &str,
        max_len: impl Fn(u64) -> usize,
        mut one: impl FnMut(Option<u64>, &mut Vec<u8>),
    ) -> u64 {
        if let Some(path) = std::env::var_os("SHMCACHE_FUZZ_INPUT") {
            let mut data = std::fs::read(&path).expect("SHMCACHE_FUZZ_INPUT");
            one(None, &mut data);
            return 1;
        }
        let mut rng = Rng(self.seed | 1);
        let mut i = 0;
        while i < self.iters && self.deadline.is_none_or(|d| std::time::Instant::now() < d) {
            let mut data = rng.input(max_len(i));
            if let Err(e) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| one(Some(i), &mut data))) {
                let path = std::env::temp_dir().join(format!("shmcache-fuzz-{name}-{}-{i}", self.seed));
                let saved = std::fs::write(&path, &data).map(|_| path.display().to_string());
                eprintln!(
                    "fuzz_model: {name} input #{i} (SHMCACHE_FUZZ_SEED={}) failed; input saved to {} \
                     (rerun it with SHMCACHE_FUZZ_INPUT=that file)",
                    self.seed,
                    saved.unwrap_or_else(|e| format!("nowhere ({e})"))
                );
                std::panic::resume_unwind(e);
            }
            i += 1;
        }
        i
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The quick default suits `cargo test --release` (~1 s); a debug build
    /// is ~20x slower, Miri ~10^4x. tools/fuzz.sh sets SHMCACHE_FUZZ_SECONDS.
    fn budget(quick: u64) -> Budget {
        Budget::from_env(if cfg!(miri) {
            2
        } else if cfg!(debug_assertions) {
            quick / 8
        } else {
            quick
        })
    }

    /// Use `HeapCache` (under Miri, or with SHMCACHE_FUZZ_BACKEND=heap: ASan
    /// and valgrind then see any access past a shard, each its own heap
    /// block), else real segments.
    fn heap() -> bool {
        cfg!(miri) || std::env::var("SHMCACHE_FUZZ_BACKEND").is_ok_and(|v| v == "heap")
    }

    fn model_on<B: Backend>(exact: &B, small: &B) {
        let b = budget(600);
        let mut total = Report::default();
        let t = std::time::Instant::now();
        let long = |i: u64| {
            if cfg!(miri) {
                1500
            } else if i.is_multiple_of(4) {
                30_000
            } else {
                6000
            }
        };
        let n = b.run("model", long, |i, data| {
            if let Some(i) = i {
                data[0] = i as u8; // cycle through exact / small / tiny values
            }
            total += run_model(exact, small, data);
        });
        eprintln!("fuzz_model: {n} model inputs in {:.1?} (SHMCACHE_FUZZ_SEED={}): {total:?}", t.elapsed(), b.seed);
        if n >= 50 {
            assert!(total.hits > 0 && total.evictions > 0, "the harness exercised nothing: {total:?}");
        }
    }

    fn corrupt_on<B: Backend>(c: &B) {
        let b = budget(400);
        let mut total = Report::default();
        let t = std::time::Instant::now();
        let n = b.run("corruption", |_| if cfg!(miri) { 1500 } else { 3000 }, |_, data| total += run_corrupt(c, data));
        eprintln!(
            "fuzz_model: {n} corruption inputs in {:.1?} (SHMCACHE_FUZZ_SEED={}): {total:?}",
            t.elapsed(),
            b.seed
        );
        if n >= 50 {
            assert!(total.wipes > 0 && total.survived > 0, "damage never detected or nothing survived: {total:?}");
        }
    }

    #[test]
    fn model_random_sequences() {
        if heap() {
            model_on(&HeapCache::new(&EXACT).unwrap(), &HeapCache::new(&SMALL).unwrap());
        } else {
            model_on(&shm_cache(&EXACT), &shm_cache(&SMALL));
        }
    }

    /// The model with a hash that collides: keys sharing the index tag (and
    /// sometimes the whole hash) must behave as distinct keys, never as damage.
    #[test]
    fn model_random_sequences_with_colliding_hashes() {
        model_on(
            &HeapCache::with_hash_mask(&EXACT, COLLIDING_HASH).unwrap(),
            &HeapCache::with_hash_mask(&SMALL, COLLIDING_HASH).unwrap(),
        );
    }

    #[test]
    fn corruption_random_damage() {
        if heap() {
            corrupt_on(&HeapCache::new(&CORRUPT).unwrap());
        } else {
            corrupt_on(&shm_cache(&CORRUPT));
        }
    }

    /// Every path Miri should walk, without relying on random inputs to
    /// reach it: eviction, compaction moves, wrap markers, expiry and the
    /// sweep, incr, deletes; then each kind of damage followed by operations.
    #[test]
    fn deterministic_paths() {
        let cfg = Config { size: 64 << 10, max_item_size: 4096, shards: 2 };
        let b = HeapCache::new(&cfg).unwrap();
        let max = b.geometry().max_item_size;
        let mut now = T0;
        let op = |k: &[u8], f: &mut dyn FnMut(&mut ShardGuard, u64) -> Result<()>| {
            let h = b.hash(k);
            b.with_shard(h, |g| f(g, h)).unwrap();
        };
        for round in 0..3u64 {
            for i in 0..40u64 {
                now += 7;
                let k = format!("key{}", (i * 7 + round) % 50).into_bytes();
                let len = ((i * 997 + round * 31) % 3000) as usize;
                let exp = if i % 5 == 0 { now + 20 } else { 0 };
                op(&k, &mut |g, h| {
                    g.set(
                        &Item { key: &k, hash: h, enc: ENC_BYTES, value: &vec![i as u8; len], expires: exp },
                        SetMode::Set,
                        now,
                        max,
                    )
                    .map(|_| ())
                });
                op(&k, &mut |g, h| g.get(&k, h, now, |_, v| v.len()).map(|_| ()));
                if i % 9 == 0 {
                    op(&k, &mut |g, h| g.delete(&k, h, now).map(|_| ()));
                }
                if i % 11 == 0 {
                    let n = format!("n{i}").into_bytes();
                    op(&n, &mut |g, h| {
                        g.set(
                            &Item { key: &n, hash: h, enc: ENC_INT, value: &5i64.to_le_bytes(), expires: 0 },
                            SetMode::Set,
                            now,
                            max,
                        )
                        .map(|_| ())
                    });
                    op(&n, &mut |g, h| g.incr(&n, h, &Int::Small(3), false, now, max).map(|_| ()));
                    op(&n, &mut |g, h| g.incr(&n, h, &Int::Small(i64::MAX), false, now, max).map(|_| ()));
                    op(&n, &mut |g, h| g.touch(&n, h, now + 5, now).map(|_| ()));
                }
            }
            b.verify().unwrap();
        }
        let (ev, ex) = (b.counter(Counter::Evictions), b.counter(Counter::Expirations));
        assert!(ev > 0 && ex > 0, "paths not reached: {ev} evictions, {ex} expirations");

        let c = HeapCache::new(&CORRUPT).unwrap();
        let mut rng = Rng(7);
        for sel in 0..8u8 {
            for _ in 0..2 {
                // Fill (no damage yet), then one damage of kind `sel`, then operate.
                let fill: Vec<u8> = (0..200).map(|_| rng.next_u64() as u8).collect();
                c.clear().unwrap();
                let mut inp = Input::new(&fill);
                for i in 0..60u64 {
                    let k = format!("k{i}").into_bytes();
                    let (enc, v) = value(&mut inp, 600, i);
                    let h = c.hash(&k);
                    c.with_shard(h, |g| {
                        g.set(&Item { key: &k, hash: h, enc, value: &v, expires: 0 }, SetMode::Set, T0, 2048)
                    })
                    .unwrap();
                }
                let mut dmg = vec![rng.next_u64() as u8, sel];
                dmg.extend((0..30).map(|_| rng.next_u64() as u8));
                damage(&c, &mut Input::new(&dmg));
                for i in 0..60u64 {
                    let k = format!("k{i}").into_bytes();
                    let h = c.hash(&k);
                    let _ = c.with_shard(h, |g| g.get(&k, h, T0 + 1, |_, v| v.len()));
                    let _ = c.shard(c.shard_of(h)).get_optimistic(&k, h, T0 + 1, |_, v| v.len());
                    if i % 3 == 0 {
                        c.with_shard(h, |g| {
                            g.set(
                                &Item { key: &k, hash: h, enc: ENC_BYTES, value: &[1; 300], expires: 0 },
                                SetMode::Set,
                                T0 + 1,
                                2048,
                            )
                        })
                        .unwrap();
                    }
                }
                for i in 0..c.nshards() {
                    c.with_shard_index(i, &mut |g: &mut ShardGuard| g.verify()).unwrap();
                }
                c.verify().unwrap();
            }
        }
    }

    #[test]
    fn empty_and_tiny_inputs() {
        let h = (HeapCache::new(&EXACT).unwrap(), HeapCache::new(&SMALL).unwrap(), HeapCache::new(&CORRUPT).unwrap());
        for data in [&[][..], &[0], &[1], &[0, 0, 0, 0], &[255; 7]] {
            run_model(&h.0, &h.1, data);
        }
        for data in [&[][..], &[0], &[255; 40]] {
            run_corrupt(&h.2, data);
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "no shared memory under Miri")]
    fn both_backends_agree() {
        // Same hash seed, same shard code: the same input leaves the same counts.
        let mut rng = Rng(42);
        let data = rng.input(3000);
        let (h, s) = (HeapCache::new(&CORRUPT).unwrap(), shm_cache(&CORRUPT));
        run_corrupt(&h, &data);
        run_corrupt(&s, &data);
        assert_eq!(h.counts(), s.counts());
        let (h2, s2) = (HeapCache::new(&SMALL).unwrap(), shm_cache(&SMALL));
        let mut data = rng.input(6000);
        data[0] = 1;
        run_model(&h2, &h2, &data);
        run_model(&s2, &s2, &data);
        assert_eq!(h2.counts(), s2.counts());
    }
}
