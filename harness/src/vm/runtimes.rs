//! Runtime lines (vm/runtimes.toml): a runtime as a package of a Debian
//! suite, resolved to the suite's newest version, fetched with the
//! harness's own apt configuration of the suite and unpacked into kcell's
//! cache with the shared libraries of its dependencies from the same suite.
//! The binary's interpreter and DT_RPATH are pointed at that private copy
//! (patchelf), so a sid runc runs on a bookworm host, and in guests (whose
//! payload copies a program's closure at its host paths), without the
//! host's library directories or /etc/apt changing.
//!
//! DT_RPATH rather than DT_RUNPATH: ld.so applies an executable's RPATH to
//! the dependencies of its libraries too (libsystemd0's own libraries),
//! RUNPATH only to the executable's direct ones. Running the binary through
//! the private ld.so instead would break runc's re-exec of /proc/self/exe.

use super::apt::Apt;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The manifest file.
#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    /// The lines.
    #[serde(rename = "runtime")]
    pub lines: Vec<Line>,
}

/// One runtime line.
#[derive(Debug, Clone, Deserialize)]
pub struct Line {
    /// The runtime's name (runc, crun, runsc).
    pub name: String,
    /// The Debian suite (bookworm, trixie, sid).
    pub line: String,
    /// The package holding the binary.
    pub package: String,
    /// The binary's path inside the package, without the leading slash.
    pub binary: String,
}

impl Manifest {
    /// Reads and checks the manifest at `path`.
    pub fn load(path: &Path) -> Result<Manifest, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("read {}: {e}", path.display()))?;
        let m: Manifest = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        for (i, l) in m.lines.iter().enumerate() {
            if m.lines[..i]
                .iter()
                .any(|o| o.name == l.name && o.line == l.line)
            {
                return Err(format!(
                    "{}: {}@{} is listed twice",
                    path.display(),
                    l.name,
                    l.line
                ));
            }
        }
        Ok(m)
    }

    /// The line `name@line`, or an error naming the ones there are.
    pub fn find(&self, name: &str, line: &str) -> Result<&Line, String> {
        self.lines
            .iter()
            .find(|l| l.name == name && l.line == line)
            .ok_or_else(|| {
                let known: Vec<String> = self
                    .lines
                    .iter()
                    .map(|l| format!("{}@{}", l.name, l.line))
                    .collect();
                format!(
                    "runtime line '{name}@{line}' is not in vm/runtimes.toml (there are: {})",
                    known.join(", ")
                )
            })
    }
}

/// The manifest of runtime lines (data.rs says where).
pub fn manifest() -> Result<Manifest, String> {
    Manifest::load(&crate::data::vm_dir().join("runtimes.toml"))
}

/// A fetched line: its binary, ready to run, and the package's version.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The binary (patched to its private libraries).
    pub binary: PathBuf,
    /// The package's version, e.g. 1.3.6+ds1-1.
    pub version: String,
}

/// The packages `package` depends on, recursively (Depends and
/// Pre-Depends only), itself included.
fn closure_packages(apt: &Apt, package: &str) -> Result<Vec<String>, String> {
    let listing = apt.depends_recursive(package)?;
    let mut names: Vec<String> = listing
        .lines()
        .filter(|l| !l.starts_with(' ') && !l.starts_with('<') && !l.trim().is_empty())
        .map(|l| l.trim().to_string())
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}

/// Fetches `line` into `cache` (once per version) and returns its binary.
pub fn fetch(cache: &Path, line: &Line) -> Result<Fetched, String> {
    let apt = Apt::new(cache, &line.line)?;
    apt.update()?;
    let version = apt.candidate(&line.package)?.ok_or_else(|| {
        format!(
            "the {} suite has no package {} (runtime line {}@{})",
            line.line, line.package, line.name, line.line
        )
    })?;
    let safe: String = version
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let dir = cache
        .join("runtimes")
        .join(format!("{}-{}-{safe}", line.name, line.line));
    let binary = dir.join("bin").join(&line.name);
    if dir.join("ready").is_file() && binary.is_file() {
        return Ok(Fetched { binary, version });
    }
    eprintln!(
        "kcell: fetching runtime {}@{} ({} {version}) with its libraries into {}",
        line.name,
        line.line,
        line.package,
        dir.display()
    );
    let staging = dir.with_extension(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    // Unpacked aside, patched to the final directory's libraries, moved
    // there, then run once: a half-made line is never taken for ready.
    let made = unpack(&apt, line, &staging, &dir.join("lib")).and_then(|()| {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&staging, &dir)
            .map_err(|e| format!("rename {} to {}: {e}", staging.display(), dir.display()))
    });
    if let Err(e) = made.and_then(|()| runs(&binary)) {
        let _ = std::fs::remove_dir_all(&staging);
        let _ = std::fs::remove_dir_all(&dir);
        return Err(format!("runtime line {}@{}: {e}", line.name, line.line));
    }
    std::fs::write(dir.join("ready"), &version)
        .map_err(|e| format!("write {}: {e}", dir.join("ready").display()))?;
    Ok(Fetched { binary, version })
}

