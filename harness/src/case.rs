//! The declarative case format: one TOML file per SPEC.md behaviour.
//!
//! ```toml
//! id = "NS-UTS-1"                     # the SPEC.md ID
//! title = "A new UTS namespace gets its own hostname"
//! source = ["000", "001"]             # seed documents
//! fixtures = ["host_hostname"]        # host-side objects (see fixture.rs)
//!
//! [requires]                          # probed on the running kernel; unmet = skip
//! root = true
//! namespaces = ["uts"]
//!
//! [[run]]                             # one container run; observations are "<name>.<key>"
//! name = "isolated"
//! args = ["--hostname", "container"]  # kcell run flags
//! command = ["sh", "-c", "echo hostname=$(hostname)"]
//!
//! [[expect]]                          # checked against the observations
//! that = "isolated.hostname"
//! equals = "container"
//! why = "the name set in the new namespace"
//! ```

use serde::Deserialize;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Errors reading a case file: the file, the line and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    /// The file could not be read.
    #[error("{0}: {1}")]
    Read(PathBuf, std::io::Error),
    /// TOML or schema error at a line.
    #[error("{file}:{line}: {message}")]
    Parse {
        /// The case file.
        file: PathBuf,
        /// 1-based line (0 when unknown).
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// A case, as written in its file.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// SPEC.md ID, e.g. "CG-CPU-1".
    pub id: String,
    /// One line: the behaviour.
    pub title: String,
    /// Seed documents the behaviour comes from.
    #[serde(default)]
    pub source: Vec<String>,
    /// A note shown in reports (e.g. what outcome a case records and why).
    #[serde(default)]
    pub note: Option<String>,
    /// The observation the matrix shows in this case's cells (e.g. the
    /// measured share), and how: "percent", "mib_s" or "raw".
    #[serde(default)]
    pub headline: Option<Headline>,
    /// Seconds the whole case may take (default 60: TCG guests are slow).
    #[serde(default = "default_timeout")]
    pub timeout: u64,
    /// Requirements probed before anything runs.
    #[serde(default)]
    pub requires: Requires,
    /// Host-side fixtures, by name.
    #[serde(default)]
    pub fixtures: Vec<String>,
    /// Container runs, in order.
    #[serde(default, rename = "run")]
    pub runs: Vec<Run>,
    /// Checks on the observations.
    #[serde(default, rename = "expect")]
    pub expects: Vec<Expect>,
    /// Where the case was read from (set by the loader).
    #[serde(skip_deserializing)]
    pub file: PathBuf,
}

fn default_timeout() -> u64 {
    60
}

/// The key observation of a case, for the matrix.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Headline {
    /// The observation's key.
    pub key: String,
    /// "percent" (0.2 -> 20.0%), "mib_s" (bytes/s -> 1.00 MiB/s) or "raw".
    #[serde(default)]
    pub format: Option<String>,
    /// A label before the value (e.g. "oom_kill=").
    #[serde(default)]
    pub label: Option<String>,
}

/// What a case needs from the kernel and the machine.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Requires {
    /// Must run as root.
    #[serde(default)]
    pub root: bool,
    /// Namespaces that must exist (/proc/self/ns/NAME).
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// "v1" or "v2": the cgroup version kcell uses on this host.
    #[serde(default)]
    pub cgroup: Option<String>,
    /// Controllers that must be usable with that version.
    #[serde(default)]
    pub controllers: Vec<String>,
    /// Files that must exist in a controller's root, as "controller/file".
    #[serde(default)]
    pub cgroup_files: Vec<String>,
    /// Kernel options that must be y or m (from /proc/config.gz or /boot/config-*).
    #[serde(default)]
    pub kernel_config: Vec<String>,
    /// At least this many online CPUs.
    #[serde(default)]
    pub min_cpus: Option<u32>,
    /// Swap must be active.
    #[serde(default)]
    pub swap: bool,
    /// An unprivileged user may create user namespaces.
    #[serde(default)]
    pub unprivileged_userns: bool,
    /// A block device for I/O throttling must be available.
    #[serde(default)]
    pub block_device: bool,
}

/// Which root a run uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RootChoice {
    /// The busybox image the harness built.
    #[default]
    Image,
    /// The host's own `/` (only without a mnt namespace: the control runs).
    Host,
}

