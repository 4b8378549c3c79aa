//! Segment geometry and the segment header.
//!
//! ```text
//! [ SegHeader, 4 KiB ]
//! [ shard 0 ][ shard 1 ] ... [ shard N-1 ]          each `shard_size` bytes
//! shard = [ ShardHeader, 512 B ][ index: index_cap x u64 ][ log: data_size bytes ]
//! ```
//! Everything after the header is addressed by offsets that each process
//! computes from its own validated `Geometry`, never by pointers or offsets
//! stored in the segment.

use crate::error::{Error, Result};
use crate::mem::lock::MUTEX_SLOT;
use std::sync::atomic::{AtomicU32, AtomicU64};

/// Bumped on any change of the layout; part of the segment name, so two
/// library versions with different layouts never open each other's segment.
pub const LAYOUT_VERSION: u32 = 3;
pub const MAGIC: u64 = u64::from_le_bytes(*b"SHMCACHE");
pub const HEADER_SIZE: u64 = 4096;
pub const SHARD_HEADER_SIZE: u64 = 512;
/// Size of an item's header in the log.
pub const REC_HDR: u64 = 32;
pub const MIN_SHARD_DATA: u64 = 16 * 1024;

pub const STATE_READY: u32 = 0x5245_4144; // "READ"

/// ABI facts a process must share with the segment's creator.
pub const ABI: u64 = (std::mem::size_of::<usize>() as u64)
    | ((cfg!(target_endian = "little") as u64) << 8)
    | ((std::mem::size_of::<libc::pthread_mutex_t>() as u64) << 16)
    | ((MUTEX_SLOT as u64) << 32)
    | (REC_HDR << 48);

/// What the user asks for (SIZE, MAX_ITEM_SIZE, SHARDS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    pub size: u64,
    pub max_item_size: u64,
    /// 0 = choose from SIZE and MAX_ITEM_SIZE.
    pub shards: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config { size: 64 << 20, max_item_size: 1 << 20, shards: 0 }
    }
}

/// Where everything is, derived deterministically from a `Config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub total_size: u64,
    pub nshards: u64,
    pub shard_size: u64,
    pub index_cap: u64,
    pub data_size: u64,
    pub max_item_size: u64,
    /// Log bytes kept free by new items so that hot items can be moved.
    pub reserve: u64,
}

#[inline]
pub const fn align8(n: u64) -> u64 {
    (n + 7) & !7
}

/// Bytes an item occupies in the log.
#[inline]
pub const fn rec_size(key_len: u64, val_len: u64) -> u64 {
    align8(REC_HDR + key_len + val_len)
}

fn prev_pow2(n: u64) -> u64 {
    if n == 0 {
        0
    } else {
        1u64 << (63 - n.leading_zeros())
    }
}

impl Geometry {
    pub fn compute(cfg: &Config) -> Result<Geometry> {
        let err = |option, message: String| Err(Error::Config { option, message });
        if cfg.max_item_size == 0 || cfg.max_item_size > (1 << 30) {
            return err("MAX_ITEM_SIZE", format!("{} bytes; must be between 1 byte and 1 GiB", cfg.max_item_size));
        }
        if cfg.size > (1 << 40) {
            return err("SIZE", format!("{} bytes; at most 1 TiB is supported", cfg.size));
        }
        let max_rec = rec_size(cfg.max_item_size, 0);
        let nshards = if cfg.shards == 0 {
            prev_pow2((cfg.size / (3 * max_rec)).min(cfg.size / (64 << 10))).clamp(1, 64)
        } else if cfg.shards > 1024 {
            return err("SHARDS", format!("{}; must be between 1 and 1024", cfg.shards));
        } else {
            cfg.shards as u64
        };
        let shard_size = (cfg.size.saturating_sub(HEADER_SIZE) / nshards) & !4095;
        let avail = shard_size.saturating_sub(SHARD_HEADER_SIZE);
        let index_cap = prev_pow2(avail / 96).max(16);
        let data_size = avail.saturating_sub(index_cap * 8) & !7;
        let reserve = align8((data_size / 64).clamp(4096, 65536));
        let need = 2 * max_rec + reserve;
        if data_size < need.max(MIN_SHARD_DATA) || data_size >= (1 << 35) {
            let min_size = HEADER_SIZE + nshards * (SHARD_HEADER_SIZE + 4096 + 2 * (need.max(MIN_SHARD_DATA)));
            if data_size >= (1 << 35) {
                return err(
                    "SHARDS",
                    format!(
                        "{nshards} shards make shards of {shard_size} bytes; at most 32 GiB per shard, use more shards"
                    ),
                );
            }
            return err(
                "SIZE",
                format!(
                    "{} bytes is too small for MAX_ITEM_SIZE={} with {} shard(s); \
                     use SIZE of at least {} bytes, or lower MAX_ITEM_SIZE or SHARDS",
                    cfg.size, cfg.max_item_size, nshards, min_size
                ),
            );
        }
        Ok(Geometry {
            total_size: HEADER_SIZE + nshards * shard_size,
            nshards,
            shard_size,
            index_cap,
            data_size,
            max_item_size: cfg.max_item_size,
            reserve,
        })
    }

    /// Accept a geometry read from an existing segment only if it is exactly
    /// what `compute` gives for its own SIZE/MAX_ITEM_SIZE/SHARDS, so every
    /// offset derived from it stays inside the segment.
    pub fn check_untrusted(&self) -> Result<()> {
        let cfg = Config {
            size: self.total_size,
            max_item_size: self.max_item_size,
            shards: self.nshards.min(u32::MAX as u64) as u32,
        };
        match Geometry::compute(&cfg) {
            Ok(g) if g == *self => Ok(()),
            _ => Err(Error::GeometryMismatch(format!("segment header has an inconsistent geometry: {self:?}"))),
        }
    }

