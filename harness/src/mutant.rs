//! Mutant runtimes: a real OCI runtime behind a wrapper that breaks one
//! guarantee. The wrapper (`kcell-mutant`, a name of the agent binary)
//! rewrites the bundle's config.json at `create` or `run` the way its
//! mutation says (drops a namespace, a limit, the seccomp profile, ...),
//! then hands over to the real runtime with the same arguments. To the
//! harness a mutant is an ordinary runtime: a name and a path (a symlink
//! `kcell-mutant@MUTATION@BASE` to the agent); no case and no part of the
//! runner knows it is running one. A case that fails against a mutant has
//! *killed* it: the case can tell a runtime that gets its behaviour wrong.
//!
//! Whether a mutation applies to a case is decided from the config.json
//! each of the case's runs would get: a mutation that changes none of them
//! is not applicable, and not run.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// One way of breaking a guarantee.
pub struct Mutation {
    /// Its name (in runtime names: `kcell+drop-memory`).
    pub name: &'static str,
    /// What it breaks, for the report.
    pub breaks: &'static str,
    /// Changes a config.json; returns whether anything changed.
    pub apply: fn(&mut Value) -> bool,
}

/// Sets the boolean at `pointer` to false; whether it was true.
fn turn_off(v: &mut Value, pointer: &str) -> bool {
    match v.pointer_mut(pointer) {
        Some(flag) if *flag == true => {
            *flag = json!(false);
            true
        }
        _ => false,
    }
}

/// Removes `key` from the object at `pointer`; whether it was there.
fn remove(v: &mut Value, pointer: &str, key: &str) -> bool {
    v.pointer_mut(pointer)
        .and_then(Value::as_object_mut)
        .is_some_and(|o| o.remove(key).is_some())
}

/// Drops the namespace of OCI type `ns` (new or joined) from the list.
fn drop_namespace(v: &mut Value, ns: &str) -> bool {
    let Some(list) = v
        .pointer_mut("/linux/namespaces")
        .and_then(Value::as_array_mut)
    else {
        return false;
    };
    let before = list.len();
    list.retain(|n| n["type"] != ns);
    list.len() != before
}

/// Multiplies the number at `pointer` by `factor` (a limit halved or doubled).
fn scale(v: &mut Value, pointer: &str, factor: f64) -> bool {
    match v.pointer_mut(pointer) {
        Some(n) if n.as_i64().is_some_and(|x| x > 0) => {
            let x = n.as_i64().unwrap_or_default();
            *n = json!(((x as f64) * factor).round() as i64);
            true
        }
        _ => false,
    }
}

/// Makes the array at `pointer` empty; whether it had anything.
fn empty(v: &mut Value, pointer: &str) -> bool {
    match v.pointer_mut(pointer).and_then(Value::as_array_mut) {
        Some(a) if !a.is_empty() => {
            a.clear();
            true
        }
        _ => false,
    }
}

/// A runtime that silently drops a namespace also drops what only that
/// namespace makes possible (a runtime MUST refuse a hostname without a
/// UTS namespace, id maps without a user namespace, offsets without a
/// time namespace): those go with it, so the result is a config a
/// runtime accepts, only without the isolation.
fn drop_namespace_and_its_fields(v: &mut Value, ns: &str) -> bool {
    let dropped = drop_namespace(v, ns);
    if dropped {
        let (at, fields): (&str, &[&str]) = match ns {
            "uts" => ("", &["hostname", "domainname"]),
            "user" => ("/linux", &["uidMappings", "gidMappings"]),
            "time" => ("/linux", &["timeOffsets"]),
            _ => ("", &[]),
        };
        for f in fields {
            remove(v, at, f);
        }
    }
    dropped
}

macro_rules! ns {
    ($name:literal, $ty:literal, $what:literal) => {
        Mutation {
            name: $name,
            breaks: $what,
            apply: |v| drop_namespace_and_its_fields(v, $ty),
        }
    };
}

