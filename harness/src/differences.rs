//! What the suite found: documented differences of a runtime (or kernel)
//! from what a case expects, in `cases/differences.toml`. Each entry
//! describes one failure: the checks that fail (exactly those), the values
//! or ranges seen, or for an error the words of the error; and the runtime
//! versions it covers. A trial is excused only when it fails exactly as an
//! entry describes; any other failure of the same cell fails the run. The
//! verdict stays fail or error in every report; the gate (gate.rs) reports
//! it as a known difference. An entry that no longer shows fails the run
//! unless `--allow-stale-differences` is given, so the list cannot rot.

use crate::verdict::{Status, Verdict};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// How the trial an entry excuses ends.
#[derive(Debug, Clone, Copy, Deserialize, serde::Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Ends {
    /// Checks fail (`checks` names them).
    #[default]
    Fail,
    /// The run cannot be made (`error` gives the words).
    Error,
}

/// One difference.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Difference {
    /// The runtime it is of ("kcell", "runc", ...), or "*" for any.
    pub runtime: String,
    /// The case.
    pub case: String,
    /// Targets it shows on: patterns of target names, comma-separated,
    /// where `*` stands for any run of characters ("host", "deb-*/v1",
    /// "host,deb-*/v1", "*" for all).
    #[serde(default = "any")]
    pub targets: String,
    /// The runtime versions it was seen with (a prefix of `--version`'s first line).
    #[serde(default)]
    pub version: Option<String>,
    /// The versions it covers, as a semver requirement over the first
    /// x.y.z of `--version` (">=1.1.0, <1.1.8").
    #[serde(default)]
    pub versions: Option<String>,
    /// How the trial ends.
    #[serde(default)]
    pub ends: Ends,
    /// For `fail`: the checks that fail (the `that` of each), exactly.
    #[serde(default)]
    pub checks: Vec<String>,
    /// For `fail`: values seen, per check: a JSON value ("0", "false",
    /// "\"max\"") or a numeric range "LOW..HIGH".
    #[serde(default)]
    pub seen: BTreeMap<String, String>,
    /// For `error`: words the error's detail contains.
    #[serde(default)]
    pub error: Option<String>,
    /// What was observed and why, with the values.
    pub found: String,
}

fn any() -> String {
    "*".into()
}

#[derive(Deserialize)]
struct File {
    #[serde(default, rename = "difference")]
    differences: Vec<Difference>,
}

/// The differences listed in `path` (none when it is missing); an entry
/// that does not say how its trial ends is an error naming it.
pub fn load(path: &Path) -> Result<Vec<Difference>, String> {
    let list = match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str::<File>(&text)
            .map(|f| f.differences)
            .map_err(|e| format!("{}: {e}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    for d in &list {
        let name = format!(
            "{}: the {} difference of {}",
            path.display(),
            d.runtime,
            d.case
        );
        match d.ends {
            Ends::Fail if d.checks.is_empty() => {
                return Err(format!(
                    "{name} names no checks: list the checks that fail (checks = [\"run.value\"])"
                ))
            }
            Ends::Error if d.error.as_deref().is_none_or(str::is_empty) => {
                return Err(format!(
                    "{name} ends in an error but gives none of its words (error = \"...\")"
                ))
            }
            _ => {}
        }
        if let Some((check, _)) = d.seen.iter().find(|(c, _)| !d.checks.contains(c)) {
            return Err(format!("{name}: seen.{check} is not one of its checks"));
        }
        if let Some(req) = &d.versions {
            semver::VersionReq::parse(req).map_err(|e| {
                format!("{name}: versions '{req}' is not a semver requirement: {e}")
            })?;
        }
    }
    Ok(list)
}

/// The first x.y.z of a `--version` line ("runc version 1.1.5+ds1" is
/// 1.1.5); x.y is x.y.0 ("crun version 1.28" is 1.28.0).
pub fn version_of(text: &str) -> Option<semver::Version> {
    text.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter_map(|w| {
            let mut parts: Vec<&str> = w.split('.').filter(|p| !p.is_empty()).collect();
            if parts.len() == 2 {
                parts.push("0");
            }
            (parts.len() >= 3).then(|| semver::Version::parse(&parts[..3].join(".")).ok())?
        })
        .next()
}

impl Difference {
    /// Whether this entry is about the cell of `v` (runtime, version,
    /// target, case), whatever the trial's outcome.
    pub fn covers(&self, v: &Verdict) -> bool {
        crate::matrix::names_runtime(&self.runtime, &v.runtime)
            && self.case == v.case
            && self.targets.split(',').any(|p| glob(p.trim(), &v.target))
            && self
                .version
                .as_deref()
                .is_none_or(|p| v.runtime_version.contains(p))
            && self.versions.as_deref().is_none_or(|req| {
                let (Ok(req), Some(have)) = (
                    semver::VersionReq::parse(req),
                    version_of(&v.runtime_version),
                ) else {
                    return false;
                };
                req.matches(&have)
            })
    }

    /// Whether the trial `v` ends exactly as this entry describes.
    pub fn describes(&self, v: &Verdict) -> bool {
        match (self.ends, v.status) {
            (Ends::Fail, Status::Fail) => {
                let mut failing: Vec<&str> = v
                    .checks
                    .iter()
                    .filter(|c| !c.ok)
                    .map(|c| c.that.as_str())
                    .collect();
                failing.sort_unstable();
                failing.dedup();
                let mut listed: Vec<&str> = self.checks.iter().map(String::as_str).collect();
                listed.sort_unstable();
                listed.dedup();
                failing == listed
                    && self.seen.iter().all(|(check, want)| {
                        v.checks
                            .iter()
                            .filter(|c| &c.that == check)
                            .all(|c| value_matches(want, &c.observed))
                    })
            }
            (Ends::Error, Status::Error) => self
                .error
                .as_deref()
                .is_some_and(|words| v.detail.contains(words)),
            _ => false,
        }
    }
}

/// `want` is a JSON value equal to `seen`, or "LOW..HIGH" holding it.
fn value_matches(want: &str, seen: &serde_json::Value) -> bool {
    if let Some((low, high)) = want.split_once("..") {
        let (Ok(low), Ok(high)) = (low.trim().parse::<f64>(), high.trim().parse::<f64>()) else {
            return false;
        };
        return crate::expect::as_number(seen).is_some_and(|x| low <= x && x <= high);
    }
    match serde_json::from_str::<serde_json::Value>(want) {
        Ok(v) => {
            &v == seen
                || crate::expect::as_number(&v)
                    .is_some_and(|n| crate::expect::as_number(seen) == Some(n))
        }
        Err(_) => seen.as_str() == Some(want),
    }
}

/// The difference that excuses the trial `v`: one covering its cell and
/// describing how it ended.
pub fn explaining<'a>(list: &'a [Difference], v: &Verdict) -> Option<&'a Difference> {
    list.iter().find(|d| d.covers(v) && d.describes(v))
}

