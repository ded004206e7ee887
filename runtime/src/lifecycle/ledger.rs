//! Everything a container holds, released in one place: its cgroup (and
//! what still runs in it), the mounts a root without a mount namespace
//! made below it, its kept network namespace, host-side links and
//! bridge lease, its overlay directory, its resolv.conf and exec FIFO, then
//! its poststop hooks and its record. Whichever command ends a container
//! (run, rm, stop, delete, gc) comes here; each step tolerates what is
//! already gone, so this is also the replay after a killed runtime.

use crate::state::{Record, StateDir};
use std::time::{Duration, Instant};

/// SIGKILL to the container's first process and to everything in its
/// cgroup, and a wait (up to 10 s) until the first process is gone.
pub fn kill_and_wait(rec: &Record) {
    if let Some(pid) = rec.pid.filter(|_| rec.is_running()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    if let Some(cg) = rec.cgroup().filter(|c| c.exists()) {
        // A frozen process cannot die.
        let _ = cg.set_frozen(false);
        cg.signal_all(nix::sys::signal::Signal::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while rec.is_running() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Releases what `rec` names and removes it. Errors are reported on
/// stderr and do not stop the other steps: what can go, goes.
pub fn release(state: &StateDir, rec: &Record) {
    let warn = |what: &str, e: &dyn std::fmt::Display| {
        eprintln!("kcell: releasing {} of container {}: {e}", what, rec.id)
    };
    if let Some(cg) = rec.cgroup() {
        if let Err(e) = cg.remove() {
            warn("the cgroup", &e);
        }
    }
    if let Some(h) = &rec.host_mounts {
        if let Err(e) = crate::rootfs::host_ns::release(h) {
            warn("the mounts below its root", &e);
        }
    }
    if let Some(file) = &rec.netns_file {
        let _ = nix::mount::umount2(file, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_file(file);
    }
    if let Err(e) = crate::net::network::delete_links(&rec.host_links) {
        warn("the host links", &e);
    }
    if let Some(lease) = &rec.lease {
        if let Err(e) = state.networks().release(&lease.bridge, &rec.id) {
            warn("the bridge lease", &e);
        }
    }
    if let Some(dir) = &rec.overlay_dir {
        // The overlay mount lived in the container's mount namespace and is
        // gone with it; its upper, work and merged directories stay.
        let _ = std::fs::remove_dir_all(dir);
    }
    for file in [&rec.resolv_conf, &rec.exec_fifo].into_iter().flatten() {
        let _ = std::fs::remove_file(file);
    }
    if !rec.hooks.poststop.is_empty() {
        let mut stopped = rec.clone();
        stopped.pid = None;
        let json = super::state_json(&stopped).to_string();
        for e in super::hooks::run_all("poststop", &rec.hooks.poststop, &json) {
            warn("(poststop)", &e);
        }
    }
    if let Err(e) = state.remove(&rec.id) {
        warn("the record", &e);
    }
}
