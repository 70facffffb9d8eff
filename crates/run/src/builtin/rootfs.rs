//! The container's file system, from a rootfs already mounted (the overlay `lifecycle`
//! prepares) to the view its process gets, in runc's order:
//!
//! 1. `/` becomes `rprivate` in the new mount namespace (nothing propagates back to the host)
//!    and the rootfs is bind-mounted onto itself (pivot_root wants a mount point);
//! 2. the spec's `mounts`, in order, each target resolved inside the rootfs; `cgroup` is the
//!    host's hierarchies as the container's cgroup namespace shows them;
//! 3. with a fresh `/dev` tmpfs: the standard device nodes (null, zero, full, random, urandom,
//!    tty, mknod'd as runc does outside a user namespace) and links (fd, stdin, stdout,
//!    stderr, ptmx → pts/ptmx, core);
//! 4. `pivot_root(".", ".")` then a lazy unmount of the old root stacked under the new one
//!    (runc's trick: no directory for the old root is needed);
//! 5. `maskedPaths` (a directory gets an empty read-only tmpfs, a file `/dev/null`),
//!    `readonlyPaths` (bind remounted read-only, keeping nosuid/nodev/noexec), then the root
//!    itself read-only with `root.readonly`.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{Mount, Spec};

use super::syscall::Syscall;
use crate::error::{Error, ErrorKind, Result};

/// What a mount's `options` mean to mount(2).
#[derive(Debug, Default, PartialEq, Eq)]
struct Options {
    flags: libc::c_ulong,
    /// MS_SHARED, MS_PRIVATE, … (+ MS_REC), applied by a second call.
    propagation: libc::c_ulong,
    /// Everything mount(2) does not know as a flag: the file system's own options.
    data: Vec<String>,
}

fn parse_options(opts: &[String]) -> Options {
    let mut o = Options::default();
    for opt in opts {
        let (set, clear, prop): (libc::c_ulong, libc::c_ulong, libc::c_ulong) = match opt.as_str() {
            "ro" => (libc::MS_RDONLY, 0, 0),
            "rw" => (0, libc::MS_RDONLY, 0),
            "nosuid" => (libc::MS_NOSUID, 0, 0),
            "suid" => (0, libc::MS_NOSUID, 0),
            "nodev" => (libc::MS_NODEV, 0, 0),
            "dev" => (0, libc::MS_NODEV, 0),
            "noexec" => (libc::MS_NOEXEC, 0, 0),
            "exec" => (0, libc::MS_NOEXEC, 0),
            "sync" => (libc::MS_SYNCHRONOUS, 0, 0),
            "async" => (0, libc::MS_SYNCHRONOUS, 0),
            "dirsync" => (libc::MS_DIRSYNC, 0, 0),
            "remount" => (libc::MS_REMOUNT, 0, 0),
            "mand" => (libc::MS_MANDLOCK, 0, 0),
            "nomand" => (0, libc::MS_MANDLOCK, 0),
            "atime" => (0, libc::MS_NOATIME, 0),
            "noatime" => (libc::MS_NOATIME, 0, 0),
            "diratime" => (0, libc::MS_NODIRATIME, 0),
            "nodiratime" => (libc::MS_NODIRATIME, 0, 0),
            "relatime" => (libc::MS_RELATIME, 0, 0),
            "norelatime" => (0, libc::MS_RELATIME, 0),
            "strictatime" => (libc::MS_STRICTATIME, 0, 0),
            "nostrictatime" => (0, libc::MS_STRICTATIME, 0),
            "bind" => (libc::MS_BIND, 0, 0),
            "rbind" => (libc::MS_BIND | libc::MS_REC, 0, 0),
            "private" => (0, 0, libc::MS_PRIVATE),
            "rprivate" => (0, 0, libc::MS_PRIVATE | libc::MS_REC),
            "shared" => (0, 0, libc::MS_SHARED),
            "rshared" => (0, 0, libc::MS_SHARED | libc::MS_REC),
            "slave" => (0, 0, libc::MS_SLAVE),
            "rslave" => (0, 0, libc::MS_SLAVE | libc::MS_REC),
            "unbindable" => (0, 0, libc::MS_UNBINDABLE),
            "runbindable" => (0, 0, libc::MS_UNBINDABLE | libc::MS_REC),
            _ => {
                o.data.push(opt.clone());
                continue;
            }
        };
        o.flags = (o.flags | set) & !clear;
        o.propagation |= prop;
    }
    o
}

