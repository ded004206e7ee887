//! Which cgroup hierarchies this host has mounted, read from
//! /proc/self/mountinfo (never guessed from the kernel version).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The controllers kcell manages on cgroup v1, each in its own hierarchy
/// (or co-mounted, e.g. `cpu,cpuacct`).
pub const V1_CONTROLLERS: [&str; 8] = [
    "cpu", "cpuacct", "cpuset", "memory", "pids", "blkio", "devices", "freezer",
];

/// The host's cgroup layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// Only cgroup2 is mounted (at the path).
    Unified(PathBuf),
    /// Only v1 hierarchies: controller name -> mount point.
    Legacy(BTreeMap<String, PathBuf>),
    /// v1 hierarchies hold the controllers and a cgroup2 mount exists beside
    /// them (systemd's hybrid mode). Policy: kcell uses the v1 hierarchies,
    /// because the controllers are bound there and cannot be enabled in v2.
    Hybrid(BTreeMap<String, PathBuf>, PathBuf),
    /// No cgroup filesystem is mounted.
    None,
}

/// The version kcell drives on a layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Version {
    /// cgroup v1.
    V1,
    /// cgroup v2.
    V2,
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        })
    }
}

impl Layout {
    /// Reads the running system's layout.
    pub fn detect() -> Layout {
        let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        Layout::from_mountinfo(&text)
    }

    /// Parses mountinfo text (proc(5)): field 5 is the mount point, after the
    /// " - " separator come the fstype, the source and the super options.
    pub fn from_mountinfo(text: &str) -> Layout {
        let mut v1 = BTreeMap::new();
        let mut v2 = None;
        for line in text.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let mount_point = left.split_whitespace().nth(4).unwrap_or_default();
            let mut rest = right.split_whitespace();
            let fstype = rest.next().unwrap_or_default();
            let super_opts = rest.nth(1).unwrap_or_default();
            match fstype {
                "cgroup2" => v2 = v2.or(Some(PathBuf::from(mount_point))),
                "cgroup" => {
                    for opt in super_opts.split(',') {
                        if V1_CONTROLLERS.contains(&opt) {
                            v1.entry(opt.to_string())
                                .or_insert_with(|| PathBuf::from(mount_point));
                        }
                    }
                }
                _ => {}
            }
        }
        match (v1.is_empty(), v2) {
            (true, Some(p)) => Layout::Unified(p),
            (false, Some(p)) => Layout::Hybrid(v1, p),
            (false, None) => Layout::Legacy(v1),
            (true, None) => Layout::None,
        }
    }

    /// The version kcell uses on this layout (hybrid: v1, see [`Layout::Hybrid`]).
    pub fn version(&self) -> Option<Version> {
        match self {
            Layout::Unified(_) => Some(Version::V2),
            Layout::Legacy(_) | Layout::Hybrid(..) => Some(Version::V1),
            Layout::None => None,
        }
    }

    /// v1 controller -> mount point (empty on unified hosts).
    pub fn v1_mounts(&self) -> BTreeMap<String, PathBuf> {
        match self {
            Layout::Legacy(m) | Layout::Hybrid(m, _) => m.clone(),
            _ => BTreeMap::new(),
        }
    }

    /// The cgroup2 mount point on a unified host.
    pub fn v2_root(&self) -> Option<&Path> {
        match self {
            Layout::Unified(p) => Some(p),
            _ => None,
        }
    }

    /// A short name for reports: "v1", "v2", "hybrid (v1 used)", "none".
    pub fn describe(&self) -> &'static str {
        match self {
            Layout::Unified(_) => "v2",
            Layout::Legacy(_) => "v1",
            Layout::Hybrid(..) => "hybrid (v1 used)",
            Layout::None => "none",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
30 23 0:26 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
32 30 0:28 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
33 30 0:29 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
34 30 0:30 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
35 30 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
";

    #[test]
    fn hybrid_uses_v1_and_ignores_named_hierarchies() {
        let layout = Layout::from_mountinfo(HYBRID);
        assert_eq!(layout.version(), Some(Version::V1));
        let m = layout.v1_mounts();
        assert_eq!(m.get("cpu"), Some(&PathBuf::from("/sys/fs/cgroup/cpu")));
        assert_eq!(
            m.get("cpuacct"),
            Some(&PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"))
        );
        assert!(!m.contains_key("name=systemd"));
        assert!(
            matches!(layout, Layout::Hybrid(_, ref p) if p == Path::new("/sys/fs/cgroup/unified"))
        );
    }

    #[test]
    fn unified_only() {
        let layout = Layout::from_mountinfo(
            "25 1 0:22 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n",
        );
        assert_eq!(layout, Layout::Unified("/sys/fs/cgroup".into()));
        assert_eq!(layout.version(), Some(Version::V2));
    }

    #[test]
    fn nothing_mounted() {
        assert_eq!(
            Layout::from_mountinfo("1 0 8:1 / / rw - ext4 /dev/sda rw\n"),
            Layout::None
        );
    }
}
