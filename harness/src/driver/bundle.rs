//! A run's container as an OCI bundle's config.json. The defaults are a
//! container as Docker and kcell make one (the namespaces but user and
//! time; /proc, a read-only /sys with the container's own cgroup, a tmpfs
//! /dev, /tmp; runc's masked and read-only paths; Docker's fourteen
//! capabilities; no_new_privs; a seccomp profile denying what Docker's
//! denies), changed by what the case's [`Container`] says. The harness
//! chooses the cgroupsPath, so it knows where to read the counters.

use crate::case::container::{
    Container, DeviceNumber, DeviceRule, Limits, MountDesc, SeccompChoice, Throttle,
};
use serde_json::{json, Value};
use std::path::Path;

/// Docker's default capability set.
pub const DEFAULT_CAPS: &[&str] = &[
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

/// Every capability name this build knows (the `caps` crate's list, in
/// kernel order), without the CAP_ prefix.
pub fn all_caps() -> Vec<String> {
    let mut all: Vec<caps::Capability> = caps::all().into_iter().collect();
    all.sort_by_key(|c| c.index());
    all.iter()
        .map(|c| c.to_string().trim_start_matches("CAP_").to_string())
        .collect()
}

/// The calls the default profile answers with EPERM (Docker's default
/// profile denies them to a container without extra capabilities).
pub const DENIED_CALLS: &[&str] = &[
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "perf_event_open",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "open_by_handle_at",
    "name_to_handle_at",
    "userfaultfd",
    "acct",
    "swapon",
    "swapoff",
    "quotactl",
    "lookup_dcookie",
    "uselib",
];

/// runc's masked paths.
pub const MASKED: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// runc's read-only paths.
pub const READONLY: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// What the bundle needs besides the case's description.
pub struct Placement<'a> {
    /// The container's ID (its default hostname).
    pub id: &'a str,
    /// The root directory.
    pub root: &'a Path,
    /// argv.
    pub args: &'a [String],
    /// The cgroup the harness chose (None: a rootless run, no cgroup).
    pub cgroups_path: Option<&'a str>,
    /// /proc/PID/ns files of joined namespaces, by namespace.
    pub joined: Vec<(String, String)>,
    /// A resolv.conf file of the harness's to bind at /etc/resolv.conf.
    pub resolv_conf: Option<&'a Path>,
    /// The caller's uid and gid when the runtime runs without root.
    pub rootless: Option<(u32, u32)>,
}

fn oci_namespace(ns: &str) -> &str {
    match ns {
        "mnt" => "mount",
        "net" => "network",
        other => other,
    }
}

fn caps(c: &Container) -> Result<Vec<String>, String> {
    let all = all_caps();
    let mut set: Vec<String> = DEFAULT_CAPS.iter().map(|c| c.to_string()).collect();
    for d in &c.capabilities.drop {
        if d.eq_ignore_ascii_case("ALL") {
            set.clear();
        } else {
            let name = d.to_ascii_uppercase();
            set.retain(|c| c != name.trim_start_matches("CAP_"));
        }
    }
    for a in &c.capabilities.add {
        if a.eq_ignore_ascii_case("ALL") {
            // All that the harness holds itself: a runtime cannot grant more
            // (this machine's root may lack some, e.g. CAP_SYS_RESOURCE).
            let held: Vec<String> = caps::read(None, caps::CapSet::Permitted)
                .map(|h| h.iter().map(|c| c.to_string()).collect())
                .unwrap_or_default();
            set = all
                .iter()
                .filter(|c| held.is_empty() || held.contains(&format!("CAP_{c}")))
                .cloned()
                .collect();
            continue;
        }
        let name = a.to_ascii_uppercase();
        let bare = name.trim_start_matches("CAP_").to_string();
        if !all.contains(&bare) {
            return Err(format!(
                "unknown capability '{a}': allowed are ALL or one of {}",
                all.join(", ")
            ));
        }
        if !set.contains(&bare) {
            set.push(bare);
        }
    }
    Ok(set.iter().map(|c| format!("CAP_{c}")).collect())
}

pub use crate::text::size;

