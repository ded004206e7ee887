//! Reports from verdicts: report.json (machine), report.xml (JUnit, for CI)
//! and matrix.md (cases as rows, target and runtime as columns, with the
//! table of divergences: where runtimes disagree on one kernel), and the
//! comparison against a baseline report that fails only on regressions,
//! runtime by runtime.

use crate::case::Headline;
use crate::observation::Observations;
use crate::verdict::{Status, Verdict};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

/// Formats a case's headline observation for a matrix cell.
pub fn format_headline(h: &Headline, obs: &Observations) -> Option<String> {
    let v = obs.get(&h.key)?;
    let n = crate::expect::as_number(v);
    let text = match (h.format.as_deref(), n) {
        (Some("percent"), Some(x)) => format!("{:.1}%", x * 100.0),
        (Some("mib_s"), Some(x)) => format!("{:.2} MiB/s", x / 1_048_576.0),
        _ => crate::expect::as_text(v),
    };
    Some(format!("{}{text}", h.label.as_deref().unwrap_or("")))
}

fn cell(v: &Verdict) -> String {
    let mark = match v.status {
        Status::Pass => "pass",
        Status::Fail => "**FAIL**",
        Status::Skip => "skip",
        Status::Inconclusive => "inconclusive",
        Status::Error => "**ERROR**",
        Status::Flaky => "**FLAKY**",
    };
    match &v.headline {
        Some(h) => format!("{mark} {h}"),
        None => mark.to_string(),
    }
}

/// A verdict's column: its target and runtime.
pub fn column(v: &Verdict) -> String {
    if v.runtime.is_empty() {
        v.target.clone()
    } else {
        format!("{}/{}", v.target, v.runtime)
    }
}

