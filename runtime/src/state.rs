//! One record per container under the state directory, so `ps`, `exec`,
//! `stop`, `rm` and `gc` can find it. A record is written before the
//! resources it names are made, and replaced whole (temporary file, then
//! rename), so it is never half-written and cleanup after a crash is a
//! replay of it.

use crate::namespace::NamespaceSet;
use crate::sys::{SysContext, SysError};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Errors of the state directory.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A file operation failed.
    #[error(transparent)]
    Sys(#[from] SysError),
    /// A record could not be read.
    #[error("container record {0} is unreadable: {1}")]
    Corrupt(PathBuf, String),
    /// No container of that name.
    #[error("no container '{0}' (kcell ps -a lists them)")]
    NotFound(String),
    /// The name is taken by a container that still has a record.
    #[error("a container named '{0}' already exists (kcell rm {0} removes it)")]
    Exists(String),
}

/// How far a container's creation and start went (what the record says;
/// [`Record::status`] adds what the kernel says).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Resources are being made.
    Creating,
    /// The first process waits for `start` at the exec FIFO.
    Created,
    /// `start` let it run.
    Running,
}

/// A container's status, as the OCI state reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Being created.
    Creating,
    /// Created, waiting for start.
    Created,
    /// Its first process runs.
    Running,
    /// Its cgroup is frozen.
    Paused,
    /// Its first process is gone.
    Stopped,
}

impl Status {
    /// The OCI name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }
}

/// What the runtime knows of a container, and everything it holds (its
/// ledger): released in one place, [`crate::lifecycle::ledger::release`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    /// The container's ID (its --name, or 12 hex digits).
    pub id: String,
    /// The root it runs in.
    pub rootfs: PathBuf,
    /// The bundle it was created from (OCI).
    #[serde(default)]
    pub bundle: Option<PathBuf>,
    /// The config's annotations.
    #[serde(default)]
    pub annotations: std::collections::BTreeMap<String, String>,
    /// Its first process as configured (exec takes its defaults from it).
    pub process: crate::spec::Process,
    /// The namespaces made for it.
    pub namespaces: NamespaceSet,
    /// Nanoseconds since the epoch when it was created.
    pub created_ns: u128,
    /// Host PID of the first process, once it exists.
    pub pid: Option<i32>,
    /// That process's start time (proc(5) field 22), against PID reuse.
    pub start_time: Option<u64>,
    /// Host PID of the process that creates it and, for `kcell run`, waits
    /// for it and releases it when it ends.
    pub owner_pid: i32,
    /// Whether the owner stays for the container's whole life (`kcell
    /// run`): when it is gone, `kcell gc` may release the container. An
    /// OCI container outlives its creator and waits for `delete`.
    pub owned: bool,
    /// Creating, created or running.
    pub phase: Phase,
    /// Its hooks (poststart runs at start, poststop at delete).
    #[serde(default)]
    pub hooks: crate::spec::Hooks,
    /// Its cgroup's path in every hierarchy, removed with it.
    #[serde(default)]
    pub cgroup: Option<PathBuf>,
    /// The FIFO its first process waits on until `start`.
    #[serde(default)]
    pub exec_fifo: Option<PathBuf>,
    /// The image it runs from, as named (None for a directory root).
    #[serde(default)]
    pub image: Option<String>,
    /// Its overlay directory in the image store, removed with it.
    #[serde(default)]
    pub overlay_dir: Option<PathBuf>,
    /// Its address on a bridge (`--net bridge`), released with it.
    #[serde(default)]
    pub lease: Option<crate::net::network::Lease>,
    /// Host-side links made for it (its veth ends), deleted with it.
    #[serde(default)]
    pub host_links: Vec<String>,
    /// The bind mount that keeps its network namespace (`exec` and
    /// `net attach` join through it), unmounted with it.
    #[serde(default)]
    pub netns_file: Option<PathBuf>,
    /// Its own resolv.conf (`--dns`), removed with it.
    #[serde(default)]
    pub resolv_conf: Option<PathBuf>,
    /// A root without a mount namespace of its own: what it mounts below
    /// the root in the caller's namespace is unmounted with it.
    #[serde(default)]
    pub host_mounts: Option<crate::rootfs::host_ns::HostMounts>,
}

/// A process's start time in clock ticks since boot, from /proc/PID/stat;
/// None for a process that is gone or a zombie (dead, not yet reaped).
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    if matches!(fields.first(), Some(&"Z") | Some(&"X")) {
        return None;
    }
    fields.get(19)?.parse().ok()
}

fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

impl Record {
    /// Whether the first process still runs (the same process: PID and start time).
    pub fn is_running(&self) -> bool {
        match (self.pid, self.start_time) {
            (Some(pid), Some(t)) => start_time(pid) == Some(t),
            _ => false,
        }
    }

    /// Whether the process that made it is gone (killed, or an OCI creator
    /// that is done).
    pub fn owner_gone(&self) -> bool {
        !alive(self.owner_pid)
    }

