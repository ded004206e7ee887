//! Capabilities of the container's process: the five sets of its
//! [`Capabilities`] (kcell's default: Docker's set in bounding,
//! effective and permitted, changed by `--cap-add` / `--cap-drop`; the
//! inheritable and ambient sets empty), then no_new_privs, so nothing the
//! command execs can gain more (capabilities(7)).

use crate::sys::{SysContext, SysError};
use nix::errno::Errno;
use std::fmt;

/// The five capability sets (capabilities(7)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Capabilities {
    /// What the process and its children can ever have.
    pub bounding: CapSet,
    /// What it uses.
    pub effective: CapSet,
    /// What it may make effective.
    pub permitted: CapSet,
    /// What survives an exec with file capabilities.
    pub inheritable: CapSet,
    /// What survives an exec of an ordinary program.
    pub ambient: CapSet,
}

impl Capabilities {
    /// Docker's default: its fourteen in bounding, effective and permitted;
    /// none inheritable or ambient. A non-root user keeps the bounding set
    /// and nothing effective or permitted, as Docker gives it.
    pub fn docker_default(set: CapSet, root: bool) -> Capabilities {
        let held = if root { set } else { CapSet(0) };
        Capabilities {
            bounding: set,
            effective: held,
            permitted: held,
            inheritable: CapSet(0),
            ambient: CapSet(0),
        }
    }
}

/// Capability names in kernel order (CAP_CHOWN = 0 ... CAP_CHECKPOINT_RESTORE = 40).
pub const NAMES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Docker's default capability set.
pub const DOCKER_DEFAULT: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// A set of capabilities as the kernel's bit mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CapSet(pub u64);

impl Default for CapSet {
    fn default() -> Self {
        let mut set = CapSet(0);
        for name in DOCKER_DEFAULT {
            if let Some(n) = index(name) {
                set.0 |= 1 << n;
            }
        }
        set
    }
}

/// The number of a capability name ("SYS_ADMIN", "cap_sys_admin").
pub fn index(name: &str) -> Option<u32> {
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    NAMES.iter().position(|n| *n == bare).map(|i| i as u32)
}

/// Parses `--cap-add` / `--cap-drop` values: a name, or ALL.
pub fn parse(name: &str) -> Result<CapSet, String> {
    if name.eq_ignore_ascii_case("ALL") {
        return Ok(CapSet((1u64 << NAMES.len()) - 1));
    }
    index(name).map(|n| CapSet(1 << n)).ok_or_else(|| {
        format!(
            "capability '{name}' is unknown: allowed are ALL or one of {}",
            NAMES.join(", ")
        )
    })
}

impl CapSet {
    /// Whether capability `n` is in the set.
    pub fn has(&self, n: u32) -> bool {
        n < 64 && self.0 & (1 << n) != 0
    }
}

impl fmt::Display for CapSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = NAMES
            .iter()
            .enumerate()
            .filter(|(i, _)| self.has(*i as u32))
            .map(|(_, n)| *n)
            .collect();
        f.write_str(&names.join(","))
    }
}

/// The `caps` crate's capability of number `n`, if this build knows it.
fn capability(n: u32) -> Option<caps::Capability> {
    caps::all().into_iter().find(|c| u32::from(c.index()) == n)
}

/// The `caps` crate's set of the capabilities in `set`.
fn hash_set(set: CapSet) -> caps::CapsHashSet {
    caps::all()
        .into_iter()
        .filter(|c| set.has(u32::from(c.index())))
        .collect()
}

fn caps_error(
    call: &'static str,
    subject: impl fmt::Display,
) -> impl FnOnce(caps::errors::CapsError) -> SysError {
    move |e| SysError {
        call,
        subject: format!("{subject} ({e})"),
        // The crate made the call; errno is still its result.
        errno: Errno::last(),
    }
}

