//! The per-container monitor: the `strata` binary re-executed (`strata __monitor ID`) for a
//! detached container. It owns the container's output, writes the log (one JSON object per line
//! of output, with its stream and time), records the exit code in `state.json` atomically and
//! removes `--rm` containers. If the monitor itself is killed, readers of the record see that its
//! process is gone ([`crate::container::Container::lost`]) and record the container as exited.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use strata_store::Store;

use crate::container::Container;
use crate::error::{Error, Result};
use crate::lifecycle;
use crate::runtime::Runtime;

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

/// Runs container `id` (prepared, status created) to its end, logging its output; returns its
/// exit code.
pub fn monitor(store: &Store, id: &str, runtime: &dyn Runtime) -> Result<i32> {
    let mut c = Container::load(store, id)?;
    let bundle = c.dir(store);
    let log = open_log(store, &c)?;
    let mut child = match runtime.spawn(&c.id, &bundle, Stdio::null(), Stdio::piped(), Stdio::piped()) {
        Ok(ch) => ch,
        Err(e) => {
            lifecycle::finish(store, c, 125)?;
            return Err(e);
        }
    };
    let out = child.stdout.take().expect("stdout is piped");
    let err = child.stderr.take().expect("stderr is piped");
    let (l1, l2) = (log.clone(), log.clone());
    let t1 = std::thread::spawn(move || pump(out, "stdout", l1, None));
    let t2 = std::thread::spawn(move || pump(err, "stderr", l2, None));
    // Running means the runtime knows the container (so `exec`, `kill` and `stop` reach it):
    // wait for that, or for the runtime to give up.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while c.pid.is_none() && std::time::Instant::now() < deadline {
        c.pid = runtime.pid(&c.id);
        if c.pid.is_some() || child.try_wait().ok().flatten().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    lifecycle::mark_running(store, &mut c)?;
    let status = child.wait().map_err(|e| Error::io("wait for", Path::new(runtime.name()), e))?;
    let _ = t1.join();
    let _ = t2.join();
    use std::os::unix::process::ExitStatusExt;
    let code = status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    // Reload: `stop`/`kill` may have written meanwhile; the exit is ours to record.
    let c = Container::load(store, id).unwrap_or(c);
    lifecycle::finish(store, c, code)?;
    Ok(code)
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
