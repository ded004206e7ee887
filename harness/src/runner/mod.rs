//! Running one case with one runtime on one target: requirements (the
//! kernel's, then the runtime's features), fixtures, the runs through the
//! runtime's [`driver`], measurements, the harness's own readings, checks,
//! verdict. The same code runs on the host and as the agent in a guest.

use crate::case::{Case, Expect, Operand, Run, RunKind, Scope};
use crate::driver::{self, runtime::Needs, Ended, RunCtx, Runtime, Started, Target};
use crate::expect::check_all;
use crate::fixture::{self, Context, Fixture};
use crate::frames;
use crate::observation::Observations;
use crate::verdict::{Status, Verdict};
use kcell_probe::READY;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use work::Work;

mod work;
use std::time::{Duration, Instant};

/// `uname -r`.
pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().to_string())
        .unwrap_or_default()
}

fn substitute_expect(e: &Expect, vars: &[(String, String)]) -> Expect {
    let mut e = e.clone();
    if let Operand::Literal(Value::String(s)) = e.comparison.operand_mut() {
        *s = driver::substitute(s, vars);
    }
    e
}

/// Where the smoke run's answer for `runtime` on `target` is kept: beside
/// the target's store, so it lives as long as the target's directory.
fn smoke_note(target: &Target, runtime: &str) -> Option<std::path::PathBuf> {
    let safe: String = runtime
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "@._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    Some(target.store.parent()?.join(format!("smoke-{safe}")))
}

