//! The host side of a guest that goes wrong: a kernel panic, an agent that
//! hangs inside a case, a console flood. Each must end as a target error
//! with the reason and the console's tail, quickly, never as a pass or a
//! hang of the test run. Boots the 6.1 cloud kernel (fetched into the cache
//! like the matrix does) with `kcell.fault=` on its command line.

use kcell_harness::vm::{self, initramfs, kernel, qemu};
use std::path::{Path, PathBuf};
use std::time::Duration;

struct Guest {
    kernel: kernel::Kernel,
    initrd: PathBuf,
}

fn guest() -> Guest {
    let manifest =
        kernel::Manifest::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../vm/kernels.toml"))
            .expect("manifest");
    let spec = manifest
        .kernels
        .iter()
        .find(|k| k.id == "deb-6.1-cloud")
        .expect("deb-6.1-cloud in the manifest");
    let cache = vm::cache_dir();
    let kernel = kernel::fetch(spec, &cache).expect("fetch the 6.1 cloud kernel");
    let busybox = kcell::rootfs::busybox::locate(&cache).expect("static busybox");
    let inputs = initramfs::Inputs {
        kernel: &kernel,
        agent: Path::new(env!("CARGO_BIN_EXE_kcell-agent")),
        busybox: &busybox,
        cases: &Path::new(env!("CARGO_MANIFEST_DIR")).join("../cases"),
        early: &manifest.modules.early,
        late: &manifest.modules.load,
        extra: &[],
    };
    let initrd = initramfs::build(&inputs, &cache.join("initramfs")).expect("initramfs");
    Guest { kernel, initrd }
}

fn boot_with(fault: &str, limits: qemu::Limits) -> qemu::Boot {
    let g = guest();
    let work = tempfile::Builder::new()
        .prefix("kcell-fault-")
        .tempdir()
        .expect("tempdir");
    let config = qemu::BootConfig {
        kernel: g.kernel.image.clone(),
        initrd: g.initrd,
        cmdline: format!("{} kcell.fault={fault}", qemu::cmdline("fault", "v1")),
        disk: None,
        console_log: work.path().join("console.log"),
        verdict_log: work.path().join("verdicts.log"),
        accel: qemu::Accel::Tcg,
        cpus: 1,
        memory_mib: 512,
        firmware: qemu::QBOOT.iter().map(PathBuf::from).find(|p| p.exists()),
    };
    qemu::boot(&config, limits, &mut |_| {})
}

fn limits() -> qemu::Limits {
    qemu::Limits {
        boot: Duration::from_secs(60),
        case_slack: Duration::from_secs(5),
        console_bytes: 4 << 20,
    }
}

#[test]
fn a_panicking_guest_is_an_error_with_the_panic_in_the_console_tail() {
    let boot = boot_with("panic", limits());
    assert!(boot.verdicts.is_empty());
    match &boot.ending {
        qemu::Ending::Died(why) => assert!(why.contains("kernel panic"), "{why}"),
        other => panic!("expected a death, got {other:?}"),
    }
    assert!(
        boot.console_tail.contains("Kernel panic"),
        "console tail: {}",
        boot.console_tail
    );
}

#[test]
fn a_hanging_guest_is_killed_by_the_watchdog() {
    let boot = boot_with("hang", limits());
    match &boot.ending {
        qemu::Ending::Killed(why) => assert!(why.contains("past its timeout"), "{why}"),
        other => panic!("expected the watchdog, got {other:?}"),
    }
    assert_eq!(boot.in_progress.as_deref(), Some("FAULT-HANG"));
    assert!(
        boot.console_tail.contains("injecting fault: hang"),
        "{}",
        boot.console_tail
    );
    // 1 s case timeout + 5 s slack, plus the boot: far below the default minutes.
    assert!(boot.seconds < 40.0, "took {} s", boot.seconds);
}

#[test]
fn a_flooding_guest_is_killed_at_the_console_cap() {
    let boot = boot_with("flood", limits());
    match &boot.ending {
        qemu::Ending::Killed(why) => assert!(why.contains("flooding"), "{why}"),
        other => panic!("expected the console cap, got {other:?}"),
    }
    assert!(boot
        .console_tail
        .contains("flooding the console on purpose"));
}
