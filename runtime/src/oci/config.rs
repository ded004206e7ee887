//! An OCI bundle's config.json (parsed with the `oci-spec` crate) made
//! into a [`ContainerSpec`]. Every field kcell implements is carried over;
//! one it does not implement is refused naming it where ignoring it would
//! weaken what the config asks, else ignored with a warning naming it
//! ([`policy`]): never silently.

use crate::caps::CapSet;
use crate::idmap::{IdMap, IdMapping};
use crate::namespace::{Namespace, NamespaceSet};
use crate::seccomp::{Action, ArgCmp, Op, Profile};
use crate::spec::{Capabilities, ContainerSpec, Device, Hook, Hooks, Mount, Process, Rlimit};
use oci_spec::runtime as oci;
use std::path::{Path, PathBuf};

pub mod policy;
mod resources;
pub use policy::Ignoring;
pub use resources::resources;

/// What is wrong with a config.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not readable, not JSON, or not the spec's schema.
    #[error("{0}")]
    Load(String),
    /// A field kcell does not implement.
    #[error("config.json: {0} is not supported by kcell")]
    Unsupported(String),
    /// A value that is not allowed.
    #[error("config.json: {0}")]
    Invalid(String),
}

fn unsupported(field: &str) -> ConfigError {
    ConfigError::Unsupported(field.to_string())
}

fn invalid(what: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(what.into())
}

/// A config.json as read: oci-spec's typed view of it, and the
/// properties of the file that view lacks (see [`policy::unknown_properties`]).
#[derive(Debug, Clone)]
pub struct Loaded {
    /// What oci-spec read.
    pub config: oci::Spec,
    /// The paths of the file's properties oci-spec does not model.
    pub unknown: Vec<String>,
}

/// A config made into a container's spec, with what was ignored of it.
#[derive(Debug)]
pub struct Accepted {
    /// The container's spec.
    pub spec: ContainerSpec,
    /// The properties kcell ignored, to warn about.
    pub ignored: Ignoring,
}

/// Reads `<bundle>/config.json`.
pub fn load(bundle: &Path) -> Result<Loaded, ConfigError> {
    let path = bundle.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        ConfigError::Load(format!("JSON specification file {}: {e}", path.display()))
    })?;
    parse(&text, &path)
}

/// A config.json's text (`path` names it in errors).
pub fn parse(text: &str, path: &Path) -> Result<Loaded, ConfigError> {
    let load_error = |e: serde_json::Error| {
        let what = if e.is_syntax() || e.is_eof() {
            "is not JSON"
        } else {
            "is not a runtime-spec config"
        };
        ConfigError::Load(format!("{} {what}: {e}", path.display()))
    };
    let file: serde_json::Value = serde_json::from_str(text).map_err(load_error)?;
    let config: oci::Spec = serde_json::from_value(file.clone()).map_err(load_error)?;
    let read = serde_json::to_value(&config).map_err(load_error)?;
    Ok(Loaded {
        unknown: policy::unknown_properties(&file, &read),
        config,
    })
}

/// The container `id` of the bundle at `bundle` (absolute) with config
/// `loaded`.
pub fn to_spec(id: &str, bundle: &Path, loaded: &Loaded) -> Result<Accepted, ConfigError> {
    let c = &loaded.config;
    policy::check_version(c.version())?;
    let mut ignored = Ignoring::default();
    if c.solaris().is_some() || c.windows().is_some() || c.vm().is_some() || c.zos().is_some() {
        ignored.unimplemented(
            "solaris, windows, vm, zos",
            "a non-Linux platform section (solaris, windows, vm, zos)",
        )?;
    }
    policy::unknown(&loaded.unknown, &mut ignored)?;
    let root = c
        .root()
        .as_ref()
        .ok_or_else(|| invalid("root is missing"))?;
    let rootfs = if root.path().is_absolute() {
        root.path().clone()
    } else {
        bundle.join(root.path())
    };
    if !rootfs.is_dir() {
        return Err(invalid(format!(
            "root.path '{}' is not an existing directory",
            rootfs.display()
        )));
    }
    let p = c
        .process()
        .as_ref()
        .ok_or_else(|| invalid("process is missing"))?;
    let mut spec = ContainerSpec::new(&rootfs, Vec::new());
    spec.id = id.to_string();
    spec.bundle = Some(bundle.to_path_buf());
    spec.readonly_root = root.readonly().unwrap_or(false);
    spec.process = process_of(p, &mut ignored)?;
    spec.hostname = c.hostname().clone().filter(|h| !h.is_empty());
    spec.domainname = c.domainname().clone().filter(|h| !h.is_empty());
    spec.annotations = c
        .annotations()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    spec.hooks = c.hooks().as_ref().map(hooks).unwrap_or_default();
    spec.mounts = c
        .mounts()
        .clone()
        .unwrap_or_default()
        .iter()
        .map(|m| mount(bundle, m, &mut ignored))
        .collect::<Result<_, _>>()?;
    // The OCI config says everything: no standard mounts, masks or limits
    // of kcell's own, and no bridge or DNS of its CLI.
    spec.masked_paths.clear();
    spec.readonly_paths.clear();
    spec.cgroup_path = None;
    let linux = c
        .linux()
        .as_ref()
        .ok_or_else(|| invalid("linux is missing"))?;
    apply_linux(&mut spec, id, linux, &mut ignored)?;
    Ok(Accepted { spec, ignored })
}

