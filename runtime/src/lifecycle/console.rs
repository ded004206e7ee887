//! The container's terminal (`process.terminal`): a pseudo-terminal made
//! inside the container (from its own devpts), its slave on the process's
//! stdio and at /dev/console, its master handed to the caller through the
//! console socket (`--console-socket`, AF_UNIX) by SCM_RIGHTS, one message
//! with one descriptor, as conmon and containerd expect from runc.

use crate::sys::{SysContext, SysError};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// Connects to the caller's console socket (in the runtime, before the
/// container's first process is made: it inherits the connection).
pub fn connect(path: &Path) -> Result<OwnedFd, SysError> {
    let s = std::os::unix::net::UnixStream::connect(path).sys("connect", path.display())?;
    Ok(OwnedFd::from(s))
}

/// Makes a pty, sends its master over `socket`, and makes the slave the
/// calling process's controlling terminal and stdio. Called in the
/// container (after pivot_root: /dev/ptmx is the container's).
pub fn attach(socket: &OwnedFd, size: Option<(u16, u16)>) -> Result<(), SysError> {
    use nix::fcntl::OFlag;
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .sys("posix_openpt", "/dev/ptmx")?;
    nix::pty::grantpt(&master).sys("grantpt", "/dev/ptmx")?;
    nix::pty::unlockpt(&master).sys("unlockpt", "/dev/ptmx")?;
    let slave_name = nix::pty::ptsname_r(&master).sys("ptsname", "/dev/ptmx")?;
    if let Some((rows, cols)) = size {
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize from the pointer.
        unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    }
    send_fd(socket, master.as_raw_fd(), "/dev/ptmx")?;
    drop(master);
    let slave = nix::fcntl::open(
        Path::new(&slave_name),
        OFlag::O_RDWR | OFlag::O_NOCTTY,
        nix::sys::stat::Mode::empty(),
    )
    .sys("open", &slave_name)?;
    // SAFETY: open just returned this descriptor to us alone.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    // /dev/console is the terminal too, as runc binds it.
    if Path::new("/dev/console").exists() || std::fs::File::create("/dev/console").is_ok() {
        let _ = nix::mount::mount(
            Some(slave_name.as_str()),
            "/dev/console",
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        );
    }
    let _ = nix::unistd::setsid();
    // SAFETY: TIOCSCTTY takes an integer argument.
    let rc = unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) };
    nix::errno::Errno::result(rc).sys("ioctl TIOCSCTTY", &slave_name)?;
    for fd in 0..3 {
        nix::unistd::dup2(slave.as_raw_fd(), fd).sys("dup2", format!("{slave_name} to {fd}"))?;
    }
    Ok(())
}

/// Sends one descriptor with a name as payload (what conmon and containerd
/// read from runc: a non-empty name, one fd).
pub fn send_fd(socket: &OwnedFd, fd: i32, name: &str) -> Result<(), SysError> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let fds = [fd];
    let iov = [std::io::IoSlice::new(name.as_bytes())];
    sendmsg::<()>(
        socket.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map(|_| ())
    .sys("sendmsg SCM_RIGHTS", "the console socket")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_descriptor_arrives_with_its_name() {
        use nix::sys::socket::{
            recvmsg, socketpair, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType,
        };
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::empty(),
        )
        .expect("socketpair");
        let file = std::fs::File::open("/dev/null").expect("open");
        send_fd(&a, file.as_raw_fd(), "/dev/ptmx").expect("send");
        let mut buf = [0u8; 64];
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([i32; 1]);
        let msg = recvmsg::<()>(b.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::empty())
            .expect("recvmsg");
        let fds: Vec<i32> = msg
            .cmsgs()
            .expect("cmsgs")
            .filter_map(|c| match c {
                ControlMessageOwned::ScmRights(f) => Some(f),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(fds.len(), 1);
        assert_eq!(&buf[..9], b"/dev/ptmx");
        // SAFETY: the fd just arrived and is ours.
        drop(unsafe { OwnedFd::from_raw_fd(fds[0]) });
    }
}
