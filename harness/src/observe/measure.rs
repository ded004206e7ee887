//! Measurements taken on the host while a run holds: what the kernel
//! counted for the container's cgroup (read by [`super::cgroupfs`]) and
//! for its processes (/proc, through the `procfs` crate).

use super::cgroupfs::{Cgroup, Layout};
use crate::case::{Measure, MeasureKind};
use serde_json::{json, Value};
use std::fs;
use std::time::{Duration, Instant};

fn seconds(m: &Measure, default: f64) -> Duration {
    Duration::from_secs_f64(m.seconds.unwrap_or(default))
}

/// Takes the measurement `m` of the held runs `runs` (name, host PID of the
/// first process); most measure one run, `cpu_share` any number at once.
pub fn measure(m: &Measure, runs: &[(String, i32)]) -> Result<Vec<(String, Value)>, String> {
    let layout = Layout::read();
    let cgroups: Vec<(String, Cgroup)> = runs
        .iter()
        .map(|(name, pid)| {
            layout
                .of_pid(*pid)
                .map(|cg| (name.clone(), cg))
                .ok_or_else(|| format!("no cgroup for pid {pid} (/proc/{pid}/cgroup)"))
        })
        .collect::<Result<_, _>>()?;
    let (cg, pid) = match (cgroups.first(), runs.first()) {
        (Some((_, cg)), Some((_, pid))) => (cg, *pid),
        _ => return Err("no run to measure".into()),
    };
    match m.kind {
        MeasureKind::CpuShare => cpu_share(&cgroups, &m.shares, seconds(m, 3.0)),
        MeasureKind::ProcessShares => process_shares(cg, seconds(m, 3.0)),
        MeasureKind::CgroupStats => Ok(stats(cg)),
        MeasureKind::Freeze => freeze(cg, pid, seconds(m, 1.0)),
        MeasureKind::CpuPlacement => cpu_placement(cg, seconds(m, 1.0)),
        MeasureKind::ThreadQuota => thread_quota(cg, pid, seconds(m, 3.0)),
    }
}

/// Each cgroup's CPU usage over the same wall interval, from its own
/// counter (v1 cpuacct.usage, v2 cpu.stat usage_usec), in CPUs. With several
/// runs each also gets its fraction of their total, the weight its cgroup
/// holds (v1 cpu.shares, v2 cpu.weight), the fraction those weights promise
/// (`expected`: the kernel's promise is the ratio of weights, whatever a
/// runtime converted shares to) and the difference (`deviation`). With
/// `shares`, on v2, `conversion` names the formula the runtime's weights
/// follow.
fn cpu_share(
    cgroups: &[(String, Cgroup)],
    shares_asked: &[u64],
    over: Duration,
) -> Result<Vec<(String, Value)>, String> {
    let usage = |cg: &Cgroup| {
        cg.cpu_usage_ns()
            .ok_or("the cgroup has no CPU usage counter (cpuacct.usage / cpu.stat)")
    };
    // Let the spinners reach their steady state (the first period may be unthrottled).
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    let u0: Vec<u64> = cgroups
        .iter()
        .map(|(_, cg)| usage(cg))
        .collect::<Result<_, _>>()?;
    std::thread::sleep(over);
    let u1: Vec<u64> = cgroups
        .iter()
        .map(|(_, cg)| usage(cg))
        .collect::<Result<_, _>>()?;
    let wall = t0.elapsed().as_secs_f64();
    let shares: Vec<f64> = u0
        .iter()
        .zip(&u1)
        .map(|(a, b)| b.saturating_sub(*a) as f64 / 1e9 / wall)
        .collect();
    let total: f64 = shares.iter().sum();
    let mut out = vec![("wall_s".to_string(), json!(round4(wall)))];
    if cgroups.len() == 1 {
        out.push(("share".into(), json!(round4(shares[0]))));
    } else {
        let weights: Vec<u64> = cgroups
            .iter()
            .map(|(name, cg)| {
                cg.cpu_weight().ok_or_else(|| {
                    format!("{name}'s cgroup has no readable cpu.weight / cpu.shares")
                })
            })
            .collect::<Result<_, _>>()?;
        let sum: u64 = weights.iter().sum();
        for (((name, _), share), weight) in cgroups.iter().zip(&shares).zip(&weights) {
            let fraction = share / total.max(1e-9);
            let expected = *weight as f64 / sum.max(1) as f64;
            out.push((format!("{name}.share"), json!(round4(*share))));
            out.push((format!("{name}.fraction"), json!(round4(fraction))));
            out.push((format!("{name}.weight"), json!(weight)));
            out.push((format!("{name}.expected"), json!(round4(expected))));
            out.push((
                format!("{name}.deviation"),
                json!(round4(fraction - expected)),
            ));
        }
        out.push(("total".into(), json!(round4(total))));
        let v2 = cgroups.first().is_some_and(|(_, cg)| cg.is_v2());
        if v2 && shares_asked.len() == weights.len() {
            out.push((
                "conversion".into(),
                json!(conversion(shares_asked, &weights)),
            ));
        }
    }
    Ok(out)
}

