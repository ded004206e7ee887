//! What a container is, as data: the root, the command, the namespaces and
//! their parameters, the mounts. kcell's CLI and an OCI config build one;
//! [`crate::lifecycle`] runs it.

pub mod mount;
pub mod process;

use crate::cgroup::resources::Resources;
use crate::idmap::IdMap;
use crate::namespace::{Namespace, NamespaceSet};
pub use mount::{Device, Mount};
pub use process::{Capabilities, Process, Rlimit};
use std::path::{Path, PathBuf};

/// The kernel's limit on a hostname (HOST_NAME_MAX, `__NEW_UTS_LEN`).
pub const HOSTNAME_MAX: usize = 64;

/// The PATH a container's command is looked up in unless the env sets one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Errors in a container spec, found before anything is made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    /// The root directory does not exist or is not a directory.
    #[error("root filesystem '{0}' is not an existing directory")]
    MissingRootfs(PathBuf),
    /// Nothing to run.
    #[error("no command given: usage is kcell run [FLAGS] ROOTFS [--] CMD [ARGS...]")]
    MissingCommand,
    /// Longer than the kernel's 64 bytes.
    #[error("hostname '{0}' is {1} bytes long: at most 64 are allowed")]
    HostnameTooLong(String, usize),
    /// A hostname without a UTS namespace would rename the host.
    #[error("--hostname needs the uts namespace, which the namespace set leaves out")]
    HostnameWithoutUts,
    /// Without a mount namespace these would change the caller's mounts.
    #[error("{0} needs the mnt namespace: without one, the container's mounts are the caller's")]
    NeedsMnt(&'static str),
    /// Clock offsets are set on a time namespace.
    #[error("--{0}-offset needs the time namespace, which the namespace set leaves out")]
    OffsetWithoutTime(&'static str),
    /// Id maps are written for a user namespace.
    #[error("--{0}-map needs the user namespace, which the namespace set leaves out")]
    MapWithoutUser(&'static str),
    /// A volume given as SRC:DST[:ro] could not be read.
    #[error("volume '{0}' is malformed: expected SRC:DST or SRC:DST:ro with absolute paths")]
    MalformedVolume(String),
    /// The source of a bind mount does not exist.
    #[error("volume source '{0}' does not exist")]
    MissingVolumeSource(PathBuf),
    /// A container ID with characters a cgroup or file name cannot hold.
    #[error("container name '{0}' is not allowed: 1 to 64 of letters, digits, '_', '.', '-', not starting with '.'")]
    BadId(String),
    /// A --tmpfs value that did not parse.
    #[error("tmpfs '{0}' is malformed: {1}")]
    MalformedTmpfs(String, String),
    /// An environment entry without '='.
    #[error("environment entry '{0}' is malformed: expected KEY=VALUE")]
    MalformedEnv(String),
    /// A bridge network is plugged into the container's own network namespace.
    #[error("--net bridge needs the net namespace, which the namespace set leaves out")]
    BridgeWithoutNet,
}

/// A bind mount from the host into the container (`-v SRC:DST[:ro]`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BindMount {
    /// Host path.
    pub source: PathBuf,
    /// Path inside the container.
    pub target: PathBuf,
    /// Mounted read-only.
    pub readonly: bool,
}

impl BindMount {
    /// Parses `SRC:DST[:ro|:rw]`; both paths absolute.
    pub fn parse(text: &str) -> Result<Self, SpecError> {
        let bad = || SpecError::MalformedVolume(text.to_string());
        let parts: Vec<&str> = text.split(':').collect();
        let (source, target, readonly) = match parts.as_slice() {
            [s, t] => (*s, *t, false),
            [s, t, "ro"] => (*s, *t, true),
            [s, t, "rw"] => (*s, *t, false),
            _ => return Err(bad()),
        };
        if !source.starts_with('/') || !target.starts_with('/') || target == "/" {
            return Err(bad());
        }
        Ok(BindMount {
            source: source.into(),
            target: target.into(),
            readonly,
        })
    }

    /// As a mount of the container's list.
    pub fn to_mount(&self) -> Mount {
        Mount::bind(&self.source, &self.target, self.readonly)
    }
}

/// A tmpfs mounted in the container (`--tmpfs DST[:size=..,mode=..]`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TmpfsMount {
    /// Path inside the container.
    pub target: PathBuf,
    /// Mount options passed to tmpfs (validated: size, mode, nr_inodes, uid, gid).
    pub options: String,
}

