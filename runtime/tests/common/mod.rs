//! What the runtime's integration tests share.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The kcell binary under test.
pub const KCELL: &str = env!("CARGO_BIN_EXE_kcell");

/// A busybox root at `dir/name`, made by `kcell rootfs busybox`.
pub fn busybox_root(dir: &Path, name: &str) -> PathBuf {
    let root = dir.join(name);
    let built = Command::new(KCELL)
        .args(["rootfs", "busybox"])
        .arg(&root)
        .output()
        .expect("kcell rootfs busybox");
    assert!(built.status.success(), "kcell rootfs busybox: {built:?}");
    root
}
