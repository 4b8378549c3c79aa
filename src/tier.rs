//! The coherence words of a tiered cache's L1 (`shmcache.tiered`): what a
//! segment used as the L1 in front of Redis shares between its workers and
//! its one invalidation listener.
//!
//! - **Fill tokens.** A fill (an L1 miss answered by L2) reads a token
//!   before its L2 read: the segment's flush epoch and the key's
//!   invalidation stripe (`shard/inval.rs`). It stores only if, under the
//!   shard lock, both are unchanged ([`ShmCache::set_if_token`]): an
//!   invalidation or a flush between the L2 read and the fill wins. Nothing
//!   is held between the two, so a worker that dies mid-fill leaves
//!   nothing behind (the shard's own crash recovery covers a death inside
//!   the set).
//! - **The epoch**, bumped by every [`ShmCache::flush`] before the shards
//!   are cleared. Tokens carry it XOR the segment's random hash seed, so a
//!   token taken on a segment that was since replaced (its name removed and
//!   re-created) does not match the new one's.
//! - **The watermark**: the `CLOCK_MONOTONIC` millisecond at which the
//!   listener sent the last PING whose PONG it has received (0 = none). The
//!   L1 is *live* while it is younger than MAX_STALENESS ([`ShmCache::live`]).
//! - **Counters** of the tier (`TIER_COUNTER_NAMES`), host-wide.
//!
//! All of it lives in the segment header page, at [`TIER_OFFSET`], past the
//! header's own fields: zero in a fresh segment, and never read by a plain
//! (untiered) cache.

use crate::cache::ShmCache;
use crate::error::Result;
use crate::mem::layout::{SegHeader, HEADER_SIZE};
use crate::shard::ops::Item;
use crate::time;
use std::sync::atomic::{
    AtomicU64,
    Ordering::{Acquire, Relaxed, Release, SeqCst},
};

/// Where the tier's words start in the 4 KiB header page.
pub const TIER_OFFSET: u64 = 2048;

#[repr(usize)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TierCounter {
    L2Hits = 0,
    L2Misses,
    Invalidations,
    Fills,
    FillsRejected,
    Flushes,
    NotLiveReads,
    NotLiveMs,
    ListenerStarts,
}

pub const N_TIER_COUNTERS: usize = 9;
pub const TIER_COUNTER_NAMES: [&str; N_TIER_COUNTERS] = [
    "l2_hits",
    "l2_misses",
    "invalidations",
    "fills",
    "fills_rejected",
    "flushes",
    "not_live_reads",
    "not_live_ms",
    "listener_starts",
];

/// Every counter, in `TIER_COUNTER_NAMES` order.
pub const TIER_COUNTERS: [TierCounter; N_TIER_COUNTERS] = [
    TierCounter::L2Hits,
    TierCounter::L2Misses,
    TierCounter::Invalidations,
    TierCounter::Fills,
    TierCounter::FillsRejected,
    TierCounter::Flushes,
    TierCounter::NotLiveReads,
    TierCounter::NotLiveMs,
    TierCounter::ListenerStarts,
];
const _: () = {
    let mut i = 0;
    while i < N_TIER_COUNTERS {
        assert!(TIER_COUNTERS[i] as usize == i);
        i += 1;
    }
};

impl TierCounter {
    /// The counter named `name` (a key of `tier_stats`).
    pub fn from_name(name: &str) -> Option<TierCounter> {
        TIER_COUNTER_NAMES.iter().position(|c| *c == name).map(|i| TIER_COUNTERS[i])
    }
}

#[repr(C)]
pub struct TierWords {
    epoch: AtomicU64,
    watermark_ms: AtomicU64,
    listener_pid: AtomicU64,
    counters: [AtomicU64; N_TIER_COUNTERS],
}

const _: () = assert!(std::mem::size_of::<SegHeader>() as u64 <= TIER_OFFSET);
const _: () = assert!(TIER_OFFSET + std::mem::size_of::<TierWords>() as u64 <= HEADER_SIZE);
const _: () = assert!(TIER_OFFSET.is_multiple_of(64));

/// What a fill read before going to L2: (epoch ^ seed, stripe).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FillToken {
    pub epoch: u64,
    pub stripe: u64,
}

