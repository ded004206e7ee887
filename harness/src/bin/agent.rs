//! `kcell-agent`: runs cases and prints one framed JSON verdict per line.
//! A multi-call binary: invoked as `kcell` it is kcell's CLI, as
//! `kcell-oci` kcell's OCI command line, as `kcell-probe` the in-container
//! helper, as `init` a guest's PID 1, as `kcell-mutant@M@BASE` a mutant
//! runtime; so one static file serves the host, the container image and
//! the VM guest.

use kcell_harness::case::case_files;
use kcell_harness::driver::{Runtime, Target};
use std::path::{Path, PathBuf};

const USAGE: &str = "usage:
  kcell-agent run --target NAME --kcell PATH --rootfs DIR [--store DIR] --runtime NAME=PATH...
                  [--only RUNTIME::ID,..] CASES...
      CASES are case files or directories of them; one framed verdict line per trial on stdout
  kcell-agent prepare-host DIR      build the busybox image and kcell under DIR
  kcell-agent probe SUBCOMMAND...   the in-container helper (also as argv[0] kcell-probe)";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let name = args
        .first()
        .map(|a| {
            Path::new(a)
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string()
        })
        .unwrap_or_default();
    let code = match name.as_str() {
        // The suite's own subcommands of the one binary; the rest is kcell's CLI.
        "kcell" if args.get(1).is_some_and(|a| a == "report") => report(&args[2..]),
        "kcell" if args.get(1).is_some_and(|a| a == "vm") => vm(&args[2..]),
        "kcell" if args.get(1).is_some_and(|a| a == "merge") => merge(&args[2..]),
        "kcell" => kcell::cli::main(std::env::args_os()),
        "kcell-oci" => kcell::oci::main(std::env::args_os()),
        "kcell-probe" => kcell_harness::inside::main(&args[1..]),
        // PID 1 of a VM guest.
        "init" => kcell_harness::vm::guest::init_main(&mut guest_work),
        // A mutant runtime (kcell-mutant@MUTATION@BASE): see mutant.rs.
        n if n.starts_with(kcell_harness::mutant::LINK_PREFIX) => {
            kcell_harness::mutant::main(&args[0], &args[1..])
        }
        _ => agent(&args[1..]),
    };
    std::process::exit(code);
}

/// What a guest does once its machine is set up: the plan the host put in
/// its initramfs (runtimes, trials), run against the guest's own paths.
fn guest_work(target: &str, emit: &mut dyn FnMut(&str)) {
    use kcell_harness::vm::initramfs::guest_paths;
    let plan = match kcell_harness::vm::Plan::read(Path::new(guest_paths::PLAN)) {
        Ok(p) => p,
        Err(e) => {
            emit(
                &kcell_harness::verdict::Verdict::bare(
                    "PLAN",
                    target,
                    "",
                    "",
                    kcell_harness::verdict::Status::Error,
                    e,
                )
                .to_line(),
            );
            return;
        }
    };
    if let Some(program) = &plan.program {
        kcell_harness::vm::program::run_in_guest(program, emit);
        return;
    }
    let t = Target {
        name: target.to_string(),
        agent: guest_paths::RUNTIME.into(),
        kcell: guest_paths::RUNTIME.into(),
        rootfs: guest_paths::ROOTFS.into(),
        store: "/var/lib/kcell".into(),
    };
    let runtimes = probe_all(&plan.runtimes, target, emit);
    let cases = case_files(Path::new(guest_paths::CASES));
    kcell_harness::runner::run_all(&cases, &t, &runtimes, Some(&plan.trials), emit);
}

/// Each runtime's version and features; one that cannot be run is an
/// error verdict of every trial it has (the runner never sees it).
fn probe_all(list: &[(String, PathBuf)], target: &str, emit: &mut dyn FnMut(&str)) -> Vec<Runtime> {
    let mut out = Vec::new();
    for (name, path) in list {
        match Runtime::probe(name, path) {
            Ok(r) => out.push(r),
            Err(e) => {
                let mut v = kcell_harness::verdict::Verdict::bare(
                    "RUNTIME",
                    target,
                    "",
                    "",
                    kcell_harness::verdict::Status::Error,
                    e,
                );
                v.runtime = name.clone();
                emit(&v.to_line());
            }
        }
    }
    out
}

