//! `exec`: a new process in a running container. A helper child joins the
//! container's cgroup (before any namespace: the cgroupfs it writes is the
//! host's), then every namespace in which the container differs from the
//! runtime, all at once through a pidfd of the container's first process
//! (setns(2) with several flags, Linux 5.8; older kernels get the
//! /proc/PID/ns files one by one, user first and mount last), and clones
//! the process with CLONE_PARENT: only a child enters the PID and time
//! namespaces, and as the runtime's child it is waited for (or, detached,
//! inherited by the caller's subreaper). The process then takes its user,
//! capabilities and filter as the first process did, and execs.

use super::channel::{self, Message};
use super::init;
use super::launch::{clone_process, reap, write_pid_file};
use super::run::{forwarded_and_chld, wait_forwarding, ExitKind};
use super::LifecycleError;
use crate::namespace::Namespace;
use crate::spec::Process;
use crate::state::{StateDir, Status};
use crate::sys::{SysContext, SysError};
use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::sys::signal::{self, SigSet, SigmaskHow};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;

/// How the caller wants the process.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// Return once the program is exec'd (its PID in `pid_file`), not when it ends.
    pub detach: bool,
    /// Where to write its host PID.
    pub pid_file: Option<PathBuf>,
    /// An AF_UNIX socket for the terminal's master (process.terminal).
    pub console_socket: Option<PathBuf>,
    /// Descriptors 3..3+N it keeps.
    pub preserve_fds: u32,
}

/// What became of the process: its PID, and how it ended unless detached.
#[derive(Debug, Clone, Copy)]
pub struct Execed {
    /// Host PID.
    pub pid: i32,
    /// How it ended (None when detached).
    pub exit: Option<ExitKind>,
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

/// The namespaces in which `pid` differs from this process.
fn differing(pid: i32) -> Vec<Namespace> {
    Namespace::ALL
        .into_iter()
        .filter(|ns| ns.supported())
        .filter(|ns| {
            let theirs = std::fs::read_link(format!("/proc/{pid}/ns/{}", ns.proc_name()));
            let ours = std::fs::read_link(format!("/proc/self/ns/{}", ns.proc_name()));
            theirs.is_ok() && theirs.ok() != ours.ok()
        })
        .collect()
}

/// Joins `namespaces` of `pid` (all at once by pidfd, else one by one).
fn join_namespaces(pid: i32, namespaces: &[Namespace]) -> Result<(), SysError> {
    let flags = namespaces.iter().fold(0, |f, ns| f | ns.clone_flag());
    match pidfd_open(pid) {
        Ok(fd) => match nix::sched::setns(&fd, CloneFlags::from_bits_retain(flags)) {
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
    for ns in order.into_iter().filter(|ns| namespaces.contains(ns)) {
        let path = format!("/proc/{pid}/ns/{}", ns.proc_name());
        files.push((ns, std::fs::File::open(&path).sys("open", &path)?));
    }
    for (ns, f) in files {
        nix::sched::setns(f, CloneFlags::from_bits_retain(ns.clone_flag()))
            .sys("setns", format!("{ns} of {pid}"))?;
    }
    Ok(())
}

/// Runs `process` in the running container `id`.
pub fn exec(
    state: &StateDir,
    id: &str,
    process: &Process,
    opts: &ExecOptions,
) -> Result<Execed, LifecycleError> {
    let rec = super::lookup(state, id)?;
    if !matches!(rec.status(), Status::Running | Status::Created) {
        return Err(LifecycleError::NotRunning(id.to_string()));
    }
    let target = rec.pid.unwrap_or(0);
    let cgroup = rec.cgroup().filter(|c| c.exists());
    let namespaces = differing(target);
    let console = opts
        .console_socket
        .as_deref()
        .map(super::console::connect)
        .transpose()?;
    let (ours, theirs) = channel::pair("exec'd process", "runtime")?;
    let blocked = forwarded_and_chld();
    let mut old_mask = SigSet::empty();
    let _ = signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&blocked), Some(&mut old_mask));
    let runtime_pid = nix::unistd::getpid();
    // SAFETY: single-threaded; the child only makes system calls and clones.
    let helper = match unsafe { nix::unistd::fork() }.sys("fork", "exec helper")? {
        nix::unistd::ForkResult::Child => helper_main(
            &theirs,
            cgroup.as_ref(),
            target,
            &namespaces,
            process,
            console.as_ref(),
            opts.preserve_fds,
            runtime_pid,
        ),
        nix::unistd::ForkResult::Parent { child } => child,
    };
    drop(theirs);
    drop(console);
    let result = (|| -> Result<Execed, LifecycleError> {
        let got = ours.expect("Pid");
        let _ = reap(helper);
        let pid = match got? {
            Message::Pid(pid) => pid,
            other => {
                return Err(channel::ChannelError::Unexpected(
                    "exec helper",
                    format!("{other:?}"),
                    "Pid",
                )
                .into())
            }
        };
        if let Some(path) = &opts.pid_file {
            write_pid_file(path, pid)?;
        }
        // End of the channel: exec'd. A message: it could not be.
        if let Some(Message::Failed { code, message }) = ours.recv()? {
            let _ = reap(nix::unistd::Pid::from_raw(pid));
            return Err(LifecycleError::Setup { code, message });
        }
        let exit = if opts.detach {
            None
        } else {
            Some(wait_forwarding(nix::unistd::Pid::from_raw(pid), &blocked)?)
        };
        Ok(Execed { pid, exit })
    })();
    let _ = signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old_mask), None);
    result
}

