//! Unpacking one tar archive (an image layer, or the outer `docker save`
//! tarball) into a directory, safe against hostile archives.
//!
//! An archive is input from elsewhere, so every entry is checked before
//! anything is written: no absolute path, no `..`, and no path whose parent
//! directories pass through a symlink (an entry `link -> /etc` followed by
//! `link/passwd` would otherwise write the host's /etc/passwd). Symlinks
//! themselves may point anywhere: they are never followed here, and inside
//! the container they resolve against its own root. Hard links must name a
//! path inside the same tree, checked the same way.
//!
//! In layer mode, the OCI whiteouts become what overlayfs understands:
//! `.wh.NAME` a 0:0 character device NAME, `.wh..wh..opq` the
//! `trusted.overlay.opaque=y` attribute on its directory.

use crate::sys::{SysContext, SysError};
use nix::fcntl::AtFlags;
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use nix::unistd::{fchownat, Gid, Uid};
use sha2::{Digest, Sha256};
use std::ffi::OsStr;
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Errors while unpacking.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// An entry that would write outside the tree, or that cannot be represented.
    #[error("archive entry '{entry}' is refused: {why}")]
    Refused {
        /// The entry's path as the archive names it.
        entry: String,
        /// Why.
        why: String,
    },
    /// The archive itself could not be read.
    #[error("archive {0} is unreadable: {1}")]
    Unreadable(String, String),
    /// A file operation failed.
    #[error(transparent)]
    Sys(#[from] SysError),
}

/// How entries are written.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Turn `.wh.` entries into overlay whiteouts (image layers) instead of
    /// writing them as files (the outer archive).
    pub whiteouts: bool,
    /// Keep ownership and create device nodes (needs root); otherwise
    /// everything belongs to the caller and device nodes are skipped.
    pub privileged: bool,
}

/// What an unpack did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unpacked {
    /// Bytes of the uncompressed tar stream.
    pub tar_bytes: u64,
    /// `sha256:<hex>` of the uncompressed tar stream (an image's diff_id).
    pub diff_id: String,
    /// Device nodes left out (unprivileged).
    pub skipped_devices: u32,
}

/// Counts and hashes what passes through.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// `sha256:<hex>` of everything `reader` yields.
pub fn sha256_of(mut reader: impl Read) -> io::Result<String> {
    let mut h = Hashing {
        inner: &mut reader,
        hasher: Sha256::new(),
        bytes: 0,
    };
    io::copy(&mut h, &mut io::sink())?;
    Ok(format!("sha256:{:x}", h.hasher.finalize()))
}

/// Opens `reader` as a tar stream: gzip is undone, zstd is named.
fn decompressed<'a>(reader: impl Read + 'a, name: &str) -> Result<Box<dyn Read + 'a>, LayerError> {
    let mut buffered = BufReader::new(reader);
    let head = buffered
        .fill_buf()
        .map_err(|e| LayerError::Unreadable(name.to_string(), e.to_string()))?;
    Ok(match head {
        [0x1f, 0x8b, ..] => Box::new(flate2::read::GzDecoder::new(buffered)),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => {
            return Err(LayerError::Unreadable(
                name.to_string(),
                "zstd-compressed; kcell reads plain and gzip tar (docker save writes plain tar)"
                    .into(),
            ))
        }
        _ => Box::new(buffered),
    })
}

/// The entry path as a relative path, or why it is refused.
pub fn relative_path(raw: &[u8]) -> Result<PathBuf, &'static str> {
    let mut out = PathBuf::new();
    for c in Path::new(OsStr::from_bytes(raw)).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err("an absolute path would write outside the tree")
            }
            Component::ParentDir => return Err("a '..' component would write outside the tree"),
        }
    }
    Ok(out)
}

