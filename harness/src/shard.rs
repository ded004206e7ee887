//! A run as a plan of units, split over machines and merged back whole.
//!
//! A [`Unit`] is one boot's worth of trials: a guest target with one
//! runtime (so a reference guest's runtimes can run on different cores or
//! machines), or the host's trials (one unit: they run alone, one at a
//! time). A [`Plan`] is the units of a selection with a fingerprint over
//! them and what decides their verdicts (runtime versions, the harness's
//! revision, the kernel manifest). `--shard K/N` runs the units
//! [`Plan::shard`] deals to K, balanced by estimated duration; each run
//! writes a [`RunRecord`] beside its report.json, and [`merge`] puts
//! shard reports back together: it refuses a shard of another plan or a
//! unit run twice, and turns every unit no shard ran into error verdicts
//! naming it, so a lost shard cannot pass for a smaller matrix.

use crate::verdict::{Status, Verdict};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// One boot's worth of trials (or the host's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unit {
    /// `host`, or `<target>/<runtime>` (`deb-6.12-cloud/v2/runc`).
    pub name: String,
    /// Its trials' names (`deb-6.12-cloud/v2/runc::CG-MEM-1`).
    pub trials: Vec<String>,
    /// Estimated seconds: from a previous report's trial times when it has
    /// them all, else the cases' timeouts.
    pub estimate: f64,
}

/// The units of a selection, and its fingerprint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// In a fixed order (by name).
    pub units: Vec<Unit>,
    /// SHA-256 (hex, 16 digits) of the units' names and trials and of the
    /// identity lines (runtime versions, harness revision, kernels).
    pub fingerprint: String,
}

impl Plan {
    /// The plan of `units`, fingerprinted with `identity`.
    pub fn new(mut units: Vec<Unit>, identity: &[String]) -> Plan {
        use sha2::Digest;
        units.sort_by(|a, b| a.name.cmp(&b.name));
        for u in &mut units {
            u.trials.sort();
        }
        let mut h = sha2::Sha256::new();
        for u in &units {
            h.update(u.name.as_bytes());
            h.update([0]);
            for t in &u.trials {
                h.update(t.as_bytes());
                h.update([1]);
            }
        }
        for line in identity {
            h.update(line.as_bytes());
            h.update([2]);
        }
        let fingerprint = short_hex(&h.finalize());
        Plan { units, fingerprint }
    }

    /// The units of shard `k` of `n` (1-based): the longest first, each to
    /// the shard with the least estimated time so far (ties: the lowest
    /// shard), so the shards end about together. The same plan always
    /// deals the same way.
    pub fn shard(&self, k: usize, n: usize) -> Vec<&Unit> {
        let mut order: Vec<&Unit> = self.units.iter().collect();
        order.sort_by(|a, b| {
            b.estimate
                .total_cmp(&a.estimate)
                .then_with(|| a.name.cmp(&b.name))
        });
        let mut load = vec![0.0f64; n.max(1)];
        let mut mine = Vec::new();
        for u in order {
            let (least, _) = load
                .iter()
                .enumerate()
                .min_by(|a, b| a.1.total_cmp(b.1))
                .unwrap_or((0, &0.0));
            load[least] += u.estimate;
            if least + 1 == k {
                mine.push(u);
            }
        }
        mine
    }
}

/// The first 16 hex digits of the SHA-256 of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    use sha2::Digest;
    short_hex(&sha2::Sha256::digest(bytes))
}

/// The first 16 hex digits of a SHA-256: the plan's fingerprint, the
/// cases' digests, a run's name in KCIDB ids.
pub fn short_hex(sha256: &[u8]) -> String {
    sha256.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// `K/N` with 1 <= K <= N.
pub fn parse_shard(text: &str) -> Result<(usize, usize), String> {
    let bad = || format!("--shard '{text}' is not allowed: K/N with 1 <= K <= N, e.g. 2/3");
    let (k, n) = text.split_once('/').ok_or_else(bad)?;
    let (k, n): (usize, usize) = (k.parse().map_err(|_| bad())?, n.parse().map_err(|_| bad())?);
    if k == 0 || n == 0 || k > n {
        return Err(bad());
    }
    Ok((k, n))
}

/// Estimated seconds of each trial, by trial name, from a previous
/// report.json (its recorded times) or from a JSON object of trial name to
/// seconds (vm/durations.json, which the CI workflow deals shards by).
pub fn durations_from(text: &str) -> Result<BTreeMap<String, f64>, String> {
    if let Ok(previous) = serde_json::from_str::<Vec<Verdict>>(text) {
        return Ok(previous.iter().map(|v| (v.trial(), v.seconds)).collect());
    }
    serde_json::from_str::<BTreeMap<String, f64>>(text)
        .map_err(|e| format!("neither a report.json nor an object of trial name to seconds: {e}"))
}

/// What a run writes beside its report.json (run.json): the plan it was
/// part of and the units it ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The whole plan.
    pub plan: Plan,
    /// `K/N`, when it was a shard.
    pub shard: Option<String>,
    /// The units it ran.
    pub ran: Vec<String>,
    /// When each unit ran: seconds from the run's start to its start and
    /// end (the packing of the run, BENCHMARKS.md).
    #[serde(default)]
    pub timeline: Vec<Span>,
}

