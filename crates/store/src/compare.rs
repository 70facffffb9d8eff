//! Comparing images (and containers) from their file indexes: which paths were added, changed or
//! deleted and what changed about each, per-directory totals, config differences, and the layer
//! analysis of one image (wasted bytes, efficiency). Nothing here reads a file but the indexes
//! (text diffs of changed files and package databases are read by their callers, from the
//! snapshots).

use std::collections::{BTreeMap, BTreeSet};

use rayon::prelude::*;
use serde_json::{json, Value};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::fileindex::{FileEntry, FileIndex, Kind};
use crate::image::Image;
use crate::snapshot::FS_DIR;
use crate::store::Store;
use crate::view::{fates, Cause, LayerInfo, Node, View};

/// What can differ between two entries of one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Field {
    /// File, directory, symlink, device or pipe.
    Type,
    /// A regular file's content (its BLAKE3 digest).
    Content,
    /// A regular file's size.
    Size,
    /// Permission bits (with setuid, setgid, sticky).
    Mode,
    /// Owner user ID.
    Uid,
    /// Owner group ID.
    Gid,
    /// A symlink's target, or the path a hard link shares its inode with.
    Link,
    /// Modification time.
    Mtime,
    /// A device's major and minor numbers.
    Dev,
}

impl Field {
    /// Every field, in report order.
    pub const ALL: [Field; 9] = [
        Field::Type,
        Field::Content,
        Field::Size,
        Field::Mode,
        Field::Uid,
        Field::Gid,
        Field::Link,
        Field::Mtime,
        Field::Dev,
    ];

    /// Its name in output and in `--ignore`.
    pub fn name(self) -> &'static str {
        match self {
            Field::Type => "type",
            Field::Content => "content",
            Field::Size => "size",
            Field::Mode => "mode",
            Field::Uid => "uid",
            Field::Gid => "gid",
            Field::Link => "link",
            Field::Mtime => "mtime",
            Field::Dev => "dev",
        }
    }

    /// Parses a comma-separated `--ignore` list; `owner` stands for uid and gid.
    pub fn parse_list(s: &str) -> Result<BTreeSet<Field>> {
        let mut out = BTreeSet::new();
        for w in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            if w == "owner" {
                out.extend([Field::Uid, Field::Gid]);
                continue;
            }
            match Field::ALL.iter().find(|f| f.name() == w) {
                Some(f) => {
                    out.insert(*f);
                }
                None => {
                    return Err(Error::invalid_argument(format!(
                        "unknown field {w:?} in --ignore (expected a comma-separated list of: type, content, size, mode, uid, gid, owner, link, mtime, dev)"
                    )))
                }
            }
        }
        Ok(out)
    }
}

/// Added, changed or deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    /// Only in the second image.
    Added,
    /// In both, different.
    Changed,
    /// Only in the first image.
    Deleted,
}

impl Change {
    /// docker's letter.
    pub fn letter(self) -> char {
        match self {
            Change::Added => 'A',
            Change::Changed => 'C',
            Change::Deleted => 'D',
        }
    }
}

/// One path that differs.
#[derive(Debug, Clone)]
pub struct FileChange {
    /// What happened to it.
    pub change: Change,
    /// The path, without a leading `/`.
    pub path: Vec<u8>,
    /// What differs (for a change).
    pub fields: Vec<Field>,
    /// Its node in the first view (not for an addition).
    pub a: Option<usize>,
    /// Its node in the second view (not for a deletion).
    pub b: Option<usize>,
}

/// How to compare.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Fields not compared.
    pub ignore: BTreeSet<Field>,
    /// Paths (and their subtrees) left out.
    pub ignore_paths: Vec<Glob>,
}

impl Options {
    fn ignored(&self, path: &[u8]) -> bool {
        if self.ignore_paths.is_empty() {
            return false;
        }
        let mut abs = Vec::with_capacity(path.len() + 1);
        abs.push(b'/');
        abs.extend_from_slice(path);
        self.ignore_paths.iter().any(|g| g.matches_path(&abs))
    }
}