    /// Whether its owner was killed: a `kcell run` gone while its record
    /// remains, or a creator gone before the container was created.
    pub fn orphaned(&self) -> bool {
        self.owner_gone() && (self.owned || self.phase == Phase::Creating)
    }

    /// The status: the record's phase, checked against the process (gone:
    /// stopped) and the cgroup (frozen: paused).
    pub fn status(&self) -> Status {
        match self.phase {
            Phase::Creating if !self.owner_gone() => Status::Creating,
            Phase::Creating => Status::Stopped,
            _ if !self.is_running() => Status::Stopped,
            _ if self.frozen() => Status::Paused,
            Phase::Created => Status::Created,
            Phase::Running => Status::Running,
        }
    }

    /// Seconds since the epoch when it was created.
    pub fn created_secs(&self) -> u64 {
        (self.created_ns / 1_000_000_000) as u64
    }

    /// Its cgroup, when it has one.
    pub fn cgroup(&self) -> Option<crate::cgroup::ContainerCgroup> {
        let path = self.cgroup.as_ref()?;
        crate::cgroup::Backend::detect().cgroup(path).ok()
    }

    fn frozen(&self) -> bool {
        self.cgroup().is_some_and(|c| c.is_frozen())
    }
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// KCELL_STATE, else /run/kcell for root, else $XDG_RUNTIME_DIR/kcell, else /tmp/kcell-UID.
    pub fn default_location() -> Self {
        let root = if let Some(p) = std::env::var_os("KCELL_STATE") {
            PathBuf::from(p)
        } else if nix::unistd::geteuid().is_root() {
            PathBuf::from("/run/kcell")
        } else if let Some(p) = std::env::var_os("XDG_RUNTIME_DIR") {
            PathBuf::from(p).join("kcell")
        } else {
            std::env::temp_dir().join(format!("kcell-{}", nix::unistd::geteuid()))
        };
        StateDir { root }
    }

    /// A state directory at `root`.
    pub fn at(root: impl Into<PathBuf>) -> Self {
        StateDir { root: root.into() }
    }

    /// The records' directory (made by `create` only: looking must not make it).
    fn dir(&self) -> PathBuf {
        self.root.join("containers")
    }

    /// The container's own resolv.conf (`--dns`), next to its record and
    /// removed with it.
    pub fn resolv_conf(&self, id: &str) -> PathBuf {
        self.dir().join(format!("{id}.resolv.conf"))
    }

    /// The FIFO the container's first process waits on until `start`.
    pub fn exec_fifo(&self, id: &str) -> PathBuf {
        self.dir().join(format!("{id}.fifo"))
    }

    /// The directory of this state (for messages).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Makes the records' directory (root-only, as runc's state is).
    pub fn ensure_dir(&self) -> Result<(), StateError> {
        fs::create_dir_all(self.dir()).sys("mkdir", self.dir().display())?;
        Ok(())
    }

    /// Where the container's network namespace is bind-mounted while it lives.
    pub fn netns_file(&self, id: &str) -> PathBuf {
        self.dir().join(format!("{id}.netns"))
    }

    /// The bridge networks' lease files.
    pub fn networks(&self) -> crate::net::network::Networks {
        crate::net::network::Networks::at(self.root.join("net"))
    }

    fn path(&self, id: &str) -> Result<PathBuf, SysError> {
        Ok(self.dir().join(format!("{id}.json")))
    }