/// A throttle with its device number (a fixture's variable already
/// replaced, see oci.rs) in the OCI form.
fn rate(t: &Throttle) -> Result<Value, String> {
    match &t.device {
        DeviceNumber::Fixed { major, minor } => {
            Ok(json!({"major": major, "minor": minor, "rate": t.rate.0}))
        }
        DeviceNumber::Variable(v) => Err(format!(
            "throttle '{}': the device {v} was not replaced by its fixture",
            t.text
        )),
    }
}

fn device_rule(d: &DeviceRule) -> Value {
    json!({"allow": false, "type": d.kind.to_string(), "major": d.major, "minor": d.minor, "access": d.access})
}

/// The harness's default seccomp profile, in the OCI form.
pub fn seccomp(choice: SeccompChoice) -> Option<Value> {
    let mut syscalls = vec![json!({
        "names": DENIED_CALLS, "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EPERM
    })];
    match choice {
        SeccompChoice::Unconfined => return None,
        SeccompChoice::Default => {}
        SeccompChoice::DenyUserns => {
            syscalls.push(
                json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::ENOSYS}),
            );
            syscalls.push(json!({
                "names": ["unshare", "clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EPERM,
                "args": [{"index": 0, "value": libc::CLONE_NEWUSER, "valueTwo": libc::CLONE_NEWUSER,
                          "op": "SCMP_CMP_MASKED_EQ"}]
            }));
        }
    }
    Some(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": syscalls
    }))
}

fn mount(m: &MountDesc) -> Value {
    let mut options = m.options.clone();
    if m.kind == "bind" && !options.iter().any(|o| o == "bind" || o == "rbind") {
        options.insert(0, "rbind".into());
    }
    json!({"destination": m.destination, "type": m.kind,
           "source": m.source.clone().unwrap_or_else(|| m.kind.clone()), "options": options})
}

/// The config.json of `c` placed as `p` says, built per concern: the
/// namespaces, the process, the mounts, the linux section (id maps,
/// resources, devices, seccomp).
pub fn config(c: &Container, p: &Placement) -> Result<Value, String> {
    let new = namespaces_made(c, p);
    let user_ns = new.contains(&"user");
    let (uid, gid) = user_ids(c)?;
    let caps = caps(c)?;
    let held: Vec<String> = if uid == 0 { caps.clone() } else { Vec::new() };
    let mut env = vec![
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        "HOME=/root".to_string(),
        format!("HOSTNAME={}", c.hostname.as_deref().unwrap_or(p.id)),
    ];
    env.extend(c.env.iter().cloned());
    let mut process = json!({
        "terminal": false,
        "user": {"uid": uid, "gid": gid},
        "args": p.args,
        "env": env,
        "cwd": c.cwd.as_deref().unwrap_or("/"),
        "capabilities": {"bounding": caps, "effective": held, "permitted": held},
        "noNewPrivileges": true
    });
    if p.rootless.is_some() {
        process["user"] = json!({"uid": 0, "gid": 0});
    }
    let unmapped = user_ns && c.uid_map.is_empty() && p.rootless.is_none();
    let mut config = json!({
        "ociVersion": "1.0.2",
        "process": process,
        "root": {"path": p.root.display().to_string(), "readonly": false},
        "mounts": mounts(c, p, &new, unmapped),
        "linux": linux(c, p, &new)?,
    });
    if new.contains(&"uts") {
        config["hostname"] = json!(c.hostname.as_deref().unwrap_or(p.id));
    }
    Ok(config)
}

/// The namespaces the container gets made: the case's, and a user
/// namespace for a runtime run without root.
fn namespaces_made(c: &Container, p: &Placement) -> Vec<&'static str> {
    let mut new = c.new_namespaces();
    if p.rootless.is_some()
        && !new.contains(&"user")
        && c.namespaces.get("user") != Some(&crate::case::container::NsChoice::Host)
    {
        // A runtime run without root makes its container in a user namespace.
        new.push("user");
    }
    new
}

/// UID and GID of the container's process (`user = "UID[:GID]"`, root by default).
fn user_ids(c: &Container) -> Result<(u32, u32), String> {
    match &c.user {
        Some(u) => {
            let (a, b) = u.split_once(':').unwrap_or((u, u));
            let n = |s: &str| {
                s.parse::<u32>()
                    .map_err(|_| format!("user '{u}' is not UID[:GID]"))
            };
            Ok((n(a)?, n(b)?))
        }
        None => Ok((0, 0)),
    }
}

