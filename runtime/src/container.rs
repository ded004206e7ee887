//! Running a container. Three processes take part:
//!
//! * the **runtime** (this process): validates, writes the child's uid_map and
//!   gid_map while it waits on a pipe (user_namespaces(7)), places the
//!   container's first process in its cgroup, forwards signals, and returns
//!   the command's status;
//! * the **monitor** (stage 1), cloned with CLONE_NEWUSER when asked: once
//!   mapped it unshares the other namespaces, sets the time namespace's
//!   offsets (they can only be written before a process enters it), forks the
//!   first process and waits for it. It never joins the container's cgroup,
//!   so none of the runtime's own memory or tasks count against its limits;
//! * the container's **first process** (stage 2): PID 1 of the new PID
//!   namespace. It waits at a gate until the runtime has put it in the
//!   cgroup, unshares the cgroup namespace (which takes the cgroup it is in
//!   as its root), builds the root, sets the hostname, brings up `lo`, execs.
//!
//! The split mirrors runc's nsexec: unsharing the time and PID namespaces only
//! affects children, and an unprivileged caller can only do that after it is
//! root in its own user namespace. Each child dies with its parent
//! (PR_SET_PDEATHSIG), so killing the runtime ends the container.

use crate::namespace::{Namespace, NamespaceError};
use crate::rootfs::{self, RootfsError};
use crate::spec::{ContainerSpec, SpecError};
use crate::sys::{SysContext, SysError};
use nix::errno::Errno;
use nix::sys::signal::{self, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{Gid, Pid, Uid};
use std::ffi::CString;
use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Errors of a container run that are the runtime's (exit status 125), or the
/// command's failure to start (126/127, as shells and Docker report it).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The spec was refused before anything was made.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A namespace was asked for that the kernel lacks.
    #[error(transparent)]
    Namespace(#[from] NamespaceError),
    /// A system call of the runtime failed.
    #[error(transparent)]
    Sys(#[from] SysError),
    /// The monitor or the container's first process failed before exec.
    #[error("{0}")]
    Setup(String),
    /// exec of the command failed (126: not executable, 127: not found).
    #[error("{message}")]
    Exec {
        /// 126 or 127.
        code: i32,
        /// What failed.
        message: String,
    },
    /// An error of the cgroup layer.
    #[error(transparent)]
    Cgroup(#[from] crate::cgroup::CgroupError),
    /// An error of the state directory.
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    /// An error of container networking (bridge, veth, lease, NAT).
    #[error(transparent)]
    Net(#[from] crate::net::NetError),
}

impl RunError {
    /// The exit status the CLI reports for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Exec { code, .. } => *code,
            _ => 125,
        }
    }
}

/// How the container's first process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum ExitKind {
    /// exit(2) with this status.
    Exited(i32),
    /// Killed by this signal.
    Signaled(i32),
}

impl ExitKind {
    /// The shell convention: the status, or 128 + the signal.
    pub fn code(self) -> i32 {
        match self {
            ExitKind::Exited(c) => c,
            ExitKind::Signaled(s) => 128 + s,
        }
    }
}

/// A finished container run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    /// How the first process ended.
    pub exit: ExitKind,
    /// Its PID as the host saw it.
    pub host_pid: i32,
    /// Wall time of each phase of the run, for `--timings`.
    pub timings: Vec<(&'static str, Duration)>,
}

/// Signals the runtime forwards to the container's first process.
const FORWARDED: [Signal; 6] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

fn forwarded_and_chld() -> SigSet {
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(s);
    }
    set.add(Signal::SIGCHLD);
    set
}

/// Runs `spec` to completion in the foreground, without a state record.
pub fn run(spec: &ContainerSpec) -> Result<Outcome, RunError> {
    run_recorded(spec, None, &mut |_| {})
}

