//! Garbage collection: a pure mark over roots, then a sweep.
//!
//! Roots are explicit values: the manifests named in `index.json`, the images of containers
//! (`containers/<id>/state.json`, field `image`: a manifest digest), and the digests held by live
//! leases (operations in flight). [`mark`] walks manifest → config and layer blobs, config →
//! snapshots (by diff ID), index → manifests, over any [`Graph`], so it is tested on small
//! synthetic graphs. The sweep runs under the store lock and lists content *before* it reads the
//! leases (see [`crate::store::Lease`]), then removes what is unmarked, plus temp files and lease
//! files of processes that are gone.

use std::collections::{BTreeSet, HashSet};
use std::fs;

use oci_spec::image::Descriptor;

use crate::digest::{self, Digest};
use crate::error::Result;
use crate::fsutil;
use crate::image::{is_index, is_manifest};
use crate::refs::ref_name;
use crate::store::{now_unix, read_leases, Owner, Store, StoreLock, CONTAINERS, TMP};

/// A node of the content graph.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Node {
    /// A blob, by digest.
    Blob(Digest),
    /// A snapshot, by diff ID.
    Snapshot(Digest),
}

/// What a node refers to.
pub trait Graph {
    /// The nodes `node` refers to; a node whose content cannot be read refers to nothing.
    fn children(&self, node: &Node) -> Vec<Node>;
}

/// Every node reachable from `roots`.
pub fn mark(graph: &dyn Graph, roots: impl IntoIterator<Item = Node>) -> HashSet<Node> {
    let mut seen = HashSet::new();
    let mut stack: Vec<Node> = roots.into_iter().collect();
    while let Some(n) = stack.pop() {
        if seen.insert(n.clone()) {
            stack.extend(graph.children(&n).into_iter().filter(|c| !seen.contains(c)));
        }
    }
    seen
}

/// The store's content as a graph: manifests and indexes are read to find children.
struct StoreGraph<'s>(&'s Store);

impl Graph for StoreGraph<'_> {
    fn children(&self, node: &Node) -> Vec<Node> {
        let Node::Blob(d) = node else { return Vec::new() };
        let Ok(blob) = self.0.blob(d) else { return Vec::new() };
        // Only small JSON blobs can be manifests, indexes or configs.
        if blob.len() > 4 << 20 || blob.first() != Some(&b'{') {
            return Vec::new();
        }
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&blob) else { return Vec::new() };
        let mut out = Vec::new();
        let desc_digest =
            |x: &serde_json::Value| x.get("digest").and_then(|d| d.as_str()).and_then(|s| digest::parse(s).ok());
        if let Some(c) = v.get("config") {
            if let Some(d) = desc_digest(c) {
                out.push(Node::Blob(d));
            }
        }
        for key in ["layers", "manifests"] {
            if let Some(arr) = v.get(key).and_then(|l| l.as_array()) {
                out.extend(arr.iter().filter_map(desc_digest).map(Node::Blob));
            }
        }
        if let Some(ids) = v.get("rootfs").and_then(|r| r.get("diff_ids")).and_then(|d| d.as_array()) {
            out.extend(ids.iter().filter_map(|s| s.as_str()).filter_map(|s| digest::parse(s).ok()).map(Node::Snapshot));
        }
        out
    }
}

/// What a sweep removed (or, in a dry run, would remove).
#[derive(Debug, Default, Clone)]
pub struct SweepReport {
    /// Blobs removed, with sizes.
    pub blobs: Vec<(Digest, u64)>,
    /// Snapshots removed, with their content sizes.
    pub snapshots: Vec<(Digest, u64)>,
    /// Bytes of stale temp files and half-finished unpacks removed.
    pub tmp_bytes: u64,
    /// Number of stale temp entries removed.
    pub tmp_entries: usize,
}

impl SweepReport {
    /// Total bytes freed.
    pub fn bytes(&self) -> u64 {
        self.blobs.iter().map(|b| b.1).sum::<u64>() + self.snapshots.iter().map(|s| s.1).sum::<u64>() + self.tmp_bytes
    }
}

/// Manifest digests of images used by containers (`containers/*/state.json`, field `image`).
pub fn container_images(store: &Store) -> Vec<Digest> {
    let dir = store.path(CONTAINERS);
    let Ok(rd) = fs::read_dir(&dir) else { return Vec::new() };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| fs::read(e.path().join("state.json")).ok())
        .filter_map(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .filter_map(|v| v.get("image").and_then(|s| s.as_str()).and_then(|s| digest::parse(s).ok()))
        .collect()
}

