//! The built-in Linux runtime (`--runtime builtin`): runs the same OCI bundle as runc and crun
//! (the `config.json` [`crate::spec`] writes, over the overlay rootfs [`crate::lifecycle`]
//! mounts), with no other program.
//!
//! # Processes
//!
//! [`Runtime::spawn`] must hand back a [`std::process::Child`], so the runtime side is a process
//! of its own: the `strata` binary re-executed as `strata __builtin --state DIR run --bundle B
//! ID` (the embedding binary routes `__builtin` to [`run_container`] / [`exec_in_container`]).
//! Like `crun run`, that process prepares the cgroups and the seccomp program, enters a new PID
//! namespace and forks the container's init, which sets itself up ([`init`]) and execs the
//! container's command; the runtime process waits, forwards signals, records nothing but a
//! small state file, and exits with the command's status (128 + signal when killed). A fork
//! of an already-running, single-threaded process is cheaper than a second re-exec as an init,
//! and keeps the setup in one address space that reads top to bottom.
//!
//! ```text
//!   strata run ──spawn──▶ strata __builtin run        (cgroups made, seccomp loaded, unshare(PID))
//!                             │ fork
//!                             ▼
//!                         init: join cgroups → namespaces → lo up → hostname → mounts →
//!                               pivot_root → masks → rlimits → user/caps → no_new_privs →
//!                               seccomp → execve(command)
//! ```
//!
//! # State
//!
//! `STATE/<id>.json` holds the init's pid, its start time (so a reused pid is not mistaken for
//! the container), the bundle and the cgroup paths; `kill`, `pause`, `pid`, `exec` and `delete`
//! read it. `STATE/seccomp/<sha256>.bpf` caches compiled filters.
//!
//! # Security notes
//!
//! The runtime process and the init set themselves non-dumpable before they can be seen from
//! inside the container: `/proc/PID/exe` of a non-dumpable process cannot be opened without
//! CAP_SYS_PTRACE, which closes CVE-2019-5736 (a container overwriting the host's runtime
//! binary through `/proc/PID/exe` of a runtime process joining it) for containers without
//! that capability. runc additionally runs from a sealed copy of itself; with `--cap-add
//! SYS_PTRACE` that copy is what still protects runc, and the builtin runtime does not make it.

pub mod cgroups;
pub mod syscall;

mod caps;
mod devices;
pub(crate) mod init;
mod namespaces;
mod rootfs;
mod seccomp;
mod syscall_table;

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};

use oci_spec::runtime::{Process, Spec};
use serde::{Deserialize, Serialize};

use self::cgroups::Cgroups;
use self::namespaces::Plan;
use self::syscall::Linux;
use crate::error::{Error, ErrorKind, Result};
use crate::runtime::{Runtime, Waiter};

/// The built-in runtime, its state under a directory of its own.
pub struct Builtin {
    state: PathBuf,
    exe: PathBuf,
}

/// What the runtime remembers of a running container.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    pid: i32,
    /// The init's start time in clock ticks since boot (`/proc/PID/stat` field 22).
    start: u64,
    bundle: PathBuf,
    cgroups: Cgroups,
}

impl Builtin {
    /// The runtime with its state in `state_root/builtin`; the runtime process is this very
    /// binary (`/proc/self/exe`), which must route `__builtin` to this module.
    pub fn new(state_root: &Path) -> Builtin {
        Builtin { state: state_root.join("builtin"), exe: PathBuf::from("/proc/self/exe") }
    }

    fn helper(&self) -> Command {
        let mut c = Command::new(&self.exe);
        c.arg("__builtin").arg("--state").arg(&self.state);
        c
    }

    fn start_error(&self, e: std::io::Error) -> Error {
        Error::new(ErrorKind::Runtime, format!("cannot start the builtin runtime ({})", self.exe.display()))
            .with_source(e)
    }

    /// The state of a running container, `None` when it is not (or no longer) running.
    fn running(&self, id: &str) -> Option<State> {
        let st = load_state(&self.state, id).ok()?;
        strata_store::fsutil::process_alive(st.pid as u32, st.start).then_some(st)
    }
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

impl Runtime for Builtin {
    fn name(&self) -> &str {
        "builtin"
    }

