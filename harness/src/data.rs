//! Where the suite's data is: the case files and the manifests of kernels
//! and runtime lines. Each is taken from, in order: its variable
//! (KCELL_CASES_DIR, KCELL_VM_DIR; `kcell-conformance --cases/--vm-dir`
//! set them), the checkout this harness was built from, and the copy built
//! into the binary (an installed `kcell-conformance` whose checkout is gone),
//! unpacked once into the cache.

use sha2::Digest;
use std::path::{Path, PathBuf};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/data_files.rs"));
}

/// The variable naming the cases directory.
pub const CASES_ENV: &str = "KCELL_CASES_DIR";
/// The variable naming the directory of kernels.toml, kernel.config and runtimes.toml.
pub const VM_ENV: &str = "KCELL_VM_DIR";

/// The cache directory: KCELL_CACHE, else $XDG_CACHE_HOME/kcell, else ~/.cache/kcell.
pub fn cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("KCELL_CACHE") {
        return PathBuf::from(p);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("kcell")
}

/// The checkout this harness was built from, while it is still there.
pub fn checkout() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    root.join("cases/differences.toml")
        .is_file()
        .then(|| root.canonicalize().unwrap_or(root))
}

/// The case files' directory.
pub fn cases_dir() -> PathBuf {
    resolve(CASES_ENV, "cases")
}

/// The directory of kernels.toml, kernel.config and runtimes.toml.
pub fn vm_dir() -> PathBuf {
    resolve(VM_ENV, "vm")
}

fn resolve(var: &str, sub: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(var).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(root) = checkout() {
        return root.join(sub);
    }
    match unpacked(&cache_dir()) {
        Ok(dir) => dir.join(sub),
        Err(e) => {
            eprintln!("kcell-conformance: {e}");
            PathBuf::from(sub)
        }
    }
}

/// The built-in copy, unpacked under `cache/data-<digest>` (once; the
/// digest names the content, so two builds never share a directory).
pub fn unpacked(cache: &Path) -> Result<PathBuf, String> {
    if embedded::FILES.is_empty() {
        return Err("this build carries no cases (built without its checkout): give --cases DIR and --vm-dir DIR".into());
    }
    let mut h = sha2::Sha256::new();
    for (name, bytes) in embedded::FILES {
        h.update(name.as_bytes());
        h.update(bytes);
    }
    let digest = format!("{:x}", h.finalize());
    let dir = cache.join(format!("data-{}", &digest[..16]));
    if dir.join(".complete").is_file() {
        return Ok(dir);
    }
    let staging = cache.join(format!("data-tmp-{}", crate::text::unique_id()));
    let written = write_all(&staging).and_then(|()| {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&staging, &dir)
            .map_err(|e| format!("rename {} to {}: {e}", staging.display(), dir.display()))
    });
    if written.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    written.map(|()| dir)
}

fn write_all(dir: &Path) -> Result<(), String> {
    for (name, bytes) in embedded::FILES {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("mkdir {}: {e}", parent.display()))?;
        }
        std::fs::write(&path, bytes).map_err(|e| format!("write {}: {e}", path.display()))?;
    }
    let done = dir.join(".complete");
    std::fs::write(&done, b"").map_err(|e| format!("write {}: {e}", done.display()))
}

/// kcell's binary built from the checkout by `cargo` into the directory
/// of `beside` (the agent's: the same target and profile), for the
/// conformance run and the tests of this repository. kcell is a runtime
/// the harness judges, not a dependency: it is built as a program.
pub fn build_kcell(cargo: &Path, beside: &Path) -> Result<PathBuf, String> {
    let root = checkout().ok_or("no checkout to build kcell from: give its binary with --kcell")?;
    let status = std::process::Command::new(cargo)
        .args(["build", "-q", "-p", "kcell", "--bins"])
        .current_dir(&root)
        .status()
        .map_err(|e| format!("spawn {} build -p kcell: {e}", cargo.display()))?;
    let built = beside.with_file_name("kcell");
    if !status.success() {
        return Err(format!(
            "cargo build -p kcell in {}: {status}",
            root.display()
        ));
    }
    if !built.is_file() {
        return Err(format!(
            "cargo built kcell, but not at {} (beside {})",
            built.display(),
            beside.display()
        ));
    }
    Ok(built)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_copy_holds_every_case_file_of_the_checkout() {
        let cache = tempfile::tempdir().expect("tempdir");
        let dir = unpacked(cache.path()).expect("unpacked");
        let root = checkout().expect("built from a checkout");
        assert_eq!(
            crate::text::sorted_names(&dir.join("cases")),
            crate::text::sorted_names(&root.join("cases"))
        );
        assert!(dir.join("vm/kernels.toml").is_file());
        // Unpacked once: the second call finds it.
        assert_eq!(unpacked(cache.path()).expect("again"), dir);
    }
}
