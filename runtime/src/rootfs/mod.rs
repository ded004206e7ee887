//! The container's root: a private mount tree, the special filesystems a
//! process expects, bind mounts, then pivot_root (never chroot: the old root
//! must be unmounted so `..` and double-chroot cannot reach the host), and
//! finally runc's masked and read-only paths.
//!
//! Everything here runs in the container's first process, inside its new
//! mount (and maybe user) namespace, before exec.

pub mod busybox;

use crate::spec::{BindMount, ContainerSpec};
use crate::sys::{SysContext, SysError};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

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

/// Device nodes of the container's /dev, bound from the host's (a bind works
/// in a user namespace, where mknod does not).
pub const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// Errors while building the container's root.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// A mount, pivot_root or other call failed.
    #[error(transparent)]
    Sys(#[from] SysError),
}

/// The user namespace the root is built in: it decides what may be created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserNs {
    /// No user namespace: full root.
    None,
    /// A user namespace whose uid 0 is mapped.
    Mapped,
    /// A user namespace with no mapping: no inode can be created (EOVERFLOW),
    /// so /dev is the host's, bound in, with fresh pts and shm over it.
    Unmapped,
}

/// Builds the container's root for `spec` and moves into it.
/// With no mnt namespace (`rootfs` is `/`) nothing is touched.
pub fn enter(spec: &ContainerSpec, user_ns: UserNs) -> Result<(), RootfsError> {
    if !spec.namespaces.contains(crate::namespace::Namespace::Mnt) {
        return Ok(());
    }
    // Nothing mounted from here on may propagate back to the host.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .sys("mount --make-rprivate", "/")?;
    let root = fs::canonicalize(&spec.rootfs).sys("realpath", spec.rootfs.display())?;
    match &spec.overlay {
        // Mounted in the container's own mount namespace, the overlay goes
        // with it: nothing to unmount on the host, even after a SIGKILL.
        Some(overlay) => mount_overlay(&root, overlay)?,
        None => bind(&root, &root, true)?,
    }
    mount_specials(&root, spec, user_ns)?;
    for m in &spec.mounts {
        bind_volume(&root, m)?;
    }
    for t in &spec.tmpfs {
        let target = under(&root, &t.target);
        ensure_dir(&target, 0o755)?;
        let options = (!t.options.is_empty()).then_some(t.options.as_str());
        mount_fs(
            "tmpfs",
            &target,
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            options,
        )?;
    }
    pivot_into(&root)?;
    for path in MASKED_PATHS {
        mask(Path::new(path))?;
    }
    for path in READONLY_PATHS {
        make_readonly(Path::new(path))?;
    }
    Ok(())
}

/// The image layers (read-only, shared by every container of the image)
/// under the container's own upper directory.
fn mount_overlay(root: &Path, overlay: &crate::spec::OverlayRoot) -> Result<(), SysError> {
    let lower: Vec<String> = overlay
        .lower
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        overlay.dir.join("upper").display(),
        overlay.dir.join("work").display()
    );
    mount(
        Some("kcell-overlay"),
        root,
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_str()),
    )
    .sys(
        "mount overlay",
        format!("on {} ({options})", root.display()),
    )
}

fn bind(source: &Path, target: &Path, recursive: bool) -> Result<(), SysError> {
    let flags = MsFlags::MS_BIND
        | if recursive {
            MsFlags::MS_REC
        } else {
            MsFlags::empty()
        };
    mount(Some(source), target, None::<&str>, flags, None::<&str>).sys(
        "mount --bind",
        format!("{} on {}", source.display(), target.display()),
    )
}

fn mount_fs(
    fstype: &str,
    target: &Path,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), SysError> {
    mount(Some(fstype), target, Some(fstype), flags, data)
        .sys("mount", format!("{fstype} on {}", target.display()))
}

fn ensure_dir(path: &Path, mode: u32) -> Result<(), SysError> {
    if !path.is_dir() {
        fs::create_dir_all(path).sys("mkdir", path.display())?;
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).sys("chmod", path.display())?;
    }
    Ok(())
}

fn ensure_file(path: &Path) -> Result<(), SysError> {
    if !path.exists() {
        if let Some(parent) = path.parent() {
            ensure_dir(parent, 0o755)?;
        }
        fs::File::create(path).sys("create", path.display())?;
    }
    Ok(())
}

