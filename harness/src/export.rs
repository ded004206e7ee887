//! The run's verdicts in the formats kernel and runtime CI already read:
//! KTAP (the kernel's kselftest and KUnit format), TAP 13 (runtime-tools'
//! validation, runc's bats, youki's contest) and a KCIDB document (KernelCI's
//! submission schema). Each says what happened as the gate does (gate.rs):
//! a skip is a SKIP with the probed reason, a failure a failure with its
//! checks, and a known difference a failure that names its entry.

use crate::gate::Outcome;
use crate::verdict::{Status, Verdict};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// A verdict with the gate's outcome of it.
pub type Judged<'a> = (&'a Verdict, Outcome);

/// The first line of `text`, with what would end a TAP line or start a
/// directive made harmless.
fn one_line(text: &str) -> String {
    text.lines()
        .next()
        .unwrap_or_default()
        .replace('#', "no.")
        .trim()
        .to_string()
}

/// Why a trial is not a pass, as diagnostic lines (failed checks first).
fn diagnostics(v: &Verdict) -> Vec<String> {
    let mut out: Vec<String> = v
        .failed_checks()
        .lines()
        .chain(v.detail.lines())
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    out.dedup();
    out.truncate(40);
    out
}

/// The suites of a run: (target, runtime) in order, each with its trials.
fn suites<'a>(judged: &[Judged<'a>]) -> BTreeMap<(String, String), Vec<Judged<'a>>> {
    let mut out: BTreeMap<(String, String), Vec<Judged<'a>>> = BTreeMap::new();
    for (v, o) in judged {
        out.entry((v.target.clone(), v.runtime.clone()))
            .or_default()
            .push((*v, *o));
    }
    for trials in out.values_mut() {
        trials.sort_by(|a, b| a.0.case.cmp(&b.0.case));
    }
    out
}

/// One KTAP result line (at `indent`) and its diagnostics.
fn ktap_result(out: &mut String, indent: &str, n: usize, name: &str, v: &Verdict, o: Outcome) {
    let (ok, directive) = match o {
        Outcome::Pass => (true, String::new()),
        Outcome::Skip => (true, format!(" # SKIP {}", one_line(&v.detail))),
        Outcome::Inconclusive => (
            true,
            format!(" # SKIP inconclusive: {}", one_line(&v.detail)),
        ),
        Outcome::Fail | Outcome::Error | Outcome::KnownDifference | Outcome::Flaky => {
            (false, String::new())
        }
    };
    if !ok {
        for line in diagnostics(v) {
            out.push_str(&format!("{indent}# {line}\n"));
        }
        if o == Outcome::KnownDifference {
            out.push_str(&format!(
                "{indent}# a known difference (cases/differences.toml)\n"
            ));
        }
    }
    let word = if ok { "ok" } else { "not ok" };
    out.push_str(&format!("{indent}{word} {n} {name}{directive}\n"));
}

/// KTAP version 1 (Documentation/dev-tools/ktap.rst): one suite per
/// target and runtime (`host/kcell`), one test per case in it; a skip is
/// `# SKIP` with the probed reason, a failure has its checks as diagnostic
/// lines before its result line. A suite is not ok when any of its tests
/// is, and `# SKIP` when all of them skipped.
pub fn ktap(judged: &[Judged]) -> String {
    let suites = suites(judged);
    let mut out = format!("KTAP version 1\n1..{}\n", suites.len());
    for (n, ((target, runtime), trials)) in suites.iter().enumerate() {
        let name = format!("{target}/{runtime}");
        // A subtest block is indented two spaces (ktap.rst); "# Subtest:"
        // is KUnit's diagnostic naming it, which kunit.py checks against
        // the suite's result line.
        out.push_str(&format!(
            "  KTAP version 1\n  # Subtest: {name}\n  1..{}\n",
            trials.len()
        ));
        for (i, (v, o)) in trials.iter().enumerate() {
            ktap_result(&mut out, "  ", i + 1, &v.case, v, *o);
        }
        let failed = trials
            .iter()
            .any(|(_, o)| !matches!(o, Outcome::Pass | Outcome::Skip | Outcome::Inconclusive));
        let all_skipped = trials
            .iter()
            .all(|(_, o)| matches!(o, Outcome::Skip | Outcome::Inconclusive));
        let (word, directive) = match (failed, all_skipped) {
            (true, _) => ("not ok", String::new()),
            (false, true) => ("ok", " # SKIP every case skipped".to_string()),
            (false, false) => ("ok", String::new()),
        };
        out.push_str(&format!("{word} {} {name}{directive}\n", n + 1));
    }
    out
}

