//! Attaching to containers: `attach` (a terminal's input, output and size; detach keys;
//! without a terminal, stdout and stderr apart and signals passed on), `start -a`/`-i`,
//! `run -d -t`/`-i`, and `run -it` leaving a container running on Ctrl-P Ctrl-Q, through every
//! runtime plugin. A terminal is a real pty the test holds, with the attaching process as its
//! session leader, so that resizing it sends SIGWINCH as a terminal emulator's would.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::run::{busybox_image, can_run, ps_json, runtimes};
use crate::util::TestEnv;

/// A command on a pty that this test holds the master of.
struct Pty {
    master: std::fs::File,
    child: Child,
    seen: Vec<u8>,
}

impl Pty {
    /// Starts `cmd` as the session leader of a new pty of `rows`×`cols`.
    fn spawn(mut cmd: Command, rows: u16, cols: u16) -> Pty {
        let (mut m, mut s) = (0, 0);
        let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: openpty fills two descriptors; the termios pointer may be null.
        let r = unsafe { libc::openpty(&mut m, &mut s, std::ptr::null_mut(), std::ptr::null(), &ws) };
        assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: openpty returned these descriptors, now owned here.
        let (master, slave) = unsafe { (OwnedFd::from_raw_fd(m), OwnedFd::from_raw_fd(s)) };
        let f = std::fs::File::from(slave);
        cmd.stdin(f.try_clone().unwrap()).stdout(f.try_clone().unwrap()).stderr(f);
        use std::os::unix::process::CommandExt;
        // SAFETY: setsid and ioctl are async-signal-safe; they only affect the child.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                libc::ioctl(0, libc::TIOCSCTTY, 0);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("start strata on a pty");
        Pty { master: std::fs::File::from(master), child, seen: Vec::new() }
    }

    /// Reads until the output holds `needle` (after `from`); returns the output so far.
    #[track_caller]
    fn expect(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let text = String::from_utf8_lossy(&self.seen).into_owned();
            if text.contains(needle) {
                return text;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "timed out waiting for {needle:?} on the terminal; it shows:\n{text}");
            let mut p = libc::pollfd { fd: self.master.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd.
            if unsafe { libc::poll(&mut p, 1, 100) } > 0 {
                let mut buf = [0u8; 4096];
                match self.master.read(&mut buf) {
                    Ok(n) if n > 0 => self.seen.extend_from_slice(&buf[..n]),
                    // EIO: the command and every holder of the terminal are gone.
                    _ => panic!("the terminal closed before {needle:?}; it showed:\n{text}"),
                }
            }
        }
    }

    /// Forgets what was shown so far.
    fn clear(&mut self) {
        self.seen.clear();
    }

    fn send(&mut self, bytes: &[u8]) {
        self.master.write_all(bytes).unwrap();
    }

    fn resize(&self, rows: u16, cols: u16) {
        let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: TIOCSWINSZ reads a plain winsize.
        assert_eq!(unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) }, 0);
    }

    /// Waits for the command's exit code, draining the terminal meanwhile.
    #[track_caller]
    fn wait(mut self) -> (i32, String) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                let mut buf = [0u8; 4096];
                let mut p = libc::pollfd { fd: self.master.as_raw_fd(), events: libc::POLLIN, revents: 0 };
                // SAFETY: one valid pollfd.
                while unsafe { libc::poll(&mut p, 1, 50) } > 0 {
                    match self.master.read(&mut buf) {
                        Ok(n) if n > 0 => self.seen.extend_from_slice(&buf[..n]),
                        _ => break,
                    }
                }
                return (st.code().unwrap_or(-1), String::from_utf8_lossy(&self.seen).into_owned());
            }
            assert!(
                Instant::now() < deadline,
                "strata did not exit; the terminal shows:\n{}",
                String::from_utf8_lossy(&self.seen)
            );
            let mut p = libc::pollfd { fd: self.master.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd.
            if unsafe { libc::poll(&mut p, 1, 50) } > 0 {
                let mut buf = [0u8; 4096];
                if let Ok(n) = self.master.read(&mut buf) {
                    self.seen.extend_from_slice(&buf[..n]);
                }
            }
        }
    }
}

fn status(env: &TestEnv, name: &str) -> String {
    ps_json(env, name)["Status"].as_str().unwrap_or("").to_string()
}

