//! cgroup v2 device control: v2 has no devices.allow/deny files; a
//! BPF_PROG_TYPE_CGROUP_DEVICE program attached to the container's cgroup
//! decides each open and mknod of a device node (Linux 4.15), as runc and
//! crun do. The program is generated here from the effective rule list
//! ([`super::devices::effective`]): the rules are tested last one first
//! (the last match wins), then the default.
//!
//! Hand-written rather than through a BPF crate: the program is a dozen
//! instructions of five kinds, the crates of the field (aya, libbpf-rs)
//! bring an ELF loader or libbpf (C) to a static binary for that, and the
//! encoding is pinned by unit tests against the kernel's uapi values.

use super::devices::{access_bits, Effective, Rule};
use crate::sys::{SysContext, SysError};
use nix::errno::Errno;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// One eBPF instruction (struct bpf_insn).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Insn {
    code: u8,
    /// dst in the low nibble, src in the high one.
    regs: u8,
    off: i16,
    imm: i32,
}

// Opcodes (linux/bpf.h, bpf_common.h).
const LDX_W_MEM: u8 = 0x61;
const ALU32_AND_K: u8 = 0x54;
const ALU32_RSH_K: u8 = 0x74;
const ALU32_MOV_X: u8 = 0xbc;
const ALU32_MOV_K: u8 = 0xb4;
const JMP_JNE_K: u8 = 0x55;
const JMP_JNE_X: u8 = 0x5d;
const EXIT: u8 = 0x95;

const BPF_DEVCG_DEV_BLOCK: i32 = 1;
const BPF_DEVCG_DEV_CHAR: i32 = 2;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | (dst & 0x0f),
        off,
        imm,
    }
}

/// The instructions of one rule's test; the jumps skip to the next rule.
fn rule_block(r: &Rule) -> Vec<Insn> {
    // Each check is a jump to the end of the block when it fails; the
    // offsets are patched once the block's length is known.
    let mut checks: Vec<Vec<Insn>> = Vec::new();
    match r.kind {
        'c' => checks.push(vec![insn(JMP_JNE_K, 2, 0, 0, BPF_DEVCG_DEV_CHAR)]),
        'b' => checks.push(vec![insn(JMP_JNE_K, 2, 0, 0, BPF_DEVCG_DEV_BLOCK)]),
        _ => {}
    }
    let access = access_bits(&r.access) as i32;
    if access != 7 {
        // (requested & allowed) != requested: the request asks for more.
        checks.push(vec![
            insn(ALU32_MOV_X, 1, 3, 0, 0),
            insn(ALU32_AND_K, 1, 0, 0, access),
            insn(JMP_JNE_X, 1, 3, 0, 0),
        ]);
    }
    if let Some(major) = r.major {
        checks.push(vec![insn(JMP_JNE_K, 4, 0, 0, major as i32)]);
    }
    if let Some(minor) = r.minor {
        checks.push(vec![insn(JMP_JNE_K, 5, 0, 0, minor as i32)]);
    }
    let body = [
        insn(ALU32_MOV_K, 0, 0, 0, i32::from(r.allow)),
        insn(EXIT, 0, 0, 0, 0),
    ];
    let total: usize = checks.iter().map(Vec::len).sum::<usize>() + body.len();
    let mut out = Vec::with_capacity(total);
    for check in checks {
        for mut i in check {
            if i.code == JMP_JNE_K || i.code == JMP_JNE_X {
                // To the first instruction after this block.
                i.off = (total - out.len() - 1) as i16;
            }
            out.push(i);
        }
    }
    out.extend(body);
    out
}

/// The whole program for an effective rule list.
pub fn program(e: &Effective) -> Vec<Insn> {
    let mut p = vec![
        // r2 = device type, r3 = requested access, r4 = major, r5 = minor
        insn(LDX_W_MEM, 2, 1, 0, 0),
        insn(ALU32_AND_K, 2, 0, 0, 0xffff),
        insn(LDX_W_MEM, 3, 1, 0, 0),
        insn(ALU32_RSH_K, 3, 0, 0, 16),
        insn(LDX_W_MEM, 4, 1, 4, 0),
        insn(LDX_W_MEM, 5, 1, 8, 0),
    ];
    for r in e.rules.iter().rev() {
        p.extend(rule_block(r));
    }
    p.push(insn(ALU32_MOV_K, 0, 0, 0, i32::from(e.default_allow)));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
}

/// bpf(2) with an attribute block of `N` bytes.
fn bpf<const N: usize>(cmd: libc::c_long, attr: &mut [u8; N]) -> nix::Result<i64> {
    // SAFETY: attr is a zero-initialised, correctly sized union bpf_attr
    // prefix; the kernel reads (and for some commands writes) only N bytes.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), N as libc::c_uint) };
    Errno::result(rc)
}

