//! The one resource model (what the CLI's limit flags mean) and the table
//! that turns it into v1 or v2 file writes. Everything here is pure.

use super::layout::Version;

/// The CFS period kcell uses, as Docker does (100 ms).
pub const CPU_PERIOD_US: u64 = 100_000;
/// The kernel's smallest quota (1 ms).
pub const CPU_QUOTA_MIN_US: u64 = 1_000;
/// The smallest memory limit accepted: one page.
pub const MEMORY_MIN: u64 = 4096;

/// Errors in a limit given on the command line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResourceError {
    /// Not a size like 64k, 10m, 1g or a byte count.
    #[error("size '{0}' is malformed: expected a non-negative number with an optional unit b, k, m, g or t (e.g. 64k, 10m, 1g)")]
    Size(String),
    /// Not a positive decimal number of CPUs.
    #[error(
        "--cpus '{0}' is not allowed: expected a number of CPUs of at least 0.01 (e.g. 0.2, 1.5)"
    )]
    Cpus(String),
    /// cpu.shares outside 2..=262144.
    #[error("--cpu-shares '{0}' is not allowed: expected 2 to 262144")]
    Shares(String),
    /// A CPU list like 0-1,3 that did not parse, or names offline CPUs.
    #[error("--cpuset-cpus '{0}' is not allowed: {1}")]
    Cpuset(String, String),
    /// Memory below one page.
    #[error("--memory {0} is below the smallest limit the kernel can apply: at least 4096 bytes (one page)")]
    MemoryTooSmall(u64),
    /// --swap without --memory (v1 memsw is memory + swap).
    #[error("--swap needs --memory: the swap limit is set on top of a memory limit")]
    SwapWithoutMemory,
    /// --pids below 1.
    #[error("--pids '{0}' is not allowed: expected a whole number of at least 1")]
    Pids(String),
    /// MAJ:MIN:RATE that did not parse.
    #[error("device rate '{0}' is malformed: expected MAJOR:MINOR:RATE, e.g. 7:0:1m")]
    DeviceRate(String),
    /// A device rule that did not parse.
    #[error(transparent)]
    DeviceRule(#[from] super::devices::RuleError),
    /// A block device that the kernel does not know.
    #[error("unknown block device {0}:{1} (no /sys/dev/block/{0}:{1})")]
    UnknownDevice(u32, u32),
    /// A blkio weight outside 10..=1000.
    #[error("blkio weight {0} is not allowed: expected 10 to 1000")]
    BlkioWeight(u16),
    /// memory.swappiness outside 0..=100.
    #[error("memory swappiness {0} is not allowed: expected 0 to 100")]
    Swappiness(u64),
    /// A limit only cgroup v1 has, asked of a v2 cgroup.
    #[error("{what} ({file}) exists only on cgroup v1: cgroup v2 has no such file")]
    V1Only {
        /// The limit.
        what: &'static str,
        /// Its v1 file.
        file: &'static str,
    },
}

/// Parses a size: bytes, or a number with unit b/k/m/g/t (binary multiples).
pub fn parse_size(text: &str) -> Result<u64, ResourceError> {
    let bad = || ResourceError::Size(text.to_string());
    let t = text.trim().to_ascii_lowercase();
    let t = t
        .strip_suffix('b')
        .filter(|s| !s.is_empty() && s.ends_with(|c: char| c.is_ascii_alphabetic()))
        .unwrap_or(&t);
    let (digits, shift) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 10),
        Some('m') => (&t[..t.len() - 1], 20),
        Some('g') => (&t[..t.len() - 1], 30),
        Some('t') => (&t[..t.len() - 1], 40),
        Some('b') => (&t[..t.len() - 1], 0),
        _ => (t, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    n.checked_mul(1u64 << shift).ok_or_else(bad)
}

/// CPU bandwidth: `quota` µs of CPU time per `period` µs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CpuMax {
    /// µs per period.
    pub quota_us: u64,
    /// Period in µs.
    pub period_us: u64,
}