/// A detached container with a terminal: attach sees the shell, sizes and resizes its terminal,
/// detaches with Ctrl-P Ctrl-Q leaving it running, attaches again and ends it; the terminal's
/// output is in the log. The same through every runtime plugin.
#[test]
fn attach_to_a_terminal_detach_and_come_back() {
    if !can_run() {
        return;
    }
    let env = TestEnv::new();
    busybox_image(&env, "bb:1");
    for rt in runtimes(&env) {
        let name = format!("tt-{rt}");
        env.run(&["run", "-dit", "--runtime", rt, "--name", &name, "bb:1", "sh"]).ok();
        assert!(status(&env, &name).starts_with("Up"), "{rt}: {}", status(&env, &name));

        let mut t = Pty::spawn(env.cmd(&["attach", &name]), 30, 90);
        t.send(b"tty; stty size\r");
        t.expect("30 90");
        t.expect("/dev/pts/");
        // SIGWINCH on this side: the container's terminal follows.
        t.resize(50, 132);
        std::thread::sleep(Duration::from_millis(200));
        t.clear();
        t.send(b"stty size\r");
        t.expect("50 132");
        // A Ctrl-P not followed by Ctrl-Q goes to the container (the shell recalls the last
        // line, then Ctrl-U clears it); the pair detaches.
        t.send(b"\x10");
        std::thread::sleep(Duration::from_millis(100));
        t.send(b"\x15");
        t.clear();
        t.send(b"echo p-$((1+1))\r");
        t.expect("p-2");
        t.send(b"\x10\x11");
        let (code, shown) = t.wait();
        assert_eq!(code, 1, "{rt}: detaching exits 1, as docker attach; the terminal showed:\n{shown}");
        assert!(shown.contains("read escape sequence"), "{rt}: {shown}");
        assert!(status(&env, &name).starts_with("Up"), "{rt}: still running after a detach: {}", status(&env, &name));

        // Attach again and end the shell: its exit code is attach's.
        let mut t = Pty::spawn(env.cmd(&["attach", &name]), 24, 80);
        t.send(b"echo again-$((6+1))\r");
        t.expect("again-7");
        t.send(b"exit 7\r");
        let (code, shown) = t.wait();
        assert_eq!(code, 7, "{rt}: {shown}");
        assert!(status(&env, &name).starts_with("Exited (7)"), "{rt}: {}", status(&env, &name));
        // The terminal's output was logged, as docker logs a tty container's.
        let logs = env.run(&["logs", &name]);
        assert!(logs.ok().contains("50 132") && logs.stdout.contains("again-7"), "{rt}: {}", logs.stdout);
        // Nothing to attach to any more.
        let r = env.run(&["attach", &name]);
        assert!(r.fails(1).contains("You cannot attach to a stopped container, start it first"), "{rt}");
        env.run(&["rm", &name]).ok();
    }
}

/// `run -it` in the foreground: the terminal is the container's, and the detach keys leave it
/// running (then `--detach-keys` chooses other keys, and `--rm` removes it on exit).
#[test]
fn run_with_a_terminal_detaches_and_attach_takes_other_keys() {
    if !can_run() {
        return;
    }
    let env = TestEnv::new();
    busybox_image(&env, "bb:1");
    let mut t = Pty::spawn(env.cmd(&["run", "-it", "--name", "fg", "bb:1", "sh"]), 33, 91);
    t.send(b"stty size; tty\r");
    t.expect("33 91");
    t.expect("/dev/pts/");
    t.send(b"\x10\x11");
    let (code, shown) = t.wait();
    assert_eq!(code, 1, "{shown}");
    assert!(status(&env, "fg").starts_with("Up"), "{}", status(&env, "fg"));

    // Other keys: ctrl-x,e detaches; ctrl-p ctrl-q is then plain input.
    let mut t = Pty::spawn(env.cmd(&["attach", "--detach-keys", "ctrl-x,e", "fg"]), 24, 80);
    t.send(b"\x10\x11echo still-here\r");
    t.expect("still-here");
    t.send(b"\x18e");
    let (code, shown) = t.wait();
    assert_eq!(code, 1, "{shown}");
    assert!(status(&env, "fg").starts_with("Up"));
    let r = env.run(&["attach", "--detach-keys", "ctrl-1", "fg"]);
    assert!(r.fails(125).contains("invalid detach keys"), "{}", r.stderr);
    env.run(&["rm", "-f", "fg"]).ok();

    // --rm: gone once the shell exits, and run exits with its code.
    let mut t = Pty::spawn(env.cmd(&["run", "--rm", "-it", "--name", "gone", "bb:1", "sh"]), 24, 80);
    t.send(b"exit 3\r");
    assert_eq!(t.wait().0, 3);
    assert_eq!(ps_json(&env, "gone"), serde_json::Value::Null);
}