/// Unpacks the tar (plain or gzip) from `reader` into `dest`, which must exist.
/// `name` names the archive in errors.
pub fn unpack(
    reader: impl Read,
    name: &str,
    dest: &Path,
    opts: Options,
) -> Result<Unpacked, LayerError> {
    let unreadable = |e: io::Error| LayerError::Unreadable(name.to_string(), e.to_string());
    let mut hashing = Hashing {
        inner: decompressed(reader, name)?,
        hasher: Sha256::new(),
        bytes: 0,
    };
    let mut unpacked = Unpacked::default();
    let mut dir_modes: Vec<(PathBuf, u32)> = Vec::new();
    {
        let mut archive = tar::Archive::new(&mut hashing);
        for entry in archive.entries().map_err(unreadable)? {
            let mut entry = entry.map_err(unreadable)?;
            write_entry(&mut entry, dest, opts, &mut unpacked, &mut dir_modes)?;
        }
    }
    // The digest covers the whole stream, padding included.
    io::copy(&mut hashing, &mut io::sink()).map_err(unreadable)?;
    // Directory modes last (deepest first): a read-only directory must
    // still have been writable while its entries were made.
    dir_modes.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
    for (path, mode) in dir_modes {
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .sys("chmod", path.display())?;
    }
    unpacked.tar_bytes = hashing.bytes;
    unpacked.diff_id = format!("sha256:{:x}", hashing.hasher.finalize());
    Ok(unpacked)
}

fn refused(entry: &Path, why: impl Into<String>) -> LayerError {
    LayerError::Refused {
        entry: entry.display().to_string(),
        why: why.into(),
    }
}

/// Makes sure every parent of `rel` under `dest` is a real directory (made
/// when missing, never a symlink); returns the absolute parent.
pub(crate) fn real_parent(dest: &Path, rel: &Path, create: bool) -> Result<PathBuf, LayerError> {
    let mut cur = dest.to_path_buf();
    let parents: Vec<Component> = rel
        .parent()
        .map(|p| p.components().collect())
        .unwrap_or_default();
    for c in parents {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(refused(
                    rel,
                    format!(
                        "its parent {} is a symlink: writing through it could leave the tree",
                        cur.strip_prefix(dest).unwrap_or(&cur).display()
                    ),
                ))
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(refused(
                    rel,
                    format!(
                        "its parent {} is not a directory",
                        cur.strip_prefix(dest).unwrap_or(&cur).display()
                    ),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                fs::create_dir(&cur).sys("mkdir", cur.display())?;
            }
            Err(e) => return Err(SysError::from_io("lstat", cur.display(), e).into()),
        }
    }
    Ok(cur)
}

/// Removes what is at `path` (a later entry replaces an earlier one), keeping
/// a directory when a directory is wanted.
fn clear(path: &Path, keep_dir: bool) -> Result<(), SysError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() && keep_dir => Ok(()),
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).sys("rm -r", path.display()),
        Ok(_) => fs::remove_file(path).sys("unlink", path.display()),
        Err(_) => Ok(()),
    }
}

