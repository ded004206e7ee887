//! Container networking: a bridge on the host, a veth pair per container
//! (the container's end made directly in its namespace as eth0), addresses
//! leased from the bridge's subnet, and MASQUERADE for traffic that leaves
//! the subnet. Everything goes through netlink ([`netlink`]): links,
//! addresses and routes over rtnetlink ([`link`]), NAT over nf_tables
//! ([`nat`]). [`network`] ties them to a lease file per bridge.

pub mod link;
pub mod nat;
pub mod netlink;
pub mod network;

use crate::sys::{SysContext, SysError};
use std::fmt;
use std::net::Ipv4Addr;
use std::os::fd::BorrowedFd;
use std::str::FromStr;

/// Errors of container networking.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A system call or netlink request failed.
    #[error(transparent)]
    Sys(#[from] SysError),
    /// Bad input (a subnet, an address, a name), with what is allowed.
    #[error("{0}")]
    Invalid(String),
}

/// The netmask of a prefix length, as a host-order u32.
pub fn prefix_mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    }
}

/// An IPv4 network or interface address with its prefix, "10.89.0.0/24".
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ipv4Net {
    /// The address as written (the network address for a subnet).
    pub addr: Ipv4Addr,
    /// The prefix length, 0..=32.
    pub prefix: u8,
}

impl Ipv4Net {
    /// The netmask.
    pub fn mask(&self) -> Ipv4Addr {
        Ipv4Addr::from(prefix_mask(self.prefix))
    }

    /// The network address.
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & prefix_mask(self.prefix))
    }

    /// The broadcast address.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !prefix_mask(self.prefix))
    }

    /// Whether `ip` lies in this network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & prefix_mask(self.prefix) == u32::from(self.network())
    }

    /// Whether the two networks share any address.
    pub fn overlaps(&self, other: &Ipv4Net) -> bool {
        let shorter = self.prefix.min(other.prefix);
        let mask = prefix_mask(shorter);
        u32::from(self.addr) & mask == u32::from(other.addr) & mask
    }

    /// The n-th address of the network (1 is the first host address).
    pub fn host(&self, n: u32) -> Option<Ipv4Addr> {
        let size = 1u64 << (32 - u32::from(self.prefix));
        (u64::from(n) < size).then(|| Ipv4Addr::from(u32::from(self.network()) + n))
    }

    /// Parses a subnet for a bridge: host bits must be zero, and it must
    /// leave room for a gateway and containers (/8 to /30).
    pub fn parse_subnet(text: &str) -> Result<Self, NetError> {
        let net: Ipv4Net = text.parse()?;
        if net.addr != net.network() {
            return Err(NetError::Invalid(format!(
                "subnet '{text}' has host bits set: the network address is {}/{}",
                net.network(),
                net.prefix
            )));
        }
        if !(8..=30).contains(&net.prefix) {
            return Err(NetError::Invalid(format!(
                "subnet '{text}': the prefix must be /8 to /30 (room for a gateway and containers)"
            )));
        }
        Ok(net)
    }
}

impl FromStr for Ipv4Net {
    type Err = NetError;
    fn from_str(text: &str) -> Result<Self, NetError> {
        let bad = || {
            NetError::Invalid(format!(
                "'{text}' is not an IPv4 address with a prefix length, as 10.89.0.0/24"
            ))
        };
        let (addr, prefix) = text.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if prefix > 32 {
            return Err(bad());
        }
        Ok(Ipv4Net { addr, prefix })
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl TryFrom<String> for Ipv4Net {
    type Error = NetError;
    fn try_from(s: String) -> Result<Self, NetError> {
        s.parse()
    }
}

impl From<Ipv4Net> for String {
    fn from(n: Ipv4Net) -> String {
        n.to_string()
    }
}

/// A route of the host's main table (from /proc/net/route).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoute {
    /// The device it leaves through.
    pub device: String,
    /// The destination network.
    pub dest: Ipv4Net,
}

/// The host's IPv4 routes other than the default one.
pub fn host_routes() -> Result<Vec<HostRoute>, SysError> {
    let text = std::fs::read_to_string("/proc/net/route").sys("read", "/proc/net/route")?;
    Ok(parse_routes(&text))
}

fn parse_routes(text: &str) -> Vec<HostRoute> {
    // Columns: Iface Destination Gateway Flags RefCnt Use Metric Mask ...,
    // addresses in hex in the kernel's (little-endian) byte order.
    let hex = |s: &str| u32::from_str_radix(s, 16).ok().map(u32::from_be);
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let dest = hex(f.get(1)?)?;
            let mask = hex(f.get(7)?)?;
            (mask != 0).then(|| HostRoute {
                device: f[0].to_string(),
                dest: Ipv4Net {
                    addr: Ipv4Addr::from(dest),
                    prefix: mask.count_ones() as u8,
                },
            })
        })
        .collect()
}

