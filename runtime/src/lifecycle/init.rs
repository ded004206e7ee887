//! The container's first process (and, through [`finalize`] and
//! [`exec_program`], every exec'd one): what it does between being cloned
//! and exec'ing the container's program. Everything here runs in the
//! container's namespaces; errors go back to the runtime as a
//! [`Message::Failed`] naming the step, call and value.

use super::channel::{Channel, Message};
use super::hooks;
use crate::namespace::Namespace;
use crate::rootfs::{self, RootfsError};
use crate::spec::{ContainerSpec, Process, UserMapping};
use crate::sys::{SysContext, SysError};
use nix::errno::Errno;
use nix::sys::signal::{self, SigSet, SigmaskHow, Signal};
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// What the bootstrap and the first process inherit from the runtime.
pub(super) struct InitSide<'a> {
    pub(super) spec: &'a ContainerSpec,
    pub(super) user_map: &'a UserMapping,
    /// The child's end of the channel.
    pub(super) chan: &'a Channel,
    /// O_PATH of the exec FIFO.
    pub(super) fifo: &'a OwnedFd,
    /// A connection to the console socket (process.terminal).
    pub(super) console: Option<&'a OwnedFd>,
    /// The runtime returns once the container is created (OCI create): the
    /// first process must not die with it.
    pub(super) detached: bool,
    /// Descriptors 3..3+N kept for the program.
    pub(super) preserve_fds: u32,
    /// The runtime, the bootstrap's parent.
    pub(super) runtime_pid: nix::unistd::Pid,
}

/// Stage 2. Never returns.
pub(super) fn init_main(side: &InitSide) -> ! {
    // The runtime is the parent (CLONE_PARENT): die with it while it sets
    // the container up. (getppid() is 0 here in a new PID namespace: a
    // runtime already gone shows as the closed channel below.)
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    own_pages_before_placement();
    if side.chan.expect("Placed").is_err() {
        // The runtime could not place this process; it reports why.
        std::process::exit(125);
    }
    let program = match prepare(side) {
        Ok(p) => p,
        Err((code, message)) => {
            side.chan.fail(code, message);
            std::process::exit(code)
        }
    };
    if side.detached {
        // OCI create returns now; the container outlives it.
        let _ = nix::sys::prctl::set_pdeathsig(None);
    }
    if side.chan.send(&Message::Ready).is_err() {
        std::process::exit(125);
    }
    // From here on an OCI create has returned: a failure is also told on
    // the container's stderr, where its caller reads it.
    let fail = |code: i32, message: String| -> ! {
        if side.detached {
            eprintln!("kcell-oci: {message}");
        }
        side.chan.fail(code, message);
        std::process::exit(code)
    };
    if let Err(e) = wait_for_start(side.fifo) {
        fail(125, e.to_string());
    }
    let state = serde_json::json!({
        "ociVersion": super::OCI_VERSION,
        "id": side.spec.id,
        "status": "running",
        "pid": std::process::id(),
        "bundle": side.spec.bundle.as_ref().map_or(String::new(), |b| b.display().to_string()),
    })
    .to_string();
    if let Err(e) = hooks::run("startContainer", &side.spec.hooks.start_container, &state) {
        fail(125, e.to_string());
    }
    if let Err(e) = finalize(&side.spec.process) {
        fail(125, e.to_string());
    }
    keep_only_preserved_fds(side.preserve_fds);
    let (code, message) = exec_program(&program, &side.spec.process);
    fail(code, message)
}

/// The largest mapping whose resident pages are made this process's own.
const OWN_PAGES_MAX_MAPPING: usize = 16 << 20;