/// A config's `process` (also an `exec --process` file) as kcell's; what
/// kcell ignores of it is noted in `ignored`.
pub fn process_of(p: &oci::Process, ignored: &mut Ignoring) -> Result<Process, ConfigError> {
    for (property, set) in [
        (
            "process.apparmorProfile",
            p.apparmor_profile()
                .as_deref()
                .is_some_and(|s| !s.is_empty()),
        ),
        (
            "process.selinuxLabel",
            p.selinux_label().as_deref().is_some_and(|s| !s.is_empty()),
        ),
        ("process.ioPriority", p.io_priority().is_some()),
        ("process.scheduler", p.scheduler().is_some()),
        ("process.execCPUAffinity", p.exec_cpu_affinity().is_some()),
    ] {
        if set {
            ignored.unimplemented(property, property)?;
        }
    }
    let args = p.args().clone().unwrap_or_default();
    if args.is_empty() {
        return Err(invalid("process.args must name a program"));
    }
    if !p.cwd().is_absolute() {
        return Err(invalid(format!(
            "process.cwd '{}' must be an absolute path",
            p.cwd().display()
        )));
    }
    let user = p.user();
    if user.username().as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(unsupported("process.user.username (a Windows field)"));
    }
    let mut out = Process::new(args);
    out.env = p.env().clone().unwrap_or_default();
    if let Some(bad) = out.env.iter().find(|e| !e.contains('=')) {
        return Err(invalid(format!(
            "process.env entry '{bad}' is not KEY=VALUE"
        )));
    }
    out.cwd = p.cwd().clone();
    out.uid = user.uid();
    out.gid = user.gid();
    out.umask = user.umask();
    out.additional_gids = user.additional_gids().clone().unwrap_or_default();
    out.terminal = p.terminal().unwrap_or(false);
    out.console_size = p.console_size().map(|b| {
        (
            b.height().min(u64::from(u16::MAX)) as u16,
            b.width().min(u64::from(u16::MAX)) as u16,
        )
    });
    out.no_new_privileges = p.no_new_privileges().unwrap_or(false);
    out.oom_score_adj = p.oom_score_adj();
    out.capabilities = p
        .capabilities()
        .as_ref()
        .map(capabilities)
        .unwrap_or(Capabilities {
            bounding: CapSet(0),
            effective: CapSet(0),
            permitted: CapSet(0),
            inheritable: CapSet(0),
            ambient: CapSet(0),
        });
    out.rlimits = p
        .rlimits()
        .clone()
        .unwrap_or_default()
        .iter()
        .map(|r| {
            let name = serde_json::to_value(r.typ())
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default();
            let resource = crate::spec::process::RLIMITS
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| *v)
                .ok_or_else(|| invalid(format!("process.rlimits type '{name}' is not known")))?;
            Ok(Rlimit {
                resource,
                soft: r.soft(),
                hard: r.hard(),
            })
        })
        .collect::<Result<_, ConfigError>>()?;
    // The OCI config gives the filter (or none) in linux.seccomp.
    out.seccomp = None;
    Ok(out)
}

