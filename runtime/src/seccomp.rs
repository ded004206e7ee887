//! The default seccomp profile: a classic-BPF filter (seccomp(2)) that
//! answers EPERM to the system calls Docker's default profile denies to a
//! container without extra capabilities, because they reach kernel
//! subsystems that are not namespaced (keyrings, BPF, perf, kexec, modules,
//! handles that bypass the mount namespace, ...). Everything else is
//! allowed; mount, unshare and the like stay governed by capabilities.
//! `--seccomp=unconfined` installs nothing.

use crate::sys::{SysContext, SysError};
use nix::errno::Errno;

/// The denied system calls, by class (name, x86_64 number).
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

// Classic BPF opcodes (linux/filter.h, linux/bpf_common.h).
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x15;
const BPF_JGE_K: u16 = 0x35;
const BPF_JSET_K: u16 = 0x45;
const BPF_RET_K: u16 = 0x06;
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The filter program: a foreign architecture is killed (its numbers mean
/// other calls), x32 calls and the denied ones get EPERM, the rest pass.
/// With `deny_userns`, creating a user namespace is refused too: unshare
/// and clone with CLONE_NEWUSER get EPERM, and clone3 (whose flags sit in
/// memory a filter cannot read) gets ENOSYS, so libc falls back to clone.
pub fn program(deny_userns: bool) -> Vec<libc::sock_filter> {
    let denied: Vec<u32> = DENIED
        .iter()
        .flat_map(|(_, calls)| calls.iter().map(|(_, nr)| *nr as u32))
        .collect();
    let eperm = SECCOMP_RET_ERRNO | libc::EPERM as u32;
    let mut p = vec![
        // seccomp_data.arch
        stmt(BPF_LD_W_ABS, 4),
        jump(BPF_JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
        stmt(BPF_RET_K, SECCOMP_RET_KILL_PROCESS),
        // seccomp_data.nr
        stmt(BPF_LD_W_ABS, 0),
        jump(BPF_JGE_K, X32_SYSCALL_BIT, 0, 1),
        stmt(BPF_RET_K, eperm),
    ];
    if deny_userns {
        p.extend([
            jump(BPF_JEQ_K, libc::SYS_clone3 as u32, 0, 1),
            stmt(BPF_RET_K, SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
            // unshare(flags) or clone(flags, ...): look at the flags ...
            jump(BPF_JEQ_K, libc::SYS_unshare as u32, 1, 0),
            jump(BPF_JEQ_K, libc::SYS_clone as u32, 0, 3),
            // ... the low word of seccomp_data.args[0].
            stmt(BPF_LD_W_ABS, 16),
            jump(BPF_JSET_K, libc::CLONE_NEWUSER as u32, 0, 1),
            stmt(BPF_RET_K, eperm),
            // The number again, for the checks below.
            stmt(BPF_LD_W_ABS, 0),
        ]);
    }
    for nr in denied {
        p.push(jump(BPF_JEQ_K, nr, 0, 1));
        p.push(stmt(BPF_RET_K, eperm));
    }
    p.push(stmt(BPF_RET_K, SECCOMP_RET_ALLOW));
    p
}

/// Installs `filter` (from [`program`]) on the calling thread; no_new_privs
/// must be set, or the caller hold CAP_SYS_ADMIN. It allocates nothing, so a
/// forked child may call it.
pub fn install(filter: &[libc::sock_filter]) -> Result<(), SysError> {
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: prog points at `filter`, alive for the call; the kernel copies it.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            &prog as *const libc::sock_fprog,
            0,
            0,
        )
    };
    Errno::result(rc)
        .map(|_| ())
        .sys("prctl PR_SET_SECCOMP", "the default profile")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_denied_call_has_its_test_and_return() {
        let p = program(false);
        let calls: usize = DENIED.iter().map(|(_, c)| c.len()).sum();
        assert_eq!(p.len(), 6 + 2 * calls + 1);
        assert_eq!(program(true).len(), p.len() + 8);
        assert_eq!(p.last().map(|i| i.k), Some(SECCOMP_RET_ALLOW));
        assert!(p.len() < 4096, "BPF_MAXINSNS");
    }

    #[test]
    fn a_denied_call_gets_eperm_in_a_child() {
        let filter = program(true);
        // SAFETY: the child only makes system calls and exits.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                // SAFETY: prctl with integer arguments.
                unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
                let ok = install(&filter).is_ok()
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
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
            }
        }
    }
}
