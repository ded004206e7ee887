//! A root entered without a mount namespace of its own (an OCI config
//! with no `mount` namespace, as runtime-tools' linux_ns_itype asks): the
//! container's mounts are made in the caller's namespace below the root,
//! and the first process chroots into it. They are the host's mounts then,
//! so the container's record names the root ([`HostMounts`]) before any is
//! made, and whichever command ends the container unmounts what appeared
//! below the root since ([`release`]); runc leaves them mounted.

use crate::sys::{SysContext, SysError};
use nix::mount::MntFlags;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// The mounts below a root that a container makes in the caller's mount
/// namespace: everything mounted at or below `under` that was not there
/// when the container was created.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HostMounts {
    /// The root, canonical.
    pub under: PathBuf,
    /// Mount IDs at or below it before the container (a user's own mounts
    /// inside the root directory stay).
    pub before: Vec<i32>,
}

/// The mounts of the caller's namespace at or below `root`: (ID, path).
fn mounts_under(root: &Path) -> Result<Vec<(i32, PathBuf)>, SysError> {
    let infos = procfs::process::Process::myself()
        .and_then(|p| p.mountinfo())
        .map_err(|e| SysError {
            call: "read",
            subject: format!("/proc/self/mountinfo: {e}"),
            errno: nix::errno::Errno::EIO,
        })?;
    Ok(infos
        .into_iter()
        .map(|m| (m.mnt_id, unmangle(&m.mount_point.to_string_lossy())))
        .filter(|(_, at)| at.starts_with(root))
        .collect())
}

/// mountinfo writes space, tab, newline and backslash as \ooo octal.
fn unmangle(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// What is mounted at or below `root` now, to be kept when the container ends.
pub fn snapshot(root: &Path) -> Result<HostMounts, SysError> {
    let under = std::fs::canonicalize(root).sys("realpath", root.display())?;
    let before = mounts_under(&under)?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    Ok(HostMounts { under, before })
}

/// Unmounts (detached) what the container mounted at or below its root,
/// deepest first; the paths come from mountinfo and are not followed.
pub fn release(h: &HostMounts) -> Result<(), SysError> {
    let mut made: Vec<PathBuf> = mounts_under(&h.under)?
        .into_iter()
        .filter(|(id, _)| !h.before.contains(id))
        .map(|(_, at)| at)
        .collect();
    // Later mounts stack on earlier ones: the reverse of mountinfo's order
    // by depth takes children before parents.
    made.reverse();
    made.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    let mut first_error = None;
    for at in made {
        let done = nix::mount::umount2(&at, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW)
            .sys("umount2", at.display());
        match done {
            // Gone with a parent detached before it.
            Err(e)
                if matches!(
                    e.errno,
                    nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT
                ) => {}
            Err(e) => {
                first_error.get_or_insert(e);
            }
            Ok(()) => {}
        }
    }
    first_error.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(
            unmangle(r"/tmp/a\040b/c\134d\011e"),
            PathBuf::from("/tmp/a b/c\\d\te")
        );
        assert_eq!(unmangle(r"/x\04"), PathBuf::from(r"/x\04"));
    }

    #[test]
    fn only_what_appeared_below_the_root_is_released() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: mounting needs root");
            return;
        }
        let dir = tempfile::Builder::new()
            .prefix("kcell-hostns-")
            .tempdir()
            .expect("tempdir");
        let root = dir.path().join("root");
        for d in ["kept", "made/deeper"] {
            std::fs::create_dir_all(root.join(d)).expect("mkdir");
        }
        let tmpfs = |at: &Path| {
            nix::mount::mount(
                Some("tmpfs"),
                at,
                Some("tmpfs"),
                nix::mount::MsFlags::empty(),
                None::<&str>,
            )
            .expect("mount tmpfs")
        };
        tmpfs(&root.join("kept"));
        let h = snapshot(&root).expect("snapshot");
        assert_eq!(h.before.len(), 1);
        tmpfs(&root.join("made"));
        std::fs::create_dir_all(root.join("made/deeper")).expect("mkdir");
        tmpfs(&root.join("made/deeper"));
        release(&h).expect("release");
        let left: Vec<PathBuf> = mounts_under(&h.under)
            .expect("mountinfo")
            .into_iter()
            .map(|(_, p)| p)
            .collect();
        assert_eq!(left, vec![h.under.join("kept")]);
        nix::mount::umount2(&root.join("kept"), MntFlags::MNT_DETACH).expect("umount");
    }
}
