//! The merged view of an image's layers, computed from their file indexes alone: what a
//! container's root file system would show, which layer each path comes from, and what every
//! layer's entries became (kept, replaced by a later layer, or deleted by a whiteout). Image
//! comparison (`strata diff IMAGE IMAGE`), layer analysis (`strata layers`) and listings
//! (`strata ls`) read it; no image file is opened to build it.
//!
//! All layers' entries are sorted together by path in *component order* (`/` sorts before every
//! other byte, so a directory's subtree follows it contiguously), newest layer first within a
//! path. One pass then decides each entry's fate with a stack of the ancestors that hide lower
//! layers below them (whiteouts, opaque directories, and non-directories that replaced a
//! directory), as overlayfs resolves a lookup.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::fileindex::{FileEntry, FileIndex, Kind};

/// One layer of a view.
#[derive(Debug, Clone)]
pub struct LayerInfo {
    /// Its position in the image, 0 for the bottom layer.
    pub index: usize,
    /// The layer's diff ID (`None` for a container's writable layer).
    pub diff_id: Option<Digest>,
    /// The compressed blob's digest and size, when the layer has one.
    pub blob: Option<(Digest, u64)>,
    /// The history entry that made it (`created_by`).
    pub created_by: Option<String>,
    /// Where its files are (the snapshot's tree or a container's upper directory).
    pub root: PathBuf,
    /// Size of its uncompressed tar stream.
    pub tar_bytes: u64,
    /// Sum of its regular files' sizes.
    pub content_bytes: u64,
}

/// A visible entry of the view and the layer it comes from.
#[derive(Debug, Clone)]
pub struct Node {
    /// The entry as its layer recorded it.
    pub entry: FileEntry,
    /// Index into [`View::layers`].
    pub layer: u32,
}

/// Why an entry is not visible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// A later layer has an entry at the same path.
    Replaced,
    /// A later layer deleted it (a whiteout of it or of a parent, an opaque parent, or a parent
    /// replaced by a non-directory).
    Deleted,
}

/// What became of one entry of one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fate {
    /// The entry's layer.
    pub layer: u32,
    /// Its position in that layer's index.
    pub seq: u32,
    /// The layer that hid it and how; `None` when it is visible (or is a marker: a whiteout or
    /// opaque entry, which never is).
    pub end: Option<(u32, Cause)>,
    /// Whether the entry replaced or deleted something visible below it.
    pub over: bool,
}

/// The merged view.
#[derive(Debug, Clone)]
pub struct View {
    /// The layers, bottom first.
    pub layers: Vec<LayerInfo>,
    /// Visible entries, sorted by [`path_cmp`].
    pub nodes: Vec<Node>,
    /// Entries of lower layers that a later layer deleted: (path, deleting layer), sorted by
    /// [`path_cmp`].
    pub deleted: Vec<(Vec<u8>, u32)>,
}

/// Orders paths component by component: `a/b` < `a/b/c` < `a-b` (a parent's subtree is
/// contiguous right after it).
pub fn path_cmp(a: &[u8], b: &[u8]) -> Ordering {
    let n = a.len().min(b.len());
    match a[..n].iter().zip(&b[..n]).position(|(x, y)| x != y) {
        Some(i) => {
            let key = |c: u8| if c == b'/' { 0u16 } else { c as u16 + 1 };
            key(a[i]).cmp(&key(b[i]))
        }
        None => a.len().cmp(&b.len()),
    }
}

/// Whether `anc` is a proper ancestor of `p` (both without leading or trailing `/`).
pub fn is_ancestor(anc: &[u8], p: &[u8]) -> bool {
    p.len() > anc.len() && p.starts_with(anc) && p[anc.len()] == b'/'
}

fn is_marker(k: Kind) -> bool {
    matches!(k, Kind::Whiteout | Kind::Opaque)
}

