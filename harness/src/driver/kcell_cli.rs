//! Runs through kcell's own command line, for the cases that exercise it
//! (scope "kcell": images, ps, exec, gc, bridges, a killed runtime): a
//! container is `kcell run --name ID --pid-file P FLAGS ROOT -- CMD`, its
//! flags made from the run's container description; `kcell = [...]` runs a
//! command of the CLI itself.

use super::{pipes, substitute, How, RunCtx, Started};
use crate::case::container::{Container, NsChoice, SeccompChoice};
use crate::case::Run;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// kcell's `run` flags for `c`: its namespaces, limits, mounts and process.
pub fn flags(c: &Container, ctx: &RunCtx) -> Result<Vec<String>, String> {
    let mut f = Flags::default();
    if let Some(h) = &c.hostname {
        f.push("--hostname", h.clone());
    }
    namespace_flags(&mut f, c, ctx)?;
    limit_flags(&mut f, c, ctx);
    mount_flags(&mut f, c, ctx)?;
    process_flags(&mut f, c);
    // A flag without a value was pushed with an empty one.
    f.0.retain(|a| !a.is_empty());
    Ok(f.0)
}

/// Flags and their values, in order.
#[derive(Default)]
struct Flags(Vec<String>);

impl Flags {
    fn push(&mut self, flag: &str, value: String) {
        self.0.push(flag.to_string());
        self.0.push(value);
    }
}

/// The namespaces made, not made or joined; id maps; clock offsets.
fn namespace_flags(f: &mut Flags, c: &Container, ctx: &RunCtx) -> Result<(), String> {
    let mut push = |a: &str, b: String| f.push(a, b);
    let mut no_ns = Vec::new();
    for (ns, choice) in &c.namespaces {
        match choice {
            NsChoice::Host => no_ns.push(ns.clone()),
            NsChoice::New if ns == "user" || ns == "time" => {}
            NsChoice::New => {}
            NsChoice::Join(owner) if ns == "net" => {
                let (_, _, id) = ctx
                    .held
                    .iter()
                    .find(|(n, _, _)| n == owner)
                    .ok_or_else(|| format!("'{owner}' is not held"))?;
                push("--net", format!("container:{id}"));
            }
            NsChoice::Join(_) => {
                return Err(format!(
                    "kcell's CLI joins only the net namespace, not {ns}"
                ))
            }
        }
    }
    if c.namespaces.get("user") == Some(&NsChoice::New)
        || c.namespaces.get("time") == Some(&NsChoice::New)
    {
        let new: Vec<&str> = c.new_namespaces();
        push("--ns", new.join(","));
    } else if !no_ns.is_empty() {
        push("--no-ns", no_ns.join(","));
    }
    for m in &c.uid_map {
        push("--uid-map", m.clone());
    }
    for m in &c.gid_map {
        push("--gid-map", m.clone());
    }
    if let Some(o) = c.time_offsets {
        push("--boottime-offset", o.boottime.to_string());
        push("--monotonic-offset", o.monotonic.to_string());
    }
    Ok(())
}

/// The cgroup limits.
fn limit_flags(f: &mut Flags, c: &Container, ctx: &RunCtx) {
    let mut push = |a: &str, b: String| f.push(a, b);
    let l = &c.limits;
    if let Some(x) = l.cpus {
        push("--cpus", x.to_string());
    }
    if let Some(x) = l.cpu_shares {
        push("--cpu-shares", x.to_string());
    }
    if let Some(x) = &l.cpuset {
        push("--cpuset-cpus", x.0.clone());
    }
    if let Some(x) = l.memory {
        push("--memory", x.0.to_string());
    }
    if let Some(x) = l.swap {
        push("--swap", x.0.to_string());
    }
    if let Some(x) = l.pids {
        push("--pids", x.to_string());
    }
    for r in &l.read_bps {
        push("--device-read-bps", substitute(&r.text, ctx.vars));
    }
    for r in &l.write_bps {
        push("--device-write-bps", substitute(&r.text, ctx.vars));
    }
    for r in &l.device_deny {
        push("--device-deny", r.text.clone());
    }
}

/// Binds and tmpfs mounts (the only kinds kcell's CLI mounts).
fn mount_flags(f: &mut Flags, c: &Container, ctx: &RunCtx) -> Result<(), String> {
    let mut push = |a: &str, b: String| f.push(a, b);
    for m in &c.mounts {
        let dest = substitute(&m.destination, ctx.vars);
        match m.kind.as_str() {
            "bind" => {
                let src = substitute(m.source.as_deref().unwrap_or(""), ctx.vars);
                let ro = if m.options.iter().any(|o| o == "ro") {
                    ":ro"
                } else {
                    ""
                };
                push("-v", format!("{src}:{dest}{ro}"));
            }
            "tmpfs" => {
                let opts: Vec<&str> = m
                    .options
                    .iter()
                    .map(String::as_str)
                    .filter(|o| o.contains('='))
                    .collect();
                push(
                    "--tmpfs",
                    if opts.is_empty() {
                        dest
                    } else {
                        format!("{dest}:{}", opts.join(","))
                    },
                );
            }
            other => return Err(format!("kcell's CLI mounts bind and tmpfs, not {other}")),
        }
    }
    Ok(())
}

