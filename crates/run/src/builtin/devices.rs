//! The container's device rules as an eBPF program, for cgroup v2 (which has no
//! `devices.allow`/`devices.deny` files): the OCI `linux.resources.devices` list compiled to a
//! `BPF_PROG_TYPE_CGROUP_DEVICE` program, loaded with bpf(2) and attached to the container's
//! group, as runc (`libcontainer/cgroups/devices/devicefilter.go`) and crun (`ebpf.c`) do, with
//! no libbpf. The kernel runs the programs attached to a process's group and its ancestors
//! before every mknod(2) of a device node and every open(2) of one, and refuses with EPERM
//! when one of them returns 0. [`super::cgroups`] decides where the program goes.
//!
//! # What a list means
//!
//! A rule matches a device by type (`a` or none: block and char alike; `u` is `c`), major and
//! minor (absent or negative, runc's -1: any). The last matching rule decides, for each access
//! a request asks for (an `O_RDWR` open asks read and write at once, and both must be
//! allowed); nothing matching means denied. The v1 controller answers the same for docker's
//! list with the runtime's defaults, for `allow a` followed by denies, and for any list
//! without the three shapes it reads otherwise (a unit test compares both on a grid): v1
//! keeps exceptions to a default and removes one only by an exact match, so a later `deny c
//! 1:3` does not narrow an earlier `allow c 1:*` (runc refuses that list; here the later rule
//! wins, as the list says); one v1 allow must cover all the accesses of a request by itself;
//! and any `a` rule resets v1's list, whatever its numbers. runc's program asks whether a
//! rule's access covers the whole request, denies too, so under `allow a` it lets an
//! `O_RDWR` open through a `deny c 1:3 w`; deciding each access on its own does not.
//!
//! # The program
//!
//! `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }` arrives in r1, with
//! `access_type = access << 16 | type` (`BPF_DEVCG_ACC_MKNOD` 1, `_READ` 2, `_WRITE` 4;
//! `BPF_DEVCG_DEV_BLOCK` 1, `_CHAR` 2). r3 holds the accesses not decided yet; the rules are
//! tested from the last one up, each block jumping to the next on a mismatch:
//!
//! ```text
//!   r2 = type   r3 = access   r4 = major   r5 = minor
//!   per rule:  if r2 != TYPE goto next; if r4 != MAJOR goto next; if r5 != MINOR goto next
//!     allow:   w3 &= ~ACCESS; if r3 != 0 goto next; return 1    (rwm: return 1)
//!     deny:    w1 = w3 & ACCESS; if r1 == 0 goto next; return 0  (rwm: return 0)
//!   return 0
//! ```
//!
//! A wildcard's test is left out; a rule matching everything (`a *:* rwm`) decides whatever
//! reaches it, so it becomes the final return and the rules before it are dropped. docker's
//! list (deny `a`, allow null, zero, random, urandom, tty, console, deny fuse) with the
//! runtime's defaults after it (see `cgroups::device_rules`) compiles to 67 instructions:
//!
//! ```text
//!    0: r2 = *(u32 *)(r1 + 0)        6: if r2 != 2 goto +4     allow c 5:2 rwm, the last rule
//!    1: w2 &= 0xffff                 7: if r4 != 5 goto +3
//!    2: r3 = *(u32 *)(r1 + 0)        8: if r5 != 2 goto +2
//!    3: w3 >>= 16                    9: w0 = 1
//!    4: r4 = *(u32 *)(r1 + 4)       10: exit
//!    5: r5 = *(u32 *)(r1 + 8)       11: if r2 != 2 goto +3    allow c 136:* rwm
//!                                    …
//!   20: if r2 != 1 goto +4          allow b *:* m: mknod decided, read and write not
//!   21: w3 &= 0x6
//!   22: if r3 != 0 goto +2
//!   23: w0 = 1
//!   24: exit
//!   …
//!   30: if r2 != 2 goto +4          deny c 10:229 rwm
//!   …
//!   65: w0 = 0                      deny a *:* rwm, the first rule
//!   66: exit
//! ```
//!
//! # Lifecycle
//!
//! [`apply`] compiles, loads (`BPF_PROG_LOAD`; a license matters only to GPL-only helpers,
//! which the program does not call, but the kernel wants a string: a null one is EFAULT), attaches
//! (`BPF_PROG_ATTACH`, `BPF_CGROUP_DEVICE`, `BPF_F_ALLOW_MULTI` as runc: a program an
//! ancestor has, such as systemd's for a unit, still runs, and a device must pass both) and
//! closes the program's descriptor: the attachment holds the program, and removing the group
//! detaches and frees it. A refused program comes back with the verifier's reason. Loading
//! needs CAP_BPF or CAP_SYS_ADMIN; the group is the runtime's own and new, so no earlier
//! program is replaced.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use crate::error::{Error, ErrorKind, Result};

// include/uapi/linux/bpf.h: enum bpf_devcg_* (the encoding of `access_type`).
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;
const ACC_MKNOD: i32 = 1;
const ACC_READ: i32 = 2;
const ACC_WRITE: i32 = 4;
const ACC_ALL: i32 = ACC_MKNOD | ACC_READ | ACC_WRITE;

