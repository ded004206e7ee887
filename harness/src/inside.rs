//! `kcell-probe`: the helper that runs *inside* containers (the agent binary
//! under another name, copied into the image). Each subcommand makes the
//! system calls a behaviour is about and prints `key=value` lines, so cases
//! observe the kernel directly rather than parsing tool output.

use nix::errno::Errno;
use std::fs;
use std::io::{BufRead, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::{Duration, Instant};

mod confine;
mod net;

/// Printed by held commands once they are ready to be observed.
pub const READY: &str = "KCELL_READY";

/// What a workload prints when the harness should read its cgroup's CPU
/// counter (driver::Mark); the workload then sleeps a moment, so the
/// reading lands before it uses CPU again.
pub const MARK: &str = "KCELL_MARK";

fn out(key: &str, value: impl std::fmt::Display) {
    println!("{}", observation_line(key, value));
}

/// One `key=value` line. Control characters in the value become spaces: a
/// value read from the system (a command line of a `bash -c` script, a file
/// name) may hold a newline, which would otherwise end the line and drop the
/// rest of the value.
fn observation_line(key: &str, value: impl std::fmt::Display) -> String {
    let value = value.to_string().replace(|c: char| c.is_control(), " ");
    format!("{key}={value}")
}

fn errno_name(e: Errno) -> String {
    format!("{e:?}")
}

/// An io::Error as its errno's name (ENOENT), or its text when it has none.
fn io_errno(e: &std::io::Error) -> String {
    e.raw_os_error()
        .map_or(e.to_string(), |n| errno_name(Errno::from_raw(n)))
}

/// Blocks until stdin closes: how the host releases a held command.
fn wait_for_stdin_eof() {
    let mut sink = String::new();
    while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {
        sink.clear();
    }
}

/// Runs the helper with `args` (without the program name); returns the exit status.
pub fn main(args: &[String]) -> i32 {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match a.as_slice() {
        ["ids"] => ids(),
        ["nsinfo"] => nsinfo(),
        ["sysv-queues"] => sysv_queues(),
        ["mq-open", name] => mq_open(name),
        ["ps"] => ps(),
        ["orphan"] => orphan(),
        ["hold", ..] => hold(),
        ["spawn-hold", marker] => spawn_hold(marker),
        ["pid1-exit", marker] => pid1_exit(marker),
        ["links"] => links(),
        ["fresh-netns"] => fresh_netns(),
        ["tcp-loopback"] => tcp_loopback().map(|r| out("loopback_tcp", r)),
        ["clocks"] => clocks(),
        ["escape", path] => escape(None, path),
        ["escape", "--chroot", dir, path] => escape(Some(dir), path),
        ["mounts"] => mounts(),
        ["rootmount"] => root_mount(),
        ["cgroup"] => cgroup(),
        ["spin", rest @ ..] => spin(rest),
        ["work", size, seconds] => work(size, seconds),
        ["alloc", size] => alloc(size, false),
        ["alloc", size, "--hold"] => alloc(size, true),
        ["fork-until-fail", limit] => fork_until_fail(limit),
        ["direct-io", op, dev, size] => direct_io(op, dev, size),
        ["counter", file] => counter(file),
        ["open", path] => open_device(path),
        ["overlay", dir] => overlay(dir),
        ["write", path] => write_file(path),
        ["fsinfo", path] => fsinfo(path),
        ["netns-persist", dir] => netns_persist(dir),
        ["addrs"] => net::addrs(),
        ["ping", target] => net::ping(target),
        ["tcp-connect", host, port] => net::tcp_connect(host, port, None),
        ["tcp-connect", host, port, seconds] => net::tcp_connect(host, port, Some(seconds)),
        ["tcp-serve", port] => net::tcp_serve(port),
        ["caps"] => confine::caps(),
        ["syscalls"] => confine::syscalls(),
        ["try-write", key, path] => confine::try_write(key, path),
        ["try-read", key, path] => confine::try_read(key, path),
        ["try-mount", dir] => confine::try_mount(dir),
        ["try-kill", pid] => confine::try_kill(pid),
        ["try-unshare-user"] => confine::try_unshare_user(),
        ["cgroup-raise"] => confine::cgroup_raise(false),
        ["cgroup-raise", "--remount"] => confine::cgroup_raise(true),
        ["abstract-connect", name] => confine::abstract_connect(name),
        _ => Err(format!("kcell-probe: unknown subcommand {args:?}")),
    };
    let _ = std::io::stdout().flush();
    match result {
        Ok(()) => 0,
        Err(msg) => {
            eprintln!("{msg}");
            1
        }
    }
}

type Res = Result<(), String>;

fn ids() -> Res {
    use nix::unistd::*;
    out("uid", getuid());
    out("euid", geteuid());
    out("gid", getgid());
    out("egid", getegid());
    out("pid", getpid());
    out("ppid", getppid());
    Ok(())
}

/// SysV queues visible in this IPC namespace, as ipcs does it: MSG_INFO for
/// the highest index, then MSG_STAT of each.
fn sysv_queues() -> Res {
    let mut info: libc::msqid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: MSG_INFO writes a struct msginfo, which is smaller than msqid_ds.
    let max = unsafe { libc::msgctl(0, libc::MSG_INFO, &mut info) };
    if max < 0 {
        return Err(format!(
            "msgctl MSG_INFO: {}",
            std::io::Error::last_os_error()
        ));
    }
    let mut keys = Vec::new();
    for index in 0..=max {
        let mut ds: libc::msqid_ds = unsafe { std::mem::zeroed() };
        // SAFETY: ds is a valid msqid_ds.
        if unsafe { libc::msgctl(index, libc::MSG_STAT, &mut ds) } >= 0 {
            keys.push(format!("0x{:08x}", ds.msg_perm.__key as u32));
        }
    }
    out("sysv_count", keys.len());
    out("sysv_keys", keys.join(","));
    Ok(())
}

fn mq_open(name: &str) -> Res {
    let c = std::ffi::CString::new(name).map_err(|e| e.to_string())?;
    match nix::mqueue::mq_open(
        c.as_c_str(),
        nix::mqueue::MQ_OFlag::O_RDONLY,
        nix::sys::stat::Mode::empty(),
        None,
    ) {
        Ok(_) => out("mq_open", "ok"),
        Err(e) => out("mq_open", errno_name(e)),
    }
    Ok(())
}

fn proc_pids() -> Vec<i32> {
    let mut pids: Vec<i32> = fs::read_dir("/proc")
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    pids.sort_unstable();
    pids
}

/// The filesystem mounted at `/` as the kernel reports it (the last
/// mountinfo line for `/`): its type, and for an overlay its layers.
fn root_mount() -> Res {
    let info =
        fs::read_to_string("/proc/self/mountinfo").map_err(|e| format!("read mountinfo: {e}"))?;
    let line = info
        .lines()
        .rev()
        .find(|l| l.split(' ').nth(4) == Some("/"))
        .ok_or("no mount at / in /proc/self/mountinfo")?;
    let (_, after) = line
        .split_once(" - ")
        .ok_or("mountinfo line without ' - '")?;
    let mut fields = after.split(' ');
    out("fstype", fields.next().unwrap_or_default());
    let options = fields.nth(1).unwrap_or_default();
    for key in ["lowerdir", "upperdir"] {
        let value = options
            .split(',')
            .find_map(|o| o.strip_prefix(&format!("{key}=")))
            .unwrap_or_default();
        out(key, value);
    }
    Ok(())
}

/// What ps shows: every PID in /proc with its command line.
fn ps() -> Res {
    let pids = proc_pids();
    let cmdlines: Vec<String> = pids
        .iter()
        .map(|p| {
            fs::read(format!("/proc/{p}/cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .trim()
                        .to_string()
                })
                .unwrap_or_default()
        })
        .collect();
    out("count", pids.len());
    out(
        "pids",
        pids.iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(","),
    );
    out("cmdlines", cmdlines.join("|"));
    Ok(())
}

fn state_of(pid: i32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Orphan reaping as PID 1: a child forks a grandchild and exits; the
/// grandchild, orphaned, reports its new parent; PID 1 then reaps it.
fn orphan() -> Res {
    use nix::unistd::{fork, ForkResult};
    let (r, w) = nix::unistd::pipe().map_err(|e| e.to_string())?;
    // SAFETY: the helper is single-threaded here.
    match unsafe { fork() }.map_err(|e| e.to_string())? {
        ForkResult::Child => {
            // SAFETY: as above.
            if let Ok(ForkResult::Child) = unsafe { fork() } {
                // Wait until our parent is gone, then say who adopted us.
                let start = Instant::now();
                while nix::unistd::getppid().as_raw() != 1
                    && start.elapsed() < Duration::from_secs(5)
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                let msg = format!("{} {}\n", nix::unistd::getpid(), nix::unistd::getppid());
                let _ = nix::unistd::write(&w, msg.as_bytes());
                std::process::exit(0);
            }
            std::process::exit(0);
        }
        ForkResult::Parent { child } => {
            drop(w);
            let mut reaped = Vec::new();
            let mut line = String::new();
            let mut reader = std::io::BufReader::new(fs::File::from(r));
            let _ = reader.read_line(&mut line);
            let mut parts = line.split_whitespace();
            let grandchild: i32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
            let adopted_by: i32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(-1);
            let deadline = Instant::now() + Duration::from_secs(5);
            while reaped.len() < 2 && Instant::now() < deadline {
                match nix::sys::wait::waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
                    Ok(nix::sys::wait::WaitStatus::StillAlive) => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Ok(s) => reaped.extend(s.pid().map(|p| p.as_raw())),
                    Err(_) => break,
                }
            }
            let zombies = proc_pids()
                .into_iter()
                .filter(|p| state_of(*p) == Some('Z'))
                .count();
            out("orphan_ppid", adopted_by);
            out("reaped_child", reaped.contains(&child.as_raw()));
            out(
                "reaped_orphan",
                grandchild > 0 && reaped.contains(&grandchild),
            );
            out("zombies", zombies);
        }
    }
    Ok(())
}

/// Sleeps until killed; its arguments are markers the host scans for.
fn hold() -> Res {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn spawn_hold(marker: &str) -> Res {
    let child = std::process::Command::new("/proc/self/exe")
        .arg0("kcell-probe")
        .args(["hold", marker])
        // Its own stdio: the runner waits for EOF on the container's stdout.
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("spawn hold: {e}"))?;
    out("spawned", child.id());
    // Leave it running: the case is about what happens to it when PID 1 exits.
    std::mem::forget(child);
    Ok(())
}

/// What happens to a process when the PID 1 of its namespace exits, shown
/// on a nested namespace so the runtime's own cleanup (which kills what is
/// left in the container's cgroup) cannot stand in for the kernel: a child
/// unshares CLONE_NEWPID (or, for the control, does not), its child spawns a
/// marked process and exits; then the marked processes still alive are counted.
fn pid1_exit(marker: &str) -> Res {
    for (label, new_ns) in [("nested", true), ("plain", false)] {
        let mark = format!("{marker}-{label}");
        // SAFETY: single-threaded.
        match unsafe { nix::unistd::fork() }.map_err(|e| e.to_string())? {
            nix::unistd::ForkResult::Child => {
                if new_ns {
                    if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWPID) {
                        eprintln!("unshare pid: {e}");
                        std::process::exit(1);
                    }
                }
                // SAFETY: single-threaded.
                match unsafe { nix::unistd::fork() } {
                    Ok(nix::unistd::ForkResult::Child) => {
                        let _ = spawn_hold(&mark);
                        std::process::exit(0);
                    }
                    Ok(nix::unistd::ForkResult::Parent { child }) => {
                        let _ = nix::sys::wait::waitpid(child, None);
                        std::process::exit(0);
                    }
                    Err(_) => std::process::exit(1),
                }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let _ = nix::sys::wait::waitpid(child, None);
            }
        }
        let count = || -> Vec<i32> {
            proc_pids()
                .into_iter()
                .filter(|p| state_of(*p) != Some('Z'))
                .filter(|p| {
                    fs::read(format!("/proc/{p}/cmdline"))
                        .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&mark))
                })
                .collect()
        };
        // The nested namespace is gone by the time its creator is reaped; the
        // control's survivor is looked for a little longer on a slow guest.
        let mut survivors = count();
        let deadline = Instant::now() + Duration::from_secs(1);
        while survivors.is_empty() && !new_ns && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            survivors = count();
        }
        out(&format!("{label}_survivors"), survivors.len());
        if survivors.is_empty() && !new_ns {
            // Unexpected for the control: show what was there instead.
            let seen: Vec<String> = proc_pids()
                .into_iter()
                .map(|p| {
                    format!(
                        "{p}:{:?}:{}",
                        state_of(p),
                        fs::read(format!("/proc/{p}/cmdline"))
                            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
                            .unwrap_or_default()
                    )
                })
                .collect();
            out("plain_seen", seen.join("|"));
        }
        for p in survivors {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    Ok(())
}