/// Parses `--cpus` (0.2 = 20% of one CPU, 2.5 = two and a half CPUs).
pub fn parse_cpus(text: &str) -> Result<CpuMax, ResourceError> {
    let bad = || ResourceError::Cpus(text.to_string());
    let cpus: f64 = text.trim().parse().map_err(|_| bad())?;
    if !cpus.is_finite() || cpus <= 0.0 {
        return Err(bad());
    }
    let quota_us = (cpus * CPU_PERIOD_US as f64).round() as u64;
    if quota_us < CPU_QUOTA_MIN_US {
        return Err(bad());
    }
    Ok(CpuMax {
        quota_us,
        period_us: CPU_PERIOD_US,
    })
}

/// Parses `--cpu-shares` (v1 range 2..=262144).
pub fn parse_shares(text: &str) -> Result<u64, ResourceError> {
    match text.trim().parse::<u64>() {
        Ok(n) if (2..=262_144).contains(&n) => Ok(n),
        _ => Err(ResourceError::Shares(text.to_string())),
    }
}

/// cpu.shares -> cpu.weight, the conversion runc and crun use: maps
/// [2, 262144] linearly onto [1, 10000].
pub fn shares_to_weight(shares: u64) -> u64 {
    1 + ((shares.clamp(2, 262_144) - 2) * 9999) / 262_142
}

/// cpu.weight -> cpu.shares, the inverse of [`shares_to_weight`] (rounded).
pub fn weight_to_shares(weight: u64) -> u64 {
    2 + ((weight.clamp(1, 10_000) - 1) * 262_142).div_ceil(9999)
}

/// Parses a CPU list ("0-1,3") into CPU numbers, checked against `online`.
pub fn parse_cpu_list(text: &str, online: &[u32]) -> Result<Vec<u32>, ResourceError> {
    let err = |why: String| ResourceError::Cpuset(text.to_string(), why);
    let mut cpus = Vec::new();
    for part in text.split(',').map(str::trim) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b): (u32, u32) = match (a.trim().parse(), b.trim().parse()) {
            (Ok(a), Ok(b)) if a <= b => (a, b),
            _ => return Err(err("expected a list like 0-1,3".into())),
        };
        // Checked before the range is expanded: "0-4000000000" is one
        // offline CPU away from an error, not four billion entries (found
        // by the parsers fuzz target).
        if let Some(off) = [a, b].into_iter().find(|c| !online.contains(c)) {
            return Err(err(format!(
                "CPU {off} is not online (online: {})",
                format_cpu_list(online)
            )));
        }
        cpus.extend(a..=b);
    }
    cpus.sort_unstable();
    cpus.dedup();
    if let Some(off) = cpus.iter().find(|c| !online.contains(c)) {
        return Err(err(format!(
            "CPU {off} is not online (online: {})",
            format_cpu_list(online)
        )));
    }
    Ok(cpus)
}

/// Formats CPU numbers as a kernel list ("0-1,3").
pub fn format_cpu_list(cpus: &[u32]) -> String {
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

/// A bytes-per-second limit on one block device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceRate {
    /// Device major number.
    pub major: u32,
    /// Device minor number.
    pub minor: u32,
    /// Bytes per second.
    pub bytes_per_sec: u64,
}

