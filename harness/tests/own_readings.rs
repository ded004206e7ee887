//! The harness's own readings, each shown to fail when its subject is
//! wrong (issue 26): lo's flags and MTU (the harness's ioctls), the
//! nf_tables listing (its own netlink dump) in the census, "bridge and NAT
//! table gone" (the kernel's index of the name and that dump), and an
//! image's layer path and digests (the tar the harness wrote, checked
//! against what `kcell` lists). The v1 controllers read from /proc/cgroups
//! are vm::guest's unit test. None of these use the runtime's code.
//!
//! Each network test runs in a thread that made a network namespace of its
//! own (unshare(CLONE_NEWNET) is per thread), and the `ip` and `nft`
//! commands it starts inherit it: nothing is left on the host. Root only.

mod support;

use kcell_harness::fixture::{self, Context};
use kcell_harness::observe::{netdev, nftables};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "network namespaces need root: this test was built as root and runs without it"
    );
}

/// Runs `f` in a thread of its own, in a new network namespace.
fn in_new_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        f()
    })
    .join()
    .expect("the namespace's thread")
}

fn sh(cmd: &str) {
    let ok = Command::new("sh")
        .args(["-c", cmd])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "{cmd}");
}

fn context(kcell: PathBuf, store: &Path) -> Context {
    Context {
        rootfs: PathBuf::new(),
        agent: PathBuf::from(env!("CARGO_BIN_EXE_kcell-agent")),
        store: store.to_path_buf(),
        kcell,
    }
}

#[test]
#[cfg_attr(kcell_unprivileged, ignore = "needs root: network namespaces")]
fn lo_reads_down_in_a_new_netns_then_up_and_its_mtu_as_set() {
    root();
    let (before, after, mtu) = in_new_netns(|| {
        let before = netdev::is_up("lo").expect("lo's flags");
        netdev::set_up("lo").expect("set lo up");
        let after = netdev::is_up("lo").expect("lo's flags");
        netdev::set_mtu("lo", 1234).expect("set lo's MTU");
        (before, after, netdev::mtu("lo").expect("lo's MTU"))
    });
    assert!(!before, "a new network namespace's lo is down");
    assert!(after, "and up once set up");
    assert_eq!(mtu, 1234);
}

#[test]
#[cfg_attr(kcell_unprivileged, ignore = "needs root: network namespaces")]
fn the_census_sees_a_table_it_did_not_make() {
    root();
    let (before, during, after) = in_new_netns(|| {
        let store = tempfile::tempdir().expect("tempdir");
        let census = fixture::make(
            fixture::FixtureName::Census,
            &context(PathBuf::new(), store.path()),
        )
        .expect("census");
        let now = || census.observe()[0].1.as_str().unwrap_or("").to_string();
        let before = now();
        sh("nft add table ip kcell-leak");
        let during = now();
        sh("nft delete table ip kcell-leak");
        (before, during, now())
    });
    assert!(!before.contains("ip kcell-leak"), "{before}");
    assert!(during.contains("nft_tables=[ip kcell-leak]"), "{during}");
    assert_eq!(before, after, "and not once it is gone");
}

#[test]
#[cfg_attr(kcell_unprivileged, ignore = "needs root: network namespaces")]
fn the_bridge_fixture_sees_a_link_and_a_table_and_their_absence() {
    root();
    let seen = in_new_netns(|| {
        let store = tempfile::tempdir().expect("tempdir");
        let bridge = fixture::make(
            fixture::FixtureName::TestBridge,
            &context(PathBuf::new(), store.path()),
        )
        .expect("test_bridge");
        let name = bridge
            .vars()
            .into_iter()
            .find(|(k, _)| *k == "name")
            .map(|(_, v)| v)
            .expect("a name");
        let observe = || {
            let o = bridge.observe();
            (o[0].1.clone(), o[1].1.clone())
        };
        let absent = observe();
        sh(&format!(
            "ip link add {name} type bridge && nft add table ip {name}"
        ));
        let present = observe();
        sh(&format!("ip link del {name} && nft delete table ip {name}"));
        (absent, present, observe(), nftables::exists(&name))
    });
    let (absent, present, gone, listed) = seen;
    let both = |b: bool| (serde_json::json!(b), serde_json::json!(b));
    assert_eq!(absent, both(false), "nothing there yet");
    assert_eq!(present, both(true), "the link and the table are seen");
    assert_eq!(gone, both(false), "and seen gone");
    assert_eq!(listed, Ok(false));
}

#[test]
#[cfg_attr(kcell_unprivileged, ignore = "needs root: kcell's image store")]
fn the_image_fixture_finds_its_layer_by_its_own_digest_or_fails() {
    root();
    let work = tempfile::tempdir().expect("tempdir");
    let kcell = support::kcell();
    let rootfs = work.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("etc")).expect("mkdir");
    std::fs::write(rootfs.join("etc/kcell-ovl"), "x").expect("write");
    let store = work.path().join("store");
    let mut ctx = context(kcell, &store);
    ctx.rootfs = rootfs;

    let image = fixture::make(fixture::FixtureName::Image, &ctx).expect("the image fixture");
    let var = |k: &str| {
        image
            .vars()
            .into_iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v)
            .unwrap_or_default()
    };
    let layer_dir = PathBuf::from(var("layer_dir"));
    assert!(
        layer_dir.join("etc/kcell-ovl").is_file(),
        "the layer directory holds the layer's file: {}",
        layer_dir.display()
    );
    drop(image);

    // A kcell that says yes to everything and stores nothing.
    let liar = work.path().join("liar");
    std::fs::write(&liar, "#!/bin/sh\nexit 0\n").expect("write");
    std::fs::set_permissions(&liar, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    ctx.kcell = liar;
    let refused = fixture::make(fixture::FixtureName::Image, &ctx)
        .err()
        .unwrap_or_default();
    assert!(
        refused.contains("does not list the layer the harness wrote (sha256:"),
        "{refused}"
    );
}
