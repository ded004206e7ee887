//! A container of an OCI runtime, through its command line: the bundle
//! written, `create --bundle --pid-file` with the harness's pipes as the
//! container's stdio, `start`, and when the run ends `delete`. The harness
//! is a child subreaper (set by the runner): once the runtime's create has
//! returned, the container's first process is the harness's child, and its
//! exit status comes from waitpid, whatever the runtime reports. Whatever
//! the runtime leaves (processes in the cgroup the harness chose, the
//! cgroup itself) the harness kills and removes.

use super::oom;
use super::{bundle, pipes, substitute, tail, wait_pid, Ended, How, RunCtx, Started};
use crate::case::Run;
use crate::observe::cgroupfs::Layout;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One runtime command of a run, with its error log: Ok(stdout) or an
/// error naming the runtime, the step and what it said.
fn runtime_cmd(
    ctx: &RunCtx,
    state: &Path,
    as_user: Option<u32>,
    step: &str,
    args: &[String],
    limit: Duration,
    stdio: Option<super::ChildIo>,
) -> Result<String, String> {
    let _runtimes_time = crate::timing::Span::begin(crate::timing::Spent::Runtime);
    let log = ctx.work.join(format!("{step}-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let mut cmd = Command::new(&ctx.runtime.path);
    cmd.arg("--root")
        .arg(state)
        .arg("--log")
        .arg(&log)
        .arg("--log-format")
        .arg("json")
        .arg(step)
        .args(args);
    let capture = stdio.is_none();
    match stdio {
        Some(io) => {
            cmd.stdin(io.stdin).stdout(io.stdout).stderr(io.stderr);
        }
        None => {
            cmd.stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
        }
    }
    if let Some(uid) = as_user {
        cmd.uid(uid).gid(uid);
        cmd.env("XDG_RUNTIME_DIR", state);
    }
    let mut child = cmd.spawn().map_err(|e| {
        format!(
            "runtime {} ({}) {step}: cannot be run: {e}",
            ctx.runtime.name,
            ctx.runtime.path.display()
        )
    })?;
    drop(cmd);
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let (out, err) = if capture {
        let mut o = String::new();
        let mut e = String::new();
        if let Some(mut s) = child.stdout.take() {
            let _ = std::io::Read::read_to_string(&mut s, &mut o);
        }
        if let Some(mut s) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut s, &mut e);
        }
        (o, e)
    } else {
        (String::new(), String::new())
    };
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    let said = || {
        // The last error line of the JSON log (what containerd reads:
        // runc's and crun's "level":"error","msg"; youki's "ERROR" and
        // "message"), else the log's and stderr's tails.
        logged
            .lines()
            .rev()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| {
                v["level"]
                    .as_str()
                    .is_some_and(|l| l.eq_ignore_ascii_case("error"))
            })
            .and_then(|v| {
                v["msg"]
                    .as_str()
                    .or(v["message"].as_str())
                    .map(String::from)
            })
            .map(|m| one_paragraph(&m))
            .unwrap_or_else(|| tail(&format!("{logged}{err}")))
    };
    match status {
        Some(s) if s.success() => Ok(out),
        Some(s) => Err(format!(
            "runtime {} {step} exited with {}: {}",
            ctx.runtime.version,
            super::exit_code(s),
            said()
        )),
        None => Err(format!(
            "runtime {} {step} hung past {:.0} s and was killed: {}",
            ctx.runtime.version,
            limit.as_secs_f64(),
            said()
        )),
    }
}

