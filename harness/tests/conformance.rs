//! `cargo test` entry: one trial per (target, runtime, case), named
//! `host/kcell::NS-UTS-1` or `deb-6.12-cloud/v2/runc::CG-MEM-1`. Listing
//! (`-- --list`) and filtering build and boot nothing.
//!
//! A run has two steps. First the selected trials run: the host's in a
//! separate agent process (the same binary and code path as inside a VM
//! guest), one at a time and before any guest boots, since CPU and I/O
//! measurements must not share the machine with another case or with
//! QEMU; then the guests, one boot per target serving all of its selected
//! trials, one guest per core (or --test-threads), the target with the
//! most trials first. Progress is printed as they go. Then each trial is
//! reported to libtest-mimic with its outcome as it is (gate.rs): a pass
//! passes, a fail or error fails, and a skip, an inconclusive trial or a
//! known difference (cases/differences.toml) is *ignored*, its reason
//! printed, so `cargo test`'s closing line counts none of them as passed.
//! The tally per runtime follows it. The run also fails on a skip that
//! cases/expected-skips.toml does not allow, on a difference that no longer
//! shows (unless --allow-stale-differences), and with --baseline on a
//! regression.
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
use kcell_harness::differences::Difference;
use kcell_harness::driver::Target;
use kcell_harness::gate::{self, Outcome};
use kcell_harness::matrix::{self, Wanted};
use kcell_harness::publish;
use kcell_harness::shard;
use kcell_harness::verdict::{Status, Verdict};
use kcell_harness::vm::{self, VmTarget};
use libtest_mimic::{Arguments, Failed, Trial};
use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::{Mutex, OnceLock};

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../cases")
}

/// Where the reports go: `--output DIR`, else target/kcell.
fn report_dir() -> PathBuf {
    REPORT_DIR
        .get()
        .cloned()
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/kcell"))
}

/// `--output DIR`, once read.
static REPORT_DIR: OnceLock<PathBuf> = OnceLock::new();

/// The host target, built on first use under /tmp (reachable by uid 1000).
struct HostTarget {
    dir: PathBuf,
    target: OnceLock<Result<Target, String>>,
}

impl HostTarget {
    fn get(&self) -> Result<&Target, String> {
        self.target
            .get_or_init(|| {
                let agent = PathBuf::from(env!("CARGO_BIN_EXE_kcell-agent"));
                eprintln!("preparing the host target in {} ...", self.dir.display());
                kcell_harness::host::prepare(&self.dir, &agent)
            })
            .as_ref()
            .map_err(|e| format!("preparing the host target: {e}"))
    }
}