fn capabilities(c: &oci::LinuxCapabilities) -> Capabilities {
    let set = |s: &Option<oci::Capabilities>| {
        let mut out = CapSet(0);
        for cap in s.iter().flatten() {
            if let Some(n) = crate::caps::index(&cap.to_string()) {
                out.0 |= 1 << n;
            }
        }
        out
    };
    Capabilities {
        bounding: set(c.bounding()),
        effective: set(c.effective()),
        permitted: set(c.permitted()),
        inheritable: set(c.inheritable()),
        ambient: set(c.ambient()),
    }
}

fn hook_list(list: &Option<Vec<oci::Hook>>) -> Vec<Hook> {
    list.iter()
        .flatten()
        .map(|h| Hook {
            path: h.path().clone(),
            args: h
                .args()
                .clone()
                .unwrap_or_else(|| vec![h.path().display().to_string()]),
            env: h.env().clone().unwrap_or_default(),
            timeout: h.timeout().map(|t| t.max(1) as u32),
        })
        .collect()
}

fn hooks(h: &oci::Hooks) -> Hooks {
    #[allow(deprecated)]
    let prestart = hook_list(h.prestart());
    Hooks {
        prestart,
        create_runtime: hook_list(h.create_runtime()),
        create_container: hook_list(h.create_container()),
        start_container: hook_list(h.start_container()),
        poststart: hook_list(h.poststart()),
        poststop: hook_list(h.poststop()),
    }
}

fn mount(bundle: &Path, m: &oci::Mount, ignored: &mut Ignoring) -> Result<Mount, ConfigError> {
    if m.uid_mappings().is_some() || m.gid_mappings().is_some() {
        ignored.unimplemented(
            "mounts[].uidMappings/gidMappings",
            &format!(
                "mounts[{}].uidMappings/gidMappings",
                m.destination().display()
            ),
        )?;
    }
    let fstype = m.typ().clone().unwrap_or_else(|| "none".into());
    let options = m.options().clone().unwrap_or_default();
    let is_bind = fstype == "bind" || options.iter().any(|o| o == "bind" || o == "rbind");
    // A bind's relative source is relative to the bundle.
    let source: Option<PathBuf> = m.source().as_ref().map(|s| {
        if is_bind && !s.is_absolute() {
            bundle.join(s)
        } else {
            s.clone()
        }
    });
    // runtime-spec 1.2 reads a relative destination as relative to / (and
    // deprecates it); runc does the same.
    let destination = if m.destination().is_relative() {
        ignored.0.push(format!(
            "mounts[{}].destination is relative: read as /{0} (deprecated since runtime-spec 1.2)",
            m.destination().display()
        ));
        Path::new("/").join(m.destination())
    } else {
        m.destination().clone()
    };
    Mount::from_options(&destination, &fstype, source.as_deref(), &options)
        .map_err(|e| invalid(e.to_string()))
}

fn namespace_of(t: oci::LinuxNamespaceType) -> Result<Namespace, ConfigError> {
    Ok(match t {
        oci::LinuxNamespaceType::Mount => Namespace::Mnt,
        oci::LinuxNamespaceType::Cgroup => Namespace::Cgroup,
        oci::LinuxNamespaceType::Uts => Namespace::Uts,
        oci::LinuxNamespaceType::Ipc => Namespace::Ipc,
        oci::LinuxNamespaceType::User => Namespace::User,
        oci::LinuxNamespaceType::Pid => Namespace::Pid,
        oci::LinuxNamespaceType::Network => Namespace::Net,
        oci::LinuxNamespaceType::Time => Namespace::Time,
    })
}

fn id_map(list: &Option<Vec<oci::LinuxIdMapping>>) -> Result<IdMap, ConfigError> {
    let lines = list
        .iter()
        .flatten()
        .map(|m| IdMapping {
            inside: m.container_id(),
            outside: m.host_id(),
            length: m.size(),
        })
        .collect();
    IdMap::new(lines).map_err(|e| invalid(e.to_string()))
}

