//! The container's control groups: `strata/<id>` (the spec's `cgroupsPath`) made in every
//! hierarchy the host mounts under `/sys/fs/cgroup`, the `linux.resources` limits written,
//! the init joined (it writes its own pid before it unshares its cgroup namespace), frozen for
//! `pause`, removed on delete.
//!
//! - **v2 (unified)**: `/sys/fs/cgroup` is cgroup2; the memory, cpu and pids controllers are
//!   enabled in each ancestor's `cgroup.subtree_control`; `memory.max`, `memory.swap.max`,
//!   `cpu.max`, `cpu.weight`, `pids.max`; the device rules as an eBPF program attached to the
//!   group; `cgroup.freeze` pauses.
//! - **v1 (and hybrid)**: one group per mounted hierarchy (`cpu`, `memory`, `pids`, `freezer`,
//!   `devices`, `name=systemd`, …, and the cgroup2 one at `unified` when mounted beside them,
//!   for tracking only); `memory.limit_in_bytes`, `memory.memsw.limit_in_bytes`,
//!   `cpu.cfs_period_us`/`cpu.cfs_quota_us`, `cpu.shares`, `pids.max`, the device rules in
//!   `devices.deny`/`devices.allow`; `freezer.state` pauses. A new cpuset group gets its
//!   parent's `cpuset.cpus`/`cpuset.mems` (the kernel refuses tasks in an empty cpuset).
//!
//! # Device rules
//!
//! The spec's rules, then the runtime's defaults (`device_rules`), go to exactly one place:
//! the v1 `devices` group when that hierarchy is mounted (a v1 host, or a hybrid one: v1
//! controllers with cgroup2 at `unified`), else the unified group as an eBPF program
//! (`devices`): a v2 host, or a hybrid one whose v1 hierarchies leave `devices` out. The
//! kernel checks a device access against both mechanisms, the cgroup BPF programs first, then
//! the v1 controller (`devcgroup_check_permission`), and a program attaches to any cgroup2
//! group, controllers or not; so beside a v1 `devices` group a program would only check the
//! same list a second time, at the cost of a program per container, and for the odd lists the
//! two read differently (see `devices`) the stricter answer would win. runc on a hybrid host
//! uses the v1 controller alone too. The program is attached after the limits, before the
//! init joins the group; removing the group detaches it.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, LinuxResources};
use serde::{Deserialize, Serialize};

use super::devices;
use crate::error::{Error, ErrorKind, Result};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// Where a container's groups are.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Cgroups {
    /// The group in the unified hierarchy (the only one on a v2 host; the tracking one beside
    /// v1 controllers on a hybrid host).
    pub unified: Option<PathBuf>,
    /// Whether the unified hierarchy holds the controllers (a pure v2 host).
    pub v2: bool,
    /// v1 groups: (hierarchy directory name under /sys/fs/cgroup, group path).
    pub v1: Vec<(String, PathBuf)>,
}

fn io_err(what: &str, p: &Path, e: std::io::Error) -> Error {
    Error::new(ErrorKind::Runtime, format!("cannot {what} {}", p.display())).with_source(e)
}

/// Writes `value` to cgroup file `dir/file`, naming both on failure (the kernel's EINVAL is the
/// usual answer to a bad limit).
fn write(dir: &Path, file: &str, value: &str) -> Result<()> {
    let p = dir.join(file);
    std::fs::write(&p, value).map_err(|e| {
        Error::new(ErrorKind::InvalidArgument, format!("cannot set cgroup {} to {value:?}", p.display())).with_source(e)
    })
}

pub(crate) fn is_cgroup2(p: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) else { return false };
    // SAFETY: statfs fills the zeroed struct we pass.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a valid out pointer.
    (unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0) && st.f_type as i64 == CGROUP2_SUPER_MAGIC
}

/// The hierarchies mounted under /sys/fs/cgroup: (directory name, is cgroup2). Symlinked
/// co-mount names (`cpu` → `cpu,cpuacct`) are skipped: the real directory is listed.
pub fn hierarchies() -> Vec<(String, bool)> {
    let Ok(mi) = std::fs::read_to_string("/proc/self/mountinfo") else { return Vec::new() };
    let mut out = Vec::new();
    for l in mi.lines() {
        let f: Vec<&str> = l.split(' ').collect();
        let Some(sep) = f.iter().position(|x| *x == "-") else { continue };
        let (mp, fstype) = (f.get(4).copied().unwrap_or(""), f.get(sep + 1).copied().unwrap_or(""));
        let Some(name) = mp.strip_prefix("/sys/fs/cgroup/") else { continue };
        if name.contains('/') || !(fstype == "cgroup" || fstype == "cgroup2") {
            continue;
        }
        out.push((name.to_string(), fstype == "cgroup2"));
    }
    out
}