fn link_names() -> Result<Vec<String>, String> {
    let mut names: Vec<String> = nix::net::if_::if_nameindex()
        .map_err(|e| format!("if_nameindex: {e}"))?
        .iter()
        .map(|i| i.name().to_string_lossy().to_string())
        .collect();
    names.sort();
    Ok(names)
}

fn lo_up() -> bool {
    kcell::netdev::flags("lo").is_ok_and(|f| f & libc::IFF_UP as libc::c_short != 0)
}

fn links() -> Res {
    let names = link_names()?;
    out("count", names.len());
    out("links", names.join(","));
    out("lo_up", lo_up());
    Ok(())
}

/// TCP over 127.0.0.1 within this network namespace.
fn tcp_loopback() -> Result<String, String> {
    let listener = match std::net::TcpListener::bind("127.0.0.1:0") {
        Ok(l) => l,
        Err(e) => return Ok(format!("bind:{}", io_errno(&e))),
    };
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    Ok(
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(_) => "ok".to_string(),
            Err(e) => io_errno(&e),
        },
    )
}

/// The document's sequence in a brand-new network namespace: only lo, down;
/// after bringing it up, loopback traffic works.
fn fresh_netns() -> Res {
    use nix::unistd::{fork, ForkResult};
    // SAFETY: single-threaded.
    match unsafe { fork() }.map_err(|e| e.to_string())? {
        ForkResult::Child => {
            let code = (|| -> Res {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| format!("unshare net: {e}"))?;
                let names = link_names()?;
                out("fresh_links", names.join(","));
                out("fresh_lo_up", lo_up());
                out("fresh_tcp_before_up", tcp_loopback()?);
                kcell::netdev::set_up("lo").map_err(|e| e.to_string())?;
                out("fresh_lo_up_after", lo_up());
                out("fresh_tcp_after_up", tcp_loopback()?);
                Ok(())
            })();
            let _ = std::io::stdout().flush();
            std::process::exit(i32::from(code.is_err()));
        }
        ForkResult::Parent { child } => {
            let status = nix::sys::wait::waitpid(child, None).map_err(|e| e.to_string())?;
            match status {
                nix::sys::wait::WaitStatus::Exited(_, 0) => Ok(()),
                other => Err(format!("fresh-netns child: {other:?}")),
            }
        }
    }
}