fn put_u32(attr: &mut [u8], at: usize, v: u32) {
    attr[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put_u64(attr: &mut [u8], at: usize, v: u64) {
    attr[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}

/// Loads the program for `e` and attaches it to the cgroup directory `dir`
/// (BPF_F_ALLOW_MULTI: every program up the tree must allow). The cgroup
/// holds it from then on; its rmdir releases it.
pub fn attach_device_filter(dir: &Path, e: &Effective) -> Result<(), SysError> {
    let insns = program(e);
    let license = c"Apache";
    let mut log = vec![0u8; 64 * 1024];
    // PROG_LOAD: prog_type @0, insn_cnt @4, insns @8, license @16,
    // log_level @24, log_size @28, log_buf @32.
    let mut attr = [0u8; 48];
    put_u32(&mut attr, 0, BPF_PROG_TYPE_CGROUP_DEVICE);
    put_u32(&mut attr, 4, insns.len() as u32);
    put_u64(&mut attr, 8, insns.as_ptr() as u64);
    put_u64(&mut attr, 16, license.as_ptr() as u64);
    put_u32(&mut attr, 24, 1);
    put_u32(&mut attr, 28, log.len() as u32);
    put_u64(&mut attr, 32, log.as_mut_ptr() as u64);
    let prog = bpf(BPF_PROG_LOAD, &mut attr).map_err(|errno| {
        let text = String::from_utf8_lossy(&log);
        let text = text.trim_end_matches('\0').trim();
        SysError {
            call: "bpf BPF_PROG_LOAD",
            subject: format!(
                "cgroup device program of {} rules{}",
                e.rules.len(),
                if text.is_empty() {
                    String::new()
                } else {
                    format!(" (verifier: {})", text.lines().last().unwrap_or(""))
                }
            ),
            errno,
        }
    })?;
    // SAFETY: BPF_PROG_LOAD returned a new descriptor owned by us.
    let prog = unsafe { OwnedFd::from_raw_fd(prog as i32) };
    let cgroup = std::fs::File::open(dir).sys("open", dir.display())?;
    // PROG_ATTACH: target_fd @0, attach_bpf_fd @4, attach_type @8, attach_flags @12.
    let mut attr = [0u8; 20];
    put_u32(&mut attr, 0, cgroup.as_raw_fd() as u32);
    put_u32(&mut attr, 4, prog.as_raw_fd() as u32);
    put_u32(&mut attr, 8, BPF_CGROUP_DEVICE);
    put_u32(&mut attr, 12, BPF_F_ALLOW_MULTI);
    bpf(BPF_PROG_ATTACH, &mut attr).map(|_| ()).sys(
        "bpf BPF_PROG_ATTACH",
        format!("device program to {}", dir.display()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(i: &Insn) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = i.code;
        b[1] = i.regs;
        b[2..4].copy_from_slice(&i.off.to_le_bytes());
        b[4..8].copy_from_slice(&i.imm.to_le_bytes());
        b
    }

    #[test]
    fn encoding_matches_the_kernels_layout() {
        assert_eq!(std::mem::size_of::<Insn>(), 8);
        // ldxw r2, [r1+4] = 61 12 04 00 00 00 00 00
        assert_eq!(
            bytes(&insn(LDX_W_MEM, 2, 1, 4, 0)),
            [0x61, 0x12, 4, 0, 0, 0, 0, 0]
        );
        // jne r1, r3, -2 = 5d 31 fe ff ...
        assert_eq!(
            bytes(&insn(JMP_JNE_X, 1, 3, -2, 0x1234_5678)),
            [0x5d, 0x31, 0xfe, 0xff, 0x78, 0x56, 0x34, 0x12]
        );
    }

    #[test]
    fn each_failed_check_jumps_past_its_rule() {
        let r = Rule::parse("c 1:3 rw", false).expect("rule");
        let block = rule_block(&r);
        // type, (mov, and, jne) access, major, minor, mov r0, exit
        assert_eq!(block.len(), 8);
        for (i, ins) in block.iter().enumerate() {
            if ins.code == JMP_JNE_K || ins.code == JMP_JNE_X {
                assert_eq!(i as i16 + 1 + ins.off, block.len() as i16, "jump at {i}");
            }
        }
        assert_eq!(block[block.len() - 2].imm, 0, "a deny rule returns 0");
    }

    #[test]
    fn rules_are_tested_last_first_then_the_default() {
        let e = Effective {
            default_allow: false,
            rules: vec![
                Rule::parse("c 1:3 rwm", true).expect("rule"),
                Rule::parse("c 1:5 rwm", true).expect("rule"),
            ],
        };
        let p = program(&e);
        // Prologue 6; each rwm rule: type, major, minor, mov, exit = 5.
        assert_eq!(p.len(), 6 + 5 + 5 + 2);
        assert_eq!(p[8].imm, 5, "the last rule's minor is tested first");
        assert_eq!(p[p.len() - 2].imm, 0, "default deny");
        assert_eq!(p[p.len() - 1].code, EXIT);
    }
}
