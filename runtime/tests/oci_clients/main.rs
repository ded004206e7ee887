//! Real clients run their containers on `kcell-oci`: podman (with conmon),
//! containerd (`ctr` through containerd-shim-runc-v2) and Docker (dockerd
//! with `--add-runtime`), each from Debian's packages, which
//! `scripts/install-deps` installs. Every check reads what the kernel did
//! by itself: exit statuses, /proc (a container's process is found by a
//! marker in its command line, not by a PID the runtime reported), the
//! cgroup files of that process and /proc/vmstat; and after each client
//! the host census (cgroups, mounts, links, netns files, kcell's state)
//! must be what it was before.
//!
//! Each client keeps its storage in the test's own directory; the tests
//! take one lock, so one census is never taken while another client runs.
//! Root only: without root each test says so and checks nothing. A client
//! that is not installed fails the test, naming the package.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

mod common;
use common::KCELL;
const KCELL_OCI: &str = env!("CARGO_BIN_EXE_kcell-oci");

/// One client at a time: a census must not see another client's work.
static ONE_CLIENT: Mutex<()> = Mutex::new(());

/// The test's directory, with a busybox root and its tarball.
struct Setup {
    dir: tempfile::TempDir,
    tarball: PathBuf,
}

fn setup(tool: &str, package: &str) -> (Setup, std::sync::MutexGuard<'static, ()>) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "running containers through {tool} needs root: this test was built as root and runs without it"
    );
    common::on_the_host_only(tool);
    assert!(
        Path::new(tool).is_file(),
        "{tool} is not installed: scripts/install-deps installs Debian's {package}"
    );
    let guard = ONE_CLIENT.lock().unwrap_or_else(|e| e.into_inner());
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
    (Setup { dir, tarball }, guard)
}

/// Everything a container could leave on the host, as comparable lists.
#[derive(Debug, PartialEq, Eq)]
struct Census {
    mounts: Vec<String>,
    cgroups: Vec<String>,
    links: Vec<String>,
    netns: Vec<String>,
    kcell_state: Vec<String>,
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Every directory of every cgroup hierarchy, as hierarchy-relative paths.
fn cgroup_dirs() -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                let p = e.path();
                out.push(format!(
                    "{}:{}",
                    base.display(),
                    p.strip_prefix(base).unwrap_or(&p).display()
                ));
                walk(base, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    for m in cgroup_mounts() {
        walk(&m, &m, &mut out);
    }
    out.sort();
    out.dedup();
    out
}

fn cgroup_mounts() -> Vec<PathBuf> {
    let mut v = common::oci::cgroup_mounts();
    v.sort();
    v.dedup();
    v
}

fn census() -> Census {
    // Mount points without their IDs, which change on every remount.
    let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(String::from))
        .collect();
    mounts.sort();
    let mut kcell_state = names(Path::new("/run/kcell-oci"));
    kcell_state.extend(names(Path::new("/run/kcell/containers")));
    Census {
        mounts,
        cgroups: cgroup_dirs(),
        links: names(Path::new("/sys/class/net")),
        netns: names(Path::new("/run/netns")),
        kcell_state,
    }
}

/// The difference of two censuses, for a message a person can act on.
fn differences(before: &Census, after: &Census) -> String {
    let diff = |what: &str, a: &[String], b: &[String]| {
        let gone: Vec<&String> = a.iter().filter(|x| !b.contains(x)).collect();
        let new: Vec<&String> = b.iter().filter(|x| !a.contains(x)).collect();
        if gone.is_empty() && new.is_empty() {
            String::new()
        } else {
            format!("{what}: new {new:?}, gone {gone:?}; ")
        }
    };
    [
        diff("mounts", &before.mounts, &after.mounts),
        diff("cgroups", &before.cgroups, &after.cgroups),
        diff("links", &before.links, &after.links),
        diff("netns", &before.netns, &after.netns),
        diff("kcell state", &before.kcell_state, &after.kcell_state),
    ]
    .concat()
}