/// Makes this process's copy of the runtime's memory its own before it joins
/// the container's cgroup. A page a forked process first writes is copied
/// then, and charged to the cgroup it is in at that moment; without this,
/// the copies of the runtime's heap, stack and data that the setup below
/// dirties were charged to the container, and a tight memory limit failed
/// a start whose program would have fit (the smallest working limit,
/// BENCHMARKS.md section 1b). They are the runtime's pages, gone at exec:
/// charging them to the runtime's own cgroup is the truer account. Cost: one
/// write per resident private writable page (about 0.1 ms).
fn own_pages_before_placement() {
    // The stack the setup will grow into.
    std::hint::black_box(&mut [0u8; 32 << 10]);
    use procfs::process::{MMPermissions, Process};
    let Ok(maps) = Process::myself().and_then(|p| p.maps()) else {
        return;
    };
    // SAFETY: sysconf has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let private_writable = MMPermissions::WRITE | MMPermissions::PRIVATE;
    for map in &maps {
        let (Ok(start), Ok(end)) = (
            usize::try_from(map.address.0),
            usize::try_from(map.address.1),
        ) else {
            continue;
        };
        if !map.perms.contains(private_writable) || end - start > OWN_PAGES_MAX_MAPPING {
            continue;
        }
        let mut resident = vec![0u8; (end - start).div_ceil(page)];
        // SAFETY: [start, end) is a mapping of this process (from its maps),
        // `resident` has one byte per page of it.
        if unsafe {
            libc::mincore(
                start as *mut libc::c_void,
                end - start,
                resident.as_mut_ptr(),
            )
        } != 0
        {
            continue;
        }
        for (i, r) in resident.iter().enumerate() {
            if r & 1 == 1 {
                let p = (start + i * page) as *mut u8;
                // SAFETY: a resident page of a private writable mapping of this
                // single-threaded process; the byte is written back unchanged.
                unsafe { std::ptr::write_volatile(p, std::ptr::read_volatile(p)) };
            }
        }
    }
}

fn code_of(e: &RootfsError) -> (i32, String) {
    (125, e.to_string())
}

/// Everything up to the wait for start; returns the program to exec.
fn prepare(side: &InitSide) -> Result<PathBuf, (i32, String)> {
    let spec = side.spec;
    let sys = |e: SysError| (125, e.to_string());
    if spec.namespaces.contains(Namespace::Cgroup) {
        // In the container's cgroup now: the namespace takes it as its root.
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP)
            .sys("unshare", "cgroup")
            .map_err(sys)?;
    } else if let Some((_, path)) = spec.joins.iter().find(|(n, _)| *n == Namespace::Cgroup) {
        let f = std::fs::File::open(path)
            .sys("open", path.display())
            .map_err(sys)?;
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWCGROUP)
            .sys("setns", format!("cgroup {}", path.display()))
            .map_err(sys)?;
    }
    let user_ns = if !spec.namespaces.contains(Namespace::User) {
        rootfs::UserNs::None
    } else if side.user_map.uids.outside_of(0).is_some() {
        rootfs::UserNs::Mapped
    } else {
        rootfs::UserNs::Unmapped
    };
    let mut before_pivot = || -> Result<(), RootfsError> {
        if !spec.hooks.prestart.is_empty() || !spec.hooks.create_runtime.is_empty() {
            side.chan
                .send(&Message::RunHooks)
                .and_then(|()| side.chan.expect("HooksDone").map(|_| ()))
                .map_err(|e| RootfsError::Step(e.to_string()))?;
        }
        let state = serde_json::json!({
            "ociVersion": super::OCI_VERSION,
            "id": spec.id,
            "status": "creating",
            "pid": std::process::id(),
            "bundle": spec.bundle.as_ref().map_or(String::new(), |b| b.display().to_string()),
        })
        .to_string();
        hooks::run("createContainer", &spec.hooks.create_container, &state)
            .map_err(|e| RootfsError::Step(e.to_string()))
    };
    rootfs::enter(spec, user_ns, &mut before_pivot).map_err(|e| code_of(&e))?;
    if let Some(name) = &spec.hostname {
        nix::unistd::sethostname(name)
            .sys("sethostname", name)
            .map_err(sys)?;
    }
    if let Some(name) = &spec.domainname {
        // SAFETY: a pointer and length of a live string.
        let rc = unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) };
        Errno::result(rc).sys("setdomainname", name).map_err(sys)?;
    }
    for (key, value) in &spec.sysctl {
        let path = Path::new("/proc/sys").join(key.replace('.', "/"));
        std::fs::write(&path, value)
            .sys(
                "write",
                format!("'{value}' to {} (sysctl {key})", path.display()),
            )
            .map_err(sys)?;
    }
    rootfs::seal(spec).map_err(|e| code_of(&e))?;
    if spec.namespaces.contains(Namespace::Net) {
        crate::netdev::set_up("lo").map_err(sys)?;
    }
    for r in &spec.process.rlimits {
        let lim = libc::rlimit {
            rlim_cur: r.soft,
            rlim_max: r.hard,
        };
        // SAFETY: a valid rlimit for a resource number from the config.
        let rc = unsafe { libc::setrlimit(r.resource as _, &lim) };
        Errno::result(rc)
            .sys(
                "setrlimit",
                format!("{} soft {} hard {}", r.resource, r.soft, r.hard),
            )
            .map_err(sys)?;
    }
    if let Some(adj) = spec.process.oom_score_adj {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .sys("write", format!("{adj} to /proc/self/oom_score_adj"))
            .map_err(sys)?;
    }
    if let Some(p) = spec.personality {
        // SAFETY: personality takes an integer.
        let rc = unsafe { libc::personality(p as libc::c_ulong) };
        Errno::result(rc).sys("personality", p).map_err(sys)?;
    }
    if spec.new_keyring {
        // A session keyring of its own (as runc); kernels without keys: no matter.
        // SAFETY: keyctl(KEYCTL_JOIN_SESSION_KEYRING, NULL).
        unsafe { libc::syscall(libc::SYS_keyctl, 1, 0usize) };
    }
    let cwd = &spec.process.cwd;
    nix::unistd::chdir(cwd.as_path())
        .sys("chdir", cwd.display())
        .map_err(sys)?;
    if let Some(mask) = spec.process.umask {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
    }
    let program = resolve_program(&spec.process)?;
    match side.console {
        Some(socket) => super::console::attach(socket, spec.process.console_size).map_err(sys)?,
        None => {
            // A session of its own: not part of the caller's terminal job.
            let _ = nix::unistd::setsid();
        }
    }
    Ok(program)
}

