//! Each trial as libtest-mimic reports it, from its verdict's outcome
//! (gate.rs); the reasons of the ignored ones; the kill matrix's files.

use super::report_dir;
use crate::differences::Difference;
use crate::gate::{self, Outcome};
use crate::verdict::{Status, Verdict};
use libtest_mimic::{Failed, Trial};

/// The trial libtest-mimic reports for `name`, from its verdict: a pass
/// passes, a fail or error fails with the details, and what is neither (a
/// skip, an inconclusive trial, a known difference; a mutant's survival or
/// a mutant's trial that judged nothing) is ignored, its reason printed
/// by [`print_ignored`]. A trial the run selected that has no verdict fails.
pub(super) fn reported_trial(
    name: String,
    title: &str,
    found: Option<(&Verdict, Outcome)>,
    allow_flaky: &[String],
) -> Trial {
    let title = title.to_string();
    let Some((verdict, outcome)) = found else {
        let why = format!("no verdict for {name}: the run never reached it");
        return Trial::test(name, move || Err(Failed::from(why)));
    };
    let is_mutant = crate::killmatrix::mutation_of(&verdict.runtime).is_some();
    let (ignored, result): (bool, Result<(), String>) = if is_mutant {
        // A mutant's trial is a cell of the kill matrix, judged as a whole
        // at the end: killed is what the case is for; the rest is ignored.
        (verdict.status != Status::Fail, Ok(()))
    } else {
        let failure = format!("{}: {title}\n{}", verdict.status.as_str(), verdict.detail);
        let allowed = outcome == Outcome::Flaky && gate::allowed_flaky(&name, allow_flaky);
        (
            outcome.is_ignored() || allowed,
            if outcome.fails() && !allowed {
                Err(failure)
            } else {
                Ok(())
            },
        )
    };
    Trial::test(name, move || result.map_err(Failed::from)).with_ignored_flag(ignored)
}

/// Why each ignored trial was not a pass, one line each, before
/// libtest-mimic's own lines.
pub(super) fn print_ignored(
    judged: &[(Verdict, Outcome, Option<Difference>)],
    allow_flaky: &[String],
) {
    let mut lines = Vec::new();
    for (v, outcome, difference) in judged {
        let first = |s: &str| s.lines().next().unwrap_or_default().trim().to_string();
        let why = match crate::killmatrix::mutation_of(&v.runtime) {
            Some(_) => match v.status {
                Status::Fail => continue,
                Status::Pass => "survived (judged in the kill matrix)".to_string(),
                other => format!("not judged ({}): {}", other.as_str(), first(&v.detail)),
            },
            None => match (outcome, difference) {
                (Outcome::KnownDifference, Some(d)) => {
                    format!(
                        "known difference (cases/differences.toml): {}",
                        first(&d.found)
                    )
                }
                (Outcome::Skip, _) => format!("skip: {}", first(&v.detail)),
                (Outcome::Inconclusive, _) => format!("inconclusive: {}", first(&v.detail)),
                (Outcome::Flaky, _) if gate::allowed_flaky(&v.trial(), allow_flaky) => {
                    format!("flaky, allowed by --allow-flaky: {}", first(&v.detail))
                }
                _ => continue,
            },
        };
        lines.push(format!("  {}: {why}", v.trial()));
    }
    if !lines.is_empty() {
        println!("ignored, and why ({}):\n{}", lines.len(), lines.join("\n"));
    }
}

/// Writes mutants.md and mutants.json; false when, on some target, a case
/// proves nothing, a judged mutant is caught by no case, or a mutant was
/// judged by no case at all.
pub(super) fn write_kill_matrix(verdicts: &[Verdict]) -> bool {
    use crate::killmatrix;
    let dir = report_dir();
    let _ = std::fs::create_dir_all(&dir);
    let scores = killmatrix::score(verdicts);
    let _ = std::fs::write(
        dir.join("mutants.json"),
        serde_json::to_string_pretty(&scores).unwrap_or_default(),
    );
    let _ = std::fs::write(dir.join("mutants.md"), killmatrix::markdown(&scores));
    let mut ok = true;
    for (target, s) in &scores {
        eprintln!(
            "kill matrix {target}: {} of {} judged (case, mutant) pairs killed; cases proving nothing: {:?}; mutants no case kills: {:?}; mutants no case could judge: {:?}",
            s.killed, s.judged, s.proving_nothing, s.uncaught, s.unjudged
        );
        ok &= killmatrix::passes(s);
    }
    eprintln!("kill matrix: {}/mutants.{{md,json}}", dir.display());
    ok
}
