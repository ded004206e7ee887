//! The backend on temporary directories laid out as cgroup v1 (one
//! directory per hierarchy, cpu and cpuacct co-mounted) and as v2 (one
//! root with cgroup.controllers): create, limits, counters, freeze,
//! removal, without root. The kernel's cgroupfs makes control files on
//! mkdir; here a write makes them, and the tests read back what was written
//! and feed the counters and states the kernel would.

use super::layout::{Layout, Version};
use super::resources::{CpuMax, Resources};
use super::*;
use std::collections::BTreeMap;

/// A fake cgroupfs of `version` holding, for the cgroup /c, the files
/// given as (controller, file, text).
pub(super) fn fake(
    version: Version,
    files: &[(&str, &str, &str)],
) -> (tempfile::TempDir, ContainerCgroup) {
    let (tmp, backend) = layout(version);
    let cg = backend.cgroup(Path::new("/c")).expect("cgroup");
    for (ctrl, file, text) in files {
        let dir = cg.dir_of(ctrl).expect("controller").to_path_buf();
        fs::create_dir_all(&dir).expect("mkdir");
        fs::write(dir.join(file), text).expect("write");
    }
    (tmp, cg)
}

/// A temporary v1 or v2 layout, and its backend.
fn layout(version: Version) -> (tempfile::TempDir, Backend) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let layout = match version {
        Version::V1 => {
            let mut m = BTreeMap::new();
            for c in [
                "cpu", "cpuacct", "cpuset", "memory", "pids", "blkio", "devices", "freezer",
            ] {
                let dir = match c {
                    "cpu" | "cpuacct" => tmp.path().join("cpu,cpuacct"),
                    other => tmp.path().join(other),
                };
                fs::create_dir_all(&dir).expect("mkdir");
                m.insert(c.to_string(), dir);
            }
            let cpuset = tmp.path().join("cpuset");
            fs::write(cpuset.join("cpuset.cpus"), "0-1\n").expect("write");
            fs::write(cpuset.join("cpuset.mems"), "0\n").expect("write");
            Layout::Legacy(m)
        }
        Version::V2 => {
            fs::write(
                tmp.path().join("cgroup.controllers"),
                "cpuset cpu io memory pids\n",
            )
            .expect("write");
            Layout::Unified(tmp.path().to_path_buf())
        }
    };
    (tmp, Backend::from_layout(&layout))
}

fn limits() -> Resources {
    Resources {
        cpu_max: Some(CpuMax {
            quota_us: 20_000,
            period_us: 100_000,
        }),
        memory: Some(64 << 10),
        pids: Some(7),
        ..Default::default()
    }
}

fn content(path: &Path) -> String {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}

#[test]
fn the_version_is_chosen_once_from_the_layout() {
    let (_t, v1) = layout(Version::V1);
    let (_u, v2) = layout(Version::V2);
    assert_eq!(
        (v1.version(), v2.version()),
        (Some(Version::V1), Some(Version::V2))
    );
    assert_eq!(
        (v1.controller_name("io"), v2.controller_name("blkio")),
        ("blkio", "io")
    );
    let Backend::V1(h) = &v1 else { panic!("v1") };
    assert!(
        h.iter().any(|h| h.controllers == ["cpu", "cpuacct"]),
        "co-mounted: {h:?}"
    );
    assert_eq!(Backend::from_layout(&Layout::None), Backend::None);
}

#[test]
fn v1_create_makes_every_hierarchy_and_writes_the_limits() {
    let (t, backend) = layout(Version::V1);
    let cg = backend.cgroup(&default_path("c1")).expect("cgroup");
    cg.create(&limits()).expect("create");
    let cpu = t.path().join("cpu,cpuacct/kcell/c1");
    assert_eq!(content(&cpu.join("cpu.cfs_quota_us")), "20000");
    assert_eq!(content(&cpu.join("cpu.cfs_period_us")), "100000");
    assert_eq!(
        content(&t.path().join("memory/kcell/c1/memory.limit_in_bytes")),
        "65536"
    );
    assert_eq!(content(&t.path().join("pids/kcell/c1/pids.max")), "7");
    // A new cpuset gets its parent's CPUs and nodes, at every level made.
    assert_eq!(content(&t.path().join("cpuset/kcell/cpuset.cpus")), "0-1");
    assert_eq!(content(&t.path().join("cpuset/kcell/c1/cpuset.mems")), "0");
    assert_eq!(cg.dir_of("cpuacct"), Some(cpu.as_path()));
}

