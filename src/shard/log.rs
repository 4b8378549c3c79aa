//! The log of one shard: a circular byte region where items are
//! appended at the head and reclaimed at the tail (`shard/reclaim.rs`, with
//! the policy of `eviction.rs`).
//!
//! Positions `head`, `tail` and the sweep cursor are *logical* byte counts
//! that only grow; the physical offset is `pos % data_size`. A record never
//! straddles the end of the region: if it does not fit, the rest of the region
//! is skipped (with a wrap marker when at least a header fits there). So free
//! space is always one contiguous run and nothing ever fragments.
//!
//! Record = 32-byte header, key, value, padding to 8 bytes.
//!
//! The write protocol, on which crash recovery (`shard/recover.rs`) relies:
//! * the head never passes a position before the record (or wrap marker)
//!   starting there has its header written: every record start in
//!   [tail, head) holds a header of the current lap;
//! * a record is born `KIND_PENDING` and becomes `KIND_LIVE` by one release
//!   store of its kind byte once its key and value are complete; an in-place
//!   overwrite makes it PENDING first (an in-place incr and a new expiry are
//!   one store each: `write_int_in_place`, `set_expires`);
//! * a move copies a whole live record beyond the head before the head
//!   passes it, then marks the original DEAD (so free space holds no stale
//!   LIVE header either);
//! * a record stops being live by one byte store (`KIND_DEAD`).
//!
//! So whatever instruction a writer was killed at, every LIVE record in
//! [tail, head) is complete.

use crate::error::{Error, Result};
use crate::mem::layout::{rec_size, REC_HDR};
use std::sync::atomic::{
    fence, AtomicU64, AtomicU8,
    Ordering::{Relaxed, Release},
};

pub const KIND_LIVE: u8 = 1;
pub const KIND_DEAD: u8 = 2;
pub const KIND_WRAP: u8 = 3;
/// Being written: not yet (or, mid in-place change, no longer) complete.
pub const KIND_PENDING: u8 = 4;

/// Record flag: never evicted while there is room to move it (a held
/// `cache.lock()`, a get_or_set marker); expiry and deletion still apply.
pub const FLAG_PINNED: u8 = 1;

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct RecHdr {
    pub kind: u8,
    pub enc: u8,
    pub visited: u8,
    /// `FLAG_*` bits.
    pub flags: u8,
    pub rec_len: u32,
    pub key_len: u32,
    pub val_len: u32,
    pub expires: u64,
    pub hash: u64,
}
const _: () = assert!(std::mem::size_of::<RecHdr>() as u64 == REC_HDR);

/// The data region of one shard. All offsets passed in are physical.
#[derive(Clone, Copy)]
pub struct Log {
    data: *mut u8,
    size: u64,
}

impl Log {
    /// # Safety
    /// `data..data+size` must be a mapped, writable, 8-aligned region that
    /// outlives this value, and only be mutated under the shard lock.
    pub unsafe fn new(data: *mut u8, size: u64) -> Log {
        Log { data, size }
    }

    #[inline]
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Physical offset of a logical position.
    #[inline]
    pub fn phys(&self, pos: u64) -> u64 {
        pos % self.size
    }

    /// Read a record header, checking that it lies inside the region.
    #[inline]
    pub fn hdr(&self, off: u64) -> Result<RecHdr> {
        if !off.is_multiple_of(8) || off.checked_add(REC_HDR).is_none_or(|e| e > self.size) {
            return Err(Error::Corrupt("record offset out of bounds"));
        }
        // SAFETY: bounds checked above; RecHdr is plain old data, any bytes are valid.
        Ok(unsafe { std::ptr::read(self.data.add(off as usize).cast::<RecHdr>()) })
    }

    /// Check a header found through the index or at the tail describes a
    /// well-formed live record that fits in the region.
    #[inline]
    pub fn check_live(&self, off: u64, h: &RecHdr) -> Result<()> {
        if h.kind != KIND_LIVE
            || h.rec_len as u64 != rec_size(h.key_len as u64, h.val_len as u64)
            || off + h.rec_len as u64 > self.size
        {
            return Err(Error::Corrupt("malformed record"));
        }
        Ok(())
    }

    pub fn write_hdr(&self, off: u64, h: &RecHdr) {
        debug_assert!(off + REC_HDR <= self.size);
        // SAFETY: callers only write at offsets returned by the allocator (in bounds).
        unsafe { std::ptr::write(self.data.add(off as usize).cast::<RecHdr>(), *h) }
    }

