//! What the OCI command-line tests share: a busybox root, a state root
//! and a cgroup parent of the test's own, bundles made by `kcell-oci spec`,
//! and the host census the tests compare before and after.
#![allow(dead_code)] // each test binary uses part of it

use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The OCI command line under test.
pub const KCELL_OCI: &str = env!("CARGO_BIN_EXE_kcell-oci");

/// A busybox root, a state root and the cgroup parent of the test's own.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub rootfs: PathBuf,
    pub state: PathBuf,
    /// The cgroupsPath parent of this test's containers.
    pub cgroup_parent: String,
}

pub fn setup(name: &str) -> Setup {
    assert!(
        nix::unistd::geteuid().is_root(),
        "running containers needs root: this test was built as root and runs without it (rebuild as the user who runs it)"
    );
    let dir = tempfile::Builder::new()
        .prefix("kcell-oci-cli-")
        .tempdir()
        .expect("tempdir");
    let rootfs = super::busybox_root(dir.path(), "rootfs");
    let state = dir.path().join("state");
    Setup {
        dir,
        rootfs,
        state,
        cgroup_parent: format!("/kcell-oci-test-{name}-{}", std::process::id()),
    }
}

/// What the host holds of the test's containers: state entries, mounts,
/// and cgroup directories under the test's parent in every hierarchy.
#[derive(Debug, PartialEq, Eq)]
pub struct Census {
    pub state: Vec<String>,
    pub mounts: usize,
    pub cgroups: Vec<PathBuf>,
}

impl Setup {
    pub fn census(&self) -> Census {
        let mut state: Vec<String> = std::fs::read_dir(&self.state)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .collect()
            })
            .unwrap_or_default();
        state.sort();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")
            .expect("mountinfo")
            .lines()
            .count();
        let mut cgroups = Vec::new();
        for hierarchy in cgroup_mounts() {
            let dir = hierarchy.join(self.cgroup_parent.trim_start_matches('/'));
            if dir.exists() {
                cgroups.push(dir);
            }
        }
        Census {
            state,
            mounts,
            cgroups,
        }
    }

    /// A bundle named `name` with the default spec (`kcell-oci spec`), its
    /// root this test's busybox, the process `args`, a cgroupsPath under
    /// the test's parent, then `edit` applied to the JSON.
    pub fn bundle(&self, name: &str, args: &[&str], edit: impl FnOnce(&mut Value)) -> PathBuf {
        let bundle = self.dir.path().join(name);
        std::fs::create_dir(&bundle).expect("mkdir bundle");
        let made = Command::new(KCELL_OCI)
            .args(["spec", "--bundle"])
            .arg(&bundle)
            .output()
            .expect("kcell-oci spec");
        assert!(made.status.success(), "kcell-oci spec: {made:?}");
        let path = bundle.join("config.json");
        let mut config: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
        config["root"] = json!({ "path": self.rootfs, "readonly": false });
        config["process"]["args"] = json!(args);
        config["process"]["terminal"] = json!(false);
        config["linux"]["cgroupsPath"] = json!(format!("{}/{name}", self.cgroup_parent));
        edit(&mut config);
        std::fs::write(&path, serde_json::to_string_pretty(&config).expect("json")).expect("write");
        bundle
    }

    /// Runs `kcell-oci --root STATE ARGS`. Its stdout and stderr are files,
    /// not pipes: a container's process inherits the caller's stdio (as
    /// with runc), so a pipe would stay open as long as the container.
    pub fn oci(&self, args: &[&str]) -> Output {
        let out_path = self.dir.path().join("oci.stdout");
        let err_path = self.dir.path().join("oci.stderr");
        let status = Command::new(KCELL_OCI)
            .arg("--root")
            .arg(&self.state)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(&out_path).expect("stdout file"))
            .stderr(std::fs::File::create(&err_path).expect("stderr file"))
            .status()
            .expect("kcell-oci");
        let out = Output {
            status,
            stdout: std::fs::read(&out_path).expect("read stdout"),
            stderr: std::fs::read(&err_path).expect("read stderr"),
        };
        eprintln!(
            "kcell-oci {}: {:?} {}",
            args.join(" "),
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        out
    }

    pub fn status_of(&self, id: &str) -> String {
        let out = self.oci(&["state", id]);
        assert!(out.status.success(), "state {id}: {out:?}");
        let v: Value = serde_json::from_slice(&out.stdout).expect("state is JSON");
        v["status"].as_str().unwrap_or_default().to_string()
    }

    /// Deletes `id` however it stands (for cleanup on the way out).
    pub fn force_delete(&self, id: &str) {
        let _ = self.oci(&["delete", "--force", id]);
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        for hierarchy in cgroup_mounts() {
            let dir = hierarchy.join(self.cgroup_parent.trim_start_matches('/'));
            let _ = std::fs::remove_dir(&dir);
        }
    }
}

/// The mount points of the cgroup filesystems (v1 hierarchies and v2).
pub fn cgroup_mounts() -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let fstype = post.split_whitespace().next()?;
            let point = pre.split_whitespace().nth(4)?;
            (fstype == "cgroup" || fstype == "cgroup2").then(|| PathBuf::from(point))
        })
        .collect()
}

/// The one-line error of a failed command: exit 1, one non-empty line on
/// stderr, naming `value`.
pub fn assert_refused(out: &Output, value: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "exit status; stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line of error, got: {stderr}");
    assert!(
        lines[0].contains(value),
        "the error names {value:?}: {}",
        lines[0]
    );
}

pub fn wait_for(mut cond: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
