//! The suite's own score: which cases kill which mutants (mutant.rs), per
//! target. A mutant is *killed* by a case when the case fails against it
//! (not errors, not skips); it *survived* when the case passed (or was
//! inconclusive). A case that kills none of the mutants applicable to it
//! proves nothing; a mutant that no case kills is a gap in the catalogue.
//! A mutant a case could not judge because the case skipped says why (a
//! controller the kernel lacks): that is the kernel's reason, not a gap.

use crate::verdict::{Status, Verdict};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// What one case did to one mutant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fate {
    /// The case failed: it noticed the broken guarantee.
    Killed,
    /// The case passed with the guarantee broken.
    Survived,
    /// The case's control failed: the machine could not tell, this time.
    Inconclusive(String),
    /// The case skipped, with its reason (a kernel's, usually).
    Skipped(String),
    /// The trial errored (the base runtime refused the mutated config).
    Errored(String),
}

/// The kill matrix of one target.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TargetScore {
    /// case -> mutation -> fate (only applicable pairs appear).
    pub fates: BTreeMap<String, BTreeMap<String, Fate>>,
    /// Cases with at least one judged mutant, none killed.
    pub proving_nothing: Vec<String>,
    /// Mutations judged by at least one case, killed by none, and no case
    /// that could have was kept from it by the target.
    pub uncaught: Vec<String>,
    /// Mutations killed by none here, with the cases that skipped them and
    /// why (a controller or swap the target lacks): the target's reason.
    pub explained: BTreeMap<String, Vec<String>>,
    /// Mutations with no judged pair here, and why: every trial of theirs
    /// errored or skipped. Fails the matrix, unless each of those trials
    /// skipped for a requirement of its case (in `explained` then).
    pub unjudged: BTreeMap<String, Vec<String>>,
    /// Judged (killed or survived) pairs, and how many were killed.
    pub judged: usize,
    /// Of them, killed.
    pub killed: usize,
}

/// Splits a mutant runtime name `base+mutation`.
pub fn mutation_of(runtime: &str) -> Option<(&str, &str)> {
    runtime.split_once('+')
}

/// The scores of every target in `verdicts` (mutant trials only).
pub fn score(verdicts: &[Verdict]) -> BTreeMap<String, TargetScore> {
    let mut out: BTreeMap<String, TargetScore> = BTreeMap::new();
    for v in verdicts {
        let Some((_, mutation)) = mutation_of(&v.runtime) else {
            continue;
        };
        let fate = match v.status {
            Status::Fail => Fate::Killed,
            Status::Pass => Fate::Survived,
            Status::Inconclusive | Status::Flaky => Fate::Inconclusive(first_line(&v.detail)),
            Status::Skip => Fate::Skipped(first_line(&v.detail)),
            Status::Error => Fate::Errored(first_line(&v.detail)),
        };
        out.entry(v.target.clone())
            .or_default()
            .fates
            .entry(v.case.clone())
            .or_default()
            .insert(mutation.to_string(), fate);
    }
    for s in out.values_mut() {
        let mut caught: BTreeSet<&str> = BTreeSet::new();
        let mut judged_mutants: BTreeSet<&str> = BTreeSet::new();
        for (case, fates) in &s.fates {
            let judged: Vec<(&String, &Fate)> = fates
                .iter()
                .filter(|(_, f)| matches!(f, Fate::Killed | Fate::Survived))
                .collect();
            s.judged += judged.len();
            let killed = judged.iter().filter(|(_, f)| **f == Fate::Killed).count();
            s.killed += killed;
            if !judged.is_empty() && killed == 0 {
                s.proving_nothing.push(case.clone());
            }
            for (m, f) in judged {
                judged_mutants.insert(m);
                if *f == Fate::Killed {
                    caught.insert(m);
                }
            }
        }
        let all_mutants: BTreeSet<&str> = s
            .fates
            .values()
            .flat_map(|f| f.keys().map(String::as_str))
            .collect();
        let mut unjudged: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for m in all_mutants.difference(&judged_mutants) {
            let why: Vec<(bool, String)> = s
                .fates
                .iter()
                .filter_map(|(case, f)| match f.get(*m)? {
                    Fate::Skipped(w) => Some((true, format!("{case} skipped: {w}"))),
                    Fate::Errored(w) => Some((false, format!("{case} errored: {w}"))),
                    Fate::Inconclusive(w) => Some((false, format!("{case} inconclusive: {w}"))),
                    Fate::Killed | Fate::Survived => None,
                })
                .collect();
            let reasons: Vec<String> = why.iter().map(|(_, w)| w.clone()).collect();
            if why.iter().all(|(skipped, _)| *skipped) {
                s.explained.insert(m.to_string(), reasons);
            } else {
                unjudged.insert(m.to_string(), reasons);
            }
        }
        s.unjudged = unjudged;
        let survivors: Vec<String> = judged_mutants
            .difference(&caught)
            .map(|m| m.to_string())
            .collect();
        for m in survivors {
            let skipped: Vec<String> = s
                .fates
                .iter()
                .filter_map(|(case, f)| match f.get(&m) {
                    Some(Fate::Skipped(why)) => Some(format!("{case} skipped: {why}")),
                    _ => None,
                })
                .collect();
            if skipped.is_empty() {
                s.uncaught.push(m);
            } else {
                s.explained.insert(m, skipped);
            }
        }
    }
    out
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().trim().to_string()
}