/// A runtime's error message on one line, without the backtrace a Rust
/// runtime appends (youki's "Stack backtrace:" and its frames).
fn one_paragraph(msg: &str) -> String {
    let msg = msg.split("Stack backtrace:").next().unwrap_or(msg);
    msg.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn state_root(ctx: &RunCtx, as_user: Option<u32>) -> PathBuf {
    match as_user {
        Some(uid) => ctx.work.join(format!("state-{uid}")),
        None => ctx.work.join("state"),
    }
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The bundle of a run: its directory, config.json written, and what the
/// create needs of it.
struct Bundle {
    dir: PathBuf,
    id: String,
    /// The cgroup the harness chose (None for a rootless run).
    cgroup: Option<String>,
}

/// Writes the run's bundle: the root, its resolv.conf, the namespaces it
/// joins, the case's variables replaced, config.json.
fn write_bundle(run: &Run, ctx: &RunCtx) -> Result<Bundle, String> {
    let id = ctx
        .vars
        .iter()
        .find(|(k, _)| *k == format!("{}.id", run.name))
        .map(|(_, v)| v.clone())
        .ok_or_else(|| format!("run '{}' has no ID", run.name))?;
    let dir = ctx.work.join(&run.name);
    std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    let c = &run.container;
    let root = c
        .root
        .as_ref()
        .map(|r| PathBuf::from(substitute(r, ctx.vars)))
        .unwrap_or_else(|| ctx.target.rootfs.clone());
    let resolv = if c.dns.is_empty() {
        None
    } else {
        let path = dir.join("resolv.conf");
        let text: String = c
            .dns
            .iter()
            .map(|ip| format!("nameserver {ip}\n"))
            .collect();
        std::fs::write(&path, text).map_err(|e| format!("write {}: {e}", path.display()))?;
        Some(path)
    };
    let mut joined = Vec::new();
    for (ns, owner) in c.joined() {
        let (_, pid, _) = ctx
            .held
            .iter()
            .find(|(n, _, _)| n == owner)
            .ok_or_else(|| format!("run '{}' joins '{owner}', which is not held", run.name))?;
        joined.push((ns.to_string(), format!("/proc/{pid}/ns/{ns}")));
    }
    let cgroup = format!("{}/{}", ctx.cgroup_parent, run.name);
    let args: Vec<String> = run
        .command
        .iter()
        .map(|a| substitute(a, ctx.vars))
        .collect();
    let rootless = run.as_user.map(|u| (u, u));
    let container = substituted(c, ctx.vars)?;
    let config = bundle::config(
        &container,
        &bundle::Placement {
            id: &id,
            root: &root,
            args: &args,
            cgroups_path: rootless.is_none().then_some(cgroup.as_str()),
            joined,
            resolv_conf: resolv.as_deref(),
            rootless,
        },
    )
    .map_err(|e| format!("run '{}': {e}", run.name))?;
    let text = serde_json::to_string_pretty(&config).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("config.json"), text).map_err(|e| format!("write config.json: {e}"))?;
    Ok(Bundle {
        dir,
        id,
        cgroup: rootless.is_none().then_some(cgroup),
    })
}

/// The container with the case's variables replaced in its mounts and its
/// throttles' devices.
fn substituted(
    c: &crate::case::container::Container,
    vars: &[(String, String)],
) -> Result<crate::case::container::Container, String> {
    let mut container = c.clone();
    for m in &mut container.mounts {
        m.source = m.source.as_ref().map(|s| substitute(s, vars));
        m.destination = substitute(&m.destination, vars);
        m.options = m.options.iter().map(|o| substitute(o, vars)).collect();
    }
    for throttles in [
        &mut container.limits.read_bps,
        &mut container.limits.write_bps,
    ] {
        for t in throttles.iter_mut() {
            t.device = resolved_device(&t.device, vars)?;
        }
    }
    Ok(container)
}

/// `create` and `start` of the run's container.
pub fn start(run: &Run, ctx: &RunCtx, limit: Duration) -> Result<Started, String> {
    let b = write_bundle(run, ctx)?;
    let pid_file = b.dir.join("pid");
    let state = state_root(ctx, run.as_user);
    std::fs::create_dir_all(&state).map_err(|e| format!("mkdir {}: {e}", state.display()))?;
    if let Some(uid) = run.as_user {
        for d in [&b.dir, &state, &ctx.work.to_path_buf()] {
            let _ = nix::unistd::chown(
                d.as_path(),
                Some(nix::unistd::Uid::from_raw(uid)),
                Some(nix::unistd::Gid::from_raw(uid)),
            );
        }
    }
    let (theirs, ours) = pipes(run.hold)?;
    let mut st = Started::new(
        run,
        How::Oci {
            id: b.id.clone(),
            state: state.clone(),
            as_user: run.as_user,
        },
        ours,
        limit,
    );
    if let Some(cgroup) = &b.cgroup {
        st.cgroup = Some(PathBuf::from(cgroup));
        st.mark.lock().unwrap_or_else(|e| e.into_inner()).cgroup = st.cgroup.clone();
        if run.may_not_start {
            st.oom_watch = Some(oom::watch(PathBuf::from(cgroup)));
        }
    }
    let step_limit = limit.min(Duration::from_secs(60));
    let create = [
        "--bundle".into(),
        b.dir.display().to_string(),
        "--pid-file".into(),
        pid_file.display().to_string(),
        b.id.clone(),
    ];
    let created = runtime_cmd(
        ctx,
        &state,
        run.as_user,
        "create",
        &create,
        step_limit,
        Some(theirs),
    )
    .and_then(|_| {
        read_pid(&pid_file).ok_or_else(|| {
            format!(
                "runtime {} create wrote no pid file at {}",
                ctx.runtime.version,
                pid_file.display()
            )
        })
    })
    .and_then(|pid| {
        note_created(&mut st, pid);
        let start = std::slice::from_ref(&b.id);
        runtime_cmd(ctx, &state, run.as_user, "start", start, step_limit, None).map(|_| pid)
    });
    match created {
        Ok(_) => {
            st.running = Some(crate::timing::Span::begin(crate::timing::Spent::Case));
            Ok(st)
        }
        Err(e) => {
            clean_up(ctx, &st);
            if run.may_not_start {
                st.how = How::NotStarted(e);
                return Ok(st);
            }
            Err(create_error(run, st, &e))
        }
    }
}

/// What the harness reads as soon as the container's first process
/// exists: its PID, the cgroup's CPU counter, whether it is in the cgroup
/// the harness chose.
fn note_created(st: &mut Started, pid: i32) {
    st.pid = Some(pid);
    st.cpu_at_start_ns = st
        .cgroup
        .as_ref()
        .and_then(|c| Layout::read().cgroup(c).cpu_usage_ns());
    st.placed = st.cgroup.as_ref().map(|want| {
        let layout = Layout::read();
        let expected = layout.cgroup(want);
        layout.of_pid(pid).is_some_and(|actual| {
            actual
                .dirs
                .iter()
                .any(|(c, d)| expected.dir(c) == Some(d.as_path()))
        })
    });
}

/// A create or start that failed, with what the runtime said on the run's
/// own stderr (crun writes its error there rather than in the log).
fn create_error(run: &Run, mut st: Started, e: &str) -> String {
    drop(st.stdin.take());
    let (_, stderr, _) = st.output();
    let said = one_paragraph(&tail(&stderr));
    let last = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(one_paragraph)
        .unwrap_or_default();
    if said.is_empty() || e.contains(&last) {
        format!("run '{}': {e}", run.name)
    } else {
        format!("run '{}': {e}; its stderr: {said}", run.name)
    }
}

/// A throttle's device with a fixture's variable replaced by its MAJ:MIN.
fn resolved_device(
    d: &crate::case::container::DeviceNumber,
    vars: &[(String, String)],
) -> Result<crate::case::container::DeviceNumber, String> {
    use crate::case::container::DeviceNumber;
    match d {
        DeviceNumber::Variable(v) => {
            let value = substitute(v, vars);
            DeviceNumber::parse_fixed(&value)
                .map(|(major, minor)| DeviceNumber::Fixed { major, minor })
                .ok_or_else(|| format!("the device {v} is '{value}', not MAJ:MIN"))
        }
        fixed => Ok(fixed.clone()),
    }
}

/// `exec --detach --pid-file` into a held run's container.
pub fn start_exec(run: &Run, into: &str, ctx: &RunCtx, limit: Duration) -> Result<Started, String> {
    let (_, _, id) = ctx
        .held
        .iter()
        .find(|(n, _, _)| n == into)
        .ok_or_else(|| format!("run '{}' execs into '{into}', which is not held", run.name))?
        .clone();
    let dir = ctx.work.join(&run.name);
    std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    let pid_file = dir.join("pid");
    let (theirs, ours) = pipes(run.hold)?;
    let mut st = Started::new(run, How::Exec, ours, limit);
    let mut args = vec![
        "--detach".to_string(),
        "--pid-file".into(),
        pid_file.display().to_string(),
        id,
    ];
    args.extend(run.command.iter().map(|a| substitute(a, ctx.vars)));
    let state = state_root(ctx, run.as_user);
    runtime_cmd(
        ctx,
        &state,
        run.as_user,
        "exec",
        &args,
        limit.min(Duration::from_secs(60)),
        Some(theirs),
    )
    .map_err(|e| format!("run '{}': {e}", run.name))?;
    st.pid = Some(read_pid(&pid_file).ok_or_else(|| {
        format!(
            "run '{}': runtime exec --detach wrote no pid file",
            run.name
        )
    })?);
    st.running = Some(crate::timing::Span::begin(crate::timing::Spent::Case));
    Ok(st)
}

/// Deletes the container (force on failure) and removes what it left.
fn clean_up(ctx: &RunCtx, st: &Started) {
    if let How::Oci { id, state, as_user } = &st.how {
        let limit = Duration::from_secs(15);
        if runtime_cmd(
            ctx,
            state,
            *as_user,
            "delete",
            std::slice::from_ref(id),
            limit,
            None,
        )
        .is_err()
        {
            let _ = runtime_cmd(
                ctx,
                state,
                *as_user,
                "delete",
                &["--force".into(), id.clone()],
                limit,
                None,
            );
        }
    }
    if let Some(path) = &st.cgroup {
        let top = ctx
            .cgroup_parent
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or("");
        Layout::read().cgroup(path).remove(top);
    }
}

/// Ends the run: stdin closed, the process reaped (killed past the
/// deadline), the cgroup's counters read, the container deleted.
pub fn finish(mut st: Started, ctx: &RunCtx) -> Result<Ended, String> {
    drop(st.stdin.take());
    if let How::NotStarted(why) = &st.how {
        let why = why.clone();
        let seen = oom::stop(&mut st);
        let (stdout, stderr, seconds) = st.output();
        return Ok(Ended {
            exit: -1,
            stdout,
            stderr,
            seconds,
            outcome: "not started",
            oom_kills_seen: seen.map(|s| s.kills),
            oom_events_seen: seen.map(|s| s.ooms),
            start_error: Some(why),
            ..Default::default()
        });
    }
    let pid = st.pid;
    let exit = pid.and_then(|p| wait_pid(p, st.deadline));
    st.account_running();
    let timed_out = pid.is_some() && exit.is_none();
    if timed_out {
        if let (How::Oci { id, state, as_user }, Some(_)) = (&st.how, pid) {
            let _ = runtime_cmd(
                ctx,
                state,
                *as_user,
                "kill",
                &[id.clone(), "KILL".into()],
                Duration::from_secs(10),
                None,
            );
        }
        if let Some(p) = pid {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = wait_pid(p, Instant::now() + Duration::from_secs(5));
        }
    }
    // Read before delete: the counters go with the cgroup.
    let mut counters = st
        .cgroup
        .as_ref()
        .map(|c| Layout::read().cgroup(c).counters())
        .unwrap_or_default();
    // Split the CPU counter at `start`: before it is the runtime's set-up,
    // after it the process the case ran.
    if let Some(placed) = st.placed {
        counters.insert("placed", u64::from(placed));
    }
    if let Some(&total) = counters.get("cpu_usage_ns") {
        if let Some(at_start) = st.cpu_at_start_ns {
            counters.insert("cpu_at_start_ns", at_start);
            counters.insert("cpu_since_start_ns", total.saturating_sub(at_start));
        }
        let (marked, end) = {
            let m = st.mark.lock().unwrap_or_else(|e| e.into_inner());
            (m.cpu_ns, m.cpu_end_ns)
        };
        if let Some(at_mark) = marked {
            let end = end.unwrap_or(total);
            counters.insert("cpu_since_mark_ns", end.saturating_sub(at_mark));
        }
    }
    if let Some(m) = st
        .mark
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .memory_bytes
    {
        counters.insert("memory_at_mark_bytes", m);
    }
    let seen = oom::stop(&mut st);
    let kills = seen.map(|s| s.kills.max(counters.get("oom_kill").copied().unwrap_or(0)));
    let ooms = seen.map(|s| s.ooms.max(counters.get("oom").copied().unwrap_or(0)));
    clean_up(ctx, &st);
    let name = st.run.name.clone();
    let limit = st.limit();
    let (stdout, stderr, seconds) = st.output();
    if timed_out {
        return Err(format!(
            "run '{name}' timed out after {:.1} s; stdout tail: {}; stderr tail: {}",
            limit.as_secs_f64(),
            tail(&stdout),
            tail(&stderr)
        ));
    }
    let exit = exit.unwrap_or(-1);
    Ok(Ended {
        exit,
        stdout,
        stderr,
        seconds,
        pid,
        counters,
        outcome: if exit > 128 { "killed" } else { "exited" },
        oom_kills_seen: kills,
        oom_events_seen: ooms,
        start_error: None,
    })
}
