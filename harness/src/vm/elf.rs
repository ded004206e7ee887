//! A program's shared-library closure, read from its ELF as ldd would
//! (without running it): the interpreter, every DT_NEEDED library found
//! through the RUNPATH and the system's library directories, recursively.
//! A static binary has none. What goes into a guest with the program.

use std::path::{Path, PathBuf};

/// Where the system's libraries are looked for, after a RUNPATH.
const LIB_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
];

struct Dynamic {
    interp: Option<String>,
    needed: Vec<String>,
    runpath: Vec<String>,
    rpath: Vec<String>,
}

fn read(path: &Path) -> Result<Dynamic, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let elf = goblin::elf::Elf::parse(&bytes)
        .map_err(|e| format!("{} is not an ELF file: {e}", path.display()))?;
    let origin = path
        .parent()
        .unwrap_or(Path::new("/"))
        .display()
        .to_string();
    let dirs = |list: &[&str]| -> Vec<String> {
        list.iter()
            .flat_map(|r| r.split(':'))
            .map(|r| r.replace("$ORIGIN", &origin))
            .collect()
    };
    Ok(Dynamic {
        interp: elf.interpreter.map(String::from),
        needed: elf.libraries.iter().map(|s| s.to_string()).collect(),
        runpath: dirs(&elf.runpaths),
        rpath: dirs(&elf.rpaths),
    })
}

/// The files `program` needs to run, as (path in the guest = path on the
/// host, the file to copy): its interpreter and libraries. Empty for a
/// static binary; an error names a library that cannot be found.
pub fn closure(program: &Path) -> Result<Vec<(String, PathBuf)>, String> {
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    let mut todo = vec![program.to_path_buf()];
    let mut seen: Vec<PathBuf> = Vec::new();
    // As ld.so searches: an object's DT_RPATH and the executable's (both
    // only when the object has no DT_RUNPATH), its DT_RUNPATH, the system's
    // directories. A runtime line's executable carries the RPATH of its
    // private libraries (vm/runtimes.rs), which its libraries' own
    // dependencies are found in too.
    let program_rpath = read(program)?.rpath;
    while let Some(file) = todo.pop() {
        if seen.contains(&file) {
            continue;
        }
        seen.push(file.clone());
        let d = read(&file)?;
        if let Some(interp) = d.interp {
            if !out.iter().any(|(p, _)| *p == interp) {
                let real = std::fs::canonicalize(&interp)
                    .map_err(|e| format!("interpreter {interp}: {e}"))?;
                out.push((interp, real));
            }
        }
        for lib in d.needed {
            if out
                .iter()
                .any(|(p, _)| Path::new(p).file_name() == Some(lib.as_ref()))
            {
                continue;
            }
            let inherited: &[String] = if d.runpath.is_empty() {
                &program_rpath
            } else {
                &[]
            };
            let own_rpath: &[String] = if d.runpath.is_empty() { &d.rpath } else { &[] };
            let found = own_rpath
                .iter()
                .chain(inherited)
                .chain(&d.runpath)
                .map(String::as_str)
                .chain(LIB_DIRS.iter().copied())
                .map(|dir| Path::new(dir).join(&lib))
                .find(|p| p.exists())
                .ok_or_else(|| {
                    format!(
                        "{} needs {lib}, found in none of {}",
                        file.display(),
                        LIB_DIRS.join(", ")
                    )
                })?;
            let real =
                std::fs::canonicalize(&found).map_err(|e| format!("{}: {e}", found.display()))?;
            out.push((found.display().to_string(), real.clone()));
            todo.push(real);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_program_needs_libc_and_a_static_one_nothing() {
        let sh = closure(Path::new("/bin/sh")).expect("closure of /bin/sh");
        assert!(sh.iter().any(|(p, _)| p.contains("libc.so")), "{sh:?}");
        assert!(sh.iter().any(|(p, _)| p.contains("ld-linux")), "{sh:?}");
        // The test binary itself is static (crt-static).
        let me = std::env::current_exe().expect("exe");
        assert_eq!(closure(&me).expect("closure"), Vec::new());
    }
}
