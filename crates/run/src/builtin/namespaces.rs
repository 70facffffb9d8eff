//! `linux.namespaces`: which to create and which to join (an entry with a `path`), and the
//! order. The PID namespace is special: unshare and setns change the namespace of the caller's
//! *children*, so the runtime process enters it before it forks the container's init
//! ([`Plan::enter_pid`]); the init then enters the rest ([`Plan::enter`]) after joining its
//! cgroups, so that a new cgroup namespace is rooted at the container's group.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::PathBuf;

use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType};

use super::syscall::Syscall;
use crate::error::{Error, ErrorKind, Result};

/// One namespace of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// CLONE_NEW* flag.
    pub flag: i32,
    /// Join this one (a `/proc/PID/ns/*` or bind-mounted file) instead of making a new one.
    pub path: Option<PathBuf>,
}

/// The namespaces of a container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// In the order they are entered (mount last: joining another mount namespace changes the
    /// root, after which `path`s could no longer be opened).
    pub list: Vec<Namespace>,
}

/// The CLONE_NEW* flag for a namespace type.
pub fn flag(t: LinuxNamespaceType) -> Result<i32> {
    Ok(match t {
        LinuxNamespaceType::Mount => libc::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => libc::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => libc::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => libc::CLONE_NEWIPC,
        LinuxNamespaceType::Pid => libc::CLONE_NEWPID,
        LinuxNamespaceType::Network => libc::CLONE_NEWNET,
        LinuxNamespaceType::User | LinuxNamespaceType::Time => {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("the builtin runtime does not support {t:?} namespaces: use --runtime runc"),
            ))
        }
    })
}

/// The `/proc/PID/ns/` file name for a flag.
pub fn proc_name(flag: i32) -> &'static str {
    match flag {
        libc::CLONE_NEWNS => "mnt",
        libc::CLONE_NEWCGROUP => "cgroup",
        libc::CLONE_NEWUTS => "uts",
        libc::CLONE_NEWIPC => "ipc",
        libc::CLONE_NEWPID => "pid",
        _ => "net",
    }
}

impl Plan {
    /// The plan for `namespaces`, entered in the order: cgroup, ipc, uts, net, pid, mount.
    pub fn new(namespaces: &[LinuxNamespace]) -> Result<Plan> {
        let order = [
            libc::CLONE_NEWCGROUP,
            libc::CLONE_NEWIPC,
            libc::CLONE_NEWUTS,
            libc::CLONE_NEWNET,
            libc::CLONE_NEWPID,
            libc::CLONE_NEWNS,
        ];
        let mut list = Vec::new();
        for ns in namespaces {
            let f = flag(ns.typ())?;
            if list.iter().any(|n: &Namespace| n.flag == f) {
                return Err(Error::invalid(format!("namespace {:?} is listed twice", ns.typ())));
            }
            list.push(Namespace { flag: f, path: ns.path().clone() });
        }
        list.sort_by_key(|n| order.iter().position(|&o| o == n.flag));
        Ok(Plan { list })
    }

    /// Whether the container gets a new namespace of this kind.
    pub fn creates(&self, flag: i32) -> bool {
        self.list.iter().any(|n| n.flag == flag && n.path.is_none())
    }

    /// Whether the container has its own namespace of this kind (new or joined).
    pub fn has(&self, flag: i32) -> bool {
        self.list.iter().any(|n| n.flag == flag)
    }

    /// In the runtime process, before the fork: the PID namespace the init will be born into.
    pub fn enter_pid(&self, sys: &dyn Syscall) -> Result<()> {
        for n in self.list.iter().filter(|n| n.flag == libc::CLONE_NEWPID) {
            enter(sys, n)?;
        }
        Ok(())
    }

    /// In the init: every namespace but the PID one, in order; namespaces to join are opened
    /// first (a joined mount namespace would hide their paths).
    pub fn enter(&self, sys: &dyn Syscall) -> Result<()> {
        let mut opened = Vec::new();
        for n in self.list.iter().filter(|n| n.flag != libc::CLONE_NEWPID) {
            let file = match &n.path {
                Some(p) => Some(File::open(p).map_err(|e| Error::io("open namespace", p, e))?),
                None => None,
            };
            opened.push((n, file));
        }
        let mut new = 0;
        for (n, file) in &opened {
            match file {
                Some(f) => sys.setns(f.as_fd(), n.flag).map_err(|e| ns_error(n, e))?,
                None => new |= n.flag,
            }
        }
        if new != 0 {
            sys.unshare(new).map_err(|e| {
                Error::new(ErrorKind::Runtime, format!("cannot create namespaces ({new:#x})")).with_source(e)
            })?;
        }
        Ok(())
    }
}

