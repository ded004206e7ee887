//! Host-side fixtures: objects a case makes on the host before its runs (a
//! SysV queue, a marker process, a scratch directory, ...), the variables
//! they give the case (`{sysv_queue.key}`), what they observe after or during
//! each run, and their removal (on drop, so also when the case fails).
//! Everything they make is named with the `kcell` prefix.

use crate::observation::typed;
use serde_json::{json, Value};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Fixture names a case may list.
pub const KNOWN: &[&str] = &[
    "host_hostname",
    "sysv_queue",
    "posix_mq",
    "host_process",
    "marker",
    "scratch",
    "host_file",
    "host_uptime",
    "overflow_ids",
    "host_links",
    "rootfs_listing",
    "block_device",
    "census",
];

/// What fixtures may need to know of the target.
#[derive(Debug, Clone)]
pub struct Context {
    /// The image root the runs use.
    pub rootfs: PathBuf,
    /// The agent binary (also the in-container probe helper).
    pub agent: PathBuf,
}

/// A host-side object of a case.
pub trait Fixture {
    /// The fixture's name (its variables and observations are prefixed with it).
    fn name(&self) -> &'static str;
    /// Variables for `{name.key}` substitution.
    fn vars(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }
    /// Values recorded once, at set-up, as "name.key".
    fn at_setup(&self) -> Vec<(&'static str, Value)> {
        Vec::new()
    }
    /// Values recorded per run (while it holds, else after it), as "run.name.key".
    fn observe(&self) -> Vec<(&'static str, Value)> {
        Vec::new()
    }
}

/// Makes the fixture `name`.
pub fn make(name: &str, ctx: &Context) -> Result<Box<dyn Fixture>, String> {
    let suffix = kcell::spec::new_id();
    Ok(match name {
        "host_hostname" => Box::new(HostHostname),
        "sysv_queue" => Box::new(SysvQueue::new()?),
        "posix_mq" => Box::new(PosixMq::new(&suffix)?),
        "host_process" => Box::new(HostProcess::new(&ctx.agent, &suffix)?),
        "marker" => Box::new(Marker {
            name: format!("kcell-marker-{suffix}"),
        }),
        "scratch" => Box::new(Scratch::new(&suffix)?),
        "host_file" => Box::new(HostFile::new(&suffix)?),
        "host_uptime" => Box::new(HostUptime),
        "overflow_ids" => Box::new(OverflowIds),
        "host_links" => Box::new(HostLinks),
        "rootfs_listing" => Box::new(RootfsListing(ctx.rootfs.clone())),
        "block_device" => Box::new(crate::blockdev::BlockDevice::new(&suffix)?),
        "census" => Box::new(Census),
        other => {
            return Err(format!(
                "unknown fixture '{other}': known are {}",
                KNOWN.join(", ")
            ))
        }
    })
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().to_string())
        .unwrap_or_default()
}

fn uptime() -> f64 {
    fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// The host's hostname, before and after each run.
struct HostHostname;
impl Fixture for HostHostname {
    fn name(&self) -> &'static str {
        "host_hostname"
    }
    fn at_setup(&self) -> Vec<(&'static str, Value)> {
        vec![("before", json!(hostname()))]
    }
    fn observe(&self) -> Vec<(&'static str, Value)> {
        vec![("now", json!(hostname()))]
    }
}

/// A SysV message queue on the host (what `ipcmk -Q` makes).
struct SysvQueue {
    key: libc::key_t,
    id: libc::c_int,
}
impl SysvQueue {
    fn new() -> Result<Self, String> {
        for attempt in 0..16 {
            // "kc" in the high half so the key says who made it.
            let low = (std::process::id().wrapping_add(attempt * 7919)) & 0xffff;
            let key = (0x6b63_0000u32 | low) as libc::key_t;
            // SAFETY: msgget takes plain integers.
            let id = unsafe { libc::msgget(key, libc::IPC_CREAT | libc::IPC_EXCL | 0o600) };
            if id >= 0 {
                return Ok(SysvQueue { key, id });
            }
        }
        Err(format!(
            "msgget of a kcell SysV queue: {}",
            std::io::Error::last_os_error()
        ))
    }
}
impl Fixture for SysvQueue {
    fn name(&self) -> &'static str {
        "sysv_queue"
    }
    fn vars(&self) -> Vec<(&'static str, String)> {
        vec![("key", format!("0x{:08x}", self.key as u32))]
    }
}
impl Drop for SysvQueue {
    fn drop(&mut self) {
        // SAFETY: IPC_RMID ignores the buffer argument.
        unsafe { libc::msgctl(self.id, libc::IPC_RMID, std::ptr::null_mut()) };
    }
}

