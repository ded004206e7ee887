//! Each OCI command: a few lines over the lifecycle library.

use super::{config, features, log::Log, Cmd, CreateArgs, ExecArgs, RunArgs};
use crate::lifecycle::{self, CreateOptions};
use crate::state::{StateDir, Status};
use std::path::PathBuf;

type Result<T> = std::result::Result<T, (i32, String)>;

fn fail(e: impl std::fmt::Display) -> (i32, String) {
    (1, e.to_string())
}

/// `update`'s flags (runc's), or a LinuxResources JSON.
#[derive(clap::Args, Debug)]
pub struct UpdateArgs {
    /// A file with the linux.resources JSON, or - for stdin.
    #[arg(short, long)]
    resources: Option<String>,
    /// blkio weight (10..1000).
    #[arg(long)]
    blkio_weight: Option<u16>,
    /// CPU CFS period (µs).
    #[arg(long)]
    cpu_period: Option<u64>,
    /// CPU CFS quota (µs).
    #[arg(long, allow_hyphen_values = true)]
    cpu_quota: Option<i64>,
    /// CPU shares.
    #[arg(long)]
    cpu_share: Option<u64>,
    /// Not supported.
    #[arg(long)]
    cpu_rt_period: Option<u64>,
    /// Not supported.
    #[arg(long)]
    cpu_rt_runtime: Option<i64>,
    /// CPUs (e.g. 0-1).
    #[arg(long)]
    cpuset_cpus: Option<String>,
    /// Memory nodes.
    #[arg(long)]
    cpuset_mems: Option<String>,
    /// Memory limit (bytes or a size such as 64m).
    #[arg(long, allow_hyphen_values = true)]
    memory: Option<String>,
    /// Memory reservation.
    #[arg(long, allow_hyphen_values = true)]
    memory_reservation: Option<String>,
    /// Memory plus swap (-1: unlimited).
    #[arg(long, allow_hyphen_values = true)]
    memory_swap: Option<String>,
    /// Most tasks.
    #[arg(long, allow_hyphen_values = true)]
    pids_limit: Option<i64>,
    /// The container.
    id: String,
}

/// Runs one command; Err is (exit status, message).
pub(super) fn execute(cmd: Cmd, state: &StateDir, log: &Log) -> Result<i32> {
    match cmd {
        Cmd::Create(a) => create(state, &a, false, log).map(|_| 0),
        Cmd::Start { id } => lifecycle::start(state, &id).map(|()| 0).map_err(fail),
        Cmd::State { id } => {
            let rec = lifecycle::lookup(state, &id).map_err(fail)?;
            let text = serde_json::to_string_pretty(&lifecycle::state_json(&rec)).map_err(fail)?;
            print!("{text}");
            Ok(0)
        }
        Cmd::Kill { all, id, signal } => {
            let sig = parse_signal(signal.as_deref().unwrap_or("SIGTERM")).map_err(fail)?;
            lifecycle::kill(state, &id, sig, all)
                .map(|()| 0)
                .map_err(fail)
        }
        Cmd::Delete { force, id } => lifecycle::delete(state, &id, force)
            .map(|()| 0)
            .map_err(fail),
        Cmd::Run(a) => run(state, a, log),
        Cmd::Exec(a) => exec(state, a),
        Cmd::Pause { id } => lifecycle::pause(state, &id).map(|()| 0).map_err(fail),
        Cmd::Resume { id } => lifecycle::resume(state, &id).map(|()| 0).map_err(fail),
        Cmd::Ps {
            format,
            id,
            ps_args,
        } => ps(state, &format, &id, &ps_args),
        Cmd::List { format, quiet } => list(state, &format, quiet),
        Cmd::Update(a) => update(state, a),
        Cmd::Events {
            stats,
            interval,
            id,
        } => events(state, stats, &interval, &id),
        Cmd::Features => {
            println!(
                "{}",
                serde_json::to_string_pretty(&features::features()).map_err(fail)?
            );
            Ok(0)
        }
        Cmd::Spec { bundle, rootless } => {
            let path = bundle.join("config.json");
            if path.exists() {
                return Err(fail(format!(
                    "File {} exists. Remove it first",
                    path.display()
                )));
            }
            let text =
                serde_json::to_string_pretty(&features::default_config(rootless)).map_err(fail)?;
            std::fs::write(&path, text)
                .map_err(|e| fail(format!("write {}: {e}", path.display())))?;
            Ok(0)
        }
        Cmd::Checkpoint { .. } | Cmd::Restore { .. } => Err(fail(
            "checkpoint and restore are not supported by kcell (no CRIU integration)",
        )),
    }
}

