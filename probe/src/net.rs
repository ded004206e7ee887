//! Network probes: the addresses and default route the container sees, an
//! ICMP echo, a TCP connection, and a TCP server that tells each client the
//! address it saw (so a client observes what the far end saw, NAT included).

#[allow(unused_imports)]
use super::*;
use std::io::{BufRead, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// `addr_<ifname>=A.B.C.D/P` for every IPv4 address, and the default gateway.
pub fn addrs() -> Res {
    let addrs = nix::ifaddrs::getifaddrs().map_err(|e| format!("getifaddrs: {e}"))?;
    let mut seen = Vec::new();
    for ifa in addrs {
        let (Some(addr), Some(mask)) = (ifa.address, ifa.netmask) else {
            continue;
        };
        let (Some(addr), Some(mask)) = (addr.as_sockaddr_in(), mask.as_sockaddr_in()) else {
            continue;
        };
        let prefix = mask.ip().to_bits().count_ones();
        seen.push(format!("{}={}/{prefix}", ifa.interface_name, addr.ip()));
    }
    seen.sort();
    for entry in &seen {
        let (name, value) = entry.split_once('=').unwrap_or((entry, ""));
        out(&format!("addr_{name}"), value);
    }
    out("addrs", seen.join(" "));
    out(
        "default_gw",
        default_gateway().unwrap_or_else(|| "none".into()),
    );
    Ok(())
}

/// The default route's gateway from /proc/net/route (the kernel's table).
fn default_gateway() -> Option<String> {
    let text = std::fs::read_to_string("/proc/net/route").ok()?;
    text.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (dest, gw) = (f.get(1)?, f.get(2)?);
        (*dest == "00000000").then(|| {
            let v = u32::from_str_radix(gw, 16).ok()?;
            Some(Ipv4Addr::from(u32::from_be(v)).to_string())
        })?
    })
}

fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// One ICMP echo to `target` over a raw socket: `ping=ok` when the reply
/// came, else the errno or `timeout`.
pub fn ping(target: &str) -> Res {
    let ip: Ipv4Addr = target
        .parse()
        .map_err(|_| format!("ping: bad address {target}"))?;
    out("ping", echo(ip, Duration::from_secs(3)));
    Ok(())
}

fn echo(ip: Ipv4Addr, timeout: Duration) -> String {
    // SAFETY: socket(2) with constant arguments; checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_ICMP,
        )
    };
    if fd < 0 {
        return io_errno(&std::io::Error::last_os_error());
    }
    // SAFETY: fd is fresh and owned here.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let ident = (std::process::id() & 0xffff) as u16;
    let mut packet = vec![8u8, 0, 0, 0];
    packet.extend_from_slice(&ident.to_be_bytes());
    packet.extend_from_slice(&1u16.to_be_bytes());
    packet.extend_from_slice(b"kcell-probe ping");
    let sum = internet_checksum(&packet);
    packet[2..4].copy_from_slice(&sum.to_be_bytes());
    let dest = nix::sys::socket::SockaddrIn::from(std::net::SocketAddrV4::new(ip, 0));
    if let Err(e) = nix::sys::socket::sendto(
        sock.as_raw_fd(),
        &packet,
        &dest,
        nix::sys::socket::MsgFlags::empty(),
    ) {
        return format!("{e:?}");
    }
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut pfd = [nix::poll::PollFd::new(
            std::os::fd::AsFd::as_fd(&sock),
            nix::poll::PollFlags::POLLIN,
        )];
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        if !matches!(nix::poll::poll(&mut pfd, ms), Ok(n) if n > 0) {
            continue;
        }
        let Ok((n, from)) =
            nix::sys::socket::recvfrom::<nix::sys::socket::SockaddrIn>(sock.as_raw_fd(), &mut buf)
        else {
            continue;
        };
        // A raw IPv4 socket hands over the IP header too.
        let ihl = usize::from(buf[0] & 0x0f) * 4;
        let icmp = &buf[ihl.min(n)..n];
        let from_target = from.is_some_and(|a| a.ip() == ip);
        if from_target && icmp.len() >= 8 && icmp[0] == 0 && icmp[4..6] == ident.to_be_bytes() {
            return "ok".into();
        }
    }
    "timeout".into()
}

