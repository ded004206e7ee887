//! The container's root: a private mount tree, the container's mounts in
//! order (kcell's standard ones, or an OCI config's), its device nodes,
//! then pivot_root (never chroot: the old root must be unmounted so `..`
//! and double-chroot cannot reach the host), and finally the masked and
//! read-only paths. The one exception is a config that asks for no mount
//! namespace at all: then chroot is all there is ([`host_ns`]).
//!
//! Every destination is resolved inside the root by [`inroot`] and mounted
//! on through its descriptor: a hostile root's symlinks lead nowhere.
//! Everything here runs in the container's first process, inside its new
//! mount (and maybe user) namespace, before exec.

pub mod busybox;
mod copy_up;
pub mod host_ns;
pub mod inroot;

use crate::spec::{ContainerSpec, Mount};
use crate::sys::{SysContext, SysError};
use inroot::{InRoot, Kind, Need, PathError, Resolved};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

pub use crate::spec::mount::{MASKED_PATHS, READONLY_PATHS};

/// Errors while building the container's root.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// A mount, pivot_root or other call failed.
    #[error(transparent)]
    Sys(#[from] SysError),
    /// A destination that does not resolve inside the root.
    #[error(transparent)]
    Path(#[from] PathError),
    /// A step run between the mounts and pivot_root (hooks) failed.
    #[error("{0}")]
    Step(String),
}

/// The user namespace the root is built in: it decides what may be created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserNs {
    /// No user namespace: full root.
    None,
    /// A user namespace whose uid 0 is mapped.
    Mapped,
    /// A user namespace with no mapping: no inode can be created (EOVERFLOW).
    Unmapped,
}

/// Builds the container's root for `spec` and moves into it, calling
/// `before_pivot` once the mounts are made (the createContainer hooks run
/// there). With no mnt namespace of its own, a root of `/` gets nothing
/// mounted, and any other root gets its mounts in the caller's namespace
/// and a chroot ([`host_ns`]).
pub fn enter(
    spec: &ContainerSpec,
    user_ns: UserNs,
    before_pivot: &mut dyn FnMut() -> Result<(), RootfsError>,
) -> Result<(), RootfsError> {
    if !spec.namespaces.contains(crate::namespace::Namespace::Mnt) {
        if spec.rootfs == Path::new("/") {
            return before_pivot();
        }
        return chroot_into(spec, user_ns, before_pivot);
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
        None => mount(
            Some(&root),
            &root,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .sys("mount --rbind", format!("{} on itself", root.display()))?,
    }
    // Opened after the root's own mount, so what is mounted below lands on it.
    populate(&root, spec, user_ns)?;
    before_pivot()?;
    if spec.no_pivot {
        move_into(&root)?;
    } else {
        pivot_into(&root)?;
    }
    if let Some(p) = spec.root_propagation {
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::from_bits_truncate(p),
            None::<&str>,
        )
        .sys("mount --make-* (rootfsPropagation)", "/")?;
    }
    Ok(())
}

/// The container's mounts, device nodes and working directory, in `root`.
fn populate(root: &Path, spec: &ContainerSpec, user_ns: UserNs) -> Result<(), RootfsError> {
    let inside = InRoot::open(root)?;
    for m in &spec.mounts {
        apply(&inside, m, spec, user_ns)?;
    }
    let dev_from_host = spec
        .mounts
        .iter()
        .any(|m| m.destination == Path::new("/dev") && m.is_bind());
    if !dev_from_host {
        make_devices(&inside, spec, user_ns)?;
    }
    inside.ensure(&spec.process.cwd, Need::Dir(0o755))?;
    Ok(())
}

/// A root without a mount namespace of its own: its mounts land in the
/// caller's namespace (the record names them for release, [`host_ns`]),
/// and chroot stands in for pivot_root, which needs a namespace to move.
/// Masked and read-only paths, a read-only root and root propagation would
/// change the caller's mounts: the spec refuses them here.
fn chroot_into(
    spec: &ContainerSpec,
    user_ns: UserNs,
    before_pivot: &mut dyn FnMut() -> Result<(), RootfsError>,
) -> Result<(), RootfsError> {
    let root = fs::canonicalize(&spec.rootfs).sys("realpath", spec.rootfs.display())?;
    populate(&root, spec, user_ns)?;
    before_pivot()?;
    nix::unistd::chroot(&root).sys("chroot", root.display())?;
    nix::unistd::chdir("/").sys("chdir", "/")?;
    Ok(())
}