/// Parses `MAJ:MIN:RATE` (RATE a size, e.g. 1m).
pub fn parse_device_rate(text: &str) -> Result<DeviceRate, ResourceError> {
    let bad = || ResourceError::DeviceRate(text.to_string());
    let mut parts = text.splitn(3, ':');
    let (Some(maj), Some(min), Some(rate)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    let rate = parse_size(rate).map_err(|_| bad())?;
    if rate == 0 {
        return Err(bad());
    }
    Ok(DeviceRate {
        major: maj.trim().parse().map_err(|_| bad())?,
        minor: min.trim().parse().map_err(|_| bad())?,
        bytes_per_sec: rate,
    })
}

/// Parses a device rule to deny, `TYPE MAJ:MIN ACCESS` (`*` allowed for numbers).
pub fn parse_device_rule(text: &str) -> Result<super::devices::Rule, ResourceError> {
    super::devices::Rule::parse(text, false).map_err(Into::into)
}

/// A container's limits: the one model both backends implement.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Resources {
    /// CPU bandwidth (`--cpus`).
    pub cpu_max: Option<CpuMax>,
    /// Relative CPU weight in v1 shares (`--cpu-shares`).
    pub cpu_shares: Option<u64>,
    /// Allowed CPUs (`--cpuset-cpus`).
    pub cpuset_cpus: Option<Vec<u32>>,
    /// Memory limit in bytes (`--memory`).
    pub memory: Option<u64>,
    /// Memory kept from reclaim under pressure, in bytes (v1 soft limit, v2 memory.low).
    #[serde(default)]
    pub memory_reservation: Option<u64>,
    /// Swap allowed on top of memory, in bytes (`--swap`; 0 = none).
    pub swap: Option<u64>,
    /// Most tasks (`--pids`).
    pub pids: Option<u64>,
    /// Read throttles (`--device-read-bps`).
    pub read_bps: Vec<DeviceRate>,
    /// Write throttles (`--device-write-bps`).
    pub write_bps: Vec<DeviceRate>,
    /// Memory nodes the container may use (cpuset.mems, e.g. "0").
    #[serde(default)]
    pub cpuset_mems: Option<String>,
    /// Relative block I/O weight, 10..=1000 (v1 blkio.weight, v2 io.weight).
    #[serde(default)]
    pub blkio_weight: Option<u16>,
    /// Device access rules, in order (`--device-deny`, OCI linux.resources.devices).
    #[serde(default)]
    pub devices: Vec<super::devices::Rule>,
    /// v1 only: how readily the cgroup's pages are swapped, 0..=100
    /// (memory.swappiness; v2 has one global knob).
    #[serde(default)]
    pub memory_swappiness: Option<u64>,
    /// v1 only: a task over the limit waits instead of being OOM-killed
    /// (memory.oom_control).
    #[serde(default)]
    pub oom_kill_disable: bool,
    /// v1 only: kernel memory limit in bytes (memory.kmem.limit_in_bytes).
    #[serde(default)]
    pub kernel_memory: Option<u64>,
    /// v1 only: TCP buffer memory limit in bytes (memory.kmem.tcp.limit_in_bytes).
    #[serde(default)]
    pub kernel_tcp_memory: Option<u64>,
    /// v1 only: real-time scheduling period in µs (cpu.rt_period_us).
    #[serde(default)]
    pub cpu_rt_period_us: Option<u64>,
    /// v1 only: real-time runtime per period in µs, -1 unlimited (cpu.rt_runtime_us).
    #[serde(default)]
    pub cpu_rt_runtime_us: Option<i64>,
}

/// One write of a value to a controller's file in the container's cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The controller whose hierarchy holds the file (v1), or its name (v2).
    pub controller: &'static str,
    /// The file name.
    pub file: &'static str,
    /// What is written.
    pub value: String,
}

fn set(controller: &'static str, file: &'static str, value: impl ToString) -> Setting {
    Setting {
        controller,
        file,
        value: value.to_string(),
    }
}

impl Resources {
    /// True when no limit is set.
    pub fn is_empty(&self) -> bool {
        *self == Resources::default()
    }

    /// Checks relations between limits (those a single flag cannot).
    pub fn validate(&self) -> Result<(), ResourceError> {
        if let Some(m) = self.memory {
            if m < MEMORY_MIN {
                return Err(ResourceError::MemoryTooSmall(m));
            }
        }
        if self.swap.is_some() && self.memory.is_none() {
            return Err(ResourceError::SwapWithoutMemory);
        }
        if let Some(w) = self.blkio_weight {
            if !(10..=1000).contains(&w) {
                return Err(ResourceError::BlkioWeight(w));
            }
        }
        if let Some(s) = self.memory_swappiness.filter(|s| *s > 100) {
            return Err(ResourceError::Swappiness(s));
        }
        Ok(())
    }

