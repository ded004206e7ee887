//! Crash safety: the runtime is killed with SIGKILL at each step of `kcell
//! run` (`KCELL_FAULT=<step>`, see kcell::fault), ten times per step and
//! alternating an image container on a bridge with a directory root, and
//! after `kcell gc` the host census (mounts, cgroups, records, netns files,
//! links, leases, NAT tables, temporary and overlay directories) must equal
//! the one taken before. The census is the conformance harness's (its own
//! readings of the host), so kcell's clean-up is judged by code it does
//! not share. Root only: without root the test says so.

use kcell_harness::fixture::{self, Context};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PER_STEP: usize = 10;

fn kcell(store: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kcell"));
    cmd.env("KCELL_ROOT", store);
    cmd
}

fn census(ctx: &Context) -> String {
    let census = fixture::make(fixture::FixtureName::Census, ctx).expect("census fixture");
    census.observe()[0]
        .1
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
#[cfg_attr(
    kcell_unprivileged,
    ignore = "needs root: containers, cgroups and mounts (run the tests as root)"
)]
fn a_runtime_killed_at_any_step_leaves_nothing_after_gc() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "killing the runtime mid-run needs root (cgroups, mounts, links): this test was built as root and runs without it"
    );
    // "kcell-case-" keeps the work directory itself out of the census.
    let work = tempfile::Builder::new()
        .prefix(&format!("kcell-case-fault-{}-", std::process::id()))
        .tempdir()
        .expect("tempdir");
    let root = work.path().join("root");
    let store = work.path().join("store");
    let tar = work.path().join("image.tar");
    let ok = |mut c: Command, what: &str| {
        let out = c.stdout(Stdio::null()).output().expect(what);
        assert!(
            out.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let mut c = kcell(&store);
    c.args(["rootfs", "busybox"]).arg(&root);
    ok(c, "kcell rootfs busybox");
    let mut c = kcell(&store);
    c.args(["image", "pack", "-t", "kcell-fault:v1", "-o"])
        .arg(&tar)
        .arg(&root);
    ok(c, "kcell image pack");
    let mut c = kcell(&store);
    c.args(["image", "import"]).arg(&tar);
    ok(c, "kcell image import");

    let ctx = Context {
        rootfs: root.clone(),
        // The census runs no agent.
        agent: PathBuf::new(),
        store: store.clone(),
        // The census asks kcell nothing.
        kcell: PathBuf::new(),
    };
    let before = census(&ctx);
    let bridge = format!("kcellf{}", std::process::id() % 100_000);
    let mut kills = 0;
    let mut dirty = 0;
    let mut completed = Vec::new();
    for step in kcell::fault::STEPS {
        for i in 0..PER_STEP {
            let mut run = kcell(&store);
            run.env("KCELL_FAULT", step)
                .arg("run")
                .args(["--cpus", "0.5", "--pids", "20"]);
            if i % 2 == 0 {
                run.args(["--net", "bridge", "--bridge", &bridge, "kcell-fault:v1"]);
            } else {
                run.arg(&root);
            }
            let status = run
                .args(["sh", "-c", "sleep 0.2"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("kcell run");
            if status.signal() == Some(libc::SIGKILL) {
                kills += 1;
            } else {
                // A step this kind of run does not reach (no image, no bridge).
                completed.push(format!("{step} #{i}: {status}"));
            }
            // Control: the kill left something for gc to find (so the census
            // comparison below can fail).
            if census(&ctx) != before {
                dirty += 1;
            }
            // The container dies with its runtime (PDEATHSIG): gc once it has.
            let deadline = Instant::now() + Duration::from_secs(10);
            let now = loop {
                let mut gc = kcell(&store);
                gc.arg("gc");
                ok(gc, "kcell gc");
                let now = census(&ctx);
                if now == before || Instant::now() > deadline {
                    break now;
                }
                std::thread::sleep(Duration::from_millis(100));
            };
            assert_eq!(now, before, "after a kill at {step} (#{i}) and kcell gc");
        }
    }
    eprintln!(
        "{kills} kills, {dirty} of them left something before gc; runs that ended normally: {completed:?}"
    );
    assert!(
        kills >= 50,
        "only {kills} kills (steps not reached: {completed:?})"
    );
    assert!(
        dirty >= kills / 2,
        "only {dirty} of {kills} kills left anything: the census sees too little"
    );
}