#[test]
fn v2_create_enables_controllers_down_the_path() {
    let (t, backend) = layout(Version::V2);
    let cg = backend.cgroup(Path::new("/a/b")).expect("cgroup");
    cg.create(&limits()).expect("create");
    let leaf = t.path().join("a/b");
    assert_eq!(content(&leaf.join("cpu.max")), "20000 100000");
    assert_eq!(content(&leaf.join("memory.max")), "65536");
    let enabled = content(&t.path().join("a/cgroup.subtree_control"));
    for c in ["+cpu", "+memory", "+pids", "+io", "+cpuset"] {
        assert!(enabled.contains(c), "{enabled}");
    }
}

#[test]
fn a_missing_controller_is_named_with_what_the_root_lists() {
    let (t, backend) = layout(Version::V2);
    fs::write(t.path().join("cgroup.controllers"), "cpu pids\n").expect("write");
    let err = backend
        .cgroup(Path::new("/x"))
        .expect("cgroup")
        .create(&limits())
        .expect_err("no memory controller")
        .to_string();
    assert!(err.contains("memory") && err.contains("cpu pids"), "{err}");
    assert!(!t.path().join("x").exists(), "nothing made");
}

#[test]
fn paths_cannot_leave_the_hierarchy() {
    let (_t, backend) = layout(Version::V2);
    assert!(matches!(
        backend.cgroup(Path::new("/a/../../etc")),
        Err(CgroupError::BadPath(_))
    ));
}

#[test]
fn processes_and_freezing() {
    for version in [Version::V1, Version::V2] {
        let (_t, backend) = layout(version);
        let cg = backend.cgroup(Path::new("/f")).expect("cgroup");
        cg.create(&Resources::default()).expect("create");
        cg.add_process(4242).expect("add");
        assert_eq!(cg.pids(), vec![4242]);
        if version == Version::V2 {
            // The kernel reports the state in cgroup.events.
            fs::write(
                cg.dir_of("unified").expect("dir").join("cgroup.events"),
                "frozen 1\n",
            )
            .expect("write");
        }
        cg.set_frozen(true).expect("freeze");
        assert!(cg.is_frozen());
        let (file, value) = resources::freeze_value(version, true);
        assert_eq!(
            content(&cg.freezer_dir().expect("freezer").join(file)),
            value
        );
    }
}

#[test]
fn removal_takes_the_cgroup_and_the_kcell_parent_but_not_others() {
    for version in [Version::V1, Version::V2] {
        let (t, backend) = layout(version);
        let mine = backend.cgroup(&default_path("gone")).expect("cgroup");
        mine.create(&limits()).expect("create");
        let theirs = backend
            .cgroup(Path::new("/libpod_parent/x"))
            .expect("cgroup");
        theirs.create(&Resources::default()).expect("create");
        mine.remove().expect("remove");
        theirs.remove().expect("remove");
        for (_, dir) in &mine.dirs {
            assert!(!dir.exists(), "{}", dir.display());
            assert!(!dir.parent().expect("parent").exists(), "kcell parent left");
        }
        let kept = match version {
            Version::V1 => t.path().join("pids/libpod_parent"),
            Version::V2 => t.path().join("libpod_parent"),
        };
        assert!(kept.is_dir(), "a parent kcell did not name stays");
    }
}

#[test]
fn the_cgroup_of_a_process_is_read_per_version() {
    let (_t, v1) = layout(Version::V1);
    let (_u, v2) = layout(Version::V2);
    let text = "12:pids:/kcell/a\n11:cpu,cpuacct:/kcell/a\n1:name=systemd:/user\n0::/other\n";
    assert_eq!(v1.path_in(text), Path::new("/kcell/a"));
    assert_eq!(v2.path_in(text), Path::new("/other"));
}