fn is_reg(k: Kind) -> bool {
    matches!(k, Kind::File | Kind::Hardlink)
}

/// What differs between two entries of the same path, `ignore` left out.
pub fn entry_fields(a: &FileEntry, b: &FileEntry, ignore: &BTreeSet<Field>) -> Vec<Field> {
    let mut out = Vec::new();
    let same_type = a.kind == b.kind || (is_reg(a.kind) && is_reg(b.kind));
    let mut check = |f: Field, differs: bool| {
        if differs && !ignore.contains(&f) {
            out.push(f);
        }
    };
    check(Field::Type, !same_type);
    if is_reg(a.kind) && is_reg(b.kind) {
        check(Field::Content, a.digest != b.digest);
        check(Field::Size, a.size != b.size);
    }
    if a.kind != Kind::Symlink || b.kind != Kind::Symlink {
        check(Field::Mode, a.mode & 0o7777 != b.mode & 0o7777);
    }
    check(Field::Uid, a.uid != b.uid);
    check(Field::Gid, a.gid != b.gid);
    let link =
        |e: &FileEntry| if matches!(e.kind, Kind::Symlink | Kind::Hardlink) { e.link.clone() } else { Vec::new() };
    check(Field::Link, link(a) != link(b));
    check(Field::Mtime, a.mtime != b.mtime);
    check(Field::Dev, matches!(a.kind, Kind::Char | Kind::Block) && a.dev != b.dev);
    out
}

/// The differences between views `a` and `b`, sorted by path (component order).
///
/// Entries that both views take from the same layer (the same diff ID) are equal without a
/// look: layers the images share are skipped outright.
pub fn diff_views(a: &View, b: &View, opts: &Options) -> Vec<FileChange> {
    use std::cmp::Ordering::*;
    let shared = |na: &Node, nb: &Node| {
        let (la, lb) = (&a.layers[na.layer as usize], &b.layers[nb.layer as usize]);
        la.diff_id.is_some() && la.diff_id == lb.diff_id
    };
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.nodes.len() || j < b.nodes.len() {
        let ord = match (a.nodes.get(i), b.nodes.get(j)) {
            (Some(x), Some(y)) => crate::view::path_cmp(&x.entry.path, &y.entry.path),
            (Some(_), None) => Less,
            _ => Greater,
        };
        match ord {
            Less => {
                let p = &a.nodes[i].entry.path;
                if !opts.ignored(p) {
                    out.push(FileChange {
                        change: Change::Deleted,
                        path: p.clone(),
                        fields: Vec::new(),
                        a: Some(i),
                        b: None,
                    });
                }
                i += 1;
            }
            Greater => {
                let p = &b.nodes[j].entry.path;
                if !opts.ignored(p) {
                    out.push(FileChange {
                        change: Change::Added,
                        path: p.clone(),
                        fields: Vec::new(),
                        a: None,
                        b: Some(j),
                    });
                }
                j += 1;
            }
            Equal => {
                let (x, y) = (&a.nodes[i], &b.nodes[j]);
                if !shared(x, y) && !opts.ignored(&x.entry.path) {
                    let fields = entry_fields(&x.entry, &y.entry, &opts.ignore);
                    if !fields.is_empty() {
                        out.push(FileChange {
                            change: Change::Changed,
                            path: x.entry.path.clone(),
                            fields,
                            a: Some(i),
                            b: Some(j),
                        });
                    }
                }
                i += 1;
                j += 1;
            }
        }
    }
    out
}

/// Counts and bytes of one kind of change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Tally {
    /// Paths.
    pub count: u64,
    /// Bytes of regular files: added or deleted bytes; for changes, the first image's.
    pub bytes: u64,
    /// For changes: the second image's bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_b: Option<u64>,
}

/// Totals of a comparison for one top-level directory (or all).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stat {
    /// `/usr`, or `/` for files at the root, or `total`.
    pub path: String,
    /// Added paths.
    pub added: Tally,
    /// Deleted paths.
    pub deleted: Tally,
    /// Changed paths.
    pub changed: Tally,
}