impl TmpfsMount {
    /// Parses `DST[:OPT=VAL,...]`.
    pub fn parse(text: &str) -> Result<Self, SpecError> {
        let bad = |why: &str| SpecError::MalformedTmpfs(text.to_string(), why.to_string());
        let (target, options) = text.split_once(':').unwrap_or((text, ""));
        if !target.starts_with('/') || target == "/" {
            return Err(bad("DST must be an absolute path other than /"));
        }
        for opt in options.split(',').filter(|o| !o.is_empty()) {
            let (key, value) = opt
                .split_once('=')
                .ok_or_else(|| bad("options are KEY=VALUE"))?;
            let ok = match key {
                "size" => {
                    value.ends_with('%') && value[..value.len() - 1].parse::<u8>().is_ok()
                        || crate::cgroup::resources::parse_size(value).is_ok()
                }
                "mode" => value.len() <= 4 && u32::from_str_radix(value, 8).is_ok(),
                "nr_inodes" | "uid" | "gid" => value.parse::<u64>().is_ok(),
                _ => false,
            };
            if !ok {
                return Err(bad("allowed are size=SIZE (e.g. 64m or 50%), mode=OCTAL, nr_inodes=N, uid=N, gid=N"));
            }
        }
        Ok(TmpfsMount {
            target: target.into(),
            options: options.to_string(),
        })
    }

    /// As a mount of the container's list (nosuid, nodev, as Docker's --tmpfs).
    pub fn to_mount(&self) -> Mount {
        let mut m = Mount::fs(
            "tmpfs",
            "/",
            nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
            &self.options,
        );
        m.destination = self.target.clone();
        m
    }
}

/// An overlay root made of image layers (`kcell run IMAGE`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OverlayRoot {
    /// The image as the user named it.
    pub image: String,
    /// Its ID.
    pub image_id: String,
    /// Layer directories, top first (overlay's lowerdir order).
    pub lower: Vec<PathBuf>,
    /// The container's directory with upper/, work/ and merged/ (the root).
    pub dir: PathBuf,
}

/// Offsets of the time namespace, in seconds (time_namespaces(7)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TimeOffsets {
    /// Added to CLOCK_BOOTTIME (and so to /proc/uptime).
    pub boottime: i64,
    /// Added to CLOCK_MONOTONIC.
    pub monotonic: i64,
}

/// How the container's user namespace is mapped.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UserMapping {
    /// Lines for /proc/PID/uid_map; empty leaves ids unmapped (overflow ids).
    pub uids: IdMap,
    /// Lines for /proc/PID/gid_map.
    pub gids: IdMap,
}

/// One OCI hook: a program run at a step of the lifecycle with the
/// container's state as JSON on its stdin.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Hook {
    /// The program (absolute path).
    pub path: PathBuf,
    /// Its argv (argv[0] included).
    pub args: Vec<String>,
    /// Its environment.
    pub env: Vec<String>,
    /// Seconds before it is killed and the step fails.
    pub timeout: Option<u32>,
}

/// The hooks of each lifecycle step (runtime-spec config.md "POSIX-platform Hooks").
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Hooks {
    /// Deprecated: after the namespaces are made, before pivot_root, in the runtime's namespaces.
    pub prestart: Vec<Hook>,
    /// As prestart.
    pub create_runtime: Vec<Hook>,
    /// In the container's namespaces, before pivot_root.
    pub create_container: Vec<Hook>,
    /// In the container, after start, before the program runs.
    pub start_container: Vec<Hook>,
    /// After start, by the runtime.
    pub poststart: Vec<Hook>,
    /// After delete, by the runtime.
    pub poststop: Vec<Hook>,
}

impl Hooks {
    /// No hook at all.
    pub fn is_empty(&self) -> bool {
        *self == Hooks::default()
    }
}