    /// The v1-only limits that are set, each with its v1 file.
    fn v1_only(&self) -> Vec<(&'static str, &'static str)> {
        [
            (
                self.memory_swappiness.is_some(),
                "memory swappiness",
                "memory.swappiness",
            ),
            (
                self.oom_kill_disable,
                "disabling the OOM killer",
                "memory.oom_control",
            ),
            (
                self.kernel_memory.is_some(),
                "a kernel memory limit",
                "memory.kmem.limit_in_bytes",
            ),
            (
                self.kernel_tcp_memory.is_some(),
                "a kernel TCP memory limit",
                "memory.kmem.tcp.limit_in_bytes",
            ),
            (
                self.cpu_rt_period_us.is_some(),
                "a real-time CPU period",
                "cpu.rt_period_us",
            ),
            (
                self.cpu_rt_runtime_us.is_some(),
                "a real-time CPU runtime",
                "cpu.rt_runtime_us",
            ),
        ]
        .into_iter()
        .filter(|(set, _, _)| *set)
        .map(|(_, what, file)| (what, file))
        .collect()
    }

    /// The controllers these limits need.
    pub fn controllers(&self) -> Vec<&'static str> {
        let mut c = Vec::new();
        if self.cpu_max.is_some()
            || self.cpu_shares.is_some()
            || self.cpu_rt_period_us.is_some()
            || self.cpu_rt_runtime_us.is_some()
        {
            c.push("cpu");
        }
        if self.cpuset_cpus.is_some() || self.cpuset_mems.is_some() {
            c.push("cpuset");
        }
        if self.memory.is_some()
            || self.memory_reservation.is_some()
            || self.memory_swappiness.is_some()
            || self.oom_kill_disable
            || self.kernel_memory.is_some()
            || self.kernel_tcp_memory.is_some()
        {
            c.push("memory");
        }
        if self.pids.is_some() {
            c.push("pids");
        }
        if !self.read_bps.is_empty() || !self.write_bps.is_empty() || self.blkio_weight.is_some() {
            c.push("blkio");
        }
        c
    }

    /// The file writes that apply these limits on `version`, in order.
    /// This is the v1 <-> v2 mapping as data: the same model, two tables.
    pub fn settings(&self, version: Version) -> Result<Vec<Setting>, ResourceError> {
        let mut out = Vec::new();
        match version {
            Version::V1 => {
                if let Some(c) = self.cpu_max {
                    out.push(set("cpu", "cpu.cfs_period_us", c.period_us));
                    out.push(set("cpu", "cpu.cfs_quota_us", c.quota_us));
                }
                if let Some(s) = self.cpu_shares {
                    out.push(set("cpu", "cpu.shares", s));
                }
                // The period first: a runtime is checked against it.
                if let Some(p) = self.cpu_rt_period_us {
                    out.push(set("cpu", "cpu.rt_period_us", p));
                }
                if let Some(r) = self.cpu_rt_runtime_us {
                    out.push(set("cpu", "cpu.rt_runtime_us", r));
                }
                if let Some(cpus) = &self.cpuset_cpus {
                    out.push(set("cpuset", "cpuset.cpus", format_cpu_list(cpus)));
                }
                if let Some(mems) = &self.cpuset_mems {
                    out.push(set("cpuset", "cpuset.mems", mems));
                }
                if let Some(r) = self.memory_reservation {
                    out.push(set("memory", "memory.soft_limit_in_bytes", r));
                }
                // Kernel memory before any task is charged to the cgroup
                // (kernels before 4.6 refuse a kmem limit on a used one).
                if let Some(k) = self.kernel_memory {
                    out.push(set("memory", "memory.kmem.limit_in_bytes", k));
                }
                if let Some(k) = self.kernel_tcp_memory {
                    out.push(set("memory", "memory.kmem.tcp.limit_in_bytes", k));
                }
                if let Some(s) = self.memory_swappiness {
                    out.push(set("memory", "memory.swappiness", s));
                }
                if self.oom_kill_disable {
                    out.push(set("memory", "memory.oom_control", 1));
                }
                if let Some(m) = self.memory {
                    out.push(set("memory", "memory.limit_in_bytes", m));
                    // v1 limits memory+swap together; the limit must come first.
                    if let Some(s) = self.swap {
                        out.push(set(
                            "memory",
                            "memory.memsw.limit_in_bytes",
                            m.saturating_add(s),
                        ));
                    }
                }
                if let Some(p) = self.pids {
                    out.push(set("pids", "pids.max", p));
                }
                for r in &self.read_bps {
                    out.push(set(
                        "blkio",
                        "blkio.throttle.read_bps_device",
                        format!("{}:{} {}", r.major, r.minor, r.bytes_per_sec),
                    ));
                }
                for r in &self.write_bps {
                    out.push(set(
                        "blkio",
                        "blkio.throttle.write_bps_device",
                        format!("{}:{} {}", r.major, r.minor, r.bytes_per_sec),
                    ));
                }
                if let Some(w) = self.blkio_weight {
                    out.push(set("blkio", "blkio.weight", w));
                }
            }
            Version::V2 => {
                if let Some((what, file)) = self.v1_only().first() {
                    return Err(ResourceError::V1Only { what, file });
                }
                if let Some(c) = self.cpu_max {
                    out.push(set(
                        "cpu",
                        "cpu.max",
                        format!("{} {}", c.quota_us, c.period_us),
                    ));
                }
                if let Some(s) = self.cpu_shares {
                    out.push(set("cpu", "cpu.weight", shares_to_weight(s)));
                }
                if let Some(cpus) = &self.cpuset_cpus {
                    out.push(set("cpuset", "cpuset.cpus", format_cpu_list(cpus)));
                }
                if let Some(mems) = &self.cpuset_mems {
                    out.push(set("cpuset", "cpuset.mems", mems));
                }
                if let Some(r) = self.memory_reservation {
                    out.push(set("memory", "memory.low", r));
                }
                if let Some(m) = self.memory {
                    out.push(set("memory", "memory.max", m));
                    // v2 limits swap alone.
                    if let Some(s) = self.swap {
                        out.push(set("memory", "memory.swap.max", s));
                    }
                }
                if let Some(p) = self.pids {
                    out.push(set("pids", "pids.max", p));
                }
                let mut devices: Vec<(u32, u32)> = self
                    .read_bps
                    .iter()
                    .chain(&self.write_bps)
                    .map(|r| (r.major, r.minor))
                    .collect();
                devices.sort_unstable();
                devices.dedup();
                for (major, minor) in devices {
                    let rate = |list: &[DeviceRate]| {
                        list.iter()
                            .find(|r| (r.major, r.minor) == (major, minor))
                            .map_or("max".to_string(), |r| r.bytes_per_sec.to_string())
                    };
                    out.push(set(
                        "io",
                        "io.max",
                        format!(
                            "{major}:{minor} rbps={} wbps={}",
                            rate(&self.read_bps),
                            rate(&self.write_bps)
                        ),
                    ));
                }
                if let Some(w) = self.blkio_weight {
                    out.push(set(
                        "io",
                        "io.weight",
                        format!("default {}", blkio_to_io_weight(w)),
                    ));
                }
            }
        }
        Ok(out)
    }
}