/// Runs `spec` to completion, keeping its record in `state` while it lives
/// (so ps, exec and stop find it) and calling `started` with the host PID of
/// the first process once its command has been exec'd.
pub fn run_recorded(
    spec: &ContainerSpec,
    state: Option<&crate::state::StateDir>,
    started: &mut dyn FnMut(i32),
) -> Result<Outcome, RunError> {
    spec.validate()?;
    spec.namespaces.check_supported()?;
    let Some(state) = state else {
        if spec.network.is_some() {
            return Err(RunError::Setup(
                "--net bridge needs a state directory for its address lease".into(),
            ));
        }
        if !spec.dns.is_empty() {
            let path = std::env::temp_dir().join(format!("kcell-resolv-{}.conf", spec.id));
            let result = with_resolv_conf(spec, &path)
                .and_then(|spec| run_inner(&spec, &mut |_| Ok(()), started));
            let _ = fs::remove_file(&path);
            return result;
        }
        return run_inner(spec, &mut |_| Ok(()), started);
    };
    let mut record = crate::state::Record {
        id: spec.id.clone(),
        rootfs: spec.rootfs.clone(),
        command: spec.command.clone(),
        env: spec.environment(),
        namespaces: spec.namespaces.clone(),
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        pid: None,
        start_time: None,
        runtime_pid: std::process::id() as i32,
        phase: crate::state::Phase::Creating,
        image: spec.overlay.as_ref().map(|o| o.image.clone()),
        overlay_dir: spec.overlay.as_ref().map(|o| o.dir.clone()),
        lease: None,
        host_links: Vec::new(),
        netns_file: None,
        confinement: spec.confinement,
    };
    // The record exists before anything it names is made.
    state.create(&record)?;
    crate::fault::point("after-record");
    let result = prepare_network(spec, state, &mut record).and_then(|()| {
        crate::fault::point("after-lease");
        let with_dns;
        let spec = if spec.dns.is_empty() {
            spec
        } else {
            with_dns = with_resolv_conf(spec, &state.resolv_conf(&spec.id))?;
            &with_dns
        };
        let lease = record.lease.clone();
        run_inner(
            spec,
            &mut |pid| {
                record.pid = Some(pid);
                record.start_time = crate::state::start_time(pid);
                record.phase = crate::state::Phase::Running;
                // Kept network namespaces are for root (a bind mount on the host).
                if spec.namespaces.contains(Namespace::Net) && Uid::effective().is_root() {
                    record.netns_file = Some(state.netns_file(&spec.id));
                }
                state.write(&record)?;
                crate::fault::point("after-clone");
                connect_network(pid, &record, lease.as_ref())?;
                crate::fault::point("after-veth");
                Ok(())
            },
            started,
        )
    });
    // The record on disk may name more than this process made (`net
    // attach` adds links to a running container).
    let record = state.read(&spec.id).unwrap_or(record);
    release(state, &record);
    state.remove(&spec.id)?;
    result
}

/// Leases the container's bridge address (making the bridge when it is the
/// first) and records it with the host-side link name, before either exists.
fn prepare_network(
    spec: &ContainerSpec,
    state: &crate::state::StateDir,
    record: &mut crate::state::Record,
) -> Result<(), RunError> {
    let Some(req) = &spec.network else {
        return Ok(());
    };
    record.host_links = vec![crate::net::network::host_link_name(&spec.id, 0)];
    state.write(record)?;
    record.lease = Some(state.networks().acquire(req, &spec.id)?);
    state.write(record)?;
    Ok(())
}

