//! Snapshots: one unpacked layer each, under `snapshots/<diff-id hex>/` with `fs/` (the tree in
//! overlay form) and `files` (its [`FileIndex`]). A snapshot depends only on its layer, so all
//! layers of an image unpack at once on a rayon pool. Each one is built under `tmp/`, checked
//! against the config's diff ID, synced, and renamed into place whole; deletion renames it back
//! into `tmp/` before removing, so a crash never leaves half a snapshot under `snapshots/`.
//!
//! Mounting is not done here: [`Store::snapshot_mounts`] returns the lower directories as data
//! and the runtime calls mount(2).

use std::fs;
use std::io::BufWriter;
use std::path::PathBuf;

use oci_spec::image::Descriptor;

use crate::digest::{self, Digest};
use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::fileindex::{FileIndex, IndexSummary};
use crate::fsutil;
use crate::image::{layer_compression, Image};
use crate::store::{Lease, Store, SNAPSHOTS};
use crate::unpack::{self, Format};

/// What preparing one layer gave.
enum Outcome {
    /// The snapshot existed (and this blob is a verified source of it).
    Exists(IndexSummary),
    /// Unpacked under `tmp`, to be renamed to `dest`.
    Prepared { tmp: PathBuf, dest: PathBuf, summary: IndexSummary },
}

/// Runs `f` in a FIFO scope of the pool [`Store::unpack_layers`] runs layers on: two more
/// threads than there are CPUs, at least 4 (a pull downloads 3 layers at once by default, and
/// each must be followed as it arrives), at most 8. Measured on 2 cores (pull of a 6-layer
/// Debian image): 2 at once (the CPU-sized global pool this replaced) 1.54–1.62 s, 3–6 at once
/// 1.26–1.50 s. Where the pool's threads cannot be started, the global pool does the work.
fn unpack_scope<'scope, F: FnOnce(&rayon::ScopeFifo<'scope>) + Send>(f: F) {
    match unpack_pool() {
        Some(pool) => pool.scope_fifo(f),
        None => rayon::scope_fifo(f),
    }
}

fn unpack_pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: std::sync::OnceLock<Option<rayon::ThreadPool>> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        rayon::ThreadPoolBuilder::new()
            .num_threads((cpus + 2).clamp(4, 8))
            .thread_name(|i| format!("strata-unpack-{i}"))
            .build()
            .ok()
    })
    .as_ref()
}

/// Where [`Store::unpack_layers`] reads a layer's blob from.
pub enum LayerSource {
    /// The blob is in the store.
    Stored,
    /// The blob is arriving (a download being ingested): the layer is unpacked from this reader
    /// as the bytes land. The reader must return end-of-file only once the blob is committed to
    /// the store with its digest verified, and fail otherwise (a [`crate::blob::Follower`] does).
    Stream(Box<dyn std::io::BufRead + Send>),
}

/// File names inside a snapshot.
pub const FS_DIR: &str = "fs";
/// The index file of a snapshot.
pub const INDEX_FILE: &str = "files";
/// The layer blobs known to unpack to a snapshot, one digest a line.
pub const SOURCES_FILE: &str = "sources";

impl Store {
    /// Whether the snapshot for `diff_id` is complete in the store.
    pub fn has_snapshot(&self, diff_id: &Digest) -> bool {
        self.snapshot_path(diff_id).map(|p| p.join(INDEX_FILE).exists()).unwrap_or(false)
    }

    /// Unpacks layer `layer` into the snapshot for `diff_id` unless it exists; returns its summary.
    pub fn unpack_snapshot(&self, layer: &Descriptor, diff_id: &Digest, lease: &Lease) -> Result<IndexSummary> {
        let mut out = self.unpack_layers(&[(layer.clone(), diff_id.clone())], lease, |_| Ok(LayerSource::Stored))?;
        Ok(out.remove(0))
    }

