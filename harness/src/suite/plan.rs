//! The run's plan: every (target, runtime, case) trial the selection
//! names, where it runs (the host, or which guest unit), and the units
//! with their estimates and fingerprint (shard.rs).

use super::select::Selection;
use crate::case::{Case, Scope};
use crate::matrix::{self, Wanted};
use crate::shard;
use crate::vm::{self, VmTarget};
use libtest_mimic::Arguments;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// One trial of the run's plan.
pub(super) struct Planned {
    pub(super) name: String,
    pub(super) case: Case,
    pub(super) runtime: Wanted,
    /// On the host (with the reason it cannot run there, if any), or in
    /// the guest of this index.
    pub(super) place: Place,
}

pub(super) enum Place {
    Host { unmet: Option<String> },
    Guest(usize),
}

impl Planned {
    /// Ignored before it runs: a host requirement is unmet.
    pub(super) fn ignored_before(&self) -> bool {
        matches!(&self.place, Place::Host { unmet: Some(_) })
    }
}

/// One unit of guest work: a VM target with one runtime, booted once for
/// all of that runtime's selected trials there.
pub(super) struct GuestTarget {
    pub(super) target: VmTarget,
    /// The runtime it runs.
    pub(super) runtime: String,
    /// `runtime::CASE` of the selected trials.
    pub(super) keys: Vec<String>,
    pub(super) run: OnceLock<vm::TargetRun>,
}

impl GuestTarget {
    /// The unit's name: `<target>/<runtime>`.
    pub(super) fn unit(&self) -> String {
        format!("{}/{}", self.target.name(), self.runtime)
    }
}

/// Whether `case` runs with runtime `w`: a mutant only on the cases whose
/// config.json its mutation changes; kcell's own-command cases only on kcell.
pub(super) fn applies(case: &Case, w: &Wanted) -> bool {
    match &w.mutant {
        Some((_, m)) => {
            case.scope == Scope::Any
                && crate::mutant::named(m)
                    .is_some_and(|m| crate::mutant::applies(m, &crate::mutant::configs_of(case)))
        }
        None => case.scope == Scope::Any || w.name == "kcell",
    }
}

/// Every trial of the selection, host first, and the guest targets.
pub(super) fn plan(sel: &Selection) -> Result<(Vec<Planned>, Vec<GuestTarget>), String> {
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
                    crate::requires::unmet(&case.requires)
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
    let manifest_path = crate::data::vm_dir().join("kernels.toml");
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

/// The run's plan (shard.rs): the host's trials as one unit, each guest
/// unit as one, estimated from --durations or the cases' timeouts, and
/// fingerprinted with what decides the verdicts.
pub(super) fn unit_plan(
    sel: &Selection,
    planned: &[Planned],
    guests: &[GuestTarget],
) -> shard::Plan {
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
pub(super) fn identity(sel: &Selection) -> Vec<String> {
    let mut lines = vec![
        format!("kcell-harness {}", env!("CARGO_PKG_VERSION")),
        format!(
            "repeat {} rerun-failures {}",
            sel.repeat, sel.rerun_failures
        ),
    ];
    let revision = crate::data::checkout()
        .and_then(|root| {
            Command::new("git")
                .arg("-C")
                .arg(&root)
                .args(["rev-parse", "HEAD"])
                .output()
                .ok()
        })
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
    let mut files: Vec<PathBuf> = std::fs::read_dir(crate::data::cases_dir())
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.push(crate::data::vm_dir().join("kernels.toml"));
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

/// Whether libtest-mimic will run a trial of this name (its filter, --exact,
/// --skip, --ignored and --include-ignored rules), so a guest boots only for
/// the cases that were asked for.
pub(super) fn will_run(args: &Arguments, name: &str, ignored: bool) -> bool {
    let by_ignore = if args.ignored {
        ignored
    } else {
        args.include_ignored || !ignored
    };
    filtered_in(args, name) && by_ignore
}

/// Whether the filter and --skip select a trial of this name.
pub(super) fn filtered_in(args: &Arguments, name: &str) -> bool {
    let matches = |pattern: &str| {
        if args.exact {
            name == pattern
        } else {
            name.contains(pattern)
        }
    };
    args.filter.as_deref().is_none_or(matches) && !args.skip.iter().any(|s| matches(s))
}
