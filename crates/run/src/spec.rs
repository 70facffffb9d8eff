//! The OCI runtime config (`config.json`) for a container, built the way docker builds it.
//!
//! `run`/`create` turn the user's flags into [`RunOptions`]. When the container's root file system
//! is mounted, [`resolve_user`] reads its `/etc/passwd` and `/etc/group` (never following a
//! symbolic link out of it), and [`build_spec`] combines the image config, the options and the user
//! into a [`Spec`]: the command ([`process_args`]), the environment ([`environment`]), the working
//! directory ([`working_dir`]), docker's default mounts, capabilities, namespaces, masked and
//! read-only paths, and the cgroup limits. Each rule cites the docker (moby) or runc behaviour it
//! copies. Apart from the rootfs's user files, the only inputs read from the host are the facts
//! docker reads too: the last capability the kernel knows, the number of CPUs, and the host name
//! for `--network host`.
//!
//! ```
//! use strata_run::spec::{self, RunOptions};
//! # let dir = tempfile::tempdir().unwrap();
//! # let rootfs = dir.path();
//! let opts = RunOptions { cmd: vec!["sh".into(), "-c".into(), "id".into()], ..Default::default() };
//! let user = spec::resolve_user(rootfs, spec::user_spec(None, &opts))?;
//! let spec = spec::build_spec(None, &opts, &user, "4f0c3a9d2b1e77aa", rootfs, &[])?;
//! assert_eq!(spec.hostname().as_deref(), Some("4f0c3a9d2b1e"));
//! # Ok::<(), strata_run::Error>(())
//! ```

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use oci_spec::image::Config;
use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroup, LinuxDeviceCgroupBuilder,
    LinuxDeviceType, LinuxMemoryBuilder, LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder,
    LinuxResources, LinuxResourcesBuilder, Mount, MountBuilder, ProcessBuilder, RootBuilder, Spec, SpecBuilder,
    UserBuilder,
};

use crate::error::{Error, ErrorKind, Result};

/// docker's `PATH` for a container whose image sets none (moby `oci.DefaultPathEnv`).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The network a container gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Network {
    /// A new network namespace with only the loopback interface (the default).
    #[default]
    Private,
    /// The host's network namespace (`--network host`).
    Host,
    /// `--network none`: here the same as [`Network::Private`], a new namespace with loopback.
    None,
}

/// What a [`MountSpec`] mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountKind {
    /// A host directory or file bound into the container (`-v`, `--mount type=bind`).
    Bind,
    /// A fresh tmpfs (`--tmpfs`, `--mount type=tmpfs`).
    Tmpfs,
}

/// A mount for the container, already resolved to a host path (the caller handles named
/// volumes and creates missing directories).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    /// Bind or tmpfs.
    pub kind: MountKind,
    /// The host path to bind; ignored for a tmpfs.
    pub source: PathBuf,
    /// The absolute path in the container.
    pub target: String,
    /// Mount read-only.
    pub readonly: bool,
}

/// What the user asked for on `run`/`create`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunOptions {
    /// The arguments after IMAGE; they replace the image's `Cmd` when not empty.
    pub cmd: Vec<String>,
    /// `--entrypoint`: replaces the image's `Entrypoint` (and drops its `Cmd`); `Some("")` clears it.
    pub entrypoint: Option<String>,
    /// `KEY=VAL` from `--env-file` then `-e`, as [`parse_env_file`] and [`parse_env`] return them;
    /// a bare `KEY` unsets that variable (docker's `-e KEY` when `KEY` is not set on the client).
    pub env: Vec<String>,
    /// `-w`: the working directory; absolute.
    pub workdir: Option<String>,
    /// `-u`: `UID[:GID]` or `NAME[:GROUP]`; `None` (or empty) runs the image's `User`.
    pub user: Option<String>,
    /// `--hostname`; by default the first 12 characters of the container ID (see [`container_hostname`]).
    pub hostname: Option<String>,
    /// `-t`: give the process a terminal.
    pub tty: bool,
    /// `--read-only`: mount the root file system read-only.
    pub read_only: bool,
    /// `--init`: the runtime's own init is PID 1 (reaps zombies, forwards signals); recorded as
    /// the [`INIT_ANNOTATION`] annotation, which the built-in runtime reads.
    pub init: bool,
    /// `--network`.
    pub network: Network,
    /// `--cap-add`: `NET_ADMIN`, `CAP_NET_ADMIN` or `ALL`, in any case.
    pub cap_add: Vec<String>,
    /// `--cap-drop`: as `cap_add`.
    pub cap_drop: Vec<String>,
    /// `--memory` in bytes (see [`parse_memory`]); 0 means no limit.
    pub memory: Option<i64>,
    /// `--cpus`: the number of CPUs' worth of time; 0 means no limit.
    pub cpus: Option<f64>,
    /// `--pids-limit`; 0 or less means no limit.
    pub pids_limit: Option<i64>,
    /// `-v`, `--mount`, `--tmpfs`, resolved.
    pub mounts: Vec<MountSpec>,
    /// Reserved for a later step (a writable `/sys`); not used yet.
    pub privileged_sysfs: bool,
}

/// The user the container's process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// User ID.
    pub uid: u32,
    /// Primary group ID.
    pub gid: u32,
    /// The groups the process is in: the primary group first (as docker lists it), then every
    /// group of `/etc/group` naming the user.
    pub additional_gids: Vec<u32>,
    /// The home directory from the user's `/etc/passwd` entry, when it has one.
    pub home: Option<String>,
}

/// The process arguments, by docker's rules: the image's `Entrypoint` followed by its `Cmd`;
/// arguments after IMAGE replace `Cmd`; `--entrypoint X` replaces `Entrypoint` with `[X]` and
/// also drops the image's `Cmd`; `--entrypoint ""` clears `Entrypoint`.
///
/// An `InvalidArgument` error "no command specified" when nothing is left (docker's words).
pub fn process_args(config: Option<&Config>, opts: &RunOptions) -> Result<Vec<String>> {
    let image_entrypoint = config.and_then(|c| c.entrypoint().clone()).unwrap_or_default();
    let image_cmd = config.and_then(|c| c.cmd().clone()).unwrap_or_default();
    // moby `daemon/commit.go` merge(): the image's Cmd and Entrypoint are only used when the user
    // gave no entrypoint; the docker CLI turns `--entrypoint ""` into `[""]`.
    let (mut entrypoint, cmd) = match &opts.entrypoint {
        Some(e) => (vec![e.clone()], opts.cmd.clone()),
        None if opts.cmd.is_empty() => (image_entrypoint, image_cmd),
        None => (image_entrypoint, opts.cmd.clone()),
    };
    // moby mergeAndVerifyConfig(): "Reset the Entrypoint if it is [""]".
    if entrypoint.len() == 1 && entrypoint[0].is_empty() {
        entrypoint.clear();
    }
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(Error::invalid("no command specified"));
    }
    Ok(args)
}

/// The environment, in docker's order (moby `CreateDaemonEnvironment` over the merged config):
/// `PATH` (docker's [`DEFAULT_PATH`]), `HOSTNAME=<hostname>`, `TERM=xterm` with a terminal, then
/// the user's variables, then the image's `Env` entries the user did not name. A variable that is
/// already in the list is replaced where it stands (the image's `PATH` replaces the default one;
/// for a key given twice the last value wins, where docker would keep both copies), and a bare `KEY` removes `KEY`.
///
/// `HOME` is not added here: [`build_spec`] adds it from the user, as runc does.
pub fn environment(config: Option<&Config>, opts: &RunOptions, hostname: &str) -> Vec<String> {
    let image_env: &[String] = config.and_then(|c| c.env().as_deref()).unwrap_or(&[]);
    let mut env = EnvList::default();
    env.apply(&format!("PATH={DEFAULT_PATH}"));
    env.apply(&format!("HOSTNAME={hostname}"));
    if opts.tty {
        env.apply("TERM=xterm");
    }
    // moby merge(): the user's variables, then the image's ones whose key the user did not use.
    let user_keys: HashSet<&str> = opts.env.iter().map(|e| env_key(e)).collect();
    for e in &opts.env {
        env.apply(e);
    }
    for e in image_env.iter().filter(|e| !user_keys.contains(env_key(e))) {
        env.apply(e);
    }
    env.into_vec()
}

/// An environment list that keeps each key once, where it first appeared.
#[derive(Default)]
struct EnvList {
    items: Vec<Option<String>>,
    index: HashMap<String, usize>,
}

impl EnvList {
    /// Sets `KEY=VAL` (in place when `KEY` is present), or removes `KEY` for a bare `KEY`.
    fn apply(&mut self, entry: &str) {
        let key = env_key(entry);
        if entry.contains('=') {
            match self.index.get(key) {
                Some(&i) => self.items[i] = Some(entry.to_string()),
                None => {
                    self.index.insert(key.to_string(), self.items.len());
                    self.items.push(Some(entry.to_string()));
                }
            }
        } else if let Some(i) = self.index.remove(key) {
            self.items[i] = None;
        }
    }

    fn into_vec(self) -> Vec<String> {
        self.items.into_iter().flatten().collect()
    }
}

/// The name part of `KEY=VAL` (all of a bare `KEY`).
fn env_key(entry: &str) -> &str {
    entry.split_once('=').map_or(entry, |(k, _)| k)
}

