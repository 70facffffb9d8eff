//! The OCI `linux.seccomp` section compiled to a classic BPF program, as libseccomp would, with
//! no C library: an architecture check, then for each rule and each of its system calls
//! `if nr == N [&& the argument conditions] return ACTION`, then the default action.
//!
//! Layout (every conditional jump is short: cBPF's `jt`/`jf` are 8 bits, so long distances go
//! through `ja`, whose offset is 32 bits):
//!
//! ```text
//!   ld arch; jeq X86_64 ? ja L64 ; jeq I386 ? ja L32 ; ret KILL_PROCESS   (arch not listed)
//!   L64: ld nr; [jge X32_BIT ? ja LX32]; rules over x86_64 numbers; ret DEFAULT
//!   LX32: rules over x32 numbers; ret DEFAULT
//!   L32: ld nr; rules over i386 numbers; ret DEFAULT
//! ```
//!
//! A rule's block for one call is `jeq nr, 0, skip; [ld arg; cmp …]; ret ACTION; [ld nr]`: a
//! failed argument check lands on the `ld nr` that restores the accumulator for the next block.
//! Names the architecture does not have are skipped (as libseccomp does). Compiling is cheap,
//! but [`load`] still caches the program under the runtime's state keyed by the profile's
//! SHA-256, so a container start reads one small file instead.

use std::path::Path;

use oci_spec::runtime::{Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator};

use crate::error::{Error, ErrorKind, Result};

const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const JMP_JA: u16 = 0x05; // BPF_JMP | BPF_JA
const JMP_JEQ_K: u16 = 0x15;
const JMP_JGT_K: u16 = 0x25;
const JMP_JGE_K: u16 = 0x35;
const ALU_AND_K: u16 = 0x54;
const RET_K: u16 = 0x06;

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const AUDIT_ARCH_I386: u32 = 0x4000_0003;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const RET_KILL_PROCESS: u32 = 0x8000_0000;

const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
fn off_arg(i: usize, high: bool) -> u32 {
    16 + 8 * i as u32 + if high { 4 } else { 0 }
}

fn ins(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> Result<u32> {
    if a == LinuxSeccompAction::ScmpActNotify {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            "seccomp SCMP_ACT_NOTIFY is not supported by the builtin runtime",
        ));
    }
    Ok(a.as_u32(errno))
}

fn lookup(table: &[(&str, u32)], name: &str) -> Option<u32> {
    table.binary_search_by(|(n, _)| n.cmp(&name)).ok().map(|i| table[i].1)
}

/// The rules of `profile` over one architecture's numbers (`table`: name → number, the x32
/// bit included for x32), ending with the default action.
fn section(profile: &LinuxSeccomp, table: &[(&str, u32)], default: u32) -> Result<Vec<libc::sock_filter>> {
    let mut out = Vec::new();
    for rule in profile.syscalls().as_deref().unwrap_or_default() {
        let act = action(rule.action(), rule.errno_ret())?;
        let args = rule.args().as_deref().unwrap_or_default();
        for name in rule.names() {
            let Some(nr) = lookup(table, name) else { continue };
            let mut block = Vec::new();
            // Checks jump to `fail` (patched below) when an argument does not match.
            let mut fails: Vec<Fail> = Vec::new();
            for a in args {
                if a.index() > 5 {
                    return Err(Error::invalid(format!(
                        "seccomp rule for {name}: argument index {} out of range",
                        a.index()
                    )));
                }
                arg_check(&mut block, &mut fails, a.index(), a.op(), a.value(), a.value_two().unwrap_or(0));
            }
            block.push(ins(RET_K, 0, 0, act));
            let fail_at = block.len();
            if !args.is_empty() {
                block.push(ins(LD_W_ABS, 0, 0, OFF_NR));
            }
            for f in fails {
                let (i, on_true) = match f {
                    Fail::OnTrue(i) => (i, true),
                    Fail::OnFalse(i) => (i, false),
                };
                let d = u8::try_from(fail_at - i - 1)
                    .map_err(|_| Error::invalid("seccomp rule has too many argument checks"))?;
                if on_true {
                    block[i].jt = d;
                } else {
                    block[i].jf = d;
                }
            }
            // Not this call: skip the whole block (past the `ld nr`, the accumulator is still nr).
            let skip = u8::try_from(block.len()).map_err(|_| Error::invalid("seccomp rule too long"))?;
            out.push(ins(JMP_JEQ_K, 0, skip, nr));
            out.extend(block);
        }
    }
    out.push(ins(RET_K, 0, 0, default));
    Ok(out)
}

/// A conditional jump in an argument check whose branch (true or false) means "no match",
/// patched to the end of the block once its length is known.
enum Fail {
    OnTrue(usize),
    OnFalse(usize),
}