    fn spawn(&self, id: &str, bundle: &Path, stdio: [OwnedFd; 3]) -> Result<Waiter> {
        if single_threaded() {
            // The runtime's work runs in a fork of this process, without exec'ing this binary
            // again (which costs more than a millisecond: loading it, relocating, starting).
            let pid = fork()?;
            if pid == 0 {
                // SAFETY: in the child: put the given descriptors at 0, 1 and 2 (moved above 2
                // first, so that none is overwritten before it is used), then run the
                // runtime's role and leave without running the parent's exit handlers.
                unsafe {
                    let high: Vec<i32> =
                        stdio.iter().map(|fd| libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3)).collect();
                    for (i, fd) in high.iter().enumerate() {
                        libc::dup2(*fd, i as i32);
                    }
                    let code = match run_container(&self.state, bundle, id, None) {
                        Ok(code) => code,
                        Err(e) => {
                            eprintln!("Error: {e}");
                            125
                        }
                    };
                    libc::_exit(code)
                }
            }
            return Ok(Waiter::Runtime(pid));
        }
        let [stdin, stdout, stderr] = stdio;
        let child = self
            .helper()
            .arg("run")
            .arg("--bundle")
            .arg(bundle)
            .arg(id)
            .stdin(stdin)
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|e| self.start_error(e))?;
        Ok(Waiter::Child(child))
    }

    fn spawn_terminal(&self, id: &str, bundle: &Path, console_socket: &Path) -> Result<Waiter> {
        let child = self
            .helper()
            .arg("run")
            .arg("--console-socket")
            .arg(console_socket)
            .arg("--bundle")
            .arg(bundle)
            .arg(id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| self.start_error(e))?;
        Ok(Waiter::Child(child))
    }

    fn exec(&self, id: &str, process: &Path, detach: bool, stdin: bool) -> Result<i32> {
        let mut c = self.helper();
        c.arg("exec").arg("--process").arg(process);
        if detach {
            c.arg("--detach").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        } else if !stdin {
            c.stdin(Stdio::null());
        }
        let status = c.arg(id).status().map_err(|e| self.start_error(e))?;
        Ok(exit_code(status))
    }

    fn pid(&self, id: &str) -> Option<i32> {
        self.running(id).map(|s| s.pid)
    }

    fn pause(&self, id: &str, pause: bool) -> Result<()> {
        let st = self.running(id).ok_or_else(|| not_running(id))?;
        st.cgroups.freeze(pause)
    }

    fn kill(&self, id: &str, signal: i32) -> Result<()> {
        let st = self.running(id).ok_or_else(|| not_running(id))?;
        // SAFETY: kill(2) on the pid whose start time we just checked.
        if unsafe { libc::kill(st.pid, signal) } == -1 {
            return Err(Error::new(ErrorKind::Runtime, format!("cannot signal container {id}"))
                .with_source(std::io::Error::last_os_error()));
        }
        Ok(())
    }

    fn delete(&self, id: &str) -> Result<()> {
        let Ok(st) = load_state(&self.state, id) else { return Ok(()) };
        if strata_store::fsutil::process_alive(st.pid as u32, st.start) {
            // SAFETY: as in kill.
            unsafe { libc::kill(st.pid, libc::SIGKILL) };
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while strata_store::fsutil::process_alive(st.pid as u32, st.start) && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        }
        st.cgroups.remove();
        remove_state(&self.state, id);
        Ok(())
    }
}

fn not_running(id: &str) -> Error {
    Error::new(ErrorKind::InvalidState, format!("container {id} is not running"))
}

fn state_path(state: &Path, id: &str) -> PathBuf {
    state.join(format!("{id}.json"))
}

fn load_state(state: &Path, id: &str) -> Result<State> {
    let p = state_path(state, id);
    let bytes = std::fs::read(&p).map_err(|e| Error::io("read", &p, e))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Error::new(ErrorKind::Runtime, format!("{} is not a builtin runtime state", p.display())).with_source(e)
    })
}

