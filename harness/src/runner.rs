//! Running one case: requirements, fixtures, the container runs through the
//! real `kcell` CLI, measurements, checks, verdict. The same code runs on the
//! host and as the agent inside a VM guest.

use crate::case::{Case, Expect, Operand, RootChoice, Run};
use crate::expect::check_all;
use crate::fixture::{self, Context, Fixture};
use crate::inside::READY;
use crate::observation::Observations;
use crate::verdict::{Status, Verdict};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Where and with what a case runs.
#[derive(Debug, Clone)]
pub struct Target {
    /// The target's name in verdicts, e.g. "host" or "deb-6.1-cloud/v1".
    pub name: String,
    /// The `kcell` runtime binary.
    pub runtime: PathBuf,
    /// The agent binary (the host marker process and `{agent}`).
    pub agent: PathBuf,
    /// The busybox image root.
    pub rootfs: PathBuf,
    /// The runtime's image store (`KCELL_ROOT` of every runtime command).
    pub store: PathBuf,
}

/// `uname -r`.
pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().to_string())
        .unwrap_or_default()
}

/// Replaces each `{key}` of `vars` in `text`.
pub fn substitute(text: &str, vars: &[(String, String)]) -> String {
    let mut s = text.to_string();
    for (k, v) in vars {
        s = s.replace(&format!("{{{k}}}"), v);
    }
    s
}

fn substitute_expect(e: &Expect, vars: &[(String, String)]) -> Expect {
    let mut e = e.clone();
    for op in [
        &mut e.equals,
        &mut e.not_equals,
        &mut e.contains,
        &mut e.not_contains,
        &mut e.at_least,
        &mut e.at_most,
        &mut e.approx,
    ]
    .into_iter()
    .flatten()
    {
        if let Operand::Literal(Value::String(s)) = op {
            *s = substitute(s, vars);
        }
    }
    e
}

