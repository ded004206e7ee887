//! Driving the runtime under test: a run becomes a process the harness
//! started, whose exit status, output and cgroup it reads itself.
//!
//! * [`oci`]: a container of any OCI runtime (its bundle written by
//!   [`bundle`], then create/start/delete), the harness its child
//!   subreaper, so it reaps the container's first process whatever the
//!   runtime does;
//! * [`kcell_cli`]: a container of kcell's own CLI (cases of scope kcell);
//! * a plain process on the target (`on = "host"`, the controls).

pub mod bundle;
pub mod kcell_cli;
pub mod oci;
pub mod oom;
pub mod runtime;

use crate::case::{Run, RunKind};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub use runtime::Runtime;

/// Where cases run and with what.
#[derive(Debug, Clone)]
pub struct Target {
    /// "host" or "deb-6.1-cloud/v1".
    pub name: String,
    /// The multi-call binary: the in-container helper as kcell-probe, kcell's
    /// CLI as kcell, kcell-oci; host marker processes.
    pub agent: PathBuf,
    /// kcell's CLI (scope kcell).
    pub kcell: PathBuf,
    /// The busybox root with kcell-probe.
    pub rootfs: PathBuf,
    /// kcell's image store.
    pub store: PathBuf,
}

/// What a run needs to know of its case: its directory, the variables,
/// and the held runs it may join or exec into.
pub struct RunCtx<'a> {
    /// The case's work directory (bundles, pid files, state roots).
    pub work: &'a Path,
    /// The trial's cgroup parent, e.g. /kcell-harness/<case>-<n>.
    pub cgroup_parent: &'a str,
    /// `{key}` substitutions.
    pub vars: &'a [(String, String)],
    /// The runtime under test.
    pub runtime: &'a Runtime,
    /// The target.
    pub target: &'a Target,
    /// The held runs (name, host PID, container ID), for joins and exec.
    pub held: Vec<(String, i32, String)>,
    /// The case exercises kcell's own commands: its containers are kcell
    /// CLI runs.
    pub scope_kcell: bool,
}

/// Replaces each `{key}` of `vars` in `text`.
pub fn substitute(text: &str, vars: &[(String, String)]) -> String {
    let mut s = text.to_string();
    for (k, v) in vars {
        s = s.replace(&format!("{{{k}}}"), v);
    }
    s
}

/// How a started run is to be ended.
pub enum How {
    /// A container of an OCI runtime: its ID and state root.
    Oci {
        /// The container ID.
        id: String,
        /// `--root` of every runtime command.
        state: PathBuf,
        /// The uid the runtime ran as (rootless).
        as_user: Option<u32>,
    },
    /// An exec'd process of an OCI runtime (reaped, no delete).
    Exec,
    /// A container that could not be made (`may_not_start`): the runtime's words.
    NotStarted(String),
    /// A process the harness spawned: kcell's CLI or a host process.
    Child(Child),
}

/// A run in progress.
pub struct Started {
    /// The run.
    pub run: Run,
    /// How it ends.
    pub how: How,
    /// Host PID of the first process (None until known).
    pub pid: Option<i32>,
    /// Where kcell's CLI writes that PID (read when first asked).
    pub pid_file: Option<PathBuf>,
    /// Its stdin, held open while the run holds.
    pub stdin: Option<std::fs::File>,
    /// Stdout lines as they come (for KCELL_READY).
    pub lines: mpsc::Receiver<String>,
    out_reader: std::thread::JoinHandle<String>,
    err_reader: std::thread::JoinHandle<String>,
    /// The cgroup the harness chose for it (container runs of OCI runtimes).
    pub cgroup: Option<PathBuf>,
    /// The cgroup's CPU counter when `create` returned: what the runtime's
    /// own set-up cost inside the container's cgroup, before `start`.
    pub cpu_at_start_ns: Option<u64>,
    /// Whether the first process was, after `create`, in the cgroup the
    /// config named (cgroupsPath): the cgroup the harness reads.
    pub placed: Option<bool>,
    /// The cgroup's CPU counter when the process printed its mark.
    pub mark: std::sync::Arc<std::sync::Mutex<Mark>>,
    /// A watcher of the cgroup's OOM counter: (stop, thread -> the most seen).
    pub oom_watch: Option<(
        std::sync::Arc<std::sync::atomic::AtomicBool>,
        std::thread::JoinHandle<oom::Seen>,
    )>,
    began: Instant,
    /// Since when its process runs, and whose time that is (timing.rs):
    /// the case's, or the runtime's for a run of kcell's CLI.
    pub(crate) running: Option<crate::timing::Span>,
    /// When it must have ended.
    pub deadline: Instant,
    limit: Duration,
}