/// The host's cgroup hierarchies, for a `cgroup` mount: (directory name, cgroup2, mount data),
/// and the symlinks beside them (`cpu` → `cpu,cpuacct`).
#[derive(Debug, Default, Clone)]
pub struct HostCgroups {
    /// Whether /sys/fs/cgroup itself is cgroup2.
    pub unified: bool,
    /// (name, is cgroup2, mount data such as `cpu,cpuacct` or `none,name=systemd`).
    pub hierarchies: Vec<(String, bool, String)>,
    /// (link name, target).
    pub links: Vec<(String, PathBuf)>,
}

impl HostCgroups {
    /// Reads them from this process's mountinfo.
    pub fn read() -> HostCgroups {
        let mut h = HostCgroups::default();
        let Ok(mi) = std::fs::read_to_string("/proc/self/mountinfo") else { return h };
        for l in mi.lines() {
            let f: Vec<&str> = l.split(' ').collect();
            let Some(sep) = f.iter().position(|x| *x == "-") else { continue };
            let mp = f.get(4).copied().unwrap_or("");
            let fstype = f.get(sep + 1).copied().unwrap_or("");
            let superopts = f.get(sep + 3).copied().unwrap_or("");
            if mp == "/sys/fs/cgroup" && fstype == "cgroup2" {
                h.unified = true;
            }
            let Some(name) = mp.strip_prefix("/sys/fs/cgroup/") else { continue };
            if name.contains('/') || !(fstype == "cgroup" || fstype == "cgroup2") {
                continue;
            }
            let opts: Vec<&str> = superopts
                .split(',')
                .filter(|o| {
                    !matches!(*o, "rw" | "ro" | "xattr" | "clone_children" | "nsdelegate" | "memory_recursiveprot")
                })
                .filter(|o| !o.starts_with("release_agent="))
                .collect();
            let mut data = opts.join(",");
            if opts.iter().all(|o| o.starts_with("name=")) && !opts.is_empty() {
                data = format!("none,{data}");
            }
            h.hierarchies.push((name.to_string(), fstype == "cgroup2", data));
        }
        if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
            for e in rd.flatten() {
                if let Ok(t) = std::fs::read_link(e.path()) {
                    h.links.push((e.file_name().to_string_lossy().into_owned(), t));
                }
            }
        }
        h
    }
}

/// Everything from step 1 to 5 for `spec`, whose root is at `rootfs` (host path).
pub fn setup(sys: &dyn Syscall, spec: &Spec, rootfs: &Path, cgroups: &HostCgroups) -> Result<()> {
    let fail = |what: String| move |e: std::io::Error| Error::new(ErrorKind::Runtime, what).with_source(e);
    sys.mount(None, Path::new("/"), None, libc::MS_REC | libc::MS_PRIVATE, None)
        .map_err(fail("cannot make the mount namespace private".into()))?;
    sys.mount(Some(rootfs), rootfs, None, libc::MS_BIND | libc::MS_REC, None)
        .map_err(fail(format!("cannot bind the rootfs {}", rootfs.display())))?;
    let mut fresh_dev = false;
    for m in spec.mounts().as_deref().unwrap_or_default() {
        mount_one(sys, rootfs, m, cgroups)?;
        if m.destination() == Path::new("/dev") && m.typ().as_deref() != Some("bind") {
            fresh_dev = true;
        }
    }
    if fresh_dev {
        devices(sys, rootfs)?;
    }
    sys.chdir(rootfs).map_err(fail(format!("cannot enter {}", rootfs.display())))?;
    sys.pivot_root(Path::new("."), Path::new(".")).map_err(fail("cannot pivot_root into the rootfs".into()))?;
    sys.umount(Path::new("."), libc::MNT_DETACH).map_err(fail("cannot detach the old root".into()))?;
    sys.chdir(Path::new("/")).map_err(fail("cannot enter /".into()))?;
    let linux = spec.linux().as_ref();
    for p in linux.and_then(|l| l.masked_paths().as_deref()).unwrap_or_default() {
        mask(sys, Path::new(p))?;
    }
    for p in linux.and_then(|l| l.readonly_paths().as_deref()).unwrap_or_default() {
        readonly(sys, Path::new(p))?;
    }
    if spec.root().as_ref().and_then(|r| r.readonly()) == Some(true) {
        let flags = sys.mount_flags(Path::new("/")).unwrap_or(0);
        sys.mount(None, Path::new("/"), None, libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | flags, None)
            .map_err(fail("cannot make the root read-only".into()))?;
    }
    Ok(())
}

