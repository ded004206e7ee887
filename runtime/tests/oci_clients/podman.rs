//! podman (with conmon and netavark) on kcell-oci.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::cli::{self, DockerLike};
use crate::install::Install;
use crate::readings::ok;
use crate::{census::assert_census_returns, Setup, IMAGE, KCELL_OCI};

pub struct Podman<'a> {
    pub install: &'a Install,
    pub dir: &'a Path,
}

impl DockerLike for Podman<'_> {
    fn cmd(&self) -> Command {
        let d = self.dir;
        let mut c = self.install.command("/usr/bin/podman");
        c.arg("--root")
            .arg(d.join("podman/storage"))
            .arg("--runroot")
            .arg(d.join("podman/run"))
            .arg("--tmpdir")
            .arg(d.join("podman/tmp"))
            .args(["--storage-driver", "vfs", "--runtime", KCELL_OCI])
            .args(["--cgroup-manager", "cgroupfs", "--events-backend", "file"])
            // podman 5 warns on every command under cgroup v1.
            .env("PODMAN_IGNORE_CGROUPSV1_WARNING", "1");
        c
    }

    /// With the rlimits this sandbox's root can set.
    fn container(&self, verb: &str, args: &[&str]) -> Command {
        let mut c = self.cmd();
        c.arg(verb)
            .args([
                "--ulimit",
                "nofile=1024:1024",
                "--ulimit",
                "nproc=1024:1024",
            ])
            .args(args);
        c
    }

    fn remove(&self, id: &str) -> Command {
        let mut c = self.cmd();
        c.args(["rm", "-f", "-t", "0", id]);
        c
    }
}

/// On the way out, pass or fail, podman removes every container it has
/// (its storage is in the test's directory, so these are the test's own).
impl Drop for Podman<'_> {
    fn drop(&mut self) {
        let _ = self
            .cmd()
            .args(["rm", "--all", "--force", "--time", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The host's nf_tables tables, as `nft list tables` names them, without
/// iptables-nft's own (ip and ip6 filter, nat, mangle, raw, security):
/// bookworm's netavark drives iptables, which makes them on first use and
/// never removes them, whoever asked.
fn nft_tables() -> Vec<String> {
    let out = std::process::Command::new("nft")
        .args(["list", "tables"])
        .output();
    let iptables = |l: &str| {
        let f: Vec<&str> = l.split_whitespace().collect();
        matches!(f.get(1), Some(&"ip") | Some(&"ip6"))
            && matches!(
                f.get(2),
                Some(&"filter") | Some(&"nat") | Some(&"mangle") | Some(&"raw") | Some(&"security")
            )
    };
    out.map(|o| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| !iptables(l))
            .map(str::to_string)
            .collect()
    })
    .unwrap_or_default()
}

/// Runs `check`, then removes what netavark left: netavark 1.17 (sid)
/// keeps its `inet netavark` table after the last container, as dockerd
/// keeps docker0, so the table goes when the test made it; anything else
/// new fails the test.
fn leaving_no_nft_table(install: &Install, s: &Setup, check: fn(&Install, &Setup)) {
    let before = nft_tables();
    check(install, s);
    let table = "table inet netavark".to_string();
    if !before.contains(&table) && nft_tables().contains(&table) {
        let _ = std::process::Command::new("nft")
            .args(["delete", "table", "inet", "netavark"])
            .status();
    }
    assert_eq!(nft_tables(), before, "podman left nf_tables tables");
}

/// Every check of the docker-style client, then a census.
pub fn runs_its_containers(install: &Install, s: &Setup) {
    leaving_no_nft_table(install, s, check_all);
}

fn check_all(install: &Install, s: &Setup) {
    let p = Podman {
        install,
        dir: s.dir.path(),
    };
    ok(p.cmd().arg("import").arg(&s.tarball).arg(IMAGE));
    // podman's default network is podman's: made once, before the census.
    assert_eq!(ok(p.run(&["--rm", IMAGE, "true"])), "");
    let before = install.census();
    assert_eq!(ok(p.run(&["--rm", IMAGE, "echo", "hi"])), "hi");
    cli::properties(&p, IMAGE, s.dir.path());
    cli::lifecycle(&p, IMAGE);
    cli::terminal(&p, IMAGE);
    cli::limits(&p, IMAGE);
    cli::network(&p, IMAGE);
    ok(p.cmd().args(["rm", "-a", "-f"]));
    assert_census_returns(install, &before, 10);
}

/// 50 containers 8 at a time, then a census.
pub fn fifty_leave_nothing(install: &Install, s: &Setup) {
    leaving_no_nft_table(install, s, fifty);
}

fn fifty(install: &Install, s: &Setup) {
    let p = Podman {
        install,
        dir: s.dir.path(),
    };
    ok(p.cmd().arg("import").arg(&s.tarball).arg(IMAGE));
    ok(p.run(&["--rm", "--network", "none", IMAGE, "true"]));
    let before = install.census();
    cli::fifty_eight_at_a_time(&p, IMAGE);
    assert_census_returns(install, &before, 10);
}
