//! The guest's PID 1 (the agent as /init): mounts the kernel filesystems,
//! loads the modules, moves the root off the initramfs onto a tmpfs
//! (pivot_root refuses an initramfs root), mounts the cgroup version the
//! target names, adds a zram swap device, runs the cases and powers off
//! through isa-debug-exit. Everything is done here in Rust rather than by a
//! busybox script: Debian's static busybox runs its own applets ahead of
//! $PATH, and `busybox modprobe` ignores softdeps.

use super::initramfs::guest_paths;
use super::qemu::DEBUG_EXIT_PORT;
use crate::frames::PROGRESS;
use nix::mount::{mount, MsFlags};
use std::io::Write;
use std::path::Path;

use crate::guestinfo::V1_MISSING;

fn log(msg: &str) {
    let uptime = std::fs::read_to_string("/proc/uptime").unwrap_or_default();
    println!(
        "kcell-init [{}]: {msg}",
        uptime.split_whitespace().next().unwrap_or("?")
    );
}

fn mnt(src: &str, target: &str, fstype: &str, flags: MsFlags, data: Option<&str>) {
    let _ = std::fs::create_dir_all(target);
    if let Err(e) = mount(Some(src), target, Some(fstype), flags, data) {
        log(&format!("mount {fstype} on {target}: {e}"));
    }
}

fn param<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

fn load_modules_in_background() {
    let done = crate::guestinfo::modules_loading();
    std::thread::spawn(move || {
        load_modules(guest_paths::MODULES_LATE);
        done();
    });
}

fn load_modules(order_file: &str) {
    let Ok(list) = std::fs::read_to_string(order_file) else {
        return;
    };
    for path in list.lines().filter(|l| !l.is_empty()) {
        let loaded = std::fs::File::open(path)
            .map_err(|e| e.to_string())
            .and_then(|f| {
                use std::os::fd::AsRawFd;
                // SAFETY: finit_module takes a descriptor, a C string and flags.
                let rc = unsafe {
                    libc::syscall(libc::SYS_finit_module, f.as_raw_fd(), c"".as_ptr(), 0)
                };
                if rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EEXIST) {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error().to_string())
                }
            });
        if let Err(e) = loaded {
            log(&format!("finit_module {path}: {e}"));
        }
    }
}