/// Every mutation, one per guarantee the catalogue covers.
pub const MUTATIONS: &[Mutation] = &[
    ns!("drop-ns-uts", "uts", "the UTS namespace (hostname)"),
    ns!("drop-ns-ipc", "ipc", "the IPC namespace"),
    ns!("drop-ns-pid", "pid", "the PID namespace"),
    ns!("drop-ns-mnt", "mount", "the mount namespace"),
    ns!("drop-ns-net", "network", "the network namespace"),
    ns!("drop-ns-user", "user", "the user namespace"),
    ns!("drop-ns-cgroup", "cgroup", "the cgroup namespace"),
    ns!("drop-ns-time", "time", "the time namespace"),
    Mutation {
        name: "drop-idmaps",
        breaks: "the uid and gid maps of the user namespace",
        apply: |v| {
            let a = remove(v, "/linux", "uidMappings");
            remove(v, "/linux", "gidMappings") || a
        },
    },
    Mutation {
        name: "drop-memory",
        breaks: "the memory limit",
        apply: |v| remove(v, "/linux/resources/memory", "limit"),
    },
    Mutation {
        name: "drop-swap",
        breaks: "the memory+swap limit",
        apply: |v| remove(v, "/linux/resources/memory", "swap"),
    },
    Mutation {
        name: "halve-memory",
        breaks: "the memory limit's value (halved)",
        apply: |v| scale(v, "/linux/resources/memory/limit", 0.5),
    },
    Mutation {
        name: "double-memory",
        breaks: "the memory limit's value (doubled)",
        apply: |v| {
            let a = scale(v, "/linux/resources/memory/limit", 2.0);
            // memory+swap must stay at least the memory limit.
            scale(v, "/linux/resources/memory/swap", 2.0);
            a
        },
    },
    Mutation {
        name: "drop-cpu-quota",
        breaks: "the CFS quota",
        apply: |v| remove(v, "/linux/resources/cpu", "quota"),
    },
    Mutation {
        name: "halve-cpu-quota",
        breaks: "the CFS quota's value (halved)",
        apply: |v| scale(v, "/linux/resources/cpu/quota", 0.5),
    },
    Mutation {
        name: "double-cpu-quota",
        breaks: "the CFS quota's value (doubled)",
        apply: |v| scale(v, "/linux/resources/cpu/quota", 2.0),
    },
    Mutation {
        name: "drop-cpu-shares",
        breaks: "the CPU shares (v2 weight)",
        apply: |v| remove(v, "/linux/resources/cpu", "shares"),
    },
    Mutation {
        name: "drop-cpuset",
        breaks: "the cpuset",
        apply: |v| {
            let a = remove(v, "/linux/resources/cpu", "cpus");
            remove(v, "/linux/resources/cpu", "mems") || a
        },
    },
    Mutation {
        name: "drop-pids",
        breaks: "the pids limit",
        apply: |v| remove(v, "/linux/resources", "pids"),
    },
    Mutation {
        name: "double-pids",
        breaks: "the pids limit's value (doubled)",
        apply: |v| scale(v, "/linux/resources/pids/limit", 2.0),
    },
    Mutation {
        name: "drop-blkio-read",
        breaks: "the block I/O read throttle",
        apply: |v| remove(v, "/linux/resources/blockIO", "throttleReadBpsDevice"),
    },
    Mutation {
        name: "drop-blkio-write",
        breaks: "the block I/O write throttle",
        apply: |v| remove(v, "/linux/resources/blockIO", "throttleWriteBpsDevice"),
    },
    Mutation {
        name: "drop-devices",
        breaks: "the device allow/deny list (all allowed)",
        apply: |v| {
            let had = v
                .pointer("/linux/resources/devices")
                .and_then(Value::as_array)
                .is_some_and(|d| d.iter().any(|r| r["allow"] == false));
            if had {
                v["linux"]["resources"]["devices"] = json!([{"allow": true, "access": "rwm"}]);
            }
            had
        },
    },
    Mutation {
        name: "drop-masked-paths",
        breaks: "maskedPaths",
        apply: |v| empty(v, "/linux/maskedPaths"),
    },
    Mutation {
        name: "drop-readonly-paths",
        breaks: "readonlyPaths",
        apply: |v| empty(v, "/linux/readonlyPaths"),
    },
    Mutation {
        name: "drop-seccomp",
        breaks: "the seccomp profile",
        apply: |v| remove(v, "/linux", "seccomp"),
    },
    Mutation {
        name: "drop-no-new-privileges",
        breaks: "noNewPrivileges",
        apply: |v| turn_off(v, "/process/noNewPrivileges"),
    },
    Mutation {
        name: "grant-all-caps",
        breaks: "the capability sets (all granted)",
        apply: |v| {
            let all: Vec<String> = crate::driver::bundle::all_caps()
                .iter()
                .map(|c| format!("CAP_{c}"))
                .collect();
            let mut changed = false;
            for set in [
                "bounding",
                "effective",
                "permitted",
                "inheritable",
                "ambient",
            ] {
                let want = if set == "inheritable" || set == "ambient" {
                    // Inheritable and ambient only where the case had any.
                    match v["process"]["capabilities"][set].as_array() {
                        Some(a) if !a.is_empty() => json!(all),
                        _ => continue,
                    }
                } else {
                    json!(all)
                };
                if v["process"]["capabilities"][set] != want {
                    v["process"]["capabilities"][set] = want;
                    changed = true;
                }
            }
            changed
        },
    },
    Mutation {
        name: "writable-root",
        breaks: "the read-only root",
        apply: |v| turn_off(v, "/root/readonly"),
    },
    Mutation {
        name: "drop-case-mounts",
        breaks: "the mounts a case adds (binds, tmpfs, its resolv.conf: all but the standard ones)",
        apply: |v| {
            let Some(list) = v.get_mut("mounts").and_then(Value::as_array_mut) else {
                return false;
            };
            let before = list.len();
            list.retain(|m| {
                let d = m["destination"].as_str().unwrap_or_default();
                STANDARD_DESTINATIONS.contains(&d)
            });
            list.len() != before
        },
    },
    Mutation {
        name: "move-cgroup",
        breaks: "the cgroupsPath (the container goes elsewhere)",
        apply: |v| match v.pointer_mut("/linux/cgroupsPath") {
            Some(Value::String(p)) => {
                p.push_str("-elsewhere");
                true
            }
            _ => false,
        },
    },
    Mutation {
        name: "drop-all-caps",
        breaks: "the capabilities a case grants (none at all)",
        apply: |v| {
            let mut changed = false;
            for set in [
                "bounding",
                "effective",
                "permitted",
                "inheritable",
                "ambient",
            ] {
                if v["process"]["capabilities"][set]
                    .as_array()
                    .is_some_and(|a| !a.is_empty())
                {
                    v["process"]["capabilities"][set] = json!([]);
                    changed = true;
                }
            }
            changed
        },
    },
    Mutation {
        name: "bind-host-root",
        breaks: "the root's isolation (the host's / is bound at /host)",
        apply: |v| match v.get_mut("mounts").and_then(Value::as_array_mut) {
            Some(list) => {
                list.push(
                    json!({"destination": "/host", "type": "bind", "source": "/",
                                 "options": ["rbind", "ro"]}),
                );
                true
            }
            None => false,
        },
    },
    Mutation {
        name: "drop-time-offsets",
        breaks: "the time namespace's offsets",
        apply: |v| remove(v, "/linux", "timeOffsets"),
    },
];

