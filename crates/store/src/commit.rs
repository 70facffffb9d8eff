//! Commit: a container's writable layer (an overlayfs upper directory) becomes a new layer on top
//! of its image. The upper directory is written once as a tar stream (whiteouts and opaque
//! directories in their OCI form, xattrs kept: [`crate::import::tar_upper`]), cut into shared
//! blocks ([`crate::blocks`]) that three threads consume at once from the same memory: one hashes
//! the diff ID, one compresses into a verified blob ingest, one unpacks the new layer's snapshot
//! (so the committed image runs at once, and the blob is not read back). Blob and snapshot are
//! made from the very same bytes, so they agree even if the container writes meanwhile. The
//! config is the parent's with the new diff ID, a history entry and the `--change` instructions
//! applied.
//!
//! Durability: the blob is fsynced and renamed into place by its ingest; the snapshot is built
//! under `tmp/`, synced with the rest of the file system and only then renamed into
//! `snapshots/`, naming the blob as its source; then config, manifest and tag follow.

use std::path::Path;
use std::sync::mpsc::Receiver;

use oci_spec::image::{Config, MediaType};
use serde_json::Value;

use crate::archive::{canonical_json, LEASE_TTL};
use crate::blocks::{self, Block, BlockReader};
use crate::error::{Error, IoContext, Result};
use crate::image::{Compression, Image};
use crate::import::{apply_changes, descriptor, finish_image, tar_upper};
use crate::reference::Reference;
use crate::store::{now_unix, Store};

/// Blocks (of [`blocks::BLOCK`]) queued for each consumer of the layer stream.
const QUEUE: usize = 4;

/// How to commit.
#[derive(Debug, Clone)]
pub struct CommitOptions {
    /// `-m`: the history entry's comment.
    pub message: Option<String>,
    /// `-a`: the image's author.
    pub author: Option<String>,
    /// `-c`: Dockerfile instructions applied to the config.
    pub changes: Vec<String>,
    /// Layer compression.
    pub compression: Compression,
    /// The history entry's `created_by` (the container's command, as docker records it).
    pub created_by: String,
}

