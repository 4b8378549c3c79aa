//! Snapshots: the cache's items written to a file and read back (`dump`,
//! `load`), streaming, in bounded memory.
//!
//! File format (version [`VERSION`]; all integers little-endian):
//!
//! ```text
//! header  "SHMCSNAP" · u32 version · u32 header length (32) · u64 created_ms · u64 0
//! chunk*  u32 payload length (> 0) · u32 records · u64 xxh3(payload) · payload
//!         payload = `records` records, each rmp-serde (MessagePack) of
//!         [key: bin, value: bin, enc: u8, expires_ms: u64, rank: u16]
//! end     u32 0 · u32 0 · u64 records in the file · u64 xxh3 of every byte before it
//! ```
//!
//! A chunk holds about [`CHUNK`] bytes (one record more if it is larger), so
//! dumping holds one chunk in memory, and loading one chunk plus a histogram.
//! Expiry is the absolute wall-clock ms of the record (0 = never) and the
//! value's bytes are stored with their encoding byte as the cache holds them
//! (`ENC_INT`, `ENC_BIGINT`, pickles: no re-encoding).
//!
//! `rank` is the item's place in CLOCK's eviction order when it was dumped
//! (`rank.rs`: higher = evicted later). Loading keeps the highest ranks
//! that fit the target cache.
//!
//! Dump walks every shard with `ShardGuard::walk_slice` (the key scan's
//! walker): each lock hold walks at most [`SLICE_STEPS`] records or fills one
//! chunk, copying them out; the chunk is written with no lock held. Records
//! moved between slices may come twice (a later copy is newer, and load
//! keeps the last); an item live throughout the dump comes at least once.
//!
//! Load reads the file twice. The first pass checks the header, every chunk's
//! hash and decoding, the end record and the whole file's hash, and counts
//! the bytes of each rank; nothing is written before it succeeds. The second
//! pass re-checks each chunk's hash and stores, one lock per shard per chunk,
//! the unexpired records whose rank is above the cut that fits the target's
//! capacity (the highest ranks first; at the cut rank, records until the
//! room is used, in file order).

use crate::cache::ShmCache;
use crate::error::{Error, Result};
use crate::rank::{rank, Histogram};
use crate::shard::ops::{Item, SetMode};
use crate::shard::ShardGuard;
use crate::time;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;
use xxhash_rust::xxh3::{xxh3_64, Xxh3};

pub const MAGIC: &[u8; 8] = b"SHMCSNAP";
pub const VERSION: u32 = 1;
const HEADER_LEN: u32 = 32;
/// Target payload bytes of one chunk.
pub const CHUNK: usize = 1 << 20;
/// Largest chunk a reader accepts (one record of the largest MAX_ITEM_SIZE
/// fits); larger is damage. Read with `take`, never allocated up front.
const MAX_CHUNK: u64 = 1 << 31;
/// Records walked per lock hold while dumping.
pub const SLICE_STEPS: usize = 1000;

#[derive(Serialize, Deserialize)]
struct Record<'a> {
    #[serde(with = "serde_bytes", borrow)]
    key: &'a [u8],
    #[serde(with = "serde_bytes", borrow)]
    value: &'a [u8],
    enc: u8,
    expires: u64,
    rank: u16,
}

/// What a dump wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DumpStats {
    pub records: u64,
    /// Bytes of key and value in them.
    pub bytes: u64,
    pub file_bytes: u64,
}

/// What a load did with the file's records.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LoadStats {
    pub records: u64,
    pub loaded: u64,
    /// Bytes of key and value loaded.
    pub bytes: u64,
    /// Expired by the time of the load: not stored.
    pub expired: u64,
    /// Left out: ranked below what fits the target cache.
    pub dropped: u64,
    /// Larger than the target's MAX_ITEM_SIZE: not stored.
    pub too_large: u64,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::io(&e, format!("{what} {}: {e}", path.display()))
}

fn damaged(path: &Path, what: &str) -> Error {
    Error::Snapshot(format!(
        "{} is not a complete shmcache snapshot ({what}); nothing was loaded: write it again with `python -m shmcache dump`",
        path.display()
    ))
}

impl ShmCache {
    /// Write every live item to the file `path` (`snapshot.rs`: streaming,
    /// bounded lock holds, an atomic rename at the end).
    pub fn dump(&self, path: &std::path::Path) -> Result<DumpStats> {
        let r = dump(self, path)?;
        if self.moved() {
            return self.successor()?.dump(path);
        }
        Ok(r)
    }