/// Makes a tmpfs the root, with the initramfs's directories bound into it
/// (what switch_root does, without copying): pivot_root in a container needs
/// the current root mount to have a parent, which the initramfs never has.
fn move_root_to_tmpfs() -> Result<(), String> {
    mnt(
        "tmpfs",
        "/newroot",
        "tmpfs",
        MsFlags::empty(),
        Some("mode=755"),
    );
    for e in std::fs::read_dir("/").map_err(|e| e.to_string())? {
        let e = e.map_err(|e| e.to_string())?;
        let name = e.file_name().to_string_lossy().to_string();
        let (src, dst) = (e.path(), Path::new("/newroot").join(&name));
        let m = std::fs::symlink_metadata(&src).map_err(|e| e.to_string())?;
        if ["proc", "sys", "dev", "newroot"].contains(&name.as_str()) {
            let _ = std::fs::create_dir_all(&dst);
            continue;
        }
        let made = if m.file_type().is_symlink() {
            std::fs::read_link(&src)
                .and_then(|t| std::os::unix::fs::symlink(t, &dst))
                .map_err(|e| e.to_string())
        } else {
            let mountpoint = if m.is_dir() {
                std::fs::create_dir(&dst)
            } else {
                std::fs::File::create(&dst).map(|_| ())
            };
            mountpoint.map_err(|e| e.to_string()).and_then(|()| {
                mount(
                    Some(&src),
                    &dst,
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .map_err(|e| e.to_string())
            })
        };
        made.map_err(|err| format!("/{name} into the new root: {err}"))?;
    }
    // The bound root directory keeps its own mode: an unprivileged uid must traverse it.
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions("/newroot", std::fs::Permissions::from_mode(0o755));
    for m in ["/dev", "/proc", "/sys"] {
        mount(
            Some(m),
            format!("/newroot{m}").as_str(),
            None::<&str>,
            MsFlags::MS_MOVE,
            None::<&str>,
        )
        .map_err(|e| format!("move {m}: {e}"))?;
    }
    nix::unistd::chdir("/newroot").map_err(|e| e.to_string())?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(|e| format!("move the new root onto /: {e}"))?;
    nix::unistd::chroot(".").map_err(|e| format!("chroot: {e}"))?;
    nix::unistd::chdir("/").map_err(|e| e.to_string())
}

fn mount_cgroups(version: &str) {
    if version == "v2" {
        mnt(
            "cgroup2",
            "/sys/fs/cgroup",
            "cgroup2",
            MsFlags::empty(),
            None,
        );
        let available =
            std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers").unwrap_or_default();
        for c in available.split_whitespace() {
            if let Err(e) = std::fs::write("/sys/fs/cgroup/cgroup.subtree_control", format!("+{c}"))
            {
                log(&format!("enabling {c} in cgroup.subtree_control: {e}"));
            }
        }
        return;
    }
    // One hierarchy per controller, as the documents mount them.
    mnt(
        "tmpfs",
        "/sys/fs/cgroup",
        "tmpfs",
        MsFlags::empty(),
        Some("mode=755"),
    );
    let mut missing = String::new();
    for c in offered_v1_controllers() {
        let c = c.as_str();
        let dir = format!("/sys/fs/cgroup/{c}");
        let _ = std::fs::create_dir_all(&dir);
        if let Err(e) = mount(
            Some("cgroup"),
            dir.as_str(),
            Some("cgroup"),
            MsFlags::empty(),
            Some(c),
        ) {
            // e.g. memory on Debian 6.12: EINVAL, the kernel has no CONFIG_MEMCG_V1.
            missing.push_str(&format!("{c}: mount -t cgroup -o {c} failed with {e}\n"));
            let _ = std::fs::remove_dir(&dir);
        }
    }
    let _ = std::fs::create_dir_all("/run/kcell");
    let _ = std::fs::write(V1_MISSING, missing);
}

/// The controllers the kernel offers and has enabled, as /proc/cgroups
/// lists them (`subsys_name hierarchy num_cgroups enabled`): what every
/// runtime is judged on is the kernel's, not a list of any runtime's.
fn offered_v1_controllers() -> Vec<String> {
    let text = std::fs::read_to_string("/proc/cgroups").unwrap_or_else(|e| {
        log(&format!("read /proc/cgroups: {e}"));
        String::new()
    });
    parse_proc_cgroups(&text)
}

fn parse_proc_cgroups(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 4 && f[3] == "1").then(|| f[0].to_string())
        })
        .collect()
}