/// A scratch directory for one case's pid files, removed on drop.
struct WorkDir(PathBuf);
impl WorkDir {
    fn new() -> Result<Self, String> {
        use std::os::unix::fs::PermissionsExt;
        let p = std::env::temp_dir().join(format!("kcell-case-{}", kcell::spec::new_id()));
        std::fs::create_dir(&p).map_err(|e| format!("mkdir {}: {e}", p.display()))?;
        // Runs as another uid write their pid file here.
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777))
            .map_err(|e| format!("chmod {}: {e}", p.display()))?;
        Ok(WorkDir(p))
    }
}
impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `case` on `target` and returns its verdict. Never panics on a case's
/// failure: infrastructure problems become an `error` verdict.
pub fn run_case(case: &Case, target: &Target) -> Verdict {
    let start = Instant::now();
    let cgroup = kcell::cgroup::layout::Layout::detect().describe();
    let mut verdict = Verdict::bare(
        &case.id,
        &target.name,
        &kernel_release(),
        cgroup,
        Status::Error,
        "",
    );
    // In a guest, the network modules may still be loading.
    crate::vm::guest::wait_for_modules();
    if let Some(reason) = crate::requires::unmet(&case.requires) {
        verdict.status = Status::Skip;
        verdict.detail = reason;
        return verdict;
    }
    let result = execute(case, target, &mut verdict.observations);
    verdict.seconds = (start.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
    verdict.headline = case
        .headline
        .as_ref()
        .and_then(|h| crate::report::format_headline(h, &verdict.observations));
    match result {
        Err(msg) => {
            verdict.status = Status::Error;
            verdict.detail = msg;
        }
        Ok(vars) => {
            let expects: Vec<Expect> = case
                .expects
                .iter()
                .map(|e| substitute_expect(e, &vars))
                .collect();
            verdict.checks = check_all(&expects, &verdict.observations);
            let failed = |kind| verdict.checks.iter().any(|c| !c.ok && c.on_fail == kind);
            // A control that shows the machine could not have told the
            // difference makes every other check moot: inconclusive, not fail.
            verdict.status = if failed(crate::case::OnFail::Inconclusive) {
                Status::Inconclusive
            } else if failed(crate::case::OnFail::Fail) {
                Status::Fail
            } else {
                Status::Pass
            };
            if verdict.status != Status::Pass {
                verdict.detail = verdict.failed_checks();
                // What the runs said on stderr is usually the why.
                for run in &case.runs {
                    let err = verdict
                        .observations
                        .get(&format!("{}.stderr", run.name))
                        .map(crate::expect::as_text)
                        .unwrap_or_default();
                    let exit = verdict
                        .observations
                        .get(&format!("{}.exit", run.name))
                        .and_then(Value::as_i64)
                        .unwrap_or(0);
                    if !err.trim().is_empty() && exit != 0 {
                        verdict.detail.push_str(&format!(
                            "\n  run '{}' exited {exit}; stderr: {}",
                            run.name,
                            tail(&err)
                        ));
                    }
                }
            }
        }
    }
    verdict
}

/// Sets up the fixtures, performs every run, and returns the variables.
fn execute(
    case: &Case,
    target: &Target,
    obs: &mut Observations,
) -> Result<Vec<(String, String)>, String> {
    let ctx = Context {
        rootfs: target.rootfs.clone(),
        agent: target.agent.clone(),
        store: target.store.clone(),
    };
    let mut fixtures: Vec<Box<dyn Fixture>> = Vec::new();
    for name in &case.fixtures {
        fixtures.push(fixture::make(name, &ctx).map_err(|e| format!("fixture {name}: {e}"))?);
    }
    let mut vars: Vec<(String, String)> = vec![
        ("rootfs".into(), target.rootfs.display().to_string()),
        ("agent".into(), target.agent.display().to_string()),
    ];
    for f in &fixtures {
        for (k, v) in f.vars() {
            vars.push((format!("{}.{k}", f.name()), v));
        }
        for (k, v) in f.at_setup() {
            obs.insert(format!("{}.{k}", f.name()), v);
        }
    }
    // Every container run gets its ID up front, so later runs can name it.
    for run in case.runs.iter().filter(|r| r.kcell.is_empty()) {
        let id = kcell::spec::new_id();
        vars.push((format!("{}.id", run.name), id.clone()));
        obs.insert(format!("{}.id", run.name), json!(id));
    }
    let work = WorkDir::new()?;
    let deadline = Instant::now() + Duration::from_secs(case.timeout);
    let mut kept: Vec<Started> = Vec::new();
    let mut result = Ok(());
    for run in &case.runs {
        let left = deadline.saturating_duration_since(Instant::now());
        let limit = run
            .timeout
            .map_or(left, |t| Duration::from_secs(t).min(left));
        let started = match start(run, target, &vars, &work.0, limit) {
            Ok(s) => s,
            Err(e) => {
                result = Err(e);
                break;
            }
        };
        observe(&started, &kept, &fixtures, obs);
        if run.keep {
            kept.push(started);
        } else if let Err(e) = finish(started, &fixtures, obs) {
            result = Err(e);
            break;
        }
    }
    // Kept runs end with the case, also when it failed half way.
    for started in kept {
        let finished = finish(started, &fixtures, obs);
        if result.is_ok() {
            result = finished;
        }
    }
    result.map(|()| vars)
}

fn exit_code(status: std::process::ExitStatus) -> i64 {
    status
        .code()
        .map_or_else(|| 128 + i64::from(status.signal().unwrap_or(0)), i64::from)
}

/// A container run in progress.
struct Started {
    run: Run,
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    lines: mpsc::Receiver<String>,
    out_reader: std::thread::JoinHandle<String>,
    err_reader: std::thread::JoinHandle<String>,
    pid_file: PathBuf,
    stats_file: PathBuf,
    began: Instant,
    deadline: Instant,
    limit: Duration,
}

impl Started {
    fn host_pid(&self) -> Option<i32> {
        read_pid(&self.pid_file)
    }
}

/// Spawns `kcell run` for `run`.
fn start(
    run: &Run,
    target: &Target,
    vars: &[(String, String)],
    work: &Path,
    limit: Duration,
) -> Result<Started, String> {
    let began = Instant::now();
    let pid_file = work.join(format!("{}.pid", run.name));
    let stats_file = work.join(format!("{}.stats.json", run.name));
    let rootfs = match (&run.image, run.rootfs) {
        (Some(image), _) => PathBuf::from(substitute(image, vars)),
        (None, RootChoice::Image) => target.rootfs.clone(),
        (None, RootChoice::Host) => PathBuf::from("/"),
    };
    let mut cmd = Command::new(&target.runtime);
    cmd.env("KCELL_ROOT", &target.store);
    if run.kcell.is_empty() {
        let id = vars
            .iter()
            .find(|(k, _)| *k == format!("{}.id", run.name))
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        cmd.arg("run")
            .arg("--name")
            .arg(id)
            .arg("--pid-file")
            .arg(&pid_file);
        if run.as_user.is_none() {
            cmd.arg("--stats-file").arg(&stats_file);
        }
        cmd.args(run.args.iter().map(|a| substitute(a, vars)));
        cmd.arg(&rootfs).arg("--");
        cmd.args(run.command.iter().map(|a| substitute(a, vars)));
    } else {
        cmd.args(run.kcell.iter().map(|a| substitute(a, vars)));
    }
    cmd.stdin(if run.hold {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    if let Some(uid) = run.as_user {
        cmd.uid(uid).gid(uid);
    }
    let mut child = cmd.spawn().map_err(|e| {
        format!(
            "run '{}': spawn {}: {e}",
            run.name,
            target.runtime.display()
        )
    })?;
    let stdin = child.stdin.take();
    let (line_tx, lines) = mpsc::channel::<String>();
    let stdout = child.stdout.take().ok_or("no stdout pipe")?;
    let out_reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = line_tx.send(line.clone());
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let mut stderr = child.stderr.take().ok_or("no stderr pipe")?;
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    Ok(Started {
        run: run.clone(),
        child,
        stdin,
        lines,
        out_reader,
        err_reader,
        pid_file,
        stats_file,
        began,
        deadline: began + limit,
        limit,
    })
}

/// For a held run: waits until the command says it is ready, then records
/// what the fixtures and measurements see while it holds.
fn observe(st: &Started, kept: &[Started], fixtures: &[Box<dyn Fixture>], obs: &mut Observations) {
    if !st.run.hold {
        return;
    }
    let prefix = &st.run.name;
    let mut ready = false;
    while Instant::now() < st.deadline {
        match st.lines.recv_timeout(Duration::from_millis(20)) {
            Ok(line) if line.trim() == READY => {
                ready = true;
                break;
            }
            Ok(_) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    obs.insert(format!("{prefix}.ready"), json!(ready));
    if !ready {
        return;
    }
    for f in fixtures {
        for (k, v) in f.observe() {
            obs.insert(format!("{prefix}.{}.{k}", f.name()), v);
        }
    }
    for m in &st.run.measure {
        let name = m.name.clone().unwrap_or_else(|| m.probe.clone());
        let wanted: Vec<&str> = if m.runs.is_empty() {
            vec![prefix.as_str()]
        } else {
            m.runs.iter().map(String::as_str).collect()
        };
        let pids: Result<Vec<(String, i32)>, String> = wanted
            .iter()
            .map(|w| {
                let held = if *w == prefix.as_str() {
                    Some(st)
                } else {
                    kept.iter().find(|k| k.run.name == *w)
                };
                let held =
                    held.ok_or_else(|| format!("run '{w}' is not held (give it keep = true)"))?;
                held.host_pid()
                    .map(|p| (w.to_string(), p))
                    .ok_or_else(|| format!("no pid file for run '{w}'"))
            })
            .collect();
        match pids.and_then(|p| crate::probe::measure(m, &p)) {
            Ok(values) => {
                for (k, v) in values {
                    obs.insert(format!("{prefix}.{name}.{k}"), v);
                }
            }
            Err(e) => obs.insert(format!("{prefix}.{name}.error"), json!(e)),
        }
    }
}

/// Releases a run (closes its stdin), waits for it and records its outcome.
fn finish(
    st: Started,
    fixtures: &[Box<dyn Fixture>],
    obs: &mut Observations,
) -> Result<(), String> {
    let Started {
        run,
        mut child,
        stdin,
        out_reader,
        err_reader,
        pid_file,
        stats_file,
        began,
        deadline,
        limit,
        ..
    } = st;
    if run.kill_runtime {
        // The runtime dies mid-run; its container follows (PR_SET_PDEATHSIG),
        // its record and cgroup stay behind for the next command to clean.
        let _ = child.kill();
    }
    drop(stdin);
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|e| format!("wait for kcell: {e}"))?
        {
            break Some(status);
        }
        if Instant::now() >= deadline {
            // Killing the runtime kills the container (PR_SET_PDEATHSIG).
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    let Some(status) = status else {
        return Err(format!(
            "run '{}' timed out after {:.1} s; stdout tail: {}; stderr tail: {}",
            run.name,
            limit.as_secs_f64(),
            tail(&stdout),
            tail(&stderr)
        ));
    };
    let prefix = &run.name;
    obs.insert(format!("{prefix}.exit"), json!(exit_code(status)));
    obs.insert(format!("{prefix}.stdout"), json!(stdout));
    obs.insert(format!("{prefix}.stderr"), json!(stderr));
    obs.insert(
        format!("{prefix}.seconds"),
        json!((began.elapsed().as_secs_f64() * 1000.0).round() / 1000.0),
    );
    obs.insert_key_values(prefix, &stdout);
    if let Some(pid) = read_pid(&pid_file) {
        obs.insert(format!("{prefix}.host_pid"), json!(pid));
    }
    // The cgroup's final counters, saved by the runtime before removing it.
    if let Some(Value::Object(stats)) = std::fs::read_to_string(&stats_file)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
    {
        for (k, v) in stats.into_iter().filter(|(_, v)| !v.is_null()) {
            obs.insert(format!("{prefix}.cg.{k}"), v);
        }
    }
    if !run.hold {
        for f in fixtures {
            for (k, v) in f.observe() {
                obs.insert(format!("{prefix}.{}.{k}", f.name()), v);
            }
        }
    }
    Ok(())
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The last 400 characters of `s`.
pub fn tail(s: &str) -> String {
    let t = s.trim();
    let start = t.char_indices().rev().nth(399).map_or(0, |(i, _)| i);
    t[start..].replace('\n', " | ")
}

/// Runs the case files `files` (only the IDs in `only`, when given; a case
/// file is named by its ID) one after another, emitting a progress frame
/// before each and its verdict frame after it. Each file is parsed just
/// before it runs, so the first case starts without waiting for the rest. A
/// malformed case file becomes an error verdict of its own and stops nothing.
/// Returns how many failed or errored.
pub fn run_all(
    files: &[PathBuf],
    target: &Target,
    only: Option<&[String]>,
    emit: &mut dyn FnMut(&str),
) -> usize {
    let stem = |f: &PathBuf| {
        f.file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default()
    };
    let files: Vec<&PathBuf> = files
        .iter()
        .filter(|f| only.is_none_or(|ids| ids.contains(&stem(f))))
        .collect();
    let total = files.len();
    let mut failed = 0;
    for (n, file) in files.into_iter().enumerate() {
        let timeout = 60;
        emit(&format!(
            "{}{} {total} {} {timeout}",
            crate::vm::qemu::PROGRESS,
            n + 1,
            stem(file)
        ));
        let verdict = match Case::load(file) {
            Ok(case) => {
                if case.timeout != timeout {
                    // The watchdog keys on the announced timeout: announce the real one.
                    emit(&format!(
                        "{}{} {total} {} {}",
                        crate::vm::qemu::PROGRESS,
                        n + 1,
                        case.id,
                        case.timeout
                    ));
                }
                run_case(&case, target)
            }
            Err(e) => Verdict::bare(
                &stem(file),
                &target.name,
                &kernel_release(),
                "",
                Status::Error,
                format!("malformed case file: {e}"),
            ),
        };
        if matches!(verdict.status, Status::Fail | Status::Error) {
            failed += 1;
        }
        emit(&verdict.to_line());
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitutes_variables() {
        let vars = vec![
            ("a.key".to_string(), "0x1".to_string()),
            ("rootfs".to_string(), "/r".to_string()),
        ];
        assert_eq!(
            substitute("{rootfs}/bin {a.key} {unknown}", &vars),
            "/r/bin 0x1 {unknown}"
        );
    }

    #[test]
    fn tail_keeps_the_end() {
        let long = "x".repeat(1000) + "END";
        assert!(tail(&long).ends_with("END"));
        assert_eq!(tail(&long).chars().count(), 400);
        assert_eq!(tail("a\nb"), "a | b");
    }
}
