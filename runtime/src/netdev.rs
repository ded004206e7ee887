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

/// `struct ifreq` with the int member of its union (MTU, index).
#[repr(C)]
struct IfReqInt {
    name: [libc::c_char; libc::IFNAMSIZ],
    value: libc::c_int,
    _pad: [u8; 20],
}

fn int_request(name: &str, value: libc::c_int) -> IfReqInt {
    let mut req = IfReqInt {
        name: [0; libc::IFNAMSIZ],
        value,
        _pad: [0; 20],
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

/// The MTU of `name`.
pub fn mtu(name: &str) -> Result<i32, SysError> {
    let sock = control_socket()?;
    let mut req = int_request(name, 0);
    // SAFETY: req is a valid, writable ifreq-sized buffer.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFMTU, &mut req) };
    Errno::result(rc).sys("ioctl SIOCGIFMTU", name)?;
    Ok(req.value)
}

/// Sets the MTU of `name`.
pub fn set_mtu(name: &str, mtu: i32) -> Result<(), SysError> {
    let sock = control_socket()?;
    let req = int_request(name, mtu);
    // SAFETY: the kernel only reads the request.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFMTU, &req) };
    Errno::result(rc)
        .sys("ioctl SIOCSIFMTU", format!("{name} to {mtu}"))
        .map(|_| ())
}