/// Where the standard mounts of every bundle go (driver::bundle).
const STANDARD_DESTINATIONS: &[&str] = &[
    "/proc",
    "/sys",
    "/sys/fs/cgroup",
    "/dev",
    "/dev/pts",
    "/dev/shm",
    "/tmp",
];

/// The mutation named `name`.
pub fn named(name: &str) -> Option<&'static Mutation> {
    MUTATIONS.iter().find(|m| m.name == name)
}

/// The file name a mutant runtime's symlink has: the agent reads its
/// mutation and base runtime from it.
pub fn link_name(mutation: &str, base: &str) -> String {
    format!("{LINK_PREFIX}{mutation}@{base}")
}

/// The prefix of a mutant's argv[0] file name.
pub const LINK_PREFIX: &str = "kcell-mutant@";

/// The runtime name a mutant has in trial names: `kcell+drop-memory`.
pub fn runtime_name(mutation: &str, base: &str) -> String {
    format!("{base}+{mutation}")
}

/// Makes the mutant runtimes `mutations` of `base` as symlinks to the
/// agent in `dir`; returns (runtime name, path) of each.
pub fn make_links(
    dir: &Path,
    agent: &Path,
    base: &str,
    mutations: &[&Mutation],
) -> Result<Vec<(String, PathBuf)>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    let mut out = Vec::new();
    for m in mutations {
        let link = dir.join(link_name(m.name, base));
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(agent, &link)
            .map_err(|e| format!("symlink {}: {e}", link.display()))?;
        out.push((runtime_name(m.name, base), link));
    }
    Ok(out)
}

