//! Commit: a container's writable layer (an overlayfs upper directory) becomes a new layer on top
//! of its image. The upper directory is written as a tar stream (whiteouts and opaque
//! directories in their OCI form, xattrs kept: [`crate::import::tar_upper`]) straight through the
//! compressor into a verified ingest while its diff ID is hashed; the config is the parent's with
//! the new diff ID, a history entry and the `--change` instructions applied; the new layer is
//! unpacked into its snapshot so the committed image runs at once.

use std::io::Write;
use std::path::Path;

use oci_spec::image::{Config, MediaType};
use serde_json::Value;

use crate::archive::{canonical_json, LEASE_TTL};
use crate::digest::HashingWriter;
use crate::error::{Error, IoContext, Result};
use crate::image::{Compression, Image};
use crate::import::{apply_changes, descriptor, finish_image, tar_upper};
use crate::reference::Reference;
use crate::store::{now_unix, Store};

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
    // The tar stream goes two ways at once: through the compressor into the layer blob, and
    // into the unpacker that builds the new layer's snapshot (so the blob is not read back).
    let (pipe_r, pipe_w) = std::io::pipe().at("cannot make a pipe under", &tmp_dir)?;
    let (blob_res, snap_res) = std::thread::scope(|s| {
        let unpacker = s.spawn(|| store.unpack_stream_snapshot(Box::new(pipe_r), &lease));
        let blob_res = write_layer(store, upper, opts.compression, pipe_w, &lease, &tmp_dir);
        let snap_res = unpacker.join().unwrap_or_else(|_| Err(Error::invalid_content("the unpacker panicked")));
        (blob_res, snap_res)
    });
    let (diff_id, layer, media_type) = blob_res?;
    let snap_diff_id = snap_res?;
    if snap_diff_id != diff_id {
        return Err(Error::invalid_content(format!(
            "the new layer hashed to {diff_id} but unpacked as {snap_diff_id} (the container changed during the commit?)"
        )));
    }
    store.add_snapshot_source(&diff_id, &layer.digest)?;

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

/// Writes to two writers; the second one is dropped (closed) on the first error it gives, so a
/// reader that stopped does not stop the layer.
struct Tee<A: Write, B: Write> {
    a: A,
    b: Option<B>,
}

impl<A: Write, B: Write> Write for Tee<A, B> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.a.write(buf)?;
        if let Some(b) = &mut self.b {
            if b.write_all(&buf[..n]).is_err() {
                self.b = None;
            }
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.a.flush()
    }
}

/// Tars `upper` into a new layer blob (compressed) and into `copy`; returns the diff ID, the
/// committed blob and its media type.
fn write_layer(
    store: &Store,
    upper: &Path,
    compression: Compression,
    copy: std::io::PipeWriter,
    lease: &crate::store::Lease,
    tmp_dir: &Path,
) -> Result<(crate::Digest, crate::blob::Committed, MediaType)> {
    let ingest = store.ingest()?;
    match compression {
        Compression::Zstd => {
            let enc = zstd::stream::write::Encoder::new(ingest, 3).at("cannot start zstd for", tmp_dir)?;
            let tee = Tee { a: HashingWriter::new(enc), b: Some(copy) };
            let tee = tar_upper(upper, tee)?;
            let (diff_id, _, enc) = tee.a.finish();
            drop(tee.b);
            let ingest = enc.finish().at("cannot write the layer blob under", tmp_dir)?;
            Ok((diff_id, ingest.commit(None, None, lease)?, MediaType::ImageLayerZstd))
        }
        Compression::Gzip | Compression::None => {
            // Level 1, on every core: commit writes whatever the container wrote, often already
            // compressed or random data, where higher levels cost several times the time for
            // little gain.
            let enc = crate::pgzip::ParallelGzWriter::new(ingest, flate2::Compression::fast());
            let tee = Tee { a: HashingWriter::new(enc), b: Some(copy) };
            let tee = tar_upper(upper, tee)?;
            let (diff_id, _, enc) = tee.a.finish();
            drop(tee.b);
            let ingest = enc.finish().at("cannot write the layer blob under", tmp_dir)?;
            Ok((diff_id, ingest.commit(None, None, lease)?, MediaType::ImageLayerGzip))
        }
    }
}
