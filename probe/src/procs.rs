//! Processes and IPC as a container sees them: ids, the PID namespace
//! (ps, orphans, what PID 1's exit does), SysV and POSIX queues, the
//! namespaces a process is in.

#[allow(unused_imports)]
use super::*;

pub(super) fn ids() -> Res {
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
pub(super) fn sysv_queues() -> Res {
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

pub(super) fn mq_open(name: &str) -> Res {
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

pub(super) fn proc_pids() -> Vec<i32> {
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

/// What ps shows: every PID in /proc with its command line.
pub(super) fn ps() -> Res {
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

pub(super) fn state_of(pid: i32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Orphan reaping as PID 1: a child forks a grandchild and exits; the
/// grandchild, orphaned, reports its new parent; PID 1 then reaps it.
pub(super) fn orphan() -> Res {
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
pub(super) fn hold() -> Res {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

pub(super) fn spawn_hold(marker: &str) -> Res {
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
pub(super) fn pid1_exit(marker: &str) -> Res {
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

/// The namespaces this process is in (their inodes), its hostname and the
/// first process of its PID namespace, as `exec` must see them.
pub(super) fn nsinfo() -> Res {
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
