//! cgroup limits on v1 and v2 through one resource model ([`resources`]),
//! with the version decided once: a [`Backend`] (v1 hierarchies, a v2
//! directory, or none, as crun's "disabled" manager) is built from a
//! [`layout::Layout`], and everything after asks it: the controller and
//! file names of its version, the directories of a cgroup path, the half
//! of the resource table that applies. A backend is built from a layout
//! passed in, so all of this is tested on a temporary directory.
//!
//! A container's cgroup is made and limited before the container runs any
//! code of its own, its first process is placed in it before it may run,
//! and it is emptied (SIGKILL) and removed when the container ends.

pub mod bpf;
pub mod devices;
pub mod layout;
pub mod resources;
pub mod stats;

#[cfg(test)]
mod tests;

use crate::sys::{SysContext, SysError};
use layout::{Layout, Version};
use resources::{ResourceError, Resources};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The directory kcell's own containers' cgroups live under, in each hierarchy.
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
    /// A cgroup path that would leave the hierarchy.
    #[error("cgroup path '{0}' is not allowed: it must not contain '..'")]
    BadPath(PathBuf),
    /// A file operation on cgroupfs failed.
    #[error(transparent)]
    Sys(#[from] SysError),
    /// Processes stayed in the cgroup after SIGKILL.
    #[error("cgroup {0} still has processes after SIGKILL: {1:?}")]
    NotEmpty(PathBuf, Vec<i32>),
}

/// One v1 hierarchy: the controllers mounted together, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// Its controllers (e.g. cpu and cpuacct, co-mounted).
    pub controllers: Vec<String>,
    /// Its mount point.
    pub mount: PathBuf,
}

/// Which cgroup version kcell drives, and where: decided once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// cgroup v1: one directory per hierarchy.
    V1(Vec<Hierarchy>),
    /// cgroup v2: one directory under this mount.
    V2(PathBuf),
    /// No cgroup filesystem: containers run without a cgroup of their own.
    None,
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

/// The path of kcell's own container `id`: `/kcell/<id>`.
pub fn default_path(id: &str) -> PathBuf {
    Path::new("/").join(PARENT).join(id)
}

impl Backend {
    /// The backend of the running system's layout.
    pub fn detect() -> Backend {
        Backend::from_layout(&Layout::detect())
    }

    /// The backend for `layout` (hybrid: v1, where the controllers are).
    pub fn from_layout(layout: &Layout) -> Backend {
        match layout {
            Layout::Unified(root) => Backend::V2(root.clone()),
            Layout::Legacy(m) | Layout::Hybrid(m, _) => {
                let mut hierarchies: Vec<Hierarchy> = Vec::new();
                for (controller, mount) in m {
                    match hierarchies.iter_mut().find(|h| &h.mount == mount) {
                        Some(h) => h.controllers.push(controller.clone()),
                        None => hierarchies.push(Hierarchy {
                            controllers: vec![controller.clone()],
                            mount: mount.clone(),
                        }),
                    }
                }
                Backend::V1(hierarchies)
            }
            Layout::None => Backend::None,
        }
    }

    /// v1 or v2 (None without a cgroup filesystem).
    pub fn version(&self) -> Option<Version> {
        match self {
            Backend::V1(_) => Some(Version::V1),
            Backend::V2(_) => Some(Version::V2),
            Backend::None => None,
        }
    }

    /// A short description for messages: "v1", "v2" or "none".
    pub fn describe(&self) -> String {
        self.version().map_or("none".to_string(), |v| v.to_string())
    }