    /// A number standing for this geometry's SIZE/MAX_ITEM_SIZE/SHARDS (the
    /// lock byte by which processes say they want it: `Segment::want`).
    pub fn key(&self) -> u64 {
        let mut b = [0u8; 24];
        b[..8].copy_from_slice(&self.total_size.to_le_bytes());
        b[8..16].copy_from_slice(&self.max_item_size.to_le_bytes());
        b[16..].copy_from_slice(&self.nshards.to_le_bytes());
        xxhash_rust::xxh3::xxh3_64(&b)
    }

    pub fn shard_offset(&self, i: u64) -> u64 {
        HEADER_SIZE + i * self.shard_size
    }

    /// Most items one shard holds (index load factor 7/8).
    pub fn max_items(&self) -> u64 {
        self.index_cap * 7 / 8
    }
}

/// The first bytes of the segment.
#[repr(C)]
pub struct SegHeader {
    pub magic: u64,
    pub layout_version: u32,
    pub state: AtomicU32,
    pub abi: u64,
    pub total_size: u64,
    pub nshards: u64,
    pub shard_size: u64,
    pub index_cap: u64,
    pub data_size: u64,
    pub max_item_size: u64,
    pub reserve: u64,
    pub hash_seed: u64,
    pub created_ms: u64,
    pub creator_pid: u64,
    /// Non-zero while a migration (`migrate.rs`) holds every shard lock:
    /// writers then wait past LOCK_TIMEOUT instead of failing.
    pub migrating: AtomicU32,
    /// Non-zero once every item was copied into the successor segment:
    /// from then on nothing is read or written here (`ShmCache::successor`).
    pub moved: AtomicU32,
    /// The successor's temporary name suffix (`segment::successor_name`), for a
    /// follower that finds the rename not done (the migrator died).
    pub moved_to: AtomicU64,
    /// Wall-clock ms of the explicit `resize` that made this segment (0 if
    /// none): processes started before it do not migrate away from it.
    pub explicit_ms: AtomicU64,
}

const _: () = assert!(std::mem::size_of::<SegHeader>() as u64 <= HEADER_SIZE);

impl SegHeader {
    pub fn geometry(&self) -> Geometry {
        Geometry {
            total_size: self.total_size,
            nshards: self.nshards,
            shard_size: self.shard_size,
            index_cap: self.index_cap,
            data_size: self.data_size,
            max_item_size: self.max_item_size,
            reserve: self.reserve,
        }
    }

    pub fn write_geometry(&mut self, g: &Geometry) {
        self.magic = MAGIC;
        self.layout_version = LAYOUT_VERSION;
        self.abi = ABI;
        self.total_size = g.total_size;
        self.nshards = g.nshards;
        self.shard_size = g.shard_size;
        self.index_cap = g.index_cap;
        self.data_size = g.data_size;
        self.max_item_size = g.max_item_size;
        self.reserve = g.reserve;
    }

    /// Check that a READY header is of this library's format and ABI.
    pub fn check_format(&self, name: &str) -> Result<()> {
        if self.magic != MAGIC || self.layout_version != LAYOUT_VERSION || self.abi != ABI {
            return Err(Error::GeometryMismatch(format!(
                "shared segment {name} has an unknown format (magic {:#x}, layout {}, abi {:#x}); \
                 remove it with `python -m shmcache destroy` once no process uses it",
                self.magic, self.layout_version, self.abi
            )));
        }
        Ok(())
    }

    /// Check a READY header against what this process expects.
    pub fn check(&self, want: &Geometry, name: &str) -> Result<()> {
        self.check_format(name)?;
        let have = self.geometry();
        if have != *want {
            return Err(Error::GeometryMismatch(format!(
                "shared segment {name} already exists with SIZE={} MAX_ITEM_SIZE={} SHARDS={}, \
                 but this process asks for SIZE={} MAX_ITEM_SIZE={} SHARDS={}; give every process \
                 the same OPTIONS, use another LOCATION, or remove the old segment with \
                 `python -m shmcache destroy` once no process uses it",
                have.total_size, have.max_item_size, have.nshards, want.total_size, want.max_item_size, want.nshards
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_geometry() {
        let g = Geometry::compute(&Config::default()).unwrap();
        assert_eq!(g.nshards, 16);
        assert!(g.total_size <= 64 << 20);
        assert!(g.data_size >= 2 * rec_size(1 << 20, 0) + g.reserve);
        assert_eq!(g.index_cap.count_ones(), 1);
    }

    #[test]
    fn too_small_names_size() {
        let e = Geometry::compute(&Config { size: 1 << 20, ..Config::default() }).unwrap_err();
        match e {
            Error::Config { option, message } => {
                assert_eq!(option, "SIZE");
                assert!(message.contains("MAX_ITEM_SIZE"), "{message}");
            }
            e => panic!("{e:?}"),
        }
        let e = Geometry::compute(&Config { max_item_size: 0, ..Config::default() }).unwrap_err();
        assert!(matches!(e, Error::Config { option: "MAX_ITEM_SIZE", .. }));
    }

    #[test]
    fn small_items_small_cache() {
        let g = Geometry::compute(&Config { size: 1 << 20, max_item_size: 1024, shards: 0 }).unwrap();
        assert!(g.nshards >= 1 && g.total_size <= 1 << 20);
    }
}