/// The roots of the store: tagged and dangling manifests, containers' images, live leases.
pub fn roots(store: &Store, manifests: &[Descriptor]) -> Vec<Node> {
    let now = now_unix();
    let mut roots: Vec<Node> = manifests.iter().map(|d| Node::Blob(d.digest().clone())).collect();
    roots.extend(container_images(store).into_iter().map(Node::Blob));
    for (_, lease) in read_leases(store) {
        if lease.live(now) {
            for s in &lease.digests {
                if let Ok(d) = digest::parse(s) {
                    // A lease names blobs and snapshots alike by digest.
                    roots.push(Node::Blob(d.clone()));
                    roots.push(Node::Snapshot(d));
                }
            }
        }
    }
    roots
}

impl Store {
    /// Marks from the current roots and removes everything unmarked; with `dry_run`, only reports.
    /// The caller holds the lock (so prune can change `index.json` and sweep in one hold).
    pub fn sweep(&self, _lock: &StoreLock, dry_run: bool) -> Result<SweepReport> {
        // List first, then read roots and leases: anything listed is covered by a lease taken
        // before it was renamed into place.
        let blobs = self.list_blobs()?;
        let snapshots = self.list_snapshots()?;
        let index = self.read_index()?;
        let live = mark(&StoreGraph(self), roots(self, index.manifests()));
        let mut report = SweepReport::default();
        for (d, size) in blobs {
            if !live.contains(&Node::Blob(d.clone())) {
                if !dry_run {
                    self.delete_blob(&d)?;
                }
                report.blobs.push((d, size));
            }
        }
        for d in snapshots {
            if !live.contains(&Node::Snapshot(d.clone())) {
                let size = self.snapshot_summary(&d).map(|s| s.content_bytes).unwrap_or(0);
                if !dry_run {
                    self.delete_snapshot(&d)?;
                }
                report.snapshots.push((d, size));
            }
        }
        // Temp entries and leases of processes that are gone.
        let now = now_unix();
        for (path, lease) in read_leases(self) {
            if !lease.live(now) && !dry_run {
                let _ = fs::remove_file(path);
            }
        }
        for (path, owner) in self.stale_tmp()? {
            let _ = owner;
            report.tmp_entries += 1;
            report.tmp_bytes += du(&path);
            if !dry_run {
                if path.is_dir() {
                    fsutil::remove_tree(&path)?;
                } else {
                    let _ = fs::remove_file(&path);
                }
            }
        }
        Ok(report)
    }

    /// Runs a full GC under the lock.
    pub fn gc(&self, dry_run: bool) -> Result<SweepReport> {
        let lock = self.lock()?;
        self.sweep(&lock, dry_run)
    }

    /// Entries of `tmp/` whose owner process is gone (or that carry no owner).
    pub fn stale_tmp(&self) -> Result<Vec<StaleTmp>> {
        let mut out = Vec::new();
        if let Ok(rd) = fs::read_dir(self.path(TMP)) {
            for e in rd.filter_map(|e| e.ok()) {
                let name = e.file_name().to_string_lossy().into_owned();
                if name == "leases" {
                    continue;
                }
                if name == "partial" {
                    out.extend(stale_partials(&e.path()).into_iter().map(|p| (p, None)));
                    continue;
                }
                match Owner::from_tmp_name(&name) {
                    Some(o) if o.alive() => {}
                    o => out.push((e.path(), o.map(|o| (o.pid, o.start)))),
                }
            }
        }
        // Temp files of atomic writes at the root and in the lease folder (`.NAME.tmp-PID-START-…`).
        for dir in [self.root().to_path_buf(), self.path(crate::store::LEASES)] {
            let Ok(rd) = fs::read_dir(&dir) else { continue };
            for e in rd.filter_map(|e| e.ok()) {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some((_, rest)) = name.split_once(".tmp-") else { continue };
                if !name.starts_with('.') {
                    continue;
                }
                match Owner::from_tmp_name(&format!("x-{rest}")) {
                    Some(o) if o.alive() => {}
                    o => out.push((e.path(), o.map(|o| (o.pid, o.start)))),
                }
            }
        }
        Ok(out)
    }
}