impl Drop for HostTarget {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The trial libtest-mimic reports for `name`, from its verdict: a pass
/// passes, a fail or error fails with the details, and what is neither (a
/// skip, an inconclusive trial, a known difference; a mutant's survival or
/// a mutant's trial that judged nothing) is ignored, its reason printed
/// by [`print_ignored`]. A trial the run selected that has no verdict fails.
fn reported_trial(
    name: String,
    title: &str,
    found: Option<(&Verdict, Outcome)>,
    allow_flaky: &[String],
) -> Trial {
    let title = title.to_string();
    let Some((verdict, outcome)) = found else {
        let why = format!("no verdict for {name}: the run never reached it");
        return Trial::test(name, move || Err(Failed::from(why)));
    };
    let is_mutant = kcell_harness::killmatrix::mutation_of(&verdict.runtime).is_some();
    let (ignored, result): (bool, Result<(), String>) = if is_mutant {
        // A mutant's trial is a cell of the kill matrix, judged as a whole
        // at the end: killed is what the case is for; the rest is ignored.
        (verdict.status != Status::Fail, Ok(()))
    } else {
        let failure = format!("{}: {title}\n{}", verdict.status.as_str(), verdict.detail);
        let allowed = outcome == Outcome::Flaky && gate::allowed_flaky(&name, allow_flaky);
        (
            outcome.is_ignored() || allowed,
            if outcome.fails() && !allowed {
                Err(failure)
            } else {
                Ok(())
            },
        )
    };
    Trial::test(name, move || result.map_err(Failed::from)).with_ignored_flag(ignored)
}

/// Why each ignored trial was not a pass, one line each, before
/// libtest-mimic's own lines.
fn print_ignored(judged: &[(Verdict, Outcome, Option<Difference>)], allow_flaky: &[String]) {
    let mut lines = Vec::new();
    for (v, outcome, difference) in judged {
        let first = |s: &str| s.lines().next().unwrap_or_default().trim().to_string();
        let why = match kcell_harness::killmatrix::mutation_of(&v.runtime) {
            Some(_) => match v.status {
                Status::Fail => continue,
                Status::Pass => "survived (judged in the kill matrix)".to_string(),
                other => format!("not judged ({}): {}", other.as_str(), first(&v.detail)),
            },
            None => match (outcome, difference) {
                (Outcome::KnownDifference, Some(d)) => {
                    format!(
                        "known difference (cases/differences.toml): {}",
                        first(&d.found)
                    )
                }
                (Outcome::Skip, _) => format!("skip: {}", first(&v.detail)),
                (Outcome::Inconclusive, _) => format!("inconclusive: {}", first(&v.detail)),
                (Outcome::Flaky, _) if gate::allowed_flaky(&v.trial(), allow_flaky) => {
                    format!("flaky, allowed by --allow-flaky: {}", first(&v.detail))
                }
                _ => continue,
            },
        };
        lines.push(format!("  {}: {why}", v.trial()));
    }
    if !lines.is_empty() {
        println!("ignored, and why ({}):\n{}", lines.len(), lines.join("\n"));
    }
}

/// The machine-wide measurement lock (a file lock, so it also holds between
/// the processes nextest runs): a host case holds it alone, guests share it.
fn measurement_lock(exclusive: bool) -> Result<nix::fcntl::Flock<std::fs::File>, String> {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kcell-measure.lock");
    let file =
        std::fs::File::create(&path).map_err(|e| format!("create {}: {e}", path.display()))?;
    let how = if exclusive {
        nix::fcntl::FlockArg::LockExclusive
    } else {
        nix::fcntl::FlockArg::LockShared
    };
    nix::fcntl::Flock::lock(file, how).map_err(|(_, e)| format!("flock {}: {e}", path.display()))
}

/// One host trial: the agent (the same code path as in a guest) runs the
/// case with the runtime, in a process of its own, alone on the machine.
/// Whatever goes wrong is the trial's error verdict.
fn run_on_host(case: &Case, runtime: &Wanted, host: &HostTarget) -> Verdict {
    host_verdict(case, runtime, host).unwrap_or_else(|why| {
        let layout = kcell_harness::observe::cgroupfs::Layout::read();
        let mut v = Verdict::bare(
            &case.id,
            "host",
            &kcell_harness::runner::kernel_release(),
            layout.version(),
            Status::Error,
            why,
        );
        v.runtime = runtime.name.clone();
        v
    })
}

fn host_verdict(case: &Case, runtime: &Wanted, host: &HostTarget) -> Result<Verdict, String> {
    let _alone_on_the_machine = measurement_lock(true)?;
    let target = host.get()?;
    let path = if runtime.name == "kcell" {
        target.kcell.with_file_name("kcell-oci")
    } else if let Some((base, mutation)) = kcell_harness::killmatrix::mutation_of(&runtime.name) {
        // The host's mutant wraps the host target's own kcell-oci.
        let m = kcell_harness::mutant::named(mutation)
            .ok_or_else(|| format!("unknown mutation {mutation}"))?;
        let bin = target.kcell.parent().unwrap_or(Path::new("/"));
        let links =
            kcell_harness::mutant::make_links(&bin.join("mutants"), &target.kcell, base, &[m])?;
        links[0].1.clone()
    } else {
        runtime.path.clone().ok_or_else(|| match &runtime.missing {
            Some(why) => format!("runtime {}: {why}", runtime.name),
            None => format!("runtime {} not found on this machine: install it (scripts/install-deps installs runc, crun and youki), name a line of vm/runtimes.toml (KCELL_RUNTIMES={}@sid) or a binary (KCELL_RUNTIMES={}=/path/to/binary)", runtime.name, runtime.name, runtime.name),
        })?
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
        .map_err(|e| format!("spawning the agent {}: {e}", target.kcell.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout.lines().find_map(Verdict::from_line).ok_or_else(|| {
        format!(
            "the agent gave no verdict (exit {:?}); stderr: {}",
            output.status.code(),
            String::from_utf8_lossy(&output.stderr)
        )
    })
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
            baseline = Some(from_root(&args.remove(i + 1)));
        }
        args.remove(i);
    } else if let Some(i) = args.iter().position(|a| a.starts_with("--baseline=")) {
        baseline = Some(from_root(args.remove(i).trim_start_matches("--baseline=")));
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
            missing: None,
        })
        .collect())
}