#[allow(clippy::too_many_arguments)]
fn helper_main(
    chan: &channel::Channel,
    cgroup: Option<&crate::cgroup::ContainerCgroup>,
    target: i32,
    namespaces: &[Namespace],
    process: &Process,
    console: Option<&OwnedFd>,
    preserve_fds: u32,
    runtime_pid: nix::unistd::Pid,
) -> ! {
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    if nix::unistd::getppid() != runtime_pid {
        std::process::exit(125);
    }
    let joined = cgroup
        .map_or(Ok(()), |cg| cg.add_process(std::process::id() as i32))
        .and_then(|()| join_namespaces(target, namespaces));
    if let Err(e) = joined {
        chan.fail(125, e.to_string());
        std::process::exit(125);
    }
    match clone_process(libc::CLONE_PARENT) {
        Ok(None) => process_main(chan, process, console, preserve_fds),
        Ok(Some(pid)) => {
            let _ = chan.send(&Message::Pid(pid.as_raw()));
            std::process::exit(0)
        }
        Err(e) => {
            chan.fail(125, format!("clone of the exec'd process: {e}"));
            std::process::exit(125)
        }
    }
}

fn process_main(
    chan: &channel::Channel,
    process: &Process,
    console: Option<&OwnedFd>,
    preserve_fds: u32,
) -> ! {
    let prepared = nix::unistd::chdir(process.cwd.as_path())
        .sys("chdir", process.cwd.display())
        .map_err(|e| (125, e.to_string()))
        .and_then(|()| init::resolve_program(process))
        .and_then(|program| {
            match console {
                Some(socket) => super::console::attach(socket, process.console_size)
                    .map_err(|e| (125, e.to_string()))?,
                None => {
                    let _ = nix::unistd::setsid();
                }
            }
            init::finalize(process).map_err(|e| (125, e.to_string()))?;
            Ok(program)
        });
    let program = match prepared {
        Ok(p) => p,
        Err((code, message)) => {
            chan.fail(code, message);
            std::process::exit(code)
        }
    };
    init::keep_only_preserved_fds(preserve_fds);
    let (code, message) = init::exec_program(&program, process);
    chan.fail(code, message);
    std::process::exit(code)
}