/// Before the container's first process may run: its network namespace
/// bind-mounted under the state directory, and its veth on the bridge.
fn connect_network(
    pid: i32,
    record: &crate::state::Record,
    lease: Option<&crate::net::network::Lease>,
) -> Result<(), RunError> {
    let ns_path = format!("/proc/{pid}/ns/net");
    if let Some(file) = &record.netns_file {
        fs::File::create(file).sys("create", file.display())?;
        nix::mount::mount(
            Some(ns_path.as_str()),
            file,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .sys("mount --bind", format!("{ns_path} on {}", file.display()))?;
    }
    if let (Some(lease), Some(host_link)) = (lease, record.host_links.first()) {
        let netns = fs::File::open(&ns_path).sys("open", &ns_path)?;
        crate::net::network::plumb(lease, host_link, std::os::fd::AsFd::as_fd(&netns))?;
    }
    Ok(())
}

/// Releases what a container's record names besides its cgroup and overlay
/// directory: the kept network namespace, its host-side links and its
/// address lease (the last lease of a bridge takes the bridge and its NAT
/// table along). Each step tolerates what is already gone, so it is also
/// the replay after a killed runtime.
pub fn release(state: &crate::state::StateDir, record: &crate::state::Record) {
    if let Some(file) = &record.netns_file {
        let _ = nix::mount::umount2(file, nix::mount::MntFlags::MNT_DETACH);
        let _ = fs::remove_file(file);
    }
    let _ = crate::net::network::delete_links(&record.host_links);
    if let Some(lease) = &record.lease {
        let _ = state.networks().release(&lease.bridge, &record.id);
    }
}

/// The spec with its own /etc/resolv.conf (the `dns` nameservers) written
/// to `path` and bound read-only over the image's file.
fn with_resolv_conf(spec: &ContainerSpec, path: &Path) -> Result<ContainerSpec, RunError> {
    let text: String = spec
        .dns
        .iter()
        .map(|ip| format!("nameserver {ip}\n"))
        .collect();
    fs::write(path, text).sys("write", path.display())?;
    let mut spec = spec.clone();
    spec.mounts.push(crate::spec::Mount::bind(
        path,
        Path::new("/etc/resolv.conf"),
        true,
    ));
    Ok(spec)
}

/// Removes a container's overlay directory (upper, work, merged); the
/// mount itself lived in the container's mount namespace and is gone.
pub fn remove_overlay_dir(dir: &Path) {
    let _ = fs::remove_dir_all(dir);
}

fn run_inner(
    spec: &ContainerSpec,
    placed: &mut dyn FnMut(i32) -> Result<(), RunError>,
    started: &mut dyn FnMut(i32),
) -> Result<Outcome, RunError> {
    let mut clock = PhaseClock::new();
    let caller = (Uid::effective(), Gid::effective());
    let user_map = effective_user_mapping(spec, caller);
    if let Some(overlay) = &spec.overlay {
        hand_upper_to_container_root(overlay, &user_map)?;
    }
    if let Some(netns) = &spec.net_join {
        // This runtime process joins, so every process it makes is there.
        let file = fs::File::open(netns).sys("open", netns.display())?;
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
            .sys("setns net", netns.display())?;
    }
    let cgroup = crate::cgroup::ContainerCgroup::create_for(spec)?;
    clock.mark("validate+cgroup");
    crate::fault::point("after-cgroup");

    let result = launch(
        spec,
        &user_map,
        cgroup.as_ref(),
        &mut clock,
        placed,
        started,
    );
    if let Some(cg) = cgroup {
        let mut saved = Ok(());
        if let Some(path) = &spec.stats_file {
            // The counters die with the cgroup: keep the final ones.
            let json = serde_json::to_string(&cg.stats()).unwrap_or_default();
            saved = fs::write(path, json).sys("write", path.display());
        }
        let removed = cg.remove();
        clock.mark("cgroup removal");
        if result.is_ok() {
            removed?;
            saved?;
        }
    }
    result.map(|(exit, host_pid)| Outcome {
        exit,
        host_pid,
        timings: clock.phases,
    })
}

/// In a mapped user namespace the overlay's upper and work directories
/// must belong to the container's root, as the host sees it.
fn hand_upper_to_container_root(
    overlay: &crate::spec::OverlayRoot,
    user_map: &crate::spec::UserMapping,
) -> Result<(), RunError> {
    let (Some(uid), Some(gid)) = (user_map.uids.outside_of(0), user_map.gids.outside_of(0)) else {
        return Ok(());
    };
    for sub in ["upper", "work"] {
        let path = overlay.dir.join(sub);
        nix::unistd::chown(&path, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
            .sys("chown", format!("{} to {uid}:{gid}", path.display()))?;
    }
    Ok(())
}

fn effective_user_mapping(
    spec: &ContainerSpec,
    (uid, gid): (Uid, Gid),
) -> crate::spec::UserMapping {
    let mut map = spec.user.clone();
    if spec.namespaces.contains(Namespace::User) && !uid.is_root() {
        if map.uids.is_empty() {
            map.uids = crate::idmap::IdMap::root_to(uid.as_raw());
        }
        if map.gids.is_empty() {
            map.gids = crate::idmap::IdMap::root_to(gid.as_raw());
        }
    }
    map
}

fn launch(
    spec: &ContainerSpec,
    user_map: &crate::spec::UserMapping,
    cgroup: Option<&crate::cgroup::ContainerCgroup>,
    clock: &mut PhaseClock,
    placed: &mut dyn FnMut(i32) -> Result<(), RunError>,
    started: &mut dyn FnMut(i32),
) -> Result<(ExitKind, i32), RunError> {
    let pipe =
        |what: &'static str| nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).sys("pipe2", what);
    let (go_r, go_w) = pipe("go")?;
    let (rep_r, rep_w) = pipe("report")?;
    let (gate_r, gate_w) = pipe("cgroup gate")?;
    let blocked = forwarded_and_chld();
    let mut old_mask = SigSet::empty();
    signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&blocked), Some(&mut old_mask))
        .sys("sigprocmask", "block")?;
    let runtime_pid = nix::unistd::getpid();

    let clone_flags = if spec.namespaces.contains(Namespace::User) {
        libc::CLONE_NEWUSER
    } else {
        0
    };
    let monitor = match clone_process(clone_flags).sys("clone", "monitor")? {
        None => {
            drop((go_w, rep_r, gate_w));
            let child = ChildSide {
                spec,
                user_map,
                go_r,
                rep_w,
                gate_r,
                old_mask,
            };
            monitor_main(child, runtime_pid)
        }
        Some(pid) => pid,
    };
    drop((go_r, rep_w, gate_r));
    clock.mark("clone");

    // 1. The id maps, then "go".
    if spec.namespaces.contains(Namespace::User) {
        if let Err(e) = write_id_maps(monitor, user_map, !Uid::effective().is_root()) {
            // Closing the go pipe unread makes the monitor exit without running anything.
            drop(go_w);
            let _ = reap(monitor);
            let _ = signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old_mask), None);
            return Err(e.into());
        }
    }
    fs::File::from(go_w)
        .write_all(b"g")
        .sys("write", "go pipe")?;
    clock.mark("id maps");

    // 2. The first process's pid (or the monitor's error); into the cgroup
    //    with it, then open its gate.
    let mut report = Report {
        pid: None,
        error: None,
    };
    let mut reader = std::io::BufReader::new(fs::File::from(rep_r));
    let mut line = String::new();
    let _ = std::io::BufRead::read_line(&mut reader, &mut line);
    report.take(&line);
    let mut gate_w = fs::File::from(gate_w);
    if let Some(pid) = report.pid {
        clock.mark("namespaces");
        let ready = cgroup
            .map_or(Ok(()), |cg| cg.add_process(pid))
            .map_err(RunError::from)
            .and_then(|()| {
                clock.mark("cgroup placement");
                if let Some(path) = &spec.pid_file {
                    fs::write(path, format!("{pid}\n")).sys("write", path.display())?;
                }
                // The record, the kept netns and the network, before any user code.
                placed(pid)
            });
        match ready {
            Ok(()) => {
                let _ = gate_w.write_all(b"x");
            }
            // The gate stays shut: the first process exits without running anything.
            Err(e) => report.error = Some(e),
        }
    }
    drop(gate_w);
    clock.mark("network");

    // 3. EOF when the command execs, or the first process's error.
    let mut rest = String::new();
    let _ = reader.read_to_string(&mut rest);
    rest.lines().for_each(|line| report.take(line));
    clock.mark("container setup until exec");
    crate::fault::point("running");
    if let (Some(pid), None) = (report.pid, &report.error) {
        started(pid);
    }

    let exit = wait_forwarding(monitor, report.pid.map(Pid::from_raw), &blocked);
    clock.mark("command run");
    let _ = signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old_mask), None);
    if let Some(err) = report.error {
        return Err(err);
    }
    Ok((exit?, report.pid.unwrap_or(0)))
}

