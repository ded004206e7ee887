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

mod check;
pub mod container;
pub mod limits;
mod registry;

pub use check::{Comparison, Expect, OnFail, Operand, COMPARISONS};
pub use registry::{FixtureName, MeasureKind};

use serde::Deserialize;

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
    /// Every runtime (default), or kcell's own commands only.
    #[serde(default)]
    pub scope: Scope,
    /// Requirements probed before anything runs.
    #[serde(default)]
    pub requires: Requires,
    /// Host-side fixtures, by name.
    #[serde(default)]
    pub fixtures: Vec<FixtureName>,
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

/// Where a run's command runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunOn {
    /// In a container of the runtime under test.
    #[default]
    Container,
    /// As a plain process on the target, outside any container: the
    /// control that sees what a container must not.
    Host,
}

/// One run: a container (or a host process, an exec into a held run, a
/// command of kcell's own CLI) and what it does.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct Run {
    /// Prefix of this run's observations.
    pub name: String,
    /// Container (default) or host.
    #[serde(default)]
    pub on: RunOn,
    /// The command (`{var}` replaced).
    #[serde(default)]
    pub command: Vec<String>,
    /// Run the command in this held run's container (the runtime's exec).
    #[serde(default)]
    pub exec: Option<String>,
    /// Instead of a container: a command of kcell's own CLI, e.g. `["ps"]`
    /// (cases of scope "kcell" only). Every container run has an ID,
    /// `{<run>.id}`.
    #[serde(default)]
    pub kcell: Vec<String>,
    /// A container of kcell's CLI from this image of its store (scope "kcell").
    #[serde(default)]
    pub image: Option<String>,
    /// More flags of kcell's `run` (scope "kcell"): bridges, --dns, ...
    #[serde(default)]
    pub kcell_args: Vec<String>,
    /// Run the runtime as this uid (and gid): a rootless container.
    #[serde(default)]
    pub as_user: Option<u32>,
    /// The command prints KCELL_READY and then waits for stdin to close; the
    /// fixtures and measurements observe while it waits.
    #[serde(default)]
    pub hold: bool,
    /// Measurements taken while the run holds.
    #[serde(default)]
    pub measure: Vec<Measure>,
    /// Stay held after this run's observations, until the case ends, so
    /// later runs share the machine with it (and can measure it).
    #[serde(default)]
    pub keep: bool,
    /// End a held run by SIGKILL to kcell's runtime process instead of
    /// closing stdin (scope "kcell"): the crash cleanup must survive.
    #[serde(default)]
    pub kill_runtime: bool,
    /// Seconds this run may take (default: the case's timeout).
    #[serde(default)]
    pub timeout: Option<u64>,
    /// The container may not even start under its limits (64k of memory):
    /// that is then the observed outcome (`<run>.outcome = "not started"`,
    /// with the runtime's words), not an error, and the harness watches the
    /// cgroup's OOM counter from before the create on (`<run>.oom_kills_seen`).
    #[serde(default)]
    pub may_not_start: bool,
    /// The container.
    #[serde(flatten)]
    pub container: container::Container,
}

/// What a run is, decided once from its fields (the loader checks that
/// they agree): every layer asks [`Run::kind`], none re-derives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKind {
    /// A new container of the runtime under test (of kcell's CLI, in a
    /// case of scope "kcell").
    Container,
    /// A plain process on the target, outside any container: the control.
    Host,
    /// A process in a held run's container (the runtime's exec).
    Exec,
    /// A command of kcell's own CLI that is not a container (`kcell = [...]`).
    KcellCommand,
}

impl Run {
    /// The run's kind.
    pub fn kind(&self) -> RunKind {
        if !self.kcell.is_empty() {
            RunKind::KcellCommand
        } else if self.on == RunOn::Host {
            RunKind::Host
        } else if self.exec.is_some() {
            RunKind::Exec
        } else {
            RunKind::Container
        }
    }

