//! The one way to reach a path inside a container's root.
//!
//! A root is input from elsewhere (an image layer, a directory someone
//! handed over): its symlinks and `..` must never lead the runtime, which
//! runs as root on the host, out of it (runc's CVE-2019-19921 and
//! CVE-2021-30465). Every destination kcell creates or mounts on is
//! resolved here, with the root treated as `/`: an absolute symlink
//! restarts at the root, `..` stops at it. The result is a file descriptor
//! (O_PATH), and mounts are made on `/proc/self/fd/N`, so a symlink swapped
//! in between resolving and mounting cannot redirect the mount.
//!
//! Two resolvers give the same answers: openat2(2) with RESOLVE_IN_ROOT
//! (Linux 5.6), and otherwise a walk one component at a time, each opened
//! with O_NOFOLLOW relative to the descriptor of the one before, symlinks
//! read and expanded by the walk itself, `..` popping the walk's own stack
//! (so a directory moved away mid-walk cannot take it along).
//!
//! Missing components are created (directories, or a file for the last one
//! when a file is needed) with mkdirat/openat(O_EXCL|O_NOFOLLOW) relative
//! to their resolved parent. A last component that is a symlink where a
//! directory or file is needed is refused, naming where it points.

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fstatat, Mode, SFlag};
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

/// Symlinks followed in one resolution before giving up (the kernel's MAXSYMLINKS).
const MAX_SYMLINKS: usize = 40;

/// Attempts when a concurrent change makes a step fail (EEXIST after
/// ENOENT, openat2's EAGAIN under a rename).
const MAX_RACES: usize = 16;

/// A destination that cannot be reached inside the root.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("destination '{dest}' in root {root}: {why}")]
pub struct PathError {
    /// The destination as given (a path inside the container).
    pub dest: PathBuf,
    /// The root it was resolved in.
    pub root: PathBuf,
    /// What went wrong, naming the component and where it led.
    pub why: String,
}

pub use crate::spec::mount::Need;

/// What a resolved destination is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// Anything else but a symlink.
    Other,
}

/// A destination resolved inside the root: its O_PATH descriptor.
#[derive(Debug)]
pub struct Resolved {
    fd: OwnedFd,
    /// The destination as given.
    pub dest: PathBuf,
    /// Directory or not.
    pub kind: Kind,
}

impl Resolved {
    /// The path that reaches exactly this file: `/proc/self/fd/N`. Mount
    /// on it, never on the destination's name.
    pub fn fd_path(&self) -> String {
        format!("/proc/self/fd/{}", self.fd.as_raw_fd())
    }

    /// The descriptor.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The resolver this kernel allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolver {
    /// openat2(2) with RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS.
    Openat2,
    /// The component-by-component walk.
    Walk,
}

impl Resolver {
    /// openat2 when the kernel has it (probed once), else the walk.
    pub fn detect() -> Resolver {
        static FOUND: OnceLock<Resolver> = OnceLock::new();
        *FOUND.get_or_init(|| {
            let how = nix::fcntl::OpenHow::new()
                .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
                .resolve(nix::fcntl::ResolveFlag::RESOLVE_IN_ROOT);
            match nix::fcntl::openat2(libc::AT_FDCWD, "/", how) {
                Ok(fd) => {
                    // SAFETY: the kernel just returned this descriptor to us.
                    drop(unsafe { OwnedFd::from_raw_fd(fd) });
                    Resolver::Openat2
                }
                Err(_) => Resolver::Walk,
            }
        })
    }
}

/// A container's root, opened once; every destination is resolved in it.
#[derive(Debug)]
pub struct InRoot {
    root: OwnedFd,
    path: PathBuf,
    resolver: Resolver,
}

