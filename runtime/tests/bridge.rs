//! Containers started at once on one bridge get different addresses (the
//! lease file's lock) and reach each other over it; afterwards the bridge,
//! its NAT table and the leases are gone. Root only: without root the test
//! says so and passes nothing off as checked.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};

const CONTAINERS: usize = 6;

#[test]
#[cfg_attr(
    kcell_unprivileged,
    ignore = "needs root: containers, cgroups and mounts (run the tests as root)"
)]
fn containers_started_at_once_get_distinct_addresses_and_reach_each_other() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "bridge networking needs root: this test was built as root and runs without it"
    );
    let kcell = env!("CARGO_BIN_EXE_kcell");
    let dir = tempfile::Builder::new()
        .prefix("kcell-bridge-test")
        .tempdir()
        .unwrap();
    let root = dir.path().join("root");
    let state = dir.path().join("state");
    let built = Command::new(kcell)
        .args(["rootfs", "busybox"])
        .arg(&root)
        .status()
        .unwrap();
    assert!(built.success(), "kcell rootfs busybox failed");
    let bridge = format!("kcellc{}", std::process::id() % 100_000);
    let subnet = "10.234.77.0/24";
    // Each container waits until all have started, pings every address the
    // others can have been given (.2 ..= .7), and stays up while the others
    // may still be pinging it.
    let script = format!(
        "ip -4 -o addr show eth0 | awk '{{print \"addr \" $4}}'; sleep 2; \
         for n in $(seq 2 {last}); do ping -c1 -W2 10.234.77.$n >/dev/null 2>&1 && echo reach $n ok || echo reach $n fail; done; sleep 3",
        last = CONTAINERS + 1
    );
    let children: Vec<_> = (0..CONTAINERS)
        .map(|_| {
            Command::new(kcell)
                .env("KCELL_STATE", &state)
                .args([
                    "run", "--net", "bridge", "--bridge", &bridge, "--subnet", subnet,
                ])
                .arg(&root)
                .args(["sh", "-c", &script])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<String> = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            assert!(
                out.status.success(),
                "a container failed: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            text
        })
        .collect();
    let addrs: BTreeSet<String> = outputs
        .iter()
        .filter_map(|o| {
            o.lines()
                .find_map(|l| l.strip_prefix("addr "))
                .map(str::to_string)
        })
        .collect();
    let expected: BTreeSet<String> = (2..=CONTAINERS + 1)
        .map(|n| format!("10.234.77.{n}/24"))
        .collect();
    assert_eq!(
        addrs, expected,
        "each container its own address: {outputs:#?}"
    );
    for out in &outputs {
        assert!(
            !out.contains(" fail"),
            "every container reaches every other: {out}"
        );
    }
    // Nothing is left: no bridge, no lease file, no state.
    let link = Command::new("ip").args(["link", "show", &bridge]).output();
    if let Ok(link) = link {
        assert!(!link.status.success(), "bridge {bridge} is still there");
    }
    assert!(
        !state.join("net").exists(),
        "the lease directory is still there"
    );
}
