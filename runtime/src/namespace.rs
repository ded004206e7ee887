//! Namespace kinds, their names on the command line and in /proc/PID/ns, and
//! the sets a container is made with.

use std::fmt;
use std::str::FromStr;

/// Errors in namespace names and sets.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NamespaceError {
    /// A name that is not one of [`Namespace::ALL`].
    #[error("unknown namespace '{0}': allowed are uts, ipc, pid, mnt, net, user, cgroup, time")]
    Unknown(String),
    /// The running kernel has no such namespace (no /proc/self/ns/NAME).
    #[error("the running kernel has no {0} namespace (/proc/self/ns/{1} is missing)")]
    Unsupported(Namespace, &'static str),
}

/// One kind of Linux namespace.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Namespace {
    /// Hostname and NIS domain name.
    Uts,
    /// System V IPC objects and POSIX message queues.
    Ipc,
    /// Process ids.
    Pid,
    /// Mount points.
    Mnt,
    /// Network devices, addresses, routes, ports.
    Net,
    /// User and group ids, capabilities.
    User,
    /// The cgroup root seen in /proc/self/cgroup.
    Cgroup,
    /// CLOCK_MONOTONIC and CLOCK_BOOTTIME offsets.
    Time,
}

impl Namespace {
    /// Every kind, in the order a container's namespaces are made in.
    pub const ALL: [Namespace; 8] = [
        Namespace::User,
        Namespace::Uts,
        Namespace::Ipc,
        Namespace::Net,
        Namespace::Mnt,
        Namespace::Cgroup,
        Namespace::Pid,
        Namespace::Time,
    ];

    /// The CLONE_NEW* flag for unshare(2) and setns(2).
    pub fn clone_flag(self) -> libc::c_int {
        match self {
            Namespace::Uts => libc::CLONE_NEWUTS,
            Namespace::Ipc => libc::CLONE_NEWIPC,
            Namespace::Pid => libc::CLONE_NEWPID,
            Namespace::Mnt => libc::CLONE_NEWNS,
            Namespace::Net => libc::CLONE_NEWNET,
            Namespace::User => libc::CLONE_NEWUSER,
            Namespace::Cgroup => libc::CLONE_NEWCGROUP,
            Namespace::Time => libc::CLONE_NEWTIME,
        }
    }

    /// The file name under /proc/PID/ns/.
    pub fn proc_name(self) -> &'static str {
        match self {
            Namespace::Uts => "uts",
            Namespace::Ipc => "ipc",
            Namespace::Pid => "pid",
            Namespace::Mnt => "mnt",
            Namespace::Net => "net",
            Namespace::User => "user",
            Namespace::Cgroup => "cgroup",
            Namespace::Time => "time",
        }
    }

    /// Whether the running kernel offers this namespace.
    pub fn supported(self) -> bool {
        std::path::Path::new("/proc/self/ns")
            .join(self.proc_name())
            .exists()
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.proc_name())
    }
}

impl FromStr for Namespace {
    type Err = NamespaceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let name = s.trim();
        Namespace::ALL
            .into_iter()
            .find(|ns| ns.proc_name() == name || (name == "mount" && *ns == Namespace::Mnt))
            .ok_or_else(|| NamespaceError::Unknown(name.to_string()))
    }
}

/// A set of namespaces, kept in [`Namespace::ALL`] order.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NamespaceSet(Vec<Namespace>);

impl NamespaceSet {
    /// What a user expects of a container: every namespace but user, and user
    /// too when the caller is not root (nothing else would be permitted).
    /// Namespaces the kernel lacks are left out of the default (but asking for
    /// one explicitly is an error, see [`NamespaceSet::check_supported`]).
    pub fn default_for(caller_is_root: bool) -> Self {
        let mut set = NamespaceSet::default();
        for ns in Namespace::ALL {
            if (ns != Namespace::User || !caller_is_root) && ns.supported() {
                set.insert(ns);
            }
        }
        set
    }

    /// Parses a comma-separated list of names ("" and "none" are the empty set).
    pub fn parse_list(list: &str) -> Result<Self, NamespaceError> {
        let mut set = NamespaceSet::default();
        if list.trim() == "none" {
            return Ok(set);
        }
        for name in list.split(',').filter(|n| !n.trim().is_empty()) {
            set.insert(name.parse()?);
        }
        Ok(set)
    }

    /// Adds a namespace (no-op if present).
    pub fn insert(&mut self, ns: Namespace) {
        if !self.0.contains(&ns) {
            self.0.push(ns);
            self.0
                .sort_by_key(|n| Namespace::ALL.iter().position(|a| a == n));
        }
    }

    /// Removes a namespace (no-op if absent).
    pub fn remove(&mut self, ns: Namespace) {
        self.0.retain(|n| *n != ns);
    }

    /// Whether the set holds `ns`.
    pub fn contains(&self, ns: Namespace) -> bool {
        self.0.contains(&ns)
    }

    /// The namespaces, in creation order.
    pub fn iter(&self) -> impl Iterator<Item = Namespace> + '_ {
        self.0.iter().copied()
    }

    /// The combined CLONE_NEW* flags, leaving out `except`.
    pub fn flags_except(&self, except: &[Namespace]) -> libc::c_int {
        self.iter()
            .filter(|ns| !except.contains(ns))
            .fold(0, |acc, ns| acc | ns.clone_flag())
    }

    /// Errors on the first namespace the running kernel does not offer.
    pub fn check_supported(&self) -> Result<(), NamespaceError> {
        match self.iter().find(|ns| !ns.supported()) {
            Some(ns) => Err(NamespaceError::Unsupported(ns, ns.proc_name())),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("uts,ipc", vec![Namespace::Uts, Namespace::Ipc])]
    #[case("pid,user", vec![Namespace::User, Namespace::Pid])]
    #[case("mount", vec![Namespace::Mnt])]
    #[case("none", vec![])]
    #[case("", vec![])]
    #[case("net,net", vec![Namespace::Net])]
    fn parses_lists(#[case] list: &str, #[case] expected: Vec<Namespace>) {
        let set = NamespaceSet::parse_list(list).expect("valid list");
        assert_eq!(set.iter().collect::<Vec<_>>(), expected);
    }

    #[rstest]
    #[case("uts,bogus", "bogus")]
    #[case("UTS", "UTS")]
    fn rejects_unknown_names(#[case] list: &str, #[case] bad: &str) {
        let err = NamespaceSet::parse_list(list).expect_err("invalid");
        assert_eq!(err, NamespaceError::Unknown(bad.into()));
        assert!(err.to_string().contains("allowed are uts, ipc"));
    }

    #[test]
    fn flags_leave_out_exceptions() {
        let set = NamespaceSet::parse_list("user,uts,time").expect("valid");
        assert_eq!(
            set.flags_except(&[Namespace::User, Namespace::Time]),
            libc::CLONE_NEWUTS
        );
    }
}