    /// Store the items of the snapshot `path` (`snapshot.rs`: the whole file
    /// checked before anything is written; the most recent that fit).
    pub fn load(&self, path: &std::path::Path) -> Result<LoadStats> {
        if self.moved() {
            return self.successor()?.load(path);
        }
        // Stores go through `batch`, which forwards a moved shard's keys.
        load(self, path)
    }
}

/// Write every live item of `cache` to `path`: into a temporary file next to
/// it (`path` + `.tmp-<pid>`), synced, then renamed over `path`, so a reader
/// never sees half a file and a failed dump leaves the old file.
fn dump(cache: &ShmCache, path: &Path) -> Result<DumpStats> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = std::path::PathBuf::from(tmp);
    let r = (|| {
        let f = File::create(&tmp).map_err(|e| io("cannot create", &tmp, e))?;
        let mut w = BufWriter::with_capacity(1 << 16, f);
        let stats = write_to(cache, &mut w).map_err(|e| match e {
            Error::Io { errno, message } => {
                Error::Io { errno, message: format!("writing {}: {message}", tmp.display()) }
            }
            e => e,
        })?;
        let f = w.into_inner().map_err(|e| io("writing", &tmp, e.into_error()))?;
        f.sync_all().map_err(|e| io("syncing", &tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| io("renaming into", path, e))?;
        Ok(stats)
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// A writer that hashes everything it writes.
struct Hashing<W> {
    w: W,
    h: Xxh3,
    n: u64,
}

impl<W: Write> Hashing<W> {
    fn put(&mut self, b: &[u8]) -> Result<()> {
        self.h.update(b);
        self.n += b.len() as u64;
        self.w.write_all(b).map_err(|e| Error::io(&e, e.to_string()))
    }
}

/// The dump itself, to any writer (tests, `dump`).
pub fn write_to(cache: &ShmCache, w: impl Write) -> Result<DumpStats> {
    let mut out = Hashing { w, h: Xxh3::new(), n: 0 };
    let mut hdr = Vec::with_capacity(HEADER_LEN as usize);
    hdr.extend_from_slice(MAGIC);
    hdr.extend_from_slice(&VERSION.to_le_bytes());
    hdr.extend_from_slice(&HEADER_LEN.to_le_bytes());
    hdr.extend_from_slice(&time::now_ms().to_le_bytes());
    hdr.extend_from_slice(&0u64.to_le_bytes());
    out.put(&hdr)?;
    let mut stats = DumpStats::default();
    let mut chunk: Vec<u8> = Vec::with_capacity(CHUNK + 4096);
    let mut count: u32 = 0;
    let shards = cache.shards();
    for i in 0..shards.count() {
        let mut at = None;
        loop {
            let now = time::now_ms();
            let (mut n, mut bytes) = (0u32, 0u64);
            let base = chunk.len();
            let s = cache.with_shard_index(i, crate::cache::Wait::Bounded, &mut |g: &mut ShardGuard| {
                // A rerun after a wipe starts this slice's copy again.
                chunk.truncate(base);
                (n, bytes) = (0, 0);
                g.walk_slice(at, SLICE_STEPS, now, |r| {
                    let rec = Record { key: r.key, value: r.value, enc: r.enc, expires: r.expires, rank: rank(r) };
                    rmp_serde::encode::write(&mut chunk, &rec).expect("encoding into a Vec cannot fail");
                    n += 1;
                    bytes += (r.key.len() + r.value.len()) as u64;
                    chunk.len() < CHUNK
                })
            })?;
            count += n;
            stats.records += n as u64;
            stats.bytes += bytes;
            if chunk.len() >= CHUNK {
                flush(&mut out, &mut chunk, &mut count)?;
            }
            if s.at_head {
                break;
            }
            at = Some(s.next);
        }
    }
    flush(&mut out, &mut chunk, &mut count)?;
    let mut end = Vec::with_capacity(16);
    end.extend_from_slice(&0u32.to_le_bytes());
    end.extend_from_slice(&0u32.to_le_bytes());
    end.extend_from_slice(&stats.records.to_le_bytes());
    out.put(&end)?;
    let digest = out.h.digest();
    out.w.write_all(&digest.to_le_bytes()).map_err(|e| Error::io(&e, e.to_string()))?;
    out.w.flush().map_err(|e| Error::io(&e, e.to_string()))?;
    stats.file_bytes = out.n + 8;
    Ok(stats)
}

fn flush<W: Write>(out: &mut Hashing<W>, chunk: &mut Vec<u8>, count: &mut u32) -> Result<()> {
    if chunk.is_empty() {
        return Ok(());
    }
    let mut h = [0u8; 16];
    h[..4].copy_from_slice(&(chunk.len() as u32).to_le_bytes());
    h[4..8].copy_from_slice(&count.to_le_bytes());
    h[8..].copy_from_slice(&xxh3_64(chunk).to_le_bytes());
    out.put(&h)?;
    out.put(chunk)?;
    chunk.clear();
    *count = 0;
    Ok(())
}

/// Reads a snapshot's parts, checking every length and hash.
struct Reader<'p, R> {
    r: R,
    path: &'p Path,
    h: Xxh3,
    chunk: Vec<u8>,
}

enum Part {
    /// A chunk of `n` records, in `Reader::chunk`.
    Chunk(u32),
    /// The end: how many records the file says it has.
    End(u64),
}

impl<'p, R: Read> Reader<'p, R> {
    fn exact(&mut self, buf: &mut [u8], what: &str) -> Result<()> {
        self.r.read_exact(buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => damaged(self.path, &format!("truncated in {what}")),
            _ => io("reading", self.path, e),
        })?;
        self.h.update(buf);
        Ok(())
    }

    fn open(r: R, path: &'p Path) -> Result<Self> {
        let mut me = Reader { r, path, h: Xxh3::new(), chunk: Vec::new() };
        let mut hdr = [0u8; HEADER_LEN as usize];
        me.exact(&mut hdr[..8], "the header")?;
        if &hdr[..8] != MAGIC {
            return Err(Error::Snapshot(format!(
                "{} is not a shmcache snapshot (no SHMCSNAP header); give the FILE a `dump` wrote",
                path.display()
            )));
        }
        me.exact(&mut hdr[8..], "the header")?;
        let version = u32::from_le_bytes(hdr[8..12].try_into().expect("4 bytes"));
        let len = u32::from_le_bytes(hdr[12..16].try_into().expect("4 bytes"));
        if version != VERSION || len != HEADER_LEN {
            return Err(Error::Snapshot(format!(
                "{} is a snapshot of format version {version}; this shmcache reads version {VERSION}: \
                 dump it again with this version (or load it with the version that wrote it)",
                path.display()
            )));
        }
        Ok(me)
    }

    fn next(&mut self) -> Result<Part> {
        let mut h = [0u8; 16];
        self.exact(&mut h, "a chunk header")?;
        let len = u32::from_le_bytes(h[..4].try_into().expect("4 bytes")) as u64;
        let n = u32::from_le_bytes(h[4..8].try_into().expect("4 bytes"));
        if len == 0 {
            if n != 0 {
                return Err(damaged(self.path, "bad end record"));
            }
            let records = u64::from_le_bytes(h[8..].try_into().expect("8 bytes"));
            let want = self.h.digest();
            let mut sum = [0u8; 8];
            self.r.read_exact(&mut sum).map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => damaged(self.path, "truncated at the end"),
                _ => io("reading", self.path, e),
            })?;
            if u64::from_le_bytes(sum) != want {
                return Err(damaged(self.path, "checksum mismatch"));
            }
            let mut extra = [0u8; 1];
            match self.r.read(&mut extra) {
                Ok(0) => return Ok(Part::End(records)),
                Ok(_) => return Err(damaged(self.path, "bytes after the end")),
                Err(e) => return Err(io("reading", self.path, e)),
            }
        }
        if len > MAX_CHUNK || n as u64 > len {
            return Err(damaged(self.path, "bad chunk length"));
        }
        self.chunk.clear();
        let got = (&mut self.r).take(len).read_to_end(&mut self.chunk).map_err(|e| io("reading", self.path, e))?;
        if got as u64 != len {
            return Err(damaged(self.path, "truncated in a chunk"));
        }
        self.h.update(&self.chunk);
        if xxh3_64(&self.chunk) != u64::from_le_bytes(h[8..].try_into().expect("8 bytes")) {
            return Err(damaged(self.path, "checksum mismatch in a chunk"));
        }
        Ok(Part::Chunk(n))
    }
}

