//! A named POSIX shared-memory segment with no owner.
//!
//! Built on `rustix` (shm_open, fstat, flock, fallocate, mmap) rather than the
//! `shared_memory` crate, whose creator unlinks the segment when it is dropped
//! (a recycled Gunicorn worker would delete the cache under the others), which
//! only `ftruncate`s (SIGBUS when /dev/shm fills) and which is unmaintained.
//!
//! Protocol (race-free when many processes start at once):
//! 1. `shm_open(O_CREAT|O_RDWR, 0600)`; refuse it unless it is a regular file
//!    owned by our effective uid with no group/other permission bits.
//! 2. `flock(LOCK_SH)`: if the header says READY, validate it and stay attached
//!    holding LOCK_SH (the crash-safe "someone is attached" marker).
//!    A READY segment of another format is an error while any process is
//!    attached to it, and re-created when nobody is. One of another
//!    geometry is attached to as it is: the requested geometry is only a
//!    request, which `migrate.rs` carries out.
//! 3. Otherwise try `LOCK_EX|LOCK_NB`; the winner checks free space,
//!    `fallocate`s the whole size, initialises, publishes READY, then
//!    downgrades to LOCK_SH. Losers poll. A creator that dies releases its
//!    flock, and the next process re-initialises.
//!
//! Nothing here ever unlinks the segment except [`destroy`].

use crate::error::{Error, Result};
use crate::mem::layout::{SegHeader, HEADER_SIZE, LAYOUT_VERSION, STATE_READY};
use rustix::fd::OwnedFd;
use rustix::fs::{FlockOperation, Mode};
use std::ptr::NonNull;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

pub const SHM_DIR: &str = "/dev/shm";

/// The shm name (`/shmcache-...`) for a LOCATION, unique per user and layout.
pub fn segment_name(location: &str) -> Result<String> {
    if location.is_empty() || location.len() > 200 || location.contains('\0') {
        return Err(Error::Config {
            option: "LOCATION",
            message: format!("{location:?}; give a non-empty name of at most 200 bytes (UTF-8), without NUL"),
        });
    }
    // Only [A-Za-z0-9_-] survive into the readable part: no '/', no '..'.
    let slug: String = location
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' })
        .take(48)
        .collect();
    let h = xxhash_rust::xxh3::xxh3_64(location.as_bytes());
    let uid = rustix::process::geteuid().as_raw();
    Ok(format!("/shmcache-{uid}-{slug}-{h:016x}-v{LAYOUT_VERSION}"))
}

/// Remove this user's shmcache segments of other layout versions that no
/// process is attached to (nobody holds their flock). Run when a segment is
/// created, so an upgrade leaves no stale segments behind once the old
/// version's processes are gone. Returns the names removed.
pub fn remove_stale_layouts() -> Vec<String> {
    let uid = rustix::process::geteuid().as_raw();
    let prefix = format!("shmcache-{uid}-");
    let current = format!("-v{LAYOUT_VERSION}");
    let mut removed = Vec::new();
    let Ok(dir) = std::fs::read_dir(SHM_DIR) else { return removed };
    for entry in dir.flatten() {
        let file = entry.file_name();
        let Some(file) = file.to_str() else { continue };
        // `.m` names are migrations' successors (`migrate.rs` cleans them).
        if !file.starts_with(&prefix) || file.ends_with(&current) || !file.contains("-v") || file.contains(".m") {
            continue;
        }
        let name = format!("/{file}");
        let Ok(fd) = rustix::shm::open(name.as_str(), rustix::shm::OFlags::RDWR, Mode::empty()) else { continue };
        if check_trusted(&fd, &name).is_err() {
            continue;
        }
        // LOCK_EX succeeds only if no process holds LOCK_SH, i.e. nobody is attached.
        if rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive).is_ok()
            && rustix::shm::unlink(name.as_str()).is_ok()
        {
            removed.push(name);
        }
    }
    removed
}