/// runc's linear shares-to-weight conversion (runc before 1.3.2, crun
/// before 1.23): [2, 262144] onto [1, 10000].
fn linear_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    1 + (shares.saturating_sub(2) * 9999) / 262_142
}

/// The quadratic conversion of opencontainers/cgroups#20 (runc 1.3.2,
/// crun 1.23, youki 0.5.7): log2(shares) through a parabola that maps 2,
/// 1024 and 262144 to 1, 100 and 10000.
fn quadratic_weight(shares: u64) -> u64 {
    match shares {
        0 => 0,
        1..=2 => 1,
        262_144.. => 10_000,
        _ => {
            let l = (shares as f64).log2();
            let exponent = (l * l + 125.0 * l) / 612.0 - 7.0 / 34.0;
            10f64.powf(exponent).ceil() as u64
        }
    }
}

/// Which documented conversion `weights` are of `shares`.
fn conversion(shares: &[u64], weights: &[u64]) -> &'static str {
    let all = |f: fn(u64) -> u64| shares.iter().zip(weights).all(|(s, w)| f(*s) == *w);
    if all(linear_weight) {
        "linear"
    } else if all(quadratic_weight) {
        "quadratic"
    } else {
        "other"
    }
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// utime + stime of a process, in clock ticks (proc(5) fields 14 and 15).
fn cpu_ticks(pid: i32) -> Option<u64> {
    let s = procfs::process::Process::new(pid).ok()?.stat().ok()?;
    Some(s.utime + s.stime)
}

/// utime + stime of one thread of `pid`.
fn thread_ticks(pid: i32, tid: i32) -> Option<u64> {
    let s = procfs::process::Process::new(pid)
        .ok()?
        .task_from_tid(tid)
        .ok()?
        .stat()
        .ok()?;
    Some(s.utime + s.stime)
}

/// The threads of `pid`.
fn threads(pid: i32) -> Vec<i32> {
    procfs::process::Process::new(pid)
        .and_then(|p| p.tasks())
        .map(|t| t.filter_map(Result::ok).map(|t| t.tid).collect())
        .unwrap_or_default()
}

/// Each process's share of one CPU over the interval, from /proc/PID/stat.
fn process_shares(cg: &Cgroup, over: Duration) -> Result<Vec<(String, Value)>, String> {
    let hz = procfs::ticks_per_second() as f64;
    std::thread::sleep(Duration::from_millis(300));
    let before: Vec<(i32, u64)> = cg
        .pids()
        .into_iter()
        .filter_map(|p| Some((p, cpu_ticks(p)?)))
        .collect();
    let usage0 = cg.cpu_usage_ns();
    let t0 = Instant::now();
    std::thread::sleep(over);
    let wall = t0.elapsed().as_secs_f64();
    let usage1 = cg.cpu_usage_ns();
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
    // The cgroup's own nanosecond counter over the same interval: what the
    // quota is enforced on, without the ticks' sampling (a guest whose vCPU
    // the host starves loses ticks: 52 of 60 seen once under TCG).
    if let (Some(a), Some(b)) = (usage0, usage1) {
        out.push((
            "cgroup".into(),
            json!(round4(b.saturating_sub(a) as f64 / 1e9 / wall)),
        ));
    }
    out.push((
        "min".into(),
        json!(shares.iter().cloned().fold(f64::INFINITY, f64::min)),
    ));
    out.push(("max".into(), json!(shares.first().cloned().unwrap_or(0.0))));
    Ok(out)
}

/// Every counter of the cgroup (see cgroupfs::Cgroup::counters).
fn stats(cg: &Cgroup) -> Vec<(String, Value)> {
    cg.counters()
        .into_iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect()
}