/// Waits up to `secs` for the census to return to `before`: a client's
/// clean-up (conmon's, the shim's) can end a moment after its command.
fn assert_census_returns(before: &Census, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let now = census();
        if &now == before {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: {}",
            differences(before, &now)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn run(mut cmd: impl std::borrow::BorrowMut<Command>) -> Output {
    let cmd = cmd.borrow_mut();
    let out = cmd.stdin(Stdio::null()).output().expect("spawn");
    eprintln!(
        "{:?}: {:?}\n  stdout: {}\n  stderr: {}",
        cmd,
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    out
}

fn ok(mut cmd: impl std::borrow::BorrowMut<Command>) -> String {
    let cmd = cmd.borrow_mut();
    let out = run(&mut *cmd);
    assert!(out.status.success(), "{cmd:?} failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The host PID of the one process whose command line holds `marker`;
/// `why` says what the client knows when there is none.
fn find_process_or(marker: &str, why: impl Fn() -> String) -> i32 {
    match std::panic::catch_unwind(|| find_process(marker)) {
        Ok(pid) => pid,
        Err(_) => panic!("no container process with {marker:?}; {}", why()),
    }
}

/// The host PID of the one process whose command line holds `marker`.
fn find_process(marker: &str) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found: Vec<i32> = std::fs::read_dir("/proc")
            .expect("/proc")
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .contains(marker)
                })
            })
            .filter(|pid| *pid != std::process::id() as i32)
            .collect();
        // The client's own command line may hold the marker too: the
        // container's process is the one in another PID namespace.
        let mine = std::fs::read_link("/proc/self/ns/pid").ok();
        let inside: Vec<i32> = found
            .into_iter()
            .filter(|p| std::fs::read_link(format!("/proc/{p}/ns/pid")).ok() != mine)
            .collect();
        if let [pid] = inside[..] {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "no single container process with {marker:?}: {inside:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The directory of `pid`'s cgroup for `controller` (v1), or its v2 one.
fn cgroup_dir(pid: i32, controller: &str) -> PathBuf {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
    for m in cgroup_mounts() {
        let opts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let line = opts
            .lines()
            .find(|l| l.split_whitespace().nth(4) == Some(m.to_str().unwrap_or_default()))
            .unwrap_or_default()
            .to_string();
        let v2 = line.contains(" - cgroup2 ");
        let super_opts = line.rsplit(' ').next().unwrap_or_default();
        for entry in text.lines() {
            let mut f = entry.splitn(3, ':');
            let (_, ctrls, path) = (f.next(), f.next().unwrap_or(""), f.next().unwrap_or(""));
            let matches = if v2 {
                ctrls.is_empty() && m.join("cgroup.controllers").exists() && {
                    let c =
                        std::fs::read_to_string(m.join("cgroup.controllers")).unwrap_or_default();
                    c.split_whitespace().any(|x| x == controller)
                }
            } else {
                ctrls.split(',').any(|x| x == controller)
                    && super_opts.split(',').any(|x| x == controller)
            };
            if matches {
                return m.join(path.trim_start_matches('/'));
            }
        }
    }
    panic!("no {controller} cgroup for {pid}: {text}");
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim()
        .to_string()
}

/// CPU time used by a cgroup so far, ns (v1 cpuacct.usage, v2 cpu.stat).
fn cpu_usage_ns(pid: i32) -> u64 {
    let dir = cgroup_dir(pid, "cpuacct");
    let v1 = dir.join("cpuacct.usage");
    if v1.exists() {
        return read(&v1).parse().expect("cpuacct.usage");
    }
    let dir = cgroup_dir(pid, "cpu");
    read(&dir.join("cpu.stat"))
        .lines()
        .find_map(|l| l.strip_prefix("usage_usec ")?.parse::<u64>().ok())
        .expect("usage_usec")
        * 1000
}

fn vmstat_oom_kills() -> u64 {
    read(Path::new("/proc/vmstat"))
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill ")?.parse().ok())
        .unwrap_or(0)
}

/// A TCP listener on the host that answers each connection with `reply`.
fn answering_listener(reply: &'static str) -> u16 {
    let l = std::net::TcpListener::bind("0.0.0.0:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let _ = c.write_all(reply.as_bytes());
        }
    });
    port
}

