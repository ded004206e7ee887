//! What opencontainers/runtime-tools' validation programs ask of a runtime
//! where kcell-oci once fell short of runc or of the specification; each
//! test names the program it follows (validation/<name>). Judged from the
//! host: hook output files, /proc/PID/ns links, mountinfo and cgroup
//! files. Root only: without root each test says so and checks nothing.

use serde_json::json;
use std::path::{Path, PathBuf};

mod common;
use common::oci::{assert_refused, setup, wait_for};

/// One test at a time: linux_ns_itype's container mounts in this
/// process's namespace, which the other tests' census counts.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Mount points at or below `root` in this process's mount namespace.
fn mounts_below(root: &Path) -> Vec<String> {
    let root = std::fs::canonicalize(root).expect("realpath");
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(str::to_string))
        .filter(|p| Path::new(p).starts_with(&root))
        .collect()
}

/// Where the cgroup v1 hierarchy holding `controller` is mounted, if any.
fn v1_hierarchy(controller: &str) -> Option<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .ok()?
        .lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let mut post = post.split_whitespace();
            let (fstype, options) = (post.next()?, post.nth(1)?);
            let point = pre.split_whitespace().nth(4)?;
            (fstype == "cgroup" && options.split(',').any(|o| o == controller))
                .then(|| PathBuf::from(point))
        })
}

/// poststart_fail and poststop_fail: a failing hook after the container
/// started is a warning (runtime.md, lifecycle steps 10 and 13): the
/// step succeeds and the hooks after it still run.
#[test]
#[cfg_attr(
    kcell_unprivileged,
    ignore = "needs root: containers, cgroups and mounts (run the tests as root)"
)]
fn poststart_and_poststop_failures_warn_and_the_hooks_after_them_run() {
    let _one = one_at_a_time();
    let s = setup("hookfail");
    let before = s.census();
    let out = s.dir.path().join("hooks.out");
    let sh = s.rootfs.join("bin/sh");
    let hook = |script: &str| json!({ "path": sh, "args": ["sh", "-c", script] });
    let bundle = s.bundle("hookfail", &["true"], |c| {
        c["hooks"] = json!({
            "poststart": [hook("exit 1"), hook(&format!("echo post-start >> {}", out.display()))],
            "poststop": [hook("exit 2"), hook(&format!("echo post-stop >> {}", out.display()))],
        });
    });
    let id = "kcell-hookfail";
    let created = s.oci(&["create", "--bundle", &bundle.display().to_string(), id]);
    assert!(created.status.success(), "create: {created:?}");
    let started = s.oci(&["start", id]);
    assert!(started.status.success(), "start goes on: {started:?}");
    wait_for(|| s.status_of(id) == "stopped", "the container to stop");
    let read = || std::fs::read_to_string(&out).unwrap_or_default();
    assert_eq!(
        read(),
        "post-start\n",
        "the poststart hook after the failing one ran"
    );
    let deleted = s.oci(&["delete", id]);
    assert!(deleted.status.success(), "delete goes on: {deleted:?}");
    assert_eq!(read(), "post-start\npost-stop\n");
    assert_eq!(s.census(), before);
}

