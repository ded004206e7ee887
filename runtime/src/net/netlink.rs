//! A small synchronous netlink client: one message builder (header, fixed
//! family header, attributes with nesting) and a send-and-acknowledge loop.
//! It serves both rtnetlink (links, addresses, routes) and nfnetlink
//! (nf_tables batches for NAT), so the runtime needs neither `ip`, `nft`, an
//! async executor nor a C library: the same static binary works in a
//! busybox guest.
//!
//! Wire format (netlink(7)): every message is a 16-byte `nlmsghdr`, a
//! family header, then attributes `{u16 len, u16 type, payload}` each padded
//! to 4 bytes. Nested attributes carry NLA_F_NESTED in their type, as
//! libmnl and iproute2 send them.

use crate::sys::SysError;
use nix::errno::Errno;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// nlmsghdr flags (netlink(7)).
pub const NLM_F_REQUEST: u16 = 0x1;
/// Ask for an acknowledgement (an NLMSG_ERROR with error 0).
pub const NLM_F_ACK: u16 = 0x4;
/// Replace an existing object.
pub const NLM_F_REPLACE: u16 = 0x100;
/// Fail if the object exists.
pub const NLM_F_EXCL: u16 = 0x200;
/// Create the object if it does not exist.
pub const NLM_F_CREATE: u16 = 0x400;
/// Append (rules).
pub const NLM_F_APPEND: u16 = 0x800;
/// Every object of the kind (NLM_F_ROOT | NLM_F_MATCH), ending in NLMSG_DONE.
pub const NLM_F_DUMP: u16 = 0x300;

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLA_F_NESTED: u16 = 0x8000;
const HEADER_LEN: usize = 16;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// One netlink message being built.
#[derive(Debug, Clone)]
pub struct Message {
    buf: Vec<u8>,
    /// Offsets of the open nested attributes (their length is set on close).
    open: Vec<usize>,
    /// What the message does, for error messages ("RTM_NEWLINK veth kcell1").
    pub what: String,
}

impl Message {
    /// A message of type `kind` with `flags` (NLM_F_REQUEST is always added),
    /// followed by the family header `fixed` (ifinfomsg, nfgenmsg, ...).
    pub fn new(kind: u16, flags: u16, fixed: &[u8], what: impl Into<String>) -> Self {
        let mut buf = vec![0u8; HEADER_LEN];
        buf[4..6].copy_from_slice(&kind.to_ne_bytes());
        buf[6..8].copy_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        buf.extend_from_slice(fixed);
        buf.resize(align4(buf.len()), 0);
        Message {
            buf,
            open: Vec::new(),
            what: what.into(),
        }
    }

    /// The message type.
    pub fn kind(&self) -> u16 {
        u16::from_ne_bytes([self.buf[4], self.buf[5]])
    }

    /// Adds an attribute with a raw payload.
    pub fn attr(&mut self, kind: u16, payload: &[u8]) -> &mut Self {
        let len = 4 + payload.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.buf.resize(align4(self.buf.len()), 0);
        self
    }

    /// A NUL-terminated string attribute.
    pub fn attr_str(&mut self, kind: u16, value: &str) -> &mut Self {
        let mut bytes = value.as_bytes().to_vec();
        bytes.push(0);
        self.attr(kind, &bytes)
    }

    /// A u32 in host byte order (rtnetlink).
    pub fn attr_u32(&mut self, kind: u16, value: u32) -> &mut Self {
        self.attr(kind, &value.to_ne_bytes())
    }

    /// A u32 in network byte order (nf_tables).
    pub fn attr_be32(&mut self, kind: u16, value: u32) -> &mut Self {
        self.attr(kind, &value.to_be_bytes())
    }

    /// Opens a nested attribute; close it with [`Message::end`].
    pub fn nest(&mut self, kind: u16) -> &mut Self {
        self.open.push(self.buf.len());
        self.buf.extend_from_slice(&[0, 0]);
        self.buf
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        self
    }

    /// Appends raw bytes inside the current nest (a family header inside a
    /// nested message, such as the veth peer's ifinfomsg).
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(bytes);
        self.buf.resize(align4(self.buf.len()), 0);
        self
    }

    /// Closes the innermost open nest.
    pub fn end(&mut self) -> &mut Self {
        if let Some(start) = self.open.pop() {
            let len = (self.buf.len() - start) as u16;
            self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        }
        self
    }

    /// The finished bytes with the sequence number `seq`.
    fn encode(&self, seq: u32) -> Vec<u8> {
        let mut buf = self.buf.clone();
        let len = buf.len() as u32;
        buf[0..4].copy_from_slice(&len.to_ne_bytes());
        buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        buf
    }
}

