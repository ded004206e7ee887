//! A container root is input from elsewhere: every path kcell creates or
//! mounts on in it must resolve inside it (rootfs::inroot). Each test runs
//! the real `kcell` against roots whose paths lead out (an absolute
//! symlink, a relative one that climbs out, a `..` destination), checks
//! that a watched host directory is unchanged and nothing got mounted on
//! it, and that the container sees its mount where a legitimate root
//! would. Root only: without root each test says so and checks nothing.

use rstest::rstest;
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::KCELL;

/// A clean busybox root, a watched host directory beside it, a volume
/// source with a marker, and a state directory of the test's own.
struct Setup {
    dir: tempfile::TempDir,
    clean: PathBuf,
    watched: PathBuf,
    src: PathBuf,
}

fn setup() -> Setup {
    assert!(
        nix::unistd::geteuid().is_root(),
        "running containers needs root: this test was built as root and runs without it (rebuild as the user who runs it)"
    );
    let dir = tempfile::Builder::new()
        .prefix("kcell-hostile-")
        .tempdir()
        .expect("tempdir");
    let clean = common::busybox_root(dir.path(), "clean");
    let watched = dir.path().join("watched");
    std::fs::create_dir(&watched).expect("mkdir watched");
    std::fs::write(watched.join("host-file"), "host").expect("write");
    let src = dir.path().join("src");
    std::fs::create_dir(&src).expect("mkdir src");
    std::fs::write(src.join("marker"), "from-the-volume").expect("write");
    Setup {
        dir,
        clean,
        watched,
        src,
    }
}

/// How a trap leads out of the root.
#[derive(Debug, Clone, Copy)]
enum Trap {
    /// A symlink to the watched directory's absolute path.
    Absolute,
    /// A relative symlink that climbs far above the root, then down to it.
    Climbing,
}

impl Setup {
    /// A copy of the clean root (hard links) with `at` replaced by a trap.
    fn hostile(&self, name: &str, at: &str, trap: Trap) -> PathBuf {
        let root = self.dir.path().join(name);
        let copied = Command::new("cp")
            .arg("-al")
            .arg(&self.clean)
            .arg(&root)
            .status()
            .expect("cp");
        assert!(copied.success());
        let trapped = root.join(at);
        let _ = std::fs::remove_dir_all(&trapped);
        let _ = std::fs::remove_file(&trapped);
        let target = match trap {
            Trap::Absolute => self.watched.clone(),
            Trap::Climbing => {
                let depth = Path::new(at).components().count() + 12;
                let mut t = PathBuf::new();
                for _ in 0..depth {
                    t.push("..");
                }
                t.join(self.watched.strip_prefix("/").expect("absolute"))
            }
        };
        std::os::unix::fs::symlink(&target, &trapped).expect("symlink");
        root
    }

    /// Everything under the watched directory, and every mount of the host
    /// whose mount point is in it.
    fn census(&self) -> (Vec<String>, Vec<String>) {
        let mut files = Vec::new();
        list(&self.watched, &mut files);
        files.sort();
        let watched = self.watched.display().to_string();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                l.split_whitespace()
                    .nth(4)
                    .is_some_and(|m| m.starts_with(&watched))
            })
            .map(String::from)
            .collect();
        (files, mounts)
    }

    fn run(&self, args: &[&str], root: &Path, command: &str) -> (i32, String, String) {
        let out = Command::new(KCELL)
            .env("KCELL_STATE", self.dir.path().join("state"))
            .env("KCELL_ROOT", self.dir.path().join("store"))
            .arg("run")
            .args(args)
            .arg(root)
            .args(["sh", "-c", command])
            .output()
            .expect("kcell run");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }
}

fn list(dir: &Path, out: &mut Vec<String>) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            out.push(e.path().display().to_string());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                list(&e.path(), out);
            }
        }
    }
}

/// Runs `args` on a root whose /etc is a trap; the container must see
/// `expect` in what `command` prints, and the host nothing at all.
fn trapped_etc(trap: Trap, args: impl Fn(&Setup) -> Vec<String>, command: &str, expect: &str) {
    let s = setup();
    let root = s.hostile("etc-trap", "etc", trap);
    let before = s.census();
    let args = args(&s);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out, err) = s.run(&args, &root, command);
    assert_eq!(s.census(), before, "the watched host directory changed");
    assert_eq!(code, 0, "stdout {out}\nstderr {err}");
    assert!(
        out.contains(expect),
        "the container sees {out:?}, not {expect:?}; stderr {err}"
    );
}

