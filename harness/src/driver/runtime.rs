//! The runtime under test: a name, a binary speaking the OCI command line
//! (runc's grammar), its version, and what it says it supports (its
//! `features` output, runtime-spec features.md). A case that needs what a
//! runtime lacks is skipped naming the runtime, its version and the
//! feature, read from that output, never from a list of names.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One runtime of the matrix.
#[derive(Debug, Clone)]
pub struct Runtime {
    /// Its name in trial names: kcell, runc, crun, youki, or the user's.
    pub name: String,
    /// Its binary.
    pub path: PathBuf,
    /// The first line of `--version`.
    pub version: String,
    /// `features` output, when the runtime has the command.
    pub features: Option<Value>,
    /// Why it cannot run even a minimal container on this target (its own
    /// error, from the smoke run), when it cannot.
    pub unusable: Option<String>,
}

impl Runtime {
    /// Asks the binary at `path` for its version and features.
    pub fn probe(name: &str, path: &Path) -> Result<Runtime, String> {
        let out = Command::new(path)
            .arg("--version")
            .output()
            .map_err(|e| format!("runtime {name}: {} cannot be run: {e}", path.display()))?;
        let version = String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        let features = Command::new(path)
            .arg("features")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| serde_json::from_slice(&o.stdout).ok());
        Ok(Runtime {
            name: name.to_string(),
            path: path.to_path_buf(),
            version: if version.is_empty() {
                format!("{name} (no version)")
            } else {
                version
            },
            features,
            unusable: None,
        })
    }

    fn list(&self, pointer: &str) -> Option<Vec<String>> {
        let v = self.features.as_ref()?.pointer(pointer)?;
        Some(
            v.as_array()?
                .iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect(),
        )
    }

    /// Why this runtime cannot run what `needs` lists, from its features:
    /// None when it can, or when it publishes no features (then the run
    /// itself tells).
    pub fn lacks(&self, needs: &Needs) -> Option<String> {
        let say = |what: String| {
            Some(format!(
                "{} ({}) lacks {what} (its `features` output)",
                self.name, self.version
            ))
        };
        if let Some(have) = self.list("/linux/namespaces") {
            for ns in &needs.namespaces {
                if !have.iter().any(|h| h == ns) {
                    return say(format!(
                        "the {ns} namespace: linux.namespaces lists {}",
                        have.join(", ")
                    ));
                }
            }
        }
        if let Some(have) = self.list("/mountOptions") {
            for o in &needs.mount_options {
                if !have.iter().any(|h| h == o) {
                    return say(format!("the mount option '{o}' (mountOptions)"));
                }
            }
        }
        if needs.seccomp {
            if let Some(enabled) = self
                .features
                .as_ref()
                .and_then(|f| f.pointer("/linux/seccomp/enabled"))
                .and_then(Value::as_bool)
            {
                if !enabled {
                    return say("seccomp (linux.seccomp.enabled is false)".into());
                }
            }
            if let Some(ops) = self.list("/linux/seccomp/operators") {
                for op in &needs.seccomp_operators {
                    if !ops.iter().any(|h| h == op) {
                        return say(format!("the seccomp operator {op}"));
                    }
                }
            }
        }
        None
    }
}

/// What a case's containers need of a runtime, derived from their
/// descriptions (a case asks only for what it uses).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    /// OCI namespace names.
    pub namespaces: Vec<String>,
    /// Mount options.
    pub mount_options: Vec<String>,
    /// A seccomp filter.
    pub seccomp: bool,
    /// Seccomp argument operators.
    pub seccomp_operators: Vec<String>,
}

impl Needs {
    /// What the containers of `runs` need.
    pub fn of(runs: &[crate::case::Run]) -> Needs {
        let mut n = Needs::default();
        for r in runs
            .iter()
            .filter(|r| r.kind() == crate::case::RunKind::Container)
        {
            let c = &r.container;
            for ns in c
                .new_namespaces()
                .into_iter()
                .chain(c.joined().into_iter().map(|(n, _)| n))
            {
                let name = match ns {
                    "mnt" => "mount",
                    "net" => "network",
                    other => other,
                }
                .to_string();
                if !n.namespaces.contains(&name) {
                    n.namespaces.push(name);
                }
            }
            for m in &c.mounts {
                for o in m.options.iter().filter(|o| !o.contains('=')) {
                    if !n.mount_options.contains(o) {
                        n.mount_options.push(o.clone());
                    }
                }
            }
            if c.seccomp != crate::case::container::SeccompChoice::Unconfined {
                n.seccomp = true;
            }
            if c.seccomp == crate::case::container::SeccompChoice::DenyUserns
                && !n
                    .seccomp_operators
                    .iter()
                    .any(|o| o == "SCMP_CMP_MASKED_EQ")
            {
                n.seccomp_operators.push("SCMP_CMP_MASKED_EQ".into());
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_missing_namespace_is_named_with_the_runtime_and_its_version() {
        let rt = Runtime {
            name: "runc".into(),
            path: "/usr/sbin/runc".into(),
            version: "runc version 1.1.5".into(),
            features: Some(json!({"linux": {"namespaces": ["mount", "pid"]}})),
            unusable: None,
        };
        let needs = Needs {
            namespaces: vec!["pid".into(), "time".into()],
            ..Default::default()
        };
        let why = rt.lacks(&needs).expect("lacks time");
        assert!(
            why.contains("runc version 1.1.5") && why.contains("time namespace"),
            "{why}"
        );
        let silent = Runtime {
            features: None,
            ..rt
        };
        assert_eq!(silent.lacks(&needs), None, "no features: the run tells");
    }
}