/// TAP version 13 of one runtime's trials (`runtime`), for runtime CI that
/// consumes TAP: one test per (target, case), a skip as `# SKIP reason`,
/// a failure with a YAML block of its checks.
pub fn tap13(judged: &[Judged], runtime: &str) -> String {
    let mut mine: Vec<&Judged> = judged
        .iter()
        .filter(|(v, _)| v.runtime == runtime)
        .collect();
    mine.sort_by(|a, b| (&a.0.target, &a.0.case).cmp(&(&b.0.target, &b.0.case)));
    let mut out = format!("TAP version 13\n1..{}\n", mine.len());
    for (i, (v, o)) in mine.iter().enumerate() {
        let n = i + 1;
        let name = format!("{} {}", v.target, v.case);
        match o {
            Outcome::Pass => out.push_str(&format!("ok {n} - {name}\n")),
            Outcome::Skip => {
                out.push_str(&format!("ok {n} - {name} # SKIP {}\n", one_line(&v.detail)))
            }
            Outcome::Inconclusive => out.push_str(&format!(
                "ok {n} - {name} # SKIP inconclusive: {}\n",
                one_line(&v.detail)
            )),
            Outcome::Fail | Outcome::Error | Outcome::KnownDifference | Outcome::Flaky => {
                out.push_str(&format!("not ok {n} - {name}\n  ---\n"));
                out.push_str(&format!("  status: {}\n", v.status.as_str()));
                if *o == Outcome::KnownDifference {
                    out.push_str("  known_difference: true\n");
                }
                out.push_str(&format!(
                    "  runtime_version: {}\n",
                    yaml_str(v.runtime_version.lines().next().unwrap_or_default())
                ));
                out.push_str(&format!("  kernel: {}\n", yaml_str(&v.kernel)));
                out.push_str(&format!("  cgroup: {}\n", yaml_str(&v.cgroup)));
                out.push_str("  message: |\n");
                for line in diagnostics(v) {
                    out.push_str(&format!("    {line}\n"));
                }
                out.push_str("  ...\n");
            }
        }
    }
    out
}

/// A YAML double-quoted string.
fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// The KCIDB schema version the document is written in (kcidb-io's v5.3).
pub const KCIDB_VERSION: (u32, u32) = (5, 3);

/// A name made of what a KCIDB id or path part may hold.
fn kcidb_word(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The KCIDB status of a trial's outcome (a known difference is a FAIL:
/// the behaviour does not hold with that runtime; its misc says it is
/// known).
fn kcidb_status(o: Outcome) -> &'static str {
    match o {
        Outcome::Pass => "PASS",
        Outcome::Fail | Outcome::KnownDifference | Outcome::Flaky => "FAIL",
        Outcome::Error => "ERROR",
        Outcome::Skip | Outcome::Inconclusive => "SKIP",
    }
}