fn clock_secs(id: nix::time::ClockId) -> f64 {
    nix::time::clock_gettime(id).map_or(0.0, |t| t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9)
}

/// The clocks a time namespace offsets, and their difference: read in one
/// process a moment apart, `boot_minus_mono` does not depend on when the
/// process ran, so two runs can be compared however slow a runtime is.
fn clocks() -> Res {
    let monotonic = clock_secs(nix::time::ClockId::CLOCK_MONOTONIC);
    let boottime = clock_secs(nix::time::ClockId::CLOCK_BOOTTIME);
    out("monotonic", monotonic);
    out("boottime", boottime);
    out("boot_minus_mono", boottime - monotonic);
    let uptime = fs::read_to_string("/proc/uptime").unwrap_or_default();
    out("uptime", uptime.split_whitespace().next().unwrap_or("0"));
    Ok(())
}

/// The classic escape from a chroot: chroot into a subdirectory while the
/// working directory stays outside it, climb with "..", chroot("."). With
/// `--chroot DIR` the helper first confines itself the way a chroot-only
/// runtime would, which is the control the escape must succeed against.
fn escape(chroot_first: Option<&str>, target: &str) -> Res {
    if let Some(dir) = chroot_first {
        nix::unistd::chroot(dir).map_err(|e| format!("chroot {dir}: {e}"))?;
        nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))?;
    }
    let direct = Path::new(target).exists() || Path::new(&format!("/../../../..{target}")).exists();
    out("reached_directly", direct);
    let jail = "/tmp/kcell-escape";
    let _ = fs::create_dir_all(jail);
    nix::unistd::chroot(jail).map_err(|e| format!("chroot {jail}: {e}"))?;
    // The cwd is still outside the new root: walk up as far as it goes.
    for _ in 0..64 {
        let _ = nix::unistd::chdir("..");
    }
    nix::unistd::chroot(".").map_err(|e| format!("chroot .: {e}"))?;
    out("reached", Path::new(target).exists());
    Ok(())
}