/// A signal by number, or by name with or without SIG (runc's parseSignal).
pub fn parse_signal(text: &str) -> std::result::Result<nix::sys::signal::Signal, String> {
    use std::str::FromStr;
    if let Ok(n) = text.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n)
            .map_err(|_| format!("unknown signal \"{text}\": not a signal number of this system"));
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    nix::sys::signal::Signal::from_str(&name)
        .map_err(|_| format!("unknown signal \"{text}\": a name such as TERM, SIGKILL or a number"))
}

/// The spec of a bundle's container, with what create's flags add; each
/// property of the config that kcell ignores is a warning in the log.
fn spec_of(a: &CreateArgs, log: &Log) -> Result<crate::spec::ContainerSpec> {
    crate::spec::validate_id(&a.id).map_err(fail)?;
    let bundle = std::fs::canonicalize(&a.bundle)
        .map_err(|e| fail(format!("bundle {}: {e}", a.bundle.display())))?;
    let loaded = config::load(&bundle).map_err(fail)?;
    let accepted = config::to_spec(&a.id, &bundle, &loaded).map_err(fail)?;
    for warning in accepted.ignored.warnings() {
        log.warn(&format!("config.json: {warning}"));
    }
    let mut spec = accepted.spec;
    spec.no_pivot = a.no_pivot;
    spec.new_keyring = !a.no_new_keyring;
    if spec.process.terminal && a.console_socket.is_none() {
        return Err(fail(
            "cannot allocate tty if kcell-oci will detach without setting console socket (process.terminal needs --console-socket)",
        ));
    }
    if !spec.process.terminal && a.console_socket.is_some() {
        return Err(fail(
            "cannot use console socket if kcell-oci will not allocate a tty (process.terminal is false)",
        ));
    }
    Ok(spec)
}

/// LISTEN_FDS counts when it is this process's (LISTEN_PID): those
/// descriptors go to the container, which sees them as its own (pid 1).
fn listen_fds(spec: &mut crate::spec::ContainerSpec) -> u32 {
    let mine = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id());
    let n = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|_| mine)
        .unwrap_or(0);
    if n > 0 {
        spec.process.set_env(&format!("LISTEN_FDS={n}"));
        spec.process.set_env("LISTEN_PID=1");
    }
    n
}

fn absolute(p: &Option<PathBuf>) -> Option<PathBuf> {
    p.as_ref().map(|p| {
        if p.is_absolute() {
            p.clone()
        } else {
            std::env::current_dir().unwrap_or_default().join(p)
        }
    })
}

fn create(state: &StateDir, a: &CreateArgs, owned: bool, log: &Log) -> Result<lifecycle::Created> {
    let mut spec = spec_of(a, log)?;
    let listen = listen_fds(&mut spec);
    let opts = CreateOptions {
        owned,
        pid_file: absolute(&a.pid_file),
        console_socket: absolute(&a.console_socket),
        preserve_fds: listen + a.preserve_fds,
    };
    log.debug(&format!("create {} from {}", a.id, a.bundle.display()));
    lifecycle::create(state, &spec, &opts).map_err(fail)
}

