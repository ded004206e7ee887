//! Everything a container could leave on the host, as comparable lists,
//! and the wait for a client's clean-up to bring it back.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::install::Install;

#[derive(Debug, PartialEq, Eq)]
pub struct Census {
    pub mounts: Vec<String>,
    pub cgroups: Vec<String>,
    pub links: Vec<String>,
    pub netns: Vec<String>,
    pub kcell_state: Vec<String>,
}

/// The names in `dir`, sorted; none when it does not exist.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Mount points without their IDs, which change on every remount.
pub fn mount_points(mountinfo: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_to_string(mountinfo)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(String::from))
        .collect();
    v.sort();
    v
}

/// Every directory of every cgroup hierarchy, as hierarchy-relative paths.
pub fn cgroup_dirs() -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                let p = e.path();
                out.push(format!(
                    "{}:{}",
                    base.display(),
                    p.strip_prefix(base).unwrap_or(&p).display()
                ));
                walk(base, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    for m in cgroup_mounts() {
        walk(&m, &m, &mut out);
    }
    out.sort();
    out.dedup();
    out
}

pub fn cgroup_mounts() -> Vec<PathBuf> {
    let mut v = crate::common::oci::cgroup_mounts();
    v.sort();
    v.dedup();
    v
}

impl Census {
    pub fn of_host() -> Census {
        let mut kcell_state = names(Path::new("/run/kcell-oci"));
        kcell_state.extend(names(Path::new("/run/kcell/containers")));
        Census {
            mounts: mount_points(Path::new("/proc/self/mountinfo")),
            cgroups: cgroup_dirs(),
            links: names(Path::new("/sys/class/net")),
            netns: names(Path::new("/run/netns")),
            kcell_state,
        }
    }

    /// The difference from `before`, for a message a person can act on.
    pub fn differences(&self, before: &Census) -> String {
        let diff = |what: &str, a: &[String], b: &[String]| {
            let gone: Vec<&String> = a.iter().filter(|x| !b.contains(x)).collect();
            let new: Vec<&String> = b.iter().filter(|x| !a.contains(x)).collect();
            if gone.is_empty() && new.is_empty() {
                String::new()
            } else {
                format!("{what}: new {new:?}, gone {gone:?}; ")
            }
        };
        [
            diff("mounts", &before.mounts, &self.mounts),
            diff("cgroups", &before.cgroups, &self.cgroups),
            diff("links", &before.links, &self.links),
            diff("netns", &before.netns, &self.netns),
            diff("kcell state", &before.kcell_state, &self.kcell_state),
        ]
        .concat()
    }
}

/// Waits up to `secs` for the census to return to `before`: a client's
/// clean-up (conmon's, the shim's) can end a moment after its command.
pub fn assert_census_returns(install: &Install, before: &Census, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let now = install.census();
        if &now == before {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: {}",
            now.differences(before)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