/// The entries of `list` that covered a judged trial of `verdicts` and
/// described none of them: differences that no longer show as written. A
/// skipped or inconclusive trial judged nothing, so it says nothing either
/// way.
pub fn stale<'a>(
    list: &'a [Difference],
    verdicts: &[Verdict],
) -> Vec<(&'a Difference, Vec<String>)> {
    list.iter()
        .filter_map(|d| {
            let covered: Vec<&Verdict> = verdicts
                .iter()
                .filter(|v| !matches!(v.status, Status::Skip | Status::Inconclusive))
                .filter(|v| d.covers(v))
                .collect();
            let shown = covered.iter().any(|v| d.describes(v));
            (!covered.is_empty() && !shown).then(|| {
                (
                    d,
                    covered
                        .iter()
                        .map(|v| format!("{} {}", v.trial(), v.status.as_str()))
                        .collect(),
                )
            })
        })
        .collect()
}

/// Whether `name` matches `pattern`, in which `*` stands for any run of
/// characters (and nothing else is special).
pub(crate) fn glob(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_of_two_numbers_is_x_y_0() {
        assert_eq!(
            version_of("crun version 1.28"),
            semver::Version::parse("1.28.0").ok()
        );
        assert_eq!(
            version_of("runc version 1.3.6+ds1"),
            semver::Version::parse("1.3.6").ok()
        );
        assert_eq!(
            version_of("youki version: 0.7.0"),
            semver::Version::parse("0.7.0").ok()
        );
    }

    #[test]
    fn the_project_list_parses_and_every_entry_names_a_case() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cases");
        let list = load(&dir.join("differences.toml")).expect("differences.toml");
        for d in &list {
            assert!(
                dir.join(format!("{}.toml", d.case)).is_file(),
                "{} names no case",
                d.case
            );
            assert!(
                d.found.len() > 40,
                "{}: say what was found, with the values",
                d.case
            );
        }
    }

    #[rstest::rstest]
    #[case("*", "host", true)]
    #[case("host", "host", true)]
    #[case("host", "hostx", false)]
    #[case("deb-*/v1", "deb-6.1-cloud/v1", true)]
    #[case("deb-*/v1", "deb-6.1-cloud/v2", false)]
    #[case("deb-*", "host", false)]
    #[case("*/v2", "deb-7.2-cloud/v2", true)]
    #[case("deb-*-cloud/*", "deb-5.10-cloud/v1", true)]
    #[case("a*a", "a", false)]
    fn target_patterns(#[case] pattern: &str, #[case] name: &str, #[case] matches: bool) {
        assert_eq!(glob(pattern, name), matches, "{pattern} ~ {name}");
    }

    fn verdict(
        runtime: &str,
        version: &str,
        target: &str,
        failing: &[(&str, serde_json::Value)],
    ) -> Verdict {
        let mut v = Verdict::bare("CG-MEM-1", target, "6.1", "v1", Status::Fail, "");
        v.runtime = runtime.into();
        v.runtime_version = version.into();
        v.checks = failing
            .iter()
            .map(|(that, observed)| crate::expect::CheckReport {
                that: that.to_string(),
                op: "equals".into(),
                expected: "1".into(),
                observed: observed.clone(),
                ok: false,
                on_fail: crate::case::OnFail::Fail,
                why: None,
            })
            .collect();
        v.checks.push(crate::expect::CheckReport {
            that: "control.exit".into(),
            op: "equals".into(),
            expected: "0".into(),
            observed: serde_json::json!(0),
            ok: true,
            on_fail: crate::case::OnFail::Fail,
            why: None,
        });
        v
    }

    fn runc_oom() -> Difference {
        Difference {
            runtime: "runc".into(),
            case: "CG-MEM-1".into(),
            targets: "deb-*".into(),
            version: None,
            versions: Some(">=1.1.0, <1.4.0".into()),
            ends: Ends::Fail,
            checks: vec!["limited.oom_kills_seen".into()],
            seen: [("limited.oom_kills_seen".to_string(), "0..0".to_string())].into(),
            error: None,
            found: "x".into(),
        }
    }

    /// runc's CG-MEM-1 entry excuses its oom_kills_seen failure only: the
    /// same cell failing on another check, or with another value, or with
    /// another runtime version, is not excused.
    #[test]
    fn an_entry_excuses_only_the_failure_it_describes() {
        let list = vec![runc_oom()];
        let oom = serde_json::json!(0);
        let v = verdict(
            "runc",
            "runc version 1.1.5+ds1",
            "deb-6.1-cloud/v1",
            &[("limited.oom_kills_seen", oom.clone())],
        );
        assert!(explaining(&list, &v).is_some());
        let other_check = verdict(
            "runc",
            "runc version 1.1.5",
            "deb-6.1-cloud/v1",
            &[("limited.exit", serde_json::json!(1))],
        );
        assert!(explaining(&list, &other_check).is_none());
        let both = verdict(
            "runc",
            "runc version 1.1.5",
            "deb-6.1-cloud/v1",
            &[
                ("limited.oom_kills_seen", oom.clone()),
                ("limited.exit", serde_json::json!(1)),
            ],
        );
        assert!(explaining(&list, &both).is_none());
        let other_value = verdict(
            "runc",
            "runc version 1.1.5",
            "deb-6.1-cloud/v1",
            &[("limited.oom_kills_seen", serde_json::json!(2))],
        );
        assert!(explaining(&list, &other_value).is_none());
        let newer = verdict(
            "runc",
            "runc version 1.4.1",
            "deb-6.1-cloud/v1",
            &[("limited.oom_kills_seen", oom.clone())],
        );
        assert!(explaining(&list, &newer).is_none());
        let host = verdict(
            "runc",
            "runc version 1.1.5",
            "host",
            &[("limited.oom_kills_seen", oom.clone())],
        );
        assert!(explaining(&list, &host).is_none());
        let mut error = verdict("runc", "runc version 1.1.5", "deb-6.1-cloud/v1", &[]);
        error.status = Status::Error;
        error.detail = "create timed out".into();
        assert!(explaining(&list, &error).is_none());
        // Covered but not described: stale, naming the trial.
        let found = stale(&list, &[other_check]);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].1, ["deb-6.1-cloud/v1/runc::CG-MEM-1 fail"]);
        // A skip judged nothing: not stale.
        let mut skipped = verdict("runc", "runc version 1.1.5", "deb-6.1-cloud/v1", &[]);
        skipped.status = Status::Skip;
        assert!(stale(&list, &[skipped]).is_empty());
    }

    #[test]
    fn versions_are_read_from_what_runtimes_print() {
        for (text, v) in [
            ("runc version 1.1.5+ds1", "1.1.5"),
            ("crun version 1.8.1", "1.8.1"),
            ("youki version: 0.7.0", "0.7.0"),
            ("kcell-oci version 0.1.0\ncommit: x", "0.1.0"),
        ] {
            assert_eq!(
                version_of(text).map(|v| v.to_string()).as_deref(),
                Some(v),
                "{text}"
            );
        }
        assert_eq!(version_of("no version"), None);
    }
}
