//! Stopping a running filter from another thread (added by flowgate).
//!
//! A thread that runs filters installs a flag with [`set`]; once another
//! thread stores `true` in it, every step of every filter on that thread
//! raises [`crate::Exn::interrupted`], which `try` does not catch, so the
//! evaluation unwinds in as many steps as it is deep. The check is one
//! thread-local read and one relaxed atomic load per step.

use alloc::sync::Arc;
use core::cell::RefCell;
use core::sync::atomic::{AtomicBool, Ordering};

std::thread_local! {
    static FLAG: RefCell<Option<Arc<AtomicBool>>> = const { RefCell::new(None) };
}

/// Installs `flag` for filters run on this thread and returns the previous one.
pub fn set(flag: Option<Arc<AtomicBool>>) -> Option<Arc<AtomicBool>> {
    FLAG.with(|f| f.replace(flag))
}

/// Whether this thread's flag says to stop.
#[inline]
pub(crate) fn pending() -> bool {
    FLAG.with(|f| {
        f.borrow()
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Relaxed))
    })
}
