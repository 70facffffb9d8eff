//! The system calls that set up a container's namespaces and file system, behind one narrow
//! trait so that the order of operations reads top to bottom in [`super::rootfs`] and
//! [`super::namespaces`] and can be checked with a recording fake ([`Recorder`]) passed in
//! explicitly (youki's `syscall/syscall.rs` and `syscall/test.rs`). [`Linux`] makes the calls.
//!
//! The process-credential calls that follow (setgroups/setuid, capset, prctl, seccomp, execve)
//! are plain functions at the end of this module: they change the calling process only and are
//! exercised by the integration tests in a real container.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// The file-system and namespace calls a container's setup makes.
pub trait Syscall {
    /// mount(2).
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: libc::c_ulong,
        data: Option<&str>,
    ) -> io::Result<()>;
    /// umount2(2).
    fn umount(&self, target: &Path, flags: i32) -> io::Result<()>;
    /// pivot_root(2).
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()>;
    /// chdir(2).
    fn chdir(&self, path: &Path) -> io::Result<()>;
    /// unshare(2).
    fn unshare(&self, flags: i32) -> io::Result<()>;
    /// setns(2).
    fn setns(&self, fd: BorrowedFd<'_>, nstype: i32) -> io::Result<()>;
    /// sethostname(2).
    fn sethostname(&self, name: &str) -> io::Result<()>;
    /// mknod(2) of a character or block device, then chmod to `mode`'s permission bits (the
    /// umask does not apply to device nodes a runtime makes).
    fn mknod(&self, path: &Path, mode: u32, dev: libc::dev_t) -> io::Result<()>;
    /// symlink(2); an existing `link` is replaced.
    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()>;
    /// mkdir -p.
    fn mkdir_all(&self, path: &Path, mode: u32) -> io::Result<()>;
    /// Makes mount point `dest` (absolute, as the container sees it) exist under `root`, as a
    /// directory or (`dir == false`) a file, resolving every component inside `root` (a
    /// symlink in the image cannot send a mount to the host: CVE-2021-30465's class), and
    /// returns its real path on the host.
    fn mount_target(&self, root: &Path, dest: &Path, dir: bool) -> io::Result<PathBuf>;
    /// Whether `path` is a directory (`Some(true)`), something else (`Some(false)`) or missing.
    fn kind(&self, path: &Path) -> io::Result<Option<bool>>;
    /// The mount flags (`MS_RDONLY`, `MS_NOSUID`, …) of the mount holding `path`, as statvfs
    /// reports them, to keep them over a bind remount.
    fn mount_flags(&self, path: &Path) -> io::Result<libc::c_ulong>;
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The real calls.
pub struct Linux;

impl Syscall for Linux {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: libc::c_ulong,
        data: Option<&str>,
    ) -> io::Result<()> {
        let source = source.map(cstr).transpose()?;
        let target = cstr(target)?;
        let fstype =
            fstype.map(|t| CString::new(t).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))).transpose()?;
        let data =
            data.map(|d| CString::new(d).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))).transpose()?;
        let ptr = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
        // SAFETY: every pointer is a NUL-terminated string that outlives the call, or null.
        check(unsafe {
            libc::mount(ptr(&source), target.as_ptr(), ptr(&fstype), flags, ptr(&data) as *const libc::c_void)
        })
    }

    fn umount(&self, target: &Path, flags: i32) -> io::Result<()> {
        let t = cstr(target)?;
        // SAFETY: a NUL-terminated path.
        check(unsafe { libc::umount2(t.as_ptr(), flags) })
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()> {
        let (n, o) = (cstr(new_root)?, cstr(put_old)?);
        // SAFETY: two NUL-terminated paths; pivot_root has no libc wrapper.
        check(unsafe { libc::syscall(libc::SYS_pivot_root, n.as_ptr(), o.as_ptr()) } as libc::c_int)
    }

    fn chdir(&self, path: &Path) -> io::Result<()> {
        let p = cstr(path)?;
        // SAFETY: a NUL-terminated path.
        check(unsafe { libc::chdir(p.as_ptr()) })
    }

    fn unshare(&self, flags: i32) -> io::Result<()> {
        // SAFETY: unshare only changes this process's namespaces.
        check(unsafe { libc::unshare(flags) })
    }

    fn setns(&self, fd: BorrowedFd<'_>, nstype: i32) -> io::Result<()> {
        // SAFETY: a valid namespace file descriptor.
        check(unsafe { libc::setns(fd.as_raw_fd(), nstype) })
    }

    fn sethostname(&self, name: &str) -> io::Result<()> {
        // SAFETY: a buffer and its length.
        check(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) })
    }

    fn mknod(&self, path: &Path, mode: u32, dev: libc::dev_t) -> io::Result<()> {
        let p = cstr(path)?;
        // SAFETY: a NUL-terminated path.
        check(unsafe { libc::mknod(p.as_ptr(), mode, dev) })?;
        // SAFETY: as above.
        check(unsafe { libc::chmod(p.as_ptr(), mode & 0o7777) })
    }

    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        match std::fs::remove_file(link) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::os::unix::fs::symlink(target, link)
    }

    fn mkdir_all(&self, path: &Path, mode: u32) -> io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().recursive(true).mode(mode).create(path)
    }

    fn mount_target(&self, root: &Path, dest: &Path, dir: bool) -> io::Result<PathBuf> {
        let rootfd = open_path(None, root, true, false)?;
        let comps: Vec<&std::ffi::OsStr> = dest
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n),
                _ => None,
            })
            .collect();
        let mut parent = rootfd.try_clone()?;
        let mut sofar = PathBuf::new();
        for (i, name) in comps.iter().enumerate() {
            sofar.push(name);
            let last = i + 1 == comps.len();
            let want_dir = !last || dir;
            let fd = match open_path(Some(&rootfd), &sofar, want_dir, true) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    let n = CString::new(name.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
                    if want_dir {
                        // SAFETY: a directory fd and a NUL-terminated name.
                        let r = unsafe { libc::mkdirat(parent.as_raw_fd(), n.as_ptr(), 0o755) };
                        if r == -1 && io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST) {
                            return Err(io::Error::last_os_error());
                        }
                    } else {
                        // SAFETY: as above; O_NOFOLLOW|O_EXCL create a new regular file only.
                        let f = unsafe {
                            libc::openat(
                                parent.as_raw_fd(),
                                n.as_ptr(),
                                libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_WRONLY | libc::O_CLOEXEC,
                                0o644,
                            )
                        };
                        if f == -1 {
                            return Err(io::Error::last_os_error());
                        }
                        // SAFETY: a new fd we own.
                        drop(unsafe { OwnedFd::from_raw_fd(f) });
                    }
                    open_path(Some(&rootfd), &sofar, want_dir, true)?
                }
                Err(e) => return Err(e),
            };
            parent = fd;
        }
        // The resolved file's real path: inside `root`, however the image's symlinks went.
        std::fs::read_link(format!("/proc/self/fd/{}", parent.as_raw_fd()))
    }

    fn kind(&self, path: &Path) -> io::Result<Option<bool>> {
        match std::fs::metadata(path) {
            Ok(m) => Ok(Some(m.is_dir())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn mount_flags(&self, path: &Path) -> io::Result<libc::c_ulong> {
        let p = cstr(path)?;
        // SAFETY: statvfs fills the zeroed struct we pass.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: a NUL-terminated path and a valid out pointer.
        check(unsafe { libc::statvfs(p.as_ptr(), &mut st) })?;
        let mut flags = 0;
        for (st_flag, ms) in [
            (libc::ST_RDONLY, libc::MS_RDONLY),
            (libc::ST_NOSUID, libc::MS_NOSUID),
            (libc::ST_NODEV, libc::MS_NODEV),
            (libc::ST_NOEXEC, libc::MS_NOEXEC),
            (libc::ST_NOATIME, libc::MS_NOATIME),
            (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
            (libc::ST_RELATIME, libc::MS_RELATIME),
        ] {
            if st.f_flag & st_flag != 0 {
                flags |= ms;
            }
        }
        Ok(flags)
    }
}

/// openat2(2) with `O_PATH`: `path` under `dirfd` (or the current directory), resolved with
/// `in_root` as if `dirfd` were `/` (symlinks and `..` cannot leave it).
fn open_path(dirfd: Option<&OwnedFd>, path: &Path, directory: bool, in_root: bool) -> io::Result<OwnedFd> {
    use rustix::fs::{OFlags, ResolveFlags};
    let mut flags = OFlags::PATH | OFlags::CLOEXEC;
    if directory {
        flags |= OFlags::DIRECTORY;
    }
    let resolve = if in_root { ResolveFlags::IN_ROOT } else { ResolveFlags::empty() };
    let r = match dirfd {
        Some(d) => rustix::fs::openat2(d, path, flags, rustix::fs::Mode::empty(), resolve),
        None => rustix::fs::openat2(rustix::fs::CWD, path, flags, rustix::fs::Mode::empty(), resolve),
    };
    r.map_err(io::Error::from)
}

/// A fake that records each call as one line (`mount tmpfs /r/dev tmpfs 0x2 mode=755`) and
/// succeeds; [`Syscall::kind`] answers from a list of existing paths.
#[cfg(test)]
pub struct Recorder {
    /// The calls so far.
    pub calls: std::cell::RefCell<Vec<String>>,
    /// Paths that exist, and whether each is a directory.
    pub existing: Vec<(PathBuf, bool)>,
}

#[cfg(test)]
impl Recorder {
    /// A recorder for which `existing` paths exist.
    pub fn new(existing: &[(&str, bool)]) -> Recorder {
        Recorder { calls: Default::default(), existing: existing.iter().map(|(p, d)| (PathBuf::from(p), *d)).collect() }
    }
    fn log(&self, s: String) {
        self.calls.borrow_mut().push(s);
    }
}

#[cfg(test)]
impl Syscall for Recorder {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: libc::c_ulong,
        data: Option<&str>,
    ) -> io::Result<()> {
        let s = source.map_or("-".into(), |s| s.display().to_string());
        self.log(format!(
            "mount {s} {} {} {flags:#x} {}",
            target.display(),
            fstype.unwrap_or("-"),
            data.unwrap_or("-")
        ));
        Ok(())
    }
    fn umount(&self, target: &Path, flags: i32) -> io::Result<()> {
        self.log(format!("umount {} {flags:#x}", target.display()));
        Ok(())
    }
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()> {
        self.log(format!("pivot_root {} {}", new_root.display(), put_old.display()));
        Ok(())
    }
    fn chdir(&self, path: &Path) -> io::Result<()> {
        self.log(format!("chdir {}", path.display()));
        Ok(())
    }
    fn unshare(&self, flags: i32) -> io::Result<()> {
        self.log(format!("unshare {flags:#x}"));
        Ok(())
    }
    fn setns(&self, _fd: BorrowedFd<'_>, nstype: i32) -> io::Result<()> {
        self.log(format!("setns {nstype:#x}"));
        Ok(())
    }
    fn sethostname(&self, name: &str) -> io::Result<()> {
        self.log(format!("sethostname {name}"));
        Ok(())
    }
    fn mknod(&self, path: &Path, mode: u32, dev: libc::dev_t) -> io::Result<()> {
        self.log(format!("mknod {} {mode:o} {}:{}", path.display(), libc::major(dev), libc::minor(dev)));
        Ok(())
    }
    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        self.log(format!("symlink {} {}", target.display(), link.display()));
        Ok(())
    }
    fn mkdir_all(&self, path: &Path, _mode: u32) -> io::Result<()> {
        self.log(format!("mkdir {}", path.display()));
        Ok(())
    }
    fn mount_target(&self, root: &Path, dest: &Path, _dir: bool) -> io::Result<PathBuf> {
        Ok(root.join(dest.strip_prefix("/").unwrap_or(dest)))
    }
    fn kind(&self, path: &Path) -> io::Result<Option<bool>> {
        Ok(self.existing.iter().find(|(p, _)| p == path).map(|(_, d)| *d))
    }
    fn mount_flags(&self, _path: &Path) -> io::Result<libc::c_ulong> {
        Ok(libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC)
    }
}

// ---- Process credentials and the final exec: plain calls on the calling process. ----

/// prctl(2) with integer arguments.
pub fn prctl(option: i32, arg2: libc::c_ulong) -> io::Result<()> {
    // SAFETY: the prctl options used here take integer arguments only.
    check(unsafe { libc::prctl(option, arg2, 0 as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong) })
}

/// setgroups(2), setresgid(2) and setresuid(2), in that order (groups need CAP_SETGID, which
/// the uid change may take away).
pub fn set_ids(uid: u32, gid: u32, groups: &[u32]) -> io::Result<()> {
    // SAFETY: a slice of gids and its length.
    check(unsafe { libc::setgroups(groups.len(), groups.as_ptr()) })?;
    // SAFETY: integer arguments.
    check(unsafe { libc::setresgid(gid, gid, gid) })?;
    // SAFETY: integer arguments.
    check(unsafe { libc::setresuid(uid, uid, uid) })
}

/// capset(2) of this thread's effective, permitted and inheritable sets (64-bit masks).
pub fn capset(effective: u64, permitted: u64, inheritable: u64) -> io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let header = Header { version: VERSION_3, pid: 0 };
    let half = |m: u64, hi: bool| if hi { (m >> 32) as u32 } else { m as u32 };
    let data = [false, true].map(|hi| Data {
        effective: half(effective, hi),
        permitted: half(permitted, hi),
        inheritable: half(inheritable, hi),
    });
    // SAFETY: a version-3 header and the two data structs it expects.
    check(unsafe { libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr()) } as libc::c_int)
}

