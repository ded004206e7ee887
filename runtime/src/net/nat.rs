//! MASQUERADE through nf_tables, as one transaction over nfnetlink. The
//! table is the bridge's own (family ip, named after the bridge), so the
//! runtime never edits anybody else's ruleset and removing the table removes
//! exactly what it added. In `nft` terms:
//!
//! ```text
//! table ip kcell0 {
//!     chain postrouting {
//!         type nat hook postrouting priority srcnat; policy accept;
//!         ip saddr 10.89.0.0/24 oifname != "kcell0" masquerade
//!     }
//! }
//! ```
//!
//! Kernel needs: CONFIG_NF_TABLES, CONFIG_NFT_NAT (nft_chain_nat),
//! CONFIG_NFT_MASQ and connection tracking (nf_conntrack, nf_nat).

use super::netlink::{Message, Socket, NLM_F_APPEND, NLM_F_CREATE};
use super::Ipv4Net;
use crate::sys::SysError;
use nix::errno::Errno;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
const NFPROTO_IPV4: u8 = 2;

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;

const NF_INET_POST_ROUTING: u32 = 4;
/// NF_IP_PRI_NAT_SRC: where `nft` puts "priority srcnat".
const PRIORITY_SRCNAT: u32 = 100;
const NF_ACCEPT: u32 = 1;
/// NFT_REG_1: a 16-byte register.
const REG: u32 = 1;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
/// Offset of the source address in the IPv4 header.
const IPV4_SADDR_OFFSET: u32 = 12;
const NFT_CMP_EQ: u32 = 0;
const NFT_CMP_NEQ: u32 = 1;
const NFT_META_OIFNAME: u32 = 7;

/// The chain the rule lives in.
pub const CHAIN: &str = "postrouting";

fn msg(kind: u16, flags: u16, what: String) -> Message {
    // struct nfgenmsg: family, version (NFNETLINK_V0), res_id.
    Message::new(
        (NFNL_SUBSYS_NFTABLES << 8) | kind,
        flags,
        &[NFPROTO_IPV4, 0, 0, 0],
        what,
    )
}

/// Opens one expression of a rule's list.
fn expr(m: &mut Message, name: &str) {
    m.nest(NFTA_LIST_ELEM).attr_str(NFTA_EXPR_NAME, name);
}