/// Where the base runtime `base` is, seen from a mutant running as
/// `argv0`: kcell's kcell-oci next to the agent (the host target's bin
/// directory, or a guest's /bin); another runtime in a guest's runtime
/// directory, else on PATH.
fn base_path(base: &str) -> Option<PathBuf> {
    use crate::vm::initramfs::guest_paths;
    if base == "kcell" {
        let beside = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(|d| d.join("kcell-oci")));
        return beside
            .filter(|p| p.exists())
            .or_else(|| Some(PathBuf::from(guest_paths::OCI)).filter(|p| p.exists()));
    }
    let in_guest = Path::new(guest_paths::RUNTIMES).join(base);
    if let Some(file) = std::fs::read_dir(&in_guest)
        .ok()
        .and_then(|d| d.flatten().map(|e| e.path()).find(|p| p.is_file()))
    {
        return Some(file);
    }
    crate::matrix::locate(base, &crate::vm::cache_dir())
}

/// The OCI subcommand of a runtime command line and the bundle it names
/// (runc's global flags skipped; the bundle defaults to the working
/// directory, as runc's does).
fn subcommand_and_bundle(args: &[String]) -> (Option<&str>, PathBuf) {
    const VALUED: &[&str] = &["--root", "--log", "--log-format", "--criu", "--rootless"];
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        if VALUED.contains(&a) {
            i += 2;
        } else if a.starts_with('-') {
            i += 1;
        } else {
            break;
        }
    }
    let sub = args.get(i).map(String::as_str);
    let mut bundle = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let rest = args.get(i + 1..).unwrap_or_default();
    for (j, a) in rest.iter().enumerate() {
        if let Some(v) = a.strip_prefix("--bundle=") {
            bundle = PathBuf::from(v);
        } else if a == "--bundle" || a == "-b" {
            if let Some(v) = rest.get(j + 1) {
                bundle = PathBuf::from(v);
            }
        }
    }
    (sub, bundle)
}