    /// Unpacks every layer of `image` that has no snapshot yet, all at once (see
    /// [`Store::unpack_layers`]).
    pub fn unpack_image(&self, image: &Image, lease: &Lease) -> Result<Vec<IndexSummary>> {
        let diff_ids = image.diff_ids()?;
        let layers = image.manifest.layers();
        if diff_ids.len() != layers.len() {
            return Err(Error::invalid_content(format!(
                "image {}: the manifest lists {} layers but the config has {} diff IDs",
                image.digest(),
                layers.len(),
                diff_ids.len()
            )));
        }
        let pairs: Vec<(Descriptor, Digest)> = layers.iter().cloned().zip(diff_ids).collect();
        self.unpack_layers(&pairs, lease, |_| Ok(LayerSource::Stored))
    }

    /// Unpacks layers `(blob descriptor, diff ID)` into their snapshots, all at once on a pool of
    /// their own ([`unpack_scope`]), largest first (so that no big layer is left to run alone at
    /// the end). `before` runs first in each layer's task and says where the blob comes from: a
    /// load uses it to copy the layer's blob into the store, so copying one layer overlaps
    /// unpacking another; a pull hands back a reader of the download, so each layer unpacks while
    /// it downloads.
    ///
    /// Nothing becomes visible until every layer succeeded: each is unpacked under `tmp/`, then one
    /// `syncfs` makes them all durable, then each is renamed into `snapshots/`. On an error every
    /// unpacked tree is removed. Returns the summaries in the order given.
    pub fn unpack_layers<F>(
        &self,
        layers: &[(Descriptor, Digest)],
        lease: &Lease,
        before: F,
    ) -> Result<Vec<IndexSummary>>
    where
        F: Fn(&Descriptor) -> Result<LayerSource> + Sync,
    {
        let mut order: Vec<usize> = (0..layers.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(layers[i].0.size()));
        let results: Vec<std::sync::Mutex<Option<Result<Outcome>>>> =
            layers.iter().map(|_| std::sync::Mutex::new(None)).collect();
        let failed = std::sync::atomic::AtomicBool::new(false);
        // A flusher thread runs `syncfs` whenever a layer is done, so the disk writes earlier layers
        // while the CPU unpacks later ones, and the final `syncfs` below has little left to wait for.
        let tmp_dir = self.path(crate::store::TMP);
        let tmp_fd = fs::File::open(&tmp_dir).at("cannot open", &tmp_dir)?;
        let (kick, kicks) = std::sync::mpsc::channel::<()>();
        std::thread::scope(|ts| {
            let fd = &tmp_fd;
            ts.spawn(move || {
                while kicks.recv().is_ok() {
                    while kicks.try_recv().is_ok() {}
                    let _ = rustix::fs::syncfs(fd);
                }
            });
            // Each layer's task blocks on I/O (the download it follows, direct writes), so the
            // tasks run on a pool of their own, wider than the CPU-sized global one: with two
            // workers on two cores, the third layer to arrive waited for one of the first two to
            // be unpacked, and the pull ended on a serial unpack tail.
            unpack_scope(|s| {
                for &i in &order {
                    let (results, failed, before, kick) = (&results, &failed, &before, kick.clone());
                    s.spawn_fifo(move |_| {
                        if failed.load(std::sync::atomic::Ordering::Relaxed) {
                            return;
                        }
                        let (layer, diff_id) = &layers[i];
                        let r = before(layer).and_then(|src| self.prepare_snapshot(layer, diff_id, lease, src));
                        match &r {
                            Ok(Outcome::Prepared { .. }) => {
                                let _ = kick.send(());
                            }
                            Ok(Outcome::Exists(_)) => {}
                            Err(_) => failed.store(true, std::sync::atomic::Ordering::Relaxed),
                        }
                        *results[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
                    });
                }
            });
            drop(kick);
        });
        let outcomes: Vec<Option<Result<Outcome>>> =
            results.into_iter().map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner())).collect();
        if failed.into_inner() {
            let mut first = None;
            for o in outcomes.into_iter().flatten() {
                match o {
                    Ok(Outcome::Prepared { tmp, .. }) => {
                        let _ = fsutil::remove_tree(&tmp);
                    }
                    Ok(Outcome::Exists(_)) => {}
                    Err(e) => {
                        first.get_or_insert(e);
                    }
                }
            }
            return Err(first.expect("a failed layer left its error"));
        }
        let outcomes: Vec<Outcome> =
            outcomes.into_iter().map(|o| o.expect("every layer ran").expect("no error")).collect();
        if outcomes.iter().any(|o| matches!(o, Outcome::Prepared { .. })) {
            // This syncfs makes every unpacked tree durable before any becomes visible, at a
            // fraction of the cost of an fsync per file.
            rustix::fs::syncfs(&tmp_fd).map_err(|e| Error::io("cannot sync", &tmp_dir, e.into()))?;
        }
        let mut summaries = Vec::with_capacity(outcomes.len());
        let mut renamed = false;
        for o in outcomes {
            match o {
                Outcome::Exists(s) => summaries.push(s),
                Outcome::Prepared { tmp, dest, summary } => {
                    match fs::rename(&tmp, &dest) {
                        Ok(()) => renamed = true,
                        // Another process finished the same snapshot first: theirs is as good.
                        Err(_) if dest.join(INDEX_FILE).exists() => fsutil::remove_tree(&tmp)?,
                        Err(e) => return Err(Error::io("cannot move snapshot into place", &dest, e)),
                    }
                    summaries.push(summary);
                }
            }
        }
        if renamed {
            fsutil::sync_dir(&self.path(SNAPSHOTS))?;
        }
        Ok(summaries)
    }

    /// Checks that layer blob `layer` really has diff ID `diff_id` (by decompressing and hashing
    /// it) unless the snapshot already lists it as a source; records it when it does.
    fn verify_source(&self, layer: &Descriptor, diff_id: &Digest, snapshot: &std::path::Path) -> Result<()> {
        let sources_path = snapshot.join(SOURCES_FILE);
        let sources = fs::read_to_string(&sources_path).unwrap_or_default();
        let me = layer.digest().to_string();
        if layer.digest() == diff_id || sources.lines().any(|l| l == me) {
            return Ok(());
        }
        let what = format!("layer {}", layer.digest());
        let blob = self.blob(layer.digest()).map_err(|e| e.context(&what))?;
        let bad =
            |e: std::io::Error| Error::invalid_content(format!("{what}: corrupt compressed stream")).with_source(e);
        let mut r = digest::HashingReader::new(unpack::decoder(&blob).map_err(bad)?);
        std::io::copy(&mut r, &mut std::io::sink()).map_err(bad)?;
        let (got, _) = r.finish();
        if &got != diff_id {
            return Err(Error::new(
                ErrorKind::DigestMismatch,
                format!(
                    "{what}: uncompressed content hashes to {got}, but the image config says diff ID {diff_id} (corrupt or tampered image)"
                ),
            ));
        }
        fsutil::write_atomic(&sources_path, format!("{sources}{me}\n").as_bytes(), 0o644)
    }

    /// Unpacks one layer under `tmp/` (or checks the existing snapshot's source).
    fn prepare_snapshot(
        &self,
        layer: &Descriptor,
        diff_id: &Digest,
        lease: &Lease,
        source: LayerSource,
    ) -> Result<Outcome> {
        lease.add(diff_id)?;
        let dest = self.snapshot_path(diff_id)?;
        let what = format!("layer {}", layer.digest());
        if dest.join(INDEX_FILE).exists() {
            if let LayerSource::Stream(mut r) = source {
                // Wait for the blob to be stored (verified) before checking it against the snapshot.
                std::io::copy(&mut r, &mut std::io::sink())
                    .map_err(|e| Error::invalid_content(format!("{what}: transfer failed")).with_source(e))?;
            }
            // The snapshot exists, but this blob may be new: a tampered layer must not pass for
            // an existing one just by naming its diff ID.
            self.verify_source(layer, diff_id, &dest)?;
            return FileIndex::read_summary(&dest.join(INDEX_FILE)).map(Outcome::Exists);
        }
        layer_compression(layer.media_type())?;
        let blob = match source {
            LayerSource::Stored => Some(self.blob(layer.digest()).map_err(|e| e.context(&what))?),
            LayerSource::Stream(_) => None,
        };
        let mut stream = match source {
            LayerSource::Stream(r) => Some(r),
            LayerSource::Stored => None,
        };
        let tmp = self.tmp_path("unpack");
        let res = (|| {
            let fsdir = tmp.join(FS_DIR);
            fs::create_dir_all(&fsdir).at("cannot create", &fsdir)?;
            let bytes = match (&blob, stream.take()) {
                (Some(b), _) => unpack::LayerBytes::Slice(b),
                (None, Some(r)) => unpack::LayerBytes::Stream(r),
                (None, None) => unreachable!("a layer has a blob or a stream"),
            };
            let index = unpack::unpack_layer_from(bytes, &fsdir, Format::Overlay, &what)?;
            if &index.diff_id != diff_id {
                return Err(Error::new(
                    ErrorKind::DigestMismatch,
                    format!(
                        "{what}: uncompressed content hashes to {}, but the image config says diff ID {diff_id} (corrupt or tampered image)",
                        index.diff_id
                    ),
                ));
            }
            fs::write(tmp.join(SOURCES_FILE), format!("{}\n", layer.digest())).at("cannot write", &tmp)?;
            let ipath = tmp.join(INDEX_FILE);
            let f = fs::File::create(&ipath).at("cannot create", &ipath)?;
            let mut w = BufWriter::with_capacity(1 << 20, f);
            index.write_to(&mut w).at("cannot write", &ipath)?;
            w.into_inner().map_err(|e| Error::io("cannot write", &ipath, e.into_error()))?;
            Ok(IndexSummary {
                entries: index.entries.len() as u64,
                content_bytes: index.content_bytes,
                tar_bytes: index.tar_bytes,
                created: index.created,
                diff_id: index.diff_id,
            })
        })();
        match res {
            Ok(summary) => Ok(Outcome::Prepared { tmp, dest, summary }),
            Err(e) => {
                let _ = fsutil::remove_tree(&tmp);
                Err(e)
            }
        }
    }

    /// Unpacks the plain tar stream `tar` (a layer being written, such as a commit's) under
    /// `tmp/`; the caller hashes the same stream and names the snapshot with
    /// [`NewSnapshot::finish`]. Dropped unfinished, the tree is removed.
    pub(crate) fn unpack_tar_snapshot(&self, tar: impl std::io::Read, what: &str) -> Result<NewSnapshot<'_>> {
        let mut snap =
            NewSnapshot { store: self, tmp: Some(self.tmp_path("unpack")), entries: Vec::new(), content_bytes: 0 };
        let fsdir = snap.tmp().join(FS_DIR);
        fs::create_dir_all(&fsdir).at("cannot create", &fsdir)?;
        (snap.entries, snap.content_bytes) = unpack::unpack_tar(tar, &fsdir, Format::Overlay, what)?;
        Ok(snap)
    }

    /// Records that layer blob `blob` is known to unpack to snapshot `diff_id` (so it is not
    /// decompressed again to check).
    pub fn add_snapshot_source(&self, diff_id: &Digest, blob: &Digest) -> Result<()> {
        let p = self.snapshot_path(diff_id)?.join(SOURCES_FILE);
        let sources = fs::read_to_string(&p).unwrap_or_default();
        let me = blob.to_string();
        if sources.lines().any(|l| l == me) {
            return Ok(());
        }
        fsutil::write_atomic(&p, format!("{sources}{me}\n").as_bytes(), 0o644)
    }

    /// Reads a snapshot's full file index.
    pub fn file_index(&self, diff_id: &Digest) -> Result<FileIndex> {
        let p = self.snapshot_path(diff_id)?.join(INDEX_FILE);
        if !p.exists() {
            return Err(Error::not_found(format!("no snapshot for layer {diff_id} (run `strata system check --repair`, then load or pull the image again)")));
        }
        FileIndex::read(&p)
    }

    /// Reads a snapshot's summary (size, entries) without its entries.
    pub fn snapshot_summary(&self, diff_id: &Digest) -> Result<IndexSummary> {
        FileIndex::read_summary(&self.snapshot_path(diff_id)?.join(INDEX_FILE))
    }

    /// The diff IDs of every snapshot directory (complete or not) in the store.
    pub fn list_snapshots(&self) -> Result<Vec<Digest>> {
        let dir = self.path(SNAPSHOTS);
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).at("cannot read", &dir)? {
            let e = e.at("cannot read", &dir)?;
            if let Some(d) = e.file_name().to_str().and_then(|n| digest::from_hex(n).ok()) {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// Removes a snapshot: renamed into `tmp/` first (atomic), then deleted.
    pub(crate) fn delete_snapshot(&self, diff_id: &Digest) -> Result<()> {
        let p = self.snapshot_path(diff_id)?;
        let tmp = self.tmp_path("delete");
        match fs::rename(&p, &tmp) {
            Ok(()) => fsutil::remove_tree(&tmp),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("cannot remove snapshot", p, e)),
        }
    }

    /// The lower directories of an image's root filesystem for an overlay mount, topmost first
    /// (the order of overlayfs `lowerdir=`).
    pub fn snapshot_mounts(&self, image: &Image) -> Result<Vec<PathBuf>> {
        let mut dirs = Vec::new();
        for d in image.diff_ids()?.iter().rev() {
            if !self.has_snapshot(d) {
                return Err(Error::not_found(format!("layer {d} of image {} is not unpacked", image.id())));
            }
            dirs.push(self.snapshot_path(d)?.join(FS_DIR));
        }
        Ok(dirs)
    }
}