/// Opens the exec FIFO for writing (it blocks until `start` opens it for
/// reading) and writes the byte `start` waits for.
fn wait_for_start(fifo: &OwnedFd) -> Result<(), SysError> {
    let path = format!("/proc/self/fd/{}", fifo.as_raw_fd());
    let fd = nix::fcntl::open(
        path.as_str(),
        nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .sys("open", "the exec FIFO")?;
    let written = nix::unistd::write(
        // SAFETY: open just returned this descriptor; it is closed below.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
        b"0",
    );
    let _ = nix::unistd::close(fd);
    written.map(|_| ()).sys("write", "the exec FIFO")
}

/// The program of `process`, looked up in its PATH as the container sees
/// it: (127, why) when it is not found, (126, why) when not executable.
pub(super) fn resolve_program(process: &Process) -> Result<PathBuf, (i32, String)> {
    let path_var = process
        .env_var("PATH")
        .unwrap_or(crate::spec::DEFAULT_PATH)
        .to_string();
    let Some(cmd) = process.args.first() else {
        return Err((127, "no command given".to_string()));
    };
    let candidates: Vec<PathBuf> = if cmd.contains('/') {
        vec![PathBuf::from(cmd)]
    } else {
        path_var
            .split(':')
            .map(|d| Path::new(d).join(cmd))
            .collect()
    };
    match candidates.into_iter().find(|p| p.is_file()) {
        Some(p) => Ok(p),
        None => Err((
            127,
            format!("exec '{cmd}': executable file not found in the container (PATH {path_var}): no such file or directory"),
        )),
    }
}

/// The process's user, capabilities, no_new_privs and seccomp filter, in
/// the order that lets each step still be made: the filter first when
/// no_new_privs is not set (installing it then needs CAP_SYS_ADMIN), the
/// bounding set before the user switch (which keeps the permitted set),
/// the other sets after it.
pub(super) fn finalize(p: &Process) -> Result<(), SysError> {
    let filter = p
        .seccomp
        .as_ref()
        .map(|profile| crate::seccomp::compile(profile).map(|f| (f, profile.flags)))
        .transpose()
        .map_err(|e| SysError {
            call: "compile",
            subject: format!("seccomp profile: {e}"),
            errno: Errno::EINVAL,
        })?;
    if !p.no_new_privileges {
        if let Some((f, flags)) = &filter {
            crate::seccomp::install(f, *flags)?;
        }
    }
    crate::caps::drop_bounding(p.capabilities.bounding)?;
    crate::caps::keep_caps(true)?;
    // A user namespace without any mapping has no ids to switch to: the
    // process stays the overflow uid it reads as (user_namespaces(7)).
    let unmapped = std::fs::read_to_string("/proc/self/uid_map").is_ok_and(|m| m.trim().is_empty());
    if !unmapped {
        switch_user(p)?;
    }
    crate::caps::keep_caps(false)?;
    crate::caps::apply(&p.capabilities)?;
    if p.no_new_privileges {
        crate::caps::no_new_privs()?;
        if let Some((f, flags)) = &filter {
            crate::seccomp::install(f, *flags)?;
        }
    }
    Ok(())
}

fn switch_user(p: &Process) -> Result<(), SysError> {
    let gid = nix::unistd::Gid::from_raw(p.gid);
    let mut groups: Vec<nix::unistd::Gid> = p
        .additional_gids
        .iter()
        .map(|g| nix::unistd::Gid::from_raw(*g))
        .collect();
    if !groups.contains(&gid) && p.additional_gids.is_empty() {
        groups.push(gid);
    }
    // Denied in a user namespace whose setgroups an unprivileged caller denied.
    match nix::unistd::setgroups(&groups) {
        Ok(()) | Err(Errno::EPERM) => {}
        Err(e) => {
            return Err(SysError {
                call: "setgroups",
                subject: format!("{:?}", p.additional_gids),
                errno: e,
            })
        }
    }
    nix::unistd::setresgid(gid, gid, gid).sys("setresgid", gid)?;
    let uid = nix::unistd::Uid::from_raw(p.uid);
    nix::unistd::setresuid(uid, uid, uid).sys("setresuid", uid)?;
    Ok(())
}

/// Marks every descriptor from 3 + `preserve` on close-on-exec, so the
/// program gets stdio and the preserved ones only.
pub(super) fn keep_only_preserved_fds(preserve: u32) {
    let first = 3 + preserve;
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd >= first as i32)
        .collect();
    for fd in fds {
        let _ = nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
    }
}

/// execve of `program` with the process's argv and environment, signals
/// as a fresh process has them (default dispositions, nothing blocked).
/// Returns only on failure: the status to report and why.
pub(super) fn exec_program(program: &Path, p: &Process) -> (i32, String) {
    // Rust's runtime ignores SIGPIPE; an exec'd shell pipeline must not.
    for s in [
        Signal::SIGPIPE,
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
    ] {
        // SAFETY: restoring the default disposition installs no handler code.
        let _ = unsafe { signal::signal(s, signal::SigHandler::SigDfl) };
    }
    let _ = signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    let to_c = |s: &str| CString::new(s).unwrap_or_default();
    let argv: Vec<CString> = p.args.iter().map(|a| to_c(a)).collect();
    let envp: Vec<CString> = p.env.iter().map(|e| to_c(e)).collect();
    let prog = to_c(&program.to_string_lossy());
    let err = nix::unistd::execve(&prog, &argv, &envp)
        .err()
        .unwrap_or(Errno::EINVAL);
    let code = if err == Errno::ENOENT { 127 } else { 126 };
    let why = if code == 126 {
        ": permission denied"
    } else {
        ": no such file or directory"
    };
    (code, format!("exec {}: {err}{why}", program.display()))
}
