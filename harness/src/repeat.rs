//! A trial run more than once (`--repeat N` in the same boot, or
//! `--rerun-failures M` after a failure) as one verdict of its cell: the
//! count of each status, the (min, median, max) of each measured value,
//! and `flaky` when the same trial both passed and failed or errored. A
//! pass on a rerun is flaky, never a pass.

use crate::verdict::{Repeats, Status, Verdict};
use std::collections::BTreeMap;

/// The status of a cell from its runs' statuses: flaky when some passed
/// and some failed or errored; otherwise the most telling one (fail,
/// error, inconclusive, skip, pass in that order).
pub fn cell_status(runs: &[Status]) -> Status {
    let has = |s: Status| runs.contains(&s);
    if has(Status::Pass) && (has(Status::Fail) || has(Status::Error) || has(Status::Flaky)) {
        return Status::Flaky;
    }
    [
        Status::Flaky,
        Status::Fail,
        Status::Error,
        Status::Inconclusive,
        Status::Skip,
        Status::Pass,
    ]
    .into_iter()
    .find(|s| has(*s))
    .unwrap_or(Status::Error)
}

/// The verdicts of `runs` with each trial that ran more than once made one
/// verdict (its first run's place kept); `reruns` counts, per trial, how
/// many of its runs were reruns of a failure.
pub fn aggregate(runs: Vec<Verdict>, reruns: &BTreeMap<String, usize>) -> Vec<Verdict> {
    let mut order: Vec<String> = Vec::new();
    let mut by_trial: BTreeMap<String, Vec<Verdict>> = BTreeMap::new();
    for v in runs {
        let trial = v.trial();
        if !by_trial.contains_key(&trial) {
            order.push(trial.clone());
        }
        by_trial.entry(trial).or_default().push(v);
    }
    order
        .into_iter()
        .filter_map(|t| {
            let group = by_trial.remove(&t)?;
            Some(if group.len() == 1 {
                group.into_iter().next()?
            } else {
                one_cell(group, reruns.get(&t).copied().unwrap_or(0))
            })
        })
        .collect()
}

fn one_cell(group: Vec<Verdict>, reruns: usize) -> Verdict {
    let statuses: Vec<Status> = group.iter().map(|v| v.status).collect();
    let status = cell_status(&statuses);
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for s in &statuses {
        *counts.entry(s.as_str().to_string()).or_default() += 1;
    }
    let spread = spread(&group);
    let seconds: f64 = group.iter().map(|v| v.seconds).sum();
    // The run that shows the cell: the last one that failed for a flaky
    // cell (its checks say how), else the last with the cell's status.
    let shown = match status {
        Status::Flaky => group
            .iter()
            .rev()
            .find(|v| matches!(v.status, Status::Fail | Status::Error)),
        s => group.iter().rev().find(|v| v.status == s),
    };
    let mut cell = shown
        .or(group.last())
        .cloned()
        .unwrap_or_else(|| Verdict::bare("", "", "", "", Status::Error, "no runs"));
    let tally = counts
        .iter()
        .map(|(s, n)| format!("{n} {s}"))
        .collect::<Vec<_>>()
        .join(", ");
    let rerun_note = if reruns > 0 {
        format!(" ({reruns} of them reruns of a failure)")
    } else {
        String::new()
    };
    let summary = format!("{} runs: {tally}{rerun_note}", group.len());
    cell.detail = if cell.detail.is_empty() {
        summary
    } else {
        format!(
            "{summary}; the last {}:\n{}",
            cell.status.as_str(),
            cell.detail
        )
    };
    cell.status = status;
    cell.seconds = (seconds * 1000.0).round() / 1000.0;
    cell.repeats = Some(Repeats {
        counts,
        spread,
        reruns,
    });
    cell
}

/// (min, median, max) of every observation that is a number in some run.
fn spread(group: &[Verdict]) -> BTreeMap<String, [f64; 3]> {
    let mut values: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for v in group {
        for (key, value) in &v.observations.0 {
            if let Some(n) = crate::expect::as_number(value) {
                values.entry(key).or_default().push(n);
            }
        }
    }
    values
        .into_iter()
        .map(|(key, mut ns)| {
            ns.sort_by(f64::total_cmp);
            let median = if ns.len() % 2 == 1 {
                ns[ns.len() / 2]
            } else {
                (ns[ns.len() / 2 - 1] + ns[ns.len() / 2]) / 2.0
            };
            (key.to_string(), [ns[0], median, ns[ns.len() - 1]])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(status: Status, share: f64) -> Verdict {
        let mut v = Verdict::bare("CG-CPU-1", "host", "6.1", "v1", status, "");
        v.runtime = "kcell".into();
        v.observations
            .insert("limited.cpu_share.share", json!(share));
        v.seconds = 1.0;
        if status == Status::Fail {
            v.detail = "limited.cpu_share.share approx: expected 0.2 ± 0.02".into();
        }
        v
    }

    #[test]
    fn a_cell_that_passed_and_failed_is_flaky_with_its_counts_and_spread() {
        let runs = vec![
            run(Status::Pass, 0.20),
            run(Status::Fail, 0.25),
            run(Status::Pass, 0.19),
            run(Status::Pass, 0.21),
        ];
        let cells = aggregate(runs, &BTreeMap::new());
        assert_eq!(cells.len(), 1);
        let c = &cells[0];
        assert_eq!(c.status, Status::Flaky);
        let r = c.repeats.as_ref().expect("repeats");
        assert_eq!(r.counts["pass"], 3);
        assert_eq!(r.counts["fail"], 1);
        let [low, median, high] = r.spread["limited.cpu_share.share"];
        assert_eq!((low, high), (0.19, 0.25));
        assert!((median - 0.205).abs() < 1e-9, "{median}");
        assert!(
            c.detail
                .starts_with("4 runs: 1 fail, 3 pass; the last fail:"),
            "{}",
            c.detail
        );
        assert_eq!(c.seconds, 4.0);
    }

    #[test]
    fn a_pass_on_rerun_is_flaky_and_a_single_run_is_untouched() {
        let mut reruns = BTreeMap::new();
        reruns.insert("host/kcell::CG-CPU-1".to_string(), 1);
        let cells = aggregate(
            vec![run(Status::Fail, 0.3), run(Status::Pass, 0.2)],
            &reruns,
        );
        assert_eq!(cells[0].status, Status::Flaky);
        assert!(cells[0].detail.contains("1 of them reruns of a failure"));
        let one = aggregate(vec![run(Status::Pass, 0.2)], &BTreeMap::new());
        assert_eq!(one[0].repeats, None);
        assert_eq!(one[0].status, Status::Pass);
    }

    #[test]
    fn cells_that_do_not_mix_pass_and_failure_keep_the_telling_status() {
        assert_eq!(cell_status(&[Status::Pass, Status::Pass]), Status::Pass);
        assert_eq!(cell_status(&[Status::Fail, Status::Error]), Status::Fail);
        assert_eq!(
            cell_status(&[Status::Pass, Status::Inconclusive]),
            Status::Inconclusive
        );
        assert_eq!(cell_status(&[Status::Skip, Status::Skip]), Status::Skip);
    }
}
