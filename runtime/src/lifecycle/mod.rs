//! The lifecycle of one container as library calls: [`create`], [`start`],
//! [`kill`], [`delete`], [`pause`]/[`resume`], [`exec`](exec::exec) and
//! the OCI state, under thin front ends: kcell's own CLI (`kcell run` is
//! create + start + wait + delete, [`run::run`]) and the OCI command line
//! (`kcell-oci`, runc's grammar). What a container holds is one ledger, its
//! [`Record`](crate::state::Record), released in one place
//! ([`ledger::release`]) by whichever command ends it.
//!
//! Three processes make a container (the split mirrors runc's nsexec):
//!
//! * the **runtime** (the caller): records the container before anything
//!   it names exists, makes its cgroup and network, writes the child's
//!   uid_map and gid_map while it waits, places the first process in the
//!   cgroup, relays the hooks that run in its namespaces;
//! * the **bootstrap**, cloned with CLONE_NEWUSER when asked: joins the
//!   namespaces given by path, becomes root of its user namespace, makes
//!   the time namespace with its offsets (they can only be written before a
//!   process enters it) and unshares the rest, then clones the first
//!   process with CLONE_PARENT, so that it is the runtime's child, and exits;
//! * the container's **first process** ([`init`]): PID 1 of the new PID
//!   namespace. Once placed it builds its root, then waits at the exec FIFO
//!   until `start`, then takes its user, capabilities and seccomp filter and
//!   execs. An OCI `create` returns while it waits, and the caller's
//!   subreaper (conmon, containerd's shim) inherits it.

pub mod channel;
pub mod console;
pub mod exec;
pub mod hooks;
mod init;
pub mod launch;
pub mod ledger;
pub mod run;

use crate::state::{Phase, Record, StateDir, StateError, Status};
use crate::sys::SysError;
use std::path::PathBuf;

pub use launch::{create, Created};

/// The OCI runtime-spec version kcell implements and writes (state,
/// features, spec); every 1.x config is read (oci::config::policy).
pub const OCI_VERSION: &str = "1.3.0";