/// What a finished run showed.
#[derive(Debug, Default)]
pub struct Ended {
    /// Exit status (128+N for a signal), from waitpid.
    pub exit: i64,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
    /// Seconds from start to end.
    pub seconds: f64,
    /// Host PID.
    pub pid: Option<i32>,
    /// The cgroup's counters after the process ended, before delete.
    pub counters: std::collections::BTreeMap<&'static str, u64>,
    /// How it ended: "exited", "killed" (by a signal) or "not started".
    pub outcome: &'static str,
    /// The most OOM kills the cgroup counted while watched (`may_not_start`).
    pub oom_kills_seen: Option<u64>,
    /// On v2, the allocations at the limit about to fail the watch saw
    /// (memory.events `oom`): also when no process was killed.
    pub oom_events_seen: Option<u64>,
    /// Why it did not start.
    pub start_error: Option<String>,
}

/// The ends of a run's stdio pipes that the process gets.
pub(crate) struct ChildIo {
    pub(crate) stdin: Stdio,
    pub(crate) stdout: Stdio,
    pub(crate) stderr: Stdio,
}

/// The harness's ends.
pub(crate) struct OurIo {
    stdin: Option<std::fs::File>,
    out: std::fs::File,
    err: std::fs::File,
}

pub(crate) fn pipes(hold: bool) -> Result<(ChildIo, OurIo), String> {
    let pipe =
        || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe2: {e}"));
    let (in_r, in_w) = if hold {
        let (r, w) = pipe()?;
        (Stdio::from(r), Some(std::fs::File::from(w)))
    } else {
        (Stdio::null(), None)
    };
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    Ok((
        ChildIo {
            stdin: in_r,
            stdout: Stdio::from(out_w),
            stderr: Stdio::from(err_w),
        },
        OurIo {
            stdin: in_w,
            out: std::fs::File::from(out_r),
            err: std::fs::File::from(err_r),
        },
    ))
}

/// A reading taken when a workload prints `KCELL_MARK` (inside::MARK):
/// the cgroup's CPU and memory counters at that moment, read by the thread that reads
/// its stdout, so the counter and the workload's own clock can be compared
/// over the same window (exec and set-up excluded); and one at
/// `KCELL_MARK_END`, which a held workload prints before READY (its exit
/// excluded: the lines are read in order, so the reading is taken before
/// the harness sees READY and lets the process go).
#[derive(Debug, Default)]
pub struct Mark {
    /// The run's cgroup (known once the runtime's create is under way).
    pub cgroup: Option<PathBuf>,
    /// The CPU counter at the mark, ns.
    pub cpu_ns: Option<u64>,
    /// The memory in use at the mark (v1 usage_in_bytes, v2 memory.current).
    pub memory_bytes: Option<u64>,
    /// The CPU counter at the end mark (`KCELL_MARK_END`), ns.
    pub cpu_end_ns: Option<u64>,
}

impl Started {
    pub(crate) fn new(run: &Run, how: How, io: OurIo, limit: Duration) -> Started {
        let (line_tx, lines) = mpsc::channel::<String>();
        let out = io.out;
        let mark = std::sync::Arc::new(std::sync::Mutex::new(Mark::default()));
        let marked = mark.clone();
        let out_reader = std::thread::spawn(move || {
            let mut all = String::new();
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let (start, end) = (line == kcell_probe::MARK, line == kcell_probe::MARK_END);
                if start || end {
                    let mut m = marked.lock().unwrap_or_else(|e| e.into_inner());
                    let counters = m.cgroup.as_ref().map(|c| {
                        crate::observe::cgroupfs::Layout::read()
                            .cgroup(c)
                            .counters()
                    });
                    if let Some(c) = counters {
                        if start {
                            m.cpu_ns = c.get("cpu_usage_ns").copied();
                            m.memory_bytes = c.get("memory_bytes").copied();
                        } else {
                            m.cpu_end_ns = c.get("cpu_usage_ns").copied();
                        }
                    }
                }
                let _ = line_tx.send(line.clone());
                all.push_str(&line);
                all.push('\n');
            }
            all
        });
        let mut err = io.err;
        let err_reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        let began = Instant::now();
        Started {
            run: run.clone(),
            how,
            pid: None,
            pid_file: None,
            stdin: io.stdin,
            lines,
            out_reader,
            err_reader,
            cgroup: None,
            cpu_at_start_ns: None,
            placed: None,
            mark,
            oom_watch: None,
            began,
            running: None,
            deadline: began + limit,
            limit,
        }
    }

    /// Collects the output once every writer is gone.
    pub(crate) fn output(self) -> (String, String, f64) {
        let seconds = (self.began.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
        (
            self.out_reader.join().unwrap_or_default(),
            self.err_reader.join().unwrap_or_default(),
            seconds,
        )
    }

    /// Adds the time its process ran to whose it was (timing.rs); once.
    pub(crate) fn account_running(&mut self) {
        drop(self.running.take());
    }

    /// The limit, for messages.
    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// The host PID of its first process.
    pub fn host_pid(&self) -> Option<i32> {
        self.pid.or_else(|| {
            std::fs::read_to_string(self.pid_file.as_ref()?)
                .ok()?
                .trim()
                .parse()
                .ok()
        })
    }
}

