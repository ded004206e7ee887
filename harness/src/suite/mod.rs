//! The conformance run: one trial per (target, runtime, case), named
//! `host/kcell::NS-UTS-1` or `deb-6.12-cloud/v2/runc@sid::CG-MEM-1`, for
//! `kcell-conformance run` and for `cargo test -p kcell-harness --test
//! conformance` alike (the same code, the same names, filters and
//! variables). Listing and filtering build and boot nothing.
//!
//! A run has two steps. First the selected trials run: the host's in a
//! separate agent process (the same binary and code path as inside a VM
//! guest), one at a time and before any guest boots, since CPU and I/O
//! measurements must not share the machine with another case or with
//! QEMU; then the guests, one boot per unit (a target with one runtime),
//! one guest per core (or --test-threads), the longest unit first.
//! Progress is printed as they go. Then each trial is reported to
//! libtest-mimic with its outcome as it is (gate.rs): a pass passes, a fail
//! or error fails, and a skip, an inconclusive trial or a known difference
//! (cases/differences.toml) is *ignored*, its reason printed, so the
//! closing line counts none of them as passed. The tally per runtime
//! follows it. The run also fails on a skip that cases/expected-skips.toml
//! does not allow, on a difference that no longer shows (unless
//! --allow-stale-differences), and with --baseline on a regression.
//!
//! Environment: KCELL_RUNTIMES picks runtimes (a comma list of kcell, runc,
//! crun, youki, runsc, NAME@LINE of vm/runtimes.toml, or NAME=/path/to/binary;
//! default: kcell on every target, the reference runtimes on the host and on
//! the manifest's reference targets), KCELL_TARGETS picks targets ("host",
//! "all", or a comma list of targets or kernel IDs; default: host and the
//! manifest's default kernels), KCELL_CASES picks cases by ID (a comma
//! list), KCELL_KERNEL/KCELL_MODULES add a kernel of your own, KCELL_CACHE
//! moves the cache, KCELL_KEEP keeps each guest's console log,
//! KCELL_CASES_DIR and KCELL_VM_DIR say where the cases and manifests are.

mod guests;
mod host;
mod outcome;
mod plan;
mod select;

use crate::gate::{self, Outcome};
use crate::verdict::Verdict;
use crate::{publish, shard, vm};
use libtest_mimic::Trial;
use plan::{GuestTarget, Place, Planned};
use select::Selection;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Mutex, OnceLock};

/// What the caller (the command, or the cargo test wrapper) knows.
#[derive(Debug, Clone)]
pub struct Config {
    /// The agent binary (kcell-agent): the probe helper, the guests' init.
    pub agent: PathBuf,
    /// kcell's CLI binary, when kcell is to be judged (its OCI command line
    /// is the same file named kcell-oci).
    pub kcell: Option<PathBuf>,
    /// Where the reports go unless `--output` says otherwise.
    pub output: PathBuf,
    /// What a relative path in the arguments is relative to.
    pub base: PathBuf,
}

/// Where the reports go: `--output DIR`, else the configured directory.
pub(super) fn report_dir() -> PathBuf {
    REPORT_DIR.get().cloned().unwrap_or_default()
}

/// `--output DIR`, once read (or the configured directory).
pub(super) static REPORT_DIR: OnceLock<PathBuf> = OnceLock::new();

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("{e}");
    ExitCode::FAILURE
}