fn apply_linux(
    spec: &mut ContainerSpec,
    id: &str,
    l: &oci::Linux,
    ignored: &mut Ignoring,
) -> Result<(), ConfigError> {
    for (property, set) in [
        (
            "linux.mountLabel",
            l.mount_label().as_deref().is_some_and(|s| !s.is_empty()),
        ),
        ("linux.intelRdt", l.intel_rdt().is_some()),
        ("linux.memoryPolicy", l.memory_policy().is_some()),
        (
            "linux.netDevices",
            l.net_devices().as_ref().is_some_and(|d| !d.is_empty()),
        ),
    ] {
        if set {
            ignored.unimplemented(property, property)?;
        }
    }
    // Namespaces: new, or joined by path; each type once.
    let mut made = NamespaceSet::default();
    let mut joins = Vec::new();
    let mut seen = Vec::new();
    for ns in l.namespaces().iter().flatten() {
        let kind = namespace_of(ns.typ())?;
        if seen.contains(&kind) {
            return Err(invalid(format!(
                "linux.namespaces lists the {kind} namespace twice"
            )));
        }
        seen.push(kind);
        match ns.path() {
            Some(path) if !path.as_os_str().is_empty() => joins.push((kind, path.clone())),
            _ => made.insert(kind),
        }
    }
    spec.namespaces = made;
    spec.joins = joins;
    spec.user.uids = id_map(l.uid_mappings())?;
    spec.user.gids = id_map(l.gid_mappings())?;
    if let Some(offsets) = l.time_offsets() {
        for (clock, off) in offsets {
            if off.nanosecs().unwrap_or(0) != 0 {
                ignored.unimplemented(
                    "linux.timeOffsets.*.nanosecs",
                    &format!("linux.timeOffsets.{clock}.nanosecs"),
                )?;
            }
            let secs = off.secs().unwrap_or(0);
            match clock.as_str() {
                "monotonic" => spec.time.monotonic = secs,
                "boottime" => spec.time.boottime = secs,
                other => {
                    return Err(invalid(format!(
                        "linux.timeOffsets clock '{other}' is not allowed: monotonic or boottime"
                    )))
                }
            }
        }
    }
    spec.sysctl = l.sysctl().clone().unwrap_or_default().into_iter().collect();
    spec.sysctl.sort();
    if let Some(r) = l.resources() {
        if r.memory()
            .as_ref()
            .and_then(|m| m.check_before_update())
            .unwrap_or(false)
        {
            ignored.unimplemented(
                "linux.resources.memory.checkBeforeUpdate",
                "linux.resources.memory.checkBeforeUpdate",
            )?;
        }
        spec.resources = resources(r)?;
    }
    spec.cgroup_path = Some(
        l.cgroups_path()
            .clone()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| crate::cgroup::default_path(id)),
    );
    if let Some(devices) = l.devices() {
        for d in devices {
            let kind = match d.typ() {
                oci::LinuxDeviceType::C | oci::LinuxDeviceType::U => 'c',
                oci::LinuxDeviceType::B => 'b',
                oci::LinuxDeviceType::P => 'p',
                oci::LinuxDeviceType::A => {
                    return Err(invalid(format!(
                        "linux.devices entry {} has type 'a': a device node needs b, c, u or p",
                        d.path().display()
                    )))
                }
            };
            spec.devices.retain(|x| x.path != *d.path());
            spec.devices.push(Device {
                path: d.path().clone(),
                kind,
                major: d.major() as u64,
                minor: d.minor() as u64,
                mode: d.file_mode().unwrap_or(0o666),
                uid: d.uid().unwrap_or(0),
                gid: d.gid().unwrap_or(0),
            });
        }
    }
    if let Some(s) = l.seccomp() {
        spec.process.seccomp = Some(seccomp(s)?);
    }
    spec.root_propagation = match l.rootfs_propagation().as_deref() {
        None | Some("") => None,
        Some(p) => {
            let m = Mount::from_options(Path::new("/"), "none", None, &[p.to_string()])
                .map_err(|e| invalid(e.to_string()))?;
            if m.propagation == 0 {
                return Err(invalid(format!(
                    "linux.rootfsPropagation '{p}' is not allowed: private, rprivate, slave, rslave, shared, rshared, unbindable or runbindable"
                )));
            }
            Some(m.propagation)
        }
    };
    spec.masked_paths = l
        .masked_paths()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(PathBuf::from)
        .collect();
    spec.readonly_paths = l
        .readonly_paths()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(PathBuf::from)
        .collect();
    if let Some(per) = l.personality() {
        if per.flags().as_ref().is_some_and(|f| !f.is_empty()) {
            ignored.unimplemented("linux.personality.flags", "linux.personality.flags")?;
        }
        spec.personality = Some(match per.domain() {
            oci::LinuxPersonalityDomain::PerLinux => 0,
            oci::LinuxPersonalityDomain::PerLinux32 => 8,
        });
    }
    Ok(())
}

