//! linux.resources of a config.json as kcell's resource model.

use super::{invalid, unsupported, ConfigError};
use crate::cgroup::devices::Rule;
use crate::cgroup::resources::{CpuMax, DeviceRate, Resources};
use oci_spec::runtime as oci;

/// linux.resources as kcell's resource model (OCI memory.swap is memory
/// plus swap, as v1's memsw; kcell's is the swap on top).
pub fn resources(r: &oci::LinuxResources) -> Result<Resources, ConfigError> {
    if r.hugepage_limits().as_ref().is_some_and(|h| !h.is_empty()) {
        return Err(unsupported("linux.resources.hugepageLimits"));
    }
    if r.network().is_some() {
        return Err(unsupported("linux.resources.network"));
    }
    if r.rdma().as_ref().is_some_and(|h| !h.is_empty()) {
        return Err(unsupported("linux.resources.rdma"));
    }
    if r.unified().as_ref().is_some_and(|h| !h.is_empty()) {
        return Err(unsupported("linux.resources.unified"));
    }
    let mut out = Resources::default();
    let positive = |v: Option<i64>| v.filter(|x| *x > 0).map(|x| x as u64);
    if let Some(m) = r.memory() {
        // v1-only settings: on a v2 cgroup they are refused by name when
        // the limits are applied, before the container runs.
        out.kernel_memory = positive(m.kernel());
        out.kernel_tcp_memory = positive(m.kernel_tcp());
        out.oom_kill_disable = m.disable_oom_killer() == Some(true);
        out.memory_swappiness = m.swappiness();
        out.memory = positive(m.limit());
        out.memory_reservation = positive(m.reservation());
        if let (Some(total), Some(limit)) = (positive(m.swap()), out.memory) {
            if total < limit {
                return Err(invalid(format!(
                    "linux.resources.memory.swap {total} is below the memory limit {limit}: it is memory plus swap"
                )));
            }
            out.swap = Some(total - limit);
        }
    }
    if let Some(c) = r.cpu() {
        out.cpu_rt_period_us = c.realtime_period().filter(|p| *p > 0);
        out.cpu_rt_runtime_us = c.realtime_runtime().filter(|r| *r != 0);
        if c.idle().is_some_and(|v| v != 0) {
            return Err(unsupported("linux.resources.cpu.idle"));
        }
        if c.burst().is_some_and(|v| v != 0) {
            return Err(unsupported("linux.resources.cpu.burst"));
        }
        out.cpu_shares = c.shares().filter(|s| *s > 0).map(|s| s.clamp(2, 262_144));
        if let Some(quota) = positive(c.quota()) {
            out.cpu_max = Some(CpuMax {
                quota_us: quota,
                period_us: c
                    .period()
                    .filter(|p| *p > 0)
                    .unwrap_or(crate::cgroup::resources::CPU_PERIOD_US),
            });
        }
        if let Some(cpus) = c.cpus().as_deref().filter(|s| !s.is_empty()) {
            out.cpuset_cpus = Some(
                crate::cgroup::resources::parse_cpu_list(cpus, &crate::cgroup::online_cpus())
                    .map_err(|e| invalid(format!("linux.resources.cpu.cpus: {e}")))?,
            );
        }
        out.cpuset_mems = c.mems().clone().filter(|s| !s.is_empty());
    }
    if let Some(p) = r.pids() {
        out.pids = positive(Some(p.limit()));
    }
    if let Some(b) = r.block_io() {
        if b.leaf_weight().is_some() || b.weight_device().as_ref().is_some_and(|w| !w.is_empty()) {
            return Err(unsupported(
                "linux.resources.blockIO.leafWeight/weightDevice",
            ));
        }
        if b.throttle_read_iops_device()
            .as_ref()
            .is_some_and(|w| !w.is_empty())
            || b.throttle_write_iops_device()
                .as_ref()
                .is_some_and(|w| !w.is_empty())
        {
            return Err(unsupported(
                "linux.resources.blockIO.throttleRead/WriteIOPSDevice",
            ));
        }
        out.blkio_weight = b.weight().filter(|w| *w > 0);
        let rates = |list: &Option<Vec<oci::LinuxThrottleDevice>>| -> Vec<DeviceRate> {
            list.iter()
                .flatten()
                .map(|d| DeviceRate {
                    major: d.major() as u32,
                    minor: d.minor() as u32,
                    bytes_per_sec: d.rate(),
                })
                .collect()
        };
        out.read_bps = rates(b.throttle_read_bps_device());
        out.write_bps = rates(b.throttle_write_bps_device());
    }
    if let Some(devices) = r.devices() {
        for d in devices {
            let kind = match d.typ() {
                None | Some(oci::LinuxDeviceType::A) => 'a',
                Some(oci::LinuxDeviceType::B) => 'b',
                Some(_) => 'c',
            };
            let access = d.access().clone().unwrap_or_else(|| "rwm".into());
            if !access.chars().all(|c| "rwm".contains(c)) {
                return Err(invalid(format!(
                    "linux.resources.devices access '{access}' is not allowed: of r, w, m"
                )));
            }
            out.devices.push(Rule {
                allow: d.allow(),
                kind,
                major: d.major().filter(|m| *m >= 0).map(|m| m as u32),
                minor: d.minor().filter(|m| *m >= 0).map(|m| m as u32),
                access,
            });
        }
        // The devices every container may use, whatever came before (runc's list).
        if out.devices.iter().any(|d| !d.allow) {
            out.devices
                .extend(crate::cgroup::devices::default_allowed());
        }
    }
    Ok(out)
}
