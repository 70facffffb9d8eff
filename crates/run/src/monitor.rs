//! The per-container monitor: the `strata` binary re-executed (`strata __monitor ID`) for a
//! detached container. It owns the container's stdio or terminal (whose master a runtime hands
//! over on a console socket), writes the log (one JSON object per line of output, with its
//! stream and time), serves attach ([`crate::attach`]), records the exit code in `state.json`
//! atomically and removes `--rm` containers. If the monitor itself is killed, readers of the record see that its
//! process is gone ([`crate::container::Container::lost`]) and record the container as exited.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use strata_store::Store;

use crate::attach;
use crate::container::Container;
use crate::error::{Error, ErrorKind, Result};
use crate::lifecycle;
use crate::runtime::{Runtime, Waiter};

/// One record of a container's log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LogRecord {
    /// The text, with its newline.
    pub log: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// RFC 3339 with nanoseconds.
    pub time: String,
}

/// The log file of container `c`.
pub fn log_path(store: &Store, c: &Container) -> PathBuf {
    c.dir(store).join("log.json")
}

/// Now as RFC 3339 with nanoseconds.
pub fn timestamp() -> String {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let base = strata_store::time::format_rfc3339(d.as_secs() as i64);
    let base = base.trim_end_matches('Z');
    format!("{base}.{:09}Z", d.subsec_nanos())
}

/// Copies `r` into the log, one record per line, and, as it arrives, to `echo` (a foreground
/// run's own stdout or stderr).
pub fn pump(
    mut r: impl Read,
    stream: &'static str,
    log: Arc<Mutex<std::fs::File>>,
    mut echo: Option<Box<dyn Write + Send>>,
) {
    let mut buf = vec![0u8; 64 << 10];
    let mut line: Vec<u8> = Vec::new();
    let emit = |line: &[u8]| {
        let rec =
            LogRecord { log: String::from_utf8_lossy(line).into_owned(), stream: stream.into(), time: timestamp() };
        let mut bytes = serde_json::to_vec(&rec).expect("a log record serialises");
        bytes.push(b'\n');
        let mut f = log.lock().unwrap_or_else(|e| e.into_inner());
        let _ = f.write_all(&bytes);
    };
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        if let Some(w) = &mut echo {
            if w.write_all(&buf[..n]).and_then(|()| w.flush()).is_err() {
                echo = None;
            }
        }
        for &b in &buf[..n] {
            line.push(b);
            if b == b'\n' {
                emit(&line);
                line.clear();
            }
        }
    }
    if !line.is_empty() {
        emit(&line);
    }
}

/// Opens (appending) the log of container `c`.
pub fn open_log(store: &Store, c: &Container) -> Result<Arc<Mutex<std::fs::File>>> {
    let lp = log_path(store, c);
    let log = OpenOptions::new().create(true).append(true).open(&lp).map_err(|e| Error::io("open", &lp, e))?;
    Ok(Arc::new(Mutex::new(log)))
}

/// The monitor's side of attaching: the clients that receive the container's output and
/// the container's input they write to.
struct Hub {
    /// Output streams of the attached clients.
    clients: Mutex<Vec<UnixStream>>,
    /// The container's standard input (a pipe, or the terminal's master), while open.
    stdin: Mutex<Option<std::fs::File>>,
    /// Close the input when a client's ends.
    stdin_once: bool,
    /// The terminal's master, to resize.
    master: Option<i32>,
    /// The container's pid, for `--sig-proxy` signals (0: not known yet).
    pid: AtomicI32,
}

impl Hub {
    fn new(stdin: Option<std::fs::File>, stdin_once: bool, master: Option<i32>) -> Arc<Hub> {
        Arc::new(Hub {
            clients: Mutex::new(Vec::new()),
            stdin: Mutex::new(stdin),
            stdin_once,
            master,
            pid: AtomicI32::new(0),
        })
    }

    fn broadcast(&self, kind: u8, data: &[u8]) {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        clients.retain_mut(|s| attach::write_frame(s, kind, data).is_ok());
    }

