//! dockerd (with its containerd and shim) on kcell-oci, added by
//! `--add-runtime`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::census::{assert_census_returns, cgroup_mounts};
use crate::cli::{self, DockerLike};
use crate::install::Install;
use crate::readings::{ok, terminate};
use crate::{Setup, IMAGE, KCELL_OCI};

/// A dockerd of the test's own: data, exec root and socket in the test's
/// directory; stopped on drop.
struct Dockerd<'a> {
    install: &'a Install,
    child: Child,
    socket: PathBuf,
}

impl<'a> Dockerd<'a> {
    /// The default bridge without iptables: docker0 and a veth per
    /// container, no NAT rules left in the host's tables.
    fn start(install: &'a Install, dir: &Path) -> Dockerd<'a> {
        std::fs::create_dir_all(dir).expect("mkdir docker");
        let socket = dir.join("docker.sock");
        let log = dir.join("dockerd.log");
        let child = install
            .command("/usr/sbin/dockerd")
            .arg("--add-runtime")
            .arg(format!("kcell={KCELL_OCI}"))
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .args(["--iptables=false", "--ip6tables=false"])
            .args(["--storage-driver", "vfs"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("dockerd");
        let mut d = Dockerd {
            install,
            child,
            socket,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !d
            .cmd()
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            if let Ok(Some(status)) = d.child.try_wait() {
                let mut text = String::new();
                let _ = std::fs::File::open(&log).and_then(|mut f| f.read_to_string(&mut text));
                panic!(
                    "dockerd exited with {status} before answering: {}",
                    text.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
                );
            }
            assert!(Instant::now() < deadline, "dockerd did not answer in 60 s");
            std::thread::sleep(Duration::from_millis(250));
        }
        d
    }
}

impl DockerLike for Dockerd<'_> {
    fn cmd(&self) -> Command {
        let mut c = self.install.command("/usr/bin/docker");
        c.arg("-H").arg(format!("unix://{}", self.socket.display()));
        c
    }

    fn container(&self, verb: &str, args: &[&str]) -> Command {
        let mut c = self.cmd();
        c.args([verb, "--runtime", "kcell"]).args(args);
        c
    }

    fn remove(&self, id: &str) -> Command {
        let mut c = self.cmd();
        c.args(["rm", "-f", id]);
        c
    }
}

impl Drop for Dockerd<'_> {
    fn drop(&mut self) {
        // Drop runs on a failed check too: nothing here may panic.
        let listed = self.cmd().args(["ps", "-aq"]).output();
        let ids = listed.map(|o| String::from_utf8_lossy(&o.stdout).to_string());
        let ids = ids.unwrap_or_default();
        if !ids.trim().is_empty() {
            let _ = self
                .cmd()
                .args(["rm", "-f"])
                .args(ids.split_whitespace())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        terminate(&mut self.child);
    }
}

/// Every check of the docker-style client, then a census.
pub fn runs_its_containers(install: &Install, s: &Setup) {
    let before = install.census();
    let had_docker0 = before.links.iter().any(|l| l == "docker0");
    {
        let d = Dockerd::start(install, &s.dir.path().join("docker"));
        ok(d.cmd().arg("import").arg(&s.tarball).arg(IMAGE));
        assert_eq!(ok(d.run(&["--rm", IMAGE, "echo", "hi"])), "hi");
        cli::properties(&d, IMAGE, s.dir.path());
        cli::lifecycle(&d, IMAGE);
        cli::terminal(&d, IMAGE);
        cli::limits(&d, IMAGE);
        cli::network(&d, IMAGE);
        cli::fifty_eight_at_a_time(&d, IMAGE);
    }
    // dockerd leaves its bridge and its parent cgroup (/docker) after its
    // containers, as with runc; the cgroup goes only if empty, so a
    // container's left inside shows.
    if !had_docker0 {
        let _ = Command::new("ip").args(["link", "del", "docker0"]).status();
    }
    for m in cgroup_mounts() {
        let parent = format!("{}:docker", m.display());
        if !before.cgroups.contains(&parent) {
            let _ = std::fs::remove_dir(m.join("docker"));
        }
    }
    assert_census_returns(install, &before, 15);
}
