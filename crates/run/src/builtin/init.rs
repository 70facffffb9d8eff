//! The forked child's side: everything between fork and execve, top to bottom.
//!
//! For a container's init ([`container`]): join the cgroups → enter the namespaces → loopback
//! up → hostname → file system ([`super::rootfs`]) → terminal → then [`finish`]. For `exec`
//! ([`finish`] alone): the runtime process already joined the cgroups and namespaces.
//!
//! [`finish`]: rlimits → cwd → user, groups and capabilities → no_new_privs → every inherited
//! descriptor marked close-on-exec → seccomp → execve. Seccomp comes last so that the filter
//! only has to allow execve for the setup to finish; the calls before it need privileges the
//! filter takes away.
//!
//! A failure is written to the error pipe as `CODE\nmessage` and the child exits with CODE
//! (126 or 127 when execve fails as a shell would report it, else 125); a successful execve
//! closes the pipe (it is O_CLOEXEC), which is how the parent learns the container started.

use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{Process, Spec};

use super::cgroups::Cgroups;
use super::namespaces::Plan;
use super::rootfs::HostCgroups;
use super::syscall::{self, Syscall};
use crate::error::{Error, ErrorKind};

/// A setup failure: the exit code and what to tell the user.
pub struct Failure {
    /// 125, 126 or 127.
    pub code: i32,
    /// The message.
    pub message: String,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        let code = match e.kind() {
            ErrorKind::CommandNotFound => 127,
            ErrorKind::NotExecutable => 126,
            _ => 125,
        };
        Failure { code, message: e.to_string() }
    }
}

/// What the init needs, prepared by the runtime process before the fork.
pub struct InitArgs<'a> {
    /// The container's config.
    pub spec: &'a Spec,
    /// Its rootfs on the host.
    pub rootfs: &'a Path,
    /// Its namespaces.
    pub plan: &'a Plan,
    /// Its groups (made).
    pub cgroups: &'a Cgroups,
    /// The host's cgroup mounts.
    pub host_cgroups: &'a HostCgroups,
    /// The compiled seccomp filter.
    pub seccomp: Option<&'a [libc::sock_filter]>,
    /// Where the pty master goes with a terminal (a unix socket to the runtime process).
    pub console: Option<&'a OwnedFd>,
    /// Whether this process was made inside the unified group (CLONE_INTO_CGROUP).
    pub in_unified: bool,
}

/// Reports `f` on the error pipe and exits; never returns.
pub fn fail(errpipe: &OwnedFd, f: Failure) -> ! {
    let msg = format!("{}\n{}", f.code, f.message);
    let mut file = std::fs::File::from(errpipe.try_clone().unwrap_or_else(|_| std::process::exit(f.code)));
    let _ = file.write_all(msg.as_bytes());
    // SAFETY: _exit ends the child without running the parent's atexit handlers or destructors.
    unsafe { libc::_exit(f.code) }
}

/// The container's init: sets everything up and becomes the container's process.
pub fn container(sys: &dyn Syscall, a: &InitArgs<'_>) -> Result<std::convert::Infallible, Failure> {
    let runtime = |what: &str| {
        let what = what.to_string();
        move |e: std::io::Error| Error::new(ErrorKind::Runtime, what).with_source(e)
    };
    a.cgroups.join(a.in_unified)?;
    a.plan.enter(sys)?;
    if a.plan.creates(libc::CLONE_NEWNET) {
        super::namespaces::loopback_up()?;
    }
    if let Some(h) = a.spec.hostname().as_deref().filter(|h| !h.is_empty()) {
        if !a.plan.has(libc::CLONE_NEWUTS) {
            return Err(Error::invalid("a hostname needs a UTS namespace").into());
        }
        sys.sethostname(h).map_err(runtime(&format!("cannot set the host name {h:?}")))?;
    }
    if a.plan.has(libc::CLONE_NEWNS) {
        super::rootfs::setup(sys, a.spec, a.rootfs, a.host_cgroups)?;
    } else {
        return Err(Error::invalid("the builtin runtime needs a mount namespace").into());
    }
    let process = a.spec.process().as_ref().ok_or_else(|| Error::invalid("config.json has no process"))?;
    // The working directory is made when missing, as runc does.
    let cwd = process.cwd();
    if !cwd.as_os_str().is_empty() && sys.kind(cwd).ok().flatten().is_none() {
        sys.mkdir_all(cwd, 0o755)
            .map_err(runtime(&format!("cannot create the working directory {}", cwd.display())))?;
    }
    if let Some(sock) = a.console {
        console(sock, process)?;
    }
    let init =
        a.spec.annotations().as_ref().and_then(|m| m.get(crate::spec::INIT_ANNOTATION)).is_some_and(|v| v == "true");
    finish(sys, process, a.seccomp, init)
}