fn save_state(state: &Path, id: &str, st: &State) -> Result<()> {
    std::fs::create_dir_all(state).map_err(|e| Error::io("create", state, e))?;
    let bytes =
        serde_json::to_vec(st).map_err(|e| Error::new(ErrorKind::Runtime, "cannot encode the state").with_source(e))?;
    // Replaced atomically; not fsynced: it describes processes, which a reboot ends anyway.
    let p = state_path(state, id);
    let tmp = state.join(format!(".{id}.{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| Error::io("write", &tmp, e))?;
    std::fs::rename(&tmp, &p).map_err(|e| Error::io("write", &p, e))
}

fn remove_state(state: &Path, id: &str) {
    let _ = std::fs::remove_file(state_path(state, id));
}

fn read_json<T: serde::de::DeserializeOwned>(p: &Path) -> Result<T> {
    let bytes = std::fs::read(p).map_err(|e| Error::io("read", p, e))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::new(ErrorKind::InvalidArgument, format!("{} is not valid", p.display())).with_source(e))
}

/// The pid the signal forwarders send to (0: none yet).
static CHILD: AtomicI32 = AtomicI32::new(0);

/// The pty master this process relays (-1: none): a SIGWINCH resizes it to this process's
/// terminal (the kernel then signals the container's foreground process group) instead of
/// being forwarded.
static TERMINAL: AtomicI32 = AtomicI32::new(-1);

extern "C" fn forward(sig: libc::c_int) {
    let master = TERMINAL.load(Ordering::Relaxed);
    if sig == libc::SIGWINCH && master >= 0 {
        window_size(master); // ioctl(2) only: async-signal-safe.
        return;
    }
    let pid = CHILD.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Forwards the signals a user sends to the runtime process to `pid`, as `runc run` does.
pub(crate) fn forward_signals(pid: i32) {
    CHILD.store(pid, Ordering::Relaxed);
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT, libc::SIGUSR1, libc::SIGUSR2, libc::SIGWINCH]
    {
        // SAFETY: a handler that only calls kill(2); SA_RESTART keeps waitpid going.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = forward as extern "C" fn(libc::c_int) as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } == -1 {
        return Err(Error::new(ErrorKind::Runtime, "cannot make a pipe").with_source(std::io::Error::last_os_error()));
    }
    // SAFETY: both are new descriptors we own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn socketpair() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: socketpair fills two descriptors.
    if unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) } == -1 {
        return Err(
            Error::new(ErrorKind::Runtime, "cannot make a socket pair").with_source(std::io::Error::last_os_error())
        );
    }
    // SAFETY: both are new descriptors we own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Whether this process runs one thread only (so a fork may run arbitrary code: no lock can be
/// held by a thread the child does not have).
fn single_threaded() -> bool {
    std::fs::read_dir("/proc/self/task").is_ok_and(|d| d.take(2).count() == 1)
}

fn fork() -> Result<i32> {
    // SAFETY: callers fork only a single-threaded process (the runtime process, freshly exec'd
    // with no thread started, or one that checked `single_threaded`), so the child may run
    // arbitrary code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(Error::new(ErrorKind::Runtime, "cannot fork").with_source(std::io::Error::last_os_error()));
    }
    Ok(pid)
}

/// clone3's flag (include/uapi/linux/sched.h), wider than libc's `c_int` constant.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// The kernel's `struct clone_args` (clone3(2)), up to `cgroup`.
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// The unified group's folder, opened for [`fork_into`] (`None` without one, or when it cannot
/// be opened: the child then moves in).
fn open_group(dir: Option<&Path>) -> Option<std::fs::File> {
    dir.and_then(|d| std::fs::File::open(d).ok())
}

/// Moves the calling process into the cgroup2 group open as `dir` (the slow way, see
/// [`Cgroups::join`]).
fn move_into(dir: &std::fs::File) -> std::io::Result<()> {
    use std::io::Write;
    let fd = rustix::fs::openat(
        dir,
        "cgroup.procs",
        rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    std::fs::File::from(fd).write_all(b"0")
}

/// A fork whose child starts inside cgroup2 group `group` (clone3 with CLONE_INTO_CGROUP), so
/// that it never has to move there (see [`Cgroups::join`]); returns the pid (0 in the child)
/// and whether the child is in the group. A kernel or group that refuses falls back to a fork.
fn fork_into(group: Option<&std::fs::File>) -> Result<(i32, bool)> {
    let Some(f) = group else { return Ok((fork()?, false)) };
    let args = CloneArgs {
        flags: CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: f.as_raw_fd() as u64,
        ..Default::default()
    };
    // SAFETY: clone3 without CLONE_VM duplicates the process like fork(2); the caller is
    // single-threaded (as for `fork`), and the child only runs its own code until it execs or
    // exits. glibc's fork handlers do not run, which a single-threaded process does not need.
    let pid = unsafe { libc::syscall(libc::SYS_clone3, &args as *const CloneArgs, std::mem::size_of::<CloneArgs>()) };
    if pid < 0 {
        return Ok((fork()?, false));
    }
    Ok((pid as i32, true))
}

/// Waits for `pid`; its status as a shell reports it.
fn wait(pid: i32) -> Result<i32> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid on our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(Error::new(ErrorKind::Runtime, "cannot wait for the container").with_source(e));
        }
    }
    Ok(if libc::WIFSIGNALED(status) { 128 + libc::WTERMSIG(status) } else { libc::WEXITSTATUS(status) })
}

