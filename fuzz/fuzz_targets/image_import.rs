//! Importing an image archive (docker save or OCI layout tar): any bytes
//! give images or an error, never a panic, and a failed import leaves the
//! store without images, layers or temporary directories.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile::Builder::new().prefix("kcell-fuzz-").tempdir() else {
        return;
    };
    let archive = dir.path().join("image.tar");
    if std::fs::write(&archive, data).is_err() {
        return;
    }
    let store = kcell::image::store::Store::at(dir.path().join("store"));
    if store.import(&archive).is_err() {
        assert!(store.images().is_empty(), "a failed import left an image");
        assert!(store.layers().is_empty(), "a failed import left a layer");
        let tmp = dir.path().join("store/tmp");
        let left = std::fs::read_dir(&tmp).map(|d| d.count()).unwrap_or(0);
        assert_eq!(left, 0, "a failed import left a temporary directory");
    }
});
