//! Host-side measurements taken while a run holds: they read what the
//! kernel counted for the container's cgroup and processes.

use crate::case::Measure;
use kcell::cgroup::ContainerCgroup;
use serde_json::{json, Value};
use std::fs;
use std::time::{Duration, Instant};

/// Probe names a case may use in `measure`.
pub const KNOWN: &[&str] = &[
    "cpu_share",
    "process_shares",
    "cgroup_stats",
    "freeze",
    "cpu_placement",
];

fn seconds(m: &Measure, default: f64) -> Duration {
    Duration::from_secs_f64(m.seconds.unwrap_or(default))
}

/// Takes the measurement `m` of the container whose first process is `pid`.
pub fn measure(m: &Measure, pid: i32) -> Result<Vec<(String, Value)>, String> {
    let cg = ContainerCgroup::of_pid(pid).map_err(|e| format!("cgroup of pid {pid}: {e}"))?;
    match m.probe.as_str() {
        "cpu_share" => cpu_share(&cg, seconds(m, 3.0)),
        "process_shares" => process_shares(&cg, seconds(m, 3.0)),
        "cgroup_stats" => Ok(stats(&cg)),
        "freeze" => freeze(&cg, pid, seconds(m, 1.0)),
        "cpu_placement" => cpu_placement(&cg, seconds(m, 1.0)),
        other => Err(format!("unknown probe '{other}'")),
    }
}

/// The cgroup's CPU usage over wall time, from its own counter
/// (v1 cpuacct.usage, v2 cpu.stat usage_usec): the share of one CPU.
fn cpu_share(cg: &ContainerCgroup, over: Duration) -> Result<Vec<(String, Value)>, String> {
    let usage = || {
        cg.stats()
            .cpu_usage_ns
            .ok_or("the cgroup has no CPU usage counter (cpuacct.usage / cpu.stat)")
    };
    // Let the spinner reach its steady state (the first period may be unthrottled).
    std::thread::sleep(Duration::from_millis(300));
    let (u0, t0) = (usage()?, Instant::now());
    std::thread::sleep(over);
    let (u1, t1) = (usage()?, Instant::now());
    let wall = (t1 - t0).as_secs_f64();
    let share = (u1.saturating_sub(u0)) as f64 / 1e9 / wall;
    Ok(vec![
        ("share".into(), json!(round4(share))),
        ("usage_s".into(), json!(round4((u1 - u0) as f64 / 1e9))),
        ("wall_s".into(), json!(round4(wall))),
    ])
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// utime + stime of a process, in clock ticks (proc(5) fields 14 and 15).
fn cpu_ticks(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?)
}

/// Each process's share of one CPU over the interval, from /proc/PID/stat.
fn process_shares(cg: &ContainerCgroup, over: Duration) -> Result<Vec<(String, Value)>, String> {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    std::thread::sleep(Duration::from_millis(300));
    let before: Vec<(i32, u64)> = cg
        .pids()
        .into_iter()
        .filter_map(|p| Some((p, cpu_ticks(p)?)))
        .collect();
    let t0 = Instant::now();
    std::thread::sleep(over);
    let wall = t0.elapsed().as_secs_f64();
    let mut shares: Vec<f64> = before
        .iter()
        .filter_map(|(p, b)| {
            Some(round4(
                (cpu_ticks(*p)?.saturating_sub(*b)) as f64 / hz / wall,
            ))
        })
        .filter(|s| *s > 0.005)
        .collect();
    shares.sort_by(|a, b| b.total_cmp(a));
    let mut out: Vec<(String, Value)> = shares
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("p{i}"), json!(s)))
        .collect();
    out.push(("count".into(), json!(shares.len())));
    out.push(("sum".into(), json!(round4(shares.iter().sum()))));
    out.push((
        "min".into(),
        json!(shares.iter().cloned().fold(f64::INFINITY, f64::min)),
    ));
    out.push(("max".into(), json!(shares.first().cloned().unwrap_or(0.0))));
    Ok(out)
}

/// Every counter of the cgroup (see kcell::cgroup::stats).
fn stats(cg: &ContainerCgroup) -> Vec<(String, Value)> {
    match serde_json::to_value(cg.stats()) {
        Ok(Value::Object(map)) => map.into_iter().filter(|(_, v)| !v.is_null()).collect(),
        _ => Vec::new(),
    }
}

fn read_counter(pid: i32) -> Option<u64> {
    fs::read_to_string(format!("/proc/{pid}/root/tmp/counter"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Freezes the cgroup while the container's counter (/tmp/counter inside,
/// read through /proc/PID/root) runs, then thaws it.
fn freeze(cg: &ContainerCgroup, pid: i32, over: Duration) -> Result<Vec<(String, Value)>, String> {
    let pause = Duration::from_millis(300);
    let counter = || read_counter(pid).ok_or("no counter in /tmp/counter of the container");
    let c0 = counter()?;
    std::thread::sleep(pause);
    let c1 = counter()?;
    cg.set_frozen(true).map_err(|e| e.to_string())?;
    let f0 = counter()?;
    std::thread::sleep(over);
    let f1 = counter()?;
    cg.set_frozen(false).map_err(|e| e.to_string())?;
    std::thread::sleep(pause);
    let a = counter()?;
    Ok(vec![
        ("running_delta".into(), json!(c1.saturating_sub(c0))),
        ("frozen_delta".into(), json!(f1.saturating_sub(f0))),
        ("thawed_delta".into(), json!(a.saturating_sub(f1))),
    ])
}

/// The CPUs the container's processes were seen on (proc(5) field 39, processor).
fn cpu_placement(cg: &ContainerCgroup, over: Duration) -> Result<Vec<(String, Value)>, String> {
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + over;
    while Instant::now() < deadline {
        for pid in cg.pids() {
            let tasks = fs::read_dir(format!("/proc/{pid}/task"))
                .map(|rd| {
                    rd.filter_map(Result::ok)
                        .map(|e| e.path())
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            for t in tasks {
                if let Some(cpu) = fs::read_to_string(t.join("stat")).ok().and_then(|s| {
                    s.rsplit_once(')')?
                        .1
                        .split_whitespace()
                        .nth(36)?
                        .parse::<u32>()
                        .ok()
                }) {
                    seen.insert(cpu);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let list: Vec<u32> = seen.into_iter().collect();
    Ok(vec![(
        "cpus_seen".into(),
        json!(kcell::cgroup::resources::format_cpu_list(&list)),
    )])
}