/// One container run.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Run {
    /// Prefix of this run's observations.
    pub name: String,
    /// `kcell run` flags; `{var}` is replaced (see runner.rs).
    #[serde(default)]
    pub args: Vec<String>,
    /// The root.
    #[serde(default)]
    pub rootfs: RootChoice,
    /// Run from this image of the store instead (`{var}` replaced), e.g.
    /// `"{image.ref}"` of the image fixture.
    #[serde(default)]
    pub image: Option<String>,
    /// The command inside (a container run).
    #[serde(default)]
    pub command: Vec<String>,
    /// Instead of a container: a runtime command, e.g. `["exec", "{held.id}",
    /// "kcell-probe", "nsinfo"]` or `["ps"]`. Every container run has an ID,
    /// `{<run>.id}`, given to it with --name.
    #[serde(default)]
    pub kcell: Vec<String>,
    /// Run the runtime as this uid (and gid), e.g. 1000 for unprivileged cases.
    #[serde(default)]
    pub as_user: Option<u32>,
    /// The command prints KCELL_READY and then waits for stdin to close; the
    /// fixtures and measurements observe while it waits.
    #[serde(default)]
    pub hold: bool,
    /// Host-side measurements taken while the run holds.
    #[serde(default)]
    pub measure: Vec<Measure>,
    /// Stay held after this run's observations, until the case ends, so
    /// later runs share the machine with it (and can measure it).
    #[serde(default)]
    pub keep: bool,
    /// End a held run by SIGKILL to the runtime instead of closing stdin:
    /// the crash that cleanup after the fact must survive.
    #[serde(default)]
    pub kill_runtime: bool,
    /// Seconds this run may take (default: the case's timeout).
    #[serde(default)]
    pub timeout: Option<u64>,
}

/// A host-side measurement taken during a held run (see probe.rs).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Measure {
    /// The probe's name.
    pub probe: String,
    /// Seconds to measure over, where the probe measures a rate.
    #[serde(default)]
    pub seconds: Option<f64>,
    /// Prefix for this measurement's observations (default: the probe's name).
    #[serde(default)]
    pub name: Option<String>,
    /// Measure these held runs together (default: this run alone).
    #[serde(default)]
    pub runs: Vec<String>,
}

/// The right-hand side of a check: a literal, or another observation
/// (optionally scaled: `{ of = "control.rate", times = 0.2 }`).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(untagged)]
pub enum Operand {
    /// Another observation, times a factor, plus an offset.
    Ref {
        /// The observation's key.
        of: String,
        /// Multiplier (default 1).
        #[serde(default)]
        times: Option<f64>,
        /// Added after multiplying (default 0).
        #[serde(default)]
        plus: Option<f64>,
    },
    /// A literal value.
    Literal(Value),
}

/// What a failed check makes of the verdict.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFail {
    /// The case fails.
    #[default]
    Fail,
    /// The case is inconclusive: the control showed the machine could not
    /// have told the difference.
    Inconclusive,
}

/// One check of an observation. Exactly one comparison is given.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The observation's key, "<run>.<key>" or "<fixture>.<key>".
    pub that: String,
    /// Equal (numbers compare numerically).
    #[serde(default)]
    pub equals: Option<Operand>,
    /// Not equal.
    #[serde(default)]
    pub not_equals: Option<Operand>,
    /// >= (numbers).
    #[serde(default)]
    pub at_least: Option<Operand>,
    /// <= (numbers).
    #[serde(default)]
    pub at_most: Option<Operand>,
    /// Substring of the observation's text.
    #[serde(default)]
    pub contains: Option<Operand>,
    /// Not a substring.
    #[serde(default)]
    pub not_contains: Option<Operand>,
    /// Within `tolerance` (absolute) or `tolerance_pct` (relative) of this.
    #[serde(default)]
    pub approx: Option<Operand>,
    /// Absolute tolerance for `approx`.
    #[serde(default)]
    pub tolerance: Option<f64>,
    /// Relative tolerance for `approx`, in percent.
    #[serde(default)]
    pub tolerance_pct: Option<f64>,
    /// Why this is expected, and why the tolerance is what it is.
    #[serde(default)]
    pub why: Option<String>,
    /// What a failure means.
    #[serde(default)]
    pub on_fail: OnFail,
}

