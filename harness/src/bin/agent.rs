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

/// `kcell report OLD.json NEW.json [-o FILE] [--cases DIR]`: the HTML page
/// of NEW against OLD, without rerunning anything.
fn report(args: &[String]) -> i32 {
    let mut files = Vec::new();
    let mut out = PathBuf::from("report.html");
    let mut cases: Option<PathBuf> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-o" | "--output" => match it.next() {
                Some(v) => out = v.into(),
                None => return report_usage("-o needs a file"),
            },
            "--cases" => match it.next() {
                Some(v) => cases = Some(v.into()),
                None => return report_usage("--cases needs a directory"),
            },
            other if other.starts_with('-') => {
                return report_usage(&format!("unknown option '{other}'"))
            }
            other => files.push(PathBuf::from(other)),
        }
    }
    let read = |p: &Path| -> Result<Vec<kcell_harness::verdict::Verdict>, String> {
        let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: not a report.json: {e}", p.display()))
    };
    let (old, new) = match files.as_slice() {
        [new] => (None, read(new)),
        [old, new] => (Some(read(old)), read(new)),
        _ => return report_usage("give NEW.json, or OLD.json NEW.json"),
    };
    let (old, new) = match (old.transpose(), new) {
        (Ok(o), Ok(n)) => (o, n),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("kcell report: {e}");
            return 1;
        }
    };
    let titles: std::collections::BTreeMap<String, String> = cases
        .map(|d| {
            kcell_harness::case::load_dir(&d)
                .into_iter()
                .flatten()
                .map(|c| (c.id, c.title))
                .collect()
        })
        .unwrap_or_default();
    let page = kcell_harness::html::render(&new, old.as_deref(), &titles);
    match std::fs::write(&out, page) {
        Ok(()) => {
            println!("{}", out.display());
            0
        }
        Err(e) => {
            eprintln!("kcell report: write {}: {e}", out.display());
            1
        }
    }
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
        "kcell report: {why}\nusage: kcell report [OLD.json] NEW.json [-o FILE] [--cases DIR]"
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