/// A zram device as swap, for the swap-limit case.
fn zram_swap() -> Result<(), String> {
    let dev = "/dev/zram0";
    if !Path::new("/sys/block/zram0").exists() {
        return Err("no zram0 (zram module missing)".into());
    }
    let bytes: u64 = 256 << 20;
    std::fs::write("/sys/block/zram0/disksize", bytes.to_string())
        .map_err(|e| format!("zram disksize: {e}"))?;
    // The swap header (mkswap): version 1 at offset 1024, the signature at the page's end.
    let mut page = vec![0u8; 4096];
    page[1024..1028].copy_from_slice(&1u32.to_le_bytes());
    page[1028..1032].copy_from_slice(&((bytes / 4096 - 1) as u32).to_le_bytes());
    page[4086..4096].copy_from_slice(b"SWAPSPACE2");
    std::fs::OpenOptions::new()
        .write(true)
        .open(dev)
        .and_then(|mut f| f.write_all(&page))
        .map_err(|e| format!("write swap header: {e}"))?;
    let c = std::ffi::CString::new(dev).map_err(|e| e.to_string())?;
    // SAFETY: a valid C string and flags 0.
    if unsafe { libc::swapon(c.as_ptr(), 0) } != 0 {
        return Err(format!("swapon {dev}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Powers off through isa-debug-exit (QEMU then exits 1), else reboot(2).
fn power_off() -> ! {
    let _ = std::io::stdout().flush();
    // SAFETY: ioperm grants this process the port; out writes one byte to it.
    unsafe {
        if libc::ioperm(u64::from(DEBUG_EXIT_PORT), 4, 1) == 0 {
            std::arch::asm!("out dx, al", in("dx") DEBUG_EXIT_PORT, in("al") 0u8);
        }
    }
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

/// Faults for testing the host's watchdog (`kcell.fault=` on the kernel
/// command line): a kernel panic, an agent that hangs inside a case, a
/// console flood. (`no-swap`, a guest without its zram swap, is made by
/// leaving the swap out, before this.)
fn inject(fault: &str) {
    log(&format!("injecting fault: {fault}"));
    match fault {
        "panic" => {
            let _ = std::fs::write("/proc/sysrq-trigger", "c");
        }
        "hang" => {
            // A case announced with a 1 s timeout that never ends.
            if let Ok(mut o) = std::fs::OpenOptions::new().write(true).open("/dev/ttyS1") {
                let _ = writeln!(o, "{PROGRESS}1 1 FAULT-HANG 1");
            }
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
        "flood" => loop {
            println!("kcell-init: flooding the console on purpose");
        },
        _ => {}
    }
}

/// What a guest does once set up: given its target's name and a writer
/// of framed lines to the host.
pub type GuestWork<'a> = dyn FnMut(&str, &mut dyn FnMut(&str)) + 'a;

/// PID 1 of a guest: sets the machine up, hands it to `work` (named by
/// its target) with a writer of framed lines to the host, powers off.
/// Never returns.
pub fn init_main(work: &mut GuestWork) -> ! {
    mnt("proc", "/proc", "proc", MsFlags::empty(), None);
    mnt("sysfs", "/sys", "sysfs", MsFlags::empty(), None);
    mnt("devtmpfs", "/dev", "devtmpfs", MsFlags::empty(), None);
    mnt(
        "devpts",
        "/dev/pts",
        "devpts",
        MsFlags::empty(),
        Some("ptmxmode=0666,mode=0620"),
    );
    mnt(
        "tmpfs",
        "/dev/shm",
        "tmpfs",
        MsFlags::empty(),
        Some("mode=1777"),
    );
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let target = param(&cmdline, "kcell.target").unwrap_or("vm").to_string();
    let cgroup = param(&cmdline, "kcell.cgroup").unwrap_or("v2").to_string();
    log("mounted /proc /sys /dev");
    load_modules(guest_paths::MODULES_EARLY);
    log("early modules loaded");
    if let Err(e) = move_root_to_tmpfs() {
        log(&format!(
            "moving the root to tmpfs: {e}; containers cannot pivot_root"
        ));
    }
    mnt(
        "tmpfs",
        "/tmp",
        "tmpfs",
        MsFlags::empty(),
        Some("mode=1777"),
    );
    mnt("tmpfs", "/run", "tmpfs", MsFlags::empty(), Some("mode=755"));
    log("root on tmpfs");
    mount_cgroups(&cgroup);
    log(&format!("cgroup {cgroup} mounted"));
    if let Err(e) = kcell_probe::netdev::set_up("lo") {
        log(&format!("lo up: {e}"));
    }
    // kcell.fault=no-swap: the guest a broken set-up would give, for the
    // test that coverage lost this way fails the run (guest_faults.rs).
    if param(&cmdline, "kcell.fault") == Some("no-swap") {
        log("no swap: left out on purpose (kcell.fault=no-swap)");
    } else if let Err(e) = zram_swap() {
        log(&format!("no swap: {e}"));
    } else {
        log("swap on");
    }
    load_modules_in_background();
    if Path::new(crate::guestinfo::GUEST_DISK).exists() {
        std::env::set_var(crate::guestinfo::DISK_ENV, crate::guestinfo::GUEST_DISK);
    }
    std::env::set_var("PATH", "/bin:/usr/bin:/sbin:/usr/sbin");
    if let Some(fault) = param(&cmdline, "kcell.fault") {
        inject(fault);
    }
    let mut out = std::fs::OpenOptions::new().write(true).open("/dev/ttyS1");
    work(&target, &mut |line: &str| {
        if let Ok(o) = out.as_mut() {
            let _ = writeln!(o, "{line}");
        }
        if line.starts_with(PROGRESS) {
            log(line);
        }
    });
    // The UART sends slower than we write: wait until it is drained, or
    // QEMU (exiting on isa-debug-exit) drops the last verdicts.
    if let Ok(o) = out.as_ref() {
        let _ = nix::sys::termios::tcdrain(o);
    }
    log("done");
    power_off()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_v1_controllers_are_the_enabled_ones_proc_cgroups_lists() {
        let text = "#subsys_name\thierarchy\tnum_cgroups\tenabled\n\
                    cpuset\t3\t6\t1\ncpu\t1\t6\t1\nmemory\t0\t1\t0\nhugetlb\t0\t3\t1\n";
        assert_eq!(
            super::parse_proc_cgroups(text),
            ["cpuset", "cpu", "hugetlb"],
            "memory is disabled (cgroup_disable=memory) and is not mounted"
        );
    }
}
