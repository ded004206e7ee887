//! What the suite found: documented differences of a runtime (or kernel)
//! from what a case expects, in `cases/differences.toml`. A trial that
//! fails or errors as one of them describes is reported as the known
//! difference it is (its verdict stays fail or error in every report); any
//! other failure fails the trial. A listed difference that no longer
//! shows is said so, so the list cannot rot.

use serde::Deserialize;
use std::path::Path;

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

/// The differences listed in `path` (none when it is missing).
pub fn load(path: &Path) -> Result<Vec<Difference>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str::<File>(&text)
            .map(|f| f.differences)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// The difference that explains `case` failing with `runtime` (of
/// `version`) on `target`, if one does.
pub fn explains<'a>(
    list: &'a [Difference],
    runtime: &str,
    version: &str,
    target: &str,
    case: &str,
) -> Option<&'a Difference> {
    list.iter().find(|d| {
        (d.runtime == "*" || d.runtime == runtime)
            && d.case == case
            && d.targets.split(',').any(|p| glob(p.trim(), target))
            && d.version.as_deref().is_none_or(|v| version.contains(v))
    })
}

/// Whether `name` matches `pattern`, in which `*` stands for any run of
/// characters (and nothing else is special).
fn glob(pattern: &str, name: &str) -> bool {
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

    #[test]
    fn matching_by_runtime_version_and_target() {
        let list = vec![Difference {
            runtime: "runc".into(),
            case: "NS-TIME-1".into(),
            targets: "deb-*".into(),
            version: Some("1.1.".into()),
            found: "x".into(),
        }];
        assert!(explains(
            &list,
            "runc",
            "runc version 1.1.5+ds1",
            "deb-6.1-cloud/v1",
            "NS-TIME-1"
        )
        .is_some());
        assert!(explains(
            &list,
            "runc",
            "runc version 1.2.0",
            "deb-6.1-cloud/v1",
            "NS-TIME-1"
        )
        .is_none());
        assert!(explains(&list, "runc", "runc version 1.1.5", "host", "NS-TIME-1").is_none());
        assert!(explains(
            &list,
            "crun",
            "crun version 1.8.1",
            "deb-6.1-cloud/v1",
            "NS-TIME-1"
        )
        .is_none());
    }
}
