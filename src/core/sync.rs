//! Locks that survive a poisoning panic.
//!
//! A std lock is poisoned when a thread panics while holding it. For a lock
//! whose data a panic cannot leave half-changed (each update a single
//! assignment, push or pop), refusing it afterwards would only spread one
//! task's panic to the other stages and to the shutdown report. These
//! helpers take the guard either way, written once instead of
//! `unwrap_or_else(|e| e.into_inner())` at every such lock.

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// `lock` for a `Mutex` whose data stays consistent across a panic.
pub trait LockExt<T: ?Sized> {
    /// The guard, whether or not a panic poisoned the lock.
    fn lock_unpoisoned(&self) -> MutexGuard<'_, T>;
}

impl<T: ?Sized> LockExt<T> for Mutex<T> {
    fn lock_unpoisoned(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `read`/`write` for a `RwLock` whose data stays consistent across a panic.
pub trait RwLockExt<T: ?Sized> {
    /// The read guard, whether or not a panic poisoned the lock.
    fn read_unpoisoned(&self) -> RwLockReadGuard<'_, T>;
    /// The write guard, whether or not a panic poisoned the lock.
    fn write_unpoisoned(&self) -> RwLockWriteGuard<'_, T>;
}

impl<T: ?Sized> RwLockExt<T> for RwLock<T> {
    fn read_unpoisoned(&self) -> RwLockReadGuard<'_, T> {
        self.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_unpoisoned(&self) -> RwLockWriteGuard<'_, T> {
        self.write().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Poisons `lock` by panicking on another thread while `hold` holds it.
    fn poison<L: Send + Sync + 'static>(lock: &Arc<L>, hold: fn(&L)) {
        let l = lock.clone();
        let panicked = std::thread::spawn(move || {
            hold(&l);
        })
        .join();
        assert!(panicked.is_err(), "the holder panicked");
    }

    #[test]
    fn a_poisoned_mutex_still_hands_out_its_data() {
        let m = Arc::new(Mutex::new(1));
        poison(&m, |m| {
            let mut g = m.lock().unwrap();
            *g = 2;
            panic!("while holding the lock");
        });
        assert!(m.is_poisoned());
        assert_eq!(*m.lock_unpoisoned(), 2);
        *m.lock_unpoisoned() = 3;
        assert_eq!(*m.lock_unpoisoned(), 3);
    }

    #[test]
    fn a_poisoned_rwlock_still_reads_and_writes() {
        let l = Arc::new(RwLock::new(vec![1]));
        poison(&l, |l| {
            l.write().unwrap().push(2);
            let _held = l.write();
            panic!("while holding the lock");
        });
        assert!(l.is_poisoned());
        assert_eq!(*l.read_unpoisoned(), vec![1, 2]);
        l.write_unpoisoned().push(3);
        assert_eq!(*l.read_unpoisoned(), vec![1, 2, 3]);
    }
}