/// What the monitor and the first process inherit.
struct ChildSide<'a> {
    spec: &'a ContainerSpec,
    user_map: &'a crate::spec::UserMapping,
    /// The runtime's "go": the id maps are written.
    go_r: OwnedFd,
    /// Both write "pid N", "error ...", "exec CODE ..." here.
    rep_w: OwnedFd,
    /// The first process waits on this until it is in the container's cgroup.
    gate_r: OwnedFd,
    /// The signal mask to restore.
    old_mask: SigSet,
}

/// What the monitor and the first process said on the report pipe.
struct Report {
    pid: Option<i32>,
    error: Option<RunError>,
}

impl Report {
    /// Takes in one line of the report pipe.
    fn take(&mut self, line: &str) {
        let line = line.trim_end();
        if let Some(pid) = line.strip_prefix("pid ") {
            self.pid = pid.trim().parse().ok();
        } else if let Some(msg) = line.strip_prefix("error ") {
            self.error.get_or_insert(RunError::Setup(msg.to_string()));
        } else if let Some(rest) = line.strip_prefix("exec ") {
            let (code, msg) = rest.split_once(' ').unwrap_or(("127", rest));
            self.error.get_or_insert(RunError::Exec {
                code: code.parse().unwrap_or(127),
                message: msg.to_string(),
            });
        }
    }
}

