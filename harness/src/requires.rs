//! Probing a case's requirements on the running system. Probed, never
//! guessed from version numbers: /proc/self/ns, the mounted cgroup
//! hierarchies, the kernel's config, /proc/swaps.

use crate::case::Requires;
use crate::observe::cgroupfs::Layout;
use std::io::Read;
use std::path::Path;

/// The running kernel's config text (/proc/config.gz, else /boot/config-RELEASE).
pub fn kernel_config() -> Option<String> {
    if let Ok(file) = std::fs::File::open("/proc/config.gz") {
        let mut text = String::new();
        if flate2::read::GzDecoder::new(file)
            .read_to_string(&mut text)
            .is_ok()
        {
            return Some(text);
        }
    }
    let release = nix::sys::utsname::uname()
        .ok()?
        .release()
        .to_string_lossy()
        .to_string();
    std::fs::read_to_string(format!("/boot/config-{release}")).ok()
}

/// Whether the kernel has what `option` builds, by trying it: for the
/// options cases ask for where a kernel's config is not readable (a kernel
/// of one's own without /proc/config.gz). None: no way to try it.
pub fn try_feature(option: &str) -> Option<bool> {
    match option {
        "CONFIG_OVERLAY_FS" => Some(try_overlay()),
        "CONFIG_POSIX_MQUEUE" => {
            use nix::mqueue::{mq_open, mq_unlink, MQ_OFlag};
            let name = format!("/kcell-try-{}", std::process::id());
            match mq_open(
                name.as_str(),
                MQ_OFlag::O_CREAT | MQ_OFlag::O_RDWR,
                nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
                None,
            ) {
                Ok(_) => {
                    let _ = mq_unlink(name.as_str());
                    Some(true)
                }
                Err(nix::errno::Errno::ENOSYS) => Some(false),
                Err(_) => None,
            }
        }
        _ => None,
    }
}

/// Mounts an overlay of empty directories in a temporary directory, and
/// unmounts it: whether the kernel can.
fn try_overlay() -> bool {
    if std::fs::read_to_string("/proc/filesystems")
        .is_ok_and(|t| t.lines().any(|l| l.ends_with("\toverlay")))
    {
        return true;
    }
    let Ok(dir) = tempfile::Builder::new()
        .prefix("kcell-try-overlay-")
        .tempdir()
    else {
        return false;
    };
    let p = dir.path();
    for d in ["lower", "upper", "work", "merged"] {
        if std::fs::create_dir(p.join(d)).is_err() {
            return false;
        }
    }
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        p.join("lower").display(),
        p.join("upper").display(),
        p.join("work").display()
    );
    let merged = p.join("merged");
    let mounted = nix::mount::mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(opts.as_str()),
    )
    .is_ok();
    if mounted {
        let _ = nix::mount::umount2(&merged, nix::mount::MntFlags::MNT_DETACH);
    }
    mounted
}

/// The state of CONFIG_NAME in `config`: "y", "m", or None (unset or absent).
pub fn config_value(config: &str, name: &str) -> Option<String> {
    config
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix('=').map(str::to_string))
}

/// Kernel options without which a controller has no v1 hierarchy.
const V1_OPTIONS: &[(&str, &str)] = &[
    ("memory", "CONFIG_MEMCG_V1"),
    ("cpuset", "CONFIG_CPUSETS_V1"),
];

/// Why `controller` has no v1 hierarchy: the mount error the guest's init
/// recorded, and the kernel option that explains it when the config says so.
fn v1_missing_reason(controller: &str) -> String {
    let recorded = std::fs::read_to_string(crate::guestinfo::V1_MISSING)
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with(&format!("{controller}:")))
                .map(|l| l.trim_start_matches(&format!("{controller}: ")).to_string())
        });
    let option = V1_OPTIONS
        .iter()
        .find(|(c, _)| *c == controller)
        .map(|(_, o)| *o);
    let unset =
        option.filter(|o| kernel_config().is_some_and(|cfg| config_value(&cfg, o).is_none()));
    match (recorded, unset) {
        (Some(err), Some(o)) => format!("no cgroup v1 {controller} controller: {err}; the kernel is built without {o}"),
        (Some(err), None) => format!("no cgroup v1 {controller} controller: {err}"),
        (None, Some(o)) => format!("no cgroup v1 {controller} controller: the kernel is built without {o}"),
        (None, None) => format!("the {controller} controller is not mounted as cgroup v1 (mount -t cgroup -o {controller} /sys/fs/cgroup/{controller})"),
    }
}

/// Whether a fresh child of the v2 root has `file` (made and removed at once).
fn v2_child_has(layout: &Layout, file: &str) -> bool {
    let Layout::V2(root) = layout else {
        return false;
    };
    let probe = root.join(format!("kcell-probe-{}", std::process::id()));
    if std::fs::create_dir(&probe).is_err() {
        return false;
    }
    let has = probe.join(file).exists();
    let _ = std::fs::remove_dir(&probe);
    has
}

/// The number of online CPUs (/sys/devices/system/cpu/online).
fn online_cpus() -> u32 {
    let text =
        std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_else(|_| "0".into());
    text.trim()
        .split(',')
        .filter_map(|part| {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            Some(b.parse::<u32>().ok()? - a.parse::<u32>().ok()? + 1)
        })
        .sum()
}

