//! A container's process as data: what it runs, as whom, with which
//! capabilities, limits and seccomp filter (the OCI config's `process`).
//! The first process and every `exec` are one of these.

use crate::seccomp::Profile;
use std::path::PathBuf;

use crate::caps::CapSet;
pub use crate::caps::Capabilities;

/// A resource limit (setrlimit(2)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rlimit {
    /// RLIMIT_* number.
    pub resource: u32,
    /// Soft limit.
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
}

/// The RLIMIT_* names an OCI config may use, with their numbers.
pub const RLIMITS: &[(&str, u32)] = &[
    ("RLIMIT_CPU", 0),
    ("RLIMIT_FSIZE", 1),
    ("RLIMIT_DATA", 2),
    ("RLIMIT_STACK", 3),
    ("RLIMIT_CORE", 4),
    ("RLIMIT_RSS", 5),
    ("RLIMIT_NPROC", 6),
    ("RLIMIT_NOFILE", 7),
    ("RLIMIT_MEMLOCK", 8),
    ("RLIMIT_AS", 9),
    ("RLIMIT_LOCKS", 10),
    ("RLIMIT_SIGPENDING", 11),
    ("RLIMIT_MSGQUEUE", 12),
    ("RLIMIT_NICE", 13),
    ("RLIMIT_RTPRIO", 14),
    ("RLIMIT_RTTIME", 15),
];

/// The process a container (or an exec) runs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Process {
    /// argv; the program is looked up in the environment's PATH.
    pub args: Vec<String>,
    /// The whole environment.
    pub env: Vec<String>,
    /// Working directory inside (made when missing, as runc does).
    pub cwd: PathBuf,
    /// uid inside.
    pub uid: u32,
    /// gid inside.
    pub gid: u32,
    /// Supplementary groups.
    pub additional_gids: Vec<u32>,
    /// umask, when set.
    pub umask: Option<u32>,
    /// Capability sets.
    pub capabilities: Capabilities,
    /// PR_SET_NO_NEW_PRIVS.
    pub no_new_privileges: bool,
    /// Resource limits.
    pub rlimits: Vec<Rlimit>,
    /// /proc/self/oom_score_adj.
    pub oom_score_adj: Option<i32>,
    /// A pseudo-terminal on stdio, its master sent to the console socket.
    pub terminal: bool,
    /// The terminal's rows and columns.
    pub console_size: Option<(u16, u16)>,
    /// The seccomp filter (None: unconfined).
    pub seccomp: Option<Profile>,
}

impl Process {
    /// A process running `args` as root with kcell's defaults: Docker's
    /// capabilities, no_new_privs, the default seccomp profile.
    pub fn new(args: Vec<String>) -> Process {
        Process {
            args,
            env: vec![
                format!("PATH={}", super::DEFAULT_PATH),
                "HOME=/root".to_string(),
            ],
            cwd: PathBuf::from("/"),
            uid: 0,
            gid: 0,
            additional_gids: Vec::new(),
            umask: None,
            capabilities: Capabilities::docker_default(CapSet::default(), true),
            no_new_privileges: true,
            rlimits: Vec::new(),
            oom_score_adj: None,
            terminal: false,
            console_size: None,
            seccomp: Some(Profile::kcell_default(false)),
        }
    }

    /// Sets `KEY=VALUE`, replacing an entry of the same key.
    pub fn set_env(&mut self, entry: &str) {
        let key = entry.split('=').next().unwrap_or_default();
        self.env.retain(|e| e.split('=').next() != Some(key));
        self.env.push(entry.to_string());
    }

    /// The value of `key` in the environment.
    pub fn env_var(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .find_map(|e| e.strip_prefix(key)?.strip_prefix('='))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_entries_replace_by_key() {
        let mut p = Process::new(vec!["true".into()]);
        p.set_env("PATH=/x");
        p.set_env("A=1");
        assert_eq!(p.env_var("PATH"), Some("/x"));
        assert_eq!(p.env.iter().filter(|e| e.starts_with("PATH=")).count(), 1);
        assert_eq!(p.env_var("A"), Some("1"));
    }

    #[test]
    fn a_non_root_user_keeps_only_the_bounding_set() {
        let c = Capabilities::docker_default(CapSet::default(), false);
        assert_eq!(c.bounding, CapSet::default());
        assert_eq!((c.effective, c.permitted), (CapSet(0), CapSet(0)));
    }
}