/// The path of `inside` (an absolute container path) under the host-side `root`.
fn under(root: &Path, inside: &Path) -> PathBuf {
    root.join(inside.strip_prefix("/").unwrap_or(inside))
}

fn mount_specials(root: &Path, spec: &ContainerSpec, user_ns: UserNs) -> Result<(), SysError> {
    let in_user_ns = user_ns != UserNs::None;
    let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;

    let proc_dir = root.join("proc");
    ensure_dir(&proc_dir, 0o555)?;
    mount_fs("proc", &proc_dir, nosuid_nodev_noexec, None)?;

    let sys_dir = root.join("sys");
    ensure_dir(&sys_dir, 0o555)?;
    let sysfs = mount_fs(
        "sysfs",
        &sys_dir,
        nosuid_nodev_noexec | MsFlags::MS_RDONLY,
        None,
    );
    if let Err(err) = sysfs {
        // A user namespace without its own network namespace may not mount
        // sysfs (EPERM); runc binds the host's instead. Read-only either way.
        if !(in_user_ns && err.errno == nix::errno::Errno::EPERM) {
            return Err(err);
        }
        bind(Path::new("/sys"), &sys_dir, true)?;
        remount_readonly(&sys_dir)?;
    } else if !in_user_ns
        && spec.cgroup
        && spec
            .namespaces
            .contains(crate::namespace::Namespace::Cgroup)
    {
        mount_own_cgroup(&sys_dir.join("fs/cgroup"), &spec.id)?;
    }

    let dev = root.join("dev");
    ensure_dir(&dev, 0o755)?;
    if user_ns == UserNs::Unmapped {
        bind(Path::new("/dev"), &dev, true)?;
        // Fresh pts and shm over the host's, where the host has them (an
        // unmapped user cannot create the mount points).
        if dev.join("pts").is_dir() {
            mount_fs(
                "devpts",
                &dev.join("pts"),
                MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
                Some("newinstance,ptmxmode=0666,mode=0620"),
            )?;
        }
        if dev.join("shm").is_dir() {
            mount_fs(
                "tmpfs",
                &dev.join("shm"),
                nosuid_nodev_noexec,
                Some("mode=1777,size=65536k"),
            )?;
        }
        let tmp = root.join("tmp");
        return mount_fs(
            "tmpfs",
            &tmp,
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=1777"),
        );
    }
    mount_fs(
        "tmpfs",
        &dev,
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )?;
    for name in DEVICES {
        let host = Path::new("/dev").join(name);
        if !host.exists() {
            continue;
        }
        let node = dev.join(name);
        ensure_file(&node)?;
        bind(&host, &node, false)?;
    }
    let pts = dev.join("pts");
    ensure_dir(&pts, 0o755)?;
    // gid=5 (tty) is only mappable without a user namespace.
    let pts_opts = if in_user_ns {
        "newinstance,ptmxmode=0666,mode=0620"
    } else {
        "newinstance,ptmxmode=0666,mode=0620,gid=5"
    };
    mount_fs(
        "devpts",
        &pts,
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some(pts_opts),
    )?;
    let shm = dev.join("shm");
    ensure_dir(&shm, 0o1777)?;
    mount_fs(
        "tmpfs",
        &shm,
        nosuid_nodev_noexec,
        Some("mode=1777,size=65536k"),
    )?;
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink(target, dev.join(link)).sys("symlink", dev.join(link).display())?;
    }

    let tmp = root.join("tmp");
    ensure_dir(&tmp, 0o1777)?;
    mount_fs(
        "tmpfs",
        &tmp,
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )?;

    let workdir = under(root, &spec.workdir);
    if !workdir.is_dir() {
        ensure_dir(&workdir, 0o755)?;
    }
    Ok(())
}

fn bind_volume(root: &Path, m: &BindMount) -> Result<(), SysError> {
    let target = under(root, &m.target);
    if m.source.is_dir() {
        ensure_dir(&target, 0o755)?;
    } else {
        ensure_file(&target)?;
    }
    bind(&m.source, &target, true)?;
    if m.readonly {
        remount_readonly(&target)?;
    }
    Ok(())
}

