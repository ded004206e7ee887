//! Filesystems and devices: the root mount, mounts, the chroot escape,
//! the cgroupfs, overlays, direct block I/O and the cgroup's counters,
//! device nodes, files.

#[allow(unused_imports)]
use super::*;

/// The filesystem mounted at `/` as the kernel reports it (the last
/// mountinfo line for `/`): its type, and for an overlay its layers.
pub(super) fn root_mount() -> Res {
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

/// The classic escape from a chroot: chroot into a subdirectory while the
/// working directory stays outside it, climb with "..", chroot("."). With
/// `--chroot DIR` the helper first confines itself the way a chroot-only
/// runtime would, which is the control the escape must succeed against.
pub(super) fn escape(chroot_first: Option<&str>, target: &str) -> Res {
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

pub(super) fn mounts() -> Res {
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

pub(super) fn cgroup() -> Res {
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

/// O_DIRECT reads or writes of SIZE bytes in 64 KiB blocks; prints the rate.
pub(super) fn direct_io(op: &str, dev: &str, size: &str) -> Res {
    use std::os::unix::fs::OpenOptionsExt;
    let bytes = crate::text::size(size)?;
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
pub(super) fn counter(file: &str) -> Res {
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

pub(super) fn open_device(path: &str) -> Res {
    match fs::OpenOptions::new().read(true).write(true).open(path) {
        Ok(_) => out("open", "ok"),
        Err(e) => out("open", io_errno(&e)),
    }
    Ok(())
}

pub(super) fn listing(dir: &Path) -> String {
    crate::text::sorted_names(dir).join(",")
}

pub(super) fn content(path: &Path) -> String {
    fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|e| format!("<{}>", io_errno(&e)))
}

/// The documents' overlay experiment: two lowers, an upper and a work dir;
/// then a new file, a changed lower file and a deleted lower file in merged.
pub(super) fn overlay(dir: &str) -> Res {
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

pub(super) fn write_file(path: &str) -> Res {
    match fs::write(path, "kcell\n") {
        Ok(()) => out("write", "ok"),
        Err(e) => out("write", io_errno(&e)),
    }
    Ok(())
}

/// Size (statvfs) and mode of a mount point.
pub(super) fn fsinfo(path: &str) -> Res {
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
