//! The OCI command line as a client drives it: `kcell-oci` with a state
//! root and bundles of the test's own. The lifecycle in runc's grammar
//! (create, state, start, kill, delete; the states the spec names), and
//! bad input: each a one-line error naming the value, exit status 1, and
//! nothing left behind (no state entry, no cgroup, no mount). The test
//! judges by what it reads itself: exit statuses, the state root's
//! entries, /proc/self/mountinfo and the cgroup filesystems. Root only:
//! without root each test says so and checks nothing.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::oci::{assert_refused, setup, wait_for, KCELL_OCI};

#[test]
#[cfg_attr(
    kcell_unprivileged,
    ignore = "needs root: containers, cgroups and mounts (run the tests as root)"
)]
fn the_lifecycle_goes_through_the_states_the_spec_names() {
    let s = setup("life");
    let before = s.census();
    let id = "kcell-life";
    let bundle = s.bundle("life", &["sleep", "1000"], |_| {});
    let pid_file = s.dir.path().join("life.pid");
    let created = s.oci(&[
        "create",
        "--bundle",
        bundle.to_str().expect("utf-8"),
        "--pid-file",
        pid_file.to_str().expect("utf-8"),
        id,
    ]);
    let result = std::panic::catch_unwind(|| {
        assert!(created.status.success(), "create: {created:?}");
        assert_eq!(s.status_of(id), "created");
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .expect("pid file")
            .trim()
            .parse()
            .expect("a pid");
        // The process exists, waiting for start: not yet the command.
        let comm = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).expect("cmdline");
        assert!(!comm.starts_with("sleep"), "the command ran before start");
        assert!(s.oci(&["start", id]).status.success());
        wait_for(
            || {
                std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| c.starts_with("sleep"))
            },
            "the command to run after start",
        );
        assert_eq!(s.status_of(id), "running");
        // A running container cannot be started again nor deleted without --force.
        assert_refused(&s.oci(&["start", id]), id);
        assert_refused(&s.oci(&["delete", id]), id);
        assert!(s.oci(&["kill", id, "KILL"]).status.success());
        wait_for(|| s.status_of(id) == "stopped", "stopped after kill");
        assert!(s.oci(&["delete", id]).status.success());
        assert_refused(&s.oci(&["state", id]), id);
    });
    s.force_delete(id);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
    assert_eq!(s.census(), before, "the lifecycle left something behind");
}

#[test]
#[cfg_attr(
    kcell_unprivileged,
    ignore = "needs root: containers, cgroups and mounts (run the tests as root)"
)]
fn a_duplicate_id_is_refused_and_the_first_container_is_untouched() {
    let s = setup("dup");
    let id = "kcell-dup";
    let first = s.bundle("dup1", &["sleep", "1000"], |_| {});
    let second = s.bundle("dup2", &["sleep", "1000"], |_| {});
    let created = s.oci(&["create", "--bundle", first.to_str().expect("utf-8"), id]);
    let result = std::panic::catch_unwind(|| {
        assert!(created.status.success(), "create: {created:?}");
        let again = s.oci(&["create", "--bundle", second.to_str().expect("utf-8"), id]);
        assert_refused(&again, id);
        assert_eq!(s.status_of(id), "created");
        let state: Value =
            serde_json::from_slice(&s.oci(&["state", id]).stdout).expect("state JSON");
        assert_eq!(
            state["bundle"].as_str().map(PathBuf::from),
            Some(first.clone()),
            "the record is still the first container's"
        );
    });
    s.force_delete(id);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
    let after = s.census();
    assert!(after.state.is_empty(), "state left: {:?}", after.state);
    assert!(
        after.cgroups.is_empty(),
        "cgroups left: {:?}",
        after.cgroups
    );
}