/// The `cgroupsPath` made relative ("/strata/ID" → "strata/ID").
fn relative(path: &Path) -> PathBuf {
    path.components().filter(|c| matches!(c, std::path::Component::Normal(_))).collect()
}

impl Cgroups {
    /// The groups for `cgroups_path` on this host (not made yet).
    pub fn for_path(cgroups_path: &Path) -> Cgroups {
        let rel = relative(cgroups_path);
        let root = Path::new(CGROUP_ROOT);
        if is_cgroup2(root) {
            return Cgroups { unified: Some(root.join(&rel)), v2: true, v1: Vec::new() };
        }
        let mut c = Cgroups::default();
        for (name, v2) in hierarchies() {
            let dir = root.join(&name).join(&rel);
            if v2 {
                c.unified = Some(dir);
            } else {
                c.v1.push((name, dir));
            }
        }
        c
    }

    /// Every group directory.
    pub fn dirs(&self) -> impl Iterator<Item = &Path> {
        self.unified.iter().map(PathBuf::as_path).chain(self.v1.iter().map(|(_, p)| p.as_path()))
    }

    fn v1_dir(&self, controller: &str) -> Option<&Path> {
        self.v1.iter().find(|(name, _)| name.split(',').any(|c| c == controller)).map(|(_, p)| p.as_path())
    }

    /// Makes the groups and writes the limits; on failure, removes what it made.
    pub fn create(&self, resources: Option<&LinuxResources>) -> Result<()> {
        let r = self.create_inner(resources);
        if r.is_err() {
            self.remove();
        }
        r
    }

    fn create_inner(&self, resources: Option<&LinuxResources>) -> Result<()> {
        if self.v2 {
            if let Some(dir) = &self.unified {
                enable_controllers(dir)?;
            }
        }
        for dir in self.dirs() {
            std::fs::create_dir_all(dir).map_err(|e| io_err("create cgroup", dir, e))?;
        }
        if let Some(cpuset) = self.v1_dir("cpuset") {
            fill_cpuset(cpuset)?;
        }
        let Some(res) = resources else { return Ok(()) };
        if self.v2 {
            self.limits_v2(res)?;
        } else {
            self.limits_v1(res)?;
        }
        if let (Some(rules), Some(dir)) = (res.devices(), self.device_program_group()) {
            devices::apply(dir, &device_rules(rules))?;
        }
        Ok(())
    }

    /// The group that gets the device rules as an eBPF program: the unified one, unless a v1
    /// `devices` hierarchy holds the rules (see the module doc).
    fn device_program_group(&self) -> Option<&Path> {
        if self.v1_dir("devices").is_some() {
            return None;
        }
        self.unified.as_deref()
    }

    fn limits_v1(&self, res: &LinuxResources) -> Result<()> {
        if let (Some(m), Some(dir)) = (res.memory(), self.v1_dir("memory")) {
            if let Some(limit) = m.limit() {
                write(dir, "memory.limit_in_bytes", &limit.to_string())?;
            }
            if let Some(swap) = m.swap() {
                // Only with swap accounting (the file is missing without it).
                if dir.join("memory.memsw.limit_in_bytes").exists() {
                    write(dir, "memory.memsw.limit_in_bytes", &swap.to_string())?;
                }
            }
            if let Some(r) = m.reservation() {
                write(dir, "memory.soft_limit_in_bytes", &r.to_string())?;
            }
        }
        if let (Some(cpu), Some(dir)) = (res.cpu(), self.v1_dir("cpu")) {
            if let Some(s) = cpu.shares() {
                write(dir, "cpu.shares", &s.to_string())?;
            }
            if let Some(p) = cpu.period() {
                write(dir, "cpu.cfs_period_us", &p.to_string())?;
            }
            if let Some(q) = cpu.quota() {
                write(dir, "cpu.cfs_quota_us", &q.to_string())?;
            }
        }
        if let (Some(p), Some(dir)) = (res.pids(), self.v1_dir("pids")) {
            write(dir, "pids.max", &pids_value(p.limit()))?;
        }
        if let (Some(rules), Some(dir)) = (res.devices(), self.v1_dir("devices")) {
            for d in device_rules(rules) {
                write(dir, if d.allow() { "devices.allow" } else { "devices.deny" }, &device_rule(&d)?)?;
            }
        }
        Ok(())
    }

