//! One record per container under the state directory, so `ps`, `exec`,
//! `stop`, `rm` and `gc` can find it. A record is written before the
//! resources it names are made, and replaced whole (temporary file, fsync,
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

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Resources are being made.
    Creating,
    /// The first process runs.
    Running,
}

/// What the runtime knows of a container.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    /// The container's ID (its --name, or 12 hex digits).
    pub id: String,
    /// The root it runs in (a directory, later an image).
    pub rootfs: PathBuf,
    /// Its command.
    pub command: Vec<String>,
    /// Its environment (for exec).
    pub env: Vec<String>,
    /// Its namespaces (for exec to join).
    pub namespaces: NamespaceSet,
    /// Seconds since the epoch when it was created.
    pub created: u64,
    /// Host PID of the first process, once it runs.
    pub pid: Option<i32>,
    /// That process's start time (proc(5) field 22), against PID reuse.
    pub start_time: Option<u64>,
    /// Host PID of the runtime process that waits for it.
    pub runtime_pid: i32,
    /// Creating or running.
    pub phase: Phase,
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
    /// Its capabilities and seccomp profile, which `exec` applies too.
    #[serde(default)]
    pub confinement: crate::spec::Confinement,
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

impl Record {
    /// Whether the first process still runs (the same process: PID and start time).
    pub fn is_running(&self) -> bool {
        match (self.pid, self.start_time) {
            (Some(pid), Some(t)) => start_time(pid) == Some(t),
            _ => false,
        }
    }

    /// Whether the runtime that owns the record is gone (it was killed).
    pub fn orphaned(&self) -> bool {
        !Path::new(&format!("/proc/{}", self.runtime_pid)).exists()
    }

    /// "running", or "exited" for a record whose process is gone.
    pub fn status(&self) -> &'static str {
        match self.phase {
            Phase::Running if self.is_running() => "running",
            Phase::Creating if !self.orphaned() => "creating",
            _ => "exited",
        }
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

    /// Replaces a record whole: temporary file, fsync, rename.
    pub fn write(&self, rec: &Record) -> Result<(), StateError> {
        let path = self.path(&rec.id)?;
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        let json = serde_json::to_vec_pretty(rec)
            .map_err(|e| StateError::Corrupt(path.clone(), e.to_string()))?;
        let mut f = fs::File::create(&tmp).sys("create", tmp.display())?;
        f.write_all(&json).sys("write", tmp.display())?;
        f.sync_all().sys("fsync", tmp.display())?;
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
        recs.sort_by_key(|r: &Record| (r.created, r.id.clone()));
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
            command: vec!["sh".into()],
            env: vec![],
            namespaces: NamespaceSet::parse_list("uts,pid").expect("valid"),
            created: 1,
            pid: None,
            start_time: None,
            runtime_pid: std::process::id() as i32,
            phase: Phase::Creating,
            image: None,
            overlay_dir: None,
            lease: None,
            host_links: vec![],
            netns_file: None,
            confinement: Default::default(),
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
        assert_eq!(state.read("web").expect("read").status(), "running");
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
    fn a_dead_process_reads_as_exited() {
        let mut rec = record("x");
        rec.phase = Phase::Running;
        rec.pid = Some(i32::MAX - 1);
        rec.start_time = Some(1);
        assert_eq!(rec.status(), "exited");
        rec.phase = Phase::Creating;
        rec.runtime_pid = i32::MAX - 1;
        assert_eq!(rec.status(), "exited");
    }
}