/// The user spec docker resolves: `-u` when given and not empty, else the image's `User`
/// (moby merge(): `if userConf.User == "" { userConf.User = imageConf.User }`).
pub fn user_spec<'a>(config: Option<&'a Config>, opts: &'a RunOptions) -> Option<&'a str> {
    opts.user.as_deref().filter(|u| !u.is_empty()).or_else(|| config.and_then(|c| c.user().as_deref()))
}

/// Resolves a user spec (`UID[:GID]`, `NAME[:GROUP]`; `None` or empty is root) against the
/// `/etc/passwd` and `/etc/group` of `rootfs`, with runc's rules (libcontainer `GetExecUser`,
/// which docker uses):
///
/// - a numeric UID needs no entry; when `/etc/passwd` has one, its primary group and home apply
///   (else the group is 0);
/// - a name must have an entry, else `NotFound` "unable to find user NAME: no matching entries
///   in passwd file";
/// - without an explicit group, the user's primary group applies and every group of
///   `/etc/group` listing the user becomes a supplementary group; with `:GROUP` that group
///   (a name must exist, else `NotFound`) is the only one;
/// - IDs must be in 0..=2147483647 (`InvalidArgument` otherwise).
///
/// Both files are read only when they are regular files reached without following a symbolic
/// link (`etc` itself included); anything else counts as absent, so a hostile image cannot
/// make the host's own files answer.
pub fn resolve_user(rootfs: &Path, spec: Option<&str>) -> Result<User> {
    let spec = spec.unwrap_or("");
    // runc parseLine(): "user:group[:ignored]".
    let (user_arg, group_arg) = match spec.split_once(':') {
        Some((u, rest)) => (u, rest.split(':').next().unwrap_or("")),
        None => (spec, ""),
    };
    let uid_arg = numeric_id(user_arg);
    let passwd = read_etc_file(rootfs, "passwd")?;
    let users = passwd.as_deref().map(parse_passwd).unwrap_or_default();
    let matched = users.iter().find(|u| match uid_arg {
        _ if user_arg.is_empty() => u.uid == 0,
        Some(n) => i64::from(u.uid) == n,
        None => u.name == user_arg,
    });

    let mut user = User { uid: 0, gid: 0, additional_gids: Vec::new(), home: None };
    match (matched, uid_arg) {
        (Some(u), _) => {
            user.uid = u.uid;
            user.gid = u.gid;
            user.home = Some(u.home.clone());
        }
        (None, _) if user_arg.is_empty() => {}
        (None, Some(n)) => user.uid = id_in_range(n)?,
        (None, None) => {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("unable to find user {user_arg}: no matching entries in passwd file"),
            ))
        }
    }

    let mut supplementary = Vec::new();
    if !group_arg.is_empty() || matched.is_some() {
        let group = read_etc_file(rootfs, "group")?;
        let groups = group.as_deref().map(parse_group).unwrap_or_default();
        if !group_arg.is_empty() {
            let gid_arg = numeric_id(group_arg);
            let found = groups.iter().find(|g| match gid_arg {
                Some(n) => i64::from(g.gid) == n,
                None => g.name == group_arg,
            });
            user.gid = match (found, gid_arg) {
                (Some(g), _) => g.gid,
                (None, Some(n)) => id_in_range(n)?,
                (None, None) => {
                    return Err(Error::new(
                        ErrorKind::NotFound,
                        format!("unable to find group {group_arg}: no matching entries in group file"),
                    ))
                }
            };
        } else if let Some(u) = matched {
            // Supplementary groups only in the implicit form, as runc.
            supplementary = groups.iter().filter(|g| g.members.contains(&u.name)).map(|g| g.gid).collect();
        }
    }
    // moby getUser(): `AdditionalGids = [GID] + supplementary` (the primary group is listed too,
    // so a process that calls setgroups() keeps it; containerd's CVE-2023-25173 fix).
    let mut seen = HashSet::new();
    user.additional_gids = std::iter::once(user.gid).chain(supplementary).filter(|g| seen.insert(*g)).collect();
    Ok(user)
}

/// `s` as a number when it is one (Go's `strconv.Atoi`: an optional sign, then digits).
fn numeric_id(s: &str) -> Option<i64> {
    s.parse::<i64>().ok()
}

fn id_in_range(n: i64) -> Result<u32> {
    // runc: minID 0, maxID 2^31-1.
    u32::try_from(n)
        .ok()
        .filter(|&id| id <= i32::MAX as u32)
        .ok_or_else(|| Error::invalid(format!("uids and gids must be in range 0-{}: {n}", i32::MAX)))
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// `name:password:uid:gid:gecos:home:shell` lines; malformed lines are skipped.
fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(PasswdEntry {
                name: f.first()?.to_string(),
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
                home: f.get(5).unwrap_or(&"").to_string(),
            })
        })
        .collect()
}

/// `name:password:gid:member,member` lines; malformed lines are skipped.
fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(GroupEntry {
                name: f.first()?.to_string(),
                gid: f.get(2)?.parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| m.split(',').filter(|m| !m.is_empty()).map(String::from).collect())
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// The largest `/etc/passwd` or `/etc/group` read.
const MAX_ETC_FILE: u64 = 16 << 20;

/// Reads `rootfs/etc/NAME` when `etc` is a real directory and `NAME` a regular file, neither a
/// symbolic link; `None` when either is missing or is something else.
fn read_etc_file(rootfs: &Path, name: &str) -> Result<Option<String>> {
    use rustix::fs::{fstat, openat, statat, AtFlags, FileType, Mode, OFlags, CWD};
    use rustix::io::Errno;

    let path = rootfs.join("etc").join(name);
    let absent = |e: Errno| matches!(e, Errno::NOENT | Errno::NOTDIR | Errno::LOOP);
    let fail = |e: Errno| Error::io("read", &path, e.into());
    let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let root = match openat(CWD, rootfs, dir_flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(e) if absent(e) => return Ok(None),
        Err(e) => return Err(fail(e)),
    };
    // O_NOFOLLOW on each component below the rootfs: a link to the host's /etc is not followed.
    let etc = match openat(&root, "etc", dir_flags | OFlags::NOFOLLOW, Mode::empty()) {
        Ok(fd) => fd,
        Err(e) if absent(e) => return Ok(None),
        Err(e) => return Err(fail(e)),
    };
    // stat before open, so a device node or FIFO is never opened.
    match statat(&etc, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => {}
        Ok(_) => return Ok(None),
        Err(e) if absent(e) => return Ok(None),
        Err(e) => return Err(fail(e)),
    }
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let fd = match openat(&etc, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(e) if absent(e) => return Ok(None),
        Err(e) => return Err(fail(e)),
    };
    let st = fstat(&fd).map_err(fail)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Ok(None);
    }
    let mut bytes = Vec::new();
    std::fs::File::from(fd).take(MAX_ETC_FILE + 1).read_to_end(&mut bytes).map_err(|e| Error::io("read", &path, e))?;
    if bytes.len() as u64 > MAX_ETC_FILE {
        return Err(Error::invalid(format!(
            "{} is larger than {} MiB; the image's user database looks broken",
            path.display(),
            MAX_ETC_FILE >> 20
        )));
    }
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// The container's host name: `--hostname`; with `--network host`, the host's name (moby
/// `initializeNetworking`); else the first 12 characters of the container ID.
pub fn container_hostname(opts: &RunOptions, id: &str) -> String {
    if let Some(h) = opts.hostname.as_deref().filter(|h| !h.is_empty()) {
        return h.to_string();
    }
    if opts.network == Network::Host {
        if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
            let h = h.trim();
            if !h.is_empty() {
                return h.to_string();
            }
        }
    }
    id.chars().take(12).collect()
}

/// The process's working directory: `-w`, else the image's `WorkingDir`, else `/`; cleaned
/// lexically. `InvalidArgument` when it is not absolute (docker's message).
pub fn working_dir(config: Option<&Config>, opts: &RunOptions) -> Result<String> {
    let dir = opts
        .workdir
        .as_deref()
        .filter(|w| !w.is_empty())
        .or_else(|| config.and_then(|c| c.working_dir().as_deref()).filter(|w| !w.is_empty()))
        .unwrap_or("/");
    if !dir.starts_with('/') {
        return Err(Error::invalid(format!(
            "the working directory '{dir}' is invalid, it needs to be an absolute path"
        )));
    }
    Ok(clean_path(dir))
}

/// Go's `path.Clean` for an absolute path: no `.`, `..`, empty or trailing components.
fn clean_path(p: &str) -> String {
    strata_store::import::clean_path(p)
}