/// Errors of the lifecycle. The messages that clients match keep runc's
/// words ("does not exist", "container not running").
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// The spec was refused before anything was made.
    #[error(transparent)]
    Spec(#[from] crate::spec::SpecError),
    /// A namespace was asked for that the kernel lacks.
    #[error(transparent)]
    Namespace(#[from] crate::namespace::NamespaceError),
    /// A system call of the runtime failed.
    #[error(transparent)]
    Sys(#[from] SysError),
    /// The cgroup layer.
    #[error(transparent)]
    Cgroup(#[from] crate::cgroup::CgroupError),
    /// The state directory.
    #[error(transparent)]
    State(#[from] StateError),
    /// Container networking (bridge, veth, lease, NAT).
    #[error(transparent)]
    Net(#[from] crate::net::NetError),
    /// A hook failed its step.
    #[error(transparent)]
    Hook(#[from] hooks::HookError),
    /// A process of the launch failed: 125 a step of its setup, 126 the
    /// program is not executable, 127 it is not found.
    #[error("{message}")]
    Setup {
        /// The exit status to report.
        code: i32,
        /// What failed.
        message: String,
    },
    /// No such container.
    #[error("container '{0}' does not exist")]
    NotFound(String),
    /// Signalled, paused or exec'd into while stopped.
    #[error("container not running: '{0}' has stopped")]
    NotRunning(String),
    /// Resumed while not paused.
    #[error("container not paused: '{0}'")]
    NotPaused(String),
    /// A step that the container's status does not allow.
    #[error("{0}")]
    WrongState(String),
}

impl From<channel::ChannelError> for LifecycleError {
    fn from(e: channel::ChannelError) -> Self {
        match e {
            channel::ChannelError::Failed { code, message } => {
                LifecycleError::Setup { code, message }
            }
            other => LifecycleError::Setup {
                code: 125,
                message: other.to_string(),
            },
        }
    }
}

impl LifecycleError {
    /// The exit status kcell's CLI reports: the setup's, else 125.
    pub fn exit_code(&self) -> i32 {
        match self {
            LifecycleError::Setup { code, .. } => *code,
            _ => 125,
        }
    }
}

/// How the caller wants a container made.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// `kcell run`: the caller waits for the container and releases it
    /// (and the first process dies with it). OCI create: neither.
    pub owned: bool,
    /// Where to write the first process's host PID (atomically, no newline).
    pub pid_file: Option<PathBuf>,
    /// An AF_UNIX socket to send the terminal's master to.
    pub console_socket: Option<PathBuf>,
    /// Descriptors 3.. the first process keeps (OCI --preserve-fds, and
    /// LISTEN_FDS when they are this runtime's).
    pub preserve_fds: u32,
}

fn read(state: &StateDir, id: &str) -> Result<Record, LifecycleError> {
    match state.read(id) {
        Err(StateError::NotFound(_)) => Err(LifecycleError::NotFound(id.to_string())),
        other => other.map_err(Into::into),
    }
}

/// The OCI state of a container (runtime.md "State"), as runc prints it.
pub fn state_json(rec: &Record) -> serde_json::Value {
    let status = rec.status();
    let pid = if status == Status::Stopped {
        0
    } else {
        rec.pid.unwrap_or(0)
    };
    let secs = (rec.created_ns / 1_000_000_000) as i64;
    let nanos = (rec.created_ns % 1_000_000_000) as u32;
    let mut v = serde_json::json!({
        "ociVersion": OCI_VERSION,
        "id": rec.id,
        "pid": pid,
        "status": status.as_str(),
        "bundle": rec.bundle.as_ref().map_or(String::new(), |b| b.display().to_string()),
        "rootfs": rec.rootfs.display().to_string(),
        "created": rfc3339(secs, nanos),
        "owner": "",
    });
    if !rec.annotations.is_empty() {
        v["annotations"] = serde_json::json!(rec.annotations);
    }
    v
}

/// UTC RFC 3339 with nanoseconds, as Go's time.RFC3339Nano.
pub fn rfc3339(secs: i64, nanos: u32) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let frac = if nanos == 0 {
        String::new()
    } else {
        format!(".{nanos:09}").trim_end_matches('0').to_string()
    };
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}{frac}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Lets a created container run: its first process is released from the
/// exec FIFO; then the poststart hooks run (a failure there is reported,
/// as the spec says, without stopping the container).
pub fn start(state: &StateDir, id: &str) -> Result<(), LifecycleError> {
    let mut rec = read(state, id)?;
    match rec.status() {
        Status::Created => {}
        // runc's wording (clients show it as it is), with the container.
        Status::Stopped => {
            return Err(LifecycleError::WrongState(format!(
                "cannot start a container that has stopped: {id}"
            )))
        }
        Status::Running => {
            return Err(LifecycleError::WrongState(format!(
                "cannot start an already running container: {id}"
            )))
        }
        other => {
            return Err(LifecycleError::WrongState(format!(
                "cannot start container {id} in the {} state (only a created one can be started)",
                other.as_str()
            )))
        }
    }
    let fifo = rec.exec_fifo.clone().unwrap_or_else(|| state.exec_fifo(id));
    release_from_fifo(&fifo, &rec)?;
    crate::fault::point("oci-start");
    let _ = std::fs::remove_file(&fifo);
    rec.phase = Phase::Running;
    rec.exec_fifo = None;
    state.write(&rec)?;
    for e in hooks::run_all(
        "poststart",
        &rec.hooks.poststart,
        &state_json(&rec).to_string(),
    ) {
        eprintln!("kcell: warning: {e}");
    }
    Ok(())
}

/// Opens the FIFO for reading (the first process blocks opening it for
/// writing) and takes its byte: from then on it runs. A FIFO without a
/// writer (its process is gone, or a start was killed after taking the
/// byte) ends the wait at once.
fn release_from_fifo(fifo: &std::path::Path, rec: &Record) -> Result<(), LifecycleError> {
    use nix::fcntl::OFlag;
    use std::os::fd::{AsFd, FromRawFd, OwnedFd};
    let fd = nix::fcntl::open(
        fifo,
        OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| SysError {
        call: "open",
        subject: fifo.display().to_string(),
        errno: e,
    })?;
    // SAFETY: open just returned this descriptor to us alone.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let mut buf = [0u8; 1];
        match nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(&fd), &mut buf) {
            Ok(1) => return Ok(()),
            // No writer has opened it yet (the process is between open and
            // write), or none will: check the process and wait a little.
            Ok(_) | Err(nix::errno::Errno::EAGAIN) => {}
            Err(e) => {
                return Err(SysError {
                    call: "read",
                    subject: fifo.display().to_string(),
                    errno: e,
                }
                .into())
            }
        }
        if !rec.is_running() {
            return Err(LifecycleError::WrongState(format!(
                "cannot start a container that has stopped: {}",
                rec.id
            )));
        }
        if std::time::Instant::now() > deadline {
            return Err(SysError {
                call: "wait for the first process at",
                subject: fifo.display().to_string(),
                errno: nix::errno::Errno::ETIMEDOUT,
            }
            .into());
        }
        let mut pfd = [nix::poll::PollFd::new(
            fd.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let _ = nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(10u8));
    }
}

/// Sends `signal` to the container's first process, or with `all` to every
/// process in its cgroup (also when stopped: what is left of it).
pub fn kill(
    state: &StateDir,
    id: &str,
    signal: nix::sys::signal::Signal,
    all: bool,
) -> Result<(), LifecycleError> {
    let rec = read(state, id)?;
    let status = rec.status();
    if all {
        if let Some(cg) = rec.cgroup().filter(|c| c.exists()) {
            cg.signal_all(signal);
            if signal == nix::sys::signal::Signal::SIGKILL && status == Status::Paused {
                let _ = cg.set_frozen(false);
            }
            return Ok(());
        }
    }
    if matches!(status, Status::Stopped | Status::Creating) {
        return Err(LifecycleError::NotRunning(id.to_string()));
    }
    let pid = nix::unistd::Pid::from_raw(rec.pid.unwrap_or(0));
    nix::sys::signal::kill(pid, signal).map_err(|e| match e {
        nix::errno::Errno::ESRCH => LifecycleError::NotRunning(id.to_string()),
        e => SysError {
            call: "kill",
            subject: format!("{signal} to {pid}"),
            errno: e,
        }
        .into(),
    })?;
    if signal == nix::sys::signal::Signal::SIGKILL && status == Status::Paused {
        if let Some(cg) = rec.cgroup() {
            let _ = cg.set_frozen(false);
        }
    }
    Ok(())
}

/// Deletes a container: a stopped or created one at once (a created one is
/// killed first, as runc does); a running or paused one only with `force`.
/// Not found: an error, but not with `force` (runc's `delete --force`).
pub fn delete(state: &StateDir, id: &str, force: bool) -> Result<(), LifecycleError> {
    let rec = match read(state, id) {
        Err(LifecycleError::NotFound(_)) if force => return Ok(()),
        other => other?,
    };
    let status = rec.status();
    if matches!(status, Status::Running | Status::Paused) && !force {
        return Err(LifecycleError::WrongState(format!(
            "cannot delete container {id} that is not stopped: {}",
            status.as_str()
        )));
    }
    if status != Status::Stopped {
        ledger::kill_and_wait(&rec);
    }
    crate::fault::point("oci-delete");
    ledger::release(state, &rec);
    Ok(())
}

/// Freezes every process of a running container.
pub fn pause(state: &StateDir, id: &str) -> Result<(), LifecycleError> {
    let rec = read(state, id)?;
    if !matches!(rec.status(), Status::Running | Status::Created) {
        return Err(LifecycleError::NotRunning(id.to_string()));
    }
    let cg = rec.cgroup().ok_or_else(|| {
        LifecycleError::WrongState(format!(
            "container '{id}' has no cgroup of its own to freeze"
        ))
    })?;
    cg.set_frozen(true).map_err(Into::into)
}

/// Thaws a paused container.
pub fn resume(state: &StateDir, id: &str) -> Result<(), LifecycleError> {
    let rec = read(state, id)?;
    if rec.status() != Status::Paused {
        return Err(LifecycleError::NotPaused(id.to_string()));
    }
    let cg = rec
        .cgroup()
        .ok_or_else(|| LifecycleError::NotPaused(id.to_string()))?;
    cg.set_frozen(false).map_err(Into::into)
}

/// Changes a running container's limits (the fields given).
pub fn update(
    state: &StateDir,
    id: &str,
    res: &crate::cgroup::resources::Resources,
) -> Result<(), LifecycleError> {
    let rec = read(state, id)?;
    if rec.status() == Status::Stopped {
        return Err(LifecycleError::NotRunning(id.to_string()));
    }
    let cg = rec.cgroup().ok_or_else(|| {
        LifecycleError::WrongState(format!(
            "container '{id}' has no cgroup of its own to update"
        ))
    })?;
    res.validate().map_err(crate::cgroup::CgroupError::from)?;
    cg.apply(res).map_err(Into::into)
}

/// The record of `id`, with the lifecycle's wording for a missing one.
pub fn lookup(state: &StateDir, id: &str) -> Result<Record, LifecycleError> {
    read(state, id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_as_go_prints_it() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(1_700_000_000, 123_000_000),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(rfc3339(951_782_400, 5), "2000-02-29T00:00:00.000000005Z");
    }
}
