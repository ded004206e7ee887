//! `tmpcopyup`: a tmpfs mounted over a directory starts with what the
//! directory held (podman asks it for /tmp, /var/tmp and /run under
//! `--read-only`, so an image's files there stay visible).
//!
//! The tree is read into memory before the tmpfs covers it and written
//! into the tmpfs after: no staging directory on the host that a killed
//! runtime could leave, and the tree lands in RAM either way. Directories,
//! regular files and symlinks are copied with their mode and owner;
//! symlinks are recreated, never followed; device nodes, FIFOs and sockets
//! have nothing to copy and are left out.

use crate::sys::{SysContext, SysError};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// One entry of the tree, by its path relative to the directory.
enum Entry {
    Dir {
        path: PathBuf,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    File {
        path: PathBuf,
        mode: u32,
        uid: u32,
        gid: u32,
        bytes: Vec<u8>,
    },
    Symlink {
        path: PathBuf,
        target: PathBuf,
        uid: u32,
        gid: u32,
    },
}

/// The tree under `dir` (not `dir` itself), parents before children.
pub struct Tree(Vec<Entry>);

/// Reads the tree under `dir`.
pub fn read(dir: &Path) -> Result<Tree, SysError> {
    let mut entries = Vec::new();
    walk(dir, Path::new(""), &mut entries)?;
    Ok(Tree(entries))
}

fn walk(base: &Path, rel: &Path, out: &mut Vec<Entry>) -> Result<(), SysError> {
    let here = base.join(rel);
    let listing = std::fs::read_dir(&here).sys("readdir", here.display())?;
    for e in listing {
        let e = e.sys("readdir", here.display())?;
        let path = rel.join(e.file_name());
        let full = base.join(&path);
        let meta = std::fs::symlink_metadata(&full).sys("lstat", full.display())?;
        let (mode, uid, gid) = (meta.mode() & 0o7777, meta.uid(), meta.gid());
        let t = meta.file_type();
        if t.is_dir() {
            out.push(Entry::Dir {
                path: path.clone(),
                mode,
                uid,
                gid,
            });
            walk(base, &path, out)?;
        } else if t.is_file() {
            let bytes = std::fs::read(&full).sys("read", full.display())?;
            out.push(Entry::File {
                path,
                mode,
                uid,
                gid,
                bytes,
            });
        } else if t.is_symlink() {
            let target = std::fs::read_link(&full).sys("readlink", full.display())?;
            out.push(Entry::Symlink {
                path,
                target,
                uid,
                gid,
            });
        }
    }
    Ok(())
}

/// Writes `tree` under `dir` (the new tmpfs).
pub fn write(tree: &Tree, dir: &Path) -> Result<(), SysError> {
    for e in &tree.0 {
        match e {
            Entry::Dir {
                path,
                mode,
                uid,
                gid,
            } => {
                let p = dir.join(path);
                std::fs::create_dir(&p).sys("mkdir", p.display())?;
                own(&p, *uid, *gid)?;
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode))
                    .sys("chmod", p.display())?;
            }
            Entry::File {
                path,
                mode,
                uid,
                gid,
                bytes,
            } => {
                let p = dir.join(path);
                std::fs::write(&p, bytes).sys("write", p.display())?;
                own(&p, *uid, *gid)?;
                // After chown, which clears set-id bits.
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode))
                    .sys("chmod", p.display())?;
            }
            Entry::Symlink {
                path,
                target,
                uid,
                gid,
            } => {
                let p = dir.join(path);
                std::os::unix::fs::symlink(target, &p).sys("symlink", p.display())?;
                own(&p, *uid, *gid)?;
            }
        }
    }
    Ok(())
}

/// lchown: a symlink's own owner, never its target's.
fn own(p: &Path, uid: u32, gid: u32) -> Result<(), SysError> {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).sys("lchown", p.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tree_is_copied_with_modes_and_symlinks_not_followed() {
        let from = tempfile::tempdir().unwrap();
        let to = tempfile::tempdir().unwrap();
        let f = from.path();
        std::fs::create_dir(f.join("d")).unwrap();
        std::fs::set_permissions(f.join("d"), std::fs::Permissions::from_mode(0o1777)).unwrap();
        std::fs::write(f.join("d/x"), b"kcell").unwrap();
        std::fs::set_permissions(f.join("d/x"), std::fs::Permissions::from_mode(0o640)).unwrap();
        std::os::unix::fs::symlink("/etc/shadow", f.join("link")).unwrap();

        write(&read(f).unwrap(), to.path()).unwrap();
        let t = to.path();
        assert_eq!(std::fs::read(t.join("d/x")).unwrap(), b"kcell");
        let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&t.join("d")), 0o1777);
        assert_eq!(mode(&t.join("d/x")), 0o640);
        assert_eq!(
            std::fs::read_link(t.join("link")).unwrap(),
            Path::new("/etc/shadow")
        );
        assert!(std::fs::symlink_metadata(t.join("link"))
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn tmpcopyup_is_taken_on_a_tmpfs_and_refused_elsewhere() {
        use crate::spec::{mount::MountError, Mount};
        let opts = |o: &[&str]| o.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let m = Mount::from_options(
            Path::new("/tmp"),
            "tmpfs",
            Some(Path::new("tmpfs")),
            &opts(&["rw", "tmpcopyup", "size=1m"]),
        )
        .unwrap();
        assert!(m.copy_up);
        assert_eq!(m.data, "size=1m");
        let e = Mount::from_options(
            Path::new("/x"),
            "bind",
            Some(Path::new("/y")),
            &opts(&["rbind", "tmpcopyup"]),
        )
        .unwrap_err();
        assert!(matches!(e, MountError::CopyUpNotTmpfs { .. }));
        assert!(e.to_string().contains("'/x'") && e.to_string().contains("'bind'"));
    }
}