/// The standard mounts (as runc's spec writes them), then the case's.
fn mounts(c: &Container, p: &Placement, new: &[&str], unmapped: bool) -> Vec<Value> {
    let user_ns = new.contains(&"user");
    let nsn = json!(["nosuid", "noexec", "nodev"]);
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": nsn}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
    ];
    if new.contains(&"cgroup") && !user_ns && p.cgroups_path.is_some() {
        mounts.push(
            json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                           "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
        );
    }
    let mut pts = vec![
        "nosuid",
        "noexec",
        "newinstance",
        "ptmxmode=0666",
        "mode=0620",
    ];
    if !user_ns {
        pts.push("gid=5");
    }
    if unmapped {
        // Nothing can be created in a user namespace without a mapping
        // (EOVERFLOW): the host's /dev, with fresh pts and shm over it.
        mounts.push(json!({"destination": "/dev", "type": "bind", "source": "/dev", "options": ["rbind", "nosuid"]}));
    } else {
        mounts.push(
            json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                           "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        );
    }
    mounts.push(
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": pts}),
    );
    mounts.push(
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                       "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
    );
    mounts.push(json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]}));
    mounts.extend(c.mounts.iter().map(mount));
    if let Some(r) = p.resolv_conf {
        mounts.push(json!({"destination": "/etc/resolv.conf", "type": "bind",
                           "source": r.display().to_string(), "options": ["rbind", "ro"]}));
    }
    mounts
}

/// One id map line "IN:OUT:LEN" in the OCI form.
fn id_map(line: &str) -> Result<Value, String> {
    let bad = || format!("id map '{line}' is not IN:OUT:LEN");
    let f: Vec<&str> = line.split(':').collect();
    let n = |s: &str| s.parse::<u32>().map_err(|_| bad());
    match f.as_slice() {
        [i, o, len] => Ok(json!({"containerID": n(i)?, "hostID": n(o)?, "size": n(len)?})),
        _ => Err(bad()),
    }
}

/// The linux section: namespaces, masked and read-only paths, id maps,
/// clock offsets, the cgroup, resources, devices, seccomp.
fn linux(c: &Container, p: &Placement, new: &[&str]) -> Result<Value, String> {
    let mut namespaces: Vec<Value> = new
        .iter()
        .map(|ns| json!({"type": oci_namespace(ns)}))
        .collect();
    for (ns, path) in &p.joined {
        namespaces.push(json!({"type": oci_namespace(ns), "path": path}));
    }
    let mut linux = json!({
        "namespaces": namespaces,
        "maskedPaths": MASKED,
        "readonlyPaths": READONLY,
    });
    if let Some((huid, hgid)) = p.rootless {
        linux["uidMappings"] = json!([{"containerID": 0, "hostID": huid, "size": 1}]);
        linux["gidMappings"] = json!([{"containerID": 0, "hostID": hgid, "size": 1}]);
    }
    if !c.uid_map.is_empty() {
        let maps = |lines: &[String]| {
            lines
                .iter()
                .map(|l| id_map(l))
                .collect::<Result<Vec<_>, _>>()
        };
        linux["uidMappings"] = json!(maps(&c.uid_map)?);
        linux["gidMappings"] = json!(maps(&c.gid_map)?);
    }
    if let Some(o) = c.time_offsets {
        linux["timeOffsets"] = json!({"monotonic": {"secs": o.monotonic, "nanosecs": 0},
                                       "boottime": {"secs": o.boottime, "nanosecs": 0}});
    }
    if let Some(path) = p.cgroups_path {
        linux["cgroupsPath"] = json!(path);
    }
    if !c.limits.is_empty() {
        linux["resources"] = resources(&c.limits)?;
    }
    // Every device allowed but those a case denies (runtimes differ in
    // their default otherwise: runc's denies what is not on its list).
    let mut rules = vec![json!({"allow": true, "access": "rwm"})];
    rules.extend(c.limits.device_deny.iter().map(device_rule));
    if p.rootless.is_none() {
        linux["resources"]["devices"] = json!(rules);
    }
    if let Some(s) = seccomp(c.seccomp) {
        linux["seccomp"] = s;
    }
    Ok(linux)
}