/// After the root is entered (and the sysctls are written): the masked
/// and read-only paths, then the read-only root.
pub fn seal(spec: &ContainerSpec) -> Result<(), RootfsError> {
    if !spec.namespaces.contains(crate::namespace::Namespace::Mnt) {
        return Ok(());
    }
    let inside = InRoot::open(Path::new("/"))?;
    for path in &spec.masked_paths {
        mask(&inside, path)?;
    }
    for path in &spec.readonly_paths {
        make_readonly(&inside, path)?;
    }
    if spec.readonly_root {
        remount_readonly("/")?;
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

/// Mounts `source` (a host path, or a filesystem's name) on `target`.
fn mount_on(
    source: &Path,
    target: &Resolved,
    fstype: Option<&str>,
    flags: MsFlags,
    data: &str,
) -> Result<(), SysError> {
    let data = (!data.is_empty()).then_some(data);
    mount(Some(source), target.fd_path().as_str(), fstype, flags, data).sys(
        "mount",
        format!(
            "{} {} on {}{}",
            fstype.unwrap_or("--bind"),
            source.display(),
            target.dest.display(),
            data.map(|d| format!(" ({d})")).unwrap_or_default()
        ),
    )
}

/// One mount of the container's list, on its destination resolved inside the root.
fn apply(
    inside: &InRoot,
    m: &Mount,
    spec: &ContainerSpec,
    user_ns: UserNs,
) -> Result<(), RootfsError> {
    let flags = m.ms_flags();
    match m.fstype.as_str() {
        "bind" => {
            let source = m.source.as_deref().unwrap_or(Path::new(""));
            let need = if source.is_dir() {
                Need::Dir(0o755)
            } else {
                Need::File
            };
            let target = inside.ensure(&m.destination, need)?;
            mount_on(
                source,
                &target,
                None,
                MsFlags::MS_BIND | (flags & MsFlags::MS_REC),
                "",
            )?;
            // A bind takes its other flags only on a remount of the new mount.
            let rest = flags - MsFlags::MS_BIND - MsFlags::MS_REC;
            if !rest.is_empty() {
                let top = inside.ensure(&m.destination, Need::Existing)?;
                remount_bind(&top.fd_path(), rest, &m.destination)?;
            }
        }
        "cgroup" | "cgroup2" => mount_own_cgroup(inside, m, spec)?,
        fstype => {
            let target = inside.ensure(&m.destination, Need::Dir(0o755))?;
            let source = m.source.as_deref().unwrap_or(Path::new(fstype));
            let below = if m.copy_up {
                Some(copy_up::read(Path::new(&target.fd_path()))?)
            } else {
                None
            };
            let made = mount_on(source, &target, Some(fstype), flags, &m.data);
            if let (Ok(()), Some(tree)) = (&made, below) {
                let top = inside.ensure(&m.destination, Need::Existing)?;
                copy_up::write(&tree, Path::new(&top.fd_path()))?;
            }
            match made {
                // A user namespace without its own network namespace may not
                // mount sysfs (EPERM); runc binds the host's instead. Read-only either way.
                Err(e)
                    if fstype == "sysfs"
                        && user_ns != UserNs::None
                        && e.errno == nix::errno::Errno::EPERM =>
                {
                    mount_on(
                        Path::new("/sys"),
                        &target,
                        None,
                        MsFlags::MS_BIND | MsFlags::MS_REC,
                        "",
                    )?;
                    let top = inside.ensure(&m.destination, Need::Existing)?;
                    remount_bind(&top.fd_path(), MsFlags::MS_RDONLY, &m.destination)?;
                }
                other => other?,
            }
        }
    }
    if m.propagation != 0 {
        let top = inside.ensure(&m.destination, Need::Existing)?;
        mount(
            None::<&str>,
            top.fd_path().as_str(),
            None::<&str>,
            MsFlags::from_bits_truncate(m.propagation),
            None::<&str>,
        )
        .sys("mount --make-*", m.destination.display())?;
    }
    Ok(())
}

/// The container's device nodes in /dev, and its standard /dev symlinks.
/// Without a user namespace they are made with mknod (as runc does); in
/// one, mknod is refused, so the host's nodes are bound in.
fn make_devices(inside: &InRoot, spec: &ContainerSpec, user_ns: UserNs) -> Result<(), RootfsError> {
    for d in &spec.devices {
        let host = Path::new("/dev").join(d.path.strip_prefix("/dev").unwrap_or(&d.path));
        if user_ns != UserNs::None {
            if user_ns == UserNs::Unmapped || !host.exists() {
                continue;
            }
            let node = inside.ensure(&d.path, Need::File)?;
            mount_on(&host, &node, None, MsFlags::MS_BIND, "")?;
            continue;
        }
        let parent = d.path.parent().unwrap_or(Path::new("/dev"));
        let name = d.path.file_name().unwrap_or_default();
        let dir = inside.ensure(parent, Need::Dir(0o755))?;
        let kind = match d.kind {
            'b' => nix::sys::stat::SFlag::S_IFBLK,
            'p' => nix::sys::stat::SFlag::S_IFIFO,
            _ => nix::sys::stat::SFlag::S_IFCHR,
        };
        let made = nix::sys::stat::mknodat(
            Some(dir.fd().as_raw_fd()),
            name,
            kind,
            nix::sys::stat::Mode::from_bits_truncate(d.mode),
            nix::sys::stat::makedev(d.major, d.minor),
        );
        match made {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => {
                return Err(SysError {
                    call: "mknod",
                    subject: format!("{} ({} {}:{})", d.path.display(), d.kind, d.major, d.minor),
                    errno: e,
                }
                .into())
            }
        }
        // mknod's mode went through the umask; owner as the config says.
        let node = inside.ensure(&d.path, Need::File)?;
        fs::set_permissions(node.fd_path(), fs::Permissions::from_mode(d.mode))
            .sys("chmod", d.path.display())?;
        nix::unistd::fchownat(
            Some(dir.fd().as_raw_fd()),
            name,
            Some(nix::unistd::Uid::from_raw(d.uid)),
            Some(nix::unistd::Gid::from_raw(d.gid)),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .sys("chown", d.path.display())?;
    }
    let dev = inside.ensure(Path::new("/dev"), Need::Dir(0o755))?;
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink_if_missing(inside, &dev, link, target)?;
    }
    if spec
        .mounts
        .iter()
        .any(|m| m.destination == Path::new("/dev/pts"))
    {
        symlink_if_missing(inside, &dev, "ptmx", "pts/ptmx")?;
    }
    Ok(())
}

fn symlink_if_missing(
    inside: &InRoot,
    dir: &Resolved,
    name: &str,
    target: &str,
) -> Result<(), RootfsError> {
    match inside.symlink_in(dir, name, target) {
        Ok(()) => Ok(()),
        // Already there (a device of the config, or the image's own /dev).
        Err(e) if e.why.contains("EEXIST") => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The container's own cgroup, read-only at the mount's destination: with
/// its cgroup namespace it sees its limits and counters as the root of the
/// tree, and cannot raise them (EROFS), as Docker's default read-only
/// cgroupfs. v2: the directory itself; v1: a read-only tmpfs with one
/// directory per hierarchy, named as on the host.
fn mount_own_cgroup(inside: &InRoot, m: &Mount, spec: &ContainerSpec) -> Result<(), RootfsError> {
    let Some(cg) = spec
        .cgroup_path
        .as_ref()
        .and_then(|p| crate::cgroup::Backend::detect().cgroup(p).ok())
        .filter(|c| c.exists())
    else {
        return Ok(());
    };
    let Some(target) = inside.existing(&m.destination)? else {
        return Ok(());
    };
    if target.kind != Kind::Dir {
        return Ok(());
    }
    if cg.version() == Some(crate::cgroup::layout::Version::V2) {
        if let Some((_, dir)) = cg.dirs.first() {
            mount_on(dir, &target, None, MsFlags::MS_BIND, "")?;
            let top = inside.ensure(&m.destination, Need::Existing)?;
            remount_bind(&top.fd_path(), MsFlags::MS_RDONLY, &m.destination)?;
        }
        return Ok(());
    }
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount_on(
        Path::new("tmpfs"),
        &target,
        Some("tmpfs"),
        flags,
        "mode=755",
    )?;
    let mut done: Vec<&Path> = Vec::new();
    for (name, dir) in cg.named_dirs() {
        // Co-mounted controllers (cpu,cpuacct) share one directory.
        if done.contains(&dir) || !dir.is_dir() {
            continue;
        }
        let dest = m.destination.join(name);
        let at = inside.ensure(&dest, Need::Dir(0o555))?;
        mount_on(dir, &at, None, MsFlags::MS_BIND, "")?;
        let top = inside.ensure(&dest, Need::Existing)?;
        remount_bind(&top.fd_path(), MsFlags::MS_RDONLY, &dest)?;
        done.push(dir);
    }
    let top = inside.ensure(&m.destination, Need::Existing)?;
    remount_bind(&top.fd_path(), MsFlags::MS_RDONLY, &m.destination)?;
    Ok(())
}

/// Remounts a bind mount with `extra` flags (read-only, nosuid, ...),
/// keeping the flags the kernel locked on it (in a user namespace, dropping
/// nosuid/nodev/noexec is refused with EPERM).
fn remount_bind(target: &str, extra: MsFlags, dest: &Path) -> Result<(), SysError> {
    let st = nix::sys::statvfs::statvfs(target).sys("statvfs", dest.display())?;
    use nix::sys::statvfs::FsFlags;
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | extra;
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
    mount(None::<&str>, target, None::<&str>, flags, None::<&str>).sys(
        "mount -o remount,bind",
        format!("{} ({extra:?})", dest.display()),
    )
}

fn remount_readonly(target: &str) -> Result<(), SysError> {
    remount_bind(target, MsFlags::MS_RDONLY, Path::new(target))
}

/// `--no-pivot`: the root moved over / and chroot'ed into (for a root on a
/// ramdisk, where pivot_root is refused). The host's tree stays below.
fn move_into(root: &Path) -> Result<(), SysError> {
    nix::unistd::chdir(root).sys("chdir", root.display())?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .sys("mount --move", format!("{} to /", root.display()))?;
    nix::unistd::chroot(".").sys("chroot", root.display())?;
    nix::unistd::chdir("/").sys("chdir", "/")
}

/// pivot_root(".", ".") puts the old root on top of the new one; detaching it
/// leaves no path back to the host's tree.
fn pivot_into(root: &Path) -> Result<(), SysError> {
    nix::unistd::chdir(root).sys("chdir", root.display())?;
    nix::unistd::pivot_root(".", ".").sys("pivot_root", root.display())?;
    umount2(".", MntFlags::MNT_DETACH).sys("umount2 (old root)", root.display())?;
    nix::unistd::chdir("/").sys("chdir", "/")
}

fn mask(inside: &InRoot, path: &Path) -> Result<(), RootfsError> {
    let Some(target) = inside.existing(path)? else {
        return Ok(());
    };
    match target.kind {
        Kind::Dir => mount_on(
            Path::new("tmpfs"),
            &target,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            "size=0k,mode=555",
        )?,
        Kind::Other => mount_on(Path::new("/dev/null"), &target, None, MsFlags::MS_BIND, "")?,
    }
    Ok(())
}

fn make_readonly(inside: &InRoot, path: &Path) -> Result<(), RootfsError> {
    let Some(target) = inside.existing(path)? else {
        return Ok(());
    };
    mount_on(
        Path::new(&target.fd_path()),
        &target,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        "",
    )?;
    let top = inside.ensure(path, Need::Existing)?;
    remount_bind(&top.fd_path(), MsFlags::MS_RDONLY, path)?;
    Ok(())
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
