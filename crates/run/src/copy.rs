//! `cp` and `export`: files in and out of a container's root file system, running or not.
//!
//! Paths inside the container are resolved as the container sees them: the rootfs is opened and
//! every path is looked up with `openat2(RESOLVE_IN_ROOT)`, so a symlink in the container (even
//! an absolute one, or `..`) can never lead outside its root. Files going in are unpacked by the
//! store's unpacker (`RESOLVE_BENEATH`, no symlink following), the same code that unpacks layers.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use strata_store::unpack::{self, Format};
use strata_store::Store;

use crate::container::Container;
use crate::error::{Error, ErrorKind, Result};
use crate::lifecycle;
use crate::sys;

/// The container's rootfs, mounted for the duration of `f` if it is not already.
pub fn with_rootfs<T>(store: &Store, c: &Container, f: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    let rootfs = c.rootfs(store);
    let mounted_here = !sys::is_mounted(&rootfs);
    if mounted_here {
        lifecycle::remount(store, c)?;
    }
    let r = f(&rootfs);
    if mounted_here {
        let _ = sys::unmount(&rootfs);
    }
    r
}

/// Resolves `path` as the container sees it (symlinks, `..` and absolute links all stay inside
/// `rootfs`) to the real path of the object on the host; the last component is not followed
/// unless `follow`. The caller pauses a running container around the copy, so that it cannot
/// swap a component for a symlink between this resolution and the use of the result (the race
/// of CVE-2018-15664 in `docker cp`).
pub(crate) fn resolve(rootfs: &Path, path: &str, follow: bool) -> Result<PathBuf> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let root = rustix::fs::open(rootfs, OFlags::DIRECTORY | OFlags::PATH | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| Error::io("open", rootfs, e.into()))?;
    let rel = path.trim_start_matches('/');
    let rel = if rel.is_empty() { "." } else { rel };
    let mut flags = OFlags::PATH | OFlags::CLOEXEC;
    if !follow {
        flags |= OFlags::NOFOLLOW;
    }
    let fd = rustix::fs::openat2(&root, rel, flags, Mode::empty(), ResolveFlags::IN_ROOT).map_err(|e| {
        if e == rustix::io::Errno::NOENT {
            Error::new(ErrorKind::NotFound, format!("could not find the file {path} in container"))
        } else {
            Error::new(ErrorKind::Io, format!("cannot open {path} in the container"))
                .with_source(std::io::Error::from(e))
        }
    })?;
    let real = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|e| Error::io("resolve", Path::new(path), e))?;
    let root_real = std::fs::canonicalize(rootfs).map_err(|e| Error::io("resolve", rootfs, e))?;
    if !real.starts_with(&root_real) {
        return Err(Error::invalid(format!("{path} resolves outside the container")));
    }
    Ok(real)
}

fn base_name(p: &str) -> String {
    let t = p.trim_end_matches('/');
    t.rsplit('/').next().filter(|b| !b.is_empty() && *b != ".").unwrap_or("root").to_string()
}

/// Writes `src` (a path in the container) as a tar stream whose top entry is its base name, as
/// `docker cp CONTAINER:SRC -` does.
pub fn archive_out(store: &Store, c: &Container, src: &str, out: &mut dyn Write) -> Result<()> {
    with_rootfs(store, c, |rootfs| {
        let p = resolve(rootfs, src, false)?;
        let meta = std::fs::symlink_metadata(&p).map_err(|e| Error::io("stat", Path::new(src), e))?;
        let name = base_name(src);
        let mut b = tar::Builder::new(out);
        b.follow_symlinks(false);
        let io =
            |e: std::io::Error| Error::new(ErrorKind::Io, format!("cannot write the archive of {src}")).with_source(e);
        if meta.is_dir() {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777);
            h.set_size(0);
            h.set_mtime(std::os::unix::fs::MetadataExt::mtime(&meta).max(0) as u64);
            h.set_uid(u64::from(std::os::unix::fs::MetadataExt::uid(&meta)));
            h.set_gid(u64::from(std::os::unix::fs::MetadataExt::gid(&meta)));
            b.append_data(&mut h, format!("{name}/"), std::io::empty()).map_err(io)?;
            // The children, renamed under `name/`.
            let mut inner = Vec::new();
            strata_store::import::tar_dir(&p, &mut inner)?;
            let mut ar = tar::Archive::new(&inner[..]);
            for e in ar.entries().map_err(io)? {
                let mut e = e.map_err(io)?;
                let mut h = e.header().clone();
                let path = format!("{name}/{}", e.path().map_err(io)?.display());
                if let Ok(Some(link)) = e.link_name() {
                    let link = link.into_owned();
                    if h.entry_type() == tar::EntryType::Link {
                        b.append_link(&mut h, &path, format!("{name}/{}", link.display())).map_err(io)?;
                    } else {
                        b.append_link(&mut h, &path, &link).map_err(io)?;
                    }
                    continue;
                }
                b.append_data(&mut h, &path, &mut e).map_err(io)?;
            }
        } else {
            b.append_path_with_name(&p, &name).map_err(io)?;
        }
        b.finish().map_err(io)
    })
}