    /// The name a controller has on this version: v2 calls blkio "io".
    pub fn controller_name<'a>(&self, controller: &'a str) -> &'a str {
        match (self, controller) {
            (Backend::V2(_), "blkio") => "io",
            (Backend::V1(_), "io") => "blkio",
            _ => controller,
        }
    }

    /// The controllers available: v1 the mounted ones, v2 the root's
    /// cgroup.controllers (cpuacct and freezer are core on v2).
    pub fn controllers(&self) -> Vec<String> {
        match self {
            Backend::V1(h) => h.iter().flat_map(|h| h.controllers.clone()).collect(),
            Backend::V2(root) => {
                let mut c: Vec<String> = fs::read_to_string(root.join("cgroup.controllers"))
                    .unwrap_or_default()
                    .split_whitespace()
                    .map(String::from)
                    .collect();
                c.extend(["cpuacct".to_string(), "freezer".to_string()]);
                c
            }
            Backend::None => Vec::new(),
        }
    }

    /// Checks that every controller of `needed` is available here.
    pub fn require(&self, needed: &[&str]) -> Result<(), CgroupError> {
        let Some(version) = self.version() else {
            return Err(CgroupError::NoCgroupFs);
        };
        let have = self.controllers();
        for c in needed {
            let name = self.controller_name(c);
            if !have.iter().any(|h| h == name) {
                let why = match self {
                    Backend::V2(root) => format!(
                        "{} lists: {}",
                        root.join("cgroup.controllers").display(),
                        fs::read_to_string(root.join("cgroup.controllers"))
                            .unwrap_or_default()
                            .trim()
                    ),
                    _ => "no v1 hierarchy is mounted for it".to_string(),
                };
                return Err(CgroupError::MissingController(name.into(), version, why));
            }
        }
        Ok(())
    }

    /// The cgroup at `path` (absolute within each hierarchy, e.g.
    /// /kcell/<id>), whether or not it exists yet.
    pub fn cgroup(&self, path: &Path) -> Result<ContainerCgroup, CgroupError> {
        if path
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(CgroupError::BadPath(path.to_path_buf()));
        }
        let rel = path.strip_prefix("/").unwrap_or(path).to_path_buf();
        let dirs = match self {
            Backend::V1(h) => h
                .iter()
                .map(|h| (h.controllers.clone(), h.mount.join(&rel)))
                .collect(),
            Backend::V2(root) => vec![(vec!["unified".to_string()], root.join(&rel))],
            Backend::None => Vec::new(),
        };
        Ok(ContainerCgroup {
            backend: self.clone(),
            path: Path::new("/").join(rel),
            dirs,
        })
    }

    /// The cgroup path a process is in (its /proc/PID/cgroup; on v1 the
    /// path of its first kcell-managed hierarchy).
    pub fn path_of_pid(&self, pid: &str) -> Result<PathBuf, CgroupError> {
        let text = read(Path::new(&format!("/proc/{pid}/cgroup")))?;
        Ok(self.path_in(&text))
    }

    /// The cgroup path in /proc/PID/cgroup text, for this backend.
    pub fn path_in(&self, text: &str) -> PathBuf {
        let found = match self {
            Backend::V2(_) => text.lines().find_map(|l| l.strip_prefix("0::")),
            Backend::V1(h) => text.lines().find_map(|l| {
                let mut f = l.splitn(3, ':');
                let (_, ctrls, rel) = (f.next()?, f.next()?, f.next()?);
                ctrls
                    .split(',')
                    .any(|c| h.iter().any(|h| h.controllers.iter().any(|x| x == c)))
                    .then_some(rel)
            }),
            Backend::None => None,
        };
        PathBuf::from(found.unwrap_or("/"))
    }

    /// Where an OCI cgroupsPath puts the cgroup: an absolute path as it
    /// is; a relative one under the runtime's own cgroup (as runc does).
    pub fn resolve_path(&self, cgroups_path: &Path) -> Result<PathBuf, CgroupError> {
        if cgroups_path.is_absolute() {
            return Ok(cgroups_path.to_path_buf());
        }
        Ok(self.path_of_pid("self")?.join(cgroups_path))
    }
}

/// The cgroup of one container: one directory per v1 hierarchy, or one v2 directory.
#[derive(Debug, Clone)]
pub struct ContainerCgroup {
    backend: Backend,
    /// Its path within each hierarchy, e.g. /kcell/<id>.
    pub path: PathBuf,
    /// (controllers of the hierarchy, directory).
    pub dirs: Vec<(Vec<String>, PathBuf)>,
}

impl ContainerCgroup {
    /// The backend it belongs to.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// Its version.
    pub fn version(&self) -> Option<Version> {
        self.backend.version()
    }

    /// Whether any of its directories exists.
    pub fn exists(&self) -> bool {
        self.dirs.iter().any(|(_, d)| d.is_dir())
    }

    /// The directory holding `controller`'s files ("io"/"blkio" accepted on
    /// either version; on v2 every controller shares the one directory).
    pub fn dir_of(&self, controller: &str) -> Option<&Path> {
        match &self.backend {
            Backend::V2(_) => self.dirs.first().map(|(_, d)| d.as_path()),
            Backend::V1(_) => {
                let name = self.backend.controller_name(controller);
                self.dirs
                    .iter()
                    .find(|(n, _)| n.iter().any(|c| c == name))
                    .map(|(_, d)| d.as_path())
            }
            Backend::None => None,
        }
    }

    /// Makes the cgroup (and its parents) and applies `res`. On v2 the
    /// controllers `res` needs are enabled in every parent's
    /// cgroup.subtree_control; on v1 a new cpuset gets its parent's CPUs and
    /// memory nodes (it starts with none, and a task cannot join it).
    pub fn create(&self, res: &Resources) -> Result<(), CgroupError> {
        res.validate()?;
        self.backend.require(&res.controllers())?;
        let made = self.make_dirs().and_then(|()| self.apply(res));
        if let Err(e) = made {
            let _ = self.remove();
            return Err(e);
        }
        Ok(())
    }

