//! What a run publishes and what fails it beyond its trials, shared by
//! the conformance run and `kcell merge` (shard.rs): the reports
//! (report.json, JUnit, matrix.md, report.html, KTAP, TAP 13, KCIDB), the
//! baseline comparison, the expected skips and the stale known
//! differences (gate.rs, differences.rs).

use crate::differences::Difference;
use crate::gate::{self, Outcome};
use crate::report;
use crate::verdict::Verdict;
use std::collections::BTreeMap;
use std::path::Path;

/// Writes report.json, report.xml, matrix.md, report.html, and KTAP, TAP 13
/// and KCIDB (export.rs); with a baseline, lists regressions (and fails)
/// and improvements.
pub fn write_reports(
    dir: &Path,
    verdicts: &[Verdict],
    known: &[Difference],
    notes: &BTreeMap<String, String>,
    baseline: Option<&Path>,
    titles: &BTreeMap<String, String>,
) -> bool {
    let _ = std::fs::create_dir_all(dir);
    let json = serde_json::to_string_pretty(verdicts).unwrap_or_default();
    let _ = std::fs::write(dir.join("report.json"), json);
    let _ = std::fs::write(dir.join("report.xml"), report::junit_xml(verdicts));
    let judged: Vec<(&Verdict, Outcome)> = verdicts
        .iter()
        .map(|v| (v, gate::judge(v, known).0))
        .collect();
    // The matrix closes with the gate's outcomes per runtime: the numbers
    // `cargo test` ends with (a known difference counted as such).
    let mut tally = gate::Tally::default();
    for (v, o) in &judged {
        if crate::killmatrix::mutation_of(&v.runtime).is_none() {
            tally.add(v, *o);
        }
    }
    let mut matrix = report::matrix_markdown(verdicts, notes);
    matrix.push_str("\nOutcomes per runtime (cases/differences.toml applied):\n\n");
    for line in tally.lines() {
        matrix.push_str(&format!("- {line}\n"));
    }
    let _ = std::fs::write(dir.join("matrix.md"), matrix);
    let old: Option<Vec<Verdict>> = match baseline.map(|path| {
        std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
            .map_err(|e| format!("baseline {}: {e}", path.display()))
    }) {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(e)) => {
            eprintln!("{e}");
            return false;
        }
    };
    let _ = std::fs::write(
        dir.join("report.html"),
        crate::html::render(verdicts, old.as_deref(), titles),
    );
    if let Err(e) = crate::export::write_all(dir, &judged) {
        eprintln!("{e}");
        return false;
    }
    eprintln!(
        "reports: {}/{{report.json,report.xml,matrix.md,report.html,report.ktap,kcidb.json,tap/RUNTIME.tap}}",
        dir.display()
    );
    let (Some(path), Some(old)) = (baseline, old) else {
        return true;
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

/// What fails the run beyond its trials: unexpected skips, stale known
/// differences. Prints each; true when none.
pub fn gate_checks(
    cases: &Path,
    verdicts: &[Verdict],
    known: &[Difference],
    allow_stale: bool,
) -> Result<bool, String> {
    let expected = gate::load_expected_skips(&cases.join("expected-skips.toml"))?;
    // A runtime the file never names (one of the user's own) is not held
    // to it: its skips are printed with the rest.
    let judged: Vec<Verdict> = verdicts
        .iter()
        .filter(|v| crate::killmatrix::mutation_of(&v.runtime).is_none())
        .filter(|v| {
            expected
                .iter()
                .any(|e| crate::matrix::names_runtime(&e.runtime, &v.runtime))
        })
        .cloned()
        .collect();
    let skips = gate::check_skips(&expected, &judged);
    for s in &skips.vanished {
        eprintln!("no longer skips (cases/expected-skips.toml allows it): {s}");
    }
    for s in &skips.unexpected {
        eprintln!("UNEXPECTED SKIP (not in cases/expected-skips.toml): {s}");
    }
    let mut ok = skips.unexpected.is_empty();
    for (d, trials) in crate::differences::stale(known, verdicts) {
        let how = if allow_stale {
            "stale difference"
        } else {
            "STALE DIFFERENCE"
        };
        eprintln!(
            "{how}: the {} entry of {} in cases/differences.toml describes none of {}: update or remove it",
            d.runtime,
            d.case,
            trials.join(", ")
        );
        ok &= allow_stale;
    }
    Ok(ok)
}
