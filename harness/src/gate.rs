//! What a run's verdicts mean to someone gating on them, said as they are:
//! each trial's [`Outcome`] (a skip, a known difference and an inconclusive
//! trial are not passes), the [`Tally`] per runtime, and the skips the
//! matrix is allowed to have ([`ExpectedSkip`], `cases/expected-skips.toml`):
//! a skip nobody expected fails the run, naming the reason the probe gave,
//! so coverage cannot be lost in silence (a guest without its zram swap
//! would turn CG-MEM-2/3 into skips).

use crate::differences::{self, Difference};
use crate::verdict::{Status, Verdict};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// A trial's outcome for the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// Every check held.
    Pass,
    /// A check failed, and no known difference describes the failure.
    Fail,
    /// The trial could not be run or judged, unexplained.
    Error,
    /// A requirement is unmet: nothing was judged.
    Skip,
    /// The control could not tell: nothing was judged.
    Inconclusive,
    /// Failed exactly as an entry of cases/differences.toml describes.
    KnownDifference,
    /// Repeated, it both passed and failed or errored.
    Flaky,
}

impl Outcome {
    /// Every outcome, in the tally's order.
    pub const ALL: [Outcome; 7] = [
        Outcome::Pass,
        Outcome::Fail,
        Outcome::Error,
        Outcome::Skip,
        Outcome::Inconclusive,
        Outcome::KnownDifference,
        Outcome::Flaky,
    ];

    /// A short name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::Error => "error",
            Outcome::Skip => "skip",
            Outcome::Inconclusive => "inconclusive",
            Outcome::KnownDifference => "known difference",
            Outcome::Flaky => "flaky",
        }
    }

    /// Fails the run (a flaky cell unless allowed by name, [`allowed_flaky`]).
    pub fn fails(self) -> bool {
        matches!(self, Outcome::Fail | Outcome::Error | Outcome::Flaky)
    }

    /// Neither passed nor failed: reported to `cargo test` as ignored,
    /// with its reason.
    pub fn is_ignored(self) -> bool {
        matches!(
            self,
            Outcome::Skip | Outcome::Inconclusive | Outcome::KnownDifference
        )
    }
}

/// The outcome of `v`, with the difference that explains it if one does.
pub fn judge<'a>(v: &Verdict, known: &'a [Difference]) -> (Outcome, Option<&'a Difference>) {
    match v.status {
        Status::Pass => (Outcome::Pass, None),
        Status::Skip => (Outcome::Skip, None),
        Status::Inconclusive => (Outcome::Inconclusive, None),
        Status::Flaky => (Outcome::Flaky, None),
        Status::Fail | Status::Error => match differences::explaining(known, v) {
            Some(d) => (Outcome::KnownDifference, Some(d)),
            None if v.status == Status::Fail => (Outcome::Fail, None),
            None => (Outcome::Error, None),
        },
    }
}

/// Whether the flaky cell `trial` is allowed (`--allow-flaky P,...`: a
/// trial is allowed when its name contains one of the patterns).
pub fn allowed_flaky(trial: &str, allowed: &[String]) -> bool {
    allowed
        .iter()
        .any(|p| !p.is_empty() && trial.contains(p.as_str()))
}

/// Outcomes counted per runtime, with the exact versions that ran.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally(BTreeMap<String, RuntimeTally>);

/// One runtime's counts.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct RuntimeTally {
    versions: std::collections::BTreeSet<String>,
    counts: BTreeMap<Outcome, usize>,
}

impl Tally {
    /// Counts `outcome` for the runtime of `v`.
    pub fn add(&mut self, v: &Verdict, outcome: Outcome) {
        let entry = self.0.entry(v.runtime.clone()).or_default();
        let version = v.runtime_version.lines().next().unwrap_or_default().trim();
        if !version.is_empty() {
            entry.versions.insert(version.to_string());
        }
        *entry.counts.entry(outcome).or_default() += 1;
    }