    /// Makes the cgroup's directories. Another container's removal may
    /// take an empty shared parent (`kcell/`) away while this walk is
    /// between its steps: after the mkdir of the parent, before the mkdir
    /// of the child or before the writes that give a new v1 cpuset its
    /// parent's CPUs (ENOENT, seen with tests starting containers in
    /// parallel: `write '0-1' to /sys/fs/cgroup/cpuset/kcell/cpuset.cpus`).
    /// Every ENOENT of the walk is that race: the walk is made again.
    fn make_dirs(&self) -> Result<(), CgroupError> {
        let mut tries = 0;
        loop {
            match self.make_dirs_once() {
                Err(CgroupError::Sys(e)) if e.errno == nix::errno::Errno::ENOENT && tries < 20 => {
                    tries += 1;
                }
                done => return done,
            }
        }
    }

    fn make_dirs_once(&self) -> Result<(), CgroupError> {
        match &self.backend {
            Backend::None => Ok(()),
            Backend::V2(root) => {
                let enable: String = self
                    .backend
                    .controllers()
                    .iter()
                    .filter(|c| ["cpu", "cpuset", "memory", "pids", "io"].contains(&c.as_str()))
                    .map(|c| format!("+{c} "))
                    .collect();
                let Some((_, dir)) = self.dirs.first() else {
                    return Ok(());
                };
                let mut at = root.clone();
                let rel = dir.strip_prefix(root).unwrap_or(dir);
                for part in rel.components() {
                    if !enable.is_empty() {
                        // Enabling is refused in a cgroup that holds processes
                        // itself (EBUSY, "no internal processes"); the write to the
                        // root always works, and a parent kcell made is empty.
                        let file = at.join("cgroup.subtree_control");
                        let _ = write(&file, enable.trim());
                    }
                    at.push(part);
                    make_dir(&at)?;
                }
                Ok(())
            }
            Backend::V1(_) => {
                for (names, dir) in &self.dirs {
                    let is_cpuset = names.iter().any(|n| n == "cpuset");
                    let mount = self
                        .hierarchy_mount(dir)
                        .unwrap_or_else(|| dir.to_path_buf());
                    let rel = dir.strip_prefix(&mount).unwrap_or(dir).to_path_buf();
                    let mut at = mount;
                    for part in rel.components() {
                        at.push(part);
                        make_dir(&at)?;
                        if is_cpuset {
                            inherit_cpuset(&at)?;
                        }
                    }
                }
                Ok(())
            }
        }
    }

    /// Each directory with the name of its hierarchy's mount point
    /// ("cpu,cpuacct", "memory"), as a container's own cgroupfs names them.
    pub fn named_dirs(&self) -> Vec<(String, &Path)> {
        self.dirs
            .iter()
            .filter_map(|(_, d)| {
                let mount = self.hierarchy_mount(d)?;
                let name = mount.file_name()?.to_string_lossy().to_string();
                Some((name, d.as_path()))
            })
            .collect()
    }

    fn hierarchy_mount(&self, dir: &Path) -> Option<PathBuf> {
        match &self.backend {
            Backend::V1(h) => h
                .iter()
                .find(|h| dir.starts_with(&h.mount))
                .map(|h| h.mount.clone()),
            Backend::V2(root) => Some(root.clone()),
            Backend::None => None,
        }
    }

