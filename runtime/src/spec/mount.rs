//! The mounts and device nodes of a container's root, as data: an ordered
//! list applied by [`crate::rootfs`], whoever wrote it (kcell's own flags
//! through [`standard_mounts`], or an OCI config's `mounts`).

use nix::mount::MsFlags;
use std::path::{Path, PathBuf};

/// One mount, in the order it is made.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Mount {
    /// Where, inside the container (absolute).
    pub destination: PathBuf,
    /// The filesystem type, or "bind" for a bind mount.
    pub fstype: String,
    /// The source: a host path for binds, a name for the others.
    pub source: Option<PathBuf>,
    /// mount(2) flags (MS_RDONLY, MS_NOSUID, MS_BIND, MS_REC, ...).
    pub flags: u64,
    /// Propagation applied after the mount (MS_PRIVATE, MS_SLAVE, ... with MS_REC).
    pub propagation: u64,
    /// Filesystem options passed as mount(2)'s data ("size=1m,mode=700").
    pub data: String,
    /// `tmpcopyup` (a tmpfs only): what the destination held before is
    /// copied into the new tmpfs, as runc and crun do (podman asks it for
    /// /tmp, /var/tmp and /run under `--read-only`).
    #[serde(default)]
    pub copy_up: bool,
}

/// The mount options an OCI config or `-v` may give, and what they set:
/// (name, flags set, flags cleared). Anything else is filesystem data.
const FLAG_OPTIONS: &[(&str, MsFlags, MsFlags)] = &[
    ("ro", MsFlags::MS_RDONLY, MsFlags::empty()),
    ("rw", MsFlags::empty(), MsFlags::MS_RDONLY),
    ("nosuid", MsFlags::MS_NOSUID, MsFlags::empty()),
    ("suid", MsFlags::empty(), MsFlags::MS_NOSUID),
    ("nodev", MsFlags::MS_NODEV, MsFlags::empty()),
    ("dev", MsFlags::empty(), MsFlags::MS_NODEV),
    ("noexec", MsFlags::MS_NOEXEC, MsFlags::empty()),
    ("exec", MsFlags::empty(), MsFlags::MS_NOEXEC),
    ("sync", MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
    ("async", MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
    ("dirsync", MsFlags::MS_DIRSYNC, MsFlags::empty()),
    ("mand", MsFlags::MS_MANDLOCK, MsFlags::empty()),
    ("nomand", MsFlags::empty(), MsFlags::MS_MANDLOCK),
    ("noatime", MsFlags::MS_NOATIME, MsFlags::empty()),
    ("atime", MsFlags::empty(), MsFlags::MS_NOATIME),
    ("nodiratime", MsFlags::MS_NODIRATIME, MsFlags::empty()),
    ("diratime", MsFlags::empty(), MsFlags::MS_NODIRATIME),
    ("relatime", MsFlags::MS_RELATIME, MsFlags::empty()),
    ("norelatime", MsFlags::empty(), MsFlags::MS_RELATIME),
    ("strictatime", MsFlags::MS_STRICTATIME, MsFlags::empty()),
    ("nostrictatime", MsFlags::empty(), MsFlags::MS_STRICTATIME),
    ("bind", MsFlags::MS_BIND, MsFlags::empty()),
    (
        "rbind",
        MsFlags::MS_BIND.union(MsFlags::MS_REC),
        MsFlags::empty(),
    ),
    ("remount", MsFlags::MS_REMOUNT, MsFlags::empty()),
];

/// Propagation options (mount --make-*).
const PROPAGATION_OPTIONS: &[(&str, MsFlags)] = &[
    ("private", MsFlags::MS_PRIVATE),
    ("rprivate", MsFlags::MS_PRIVATE.union(MsFlags::MS_REC)),
    ("shared", MsFlags::MS_SHARED),
    ("rshared", MsFlags::MS_SHARED.union(MsFlags::MS_REC)),
    ("slave", MsFlags::MS_SLAVE),
    ("rslave", MsFlags::MS_SLAVE.union(MsFlags::MS_REC)),
    ("unbindable", MsFlags::MS_UNBINDABLE),
    ("runbindable", MsFlags::MS_UNBINDABLE.union(MsFlags::MS_REC)),
];

/// Every option name kcell takes (features.md mountOptions).
pub fn option_names() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = FLAG_OPTIONS
        .iter()
        .map(|(n, _, _)| *n)
        .chain(PROPAGATION_OPTIONS.iter().map(|(n, _)| *n))
        .chain([COPY_UP])
        .collect();
    v.sort_unstable();
    v
}

/// Options that would change what the mount means and that kcell does not
/// implement: refused by name rather than passed on or ignored.
const REFUSED_OPTIONS: &[&str] = &["idmap", "ridmap", "rro", "rrw"];

/// The option that copies a tmpfs's destination into it.
const COPY_UP: &str = "tmpcopyup";

/// A mount that cannot be made as given.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum MountError {
    /// The destination is not an absolute path.
    #[error(
        "mount destination '{0}' is not allowed: it must be an absolute path inside the container"
    )]
    RelativeDestination(PathBuf),
    /// A bind mount without a source.
    #[error("bind mount on '{0}' has no source")]
    NoSource(PathBuf),
    /// An option kcell does not implement.
    #[error("mount option '{option}' of '{destination}' is not supported by kcell (allowed: mount(8) flags such as ro, nosuid, nodev, noexec, bind, rbind, the propagation flags, and filesystem data)")]
    Unsupported {
        /// The mount's destination.
        destination: PathBuf,
        /// The option.
        option: String,
    },
    /// `tmpcopyup` on a filesystem other than tmpfs.
    #[error(
        "mount option 'tmpcopyup' of '{destination}' is allowed on a tmpfs only, not on '{fstype}'"
    )]
    CopyUpNotTmpfs {
        /// The mount's destination.
        destination: PathBuf,
        /// The mount's type.
        fstype: String,
    },
}