fn write_id_maps(
    child: Pid,
    map: &crate::spec::UserMapping,
    unprivileged: bool,
) -> Result<(), SysError> {
    let proc = PathBuf::from(format!("/proc/{child}"));
    if unprivileged {
        // An unprivileged writer may only set gid_map once setgroups is denied.
        fs::write(proc.join("setgroups"), "deny")
            .sys("write deny to", proc.join("setgroups").display())?;
    }
    for (file, lines) in [("uid_map", &map.uids), ("gid_map", &map.gids)] {
        if lines.is_empty() {
            continue;
        }
        let path = proc.join(file);
        let text = lines.to_proc_format();
        fs::write(&path, &text).sys(
            "write",
            format!(
                "'{}' to {}",
                text.trim().replace('\n', ", "),
                path.display()
            ),
        )?;
    }
    Ok(())
}

/// Waits for the monitor while passing forwarded signals on to the first process.
fn wait_forwarding(
    monitor: Pid,
    init: Option<Pid>,
    blocked: &SigSet,
) -> Result<ExitKind, RunError> {
    loop {
        match waitpid(monitor, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(status) => return exit_kind(status),
            Err(Errno::EINTR) => continue,
            Err(e) => {
                return Err(SysError {
                    call: "waitpid",
                    subject: monitor.to_string(),
                    errno: e,
                }
                .into())
            }
        }
        match blocked.wait() {
            Ok(Signal::SIGCHLD) | Err(_) => {}
            Ok(sig) => {
                if let Some(pid) = init {
                    let _ = signal::kill(pid, sig);
                }
            }
        }
    }
}

fn reap(pid: Pid) -> Result<ExitKind, RunError> {
    loop {
        match waitpid(pid, None) {
            Err(Errno::EINTR) => continue,
            Ok(status) => return exit_kind(status),
            Err(e) => {
                return Err(SysError {
                    call: "waitpid",
                    subject: pid.to_string(),
                    errno: e,
                }
                .into())
            }
        }
    }
}

/// The monitor's end mirrors the first process's: the same exit status, or
/// the same signal (it re-raises it on itself).
fn exit_kind(status: WaitStatus) -> Result<ExitKind, RunError> {
    match status {
        WaitStatus::Exited(_, code) => Ok(ExitKind::Exited(code)),
        WaitStatus::Signaled(_, sig, _) => Ok(ExitKind::Signaled(sig as i32)),
        other => Err(RunError::Setup(format!("unexpected wait status {other:?}"))),
    }
}

/// clone(2) without CLONE_VM: like fork, but taking namespace flags.
/// Returns None in the child.
fn clone_process(flags: libc::c_int) -> nix::Result<Option<Pid>> {
    // SAFETY: with a null stack and without CLONE_VM the child runs on a
    // copy-on-write copy of this stack, exactly as after fork(2). The runtime
    // is single-threaded when it clones, so no lock can be held by another thread.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    match ret {
        -1 => Err(Errno::last()),
        0 => Ok(None),
        pid => Ok(Some(Pid::from_raw(pid as i32))),
    }
}

fn report_line(fd: &OwnedFd, line: &str) {
    let text = format!("{}\n", line.replace('\n', " "));
    let _ = nix::unistd::write(fd, text.as_bytes());
}

