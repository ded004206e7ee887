//! `kcell-agent`: runs cases and prints one framed JSON verdict per line.
//! A multi-call binary: invoked as `kcell` it is the runtime, as
//! `kcell-probe` the in-container helper, so one static file serves the host,
//! the container image and the VM guest.

use kcell_harness::case::{case_files, load_dir};
use kcell_harness::runner::Target;
use std::path::{Path, PathBuf};

const USAGE: &str = "usage:
  kcell-agent run --runtime PATH --rootfs DIR [--store DIR] [--target NAME] [--only ID,..] CASES...
      CASES are case files or directories of them; one framed verdict line per case on stdout
  kcell-agent prepare-host DIR      build the busybox image and the runtime under DIR
  kcell-agent vm --manifest vm/kernels.toml --cases cases [--only ID,..] TARGET
      boot one VM target (e.g. deb-6.1-cloud/v1) and print its verdicts
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
        // PID 1 of a VM guest.
        "init" => kcell_harness::vm::guest::init_main(),
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
        Some("vm") => vm(&args[1..]),
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
        store: kcell::image::store::Store::default_location()
            .root()
            .to_path_buf(),
    };
    let mut only: Option<Vec<String>> = None;
    let mut inputs = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().unwrap_or_default();
        match a.as_str() {
            "--runtime" => target.runtime = value().into(),
            "--rootfs" => target.rootfs = value().into(),
            "--store" => target.store = value().into(),
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
    let mut files = Vec::new();
    for input in &inputs {
        if input.is_dir() {
            files.extend(case_files(input));
        } else {
            files.push(input.clone());
        }
    }
    let failed =
        kcell_harness::runner::run_all(&files, &target, only.as_deref(), &mut |line: &str| {
            if line.starts_with(kcell_harness::vm::qemu::PROGRESS) {
                eprintln!("kcell-agent: [{}] {line}", target.name);
            } else {
                println!("{line}");
            }
        });
    i32::from(failed > 0)
}

fn vm(args: &[String]) -> i32 {
    use kcell_harness::vm;
    let (mut manifest, mut cases, mut only, mut target) = (None, None, None, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--manifest" => manifest = it.next().map(PathBuf::from),
            "--cases" => cases = it.next().map(PathBuf::from),
            "--only" => {
                only = it
                    .next()
                    .map(|s| s.split(',').map(String::from).collect::<Vec<_>>())
            }
            other => target = Some(other.to_string()),
        }
    }
    let (Some(manifest), Some(cases), Some(target), Ok(agent)) =
        (manifest, cases, target, std::env::current_exe())
    else {
        return usage();
    };
    let manifest = match vm::kernel::Manifest::load(&manifest) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("kcell-agent: {e}");
            return 2;
        }
    };
    let Some((kernel, cgroup)) = target.split_once('/') else {
        return usage();
    };
    let cgroup: &'static str = if cgroup == "v1" { "v1" } else { "v2" };
    let ids: Vec<String> = only.unwrap_or_else(|| {
        load_dir(&cases)
            .into_iter()
            .filter_map(Result::ok)
            .map(|c| c.id)
            .collect()
    });
    let inputs = vm::Inputs {
        manifest,
        agent,
        cases,
        cache: vm::cache_dir(),
    };
    let result = vm::run_target(
        &vm::VmTarget {
            kernel: kernel.to_string(),
            cgroup,
        },
        &inputs,
        &ids,
        &mut |line: &str| eprintln!("{line}"),
    );
    for v in &result.verdicts {
        println!("{}", v.to_line());
    }
    i32::from(result.verdicts.iter().any(|v| {
        matches!(
            v.status,
            kcell_harness::verdict::Status::Fail | kcell_harness::verdict::Status::Error
        )
    }))
}