/// What [`ShmCache::liveness`] sees of the watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// No watermark, or one older than MAX_STALENESS: the L1 is not used.
    NotLive,
    /// Live, and the watermark is recent.
    Live,
    /// Live, but the watermark is older than the lag asked about: the
    /// listener has missed PINGs (dead, stopped, or slow).
    Lagging,
}

/// What a tiered reader does with its L1 ([`LiveReads::check`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveRead {
    /// Not live: L2 answers, nothing is filled.
    Skip,
    /// Read L1.
    Read,
    /// Live but lagging, and this reader is the one to check on the
    /// listener (the election) before it reads.
    CheckListener,
}

/// One tiered client's reading rules: its MAX_STALENESS, and the lag after
/// which it checks on the listener. Readers whose every call is an L1 hit
/// never reach L2, so without the lag a dead listener would be noticed only
/// once the L1 stopped being live (MAX_STALENESS later); with it, one read
/// per lag period (per client, so per process) is told to check. Until
/// [`configure`](Self::configure)d (MAX_STALENESS 0) nothing is live.
#[derive(Debug, Default)]
pub struct LiveReads {
    max_staleness_ms: AtomicU64,
    lag_ms: AtomicU64,
    next_check_ms: AtomicU64,
}

impl LiveReads {
    pub const fn new() -> Self {
        LiveReads { max_staleness_ms: AtomicU64::new(0), lag_ms: AtomicU64::new(0), next_check_ms: AtomicU64::new(0) }
    }

    /// `lag_ms` 0: never check (only MAX_STALENESS applies).
    pub fn configure(&self, max_staleness_ms: u64, lag_ms: u64) {
        self.max_staleness_ms.store(max_staleness_ms, Relaxed);
        self.lag_ms.store(lag_ms, Relaxed);
    }

    #[inline]
    pub fn check(&self, c: &ShmCache) -> LiveRead {
        let lag = self.lag_ms.load(Relaxed);
        let now = monotonic_ms();
        match c.liveness_at(now, self.max_staleness_ms.load(Relaxed), lag) {
            Liveness::NotLive => LiveRead::Skip,
            Liveness::Lagging if self.take(now, lag) => LiveRead::CheckListener,
            _ => LiveRead::Read,
        }
    }

    /// [`check`](Self::check) for a read of the L1: one it skips (not
    /// live) counts as a not-live read.
    #[inline]
    pub fn for_read(&self, c: &ShmCache) -> LiveRead {
        let r = self.check(c);
        if r == LiveRead::Skip {
            c.tier_add(TierCounter::NotLiveReads, 1);
        }
        r
    }

    /// True at most once per `lag_ms` (the first caller after the period).
    fn take(&self, now: u64, lag_ms: u64) -> bool {
        let next = self.next_check_ms.load(Relaxed);
        now >= next && self.next_check_ms.compare_exchange(next, now + lag_ms, Relaxed, Relaxed).is_ok()
    }
}

/// `CLOCK_MONOTONIC` in ms (the clock of the watermark; Python's
/// `time.monotonic`), rounded down. The precise clock, not
/// `CLOCK_MONOTONIC_COARSE` (~20 ns cheaper): the coarse clock only bounds
/// now from below, and it was seen here 7 ms behind with a stated 4 ms
/// resolution (ticks missed; after a VM pause, any amount), which would let
/// a read use the L1 past MAX_STALENESS.
#[inline]
pub fn monotonic_ms() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant the kernel supports.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

impl ShmCache {
    #[inline]
    fn tier(&self) -> &TierWords {
        // SAFETY: the header page (HEADER_SIZE bytes, page-aligned) is mapped for the
        // segment's life; TierWords lies inside it past SegHeader (const asserts), is
        // 8-aligned, and is made of atomics only, valid for any bit pattern.
        unsafe { &*self.segment().base().add(TIER_OFFSET as usize).cast::<TierWords>() }
    }

    #[inline]
    fn tier_epoch(&self) -> u64 {
        self.tier().epoch.load(Acquire) ^ self.segment().header().hash_seed
    }