/// The container's own cgroup, read-only at /sys/fs/cgroup: with its cgroup
/// namespace it sees its limits and counters as the root of the tree, and
/// cannot raise them (EROFS), as Docker's default read-only cgroupfs. v2:
/// the directory itself; v1: a read-only tmpfs with one directory per
/// hierarchy, named as on the host.
fn mount_own_cgroup(target: &Path, id: &str) -> Result<(), SysError> {
    let Some(cg) = crate::cgroup::ContainerCgroup::of_container(id) else {
        return Ok(());
    };
    if !target.is_dir() {
        return Ok(());
    }
    if cg.version == crate::cgroup::layout::Version::V2 {
        if let Some((_, dir)) = cg.dirs.first() {
            bind(dir, target, false)?;
            remount_readonly(target)?;
        }
        return Ok(());
    }
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount_fs("tmpfs", target, flags, Some("mode=755"))?;
    let mut done: Vec<&Path> = Vec::new();
    for (_, dir) in &cg.dirs {
        // Co-mounted controllers (cpu,cpuacct) share one directory.
        let hierarchy = dir.ancestors().nth(2).and_then(Path::file_name);
        let (Some(name), false) = (hierarchy, done.contains(&dir.as_path())) else {
            continue;
        };
        if !dir.is_dir() {
            continue;
        }
        let inside = target.join(name);
        ensure_dir(&inside, 0o555)?;
        bind(dir, &inside, false)?;
        remount_readonly(&inside)?;
        done.push(dir);
    }
    remount_readonly(target)
}

/// Remounts a bind mount read-only, keeping the flags the kernel locked on it
/// (in a user namespace, dropping nosuid/nodev/noexec is refused with EPERM).
fn remount_readonly(target: &Path) -> Result<(), SysError> {
    let st = nix::sys::statvfs::statvfs(target).sys("statvfs", target.display())?;
    use nix::sys::statvfs::FsFlags;
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    for (have, keep) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if st.flags().contains(have) {
            flags |= keep;
        }
    }
    mount(None::<&str>, target, None::<&str>, flags, None::<&str>)
        .sys("mount -o remount,bind,ro", target.display())
}

/// pivot_root(".", ".") puts the old root on top of the new one; detaching it
/// leaves no path back to the host's tree.
fn pivot_into(root: &Path) -> Result<(), SysError> {
    nix::unistd::chdir(root).sys("chdir", root.display())?;
    nix::unistd::pivot_root(".", ".").sys("pivot_root", root.display())?;
    umount2(".", MntFlags::MNT_DETACH).sys("umount2 (old root)", root.display())?;
    nix::unistd::chdir("/").sys("chdir", "/")
}

fn mask(path: &Path) -> Result<(), SysError> {
    match fs::symlink_metadata(path) {
        Err(_) => Ok(()),
        Ok(meta) if meta.is_dir() => {
            mount_fs("tmpfs", path, MsFlags::MS_RDONLY, Some("size=0k,mode=555"))
        }
        Ok(_) => bind(Path::new("/dev/null"), path, false),
    }
}

fn make_readonly(path: &Path) -> Result<(), SysError> {
    if !path.exists() {
        return Ok(());
    }
    bind(path, path, true)?;
    remount_readonly(path)
}

/// Creates the mount point directories a root needs, with the modes a
/// container expects. Used by root builders.
pub fn make_skeleton(root: &Path) -> Result<(), SysError> {
    for (dir, mode) in [
        ("bin", 0o755),
        ("sbin", 0o755),
        ("usr/bin", 0o755),
        ("usr/sbin", 0o755),
        ("etc", 0o755),
        ("proc", 0o555),
        ("sys", 0o555),
        ("dev", 0o755),
        ("tmp", 0o1777),
        ("root", 0o700),
        ("mnt", 0o755),
        ("run", 0o755),
        ("var/tmp", 0o1777),
    ] {
        let path = root.join(dir);
        fs::create_dir_all(&path).sys("mkdir", path.display())?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .sys("chmod", path.display())?;
    }
    fs::set_permissions(root, fs::Permissions::from_mode(0o755)).sys("chmod", root.display())
}