    /// Writes `res` to the cgroup's files (this version's half of the table),
    /// then its device rules (v1 files, v2 a BPF program).
    pub fn apply(&self, res: &Resources) -> Result<(), CgroupError> {
        let Some(version) = self.version() else {
            return if res.is_empty() {
                Ok(())
            } else {
                Err(CgroupError::NoCgroupFs)
            };
        };
        for s in res.settings(version)? {
            let dir = self.dir_of(s.controller).ok_or_else(|| {
                CgroupError::MissingController(
                    s.controller.into(),
                    version,
                    self.backend.describe(),
                )
            })?;
            write(&dir.join(s.file), &s.value)?;
        }
        if !res.devices.is_empty() {
            match version {
                Version::V1 => {
                    let dir = self.dir_of("devices").ok_or_else(|| {
                        CgroupError::MissingController(
                            "devices".into(),
                            version,
                            "no v1 devices hierarchy".into(),
                        )
                    })?;
                    for (file, line) in devices::v1_writes(&res.devices) {
                        write(&dir.join(file), &line)?;
                    }
                }
                Version::V2 => {
                    if let Some(dir) = self.dir_of("unified") {
                        bpf::attach_device_filter(dir, &devices::effective(&res.devices))?;
                    }
                }
            }
        }
        Ok(())
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

    fn freezer_dir(&self) -> Option<&Path> {
        match self.version()? {
            Version::V1 => self.dir_of("freezer"),
            Version::V2 => self.dir_of("unified"),
        }
    }

    /// Whether the cgroup is frozen now (v1 freezer.state FROZEN, v2
    /// cgroup.events "frozen 1").
    pub fn is_frozen(&self) -> bool {
        let Some(dir) = self.freezer_dir() else {
            return false;
        };
        match self.version() {
            Some(Version::V1) => {
                read(&dir.join("freezer.state")).is_ok_and(|s| s.trim() == "FROZEN")
            }
            Some(Version::V2) => {
                read(&dir.join("cgroup.events")).is_ok_and(|t| t.lines().any(|l| l == "frozen 1"))
            }
            None => false,
        }
    }

    /// Freezes or thaws every task (v1 freezer.state, v2 cgroup.freeze) and
    /// waits until the kernel reports the new state.
    pub fn set_frozen(&self, frozen: bool) -> Result<(), CgroupError> {
        let version = self.version().ok_or(CgroupError::NoCgroupFs)?;
        let (file, value) = resources::freeze_value(version, frozen);
        let dir = self.freezer_dir().ok_or_else(|| {
            CgroupError::MissingController("freezer".into(), version, "not mounted".into())
        })?;
        write(&dir.join(file), value)?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.is_frozen() == frozen {
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

    /// Sends `signal` to every process in the cgroup.
    pub fn signal_all(&self, signal: nix::sys::signal::Signal) {
        for pid in self.pids() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
        }
    }

    /// Kills what is left in the cgroup and removes its directories; the
    /// parents kcell's naming made (`kcell*`) go too once empty.
    pub fn remove(&self) -> Result<(), CgroupError> {
        let deadline = Instant::now() + Duration::from_secs(5);
        if let (Some(Version::V2), Some(dir)) = (self.version(), self.dir_of("unified")) {
            // Linux 5.14; older kernels lack the file and get the loop below.
            let _ = fs::write(dir.join("cgroup.kill"), "1");
        }
        loop {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                return Err(CgroupError::NotEmpty(self.path.clone(), pids));
            }
            // A frozen task cannot die; thaw first (no-op when not frozen).
            if let (Some(v), Some(d)) = (self.version(), self.freezer_dir()) {
                let (file, value) = resources::freeze_value(v, false);
                let _ = fs::write(d.join(file), value);
            }
            self.signal_all(nix::sys::signal::Signal::SIGKILL);
            std::thread::sleep(Duration::from_millis(2));
        }
        let mut first_err = None;
        for (_, dir) in &self.dirs {
            if let Err(e) = remove_dir(dir, deadline) {
                first_err.get_or_insert(e);
            }
        }
        if first_err.is_none() {
            // Parents named by kcell go with their last child; EBUSY or
            // ENOTEMPTY just means another container still lives there.
            for (_, dir) in &self.dirs {
                let mount = self.hierarchy_mount(dir);
                for parent in dir.ancestors().skip(1) {
                    if Some(parent) == mount.as_deref()
                        || !parent
                            .file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with(PARENT))
                    {
                        break;
                    }
                    if remove_dir(parent, Instant::now()).is_err() {
                        break;
                    }
                }
            }
        }
        match first_err {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }
}

/// rmdir of a cgroup: the last task's exit is accounted asynchronously,
/// so EBUSY may last a moment. A directory that is not a cgroup (a test's
/// fake cgroupfs) is removed with its files.
fn remove_dir(dir: &Path, deadline: Instant) -> Result<(), SysError> {
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) && !is_cgroupfs(dir) => {
                // The kernel's rmdir takes the control files along; a fake
                // cgroupfs has real files: remove those, never a subdirectory.
                for f in fs::read_dir(dir).into_iter().flatten().flatten() {
                    if f.file_type().is_ok_and(|t| t.is_file()) {
                        let _ = fs::remove_file(f.path());
                    }
                }
                return fs::remove_dir(dir).sys("rmdir", dir.display());
            }
            Err(e) => return Err(SysError::from_io("rmdir", dir.display(), e)),
        }
    }
}

/// Whether `dir` is on a cgroup filesystem (v1 or v2).
fn is_cgroupfs(dir: &Path) -> bool {
    const CGROUP_SUPER_MAGIC: i64 = 0x0027_e0eb;
    const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
    nix::sys::statfs::statfs(dir).is_ok_and(|s| {
        let t = s.filesystem_type().0;
        t == CGROUP_SUPER_MAGIC || t == CGROUP2_SUPER_MAGIC
    })
}

/// Makes one cgroup directory if missing.
fn make_dir(dir: &Path) -> Result<(), SysError> {
    match fs::create_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            Err(SysError::from_io("mkdir", dir.display(), e))
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
        let mine = fs::read_to_string(dir.join(file)).unwrap_or_default();
        if mine.trim().is_empty() {
            let theirs = read(&parent.join(file))?;
            write(&dir.join(file), theirs.trim())?;
        }
    }
    Ok(())
}
