//! cgroup limits on v1 and v2 through one resource model ([`resources`]):
//! the container's cgroup is made and limited before the container runs any
//! code of its own, the monitor is placed in it before it forks the first
//! process, and the cgroup is emptied (SIGKILL) and removed when the
//! container ends.

pub mod layout;
pub mod resources;
pub mod stats;

use crate::spec::ContainerSpec;
use crate::sys::{SysContext, SysError};
use layout::{Layout, Version};
use resources::ResourceError;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The directory every kcell cgroup lives under, in each hierarchy.
pub const PARENT: &str = "kcell";

/// Errors of the cgroup layer.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A limit was refused before anything was made.
    #[error(transparent)]
    Resource(#[from] ResourceError),
    /// Limits were asked for by a caller that cannot write cgroups.
    #[error("cgroup limits need root: this runtime runs as uid {0}")]
    NeedsRoot(u32),
    /// Limits were asked for together with --no-cgroup.
    #[error("--no-cgroup leaves the container without a cgroup: limits (--cpus, --memory, ...) need one")]
    LimitsWithoutCgroup,
    /// Limits were asked for and no cgroup filesystem is mounted.
    #[error(
        "cgroup limits asked for, but no cgroup filesystem is mounted (see /proc/self/mountinfo)"
    )]
    NoCgroupFs,
    /// A controller the limits need is not available.
    #[error("the {0} controller is not available on this host's cgroup {1} ({2})")]
    MissingController(String, Version, String),
    /// A file operation on cgroupfs failed.
    #[error(transparent)]
    Sys(#[from] SysError),
    /// Processes stayed in the cgroup after SIGKILL.
    #[error("cgroup {0} still has processes after SIGKILL: {1:?}")]
    NotEmpty(PathBuf, Vec<i32>),
}

/// The cgroup of one container: one directory per v1 hierarchy, or one v2 directory.
#[derive(Debug, Clone)]
pub struct ContainerCgroup {
    /// Which version the directories belong to.
    pub version: Version,
    /// (controllers of the hierarchy, directory).
    pub dirs: Vec<(Vec<String>, PathBuf)>,
}

fn write(path: &Path, value: &str) -> Result<(), SysError> {
    fs::write(path, value).sys("write", format!("'{value}' to {}", path.display()))
}

fn read(path: &Path) -> Result<String, SysError> {
    fs::read_to_string(path).sys("read", path.display())
}

/// The CPUs online now, from /sys/devices/system/cpu/online.
pub fn online_cpus() -> Vec<u32> {
    let text = fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_else(|_| "0".into());
    let mut cpus = Vec::new();
    for part in text.trim().split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) {
            cpus.extend(a..=b);
        }
    }
    cpus
}

impl ContainerCgroup {
    /// Makes and limits the cgroup for `spec`; None when the caller is not
    /// root and asked for no limits (an unprivileged container has no cgroup).
    pub fn create_for(spec: &ContainerSpec) -> Result<Option<Self>, CgroupError> {
        let res = &spec.resources;
        res.validate()?;
        for r in res.read_bps.iter().chain(&res.write_bps) {
            if !Path::new(&format!("/sys/dev/block/{}:{}", r.major, r.minor)).exists() {
                return Err(ResourceError::UnknownDevice(r.major, r.minor).into());
            }
        }
        if !spec.cgroup {
            return if res.is_empty() {
                Ok(None)
            } else {
                Err(CgroupError::LimitsWithoutCgroup)
            };
        }
        let uid = nix::unistd::geteuid();
        if !uid.is_root() {
            return if res.is_empty() {
                Ok(None)
            } else {
                Err(CgroupError::NeedsRoot(uid.as_raw()))
            };
        }
        let layout = Layout::detect();
        let Some(version) = layout.version() else {
            return if res.is_empty() {
                Ok(None)
            } else {
                Err(CgroupError::NoCgroupFs)
            };
        };
        let settings = res.settings(version)?;
        let cg = match version {
            Version::V1 => Self::create_v1(&layout, &spec.id, &res.controllers())?,
            Version::V2 => Self::create_v2(&layout, &spec.id, &res.controllers())?,
        };
        for s in &settings {
            let applied = cg
                .dir_of(s.controller)
                .ok_or_else(|| {
                    CgroupError::MissingController(
                        s.controller.into(),
                        version,
                        layout.describe().into(),
                    )
                })
                .and_then(|dir| write(&dir.join(s.file), &s.value).map_err(CgroupError::from));
            if let Err(e) = applied {
                let _ = cg.remove();
                return Err(e);
            }
        }
        Ok(Some(cg))
    }

