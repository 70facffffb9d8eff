//! The client side of attaching (`attach`, `start -a`, a `run` with a terminal): this
//! process's stdin to the container, the container's output to this process's stdout and
//! stderr, terminal size changes and (without a terminal) signals passed on, and docker's
//! detach keys (Ctrl-P Ctrl-Q) to leave the container running.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context};
use strata_run::container::Container;
use strata_run::{attach, lifecycle};
use strata_store::Store;

/// How to attach.
pub struct Options {
    /// Send this process's stdin.
    pub stdin: bool,
    /// Pass the signals this process receives on to the container (without a terminal).
    pub sig_proxy: bool,
    /// The detach sequence (with a terminal).
    pub detach_keys: Vec<u8>,
}

/// How an attach ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The container exited with this code.
    Exited(i32),
    /// The user typed the detach keys; the container runs on.
    Detached,
}

/// Parses docker's `--detach-keys`: comma-separated keys, each a single character or
/// `ctrl-X` (X one of a–z, @, [, \, ], ^, _).
pub fn parse_detach_keys(s: &str) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    for k in s.split(',') {
        let lower = k.to_ascii_lowercase();
        if let Some(x) = lower.strip_prefix("ctrl-") {
            match x.as_bytes() {
                [c @ (b'a'..=b'z' | b'@' | b'[' | b'\\' | b']' | b'^' | b'_')] => out.push(c.to_ascii_uppercase() & 0x1f),
                _ => bail!("invalid detach keys {s:?}: unknown key {k:?} (use ctrl-a…ctrl-z, ctrl-@, ctrl-[, ctrl-\\, ctrl-], ctrl-^, ctrl-_ or one character)"),
            }
        } else if k.len() == 1 {
            out.push(k.as_bytes()[0]);
        } else {
            bail!("invalid detach keys {s:?}: unknown key {k:?} (keys are comma-separated, like ctrl-p,ctrl-q)");
        }
    }
    Ok(out)
}

/// Finds the detach sequence in a stream of input that arrives in pieces: bytes that might
/// start the sequence are held back until the next byte shows whether they do.
struct DetachMatcher {
    keys: Vec<u8>,
    held: usize,
}

impl DetachMatcher {
    /// Feeds `input`; returns the bytes to send on and whether the sequence was typed.
    fn feed(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(input.len());
        if self.keys.is_empty() {
            out.extend_from_slice(input);
            return (out, false);
        }
        for &b in input {
            if b == self.keys[self.held] {
                self.held += 1;
                if self.held == self.keys.len() {
                    return (out, true);
                }
                continue;
            }
            // Not the sequence after all: what was held goes on, then this byte starts over.
            out.extend_from_slice(&self.keys[..self.held]);
            self.held = 0;
            if b == self.keys[0] {
                self.held = 1;
                if self.keys.len() == 1 {
                    return (out, true);
                }
            } else {
                out.push(b);
            }
        }
        (out, false)
    }
}

fn is_tty(fd: i32) -> bool {
    // SAFETY: isatty only reads the descriptor.
    unsafe { libc::isatty(fd) == 1 }
}

/// This terminal in raw mode while it lives.
struct RawMode(Option<libc::termios>);

impl RawMode {
    fn enter(on: bool) -> RawMode {
        if !on {
            return RawMode(None);
        }
        // SAFETY: tcgetattr/tcsetattr on stdin with plain structs.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return RawMode(None);
            }
            let saved = t;
            libc::cfmakeraw(&mut t);
            libc::tcsetattr(0, libc::TCSANOW, &t);
            RawMode(Some(saved))
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = self.0 {
            // SAFETY: restores the termios read in enter.
            unsafe { libc::tcsetattr(0, libc::TCSANOW, &t) };
        }
    }
}

/// Sends `kind` frames on the shared stream.
fn send(w: &Mutex<UnixStream>, kind: u8, payload: &[u8]) -> bool {
    let mut s = w.lock().unwrap_or_else(|e| e.into_inner());
    attach::write_frame(&mut *s, kind, payload).is_ok()
}

/// Attaches to running container `c` until it exits or the user detaches.
pub fn attach(store: &Store, c: &Container, o: &Options) -> anyhow::Result<Ended> {
    let size = if c.tty { lifecycle::terminal_size() } else { None };
    let stream = attach::connect(store, c, o.stdin, size)?;
    session(stream, c, o)
}