/// Writes mutants.md and mutants.json; false when, on some target, a case
/// proves nothing, a judged mutant is caught by no case, or a mutant was
/// judged by no case at all.
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
            "kill matrix {target}: {} of {} judged (case, mutant) pairs killed; cases proving nothing: {:?}; mutants no case kills: {:?}; mutants no case could judge: {:?}",
            s.killed, s.judged, s.proving_nothing, s.uncaught, s.unjudged
        );
        ok &= killmatrix::passes(s);
    }
    eprintln!("kill matrix: {}/mutants.{{md,json}}", dir.display());
    ok
}

/// Whether libtest-mimic will run a trial of this name (its filter, --exact,
/// --skip, --ignored and --include-ignored rules), so a guest boots only for
/// the cases that were asked for.
fn will_run(args: &Arguments, name: &str, ignored: bool) -> bool {
    let by_ignore = if args.ignored {
        ignored
    } else {
        args.include_ignored || !ignored
    };
    filtered_in(args, name) && by_ignore
}

/// Whether the filter and --skip select a trial of this name.
fn filtered_in(args: &Arguments, name: &str) -> bool {
    let matches = |pattern: &str| {
        if args.exact {
            name == pattern
        } else {
            name.contains(pattern)
        }
    };
    args.filter.as_deref().is_none_or(matches) && !args.skip.iter().any(|s| matches(s))
}

/// One unit of guest work: a VM target with one runtime, booted once for
/// all of that runtime's selected trials there.
struct GuestTarget {
    target: VmTarget,
    /// The runtime it runs.
    runtime: String,
    /// `runtime::CASE` of the selected trials.
    keys: Vec<String>,
    run: OnceLock<vm::TargetRun>,
}

impl GuestTarget {
    /// The unit's name: `<target>/<runtime>`.
    fn unit(&self) -> String {
        format!("{}/{}", self.target.name(), self.runtime)
    }
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

/// One trial of the run's plan.
struct Planned {
    name: String,
    case: Case,
    runtime: Wanted,
    /// On the host (with the reason it cannot run there, if any), or in
    /// the guest of this index.
    place: Place,
}

enum Place {
    Host { unmet: Option<String> },
    Guest(usize),
}

impl Planned {
    /// Ignored before it runs: a host requirement is unmet.
    fn ignored_before(&self) -> bool {
        matches!(&self.place, Place::Host { unmet: Some(_) })
    }
}

/// What the run asks for, read from the arguments and environment.
struct Selection {
    args: Arguments,
    baseline: Option<PathBuf>,
    mutants: Option<String>,
    allow_stale_differences: bool,
    /// `--shard K/N`: run only the units shard.rs deals to K.
    shard: Option<(usize, usize)>,
    /// `--durations FILE`: an earlier report.json, for the units' estimates.
    durations: BTreeMap<String, f64>,
    /// `--repeat N`: each selected trial N times (in the same boot).
    repeat: usize,
    /// `--rerun-failures M`: a failed trial rerun up to M times.
    rerun_failures: usize,
    /// `--allow-flaky P,...`: flaky cells whose name contains one of these
    /// do not fail the run.
    allow_flaky: Vec<String>,
    targets: Option<String>,
    runtimes: Vec<Wanted>,
    cases: Vec<Case>,
    /// Trials for case files that do not load.
    malformed: Vec<Trial>,
}

fn select() -> Result<Selection, String> {
    let (args, baseline) = split_baseline(std::env::args().collect());
    let (args, mutants) = split_mutants(args);
    let (args, allow_stale_differences) = split_flag(args, "--allow-stale-differences");
    let (args, shard) = split_value(args, "--shard");
    let (args, durations_file) = split_value(args, "--durations");
    let (args, output) = split_value(args, "--output");
    let (args, repeat) = split_value(args, "--repeat");
    let (args, rerun_failures) = split_value(args, "--rerun-failures");
    let (args, allow_flaky) = split_value(args, "--allow-flaky");
    let count = |flag: &str, v: Option<String>, least: usize| -> Result<usize, String> {
        match v {
            None => Ok(least),
            Some(t) => t
                .parse::<usize>()
                .ok()
                .filter(|n| *n >= least)
                .ok_or(format!(
                    "{flag} '{t}' is not allowed: a whole number, at least {least}"
                )),
        }
    };
    let repeat = count("--repeat", repeat, 1)?;
    let rerun_failures = count("--rerun-failures", rerun_failures, 0)?;
    let allow_flaky = allow_flaky
        .map(|s| s.split(',').map(|p| p.trim().to_string()).collect())
        .unwrap_or_default();
    if let Some(dir) = output {
        let _ = REPORT_DIR.set(from_root(&dir));
    }
    let shard = shard.as_deref().map(shard::parse_shard).transpose()?;
    let durations = match durations_file {
        None => BTreeMap::new(),
        Some(f) => {
            let path = from_root(&f);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("--durations {}: {e}", path.display()))?;
            shard::durations_from(&text).map_err(|e| format!("--durations {f}: {e}"))?
        }
    };
    let args = Arguments::from_iter(args);
    let cache = vm::cache_dir();
    let runtimes = match &mutants {
        None => matrix::wanted(std::env::var("KCELL_RUNTIMES").ok().as_deref(), &cache),
        Some(which) => mutant_runtimes(which, &cache)?,
    };
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
            return Err(format!(
                "KCELL_CASES names no case {unknown:?}: the IDs are the file names under {}",
                cases_dir().display()
            ));
        }
    }
    // A malformed case is a failing trial of its own; the others still run.
    let malformed = loaded
        .iter()
        .filter_map(|c| c.as_ref().err())
        .map(|e| {
            let stem = match e {
                kcell_harness::case::CaseError::Parse { file, .. }
                | kcell_harness::case::CaseError::Read(file, _) => file
                    .file_stem()
                    .map(|s| s.to_string_lossy().to_string())
                    .unwrap_or_default(),
            };
            let msg = e.to_string();
            Trial::test(format!("cases::{stem}"), move || Err(Failed::from(msg)))
        })
        .collect();
    Ok(Selection {
        args,
        baseline,
        mutants,
        allow_stale_differences,
        shard,
        durations,
        repeat,
        rerun_failures,
        allow_flaky,
        targets: std::env::var("KCELL_TARGETS").ok(),
        runtimes,
        cases,
        malformed,
    })
}

