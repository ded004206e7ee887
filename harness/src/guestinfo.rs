//! Facts a guest's init leaves for the cases: which cgroup v1 controllers
//! failed to mount (and why), and whether the background modules are
//! loaded. Written by [`crate::vm::guest`], read by [`crate::requires`] and
//! the runner; outside a guest there is nothing to wait for.

use std::sync::{Arc, Condvar, Mutex, OnceLock};

/// Where the init records v1 controllers that failed to mount, for skip reasons.
pub const V1_MISSING: &str = "/run/kcell/cgroup-v1-missing";

/// Set once the background module loading is over.
static LATE_MODULES: OnceLock<Arc<(Mutex<bool>, Condvar)>> = OnceLock::new();

/// Marks the background modules as loading; returns the setter to call when done.
pub fn modules_loading() -> impl FnOnce() {
    let pair = Arc::new((Mutex::new(false), Condvar::new()));
    let _ = LATE_MODULES.set(pair.clone());
    move || {
        let (lock, cv) = &*pair;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cv.notify_all();
    }
}

/// Waits until the background modules are loaded (no-op outside a guest).
pub fn wait_for_modules() {
    if let Some(pair) = LATE_MODULES.get() {
        let (lock, cv) = &**pair;
        let mut done = lock.lock().unwrap_or_else(|e| e.into_inner());
        while !*done {
            done = cv.wait(done).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// The VM guests' test disk (their only disk: the root is a tmpfs).
pub const GUEST_DISK: &str = "/dev/vda";

/// Names a disk set aside for the I/O cases (the guest init sets it; a host
/// never gets its own /dev/vda used by accident).
pub const DISK_ENV: &str = "KCELL_TEST_DISK";

/// Where the in-container helper (the agent as `kcell-probe`) is in the
/// busybox image of every target.
pub const PROBE_IN_IMAGE: &str = "/usr/bin/kcell-probe";