/// How long the bytes of an interrupted download are kept for a resume.
pub const PARTIAL_KEEP: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Kept downloads under `tmp/partial/` that no process is writing and that were last written
/// more than [`PARTIAL_KEEP`] ago.
fn stale_partials(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else { return out };
    for e in rd.filter_map(|e| e.ok()) {
        let old = e
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > PARTIAL_KEEP);
        if !old {
            continue;
        }
        let Ok(f) = fs::File::open(e.path()) else { continue };
        if rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok() {
            out.push(e.path());
        }
    }
    out
}

/// Apparent size of a file or tree (each inode once), not following symlinks.
pub fn du(path: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(m) = fs::symlink_metadata(&p) else { continue };
        if m.is_dir() {
            if let Ok(rd) = fs::read_dir(&p) {
                stack.extend(rd.filter_map(|e| e.ok()).map(|e| e.path()));
            }
        } else if m.is_file() && seen.insert((m.dev(), m.ino())) {
            total += m.len();
        }
    }
    total
}

/// A stale entry of `tmp/`: its path and the (pid, start time) of the process that made it.
pub type StaleTmp = (std::path::PathBuf, Option<(u32, u64)>);

/// Which images a prune removes.
#[derive(Debug, Clone, Default)]
pub struct PrunePolicy {
    /// All images not used by a container, not only dangling ones (`-a`).
    pub all: bool,
    /// Only images created more than this many seconds ago (`--filter until=`).
    pub created_before: Option<i64>,
    /// Only images not used (pulled, loaded, run, committed) for this many seconds; tagged ones
    /// too (it implies `all`: the point is to drop what nobody uses, named or not).
    pub unused_for: Option<i64>,
    /// Remove least-recently-used images until the store holds at most this many bytes.
    pub keep_bytes: Option<u64>,
}

/// An image a prune removes.
#[derive(Debug, Clone)]
pub struct PrunedImage {
    /// Image ID (config digest).
    pub id: Digest,
    /// Manifest digest.
    pub manifest: Digest,
    /// Tags it had.
    pub tags: Vec<String>,
    /// When it was last used.
    pub last_used: Option<i64>,
}

/// What a prune removed, or would remove.
#[derive(Debug, Clone, Default)]
pub struct PruneReport {
    /// Images removed.
    pub images: Vec<PrunedImage>,
    /// Content swept.
    pub sweep: SweepReport,
}

impl Store {
    /// Removes the images `policy` selects and sweeps what they alone held; with `dry_run`,
    /// reports what would go and how many bytes that frees, changing nothing.
    pub fn prune(&self, policy: &PrunePolicy, dry_run: bool) -> Result<PruneReport> {
        let lock = self.lock()?;
        let manifests = self.read_index()?.manifests().clone();
        let now = now_unix();
        let in_use: HashSet<Digest> = container_images(self).into_iter().collect();
        let images = self.images()?;
        let mut candidates: Vec<&crate::Image> = images
            .iter()
            .filter(|i| !in_use.contains(i.digest()))
            .filter(|i| policy.all || policy.keep_bytes.is_some() || policy.unused_for.is_some() || i.tags.is_empty())
            .filter(|i| policy.created_before.is_none_or(|s| i.created().is_some_and(|c| c < now - s)))
            .filter(|i| policy.unused_for.is_none_or(|s| i.last_used.unwrap_or(0) < now - s))
            .collect();
        // Least recently used first.
        candidates.sort_by_key(|i| (i.last_used.unwrap_or(0), i.created().unwrap_or(0)));
        let chosen: Vec<&crate::Image> = match policy.keep_bytes {
            None => candidates,
            Some(limit) => {
                let usage = self.usage_of(&manifests)?;
                let mut remaining: BTreeSet<String> = manifests.iter().map(|d| d.digest().to_string()).collect();
                let mut chosen = Vec::new();
                let mut total = usage.total(&remaining);
                for img in candidates {
                    if total <= limit {
                        break;
                    }
                    remaining.remove(&img.digest().to_string());
                    total = usage.total(&remaining);
                    chosen.push(img);
                }
                chosen
            }
        };
        let gone: HashSet<&Digest> = chosen.iter().map(|i| i.digest()).collect();
        let report_images = chosen
            .iter()
            .map(|i| PrunedImage {
                id: i.id().clone(),
                manifest: i.digest().clone(),
                tags: i.tags.iter().map(|t| t.familiar()).collect(),
                last_used: i.last_used,
            })
            .collect();
        let kept: Vec<Descriptor> = manifests.iter().filter(|d| !gone.contains(d.digest())).cloned().collect();
        let sweep = if dry_run {
            self.plan_sweep_without(&kept)?
        } else {
            if kept.len() != manifests.len() {
                self.write_index(&lock, kept)?;
            }
            self.sweep(&lock, false)?
        };
        Ok(PruneReport { images: report_images, sweep })
    }

