//! The host's trials: the host target (built on first use), and each trial
//! run by the agent in a process of its own, alone on the machine.

use super::plan::{filtered_in, will_run, Place, Planned};
use crate::case::Case;
use crate::driver::Target;
use crate::matrix::Wanted;
use crate::verdict::{Status, Verdict};
use libtest_mimic::Arguments;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The host target, built on first use under /tmp (reachable by uid 1000).
pub(super) struct HostTarget {
    pub(super) dir: PathBuf,
    /// The agent and kcell's binary (when kcell runs) copied into it.
    pub(super) agent: PathBuf,
    pub(super) kcell: Option<PathBuf>,
    pub(super) target: OnceLock<Result<Target, String>>,
}

impl HostTarget {
    pub(super) fn get(&self) -> Result<&Target, String> {
        self.target
            .get_or_init(|| {
                eprintln!("preparing the host target in {} ...", self.dir.display());
                crate::host::prepare(&self.dir, &self.agent, self.kcell.as_deref())
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

/// The machine-wide measurement lock (a file lock in the cache, so it also
/// holds between processes: two runs, nextest's processes, and the file
/// stays where caches belong rather than in /tmp): a host case holds it
/// alone, guests share it.
pub(super) fn measurement_lock(
    exclusive: bool,
) -> Result<nix::fcntl::Flock<std::fs::File>, String> {
    let dir = crate::data::cache_dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    let path = dir.join("measure.lock");
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
pub(super) fn run_on_host(case: &Case, runtime: &Wanted, host: &HostTarget) -> Verdict {
    host_verdict(case, runtime, host).unwrap_or_else(|why| {
        let layout = crate::observe::cgroupfs::Layout::read();
        let mut v = Verdict::bare(
            &case.id,
            "host",
            &crate::runner::kernel_release(),
            layout.version(),
            Status::Error,
            why,
        );
        v.runtime = runtime.name.clone();
        v
    })
}

pub(super) fn host_verdict(
    case: &Case,
    runtime: &Wanted,
    host: &HostTarget,
) -> Result<Verdict, String> {
    let _alone_on_the_machine = measurement_lock(true)?;
    let target = host.get()?;
    let path = if runtime.name == "kcell" && !target.kcell.as_os_str().is_empty() {
        target.kcell.with_file_name("kcell-oci")
    } else if let Some((base, mutation)) = &runtime.mutant {
        // The host's mutant wraps the host target's own kcell-oci.
        let m =
            crate::mutant::named(mutation).ok_or_else(|| format!("unknown mutation {mutation}"))?;
        let bin = target.agent.parent().unwrap_or(Path::new("/"));
        let links = crate::mutant::make_links(&bin.join("mutants"), &target.agent, base, &[m])?;
        links[0].1.clone()
    } else {
        runtime.path.clone().ok_or_else(|| match &runtime.missing {
            Some(why) => format!("runtime {}: {why}", runtime.name),
            None => format!("runtime {} not found on this machine: install it (scripts/install-deps installs runc, crun and youki), name a line of vm/runtimes.toml (KCELL_RUNTIMES={}@sid) or a binary (KCELL_RUNTIMES={}=/path/to/binary)", runtime.name, runtime.name, runtime.name),
        })?
    };
    let bin = target.agent.parent().unwrap_or(Path::new("/"));
    let path = crate::host::runnable_by_all(&runtime.name, &path, bin)?;
    let mut agent = Command::new(&target.agent);
    agent.args(["run", "--target", "host"]);
    if !target.kcell.as_os_str().is_empty() {
        agent.arg("--kcell").arg(&target.kcell);
    }
    let output = agent
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
        .map_err(|e| format!("spawning the agent {}: {e}", target.agent.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout.lines().find_map(Verdict::from_line).ok_or_else(|| {
        format!(
            "the agent gave no verdict (exit {:?}); stderr: {}",
            output.status.code(),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

pub(super) fn skip_verdict(case: &Case, runtime: &str, reason: &str) -> Verdict {
    let mut v = Verdict::bare(
        &case.id,
        "host",
        &crate::runner::kernel_release(),
        crate::observe::cgroupfs::Layout::read().version(),
        Status::Skip,
        reason,
    );
    v.runtime = runtime.to_string();
    v
}

/// How often each trial runs: `--repeat` times, and after a failure up to
/// `--rerun-failures` more times until one passes. Counts the reruns.
#[derive(Clone, Copy)]
pub(super) struct Runs {
    pub(super) repeat: usize,
    pub(super) rerun_failures: usize,
}

pub(super) fn failed(v: &Verdict) -> bool {
    matches!(v.status, Status::Fail | Status::Error)
}

/// Runs the selected host trials, one at a time and alone on the machine,
/// printing each as it ends.
pub(super) fn run_host_trials(
    config: &super::Config,
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
        agent: config.agent.clone(),
        kcell: config.kcell.clone(),
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