/// A container, as data.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ContainerSpec {
    /// The container's ID: names its state and, by default, its cgroup (`/kcell/<id>`).
    pub id: String,
    /// The directory that becomes `/` (pivot_root), or `/` itself without a mnt namespace.
    pub rootfs: PathBuf,
    /// The container's first process.
    pub process: Process,
    /// Hostname for the UTS namespace.
    pub hostname: Option<String>,
    /// NIS domain name for the UTS namespace.
    pub domainname: Option<String>,
    /// The namespaces made for the container.
    pub namespaces: NamespaceSet,
    /// Namespaces joined instead of made (an OCI namespace with a `path`,
    /// `--net container:ID`): each namespace and its /proc/PID/ns-style file.
    pub joins: Vec<(Namespace, PathBuf)>,
    /// The user namespace's maps (used when `namespaces` holds user).
    pub user: UserMapping,
    /// Clock offsets (used when `namespaces` holds time).
    pub time: TimeOffsets,
    /// Every mount of the root, in order (see [`mount::standard_mounts`]).
    pub mounts: Vec<Mount>,
    /// Device nodes made in /dev (when /dev is not the host's, bound in).
    pub devices: Vec<Device>,
    /// Paths hidden (/dev/null or an empty read-only tmpfs over them).
    pub masked_paths: Vec<PathBuf>,
    /// Paths made read-only.
    pub readonly_paths: Vec<PathBuf>,
    /// The root itself remounted read-only.
    pub readonly_root: bool,
    /// Propagation of the root's mount (MS_PRIVATE, MS_SLAVE, ... with MS_REC).
    pub root_propagation: Option<u64>,
    /// Move the root into place and chroot instead of pivot_root (a root on a ramdisk).
    pub no_pivot: bool,
    /// Join a new session keyring (runc's default; `--no-new-keyring`: keep the caller's).
    pub new_keyring: bool,
    /// Kernel parameters set in the container's namespaces (/proc/sys).
    pub sysctl: Vec<(String, String)>,
    /// personality(2) domain (PER_LINUX or PER_LINUX32).
    pub personality: Option<u64>,
    /// cgroup limits.
    pub resources: Resources,
    /// The cgroup, as a path within every hierarchy (None: no cgroup of its
    /// own, the container stays in the caller's: `--no-cgroup`, or a caller
    /// that is not root).
    pub cgroup_path: Option<PathBuf>,
    /// The image layers `rootfs` is mounted from, if it is an image's.
    pub overlay: Option<OverlayRoot>,
    /// Nameservers of the container's own /etc/resolv.conf (none: the image's file).
    pub dns: Vec<std::net::IpAddr>,
    /// A bridge to connect the container's network namespace to (`--net bridge`).
    pub network: Option<crate::net::network::BridgeRequest>,
    /// The OCI hooks.
    pub hooks: Hooks,
    /// The bundle it was created from (OCI), for its state.
    pub bundle: Option<PathBuf>,
    /// The config's annotations, for its state.
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// A fresh 12-hex-digit container ID (48 random bits, as Docker's short IDs).
pub fn new_id() -> String {
    let mut bytes = [0u8; 6];
    let filled = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
    if filled.is_err() {
        // No /dev/urandom: fall back to time and pid, still unique per run.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let mix = (t as u64) ^ (u64::from(std::process::id()) << 32);
        bytes.copy_from_slice(&mix.to_le_bytes()[..6]);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks a user-given container ID: 1 to 64 of [A-Za-z0-9_.-], not starting with '.'.
pub fn validate_id(id: &str) -> Result<(), SpecError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(SpecError::BadId(id.to_string()))
    }
}

impl ContainerSpec {
    /// A spec with the default namespaces for this caller and nothing else set.
    pub fn new(rootfs: impl Into<PathBuf>, command: Vec<String>) -> Self {
        let id = new_id();
        let is_root = nix::unistd::geteuid().is_root();
        ContainerSpec {
            cgroup_path: is_root.then(|| crate::cgroup::default_path(&id)),
            id,
            rootfs: rootfs.into(),
            process: Process::new(command),
            hostname: None,
            domainname: None,
            namespaces: NamespaceSet::default_for(is_root),
            joins: Vec::new(),
            user: UserMapping::default(),
            time: TimeOffsets::default(),
            mounts: Vec::new(),
            devices: mount::default_devices(),
            masked_paths: mount::MASKED_PATHS.iter().map(PathBuf::from).collect(),
            readonly_paths: mount::READONLY_PATHS.iter().map(PathBuf::from).collect(),
            readonly_root: false,
            root_propagation: None,
            no_pivot: false,
            new_keyring: true,
            sysctl: Vec::new(),
            personality: None,
            resources: Resources::default(),
            overlay: None,
            dns: Vec::new(),
            network: None,
            hooks: Hooks::default(),
            bundle: None,
            annotations: Default::default(),
        }
    }