    /// What a sweep would remove if `index.json` held only `kept`.
    fn plan_sweep_without(&self, kept: &[Descriptor]) -> Result<SweepReport> {
        let live = mark(&StoreGraph(self), roots(self, kept));
        let mut report = SweepReport::default();
        for (d, size) in self.list_blobs()? {
            if !live.contains(&Node::Blob(d.clone())) {
                report.blobs.push((d, size));
            }
        }
        for d in self.list_snapshots()? {
            if !live.contains(&Node::Snapshot(d.clone())) {
                let size = self.snapshot_summary(&d).map(|s| s.content_bytes).unwrap_or(0);
                report.snapshots.push((d, size));
            }
        }
        for (path, _) in self.stale_tmp()? {
            report.tmp_entries += 1;
            report.tmp_bytes += du(&path);
        }
        Ok(report)
    }

    /// Sizes of everything each manifest reaches, for LRU pruning.
    fn usage_of(&self, manifests: &[Descriptor]) -> Result<Reach> {
        let graph = StoreGraph(self);
        let mut reach = Reach::default();
        for d in manifests {
            let nodes = mark(&graph, [Node::Blob(d.digest().clone())]);
            for n in &nodes {
                if !reach.sizes.iter().any(|(m, _)| m == n) {
                    let size = match n {
                        Node::Blob(b) => self.blob_size(b).unwrap_or(0),
                        Node::Snapshot(s) => self.snapshot_summary(s).map(|x| x.content_bytes).unwrap_or(0),
                    };
                    reach.sizes.push((n.clone(), size));
                }
            }
            reach.by_manifest.push((d.digest().to_string(), nodes));
        }
        Ok(reach)
    }
}

#[derive(Default)]
struct Reach {
    sizes: Vec<(Node, u64)>,
    by_manifest: Vec<(String, HashSet<Node>)>,
}

impl Reach {
    fn total(&self, manifests: &BTreeSet<String>) -> u64 {
        let mut live: HashSet<&Node> = HashSet::new();
        for (m, nodes) in &self.by_manifest {
            if manifests.contains(m) {
                live.extend(nodes.iter());
            }
        }
        self.sizes.iter().filter(|(n, _)| live.contains(n)).map(|(_, s)| s).sum()
    }
}

/// Removes an image by what a user typed, docker's `rmi`: `name:tag` untags (and deletes the
/// image with its last tag); an ID deletes the image, which needs `force` when several tags name
/// it; an image used by a container is refused unless `force`.
pub fn remove_image(store: &Store, input: &str, force: bool) -> Result<RemoveReport> {
    use crate::error::{Error, ErrorKind};
    let lock = store.lock()?;
    let images = store.images()?;
    let img = crate::image::find_image(&images, input)?;
    let mut manifests = store.read_index()?.manifests().clone();
    let by_tag = crate::Reference::parse(input).ok().filter(|r| r.digest().is_none() && img.tags.contains(r));
    let mut report = RemoveReport::default();
    let untag: Vec<crate::Reference> = match &by_tag {
        Some(r) => vec![r.clone()],
        None => {
            if img.tags.len() > 1 && !force {
                return Err(Error::new(
                    ErrorKind::InUse,
                    format!(
                        "conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories",
                        short_id(img.id())
                    ),
                ));
            }
            img.tags.clone()
        }
    };
    let remaining_tags = img.tags.len() - untag.len();
    let in_use = container_images(store).contains(img.digest());
    if remaining_tags == 0 && in_use && !force {
        return Err(Error::new(
            ErrorKind::InUse,
            format!(
                "conflict: unable to remove repository reference {input:?} (must force) - a container is using image {}",
                short_id(img.id())
            ),
        ));
    }
    let names: Vec<String> = untag.iter().map(|r| r.to_string()).collect();
    manifests.retain(|d| !ref_name(d).is_some_and(|n| names.contains(&n.to_string())));
    report.untagged = untag;
    if remaining_tags == 0 && !in_use {
        manifests.retain(|d| d.digest() != img.digest());
        report.deleted.push(img.id().clone());
    }
    store.write_index(&lock, manifests)?;
    report.sweep = store.sweep(&lock, false)?;
    Ok(report)
}

