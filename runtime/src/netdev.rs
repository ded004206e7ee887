//! Link flags through the SIOCGIFFLAGS / SIOCSIFFLAGS ioctls: enough to bring
//! a fresh network namespace's loopback up without netlink.

use crate::sys::{SysContext, SysError};
use nix::errno::Errno;
use std::os::fd::AsRawFd;

/// `struct ifreq` with the flags member of its union (40 bytes on Linux).
#[repr(C)]
struct IfReqFlags {
    name: [libc::c_char; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

fn request(name: &str) -> IfReqFlags {
    let mut req = IfReqFlags {
        name: [0; libc::IFNAMSIZ],
        flags: 0,
        _pad: [0; 22],
    };
    for (dst, src) in req
        .name
        .iter_mut()
        .zip(name.bytes().take(libc::IFNAMSIZ - 1))
    {
        *dst = src as libc::c_char;
    }
    req
}

fn control_socket() -> Result<std::os::fd::OwnedFd, SysError> {
    nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .sys("socket", "AF_INET for interface ioctls")
}

/// The interface flags (IFF_*) of `name` in the caller's network namespace.
pub fn flags(name: &str) -> Result<libc::c_short, SysError> {
    let sock = control_socket()?;
    let mut req = request(name);
    // SAFETY: req is a valid, writable ifreq-sized buffer for the kernel.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) };
    Errno::result(rc).sys("ioctl SIOCGIFFLAGS", name)?;
    Ok(req.flags)
}

/// Sets IFF_UP on `name`.
pub fn set_up(name: &str) -> Result<(), SysError> {
    let sock = control_socket()?;
    let mut req = request(name);
    // SAFETY: as in `flags`.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) };
    Errno::result(rc).sys("ioctl SIOCGIFFLAGS", name)?;
    req.flags |= libc::IFF_UP as libc::c_short;
    // SAFETY: as above; the kernel only reads the request.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) };
    Errno::result(rc)
        .sys("ioctl SIOCSIFFLAGS up", name)
        .map(|_| ())
}
