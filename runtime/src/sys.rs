//! The error type of a failed system call, carrying the call, what it was
//! applied to and the errno, so every message reads like
//! "mount proc on /rootfs/proc: EPERM (Operation not permitted)".

use nix::errno::Errno;
use std::fmt::Display;

/// A failed system call.
#[derive(Debug, thiserror::Error)]
#[error("{call} {subject}: {errno}")]
pub struct SysError {
    /// The call, e.g. "mount" or "write".
    pub call: &'static str,
    /// The path or value it was applied to.
    pub subject: String,
    /// What the kernel answered.
    pub errno: Errno,
}

/// Attaches the call and its subject to a failed result.
pub trait SysContext<T> {
    /// Names the call and its subject (a path, a value, "65536 to memory.max").
    fn sys(self, call: &'static str, subject: impl Display) -> Result<T, SysError>;
}

impl<T> SysContext<T> for nix::Result<T> {
    fn sys(self, call: &'static str, subject: impl Display) -> Result<T, SysError> {
        self.map_err(|errno| SysError {
            call,
            subject: subject.to_string(),
            errno,
        })
    }
}

impl<T> SysContext<T> for std::io::Result<T> {
    fn sys(self, call: &'static str, subject: impl Display) -> Result<T, SysError> {
        self.map_err(|e| SysError {
            call,
            subject: subject.to_string(),
            errno: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        })
    }
}

impl SysError {
    /// Wraps an io::Error of `call` on `subject`.
    pub fn from_io(call: &'static str, subject: impl Display, e: std::io::Error) -> Self {
        SysError {
            call,
            subject: subject.to_string(),
            errno: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        }
    }
}

/// clap's error as one line naming the value and what is allowed (its
/// hints follow only with --help).
pub fn one_line(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty())
        .collect();
    lines.join(" ").trim_start_matches("error: ").to_string()
}