/// What `rmi` did.
#[derive(Debug, Default, Clone)]
pub struct RemoveReport {
    /// Tags removed.
    pub untagged: Vec<crate::Reference>,
    /// Image IDs deleted.
    pub deleted: Vec<Digest>,
    /// Content swept.
    pub sweep: SweepReport,
}

/// The 12-digit short form of an ID, as docker prints it.
pub fn short_id(d: &Digest) -> String {
    d.digest().chars().take(12).collect()
}

/// Whether a descriptor is something GC understands as a root.
pub fn is_root_descriptor(d: &Descriptor) -> bool {
    is_manifest(d.media_type()) || is_index(d.media_type())
}

impl Store {
    /// Removes volumes no container uses (`containers/*/state.json`, field `volumes`: names);
    /// returns their names and sizes. With `dry_run`, only lists them.
    pub fn prune_volumes(&self, dry_run: bool) -> Result<Vec<(String, u64)>> {
        let _lock = self.lock()?;
        let mut used: HashSet<String> = HashSet::new();
        if let Ok(rd) = fs::read_dir(self.path(CONTAINERS)) {
            for e in rd.filter_map(|e| e.ok()) {
                let Ok(b) = fs::read(e.path().join("state.json")) else { continue };
                let Ok(v) = serde_json::from_slice::<serde_json::Value>(&b) else { continue };
                if let Some(a) = v.get("volumes").and_then(|v| v.as_array()) {
                    used.extend(a.iter().filter_map(|s| s.as_str()).map(str::to_string));
                }
            }
        }
        let mut out = Vec::new();
        let Ok(rd) = fs::read_dir(self.path(crate::store::VOLUMES)) else { return Ok(out) };
        for e in rd.filter_map(|e| e.ok()) {
            let name = e.file_name().to_string_lossy().into_owned();
            if used.contains(&name) {
                continue;
            }
            let size = du(&e.path());
            if !dry_run {
                let tmp = self.tmp_path("delete");
                fs::rename(e.path(), &tmp).map_err(|err| crate::Error::io("cannot remove volume", e.path(), err))?;
                fsutil::remove_tree(&tmp)?;
            }
            out.push((name, size));
        }
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Fake(HashMap<Node, Vec<Node>>);
    impl Graph for Fake {
        fn children(&self, n: &Node) -> Vec<Node> {
            self.0.get(n).cloned().unwrap_or_default()
        }
    }

    fn b(s: &str) -> Node {
        Node::Blob(digest::sha256(s.as_bytes()))
    }
    fn s(x: &str) -> Node {
        Node::Snapshot(digest::sha256(x.as_bytes()))
    }

    #[test]
    fn mark_follows_manifests_configs_and_shares() {
        let mut g = HashMap::new();
        g.insert(b("m1"), vec![b("c1"), b("l1"), b("l2")]);
        g.insert(b("m2"), vec![b("c2"), b("l2")]);
        g.insert(b("c1"), vec![s("d1"), s("d2")]);
        g.insert(b("c2"), vec![s("d2")]);
        g.insert(b("idx"), vec![b("m1")]);
        let g = Fake(g);
        let live = mark(&g, [b("m2")]);
        assert!(live.contains(&b("l2")) && live.contains(&s("d2")));
        assert!(!live.contains(&b("l1")) && !live.contains(&s("d1")) && !live.contains(&b("m1")));
        let live = mark(&g, [b("idx")]);
        assert!(live.contains(&s("d1")) && live.contains(&b("m1")) && !live.contains(&b("m2")));
        assert!(mark(&g, []).is_empty());
    }

    #[test]
    fn mark_survives_cycles() {
        let mut g = HashMap::new();
        g.insert(b("a"), vec![b("b")]);
        g.insert(b("b"), vec![b("a")]);
        assert_eq!(mark(&Fake(g), [b("a")]).len(), 2);
    }
}