/// The first of `candidates` that no host route overlaps, routes through
/// `ignore` (a bridge's own) left out; None when every one is routed.
pub fn unrouted(
    candidates: impl IntoIterator<Item = Ipv4Net>,
    ignore: Option<&str>,
) -> Result<Option<Ipv4Net>, SysError> {
    let routes: Vec<HostRoute> = host_routes()?
        .into_iter()
        .filter(|r| Some(r.device.as_str()) != ignore)
        .collect();
    Ok(candidates
        .into_iter()
        .find(|net| routes.iter().all(|r| !r.dest.overlaps(net))))
}

/// Runs `f` on a thread that has joined the network namespace `netns`:
/// sockets it opens (netlink included) belong to that namespace. A network
/// namespace is per thread, so the runtime's own thread stays where it is.
pub fn in_netns<T: Send>(
    netns: BorrowedFd<'_>,
    what: &str,
    f: impl FnOnce() -> Result<T, NetError> + Send,
) -> Result<T, NetError> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                nix::sched::setns(netns, nix::sched::CloneFlags::CLONE_NEWNET)
                    .sys("setns net", what)?;
                f()
            })
            .join()
            .unwrap_or_else(|_| {
                Err(NetError::Invalid(format!(
                    "{what}: the network thread panicked"
                )))
            })
    })
}

/// Checks an interface name: 1 to 15 bytes of letters, digits, '_' and '-'.
pub fn validate_ifname(name: &str, what: &str) -> Result<(), NetError> {
    let ok = !name.is_empty()
        && name.len() < libc::IFNAMSIZ
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(NetError::Invalid(format!(
            "{what} '{name}' is not allowed: 1 to 15 letters, digits, '_' or '-'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("10.89.0.0/24", "10.89.0.0/24", true)]
    #[case("10.89.0.0/24", "10.89.1.0/24", false)]
    #[case("10.0.0.0/8", "10.89.3.0/24", true)]
    #[case("10.89.3.0/24", "10.0.0.0/8", true)]
    #[case("192.168.1.0/24", "192.168.0.0/23", true)]
    #[case("192.168.2.0/24", "192.168.0.0/23", false)]
    fn overlaps(#[case] a: &str, #[case] b: &str, #[case] expected: bool) {
        let (a, b): (Ipv4Net, Ipv4Net) = (a.parse().unwrap(), b.parse().unwrap());
        assert_eq!(a.overlaps(&b), expected);
    }

    #[rstest]
    #[case("10.89.0.1/24")]
    #[case("10.89.0.0")]
    #[case("10.89.0.0/33")]
    #[case("10.89.0.0/31")]
    #[case("10.0.0.0/7")]
    #[case("10.89.0.256/24")]
    #[case("fd00::/64")]
    fn bad_subnets_are_named(#[case] text: &str) {
        let err = Ipv4Net::parse_subnet(text).unwrap_err().to_string();
        assert!(err.contains(text), "{err}");
    }

    #[test]
    fn hosts_broadcast_and_membership() {
        let net = Ipv4Net::parse_subnet("10.89.0.0/24").unwrap();
        assert_eq!(net.host(1), Some(Ipv4Addr::new(10, 89, 0, 1)));
        assert_eq!(net.host(256), None);
        assert_eq!(net.broadcast(), Ipv4Addr::new(10, 89, 0, 255));
        assert!(net.contains(Ipv4Addr::new(10, 89, 0, 77)));
        assert!(!net.contains(Ipv4Addr::new(10, 89, 1, 77)));
    }

    #[test]
    fn proc_net_route_is_read_in_kernel_byte_order() {
        let text =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                    eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                    eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        let routes = parse_routes(text);
        assert_eq!(
            routes,
            vec![HostRoute {
                device: "eth0".into(),
                dest: "192.0.2.0/24".parse().unwrap()
            }]
        );
    }

    #[rstest]
    #[case("kcell0", true)]
    #[case("eth-1_x", true)]
    #[case("", false)]
    #[case("a-name-that-is-16", false)]
    #[case("br0;rm", false)]
    #[case("br 0", false)]
    fn interface_names(#[case] name: &str, #[case] ok: bool) {
        assert_eq!(validate_ifname(name, "bridge").is_ok(), ok);
    }
}