/// Connects to `host:port` within `seconds`: `connect=ok` (with `local=`
/// our address and `served_peer=` the address the server saw, when it says
/// one), else the errno name.
pub fn tcp_connect(host: &str, port: &str, seconds: Option<&str>) -> Res {
    let addr: SocketAddr = format!("{host}:{port}")
        .parse()
        .map_err(|_| format!("tcp-connect: bad address {host}:{port}"))?;
    let timeout = Duration::from_secs_f64(seconds.and_then(|s| s.parse().ok()).unwrap_or(3.0));
    match TcpStream::connect_timeout(&addr, timeout) {
        Ok(stream) => {
            out("connect", "ok");
            if let Ok(local) = stream.local_addr() {
                out("local", local.ip());
            }
            let _ = stream.set_read_timeout(Some(timeout));
            let mut line = String::new();
            let _ = std::io::BufReader::new(&stream).read_line(&mut line);
            if let Some(peer) = line.trim().strip_prefix("peer=") {
                out("served_peer", peer);
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => out("connect", "timeout"),
        Err(e) => out("connect", io_errno(&e)),
    }
    Ok(())
}

/// Listens on `port` (all addresses), then goes to the background and
/// answers each client with `peer=ADDR`: the caller continues only once the
/// port is bound, so a client started after it cannot race it.
pub fn tcp_serve(port: &str) -> Res {
    let listener =
        TcpListener::bind(format!("0.0.0.0:{port}")).map_err(|e| format!("bind {port}: {e}"))?;
    out("serving", port);
    let _ = std::io::stdout().flush();
    // SAFETY: the probe is single-threaded.
    match unsafe { nix::unistd::fork() }.map_err(|e| e.to_string())? {
        nix::unistd::ForkResult::Parent { .. } => Ok(()),
        nix::unistd::ForkResult::Child => {
            // Detached from the caller's output so it does not hold the pipe.
            if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
                let _ = nix::unistd::dup2(null.as_raw_fd(), 1);
            }
            for mut stream in listener.incoming().flatten() {
                if let Ok(peer) = stream.peer_addr() {
                    let _ = writeln!(stream, "peer={}", peer.ip());
                }
            }
            std::process::exit(0)
        }
    }
}

pub(super) fn link_names() -> Result<Vec<String>, String> {
    let mut names: Vec<String> = nix::net::if_::if_nameindex()
        .map_err(|e| format!("if_nameindex: {e}"))?
        .iter()
        .map(|i| i.name().to_string_lossy().to_string())
        .collect();
    names.sort();
    Ok(names)
}

/// lo's IFF_UP, from the harness's own ioctl; an unreadable flag is an
/// error (the trial's), never "down".
pub(super) fn lo_up() -> Result<bool, String> {
    crate::netdev::is_up("lo")
}

pub(super) fn links() -> Res {
    let names = link_names()?;
    out("count", names.len());
    out("links", names.join(","));
    out("lo_up", lo_up()?);
    Ok(())
}

/// TCP over 127.0.0.1 within this network namespace.
pub(super) fn tcp_loopback() -> Result<String, String> {
    let listener = match std::net::TcpListener::bind("127.0.0.1:0") {
        Ok(l) => l,
        Err(e) => return Ok(format!("bind:{}", io_errno(&e))),
    };
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    Ok(
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(_) => "ok".to_string(),
            Err(e) => io_errno(&e),
        },
    )
}