/// Decode the `n` records of a chunk, calling `f` on each.
fn records<'c>(chunk: &'c [u8], n: u32, path: &Path, mut f: impl FnMut(Record<'c>)) -> Result<()> {
    let mut de = rmp_serde::Deserializer::from_read_ref(chunk);
    for _ in 0..n {
        let r = Record::deserialize(&mut de).map_err(|_| damaged(path, "a record does not decode"))?;
        f(r);
    }
    Ok(())
}

/// Read all of `path` and check it (the first pass): its histogram of the
/// unexpired records' log bytes by rank, and the record count.
fn check_file(path: &Path, now: u64, max_item: u64) -> Result<(Histogram, u64)> {
    let f = File::open(path).map_err(|e| io("cannot open", path, e))?;
    let mut rd = Reader::open(BufReader::with_capacity(1 << 16, f), path)?;
    let mut hist = Histogram::new();
    let mut seen = 0u64;
    loop {
        match rd.next()? {
            Part::Chunk(n) => {
                records(&rd.chunk, n, path, |r| {
                    let size = (r.key.len() + r.value.len()) as u64;
                    if !time::expired(r.expires, now) && size <= max_item {
                        hist.add(r.rank, r.key.len(), r.value.len());
                    }
                })?;
                seen += n as u64;
            }
            Part::End(records) => {
                if records != seen {
                    return Err(damaged(path, "record count mismatch"));
                }
                return Ok((hist, seen));
            }
        }
    }
}