/// Remove a segment's name; processes attached keep their mapping until they
/// exit. Returns false if it did not exist.
pub fn destroy(name: &str) -> Result<bool> {
    match rustix::shm::unlink(name) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::NOENT) => Ok(false),
        Err(e) => Err(Error::os("shm_unlink", e)),
    }
}

/// How an existing READY header fits what a process asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// Exactly the requested geometry.
    Same,
    /// A valid segment of another geometry, this many bytes long.
    Other(u64),
}

pub struct Segment {
    fd: OwnedFd,
    base: NonNull<u8>,
    len: usize,
    name: String,
    inode: u64,
    /// This `open` created (initialised) the segment, rather than attaching.
    created: bool,
}

// SAFETY: the mapping is process-wide memory; all concurrent access to its
// contents goes through atomics or the shard locks.
unsafe impl Send for Segment {}
unsafe impl Sync for Segment {}

fn check_trusted(fd: &OwnedFd, name: &str) -> Result<rustix::fs::Stat> {
    let st = rustix::fs::fstat(fd).map_err(|e| Error::os("fstat", e))?;
    let euid = rustix::process::geteuid().as_raw();
    let mode = st.st_mode as u32;
    if mode & libc::S_IFMT != libc::S_IFREG {
        return Err(Error::Untrusted(format!("{SHM_DIR}{name} is not a regular file")));
    }
    if st.st_uid != euid {
        return Err(Error::Untrusted(format!(
            "{SHM_DIR}{name} is owned by uid {} but this process runs as uid {euid}; \
             another user made it, and reading it could run their code",
            st.st_uid
        )));
    }
    if mode & 0o077 != 0 {
        return Err(Error::Untrusted(format!(
            "{SHM_DIR}{name} has mode {:o}, wider than 0600; other users could write it",
            mode & 0o777
        )));
    }
    Ok(st)
}

/// Copy of the header if the file is large enough and its header says READY.
fn read_ready_header(fd: &OwnedFd, size: u64) -> Result<Option<SegHeader>> {
    if size < HEADER_SIZE {
        return Ok(None);
    }
    // SAFETY: mapping HEADER_SIZE bytes of a file at least that large; unmapped below.
    let p = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            HEADER_SIZE as usize,
            rustix::mm::ProtFlags::READ,
            rustix::mm::MapFlags::SHARED,
            fd,
            0,
        )
    }
    .map_err(|e| Error::os("mmap", e))?;
    // SAFETY: p is a readable mapping of HEADER_SIZE >= size_of::<SegHeader>() bytes.
    let h: SegHeader = unsafe { std::ptr::read(p.cast::<SegHeader>()) };
    // SAFETY: p/HEADER_SIZE is exactly the mapping made above.
    unsafe { rustix::mm::munmap(p, HEADER_SIZE as usize) }.ok();
    Ok(if h.state.load(Ordering::Acquire) == STATE_READY { Some(h) } else { None })
}

fn free_space() -> Result<u64> {
    let s = rustix::fs::statvfs(SHM_DIR).map_err(|e| Error::os("statvfs", e))?;
    Ok(s.f_bavail.saturating_mul(s.f_frsize))
}