/// With a terminal: a pty from the container's own devpts (so `tty` names a path that
/// exists inside), made the controlling terminal and stdio; the master goes to the runtime
/// process over `sock`.
pub(crate) fn console(sock: &OwnedFd, process: &Process) -> Result<(), Failure> {
    let err = |what: &str| {
        let what = what.to_string();
        move |e: std::io::Error| Failure::from(Error::new(ErrorKind::Runtime, what).with_source(e))
    };
    // SAFETY: plain libc calls on descriptors this function owns; each result is checked.
    unsafe {
        let master = libc::open(c"/dev/ptmx".as_ptr(), libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        if master < 0 {
            return Err(err("cannot open /dev/ptmx")(std::io::Error::last_os_error()));
        }
        let unlock: libc::c_int = 0;
        let mut n: libc::c_uint = 0;
        if libc::ioctl(master, libc::TIOCSPTLCK, &unlock) < 0 || libc::ioctl(master, libc::TIOCGPTN, &mut n) < 0 {
            return Err(err("cannot unlock the pty")(std::io::Error::last_os_error()));
        }
        let name = CString::new(format!("/dev/pts/{n}")).expect("no NUL");
        let slave = libc::open(name.as_ptr(), libc::O_RDWR | libc::O_NOCTTY);
        if slave < 0 {
            return Err(err("cannot open the pty")(std::io::Error::last_os_error()));
        }
        let u = process.user();
        libc::fchown(slave, u.uid(), u.gid());
        libc::setsid();
        if libc::ioctl(slave, libc::TIOCSCTTY, 0) < 0 {
            return Err(err("cannot make the pty the controlling terminal")(std::io::Error::last_os_error()));
        }
        for fd in 0..3 {
            libc::dup2(slave, fd);
        }
        if slave > 2 {
            libc::close(slave);
        }
        send_fd(sock.as_raw_fd(), master).map_err(err("cannot hand the pty over"))?;
        libc::close(master);
        // Wait until the runtime process gave the pty its window size: the command may ask for
        // it at once (`stty size`).
        let mut ack = [0u8; 1];
        libc::read(sock.as_raw_fd(), ack.as_mut_ptr().cast(), 1);
    }
    Ok(())
}

/// A one-byte message with room for one descriptor's control data, for `send_fd`/`recv_fd`.
struct FdMessage {
    byte: [u8; 1],
    iov: libc::iovec,
    cbuf: Vec<u8>,
    msg: libc::msghdr,
}

impl FdMessage {
    fn new() -> Box<FdMessage> {
        // SAFETY: CMSG_SPACE is a pure computation.
        let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<i32>() as u32) } as usize;
        // SAFETY: iovec and msghdr are plain data, filled in below.
        let mut m = Box::new(FdMessage {
            byte: [0],
            iov: unsafe { std::mem::zeroed() },
            cbuf: vec![0u8; space],
            msg: unsafe { std::mem::zeroed() },
        });
        // The box keeps the buffers' addresses fixed while the header points at them.
        m.iov = libc::iovec { iov_base: m.byte.as_mut_ptr().cast(), iov_len: 1 };
        m.msg.msg_iov = &mut m.iov;
        m.msg.msg_iovlen = 1;
        m.msg.msg_control = m.cbuf.as_mut_ptr().cast();
        m.msg.msg_controllen = space;
        m
    }
}