fn agent(args: &[String]) -> i32 {
    match args.first().map(String::as_str) {
        Some("probe") => kcell_harness::inside::main(&args[1..]),
        Some("prepare-host") => match (args.get(1), std::env::current_exe()) {
            (Some(dir), Ok(me)) => match kcell_harness::host::prepare(Path::new(dir), &me) {
                Ok(t) => {
                    println!("kcell={}\nrootfs={}", t.kcell.display(), t.rootfs.display());
                    0
                }
                Err(e) => {
                    eprintln!("kcell-agent: {e}");
                    2
                }
            },
            _ => usage(),
        },
        Some("run") => run(&args[1..]),
        _ => usage(),
    }
}

/// `kcell report [OLD.json] NEW.json [-o FILE] [--cases DIR] [--format F]
/// [--target T] [--runtime R]`: the HTML page of NEW against OLD, or NEW in
/// KTAP, TAP 13 or KCIDB, without rerunning anything.
fn report(args: &[String]) -> i32 {
    let opts = match ReportOptions::parse(args) {
        Ok(o) => o,
        Err(e) => return report_usage(&e),
    };
    let read = |p: &Path| -> Result<Vec<kcell_harness::verdict::Verdict>, String> {
        let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: not a report.json: {e}", p.display()))
    };
    let (old, new) = match opts.files.as_slice() {
        [new] => (None, read(new)),
        [old, new] => (Some(read(old)), read(new)),
        _ => return report_usage("give NEW.json, or OLD.json NEW.json"),
    };
    let (old, mut new) = match (old.transpose(), new) {
        (Ok(o), Ok(n)) => (o, n),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("kcell report: {e}");
            return 1;
        }
    };
    if opts.compare {
        let Some(old) = old else {
            return report_usage("--compare needs OLD.json and NEW.json");
        };
        return compare_cells(&old, &new);
    }
    if let Some(t) = &opts.target {
        new.retain(|v| &v.target == t);
    }
    if let Some(r) = &opts.runtime {
        new.retain(|v| &v.runtime == r);
    }
    let text = match opts.format {
        None => {
            let titles: std::collections::BTreeMap<String, String> = opts
                .cases
                .as_deref()
                .map(|d| {
                    kcell_harness::case::load_dir(d)
                        .into_iter()
                        .flatten()
                        .map(|c| (c.id, c.title))
                        .collect()
                })
                .unwrap_or_default();
            kcell_harness::html::render(&new, old.as_deref(), &titles)
        }
        Some(format) => match exported(&new, format, &opts) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("kcell report: {e}");
                return 1;
            }
        },
    };
    if opts.out.as_os_str() == "-" {
        print!("{text}");
        return 0;
    }
    match std::fs::write(&opts.out, text) {
        Ok(()) => {
            println!("{}", opts.out.display());
            0
        }
        Err(e) => {
            eprintln!("kcell report: write {}: {e}", opts.out.display());
            1
        }
    }
}

/// `kcell report --compare OLD NEW`: every cell (trial) whose verdict
/// differs, or that one of them lacks; 0 when they have the same cells with
/// the same verdicts (a sharded run merged against an unsharded one).
fn compare_cells(
    old: &[kcell_harness::verdict::Verdict],
    new: &[kcell_harness::verdict::Verdict],
) -> i32 {
    use std::collections::BTreeMap;
    let cells = |vs: &[kcell_harness::verdict::Verdict]| -> BTreeMap<String, &'static str> {
        vs.iter().map(|v| (v.trial(), v.status.as_str())).collect()
    };
    let (a, b) = (cells(old), cells(new));
    let mut differing = 0;
    for (trial, was) in &a {
        match b.get(trial) {
            Some(now) if now == was => {}
            Some(now) => {
                differing += 1;
                println!("{trial}: {was} -> {now}");
            }
            None => {
                differing += 1;
                println!("{trial}: {was} -> (missing)");
            }
        }
    }
    for (trial, now) in b.iter().filter(|(t, _)| !a.contains_key(*t)) {
        differing += 1;
        println!("{trial}: (missing) -> {now}");
    }
    println!(
        "{} cells before, {} after, {differing} differing",
        a.len(),
        b.len()
    );
    i32::from(differing > 0)
}

