//! `cargo test` entry: one trial per (target, runtime, case), named
//! `host/kcell::NS-UTS-1` or `deb-6.12-cloud/v2/runc::CG-MEM-1`. Listing
//! (`-- --list`) and filtering build and boot nothing; each target is
//! prepared once, on the first of its trials that runs, and one guest boot
//! serves all of a target's selected trials, every runtime's.
//!
//! Host cases run in a separate agent process (the same binary and code path
//! as inside a VM guest), one at a time, and before any guest boots: CPU and
//! I/O measurements must not share the machine with another case or with QEMU.
//! Guests of different targets then boot in parallel, one per core.
//!
//! Environment: KCELL_RUNTIMES picks runtimes (a comma list of kcell, runc,
//! crun, youki, runsc, or NAME=/path/to/binary; default: kcell on every
//! target, the reference runtimes runc, crun and youki on the host and on
//! the manifest's reference targets), KCELL_TARGETS picks targets ("host",
//! "all", or a comma list of targets or kernel IDs; default: host and the
//! manifest's default kernels),
//! KCELL_KERNEL/KCELL_MODULES add a kernel of your own, KCELL_CACHE moves the
//! cache, KCELL_KEEP keeps each guest's console log, KCELL_CASES picks cases
//! by ID (a comma list, e.g. CG-CPU-1,CG-BLKIO-1: libtest's filter takes one).

use kcell_harness::case::{load_dir, Case, Scope};
use kcell_harness::driver::Target;
use kcell_harness::matrix::{self, Wanted};
use kcell_harness::verdict::{Status, Verdict};
use kcell_harness::vm::{self, VmTarget};
use libtest_mimic::{Arguments, Failed, Trial};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

/// cases/differences.toml, read once.
static DIFFERENCES: OnceLock<Vec<kcell_harness::differences::Difference>> = OnceLock::new();

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../cases")
}

fn report_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/kcell")
}

/// The host target, built on first use under /tmp (reachable by uid 1000).
struct HostTarget {
    dir: PathBuf,
    target: OnceLock<Result<Target, String>>,
}

impl HostTarget {
    fn get(&self) -> Result<&Target, Failed> {
        self.target
            .get_or_init(|| {
                let agent = PathBuf::from(env!("CARGO_BIN_EXE_kcell-agent"));
                eprintln!("preparing the host target in {} ...", self.dir.display());
                kcell_harness::host::prepare(&self.dir, &agent)
            })
            .as_ref()
            .map_err(|e| Failed::from(format!("preparing the host target: {e}")))
    }
}