    fn resize(&self, rows: u16, cols: u16) {
        let Some(m) = self.master else { return };
        if rows == 0 || cols == 0 {
            return;
        }
        let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: TIOCSWINSZ reads a plain winsize.
        unsafe { libc::ioctl(m, libc::TIOCSWINSZ, &ws) };
    }

    /// Takes a new client: registers its output, then serves its frames until it goes.
    /// `hello` is its opening frame's payload when already read.
    fn serve(self: Arc<Self>, mut s: UnixStream, hello: Option<Vec<u8>>) {
        let hello = match hello {
            Some(h) => h,
            None => match attach::read_frame(&mut s) {
                Ok(Some((attach::HELLO, h))) => h,
                _ => return,
            },
        };
        let input = hello.first().is_some_and(|f| f & 1 != 0);
        if let Some((rows, cols)) = attach::parse_size(&hello[1..]) {
            self.resize(rows, cols);
        }
        // A client that stopped reading must not stall the container's output for long.
        let _ = s.set_write_timeout(Some(std::time::Duration::from_secs(10)));
        match s.try_clone() {
            Ok(out) => self.clients.lock().unwrap_or_else(|e| e.into_inner()).push(out),
            Err(_) => return,
        }
        while let Ok(Some((kind, p))) = attach::read_frame(&mut s) {
            match kind {
                attach::STDIN if input => {
                    let mut stdin = self.stdin.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(w) = stdin.as_mut() {
                        if w.write_all(&p).is_err() {
                            *stdin = None;
                        }
                    }
                }
                attach::CLOSE_STDIN if input && self.stdin_once => {
                    *self.stdin.lock().unwrap_or_else(|e| e.into_inner()) = None;
                }
                attach::RESIZE => {
                    if let Some((rows, cols)) = attach::parse_size(&p) {
                        self.resize(rows, cols);
                    }
                }
                attach::SIGNAL => {
                    let pid = self.pid.load(Ordering::SeqCst);
                    if let (true, Ok(b)) = (pid > 0, <[u8; 4]>::try_from(p.as_slice())) {
                        // SAFETY: kill(2) of the container's process, which this monitor waits for.
                        unsafe { libc::kill(pid, i32::from_be_bytes(b)) };
                    }
                }
                _ => {}
            }
        }
    }
}

/// Output to every attached client, as frames of `kind`.
struct ToClients {
    hub: Arc<Hub>,
    kind: u8,
}

impl Write for ToClients {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.hub.broadcast(self.kind, buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Accepts one connection on `l` within `timeout`, or `None`.
fn accept_within(l: &UnixListener, timeout: std::time::Duration, mut gone: impl FnMut() -> bool) -> Option<UnixStream> {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        let mut pfd = libc::pollfd { fd: l.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, 50) } > 0 {
            return l.accept().ok().map(|(s, _)| s);
        }
        if gone() {
            return None;
        }
    }
    None
}