    fn limits_v2(&self, res: &LinuxResources) -> Result<()> {
        let Some(dir) = &self.unified else { return Ok(()) };
        if let Some(m) = res.memory() {
            if let Some(limit) = m.limit() {
                write(dir, "memory.max", &max_value(limit))?;
                if let Some(swap) = m.swap() {
                    // OCI's swap is memory + swap; v2's swap.max is the swap alone.
                    let v = if swap < 0 { "max".to_string() } else { (swap - limit).max(0).to_string() };
                    if dir.join("memory.swap.max").exists() {
                        write(dir, "memory.swap.max", &v)?;
                    }
                }
            }
            if let Some(r) = m.reservation() {
                write(dir, "memory.low", &max_value(r))?;
            }
        }
        if let Some(cpu) = res.cpu() {
            if let Some(s) = cpu.shares() {
                // runc's conversion of shares [2, 262144] to weight [1, 10000].
                let w = 1 + ((s.clamp(2, 262_144) - 2) * 9999) / 262_142;
                write(dir, "cpu.weight", &w.to_string())?;
            }
            if cpu.quota().is_some() || cpu.period().is_some() {
                let q = cpu.quota().filter(|&q| q > 0).map_or("max".to_string(), |q| q.to_string());
                write(dir, "cpu.max", &format!("{q} {}", cpu.period().unwrap_or(100_000)))?;
            }
        }
        if let Some(p) = res.pids() {
            write(dir, "pids.max", &pids_value(p.limit()))?;
        }
        Ok(())
    }

    /// Moves the calling process into every group.
    pub fn join(&self, in_unified: bool) -> Result<()> {
        // v1: the calling thread through `tasks`, not the process through `cgroup.procs`: the
        // kernel moves a whole process under a global percpu rwsem whose write side waits for
        // an RCU grace period (5-20 ms here, per container), while "0" in `tasks` moves only
        // the caller, without it. Callers are single-threaded, so that is the whole process.
        for (_, dir) in &self.v1 {
            write(dir, "tasks", "0")?;
        }
        // The unified group has no such per-thread way in (threads cannot leave their domain):
        // a process made inside it (`clone3` with CLONE_INTO_CGROUP, `in_unified`) need not
        // move; else it moves, at the grace period's cost.
        if let (Some(dir), false) = (&self.unified, in_unified) {
            write(dir, "cgroup.procs", "0")?;
        }
        Ok(())
    }

    /// Freezes or thaws the groups' processes, and waits until the kernel reports it done.
    pub fn freeze(&self, frozen: bool) -> Result<()> {
        let no_group = || Error::new(ErrorKind::Runtime, "no freezer cgroup hierarchy is mounted: cannot pause");
        // (group, file to write, value, file to read back, the line that means done)
        let (dir, file, value, check, want) = if self.v2 {
            let dir = self.unified.as_deref().ok_or_else(no_group)?;
            let (v, w) = if frozen { ("1", "frozen 1") } else { ("0", "frozen 0") };
            (dir, "cgroup.freeze", v, "cgroup.events", w)
        } else {
            let dir = self.v1_dir("freezer").ok_or_else(no_group)?;
            let v = if frozen { "FROZEN" } else { "THAWED" };
            (dir, "freezer.state", v, "freezer.state", v)
        };
        write(dir, file, value)?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let s = std::fs::read_to_string(dir.join(check)).unwrap_or_default();
            if s.lines().any(|l| l.trim() == want) {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(Error::new(
                    ErrorKind::Runtime,
                    format!("the cgroup {} did not freeze in time", dir.display()),
                ));
            }
            if !self.v2 {
                // v1 stays FREEZING while a task is in an uninterruptible sleep; ask again.
                let _ = std::fs::write(dir.join(file), value);
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// The pids in the groups (from the first hierarchy that lists any).
    pub fn pids(&self) -> Vec<i32> {
        for dir in self.dirs() {
            if let Ok(s) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                let v: Vec<i32> = s.lines().filter_map(|l| l.trim().parse().ok()).collect();
                if !v.is_empty() {
                    return v;
                }
            }
        }
        Vec::new()
    }

    /// Removes the groups (waiting a little for exiting tasks to leave them).
    pub fn remove(&self) {
        for dir in self.dirs() {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
            loop {
                match std::fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(_) if std::time::Instant::now() < deadline => {
                        std::thread::sleep(std::time::Duration::from_millis(2))
                    }
                    Err(_) => break,
                }
            }
        }
    }
}