/// A POSIX message queue on the host.
struct PosixMq {
    name: String,
}
impl PosixMq {
    fn new(suffix: &str) -> Result<Self, String> {
        let name = format!("/kcell-{suffix}");
        let cname = std::ffi::CString::new(name.clone()).map_err(|e| e.to_string())?;
        let fd = nix::mqueue::mq_open(
            cname.as_c_str(),
            nix::mqueue::MQ_OFlag::O_CREAT
                | nix::mqueue::MQ_OFlag::O_EXCL
                | nix::mqueue::MQ_OFlag::O_RDWR,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            Some(&nix::mqueue::MqAttr::new(0, 1, 64, 0)),
        )
        .map_err(|e| format!("mq_open {name} on the host: {e}"))?;
        nix::mqueue::mq_close(fd).map_err(|e| format!("mq_close {name}: {e}"))?;
        Ok(PosixMq { name })
    }
}
impl Fixture for PosixMq {
    fn name(&self) -> &'static str {
        "posix_mq"
    }
    fn vars(&self) -> Vec<(&'static str, String)> {
        vec![("name", self.name.clone())]
    }
}
impl Drop for PosixMq {
    fn drop(&mut self) {
        if let Ok(c) = std::ffi::CString::new(self.name.clone()) {
            let _ = nix::mqueue::mq_unlink(c.as_c_str());
        }
    }
}