/// A path given on the command line: `cargo test` runs this binary in
/// harness/, so a relative path is taken from the workspace root (where
/// the README's commands are typed).
fn from_root(path: &str) -> PathBuf {
    let p = PathBuf::from(path);
    if p.is_absolute() {
        p
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(p)
    }
}

/// Takes `--name VALUE` or `--name=VALUE` out of the arguments.
fn split_value(mut args: Vec<String>, name: &str) -> (Vec<String>, Option<String>) {
    if let Some(i) = args.iter().position(|a| a == name) {
        let value = (i + 1 < args.len()).then(|| args.remove(i + 1));
        args.remove(i);
        return (args, value);
    }
    let prefix = format!("{name}=");
    match args.iter().position(|a| a.starts_with(&prefix)) {
        Some(i) => {
            let value = args.remove(i)[prefix.len()..].to_string();
            (args, Some(value))
        }
        None => (args, None),
    }
}

/// Takes a bare flag out of the arguments.
fn split_flag(mut args: Vec<String>, flag: &str) -> (Vec<String>, bool) {
    let had = args.iter().any(|a| a == flag);
    args.retain(|a| a != flag);
    (args, had)
}

/// Whether `case` runs with runtime `w`: a mutant only on the cases whose
/// config.json its mutation changes; kcell's own-command cases only on kcell.
fn applies(case: &Case, w: &Wanted) -> bool {
    match kcell_harness::killmatrix::mutation_of(&w.name) {
        Some((_, m)) => {
            case.scope == Scope::Any
                && kcell_harness::mutant::named(m).is_some_and(|m| {
                    kcell_harness::mutant::applies(m, &kcell_harness::mutant::configs_of(case))
                })
        }
        None => case.scope == Scope::Any || w.name == "kcell",
    }
}