fn enter(sys: &dyn Syscall, n: &Namespace) -> Result<()> {
    match &n.path {
        Some(p) => {
            let f = File::open(p).map_err(|e| Error::io("open namespace", p, e))?;
            sys.setns(f.as_fd(), n.flag).map_err(|e| ns_error(n, e))
        }
        None => sys.unshare(n.flag).map_err(|e| ns_error(n, e)),
    }
}

fn ns_error(n: &Namespace, e: std::io::Error) -> Error {
    let what = proc_name(n.flag);
    match &n.path {
        Some(p) => Error::new(ErrorKind::Runtime, format!("cannot join the {what} namespace {}", p.display())),
        None => Error::new(ErrorKind::Runtime, format!("cannot create a {what} namespace")),
    }
    .with_source(e)
}

/// Brings the loopback interface of a new network namespace up (SIOCSIFFLAGS on `lo`), as
/// runc does: a container without networking still talks to itself.
pub fn loopback_up() -> Result<()> {
    let err =
        |e: std::io::Error| Error::new(ErrorKind::Runtime, "cannot bring the loopback interface up").with_source(e);
    // SAFETY: socket(2) with constant arguments.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    // SAFETY: a new descriptor we own.
    let sock: std::os::fd::OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) };
    use std::os::fd::AsRawFd;
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in b"lo".iter().enumerate() {
        req.ifr_name[i] = *b as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS fills `req`'s flags for the named interface.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    // SAFETY: the union's flags member was just filled by the kernel.
    unsafe { req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads `req`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtin::syscall::Recorder;

    fn ns(t: LinuxNamespaceType, path: Option<&str>) -> LinuxNamespace {
        let mut n: LinuxNamespace = serde_json::from_value(serde_json::json!({"type": "pid"})).unwrap();
        n.set_typ(t);
        n.set_path(path.map(PathBuf::from));
        n
    }

    #[test]
    fn plan_orders_and_unshares_once() {
        let plan = Plan::new(&[
            ns(LinuxNamespaceType::Mount, None),
            ns(LinuxNamespaceType::Network, None),
            ns(LinuxNamespaceType::Pid, None),
            ns(LinuxNamespaceType::Cgroup, None),
        ])
        .unwrap();
        let flags: Vec<i32> = plan.list.iter().map(|n| n.flag).collect();
        assert_eq!(flags, [libc::CLONE_NEWCGROUP, libc::CLONE_NEWNET, libc::CLONE_NEWPID, libc::CLONE_NEWNS]);
        let sys = Recorder::new(&[]);
        plan.enter_pid(&sys).unwrap();
        plan.enter(&sys).unwrap();
        let want = libc::CLONE_NEWCGROUP | libc::CLONE_NEWNET | libc::CLONE_NEWNS;
        assert_eq!(*sys.calls.borrow(), [format!("unshare {:#x}", libc::CLONE_NEWPID), format!("unshare {want:#x}")]);
        assert!(plan.creates(libc::CLONE_NEWNET) && !plan.has(libc::CLONE_NEWUTS));
    }

    #[test]
    fn joins_by_path_and_refuses_user_namespaces() {
        let plan = Plan::new(&[ns(LinuxNamespaceType::Network, Some("/proc/self/ns/net"))]).unwrap();
        let sys = Recorder::new(&[]);
        plan.enter(&sys).unwrap();
        assert_eq!(*sys.calls.borrow(), [format!("setns {:#x}", libc::CLONE_NEWNET)]);
        assert!(!plan.creates(libc::CLONE_NEWNET));
        let e = Plan::new(&[ns(LinuxNamespaceType::User, None)]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(Plan::new(&[ns(LinuxNamespaceType::Pid, None), ns(LinuxNamespaceType::Pid, None)]).is_err());
    }
}