/// The (target, runtime) columns of `verdicts`: the host first, then the
/// guests by name; kcell first on each.
pub fn columns(verdicts: &[Verdict]) -> Vec<(String, String)> {
    let mut columns: Vec<(String, String)> = verdicts
        .iter()
        .map(|v| (v.target.clone(), v.runtime.clone()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    columns.sort_by_key(|(t, r)| (t != "host", t.clone(), r != "kcell", r.clone()));
    columns
}

/// The kernel x runtime x case matrix as Markdown, with the divergences
/// between runtimes and the skip, failure and error reasons under it.
pub fn matrix_markdown(verdicts: &[Verdict], notes: &BTreeMap<String, String>) -> String {
    let mut out = String::from("# kcell conformance matrix\n\n");
    let columns = columns(verdicts);
    targets_and_runtimes(&mut out, verdicts, &columns, notes);
    out.push('\n');
    grid_markdown(&mut out, verdicts, &columns);
    disagreements(&mut out, verdicts);
    not_passed(&mut out, verdicts);
    let count = |s: Status| verdicts.iter().filter(|v| v.status == s).count();
    let _ = writeln!(
        out,
        "\n{} pass, {} fail, {} skip, {} inconclusive, {} error, {} flaky",
        count(Status::Pass),
        count(Status::Fail),
        count(Status::Skip),
        count(Status::Inconclusive),
        count(Status::Error),
        count(Status::Flaky)
    );
    out
}

/// A line per target (kernel, cgroup, the guest's notes) and per runtime
/// (its versions).
fn targets_and_runtimes(
    out: &mut String,
    verdicts: &[Verdict],
    columns: &[(String, String)],
    notes: &BTreeMap<String, String>,
) {
    let mut targets: Vec<String> = columns.iter().map(|(t, _)| t.clone()).collect();
    targets.dedup();
    for t in &targets {
        if let Some(v) = verdicts.iter().find(|v| &v.target == t) {
            let note = notes.get(t).map(|n| format!("; {n}")).unwrap_or_default();
            let _ = writeln!(
                out,
                "- `{t}`: kernel {}, cgroup {}{note}",
                v.kernel, v.cgroup
            );
        }
    }
    // A runtime's version as its trials saw it: a trial skipped before the
    // runtime ran has none, so the versions are those of the trials that have one.
    let mut runtimes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for v in verdicts.iter().filter(|v| !v.runtime.is_empty()) {
        let versions = runtimes.entry(v.runtime.clone()).or_default();
        if !v.runtime_version.is_empty() && !versions.contains(&v.runtime_version) {
            versions.push(v.runtime_version.clone());
        }
    }
    for (r, versions) in &runtimes {
        let version = if versions.is_empty() {
            "(not run)".to_string()
        } else {
            versions.join("; ")
        };
        let _ = writeln!(out, "- runtime `{r}`: {version}");
    }
}

/// The grid: a row per case, a column per target and runtime.
fn grid_markdown(out: &mut String, verdicts: &[Verdict], columns: &[(String, String)]) {
    let cases: BTreeSet<&str> = verdicts.iter().map(|v| v.case.as_str()).collect();
    let by: BTreeMap<(&str, String), &Verdict> = verdicts
        .iter()
        .map(|v| ((v.case.as_str(), column(v)), v))
        .collect();
    let names: Vec<String> = columns
        .iter()
        .map(|(t, r)| {
            if r.is_empty() {
                t.clone()
            } else {
                format!("{t}/{r}")
            }
        })
        .collect();
    let _ = writeln!(out, "| case | {} |", names.join(" | "));
    let _ = writeln!(out, "|---|{}", "---|".repeat(names.len()));
    for c in &cases {
        let cells: Vec<String> = names
            .iter()
            .map(|n| {
                by.get(&(*c, n.clone()))
                    .map_or("-".to_string(), |v| cell(v))
            })
            .collect();
        let _ = writeln!(out, "| {c} | {} |", cells.join(" | "));
    }
}

/// Where runtimes disagree, and where one runtime's versions do.
fn disagreements(out: &mut String, verdicts: &[Verdict]) {
    let div = divergences(verdicts);
    if !div.is_empty() {
        out.push_str(
            "\n## Where runtimes disagree\n\n| target | case | verdicts |\n|---|---|---|\n",
        );
        for (target, case, each) in div {
            let _ = writeln!(out, "| {target} | {case} | {} |", each.join("; "));
        }
    }
    let versions = across_versions(verdicts);
    if !versions.is_empty() {
        out.push_str(
            "\n## Across versions\n\nOne runtime's versions on the same target and case, oldest first, where they disagree.\n\n| runtime | target | case | verdicts | change |\n|---|---|---|---|---|\n",
        );
        for a in versions {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                a.family,
                a.target,
                a.case,
                a.each.join("; "),
                a.change
            );
        }
    }
}

/// Every trial that did not pass, with its detail cut to a line.
fn not_passed(out: &mut String, verdicts: &[Verdict]) {
    let notes: Vec<&Verdict> = verdicts
        .iter()
        .filter(|v| v.status != Status::Pass)
        .collect();
    if !notes.is_empty() {
        out.push_str("\n## Not passed\n\n");
        for v in notes {
            let mut detail = v
                .detail
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("; ");
            // A console tail belongs in report.json, not in a table.
            if let Some((cut, _)) = detail.char_indices().nth(400) {
                detail = format!("{}... (see report.json)", &detail[..cut]);
            }
            let _ = writeln!(
                out,
                "- `{}` on `{}`: {} — {}",
                v.case,
                column(v),
                v.status.as_str(),
                detail
            );
        }
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Every (target, case) where the runtimes' verdicts differ: each
/// runtime's status and observed headline.
pub fn divergences(verdicts: &[Verdict]) -> Vec<(String, String, Vec<String>)> {
    let mut by: BTreeMap<(&str, &str), Vec<&Verdict>> = BTreeMap::new();
    for v in verdicts {
        by.entry((v.target.as_str(), v.case.as_str()))
            .or_default()
            .push(v);
    }
    by.into_iter()
        .filter(|(_, vs)| vs.len() > 1 && vs.iter().any(|v| v.status != vs[0].status))
        .map(|((t, c), vs)| {
            let each = vs
                .iter()
                .map(|v| format!("{}: {}", v.runtime, cell(v)))
                .collect();
            (t.to_string(), c.to_string(), each)
        })
        .collect()
}

/// One runtime family's verdicts on one target and case across its
/// versions, where they differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcrossVersions {
    /// The family: runc of runc@bookworm and runc@sid.
    pub family: String,
    /// The target.
    pub target: String,
    /// The case.
    pub case: String,
    /// Each version, oldest first: "1.1.5 (runc@bookworm): FAIL oom_kills_seen = 0".
    pub each: Vec<String>,
    /// "fixed in 1.3.6", "regressed in 1.3.6", or how the oldest and the
    /// newest ended ("error in 1.8.1, fail in 1.28.0").
    pub change: String,
}

/// A verdict in a line: its status and what its failing checks observed.
fn with_values(v: &Verdict) -> String {
    let failing: Vec<String> = v
        .checks
        .iter()
        .filter(|c| !c.ok)
        .take(3)
        .map(|c| format!("{} = {}", c.that, crate::expect::as_text(&c.observed)))
        .collect();
    if failing.is_empty() {
        cell(v)
    } else {
        format!("{} {}", cell(v), failing.join(", "))
    }
}

/// Where one runtime's versions (its lines, named NAME@LINE, and the
/// plain NAME) disagree on the same target and case: fixed in, regressed
/// in, with each version's observed values.
pub fn across_versions(verdicts: &[Verdict]) -> Vec<AcrossVersions> {
    let mut by: BTreeMap<(&str, &str, &str), Vec<&Verdict>> = BTreeMap::new();
    for v in verdicts.iter().filter(|v| !v.runtime.is_empty()) {
        by.entry((
            crate::matrix::family(&v.runtime),
            v.target.as_str(),
            v.case.as_str(),
        ))
        .or_default()
        .push(v);
    }
    let mut out = Vec::new();
    for ((family, target, case), mut vs) in by {
        let passes = |v: &&Verdict| v.status == Status::Pass;
        if vs.len() < 2 || vs.iter().all(|v| v.status == vs[0].status) {
            continue;
        }
        let key = |v: &&Verdict| crate::differences::version_of(&v.runtime_version);
        vs.sort_by(|a, b| key(a).cmp(&key(b)).then(a.runtime.cmp(&b.runtime)));
        let label = |v: &Verdict| key(&v).map_or(v.runtime_version.clone(), |x| x.to_string());
        let (first, last) = (vs[0], vs[vs.len() - 1]);
        let change = match (passes(&first), passes(&last)) {
            (false, true) => format!("fixed in {}", label(last)),
            (true, false) => format!("regressed in {}", label(last)),
            _ => format!(
                "{} in {}, {} in {}",
                first.status.as_str(),
                label(first),
                last.status.as_str(),
                label(last)
            ),
        };
        out.push(AcrossVersions {
            family: family.to_string(),
            target: target.to_string(),
            case: case.to_string(),
            each: vs
                .iter()
                .map(|v| format!("{} ({}): {}", label(v), v.runtime, with_values(v)))
                .collect(),
            change,
        });
    }
    out
}

/// JUnit XML: one testsuite per target and runtime, one testcase per case.
pub fn junit_xml(verdicts: &[Verdict]) -> String {
    let mut by_target: BTreeMap<String, Vec<&Verdict>> = BTreeMap::new();
    for v in verdicts {
        by_target.entry(column(v)).or_default().push(v);
    }
    let mut out =
        String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"kcell\">\n");
    for (target, vs) in by_target {
        let failures = vs
            .iter()
            .filter(|v| matches!(v.status, Status::Fail | Status::Flaky))
            .count();
        let errors = vs.iter().filter(|v| v.status == Status::Error).count();
        let skipped = vs
            .iter()
            .filter(|v| matches!(v.status, Status::Skip | Status::Inconclusive))
            .count();
        let _ = writeln!(out, "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\">", xml_escape(&target), vs.len());
        for v in vs {
            let _ = write!(
                out,
                "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
                xml_escape(&target),
                xml_escape(&v.case),
                v.seconds
            );
            let outcome = match v.status {
                Status::Pass => String::new(),
                Status::Fail | Status::Flaky => format!(
                    "<failure message=\"{}: {}\"/>",
                    v.status.as_str(),
                    xml_escape(&v.detail)
                ),
                Status::Error => format!("<error message=\"{}\"/>", xml_escape(&v.detail)),
                Status::Skip | Status::Inconclusive => format!(
                    "<skipped message=\"{}: {}\"/>",
                    v.status.as_str(),
                    xml_escape(&v.detail)
                ),
            };
            // What the trial ran on, for a CI that groups or filters by it.
            let properties: String = [
                ("runtime", &v.runtime),
                ("runtime_version", &v.runtime_version),
                ("kernel", &v.kernel),
                ("cgroup", &v.cgroup),
            ]
            .iter()
            .map(|(k, val)| format!("<property name=\"{k}\" value=\"{}\"/>", xml_escape(val)))
            .collect();
            let _ = writeln!(
                out,
                "><properties>{properties}</properties>{outcome}</testcase>"
            );
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

/// What changed against a baseline report.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Comparison {
    /// (case, target, was, now) that went from pass to anything else.
    pub regressions: Vec<(String, String, String, String)>,
    /// (case, target, was, now) that went from fail or error to pass.
    pub improvements: Vec<(String, String, String, String)>,
}

/// Compares `now` against `baseline` runtime by runtime: pass -> fail,
/// error, skip or inconclusive regresses (a pass that turns into a skip is
/// coverage lost: the behaviour is no longer judged); pass -> a known
/// difference regresses too, its status being fail or error.
pub fn compare(baseline: &[Verdict], now: &[Verdict]) -> Comparison {
    let old: BTreeMap<(&str, String), Status> = baseline
        .iter()
        .map(|v| ((v.case.as_str(), column(v)), v.status))
        .collect();
    let mut c = Comparison::default();
    for v in now {
        let Some(was) = old.get(&(v.case.as_str(), column(v))) else {
            continue;
        };
        let row = (
            v.case.clone(),
            column(v),
            was.as_str().to_string(),
            v.status.as_str().to_string(),
        );
        let bad = |s: Status| matches!(s, Status::Fail | Status::Error);
        if *was == Status::Pass && v.status != Status::Pass {
            c.regressions.push(row);
        } else if bad(*was) && v.status == Status::Pass {
            c.improvements.push(row);
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expect::CheckReport;
    use serde_json::json;

    /// A fixed report: every status, two targets, a headline and a long detail.
    fn fixed() -> Vec<Verdict> {
        let v = |case: &str, target: &str, status: Status, detail: &str, headline: Option<&str>| {
            Verdict {
                case: case.into(),
                target: target.into(),
                runtime: "kcell".into(),
                runtime_version: "kcell-oci version 0.1.0".into(),
                kernel: if target == "host" {
                    "6.18.0".into()
                } else {
                    "6.12.117+deb12-cloud-amd64 (6.12.117-1~deb12u1)".into()
                },
                cgroup: if target == "host" {
                    "hybrid (v1 used)".into()
                } else {
                    "v2".into()
                },
                status,
                detail: detail.into(),
                checks: vec![CheckReport {
                    that: "limited.cpu_share.share".into(),
                    op: "approx".into(),
                    expected: "0.2 ± 0.02".into(),
                    observed: json!(0.201),
                    ok: status == Status::Pass,
                    on_fail: crate::case::OnFail::Fail,
                    why: None,
                }],
                observations: Observations::default(),
                seconds: 3.5,
                headline: headline.map(String::from),
                repeats: None,
                timing: None,
            }
        };
        vec![
            v("CG-CPU-1", "host", Status::Pass, "", Some("20.1%")),
            v("CG-CPU-1", "deb-6.12-cloud/v2", Status::Fail, "  limited.cpu_share.share approx: expected 0.2 ± 0.02, observed 0.4\n  run 'limited' exited 1; stderr: <oops> & \"quotes\"", Some("40.0%")),
            v("CG-MEM-3", "host", Status::Skip, "needs active swap", None),
            v("CG-MEM-3", "deb-6.12-cloud/v2", Status::Pass, "", Some("swap=15552512")),
            v("CG-CPU-3", "deb-6.12-cloud/v2", Status::Inconclusive, "control too slow", Some("149.9%")),
            v("NS-UTS-1", "deb-6.12-cloud/v2", Status::Error, "the guest died while this case ran", None),
            {
                // runc on the same kernel disagrees with kcell: a divergence.
                let mut r = v("CG-CPU-1", "deb-6.12-cloud/v2", Status::Pass, "", Some("19.9%"));
                r.runtime = "runc".into();
                r.runtime_version = "runc version 1.1.5+ds1".into();
                r
            },
        ]
    }

    #[test]
    fn matrix_snapshot() {
        let mut notes = BTreeMap::new();
        notes.insert(
            "deb-6.12-cloud/v2".to_string(),
            "boot to first case 3.21 s, 57 s in all".to_string(),
        );
        insta::assert_snapshot!(matrix_markdown(&fixed(), &notes));
    }

    #[test]
    fn junit_snapshot() {
        insta::assert_snapshot!(junit_xml(&fixed()));
    }

    #[test]
    fn one_runtime_across_its_versions() {
        let mut old = Verdict::bare(
            "CG-MEM-2",
            "deb-6.1-cloud/v1",
            "6.1",
            "v1",
            Status::Error,
            "",
        );
        old.runtime = "runc@bookworm".into();
        old.runtime_version = "runc version 1.1.5+ds1".into();
        let mut new = old.clone();
        new.runtime = "runc@sid".into();
        new.runtime_version = "runc version 1.3.6+ds1".into();
        new.status = Status::Pass;
        let mut other = new.clone();
        other.runtime = "crun@sid".into();
        other.runtime_version = "crun version 1.28".into();
        let rows = across_versions(&[new.clone(), old, other]);
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0].family, "runc");
        assert_eq!(rows[0].change, "fixed in 1.3.6");
        assert!(
            rows[0].each[0].starts_with("1.1.5 (runc@bookworm): **ERROR**"),
            "{:?}",
            rows[0].each
        );
        new.status = Status::Fail;
        assert!(
            across_versions(&[new]).is_empty(),
            "one version alone is no comparison"
        );
    }

    #[test]
    fn baseline_flags_only_regressions() {
        let mut now = fixed();
        let base = fixed();
        now[0].status = Status::Fail; // host CG-CPU-1: pass -> fail
        now[1].status = Status::Pass; // fail -> pass
        now[2].status = Status::Error; // skip -> error: not a regression
        let c = compare(&base, &now);
        assert_eq!(
            c.regressions,
            vec![(
                "CG-CPU-1".into(),
                "host/kcell".into(),
                "pass".into(),
                "fail".into()
            )]
        );
        assert_eq!(
            c.improvements,
            vec![(
                "CG-CPU-1".into(),
                "deb-6.12-cloud/v2/kcell".into(),
                "fail".into(),
                "pass".into()
            )]
        );
        assert_eq!(compare(&base, &base), Comparison::default());
    }

    #[test]
    fn headline_formats() {
        let mut obs = Observations::default();
        obs.insert("a.share", json!(0.2013));
        obs.insert("a.rate", json!(1048576));
        obs.insert("a.n", json!(3));
        let h = |key: &str, format: Option<&str>, label: Option<&str>| {
            format_headline(
                &Headline {
                    key: key.into(),
                    format: format.map(String::from),
                    label: label.map(String::from),
                },
                &obs,
            )
        };
        assert_eq!(
            h("a.share", Some("percent"), None).as_deref(),
            Some("20.1%")
        );
        assert_eq!(
            h("a.rate", Some("mib_s"), None).as_deref(),
            Some("1.00 MiB/s")
        );
        assert_eq!(
            h("a.n", None, Some("oom_kill=")).as_deref(),
            Some("oom_kill=3")
        );
        assert_eq!(h("a.missing", None, None), None);
    }
}
