//! `strata diff IMAGE IMAGE`, `strata layers`, `strata ls`, `strata cat`: reading and comparing
//! images from the store's file indexes, without running them.

use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::{json, Value};
use strata_registry::copy::Endpoint;
use strata_registry::pull::PullOptions;
use strata_registry::Client;
use strata_store::compare::{self, Change, ConfigChange, Field, FileChange, Glob, Options, Stat};
use strata_store::fileindex::{bytes_to_hex, FileEntry, FileIndex, Kind};
use strata_store::packages::{self, PackageChange};
use strata_store::view::{LayerInfo, Node, View};
use strata_store::{Image, Lease, Store};

use crate::args::{CatArgs, DiffArgs, Format, LayersArgs, LsArgs};
use crate::render::{self, Table};
use crate::Outcome;

/// An image (or container) opened for reading.
struct Target {
    /// What the user typed.
    input: String,
    /// The image (for a container, its image).
    image: Image,
    /// A container's writable layer: its upper directory and name.
    upper: Option<(std::path::PathBuf, String)>,
}

impl Target {
    fn layers(&self, store: &Store) -> anyhow::Result<(Vec<LayerInfo>, Vec<FileIndex>)> {
        let (mut infos, mut idxs) = compare::image_layers(store, &self.image)?;
        if let Some((dir, name)) = &self.upper {
            let idx = strata_store::view::index_upper(dir)?;
            infos.push(LayerInfo {
                index: infos.len(),
                diff_id: None,
                blob: None,
                created_by: Some(format!("container {name} (not committed)")),
                root: dir.clone(),
                tar_bytes: 0,
                content_bytes: idx.content_bytes,
            });
            idxs.push(idx);
        }
        Ok((infos, idxs))
    }

    fn view(&self, store: &Store) -> anyhow::Result<View> {
        let (infos, idxs) = self.layers(store)?;
        Ok(View::build(infos, idxs))
    }

    /// The installed packages: from `view` when it is built, else straight from the layer trees.
    fn packages(&self, store: &Store, view: Option<&View>) -> anyhow::Result<Vec<packages::Package>> {
        if let Some(v) = view {
            return Ok(packages::packages(v)?);
        }
        if self.upper.is_none() {
            let mut roots = Vec::new();
            let mut indexes = Vec::new();
            for d in self.image.diff_ids()?.iter().rev() {
                let snap = store.snapshot_path(d)?;
                roots.push(snap.join(strata_store::snapshot::FS_DIR));
                indexes.push(snap.join(strata_store::snapshot::INDEX_FILE));
            }
            if let Some(p) = packages::packages_in_layers(&roots, &indexes)? {
                return Ok(p);
            }
        }
        Ok(packages::packages(&self.view(store)?)?)
    }

    fn json(&self, view: &View) -> Value {
        json!({
            "input": self.input,
            "id": self.image.id().to_string(),
            "digest": self.image.digest().to_string(),
            "container": self.upper.as_ref().map(|u| u.1.clone()),
            "layers": view.layers.iter().map(layer_json).collect::<Vec<_>>(),
        })
    }
}

fn layer_json(l: &LayerInfo) -> Value {
    json!({
        "index": l.index,
        "digest": l.blob.as_ref().map(|b| b.0.to_string()),
        "diff_id": l.diff_id.as_ref().map(|d| d.to_string()),
        "size": l.blob.as_ref().map(|b| b.1),
        "created_by": l.created_by,
    })
}

