//! Containers on disk: `containers/<id>/` in the store holds `state.json` (this record, written
//! atomically), the OCI bundle (`config.json`, `rootfs/` where the overlay is mounted), the
//! container's writable layer (`upper/`, `work/`) and its `/etc` files.
//!
//! `state.json`'s `image` field is the image's manifest digest: the store's GC keeps every image
//! a container uses.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strata_store::{Digest, Store};

use crate::error::{Error, ErrorKind, Result};

/// Where a container stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Made, never started.
    Created,
    /// Its process runs.
    Running,
    /// Its process ended.
    Exited,
}

/// A container's record (`state.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Container {
    /// 64 hex digits.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// The image's manifest digest (a GC root).
    pub image: String,
    /// The image's ID (config digest), for `ps`.
    pub image_id: String,
    /// What the user named the image with.
    pub image_name: String,
    /// The command run (args), for `ps`.
    pub command: Vec<String>,
    /// When made (Unix seconds).
    pub created: i64,
    /// Status.
    pub status: Status,
    /// Process id while running.
    #[serde(default)]
    pub pid: Option<i32>,
    /// Start time (Unix seconds).
    #[serde(default)]
    pub started: Option<i64>,
    /// Exit code once exited.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// When it exited (Unix seconds).
    #[serde(default)]
    pub finished: Option<i64>,
    /// The runtime plugin that runs it (`runc`, `crun`, a path).
    pub runtime: String,
    /// Remove when it exits (`--rm`).
    #[serde(default)]
    pub auto_remove: bool,
    /// The process watching it while it runs: pid and start time (so a recycled pid is not
    /// mistaken for it).
    #[serde(default)]
    pub monitor: Option<(u32, u64)>,
    /// Named volumes it uses (read by the store's volume prune).
    #[serde(default)]
    pub volumes: Vec<String>,
    /// `-t`: its process has a terminal, whose master the monitor holds.
    #[serde(default)]
    pub tty: bool,
    /// `-i`: its standard input stays open for attached clients.
    #[serde(default)]
    pub open_stdin: bool,
    /// Its standard input closes when an attached client's input ends (`run -i`, as docker's
    /// StdinOnce); else it stays open for the next attach.
    #[serde(default)]
    pub stdin_once: bool,
}

/// The exit code recorded for a container whose monitor died (killed like `kill -9`).
pub const LOST_EXIT_CODE: i32 = 137;

/// The store's `containers/` folder.
pub fn containers_dir(store: &Store) -> PathBuf {
    store.root().join("containers")
}

impl Container {
    /// This container's folder.
    pub fn dir(&self, store: &Store) -> PathBuf {
        containers_dir(store).join(&self.id)
    }
    /// The bundle's rootfs mount point.
    pub fn rootfs(&self, store: &Store) -> PathBuf {
        self.dir(store).join("rootfs")
    }
    /// The 12-digit ID `ps` shows.
    pub fn short_id(&self) -> &str {
        &self.id[..12]
    }

    /// Writes the record atomically.
    pub fn save(&self, store: &Store) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self).expect("a container record serialises");
        strata_store::fsutil::write_atomic(&self.dir(store).join("state.json"), &bytes, 0o644)?;
        Ok(())
    }

    /// Replaces the record atomically but not durably: for states a crash ends anyway (running:
    /// a reboot ends the processes, and a record left running is read as exited, see
    /// [`Container::lost`]) and for `--rm` containers, which a crash leaves to be pruned.
    pub fn save_volatile(&self, store: &Store) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self).expect("a container record serialises");
        strata_store::fsutil::replace_volatile(&self.dir(store).join("state.json"), &bytes, 0o644)?;
        Ok(())
    }

    /// Reads the record of container `id`.
    pub fn load(store: &Store, id: &str) -> Result<Container> {
        let p = containers_dir(store).join(id).join("state.json");
        let bytes = std::fs::read(&p).map_err(|e| Error::io("read", &p, e))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::new(ErrorKind::Io, format!("{} is not a container record", p.display())).with_source(e))
    }

    /// Whether it is recorded as running but its monitor is gone (killed): nobody will record
    /// its exit, so it must not be reported as running forever.
    pub fn lost(&self) -> bool {
        self.status == Status::Running
            && self.monitor.is_none_or(|(pid, start)| !strata_store::fsutil::process_alive(pid, start))
    }

    /// Every container, newest first.
    pub fn list(store: &Store) -> Result<Vec<Container>> {
        let dir = containers_dir(store);
        let mut out = Vec::new();
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(Error::io("read", &dir, e)),
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
                if let Ok(c) = Container::load(store, &name) {
                    out.push(c);
                }
            }
        }
        out.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Finds a container by full name, full ID or unique ID prefix, as docker does.
    pub fn find(store: &Store, what: &str) -> Result<Container> {
        let all = Container::list(store)?;
        if let Some(c) = all.iter().find(|c| c.name == what || c.id == what) {
            return Ok(c.clone());
        }
        let hits: Vec<&Container> = all.iter().filter(|c| !what.is_empty() && c.id.starts_with(what)).collect();
        match hits.len() {
            1 => Ok(hits[0].clone()),
            0 => Err(Error::new(ErrorKind::NotFound, format!("no such container: {what}"))),
            n => Err(Error::invalid(format!("multiple IDs found with provided prefix: {what} ({n} containers)"))),
        }
    }
}