impl Segment {
    /// Attach to `name`, creating and initialising it with `init` if needed.
    /// `check` validates an existing READY header. `init` receives the
    /// zeroed mapping and must fill everything but `state`.
    pub fn open(
        name: &str,
        len: u64,
        check: impl Fn(&SegHeader) -> Result<Fit>,
        init: impl FnOnce(*mut u8),
    ) -> Result<Segment> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut init = Some(init);
        'reopen: loop {
            let fd = rustix::shm::open(
                name,
                rustix::shm::OFlags::CREATE | rustix::shm::OFlags::RDWR,
                Mode::RUSR | Mode::WUSR,
            )
            .map_err(|e| Error::os("shm_open", e))?;
            check_trusted(&fd, name)?;
            loop {
                rustix::fs::flock(&fd, FlockOperation::LockShared).map_err(|e| Error::os("flock", e))?;
                let st = rustix::fs::fstat(&fd).map_err(|e| Error::os("fstat", e))?;
                let mut replace = false;
                if let Some(h) = read_ready_header(&fd, st.st_size as u64)? {
                    match check(&h) {
                        Ok(Fit::Same) => return Self::map(fd, name, len, st.st_ino as u64),
                        // Another valid geometry: attach to it as it is (the
                        // requested one is a request: `migrate.rs`).
                        Ok(Fit::Other(have)) => return Self::map(fd, name, have, st.st_ino as u64),
                        // Another format: replace it only if nobody is attached.
                        Err(e) => {
                            rustix::fs::flock(&fd, FlockOperation::Unlock).map_err(|e| Error::os("flock", e))?;
                            if rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive).is_err() {
                                return Err(e);
                            }
                            replace = true;
                        }
                    }
                }
                if !replace {
                    rustix::fs::flock(&fd, FlockOperation::Unlock).map_err(|e| Error::os("flock", e))?;
                }
                match if replace { Ok(()) } else { rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) } {
                    Ok(()) => {}
                    Err(rustix::io::Errno::WOULDBLOCK) => {
                        if Instant::now() > deadline {
                            return Err(Error::os(
                                "flock (waiting for another process to create the segment)",
                                rustix::io::Errno::TIMEDOUT,
                            ));
                        }
                        std::thread::sleep(Duration::from_millis(1));
                        continue;
                    }
                    Err(e) => return Err(Error::os("flock", e)),
                }
                // We are the only process touching the file now. Make sure
                // the name still refers to it (a failed creator may have
                // unlinked it meanwhile).
                let st = rustix::fs::fstat(&fd).map_err(|e| Error::os("fstat", e))?;
                match rustix::fs::stat(format!("{SHM_DIR}{name}")) {
                    Ok(s) if s.st_ino == st.st_ino => {}
                    _ => continue 'reopen,
                }
                if let Some(h) = read_ready_header(&fd, st.st_size as u64)? {
                    if check(&h).is_ok() {
                        continue; // someone finished between our two locks
                    }
                    // A segment of another format that nobody is attached
                    // to (we hold LOCK_EX): stale, so re-create it.
                }
                return Self::create(fd, name, len, st.st_size as u64, init.take().expect("init once"));
            }
        }
    }

    /// Attach to an existing, initialised segment without knowing its
    /// geometry (admin tools). Returns the segment and its header's geometry,
    /// checked by `check`.
    pub fn attach_existing(name: &str, check: impl Fn(&SegHeader) -> Result<u64>) -> Result<Segment> {
        let fd = rustix::shm::open(name, rustix::shm::OFlags::RDWR, Mode::empty()).map_err(|e| match e {
            rustix::io::Errno::NOENT => Error::NotCreated(format!("{SHM_DIR}{name}")),
            e => Error::os("shm_open", e),
        })?;
        let st = check_trusted(&fd, name)?;
        rustix::fs::flock(&fd, FlockOperation::LockShared).map_err(|e| Error::os("flock", e))?;
        let h = read_ready_header(&fd, st.st_size as u64)?
            .ok_or_else(|| Error::GeometryMismatch(format!("segment {SHM_DIR}{name} is not initialised")))?;
        let len = check(&h)?;
        Self::map(fd, name, len, st.st_ino as u64)
    }

    fn create(fd: OwnedFd, name: &str, len: u64, old_size: u64, init: impl FnOnce(*mut u8)) -> Result<Segment> {
        // A half-made segment of a dead creator: start from zero.
        if old_size != 0 {
            rustix::fs::ftruncate(&fd, 0).map_err(|e| Error::os("ftruncate", e))?;
        }
        let fail = |fd: &OwnedFd, e: Error| {
            let _ = rustix::fs::ftruncate(fd, 0);
            let _ = rustix::shm::unlink(name);
            e
        };
        let free = free_space()?;
        if free < len {
            return Err(fail(&fd, Error::NoSpace { requested: len, free, path: SHM_DIR.into() }));
        }
        // Reserve every page now: a full tmpfs then fails here with ENOSPC
        // instead of killing a worker with SIGBUS on first touch later.
        if let Err(e) = rustix::fs::fallocate(&fd, rustix::fs::FallocateFlags::empty(), 0, len) {
            let err = if e == rustix::io::Errno::NOSPC {
                Error::NoSpace { requested: len, free, path: SHM_DIR.into() }
            } else {
                Error::os("fallocate", e)
            };
            return Err(fail(&fd, err));
        }
        let st = rustix::fs::fstat(&fd).map_err(|e| Error::os("fstat", e))?;
        let mut seg = Self::map(fd, name, len, st.st_ino as u64)?;
        seg.created = true;
        init(seg.base.as_ptr());
        seg.header().state.store(STATE_READY, Ordering::Release);
        rustix::fs::flock(&seg.fd, FlockOperation::LockShared).map_err(|e| Error::os("flock", e))?;
        remove_stale_layouts();
        Ok(seg)
    }

    fn map(fd: OwnedFd, name: &str, len: u64, inode: u64) -> Result<Segment> {
        let st = rustix::fs::fstat(&fd).map_err(|e| Error::os("fstat", e))?;
        if (st.st_size as u64) < len {
            return Err(Error::GeometryMismatch(format!(
                "shared segment {name} is {} bytes, smaller than its header says ({len})",
                st.st_size
            )));
        }
        // SAFETY: fresh shared mapping of `len` bytes of a file at least that large,
        // never truncated afterwards (nothing in this library shrinks a segment).
        let p = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len as usize,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::SHARED,
                &fd,
                0,
            )
        }
        .map_err(|e| Error::os("mmap", e))?;
        Ok(Segment {
            fd,
            base: NonNull::new(p.cast()).expect("mmap returned null"),
            len: len as usize,
            name: name.to_string(),
            inode,
            created: false,
        })
    }

    pub fn base(&self) -> *mut u8 {
        self.base.as_ptr()
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Whether this process created the segment (a fresh, empty cache).
    pub fn created(&self) -> bool {
        self.created
    }
    pub fn inode(&self) -> u64 {
        self.inode
    }
    pub fn header(&self) -> &SegHeader {
        // SAFETY: the mapping is at least HEADER_SIZE bytes and page-aligned.
        unsafe { &*self.base.as_ptr().cast::<SegHeader>() }
    }
    /// Does the name in /dev/shm still point at the segment we mapped?
    pub fn name_is_current(&self) -> bool {
        matches!(rustix::fs::stat(format!("{SHM_DIR}{}", self.name)), Ok(s) if s.st_ino == self.inode)
    }
}

