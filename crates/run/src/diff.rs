//! `diff` of a container: its writable layer (the overlayfs upper directory) against its image,
//! as docker's `A`/`C`/`D` lines. The image side comes from the store's per-layer file indexes,
//! so no image file is read.

use std::collections::BTreeSet;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use strata_store::fileindex::Kind;
use strata_store::Store;

use crate::container::{self, Container};
use crate::error::{Error, ErrorKind, Result};

/// A change of the container against its image: docker's `A`/`C`/`D`, the store's comparison type.
pub use strata_store::compare::Change;

/// Removes `p` and everything under it from `set`.
fn remove_tree(set: &mut BTreeSet<Vec<u8>>, p: &[u8], keep_self: bool) {
    let mut lo = p.to_vec();
    lo.push(b'/');
    let mut hi = p.to_vec();
    hi.push(b'/' + 1);
    let under: Vec<Vec<u8>> = set.range(lo..hi).cloned().collect();
    for u in under {
        set.remove(&u);
    }
    if !keep_self {
        set.remove(p);
    }
}

/// The paths of the image's merged view (no leading '/').
fn image_paths(store: &Store, c: &Container) -> Result<BTreeSet<Vec<u8>>> {
    let digest = container::image_digest(c)
        .ok_or_else(|| Error::new(ErrorKind::Store, format!("container {} names no valid image", c.name)))?;
    let manifest = store.read_manifest(&digest)?;
    let (config, _) = store.read_config(manifest.config().digest())?;
    let mut set = BTreeSet::new();
    for d in config.rootfs().diff_ids() {
        let d = strata_store::digest::parse(d)?;
        let idx = store.file_index(&d)?;
        for e in &idx.entries {
            let p: Vec<u8> = e.path.strip_suffix(b"/").unwrap_or(&e.path).to_vec();
            match e.kind {
                Kind::Whiteout => remove_tree(&mut set, &p, false),
                Kind::Opaque => remove_tree(&mut set, &p, true),
                _ => {
                    set.insert(p);
                }
            }
        }
    }
    Ok(set)
}

/// The changes of container `c`, sorted by path.
pub fn diff(store: &Store, c: &Container) -> Result<Vec<(Change, String)>> {
    let image = image_paths(store, c)?;
    let upper = c.dir(store).join("upper");
    let mut out = Vec::new();
    let mut stack: Vec<(std::path::PathBuf, Vec<u8>)> = vec![(upper.clone(), Vec::new())];
    while let Some((dir, rel)) = stack.pop() {
        let rd = std::fs::read_dir(&dir).map_err(|e| Error::io("read", &dir, e))?;
        for e in rd {
            let e = e.map_err(|e| Error::io("read", &dir, e))?;
            let mut p = rel.clone();
            if !p.is_empty() {
                p.push(b'/');
            }
            p.extend_from_slice(e.file_name().as_bytes());
            let meta = std::fs::symlink_metadata(e.path()).map_err(|err| Error::io("stat", &e.path(), err))?;
            let shown = format!("/{}", String::from_utf8_lossy(&p));
            if meta.file_type().is_char_device() && meta.rdev() == 0 {
                out.push((Change::Deleted, shown));
                continue;
            }
            let change = if image.contains(&p) { Change::Changed } else { Change::Added };
            out.push((change, shown));
            if meta.is_dir() {
                if is_opaque(&e.path()) {
                    // Everything the image had under it is gone, unless put back in the upper dir.
                    let mut lo = p.clone();
                    lo.push(b'/');
                    let mut hi = p.clone();
                    hi.push(b'/' + 1);
                    // Only the topmost deleted paths, as for a whiteout of a directory.
                    let mut deleted: Option<Vec<u8>> = None;
                    for gone in image.range(lo..hi) {
                        if deleted.as_ref().is_some_and(|d| gone.starts_with(d) && gone.get(d.len()) == Some(&b'/')) {
                            continue;
                        }
                        let on_disk = upper.join(Path::new(std::ffi::OsStr::from_bytes(gone)));
                        if std::fs::symlink_metadata(&on_disk).is_err() {
                            out.push((Change::Deleted, format!("/{}", String::from_utf8_lossy(gone))));
                            deleted = Some(gone.clone());
                        }
                    }
                }
                stack.push((e.path(), p));
            }
        }
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(out)
}

fn is_opaque(p: &Path) -> bool {
    let mut v = [0u8; 4];
    rustix::fs::lgetxattr(p, "trusted.overlay.opaque", &mut v[..]).is_ok_and(|n| &v[..n] == b"y")
}