/// Appends the test of argument `i` against `op`, comparing the high then the low 32-bit word
/// (unsigned, as libseccomp); a matching argument falls through to the next instruction.
fn arg_check(
    b: &mut Vec<libc::sock_filter>,
    fails: &mut Vec<Fail>,
    i: usize,
    op: LinuxSeccompOperator,
    value: u64,
    two: u64,
) {
    use LinuxSeccompOperator as Op;
    let (hi, lo) = ((value >> 32) as u32, value as u32);
    let ld = |b: &mut Vec<libc::sock_filter>, high: bool| b.push(ins(LD_W_ABS, 0, 0, off_arg(i, high)));
    match op {
        Op::ScmpCmpEq | Op::ScmpCmpMaskedEq => {
            // MASKED_EQ: (arg & value) == valueTwo; EQ: arg == value.
            let (mask, want) = if op == Op::ScmpCmpMaskedEq { (value, two) } else { (u64::MAX, value) };
            for high in [true, false] {
                let (m, w) = if high { ((mask >> 32) as u32, (want >> 32) as u32) } else { (mask as u32, want as u32) };
                ld(b, high);
                if m != u32::MAX {
                    b.push(ins(ALU_AND_K, 0, 0, m));
                }
                fails.push(Fail::OnFalse(b.len()));
                b.push(ins(JMP_JEQ_K, 0, 0, w));
            }
        }
        Op::ScmpCmpNe => {
            // A different high word matches at once (skip the low test); else the low word decides.
            ld(b, true);
            b.push(ins(JMP_JEQ_K, 0, 2, hi));
            ld(b, false);
            fails.push(Fail::OnTrue(b.len()));
            b.push(ins(JMP_JEQ_K, 0, 0, lo));
        }
        Op::ScmpCmpGt | Op::ScmpCmpGe => {
            // hi > H: match (skip jeq, ld, cmp); hi == H: the low word decides; else no match.
            let lo_code = if op == Op::ScmpCmpGt { JMP_JGT_K } else { JMP_JGE_K };
            ld(b, true);
            b.push(ins(JMP_JGT_K, 3, 0, hi));
            fails.push(Fail::OnFalse(b.len()));
            b.push(ins(JMP_JEQ_K, 0, 0, hi));
            ld(b, false);
            fails.push(Fail::OnFalse(b.len()));
            b.push(ins(lo_code, 0, 0, lo));
        }
        Op::ScmpCmpLt | Op::ScmpCmpLe => {
            // The negation of GE / GT: hi > H fails; hi < H matches; hi == H: lo decides.
            let lo_code = if op == Op::ScmpCmpLt { JMP_JGE_K } else { JMP_JGT_K };
            ld(b, true);
            fails.push(Fail::OnTrue(b.len()));
            b.push(ins(JMP_JGT_K, 0, 0, hi));
            b.push(ins(JMP_JEQ_K, 0, 2, hi));
            ld(b, false);
            fails.push(Fail::OnTrue(b.len()));
            b.push(ins(lo_code, 0, 0, lo));
        }
    }
}

/// Compiles `profile` for this machine's architecture family.
pub fn compile(profile: &LinuxSeccomp) -> Result<Vec<libc::sock_filter>> {
    if !cfg!(target_arch = "x86_64") {
        return Err(Error::new(
            ErrorKind::Runtime,
            "the builtin runtime's seccomp compiler knows x86 system calls only",
        ));
    }
    if profile.flags().as_ref().is_some_and(|f| !f.is_empty()) || profile.listener_path().is_some() {
        return Err(Error::invalid("seccomp flags and listeners are not supported by the builtin runtime"));
    }
    let default = action(profile.default_action(), profile.default_errno_ret())?;
    let archs = profile.architectures().clone().unwrap_or_default();
    let has = |a: Arch| archs.is_empty() || archs.contains(&a) || archs.contains(&Arch::ScmpArchNative);
    let x64 = section(profile, super::syscall_table::X86_64, default)?;
    let x32 = if archs.contains(&Arch::ScmpArchX32) {
        section(profile, super::syscall_table::X32, default)?
    } else {
        Vec::new()
    };
    let i386 = if archs.contains(&Arch::ScmpArchX86) {
        section(profile, super::syscall_table::I386, default)?
    } else {
        Vec::new()
    };
    let mut p = vec![ins(LD_W_ABS, 0, 0, OFF_ARCH)];
    // Header: [jeq X86_64,0,1; ja L64]? [jeq I386,0,1; ja L32]? ret KILL; then sections.
    let header_len = 1 + if has(Arch::ScmpArchX86_64) { 2 } else { 0 } + if i386.is_empty() { 0 } else { 2 } + 1;
    let l64 = header_len;
    let l64_len = if has(Arch::ScmpArchX86_64) { 1 + if x32.is_empty() { 0 } else { 2 } + x64.len() } else { 0 };
    let lx32 = l64 + l64_len;
    let l32 = lx32 + x32.len();
    if has(Arch::ScmpArchX86_64) {
        p.push(ins(JMP_JEQ_K, 0, 1, AUDIT_ARCH_X86_64));
        p.push(ins(JMP_JA, 0, 0, (l64 - p.len() - 1) as u32));
    }
    if !i386.is_empty() {
        p.push(ins(JMP_JEQ_K, 0, 1, AUDIT_ARCH_I386));
        p.push(ins(JMP_JA, 0, 0, (l32 - p.len() - 1) as u32));
    }
    p.push(ins(RET_K, 0, 0, RET_KILL_PROCESS));
    if has(Arch::ScmpArchX86_64) {
        p.push(ins(LD_W_ABS, 0, 0, OFF_NR));
        if !x32.is_empty() {
            p.push(ins(JMP_JGE_K, 0, 1, X32_SYSCALL_BIT));
            p.push(ins(JMP_JA, 0, 0, (lx32 - p.len() - 1) as u32));
        }
        p.extend(x64);
        if !x32.is_empty() {
            // The x32 section starts with the accumulator holding nr (loaded above).
            p.extend(x32);
        }
    }
    if !i386.is_empty() {
        p.push(ins(LD_W_ABS, 0, 0, OFF_NR));
        p.extend(i386);
    }
    if p.len() > 4096 {
        return Err(Error::invalid(format!(
            "the seccomp profile compiles to {} instructions, over the kernel's 4096",
            p.len()
        )));
    }
    Ok(p)
}

