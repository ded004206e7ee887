//! The nf_tables tables of the calling thread's network namespace, listed
//! with the harness's own netlink dump (NFT_MSG_GETTABLE over
//! NETLINK_NETFILTER, every family): what the census and the bridge
//! fixture judge a runtime's NAT clean-up by. The runtime under judgement
//! programs nf_tables too; its code is never used here, so a fault in its
//! listing cannot hide a table it leaked.
//!
//! Written by hand rather than with a netlink crate: a dump of one message
//! type and one attribute is 80 lines, the crates of the field (neli,
//! rustables, nftnl with libnftnl) bring an API or a C library for the
//! whole of netfilter.

use nix::sys::socket::{
    recv, sendto, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};
use std::os::fd::AsRawFd;

/// nfnetlink's subsystem of nf_tables, and its table messages.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_GETTABLE: u16 = 1;
const NFTA_TABLE_NAME: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
/// nlmsghdr, then nfgenmsg (family, version, resource id).
const HEADER: usize = 16;
const NFGENMSG: usize = 4;

/// One table: its family as nft names it, and its name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Table {
    /// ip, ip6, inet, arp, bridge or netdev.
    pub family: &'static str,
    /// The table's name.
    pub name: String,
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.family, self.name)
    }
}

fn family(code: u8) -> &'static str {
    match i32::from(code) {
        libc::NFPROTO_INET => "inet",
        libc::NFPROTO_IPV4 => "ip",
        libc::NFPROTO_ARP => "arp",
        libc::NFPROTO_NETDEV => "netdev",
        libc::NFPROTO_BRIDGE => "bridge",
        libc::NFPROTO_IPV6 => "ip6",
        _ => "unknown",
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Every table, sorted.
pub fn tables() -> Result<Vec<Table>, String> {
    let sock = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkNetFilter,
    )
    .map_err(|e| format!("socket(AF_NETLINK, NETLINK_NETFILTER): {e}"))?;
    let kind = NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETTABLE;
    let mut req = Vec::with_capacity(HEADER + NFGENMSG);
    req.extend_from_slice(&((HEADER + NFGENMSG) as u32).to_ne_bytes());
    req.extend_from_slice(&kind.to_ne_bytes());
    req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    req.extend_from_slice(&0u32.to_ne_bytes()); // port: the kernel's
    req.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]);
    sendto(
        sock.as_raw_fd(),
        &req,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )
    .map_err(|e| format!("send NFT_MSG_GETTABLE: {e}"))?;
    let mut found = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty())
            .map_err(|e| format!("recv nf_tables dump: {e}"))?;
        let mut at = 0;
        while at + HEADER <= n {
            let len = u32_at(&buf, at) as usize;
            if len < HEADER || at + len > n {
                return Err(format!(
                    "nf_tables dump: a message of {len} bytes at {at} of {n}"
                ));
            }
            match u16_at(&buf, at + 4) {
                NLMSG_DONE => {
                    found.sort();
                    return Ok(found);
                }
                NLMSG_ERROR => {
                    let errno = i32::from_ne_bytes([
                        buf[at + 16],
                        buf[at + 17],
                        buf[at + 18],
                        buf[at + 19],
                    ]);
                    return Err(format!(
                        "nf_tables dump: {}",
                        nix::errno::Errno::from_raw(-errno)
                    ));
                }
                k if k == NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWTABLE => {
                    let msg = &buf[at..at + len];
                    found.push(Table {
                        family: family(msg[HEADER]),
                        name: table_name(&msg[HEADER + NFGENMSG..])?,
                    });
                }
                _ => {}
            }
            at += (len + 3) & !3;
        }
    }
}

/// NFTA_TABLE_NAME among a table message's attributes.
fn table_name(mut attrs: &[u8]) -> Result<String, String> {
    while attrs.len() >= 4 {
        let len = usize::from(u16_at(attrs, 0));
        if len < 4 || len > attrs.len() {
            break;
        }
        // The top bits of the type are flags (nested, byte order).
        if u16_at(attrs, 2) & 0x3fff == NFTA_TABLE_NAME {
            let value = &attrs[4..len];
            let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
            return Ok(String::from_utf8_lossy(&value[..end]).into_owned());
        }
        attrs = &attrs[((len + 3) & !3).min(attrs.len())..];
    }
    Err("nf_tables dump: a table without NFTA_TABLE_NAME".into())
}

/// The code of a family as nft names it.
fn family_code(name: &str) -> Option<u8> {
    [
        libc::NFPROTO_INET,
        libc::NFPROTO_IPV4,
        libc::NFPROTO_ARP,
        libc::NFPROTO_NETDEV,
        libc::NFPROTO_BRIDGE,
        libc::NFPROTO_IPV6,
    ]
    .into_iter()
    .map(|c| c as u8)
    .find(|c| family(*c) == name)
}

/// Deletes `table` (a fixture's clean-up after a failed case): one
/// NFT_MSG_DELTABLE in a batch, as nf_tables takes its changes.
pub fn delete(table: &Table) -> Result<(), String> {
    use crate::netlink::{Message, NLM_F_ACK, NLM_F_REQUEST};
    const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
    const NFNL_MSG_BATCH_END: u16 = 0x11;
    const NFT_MSG_DELTABLE: u16 = 2;
    let what = format!("NFT_MSG_DELTABLE {table}");
    let family = family_code(table.family).ok_or_else(|| format!("{what}: unknown family"))?;
    // nfgenmsg: family, version, resource id (the subsystem, for a batch).
    let batch = [
        libc::AF_UNSPEC as u8,
        0,
        NFNL_SUBSYS_NFTABLES.to_be_bytes()[0],
        NFNL_SUBSYS_NFTABLES.to_be_bytes()[1],
    ];
    let mut bytes = Message::new(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 1, &batch).bytes();
    let mut del = Message::new(
        NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_DELTABLE,
        NLM_F_REQUEST | NLM_F_ACK,
        2,
        &[family, 0, 0, 0],
    );
    del.attr_str(NFTA_TABLE_NAME, &table.name);
    bytes.extend(del.bytes());
    bytes.extend(Message::new(NFNL_MSG_BATCH_END, NLM_F_REQUEST, 3, &batch).bytes());
    let sock = crate::netlink::open(SockProtocol::NetlinkNetFilter, "NETLINK_NETFILTER")?;
    crate::netlink::request(&sock, &bytes, &[2], &what)
}

/// Whether a table named `name` exists in any family.
pub fn exists(name: &str) -> Result<bool, String> {
    Ok(tables()?.iter().any(|t| t.name == name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nft(args: &str) -> bool {
        std::process::Command::new("nft")
            .args(args.split(' '))
            .status()
            .is_ok_and(|s| s.success())
    }

    /// A table made by nft, the kernel's own userspace, is listed, and is
    /// gone from the listing once nft deleted it.
    #[test]
    #[cfg_attr(kcell_unprivileged, ignore = "needs root: nf_tables")]
    fn a_table_nft_made_is_listed_until_it_is_deleted() {
        assert!(nix::unistd::geteuid().is_root(), "nf_tables needs root");
        let name = format!("kcellt{}", std::process::id());
        assert!(nft(&format!("add table inet {name}")), "nft add table");
        let listed = tables();
        let table = Table {
            family: "inet",
            name: name.clone(),
        };
        let deleted = delete(&table);
        let listed = listed.expect("the dump");
        deleted.expect("the harness's own delete");
        assert!(
            listed.contains(&Table {
                family: "inet",
                name: name.clone()
            }),
            "{listed:?}"
        );
        assert!(!exists(&name).expect("the dump"));
    }
}