    /// Whether the run needs kcell's own CLI (its commands, images, flags,
    /// or a kill of its runtime process): scope "kcell" only.
    pub fn uses_kcell_cli(&self) -> bool {
        self.kind() == RunKind::KcellCommand
            || self.image.is_some()
            || !self.kcell_args.is_empty()
            || self.kill_runtime
    }
}

/// Whether a case runs on every runtime or exercises kcell's own commands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// A behaviour of the kernel every OCI runtime should show.
    #[default]
    Any,
    /// kcell's own commands (images, ps, exec of its CLI, gc, bridges).
    Kcell,
}

/// A host-side measurement taken during a held run (see probe.rs).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Measure {
    /// What is measured (see observe::measure).
    pub kind: MeasureKind,
    /// Seconds to measure over, where the probe measures a rate.
    #[serde(default)]
    pub seconds: Option<f64>,
    /// Prefix for this measurement's observations (default: the kind).
    #[serde(default)]
    pub name: Option<String>,
    /// Measure these held runs together (default: this run alone).
    #[serde(default)]
    pub runs: Vec<String>,
    /// `cpu_share`: the cpu.shares each of `runs` asked for. On cgroup v2
    /// the weights the runtime wrote are then named by the conversion
    /// they follow (a reading, not a check of the kernel).
    #[serde(default)]
    pub shares: Vec<u64>,
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