    /// The token a fill of `key` takes before its L2 read (lock-free).
    pub fn fill_token(&self, key: &[u8]) -> FillToken {
        let h = self.hash(key);
        if self.moved() {
            if let Ok(next) = self.successor() {
                return next.fill_token(key);
            }
        }
        let epoch = self.tier_epoch();
        FillToken { epoch, stripe: self.shard_for(h).inval_stripe(h) }
    }

    /// Store `key` only if nothing invalidated it (nor flushed the cache)
    /// since `token` was taken; counts a fill or a rejected fill. `now` as
    /// for `store` (the reading `expires` came from).
    pub fn set_if_token(
        &self,
        key: &[u8],
        enc: u8,
        value: &[u8],
        expires: u64,
        now: u64,
        token: FillToken,
    ) -> Result<bool> {
        let (h, max) = (self.hash(key), self.geometry().max_item_size);
        let stored = self.with_shard(h, crate::cache::Wait::Bounded, |g| {
            // Under the shard lock: a flush bumps the epoch before it clears
            // this shard (under this lock), so either we see its epoch or it
            // wipes what we store.
            // A fill forwarded from a moved segment took its token there: refused.
            if self.tier_epoch() != token.epoch || self.moved() {
                return Ok(false);
            }
            g.set_if_stripe(&Item { key, hash: h, enc, value, expires }, token.stripe, now, max)
        })?;
        self.tier_add(if stored { TierCounter::Fills } else { TierCounter::FillsRejected }, 1);
        Ok(stored)
    }

    /// Delete `key` from L1 and refuse any fill of it in flight.
    pub fn invalidate(&self, key: &[u8]) -> Result<bool> {
        let (h, now) = (self.hash(key), time::now_ms());
        let had = self.with_shard(h, crate::cache::Wait::Bounded, |g| g.invalidate(key, h, now))?;
        self.tier_add(TierCounter::Invalidations, 1);
        Ok(had)
    }

    /// `invalidate` for many keys, one lock pass per shard; how many were
    /// present. A shard whose lock times out fails the whole call (the
    /// caller must then flush: an invalidation may not be lost).
    pub fn invalidate_many<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<usize> {
        let now = time::now_ms();
        let r = self.count_many(keys, |g, k, h| g.invalidate(k, h, now));
        self.tier_add(TierCounter::Invalidations, keys.len() as u64);
        r
    }

    /// Drop everything and refuse every fill in flight: the epoch first,
    /// then every shard cleared.
    pub fn flush(&self) -> Result<()> {
        if self.moved() {
            return self.successor()?.flush();
        }
        self.tier().epoch.fetch_add(1, SeqCst);
        self.tier_add(TierCounter::Flushes, 1);
        self.clear()?;
        if self.moved() {
            // Migrated meanwhile: the successor's fills in flight are refused too.
            return self.successor()?.flush();
        }
        Ok(())
    }

    /// Take over `old`'s tier words when it migrates here (`migrate.rs`,
    /// every lock of `old` held): its watermark, listener and counters, and
    /// an epoch past its own, so no token taken there is accepted here.
    pub(crate) fn inherit_tier(&self, old: &ShmCache) {
        let (t, o) = (self.tier(), old.tier());
        t.epoch.store(o.epoch.load(SeqCst).wrapping_add(1), SeqCst);
        t.watermark_ms.store(o.watermark_ms.load(Acquire), SeqCst);
        t.listener_pid.store(o.listener_pid.load(Acquire), SeqCst);
        for (a, b) in t.counters.iter().zip(o.counters.iter()) {
            a.store(b.load(Relaxed), Relaxed);
        }
    }

    /// Is the L1 live: the watermark younger than `max_staleness_ms` by
    /// the precise clock ([`monotonic_ms`])? Both are whole ms rounded
    /// down, so `now < watermark + max` bounds the true age below max.
    #[inline]
    pub fn live(&self, max_staleness_ms: u64) -> bool {
        self.liveness(max_staleness_ms, 0) != Liveness::NotLive
    }

    /// [`live`](Self::live), and whether a live watermark is already older
    /// than `lag_ms` (0: not asked): the listener has missed a few PINGs,
    /// so it may be dead. One read of the word and of the clock.
    #[inline]
    pub fn liveness(&self, max_staleness_ms: u64, lag_ms: u64) -> Liveness {
        self.liveness_at(monotonic_ms(), max_staleness_ms, lag_ms)
    }