fn run(state: &StateDir, a: RunArgs, log: &Log) -> Result<i32> {
    if a.detach {
        create(state, &a.create, false, log)?;
        lifecycle::start(state, &a.create.id).map_err(fail)?;
        return Ok(0);
    }
    let mut spec = spec_of(&a.create, log)?;
    let listen = listen_fds(&mut spec);
    let opts = CreateOptions {
        owned: true,
        pid_file: absolute(&a.create.pid_file),
        console_socket: absolute(&a.create.console_socket),
        preserve_fds: listen + a.create.preserve_fds,
    };
    let _ = a.keep;
    match lifecycle::run::run(state, &spec, opts, &mut |_| {}) {
        Ok(outcome) => Ok(outcome.exit.code()),
        Err(e) => Err((e.exit_code().max(1), e.to_string())),
    }
}

/// The process of `exec`: the JSON file's, or the container's own with
/// the command line's changes. Either way the container's seccomp filter.
fn exec_process(rec: &crate::state::Record, a: &ExecArgs) -> Result<crate::spec::Process> {
    if a.process_label.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(fail(
            "--process-label is not supported by kcell (no SELinux)",
        ));
    }
    if a.apparmor.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(fail("--apparmor is not supported by kcell (no AppArmor)"));
    }
    if a.cgroup.is_some() {
        return Err(fail(
            "--cgroup (a sub-cgroup for exec) is not supported by kcell",
        ));
    }
    let mut p = match &a.process {
        Some(file) => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| fail(format!("process file {}: {e}", file.display())))?;
            let oci: oci_spec::runtime::Process = serde_json::from_str(&text)
                .map_err(|e| fail(format!("process file {}: {e}", file.display())))?;
            let mut ignored = config::Ignoring::default();
            let mut p = config::process_of(&oci, &mut ignored).map_err(fail)?;
            for warning in ignored.warnings() {
                eprintln!(
                    "kcell-oci: warning: process file {}: {warning}",
                    file.display()
                );
            }
            p.seccomp = rec.process.seccomp.clone();
            p
        }
        None => {
            if a.command.is_empty() {
                return Err(fail("exec needs a command, or --process FILE"));
            }
            let mut p = rec.process.clone();
            p.args = a.command.clone();
            p.terminal = a.tty;
            if let Some(cwd) = &a.cwd {
                p.cwd = cwd.clone();
            }
            for e in &a.env {
                if !e.contains('=') {
                    return Err(fail(format!("--env '{e}' is not KEY=VALUE")));
                }
                p.set_env(e);
            }
            if let Some(u) = &a.user {
                let (uid, gid) = u.split_once(':').unwrap_or((u, "0"));
                p.uid = uid
                    .parse()
                    .map_err(|_| fail(format!("--user '{u}' is not UID[:GID]")))?;
                p.gid = gid
                    .parse()
                    .map_err(|_| fail(format!("--user '{u}' is not UID[:GID]")))?;
            }
            if !a.additional_gids.is_empty() {
                p.additional_gids = a.additional_gids.clone();
            }
            for c in &a.cap {
                let set = crate::caps::parse(c).map_err(fail)?;
                for s in [
                    &mut p.capabilities.bounding,
                    &mut p.capabilities.effective,
                    &mut p.capabilities.permitted,
                ] {
                    s.0 |= set.0;
                }
            }
            if a.no_new_privs {
                p.no_new_privileges = true;
            }
            p
        }
    };
    if p.terminal && a.console_socket.is_none() {
        return Err(fail("cannot allocate tty without --console-socket"));
    }
    if p.args.is_empty() {
        p.args = a.command.clone();
    }
    Ok(p)
}

fn exec(state: &StateDir, a: ExecArgs) -> Result<i32> {
    let rec = lifecycle::lookup(state, &a.id).map_err(|e| (255, e.to_string()))?;
    if rec.status() == Status::Paused && !a.ignore_paused {
        return Err((
            255,
            format!(
                "container '{}' is paused: exec with --ignore-paused, or resume it",
                a.id
            ),
        ));
    }
    let process = exec_process(&rec, &a).map_err(|(_, m)| (255, m))?;
    let opts = lifecycle::exec::ExecOptions {
        detach: a.detach,
        pid_file: absolute(&a.pid_file),
        console_socket: absolute(&a.console_socket),
        preserve_fds: a.preserve_fds,
    };
    match lifecycle::exec::exec(state, &a.id, &process, &opts) {
        Ok(done) => Ok(done.exit.map_or(0, |e| e.code())),
        Err(e) => Err((255, format!("exec failed: {e}"))),
    }
}