/// A process running on the host only, whose command line carries a marker.
struct HostProcess {
    marker: String,
    child: Child,
}
impl HostProcess {
    fn new(agent: &Path, suffix: &str) -> Result<Self, String> {
        let marker = format!("kcell-hostproc-{suffix}");
        let child = Command::new(agent)
            .arg0("kcell-probe")
            .args(["hold", &marker])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn {} as the host marker process: {e}", agent.display()))?;
        Ok(HostProcess { marker, child })
    }
}
impl Fixture for HostProcess {
    fn name(&self) -> &'static str {
        "host_process"
    }
    fn vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("marker", self.marker.clone()),
            ("pid", self.child.id().to_string()),
        ]
    }
}
impl Drop for HostProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Host processes and mounts whose command line or source is `name`.
fn marked_processes(name: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    fs::read_dir("/proc")
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .filter(|pid| *pid != me)
                .filter(|pid| {
                    fs::read(format!("/proc/{pid}/cmdline"))
                        .map(|c| String::from_utf8_lossy(&c).contains(name))
                        .unwrap_or(false)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn marked_mounts(name: &str) -> Vec<PathBuf> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(name))
        .filter_map(|l| l.split_whitespace().nth(4).map(PathBuf::from))
        .collect()
}

/// A unique name, and what of the host carries it: processes and mounts.
struct Marker {
    name: String,
}
impl Fixture for Marker {
    fn name(&self) -> &'static str {
        "marker"
    }
    fn vars(&self) -> Vec<(&'static str, String)> {
        vec![("name", self.name.clone())]
    }
    fn observe(&self) -> Vec<(&'static str, Value)> {
        vec![
            ("procs", json!(marked_processes(&self.name).len())),
            ("mounts", json!(marked_mounts(&self.name).len())),
        ]
    }
}
impl Drop for Marker {
    fn drop(&mut self) {
        for pid in marked_processes(&self.name) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        for m in marked_mounts(&self.name).into_iter().rev() {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// A world-writable host directory (so a mapped uid can write into it).
struct Scratch {
    path: PathBuf,
}
impl Scratch {
    fn new(suffix: &str) -> Result<Self, String> {
        let path = std::env::temp_dir().join(format!("kcell-scratch-{suffix}"));
        fs::create_dir(&path).map_err(|e| format!("mkdir {}: {e}", path.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o777))
            .map_err(|e| format!("chmod {}: {e}", path.display()))?;
        Ok(Scratch { path })
    }
}
impl Fixture for Scratch {
    fn name(&self) -> &'static str {
        "scratch"
    }
    fn vars(&self) -> Vec<(&'static str, String)> {
        vec![("path", self.path.display().to_string())]
    }
    fn observe(&self) -> Vec<(&'static str, Value)> {
        let mut files: Vec<String> = fs::read_dir(&self.path)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter_map(|e| {
                        let m = e.metadata().ok()?;
                        Some(format!(
                            "{}:{}:{}",
                            e.file_name().to_string_lossy(),
                            m.uid(),
                            m.gid()
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        vec![("files", json!(files.join(",")))]
    }
}
impl Drop for Scratch {
    fn drop(&mut self) {
        let me = self.path.display().to_string();
        for m in marked_mounts(&me).into_iter().rev() {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// A file on the host that a container must not reach.
struct HostFile {
    path: PathBuf,
}
impl HostFile {
    fn new(suffix: &str) -> Result<Self, String> {
        let path = std::env::temp_dir().join(format!("kcell-hostfile-{suffix}"));
        fs::write(&path, "kcell host marker\n")
            .map_err(|e| format!("write {}: {e}", path.display()))?;
        Ok(HostFile { path })
    }
}
impl Fixture for HostFile {
    fn name(&self) -> &'static str {
        "host_file"
    }
    fn vars(&self) -> Vec<(&'static str, String)> {
        vec![("path", self.path.display().to_string())]
    }
}
impl Drop for HostFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// The host's /proc/uptime (CLOCK_BOOTTIME), before and per run.
struct HostUptime;
impl Fixture for HostUptime {
    fn name(&self) -> &'static str {
        "host_uptime"
    }
    fn at_setup(&self) -> Vec<(&'static str, Value)> {
        vec![("before", json!(uptime()))]
    }
    fn observe(&self) -> Vec<(&'static str, Value)> {
        vec![("now", json!(uptime()))]
    }
}

/// /proc/sys/kernel/overflowuid and overflowgid.
struct OverflowIds;
impl Fixture for OverflowIds {
    fn name(&self) -> &'static str {
        "overflow_ids"
    }
    fn at_setup(&self) -> Vec<(&'static str, Value)> {
        let read = |f: &str| {
            typed(
                fs::read_to_string(format!("/proc/sys/kernel/{f}"))
                    .unwrap_or_default()
                    .trim(),
            )
        };
        vec![("uid", read("overflowuid")), ("gid", read("overflowgid"))]
    }
}

/// The host's network interfaces.
struct HostLinks;
impl Fixture for HostLinks {
    fn name(&self) -> &'static str {
        "host_links"
    }
    fn at_setup(&self) -> Vec<(&'static str, Value)> {
        let names = sorted_names(Path::new("/sys/class/net"));
        vec![
            ("count", json!(names.len())),
            ("names", json!(names.join(","))),
        ]
    }
}

/// The top-level entries of the image root.
struct RootfsListing(PathBuf);
impl Fixture for RootfsListing {
    fn name(&self) -> &'static str {
        "rootfs_listing"
    }
    fn at_setup(&self) -> Vec<(&'static str, Value)> {
        vec![("entries", json!(sorted_names(&self.0).join(",")))]
    }
}

/// Sorted entry names of a directory.
pub fn sorted_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// What containers may leave on the host: mounts, cgroups, records, netns
/// files, links, and kcell's own temporary directories (the harness's own
/// work directories excepted). The summary before the runs must equal the
/// one after them.
struct Census;

impl Census {
    fn summary() -> String {
        let mut parts = Vec::new();
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        parts.push(format!("mounts={}", mountinfo.lines().count()));
        let layout = kcell::cgroup::layout::Layout::detect();
        let mut cgroups: Vec<String> = layout
            .v1_mounts()
            .values()
            .chain(layout.v2_root().map(|p| p.to_path_buf()).iter())
            .flat_map(|m| {
                let parent = m.join(kcell::cgroup::PARENT);
                sorted_names(&parent)
                    .into_iter()
                    .filter(|n| parent.join(n).is_dir())
                    .collect::<Vec<_>>()
            })
            .collect();
        cgroups.sort();
        cgroups.dedup();
        parts.push(format!("cgroups=[{}]", cgroups.join(",")));
        let state = kcell::state::StateDir::default_location();
        parts.push(format!(
            "records=[{}]",
            state
                .list()
                .iter()
                .map(|r| r.id.clone())
                .collect::<Vec<_>>()
                .join(",")
        ));
        parts.push(format!(
            "netns=[{}]",
            sorted_names(Path::new("/run/netns")).join(",")
        ));
        parts.push(format!(
            "links=[{}]",
            sorted_names(Path::new("/sys/class/net")).join(",")
        ));
        let tmp: Vec<String> = sorted_names(&std::env::temp_dir())
            .into_iter()
            .filter(|n| {
                n.starts_with("kcell")
                    && !n.starts_with("kcell-host-")
                    && !n.starts_with("kcell-case-")
                    && !n.starts_with("kcell-vm-")
            })
            .collect();
        parts.push(format!("tmp=[{}]", tmp.join(",")));
        parts.join(" ")
    }
}

impl Fixture for Census {
    fn name(&self) -> &'static str {
        "census"
    }
    fn at_setup(&self) -> Vec<(&'static str, Value)> {
        vec![("before", json!(Census::summary()))]
    }
    fn observe(&self) -> Vec<(&'static str, Value)> {
        vec![("now", json!(Census::summary()))]
    }
}
