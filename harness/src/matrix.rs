//! The matrix's axes: which runtimes run on which targets. KCELL_RUNTIMES
//! names them (kcell, runc, crun, youki, runsc: the binary on PATH; a line
//! of vm/runtimes.toml as NAME@LINE, e.g. runc@sid, fetched into kcell's
//! cache; or NAME=/path for a runtime of one's own); by default kcell runs
//! on every target and the reference runtimes on the host and on the
//! manifest's reference targets, so the default matrix stays fast.

use std::path::{Path, PathBuf};

/// The reference runtimes of the default matrix: today's runc and crun
/// (Debian sid's lines, fetched) and youki. The 2023 lines are one variable
/// away (KCELL_RUNTIMES=kcell,runc@bookworm,crun@bookworm,youki); runsc
/// is not a default: where it starts a container at all (a v1 guest), most
/// of the suite's readings are not explained for it yet.
pub const REFERENCES: &[&str] = &["runc@sid", "crun@sid", "youki"];

/// One runtime asked for: its name and where its binary is (None: not
/// found here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// kcell, runc, ... or the user's name.
    pub name: String,
    /// The binary (kcell's: its kcell-oci, when kcell's binary was found).
    pub path: Option<PathBuf>,
    /// A mutant of the kill matrix: (base runtime, mutation). Only the kill
    /// matrix makes these; a user's runtime is never one.
    pub mutant: Option<(String, String)>,
    /// Run on every target (named by KCELL_RUNTIMES), not only the reference ones.
    pub everywhere: bool,
    /// Why there is no binary, when fetching its line failed.
    pub missing: Option<String>,
}

/// A runtime's family: "runc" of "runc@sid" (differences and expected
/// skips name a family, with the versions they cover, or one line).
pub fn family(name: &str) -> &str {
    name.split_once('@').map_or(name, |(f, _)| f)
}

/// Whether an entry of differences.toml or expected-skips.toml naming
/// `entry` ("*", a family such as "runc", or one line "runc@sid") is about
/// `runtime`.
pub fn names_runtime(entry: &str, runtime: &str) -> bool {
    entry == "*" || entry == runtime || entry == family(runtime)
}

/// NAME@LINE: the line's binary, fetched (once) into `cache`.
fn line(item: &str, name: &str, line: &str, cache: &Path) -> Wanted {
    let fetched = crate::vm::runtimes::manifest()
        .and_then(|m| m.find(name, line).cloned())
        .and_then(|l| crate::vm::runtimes::fetch(cache, &l));
    let (path, missing) = match fetched {
        Ok(f) => (Some(f.binary), None),
        Err(e) => (None, Some(e)),
    };
    Wanted {
        name: item.to_string(),
        path,
        mutant: None,
        everywhere: true,
        missing,
    }
}

/// A runtime found by name: kcell by the binary given, the others on PATH.
fn named(name: &str, cache: &Path, kcell: Option<&Path>, everywhere: bool) -> Wanted {
    let (path, missing) = if name == "kcell" {
        match kcell {
            Some(k) => (Some(k.with_file_name("kcell-oci")), None),
            None => (
                None,
                Some(
                    "kcell's binary was not given (kcell-conformance --kcell PATH, or KCELL_BIN)"
                        .to_string(),
                ),
            ),
        }
    } else {
        (locate(name, cache), None)
    };
    Wanted {
        name: name.to_string(),
        path,
        mutant: None,
        everywhere,
        missing,
    }
}

/// Where a known runtime is: on PATH, or youki in kcell's cache.
pub fn locate(name: &str, cache: &Path) -> Option<PathBuf> {
    if name == "youki" {
        let cached = cache.join("youki-0.7.0/bin/youki");
        if cached.is_file() {
            return Some(cached);
        }
    }
    for dir in [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ] {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return Some(p);
        }
    }
    None
}

/// The runtimes of `selection` (KCELL_RUNTIMES), or the default; `kcell`
/// is kcell's CLI binary when it was found. A name with `+` is refused:
/// it marks the kill matrix's mutants in every report.
pub fn wanted(
    selection: Option<&str>,
    cache: &Path,
    kcell: Option<&Path>,
) -> Result<Vec<Wanted>, String> {
    let Some(list) = selection.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(std::iter::once("kcell")
            .chain(REFERENCES.iter().copied())
            .map(|n| match n.split_once('@') {
                Some((name, l)) => Wanted {
                    everywhere: false,
                    ..line(n, name, l, cache)
                },
                None => named(n, cache, kcell, n == "kcell"),
            })
            .collect());
    };
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| {
            let name = item.split_once('=').map_or(item, |(n, _)| n);
            if name.contains('+') || name.is_empty() {
                return Err(format!(
                    "runtime name '{name}' is not allowed: a name without '+' ('+' marks the kill matrix's mutants), e.g. {}",
                    name.replace('+', "-")
                ));
            }
            Ok(match (item.split_once('='), item.split_once('@')) {
                (Some((name, path)), _) => Wanted {
                    name: name.to_string(),
                    path: Some(PathBuf::from(path)),
                    mutant: None,
                    everywhere: true,
                    missing: None,
                },
                (None, Some((name, l))) => line(item, name, l, cache),
                (None, None) => named(item, cache, kcell, true),
            })
        })
        .collect()
}

/// Whether `w` runs on a target that is (or is not) a reference target.
pub fn runs_on(w: &Wanted, reference_target: bool) -> bool {
    w.everywhere || reference_target
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_puts_kcell_everywhere_and_references_on_reference_targets() {
        // A cache that cannot be made: the lines are named, never fetched.
        let w = wanted(None, Path::new("/dev/null/kcell-cache"), None).expect("default");
        let names: Vec<&str> = w.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(names, ["kcell", "runc@sid", "crun@sid", "youki"]);
        assert!(runs_on(&w[0], false));
        assert!(!runs_on(&w[1], false) && runs_on(&w[1], true));
    }

    #[test]
    fn a_runtime_of_ones_own_by_path() {
        let kcell = Path::new("/opt/kcell/kcell");
        let w = wanted(Some("kcell,mine=/opt/myrt"), Path::new("/x"), Some(kcell)).expect("two");
        assert_eq!(w[1].name, "mine");
        assert_eq!(w[1].path.as_deref(), Some(Path::new("/opt/myrt")));
        assert_eq!(
            w[0].path.as_deref(),
            Some(Path::new("/opt/kcell/kcell-oci"))
        );
        assert!(w.iter().all(|w| w.everywhere && w.mutant.is_none()));
        let without = wanted(Some("kcell"), Path::new("/x"), None).expect("one");
        assert!(without[0]
            .missing
            .as_deref()
            .is_some_and(|m| m.contains("--kcell")));
    }

    #[test]
    fn a_name_with_a_plus_is_refused_naming_it() {
        let e = wanted(Some("crun+patched=/x"), Path::new("/x"), None).expect_err("refused");
        assert!(
            e.contains("'crun+patched' is not allowed") && e.contains("crun-patched"),
            "{e}"
        );
    }

    #[test]
    fn a_line_is_named_with_its_family_and_an_unknown_one_says_why() {
        assert_eq!(family("runc@sid"), "runc");
        assert_eq!(family("crun"), "crun");
        let w = wanted(Some("runc@potato"), Path::new("/nonexistent"), None).expect("named");
        assert_eq!(w[0].name, "runc@potato");
        assert_eq!(w[0].path, None);
        let why = w[0].missing.as_deref().unwrap_or_default();
        assert!(
            why.contains("'runc@potato' is not in vm/runtimes.toml"),
            "{why}"
        );
    }
}