/// Decides the fate of every entry of `layers` (bottom first). Fates come out in view order:
/// by path, newest layer first within a path.
pub fn fates(layers: &[&[FileEntry]]) -> Vec<Fate> {
    let mut items: Vec<(u32, u32)> = Vec::with_capacity(layers.iter().map(|l| l.len()).sum());
    for (l, entries) in layers.iter().enumerate() {
        items.extend((0..entries.len() as u32).map(|s| (l as u32, s)));
    }
    let path = |&(l, s): &(u32, u32)| -> &[u8] { &layers[l as usize][s as usize].path };
    // Tar order is mostly sorted already, which the (run-aware) stable sort exploits.
    items.sort_by(|a, b| path_cmp(path(a), path(b)).then(b.0.cmp(&a.0)).then(b.1.cmp(&a.1)));

    // Ancestors that hide lower layers below them: (path, layers that cut, ascending).
    let mut stack: Vec<(&[u8], Vec<u32>)> = Vec::new();
    let mut out = Vec::with_capacity(items.len());
    let mut i = 0;
    while i < items.len() {
        let p = path(&items[i]);
        let mut j = i + 1;
        while j < items.len() && path(&items[j]) == p {
            j += 1;
        }
        while stack.last().is_some_and(|(a, _)| !is_ancestor(a, p)) {
            stack.pop();
        }
        // The lowest ancestor cut above layer l.
        let ancestor_cut = |l: u32| -> Option<u32> {
            stack.iter().filter_map(|(_, cuts)| cuts.iter().copied().find(|&c| c > l)).min()
        };
        // The nearest entry above in this path's group (it replaces lower entries, and earlier
        // duplicates of its own layer), and the nearest whiteout (it deletes lower layers' only:
        // a whiteout never applies to its own layer).
        let mut above: Option<u32> = None;
        let mut above_wh: Option<u32> = None;
        let mut cuts: Vec<u32> = Vec::new();
        let group_start = out.len();
        for &(l, s) in &items[i..j] {
            let e = &layers[l as usize][s as usize];
            let hidden = ancestor_cut(l).map(|c| (c, Cause::Deleted));
            match e.kind {
                Kind::Opaque => {
                    cuts.push(l);
                    out.push(Fate { layer: l, seq: s, end: None, over: false });
                }
                Kind::Whiteout => {
                    cuts.push(l);
                    out.push(Fate { layer: l, seq: s, end: None, over: false });
                    if hidden.is_none() {
                        above_wh = Some(l);
                    }
                }
                k => {
                    if k != Kind::Dir {
                        cuts.push(l);
                    }
                    let candidates = [
                        hidden,
                        above.map(|a| (a, Cause::Replaced)),
                        above_wh.filter(|&w| w > l).map(|w| (w, Cause::Deleted)),
                    ];
                    let end = candidates.into_iter().flatten().min_by_key(|c| c.0);
                    out.push(Fate { layer: l, seq: s, end, over: false });
                    if hidden.is_none() {
                        above = Some(l);
                    }
                }
            }
        }
        // `over`: an entry (or whiteout) that hid a lower entry of the same path which was
        // visible until then.
        for k in group_start..out.len() {
            if let Some((by, _)) = out[k].end {
                if let Some(f) = out[group_start..k].iter_mut().rev().find(|f| f.layer == by) {
                    f.over = true;
                }
            }
        }
        if !cuts.is_empty() {
            cuts.sort_unstable();
            cuts.dedup();
            stack.push((p, cuts));
        }
        i = j;
    }
    out
}

impl View {
    /// Builds the view of `layers` (bottom first) from their indexes, consuming the indexes.
    pub fn build(layers: Vec<LayerInfo>, indexes: Vec<FileIndex>) -> View {
        let mut entries: Vec<Vec<FileEntry>> = indexes.into_iter().map(|i| i.entries).collect();
        let refs: Vec<&[FileEntry]> = entries.iter().map(|v| v.as_slice()).collect();
        let fates = fates(&refs);
        let mut keep: Vec<(u32, u32)> = Vec::with_capacity(fates.len());
        let mut deleted_at: Vec<(u32, u32, u32)> = Vec::new();
        for f in &fates {
            if is_marker(entries[f.layer as usize][f.seq as usize].kind) {
                continue;
            }
            match f.end {
                None => keep.push((f.layer, f.seq)),
                Some((by, Cause::Deleted)) => deleted_at.push((f.layer, f.seq, by)),
                Some((_, Cause::Replaced)) => {}
            }
        }
        let mut take = |l: u32, s: u32| {
            std::mem::replace(&mut entries[l as usize][s as usize], FileEntry::bare(Vec::new(), Kind::Dir, 0))
        };
        let deleted = deleted_at.into_iter().map(|(l, s, by)| (take(l, s).path, by)).collect();
        let nodes = keep.into_iter().map(|(l, s)| Node { entry: take(l, s), layer: l }).collect();
        View { layers, nodes, deleted }
    }

