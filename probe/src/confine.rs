//! Confinement probes: what the container's process may not do. Each tries
//! the action itself and prints the kernel's answer (`ok` or the errno).

use super::{io_errno, out, Res};
use nix::errno::Errno;

/// The capability sets and no_new_privs of this process (/proc/self/status).
pub fn caps() -> Res {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("/proc/self/status: {e}"))?;
    for line in status.lines() {
        for (field, key) in [
            ("CapInh:", "cap_inh"),
            ("CapPrm:", "cap_prm"),
            ("CapEff:", "cap_eff"),
            ("CapBnd:", "cap_bnd"),
            ("CapAmb:", "cap_amb"),
            ("NoNewPrivs:", "no_new_privs"),
            ("Seccomp:", "seccomp_mode"),
        ] {
            if let Some(v) = line.strip_prefix(field) {
                let v = v.trim();
                // Masks as 0x<hex>, so a mask of only digits stays a mask.
                match u64::from_str_radix(v, 16) {
                    Ok(mask) if key.starts_with("cap_") => out(key, format!("0x{mask:x}")),
                    _ => out(key, v),
                }
            }
        }
    }
    Ok(())
}

fn answer(rc: libc::c_long) -> String {
    if rc >= 0 {
        "ok".into()
    } else {
        format!("{:?}", Errno::last())
    }
}

/// One call of each class the default seccomp profile denies, with
/// arguments that make it fail harmlessly (or do nothing) when allowed:
/// EPERM is the profile's (or a missing capability's) answer, anything else
/// the call's own.
pub fn syscalls() -> Res {
    let module = c"kcell_no_such_module";
    let no_swap = c"/kcell-no-swap";
    let empty = c"";
    // SAFETY (every closure): invalid or null arguments the kernel checks
    // before acting; none of these calls can change the system.
    let calls: [(&str, &dyn Fn() -> libc::c_long); 8] = [
        // KEYCTL_GET_KEYRING_ID of the session keyring, without create.
        ("keyctl", &|| unsafe {
            libc::syscall(libc::SYS_keyctl, 0, -3, 0)
        }),
        // An unknown command.
        ("bpf", &|| unsafe { libc::syscall(libc::SYS_bpf, -1, 0, 0) }),
        // A null attribute pointer.
        ("perf_event_open", &|| unsafe {
            libc::syscall(libc::SYS_perf_event_open, 0, 0, -1, -1, 0)
        }),
        // Bad descriptors and flags.
        ("kexec_file_load", &|| unsafe {
            libc::syscall(libc::SYS_kexec_file_load, -1, -1, 0, 0, 0xffff)
        }),
        // A null image of length 0.
        ("init_module", &|| unsafe {
            libc::syscall(libc::SYS_init_module, 0, 0, empty.as_ptr())
        }),
        // A module that does not exist.
        ("delete_module", &|| unsafe {
            libc::syscall(libc::SYS_delete_module, module.as_ptr(), libc::O_NONBLOCK)
        }),
        // A bad mount descriptor and a null handle.
        ("open_by_handle_at", &|| unsafe {
            libc::syscall(libc::SYS_open_by_handle_at, -1, 0, 0)
        }),
        // Swap off a path that is no swap.
        ("swapoff", &|| unsafe {
            libc::syscall(libc::SYS_swapoff, no_swap.as_ptr())
        }),
    ];
    for (name, call) in calls {
        // errno is read right after the call.
        out(name, answer(call()));
    }
    Ok(())
}

/// Writes "1" to `path` (opening it for writing): `ok` or the errno.
pub fn try_write(key: &str, path: &str) -> Res {
    let result = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"1"));
    out(key, result.map_or_else(|e| io_errno(&e), |()| "ok".into()));
    Ok(())
}

/// Size and first bytes of `path` as read: masked paths read empty.
pub fn try_read(key: &str, path: &str) -> Res {
    use std::io::Read;
    let mut buf = vec![0u8; 4096];
    let result = std::fs::File::open(path).and_then(|mut f| f.read(&mut buf));
    out(
        key,
        result.map_or_else(|e| io_errno(&e), |n| format!("{n} bytes")),
    );
    Ok(())
}