/// Bytes of the segment file used as OFD byte-range locks (never data: they
/// lie past any segment's end). OFD locks belong to the open file, so a
/// process that dies releases them, and forked children share them.
const LEASE_BYTE: u64 = 1 << 41;
const WANT_BASE: u64 = (1 << 41) + 1;

fn ofd_lock(fd: &OwnedFd, cmd: libc::c_int, ty: libc::c_int, byte: u64) -> std::io::Result<libc::c_int> {
    use std::os::fd::AsRawFd;
    // SAFETY: an all-zero `flock` is a valid value (OFD locks require l_pid 0).
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = ty as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = byte as libc::off_t;
    fl.l_len = 1;
    // SAFETY: fcntl with an F_OFD_* command reads and writes only `fl`, a live local.
    if unsafe { libc::fcntl(fd.as_raw_fd(), cmd, &mut fl) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fl.l_type as libc::c_int)
}

/// The lock byte standing for a geometry key (`Geometry::key`).
fn want_byte(key: u64) -> u64 {
    WANT_BASE + (key & 0xffff_ffff)
}

impl Segment {
    /// Say, for as long as this Segment is open, that this process wants
    /// the geometry `key` (`wanted` sees it).
    pub fn want(&self, key: u64) -> Result<()> {
        ofd_lock(&self.fd, libc::F_OFD_SETLK, libc::F_RDLCK, want_byte(key))
            .map(|_| ())
            .map_err(|e| Error::Os { call: "fcntl(F_OFD_SETLK)", errno: e.raw_os_error().unwrap_or(0) })
    }

