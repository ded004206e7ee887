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

/// One runtime asked for: its name and, for runtimes other than kcell,
/// where its binary is (None: not found here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// kcell, runc, ... or the user's name.
    pub name: String,
    /// The binary (kcell's is the host target's kcell-oci, known later).
    pub path: Option<PathBuf>,
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
        everywhere: true,
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

/// The runtimes of `selection` (KCELL_RUNTIMES), or the default.
pub fn wanted(selection: Option<&str>, cache: &Path) -> Vec<Wanted> {
    match selection.map(str::trim).filter(|s| !s.is_empty()) {
        None => std::iter::once("kcell")
            .chain(REFERENCES.iter().copied())
            .map(|n| match n.split_once('@') {
                Some((name, l)) => Wanted {
                    everywhere: false,
                    ..line(n, name, l, cache)
                },
                None => Wanted {
                    name: n.to_string(),
                    path: (n != "kcell").then(|| locate(n, cache)).flatten(),
                    everywhere: n == "kcell",
                    missing: None,
                },
            })
            .collect(),
        Some(list) => list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|item| match (item.split_once('='), item.split_once('@')) {
                (Some((name, path)), _) => Wanted {
                    name: name.to_string(),
                    path: Some(PathBuf::from(path)),
                    everywhere: true,
                    missing: None,
                },
                (None, Some((name, l))) => line(item, name, l, cache),
                (None, None) => Wanted {
                    name: item.to_string(),
                    path: (item != "kcell").then(|| locate(item, cache)).flatten(),
                    everywhere: true,
                    missing: None,
                },
            })
            .collect(),
    }
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
        let w = wanted(None, Path::new("/dev/null/kcell-cache"));
        let names: Vec<&str> = w.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(names, ["kcell", "runc@sid", "crun@sid", "youki"]);
        assert!(runs_on(&w[0], false));
        assert!(!runs_on(&w[1], false) && runs_on(&w[1], true));
    }

    #[test]
    fn a_runtime_of_ones_own_by_path() {
        let w = wanted(Some("kcell,mine=/opt/myrt"), Path::new("/x"));
        assert_eq!(w[1].name, "mine");
        assert_eq!(w[1].path.as_deref(), Some(Path::new("/opt/myrt")));
        assert!(w.iter().all(|w| w.everywhere));
    }

    #[test]
    fn a_line_is_named_with_its_family_and_an_unknown_one_says_why() {
        assert_eq!(family("runc@sid"), "runc");
        assert_eq!(family("crun"), "crun");
        let w = wanted(Some("runc@potato"), Path::new("/nonexistent"));
        assert_eq!(w[0].name, "runc@potato");
        assert_eq!(w[0].path, None);
        let why = w[0].missing.as_deref().unwrap_or_default();
        assert!(
            why.contains("'runc@potato' is not in vm/runtimes.toml"),
            "{why}"
        );
    }
}