    /// Change a record's kind: one byte store, ordered after every write
    /// before it (the write protocol above).
    pub fn set_kind(&self, off: u64, kind: u8) {
        debug_assert!(off + REC_HDR <= self.size);
        // SAFETY: off was validated by `hdr` or handed out by the allocator (off + REC_HDR <= size); AtomicU8 has no alignment requirement.
        unsafe { &*self.data.add(off as usize).cast::<AtomicU8>() }.store(kind, Release)
    }

    /// A record header announcing `len` bytes being written at `off`
    /// (the allocator's, before the head passes it).
    pub fn write_pending(&self, off: u64, len: u64) {
        let h = RecHdr { kind: KIND_PENDING, rec_len: len as u32, ..Default::default() };
        self.write_hdr(off, &h);
    }

    /// Change a live record's expiry in place: one 8-byte store, so a
    /// writer killed here leaves the old expiry or the new one.
    pub fn set_expires(&self, off: u64, expires: u64) {
        // SAFETY: off validated by `hdr`; the field at +16 is 8-aligned inside the header, and any bits are a valid AtomicU64.
        unsafe { &*self.data.add(off as usize + 16).cast::<AtomicU64>() }.store(expires, Relaxed)
    }

    /// Overwrite the 8-byte integer value at `at` of the live record at
    /// `off` in one store, so a writer killed here leaves the old integer or
    /// the new one, and the record stays LIVE: an aligned atomic store (any
    /// target), or on x86-64 one unaligned `mov` (a store that is never
    /// partly done, even across a page). Elsewhere an unaligned value goes
    /// through PENDING (a kill mid-change then drops the item).
    pub fn write_int_in_place(&self, off: u64, at: u64, v: i64) {
        debug_assert!(at + 8 <= off + self.hdr(off).map_or(0, |h| h.rec_len as u64));
        let p = self.bytes_mut(at, 8);
        if at.is_multiple_of(8) {
            // SAFETY: the 8 value bytes lie inside a record validated by the caller's lookup; 8-aligned, any bits valid.
            unsafe { &*p.cast::<AtomicU64>() }.store(v.to_le() as u64, Relaxed);
        } else if cfg!(target_arch = "x86_64") {
            // SAFETY: as above; write_unaligned needs no alignment.
            unsafe { p.cast::<i64>().write_unaligned(v.to_le()) };
        } else {
            self.begin_in_place(off);
            // SAFETY: as above; write_unaligned needs no alignment.
            unsafe { p.cast::<i64>().write_unaligned(v.to_le()) };
            self.set_kind(off, KIND_LIVE);
        }
    }

    /// Mark a complete record PENDING before changing its value in place,
    /// ordered before those changes (the write protocol above).
    pub fn begin_in_place(&self, off: u64) {
        self.set_kind(off, KIND_PENDING);
        fence(Release);
    }

    /// Set a record's flags (`FLAG_*`): one byte store.
    pub fn set_flags(&self, off: u64, flags: u8) {
        debug_assert!(off + REC_HDR <= self.size);
        // SAFETY: off was validated by `hdr` (off + REC_HDR <= size); byte 3 is the flags byte.
        unsafe { *self.data.add(off as usize + 3) = flags }
    }

    /// The visited byte, set on hits without any list manipulation.
    #[inline]
    pub fn visited(&self, off: u64) -> &AtomicU8 {
        // SAFETY: off validated by `hdr`; AtomicU8 has no alignment requirement.
        unsafe { &*self.data.add(off as usize + 2).cast::<AtomicU8>() }
    }

    /// Key bytes of a record that passed `check_live`.
    #[inline]
    pub fn key(&self, off: u64, h: &RecHdr) -> &[u8] {
        // SAFETY: check_live proved off + rec_len (>= header + key) is in bounds.
        unsafe { std::slice::from_raw_parts(self.data.add((off + REC_HDR) as usize), h.key_len as usize) }
    }

    /// Value bytes of a record that passed `check_live`.
    #[inline]
    pub fn value(&self, off: u64, h: &RecHdr) -> &[u8] {
        let start = off + REC_HDR + h.key_len as u64;
        // SAFETY: check_live proved the whole record is in bounds.
        unsafe { std::slice::from_raw_parts(self.data.add(start as usize), h.val_len as usize) }
    }