/// Runs `case` with `runtime` on `target` and returns its verdict. Never
/// panics on a case's failure: infrastructure problems become an `error`
/// verdict naming the runtime, the step and what it said.
pub fn run_case(case: &Case, target: &Target, runtime: &Runtime) -> Verdict {
    let start = Instant::now();
    crate::timing::reset();
    let layout = crate::observe::cgroupfs::Layout::read();
    let mut verdict = Verdict::bare(
        &case.id,
        &target.name,
        &kernel_release(),
        layout.version(),
        Status::Error,
        "",
    );
    verdict.runtime = runtime.name.clone();
    verdict.runtime_version = runtime.version.clone();
    // In a guest, the network modules may still be loading.
    crate::guestinfo::wait_for_modules();
    if let Some(reason) = crate::requires::unmet(&case.requires) {
        verdict.status = Status::Skip;
        verdict.detail = reason;
        return verdict;
    }
    if case.scope == Scope::Any {
        if let Some(why) = &runtime.unusable {
            // A reference runtime that cannot run here is skipped in its
            // own words; a mutant that cannot is an error of the kill
            // matrix: it judges nothing, and must not look like a target's
            // reason.
            verdict.status = if crate::killmatrix::mutation_of(&runtime.name).is_some() {
                Status::Error
            } else {
                Status::Skip
            };
            verdict.detail = format!(
                "{} ({}) cannot run a minimal container on this target: {why}",
                runtime.name, runtime.version
            );
            return verdict;
        }
        if let Some(reason) = runtime.lacks(&Needs::of(&case.runs)) {
            verdict.status = Status::Skip;
            verdict.detail = reason;
            return verdict;
        }
    }
    let result = execute(case, target, runtime, &mut verdict.observations);
    verdict.seconds = (start.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
    verdict.timing = Some(crate::timing::of_trial(verdict.seconds));
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
                            driver::tail(&err)
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
    runtime: &Runtime,
    obs: &mut Observations,
) -> Result<Vec<(String, String)>, String> {
    let ctx = Context {
        rootfs: target.rootfs.clone(),
        agent: target.agent.clone(),
        store: target.store.clone(),
        kcell: target.kcell.clone(),
    };
    let mut fixtures: Vec<Box<dyn Fixture>> = Vec::new();
    for name in &case.fixtures {
        fixtures.push(
            fixture::make(*name, &ctx).map_err(|e| format!("fixture {}: {e}", name.as_str()))?,
        );
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
    for run in case.runs.iter().filter(|r| r.kind() == RunKind::Container) {
        let id = crate::text::unique_id();
        vars.push((format!("{}.id", run.name), id.clone()));
        obs.insert(format!("{}.id", run.name), json!(id));
    }
    let work = Work::new(&case.id)?;
    // The cgroup each container run gets (the harness chooses it).
    for run in case.runs.iter().filter(|r| r.kind() == RunKind::Container) {
        vars.push((
            format!("{}.cgroup", run.name),
            format!("{}/{}", work.cgroup_parent, run.name),
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(case.timeout);
    let mut kept: Vec<Started> = Vec::new();
    let mut held: Vec<(String, i32, String)> = Vec::new();
    let mut result = Ok(());
    let context = |held: &[(String, i32, String)]| RunCtx {
        work: &work.dir,
        cgroup_parent: &work.cgroup_parent,
        vars: &vars,
        runtime,
        target,
        held: held.to_vec(),
        scope_kcell: case.scope == Scope::Kcell,
    };
    for run in &case.runs {
        let left = deadline.saturating_duration_since(Instant::now());
        let limit = run
            .timeout
            .map_or(left, |t| Duration::from_secs(t).min(left));
        let run_ctx = context(&held);
        let started = match driver::start(run, &run_ctx, limit) {
            Ok(s) => s,
            Err(e) => {
                result = Err(e);
                break;
            }
        };
        observe(&started, &kept, &fixtures, obs);
        if run.keep {
            if let Some(pid) = started.host_pid() {
                let id = vars
                    .iter()
                    .find(|(k, _)| *k == format!("{}.id", run.name))
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                held.push((run.name.clone(), pid, id));
            }
            kept.push(started);
        } else if let Err(e) = end(started, &run_ctx, &fixtures, obs) {
            result = Err(e);
            break;
        }
    }
    // Kept runs end with the case, also when it failed half way, last first.
    let run_ctx = context(&held);
    while let Some(started) = kept.pop() {
        let finished = end(started, &run_ctx, &fixtures, obs);
        if result.is_ok() {
            result = finished;
        }
    }
    drop(work);
    result.map(|()| vars)
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
        let name = m
            .name
            .clone()
            .unwrap_or_else(|| m.kind.as_str().to_string());
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
                    .ok_or_else(|| format!("no pid for run '{w}'"))
            })
            .collect();
        match pids.and_then(|p| crate::observe::measure::measure(m, &p)) {
            Ok(values) => {
                for (k, v) in values {
                    obs.insert(format!("{prefix}.{name}.{k}"), v);
                }
            }
            Err(e) => obs.insert(format!("{prefix}.{name}.error"), json!(e)),
        }
    }
}

/// Ends a run and records its outcome as the harness saw it.
fn end(
    st: Started,
    ctx: &RunCtx,
    fixtures: &[Box<dyn Fixture>],
    obs: &mut Observations,
) -> Result<(), String> {
    let run: Run = st.run.clone();
    let ended: Ended = driver::finish(st, ctx)?;
    let prefix = &run.name;
    obs.insert(format!("{prefix}.exit"), json!(ended.exit));
    obs.insert(format!("{prefix}.stdout"), json!(ended.stdout));
    obs.insert(format!("{prefix}.stderr"), json!(ended.stderr));
    obs.insert(format!("{prefix}.seconds"), json!(ended.seconds));
    obs.insert(format!("{prefix}.outcome"), json!(ended.outcome));
    if let Some(n) = ended.oom_events_seen {
        obs.insert(format!("{prefix}.oom_events_seen"), json!(n));
    }
    if let Some(n) = ended.oom_kills_seen {
        obs.insert(format!("{prefix}.oom_kills_seen"), json!(n));
    }
    if let Some(e) = &ended.start_error {
        obs.insert(format!("{prefix}.start_error"), json!(e));
    }
    obs.insert_key_values(prefix, &ended.stdout);
    if let Some(pid) = ended.pid {
        obs.insert(format!("{prefix}.host_pid"), json!(pid));
    }
    for (k, v) in ended.counters {
        obs.insert(format!("{prefix}.cg.{k}"), json!(v));
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

/// The trials of `cases` with `runtimes`: every case with every runtime,
/// but a case of kcell's own commands with kcell only.
pub fn trials<'a>(cases: &'a [Case], runtimes: &'a [Runtime]) -> Vec<(&'a Case, &'a Runtime)> {
    let mut out = Vec::new();
    for c in cases {
        for r in runtimes {
            if c.scope == Scope::Any || r.name == "kcell" {
                out.push((c, r));
            }
        }
    }
    out
}

/// The runtime this project builds: never skipped for failing the smoke
/// run, since that failure is what its user must see in every trial.
const UNDER_TEST: &str = "kcell";

/// The smoke run: one container that runs `true`, through the same driver
/// as the cases, made when a trial of a reference runtime errors. A
/// runtime that cannot do even this here (crun 1.8 on a hybrid cgroup
/// layout says "cgroups in hybrid mode not supported") has that trial and
/// each later one skipped with its own words, rather than fifty errors
/// saying the same thing.
fn smoke(target: &Target, runtime: &Runtime) -> Option<String> {
    const SMOKE: &str = r#"
id = "SMOKE"
title = "The runtime runs a minimal container"
[[run]]
name = "minimal"
command = ["true"]
[[expect]]
that = "minimal.exit"
equals = 0
"#;
    let case = match Case::parse(SMOKE, Path::new("<smoke>")) {
        Ok(c) => c,
        Err(e) => return Some(format!("the smoke case does not parse: {e}")),
    };
    let v = run_case(&case, target, runtime);
    (v.status != Status::Pass).then(|| v.detail.lines().next().unwrap_or_default().to_string())
}

/// Runs the case files `files` with `runtimes` (only the trials `only`
/// names as `runtime::ID`, when given), emitting a progress frame before
/// each trial and its verdict frame after it. A malformed case file becomes
/// an error verdict of its own and stops nothing. Returns how many failed.
pub fn run_all(
    files: &[PathBuf],
    target: &Target,
    runtimes: &[Runtime],
    only: Option<&[String]>,
    emit: &mut dyn FnMut(&str),
) -> usize {
    // Orphans of the runtimes' creates (the containers' first processes)
    // become this process's children: it reaps them and reads their status.
    let _ = nix::sys::prctl::set_child_subreaper(true);
    let mut cases = Vec::new();
    let mut failed = 0;
    for file in files {
        match Case::load(file) {
            Ok(c) => cases.push(c),
            Err(e) => {
                let stem = file
                    .file_stem()
                    .map(|s| s.to_string_lossy().to_string())
                    .unwrap_or_default();
                failed += 1;
                emit(
                    &Verdict::bare(
                        &stem,
                        &target.name,
                        &kernel_release(),
                        "",
                        Status::Error,
                        format!("malformed case file: {e}"),
                    )
                    .to_line(),
                );
            }
        }
    }
    // Whether a runtime can run anything here is asked only when one of its
    // trials errors (the smoke run costs seconds under TCG, runsc's 15 s
    // here), and the answer is kept beside the target's store: the host
    // runs each trial in an agent of its own, and asking again for each of
    // 46 cases cost runsc 30 s a trial.
    let mut unusable: std::collections::HashMap<String, Option<String>> = Default::default();
    for r in runtimes {
        if let Some(known) =
            smoke_note(target, &r.name).and_then(|p| std::fs::read_to_string(p).ok())
        {
            let why = known.strip_prefix("unusable: ").map(str::to_string);
            unusable.insert(r.name.clone(), why);
        }
    }
    let all = trials(&cases, runtimes);
    // `only` in its own order, a trial as often as it is named (--repeat
    // names it once per run); without it, every trial once.
    let chosen: Vec<&(&Case, &Runtime)> = match only {
        None => all.iter().collect(),
        Some(keys) => keys
            .iter()
            .filter_map(|k| {
                all.iter()
                    .find(|(c, r)| *k == format!("{}::{}", r.name, c.id))
            })
            .collect(),
    };
    let total = chosen.len();
    for (n, (case, runtime)) in chosen.into_iter().enumerate() {
        emit(&frames::progress(
            n + 1,
            total,
            &format!("{}::{}", runtime.name, case.id),
            case.timeout,
        ));
        let known = unusable.get(&runtime.name).cloned().flatten();
        let mut verdict = match known {
            Some(why) => {
                let mut r = (*runtime).clone();
                r.unusable = Some(why);
                run_case(case, target, &r)
            }
            None => run_case(case, target, runtime),
        };
        if verdict.status == Status::Error
            && case.scope == Scope::Any
            && runtime.name != UNDER_TEST
            && !unusable.contains_key(&runtime.name)
        {
            let why = smoke(target, runtime);
            if let Some(why) = &why {
                let mut r = (*runtime).clone();
                r.unusable = Some(why.clone());
                let skipped = run_case(case, target, &r);
                verdict.status = skipped.status;
                verdict.detail = skipped.detail;
            }
            if let Some(note) = smoke_note(target, &runtime.name) {
                let text = why
                    .as_deref()
                    .map_or("usable".to_string(), |w| format!("unusable: {w}"));
                let _ = std::fs::write(note, text);
            }
            unusable.insert(runtime.name.clone(), why);
        }
        if matches!(verdict.status, Status::Fail | Status::Error) {
            failed += 1;
        }
        emit(&verdict.to_line());
    }
    failed
}