#[rstest]
#[cfg_attr(
    kcell_unprivileged,
    ignore = "needs root: containers, cgroups and mounts (run the tests as root)"
)]
fn a_volume_under_a_trapped_directory_lands_inside(
    #[values(Trap::Absolute, Trap::Climbing)] trap: Trap,
) {
    trapped_etc(
        trap,
        |s| vec!["-v".into(), format!("{}:/etc/newdir", s.src.display())],
        "cat /etc/newdir/marker",
        "from-the-volume",
    );
}

#[rstest]
#[cfg_attr(
    kcell_unprivileged,
    ignore = "needs root: containers, cgroups and mounts (run the tests as root)"
)]
fn a_tmpfs_under_a_trapped_directory_lands_inside(
    #[values(Trap::Absolute, Trap::Climbing)] trap: Trap,
) {
    trapped_etc(
        trap,
        |_| vec!["--tmpfs".into(), "/etc/tdir:size=1m".into()],
        "awk '$5 ~ /tdir$/ && / - tmpfs / {print \"tmpfs-at \" $5}' /proc/self/mountinfo; ls -d /etc/tdir/.",
        "tmpfs-at /",
    );
}

#[rstest]
#[cfg_attr(
    kcell_unprivileged,
    ignore = "needs root: containers, cgroups and mounts (run the tests as root)"
)]
fn resolv_conf_under_a_trapped_directory_lands_inside(
    #[values(Trap::Absolute, Trap::Climbing)] trap: Trap,
) {
    trapped_etc(
        trap,
        |_| vec!["--dns".into(), "192.0.2.53".into()],
        "cat /etc/resolv.conf",
        "nameserver 192.0.2.53",
    );
}

#[rstest]
#[cfg_attr(
    kcell_unprivileged,
    ignore = "needs root: containers, cgroups and mounts (run the tests as root)"
)]
fn a_trapped_standard_mount_point_is_refused_and_nothing_is_made(
    #[values("proc", "sys", "dev", "tmp")] at: &str,
    #[values(Trap::Absolute, Trap::Climbing)] trap: Trap,
) {
    let s = setup();
    let root = s.hostile(&format!("{at}-trap"), at, trap);
    let before = s.census();
    let (code, out, err) = s.run(&[], &root, "true");
    assert_eq!(s.census(), before, "the watched host directory changed");
    assert_eq!(code, 125, "stdout {out}\nstderr {err}");
    assert!(
        err.contains(&format!("'/{at}'"))
            && err.contains("is a symlink")
            && err.lines().count() == 1,
        "one line naming the destination and where it points: {err}"
    );
}

#[rstest]
#[cfg_attr(
    kcell_unprivileged,
    ignore = "needs root: containers, cgroups and mounts (run the tests as root)"
)]
#[case::dotdot_above_the_root("/../../../../WATCHED/dotdot")]
#[case::dotdot_through_a_directory("/tmp/../../../WATCHED/dotdot")]
fn a_dotdot_destination_stays_inside(#[case] dest: &str) {
    let s = setup();
    let watched_rel = s
        .watched
        .strip_prefix("/")
        .expect("absolute")
        .display()
        .to_string();
    let dest = dest.replace("WATCHED", &watched_rel);
    let before = s.census();
    let volume = format!("{}:{dest}", s.src.display());
    let (code, out, err) = s.run(
        &["-v", &volume],
        &s.clean,
        &format!("cat /{watched_rel}/dotdot/marker"),
    );
    assert_eq!(s.census(), before, "the watched host directory changed");
    assert_eq!(code, 0, "stdout {out}\nstderr {err}");
    assert!(out.contains("from-the-volume"), "{out}");
}