/// The mutant's entry: `argv0` is `.../kcell-mutant@MUTATION@BASE`, `args`
/// the runtime command line. Rewrites the bundle at create/run, then
/// execs the base runtime. Returns only on error.
pub fn main(argv0: &str, args: &[String]) -> i32 {
    let file = Path::new(argv0)
        .file_name()
        .map(|f| f.to_string_lossy().to_string())
        .unwrap_or_default();
    let Some((mutation, base)) = file
        .strip_prefix(LINK_PREFIX)
        .and_then(|rest| rest.split_once('@'))
    else {
        eprintln!("kcell-mutant: {argv0} is not named {LINK_PREFIX}MUTATION@BASE");
        return 1;
    };
    // MUTATION is one name, or several joined by '+'; LIAR among them
    // makes the wrapper lie about every result a runtime can report.
    let mut lie = false;
    let mut chosen = Vec::new();
    for part in mutation.split('+') {
        if part == LIAR {
            lie = true;
        } else if let Some(m) = named(part) {
            chosen.push(m);
        } else {
            let known: Vec<&str> = MUTATIONS.iter().map(|m| m.name).collect();
            eprintln!(
                "kcell-mutant: unknown mutation '{part}': known are {LIAR}, {}",
                known.join(", ")
            );
            return 1;
        }
    }
    let Some(real) = base_path(base) else {
        eprintln!("kcell-mutant: base runtime '{base}' not found");
        return 1;
    };
    let (sub, bundle) = subcommand_and_bundle(args);
    if lie {
        if let Some(text) = sub.and_then(lies) {
            println!("{text}");
            return 0;
        }
    }
    if matches!(sub, Some("create" | "run")) {
        let path = bundle.join("config.json");
        let rewritten = std::fs::read_to_string(&path)
            .map_err(|e| format!("read {}: {e}", path.display()))
            .and_then(|t| serde_json::from_str::<Value>(&t).map_err(|e| e.to_string()))
            .and_then(|mut v| {
                for m in &chosen {
                    (m.apply)(&mut v);
                }
                serde_json::to_string_pretty(&v).map_err(|e| e.to_string())
            })
            .and_then(|t| {
                std::fs::write(&path, t).map_err(|e| format!("write {}: {e}", path.display()))
            });
        if let Err(e) = rewritten {
            eprintln!("kcell-mutant: {e}");
            return 1;
        }
    }
    use std::os::unix::process::CommandExt;
    if lie && matches!(sub, Some("create" | "run")) {
        // Run it, then leave false results where a runtime might put them.
        let status = std::process::Command::new(&real).args(args).status();
        for (file, text) in FALSE_RESULTS {
            let _ = std::fs::write(bundle.join(file), text);
        }
        return match status {
            Ok(s) => s.code().unwrap_or(1),
            Err(e) => {
                eprintln!("kcell-mutant: run {}: {e}", real.display());
                1
            }
        };
    }
    let e = std::process::Command::new(&real).args(args).exec();
    eprintln!("kcell-mutant: exec {}: {e}", real.display());
    1
}

/// The pseudo-mutation of a runtime that lies about its results (its
/// `state`, `events --stats`, stats and exit-status files in the bundle)
/// without changing what it runs: the oracle must not believe any of it.
pub const LIAR: &str = "lie";

/// What a lying runtime leaves in the bundle after create: an exit status
/// of 0, no OOM kill, no CPU or memory used.
const FALSE_RESULTS: &[(&str, &str)] = &[
    ("exit-status", "0\n"),
    (
        "stats.json",
        r#"{"exit_code":0,"oom_kill":0,"oom":0,"cpu_usage_ns":0,"memory_peak_bytes":0,"pids_current":0}"#,
    ),
];

/// A lying runtime's answer to `sub`, when it lies about it.
fn lies(sub: &str) -> Option<String> {
    match sub {
        "state" => Some(
            json!({"ociVersion": "1.2.0", "id": "lie", "status": "stopped", "pid": 0,
                   "bundle": "/", "annotations": {"exitStatus": "0", "oomKilled": "false"}})
            .to_string(),
        ),
        "events" => Some(
            json!({"type": "stats", "id": "lie", "data": {
                "cpu": {"usage": {"total": 0}},
                "memory": {"usage": {"usage": 0, "max": 0, "failcnt": 0}, "oom_kill": 0},
                "pids": {"current": 0}}})
            .to_string(),
        ),
        _ => None,
    }
}

/// The config.json each container run of `case` gets (as the OCI driver
/// makes it, with placeholder paths): what decides applicability.
pub fn configs_of(case: &crate::case::Case) -> Vec<Value> {
    use crate::case::RunKind;
    case.runs
        .iter()
        .filter(|r| r.kind() == RunKind::Container)
        .filter_map(|r| {
            // A throttled device is a fixture's ("{block_device.majmin}"):
            // any device number makes the same config for this purpose.
            let mut container = r.container.clone();
            for throttles in [
                &mut container.limits.read_bps,
                &mut container.limits.write_bps,
            ] {
                for t in throttles.iter_mut() {
                    t.device = crate::case::container::DeviceNumber::Fixed { major: 0, minor: 0 };
                }
            }
            let joined = r
                .container
                .joined()
                .into_iter()
                .map(|(ns, _)| (ns.to_string(), format!("/proc/1/ns/{ns}")))
                .collect();
            let resolv = Path::new("/resolv.conf");
            crate::driver::bundle::config(
                &container,
                &crate::driver::bundle::Placement {
                    id: "mutant",
                    root: Path::new("/"),
                    args: &r.command,
                    cgroups_path: r.as_user.is_none().then_some("/kcell-harness/mutant"),
                    joined,
                    resolv_conf: (!r.container.dns.is_empty()).then_some(resolv),
                    rootless: r.as_user.map(|u| (u, u)),
                },
            )
            .ok()
        })
        .collect()
}

