//! The process's identity and privileges from the OCI `process`: rlimits, user and groups,
//! and the five capability sets, applied in the order the kernel requires:
//!
//! 1. rlimits (raising a hard limit needs CAP_SYS_RESOURCE, still held here);
//! 2. the bounding set is reduced (PR_CAPBSET_DROP needs CAP_SETPCAP);
//! 3. PR_SET_KEEPCAPS, then groups, gid, uid: a non-root uid keeps its permitted set;
//! 4. capset of effective, permitted and inheritable exactly as listed;
//! 5. the ambient set is raised (each must be permitted and inheritable), else cleared.
//!
//! An rlimit above the hard limit the runtime itself has cannot be set without
//! CAP_SYS_RESOURCE (this host's case: hard NOFILE 20000): it is clamped to that hard limit,
//! as crun does, instead of failing the container.

use oci_spec::runtime::{Capabilities, Capability, PosixRlimitType, Process};

use super::syscall;
use crate::error::{Error, ErrorKind, Result};

/// Capability names in kernel number order (`CAP_CHOWN` is 0).
const NAMES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The kernel number of `cap`.
pub fn number(cap: &Capability) -> Option<u32> {
    let v = serde_json::to_value(cap).ok()?;
    let name = v.as_str()?;
    NAMES.iter().position(|n| *n == name).map(|i| i as u32)
}

/// A set as a 64-bit mask; capabilities this kernel does not know (above `last`) are left out.
pub fn mask(set: Option<&Capabilities>, last: u32) -> u64 {
    set.map_or(0, |s| s.iter().filter_map(number).filter(|&n| n <= last).fold(0, |m, n| m | 1 << n))
}

/// The highest capability number the kernel knows.
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(40)
}

fn resource(t: PosixRlimitType) -> libc::__rlimit_resource_t {
    match t {
        PosixRlimitType::RlimitCpu => libc::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => libc::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => libc::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => libc::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => libc::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => libc::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => libc::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => libc::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => libc::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => libc::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => libc::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => libc::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => libc::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => libc::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => libc::RLIMIT_RTTIME,
    }
}

/// Sets the process's rlimits; one that needs a higher hard limit than ours (EPERM) is clamped
/// to our hard limit.
pub fn rlimits(p: &Process) -> Result<()> {
    for r in p.rlimits().as_deref().unwrap_or_default() {
        let res = resource(r.typ());
        let (soft, hard) = (r.soft(), r.hard());
        match syscall::setrlimit(res, soft, hard) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                let (_, max) = syscall::getrlimit(res).map_err(|e| rlimit_error(r.typ(), e))?;
                syscall::setrlimit(res, soft.min(max), hard.min(max)).map_err(|e| rlimit_error(r.typ(), e))?;
            }
            Err(e) => return Err(rlimit_error(r.typ(), e)),
        }
    }
    Ok(())
}

fn rlimit_error(t: PosixRlimitType, e: std::io::Error) -> Error {
    Error::new(ErrorKind::Runtime, format!("cannot set rlimit {t:?}")).with_source(e)
}

/// Switches to the process's user and groups and sets its capabilities (steps 2–5).
pub fn apply_identity(p: &Process) -> Result<()> {
    let last = last_cap();
    let caps = p.capabilities().as_ref();
    let err = |what: &str, e: std::io::Error| Error::new(ErrorKind::Runtime, what.to_string()).with_source(e);
    if let Some(c) = caps {
        let bounding = mask(c.bounding().as_ref(), last);
        for n in 0..=last {
            if bounding & (1 << n) == 0 {
                syscall::prctl(libc::PR_CAPBSET_DROP, n as libc::c_ulong).map_err(|e| {
                    err(
                        &format!(
                            "cannot drop capability {} from the bounding set",
                            NAMES.get(n as usize).unwrap_or(&"?")
                        ),
                        e,
                    )
                })?;
            }
        }
    }
    let user = p.user();
    syscall::prctl(libc::PR_SET_KEEPCAPS, 1).map_err(|e| err("cannot keep capabilities", e))?;
    let groups = user.additional_gids().clone().unwrap_or_default();
    syscall::set_ids(user.uid(), user.gid(), &groups)
        .map_err(|e| err(&format!("cannot switch to user {}:{}", user.uid(), user.gid()), e))?;
    syscall::prctl(libc::PR_SET_KEEPCAPS, 0).map_err(|e| err("cannot reset keepcaps", e))?;
    let (eff, perm, inh, amb) = match caps {
        Some(c) => (
            mask(c.effective().as_ref(), last),
            mask(c.permitted().as_ref(), last),
            mask(c.inheritable().as_ref(), last),
            mask(c.ambient().as_ref(), last),
        ),
        None => (0, 0, 0, 0),
    };
    syscall::capset(eff, perm, inh).map_err(|e| err("cannot set capabilities", e))?;
    syscall::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong)
        .map_err(|e| err("cannot clear ambient capabilities", e))?;
    for n in 0..=last {
        if amb & (1 << n) != 0 {
            // SAFETY: prctl with integer arguments.
            let r = unsafe {
                libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong, n as libc::c_ulong, 0, 0)
            };
            if r == -1 {
                return Err(err(
                    &format!("cannot raise ambient capability {}", NAMES[n as usize]),
                    std::io::Error::last_os_error(),
                ));
            }
        }
    }
    if let Some(mask) = user.umask() {
        // SAFETY: umask cannot fail.
        unsafe { libc::umask(mask as libc::mode_t) };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_masks() {
        assert_eq!(number(&Capability::Chown), Some(0));
        assert_eq!(number(&Capability::SysAdmin), Some(21));
        assert_eq!(number(&Capability::CheckpointRestore), Some(40));
        // docker's default set is 0xa80425fb.
        let docker: Capabilities = [
            Capability::Chown,
            Capability::DacOverride,
            Capability::Fowner,
            Capability::Fsetid,
            Capability::Kill,
            Capability::Setgid,
            Capability::Setuid,
            Capability::Setpcap,
            Capability::NetBindService,
            Capability::NetRaw,
            Capability::SysChroot,
            Capability::Mknod,
            Capability::AuditWrite,
            Capability::Setfcap,
        ]
        .into_iter()
        .collect();
        assert_eq!(mask(Some(&docker), 40), 0xa804_25fb);
        assert_eq!(mask(Some(&docker), 20), 0x0004_25fb, "unknown to an older kernel: left out");
        assert_eq!(mask(None, 40), 0);
    }
}
