//! The guest's initramfs: the agent as /init, kcell's binary (when kcell is
//! among the runtimes) as /bin/kcell and /bin/kcell-oci, busybox,
//! the busybox container image, the cases, the kernel's modules (plain .ko,
//! decompressed here) with their load order, and the kernel's config. Written
//! as an uncompressed newc cpio (no decompression cost under TCG) and cached
//! by a hash of every input.

use super::kernel::{module_closure, Kernel};
use sha2::Digest;
use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where things live in the guest.
pub mod guest_paths {
    /// The container image.
    pub const ROOTFS: &str = "/rootfs";
    /// The case files.
    pub const CASES: &str = "/cases";
    /// kcell's CLI, when kcell is among the runtimes.
    pub const RUNTIME: &str = "/bin/kcell";
    /// kcell's OCI command line (the same file).
    pub const OCI: &str = "/bin/kcell-oci";
    /// The runtimes under test other than kcell: /opt/kcell/runtimes/NAME.
    pub const RUNTIMES: &str = "/opt/kcell/runtimes";
    /// What the host asks of one boot (runtimes, trials): JSON, appended.
    pub const PLAN: &str = "/etc/kcell/plan.json";
    /// Module files loaded before the first case, in order, one per line.
    pub const MODULES_EARLY: &str = "/etc/kcell/modules.early";
    /// Module files loaded in the background, in order.
    pub const MODULES_LATE: &str = "/etc/kcell/modules.late";
}

/// A newc ("070701") cpio archive being written.
pub struct Cpio<W: Write> {
    out: W,
    written: u64,
    ino: u32,
    dirs: BTreeSet<String>,
}

impl<W: Write> Cpio<W> {
    /// Starts an archive.
    pub fn new(out: W) -> Self {
        Cpio {
            out,
            written: 0,
            ino: 1,
            dirs: BTreeSet::new(),
        }
    }

    fn pad(&mut self) -> std::io::Result<()> {
        let n = (4 - (self.written % 4) as usize) % 4;
        self.out.write_all(&[0u8; 3][..n])?;
        self.written += n as u64;
        Ok(())
    }

    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) -> std::io::Result<()> {
        let ino = self.ino;
        self.ino += 1;
        self.entry_with(name, mode, data, ino, 1)
    }

    fn entry_with(
        &mut self,
        name: &str,
        mode: u32,
        data: &[u8],
        ino: u32,
        nlink: u32,
    ) -> std::io::Result<()> {
        let name = name.trim_start_matches('/');
        let fields = [
            ino,
            mode,
            0,
            0,
            nlink,
            0,
            data.len() as u32,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            0,
        ];
        let mut header = String::from("070701");
        for f in fields {
            header.push_str(&format!("{f:08x}"));
        }
        self.out.write_all(header.as_bytes())?;
        self.out.write_all(name.as_bytes())?;
        self.out.write_all(&[0])?;
        self.written += header.len() as u64 + name.len() as u64 + 1;
        self.pad()?;
        self.out.write_all(data)?;
        self.written += data.len() as u64;
        self.pad()
    }

    /// Adds a directory (and its missing parents).
    pub fn dir(&mut self, path: &str, mode: u32) -> std::io::Result<()> {
        let path = path.trim_matches('/');
        if path.is_empty() || self.dirs.contains(path) {
            return Ok(());
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent, 0o755)?;
        }
        self.dirs.insert(path.to_string());
        self.entry(path, 0o040000 | mode, &[])
    }

    fn parent_of(&mut self, path: &str) -> std::io::Result<()> {
        match path.trim_matches('/').rsplit_once('/') {
            Some((parent, _)) => self.dir(parent, 0o755),
            None => Ok(()),
        }
    }

    /// Adds a regular file.
    pub fn file(&mut self, path: &str, data: &[u8], mode: u32) -> std::io::Result<()> {
        self.parent_of(path)?;
        self.entry(path, 0o100000 | mode, data)
    }

    /// Adds a regular file under several names (hard links): the kernel's
    /// unpacker links later entries with the same inode to the first, which
    /// alone carries the data.
    pub fn linked_file(&mut self, paths: &[&str], data: &[u8], mode: u32) -> std::io::Result<()> {
        let ino = self.ino;
        self.ino += 1;
        for (i, path) in paths.iter().enumerate() {
            self.parent_of(path)?;
            let body = if i == 0 { data } else { &[][..] };
            self.entry_with(path, 0o100000 | mode, body, ino, paths.len() as u32)?;
        }
        Ok(())
    }

    /// Adds a symbolic link.
    pub fn symlink(&mut self, path: &str, target: &str) -> std::io::Result<()> {
        self.parent_of(path)?;
        self.entry(path, 0o120777, target.as_bytes())
    }

    /// Adds a host directory tree at `at` (files, directories, symlinks; modes
    /// kept), leaving out the archive paths in `skip`.
    pub fn tree(&mut self, host: &Path, at: &str, skip: &[&str]) -> std::io::Result<()> {
        let meta = std::fs::symlink_metadata(host)?;
        self.dir(at, meta.mode() & 0o7777)?;
        let mut entries: Vec<_> = std::fs::read_dir(host)?.filter_map(Result::ok).collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            let name = format!(
                "{}/{}",
                at.trim_end_matches('/'),
                e.file_name().to_string_lossy()
            );
            let m = std::fs::symlink_metadata(&path)?;
            if skip.contains(&name.as_str()) {
                continue;
            }
            if m.file_type().is_symlink() {
                let target = std::fs::read_link(&path)?;
                self.symlink(&name, &target.to_string_lossy())?;
            } else if m.is_dir() {
                self.tree(&path, &name, skip)?;
            } else if m.is_file() {
                self.file(&name, &std::fs::read(&path)?, m.mode() & 0o7777)?;
            }
        }
        Ok(())
    }

    /// Writes the trailer and returns the writer.
    pub fn finish(mut self) -> std::io::Result<W> {
        self.entry("TRAILER!!!", 0, &[])?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// The inputs of an initramfs.
pub struct Inputs<'a> {
    /// The kernel whose modules go in.
    pub kernel: &'a Kernel,
    /// The agent binary (becomes /init and the image's kcell-probe).
    pub agent: &'a Path,
    /// kcell's binary (becomes /bin/kcell and /bin/kcell-oci), when kcell
    /// is among the runtimes.
    pub kcell: Option<&'a Path>,
    /// A static busybox.
    pub busybox: &'a Path,
    /// The case files.
    pub cases: &'a Path,
    /// Module names to load before the first case.
    pub early: &'a [String],
    /// Module names to load in the background.
    pub late: &'a [String],
    /// More files: (path in the guest, file on the host): the runtimes
    /// under test and their libraries.
    pub extra: &'a [(String, PathBuf)],
}

