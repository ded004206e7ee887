//! The processes of one launch (the runtime, the bootstrap child that
//! makes the namespaces, the container's first process, an exec helper)
//! talk over a SOCK_SEQPACKET socketpair in typed messages: one datagram
//! per [`Message`], JSON-encoded. A message out of order is an error of
//! its own ([`ChannelError::Unexpected`]), not a parse failure of a line.

use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockType};
use std::os::fd::{AsRawFd, OwnedFd};

/// Everything the processes of a launch say to each other.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Message {
    /// Runtime -> bootstrap: the id maps are written, go on.
    Mapped,
    /// Bootstrap -> runtime: the container's first process (or the exec'd
    /// process) exists, with this host PID.
    Pid(i32),
    /// Runtime -> first process: it is in its cgroup and its network is
    /// plugged; it may build its root.
    Placed,
    /// First process -> runtime: the mount namespace is ready; run the
    /// prestart and createRuntime hooks (in the runtime's namespaces).
    RunHooks,
    /// Runtime -> first process: the hooks ran.
    HooksDone,
    /// First process -> runtime: all set; it now waits for `start` at the
    /// exec FIFO (an exec'd process: it is about to exec).
    Ready,
    /// Any -> runtime: a step failed; `code` is the exit status to report
    /// (125 the runtime's own error, 126 not executable, 127 not found).
    Failed {
        /// The exit status.
        code: i32,
        /// What went wrong, naming the step, call and value.
        message: String,
    },
}

impl Message {
    fn name(&self) -> &'static str {
        match self {
            Message::Mapped => "Mapped",
            Message::Pid(_) => "Pid",
            Message::Placed => "Placed",
            Message::RunHooks => "RunHooks",
            Message::HooksDone => "HooksDone",
            Message::Ready => "Ready",
            Message::Failed { .. } => "Failed",
        }
    }
}

/// What went wrong on the channel.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChannelError {
    /// The other side closed it (it exited, or exec'd: the socket is close-on-exec).
    #[error("the {0} closed the channel while {1} was awaited")]
    Closed(&'static str, &'static str),
    /// A message other than the one awaited.
    #[error("the {0} sent {1} while {2} was awaited")]
    Unexpected(&'static str, String, &'static str),
    /// The other side reported a failure.
    #[error("{message}")]
    Failed {
        /// Its exit status.
        code: i32,
        /// Its message.
        message: String,
    },
    /// A socket call failed.
    #[error("{0}")]
    Io(String),
}

/// One end of a launch's channel.
#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
    /// Who is at the other end, for messages ("container's first process").
    peer: &'static str,
}

/// A connected pair (close-on-exec, so an exec closes the child's end).
pub fn pair(
    peer_of_first: &'static str,
    peer_of_second: &'static str,
) -> Result<(Channel, Channel), ChannelError> {
    let (a, b) = socket::socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| ChannelError::Io(format!("socketpair: {e}")))?;
    Ok((
        Channel {
            fd: a,
            peer: peer_of_first,
        },
        Channel {
            fd: b,
            peer: peer_of_second,
        },
    ))
}

impl Channel {
    /// Sends one message. A peer that is gone is not an error here (the
    /// runtime of an OCI create exits once the container is created).
    pub fn send(&self, m: &Message) -> Result<(), ChannelError> {
        let bytes = serde_json::to_vec(m).map_err(|e| ChannelError::Io(e.to_string()))?;
        match socket::send(self.fd.as_raw_fd(), &bytes, MsgFlags::MSG_NOSIGNAL) {
            Ok(_) | Err(nix::errno::Errno::EPIPE) | Err(nix::errno::Errno::ECONNRESET) => Ok(()),
            Err(e) => Err(ChannelError::Io(format!(
                "send {} to the {}: {e}",
                m.name(),
                self.peer
            ))),
        }
    }

    /// The next message (None when the peer closed its end).
    pub fn recv(&self) -> Result<Option<Message>, ChannelError> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match socket::recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Ok(0) => return Ok(None),
                Ok(n) => {
                    return serde_json::from_slice(&buf[..n]).map(Some).map_err(|e| {
                        ChannelError::Io(format!("a malformed message from the {}: {e}", self.peer))
                    })
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(nix::errno::Errno::ECONNRESET) => return Ok(None),
                Err(e) => {
                    return Err(ChannelError::Io(format!(
                        "recv from the {}: {e}",
                        self.peer
                    )))
                }
            }
        }
    }

    /// Waits for `want`; a Failed message, another message or the end of
    /// the channel is an error naming what was awaited.
    pub fn expect(&self, want: &'static str) -> Result<Message, ChannelError> {
        match self.recv()? {
            None => Err(ChannelError::Closed(self.peer, want)),
            Some(Message::Failed { code, message }) => Err(ChannelError::Failed { code, message }),
            Some(m) if m.name() == want => Ok(m),
            Some(m) => Err(ChannelError::Unexpected(
                self.peer,
                m.name().to_string(),
                want,
            )),
        }
    }

    /// Reports a failure to the peer (the child side's last word).
    pub fn fail(&self, code: i32, message: impl Into<String>) {
        let _ = self.send(&Message::Failed {
            code,
            message: message.into(),
        });
    }

    /// The raw descriptor (to keep it across a clone).
    pub fn raw(&self) -> i32 {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_arrive_typed_and_out_of_order_ones_are_named() {
        let (a, b) = pair("child", "runtime").expect("pair");
        b.send(&Message::Pid(42)).expect("send");
        assert_eq!(a.expect("Pid"), Ok(Message::Pid(42)));
        b.send(&Message::Ready).expect("send");
        assert_eq!(
            a.expect("Pid"),
            Err(ChannelError::Unexpected("child", "Ready".into(), "Pid"))
        );
        b.fail(127, "exec 'nope': not found");
        assert_eq!(
            a.expect("Ready"),
            Err(ChannelError::Failed {
                code: 127,
                message: "exec 'nope': not found".into()
            })
        );
        drop(b);
        assert_eq!(
            a.expect("Ready"),
            Err(ChannelError::Closed("child", "Ready"))
        );
        // A peer that is gone does not fail the sender.
        assert_eq!(a.send(&Message::Placed), Ok(()));
    }
}
