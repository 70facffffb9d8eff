//! Runtime plugins: what starts a prepared bundle. The OCI plugin drives `runc` or `crun` (or any
//! OCI runtime binary given by path) through its command line; the built-in one
//! ([`crate::builtin`]) does the same work itself. Each keeps its state under the store
//! (`runtime/<name>/`) so strata's containers never mix with other users of a runtime.
//! [`open`] picks one by name.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::error::{Error, ErrorKind, Result};

/// Starts and stops containers from OCI bundles.
pub trait Runtime {
    /// The plugin's name (`runc`, `crun`, a path).
    fn name(&self) -> &str;
    /// Starts container `id` from `bundle` with `stdio` (stdin, stdout, stderr); the handle
    /// waits for the runtime's process, which exits when the container does, with its status.
    fn spawn(&self, id: &str, bundle: &Path, stdio: [OwnedFd; 3]) -> Result<Waiter>;
    /// Starts container `id` from `bundle` (whose process has a terminal) without holding the
    /// terminal: the runtime connects to the unix socket `console_socket` and sends the pty's
    /// master there (runc's `--console-socket` protocol). The caller must be a child subreaper
    /// (`PR_SET_CHILD_SUBREAPER`): an OCI runtime started detached leaves the container's
    /// process to it. The handle waits for the container's exit.
    fn spawn_terminal(&self, id: &str, bundle: &Path, console_socket: &Path) -> Result<Waiter>;
    /// Runs `process` (an OCI process JSON file) in running container `id`, with this process's
    /// stdout and stderr, and its stdin when `stdin` (else /dev/null); returns its exit status.
    /// A process with a terminal gets a pty that the runtime relays to this process's stdio.
    /// With `detach`, returns 0 once it started.
    fn exec(&self, id: &str, process: &Path, detach: bool, stdin: bool) -> Result<i32>;
    /// The container's pid when the runtime knows it as created or running.
    fn pid(&self, id: &str) -> Option<i32>;
    /// Freezes (`true`) or thaws (`false`) the container's processes.
    fn pause(&self, id: &str, pause: bool) -> Result<()>;
    /// Sends `signal` to the container's process.
    fn kill(&self, id: &str, signal: i32) -> Result<()>;
    /// Forgets container `id` (after it exited).
    fn delete(&self, id: &str) -> Result<()>;
}

/// The runtime plugin `name`: `builtin`, or an OCI runtime (`runc`, `crun`, a path), its
/// state under `state_root`.
pub fn open(name: &str, state_root: &Path) -> Result<Box<dyn Runtime>> {
    if name == BUILTIN {
        return Ok(Box::new(crate::builtin::Builtin::new(state_root)));
    }
    Ok(Box::new(Oci::new(name, state_root)?))
}

/// What waits for a container started by [`Runtime::spawn`] or [`Runtime::spawn_terminal`].
#[derive(Debug)]
pub enum Waiter {
    /// The runtime's process, which exits with the container's status.
    Child(Child),
    /// The runtime's process, forked from this one (not a [`Child`]), likewise.
    Runtime(i32),
    /// The container's own process, a child of this process (a subreaper) since the runtime
    /// that started it exited.
    Pid(i32),
}

impl Waiter {
    /// The container's pid when known without asking the runtime.
    pub fn pid(&self) -> Option<i32> {
        match self {
            Waiter::Child(_) | Waiter::Runtime(_) => None,
            Waiter::Pid(p) => Some(*p),
        }
    }

    /// Whether the runtime's process already ended (the container cannot be starting).
    pub fn done(&mut self) -> bool {
        match self {
            Waiter::Child(c) => !matches!(c.try_wait(), Ok(None)),
            Waiter::Runtime(pid) => {
                // SAFETY: waitid fills a zeroed siginfo; WNOWAIT leaves the child to wait().
                unsafe {
                    let mut info: libc::siginfo_t = std::mem::zeroed();
                    let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
                    libc::waitid(libc::P_PID, *pid as libc::id_t, &mut info, flags) == 0 && info.si_pid() != 0
                }
            }
            Waiter::Pid(_) => false,
        }
    }

