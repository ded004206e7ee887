//! The command line: `kcell run`, `ps`, `exec`, `stop`, `rm`, `gc`,
//! `freeze|thaw|stats`, `rootfs busybox`, and the image commands of [`image`].
//! Exit status: the container command's, 125 for the runtime's own errors,
//! 126/127 when the command cannot be executed / found.

use crate::cgroup::resources::{self, CpuMax, DeviceRate, DeviceRule, Resources};
use crate::cgroup::{ContainerCgroup, PARENT};
use crate::container;
use crate::idmap::{IdMap, IdMapping};
use crate::image::store::Store;
use crate::namespace::{Namespace, NamespaceSet};
use crate::spec::{BindMount, ContainerSpec, TimeOffsets, TmpfsMount, UserMapping};
use crate::state::StateDir;
use clap::{Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;

/// The runtime's own failure.
pub const EXIT_RUNTIME_ERROR: i32 = 125;

#[derive(Parser, Debug)]
#[command(name = "kcell", version, about = "A small container runtime")]
struct Cli {
    /// The image store (layers, images, containers' upper directories).
    /// Default: $KCELL_ROOT, else /var/lib/kcell (root) or ~/.local/share/kcell.
    #[arg(long, global = true, value_name = "DIR")]
    root: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

mod image;

#[derive(Subcommand, Debug)]
enum Command {
    /// Run CMD as PID 1 of a new container from IMAGE (or rooted at the
    /// directory ROOTFS) and exit with its status.
    Run(Box<RunArgs>),
    /// List images: repository:tag, ID, size, created.
    Images,
    /// Remove images (a tag of an image with several tags: only the tag),
    /// and the layers no other image or container uses.
    Rmi {
        /// Also while containers use it (its layers stay until they end).
        #[arg(short, long)]
        force: bool,
        /// NAME[:TAG] or (short) ID.
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Import, pack and inspect images.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Freeze every process of a running container (v1 freezer.state, v2 cgroup.freeze).
    Freeze {
        /// The container's name (its `--name`).
        name: String,
    },
    /// Thaw a frozen container.
    Thaw {
        /// The container's name.
        name: String,
    },
    /// List containers: ID, root, command, created, status, PID (running ones unless -a).
    Ps {
        /// Also those whose process is gone.
        #[arg(short, long)]
        all: bool,
    },
    /// Run a command in a running container: its namespaces, cgroup, root and environment.
    Exec {
        /// Environment KEY=VALUE added (repeatable).
        #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// The container.
        id: String,
        /// The command and its arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
    },
    /// Stop a container: SIGTERM, then SIGKILL after the grace time.
    Stop {
        /// Seconds to wait after SIGTERM.
        #[arg(short, long, default_value_t = 10)]
        time: u64,
        /// The container.
        id: String,
    },
    /// Remove what is left of a container that is not running (-f: stop it first).
    Rm {
        /// Kill it first if it runs.
        #[arg(short, long)]
        force: bool,
        /// The container.
        id: String,
    },
    /// Remove what dead containers left behind (records, cgroups, overlay
    /// directories, unused layers) after a runtime was killed.
    Gc,
    /// Print a running container's cgroup counters as JSON.
    Stats {
        /// The container's name.
        name: String,
    },
    /// Build root filesystems.
    #[command(subcommand)]
    Rootfs(RootfsCommand),
    /// Container networks.
    #[command(subcommand)]
    Net(NetCommand),
}

#[derive(Subcommand, Debug)]
enum NetCommand {
    /// Add a further interface to a running container: a veth pair with
    /// NAME (default eth1) and ADDR/PREFIX inside, the host end up and attached to nothing.
    Attach {
        /// The container.
        id: String,
        /// The address inside, with its prefix (e.g. 10.90.0.5/24).
        #[arg(long, value_name = "ADDR/PREFIX", value_parser = parse_ip_net)]
        ip: crate::net::Ipv4Net,
        /// The interface's name inside.
        #[arg(long, default_value = "eth1")]
        name: String,
    },
    /// List bridge address leases: bridge, address, container.
    Leases,
}

#[derive(Subcommand, Debug)]
enum RootfsCommand {
    /// Build a busybox root at DIR from Debian's busybox-static.
    Busybox {
        /// Where the root is made (replaced if it exists).
        dir: PathBuf,
    },
}

fn parse_ns(s: &str) -> Result<NamespaceSet, String> {
    NamespaceSet::parse_list(s).map_err(|e| e.to_string())
}
fn parse_map(s: &str) -> Result<IdMapping, String> {
    IdMapping::parse(s).map_err(|e| e.to_string())
}
fn parse_volume(s: &str) -> Result<BindMount, String> {
    BindMount::parse(s).map_err(|e| e.to_string())
}
fn parse_tmpfs(s: &str) -> Result<TmpfsMount, String> {
    TmpfsMount::parse(s).map_err(|e| e.to_string())
}
fn parse_cpus(s: &str) -> Result<CpuMax, String> {
    resources::parse_cpus(s).map_err(|e| e.to_string())
}
fn parse_shares(s: &str) -> Result<u64, String> {
    resources::parse_shares(s).map_err(|e| e.to_string())
}
fn parse_size(s: &str) -> Result<u64, String> {
    resources::parse_size(s).map_err(|e| e.to_string())
}
fn parse_rate(s: &str) -> Result<DeviceRate, String> {
    resources::parse_device_rate(s).map_err(|e| e.to_string())
}
fn parse_rule(s: &str) -> Result<DeviceRule, String> {
    resources::parse_device_rule(s).map_err(|e| e.to_string())
}
fn parse_pids(s: &str) -> Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(resources::ResourceError::Pids(s.to_string()).to_string()),
    }
}
/// A CPU list as one flag value (clap would read a bare `Vec` as many values).
#[derive(Debug, Clone)]
struct CpuList(Vec<u32>);

fn parse_cpuset(s: &str) -> Result<CpuList, String> {
    resources::parse_cpu_list(s, &crate::cgroup::online_cpus())
        .map(CpuList)
        .map_err(|e| e.to_string())
}
fn parse_net(s: &str) -> Result<NetMode, String> {
    match s {
        "none" => Ok(NetMode::None),
        "host" => Ok(NetMode::Host),
        other if other.starts_with("container:") => {
            let id = &other["container:".len()..];
            crate::spec::validate_id(id).map_err(|e| e.to_string())?;
            Ok(NetMode::Container(id.to_string()))
        }
        "bridge" => Ok(NetMode::Bridge),
        other => Err(format!(
            "network mode '{other}' is not allowed: bridge, none (loopback only), host or container:ID"
        )),
    }
}
fn parse_subnet(s: &str) -> Result<crate::net::Ipv4Net, String> {
    crate::net::Ipv4Net::parse_subnet(s).map_err(|e| e.to_string())
}
fn parse_ip_net(s: &str) -> Result<crate::net::Ipv4Net, String> {
    s.parse::<crate::net::Ipv4Net>().map_err(|e| e.to_string())
}
fn parse_ip(s: &str) -> Result<std::net::Ipv4Addr, String> {
    s.parse()
        .map_err(|_| format!("address '{s}' is not an IPv4 address such as 10.89.0.5"))
}
fn parse_cap(s: &str) -> Result<crate::caps::CapSet, String> {
    crate::caps::parse(s)
}
/// The seccomp profiles `--seccomp` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SeccompProfile {
    /// Deny what Docker's default profile denies.
    Default,
    /// No filter.
    Unconfined,
}
fn parse_bridge(s: &str) -> Result<String, String> {
    crate::net::validate_ifname(s, "bridge")
        .map(|()| s.to_string())
        .map_err(|e| e.to_string())
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum NetMode {
    /// An own namespace with eth0 on a bridge, NAT beyond it.
    Bridge,
    None,
    Host,
    /// The network namespace of another running container.
    Container(String),
}

fn parse_dns(s: &str) -> Result<std::net::IpAddr, String> {
    s.parse()
        .map_err(|_| format!("nameserver '{s}' is not an IPv4 or IPv6 address"))
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Container name: names its cgroup (default: a random 12-hex ID).
    #[arg(long)]
    name: Option<String>,
    /// Hostname in the container's UTS namespace (at most 64 bytes; default: the container's ID).
    #[arg(long)]
    hostname: Option<String>,
    /// Exactly these namespaces (comma list of uts,ipc,pid,mnt,net,user,cgroup,time, or none).
    /// Default: all but user; user too when the caller is not root.
    #[arg(long, value_name = "LIST", value_parser = parse_ns)]
    ns: Option<NamespaceSet>,
    /// Leave these namespaces out of the set.
    #[arg(long = "no-ns", value_name = "LIST", value_parser = parse_ns)]
    no_ns: Vec<NamespaceSet>,
    /// A uid_map line INSIDE:OUTSIDE:LENGTH (repeatable; implies the user namespace).
    /// A root caller giving none with the user namespace leaves ids unmapped.
    #[arg(long = "uid-map", value_name = "IN:OUT:LEN", value_parser = parse_map)]
    uid_map: Vec<IdMapping>,
    /// A gid_map line INSIDE:OUTSIDE:LENGTH (repeatable).
    #[arg(long = "gid-map", value_name = "IN:OUT:LEN", value_parser = parse_map)]
    gid_map: Vec<IdMapping>,
    /// Seconds added to CLOCK_BOOTTIME (implies the time namespace).
    #[arg(long, value_name = "SECS", allow_hyphen_values = true)]
    boottime_offset: Option<i64>,
    /// Seconds added to CLOCK_MONOTONIC (implies the time namespace).
    #[arg(long, value_name = "SECS", allow_hyphen_values = true)]
    monotonic_offset: Option<i64>,
    /// Network: bridge (eth0 on a bridge with NAT; the default for an
    /// image run by root), none (own namespace, loopback up; the default
    /// otherwise), host, or container:ID (another container's).
    #[arg(long, value_parser = parse_net)]
    net: Option<NetMode>,
    /// The bridge of --net bridge.
    #[arg(long, default_value = crate::net::network::DEFAULT_BRIDGE, value_parser = parse_bridge)]
    bridge: String,
    /// The bridge's subnet when this container makes it (default: the first
    /// 10.89.N.0/24 no host route overlaps); must match while it is in use.
    #[arg(long, value_name = "CIDR", value_parser = parse_subnet)]
    subnet: Option<crate::net::Ipv4Net>,
    /// A fixed address on the bridge (default: the lowest free one).
    #[arg(long, value_name = "ADDR", value_parser = parse_ip)]
    ip: Option<std::net::Ipv4Addr>,
    /// No MASQUERADE for the bridge's subnet (it reaches only the host and the bridge).
    #[arg(long)]
    no_nat: bool,
    /// Add a capability to Docker's default set: a name such as SYS_ADMIN, or ALL (repeatable).
    #[arg(long = "cap-add", value_name = "CAP", value_parser = parse_cap)]
    cap_add: Vec<crate::caps::CapSet>,
    /// Remove a capability from the set, or ALL (repeatable; drops apply before adds).
    #[arg(long = "cap-drop", value_name = "CAP", value_parser = parse_cap)]
    cap_drop: Vec<crate::caps::CapSet>,
    /// The seccomp profile: default (denies keyctl, bpf, perf_event_open,
    /// kexec, module loading, open_by_handle_at, ...) or unconfined.
    #[arg(long, value_name = "PROFILE", value_enum, default_value_t = SeccompProfile::Default)]
    seccomp: SeccompProfile,
    /// Refuse new user namespaces inside (unshare/clone with CLONE_NEWUSER:
    /// EPERM; clone3: ENOSYS), on top of the seccomp profile.
    #[arg(long)]
    deny_userns: bool,
    /// A nameserver for the container's own /etc/resolv.conf (repeatable;
    /// bind-mounted read-only, the image's file is left alone).
    #[arg(long, value_name = "IP", value_parser = parse_dns)]
    dns: Vec<std::net::IpAddr>,
    /// Bind mount SRC:DST[:ro] (repeatable).
    #[arg(short = 'v', long = "volume", value_name = "SRC:DST[:ro]", value_parser = parse_volume)]
    volumes: Vec<BindMount>,
    /// A tmpfs at DST, with options size=, mode=, nr_inodes=, uid=, gid= (repeatable).
    #[arg(long, value_name = "DST[:OPTS]", value_parser = parse_tmpfs)]
    tmpfs: Vec<TmpfsMount>,
    /// Environment KEY=VALUE (repeatable).
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Working directory inside (default: the image's, else /).
    #[arg(short = 'w', long)]
    workdir: Option<PathBuf>,
    /// UID[:GID] (or a name of the image's /etc/passwd) the command runs as
    /// (default: the image's User, else 0).
    #[arg(short = 'u', long)]
    user: Option<String>,
    /// Write the host PID of the container's first process here.
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// CPU bandwidth in CPUs (0.2 = 20% of one CPU; 2.5 = two and a half).
    #[arg(long, value_parser = parse_cpus, allow_hyphen_values = true)]
    cpus: Option<CpuMax>,
    /// Relative CPU weight (v1 cpu.shares 2..262144; v2 cpu.weight by conversion).
    #[arg(long, value_parser = parse_shares, allow_hyphen_values = true)]
    cpu_shares: Option<u64>,
    /// CPUs the container may run on (e.g. 0-1,3).
    #[arg(long, value_name = "LIST", value_parser = parse_cpuset)]
    cpuset_cpus: Option<CpuList>,
    /// Memory limit (e.g. 64k, 10m, 1g).
    #[arg(short = 'm', long, alias = "mem", value_parser = parse_size, allow_hyphen_values = true)]
    memory: Option<u64>,
    /// Swap allowed on top of --memory (0 = none).
    #[arg(long, value_parser = parse_size, allow_hyphen_values = true)]
    swap: Option<u64>,
    /// Most tasks (pids.max).
    #[arg(long, value_parser = parse_pids, allow_hyphen_values = true)]
    pids: Option<u64>,
    /// Read throttle MAJ:MIN:RATE (e.g. 7:0:1m).
    #[arg(long, value_name = "MAJ:MIN:RATE", value_parser = parse_rate)]
    device_read_bps: Vec<DeviceRate>,
    /// Write throttle MAJ:MIN:RATE.
    #[arg(long, value_name = "MAJ:MIN:RATE", value_parser = parse_rate)]
    device_write_bps: Vec<DeviceRate>,
    /// Deny a device: 'TYPE MAJ:MIN ACCESS', e.g. 'c 1:3 rwm' (cgroup v1).
    #[arg(long, value_name = "RULE", value_parser = parse_rule)]
    device_deny: Vec<DeviceRule>,
    /// No cgroup of its own: the container stays in the caller's (no limits,
    /// freeze or stats; what bwrap does). Saves the cgroup's creation and the
    /// migration into it, which on cgroup v1 waits for an RCU grace period.
    #[arg(long)]
    no_cgroup: bool,
    /// Write the cgroup's final counters (JSON: cpu, memory, oom_kill, pids, io) here.
    #[arg(long)]
    stats_file: Option<PathBuf>,
    /// Run in the background: print the container's ID once it runs, and return.
    #[arg(short = 'd', long)]
    detach: bool,
    /// Print the wall time of each start-up phase to stderr.
    #[arg(long)]
    timings: bool,
    /// An image (NAME[:TAG] or ID, see `kcell images`), or a directory that
    /// becomes the root as it is (/ without a mnt namespace).
    #[arg(value_name = "IMAGE|ROOTFS")]
    rootfs: PathBuf,
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// Errors of the CLI that are not a container's.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Spec(#[from] crate::spec::SpecError),
    #[error(transparent)]
    IdMap(#[from] crate::idmap::IdMapError),
    #[error(transparent)]
    Run(#[from] container::RunError),
    #[error(transparent)]
    Cgroup(#[from] crate::cgroup::CgroupError),
    #[error(transparent)]
    Busybox(#[from] crate::rootfs::busybox::BusyboxError),
    #[error("no running container named '{0}' (no {1} directory in any cgroup hierarchy)")]
    NoSuchContainer(String, String),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error(transparent)]
    Exec(#[from] crate::exec::ExecError),
    #[error("container '{0}' is running: stop it first, or use rm -f")]
    Running(String),
    #[error("{0}")]
    Detach(String),
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
    #[error("container '{0}' is not running: --net container:{0} needs its network namespace")]
    NotRunning(String),
    #[error("'{0}' is neither a directory nor an image in {1} (kcell images lists them; kcell image import adds one)")]
    NoRoot(String, PathBuf),
    #[error("--subnet, --ip and --no-nat are for --net bridge")]
    BridgeOnly,
    #[error("--deny-userns is a seccomp rule: it cannot go with --seccomp unconfined")]
    DenyUsernsUnconfined,
    #[error(transparent)]
    Net(#[from] crate::net::NetError),
}

impl RunArgs {
    /// The spec, and the image when the root is one (its config applied).
    fn into_spec(
        self,
        store: &Store,
    ) -> Result<(ContainerSpec, Option<crate::image::ImageRecord>), CliError> {
        let image = if self.rootfs.is_dir() {
            None
        } else {
            let reference = self.rootfs.to_string_lossy().to_string();
            match store.resolve(&reference) {
                Ok(img) => Some(img),
                Err(crate::image::ImageError::NotFound(_)) => {
                    return Err(CliError::NoRoot(reference, store.root().to_path_buf()))
                }
                Err(e) => return Err(e.into()),
            }
        };
        let command = match &image {
            Some(img) => img.config.argv(&self.command),
            None => self.command,
        };
        let root_arg = self.rootfs.to_string_lossy().to_string();
        let mut spec = ContainerSpec::new(self.rootfs, command);
        if let Some(name) = self.name {
            crate::spec::validate_id(&name)?;
            spec.id = name;
        }
        if let Some(set) = self.ns {
            spec.namespaces = set;
        }
        let mut removed = NamespaceSet::default();
        for set in &self.no_ns {
            for ns in set.iter() {
                spec.namespaces.remove(ns);
                removed.insert(ns);
            }
        }
        // An image gets a bridge by default, as with Docker; a directory
        // root, or a caller who cannot make links (not root), gets none.
        let root = nix::unistd::geteuid().is_root();
        let net = self.net.clone().unwrap_or(if image.is_some() && root {
            NetMode::Bridge
        } else {
            NetMode::None
        });
        if net != NetMode::Bridge && (self.subnet.is_some() || self.ip.is_some() || self.no_nat) {
            return Err(CliError::BridgeOnly);
        }
        match &net {
            NetMode::Bridge => {
                spec.network = Some(crate::net::network::BridgeRequest {
                    bridge: self.bridge.clone(),
                    subnet: self.subnet,
                    ip: self.ip,
                    nat: !self.no_nat,
                });
            }
            NetMode::None => {}
            NetMode::Host => spec.namespaces.remove(Namespace::Net),
            NetMode::Container(id) => {
                let target = StateDir::default_location().read(id)?;
                let pid = target
                    .pid
                    .filter(|_| target.is_running())
                    .ok_or_else(|| CliError::NotRunning(id.clone()))?;
                spec.namespaces.remove(Namespace::Net);
                spec.net_join = Some(format!("/proc/{pid}/ns/net").into());
            }
        }
        spec.dns = self.dns;
        let mut caps = crate::caps::CapSet::default();
        for drop in &self.cap_drop {
            caps.0 &= !drop.0;
        }
        for add in &self.cap_add {
            caps.0 |= add.0;
        }
        spec.confinement = crate::spec::Confinement {
            capabilities: caps,
            seccomp: self.seccomp == SeccompProfile::Default,
            deny_userns: self.deny_userns,
        };
        if self.deny_userns && self.seccomp == SeccompProfile::Unconfined {
            return Err(CliError::DenyUsernsUnconfined);
        }
        // Flags that only make sense with a namespace bring it along, unless
        // the user removed it explicitly (then validate() names the conflict).
        let mut imply = |wanted: bool, ns: Namespace| {
            if wanted && !removed.contains(ns) {
                spec.namespaces.insert(ns);
            }
        };
        imply(
            !self.uid_map.is_empty() || !self.gid_map.is_empty(),
            Namespace::User,
        );
        imply(
            self.boottime_offset.is_some() || self.monotonic_offset.is_some(),
            Namespace::Time,
        );
        // As Docker: the hostname is the container's ID unless given.
        spec.hostname = self.hostname.or_else(|| {
            spec.namespaces
                .contains(Namespace::Uts)
                .then(|| spec.id.clone())
        });
        spec.user = UserMapping {
            uids: IdMap::new(self.uid_map)?,
            gids: IdMap::new(self.gid_map)?,
        };
        spec.time = TimeOffsets {
            boottime: self.boottime_offset.unwrap_or(0),
            monotonic: self.monotonic_offset.unwrap_or(0),
        };
        let extra = self
            .volumes
            .iter()
            .map(BindMount::to_mount)
            .chain(self.tmpfs.iter().map(TmpfsMount::to_mount))
            .collect();
        spec.cgroup = !self.no_cgroup;
        spec.set_mounts(extra);
        spec.env = self.env;
        let user = self.user;
        let explicit_workdir = self.workdir.is_some();
        if let Some(wd) = self.workdir {
            spec.workdir = wd;
        }
        if let Some(img) = &image {
            // The image's settings, under what the command line says.
            spec.env = img.config.env.iter().chain(&spec.env).cloned().collect();
            if !explicit_workdir && !img.config.working_dir.is_empty() {
                spec.workdir = img.config.working_dir.clone().into();
            }
            let dir = store.container_dir(&spec.id);
            spec.rootfs = dir.join("merged");
            spec.overlay = Some(crate::spec::OverlayRoot {
                image: root_arg.clone(),
                image_id: img.id.clone(),
                lower: store.lower_dirs(img),
                dir,
            });
        }
        let user = user.or_else(|| {
            image
                .as_ref()
                .map(|i| i.config.user.clone())
                .filter(|u| !u.is_empty())
        });
        if let Some(user) = user {
            let layers = spec
                .overlay
                .as_ref()
                .map_or_else(|| vec![spec.rootfs.clone()], |o| o.lower.clone());
            spec.process_user = Some(image::resolve_user(&user, &layers)?);
        }
        spec.pid_file = self.pid_file;
        spec.stats_file = self.stats_file;
        spec.resources = Resources {
            cpu_max: self.cpus,
            cpu_shares: self.cpu_shares,
            cpuset_cpus: self.cpuset_cpus.map(|c| c.0),
            memory: self.memory,
            swap: self.swap,
            pids: self.pids,
            read_bps: self.device_read_bps,
            write_bps: self.device_write_bps,
            device_deny: self.device_deny,
        };
        Ok((spec, image))
    }
}

/// Finds a running container's cgroup by its name.
fn cgroup_by_name(name: &str) -> Result<ContainerCgroup, CliError> {
    crate::spec::validate_id(name)?;
    ContainerCgroup::of_container(name)
        .ok_or_else(|| CliError::NoSuchContainer(name.to_string(), format!("{PARENT}/{name}")))
}

fn execute(cli: Cli) -> Result<i32, CliError> {
    let store = cli.root.map_or_else(Store::default_location, Store::at);
    match cli.command {
        Command::Run(args) => {
            let (timings, detach) = (args.timings, args.detach);
            let state = StateDir::default_location();
            // What a killed runtime left is cleaned before anything new is made.
            gc(&state, &store);
            let (spec, image) = args.into_spec(&store)?;
            if let Some(image) = &image {
                if state.read(&spec.id).is_ok() {
                    return Err(crate::state::StateError::Exists(spec.id).into());
                }
                // Under the store's lock: rmi cannot take the layers from here on.
                store.prepare_container(&spec.id, image)?;
                crate::fault::point("after-overlay");
            }
            if detach {
                // The background runtime removes the overlay directory when
                // the container ends; on an error before the start, so does it.
                return run_detached(&spec, &state);
            }
            let outcome = run_and_release(&spec, &state, &mut |_| {})?;
            if timings {
                for (phase, d) in &outcome.timings {
                    eprintln!("kcell: timing {phase}: {:.3} ms", d.as_secs_f64() * 1000.0);
                }
            }
            Ok(outcome.exit.code())
        }
        Command::Ps { all } => {
            let state = StateDir::default_location();
            println!(
                "{:<14} {:<24} {:<24} {:<10} {:<8} PID",
                "ID", "IMAGE", "COMMAND", "CREATED", "STATUS"
            );
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            for rec in state.list() {
                let status = rec.status();
                if !all && status != "running" {
                    continue;
                }
                let age = now.saturating_sub(rec.created);
                let created = if age < 120 {
                    format!("{age}s ago")
                } else {
                    format!("{}m ago", age / 60)
                };
                let clip = |s: String, n: usize| {
                    if s.chars().count() > n {
                        format!("{}...", s.chars().take(n - 3).collect::<String>())
                    } else {
                        s
                    }
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
                    clip(rec.command.join(" "), 24),
                    created,
                    status,
                    rec.pid.map_or("-".into(), |p| p.to_string())
                );
            }
            Ok(0)
        }
        Command::Exec { env, id, command } => {
            let state = StateDir::default_location();
            Ok(crate::exec::exec(&state, &id, &command, &env)?.code())
        }
        Command::Stop { time, id } => {
            let state = StateDir::default_location();
            stop(&state, &id, std::time::Duration::from_secs(time))?;
            Ok(0)
        }
        Command::Rm { force, id } => {
            let state = StateDir::default_location();
            let rec = state.read(&id)?;
            if rec.is_running() {
                if !force {
                    return Err(CliError::Running(id));
                }
                stop(&state, &id, std::time::Duration::ZERO)?;
            }
            clean(&state, &id);
            gc(&state, &store);
            Ok(0)
        }
        Command::Images => image::list(&store),
        Command::Rmi { force, images } => image::remove(&store, &images, force),
        Command::Image(cmd) => image::execute(&store, cmd),
        Command::Gc => {
            for id in gc(&StateDir::default_location(), &store) {
                println!("{id}");
            }
            Ok(0)
        }
        Command::Freeze { name } => cgroup_by_name(&name)?
            .set_frozen(true)
            .map(|()| 0)
            .map_err(Into::into),
        Command::Thaw { name } => cgroup_by_name(&name)?
            .set_frozen(false)
            .map(|()| 0)
            .map_err(Into::into),
        Command::Stats { name } => {
            let stats = cgroup_by_name(&name)?.stats();
            println!("{}", serde_json::to_string(&stats).unwrap_or_default());
            Ok(0)
        }
        Command::Net(NetCommand::Attach { id, ip, name }) => {
            net_attach(&StateDir::default_location(), &id, ip, &name)?;
            Ok(0)
        }
        Command::Net(NetCommand::Leases) => {
            println!("{:<16} {:<16} CONTAINER", "BRIDGE", "ADDRESS");
            for (bridge, ip, id) in StateDir::default_location().networks().leases() {
                println!("{bridge:<16} {:<16} {id}", ip.to_string());
            }
            Ok(0)
        }
        Command::Rootfs(RootfsCommand::Busybox { dir }) => {
            let cache = std::env::temp_dir().join("kcell-busybox-cache");
            let busybox = crate::rootfs::busybox::locate(&cache)?;
            crate::rootfs::busybox::build(&dir, &busybox, &[])?;
            println!("{}", dir.display());
            Ok(0)
        }
    }
}

/// Stops a container: SIGTERM, SIGKILL after `grace`, then waits until its
/// runtime has cleaned up (or cleans up itself when that runtime is gone).
fn stop(state: &StateDir, id: &str, grace: std::time::Duration) -> Result<(), CliError> {
    use nix::sys::signal::{kill, Signal};
    let rec = state.read(id)?;
    if let Some(pid) = rec.pid.filter(|_| rec.is_running()) {
        let pid = nix::unistd::Pid::from_raw(pid);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = std::time::Instant::now() + grace;
        while rec.is_running() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // PID 1 of a namespace ignores SIGTERM without a handler: SIGKILL it.
        if rec.is_running() {
            let _ = kill(pid, Signal::SIGKILL);
        }
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while state.read(id).is_ok() && std::time::Instant::now() < deadline {
        if state.read(id).is_ok_and(|r| r.orphaned()) {
            clean(state, id);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Ok(())
}

/// Removes what a container left: its cgroup (killing what remains in it),
/// its network (kept namespace, links, lease), its overlay directory and its record.
fn clean(state: &StateDir, id: &str) {
    if let Ok(cg) = cgroup_by_name(id) {
        let _ = cg.remove();
    }
    if let Ok(rec) = state.read(id) {
        container::release(state, &rec);
        if let Some(dir) = &rec.overlay_dir {
            container::remove_overlay_dir(dir);
        }
    }
    let _ = state.remove(id);
}

/// `kcell net attach`: a further interface in a running container's network
/// namespace; its host end is recorded first, so it goes with the container.
fn net_attach(
    state: &StateDir,
    id: &str,
    ip: crate::net::Ipv4Net,
    name: &str,
) -> Result<(), CliError> {
    crate::net::validate_ifname(name, "interface name")?;
    let mut rec = state.read(id)?;
    let pid = rec
        .pid
        .filter(|_| rec.is_running())
        .ok_or_else(|| CliError::NotRunning(id.to_string()))?;
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

/// Cleans every container whose runtime is gone, then the image store's
/// directories of containers without a record and layers nothing uses;
/// returns the container IDs.
fn gc(state: &StateDir, store: &Store) -> Vec<String> {
    let mut removed = Vec::new();
    state.remove_stale_temporaries();
    for rec in state.list().into_iter().filter(|r| r.orphaned()) {
        // Its runtime is gone, so PDEATHSIG is already taking the container
        // down (monitor, then PID 1 and its namespace): a `gc` right after
        // the kill must not find it still exiting and leave it behind.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while rec.is_running() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        if !rec.is_running() {
            clean(state, &rec.id);
            removed.push(rec.id);
        }
    }
    // Leases whose container has no record (killed between lease and record).
    state.networks().sweep(&|id| state.read(id).is_ok());
    for id in store.gc(&|id| state.read(id).is_ok()) {
        if !removed.contains(&id) {
            removed.push(id);
        }
    }
    removed
}

/// Runs a container whose overlay directory (if any) this CLI claimed with
/// `prepare_container`, and removes that directory however the run ends.
fn run_and_release(
    spec: &ContainerSpec,
    state: &StateDir,
    started: &mut dyn FnMut(i32),
) -> Result<container::Outcome, container::RunError> {
    let result = container::run_recorded(spec, Some(state), started);
    if let Some(overlay) = &spec.overlay {
        container::remove_overlay_dir(&overlay.dir);
    }
    result
}

/// `run -d`: the runtime forks into the background (its own session, stdio
/// on /dev/null), the foreground prints the ID once the command runs.
fn run_detached(spec: &ContainerSpec, state: &StateDir) -> Result<i32, CliError> {
    use std::io::{BufRead, Write};
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| CliError::Detach(format!("pipe2: {e}")))?;
    // SAFETY: the CLI is single-threaded here.
    match unsafe { nix::unistd::fork() }.map_err(|e| CliError::Detach(format!("fork: {e}")))? {
        nix::unistd::ForkResult::Child => {
            drop(r);
            let _ = nix::unistd::setsid();
            if let Ok(null) = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
            {
                use std::os::fd::AsRawFd;
                for fd in 0..3 {
                    let _ = nix::unistd::dup2(null.as_raw_fd(), fd);
                }
            }
            let mut w = std::fs::File::from(w);
            let result = run_and_release(spec, state, &mut |_| {
                let _ = w.write_all(b"started\n");
            });
            let code = match result {
                Ok(o) => o.exit.code(),
                Err(e) => {
                    let _ = writeln!(w, "error {e}");
                    e.exit_code()
                }
            };
            std::process::exit(code)
        }
        nix::unistd::ForkResult::Parent { .. } => {
            drop(w);
            let mut line = String::new();
            let _ = std::io::BufReader::new(std::fs::File::from(r)).read_line(&mut line);
            match line
                .trim_end()
                .split_once(' ')
                .map_or((line.trim_end(), ""), |(a, b)| (a, b))
            {
                ("started", _) => {
                    println!("{}", spec.id);
                    Ok(0)
                }
                ("error", msg) => Err(CliError::Detach(msg.to_string())),
                _ => Err(CliError::Detach(
                    "the runtime ended before the container started".into(),
                )),
            }
        }
    }
}

/// Runs the CLI on `args` (argv including the program name); returns the exit status.
pub fn main<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return 0;
            }
            // One line naming the value and what is allowed; clap's hints follow on stderr's next lines only with --help.
            let text = e.to_string();
            let lines: Vec<&str> = text
                .lines()
                .map(str::trim)
                .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
                .filter(|l| !l.is_empty())
                .collect();
            eprintln!("kcell: {}", lines.join(" ").trim_start_matches("error: "));
            return EXIT_RUNTIME_ERROR;
        }
    };
    match execute(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kcell: {e}");
            match e {
                CliError::Run(r) => r.exit_code(),
                _ => EXIT_RUNTIME_ERROR,
            }
        }
    }
}
