//! Bridge networks and their address leases. Each bridge has a lease file
//! `<state>/net/<bridge>.json` (its subnet, whether it masquerades, and
//! which container holds which address), changed only under an exclusive
//! flock of the `net` directory. The first lease of a bridge makes it (the
//! link, its gateway address, the NAT table); the last release removes all
//! of it, file included, so nothing outlives the containers. The lease is
//! written before anything it names is made: cleanup after a crash is a
//! replay of the file ([`Networks::sweep`]).

use super::{link, nat, netlink::Socket, Ipv4Net, NetError};
use crate::sys::{SysContext, SysError};
use nix::errno::Errno;
use std::collections::BTreeMap;
use std::fs;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// The bridge `--net bridge` uses unless `--bridge` names another.
pub const DEFAULT_BRIDGE: &str = "kcell0";

/// What a container asks of a bridge network.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BridgeRequest {
    /// The bridge's name.
    pub bridge: String,
    /// Its subnet (None: the existing one, or a default free of host routes).
    pub subnet: Option<Ipv4Net>,
    /// A fixed address for the container (None: the lowest free one).
    pub ip: Option<Ipv4Addr>,
    /// Whether traffic leaving the subnet is masqueraded.
    pub nat: bool,
}

/// A container's address on a bridge.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Lease {
    /// The bridge.
    pub bridge: String,
    /// Its subnet.
    pub subnet: Ipv4Net,
    /// The container's address.
    pub address: Ipv4Addr,
    /// The bridge's address, the container's default route.
    pub gateway: Ipv4Addr,
}

/// The lease file of one bridge.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct LeaseFile {
    subnet: Option<Ipv4Net>,
    nat: bool,
    /// Address -> container ID.
    leases: BTreeMap<Ipv4Addr, String>,
}

/// The lease files under a state directory.
#[derive(Debug, Clone)]
pub struct Networks {
    dir: PathBuf,
}

/// An exclusive flock of the net directory; the directory is removed when
/// the holder leaves it empty.
struct Locked {
    /// The open directory holding the flock (released when it is closed).
    _lock: fs::File,
    path: PathBuf,
}

impl Locked {
    fn file(&self, bridge: &str) -> PathBuf {
        self.path.join(format!("{bridge}.json"))
    }

    fn load(&self, bridge: &str) -> Result<LeaseFile, NetError> {
        let path = self.file(bridge);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                NetError::Invalid(format!("lease file {} is unreadable: {e}", path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(LeaseFile::default()),
            Err(e) => Err(SysError::from_io("read", path.display(), e).into()),
        }
    }

    /// Writes the file whole (temporary file, fsync, rename), or removes it
    /// when it holds no lease.
    fn save(&self, bridge: &str, file: &LeaseFile) -> Result<(), NetError> {
        let path = self.file(bridge);
        if file.leases.is_empty() {
            return match fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(SysError::from_io("unlink", path.display(), e).into())
                }
                _ => Ok(()),
            };
        }
        let tmp = self.path.join(format!(".{bridge}.json.tmp"));
        let json = serde_json::to_vec_pretty(file).unwrap_or_default();
        {
            use std::io::Write;
            let mut f = fs::File::create(&tmp).sys("create", tmp.display())?;
            f.write_all(&json).sys("write", tmp.display())?;
            f.sync_all().sys("fsync", tmp.display())?;
        }
        fs::rename(&tmp, &path).sys("rename", path.display())?;
        Ok(())
    }

    fn bridges(&self) -> Vec<String> {
        let Ok(entries) = fs::read_dir(&self.path) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                name.strip_suffix(".json")
                    .filter(|n| !n.starts_with('.'))
                    .map(str::to_string)
            })
            .collect()
    }
}

impl Drop for Locked {
    fn drop(&mut self) {
        // Still holding the lock: nobody else can be adding a file now.
        if fs::read_dir(&self.path).is_ok_and(|mut d| d.next().is_none())
            && fs::remove_dir(&self.path).is_ok()
        {
            // The state directory goes with its last content, as records do.
            if let Some(state) = self.path.parent() {
                let _ = fs::remove_dir(state);
            }
        }
        // The lock goes when `dir` is closed, after this.
    }
}