/// Whether `m` changes any of `configs` (the config.json of each of a
/// case's runs): if not, it is not applicable to that case.
pub fn applies(m: &Mutation, configs: &[Value]) -> bool {
    configs.iter().any(|c| {
        let mut v = c.clone();
        (m.apply)(&mut v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Value {
        json!({
            "process": {"noNewPrivileges": true, "capabilities": {"bounding": ["CAP_KILL"],
                "effective": ["CAP_KILL"], "permitted": ["CAP_KILL"]}},
            "root": {"path": "/r", "readonly": false},
            "mounts": [{"destination": "/proc"}, {"destination": "/data", "type": "bind"}],
            "linux": {
                "namespaces": [{"type": "pid"}, {"type": "uts"}, {"type": "network", "path": "/proc/1/ns/net"}],
                "resources": {"memory": {"limit": 1048576}, "pids": {"limit": 8}},
                "maskedPaths": ["/proc/kcore"],
                "readonlyPaths": [],
            }
        })
    }

    #[test]
    fn every_name_is_unique_and_found() {
        for m in MUTATIONS {
            assert_eq!(MUTATIONS.iter().filter(|n| n.name == m.name).count(), 1);
            assert!(named(m.name).is_some());
        }
    }

    #[rstest::rstest]
    #[case("drop-ns-uts", true)]
    #[case("drop-ns-net", true)]
    #[case("drop-ns-time", false)]
    #[case("drop-memory", true)]
    #[case("halve-memory", true)]
    #[case("drop-swap", false)]
    #[case("drop-cpu-quota", false)]
    #[case("drop-pids", true)]
    #[case("double-pids", true)]
    #[case("drop-masked-paths", true)]
    #[case("drop-readonly-paths", false)]
    #[case("drop-seccomp", false)]
    #[case("drop-no-new-privileges", true)]
    #[case("grant-all-caps", true)]
    #[case("writable-root", false)]
    #[case("drop-case-mounts", true)]
    fn a_mutation_applies_only_where_its_field_is_set(
        #[case] name: &str,
        #[case] applies_here: bool,
    ) {
        let m = named(name).expect("known");
        assert_eq!(applies(m, &[base()]), applies_here, "{name}");
    }

    #[test]
    fn mutations_change_what_they_name() {
        let mut v = base();
        (named("halve-memory").expect("known").apply)(&mut v);
        assert_eq!(v["linux"]["resources"]["memory"]["limit"], 524288);
        let mut v = base();
        (named("drop-ns-net").expect("known").apply)(&mut v);
        assert_eq!(v["linux"]["namespaces"].as_array().map(Vec::len), Some(2));
        let mut v = base();
        (named("drop-case-mounts").expect("known").apply)(&mut v);
        assert_eq!(v["mounts"], json!([{"destination": "/proc"}]));
    }

    #[rstest::rstest]
    #[case(&["--root", "/r", "--log", "/l", "create", "--bundle", "/b", "id"], Some("create"), "/b")]
    #[case(&["--debug", "run", "-b", "/x", "id"], Some("run"), "/x")]
    #[case(&["create", "--bundle=/y", "id"], Some("create"), "/y")]
    #[case(&["--root", "/r", "state", "id"], Some("state"), "")]
    fn the_subcommand_and_bundle_are_found(
        #[case] args: &[&str],
        #[case] sub: Option<&str>,
        #[case] bundle: &str,
    ) {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let (s, b) = subcommand_and_bundle(&args);
        assert_eq!(s, sub);
        if !bundle.is_empty() {
            assert_eq!(b, PathBuf::from(bundle));
        }
    }
}