    /// Creates the record of a new container; refuses a name in use. The
    /// exclusive create is what keeps two concurrent runs apart.
    pub fn create(&self, rec: &Record) -> Result<(), StateError> {
        let mut attempts = 0;
        loop {
            let path = self.path(&rec.id)?;
            fs::create_dir_all(self.dir()).sys("mkdir", self.dir().display())?;
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(_) => break,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Err(StateError::Exists(rec.id.clone()))
                }
                // The last container out removed the directory just now: again.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && attempts < 5 => attempts += 1,
                Err(e) => return Err(SysError::from_io("create", path.display(), e).into()),
            }
        }
        self.write(rec)
    }

    /// Replaces a record whole: temporary file, rename. No fsync: the rename
    /// is what makes a record whole against a killed kcell, and a machine
    /// that crashes loses the processes, cgroups and mounts a record names
    /// (the default root, /run, is a tmpfs too); a torn record, possible only
    /// after a machine crash with the state on a disk, is read as corrupt,
    /// naming its file, never trusted. Two fsyncs were 1 ms of a 14 ms OCI
    /// create on this machine's disk (BENCHMARKS.md, section 1b).
    pub fn write(&self, rec: &Record) -> Result<(), StateError> {
        let path = self.path(&rec.id)?;
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        let json = serde_json::to_vec_pretty(rec)
            .map_err(|e| StateError::Corrupt(path.clone(), e.to_string()))?;
        let mut f = fs::File::create(&tmp).sys("create", tmp.display())?;
        f.write_all(&json).sys("write", tmp.display())?;
        fs::rename(&tmp, &path)
            .sys("rename", format!("{} to {}", tmp.display(), path.display()))?;
        Ok(())
    }

    /// Reads one record.
    pub fn read(&self, id: &str) -> Result<Record, StateError> {
        crate::spec::validate_id(id).map_err(|_| StateError::NotFound(id.to_string()))?;
        let path = self.path(id)?;
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StateError::NotFound(id.to_string()))
            }
            Err(e) => return Err(SysError::from_io("read", path.display(), e).into()),
        };
        serde_json::from_str(&text).map_err(|e| StateError::Corrupt(path, e.to_string()))
    }

    /// Every readable record, oldest first.
    pub fn list(&self) -> Vec<Record> {
        let dir = self.dir();
        let mut recs: Vec<Record> = fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "json"))
                    .filter_map(|p| serde_json::from_str(&fs::read_to_string(p).ok()?).ok())
                    .collect()
            })
            .unwrap_or_default();
        recs.sort_by_key(|r: &Record| (r.created_ns, r.id.clone()));
        recs
    }

    /// Removes the temporary files of record writers that were killed
    /// between create and rename (`<id>.tmp-<pid>` of a dead pid); the
    /// records themselves were never touched. Returns how many went.
    pub fn remove_stale_temporaries(&self) -> usize {
        let Ok(entries) = fs::read_dir(self.dir()) else {
            return 0;
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let Some((_, pid)) = name.rsplit_once(".tmp-") else {
                continue;
            };
            let dead = pid
                .parse::<u32>()
                .is_ok_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
            if dead && fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        if removed > 0 && fs::remove_dir(self.dir()).is_ok() {
            let _ = fs::remove_dir(&self.root);
        }
        removed
    }

    /// Removes a record (no error when it is already gone).
    pub fn remove(&self, id: &str) -> Result<(), StateError> {
        let path = self.path(id)?;
        let _ = fs::remove_file(self.resolv_conf(id));
        let _ = fs::remove_file(self.netns_file(id));
        let _ = fs::remove_file(self.exec_fifo(id));
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(SysError::from_io("remove", path.display(), e).into())
            }
            _ => {}
        }
        // The last container out removes the (then empty) state directory;
        // ENOTEMPTY while others live is fine.
        if let Some(dir) = path.parent() {
            if fs::remove_dir(dir).is_ok() {
                let _ = fs::remove_dir(&self.root);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> Record {
        Record {
            id: id.into(),
            rootfs: "/r".into(),
            bundle: None,
            annotations: Default::default(),
            process: crate::spec::Process::new(vec!["sh".into()]),
            namespaces: NamespaceSet::parse_list("uts,pid").expect("valid"),
            created_ns: 1,
            pid: None,
            start_time: None,
            owner_pid: std::process::id() as i32,
            owned: true,
            phase: Phase::Creating,
            hooks: Default::default(),
            cgroup: None,
            exec_fifo: None,
            image: None,
            overlay_dir: None,
            lease: None,
            host_links: vec![],
            netns_file: None,
            resolv_conf: None,
            host_mounts: None,
        }
    }

    #[test]
    fn records_round_trip_and_names_are_exclusive() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateDir::at(dir.path());
        let mut rec = record("web");
        state.create(&rec).expect("create");
        assert!(matches!(state.create(&rec), Err(StateError::Exists(id)) if id == "web"));
        rec.pid = Some(std::process::id() as i32);
        rec.start_time = start_time(std::process::id() as i32);
        rec.phase = Phase::Running;
        state.write(&rec).expect("write");
        assert_eq!(state.read("web").expect("read"), rec);
        assert_eq!(state.read("web").expect("read").status(), Status::Running);
        assert_eq!(state.list().len(), 1);
        state.remove("web").expect("remove");
        assert!(matches!(state.read("web"), Err(StateError::NotFound(_))));
        assert!(matches!(state.read("../etc"), Err(StateError::NotFound(_))));
    }

    #[test]
    fn temporaries_of_killed_writers_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::at(dir.path().join("state"));
        state.create(&record("a")).unwrap();
        let containers = dir.path().join("state/containers");
        // pid_max is at most 2^22: this pid is never alive.
        fs::write(containers.join("a.tmp-99999999"), "{").unwrap();
        let live = containers.join(format!("a.tmp-{}", std::process::id()));
        fs::write(&live, "{").unwrap();
        assert_eq!(state.remove_stale_temporaries(), 1);
        assert!(live.exists(), "a live writer's file stays");
        assert_eq!(state.read("a").unwrap().id, "a");
    }

    #[test]
    fn a_dead_process_reads_as_stopped() {
        let mut rec = record("x");
        assert_eq!(rec.status(), Status::Creating);
        rec.phase = Phase::Running;
        rec.pid = Some(i32::MAX - 1);
        rec.start_time = Some(1);
        assert_eq!(rec.status(), Status::Stopped);
        rec.phase = Phase::Creating;
        rec.owner_pid = i32::MAX - 1;
        assert_eq!(rec.status(), Status::Stopped);
        assert!(rec.orphaned());
        rec.owned = false;
        rec.phase = Phase::Created;
        assert!(!rec.orphaned(), "an OCI container outlives its creator");
    }
}
