//! `kcell vm`: a program of one's own in a throwaway guest. A small static
//! program (built here with rustc) prints to stdout and stderr, reads a
//! shared file and a file copied to its own path and exits with a chosen status, which kcell returns with the
//! output in order; in another run it panics the guest's kernel, which is
//! 125 with the console's tail; a dynamically linked program (Debian's
//! runc) runs with its libraries. Boots the 6.1 cloud kernel (fetched into
//! the cache like the matrix does).

use std::path::{Path, PathBuf};
use std::process::Command;

const PROGRAM: &str = r#"
use std::io::Write;
fn main() {
    let args: Vec<String> = std::env::args().collect();
    println!("one");
    std::io::stdout().flush().unwrap();
    eprintln!("two");
    std::thread::sleep(std::time::Duration::from_millis(200));
    println!("three");
    match std::fs::read_to_string("/mnt/share/data.txt") {
        Ok(t) => println!("shared={}", t.trim()),
        Err(e) => println!("shared=<{e}>"),
    }
    if let Ok(path) = std::env::var("MARKER") {
        println!("file={}", std::fs::read_to_string(path).unwrap_or_default().trim());
    }
    println!("cgroup={}", if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() { "v2" } else { "v1" });
    if args.get(1).map(String::as_str) == Some("panic") {
        std::fs::write("/proc/sysrq-trigger", "c").unwrap();
    }
    std::process::exit(args.get(1).and_then(|a| a.parse().ok()).unwrap_or(0));
}
"#;

/// The test program, built static with rustc, once per test process.
fn program(dir: &Path) -> PathBuf {
    let src = dir.join("prog.rs");
    std::fs::write(&src, PROGRAM).expect("write the program");
    let out = dir.join("prog");
    let built = Command::new("rustc")
        .args([
            "-O",
            "-C",
            "target-feature=+crt-static",
            "--target",
            "x86_64-unknown-linux-gnu",
            "-o",
        ])
        .arg(&out)
        .arg(&src)
        .output()
        .expect("rustc");
    assert!(
        built.status.success(),
        "rustc: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    out
}

/// `kcell-conformance vm` (what `kcell vm` hands over to).
fn kcell_vm(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kcell-conformance"))
        .arg("vm")
        .args(args)
        .output()
        .expect("kcell vm")
}

#[test]
fn a_program_runs_in_a_guest_with_its_output_status_and_shared_files() {
    let dir = tempfile::Builder::new()
        .prefix("kcell-vmrun-")
        .tempdir()
        .expect("tempdir");
    let prog = program(dir.path());
    let share = dir.path().join("share");
    std::fs::create_dir(&share).expect("mkdir");
    std::fs::write(share.join("data.txt"), "from-the-host\n").expect("write");
    // --file: a host file at the same absolute path in the guest (what a
    // test binary names by its build path); --env passes that path.
    let marker = dir.path().join("marker.txt");
    std::fs::write(&marker, "at-its-own-path\n").expect("write");
    let marker = marker.to_str().expect("utf-8");
    let env = format!("MARKER={marker}");
    for cgroup in ["v1", "v2"] {
        let out = kcell_vm(&[
            "--kernel",
            "deb-6.1-cloud",
            "--cgroup",
            cgroup,
            "--share",
            share.to_str().expect("utf-8"),
            "--file",
            marker,
            "--env",
            &env,
            "--",
            prog.to_str().expect("utf-8"),
            "7",
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(7),
            "the program's status; stderr: {stderr}"
        );
        assert_eq!(
            stdout,
            format!("one\nthree\nshared=from-the-host\nfile=at-its-own-path\ncgroup={cgroup}\n"),
            "stdout in order"
        );
        assert!(stderr.contains("two"), "stderr: {stderr}");
    }
}

#[test]
fn a_guest_that_panics_is_125_with_the_console_tail() {
    let dir = tempfile::Builder::new()
        .prefix("kcell-vmrun-")
        .tempdir()
        .expect("tempdir");
    let prog = program(dir.path());
    let out = kcell_vm(&[
        "--kernel",
        "deb-6.1-cloud",
        "--",
        prog.to_str().expect("utf-8"),
        "panic",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "stderr: {stderr}");
    assert!(
        stderr.contains("sysrq") || stderr.contains("Kernel panic"),
        "console tail: {stderr}"
    );
}

#[test]
fn a_dynamically_linked_program_runs_with_its_libraries() {
    let runc = Path::new("/usr/sbin/runc");
    assert!(
        runc.exists(),
        "runc is not installed: scripts/install-deps installs Debian's runc"
    );
    let out = kcell_vm(&[
        "--kernel",
        "deb-6.1-cloud",
        "--",
        "/usr/sbin/runc",
        "--version",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("runc version"), "{stdout}");
}

/// A host whose KVM cannot run the guest: QEMU (here a stand-in in front
/// of the real one) prints "KVM internal error" and hangs without exiting,
/// as it does on kvm-pvm hosts. The boot is given up at once and the guest
/// runs under TCG, instead of the 90-second boot watchdog running out;
/// the cache notes it for the next run. The cache's note is put back as it
/// was after (a KVM-capable machine must not keep the stand-in's note).
#[test]
fn a_kvm_that_cannot_run_the_guest_falls_back_to_tcg_at_once() {
    let dir = tempfile::Builder::new()
        .prefix("kcell-vmrun-kvm-")
        .tempdir()
        .expect("tempdir");
    let real = [
        "/usr/bin/qemu-system-x86_64",
        "/usr/local/bin/qemu-system-x86_64",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .expect("qemu-system-x86_64 (scripts/install-deps --vm installs it)");
    let stand_in = dir.path().join("qemu-stand-in");
    std::fs::write(
        &stand_in,
        format!(
            "#!/bin/sh\ncase \" $* \" in\n*\" -accel kvm \"*)\n  echo 'error: kvm run failed Bad address' >&2\n  echo 'KVM internal error. Suberror: 1' >&2\n  exec sleep 600 ;;\nesac\nexec {real} \"$@\"\n"
        ),
    )
    .expect("write the stand-in");
    std::fs::set_permissions(
        &stand_in,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let note = kcell_harness::vm::cache_dir().join("accel-deb-6.1-cloud");
    let saved = std::fs::read(&note).ok();
    let _ = std::fs::remove_file(&note);
    let started = std::time::Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_kcell-conformance"))
        .args(["vm", "--kernel", "deb-6.1-cloud", "--", "/bin/true"])
        .env("KCELL_QEMU", &stand_in)
        // Any existing file stands for /dev/kvm: KVM is tried first.
        .env("KCELL_KVM_DEVICE", "/dev/null")
        .env_remove("KCELL_ACCEL")
        .output()
        .expect("kcell vm");
    let seconds = started.elapsed().as_secs_f64();
    let noted = std::fs::read_to_string(&note).unwrap_or_default();
    match saved {
        Some(before) => std::fs::write(&note, before).expect("restore the note"),
        None => {
            let _ = std::fs::remove_file(&note);
        }
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    assert!(
        stderr.contains("KVM internal error") && stderr.contains("using TCG"),
        "the fallback and its reason: {stderr}"
    );
    assert_eq!(noted.trim(), "tcg", "the cache's note after the fallback");
    // The boot watchdog is 90 s: a fallback that waited for it is a failure.
    assert!(
        seconds < 60.0,
        "{seconds:.1} s: the watchdog was waited out"
    );
    eprintln!("kcell vm with a failing KVM: {seconds:.1} s");
}