/// docker's default capabilities (moby `caps.DefaultCapabilities`).
const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Every capability: its name and number (`linux/capability.h`).
const CAPABILITIES: [(Capability, &str, u32); 41] = [
    (Capability::Chown, "CAP_CHOWN", 0),
    (Capability::DacOverride, "CAP_DAC_OVERRIDE", 1),
    (Capability::DacReadSearch, "CAP_DAC_READ_SEARCH", 2),
    (Capability::Fowner, "CAP_FOWNER", 3),
    (Capability::Fsetid, "CAP_FSETID", 4),
    (Capability::Kill, "CAP_KILL", 5),
    (Capability::Setgid, "CAP_SETGID", 6),
    (Capability::Setuid, "CAP_SETUID", 7),
    (Capability::Setpcap, "CAP_SETPCAP", 8),
    (Capability::LinuxImmutable, "CAP_LINUX_IMMUTABLE", 9),
    (Capability::NetBindService, "CAP_NET_BIND_SERVICE", 10),
    (Capability::NetBroadcast, "CAP_NET_BROADCAST", 11),
    (Capability::NetAdmin, "CAP_NET_ADMIN", 12),
    (Capability::NetRaw, "CAP_NET_RAW", 13),
    (Capability::IpcLock, "CAP_IPC_LOCK", 14),
    (Capability::IpcOwner, "CAP_IPC_OWNER", 15),
    (Capability::SysModule, "CAP_SYS_MODULE", 16),
    (Capability::SysRawio, "CAP_SYS_RAWIO", 17),
    (Capability::SysChroot, "CAP_SYS_CHROOT", 18),
    (Capability::SysPtrace, "CAP_SYS_PTRACE", 19),
    (Capability::SysPacct, "CAP_SYS_PACCT", 20),
    (Capability::SysAdmin, "CAP_SYS_ADMIN", 21),
    (Capability::SysBoot, "CAP_SYS_BOOT", 22),
    (Capability::SysNice, "CAP_SYS_NICE", 23),
    (Capability::SysResource, "CAP_SYS_RESOURCE", 24),
    (Capability::SysTime, "CAP_SYS_TIME", 25),
    (Capability::SysTtyConfig, "CAP_SYS_TTY_CONFIG", 26),
    (Capability::Mknod, "CAP_MKNOD", 27),
    (Capability::Lease, "CAP_LEASE", 28),
    (Capability::AuditWrite, "CAP_AUDIT_WRITE", 29),
    (Capability::AuditControl, "CAP_AUDIT_CONTROL", 30),
    (Capability::Setfcap, "CAP_SETFCAP", 31),
    (Capability::MacOverride, "CAP_MAC_OVERRIDE", 32),
    (Capability::MacAdmin, "CAP_MAC_ADMIN", 33),
    (Capability::Syslog, "CAP_SYSLOG", 34),
    (Capability::WakeAlarm, "CAP_WAKE_ALARM", 35),
    (Capability::BlockSuspend, "CAP_BLOCK_SUSPEND", 36),
    (Capability::AuditRead, "CAP_AUDIT_READ", 37),
    (Capability::Perfmon, "CAP_PERFMON", 38),
    (Capability::Bpf, "CAP_BPF", 39),
    (Capability::CheckpointRestore, "CAP_CHECKPOINT_RESTORE", 40),
];

/// The highest capability number the running kernel knows, as docker asks it.
fn last_capability() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(CAPABILITIES[CAPABILITIES.len() - 1].2)
}

/// One `--cap-add`/`--cap-drop` value normalized like docker's `NormalizeLegacyCapabilities`:
/// upper case, `CAP_` prefixed; `None` for `ALL`.
fn parse_capability(name: &str, last_cap: u32) -> Result<Option<Capability>> {
    let upper = name.to_ascii_uppercase();
    if upper == "ALL" {
        return Ok(None);
    }
    let full = if upper.starts_with("CAP_") { upper } else { format!("CAP_{upper}") };
    match CAPABILITIES.iter().find(|(_, n, _)| *n == full) {
        Some((_, _, num)) if *num > last_cap => Err(Error::invalid(format!(
            "capability not supported by your kernel or not available in the current environment: {full:?}"
        ))),
        Some((cap, _, _)) => Ok(Some(*cap)),
        None => Err(Error::invalid(format!("unknown capability: {full:?}"))),
    }
}

/// docker's `TweakCapabilities`: the defaults with `cap_drop` removed and `cap_add` added;
/// `ALL` in `cap_add` is every capability the kernel knows minus `cap_drop`; `ALL` in
/// `cap_drop` leaves only `cap_add`.
fn capabilities(opts: &RunOptions, last_cap: u32) -> Result<Vec<Capability>> {
    if opts.cap_add.is_empty() && opts.cap_drop.is_empty() {
        return Ok(DEFAULT_CAPABILITIES.to_vec());
    }
    let parse = |list: &[String]| -> Result<(bool, Vec<Capability>)> {
        let mut all = false;
        let mut caps = Vec::new();
        for name in list {
            match parse_capability(name, last_cap)? {
                Some(c) => caps.push(c),
                None => all = true,
            }
        }
        Ok((all, caps))
    };
    let (drop_all, drop) = parse(&opts.cap_drop)?;
    let (add_all, add) = parse(&opts.cap_add)?;
    let mut caps: Vec<Capability> = if add_all {
        CAPABILITIES.iter().filter(|(c, _, n)| *n <= last_cap && !drop.contains(c)).map(|(c, _, _)| *c).collect()
    } else if drop_all {
        add
    } else {
        DEFAULT_CAPABILITIES.iter().copied().filter(|c| !drop.contains(c)).chain(add).collect()
    };
    let mut seen = HashSet::new();
    caps.retain(|c| seen.insert(*c));
    Ok(caps)
}

/// docker's masked paths (moby `defaultLinuxMaskedPaths`), including the per-CPU
/// `thermal_throttle` directories that exist on this host (GHSA-6fw5-f8r9-fgfm).
fn masked_paths() -> Vec<String> {
    let mut paths: Vec<String> = [
        "/proc/acpi",
        "/proc/asound",
        "/proc/interrupts", // GHSA-6fw5-f8r9-fgfm
        "/proc/kcore",
        "/proc/keys",
        "/proc/latency_stats",
        "/proc/sched_debug",
        "/proc/scsi",
        "/proc/timer_list",
        "/proc/timer_stats",
        "/sys/devices/virtual/powercap", // GHSA-jq35-85cj-fj4p
        "/sys/firmware",
    ]
    .map(String::from)
    .to_vec();
    let possible = std::fs::read_to_string("/sys/devices/system/cpu/possible").unwrap_or_default();
    for cpu in parse_cpu_list(possible.trim()) {
        let p = format!("/sys/devices/system/cpu/cpu{cpu}/thermal_throttle");
        if Path::new(&p).exists() {
            paths.push(p);
        }
    }
    paths
}

/// A kernel CPU list such as `0-3,8`; malformed parts are skipped, and at most 4096 CPUs.
fn parse_cpu_list(s: &str) -> Vec<u32> {
    let mut cpus = Vec::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(lo), Ok(hi)) = (lo.trim().parse::<u32>(), hi.trim().parse::<u32>()) {
            cpus.extend((lo..=hi).take(4096usize.saturating_sub(cpus.len())));
        }
    }
    cpus
}

/// docker's read-only paths (moby `DefaultLinuxSpec`).
const READONLY_PATHS: [&str; 5] = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// docker's smallest `--memory` (moby `linuxMinMemory`).
const MIN_MEMORY: i64 = 6 * 1024 * 1024;

/// docker's `/dev/shm` size (`--shm-size` default, 64 MiB).
const SHM_SIZE: i64 = 64 * 1024 * 1024;

/// The CFS period docker uses for `--cpus` (100 ms, in microseconds).
const CPU_PERIOD: u64 = 100_000;

fn oci(e: oci_spec::OciSpecError) -> Error {
    Error::new(ErrorKind::Runtime, "cannot build the container's runtime config").with_source(e)
}

/// The `config.json` annotation asking the built-in runtime for an init as PID 1 (`--init`).
pub const INIT_ANNOTATION: &str = "io.strata.init";