/// Runs the conformance suite as `argv` (libtest's arguments with the
/// suite's flags among them) asks.
pub fn main(config: &Config, argv: Vec<String>) -> ExitCode {
    let sel = match select::select(config, argv) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let _ = REPORT_DIR.set(config.output.clone());
    let (planned, mut guests) = match plan::plan(&sel) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    // --repeat N: each guest unit names its trials N times (the guest runs
    // them in that order, in one boot).
    for g in &mut guests {
        g.keys = g
            .keys
            .iter()
            .flat_map(|k| std::iter::repeat_n(k.clone(), sel.repeat))
            .collect();
    }
    if sel.args.list {
        let mut trials: Vec<Trial> = planned
            .iter()
            .map(|p| Trial::test(p.name.clone(), || Ok(())).with_ignored_flag(p.ignored_before()))
            .collect();
        trials.extend(sel.malformed);
        return libtest_mimic::run(&sel.args, trials).exit_code();
    }
    let known = match crate::differences::load(&crate::data::cases_dir().join("differences.toml")) {
        Ok(k) => k,
        Err(e) => return fail(e),
    };
    guests::report_custom_kernel_gaps(&sel.cases);
    let units = plan::unit_plan(&sel, &planned, &guests);
    let mine: Vec<&shard::Unit> = match sel.shard {
        Some((k, n)) => units.shard(k, n),
        None => units.units.iter().collect(),
    };
    let planned = of_shard(&sel, planned, &guests, &units, &mine);
    let verdicts = match execute(config, &sel, &planned, &guests, &units, &mine) {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    conclude(sel, &planned, &guests, &verdicts, &known)
}

/// The trials of the shard's units (all of them without --shard).
fn of_shard(
    sel: &Selection,
    planned: Vec<Planned>,
    guests: &[GuestTarget],
    units: &shard::Plan,
    mine: &[&shard::Unit],
) -> Vec<Planned> {
    let Some((k, n)) = sel.shard else {
        return planned;
    };
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
    let names: BTreeSet<&str> = mine.iter().map(|u| u.name.as_str()).collect();
    planned
        .into_iter()
        .filter(|p| {
            let unit = match p.place {
                Place::Host { .. } => "host".to_string(),
                Place::Guest(i) => guests[i].unit(),
            };
            names.contains(unit.as_str())
        })
        .collect()
}

/// Step one: the host's unit alone, then the guests' units on every core,
/// the longest first; reruns of failures; one cell per trial (repeat.rs);
/// run.json written.
fn execute(
    config: &Config,
    sel: &Selection,
    planned: &[Planned],
    guests: &[GuestTarget],
    units: &shard::Plan,
    mine: &[&shard::Unit],
) -> Result<Vec<Verdict>, String> {
    let started = std::time::Instant::now();
    let runs = host::Runs {
        repeat: sel.repeat,
        rerun_failures: sel.rerun_failures,
    };
    let mut reruns = BTreeMap::new();
    let mut verdicts = host::run_host_trials(config, planned, &sel.args, runs, &mut reruns);
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
    let inputs = vm::Inputs {
        manifest: vm::kernel::Manifest::load(&crate::data::vm_dir().join("kernels.toml"))?,
        agent: config.agent.clone(),
        kcell: config.kcell.clone(),
        cases: crate::data::cases_dir(),
        cache: vm::cache_dir(),
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
    let order = longest_first(guests, mine);
    let first = guests::run_guests(order.clone(), &inputs, workers, started, &timeline);
    if sel.rerun_failures > 0 {
        let again =
            guests::rerun_guest_failures(&order, &first, &inputs, sel.rerun_failures, &mut reruns);
        verdicts.extend(again);
    }
    verdicts.extend(first);
    // A trial that ran more than once is one cell: its counts, the spread
    // of its values, flaky when it both passed and failed.
    let verdicts = crate::repeat::aggregate(verdicts, &reruns);
    let record = shard::RunRecord {
        plan: units.clone(),
        shard: sel.shard.map(|(k, n)| format!("{k}/{n}")),
        ran: mine.iter().map(|u| u.name.clone()).collect(),
        timeline: timeline.into_inner().unwrap_or_else(|e| e.into_inner()),
    };
    write_record(&record, started.elapsed().as_secs_f64(), workers);
    Ok(verdicts)
}

/// The guest units of the shard that have trials, the longest estimate first.
fn longest_first<'a>(guests: &'a [GuestTarget], mine: &[&shard::Unit]) -> Vec<&'a GuestTarget> {
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
    order.into_iter().map(|(g, _)| g).collect()
}

/// Prints the packing against the ideal and writes run.json.
fn write_record(record: &shard::RunRecord, wall: f64, workers: usize) {
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
        serde_json::to_string_pretty(record).unwrap_or_default(),
    ) {
        eprintln!("write {}: {e}", report_dir().join("run.json").display());
    }
}

/// Step two: each trial reported as it is, the tally, the reports and the
/// gate's run-wide checks.
fn conclude(
    sel: Selection,
    planned: &[Planned],
    guests: &[GuestTarget],
    verdicts: &[Verdict],
    known: &[crate::differences::Difference],
) -> ExitCode {
    let mut tally = gate::Tally::default();
    let judged: Vec<(Verdict, Outcome, Option<crate::differences::Difference>)> = verdicts
        .iter()
        .map(|v| {
            let (outcome, difference) = gate::judge(v, known);
            if crate::killmatrix::mutation_of(&v.runtime).is_none() {
                tally.add(v, outcome);
            }
            (v.clone(), outcome, difference.cloned())
        })
        .collect();
    outcome::print_ignored(&judged, &sel.allow_flaky);
    let by_name: BTreeMap<String, (&Verdict, Outcome)> = judged
        .iter()
        .map(|(v, o, _)| (v.trial(), (v, *o)))
        .collect();
    let mut trials: Vec<Trial> = planned
        .iter()
        .map(|p| match by_name.get(&p.name).copied() {
            Some(f) => {
                outcome::reported_trial(p.name.clone(), &p.case.title, Some(f), &sel.allow_flaky)
            }
            // Not run: filtered out (libtest-mimic filters it the same
            // way), or ignored before it ran.
            None if !plan::will_run(&sel.args, &p.name, p.ignored_before()) => {
                Trial::test(p.name.clone(), || Ok(())).with_ignored_flag(p.ignored_before())
            }
            None => outcome::reported_trial(p.name.clone(), &p.case.title, None, &sel.allow_flaky),
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
        return if verdicts.is_empty() || outcome::write_kill_matrix(verdicts) {
            conclusion.exit_code()
        } else {
            ExitCode::from(101)
        };
    }
    let titles: BTreeMap<String, String> = sel
        .cases
        .iter()
        .map(|c| (c.id.clone(), c.title.clone()))
        .collect();
    let reports_ok = verdicts.is_empty()
        || publish::write_reports(
            &report_dir(),
            verdicts,
            known,
            &guests::guest_notes(guests),
            sel.baseline.as_deref(),
            &titles,
        );
    // A shard sees only its units' trials: whether a difference still
    // shows is judged on the merged run (merge); here it warns.
    let gate_ok = publish::gate_checks(
        &crate::data::cases_dir(),
        verdicts,
        known,
        sel.allow_stale_differences || sel.shard.is_some(),
    )
    .unwrap_or_else(|e| {
        eprintln!("{e}");
        false
    });
    if conclusion.has_failed() {
        conclusion.exit_code()
    } else if reports_ok && gate_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(101)
    }
}
