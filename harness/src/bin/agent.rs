//! `kcell-agent`: runs cases and prints one framed JSON verdict per line.
//! A multi-call binary: invoked as `kcell` it is the runtime, as
//! `kcell-probe` the in-container helper, so one static file serves the host,
//! the container image and the VM guest.

use kcell_harness::case::{load_dir, Case};
use kcell_harness::runner::{run_case, Target};
use std::path::{Path, PathBuf};

const USAGE: &str = "usage:
  kcell-agent run --runtime PATH --rootfs DIR [--target NAME] [--only ID,..] CASES...
      CASES are case files or directories of them; one framed verdict line per case on stdout
  kcell-agent prepare-host DIR      build the busybox image and the runtime under DIR
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
        "kcell" => kcell::cli::main(std::env::args_os()),
        "kcell-probe" => kcell_harness::inside::main(&args[1..]),
        _ => agent(&args[1..]),
    };
    std::process::exit(code);
}

fn agent(args: &[String]) -> i32 {
    match args.first().map(String::as_str) {
        Some("probe") => kcell_harness::inside::main(&args[1..]),
        Some("prepare-host") => match (args.get(1), std::env::current_exe()) {
            (Some(dir), Ok(me)) => match kcell_harness::host::prepare(Path::new(dir), &me) {
                Ok(t) => {
                    println!(
                        "runtime={}\nrootfs={}",
                        t.runtime.display(),
                        t.rootfs.display()
                    );
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

fn usage() -> i32 {
    eprintln!("{USAGE}");
    2
}

fn run(args: &[String]) -> i32 {
    let mut target = Target {
        name: "host".into(),
        runtime: PathBuf::new(),
        agent: PathBuf::new(),
        rootfs: PathBuf::new(),
    };
    let mut only: Option<Vec<String>> = None;
    let mut inputs = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().unwrap_or_default();
        match a.as_str() {
            "--runtime" => target.runtime = value().into(),
            "--rootfs" => target.rootfs = value().into(),
            "--target" => target.name = value(),
            "--only" => only = Some(value().split(',').map(String::from).collect()),
            other => inputs.push(PathBuf::from(other)),
        }
    }
    if target.runtime.as_os_str().is_empty()
        || target.rootfs.as_os_str().is_empty()
        || inputs.is_empty()
    {
        return usage();
    }
    target.agent = target.runtime.clone();
    let mut cases = Vec::new();
    for input in &inputs {
        if input.is_dir() {
            cases.extend(load_dir(input));
        } else {
            cases.push(Case::load(input));
        }
    }
    let cases: Vec<_> = cases
        .into_iter()
        .filter(|c| match (c, &only) {
            (Ok(c), Some(ids)) => ids.contains(&c.id),
            _ => true,
        })
        .collect();
    let total = cases.len();
    let mut failed = 0;
    for (n, case) in cases.into_iter().enumerate() {
        match case {
            Ok(case) => {
                eprintln!(
                    "kcell-agent: [{}] case {} of {total}: {}",
                    target.name,
                    n + 1,
                    case.id
                );
                let v = run_case(&case, &target);
                if matches!(
                    v.status,
                    kcell_harness::verdict::Status::Fail | kcell_harness::verdict::Status::Error
                ) {
                    failed += 1;
                }
                println!("{}", v.to_line());
            }
            Err(e) => {
                // A malformed case file stops no other case.
                eprintln!("kcell-agent: {e}");
                failed += 1;
            }
        }
    }
    i32::from(failed > 0)
}
