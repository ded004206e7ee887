//! The commands that manage containers: ps, exec, stop, rm, gc, stats and
//! net attach, each a thin call into the lifecycle library.

use super::CliError;
use crate::image::store::Store;
use crate::lifecycle::{self, ledger};
use crate::namespace::Namespace;
use crate::state::{StateDir, Status};
use std::time::{Duration, Instant};

/// `kcell ps [-a]`: ID, image or root, command, created, status, PID.
pub(super) fn ps(state: &StateDir, all: bool) -> Result<i32, CliError> {
    println!(
        "{:<14} {:<24} {:<24} {:<10} {:<8} PID",
        "ID", "IMAGE", "COMMAND", "CREATED", "STATUS"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let clip = |s: String, n: usize| {
        if s.chars().count() > n {
            format!("{}...", s.chars().take(n - 3).collect::<String>())
        } else {
            s
        }
    };
    for rec in state.list() {
        let status = rec.status();
        if !all && status != Status::Running {
            continue;
        }
        let age = now.saturating_sub(rec.created_secs());
        let created = if age < 120 {
            format!("{age}s ago")
        } else {
            format!("{}m ago", age / 60)
        };
        println!(
            "{:<14} {:<24} {:<24} {:<10} {:<8} {}",
            rec.id,
            clip(
                rec.image
                    .clone()
                    .unwrap_or_else(|| rec.rootfs.display().to_string()),
                24
            ),
            clip(rec.process.args.join(" "), 24),
            created,
            status.as_str(),
            rec.pid.map_or("-".into(), |p| p.to_string())
        );
    }
    Ok(0)
}

/// `kcell exec ID CMD...`: the container's process settings with another
/// command and more environment.
pub(super) fn exec(
    state: &StateDir,
    id: &str,
    command: Vec<String>,
    env: &[String],
) -> Result<i32, CliError> {
    let rec = lifecycle::lookup(state, id)?;
    let mut process = rec.process.clone();
    process.args = command;
    for e in env {
        if !e.contains('=') {
            return Err(crate::spec::SpecError::MalformedEnv(e.clone()).into());
        }
        process.set_env(e);
    }
    let done = lifecycle::exec::exec(state, id, &process, &Default::default())?;
    Ok(done.exit.map_or(0, |e| e.code()))
}

/// `kcell stop`: SIGTERM, SIGKILL after `grace`, then a wait until its
/// runtime has released it (or the release here when that runtime is gone).
pub(super) fn stop(state: &StateDir, id: &str, grace: Duration) -> Result<(), CliError> {
    use nix::sys::signal::{kill, Signal};
    let rec = lifecycle::lookup(state, id)?;
    if let Some(pid) = rec.pid.filter(|_| rec.is_running()) {
        let pid = nix::unistd::Pid::from_raw(pid);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while rec.is_running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        // PID 1 of a namespace ignores SIGTERM without a handler: SIGKILL it.
        if rec.is_running() {
            let _ = kill(pid, Signal::SIGKILL);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Ok(now) = state.read(id) {
        if !now.owned || now.owner_gone() {
            ledger::kill_and_wait(&now);
            ledger::release(state, &now);
            break;
        }
        if Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// `kcell rm [-f]`: what is left of a container that is not running.
pub(super) fn rm(state: &StateDir, store: &Store, id: &str, force: bool) -> Result<i32, CliError> {
    let rec = lifecycle::lookup(state, id)?;
    if rec.is_running() {
        if !force {
            return Err(CliError::Running(id.to_string()));
        }
        stop(state, id, Duration::ZERO)?;
    }
    if let Ok(rec) = state.read(id) {
        ledger::release(state, &rec);
    }
    gc(state, store);
    Ok(0)
}

/// Releases every container whose owner is gone (a killed `kcell run`, a
/// killed OCI create) in kcell's state and in kcell-oci's default root,
/// then the image store's directories of containers without a record and
/// layers nothing uses; returns the container IDs.
pub(super) fn gc(state: &StateDir, store: &Store) -> Vec<String> {
    let mut removed = Vec::new();
    let oci = StateDir::at(crate::oci::DEFAULT_ROOT);
    for st in [state, &oci] {
        st.remove_stale_temporaries();
        for rec in st.list().into_iter().filter(|r| r.orphaned()) {
            // Its runtime is gone, so PDEATHSIG is already taking the
            // container down: a `gc` right after the kill must not find it
            // still exiting and leave it behind.
            let deadline = Instant::now() + Duration::from_secs(2);
            while rec.is_running() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            ledger::kill_and_wait(&rec);
            if !rec.is_running() {
                ledger::release(st, &rec);
                removed.push(rec.id);
            }
        }
        // Leases whose container has no record (killed between lease and record).
        st.networks().sweep(&|id| st.read(id).is_ok());
    }
    for id in store.gc(&|id| state.read(id).is_ok()) {
        if !removed.contains(&id) {
            removed.push(id);
        }
    }
    removed
}

/// `kcell stats NAME`: the cgroup's counters as JSON.
pub(super) fn stats(state: &StateDir, id: &str) -> Result<i32, CliError> {
    let rec = lifecycle::lookup(state, id)?;
    let cg = rec.cgroup().filter(|c| c.exists()).ok_or_else(|| {
        lifecycle::LifecycleError::WrongState(format!(
            "container '{id}' has no cgroup of its own (it runs with --no-cgroup, or as a caller that is not root)"
        ))
    })?;
    println!("{}", serde_json::to_string(&cg.stats()).unwrap_or_default());
    Ok(0)
}

/// `kcell net attach`: a further interface in a running container's network
/// namespace; its host end is recorded first, so it goes with the container.
pub(super) fn net_attach(
    state: &StateDir,
    id: &str,
    ip: crate::net::Ipv4Net,
    name: &str,
) -> Result<(), CliError> {
    crate::net::validate_ifname(name, "interface name")?;
    let mut rec = lifecycle::lookup(state, id)?;
    let pid = rec
        .pid
        .filter(|_| rec.is_running())
        .ok_or_else(|| lifecycle::LifecycleError::NotRunning(id.to_string()))?;
    if !rec.namespaces.contains(Namespace::Net) {
        return Err(crate::net::NetError::Invalid(format!(
            "container '{id}' has no network namespace of its own (--net host or container:ID)"
        ))
        .into());
    }
    let ns_path = rec
        .netns_file
        .clone()
        .unwrap_or_else(|| format!("/proc/{pid}/ns/net").into());
    let netns = std::fs::File::open(&ns_path).map_err(|e| {
        crate::net::NetError::from(crate::sys::SysError::from_io("open", ns_path.display(), e))
    })?;
    let host_link = (1..10)
        .map(|n| crate::net::network::host_link_name(id, n))
        .find(|l| !rec.host_links.contains(l))
        .ok_or_else(|| {
            crate::net::NetError::Invalid(format!(
                "container '{id}' has 9 attached interfaces already"
            ))
        })?;
    rec.host_links.push(host_link.clone());
    state.write(&rec)?;
    let attached =
        crate::net::network::attach(std::os::fd::AsFd::as_fd(&netns), &host_link, name, ip);
    if attached.is_err() {
        rec.host_links.retain(|l| *l != host_link);
        let _ = state.write(&rec);
    }
    attached.map_err(Into::into)
}