/// What `kcell report` was asked.
struct ReportOptions {
    files: Vec<PathBuf>,
    out: PathBuf,
    cases: Option<PathBuf>,
    format: Option<kcell_harness::export::Format>,
    target: Option<String>,
    runtime: Option<String>,
    /// Print the cells whose verdicts differ, exit 1 if any.
    compare: bool,
    /// KCIDB's origin: the submitting CI system's name.
    origin: String,
}

impl ReportOptions {
    fn parse(args: &[String]) -> Result<ReportOptions, String> {
        let mut o = ReportOptions {
            files: Vec::new(),
            out: PathBuf::new(),
            cases: None,
            format: None,
            target: None,
            runtime: None,
            compare: false,
            origin: "kcell".into(),
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = |what: &str| it.next().cloned().ok_or(format!("{a} needs {what}"));
            match a.as_str() {
                "-o" | "--output" => o.out = value("a file, or - for standard output")?.into(),
                "--cases" => o.cases = Some(value("a directory")?.into()),
                "--format" => {
                    let f = value("ktap, tap13, kcidb or html")?;
                    o.format = match f.as_str() {
                        "html" => None,
                        other => Some(other.parse()?),
                    };
                }
                "--target" => o.target = Some(value("a target, e.g. host")?),
                "--runtime" => o.runtime = Some(value("a runtime, e.g. runc")?),
                "--compare" => o.compare = true,
                "--origin" => o.origin = value("a KCIDB origin: lower-case letters, digits, _")?,
                other if other.starts_with('-') => return Err(format!("unknown option '{other}'")),
                other => o.files.push(PathBuf::from(other)),
            }
        }
        if o.out.as_os_str().is_empty() {
            o.out = match o.format {
                None => "report.html".into(),
                Some(_) => "-".into(),
            };
        }
        Ok(o)
    }
}

/// `verdicts` in `format`, judged with the cases' differences.toml when
/// --cases names the directory (else a failure is a failure).
fn exported(
    verdicts: &[kcell_harness::verdict::Verdict],
    format: kcell_harness::export::Format,
    opts: &ReportOptions,
) -> Result<String, String> {
    use kcell_harness::export::{self, Format};
    let known = match &opts.cases {
        Some(d) => kcell_harness::differences::load(&d.join("differences.toml"))?,
        None => Vec::new(),
    };
    let judged: Vec<_> = verdicts
        .iter()
        .map(|v| (v, kcell_harness::gate::judge(v, &known).0))
        .collect();
    Ok(match format {
        Format::Ktap => export::ktap(&judged),
        Format::Kcidb => serde_json::to_string_pretty(&export::kcidb(
            &judged,
            &opts.origin,
            &export::run_name(&judged),
        ))
        .map_err(|e| e.to_string())?,
        Format::Tap13 => {
            let runtime = opts
                .runtime
                .as_deref()
                .ok_or("--format tap13 is one runtime's: name it with --runtime")?;
            export::tap13(&judged, runtime)
        }
    })
}

const MERGE_USAGE: &str = "usage: kcell merge [-o DIR] [--cases DIR] [--baseline OLD.json] [--allow-stale-differences]
                   [--allow-flaky PATTERN,...] SHARD_DIR...
  puts the reports of `--shard K/N` runs back together: each SHARD_DIR holds a shard's report.json
  and run.json. Refuses a shard of another plan or a unit run twice; a unit no shard ran becomes an
  error verdict per trial naming it. Writes the whole run's reports to DIR (default target/kcell/merged)
  and gates it as a single run: exit 1 on a failure, an error, an unexpected skip, a stale known
  difference or (with --baseline) a regression.";

