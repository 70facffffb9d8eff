//! The store root: an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/`) plus the
//! store's own folders (`snapshots/`, `containers/`, `volumes/`, `tmp/`), its lock and its leases.
//!
//! Lifecycle of every write: work happens under `tmp/` in a name that carries the writer's pid and
//! start time, then is renamed into place. Anything left in `tmp/` by a process that is gone is
//! garbage, and the sweep of [`crate::gc`] removes it.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::digest::{self, Digest};
use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::fsutil;

/// Folder names under the root.
pub(crate) const BLOBS: &str = "blobs/sha256";
pub(crate) const SNAPSHOTS: &str = "snapshots";
pub(crate) const CONTAINERS: &str = "containers";
pub(crate) const VOLUMES: &str = "volumes";
pub(crate) const TMP: &str = "tmp";
pub(crate) const LEASES: &str = "tmp/leases";
const LOCK: &str = ".strata.lock";
const OCI_LAYOUT: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;

/// An open store.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    lock_timeout: Duration,
}

impl Store {
    /// Opens the store at `root`, creating an empty OCI layout there if it holds none.
    ///
    /// A directory that has files but no `oci-layout` is refused, so a mistyped `--root` never
    /// scatters store folders over unrelated data.
    pub fn open(root: impl AsRef<Path>) -> Result<Store> {
        let root = root.as_ref().to_path_buf();
        fs::create_dir_all(&root).at("cannot create store root", &root)?;
        let layout = root.join("oci-layout");
        let lock_timeout = std::env::var("STRATA_LOCK_TIMEOUT")
            .ok()
            .and_then(|s| s.parse().ok())
            .map(Duration::from_secs_f64)
            .unwrap_or(Duration::from_secs(60));
        let store = Store { root: root.clone(), lock_timeout };
        if !layout.exists() {
            // First use: initialise under the lock, so that several processes opening a new store
            // at once agree on one layout.
            // Checked before the lock file is made, so a wrong --root is left as it was.
            refuse_foreign(&root)?;
            let _lock = store.lock()?;
            if !layout.exists() {
                refuse_foreign(&root)?;
                for dir in [BLOBS, SNAPSHOTS, CONTAINERS, VOLUMES, TMP, LEASES] {
                    let p = root.join(dir);
                    fs::create_dir_all(&p).at("cannot create", &p)?;
                }
                fsutil::write_atomic(
                    &root.join("index.json"),
                    br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#,
                    0o644,
                )?;
                // Written last: its presence says the layout is complete.
                fsutil::write_atomic(&layout, OCI_LAYOUT.as_bytes(), 0o644)?;
            }
        }
        let s = fs::read_to_string(&layout).at("cannot read", &layout)?;
        let v: serde_json::Value = serde_json::from_str(&s)
            .map_err(|e| Error::invalid_content(format!("{} is not valid JSON", layout.display())).with_source(e))?;
        if v.get("imageLayoutVersion").and_then(|v| v.as_str()) != Some("1.0.0") {
            return Err(Error::invalid_content(format!(
                "{}: unsupported imageLayoutVersion (expected 1.0.0)",
                layout.display()
            )));
        }
        for dir in [BLOBS, SNAPSHOTS, CONTAINERS, VOLUMES, TMP, LEASES] {
            let p = root.join(dir);
            if !p.is_dir() {
                fs::create_dir_all(&p).at("cannot create", &p)?;
            }
        }
        Ok(store)
    }

    /// The root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob `d` lives (whether or not it is there).
    pub fn blob_path(&self, d: &Digest) -> Result<PathBuf> {
        Ok(self.root.join(BLOBS).join(digest::hex(d)?))
    }

    /// Where the snapshot of the layer with diff ID `d` lives.
    pub fn snapshot_path(&self, diff_id: &Digest) -> Result<PathBuf> {
        Ok(self.root.join(SNAPSHOTS).join(digest::hex(diff_id)?))
    }

    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// A fresh name under `tmp/` owned by this process: `KIND-PID-START-UNIQUE`.
    pub(crate) fn tmp_path(&self, kind: &str) -> PathBuf {
        let me = Owner::me();
        self.root.join(TMP).join(format!("{kind}-{}-{}-{}", me.pid, me.start, fsutil::unique()))
    }