    /// Waits for the exit; its status as a shell gives it (128 + signal for a killed process).
    pub fn wait(self) -> Result<i32> {
        match self {
            Waiter::Child(mut c) => {
                let st = c
                    .wait()
                    .map_err(|e| Error::new(ErrorKind::Runtime, "cannot wait for the runtime").with_source(e))?;
                use std::os::unix::process::ExitStatusExt;
                Ok(st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0)))
            }
            Waiter::Runtime(pid) | Waiter::Pid(pid) => loop {
                let mut status = 0;
                // SAFETY: waitpid fills an int.
                let r = unsafe { libc::waitpid(pid, &mut status, 0) };
                if r == pid {
                    if libc::WIFEXITED(status) {
                        return Ok(libc::WEXITSTATUS(status));
                    }
                    if libc::WIFSIGNALED(status) {
                        return Ok(128 + libc::WTERMSIG(status));
                    }
                    continue;
                }
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Err(Error::new(ErrorKind::Runtime, format!("cannot wait for the container's process {pid}"))
                    .with_source(e));
            },
        }
    }
}

/// The built-in runtime's name.
pub const BUILTIN: &str = "builtin";

/// An OCI runtime binary.
pub struct Oci {
    name: String,
    binary: PathBuf,
    state: PathBuf,
}

/// Finds `prog` on `PATH` (or takes it as a path when it has a '/').
fn which(prog: &str) -> Option<PathBuf> {
    if prog.contains('/') {
        let p = PathBuf::from(prog);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path).map(|d| d.join(prog)).find(|p| p.is_file())
}

impl Oci {
    /// The runtime `name` (`runc`, `crun` or a path to an OCI runtime binary), its state kept
    /// under `state_root/<name>`.
    pub fn new(name: &str, state_root: &Path) -> Result<Oci> {
        let binary = which(name).ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!("runtime {name:?} not found: install it (apt-get install {name}) or give a path to an OCI runtime binary"),
            )
        })?;
        let label =
            Path::new(name).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_else(|| name.to_string());
        Ok(Oci { name: name.to_string(), binary, state: state_root.join(label) })
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(&self.binary);
        c.arg("--root").arg(&self.state);
        c
    }

    fn check(&self, what: &str, out: std::process::Output) -> Result<()> {
        if out.status.success() {
            return Ok(());
        }
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        Err(Error::new(ErrorKind::Runtime, format!("{} {what} failed: {err}", self.name)))
    }
}

/// Whether the OCI process file asks for a terminal.
fn has_terminal(process: &Path) -> bool {
    std::fs::read(process)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|v| v["terminal"] == serde_json::Value::Bool(true))
}

impl Oci {
    fn start_error(&self, e: std::io::Error) -> Error {
        Error::new(ErrorKind::Runtime, format!("cannot start {}", self.binary.display())).with_source(e)
    }