/// linux_ns_itype: a config without namespaces runs in every namespace of
/// its caller; its root is entered by chroot, with the config's mounts in
/// the caller's mount namespace below it, and they go with the container
/// (runc leaves them mounted). Sealing it would change the caller's
/// mounts: masked paths without a mount namespace are refused by name.
#[test]
#[cfg_attr(
    kcell_unprivileged,
    ignore = "needs root: containers, cgroups and mounts (run the tests as root)"
)]
fn without_namespaces_the_root_is_chrooted_and_its_mounts_go_with_it() {
    let _one = one_at_a_time();
    let s = setup("itype");
    let before = s.census();
    let no_namespaces = |c: &mut serde_json::Value| {
        c["linux"]["namespaces"] = json!([]);
        c["root"]["readonly"] = json!(false);
        if let Some(o) = c.as_object_mut() {
            o.remove("hostname");
        }
    };
    let masked = s.bundle("itype-masked", &["true"], no_namespaces);
    let refused = s.oci(&[
        "create",
        "--bundle",
        &masked.display().to_string(),
        "kcell-itm",
    ]);
    assert_refused(&refused, "masking paths needs the mnt namespace");
    assert_eq!(s.census(), before, "a refused create leaves nothing");

    let bundle = s.bundle("itype", &["true"], |c| {
        no_namespaces(c);
        let l = &mut c["linux"];
        l["maskedPaths"] = json!([]);
        l["readonlyPaths"] = json!([]);
    });
    let id = "kcell-itype";
    let created = s.oci(&["create", "--bundle", &bundle.display().to_string(), id]);
    assert!(created.status.success(), "create: {created:?}");
    let state: serde_json::Value =
        serde_json::from_slice(&s.oci(&["state", id]).stdout).expect("state is JSON");
    let pid = state["pid"].as_i64().expect("a pid");
    for ns in ["cgroup", "ipc", "mnt", "net", "pid", "user", "uts"] {
        let theirs = std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).expect("their ns");
        let ours = std::fs::read_link(format!("/proc/self/ns/{ns}")).expect("our ns");
        assert_eq!(theirs, ours, "the container shares the {ns} namespace");
    }
    let root = std::fs::read_link(format!("/proc/{pid}/root")).expect("its root");
    assert_eq!(root, std::fs::canonicalize(&s.rootfs).expect("realpath"));
    let mounted = mounts_below(&s.rootfs);
    assert!(
        mounted.iter().any(|m| m.ends_with("/proc"))
            && mounted.iter().any(|m| m.ends_with("/dev/pts")),
        "the config's mounts, below the root in our namespace: {mounted:?}"
    );
    let deleted = s.oci(&["delete", "--force", id]);
    assert!(deleted.status.success(), "delete: {deleted:?}");
    assert_eq!(mounts_below(&s.rootfs), Vec::<String>::new());
    assert_eq!(s.census(), before);
}

/// linux_cgroups_memory and linux_cgroups_cpus: swappiness, the OOM
/// killer switch and the TCP buffer limit are written to the v1 files
/// (which the validation program reads back); cgroup v2 has no such
/// files, and a config that asks for them is refused naming the setting.
#[test]
#[cfg_attr(
    kcell_unprivileged,
    ignore = "needs root: containers, cgroups and mounts (run the tests as root)"
)]
fn memory_settings_only_v1_has_are_written_there_and_refused_by_name_elsewhere() {
    let _one = one_at_a_time();
    let s = setup("v1mem");
    let before = s.census();
    let limit: u64 = 50_593_792;
    let bundle = s.bundle("v1mem", &["true"], |c| {
        c["linux"]["resources"]["memory"] = json!({
            "limit": limit, "reservation": limit, "swap": limit, "kernelTCP": limit,
            "swappiness": 10, "disableOOMKiller": true,
        });
    });
    let id = "kcell-v1mem";
    let created = s.oci(&["create", "--bundle", &bundle.display().to_string(), id]);
    let Some(memory) = v1_hierarchy("memory") else {
        assert_refused(
            &created,
            "memory swappiness (memory.swappiness) exists only on cgroup v1",
        );
        assert_eq!(s.census(), before, "a refused create leaves nothing");
        return;
    };
    assert!(created.status.success(), "create: {created:?}");
    let dir = memory.join(format!("{}/v1mem", s.cgroup_parent.trim_start_matches('/')));
    let read = |file: &str| {
        std::fs::read_to_string(dir.join(file))
            .unwrap_or_else(|e| panic!("{}: {e}", dir.join(file).display()))
    };
    for file in [
        "memory.limit_in_bytes",
        "memory.soft_limit_in_bytes",
        "memory.kmem.tcp.limit_in_bytes",
    ] {
        assert_eq!(read(file).trim(), limit.to_string(), "{file}");
    }
    if dir.join("memory.memsw.limit_in_bytes").exists() {
        assert_eq!(
            read("memory.memsw.limit_in_bytes").trim(),
            limit.to_string()
        );
    }
    assert_eq!(read("memory.swappiness").trim(), "10");
    assert!(read("memory.oom_control").starts_with("oom_kill_disable 1\n"));
    s.force_delete(id);
    assert_eq!(s.census(), before);
}