fn write_entry<R: Read>(
    entry: &mut tar::Entry<R>,
    dest: &Path,
    opts: Options,
    unpacked: &mut Unpacked,
    dir_modes: &mut Vec<(PathBuf, u32)>,
) -> Result<(), LayerError> {
    let raw = entry.path_bytes().into_owned();
    let shown = PathBuf::from(OsStr::from_bytes(&raw));
    let rel = relative_path(&raw).map_err(|why| refused(&shown, why))?;
    let Some(file_name) = rel.file_name().map(|n| n.to_os_string()) else {
        return Ok(()); // "./": the tree's root itself
    };
    let parent = real_parent(dest, &rel, true)?;
    let target = parent.join(&file_name);
    let header = entry.header();
    let mode = header.mode().unwrap_or(0o644) & 0o7777;
    let owner = (
        header.uid().unwrap_or(0) as u32,
        header.gid().unwrap_or(0) as u32,
    );
    let kind = header.entry_type();

    if opts.whiteouts {
        let name = file_name.as_bytes();
        if name == b".wh..wh..opq" {
            xattr_set(&parent, "trusted.overlay.opaque", b"y")?;
            return Ok(());
        }
        if let Some(hidden) = name.strip_prefix(b".wh.") {
            if hidden.is_empty() || hidden == b"." || hidden == b".." {
                return Err(refused(&shown, "a whiteout must name a file"));
            }
            let hidden = parent.join(OsStr::from_bytes(hidden));
            clear(&hidden, false)?;
            mknod(&hidden, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))
                .sys("mknod (overlay whiteout)", hidden.display())?;
            return Ok(());
        }
    }

    use tar::EntryType as T;
    match kind {
        T::Directory => {
            clear(&target, true)?;
            if !target.is_dir() {
                fs::create_dir(&target).sys("mkdir", target.display())?;
            }
            dir_modes.push((target.clone(), mode));
        }
        T::Regular | T::Continuous => {
            clear(&target, false)?;
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&target)
                .sys("create", target.display())?;
            io::copy(entry, &mut file)
                .map_err(|e| LayerError::Unreadable(shown.display().to_string(), e.to_string()))?;
        }
        T::Symlink => {
            let link = entry
                .link_name_bytes()
                .ok_or_else(|| refused(&shown, "a symlink without a target"))?;
            clear(&target, false)?;
            std::os::unix::fs::symlink(OsStr::from_bytes(&link), &target)
                .sys("symlink", target.display())?;
        }
        T::Link => {
            let link = entry
                .link_name_bytes()
                .ok_or_else(|| refused(&shown, "a hard link without a target"))?;
            let source_rel = relative_path(&link)
                .map_err(|why| refused(&shown, format!("its hard link target {why}")))?;
            let source = real_parent(dest, &source_rel, false)?.join(
                source_rel
                    .file_name()
                    .ok_or_else(|| refused(&shown, "a hard link to the tree's root"))?,
            );
            clear(&target, false)?;
            fs::hard_link(&source, &target).sys(
                "link",
                format!("{} to {}", target.display(), source.display()),
            )?;
            return Ok(()); // the inode's metadata came with its first name
        }
        T::Char | T::Block | T::Fifo => {
            if !opts.privileged && kind != T::Fifo {
                unpacked.skipped_devices += 1;
                return Ok(());
            }
            let flag = match kind {
                T::Char => SFlag::S_IFCHR,
                T::Block => SFlag::S_IFBLK,
                _ => SFlag::S_IFIFO,
            };
            let dev = makedev(
                u64::from(header.device_major().ok().flatten().unwrap_or(0)),
                u64::from(header.device_minor().ok().flatten().unwrap_or(0)),
            );
            clear(&target, false)?;
            mknod(&target, flag, Mode::from_bits_truncate(mode), dev)
                .sys("mknod", target.display())?;
        }
        // Metadata entries (PAX, GNU long names) are folded in by the tar
        // crate; anything else has no file to make.
        _ => return Ok(()),
    }
    if opts.privileged {
        fchownat(
            None,
            &target,
            Some(Uid::from_raw(owner.0)),
            Some(Gid::from_raw(owner.1)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .sys(
            "lchown",
            format!("{} to {}:{}", target.display(), owner.0, owner.1),
        )?;
    }
    // chown clears set-id bits, so the mode comes after it.
    if matches!(
        kind,
        T::Regular | T::Continuous | T::Fifo | T::Char | T::Block
    ) {
        fs::set_permissions(&target, fs::Permissions::from_mode(mode))
            .sys("chmod", target.display())?;
    }
    Ok(())
}

fn xattr_set(path: &Path, name: &str, value: &[u8]) -> Result<(), SysError> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| SysError {
        call: "setxattr",
        subject: path.display().to_string(),
        errno: nix::errno::Errno::EINVAL,
    })?;
    let c_name = std::ffi::CString::new(name).map_err(|_| SysError {
        call: "setxattr",
        subject: name.to_string(),
        errno: nix::errno::Errno::EINVAL,
    })?;
    // SAFETY: both strings are NUL-terminated and outlive the call; value is a valid slice.
    let rc = unsafe {
        libc::lsetxattr(
            c_path.as_ptr(),
            c_name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    nix::errno::Errno::result(rc)
        .map(drop)
        .sys("setxattr", format!("{name} on {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar built entry by entry, with raw names the tar crate's safe
    /// builder methods would refuse to write.
    struct Tar(tar::Builder<Vec<u8>>);

    impl Tar {
        fn new() -> Self {
            Tar(tar::Builder::new(Vec::new()))
        }
        fn entry(
            mut self,
            kind: tar::EntryType,
            path: &str,
            link: Option<&str>,
            data: &[u8],
        ) -> Self {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_size(data.len() as u64);
            h.set_mode(if kind == tar::EntryType::Directory {
                0o755
            } else {
                0o644
            });
            // Raw name bytes: set_path would refuse '..' and absolute paths.
            let name = &mut h.as_old_mut().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            if let Some(l) = link {
                h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
            }
            h.set_cksum();
            self.0.append(&h, data).expect("append");
            self
        }
        fn file(self, path: &str, data: &str) -> Self {
            self.entry(tar::EntryType::Regular, path, None, data.as_bytes())
        }
        fn symlink(self, path: &str, to: &str) -> Self {
            self.entry(tar::EntryType::Symlink, path, Some(to), b"")
        }
        fn bytes(self) -> Vec<u8> {
            self.0.into_inner().expect("finish")
        }
    }

    const OPTS: Options = Options {
        whiteouts: true,
        privileged: false,
    };

    /// Unpacks into `<tmp>/store/layer`; returns the error and whether
    /// anything appeared in `<tmp>` outside the layer directory.
    fn unpack_hostile(tar: Vec<u8>) -> (Result<Unpacked, LayerError>, Vec<String>) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let outside = tmp.path().join("etc");
        fs::create_dir(&outside).expect("mkdir");
        let layer = tmp.path().join("store/layer/a/b");
        fs::create_dir_all(&layer).expect("mkdir");
        let result = unpack(&tar[..], "test.tar", &layer, OPTS);
        let leaked: Vec<String> = fs::read_dir(&outside)
            .expect("read")
            .map(|e| e.expect("entry").file_name().to_string_lossy().to_string())
            .collect();
        (result, leaked)
    }

    #[test]
    fn dot_dot_paths_are_refused_and_write_nothing_outside() {
        let (r, leaked) = unpack_hostile(Tar::new().file("../../../../etc/evil", "x").bytes());
        let msg = r.expect_err("refused").to_string();
        assert!(
            msg.contains("'../../../../etc/evil'") && msg.contains("'..'"),
            "{msg}"
        );
        assert!(leaked.is_empty(), "{leaked:?}");
    }

    #[test]
    fn absolute_paths_are_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let evil = tmp.path().join("evil");
        let tar = Tar::new().file(evil.to_str().expect("utf8"), "x").bytes();
        let layer = tmp.path().join("layer");
        fs::create_dir(&layer).expect("mkdir");
        let msg = unpack(&tar[..], "t", &layer, OPTS)
            .expect_err("refused")
            .to_string();
        assert!(msg.contains("absolute path"), "{msg}");
        assert!(!evil.exists());
    }

    #[test]
    fn writing_through_an_escaping_symlink_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).expect("mkdir");
        let tar = Tar::new()
            .symlink("link", outside.to_str().expect("utf8"))
            .file("link/evil", "x")
            .bytes();
        let layer = tmp.path().join("layer");
        fs::create_dir(&layer).expect("mkdir");
        let msg = unpack(&tar[..], "t", &layer, OPTS)
            .expect_err("refused")
            .to_string();
        assert!(
            msg.contains("'link/evil'") && msg.contains("symlink"),
            "{msg}"
        );
        assert_eq!(fs::read_dir(&outside).expect("read").count(), 0);
        // The symlink itself is kept as an entry (it resolves inside the container).
        assert!(fs::symlink_metadata(layer.join("link")).is_ok());
    }

    #[test]
    fn a_relative_symlink_out_then_written_through_is_refused() {
        let (r, leaked) = unpack_hostile(
            Tar::new()
                .symlink("up", "../../../../etc")
                .file("up/evil", "x")
                .bytes(),
        );
        assert!(r.expect_err("refused").to_string().contains("symlink"));
        assert!(leaked.is_empty(), "{leaked:?}");
    }

    #[test]
    fn a_hard_link_out_of_the_tree_is_refused() {
        let (r, leaked) = unpack_hostile(
            Tar::new()
                .entry(
                    tar::EntryType::Link,
                    "passwd",
                    Some("../../../../etc/passwd"),
                    b"",
                )
                .bytes(),
        );
        assert!(r.expect_err("refused").to_string().contains("hard link"));
        assert!(leaked.is_empty());
    }

    #[test]
    fn files_dirs_links_and_modes_are_kept_and_the_diff_id_is_the_tar_digest() {
        let tar = Tar::new()
            .entry(tar::EntryType::Directory, "./bin/", None, b"")
            .file("./bin/tool", "#!/bin/sh\n")
            .symlink("./bin/alias", "/bin/tool")
            .entry(tar::EntryType::Link, "bin/hard", Some("bin/tool"), b"")
            .bytes();
        let tmp = tempfile::tempdir().expect("tempdir");
        let got = unpack(&tar[..], "t", tmp.path(), OPTS).expect("unpack");
        assert_eq!(got.diff_id, sha256_of(&tar[..]).expect("hash"));
        assert_eq!(got.tar_bytes, tar.len() as u64);
        let tool = tmp.path().join("bin/tool");
        assert_eq!(fs::read_to_string(&tool).expect("read"), "#!/bin/sh\n");
        assert_eq!(
            fs::metadata(&tool).expect("stat").permissions().mode() & 0o777,
            0o644
        );
        assert_eq!(
            fs::read_link(tmp.path().join("bin/alias")).expect("readlink"),
            PathBuf::from("/bin/tool")
        );
        use std::os::unix::fs::MetadataExt;
        assert_eq!(fs::metadata(&tool).expect("stat").nlink(), 2);
    }

    #[test]
    fn gzip_layers_are_read() {
        let tar = Tar::new().file("a", "1").bytes();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).expect("gzip");
        let gz = gz.finish().expect("gzip");
        let tmp = tempfile::tempdir().expect("tempdir");
        let got = unpack(&gz[..], "t", tmp.path(), OPTS).expect("unpack");
        // The diff_id is of the uncompressed stream, as the image config has it.
        assert_eq!(got.diff_id, sha256_of(&tar[..]).expect("hash"));
        assert!(tmp.path().join("a").exists());
    }

    #[test]
    fn device_nodes_are_skipped_unprivileged() {
        let tar = Tar::new()
            .entry(tar::EntryType::Char, "dev/null", None, b"")
            .bytes();
        let tmp = tempfile::tempdir().expect("tempdir");
        let got = unpack(&tar[..], "t", tmp.path(), OPTS).expect("unpack");
        assert_eq!(got.skipped_devices, 1);
        assert!(!tmp.path().join("dev/null").exists());
    }

    #[test]
    fn whiteouts_become_overlay_whiteouts() {
        if !nix::unistd::geteuid().is_root() {
            return; // mknod c 0 0 needs CAP_MKNOD
        }
        let tar = Tar::new()
            .entry(tar::EntryType::Directory, "etc/", None, b"")
            .file("etc/.wh.motd", "")
            .file("etc/.wh..wh..opq", "")
            .bytes();
        let tmp = tempfile::tempdir().expect("tempdir");
        unpack(&tar[..], "t", tmp.path(), OPTS).expect("unpack");
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let m = fs::symlink_metadata(tmp.path().join("etc/motd")).expect("whiteout");
        assert!(m.file_type().is_char_device() && m.rdev() == 0);
        assert!(!tmp.path().join("etc/.wh.motd").exists());
    }

    #[test]
    fn zstd_is_named() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let r = unpack(
            &[0x28, 0xb5, 0x2f, 0xfd, 0, 0][..],
            "l.tar.zst",
            tmp.path(),
            OPTS,
        );
        assert!(r.expect_err("zstd").to_string().contains("zstd"));
    }
}