/// The profile's program: read from `cache/<sha256 of the profile>.bpf`, or compiled and
/// written there (atomically; a failure to cache is not an error).
pub fn load(profile: &LinuxSeccomp, cache: &Path) -> Result<Vec<libc::sock_filter>> {
    let json = serde_json::to_vec(profile)
        .map_err(|e| Error::new(ErrorKind::Runtime, "cannot encode seccomp").with_source(e))?;
    // The key covers the compiler too: a new layout gets new files.
    let mut keyed = b"strata-bpf-1\0".to_vec();
    keyed.extend_from_slice(&json);
    let digest = strata_store::digest::sha256(&keyed);
    let path = cache.join(format!("{}.bpf", strata_store::digest::hex(&digest).unwrap_or("x")));
    if let Ok(bytes) = std::fs::read(&path) {
        if bytes.len() % 8 == 0 && !bytes.is_empty() {
            return Ok(bytes
                .chunks_exact(8)
                .map(|c| {
                    ins(u16::from_ne_bytes([c[0], c[1]]), c[2], c[3], u32::from_ne_bytes([c[4], c[5], c[6], c[7]]))
                })
                .collect());
        }
    }
    let prog = compile(profile)?;
    let mut bytes = Vec::with_capacity(prog.len() * 8);
    for f in &prog {
        bytes.extend_from_slice(&f.code.to_ne_bytes());
        bytes.push(f.jt);
        bytes.push(f.jf);
        bytes.extend_from_slice(&f.k.to_ne_bytes());
    }
    if std::fs::create_dir_all(cache).is_ok() {
        let tmp = cache.join(format!(".{}.tmp", std::process::id()));
        if std::fs::write(&tmp, &bytes).is_ok() {
            let _ = std::fs::rename(&tmp, &path);
        }
    }
    Ok(prog)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `prog` over a seccomp_data as the kernel would (enough of cBPF for our output).
    fn eval(prog: &[libc::sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let mut data = Vec::new();
        data.extend_from_slice(&nr.to_ne_bytes());
        data.extend_from_slice(&arch.to_ne_bytes());
        data.extend_from_slice(&0u64.to_ne_bytes());
        for a in args {
            data.extend_from_slice(&a.to_ne_bytes());
        }
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let f = prog[pc];
            pc += 1;
            match f.code {
                LD_W_ABS => {
                    let k = f.k as usize;
                    acc = u32::from_ne_bytes(data[k..k + 4].try_into().unwrap());
                }
                ALU_AND_K => acc &= f.k,
                JMP_JA => pc += f.k as usize,
                JMP_JEQ_K | JMP_JGT_K | JMP_JGE_K => {
                    let t = match f.code {
                        JMP_JEQ_K => acc == f.k,
                        JMP_JGT_K => acc > f.k,
                        _ => acc >= f.k,
                    };
                    pc += if t { f.jt } else { f.jf } as usize;
                }
                RET_K => return f.k,
                c => panic!("unknown opcode {c:#x}"),
            }
        }
    }

    fn profile(v: serde_json::Value) -> LinuxSeccomp {
        serde_json::from_value(v).unwrap()
    }

    const ALLOW: u32 = 0x7fff_0000;
    const EPERM: u32 = 0x0005_0001;

    #[test]
    fn docker_profile_allows_and_denies() {
        let caps = [oci_spec::runtime::Capability::Chown];
        let p = crate::seccomp::default_profile(&caps).unwrap();
        let prog = compile(&p).unwrap();
        let x64 = AUDIT_ARCH_X86_64;
        assert_eq!(eval(&prog, x64, 0, [0; 6]), ALLOW, "read");
        assert_eq!(eval(&prog, x64, 59, [0; 6]), ALLOW, "execve");
        assert_eq!(eval(&prog, x64, 165, [0; 6]), EPERM, "mount needs CAP_SYS_ADMIN");
        // clone without namespace flags is allowed; with CLONE_NEWUSER it is not.
        assert_eq!(eval(&prog, x64, 56, [0x0100_0011, 0, 0, 0, 0, 0]), ALLOW);
        assert_eq!(eval(&prog, x64, 56, [0x1000_0000, 0, 0, 0, 0, 0]), EPERM);
        assert_eq!(eval(&prog, x64, 435, [0; 6]), 0x0005_0000 | 38, "clone3 answers ENOSYS");
        // i386 and x32 have their own numbers.
        assert_eq!(eval(&prog, AUDIT_ARCH_I386, 3, [0; 6]), ALLOW, "i386 read");
        assert_eq!(eval(&prog, AUDIT_ARCH_I386, 21, [0; 6]), EPERM, "i386 mount");
        assert_eq!(eval(&prog, x64, X32_SYSCALL_BIT, [0; 6]), ALLOW, "x32 read");
        assert_eq!(eval(&prog, x64, X32_SYSCALL_BIT + 165, [0; 6]), EPERM, "x32 mount");
        // Another architecture is killed.
        assert_eq!(eval(&prog, 0xc000_00b7, 0, [0; 6]), RET_KILL_PROCESS);
    }

    #[test]
    fn argument_operators() {
        let rule = |op: &str, value: u64, two: u64| {
            profile(serde_json::json!({
                "defaultAction": "SCMP_ACT_ERRNO",
                "architectures": ["SCMP_ARCH_X86_64"],
                "syscalls": [{"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                              "args": [{"index": 1, "value": value, "valueTwo": two, "op": op}]}]
            }))
        };
        let x64 = AUDIT_ARCH_X86_64;
        let big = 0x1_0000_0005u64;
        let cases: &[(&str, u64, u64, u64, bool)] = &[
            ("SCMP_CMP_EQ", 8, 0, 8, true),
            ("SCMP_CMP_EQ", 8, 0, 9, false),
            ("SCMP_CMP_EQ", big, 0, 5, false),
            ("SCMP_CMP_NE", 8, 0, 9, true),
            ("SCMP_CMP_NE", 8, 0, 8, false),
            ("SCMP_CMP_NE", big, 0, 5, true),
            ("SCMP_CMP_MASKED_EQ", 0xff, 0x08, 0x1208, true),
            ("SCMP_CMP_MASKED_EQ", 0xff, 0x08, 0x1209, false),
            ("SCMP_CMP_GT", 8, 0, 9, true),
            ("SCMP_CMP_GT", 8, 0, 8, false),
            ("SCMP_CMP_GT", 8, 0, big, true),
            ("SCMP_CMP_GE", 8, 0, 8, true),
            ("SCMP_CMP_GE", 8, 0, 7, false),
            ("SCMP_CMP_LT", 8, 0, 7, true),
            ("SCMP_CMP_LT", 8, 0, 8, false),
            ("SCMP_CMP_LT", big, 0, 6, true),
            ("SCMP_CMP_LE", 8, 0, 8, true),
            ("SCMP_CMP_LE", 8, 0, 9, false),
            ("SCMP_CMP_LE", 8, 0, big, false),
        ];
        for &(op, value, two, arg, allowed) in cases {
            let prog = compile(&rule(op, value, two)).unwrap();
            let got = eval(&prog, x64, 135, [0, arg, 0, 0, 0, 0]);
            assert_eq!(got == ALLOW, allowed, "{op} {value:#x} against {arg:#x}");
            // Another call is not affected by the rule.
            assert_eq!(eval(&prog, x64, 0, [0, arg, 0, 0, 0, 0]), EPERM);
        }
    }

    #[test]
    fn cache_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let p = crate::seccomp::default_profile(&[]).unwrap();
        let a = load(&p, dir.path()).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let b = load(&p, dir.path()).unwrap();
        assert_eq!(a.len(), b.len());
        assert!(a.iter().zip(&b).all(|(x, y)| (x.code, x.jt, x.jf, x.k) == (y.code, y.jt, y.jf, y.k)));
    }
}