/// Every trial of the selection, host first, and the guest targets.
fn plan(sel: &Selection) -> Result<(Vec<Planned>, Vec<GuestTarget>), String> {
    let host_wanted = sel
        .targets
        .as_deref()
        .is_none_or(|s| s == "all" || s.split(',').any(|t| t.trim() == "host"));
    let is_root = nix::unistd::geteuid().is_root();
    let mut planned = Vec::new();
    if host_wanted {
        for case in &sel.cases {
            for w in sel.runtimes.iter().filter(|w| applies(case, w)) {
                let unmet = if is_root {
                    kcell_harness::requires::unmet(&case.requires)
                } else {
                    Some("the host target needs root: run the tests as root".to_string())
                };
                planned.push(Planned {
                    name: format!("host/{}::{}", w.name, case.id),
                    case: case.clone(),
                    runtime: w.clone(),
                    place: Place::Host { unmet },
                });
            }
        }
    }
    let manifest_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../vm/kernels.toml");
    let manifest = vm::kernel::Manifest::load(&manifest_path)?;
    let custom = std::env::var_os("KCELL_KERNEL").is_some();
    let mut guests = Vec::new();
    for t in vm::selected_targets(&manifest, sel.targets.as_deref(), custom) {
        // The kill matrix defaults to the reference targets.
        if sel.mutants.is_some() && sel.targets.is_none() && !manifest.is_reference(&t) {
            continue;
        }
        let reference = manifest.is_reference(&t);
        for w in sel
            .runtimes
            .iter()
            .filter(|w| matrix::runs_on(w, reference))
        {
            let index = guests.len();
            for case in sel.cases.iter().filter(|c| applies(c, w)) {
                planned.push(Planned {
                    name: format!("{}/{}::{}", t.name(), w.name, case.id),
                    case: case.clone(),
                    runtime: w.clone(),
                    place: Place::Guest(index),
                });
            }
            guests.push(GuestTarget {
                target: t.clone(),
                runtime: w.name.clone(),
                keys: Vec::new(),
                run: OnceLock::new(),
            });
        }
    }
    // Each guest boots for the trials the arguments select, only.
    for p in &planned {
        if let Place::Guest(i) = p.place {
            if will_run(&sel.args, &p.name, false) {
                guests[i]
                    .keys
                    .push(format!("{}::{}", p.runtime.name, p.case.id));
            }
        }
    }
    Ok((planned, guests))
}

/// Runs the selected host trials, one at a time and alone on the machine,
/// printing each as it ends.
/// How often each trial runs: `--repeat` times, and after a failure up to
/// `--rerun-failures` more times until one passes. Counts the reruns.
#[derive(Clone, Copy)]
struct Runs {
    repeat: usize,
    rerun_failures: usize,
}

fn failed(v: &Verdict) -> bool {
    matches!(v.status, Status::Fail | Status::Error)
}

fn run_host_trials(
    planned: &[Planned],
    args: &Arguments,
    runs: Runs,
    reruns: &mut BTreeMap<String, usize>,
) -> Vec<Verdict> {
    // A trial ignored before it runs (a requirement unmet) still gets its
    // skip verdict, for the reports; it runs only when --ignored or
    // --include-ignored asks for it.
    let chosen: Vec<&Planned> = planned
        .iter()
        .filter(|p| matches!(p.place, Place::Host { .. }))
        .filter(|p| will_run(args, &p.name, p.ignored_before()) || filtered_in(args, &p.name))
        .collect();
    if chosen.is_empty() {
        return Vec::new();
    }
    let host = HostTarget {
        dir: std::env::temp_dir().join(format!("kcell-host-{}", std::process::id())),
        target: OnceLock::new(),
    };
    let total = chosen.len();
    let mut out = Vec::with_capacity(total);
    for (n, p) in chosen.into_iter().enumerate() {
        if let Place::Host {
            unmet: Some(reason),
        } = &p.place
        {
            if !will_run(args, &p.name, true) {
                out.push(skip_verdict(&p.case, &p.runtime.name, reason));
                eprintln!("[host {}/{total}] {}: skip", n + 1, p.name);
                continue;
            }
        }
        let mut mine = Vec::new();
        for r in 0..runs.repeat {
            let v = run_on_host(&p.case, &p.runtime, &host);
            let which = if runs.repeat > 1 {
                format!(", run {} of {}", r + 1, runs.repeat)
            } else {
                String::new()
            };
            eprintln!(
                "[host {}/{total}] {}: {} ({:.1} s{which})",
                n + 1,
                p.name,
                v.status.as_str(),
                v.seconds
            );
            mine.push(v);
        }
        if mine.iter().any(failed) {
            for r in 0..runs.rerun_failures {
                let v = run_on_host(&p.case, &p.runtime, &host);
                eprintln!(
                    "[host {}/{total}] {}: {} on rerun {} of at most {}",
                    n + 1,
                    p.name,
                    v.status.as_str(),
                    r + 1,
                    runs.rerun_failures
                );
                *reruns.entry(p.name.clone()).or_default() += 1;
                let passed = v.status == Status::Pass;
                mine.push(v);
                if passed {
                    break;
                }
            }
        }
        out.extend(mine);
    }
    out
}