/// Installs table `table` with the masquerade rule for `subnet` leaving
/// through any interface but `bridge`, all or nothing.
pub fn install(
    sock: &mut Socket,
    table: &str,
    subnet: Ipv4Net,
    bridge: &str,
) -> Result<(), SysError> {
    let mut t = msg(
        NFT_MSG_NEWTABLE,
        NLM_F_CREATE,
        format!("nf_tables NEWTABLE ip {table}"),
    );
    t.attr_str(NFTA_TABLE_NAME, table);

    let mut c = msg(
        NFT_MSG_NEWCHAIN,
        NLM_F_CREATE,
        format!("nf_tables NEWCHAIN ip {table} {CHAIN} (type nat: needs nft_chain_nat)"),
    );
    c.attr_str(NFTA_CHAIN_TABLE, table)
        .attr_str(NFTA_CHAIN_NAME, CHAIN)
        .nest(NFTA_CHAIN_HOOK)
        .attr_be32(NFTA_HOOK_HOOKNUM, NF_INET_POST_ROUTING)
        .attr_be32(NFTA_HOOK_PRIORITY, PRIORITY_SRCNAT)
        .end()
        .attr_be32(NFTA_CHAIN_POLICY, NF_ACCEPT)
        .attr_str(NFTA_CHAIN_TYPE, "nat");

    let mut r = msg(
        NFT_MSG_NEWRULE,
        NLM_F_CREATE | NLM_F_APPEND,
        format!(
            "nf_tables NEWRULE ip {table} {CHAIN} 'ip saddr {subnet} oifname != {bridge} masquerade' (needs nft_masq)"
        ),
    );
    r.attr_str(NFTA_RULE_TABLE, table)
        .attr_str(NFTA_RULE_CHAIN, CHAIN)
        .nest(NFTA_RULE_EXPRESSIONS);
    // ip saddr & mask == network
    expr(&mut r, "payload");
    r.nest(NFTA_EXPR_DATA)
        .attr_be32(1, REG) // NFTA_PAYLOAD_DREG
        .attr_be32(2, NFT_PAYLOAD_NETWORK_HEADER) // NFTA_PAYLOAD_BASE
        .attr_be32(3, IPV4_SADDR_OFFSET) // NFTA_PAYLOAD_OFFSET
        .attr_be32(4, 4) // NFTA_PAYLOAD_LEN
        .end()
        .end();
    expr(&mut r, "bitwise");
    r.nest(NFTA_EXPR_DATA)
        .attr_be32(1, REG) // NFTA_BITWISE_SREG
        .attr_be32(2, REG) // NFTA_BITWISE_DREG
        .attr_be32(3, 4) // NFTA_BITWISE_LEN
        .nest(4) // NFTA_BITWISE_MASK
        .attr(NFTA_DATA_VALUE, &subnet.mask().octets())
        .end()
        .nest(5) // NFTA_BITWISE_XOR
        .attr(NFTA_DATA_VALUE, &[0; 4])
        .end()
        .end()
        .end();
    cmp(&mut r, NFT_CMP_EQ, &subnet.network().octets());
    // oifname != bridge
    expr(&mut r, "meta");
    r.nest(NFTA_EXPR_DATA)
        .attr_be32(2, NFT_META_OIFNAME) // NFTA_META_KEY
        .attr_be32(1, REG) // NFTA_META_DREG
        .end()
        .end();
    let mut ifname = [0u8; libc::IFNAMSIZ];
    for (d, s) in ifname.iter_mut().zip(bridge.bytes()) {
        *d = s;
    }
    cmp(&mut r, NFT_CMP_NEQ, &ifname);
    expr(&mut r, "masq");
    r.end();
    r.end(); // NFTA_RULE_EXPRESSIONS

    sock.batch(NFNL_SUBSYS_NFTABLES, &[t, c, r])
}

fn cmp(m: &mut Message, op: u32, value: &[u8]) {
    expr(m, "cmp");
    m.nest(NFTA_EXPR_DATA)
        .attr_be32(1, REG) // NFTA_CMP_SREG
        .attr_be32(2, op) // NFTA_CMP_OP
        .nest(3) // NFTA_CMP_DATA
        .attr(NFTA_DATA_VALUE, value)
        .end()
        .end()
        .end();
}

/// Whether table `table` exists.
pub fn exists(sock: &mut Socket, table: &str) -> Result<bool, SysError> {
    let mut m = msg(
        NFT_MSG_GETTABLE,
        0,
        format!("nf_tables GETTABLE ip {table}"),
    );
    m.attr_str(NFTA_TABLE_NAME, table);
    match sock.query(&m) {
        Ok(_) => Ok(true),
        Err(e) if e.errno == Errno::ENOENT => Ok(false),
        Err(e) => Err(e),
    }
}

/// The names of the nf_tables tables of family ip (`nft list tables ip`).
pub fn tables(sock: &mut Socket) -> Result<Vec<String>, SysError> {
    let m = msg(
        NFT_MSG_GETTABLE,
        super::netlink::NLM_F_DUMP,
        "nf_tables GETTABLE dump".into(),
    );
    let replies = sock.query(&m)?;
    Ok(replies
        .iter()
        .filter(|r| r.kind == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWTABLE)
        .filter_map(|r| {
            super::netlink::attributes(&r.payload, 4)
                .into_iter()
                .find(|(k, _)| *k == NFTA_TABLE_NAME)
                .map(|(_, v)| super::netlink::c_string(v))
        })
        .collect())
}

/// Deletes table `table` with its chain and rule; false when it was gone.
pub fn remove(sock: &mut Socket, table: &str) -> Result<bool, SysError> {
    let mut m = msg(
        NFT_MSG_DELTABLE,
        0,
        format!("nf_tables DELTABLE ip {table}"),
    );
    m.attr_str(NFTA_TABLE_NAME, table);
    match sock.batch(NFNL_SUBSYS_NFTABLES, &[m]) {
        Ok(()) => Ok(true),
        Err(e) if e.errno == Errno::ENOENT => Ok(false),
        Err(e) => Err(e),
    }
}