fn action(a: oci::LinuxSeccompAction, errno: Option<u32>) -> Result<Action, ConfigError> {
    use oci::LinuxSeccompAction as A;
    let errno = errno.unwrap_or(libc::EPERM as u32).min(0xffff) as u16;
    Ok(match a {
        A::ScmpActKill | A::ScmpActKillThread => Action::KillThread,
        A::ScmpActKillProcess => Action::KillProcess,
        A::ScmpActTrap => Action::Trap,
        A::ScmpActErrno => Action::Errno(errno),
        A::ScmpActTrace => Action::Trace(errno),
        A::ScmpActLog => Action::Log,
        A::ScmpActAllow => Action::Allow,
        A::ScmpActNotify => return Err(unsupported("linux.seccomp action SCMP_ACT_NOTIFY")),
    })
}

/// linux.seccomp as a kcell profile. Unknown syscall names are skipped, as
/// runc does (a profile names calls of newer kernels than the table).
pub fn seccomp(s: &oci::LinuxSeccomp) -> Result<Profile, ConfigError> {
    if s.listener_path().is_some() {
        return Err(unsupported("linux.seccomp.listenerPath"));
    }
    let mut flags = 0u32;
    for f in s.flags().iter().flatten() {
        flags |= match f {
            oci::LinuxSeccompFilterFlag::SeccompFilterFlagLog => 2,
            oci::LinuxSeccompFilterFlag::SeccompFilterFlagTsync => 1,
            oci::LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => 4,
            oci::LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => {
                return Err(unsupported(
                    "linux.seccomp flag SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
                ))
            }
        };
    }
    let architectures = s
        .architectures()
        .iter()
        .flatten()
        .filter_map(|a| match serde_json::to_value(a).ok()?.as_str()? {
            "SCMP_ARCH_X86" => Some(crate::seccomp::AUDIT_ARCH_I386),
            _ => None,
        })
        .collect();
    let mut rules = Vec::new();
    for sc in s.syscalls().iter().flatten() {
        let numbers: Vec<i64> = sc
            .names()
            .iter()
            .filter_map(|n| crate::seccomp::number(n))
            .collect();
        if numbers.is_empty() {
            continue;
        }
        let args = sc
            .args()
            .iter()
            .flatten()
            .map(|a| {
                let op = match a.op() {
                    oci::LinuxSeccompOperator::ScmpCmpNe => Op::Ne,
                    oci::LinuxSeccompOperator::ScmpCmpLt => Op::Lt,
                    oci::LinuxSeccompOperator::ScmpCmpLe => Op::Le,
                    oci::LinuxSeccompOperator::ScmpCmpEq => Op::Eq,
                    oci::LinuxSeccompOperator::ScmpCmpGe => Op::Ge,
                    oci::LinuxSeccompOperator::ScmpCmpGt => Op::Gt,
                    oci::LinuxSeccompOperator::ScmpCmpMaskedEq => Op::MaskedEq,
                };
                if a.index() > 5 {
                    return Err(invalid(format!(
                        "linux.seccomp argument index {} is not allowed: 0 to 5",
                        a.index()
                    )));
                }
                Ok(ArgCmp {
                    index: a.index() as u8,
                    op,
                    value: a.value(),
                    value_two: a.value_two().unwrap_or(0),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        rules.push(crate::seccomp::Rule {
            syscalls: numbers,
            action: action(sc.action(), sc.errno_ret())?,
            args,
        });
    }
    let profile = Profile {
        default_action: action(s.default_action(), s.default_errno_ret())?,
        architectures,
        rules,
        flags,
    };
    crate::seccomp::compile(&profile).map_err(|e| invalid(format!("linux.seccomp: {e}")))?;
    Ok(profile)
}