/// Finds `input`: a local image (among `images` when the caller listed them already), else a
/// local container; or fetches a remote, layout or archive image into the store, untagged and
/// held by `lease`.
fn open(
    store: &Store,
    insecure: &[String],
    input: &str,
    platform: Option<&str>,
    lease: &Lease,
    images: Option<&[Image]>,
) -> anyhow::Result<Target> {
    let remote = ["docker://", "oci:", "docker-archive:"].iter().any(|p| input.starts_with(p));
    if remote {
        let image = match Endpoint::parse(input)? {
            Endpoint::Registry(r) => {
                let client = Client::from_docker_config(super::registry::options(insecure))?;
                let opts = PullOptions { platform: platform.map(str::to_string), tag: false, ..PullOptions::default() };
                let pulled = client
                    .pull_leased(store, &r, &opts, &|_| {}, lease)
                    .with_context(|| format!("cannot fetch {input}"))?;
                store.load_image(&pulled.manifest)?
            }
            Endpoint::Layout { dir: path, name } | Endpoint::Archive { path, name } => {
                let staged = strata_store::archive::stage(store, &path, name.as_deref(), lease)?;
                if staged.len() > 1 {
                    let names: Vec<String> = staged
                        .iter()
                        .map(|s| s.names.first().cloned().unwrap_or_else(|| format!("(unnamed image {})", s.id)))
                        .collect();
                    bail!("{input} holds {} images ({}): name one as {input}:REF", staged.len(), names.join(", "));
                }
                store.load_image(&staged[0].desc)?
            }
        };
        return Ok(Target { input: input.to_string(), image, upper: None });
    }
    let found = match images {
        Some(list) => strata_store::image::find_image(list, input).cloned(),
        None => store.resolve_image(input),
    };
    match found {
        Ok(image) => Ok(Target { input: input.to_string(), image, upper: None }),
        Err(e) if e.kind() == strata_store::ErrorKind::NotFound => open_container(store, input).map_err(|ce| {
            if ce.to_string().contains("no such container") {
                anyhow::anyhow!("no such image or container: {input}")
            } else {
                ce
            }
        }),
        Err(e) => Err(e.into()),
    }
}

#[cfg(feature = "runtime")]
fn open_container(store: &Store, input: &str) -> anyhow::Result<Target> {
    let c = strata_run::container::Container::find(store, input)?;
    let digest = strata_run::container::image_digest(&c).context("the container names no valid image")?;
    let image = store.load_image(&strata_store::Descriptor::new(strata_store::MediaType::ImageManifest, 0, digest))?;
    Ok(Target { input: input.to_string(), image, upper: Some((c.dir(store).join("upper"), c.name.clone())) })
}

#[cfg(not(feature = "runtime"))]
fn open_container(_store: &Store, input: &str) -> anyhow::Result<Target> {
    bail!("no such container: {input}")
}

/// Runs `f` with `out` buffered (listings run to tens of thousands of lines).
fn buffered(out: &mut dyn Write, f: impl FnOnce(&mut dyn Write) -> Outcome) -> Outcome {
    let mut w = std::io::BufWriter::with_capacity(64 << 10, out);
    let r = f(&mut w);
    w.flush()?;
    r
}

fn lease(store: &Store) -> anyhow::Result<Lease> {
    Ok(store.lease(Duration::from_secs(3600))?)
}

fn slash(p: &[u8]) -> String {
    format!("/{}", String::from_utf8_lossy(p))
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::File => "file",
        Kind::Hardlink => "file",
        Kind::Dir => "dir",
        Kind::Symlink => "symlink",
        Kind::Char => "char",
        Kind::Block => "block",
        Kind::Fifo => "fifo",
        Kind::Whiteout => "whiteout",
        Kind::Opaque => "opaque",
    }
}

fn entry_json(n: &Node) -> Value {
    let e = &n.entry;
    json!({
        "type": kind_name(e.kind),
        "mode": format!("{:04o}", e.mode & 0o7777),
        "uid": e.uid,
        "gid": e.gid,
        "size": e.size,
        "mtime": e.mtime,
        "link": matches!(e.kind, Kind::Symlink | Kind::Hardlink).then(|| String::from_utf8_lossy(&e.link).into_owned()),
        "hardlink": e.kind == Kind::Hardlink,
        "dev": matches!(e.kind, Kind::Char | Kind::Block).then(|| format!("{},{}", e.dev.0, e.dev.1)),
        "digest": e.digest.as_ref().map(|d| format!("blake3:{}", bytes_to_hex(d))),
        "layer": n.layer,
    })
}