impl Networks {
    /// The lease files in `dir` (`<state>/net`).
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Networks { dir: dir.into() }
    }

    fn lock(&self) -> Result<Locked, NetError> {
        loop {
            match fs::create_dir_all(&self.dir) {
                Ok(()) => {}
                Err(e) => return Err(SysError::from_io("mkdir", self.dir.display(), e).into()),
            }
            let dir = match fs::File::open(&self.dir) {
                Ok(d) => d,
                // Removed by a holder that emptied it: make it again.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(SysError::from_io("open", self.dir.display(), e).into()),
            };
            // SAFETY: flock on a descriptor this function owns.
            let rc = unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX) };
            Errno::result(rc).sys("flock", self.dir.display())?;
            // The directory may have been removed while this waited.
            let same = match (dir.metadata(), fs::metadata(&self.dir)) {
                (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
                _ => false,
            };
            if same {
                return Ok(Locked {
                    _lock: dir,
                    path: self.dir.clone(),
                });
            }
        }
    }

    /// Leases an address on `req.bridge` to container `id`, making the
    /// bridge (and its NAT table) when it is the first.
    pub fn acquire(&self, req: &BridgeRequest, id: &str) -> Result<Lease, NetError> {
        super::validate_ifname(&req.bridge, "bridge")?;
        let locked = self.lock()?;
        let mut file = locked.load(&req.bridge)?;
        let fresh = file.leases.is_empty();
        let subnet = match (file.subnet.filter(|_| !fresh), req.subnet) {
            (Some(have), Some(want)) if have != want => {
                return Err(NetError::Invalid(format!(
                    "bridge {} has subnet {have} while containers use it; --subnet {want} needs another --bridge",
                    req.bridge
                )))
            }
            (Some(have), _) => {
                if file.nat != req.nat {
                    return Err(NetError::Invalid(format!(
                        "bridge {} runs {} NAT while containers use it; use another --bridge for {}",
                        req.bridge,
                        if file.nat { "with" } else { "without" },
                        if req.nat { "NAT" } else { "--no-nat" }
                    )));
                }
                have
            }
            (None, want) => free_subnet(&req.bridge, want)?,
        };
        let gateway = subnet.host(1).unwrap_or(subnet.addr);
        let address = match req.ip {
            Some(ip) => {
                check_address(subnet, gateway, ip)?;
                if let Some(holder) = file.leases.get(&ip) {
                    return Err(NetError::Invalid(format!(
                        "address {ip} is leased to container {holder} on bridge {}",
                        req.bridge
                    )));
                }
                ip
            }
            None => (2..)
                .map_while(|n| subnet.host(n))
                .take_while(|ip| *ip != subnet.broadcast())
                .find(|ip| !file.leases.contains_key(ip))
                .ok_or_else(|| {
                    NetError::Invalid(format!(
                        "subnet {subnet} of bridge {} has no free address",
                        req.bridge
                    ))
                })?,
        };
        file.subnet = Some(subnet);
        file.nat = req.nat;
        file.leases.insert(address, id.to_string());
        // The lease is on disk before the bridge exists: a crash from here
        // on is cleaned by a sweep.
        locked.save(&req.bridge, &file)?;
        if fresh {
            if let Err(e) = bring_up(&req.bridge, subnet, gateway, req.nat) {
                let _ = tear_down(&req.bridge);
                file.leases.clear();
                let _ = locked.save(&req.bridge, &file);
                return Err(e);
            }
        }
        Ok(Lease {
            bridge: req.bridge.clone(),
            subnet,
            address,
            gateway,
        })
    }

    /// Gives back container `id`'s leases on `bridge`; the last one takes
    /// the bridge and its NAT table along.
    pub fn release(&self, bridge: &str, id: &str) -> Result<(), NetError> {
        let locked = self.lock()?;
        Self::release_locked(&locked, bridge, &|holder| holder != id)
    }

    fn release_locked(
        locked: &Locked,
        bridge: &str,
        keep: &dyn Fn(&str) -> bool,
    ) -> Result<(), NetError> {
        let mut file = locked.load(bridge)?;
        let before = file.leases.len();
        file.leases.retain(|_, holder| keep(holder));
        if file.leases.is_empty() {
            tear_down(bridge)?;
        }
        if before != file.leases.len() || file.leases.is_empty() {
            locked.save(bridge, &file)?;
        }
        Ok(())
    }

    /// Releases every lease whose container `is_live` denies (its runtime
    /// was killed); returns the bridges it touched.
    pub fn sweep(&self, is_live: &dyn Fn(&str) -> bool) -> Vec<String> {
        if !self.dir.exists() {
            return Vec::new();
        }
        let Ok(locked) = self.lock() else {
            return Vec::new();
        };
        let mut touched = Vec::new();
        for bridge in locked.bridges() {
            let Ok(file) = locked.load(&bridge) else {
                continue;
            };
            if file.leases.values().all(|id| is_live(id)) && !file.leases.is_empty() {
                continue;
            }
            if Self::release_locked(&locked, &bridge, is_live).is_ok() {
                touched.push(bridge);
            }
        }
        touched
    }

    /// Every lease, as (bridge, address, container ID).
    pub fn leases(&self) -> Vec<(String, Ipv4Addr, String)> {
        // Looking makes nothing: no directory, no lease.
        if !self.dir.exists() {
            return Vec::new();
        }
        let Ok(locked) = self.lock() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for bridge in locked.bridges() {
            if let Ok(file) = locked.load(&bridge) {
                out.extend(
                    file.leases
                        .into_iter()
                        .map(|(ip, id)| (bridge.clone(), ip, id)),
                );
            }
        }
        out
    }
}