    /// Whether the container is in a namespace of this type other than its
    /// caller's: one made for it, or one it joins.
    pub fn has_namespace(&self, ns: Namespace) -> bool {
        self.namespaces.contains(ns) || self.joins.iter().any(|(n, _)| *n == ns)
    }

    /// Whether its root's mounts are made in the caller's mount namespace:
    /// no mount namespace of its own and a root other than / (a root of /
    /// mounts nothing). See [`crate::rootfs::host_ns`].
    pub fn mounts_in_callers_namespace(&self) -> bool {
        !self.has_namespace(Namespace::Mnt) && self.rootfs != Path::new("/")
    }

    /// Checks everything that can be checked before a process is made.
    pub fn validate(&self) -> Result<(), SpecError> {
        validate_id(&self.id)?;
        if self.process.args.is_empty() || self.process.args[0].is_empty() {
            return Err(SpecError::MissingCommand);
        }
        if !self.rootfs.is_dir() {
            return Err(SpecError::MissingRootfs(self.rootfs.clone()));
        }
        if self.mounts_in_callers_namespace() {
            for (what, set) in [
                ("masking paths", !self.masked_paths.is_empty()),
                ("making paths read-only", !self.readonly_paths.is_empty()),
                ("a read-only root", self.readonly_root),
                ("root propagation", self.root_propagation.is_some()),
            ] {
                if set {
                    return Err(SpecError::NeedsMnt(what));
                }
            }
        }
        let uts = self.has_namespace(Namespace::Uts);
        if let Some(name) = &self.hostname {
            if name.len() > HOSTNAME_MAX {
                return Err(SpecError::HostnameTooLong(name.clone(), name.len()));
            }
            if !uts {
                return Err(SpecError::HostnameWithoutUts);
            }
        }
        if !self.namespaces.contains(Namespace::Time) {
            if self.time.boottime != 0 {
                return Err(SpecError::OffsetWithoutTime("boottime"));
            }
            if self.time.monotonic != 0 {
                return Err(SpecError::OffsetWithoutTime("monotonic"));
            }
        }
        if !self.namespaces.contains(Namespace::User) {
            if !self.user.uids.is_empty() {
                return Err(SpecError::MapWithoutUser("uid"));
            }
            if !self.user.gids.is_empty() {
                return Err(SpecError::MapWithoutUser("gid"));
            }
        }
        for m in self.mounts.iter().filter(|m| m.is_bind()) {
            match &m.source {
                Some(src) if src.exists() => {}
                Some(src) => return Err(SpecError::MissingVolumeSource(src.clone())),
                None => return Err(SpecError::MissingVolumeSource(PathBuf::new())),
            }
        }
        if let Some(bad) = self.process.env.iter().find(|e| !e.contains('=')) {
            return Err(SpecError::MalformedEnv(bad.clone()));
        }
        if self.network.is_some() && !self.namespaces.contains(Namespace::Net) {
            return Err(SpecError::BridgeWithoutNet);
        }
        Ok(())
    }

    /// Whether its user namespace leaves uid 0 unmapped (a root caller that
    /// gave no maps): nothing can be created then (EOVERFLOW).
    pub fn unmapped_user_ns(&self) -> bool {
        self.namespaces.contains(Namespace::User)
            && self.user.uids.is_empty()
            && nix::unistd::geteuid().is_root()
    }

