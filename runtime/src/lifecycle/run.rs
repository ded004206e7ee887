//! `kcell run`: create + start + wait + delete on the lifecycle library,
//! with the runtime staying in the foreground: it forwards the terminal's
//! signals to the container's first process (its child, by CLONE_PARENT),
//! returns the program's status, and releases the container however it ends.

use super::{create, ledger, start, CreateOptions, LifecycleError};
use crate::spec::ContainerSpec;
use crate::state::StateDir;
use nix::errno::Errno;
use nix::sys::signal::{self, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::time::Duration;

/// How a process ended.
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

/// A finished run.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// How the first process ended.
    pub exit: ExitKind,
    /// Its PID as the host saw it.
    pub host_pid: i32,
    /// Wall time of each phase, for `--timings`.
    pub timings: Vec<(&'static str, Duration)>,
}

/// Signals the runtime passes on to the container's first process.
pub const FORWARDED: [Signal; 6] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// The forwarded signals and SIGCHLD, blocked while a run waits for them.
pub fn forwarded_and_chld() -> SigSet {
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(s);
    }
    set.add(Signal::SIGCHLD);
    set
}

/// Runs `spec` to completion in the foreground, keeping its record in
/// `state` while it lives, and calls `started` with the host PID of the
/// first process once its program has been exec'd.
pub fn run(
    state: &StateDir,
    spec: &ContainerSpec,
    opts: CreateOptions,
    started: &mut dyn FnMut(i32),
) -> Result<Outcome, LifecycleError> {
    let blocked = forwarded_and_chld();
    let mut old_mask = SigSet::empty();
    let _ = signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&blocked), Some(&mut old_mask));
    let result = run_blocked(state, spec, opts, started, &blocked);
    let _ = signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old_mask), None);
    result
}

fn run_blocked(
    state: &StateDir,
    spec: &ContainerSpec,
    mut opts: CreateOptions,
    started: &mut dyn FnMut(i32),
    blocked: &SigSet,
) -> Result<Outcome, LifecycleError> {
    opts.owned = true;
    let created = create(state, spec, &opts)?;
    let pid = created.record.pid.unwrap_or(0);
    let mut timings = created.timings;
    let clock = std::time::Instant::now();
    let result = start(state, &spec.id).and_then(|()| {
        // End of the channel: the program was exec'd (the socket is
        // close-on-exec); a message: it could not be.
        match created.channel.recv()? {
            None => Ok(()),
            Some(super::channel::Message::Failed { code, message }) => {
                Err(LifecycleError::Setup { code, message })
            }
            Some(other) => Err(LifecycleError::Setup {
                code: 125,
                message: format!("unexpected {other:?} from the container's first process"),
            }),
        }
    });
    timings.push(("start until exec", clock.elapsed()));
    crate::fault::point("running");
    match &result {
        Ok(()) => started(pid),
        // A first process that cannot go on must not be waited for forever.
        Err(_) => ledger::kill_and_wait(&created.record),
    }
    let exit = wait_forwarding(Pid::from_raw(pid), blocked);
    timings.push(("command run", clock.elapsed()));
    // The record on disk may name more than this process made (`net
    // attach` adds links to a running container).
    let rec = state.read(&spec.id).unwrap_or(created.record);
    ledger::release(state, &rec);
    result?;
    Ok(Outcome {
        exit: exit?,
        host_pid: pid,
        timings,
    })
}

/// Waits for `child` while passing forwarded signals on to it.
pub fn wait_forwarding(child: Pid, blocked: &SigSet) -> Result<ExitKind, LifecycleError> {
    loop {
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(WaitStatus::Exited(_, code)) => return Ok(ExitKind::Exited(code)),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(ExitKind::Signaled(sig as i32)),
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => {
                return Err(crate::sys::SysError {
                    call: "waitpid",
                    subject: child.to_string(),
                    errno: e,
                }
                .into())
            }
        }
        match blocked.wait() {
            Ok(Signal::SIGCHLD) | Err(_) => {}
            Ok(sig) => {
                let _ = signal::kill(child, sig);
            }
        }
    }
}
