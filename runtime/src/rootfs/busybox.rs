//! Builds a minimal root directory from Debian's `busybox-static`: the one
//! static binary, a symlink per applet, /etc/passwd and /etc/group. It is the
//! default container image until images land.

use super::make_skeleton;
use crate::sys::{SysContext, SysError};
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Errors while building a busybox root.
#[derive(Debug, thiserror::Error)]
pub enum BusyboxError {
    /// No statically linked busybox could be found or fetched.
    #[error("no static busybox at {0} and `apt-get download busybox-static` failed ({1}): install it with `apt-get install busybox-static`")]
    NotFound(PathBuf, String),
    /// `busybox --list-full` did not run.
    #[error("running {0} --list-full: {1}")]
    ListApplets(PathBuf, String),
    /// A file operation failed.
    #[error(transparent)]
    Sys(#[from] SysError),
}

/// Where Debian's busybox-static installs the binary.
pub const HOST_BUSYBOX: &str = "/bin/busybox";

/// Whether the ELF file at `path` is statically linked (has no PT_INTERP).
pub fn is_static_elf(path: &Path) -> bool {
    let Ok(bytes) = fs::read(path) else {
        return false;
    };
    // ELF64 little-endian header: e_phoff at 0x20, e_phentsize at 0x36, e_phnum at 0x38.
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let mut phoff = [0u8; 8];
    phoff.copy_from_slice(&bytes[0x20..0x28]);
    let phoff = u64::from_le_bytes(phoff) as usize;
    let (entsize, count) = (u16_at(0x36), u16_at(0x38));
    const PT_INTERP: u32 = 3;
    (0..count).all(|i| {
        let off = phoff + i * entsize;
        match bytes.get(off..off + 4) {
            Some(t) => u32::from_le_bytes([t[0], t[1], t[2], t[3]]) != PT_INTERP,
            None => false,
        }
    })
}

/// Finds a static busybox: the installed busybox-static, else the package
/// fetched with `apt-get download` into `cache` and unpacked there.
pub fn locate(cache: &Path) -> Result<PathBuf, BusyboxError> {
    let host = PathBuf::from(HOST_BUSYBOX);
    if is_static_elf(&host) {
        return Ok(host);
    }
    let unpacked = cache.join("busybox-static/bin/busybox");
    if is_static_elf(&unpacked) {
        return Ok(unpacked);
    }
    let dl = cache.join("busybox-static-deb");
    fs::create_dir_all(&dl).sys("mkdir", dl.display())?;
    let fetched = Command::new("apt-get")
        .args(["download", "busybox-static"])
        .current_dir(&dl)
        .output()
        .map_err(|e| e.to_string())
        .and_then(|o| {
            if o.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&o.stderr).trim().to_string())
            }
        })
        .and_then(|()| {
            let deb = fs::read_dir(&dl)
                .map_err(|e| e.to_string())?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|x| x == "deb"))
                .ok_or("no .deb downloaded")?;
            let status = Command::new("dpkg-deb")
                .arg("-x")
                .arg(&deb)
                .arg(cache.join("busybox-static"))
                .status()
                .map_err(|e| e.to_string())?;
            status
                .success()
                .then_some(())
                .ok_or_else(|| "dpkg-deb -x failed".to_string())
        });
    match fetched {
        Ok(()) if is_static_elf(&unpacked) => Ok(unpacked),
        Ok(()) => Err(BusyboxError::NotFound(
            host,
            "the package holds no static binary".into(),
        )),
        Err(why) => Err(BusyboxError::NotFound(host, why)),
    }
}

/// Builds the root at `dest` from the busybox binary at `busybox`, copying
/// each `(host file, path inside)` of `extra` in as an executable. The root
/// is assembled beside `dest` and renamed into place, so concurrent builders
/// never see half a root.
pub fn build(
    dest: &Path,
    busybox: &Path,
    extra: &[(PathBuf, PathBuf)],
) -> Result<(), BusyboxError> {
    let staging = dest.with_extension(format!("tmp-{}", crate::spec::new_id()));
    if staging.exists() {
        fs::remove_dir_all(&staging).sys("rm -r", staging.display())?;
    }
    make_skeleton(&staging)?;
    let bin = staging.join("bin/busybox");
    fs::copy(busybox, &bin).sys(
        "copy",
        format!("{} to {}", busybox.display(), bin.display()),
    )?;
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).sys("chmod", bin.display())?;

    let list = Command::new(busybox)
        .arg("--list-full")
        .output()
        .map_err(|e| BusyboxError::ListApplets(busybox.into(), e.to_string()))?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let link = staging.join(applet.trim_start_matches('/'));
        if applet.is_empty() || link == bin || link.exists() {
            continue;
        }
        if let Some(parent) = link.parent() {
            fs::create_dir_all(parent).sys("mkdir", parent.display())?;
        }
        symlink("/bin/busybox", &link).sys("symlink", link.display())?;
    }

    for (source, inside) in extra {
        let target = staging.join(inside.strip_prefix("/").unwrap_or(inside));
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).sys("mkdir", parent.display())?;
        }
        fs::copy(source, &target).sys(
            "copy",
            format!("{} to {}", source.display(), target.display()),
        )?;
        fs::set_permissions(&target, fs::Permissions::from_mode(0o755))
            .sys("chmod", target.display())?;
    }

    for (file, text) in [
        (
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        ),
        ("etc/group", "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n"),
        ("etc/hostname", "kcell\n"),
    ] {
        let path = staging.join(file);
        fs::write(&path, text).sys("write", path.display())?;
    }

    if dest.exists() {
        fs::remove_dir_all(dest).sys("rm -r", dest.display())?;
    }
    fs::rename(&staging, dest).sys(
        "rename",
        format!("{} to {}", staging.display(), dest.display()),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_check_reads_program_headers() {
        // The test binary itself is built crt-static (see .cargo/config.toml).
        let me = std::env::current_exe().expect("own path");
        assert!(is_static_elf(&me));
        assert!(!is_static_elf(Path::new("/nonexistent")));
        let dir = tempfile::tempdir().expect("tempdir");
        let junk = dir.path().join("junk");
        fs::write(&junk, b"#!/bin/sh\n").expect("write");
        assert!(!is_static_elf(&junk));
    }
}