/// Copies `src` in the container to `dest` on the host (docker's rules: into `dest` when it is
/// an existing directory, else as `dest`).
pub fn copy_out(store: &Store, c: &Container, src: &str, dest: &Path) -> Result<()> {
    let mut tarball = Vec::new();
    archive_out(store, c, src, &mut tarball)?;
    let (dir, rename) = if dest.is_dir() {
        (dest.to_path_buf(), None)
    } else {
        let parent = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if !parent.is_dir() {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("destination directory {} does not exist", parent.display()),
            ));
        }
        (parent.to_path_buf(), dest.file_name().map(|n| n.to_string_lossy().into_owned()))
    };
    let tarball = match rename {
        Some(n) => rename_top(&tarball, &base_name(src), &n)?,
        None => tarball,
    };
    unpack::unpack_layer(&tarball, &dir, Format::Plain, &format!("copy of {src}"))?;
    Ok(())
}

/// Renames the top entry `from` of a tar stream to `to`.
fn rename_top(tarball: &[u8], from: &str, to: &str) -> Result<Vec<u8>> {
    let io = |e: std::io::Error| Error::new(ErrorKind::Io, "cannot rewrite the archive").with_source(e);
    let mut b = tar::Builder::new(Vec::new());
    let mut ar = tar::Archive::new(tarball);
    for e in ar.entries().map_err(io)? {
        let mut e = e.map_err(io)?;
        let mut h = e.header().clone();
        let p = e.path().map_err(io)?.to_string_lossy().into_owned();
        let p = match p.strip_prefix(from) {
            Some(rest) if rest.is_empty() || rest.starts_with('/') => format!("{to}{rest}"),
            _ => p,
        };
        if let Ok(Some(link)) = e.link_name() {
            let link = link.to_string_lossy().into_owned();
            let link = match (h.entry_type() == tar::EntryType::Link, link.strip_prefix(from)) {
                (true, Some(rest)) => format!("{to}{rest}"),
                _ => link,
            };
            b.append_link(&mut h, &p, &link).map_err(io)?;
            continue;
        }
        b.append_data(&mut h, &p, &mut e).map_err(io)?;
    }
    b.into_inner().map_err(io)
}

/// Unpacks the tar stream `r` into directory `dest` of the container (`docker cp - C:DEST`).
pub fn archive_in(store: &Store, c: &Container, r: &mut dyn Read, dest: &str) -> Result<()> {
    let mut data = Vec::new();
    r.read_to_end(&mut data).map_err(|e| Error::new(ErrorKind::Io, "cannot read the archive").with_source(e))?;
    with_rootfs(store, c, |rootfs| {
        let p = resolve(rootfs, dest, true)?;
        if !std::fs::symlink_metadata(&p).map(|m| m.is_dir()).unwrap_or(false) {
            return Err(Error::invalid(format!(
                "destination {dest} in the container must be a directory for an archive"
            )));
        }
        unpack::unpack_layer(&data, &p, Format::Plain, &format!("copy into {dest}"))?;
        Ok(())
    })
}

/// Copies host path `src` to `dest` in the container (docker's rules, as [`copy_out`]).
pub fn copy_in(store: &Store, c: &Container, src: &Path, dest: &str) -> Result<()> {
    let meta = std::fs::symlink_metadata(src).map_err(|e| Error::io("read", src, e))?;
    let src_name = src.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "root".into());
    // Where it goes: into `dest` if that is a directory in the container, else as `dest`.
    let (dir, name) = with_rootfs(store, c, |rootfs| {
        Ok(match resolve(rootfs, dest, true) {
            Ok(p) if std::fs::symlink_metadata(&p).map(|m| m.is_dir()).unwrap_or(false) => {
                (dest.to_string(), src_name.clone())
            }
            _ => {
                let t = dest.trim_end_matches('/');
                let (parent, n) = t.rsplit_once('/').unwrap_or(("", t));
                (if parent.is_empty() { "/".to_string() } else { parent.to_string() }, n.to_string())
            }
        })
    })?;
    let io = |e: std::io::Error| Error::new(ErrorKind::Io, format!("cannot archive {}", src.display())).with_source(e);
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    if meta.is_dir() {
        b.append_dir_all(&name, src).map_err(io)?;
    } else {
        b.append_path_with_name(src, &name).map_err(io)?;
    }
    let data = b.into_inner().map_err(io)?;
    archive_in(store, c, &mut &data[..], &dir)
}

/// Writes the container's whole file system as a tar stream (`docker export`).
pub fn export(store: &Store, c: &Container, out: &mut dyn Write) -> Result<()> {
    with_rootfs(store, c, |rootfs| {
        strata_store::import::tar_dir(rootfs, out)?;
        Ok(())
    })
}
