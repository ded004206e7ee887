//! The guests' units: booted one per core, the longest first, each for
//! its runtime's trials; reruns of failures; and what matrix.md notes of
//! each guest.

use super::host::{failed, measurement_lock};
use super::plan::GuestTarget;
use crate::case::Case;
use crate::shard;
use crate::verdict::Verdict;
use crate::vm;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// What a unit's guest carries: its runtime only, and kcell's binary when
/// that runtime is kcell or a mutant of it.
fn for_unit(inputs: &vm::Inputs, runtime: &str) -> vm::Inputs {
    let mut mine = inputs.clone();
    mine.runtimes.retain(|(name, _)| name == runtime);
    let kcell_based = runtime == "kcell"
        || crate::killmatrix::mutation_of(runtime).is_some_and(|(base, _)| base == "kcell");
    if !kcell_based {
        mine.kcell = None;
    }
    mine
}

/// Boots the guests that have trials to run, `workers` at a time, the one
/// with the most trials first; returns their verdicts.
pub(super) fn run_guests(
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
                let mine = for_unit(inputs, &g.runtime);
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

/// Reruns the guest trials that failed, up to `rounds` times each, a boot
/// per unit and round, until they pass; counts the reruns.
pub(super) fn rerun_guest_failures(
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
        let mine = for_unit(inputs, &g.runtime);
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

/// Boot time and problems of each guest unit, for matrix.md, which lists
/// them by target: `runc: boot to first case 5.1 s, 115 s in all; ...`.
pub(super) fn guest_notes(guests: &[GuestTarget]) -> BTreeMap<String, String> {
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

/// For a kernel of one's own (KCELL_KERNEL): each option of
/// vm/kernel.config its config lacks, with the cases that will skip.
pub(super) fn report_custom_kernel_gaps(cases: &[Case]) {
    use crate::vm::kconfig;
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
    let fragment = std::fs::read_to_string(crate::data::vm_dir().join("kernel.config"))
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
