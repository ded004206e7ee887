//! Sets `kcell_unprivileged` when the package is built by a user other
//! than root. The integration tests that need root (containers, cgroups,
//! mounts, links) are then compiled as ignored, with that reason, rather
//! than returning early and reporting ok for checking nothing; built as
//! root, they run, and fail loudly if run without root after all. The
//! effective uid is read from /proc/self/status (no dependency for this).
//!
//! It also writes the list of the suite's data files (the cases, the
//! kernel and runtime manifests) for `include_bytes!`, so an installed
//! `kcell-conformance` carries the cases it was built with (data.rs).
fn main() {
    embed_data();
    println!("cargo::rustc-check-cfg=cfg(kcell_unprivileged)");
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let effective_uid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2));
    if effective_uid != Some("0") {
        println!("cargo::rustc-cfg=kcell_unprivileged");
    }
}

/// `$OUT_DIR/data_files.rs`: `(path under the checkout, bytes)` of every
/// file of cases/ and of vm/'s manifests; empty when they are not beside
/// this crate (a copy of the crate alone).
fn embed_data() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut entries = Vec::new();
    for dir in ["cases", "vm"] {
        let at = root.join(dir);
        println!("cargo::rerun-if-changed={}", at.display());
        let Ok(read) = std::fs::read_dir(&at) else {
            continue;
        };
        let mut files: Vec<std::path::PathBuf> = read
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        for f in files {
            let name = f.file_name().map(|n| n.to_string_lossy().to_string());
            if let (Some(name), Ok(abs)) = (name, f.canonicalize()) {
                println!("cargo::rerun-if-changed={}", abs.display());
                entries.push(format!(
                    "    ({:?}, include_bytes!({:?})),",
                    format!("{dir}/{name}"),
                    abs.display().to_string()
                ));
            }
        }
    }
    let text = format!(
        "/// The suite's data files: (path under the checkout, bytes).\npub const FILES: &[(&str, &[u8])] = &[\n{}\n];\n",
        entries.join("\n")
    );
    let out =
        std::path::Path::new(&std::env::var("OUT_DIR").unwrap_or_default()).join("data_files.rs");
    if let Err(e) = std::fs::write(&out, text) {
        println!("cargo::warning=writing {}: {e}", out.display());
    }
}