/// mount(2) of a tmpfs on `dir`, and a read-write remount of /proc and /sys.
pub fn try_mount(dir: &str) -> Res {
    use nix::mount::{mount, MsFlags};
    let tmpfs = mount(
        Some("kcell-probe"),
        dir,
        Some("tmpfs"),
        MsFlags::empty(),
        None::<&str>,
    );
    out(
        "mount_tmpfs",
        tmpfs.map_or_else(|e| format!("{e:?}"), |()| "ok".into()),
    );
    for (key, target) in [("remount_proc_rw", "/proc"), ("remount_sys_rw", "/sys")] {
        let r = mount(
            None::<&str>,
            target,
            None::<&str>,
            MsFlags::MS_REMOUNT,
            None::<&str>,
        );
        out(key, r.map_or_else(|e| format!("{e:?}"), |()| "ok".into()));
    }
    Ok(())
}

/// unshare(CLONE_NEWUSER) in a child (the probe itself stays put).
pub fn try_unshare_user() -> Res {
    // SAFETY: the probe is single-threaded; the child only unshares and exits.
    match unsafe { nix::unistd::fork() }.map_err(|e| e.to_string())? {
        nix::unistd::ForkResult::Child => {
            let code = match nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER) {
                Ok(()) => 0,
                Err(e) => e as i32,
            };
            // SAFETY: _exit in a forked child.
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            let answer = match nix::sys::wait::waitpid(child, None).map_err(|e| e.to_string())? {
                nix::sys::wait::WaitStatus::Exited(_, 0) => "ok".to_string(),
                nix::sys::wait::WaitStatus::Exited(_, errno) => {
                    format!("{:?}", Errno::from_raw(errno))
                }
                other => format!("{other:?}"),
            };
            out("unshare_user", answer);
            Ok(())
        }
    }
}

/// Tries to raise the container's own pids.max to "max" through the
/// cgroupfs at /sys/fs/cgroup (v2: pids.max there; v1: pids/pids.max),
/// first remounting it read-write when `remount` (needs CAP_SYS_ADMIN).
pub fn cgroup_raise(remount: bool) -> Res {
    use nix::mount::{mount, MsFlags};
    let candidates = ["/sys/fs/cgroup/pids.max", "/sys/fs/cgroup/pids/pids.max"];
    let Some(file) = candidates.iter().find(|p| std::path::Path::new(p).exists()) else {
        out("pids_max", "missing");
        return Ok(());
    };
    out(
        "pids_max",
        std::fs::read_to_string(file).unwrap_or_default().trim(),
    );
    if remount {
        let dir = std::path::Path::new(file)
            .parent()
            .unwrap_or(std::path::Path::new("/"));
        let flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND;
        let r = mount(None::<&str>, dir, None::<&str>, flags, None::<&str>);
        out(
            "remount_rw",
            r.map_or_else(|e| format!("{e:?}"), |()| "ok".into()),
        );
    }
    let result = std::fs::write(file, "max");
    out(
        "raise",
        result.map_or_else(|e| io_errno(&e), |()| "ok".into()),
    );
    out(
        "pids_max_after",
        std::fs::read_to_string(file).unwrap_or_default().trim(),
    );
    Ok(())
}

/// kill(pid, 0): whether this process can see and signal `pid`.
pub fn try_kill(pid: &str) -> Res {
    let pid: i32 = pid
        .parse()
        .map_err(|_| format!("try-kill: bad pid {pid}"))?;
    let r = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None);
    out(
        "kill",
        r.map_or_else(|e| format!("{e:?}"), |()| "ok".into()),
    );
    Ok(())
}

/// connect(2) to the abstract unix socket `@name`.
pub fn abstract_connect(name: &str) -> Res {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
        .map_err(|e| e.to_string())?;
    let r = std::os::unix::net::UnixStream::connect_addr(&addr);
    out(
        "abstract_connect",
        r.map_or_else(|e| io_errno(&e), |_| "ok".into()),
    );
    Ok(())
}
