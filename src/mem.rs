//! The memory a cache lives in, below any shard: the named POSIX segment
//! (`segment.rs`), its layout and header (`layout.rs`), the robust
//! process-shared mutex stored in it (`lock.rs`), and a fresh segment's
//! contents (`init.rs`). Nothing here knows what a shard holds.

pub(crate) mod init;
pub(crate) mod layout;
pub(crate) mod lock;
pub(crate) mod segment;