/// A KCIDB I/O document (kcidb-io schema v5.3) of the run, ready for
/// `kcidb-submit`: one checkout and one build per kernel (the distribution's
/// package, named by its version), one test per trial with the path
/// `container.<cgroup>.<runtime>.<CASE>`, the environment naming the
/// target, cgroup version and runtime with its version, the status, and
/// the observed values and checks in misc. `origin` is the submitter's
/// name (lower-case letters, digits, `_`); `run` names the run, so the ids
/// are stable: the same report gives the same ids.
pub fn kcidb(judged: &[Judged], origin: &str, run: &str) -> Value {
    let origin = kcidb_word(origin).to_lowercase().replace('-', "_");
    let run = kcidb_word(run);
    let mut checkouts = BTreeMap::new();
    let mut builds = BTreeMap::new();
    let mut tests = Vec::new();
    for (v, o) in judged {
        let kernel = kcidb_word(&v.kernel);
        let checkout_id = format!("{origin}:{kernel}");
        let build_id = format!("{origin}:{kernel}-x86_64");
        checkouts.entry(checkout_id.clone()).or_insert_with(|| {
            json!({
                "id": checkout_id,
                "origin": origin,
                "comment": format!("Linux {} ({})", v.kernel, v.target.split('/').next().unwrap_or_default()),
                "valid": true,
            })
        });
        builds.entry(build_id.clone()).or_insert_with(|| {
            json!({
                "id": build_id,
                "origin": origin,
                "checkout_id": checkout_id,
                "architecture": "x86_64",
                "comment": format!("the distribution's build of {}", v.kernel),
                "status": "PASS",
            })
        });
        let runtime_version = v.runtime_version.lines().next().unwrap_or_default().trim();
        let cgroup = kcidb_word(v.cgroup.split_whitespace().next().unwrap_or("unknown"));
        let runtime = kcidb_word(&v.runtime);
        let case = kcidb_word(&v.case);
        let mut test = json!({
            "id": format!("{origin}:{run}-{}-{runtime}-{case}", kcidb_word(&v.target)),
            "origin": origin,
            "build_id": build_id,
            "path": format!("container.{cgroup}.{runtime}.{case}"),
            "comment": format!("{}: {} on {}", v.case, v.runtime, v.target),
            "status": kcidb_status(*o),
            "duration": v.seconds,
            "environment": {
                "comment": format!("{} ({}), cgroup {}, {} ({})", v.target, v.kernel, v.cgroup, v.runtime, runtime_version),
                "misc": {
                    "target": v.target,
                    "kernel": v.kernel,
                    "cgroup": v.cgroup,
                    "runtime": v.runtime,
                    "runtime_version": runtime_version,
                },
            },
            "misc": {
                "outcome": o.as_str(),
                "verdict": v.status.as_str(),
                "observations": v.observations,
                "checks": v.checks,
            },
        });
        if v.status != Status::Pass && !v.detail.is_empty() {
            let excerpt: String = diagnostics(v).join("\n").chars().take(16_000).collect();
            test["log_excerpt"] = json!(excerpt);
        }
        tests.push(test);
    }
    json!({
        "version": {"major": KCIDB_VERSION.0, "minor": KCIDB_VERSION.1},
        "checkouts": checkouts.into_values().collect::<Vec<_>>(),
        "builds": builds.into_values().collect::<Vec<_>>(),
        "tests": tests,
    })
}

/// The formats [`write_all`] writes and `kcell report --format` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// KTAP version 1, every target and runtime.
    Ktap,
    /// TAP 13, one runtime.
    Tap13,
    /// A KCIDB I/O document.
    Kcidb,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Format, String> {
        match s {
            "ktap" => Ok(Format::Ktap),
            "tap13" | "tap" => Ok(Format::Tap13),
            "kcidb" => Ok(Format::Kcidb),
            other => Err(format!(
                "format '{other}' is not known: ktap, tap13 or kcidb (html is the default)"
            )),
        }
    }
}

/// The run's name in KCIDB ids: the first 16 hex digits of the SHA-256 of
/// its verdicts' trial names and statuses, so the same report always
/// gives the same ids and another run other ones.
pub fn run_name(judged: &[Judged]) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for (v, _) in judged {
        h.update(v.trial().as_bytes());
        h.update(v.status.as_str().as_bytes());
        h.update(v.seconds.to_bits().to_le_bytes());
    }
    crate::shard::short_hex(&h.finalize())
}