    /// Takes the store's exclusive lock, waiting up to `STRATA_LOCK_TIMEOUT` seconds (60 by
    /// default) for another `strata` process to release it.
    pub fn lock(&self) -> Result<StoreLock> {
        let path = self.root.join(LOCK);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .at("cannot open lock", &path)?;
        let start = Instant::now();
        let mut pause = Duration::from_millis(2);
        loop {
            match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => return Ok(StoreLock { _file: file }),
                Err(e) if e == rustix::io::Errno::WOULDBLOCK || e == rustix::io::Errno::INTR => {
                    if start.elapsed() >= self.lock_timeout {
                        return Err(Error::new(
                            ErrorKind::Locked,
                            format!(
                                "the store {} is locked by another strata process; waited {:.0} s (wait for it to finish, or set STRATA_LOCK_TIMEOUT)",
                                self.root.display(),
                                self.lock_timeout.as_secs_f64()
                            ),
                        ));
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                Err(e) => return Err(Error::io("cannot lock", &path, e.into())),
            }
        }
    }

    /// Starts a lease: blobs and snapshots added to it are roots for GC until it is dropped,
    /// or its process dies, or `ttl` passes.
    pub fn lease(&self, ttl: Duration) -> Result<Lease> {
        let me = Owner::me();
        let path = self.root.join(LEASES).join(format!("{}-{}-{}.json", me.pid, me.start, fsutil::unique()));
        let lease = Lease {
            path,
            record: std::sync::Mutex::new(LeaseRecord {
                pid: me.pid,
                start: me.start,
                expires: now_unix() + ttl.as_secs() as i64,
                digests: Vec::new(),
            }),
        };
        lease.save()?;
        Ok(lease)
    }
}

/// Refuses to make a store in a directory that holds anything but an unfinished store.
fn refuse_foreign(root: &Path) -> Result<()> {
    let nonempty = fs::read_dir(root).at("cannot read store root", root)?.filter_map(|e| e.ok()).any(|e| {
        // What an initialisation interrupted by a crash leaves is ours to finish.
        let n = e.file_name();
        let n = n.to_string_lossy();
        !(n == LOCK
            || ["blobs", SNAPSHOTS, CONTAINERS, VOLUMES, TMP, "index.json"].contains(&n.as_ref())
            || n.starts_with(".index.json.tmp")
            || n.starts_with(".oci-layout.tmp"))
    });
    if nonempty {
        return Err(Error::invalid_argument(format!(
            "{} is not empty and is not a strata store (no oci-layout file): choose another --root",
            root.display()
        )));
    }
    Ok(())
}

/// Holds the store's exclusive lock until dropped.
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
}

/// A process as owner of temp files and leases: pid plus start time, so a recycled pid is not
/// mistaken for the owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Owner {
    pub pid: u32,
    pub start: u64,
}

impl Owner {
    pub fn me() -> Owner {
        use std::sync::OnceLock;
        static ME: OnceLock<Owner> = OnceLock::new();
        *ME.get_or_init(|| {
            let pid = std::process::id();
            Owner { pid, start: fsutil::process_start_ticks(pid).unwrap_or(0) }
        })
    }

    /// The owner encoded in a temp name `KIND-PID-START-…`.
    pub fn from_tmp_name(name: &str) -> Option<Owner> {
        let mut it = name.split('-');
        it.next()?;
        let pid = it.next()?.parse().ok()?;
        let start = it.next()?.trim_end_matches(".json").parse().ok()?;
        Some(Owner { pid, start })
    }

    pub fn alive(&self) -> bool {
        fsutil::process_alive(self.pid, self.start)
    }
}

/// Seconds since the epoch.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LeaseRecord {
    pub pid: u32,
    pub start: u64,
    pub expires: i64,
    pub digests: Vec<String>,
}

impl LeaseRecord {
    /// A lease protects while its process lives and it has not expired.
    pub fn live(&self, now: i64) -> bool {
        now < self.expires && fsutil::process_alive(self.pid, self.start)
    }
}

/// Protects blobs and snapshots of an operation in flight from GC. The digest is added *before*
/// the blob or snapshot is renamed into place, and GC lists content before it reads leases, so
/// anything GC can see is already covered.
#[derive(Debug)]
pub struct Lease {
    path: PathBuf,
    record: std::sync::Mutex<LeaseRecord>,
}

impl Lease {
    /// Adds `d` (a blob digest or a snapshot's diff ID) to the lease.
    pub fn add(&self, d: &Digest) -> Result<()> {
        let s = d.to_string();
        let mut rec = self.record.lock().unwrap_or_else(|e| e.into_inner());
        if !rec.digests.contains(&s) {
            rec.digests.push(s);
            Self::save_record(&self.path, &rec)?;
        }
        Ok(())
    }

    fn save(&self) -> Result<()> {
        let rec = self.record.lock().unwrap_or_else(|e| e.into_inner());
        Self::save_record(&self.path, &rec)
    }

    fn save_record(path: &Path, rec: &LeaseRecord) -> Result<()> {
        let bytes = serde_json::to_vec(rec).expect("lease serialises");
        // A lease protects only while its process lives, so it need not survive a crash.
        fsutil::replace_volatile(path, &bytes, 0o600)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Reads every lease file; unreadable ones are skipped (they are being written).
pub(crate) fn read_leases(store: &Store) -> Vec<(PathBuf, LeaseRecord)> {
    let dir = store.path(LEASES);
    let Ok(rd) = fs::read_dir(&dir) else { return Vec::new() };
    rd.filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name().to_string_lossy().ends_with(".json") && !e.file_name().to_string_lossy().starts_with('.')
        })
        .filter_map(|e| {
            let bytes = fs::read(e.path()).ok()?;
            Some((e.path(), serde_json::from_slice(&bytes).ok()?))
        })
        .collect()
}