fn pids_value(limit: i64) -> String {
    if limit <= 0 {
        "max".to_string()
    } else {
        limit.to_string()
    }
}

fn max_value(v: i64) -> String {
    if v < 0 {
        "max".to_string()
    } else {
        v.to_string()
    }
}

/// The device rules a container's group gets: the spec's, then the runtime's own defaults after
/// them, as runc appends its `AllowedDevices` (libcontainer/specconv): mknod of any node
/// (opening one is what the rules guard), /dev/full, the ptys and /dev/ptmx.
pub(crate) fn device_rules(spec: &[LinuxDeviceCgroup]) -> Vec<LinuxDeviceCgroup> {
    let allow = |typ, major: Option<i64>, minor: Option<i64>, access: &str| {
        let mut r = LinuxDeviceCgroup::default();
        r.set_allow(true);
        r.set_typ(Some(typ));
        r.set_major(major);
        r.set_minor(minor);
        r.set_access(Some(access.to_string()));
        r
    };
    let mut rules = spec.to_vec();
    rules.extend([
        allow(LinuxDeviceType::C, None, None, "m"),
        allow(LinuxDeviceType::B, None, None, "m"),
        allow(LinuxDeviceType::C, Some(1), Some(7), "rwm"),
        allow(LinuxDeviceType::C, Some(136), None, "rwm"),
        allow(LinuxDeviceType::C, Some(5), Some(2), "rwm"),
    ]);
    rules
}

/// A v1 device rule: `c 1:3 rwm`, `a *:* rwm`. A negative number is a wildcard (runc's -1);
/// `p` (a FIFO) is not a type the devices controller knows.
fn device_rule(d: &LinuxDeviceCgroup) -> Result<String> {
    let typ = match d.typ() {
        None | Some(LinuxDeviceType::A) => "a",
        Some(LinuxDeviceType::B) => "b",
        Some(LinuxDeviceType::C | LinuxDeviceType::U) => "c",
        Some(t) => return Err(Error::invalid(format!("device cgroup rule type {:?} is not a, b or c", t.as_str()))),
    };
    let num = |n: Option<i64>| n.filter(|n| *n >= 0).map_or("*".to_string(), |n| n.to_string());
    let access = d.access().clone().unwrap_or_else(|| "rwm".to_string());
    Ok(format!("{typ} {}:{} {access}", num(d.major()), num(d.minor())))
}

/// v2: enables memory, cpu and pids for the children of every ancestor of `dir` (those the
/// host has; a controller the parent lacks is left out).
fn enable_controllers(dir: &Path) -> Result<()> {
    let root = Path::new(CGROUP_ROOT);
    let Ok(rel) = dir.strip_prefix(root) else { return Ok(()) };
    let mut cur = root.to_path_buf();
    for comp in
        rel.parent().map(|p| p.components().collect::<Vec<_>>()).unwrap_or_default().into_iter().map(Some).chain([None])
    {
        let available = std::fs::read_to_string(cur.join("cgroup.controllers")).unwrap_or_default();
        let want: Vec<String> = ["memory", "cpu", "pids"]
            .iter()
            .filter(|c| available.split_whitespace().any(|a| a == **c))
            .map(|c| format!("+{c}"))
            .collect();
        if !want.is_empty() {
            let _ = std::fs::write(cur.join("cgroup.subtree_control"), want.join(" "));
        }
        match comp {
            Some(c) => {
                cur.push(c);
                std::fs::create_dir_all(&cur).map_err(|e| io_err("create cgroup", &cur, e))?;
            }
            None => break,
        }
    }
    Ok(())
}