/// A run flattens its container's keys, which serde then cannot check:
/// the raw tables are checked here instead.
fn check_run_keys(text: &str) -> Result<(), Problem> {
    let Ok(raw) = text.parse::<toml::Table>() else {
        return Ok(());
    };
    let known = run_keys();
    for run in raw
        .get("run")
        .and_then(|r| r.as_array())
        .into_iter()
        .flatten()
    {
        for key in run.as_table().into_iter().flat_map(|t| t.keys()) {
            if !known.contains(key) {
                return Err((
                    find_line(text, key),
                    format!(
                        "unknown field `{key}` of a run: known are {}",
                        known.join(", ")
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The line of the value a message names in quotes (`size '10x' ...`),
/// at or after `from`: a run's container is flattened into it, and serde
/// then places a bad value at its run's table, not at its own line.
fn value_line(text: &str, message: &str, from: usize) -> usize {
    let quoted = message
        .split_once('\'')
        .and_then(|(_, rest)| rest.split_once('\''))
        .map(|(value, _)| value)
        .filter(|v| !v.is_empty());
    let Some(value) = quoted else {
        return from;
    };
    text.lines()
        .enumerate()
        .skip(from.saturating_sub(1))
        .find(|(_, l)| l.contains(&format!("\"{value}\"")))
        .map_or(from, |(i, _)| i + 1)
}

/// The keys a run may have: its own and its container's, read from the
/// types themselves (a run serialised has every field), so no list is kept
/// by hand beside them.
fn run_keys() -> Vec<String> {
    let minimal: Result<Run, _> = toml::from_str("name = \"x\"\ncommand = [\"x\"]");
    let mut keys: Vec<String> = minimal
        .ok()
        .and_then(|r| serde_json::to_value(r).ok())
        .and_then(|v| v.as_object().map(|o| o.keys().cloned().collect()))
        .unwrap_or_default();
    keys.sort();
    keys
}

/// A problem at a line of the case file.
type Problem = (usize, String);

impl Case {
    /// Parses a case from TOML text; `file` names it in errors.
    pub fn parse(text: &str, file: &Path) -> Result<Case, CaseError> {
        let err = |(line, message): Problem| CaseError::Parse {
            file: file.to_path_buf(),
            line,
            message,
        };
        let mut case: Case = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(0, |s| line_of(text, s.start));
            err((value_line(text, e.message(), line), e.message().to_string()))
        })?;
        check_run_keys(text).map_err(err)?;
        case.file = file.to_path_buf();
        // A case lives in cases/<ID>.toml: the runner finds a case by its file name.
        if let Some(stem) = file.file_stem().and_then(|s| s.to_str()) {
            if stem != case.id && file.extension().is_some_and(|x| x == "toml") {
                return Err(err((
                    find_line(text, "id"),
                    format!(
                        "id '{}' does not match the file name: a case lives in <ID>.toml",
                        case.id
                    ),
                )));
            }
        }
        if case.runs.is_empty() {
            return Err(err((0, "a case needs at least one [[run]]".into())));
        }
        let mut names = std::collections::BTreeSet::new();
        for run in &case.runs {
            let at = find_line(text, &format!("\"{}\"", run.name));
            if !names.insert(run.name.as_str()) {
                return Err(err((at, format!("run name '{}' is used twice", run.name))));
            }
            case.check_run(run).map_err(|message| err((at, message)))?;
        }
        Ok(case)
    }

    /// What the loader checks of one run beyond its types.
    fn check_run(&self, run: &Run) -> Result<(), String> {
        let name = &run.name;
        // Runs and fixtures share the `{name.key}` namespace.
        if self.fixtures.iter().any(|f| f.as_str() == name) {
            return Err(format!(
                "run name '{name}' is also a fixture's: their {{{name}.*}} variables would clash"
            ));
        }
        if run.command.is_empty() == run.kcell.is_empty() {
            return Err(format!("run '{name}' needs either a command (a container, a host process or an exec) or kcell (a command of kcell's CLI), not both"));
        }
        if run.uses_kcell_cli() && self.scope != Scope::Kcell {
            return Err(format!("run '{name}' uses kcell's own CLI (kcell, image, kcell_args or kill_runtime): the case needs scope = \"kcell\""));
        }
        if let Some(problem) = run.container.problem() {
            return Err(format!("run '{name}': {problem}"));
        }
        let held_and_kept = |owner: &str| {
            self.runs
                .iter()
                .any(|r| r.name == owner && r.hold && r.keep)
        };
        if let Some(target) = run.exec.as_deref().filter(|t| !held_and_kept(t)) {
            return Err(format!(
                "run '{name}' execs into '{target}', which is no earlier held and kept run"
            ));
        }
        if let Some((ns, owner)) = run
            .container
            .joined()
            .into_iter()
            .find(|(_, o)| !held_and_kept(o))
        {
            return Err(format!(
                "run '{name}' joins the {ns} namespace of '{owner}', which is no held and kept run"
            ));
        }
        if run.keep && !run.hold {
            return Err(format!(
                "run '{name}' keeps but does not hold: only a held run can be kept"
            ));
        }
        if !run.measure.is_empty() && !run.hold {
            return Err(format!(
                "run '{name}' measures but does not hold: measurements happen while the run holds"
            ));
        }
        Ok(())
    }

    /// Reads and parses one case file.
    pub fn load(file: &Path) -> Result<Case, CaseError> {
        let text =
            std::fs::read_to_string(file).map_err(|e| CaseError::Read(file.to_path_buf(), e))?;
        Case::parse(&text, file)
    }
}

/// Whether `path` names a case file: `<ID>.toml`, the ID in capitals,
/// digits and dashes (cases/differences.toml is not one).
pub fn is_case_file(path: &Path) -> bool {
    path.extension().is_some_and(|x| x == "toml")
        && path.file_stem().and_then(|s| s.to_str()).is_some_and(|s| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// The case files under `dir`, sorted by name (= by case ID).
pub fn case_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| is_case_file(p))
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
    use serde_json::Value;

    const GOOD: &str = r#"
id = "NS-UTS-1"
title = "t"
fixtures = ["host_hostname"]
[requires]
root = true
[[run]]
name = "isolated"
hostname = "container"
namespaces = { ipc = "host" }
limits = { cpus = 0.2 }
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
        let c = &case.runs[0].container;
        assert_eq!(c.hostname.as_deref(), Some("container"));
        assert_eq!(c.limits.cpus, Some(0.2));
        assert!(!c.new_namespaces().contains(&"ipc"));
        assert!(
            matches!(case.expects[0].comparison, Comparison::Equals(Operand::Literal(Value::String(ref s))) if s == "container")
        );
        assert!(
            matches!(case.expects[1].comparison, Comparison::Approx { operand: Operand::Ref { ref of, times: Some(t), .. }, tolerance: Some(_), .. } if of == "control.exit" && t == 2.0)
        );
        assert_eq!(case.timeout, 60);
    }

    #[rstest]
    #[case::unknown_key("id = \"X\"\ntitle = \"t\"\nbogus = 1\n", 3, "unknown field `bogus`")]
    #[case::wrong_type("id = \"X\"\ntitle = 5\n", 2, "invalid type")]
    #[case::no_runs("id = \"X\"\ntitle = \"t\"\n", 0, "at least one [[run]]")]
    #[case::two_comparisons("id = \"X\"\ntitle = \"t\"\n[[run]]\nname = \"a\"\ncommand = [\"true\"]\n[[expect]]\nthat = \"a.exit\"\nequals = 0\nat_least = 0\n", 7, "2 comparisons")]
    #[case::approx_without_tolerance("id = \"X\"\ntitle = \"t\"\n[[run]]\nname = \"a\"\ncommand = [\"true\"]\n[[expect]]\nthat = \"a.x\"\napprox = 1\n", 7, "needs tolerance")]
    #[case::unknown_fixture("id = \"X\"\ntitle = \"t\"\nfixtures = [\"nope\"]\n[[run]]\nname = \"a\"\ncommand = [\"true\"]\n", 3, "unknown variant `nope`, expected one of `host_hostname`")]
    #[case::no_command(
        "id = \"X\"\ntitle = \"t\"\n[[run]]\nname = \"a\"\n",
        4,
        "either a command"
    )]
    #[case::run_named_as_fixture("id = \"X\"\ntitle = \"t\"\nfixtures = [\"scratch\"]\n[[run]]\nname = \"scratch\"\ncommand = [\"true\"]\n", 3, "also a fixture's")]
    #[case::duplicate_run("id = \"X\"\ntitle = \"t\"\n[[run]]\nname = \"a\"\ncommand = [\"true\"]\n[[run]]\nname = \"a\"\ncommand = [\"true\"]\n", 4, "used twice")]
    #[case::unknown_run_field("id = \"X\"\ntitle = \"t\"\n[[run]]\nname = \"a\"\ncommand = [\"true\"]\nargs = [\"--x\"]\n", 6, "unknown field `args` of a run")]
    #[case::kcell_cli_outside_its_scope(
        "id = \"X\"\ntitle = \"t\"\n[[run]]\nname = \"a\"\nkcell = [\"ps\"]\n",
        4,
        "scope = \"kcell\""
    )]
    #[case::exec_into_nothing_held(
        "id = \"X\"\ntitle = \"t\"\n[[run]]\nname = \"a\"\nexec = \"b\"\ncommand = [\"true\"]\n",
        4,
        "no earlier held and kept run"
    )]
    #[case::unknown_namespace("id = \"X\"\ntitle = \"t\"\n[[run]]\nname = \"a\"\ncommand = [\"true\"]\nnamespaces = { bogus = \"new\" }\n", 4, "unknown namespace 'bogus'")]
    #[case::bad_memory_limit("id = \"X\"\ntitle = \"t\"\n[[run]]\nname = \"a\"\ncommand = [\"true\"]\n\nlimits = { memory = \"10q\" }\n", 7, "size '10q' is not allowed")]
    #[case::bad_throttle("id = \"X\"\ntitle = \"t\"\n[[run]]\nname = \"a\"\ncommand = [\"true\"]\nlimits = { read_bps = [\"{block_device.majmin}\"] }\n", 6, "throttle '{block_device.majmin}' is not allowed")]
    #[case::measure_without_hold("id = \"X\"\ntitle = \"t\"\n[[run]]\nname = \"a\"\ncommand = [\"true\"]\nmeasure = [{ kind = \"cgroup_stats\" }]\n", 4, "does not hold")]
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
