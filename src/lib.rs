//! shmcache core: a cache in one POSIX shared-memory segment, shared by every
//! process of a host. No Python here; `python.rs` (feature `python`) is the
//! thin PyO3 layer.

pub mod cache;
pub mod error;
pub mod eviction;
/// Fuzzing harnesses (fuzz/ targets and quick runs in `cargo test`); not API.
#[doc(hidden)]
pub mod fuzz_model;
pub mod handle;
pub mod index;
pub mod layout;
pub mod lock;
pub mod log;
pub mod segment;
pub mod shard;
pub mod stats;
pub mod time;

#[cfg(feature = "python")]
mod python;

pub use cache::{ShmCache, Wait};
pub use error::{Error, Result};
pub use layout::Config;
pub use shard::{SetMode, Ttl, ENC_BYTES, ENC_INT, ENC_PICKLE, ENC_STR};
pub use stats::{Counter, Stats};
#[cfg(test)]
mod core_tests;