/// Checks a fixed address against the subnet.
fn check_address(subnet: Ipv4Net, gateway: Ipv4Addr, ip: Ipv4Addr) -> Result<(), NetError> {
    if !subnet.contains(ip) {
        return Err(NetError::Invalid(format!(
            "address {ip} is outside the bridge's subnet {subnet}"
        )));
    }
    if ip == subnet.network() || ip == subnet.broadcast() || ip == gateway {
        return Err(NetError::Invalid(format!(
            "address {ip} is the network, broadcast or gateway address of {subnet}: use {}..{}",
            subnet.host(2).unwrap_or(ip),
            Ipv4Addr::from(u32::from(subnet.broadcast()) - 1)
        )));
    }
    Ok(())
}

/// The subnet for a new bridge: the one asked for if no host route
/// overlaps it, else the first of 10.89.0.0/24 .. 10.89.255.0/24 that none does.
fn free_subnet(bridge: &str, want: Option<Ipv4Net>) -> Result<Ipv4Net, NetError> {
    // A route through the bridge itself is its own (a leftover being reused).
    let Some(net) = want else {
        let candidates = (0..=255u8).map(|third| Ipv4Net {
            addr: Ipv4Addr::new(10, 89, third, 0),
            prefix: 24,
        });
        return super::unrouted(candidates, Some(bridge))?.ok_or_else(|| {
            NetError::Invalid(
                "every subnet of 10.89.0.0/16 overlaps a host route: give --subnet".into(),
            )
        });
    };
    let routes = super::host_routes()?;
    match routes
        .iter()
        .find(|r| r.device != bridge && r.dest.overlaps(&net))
    {
        Some(r) => Err(NetError::Invalid(format!(
            "subnet {net} overlaps the host route {} dev {}: choose another --subnet",
            r.dest, r.device
        ))),
        None => Ok(net),
    }
}

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// Makes the bridge with its gateway address, up; turns on forwarding and
/// installs the NAT table when asked.
fn bring_up(bridge: &str, subnet: Ipv4Net, gateway: Ipv4Addr, nat: bool) -> Result<(), NetError> {
    let mut sock = Socket::route()?;
    match link::create_bridge(&mut sock, bridge) {
        Err(e) if e.errno == Errno::EEXIST => {}
        other => other?,
    }
    let index = link::index(&mut sock, bridge)?;
    match link::add_address(&mut sock, index, bridge, gateway, subnet.prefix) {
        Err(e) if e.errno == Errno::EEXIST => {}
        other => other?,
    }
    link::set_up(&mut sock, index, bridge)?;
    if nat {
        // Routing between the bridge and other interfaces (Docker does the
        // same and, like it, leaves it on).
        if fs::read_to_string(IP_FORWARD)
            .map(|s| s.trim() == "0")
            .unwrap_or(true)
        {
            fs::write(IP_FORWARD, "1").sys("write 1 to", IP_FORWARD)?;
        }
        let mut nf = Socket::netfilter()?;
        nat::remove(&mut nf, bridge)?;
        nat::install(&mut nf, bridge, subnet, bridge).map_err(|e| {
            NetError::Invalid(format!(
                "{e}: the kernel needs nf_tables with nft_chain_nat and nft_masq for NAT (or run with --no-nat)"
            ))
        })?;
    }
    Ok(())
}

/// Removes the NAT table and the bridge; either may already be gone.
pub fn tear_down(bridge: &str) -> Result<(), NetError> {
    let mut first_error = None;
    match Socket::netfilter().and_then(|mut nf| nat::remove(&mut nf, bridge)) {
        // No nf_tables at all: there is no table to remove.
        Err(e) if e.errno == Errno::EPROTONOSUPPORT => {}
        Err(e) => first_error = Some(e),
        Ok(_) => {}
    }
    if let Err(e) = Socket::route().and_then(|mut s| link::delete(&mut s, bridge)) {
        first_error.get_or_insert(e);
    }
    first_error.map_or(Ok(()), |e| Err(e.into()))
}

