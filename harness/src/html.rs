//! report.html: the matrix a person reads at a glance. One self-contained
//! page (inline CSS, a few lines of inline script for the filters, SVG
//! drawn here; no network, fonts or external files): the grid of cases by
//! (target, runtime) grouped by catalogue area, each cell coloured by its
//! verdict with its headline value and linked to its detail (the checks
//! with both sides and their why, the kernel, timings, the reason); plots
//! of every measured check against its tolerance band per target; and,
//! against a baseline, the regressions first with their old and new values.

use crate::report::{column, compare};
use crate::verdict::{Status, Verdict};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The catalogue area of a case ID: CG, FS, NS, RT, SEC.
fn area(case: &str) -> &str {
    case.split('-').next().unwrap_or(case)
}

const AREAS: &[(&str, &str)] = &[
    ("CG", "cgroups"),
    ("FS", "filesystems"),
    ("NS", "namespaces"),
    ("RT", "the runtime's own commands"),
    ("SEC", "security"),
];

/// A check's band: (centre, half-width) of an `approx`, parsed from the
/// expected text the check wrote ("0.2 ± 0.02", "x (= 1.5) ± 0.1").
fn band(expected: &str) -> Option<(f64, f64)> {
    let (left, tol) = expected.split_once(" ± ")?;
    let centre = match left.rsplit_once("(= ") {
        Some((_, v)) => v.trim_end_matches(')'),
        None => left,
    };
    Some((centre.trim().parse().ok()?, tol.trim().parse().ok()?))
}