#[test]
#[cfg_attr(
    kcell_unprivileged,
    ignore = "needs root: containers, cgroups and mounts (run the tests as root)"
)]
fn an_image_whose_layer_traps_etc_writes_its_upper_not_the_host() {
    let s = setup();
    let root = s.hostile("image-src", "etc", Trap::Absolute);
    let tar = s.dir.path().join("evil.tar");
    let store = s.dir.path().join("store");
    let kcell = |args: &[&str]| {
        Command::new(KCELL)
            .env("KCELL_STATE", s.dir.path().join("state"))
            .env("KCELL_ROOT", &store)
            .args(args)
            .output()
            .expect("kcell")
    };
    let packed = kcell(&[
        "image",
        "pack",
        "-t",
        "kcell-evil",
        "-o",
        &tar.display().to_string(),
        &root.display().to_string(),
    ]);
    assert!(packed.status.success(), "{packed:?}");
    let imported = kcell(&["image", "import", &tar.display().to_string()]);
    assert!(imported.status.success(), "{imported:?}");
    let before = s.census();
    let ran = kcell(&[
        "run",
        "--net",
        "none",
        "--dns",
        "192.0.2.53",
        "-v",
        &format!("{}:/etc/newdir", s.src.display()),
        "kcell-evil",
        "sh",
        "-c",
        "cat /etc/resolv.conf /etc/newdir/marker",
    ]);
    assert_eq!(s.census(), before, "the watched host directory changed");
    let out = String::from_utf8_lossy(&ran.stdout);
    assert!(ran.status.success(), "{ran:?}");
    assert!(
        out.contains("nameserver 192.0.2.53") && out.contains("from-the-volume"),
        "{out}"
    );
    let removed = kcell(&["rmi", "kcell-evil"]);
    assert!(removed.status.success(), "{removed:?}");
}

/// A process in the root swaps a directory for a symlink to the host
/// directory (renameat2 RENAME_EXCHANGE) as fast as it can while 200
/// containers start with a volume under it: not one mount or file lands
/// outside the root, in any of them.
#[test]
#[cfg_attr(
    kcell_unprivileged,
    ignore = "needs root: containers, cgroups and mounts (run the tests as root)"
)]
fn a_racing_symlink_swap_never_leads_a_mount_out() {
    let s = setup();
    let root = s.dir.path().join("race");
    let copied = Command::new("cp")
        .arg("-al")
        .arg(&s.clean)
        .arg(&root)
        .status();
    assert!(copied.is_ok_and(|c| c.success()));
    std::fs::create_dir(root.join("x")).expect("mkdir");
    std::os::unix::fs::symlink(&s.watched, root.join("x-link")).expect("symlink");
    let before = s.census();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = {
        let stop = stop.clone();
        let (a, b) = (root.join("x"), root.join("x-link"));
        std::thread::spawn(move || {
            let mut swaps = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let done = nix::fcntl::renameat2(
                    None,
                    &a,
                    None,
                    &b,
                    nix::fcntl::RenameFlags::RENAME_EXCHANGE,
                );
                if done.is_ok() {
                    swaps += 1;
                }
            }
            swaps
        })
    };
    let volume = format!("{}:/x/vol", s.src.display());
    let (mut started, mut refused) = (0, 0);
    // 200 attempts by default; KCELL_RACE_RUNS lowers it where a run costs
    // more (CI's TCG guest, where 200 take two minutes).
    let runs: u32 = std::env::var("KCELL_RACE_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    for _ in 0..runs {
        // The swapper goes on inside the running container too (its root is
        // the same directory), so what it sees of /x is racy by design; the
        // mount itself must be there, at a path of its own root.
        let (code, out, err) = s.run(
            &["-v", &volume],
            &root,
            "awk '$5 ~ /vol$/ {print \"vol-at \" $5}' /proc/self/mountinfo",
        );
        if code == 0 && out.contains("vol-at /") {
            started += 1;
        } else {
            assert_eq!(code, 125, "stdout {out}\nstderr {err}");
            refused += 1;
        }
        assert_eq!(s.census(), before, "a mount or file landed on the host");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let swaps = swapper.join().expect("swapper");
    eprintln!("200 containers: {started} started, {refused} refused; {swaps} swaps");
    assert!(swaps > 200, "the swapper ran ({swaps} swaps)");
    assert_eq!(s.census(), before);
}
