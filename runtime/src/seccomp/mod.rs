//! seccomp filters: a profile as data ([`Profile`]: a default action and
//! rules of syscalls, actions and argument comparisons, the OCI config's
//! linux.seccomp model) compiled to classic BPF here and installed with
//! seccomp(2). kcell's own default profile ([`Profile::kcell_default`])
//! answers EPERM to the calls Docker's default profile denies a container
//! without extra capabilities: they reach kernel subsystems no namespace
//! isolates (keyrings, BPF, perf, kexec, modules, handles that bypass the
//! mount namespace, ...).
//!
//! Compiled by hand rather than with `seccompiler`: that crate gives one
//! match action per filter (OCI gives each rule its own action and errno),
//! always sets no_new_privs when it installs (OCI leaves that to
//! noNewPrivileges) and takes no filter flags; libseccomp is C. The
//! syscall names come from the `syscalls` crate's table.

mod compile;

pub use compile::{compile, CompileError};

use crate::sys::{SysContext, SysError};
use nix::errno::Errno;

/// What a filter does with a call (SECCOMP_RET_*).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Action {
    /// Let it run.
    Allow,
    /// Fail it with this errno.
    Errno(u16),
    /// Kill the thread.
    KillThread,
    /// Kill the process.
    KillProcess,
    /// SIGSYS.
    Trap,
    /// Let it run and log it.
    Log,
    /// Hand it to a ptrace tracer with this value.
    Trace(u16),
}

impl Action {
    /// The filter's return value.
    pub fn ret(self) -> u32 {
        match self {
            Action::Allow => 0x7fff_0000,
            Action::Errno(e) => 0x0005_0000 | u32::from(e),
            Action::KillThread => 0,
            Action::KillProcess => 0x8000_0000,
            Action::Trap => 0x0003_0000,
            Action::Log => 0x7ffc_0000,
            Action::Trace(v) => 0x7ff0_0000 | u32::from(v),
        }
    }
}

/// How an argument is compared (SCMP_CMP_*).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Op {
    /// !=
    Ne,
    /// <
    Lt,
    /// <=
    Le,
    /// ==
    Eq,
    /// >=
    Ge,
    /// >
    Gt,
    /// (arg & value) == value_two
    MaskedEq,
}

/// One argument comparison of a rule (all of a rule's must hold).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ArgCmp {
    /// Argument 0..=5.
    pub index: u8,
    /// The comparison.
    pub op: Op,
    /// The value (the mask for MaskedEq).
    pub value: u64,
    /// The datum for MaskedEq.
    pub value_two: u64,
}

/// A rule: these calls, under these argument conditions, get this action.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rule {
    /// x86_64 syscall numbers.
    pub syscalls: Vec<i64>,
    /// What they get.
    pub action: Action,
    /// Conditions, all of which must hold (none: always).
    pub args: Vec<ArgCmp>,
}

/// A whole filter.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Profile {
    /// What a call no rule matches gets.
    pub default_action: Action,
    /// Audit architectures besides the native x86_64 that are let through
    /// to the rules (x32 and i386 calls otherwise get EPERM and a kill).
    pub architectures: Vec<u32>,
    /// The rules, first match wins.
    pub rules: Vec<Rule>,
    /// SECCOMP_FILTER_FLAG_* given to seccomp(2).
    pub flags: u32,
}

/// AUDIT_ARCH_X86_64.
pub const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// AUDIT_ARCH_I386.
pub const AUDIT_ARCH_I386: u32 = 0x4000_0003;
/// x32 calls are x86_64 calls with this bit in the number.
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// The calls kcell's default profile denies, by class (name, x86_64 number).
pub const DENIED: &[(&str, &[(&str, i64)])] = &[
    (
        "keyring",
        &[
            ("keyctl", libc::SYS_keyctl),
            ("add_key", libc::SYS_add_key),
            ("request_key", libc::SYS_request_key),
        ],
    ),
    ("bpf", &[("bpf", libc::SYS_bpf)]),
    ("perf", &[("perf_event_open", libc::SYS_perf_event_open)]),
    (
        "kexec",
        &[
            ("kexec_load", libc::SYS_kexec_load),
            ("kexec_file_load", libc::SYS_kexec_file_load),
        ],
    ),
    (
        "modules",
        &[
            ("init_module", libc::SYS_init_module),
            ("finit_module", libc::SYS_finit_module),
            ("delete_module", libc::SYS_delete_module),
        ],
    ),
    (
        "handles",
        &[
            ("open_by_handle_at", libc::SYS_open_by_handle_at),
            ("name_to_handle_at", libc::SYS_name_to_handle_at),
        ],
    ),
    ("userfaultfd", &[("userfaultfd", libc::SYS_userfaultfd)]),
    (
        "accounting",
        &[
            ("acct", libc::SYS_acct),
            ("swapon", libc::SYS_swapon),
            ("swapoff", libc::SYS_swapoff),
            ("quotactl", libc::SYS_quotactl),
            ("lookup_dcookie", libc::SYS_lookup_dcookie),
            ("uselib", libc::SYS_uselib),
        ],
    ),
];