/// The OCI runtime config for container `id`, as docker would write it:
///
/// - root: `rootfs_path`, read-only with `--read-only`;
/// - process: [`process_args`], [`environment`] plus `HOME` from `user` when unset (`/` for a
///   user without a passwd entry, as runc), [`working_dir`], `user`'s IDs, a terminal with `-t`,
///   `noNewPrivileges`, docker's default capabilities with `--cap-add`/`--cap-drop` applied as
///   the bounding, effective and permitted sets (none inheritable or ambient), and no rlimits;
/// - hostname: [`container_hostname`] (at most 64 bytes);
/// - mounts: docker's `/proc`, `/dev`, `/dev/pts`, `/sys`, `/sys/fs/cgroup`, `/dev/mqueue`,
///   `/dev/shm` (less those a user mount replaces, and everything under `/dev` when `/dev` is
///   mounted), then `opts.mounts` and the `etc_files` (`(target, host path)` pairs, typically
///   `/etc/hostname`, `/etc/hosts`, `/etc/resolv.conf`; skipped where a user mount has the same
///   target), parents before children;
/// - linux: mount, network (not with `--network host`), uts, pid, ipc and cgroup namespaces;
///   docker's masked and read-only paths; docker's device cgroup rules; memory (with swap at
///   twice the memory, docker's default), CPU quota and pids limits; cgroups path `/strata/<id>`;
///   no sysctls and no seccomp profile yet.
///
/// `InvalidArgument` for a bad option: unknown capability, relative working directory, a mount
/// target that is relative, `/` or used twice, a relative bind source, `--memory` under 6 MiB,
/// `--cpus` out of range, a host name longer than 64 bytes.
pub fn build_spec(
    config: Option<&Config>,
    opts: &RunOptions,
    user: &User,
    id: &str,
    rootfs_path: &Path,
    etc_files: &[(String, PathBuf)],
) -> Result<Spec> {
    let args = process_args(config, opts)?;
    let hostname = container_hostname(opts, id);
    // Linux's HOST_NAME_MAX; the docker CLI refuses longer ones with these words.
    if hostname.len() > 64 {
        return Err(Error::invalid(format!("invalid hostname format: {hostname}")));
    }
    let mut env = environment(config, opts, &hostname);
    // runc sets HOME from the passwd entry ("/" without one) when the environment has none.
    let home = format!("HOME={}", user.home.as_deref().unwrap_or("/"));
    match env.iter().position(|e| env_key(e) == "HOME") {
        Some(i) if env[i] == "HOME=" => env[i] = home,
        Some(_) => {}
        None => env.push(home),
    }
    let cwd = working_dir(config, opts)?;
    let cap_list = capabilities(opts, last_capability())?;
    let seccomp = crate::seccomp::default_profile(&cap_list)?;
    let caps: HashSet<Capability> = cap_list.into_iter().collect();
    let mut capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .build()
        .map_err(oci)?;
    // The builders fill unset fields from oci-spec's defaults, which put AUDIT_WRITE, KILL and
    // NET_BIND_SERVICE in these two; docker leaves them empty (CVE-2022-24769).
    capabilities.set_inheritable(None);
    capabilities.set_ambient(None);
    let process_user = UserBuilder::default()
        .uid(user.uid)
        .gid(user.gid)
        .additional_gids(user.additional_gids.clone())
        .build()
        .map_err(oci)?;
    let mut process = ProcessBuilder::default()
        .terminal(opts.tty)
        .user(process_user)
        .args(args)
        .env(env)
        .cwd(cwd)
        .capabilities(capabilities)
        .no_new_privileges(true)
        .build()
        .map_err(oci)?;
    // This host's hard NOFILE is below what a runtime would set and it lacks CAP_SYS_RESOURCE:
    // the process inherits the runtime's limits instead (oci-spec's default sets NOFILE 1024).
    process.set_rlimits(None);
    process.set_oom_score_adj(None);
    process.set_apparmor_profile(None);
    process.set_selinux_label(None);

    let mut namespaces = vec![namespace(LinuxNamespaceType::Mount)?];
    if opts.network != Network::Host {
        namespaces.push(namespace(LinuxNamespaceType::Network)?);
    }
    for typ in [LinuxNamespaceType::Uts, LinuxNamespaceType::Pid, LinuxNamespaceType::Ipc, LinuxNamespaceType::Cgroup] {
        namespaces.push(namespace(typ)?);
    }
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .masked_paths(masked_paths())
        .readonly_paths(READONLY_PATHS.map(String::from).to_vec())
        .resources(resources(opts)?)
        .cgroups_path(PathBuf::from(format!("/strata/{id}")))
        .build()
        .map_err(oci)?;
    linux.set_devices(None);
    linux.set_sysctl(None);
    linux.set_seccomp(Some(seccomp));
    linux.set_uid_mappings(None);
    linux.set_gid_mappings(None);
    linux.set_rootfs_propagation(None);

    let root = RootBuilder::default().path(rootfs_path).readonly(opts.read_only).build().map_err(oci)?;
    let mut spec = SpecBuilder::default()
        .version(oci_spec::runtime::VERSION)
        .root(root)
        .mounts(mounts(opts, etc_files)?)
        .process(process)
        .hostname(hostname)
        .linux(linux)
        .build()
        .map_err(oci)?;
    spec.set_annotations(
        opts.init.then(|| std::collections::HashMap::from([(INIT_ANNOTATION.to_string(), "true".to_string())])),
    );
    spec.set_hooks(None);
    spec.set_domainname(None);
    Ok(spec)
}

fn namespace(typ: LinuxNamespaceType) -> Result<LinuxNamespace> {
    LinuxNamespaceBuilder::default().typ(typ).build().map_err(oci)
}

fn mount(destination: &str, typ: &str, source: impl Into<PathBuf>, options: &[&str]) -> Result<Mount> {
    MountBuilder::default()
        .destination(destination)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .build()
        .map_err(oci)
}

/// A bind mount as docker writes one: `rbind`, `ro` when read-only, default propagation `rprivate`.
fn bind(destination: &str, source: &Path, readonly: bool) -> Result<Mount> {
    if !source.is_absolute() {
        return Err(Error::invalid(format!(
            "invalid mount source: '{}' mount path must be absolute",
            source.display()
        )));
    }
    let options: &[&str] = if readonly { &["rbind", "ro", "rprivate"] } else { &["rbind", "rprivate"] };
    mount(destination, "bind", source, options)
}

/// A mount target, checked and cleaned as docker does.
fn destination(target: &str) -> Result<String> {
    if !target.starts_with('/') {
        return Err(Error::invalid(format!("invalid mount path: '{target}' mount path must be absolute")));
    }
    let dest = clean_path(target);
    if dest == "/" {
        return Err(Error::invalid("invalid mount config: destination can't be '/'"));
    }
    Ok(dest)
}

/// docker's default mounts (moby `DefaultLinuxSpec`, `/dev/shm` sized by `WithMounts`).
fn default_mounts() -> Result<Vec<Mount>> {
    let shm_size = format!("size={SHM_SIZE}");
    Ok(vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount("/dev", "tmpfs", "tmpfs", &["nosuid", "strictatime", "mode=755", "size=65536k"])?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        )?,
        mount("/sys", "sysfs", "sysfs", &["nosuid", "noexec", "nodev", "ro"])?,
        mount("/sys/fs/cgroup", "cgroup", "cgroup", &["ro", "nosuid", "noexec", "nodev"])?,
        mount("/dev/mqueue", "mqueue", "mqueue", &["nosuid", "noexec", "nodev"])?,
        mount("/dev/shm", "tmpfs", "shm", &["nosuid", "noexec", "nodev", "mode=1777", &shm_size])?,
    ])
}

/// docker's `WithMounts`: the default mounts a user mount does not replace, then the user's
/// mounts sorted so that a parent is mounted before its children.
fn mounts(opts: &RunOptions, etc_files: &[(String, PathBuf)]) -> Result<Vec<Mount>> {
    let mut user: Vec<(String, Mount)> = Vec::new();
    let mut targets = HashSet::new();
    for m in &opts.mounts {
        let dest = destination(&m.target)?;
        if !targets.insert(dest.clone()) {
            return Err(Error::invalid(format!("duplicate mount point: {dest}")));
        }
        let mount = match m.kind {
            MountKind::Bind => bind(&dest, &m.source, m.readonly)?,
            MountKind::Tmpfs => {
                // moby: "noexec", "nosuid", "nodev" and the default propagation.
                let options: &[&str] = if m.readonly {
                    &["noexec", "nosuid", "nodev", "rprivate", "ro"]
                } else {
                    &["noexec", "nosuid", "nodev", "rprivate"]
                };
                mount(&dest, "tmpfs", "tmpfs", options)?
            }
        };
        user.push((dest, mount));
    }
    for (target, source) in etc_files {
        let dest = destination(target)?;
        // docker does not bind its own file where the user mounted one.
        if targets.insert(dest.clone()) {
            // moby NetworkMounts(): writable unless the rootfs is read-only.
            user.push((dest.clone(), bind(&dest, source, opts.read_only)?));
        }
    }
    // moby sorts by the number of path components (a stable sort keeps the given order otherwise).
    user.sort_by_key(|(dest, _)| dest.matches('/').count());

    let dev_mounted = targets.contains("/dev");
    let mut out: Vec<Mount> = default_mounts()?
        .into_iter()
        .filter(|m| {
            let dest = m.destination().to_string_lossy();
            let replaced = targets.contains(dest.as_ref());
            let under_user_dev = dev_mounted && dest.starts_with("/dev/");
            !replaced && !under_user_dev
        })
        .collect();
    out.extend(user.into_iter().map(|(_, m)| m));
    Ok(out)
}

/// docker's device cgroup rules (moby `DefaultLinuxSpec`): deny everything, then allow
/// null, zero, full, random, urandom, tty and console, and deny `/dev/fuse` (10:229); runc and
/// crun add their own defaults (ptmx, `/dev/pts/*`, …) after these.
fn device_rules() -> Result<Vec<LinuxDeviceCgroup>> {
    let rule = |allow: bool, major: i64, minor: i64| {
        LinuxDeviceCgroupBuilder::default()
            .allow(allow)
            .typ(LinuxDeviceType::C)
            .major(major)
            .minor(minor)
            .access("rwm")
            .build()
            .map_err(oci)
    };
    Ok(vec![
        LinuxDeviceCgroupBuilder::default().allow(false).access("rwm").build().map_err(oci)?,
        rule(true, 1, 5)?,
        rule(true, 1, 3)?,
        rule(true, 1, 9)?,
        rule(true, 1, 8)?,
        rule(true, 5, 0)?,
        rule(true, 5, 1)?,
        rule(false, 10, 229)?,
    ])
}