/// Reruns the guest trials that failed, up to `rounds` times each, a boot
/// per unit and round, until they pass; counts the reruns.
fn rerun_guest_failures(
    guests: &[&GuestTarget],
    first: &[Verdict],
    inputs: &vm::Inputs,
    rounds: usize,
    reruns: &mut BTreeMap<String, usize>,
) -> Vec<Verdict> {
    let mut out = Vec::new();
    for g in guests {
        let target = g.target.name();
        let mut still: Vec<String> = g
            .keys
            .iter()
            .filter(|k| {
                first
                    .iter()
                    .any(|v| v.target == target && v.key() == **k && failed(v))
            })
            .cloned()
            .collect();
        still.dedup();
        let mut mine = inputs.clone();
        mine.runtimes.retain(|(name, _)| *name == g.runtime);
        for round in 0..rounds {
            if still.is_empty() {
                break;
            }
            eprintln!(
                "[{}] rerunning {} failed trial(s), round {} of at most {rounds}",
                g.unit(),
                still.len(),
                round + 1
            );
            let run = vm::run_target(&g.target, &mine, &still, &mut |line: &str| {
                eprintln!("{line}")
            });
            for v in &run.verdicts {
                *reruns.entry(v.trial()).or_default() += 1;
            }
            still.retain(|k| run.verdicts.iter().any(|v| v.key() == *k && failed(v)));
            out.extend(run.verdicts);
        }
    }
    out
}

/// Boots the guests that have trials to run, `workers` at a time, the one
/// with the most trials first; returns their verdicts.
fn run_guests(
    order: Vec<&GuestTarget>,
    inputs: &vm::Inputs,
    workers: usize,
    started: std::time::Instant,
    timeline: &Mutex<Vec<shard::Span>>,
) -> Vec<Verdict> {
    let queue = Mutex::new(order.into_iter());
    let verdicts = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..workers.max(1) {
            scope.spawn(|| loop {
                let next = queue.lock().unwrap_or_else(|e| e.into_inner()).next();
                let Some(g) = next else { break };
                let _shared = measurement_lock(false);
                // The guest carries the unit's runtime only.
                let mut mine = inputs.clone();
                mine.runtimes.retain(|(name, _)| *name == g.runtime);
                // Its progress lines name the target and each trial's runtime.
                let start = started.elapsed().as_secs_f64();
                let run = g.run.get_or_init(|| {
                    vm::run_target(&g.target, &mine, &g.keys, &mut |line: &str| {
                        eprintln!("{line}")
                    })
                });
                timeline
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(shard::Span {
                        unit: g.unit(),
                        start,
                        end: started.elapsed().as_secs_f64(),
                    });
                verdicts
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(run.verdicts.iter().cloned());
            });
        }
    });
    verdicts.into_inner().unwrap_or_else(|e| e.into_inner())
}

/// The run's plan (shard.rs): the host's trials as one unit, each guest
/// unit as one, estimated from --durations or the cases' timeouts, and
/// fingerprinted with what decides the verdicts.
fn unit_plan(sel: &Selection, planned: &[Planned], guests: &[GuestTarget]) -> shard::Plan {
    let estimate = |p: &Planned| {
        sel.durations
            .get(&p.name)
            .copied()
            .unwrap_or(p.case.timeout as f64)
    };
    let mut units = Vec::new();
    let host: Vec<&Planned> = planned
        .iter()
        .filter(|p| matches!(p.place, Place::Host { .. }) && filtered_in(&sel.args, &p.name))
        .collect();
    if !host.is_empty() {
        units.push(shard::Unit {
            name: "host".into(),
            trials: host.iter().map(|p| p.name.clone()).collect(),
            estimate: host.iter().map(|p| estimate(p)).sum(),
        });
    }
    for (i, g) in guests.iter().enumerate() {
        let mine: Vec<&Planned> = planned
            .iter()
            .filter(|p| matches!(p.place, Place::Guest(j) if j == i))
            .filter(|p| will_run(&sel.args, &p.name, false))
            .collect();
        if mine.is_empty() {
            continue;
        }
        units.push(shard::Unit {
            name: g.unit(),
            trials: mine.iter().map(|p| p.name.clone()).collect(),
            // A boot costs seconds of its own under TCG.
            estimate: 8.0 + mine.iter().map(|p| estimate(p)).sum::<f64>(),
        });
    }
    shard::Plan::new(units, &identity(sel))
}

/// What decides the verdicts besides the trials: each runtime's version,
/// the harness's revision, the cases and the kernel manifest.
fn identity(sel: &Selection) -> Vec<String> {
    let mut lines = vec![
        format!("kcell {}", env!("CARGO_PKG_VERSION")),
        format!(
            "repeat {} rerun-failures {}",
            sel.repeat, sel.rerun_failures
        ),
    ];
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let revision = Command::new("git")
        .arg("-C")
        .arg(&root)
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "no git revision".into());
    lines.push(format!("revision {revision}"));
    for w in &sel.runtimes {
        let version = w
            .path
            .as_ref()
            .and_then(|p| Command::new(p).arg("--version").output().ok())
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string()
            })
            .unwrap_or_default();
        lines.push(format!("runtime {} {version}", w.name));
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(cases_dir())
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.push(root.join("vm/kernels.toml"));
    files.sort();
    for f in files {
        // By file name: the checkout's own path differs between machines.
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let text = std::fs::read(&f).unwrap_or_default();
        lines.push(format!("{name} {}", shard::digest(&text)));
    }
    lines
}