fn mounts() -> Res {
    let text = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("read /proc/self/mountinfo: {e}"))?;
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = left.split_whitespace().collect();
        let (Some(mp), Some(opts)) = (fields.get(4), fields.get(5)) else {
            continue;
        };
        let fstype = right.split_whitespace().next().unwrap_or("?");
        out(&format!("fs.{mp}"), fstype);
        out(&format!("opts.{mp}"), opts);
    }
    Ok(())
}

fn cgroup() -> Res {
    let text = fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("read /proc/self/cgroup: {e}"))?;
    let paths: Vec<&str> = text
        .lines()
        .filter_map(|l| l.splitn(3, ':').nth(2))
        .collect();
    out("paths", paths.join(","));
    out("all_root", paths.iter().all(|p| *p == "/"));
    Ok(())
}

/// Exits the whole process when stdin closes: how held commands end.
fn exit_on_stdin_eof() {
    std::thread::spawn(|| {
        wait_for_stdin_eof();
        std::process::exit(0);
    });
}

/// Busy loops (threads or forked processes) until stdin closes.
fn spin(args: &[&str]) -> Res {
    let mut threads = 1;
    let mut procs = 1;
    let mut seconds: Option<f64> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "--threads" => {
                threads = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or("--threads N")?
            }
            "--procs" => procs = it.next().and_then(|n| n.parse().ok()).ok_or("--procs N")?,
            // CPU affinity (sched_setaffinity), not the cpuset controller:
            // a case asks only for what it uses.
            "--cpu" => {
                let cpu: usize = it.next().and_then(|n| n.parse().ok()).ok_or("--cpu N")?;
                let mut set = nix::sched::CpuSet::new();
                set.set(cpu).map_err(|e| format!("cpu {cpu}: {e}"))?;
                nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
                    .map_err(|e| format!("sched_setaffinity to CPU {cpu}: {e}"))?;
            }
            "--seconds" => {
                seconds = Some(
                    it.next()
                        .and_then(|n| n.parse().ok())
                        .ok_or("--seconds S")?,
                )
            }
            other => return Err(format!("spin: unknown option {other}")),
        }
    }
    for _ in 1..procs {
        // SAFETY: no threads exist yet.
        if let Ok(nix::unistd::ForkResult::Child) = unsafe { nix::unistd::fork() } {
            // Dies with the parent.
            let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
            break;
        }
    }
    if let Some(s) = seconds {
        // A fixed amount of work, for accounting: spin S seconds of CPU time, then exit.
        let start = cpu_time();
        while cpu_time() - start < s {
            for _ in 0..100_000 {
                std::hint::black_box(0u64);
            }
        }
        out("spun_s", format!("{:.3}", cpu_time() - start));
        return Ok(());
    }
    exit_on_stdin_eof();
    // Every spinner runs before the host is told to measure.
    for _ in 1..threads {
        std::thread::spawn(busy);
    }
    out("tid", nix::unistd::gettid());
    println!("{READY}");
    let _ = std::io::stdout().flush();
    busy()
}