/// Memory, CPU and pids limits, checked as moby's `verifyPlatformContainerResources`.
fn resources(opts: &RunOptions) -> Result<LinuxResources> {
    let mut res = LinuxResourcesBuilder::default().devices(device_rules()?);
    if let Some(memory) = opts.memory.filter(|&m| m != 0) {
        if memory < MIN_MEMORY {
            return Err(Error::invalid("minimum memory limit allowed is 6MB"));
        }
        // moby adaptContainerSettings(): "By default, MemorySwap is set to twice the size of
        // Memory" (the OCI swap value is memory plus swap).
        let memory = LinuxMemoryBuilder::default().limit(memory).swap(memory.saturating_mul(2)).build().map_err(oci)?;
        res = res.memory(memory);
    }
    if let Some(cpus) = opts.cpus.filter(|&c| c != 0.0) {
        let online = std::thread::available_parallelism().map_or(1, |n| n.get());
        // NanoCPUs as docker computes them; below 0.01 CPU the kernel refuses the quota.
        let nano = (cpus * 1e9).round();
        if !cpus.is_finite() || nano < 1e7 || nano > online as f64 * 1e9 {
            return Err(Error::invalid(format!(
                "range of CPUs is from 0.01 to {online}.00, as there are only {online} CPUs available"
            )));
        }
        let quota = (nano as i64).saturating_mul(CPU_PERIOD as i64) / 1_000_000_000;
        res = res.cpu(LinuxCpuBuilder::default().period(CPU_PERIOD).quota(quota).build().map_err(oci)?);
    }
    if let Some(limit) = opts.pids_limit {
        // moby getPidsLimit(): 0 or less means unlimited, written as -1.
        let limit = if limit <= 0 { -1 } else { limit };
        res = res.pids(LinuxPidsBuilder::default().limit(limit).build().map_err(oci)?);
    }
    res.build().map_err(oci)
}

/// Parses docker's size strings for `--memory` (go-units `RAMInBytes`): a number, optionally
/// fractional, then an optional `b`, `k`, `m`, `g`, `t` or `p` (powers of 1024; `kb` and `kib`
/// spellings too), in any case, optionally after a space: `512m`, `1g`, `1.5GiB`, `100k`, `1024`.
pub fn parse_memory(s: &str) -> Result<i64> {
    let invalid = || Error::invalid(format!("invalid size: '{s}'"));
    let sep = s.rfind(|c: char| c.is_ascii_digit() || c == '.' || c == ' ').ok_or_else(invalid)?;
    let (num, suffix) = if s.as_bytes()[sep] == b' ' { (&s[..sep], &s[sep + 1..]) } else { s.split_at(sep + 1) };
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-')) {
        return Err(invalid());
    }
    let size: f64 = num.parse().map_err(|_| invalid())?;
    if size < 0.0 || !size.is_finite() {
        return Err(invalid());
    }
    let bad_suffix = || Error::invalid(format!("invalid suffix: '{suffix}'"));
    let lower = suffix.to_ascii_lowercase();
    let multiplier: f64 = match lower.as_bytes() {
        [] | [b'b'] => 1.0,
        [unit, rest @ ..] if rest.is_empty() || rest == b"b" || rest == b"ib" => match unit {
            b'k' => 1024f64,
            b'm' => 1024f64.powi(2),
            b'g' => 1024f64.powi(3),
            b't' => 1024f64.powi(4),
            b'p' => 1024f64.powi(5),
            _ => return Err(bad_suffix()),
        },
        _ => return Err(bad_suffix()),
    };
    let bytes = size * multiplier;
    if bytes >= i64::MAX as f64 {
        return Err(invalid());
    }
    Ok(bytes as i64)
}

/// Parses `-e` values as the docker CLI does (`opts.ValidateEnv`): `KEY=VAL` is kept as given;
/// a bare `KEY` takes its value from `lookup(KEY)`, and stays a bare `KEY` when that is unset
/// (which [`environment`] reads as "unset `KEY`", so it hides the image's `KEY` as in docker).
/// An empty key is an `InvalidArgument` error.
pub fn parse_env(items: &[String], lookup: &dyn Fn(&str) -> Option<String>) -> Result<Vec<String>> {
    items
        .iter()
        .map(|item| match item.split_once('=') {
            Some(("", _)) => Err(Error::invalid(format!("invalid environment variable: {item}"))),
            Some(_) => Ok(item.clone()),
            None if item.is_empty() => Err(Error::invalid("invalid environment variable: empty name")),
            None => Ok(lookup(item).map_or_else(|| item.clone(), |v| format!("{item}={v}"))),
        })
        .collect()
}