    /// [`liveness`](Self::liveness) at `now` (a [`monotonic_ms`] reading).
    #[inline]
    pub(crate) fn liveness_at(&self, now: u64, max_staleness_ms: u64, lag_ms: u64) -> Liveness {
        let wm = self.tier().watermark_ms.load(Acquire);
        if wm == 0 || max_staleness_ms == 0 {
            return Liveness::NotLive;
        }
        if now >= wm.saturating_add(max_staleness_ms) {
            Liveness::NotLive
        } else if lag_ms != 0 && now > wm.saturating_add(lag_ms) {
            Liveness::Lagging
        } else {
            Liveness::Live
        }
    }

    pub fn watermark_ms(&self) -> u64 {
        self.tier().watermark_ms.load(Acquire)
    }

    /// The listener's: the send time of the PING just answered (0: not live).
    pub fn set_watermark_ms(&self, ms: u64) {
        self.tier().watermark_ms.store(ms, Release);
    }

    pub fn listener_pid(&self) -> u64 {
        self.tier().listener_pid.load(Relaxed)
    }

    pub fn set_listener_pid(&self, pid: u64) {
        self.tier().listener_pid.store(pid, Relaxed);
    }

    #[inline]
    pub fn tier_add(&self, c: TierCounter, n: u64) {
        self.tier().counters[c as usize].fetch_add(n, Relaxed);
    }

