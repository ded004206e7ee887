//! A case's workspace: its scratch directory and its tree of cgroups
//! (`/kcell-harness/<case>-p<PID>-<id>`), made before its runs and removed
//! on drop, also after a failure; and the sweep of what an owner that died
//! (a killed harness) left.

use std::path::{Path, PathBuf};

/// A case's scratch directory (bundles, pid files, state roots), and its
/// tree of cgroups; both removed on drop, also after a failure.
pub(super) struct Work {
    pub(super) dir: PathBuf,
    pub(super) cgroup_parent: String,
}

impl Work {
    pub(super) fn new(case: &str) -> Result<Self, String> {
        use std::os::unix::fs::PermissionsExt;
        sweep_orphaned_cgroups();
        sweep_orphaned_dirs();
        let id = crate::text::unique_id();
        let dir = std::env::temp_dir().join(format!("kcell-case-p{}-{id}", std::process::id()));
        std::fs::create_dir(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        // Runs as another uid write their pid file here.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
            .map_err(|e| format!("chmod {}: {e}", dir.display()))?;
        // The owner's PID in the name: a harness killed mid-case (SIGKILL,
        // no Drop) leaves its tree, which the next case of any run sweeps.
        let cgroup_parent = format!("/kcell-harness/{case}-p{}-{id}", std::process::id());
        own_v2_parent(&cgroup_parent);
        Ok(Work { dir, cgroup_parent })
    }
}

/// The PID a case's cgroup tree names as its owner (`<case>-p<PID>-<id>`).
fn owner_of(name: &str) -> Option<i32> {
    let (_, rest) = name.rsplit_once("-p")?;
    rest.split_once('-')?.0.parse().ok()
}

/// Removes the case directories in the temporary directory whose owner is
/// gone (`kcell-case-p<PID>-<id>`), unless something is mounted under one:
/// removing files through a mount left there would remove what it shows.
fn sweep_orphaned_dirs() {
    let tmp = std::env::temp_dir();
    let Ok(entries) = std::fs::read_dir(&tmp) else {
        return;
    };
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if !name.starts_with("kcell-case-p") {
            continue;
        }
        let dead = owner_of(&name).is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
        let path = e.path().display().to_string();
        let mounted = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(4))
            .any(|m| m == path || m.starts_with(&format!("{path}/")));
        if dead && !mounted {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Removes the case trees under kcell-harness/ whose owner is gone, with
/// whatever a runtime left in them (processes killed first).
fn sweep_orphaned_cgroups() {
    let mut dead = std::collections::BTreeSet::new();
    for mount in cgroup_mounts() {
        let Ok(entries) = std::fs::read_dir(mount.join("kcell-harness")) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if owner_of(&name).is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
                dead.insert(name);
            }
        }
    }
    for name in dead {
        remove_case_tree(&format!("/kcell-harness/{name}"));
    }
}

/// Removes a case's cgroup tree `parent` (/kcell-harness/<case>-p<PID>-<id>)
/// from every hierarchy, with whatever a runtime left under it (its
/// processes killed first), and kcell-harness/ itself if it is empty then.
fn remove_case_tree(parent: &str) {
    let layout = crate::observe::cgroupfs::Layout::read();
    let cg = layout.cgroup(Path::new(parent));
    for (_, d) in &cg.dirs {
        if let Ok(rd) = std::fs::read_dir(d) {
            for e in rd.flatten().filter(|e| e.path().is_dir()) {
                let rel = Path::new(parent).join(e.file_name());
                layout.cgroup(&rel).remove("kcell-harness");
            }
        }
    }
    cg.remove("kcell-harness");
    // Runtimes also make the cgroupsPath in the hierarchies no controller
    // is bound to (v1's name=systemd, a hybrid host's empty cgroup2): those
    // directories go too, deepest first.
    for mount in cgroup_mounts() {
        let top = mount.join(parent.trim_start_matches('/'));
        remove_tree_bottom_up(&top);
        if let Some(up) = top.parent().filter(|p| *p != mount) {
            let _ = std::fs::remove_dir(up); // kcell-harness/, if it is empty now
        }
    }
}

/// On cgroup v2 the case's parent cgroup is the harness's own, made before
/// any runtime runs, with the memory controller enabled for it: its
/// hierarchical memory.events then outlives a run's cgroup that a runtime
/// removes after an OOM kill during create, and the OOM reading
/// (driver::oci::watch_oom) reads it there. Best effort: without it that
/// reading falls back to polling the run's own cgroup. `Work`'s drop
/// removes it with the rest of the case's tree.
fn own_v2_parent(parent: &str) {
    let crate::observe::cgroupfs::Layout::V2(root) = crate::observe::cgroupfs::Layout::read()
    else {
        return;
    };
    let top = root.join("kcell-harness");
    let _ = std::fs::create_dir(&top);
    let _ = std::fs::write(top.join("cgroup.subtree_control"), "+memory");
    let _ = std::fs::create_dir(root.join(parent.trim_start_matches('/')));
}

impl Drop for Work {
    fn drop(&mut self) {
        remove_case_tree(&self.cgroup_parent);
        crate::driver::reap_orphans();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Every cgroup and cgroup2 mount point, from /proc/self/mountinfo.
fn cgroup_mounts() -> Vec<std::path::PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let fstype = right.split_whitespace().next()?;
            let point = left.split_whitespace().nth(4)?;
            matches!(fstype, "cgroup" | "cgroup2").then(|| std::path::PathBuf::from(point))
        })
        .collect()
}

/// rmdir of `dir` and the directories under it, children first (cgroup
/// directories hold only the kernel's files, which go with rmdir).
fn remove_tree_bottom_up(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        {
            remove_tree_bottom_up(&e.path());
        }
    }
    let _ = std::fs::remove_dir(dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_case_tree_names_its_owner() {
        assert_eq!(owner_of("RT-CLEAN-1-p4242-0a1b2c"), Some(4242));
        assert_eq!(
            owner_of("CG-BLKIO-1-8eb61b672373"),
            None,
            "the old names have none"
        );
    }

    /// A tree whose owner is dead goes at the next case; one whose owner
    /// lives stays. Root: cgroups.
    #[test]
    #[cfg_attr(kcell_unprivileged, ignore = "needs root: cgroups")]
    fn a_dead_owners_tree_is_swept_and_a_live_ones_kept() {
        assert!(nix::unistd::geteuid().is_root(), "cgroups need root");
        let Some(mount) = cgroup_mounts()
            .into_iter()
            .find(|m| m.join("cgroup.procs").exists())
        else {
            panic!("no cgroup mount to test in");
        };
        let top = mount.join("kcell-harness");
        // PID 2^22 + 1 is above pid_max's ceiling: never alive.
        let dead = top.join("T-1-p4194305-dead").join("inner");
        let live = top.join(format!("T-1-p{}-live", std::process::id()));
        std::fs::create_dir_all(&dead).expect("mkdir dead tree");
        std::fs::create_dir_all(&live).expect("mkdir live tree");
        sweep_orphaned_cgroups();
        let dead_gone = !dead.parent().expect("parent").exists();
        let live_kept = live.exists();
        let _ = std::fs::remove_dir(&live);
        let _ = std::fs::remove_dir(&top);
        assert!(dead_gone, "the dead owner's tree is swept");
        assert!(live_kept, "a live owner's tree stays");
    }
}
