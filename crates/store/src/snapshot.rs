//! Snapshots: one unpacked layer each, under `snapshots/<diff-id hex>/` with `fs/` (the tree in
//! overlay form) and `files` (its [`FileIndex`]). A snapshot depends only on its layer, so all
//! layers of an image unpack at once on the rayon pool. Each one is built under `tmp/`, checked
//! against the config's diff ID, synced, and renamed into place whole; deletion renames it back
//! into `tmp/` before removing, so a crash never leaves half a snapshot under `snapshots/`.
//!
//! Mounting is not done here: [`Store::snapshot_mounts`] returns the lower directories as data
//! and the runtime calls mount(2).

use std::fs;
use std::io::BufWriter;
use std::path::PathBuf;

use oci_spec::image::Descriptor;
use rayon::prelude::*;

use crate::digest::{self, Digest};
use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::fileindex::{FileIndex, IndexSummary};
use crate::fsutil;
use crate::image::{layer_compression, Image};
use crate::store::{Lease, Store, SNAPSHOTS};
use crate::unpack::{self, Format};

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
        lease.add(diff_id)?;
        let dest = self.snapshot_path(diff_id)?;
        if dest.join(INDEX_FILE).exists() {
            // The snapshot exists, but this blob may be new: a tampered layer must not pass for
            // an existing one just by naming its diff ID.
            self.verify_source(layer, diff_id, &dest)?;
            return FileIndex::read_summary(&dest.join(INDEX_FILE));
        }
        layer_compression(layer.media_type())?;
        let what = format!("layer {}", layer.digest());
        let blob = self.blob(layer.digest()).map_err(|e| e.context(&what))?;
        let tmp = self.tmp_path("unpack");
        let res = (|| {
            let fsdir = tmp.join(FS_DIR);
            fs::create_dir_all(&fsdir).at("cannot create", &fsdir)?;
            let index = unpack::unpack_layer(&blob, &fsdir, Format::Overlay, &what)?;
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
            let f = w.into_inner().map_err(|e| Error::io("cannot write", &ipath, e.into_error()))?;
            // One syncfs makes the whole unpacked tree durable before it becomes visible, at a
            // fraction of the cost of an fsync per file.
            rustix::fs::syncfs(&f).map_err(|e| Error::io("cannot sync", &ipath, e.into()))?;
            drop(f);
            match fs::rename(&tmp, &dest) {
                Ok(()) => {}
                // Another process finished the same snapshot first: theirs is as good.
                Err(e) if dest.join(INDEX_FILE).exists() => {
                    let _ = e;
                    fsutil::remove_tree(&tmp)?;
                }
                Err(e) => return Err(Error::io("cannot move snapshot into place", &dest, e)),
            }
            fsutil::sync_dir(&self.path(SNAPSHOTS))?;
            Ok(IndexSummary {
                entries: index.entries.len() as u64,
                content_bytes: index.content_bytes,
                tar_bytes: index.tar_bytes,
                created: index.created,
                diff_id: index.diff_id,
            })
        })();
        if res.is_err() {
            let _ = fsutil::remove_tree(&tmp);
        }
        res
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

    /// Unpacks every layer of `image` that has no snapshot yet, all at once on the rayon pool.
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
        layers
            .par_iter()
            .zip(diff_ids.par_iter())
            .with_max_len(1)
            .map(|(l, d)| self.unpack_snapshot(l, d, lease))
            .collect()
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
