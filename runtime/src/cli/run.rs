//! `kcell run`: its flags, and what they make of a container spec.

use super::CliError;
use crate::cgroup::resources::{self, CpuMax, DeviceRate, Resources};
use crate::idmap::{IdMap, IdMapping};
use crate::image::store::Store;
use crate::namespace::{Namespace, NamespaceSet};
use crate::spec::{BindMount, ContainerSpec, TimeOffsets, TmpfsMount, UserMapping};
use crate::state::StateDir;
use std::path::PathBuf;

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
fn parse_rule(s: &str) -> Result<crate::cgroup::devices::Rule, String> {
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
pub(super) fn parse_ip_net(s: &str) -> Result<crate::net::Ipv4Net, String> {
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
pub(super) struct RunArgs {
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
    pub(super) pid_file: Option<PathBuf>,
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
    device_deny: Vec<crate::cgroup::devices::Rule>,
    /// No cgroup of its own: the container stays in the caller's (no limits,
    /// freeze or stats; what bwrap does). Saves the cgroup's creation and the
    /// migration into it, which on cgroup v1 waits for an RCU grace period.
    #[arg(long)]
    no_cgroup: bool,
    /// Run in the background: print the container's ID once it runs, and return.
    #[arg(short = 'd', long)]
    pub(super) detach: bool,
    /// Print the wall time of each start-up phase to stderr.
    #[arg(long)]
    pub(super) timings: bool,
    /// An image (NAME[:TAG] or ID, see `kcell images`), or a directory that
    /// becomes the root as it is (/ without a mnt namespace).
    #[arg(value_name = "IMAGE|ROOTFS")]
    rootfs: PathBuf,
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

impl RunArgs {
    /// The spec, and the image when the root is one (its config applied).
    pub(super) fn into_spec(
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
                spec.joins
                    .push((Namespace::Net, format!("/proc/{pid}/ns/net").into()));
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
        if self.deny_userns && self.seccomp == SeccompProfile::Unconfined {
            return Err(CliError::DenyUsernsUnconfined);
        }
        spec.process.seccomp = (self.seccomp == SeccompProfile::Default)
            .then(|| crate::seccomp::Profile::kcell_default(self.deny_userns));
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
        if self.no_cgroup || !root {
            spec.cgroup_path = None;
        } else {
            spec.cgroup_path = Some(crate::cgroup::default_path(&spec.id));
        }
        spec.set_mounts(extra);
        if let Some(h) = &spec.hostname {
            spec.process.set_env(&format!("HOSTNAME={h}"));
        }
        if let Ok(term) = std::env::var("TERM") {
            spec.process.set_env(&format!("TERM={term}"));
        }
        let user = self.user;
        let explicit_workdir = self.workdir.is_some();
        if let Some(wd) = self.workdir {
            spec.process.cwd = wd;
        }
        if let Some(img) = &image {
            // The image's settings, under what the command line says.
            for e in &img.config.env {
                spec.process.set_env(e);
            }
            if !explicit_workdir && !img.config.working_dir.is_empty() {
                spec.process.cwd = img.config.working_dir.clone().into();
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
            let (uid, gid) = super::image::resolve_user(&user, &layers)?;
            spec.process.uid = uid;
            spec.process.gid = gid;
        }
        for e in self.env {
            if !e.contains('=') {
                return Err(crate::spec::SpecError::MalformedEnv(e).into());
            }
            spec.process.set_env(&e);
        }
        spec.process.capabilities =
            crate::spec::Capabilities::docker_default(caps, spec.process.uid == 0);
        spec.resources = Resources {
            cpu_max: self.cpus,
            cpu_shares: self.cpu_shares,
            cpuset_cpus: self.cpuset_cpus.map(|c| c.0),
            memory: self.memory,
            swap: self.swap,
            pids: self.pids,
            read_bps: self.device_read_bps,
            write_bps: self.device_write_bps,
            devices: self.device_deny,
            ..Default::default()
        };
        Ok((spec, image))
    }
}

/// `kcell run`: the container in the foreground (or, with -d, a runtime in
/// the background), after a sweep of what killed runtimes left.
pub(super) fn execute(args: RunArgs, state: &StateDir, store: &Store) -> Result<i32, CliError> {
    let (timings, detach, pid_file) = (args.timings, args.detach, args.pid_file.clone());
    // What a killed runtime left is cleaned before anything new is made.
    super::manage::gc(state, store);
    let (spec, image) = args.into_spec(store)?;
    if let Some(image) = &image {
        if state.read(&spec.id).is_ok() {
            return Err(crate::state::StateError::Exists(spec.id).into());
        }
        // Under the store's lock: rmi cannot take the layers from here on.
        store.prepare_container(&spec.id, image)?;
        crate::fault::point("after-overlay");
    }
    if detach {
        return run_detached(&spec, state, pid_file);
    }
    let outcome = run_and_release(&spec, state, pid_file, &mut |_| {})?;
    if timings {
        for (phase, d) in &outcome.timings {
            eprintln!("kcell: timing {phase}: {:.3} ms", d.as_secs_f64() * 1000.0);
        }
    }
    Ok(outcome.exit.code())
}

/// Runs a container whose overlay directory (if any) this CLI claimed; the
/// ledger releases it with the container, and so does this function when
/// the container was refused before it had a record.
fn run_and_release(
    spec: &ContainerSpec,
    state: &StateDir,
    pid_file: Option<PathBuf>,
    started: &mut dyn FnMut(i32),
) -> Result<crate::lifecycle::run::Outcome, crate::lifecycle::LifecycleError> {
    let opts = crate::lifecycle::CreateOptions {
        pid_file,
        ..Default::default()
    };
    let result = crate::lifecycle::run::run(state, spec, opts, started);
    if let Some(overlay) = &spec.overlay {
        if state.read(&spec.id).is_err() {
            let _ = std::fs::remove_dir_all(&overlay.dir);
        }
    }
    result
}

/// `run -d`: the runtime forks into the background (its own session, stdio
/// on /dev/null), the foreground prints the ID once the command runs.
fn run_detached(
    spec: &ContainerSpec,
    state: &StateDir,
    pid_file: Option<PathBuf>,
) -> Result<i32, CliError> {
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
            let result = run_and_release(spec, state, pid_file, &mut |_| {
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