/// A netlink socket of one protocol, bound to the network namespace of the
/// thread that opened it.
#[derive(Debug)]
pub struct Socket {
    fd: OwnedFd,
    seq: u32,
}

/// One parsed message of a reply.
#[derive(Debug, Clone)]
pub struct Reply {
    /// nlmsghdr type.
    pub kind: u16,
    /// Sequence number it answers.
    pub seq: u32,
    /// The payload after the header.
    pub payload: Vec<u8>,
}

impl Socket {
    /// A NETLINK_ROUTE socket (links, addresses, routes).
    pub fn route() -> Result<Self, SysError> {
        Self::open(libc::NETLINK_ROUTE, "NETLINK_ROUTE")
    }

    /// A NETLINK_NETFILTER socket (nf_tables).
    pub fn netfilter() -> Result<Self, SysError> {
        Self::open(libc::NETLINK_NETFILTER, "NETLINK_NETFILTER")
    }

    fn open(protocol: libc::c_int, name: &str) -> Result<Self, SysError> {
        // SAFETY: socket(2) with constant arguments; the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                protocol,
            )
        };
        if fd < 0 {
            return Err(SysError {
                call: "socket",
                subject: format!("AF_NETLINK {name}"),
                errno: Errno::last(),
            });
        }
        // SAFETY: fd is a fresh descriptor this function owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // Replies must be read whole: a large receive buffer.
        let size: libc::c_int = 1 << 20;
        // SAFETY: setsockopt reads `size` for its length; failure only means a smaller buffer.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        Ok(Socket { fd, seq: 1 })
    }

    fn send(&self, bytes: &[u8], what: &str) -> Result<(), SysError> {
        // SAFETY: a zeroed sockaddr_nl addresses the kernel (pid 0).
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: bytes and addr are valid for the lengths passed.
        let rc = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                0,
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        Errno::result(rc).map(|_| ()).map_err(|errno| SysError {
            call: "netlink send",
            subject: what.to_string(),
            errno,
        })
    }

    fn receive(&self, what: &str) -> Result<Vec<Reply>, SysError> {
        let mut buf = vec![0u8; 1 << 16];
        let n = loop {
            // SAFETY: buf is writable for its length.
            let rc =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            match Errno::result(rc) {
                Ok(n) => break n as usize,
                Err(Errno::EINTR) => continue,
                Err(errno) => {
                    return Err(SysError {
                        call: "netlink recv",
                        subject: what.to_string(),
                        errno,
                    })
                }
            }
        };
        Ok(parse(&buf[..n]))
    }

    /// Sends `msg` with NLM_F_ACK and waits for the kernel's answer.
    pub fn request(&mut self, msg: &Message) -> Result<(), SysError> {
        self.exchange(std::slice::from_ref(msg), None).map(|_| ())
    }

    /// Sends `msg` and returns the replies up to its acknowledgement (or
    /// NLMSG_DONE for a dump).
    pub fn query(&mut self, msg: &Message) -> Result<Vec<Reply>, SysError> {
        self.exchange(std::slice::from_ref(msg), None)
    }

    /// Sends `msgs` as one nfnetlink transaction (NFNL_MSG_BATCH_BEGIN ...
    /// END for subsystem `subsys`): all apply or none does.
    pub fn batch(&mut self, subsys: u16, msgs: &[Message]) -> Result<(), SysError> {
        self.exchange(msgs, Some(subsys)).map(|_| ())
    }

    fn exchange(&mut self, msgs: &[Message], batch: Option<u16>) -> Result<Vec<Reply>, SysError> {
        const BATCH_BEGIN: u16 = 0x10;
        const BATCH_END: u16 = 0x11;
        let mut bytes = Vec::new();
        let mut pending = Vec::new();
        let next = |s: &mut Self| {
            s.seq = s.seq.wrapping_add(1);
            s.seq
        };
        let batch_header = |subsys: u16| {
            // nfgenmsg: family AF_UNSPEC, version 0, res_id = subsystem (big endian).
            let mut h = vec![0u8, 0];
            h.extend_from_slice(&subsys.to_be_bytes());
            h
        };
        if let Some(subsys) = batch {
            let seq = next(self);
            bytes.extend(Message::new(BATCH_BEGIN, 0, &batch_header(subsys), "batch").encode(seq));
        }
        for msg in msgs {
            let seq = next(self);
            let mut m = msg.clone();
            let flags = u16::from_ne_bytes([m.buf[6], m.buf[7]]) | NLM_F_ACK;
            m.buf[6..8].copy_from_slice(&flags.to_ne_bytes());
            bytes.extend(m.encode(seq));
            pending.push((seq, msg.what.clone()));
        }
        if let Some(subsys) = batch {
            let seq = next(self);
            bytes.extend(Message::new(BATCH_END, 0, &batch_header(subsys), "batch").encode(seq));
        }
        let what = msgs.first().map_or("", |m| m.what.as_str()).to_string();
        self.send(&bytes, &what)?;
        let mut replies = Vec::new();
        while !pending.is_empty() {
            for reply in self.receive(&what)? {
                let Some(pos) = pending.iter().position(|(s, _)| *s == reply.seq) else {
                    continue;
                };
                match reply.kind {
                    NLMSG_ERROR => {
                        let code = reply
                            .payload
                            .get(0..4)
                            .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                        let (_, what) = pending.remove(pos);
                        if code != 0 {
                            return Err(SysError {
                                call: "netlink",
                                subject: what,
                                errno: Errno::from_raw(-code),
                            });
                        }
                    }
                    NLMSG_DONE => {
                        pending.remove(pos);
                    }
                    _ => replies.push(reply),
                }
            }
        }
        Ok(replies)
    }
}

