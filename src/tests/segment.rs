//! The segment (`mem/segment.rs`): its name, and a segment that does not fit /dev/shm.

use super::unique;
use crate::cache::ShmCache;
use crate::error::Error;
use crate::mem::layout::Config;
use crate::mem::segment;
use std::time::Duration;

#[test]
fn too_big_for_dev_shm_is_a_clear_error() {
    let cfg = Config { size: 1 << 40, max_item_size: 1 << 20, shards: 0 };
    let name = unique();
    match ShmCache::open(&name, &cfg, Duration::from_millis(100)) {
        Err(e @ Error::NoSpace { .. }) => assert!(e.to_string().contains("SIZE"), "{e}"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a 1 TiB segment fit?"),
    }
    let seg = segment::segment_name(&name).unwrap();
    assert!(!std::path::Path::new(&format!("/dev/shm{seg}")).exists(), "failed segment left behind");
}

#[test]
fn names_cannot_escape_dev_shm() {
    let n = segment::segment_name("../../etc/passwd").unwrap();
    assert!(n.starts_with("/shmcache-") && n[1..].find('/').is_none() && !n.contains(".."), "{n}");
    assert!(segment::segment_name("").is_err());
    assert!(segment::segment_name("a\0b").is_err());
    assert_ne!(segment::segment_name("a/b").unwrap(), segment::segment_name("a_b").unwrap());
}