/// The shell convention for a wait status.
pub fn exit_code(status: std::process::ExitStatus) -> i64 {
    status
        .code()
        .map_or_else(|| 128 + i64::from(status.signal().unwrap_or(0)), i64::from)
}

/// Waits for the process `pid` (a child, or reparented to this subreaper)
/// until `deadline`; Some(exit status) or None when it outlived it.
pub fn wait_pid(pid: i32, deadline: Instant) -> Option<i64> {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let p = nix::unistd::Pid::from_raw(pid);
    loop {
        match waitpid(p, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, c)) => return Some(i64::from(c)),
            Ok(WaitStatus::Signaled(_, s, _)) => return Some(128 + s as i64),
            Ok(_) => {}
            // Not our child (never reparented here): watch it go instead.
            Err(nix::errno::Errno::ECHILD) => {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    return Some(-1);
                }
            }
            Err(_) => {}
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Starts `run` as the case and runtime say.
pub fn start(run: &Run, ctx: &RunCtx, limit: Duration) -> Result<Started, String> {
    match (run.kind(), &run.exec) {
        (RunKind::KcellCommand, _) => kcell_cli::start(run, ctx, limit),
        (RunKind::Host, _) => start_host(run, ctx, limit),
        (RunKind::Exec, Some(into)) if ctx.scope_kcell => {
            kcell_cli::start_exec(run, into, ctx, limit)
        }
        (RunKind::Exec, Some(into)) => oci::start_exec(run, into, ctx, limit),
        (RunKind::Exec, None) => Err(format!("run '{}' is an exec into no run", run.name)),
        (RunKind::Container, _) if ctx.scope_kcell || run.uses_kcell_cli() => {
            kcell_cli::start(run, ctx, limit)
        }
        (RunKind::Container, _) => oci::start(run, ctx, limit),
    }
}

/// A plain process on the target: the control that sees the host.
fn start_host(run: &Run, ctx: &RunCtx, limit: Duration) -> Result<Started, String> {
    let (theirs, ours) = pipes(run.hold)?;
    let args: Vec<String> = run
        .command
        .iter()
        .map(|a| substitute(a, ctx.vars))
        .collect();
    let (prog, rest) = args.split_first().ok_or("no command")?;
    let mut cmd = Command::new(prog);
    cmd.args(rest)
        .stdin(theirs.stdin)
        .stdout(theirs.stdout)
        .stderr(theirs.stderr);
    if let Some(uid) = run.as_user {
        cmd.uid(uid).gid(uid);
    }
    // kcell-probe is the agent under another name; on the host it is the agent.
    if Path::new(prog)
        .file_name()
        .is_some_and(|n| n == "kcell-probe")
    {
        cmd.arg0("kcell-probe");
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("run '{}': spawn {prog}: {e}", run.name))?;
    // The child has its ends; only ours stay here.
    drop(cmd);
    let pid = child.id() as i32;
    let mut st = Started::new(run, How::Child(child), ours, limit);
    st.pid = Some(pid);
    st.running = Some(crate::timing::Span::begin(crate::timing::Spent::Case));
    Ok(st)
}

/// Ends a run: releases it, waits for it, reads its cgroup before the
/// runtime deletes it, deletes it, and cleans what the runtime left.
pub fn finish(st: Started, ctx: &RunCtx) -> Result<Ended, String> {
    match &st.how {
        How::Oci { .. } | How::Exec | How::NotStarted(_) => oci::finish(st, ctx),
        How::Child(_) => finish_child(st),
    }
}

fn finish_child(mut st: Started) -> Result<Ended, String> {
    let How::Child(child) = &mut st.how else {
        return Err("not a child run".into());
    };
    if st.run.kill_runtime {
        // The runtime dies mid-run; its container follows (PR_SET_PDEATHSIG),
        // its record and cgroup stay behind for the next command to clean.
        let _ = child.kill();
    }
    drop(st.stdin.take());
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| format!("wait: {e}"))? {
            break Some(status);
        }
        if Instant::now() >= st.deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    st.account_running();
    let pid = st.host_pid();
    let name = st.run.name.clone();
    let limit = st.limit;
    let (stdout, stderr, seconds) = st.output();
    let Some(status) = status else {
        return Err(format!(
            "run '{name}' timed out after {:.1} s; stdout tail: {}; stderr tail: {}",
            limit.as_secs_f64(),
            tail(&stdout),
            tail(&stderr)
        ));
    };
    let exit = exit_code(status);
    Ok(Ended {
        exit,
        stdout,
        stderr,
        seconds,
        pid,
        outcome: if exit > 128 { "killed" } else { "exited" },
        ..Default::default()
    })
}

/// The last 400 characters of `s`.
pub fn tail(s: &str) -> String {
    let t = s.trim();
    let start = t.char_indices().rev().nth(399).map_or(0, |(i, _)| i);
    t[start..].replace('\n', " | ")
}

/// Reaps whatever was reparented to this subreaper and has exited.
pub fn reap_orphans() {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    while let Ok(s) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        if s == WaitStatus::StillAlive {
            break;
        }
    }
}
