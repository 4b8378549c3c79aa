//! Process-shared, robust pthread mutex living inside the shared segment.
//!
//! `raw_sync` is not used: its mutex is not robust (a SIGKILLed holder blocks
//! every other process forever) and its timed wait mis-normalises timespecs.
//! A robust mutex hands the lock to the next locker with `EOWNERDEAD` when the
//! holder dies; the caller repairs the protected data and calls
//! [`MutexRef::mark_consistent`] before unlocking (skipping that would make the
//! mutex `ENOTRECOVERABLE` forever, so the only unlock path here is the guard
//! in `shard.rs`, which always marks consistent first).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Bytes reserved for a mutex in the shared layout (glibc x86_64 uses 40).
pub const MUTEX_SLOT: usize = 64;
const _: () = assert!(std::mem::size_of::<libc::pthread_mutex_t>() <= MUTEX_SLOT);

/// How a lock was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquired {
    /// The previous owner unlocked normally.
    Clean,
    /// The previous owner died holding the lock: repair, then mark consistent.
    OwnerDied,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockError {
    /// Held by another live owner (try_lock only).
    Busy,
    /// The bounded wait ran out.
    Timeout,
    /// The mutex can never be locked again (only reachable through corruption).
    NotRecoverable,
    /// Any other errno from pthreads.
    Os(i32),
}

/// A handle on a mutex stored in shared memory.
#[derive(Clone, Copy)]
pub struct MutexRef {
    ptr: *mut libc::pthread_mutex_t,
}

// SAFETY: a pthread mutex is designed to be used from many threads; the pointer
// targets a MAP_SHARED mapping that outlives every MutexRef (owned by Segment).
unsafe impl Send for MutexRef {}
unsafe impl Sync for MutexRef {}

impl MutexRef {
    /// # Safety
    /// `ptr` must point to `MUTEX_SLOT` bytes, 8-aligned, inside a mapping that
    /// stays mapped for as long as this handle (and its copies) is used.
    pub unsafe fn new(ptr: *mut u8) -> MutexRef {
        MutexRef { ptr: ptr.cast() }
    }

    /// Initialise a fresh robust, process-shared mutex in place.
    ///
    /// # Safety
    /// No other process or thread may be using this mutex (segment creation,
    /// under the exclusive creation lock).
    pub unsafe fn init(&self) -> Result<(), LockError> {
        let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
        let check = |rc: i32| if rc == 0 { Ok(()) } else { Err(LockError::Os(rc)) };
        check(libc::pthread_mutexattr_init(&mut attr))?;
        let r = (|| {
            check(libc::pthread_mutexattr_setpshared(&mut attr, libc::PTHREAD_PROCESS_SHARED))?;
            check(libc::pthread_mutexattr_setrobust(&mut attr, libc::PTHREAD_MUTEX_ROBUST))?;
            check(libc::pthread_mutex_init(self.ptr, &attr))
        })();
        libc::pthread_mutexattr_destroy(&mut attr);
        r
    }

    fn map(rc: i32) -> Result<Acquired, LockError> {
        match rc {
            0 => Ok(Acquired::Clean),
            libc::EOWNERDEAD => Ok(Acquired::OwnerDied),
            libc::EBUSY => Err(LockError::Busy),
            libc::ETIMEDOUT => Err(LockError::Timeout),
            libc::ENOTRECOVERABLE => Err(LockError::NotRecoverable),
            e => Err(LockError::Os(e)),
        }
    }

    /// Take the lock if nobody holds it.
    pub fn try_lock(&self) -> Result<Acquired, LockError> {
        // SAFETY: ptr points at an initialised robust mutex (constructor contract).
        Self::map(unsafe { libc::pthread_mutex_trylock(self.ptr) })
    }

    /// Wait at most `timeout` for the lock.
    pub fn lock_timeout(&self, timeout: Duration) -> Result<Acquired, LockError> {
        match self.try_lock() {
            Err(LockError::Busy) => {}
            other => return other,
        }
        // pthread_mutex_timedlock takes an absolute CLOCK_REALTIME deadline;
        // build it with a normalised tv_nsec (raw_sync's bug was not doing so).
        let deadline = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().saturating_add(timeout);
        let ts = libc::timespec {
            tv_sec: deadline.as_secs() as libc::time_t,
            tv_nsec: deadline.subsec_nanos() as libc::c_long,
        };
        // SAFETY: ptr is an initialised robust mutex; ts is a valid timespec.
        Self::map(unsafe { libc::pthread_mutex_timedlock(self.ptr, &ts) })
    }

    /// After `OwnerDied` and repair: make the mutex usable again.
    pub fn mark_consistent(&self) {
        // SAFETY: called only by the current owner after EOWNERDEAD.
        unsafe { libc::pthread_mutex_consistent(self.ptr) };
    }

    /// Release a lock held by this thread.
    pub fn unlock(&self) {
        // SAFETY: called only by the owner (guard discipline in shard.rs).
        unsafe { libc::pthread_mutex_unlock(self.ptr) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Anon(*mut u8);
    impl Anon {
        fn new() -> Anon {
            // SAFETY: anonymous shared mapping of one page, checked for failure.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            assert_ne!(p, libc::MAP_FAILED);
            Anon(p.cast())
        }
    }

    #[test]
    fn robust_mutex_recovers_from_killed_owner() {
        let m = Anon::new();
        // SAFETY: the page is mapped for the whole test and 4096-aligned.
        let mu = unsafe { MutexRef::new(m.0) };
        // SAFETY: fresh memory, no other user yet.
        unsafe { mu.init().unwrap() };
        assert_eq!(mu.try_lock(), Ok(Acquired::Clean));
        mu.unlock();
        // SAFETY: fork in a test; the child only locks and sleeps until killed.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let _ = mu.try_lock();
            // SAFETY: byte 100 of the mapped page, a flag the parent polls.
            unsafe { *m.0.add(100) = 1 };
            std::thread::sleep(Duration::from_secs(30));
            // SAFETY: leave the forked child without running the parent's destructors.
            unsafe { libc::_exit(0) };
        }
        // SAFETY: reads the flag byte inside the mapped page.
        while unsafe { std::ptr::read_volatile(m.0.add(100)) } == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(mu.try_lock(), Err(LockError::Busy));
        assert_eq!(mu.lock_timeout(Duration::from_millis(20)), Err(LockError::Timeout));
        // SAFETY: pid is our own child; waitpid reaps it.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        assert_eq!(mu.lock_timeout(Duration::from_secs(1)), Ok(Acquired::OwnerDied));
        mu.mark_consistent();
        mu.unlock();
        assert_eq!(mu.try_lock(), Ok(Acquired::Clean));
        mu.unlock();
    }
}
