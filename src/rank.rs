//! "Hottest first": which items to keep when they do not all fit a cache
//! (a snapshot loaded into a smaller cache, a migration to a smaller
//! geometry). Snapshots (`snapshot.rs`) and migrations (`migrate.rs`) both
//! rank items this way and admit them by the same rule.
//!
//! An item's `rank` is its place in CLOCK's eviction order, higher =
//! evicted later: `visited << 15 | position`, where position is the
//! record's place in its shard's log scaled to 0..=32767 (tail 0, head
//! 32767). A [`Histogram`] of the candidates' log bytes and counts by rank
//! (in [`BUCKETS`] buckets) gives the [`Cut`]: the buckets above it are
//! admitted whole, the cut bucket while room lasts, those below not at all.

use crate::mem::layout::{rec_size, Geometry};
use crate::shard::scan::Walked;

/// A rank's bucket: its top bits (`rank >> BUCKET_SHIFT`).
const BUCKET_SHIFT: u32 = 6;
/// Buckets of a histogram.
const BUCKETS: usize = 1 << (16 - BUCKET_SHIFT);

/// The rank of a record a walk went over (module doc).
pub(crate) fn rank(r: &Walked) -> u16 {
    let span = (r.head - r.tail).max(1);
    let pos = ((r.at - r.tail).min(span) as u128 * 32767 / span as u128) as u16;
    (r.visited as u16) << 15 | pos
}

#[inline]
fn bucket(rank: u16) -> usize {
    (rank >> BUCKET_SHIFT) as usize
}

/// The candidates' (records, bytes of log) by rank bucket.
pub(crate) struct Histogram(Vec<(u64, u64)>);

impl Histogram {
    pub(crate) fn new() -> Histogram {
        Histogram(vec![(0, 0); BUCKETS])
    }

    /// Count a candidate of `rank` with a key and a value of these lengths.
    pub(crate) fn add(&mut self, rank: u16, key_len: usize, value_len: usize) {
        let b = &mut self.0[bucket(rank)];
        b.0 += 1;
        b.1 += rec_size(key_len as u64, value_len as u64);
    }

    /// The cut for a cache of geometry `geo` (what it can take in: [`room`]).
    pub(crate) fn cut(&self, geo: &Geometry) -> Cut {
        let (max_records, max_bytes) = room(geo);
        let (mut n, mut b) = (0u64, 0u64);
        for i in (0..self.0.len()).rev() {
            let (hn, hb) = self.0[i];
            if n + hn > max_records || b + hb > max_bytes {
                return Cut { at: i, records: max_records - n, bytes: max_bytes - b };
            }
            (n, b) = (n + hn, b + hb);
        }
        Cut { at: 0, records: u64::MAX, bytes: u64::MAX }
    }
}

/// What a cache of geometry `geo` can take in: (records, log bytes). Every
/// shard's log less its reserve and the room a wrap may skip (one record of
/// MAX_ITEM_SIZE), and 7/8 of the index; a little less (31/32), for shards
/// the hash gives more than their share.
fn room(geo: &Geometry) -> (u64, u64) {
    let per_shard = geo.data_size.saturating_sub(geo.reserve + rec_size(geo.max_item_size, 0));
    (geo.nshards * geo.max_items() / 32 * 31, geo.nshards * per_shard / 32 * 31)
}

/// The admission rule of one pass over the candidates: buckets above `at`
/// whole, bucket `at` up to (records, bytes) of room, buckets below none.
pub(crate) struct Cut {
    at: usize,
    records: u64,
    bytes: u64,
}

impl Cut {
    /// Whether the candidate of `rank` (key and value of these lengths) is
    /// kept; one kept from the cut bucket uses up its room.
    pub(crate) fn admit(&mut self, rank: u16, key_len: usize, value_len: usize) -> bool {
        let b = bucket(rank);
        let rs = rec_size(key_len as u64, value_len as u64);
        if b > self.at {
            return true;
        }
        if b == self.at && self.records > 0 && self.bytes >= rs {
            (self.records, self.bytes) = (self.records - 1, self.bytes - rs);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::layout::Config;

    #[test]
    fn the_cut_admits_the_highest_ranks_that_fit() {
        let geo = Geometry::compute(&Config { size: 1 << 20, max_item_size: 1024, shards: 1 }).unwrap();
        let (records, bytes) = room(&geo);
        // Three ranks of 100-byte records: the top two buckets fit whole,
        // the third only in part.
        let per = rec_size(10, 90);
        let (hot, warm, cold) = (u16::MAX, 1 << 15, 0);
        let n_hot = bytes / per / 3;
        let n_warm = bytes / per / 3;
        let mut h = Histogram::new();
        for (rank, n) in [(hot, n_hot), (warm, n_warm), (cold, n_hot * 2)] {
            for _ in 0..n {
                h.add(rank, 10, 90);
            }
        }
        assert!(n_hot + n_warm < records);
        let mut cut = h.cut(&geo);
        assert!((0..n_hot).all(|_| cut.admit(hot, 10, 90)));
        assert!((0..n_warm).all(|_| cut.admit(warm, 10, 90)));
        let cold_in = (0..n_hot * 2).filter(|_| cut.admit(cold, 10, 90)).count() as u64;
        assert!(cold_in > 0 && cold_in < n_hot * 2, "{cold_in}");
        assert!((n_hot + n_warm + cold_in) * per <= bytes);
        // Room used up: nothing more of the cut bucket, nothing below it.
        assert!(!cut.admit(cold, 10, 90));
        // Everything fits: every bucket whole.
        let mut all = Histogram::new().cut(&geo);
        assert!(all.admit(0, 10, 90) && all.admit(u16::MAX, 10, 90));
    }
}