    /// Whether any other open of this segment wants the geometry `key`.
    pub fn wanted(&self, key: u64) -> bool {
        // On an error, say wanted: the safe answer (no migration).
        ofd_lock(&self.fd, libc::F_OFD_GETLK, libc::F_WRLCK, want_byte(key)).map_or(true, |t| t != libc::F_UNLCK)
    }

    /// Take the migration lease, without waiting: false if another process
    /// holds it. Held until `release_lease` or until the process dies.
    pub fn try_lease(&self) -> bool {
        ofd_lock(&self.fd, libc::F_OFD_SETLK, libc::F_WRLCK, LEASE_BYTE).is_ok()
    }

    pub fn release_lease(&self) {
        let _ = ofd_lock(&self.fd, libc::F_OFD_SETLK, libc::F_UNLCK, LEASE_BYTE);
    }

    /// Create a new segment under a name nobody uses yet (a migration's
    /// successor), initialised by `init` and READY, held LOCK_SH.
    pub fn create_exclusive(name: &str, len: u64, init: impl FnOnce(*mut u8)) -> Result<Segment> {
        let fd = rustix::shm::open(
            name,
            rustix::shm::OFlags::CREATE | rustix::shm::OFlags::EXCL | rustix::shm::OFlags::RDWR,
            Mode::RUSR | Mode::WUSR,
        )
        .map_err(|e| Error::os("shm_open", e))?;
        check_trusted(&fd, name)?;
        rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive).map_err(|e| Error::os("flock", e))?;
        Self::create(fd, name, len, 0, init)
    }

    /// Put this segment under `name` (an atomic rename in /dev/shm,
    /// replacing what was there) and follow it.
    pub fn rename_to(&mut self, name: &str) -> Result<()> {
        rename(&self.name, name)?;
        self.name = name.to_string();
        Ok(())
    }
}

/// Rename a segment in /dev/shm (atomic, replaces `to`).
pub fn rename(from: &str, to: &str) -> Result<()> {
    std::fs::rename(format!("{SHM_DIR}{from}"), format!("{SHM_DIR}{to}"))
        .map_err(|e| Error::Os { call: "rename (a segment in /dev/shm)", errno: e.raw_os_error().unwrap_or(0) })
}

/// The temporary name of a migration's successor of `name` (`migrate.rs`).
pub fn successor_name(name: &str, nonce: u64) -> String {
    format!("{name}.m{nonce:016x}")
}

/// Remove the successors (`<name>.m<nonce>`) of `name` that no process is
/// attached to: left by a migration that died before its rename.
pub fn remove_dead_successors(name: &str) -> Vec<String> {
    let mut removed = Vec::new();
    let prefix = format!("{}.m", name.trim_start_matches('/'));
    let Ok(dir) = std::fs::read_dir(SHM_DIR) else { return removed };
    for entry in dir.flatten() {
        let file = entry.file_name();
        let Some(file) = file.to_str() else { continue };
        if !file.starts_with(&prefix) {
            continue;
        }
        let name = format!("/{file}");
        let Ok(fd) = rustix::shm::open(name.as_str(), rustix::shm::OFlags::RDWR, Mode::empty()) else { continue };
        if check_trusted(&fd, &name).is_ok()
            && rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive).is_ok()
            && rustix::shm::unlink(name.as_str()).is_ok()
        {
            removed.push(name);
        }
    }
    removed
}

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: base/len is exactly our mapping; no references outlive the Segment.
        unsafe { rustix::mm::munmap(self.base.as_ptr().cast(), self.len) }.ok();
        // Closing the fd releases our LOCK_SH. The name is never unlinked here.
    }
}
