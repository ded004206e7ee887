//! A [`Profile`] compiled to classic BPF (seccomp_data: nr @0, arch @4,
//! args[i] @16+8i, low word first).
//!
//! The program: a native (x86_64) call goes to the rules; x32 calls (the
//! x86_64 ABI with bit 30 in the number, which no rule's number has) get
//! EPERM, so a deny list cannot be bypassed through them; an i386 call
//! gets the default action when the profile lists i386 and does not allow
//! by default (its numbers differ: no rule can name them), and any other
//! architecture is killed. A native call numbered above every call a
//! deny-by-default profile names gets ENOSYS ([`enosys_above`]). Each rule
//! is a block that tests the number and its argument conditions and
//! returns the rule's action; the default action comes last. 64-bit
//! comparisons are two 32-bit ones.

use super::{Action, ArgCmp, Op, Profile, AUDIT_ARCH_I386, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT};

// Classic BPF opcodes (linux/filter.h, linux/bpf_common.h).
const LD_W_ABS: u16 = 0x20;
const ALU_AND_K: u16 = 0x54;
const JEQ_K: u16 = 0x15;
const JGT_K: u16 = 0x25;
const JGE_K: u16 = 0x35;
const RET_K: u16 = 0x06;
/// The kernel's limit on a classic BPF program (BPF_MAXINSNS).
const MAX_INSNS: usize = 4096;

/// A profile too large for one program.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CompileError {
    /// More than BPF_MAXINSNS instructions.
    #[error("the seccomp profile compiles to {0} instructions: at most 4096 fit in one filter")]
    TooLong(usize),
    /// An argument index past the sixth.
    #[error("seccomp argument index {0} is not allowed: 0 to 5")]
    ArgIndex(u8),
}

/// Where a jump of a block goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum To {
    /// The next instruction.
    Next,
    /// The first instruction of the next comparison (this one held).
    Pass,
    /// The block's failure path (a condition did not hold).
    Fail,
}

/// An instruction with symbolic jump targets.
#[derive(Debug, Clone, Copy)]
struct Sym {
    code: u16,
    k: u32,
    jt: To,
    jf: To,
}

fn op(code: u16, k: u32) -> Sym {
    Sym {
        code,
        k,
        jt: To::Next,
        jf: To::Next,
    }
}