fn ps(state: &StateDir, format: &str, id: &str, ps_args: &[String]) -> Result<i32> {
    let rec = lifecycle::lookup(state, id).map_err(fail)?;
    let pids = rec.cgroup().map(|c| c.pids()).unwrap_or_default();
    match format {
        "json" => {
            println!("{}", serde_json::to_string(&pids).map_err(fail)?);
            Ok(0)
        }
        "table" => {
            let args: Vec<String> = if ps_args.is_empty() {
                vec!["-ef".into()]
            } else {
                ps_args.to_vec()
            };
            let out = std::process::Command::new("ps")
                .args(&args)
                .output()
                .map_err(|e| fail(format!("running ps: {e}")))?;
            let text = String::from_utf8_lossy(&out.stdout);
            let mut lines = text.lines();
            let header = lines.next().unwrap_or("");
            let col = header
                .split_whitespace()
                .position(|h| h == "PID")
                .ok_or_else(|| fail("couldn't find PID field in ps output"))?;
            println!("{header}");
            for l in lines {
                if l.split_whitespace()
                    .nth(col)
                    .and_then(|p| p.parse::<i32>().ok())
                    .is_some_and(|p| pids.contains(&p))
                {
                    println!("{l}");
                }
            }
            Ok(0)
        }
        other => Err(fail(format!(
            "invalid format option '{other}': table or json"
        ))),
    }
}

fn list(state: &StateDir, format: &str, quiet: bool) -> Result<i32> {
    let recs = state.list();
    if quiet {
        for r in &recs {
            println!("{}", r.id);
        }
        return Ok(0);
    }
    match format {
        "json" => {
            let all: Vec<serde_json::Value> = recs.iter().map(lifecycle::state_json).collect();
            if all.is_empty() {
                println!("null");
            } else {
                println!("{}", serde_json::to_string(&all).map_err(fail)?);
            }
            Ok(0)
        }
        "table" => {
            println!(
                "{:<12} {:<8} {:<10} {:<40} {:<32} OWNER",
                "ID", "PID", "STATUS", "BUNDLE", "CREATED"
            );
            for r in &recs {
                let s = lifecycle::state_json(r);
                println!(
                    "{:<12} {:<8} {:<10} {:<40} {:<32} root",
                    r.id,
                    s["pid"],
                    s["status"].as_str().unwrap_or(""),
                    s["bundle"].as_str().unwrap_or(""),
                    s["created"].as_str().unwrap_or("")
                );
            }
            Ok(0)
        }
        other => Err(fail(format!(
            "invalid format option '{other}': table or json"
        ))),
    }
}

fn size(flag: &str, v: &Option<String>) -> Result<Option<i64>> {
    match v.as_deref() {
        None => Ok(None),
        Some("-1") => Ok(Some(-1)),
        Some(s) => crate::cgroup::resources::parse_size(s)
            .map(|n| Some(n as i64))
            .map_err(|e| fail(format!("--{flag}: {e}"))),
    }
}