/// Store the records of `path` into `cache` (module doc: checked whole
/// first; the highest ranks that fit; expired records skipped; existing
/// items with other keys kept).
fn load(cache: &ShmCache, path: &Path) -> Result<LoadStats> {
    let max_item = cache.geometry().max_item_size;
    let (hist, total) = check_file(path, time::now_ms(), max_item)?;
    let mut cut = hist.cut(cache.geometry());

    let f = File::open(path).map_err(|e| io("cannot open", path, e))?;
    let mut rd = Reader::open(BufReader::with_capacity(1 << 16, f), path)?;
    let mut st = LoadStats { records: total, ..LoadStats::default() };
    let changed = || {
        Error::Snapshot(format!(
            "{} changed during the load (a chunk's checksum no longer matches); \
             part of it was loaded: load it again",
            path.display()
        ))
    };
    loop {
        let n = match rd.next() {
            Ok(Part::Chunk(n)) => n,
            Ok(Part::End(_)) => break,
            Err(Error::Snapshot(_)) => return Err(changed()),
            Err(e) => return Err(e),
        };
        let now = time::now_ms();
        let mut items: Vec<Record> = Vec::with_capacity(n as usize);
        records(&rd.chunk, n, path, |r| {
            let size = (r.key.len() + r.value.len()) as u64;
            if time::expired(r.expires, now) {
                st.expired += 1;
            } else if size > max_item {
                st.too_large += 1;
            } else {
                if cut.admit(r.rank, r.key.len(), r.value.len()) {
                    items.push(r);
                } else {
                    st.dropped += 1;
                }
            }
        })
        .map_err(|_| changed())?;
        store(cache, &items, now)?;
        st.loaded += items.len() as u64;
        st.bytes += items.iter().map(|r| (r.key.len() + r.value.len()) as u64).sum::<u64>();
    }
    Ok(st)
}

