//! Unpacking an image layer: any byte stream is unpacked or refused, never a
//! panic, and nothing is ever written outside the destination. Then every
//! path a default `kcell run` of that root would create or mount on is
//! resolved inside it (rootfs::inroot): each either lands inside the root
//! or is refused, and nothing appears outside.
#![no_main]
use kcell::rootfs::inroot::{InRoot, Need};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile::Builder::new().prefix("kcell-fuzz-").tempdir() else {
        return;
    };
    let dest = dir.path().join("dest");
    let outside = dir.path().join("outside");
    let _ = std::fs::create_dir(&dest);
    let _ = std::fs::create_dir(&outside);
    let opts = kcell::image::layer::Options {
        whiteouts: true,
        privileged: false,
    };
    let _ = kcell::image::layer::unpack(data, "fuzz.tar", &dest, opts);
    let escaped = std::fs::read_dir(&outside).map(|d| d.count()).unwrap_or(0);
    assert_eq!(escaped, 0, "an entry was written outside the destination");
    let siblings = std::fs::read_dir(dir.path()).map(|d| d.count()).unwrap_or(0);
    assert_eq!(siblings, 2, "an entry was written next to the destination");

    let Ok(root) = InRoot::open(&dest) else {
        return;
    };
    let canonical = std::fs::canonicalize(&dest).unwrap_or(dest.clone());
    for (path, need) in kcell::spec::mount::default_destinations() {
        if let Ok(found) = root.ensure(Path::new(path), need) {
            let at = InRoot::host_path(&found).unwrap_or_default();
            assert!(
                at.starts_with(&canonical),
                "{path} resolved to {} outside the root",
                at.display()
            );
        }
    }
    let escaped = std::fs::read_dir(&outside).map(|d| d.count()).unwrap_or(0);
    assert_eq!(escaped, 0, "a default run's path was made outside the root");
    let siblings = std::fs::read_dir(dir.path()).map(|d| d.count()).unwrap_or(0);
    assert_eq!(siblings, 2, "a default run's path was made next to the root");
});
