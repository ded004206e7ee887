//! What the runtime's integration tests share.

pub mod oci;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The kcell binary under test.
pub const KCELL: &str = env!("CARGO_BIN_EXE_kcell");

/// A busybox root at `dir/name`, made by `kcell rootfs busybox`.
#[allow(dead_code)] // not every test binary makes a root
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

/// Fails the test when it runs in a `kcell vm` guest (which sets
/// KCELL_VM): the guest carries the binary and its libraries, not the
/// host's clients and servers, so the test could check nothing there and
/// must not report ok. Run it on the host (`cargo test` does); in a guest,
/// name the test binaries that need no host tools (.ci/run does).
#[allow(dead_code)] // not every test binary drives host tools
pub fn on_the_host_only(tools: &str) {
    if let Ok(guest) = std::env::var("KCELL_VM") {
        panic!(
            "cannot run in the kcell vm guest {guest}: {tools} are the host's, not the guest's; run this test on the host"
        );
    }
}
