//! Usage counters of a container's cgroup, read the same way on v1 and v2.

use super::layout::Version;
use super::ContainerCgroup;
use std::fs;
use std::path::Path;

/// What the kernel counted for a cgroup. None where the host lacks the file.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    /// CPU time used, in ns (v1 cpuacct.usage, v2 cpu.stat usage_usec x 1000).
    pub cpu_usage_ns: Option<u64>,
    /// Memory in use now, in bytes (v1 memory.usage_in_bytes, v2 memory.current).
    pub memory_bytes: Option<u64>,
    /// Peak memory, in bytes (v1 memory.max_usage_in_bytes, v2 memory.peak).
    pub memory_peak_bytes: Option<u64>,
    /// Swap in use, in bytes (v1 memsw - memory, v2 memory.swap.current).
    pub swap_bytes: Option<u64>,
    /// Times the limit was hit (v1 memory.failcnt, v2 memory.events max).
    pub memory_limit_hits: Option<u64>,
    /// OOM events (v1: under_oom is a state, so memory.events-like "oom" is
    /// taken from oom_control's oom_kill on v1; v2 memory.events oom).
    pub oom: Option<u64>,
    /// Processes killed by the OOM killer (v1 memory.oom_control oom_kill, v2 memory.events oom_kill).
    pub oom_kill: Option<u64>,
    /// Tasks now (pids.current).
    pub pids_current: Option<u64>,
    /// Forks refused by pids.max (pids.events max, both versions).
    pub pids_max_events: Option<u64>,
    /// Bytes read from block devices (v1 blkio.throttle.io_service_bytes Read, v2 io.stat rbytes).
    pub io_read_bytes: Option<u64>,
    /// Bytes written (v1 ... Write, v2 io.stat wbytes).
    pub io_write_bytes: Option<u64>,
}

fn number(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The value after `key` in a flat "key value" file (memory.events, cpu.stat).
fn keyed(path: &Path, key: &str) -> Option<u64> {
    fs::read_to_string(path).ok()?.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

/// Sums `key=N` fields over the lines of v2 io.stat.
fn io_stat_sum(path: &Path, key: &str) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    Some(
        text.lines()
            .flat_map(|l| l.split_whitespace())
            .filter_map(|f| f.strip_prefix(key)?.strip_prefix('=')?.parse::<u64>().ok())
            .sum(),
    )
}

/// Sums the "MAJ:MIN Op N" lines of v1 blkio files for one op.
fn blkio_sum(path: &Path, op: &str) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    Some(
        text.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() == 3 && f[1] == op).then(|| f[2].parse::<u64>().ok())?
            })
            .sum(),
    )
}

impl ContainerCgroup {
    /// Reads every counter this host has.
    pub fn stats(&self) -> Stats {
        let at = |controller: &str, file: &str| self.dir_of(controller).map(|d| d.join(file));
        match self.version() {
            None => Stats::default(),
            Some(Version::V1) => {
                let memory = at("memory", "memory.usage_in_bytes").and_then(|p| number(&p));
                let memsw = at("memory", "memory.memsw.usage_in_bytes").and_then(|p| number(&p));
                let oom_kill =
                    at("memory", "memory.oom_control").and_then(|p| keyed(&p, "oom_kill"));
                Stats {
                    cpu_usage_ns: at("cpuacct", "cpuacct.usage").and_then(|p| number(&p)),
                    memory_bytes: memory,
                    memory_peak_bytes: at("memory", "memory.max_usage_in_bytes")
                        .and_then(|p| number(&p)),
                    swap_bytes: memsw.zip(memory).map(|(s, m)| s.saturating_sub(m)),
                    memory_limit_hits: at("memory", "memory.failcnt").and_then(|p| number(&p)),
                    oom: oom_kill,
                    oom_kill,
                    pids_current: at("pids", "pids.current").and_then(|p| number(&p)),
                    pids_max_events: at("pids", "pids.events").and_then(|p| keyed(&p, "max")),
                    io_read_bytes: at("blkio", "blkio.throttle.io_service_bytes")
                        .and_then(|p| blkio_sum(&p, "Read")),
                    io_write_bytes: at("blkio", "blkio.throttle.io_service_bytes")
                        .and_then(|p| blkio_sum(&p, "Write")),
                }
            }
            Some(Version::V2) => {
                let f = |file: &str| at("unified", file);
                Stats {
                    cpu_usage_ns: f("cpu.stat")
                        .and_then(|p| keyed(&p, "usage_usec"))
                        .map(|us| us * 1000),
                    memory_bytes: f("memory.current").and_then(|p| number(&p)),
                    memory_peak_bytes: f("memory.peak").and_then(|p| number(&p)),
                    swap_bytes: f("memory.swap.current").and_then(|p| number(&p)),
                    memory_limit_hits: f("memory.events").and_then(|p| keyed(&p, "max")),
                    oom: f("memory.events").and_then(|p| keyed(&p, "oom")),
                    oom_kill: f("memory.events").and_then(|p| keyed(&p, "oom_kill")),
                    pids_current: f("pids.current").and_then(|p| number(&p)),
                    pids_max_events: f("pids.events").and_then(|p| keyed(&p, "max")),
                    io_read_bytes: f("io.stat").and_then(|p| io_stat_sum(&p, "rbytes")),
                    io_write_bytes: f("io.stat").and_then(|p| io_stat_sum(&p, "wbytes")),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::fake;
    use super::*;

    #[test]
    fn v1_counters_from_a_fake_cgroupfs() {
        let (_t, cg) = fake(
            Version::V1,
            &[
                ("cpuacct", "cpuacct.usage", "2000000000\n"),
                ("memory", "memory.usage_in_bytes", "1000\n"),
                ("memory", "memory.memsw.usage_in_bytes", "1500\n"),
                (
                    "memory",
                    "memory.oom_control",
                    "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
                ),
                ("pids", "pids.events", "max 2\n"),
                (
                    "blkio",
                    "blkio.throttle.io_service_bytes",
                    "7:0 Read 4194304\n7:0 Write 0\n8:0 Read 10\nTotal 4194314\n",
                ),
            ],
        );
        let s = cg.stats();
        assert_eq!(s.cpu_usage_ns, Some(2_000_000_000));
        assert_eq!(s.swap_bytes, Some(500));
        assert_eq!(s.oom_kill, Some(3));
        assert_eq!(s.pids_max_events, Some(2));
        assert_eq!(s.io_read_bytes, Some(4_194_314));
        assert_eq!(s.io_write_bytes, Some(0));
        assert_eq!(s.memory_peak_bytes, None);
    }

    #[test]
    fn v2_counters_from_a_fake_cgroupfs() {
        let (_t, cg) = fake(
            Version::V2,
            &[
                ("unified", "cpu.stat", "usage_usec 1500\nuser_usec 1000\n"),
                (
                    "unified",
                    "memory.events",
                    "low 0\nhigh 0\nmax 9\noom 1\noom_kill 1\n",
                ),
                (
                    "unified",
                    "io.stat",
                    "7:0 rbytes=100 wbytes=5 rios=1\n8:0 rbytes=1 wbytes=0\n",
                ),
                ("unified", "memory.swap.current", "0\n"),
            ],
        );
        let s = cg.stats();
        assert_eq!(s.cpu_usage_ns, Some(1_500_000));
        assert_eq!(
            (s.oom, s.oom_kill, s.memory_limit_hits),
            (Some(1), Some(1), Some(9))
        );
        assert_eq!((s.io_read_bytes, s.io_write_bytes), (Some(101), Some(5)));
        assert_eq!(s.swap_bytes, Some(0));
    }
}
