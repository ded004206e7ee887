//! The `host` target: cases run on this machine's own kernel. Preparing it
//! means copying the agent (the probe helper inside the image, the host's
//! marker processes) and, when kcell is among the runtimes, kcell's binary
//! where uid 1000 can run them, and building the busybox image.

use crate::driver::Target;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Where the probe helper sits inside the image.
pub use crate::guestinfo::PROBE_IN_IMAGE;

/// Builds the image root and the binaries under `dir` from `agent` and,
/// when given, `kcell` (kcell's CLI, which is its OCI command line under
/// the name kcell-oci). `dir` must be reachable by uid 1000 (the
/// unprivileged cases run the runtime as that user), e.g. under /tmp.
pub fn prepare(dir: &Path, agent: &Path, kcell: Option<&Path>) -> Result<Target, String> {
    let mkdir = |d: &Path| {
        std::fs::create_dir_all(d).map_err(|e| format!("mkdir {}: {e}", d.display()))?;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("chmod {}: {e}", d.display()))
    };
    mkdir(dir)?;
    let bin = dir.join("bin");
    mkdir(&bin)?;
    let agent_copy = copy_in(agent, &bin.join("kcell-agent"))?;
    let kcell_copy = match kcell {
        Some(k) => {
            let copy = copy_in(k, &bin.join("kcell"))?;
            // kcell's CLI is its OCI command line under this name.
            let oci = bin.join("kcell-oci");
            let _ = std::fs::remove_file(&oci);
            std::os::unix::fs::symlink("kcell", &oci)
                .map_err(|e| format!("symlink {}: {e}", oci.display()))?;
            copy
        }
        None => PathBuf::new(),
    };
    let rootfs = dir.join("rootfs");
    let busybox = crate::vm::busybox::locate(&dir.join("cache"))?;
    crate::vm::busybox::build(
        &rootfs,
        &busybox,
        &[(agent.to_path_buf(), PathBuf::from(PROBE_IN_IMAGE))],
    )
    .map_err(|e| format!("building the busybox image at {}: {e}", rootfs.display()))?;
    Ok(Target {
        name: "host".into(),
        agent: agent_copy,
        kcell: kcell_copy,
        rootfs,
        store: dir.join("store"),
    })
}

/// Copies `from` to `to` (mode 0755) through a staged name, so a reader
/// never sees half a binary.
fn copy_in(from: &Path, to: &Path) -> Result<PathBuf, String> {
    let staged = to.with_extension(format!("staged-{}", std::process::id()));
    std::fs::copy(from, &staged)
        .map_err(|e| format!("copy {} to {}: {e}", from.display(), staged.display()))?;
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("chmod {}: {e}", staged.display()))?;
    std::fs::rename(&staged, to)
        .map_err(|e| format!("rename {} to {}: {e}", staged.display(), to.display()))?;
    Ok(to.to_path_buf())
}

/// A runtime binary every user can run: `path` itself when it and each
/// directory above it let others in, else a copy in `bin` (a case that
/// runs a runtime as uid 1000 cannot reach youki in /root/.cache).
pub fn runnable_by_all(name: &str, path: &Path, bin: &Path) -> Result<PathBuf, String> {
    use std::os::unix::fs::MetadataExt;
    let open_to_others =
        |p: &Path, bits: u32| std::fs::metadata(p).is_ok_and(|m| m.mode() & bits == bits);
    let reachable = open_to_others(path, 0o005)
        && path
            .ancestors()
            .skip(1)
            .all(|d| d.as_os_str().is_empty() || open_to_others(d, 0o001));
    if reachable {
        return Ok(path.to_path_buf());
    }
    let copy = bin.join(format!("runtime-{name}"));
    let same = |a: &Path, b: &Path| match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.len() == y.len() && x.mtime() <= y.mtime(),
        _ => false,
    };
    if same(path, &copy) {
        return Ok(copy);
    }
    let staged = bin.join(format!(".runtime-{name}.{}", std::process::id()));
    std::fs::copy(path, &staged)
        .map_err(|e| format!("copy {} to {}: {e}", path.display(), staged.display()))?;
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("chmod {}: {e}", staged.display()))?;
    private_libraries_for_all(name, &staged, bin)?;
    std::fs::rename(&staged, &copy)
        .map_err(|e| format!("rename {} to {}: {e}", staged.display(), copy.display()))?;
    Ok(copy)
}

/// A runtime line's copy (vm/runtimes.rs) still names its private loader
/// and libraries in kcell's cache, which uid 1000 cannot reach either: they
/// are copied beside it (`bin/lib-NAME/`) and the copy is pointed there.
fn private_libraries_for_all(name: &str, binary: &Path, bin: &Path) -> Result<(), String> {
    let bytes = std::fs::read(binary).map_err(|e| format!("read {}: {e}", binary.display()))?;
    let Ok(elf) = goblin::elf::Elf::parse(&bytes) else {
        return Ok(());
    };
    let Some(lib) = elf.rpaths.first().map(PathBuf::from) else {
        return Ok(());
    };
    let interp = elf.interpreter.map(PathBuf::from);
    if !interp.as_deref().is_some_and(|i| i.starts_with(&lib)) {
        return Ok(());
    }
    let own = bin.join(format!("lib-{name}"));
    std::fs::create_dir_all(&own).map_err(|e| format!("mkdir {}: {e}", own.display()))?;
    for e in std::fs::read_dir(&lib).map_err(|e| format!("{}: {e}", lib.display()))? {
        let e = e.map_err(|e| e.to_string())?;
        std::fs::copy(e.path(), own.join(e.file_name()))
            .map_err(|err| format!("copy {}: {err}", e.path().display()))?;
    }
    for dir in [bin, own.as_path()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("chmod {}: {e}", dir.display()))?;
    }
    crate::vm::runtimes::point_at_libraries(binary, &own)
}