/// Commits `upper` as a new layer on `parent`; tags the result `reference` when given.
pub fn commit(
    store: &Store,
    parent: &Image,
    upper: &Path,
    reference: Option<&Reference>,
    opts: &CommitOptions,
) -> Result<Image> {
    if let Some(r) = reference {
        crate::archive::check_taggable(r)?;
    }
    // The run config first: a bad --change fails before any work.
    let mut raw: Value = serde_json::from_slice(&parent.config_raw)
        .map_err(|e| Error::invalid_content(format!("config of image {}", parent.id())).with_source(e))?;
    let mut run_config: Config = match raw.get("config") {
        Some(v) if !v.is_null() => serde_json::from_value(v.clone())
            .map_err(|e| Error::invalid_content(format!("config of image {}", parent.id())).with_source(e))?,
        _ => Config::default(),
    };
    apply_changes(&mut run_config, &opts.changes)?;

    let lease = store.lease(LEASE_TTL)?;
    let tmp_dir = store.root().join(crate::store::TMP);
    let (writer, [to_hash, to_blob, to_unpack]) = blocks::fan_out::<3>(QUEUE);
    let (tarred, hashed, blob, snapshot) = std::thread::scope(|s| {
        let hasher = s.spawn(move || blocks::hash_blocks(to_hash));
        let blob = s.spawn(|| write_layer(store, opts.compression, to_blob, &lease, &tmp_dir));
        let unpacker = s.spawn(|| store.unpack_tar_snapshot(BlockReader::new(to_unpack), "the new layer"));
        let tarred = tar_upper(upper, writer).and_then(|w| w.finish().at("cannot write the tar stream of", upper));
        let panicked = || Error::invalid_content("a thread of the commit panicked");
        (
            tarred,
            hasher.join().unwrap_or_else(|_| Err(std::io::Error::other("the hasher panicked"))),
            blob.join().unwrap_or_else(|_| Err(panicked())),
            unpacker.join().unwrap_or_else(|_| Err(panicked())),
        )
    });
    // The writer's own error explains the consumers' cut streams; a consumer's own error
    // explains the writer's hang-up and the other consumers' cuts.
    if let Err(e) = tarred {
        if !blocks::caused_by::<blocks::HungUp>(&e) {
            return Err(e);
        }
    }
    let hashed = hashed.at("cannot hash the layer stream of", upper);
    let (diff_id, tar_bytes, layer, media_type, snapshot) = match (hashed, blob, snapshot) {
        (Ok((d, n)), Ok((l, m)), Ok(s)) => (d, n, l, m, s),
        (h, b, s) => {
            let mut failed: Vec<Error> = [b.err(), s.err(), h.err()].into_iter().flatten().collect();
            let own = failed.iter().position(|e| !blocks::caused_by::<blocks::Cut>(e)).unwrap_or(0);
            return Err(failed.swap_remove(own));
        }
    };
    snapshot.finish(&diff_id, tar_bytes, &layer.digest, &lease)?;

    let now = now_unix();
    let created = crate::time::format_rfc3339(now);
    let obj = raw.as_object_mut().ok_or_else(|| Error::invalid_content("the parent config is not an object"))?;
    obj.insert("created".into(), Value::String(created.clone()));
    if let Some(a) = &opts.author {
        obj.insert("author".into(), Value::String(a.clone()));
    }
    obj.insert(
        "config".into(),
        serde_json::to_value(&run_config).map_err(|e| Error::invalid_content("run config").with_source(e))?,
    );
    let rootfs = obj.entry("rootfs").or_insert_with(|| serde_json::json!({"type": "layers", "diff_ids": []}));
    match rootfs.get_mut("diff_ids").and_then(Value::as_array_mut) {
        Some(ids) => ids.push(Value::String(diff_id.to_string())),
        None => rootfs["diff_ids"] = serde_json::json!([diff_id.to_string()]),
    }
    let mut entry = serde_json::json!({"created": created, "created_by": opts.created_by});
    if let Some(m) = &opts.message {
        entry["comment"] = Value::String(m.clone());
    }
    if let Some(a) = &opts.author {
        entry["author"] = Value::String(a.clone());
    }
    match obj.get_mut("history").and_then(Value::as_array_mut) {
        Some(h) => h.push(entry),
        None => {
            obj.insert("history".into(), Value::Array(vec![entry]));
        }
    }
    let config_bytes = canonical_json(&raw)?;
    let config_blob = store.write_blob(&config_bytes, None, &lease)?;

    let mut layers = parent.manifest.layers().clone();
    layers.push(descriptor(media_type, layer.size, &layer.digest)?);
    finish_image(store, &config_blob, layers, reference, &lease, now, "commit")
}

/// Compresses the layer stream arriving on `rx` into a new blob; returns it and its media type.
fn write_layer(
    store: &Store,
    compression: Compression,
    rx: Receiver<Block>,
    lease: &crate::store::Lease,
    tmp_dir: &Path,
) -> Result<(crate::blob::Committed, MediaType)> {
    let ingest = store.ingest()?;
    let cut = |e: std::io::Error| Error::io("cannot write the layer blob under", tmp_dir, e);
    match compression {
        Compression::Zstd => {
            let mut enc = zstd::stream::write::Encoder::new(ingest, 3).at("cannot start zstd for", tmp_dir)?;
            while let Some(b) = blocks::next_block(&rx).map_err(cut)? {
                std::io::Write::write_all(&mut enc, &b).map_err(cut)?;
            }
            let ingest = enc.finish().map_err(cut)?;
            Ok((ingest.commit(None, None, lease)?, MediaType::ImageLayerZstd))
        }
        Compression::Gzip | Compression::None => {
            // Level 1, on every core: commit writes whatever the container wrote, often already
            // compressed or random data, where higher levels cost several times the time for
            // little gain.
            let mut enc = crate::pgzip::ParallelGzWriter::new(ingest, flate2::Compression::fast());
            while let Some(b) = blocks::next_block(&rx).map_err(cut)? {
                enc.write_block(b).map_err(cut)?;
            }
            let ingest = enc.finish().map_err(cut)?;
            Ok((ingest.commit(None, None, lease)?, MediaType::ImageLayerGzip))
        }
    }
}