/// A layer unpacked under `tmp/` from a stream hashed elsewhere ([`Store::unpack_tar_snapshot`]).
pub(crate) struct NewSnapshot<'s> {
    store: &'s Store,
    /// Where it is being built; `None` once moved into place.
    tmp: Option<PathBuf>,
    entries: Vec<crate::fileindex::FileEntry>,
    content_bytes: u64,
}

impl NewSnapshot<'_> {
    fn tmp(&self) -> &std::path::Path {
        self.tmp.as_deref().expect("not yet moved into place")
    }

    /// Makes it the snapshot of `diff_id`, unpacked from layer blob `source`. `diff_id` and
    /// `tar_bytes` must be the hash and length of exactly the stream that was unpacked. As in
    /// [`Store::unpack_layers`], the index and sources are written, everything is synced, and
    /// only then is the tree renamed into `snapshots/` (its index there marks it complete); an
    /// existing snapshot of the same diff ID wins and gets `source` added.
    pub(crate) fn finish(mut self, diff_id: &Digest, tar_bytes: u64, source: &Digest, lease: &Lease) -> Result<()> {
        lease.add(diff_id)?;
        let tmp = self.tmp().to_path_buf();
        let index = FileIndex {
            diff_id: diff_id.clone(),
            content_bytes: self.content_bytes,
            tar_bytes,
            created: crate::store::now_unix(),
            entries: std::mem::take(&mut self.entries),
        };
        let ipath = tmp.join(INDEX_FILE);
        let f = fs::File::create(&ipath).at("cannot create", &ipath)?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        index.write_to(&mut w).at("cannot write", &ipath)?;
        w.into_inner().map_err(|e| Error::io("cannot write", &ipath, e.into_error()))?;
        fs::write(tmp.join(SOURCES_FILE), format!("{source}\n")).at("cannot write", &tmp)?;
        // One syncfs makes the whole tree durable before it becomes visible, at a fraction of the
        // cost of an fsync per file.
        let tmp_dir = self.store.path(crate::store::TMP);
        let tmp_fd = fs::File::open(&tmp_dir).at("cannot open", &tmp_dir)?;
        rustix::fs::syncfs(&tmp_fd).map_err(|e| Error::io("cannot sync", &tmp_dir, e.into()))?;
        let dest = self.store.snapshot_path(diff_id)?;
        match fs::rename(&tmp, &dest) {
            Ok(()) => {
                self.tmp = None;
                fsutil::sync_dir(&self.store.path(SNAPSHOTS))
            }
            Err(_) if dest.join(INDEX_FILE).exists() => self.store.add_snapshot_source(diff_id, source),
            Err(e) => Err(Error::io("cannot move snapshot into place", &dest, e)),
        }
    }
}

impl Drop for NewSnapshot<'_> {
    fn drop(&mut self) {
        if let Some(tmp) = &self.tmp {
            let _ = fsutil::remove_tree(tmp);
        }
    }
}