/// Set `items`, one lock per shard; a shard whose lock timed out is tried
/// again (three times in all) before the load fails.
fn store(cache: &ShmCache, items: &[Record], now: u64) -> Result<()> {
    let max = cache.geometry().max_item_size;
    let keys: Vec<&[u8]> = items.iter().map(|r| r.key).collect();
    let mut plan = cache.plan(&keys);
    for attempt in 0..3 {
        let mut failed = Vec::new();
        let mut err = None;
        cache.batch(
            &plan,
            |g, h, i| {
                let r = &items[i];
                let item = Item { key: r.key, hash: h, enc: r.enc, value: r.value, expires: r.expires };
                g.set(&item, SetMode::Set, now, max).map(|_| ())
            },
            |i, e| match e {
                Error::LockTimeout => failed.push(i),
                e => err = Some(e.clone()),
            },
        );
        if let Some(e) = err {
            return Err(e);
        }
        if failed.is_empty() {
            return Ok(());
        }
        if attempt == 2 {
            return Err(Error::LockTimeout);
        }
        plan.retain(|p| failed.contains(&p.2));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::layout::Config;
    use crate::shard::encoding::{ENC_BIGINT, ENC_BYTES, ENC_INT, ENC_STR};
    use std::time::Duration;

    fn cache(tag: &str, size: u64) -> ShmCache {
        let loc = format!("snap-test-{tag}-{}", std::process::id());
        let c = ShmCache::open(&loc, &Config { size, max_item_size: 64 << 10, shards: 0 }, Duration::from_millis(200))
            .unwrap();
        c.clear().unwrap();
        c
    }

    fn file(tag: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("snap-test-{tag}-{}.snap", std::process::id()))
    }

    #[test]
    fn round_trip_keeps_encodings_and_expiry_and_refuses_damage() {
        let (a, b, p) = (cache("rt-a", 4 << 20), cache("rt-b", 4 << 20), file("rt"));
        let far = time::now_ms() + 3_600_000;
        a.set(b"bytes", ENC_BYTES, b"\x00\x01", 0).unwrap();
        a.set(b"str", ENC_STR, "é".as_bytes(), far).unwrap();
        a.set(b"int", ENC_INT, &7i64.to_le_bytes(), 0).unwrap();
        a.set(b"big", ENC_BIGINT, &[1, 2, 3, 4, 5, 6, 7, 8, 9], 0).unwrap();
        a.set(b"soon", ENC_BYTES, b"x", time::now_ms() + 30).unwrap();
        for i in 0..3000u32 {
            a.set(format!("k{i}").as_bytes(), ENC_BYTES, &[7u8; 300], 0).unwrap();
        }
        let d = a.dump(&p).unwrap();
        assert_eq!(d.records, 3005);
        std::thread::sleep(Duration::from_millis(50));
        let s = b.load(&p).unwrap();
        assert_eq!((s.loaded, s.expired), (3004, 1));
        assert_eq!(b.get(b"str").unwrap().unwrap(), (ENC_STR, "é".as_bytes().to_vec()));
        assert_eq!(b.get(b"big").unwrap().unwrap().0, ENC_BIGINT);
        assert!(b.get(b"soon").unwrap().is_none());
        b.with_shard(b.hash(b"str"), crate::cache::Wait::Bounded, |g| {
            g.get_entry(b"str", b.hash(b"str"), time::now_ms(), |_, _, e| assert_eq!(e, far))
        })
        .unwrap();

        let good = std::fs::read(&p).unwrap();
        let c = cache("rt-c", 4 << 20);
        for (what, bytes) in [
            ("flipped", {
                let mut g = good.clone();
                g[good.len() / 2] ^= 0x40;
                g
            }),
            ("truncated", good[..good.len() - 9].to_vec()),
            ("version", {
                let mut g = good.clone();
                g[8] = 9;
                g
            }),
        ] {
            std::fs::write(&p, &bytes).unwrap();
            let e = c.load(&p).unwrap_err();
            assert!(matches!(e, Error::Snapshot(_)), "{what}: {e}");
            assert_eq!(c.stats().items, 0, "{what}");
        }
        let _ = std::fs::remove_file(&p);
        for x in [a, b, c] {
            crate::mem::segment::destroy(x.name()).unwrap();
        }
    }

    #[test]
    fn smaller_cache_keeps_the_most_recent() {
        let (a, b, p) = (cache("sm-a", 8 << 20), cache("sm-b", 2 << 20), file("sm"));
        for i in 0..20_000u32 {
            a.set(format!("k{i:05}").as_bytes(), ENC_BYTES, &[1u8; 200], 0).unwrap();
        }
        a.dump(&p).unwrap();
        let s = b.load(&p).unwrap();
        assert!(s.dropped > 0 && s.loaded > 0, "{s:?}");
        let has = |i: u32| b.get(format!("k{i:05}").as_bytes()).unwrap().is_some();
        let newest = (19_000..20_000).filter(|&i| has(i)).count();
        let oldest = (0..1000).filter(|&i| has(i)).count();
        assert!(newest > 950 && oldest < 50, "newest {newest} oldest {oldest}");
        b.verify().unwrap();
        let _ = std::fs::remove_file(&p);
        for x in [a, b] {
            crate::mem::segment::destroy(x.name()).unwrap();
        }
    }
}