/// A new random container ID: 64 hex digits from the kernel's random source.
pub fn new_id() -> Result<String> {
    let mut b = [0u8; 32];
    rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty())
        .map_err(|e| Error::new(ErrorKind::Io, "cannot read random bytes").with_source(std::io::Error::from(e)))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

const ADJECTIVES: &[&str] = &[
    "admiring",
    "adoring",
    "affectionate",
    "agitated",
    "amazing",
    "angry",
    "awesome",
    "beautiful",
    "blissful",
    "bold",
    "boring",
    "brave",
    "busy",
    "charming",
    "clever",
    "compassionate",
    "competent",
    "condescending",
    "confident",
    "cool",
    "cranky",
    "crazy",
    "dazzling",
    "determined",
    "distracted",
    "dreamy",
    "eager",
    "ecstatic",
    "elastic",
    "elated",
    "elegant",
    "eloquent",
    "epic",
    "exciting",
    "fervent",
    "festive",
    "flamboyant",
    "focused",
    "friendly",
    "frosty",
    "funny",
    "gallant",
    "gifted",
    "goofy",
    "gracious",
    "great",
    "happy",
    "hardcore",
    "heuristic",
    "hopeful",
    "hungry",
    "infallible",
    "inspiring",
    "intelligent",
    "interesting",
    "jolly",
    "jovial",
    "keen",
    "kind",
    "laughing",
    "loving",
    "lucid",
    "magical",
    "modest",
    "musing",
    "mystifying",
    "naughty",
    "nervous",
    "nice",
    "nifty",
    "nostalgic",
    "objective",
    "optimistic",
    "peaceful",
    "pedantic",
    "pensive",
    "practical",
    "priceless",
    "quirky",
    "quizzical",
    "recursing",
    "relaxed",
    "reverent",
    "romantic",
    "sad",
    "serene",
    "sharp",
    "silly",
    "sleepy",
    "stoic",
    "strange",
    "stupefied",
    "suspicious",
    "sweet",
    "tender",
    "thirsty",
    "trusting",
    "unruffled",
    "upbeat",
    "vibrant",
    "vigilant",
    "vigorous",
    "wizardly",
    "wonderful",
    "xenodochial",
    "youthful",
    "zealous",
    "zen",
];

const NAMES: &[&str] = &[
    "albattani",
    "allen",
    "almeida",
    "archimedes",
    "ardinghelli",
    "aryabhata",
    "austin",
    "babbage",
    "banach",
    "bardeen",
    "bartik",
    "bassi",
    "bell",
    "bhabha",
    "bhaskara",
    "blackwell",
    "bohr",
    "booth",
    "borg",
    "bose",
    "boyd",
    "brahmagupta",
    "brattain",
    "brown",
    "carson",
    "chandrasekhar",
    "clarke",
    "colden",
    "cori",
    "cray",
    "curie",
    "darwin",
    "davinci",
    "dijkstra",
    "dubinsky",
    "easley",
    "edison",
    "einstein",
    "elion",
    "engelbart",
    "euclid",
    "euler",
    "fermat",
    "fermi",
    "feynman",
    "franklin",
    "galileo",
    "gates",
    "goldberg",
    "goldstine",
    "goldwasser",
    "golick",
    "goodall",
    "haibt",
    "hamilton",
    "hawking",
    "heisenberg",
    "hermann",
    "hodgkin",
    "hoover",
    "hopper",
    "hugle",
    "hypatia",
    "jackson",
    "jang",
    "jennings",
    "jepsen",
    "johnson",
    "joliot",
    "jones",
    "kalam",
    "kapitsa",
    "kare",
    "keller",
    "kepler",
    "khorana",
    "kilby",
    "kirch",
    "knuth",
    "kowalevski",
    "lalande",
    "lamarr",
    "lamport",
    "leakey",
    "leavitt",
    "lewin",
    "lichterman",
    "liskov",
    "lovelace",
    "lumiere",
    "mahavira",
    "margulis",
    "matsumoto",
    "mayer",
    "mccarthy",
    "mcclintock",
    "mclean",
    "mcnulty",
    "meitner",
    "meninsky",
    "mestorf",
    "minsky",
    "mirzakhani",
    "morse",
    "murdock",
    "napier",
    "nash",
    "neumann",
    "newton",
    "nightingale",
    "nobel",
    "noether",
    "northcutt",
    "noyce",
    "panini",
    "pare",
    "pasteur",
    "payne",
    "perlman",
    "pike",
    "poincare",
    "poitras",
    "ptolemy",
    "raman",
    "ramanujan",
    "ride",
    "ritchie",
    "roentgen",
    "rosalind",
    "saha",
    "sammet",
    "shaw",
    "shirley",
    "shockley",
    "sinoussi",
    "snyder",
    "spence",
    "stallman",
    "stonebraker",
    "swanson",
    "swartz",
    "swirles",
    "tesla",
    "thompson",
    "torvalds",
    "turing",
    "varahamihira",
    "visvesvaraya",
    "volhard",
    "wescoff",
    "wiles",
    "williams",
    "wilson",
    "wing",
    "wozniak",
    "wright",
    "yalow",
    "yonath",
];

