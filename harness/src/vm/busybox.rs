//! The container image every case runs in: Debian's static busybox, a
//! symlink per applet, /etc/passwd and /etc/group, and the harness's probe
//! helper. Built by the harness itself (the runtime under judgement builds
//! roots of its own; none of its code is used here), for the host target
//! and for a guest's initramfs alike.

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where Debian's busybox-static installs the binary.
const HOST_BUSYBOX: &str = "/bin/busybox";

/// The directories of the image, with their modes.
const SKELETON: &[(&str, u32)] = &[
    ("bin", 0o755),
    ("sbin", 0o755),
    ("usr/bin", 0o755),
    ("usr/sbin", 0o755),
    ("etc", 0o755),
    ("proc", 0o555),
    ("sys", 0o555),
    ("dev", 0o755),
    ("tmp", 0o1777),
    ("root", 0o700),
    ("mnt", 0o755),
    ("run", 0o755),
    ("var/tmp", 0o1777),
];

/// The image's account files.
const ACCOUNTS: &[(&str, &str)] = &[
    (
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    ),
    ("etc/group", "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n"),
    ("etc/hostname", "kcell\n"),
];

/// Whether the ELF file at `path` has no interpreter (is statically linked).
pub fn is_static(path: &Path) -> bool {
    std::fs::read(path)
        .ok()
        .and_then(|b| {
            goblin::elf::Elf::parse(&b)
                .ok()
                .map(|e| e.interpreter.is_none())
        })
        .unwrap_or(false)
}

/// A static busybox: the installed busybox-static, else the package
/// fetched with `apt-get download` into `cache` and unpacked there.
pub fn locate(cache: &Path) -> Result<PathBuf, String> {
    let host = PathBuf::from(HOST_BUSYBOX);
    if is_static(&host) {
        return Ok(host);
    }
    let unpacked = cache.join("busybox-static/bin/busybox");
    if is_static(&unpacked) {
        return Ok(unpacked);
    }
    let missing = |why: String| {
        format!(
            "no static busybox at {HOST_BUSYBOX} or {} and fetching busybox-static failed ({why}): install it with `apt-get install busybox-static`",
            unpacked.display()
        )
    };
    download(cache).map_err(missing)?;
    if is_static(&unpacked) {
        Ok(unpacked)
    } else {
        Err(missing("the package holds no static binary".into()))
    }
}