impl Mount {
    /// A mount from an OCI-style option list: flags are taken out, the rest
    /// joined as filesystem data. A bind is recognised by its type or its
    /// `bind`/`rbind` option.
    pub fn from_options(
        destination: &Path,
        fstype: &str,
        source: Option<&Path>,
        options: &[String],
    ) -> Result<Mount, MountError> {
        if !destination.is_absolute() {
            return Err(MountError::RelativeDestination(destination.to_path_buf()));
        }
        let mut flags = MsFlags::empty();
        let mut propagation = MsFlags::empty();
        let mut data: Vec<&str> = Vec::new();
        let mut copy_up = false;
        for o in options {
            if o == COPY_UP {
                if fstype != "tmpfs" {
                    return Err(MountError::CopyUpNotTmpfs {
                        destination: destination.to_path_buf(),
                        fstype: fstype.to_string(),
                    });
                }
                copy_up = true;
            } else if let Some((_, set, clear)) = FLAG_OPTIONS.iter().find(|(n, _, _)| n == o) {
                flags = (flags | *set) - *clear;
            } else if let Some((_, p)) = PROPAGATION_OPTIONS.iter().find(|(n, _)| n == o) {
                propagation |= *p;
            } else if REFUSED_OPTIONS.contains(&o.as_str()) {
                return Err(MountError::Unsupported {
                    destination: destination.to_path_buf(),
                    option: o.clone(),
                });
            } else {
                data.push(o);
            }
        }
        let is_bind = fstype == "bind" || flags.contains(MsFlags::MS_BIND);
        if is_bind {
            flags |= MsFlags::MS_BIND;
            if source.is_none() {
                return Err(MountError::NoSource(destination.to_path_buf()));
            }
        }
        Ok(Mount {
            destination: destination.to_path_buf(),
            fstype: if is_bind {
                "bind".into()
            } else {
                fstype.into()
            },
            source: source.map(Path::to_path_buf),
            flags: flags.bits(),
            propagation: propagation.bits(),
            data: data.join(","),
            copy_up,
        })
    }