/// Parses an `--env-file` as the docker CLI does (`opts.ParseEnvFile`): leading white space is
/// ignored, blank lines and lines starting with `#` are skipped, `KEY=VAL` is kept (the value
/// untrimmed), a bare `KEY` takes its value from `lookup(KEY)` or is dropped when unset. A key
/// containing white space (trailing blanks of a bare `KEY` included), or an empty key, is an
/// `InvalidArgument` error naming the line.
pub fn parse_env_file(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (line, None),
        };
        if key.is_empty() {
            return Err(Error::invalid(format!("env file line {}: no variable name on line '{line}'", n + 1)));
        }
        if key.contains(char::is_whitespace) {
            return Err(Error::invalid(format!("env file line {}: variable '{key}' contains whitespaces", n + 1)));
        }
        match value {
            Some(v) => out.push(format!("{key}={v}")),
            None => {
                if let Some(v) = lookup(key) {
                    out.push(format!("{key}={v}"));
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::image::ConfigBuilder;

    fn image(entrypoint: &[&str], cmd: &[&str]) -> Config {
        let mut b = ConfigBuilder::default();
        if !entrypoint.is_empty() {
            b = b.entrypoint(entrypoint.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        }
        if !cmd.is_empty() {
            b = b.cmd(cmd.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        }
        b.build().unwrap()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn root() -> User {
        User { uid: 0, gid: 0, additional_gids: vec![0], home: Some("/root".into()) }
    }

    fn build(opts: &RunOptions) -> Result<Spec> {
        let opts =
            RunOptions { cmd: if opts.cmd.is_empty() { strings(&["sh"]) } else { opts.cmd.clone() }, ..opts.clone() };
        build_spec(None, &opts, &root(), "0123456789abcdef0123", Path::new("/run/rootfs"), &[])
    }

    // --- process_args: docker's ENTRYPOINT/CMD table ---

    #[test]
    fn args_image_entrypoint_and_cmd() {
        let cfg = image(&["/entry", "-x"], &["cmd", "arg"]);
        let args = process_args(Some(&cfg), &RunOptions::default()).unwrap();
        assert_eq!(args, strings(&["/entry", "-x", "cmd", "arg"]));
    }

    #[test]
    fn args_run_arguments_replace_cmd_only() {
        let cfg = image(&["/entry"], &["cmd"]);
        let opts = RunOptions { cmd: strings(&["other", "x"]), ..Default::default() };
        assert_eq!(process_args(Some(&cfg), &opts).unwrap(), strings(&["/entry", "other", "x"]));
        let cfg = image(&[], &["cmd"]);
        assert_eq!(process_args(Some(&cfg), &opts).unwrap(), strings(&["other", "x"]));
    }

    #[test]
    fn args_entrypoint_flag_resets_cmd() {
        let cfg = image(&["/entry"], &["cmd"]);
        let opts = RunOptions { entrypoint: Some("/bin/ls".into()), ..Default::default() };
        assert_eq!(process_args(Some(&cfg), &opts).unwrap(), strings(&["/bin/ls"]));
        let opts = RunOptions { entrypoint: Some("/bin/ls".into()), cmd: strings(&["-l"]), ..Default::default() };
        assert_eq!(process_args(Some(&cfg), &opts).unwrap(), strings(&["/bin/ls", "-l"]));
    }

    #[test]
    fn args_empty_entrypoint_clears_it() {
        let cfg = image(&["/entry"], &["cmd"]);
        let opts = RunOptions { entrypoint: Some(String::new()), cmd: strings(&["echo", "hi"]), ..Default::default() };
        assert_eq!(process_args(Some(&cfg), &opts).unwrap(), strings(&["echo", "hi"]));
        // `--entrypoint ""` with no arguments: the image's Cmd was reset too.
        let opts = RunOptions { entrypoint: Some(String::new()), ..Default::default() };
        let e = process_args(Some(&cfg), &opts).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn args_nothing_is_an_error() {
        let e = process_args(None, &RunOptions::default()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert_eq!(e.to_string(), "no command specified");
        let e = process_args(Some(&image(&[], &[])), &RunOptions::default()).unwrap_err();
        assert_eq!(e.to_string(), "no command specified");
        // An image ENTRYPOINT [""] counts as none (moby resets it).
        assert!(process_args(Some(&image(&[""], &[])), &RunOptions::default()).is_err());
    }

    // --- environment ---

    fn image_env(env: &[&str]) -> Config {
        ConfigBuilder::default().env(strings(env)).build().unwrap()
    }

    #[test]
    fn env_defaults() {
        let env = environment(None, &RunOptions::default(), "abc");
        assert_eq!(env, strings(&[&format!("PATH={DEFAULT_PATH}"), "HOSTNAME=abc"]));
        let env = environment(None, &RunOptions { tty: true, ..Default::default() }, "abc");
        assert_eq!(env, strings(&[&format!("PATH={DEFAULT_PATH}"), "HOSTNAME=abc", "TERM=xterm"]));
    }

    #[test]
    fn env_image_path_replaces_default_in_place() {
        let cfg = image_env(&["PATH=/opt/bin:/bin", "LANG=C"]);
        let env = environment(Some(&cfg), &RunOptions::default(), "h");
        assert_eq!(env, strings(&["PATH=/opt/bin:/bin", "HOSTNAME=h", "LANG=C"]));
    }

    #[test]
    fn env_user_overrides_image_and_orders_like_docker() {
        let cfg = image_env(&["PATH=/x", "A=image", "B=image"]);
        let opts =
            RunOptions { env: strings(&["B=user", "C=user", "C=last", "TERM=vt100"]), tty: true, ..Default::default() };
        let env = environment(Some(&cfg), &opts, "h");
        assert_eq!(env, strings(&["PATH=/x", "HOSTNAME=h", "TERM=vt100", "B=user", "C=last", "A=image"]));
    }

    #[test]
    fn env_bare_key_unsets() {
        let cfg = image_env(&["A=1", "B=2"]);
        let opts = RunOptions { env: strings(&["A", "HOSTNAME"]), ..Default::default() };
        let env = environment(Some(&cfg), &opts, "h");
        assert_eq!(env, strings(&[&format!("PATH={DEFAULT_PATH}"), "B=2"]));
    }

    #[test]
    fn spec_env_gets_home_from_user() {
        let spec = build(&RunOptions::default()).unwrap();
        let env = spec.process().as_ref().unwrap().env().clone().unwrap();
        assert_eq!(env.last().unwrap(), "HOME=/root");
        assert!(env.contains(&"HOSTNAME=0123456789ab".to_string()));
        let opts = RunOptions { cmd: strings(&["sh"]), env: strings(&["HOME=/mine"]), ..Default::default() };
        let user = User { uid: 5, gid: 5, additional_gids: vec![5], home: None };
        let spec = build_spec(None, &opts, &user, "id", Path::new("/r"), &[]).unwrap();
        let env = spec.process().as_ref().unwrap().env().clone().unwrap();
        assert_eq!(env.iter().filter(|e| e.starts_with("HOME=")).collect::<Vec<_>>(), vec!["HOME=/mine"]);
        let spec = build_spec(None, &RunOptions { env: vec![], ..opts }, &user, "id", Path::new("/r"), &[]).unwrap();
        assert!(spec.process().as_ref().unwrap().env().as_ref().unwrap().contains(&"HOME=/".to_string()));
    }

    // --- parse_env / parse_env_file ---

    fn lookup(k: &str) -> Option<String> {
        (k == "SET").then(|| "from-host".to_string())
    }

    #[test]
    fn env_flags() {
        let got = parse_env(&strings(&["A=1", "B=", "C=x=y", "SET", "UNSET"]), &lookup).unwrap();
        assert_eq!(got, strings(&["A=1", "B=", "C=x=y", "SET=from-host", "UNSET"]));
        assert_eq!(parse_env(&strings(&["=x"]), &lookup).unwrap_err().kind(), ErrorKind::InvalidArgument);
        assert_eq!(parse_env(&strings(&[""]), &lookup).unwrap_err().kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn env_file() {
        let text = "# comment\n\n  A=1\nB= spaced value \nSET\nUNSET\n\t# indented comment\nC=\r\n";
        let got = parse_env_file(text, &lookup).unwrap();
        assert_eq!(got, strings(&["A=1", "B= spaced value ", "SET=from-host", "C="]));
        let e = parse_env_file("BAD KEY=1\n", &lookup).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(e.to_string().contains("'BAD KEY'"), "{e}");
        assert!(parse_env_file("=1\n", &lookup).is_err());
        assert!(parse_env_file("A B\n", &lookup).is_err());
        // docker: trailing blanks are part of a bare key, and a key cannot contain blanks.
        assert!(parse_env_file("SET  \n", &lookup).is_err());
    }

    // --- parse_memory ---

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory("1024").unwrap(), 1024);
        assert_eq!(parse_memory("100b").unwrap(), 100);
        assert_eq!(parse_memory("100k").unwrap(), 100 * 1024);
        assert_eq!(parse_memory("512m").unwrap(), 512 << 20);
        assert_eq!(parse_memory("512M").unwrap(), 512 << 20);
        assert_eq!(parse_memory("1g").unwrap(), 1 << 30);
        assert_eq!(parse_memory("1GB").unwrap(), 1 << 30);
        assert_eq!(parse_memory("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_memory("1.5g").unwrap(), 3 << 29);
        assert_eq!(parse_memory("2 m").unwrap(), 2 << 20);
        assert_eq!(parse_memory("0").unwrap(), 0);
        for bad in ["", "m", "abc", "-1m", "1x", "1mm", "1gbb", "1bk", "1.2.3m", "1e400", "99999999999p"] {
            let e = parse_memory(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{bad}");
        }
    }

    // --- users ---

    fn rootfs_with(passwd: &str, group: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/passwd"), passwd).unwrap();
        std::fs::write(dir.path().join("etc/group"), group).unwrap();
        dir
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                          daemon:x:2:2:daemon:/sbin:/sbin/nologin\n\
                          app:x:1000:1001:App:/home/app:/bin/sh\n\
                          broken line\n";
    const GROUP: &str = "root:x:0:root\nbin:x:1:root,bin,daemon\nappgrp:x:1001:\n\
                         staff:x:50:app,other\nwheel:x:10:root\ndocker:x:999:app\n";

    #[test]
    fn user_default_is_root_with_its_groups() {
        let dir = rootfs_with(PASSWD, GROUP);
        for spec in [None, Some("")] {
            let u = resolve_user(dir.path(), spec).unwrap();
            assert_eq!(u, User { uid: 0, gid: 0, additional_gids: vec![0, 1, 10], home: Some("/root".into()) });
        }
    }

    #[test]
    fn user_numeric_without_files() {
        let dir = tempfile::tempdir().unwrap();
        let u = resolve_user(dir.path(), Some("1234")).unwrap();
        assert_eq!(u, User { uid: 1234, gid: 0, additional_gids: vec![0], home: None });
        let u = resolve_user(dir.path(), Some("1234:5678")).unwrap();
        assert_eq!((u.uid, u.gid, u.additional_gids), (1234, 5678, vec![5678]));
        let u = resolve_user(dir.path(), None).unwrap();
        assert_eq!((u.uid, u.gid, u.home), (0, 0, None));
        // A rootfs that does not exist reads as one without files.
        let u = resolve_user(&dir.path().join("missing"), Some("7")).unwrap();
        assert_eq!(u.uid, 7);
    }

    #[test]
    fn user_numeric_uses_passwd_entry() {
        let dir = rootfs_with(PASSWD, GROUP);
        let u = resolve_user(dir.path(), Some("1000")).unwrap();
        assert_eq!(
            u,
            User { uid: 1000, gid: 1001, additional_gids: vec![1001, 50, 999], home: Some("/home/app".into()) }
        );
    }

    #[test]
    fn user_by_name() {
        let dir = rootfs_with(PASSWD, GROUP);
        let u = resolve_user(dir.path(), Some("app")).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1001));
        assert_eq!(u.additional_gids, vec![1001, 50, 999]);
        assert_eq!(u.home.as_deref(), Some("/home/app"));
        let u = resolve_user(dir.path(), Some("daemon")).unwrap();
        assert_eq!(u.additional_gids, vec![2, 1]);
    }

    #[test]
    fn user_with_group() {
        let dir = rootfs_with(PASSWD, GROUP);
        // An explicit group replaces the primary one and drops the supplementary ones (runc).
        let u = resolve_user(dir.path(), Some("app:staff")).unwrap();
        assert_eq!((u.uid, u.gid, u.additional_gids.clone()), (1000, 50, vec![50]));
        let u = resolve_user(dir.path(), Some("app:4242")).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 4242));
        let u = resolve_user(dir.path(), Some("0:wheel")).unwrap();
        assert_eq!((u.uid, u.gid), (0, 10));
        let e = resolve_user(dir.path(), Some("app:nogroup")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert_eq!(e.to_string(), "unable to find group nogroup: no matching entries in group file");
    }

    #[test]
    fn user_unknown_name_is_not_found() {
        let dir = rootfs_with(PASSWD, GROUP);
        let e = resolve_user(dir.path(), Some("nobody")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert_eq!(e.to_string(), "unable to find user nobody: no matching entries in passwd file");
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(resolve_user(empty.path(), Some("app")).unwrap_err().kind(), ErrorKind::NotFound);
    }

    #[test]
    fn user_ids_out_of_range() {
        let dir = tempfile::tempdir().unwrap();
        for spec in ["-1", "2147483648", "0:-5"] {
            let e = resolve_user(dir.path(), Some(spec)).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{spec}");
        }
    }

    #[test]
    fn user_files_behind_symlinks_are_not_read() {
        let host = rootfs_with(PASSWD, GROUP);
        // etc/passwd a link to a "host" passwd.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::os::unix::fs::symlink(host.path().join("etc/passwd"), dir.path().join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink(host.path().join("etc/group"), dir.path().join("etc/group")).unwrap();
        assert_eq!(resolve_user(dir.path(), Some("app")).unwrap_err().kind(), ErrorKind::NotFound);
        assert_eq!(
            resolve_user(dir.path(), None).unwrap(),
            User { uid: 0, gid: 0, additional_gids: vec![0], home: None }
        );
        // etc itself a link.
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(host.path().join("etc"), dir.path().join("etc")).unwrap();
        assert_eq!(resolve_user(dir.path(), Some("app")).unwrap_err().kind(), ErrorKind::NotFound);
        // etc/passwd a directory or a FIFO.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc/passwd")).unwrap();
        rustix::fs::mkfifoat(rustix::fs::CWD, dir.path().join("etc/group"), rustix::fs::Mode::from_raw_mode(0o600))
            .unwrap();
        assert_eq!(resolve_user(dir.path(), Some("app")).unwrap_err().kind(), ErrorKind::NotFound);
        let u = resolve_user(dir.path(), Some("5:staff")).unwrap_err();
        assert_eq!(u.kind(), ErrorKind::NotFound);
    }

    #[test]
    fn user_spec_prefers_flag_then_image() {
        let cfg = ConfigBuilder::default().user("app").build().unwrap();
        assert_eq!(user_spec(Some(&cfg), &RunOptions::default()), Some("app"));
        let opts = RunOptions { user: Some("1:2".into()), ..Default::default() };
        assert_eq!(user_spec(Some(&cfg), &opts), Some("1:2"));
        let opts = RunOptions { user: Some(String::new()), ..Default::default() };
        assert_eq!(user_spec(Some(&cfg), &opts), Some("app"));
        assert_eq!(user_spec(None, &RunOptions::default()), None);
    }

    #[test]
    fn spec_user_ids() {
        let user = User { uid: 1000, gid: 1001, additional_gids: vec![1001, 50], home: Some("/home/app".into()) };
        let opts = RunOptions { cmd: strings(&["id"]), ..Default::default() };
        let spec = build_spec(None, &opts, &user, "id", Path::new("/r"), &[]).unwrap();
        let u = spec.process().as_ref().unwrap().user();
        assert_eq!((u.uid(), u.gid()), (1000, 1001));
        assert_eq!(u.additional_gids().as_deref(), Some(&[1001, 50][..]));
    }

    // --- capabilities ---

    fn caps(opts: &RunOptions) -> HashSet<Capability> {
        let spec = build(opts).unwrap();
        let c = spec.process().as_ref().unwrap().capabilities().clone().unwrap();
        let bounding = c.bounding().clone().unwrap();
        assert_eq!(c.effective().as_ref(), Some(&bounding));
        assert_eq!(c.permitted().as_ref(), Some(&bounding));
        assert!(c.inheritable().is_none());
        assert!(c.ambient().is_none());
        bounding
    }

    #[test]
    fn caps_default() {
        let got = caps(&RunOptions::default());
        assert_eq!(got, DEFAULT_CAPABILITIES.into_iter().collect());
        assert_eq!(got.len(), 14);
        assert!(!got.contains(&Capability::SysAdmin));
    }

    #[test]
    fn caps_add_and_drop() {
        let opts = RunOptions {
            cap_add: strings(&["NET_ADMIN", "cap_sys_ptrace"]),
            cap_drop: strings(&["CAP_CHOWN", "mknod"]),
            ..Default::default()
        };
        let got = caps(&opts);
        assert!(got.contains(&Capability::NetAdmin) && got.contains(&Capability::SysPtrace));
        assert!(!got.contains(&Capability::Chown) && !got.contains(&Capability::Mknod));
        assert_eq!(got.len(), 14);
    }

    #[test]
    fn caps_all() {
        let got =
            caps(&RunOptions { cap_add: strings(&["ALL"]), cap_drop: strings(&["NET_RAW"]), ..Default::default() });
        assert!(got.contains(&Capability::SysAdmin) && got.contains(&Capability::NetAdmin));
        assert!(!got.contains(&Capability::NetRaw));
        assert_eq!(got.len() as u32, last_capability().min(40)); // every known one but NET_RAW
        let got = caps(&RunOptions { cap_add: strings(&["kill"]), cap_drop: strings(&["all"]), ..Default::default() });
        assert_eq!(got, [Capability::Kill].into_iter().collect());
        let got = caps(&RunOptions { cap_drop: strings(&["ALL"]), ..Default::default() });
        assert!(got.is_empty());
    }

    #[test]
    fn caps_unknown_is_invalid() {
        for opts in [
            RunOptions { cap_add: strings(&["NET_WIZARD"]), ..Default::default() },
            RunOptions { cap_drop: strings(&["CAP_NOPE"]), ..Default::default() },
        ] {
            let e = build(&opts).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument);
            assert!(e.to_string().starts_with("unknown capability: \"CAP_N"), "{e}");
        }
        let e = parse_capability("CHECKPOINT_RESTORE", 39).unwrap_err();
        assert!(e.to_string().contains("not supported by your kernel"), "{e}");
    }

    // --- working directory ---

    #[test]
    fn cwd_rules() {
        let spec = build(&RunOptions::default()).unwrap();
        assert_eq!(spec.process().as_ref().unwrap().cwd(), Path::new("/"));
        let cfg = ConfigBuilder::default().working_dir("/srv/app/").build().unwrap();
        assert_eq!(working_dir(Some(&cfg), &RunOptions::default()).unwrap(), "/srv/app");
        let opts = RunOptions { workdir: Some("/tmp/./x/../y".into()), ..Default::default() };
        assert_eq!(working_dir(Some(&cfg), &opts).unwrap(), "/tmp/y");
        let opts = RunOptions { workdir: Some("relative".into()), ..Default::default() };
        let e = build(&opts).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(e.to_string().contains("'relative'"), "{e}");
    }

    // --- namespaces, hostname, root ---

    fn namespace_types(spec: &Spec) -> Vec<LinuxNamespaceType> {
        spec.linux().as_ref().unwrap().namespaces().as_ref().unwrap().iter().map(|n| n.typ()).collect()
    }

    #[test]
    fn namespaces_and_network() {
        let spec = build(&RunOptions::default()).unwrap();
        let ns = namespace_types(&spec);
        for t in [
            LinuxNamespaceType::Pid,
            LinuxNamespaceType::Mount,
            LinuxNamespaceType::Uts,
            LinuxNamespaceType::Ipc,
            LinuxNamespaceType::Cgroup,
            LinuxNamespaceType::Network,
        ] {
            assert!(ns.contains(&t), "{t:?}");
        }
        assert!(!ns.contains(&LinuxNamespaceType::User));
        let none = build(&RunOptions { network: Network::None, ..Default::default() }).unwrap();
        assert!(namespace_types(&none).contains(&LinuxNamespaceType::Network));
        let host = build(&RunOptions { network: Network::Host, ..Default::default() }).unwrap();
        let ns = namespace_types(&host);
        assert!(!ns.contains(&LinuxNamespaceType::Network));
        assert!(ns.contains(&LinuxNamespaceType::Uts));
    }

    #[test]
    fn hostname_rules() {
        assert_eq!(container_hostname(&RunOptions::default(), "0123456789abcdef"), "0123456789ab");
        let opts = RunOptions { hostname: Some("web".into()), network: Network::Host, ..Default::default() };
        assert_eq!(container_hostname(&opts, "0123456789abcdef"), "web");
        let spec = build(&RunOptions { hostname: Some("web".into()), ..Default::default() }).unwrap();
        assert_eq!(spec.hostname().as_deref(), Some("web"));
        let e = build(&RunOptions { hostname: Some("h".repeat(65)), ..Default::default() }).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn root_and_read_only() {
        let spec = build(&RunOptions::default()).unwrap();
        let root = spec.root().as_ref().unwrap();
        assert_eq!(root.path(), Path::new("/run/rootfs"));
        assert_eq!(root.readonly(), Some(false));
        let spec = build(&RunOptions { read_only: true, ..Default::default() }).unwrap();
        assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));
    }

    #[test]
    fn init_is_an_annotation() {
        assert!(build(&RunOptions::default()).unwrap().annotations().is_none());
        let spec = build(&RunOptions { init: true, ..Default::default() }).unwrap();
        assert_eq!(spec.annotations().as_ref().unwrap().get(INIT_ANNOTATION).map(String::as_str), Some("true"));
    }

    #[test]
    fn process_basics() {
        let spec = build(&RunOptions { tty: true, ..Default::default() }).unwrap();
        let p = spec.process().as_ref().unwrap();
        assert_eq!(p.terminal(), Some(true));
        assert_eq!(p.no_new_privileges(), Some(true));
        assert_eq!(p.args().as_deref(), Some(&strings(&["sh"])[..]));
        assert!(p.rlimits().is_none());
        assert!(p.env().as_ref().unwrap().contains(&"TERM=xterm".to_string()));
    }

    // --- mounts ---

    fn find<'a>(spec: &'a Spec, dest: &str) -> Option<&'a Mount> {
        spec.mounts().as_ref().unwrap().iter().find(|m| m.destination() == Path::new(dest))
    }

    fn options(m: &Mount) -> Vec<String> {
        m.options().clone().unwrap_or_default()
    }

    #[test]
    fn default_mounts_are_dockers() {
        let spec = build(&RunOptions::default()).unwrap();
        let dests: Vec<_> =
            spec.mounts().as_ref().unwrap().iter().map(|m| m.destination().to_string_lossy().into_owned()).collect();
        assert_eq!(dests, strings(&["/proc", "/dev", "/dev/pts", "/sys", "/sys/fs/cgroup", "/dev/mqueue", "/dev/shm"]));
        assert_eq!(find(&spec, "/proc").unwrap().typ().as_deref(), Some("proc"));
        assert!(options(find(&spec, "/sys").unwrap()).contains(&"ro".into()));
        assert!(options(find(&spec, "/sys/fs/cgroup").unwrap()).contains(&"ro".into()));
        assert_eq!(find(&spec, "/sys/fs/cgroup").unwrap().typ().as_deref(), Some("cgroup"));
        assert_eq!(options(find(&spec, "/dev/pts").unwrap()).last().map(String::as_str), Some("gid=5"));
        assert!(options(find(&spec, "/dev/shm").unwrap()).contains(&"size=67108864".into()));
        assert!(options(find(&spec, "/dev/shm").unwrap()).contains(&"mode=1777".into()));
    }

    #[test]
    fn user_and_etc_mounts() {
        let opts = RunOptions {
            cmd: strings(&["sh"]),
            mounts: vec![
                MountSpec {
                    kind: MountKind::Bind,
                    source: "/srv/data/sub".into(),
                    target: "/data/sub".into(),
                    readonly: false,
                },
                MountSpec {
                    kind: MountKind::Bind,
                    source: "/srv/data".into(),
                    target: "/data/".into(),
                    readonly: true,
                },
                MountSpec {
                    kind: MountKind::Tmpfs,
                    source: PathBuf::new(),
                    target: "/scratch".into(),
                    readonly: false,
                },
                MountSpec {
                    kind: MountKind::Bind,
                    source: "/my/hosts".into(),
                    target: "/etc/hosts".into(),
                    readonly: false,
                },
            ],
            ..Default::default()
        };
        let etc = vec![
            ("/etc/hostname".to_string(), PathBuf::from("/b/hostname")),
            ("/etc/hosts".to_string(), PathBuf::from("/b/hosts")),
        ];
        let spec = build_spec(None, &opts, &root(), "id", Path::new("/r"), &etc).unwrap();
        let data = find(&spec, "/data").unwrap();
        assert_eq!(data.typ().as_deref(), Some("bind"));
        assert_eq!(data.source().as_deref(), Some(Path::new("/srv/data")));
        assert_eq!(options(data), strings(&["rbind", "ro", "rprivate"]));
        assert_eq!(options(find(&spec, "/data/sub").unwrap()), strings(&["rbind", "rprivate"]));
        let scratch = find(&spec, "/scratch").unwrap();
        assert_eq!(scratch.typ().as_deref(), Some("tmpfs"));
        assert_eq!(options(scratch), strings(&["noexec", "nosuid", "nodev", "rprivate"]));
        assert_eq!(options(find(&spec, "/etc/hostname").unwrap()), strings(&["rbind", "rprivate"]));
        // The user's /etc/hosts wins over the generated one.
        let hosts: Vec<_> =
            spec.mounts().as_ref().unwrap().iter().filter(|m| m.destination() == Path::new("/etc/hosts")).collect();
        assert_eq!(hosts.len(), 1);
        assert_eq!(hosts[0].source().as_deref(), Some(Path::new("/my/hosts")));
        // Parents before children.
        let order: Vec<_> = spec.mounts().as_ref().unwrap().iter().map(|m| m.destination().to_path_buf()).collect();
        let pos = |p: &str| order.iter().position(|d| d == Path::new(p)).unwrap();
        assert!(pos("/data") < pos("/data/sub"));
        // --read-only makes the generated /etc files read-only too (docker).
        let ro = RunOptions { read_only: true, mounts: vec![], ..opts };
        let spec = build_spec(None, &ro, &root(), "id", Path::new("/r"), &etc).unwrap();
        assert_eq!(options(find(&spec, "/etc/hosts").unwrap()), strings(&["rbind", "ro", "rprivate"]));
    }

    #[test]
    fn user_mount_replaces_default() {
        let opts = RunOptions {
            mounts: vec![MountSpec {
                kind: MountKind::Tmpfs,
                source: PathBuf::new(),
                target: "/dev".into(),
                readonly: false,
            }],
            ..Default::default()
        };
        let spec = build(&opts).unwrap();
        let devs: Vec<_> = spec
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .filter(|m| m.destination().starts_with("/dev"))
            .map(|m| m.destination().to_path_buf())
            .collect();
        assert_eq!(devs, vec![PathBuf::from("/dev")]);
    }

    #[test]
    fn bad_mounts() {
        let m = |target: &str, source: &str| RunOptions {
            mounts: vec![MountSpec {
                kind: MountKind::Bind,
                source: source.into(),
                target: target.into(),
                readonly: false,
            }],
            ..Default::default()
        };
        for opts in [m("relative", "/x"), m("/", "/x"), m("/a", "relative")] {
            assert_eq!(build(&opts).unwrap_err().kind(), ErrorKind::InvalidArgument);
        }
        let mut dup = m("/a", "/x");
        dup.mounts.push(MountSpec {
            kind: MountKind::Tmpfs,
            source: PathBuf::new(),
            target: "/a/".into(),
            readonly: false,
        });
        let e = build(&dup).unwrap_err();
        assert_eq!(e.to_string(), "duplicate mount point: /a");
    }

    // --- linux: paths, resources ---

    #[test]
    fn masked_and_readonly_paths() {
        let spec = build(&RunOptions::default()).unwrap();
        let linux = spec.linux().as_ref().unwrap();
        let masked = linux.masked_paths().clone().unwrap();
        for p in [
            "/proc/asound",
            "/proc/acpi",
            "/proc/kcore",
            "/proc/keys",
            "/proc/latency_stats",
            "/proc/timer_list",
            "/proc/timer_stats",
            "/proc/sched_debug",
            "/proc/scsi",
            "/sys/firmware",
            "/sys/devices/virtual/powercap",
            "/proc/interrupts",
        ] {
            assert!(masked.contains(&p.to_string()), "{p}");
        }
        assert_eq!(linux.readonly_paths().clone().unwrap(), strings(&READONLY_PATHS));
        assert_eq!(linux.cgroups_path().as_deref(), Some(Path::new("/strata/0123456789abcdef0123")));
        assert!(linux.sysctl().is_none());
        assert!(linux.seccomp().is_some(), "docker's default seccomp profile");
        assert!(linux.devices().is_none());
    }

    #[test]
    fn cpu_list() {
        assert_eq!(parse_cpu_list("0-3,8"), vec![0, 1, 2, 3, 8]);
        assert_eq!(parse_cpu_list("0"), vec![0]);
        assert_eq!(parse_cpu_list(""), Vec::<u32>::new());
        assert_eq!(parse_cpu_list("x,2"), vec![2]);
        assert_eq!(parse_cpu_list("0-4294967295").len(), 4096);
    }

    #[test]
    fn resources_from_options() {
        let opts = RunOptions { memory: Some(512 << 20), cpus: Some(0.5), pids_limit: Some(100), ..Default::default() };
        let spec = build(&opts).unwrap();
        let res = spec.linux().as_ref().unwrap().resources().clone().unwrap();
        let mem = res.memory().unwrap();
        assert_eq!(mem.limit(), Some(512 << 20));
        assert_eq!(mem.swap(), Some(1024 << 20));
        let cpu = res.cpu().clone().unwrap();
        assert_eq!((cpu.period(), cpu.quota()), (Some(100_000), Some(50_000)));
        assert_eq!(res.pids().unwrap().limit(), 100);
        let devices = res.devices().clone().unwrap();
        assert!(!devices[0].allow() && devices[0].typ().is_none() && devices[0].access().as_deref() == Some("rwm"));

        let spec = build(&RunOptions::default()).unwrap();
        let res = spec.linux().as_ref().unwrap().resources().clone().unwrap();
        assert!(res.memory().is_none() && res.cpu().is_none() && res.pids().is_none());
        let spec =
            build(&RunOptions { pids_limit: Some(0), memory: Some(0), cpus: Some(0.0), ..Default::default() }).unwrap();
        let res = spec.linux().as_ref().unwrap().resources().clone().unwrap();
        assert_eq!(res.pids().unwrap().limit(), -1);
        assert!(res.memory().is_none() && res.cpu().is_none());
    }

    #[test]
    fn bad_resources() {
        let e = build(&RunOptions { memory: Some(1 << 20), ..Default::default() }).unwrap_err();
        assert_eq!(e.to_string(), "minimum memory limit allowed is 6MB");
        for cpus in [-1.0, 0.001, 1e6, f64::NAN, f64::INFINITY] {
            let e = build(&RunOptions { cpus: Some(cpus), ..Default::default() }).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{cpus}");
        }
        let spec = build(&RunOptions { cpus: Some(0.01), ..Default::default() }).unwrap();
        let cpu = spec.linux().as_ref().unwrap().resources().as_ref().unwrap().cpu().clone().unwrap();
        assert_eq!(cpu.quota(), Some(1000));
    }

    // --- serialization ---

    #[test]
    fn spec_serializes() {
        let opts = RunOptions { memory: Some(64 << 20), cap_add: strings(&["NET_ADMIN"]), ..Default::default() };
        let spec = build(&opts).unwrap();
        let json = serde_json::to_string(&spec).unwrap();
        assert!(json.contains("\"ociVersion\""), "{json}");
        assert!(json.contains("\"CAP_NET_ADMIN\""));
        for absent in ["rlimits", "ambient", "inheritable", "annotations", "hooks", "sysctl", "youki"] {
            assert!(!json.contains(absent), "{absent} in {json}");
        }
        let back: Spec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, spec);
    }
}
