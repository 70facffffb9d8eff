//! The system calls that set up a container's file system, in one place: the overlay rootfs over the
//! image's snapshots and its unmount. Everything else (namespaces, pivot_root, capabilities) is the
//! runtime's: the OCI runtime plugin hands the prepared bundle to `runc`/`crun`.

use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};

/// An overlay mount: `lower` top layer first (overlayfs' order), `upper` and `work` on one file system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlay {
    /// Read-only layers, topmost first.
    pub lower: Vec<PathBuf>,
    /// The container's writable layer.
    pub upper: PathBuf,
    /// overlayfs' work directory (same file system as `upper`).
    pub work: PathBuf,
}

impl Overlay {
    /// The mount options string.
    pub fn options(&self) -> Result<String> {
        let mut lowers = Vec::with_capacity(self.lower.len());
        for p in &self.lower {
            let s = p.to_str().ok_or_else(|| Error::invalid(format!("snapshot path {} is not UTF-8", p.display())))?;
            // overlayfs separates lower dirs with ':' and options with ','; escape them.
            lowers.push(s.replace('\\', "\\\\").replace(':', "\\:").replace(',', "\\,"));
        }
        let upper = self.upper.display();
        let work = self.work.display();
        let opts = format!("lowerdir={},upperdir={upper},workdir={work},index=off,redirect_dir=off", lowers.join(":"));
        // The whole string must fit in one page (mount(2) copies at most PAGE_SIZE of data).
        if opts.len() >= 4096 {
            return Err(Error::new(
                ErrorKind::Runtime,
                format!("the image has too many layers ({}) for one overlay mount", self.lower.len()),
            ));
        }
        Ok(opts)
    }

    /// Mounts the overlay at `target`.
    pub fn mount(&self, target: &Path) -> Result<()> {
        let opts = self.options()?;
        let data = std::ffi::CString::new(opts).map_err(|_| Error::invalid("overlay options hold a NUL byte"))?;
        rustix::mount::mount("overlay", target, "overlay", rustix::mount::MountFlags::empty(), data.as_c_str()).map_err(
            |e| {
                Error::new(
                    ErrorKind::Runtime,
                    format!("cannot mount the container's root file system at {}", target.display()),
                )
                .with_source(std::io::Error::from(e))
            },
        )
    }
}

/// Unmounts `target` (lazily, so a process still holding it cannot make this fail); not mounted is fine.
pub fn unmount(target: &Path) -> Result<()> {
    match rustix::mount::unmount(target, rustix::mount::UnmountFlags::DETACH) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(Error::new(ErrorKind::Runtime, format!("cannot unmount {}", target.display()))
            .with_source(std::io::Error::from(e))),
    }
}

/// Whether `path` is a mount point (its device differs from its parent's, or it is bind-mounted).
pub fn is_mounted(path: &Path) -> bool {
    let Ok(mi) = std::fs::read_to_string("/proc/self/mountinfo") else { return false };
    let Some(p) = path.to_str() else { return false };
    mi.lines().any(|l| l.split(' ').nth(4) == Some(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_options_escape_separators() {
        let o =
            Overlay { lower: vec!["/s/a:b".into(), "/s/c,d".into()], upper: "/c/upper".into(), work: "/c/work".into() };
        assert_eq!(
            o.options().unwrap(),
            "lowerdir=/s/a\\:b:/s/c\\,d,upperdir=/c/upper,workdir=/c/work,index=off,redirect_dir=off"
        );
        let many = Overlay { lower: vec![PathBuf::from("/x".repeat(100)); 30], upper: "/u".into(), work: "/w".into() };
        assert_eq!(many.options().unwrap_err().kind(), ErrorKind::Runtime);
    }
}
