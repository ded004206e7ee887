//! The OOM watch of a run that may not even start under its limits: the
//! cgroup's OOM-kill counter polled from before the runtime makes it.

use super::Started;
use crate::observe::cgroupfs::Layout;
use std::path::PathBuf;
use std::time::Duration;

/// Polls the OOM-kill counter of the cgroup at `path` every millisecond
/// (from before the runtime makes it until the run ends) and returns the
/// most it saw: a container killed while it is being made takes its
/// cgroup along before any final reading. On cgroup v2 an ancestor's
/// memory.events counts its subtree's OOM kills too, so the rise over the
/// run of the nearest ancestor that exists before the runtime starts (and
/// so outlives what the runtime removes) counts as well: a runtime that
/// makes the cgroup and its parent, is OOM-killed and removes both between
/// two polls (crun under TCG: "OOM: the memory limit could be too low") is
/// still seen. Trials run one at a time, so no other container's OOM
/// falls in that window.
pub(super) fn watch(
    path: PathBuf,
) -> (
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    std::thread::JoinHandle<u64>,
) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let handle = std::thread::spawn(move || {
        let layout = Layout::read();
        let cg = layout.cgroup(&path);
        // The nearest ancestor with a memory.events of its own now.
        let ancestor = if layout.version() == "v2" {
            path.ancestors()
                .skip(1)
                .find(|a| layout.cgroup(a).counters().contains_key("oom_kill"))
                .map(std::path::Path::to_path_buf)
        } else {
            None
        };
        let parent_kills = || {
            ancestor
                .as_ref()
                .and_then(|a| layout.cgroup(a).counters().get("oom_kill").copied())
                .unwrap_or(0)
        };
        let before = parent_kills();
        let mut most = 0;
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            if let Some(n) = cg.counters().get("oom_kill") {
                most = most.max(*n);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        most.max(parent_kills().saturating_sub(before))
    });
    (stop, handle)
}

/// Stops the watch; the most OOM kills it saw.
pub(super) fn stop(st: &mut Started) -> Option<u64> {
    let (stop, handle) = st.oom_watch.take()?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    handle.join().ok()
}
