//! The harness's own reading of cgroupfs: which hierarchies are mounted
//! (from /proc/self/mountinfo), where a cgroup's directories are, and what
//! the kernel counted there. Deliberately none of the runtime's code: an
//! oracle that shares code with what it judges proves little.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// The v1 controllers the cases look at.
const V1: &[&str] = &[
    "cpu", "cpuacct", "cpuset", "memory", "pids", "blkio", "devices", "freezer",
];

/// The cgroup filesystems this system has mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// v1 hierarchies (controller -> mount point). A hybrid host, with an
    /// empty cgroup2 beside them, counts as v1: the controllers are there.
    V1(BTreeMap<String, PathBuf>),
    /// cgroup2 at this mount point.
    V2(PathBuf),
    /// Nothing mounted.
    None,
}

impl Layout {
    /// This system's layout.
    pub fn read() -> Layout {
        Layout::parse(&fs::read_to_string("/proc/self/mountinfo").unwrap_or_default())
    }

    /// Parses mountinfo (proc(5): the mount point is field 5; after " - "
    /// come the type, the source and the super options).
    pub fn parse(mountinfo: &str) -> Layout {
        let mut v1 = BTreeMap::new();
        let mut v2 = None;
        for line in mountinfo.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let point = left.split_whitespace().nth(4).unwrap_or_default();
            let mut f = right.split_whitespace();
            let (fstype, opts) = (f.next().unwrap_or(""), f.nth(1).unwrap_or(""));
            match fstype {
                "cgroup2" => v2 = v2.or(Some(PathBuf::from(point))),
                "cgroup" => {
                    for o in opts.split(',').filter(|o| V1.contains(o)) {
                        v1.entry(o.to_string())
                            .or_insert_with(|| PathBuf::from(point));
                    }
                }
                _ => {}
            }
        }
        match (v1.is_empty(), v2) {
            (false, _) => Layout::V1(v1),
            (true, Some(p)) => Layout::V2(p),
            (true, None) => Layout::None,
        }
    }

    /// "v1", "v2" or "none".
    pub fn version(&self) -> &'static str {
        match self {
            Layout::V1(_) => "v1",
            Layout::V2(_) => "v2",
            Layout::None => "none",
        }
    }

    /// Whether a controller is there (v2: in the root's cgroup.controllers;
    /// cpu usage and the freezer are core files of every v2 cgroup).
    pub fn has(&self, controller: &str) -> bool {
        match self {
            Layout::V1(m) => m.contains_key(controller),
            Layout::V2(root) => {
                let name = if controller == "blkio" {
                    "io"
                } else {
                    controller
                };
                matches!(name, "cpuacct" | "freezer")
                    || fs::read_to_string(root.join("cgroup.controllers"))
                        .unwrap_or_default()
                        .split_whitespace()
                        .any(|c| c == name)
            }
            Layout::None => false,
        }
    }

    /// The cgroup at `path` (as a runtime's cgroupsPath names it).
    pub fn cgroup(&self, path: &Path) -> Cgroup {
        let rel = path.strip_prefix("/").unwrap_or(path);
        Cgroup {
            dirs: match self {
                Layout::V1(m) => m
                    .iter()
                    .map(|(c, mount)| (c.clone(), mount.join(rel)))
                    .collect(),
                Layout::V2(root) => vec![("unified".into(), root.join(rel))],
                Layout::None => Vec::new(),
            },
            v2: matches!(self, Layout::V2(_)),
        }
    }

    /// The cgroup a live process is in, from /proc/PID/cgroup.
    pub fn of_pid(&self, pid: i32) -> Option<Cgroup> {
        let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let dirs = match self {
            Layout::V2(root) => {
                let rel = text.lines().find_map(|l| l.strip_prefix("0::"))?;
                vec![(
                    "unified".to_string(),
                    root.join(rel.trim_start_matches('/')),
                )]
            }
            Layout::V1(m) => text
                .lines()
                .filter_map(|l| {
                    let mut f = l.splitn(3, ':');
                    let (_, ctrls, rel) = (f.next()?, f.next()?, f.next()?);
                    Some(
                        ctrls
                            .split(',')
                            .filter_map(|c| {
                                m.get(c).map(|mount| {
                                    (c.to_string(), mount.join(rel.trim_start_matches('/')))
                                })
                            })
                            .collect::<Vec<_>>(),
                    )
                })
                .flatten()
                .collect(),
            Layout::None => return None,
        };
        Some(Cgroup {
            dirs,
            v2: matches!(self, Layout::V2(_)),
        })
    }
}

