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

/// Whether this test binary runs in a `kcell vm` guest (which sets
/// KCELL_VM): the guest carries the binary and its libraries, not the
/// host's clients and servers, so a test that drives those says so and
/// checks nothing there; `cargo test` on the host runs it.
#[allow(dead_code)] // not every test binary drives host tools
pub fn in_kcell_vm(tools: &str) -> bool {
    match std::env::var("KCELL_VM") {
        Ok(guest) => {
            eprintln!(
                "skipped in the kcell vm guest {guest}: {tools} are the host's, not the guest's; run this test on the host"
            );
            true
        }
        Err(_) => false,
    }
}