fn mount_one(sys: &dyn Syscall, rootfs: &Path, m: &Mount, cgroups: &HostCgroups) -> Result<()> {
    let dest = m.destination();
    let typ = m.typ().as_deref().unwrap_or("");
    let opts = parse_options(m.options().as_deref().unwrap_or_default());
    let bind = opts.flags & libc::MS_BIND != 0 || typ == "bind";
    let source = m.source().clone().unwrap_or_else(|| PathBuf::from(typ));
    let fail = |e: std::io::Error| {
        Error::new(ErrorKind::Runtime, format!("cannot mount {} on {} ({typ})", source.display(), dest.display()))
            .with_source(e)
    };
    // A bind of a file needs a file to mount on.
    let dir = !bind || std::fs::metadata(&source).map(|md| md.is_dir()).unwrap_or(true);
    let target = sys.mount_target(rootfs, dest, dir).map_err(fail)?;
    let data = opts.data.join(",");
    let data = (!data.is_empty()).then_some(data.as_str());
    if bind {
        sys.mount(Some(&source), &target, None, libc::MS_BIND | (opts.flags & libc::MS_REC), None).map_err(fail)?;
        let extra = opts.flags & !(libc::MS_BIND | libc::MS_REC | libc::MS_REMOUNT);
        if extra != 0 {
            // Bind mounts take their flags (ro, nosuid, …) on a remount only.
            sys.mount(None, &target, None, libc::MS_BIND | libc::MS_REMOUNT | extra, None).map_err(fail)?;
        }
    } else if typ == "cgroup" {
        mount_cgroups(sys, &target, opts.flags, cgroups).map_err(fail)?;
    } else {
        sys.mount(Some(&source), &target, Some(typ), opts.flags, data).map_err(fail)?;
    }
    if opts.propagation != 0 {
        sys.mount(None, &target, None, opts.propagation, None).map_err(fail)?;
    }
    Ok(())
}

/// A `cgroup` mount: cgroup2 on a unified host; else a tmpfs with each v1 hierarchy (and the
/// hybrid cgroup2 one) mounted in it, the co-mount links copied, then made read-only when asked.
/// Mounted from inside the container's cgroup namespace, each shows the container's group as
/// its root (runc does the same with cgroupns).
fn mount_cgroups(sys: &dyn Syscall, target: &Path, flags: libc::c_ulong, h: &HostCgroups) -> std::io::Result<()> {
    let flags = flags | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    if h.unified {
        return sys.mount(Some(Path::new("cgroup2")), target, Some("cgroup2"), flags, None);
    }
    sys.mount(Some(Path::new("tmpfs")), target, Some("tmpfs"), flags & !libc::MS_RDONLY, Some("mode=755"))?;
    for (name, v2, data) in &h.hierarchies {
        let dir = target.join(name);
        sys.mkdir_all(&dir, 0o755)?;
        if *v2 {
            sys.mount(Some(Path::new("cgroup2")), &dir, Some("cgroup2"), flags, None)?;
        } else {
            sys.mount(Some(Path::new("cgroup")), &dir, Some("cgroup"), flags, Some(data))?;
        }
    }
    for (link, to) in &h.links {
        sys.symlink(to, &target.join(link))?;
    }
    if flags & libc::MS_RDONLY != 0 {
        sys.mount(None, target, None, libc::MS_REMOUNT | flags, Some("mode=755"))?;
    }
    Ok(())
}