/// Boot time and problems of each guest unit, for matrix.md, which lists
/// them by target: `runc: boot to first case 5.1 s, 115 s in all; ...`.
fn guest_notes(guests: &[GuestTarget]) -> BTreeMap<String, String> {
    let mut notes: BTreeMap<String, String> = BTreeMap::new();
    for g in guests {
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
            let unit = format!(
                "{}: {boot}, {:.0} s in all{retry}{problem}",
                g.runtime, run.seconds
            );
            notes
                .entry(g.target.name())
                .and_modify(|n| {
                    n.push_str("; ");
                    n.push_str(&unit);
                })
                .or_insert(unit);
        }
    }
    notes
}

fn main() -> ExitCode {
    let sel = match select() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let (planned, guests) = match plan(&sel) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    // --repeat N: each guest unit names its trials N times (the guest runs
    // them in that order, in one boot).
    let mut guests = guests;
    for g in &mut guests {
        g.keys = g
            .keys
            .iter()
            .flat_map(|k| std::iter::repeat_n(k.clone(), sel.repeat))
            .collect();
    }
    let known = match kcell_harness::differences::load(&cases_dir().join("differences.toml")) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if sel.args.list {
        let mut trials: Vec<Trial> = planned
            .iter()
            .map(|p| Trial::test(p.name.clone(), || Ok(())).with_ignored_flag(p.ignored_before()))
            .collect();
        trials.extend(sel.malformed);
        return libtest_mimic::run(&sel.args, trials).exit_code();
    }
    report_custom_kernel_gaps(&sel.cases);
    let units = unit_plan(&sel, &planned, &guests);
    let mine: Vec<&shard::Unit> = match sel.shard {
        Some((k, n)) => units.shard(k, n),
        None => units.units.iter().collect(),
    };
    let unit_of = |p: &Planned| match p.place {
        Place::Host { .. } => "host".to_string(),
        Place::Guest(i) => guests[i].unit(),
    };
    let mine_names: std::collections::BTreeSet<&str> =
        mine.iter().map(|u| u.name.as_str()).collect();
    let planned: Vec<Planned> = planned
        .into_iter()
        .filter(|p| sel.shard.is_none() || mine_names.contains(unit_of(p).as_str()))
        .collect();
    if let Some((k, n)) = sel.shard {
        eprintln!(
            "shard {k}/{n} of plan {}: {} of {} units ({})",
            units.fingerprint,
            mine.len(),
            units.units.len(),
            mine.iter()
                .map(|u| u.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

    // Step one: run what is selected: the host's unit alone, then the
    // guests' units on every core, the longest first.
    let started = std::time::Instant::now();
    let runs = Runs {
        repeat: sel.repeat,
        rerun_failures: sel.rerun_failures,
    };
    let mut reruns = BTreeMap::new();
    let mut verdicts = run_host_trials(&planned, &sel.args, runs, &mut reruns);
    let timeline = Mutex::new(Vec::new());
    if !verdicts.is_empty() {
        timeline
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(shard::Span {
                unit: "host".into(),
                start: 0.0,
                end: started.elapsed().as_secs_f64(),
            });
    }
    let cache = vm::cache_dir();
    let inputs = vm::Inputs {
        manifest: match vm::kernel::Manifest::load(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../vm/kernels.toml"),
        ) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        },
        agent: PathBuf::from(env!("CARGO_BIN_EXE_kcell-agent")),
        cases: cases_dir(),
        cache,
        runtimes: sel
            .runtimes
            .iter()
            .filter(|w| w.name != "kcell")
            .filter_map(|w| w.path.clone().map(|p| (w.name.clone(), p)))
            .collect(),
    };
    let workers = sel.args.test_threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let mut order: Vec<(&GuestTarget, f64)> = guests
        .iter()
        .filter(|g| !g.keys.is_empty())
        .filter_map(|g| {
            let name = g.unit();
            mine.iter()
                .find(|u| u.name == name)
                .map(|u| (g, u.estimate))
        })
        .collect();
    order.sort_by(|a, b| {
        b.1.total_cmp(&a.1)
            .then_with(|| a.0.unit().cmp(&b.0.unit()))
    });
    let order: Vec<&GuestTarget> = order.into_iter().map(|(g, _)| g).collect();
    let first = run_guests(order.clone(), &inputs, workers, started, &timeline);
    if sel.rerun_failures > 0 {
        let again = rerun_guest_failures(&order, &first, &inputs, sel.rerun_failures, &mut reruns);
        verdicts.extend(again);
    }
    verdicts.extend(first);
    // A trial that ran more than once is one cell: its counts, the spread
    // of its values, flaky when it both passed and failed.
    let verdicts = kcell_harness::repeat::aggregate(verdicts, &reruns);
    let wall = started.elapsed().as_secs_f64();
    let record = shard::RunRecord {
        plan: units.clone(),
        shard: sel.shard.map(|(k, n)| format!("{k}/{n}")),
        ran: mine.iter().map(|u| u.name.clone()).collect(),
        timeline: timeline.into_inner().unwrap_or_else(|e| e.into_inner()),
    };
    if !record.timeline.is_empty() {
        let ideal = record.ideal_seconds(workers);
        eprintln!(
            "units: {} in {wall:.0} s on {workers} core(s); ideal packing {ideal:.0} s (the host's unit alone, then the guests' time divided by the cores): {:.2} x ideal",
            record.timeline.len(),
            wall / ideal.max(1.0)
        );
    }
    let _ = std::fs::create_dir_all(report_dir());
    if let Err(e) = std::fs::write(
        report_dir().join("run.json"),
        serde_json::to_string_pretty(&record).unwrap_or_default(),
    ) {
        eprintln!("write {}: {e}", report_dir().join("run.json").display());
    }

    // Step two: report each trial as it is.
    let mut tally = gate::Tally::default();
    let judged: Vec<(Verdict, Outcome, Option<Difference>)> = verdicts
        .iter()
        .map(|v| {
            let (outcome, difference) = gate::judge(v, &known);
            if kcell_harness::killmatrix::mutation_of(&v.runtime).is_none() {
                tally.add(v, outcome);
            }
            (v.clone(), outcome, difference.cloned())
        })
        .collect();
    print_ignored(&judged, &sel.allow_flaky);
    let by_name: BTreeMap<String, (&Verdict, Outcome)> = judged
        .iter()
        .map(|(v, o, _)| (v.trial(), (v, *o)))
        .collect();
    let titles: BTreeMap<String, String> = sel
        .cases
        .iter()
        .map(|c| (c.id.clone(), c.title.clone()))
        .collect();
    let mut trials: Vec<Trial> = planned
        .iter()
        .map(|p| {
            let found = by_name.get(&p.name).copied();
            match found {
                Some(f) => reported_trial(p.name.clone(), &p.case.title, Some(f), &sel.allow_flaky),
                // Not run: filtered out (libtest-mimic filters it the same
                // way), or ignored before it ran.
                None if !will_run(&sel.args, &p.name, p.ignored_before()) => {
                    Trial::test(p.name.clone(), || Ok(())).with_ignored_flag(p.ignored_before())
                }
                None => reported_trial(p.name.clone(), &p.case.title, None, &sel.allow_flaky),
            }
        })
        .collect();
    trials.extend(sel.malformed);
    let conclusion = libtest_mimic::run(&sel.args, trials);
    if !verdicts.is_empty() {
        println!("tally per runtime (a skip, an inconclusive trial and a known difference are not passes):");
        for line in tally.lines() {
            println!("  {line}");
        }
    }
    if sel.mutants.is_some() {
        return if verdicts.is_empty() || write_kill_matrix(&verdicts) {
            conclusion.exit_code()
        } else {
            ExitCode::from(101)
        };
    }
    let notes = guest_notes(&guests);
    let reports_ok = verdicts.is_empty()
        || publish::write_reports(
            &report_dir(),
            &verdicts,
            &known,
            &notes,
            sel.baseline.as_deref(),
            &titles,
        );
    let gate_ok =
        // A shard sees only its units' trials: whether a difference still
        // shows is judged on the merged run (kcell merge); here it warns.
        match publish::gate_checks(
            &cases_dir(),
            &verdicts,
            &known,
            sel.allow_stale_differences || sel.shard.is_some(),
        ) {
            Ok(ok) => ok,
            Err(e) => {
                eprintln!("{e}");
                false
            }
        };
    if conclusion.has_failed() {
        conclusion.exit_code()
    } else if reports_ok && gate_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(101)
    }
}