fn field_text(f: Field, a: &FileEntry, b: &FileEntry) -> String {
    let link = |e: &FileEntry| {
        if matches!(e.kind, Kind::Symlink | Kind::Hardlink) {
            String::from_utf8_lossy(&e.link).into_owned()
        } else {
            "(none)".into()
        }
    };
    match f {
        Field::Type => format!("type {} -> {}", kind_name(a.kind), kind_name(b.kind)),
        Field::Content => "content".into(),
        Field::Size => format!("size {} -> {}", a.size, b.size),
        Field::Mode => format!("mode {:04o} -> {:04o}", a.mode & 0o7777, b.mode & 0o7777),
        Field::Uid => format!("uid {} -> {}", a.uid, b.uid),
        Field::Gid => format!("gid {} -> {}", a.gid, b.gid),
        Field::Link => format!("link {} -> {}", link(a), link(b)),
        Field::Mtime => format!(
            "mtime {} -> {}",
            strata_store::time::format_rfc3339(a.mtime),
            strata_store::time::format_rfc3339(b.mtime)
        ),
        Field::Dev => format!("dev {},{} -> {},{}", a.dev.0, a.dev.1, b.dev.0, b.dev.1),
    }
}

/// Text files up to this size get a unified diff.
const TEXT_DIFF_MAX: u64 = 4 << 20;

/// The unified diff of a changed regular file, or a note why there is none.
fn content_diff(c: &FileChange, va: &View, vb: &View) -> anyhow::Result<Option<String>> {
    let (Some(ia), Some(ib)) = (c.a, c.b) else { return Ok(None) };
    let (na, nb) = (&va.nodes[ia], &vb.nodes[ib]);
    let reg = |e: &FileEntry| matches!(e.kind, Kind::File | Kind::Hardlink);
    if !c.fields.contains(&Field::Content) || !reg(&na.entry) || !reg(&nb.entry) {
        return Ok(None);
    }
    let p = slash(&c.path);
    if na.entry.size > TEXT_DIFF_MAX || nb.entry.size > TEXT_DIFF_MAX {
        return Ok(Some(format!("Files a{p} and b{p} differ (too big for a text diff)\n")));
    }
    let read = |v: &View, n: &Node| {
        let d = v.disk_path(n);
        std::fs::read(&d).with_context(|| format!("cannot read {}", d.display()))
    };
    let (ba, bb) = (read(va, na)?, read(vb, nb)?);
    let text = |b: &[u8]| if b.contains(&0) { None } else { std::str::from_utf8(b).ok().map(str::to_string) };
    match (text(&ba), text(&bb)) {
        (Some(ta), Some(tb)) => {
            let d = similar::TextDiff::from_lines(&ta, &tb);
            Ok(Some(d.unified_diff().context_radius(3).header(&format!("a{p}"), &format!("b{p}")).to_string()))
        }
        _ => Ok(Some(format!("Binary files a{p} and b{p} differ\n"))),
    }
}

fn layer_line(side: &str, v: &View, layer: Option<u32>, removed: bool) -> String {
    match layer {
        None => format!("{side}: -"),
        Some(l) => {
            let info = &v.layers[l as usize];
            let id = info
                .blob
                .as_ref()
                .map(|b| render::id(&b.0, false))
                .or_else(|| info.diff_id.as_ref().map(|d| render::id(d, false)))
                .unwrap_or_else(|| "upper".into());
            let by = info.created_by.as_deref().map(|c| render::ellipsis(c.trim(), 70)).unwrap_or_default();
            let verb = if removed { "deleted by layer" } else { "layer" };
            format!("{side}: {verb} {l} {id} {by}").trim_end().to_string()
        }
    }
}

/// The layer of view `v` that put `path` there (`node`) or removed it.
fn origin(v: &View, node: Option<usize>, path: &[u8]) -> (Option<u32>, bool) {
    match node {
        Some(i) => (Some(v.nodes[i].layer), false),
        None => match v.removed_by(path) {
            Some(l) => (Some(l), true),
            None => (None, false),
        },
    }
}

/// `strata diff`
pub fn diff(store: &Store, insecure: &[String], a: DiffArgs, out: &mut dyn Write) -> Outcome {
    buffered(out, |out| diff_to(store, insecure, a, out))
}

