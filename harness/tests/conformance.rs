//! `cargo test` entry: one trial per (target, case), named `host::NS-UTS-1`.
//! Listing (`-- --list`) and filtering build nothing; the host target is
//! prepared once, on the first trial that runs.
//!
//! Each case runs in a separate agent process (the same binary and code path
//! as inside a VM guest), one at a time: CPU and I/O measurements must not
//! share the machine with another case.

use kcell_harness::case::{load_dir, Case};
use kcell_harness::runner::Target;
use kcell_harness::verdict::{Status, Verdict};
use libtest_mimic::{Arguments, Failed, Trial};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::{Arc, Mutex, OnceLock};

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

fn run_on_host(
    case: &Case,
    host: &HostTarget,
    lock: &Mutex<()>,
    verdicts: &Mutex<Vec<Verdict>>,
) -> Result<(), Failed> {
    let _one_at_a_time = lock.lock().unwrap_or_else(|e| e.into_inner());
    let target = host.get()?;
    // The runtime copy is the agent binary; under its own name it is the agent.
    let output = Command::new(&target.runtime)
        .arg0("kcell-agent")
        .args(["run", "--target", "host", "--runtime"])
        .arg(&target.runtime)
        .arg("--rootfs")
        .arg(&target.rootfs)
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
    let result = match verdict.status {
        Status::Pass => Ok(()),
        Status::Skip => {
            println!("host::{} skipped: {}", case.id, verdict.detail);
            Ok(())
        }
        Status::Inconclusive => {
            println!("host::{} inconclusive:\n{}", case.id, verdict.detail);
            Ok(())
        }
        Status::Fail | Status::Error => Err(Failed::from(format!(
            "{}: {}\n{}",
            verdict.status.as_str(),
            case.title,
            verdict.detail
        ))),
    };
    verdicts
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(verdict);
    result
}

fn skip_verdict(case: &Case, reason: &str) -> Verdict {
    Verdict {
        case: case.id.clone(),
        target: "host".into(),
        kernel: kcell_harness::runner::kernel_release(),
        cgroup: kcell::cgroup::layout::Layout::detect()
            .describe()
            .to_string(),
        status: Status::Skip,
        detail: reason.to_string(),
        checks: Vec::new(),
        observations: Default::default(),
        seconds: 0.0,
        headline: None,
    }
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

/// Writes report.json, report.xml and matrix.md; with a baseline, lists
/// regressions (and fails) and improvements.
fn write_reports(verdicts: &[Verdict], baseline: Option<&Path>) -> bool {
    use kcell_harness::report;
    let dir = report_dir();
    let _ = std::fs::create_dir_all(&dir);
    let json = serde_json::to_string_pretty(verdicts).unwrap_or_default();
    let _ = std::fs::write(dir.join("report.json"), json);
    let _ = std::fs::write(dir.join("report.xml"), report::junit_xml(verdicts));
    let _ = std::fs::write(dir.join("matrix.md"), report::matrix_markdown(verdicts));
    eprintln!(
        "reports: {}/{{report.json,report.xml,matrix.md}}",
        dir.display()
    );
    let Some(path) = baseline else { return true };
    let old: Vec<Verdict> = match std::fs::read_to_string(path)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
    {
        Ok(v) => v,
        Err(e) => {
            eprintln!("baseline {}: {e}", path.display());
            return false;
        }
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

fn main() -> ExitCode {
    let (args, baseline) = split_baseline(std::env::args().collect());
    let args = Arguments::from_iter(args);
    let host = Arc::new(HostTarget {
        dir: std::env::temp_dir().join(format!("kcell-host-{}", std::process::id())),
        target: OnceLock::new(),
    });
    let lock = Arc::new(Mutex::new(()));
    let verdicts = Arc::new(Mutex::new(Vec::new()));
    let is_root = nix::unistd::geteuid().is_root();
    let mut trials = Vec::new();
    let mut skipped = Vec::new();
    for loaded in load_dir(&cases_dir()) {
        match loaded {
            Ok(case) => {
                let name = format!("host::{}", case.id);
                let unmet = if is_root {
                    kcell_harness::requires::unmet(&case.requires)
                } else {
                    Some("the host target needs root: run the tests as root".to_string())
                };
                let (host, lock, verdicts) = (host.clone(), lock.clone(), verdicts.clone());
                let ignored = unmet.is_some();
                if let Some(reason) = &unmet {
                    skipped.push(format!("{name}: {reason}"));
                    // Skips known before running still belong in the reports.
                    let filtered_in = args
                        .filter
                        .as_ref()
                        .is_none_or(|f| name.contains(f.as_str()));
                    if filtered_in && !args.list {
                        verdicts
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(skip_verdict(&case, reason));
                    }
                }
                trials.push(
                    Trial::test(name, move || run_on_host(&case, &host, &lock, &verdicts))
                        .with_ignored_flag(ignored),
                );
            }
            Err(e) => {
                // A malformed case is a failing trial of its own; the others still run.
                let stem = match &e {
                    kcell_harness::case::CaseError::Parse { file, .. }
                    | kcell_harness::case::CaseError::Read(file, _) => file
                        .file_stem()
                        .map(|s| s.to_string_lossy().to_string())
                        .unwrap_or_default(),
                };
                let msg = e.to_string();
                trials.push(Trial::test(format!("host::{stem}"), move || {
                    Err(Failed::from(msg))
                }));
            }
        }
    }
    if !args.list && !skipped.is_empty() {
        eprintln!(
            "skipped (requirements not met on this host):\n  {}",
            skipped.join("\n  ")
        );
    }
    let conclusion = libtest_mimic::run(&args, trials);
    let verdicts = verdicts.lock().map(|v| v.clone()).unwrap_or_default();
    let baseline_ok = verdicts.is_empty() || write_reports(&verdicts, baseline.as_deref());
    drop(host);
    if baseline_ok {
        conclusion.exit_code()
    } else {
        ExitCode::from(101)
    }
}