/// setrlimit(2).
pub fn setrlimit(resource: libc::__rlimit_resource_t, soft: u64, hard: u64) -> io::Result<()> {
    let r = libc::rlimit { rlim_cur: soft, rlim_max: hard };
    // SAFETY: a valid rlimit.
    check(unsafe { libc::setrlimit(resource, &r) })
}

/// getrlimit(2): (soft, hard).
pub fn getrlimit(resource: libc::__rlimit_resource_t) -> io::Result<(u64, u64)> {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: a valid out pointer.
    check(unsafe { libc::getrlimit(resource, &mut r) })?;
    Ok((r.rlim_cur, r.rlim_max))
}

/// Installs a seccomp filter (classic BPF, 8-byte `sock_filter`s) on this thread.
pub fn seccomp_filter(program: &[libc::sock_filter]) -> io::Result<()> {
    let prog = libc::sock_fprog { len: program.len() as u16, filter: program.as_ptr() as *mut libc::sock_filter };
    // SAFETY: a valid sock_fprog pointing at `program`, which outlives the call (the kernel copies it).
    check(unsafe {
        libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER as libc::c_ulong, &prog as *const libc::sock_fprog)
    })
}

/// execve(2); returns only on failure.
pub fn execve(path: &CStr, argv: &[CString], envp: &[CString]) -> io::Error {
    let mut a: Vec<*const libc::c_char> = argv.iter().map(|s| s.as_ptr()).collect();
    a.push(std::ptr::null());
    let mut e: Vec<*const libc::c_char> = envp.iter().map(|s| s.as_ptr()).collect();
    e.push(std::ptr::null());
    // SAFETY: NUL-terminated strings in NULL-terminated arrays that outlive the call.
    unsafe { libc::execve(path.as_ptr(), a.as_ptr(), e.as_ptr()) };
    io::Error::last_os_error()
}