/// The device nodes and links of a fresh `/dev` (runc's `DefaultSimpleDevices` and
/// `setupDevSymlinks`/`setupPtmx`).
fn devices(sys: &dyn Syscall, rootfs: &Path) -> Result<()> {
    let dev = rootfs.join("dev");
    let fail = |p: &Path| {
        let p = p.to_path_buf();
        move |e: std::io::Error| Error::new(ErrorKind::Runtime, format!("cannot create {}", p.display())).with_source(e)
    };
    for (name, major, minor) in
        [("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0)]
    {
        let p = dev.join(name);
        sys.mknod(&p, libc::S_IFCHR | 0o666, libc::makedev(major, minor)).map_err(fail(&p))?;
    }
    let mut links = vec![
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
        ("pts/ptmx", "ptmx"),
    ];
    if sys.kind(Path::new("/proc/kcore")).ok().flatten().is_some() {
        links.push(("/proc/kcore", "core"));
    }
    for (target, name) in links {
        let p = dev.join(name);
        sys.symlink(Path::new(target), &p).map_err(fail(&p))?;
    }
    Ok(())
}

/// Hides `path`: a directory under an empty read-only tmpfs, a file under `/dev/null`.
fn mask(sys: &dyn Syscall, path: &Path) -> Result<()> {
    let fail =
        |e: std::io::Error| Error::new(ErrorKind::Runtime, format!("cannot mask {}", path.display())).with_source(e);
    match sys.kind(path).map_err(fail)? {
        None => Ok(()),
        Some(true) => sys.mount(Some(Path::new("tmpfs")), path, Some("tmpfs"), libc::MS_RDONLY, None).map_err(fail),
        Some(false) => sys.mount(Some(Path::new("/dev/null")), path, None, libc::MS_BIND, None).map_err(fail),
    }
}

/// Makes `path` read-only: a bind of itself, remounted read-only with the flags it had.
fn readonly(sys: &dyn Syscall, path: &Path) -> Result<()> {
    let fail = |e: std::io::Error| {
        Error::new(ErrorKind::Runtime, format!("cannot make {} read-only", path.display())).with_source(e)
    };
    if sys.kind(path).map_err(fail)?.is_none() {
        return Ok(());
    }
    sys.mount(Some(path), path, None, libc::MS_BIND | libc::MS_REC, None).map_err(fail)?;
    let flags = sys.mount_flags(path).map_err(fail)?;
    sys.mount(None, path, None, libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_REC | flags, None)
        .map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtin::syscall::Recorder;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_split_into_flags_propagation_and_data() {
        let o = parse_options(&strings(&["nosuid", "noexec", "mode=755", "size=65536k", "rprivate", "ro", "rw"]));
        assert_eq!(o.flags, libc::MS_NOSUID | libc::MS_NOEXEC);
        assert_eq!(o.propagation, libc::MS_PRIVATE | libc::MS_REC);
        assert_eq!(o.data, strings(&["mode=755", "size=65536k"]));
        let b = parse_options(&strings(&["rbind", "ro"]));
        assert_eq!(b.flags, libc::MS_BIND | libc::MS_REC | libc::MS_RDONLY);
    }

    #[test]
    fn setup_order_reads_like_runc() {
        let spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "/r", "readonly": true},
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid"]},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["mode=755"]},
                {"destination": "/data", "type": "bind", "source": "/nonexistent-host-dir", "options": ["rbind", "ro", "rprivate"]}
            ],
            "linux": {"maskedPaths": ["/proc/kcore", "/proc/acpi", "/proc/missing"], "readonlyPaths": ["/proc/sys"]}
        }))
        .unwrap();
        let sys = Recorder::new(&[("/proc/kcore", false), ("/proc/acpi", true), ("/proc/sys", true)]);
        setup(&sys, &spec, Path::new("/r"), &HostCgroups::default()).unwrap();
        let calls = sys.calls.borrow();
        let f = |v: libc::c_ulong| format!("{v:#x}");
        let want = vec![
            format!("mount - / - {} -", f(libc::MS_REC | libc::MS_PRIVATE)),
            format!("mount /r /r - {} -", f(libc::MS_BIND | libc::MS_REC)),
            format!("mount proc /r/proc proc {} -", f(libc::MS_NOSUID)),
            format!("mount tmpfs /r/dev tmpfs 0x0 mode=755"),
            format!("mount /nonexistent-host-dir /r/data - {} -", f(libc::MS_BIND | libc::MS_REC)),
            format!("mount - /r/data - {} -", f(libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY)),
            format!("mount - /r/data - {} -", f(libc::MS_PRIVATE | libc::MS_REC)),
            "mknod /r/dev/null 20666 1:3".to_string(),
        ];
        assert_eq!(&calls[..want.len()], &want[..], "{calls:#?}");
        let rest: Vec<&String> = calls[want.len()..].iter().collect();
        let pos = |s: &str| rest.iter().position(|c| c.starts_with(s)).unwrap_or_else(|| panic!("no {s} in {rest:#?}"));
        assert!(pos("symlink /proc/self/fd /r/dev/fd") < pos("chdir /r"));
        assert!(pos("chdir /r") < pos("pivot_root . ."));
        assert!(pos("pivot_root") < pos("umount . 0x2"));
        assert!(pos("mount /dev/null /proc/kcore") > pos("umount"));
        assert!(rest.iter().any(|c| c.starts_with("mount tmpfs /proc/acpi tmpfs 0x1")));
        assert!(!rest.iter().any(|c| c.contains("/proc/missing")));
        assert!(
            pos("mount /proc/sys /proc/sys")
                < pos(&format!(
                    "mount - / - {}",
                    f(libc::MS_REMOUNT
                        | libc::MS_BIND
                        | libc::MS_RDONLY
                        | libc::MS_NOSUID
                        | libc::MS_NODEV
                        | libc::MS_NOEXEC)
                ))
        );
    }
}