/// The host-side name of a container's `n`-th interface: the `kcell`
/// prefix, 8 hex digits of the container ID's hash, and `n` (15 bytes at most).
pub fn host_link_name(id: &str, n: u32) -> String {
    use sha2::Digest;
    let hash = sha2::Sha256::digest(id.as_bytes());
    format!(
        "kcell{:02x}{:02x}{:02x}{:02x}{}",
        hash[0],
        hash[1],
        hash[2],
        hash[3],
        n % 10
    )
}

/// Connects a container to its bridge: a veth pair with `host_link` on the
/// bridge and eth0 in `netns`, the leased address and the default route.
/// On failure the pair is removed again.
pub fn plumb(lease: &Lease, host_link: &str, netns: BorrowedFd<'_>) -> Result<(), NetError> {
    let mut sock = Socket::route()?;
    let master = link::index(&mut sock, &lease.bridge)?;
    link::create_veth(&mut sock, host_link, "eth0", netns, Some(master))?;
    let configured = (|| {
        let index = link::index(&mut sock, host_link)?;
        link::set_up(&mut sock, index, host_link)?;
        let (address, prefix, gateway) = (lease.address, lease.subnet.prefix, lease.gateway);
        super::in_netns(netns, "the container's network namespace", move || {
            let mut inside = Socket::route()?;
            let eth0 = link::index(&mut inside, "eth0")?;
            link::add_address(&mut inside, eth0, "eth0", address, prefix)?;
            link::set_up(&mut inside, eth0, "eth0")?;
            link::add_default_route(&mut inside, eth0, gateway)?;
            Ok(())
        })
    })();
    if configured.is_err() {
        let _ = link::delete(&mut sock, host_link);
    }
    configured
}

/// Adds a further interface `name` with `addr` to the namespace `netns`:
/// a veth pair whose host end `host_link` is up and attached to nothing.
pub fn attach(
    netns: BorrowedFd<'_>,
    host_link: &str,
    name: &str,
    addr: Ipv4Net,
) -> Result<(), NetError> {
    super::validate_ifname(name, "interface name")?;
    let mut sock = Socket::route()?;
    link::create_veth(&mut sock, host_link, name, netns, None)?;
    let configured = (|| {
        let index = link::index(&mut sock, host_link)?;
        link::set_up(&mut sock, index, host_link)?;
        let name = name.to_string();
        super::in_netns(netns, "the container's network namespace", move || {
            let mut inside = Socket::route()?;
            let index = link::index(&mut inside, &name)?;
            link::add_address(&mut inside, index, &name, addr.addr, addr.prefix)?;
            link::set_up(&mut inside, index, &name)?;
            Ok(())
        })
    })();
    if configured.is_err() {
        let _ = link::delete(&mut sock, host_link);
    }
    configured
}

/// Deletes host-side links (ENODEV is fine: a veth goes with its peer's namespace).
pub fn delete_links(names: &[String]) -> Result<(), NetError> {
    if names.is_empty() {
        return Ok(());
    }
    let mut sock = Socket::route()?;
    for name in names {
        link::delete(&mut sock, name)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_link_names_fit_ifnamsiz_and_carry_the_prefix() {
        let name = host_link_name("a-very-long-container-name-indeed", 3);
        assert!(
            name.starts_with("kcell") && name.len() < libc::IFNAMSIZ,
            "{name}"
        );
        assert_ne!(host_link_name("a", 0), host_link_name("b", 0));
        assert_ne!(host_link_name("a", 0), host_link_name("a", 1));
    }

    #[test]
    fn fixed_addresses_are_checked_against_the_subnet() {
        let net = Ipv4Net::parse_subnet("10.89.0.0/24").unwrap();
        let gw = Ipv4Addr::new(10, 89, 0, 1);
        assert!(check_address(net, gw, Ipv4Addr::new(10, 89, 0, 9)).is_ok());
        for bad in ["10.89.1.9", "10.89.0.0", "10.89.0.1", "10.89.0.255"] {
            let err = check_address(net, gw, bad.parse().unwrap())
                .unwrap_err()
                .to_string();
            assert!(err.contains(bad), "{err}");
        }
    }

    #[test]
    fn lease_files_round_trip() {
        let mut f = LeaseFile {
            subnet: Some("10.89.0.0/24".parse().unwrap()),
            nat: true,
            ..Default::default()
        };
        f.leases.insert(Ipv4Addr::new(10, 89, 0, 2), "web".into());
        let json = serde_json::to_string(&f).unwrap();
        assert!(json.contains("\"10.89.0.0/24\""), "{json}");
        let back: LeaseFile = serde_json::from_str(&json).unwrap();
        assert_eq!(back.leases, f.leases);
    }
}