fn cpu_time() -> f64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_PROCESS_CPUTIME_ID)
        .map_or(0.0, |t| t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9)
}

fn busy() -> ! {
    let mut x: u64 = 0;
    loop {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
}

/// Allocates and touches SIZE bytes, 64 KiB at a time; with `--hold`, keeps
/// them until stdin closes. "started" is printed first, so a run that dies
/// shows whether it got as far as running this code at all.
fn alloc(size: &str, hold: bool) -> Res {
    let bytes = crate::driver::bundle::size(size)?;
    out("started", true);
    let _ = std::io::stdout().flush();
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let mut done = 0u64;
    while done < bytes {
        let n = (bytes - done).min(64 << 10) as usize;
        chunks.push(vec![0xa5; n]);
        done += n as u64;
    }
    out("allocated", done);
    std::hint::black_box(&chunks);
    if hold {
        println!("{READY}");
        let _ = std::io::stdout().flush();
        wait_for_stdin_eof();
        std::hint::black_box(&chunks);
    }
    Ok(())
}

/// Forks sleeping children until fork fails (or `limit` is reached).
fn fork_until_fail(limit: &str) -> Res {
    let limit: usize = limit
        .parse()
        .map_err(|_| format!("fork-until-fail: bad limit {limit}"))?;
    let mut children = Vec::new();
    let mut failure = "none".to_string();
    while children.len() < limit {
        // SAFETY: single-threaded.
        match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Child) => {
                std::thread::sleep(Duration::from_secs(30));
                std::process::exit(0);
            }
            Ok(nix::unistd::ForkResult::Parent { child }) => children.push(child),
            Err(e) => {
                failure = errno_name(e);
                break;
            }
        }
    }
    out("forked", children.len());
    out("fork_error", failure);
    for c in &children {
        let _ = nix::sys::signal::kill(*c, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(*c, None);
    }
    Ok(())
}