/// The normal and `..` components of a destination (`/`, `.` dropped).
fn components(dest: &Path) -> Vec<OsString> {
    dest.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

fn join(parts: &[OsString]) -> PathBuf {
    let mut p = PathBuf::from("/");
    for c in parts {
        p.push(c);
    }
    p
}

fn open_path(dir: BorrowedFd<'_>, name: &OsStr, follow: bool) -> nix::Result<OwnedFd> {
    let mut flags = OFlag::O_PATH | OFlag::O_CLOEXEC;
    if !follow {
        flags |= OFlag::O_NOFOLLOW;
    }
    let fd = nix::fcntl::openat(Some(dir.as_raw_fd()), name, flags, Mode::empty())?;
    // SAFETY: openat just returned this descriptor to us alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn file_type(fd: BorrowedFd<'_>) -> nix::Result<SFlag> {
    let st = fstatat(Some(fd.as_raw_fd()), "", AtFlags::AT_EMPTY_PATH)?;
    Ok(SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT)
}

fn read_link(fd: BorrowedFd<'_>) -> nix::Result<OsString> {
    nix::fcntl::readlinkat(Some(fd.as_raw_fd()), "")
}

impl InRoot {
    /// Opens `root` (a host path the caller chose) as the root to resolve in.
    pub fn open(root: &Path) -> Result<InRoot, PathError> {
        Self::with_resolver(root, Resolver::detect())
    }

    /// The same with a chosen resolver (tests run both).
    pub fn with_resolver(root: &Path, resolver: Resolver) -> Result<InRoot, PathError> {
        let fd = nix::fcntl::open(
            root,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| PathError {
            dest: "/".into(),
            root: root.to_path_buf(),
            why: format!("open of the root: {e}"),
        })?;
        Ok(InRoot {
            // SAFETY: open just returned this descriptor to us alone.
            root: unsafe { OwnedFd::from_raw_fd(fd) },
            path: root.to_path_buf(),
            resolver,
        })
    }

    /// The root's host path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn error(&self, dest: &Path, why: impl Into<String>) -> PathError {
        PathError {
            dest: dest.to_path_buf(),
            root: self.path.clone(),
            why: why.into(),
        }
    }

    /// Resolves `parts` inside the root; the last component is followed
    /// when `follow_last`. Errors are the kernel's (ENOENT, ENOTDIR, ELOOP).
    fn resolve(&self, parts: &[OsString], follow_last: bool) -> nix::Result<OwnedFd> {
        match self.resolver {
            Resolver::Openat2 => {
                let mut flags = OFlag::O_PATH | OFlag::O_CLOEXEC;
                if !follow_last {
                    flags |= OFlag::O_NOFOLLOW;
                }
                let how = nix::fcntl::OpenHow::new().flags(flags).resolve(
                    nix::fcntl::ResolveFlag::RESOLVE_IN_ROOT
                        | nix::fcntl::ResolveFlag::RESOLVE_NO_MAGICLINKS,
                );
                let rel = join(parts);
                let rel = rel.strip_prefix("/").unwrap_or(&rel);
                let rel = if rel.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    rel
                };
                let mut races = 0;
                loop {
                    match nix::fcntl::openat2(self.root.as_raw_fd(), rel, how) {
                        // A rename somewhere in the root while `..` was resolved.
                        Err(Errno::EAGAIN) if races < MAX_RACES => races += 1,
                        // SAFETY: openat2 just returned this descriptor to us alone.
                        other => return other.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                    }
                }
            }
            Resolver::Walk => self.walk(parts, follow_last),
        }
    }

    /// The component walk: a stack of directory descriptors from the root.
    fn walk(&self, parts: &[OsString], follow_last: bool) -> nix::Result<OwnedFd> {
        let root = self.root.try_clone().map_err(|_| Errno::EMFILE)?;
        let mut stack: Vec<OwnedFd> = vec![root];
        let mut todo: std::collections::VecDeque<OsString> = parts.iter().cloned().collect();
        let mut links = 0;
        while let Some(name) = todo.pop_front() {
            if name == ".." {
                if stack.len() > 1 {
                    stack.pop();
                }
                continue;
            }
            if name.is_empty() || name == "." {
                continue;
            }
            let last = todo.is_empty();
            let dir = stack.last().ok_or(Errno::ENOENT)?.as_fd();
            if file_type(dir)? != SFlag::S_IFDIR {
                return Err(Errno::ENOTDIR);
            }
            let fd = open_path(dir, &name, false)?;
            if file_type(fd.as_fd())? == SFlag::S_IFLNK && (!last || follow_last) {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(Errno::ELOOP);
                }
                let target = read_link(fd.as_fd())?;
                let target = Path::new(&target);
                if target.is_absolute() {
                    stack.truncate(1);
                }
                for c in components(target).into_iter().rev() {
                    todo.push_front(c);
                }
                continue;
            }
            stack.push(fd);
        }
        stack.pop().ok_or(Errno::ENOENT)
    }

    /// Where the symlink at `parts` points, for messages.
    fn link_target(&self, parts: &[OsString]) -> Option<OsString> {
        let fd = self.resolve(parts, false).ok()?;
        (file_type(fd.as_fd()).ok()? == SFlag::S_IFLNK)
            .then(|| read_link(fd.as_fd()).ok())
            .flatten()
    }

    /// Resolves an existing destination (None when it does not exist); a
    /// symlink as its last component is refused.
    pub fn existing(&self, dest: &Path) -> Result<Option<Resolved>, PathError> {
        let parts = components(dest);
        match self.resolve(&parts, false) {
            Ok(fd) => self.classify(dest, &parts, fd, Need::Existing).map(Some),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(self.error(dest, format!("cannot be resolved inside the root: {e}"))),
        }
    }

    fn classify(
        &self,
        dest: &Path,
        parts: &[OsString],
        fd: OwnedFd,
        need: Need,
    ) -> Result<Resolved, PathError> {
        let ft = file_type(fd.as_fd()).map_err(|e| self.error(dest, format!("fstat: {e}")))?;
        if ft == SFlag::S_IFLNK {
            let to = self
                .link_target(parts)
                .map(|t| t.to_string_lossy().to_string())
                .unwrap_or_default();
            return Err(self.error(
                dest,
                format!(
                    "{} is a symlink (-> {to}): a mount needs a directory or file there, not a link to follow",
                    join(parts).display()
                ),
            ));
        }
        let kind = if ft == SFlag::S_IFDIR {
            Kind::Dir
        } else {
            Kind::Other
        };
        match (need, kind) {
            (Need::Dir(_), Kind::Other) => Err(self.error(
                dest,
                format!(
                    "{} is a file where a directory is needed",
                    join(parts).display()
                ),
            )),
            (Need::File, Kind::Dir) => Err(self.error(
                dest,
                format!(
                    "{} is a directory where a file is needed",
                    join(parts).display()
                ),
            )),
            _ => {
                self.check_inside(dest, &fd)?;
                Ok(Resolved {
                    fd,
                    dest: dest.to_path_buf(),
                    kind,
                })
            }
        }
    }

    /// A descriptor that escaped by a rename after it was resolved no
    /// longer has the root's path as a prefix: refuse it rather than mount.
    fn check_inside(&self, dest: &Path, fd: &OwnedFd) -> Result<(), PathError> {
        let at = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        let Ok(at) = at else {
            // No /proc (a test without it): the resolution itself is the guarantee.
            return Ok(());
        };
        let root = std::fs::read_link(format!("/proc/self/fd/{}", self.root.as_raw_fd()))
            .unwrap_or_else(|_| self.path.clone());
        if at == root || at.starts_with(&root) {
            Ok(())
        } else {
            Err(self.error(
                dest,
                format!(
                    "resolved to {}, which is outside the root (moved while it was resolved)",
                    at.display()
                ),
            ))
        }
    }

    /// Resolves `dest`, creating what is missing as `need` says, and returns
    /// its descriptor. Nothing is created outside the root, and nothing at all
    /// when the destination is refused.
    pub fn ensure(&self, dest: &Path, need: Need) -> Result<Resolved, PathError> {
        let mut parts = components(dest);
        if parts.is_empty() {
            let fd = self
                .root
                .try_clone()
                .map_err(|e| self.error(dest, format!("dup of the root: {e}")))?;
            return self.classify(dest, &parts, fd, need);
        }
        let mut links = 0;
        let mut races = 0;
        let mut i = 0;
        let mut parent = self
            .root
            .try_clone()
            .map_err(|e| self.error(dest, format!("dup of the root: {e}")))?;
        while i < parts.len() {
            let last = i + 1 == parts.len();
            let prefix = &parts[..=i];
            match self.resolve(prefix, !last) {
                Ok(fd) => {
                    if last {
                        return self.classify(dest, prefix, fd, need);
                    }
                    parent = fd;
                    i += 1;
                }
                Err(Errno::ENOENT) => {
                    // Missing, or a symlink to something missing: that one
                    // is expanded in place and its target made inside the root.
                    if let Some(target) = self.link_target(prefix) {
                        if last {
                            return Err(self.error(
                                dest,
                                format!(
                                    "{} is a symlink (-> {}) to nothing in the root: a mount needs a directory or file there",
                                    join(prefix).display(),
                                    target.to_string_lossy()
                                ),
                            ));
                        }
                        links += 1;
                        if links > MAX_SYMLINKS {
                            return Err(self.error(dest, "too many levels of symlinks (ELOOP)"));
                        }
                        let target = Path::new(&target);
                        let mut expanded: Vec<OsString> = if target.is_absolute() {
                            Vec::new()
                        } else {
                            parts[..i].to_vec()
                        };
                        expanded.extend(components(target));
                        expanded.extend(parts[i + 1..].iter().cloned());
                        parts = expanded;
                        i = 0;
                        parent = self
                            .root
                            .try_clone()
                            .map_err(|e| self.error(dest, format!("dup of the root: {e}")))?;
                        continue;
                    }
                    let name = &parts[i];
                    if name == ".." {
                        return Err(self.error(dest, "cannot be resolved inside the root"));
                    }
                    let made = match need {
                        Need::File if last => nix::fcntl::openat(
                            Some(parent.as_raw_fd()),
                            name.as_os_str(),
                            OFlag::O_CREAT
                                | OFlag::O_EXCL
                                | OFlag::O_NOFOLLOW
                                | OFlag::O_WRONLY
                                | OFlag::O_CLOEXEC,
                            Mode::from_bits_truncate(0o644),
                        )
                        .map(|fd| {
                            // SAFETY: openat just returned this descriptor to us alone.
                            drop(unsafe { OwnedFd::from_raw_fd(fd) })
                        }),
                        Need::Existing if last => Err(Errno::ENOENT),
                        _ => {
                            let mode = match need {
                                Need::Dir(m) if last => m,
                                _ => 0o755,
                            };
                            nix::sys::stat::mkdirat(
                                Some(parent.as_raw_fd()),
                                name.as_os_str(),
                                Mode::from_bits_truncate(mode),
                            )
                            .and_then(|()| {
                                // mkdir's mode went through the umask: set it
                                // exactly, on a descriptor (never by name: a
                                // name swapped for a symlink would be followed).
                                let fd = nix::fcntl::openat(
                                    Some(parent.as_raw_fd()),
                                    name.as_os_str(),
                                    OFlag::O_RDONLY
                                        | OFlag::O_DIRECTORY
                                        | OFlag::O_NOFOLLOW
                                        | OFlag::O_CLOEXEC,
                                    Mode::empty(),
                                )?;
                                // SAFETY: openat just returned this descriptor to us alone.
                                let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                                nix::sys::stat::fchmod(
                                    fd.as_raw_fd(),
                                    Mode::from_bits_truncate(mode),
                                )
                            })
                        }
                    };
                    match made {
                        Ok(()) => {}
                        // Made by someone else meanwhile (or swapped): look again.
                        Err(Errno::EEXIST) if races < MAX_RACES => races += 1,
                        Err(e) => {
                            return Err(self.error(
                                dest,
                                format!("creating {} inside the root: {e}", join(prefix).display()),
                            ))
                        }
                    }
                }
                Err(Errno::ENOTDIR) => {
                    return Err(self.error(
                        dest,
                        format!(
                            "{} is not a directory, so nothing can be made under it",
                            join(&parts[..i]).display()
                        ),
                    ))
                }
                Err(e) => {
                    return Err(self.error(
                        dest,
                        format!(
                            "{} cannot be resolved inside the root: {e}",
                            join(prefix).display()
                        ),
                    ))
                }
            }
        }
        Err(self.error(dest, "cannot be resolved inside the root"))
    }

    /// Makes a symlink `name` -> `target` in the directory `dir` resolved
    /// inside the root (the container's /dev links).
    pub fn symlink_in(&self, dir: &Resolved, name: &str, target: &str) -> Result<(), PathError> {
        nix::unistd::symlinkat(target, Some(dir.fd().as_raw_fd()), name)
            .map_err(|e| self.error(&dir.dest.join(name), format!("symlink -> {target}: {e}")))
    }

    /// The host path of a resolved destination, for messages and tests.
    pub fn host_path(resolved: &Resolved) -> Option<PathBuf> {
        std::fs::read_link(resolved.fd_path()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use std::os::unix::fs::symlink;

    /// A root and, beside it, a "host" directory that must stay untouched.
    fn hostile() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path().join("root");
        let host = t.path().join("host");
        std::fs::create_dir_all(root.join("tmp")).expect("mkdir");
        std::fs::create_dir_all(root.join("real")).expect("mkdir");
        std::fs::create_dir_all(&host).expect("mkdir");
        // Absolute symlink out: on the host it would reach `host`.
        symlink(&host, root.join("abs")).expect("symlink");
        // Relative symlink that climbs out.
        symlink("../../host", root.join("real/rel")).expect("symlink");
        symlink("/real", root.join("inside")).expect("symlink");
        symlink("/nowhere/deeper", root.join("dangling")).expect("symlink");
        symlink("loop2", root.join("loop1")).expect("symlink");
        symlink("loop1", root.join("loop2")).expect("symlink");
        std::fs::write(root.join("file"), "x").expect("write");
        (t, root, host)
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = walkdir(dir);
        v.sort();
        v
    }

    fn walkdir(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                out.push(e.path().display().to_string());
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    out.extend(walkdir(&e.path()));
                }
            }
        }
        out
    }

    #[rstest]
    #[case::absolute_symlink("/abs/newdir", "HOST/newdir")]
    #[case::climbing_symlink("/real/rel/newdir", "host/newdir")]
    #[case::dotdot("/../../../../x", "x")]
    #[case::dotdot_inside("/tmp/../../x/y", "x/y")]
    #[case::symlink_inside("/inside/d", "real/d")]
    #[case::dangling_made_inside("/dangling/d", "nowhere/deeper/d")]
    fn directories_are_made_inside_the_root(
        #[case] dest: &str,
        #[case] lands: &str,
        #[values(Resolver::Openat2, Resolver::Walk)] resolver: Resolver,
    ) {
        let (_t, root, host) = hostile();
        let before = listing(&host);
        let r = InRoot::with_resolver(&root, resolver).expect("root");
        let got = r.ensure(Path::new(dest), Need::Dir(0o755)).expect(dest);
        assert_eq!(got.kind, Kind::Dir);
        assert_eq!(listing(&host), before, "nothing made on the host");
        // `../../host` from /real climbs to the root and stops there; the
        // absolute link to the host directory restarts at the root.
        let host_inside = host
            .strip_prefix("/")
            .expect("absolute")
            .display()
            .to_string();
        let expected = root.join(lands.replace("HOST", &host_inside));
        assert!(expected.is_dir(), "{} made", expected.display());
        assert_eq!(
            InRoot::host_path(&got).map(|p| std::fs::canonicalize(p).expect("canon")),
            Some(std::fs::canonicalize(&expected).expect("canon"))
        );
    }

    #[rstest]
    fn files_are_made_inside_the_root(
        #[values(Resolver::Openat2, Resolver::Walk)] resolver: Resolver,
    ) {
        let (_t, root, host) = hostile();
        let r = InRoot::with_resolver(&root, resolver).expect("root");
        let got = r
            .ensure(Path::new("/abs/resolv.conf"), Need::File)
            .expect("file");
        assert_eq!(got.kind, Kind::Other);
        assert!(root.join("abs").is_symlink());
        assert!(root
            .join(host.strip_prefix("/").expect("abs"))
            .join("resolv.conf")
            .is_file());
        assert!(listing(&host).is_empty());
    }

    #[rstest]
    #[case::final_symlink("/abs", "is a symlink")]
    #[case::final_dangling("/dangling", "is a symlink (-> /nowhere/deeper)")]
    #[case::loop_("/loop1/x", "ELOOP")]
    #[case::under_a_file("/file/x", "is not a directory")]
    #[case::file_for_dir("/file", "is a file where a directory is needed")]
    fn refusals_name_the_destination_and_make_nothing(
        #[case] dest: &str,
        #[case] why: &str,
        #[values(Resolver::Openat2, Resolver::Walk)] resolver: Resolver,
    ) {
        let (_t, root, host) = hostile();
        let before = listing(root.parent().expect("parent"));
        let r = InRoot::with_resolver(&root, resolver).expect("root");
        let err = r
            .ensure(Path::new(dest), Need::Dir(0o755))
            .expect_err(dest)
            .to_string();
        assert!(err.contains(dest) && err.contains(why), "{err}");
        assert_eq!(listing(root.parent().expect("parent")), before);
        assert!(listing(&host).is_empty());
    }

    #[rstest]
    fn a_directory_where_a_file_is_needed_is_refused(
        #[values(Resolver::Openat2, Resolver::Walk)] resolver: Resolver,
    ) {
        let (_t, root, _host) = hostile();
        let r = InRoot::with_resolver(&root, resolver).expect("root");
        let err = r.ensure(Path::new("/tmp"), Need::File).expect_err("dir");
        assert!(err.to_string().contains("directory where a file"), "{err}");
    }

    #[rstest]
    fn existing_resolves_or_says_none(
        #[values(Resolver::Openat2, Resolver::Walk)] resolver: Resolver,
    ) {
        let (_t, root, _host) = hostile();
        let r = InRoot::with_resolver(&root, resolver).expect("root");
        assert!(r.existing(Path::new("/missing")).expect("ok").is_none());
        assert_eq!(
            r.existing(Path::new("/inside/../tmp"))
                .expect("ok")
                .map(|x| x.kind),
            Some(Kind::Dir)
        );
        assert!(r.existing(Path::new("/abs")).is_err());
    }

    #[test]
    fn modes_are_exact_despite_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        let (_t, root, _host) = hostile();
        let r = InRoot::open(&root).expect("root");
        r.ensure(Path::new("/t1"), Need::Dir(0o1777)).expect("dir");
        let mode = std::fs::metadata(root.join("t1"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o1777);
    }
}