/// Reads the child's error report: `None` once execve closed the pipe without one.
fn read_failure(r: OwnedFd) -> Option<(i32, String)> {
    let mut s = String::new();
    let _ = std::fs::File::from(r).read_to_string(&mut s);
    if s.is_empty() {
        return None;
    }
    let (code, msg) = s.split_once('\n').unwrap_or(("125", &s));
    Some((code.parse().unwrap_or(125), msg.to_string()))
}

fn not_dumpable() -> Result<()> {
    syscall::prctl(libc::PR_SET_DUMPABLE, 0)
        .map_err(|e| Error::new(ErrorKind::Runtime, "cannot make the runtime non-dumpable").with_source(e))
}

/// `strata __builtin run`: runs the container of `bundle` to its end; returns its exit status.
/// A terminal's master goes to `console_socket` when given (runc's protocol), else this
/// process relays it to its own stdio.
pub fn run_container(state: &Path, bundle: &Path, id: &str, console_socket: Option<&Path>) -> Result<i32> {
    not_dumpable()?;
    let spec: Spec = read_json(&bundle.join("config.json"))?;
    let root = spec.root().as_ref().ok_or_else(|| Error::invalid("config.json has no root"))?;
    let rootfs = if root.path().is_absolute() { root.path().clone() } else { bundle.join(root.path()) };
    let process = spec.process().as_ref().ok_or_else(|| Error::invalid("config.json has no process"))?;
    let linux = spec.linux().as_ref().ok_or_else(|| Error::invalid("config.json has no linux section"))?;
    let plan = Plan::new(linux.namespaces().as_deref().unwrap_or_default())?;
    let filter = linux.seccomp().as_ref().map(|s| seccomp::load(s, &state.join("seccomp"))).transpose()?;
    let cg_path = linux.cgroups_path().clone().unwrap_or_else(|| PathBuf::from(format!("/strata/{id}")));
    let cgroups = Cgroups::for_path(&cg_path);
    cgroups.create(linux.resources().as_ref())?;
    let has_cgroup_mount =
        spec.mounts().as_deref().unwrap_or_default().iter().any(|m| m.typ().as_deref() == Some("cgroup"));
    let host_cgroups = if has_cgroup_mount { rootfs::HostCgroups::read() } else { Default::default() };
    let terminal = process.terminal() == Some(true);
    let started = (|| {
        let console = if terminal { Some(socketpair()?) } else { None };
        let (r, w) = pipe()?;
        plan.enter_pid(&Linux)?;
        let unified = open_group(cgroups.unified.as_deref());
        let (pid, in_unified) = fork_into(unified.as_ref())?;
        if pid == 0 {
            drop(r);
            let args = init::InitArgs {
                spec: &spec,
                rootfs: &rootfs,
                plan: &plan,
                cgroups: &cgroups,
                host_cgroups: &host_cgroups,
                seccomp: filter.as_deref(),
                console: console.as_ref().map(|(_, child)| child),
                in_unified,
            };
            match init::container(&Linux, &args) {
                Err(f) => init::fail(&w, f),
                Ok(never) => match never {},
            }
        }
        drop(w);
        forward_signals(pid);
        let master = console.and_then(|c| take_terminal(c, process, console_socket.is_none()));
        Ok::<_, Error>((pid, r, master))
    })();
    let (pid, r, master) = match started {
        Ok(x) => x,
        Err(e) => {
            cgroups.remove();
            return Err(e);
        }
    };
    // From here on the groups and the state file go when this function ends, however it ends.
    let _cleanup = Cleanup { cgroups: &cgroups, state, id };
    if let Some((code, msg)) = read_failure(r) {
        let _ = wait(pid);
        eprintln!("Error: {msg}");
        return Ok(code);
    }
    let start = strata_store::fsutil::process_start_ticks(pid as u32).unwrap_or(0);
    let st = State { pid, start, bundle: bundle.to_path_buf(), cgroups: cgroups.clone() };
    let saved = save_state(state, id, &st);
    if let Some(m) = master {
        match console_socket {
            Some(path) => {
                // The receiver (a container's monitor) holds the terminal from here on.
                let sent = std::os::unix::net::UnixStream::connect(path)
                    .and_then(|s| init::send_fd(s.as_raw_fd(), m.as_raw_fd()));
                if let Err(e) = sent {
                    // SAFETY: kill(2) of our own child.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    let _ = wait(pid);
                    saved?;
                    return Err(Error::new(
                        ErrorKind::Runtime,
                        format!("cannot send the terminal to {}", path.display()),
                    )
                    .with_source(e));
                }
            }
            None => {
                relay_for(pid, m);
            }
        }
    }
    let code = wait(pid);
    saved?;
    code
}