/// O_DIRECT reads or writes of SIZE bytes in 64 KiB blocks; prints the rate.
fn direct_io(op: &str, dev: &str, size: &str) -> Res {
    use std::os::unix::fs::OpenOptionsExt;
    let bytes = crate::driver::bundle::size(size)?;
    const BLOCK: usize = 64 << 10;
    let write = match op {
        "read" => false,
        "write" => true,
        other => return Err(format!("direct-io: op must be read or write, not {other}")),
    };
    let mut file = fs::OpenOptions::new()
        .read(!write)
        .write(write)
        .custom_flags(libc::O_DIRECT)
        .open(dev)
        .map_err(|e| format!("open {dev} O_DIRECT: {e}"))?;
    // O_DIRECT needs a buffer aligned to the logical block size: 4096 covers all.
    let layout = std::alloc::Layout::from_size_align(BLOCK, 4096).map_err(|e| e.to_string())?;
    // SAFETY: layout has non-zero size; the buffer is freed below.
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
    if ptr.is_null() {
        return Err("allocating the O_DIRECT buffer failed".into());
    }
    // SAFETY: ptr points to BLOCK initialised bytes owned here.
    let buf = unsafe { std::slice::from_raw_parts_mut(ptr, BLOCK) };
    let start = Instant::now();
    let mut done = 0u64;
    let mut failure = None;
    while done < bytes {
        let r = if write {
            std::io::Write::write(&mut file, buf)
        } else {
            std::io::Read::read(&mut file, buf)
        };
        match r {
            Ok(0) => break,
            Ok(n) => done += n as u64,
            Err(e) => {
                failure = Some(e.to_string());
                break;
            }
        }
    }
    if write {
        let _ = file.sync_all();
    }
    let secs = start.elapsed().as_secs_f64();
    // SAFETY: allocated above with the same layout.
    unsafe { std::alloc::dealloc(ptr, layout) };
    if let Some(f) = failure {
        return Err(format!("direct-io {op} {dev}: {f}"));
    }
    out("bytes", done);
    out("seconds", format!("{secs:.4}"));
    out("rate_bps", format!("{:.0}", done as f64 / secs.max(1e-9)));
    out(
        "rate_mib_s",
        format!("{:.4}", done as f64 / secs.max(1e-9) / 1048576.0),
    );
    Ok(())
}