// Opcodes: class | operation | source. BPF_ALU is the 32-bit class (w registers); a 32-bit
// result clears the upper half, so a later 64-bit compare sees the same value.
const LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const ALU_AND_K: u8 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const ALU_RSH_K: u8 = 0x74; // BPF_ALU | BPF_RSH | BPF_K
const ALU_MOV_K: u8 = 0xb4; // BPF_ALU | BPF_MOV | BPF_K
const ALU_MOV_X: u8 = 0xbc; // BPF_ALU | BPF_MOV | BPF_X
const JMP_JEQ_K: u8 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JMP_JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const JMP_EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R5: u8 = 5;

/// One instruction, laid out as the kernel's `struct bpf_insn`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    code: u8,
    /// `dst_reg:4, src_reg:4`, bit fields allocated from the low bits on little-endian targets.
    regs: u8,
    off: i16,
    imm: i32,
}

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    let regs = if cfg!(target_endian = "little") { src << 4 | dst } else { dst << 4 | src };
    Insn { code, regs, off, imm }
}

/// A rule as the program tests it; `None` is "any".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rule {
    allow: bool,
    typ: Option<i32>,
    major: Option<i32>,
    minor: Option<i32>,
    access: i32,
}

impl Rule {
    fn matches_everything(&self) -> bool {
        self.typ.is_none() && self.major.is_none() && self.minor.is_none() && self.access == ACC_ALL
    }
}

fn rule(d: &LinuxDeviceCgroup) -> Result<Rule> {
    let typ = match d.typ() {
        None | Some(LinuxDeviceType::A) => None,
        Some(LinuxDeviceType::B) => Some(DEV_BLOCK),
        Some(LinuxDeviceType::C | LinuxDeviceType::U) => Some(DEV_CHAR),
        Some(t) => return Err(Error::invalid(format!("device cgroup rule type {:?} is not a, b or c", t.as_str()))),
    };
    // Device numbers are 12 (major) and 20 (minor) bits wide; an immediate is a signed 32-bit
    // value the kernel sign-extends, so anything past i32::MAX could never be compared right.
    let number = |what: &str, n: Option<i64>| match n {
        None => Ok(None),
        Some(n) if n < 0 => Ok(None),
        Some(n) => i32::try_from(n)
            .map(Some)
            .map_err(|_| Error::invalid(format!("device cgroup rule {what} number {n} is out of range"))),
    };
    let access = match d.access().as_deref() {
        None => ACC_ALL,
        Some(s) => s.chars().try_fold(0, |acc, c| match c {
            'r' => Ok(acc | ACC_READ),
            'w' => Ok(acc | ACC_WRITE),
            'm' => Ok(acc | ACC_MKNOD),
            _ => Err(Error::invalid(format!("device cgroup rule access {s:?}: {c:?} is not r, w or m"))),
        })?,
    };
    Ok(Rule { allow: d.allow(), typ, major: number("major", d.major())?, minor: number("minor", d.minor())?, access })
}

/// The instructions of one rule; each conditional jump goes to the instruction after them.
fn block(r: &Rule) -> Vec<Insn> {
    let mut b = Vec::new();
    for (reg, want) in [(R2, r.typ), (R4, r.major), (R5, r.minor)] {
        if let Some(v) = want {
            b.push(insn(JMP_JNE_K, reg, 0, 0, v));
        }
    }
    if r.access != ACC_ALL {
        if r.allow {
            // The accesses it allows are decided; the rest wait for an earlier rule.
            b.push(insn(ALU_AND_K, R3, 0, 0, ACC_ALL & !r.access));
            b.push(insn(JMP_JNE_K, R3, 0, 0, 0));
        } else {
            // Denied if any undecided access is one it denies (r1, the context, is read already).
            b.push(insn(ALU_MOV_X, R1, R3, 0, 0));
            b.push(insn(ALU_AND_K, R1, 0, 0, r.access));
            b.push(insn(JMP_JEQ_K, R1, 0, 0, 0));
        }
    }
    b.push(insn(ALU_MOV_K, R0, 0, 0, i32::from(r.allow)));
    b.push(insn(JMP_EXIT, 0, 0, 0, 0));
    let len = b.len();
    for (i, ins) in b.iter_mut().enumerate() {
        if matches!(ins.code, JMP_JNE_K | JMP_JEQ_K) {
            // At most 8 instructions: the offset always fits.
            ins.off = (len - i - 1) as i16;
        }
    }
    b
}

/// Compiles `rules` (in the spec's order) to a device program; `InvalidArgument` for a rule
/// of another type than a, b, c or u, an access letter other than r, w, m, or a number past
/// 2^31 - 1.
pub fn compile(rules: &[LinuxDeviceCgroup]) -> Result<Vec<Insn>> {
    let rules: Vec<Rule> = rules.iter().map(rule).collect::<Result<_>>()?;
    let mut p = vec![
        insn(LDX_MEM_W, R2, R1, 0, 0),
        insn(ALU_AND_K, R2, 0, 0, 0xffff),
        insn(LDX_MEM_W, R3, R1, 0, 0),
        insn(ALU_RSH_K, R3, 0, 0, 16),
        insn(LDX_MEM_W, R4, R1, 4, 0),
        insn(LDX_MEM_W, R5, R1, 8, 0),
    ];
    let mut otherwise = false;
    for r in rules.iter().rev() {
        if r.matches_everything() {
            otherwise = r.allow;
            break;
        }
        // An empty access string matches no request.
        if r.access != 0 {
            p.extend(block(r));
        }
    }
    p.push(insn(ALU_MOV_K, R0, 0, 0, i32::from(otherwise)));
    p.push(insn(JMP_EXIT, 0, 0, 0, 0));
    Ok(p)
}