fn diff_to(store: &Store, insecure: &[String], a: DiffArgs, out: &mut dyn Write) -> Outcome {
    if a.targets.len() == 1 {
        let flags = a.stat
            || a.content
            || a.packages
            || a.config
            || a.layers
            || !a.ignore.is_empty()
            || !a.ignore_path.is_empty();
        if flags || a.format != Format::Table {
            bail!("--stat, --content, --packages, --config, --layers, --ignore, --ignore-path and --format compare two images: give IMAGE_A IMAGE_B");
        }
        #[cfg(feature = "runtime")]
        return super::container::diff(store, &a.targets[0], out);
        #[cfg(not(feature = "runtime"))]
        bail!("this strata is built without the runtime: give two images to compare");
    }
    let mut opts = Options::default();
    for i in &a.ignore {
        opts.ignore.extend(Field::parse_list(i)?);
    }
    for g in &a.ignore_path {
        opts.ignore_paths.push(Glob::new(g)?);
    }
    let lease = lease(store)?;
    // The store's images are listed (every manifest and config read and verified) once for both.
    let images = store.images()?;
    let ta = open(store, insecure, &a.targets[0], a.platform.as_deref(), &lease, Some(&images))?;
    let tb = open(store, insecure, &a.targets[1], a.platform.as_deref(), &lease, Some(&images))?;

    // Sections: files unless only --packages and/or --config were asked for.
    let files_wanted = a.stat || a.content || a.layers || !(a.packages || a.config);
    let same = ta.image.id() == tb.image.id() && ta.upper.is_none() && tb.upper.is_none();
    let need_views = files_wanted || a.format == Format::Json;
    let (va, vb) = if need_views && !(same && a.format != Format::Json) {
        let (x, y) = rayon::join(|| ta.view(store), || tb.view(store));
        (Some(x?), Some(y?))
    } else {
        (None, None)
    };
    let changes: Vec<FileChange> = match (&va, &vb) {
        (Some(x), Some(y)) if files_wanted && !same => compare::diff_views(x, y, &opts),
        _ => Vec::new(),
    };
    let pkg_changes: Option<Vec<PackageChange>> = if a.packages {
        let (pa, pb) = rayon::join(|| ta.packages(store, va.as_ref()), || tb.packages(store, vb.as_ref()));
        Some(packages::diff_packages(&pa?, &pb?))
    } else {
        None
    };
    let cfg_changes: Option<Vec<ConfigChange>> = a.config.then(|| compare::config_changes(&ta.image, &tb.image));
    let differ = (files_wanted && !changes.is_empty())
        || pkg_changes.as_ref().is_some_and(|p| !p.is_empty())
        || cfg_changes.as_ref().is_some_and(|c| !c.is_empty());

    if a.format == Format::Json {
        let (va, vb) = (va.as_ref().expect("views are built for JSON"), vb.as_ref().expect("views are built for JSON"));
        let mut files = Vec::with_capacity(changes.len());
        for c in &changes {
            let (la, ra) = origin(va, c.a, &c.path);
            let (lb, rb) = origin(vb, c.b, &c.path);
            let mut f = json!({
                "change": c.change.letter().to_string(),
                "path": slash(&c.path),
                "fields": c.fields.iter().map(|f| f.name()).collect::<Vec<_>>(),
                "a": c.a.map(|i| entry_json(&va.nodes[i])),
                "b": c.b.map(|i| entry_json(&vb.nodes[i])),
                "layer_a": la,
                "layer_b": lb,
                "removed_in_a": ra,
                "removed_in_b": rb,
            });
            if a.content {
                f["diff"] = json!(content_diff(c, va, vb)?);
            }
            files.push(f);
        }
        let doc = json!({
            "schemaVersion": 1,
            "a": ta.json(va),
            "b": tb.json(vb),
            "identical": !differ,
            "files": files_wanted.then_some(files),
            "stat": files_wanted.then(|| compare::stat(&changes, va, vb)),
            "packages": pkg_changes,
            "config": cfg_changes,
        });
        serde_json::to_writer_pretty(&mut *out, &doc)?;
        writeln!(out)?;
        return Ok(u8::from(differ));
    }

    let sections = usize::from(files_wanted) + usize::from(a.packages) + usize::from(a.config);
    let heading = |out: &mut dyn Write, t: &str| -> std::io::Result<()> {
        if sections > 1 {
            writeln!(out, "== {t} ==")?;
        }
        Ok(())
    };
    if files_wanted {
        heading(out, "Files")?;
        if a.stat {
            if let (Some(va), Some(vb)) = (&va, &vb) {
                print_stat(&compare::stat(&changes, va, vb), out)?;
            } else {
                print_stat(&[Stat { path: "total".into(), ..Stat::default() }], out)?;
            }
        } else if let (Some(va), Some(vb)) = (&va, &vb) {
            for c in &changes {
                let p = slash(&c.path);
                if c.change == Change::Changed {
                    let (x, y) = (&va.nodes[c.a.unwrap_or(0)].entry, &vb.nodes[c.b.unwrap_or(0)].entry);
                    let what: Vec<String> = c.fields.iter().map(|f| field_text(*f, x, y)).collect();
                    writeln!(out, "C {p}  ({})", what.join(", "))?;
                } else {
                    writeln!(out, "{} {p}", c.change.letter())?;
                }
                if a.layers {
                    let (la, ra) = origin(va, c.a, &c.path);
                    let (lb, rb) = origin(vb, c.b, &c.path);
                    writeln!(out, "    {}", layer_line("A", va, la, ra))?;
                    writeln!(out, "    {}", layer_line("B", vb, lb, rb))?;
                }
                if a.content {
                    if let Some(d) = content_diff(c, va, vb)? {
                        out.write_all(d.as_bytes())?;
                    }
                }
            }
        }
    }
    if let Some(p) = &pkg_changes {
        heading(out, "Packages")?;
        if !p.is_empty() {
            let mut t = Table::new(&["CHANGE", "MANAGER", "PACKAGE", "ARCH", "A", "B"]);
            for c in p {
                t.row(vec![
                    c.change.to_string(),
                    c.manager.to_string(),
                    c.name.clone(),
                    c.arch.clone(),
                    c.a.clone().unwrap_or_else(|| "-".into()),
                    c.b.clone().unwrap_or_else(|| "-".into()),
                ]);
            }
            t.print(out)?;
        }
    }
    if let Some(cc) = &cfg_changes {
        heading(out, "Config")?;
        let show = |v: &Value| match v {
            Value::Null => "(none)".to_string(),
            Value::String(s) => format!("{s:?}"),
            v => v.to_string(),
        };
        for c in cc {
            writeln!(out, "{}: {} -> {}", c.field, show(&c.a), show(&c.b))?;
        }
    }
    Ok(u8::from(differ))
}

