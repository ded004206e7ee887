//! The OOM watch of a run that may not even start under its limits: the
//! cgroup's OOM counters polled from before the runtime makes it.

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
    std::thread::JoinHandle<Seen>,
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
        let parent = |key: &str| {
            ancestor
                .as_ref()
                .and_then(|a| layout.cgroup(a).counters().get(key).copied())
                .unwrap_or(0)
        };
        let (kills_before, ooms_before) = (parent("oom_kill"), parent("oom"));
        let mut most = Seen::default();
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            let now = cg.counters();
            most.kills = most.kills.max(now.get("oom_kill").copied().unwrap_or(0));
            most.ooms = most.ooms.max(now.get("oom").copied().unwrap_or(0));
            std::thread::sleep(Duration::from_millis(1));
        }
        Seen {
            kills: most
                .kills
                .max(parent("oom_kill").saturating_sub(kills_before)),
            ooms: most.ooms.max(parent("oom").saturating_sub(ooms_before)),
        }
    });
    (stop, handle)
}

/// What the watch saw: OOM kills (v1 memory.oom_control and v2
/// memory.events `oom_kill`), and on v2 the times an allocation met the
/// limit and was about to fail (memory.events `oom`), which the kernel
/// counts also when it fails the allocation without killing anything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seen {
    /// OOM kills.
    pub kills: u64,
    /// Allocations at the limit about to fail (v2; 0 on v1).
    pub ooms: u64,
}

/// Stops the watch; the most it saw.
pub(super) fn stop(st: &mut Started) -> Option<Seen> {
    let (stop, handle) = st.oom_watch.take()?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    handle.join().ok()
}