/// cgroup v1 places single threads by TID (the `tasks` file): one thread
/// of the container's process is moved into a child cgroup limited to 50%,
/// the others stay; each thread's share is measured from
/// /proc/PID/task/TID/stat, and the thread is moved back before the child
/// cgroup is removed.
fn thread_quota(cg: &Cgroup, pid: i32, over: Duration) -> Result<Vec<(String, Value)>, String> {
    let tids: Vec<i32> = threads(pid).into_iter().filter(|t| *t != pid).collect();
    // The busiest thread besides the main one (the others may be idle helpers).
    let moved = *tids
        .iter()
        .max_by_key(|t| thread_ticks(pid, **t).unwrap_or(0))
        .ok_or("the process has no second thread to move")?;
    let cpu = cg.dir("cpu").ok_or("no cpu hierarchy")?;
    let acct = cg.dir("cpuacct").unwrap_or(cpu);
    let mut made = Vec::new();
    let result = (|| -> Result<Vec<(String, Value)>, String> {
        for dir in [cpu, acct] {
            let child = dir.join("kcell-thread");
            if !made.contains(&child) {
                fs::create_dir(&child).map_err(|e| format!("mkdir {}: {e}", child.display()))?;
                made.push(child);
            }
        }
        let child = cpu.join("kcell-thread");
        fs::write(child.join("cpu.cfs_period_us"), "100000")
            .map_err(|e| format!("write cpu.cfs_period_us: {e}"))?;
        fs::write(child.join("cpu.cfs_quota_us"), "50000")
            .map_err(|e| format!("write 50000 to cpu.cfs_quota_us: {e}"))?;
        for dir in &made {
            fs::write(dir.join("tasks"), moved.to_string())
                .map_err(|e| format!("write TID {moved} to {}/tasks: {e}", dir.display()))?;
        }
        let hz = procfs::ticks_per_second() as f64;
        let ticks = |tid: i32| thread_ticks(pid, tid);
        std::thread::sleep(Duration::from_millis(300));
        let before: Vec<(i32, u64)> = std::iter::once(pid)
            .chain(tids.iter().copied())
            .filter_map(|t| Some((t, ticks(t)?)))
            .collect();
        let t0 = Instant::now();
        std::thread::sleep(over);
        let wall = t0.elapsed().as_secs_f64();
        let share = |tid: i32| {
            before
                .iter()
                .find(|(t, _)| *t == tid)
                .and_then(|(_, b)| Some(round4(ticks(tid)?.saturating_sub(*b) as f64 / hz / wall)))
        };
        let others: Vec<f64> = std::iter::once(pid)
            .chain(tids.iter().copied())
            .filter(|t| *t != moved)
            .filter_map(share)
            .collect();
        Ok(vec![
            ("moved_share".into(), json!(share(moved).unwrap_or(0.0))),
            (
                "other_share".into(),
                json!(others.iter().cloned().fold(0.0, f64::max)),
            ),
        ])
    })();
    // Back to the container's cgroup, then remove the child cgroup.
    for dir in &made {
        if let Some(parent) = dir.parent() {
            let _ = fs::write(parent.join("tasks"), moved.to_string());
        }
        let _ = fs::remove_dir(dir);
    }
    result
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
fn freeze(cg: &Cgroup, pid: i32, over: Duration) -> Result<Vec<(String, Value)>, String> {
    let pause = Duration::from_millis(300);
    let counter = || read_counter(pid).ok_or("no counter in /tmp/counter of the container");
    let c0 = counter()?;
    std::thread::sleep(pause);
    let c1 = counter()?;
    cg.set_frozen(true)?;
    let f0 = counter()?;
    std::thread::sleep(over);
    let f1 = counter()?;
    cg.set_frozen(false)?;
    std::thread::sleep(pause);
    let a = counter()?;
    Ok(vec![
        ("running_delta".into(), json!(c1.saturating_sub(c0))),
        ("frozen_delta".into(), json!(f1.saturating_sub(f0))),
        ("thawed_delta".into(), json!(a.saturating_sub(f1))),
    ])
}

/// The CPUs the container's processes were seen on (proc(5) field 39, processor).
fn cpu_placement(cg: &Cgroup, over: Duration) -> Result<Vec<(String, Value)>, String> {
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + over;
    while Instant::now() < deadline {
        for pid in cg.pids() {
            let Ok(p) = procfs::process::Process::new(pid) else {
                continue;
            };
            for t in p.tasks().into_iter().flatten().flatten() {
                if let Some(cpu) = t.stat().ok().and_then(|s| s.processor) {
                    seen.insert(cpu as u32);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let list: Vec<u32> = seen.into_iter().collect();
    Ok(vec![("cpus_seen".into(), json!(cpu_list(&list)))])
}

/// CPU numbers as a kernel list ("0-1,3").
pub fn cpu_list(cpus: &[u32]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let start = cpus[i];
        while i + 1 < cpus.len() && cpus[i + 1] == cpus[i] + 1 {
            i += 1;
        }
        out.push(if start == cpus[i] {
            start.to_string()
        } else {
            format!("{start}-{}", cpus[i])
        });
        i += 1;
    }
    out.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_documented_conversions_of_2048_512_80() {
        let shares = [2048, 512, 80];
        let lin: Vec<u64> = shares.iter().map(|s| linear_weight(*s)).collect();
        let quad: Vec<u64> = shares.iter().map(|s| quadratic_weight(*s)).collect();
        assert_eq!(lin, [79, 20, 3]);
        assert_eq!(quad, [174, 59, 15]);
        assert_eq!(quadratic_weight(1024), 100);
        assert_eq!(conversion(&shares, &lin), "linear");
        assert_eq!(conversion(&shares, &quad), "quadratic");
        assert_eq!(conversion(&shares, &[100, 100, 100]), "other");
    }
}