/// One cgroup's directories.
#[derive(Debug, Clone)]
pub struct Cgroup {
    /// (controller, directory); v2: one ("unified", dir).
    pub dirs: Vec<(String, PathBuf)>,
    v2: bool,
}

fn number(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn keyed(path: &Path, key: &str) -> Option<u64> {
    fs::read_to_string(path).ok()?.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

impl Cgroup {
    /// The directory of `controller` (v2: the one directory).
    pub fn dir(&self, controller: &str) -> Option<&Path> {
        if self.v2 {
            return self.dirs.first().map(|(_, d)| d.as_path());
        }
        self.dirs
            .iter()
            .find(|(c, _)| c == controller)
            .map(|(_, d)| d.as_path())
    }

    /// Whether any of its directories exists.
    pub fn exists(&self) -> bool {
        self.dirs.iter().any(|(_, d)| d.is_dir())
    }

    /// Whether it is v2's.
    pub fn is_v2(&self) -> bool {
        self.v2
    }

    /// The processes in it (union of the hierarchies).
    pub fn pids(&self) -> Vec<i32> {
        let mut p: Vec<i32> = self
            .dirs
            .iter()
            .filter_map(|(_, d)| fs::read_to_string(d.join("cgroup.procs")).ok())
            .flat_map(|t| {
                t.lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect::<Vec<i32>>()
            })
            .collect();
        p.sort_unstable();
        p.dedup();
        p
    }

    /// CPU time used, in ns (v1 cpuacct.usage, v2 cpu.stat usage_usec).
    pub fn cpu_usage_ns(&self) -> Option<u64> {
        if self.v2 {
            keyed(&self.dir("unified")?.join("cpu.stat"), "usage_usec").map(|u| u * 1000)
        } else {
            number(&self.dir("cpuacct")?.join("cpuacct.usage"))
        }
    }

    /// The CPU weight the kernel shares a contended CPU by: v2 cpu.weight
    /// (1 to 10000), v1 cpu.shares (2 to 262144).
    pub fn cpu_weight(&self) -> Option<u64> {
        if self.v2 {
            number(&self.dir("unified")?.join("cpu.weight"))
        } else {
            number(&self.dir("cpu")?.join("cpu.shares"))
        }
    }

    /// Every counter the kernel keeps here that the cases read, by name.
    pub fn counters(&self) -> BTreeMap<&'static str, u64> {
        let mut c = BTreeMap::new();
        let mut put = |k: &'static str, v: Option<u64>| {
            if let Some(v) = v {
                c.insert(k, v);
            }
        };
        put("cpu_usage_ns", self.cpu_usage_ns());
        if self.v2 {
            let Some(d) = self.dir("unified") else {
                return c;
            };
            put("memory_bytes", number(&d.join("memory.current")));
            put("memory_peak_bytes", number(&d.join("memory.peak")));
            put("swap_bytes", number(&d.join("memory.swap.current")));
            put("memory_limit_hits", keyed(&d.join("memory.events"), "max"));
            put("oom", keyed(&d.join("memory.events"), "oom"));
            put("oom_kill", keyed(&d.join("memory.events"), "oom_kill"));
            put("pids_current", number(&d.join("pids.current")));
            put("pids_max_events", keyed(&d.join("pids.events"), "max"));
            let io = fs::read_to_string(d.join("io.stat")).ok();
            let sum = |key: &str| {
                io.as_ref().map(|t| {
                    t.split_whitespace()
                        .filter_map(|f| f.strip_prefix(key)?.strip_prefix('=')?.parse::<u64>().ok())
                        .sum()
                })
            };
            put("io_read_bytes", sum("rbytes"));
            put("io_write_bytes", sum("wbytes"));
        } else {
            if let Some(m) = self.dir("memory") {
                let usage = number(&m.join("memory.usage_in_bytes"));
                put("memory_bytes", usage);
                put(
                    "memory_peak_bytes",
                    number(&m.join("memory.max_usage_in_bytes")),
                );
                put(
                    "swap_bytes",
                    number(&m.join("memory.memsw.usage_in_bytes"))
                        .zip(usage)
                        .map(|(s, u)| s.saturating_sub(u)),
                );
                put("memory_limit_hits", number(&m.join("memory.failcnt")));
                let oom_kill = keyed(&m.join("memory.oom_control"), "oom_kill");
                put("oom", oom_kill);
                put("oom_kill", oom_kill);
            }
            if let Some(p) = self.dir("pids") {
                put("pids_current", number(&p.join("pids.current")));
                put("pids_max_events", keyed(&p.join("pids.events"), "max"));
            }
            if let Some(b) = self.dir("blkio") {
                let text = fs::read_to_string(b.join("blkio.throttle.io_service_bytes")).ok();
                let sum = |op: &str| {
                    text.as_ref().map(|t| {
                        t.lines()
                            .filter_map(|l| {
                                let f: Vec<&str> = l.split_whitespace().collect();
                                (f.len() == 3 && f[1] == op).then(|| f[2].parse::<u64>().ok())?
                            })
                            .sum()
                    })
                };
                put("io_read_bytes", sum("Read"));
                put("io_write_bytes", sum("Write"));
            }
        }
        c
    }

    /// Freezes or thaws it and waits until the kernel says so (5 s).
    pub fn set_frozen(&self, frozen: bool) -> Result<(), String> {
        let (dir, file, value) = if self.v2 {
            (
                self.dir("unified"),
                "cgroup.freeze",
                if frozen { "1" } else { "0" },
            )
        } else {
            (
                self.dir("freezer"),
                "freezer.state",
                if frozen { "FROZEN" } else { "THAWED" },
            )
        };
        let dir = dir.ok_or("no freezer for this cgroup")?;
        fs::write(dir.join(file), value)
            .map_err(|e| format!("write {value} to {}: {e}", dir.join(file).display()))?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            let done = if self.v2 {
                fs::read_to_string(dir.join("cgroup.events")).is_ok_and(|t| {
                    t.lines()
                        .any(|l| l == format!("frozen {}", u8::from(frozen)))
                })
            } else {
                fs::read_to_string(dir.join("freezer.state")).is_ok_and(|t| t.trim() == value)
            };
            if done {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        Err(format!(
            "{} did not become {value} within 5 s",
            dir.join(file).display()
        ))
    }

    /// Kills what is left in it and removes its directories, then its empty
    /// parents up to and including the one named `stop_at` (the trial's own
    /// tree of cgroups); 5 s at most.
    pub fn remove(&self, stop_at: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let pids = self.pids();
            if pids.is_empty() || std::time::Instant::now() > deadline {
                break;
            }
            let _ = self.set_frozen(false);
            for p in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        for (_, d) in &self.dirs {
            while d.exists() && fs::remove_dir(d).is_err() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            for parent in d.ancestors().skip(1) {
                if parent.file_name().is_none_or(|n| n == stop_at) {
                    let _ = fs::remove_dir(parent);
                    break;
                }
                if fs::remove_dir(parent).is_err() {
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hybrid_counts_as_v1_and_unified_as_v2() {
        let hybrid = "31 30 0:27 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
                      34 30 0:30 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        let l = Layout::parse(hybrid);
        assert_eq!(l.version(), "v1");
        let cg = l.cgroup(Path::new("/a/b"));
        assert_eq!(
            cg.dir("cpuacct"),
            Some(Path::new("/sys/fs/cgroup/cpu,cpuacct/a/b"))
        );
        let v2 = Layout::parse("25 1 0:22 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
        assert_eq!(
            v2.cgroup(Path::new("/x")).dir("memory"),
            Some(Path::new("/sys/fs/cgroup/x"))
        );
    }

    #[test]
    fn counters_read_from_files_as_the_kernel_writes_them() {
        let t = tempfile::tempdir().expect("tempdir");
        std::fs::write(t.path().join("cgroup.controllers"), "cpu memory pids\n").expect("w");
        let cg = Layout::V2(t.path().to_path_buf()).cgroup(Path::new("/c"));
        let d = t.path().join("c");
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::write(d.join("cpu.stat"), "usage_usec 1500\n").expect("w");
        std::fs::write(d.join("memory.events"), "low 0\nmax 9\noom 1\noom_kill 1\n").expect("w");
        let c = cg.counters();
        assert_eq!(c.get("cpu_usage_ns"), Some(&1_500_000));
        assert_eq!(
            (c.get("oom_kill"), c.get("memory_limit_hits")),
            (Some(&1), Some(&9))
        );
        assert!(
            !c.contains_key("memory_peak_bytes"),
            "a file the kernel lacks gives no counter"
        );
    }
}
