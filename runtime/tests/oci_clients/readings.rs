//! What the tests read for themselves: exit statuses, /proc (a container's
//! process is found by a marker in its command line, not by a PID a client
//! reported), the cgroup files of that process and /proc/vmstat.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::census::cgroup_mounts;

pub fn run(mut cmd: impl std::borrow::BorrowMut<Command>) -> Output {
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

pub fn ok(mut cmd: impl std::borrow::BorrowMut<Command>) -> String {
    let cmd = cmd.borrow_mut();
    let out = run(&mut *cmd);
    assert!(out.status.success(), "{cmd:?} failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The host PID of the one process whose command line holds `marker`;
/// `why` says what the client knows when there is none.
pub fn find_process_or(marker: &str, why: impl Fn() -> String) -> i32 {
    match std::panic::catch_unwind(|| find_process(marker)) {
        Ok(pid) => pid,
        Err(_) => panic!("no container process with {marker:?}; {}", why()),
    }
}

/// The host PID of the one process whose command line holds `marker`.
pub fn find_process(marker: &str) -> i32 {
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
pub fn cgroup_dir(pid: i32, controller: &str) -> PathBuf {
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

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim()
        .to_string()
}

/// CPU time used by a cgroup so far, ns (v1 cpuacct.usage, v2 cpu.stat).
pub fn cpu_usage_ns(pid: i32) -> u64 {
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

pub fn vmstat_oom_kills() -> u64 {
    read(Path::new("/proc/vmstat"))
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill ")?.parse().ok())
        .unwrap_or(0)
}

/// A TCP listener on the host that answers each connection with `reply`.
pub fn answering_listener(reply: &'static str) -> u16 {
    let l = std::net::TcpListener::bind("0.0.0.0:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let _ = c.write_all(reply.as_bytes());
        }
    });
    port
}

/// A command line as one shell string (for `script -c`).
pub fn shell_words(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| format!("'{}'", a.to_string_lossy().replace('\'', "'\\''")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The share of one CPU `pid`'s cgroup used over 3 s, after 0.5 s to
/// settle (its own counter).
pub fn cpu_share(pid: i32) -> f64 {
    std::thread::sleep(Duration::from_millis(500));
    let (t0, u0) = (Instant::now(), cpu_usage_ns(pid));
    std::thread::sleep(Duration::from_secs(3));
    (cpu_usage_ns(pid) - u0) as f64 / t0.elapsed().as_nanos() as f64
}

/// A paused container's process: its freezer says frozen (v1
/// freezer.state, v2 cgroup.events) and its CPU counter stands still.
pub fn assert_paused(pid: i32) {
    let frozen_at = cpu_usage_ns(pid);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(frozen_at, cpu_usage_ns(pid), "a paused spinner uses no CPU");
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
}

/// A resumed container's process uses CPU again.
pub fn assert_running(pid: i32) {
    let t = cpu_usage_ns(pid);
    std::thread::sleep(Duration::from_millis(300));
    assert!(cpu_usage_ns(pid) > t, "a resumed spinner runs again");
}

/// Stops a daemon of the test's own (SIGTERM) and waits for it.
pub fn terminate(child: &mut Child) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
}
