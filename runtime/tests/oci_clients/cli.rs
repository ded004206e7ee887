//! The checks for a client with docker's command line (podman and Docker
//! share it), each reading what the kernel did for itself.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::readings::{
    answering_listener, assert_paused, assert_running, cgroup_dir, cpu_share, find_process,
    find_process_or, ok, read, run, shell_words, vmstat_oom_kills,
};

/// A client with docker's command line, driving the runtime under test.
pub trait DockerLike {
    /// The client with its global options (its storage in the test's
    /// directory, its socket).
    fn cmd(&self) -> Command;
    /// `verb` ("run" or "create") with the runtime under test and the
    /// options this host needs, then `args`.
    fn container(&self, verb: &str, args: &[&str]) -> Command;
    /// Removes a container at once, running or not.
    fn remove(&self, id: &str) -> Command;

    fn run(&self, args: &[&str]) -> Command {
        self.container("run", args)
    }
}

/// The value of a `Name:` line of /proc/<pid>/status, as printed.
fn status_field<'a>(status: &'a str, name: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {name} in {status}"))
}

/// The options of the topmost mount at `point` in a /proc/mounts text.
fn mount_options<'a>(mounts: &'a str, point: &str) -> (&'a str, Vec<&'a str>) {
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(1) == Some(&point)).then(|| (f[2], f[3].split(',').collect()))
        })
        .next_back()
        .unwrap_or_else(|| panic!("no mount at {point}: {mounts}"))
}

/// The exit status, the root, the user, capabilities, volumes, a tmpfs's
/// size, environment and working directory, and the hostname.
pub fn properties(c: &dyn DockerLike, image: &str, dir: &Path) {
    let out = run(c.run(&["--rm", image, "sh", "-c", "exit 7"]));
    assert_eq!(out.status.code(), Some(7), "the process's exit status");

    let out = ok(c.run(&[
        "--rm",
        "--read-only",
        image,
        "sh",
        "-c",
        "touch /kcell-ro 2>/dev/null; echo rc=$?; cat /proc/self/mounts",
    ]));
    assert!(
        out.starts_with("rc=1"),
        "--read-only: touch / worked: {out}"
    );
    assert!(
        mount_options(&out, "/").1.contains(&"ro"),
        "--read-only: / is mounted read-only: {out}"
    );

    let status = ok(c.run(&[
        "--rm",
        "--user",
        "1000:1001",
        image,
        "cat",
        "/proc/self/status",
    ]));
    assert_eq!(status_field(&status, "Uid"), "1000\t1000\t1000\t1000");
    assert_eq!(status_field(&status, "Gid"), "1001\t1001\t1001\t1001");

    let status = ok(c.run(&[
        "--rm",
        "--cap-drop",
        "ALL",
        "--cap-add",
        "NET_BIND_SERVICE",
        image,
        "cat",
        "/proc/self/status",
    ]));
    // CAP_NET_BIND_SERVICE is bit 10; every other one is gone.
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(status_field(&status, set), "0000000000000400", "{set}");
    }

    let vol = dir.join("volume");
    std::fs::create_dir_all(&vol).expect("mkdir volume");
    std::fs::write(vol.join("in"), "kcell-in\n").expect("write volume/in");
    let rw = format!("{}:/data", vol.display());
    let out = ok(c.run(&[
        "--rm",
        "-v",
        &rw,
        image,
        "sh",
        "-c",
        "cat /data/in; echo kcell-out > /data/out",
    ]));
    assert_eq!(out, "kcell-in", "a volume shows the host's file");
    assert_eq!(
        read(&vol.join("out")),
        "kcell-out",
        "and the container's write reaches the host"
    );
    let ro = format!("{}:/data:ro", vol.display());
    let out = ok(c.run(&[
        "--rm",
        "-v",
        &ro,
        image,
        "sh",
        "-c",
        "echo x > /data/in 2>/dev/null; echo rc=$?",
    ]));
    assert_eq!(out, "rc=1", "a :ro volume refuses a write");
    assert_eq!(read(&vol.join("in")), "kcell-in");

    let out = ok(c.run(&[
        "--rm",
        "--tmpfs",
        "/scratch:size=1m",
        image,
        "sh",
        "-c",
        "dd if=/dev/zero of=/scratch/f bs=1024 count=2048 2>/dev/null; echo rc=$?; cat /proc/self/mounts",
    ]));
    let (fstype, opts) = mount_options(&out, "/scratch");
    assert_eq!(fstype, "tmpfs", "--tmpfs: {out}");
    assert!(opts.contains(&"size=1024k"), "--tmpfs size=1m: {opts:?}");
    assert!(out.starts_with("rc=1"), "2 MiB do not fit in 1 MiB: {out}");

    let out = ok(c.run(&[
        "--rm",
        "-e",
        "KCELL_E=kcell-env",
        "-w",
        "/tmp",
        "--hostname",
        "kcell-h",
        image,
        "sh",
        "-c",
        "echo $KCELL_E; readlink /proc/self/cwd; cat /proc/sys/kernel/hostname",
    ]));
    assert_eq!(out, "kcell-env\n/tmp\nkcell-h", "env, workdir, hostname");
}