/// Drops from the bounding set every capability `keep` lacks (needs
/// CAP_SETPCAP). A capability this kernel does not have is already absent.
pub fn drop_bounding(keep: CapSet) -> Result<(), SysError> {
    let held = caps::read(None, caps::CapSet::Bounding)
        .map_err(caps_error("prctl PR_CAPBSET_READ", "the bounding set"))?;
    for cap in held {
        if !keep.has(u32::from(cap.index())) {
            caps::drop(None, caps::CapSet::Bounding, cap)
                .map_err(caps_error("prctl PR_CAPBSET_DROP", cap))?;
        }
    }
    Ok(())
}

/// Sets the inheritable, effective and permitted sets of `caps` (in that
/// order: raising an inheritable capability needs the permitted set still
/// whole), then the ambient one. What this process does not hold itself it
/// cannot grant (ALL means all of what the runtime has: a runtime that runs
/// without some capability cannot give it), so each set is bounded by what
/// it holds.
pub fn apply(caps: &Capabilities) -> Result<(), SysError> {
    let permitted = caps::read(None, caps::CapSet::Permitted)
        .map_err(caps_error("capget", "the runtime's own sets"))?;
    let held = CapSet(permitted.iter().fold(0, |m, c| m | 1 << c.index()));
    let bound = |s: CapSet| CapSet(s.0 & held.0);
    let (e, p, i) = (
        bound(caps.effective),
        bound(caps.permitted),
        bound(caps.inheritable),
    );
    for (set, which, name) in [
        (caps::CapSet::Inheritable, i, "inheritable"),
        (caps::CapSet::Effective, e, "effective"),
        (caps::CapSet::Permitted, p, "permitted"),
    ] {
        caps::set(None, set, &hash_set(which))
            .map_err(caps_error("capset", format!("{name}={which}")))?;
    }
    caps::clear(None, caps::CapSet::Ambient)
        .map_err(caps_error("prctl PR_CAP_AMBIENT_CLEAR_ALL", "ambient set"))?;
    for n in 0..64 {
        if caps.ambient.has(n) && p.has(n) && i.has(n) {
            if let Some(cap) = capability(n) {
                caps::raise(None, caps::CapSet::Ambient, cap)
                    .map_err(caps_error("prctl PR_CAP_AMBIENT_RAISE", cap))?;
            }
        }
    }
    Ok(())
}

/// PR_SET_KEEPCAPS: whether the permitted set survives a switch from uid 0.
pub fn keep_caps(keep: bool) -> Result<(), SysError> {
    nix::sys::prctl::set_keepcaps(keep).sys("prctl PR_SET_KEEPCAPS", keep)
}

/// PR_SET_NO_NEW_PRIVS: nothing exec'd can gain privileges.
pub fn no_new_privs() -> Result<(), SysError> {
    nix::sys::prctl::set_no_new_privs().sys("prctl PR_SET_NO_NEW_PRIVS", "1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_dockers_fourteen() {
        let set = CapSet::default();
        assert_eq!(set.0.count_ones(), 14);
        assert!(set.has(index("NET_RAW").unwrap()));
        assert!(!set.has(index("SYS_ADMIN").unwrap()));
        assert_eq!(NAMES.len(), 41);
        assert_eq!(index("CHECKPOINT_RESTORE"), Some(40));
        assert_eq!(index("cap_mknod"), Some(27));
    }

    #[test]
    fn names_and_all_parse_and_unknown_ones_are_named() {
        assert_eq!(parse("sys_admin").unwrap(), CapSet(1 << 21));
        assert_eq!(parse("ALL").unwrap().0.count_ones(), 41);
        let err = parse("SYS_FLY").unwrap_err();
        assert!(
            err.contains("SYS_FLY") && err.contains("SYS_ADMIN"),
            "{err}"
        );
        assert_eq!(CapSet(1 | 1 << 21).to_string(), "CHOWN,SYS_ADMIN");
    }
}
