//! Real clients run their containers on `kcell-oci`: podman (with conmon
//! and netavark), containerd (`ctr` through containerd-shim-runc-v2) and
//! Docker (dockerd with `--add-runtime`), each in two releases:
//!
//! - Debian bookworm's (podman 4.3, containerd 1.6, Docker 20.10), the
//!   host's packages, which `scripts/install-deps` installs;
//! - Debian sid's (podman 5.8, containerd 2.1, Docker 28.5), from the
//!   root `scripts/client-root sid` makes in kcell's cache and the tests
//!   enter in a mount namespace of their own (install.rs): the host's
//!   packages and libraries are never touched.
//!
//! Every check reads what the kernel did by itself (readings.rs): exit
//! statuses, /proc, the cgroup files of a container's process, found by a
//! marker in its command line, and /proc/vmstat; and after each client the
//! census (cgroups, mounts, links, netns files, kcell's state, and for a
//! suite's root what its namespace holds) must be what it was before. Each
//! test says which package versions ran, on stderr and in
//! target/kcell/oci-clients.txt.
//!
//! Each client keeps its storage in the test's own directory; the tests
//! take one lock, so one census is never taken while another client runs.
//! Root only. A client that is not installed fails the test, naming what
//! installs it.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

#[path = "../common/mod.rs"]
mod common;

mod census;
mod cli;
mod containerd;
mod docker;
mod install;
mod podman;
mod readings;

use install::Install;

pub const KCELL_OCI: &str = env!("CARGO_BIN_EXE_kcell-oci");
pub const IMAGE: &str = "localhost/kcell-busybox:test";

/// One client at a time: a census must not see another client's work.
static ONE_CLIENT: Mutex<()> = Mutex::new(());

/// The test's directory, with a busybox root and its tarball.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub tarball: PathBuf,
}

/// Checks `tool` is in `install` and makes the test's directory.
fn setup(install: &Install, tool: &str, installs_it: &str) -> Setup {
    assert!(
        install.has(tool),
        "{tool} is not in {}'s clients: {installs_it}",
        install.suite
    );
    let dir = tempfile::Builder::new()
        .prefix("kcell-clients-")
        .tempdir()
        .expect("tempdir");
    let rootfs = common::busybox_root(dir.path(), "rootfs");
    let tarball = dir.path().join("busybox.tar");
    let tarred = Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&tarball)
        .arg(".")
        .status()
        .expect("tar");
    assert!(tarred.success());
    Setup { dir, tarball }
}

/// Runs `check` with the clients of `suite` ("bookworm" is the host's).
fn with_clients(test: &str, suite: &'static str, tool: &str, check: fn(&Install, &Setup)) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "running containers through {tool} needs root: this test was built as root and runs without it"
    );
    common::on_the_host_only(tool);
    // The lock first: a suite's namespace is made after the client before
    // it has cleaned up, so it holds no copies of that client's mounts.
    let _guard = ONE_CLIENT.lock().unwrap_or_else(|e| e.into_inner());
    let (install, installs_it) = if suite == "bookworm" {
        (
            Install::host(),
            "scripts/install-deps installs Debian's packages".to_string(),
        )
    } else {
        (
            Install::suite(suite, std::path::Path::new(KCELL_OCI)),
            format!("scripts/client-root {suite} makes them"),
        )
    };
    let s = setup(&install, tool, &installs_it);
    install.report(test);
    check(&install, &s);
}

macro_rules! client_tests {
    ($($name:ident: $suite:literal, $tool:literal, $check:path;)*) => {$(
        #[test]
        #[cfg_attr(
            kcell_unprivileged,
            ignore = "needs root: containers, cgroups and mounts (run the tests as root)"
        )]
        fn $name() {
            with_clients(stringify!($name), $suite, $tool, $check);
        }
    )*};
}

client_tests! {
    podman_bookworm_runs_its_containers_on_kcell_oci: "bookworm", "/usr/bin/podman", podman::runs_its_containers;
    podman_sid_runs_its_containers_on_kcell_oci: "sid", "/usr/bin/podman", podman::runs_its_containers;
    podman_bookworm_fifty_containers_eight_at_a_time_leave_nothing: "bookworm", "/usr/bin/podman", podman::fifty_leave_nothing;
    podman_sid_fifty_containers_eight_at_a_time_leave_nothing: "sid", "/usr/bin/podman", podman::fifty_leave_nothing;
    containerd_bookworm_runs_its_containers_on_kcell_oci: "bookworm", "/usr/bin/ctr", containerd::runs_its_containers;
    containerd_sid_runs_its_containers_on_kcell_oci: "sid", "/usr/bin/ctr", containerd::runs_its_containers;
    docker_bookworm_runs_its_containers_on_kcell_oci: "bookworm", "/usr/sbin/dockerd", docker::runs_its_containers;
    docker_sid_runs_its_containers_on_kcell_oci: "sid", "/usr/sbin/dockerd", docker::runs_its_containers;
}