/// v1 blkio.weight (10..1000) -> v2 io.weight (1..10000), linearly, as runc converts.
pub fn blkio_to_io_weight(w: u16) -> u64 {
    1 + (u64::from(w.clamp(10, 1000)) - 10) * 9999 / 990
}

/// v1 cfs_quota_us + cfs_period_us -> v2 cpu.max ("max" for -1 = unlimited).
pub fn cpu_max_v2(quota_us: i64, period_us: u64) -> String {
    if quota_us < 0 {
        format!("max {period_us}")
    } else {
        format!("{quota_us} {period_us}")
    }
}

/// v2 cpu.max -> v1 (quota, period), quota -1 for "max".
pub fn cpu_max_v1(text: &str) -> Option<(i64, u64)> {
    let mut it = text.split_whitespace();
    let quota = it.next()?;
    let period = it.next().map_or(Some(CPU_PERIOD_US), |p| p.parse().ok())?;
    let quota = if quota == "max" {
        -1
    } else {
        quota.parse().ok()?
    };
    Some((quota, period))
}

/// v1 memsw (memory+swap) -> v2 swap.max (swap only), given the memory limit.
pub fn memsw_to_swap_max(memsw: u64, memory: u64) -> u64 {
    memsw.saturating_sub(memory)
}

/// v1 freezer.state <-> v2 cgroup.freeze.
pub fn freeze_value(version: Version, frozen: bool) -> (&'static str, &'static str) {
    match (version, frozen) {
        (Version::V1, true) => ("freezer.state", "FROZEN"),
        (Version::V1, false) => ("freezer.state", "THAWED"),
        (Version::V2, true) => ("cgroup.freeze", "1"),
        (Version::V2, false) => ("cgroup.freeze", "0"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_cpu_range_is_refused_without_expanding_it() {
        // fuzz/artifacts/parsers/timeout-79ee4f5f: took over 20 s before.
        let started = std::time::Instant::now();
        let err = parse_cpu_list("645-999959999", &[0, 1])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("645-999959999") && err.contains("not online"),
            "{err}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }
    use rstest::rstest;

    #[rstest]
    #[case("64k", 65536)]
    #[case("10m", 10 << 20)]
    #[case("1g", 1 << 30)]
    #[case("1G", 1 << 30)]
    #[case("10mb", 10 << 20)]
    #[case("4096", 4096)]
    #[case("4096b", 4096)]
    #[case("0", 0)]
    fn sizes(#[case] text: &str, #[case] bytes: u64) {
        assert_eq!(parse_size(text), Ok(bytes));
    }

    #[rstest]
    #[case("-1")]
    #[case("")]
    #[case("k")]
    #[case("1.5m")]
    #[case("10x")]
    #[case("99999999999999999999")]
    #[case("17179869184g")]
    fn bad_sizes(#[case] text: &str) {
        assert_eq!(parse_size(text), Err(ResourceError::Size(text.into())));
    }

    #[rstest]
    #[case("0.2", 20_000)]
    #[case("1.5", 150_000)]
    #[case("2.5", 250_000)]
    #[case("0.01", 1_000)]
    fn cpus(#[case] text: &str, #[case] quota: u64) {
        assert_eq!(parse_cpus(text).map(|c| c.quota_us), Ok(quota));
    }

    #[rstest]
    #[case("0")]
    #[case("-1")]
    #[case("0.001")]
    #[case("abc")]
    #[case("inf")]
    fn bad_cpus(#[case] text: &str) {
        assert_eq!(parse_cpus(text), Err(ResourceError::Cpus(text.into())));
    }

    #[rstest]
    #[case(2, 1)]
    #[case(1024, 39)]
    #[case(2048, 79)]
    #[case(512, 20)]
    #[case(262_144, 10_000)]
    fn shares_weight(#[case] shares: u64, #[case] weight: u64) {
        assert_eq!(shares_to_weight(shares), weight);
    }

    #[rstest]
    #[case(1)]
    #[case(39)]
    #[case(100)]
    #[case(10_000)]
    fn weight_round_trip(#[case] weight: u64) {
        assert_eq!(shares_to_weight(weight_to_shares(weight)), weight);
    }

    #[rstest]
    #[case("0", vec![0])]
    #[case("0-1", vec![0, 1])]
    #[case("1,0", vec![0, 1])]
    fn cpu_lists(#[case] text: &str, #[case] cpus: Vec<u32>) {
        assert_eq!(parse_cpu_list(text, &[0, 1]), Ok(cpus));
    }

    #[rstest]
    #[case("2")]
    #[case("0-3")]
    #[case("1-0")]
    #[case("x")]
    fn bad_cpu_lists(#[case] text: &str) {
        assert!(
            matches!(parse_cpu_list(text, &[0, 1]), Err(ResourceError::Cpuset(t, _)) if t == text)
        );
    }

    #[rstest]
    #[case(&[0, 1, 2, 5], "0-2,5")]
    #[case(&[3], "3")]
    #[case(&[], "")]
    fn cpu_list_format(#[case] cpus: &[u32], #[case] text: &str) {
        assert_eq!(format_cpu_list(cpus), text);
    }

    #[rstest]
    #[case("7:0:1m", 7, 0, 1 << 20)]
    #[case("253:16:1048576", 253, 16, 1 << 20)]
    fn device_rates(#[case] text: &str, #[case] maj: u32, #[case] min: u32, #[case] rate: u64) {
        assert_eq!(
            parse_device_rate(text),
            Ok(DeviceRate {
                major: maj,
                minor: min,
                bytes_per_sec: rate
            })
        );
    }

    #[rstest]
    #[case("7:0")]
    #[case("7:0:0")]
    #[case("a:0:1m")]
    #[case("7:0:-1")]
    fn bad_device_rates(#[case] text: &str) {
        assert_eq!(
            parse_device_rate(text),
            Err(ResourceError::DeviceRate(text.into()))
        );
    }

    #[rstest]
    #[case("c 1:3 rwm", true)]
    #[case("b *:* r", true)]
    #[case("x 1:3 rwm", false)]
    #[case("c 1:3 rwx", false)]
    #[case("c 13 rwm", false)]
    fn device_rules(#[case] text: &str, #[case] ok: bool) {
        assert_eq!(parse_device_rule(text).is_ok(), ok);
    }

    fn full() -> Resources {
        Resources {
            cpu_max: Some(CpuMax {
                quota_us: 20_000,
                period_us: 100_000,
            }),
            cpu_shares: Some(1024),
            cpuset_cpus: Some(vec![0]),
            memory: Some(10 << 20),
            swap: Some(0),
            pids: Some(7),
            read_bps: vec![DeviceRate {
                major: 7,
                minor: 0,
                bytes_per_sec: 1 << 20,
            }],
            write_bps: vec![DeviceRate {
                major: 7,
                minor: 0,
                bytes_per_sec: 2 << 20,
            }],
            ..Default::default()
        }
    }

    fn table(settings: Vec<Setting>) -> Vec<(String, String)> {
        settings
            .into_iter()
            .map(|s| (s.file.to_string(), s.value))
            .collect()
    }

    #[test]
    fn v1_table() {
        let got = table(full().settings(Version::V1).expect("v1"));
        let want: Vec<(String, String)> = [
            ("cpu.cfs_period_us", "100000"),
            ("cpu.cfs_quota_us", "20000"),
            ("cpu.shares", "1024"),
            ("cpuset.cpus", "0"),
            ("memory.limit_in_bytes", "10485760"),
            ("memory.memsw.limit_in_bytes", "10485760"),
            ("pids.max", "7"),
            ("blkio.throttle.read_bps_device", "7:0 1048576"),
            ("blkio.throttle.write_bps_device", "7:0 2097152"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn v2_table() {
        let got = table(full().settings(Version::V2).expect("v2"));
        let want: Vec<(String, String)> = [
            ("cpu.max", "20000 100000"),
            ("cpu.weight", "39"),
            ("cpuset.cpus", "0"),
            ("memory.max", "10485760"),
            ("memory.swap.max", "0"),
            ("pids.max", "7"),
            ("io.max", "7:0 rbps=1048576 wbps=2097152"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn v2_read_only_throttle_leaves_write_max() {
        let r = Resources {
            read_bps: vec![DeviceRate {
                major: 8,
                minor: 0,
                bytes_per_sec: 1 << 20,
            }],
            ..Default::default()
        };
        assert_eq!(
            table(r.settings(Version::V2).expect("v2")),
            vec![("io.max".into(), "8:0 rbps=1048576 wbps=max".into())]
        );
    }

    #[test]
    fn memsw_is_memory_plus_swap_on_v1_and_swap_alone_on_v2() {
        let r = Resources {
            memory: Some(100),
            swap: Some(50),
            ..Default::default()
        };
        let v1 = table(r.settings(Version::V1).expect("v1"));
        assert!(v1.contains(&("memory.memsw.limit_in_bytes".into(), "150".into())));
        let v2 = table(r.settings(Version::V2).expect("v2"));
        assert!(v2.contains(&("memory.swap.max".into(), "50".into())));
        assert_eq!(memsw_to_swap_max(150, 100), 50);
    }

    #[test]
    fn v1_only_limits_are_written_on_v1_and_refused_by_name_on_v2() {
        let r = Resources {
            memory: Some(50 << 20),
            kernel_memory: Some(50 << 20),
            kernel_tcp_memory: Some(50 << 20),
            memory_swappiness: Some(10),
            oom_kill_disable: true,
            cpu_rt_period_us: Some(1_000_000),
            cpu_rt_runtime_us: Some(950_000),
            ..Default::default()
        };
        assert_eq!(r.controllers(), vec!["cpu", "memory"]);
        let want: Vec<(String, String)> = [
            ("cpu.rt_period_us", "1000000"),
            ("cpu.rt_runtime_us", "950000"),
            ("memory.kmem.limit_in_bytes", "52428800"),
            ("memory.kmem.tcp.limit_in_bytes", "52428800"),
            ("memory.swappiness", "10"),
            ("memory.oom_control", "1"),
            ("memory.limit_in_bytes", "52428800"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        assert_eq!(table(r.settings(Version::V1).expect("v1")), want);
        let err = r.settings(Version::V2).expect_err("v2 has none of them");
        assert_eq!(
            err.to_string(),
            "memory swappiness (memory.swappiness) exists only on cgroup v1: cgroup v2 has no such file"
        );
        let too_much = Resources {
            memory_swappiness: Some(101),
            ..Default::default()
        };
        assert_eq!(too_much.validate(), Err(ResourceError::Swappiness(101)));
    }

    #[test]
    fn devices_are_not_files_of_the_table_and_weights_convert() {
        let r = Resources {
            devices: vec![parse_device_rule("c 1:3 rwm").expect("rule")],
            blkio_weight: Some(500),
            ..Default::default()
        };
        assert_eq!(
            table(r.settings(Version::V1).expect("v1")),
            vec![("blkio.weight".into(), "500".into())]
        );
        assert_eq!(
            table(r.settings(Version::V2).expect("v2")),
            vec![("io.weight".into(), "default 4950".into())]
        );
        assert_eq!(
            (blkio_to_io_weight(10), blkio_to_io_weight(1000)),
            (1, 10000)
        );
    }

    #[rstest]
    #[case(-1, 100_000, "max 100000")]
    #[case(20_000, 100_000, "20000 100000")]
    fn cpu_max_both_ways(#[case] quota: i64, #[case] period: u64, #[case] v2: &str) {
        assert_eq!(cpu_max_v2(quota, period), v2);
        assert_eq!(cpu_max_v1(v2), Some((quota, period)));
    }

    #[test]
    fn relations_are_checked() {
        assert_eq!(
            Resources {
                memory: Some(4095),
                ..Default::default()
            }
            .validate(),
            Err(ResourceError::MemoryTooSmall(4095))
        );
        assert_eq!(
            Resources {
                swap: Some(0),
                ..Default::default()
            }
            .validate(),
            Err(ResourceError::SwapWithoutMemory)
        );
        assert_eq!(
            Resources {
                memory: Some(65536),
                ..Default::default()
            }
            .validate(),
            Ok(())
        );
    }
}