/// Writes `report.ktap`, `kcidb.json` and `tap/<runtime>.tap` (one per
/// runtime) into `dir`; returns the paths written.
pub fn write_all(
    dir: &std::path::Path,
    judged: &[Judged],
) -> Result<Vec<std::path::PathBuf>, String> {
    let write = |path: std::path::PathBuf, text: String| {
        std::fs::write(&path, text)
            .map(|_| path.clone())
            .map_err(|e| format!("write {}: {e}", path.display()))
    };
    let mut written = vec![
        write(dir.join("report.ktap"), ktap(judged))?,
        write(
            dir.join("kcidb.json"),
            serde_json::to_string_pretty(&kcidb(judged, "kcell", &run_name(judged)))
                .unwrap_or_default(),
        )?,
    ];
    let tap_dir = dir.join("tap");
    std::fs::create_dir_all(&tap_dir).map_err(|e| format!("mkdir {}: {e}", tap_dir.display()))?;
    let runtimes: std::collections::BTreeSet<&str> =
        judged.iter().map(|(v, _)| v.runtime.as_str()).collect();
    for r in runtimes {
        written.push(write(
            tap_dir.join(format!("{}.tap", kcidb_word(r))),
            tap13(judged, r),
        )?);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(target: &str, runtime: &str, case: &str, status: Status, detail: &str) -> Verdict {
        let mut v = Verdict::bare(
            case,
            target,
            "6.12.48+deb13-cloud-amd64",
            "v2",
            status,
            detail,
        );
        v.runtime = runtime.into();
        v.runtime_version = format!("{runtime} version 1.1.5\ncommit: x");
        v
    }

    #[test]
    fn ktap_nests_a_suite_per_target_and_runtime() {
        let a = v("host", "kcell", "NS-UTS-1", Status::Pass, "");
        let b = v(
            "host",
            "kcell",
            "CG-MEM-3",
            Status::Skip,
            "needs active swap # really",
        );
        let c = v(
            "host",
            "runc",
            "CG-MEM-1",
            Status::Fail,
            "limited.oom_kills_seen at_least: expected 1, observed 0",
        );
        let judged = [
            (&a, Outcome::Pass),
            (&b, Outcome::Skip),
            (&c, Outcome::Fail),
        ];
        let k = ktap(&judged);
        assert_eq!(
            k,
            "KTAP version 1\n1..2\n  KTAP version 1\n  # Subtest: host/kcell\n  1..2\n  ok 1 CG-MEM-3 # SKIP needs active swap no. really\n  ok 2 NS-UTS-1\nok 1 host/kcell\n  KTAP version 1\n  # Subtest: host/runc\n  1..1\n  # limited.oom_kills_seen at_least: expected 1, observed 0\n  not ok 1 CG-MEM-1\nnot ok 2 host/runc\n"
        );
    }

    #[test]
    fn tap13_and_kcidb_say_a_failure_is_a_failure() {
        let a = v("host", "runc", "NS-UTS-1", Status::Pass, "");
        let c = v(
            "deb-6.12-cloud/v2",
            "runc",
            "CG-MEM-1",
            Status::Fail,
            "oom_kills_seen 0",
        );
        let judged = [(&a, Outcome::Pass), (&c, Outcome::KnownDifference)];
        let t = tap13(&judged, "runc");
        assert!(t.starts_with("TAP version 13\n1..2\n"), "{t}");
        assert!(t.contains("not ok 1 - deb-6.12-cloud/v2 CG-MEM-1\n  ---\n  status: fail\n  known_difference: true\n"), "{t}");
        let doc = kcidb(&judged, "kcell", "run1");
        assert_eq!(doc["tests"][0]["status"], "PASS");
        assert_eq!(doc["tests"][1]["status"], "FAIL");
        assert_eq!(doc["tests"][1]["path"], "container.v2.runc.CG-MEM-1");
        assert_eq!(
            doc["tests"][1]["id"],
            "kcell:run1-deb-6_12-cloud_v2-runc-CG-MEM-1"
        );
        assert_eq!(doc["checkouts"].as_array().map(Vec::len), Some(1));
    }
}