/// `kcell merge ...`: the shards' reports as one run's (shard.rs), written
/// and gated as a single run's (publish.rs).
fn merge(args: &[String]) -> i32 {
    let mut out = PathBuf::from("target/kcell/merged");
    let mut cases = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cases");
    let mut baseline = None;
    let mut allow_stale = false;
    let mut allow_flaky: Vec<String> = Vec::new();
    let mut dirs = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned();
        match a.as_str() {
            "-h" | "--help" => {
                println!("{MERGE_USAGE}");
                return 0;
            }
            "-o" | "--output" | "--cases" | "--baseline" | "--allow-flaky" => {
                let Some(v) = value() else {
                    eprintln!("kcell merge: {a} needs a value\n{MERGE_USAGE}");
                    return 2;
                };
                match a.as_str() {
                    "--allow-flaky" => allow_flaky = v.split(',').map(String::from).collect(),
                    "--cases" => cases = v.into(),
                    "--baseline" => baseline = Some(PathBuf::from(v)),
                    _ => out = v.into(),
                }
            }
            "--allow-stale-differences" => allow_stale = true,
            other if other.starts_with('-') => {
                eprintln!("kcell merge: unknown option '{other}'\n{MERGE_USAGE}");
                return 2;
            }
            dir => dirs.push(PathBuf::from(dir)),
        }
    }
    let gate = MergeGate {
        baseline,
        allow_stale,
        allow_flaky,
    };
    match merged(&dirs, &out, &cases, &gate) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("kcell merge: {e}");
            2
        }
    }
}

/// How `kcell merge` gates the merged run.
struct MergeGate {
    baseline: Option<PathBuf>,
    allow_stale: bool,
    allow_flaky: Vec<String>,
}

/// Reads, merges, writes and gates; Ok(false) when the merged run fails.
fn merged(dirs: &[PathBuf], out: &Path, cases: &Path, g: &MergeGate) -> Result<bool, String> {
    use kcell_harness::{differences, gate, publish, shard};
    let read =
        |p: PathBuf| std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()));
    let mut shards = Vec::new();
    for dir in dirs {
        let record: shard::RunRecord = serde_json::from_str(&read(dir.join("run.json"))?)
            .map_err(|e| format!("{}: not a run.json: {e}", dir.join("run.json").display()))?;
        let verdicts: Vec<kcell_harness::verdict::Verdict> =
            serde_json::from_str(&read(dir.join("report.json"))?).map_err(|e| {
                format!(
                    "{}: not a report.json: {e}",
                    dir.join("report.json").display()
                )
            })?;
        shards.push((dir.display().to_string(), record, verdicts));
    }
    let (plan, verdicts) = shard::merge(&shards)?;
    let known = differences::load(&cases.join("differences.toml"))?;
    let titles = kcell_harness::case::load_dir(cases)
        .into_iter()
        .flatten()
        .map(|c| (c.id, c.title))
        .collect();
    let reports_ok = publish::write_reports(
        out,
        &verdicts,
        &known,
        &Default::default(),
        g.baseline.as_deref(),
        &titles,
    );
    let timeline = shards
        .iter()
        .flat_map(|(_, r, _)| r.timeline.iter().cloned())
        .collect();
    let record = shard::RunRecord {
        ran: plan.units.iter().map(|u| u.name.clone()).collect(),
        plan,
        shard: None,
        timeline,
    };
    std::fs::write(
        out.join("run.json"),
        serde_json::to_string_pretty(&record).map_err(|e| e.to_string())?,
    )
    .map_err(|e| format!("write {}: {e}", out.join("run.json").display()))?;
    let gate_ok = publish::gate_checks(cases, &verdicts, &known, g.allow_stale)?;
    let mut tally = gate::Tally::default();
    let mut failed = Vec::new();
    for v in &verdicts {
        let outcome = gate::judge(v, &known).0;
        tally.add(v, outcome);
        if outcome.fails()
            && !(outcome == gate::Outcome::Flaky && gate::allowed_flaky(&v.trial(), &g.allow_flaky))
        {
            failed.push(format!("{} {}", v.trial(), outcome.as_str()));
        }
    }
    for f in &failed {
        eprintln!("FAILED: {f}");
    }
    println!(
        "merged {} shard reports of plan {}: {} trials",
        dirs.len(),
        record.plan.fingerprint,
        verdicts.len()
    );
    for line in tally.lines() {
        println!("  {line}");
    }
    Ok(failed.is_empty() && reports_ok && gate_ok)
}

