//! The registries a case names from: its fixtures and its measurements.
//! Each is an enum, so a case naming another is refused when it loads and
//! the code that makes each (fixture::make, observe::measure) must handle
//! every variant.

use serde::Deserialize;

/// The fixtures a case may list: the one registry (fixture::make makes
/// each, exhaustively; a case file naming another is refused at load).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FixtureName {
    /// The host's hostname.
    HostHostname,
    /// A System V message queue on the host.
    SysvQueue,
    /// A POSIX message queue on the host.
    PosixMq,
    /// A marker process on the host.
    HostProcess,
    /// A name no process has, for hiding checks.
    Marker,
    /// A scratch directory on the host.
    Scratch,
    /// A file on the host.
    HostFile,
    /// The host's uptime.
    HostUptime,
    /// The kernel's overflow uid and gid.
    OverflowIds,
    /// The host's links.
    HostLinks,
    /// The image root's listing.
    RootfsListing,
    /// A loop block device for I/O throttling.
    BlockDevice,
    /// The host's census (mounts, cgroups, links, tables, records).
    Census,
    /// An image imported into kcell's store.
    Image,
    /// Two images sharing a layer.
    ImagePair,
    /// A host beyond a bridge, with a listener.
    Outside,
    /// A bridge name and subnet for kcell's bridge networking.
    TestBridge,
    /// An abstract unix socket on the host.
    AbstractSocket,
    /// A hostile root (symlinks out of it).
    HostileRoot,
}

impl FixtureName {
    /// The name a case file writes, and its variables' prefix.
    pub fn as_str(self) -> &'static str {
        match self {
            FixtureName::HostHostname => "host_hostname",
            FixtureName::SysvQueue => "sysv_queue",
            FixtureName::PosixMq => "posix_mq",
            FixtureName::HostProcess => "host_process",
            FixtureName::Marker => "marker",
            FixtureName::Scratch => "scratch",
            FixtureName::HostFile => "host_file",
            FixtureName::HostUptime => "host_uptime",
            FixtureName::OverflowIds => "overflow_ids",
            FixtureName::HostLinks => "host_links",
            FixtureName::RootfsListing => "rootfs_listing",
            FixtureName::BlockDevice => "block_device",
            FixtureName::Census => "census",
            FixtureName::Image => "image",
            FixtureName::ImagePair => "image_pair",
            FixtureName::Outside => "outside",
            FixtureName::TestBridge => "test_bridge",
            FixtureName::AbstractSocket => "abstract_socket",
            FixtureName::HostileRoot => "hostile_root",
        }
    }
}

/// The measurements a run may ask for: the one registry (observe::measure
/// takes each, exhaustively).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MeasureKind {
    /// Each run's CPU usage over a window, and its share of the total.
    CpuShare,
    /// The CPU share of each process of a run.
    ProcessShares,
    /// The cgroup's counters.
    CgroupStats,
    /// Freezing and thawing the cgroup, as the kernel reports it.
    Freeze,
    /// Which CPUs the run's threads ran on.
    CpuPlacement,
    /// The CPU a threaded workload gets under its quota.
    ThreadQuota,
}

impl MeasureKind {
    /// The name a case file writes (and the observations' default prefix).
    pub fn as_str(self) -> &'static str {
        match self {
            MeasureKind::CpuShare => "cpu_share",
            MeasureKind::ProcessShares => "process_shares",
            MeasureKind::CgroupStats => "cgroup_stats",
            MeasureKind::Freeze => "freeze",
            MeasureKind::CpuPlacement => "cpu_placement",
            MeasureKind::ThreadQuota => "thread_quota",
        }
    }
}
