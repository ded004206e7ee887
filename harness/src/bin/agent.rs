//! `kcell-agent`: runs cases and prints one framed JSON verdict per line.
//! A multi-call binary: invoked as `kcell-probe` it is the in-container
//! helper, as `init` a guest's PID 1, as `kcell-mutant@M@BASE` a mutant
//! runtime; so one file serves the host, the container image and the VM
//! guest. It holds no runtime: kcell is judged as a binary like any other.

use kcell_harness::case::case_files;
use kcell_harness::driver::{Runtime, Target};
use std::path::{Path, PathBuf};

const USAGE: &str = "usage:
  kcell-agent run --target NAME --rootfs DIR [--kcell PATH] [--store DIR] --runtime NAME=PATH...
                  [--only RUNTIME::ID,..] CASES...
      CASES are case files or directories of them; one framed verdict line per trial on stdout.
      --kcell names kcell's CLI, for the cases of kcell's own commands (scope kcell)
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
        "kcell-probe" => kcell_probe::main(&args[1..]),
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
        agent: "/init".into(),
        // Present when the plan runs kcell (vm/initramfs.rs).
        kcell: Some(PathBuf::from(guest_paths::RUNTIME))
            .filter(|k| k.exists())
            .unwrap_or_default(),
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
        Some("probe") => kcell_probe::main(&args[1..]),
        Some("run") => run(&args[1..]),
        _ => usage(),
    }
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
    if target.rootfs.as_os_str().is_empty() || inputs.is_empty() || runtimes.is_empty() {
        return usage();
    }
    target.agent = match std::env::current_exe() {
        Ok(me) => me,
        Err(e) => {
            eprintln!("kcell-agent: where am I? {e}");
            return 2;
        }
    };
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