/// A bundle that create must refuse: the edit that makes it bad and the
/// value the error must name.
#[rstest::rstest]
#[cfg_attr(
    kcell_unprivileged,
    ignore = "needs root: containers, cgroups and mounts (run the tests as root)"
)]
#[case::config_not_json("notjson", "config.json")]
#[case::missing_root("noroot", "/nonexistent-kcell-root")]
#[case::unknown_namespace("badns", "bogus")]
#[case::another_major_version("v2", "2.0.0")]
#[case::unknown_limit("newlimit", "linux.resources.memory.bogusLimit")]
#[case::unknown_field_kcell_does_not_implement("intelrdt", "intelRdt")]
fn bad_input_is_one_line_naming_the_value_and_leaves_nothing(
    #[case] which: &str,
    #[case] named: &str,
) {
    let s = setup(which);
    let before = s.census();
    let bundle = s.bundle(which, &["true"], |c| match which {
        "noroot" => c["root"]["path"] = json!("/nonexistent-kcell-root"),
        "badns" => c["linux"]["namespaces"]
            .as_array_mut()
            .expect("namespaces")
            .push(json!({ "type": "bogus" })),
        "v2" => c["ociVersion"] = json!("2.0.0"),
        "newlimit" => c["linux"]["resources"]["memory"] = json!({ "bogusLimit": 1 }),
        "intelrdt" => c["linux"]["intelRdt"] = json!({ "closID": "kcell" }),
        _ => {}
    });
    if which == "notjson" {
        std::fs::write(bundle.join("config.json"), "{ this is not json").expect("write");
    }
    let id = format!("kcell-bad-{which}");
    let out = s.oci(&["create", "--bundle", bundle.to_str().expect("utf-8"), &id]);
    s.force_delete(&id);
    assert_refused(&out, named);
    assert_eq!(s.census(), before, "a refused create left something behind");
}

/// runtime-spec 1.3's config with what kcell does not know: it runs, and
/// each property kcell ignores is named in a warning (config.md: runtimes
/// "MAY log unknown properties but MUST otherwise ignore them").
#[test]
#[cfg_attr(
    kcell_unprivileged,
    ignore = "needs root: containers, cgroups and mounts (run the tests as root)"
)]
fn a_1_3_config_runs_and_each_ignored_property_is_named() {
    let s = setup("v13");
    let before = s.census();
    let bundle = s.bundle("v13", &["sh", "-c", "cat /relative-dest/x 2>/dev/null; echo ran"], |c| {
        c["ociVersion"] = json!("1.3.0");
        c["freebsd"] = json!({ "jail": { "vnet": "new" } });
        c["process"]["x-client-key"] = json!("x");
        c["process"]["ioPriority"] = json!({ "class": "IOPRIO_CLASS_BE", "priority": 4 });
        c["mounts"]
            .as_array_mut()
            .expect("mounts")
            .push(json!({ "destination": "relative-dest", "type": "tmpfs", "source": "tmpfs", "x-extra": 1 }));
    });
    let out = s.oci(&[
        "run",
        "--bundle",
        bundle.to_str().expect("utf-8"),
        "kcell-v13",
    ]);
    s.force_delete("kcell-v13");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ran");
    for named in [
        "freebsd is ignored",
        "process.x-client-key is ignored",
        "process.ioPriority is ignored",
        "x-extra is ignored",
        "relative-dest].destination is relative",
    ] {
        assert!(stderr.contains(named), "no warning '{named}' in: {stderr}");
    }
    assert!(stderr.contains("level=warning"), "{stderr}");
    assert_eq!(s.census(), before, "the run left something behind");
}