    /// One line per runtime: `kcell (kcell-oci version 0.1.0): 700 pass,
    /// 0 fail, 0 error, 30 skip, 1 inconclusive, 0 known difference`.
    pub fn lines(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|(runtime, t)| {
                let parts: Vec<String> = Outcome::ALL
                    .iter()
                    .map(|o| format!("{} {}", t.counts.get(o).copied().unwrap_or(0), o.as_str()))
                    .collect();
                let versions = if t.versions.is_empty() {
                    String::new()
                } else {
                    format!(
                        " ({})",
                        t.versions.iter().cloned().collect::<Vec<_>>().join("; ")
                    )
                };
                format!("{runtime}{versions}: {}", parts.join(", "))
            })
            .collect()
    }

    /// How many trials had `outcome`, over every runtime.
    pub fn total(&self, outcome: Outcome) -> usize {
        self.0.values().filter_map(|t| t.counts.get(&outcome)).sum()
    }
}

/// A skip the matrix is allowed to have: its targets, runtime and cases,
/// and words of the reason the probe gives.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ExpectedSkip {
    /// Target patterns, comma-separated (`*` any run of characters).
    pub targets: String,
    /// The runtime, or "*".
    pub runtime: String,
    /// The cases, or ["*"] for every case of that runtime there.
    pub cases: Vec<String>,
    /// Words the skip's reason contains.
    pub reason: String,
}

#[derive(Deserialize)]
struct SkipFile {
    #[serde(default, rename = "skip")]
    skips: Vec<ExpectedSkip>,
}

impl ExpectedSkip {
    /// Whether this entry is about the cell of `v`.
    fn covers(&self, v: &Verdict) -> bool {
        crate::matrix::names_runtime(&self.runtime, &v.runtime)
            && (self.cases.iter().any(|c| c == "*" || *c == v.case))
            && self
                .targets
                .split(',')
                .any(|p| differences::glob(p.trim(), &v.target))
    }

    /// Whether `v` is a skip this entry allows.
    pub fn allows(&self, v: &Verdict) -> bool {
        v.status == Status::Skip && self.covers(v) && v.detail.contains(&self.reason)
    }
}

/// The expected skips listed in `path` (none when it is missing).
pub fn load_expected_skips(path: &Path) -> Result<Vec<ExpectedSkip>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let list = toml::from_str::<SkipFile>(&text)
                .map(|f| f.skips)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            if let Some(bad) = list.iter().find(|s| s.reason.trim().is_empty()) {
                return Err(format!(
                    "{}: the expected skip of {} on {} gives no words of its reason",
                    path.display(),
                    bad.runtime,
                    bad.targets
                ));
            }
            Ok(list)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// What the expected skips say of a run.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SkipCheck {
    /// Skips no entry allows: `trial: reason`. They fail the run.
    pub unexpected: Vec<String>,
    /// Cells an entry covers that ran and did not skip (the skip went
    /// away: coverage gained, or the entry is too wide): `trial: status`.
    pub vanished: Vec<String>,
}

