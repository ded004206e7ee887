//! What a run asks for: the suite's own flags taken out of the arguments
//! (the rest are libtest's: filters, --list, --ignored, --test-threads),
//! the runtimes, and the cases loaded.

use super::{Config, REPORT_DIR};
use crate::case::{load_dir, Case};
use crate::matrix::{self, Wanted};
use crate::{shard, vm};
use libtest_mimic::{Arguments, Failed, Trial};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What the run asks for, read from the arguments and environment.
pub(super) struct Selection {
    pub(super) args: Arguments,
    pub(super) baseline: Option<PathBuf>,
    pub(super) mutants: Option<String>,
    pub(super) allow_stale_differences: bool,
    /// `--shard K/N`: run only the units shard.rs deals to K.
    pub(super) shard: Option<(usize, usize)>,
    /// `--durations FILE`: an earlier report.json, for the units' estimates.
    pub(super) durations: BTreeMap<String, f64>,
    /// `--repeat N`: each selected trial N times (in the same boot).
    pub(super) repeat: usize,
    /// `--rerun-failures M`: a failed trial rerun up to M times.
    pub(super) rerun_failures: usize,
    /// `--allow-flaky P,...`: flaky cells whose name contains one of these
    /// do not fail the run.
    pub(super) allow_flaky: Vec<String>,
    pub(super) targets: Option<String>,
    pub(super) runtimes: Vec<Wanted>,
    pub(super) cases: Vec<Case>,
    /// Trials for case files that do not load.
    pub(super) malformed: Vec<Trial>,
}

/// The run's selection from `argv` (the suite's flags are taken out, the
/// rest is libtest's) and the environment.
pub(super) fn select(config: &Config, argv: Vec<String>) -> Result<Selection, String> {
    let base = config.base.as_path();
    let (args, baseline) = split_baseline(argv, base);
    let (args, mutants) = split_mutants(args);
    let (args, allow_stale_differences) = split_flag(args, "--allow-stale-differences");
    let (args, shard) = split_value(args, "--shard");
    let (args, durations_file) = split_value(args, "--durations");
    let (args, output) = split_value(args, "--output");
    let (args, repeat) = split_value(args, "--repeat");
    let (args, rerun_failures) = split_value(args, "--rerun-failures");
    let (args, allow_flaky) = split_value(args, "--allow-flaky");
    let count = |flag: &str, v: Option<String>, least: usize| -> Result<usize, String> {
        match v {
            None => Ok(least),
            Some(t) => t
                .parse::<usize>()
                .ok()
                .filter(|n| *n >= least)
                .ok_or(format!(
                    "{flag} '{t}' is not allowed: a whole number, at least {least}"
                )),
        }
    };
    let from_root = |p: &str| from_root(p, base);
    let repeat = count("--repeat", repeat, 1)?;
    let rerun_failures = count("--rerun-failures", rerun_failures, 0)?;
    let allow_flaky = allow_flaky
        .map(|s| s.split(',').map(|p| p.trim().to_string()).collect())
        .unwrap_or_default();
    if let Some(dir) = output {
        let _ = REPORT_DIR.set(from_root(&dir));
    }
    let shard = shard.as_deref().map(shard::parse_shard).transpose()?;
    let durations = match durations_file {
        None => BTreeMap::new(),
        Some(f) => {
            let path = from_root(&f);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("--durations {}: {e}", path.display()))?;
            shard::durations_from(&text).map_err(|e| format!("--durations {f}: {e}"))?
        }
    };
    let args = Arguments::from_iter(args);
    let cache = vm::cache_dir();
    let runtimes = match &mutants {
        None => matrix::wanted(
            std::env::var("KCELL_RUNTIMES").ok().as_deref(),
            &cache,
            config.kcell.as_deref(),
        )?,
        Some(which) => mutant_runtimes(which, &cache, &config.agent)?,
    };
    let (cases, malformed) = load_cases()?;
    Ok(Selection {
        args,
        baseline,
        mutants,
        allow_stale_differences,
        shard,
        durations,
        repeat,
        rerun_failures,
        allow_flaky,
        targets: std::env::var("KCELL_TARGETS").ok(),
        runtimes,
        cases,
        malformed,
    })
}