fn tally(count: u64, bytes: u64) -> String {
    if count == 0 || bytes == 0 {
        count.to_string()
    } else {
        format!("{count} ({})", render::size(bytes))
    }
}

fn print_stat(stats: &[Stat], out: &mut dyn Write) -> std::io::Result<()> {
    let mut t = Table::new(&["PATH", "ADDED", "DELETED", "CHANGED"]);
    for s in stats {
        let changed = if s.changed.bytes == 0 && s.changed.bytes_b.unwrap_or(0) == 0 {
            s.changed.count.to_string()
        } else {
            format!(
                "{} ({} -> {})",
                s.changed.count,
                render::size(s.changed.bytes),
                render::size(s.changed.bytes_b.unwrap_or(0))
            )
        };
        t.row(vec![
            s.path.clone(),
            tally(s.added.count, s.added.bytes),
            tally(s.deleted.count, s.deleted.bytes),
            changed,
        ]);
    }
    t.print(out)
}

/// `strata layers`
pub fn layers(store: &Store, insecure: &[String], a: LayersArgs, out: &mut dyn Write) -> Outcome {
    buffered(out, |out| layers_to(store, insecure, a, out))
}

fn layers_to(store: &Store, insecure: &[String], a: LayersArgs, out: &mut dyn Write) -> Outcome {
    let max_wasted = match &a.max_wasted_bytes {
        Some(s) => Some(render::parse_size(s).with_context(|| {
            format!("invalid --max-wasted-bytes {s:?}: give a size such as 0, 5000, 10MB or 1.5GiB")
        })?),
        None => None,
    };
    if let Some(f) = a.min_efficiency {
        if !(0.0..=1.0).contains(&f) {
            bail!("invalid --min-efficiency {f}: give a fraction between 0 and 1, such as 0.95");
        }
    }
    let lease = lease(store)?;
    let t = open(store, insecure, &a.image, a.platform.as_deref(), &lease, None)?;
    let (infos, idxs) = t.layers(store)?;
    let r = compare::layer_report(&infos, &idxs);
    let mut failures = Vec::new();
    if let Some(m) = max_wasted {
        if r.wasted_bytes > m {
            failures.push(format!("wasted bytes {} exceed --max-wasted-bytes {m}", r.wasted_bytes));
        }
    }
    if let Some(f) = a.min_efficiency {
        if r.efficiency < f {
            failures.push(format!("efficiency {:.4} is below --min-efficiency {f}", r.efficiency));
        }
    }
    if a.format == Format::Json {
        let mut doc = serde_json::to_value(&r)?;
        doc["image"] =
            json!({"input": t.input, "id": t.image.id().to_string(), "digest": t.image.digest().to_string()});
        doc["pass"] = json!(failures.is_empty());
        doc["failures"] = json!(failures);
        serde_json::to_writer_pretty(&mut *out, &doc)?;
        writeln!(out)?;
    } else {
        let mut tb = Table::new(&["LAYER", "SIZE", "UNCOMPRESSED", "ADDED", "CHANGED", "DELETED", "CREATED BY"]);
        for l in &r.layers {
            tb.row(vec![
                l.index.to_string(),
                l.size.map(render::size).unwrap_or_else(|| "-".into()),
                render::size(l.uncompressed),
                l.added.to_string(),
                l.changed.to_string(),
                l.deleted.to_string(),
                l.created_by.as_deref().map(|c| render::ellipsis(c.trim(), 60)).unwrap_or_default(),
            ]);
        }
        tb.print(out)?;
        writeln!(out)?;
        let pct = if r.total_bytes == 0 { 0.0 } else { 100.0 * r.wasted_bytes as f64 / r.total_bytes as f64 };
        writeln!(out, "Total file bytes: {} ({} bytes)", render::size(r.total_bytes), r.total_bytes)?;
        writeln!(out, "Wasted bytes:     {} ({} bytes, {pct:.1}%)", render::size(r.wasted_bytes), r.wasted_bytes)?;
        writeln!(out, "Efficiency:       {:.2}%", r.efficiency * 100.0)?;
        if !r.wasted.is_empty() {
            writeln!(out)?;
            let n = if a.top == 0 { r.wasted.len() } else { a.top.min(r.wasted.len()) };
            let mut tw = Table::new(&["WASTED", "PATH", "LAYER", "HIDDEN BY"]);
            for w in &r.wasted[..n] {
                tw.row(vec![
                    render::size(w.bytes),
                    w.path.clone(),
                    w.layer.to_string(),
                    format!("{} ({})", w.hidden_by, w.how),
                ]);
            }
            tw.print(out)?;
            if n < r.wasted.len() {
                writeln!(out, "... and {} more (--top 0 lists all)", r.wasted.len() - n)?;
            }
        }
    }
    if failures.is_empty() {
        Ok(0)
    } else {
        for f in &failures {
            eprintln!("FAIL: {f}");
        }
        Ok(1)
    }
}