/// One unit's time in a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Span {
    /// The unit.
    pub unit: String,
    /// Seconds from the run's start.
    pub start: f64,
    /// Seconds from the run's start.
    pub end: f64,
}

impl RunRecord {
    /// The ideal wall time of this run's units on `cores`: the host's unit
    /// alone (it holds the measurement lock), then the guest units' time
    /// divided among the cores, none shorter than the longest unit.
    pub fn ideal_seconds(&self, cores: usize) -> f64 {
        let host: f64 = self
            .timeline
            .iter()
            .filter(|s| s.unit == "host")
            .map(|s| s.end - s.start)
            .sum();
        let guests: Vec<f64> = self
            .timeline
            .iter()
            .filter(|s| s.unit != "host")
            .map(|s| s.end - s.start)
            .collect();
        let longest = guests.iter().copied().fold(0.0, f64::max);
        host + (guests.iter().sum::<f64>() / cores.max(1) as f64).max(longest)
    }
}

/// (target, runtime, case) of a trial name `target/runtime::CASE`.
pub fn split_trial(name: &str) -> Option<(&str, &str, &str)> {
    let (unit, case) = name.split_once("::")?;
    let (target, runtime) = unit.rsplit_once('/')?;
    Some((target, runtime, case))
}

/// The shards' verdicts as one run's: refuses a shard of another plan and
/// a unit two shards ran; every unit of the plan that no shard ran becomes
/// an error verdict per trial, naming the unit. Returns the plan and the
/// verdicts.
pub fn merge(shards: &[(String, RunRecord, Vec<Verdict>)]) -> Result<(Plan, Vec<Verdict>), String> {
    let Some((first_name, first, _)) = shards.first() else {
        return Err("merge: no shard reports given".into());
    };
    let mut ran_by: BTreeMap<&str, &str> = BTreeMap::new();
    let mut verdicts = Vec::new();
    for (name, record, shard_verdicts) in shards {
        if record.plan.fingerprint != first.plan.fingerprint {
            return Err(format!(
                "merge: {name} is a shard of plan {}, not of plan {} ({first_name}): it ran another selection, runtime version or harness revision",
                record.plan.fingerprint, first.plan.fingerprint
            ));
        }
        for unit in &record.ran {
            if let Some(other) = ran_by.insert(unit, name) {
                return Err(format!(
                    "merge: the unit {unit} was run by both {other} and {name}"
                ));
            }
        }
        verdicts.extend(shard_verdicts.iter().cloned());
    }
    let have: BTreeSet<String> = verdicts.iter().map(Verdict::trial).collect();
    for unit in &first.plan.units {
        if ran_by.contains_key(unit.name.as_str()) {
            continue;
        }
        for trial in unit.trials.iter().filter(|t| !have.contains(*t)) {
            let (target, runtime, case) = split_trial(trial).unwrap_or(("?", "?", trial));
            let mut v = Verdict::bare(
                case,
                target,
                "",
                "",
                Status::Error,
                format!(
                    "the unit {} was run by no shard: its report is missing from the merge",
                    unit.name
                ),
            );
            v.runtime = runtime.to_string();
            verdicts.push(v);
        }
    }
    Ok((first.plan.clone(), verdicts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(name: &str, estimate: f64) -> Unit {
        // The host's unit holds every runtime's host trials.
        let prefix = if name == "host" {
            "host/kcell".to_string()
        } else {
            name.to_string()
        };
        Unit {
            name: name.into(),
            trials: vec![format!("{prefix}::A"), format!("{prefix}::B")],
            estimate,
        }
    }

    fn plan() -> Plan {
        Plan::new(
            vec![
                unit("host", 300.0),
                unit("deb-6.1-cloud/v1/kcell", 100.0),
                unit("deb-6.1-cloud/v1/runc", 250.0),
                unit("deb-6.12-cloud/v2/youki", 240.0),
                unit("deb-5.10-cloud/v1/kcell", 90.0),
            ],
            &["runc version 1.1.5".into()],
        )
    }

    #[test]
    fn shards_cover_the_plan_once_and_are_balanced() {
        let p = plan();
        let shards: Vec<Vec<&Unit>> = (1..=3).map(|k| p.shard(k, 3)).collect();
        let mut all: Vec<&str> = shards.iter().flatten().map(|u| u.name.as_str()).collect();
        all.sort();
        let mut want: Vec<&str> = p.units.iter().map(|u| u.name.as_str()).collect();
        want.sort();
        assert_eq!(all, want, "every unit in exactly one shard");
        let loads: Vec<f64> = shards
            .iter()
            .map(|s| s.iter().map(|u| u.estimate).sum())
            .collect();
        assert_eq!(loads, [300.0, 340.0, 340.0]);
        assert_eq!(p.shard(2, 3), plan().shard(2, 3), "deterministic");
    }

    #[test]
    fn the_fingerprint_covers_units_trials_and_identity() {
        let p = plan();
        let other_version = Plan::new(p.units.clone(), &["runc version 1.3.6".into()]);
        assert_ne!(p.fingerprint, other_version.fingerprint);
        let mut fewer = p.units.clone();
        fewer[0].trials.pop();
        assert_ne!(
            p.fingerprint,
            Plan::new(fewer, &["runc version 1.1.5".into()]).fingerprint
        );
        let mut estimates = p.units.clone();
        estimates[0].estimate = 1.0;
        assert_eq!(
            p.fingerprint,
            Plan::new(estimates, &["runc version 1.1.5".into()]).fingerprint
        );
    }

    fn verdicts_of(p: &Plan, units: &[&Unit]) -> Vec<Verdict> {
        let _ = p;
        units
            .iter()
            .flat_map(|u| u.trials.iter())
            .map(|t| {
                let (target, runtime, case) = split_trial(t).expect("trial");
                let mut v = Verdict::bare(case, target, "6.1", "v1", Status::Pass, "");
                v.runtime = runtime.into();
                v
            })
            .collect()
    }

    fn record(p: &Plan, k: usize, n: usize) -> (String, RunRecord, Vec<Verdict>) {
        let units = p.shard(k, n);
        (
            format!("shard{k}"),
            RunRecord {
                plan: p.clone(),
                shard: Some(format!("{k}/{n}")),
                ran: units.iter().map(|u| u.name.clone()).collect(),
                timeline: Vec::new(),
            },
            verdicts_of(p, &units),
        )
    }

    #[test]
    fn merging_the_shards_gives_the_whole_run_and_a_missing_one_is_named() {
        let p = plan();
        let shards: Vec<_> = (1..=3).map(|k| record(&p, k, 3)).collect();
        let (_, whole) = merge(&shards).expect("merge");
        assert_eq!(whole.len(), 10);
        assert!(whole.iter().all(|v| v.status == Status::Pass));

        let (_, partial) = merge(&shards[..2]).expect("merge of two");
        let missing: Vec<&Verdict> = partial
            .iter()
            .filter(|v| v.status == Status::Error)
            .collect();
        let lost: Vec<&str> = shards[2].1.ran.iter().map(String::as_str).collect();
        assert_eq!(missing.len(), 2 * lost.len());
        for v in missing {
            assert!(
                lost.iter().any(|u| v
                    .detail
                    .contains(&format!("the unit {u} was run by no shard"))),
                "{}",
                v.detail
            );
        }
    }

    #[test]
    fn a_shard_of_another_plan_or_a_unit_run_twice_is_refused() {
        let p = plan();
        let mut other = record(&p, 2, 3);
        other.1.plan.fingerprint = "0000".into();
        let e = merge(&[record(&p, 1, 3), other]).expect_err("another plan");
        assert!(e.contains("shard2 is a shard of plan 0000"), "{e}");
        let e = merge(&[record(&p, 1, 3), record(&p, 1, 3)]).expect_err("twice");
        assert!(e.contains("was run by both"), "{e}");
        assert!(
            parse_shard("0/3").is_err() && parse_shard("4/3").is_err() && parse_shard("x").is_err()
        );
        assert_eq!(parse_shard("2/3"), Ok((2, 3)));
    }
}