/// `apt-get download busybox-static`, unpacked into `cache/busybox-static`.
fn download(cache: &Path) -> Result<(), String> {
    let dl = cache.join("busybox-static-deb");
    std::fs::create_dir_all(&dl).map_err(|e| format!("mkdir {}: {e}", dl.display()))?;
    let out = Command::new("apt-get")
        .args(["download", "busybox-static"])
        .current_dir(&dl)
        .output()
        .map_err(|e| format!("spawn apt-get: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    let deb = std::fs::read_dir(&dl)
        .map_err(|e| format!("{}: {e}", dl.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or_else(|| format!("apt-get download left no .deb in {}", dl.display()))?;
    let status = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(cache.join("busybox-static"))
        .status()
        .map_err(|e| format!("spawn dpkg-deb: {e}"))?;
    status
        .success()
        .then_some(())
        .ok_or_else(|| format!("dpkg-deb -x {} failed: {status}", deb.display()))
}

/// Builds the image at `dest` from the busybox binary at `busybox`, copying
/// each `(host file, path inside)` of `extra` in as an executable, with the
/// shared libraries it needs when it is not static (a harness installed
/// with `cargo install` outside this workspace is linked dynamically). The
/// root is assembled beside `dest` and renamed into place, so concurrent
/// builders never see half a root.
pub fn build(dest: &Path, busybox: &Path, extra: &[(PathBuf, PathBuf)]) -> Result<(), String> {
    let staging = dest.with_extension(format!("tmp-{}", crate::text::unique_id()));
    let built = assemble(&staging, busybox, extra).and_then(|()| {
        if dest.exists() {
            std::fs::remove_dir_all(dest).map_err(|e| format!("rm -r {}: {e}", dest.display()))?;
        }
        std::fs::rename(&staging, dest)
            .map_err(|e| format!("rename {} to {}: {e}", staging.display(), dest.display()))
    });
    if built.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    built
}

fn assemble(root: &Path, busybox: &Path, extra: &[(PathBuf, PathBuf)]) -> Result<(), String> {
    for (dir, mode) in SKELETON {
        let path = root.join(dir);
        std::fs::create_dir_all(&path).map_err(|e| format!("mkdir {}: {e}", path.display()))?;
        chmod(&path, *mode)?;
    }
    chmod(root, 0o755)?;
    let bin = root.join("bin/busybox");
    copy_executable(busybox, &bin)?;
    let list = Command::new(busybox)
        .arg("--list-full")
        .output()
        .map_err(|e| format!("{} --list-full: {e}", busybox.display()))?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let link = root.join(applet.trim_start_matches('/'));
        if applet.is_empty() || link == bin || link.exists() {
            continue;
        }
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("mkdir {}: {e}", parent.display()))?;
        }
        symlink("/bin/busybox", &link).map_err(|e| format!("symlink {}: {e}", link.display()))?;
    }
    for (source, inside) in extra {
        copy_executable(source, &inside_root(root, inside))?;
        for (at, library) in super::elf::closure(source)? {
            let target = inside_root(root, Path::new(&at));
            if !target.exists() {
                copy_executable(&library, &target)?;
            }
        }
    }
    for (file, text) in ACCOUNTS {
        let path = root.join(file);
        std::fs::write(&path, text).map_err(|e| format!("write {}: {e}", path.display()))?;
    }
    Ok(())
}

fn inside_root(root: &Path, inside: &Path) -> PathBuf {
    root.join(inside.strip_prefix("/").unwrap_or(inside))
}

fn chmod(path: &Path, mode: u32) -> Result<(), String> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {mode:o} {}: {e}", path.display()))
}

fn copy_executable(source: &Path, target: &Path) -> Result<(), String> {
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("mkdir {}: {e}", parent.display()))?;
    }
    std::fs::copy(source, target)
        .map_err(|e| format!("copy {} to {}: {e}", source.display(), target.display()))?;
    chmod(target, 0o755)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_static_binary_is_told_from_a_dynamic_one_and_from_a_script() {
        // The test binary is built crt-static (.cargo/config.toml); /bin/sh is not.
        let me = std::env::current_exe().expect("own path");
        assert!(is_static(&me));
        assert!(!is_static(Path::new("/bin/sh")) || !Path::new("/bin/sh").exists());
        let dir = tempfile::tempdir().expect("tempdir");
        let script = dir.path().join("script");
        std::fs::write(&script, b"#!/bin/sh\n").expect("write");
        assert!(!is_static(&script));
        assert!(!is_static(Path::new("/nonexistent")));
    }

    #[test]
    fn the_image_has_the_applets_the_accounts_and_the_extra_file() {
        let cache = tempfile::tempdir().expect("tempdir");
        let Ok(busybox) = locate(cache.path()) else {
            panic!("a static busybox (scripts/install-deps installs busybox-static)");
        };
        let dest = cache.path().join("root");
        let me = std::env::current_exe().expect("own path");
        build(&dest, &busybox, &[(me, PathBuf::from("/usr/bin/probe"))]).expect("build");
        assert!(dest.join("bin/sh").is_symlink());
        assert!(dest.join("usr/bin/probe").is_file());
        let passwd = std::fs::read_to_string(dest.join("etc/passwd")).expect("passwd");
        assert!(passwd.starts_with("root:x:0:0:"));
        let leftovers: Vec<_> = crate::text::sorted_names(cache.path())
            .into_iter()
            .filter(|n| n.contains("tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}
