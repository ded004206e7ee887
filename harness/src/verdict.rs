//! The verdict of one case on one target, as the agent emits it (one JSON
//! object per line) and the reports read it.

use crate::expect::CheckReport;
use crate::observation::Observations;

/// The prefix that frames a verdict line, so console noise on the same
/// channel can never be read as one.
pub const FRAME: &str = "KCELL-VERDICT ";

/// How a case ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Every check held.
    Pass,
    /// A check failed: the behaviour does not hold.
    Fail,
    /// A requirement is unmet; `detail` says which.
    Skip,
    /// The control showed the machine could not have told the difference.
    Inconclusive,
    /// Infrastructure failed (a run timed out, a fixture could not be made).
    Error,
    /// Repeated (--repeat, --rerun-failures), it both passed and failed or
    /// errored: `repeats` counts each.
    Flaky,
}

impl Status {
    /// A short lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Skip => "skip",
            Status::Inconclusive => "inconclusive",
            Status::Error => "error",
            Status::Flaky => "flaky",
        }
    }
}

/// One case's result on one target.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Verdict {
    /// SPEC ID.
    pub case: String,
    /// The target, e.g. "host" or "deb-6.12-cloud/v2".
    pub target: String,
    /// The runtime under test (kcell, runc, crun, youki, ...).
    #[serde(default)]
    pub runtime: String,
    /// Its version, as `--version` says it.
    #[serde(default)]
    pub runtime_version: String,
    /// `uname -r` where the case ran.
    pub kernel: String,
    /// The cgroup layout where it ran ("v1", "v2", "hybrid (v1 used)").
    pub cgroup: String,
    /// How it ended.
    pub status: Status,
    /// Why (skip reason, failed checks, error message); empty on pass.
    pub detail: String,
    /// Every check with both sides.
    pub checks: Vec<CheckReport>,
    /// Every observed value.
    pub observations: Observations,
    /// Wall time of the case.
    pub seconds: f64,
    /// The key observed value, formatted for the matrix (e.g. "20.1%").
    #[serde(default)]
    pub headline: Option<String>,
    /// When the trial ran more than once (--repeat, --rerun-failures): how
    /// each run ended and the spread of each measured value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeats: Option<Repeats>,
    /// Where the trial's seconds went (the runtime's commands, the case's
    /// processes, the harness), when it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timing: Option<crate::timing::Timing>,
}

/// The runs of one repeated trial.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Repeats {
    /// Runs, by status (`pass`, `fail`, ...).
    pub counts: std::collections::BTreeMap<String, usize>,
    /// Each numeric observation's (min, median, max) over the runs.
    pub spread: std::collections::BTreeMap<String, [f64; 3]>,
    /// Of the runs, how many were reruns of a failure (--rerun-failures).
    #[serde(default)]
    pub reruns: usize,
}

impl Verdict {
    /// A verdict with no checks and no observations yet: the start of a
    /// case's verdict, or a skip or error decided without running it.
    pub fn bare(
        case: &str,
        target: &str,
        kernel: &str,
        cgroup: &str,
        status: Status,
        detail: impl Into<String>,
    ) -> Verdict {
        Verdict {
            case: case.to_string(),
            target: target.to_string(),
            kernel: kernel.to_string(),
            runtime: String::new(),
            runtime_version: String::new(),
            cgroup: cgroup.to_string(),
            status,
            detail: detail.into(),
            checks: Vec::new(),
            observations: Observations::default(),
            seconds: 0.0,
            headline: None,
            repeats: None,
            timing: None,
        }
    }

    /// The trial's name: `<target>/<runtime>::<case>`.
    pub fn trial(&self) -> String {
        format!("{}/{}::{}", self.target, self.runtime, self.case)
    }

    /// The key of a trial within a target: `<runtime>::<case>`.
    pub fn key(&self) -> String {
        format!("{}::{}", self.runtime, self.case)
    }

    /// The framed JSON line.
    pub fn to_line(&self) -> String {
        format!(
            "{FRAME}{}",
            serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
        )
    }

    /// Reads a framed line; None for anything else.
    pub fn from_line(line: &str) -> Option<Verdict> {
        let json = line.trim_end().split_once(FRAME)?.1;
        serde_json::from_str(json).ok()
    }

    /// A human summary of the failed checks.
    pub fn failed_checks(&self) -> String {
        self.checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| {
                let why = c
                    .why
                    .as_deref()
                    .map(|w| format!(" ({w})"))
                    .unwrap_or_default();
                // Long observations (a whole ps listing) are cut to stay readable.
                let observed = c.observed.to_string();
                let observed = match observed.char_indices().nth(300) {
                    Some((cut, _)) => format!("{}... ({} chars)", &observed[..cut], observed.len()),
                    None => observed,
                };
                format!(
                    "  {} {}: expected {}, observed {observed}{why}",
                    c.that, c.op, c.expected
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_noise_is_ignored() {
        let v = Verdict {
            case: "NS-UTS-1".into(),
            target: "host".into(),
            runtime: "kcell".into(),
            runtime_version: "kcell-oci version 0.1.0".into(),
            kernel: "6.1.0".into(),
            cgroup: "v1".into(),
            status: Status::Pass,
            detail: String::new(),
            checks: vec![],
            observations: Observations::default(),
            seconds: 0.5,
            headline: None,
            repeats: None,
            timing: None,
        };
        let line = v.to_line();
        assert_eq!(Verdict::from_line(&line), Some(v.clone()));
        assert_eq!(Verdict::from_line(&format!("[ 1.2] noise {line}")), Some(v));
        assert_eq!(Verdict::from_line("{\"case\":\"X\"}"), None);
        assert_eq!(Verdict::from_line("KCELL-VERDICT {broken"), None);
    }
}