/// Runs an attach session over `stream` (hello sent).
pub fn session(stream: UnixStream, c: &Container, o: &Options) -> anyhow::Result<Ended> {
    let writer = Arc::new(Mutex::new(stream.try_clone().context("cannot use the attach socket")?));
    let detached = Arc::new(AtomicBool::new(false));
    // Signals go to one thread that waits for them: SIGWINCH resizes the container's terminal;
    // without a terminal, the signals a user sends to a foreground command go to the container.
    let mut wanted = Vec::new();
    if c.tty {
        wanted.push(libc::SIGWINCH);
    } else if o.sig_proxy {
        wanted.extend([libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT, libc::SIGUSR1, libc::SIGUSR2]);
    }
    if !wanted.is_empty() {
        // SAFETY: a signal set built and installed as this thread's mask (inherited by the
        // threads started after it); the waiting thread takes the signals with sigwait.
        let set = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for s in &wanted {
                libc::sigaddset(&mut set, *s);
            }
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            set
        };
        let w = writer.clone();
        std::thread::spawn(move || loop {
            let mut sig = 0;
            // SAFETY: sigwait on the set built above.
            if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                return;
            }
            let ok = if sig == libc::SIGWINCH {
                match lifecycle::terminal_size() {
                    Some((r, cols)) => send(&w, attach::RESIZE, &attach::size_payload(r, cols)),
                    None => true,
                }
            } else {
                send(&w, attach::SIGNAL, &sig.to_be_bytes())
            };
            if !ok {
                return;
            }
        });
    }
    let _raw = RawMode::enter(c.tty && o.stdin && is_tty(0));
    if o.stdin {
        let w = writer.clone();
        let d = detached.clone();
        let reader = stream.try_clone().context("cannot use the attach socket")?;
        let keys = if c.tty { o.detach_keys.clone() } else { Vec::new() };
        std::thread::spawn(move || {
            let mut m = DetachMatcher { keys, held: 0 };
            let mut buf = vec![0u8; 32 << 10];
            let mut stdin = std::io::stdin().lock();
            loop {
                let n = match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        send(&w, attach::CLOSE_STDIN, &[]);
                        return;
                    }
                    Ok(n) => n,
                };
                let (out, hit) = m.feed(&buf[..n]);
                if !out.is_empty() && !send(&w, attach::STDIN, &out) {
                    return;
                }
                if hit {
                    d.store(true, Ordering::SeqCst);
                    let _ = reader.shutdown(std::net::Shutdown::Both);
                    return;
                }
            }
        });
    }
    let mut r = std::io::BufReader::with_capacity(64 << 10, stream);
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr());
    loop {
        match attach::read_frame(&mut r) {
            Ok(Some((attach::STDOUT, p))) => {
                let _ = out.write_all(&p).and_then(|()| out.flush());
            }
            Ok(Some((attach::STDERR, p))) => {
                let _ = err.write_all(&p);
            }
            Ok(Some((attach::EXIT, p))) => {
                let code = <[u8; 4]>::try_from(p.as_slice()).map(i32::from_be_bytes).unwrap_or(0);
                return Ok(Ended::Exited(code));
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => {
                if detached.load(Ordering::SeqCst) {
                    return Ok(Ended::Detached);
                }
                bail!("the container's monitor went away (killed?): see `strata ps -a` for its state");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys_parse_as_docker_spells_them() {
        assert_eq!(parse_detach_keys("ctrl-p,ctrl-q").unwrap(), vec![0x10, 0x11]);
        assert_eq!(parse_detach_keys("ctrl-@,a,ctrl-_").unwrap(), vec![0, b'a', 0x1f]);
        assert!(parse_detach_keys("ctrl-1").is_err());
        assert!(parse_detach_keys("ab").is_err());
    }

    #[test]
    fn the_detach_sequence_is_found_across_pieces_and_false_starts_pass_through() {
        let mut m = DetachMatcher { keys: vec![0x10, 0x11], held: 0 };
        assert_eq!(m.feed(b"ab"), (b"ab".to_vec(), false));
        // Ctrl-P then something else: both go on.
        assert_eq!(m.feed(&[0x10]), (vec![], false));
        assert_eq!(m.feed(b"x"), (vec![0x10, b'x'], false));
        // Ctrl-P Ctrl-P Ctrl-Q: the first Ctrl-P goes on, the pair detaches.
        assert_eq!(m.feed(&[0x10, 0x10]), (vec![0x10], false));
        assert_eq!(m.feed(&[0x11, b'z']), (vec![], true));
        let mut none = DetachMatcher { keys: vec![], held: 0 };
        assert_eq!(none.feed(&[0x10, 0x11]), (vec![0x10, 0x11], false));
    }
}