/// The cases KCELL_CASES picks (all by default), and a failing trial for
/// each case file that does not load.
fn load_cases() -> Result<(Vec<Case>, Vec<Trial>), String> {
    let cases_dir = crate::data::cases_dir;
    let loaded = load_dir(&cases_dir());
    let picked: Option<Vec<String>> = std::env::var("KCELL_CASES")
        .ok()
        .map(|s| s.split(',').map(|id| id.trim().to_string()).collect());
    let cases: Vec<Case> = loaded
        .iter()
        .filter_map(|c| c.as_ref().ok().cloned())
        .filter(|c| picked.as_ref().is_none_or(|ids| ids.contains(&c.id)))
        .collect();
    if let Some(ids) = &picked {
        let unknown: Vec<&String> = ids
            .iter()
            .filter(|id| !cases.iter().any(|c| &c.id == *id))
            .collect();
        if !unknown.is_empty() {
            return Err(format!(
                "KCELL_CASES names no case {unknown:?}: the IDs are the file names under {}",
                cases_dir().display()
            ));
        }
    }
    // A malformed case is a failing trial of its own; the others still run.
    let malformed = loaded
        .iter()
        .filter_map(|c| c.as_ref().err())
        .map(|e| {
            let stem = match e {
                crate::case::CaseError::Parse { file, .. }
                | crate::case::CaseError::Read(file, _) => file
                    .file_stem()
                    .map(|s| s.to_string_lossy().to_string())
                    .unwrap_or_default(),
            };
            let msg = e.to_string();
            Trial::test(format!("cases::{stem}"), move || Err(Failed::from(msg)))
        })
        .collect();
    Ok((cases, malformed))
}

/// A path given on the command line: `cargo test` runs this binary in
/// harness/, so a relative path is taken from the workspace root (where
/// the README's commands are typed).
pub(super) fn from_root(path: &str, base: &Path) -> PathBuf {
    let p = PathBuf::from(path);
    if p.is_absolute() {
        p
    } else {
        base.join(p)
    }
}

/// Takes `--name VALUE` or `--name=VALUE` out of the arguments.
pub(super) fn split_value(mut args: Vec<String>, name: &str) -> (Vec<String>, Option<String>) {
    if let Some(i) = args.iter().position(|a| a == name) {
        let value = (i + 1 < args.len()).then(|| args.remove(i + 1));
        args.remove(i);
        return (args, value);
    }
    let prefix = format!("{name}=");
    match args.iter().position(|a| a.starts_with(&prefix)) {
        Some(i) => {
            let value = args.remove(i)[prefix.len()..].to_string();
            (args, Some(value))
        }
        None => (args, None),
    }
}

/// Takes a bare flag out of the arguments.
pub(super) fn split_flag(mut args: Vec<String>, flag: &str) -> (Vec<String>, bool) {
    let had = args.iter().any(|a| a == flag);
    args.retain(|a| a != flag);
    (args, had)
}

/// Takes `--baseline FILE` (an earlier report.json) out of the arguments
/// before libtest-mimic sees them.
pub(super) fn split_baseline(mut args: Vec<String>, base: &Path) -> (Vec<String>, Option<PathBuf>) {
    let mut baseline = None;
    if let Some(i) = args.iter().position(|a| a == "--baseline") {
        if i + 1 < args.len() {
            baseline = Some(from_root(&args.remove(i + 1), base));
        }
        args.remove(i);
    } else if let Some(i) = args.iter().position(|a| a.starts_with("--baseline=")) {
        baseline = Some(from_root(
            args.remove(i).trim_start_matches("--baseline="),
            base,
        ));
    }
    (args, baseline)
}

/// Takes `--mutants` out of the arguments; with it (or KCELL_MUTANTS),
/// the mutations to run: all, or a comma list of names.
pub(super) fn split_mutants(mut args: Vec<String>) -> (Vec<String>, Option<String>) {
    let mut wanted = std::env::var("KCELL_MUTANTS")
        .ok()
        .filter(|s| !s.is_empty());
    if let Some(i) = args.iter().position(|a| a == "--mutants") {
        args.remove(i);
        wanted.get_or_insert_with(|| "all".into());
    }
    (args, wanted)
}

/// The mutant runtimes `which` names (all, or a comma list) of the base
/// runtime KCELL_MUTANT_BASE (default kcell), as links to the agent in
/// the cache (a guest's copy of the agent; the host trials make their own).
pub(super) fn mutant_runtimes(
    which: &str,
    cache: &Path,
    agent: &Path,
) -> Result<Vec<Wanted>, String> {
    use crate::mutant;
    let base = std::env::var("KCELL_MUTANT_BASE").unwrap_or_else(|_| "kcell".into());
    let chosen: Vec<&mutant::Mutation> = if which == "all" {
        mutant::MUTATIONS.iter().collect()
    } else {
        which
            .split(',')
            .map(|n| {
                mutant::named(n.trim()).ok_or_else(|| {
                    let known: Vec<&str> = mutant::MUTATIONS.iter().map(|m| m.name).collect();
                    format!(
                        "KCELL_MUTANTS names no mutation '{}': known are all, {}",
                        n.trim(),
                        known.join(", ")
                    )
                })
            })
            .collect::<Result<_, _>>()?
    };
    let links = mutant::make_links(&cache.join("mutants"), agent, &base, &chosen)?;
    Ok(links
        .into_iter()
        .map(|(name, path)| Wanted {
            mutant: crate::killmatrix::mutation_of(&name)
                .map(|(b, m)| (b.to_string(), m.to_string())),
            name,
            path: Some(path),
            everywhere: true,
            missing: None,
        })
        .collect())
}