    /// Puts kcell's standard mounts first, then `extra` (volumes, tmpfs),
    /// as the namespaces now chosen need them.
    pub fn set_mounts(&mut self, extra: Vec<Mount>) {
        let user_ns = self.namespaces.contains(Namespace::User);
        let dev = if self.unmapped_user_ns() {
            mount::DevKind::HostBind
        } else {
            mount::DevKind::Tmpfs
        };
        let own_cgroup =
            !user_ns && self.cgroup_path.is_some() && self.namespaces.contains(Namespace::Cgroup);
        let mut mounts = if self.namespaces.contains(Namespace::Mnt) {
            mount::standard_mounts(dev, user_ns, own_cgroup)
        } else {
            Vec::new()
        };
        mounts.extend(extra);
        self.mounts = mounts;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn spec() -> ContainerSpec {
        let mut s = ContainerSpec::new("/", vec!["true".into()]);
        s.namespaces = NamespaceSet::parse_list("uts,ipc,pid").expect("valid");
        s
    }

    #[rstest]
    #[case("/a:/b", "/a", "/b", false)]
    #[case("/a:/b:ro", "/a", "/b", true)]
    #[case("/a:/b:rw", "/a", "/b", false)]
    fn parses_volumes(#[case] text: &str, #[case] s: &str, #[case] t: &str, #[case] ro: bool) {
        let m = BindMount::parse(text).expect("valid");
        assert_eq!((m.source, m.target, m.readonly), (s.into(), t.into(), ro));
    }

    #[rstest]
    #[case("a:/b")]
    #[case("/a:b")]
    #[case("/a")]
    #[case("/a:/b:rx")]
    #[case("/a:/")]
    fn rejects_bad_volumes(#[case] text: &str) {
        assert_eq!(
            BindMount::parse(text),
            Err(SpecError::MalformedVolume(text.into()))
        );
    }

    #[rstest]
    #[case("/t", "")]
    #[case("/t:size=1m,mode=700", "size=1m,mode=700")]
    #[case("/t:size=50%", "size=50%")]
    fn parses_tmpfs(#[case] text: &str, #[case] options: &str) {
        assert_eq!(
            TmpfsMount::parse(text).map(|t| t.options),
            Ok(options.to_string())
        );
    }

    #[rstest]
    #[case("t")]
    #[case("/")]
    #[case("/t:size=lots")]
    #[case("/t:mode=999")]
    #[case("/t:exec")]
    #[case("/t:suid=1")]
    fn rejects_bad_tmpfs(#[case] text: &str) {
        assert!(
            matches!(TmpfsMount::parse(text), Err(SpecError::MalformedTmpfs(t, _)) if t == text)
        );
    }

    #[test]
    fn hostname_limit_is_64_bytes() {
        let mut s = spec();
        s.hostname = Some("x".repeat(64));
        assert_eq!(s.validate(), Ok(()));
        s.hostname = Some("x".repeat(65));
        assert_eq!(
            s.validate(),
            Err(SpecError::HostnameTooLong("x".repeat(65), 65))
        );
    }

    #[test]
    fn without_mnt_a_root_may_not_change_the_callers_mounts() {
        // spec() has no mnt namespace and the default masked paths.
        let mut s = spec();
        assert_eq!(s.validate(), Ok(()), "a root of / seals nothing");
        s.rootfs = std::env::temp_dir();
        assert_eq!(s.validate(), Err(SpecError::NeedsMnt("masking paths")));
        s.masked_paths.clear();
        s.readonly_paths.clear();
        assert_eq!(s.validate(), Ok(()));
        s.readonly_root = true;
        assert_eq!(s.validate(), Err(SpecError::NeedsMnt("a read-only root")));
    }

    #[test]
    fn missing_command_and_root_are_named() {
        let mut s = spec();
        s.process.args.clear();
        assert_eq!(s.validate(), Err(SpecError::MissingCommand));
        let mut s = spec();
        s.rootfs = "/nonexistent-kcell".into();
        assert_eq!(
            s.validate(),
            Err(SpecError::MissingRootfs("/nonexistent-kcell".into()))
        );
    }

    #[rstest]
    #[case("web-1", true)]
    #[case("a.b_c", true)]
    #[case("", false)]
    #[case(".hidden", false)]
    #[case("a/b", false)]
    #[case("../x", false)]
    fn ids(#[case] id: &str, #[case] ok: bool) {
        assert_eq!(validate_id(id).is_ok(), ok);
        assert!(validate_id(&new_id()).is_ok());
        assert_eq!(new_id().len(), 12);
    }
}