    fn create_v1(layout: &Layout, id: &str, needed: &[&str]) -> Result<Self, CgroupError> {
        let mounts = layout.v1_mounts();
        if let Some(missing) = needed.iter().find(|c| !mounts.contains_key(**c)) {
            return Err(CgroupError::MissingController(
                missing.to_string(),
                Version::V1,
                "no v1 hierarchy mounted for it".into(),
            ));
        }
        // Co-mounted controllers (cpu,cpuacct) share one directory.
        let mut dirs: Vec<(Vec<String>, PathBuf)> = Vec::new();
        for (controller, mount) in &mounts {
            match dirs.iter_mut().find(|(_, d)| {
                d.starts_with(mount) && d.parent().and_then(Path::parent) == Some(mount)
            }) {
                Some((names, _)) => names.push(controller.clone()),
                None => dirs.push((vec![controller.clone()], mount.join(PARENT).join(id))),
            }
        }
        let cg = ContainerCgroup {
            version: Version::V1,
            dirs,
        };
        for (names, dir) in &cg.dirs {
            let made = (|| -> Result<(), SysError> {
                let parent = dir.parent().unwrap_or(dir);
                let is_cpuset = names.iter().any(|n| n == "cpuset");
                // The shared parent may be removed by the last container
                // leaving at the same moment: make it again and retry.
                let mut attempts = 0;
                loop {
                    ensure_parent(parent)?;
                    if is_cpuset {
                        // A v1 cpuset starts with no CPUs and no memory nodes; a task
                        // cannot join it (ENOSPC) until both are copied from above.
                        inherit_cpuset(parent)?;
                    }
                    match fs::create_dir(dir) {
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound && attempts < 5 => {
                            attempts += 1
                        }
                        other => break other.sys("mkdir", dir.display())?,
                    }
                }
                if is_cpuset {
                    inherit_cpuset(dir)?;
                }
                Ok(())
            })();
            if let Err(e) = made {
                let _ = cg.remove();
                return Err(e.into());
            }
        }
        Ok(cg)
    }