fn mode_string(e: &FileEntry) -> String {
    let mut s = String::with_capacity(10);
    s.push(match e.kind {
        Kind::File | Kind::Hardlink => '-',
        k => k.letter(),
    });
    let m = e.mode;
    for (i, (r, w, x)) in [(0o400, 0o200, 0o100), (0o40, 0o20, 0o10), (0o4, 0o2, 0o1)].into_iter().enumerate() {
        s.push(if m & r != 0 { 'r' } else { '-' });
        s.push(if m & w != 0 { 'w' } else { '-' });
        let special = [0o4000, 0o2000, 0o1000][i];
        s.push(match (m & x != 0, m & special != 0) {
            (true, false) => 'x',
            (false, false) => '-',
            (true, true) => ['s', 's', 't'][i],
            (false, true) => ['S', 'S', 'T'][i],
        });
    }
    s
}

/// `strata ls`
pub fn ls(store: &Store, insecure: &[String], a: LsArgs, out: &mut dyn Write) -> Outcome {
    buffered(out, |out| ls_to(store, insecure, a, out))
}

fn ls_to(store: &Store, insecure: &[String], a: LsArgs, out: &mut dyn Write) -> Outcome {
    let lease = lease(store)?;
    let t = open(store, insecure, &a.image, a.platform.as_deref(), &lease, None)?;
    let v = t.view(store)?;
    // As ls(1): a symlink named on the command line is listed itself with -l, else followed.
    // A trailing slash asks for the directory a symlink points to, as with ls(1).
    let follow = !a.long || a.path.ends_with('/');
    let target = v.resolve(a.path.as_bytes(), follow).map_err(|e| anyhow::anyhow!("{}: {e}", a.image))?;
    let listing: Vec<&Node> = if target.is_empty() {
        v.below(b"", a.recursive).collect()
    } else {
        let n = v.get(&target).context("no such file or directory")?;
        if n.entry.kind == Kind::Dir {
            v.below(&target, a.recursive).collect()
        } else {
            vec![n]
        }
    };
    let base = if listing.len() == 1 && listing[0].entry.path == target {
        target.iter().rposition(|&b| b == b'/').map_or(0, |k| k + 1)
    } else if target.is_empty() {
        0
    } else {
        target.len() + 1
    };
    if a.format == Format::Json {
        let rows: Vec<Value> = listing
            .iter()
            .map(|n| {
                let mut j = entry_json(n);
                j["path"] = json!(slash(&n.entry.path));
                j
            })
            .collect();
        serde_json::to_writer_pretty(&mut *out, &rows)?;
        writeln!(out)?;
        return Ok(0);
    }
    // A file named on the command line is shown under the name given, as ls(1) does.
    let single = listing.len() == 1 && listing[0].entry.path == target && listing[0].entry.kind != Kind::Dir;
    for n in listing {
        let name = if single { a.path.as_str().into() } else { String::from_utf8_lossy(&n.entry.path[base..]) };
        if a.long {
            let e = &n.entry;
            let size = if matches!(e.kind, Kind::Char | Kind::Block) {
                format!("{}, {}", e.dev.0, e.dev.1)
            } else {
                e.size.to_string()
            };
            let time = strata_store::time::format_rfc3339(e.mtime);
            let link = match e.kind {
                Kind::Symlink => format!(" -> {}", String::from_utf8_lossy(&e.link)),
                Kind::Hardlink => format!(" => /{}", String::from_utf8_lossy(&e.link)),
                _ => String::new(),
            };
            writeln!(
                out,
                "{} {:>5} {:>5} {:>10} {} {:>3} {name}{link}",
                mode_string(e),
                e.uid,
                e.gid,
                size,
                time,
                n.layer
            )?;
        } else {
            writeln!(out, "{name}")?;
        }
    }
    Ok(0)
}

/// `strata cat`
pub fn cat(store: &Store, insecure: &[String], a: CatArgs, out: &mut dyn Write) -> Outcome {
    buffered(out, |out| cat_to(store, insecure, a, out))
}

fn cat_to(store: &Store, insecure: &[String], a: CatArgs, out: &mut dyn Write) -> Outcome {
    let lease = lease(store)?;
    let t = open(store, insecure, &a.image, a.platform.as_deref(), &lease, None)?;
    let v = t.view(store)?;
    for p in &a.paths {
        let target = v.resolve(p.as_bytes(), true).map_err(|e| anyhow::anyhow!("{}: {e}", a.image))?;
        let n = v.get(&target).with_context(|| format!("{}: {p}: no such file or directory", a.image))?;
        match n.entry.kind {
            Kind::File | Kind::Hardlink => {}
            Kind::Dir => bail!("{}: {p}: is a directory", a.image),
            k => bail!("{}: {p}: is a {} (not a regular file)", a.image, kind_name(k)),
        }
        let disk = v.disk_path(n);
        let mut f = std::fs::File::open(&disk).with_context(|| format!("cannot open {}", disk.display()))?;
        std::io::copy(&mut f, out)?;
    }
    Ok(0)
}