/// None when every requirement holds, else the first unmet one, phrased so a
/// user knows what to change.
pub fn unmet(req: &Requires) -> Option<String> {
    let euid = nix::unistd::geteuid();
    if req.root && !euid.is_root() {
        return Some(format!(
            "needs root (running as uid {euid}): run the tests as root, e.g. sudo -E cargo test"
        ));
    }
    for ns in &req.namespaces {
        if !Path::new("/proc/self/ns").join(ns).exists() {
            return Some(format!(
                "the kernel has no {ns} namespace (/proc/self/ns/{ns} missing)"
            ));
        }
    }
    cgroup_unmet(req)
        .or_else(|| kernel_config_unmet(&req.kernel_config))
        .or_else(|| machine_unmet(req))
}

/// The cgroup version, controllers and files a case needs.
fn cgroup_unmet(req: &Requires) -> Option<String> {
    let layout = Layout::read();
    if let Some(want) = &req.cgroup {
        if layout.version() != want.as_str() {
            return Some(format!(
                "needs cgroup {want}; this system's layout is {} (see /proc/self/mountinfo)",
                layout.version()
            ));
        }
    }
    for c in &req.controllers {
        match &layout {
            Layout::V1(mounts) => {
                if !mounts.contains_key(c.as_str()) {
                    return Some(v1_missing_reason(c));
                }
            }
            // v2 controls devices with a BPF program (Linux 4.15), not a controller.
            Layout::V2(_) if c == "devices" => {}
            // The v2 freezer is core: probe for cgroup.freeze in a child cgroup.
            Layout::V2(_) if c == "freezer" => {
                if !v2_child_has(&layout, "cgroup.freeze") {
                    return Some(
                        "cgroup v2 has no cgroup.freeze (the kernel predates the v2 freezer, 5.2)"
                            .to_string(),
                    );
                }
            }
            Layout::V2(_) => {
                if !layout.has(c) {
                    let name = if c == "blkio" { "io" } else { c.as_str() };
                    return Some(format!(
                        "the {name} controller is not in cgroup.controllers of the cgroup v2 root"
                    ));
                }
            }
            Layout::None => return Some("no cgroup filesystem is mounted".to_string()),
        }
    }
    for cf in &req.cgroup_files {
        let (ctrl, file) = cf.split_once('/').unwrap_or(("", cf));
        let root = match &layout {
            Layout::V1(m) => m.get(ctrl).cloned(),
            Layout::V2(r) => Some(r.clone()),
            Layout::None => None,
        };
        if !root.is_some_and(|r| r.join(file).exists()) {
            return Some(format!("cgroup file {file} of the {ctrl} controller does not exist (for memsw: boot with swapaccount=1 or a kernel with CONFIG_MEMCG_SWAP; before 5.19 v2 has no memory.peak)"));
        }
    }
    None
}

/// Kernel options a case needs: from the config where it is readable,
/// else the feature, tried.
fn kernel_config_unmet(options: &[String]) -> Option<String> {
    if options.is_empty() {
        return None;
    }
    let cfg = kernel_config();
    for opt in options {
        // The config where it can be read; else the feature, tried.
        let have = match &cfg {
            Some(c) => Some(matches!(
                config_value(c, opt).as_deref(),
                Some("y") | Some("m")
            )),
            None => try_feature(opt),
        };
        match have {
                Some(true) => {}
                Some(false) if cfg.is_some() => {
                    return Some(format!("the kernel is built without {opt}"))
                }
                Some(false) => {
                    return Some(format!(
                        "the kernel lacks {opt}: trying the feature failed (its config is not readable)"
                    ))
                }
                None => {
                    return Some(format!(
                        "cannot read the kernel config (/proc/config.gz or /boot/config-RELEASE) to check {opt}, and it cannot be tried"
                    ))
                }
            }
    }
    None
}

/// CPUs, swap, user namespaces, a block device.
fn machine_unmet(req: &Requires) -> Option<String> {
    if let Some(n) = req.min_cpus {
        let have = online_cpus();
        if have < n {
            return Some(format!("needs {n} online CPUs, this system has {have}"));
        }
    }
    if req.swap {
        let active = std::fs::read_to_string("/proc/swaps")
            .map(|t| t.lines().count() > 1)
            .unwrap_or(false);
        if !active {
            return Some("needs active swap (/proc/swaps lists none); the VM targets provide a zram swap device".to_string());
        }
    }
    if req.unprivileged_userns {
        let max = std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok());
        if max == Some(0) {
            return Some(
                "user namespaces are disabled (/proc/sys/user/max_user_namespaces is 0)"
                    .to_string(),
            );
        }
        if std::fs::read_to_string("/proc/sys/kernel/unprivileged_userns_clone")
            .is_ok_and(|t| t.trim() == "0")
        {
            return Some("unprivileged user namespaces are disabled (sysctl kernel.unprivileged_userns_clone=0)".to_string());
        }
    }
    if req.block_device && crate::fixture::blockdev::find().is_none() {
        return Some("no block device for throttling: needs a loop device (CONFIG_BLK_DEV_LOOP, /dev/loop-control) or a virtio disk".to_string());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_values() {
        let cfg = "CONFIG_A=y\nCONFIG_AB=m\n# CONFIG_C is not set\n";
        assert_eq!(config_value(cfg, "CONFIG_A").as_deref(), Some("y"));
        assert_eq!(config_value(cfg, "CONFIG_AB").as_deref(), Some("m"));
        assert_eq!(config_value(cfg, "CONFIG_C"), None);
    }

    #[test]
    fn impossible_requirements_give_reasons() {
        let req = Requires {
            namespaces: vec!["nosuchns".into()],
            ..Default::default()
        };
        assert!(unmet(&req).is_some_and(|r| r.contains("nosuchns")));
        let req = Requires {
            min_cpus: Some(100_000),
            ..Default::default()
        };
        assert!(unmet(&req).is_some_and(|r| r.contains("100000")));
        assert_eq!(unmet(&Requires::default()), None);
    }
}