/// Stage 1. Never returns.
fn monitor_main(child: ChildSide, runtime_pid: Pid) -> ! {
    let ChildSide {
        spec,
        user_map,
        go_r,
        rep_w,
        gate_r,
        old_mask,
    } = child;
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    if nix::unistd::getppid() != runtime_pid {
        std::process::exit(125);
    }
    let mut byte = [0u8; 1];
    if !matches!(nix::unistd::read(go_r.as_raw_fd(), &mut byte), Ok(1)) {
        // The runtime gave up before the container was allowed to start.
        std::process::exit(125);
    }
    drop(go_r);
    if let Err(e) = monitor_prepare(spec, user_map) {
        let hint = if e.errno == Errno::EPERM
            && !spec.namespaces.contains(Namespace::User)
            && !Uid::effective().is_root()
        {
            " (a caller that is not root needs the user namespace)"
        } else {
            ""
        };
        report_line(&rep_w, &format!("error {e}{hint}"));
        std::process::exit(125);
    }
    let init = match clone_process(0) {
        Ok(None) => init_main(spec, user_map, rep_w, gate_r, &old_mask),
        Ok(Some(pid)) => pid,
        Err(e) => {
            report_line(
                &rep_w,
                &format!("error fork of the container's first process: {e}"),
            );
            std::process::exit(125);
        }
    };
    drop(gate_r);
    report_line(&rep_w, &format!("pid {init}"));
    drop(rep_w);
    // Terminal signals go to the whole foreground group; the monitor must
    // outlive the first process to report how it ended.
    for s in FORWARDED {
        // SAFETY: SIG_IGN installs no handler code.
        let _ = unsafe { signal::signal(s, signal::SigHandler::SigIgn) };
    }
    let _ = signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old_mask), None);
    let status = loop {
        match waitpid(init, None) {
            Err(Errno::EINTR) => continue,
            other => break other,
        }
    };
    match status {
        Ok(WaitStatus::Exited(_, code)) => std::process::exit(code),
        Ok(WaitStatus::Signaled(_, sig, _)) => {
            // Re-raise so the runtime sees the same signal; no core file of the monitor.
            let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
            // SAFETY: restoring the default disposition installs no handler code.
            let _ = unsafe { signal::signal(sig, signal::SigHandler::SigDfl) };
            let _ = signal::kill(nix::unistd::getpid(), sig);
            std::process::exit(128 + sig as i32)
        }
        _ => std::process::exit(125),
    }
}

/// Stage 1 after the go byte: become root of the user namespace, make the
/// time namespace with its offsets, unshare the rest.
fn monitor_prepare(
    spec: &ContainerSpec,
    user_map: &crate::spec::UserMapping,
) -> Result<(), SysError> {
    if spec.namespaces.contains(Namespace::User) {
        if user_map.gids.outside_of(0).is_some() {
            nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
                .sys("setresgid", 0)?;
            // Denied (EPERM) when an unprivileged caller wrote setgroups=deny.
            let _ = nix::unistd::setgroups(&[]);
        }
        if user_map.uids.outside_of(0).is_some() {
            nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
                .sys("setresuid", 0)?;
        }
        // Changing ids made the process non-dumpable, which hands its /proc
        // files to the (unmapped) host root: timens_offsets would be EACCES.
        nix::sys::prctl::set_dumpable(true).sys("prctl PR_SET_DUMPABLE", 1)?;
    }
    if spec.namespaces.contains(Namespace::Time) {
        nix::sched::unshare(nix::sched::CloneFlags::from_bits_retain(
            libc::CLONE_NEWTIME,
        ))
        .sys("unshare", "time")?;
        let offsets = format!(
            "monotonic {} 0\nboottime {} 0\n",
            spec.time.monotonic, spec.time.boottime
        );
        fs::write("/proc/self/timens_offsets", &offsets).sys(
            "write",
            format!(
                "'{}' to /proc/self/timens_offsets",
                offsets.trim().replace('\n', ", ")
            ),
        )?;
    }
    // The cgroup namespace comes later, once the monitor is in the cgroup.
    let flags =
        spec.namespaces
            .flags_except(&[Namespace::User, Namespace::Time, Namespace::Cgroup]);
    if flags != 0 {
        let names: Vec<String> = spec
            .namespaces
            .iter()
            .filter(|n| !matches!(n, Namespace::User | Namespace::Time | Namespace::Cgroup))
            .map(|n| n.to_string())
            .collect();
        nix::sched::unshare(nix::sched::CloneFlags::from_bits_retain(flags))
            .sys("unshare", names.join(","))?;
    }
    Ok(())
}

/// Stage 2: the container's first process. Never returns.
fn init_main(
    spec: &ContainerSpec,
    user_map: &crate::spec::UserMapping,
    rep_w: OwnedFd,
    gate_r: OwnedFd,
    old_mask: &SigSet,
) -> ! {
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    let mut byte = [0u8; 1];
    if !matches!(nix::unistd::read(gate_r.as_raw_fd(), &mut byte), Ok(1)) {
        // The runtime could not place this process in the cgroup; it reports why.
        std::process::exit(125);
    }
    drop(gate_r);
    if let Err(e) = init_prepare(spec, user_map) {
        report_line(&rep_w, &format!("error {e}"));
        std::process::exit(125);
    }
    for s in FORWARDED {
        // SAFETY: restoring the default disposition installs no handler code.
        let _ = unsafe { signal::signal(s, signal::SigHandler::SigDfl) };
    }
    let _ = signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(old_mask), None);
    let (code, message) = exec_command(spec);
    report_line(&rep_w, &format!("exec {code} {message}"));
    std::process::exit(code)
}