// ---------------------------------------------------------------- podman

struct Podman<'a> {
    s: &'a Setup,
}

impl Podman<'_> {
    fn cmd(&self) -> Command {
        let d = self.s.dir.path();
        let mut c = Command::new("/usr/bin/podman");
        c.arg("--root")
            .arg(d.join("podman/storage"))
            .arg("--runroot")
            .arg(d.join("podman/run"))
            .arg("--tmpdir")
            .arg(d.join("podman/tmp"))
            .args(["--storage-driver", "vfs", "--runtime", KCELL_OCI])
            .args(["--cgroup-manager", "cgroupfs", "--events-backend", "file"]);
        c
    }

    /// `podman run` with the rlimits this sandbox's root can set.
    fn run(&self, args: &[&str]) -> Command {
        let mut c = self.cmd();
        c.arg("run")
            .args([
                "--ulimit",
                "nofile=1024:1024",
                "--ulimit",
                "nproc=1024:1024",
            ])
            .args(args);
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

const IMAGE: &str = "localhost/kcell-busybox:test";

#[test]
#[cfg_attr(
    kcell_unprivileged,
    ignore = "needs root: containers, cgroups and mounts (run the tests as root)"
)]
fn podman_runs_its_containers_on_kcell_oci() {
    let (s, _guard) = setup("/usr/bin/podman", "podman");
    let p = Podman { s: &s };
    ok(p.cmd().arg("import").arg(&s.tarball).arg(IMAGE));
    // podman's default network is podman's: made once, before the census.
    let port = answering_listener("kcell-outside\n");
    let warm = ok(p.run(&["--rm", IMAGE, "true"]));
    assert_eq!(warm, "");
    let before = census();

    // run --rm prints what the process printed.
    assert_eq!(ok(p.run(&["--rm", IMAGE, "echo", "hi"])), "hi");

    // run -d, exec in its namespaces, ps, pause/unpause, stop, rm.
    let id = ok(p.run(&[
        "-d",
        "--name",
        "kcell-podman-d",
        IMAGE,
        "sh",
        "-c",
        "while :; do :; done; echo kcell-marker-spin",
    ]));
    let pid = find_process("kcell-marker-spin");
    let pidns = std::fs::read_link(format!("/proc/{pid}/ns/pid")).expect("ns");
    let seen = ok(p
        .cmd()
        .args(["exec", "kcell-podman-d", "readlink", "/proc/self/ns/pid"]));
    assert_eq!(
        seen,
        pidns.to_string_lossy(),
        "exec runs in the container's PID namespace"
    );
    let ps = ok(p.cmd().args(["ps", "--format", "{{.ID}} {{.Names}}"]));
    assert!(
        ps.contains("kcell-podman-d") && id.starts_with(ps.split(' ').next().unwrap_or("-")),
        "ps: {ps}"
    );
    ok(p.cmd().args(["pause", "kcell-podman-d"]));
    let frozen_at = cpu_usage_ns(pid);
    std::thread::sleep(Duration::from_millis(500));
    let frozen_then = cpu_usage_ns(pid);
    let freezer = cgroup_dir(pid, "freezer");
    let state = if freezer.join("freezer.state").exists() {
        read(&freezer.join("freezer.state"))
    } else {
        read(&freezer.join("cgroup.events"))
    };
    assert!(
        state == "FROZEN" || state.contains("frozen 1"),
        "freezer: {state}"
    );
    assert_eq!(frozen_at, frozen_then, "a paused spinner uses no CPU");
    ok(p.cmd().args(["unpause", "kcell-podman-d"]));
    let t = cpu_usage_ns(pid);
    std::thread::sleep(Duration::from_millis(300));
    assert!(cpu_usage_ns(pid) > t, "an unpaused spinner runs again");
    ok(p.cmd().args(["stop", "-t", "1", "kcell-podman-d"]));
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "stop ended the process"
    );
    ok(p.cmd().args(["rm", "kcell-podman-d"]));

    // run -it: a pty through the console socket. `script` gives podman a
    // terminal; its stdin stays open (a pipe) until the container ended.
    let mut script = Command::new("script")
        .arg("-qec")
        .arg(shell_words(&p.run(&["-it", "--rm", IMAGE, "tty"])))
        .arg("/dev/null")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("script");
    let held = script.stdin.take();
    let mut tty = String::new();
    if let Some(mut out) = script.stdout.take() {
        let _ = out.read_to_string(&mut tty);
    }
    let _ = script.wait();
    drop(held);
    assert!(tty.contains("/dev/pts/"), "run -it has a terminal: {tty:?}");

    // --memory 16m: touching 64 MiB is OOM-killed.
    let kills = vmstat_oom_kills();
    let out = run(&mut p.run(&[
        "--rm",
        "--memory",
        "16m",
        "--memory-swap",
        "16m",
        IMAGE,
        "dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=64M",
        "count=1",
    ]));
    assert_eq!(
        out.status.code(),
        Some(137),
        "64 MiB under --memory 16m: {out:?}"
    );
    assert!(
        vmstat_oom_kills() > kills,
        "the kernel's oom_kill count moved"
    );

    // --pids-limit 8: an inner shell forks until the 9th process fails (and
    // ash exits on a failed fork); then 8 exist and the refusal is counted.
    // The trailing `true` keeps ash from exec'ing its last command, so the
    // marker stays in PID 1's command line.
    let id = ok(p.run(&["-d", "--pids-limit", "8", IMAGE, "sh", "-c",
        "sh -c 'for i in 1 2 3 4 5 6 7 8 9 10 11 12; do sleep 1000 & done'; echo kcell-marker-pids; sleep 1000; true"]));
    let pid = find_process_or("kcell-marker-pids", || {
        let logs = run(p.cmd().args(["logs", &id]));
        let state = run(p.cmd().args([
            "inspect",
            "--format",
            "{{.State.Status}} {{.State.ExitCode}}",
            &id,
        ]));
        format!(
            "podman says: {} / {}{}",
            String::from_utf8_lossy(&state.stdout).trim(),
            String::from_utf8_lossy(&logs.stdout).trim(),
            String::from_utf8_lossy(&logs.stderr).trim()
        )
    });
    let pids = cgroup_dir(pid, "pids");
    assert_eq!(read(&pids.join("pids.max")), "8");
    // The shells are still forking when PID 1 is found: wait for the
    // refusal, then the count must be the limit.
    let refused = || {
        read(&pids.join("pids.events"))
            .lines()
            .find_map(|l| l.strip_prefix("max ")?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while refused() == 0 || read(&pids.join("pids.current")) != "8" {
        assert!(
            Instant::now() < deadline,
            "no refused fork at 8 processes: pids.current {}, pids.events {}",
            read(&pids.join("pids.current")),
            read(&pids.join("pids.events"))
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        read(&pids.join("pids.current")),
        "8",
        "and it stays at the limit"
    );
    ok(p.cmd().args(["rm", "-f", "-t", "0", &id]));

    // --cpus 0.2 holds a spinner near 20% of one CPU (its cgroup's counter).
    let id = ok(p.run(&[
        "-d",
        "--cpus",
        "0.2",
        IMAGE,
        "sh",
        "-c",
        "while :; do :; done; echo kcell-marker-cpus",
    ]));
    let pid = find_process("kcell-marker-cpus");
    std::thread::sleep(Duration::from_millis(500));
    let (t0, u0) = (Instant::now(), cpu_usage_ns(pid));
    std::thread::sleep(Duration::from_secs(3));
    let share = (cpu_usage_ns(pid) - u0) as f64 / t0.elapsed().as_nanos() as f64;
    ok(p.cmd().args(["rm", "-f", "-t", "0", &id]));
    assert!(
        (0.15..=0.25).contains(&share),
        "--cpus 0.2 gave a share of {share:.3}"
    );

    // --network none: only lo. The default network: eth0, and the host.
    let dev = ok(p.run(&["--rm", "--network", "none", IMAGE, "cat", "/proc/net/dev"]));
    let links: Vec<&str> = dev
        .lines()
        .filter_map(|l| l.split_once(':').map(|x| x.0.trim()))
        .collect();
    assert_eq!(links, ["lo"], "--network none: {dev}");
    let out = ok(p.run(&[
        "--rm",
        IMAGE,
        "sh",
        "-c",
        &format!("cat /proc/net/dev; nc $(ip route | awk '/default/ {{print $3}}') {port}"),
    ]));
    assert!(out.contains("eth0:"), "podman's network gives eth0: {out}");
    assert!(out.contains("kcell-outside"), "and reaches the host: {out}");

    ok(p.cmd().args(["rm", "-a", "-f"]));
    assert_census_returns(&before, 10);
}

/// A command line as one shell string (for `script -c`).
fn shell_words(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| format!("'{}'", a.to_string_lossy().replace('\'', "'\\''")))
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
#[cfg_attr(
    kcell_unprivileged,
    ignore = "needs root: containers, cgroups and mounts (run the tests as root)"
)]
fn fifty_podman_containers_eight_at_a_time_leave_nothing() {
    let (s, _guard) = setup("/usr/bin/podman", "podman");
    let p = Podman { s: &s };
    ok(p.cmd().arg("import").arg(&s.tarball).arg(IMAGE));
    ok(p.run(&["--rm", "--network", "none", IMAGE, "true"]));
    let before = census();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= 50 {
                    break;
                }
                let name = format!("kcell-conc-{i}");
                let steps: [Vec<&str>; 4] = [
                    vec![
                        "create",
                        "--network",
                        "none",
                        "--ulimit",
                        "nofile=1024:1024",
                        "--ulimit",
                        "nproc=1024:1024",
                        "--name",
                        &name,
                        IMAGE,
                        "sleep",
                        "1000",
                    ],
                    vec!["start", &name],
                    vec!["kill", &name],
                    vec!["rm", "-f", "-t", "0", &name],
                ];
                for step in steps {
                    let out = run(p.cmd().args(&step));
                    if !out.status.success() {
                        failures
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(format!(
                                "podman {}: {}",
                                step.join(" "),
                                String::from_utf8_lossy(&out.stderr).trim()
                            ));
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap_or_else(|e| e.into_inner());
    assert!(
        failures.is_empty(),
        "{} steps failed: {failures:#?}",
        failures.len()
    );
    assert_census_returns(&before, 10);
}

// ------------------------------------------------------------ containerd

/// A containerd of the test's own: its root, state and socket in the
/// test's directory; killed on drop.
struct Containerd {
    child: Child,
    socket: PathBuf,
}

impl Containerd {
    fn start(dir: &Path) -> Containerd {
        std::fs::create_dir_all(dir).expect("mkdir containerd");
        let socket = dir.join("containerd.sock");
        let config = dir.join("containerd.toml");
        std::fs::write(
            &config,
            "version = 2\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n",
        )
        .expect("write config");
        let child = Command::new("/usr/bin/containerd")
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
        let d = Containerd { child, socket };
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
        let mut c = Command::new("/usr/bin/ctr");
        c.arg("--address")
            .arg(&self.socket)
            .args(["--namespace", "kcell"]);
        c
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

#[test]
#[cfg_attr(
    kcell_unprivileged,
    ignore = "needs root: containers, cgroups and mounts (run the tests as root)"
)]
fn containerd_runs_its_containers_on_kcell_oci() {
    let (s, _guard) = setup("/usr/bin/ctr", "containerd");
    let before = census();
    let image = s.dir.path().join("image.tar");
    ok(Command::new(KCELL)
        .env("KCELL_ROOT", s.dir.path().join("store"))
        .args(["image", "pack", "-t", "kcell-busybox:test", "-o"])
        .arg(&image)
        .arg(s.dir.path().join("rootfs")));
    {
        let d = Containerd::start(&s.dir.path().join("containerd"));
        ok(d.ctr()
            .args(["image", "import", "--snapshotter", "native"])
            .arg(&image));
        let listed = ok(d.ctr().args(["image", "ls", "-q"]));
        let img = listed.lines().next().expect("the imported image is listed");
        let base = |c: &mut Command| {
            c.args(["run", "--runc-binary", KCELL_OCI, "--snapshotter", "native"]);
        };
        let mut c = d.ctr();
        base(&mut c);
        assert_eq!(ok(c.args(["--rm", img, "kcell-ctr-1", "echo", "hi"])), "hi");
        let mut c = d.ctr();
        base(&mut c);
        ok(c.args([
            "-d",
            img,
            "kcell-ctr-2",
            "sh",
            "-c",
            "sleep 1000; echo kcell-marker-ctr",
        ]));
        let pid = find_process("kcell-marker-ctr");
        let pidns = std::fs::read_link(format!("/proc/{pid}/ns/pid")).expect("ns");
        let seen = ok(d.ctr().args([
            "task",
            "exec",
            "--exec-id",
            "e1",
            "kcell-ctr-2",
            "readlink",
            "/proc/self/ns/pid",
        ]));
        assert_eq!(
            seen,
            pidns.to_string_lossy(),
            "exec runs in the container's namespaces"
        );
        ok(d.ctr()
            .args(["task", "kill", "--signal", "SIGKILL", "kcell-ctr-2"]));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Path::new(&format!("/proc/{pid}")).exists() {
            assert!(Instant::now() < deadline, "kill did not end the process");
            std::thread::sleep(Duration::from_millis(50));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ok(d.ctr().args(["task", "ls"])).contains("STOPPED") {
            assert!(
                Instant::now() < deadline,
                "the task never showed as stopped"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        ok(d.ctr().args(["task", "delete", "kcell-ctr-2"]));
        ok(d.ctr().args(["container", "delete", "kcell-ctr-2"]));
    }
    assert_census_returns(&before, 10);
}

// ---------------------------------------------------------------- Docker

#[test]
#[cfg_attr(
    kcell_unprivileged,
    ignore = "needs root: containers, cgroups and mounts (run the tests as root)"
)]
fn docker_runs_a_container_on_kcell_oci() {
    let (s, _guard) = setup("/usr/sbin/dockerd", "docker.io");
    let d = s.dir.path().join("docker");
    std::fs::create_dir_all(&d).expect("mkdir");
    let socket = d.join("docker.sock");
    let log = d.join("dockerd.log");
    let before = census();
    let mut dockerd = Command::new("/usr/sbin/dockerd")
        .arg("--add-runtime")
        .arg(format!("kcell={KCELL_OCI}"))
        .arg("--data-root")
        .arg(d.join("data"))
        .arg("--exec-root")
        .arg(d.join("exec"))
        .arg("--pidfile")
        .arg(d.join("dockerd.pid"))
        .arg("-H")
        .arg(format!("unix://{}", socket.display()))
        .args(["--bridge", "none", "--iptables=false", "--ip6tables=false"])
        .args(["--storage-driver", "vfs"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("dockerd");
    let docker = || {
        let mut c = Command::new("/usr/bin/docker");
        c.arg("-H").arg(format!("unix://{}", socket.display()));
        c
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !docker()
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            if let Ok(Some(status)) = dockerd.try_wait() {
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
        ok(docker()
            .args(["import"])
            .arg(&s.tarball)
            .arg("kcell-busybox:test"));
        let hi = || {
            ok(docker().args([
                "run",
                "--runtime",
                "kcell",
                "--rm",
                "--network",
                "none",
                "kcell-busybox:test",
                "echo",
                "hi",
            ]))
        };
        assert_eq!(hi(), "hi");
    }));
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(dockerd.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = dockerd.wait();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
    // dockerd's parent cgroup (/docker) stays after its containers, as with
    // runc; it goes only if empty, so a container's left inside shows.
    for m in cgroup_mounts() {
        let parent = format!("{}:docker", m.display());
        if !before.cgroups.contains(&parent) {
            let _ = std::fs::remove_dir(m.join("docker"));
        }
    }
    assert_census_returns(&before, 15);
}