/// The x86_64 number of a syscall name, from the `syscalls` crate's table.
pub fn number(name: &str) -> Option<i64> {
    name.parse::<syscalls::Sysno>().ok().map(|s| s.id() as i64)
}

impl Profile {
    /// kcell's default: everything allowed but [`DENIED`] (EPERM). With
    /// `deny_userns`, creating a user namespace is refused too: unshare and
    /// clone with CLONE_NEWUSER get EPERM, and clone3 (whose flags sit in
    /// memory a filter cannot read) gets ENOSYS, so libc falls back to clone.
    pub fn kcell_default(deny_userns: bool) -> Profile {
        let eperm = Action::Errno(libc::EPERM as u16);
        let mut rules = Vec::new();
        if deny_userns {
            rules.push(Rule {
                syscalls: vec![libc::SYS_clone3],
                action: Action::Errno(libc::ENOSYS as u16),
                args: Vec::new(),
            });
            rules.push(Rule {
                syscalls: vec![libc::SYS_unshare, libc::SYS_clone],
                action: eperm,
                args: vec![ArgCmp {
                    index: 0,
                    op: Op::MaskedEq,
                    value: libc::CLONE_NEWUSER as u64,
                    value_two: libc::CLONE_NEWUSER as u64,
                }],
            });
        }
        rules.push(Rule {
            syscalls: DENIED
                .iter()
                .flat_map(|(_, calls)| calls.iter().map(|(_, nr)| *nr))
                .collect(),
            action: eperm,
            args: Vec::new(),
        });
        Profile {
            default_action: Action::Allow,
            architectures: Vec::new(),
            rules,
            flags: 0,
        }
    }
}

/// Installs `filter` (from [`compile`]) on the calling thread with
/// seccomp(2); no_new_privs must be set, or the caller hold CAP_SYS_ADMIN.
/// It allocates nothing, so a forked child may call it.
pub fn install(filter: &[libc::sock_filter], flags: u32) -> Result<(), SysError> {
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: prog points at `filter`, alive for the call; the kernel copies it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &prog as *const libc::sock_fprog,
        )
    };
    Errno::result(rc).map(|_| ()).sys(
        "seccomp SECCOMP_SET_MODE_FILTER",
        format!("{} instructions", filter.len()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_through_the_table() {
        assert_eq!(number("keyctl"), Some(libc::SYS_keyctl));
        assert_eq!(number("openat2"), Some(libc::SYS_openat2));
        assert_eq!(number("no_such_call"), None);
    }

    #[test]
    fn a_denied_call_gets_eperm_in_a_child() {
        let filter = compile(&Profile::kcell_default(true)).expect("compiles");
        // SAFETY: the child only makes system calls and exits.
        match unsafe { nix::unistd::fork() }.expect("fork") {
            nix::unistd::ForkResult::Child => {
                // SAFETY: prctl with integer arguments.
                unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
                let ok = install(&filter, 0).is_ok()
                    // SAFETY: keyctl(KEYCTL_GET_KEYRING_ID) with integer arguments.
                    && unsafe { libc::syscall(libc::SYS_keyctl, 0, -3, 0) } == -1
                    && Errno::last() == Errno::EPERM
                    // SAFETY: unshare with a flag word; refused by the filter.
                    && unsafe { libc::unshare(libc::CLONE_NEWUSER) } == -1
                    && Errno::last() == Errno::EPERM
                    && nix::unistd::getpid().as_raw() > 0;
                // SAFETY: _exit in a forked child.
                unsafe { libc::_exit(i32::from(!ok)) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).expect("wait");
                assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
            }
        }
    }
}