// include/uapi/linux/bpf.h: enum bpf_cmd, bpf_prog_type, bpf_attach_type; BPF_F_ALLOW_MULTI.
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 1 << 1;

/// `union bpf_attr` for BPF_PROG_LOAD, up to `expected_attach_type`: the kernel takes a
/// shorter attribute and zero-fills the rest.
#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` for BPF_PROG_ATTACH.
#[repr(C)]
struct ProgAttach {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

/// bpf(2) with `attr`, a `#[repr(C)]` head of `union bpf_attr` for `cmd`.
fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is valid for its size, which we pass; the pointers inside it point at
    // buffers the caller keeps alive across the call.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>() as libc::c_uint) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// The line of a verifier log that says why (the last one is the statistics).
fn verifier_reason(log: &[u8]) -> Option<String> {
    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
    let text = String::from_utf8_lossy(&log[..end]);
    let line = text.lines().rev().map(str::trim).find(|l| !l.is_empty() && !l.starts_with("processed "))?;
    Some(line.chars().take(300).collect())
}

/// Loads `prog` as a device program; the descriptor holds it.
fn load(prog: &[Insn]) -> Result<OwnedFd> {
    const LICENSE: &[u8] = b"Apache-2.0\0";
    let mut name = [0u8; 16];
    name[..14].copy_from_slice(b"strata_devices");
    let mut attr = ProgLoad {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: prog.len() as u32,
        insns: prog.as_ptr() as u64,
        license: LICENSE.as_ptr() as u64,
        prog_name: name,
        ..Default::default()
    };
    let mut result = bpf(BPF_PROG_LOAD, &mut attr);
    let mut reason = None;
    if matches!(&result, Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EACCES))) {
        // The verifier refused it: again with its log, to say why.
        let mut log = vec![0u8; 64 << 10];
        attr.log_level = 1;
        attr.log_size = log.len() as u32;
        attr.log_buf = log.as_mut_ptr() as u64;
        result = bpf(BPF_PROG_LOAD, &mut attr);
        reason = verifier_reason(&log);
    }
    match result {
        // SAFETY: BPF_PROG_LOAD returns a new descriptor, ours.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        Err(e) => {
            let why = match (reason, e.raw_os_error()) {
                (Some(r), _) => format!("; the verifier says: {r}"),
                (None, Some(libc::EPERM)) => "; this needs CAP_BPF or CAP_SYS_ADMIN".to_string(),
                _ => String::new(),
            };
            Err(Error::new(
                ErrorKind::Runtime,
                format!("cannot load the device rules' eBPF program (bpf BPF_PROG_LOAD{why})"),
            )
            .with_source(e))
        }
    }
}

/// Attaches device program `prog` to the cgroup2 group `dir`, after any an ancestor has.
fn attach(dir: &Path, prog: &OwnedFd) -> Result<()> {
    let group =
        std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY).open(dir).map_err(|e| {
            Error::new(ErrorKind::Runtime, format!("cannot open cgroup {}", dir.display())).with_source(e)
        })?;
    let mut attr = ProgAttach {
        target_fd: group.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        replace_bpf_fd: 0,
    };
    bpf(BPF_PROG_ATTACH, &mut attr).map_err(|e| {
        Error::new(
            ErrorKind::Runtime,
            format!("cannot attach the device rules' eBPF program to cgroup {} (bpf BPF_PROG_ATTACH)", dir.display()),
        )
        .with_source(e)
    })?;
    Ok(())
}

/// Compiles `rules`, loads the program and attaches it to the cgroup2 group `dir`, which keeps
/// it until the group is removed.
pub fn apply(dir: &Path, rules: &[LinuxDeviceCgroup]) -> Result<()> {
    let prog = compile(rules)?;
    let fd = load(&prog)?;
    attach(dir, &fd)
}

/// What the kernel tests of this module and of `cgroups` share: a cgroup2 directory to make
/// groups in, and a child that tries device accesses from inside a group.
#[cfg(test)]
pub(crate) mod testing {
    use std::ffi::CString;
    use std::io::Read;
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::path::{Path, PathBuf};