/// The document's sequence in a brand-new network namespace: only lo, down;
/// after bringing it up, loopback traffic works.
pub(super) fn fresh_netns() -> Res {
    use nix::unistd::{fork, ForkResult};
    // SAFETY: single-threaded.
    match unsafe { fork() }.map_err(|e| e.to_string())? {
        ForkResult::Child => {
            let code = (|| -> Res {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| format!("unshare net: {e}"))?;
                let names = link_names()?;
                out("fresh_links", names.join(","));
                out("fresh_lo_up", lo_up()?);
                out("fresh_tcp_before_up", tcp_loopback()?);
                crate::netdev::set_up("lo")?;
                out("fresh_lo_up_after", lo_up()?);
                out("fresh_tcp_after_up", tcp_loopback()?);
                Ok(())
            })();
            let _ = std::io::stdout().flush();
            std::process::exit(i32::from(code.is_err()));
        }
        ForkResult::Parent { child } => {
            let status = nix::sys::wait::waitpid(child, None).map_err(|e| e.to_string())?;
            match status {
                nix::sys::wait::WaitStatus::Exited(_, 0) => Ok(()),
                other => Err(format!("fresh-netns child: {other:?}")),
            }
        }
    }
}

/// A network namespace kept by a bind mount of /proc/PID/ns/net after its
/// creator exits (what `ip netns add` does): the creator sets lo up with MTU
/// 1234; afterwards setns on the bind-mounted file must find it so. The
/// control: the same namespace without the bind mount is gone (its
/// /proc/PID/ns/net with it).
pub(super) fn netns_persist(dir: &str) -> Res {
    use nix::unistd::{fork, ForkResult};
    let holder = Path::new(dir).join("kcell-netns");
    fs::write(&holder, "").map_err(|e| format!("create {}: {e}", holder.display()))?;
    let (r, w) = nix::unistd::pipe().map_err(|e| e.to_string())?;
    let (r2, w2) = nix::unistd::pipe().map_err(|e| e.to_string())?;
    // SAFETY: single-threaded.
    let child = match unsafe { fork() }.map_err(|e| e.to_string())? {
        ForkResult::Child => {
            let ok = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).is_ok()
                && crate::netdev::set_up("lo").is_ok()
                && crate::netdev::set_mtu("lo", 1234).is_ok();
            let _ = nix::unistd::write(&w, if ok { b"y" } else { b"n" });
            // Wait until the parent has (or has not) bound the namespace.
            let mut b = [0u8; 1];
            let _ = nix::unistd::read(r2.as_raw_fd(), &mut b);
            std::process::exit(0);
        }
        ForkResult::Parent { child } => child,
    };
    drop(w);
    drop(r2);
    let mut b = [0u8; 1];
    let _ = nix::unistd::read(r.as_raw_fd(), &mut b);
    if b[0] != b'y' {
        return Err("the creator could not make and configure its network namespace".into());
    }
    let ns = format!("/proc/{child}/ns/net");
    nix::mount::mount(
        Some(ns.as_str()),
        &holder,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| format!("bind {ns}: {e}"))?;
    let _ = nix::unistd::write(&w2, b"x");
    let _ = nix::sys::wait::waitpid(child, None);
    out("creator_gone", !Path::new(&ns).exists());
    // Enter the kept namespace in a child, so this process keeps its own.
    // SAFETY: single-threaded.
    match unsafe { fork() }.map_err(|e| e.to_string())? {
        ForkResult::Child => {
            let code = (|| -> Res {
                let f = fs::File::open(&holder)
                    .map_err(|e| format!("open {}: {e}", holder.display()))?;
                nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| format!("setns: {e}"))?;
                out("setns", "ok");
                out("kept_lo_up", lo_up()?);
                out("kept_lo_mtu", crate::netdev::mtu("lo")?);
                Ok(())
            })();
            if let Err(e) = code {
                out("setns", e);
            }
            let _ = std::io::stdout().flush();
            std::process::exit(0);
        }
        ForkResult::Parent { child } => {
            let _ = nix::sys::wait::waitpid(child, None);
        }
    }
    let _ = nix::mount::umount2(&holder, nix::mount::MntFlags::MNT_DETACH);
    Ok(())
}