    /// A bind mount of a host path (recursive, as `-v` and Docker do).
    pub fn bind(source: &Path, destination: &Path, readonly: bool) -> Mount {
        let mut flags = MsFlags::MS_BIND | MsFlags::MS_REC;
        if readonly {
            flags |= MsFlags::MS_RDONLY;
        }
        Mount {
            destination: destination.to_path_buf(),
            fstype: "bind".into(),
            source: Some(source.to_path_buf()),
            flags: flags.bits(),
            propagation: 0,
            data: String::new(),
            copy_up: false,
        }
    }

    /// A filesystem of `fstype` (its source named like the type).
    pub fn fs(fstype: &str, destination: &str, flags: MsFlags, data: &str) -> Mount {
        Mount {
            destination: destination.into(),
            fstype: fstype.into(),
            source: Some(fstype.into()),
            flags: flags.bits(),
            propagation: 0,
            data: data.into(),
            copy_up: false,
        }
    }

    /// The flags as MsFlags.
    pub fn ms_flags(&self) -> MsFlags {
        MsFlags::from_bits_truncate(self.flags)
    }

    /// A bind mount.
    pub fn is_bind(&self) -> bool {
        self.fstype == "bind"
    }
}

/// A device node made in the container's /dev.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Device {
    /// Its path inside the container, e.g. /dev/null.
    pub path: PathBuf,
    /// 'c' (character), 'b' (block), 'p' (FIFO).
    pub kind: char,
    /// Major number.
    pub major: u64,
    /// Minor number.
    pub minor: u64,
    /// Permission bits.
    pub mode: u32,
    /// Owner inside the container.
    pub uid: u32,
    /// Group inside the container.
    pub gid: u32,
}

/// The device nodes every container gets (runc's and the OCI spec's
/// defaults: config-linux.md "Default Devices").
pub fn default_devices() -> Vec<Device> {
    [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ]
    .into_iter()
    .map(|(name, major, minor)| Device {
        path: Path::new("/dev").join(name),
        kind: 'c',
        major,
        minor,
        mode: 0o666,
        uid: 0,
        gid: 0,
    })
    .collect()
}

/// Paths runc masks by default: files get /dev/null bound over them,
/// directories an empty read-only tmpfs.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths runc makes read-only by default.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// How the root's /dev is provided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevKind {
    /// A fresh tmpfs with the default device nodes (bound from the host's).
    Tmpfs,
    /// The host's /dev bound in (a user namespace with no mapping can create
    /// no inode, EOVERFLOW), with fresh pts and shm over it.
    HostBind,
}

/// The mounts kcell's own `run` gives every container, in order: /proc,
/// /sys (read-only), the container's own cgroup read-only at /sys/fs/cgroup
/// (with a cgroup namespace), /dev, /dev/pts, /dev/shm, /tmp.
pub fn standard_mounts(dev: DevKind, user_ns: bool, own_cgroup: bool) -> Vec<Mount> {
    let nsn = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let mut m = vec![
        Mount::fs("proc", "/proc", nsn, ""),
        Mount::fs("sysfs", "/sys", nsn | MsFlags::MS_RDONLY, ""),
    ];
    if own_cgroup {
        m.push(Mount::fs(
            "cgroup",
            "/sys/fs/cgroup",
            nsn | MsFlags::MS_RDONLY,
            "",
        ));
    }
    // gid=5 (tty) is only mappable without a user namespace.
    let pts = if user_ns {
        "newinstance,ptmxmode=0666,mode=0620"
    } else {
        "newinstance,ptmxmode=0666,mode=0620,gid=5"
    };
    match dev {
        DevKind::Tmpfs => m.push(Mount::fs(
            "tmpfs",
            "/dev",
            MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
            "mode=755,size=65536k",
        )),
        DevKind::HostBind => m.push(Mount::bind(Path::new("/dev"), Path::new("/dev"), false)),
    }
    m.push(Mount::fs(
        "devpts",
        "/dev/pts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        pts,
    ));
    m.push(Mount::fs("tmpfs", "/dev/shm", nsn, "mode=1777,size=65536k"));
    m.push(Mount::fs(
        "tmpfs",
        "/tmp",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        "mode=1777",
    ));
    m
}