impl Drop for HostTarget {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Counts the host trials still to run; guests wait for zero.
struct HostPhase {
    remaining: Mutex<usize>,
    done: Condvar,
}

impl HostPhase {
    fn finish_one(&self) {
        let mut left = self.remaining.lock().unwrap_or_else(|e| e.into_inner());
        *left = left.saturating_sub(1);
        self.done.notify_all();
    }
    fn wait(&self) {
        let mut left = self.remaining.lock().unwrap_or_else(|e| e.into_inner());
        while *left > 0 {
            left = self.done.wait(left).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Ends the host phase for one trial however the trial ends.
struct PhaseGuard<'a>(&'a HostPhase);
impl Drop for PhaseGuard<'_> {
    fn drop(&mut self) {
        self.0.finish_one();
    }
}

/// Maps a verdict to the trial's outcome (skip and inconclusive pass, with
/// their reason printed; fail and error fail with the details).
fn outcome(name: &str, title: &str, verdict: &Verdict) -> Result<(), Failed> {
    // A mutant's trial is a cell of the kill matrix, judged as a whole at
    // the end (killmatrix.rs): its own verdict fails nothing.
    if kcell_harness::killmatrix::mutation_of(&verdict.runtime).is_some() {
        let fate = match verdict.status {
            Status::Fail => "killed".to_string(),
            Status::Pass => "survived".to_string(),
            other => format!(
                "not judged ({}): {}",
                other.as_str(),
                verdict.detail.lines().next().unwrap_or_default()
            ),
        };
        println!("{name}: {fate}");
        return Ok(());
    }
    let known = DIFFERENCES.get_or_init(|| {
        kcell_harness::differences::load(&cases_dir().join("differences.toml")).unwrap_or_else(
            |e| {
                eprintln!("{e}");
                Vec::new()
            },
        )
    });
    let difference = kcell_harness::differences::explains(
        known,
        &verdict.runtime,
        &verdict.runtime_version,
        &verdict.target,
        &verdict.case,
    );
    if let Some(d) = difference {
        if matches!(verdict.status, Status::Fail | Status::Error) {
            println!(
                "{name}: a known difference (cases/differences.toml): {}",
                d.found
            );
            return Ok(());
        }
        if verdict.status == Status::Pass {
            println!("{name}: passes now, though cases/differences.toml lists it as a difference: remove the entry");
        }
    }
    match verdict.status {
        Status::Pass => Ok(()),
        Status::Skip => {
            println!("{name} skipped: {}", verdict.detail);
            Ok(())
        }
        Status::Inconclusive => {
            println!("{name} inconclusive:\n{}", verdict.detail);
            Ok(())
        }
        Status::Fail | Status::Error => Err(Failed::from(format!(
            "{}: {title}\n{}",
            verdict.status.as_str(),
            verdict.detail
        ))),
    }
}

/// The machine-wide measurement lock (a file lock, so it also holds between
/// the processes nextest runs): a host case holds it alone, guests share it.
fn measurement_lock(exclusive: bool) -> Result<nix::fcntl::Flock<std::fs::File>, Failed> {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kcell-measure.lock");
    let file = std::fs::File::create(&path)
        .map_err(|e| Failed::from(format!("create {}: {e}", path.display())))?;
    let how = if exclusive {
        nix::fcntl::FlockArg::LockExclusive
    } else {
        nix::fcntl::FlockArg::LockShared
    };
    nix::fcntl::Flock::lock(file, how)
        .map_err(|(_, e)| Failed::from(format!("flock {}: {e}", path.display())))
}

/// One host trial: the agent (the same code path as in a guest) runs the
/// case with the runtime, in a process of its own.
fn run_on_host(
    case: &Case,
    runtime: &Wanted,
    host: &HostTarget,
    lock: &Mutex<()>,
    verdicts: &Mutex<Vec<Verdict>>,
) -> Result<(), Failed> {
    let name = format!("host/{}::{}", runtime.name, case.id);
    let _one_at_a_time = lock.lock().unwrap_or_else(|e| e.into_inner());
    let _alone_on_the_machine = measurement_lock(true)?;
    let target = host.get()?;
    let path = if runtime.name == "kcell" {
        target.kcell.with_file_name("kcell-oci")
    } else if let Some((base, mutation)) = kcell_harness::killmatrix::mutation_of(&runtime.name) {
        // The host's mutant wraps the host target's own kcell-oci.
        let m = kcell_harness::mutant::named(mutation)
            .ok_or_else(|| Failed::from(format!("unknown mutation {mutation}")))?;
        let bin = target.kcell.parent().unwrap_or(Path::new("/"));
        let links =
            kcell_harness::mutant::make_links(&bin.join("mutants"), &target.kcell, base, &[m])
                .map_err(Failed::from)?;
        links[0].1.clone()
    } else {
        match &runtime.path {
            Some(p) => p.clone(),
            None => {
                let mut v = Verdict::bare(&case.id, "host", &kcell_harness::runner::kernel_release(), "", Status::Error,
                    format!("runtime {} not found on this machine: install it (scripts/install-deps installs runc, crun and youki) or name it KCELL_RUNTIMES={}=/path/to/binary", runtime.name, runtime.name));
                v.runtime = runtime.name.clone();
                let r = outcome(&name, &case.title, &v);
                verdicts.lock().unwrap_or_else(|e| e.into_inner()).push(v);
                return r;
            }
        }
    };
    let bin = target.kcell.parent().unwrap_or(Path::new("/"));
    let path = kcell_harness::host::runnable_by_all(&runtime.name, &path, bin)?;
    // The kcell copy is the agent binary; under its own name it is the agent.
    let output = Command::new(&target.kcell)
        .arg0("kcell-agent")
        .args(["run", "--target", "host", "--kcell"])
        .arg(&target.kcell)
        .arg("--runtime")
        .arg(format!("{}={}", runtime.name, path.display()))
        .arg("--rootfs")
        .arg(&target.rootfs)
        .arg("--store")
        .arg(&target.store)
        .arg("--only")
        .arg(format!("{}::{}", runtime.name, case.id))
        .arg(&case.file)
        .output()
        .map_err(|e| Failed::from(format!("spawning the agent: {e}")))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let Some(verdict) = stdout.lines().find_map(Verdict::from_line) else {
        return Err(format!(
            "the agent gave no verdict (exit {:?}); stderr: {}",
            output.status.code(),
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    };
    let result = outcome(&name, &case.title, &verdict);
    verdicts
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(verdict);
    result
}

fn skip_verdict(case: &Case, runtime: &str, reason: &str) -> Verdict {
    let mut v = Verdict::bare(
        &case.id,
        "host",
        &kcell_harness::runner::kernel_release(),
        kcell_harness::observe::cgroupfs::Layout::read().version(),
        Status::Skip,
        reason,
    );
    v.runtime = runtime.to_string();
    v
}

/// Takes `--baseline FILE` (an earlier report.json) out of the arguments
/// before libtest-mimic sees them.
fn split_baseline(mut args: Vec<String>) -> (Vec<String>, Option<PathBuf>) {
    let mut baseline = None;
    if let Some(i) = args.iter().position(|a| a == "--baseline") {
        if i + 1 < args.len() {
            baseline = Some(PathBuf::from(args.remove(i + 1)));
        }
        args.remove(i);
    } else if let Some(i) = args.iter().position(|a| a.starts_with("--baseline=")) {
        baseline = Some(PathBuf::from(
            args.remove(i).trim_start_matches("--baseline="),
        ));
    }
    (args, baseline)
}

/// The mutant runtimes `which` names (all, or a comma list) of the base
/// runtime KCELL_MUTANT_BASE (default kcell), as links to the agent in
/// the cache (a guest's copy of the agent; the host trials make their own).
fn mutant_runtimes(which: &str, cache: &Path) -> Result<Vec<Wanted>, String> {
    use kcell_harness::mutant;
    let base = std::env::var("KCELL_MUTANT_BASE").unwrap_or_else(|_| "kcell".into());
    let chosen: Vec<&mutant::Mutation> = if which == "all" {
        mutant::MUTATIONS.iter().collect()
    } else {
        which
            .split(',')
            .map(|n| {
                mutant::named(n.trim()).ok_or_else(|| {
                    let known: Vec<&str> = mutant::MUTATIONS.iter().map(|m| m.name).collect();
                    format!(
                        "KCELL_MUTANTS names no mutation '{}': known are all, {}",
                        n.trim(),
                        known.join(", ")
                    )
                })
            })
            .collect::<Result<_, _>>()?
    };
    let agent = Path::new(env!("CARGO_BIN_EXE_kcell-agent"));
    let links = mutant::make_links(&cache.join("mutants"), agent, &base, &chosen)?;
    Ok(links
        .into_iter()
        .map(|(name, path)| Wanted {
            name,
            path: Some(path),
            everywhere: true,
        })
        .collect())
}

/// Writes mutants.md and mutants.json; false when a case proves nothing
/// or a judged mutant is caught by no case, on some target.
fn write_kill_matrix(verdicts: &[Verdict]) -> bool {
    use kcell_harness::killmatrix;
    let dir = report_dir();
    let _ = std::fs::create_dir_all(&dir);
    let scores = killmatrix::score(verdicts);
    let _ = std::fs::write(
        dir.join("mutants.json"),
        serde_json::to_string_pretty(&scores).unwrap_or_default(),
    );
    let _ = std::fs::write(dir.join("mutants.md"), killmatrix::markdown(&scores));
    let mut ok = true;
    for (target, s) in &scores {
        eprintln!(
            "kill matrix {target}: {} of {} judged (case, mutant) pairs killed; cases proving nothing: {:?}; mutants no case kills: {:?}",
            s.killed, s.judged, s.proving_nothing, s.uncaught
        );
        ok &= s.proving_nothing.is_empty() && s.uncaught.is_empty();
    }
    eprintln!("kill matrix: {}/mutants.{{md,json}}", dir.display());
    ok
}

/// Writes report.json, report.xml and matrix.md; with a baseline, lists
/// regressions (and fails) and improvements.
fn write_reports(
    verdicts: &[Verdict],
    notes: &std::collections::BTreeMap<String, String>,
    baseline: Option<&Path>,
    titles: &std::collections::BTreeMap<String, String>,
) -> bool {
    use kcell_harness::report;
    let dir = report_dir();
    let _ = std::fs::create_dir_all(&dir);
    let json = serde_json::to_string_pretty(verdicts).unwrap_or_default();
    let _ = std::fs::write(dir.join("report.json"), json);
    let _ = std::fs::write(dir.join("report.xml"), report::junit_xml(verdicts));
    let _ = std::fs::write(
        dir.join("matrix.md"),
        report::matrix_markdown(verdicts, notes),
    );
    let old: Option<Vec<Verdict>> = match baseline.map(|path| {
        std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
            .map_err(|e| format!("baseline {}: {e}", path.display()))
    }) {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(e)) => {
            eprintln!("{e}");
            return false;
        }
    };
    let _ = std::fs::write(
        dir.join("report.html"),
        kcell_harness::html::render(verdicts, old.as_deref(), titles),
    );
    eprintln!(
        "reports: {}/{{report.json,report.xml,matrix.md,report.html}}",
        dir.display()
    );
    let (Some(path), Some(old)) = (baseline, old) else {
        return true;
    };
    let cmp = report::compare(&old, verdicts);
    for (c, t, was, now) in &cmp.improvements {
        eprintln!("improved: {t}::{c} {was} -> {now}");
    }
    for (c, t, was, now) in &cmp.regressions {
        eprintln!("REGRESSION: {t}::{c} {was} -> {now}");
    }
    eprintln!(
        "against baseline {}: {} regressions, {} improvements",
        path.display(),
        cmp.regressions.len(),
        cmp.improvements.len()
    );
    cmp.regressions.is_empty()
}

/// Whether libtest-mimic will run a trial of this name (its filter, --exact,
/// --skip, --ignored and --include-ignored rules), so a guest boots only for
/// the cases that were asked for.
fn will_run(args: &Arguments, name: &str, ignored: bool) -> bool {
    let matches = |pattern: &str| {
        if args.exact {
            name == pattern
        } else {
            name.contains(pattern)
        }
    };
    let filtered_in = args.filter.as_deref().is_none_or(matches);
    let skipped = args.skip.iter().any(|s| matches(s));
    let by_ignore = if args.ignored {
        ignored
    } else {
        args.include_ignored || !ignored
    };
    filtered_in && !skipped && by_ignore
}

/// One VM target: its boot runs once, for all its selected trials.
struct GuestTarget {
    target: VmTarget,
    /// `runtime::CASE` of the selected trials.
    keys: Vec<String>,
    run: OnceLock<vm::TargetRun>,
}

/// For a kernel of one's own (KCELL_KERNEL): each option of
/// vm/kernel.config its config lacks, with the cases that will skip.
fn report_custom_kernel_gaps(cases: &[Case]) {
    use kcell_harness::vm::kconfig;
    let Some(image) = std::env::var_os("KCELL_KERNEL") else {
        return;
    };
    let modules = std::env::var_os("KCELL_MODULES").map(PathBuf::from);
    let kernel = match vm::kernel::local(Path::new(&image), modules.as_deref()) {
        Ok(k) => k,
        Err(e) => return eprintln!("custom kernel: {e}"),
    };
    let Some(config) = kernel
        .config
        .as_ref()
        .and_then(|c| std::fs::read_to_string(c).ok())
    else {
        eprintln!("custom kernel: no config to check against vm/kernel.config (set KCELL_KERNEL_CONFIG to its .config); cases needing what it lacks will skip as the guest finds out");
        return;
    };
    let fragment =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../vm/kernel.config"))
            .map(|t| kconfig::parse_fragment(&t))
            .unwrap_or_default();
    let needs: Vec<kconfig::CaseNeeds> = cases
        .iter()
        .map(|c| kconfig::CaseNeeds {
            id: c.id.clone(),
            namespaces: c.requires.namespaces.clone(),
            controllers: c.requires.controllers.clone(),
            options: c.requires.kernel_config.clone(),
            swap: c.requires.swap,
        })
        .collect();
    for (option, skipped) in kconfig::gaps(&config, &fragment, &needs) {
        eprintln!(
            "custom kernel lacks {option}: {}",
            if skipped.is_empty() {
                "no case needs it".to_string()
            } else {
                format!("{} will skip ({})", skipped.len(), skipped.join(", "))
            }
        );
    }
}

/// Takes `--mutants` out of the arguments; with it (or KCELL_MUTANTS),
/// the mutations to run: all, or a comma list of names.
fn split_mutants(mut args: Vec<String>) -> (Vec<String>, Option<String>) {
    let mut wanted = std::env::var("KCELL_MUTANTS")
        .ok()
        .filter(|s| !s.is_empty());
    if let Some(i) = args.iter().position(|a| a == "--mutants") {
        args.remove(i);
        wanted.get_or_insert_with(|| "all".into());
    }
    (args, wanted)
}

fn main() -> ExitCode {
    let (args, baseline) = split_baseline(std::env::args().collect());
    let (args, mutants) = split_mutants(args);
    let args = Arguments::from_iter(args);
    let selection = std::env::var("KCELL_TARGETS").ok();
    let host_wanted = selection
        .as_deref()
        .is_none_or(|s| s == "all" || s.split(',').any(|t| t.trim() == "host"));
    let cache = vm::cache_dir();
    let runtimes = match &mutants {
        None => matrix::wanted(std::env::var("KCELL_RUNTIMES").ok().as_deref(), &cache),
        Some(which) => match mutant_runtimes(which, &cache) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let host = Arc::new(HostTarget {
        dir: std::env::temp_dir().join(format!("kcell-host-{}", std::process::id())),
        target: OnceLock::new(),
    });
    let lock = Arc::new(Mutex::new(()));
    let verdicts: Arc<Mutex<Vec<Verdict>>> = Arc::new(Mutex::new(Vec::new()));
    let is_root = nix::unistd::geteuid().is_root();
    let loaded = load_dir(&cases_dir());
    let picked: Option<Vec<String>> = std::env::var("KCELL_CASES")
        .ok()
        .map(|s| s.split(',').map(|id| id.trim().to_string()).collect());
    let cases: Vec<Case> = loaded
        .iter()
        .filter_map(|c| c.as_ref().ok().cloned())
        .filter(|c| picked.as_ref().is_none_or(|ids| ids.contains(&c.id)))
        .collect();
    if let Some(ids) = &picked {
        let unknown: Vec<&String> = ids
            .iter()
            .filter(|id| !cases.iter().any(|c| &c.id == *id))
            .collect();
        if !unknown.is_empty() {
            eprintln!(
                "KCELL_CASES names no case {unknown:?}: the IDs are the file names under {}",
                cases_dir().display()
            );
            return ExitCode::FAILURE;
        }
    }
    let mut trials = Vec::new();
    let mut skipped = Vec::new();

    for e in loaded.iter().filter_map(|c| c.as_ref().err()) {
        // A malformed case is a failing trial of its own; the others still run.
        let stem = match e {
            kcell_harness::case::CaseError::Parse { file, .. }
            | kcell_harness::case::CaseError::Read(file, _) => file
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default(),
        };
        let msg = e.to_string();
        trials.push(Trial::test(format!("cases::{stem}"), move || {
            Err(Failed::from(msg))
        }));
    }
    // A mutant runs only the cases whose config.json its mutation changes.
    let configs: std::collections::HashMap<String, Vec<serde_json::Value>> = cases
        .iter()
        .map(|c| (c.id.clone(), kcell_harness::mutant::configs_of(c)))
        .collect();
    let applies = |c: &Case, w: &Wanted| match kcell_harness::killmatrix::mutation_of(&w.name) {
        Some((_, m)) => {
            c.scope == Scope::Any
                && kcell_harness::mutant::named(m).is_some_and(|m| {
                    kcell_harness::mutant::applies(
                        m,
                        configs.get(&c.id).map_or(&[][..], Vec::as_slice),
                    )
                })
        }
        None => c.scope == Scope::Any || w.name == "kcell",
    };

    let mut host_trials_list = Vec::new();
    if host_wanted {
        for case in &cases {
            for w in runtimes.iter().filter(|w| applies(case, w)) {
                let name = format!("host/{}::{}", w.name, case.id);
                let unmet = if is_root {
                    kcell_harness::requires::unmet(&case.requires)
                } else {
                    Some("the host target needs root: run the tests as root".to_string())
                };
                if let Some(reason) = &unmet {
                    skipped.push(format!("{name}: {reason}"));
                    // Skips known before running still belong in the reports.
                    if will_run(&args, &name, false) && !args.list {
                        verdicts
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(skip_verdict(case, &w.name, reason));
                    }
                }
                host_trials_list.push((name, case.clone(), w.clone(), unmet.is_some()));
            }
        }
    }
    let host_trials = host_trials_list
        .iter()
        .filter(|(n, _, _, ignored)| will_run(&args, n, *ignored))
        .count();
    let phase = Arc::new(HostPhase {
        remaining: Mutex::new(host_trials),
        done: Condvar::new(),
    });
    for (name, case, w, ignored) in host_trials_list {
        let (host, lock, verdicts, phase) =
            (host.clone(), lock.clone(), verdicts.clone(), phase.clone());
        trials.push(
            Trial::test(name, move || {
                // However this trial ends, it ends its share of the host phase.
                let _guard = PhaseGuard(&phase);
                run_on_host(&case, &w, &host, &lock, &verdicts)
            })
            .with_ignored_flag(ignored),
        );
    }

    if !args.list {
        report_custom_kernel_gaps(&cases);
    }
    let manifest_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../vm/kernels.toml");
    let guest_targets: Vec<Arc<GuestTarget>> = match vm::kernel::Manifest::load(&manifest_path) {
        Ok(manifest) => {
            let custom = std::env::var_os("KCELL_KERNEL").is_some();
            let targets: Vec<(VmTarget, Vec<Wanted>)> =
                vm::selected_targets(&manifest, selection.as_deref(), custom)
                    .into_iter()
                    // The kill matrix defaults to the reference targets.
                    .filter(|t| {
                        mutants.is_none() || selection.is_some() || manifest.is_reference(t)
                    })
                    .map(|t| {
                        let reference = manifest.is_reference(&t);
                        let rts = runtimes
                            .iter()
                            .filter(|w| matrix::runs_on(w, reference))
                            .cloned()
                            .collect();
                        (t, rts)
                    })
                    .collect();
            let guest_runtimes: Vec<(String, PathBuf)> = runtimes
                .iter()
                .filter(|w| w.name != "kcell")
                .filter_map(|w| w.path.clone().map(|p| (w.name.clone(), p)))
                .collect();
            let inputs = Arc::new(vm::Inputs {
                manifest: manifest.clone(),
                agent: PathBuf::from(env!("CARGO_BIN_EXE_kcell-agent")),
                cases: cases_dir(),
                cache: cache.clone(),
                runtimes: guest_runtimes,
            });
            let guests: Vec<(Arc<GuestTarget>, Vec<Wanted>)> = targets
                .into_iter()
                .map(|(t, rts)| {
                    let keys = cases
                        .iter()
                        .flat_map(|c| {
                            rts.iter()
                                .filter(|w| applies(c, w))
                                .filter(|w| {
                                    will_run(
                                        &args,
                                        &format!("{}/{}::{}", t.name(), w.name, c.id),
                                        false,
                                    )
                                })
                                .map(|w| format!("{}::{}", w.name, c.id))
                                .collect::<Vec<_>>()
                        })
                        .collect();
                    (
                        Arc::new(GuestTarget {
                            target: t,
                            keys,
                            run: OnceLock::new(),
                        }),
                        rts,
                    )
                })
                .collect();
            // Case by case, and within a case runtime by runtime across the
            // targets: every target's first trial comes before any target's
            // second, so a test thread never waits on a guest the other
            // thread is running while a target of its own could boot.
            let slots = guests.iter().map(|(_, r)| r.len()).max().unwrap_or(0);
            for case in &cases {
                for slot in 0..slots {
                    for (g, rts) in &guests {
                        for w in rts.iter().filter(|w| applies(case, w)).skip(slot).take(1) {
                            let name = format!("{}/{}::{}", g.target.name(), w.name, case.id);
                            let key = format!("{}::{}", w.name, case.id);
                            let (g, phase, inputs, verdicts, title) = (
                                g.clone(),
                                phase.clone(),
                                inputs.clone(),
                                verdicts.clone(),
                                case.title.clone(),
                            );
                            trials.push(Trial::test(name.clone(), move || {
                                phase.wait();
                                let run = g.run.get_or_init(|| {
                                    let _shared = measurement_lock(false);
                                    let run = vm::run_target(
                                        &g.target,
                                        &inputs,
                                        &g.keys,
                                        &mut |line: &str| eprintln!("{line}"),
                                    );
                                    verdicts
                                        .lock()
                                        .unwrap_or_else(|e| e.into_inner())
                                        .extend(run.verdicts.iter().cloned());
                                    run
                                });
                                match run.verdicts.iter().find(|v| v.key() == key) {
                                    Some(v) => outcome(&name, &title, v),
                                    None => Err(Failed::from(format!(
                                        "no verdict for {key} from {}",
                                        g.target.name()
                                    ))),
                                }
                            }));
                        }
                    }
                }
            }
            guests.into_iter().map(|(g, _)| g).collect()
        }
        Err(e) => {
            trials.push(Trial::test("vm::manifest", move || Err(Failed::from(e))));
            Vec::new()
        }
    };

    if !args.list && !skipped.is_empty() {
        eprintln!(
            "skipped on the host (requirements not met):\n  {}",
            skipped.join("\n  ")
        );
    }
    let conclusion = libtest_mimic::run(&args, trials);
    let verdicts = verdicts.lock().map(|v| v.clone()).unwrap_or_default();
    let mut notes = std::collections::BTreeMap::new();
    for g in &guest_targets {
        if let Some(run) = g.run.get() {
            let boot = run.boot_seconds.map_or("no case started".to_string(), |b| {
                format!("boot to first case {b:.2} s")
            });
            let retry = if run.boots > 1 { ", retried once" } else { "" };
            let problem = run
                .error
                .as_deref()
                .map(|e| format!("; {e}"))
                .unwrap_or_default();
            notes.insert(
                g.target.name(),
                format!("{boot}, {:.0} s in all{retry}{problem}", run.seconds),
            );
        }
    }
    if mutants.is_some() {
        return if verdicts.is_empty() || write_kill_matrix(&verdicts) {
            conclusion.exit_code()
        } else {
            ExitCode::from(101)
        };
    }
    let titles: std::collections::BTreeMap<String, String> = cases
        .iter()
        .map(|c| (c.id.clone(), c.title.clone()))
        .collect();
    let baseline_ok =
        verdicts.is_empty() || write_reports(&verdicts, &notes, baseline.as_deref(), &titles);
    drop(host);
    if baseline_ok {
        conclusion.exit_code()
    } else {
        ExitCode::from(101)
    }
}
