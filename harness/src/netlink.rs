//! Netlink requests of the harness's own, for the fixtures that plumb the
//! host's network (a veth pair to an "outside" namespace, its addresses)
//! and clean up after a failed case (a bridge link, an nf_tables table).
//! The runtime under judgement plumbs links and tables too; its code is
//! never used here, so a fault in it cannot be hidden by the same fault in
//! the judge.
//!
//! Written by hand rather than with the rust-netlink crates: the fixtures
//! send five kinds of request and read an acknowledgement; those crates'
//! sync use means building their whole message model for that, and their
//! API changed with every minor release of 2023-2025.

use nix::sys::socket::{
    recv, sendto, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};
use std::os::fd::{AsRawFd, OwnedFd};

/// nlmsghdr's flags.
pub const NLM_F_REQUEST: u16 = 0x1;
/// Ask for an acknowledgement.
pub const NLM_F_ACK: u16 = 0x4;
/// Fail if the object exists.
pub const NLM_F_EXCL: u16 = 0x200;
/// Create the object.
pub const NLM_F_CREATE: u16 = 0x400;
/// An error or an acknowledgement.
const NLMSG_ERROR: u16 = 2;
/// The length of nlmsghdr.
const HEADER: usize = 16;
/// A nested attribute's flag.
const NLA_F_NESTED: u16 = 0x8000;

fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// One netlink message being built: the header, a fixed part, attributes.
pub struct Message {
    buf: Vec<u8>,
}

impl Message {
    /// A message of `kind` with `flags` and the fixed-size `body` (ifinfomsg,
    /// ifaddrmsg, nfgenmsg) after the header.
    pub fn new(kind: u16, flags: u16, seq: u32, body: &[u8]) -> Message {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by bytes()
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port: the kernel's
        buf.extend_from_slice(body);
        buf.resize(align(buf.len()), 0);
        Message { buf }
    }

    /// An attribute of `kind` holding `value`.
    pub fn attr(&mut self, kind: u16, value: &[u8]) -> &mut Self {
        let len = 4 + value.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(value);
        self.buf.resize(align(self.buf.len()), 0);
        self
    }

    /// A string attribute, NUL-terminated as the kernel wants names.
    pub fn attr_str(&mut self, kind: u16, value: &str) -> &mut Self {
        let mut v = value.as_bytes().to_vec();
        v.push(0);
        self.attr(kind, &v)
    }

    /// Opens a nested attribute; close it with [`Message::end`].
    pub fn begin(&mut self, kind: u16) -> usize {
        let at = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        at
    }

    /// Raw bytes inside the current nest (a peer's ifinfomsg).
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(bytes);
        self.buf.resize(align(self.buf.len()), 0);
        self
    }

    /// Closes the nested attribute opened at `at`.
    pub fn end(&mut self, at: usize) {
        let len = (self.buf.len() - at) as u16;
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }

    /// The finished message.
    pub fn bytes(mut self) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

/// A netlink socket of `protocol` in the calling thread's network namespace.
pub fn open(protocol: SockProtocol, what: &str) -> Result<OwnedFd, String> {
    socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        protocol,
    )
    .map_err(|e| format!("socket(AF_NETLINK, {what}): {e}"))
}

/// Sends `request` (one message or a batch) and reads the kernel's answers
/// until every message of sequence number in `acks` is acknowledged; the
/// first error answer is the error, naming `what`.
pub fn request(sock: &OwnedFd, request: &[u8], acks: &[u32], what: &str) -> Result<(), String> {
    sendto(
        sock.as_raw_fd(),
        request,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )
    .map_err(|e| format!("{what}: sendto: {e}"))?;
    let mut pending: Vec<u32> = acks.to_vec();
    let mut buf = vec![0u8; 1 << 16];
    while !pending.is_empty() {
        let n = recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty())
            .map_err(|e| format!("{what}: recv: {e}"))?;
        let mut at = 0;
        while at + HEADER <= n {
            let len = u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
            if len < HEADER || at + len > n {
                return Err(format!("{what}: an answer of {len} bytes at {at} of {n}"));
            }
            let kind = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
            let seq = u32::from_ne_bytes([buf[at + 8], buf[at + 9], buf[at + 10], buf[at + 11]]);
            if kind == NLMSG_ERROR && len >= HEADER + 4 {
                let errno =
                    i32::from_ne_bytes([buf[at + 16], buf[at + 17], buf[at + 18], buf[at + 19]]);
                if errno != 0 {
                    return Err(format!("{what}: {}", nix::errno::Errno::from_raw(-errno)));
                }
                pending.retain(|s| *s != seq);
            }
            at += align(len);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_carries_its_length_and_padded_attributes() {
        let mut m = Message::new(16, NLM_F_REQUEST, 7, &[0u8; 16]);
        m.attr_str(3, "abc");
        let nest = m.begin(18);
        m.attr_str(1, "veth");
        m.end(nest);
        let b = m.bytes();
        assert_eq!(
            u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize,
            b.len()
        );
        // Header, ifinfomsg, "abc\0" in 8, then the nest of 4 + "veth\0" in 12.
        assert_eq!(b.len(), 16 + 16 + 8 + 4 + 12);
        assert_eq!(u16::from_ne_bytes([b[40], b[41]]), 16);
        assert_eq!(u16::from_ne_bytes([b[42], b[43]]), 18 | NLA_F_NESTED);
    }
}
