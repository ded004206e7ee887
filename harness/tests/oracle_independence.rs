//! The oracle shares nothing with what it judges: a runtime that lies
//! about its results (mutant.rs's "lie": a false `state` with exit status
//! 0, false `events --stats`, false stats and exit-status files in the
//! bundle) still gets the case's true verdict, because the harness reads
//! exit statuses (it is the subreaper), cgroup files and /proc itself.
//! Both ways: with the limit really there, the liar's "no OOM, exit 0"
//! does not turn a pass into a failure; with the limit really dropped, the
//! same lie does not turn the failure into a pass. Root only.

mod support;

use kcell_harness::case::Case;
use kcell_harness::driver::Runtime;
use kcell_harness::mutant;
use kcell_harness::runner::run_case;
use kcell_harness::verdict::Status;
use std::path::Path;

#[test]
#[cfg_attr(
    kcell_unprivileged,
    ignore = "needs root: containers, cgroups and mounts (run the tests as root)"
)]
fn a_lying_runtime_still_gets_the_true_verdict() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "running containers needs root: this test was built as root and runs without it"
    );
    let agent = Path::new(env!("CARGO_BIN_EXE_kcell-agent"));
    let work = tempfile::Builder::new()
        .prefix("kcell-case-oracle-")
        .tempdir()
        .expect("tempdir");
    let target = kcell_harness::host::prepare(work.path(), agent, Some(&support::kcell()))
        .expect("host target");
    let _ = nix::sys::prctl::set_child_subreaper(true);
    let case = Case::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../cases/CG-MEM-2.toml"))
        .expect("CG-MEM-2");
    if let Some(why) = kcell_harness::requires::unmet(&case.requires) {
        panic!("CG-MEM-2 cannot run on this machine ({why}): the test judges nothing here");
    }
    let link = |mutation: &str| {
        let path = work.path().join(mutant::link_name(mutation, "kcell"));
        std::os::unix::fs::symlink(&target.agent, &path).expect("symlink");
        path
    };
    let honest = Runtime::probe("kcell", &target.kcell.with_file_name("kcell-oci")).expect("kcell");
    let liar = Runtime::probe("liar", &link(mutant::LIAR)).expect("liar");
    let lying_mutant = Runtime::probe(
        "liar-without-limit",
        &link(&format!("{}+drop-memory", mutant::LIAR)),
    )
    .expect("liar");

    // The liar does lie, when asked.
    let state = std::process::Command::new(&liar.path)
        .args(["state", "anything"])
        .output()
        .expect("liar state");
    let said: serde_json::Value = serde_json::from_slice(&state.stdout).expect("JSON");
    assert_eq!(
        said["annotations"]["exitStatus"], "0",
        "the liar's state: {said}"
    );

    let truth = run_case(&case, &target, &honest);
    assert_eq!(truth.status, Status::Pass, "kcell itself: {}", truth.detail);
    let lied = run_case(&case, &target, &liar);
    assert_eq!(
        lied.status,
        Status::Pass,
        "the liar's false 'exit 0, no OOM' changed the verdict: {}",
        lied.detail
    );
    for key in ["over.exit", "over.cg.oom_kill"] {
        // Both missing would be equal and prove nothing.
        let kernel = truth.observations.get(key);
        assert!(
            kernel.is_some(),
            "{key} was not observed with kcell: nothing to compare the liar's run with"
        );
        assert_eq!(
            lied.observations.get(key),
            kernel,
            "{key} is the kernel's, not the liar's"
        );
    }
    let dropped = run_case(&case, &target, &lying_mutant);
    assert_eq!(
        dropped.status,
        Status::Fail,
        "without its limit the case must fail whatever the runtime says: {}",
        dropped.detail
    );
    assert_eq!(
        dropped
            .observations
            .get("over.exit")
            .and_then(|v| v.as_i64()),
        Some(0),
        "the process really exited 0"
    );
}