const VM_USAGE: &str = "usage: kcell vm [--kernel ID|PATH] [--cgroup v1|v2] [--cpus N] [--memory SIZE]
                [--share DIR[:ro]] [--file /ABS/PATH] [--env K=V] [--timeout S] [--keep-console FILE]
                -- PROGRAM ARGS...
  boots a throwaway guest (the conformance suite's), runs PROGRAM in it with its libraries,
  streams its output and exits with its status; 125 when the guest fails (console tail on stderr).
  As a cargo runner: runner = [\"kcell\", \"vm\", \"--kernel\", \"deb-5.10-cloud\", \"--cgroup\", \"v1\", \"--\"]";

/// `kcell vm ...`: a program in a throwaway guest (vm::program).
fn vm(args: &[String]) -> i32 {
    if args.first().is_some_and(|a| a == "--help" || a == "-h") {
        println!("{VM_USAGE}");
        return 0;
    }
    let options = match kcell_harness::vm::program::parse(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("kcell vm: {e}\n{VM_USAGE}");
            return 125;
        }
    };
    match std::env::current_exe() {
        Ok(me) => kcell_harness::vm::program::run(&options, &me),
        Err(e) => {
            eprintln!("kcell vm: where am I? {e}");
            125
        }
    }
}

fn report_usage(why: &str) -> i32 {
    eprintln!(
        "kcell report: {why}\nusage: kcell report [OLD.json] NEW.json [-o FILE|-] [--cases DIR] [--format html|ktap|tap13|kcidb] [--target T] [--runtime R] [--origin NAME] [--compare]"
    );
    2
}

fn usage() -> i32 {
    eprintln!("{USAGE}");
    2
}

fn run(args: &[String]) -> i32 {
    let mut target = Target {
        name: "host".into(),
        agent: PathBuf::new(),
        kcell: PathBuf::new(),
        rootfs: PathBuf::new(),
        store: std::env::temp_dir().join("kcell-store"),
    };
    let mut runtimes: Vec<(String, PathBuf)> = Vec::new();
    let mut only: Option<Vec<String>> = None;
    let mut inputs = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().unwrap_or_default();
        match a.as_str() {
            "--kcell" => target.kcell = value().into(),
            "--rootfs" => target.rootfs = value().into(),
            "--store" => target.store = value().into(),
            "--target" => target.name = value(),
            "--runtime" => {
                let v = value();
                match v.split_once('=') {
                    Some((n, p)) => runtimes.push((n.to_string(), p.into())),
                    None => return usage(),
                }
            }
            "--only" => only = Some(value().split(',').map(String::from).collect()),
            other => inputs.push(PathBuf::from(other)),
        }
    }
    if target.kcell.as_os_str().is_empty()
        || target.rootfs.as_os_str().is_empty()
        || inputs.is_empty()
        || runtimes.is_empty()
    {
        return usage();
    }
    target.agent = target.kcell.clone();
    let mut files = Vec::new();
    for input in &inputs {
        if input.is_dir() {
            files.extend(case_files(input));
        } else {
            files.push(input.clone());
        }
    }
    let name = target.name.clone();
    let mut emit = |line: &str| {
        if line.starts_with(kcell_harness::frames::PROGRESS) {
            eprintln!("kcell-agent: [{name}] {line}");
        } else {
            println!("{line}");
        }
    };
    let runtimes = probe_all(&runtimes, &target.name, &mut emit);
    let failed =
        kcell_harness::runner::run_all(&files, &target, &runtimes, only.as_deref(), &mut emit);
    i32::from(failed > 0)
}