/// Increments a counter in FILE every 10 ms until stdin closes.
fn counter(file: &str) -> Res {
    exit_on_stdin_eof();
    // The first value exists before anyone is told to look at it.
    fs::write(file, "0").map_err(|e| format!("write {file}: {e}"))?;
    println!("{READY}");
    let _ = std::io::stdout().flush();
    let mut n: u64 = 0;
    let staging = format!("{file}.tmp");
    loop {
        n += 1;
        // Replaced whole (rename), so a reader never sees it half written.
        if fs::write(&staging, n.to_string()).is_ok() {
            let _ = fs::rename(&staging, file);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn open_device(path: &str) -> Res {
    match fs::OpenOptions::new().read(true).write(true).open(path) {
        Ok(_) => out("open", "ok"),
        Err(e) => out("open", io_errno(&e)),
    }
    Ok(())
}

fn listing(dir: &Path) -> String {
    crate::fixture::sorted_names(dir).join(",")
}

fn content(path: &Path) -> String {
    fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|e| format!("<{}>", io_errno(&e)))
}

/// The documents' overlay experiment: two lowers, an upper and a work dir;
/// then a new file, a changed lower file and a deleted lower file in merged.
fn overlay(dir: &str) -> Res {
    let d = Path::new(dir);
    let w = |p: &str, text: &str| fs::write(d.join(p), text).map_err(|e| format!("write {p}: {e}"));
    for sub in ["lower1", "lower2", "upper", "work", "merged"] {
        fs::create_dir_all(d.join(sub)).map_err(|e| format!("mkdir {sub}: {e}"))?;
    }
    w("lower1/a", "a from lower1")?;
    w("lower1/shared", "shared from lower1")?;
    w("lower2/b", "b from lower2")?;
    w("lower2/shared", "shared from lower2")?;
    let opts =
        format!("lowerdir={dir}/lower1:{dir}/lower2,upperdir={dir}/upper,workdir={dir}/work");
    nix::mount::mount(
        Some("overlay"),
        &d.join("merged"),
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(opts.as_str()),
    )
    .map_err(|e| format!("mount overlay {opts}: {e}"))?;
    out("merged_before", listing(&d.join("merged")));
    out("merged_shared", content(&d.join("merged/shared")));
    w("merged/new", "new in merged")?;
    w("merged/a", "a changed in merged")?;
    fs::remove_file(d.join("merged/b")).map_err(|e| format!("rm merged/b: {e}"))?;
    out("merged_after", listing(&d.join("merged")));
    out("merged_a", content(&d.join("merged/a")));
    out("upper", listing(&d.join("upper")));
    out("upper_a", content(&d.join("upper/a")));
    out("lower1", listing(&d.join("lower1")));
    out("lower1_a", content(&d.join("lower1/a")));
    out("lower2", listing(&d.join("lower2")));
    // A whiteout: a character device 0/0 named like the deleted file.
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let wh = match fs::symlink_metadata(d.join("upper/b")) {
        Ok(m) if m.file_type().is_char_device() => {
            format!("char:{}:{}", libc::major(m.rdev()), libc::minor(m.rdev()))
        }
        Ok(_) => "not a character device".to_string(),
        Err(e) => format!("<{e}>"),
    };
    out("upper_b", wh);
    let _ = nix::mount::umount2(&d.join("merged"), nix::mount::MntFlags::MNT_DETACH);
    Ok(())
}

fn write_file(path: &str) -> Res {
    match fs::write(path, "kcell\n") {
        Ok(()) => out("write", "ok"),
        Err(e) => out("write", io_errno(&e)),
    }
    Ok(())
}

/// Size (statvfs) and mode of a mount point.
fn fsinfo(path: &str) -> Res {
    use std::os::unix::fs::PermissionsExt;
    let st = nix::sys::statvfs::statvfs(path).map_err(|e| format!("statvfs {path}: {e}"))?;
    out("size_bytes", st.blocks() * st.fragment_size());
    let mode = fs::metadata(path)
        .map_err(|e| format!("stat {path}: {e}"))?
        .permissions()
        .mode()
        & 0o7777;
    out("mode", format!("{mode:o}"));
    Ok(())
}

/// A network namespace kept by a bind mount of /proc/PID/ns/net after its
/// creator exits (what `ip netns add` does): the creator sets lo up with MTU
/// 1234; afterwards setns on the bind-mounted file must find it so. The
/// control: the same namespace without the bind mount is gone (its
/// /proc/PID/ns/net with it).
fn netns_persist(dir: &str) -> Res {
    use nix::unistd::{fork, ForkResult};
    let holder = Path::new(dir).join("kcell-netns");
    fs::write(&holder, "").map_err(|e| format!("create {}: {e}", holder.display()))?;
    let (r, w) = nix::unistd::pipe().map_err(|e| e.to_string())?;
    let (r2, w2) = nix::unistd::pipe().map_err(|e| e.to_string())?;
    // SAFETY: single-threaded.
    let child = match unsafe { fork() }.map_err(|e| e.to_string())? {
        ForkResult::Child => {
            let ok = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).is_ok()
                && kcell::netdev::set_up("lo").is_ok()
                && kcell::netdev::set_mtu("lo", 1234).is_ok();
            let _ = nix::unistd::write(&w, if ok { b"y" } else { b"n" });
            // Wait until the parent has (or has not) bound the namespace.
            let mut b = [0u8; 1];
            let _ = nix::unistd::read(r2.as_raw_fd(), &mut b);
            std::process::exit(0);
        }
        ForkResult::Parent { child } => child,
    };
    drop(w);
    drop(r2);
    let mut b = [0u8; 1];
    let _ = nix::unistd::read(r.as_raw_fd(), &mut b);
    if b[0] != b'y' {
        return Err("the creator could not make and configure its network namespace".into());
    }
    let ns = format!("/proc/{child}/ns/net");
    nix::mount::mount(
        Some(ns.as_str()),
        &holder,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| format!("bind {ns}: {e}"))?;
    let _ = nix::unistd::write(&w2, b"x");
    let _ = nix::sys::wait::waitpid(child, None);
    out("creator_gone", !Path::new(&ns).exists());
    // Enter the kept namespace in a child, so this process keeps its own.
    // SAFETY: single-threaded.
    match unsafe { fork() }.map_err(|e| e.to_string())? {
        ForkResult::Child => {
            let code = (|| -> Res {
                let f = fs::File::open(&holder)
                    .map_err(|e| format!("open {}: {e}", holder.display()))?;
                nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| format!("setns: {e}"))?;
                out("setns", "ok");
                out("kept_lo_up", lo_up());
                out(
                    "kept_lo_mtu",
                    kcell::netdev::mtu("lo").map_err(|e| e.to_string())?,
                );
                Ok(())
            })();
            if let Err(e) = code {
                out("setns", e);
            }
            let _ = std::io::stdout().flush();
            std::process::exit(0);
        }
        ForkResult::Parent { child } => {
            let _ = nix::sys::wait::waitpid(child, None);
        }
    }
    let _ = nix::mount::umount2(&holder, nix::mount::MntFlags::MNT_DETACH);
    Ok(())
}