/// Totals per top-level directory, then the overall total (last).
pub fn stat(changes: &[FileChange], a: &View, b: &View) -> Vec<Stat> {
    let mut by: BTreeMap<String, Stat> = BTreeMap::new();
    let mut total = Stat { path: "total".into(), ..Stat::default() };
    let size = |v: &View, i: Option<usize>| {
        i.map(|i| &v.nodes[i].entry).filter(|e| e.kind == Kind::File || e.kind == Kind::Hardlink).map_or(0, |e| e.size)
    };
    for c in changes {
        let top = match c.path.iter().position(|&x| x == b'/') {
            Some(k) => format!("/{}", String::from_utf8_lossy(&c.path[..k])),
            None if c.a.is_some_and(|i| a.nodes[i].entry.kind == Kind::Dir)
                || c.b.is_some_and(|i| b.nodes[i].entry.kind == Kind::Dir) =>
            {
                format!("/{}", String::from_utf8_lossy(&c.path))
            }
            None => "/".to_string(),
        };
        let s = by.entry(top.clone()).or_insert_with(|| Stat { path: top, ..Stat::default() });
        for s in [s, &mut total] {
            let t = match c.change {
                Change::Added => &mut s.added,
                Change::Deleted => &mut s.deleted,
                Change::Changed => &mut s.changed,
            };
            t.count += 1;
            match c.change {
                Change::Added => t.bytes += size(b, c.b),
                Change::Deleted => t.bytes += size(a, c.a),
                Change::Changed => {
                    t.bytes += size(a, c.a);
                    *t.bytes_b.get_or_insert(0) += size(b, c.b);
                }
            }
        }
    }
    let mut out: Vec<Stat> = by.into_values().collect();
    out.push(total);
    out
}

/// A shell-style pattern for `--ignore-path`: `*` and `?` stay within a path component, `**`
/// crosses them. A pattern with a leading `/` is anchored at the image's root; one without
/// matches at any depth. Matching a directory leaves out its whole subtree.
#[derive(Debug, Clone)]
pub struct Glob {
    pattern: Vec<u8>,
}

impl Glob {
    /// Parses a pattern.
    pub fn new(p: &str) -> Result<Glob> {
        let t = p.trim_end_matches('/');
        if t.is_empty() {
            return Err(Error::invalid_argument(format!(
                "--ignore-path {p:?} matches nothing: give a path or pattern like /var/cache or *.pyc"
            )));
        }
        let pattern = if t.starts_with('/') { t.as_bytes().to_vec() } else { format!("**/{t}").into_bytes() };
        Ok(Glob { pattern })
    }

    /// Whether absolute path `abs` or one of its parents matches.
    pub fn matches_path(&self, abs: &[u8]) -> bool {
        let mut end = abs.len();
        loop {
            if glob_match(&self.pattern, &abs[..end]) {
                return true;
            }
            match abs[..end].iter().rposition(|&b| b == b'/') {
                Some(0) | None => return false,
                Some(k) => end = k,
            }
        }
    }
}

fn glob_match(p: &[u8], s: &[u8]) -> bool {
    if p.starts_with(b"**/") {
        // Zero or more whole components: "/x" also matches "**/x" (the leading slash of abs).
        let rest = &p[3..];
        if glob_match(rest, s.strip_prefix(b"/").unwrap_or(s)) {
            return true;
        }
        return (0..s.len()).any(|i| s[i] == b'/' && glob_match(rest, &s[i + 1..]));
    }
    if p.starts_with(b"**") {
        let rest = &p[2..];
        return (0..=s.len()).any(|i| glob_match(rest, &s[i..]));
    }
    match p.first() {
        None => s.is_empty(),
        Some(b'*') => (0..=s.len()).take_while(|&i| i == 0 || s[i - 1] != b'/').any(|i| glob_match(&p[1..], &s[i..])),
        Some(b'?') => s.first().is_some_and(|&c| c != b'/') && glob_match(&p[1..], &s[1..]),
        Some(&c) => s.first() == Some(&c) && glob_match(&p[1..], &s[1..]),
    }
}

