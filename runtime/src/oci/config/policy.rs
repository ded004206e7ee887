//! kcell-oci's version policy, as runtime-spec intends it: every 1.x
//! config is read; a property kcell does not implement is refused by name
//! only where ignoring it would weaken what the config asks (a limit, a
//! namespace, a device or seccomp rule, a confinement), and otherwise
//! ignored with a warning naming it.
//!
//! Two kinds of property are not implemented:
//! - those oci-spec models but kcell does not apply: [`UNIMPLEMENTED`], one
//!   registry, also the README's table;
//! - those oci-spec does not model at all (a runtime-spec newer than the
//!   crate, or a client's own keys): [`unknown_properties`] finds them by
//!   comparing the file with what oci-spec read of it, and [`unknown`]
//!   decides by where they are.

use super::{invalid, ConfigError};
use crate::lifecycle::OCI_VERSION;
use serde_json::Value;

/// What kcell does with a property it does not implement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Treatment {
    /// Refused by name: ignoring it would weaken what the config asks.
    Refused(&'static str),
    /// Ignored, with a warning naming it: the container is no less
    /// confined without it.
    Ignored(&'static str),
}

use Treatment::{Ignored, Refused};

/// Every runtime-spec property oci-spec models that kcell does not
/// implement, and why it is refused or ignored.
pub const UNIMPLEMENTED: &[(&str, Treatment)] = &[
    (
        "process.apparmorProfile",
        Refused("an AppArmor confinement; kcell applies no LSM profile"),
    ),
    (
        "process.selinuxLabel",
        Refused("an SELinux confinement; kcell applies no LSM label"),
    ),
    (
        "linux.mountLabel",
        Refused("an SELinux label on the container's mounts"),
    ),
    (
        "process.ioPriority",
        Ignored("an I/O scheduling priority, not a limit: the process runs at the default priority"),
    ),
    (
        "process.scheduler",
        Ignored("a CPU scheduling policy, not a limit: the process runs under the default policy"),
    ),
    (
        "process.execCPUAffinity",
        Ignored("the CPUs of exec'd processes while they join the cgroup; linux.resources.cpu.cpus still confines them"),
    ),
    (
        "linux.intelRdt",
        Refused("a cache or memory-bandwidth allocation: a limit"),
    ),
    (
        "linux.memoryPolicy",
        Refused("a NUMA memory policy that confines where memory is allocated"),
    ),
    (
        "linux.netDevices",
        Refused("network devices moved into the container's network namespace"),
    ),
    (
        "mounts[].uidMappings/gidMappings",
        Refused("an id-mapped mount: ignored, its files would show other owners"),
    ),
    (
        "linux.personality.flags",
        Refused("personality flags change what the process's system calls do"),
    ),
    (
        "linux.timeOffsets.*.nanosecs",
        Refused("a time namespace offset kcell would not apply"),
    ),
    (
        "linux.resources.memory.checkBeforeUpdate",
        Ignored("a check made by `update`, which kcell-oci does not offer; the limit is set at create"),
    ),
    (
        "linux.resources.hugepageLimits",
        Refused("a limit"),
    ),
    ("linux.resources.network", Refused("a limit")),
    ("linux.resources.rdma", Refused("a limit")),
    ("linux.resources.unified", Refused("a limit")),
    ("linux.resources.cpu.idle", Refused("a limit")),
    ("linux.resources.cpu.burst", Refused("a limit")),
    (
        "linux.seccomp.listenerPath",
        Refused("a seccomp rule (user notification)"),
    ),
    (
        "linux.seccomp action SCMP_ACT_NOTIFY",
        Refused("a seccomp rule (user notification)"),
    ),
    (
        "linux.seccomp flag SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
        Refused("a seccomp rule (user notification)"),
    ),
    (
        "solaris, windows, vm, zos",
        Refused("another platform's container"),
    ),
];

/// The treatment of `property`, one of [`UNIMPLEMENTED`]'s names.
fn treatment(property: &str) -> Treatment {
    UNIMPLEMENTED
        .iter()
        .find(|(p, _)| *p == property)
        .map(|(_, t)| *t)
        // A name missing from the table is a bug of this file; refusing is
        // the side that weakens nothing.
        .unwrap_or(Refused("not implemented"))
}

/// What one config asked for that kcell does not do, to warn about.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ignoring(pub Vec<String>);

impl Ignoring {
    /// `property` is set in the config and kcell does not implement it:
    /// an error when the registry refuses it, else noted as ignored.
    /// `shown` is how the config names it (a mount's destination, say).
    pub fn unimplemented(&mut self, property: &str, shown: &str) -> Result<(), ConfigError> {
        match treatment(property) {
            Refused(why) => Err(ConfigError::Unsupported(format!("{shown} ({why})"))),
            Ignored(why) => {
                self.0.push(format!("{shown} is ignored: {why}"));
                Ok(())
            }
        }
    }

    /// The warnings, one line each.
    pub fn warnings(&self) -> &[String] {
        &self.0
    }
}

/// Every 1.x version is accepted (runtime-spec is compatible within a
/// major version, and a runtime ignores properties it does not know);
/// anything else is refused naming the value.
pub fn check_version(version: &str) -> Result<(), ConfigError> {
    let core = version.split(['-', '+']).next().unwrap_or_default();
    let parts: Vec<&str> = core.split('.').collect();
    let numeric = parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if numeric && parts[0] == "1" {
        return Ok(());
    }
    Err(invalid(format!(
        "ociVersion '{version}' is not allowed: kcell implements runtime-spec 1.x (a version such as {OCI_VERSION}; properties of a later 1.x it does not know are ignored or refused by name)"
    )))
}

/// Where an unknown property is refused rather than ignored: the parts of
/// the config whose every key limits or confines the container.
const REFUSED_UNDER: &[(&str, &str)] = &[
    ("linux.resources.", "a limit kcell does not know"),
    ("linux.seccomp.", "a seccomp setting kcell does not know"),
    (
        "linux.namespaces[",
        "a namespace setting kcell does not know",
    ),
    (
        "linux.uidMappings[",
        "an id mapping setting kcell does not know",
    ),
    (
        "linux.gidMappings[",
        "an id mapping setting kcell does not know",
    ),
    (
        "process.capabilities.",
        "a capability set kcell does not know",
    ),
    ("process.rlimits[", "a limit kcell does not know"),
];

/// The unknown properties of a config (see [`unknown_properties`]): an
/// error for the first one under a part that confines, else each noted.
pub fn unknown(paths: &[String], ignoring: &mut Ignoring) -> Result<(), ConfigError> {
    for path in paths {
        if let Some((_, why)) = REFUSED_UNDER.iter().find(|(p, _)| path.starts_with(p)) {
            return Err(ConfigError::Unsupported(format!("{path} ({why})")));
        }
        ignoring.0.push(format!(
            "{path} is ignored: not a property of runtime-spec as kcell implements it"
        ));
    }
    Ok(())
}

/// The properties of `file` (a config.json as written) that `read` (the
/// same config as oci-spec read it, serialised again) does not have, as
/// paths such as `linux.resources.memory.checkBeforeUpdate` or
/// `mounts[2].x-client`. A property set to null or to an empty array or
/// object asks for nothing and is not listed.
pub fn unknown_properties(file: &Value, read: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(file, read, "", &mut out);
    out
}

fn asks_nothing(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

fn walk(file: &Value, read: &Value, at: &str, out: &mut Vec<String>) {
    match (file, read) {
        (Value::Object(f), Value::Object(r)) => {
            for (key, value) in f {
                let path = if at.is_empty() {
                    key.clone()
                } else {
                    format!("{at}.{key}")
                };
                match r.get(key) {
                    Some(known) => walk(value, known, &path, out),
                    None if asks_nothing(value) => {}
                    None => out.push(path),
                }
            }
        }
        (Value::Array(f), Value::Array(r)) => {
            for (i, (value, known)) in f.iter().zip(r).enumerate() {
                walk(value, known, &format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_1_x_version_is_read_and_others_are_refused_by_value() {
        for ok in [
            "1.0.0",
            "1.0.2-dev",
            "1.2.1",
            "1.3.0",
            "1.4.0-rc.1",
            "1.10.3",
        ] {
            assert!(check_version(ok).is_ok(), "{ok}");
        }
        for bad in ["2.0.0", "0.6.0", "1.3", "", "one", "1.x.0"] {
            let e = check_version(bad).expect_err(bad).to_string();
            assert!(e.contains(&format!("'{bad}'")) && e.contains("1.x"), "{e}");
        }
    }

    #[test]
    fn unknown_properties_are_found_where_they_are_and_empty_ones_ask_nothing() {
        let file = json!({
            "ociVersion": "1.3.0",
            "freebsd": {"jail": {}},
            "process": {"args": ["sh"], "x": null},
            "mounts": [{"destination": "/a"}, {"destination": "/b", "x-client": 1}],
            "linux": {"resources": {"memory": {"limit": 1, "checkBeforeUpdate": true}}, "y": []}
        });
        let read = json!({
            "ociVersion": "1.3.0",
            "process": {"args": ["sh"]},
            "mounts": [{"destination": "/a"}, {"destination": "/b"}],
            "linux": {"resources": {"memory": {"limit": 1}}}
        });
        assert_eq!(
            unknown_properties(&file, &read),
            [
                "freebsd",
                "linux.resources.memory.checkBeforeUpdate",
                "mounts[1].x-client",
            ]
        );
    }

    #[test]
    fn an_unknown_limit_is_refused_and_an_unknown_elsewhere_is_a_warning() {
        let mut ignoring = Ignoring::default();
        unknown(
            &["freebsd".into(), "mounts[1].x-client".into()],
            &mut ignoring,
        )
        .expect("ignored");
        assert_eq!(ignoring.warnings().len(), 2);
        assert!(ignoring.warnings()[0].starts_with("freebsd is ignored"));
        let e = unknown(&["linux.resources.memory.newLimit".into()], &mut ignoring)
            .expect_err("a limit")
            .to_string();
        assert!(e.contains("linux.resources.memory.newLimit"), "{e}");
    }

    #[test]
    fn the_registry_refuses_what_confines_and_ignores_the_rest() {
        let mut ignoring = Ignoring::default();
        ignoring
            .unimplemented("process.ioPriority", "process.ioPriority")
            .expect("ignored");
        assert!(ignoring.warnings()[0].contains("process.ioPriority is ignored"));
        let e = ignoring
            .unimplemented("linux.intelRdt", "linux.intelRdt")
            .expect_err("a limit")
            .to_string();
        assert!(e.contains("linux.intelRdt") && e.contains("limit"), "{e}");
    }

    /// The README's table of runtime-spec properties names every entry of
    /// the registry, with what kcell does with it.
    #[test]
    fn the_readme_table_names_every_unimplemented_property() {
        let readme = include_str!("../../../../README.md");
        for (property, t) in UNIMPLEMENTED {
            let word = match t {
                Refused(_) => "refused",
                Ignored(_) => "ignored",
            };
            assert!(
                readme
                    .lines()
                    .any(|l| l.contains(&format!("`{property}`")) && l.contains(word)),
                "README's runtime-spec table lacks `{property}` ({word})"
            );
        }
    }
}