/// Capabilities, seccomp, user, environment, directory, DNS.
fn process_flags(f: &mut Flags, c: &Container) {
    let mut push = |a: &str, b: String| f.push(a, b);
    for cap in &c.capabilities.drop {
        push("--cap-drop", cap.clone());
    }
    for cap in &c.capabilities.add {
        push("--cap-add", cap.clone());
    }
    match c.seccomp {
        SeccompChoice::Default => {}
        SeccompChoice::Unconfined => push("--seccomp", "unconfined".into()),
        SeccompChoice::DenyUserns => push("--deny-userns", String::new()),
    }
    if let Some(u) = &c.user {
        push("--user", u.clone());
    }
    for e in &c.env {
        push("-e", e.clone());
    }
    if let Some(w) = &c.cwd {
        push("-w", w.clone());
    }
    for d in &c.dns {
        push("--dns", d.clone());
    }
}

/// kcell's CLI on this target; an error when none was given (the harness
/// finds kcell as a binary, like any runtime).
fn kcell_binary<'a>(ctx: &'a RunCtx) -> Result<&'a std::path::Path, String> {
    let k = ctx.target.kcell.as_path();
    if k.as_os_str().is_empty() {
        return Err("this case runs kcell's own commands, and no kcell binary was given (kcell-conformance --kcell PATH, kcell-agent run --kcell PATH)".into());
    }
    Ok(k)
}

/// A container or command of kcell's CLI.
pub fn start(run: &Run, ctx: &RunCtx, limit: Duration) -> Result<Started, String> {
    let dir = ctx.work.join(&run.name);
    std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    let pid_file = dir.join("pid");
    let mut cmd = Command::new(kcell_binary(ctx)?);
    cmd.env("KCELL_ROOT", &ctx.target.store);
    if run.kcell.is_empty() {
        let id = ctx
            .vars
            .iter()
            .find(|(k, _)| *k == format!("{}.id", run.name))
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let root = match (&run.image, &run.container.root) {
            (Some(image), _) => PathBuf::from(substitute(image, ctx.vars)),
            (None, Some(r)) => PathBuf::from(substitute(r, ctx.vars)),
            (None, None) => ctx.target.rootfs.clone(),
        };
        cmd.arg("run")
            .arg("--name")
            .arg(id)
            .arg("--pid-file")
            .arg(&pid_file)
            .args(flags(&run.container, ctx)?)
            .args(run.kcell_args.iter().map(|a| substitute(a, ctx.vars)))
            .arg(&root)
            .arg("--")
            .args(run.command.iter().map(|a| substitute(a, ctx.vars)));
    } else {
        cmd.args(run.kcell.iter().map(|a| substitute(a, ctx.vars)));
    }
    spawn(run, cmd, Some(pid_file), limit)
}

/// `kcell exec ID CMD` into a held run.
pub fn start_exec(run: &Run, into: &str, ctx: &RunCtx, limit: Duration) -> Result<Started, String> {
    let (_, _, id) = ctx
        .held
        .iter()
        .find(|(n, _, _)| n == into)
        .ok_or_else(|| format!("run '{}' execs into '{into}', which is not held", run.name))?;
    let mut cmd = Command::new(kcell_binary(ctx)?);
    cmd.env("KCELL_ROOT", &ctx.target.store)
        .arg("exec")
        .arg(id)
        .args(run.command.iter().map(|a| substitute(a, ctx.vars)));
    spawn(run, cmd, None, limit)
}

fn spawn(
    run: &Run,
    mut cmd: Command,
    pid_file: Option<PathBuf>,
    limit: Duration,
) -> Result<Started, String> {
    let (theirs, ours) = pipes(run.hold)?;
    cmd.stdin(theirs.stdin)
        .stdout(theirs.stdout)
        .stderr(theirs.stderr);
    if let Some(uid) = run.as_user {
        cmd.uid(uid).gid(uid);
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("run '{}': spawn kcell: {e}", run.name))?;
    drop(cmd);
    let mut st = Started::new(run, How::Child(child), ours, limit);
    st.pid_file = pid_file;
    // kcell's CLI makes, runs and removes its container in one process:
    // all of it is the runtime's time.
    st.running = Some(crate::timing::Span::begin(crate::timing::Spent::Runtime));
    Ok(st)
}