/// run -d, exec in its namespaces, ps, pause/unpause (the freezer and the
/// CPU counter), stop, rm.
pub fn lifecycle(c: &dyn DockerLike, image: &str) {
    let name = "kcell-client-d";
    let id = ok(c.run(&[
        "-d",
        "--name",
        name,
        image,
        "sh",
        "-c",
        "while :; do :; done; echo kcell-marker-spin",
    ]));
    let pid = find_process("kcell-marker-spin");
    let pidns = std::fs::read_link(format!("/proc/{pid}/ns/pid")).expect("ns");
    let seen = ok(c
        .cmd()
        .args(["exec", name, "readlink", "/proc/self/ns/pid"]));
    assert_eq!(
        seen,
        pidns.to_string_lossy(),
        "exec runs in the container's PID namespace"
    );
    let ps = ok(c.cmd().args(["ps", "--format", "{{.ID}} {{.Names}}"]));
    assert!(
        ps.contains(name) && id.starts_with(ps.split(' ').next().unwrap_or("-")),
        "ps: {ps}"
    );
    ok(c.cmd().args(["pause", name]));
    assert_paused(pid);
    ok(c.cmd().args(["unpause", name]));
    assert_running(pid);
    ok(c.cmd().args(["stop", "-t", "1", name]));
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "stop ended the process"
    );
    ok(c.cmd().args(["rm", name]));
}

/// run -it: a pty through the console socket. `script` gives the client a
/// terminal; its stdin stays open (a pipe) until the container ended.
pub fn terminal(c: &dyn DockerLike, image: &str) {
    let mut script = Command::new("script")
        .arg("-qec")
        .arg(shell_words(&c.run(&["-it", "--rm", image, "tty"])))
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
}

/// --memory 16m (OOM), --pids-limit 8, --cpus 0.2, read from the cgroup
/// files and /proc/vmstat.
pub fn limits(c: &dyn DockerLike, image: &str) {
    // Touching 64 MiB under --memory 16m is OOM-killed.
    let kills = vmstat_oom_kills();
    let out = run(c.run(&[
        "--rm",
        "--memory",
        "16m",
        "--memory-swap",
        "16m",
        image,
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
    let id = ok(c.run(&["-d", "--pids-limit", "8", image, "sh", "-c",
        "sh -c 'for i in 1 2 3 4 5 6 7 8 9 10 11 12; do sleep 1000 & done'; echo kcell-marker-pids; sleep 1000; true"]));
    let pid = find_process_or("kcell-marker-pids", || {
        let logs = run(c.cmd().args(["logs", &id]));
        let state = run(c.cmd().args([
            "inspect",
            "--format",
            "{{.State.Status}} {{.State.ExitCode}}",
            &id,
        ]));
        format!(
            "the client says: {} / {}{}",
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
    ok(c.remove(&id));

    // --cpus 0.2 holds a spinner near 20% of one CPU (its cgroup's counter).
    let id = ok(c.run(&[
        "-d",
        "--cpus",
        "0.2",
        image,
        "sh",
        "-c",
        "while :; do :; done; echo kcell-marker-cpus",
    ]));
    let share = cpu_share(find_process("kcell-marker-cpus"));
    ok(c.remove(&id));
    assert!(
        (0.15..=0.25).contains(&share),
        "--cpus 0.2 gave a share of {share:.3}"
    );
}

/// --network none: only lo. The client's default network: eth0, and a
/// listener on the host answers through its gateway.
pub fn network(c: &dyn DockerLike, image: &str) {
    let port = answering_listener("kcell-outside\n");
    let dev = ok(c.run(&["--rm", "--network", "none", image, "cat", "/proc/net/dev"]));
    let links: Vec<&str> = dev
        .lines()
        .filter_map(|l| l.split_once(':').map(|x| x.0.trim()))
        .collect();
    assert_eq!(links, ["lo"], "--network none: {dev}");
    let out = ok(c.run(&[
        "--rm",
        image,
        "sh",
        "-c",
        &format!("cat /proc/net/dev; nc $(ip route | awk '/default/ {{print $3}}') {port}"),
    ]));
    assert!(
        out.contains("eth0:"),
        "the default network gives eth0: {out}"
    );
    assert!(out.contains("kcell-outside"), "and reaches the host: {out}");
}

/// 50 containers, 8 at a time: create, start, kill, remove; every step
/// must succeed.
pub fn fifty_eight_at_a_time(c: &(dyn DockerLike + Sync), image: &str) {
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
                let create = ["--network", "none", "--name", &name, image, "sleep", "1000"];
                let steps = [
                    c.container("create", &create),
                    {
                        let mut s = c.cmd();
                        s.args(["start", &name]);
                        s
                    },
                    {
                        let mut s = c.cmd();
                        s.args(["kill", &name]);
                        s
                    },
                    c.remove(&name),
                ];
                for mut step in steps {
                    let out = run(&mut step);
                    if !out.status.success() {
                        failures
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(format!(
                                "{}: {}",
                                shell_words(&step),
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
}