/// Runs container `id` (prepared, status created) to its end, logging its output and serving
/// attach; returns its exit code. With `wait_attach` (`start -a`, an attached `run`), the
/// container starts only once a first client is attached, so that it misses no output.
pub fn monitor(store: &Store, id: &str, runtime: &dyn Runtime, wait_attach: bool) -> Result<i32> {
    let mut c = Container::load(store, id)?;
    let bundle = c.dir(store);
    let dir = attach::open_dir(&bundle)?;
    let sock = bundle.join(attach::SOCKET);
    // Made under a temporary name, then renamed: a client that sees `attach.sock` finds it
    // listening (between bind and listen a connect is refused).
    let tmp_name = format!(".{}.tmp-{}", attach::SOCKET, std::process::id());
    let tmp = bundle.join(&tmp_name);
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(attach::via_fd(&dir, &tmp_name)).map_err(|e| Error::io("listen on", &tmp, e))?;
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600));
    std::fs::rename(&tmp, &sock).map_err(|e| Error::io("rename into place", &sock, e))?;
    let first = if wait_attach {
        let hello = accept_within(&listener, std::time::Duration::from_secs(30), || false).and_then(|mut s| {
            let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(10)));
            let hello = match attach::read_frame(&mut s) {
                Ok(Some((attach::HELLO, h))) => h,
                _ => return None,
            };
            let _ = s.set_read_timeout(None);
            Some((s, hello))
        });
        match hello {
            Some((s, hello)) => {
                // The client's terminal size, set before the command starts (`process.consoleSize`,
                // which every runtime applies before it executes the command).
                if let (true, Some(size)) = (c.tty, attach::parse_size(hello.get(1..).unwrap_or_default())) {
                    set_console_size(&bundle, size)?;
                }
                Some((s, hello))
            }
            None => {
                lifecycle::finish(store, c, 125)?;
                return Err(Error::new(ErrorKind::Runtime, "no client attached within 30 s"));
            }
        }
    } else {
        None
    };
    let started = start(store, &c, runtime, &dir);
    let (waiter, pumps, hub) = match started {
        Ok(x) => x,
        Err(e) => {
            let _ = std::fs::remove_file(&sock);
            lifecycle::finish(store, c, 125)?;
            // The waiting client hears why, and the exit code docker gives strata's own errors.
            if let Some((mut s, _)) = first {
                let _ = attach::write_frame(&mut s, attach::STDERR, format!("Error: {e}\n").as_bytes());
                let _ = attach::write_frame(&mut s, attach::EXIT, &125i32.to_be_bytes());
            }
            return Err(e);
        }
    };
    if let Some((s, hello)) = first {
        let h = hub.clone();
        std::thread::spawn(move || h.serve(s, Some(hello)));
        // Output waits for the client's hello (its registration).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while hub.clients.lock().unwrap_or_else(|e| e.into_inner()).is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    {
        let h = hub.clone();
        std::thread::spawn(move || {
            for s in listener.incoming().flatten() {
                let h = h.clone();
                std::thread::spawn(move || h.serve(s, None));
            }
        });
    }
    // Let the pumps go only now: output before the first client is registered waits in the pipe.
    let pumps: Vec<_> = pumps.into_iter().map(std::thread::spawn).collect();
    // Running means the runtime knows the container (so `exec`, `kill` and `stop` reach it):
    // wait for that, or for the runtime to give up.
    c.pid = waiter.pid();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut waiter = waiter;
    while c.pid.is_none() && std::time::Instant::now() < deadline {
        c.pid = runtime.pid(&c.id);
        if c.pid.is_some() || waiter.done() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    hub.pid.store(c.pid.unwrap_or(0), Ordering::SeqCst);
    lifecycle::mark_running(store, &mut c)?;
    let detached_runtime = matches!(waiter, Waiter::Pid(_));
    let code = waiter.wait()?;
    for p in pumps {
        let _ = p.join();
    }
    if detached_runtime {
        // A runtime started detached keeps its record of the container until told.
        let _ = runtime.delete(&c.id);
    }
    // Reload: `stop`/`kill` may have written meanwhile; the exit is ours to record.
    let c = Container::load(store, id).unwrap_or(c);
    let _ = std::fs::remove_file(&sock);
    lifecycle::finish(store, c, code)?;
    hub.broadcast(attach::EXIT, &code.to_be_bytes());
    Ok(code)
}

/// Writes the terminal size (rows, columns) into the bundle's `config.json`.
fn set_console_size(bundle: &std::path::Path, (rows, cols): (u16, u16)) -> Result<()> {
    if rows == 0 || cols == 0 {
        return Ok(());
    }
    let p = bundle.join("config.json");
    let bytes = std::fs::read(&p).map_err(|e| Error::io("read", &p, e))?;
    let mut spec: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::new(ErrorKind::Runtime, format!("{} is not valid", p.display())).with_source(e))?;
    let Some(process) = spec.get_mut("process").and_then(|v| v.as_object_mut()) else { return Ok(()) };
    process.insert("consoleSize".into(), serde_json::json!({"height": rows, "width": cols}));
    let bytes = serde_json::to_vec_pretty(&spec)
        .map_err(|e| Error::new(ErrorKind::Runtime, "cannot encode config.json").with_source(e))?;
    Ok(strata_store::fsutil::write_atomic_all(bundle, &[("config.json", &bytes, 0o600)])?)
}