/// Checks the skips of `verdicts` against `expected`.
pub fn check_skips(expected: &[ExpectedSkip], verdicts: &[Verdict]) -> SkipCheck {
    let mut out = SkipCheck::default();
    for v in verdicts {
        if v.status == Status::Skip {
            if !expected.iter().any(|e| e.allows(v)) {
                let reason = v.detail.lines().next().unwrap_or_default();
                out.unexpected.push(format!("{}: {reason}", v.trial()));
            }
        } else if expected
            .iter()
            .any(|e| e.covers(v) && !e.cases.iter().any(|c| c == "*"))
        {
            out.vanished
                .push(format!("{}: {}", v.trial(), v.status.as_str()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(target: &str, runtime: &str, case: &str, status: Status, detail: &str) -> Verdict {
        let mut v = Verdict::bare(case, target, "6.12", "v2", status, detail);
        v.runtime = runtime.into();
        v.runtime_version = format!("{runtime} version 1.0.0");
        v
    }

    fn mem3_skip_allowed_on_the_host() -> Vec<ExpectedSkip> {
        vec![ExpectedSkip {
            targets: "host".into(),
            runtime: "*".into(),
            cases: vec!["CG-MEM-2".into(), "CG-MEM-3".into()],
            reason: "no swap".into(),
        }]
    }

    /// A v2 guest that lost its swap: CG-MEM-3 skips there. The expected
    /// skips fail the run naming the case and the probe's reason, and the
    /// baseline gate counts pass -> skip as a regression.
    #[test]
    fn a_guest_that_loses_its_swap_fails_the_skip_check_and_the_baseline() {
        let expected = mem3_skip_allowed_on_the_host();
        let before = vec![v(
            "deb-6.12-cloud/v2",
            "kcell",
            "CG-MEM-3",
            Status::Pass,
            "",
        )];
        let now = vec![
            v(
                "deb-6.12-cloud/v2",
                "kcell",
                "CG-MEM-3",
                Status::Skip,
                "no swap device is active (/proc/swaps is empty)",
            ),
            v(
                "host",
                "kcell",
                "CG-MEM-3",
                Status::Skip,
                "no swap device is active (/proc/swaps is empty)",
            ),
        ];
        let check = check_skips(&expected, &now);
        assert_eq!(
            check.unexpected,
            ["deb-6.12-cloud/v2/kcell::CG-MEM-3: no swap device is active (/proc/swaps is empty)"]
        );
        let cmp = crate::report::compare(&before, &now);
        assert_eq!(cmp.regressions.len(), 1, "{cmp:?}");
        assert_eq!(cmp.regressions[0].0, "CG-MEM-3");
        assert_eq!(cmp.regressions[0].3, "skip");
    }

    #[test]
    fn a_skip_that_went_away_is_reported_and_other_words_are_not_allowed() {
        let expected = mem3_skip_allowed_on_the_host();
        let now = vec![
            v("host", "kcell", "CG-MEM-3", Status::Pass, ""),
            v(
                "host",
                "kcell",
                "CG-MEM-2",
                Status::Skip,
                "the memory controller is missing",
            ),
        ];
        let check = check_skips(&expected, &now);
        assert_eq!(check.vanished, ["host/kcell::CG-MEM-3: pass"]);
        assert_eq!(
            check.unexpected,
            ["host/kcell::CG-MEM-2: the memory controller is missing"]
        );
    }

    #[test]
    fn outcomes_and_the_tally_per_runtime() {
        let list = vec![Difference {
            runtime: "runc".into(),
            case: "CG-MEM-1".into(),
            targets: "*".into(),
            version: None,
            versions: None,
            ends: differences::Ends::Error,
            checks: vec![],
            seen: Default::default(),
            error: Some("unable to set memory limit".into()),
            found: "x".into(),
        }];
        let runs = [
            v(
                "host",
                "runc",
                "CG-MEM-1",
                Status::Error,
                "runc create failed: unable to set memory limit to 65536",
            ),
            v(
                "host",
                "runc",
                "CG-MEM-2",
                Status::Error,
                "create timed out",
            ),
            v("host", "runc", "CG-MEM-3", Status::Skip, "no swap"),
            v(
                "host",
                "kcell",
                "CG-MEM-1",
                Status::Inconclusive,
                "the control",
            ),
            v("host", "kcell", "CG-MEM-2", Status::Pass, ""),
        ];
        let mut tally = Tally::default();
        let outcomes: Vec<Outcome> = runs
            .iter()
            .map(|r| {
                let o = judge(r, &list).0;
                tally.add(r, o);
                o
            })
            .collect();
        assert_eq!(
            outcomes,
            [
                Outcome::KnownDifference,
                Outcome::Error,
                Outcome::Skip,
                Outcome::Inconclusive,
                Outcome::Pass
            ]
        );
        assert!(outcomes.iter().filter(|o| o.is_ignored()).count() == 3);
        assert_eq!(
            tally.lines(),
            [
                "kcell (kcell version 1.0.0): 1 pass, 0 fail, 0 error, 0 skip, 1 inconclusive, 0 known difference, 0 flaky",
                "runc (runc version 1.0.0): 0 pass, 0 fail, 1 error, 1 skip, 0 inconclusive, 1 known difference, 0 flaky",
            ]
        );
        assert_eq!(tally.total(Outcome::Error), 1);
    }
}