fn jump(code: u16, k: u32, jt: To, jf: To) -> Sym {
    Sym { code, k, jt, jf }
}

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jmp(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// One comparison of a 64-bit argument: falls through when it holds,
/// jumps to Fail otherwise.
fn compare(c: &ArgCmp) -> Vec<Sym> {
    let lo_at = 16 + 8 * u32::from(c.index);
    let hi_at = lo_at + 4;
    let (vlo, vhi) = (c.value as u32, (c.value >> 32) as u32);
    let (dlo, dhi) = (c.value_two as u32, (c.value_two >> 32) as u32);
    use To::{Fail, Next, Pass};
    match c.op {
        Op::Eq => vec![
            op(LD_W_ABS, hi_at),
            jump(JEQ_K, vhi, Next, Fail),
            op(LD_W_ABS, lo_at),
            jump(JEQ_K, vlo, Next, Fail),
        ],
        Op::Ne => vec![
            op(LD_W_ABS, hi_at),
            jump(JEQ_K, vhi, Next, Pass),
            op(LD_W_ABS, lo_at),
            jump(JEQ_K, vlo, Fail, Next),
        ],
        Op::MaskedEq => vec![
            op(LD_W_ABS, hi_at),
            op(ALU_AND_K, vhi),
            jump(JEQ_K, dhi, Next, Fail),
            op(LD_W_ABS, lo_at),
            op(ALU_AND_K, vlo),
            jump(JEQ_K, dlo, Next, Fail),
        ],
        Op::Gt => vec![
            op(LD_W_ABS, hi_at),
            jump(JGT_K, vhi, Pass, Next),
            jump(JEQ_K, vhi, Next, Fail),
            op(LD_W_ABS, lo_at),
            jump(JGT_K, vlo, Pass, Fail),
        ],
        Op::Ge => vec![
            op(LD_W_ABS, hi_at),
            jump(JGT_K, vhi, Pass, Next),
            jump(JEQ_K, vhi, Next, Fail),
            op(LD_W_ABS, lo_at),
            jump(JGE_K, vlo, Pass, Fail),
        ],
        Op::Lt => vec![
            op(LD_W_ABS, hi_at),
            jump(JGE_K, vhi, Next, Pass),
            jump(JEQ_K, vhi, Next, Fail),
            op(LD_W_ABS, lo_at),
            jump(JGE_K, vlo, Fail, Pass),
        ],
        Op::Le => vec![
            op(LD_W_ABS, hi_at),
            jump(JGE_K, vhi, Next, Pass),
            jump(JEQ_K, vhi, Next, Fail),
            op(LD_W_ABS, lo_at),
            jump(JGT_K, vlo, Fail, Pass),
        ],
    }
}

/// The block of one syscall of a rule with conditions: A holds the number
/// on entry and again on exit (reloaded on the failure path).
fn conditional_block(nr: i64, args: &[ArgCmp], action: Action) -> Vec<libc::sock_filter> {
    // Assemble the comparisons, each with its own Pass = its end.
    let mut body: Vec<(Sym, usize)> = Vec::new(); // (insn, end of its comparison)
    for c in args {
        let seq = compare(c);
        let end = body.len() + seq.len();
        body.extend(seq.into_iter().map(|s| (s, end)));
    }
    // Layout: [jeq nr, 0, skip] body... [ret action] [ld nr]
    let ret_at = 1 + body.len();
    let fail_at = ret_at + 1;
    let after = fail_at + 1;
    let mut out = vec![jmp(JEQ_K, nr as u32, 0, (after - 1) as u8)];
    for (i, (s, end)) in body.iter().enumerate() {
        let pc = 1 + i;
        let target = |t: To| -> u8 {
            let abs = match t {
                To::Next => pc + 1,
                To::Pass => 1 + end,
                To::Fail => fail_at,
            };
            (abs - pc - 1) as u8
        };
        if s.code == LD_W_ABS || s.code == ALU_AND_K {
            out.push(stmt(s.code, s.k));
        } else {
            out.push(jmp(s.code, s.k, target(s.jt), target(s.jf)));
        }
    }
    out.push(stmt(RET_K, action.ret()));
    out.push(stmt(LD_W_ABS, 0));
    out
}

/// The highest syscall number `p` names, when calls above it should get
/// ENOSYS rather than the default action: a profile written before a call
/// existed (clone3, faccessat2, ...) cannot mean to forbid it, and libc
/// falls back to the older call only on ENOSYS (glibc's pthread_create
/// fails on clone3's EPERM). runc and crun answer ENOSYS there too. Not
/// for a default that lets calls run anyway, nor one that is ENOSYS.
fn enosys_above(p: &Profile) -> Option<u32> {
    let lets_run = matches!(
        p.default_action,
        Action::Allow | Action::Log | Action::Trace(_)
    );
    if lets_run || p.default_action == Action::Errno(libc::ENOSYS as u16) {
        return None;
    }
    p.rules
        .iter()
        .flat_map(|r| &r.syscalls)
        .max()
        .map(|nr| *nr as u32)
}

/// Compiles `p` into a program for seccomp(2).
pub fn compile(p: &Profile) -> Result<Vec<libc::sock_filter>, CompileError> {
    if let Some(c) = p.rules.iter().flat_map(|r| &r.args).find(|c| c.index > 5) {
        return Err(CompileError::ArgIndex(c.index));
    }
    let i386_action =
        if p.architectures.contains(&AUDIT_ARCH_I386) && p.default_action != Action::Allow {
            p.default_action
        } else {
            Action::KillProcess
        };
    let mut prog = vec![
        stmt(LD_W_ABS, 4),
        jmp(JEQ_K, AUDIT_ARCH_X86_64, 3, 0),
        jmp(JEQ_K, AUDIT_ARCH_I386, 0, 1),
        stmt(RET_K, i386_action.ret()),
        stmt(RET_K, Action::KillProcess.ret()),
        stmt(LD_W_ABS, 0),
        jmp(JGE_K, X32_SYSCALL_BIT, 0, 1),
        stmt(RET_K, Action::Errno(libc::EPERM as u16).ret()),
    ];
    if let Some(last) = enosys_above(p) {
        prog.push(jmp(JGT_K, last, 0, 1));
        prog.push(stmt(RET_K, Action::Errno(libc::ENOSYS as u16).ret()));
    }
    for rule in &p.rules {
        for nr in &rule.syscalls {
            if rule.args.is_empty() {
                prog.push(jmp(JEQ_K, *nr as u32, 0, 1));
                prog.push(stmt(RET_K, rule.action.ret()));
            } else {
                prog.extend(conditional_block(*nr, &rule.args, rule.action));
            }
        }
    }
    prog.push(stmt(RET_K, p.default_action.ret()));
    if prog.len() > MAX_INSNS {
        return Err(CompileError::TooLong(prog.len()));
    }
    Ok(prog)
}

#[cfg(test)]
mod tests {
    use super::super::Rule;
    use super::*;
    use rstest::rstest;

    /// Runs a compiled program on one seccomp_data, as the kernel would.
    fn run(prog: &[libc::sock_filter], nr: u32, arch: u32, args: [u64; 6]) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_le_bytes());
        data[4..8].copy_from_slice(&arch.to_le_bytes());
        for (i, a) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        let word = |at: u32| {
            let at = at as usize;
            u32::from_le_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]])
        };
        let (mut a, mut pc) = (0u32, 0usize);
        loop {
            let i = prog[pc];
            pc += 1;
            match i.code {
                LD_W_ABS => a = word(i.k),
                ALU_AND_K => a &= i.k,
                RET_K => return i.k,
                JEQ_K | JGT_K | JGE_K => {
                    let hit = match i.code {
                        JEQ_K => a == i.k,
                        JGT_K => a > i.k,
                        _ => a >= i.k,
                    };
                    pc += usize::from(if hit { i.jt } else { i.jf });
                }
                other => panic!("opcode {other:#x}"),
            }
        }
    }

    fn profile(op: Op, value: u64, value_two: u64) -> Profile {
        Profile {
            default_action: Action::Allow,
            architectures: Vec::new(),
            rules: vec![Rule {
                syscalls: vec![libc::SYS_personality],
                action: Action::Errno(1),
                args: vec![ArgCmp {
                    index: 1,
                    op,
                    value,
                    value_two,
                }],
            }],
            flags: 0,
        }
    }

    const BIG: u64 = 0x1_0000_0005;

    #[rstest]
    #[case(Op::Eq, BIG, 0, BIG, true)]
    #[case(Op::Eq, BIG, 0, 5, false)]
    #[case(Op::Ne, BIG, 0, 5, true)]
    #[case(Op::Ne, BIG, 0, BIG, false)]
    #[case(Op::Gt, BIG, 0, BIG + 1, true)]
    #[case(Op::Gt, BIG, 0, BIG, false)]
    #[case(Op::Gt, BIG, 0, 0x2_0000_0000, true)]
    #[case(Op::Ge, BIG, 0, BIG, true)]
    #[case(Op::Ge, BIG, 0, 6, false)]
    #[case(Op::Lt, BIG, 0, 6, true)]
    #[case(Op::Lt, BIG, 0, BIG, false)]
    #[case(Op::Le, BIG, 0, BIG, true)]
    #[case(Op::Le, BIG, 0, BIG + 1, false)]
    #[case(Op::MaskedEq, 0x1_0000_00f0, 0x1_0000_0010, 0x1_0000_0017, true)]
    #[case(Op::MaskedEq, 0x1_0000_00f0, 0x1_0000_0010, 0x0_0000_0017, false)]
    fn comparisons_hold_as_64_bit_ones(
        #[case] op: Op,
        #[case] value: u64,
        #[case] value_two: u64,
        #[case] arg: u64,
        #[case] matches: bool,
    ) {
        let prog = compile(&profile(op, value, value_two)).expect("compiles");
        let got = run(
            &prog,
            libc::SYS_personality as u32,
            AUDIT_ARCH_X86_64,
            [0, arg, 0, 0, 0, 0],
        );
        let want = if matches {
            Action::Errno(1).ret()
        } else {
            Action::Allow.ret()
        };
        assert_eq!(got, want);
    }

    #[test]
    fn the_default_profile_denies_its_calls_and_guards_other_abis() {
        let prog = compile(&Profile::kcell_default(true)).expect("compiles");
        let x86 = |nr: i64, a0: u64| run(&prog, nr as u32, AUDIT_ARCH_X86_64, [a0, 0, 0, 0, 0, 0]);
        let eperm = Action::Errno(libc::EPERM as u16).ret();
        assert_eq!(x86(libc::SYS_keyctl, 0), eperm);
        assert_eq!(x86(libc::SYS_getpid, 0), Action::Allow.ret());
        assert_eq!(x86(libc::SYS_unshare, libc::CLONE_NEWUSER as u64), eperm);
        assert_eq!(
            x86(libc::SYS_unshare, libc::CLONE_NEWNS as u64),
            Action::Allow.ret()
        );
        assert_eq!(
            x86(libc::SYS_clone3, 0),
            Action::Errno(libc::ENOSYS as u16).ret()
        );
        // x32: bit 30 set; i386 and others: killed.
        assert_eq!(x86(libc::SYS_getpid | 0x4000_0000, 0), eperm);
        assert_eq!(
            run(&prog, 20, AUDIT_ARCH_I386, [0; 6]),
            Action::KillProcess.ret()
        );
        assert_eq!(
            run(&prog, 20, 0xc000_00b7, [0; 6]),
            Action::KillProcess.ret()
        );
    }

    #[rstest]
    #[case::allowed_by_name(libc::SYS_read, Action::Allow)]
    #[case::older_and_unnamed(libc::SYS_mount, Action::Errno(libc::EPERM as u16))]
    #[case::newer_than_the_profile(libc::SYS_clone3, Action::Errno(libc::ENOSYS as u16))]
    fn calls_newer_than_a_deny_by_default_profile_get_enosys(
        #[case] nr: i64,
        #[case] want: Action,
    ) {
        let p = Profile {
            default_action: Action::Errno(libc::EPERM as u16),
            architectures: Vec::new(),
            rules: vec![Rule {
                syscalls: vec![libc::SYS_read, libc::SYS_statx],
                action: Action::Allow,
                args: Vec::new(),
            }],
            flags: 0,
        };
        let prog = compile(&p).expect("compiles");
        assert_eq!(run(&prog, nr as u32, AUDIT_ARCH_X86_64, [0; 6]), want.ret());
        // A default that lets calls run has no such stub.
        let allow = Profile {
            default_action: Action::Log,
            ..p
        };
        let prog = compile(&allow).expect("compiles");
        assert_eq!(
            run(&prog, libc::SYS_clone3 as u32, AUDIT_ARCH_X86_64, [0; 6]),
            Action::Log.ret()
        );
    }

    #[test]
    fn oversized_and_bad_profiles_are_refused() {
        let mut p = profile(Op::Eq, 1, 0);
        p.rules[0].args[0].index = 6;
        assert_eq!(compile(&p), Err(CompileError::ArgIndex(6)));
        let p = Profile {
            default_action: Action::Allow,
            architectures: Vec::new(),
            rules: vec![Rule {
                syscalls: (0..3000).collect(),
                action: Action::Log,
                args: Vec::new(),
            }],
            flags: 0,
        };
        assert!(matches!(compile(&p), Err(CompileError::TooLong(_))));
    }
}