/// Downloads the line's package and its dependencies into `dir`, unpacks
/// them, gathers the shared libraries into `dir/lib` and the binary into
/// `dir/bin`, patched to find them in `final_lib` (where `dir/lib` will be).
fn unpack(apt: &Apt, line: &Line, dir: &Path, final_lib: &Path) -> Result<(), String> {
    let debs = dir.join("debs");
    let root = dir.join("root");
    let lib = dir.join("lib");
    let bin = dir.join("bin");
    for d in [&debs, &root, &lib, &bin] {
        std::fs::create_dir_all(d).map_err(|e| format!("mkdir {}: {e}", d.display()))?;
    }
    for p in closure_packages(apt, &line.package)? {
        let Some(v) = apt.candidate(&p)? else {
            continue;
        };
        let own = debs.join(&p);
        std::fs::create_dir_all(&own).map_err(|e| format!("mkdir {}: {e}", own.display()))?;
        let deb = apt.download(&p, &v, &own)?;
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
    }
    // Every shared object of the unpacked packages, by its file name
    // (symlinks resolved), and the interpreter.
    for libdir in [
        "lib/x86_64-linux-gnu",
        "usr/lib/x86_64-linux-gnu",
        "lib64",
        "usr/lib64",
    ] {
        let Ok(entries) = std::fs::read_dir(root.join(libdir)) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.contains(".so") && !lib.join(&name).exists() {
                let real = std::fs::canonicalize(e.path())
                    .map_err(|err| format!("{}: {err}", e.path().display()))?;
                if real.is_file() {
                    std::fs::copy(&real, lib.join(&name))
                        .map_err(|err| format!("copy {}: {err}", real.display()))?;
                }
            }
        }
    }
    let from = root.join(&line.binary);
    let binary = bin.join(&line.name);
    std::fs::copy(&from, &binary).map_err(|e| format!("copy {}: {e}", from.display()))?;
    if lib.join(LOADER).is_file() {
        point_at_libraries(&binary, final_lib)?;
    }
    // Only bin/ and lib/ stay: the packages' other files are not needed.
    let _ = std::fs::remove_dir_all(&debs);
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}

/// The dynamic loader's file name in a private library directory.
pub const LOADER: &str = "ld-linux-x86-64.so.2";

/// Points `binary`'s interpreter at `lib`'s loader and its DT_RPATH at
/// `lib` (patchelf).
pub fn point_at_libraries(binary: &Path, lib: &Path) -> Result<(), String> {
    run(Command::new("patchelf")
        .arg("--set-interpreter")
        .arg(lib.join(LOADER))
        .arg("--force-rpath")
        .arg("--set-rpath")
        .arg(lib)
        .arg(binary))
}

/// Checks the binary runs (`--version`).
fn runs(binary: &Path) -> Result<(), String> {
    let out = Command::new(binary)
        .arg("--version")
        .output()
        .map_err(|e| format!("{} --version: {e}", binary.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} --version failed: {}",
            binary.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| {
        format!(
            "{:?}: {e} (scripts/install-deps installs it)",
            cmd.get_program()
        )
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_names_each_line_once_and_finds_them() {
        let m = manifest().expect("vm/runtimes.toml");
        assert_eq!(m.find("runc", "sid").expect("runc@sid").package, "runc");
        let e = m.find("runc", "potato").unwrap_err();
        assert!(e.contains("'runc@potato'") && e.contains("runc@sid"), "{e}");
    }
}