/// Removes a container's groups and state file when dropped (in the runtime process only:
/// it is made after the fork).
struct Cleanup<'a> {
    cgroups: &'a Cgroups,
    state: &'a Path,
    id: &'a str,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        self.cgroups.remove();
        remove_state(self.state, self.id);
    }
}

/// `strata __builtin exec`: runs `process` (an OCI process JSON) in running container `id`;
/// returns its status, or 0 once it started with `detach`.
pub fn exec_in_container(state: &Path, id: &str, process_file: &Path, detach: bool) -> Result<i32> {
    not_dumpable()?;
    let st = load_state(state, id).map_err(|_| not_running(id))?;
    if !strata_store::fsutil::process_alive(st.pid as u32, st.start) {
        return Err(not_running(id));
    }
    let process: Process = read_json(process_file)?;
    let spec: Spec = read_json(&st.bundle.join("config.json"))?;
    let linux = spec.linux().as_ref().ok_or_else(|| Error::invalid("config.json has no linux section"))?;
    let filter = linux.seccomp().as_ref().map(|s| seccomp::load(s, &state.join("seccomp"))).transpose()?;
    let plan = Plan::new(linux.namespaces().as_deref().unwrap_or_default())?;
    // Every namespace file is opened before the first setns: after joining the mount
    // namespace, /proc is the container's.
    let mut joins = Vec::new();
    for n in &plan.list {
        let name = namespaces::proc_name(n.flag);
        let theirs = PathBuf::from(format!("/proc/{}/ns/{name}", st.pid));
        let same = std::fs::read_link(&theirs).ok() == std::fs::read_link(format!("/proc/self/ns/{name}")).ok();
        if !same {
            let f = std::fs::File::open(&theirs).map_err(|e| Error::io("open", &theirs, e))?;
            joins.push((n.flag, f));
        }
    }
    // The v1 groups now (the process made below inherits them); the unified one by making the
    // process inside it.
    st.cgroups.join(true)?;
    // Opened before the container's mount namespace hides the host's view of the hierarchy.
    let unified = open_group(st.cgroups.unified.as_deref());
    use self::syscall::Syscall;
    for (flag, f) in &joins {
        Linux.setns(std::os::fd::AsFd::as_fd(f), *flag).map_err(|e| {
            Error::new(
                ErrorKind::Runtime,
                format!("cannot join the container's {} namespace", namespaces::proc_name(*flag)),
            )
            .with_source(e)
        })?;
    }
    drop(joins);
    let terminal = process.terminal() == Some(true) && !detach;
    let console = if terminal { Some(socketpair()?) } else { None };
    let (r, w) = pipe()?;
    let (pid, in_unified) = fork_into(unified.as_ref())?;
    if pid == 0 {
        drop(r);
        let joined = match (&unified, in_unified) {
            (Some(dir), false) => move_into(dir).map_err(|e| {
                init::Failure::from(Error::new(ErrorKind::Runtime, "cannot join the container's cgroup").with_source(e))
            }),
            _ => Ok(()),
        };
        let res = joined.and_then(|()| match &console {
            Some((_, theirs)) => init::console(theirs, &process),
            None => Ok(()),
        });
        match res.and_then(|()| init::finish(&Linux, &process, filter.as_deref(), false)) {
            Err(f) => init::fail(&w, f),
            Ok(never) => match never {},
        }
    }
    drop(w);
    forward_signals(pid);
    let master = console.and_then(|c| take_terminal(c, &process, true));
    if let Some((code, msg)) = read_failure(r) {
        let _ = wait(pid);
        eprintln!("Error: {msg}");
        return Ok(code);
    }
    if detach {
        return Ok(0);
    }
    if let Some(m) = master {
        relay_for(pid, m);
    }
    wait(pid)
}