/// What a destination must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// A directory; missing ones are made with this mode.
    Dir(u32),
    /// A regular file (or any non-directory, e.g. a device node); a missing
    /// one is made empty, its parents as directories of mode 0755.
    File,
    /// Whatever is there (a mount over an existing path of either kind).
    Existing,
}

/// Every path a default `kcell run` creates or mounts on inside the root,
/// with what it must be: the standard mounts, the device nodes and /dev
/// links, `--dns`'s /etc/resolv.conf and the default working directory
/// (the fuzz target for layers resolves each in a fuzzed root).
pub fn default_destinations() -> Vec<(&'static str, Need)> {
    let mut v: Vec<(&'static str, Need)> = vec![
        ("/proc", Need::Dir(0o755)),
        ("/sys", Need::Dir(0o755)),
        ("/sys/fs/cgroup", Need::Dir(0o755)),
        ("/dev", Need::Dir(0o755)),
        ("/dev/pts", Need::Dir(0o755)),
        ("/dev/shm", Need::Dir(0o755)),
        ("/tmp", Need::Dir(0o755)),
        ("/etc/resolv.conf", Need::File),
        ("/", Need::Dir(0o755)),
    ];
    for d in [
        "/dev/null",
        "/dev/zero",
        "/dev/full",
        "/dev/random",
        "/dev/urandom",
        "/dev/tty",
    ] {
        v.push((d, Need::File));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn opts(o: &[&str]) -> Vec<String> {
        o.iter().map(|s| s.to_string()).collect()
    }

    #[rstest]
    #[case(&["rbind", "ro"], "bind", (MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY).bits(), "")]
    #[case(&["nosuid", "noexec", "nodev", "mode=755", "size=65536k"], "tmpfs", (MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV).bits(), "mode=755,size=65536k")]
    #[case(&["ro", "rw"], "tmpfs", 0, "")]
    fn options_become_flags_and_data(
        #[case] o: &[&str],
        #[case] fstype: &str,
        #[case] flags: u64,
        #[case] data: &str,
    ) {
        let ty = if fstype == "bind" { "none" } else { fstype };
        let m = Mount::from_options(Path::new("/x"), ty, Some(Path::new("/src")), &opts(o))
            .expect("valid");
        assert_eq!(
            (m.fstype.as_str(), m.flags, m.data.as_str()),
            (fstype, flags, data)
        );
    }

    #[test]
    fn propagation_is_kept_apart() {
        let m = Mount::from_options(
            Path::new("/x"),
            "bind",
            Some(Path::new("/s")),
            &opts(&["rslave"]),
        )
        .expect("valid");
        assert_eq!(m.propagation, (MsFlags::MS_SLAVE | MsFlags::MS_REC).bits());
    }

    #[rstest]
    #[case("rel/x", "tmpfs", &[], "must be an absolute path")]
    #[case("/x", "bind", &["idmap"], "'idmap'")]
    fn bad_mounts_are_named(
        #[case] dest: &str,
        #[case] ty: &str,
        #[case] o: &[&str],
        #[case] why: &str,
    ) {
        let err = Mount::from_options(Path::new(dest), ty, Some(Path::new("/s")), &opts(o))
            .expect_err("refused")
            .to_string();
        assert!(err.contains(dest) && err.contains(why), "{err}");
    }

    #[test]
    fn a_bind_needs_a_source() {
        assert_eq!(
            Mount::from_options(Path::new("/x"), "bind", None, &[]),
            Err(MountError::NoSource("/x".into()))
        );
    }

    #[test]
    fn standard_mounts_in_order() {
        let dests: Vec<String> = standard_mounts(DevKind::Tmpfs, false, true)
            .iter()
            .map(|m| m.destination.display().to_string())
            .collect();
        assert_eq!(
            dests,
            [
                "/proc",
                "/sys",
                "/sys/fs/cgroup",
                "/dev",
                "/dev/pts",
                "/dev/shm",
                "/tmp"
            ]
        );
    }
}