impl Expect {
    /// The comparisons given, by name.
    pub fn comparisons(&self) -> Vec<(&'static str, &Operand)> {
        [
            ("equals", &self.equals),
            ("not_equals", &self.not_equals),
            ("at_least", &self.at_least),
            ("at_most", &self.at_most),
            ("contains", &self.contains),
            ("not_contains", &self.not_contains),
            ("approx", &self.approx),
        ]
        .into_iter()
        .filter_map(|(n, o)| o.as_ref().map(|o| (n, o)))
        .collect()
    }
}

/// 1-based line of byte offset `pos` in `text`.
fn line_of(text: &str, pos: usize) -> usize {
    text[..pos.min(text.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}

/// The line where `needle` first appears at or after line `from`, for errors
/// that serde cannot place (a value that is well-formed TOML but wrong).
fn find_line(text: &str, needle: &str) -> usize {
    text.find(needle).map_or(0, |p| line_of(text, p))
}

impl Case {
    /// Parses a case from TOML text; `file` names it in errors.
    pub fn parse(text: &str, file: &Path) -> Result<Case, CaseError> {
        let err = |line: usize, message: String| CaseError::Parse {
            file: file.to_path_buf(),
            line,
            message,
        };
        let mut case: Case = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(0, |s| line_of(text, s.start));
            err(line, e.message().to_string())
        })?;
        case.file = file.to_path_buf();
        // A case lives in cases/<ID>.toml: the runner finds a case by its file name.
        if let Some(stem) = file.file_stem().and_then(|s| s.to_str()) {
            if stem != case.id && file.extension().is_some_and(|x| x == "toml") {
                return Err(err(
                    find_line(text, "id"),
                    format!(
                        "id '{}' does not match the file name: a case lives in <ID>.toml",
                        case.id
                    ),
                ));
            }
        }
        if case.runs.is_empty() {
            return Err(err(0, "a case needs at least one [[run]]".into()));
        }
        let mut names = std::collections::BTreeSet::new();
        for run in &case.runs {
            // Runs and fixtures share the `{name.key}` namespace.
            if case.fixtures.contains(&run.name) {
                return Err(err(
                    find_line(text, &format!("\"{}\"", run.name)),
                    format!(
                        "run name '{}' is also a fixture's: their {{{}.*}} variables would clash",
                        run.name, run.name
                    ),
                ));
            }
            if !names.insert(run.name.as_str()) {
                return Err(err(
                    find_line(text, &format!("\"{}\"", run.name)),
                    format!("run name '{}' is used twice", run.name),
                ));
            }
            if run.command.is_empty() == run.kcell.is_empty() {
                return Err(err(find_line(text, &format!("\"{}\"", run.name)), format!("run '{}' needs either a command (a container) or kcell (a runtime command), not both", run.name)));
            }
            for m in &run.measure {
                if !crate::probe::KNOWN.contains(&m.probe.as_str()) {
                    return Err(err(
                        find_line(text, &m.probe),
                        format!(
                            "unknown probe '{}': known are {}",
                            m.probe,
                            crate::probe::KNOWN.join(", ")
                        ),
                    ));
                }
            }
            if run.keep && !run.hold {
                return Err(err(
                    find_line(text, &format!("\"{}\"", run.name)),
                    format!(
                        "run '{}' keeps but does not hold: only a held run can be kept",
                        run.name
                    ),
                ));
            }
            if !run.measure.is_empty() && !run.hold {
                return Err(err(find_line(text, &format!("\"{}\"", run.name)), format!("run '{}' measures but does not hold: measurements happen while the run holds", run.name)));
            }
        }
        for f in &case.fixtures {
            if !crate::fixture::KNOWN.contains(&f.as_str()) {
                return Err(err(
                    find_line(text, f),
                    format!(
                        "unknown fixture '{f}': known are {}",
                        crate::fixture::KNOWN.join(", ")
                    ),
                ));
            }
        }
        for e in &case.expects {
            let n = e.comparisons().len();
            if n != 1 {
                return Err(err(find_line(text, &format!("\"{}\"", e.that)), format!("check of '{}' has {n} comparisons: give exactly one of equals, not_equals, at_least, at_most, contains, not_contains, approx", e.that)));
            }
            if e.approx.is_some() && e.tolerance.is_none() && e.tolerance_pct.is_none() {
                return Err(err(
                    find_line(text, &format!("\"{}\"", e.that)),
                    format!(
                        "approx check of '{}' needs tolerance or tolerance_pct",
                        e.that
                    ),
                ));
            }
        }
        Ok(case)
    }

    /// Reads and parses one case file.
    pub fn load(file: &Path) -> Result<Case, CaseError> {
        let text =
            std::fs::read_to_string(file).map_err(|e| CaseError::Read(file.to_path_buf(), e))?;
        Case::parse(&text, file)
    }
}