/// Sends `fd` over unix socket `sock` (SCM_RIGHTS).
pub fn send_fd(sock: i32, fd: i32) -> std::io::Result<()> {
    let m = FdMessage::new();
    // SAFETY: the header and the buffers it points at live in `m` until sendmsg returns; the
    // control buffer has room for one descriptor's header.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&m.msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<i32>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<i32>(), fd);
        if libc::sendmsg(sock, &m.msg, 0) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Receives one descriptor from unix socket `sock`.
pub fn recv_fd(sock: i32) -> std::io::Result<OwnedFd> {
    let mut m = FdMessage::new();
    // SAFETY: as in send_fd; the received descriptor becomes ours.
    unsafe {
        if libc::recvmsg(sock, &mut m.msg, libc::MSG_CMSG_CLOEXEC) <= 0 {
            return Err(std::io::Error::last_os_error());
        }
        let c = libc::CMSG_FIRSTHDR(&m.msg);
        if c.is_null() || (*c).cmsg_type != libc::SCM_RIGHTS {
            return Err(std::io::Error::from(std::io::ErrorKind::InvalidData));
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<i32>());
        Ok(std::os::fd::FromRawFd::from_raw_fd(fd))
    }
}

/// The common tail: rlimits, cwd, identity, no_new_privs, seccomp, execve.
pub fn finish(
    sys: &dyn Syscall,
    process: &Process,
    seccomp: Option<&[libc::sock_filter]>,
    init: bool,
) -> Result<std::convert::Infallible, Failure> {
    let args = process.args().as_deref().unwrap_or_default();
    let Some(prog) = args.first() else { return Err(Error::invalid("config.json gives no command").into()) };
    let env = process.env().as_deref().unwrap_or_default();
    super::caps::rlimits(process)?;
    // Like runc: umask 0022 unless the process says otherwise (set with the identity).
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(0o022) };
    let cwd = process.cwd();
    if !cwd.as_os_str().is_empty() {
        sys.chdir(cwd).map_err(|e| {
            Error::new(ErrorKind::Runtime, format!("cannot enter the working directory {}", cwd.display()))
                .with_source(e)
        })?;
    }
    super::caps::apply_identity(process)?;
    if process.no_new_privileges() == Some(true) {
        syscall::prctl(libc::PR_SET_NO_NEW_PRIVS, 1)
            .map_err(|e| Error::new(ErrorKind::Runtime, "cannot set no_new_privs").with_source(e))?;
    }
    let path = find_program(prog, env)?;
    let cstrings = |v: &[String]| -> Result<Vec<CString>, Failure> {
        v.iter()
            .map(|s| CString::new(s.as_str()).map_err(|_| Error::invalid(format!("{s:?} holds a NUL byte")).into()))
            .collect()
    };
    let argv = cstrings(args)?;
    let envp = cstrings(env)?;
    let cpath =
        CString::new(path.as_os_str().as_bytes()).map_err(|_| Error::invalid("the command holds a NUL byte"))?;
    // Nothing of the runtime's leaks into the container: every descriptor above stdio closes
    // on exec (the error pipe among them, which tells the parent the exec happened).
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) };
    if let Some(filter) = seccomp {
        syscall::seccomp_filter(filter)
            .map_err(|e| Error::new(ErrorKind::Runtime, "cannot load the seccomp filter").with_source(e))?;
    }
    if init {
        // `--init`: this process (the strata binary, set up and confined exactly as the command
        // will be) stays PID 1 and the command runs as its child.
        // SAFETY: single-threaded here, as everywhere in the container's init.
        match unsafe { libc::fork() } {
            -1 => {
                return Err(Error::new(ErrorKind::Runtime, "cannot fork the init's child")
                    .with_source(std::io::Error::last_os_error())
                    .into())
            }
            0 => {}
            child => reap_as_init(child),
        }
    }
    let e = syscall::execve(&cpath, &argv, &envp);
    let kind = match e.raw_os_error() {
        Some(libc::ENOENT) => ErrorKind::CommandNotFound,
        Some(libc::EACCES | libc::ENOEXEC | libc::EISDIR | libc::EPERM) => ErrorKind::NotExecutable,
        _ => ErrorKind::Runtime,
    };
    Err(Error::new(kind, format!("exec: {:?}", path.display().to_string())).with_source(e).into())
}

/// PID 1 of an `--init` container: forwards the signals it gets to `child` (the command), reaps
/// every process that ends (orphans are re-parented to it), and exits with the command's status
/// once it ends, as docker's `tini` does.
fn reap_as_init(child: i32) -> ! {
    // The runtime learns of the exec from the child's copy of the error pipe alone: close ours,
    // and everything else above stdio.
    // SAFETY: close_range only closes this process's descriptors.
    if unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) } != 0 {
        for fd in 3..1024 {
            // SAFETY: as above, one descriptor at a time.
            unsafe { libc::close(fd) };
        }
    }
    super::forward_signals(child);
    loop {
        let mut status = 0;
        // SAFETY: waitpid on any child of this process.
        let r = unsafe { libc::waitpid(-1, &mut status, 0) };
        if r == child {
            let code = if libc::WIFSIGNALED(status) { 128 + libc::WTERMSIG(status) } else { libc::WEXITSTATUS(status) };
            // SAFETY: _exit ends PID 1 (and so the namespace) without running destructors.
            unsafe { libc::_exit(code) }
        }
        if r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD) {
            // SAFETY: as above.
            unsafe { libc::_exit(0) }
        }
    }
}

/// `prog` as execve needs it: a path as given, or the first executable file of that name on
/// the process's `PATH` (the container's, not the runtime's).
fn find_program(prog: &str, env: &[String]) -> Result<PathBuf, Failure> {
    if prog.contains('/') {
        return Ok(PathBuf::from(prog));
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let p = Path::new(dir).join(prog);
        let Ok(c) = CString::new(p.as_os_str().as_bytes()) else { continue };
        // SAFETY: a NUL-terminated path.
        if unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0 && p.is_file() {
            return Ok(p);
        }
    }
    Err(Error::new(ErrorKind::CommandNotFound, format!("exec: {prog:?}: executable file not found in $PATH")).into())
}