/// Without a terminal: stdout and stderr stay apart, input reaches the container, signals sent
/// to attach reach it (`--sig-proxy`), and `start -a`/`-i` see the output from the first byte.
#[test]
fn attach_and_start_without_a_terminal() {
    if !can_run() {
        return;
    }
    let env = TestEnv::new();
    busybox_image(&env, "bb:1");
    for rt in runtimes(&env) {
        let name = format!("pi-{rt}");
        env.run(&["run", "-di", "--runtime", rt, "--name", &name, "bb:1", "sh"]).ok();
        let r = env.run_stdin(&["attach", &name], b"echo to-out; echo to-err >&2; exit 4\n");
        assert_eq!((r.code, r.stdout.as_str(), r.stderr.as_str()), (4, "to-out\n", "to-err\n"), "{rt}");
        assert!(status(&env, &name).starts_with("Exited (4)"), "{rt}");

        // start -a: output from the first byte, the exit code passed on.
        let s = format!("st-{rt}");
        env.run(&["create", "--runtime", rt, "--name", &s, "bb:1", "sh", "-c", "echo first; echo second >&2; exit 6"])
            .ok();
        let r = env.run(&["start", "-a", &s]);
        assert_eq!((r.code, r.stdout.as_str(), r.stderr.as_str()), (6, "first\n", "second\n"), "{rt}");
        // start -i: input too (a created -i container).
        let i = format!("si-{rt}");
        env.run(&["create", "-i", "--runtime", rt, "--name", &i, "bb:1", "sh", "-c", "read x; echo got $x; exit 5"])
            .ok();
        let r = env.run_stdin(&["start", "-ai", &i], b"yes\n");
        assert_eq!((r.code, r.stdout.as_str()), (5, "got yes\n"), "{rt}: {}", r.stderr);
        // Started again: the same again, not the earlier run's output.
        let r = env.run_stdin(&["start", "-ai", &i], b"again\n");
        assert_eq!((r.code, r.stdout.as_str()), (5, "got again\n"), "{rt}: {}", r.stderr);
        for n in [&name, &s, &i] {
            env.run(&["rm", n]).ok();
        }
    }

    // --sig-proxy (the default): a TERM sent to attach goes to the container.
    env.run(&[
        "run",
        "-d",
        "--name",
        "sp",
        "bb:1",
        "sh",
        "-c",
        "trap 'echo got-term; exit 3' TERM; while :; do echo tick; sleep 0.1; done",
    ])
    .ok();
    let mut a = env.cmd(&["attach", "--no-stdin", "sp"]);
    let mut child = a.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains("tick") {
        let n = out.read(&mut buf).unwrap();
        assert!(n > 0, "attach ended before any output");
        seen.extend_from_slice(&buf[..n]);
    }
    // SAFETY: kill(2) of our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    out.read_to_end(&mut seen).unwrap();
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(3), "{}", String::from_utf8_lossy(&seen));
    assert!(String::from_utf8_lossy(&seen).contains("got-term"));

    // Errors: no such container; a stopped one.
    let r = env.run(&["attach", "nope"]);
    assert!(r.code != 0 && r.stderr.contains("nope"), "{r:?}");
    env.run(&["create", "--name", "idle", "bb:1", "true"]).ok();
    assert!(env.run(&["attach", "idle"]).fails(1).contains("start it first"));
    assert!(env.run(&["start", "-a", "idle", "sp"]).fails(125).contains("cannot start and attach multiple"));
}

/// `exec -it`: a terminal of the caller's size that follows its resizes, relayed by the runtime
/// plugin; `exec -i` passes input, plain `exec` does not; `-d -t` is refused.
#[test]
fn exec_with_a_terminal_and_input() {
    if !can_run() {
        return;
    }
    let env = TestEnv::new();
    busybox_image(&env, "bb:1");
    for rt in runtimes(&env) {
        let name = format!("ex-{rt}");
        env.run(&["run", "-d", "--runtime", rt, "--name", &name, "bb:1", "sleep", "60"]).ok();
        let mut t = Pty::spawn(env.cmd(&["exec", "-it", &name, "sh"]), 22, 77);
        t.send(b"tty; stty size\r");
        t.expect("22 77");
        t.expect("/dev/pts/");
        t.resize(40, 100);
        std::thread::sleep(Duration::from_millis(200));
        t.clear();
        t.send(b"stty size\r");
        t.expect("40 100");
        t.send(b"exit 4\r");
        let (code, shown) = t.wait();
        assert_eq!(code, 4, "{rt}: {shown}");
        // The size is there before the command starts (`process.consoleSize`; crun 1.8 applies
        // it to `run` but not to `exec`, so its exec'd command may see 0x0 for an instant).
        if rt != "crun" {
            let mut t = Pty::spawn(env.cmd(&["exec", "-t", &name, "sh", "-c", "stty size"]), 19, 61);
            t.expect("19 61");
            assert_eq!(t.wait().0, 0, "{rt}");
        }
        assert_eq!(env.run_stdin(&["exec", "-i", &name, "cat"], b"piped\n").ok(), "piped\n", "{rt}");
        assert_eq!(env.run_stdin(&["exec", &name, "cat"], b"piped\n").ok(), "", "{rt}");
        assert!(env.run(&["exec", "-d", "-t", &name, "true"]).fails(125).contains("cannot be combined with -d"));
        env.run(&["rm", "-f", &name]).ok();
    }
}