/// v1 cpuset: copies `cpuset.cpus` and `cpuset.mems` down from the nearest ancestor that has
/// them into every empty level from there to `dir`.
fn fill_cpuset(dir: &Path) -> Result<()> {
    let mut chain = vec![dir.to_path_buf()];
    while let Some(p) = chain.last().and_then(|p| p.parent()).map(Path::to_path_buf) {
        if !p.join("cpuset.cpus").exists() {
            break;
        }
        chain.push(p);
    }
    for level in chain.iter().rev().skip(1) {
        for f in ["cpuset.cpus", "cpuset.mems"] {
            let mine = std::fs::read_to_string(level.join(f)).unwrap_or_default();
            if mine.trim().is_empty() {
                let parent = level.parent().map(|p| p.join(f)).unwrap_or_default();
                let v = std::fs::read_to_string(&parent).unwrap_or_default();
                write(level, f, v.trim())?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_rules() {
        assert_eq!(relative(Path::new("/strata/abc")), PathBuf::from("strata/abc"));
        let rule: oci_spec::runtime::LinuxDeviceCgroup = serde_json::from_value(
            serde_json::json!({"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}),
        )
        .unwrap();
        assert_eq!(device_rule(&rule).unwrap(), "c 1:3 rwm");
        let all: oci_spec::runtime::LinuxDeviceCgroup =
            serde_json::from_value(serde_json::json!({"allow": false, "access": "rwm"})).unwrap();
        assert_eq!(device_rule(&all).unwrap(), "a *:* rwm");
        let wild: LinuxDeviceCgroup =
            serde_json::from_value(serde_json::json!({"allow": true, "type": "c", "major": 136, "minor": -1})).unwrap();
        assert_eq!(device_rule(&wild).unwrap(), "c 136:* rwm");
        let fifo: LinuxDeviceCgroup = serde_json::from_value(serde_json::json!({"allow": true, "type": "p"})).unwrap();
        assert_eq!(device_rule(&fifo).unwrap_err().kind(), ErrorKind::InvalidArgument);
        // The runtime's defaults come after the spec's, in the v1 syntax runc writes.
        let v1: Vec<String> = device_rules(&[all]).iter().map(|d| device_rule(d).unwrap()).collect();
        assert_eq!(v1, ["a *:* rwm", "c *:* m", "b *:* m", "c 1:7 rwm", "c 136:* rwm", "c 5:2 rwm"]);
        assert_eq!(pids_value(-1), "max");
        assert_eq!(pids_value(10), "10");
    }

    #[test]
    fn the_device_program_goes_where_no_v1_devices_group_holds_the_rules() {
        let unified = PathBuf::from("/sys/fs/cgroup/strata/x");
        let v2 = Cgroups { unified: Some(unified.clone()), v2: true, v1: Vec::new() };
        assert_eq!(v2.device_program_group(), Some(unified.as_path()));
        let group = |name: &str| (name.to_string(), PathBuf::from(format!("/sys/fs/cgroup/{name}/strata/x")));
        let hybrid_unified = PathBuf::from("/sys/fs/cgroup/unified/strata/x");
        let hybrid = Cgroups {
            unified: Some(hybrid_unified.clone()),
            v2: false,
            v1: vec![group("cpu,cpuacct"), group("devices"), group("memory")],
        };
        assert_eq!(hybrid.device_program_group(), None, "the v1 devices group holds the rules");
        let without_devices = Cgroups { v1: vec![group("cpu,cpuacct"), group("memory")], ..hybrid.clone() };
        assert_eq!(without_devices.device_program_group(), Some(hybrid_unified.as_path()));
        let comounted = Cgroups { v1: vec![group("devices,freezer")], ..hybrid };
        assert_eq!(comounted.device_program_group(), None);
        let v1_only = Cgroups { unified: None, v2: false, v1: vec![group("memory")] };
        assert_eq!(v1_only.device_program_group(), None);
    }

    /// `create` on a v2 shape, in a real cgroup2 group (under `/sys/fs/cgroup/unified` on a
    /// hybrid host): the program is attached, the container's view of devices is docker's, and
    /// `remove` takes the group and its program away.
    #[test]
    fn create_attaches_the_device_program_on_v2() {
        use super::super::devices::testing::*;
        let Some(root) = cgroup2_root() else { return };
        let dir = root.join(format!("strata-test-cgroups-{}", std::process::id()));
        let groups = Cgroups { unified: Some(dir.clone()), v2: true, v1: Vec::new() };
        let tmp = tempfile::tempdir().unwrap();
        let kmsg = tmp.path().join("kmsg");
        make_node(&kmsg, libc::S_IFCHR, 1, 11);
        let res = docker_resources();
        assert!(res.memory().is_none() && res.cpu().is_none() && res.pids().is_none());
        groups.create(Some(&res)).unwrap();
        let _cleanup = Group(dir.clone());
        let got = probe(&dir, &[open("/dev/null", libc::O_RDWR), open(kmsg.to_str().unwrap(), libc::O_WRONLY)]);
        assert_eq!(got, [0, libc::EPERM]);
        groups.remove();
        assert!(!dir.exists());
        // Without device rules in the spec, no program: as on v1, nothing is restricted.
        let mut open_res = res.clone();
        open_res.set_devices(None);
        groups.create(Some(&open_res)).unwrap();
        let got = probe(&dir, &[open(kmsg.to_str().unwrap(), libc::O_WRONLY)]);
        groups.remove();
        assert_eq!(got, [0]);
    }
}