fn init_prepare(
    spec: &ContainerSpec,
    user_map: &crate::spec::UserMapping,
) -> Result<(), RootfsError> {
    if spec.namespaces.contains(Namespace::Cgroup) {
        // In the container's cgroup now: the namespace takes it as its root.
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP).sys("unshare", "cgroup")?;
    }
    let user_ns = if !spec.namespaces.contains(Namespace::User) {
        rootfs::UserNs::None
    } else if user_map.uids.outside_of(0).is_some() {
        rootfs::UserNs::Mapped
    } else {
        rootfs::UserNs::Unmapped
    };
    rootfs::enter(spec, user_ns)?;
    if let Some(name) = &spec.hostname {
        nix::unistd::sethostname(name).sys("sethostname", name)?;
    }
    if spec.namespaces.contains(Namespace::Net) {
        crate::netdev::set_up("lo")?;
    }
    let wd = &spec.workdir;
    nix::unistd::chdir(wd.as_path()).sys("chdir", wd.display())?;
    // Capabilities before the user switch: a non-root user then keeps the
    // bounding set but no effective or permitted capability, as in Docker.
    crate::caps::confine(spec.confinement.capabilities)?;
    if let Some((uid, gid)) = spec.process_user {
        let gid = nix::unistd::Gid::from_raw(gid);
        // setgroups is denied in a user namespace an unprivileged caller mapped.
        let _ = nix::unistd::setgroups(&[gid]);
        nix::unistd::setresgid(gid, gid, gid).sys("setresgid", gid)?;
        let uid = nix::unistd::Uid::from_raw(uid);
        nix::unistd::setresuid(uid, uid, uid).sys("setresuid", uid)?;
    }
    // A session of its own: the container is not part of the caller's terminal job.
    let _ = nix::unistd::setsid();
    // Last: from here on the filter applies (exec included).
    spec.confinement.install_filter()?;
    Ok(())
}

/// Looks the command up in the container's PATH and execs it; returns the
/// status and message to report when that fails (127 not found, 126 not executable).
fn exec_command(spec: &ContainerSpec) -> (i32, String) {
    exec_in_container(&spec.command, &spec.environment())
}

/// execve of `command` with `env`, the program looked up in env's PATH (or
/// the default one) as the container sees it. Returns only on failure.
pub(crate) fn exec_in_container(command: &[String], env: &[String]) -> (i32, String) {
    let path_var = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(crate::spec::DEFAULT_PATH)
        .to_string();
    let Some(cmd) = command.first() else {
        return (127, "no command given".to_string());
    };
    let candidates: Vec<PathBuf> = if cmd.contains('/') {
        vec![PathBuf::from(cmd)]
    } else {
        path_var
            .split(':')
            .map(|d| Path::new(d).join(cmd))
            .collect()
    };
    let Some(program) = candidates.iter().find(|p| p.is_file()) else {
        return (
            127,
            format!("exec '{cmd}': not found in the container (PATH {path_var})"),
        );
    };
    let to_c = |s: &str| CString::new(s).unwrap_or_default();
    let argv: Vec<CString> = command.iter().map(|a| to_c(a)).collect();
    let envp: Vec<CString> = env.iter().map(|e| to_c(e)).collect();
    let prog = to_c(&program.to_string_lossy());
    let err = nix::unistd::execve(&prog, &argv, &envp)
        .err()
        .unwrap_or(Errno::EINVAL);
    let code = if err == Errno::ENOENT { 127 } else { 126 };
    (code, format!("exec {}: {}", program.display(), err))
}

/// Wall time per phase of a run.
struct PhaseClock {
    last: Instant,
    phases: Vec<(&'static str, Duration)>,
}

impl PhaseClock {
    fn new() -> Self {
        PhaseClock {
            last: Instant::now(),
            phases: Vec::new(),
        }
    }
    fn mark(&mut self, phase: &'static str) {
        let now = Instant::now();
        self.phases.push((phase, now - self.last));
        self.last = now;
    }
}