    /// Where to make test groups: the unified hierarchy of a v2 host, or the cgroup2 one a
    /// hybrid host mounts at `unified` (device programs attach to any cgroup2 group). `None`,
    /// and why on stderr, when the test cannot run here.
    pub fn cgroup2_root() -> Option<PathBuf> {
        // SAFETY: no arguments.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: loading and attaching a device program needs root");
            return None;
        }
        let root = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
            .map(PathBuf::from)
            .into_iter()
            .find(|p| super::super::cgroups::is_cgroup2(p));
        if root.is_none() {
            eprintln!("skipped: no cgroup2 hierarchy is mounted at /sys/fs/cgroup or /sys/fs/cgroup/unified");
        }
        root
    }

    /// A test's group, removed (detaching its program) when dropped.
    pub struct Group(pub PathBuf);

    impl Group {
        pub fn new(root: &Path, name: &str) -> Group {
            let dir = root.join(format!("strata-test-{name}-{}", std::process::id()));
            std::fs::create_dir(&dir).unwrap();
            Group(dir)
        }
    }

    impl Drop for Group {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }

    /// A device access to try.
    pub enum Probe {
        /// open(2) with these flags (the descriptor is closed at once).
        Open(CString, libc::c_int),
        /// mknod(2) of a node of this mode and device (removed again when made).
        Mknod(CString, libc::mode_t, libc::dev_t),
    }

    pub fn open(path: &str, flags: libc::c_int) -> Probe {
        Probe::Open(CString::new(path).unwrap(), flags)
    }

    pub fn mknod(path: &Path, kind: libc::mode_t, major: u32, minor: u32) -> Probe {
        let p = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        Probe::Mknod(p, kind | 0o600, libc::makedev(major, minor))
    }

    /// Makes device node `path` from here (outside any test group).
    pub fn make_node(path: &Path, kind: libc::mode_t, major: u32, minor: u32) {
        let p = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path.
        let r = unsafe { libc::mknod(p.as_ptr(), kind | 0o600, libc::makedev(major, minor)) };
        assert_eq!(r, 0, "mknod {}: {}", path.display(), std::io::Error::last_os_error());
    }

    fn pipe() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two descriptors, which we own.
        unsafe {
            assert_eq!(libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC), 0);
            (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
        }
    }

    /// Runs `probes` in a child moved into `group`: for each, 0 when it worked, else its errno.
    pub fn probe(group: &Path, probes: &[Probe]) -> Vec<i32> {
        use std::os::fd::AsRawFd;
        let (go_r, go_w) = pipe();
        let (res_r, res_w) = pipe();
        let mut out = vec![0i32; probes.len()];
        // SAFETY: the child makes raw system calls on memory allocated before the fork, and
        // no allocation or lock, so the other test threads cannot leave it stuck.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            // SAFETY: as above; _exit never returns into the test harness.
            unsafe {
                let mut b = 0u8;
                libc::read(go_r.as_raw_fd(), (&mut b as *mut u8).cast(), 1);
                for (p, o) in probes.iter().zip(out.iter_mut()) {
                    let r = match p {
                        Probe::Open(path, flags) => {
                            let fd = libc::open(path.as_ptr(), flags | libc::O_CLOEXEC);
                            if fd >= 0 {
                                libc::close(fd);
                            }
                            fd
                        }
                        Probe::Mknod(path, mode, dev) => {
                            let r = libc::mknod(path.as_ptr(), *mode, *dev);
                            if r == 0 {
                                libc::unlink(path.as_ptr());
                            }
                            r
                        }
                    };
                    *o = if r < 0 { *libc::__errno_location() } else { 0 };
                }
                libc::write(res_w.as_raw_fd(), out.as_ptr().cast(), out.len() * 4);
                libc::_exit(0);
            }
        }
        drop((go_r, res_w));
        let moved = std::fs::write(group.join("cgroup.procs"), pid.to_string());
        if moved.is_err() {
            // SAFETY: our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        // SAFETY: writes one byte from a valid buffer (the child waits for it).
        unsafe { libc::write(go_w.as_raw_fd(), b"g".as_ptr().cast(), 1) };
        let mut bytes = vec![0u8; out.len() * 4];
        let read = std::fs::File::from(res_r).read_exact(&mut bytes);
        let mut status = 0;
        // SAFETY: waits for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        moved.unwrap_or_else(|e| panic!("cannot move the child into {}: {e}", group.display()));
        read.unwrap();
        bytes.chunks_exact(4).map(|c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]])).collect()
    }

    /// docker's device rules as `strata run` writes them into config.json.
    pub fn docker_rules() -> Vec<oci_spec::runtime::LinuxDeviceCgroup> {
        docker_resources().devices().clone().unwrap()
    }

    /// The `linux.resources` of a plain `strata run IMAGE sh`.
    pub fn docker_resources() -> oci_spec::runtime::LinuxResources {
        let opts = crate::spec::RunOptions { cmd: vec!["sh".to_string()], ..Default::default() };
        let user = crate::spec::User { uid: 0, gid: 0, additional_gids: vec![0], home: None };
        let spec = crate::spec::build_spec(None, &opts, &user, "0123456789ab", Path::new("/run/rootfs"), &[]).unwrap();
        spec.linux().as_ref().unwrap().resources().clone().unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    fn rules(v: serde_json::Value) -> Vec<LinuxDeviceCgroup> {
        serde_json::from_value(v).unwrap()
    }

    /// The effective list for docker's defaults: the spec's rules, then the runtime's.
    fn docker_effective() -> Vec<LinuxDeviceCgroup> {
        super::super::cgroups::device_rules(&docker_rules())
    }

    fn regs(i: &Insn) -> (u8, u8) {
        if cfg!(target_endian = "little") {
            (i.regs & 0xf, i.regs >> 4)
        } else {
            (i.regs >> 4, i.regs & 0xf)
        }
    }

    /// One instruction as the kernel's verifier log prints it (roughly).
    fn text(i: &Insn) -> String {
        let (d, s) = regs(i);
        match i.code {
            LDX_MEM_W => format!("r{d} = *(u32 *)(r{s} + {})", i.off),
            ALU_AND_K => format!("w{d} &= {:#x}", i.imm),
            ALU_RSH_K => format!("w{d} >>= {}", i.imm),
            ALU_MOV_K => format!("w{d} = {}", i.imm),
            ALU_MOV_X => format!("w{d} = w{s}"),
            JMP_JEQ_K => format!("if r{d} == {} goto +{}", i.imm, i.off),
            JMP_JNE_K => format!("if r{d} != {} goto +{}", i.imm, i.off),
            JMP_EXIT => "exit".to_string(),
            c => panic!("unknown opcode {c:#x}"),
        }
    }

    fn listing(p: &[Insn]) -> Vec<String> {
        p.iter().map(text).collect()
    }

    /// Runs `prog` on a context as the kernel would (enough of eBPF for our output: 64-bit
    /// registers, 32-bit ALU results zero-extended, immediates sign-extended in compares).
    fn run(prog: &[Insn], typ: i32, access: i32, major: u32, minor: u32) -> bool {
        let ctx = [(access as u32) << 16 | typ as u32, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        for _ in 0..prog.len() {
            let i = prog[pc];
            let (d, s) = regs(&i);
            let (d, s) = (d as usize, s as usize);
            pc += 1;
            let imm = i.imm as i64 as u64;
            match i.code {
                LDX_MEM_W => {
                    assert_eq!(s, 1, "loads only from the context");
                    r[d] = ctx[i.off as usize / 4] as u64;
                }
                ALU_AND_K => r[d] = (r[d] as u32 & i.imm as u32) as u64,
                ALU_RSH_K => r[d] = ((r[d] as u32) >> i.imm) as u64,
                ALU_MOV_K => r[d] = i.imm as u32 as u64,
                ALU_MOV_X => r[d] = r[s] as u32 as u64,
                JMP_JEQ_K | JMP_JNE_K => {
                    if (r[d] == imm) == (i.code == JMP_JEQ_K) {
                        assert!(i.off > 0, "forward jumps only");
                        pc += i.off as usize;
                    }
                }
                JMP_EXIT => {
                    assert!(r[0] <= 1, "a device program returns 0 or 1");
                    return r[0] == 1;
                }
                c => panic!("unknown opcode {c:#x}"),
            }
        }
        panic!("the program runs off its end")
    }

    /// The meaning the program must have, straight from the list: per requested access, the
    /// last rule that matches the device and names the access decides; none: denied.
    fn oracle(rules: &[LinuxDeviceCgroup], typ: i32, access: i32, major: u32, minor: u32) -> bool {
        [ACC_MKNOD, ACC_READ, ACC_WRITE].iter().filter(|&&a| access & a != 0).all(|&a| {
            rules
                .iter()
                .rev()
                .map(|d| rule(d).unwrap())
                .find(|r| {
                    r.typ.is_none_or(|t| t == typ)
                        && r.major.is_none_or(|m| m as u32 == major)
                        && r.minor.is_none_or(|m| m as u32 == minor)
                        && r.access & a != 0
                })
                .is_some_and(|r| r.allow)
        })
    }

    /// The v1 controller (security/device_cgroup.c): a default and exceptions, changed only
    /// by an exact (type, major, minor) match; an `a` rule resets. A new group starts as its
    /// parent, here the root's "allow all".
    fn v1(rules: &[LinuxDeviceCgroup], typ: i32, access: i32, major: u32, minor: u32) -> bool {
        let mut allow_default = true;
        let mut ex: Vec<Rule> = Vec::new();
        for r in rules.iter().map(|d| rule(d).unwrap()) {
            let Some(t) = r.typ else {
                (allow_default, ex) = (r.allow, Vec::new());
                continue;
            };
            let same = |e: &Rule| e.typ == Some(t) && e.major == r.major && e.minor == r.minor;
            if r.allow == allow_default {
                // dev_exception_rm
                ex.iter_mut().filter(|e| same(e)).for_each(|e| e.access &= !r.access);
                ex.retain(|e| e.access != 0);
            } else if let Some(e) = ex.iter_mut().find(|e| same(e)) {
                e.access |= r.access; // dev_exception_add merges
            } else {
                ex.push(r);
            }
        }
        let hits = |e: &&Rule| {
            e.typ == Some(typ) && e.major.is_none_or(|m| m as u32 == major) && e.minor.is_none_or(|m| m as u32 == minor)
        };
        if allow_default {
            // match_exception_partial: any overlap with a deny exception refuses
            !ex.iter().filter(hits).any(|e| e.access & access != 0)
        } else {
            // match_exception: one allow exception must cover the whole request
            ex.iter().filter(hits).any(|e| access & !e.access == 0)
        }
    }

    /// Every (type, access set, major, minor) of a grid around the numbers the lists use.
    fn grid() -> impl Iterator<Item = (i32, i32, u32, u32)> {
        let (majors, minors) = ([0u32, 1, 5, 7, 10, 136, 4095], [0u32, 1, 2, 3, 5, 7, 229, (1 << 20) - 1]);
        [DEV_BLOCK, DEV_CHAR].into_iter().flat_map(move |t| {
            (1..=ACC_ALL).flat_map(move |a| {
                majors.into_iter().flat_map(move |ma| minors.into_iter().map(move |mi| (t, a, ma, mi)))
            })
        })
    }

    #[test]
    fn docker_rules_compile_to_this_program() {
        let p = compile(&docker_effective()).unwrap();
        let want = [
            "r2 = *(u32 *)(r1 + 0)",
            "w2 &= 0xffff",
            "r3 = *(u32 *)(r1 + 0)",
            "w3 >>= 16",
            "r4 = *(u32 *)(r1 + 4)",
            "r5 = *(u32 *)(r1 + 8)",
            // allow c 5:2 rwm (/dev/ptmx, the runtime's last default)
            "if r2 != 2 goto +4",
            "if r4 != 5 goto +3",
            "if r5 != 2 goto +2",
            "w0 = 1",
            "exit",
            // allow c 136:* rwm (the ptys): no minor test
            "if r2 != 2 goto +3",
            "if r4 != 136 goto +2",
            "w0 = 1",
            "exit",
            // allow c 1:7 rwm (/dev/full)
            "if r2 != 2 goto +4",
            "if r4 != 1 goto +3",
            "if r5 != 7 goto +2",
            "w0 = 1",
            "exit",
            // allow b *:* m: mknod decided, read and write left to earlier rules
            "if r2 != 1 goto +4",
            "w3 &= 0x6",
            "if r3 != 0 goto +2",
            "w0 = 1",
            "exit",
            // allow c *:* m
            "if r2 != 2 goto +4",
            "w3 &= 0x6",
            "if r3 != 0 goto +2",
            "w0 = 1",
            "exit",
            // deny c 10:229 rwm (/dev/fuse), the spec's last rule
            "if r2 != 2 goto +4",
            "if r4 != 10 goto +3",
            "if r5 != 229 goto +2",
            "w0 = 0",
            "exit",
        ];
        let got = listing(&p);
        assert_eq!(got[..want.len()], want);
        // Then allow 5:1, 5:0, 1:8, 1:9, 1:3, 1:5, each like 5:2; the first rule, deny a *:* rwm,
        // is the final return.
        for (k, (major, minor)) in [(5, 1), (5, 0), (1, 8), (1, 9), (1, 3), (1, 5)].into_iter().enumerate() {
            let at = want.len() + 5 * k;
            assert_eq!(
                got[at..at + 5],
                [
                    "if r2 != 2 goto +4".to_string(),
                    format!("if r4 != {major} goto +3"),
                    format!("if r5 != {minor} goto +2"),
                    "w0 = 1".to_string(),
                    "exit".to_string(),
                ]
            );
        }
        assert_eq!(got[want.len() + 30..], ["w0 = 0", "exit"]);
        assert_eq!(got.len(), 67);
    }

    #[test]
    fn docker_rules_allow_and_deny() {
        let p = compile(&docker_effective()).unwrap();
        let (r, w, m, rw) = (ACC_READ, ACC_WRITE, ACC_MKNOD, ACC_READ | ACC_WRITE);
        let c = |access, major, minor| run(&p, DEV_CHAR, access, major, minor);
        let b = |access, major, minor| run(&p, DEV_BLOCK, access, major, minor);
        for (major, minor) in [(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 1), (5, 2), (136, 0), (136, 9)] {
            assert!(c(rw, major, minor) && c(rw | m, major, minor), "c {major}:{minor}");
        }
        assert!(!c(r, 1, 11), "/dev/kmsg");
        assert!(!c(rw, 10, 229), "/dev/fuse");
        assert!(!c(r, 1, 1), "/dev/mem");
        assert!(!b(r, 8, 0) && !b(w, 7, 0), "block devices");
        // mknod of anything (the runtime's defaults), but opening what it made is still checked.
        assert!(c(m, 1, 11) && c(m, 10, 229) && b(m, 8, 0));
        assert!(!c(r | m, 1, 11));
        // Without the runtime's defaults, docker's list alone refuses mknod too.
        let p = compile(&docker_rules()).unwrap();
        assert!(run(&p, DEV_CHAR, m, 1, 3) && !run(&p, DEV_CHAR, m, 1, 11) && !run(&p, DEV_BLOCK, m, 7, 0));
        assert!(!run(&p, DEV_CHAR, r, 1, 7), "/dev/full is the runtime's");
    }

    #[test]
    fn wildcards_leave_out_their_tests() {
        let p = compile(&rules(serde_json::json!([
            {"allow": true, "type": "a", "major": 1, "minor": 3, "access": "rwm"},
            {"allow": true, "type": "c", "major": -1, "minor": 3, "access": "r"},
            {"allow": false, "major": 4, "access": "w"},
        ])))
        .unwrap();
        assert_eq!(
            listing(&p[6..]),
            [
                // deny a 4:* w: only the major
                "if r4 != 4 goto +5",
                "w1 = w3",
                "w1 &= 0x4",
                "if r1 == 0 goto +2",
                "w0 = 0",
                "exit",
                // allow c *:3 r: no major test
                "if r2 != 2 goto +5",
                "if r5 != 3 goto +4",
                "w3 &= 0x5",
                "if r3 != 0 goto +2",
                "w0 = 1",
                "exit",
                // allow a 1:3 rwm: block and char
                "if r4 != 1 goto +3",
                "if r5 != 3 goto +2",
                "w0 = 1",
                "exit",
                // nothing matched
                "w0 = 0",
                "exit",
            ]
        );
        assert!(run(&p, DEV_BLOCK, ACC_READ, 1, 3) && run(&p, DEV_CHAR, ACC_READ, 1, 3));
        assert!(run(&p, DEV_CHAR, ACC_READ, 7, 3) && !run(&p, DEV_BLOCK, ACC_READ, 7, 3));
        assert!(!run(&p, DEV_CHAR, ACC_READ | ACC_WRITE, 4, 3), "write denied, so read+write is");
        assert!(run(&p, DEV_CHAR, ACC_READ, 4, 3));
    }

    #[test]
    fn a_rule_for_everything_ends_the_program() {
        // `--privileged`: allow a, then a narrower deny after it.
        let p = compile(&rules(serde_json::json!([
            {"allow": false, "type": "c", "major": 1, "minor": 5, "access": "rwm"},
            {"allow": true, "access": "rwm"},
            {"allow": false, "type": "b", "major": 8, "minor": 0, "access": "w"},
        ])))
        .unwrap();
        assert_eq!(
            listing(&p[6..]),
            [
                "if r2 != 1 goto +7",
                "if r4 != 8 goto +6",
                "if r5 != 0 goto +5",
                "w1 = w3",
                "w1 &= 0x4",
                "if r1 == 0 goto +2",
                "w0 = 0",
                "exit",
                // the wildcard: allow whatever is left; the deny before it is gone
                "w0 = 1",
                "exit",
            ]
        );
        assert!(run(&p, DEV_CHAR, ACC_READ, 1, 5) && run(&p, DEV_BLOCK, ACC_READ, 8, 0));
        assert!(!run(&p, DEV_BLOCK, ACC_READ | ACC_WRITE, 8, 0));
        // No rules at all: nothing is allowed.
        assert_eq!(listing(&compile(&[]).unwrap()[6..]), ["w0 = 0", "exit"]);
    }

    #[test]
    fn the_last_matching_rule_wins() {
        let deny_after_allow = compile(&rules(serde_json::json!([
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "access": "rwm"},
            {"allow": false, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
        ])))
        .unwrap();
        assert!(!run(&deny_after_allow, DEV_CHAR, ACC_READ, 1, 3));
        assert!(run(&deny_after_allow, DEV_CHAR, ACC_READ, 1, 5));
        let allow_after_deny = compile(&rules(serde_json::json!([
            {"allow": false, "access": "rwm"},
            {"allow": false, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "access": "rwm"},
        ])))
        .unwrap();
        assert!(run(&allow_after_deny, DEV_CHAR, ACC_READ, 1, 3));
        // Each access by its own last rule: rw allowed, then w denied.
        let p = compile(&rules(serde_json::json!([
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rw"},
            {"allow": false, "type": "c", "major": 1, "minor": 3, "access": "w"},
        ])))
        .unwrap();
        assert!(run(&p, DEV_CHAR, ACC_READ, 1, 3));
        assert!(!run(&p, DEV_CHAR, ACC_WRITE, 1, 3) && !run(&p, DEV_CHAR, ACC_READ | ACC_WRITE, 1, 3));
        // A deny list: read+write of a device whose write is denied is denied (runc's test,
        // "the rule's access covers the request", would let this one through).
        let p = compile(&rules(serde_json::json!([
            {"allow": true, "access": "rwm"},
            {"allow": false, "type": "c", "major": 1, "minor": 3, "access": "w"},
        ])))
        .unwrap();
        assert!(!run(&p, DEV_CHAR, ACC_READ | ACC_WRITE, 1, 3) && run(&p, DEV_CHAR, ACC_READ, 1, 3));
        // Two allows cover read+write between them.
        let p = compile(&rules(serde_json::json!([
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "r"},
            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "w"},
        ])))
        .unwrap();
        assert!(run(&p, DEV_CHAR, ACC_READ | ACC_WRITE, 1, 3) && !run(&p, DEV_CHAR, ACC_MKNOD, 1, 3));
    }

    /// Lists with a little of everything, for the comparisons below.
    fn lists() -> Vec<Vec<LinuxDeviceCgroup>> {
        vec![
            docker_effective(),
            docker_rules(),
            rules(serde_json::json!([
                {"allow": true, "access": "rwm"},
                {"allow": false, "type": "c", "major": 1, "minor": 3, "access": "w"},
                {"allow": false, "type": "b", "major": 7, "access": "rwm"},
                {"allow": false, "type": "c", "minor": 229, "access": "m"},
            ])),
            rules(serde_json::json!([
                {"allow": false, "access": "rwm"},
                {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "r"},
                {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "w"},
                {"allow": true, "type": "b", "access": "m"},
                {"allow": true, "type": "c", "major": 136, "access": "rw"},
                {"allow": false, "type": "c", "major": 1, "minor": 3, "access": "m"},
            ])),
        ]
    }

    #[test]
    fn programs_mean_what_their_lists_say() {
        for (n, list) in lists().iter().enumerate() {
            let p = compile(list).unwrap();
            for (t, a, ma, mi) in grid() {
                assert_eq!(
                    run(&p, t, a, ma, mi),
                    oracle(list, t, a, ma, mi),
                    "list {n}: type {t} access {a} {ma}:{mi}"
                );
            }
        }
    }

    #[test]
    fn programs_agree_with_the_v1_controller() {
        for (n, list) in lists().iter().enumerate() {
            let p = compile(list).unwrap();
            for (t, a, ma, mi) in grid() {
                assert_eq!(run(&p, t, a, ma, mi), v1(list, t, a, ma, mi), "list {n}: type {t} access {a} {ma}:{mi}");
            }
        }
        // Where v1 differs (see the module doc): a deny cannot narrow an earlier wildcard allow.
        let hole = rules(serde_json::json!([
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "access": "rwm"},
            {"allow": false, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
        ]));
        assert!(v1(&hole, DEV_CHAR, ACC_READ, 1, 3));
        assert!(!run(&compile(&hole).unwrap(), DEV_CHAR, ACC_READ, 1, 3));
    }

    #[test]
    fn bad_rules_are_refused() {
        for (rule, want) in [
            (serde_json::json!({"allow": true, "type": "p"}), "device cgroup rule type \"p\" is not a, b or c"),
            (
                serde_json::json!({"allow": true, "type": "c", "access": "rx"}),
                "device cgroup rule access \"rx\": 'x' is not r, w or m",
            ),
            (
                serde_json::json!({"allow": true, "type": "c", "major": 1u64 << 31}),
                "device cgroup rule major number 2147483648 is out of range",
            ),
        ] {
            let e = compile(&rules(serde_json::json!([rule]))).unwrap_err();
            assert_eq!((e.kind(), e.to_string().as_str()), (ErrorKind::InvalidArgument, want));
        }
        // An empty access matches nothing: no block at all.
        let p = compile(&rules(serde_json::json!([{"allow": true, "type": "c", "access": ""}]))).unwrap();
        assert_eq!(p.len(), 8);
    }

    #[test]
    fn the_verifier_says_why() {
        let log = b"0: R1=ctx() R10=fp0\n0: (b4) w0 = 2\n1: (95) exit\nAt program exit the register R0 has smin=2 smax=2 should have been in [0, 1]\nprocessed 2 insns (limit 1000000)\n\0\0\0";
        assert_eq!(
            verifier_reason(log).as_deref(),
            Some("At program exit the register R0 has smin=2 smax=2 should have been in [0, 1]")
        );
        assert_eq!(verifier_reason(b"\0"), None);
    }

    #[test]
    fn the_kernel_refuses_a_bad_program_with_the_verifiers_reason() {
        if cgroup2_root().is_none() {
            return;
        }
        let bad = [insn(ALU_MOV_K, R0, 0, 0, 2), insn(JMP_EXIT, 0, 0, 0, 0)];
        let e = load(&bad).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("cannot load the device rules' eBPF program (bpf BPF_PROG_LOAD; the verifier says: "),
            "{msg}"
        );
        assert!(msg.contains("R0") && msg.ends_with("Invalid argument (os error 22)"), "{msg}");
    }

    #[test]
    fn the_verifier_accepts_every_shape_of_block() {
        if cgroup2_root().is_none() {
            return;
        }
        let mut all = lists();
        all.push(rules(serde_json::json!([
            {"allow": true, "type": "a", "major": 1, "minor": 3, "access": "rwm"},
            {"allow": true, "type": "c", "major": -1, "minor": 3, "access": "r"},
            {"allow": false, "major": 4, "access": "w"},
            {"allow": true, "access": "m"},
        ])));
        all.push(Vec::new());
        for (n, list) in all.iter().enumerate() {
            let p = compile(list).unwrap();
            if let Err(e) = load(&p) {
                panic!("list {n}: {e}\n{}", listing(&p).join("\n"));
            }
        }
    }

    #[test]
    fn the_kernel_enforces_docker_rules() {
        let Some(root) = cgroup2_root() else { return };
        let tmp = tempfile::tempdir().unwrap();
        let kmsg = tmp.path().join("kmsg");
        make_node(&kmsg, libc::S_IFCHR, 1, 11);
        let kmsg_s = kmsg.to_str().unwrap();
        let probes = [
            open("/dev/null", libc::O_RDWR),
            open("/dev/full", libc::O_WRONLY),
            open(kmsg_s, libc::O_WRONLY),
            mknod(&tmp.path().join("c"), libc::S_IFCHR, 1, 11),
            mknod(&tmp.path().join("b"), libc::S_IFBLK, 7, 0),
        ];
        let effective = Group::new(&root, "devices-effective");
        // Without a program every probe works: what the program refuses below is its doing
        // (a failure here: the temporary directory is on a nodev mount?).
        assert_eq!(probe(&effective.0, &probes), [0; 5], "before the program");
        apply(&effective.0, &docker_effective()).unwrap();
        let eperm = libc::EPERM;
        assert_eq!(probe(&effective.0, &probes), [0, 0, eperm, 0, 0], "docker's rules and the runtime's");

        let spec_only = Group::new(&root, "devices-spec");
        apply(&spec_only.0, &docker_rules()).unwrap();
        assert_eq!(probe(&spec_only.0, &probes), [0, eperm, eperm, eperm, eperm], "docker's rules alone");
    }
}