/// The `*.toml` files under `dir`, sorted by name (= by case ID).
pub fn case_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Every case under `dir`, sorted; a bad file is returned as its error in
/// place, so it stops no other case.
pub fn load_dir(dir: &Path) -> Vec<Result<Case, CaseError>> {
    case_files(dir).iter().map(|f| Case::load(f)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const GOOD: &str = r#"
id = "NS-UTS-1"
title = "t"
fixtures = ["host_hostname"]
[requires]
root = true
[[run]]
name = "isolated"
args = ["--hostname", "container"]
command = ["sh", "-c", "echo hostname=$(hostname)"]
[[expect]]
that = "isolated.hostname"
equals = "container"
[[expect]]
that = "isolated.exit"
approx = { of = "control.exit", times = 2.0 }
tolerance = 0.5
"#;

    #[test]
    fn parses_a_case() {
        let case = Case::parse(GOOD, Path::new("cases/NS-UTS-1.toml")).expect("valid");
        let renamed =
            Case::parse(GOOD, Path::new("cases/OTHER.toml")).expect_err("id must match the file");
        assert!(
            renamed.to_string().contains("does not match the file name"),
            "{renamed}"
        );
        assert_eq!(case.id, "NS-UTS-1");
        assert_eq!(case.runs[0].args, vec!["--hostname", "container"]);
        assert!(
            matches!(case.expects[0].equals, Some(Operand::Literal(Value::String(ref s))) if s == "container")
        );
        assert!(
            matches!(case.expects[1].approx, Some(Operand::Ref { ref of, times: Some(t), .. }) if of == "control.exit" && t == 2.0)
        );
        assert_eq!(case.timeout, 60);
    }

    #[rstest]
    #[case::unknown_key("id = \"X\"\ntitle = \"t\"\nbogus = 1\n", 3, "unknown field `bogus`")]
    #[case::wrong_type("id = \"X\"\ntitle = 5\n", 2, "invalid type")]
    #[case::no_runs("id = \"X\"\ntitle = \"t\"\n", 0, "at least one [[run]]")]
    #[case::two_comparisons("id = \"X\"\ntitle = \"t\"\n[[run]]\nname = \"a\"\ncommand = [\"true\"]\n[[expect]]\nthat = \"a.exit\"\nequals = 0\nat_least = 0\n", 7, "2 comparisons")]
    #[case::approx_without_tolerance("id = \"X\"\ntitle = \"t\"\n[[run]]\nname = \"a\"\ncommand = [\"true\"]\n[[expect]]\nthat = \"a.x\"\napprox = 1\n", 7, "needs tolerance")]
    #[case::unknown_fixture("id = \"X\"\ntitle = \"t\"\nfixtures = [\"nope\"]\n[[run]]\nname = \"a\"\ncommand = [\"true\"]\n", 3, "unknown fixture 'nope'")]
    #[case::no_command(
        "id = \"X\"\ntitle = \"t\"\n[[run]]\nname = \"a\"\n",
        4,
        "either a command"
    )]
    #[case::run_named_as_fixture("id = \"X\"\ntitle = \"t\"\nfixtures = [\"scratch\"]\n[[run]]\nname = \"scratch\"\ncommand = [\"true\"]\n", 3, "also a fixture's")]
    #[case::duplicate_run("id = \"X\"\ntitle = \"t\"\n[[run]]\nname = \"a\"\ncommand = [\"true\"]\n[[run]]\nname = \"a\"\ncommand = [\"true\"]\n", 4, "used twice")]
    #[case::measure_without_hold("id = \"X\"\ntitle = \"t\"\n[[run]]\nname = \"a\"\ncommand = [\"true\"]\nmeasure = [{ probe = \"cgroup_stats\" }]\n", 4, "does not hold")]
    fn malformed_cases_name_file_line_and_problem(
        #[case] text: &str,
        #[case] line: usize,
        #[case] what: &str,
    ) {
        let err = Case::parse(text, Path::new("cases/X.toml")).expect_err("invalid");
        let shown = err.to_string();
        assert!(
            shown.starts_with(&format!("cases/X.toml:{line}: ")),
            "{shown}"
        );
        assert!(shown.contains(what), "{shown}");
    }
}
