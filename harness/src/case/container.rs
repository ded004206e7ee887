//! What a run's container is, in the case's words and no runtime's: its
//! namespaces, id maps, clock offsets, limits, mounts, capabilities,
//! seccomp filter, user and root. The driver of the runtime under test
//! turns it into that runtime's input (an OCI bundle, or kcell's flags).

use serde::Deserialize;
use std::collections::BTreeMap;

/// The namespaces a container gets by default: all but user and time.
pub const DEFAULT_NAMESPACES: &[&str] = &["uts", "ipc", "pid", "mnt", "net", "cgroup"];

/// Every namespace a case may name.
pub const NAMESPACES: &[&str] = &["uts", "ipc", "pid", "mnt", "net", "cgroup", "user", "time"];

/// How one namespace is given: made new, not made (the host's), or joined
/// from another held run of the case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NsChoice {
    /// A new one.
    New,
    /// None of its own: the runtime's (the host's).
    Host,
    /// The one of the held run of that name.
    Join(String),
}

impl<'de> Deserialize<'de> for NsChoice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.as_str() {
            "new" => NsChoice::New,
            "host" => NsChoice::Host,
            other => NsChoice::Join(other.to_string()),
        })
    }
}

impl serde::Serialize for NsChoice {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            NsChoice::New => s.serialize_str("new"),
            NsChoice::Host => s.serialize_str("host"),
            NsChoice::Join(r) => s.serialize_str(r),
        }
    }
}

pub use super::limits::{CpuList, DeviceNumber, DeviceRule, Limits, Size, Throttle};

/// One mount, OCI-style.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MountDesc {
    /// "bind", "tmpfs", ...
    #[serde(rename = "type")]
    pub kind: String,
    /// Host path (bind) or name.
    #[serde(default)]
    pub source: Option<String>,
    /// Where inside.
    pub destination: String,
    /// mount(8) options: ro, size=1m, mode=700, ...
    #[serde(default)]
    pub options: Vec<String>,
}

/// Capabilities beyond the default set (Docker's fourteen).
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CapsDesc {
    /// Added names (SYS_ADMIN), or ALL.
    #[serde(default)]
    pub add: Vec<String>,
    /// Dropped names, or ALL (applied before the additions).
    #[serde(default)]
    pub drop: Vec<String>,
}

/// The seccomp filter of a container.
#[derive(Debug, Clone, Copy, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SeccompChoice {
    /// The harness's default profile: EPERM for the calls Docker denies.
    #[default]
    Default,
    /// No filter.
    Unconfined,
    /// The default, and new user namespaces refused (EPERM; clone3 ENOSYS).
    DenyUserns,
}

/// Clock offsets of a time namespace, in seconds.
#[derive(Debug, Clone, Copy, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Offsets {
    /// CLOCK_BOOTTIME.
    #[serde(default)]
    pub boottime: i64,
    /// CLOCK_MONOTONIC.
    #[serde(default)]
    pub monotonic: i64,
}

/// The whole description (the container part of a run).
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, PartialEq)]
#[serde(default)]
pub struct Container {
    /// Hostname of its UTS namespace.
    pub hostname: Option<String>,
    /// Changes to [`DEFAULT_NAMESPACES`].
    pub namespaces: BTreeMap<String, NsChoice>,
    /// uid_map lines "IN:OUT:LEN" (they bring a user namespace; one made
    /// with `namespaces = { user = "new" }` and no maps is unmapped).
    pub uid_map: Vec<String>,
    /// gid_map lines.
    pub gid_map: Vec<String>,
    /// Clock offsets (a time namespace).
    pub time_offsets: Option<Offsets>,
    /// cgroup limits.
    pub limits: Limits,
    /// Mounts after the standard ones.
    pub mounts: Vec<MountDesc>,
    /// Capability changes.
    pub capabilities: CapsDesc,
    /// The seccomp filter.
    pub seccomp: SeccompChoice,
    /// UID[:GID] of the process.
    pub user: Option<String>,
    /// Environment added.
    pub env: Vec<String>,
    /// Working directory.
    pub cwd: Option<String>,
    /// Nameservers of its own /etc/resolv.conf (a file bound read-only).
    pub dns: Vec<String>,
    /// Another root than the target's image (`{fixture.key}` allowed).
    pub root: Option<String>,
}

impl Container {
    /// The namespaces made new, in [`NAMESPACES`] order; user when maps are
    /// given, time when offsets are.
    pub fn new_namespaces(&self) -> Vec<&'static str> {
        NAMESPACES
            .iter()
            .copied()
            .filter(|ns| match self.namespaces.get(*ns) {
                Some(NsChoice::New) => true,
                Some(_) => false,
                None => {
                    DEFAULT_NAMESPACES.contains(ns)
                        || (*ns == "user" && (!self.uid_map.is_empty() || !self.gid_map.is_empty()))
                        || (*ns == "time" && self.time_offsets.is_some())
                }
            })
            .collect()
    }

    /// The namespaces joined from other runs: (namespace, run).
    pub fn joined(&self) -> Vec<(&str, &str)> {
        self.namespaces
            .iter()
            .filter_map(|(ns, c)| match c {
                NsChoice::Join(run) => Some((ns.as_str(), run.as_str())),
                _ => None,
            })
            .collect()
    }

    /// A problem with the description, for the loader.
    pub fn problem(&self) -> Option<String> {
        if let Some(bad) = self
            .namespaces
            .keys()
            .find(|k| !NAMESPACES.contains(&k.as_str()))
        {
            return Some(format!(
                "unknown namespace '{bad}': known are {}",
                NAMESPACES.join(", ")
            ));
        }
        if let Some(m) = self.mounts.iter().find(|m| !m.destination.starts_with('/')) {
            return Some(format!(
                "mount destination '{}' must be absolute",
                m.destination
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_follow_maps_offsets_and_choices() {
        let mut c = Container::default();
        assert_eq!(c.new_namespaces(), DEFAULT_NAMESPACES);
        c.namespaces.insert("uts".into(), NsChoice::Host);
        c.namespaces
            .insert("net".into(), NsChoice::Join("owner".into()));
        c.uid_map = vec!["0:1000:1".into()];
        c.time_offsets = Some(Offsets::default());
        assert_eq!(
            c.new_namespaces(),
            ["ipc", "pid", "mnt", "cgroup", "user", "time"]
        );
        assert_eq!(c.joined(), [("net", "owner")]);
        c.namespaces.insert("bogus".into(), NsChoice::New);
        assert!(c.problem().is_some_and(|p| p.contains("bogus")));
    }
}