    /// Writable bytes at `off..off+len` of space the allocator handed out.
    #[inline]
    pub fn bytes_mut(&self, off: u64, len: u64) -> *mut u8 {
        debug_assert!(off + len <= self.size);
        // SAFETY (of the add): callers pass allocator-returned ranges, in bounds.
        unsafe { self.data.add(off as usize) }
    }

    /// Copy a record within the region (moving a survivor to the head).
    pub fn move_record(&self, from: u64, to: u64, len: u64) {
        debug_assert!(from + len <= self.size && to + len <= self.size);
        // SAFETY: both ranges are in bounds (validated record; allocated space); `copy` allows overlap.
        unsafe { std::ptr::copy(self.data.add(from as usize), self.data.add(to as usize), len as usize) }
    }

    /// Bytes to skip at the end of the region before an `n`-byte record can be
    /// placed at logical position `head`.
    #[inline]
    pub fn skip_for(&self, head: u64, n: u64) -> u64 {
        let phys = self.phys(head);
        if self.size - phys < n {
            self.size - phys
        } else {
            0
        }
    }

    /// Mark `skip` bytes at logical `head` as unusable (wrap).
    pub fn write_wrap(&self, head: u64, skip: u64) {
        if skip >= REC_HDR {
            let h = RecHdr { kind: KIND_WRAP, rec_len: skip as u32, ..Default::default() };
            self.write_hdr(self.phys(head), &h);
        }
    }
}

/// One step of a walk of the log from the tail towards the head.
#[derive(Debug, Clone, Copy)]
pub enum Step {
    /// `len` bytes at the end of the region, at logical position `at`, too
    /// few for a record header: skipped.
    Gap { at: u64, len: u64 },
    /// A record at logical position `at` (physical `phys`): its header and
    /// its length, bounds-checked.
    Rec { at: u64, phys: u64, hdr: RecHdr, len: u64 },
}

impl Step {
    /// Logical position of the step.
    #[inline]
    pub fn at(&self) -> u64 {
        match *self {
            Step::Gap { at, .. } | Step::Rec { at, .. } => at,
        }
    }
}

/// A walk of the log from a logical position up to the head (reclaiming at
/// the tail, the sweep, verification): every record header it yields was
/// read through `Log::hdr` and its length checked against the region and the
/// head. It ends at the head, or after yielding an error.
pub struct LogWalk {
    log: Log,
    cur: u64,
    head: u64,
    failed: bool,
}

impl LogWalk {
    /// Walk from logical `from` (a record boundary, `tail <= from`) to `head`.
    #[inline]
    pub fn new(log: Log, from: u64, head: u64) -> LogWalk {
        LogWalk { log, cur: from, head, failed: false }
    }

    /// The logical position of the next step (after the last one yielded).
    #[inline]
    pub fn pos(&self) -> u64 {
        self.cur
    }

    /// The step at `cur` (< head), with the checks every walk makes of
    /// lengths read from shared memory.
    #[inline]
    fn step_at(&self, cur: u64) -> Result<Step> {
        let size = self.log.size;
        let phys = self.log.phys(cur);
        if size - phys < REC_HDR {
            return Ok(Step::Gap { at: cur, len: size - phys });
        }
        let hdr = self.log.hdr(phys)?;
        let len = hdr.rec_len as u64;
        if len < REC_HDR || !len.is_multiple_of(8) || phys + len > size || len > self.head - cur {
            return Err(Error::Corrupt("bad record length"));
        }
        Ok(Step::Rec { at: cur, phys, hdr, len })
    }
}

impl Iterator for LogWalk {
    type Item = Result<Step>;

    #[inline]
    fn next(&mut self) -> Option<Result<Step>> {
        if self.failed || self.cur >= self.head {
            return None;
        }
        let r = self.step_at(self.cur);
        match &r {
            Ok(Step::Gap { len, .. } | Step::Rec { len, .. }) => self.cur += len,
            Err(_) => self.failed = true,
        }
        Some(r)
    }
}

/// A record that is not live and may be stepped over: a dead one, or the
/// wrap marker that fills the region's end.
#[inline]
pub fn skippable(rh: &RecHdr, phys: u64, len: u64, size: u64) -> bool {
    rh.kind == KIND_DEAD || (rh.kind == KIND_WRAP && phys + len == size)
}