/// The limits as OCI resources.
fn resources(l: &Limits) -> Result<Value, String> {
    let mut r = json!({});
    if let Some(cpus) = l.cpus {
        r["cpu"]["quota"] = json!((cpus * 100_000.0).round() as i64);
        r["cpu"]["period"] = json!(100_000);
    }
    if let Some(s) = l.cpu_shares {
        r["cpu"]["shares"] = json!(s);
    }
    if let Some(set) = &l.cpuset {
        r["cpu"]["cpus"] = json!(set.0);
    }
    if let Some(m) = l.memory {
        r["memory"]["limit"] = json!(m.0);
        if let Some(s) = l.swap {
            // OCI's swap is memory plus swap.
            r["memory"]["swap"] = json!(m.0 + s.0);
        }
    }
    if let Some(n) = l.pids {
        r["pids"] = json!({"limit": n});
    }
    let throttles = |list: &[Throttle]| list.iter().map(rate).collect::<Result<Vec<_>, _>>();
    if !l.read_bps.is_empty() {
        r["blockIO"]["throttleReadBpsDevice"] = json!(throttles(&l.read_bps)?);
    }
    if !l.write_bps.is_empty() {
        r["blockIO"]["throttleWriteBpsDevice"] = json!(throttles(&l.write_bps)?);
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::container::{NsChoice, Size};

    fn place<'a>(args: &'a [String]) -> Placement<'a> {
        Placement {
            id: "c1",
            root: Path::new("/r"),
            args,
            cgroups_path: Some("/kcell-h/t/c1"),
            joined: Vec::new(),
            resolv_conf: None,
            rootless: None,
        }
    }

    #[test]
    fn the_default_container_is_dockers() {
        let args = vec!["true".to_string()];
        let c = config(&Container::default(), &place(&args)).expect("config");
        let ns: Vec<&str> = c["linux"]["namespaces"]
            .as_array()
            .expect("array")
            .iter()
            .filter_map(|n| n["type"].as_str())
            .collect();
        assert_eq!(ns, ["uts", "ipc", "pid", "mount", "network", "cgroup"]);
        assert_eq!(
            c["process"]["capabilities"]["bounding"]
                .as_array()
                .map(Vec::len),
            Some(14)
        );
        assert_eq!(c["linux"]["cgroupsPath"], "/kcell-h/t/c1");
        assert_eq!(c["hostname"], "c1");
        assert!(c["linux"]["seccomp"]["syscalls"][0]["names"]
            .to_string()
            .contains("keyctl"));
    }

    #[test]
    fn limits_become_resources_and_swap_adds_to_memory() {
        let args = vec!["true".to_string()];
        let mut c = Container {
            limits: Limits {
                cpus: Some(0.2),
                memory: Some(Size(10 << 20)),
                swap: Some(Size(0)),
                device_deny: toml::from_str::<Limits>("device_deny = [\"c 1:3 rwm\"]")
                    .expect("a rule")
                    .device_deny,
                ..Default::default()
            },
            ..Default::default()
        };
        c.namespaces.insert("uts".into(), NsChoice::Host);
        let v = config(&c, &place(&args)).expect("config");
        let r = &v["linux"]["resources"];
        assert_eq!(
            (r["cpu"]["quota"].as_i64(), r["memory"]["swap"].as_u64()),
            (Some(20_000), Some(10 << 20))
        );
        assert_eq!(r["devices"][1]["major"], 1);
        assert!(v.get("hostname").is_none(), "no UTS namespace, no hostname");
    }

    #[test]
    fn a_non_root_user_keeps_only_the_bounding_set() {
        let args = vec!["true".to_string()];
        let c = Container {
            user: Some("1000:1000".into()),
            ..Default::default()
        };
        let v = config(&c, &place(&args)).expect("config");
        assert_eq!(v["process"]["capabilities"]["effective"], json!([]));
        assert_eq!(v["process"]["user"]["uid"], 1000);
    }
}