/// The runtime's side of a terminal the init (or an exec'd process) made: receives the pty's
/// master over the socket pair `(mine, theirs)`, sizes it before the command starts (as
/// `process.consoleSize` asks, else like this process's own terminal when `own_size`), then
/// lets the process go on.
fn take_terminal((mine, theirs): (OwnedFd, OwnedFd), process: &Process, own_size: bool) -> Option<OwnedFd> {
    drop(theirs);
    let master = init::recv_fd(mine.as_raw_fd()).ok();
    if let Some(m) = &master {
        match process.console_size() {
            Some(b) => set_size(m.as_raw_fd(), b.height() as u16, b.width() as u16),
            None if own_size => window_size(m.as_raw_fd()),
            None => {}
        }
    }
    // SAFETY: writes one byte from a valid buffer (the process waits for it).
    unsafe { libc::write(mine.as_raw_fd(), b"k".as_ptr().cast(), 1) };
    master
}

/// Relays pty `master` to this process's stdio until the other side closes, resizing it with
/// this process's terminal (SIGWINCH) and forwarding the other signals to `pid`.
pub(crate) fn relay_for(pid: i32, master: OwnedFd) {
    forward_signals(pid);
    TERMINAL.store(master.as_raw_fd(), Ordering::SeqCst);
    relay_terminal(master);
    TERMINAL.store(-1, Ordering::SeqCst);
}

/// Gives pty `master` a size.
pub(crate) fn set_size(master: i32, rows: u16, cols: u16) {
    let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads a plain winsize.
    unsafe { libc::ioctl(master, libc::TIOCSWINSZ, &ws) };
}

/// Gives pty `master` the window size of this process's terminal.
pub(crate) fn window_size(master: i32) {
    // SAFETY: ioctls that fill and read a plain winsize.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) == 0 || libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(master, libc::TIOCSWINSZ, &ws);
        }
    }
}

/// A terminal relay, until the container's side of the pty closes: this process's stdin to the
/// pty master and the master to stdout, with this terminal raw meanwhile. One thread with
/// poll(2): after unshare(CLONE_NEWPID) this process cannot start threads (clone with
/// CLONE_THREAD answers EINVAL).
fn relay_terminal(master: OwnedFd) {
    let m = master.as_raw_fd();
    // SAFETY: ioctl/tcgetattr/tcsetattr on our stdio and the master; each fills plain structs.
    let saved = unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(0, &mut t) == 0 {
            let saved = t;
            libc::cfmakeraw(&mut t);
            libc::tcsetattr(0, libc::TCSANOW, &t);
            Some(saved)
        } else {
            None
        }
    };
    let mut buf = [0u8; 16 << 10];
    let mut stdin_open = true;
    loop {
        let mut fds = [
            libc::pollfd { fd: m, events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: if stdin_open { 0 } else { -1 }, events: libc::POLLIN, revents: 0 },
        ];
        // SAFETY: two valid pollfds.
        if unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) } < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            break;
        }
        if fds[0].revents != 0 {
            // SAFETY: reads into our buffer.
            let n = unsafe { libc::read(m, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break; // EIO: every slave descriptor is closed.
            }
            if !write_all(1, &buf[..n as usize]) {
                break;
            }
        }
        if fds[1].revents != 0 {
            // SAFETY: reads into our buffer.
            let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 || !write_all(m, &buf[..n as usize]) {
                stdin_open = false;
            }
        }
    }
    if let Some(t) = saved {
        // SAFETY: restores the termios read before.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &t) };
    }
}

fn write_all(fd: i32, mut b: &[u8]) -> bool {
    while !b.is_empty() {
        // SAFETY: writes from a valid buffer.
        let n = unsafe { libc::write(fd, b.as_ptr().cast(), b.len()) };
        if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        if n <= 0 {
            return false;
        }
        b = &b[n as usize..];
    }
    true
}