fn id_of(v: &Verdict) -> String {
    format!("{}--{}", column(v), v.case)
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

const STYLE: &str = r#"
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}
table{border-collapse:collapse}
th,td{border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top}
.grid th.col{writing-mode:vertical-rl;transform:rotate(180deg);white-space:nowrap;font-weight:normal}
.grid td a{color:inherit;text-decoration:none;display:block}
.pass{background:#d8f0d8}.fail{background:#f6b8b8;font-weight:bold}.error{background:#f3d08c;font-weight:bold}
.skip{background:#eee;color:#777}.inconclusive{background:#e6e0f5}.flaky{background:#f6b8e8;font-weight:bold}
tr.area th{background:#f4f4f4;text-align:left}
.detail{display:none;border:2px solid #888;padding:.6em 1em;margin:1em 0}
.detail:target{display:block}
pre{white-space:pre-wrap;margin:.3em 0}
.summary span{margin-right:1.2em}
.reg td{background:#fde4e4}
svg text{font:11px sans-serif}
.filters label{margin-right:1em}
"#;

const SCRIPT: &str = r#"
function kcellFilter(){
  var a=document.getElementById('f-area').value,s=document.getElementById('f-status').value,r=document.getElementById('f-runtime').value;
  document.querySelectorAll('.grid tbody tr').forEach(function(tr){
    var show=!a||tr.dataset.area===a;
    if(show&&s&&tr.dataset.statuses.indexOf(' '+s+' ')<0)show=false;
    tr.style.display=show?'':'none';});
  document.querySelectorAll('.grid [data-runtime]').forEach(function(c){
    c.style.display=(!r||c.dataset.runtime===r)?'':'none';});
}
"#;

/// The page for `verdicts`, with the regressions against `baseline` first
/// when one is given. `titles` maps case IDs to their one-line titles.
pub fn render(
    verdicts: &[Verdict],
    baseline: Option<&[Verdict]>,
    titles: &BTreeMap<String, String>,
) -> String {
    let mut h = String::new();
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    h.push_str("<title>kcell conformance report</title>");
    let _ = write!(
        h,
        "<style>{STYLE}</style><script>{SCRIPT}</script></head><body>"
    );
    h.push_str("<h1>kcell conformance report</h1>");
    let count = |s: Status| verdicts.iter().filter(|v| v.status == s).count();
    let _ = write!(
        h,
        "<p class=\"summary\"><span>{} trials</span><span class=\"pass\">{} pass</span><span class=\"fail\">{} fail</span><span class=\"error\">{} error</span><span class=\"skip\">{} skip</span><span class=\"inconclusive\">{} inconclusive</span></p>",
        verdicts.len(),
        count(Status::Pass),
        count(Status::Fail),
        count(Status::Error),
        count(Status::Skip),
        count(Status::Inconclusive)
    );

    if let Some(old) = baseline {
        against_baseline(&mut h, old, verdicts);
    }
    filters(&mut h, verdicts);
    grid(&mut h, verdicts, titles);
    plots(&mut h, verdicts);
    details(&mut h, verdicts, titles);
    h.push_str("</body></html>\n");
    h
}

/// The regressions and improvements against an earlier run.
fn against_baseline(h: &mut String, old: &[Verdict], verdicts: &[Verdict]) {
    let cmp = compare(old, verdicts);
    let value = |set: &[Verdict], case: &str, col: &str| {
        set.iter()
            .find(|v| v.case == case && column(v) == col)
            .and_then(|v| v.headline.clone())
            .unwrap_or_default()
    };
    let _ = write!(
        h,
        "<h2 id=\"regressions\">Against the baseline: {} regressions, {} improvements</h2>",
        cmp.regressions.len(),
        cmp.improvements.len()
    );
    if !cmp.regressions.is_empty() || !cmp.improvements.is_empty() {
        h.push_str("<table><tr><th>change</th><th>case</th><th>target/runtime</th><th>was</th><th>now</th></tr>");
        for (kind, rows) in [
            ("regression", &cmp.regressions),
            ("improvement", &cmp.improvements),
        ] {
            for (case, col, was, now) in rows.iter() {
                let _ = write!(
                    h,
                    "<tr class=\"{}\"><td>{kind}</td><td>{}</td><td>{}</td><td>{} {}</td><td>{} {}</td></tr>",
                    if kind == "regression" { "reg" } else { "" },
                    esc(case),
                    esc(col),
                    esc(was),
                    esc(&value(old, case, col)),
                    esc(now),
                    esc(&value(verdicts, case, col))
                );
            }
        }
        h.push_str("</table>");
    }
}

/// The area, verdict and runtime selectors.
fn filters(h: &mut String, verdicts: &[Verdict]) {
    let runtimes: BTreeSet<&str> = verdicts.iter().map(|v| v.runtime.as_str()).collect();
    h.push_str("<p class=\"filters\"><label>area <select id=\"f-area\" onchange=\"kcellFilter()\"><option value=\"\">all</option>");
    for (a, name) in AREAS {
        let _ = write!(h, "<option value=\"{a}\">{a}: {name}</option>");
    }
    h.push_str("</select></label><label>verdict <select id=\"f-status\" onchange=\"kcellFilter()\"><option value=\"\">any</option>");
    for s in ["pass", "fail", "error", "skip", "inconclusive", "flaky"] {
        let _ = write!(h, "<option value=\"{s}\">{s}</option>");
    }
    h.push_str("</select></label><label>runtime <select id=\"f-runtime\" onchange=\"kcellFilter()\"><option value=\"\">all</option>");
    for r in &runtimes {
        let _ = write!(h, "<option value=\"{0}\">{0}</option>", esc(r));
    }
    h.push_str("</select></label></p>");
}

/// The grid: a row per case, by area; a column per target and runtime.
fn grid(h: &mut String, verdicts: &[Verdict], titles: &BTreeMap<String, String>) {
    let columns = crate::report::columns(verdicts);
    let by: BTreeMap<(&str, &str, &str), &Verdict> = verdicts
        .iter()
        .map(|v| ((v.case.as_str(), v.target.as_str(), v.runtime.as_str()), v))
        .collect();
    let cases: BTreeSet<&str> = verdicts.iter().map(|v| v.case.as_str()).collect();
    h.push_str("<table class=\"grid\"><thead><tr><th>case</th>");
    for (t, r) in &columns {
        let _ = write!(
            h,
            "<th class=\"col\" data-runtime=\"{}\">{} / {}</th>",
            esc(r),
            esc(t),
            esc(r)
        );
    }
    h.push_str("</tr></thead>");
    for (a, name) in AREAS {
        let rows: Vec<&&str> = cases.iter().filter(|c| area(c) == *a).collect();
        if rows.is_empty() {
            continue;
        }
        let _ = write!(
            h,
            "<tbody><tr class=\"area\" data-area=\"{a}\" data-statuses=\" pass fail error skip inconclusive flaky \"><th colspan=\"{}\">{a}: {name}</th></tr>",
            columns.len() + 1
        );
        for case in rows {
            let statuses: BTreeSet<&str> = columns
                .iter()
                .filter_map(|(t, r)| by.get(&(*case, t.as_str(), r.as_str())))
                .map(|v| v.status.as_str())
                .collect();
            let _ = write!(
                h,
                "<tr data-area=\"{a}\" data-statuses=\" {} \"><th title=\"{}\">{}</th>",
                statuses.into_iter().collect::<Vec<_>>().join(" "),
                esc(titles.get(*case).map(String::as_str).unwrap_or("")),
                esc(case)
            );
            for (t, r) in &columns {
                match by.get(&(*case, t.as_str(), r.as_str())) {
                    Some(v) => {
                        let _ = write!(
                            h,
                            "<td class=\"{}\" data-runtime=\"{}\"><a href=\"#{}\">{}{}</a></td>",
                            v.status.as_str(),
                            esc(r),
                            id_of(v),
                            v.status.as_str(),
                            v.headline
                                .as_deref()
                                .map(|x| format!(" {}", esc(x)))
                                .unwrap_or_default()
                        );
                    }
                    None => {
                        let _ = write!(h, "<td data-runtime=\"{}\"></td>", esc(r));
                    }
                }
            }
            h.push_str("</tr>");
        }
        h.push_str("</tbody>");
    }
    h.push_str("</table>");
}

/// Every cell's detail, shown when its link is followed.
fn details(h: &mut String, verdicts: &[Verdict], titles: &BTreeMap<String, String>) {
    h.push_str("<h2>Details</h2><p>Follow a cell of the grid to see its checks here.</p>");
    for v in verdicts {
        let _ = write!(
            h,
            "<section class=\"detail\" id=\"{}\"><h3>{} on {} with {}: <span class=\"{}\">{}</span></h3>",
            id_of(v),
            esc(&v.case),
            esc(&v.target),
            esc(&v.runtime),
            v.status.as_str(),
            v.status.as_str()
        );
        if let Some(t) = titles.get(&v.case) {
            let _ = write!(h, "<p>{}</p>", esc(t));
        }
        let _ = write!(
            h,
            "<p>kernel {}, cgroup {}; runtime {}; {:.2} s</p>",
            esc(&v.kernel),
            esc(&v.cgroup),
            esc(&v.runtime_version),
            v.seconds
        );
        if !v.detail.is_empty() {
            let _ = write!(h, "<pre>{}</pre>", esc(&v.detail));
        }
        if !v.checks.is_empty() {
            h.push_str("<table><tr><th>check</th><th>expected</th><th>observed</th><th></th><th>why</th></tr>");
            for c in &v.checks {
                let _ = write!(
                    h,
                    "<tr class=\"{}\"><td>{} {}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    if c.ok { "pass" } else { "fail" },
                    esc(&c.that),
                    esc(&c.op),
                    esc(&c.expected),
                    esc(&crate::expect::as_text(&c.observed)),
                    if c.ok {
                        "held"
                    } else if c.on_fail == crate::case::OnFail::Inconclusive {
                        "control failed"
                    } else {
                        "failed"
                    },
                    esc(c.why.as_deref().unwrap_or(""))
                );
            }
            h.push_str("</table>");
        }
        h.push_str("</section>");
    }
}

/// One plotted measurement: (target/runtime, expected, tolerance, observed).
type Point = (String, f64, f64, f64);

/// One SVG per measured check (an `approx` with a numeric observation):
/// a row per target/runtime, the tolerance band shaded, the observed value
/// a dot, on an axis in units of the tolerance (so 0.199 against 0.20 ±
/// 0.02 sits near the centre and 0.219 near the band's edge).
fn plots(h: &mut String, verdicts: &[Verdict]) {
    let mut by_check: BTreeMap<(String, String), Vec<Point>> = BTreeMap::new();
    for v in verdicts {
        for c in &v.checks {
            if c.op != "approx" {
                continue;
            }
            let (Some((centre, tol)), Some(obs)) =
                (band(&c.expected), crate::expect::as_number(&c.observed))
            else {
                continue;
            };
            if tol <= 0.0 {
                continue;
            }
            by_check
                .entry((v.case.clone(), c.that.clone()))
                .or_default()
                .push((column(v), centre, tol, obs));
        }
    }
    if by_check.is_empty() {
        return;
    }
    h.push_str("<h2>Measured values against their bands</h2><p>Each row: the observed value (dot) and the case's tolerance band (shaded) on one target with one runtime; the axis is in tolerances from the expected value, labelled with the values themselves.</p>");
    let (w, label_w, row_h) = (760.0, 260.0, 18.0);
    for ((case, that), rows) in by_check {
        let height = 30.0 + row_h * rows.len() as f64;
        let _ = write!(
            h,
            "<h3>{} — {}</h3><svg width=\"{w}\" height=\"{height}\" role=\"img\">",
            esc(&case),
            esc(&that)
        );
        let plot_w = w - label_w - 10.0;
        // Units of the tolerance, from -3 to +3.
        let x = |u: f64| label_w + (u.clamp(-3.0, 3.0) + 3.0) / 6.0 * plot_w;
        let _ = write!(
            h,
            "<rect x=\"{:.1}\" y=\"10\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#d8f0d8\"/>",
            x(-1.0),
            x(1.0) - x(-1.0),
            height - 20.0
        );
        let _ = write!(
            h,
            "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"10\" y2=\"{1:.1}\" stroke=\"#6a6\"/>",
            x(0.0),
            height - 10.0
        );
        for (i, (col, centre, tol, obs)) in rows.iter().enumerate() {
            let y = 20.0 + row_h * i as f64;
            let u = (obs - centre) / tol;
            let colour = if u.abs() <= 1.0 { "#262" } else { "#c00" };
            let _ = write!(
                h,
                "<text x=\"4\" y=\"{:.1}\">{}</text><circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"{colour}\"><title>{} observed {obs} (expected {centre} ± {tol})</title></circle><text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
                y + 4.0,
                esc(col),
                x(u),
                y,
                esc(col),
                if x(u) + 60.0 > w { x(u) - 55.0 } else { x(u) + 7.0 },
                y + 4.0,
                fmt_number(*obs)
            );
        }
        h.push_str("</svg>");
    }
}

fn fmt_number(x: f64) -> String {
    if x.abs() >= 1e6 {
        format!("{x:.3e}")
    } else if x.fract() == 0.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.4}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[rstest::rstest]
    #[case("0.2 ± 0.02", Some((0.2, 0.02)))]
    #[case("work.cpu_ns (= 1237224212) ± 61861210.6", Some((1237224212.0, 61861210.6)))]
    #[case("137", None)]
    fn bands_parse(#[case] text: &str, #[case] want: Option<(f64, f64)>) {
        assert_eq!(band(text), want);
    }
}
