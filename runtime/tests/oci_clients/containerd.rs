//! containerd (`ctr` through containerd-shim-runc-v2, `--runc-binary`) on
//! kcell-oci. ctr has no network of its own without CNI and no pids
//! limit, so those checks are podman's and Docker's.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::census::assert_census_returns;
use crate::common::KCELL;
use crate::install::Install;
use crate::readings::{
    assert_paused, assert_running, cpu_share, find_process, ok, read, run, terminate,
    vmstat_oom_kills,
};
use crate::{Setup, KCELL_OCI};

/// A containerd of the test's own: its root, state and socket in the
/// test's directory; killed on drop.
struct Containerd<'a> {
    install: &'a Install,
    child: Child,
    socket: PathBuf,
}

impl<'a> Containerd<'a> {
    fn start(install: &'a Install, dir: &Path) -> Containerd<'a> {
        std::fs::create_dir_all(dir).expect("mkdir containerd");
        let socket = dir.join("containerd.sock");
        let config = dir.join("containerd.toml");
        std::fs::write(
            &config,
            "version = 2\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n",
        )
        .expect("write config");
        let child = install
            .command("/usr/bin/containerd")
            .arg("--config")
            .arg(&config)
            .arg("--root")
            .arg(dir.join("root"))
            .arg("--state")
            .arg(dir.join("state"))
            .arg("--address")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("containerd.log")).expect("log"))
            .spawn()
            .expect("containerd");
        let d = Containerd {
            install,
            child,
            socket,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !d
            .ctr()
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            assert!(
                Instant::now() < deadline,
                "containerd did not answer in 30 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        d
    }

    fn ctr(&self) -> Command {
        let mut c = self.install.command("/usr/bin/ctr");
        c.arg("--address")
            .arg(&self.socket)
            .args(["--namespace", "kcell"]);
        c
    }

    /// `ctr run` with the runtime under test, then `args`.
    fn run(&self, args: &[&str]) -> Command {
        let mut c = self.ctr();
        c.args(["run", "--runc-binary", KCELL_OCI, "--snapshotter", "native"])
            .args(args);
        c
    }

    /// Whether `ctr run` takes `option` (containerd 1.6's has no --user
    /// and no --hostname: those checks are then not made, and the test's
    /// output says so).
    fn run_has(&self, option: &str) -> bool {
        let help = run(self.ctr().args(["run", "--help"]));
        let has = String::from_utf8_lossy(&help.stdout)
            .split_whitespace()
            .any(|w| w == option);
        if !has {
            eprintln!("not checked: this ctr's run has no {option}");
        }
        has
    }

    /// Imports an OCI layout tarball. containerd 2's ctr imports through
    /// the daemon's transfer service, which unpacks only for the
    /// platforms and snapshotters of its configuration (not `native`);
    /// `--local` is the client-side import 1.x always did.
    fn import(&self, tarball: &Path) -> String {
        let help = run(self.ctr().args(["image", "import", "--help"]));
        let mut c = self.ctr();
        c.args(["image", "import", "--snapshotter", "native"]);
        if String::from_utf8_lossy(&help.stdout).contains("--local") {
            c.arg("--local");
        }
        ok(c.arg(tarball));
        let listed = ok(self.ctr().args(["image", "ls", "-q"]));
        listed
            .lines()
            .next()
            .expect("the imported image is listed")
            .to_string()
    }
}

impl Drop for Containerd<'_> {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

/// CapEff of a `cat /proc/self/status` output, as a number.
fn cap_eff(status: &str) -> u64 {
    status
        .lines()
        .find_map(|l| u64::from_str_radix(l.strip_prefix("CapEff:")?.trim(), 16).ok())
        .unwrap_or_else(|| panic!("no CapEff in {status}"))
}

/// The container's properties as ctr sets them: exit status, read-only
/// root, user, a capability dropped, a bind and a tmpfs mount, environment,
/// working directory and hostname.
fn properties(d: &Containerd, img: &str, dir: &Path) {
    let out = run(d.run(&["--rm", img, "kcell-ctr-exit", "sh", "-c", "exit 7"]));
    assert_eq!(out.status.code(), Some(7), "the process's exit status");
    let out = ok(d.run(&[
        "--rm",
        "--read-only",
        img,
        "kcell-ctr-ro",
        "sh",
        "-c",
        "touch /kcell-ro 2>/dev/null; echo rc=$?",
    ]));
    assert_eq!(out, "rc=1", "--read-only: touch / worked");
    if d.run_has("--user") {
        let status = ok(d.run(&[
            "--rm",
            "--user",
            "1000:1001",
            img,
            "kcell-ctr-u",
            "cat",
            "/proc/self/status",
        ]));
        assert!(status.contains("Uid:\t1000\t1000\t1000\t1000"), "{status}");
        assert!(status.contains("Gid:\t1001\t1001\t1001\t1001"), "{status}");
    }
    let full = cap_eff(&ok(d.run(&[
        "--rm",
        img,
        "kcell-ctr-c0",
        "cat",
        "/proc/self/status",
    ])));
    let dropped = cap_eff(&ok(d.run(&[
        "--rm",
        "--cap-drop",
        "CAP_NET_RAW",
        img,
        "kcell-ctr-c1",
        "cat",
        "/proc/self/status",
    ])));
    // CAP_NET_RAW is bit 13: in the default set, and only it goes.
    assert_eq!((full & 1 << 13, dropped), (1 << 13, full & !(1 << 13)));

    let vol = dir.join("volume");
    std::fs::create_dir_all(&vol).expect("mkdir volume");
    std::fs::write(vol.join("in"), "kcell-in\n").expect("write");
    let bind = format!("type=bind,src={},dst=/data,options=rbind:rw", vol.display());
    let mut args = vec![
        "--rm",
        "--mount",
        &bind,
        "--mount",
        "type=tmpfs,src=tmpfs,dst=/scratch,options=size=1m",
        "--env",
        "KCELL_E=kcell-env",
        "--cwd",
        "/tmp",
    ];
    let hostname = d.run_has("--hostname");
    if hostname {
        args.extend(["--hostname", "kcell-h"]);
    }
    args.extend([img, "kcell-ctr-m", "sh", "-c",
        "cat /data/in; echo kcell-out > /data/out; grep ' /scratch ' /proc/self/mounts | cut -d' ' -f3,4; echo $KCELL_E; readlink /proc/self/cwd; cat /proc/sys/kernel/hostname"]);
    let out = ok(d.run(&args));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    assert_eq!(lines[0], "kcell-in", "the bind mount shows the host's file");
    assert_eq!(read(&vol.join("out")), "kcell-out", "and takes a write");
    assert!(
        lines[1].starts_with("tmpfs ") && lines[1].contains("size=1024k"),
        "a 1 MiB tmpfs: {}",
        lines[1]
    );
    assert_eq!(&lines[2..4], ["kcell-env", "/tmp"]);
    if hostname {
        assert_eq!(lines[4], "kcell-h", "--hostname");
    }
}

/// --memory-limit (OOM, /proc/vmstat) and --cpus (the cgroup's counter).
fn limits(d: &Containerd, img: &str) {
    let kills = vmstat_oom_kills();
    let out = run(d.run(&[
        "--rm",
        "--memory-limit",
        "16777216",
        img,
        "kcell-ctr-oom",
        "dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=64M",
        "count=1",
    ]));
    assert_eq!(out.status.code(), Some(137), "64 MiB under 16 MiB: {out:?}");
    assert!(
        vmstat_oom_kills() > kills,
        "the kernel's oom_kill count moved"
    );

    ok(d.run(&[
        "-d",
        "--cpus",
        "0.2",
        img,
        "kcell-ctr-cpus",
        "sh",
        "-c",
        "while :; do :; done; echo kcell-marker-ctr-cpus",
    ]));
    let pid = find_process("kcell-marker-ctr-cpus");
    let share = cpu_share(pid);
    ok(d.ctr()
        .args(["task", "kill", "--signal", "SIGKILL", "kcell-ctr-cpus"]));
    wait_stopped(d, pid, "kcell-ctr-cpus");
    assert!(
        (0.15..=0.25).contains(&share),
        "--cpus 0.2 gave a share of {share:.3}"
    );
}

/// Waits for `pid` to end and the task `name` to show as stopped, then
/// deletes the task and its container.
fn wait_stopped(d: &Containerd, pid: i32, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(Instant::now() < deadline, "kill did not end the process");
        std::thread::sleep(Duration::from_millis(50));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok(d.ctr().args(["task", "ls"]))
        .lines()
        .any(|l| l.starts_with(name) && l.contains("STOPPED"))
    {
        assert!(Instant::now() < deadline, "{name} never showed as stopped");
        std::thread::sleep(Duration::from_millis(100));
    }
    ok(d.ctr().args(["task", "delete", name]));
    ok(d.ctr().args(["container", "delete", name]));
}

/// run -d, exec in its namespaces, pause and resume (the freezer and the
/// CPU counter), kill, delete.
fn lifecycle(d: &Containerd, img: &str) {
    let name = "kcell-ctr-d";
    ok(d.run(&[
        "-d",
        img,
        name,
        "sh",
        "-c",
        "while :; do :; done; echo kcell-marker-ctr",
    ]));
    let pid = find_process("kcell-marker-ctr");
    let pidns = std::fs::read_link(format!("/proc/{pid}/ns/pid")).expect("ns");
    let seen = ok(d.ctr().args([
        "task",
        "exec",
        "--exec-id",
        "e1",
        name,
        "readlink",
        "/proc/self/ns/pid",
    ]));
    assert_eq!(
        seen,
        pidns.to_string_lossy(),
        "exec runs in the container's namespaces"
    );
    ok(d.ctr().args(["task", "pause", name]));
    assert_paused(pid);
    ok(d.ctr().args(["task", "resume", name]));
    assert_running(pid);
    ok(d.ctr().args(["task", "kill", "--signal", "SIGKILL", name]));
    wait_stopped(d, pid, name);
}

/// Every check ctr can ask for, then a census.
pub fn runs_its_containers(install: &Install, s: &Setup) {
    let before = install.census();
    let image = s.dir.path().join("image.tar");
    ok(Command::new(KCELL)
        .env("KCELL_ROOT", s.dir.path().join("store"))
        .args(["image", "pack", "-t", "kcell-busybox:test", "-o"])
        .arg(&image)
        .arg(s.dir.path().join("rootfs")));
    {
        let d = Containerd::start(install, &s.dir.path().join("containerd"));
        let img = d.import(&image);
        assert_eq!(
            ok(d.run(&["--rm", &img, "kcell-ctr-1", "echo", "hi"])),
            "hi"
        );
        properties(&d, &img, s.dir.path());
        limits(&d, &img);
        lifecycle(&d, &img);
    }
    assert_census_returns(install, &before, 10);
}