/// A known workload in one process: touch SIZE bytes, spin SECONDS of CPU,
/// then report the process's own CPU clock: `cpu_ns` counts from its fork,
/// so it includes the runtime's set-up in this process before exec;
/// `work_cpu_ns` counts from the mark (printed first, see MARK), the
/// workload alone.
fn work(size: &str, seconds: &str) -> Res {
    println!("{MARK}");
    let _ = std::io::stdout().flush();
    std::thread::sleep(std::time::Duration::from_millis(100));
    let entry = cpu_time();
    let bytes = crate::driver::bundle::size(size)?;
    let secs: f64 = seconds
        .parse()
        .map_err(|_| format!("work: bad seconds {seconds}"))?;
    let memory = vec![0x5au8; bytes as usize];
    std::hint::black_box(&memory);
    let start = cpu_time();
    while cpu_time() - start < secs {
        for _ in 0..100_000 {
            std::hint::black_box(0u64);
        }
    }
    out("touched", bytes);
    let now = cpu_time();
    out("cpu_ns", (now * 1e9) as u64);
    out("work_cpu_ns", ((now - entry) * 1e9) as u64);
    Ok(())
}

/// The namespaces this process is in (their inodes), its hostname and the
/// first process of its PID namespace, as `exec` must see them.
fn nsinfo() -> Res {
    for ns in ["uts", "ipc", "net", "mnt", "pid", "cgroup", "time", "user"] {
        let link = fs::read_link(format!("/proc/self/ns/{ns}"))
            .map(|l| l.to_string_lossy().to_string())
            .unwrap_or_else(|e| format!("<{e}>"));
        out(&format!("ns_{ns}"), link);
    }
    out(
        "hostname",
        nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().to_string())
            .unwrap_or_default(),
    );
    let pid1 = fs::read("/proc/1/cmdline")
        .map(|c| {
            String::from_utf8_lossy(&c)
                .replace('\0', " ")
                .trim()
                .to_string()
        })
        .unwrap_or_default();
    out("pid1_cmdline", pid1);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::observation_line;

    #[test]
    fn a_value_with_newlines_stays_on_one_line() {
        let line = observation_line("cmdlines", "bash -c a=0\nrun\r\tx|kcell-hostproc-1");
        assert_eq!(line, "cmdlines=bash -c a=0 run  x|kcell-hostproc-1");
        assert_eq!(line.lines().count(), 1);
    }
}