/// The kill matrix as Markdown: per target the score, the cases that
/// prove nothing, the mutants nothing kills, and per case what it killed.
pub fn markdown(scores: &BTreeMap<String, TargetScore>) -> String {
    let mut md = String::from("# kcell kill matrix\n\nA mutant runtime breaks one guarantee (harness/src/mutant.rs); a case *kills* it when the case fails against it. `survived` lists the applicable mutants a case did not notice (most are about other guarantees); a case that kills none proves nothing.\n");
    for (target, s) in scores {
        md.push_str(&format!(
            "\n## `{target}`\n\n{} of {} judged (case, mutant) pairs killed. ",
            s.killed, s.judged
        ));
        let unjudged: Vec<String> = s.unjudged.keys().cloned().collect();
        md.push_str(&format!(
            "Cases proving nothing: {}. Mutants no case kills: {}. Mutants no case could judge: {}.\n\n",
            list_or_none(&s.proving_nothing),
            list_or_none(&s.uncaught),
            list_or_none(&unjudged)
        ));
        for (m, why) in &s.unjudged {
            md.push_str(&format!(
                "- `{m}` was judged by no case here (an error of the matrix): {}.\n",
                why.join("; ")
            ));
        }
        for (m, why) in &s.explained {
            md.push_str(&format!(
                "- `{m}` survives here for the target's reason: {}.\n",
                why.join("; ")
            ));
        }
        if !s.explained.is_empty() {
            md.push('\n');
        }
        md.push_str("| case | killed | survived | not judged |\n|---|---|---|---|\n");
        for (case, fates) in &s.fates {
            let pick = |want: fn(&Fate) -> bool| {
                fates
                    .iter()
                    .filter(|(_, f)| want(f))
                    .map(|(m, _)| m.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let not_judged: Vec<String> = fates
                .iter()
                .filter_map(|(m, f)| match f {
                    Fate::Skipped(why) => Some(format!("{m} (skip: {why})")),
                    Fate::Errored(why) => Some(format!("{m} (error: {why})")),
                    Fate::Inconclusive(why) => Some(format!("{m} (inconclusive: {why})")),
                    _ => None,
                })
                .collect();
            md.push_str(&format!(
                "| {case} | {} | {} | {} |\n",
                pick(|f| *f == Fate::Killed),
                pick(|f| *f == Fate::Survived),
                not_judged.join("; ").replace('|', "\\|")
            ));
        }
        let mut by_mutant: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (case, fates) in &s.fates {
            for (m, f) in fates {
                let e = by_mutant.entry(m.as_str()).or_default();
                if *f == Fate::Killed {
                    e.push(case.as_str());
                }
            }
        }
        md.push_str("\n| mutant | breaks | killed by |\n|---|---|---|\n");
        for (m, cases) in by_mutant {
            let breaks = crate::mutant::named(m).map_or("?", |x| x.breaks);
            md.push_str(&format!(
                "| {m} | {breaks} | {} |\n",
                if cases.is_empty() {
                    "**nothing**".to_string()
                } else {
                    cases.join(", ")
                }
            ));
        }
    }
    md
}

/// Whether a target's matrix holds: every case kills something, every
/// judged mutant is killed by some case, every mutant was judged.
pub fn passes(s: &TargetScore) -> bool {
    s.proving_nothing.is_empty() && s.uncaught.is_empty() && s.unjudged.is_empty()
}

fn list_or_none(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.iter()
            .map(|x| format!("**{x}**"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(case: &str, runtime: &str, status: Status) -> Verdict {
        let mut v = Verdict::bare(case, "host", "6.1", "v1", status, "why\nmore");
        v.runtime = runtime.into();
        v
    }

    #[test]
    fn fates_and_flags() {
        let verdicts = vec![
            v("CG-MEM-1", "kcell+drop-memory", Status::Fail),
            v("CG-MEM-1", "kcell+drop-ns-uts", Status::Pass),
            v("NS-UTS-1", "kcell+drop-ns-uts", Status::Fail),
            v("NS-UTS-1", "kcell+drop-memory", Status::Skip),
            v("FS-ROOT-1", "kcell+drop-seccomp", Status::Pass),
            v("FS-ROOT-1", "kcell+drop-ns-mnt", Status::Error),
            v("CG-MEM-1", "kcell+drop-swap", Status::Pass),
            v("CG-MEM-3", "kcell+drop-swap", Status::Skip),
            // An ordinary runtime's verdict is not part of the kill matrix.
            v("FS-ROOT-1", "runc", Status::Fail),
        ];
        let s = &score(&verdicts)["host"];
        assert_eq!(s.fates["CG-MEM-1"]["drop-memory"], Fate::Killed);
        assert_eq!(
            s.fates["NS-UTS-1"]["drop-memory"],
            Fate::Skipped("why".into())
        );
        assert_eq!(s.proving_nothing, ["FS-ROOT-1"]);
        assert_eq!(s.uncaught, ["drop-seccomp"]);
        assert_eq!(s.explained["drop-swap"], ["CG-MEM-3 skipped: why"]);
        assert_eq!((s.judged, s.killed), (5, 2));
        let md = markdown(&score(&verdicts));
        assert!(md.contains("| drop-seccomp | the seccomp profile | **nothing** |"));
        assert!(md.contains("drop-ns-mnt (error: why)"));
        // drop-ns-mnt errored in its only trial: judged by nothing.
        assert_eq!(s.unjudged["drop-ns-mnt"], ["FS-ROOT-1 errored: why"]);
    }

    /// A mutant that cannot start any container errors in every trial (the
    /// runner makes its smoke failure an error, not a row of skips): the
    /// matrix names it as judged by nothing, which fails --mutants.
    #[test]
    fn a_mutant_that_starts_no_container_is_an_error_of_the_matrix() {
        let mut verdicts: Vec<Verdict> = ["CG-MEM-1", "NS-UTS-1", "FS-ROOT-1"]
            .iter()
            .map(|c| {
                let mut v = v(c, "kcell+broken", Status::Error);
                v.detail = "kcell+broken (kcell-oci 0.1.0) cannot run a minimal container on this target: exec failed".into();
                v
            })
            .collect();
        verdicts.push(v("CG-MEM-1", "kcell+drop-memory", Status::Fail));
        let s = &score(&verdicts)["host"];
        assert_eq!(s.unjudged.keys().collect::<Vec<_>>(), ["broken"]);
        assert!(s.unjudged["broken"][0].contains("cannot run a minimal container"));
        assert!(!passes(s));
        assert!(markdown(&score(&verdicts)).contains("`broken` was judged by no case here"));
    }
}
