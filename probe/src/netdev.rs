//! A link's flags and MTU, read and set with the harness's own ioctls on a
//! datagram socket of the calling thread's network namespace
//! (SIOCGIFFLAGS, SIOCSIFFLAGS, SIOCGIFMTU, SIOCSIFMTU): the kernel's
//! answer for that namespace, whatever sysfs a runtime mounted. The
//! runtime under judgement sets these too; its code is never used here.

use std::os::fd::{AsRawFd, OwnedFd};

fn socket() -> Result<OwnedFd, String> {
    nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| format!("socket(AF_INET, SOCK_DGRAM): {e}"))
}

/// An ifreq naming `link`; an error when the name does not fit.
fn request(link: &str) -> Result<libc::ifreq, String> {
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if link.is_empty() || link.len() >= req.ifr_name.len() || link.contains('\0') {
        return Err(format!(
            "link name '{link}' is not allowed: 1 to {} bytes, no NUL",
            req.ifr_name.len() - 1
        ));
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(link.bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

fn ioctl(call: &str, op: libc::c_ulong, link: &str, req: &mut libc::ifreq) -> Result<(), String> {
    let sock = socket()?;
    // SAFETY: `req` is a valid ifreq for the lifetime of the call, and
    // these four requests read or write only its name and one union field.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), op as _, req as *mut libc::ifreq) };
    if rc < 0 {
        return Err(format!(
            "ioctl {call} on {link}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// The link's flags (IFF_UP, IFF_LOOPBACK, ...).
pub fn flags(link: &str) -> Result<libc::c_short, String> {
    let mut req = request(link)?;
    ioctl("SIOCGIFFLAGS", libc::SIOCGIFFLAGS, link, &mut req)?;
    // SAFETY: SIOCGIFFLAGS filled the flags field of the union.
    Ok(unsafe { req.ifr_ifru.ifru_flags })
}

/// Whether the link is administratively up.
pub fn is_up(link: &str) -> Result<bool, String> {
    Ok(flags(link)? & libc::IFF_UP as libc::c_short != 0)
}

/// Sets the link up, keeping its other flags.
pub fn set_up(link: &str) -> Result<(), String> {
    let now = flags(link)?;
    let mut req = request(link)?;
    req.ifr_ifru.ifru_flags = now | libc::IFF_UP as libc::c_short;
    ioctl("SIOCSIFFLAGS", libc::SIOCSIFFLAGS, link, &mut req)
}

/// The link's MTU.
pub fn mtu(link: &str) -> Result<i32, String> {
    let mut req = request(link)?;
    ioctl("SIOCGIFMTU", libc::SIOCGIFMTU, link, &mut req)?;
    // SAFETY: SIOCGIFMTU filled the MTU field of the union.
    Ok(unsafe { req.ifr_ifru.ifru_mtu })
}

/// Sets the link's MTU.
pub fn set_mtu(link: &str, mtu: i32) -> Result<(), String> {
    let mut req = request(link)?;
    req.ifr_ifru.ifru_mtu = mtu;
    ioctl("SIOCSIFMTU", libc::SIOCSIFMTU, link, &mut req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_that_does_not_fit_is_refused_naming_it() {
        let e = flags("a-name-longer-than-sixteen").unwrap_err();
        assert!(
            e.contains("'a-name-longer-than-sixteen'") && e.contains("1 to 15"),
            "{e}"
        );
    }

    #[test]
    fn a_link_that_does_not_exist_is_an_error_naming_it() {
        let e = mtu("kcellnosuch0").unwrap_err();
        assert!(e.contains("SIOCGIFMTU on kcellnosuch0"), "{e}");
    }

    #[test]
    fn lo_reads_as_loopback_and_its_mtu_matches_sysfs() {
        let f = flags("lo").expect("lo's flags");
        assert!(f & libc::IFF_LOOPBACK as libc::c_short != 0);
        let sysfs: i32 = std::fs::read_to_string("/sys/class/net/lo/mtu")
            .expect("sysfs")
            .trim()
            .parse()
            .expect("a number");
        assert_eq!(mtu("lo").expect("lo's MTU"), sysfs);
    }
}