/// What pumps a container's output once the monitor lets it.
type Pump = Box<dyn FnOnce() + Send>;

/// Starts the container through `runtime`: with a terminal (its master received on a console
/// socket in the container's folder) or with pipes.
fn start(
    store: &Store,
    c: &Container,
    runtime: &dyn Runtime,
    dir: &std::fs::File,
) -> Result<(Waiter, Vec<Pump>, Arc<Hub>)> {
    let bundle = c.dir(store);
    let log = open_log(store, c)?;
    if c.tty {
        // A runtime started detached leaves the container's process to its nearest subreaper.
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        let console = bundle.join("console.sock");
        let _ = std::fs::remove_file(&console);
        let l =
            UnixListener::bind(attach::via_fd(dir, "console.sock")).map_err(|e| Error::io("listen on", &console, e))?;
        // The runtime is another process: it reaches the folder through ours.
        let path = PathBuf::from(format!("/proc/{}/fd/{}/console.sock", std::process::id(), dir.as_raw_fd()));
        let mut waiter = runtime.spawn_terminal(&c.id, &bundle, &path)?;
        let conn = accept_within(&l, std::time::Duration::from_secs(30), || waiter.done());
        drop(l);
        let _ = std::fs::remove_file(&console);
        let master = match conn.map(|s| crate::builtin::init::recv_fd(s.as_raw_fd())) {
            Some(Ok(m)) => m,
            other => {
                let _ = runtime.kill(&c.id, libc::SIGKILL);
                let _ = waiter.wait();
                let why = match other {
                    Some(Err(e)) => format!("cannot receive its terminal: {e}"),
                    _ => "the runtime sent no terminal".to_string(),
                };
                return Err(Error::new(ErrorKind::Runtime, format!("container {}: {why}", c.name)));
            }
        };
        let master = std::fs::File::from(master);
        let input =
            if c.open_stdin { Some(master.try_clone().map_err(|e| Error::io("dup", &console, e))?) } else { None };
        let hub = Hub::new(input, c.stdin_once, Some(master.as_raw_fd()));
        let h = hub.clone();
        let pump: Pump = Box::new(move || {
            let echo: Box<dyn Write + Send> = Box::new(ToClients { hub: h, kind: attach::STDOUT });
            pump(&master, "stdout", log, Some(echo));
            drop(master);
        });
        return Ok((waiter, vec![pump], hub));
    }
    let (stdin, input) = if c.open_stdin {
        let (r, w) = std::io::pipe().map_err(|e| Error::io("make a pipe for", &bundle, e))?;
        (OwnedFd::from(r), Some(std::fs::File::from(OwnedFd::from(w))))
    } else {
        let null =
            std::fs::File::open("/dev/null").map_err(|e| Error::io("open", std::path::Path::new("/dev/null"), e))?;
        (OwnedFd::from(null), None)
    };
    let (out, out_w) = std::io::pipe().map_err(|e| Error::io("make a pipe for", &bundle, e))?;
    let (err, err_w) = std::io::pipe().map_err(|e| Error::io("make a pipe for", &bundle, e))?;
    let waiter = runtime.spawn(&c.id, &bundle, [stdin, out_w.into(), err_w.into()])?;
    let hub = Hub::new(input, c.stdin_once, None);
    let (h1, h2, l2) = (hub.clone(), hub.clone(), log.clone());
    let p1: Pump = Box::new(move || {
        pump(out, "stdout", log, Some(Box::new(ToClients { hub: h1, kind: attach::STDOUT })));
    });
    let p2: Pump = Box::new(move || {
        pump(err, "stderr", l2, Some(Box::new(ToClients { hub: h2, kind: attach::STDERR })));
    });
    Ok((waiter, vec![p1, p2], hub))
}

/// Reads container `c`'s log records.
pub fn read_log(store: &Store, c: &Container) -> Result<Vec<LogRecord>> {
    let p = log_path(store, c);
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(Error::io("read", &p, e)),
    };
    Ok(text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
}