    /// `RUNTIME VERB --detach --console-socket SOCKET --pid-file PID_FILE TAIL…`: a process the
    /// runtime starts and leaves running, its terminal's master sent to `console_socket`;
    /// returns the pid the runtime wrote.
    fn start_detached(
        &self,
        verb: &str,
        console_socket: &Path,
        pid_file: &Path,
        tail: &[&std::ffi::OsStr],
    ) -> Result<i32> {
        let _ = std::fs::remove_file(pid_file);
        let out = self
            .cmd()
            .arg(verb)
            .arg("--detach")
            .arg("--console-socket")
            .arg(console_socket)
            .arg("--pid-file")
            .arg(pid_file)
            .args(tail)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| self.start_error(e))?;
        self.check(verb, out)?;
        let text = std::fs::read_to_string(pid_file).map_err(|e| Error::io("read", pid_file, e))?;
        let _ = std::fs::remove_file(pid_file);
        text.trim().parse::<i32>().ok().filter(|&p| p > 0).ok_or_else(|| {
            Error::new(ErrorKind::Runtime, format!("{} wrote no pid to {}", self.name, pid_file.display()))
        })
    }

    /// `exec` of a process with a terminal: the runtime starts it detached and sends the pty's
    /// master to a console socket; this process relays it (and resizes it on SIGWINCH, which
    /// not every runtime's own relay does) and reaps the process as its subreaper.
    fn exec_terminal(&self, id: &str, process: &Path, stdin: bool) -> Result<i32> {
        let dir = process.parent().unwrap_or(Path::new("."));
        let f = crate::attach::open_dir(dir)?;
        let name = format!("console-{}.sock", std::process::id());
        let console = dir.join(&name);
        let _ = std::fs::remove_file(&console);
        let l = std::os::unix::net::UnixListener::bind(crate::attach::via_fd(&f, &name))
            .map_err(|e| Error::io("listen on", &console, e))?;
        let pid_file = dir.join(format!("exec-{}.pid", std::process::id()));
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        use std::os::fd::AsRawFd;
        let path = format!("/proc/{}/fd/{}/{name}", std::process::id(), f.as_raw_fd());
        let started = self.start_detached(
            "exec",
            Path::new(&path),
            &pid_file,
            &["--process".as_ref(), process.as_os_str(), id.as_ref()],
        );
        let _ = std::fs::remove_file(&console);
        let pid = started?;
        l.set_nonblocking(true).map_err(|e| Error::io("listen on", &console, e))?;
        let master = l
            .accept()
            .and_then(|(s, _)| crate::builtin::init::recv_fd(s.as_raw_fd()))
            .map_err(|e| Error::new(ErrorKind::Runtime, format!("{} sent no terminal", self.name)).with_source(e))?;
        crate::builtin::window_size(master.as_raw_fd());
        if !stdin {
            // The relay reads this process's stdin: make it /dev/null, as for a plain exec.
            if let Ok(null) = std::fs::File::open("/dev/null") {
                // SAFETY: dup2 onto stdin of a descriptor we hold.
                unsafe { libc::dup2(null.as_raw_fd(), 0) };
            }
        }
        crate::builtin::relay_for(pid, master);
        Waiter::Pid(pid).wait()
    }
}

impl Runtime for Oci {
    fn name(&self) -> &str {
        &self.name
    }

    fn spawn(&self, id: &str, bundle: &Path, stdio: [OwnedFd; 3]) -> Result<Waiter> {
        let [stdin, stdout, stderr] = stdio;
        let child = self
            .cmd()
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
        let pid = self.start_detached(
            "run",
            console_socket,
            &bundle.join("runtime.pid"),
            &["--bundle".as_ref(), bundle.as_os_str(), id.as_ref()],
        )?;
        Ok(Waiter::Pid(pid))
    }

    fn exec(&self, id: &str, process: &Path, detach: bool, stdin: bool) -> Result<i32> {
        if !detach && has_terminal(process) {
            return self.exec_terminal(id, process, stdin);
        }
        let mut c = self.cmd();
        c.arg("exec").arg("--process").arg(process);
        if detach {
            c.arg("--detach").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        } else if !stdin {
            c.stdin(Stdio::null());
        }
        let status = c.arg(id).status().map_err(|e| self.start_error(e))?;
        use std::os::unix::process::ExitStatusExt;
        Ok(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
    }

    fn pid(&self, id: &str) -> Option<i32> {
        let out = self.cmd().arg("state").arg(id).stderr(Stdio::null()).output().ok()?;
        if !out.status.success() {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v.get("pid").and_then(|p| p.as_i64()).map(|p| p as i32).filter(|&p| p > 0)
    }

    fn pause(&self, id: &str, pause: bool) -> Result<()> {
        let verb = if pause { "pause" } else { "resume" };
        let out = self.cmd().arg(verb).arg(id).output().map_err(|e| self.start_error(e))?;
        self.check(verb, out)
    }

    fn kill(&self, id: &str, signal: i32) -> Result<()> {
        let out = self.cmd().arg("kill").arg(id).arg(signal.to_string()).output().map_err(|e| self.start_error(e))?;
        self.check("kill", out)
    }

    fn delete(&self, id: &str) -> Result<()> {
        let out = self.cmd().arg("delete").arg("--force").arg(id).output().map_err(|e| self.start_error(e))?;
        // Already gone is fine.
        if !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("does not exist") {
            return Ok(());
        }
        self.check("delete", out)
    }
}
