//! Fault injection for crash-safety tests: with `KCELL_FAULT=<step>` in its
//! environment the runtime kills itself with SIGKILL when it reaches that
//! step of `run`, as a `kill -9` at the worst moment would. What it made so
//! far must then be found and removed by the next `kcell run` or `kcell gc`.

/// The steps of `kcell run`, in order.
pub const STEPS: &[&str] = &[
    // The image's overlay directory is claimed in the store.
    "after-overlay",
    // The container's record is written.
    "after-record",
    // The bridge address is leased (the bridge and its NAT table made).
    "after-lease",
    // The container's cgroup is made.
    "after-cgroup",
    // The namespaces and the first process exist, the cgroup holds it.
    "after-clone",
    // The netns bind mount and the veth pair are made, before the gate opens.
    "after-veth",
    // The root's mounts are done and the command exec'd: the container runs.
    "running",
];

/// The steps of the OCI commands where a kill is worst: within `create`
/// (its record, cgroup and first process made one after the other), after
/// `create` before `start` ("oci-created"), inside `start` and inside
/// `delete`. `kcell-oci delete --force` (and `kcell gc`) must remove what
/// any of them leaves.
pub const OCI_STEPS: &[&str] = &[
    "after-record",
    "after-cgroup",
    "after-clone",
    "oci-created",
    "oci-start",
    "oci-delete",
];

/// The step of `kcell pull` where a kill is worst: a layer half written
/// to its partial download after another layer finished. The next pull
/// must resume it and not fetch the finished one again. With it armed, the
/// pull fetches one layer at a time, smallest first: in parallel a large
/// layer can finish before a small one does (seen in CI), and the moment
/// this step names never comes.
pub const PULL_STEPS: &[&str] = &["pull-mid-layer"];

/// Whether `KCELL_FAULT` names `step`.
pub fn armed(step: &str) -> bool {
    std::env::var_os("KCELL_FAULT").is_some_and(|v| v == step)
}

/// Kills the runtime here when `KCELL_FAULT` names `step`.
pub fn point(step: &str) {
    if armed(step) {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}
