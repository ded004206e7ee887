//! Unpacking an image layer: any byte stream is unpacked or refused, never a
//! panic, and nothing is ever written outside the destination.
#![no_main]
use libfuzzer_sys::fuzz_target;

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
});