    /// The visible entry at `path` (no leading `/`), without following symlinks.
    pub fn get(&self, path: &[u8]) -> Option<&Node> {
        self.position(path).ok().map(|i| &self.nodes[i])
    }

    fn position(&self, path: &[u8]) -> std::result::Result<usize, usize> {
        self.nodes.binary_search_by(|n| path_cmp(&n.entry.path, path))
    }

    /// The visible entries below directory `dir` ("" for the root): its children, or with
    /// `recursive` its whole subtree, in view order.
    pub fn below<'a>(&'a self, dir: &'a [u8], recursive: bool) -> impl Iterator<Item = &'a Node> + 'a {
        let start = if dir.is_empty() {
            0
        } else {
            match self.position(dir) {
                Ok(i) => i + 1,
                Err(i) => i,
            }
        };
        self.nodes[start..].iter().take_while(move |n| dir.is_empty() || is_ancestor(dir, &n.entry.path)).filter(
            move |n| {
                recursive || {
                    let rest = if dir.is_empty() { &n.entry.path[..] } else { &n.entry.path[dir.len() + 1..] };
                    !rest.contains(&b'/')
                }
            },
        )
    }

    /// Where the view's file at `node` can be read on disk.
    pub fn disk_path(&self, node: &Node) -> PathBuf {
        use std::os::unix::ffi::OsStrExt;
        self.layers[node.layer as usize].root.join(std::ffi::OsStr::from_bytes(&node.entry.path))
    }

    /// The layer that last deleted `path`, which the view does not show (by a whiteout of it or
    /// of a parent, an opaque parent, or a parent replaced with a non-directory); `None` when no
    /// layer had it.
    pub fn removed_by(&self, path: &[u8]) -> Option<u32> {
        let lo = self.deleted.partition_point(|(r, _)| path_cmp(r, path) == std::cmp::Ordering::Less);
        self.deleted[lo..].iter().take_while(|(r, _)| r == path).map(|(_, l)| *l).max()
    }

    /// Resolves `path` (absolute or relative to the root) in the view, following symlinks inside
    /// the image only: `..` stops at the root and absolute targets start from the image's root,
    /// as in a chroot. With `follow_last`, a symlink as the last component is followed too.
    pub fn resolve(&self, path: &[u8], follow_last: bool) -> std::result::Result<Vec<u8>, ResolveError> {
        let mut todo: Vec<Vec<u8>> = components(path).into_iter().rev().collect();
        let mut cur: Vec<u8> = Vec::new();
        let mut hops = 0;
        while let Some(c) = todo.pop() {
            if c == b".." {
                match cur.iter().rposition(|&b| b == b'/') {
                    Some(k) => cur.truncate(k),
                    None => cur.clear(),
                }
                continue;
            }
            let mut next = cur.clone();
            if !next.is_empty() {
                next.push(b'/');
            }
            next.extend_from_slice(&c);
            let Some(node) = self.get(&next) else {
                return Err(ResolveError::NotFound(next));
            };
            let last = todo.is_empty();
            match node.entry.kind {
                Kind::Symlink if !last || follow_last => {
                    hops += 1;
                    if hops > 40 {
                        return Err(ResolveError::Loop(next));
                    }
                    let target = &node.entry.link;
                    if target.starts_with(b"/") {
                        cur.clear();
                    }
                    todo.extend(components(target).into_iter().rev());
                }
                Kind::Dir => cur = next,
                _ if !last => return Err(ResolveError::NotADirectory(next)),
                _ => cur = next,
            }
        }
        Ok(cur)
    }
}

fn components(p: &[u8]) -> Vec<Vec<u8>> {
    p.split(|&b| b == b'/').filter(|c| !c.is_empty() && *c != b".").map(|c| c.to_vec()).collect()
}

/// Why a path did not resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveError {
    /// No entry at this path.
    NotFound(Vec<u8>),
    /// A non-directory was used as a directory.
    NotADirectory(Vec<u8>),
    /// Too many symlinks.
    Loop(Vec<u8>),
}

impl std::fmt::Display for ResolveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (what, p) = match self {
            ResolveError::NotFound(p) => ("no such file or directory", p),
            ResolveError::NotADirectory(p) => ("not a directory", p),
            ResolveError::Loop(p) => ("too many levels of symbolic links", p),
        };
        write!(f, "/{}: {what}", String::from_utf8_lossy(p))
    }
}