/// Splits a receive buffer into messages.
fn parse(mut buf: &[u8]) -> Vec<Reply> {
    let mut out = Vec::new();
    while buf.len() >= HEADER_LEN {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < HEADER_LEN || len > buf.len() {
            break;
        }
        out.push(Reply {
            kind: u16::from_ne_bytes([buf[4], buf[5]]),
            seq: u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]),
            payload: buf[HEADER_LEN..len].to_vec(),
        });
        buf = &buf[align4(len).min(buf.len())..];
    }
    out
}

/// A string attribute's payload without its NUL terminator.
pub fn c_string(payload: &[u8]) -> String {
    let text = payload.split(|b| *b == 0).next().unwrap_or(&[]);
    String::from_utf8_lossy(text).to_string()
}

/// The attributes of a payload after a family header of `skip` bytes, as
/// (type without flags, payload).
pub fn attributes(payload: &[u8], skip: usize) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut rest = payload.get(align4(skip)..).unwrap_or(&[]);
    while rest.len() >= 4 {
        let len = u16::from_ne_bytes([rest[0], rest[1]]) as usize;
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        if len < 4 || len > rest.len() {
            break;
        }
        out.push((kind, &rest[4..len]));
        rest = &rest[align4(len).min(rest.len())..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_and_nests_sized() {
        let mut m = Message::new(16, NLM_F_CREATE, &[0u8; 16], "test");
        m.attr_str(3, "br0");
        m.nest(18).attr_str(1, "bridge").end();
        let bytes = m.encode(7);
        assert_eq!(bytes.len() % 4, 0);
        assert_eq!(
            u32::from_ne_bytes(bytes[0..4].try_into().unwrap()) as usize,
            bytes.len()
        );
        assert_eq!(u32::from_ne_bytes(bytes[8..12].try_into().unwrap()), 7);
        let attrs = attributes(&bytes[16..], 16);
        assert_eq!(attrs.len(), 2);
        assert_eq!(attrs[0], (3, &b"br0\0"[..]));
        // The nest: 4 bytes header + "bridge\0" attribute (4 + 7, padded to 12).
        assert_eq!(attrs[1].0, 18);
        assert_eq!(attributes(attrs[1].1, 0), vec![(1, &b"bridge\0"[..])]);
        // The nest's own type carries NLA_F_NESTED on the wire.
        let nest_type = u16::from_ne_bytes([bytes[16 + 16 + 8 + 2], bytes[16 + 16 + 8 + 3]]);
        assert_eq!(nest_type, 18 | NLA_F_NESTED);
    }

    #[test]
    fn byte_orders() {
        let mut m = Message::new(0, 0, &[], "t");
        m.attr_be32(1, 0x0102_0304).attr_u32(2, 0x0102_0304);
        let attrs: Vec<_> = attributes(&m.encode(1)[16..], 0)
            .into_iter()
            .map(|(k, v)| (k, v.to_vec()))
            .collect();
        assert_eq!(attrs[0], (1, vec![1, 2, 3, 4]));
        assert_eq!(attrs[1], (2, 0x0102_0304u32.to_ne_bytes().to_vec()));
    }

    #[test]
    fn a_truncated_reply_is_cut_not_overread() {
        let mut bytes = Message::new(2, 0, &[0u8; 4], "t").encode(3);
        bytes.truncate(18);
        assert!(parse(&bytes).is_empty());
    }
}
