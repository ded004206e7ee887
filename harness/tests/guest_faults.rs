//! The host side of a guest that goes wrong: a kernel panic, an agent that
//! hangs inside a case, a console flood. Each must end as a target error
//! with the reason and the console's tail, quickly, never as a pass or a
//! hang of the test run. Boots the 6.1 cloud kernel (fetched into the cache
//! like the matrix does) with `kcell.fault=` on its command line.

mod support;

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
    let busybox = vm::busybox::locate(&cache).expect("static busybox");
    let kcell = support::kcell();
    let inputs = initramfs::Inputs {
        kernel: &kernel,
        agent: Path::new(env!("CARGO_BIN_EXE_kcell-agent")),
        kcell: Some(&kcell),
        busybox: &busybox,
        cases: &kcell_harness::data::cases_dir(),
        early: &manifest.modules.early,
        late: &manifest.modules.load,
        extra: &[],
    };
    let initrd = initramfs::build(&inputs, &cache.join("initramfs")).expect("initramfs");
    Guest { kernel, initrd }
}

fn boot_with(fault: &str, limits: qemu::Limits) -> qemu::Boot {
    let g = guest();
    // A booting process that is SIGKILLed cannot remove its own directory:
    // its killer names where it goes (KCELL_FAULT_WORK) and removes it.
    let base = std::env::var_os("KCELL_FAULT_WORK")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let work = tempfile::Builder::new()
        .prefix("kcell-fault-")
        .tempdir_in(base)
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

/// The QEMU processes whose parent is `pid`.
fn qemu_children(pid: u32) -> Vec<i32> {
    procfs::process::all_processes()
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|p| {
            let stat = p.stat().ok()?;
            (stat.ppid == pid as i32 && stat.comm.starts_with("qemu-system")).then_some(p.pid)
        })
        .collect()
}

/// The process that boots the guest, killed with SIGKILL mid-guest, takes
/// its QEMU with it within 2 s (PR_SET_PDEATHSIG on QEMU): nothing is left
/// running on a core. The test runs itself as that process: with
/// KCELL_FAULT_CHILD set it only boots a guest that hangs in a case.
#[test]
fn a_runner_killed_mid_guest_leaves_no_qemu() {
    if std::env::var_os("KCELL_FAULT_CHILD").is_some() {
        let long = qemu::Limits {
            boot: Duration::from_secs(600),
            case_slack: Duration::from_secs(600),
            console_bytes: 4 << 20,
        };
        let _ = boot_with("hang", long);
        return;
    }
    // The kernel and initramfs are fetched and built here, not in the child.
    let _ = guest();
    let work = tempfile::Builder::new()
        .prefix("kcell-fault-killed-")
        .tempdir()
        .expect("tempdir");
    let mut child = std::process::Command::new(std::env::current_exe().expect("exe"))
        .args([
            "a_runner_killed_mid_guest_leaves_no_qemu",
            "--exact",
            "--nocapture",
        ])
        .env("KCELL_FAULT_CHILD", "1")
        .env("KCELL_FAULT_WORK", work.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn the booting process");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let qemu = loop {
        if let Some(q) = qemu_children(child.id()).first() {
            break *q;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the child started no QEMU within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Let it get into the guest.
    std::thread::sleep(Duration::from_secs(2));
    child.kill().expect("SIGKILL the booting process");
    let killed = std::time::Instant::now();
    let _ = child.wait();
    while Path::new(&format!("/proc/{qemu}")).exists()
        && procfs::process::Process::new(qemu)
            .and_then(|p| p.stat())
            .is_ok_and(|s| s.state != 'Z')
    {
        if killed.elapsed() > Duration::from_secs(2) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(qemu),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("QEMU {qemu} outlived the process that booted it by more than 2 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "QEMU gone {:.0} ms after its parent was killed",
        killed.elapsed().as_secs_f64() * 1000.0
    );
}

/// Boots a v2 guest that runs kcell's CG-MEM-3, with `kcell.fault=` when
/// given; returns its verdict of the case.
fn swap_case_in_a_v2_guest(fault: Option<&str>) -> kcell_harness::verdict::Verdict {
    let g = guest();
    let work = tempfile::Builder::new()
        .prefix("kcell-fault-swap-")
        .tempdir()
        .expect("tempdir");
    let plan = vm::Plan {
        runtimes: vec![("kcell".into(), PathBuf::from(initramfs::guest_paths::OCI))],
        trials: vec!["kcell::CG-MEM-3".into()],
        program: None,
    };
    let initrd = work.path().join("initrd");
    let plan_json = serde_json::to_vec(&plan).expect("plan");
    initramfs::with_files(
        &g.initrd,
        &[(initramfs::guest_paths::PLAN, &plan_json)],
        &initrd,
    )
    .expect("initramfs with the plan");
    let fault = fault
        .map(|f| format!(" kcell.fault={f}"))
        .unwrap_or_default();
    let config = qemu::BootConfig {
        kernel: g.kernel.image.clone(),
        initrd,
        cmdline: format!("{}{fault}", qemu::cmdline("deb-6.1-cloud/v2", "v2")),
        disk: None,
        console_log: work.path().join("console.log"),
        verdict_log: work.path().join("verdicts.log"),
        accel: qemu::Accel::Tcg,
        cpus: 1,
        memory_mib: 1024,
        firmware: qemu::QBOOT.iter().map(PathBuf::from).find(|p| p.exists()),
    };
    let limits = qemu::Limits {
        boot: Duration::from_secs(60),
        case_slack: Duration::from_secs(30),
        console_bytes: 4 << 20,
    };
    let boot = qemu::boot(&config, limits, &mut |_| {});
    boot.verdicts
        .into_iter()
        .find(|v| v.case == "CG-MEM-3")
        .unwrap_or_else(|| {
            panic!(
                "no CG-MEM-3 verdict: {:?}\n{}",
                boot.ending, boot.console_tail
            )
        })
}

/// A v2 guest that lost its zram swap (kcell.fault=no-swap) turns CG-MEM-3
/// into a skip. The expected skips fail the run, naming the case and the
/// probe's reason, and the baseline gate counts the pass -> skip of the
/// last good matrix as a regression. The same guest with its swap runs the
/// case: the control.
#[test]
fn a_guest_that_lost_its_swap_fails_the_expected_skips_and_the_baseline() {
    use kcell_harness::gate;
    use kcell_harness::verdict::Status;
    let without = swap_case_in_a_v2_guest(Some("no-swap"));
    assert_eq!(without.status, Status::Skip, "{}", without.detail);
    assert!(without.detail.contains("swap"), "{}", without.detail);
    let expected = gate::load_expected_skips(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../cases/expected-skips.toml"),
    )
    .expect("cases/expected-skips.toml");
    let check = gate::check_skips(&expected, std::slice::from_ref(&without));
    assert_eq!(check.unexpected.len(), 1, "{check:?}");
    assert!(
        check.unexpected[0].starts_with("deb-6.1-cloud/v2/kcell::CG-MEM-3: needs active swap"),
        "{check:?}"
    );
    let with = swap_case_in_a_v2_guest(None);
    assert_eq!(with.status, Status::Pass, "the control: {}", with.detail);
    let cmp = kcell_harness::report::compare(&[with], std::slice::from_ref(&without));
    assert_eq!(cmp.regressions.len(), 1, "{cmp:?}");
    assert_eq!(
        (cmp.regressions[0].0.as_str(), cmp.regressions[0].3.as_str()),
        ("CG-MEM-3", "skip")
    );
}