    /// The tier's counters, host-wide: (name, value).
    pub fn tier_stats(&self) -> Vec<(&'static str, u64)> {
        let t = self.tier();
        TIER_COUNTER_NAMES.iter().copied().zip(t.counters.iter().map(|c| c.load(Relaxed))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::{LiveRead, LiveReads, Liveness};
    use crate::cache::ShmCache;
    use crate::mem::layout::Config;
    use crate::mem::segment;
    use crate::shard::encoding::ENC_BYTES;
    use crate::shard::stripe_of;
    use crate::time;
    use std::time::Duration;

    fn open(tag: &str) -> ShmCache {
        let loc = format!("tier-test-{tag}-{}", std::process::id());
        let cfg = Config { size: 4 << 20, max_item_size: 4096, shards: 4 };
        ShmCache::open(&loc, &cfg, Duration::from_millis(100)).unwrap()
    }

    fn stat(c: &ShmCache, name: &str) -> u64 {
        c.tier_stats().into_iter().find(|(n, _)| *n == name).unwrap().1
    }

    #[test]
    fn a_fill_with_an_unchanged_token_stores() {
        let c = open("store");
        let t = c.fill_token(b"k");
        assert!(c.set_if_token(b"k", ENC_BYTES, b"v", 0, time::now_ms(), t).unwrap());
        assert_eq!(c.get(b"k").unwrap().unwrap().1, b"v");
        assert_eq!(stat(&c, "fills"), 1);
        segment::destroy(c.name()).unwrap();
    }

    #[test]
    fn an_invalidation_between_token_and_fill_wins() {
        let c = open("inval");
        let t = c.fill_token(b"k");
        // The key is absent from L1: the invalidation must still count.
        assert!(!c.invalidate(b"k").unwrap());
        assert!(!c.set_if_token(b"k", ENC_BYTES, b"old", 0, time::now_ms(), t).unwrap());
        assert!(c.get(b"k").unwrap().is_none());
        assert_eq!(stat(&c, "fills_rejected"), 1);
        // A token taken after the invalidation fills.
        let t = c.fill_token(b"k");
        assert!(c.set_if_token(b"k", ENC_BYTES, b"new", 0, time::now_ms(), t).unwrap());
        assert!(c.invalidate_many(&[b"k".as_slice(), b"other"]).unwrap() == 1);
        assert!(c.get(b"k").unwrap().is_none());
        assert_eq!(stat(&c, "invalidations"), 3);
        segment::destroy(c.name()).unwrap();
    }

    #[test]
    fn a_flush_between_token_and_fill_wins_and_clears() {
        let c = open("flush");
        c.set(b"a", ENC_BYTES, b"1", 0).unwrap();
        let t = c.fill_token(b"k");
        c.flush().unwrap();
        assert!(c.get(b"a").unwrap().is_none());
        assert!(!c.set_if_token(b"k", ENC_BYTES, b"v", 0, time::now_ms(), t).unwrap());
        assert_eq!(stat(&c, "flushes"), 1);
        segment::destroy(c.name()).unwrap();
    }

    #[test]
    fn other_keys_and_other_segments_do_not_match() {
        let c = open("other");
        let t = c.fill_token(b"k");
        // Invalidating many other keys rejects only those sharing k's stripe.
        let others: Vec<Vec<u8>> = (0..200).map(|i| format!("o{i}").into_bytes()).collect();
        let (h, sk) = (c.hash(b"k"), c.shard_of(c.hash(b"k")));
        let unrelated: Vec<&Vec<u8>> = others
            .iter()
            .filter(|o| {
                let ho = c.hash(o);
                c.shard_of(ho) != sk || stripe_of(ho) != stripe_of(h)
            })
            .collect();
        assert!(!unrelated.is_empty());
        c.invalidate_many(&unrelated).unwrap();
        assert!(c.set_if_token(b"k", ENC_BYTES, b"v", 0, time::now_ms(), t).unwrap());
        let d = open("other2");
        let t2 = d.fill_token(b"k");
        assert_ne!(t.epoch, t2.epoch, "epochs are salted by the segment's seed");
        segment::destroy(c.name()).unwrap();
        segment::destroy(d.name()).unwrap();
    }

    #[test]
    fn a_lagging_listener_is_checked_once_per_period() {
        let c = open("lag");
        let r = LiveReads::new();
        c.set_watermark_ms(super::monotonic_ms());
        assert_eq!(r.check(&c), LiveRead::Skip, "not configured: nothing is live");
        r.configure(60_000, 30);
        assert_eq!(r.check(&c), LiveRead::Read);
        c.set_watermark_ms(super::monotonic_ms().saturating_sub(1000));
        assert_eq!(r.check(&c), LiveRead::CheckListener, "the first reader checks");
        assert_eq!(r.check(&c), LiveRead::Read, "the others read, for a period");
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(r.check(&c), LiveRead::CheckListener, "and again once the period has passed");
        r.configure(60_000, 0);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(r.check(&c), LiveRead::Read, "lag 0: never asked");
        r.configure(500, 30);
        assert_eq!(r.check(&c), LiveRead::Skip, "past MAX_STALENESS");
        segment::destroy(c.name()).unwrap();
    }

    #[test]
    fn live_follows_the_watermark() {
        let c = open("live");
        assert!(!c.live(1000), "no watermark yet");
        c.set_watermark_ms(super::monotonic_ms());
        assert!(c.live(1000));
        c.set_watermark_ms(super::monotonic_ms().saturating_sub(500));
        assert!(c.live(1000) && !c.live(400));
        c.set_watermark_ms(super::monotonic_ms().saturating_sub(2000));
        assert!(!c.live(1000));
        c.set_watermark_ms(super::monotonic_ms());
        assert_eq!(c.liveness(1000, 600), Liveness::Live);
        c.set_watermark_ms(super::monotonic_ms().saturating_sub(700));
        assert_eq!(c.liveness(1000, 600), Liveness::Lagging);
        assert_eq!(c.liveness(1000, 0), Liveness::Live, "lag not asked");
        c.set_watermark_ms(super::monotonic_ms().saturating_sub(1200));
        assert_eq!(c.liveness(1000, 600), Liveness::NotLive);
        c.set_listener_pid(42);
        assert_eq!(c.listener_pid(), 42);
        segment::destroy(c.name()).unwrap();
    }

    #[test]
    fn a_watermark_max_staleness_old_is_never_live() {
        // On the precise clock. The coarse one (plus its stated tick) was
        // seen to trail it by more, and then said Live here.
        let c = open("bound");
        for i in 0..3000 {
            c.set_watermark_ms(super::monotonic_ms() - 1000);
            assert_eq!(c.liveness(1000, 0), Liveness::NotLive, "read {i}");
            if i % 100 == 0 {
                std::thread::sleep(Duration::from_micros(1500));
            }
        }
        segment::destroy(c.name()).unwrap();
    }
}
