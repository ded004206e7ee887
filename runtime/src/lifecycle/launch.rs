//! `create`: the runtime's side and the bootstrap child (see the module
//! comment of [`super`]). Every resource is recorded before it is made, so
//! a runtime killed at any step leaves a record that [`super::ledger`]
//! replays.

use super::channel::{self, Channel, Message};
use super::{hooks, init, ledger, state_json, CreateOptions, LifecycleError};
use crate::namespace::Namespace;
use crate::spec::{ContainerSpec, UserMapping};
use crate::state::{Phase, Record, StateDir};
use crate::sys::{SysContext, SysError};
use nix::errno::Errno;
use nix::unistd::{Gid, Pid, Uid};
use std::fs;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// A created container: its record, and the runtime's end of the channel
/// (for `kcell run`, which learns there whether the program exec'd).
#[derive(Debug)]
pub struct Created {
    /// The record, phase Created.
    pub record: Record,
    /// The runtime's end of the first process's channel.
    pub channel: Channel,
    /// Wall time of each step, for `kcell run --timings`.
    pub timings: Vec<(&'static str, std::time::Duration)>,
}

/// clone(2) without CLONE_VM: like fork, but taking namespace flags and
/// CLONE_PARENT. Returns None in the child.
pub(super) fn clone_process(flags: libc::c_int) -> nix::Result<Option<Pid>> {
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

/// Reaps `pid` (EINTR retried).
pub(super) fn reap(pid: Pid) -> nix::Result<nix::sys::wait::WaitStatus> {
    loop {
        match nix::sys::wait::waitpid(pid, None) {
            Err(Errno::EINTR) => continue,
            other => return other,
        }
    }
}

/// The user namespace's maps as the kernel will get them: a caller that is
/// not root maps itself to root when it gave no maps.
fn effective_user_mapping(spec: &ContainerSpec) -> UserMapping {
    let (uid, gid) = (Uid::effective(), Gid::effective());
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

/// Makes the container of `spec` up to its first process waiting for
/// `start`, and records it in `state`. On any error everything made so far
/// is released and nothing is left.
pub fn create(
    state: &StateDir,
    spec: &ContainerSpec,
    opts: &CreateOptions,
) -> Result<Created, LifecycleError> {
    spec.validate()?;
    spec.namespaces.check_supported()?;
    for (ns, path) in &spec.joins {
        if !path.exists() {
            return Err(LifecycleError::Setup {
                code: 125,
                message: format!("{ns} namespace path '{}' does not exist", path.display()),
            });
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut rec = Record {
        id: spec.id.clone(),
        rootfs: spec.rootfs.clone(),
        bundle: spec.bundle.clone(),
        annotations: spec.annotations.clone(),
        process: spec.process.clone(),
        namespaces: spec.namespaces.clone(),
        created_ns: now,
        pid: None,
        start_time: None,
        owner_pid: std::process::id() as i32,
        owned: opts.owned,
        phase: Phase::Creating,
        hooks: spec.hooks.clone(),
        cgroup: None,
        exec_fifo: None,
        image: spec.overlay.as_ref().map(|o| o.image.clone()),
        overlay_dir: spec.overlay.as_ref().map(|o| o.dir.clone()),
        lease: None,
        host_links: Vec::new(),
        netns_file: None,
        resolv_conf: None,
        host_mounts: None,
    };
    if spec.mounts_in_callers_namespace() {
        rec.host_mounts = Some(crate::rootfs::host_ns::snapshot(&spec.rootfs)?);
    }
    // The record exists before anything it names is made.
    state.create(&rec)?;
    crate::fault::point("after-record");
    let mut clock = Clock::new();
    match build(state, spec, opts, &mut rec, &mut clock) {
        Ok(channel) => Ok(Created {
            record: rec,
            channel,
            timings: clock.phases,
        }),
        Err(e) => {
            // The record on disk may name more than this copy (a step that
            // wrote it and then failed).
            let on_disk = state.read(&rec.id).unwrap_or(rec);
            ledger::kill_and_wait(&on_disk);
            ledger::release(state, &on_disk);
            Err(e)
        }
    }
}

fn build(
    state: &StateDir,
    spec: &ContainerSpec,
    opts: &CreateOptions,
    rec: &mut Record,
    clock: &mut Clock,
) -> Result<Channel, LifecycleError> {
    let mut spec = spec.clone();
    prepare_network(&spec, state, rec)?;
    crate::fault::point("after-lease");
    if !spec.dns.is_empty() {
        let path = state.resolv_conf(&spec.id);
        rec.resolv_conf = Some(path.clone());
        state.write(rec)?;
        let text: String = spec
            .dns
            .iter()
            .map(|ip| format!("nameserver {ip}\n"))
            .collect();
        fs::write(&path, text).sys("write", path.display())?;
        spec.mounts.push(crate::spec::Mount::bind(
            &path,
            Path::new("/etc/resolv.conf"),
            true,
        ));
    }
    let user_map = effective_user_mapping(&spec);
    if let Some(overlay) = &spec.overlay {
        hand_upper_to_container_root(overlay, &user_map)?;
    }
    // The cgroup: recorded, then made and limited.
    let cgroup = match &spec.cgroup_path {
        Some(path) if Uid::effective().is_root() => {
            let backend = crate::cgroup::Backend::detect();
            let path = backend.resolve_path(path)?;
            for r in spec
                .resources
                .read_bps
                .iter()
                .chain(&spec.resources.write_bps)
            {
                if !Path::new(&format!("/sys/dev/block/{}:{}", r.major, r.minor)).exists() {
                    return Err(crate::cgroup::CgroupError::Resource(
                        crate::cgroup::resources::ResourceError::UnknownDevice(r.major, r.minor),
                    )
                    .into());
                }
            }
            if backend.version().is_none() {
                if spec.resources.is_empty() {
                    None
                } else {
                    return Err(crate::cgroup::CgroupError::NoCgroupFs.into());
                }
            } else {
                let cg = backend.cgroup(&path)?;
                // The first process mounts its own cgroup from the resolved path.
                spec.cgroup_path = Some(path.clone());
                rec.cgroup = Some(path);
                state.write(rec)?;
                cg.create(&spec.resources)?;
                Some(cg)
            }
        }
        Some(_) if !spec.resources.is_empty() => {
            return Err(crate::cgroup::CgroupError::NeedsRoot(Uid::effective().as_raw()).into())
        }
        None if !spec.resources.is_empty() => {
            return Err(crate::cgroup::CgroupError::LimitsWithoutCgroup.into())
        }
        _ => None,
    };
    clock.mark("validate+cgroup");
    crate::fault::point("after-cgroup");
    // The exec FIFO the first process waits on until start.
    let fifo = state.exec_fifo(&spec.id);
    rec.exec_fifo = Some(fifo.clone());
    state.write(rec)?;
    state.ensure_dir()?;
    let _ = fs::remove_file(&fifo);
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o622))
        .sys("mkfifo", fifo.display())?;
    // mkfifo's mode went through the umask: a non-root process must write it.
    nix::sys::stat::fchmodat(
        None,
        &fifo,
        nix::sys::stat::Mode::from_bits_truncate(0o622),
        nix::sys::stat::FchmodatFlags::NoFollowSymlink,
    )
    .sys("chmod", fifo.display())?;
    let fifo_fd = open_path(&fifo)?;
    let console = opts
        .console_socket
        .as_deref()
        .map(super::console::connect)
        .transpose()?;
    let (ours, theirs) = channel::pair("container's first process", "runtime")?;
    let runtime_pid = nix::unistd::getpid();
    let joining_user = spec.joins.iter().any(|(n, _)| *n == Namespace::User);
    let clone_flags = if spec.namespaces.contains(Namespace::User) && !joining_user {
        libc::CLONE_NEWUSER
    } else {
        0
    };
    let child = init::InitSide {
        spec: &spec,
        user_map: &user_map,
        chan: &theirs,
        fifo: &fifo_fd,
        console: console.as_ref(),
        detached: !opts.owned,
        preserve_fds: opts.preserve_fds,
        runtime_pid,
    };
    let bootstrap = match clone_process(clone_flags).sys("clone", "bootstrap")? {
        None => bootstrap_main(&child),
        Some(pid) => pid,
    };
    drop(theirs);
    drop(console);
    clock.mark("clone");
    // 1. The id maps, then "go".
    if clone_flags & libc::CLONE_NEWUSER != 0 {
        if let Err(e) = write_id_maps(bootstrap, &user_map, !Uid::effective().is_root()) {
            drop(ours);
            let _ = reap(bootstrap);
            return Err(e.into());
        }
    }
    ours.send(&Message::Mapped)?;
    // 2. The first process's pid; into the cgroup with it.
    let got = ours.expect("Pid");
    let _ = reap(bootstrap);
    let pid = match got? {
        Message::Pid(pid) => pid,
        other => {
            return Err(
                channel::ChannelError::Unexpected("bootstrap", format!("{other:?}"), "Pid").into(),
            )
        }
    };
    clock.mark("namespaces");
    rec.pid = Some(pid);
    rec.start_time = crate::state::start_time(pid);
    // kcell's own containers keep their network namespace at a path
    // (`net attach`, `exec` of a joined one); an OCI client keeps its own.
    if opts.owned && spec.namespaces.contains(Namespace::Net) && Uid::effective().is_root() {
        rec.netns_file = Some(state.netns_file(&spec.id));
    }
    state.write(rec)?;
    if let Some(cg) = &cgroup {
        cg.add_process(pid)?;
    }
    clock.mark("cgroup placement");
    crate::fault::point("after-clone");
    connect_network(pid, rec)?;
    crate::fault::point("after-veth");
    clock.mark("network");
    ours.send(&Message::Placed)?;
    // 3. The hooks of the runtime's namespaces, when asked; then Ready.
    loop {
        match ours.recv()? {
            Some(Message::RunHooks) => {
                let state_now = state_json(rec).to_string();
                hooks::run("prestart", &spec.hooks.prestart, &state_now)?;
                hooks::run("createRuntime", &spec.hooks.create_runtime, &state_now)?;
                ours.send(&Message::HooksDone)?;
            }
            Some(Message::Ready) => break,
            Some(Message::Failed { code, message }) => {
                return Err(LifecycleError::Setup { code, message })
            }
            Some(other) => {
                return Err(channel::ChannelError::Unexpected(
                    "container's first process",
                    format!("{other:?}"),
                    "Ready",
                )
                .into())
            }
            None => {
                return Err(LifecycleError::Setup {
                    code: 125,
                    message: "the container's first process exited during its setup".into(),
                })
            }
        }
    }
    clock.mark("container setup");
    if let Some(path) = &opts.pid_file {
        write_pid_file(path, pid)?;
    }
    rec.phase = Phase::Created;
    state.write(rec)?;
    crate::fault::point("oci-created");
    Ok(ours)
}

/// The pid file, atomically and without a newline (go-runc parses the raw
/// bytes): a temporary file beside it, renamed into place.
pub(super) fn write_pid_file(path: &Path, pid: i32) -> Result<(), SysError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}", std::process::id()));
    fs::write(&tmp, pid.to_string()).sys("write", tmp.display())?;
    fs::rename(&tmp, path).sys("rename", format!("{} to {}", tmp.display(), path.display()))
}

fn open_path(path: &Path) -> Result<OwnedFd, SysError> {
    let fd = nix::fcntl::open(
        path,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .sys("open", path.display())?;
    // SAFETY: open just returned this descriptor to us alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Leases the container's bridge address (making the bridge when it is the
/// first) and records it with the host-side link name, before either exists.
fn prepare_network(
    spec: &ContainerSpec,
    state: &StateDir,
    rec: &mut Record,
) -> Result<(), LifecycleError> {
    let Some(req) = &spec.network else {
        return Ok(());
    };
    rec.host_links = vec![crate::net::network::host_link_name(&spec.id, 0)];
    state.write(rec)?;
    rec.lease = Some(state.networks().acquire(req, &spec.id)?);
    state.write(rec)?;
    Ok(())
}

/// Before the container's first process may go on: its network namespace
/// bind-mounted under the state directory, and its veth on the bridge.
fn connect_network(pid: i32, rec: &Record) -> Result<(), LifecycleError> {
    let ns_path = format!("/proc/{pid}/ns/net");
    if let Some(file) = &rec.netns_file {
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
    if let (Some(lease), Some(host_link)) = (&rec.lease, rec.host_links.first()) {
        let netns = fs::File::open(&ns_path).sys("open", &ns_path)?;
        crate::net::network::plumb(lease, host_link, std::os::fd::AsFd::as_fd(&netns))?;
    }
    Ok(())
}

/// In a mapped user namespace the overlay's upper and work directories
/// must belong to the container's root, as the host sees it.
fn hand_upper_to_container_root(
    overlay: &crate::spec::OverlayRoot,
    user_map: &UserMapping,
) -> Result<(), SysError> {
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

fn write_id_maps(child: Pid, map: &UserMapping, unprivileged: bool) -> Result<(), SysError> {
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

/// The bootstrap child. Never returns.
fn bootstrap_main(side: &init::InitSide) -> ! {
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    if nix::unistd::getppid() != side.runtime_pid {
        std::process::exit(125);
    }
    if side.chan.expect("Mapped").is_err() {
        // The runtime gave up before the container was allowed to start.
        std::process::exit(125);
    }
    if let Err(e) = join_and_unshare(side.spec, side.user_map) {
        let hint = if e.errno == Errno::EPERM
            && !side.spec.namespaces.contains(Namespace::User)
            && !Uid::effective().is_root()
        {
            " (a caller that is not root needs the user namespace)"
        } else {
            ""
        };
        side.chan.fail(125, format!("{e}{hint}"));
        std::process::exit(125);
    }
    match clone_process(libc::CLONE_PARENT) {
        Ok(None) => init::init_main(side),
        Ok(Some(pid)) => {
            let _ = side.chan.send(&Message::Pid(pid.as_raw()));
            std::process::exit(0)
        }
        Err(e) => {
            side.chan
                .fail(125, format!("clone of the container's first process: {e}"));
            std::process::exit(125)
        }
    }
}

/// The bootstrap's work: join the namespaces given by path (the user one
/// first, the mount one last), become root of a new user namespace, make
/// the time namespace with its offsets, unshare the rest (the cgroup
/// namespace comes later, once the first process is in its cgroup).
fn join_and_unshare(spec: &ContainerSpec, user_map: &UserMapping) -> Result<(), SysError> {
    let mut joins = spec.joins.clone();
    let rank = |n: &Namespace| match n {
        Namespace::User => 0,
        Namespace::Mnt => 2,
        _ => 1,
    };
    joins.sort_by_key(|(n, _)| rank(n));
    for (ns, path) in &joins {
        if *ns == Namespace::Cgroup {
            continue;
        }
        let f = fs::File::open(path).sys("open", path.display())?;
        nix::sched::setns(f, nix::sched::CloneFlags::from_bits_retain(ns.clone_flag()))
            .sys("setns", format!("{ns} {}", path.display()))?;
    }
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
    let skip = [Namespace::User, Namespace::Time, Namespace::Cgroup];
    let flags = spec.namespaces.flags_except(&skip);
    if flags != 0 {
        let names: Vec<String> = spec
            .namespaces
            .iter()
            .filter(|n| !skip.contains(n))
            .map(|n| n.to_string())
            .collect();
        nix::sched::unshare(nix::sched::CloneFlags::from_bits_retain(flags))
            .sys("unshare", names.join(","))?;
    }
    Ok(())
}

/// Wall time per step of a create.
pub(super) struct Clock {
    last: std::time::Instant,
    pub(super) phases: Vec<(&'static str, std::time::Duration)>,
}

impl Clock {
    pub(super) fn new() -> Self {
        Clock {
            last: std::time::Instant::now(),
            phases: Vec::new(),
        }
    }
    pub(super) fn mark(&mut self, phase: &'static str) {
        let now = std::time::Instant::now();
        self.phases.push((phase, now - self.last));
        self.last = now;
    }
}