/// Indexes an overlayfs upper directory (a container's writable layer) as a layer: character
/// devices 0/0 are whiteouts, `trusted.overlay.opaque=y` directories are opaque, and regular files
/// are hashed (BLAKE3) so their content compares with image layers'.
pub fn index_upper(dir: &Path) -> crate::Result<FileIndex> {
    use crate::error::IoContext;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    let mut entries = Vec::new();
    let mut content = 0u64;
    let mut inodes: std::collections::HashMap<(u64, u64), Vec<u8>> = std::collections::HashMap::new();
    let mut stack = vec![(dir.to_path_buf(), Vec::<u8>::new())];
    while let Some((d, rel)) = stack.pop() {
        let mut names: Vec<_> =
            std::fs::read_dir(&d).at("cannot read", &d)?.collect::<std::io::Result<Vec<_>>>().at("cannot read", &d)?;
        names.sort_by_key(|e| e.file_name());
        for de in names {
            let p = de.path();
            let md = std::fs::symlink_metadata(&p).at("cannot stat", &p)?;
            let mut path = rel.clone();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(de.file_name().as_bytes());
            let ft = md.file_type();
            let mut e = FileEntry {
                path: path.clone(),
                kind: Kind::File,
                mode: md.permissions().mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                size: 0,
                mtime: md.mtime(),
                dev: (0, 0),
                link: Vec::new(),
                digest: None,
            };
            if ft.is_char_device() && md.rdev() == 0 {
                entries.push(FileEntry::bare(path, Kind::Whiteout, 0));
                continue;
            } else if ft.is_dir() {
                e.kind = Kind::Dir;
                let opaque = rustix::fs::getxattr(&p, "trusted.overlay.opaque", &mut [0u8; 4]).is_ok_and(|n| n == 1);
                entries.push(e);
                if opaque {
                    entries.push(FileEntry::bare(path.clone(), Kind::Opaque, 0));
                }
                stack.push((p, path));
                continue;
            } else if ft.is_symlink() {
                e.kind = Kind::Symlink;
                e.link = std::fs::read_link(&p).at("cannot read link", &p)?.as_os_str().as_bytes().to_vec();
            } else if ft.is_file() {
                e.size = md.len();
                if md.nlink() > 1 {
                    if let Some(first) = inodes.get(&(md.dev(), md.ino())) {
                        e.kind = Kind::Hardlink;
                        e.link = first.clone();
                    } else {
                        inodes.insert((md.dev(), md.ino()), path.clone());
                    }
                }
                if e.kind == Kind::File {
                    content += e.size;
                }
                let f = std::fs::File::open(&p).at("cannot open", &p)?;
                let mut h = blake3::Hasher::new();
                h.update_reader(f).at("cannot read", &p)?;
                e.digest = Some(*h.finalize().as_bytes());
            } else {
                let rdev = md.rdev();
                e.kind = if ft.is_char_device() {
                    Kind::Char
                } else if ft.is_block_device() {
                    Kind::Block
                } else {
                    Kind::Fifo
                };
                if e.kind != Kind::Fifo {
                    e.dev = (libc::major(rdev), libc::minor(rdev));
                }
            }
            entries.push(e);
        }
    }
    Ok(FileIndex { diff_id: crate::digest::sha256(b""), content_bytes: content, tar_bytes: 0, created: 0, entries })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(path: &str, kind: Kind) -> FileEntry {
        let mut e = FileEntry::bare(path.as_bytes().to_vec(), kind, 0o644);
        if kind == Kind::File {
            e.size = 10;
        }
        e
    }

    fn view(layers: Vec<Vec<FileEntry>>) -> View {
        let infos = (0..layers.len())
            .map(|i| LayerInfo {
                index: i,
                diff_id: None,
                blob: None,
                created_by: None,
                root: PathBuf::new(),
                tar_bytes: 0,
                content_bytes: 0,
            })
            .collect();
        let idx = layers
            .into_iter()
            .map(|entries| FileIndex {
                diff_id: crate::digest::sha256(b""),
                content_bytes: 0,
                tar_bytes: 0,
                created: 0,
                entries,
            })
            .collect();
        View::build(infos, idx)
    }

    fn paths(v: &View) -> Vec<(String, u32)> {
        v.nodes.iter().map(|n| (String::from_utf8_lossy(&n.entry.path).into_owned(), n.layer)).collect()
    }

    #[test]
    fn component_order_keeps_subtrees_together() {
        let mut v = vec!["a-b", "a/c", "a", "a/b/c", "a.b", "a/b"];
        v.sort_by(|x, y| path_cmp(x.as_bytes(), y.as_bytes()));
        assert_eq!(v, ["a", "a/b", "a/b/c", "a/c", "a-b", "a.b"]);
    }

    #[test]
    fn whiteouts_opaque_and_replacements() {
        let v = view(vec![
            vec![
                f("a", Kind::Dir),
                f("a/x", Kind::File),
                f("a/y", Kind::File),
                f("b", Kind::Dir),
                f("b/z", Kind::File),
                f("c", Kind::File),
                f("d", Kind::Dir),
                f("d/e", Kind::File),
            ],
            vec![
                f("a/x", Kind::Whiteout),
                f("b", Kind::Dir),
                f("b", Kind::Opaque),
                f("b/new", Kind::File),
                f("c", Kind::File),
                f("d", Kind::File),
            ],
            vec![f("a/x", Kind::File)],
        ]);
        assert_eq!(
            paths(&v),
            [("a", 0), ("a/x", 2), ("a/y", 0), ("b", 1), ("b/new", 1), ("c", 1), ("d", 1)]
                .map(|(p, l)| (p.to_string(), l))
        );
        assert_eq!(v.removed_by(b"b/z"), Some(1));
        assert_eq!(v.removed_by(b"d/e"), Some(1));
        assert_eq!(v.removed_by(b"q"), None);
        let fates = fates(&[&[f("d", Kind::Dir), f("d/e", Kind::File)][..], &[f("d", Kind::File)][..]]);
        let e = fates.iter().find(|x| x.layer == 0 && x.seq == 1).unwrap();
        assert_eq!(e.end, Some((1, Cause::Deleted)));
        let d = fates.iter().find(|x| x.layer == 0 && x.seq == 0).unwrap();
        assert_eq!(d.end, Some((1, Cause::Replaced)));
        assert!(fates.iter().find(|x| x.layer == 1).unwrap().over);
    }

    #[test]
    fn duplicates_in_one_layer_keep_the_last() {
        let mut a = f("x", Kind::File);
        a.size = 1;
        let mut b = f("x", Kind::File);
        b.size = 2;
        let v = view(vec![vec![a, f("w", Kind::Dir), b]]);
        assert_eq!(v.get(b"x").unwrap().entry.size, 2);
        assert_eq!(v.nodes.len(), 2);
    }

    #[test]
    fn resolve_follows_links_inside_the_image() {
        let mut l1 = f("bin", Kind::Symlink);
        l1.link = b"usr/bin".to_vec();
        let mut l2 = f("usr/bin/sh", Kind::Symlink);
        l2.link = b"/usr/bin/busybox".to_vec();
        let mut esc = f("esc", Kind::Symlink);
        esc.link = b"../../../usr/bin/busybox".to_vec();
        let mut lp = f("loop", Kind::Symlink);
        lp.link = b"loop".to_vec();
        let v = view(vec![vec![
            f("usr", Kind::Dir),
            f("usr/bin", Kind::Dir),
            f("usr/bin/busybox", Kind::File),
            l1,
            l2,
            esc,
            lp,
        ]]);
        assert_eq!(v.resolve(b"/bin/sh", true).unwrap(), b"usr/bin/busybox");
        assert_eq!(v.resolve(b"/bin/sh", false).unwrap(), b"usr/bin/sh");
        assert_eq!(v.resolve(b"esc", true).unwrap(), b"usr/bin/busybox");
        assert!(matches!(v.resolve(b"loop", true), Err(ResolveError::Loop(_))));
        assert!(matches!(v.resolve(b"usr/bin/busybox/x", true), Err(ResolveError::NotADirectory(_))));
        assert!(matches!(v.resolve(b"nope", true), Err(ResolveError::NotFound(_))));
        let kids: Vec<_> = v.below(b"usr", false).map(|n| n.entry.path.clone()).collect();
        assert_eq!(kids, [b"usr/bin".to_vec()]);
        assert_eq!(v.below(b"usr", true).count(), 3);
        assert_eq!(v.below(b"", false).count(), 4);
    }
}
