//! Links, addresses and routes over rtnetlink (rtnetlink(7)): what `ip link
//! add ... type bridge|veth`, `ip addr add` and `ip route add default` do.

use super::netlink::{self, Message, Socket, NLM_F_CREATE, NLM_F_EXCL};
use crate::sys::SysError;
use nix::errno::Errno;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, BorrowedFd};

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;

const IFLA_IFNAME: u16 = 3;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const IFLA_NET_NS_FD: u16 = 28;
const VETH_INFO_PEER: u16 = 1;

const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;

const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;

/// `struct ifinfomsg`: family, type, index, flags, change mask.
fn ifinfomsg(index: u32, flags: u32, change: u32) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0] = libc::AF_UNSPEC as u8;
    b[4..8].copy_from_slice(&index.to_ne_bytes());
    b[8..12].copy_from_slice(&flags.to_ne_bytes());
    b[12..16].copy_from_slice(&change.to_ne_bytes());
    b
}

/// Creates a bridge `name` (down, no address).
pub fn create_bridge(sock: &mut Socket, name: &str) -> Result<(), SysError> {
    let mut m = Message::new(
        RTM_NEWLINK,
        NLM_F_CREATE | NLM_F_EXCL,
        &ifinfomsg(0, 0, 0),
        format!("RTM_NEWLINK bridge {name}"),
    );
    m.attr_str(IFLA_IFNAME, name);
    m.nest(IFLA_LINKINFO)
        .attr_str(IFLA_INFO_KIND, "bridge")
        .end();
    sock.request(&m)
}

/// Creates a veth pair: `name` here (enslaved to `master` when given) and
/// `peer` made directly in the network namespace `peer_netns`, so the
/// container's end never exists in the host's namespace under a name that
/// could collide.
pub fn create_veth(
    sock: &mut Socket,
    name: &str,
    peer: &str,
    peer_netns: BorrowedFd<'_>,
    master: Option<u32>,
) -> Result<(), SysError> {
    let mut m = Message::new(
        RTM_NEWLINK,
        NLM_F_CREATE | NLM_F_EXCL,
        &ifinfomsg(0, 0, 0),
        format!("RTM_NEWLINK veth {name} (peer {peer} in the container)"),
    );
    m.attr_str(IFLA_IFNAME, name);
    if let Some(master) = master {
        m.attr_u32(IFLA_MASTER, master);
    }
    m.nest(IFLA_LINKINFO)
        .attr_str(IFLA_INFO_KIND, "veth")
        .nest(IFLA_INFO_DATA)
        .nest(VETH_INFO_PEER)
        .raw(&ifinfomsg(0, 0, 0))
        .attr_str(IFLA_IFNAME, peer)
        .attr_u32(IFLA_NET_NS_FD, peer_netns.as_raw_fd() as u32)
        .end()
        .end()
        .end();
    sock.request(&m)
}

/// The index of link `name`; ENODEV when there is none.
pub fn index(sock: &mut Socket, name: &str) -> Result<u32, SysError> {
    let mut m = Message::new(
        RTM_GETLINK,
        0,
        &ifinfomsg(0, 0, 0),
        format!("RTM_GETLINK {name}"),
    );
    m.attr_str(IFLA_IFNAME, name);
    let replies = sock.query(&m)?;
    replies
        .iter()
        .find(|r| r.kind == RTM_NEWLINK)
        .and_then(|r| r.payload.get(4..8))
        .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(SysError {
            call: "netlink",
            subject: format!("RTM_GETLINK {name}: no reply"),
            errno: Errno::ENODEV,
        })
}

/// Whether link `name` exists.
pub fn exists(sock: &mut Socket, name: &str) -> Result<bool, SysError> {
    match index(sock, name) {
        Ok(_) => Ok(true),
        Err(e) if e.errno == Errno::ENODEV => Ok(false),
        Err(e) => Err(e),
    }
}

/// Sets IFF_UP on link `index` (`ip link set ... up`).
pub fn set_up(sock: &mut Socket, index: u32, name: &str) -> Result<(), SysError> {
    let up = libc::IFF_UP as u32;
    let m = Message::new(
        RTM_NEWLINK,
        0,
        &ifinfomsg(index, up, up),
        format!("RTM_NEWLINK {name} up"),
    );
    sock.request(&m)
}

/// Deletes link `name`; false when it was already gone (a veth goes with
/// its peer's namespace, so the end may have vanished on its own).
pub fn delete(sock: &mut Socket, name: &str) -> Result<bool, SysError> {
    let mut m = Message::new(
        RTM_DELLINK,
        0,
        &ifinfomsg(0, 0, 0),
        format!("RTM_DELLINK {name}"),
    );
    m.attr_str(IFLA_IFNAME, name);
    match sock.request(&m) {
        Ok(()) => Ok(true),
        Err(e) if e.errno == Errno::ENODEV => Ok(false),
        Err(e) => Err(e),
    }
}

/// Adds `addr/prefix` to link `index` (with the subnet's broadcast).
pub fn add_address(
    sock: &mut Socket,
    index: u32,
    name: &str,
    addr: Ipv4Addr,
    prefix: u8,
) -> Result<(), SysError> {
    // struct ifaddrmsg: family, prefixlen, flags, scope, index.
    let mut fixed = [0u8; 8];
    fixed[0] = libc::AF_INET as u8;
    fixed[1] = prefix;
    fixed[4..8].copy_from_slice(&index.to_ne_bytes());
    let mut m = Message::new(
        RTM_NEWADDR,
        NLM_F_CREATE | NLM_F_EXCL,
        &fixed,
        format!("RTM_NEWADDR {addr}/{prefix} on {name}"),
    );
    let mask = super::prefix_mask(prefix);
    let broadcast = Ipv4Addr::from(u32::from(addr) | !mask);
    m.attr(IFA_LOCAL, &addr.octets())
        .attr(IFA_ADDRESS, &addr.octets())
        .attr(IFA_BROADCAST, &broadcast.octets());
    sock.request(&m)
}

/// Adds the default route via `gateway` out of link `index`.
pub fn add_default_route(sock: &mut Socket, index: u32, gateway: Ipv4Addr) -> Result<(), SysError> {
    // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
    let fixed = [
        libc::AF_INET as u8,
        0,
        0,
        0,
        libc::RT_TABLE_MAIN,
        libc::RTPROT_BOOT,
        libc::RT_SCOPE_UNIVERSE,
        libc::RTN_UNICAST,
        0,
        0,
        0,
        0,
    ];
    let mut m = Message::new(
        RTM_NEWROUTE,
        NLM_F_CREATE | NLM_F_EXCL,
        &fixed,
        format!("RTM_NEWROUTE default via {gateway}"),
    );
    m.attr(RTA_GATEWAY, &gateway.octets())
        .attr_u32(RTA_OIF, index);
    sock.request(&m)
}

/// The names of the links in the socket's namespace (`ip link` names).
pub fn names(sock: &mut Socket) -> Result<Vec<String>, SysError> {
    let m = Message::new(
        RTM_GETLINK,
        super::netlink::NLM_F_DUMP,
        &ifinfomsg(0, 0, 0),
        "RTM_GETLINK dump",
    );
    let replies = sock.query(&m)?;
    Ok(replies
        .iter()
        .filter(|r| r.kind == RTM_NEWLINK)
        .filter_map(|r| {
            netlink::attributes(&r.payload, 16)
                .into_iter()
                .find(|(k, _)| *k == IFLA_IFNAME)
                .map(|(_, v)| super::netlink::c_string(v))
        })
        .collect())
}
