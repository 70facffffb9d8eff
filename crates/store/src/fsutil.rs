//! Crash-safe file primitives: every file the store writes goes to a temp name in the same
//! directory, is fsynced, renamed over its final name, and the directory is fsynced, so a crash
//! leaves either the old or the new content, never a torn one.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::error::{IoContext, Result};

/// Writes `bytes` to `path` atomically (temp + fsync + rename + fsync of the directory).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    write_replace(path, bytes, mode, true)
}

/// Replaces `path` atomically but without making it durable: for files whose meaning ends with
/// the process that writes them (leases), where readers must never see a torn file but a crash
/// makes the content moot anyway.
pub fn replace_volatile(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    write_replace(path, bytes, mode, false)
}

fn write_replace(path: &Path, bytes: &[u8], mode: u32, durable: bool) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    // `.NAME.tmp-PID-START-…`: GC removes it if a crash leaves it and the process is gone.
    let pid = std::process::id();
    let tmp = dir.join(format!(".{name}.tmp-{pid}-{}-{}", process_start_ticks(pid).unwrap_or(0), unique()));
    let res = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp).at("cannot create", &tmp)?;
        f.write_all(bytes).at("cannot write", &tmp)?;
        if durable {
            f.sync_all().at("cannot sync", &tmp)?;
        }
        drop(f);
        fs::rename(&tmp, path).at("cannot rename into place", path)?;
        if durable {
            sync_dir(dir)?;
        }
        Ok(())
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

/// Writes several files of one directory atomically and durably at the cost of one directory
/// fsync: each goes to a temp name and is fsynced, then all are renamed into place, then the
/// directory is fsynced once. A crash leaves each file old or new, never torn.
pub fn write_atomic_all(dir: &Path, files: &[(&str, &[u8], u32)]) -> Result<()> {
    replace_all(dir, files, true)
}

/// Replaces several files of one directory atomically, without making them durable (see
/// [`replace_volatile`]): for files that a crash makes moot.
pub fn replace_all_volatile(dir: &Path, files: &[(&str, &[u8], u32)]) -> Result<()> {
    replace_all(dir, files, false)
}

fn replace_all(dir: &Path, files: &[(&str, &[u8], u32)], durable: bool) -> Result<()> {
    let pid = std::process::id();
    let start = process_start_ticks(pid).unwrap_or(0);
    let mut temps = Vec::with_capacity(files.len());
    let res = (|| {
        for (name, bytes, mode) in files {
            let tmp = dir.join(format!(".{name}.tmp-{pid}-{start}-{}", unique()));
            temps.push(tmp.clone());
            let mut f =
                OpenOptions::new().write(true).create_new(true).mode(*mode).open(&tmp).at("cannot create", &tmp)?;
            f.write_all(bytes).at("cannot write", &tmp)?;
            if durable {
                f.sync_all().at("cannot sync", &tmp)?;
            }
        }
        for ((name, _, _), tmp) in files.iter().zip(&temps) {
            let dest = dir.join(name);
            fs::rename(tmp, &dest).at("cannot rename into place", &dest)?;
        }
        if durable {
            sync_dir(dir)?;
        }
        Ok(())
    })();
    if res.is_err() {
        for t in &temps {
            let _ = fs::remove_file(t);
        }
    }
    res
}

/// fsyncs a directory so that a rename or create in it is durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).at("cannot sync directory", dir)
}

/// A process-unique counter mixed with the time, for temp names.
pub fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{:x}{:08x}", N.fetch_add(1, Ordering::Relaxed), t)
}

/// Removes a directory tree if it exists; a missing one is fine.
pub fn remove_tree(path: &Path) -> Result<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(crate::Error::io("cannot remove", path, e)),
    }
}

/// Whether process `pid` is alive and is the process that started at `start_ticks` (so that a
/// recycled pid does not keep a dead process's lease or temp files alive).
pub fn process_alive(pid: u32, start_ticks: u64) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    let Some(rest) = stat.rfind(')').and_then(|i| stat.get(i + 2..)) else { return false };
    let mut fields = rest.split(' ');
    // A zombie (killed, not yet reaped by its parent) is dead for our purposes.
    if matches!(fields.next(), Some("Z" | "X" | "x")) {
        return false;
    }
    match fields.nth(18).and_then(|t| t.parse::<u64>().ok()) {
        Some(t) => start_ticks == 0 || t == start_ticks,
        None => false,
    }
}

/// The start time of `pid` in clock ticks since boot (field 22 of /proc/PID/stat).
pub fn process_start_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

#[cfg(test)]
mod batch_tests {
    use super::*;

    #[test]
    fn write_atomic_all_writes_every_file_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("b"), b"old").unwrap();
        write_atomic_all(d.path(), &[("a", b"one", 0o600), ("b", b"two", 0o644)]).unwrap();
        assert_eq!(fs::read(d.path().join("a")).unwrap(), b"one");
        assert_eq!(fs::read(d.path().join("b")).unwrap(), b"two");
        let names: Vec<String> =
            fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert_eq!(names.len(), 2, "{names:?}");
        // A folder that does not exist: an error, nothing left behind.
        let missing = d.path().join("nope");
        assert!(write_atomic_all(&missing, &[("a", b"x", 0o600)]).is_err());
        assert!(!missing.exists());
    }
}