fn update(state: &StateDir, a: UpdateArgs) -> Result<i32> {
    let res = if let Some(src) = &a.resources {
        let text = if src == "-" {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).map_err(fail)?;
            s
        } else {
            std::fs::read_to_string(src).map_err(|e| fail(format!("{src}: {e}")))?
        };
        let oci: oci_spec::runtime::LinuxResources =
            serde_json::from_str(&text).map_err(|e| fail(format!("resources {src}: {e}")))?;
        let mut r = config::resources(&oci).map_err(fail)?;
        // update leaves devices alone (as runc's SkipDevices).
        r.devices.clear();
        r
    } else {
        if a.cpu_rt_period.is_some() || a.cpu_rt_runtime.is_some() {
            return Err(fail(
                "--cpu-rt-period/--cpu-rt-runtime are not supported by kcell",
            ));
        }
        let mut r = crate::cgroup::resources::Resources::default();
        let memory = size("memory", &a.memory)?;
        r.memory = memory.filter(|m| *m > 0).map(|m| m as u64);
        r.memory_reservation = size("memory-reservation", &a.memory_reservation)?
            .filter(|m| *m > 0)
            .map(|m| m as u64);
        if let (Some(total), Some(limit)) = (
            size("memory-swap", &a.memory_swap)?.filter(|m| *m > 0),
            r.memory,
        ) {
            r.swap = Some((total as u64).saturating_sub(limit));
        }
        if let Some(q) = a.cpu_quota.filter(|q| *q > 0) {
            r.cpu_max = Some(crate::cgroup::resources::CpuMax {
                quota_us: q as u64,
                period_us: a
                    .cpu_period
                    .unwrap_or(crate::cgroup::resources::CPU_PERIOD_US),
            });
        }
        r.cpu_shares = a.cpu_share;
        r.cpuset_cpus = a
            .cpuset_cpus
            .as_deref()
            .map(|c| crate::cgroup::resources::parse_cpu_list(c, &crate::cgroup::online_cpus()))
            .transpose()
            .map_err(fail)?;
        r.cpuset_mems = a.cpuset_mems.clone();
        r.pids = a.pids_limit.filter(|p| *p > 0).map(|p| p as u64);
        r.blkio_weight = a.blkio_weight;
        r
    };
    lifecycle::update(state, &a.id, &res)
        .map(|()| 0)
        .map_err(fail)
}

/// One stats event in runc's shape (types/events.go).
fn stats_event(rec: &crate::state::Record) -> serde_json::Value {
    let s = rec.cgroup().map(|c| c.stats()).unwrap_or_default();
    let pids = rec.cgroup().map(|c| c.pids().len()).unwrap_or(0);
    serde_json::json!({
        "type": "stats",
        "id": rec.id,
        "data": {
            "cpu": {"usage": {"total": s.cpu_usage_ns.unwrap_or(0), "kernel": 0, "user": 0},
                    "throttling": {}},
            "memory": {
                "usage": {"usage": s.memory_bytes.unwrap_or(0), "max": s.memory_peak_bytes.unwrap_or(0),
                          "limit": 0, "failcnt": s.memory_limit_hits.unwrap_or(0)},
                "swap": {"usage": s.swap_bytes.unwrap_or(0), "limit": 0, "failcnt": 0},
                "raw": {"oom_kill": s.oom_kill.unwrap_or(0)}
            },
            "pids": {"current": s.pids_current.unwrap_or(pids as u64), "limit": 0},
            "blkio": {"ioServiceBytesRecursive": [
                {"major": 0, "minor": 0, "op": "Read", "value": s.io_read_bytes.unwrap_or(0)},
                {"major": 0, "minor": 0, "op": "Write", "value": s.io_write_bytes.unwrap_or(0)}
            ]}
        }
    })
}

fn events(state: &StateDir, once: bool, interval: &str, id: &str) -> Result<i32> {
    let rec = lifecycle::lookup(state, id).map_err(fail)?;
    if rec.status() == Status::Stopped {
        return Err(fail(format!("container with id {id} is not running")));
    }
    if once {
        println!("{}", stats_event(&rec));
        return Ok(0);
    }
    let secs: f64 = interval.trim_end_matches('s').parse().map_err(|_| {
        fail(format!(
            "--interval '{interval}' is not a duration such as 5s"
        ))
    })?;
    while lifecycle::lookup(state, id).is_ok_and(|r| r.status() != Status::Stopped) {
        println!("{}", stats_event(&rec));
        std::thread::sleep(std::time::Duration::from_secs_f64(secs.max(0.1)));
    }
    Ok(0)
}