// ---------------------------------------------------------------------------------------------
// views of images

/// The history entries that made layers (not `empty_layer` ones), in layer order.
fn layer_history(image: &Image) -> Vec<Option<String>> {
    let n = image.manifest.layers().len();
    let mut out: Vec<Option<String>> = image
        .config
        .history()
        .as_ref()
        .map(|h| h.iter().filter(|e| !e.empty_layer().unwrap_or(false)).map(|e| e.created_by().clone()).collect())
        .unwrap_or_default();
    out.resize(n, None);
    out
}

/// The layers of `image` as a view's [`LayerInfo`]s, with their indexes read (in parallel).
pub fn image_layers(store: &Store, image: &Image) -> Result<(Vec<LayerInfo>, Vec<FileIndex>)> {
    let diff_ids = image.diff_ids()?;
    let history = layer_history(image);
    let blobs = image.manifest.layers();
    let pairs: Vec<Result<(LayerInfo, FileIndex)>> = diff_ids
        .par_iter()
        .enumerate()
        .map(|(i, d)| {
            let idx = store.file_index(d).map_err(|e| e.context(format!("layer {i} of image {}", image.id())))?;
            let info = LayerInfo {
                index: i,
                diff_id: Some(d.clone()),
                blob: blobs.get(i).map(|b| (b.digest().clone(), b.size())),
                created_by: history.get(i).cloned().flatten(),
                root: store.snapshot_path(d)?.join(FS_DIR),
                tar_bytes: idx.tar_bytes,
                content_bytes: idx.content_bytes,
            };
            Ok((info, idx))
        })
        .collect();
    let mut infos = Vec::with_capacity(pairs.len());
    let mut idxs = Vec::with_capacity(pairs.len());
    for p in pairs {
        let (i, x) = p?;
        infos.push(i);
        idxs.push(x);
    }
    Ok((infos, idxs))
}

/// The merged view of `image`.
pub fn image_view(store: &Store, image: &Image) -> Result<View> {
    let t0 = std::time::Instant::now();
    let (infos, idxs) = image_layers(store, image)?;
    let t1 = t0.elapsed();
    let v = View::build(infos, idxs);
    if std::env::var_os("STRATA_PHASES").is_some() {
        eprintln!("  read+parse {t1:?} build {:?}", t0.elapsed());
    }
    Ok(v)
}

// ---------------------------------------------------------------------------------------------
// config

/// One difference between two image configs.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ConfigChange {
    /// `Env`, `Env.PATH`, `Cmd`, `Labels.KEY`, `Platform`, `History`, `Layers`, …
    pub field: String,
    /// The first image's value (`null` when it has none).
    pub a: Value,
    /// The second image's value.
    pub b: Value,
}

fn env_map(v: Option<&Vec<String>>) -> BTreeMap<String, String> {
    v.map(|l| {
        l.iter()
            .map(|e| match e.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (e.clone(), String::new()),
            })
            .collect()
    })
    .unwrap_or_default()
}

