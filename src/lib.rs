//! shmcache core: a cache in one POSIX shared-memory segment, shared by every
//! process of a host. No Python here; `python.rs` (feature `python`) is the
//! thin PyO3 layer.
//!
//! The public API is what `examples/` and `fuzz/` use: the re-exports
//! below. The binding (`python.rs`, inside the crate) uses them too, and
//! besides only `handle` (the attachment it holds) and
//! `snapshot::VERSION`, never `shard` or `mem`. The modules are internal, a one-way stack of folders
//! (docs/architecture.md): `mem` ← `shard` ← `cache` ← the features
//! (`rank` ← `snapshot`, `migrate`; `tier`) ← `handle` ← `python`, over
//! the leaves `error` and `time`.

pub(crate) mod cache;
pub(crate) mod error;
/// Fuzzing harnesses (fuzz/ targets and quick runs in `cargo test`); not API,
/// and not built without the `fuzzing` feature (so not in the Python module).
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz_model;
/// A handle that follows a LOCATION's name, and `Attachment`: what the
/// Python module holds.
#[cfg(any(test, feature = "python"))]
pub(crate) mod handle;
pub(crate) mod mem;
pub(crate) mod migrate;
pub(crate) mod rank;
pub(crate) mod shard;
pub(crate) mod snapshot;
pub(crate) mod tier;
pub(crate) mod time;

#[cfg(feature = "python")]
mod python;

pub use cache::keyscan::KeyScan;
pub use cache::{ShmCache, Value, Wait};
pub use error::{Error, Result};
pub use mem::layout::{Config, LAYOUT_VERSION};
pub use mem::segment::{destroy, segment_name};
pub use migrate::MigrateStats;
pub use shard::encoding::{Int, IntBytes, ENC_BIGINT, ENC_BYTES, ENC_INT, ENC_PICKLE, ENC_STR};
pub use shard::ops::{Item, SetMode, Ttl};
pub use shard::stats::{Counter, Stats};
pub use shard::ShardGuard;
pub use snapshot::{DumpStats, LoadStats};
pub use tier::{monotonic_ms, FillToken, LiveRead, LiveReads, Liveness, TierCounter};
pub use time::{now_ms, LazyNow, Time, NEVER};
/// Test hooks (feature `test-hooks`; the Python module's `_set_test_pause_ms`
/// and `_set_clock_offset_ms`): a pause half-way through a set's value copy,
/// and a shift of this process's clock.
#[cfg(feature = "test-hooks")]
pub use {shard::ops::set_test_pause_ms, time::set_offset_ms};
#[cfg(test)]
mod tests;