#[test]
#[cfg_attr(
    kcell_unprivileged,
    ignore = "needs root: containers, cgroups and mounts (run the tests as root)"
)]
fn signals_by_name_with_or_without_sig_and_by_number() {
    let s = setup("sig");
    // A PID 1 gets only the signals it handles: the shell traps the others.
    let trapping = ["sh", "-c", "trap 'exit 3' TERM INT; sleep 1000 & wait"];
    for (i, signal) in ["TERM", "SIGKILL", "9", "sigint"].iter().enumerate() {
        let id = format!("kcell-sig-{i}");
        let bundle = s.bundle(&format!("sig{i}"), &trapping, |_| {});
        let result = std::panic::catch_unwind(|| {
            assert!(s
                .oci(&[
                    "run",
                    "--detach",
                    "--bundle",
                    bundle.to_str().expect("utf-8"),
                    &id
                ])
                .status
                .success());
            assert!(
                s.oci(&["kill", &id, signal]).status.success(),
                "kill {signal}"
            );
            wait_for(|| s.status_of(&id) == "stopped", "stopped after the signal");
        });
        s.force_delete(&id);
        if let Err(e) = result {
            std::panic::resume_unwind(e);
        }
    }
    assert_refused(&s.oci(&["kill", "kcell-sig-none", "NOSUCH"]), "NOSUCH");
}

#[test]
#[cfg_attr(
    kcell_unprivileged,
    ignore = "needs root: containers, cgroups and mounts (run the tests as root)"
)]
fn the_state_root_is_the_only_place_state_goes() {
    let s = setup("root");
    let id = "kcell-rootcheck";
    let bundle = s.bundle("rootcheck", &["true"], |_| {});
    let out = s.oci(&["create", "--bundle", bundle.to_str().expect("utf-8"), id]);
    let listed = s.oci(&["list", "--format", "json"]);
    s.force_delete(id);
    assert!(out.status.success(), "create: {out:?}");
    let list: Value = serde_json::from_slice(&listed.stdout).expect("list JSON");
    assert!(
        list.as_array()
            .is_some_and(|a| a.iter().any(|c| c["id"] == id)),
        "list shows it: {list}"
    );
    assert!(
        !Path::new("/run/kcell-oci").join(id).exists(),
        "it went under --root only"
    );
}

/// Every process whose command line holds `marker`.
fn processes_with(marker: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
        })
        .collect()
}

#[test]
#[cfg_attr(
    kcell_unprivileged,
    ignore = "needs root: containers, cgroups and mounts (run the tests as root)"
)]
fn a_runtime_killed_at_any_oci_step_leaves_nothing_delete_force_does_not_remove() {
    use std::os::unix::process::ExitStatusExt;
    let s = setup("fault");
    let before = s.census();
    let marker = format!("kcell-fault-{}", std::process::id());
    let script = format!("sleep 1000; echo {marker}");
    for step in kcell::fault::OCI_STEPS {
        for round in 0..3 {
            let id = format!("kcell-fault-{step}-{round}");
            let bundle = s.bundle(&id, &["sh", "-c", &script], |_| {});
            let b = bundle.to_str().expect("utf-8");
            let faulted = |args: &[&str]| {
                let out = Command::new(KCELL_OCI)
                    .env("KCELL_FAULT", step)
                    .arg("--root")
                    .arg(&s.state)
                    .args(args)
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status()
                    .expect("kcell-oci");
                assert_eq!(
                    out.signal(),
                    Some(9),
                    "{step}: {args:?} was not killed there ({out:?})"
                );
            };
            match *step {
                "oci-start" => {
                    assert!(s.oci(&["create", "--bundle", b, &id]).status.success());
                    faulted(&["start", &id]);
                }
                "oci-delete" => {
                    assert!(s
                        .oci(&["run", "--detach", "--bundle", b, &id])
                        .status
                        .success());
                    assert!(s.oci(&["kill", &id, "KILL"]).status.success());
                    wait_for(|| s.status_of(&id) == "stopped", "stopped");
                    faulted(&["delete", &id]);
                }
                _ => faulted(&["create", "--bundle", b, &id]),
            }
            let _ = s.oci(&["delete", "--force", &id]);
            wait_for(
                || processes_with(&marker).is_empty(),
                "the container's processes to go",
            );
            assert_eq!(
                s.census(),
                before,
                "killed at {step} (round {round}): left behind"
            );
        }
    }
}