    fn create_v2(layout: &Layout, id: &str, needed: &[&str]) -> Result<Self, CgroupError> {
        let root = layout
            .v2_root()
            .unwrap_or(Path::new("/sys/fs/cgroup"))
            .to_path_buf();
        let available = read(&root.join("cgroup.controllers"))?;
        let v2_name = |c: &str| {
            if c == "blkio" {
                "io".to_string()
            } else {
                c.to_string()
            }
        };
        for c in needed {
            if !available.split_whitespace().any(|a| a == v2_name(c)) {
                return Err(CgroupError::MissingController(
                    v2_name(c),
                    Version::V2,
                    format!(
                        "{} lists: {}",
                        root.join("cgroup.controllers").display(),
                        available.trim()
                    ),
                ));
            }
        }
        let enable: String = available
            .split_whitespace()
            .filter(|c| ["cpu", "cpuset", "memory", "pids", "io"].contains(c))
            .map(|c| format!("+{c} "))
            .collect();
        let parent = root.join(PARENT);
        let dir = parent.join(id);
        let mut attempts = 0;
        loop {
            ensure_parent(&parent)?;
            if !enable.is_empty() {
                write(&root.join("cgroup.subtree_control"), enable.trim())?;
                write(&parent.join("cgroup.subtree_control"), enable.trim())?;
            }
            match fs::create_dir(&dir) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && attempts < 5 => attempts += 1,
                other => break other.sys("mkdir", dir.display())?,
            }
        }
        Ok(ContainerCgroup {
            version: Version::V2,
            dirs: vec![(vec!["unified".into()], dir)],
        })
    }

    /// The cgroup kcell made for the container `id` (`kcell/<id>` in each
    /// hierarchy), if any of its directories exists.
    pub fn of_container(id: &str) -> Option<Self> {
        let rel = Path::new(PARENT).join(id);
        let layout = Layout::detect();
        let cg = match layout.version()? {
            Version::V2 => ContainerCgroup {
                version: Version::V2,
                dirs: vec![(vec!["unified".into()], layout.v2_root()?.join(&rel))],
            },
            Version::V1 => ContainerCgroup {
                version: Version::V1,
                dirs: layout
                    .v1_mounts()
                    .into_iter()
                    .map(|(c, m)| (vec![c], m.join(&rel)))
                    .collect(),
            },
        };
        cg.dirs.iter().any(|(_, d)| d.is_dir()).then_some(cg)
    }

    /// Finds the cgroup a running process is in (its /proc/PID/cgroup).
    pub fn of_pid(pid: i32) -> Result<Self, CgroupError> {
        let text = read(Path::new(&format!("/proc/{pid}/cgroup")))?;
        let layout = Layout::detect();
        match layout.version() {
            Some(Version::V2) => {
                let rel = text
                    .lines()
                    .find_map(|l| l.strip_prefix("0::"))
                    .unwrap_or("/");
                let root = layout.v2_root().unwrap_or(Path::new("/sys/fs/cgroup"));
                Ok(ContainerCgroup {
                    version: Version::V2,
                    dirs: vec![(
                        vec!["unified".into()],
                        root.join(rel.trim_start_matches('/')),
                    )],
                })
            }
            Some(Version::V1) => {
                let mounts = layout.v1_mounts();
                let mut dirs: Vec<(Vec<String>, PathBuf)> = Vec::new();
                for line in text.lines() {
                    let mut f = line.splitn(3, ':');
                    let (_, ctrls, rel) =
                        (f.next(), f.next().unwrap_or(""), f.next().unwrap_or("/"));
                    let names: Vec<String> = ctrls
                        .split(',')
                        .filter(|c| mounts.contains_key(*c))
                        .map(String::from)
                        .collect();
                    if let Some(first) = names.first() {
                        dirs.push((
                            names.clone(),
                            mounts[first].join(rel.trim_start_matches('/')),
                        ));
                    }
                }
                Ok(ContainerCgroup {
                    version: Version::V1,
                    dirs,
                })
            }
            None => Err(CgroupError::NoCgroupFs),
        }
    }

    /// The directory holding `controller`'s files ("io"/"blkio" accepted on either).
    pub fn dir_of(&self, controller: &str) -> Option<&Path> {
        match self.version {
            Version::V2 => self.dirs.first().map(|(_, d)| d.as_path()),
            Version::V1 => {
                let name = if controller == "io" {
                    "blkio"
                } else {
                    controller
                };
                self.dirs
                    .iter()
                    .find(|(n, _)| n.iter().any(|c| c == name))
                    .map(|(_, d)| d.as_path())
            }
        }
    }

    /// Moves `pid` into the cgroup (every hierarchy on v1).
    pub fn add_process(&self, pid: i32) -> Result<(), SysError> {
        for (_, dir) in &self.dirs {
            write(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// PIDs in the cgroup (union over the hierarchies).
    pub fn pids(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = self
            .dirs
            .iter()
            .filter_map(|(_, d)| fs::read_to_string(d.join("cgroup.procs")).ok())
            .flat_map(|t| {
                t.lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect::<Vec<i32>>()
            })
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Freezes or thaws every task (v1 freezer.state, v2 cgroup.freeze) and
    /// waits until the kernel reports the new state.
    pub fn set_frozen(&self, frozen: bool) -> Result<(), CgroupError> {
        let (file, value) = resources::freeze_value(self.version, frozen);
        let controller = if self.version == Version::V1 {
            "freezer"
        } else {
            "unified"
        };
        let dir = self.dir_of(controller).ok_or_else(|| {
            CgroupError::MissingController("freezer".into(), self.version, "not mounted".into())
        })?;
        write(&dir.join(file), value)?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let done = match self.version {
                Version::V1 => read(&dir.join("freezer.state"))?.trim() == value,
                Version::V2 => read(&dir.join("cgroup.events"))?
                    .lines()
                    .any(|l| l == format!("frozen {}", u8::from(frozen))),
            };
            if done {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Err(CgroupError::Sys(SysError {
            call: "wait for",
            subject: format!("{value} in {}", dir.join(file).display()),
            errno: nix::errno::Errno::ETIMEDOUT,
        }))
    }

    /// Kills what is left in the cgroup and removes its directories.
    pub fn remove(&self) -> Result<(), CgroupError> {
        let deadline = Instant::now() + Duration::from_secs(5);
        if self.version == Version::V2 {
            if let Some(dir) = self.dirs.first().map(|(_, d)| d) {
                let _ = fs::write(dir.join("cgroup.kill"), "1");
            }
        }
        loop {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                return Err(CgroupError::NotEmpty(self.dirs[0].1.clone(), pids));
            }
            // A frozen task cannot die; thaw first (no-op when not frozen).
            if self.dir_of("freezer").is_some() || self.version == Version::V2 {
                let (file, value) = resources::freeze_value(self.version, false);
                if let Some(d) = self.dir_of(if self.version == Version::V1 {
                    "freezer"
                } else {
                    "unified"
                }) {
                    let _ = fs::write(d.join(file), value);
                }
            }
            for pid in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let mut first_err = None;
        for (_, dir) in &self.dirs {
            loop {
                match fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    // The last task's exit is accounted asynchronously: EBUSY for a moment.
                    Err(e)
                        if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline =>
                    {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(e) => {
                        first_err.get_or_insert(SysError::from_io("rmdir", dir.display(), e));
                        break;
                    }
                }
            }
        }
        if first_err.is_none() {
            // The last container out removes the shared parent; EBUSY or
            // ENOTEMPTY just means another container still lives there.
            for (_, dir) in &self.dirs {
                if let Some(parent) = dir.parent().filter(|p| p.ends_with(PARENT)) {
                    let _ = fs::remove_dir(parent);
                }
            }
        }
        match first_err {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }
}

/// Makes the shared `kcell` parent if it is missing.
fn ensure_parent(parent: &Path) -> Result<(), SysError> {
    match fs::create_dir(parent) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            Err(SysError::from_io("mkdir", parent.display(), e))
        }
        _ => Ok(()),
    }
}

/// Copies cpuset.cpus and cpuset.mems from the parent of `dir` when empty.
fn inherit_cpuset(dir: &Path) -> Result<(), SysError> {
    let Some(parent) = dir.parent() else {
        return Ok(());
    };
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let mine = read(&dir.join(file))?;
        if mine.trim().is_empty() {
            let theirs = read(&parent.join(file))?;
            write(&dir.join(file), theirs.trim())?;
        }
    }
    Ok(())
}
