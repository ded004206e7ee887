//! `kcell exec`: a new process in a running container. It joins the
//! container's cgroup first (the container has no cgroupfs to do it from
//! inside), then every namespace at once through a pidfd (setns(2) with
//! CLONE_NEW* flags, Linux 5.8; older kernels get the /proc/PID/ns files one
//! by one, the user namespace first and the mount namespace last), and forks:
//! only a child enters the PID and time namespaces.

use crate::container::{exec_in_container, ExitKind, RunError};
use crate::namespace::Namespace;
use crate::state::{StateDir, StateError};
use crate::sys::{SysContext, SysError};
use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::sys::wait::{waitpid, WaitStatus};
use std::os::fd::{FromRawFd, OwnedFd};

/// Errors of exec.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The container's record.
    #[error(transparent)]
    State(#[from] StateError),
    /// The container exists but its process does not run.
    #[error("container '{0}' is not running (kcell ps -a shows its status)")]
    NotRunning(String),
    /// A system call failed.
    #[error(transparent)]
    Sys(#[from] SysError),
    /// Joining its cgroup failed.
    #[error(transparent)]
    Cgroup(#[from] crate::cgroup::CgroupError),
    /// The command could not be started.
    #[error(transparent)]
    Run(#[from] RunError),
}

fn pidfd_open(pid: i32) -> nix::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the kernel just returned this descriptor to us alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Joins every namespace of `pid` in `set` (all at once by pidfd, else one by one).
fn join_namespaces(pid: i32, set: &crate::namespace::NamespaceSet) -> Result<(), SysError> {
    let flags = CloneFlags::from_bits_retain(set.flags_except(&[]));
    match pidfd_open(pid) {
        Ok(fd) => match nix::sched::setns(&fd, flags) {
            Ok(()) => return Ok(()),
            // A kernel before 5.8 takes no pidfd in setns: fall through.
            Err(Errno::EINVAL) => {}
            Err(e) => {
                return Err(SysError {
                    call: "setns",
                    subject: format!("pidfd of {pid}"),
                    errno: e,
                })
            }
        },
        Err(Errno::ENOSYS) => {}
        Err(e) => {
            return Err(SysError {
                call: "pidfd_open",
                subject: pid.to_string(),
                errno: e,
            })
        }
    }
    // Open all first: once in the mount namespace, /proc is the container's.
    let order = [
        Namespace::User,
        Namespace::Uts,
        Namespace::Ipc,
        Namespace::Net,
        Namespace::Cgroup,
        Namespace::Pid,
        Namespace::Time,
        Namespace::Mnt,
    ];
    let mut files = Vec::new();
    for ns in order.into_iter().filter(|ns| set.contains(*ns)) {
        let path = format!("/proc/{pid}/ns/{}", ns.proc_name());
        files.push((ns, std::fs::File::open(&path).sys("open", &path)?));
    }
    for (ns, f) in files {
        nix::sched::setns(f, CloneFlags::from_bits_retain(ns.clone_flag()))
            .sys("setns", format!("{ns} of {pid}"))?;
    }
    Ok(())
}

/// Runs `command` in the running container `id`, with `extra_env` added to
/// its environment; returns how the command ended.
pub fn exec(
    state: &StateDir,
    id: &str,
    command: &[String],
    extra_env: &[String],
) -> Result<ExitKind, ExecError> {
    let rec = state.read(id)?;
    let pid = match rec.pid {
        Some(pid) if rec.is_running() => pid,
        _ => return Err(ExecError::NotRunning(id.to_string())),
    };
    // Its cgroup, when it has one of its own (a root-run container).
    let cgroup = crate::cgroup::ContainerCgroup::of_pid(pid)?;
    if cgroup
        .dirs
        .iter()
        .any(|(_, d)| d.ends_with(format!("{}/{id}", crate::cgroup::PARENT)))
    {
        cgroup.add_process(std::process::id() as i32)?;
    }
    // A container that shares another's network namespace (--net
    // container:ID) has none of its own, yet exec must land in it too.
    let mut set = rec.namespaces.clone();
    let same_net = |a: String, b: &str| std::fs::read_link(a).ok() == std::fs::read_link(b).ok();
    if !same_net(format!("/proc/{pid}/ns/net"), "/proc/self/ns/net") {
        set.insert(Namespace::Net);
    }
    join_namespaces(pid, &set)?;
    let mut env = rec.env.clone();
    for e in extra_env {
        let key = e.split('=').next().unwrap_or_default();
        env.retain(|x| x.split('=').next() != Some(key));
        env.push(e.clone());
    }
    let in_user_ns = rec.namespaces.contains(Namespace::User);
    // SAFETY: single-threaded; the child only sets ids, chdirs and execs.
    match unsafe { nix::unistd::fork() }.sys("fork", "exec'd process")? {
        nix::unistd::ForkResult::Child => {
            if in_user_ns {
                let root_g = nix::unistd::Gid::from_raw(0);
                let root_u = nix::unistd::Uid::from_raw(0);
                let _ = nix::unistd::setresgid(root_g, root_g, root_g);
                let _ = nix::unistd::setresuid(root_u, root_u, root_u);
            }
            let _ = nix::unistd::chdir("/");
            // The same limits as the container's first process.
            if let Err(e) = rec.confinement.apply() {
                eprintln!("kcell: {e}");
                std::process::exit(125);
            }
            let (code, message) = exec_in_container(command, &env);
            eprintln!("kcell: {message}");
            std::process::exit(code)
        }
        nix::unistd::ForkResult::Parent { child } => loop {
            match waitpid(child, None) {
                Err(Errno::EINTR) => continue,
                Ok(WaitStatus::Exited(_, c)) => return Ok(ExitKind::Exited(c)),
                Ok(WaitStatus::Signaled(_, s, _)) => return Ok(ExitKind::Signaled(s as i32)),
                Ok(_) => continue,
                Err(e) => {
                    return Err(SysError {
                        call: "waitpid",
                        subject: child.to_string(),
                        errno: e,
                    }
                    .into())
                }
            }
        },
    }
}