/// The applets of a busybox binary (`busybox --list`), or the few the
/// init itself uses when it cannot say.
fn applets(busybox: &Path) -> Vec<String> {
    let listed = std::process::Command::new(busybox)
        .arg("--list")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::trim)
                .filter(|a| !a.is_empty() && *a != "busybox" && !a.contains('/'))
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    if listed.is_empty() {
        ["sh", "cat", "ls", "mount", "dmesg"]
            .map(String::from)
            .to_vec()
    } else {
        listed
    }
}

/// Whether `file` is the agent binary itself (through a symlink).
pub fn is_agent(file: &Path, agent: &Path) -> bool {
    match (std::fs::canonicalize(file), std::fs::canonicalize(agent)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// A copy of `binary` (the agent, kcell) without debug info (TCG unpacks
/// every byte at boot).
fn stripped(binary: &Path, cache: &Path) -> Result<PathBuf, String> {
    let agent = binary;
    let bytes = std::fs::read(agent).map_err(|e| format!("{}: {e}", agent.display()))?;
    let hash = format!("{:x}", sha2::Sha256::digest(&bytes));
    let out = cache.join(format!("stripped-{}", &hash[..16]));
    if !out.exists() {
        // Builders in parallel (two targets of one run) each write their own
        // temporary file; the rename makes whichever finishes first the copy.
        let tmp = out.with_extension(format!("tmp-{}", crate::text::unique_id()));
        let ok = Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(&tmp)
            .arg(agent)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            std::fs::copy(agent, &tmp).map_err(|e| format!("copy {}: {e}", agent.display()))?;
        }
        std::fs::rename(&tmp, &out).map_err(|e| format!("rename {}: {e}", tmp.display()))?;
    }
    Ok(out)
}

/// Decompresses a module file to plain .ko bytes.
fn module_bytes(path: &Path) -> Result<Vec<u8>, String> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        Some("xz")
    } else if name.ends_with(".zst") {
        Some("zstd")
    } else if name.ends_with(".gz") {
        Some("gzip")
    } else {
        None
    };
    match tool {
        None => std::fs::read(path).map_err(|e| format!("{}: {e}", path.display())),
        Some(t) => {
            let out = Command::new(t)
                .arg("-dc")
                .arg(path)
                .output()
                .map_err(|e| format!("{t} -dc {}: {e} (install {t})", path.display()))?;
            if out.status.success() {
                Ok(out.stdout)
            } else {
                Err(format!(
                    "{t} -dc {}: {}",
                    path.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        }
    }
}

/// Builds (or finds in `cache`) the initramfs for `inputs`; returns its path.
pub fn build(inputs: &Inputs, cache: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(cache).map_err(|e| format!("mkdir {}: {e}", cache.display()))?;
    let contents = Contents::gather(inputs, cache)?;
    let out = cache.join(format!(
        "initramfs-{}-{}.cpio",
        inputs.kernel.id,
        contents.digest(inputs)?
    ));
    if out.exists() {
        return Ok(out);
    }
    let tmp = out.with_extension(format!("tmp-{}", crate::text::unique_id()));
    let staging = cache.join(format!("staging-{}", crate::text::unique_id()));
    let written = write_archive(inputs, &contents, &staging, &tmp);
    let _ = std::fs::remove_dir_all(&staging);
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))
        .map_err(|e| format!("chmod {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &out).map_err(|e| format!("rename {}: {e}", tmp.display()))?;
    Ok(out)
}

/// What goes into an initramfs besides the inputs' own paths: the stripped
/// binaries, the modules (early and late, in load order) and the case files.
struct Contents {
    agent: PathBuf,
    kcell: Option<PathBuf>,
    early: Vec<PathBuf>,
    late: Vec<PathBuf>,
    cases: Vec<PathBuf>,
}

impl Contents {
    fn gather(inputs: &Inputs, cache: &Path) -> Result<Contents, String> {
        let (early, late) = match &inputs.kernel.modules {
            Some(dir) => {
                let early = module_closure(dir, inputs.early)?;
                let late: Vec<PathBuf> = module_closure(dir, inputs.late)?
                    .into_iter()
                    .filter(|m| !early.contains(m))
                    .collect();
                (early, late)
            }
            None => (Vec::new(), Vec::new()),
        };
        let mut cases: Vec<PathBuf> = std::fs::read_dir(inputs.cases)
            .map_err(|e| format!("{}: {e}", inputs.cases.display()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            // Every TOML file: the agent in the guest picks the cases among them.
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        cases.sort();
        Ok(Contents {
            agent: stripped(inputs.agent, cache)?,
            kcell: inputs.kcell.map(|k| stripped(k, cache)).transpose()?,
            early,
            late,
            cases,
        })
    }

    fn modules(&self) -> impl Iterator<Item = &PathBuf> {
        self.early.iter().chain(&self.late)
    }

    /// Every input, hashed: a changed case, binary or kernel rebuilds it.
    fn digest(&self, inputs: &Inputs) -> Result<String, String> {
        let mut h = sha2::Sha256::new();
        h.update(b"kcell-initramfs-v5");
        for p in [self.agent.as_path(), inputs.busybox]
            .into_iter()
            .chain(self.kcell.as_deref())
            .chain(self.cases.iter().map(PathBuf::as_path))
            .chain(self.modules().map(PathBuf::as_path))
        {
            h.update(p.to_string_lossy().as_bytes());
            h.update(std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?);
        }
        h.update(inputs.kernel.release.as_bytes());
        for (at, file) in inputs.extra {
            h.update(at.as_bytes());
            if is_agent(file, inputs.agent) {
                h.update(b"-> /init");
            } else {
                h.update(std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?);
            }
        }
        Ok(format!("{:x}", h.finalize()))
    }
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Writes the archive to `tmp`, the container image assembled in `staging`.
fn write_archive(
    inputs: &Inputs,
    contents: &Contents,
    staging: &Path,
    tmp: &Path,
) -> Result<(), String> {
    let image = staging.join("rootfs");
    super::busybox::build(
        &image,
        inputs.busybox,
        &[(
            contents.agent.clone(),
            PathBuf::from(crate::guestinfo::PROBE_IN_IMAGE),
        )],
    )?;
    let file = std::fs::File::create(tmp).map_err(|e| format!("create {}: {e}", tmp.display()))?;
    let mut cpio = Cpio::new(std::io::BufWriter::new(file));
    let io = |e: std::io::Error| format!("writing {}: {e}", tmp.display());
    // The root must be 0755 or an unprivileged uid cannot exec anything.
    for (d, mode) in [
        ("dev", 0o755),
        ("proc", 0o555),
        ("sys", 0o555),
        ("tmp", 0o1777),
        ("run", 0o755),
        ("newroot", 0o755),
        ("etc/kcell", 0o755),
        ("bin", 0o755),
    ] {
        cpio.dir(d, mode).map_err(io)?;
    }
    write_binaries(&mut cpio, inputs, contents, &image).map_err(io)?;
    for c in &contents.cases {
        let name = c
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        cpio.file(&format!("{}/{name}", guest_paths::CASES), &read(c)?, 0o644)
            .map_err(io)?;
    }
    write_modules(&mut cpio, inputs, contents)?;
    if let Some(cfg) = &inputs.kernel.config {
        let at = format!("boot/config-{}", inputs.kernel.release);
        cpio.file(&at, &read(cfg)?, 0o644).map_err(io)?;
    }
    cpio.finish().map(drop).map_err(io)
}

/// The image (its two big binaries as hard links), the agent as /init,
/// kcell, the runtimes and their libraries, busybox and its applets.
fn write_binaries<W: Write>(
    cpio: &mut Cpio<W>,
    inputs: &Inputs,
    contents: &Contents,
    image: &Path,
) -> std::io::Result<()> {
    let unreadable = |e: String| std::io::Error::other(e);
    let probe = format!(
        "{}{}",
        guest_paths::ROOTFS,
        crate::guestinfo::PROBE_IN_IMAGE
    );
    let image_busybox = format!("{}/bin/busybox", guest_paths::ROOTFS);
    cpio.tree(image, guest_paths::ROOTFS, &[&probe, &image_busybox])?;
    cpio.linked_file(
        &["init", &probe],
        &read(&contents.agent).map_err(unreadable)?,
        0o755,
    )?;
    if let Some(k) = &contents.kcell {
        let bytes = read(k).map_err(unreadable)?;
        cpio.linked_file(&[guest_paths::RUNTIME, guest_paths::OCI], &bytes, 0o755)?;
    }
    for (at, file) in inputs.extra {
        // The agent under another name (a mutant runtime) is a link to it.
        if is_agent(file, inputs.agent) {
            cpio.symlink(at, "/init")?;
            continue;
        }
        let mode = std::fs::metadata(file)
            .map(|m| m.mode() & 0o7777)
            .unwrap_or(0o755);
        cpio.file(at, &read(file).map_err(unreadable)?, mode)?;
    }
    let busybox = read(inputs.busybox).map_err(unreadable)?;
    cpio.linked_file(&["bin/busybox", &image_busybox], &busybox, 0o755)?;
    // Every applet, so a program of one's own (kcell vm) finds cp, tar, ...
    for applet in applets(inputs.busybox) {
        cpio.symlink(&format!("bin/{applet}"), "/bin/busybox")?;
    }
    Ok(())
}

/// The modules, decompressed, and their load orders (early, late).
fn write_modules<W: Write>(
    cpio: &mut Cpio<W>,
    inputs: &Inputs,
    contents: &Contents,
) -> Result<(), String> {
    let io = |e: std::io::Error| format!("writing the initramfs: {e}");
    let (mut early_order, mut late_order) = (String::new(), String::new());
    for (i, m) in contents.modules().enumerate() {
        let base = m
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let plain = base.split(".ko").next().unwrap_or(&base).to_string() + ".ko";
        let path = format!("lib/modules/{}/{i:02}-{plain}", inputs.kernel.release);
        cpio.file(&path, &module_bytes(m)?, 0o644).map_err(io)?;
        let order = if contents.early.contains(m) {
            &mut early_order
        } else {
            &mut late_order
        };
        order.push_str(&format!("/{path}\n"));
    }
    cpio.file(guest_paths::MODULES_EARLY, early_order.as_bytes(), 0o644)
        .map_err(io)?;
    cpio.file(guest_paths::MODULES_LATE, late_order.as_bytes(), 0o644)
        .map_err(io)
}

/// `base` with a second archive appended holding `files` (the kernel
/// unpacks concatenated archives in turn): one boot's plan on a cached
/// image, without rebuilding it. Written to `out`.
pub fn with_files(base: &Path, files: &[(&str, &[u8])], out: &Path) -> Result<(), String> {
    let mut bytes = std::fs::read(base).map_err(|e| format!("{}: {e}", base.display()))?;
    let mut extra = Cpio::new(Vec::new());
    for (path, data) in files {
        extra
            .file(path, data, 0o644)
            .map_err(|e| format!("appending {path}: {e}"))?;
    }
    bytes.extend(extra.finish().map_err(|e| e.to_string())?);
    std::fs::write(out, bytes).map_err(|e| format!("write {}: {e}", out.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_layout_is_what_the_kernel_reads() {
        let mut c = Cpio::new(Vec::new());
        c.file("a/b", b"hi", 0o644).expect("file");
        c.symlink("a/l", "/b").expect("link");
        let bytes = c.finish().expect("finish");
        let text = String::from_utf8_lossy(&bytes);
        // The directory comes before its file, every header is 110 bytes, 4-aligned.
        let first = text.find("a\0").expect("dir a");
        let second = text.find("a/b\0").expect("file a/b");
        assert!(first < second);
        assert!(text.starts_with("070701"));
        assert_eq!(&text[6..14], "00000001");
        assert!(text.contains("TRAILER!!!"));
        assert_eq!(bytes.len() % 4, 0);
        // mode of the file entry: regular file 0644
        let file_header = &text[text[..second].rfind("070701").expect("header")..];
        assert_eq!(&file_header[14..22], "000081a4");
    }
}