/// The differences between two images' configs: Env and Labels per key, Cmd, Entrypoint,
/// WorkingDir, User, ExposedPorts, Volumes, StopSignal, platform, history and layer list.
pub fn config_changes(a: &Image, b: &Image) -> Vec<ConfigChange> {
    let mut out = Vec::new();
    let (ca, cb) = (a.config.config().clone().unwrap_or_default(), b.config.config().clone().unwrap_or_default());
    let mut push = |field: &str, x: Value, y: Value| {
        if x != y {
            out.push(ConfigChange { field: field.to_string(), a: x, b: y });
        }
    };
    let (ea, eb) = (env_map(ca.env().as_ref()), env_map(cb.env().as_ref()));
    for k in ea.keys().chain(eb.keys()).collect::<BTreeSet<_>>() {
        push(&format!("Env.{k}"), json!(ea.get(k)), json!(eb.get(k)));
    }
    push("Cmd", json!(ca.cmd()), json!(cb.cmd()));
    push("Entrypoint", json!(ca.entrypoint()), json!(cb.entrypoint()));
    push("WorkingDir", json!(ca.working_dir()), json!(cb.working_dir()));
    push("User", json!(ca.user()), json!(cb.user()));
    // oci-spec reads these JSON objects into lists through a hash map: their order means nothing.
    let sorted = |v: &Option<Vec<String>>| {
        v.clone().map(|mut l| {
            l.sort();
            l
        })
    };
    push("ExposedPorts", json!(sorted(ca.exposed_ports())), json!(sorted(cb.exposed_ports())));
    push("Volumes", json!(sorted(ca.volumes())), json!(sorted(cb.volumes())));
    push("StopSignal", json!(ca.stop_signal()), json!(cb.stop_signal()));
    let (la, lb) = (ca.labels().clone().unwrap_or_default(), cb.labels().clone().unwrap_or_default());
    for k in la.keys().chain(lb.keys()).collect::<BTreeSet<_>>() {
        push(&format!("Labels.{k}"), json!(la.get(k)), json!(lb.get(k)));
    }
    let platform = |i: &Image| {
        let c = &i.config;
        let mut p = format!("{}/{}", c.os(), c.architecture());
        if let Some(v) = c.variant() {
            p.push('/');
            p.push_str(v);
        }
        p
    };
    push("Platform", json!(platform(a)), json!(platform(b)));
    // History and layers per position: a rebuild usually changes a few entries, not all.
    let hist = |i: &Image| -> Vec<String> {
        i.config
            .history()
            .as_ref()
            .map(|h| {
                h.iter()
                    .map(|e| {
                        let by = e.created_by().clone().unwrap_or_default();
                        if e.empty_layer().unwrap_or(false) {
                            format!("{by} (no layer)")
                        } else {
                            by
                        }
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let (ha, hb) = (hist(a), hist(b));
    for k in 0..ha.len().max(hb.len()) {
        push(&format!("History[{k}]"), json!(ha.get(k)), json!(hb.get(k)));
    }
    let (da, db) = (a.config.rootfs().diff_ids(), b.config.rootfs().diff_ids());
    for k in 0..da.len().max(db.len()) {
        push(&format!("Layers[{k}]"), json!(da.get(k)), json!(db.get(k)));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// layer analysis

/// One layer's row in `strata layers`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct LayerRow {
    /// Position, 0 for the bottom layer.
    pub index: usize,
    /// The blob's digest.
    pub digest: Option<String>,
    /// The diff ID.
    pub diff_id: Option<String>,
    /// Compressed size.
    pub size: Option<u64>,
    /// Uncompressed (tar) size.
    pub uncompressed: u64,
    /// Paths it adds (absent below it).
    pub added: u64,
    /// Non-directory paths it replaces.
    pub changed: u64,
    /// Paths it deletes (whiteouts, with what they hide below).
    pub deleted: u64,
    /// The history's `created_by`.
    pub created_by: Option<String>,
}

/// A file version stored in a layer that the image does not show.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Waste {
    /// Path (with a leading `/`).
    pub path: String,
    /// Its size.
    pub bytes: u64,
    /// The layer that stored it.
    pub layer: usize,
    /// The layer that hid it.
    pub hidden_by: usize,
    /// `replaced` or `deleted`.
    pub how: &'static str,
}

/// `strata layers`: per-layer rows, the wasted files, and totals.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LayerReport {
    /// One row per layer, bottom first.
    pub layers: Vec<LayerRow>,
    /// Regular-file bytes stored in all layers (each hard link's inode once).
    pub total_bytes: u64,
    /// Of those, the bytes the image shows.
    pub visible_bytes: u64,
    /// `total_bytes - visible_bytes`.
    pub wasted_bytes: u64,
    /// `visible_bytes / total_bytes` (1 for an image without files).
    pub efficiency: f64,
    /// Every hidden file version, biggest first.
    pub wasted: Vec<Waste>,
}

/// Analyses `layers` with their indexes (bottom first): what each adds, replaces and deletes,
/// and which stored bytes no container would see (dive's "wasted space").
pub fn layer_report(layers: &[LayerInfo], indexes: &[FileIndex]) -> LayerReport {
    let refs: Vec<&[FileEntry]> = indexes.iter().map(|i| i.entries.as_slice()).collect();
    let fates = fates(&refs);
    let mut rows: Vec<LayerRow> = layers
        .iter()
        .map(|l| LayerRow {
            index: l.index,
            digest: l.blob.as_ref().map(|b| b.0.to_string()),
            diff_id: l.diff_id.as_ref().map(Digest::to_string),
            size: l.blob.as_ref().map(|b| b.1),
            uncompressed: l.tar_bytes,
            created_by: l.created_by.clone(),
            ..LayerRow::default()
        })
        .collect();
    // A file hidden at its own path stays visible through a hard link of its layer that is.
    let linked: std::collections::HashSet<(u32, &[u8])> = fates
        .iter()
        .filter(|f| f.end.is_none())
        .filter_map(|f| {
            let e = &refs[f.layer as usize][f.seq as usize];
            (e.kind == Kind::Hardlink).then_some((f.layer, e.link.as_slice()))
        })
        .collect();
    let (mut total, mut visible) = (0u64, 0u64);
    let mut wasted = Vec::new();
    for f in &fates {
        let e = &refs[f.layer as usize][f.seq as usize];
        let row = &mut rows[f.layer as usize];
        match e.kind {
            Kind::Opaque => {}
            Kind::Whiteout => {}
            k => {
                if f.over {
                    if k != Kind::Dir {
                        row.changed += 1;
                    }
                } else {
                    row.added += 1;
                }
            }
        }
        if let Some((by, Cause::Deleted)) = f.end {
            if !matches!(e.kind, Kind::Whiteout | Kind::Opaque) {
                rows[by as usize].deleted += 1;
            }
        }
        if e.kind == Kind::File {
            total += e.size;
            let end = if linked.contains(&(f.layer, e.path.as_slice())) { None } else { f.end };
            match end {
                None => visible += e.size,
                Some((by, how)) => wasted.push(Waste {
                    path: format!("/{}", String::from_utf8_lossy(&e.path)),
                    bytes: e.size,
                    layer: f.layer as usize,
                    hidden_by: by as usize,
                    how: if how == Cause::Replaced { "replaced" } else { "deleted" },
                }),
            }
        }
    }
    wasted.sort_by(|x, y| y.bytes.cmp(&x.bytes).then_with(|| x.path.cmp(&y.path)).then(x.layer.cmp(&y.layer)));
    let efficiency = if total == 0 { 1.0 } else { visible as f64 / total as f64 };
    LayerReport {
        layers: rows,
        total_bytes: total,
        visible_bytes: visible,
        wasted_bytes: total - visible,
        efficiency,
        wasted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn file(path: &str, size: u64, d: u8) -> FileEntry {
        let mut e = FileEntry::bare(path.as_bytes().to_vec(), Kind::File, 0o644);
        e.size = size;
        e.digest = Some([d; 32]);
        e
    }

    fn infos(n: usize) -> Vec<LayerInfo> {
        (0..n)
            .map(|i| LayerInfo {
                index: i,
                diff_id: Some(crate::digest::sha256(&[i as u8])),
                blob: None,
                created_by: Some(format!("step {i}")),
                root: PathBuf::new(),
                tar_bytes: 0,
                content_bytes: 0,
            })
            .collect()
    }

    fn idx(entries: Vec<FileEntry>) -> FileIndex {
        FileIndex { diff_id: crate::digest::sha256(b""), content_bytes: 0, tar_bytes: 0, created: 0, entries }
    }

    #[test]
    fn fields_and_ignore() {
        let a = file("x", 1, 1);
        let mut b = file("x", 2, 2);
        b.mtime = 9;
        b.uid = 5;
        let all = entry_fields(&a, &b, &BTreeSet::new());
        assert_eq!(all, [Field::Content, Field::Size, Field::Uid, Field::Mtime]);
        let ig = Field::parse_list("mtime,owner").unwrap();
        assert_eq!(entry_fields(&a, &b, &ig), [Field::Content, Field::Size]);
        assert!(Field::parse_list("mtime,colour").unwrap_err().to_string().contains("colour"));
        let mut l = FileEntry::bare(b"x".to_vec(), Kind::Symlink, 0o777);
        l.link = b"/a".to_vec();
        assert_eq!(entry_fields(&a, &l, &BTreeSet::new())[0], Field::Type);
    }

    #[test]
    fn diff_and_stat() {
        let va = View::build(infos(1), vec![idx(vec![file("etc/a", 3, 1), file("etc/b", 4, 2), file("top", 1, 1)])]);
        let vb = View::build(
            infos(2),
            vec![
                idx(vec![file("etc/a", 3, 1), file("etc/b", 4, 2), file("top", 1, 1)]),
                idx(vec![
                    file("etc/b", 5, 3),
                    FileEntry::bare(b"top".to_vec(), Kind::Whiteout, 0),
                    file("usr/n", 7, 4),
                ]),
            ],
        );
        let mut va2 = va.clone();
        va2.layers = infos(1);
        let ch = diff_views(&va2, &vb, &Options::default());
        let lines: Vec<String> =
            ch.iter().map(|c| format!("{} {}", c.change.letter(), String::from_utf8_lossy(&c.path))).collect();
        assert_eq!(lines, ["C etc/b", "D top", "A usr/n"]);
        let st = stat(&ch, &va2, &vb);
        let total = st.last().unwrap();
        assert_eq!((total.added.count, total.added.bytes), (1, 7));
        assert_eq!((total.changed.bytes, total.changed.bytes_b), (4, Some(5)));
        assert_eq!(st.iter().map(|s| s.path.as_str()).collect::<Vec<_>>(), ["/", "/etc", "/usr", "total"]);
        let opts =
            Options { ignore_paths: vec![Glob::new("/etc").unwrap(), Glob::new("n").unwrap()], ..Options::default() };
        assert_eq!(diff_views(&va2, &vb, &opts).len(), 1);
    }

    #[test]
    fn globs() {
        let g = |p: &str, s: &str| Glob::new(p).unwrap().matches_path(s.as_bytes());
        assert!(g("*.pyc", "/usr/lib/x/a.pyc"));
        assert!(!g("*.pyc", "/usr/lib/x/a.py"));
        assert!(g("/var/cache", "/var/cache/apt/x"));
        assert!(!g("/var/cache", "/var/cachex"));
        assert!(g("/usr/*/doc", "/usr/share/doc/x"));
        assert!(!g("/usr/*/doc", "/usr/a/b/doc"));
        assert!(g("/usr/**/doc", "/usr/a/b/doc"));
        assert!(g("/etc/?ostname", "/etc/hostname"));
        assert!(Glob::new("/").is_err());
    }

    #[test]
    fn waste_and_efficiency() {
        let layers = vec![
            idx(vec![file("a", 100, 1), file("b", 50, 2)]),
            idx(vec![file("a", 10, 3), FileEntry::bare(b"b".to_vec(), Kind::Whiteout, 0), file("c", 40, 4)]),
        ];
        let r = layer_report(&infos(2), &layers);
        assert_eq!(r.total_bytes, 200);
        assert_eq!(r.visible_bytes, 50);
        assert_eq!(r.wasted_bytes, 150);
        assert_eq!(r.wasted[0].path, "/a");
        assert_eq!((r.wasted[0].layer, r.wasted[0].hidden_by, r.wasted[0].how), (0, 1, "replaced"));
        assert_eq!(r.wasted[1].how, "deleted");
        assert_eq!((r.layers[0].added, r.layers[1].added, r.layers[1].changed, r.layers[1].deleted), (2, 1, 1, 1));
        assert!((r.efficiency - 0.25).abs() < 1e-9);
    }
}