/// A docker-style name (`adjective_scientist`) not used by any of `taken`.
pub fn generate_name(taken: &[String]) -> Result<String> {
    for attempt in 0..100u32 {
        let mut b = [0u8; 4];
        rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty())
            .map_err(|e| Error::new(ErrorKind::Io, "cannot read random bytes").with_source(std::io::Error::from(e)))?;
        let a = ADJECTIVES[(usize::from(b[0]) * 256 + usize::from(b[1])) % ADJECTIVES.len()];
        let n = NAMES[(usize::from(b[2]) * 256 + usize::from(b[3])) % NAMES.len()];
        // docker never names a container boring_wozniak ("Steve Wozniak is not boring").
        if a == "boring" && n == "wozniak" {
            continue;
        }
        let name = if attempt < 10 { format!("{a}_{n}") } else { format!("{a}_{n}{attempt}") };
        if !taken.contains(&name) {
            return Ok(name);
        }
    }
    Err(Error::new(ErrorKind::AlreadyExists, "cannot find a free container name"))
}

/// Checks a `--name`: docker's `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn check_name(name: &str) -> Result<()> {
    let ok = name.len() >= 2
        && name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !ok {
        return Err(Error::invalid(format!(
            "invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )));
    }
    Ok(())
}

/// Creates the container's folder and record (status `created`); `existing` are the store's
/// containers (their names are taken).
pub fn create_record(store: &Store, mut c: Container, existing: &[Container]) -> Result<Container> {
    if let Some(other) = existing.iter().find(|o| o.name == c.name) {
        return Err(Error::new(
            ErrorKind::AlreadyExists,
            format!(
                "Conflict. The container name \"/{}\" is already in use by container \"{}\". You have to remove (or rename) that container to be able to reuse that name.",
                c.name, other.id
            ),
        ));
    }
    if c.id.is_empty() {
        c.id = new_id()?;
    }
    let dir = c.dir(store);
    for sub in ["rootfs", "upper", "work"] {
        std::fs::create_dir_all(dir.join(sub)).map_err(|e| Error::io("create", &dir.join(sub), e))?;
    }
    if c.auto_remove {
        c.save_volatile(store)?;
    } else {
        c.save(store)?;
    }
    Ok(c)
}

/// Container folders without a readable record, older than `min_age`: what a crash leaves of
/// a container whose record was not durable yet (a `--rm` one). Younger ones may be in the
/// middle of being made.
pub fn orphans(store: &Store, min_age: std::time::Duration) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(containers_dir(store)) else { return Vec::new() };
    rd.flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.len() == 64
                && name.bytes().all(|b| b.is_ascii_hexdigit())
                && Container::load(store, &name).is_err()
                && e.metadata()
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|a| a >= min_age)
        })
        .map(|e| e.path())
        .collect()
}

/// Removes a container folder that has no record (see [`orphans`]).
pub fn remove_orphan(dir: &Path) -> Result<()> {
    crate::sys::unmount(&dir.join("rootfs"))?;
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", dir, e)),
    }
}

/// Removes the container's folder (its rootfs must be unmounted).
pub fn remove_dir(store: &Store, c: &Container) -> Result<()> {
    let dir = c.dir(store);
    crate::sys::unmount(&dir.join("rootfs"))?;
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", &dir, e)),
    }
}

/// The image's manifest digest as recorded.
pub fn image_digest(c: &Container) -> Option<Digest> {
    strata_store::digest::parse(&c.image).ok()
}

/// Whether `dir` exists and is a directory.
pub fn is_dir(dir: &Path) -> bool {
    std::fs::metadata(dir).map(|m| m.is_dir()).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for n in ["web", "a1", "my_app.v2-x"] {
            check_name(n).unwrap();
        }
        for n in ["", "a", "-x", "_x", "a b", "a/b"] {
            assert!(check_name(n).is_err(), "{n}");
        }
        let n = generate_name(&[]).unwrap();
        assert!(n.contains('_'), "{n}");
        check_name(&n).unwrap();
        assert_eq!(new_id().unwrap().len(), 64);
    }
}
