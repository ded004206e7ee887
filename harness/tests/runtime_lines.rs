//! A runtime line fetched from a newer Debian suite runs here with its own
//! libraries, and fetching it changes nothing of the host's: /etc/apt and
//! the host's library directories are byte for byte what they were
//! (issue 30). Fetches runc@sid into a cache of the test's own, so the
//! whole way (the suite's lists, the packages, the closure, patchelf) is
//! taken every time. Needs root (apt's lists as root) and the network.

use kcell_harness::vm::runtimes;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;

/// Every file under `dir`: its size, mode and, for regular files under
/// /etc/apt, the SHA-256 of its bytes (the library directories are large:
/// size, mode and mtime say whether a file was replaced).
fn snapshot(dir: &Path, hash: bool, out: &mut BTreeMap<String, String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        use std::os::unix::fs::MetadataExt;
        let mut v = format!("{} {:o} {}", m.size(), m.mode(), m.mtime());
        if m.is_dir() {
            snapshot(&p, hash, out);
        } else if m.file_type().is_symlink() {
            v = format!("-> {:?}", std::fs::read_link(&p).ok());
        } else if hash {
            let bytes = std::fs::read(&p).unwrap_or_default();
            v.push_str(&format!(" {:x}", Sha256::digest(&bytes)));
        }
        out.insert(p.display().to_string(), v);
    }
}

fn host_state() -> BTreeMap<String, String> {
    let mut s = BTreeMap::new();
    snapshot(Path::new("/etc/apt"), true, &mut s);
    for d in [
        "/lib/x86_64-linux-gnu",
        "/usr/lib/x86_64-linux-gnu",
        "/lib64",
        "/usr/lib64",
    ] {
        snapshot(Path::new(d), false, &mut s);
    }
    s
}

#[test]
#[cfg_attr(kcell_unprivileged, ignore = "needs root: apt's lists and packages")]
fn sid_runc_runs_with_its_own_libraries_and_the_host_is_unchanged() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "fetching a runtime line needs root: this test was built as root and runs without it"
    );
    let before = host_state();
    let cache = tempfile::Builder::new()
        .prefix("kcell-lines-")
        .tempdir()
        .expect("tempdir");
    let line = runtimes::manifest()
        .and_then(|m| m.find("runc", "sid").cloned())
        .expect("runc@sid in vm/runtimes.toml");
    let fetched = runtimes::fetch(cache.path(), &line).expect("fetch runc@sid");
    let out = std::process::Command::new(&fetched.binary)
        .arg("--version")
        .output()
        .expect("run the fetched runc");
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && version.starts_with("runc version 1."),
        "{}: {version}",
        fetched.binary.display()
    );
    // Its loader and libraries are the cache's, not the host's.
    let bytes = std::fs::read(&fetched.binary).expect("read");
    let elf = goblin::elf::Elf::parse(&bytes).expect("ELF");
    let interp = elf.interpreter.unwrap_or_default();
    assert!(
        interp.starts_with(&cache.path().display().to_string()),
        "interpreter {interp}"
    );
    assert!(elf
        .rpaths
        .iter()
        .all(|r| r.starts_with(&cache.path().display().to_string())));
    let after = host_state();
    let changed: Vec<&String> = before
        .iter()
        .filter(|(k, v)| after.get(*k) != Some(*v))
        .map(|(k, _)| k)
        .chain(after.keys().filter(|k| !before.contains_key(*k)))
        .collect();
    assert!(changed.is_empty(), "fetching changed the host: {changed:?}");
}
