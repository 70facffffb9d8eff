//! Push: blobs first (config and layers, concurrently), then the manifest.
//!
//! Each blob is HEADed first: a registry that has it gets nothing (so pushing a new tag of an
//! image it holds transfers no layer). Otherwise a cross-repository mount is tried from the
//! other repositories of the same registry that name this image locally, and only then is the
//! blob uploaded: small blobs in one PUT, large ones in PATCH chunks (at least the registry's
//! `OCI-Chunk-Min-Length`, halved on a 413).
//!
//! **Resumable**: after every chunk the upload session's URL and offset are written to the
//! store's `tmp/partial/`. The next push of the same blob asks the registry where that session
//! stands (`GET` of the upload URL, its `Range` header) and sends only the rest. A session the
//! registry forgot (`BLOB_UPLOAD_UNKNOWN`) or a commit whose answer was lost makes us HEAD the
//! blob before starting over, since it may have landed.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use oci_spec::image::{Descriptor, ImageManifest, MediaType};
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION, RANGE};
use reqwest::StatusCode;
use strata_store::digest::{self, Digest};
use strata_store::image::{docker, layer_compression, Compression};
use strata_store::{Image, Lease, Reference, Store};

use crate::errcode::ErrorCode;
use crate::error::{Error, ErrorKind, Result};
use crate::progress::{Event, LayerStatus, Progress};
use crate::transport::{read_capped, Scope};
use crate::Client;

/// How to push.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Re-compress layers to this before pushing (`None`: push the stored blobs as they are).
    pub compression: Option<Compression>,
    /// Blobs uploaded at once.
    pub concurrency: usize,
    /// Blobs larger than this are uploaded in chunks of this size (resumable); smaller ones in
    /// one request.
    pub chunk_size: u64,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions { compression: None, concurrency: 3, chunk_size: 32 << 20 }
    }
}

/// What a push did.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// The manifest digest the registry holds.
    pub digest: Digest,
    /// The manifest's size.
    pub size: u64,
}

/// A kept upload session.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Session {
    location: String,
    offset: u64,
}

fn protocol(msg: String) -> Error {
    Error::new(ErrorKind::Protocol, msg)
}

/// Where the session of blob `d` to `registry/repository` is kept.
fn session_path(store: &Store, r: &Reference, d: &Digest) -> PathBuf {
    let key = digest::sha256(format!("{}/{}@{d}", r.registry(), r.repository()).as_bytes());
    store.root().join(strata_store::blob::PARTIAL).join(format!("push-{}.json", key.digest()))
}

fn load_session(path: &std::path::Path) -> Option<Session> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn save_session(path: &std::path::Path, s: &Session) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::new(ErrorKind::Store, format!("cannot create {}", dir.display())).with_source(e))?;
    }
    let bytes = serde_json::to_vec(s).expect("a session serialises");
    strata_store::fsutil::write_atomic(path, &bytes, 0o600)?;
    Ok(())
}

/// The end offset (exclusive) a `Range: 0-N` header names.
fn range_end(h: &reqwest::header::HeaderMap) -> Option<u64> {
    let v = h.get(RANGE)?.to_str().ok()?;
    let v = v.strip_prefix("bytes=").unwrap_or(v);
    let end: u64 = v.split('-').nth(1)?.trim().parse().ok()?;
    Some(end + 1)
}

/// Absolute upload URL from a `Location` (which may be relative).
fn absolute(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        location.to_string()
    } else if location.starts_with('/') {
        format!("{base}{location}")
    } else {
        format!("{base}/{location}")
    }
}

fn with_query(url: &str, kv: &str) -> String {
    format!("{url}{}{kv}", if url.contains('?') { "&" } else { "?" })
}

/// The OCI layer media type for a compression.
fn oci_layer_type(c: Compression) -> MediaType {
    match c {
        Compression::Gzip => MediaType::ImageLayerGzip,
        Compression::Zstd => MediaType::ImageLayerZstd,
        Compression::None => MediaType::ImageLayer,
    }
}

impl Client {
    /// Pushes `image` to `target` (its tag, or its digest when the reference has no tag).
    pub fn push(
        &self,
        store: &Store,
        image: &Image,
        target: &Reference,
        opts: &PushOptions,
        progress: Progress,
    ) -> Result<Pushed> {
        let lease = store.lease(Duration::from_secs(6 * 3600))?;
        let (manifest_bytes, media_type, manifest) = match opts.compression {
            Some(c) => self.recompressed(store, image, c, &lease)?,
            None => {
                let bytes = store.read_verified(image.digest())?;
                (bytes, image.descriptor.media_type().clone(), image.manifest.clone())
            }
        };
        // Other repositories of the same registry that name this image: mount sources.
        let sources: Vec<String> = image
            .tags
            .iter()
            .filter(|t| t.registry() == target.registry() && t.repository() != target.repository())
            .map(|t| t.repository().to_string())
            .collect();
        let mut blobs: Vec<Descriptor> = vec![manifest.config().clone()];
        for l in manifest.layers() {
            if !blobs.iter().any(|b| b.digest() == l.digest()) {
                blobs.push(l.clone());
            }
        }
        for b in &blobs {
            progress(Event::Layer { digest: b.digest().clone(), size: b.size(), status: LayerStatus::Waiting });
        }
        let cancel = AtomicBool::new(false);
        self.block_on(async {
            let sem = tokio::sync::Semaphore::new(opts.concurrency.max(1));
            let futs = blobs.iter().map(|b| {
                let (sem, sources, cancel) = (&sem, &sources, &cancel);
                async move {
                    let _p = sem.acquire().await.map_err(|_| protocol("cancelled".into()))?;
                    if cancel.load(Ordering::Relaxed) {
                        return Err(Error::new(ErrorKind::Io, "transfer cancelled because another one failed"));
                    }
                    let r = self.push_blob(store, target, b, sources, opts, progress).await;
                    if r.is_err() {
                        cancel.store(true, Ordering::Relaxed);
                    }
                    r
                }
            });
            let results = futures_util::future::join_all(futs).await;
            let mut errs = results.into_iter().filter_map(|r| r.err());
            let first = errs.next();
            match first {
                Some(e) if e.message().starts_with("transfer cancelled") => Err(errs.next().unwrap_or(e)),
                Some(e) => Err(e),
                None => Ok(()),
            }
        })?;
        let digest = self.block_on(self.put_manifest(target, &manifest_bytes, &media_type))?;
        Ok(Pushed { digest, size: manifest_bytes.len() as u64 })
    }

    /// The image with its layers re-compressed to `c`, as an OCI manifest: new blobs are written
    /// to the store (under `lease`); the config and diff IDs stay as they are.
    fn recompressed(
        &self,
        store: &Store,
        image: &Image,
        c: Compression,
        lease: &Lease,
    ) -> Result<(Vec<u8>, MediaType, ImageManifest)> {
        let mut layers = Vec::new();
        for l in image.manifest.layers() {
            let have = layer_compression(l.media_type())?;
            if have == c {
                let mut d = l.clone();
                d.set_media_type(oci_layer_type(c));
                layers.push(d);
                continue;
            }
            let blob = store.blob(l.digest())?;
            let mut input = strata_store::unpack::decoder(&blob).map_err(|e| {
                Error::new(ErrorKind::Store, format!("layer {}: corrupt compressed stream", l.digest())).with_source(e)
            })?;
            let mut ingest = store.ingest()?;
            let fail = |e: std::io::Error| {
                Error::new(ErrorKind::Store, format!("cannot re-compress layer {}", l.digest())).with_source(e)
            };
            match c {
                Compression::Zstd => {
                    let mut enc = zstd::stream::write::Encoder::new(&mut ingest, 3).map_err(fail)?;
                    std::io::copy(&mut input, &mut enc).map_err(fail)?;
                    enc.finish().map_err(fail)?;
                }
                Compression::Gzip => {
                    let mut enc = flate2::write::GzEncoder::new(&mut ingest, flate2::Compression::new(6));
                    std::io::copy(&mut input, &mut enc).map_err(fail)?;
                    enc.finish().map_err(fail)?;
                }
                Compression::None => {
                    std::io::copy(&mut input, &mut ingest).map_err(fail)?;
                }
            }
            let done = ingest.commit(None, None, lease)?;
            layers.push(Descriptor::new(oci_layer_type(c), done.size, done.digest));
        }
        let mut m = image.manifest.clone();
        m.set_media_type(Some(MediaType::ImageManifest));
        let mut cfg = m.config().clone();
        if cfg.media_type() == &MediaType::Other(docker::CONFIG.to_string()) {
            cfg.set_media_type(MediaType::ImageConfig);
        }
        m.set_config(cfg);
        m.set_layers(layers);
        let bytes = serde_json::to_vec(&m).map_err(|e| protocol(format!("cannot encode manifest: {e}")))?;
        store.write_blob(&bytes, None, lease)?;
        Ok((bytes, MediaType::ImageManifest, m))
    }

    /// HEAD of a blob in `r`'s repository.
    pub(crate) async fn blob_exists(&self, r: &Reference, d: &Digest, scope: &Scope) -> Result<bool> {
        let repo = r.repository();
        let resp =
            self.transport.send(r.registry(), scope, |c, base| c.head(format!("{base}/v2/{repo}/blobs/{d}"))).await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.transport.error_for(r.registry(), resp, &format!("checking blob {d}")).await),
        }
    }

    /// Pushes one blob (see the module documentation).
    async fn push_blob(
        &self,
        store: &Store,
        r: &Reference,
        desc: &Descriptor,
        sources: &[String],
        opts: &PushOptions,
        progress: Progress<'_>,
    ) -> Result<()> {
        let spath = session_path(store, r, desc.digest());
        let bytes = || -> Result<Bytes> { Ok(Bytes::from_owner(store.blob(desc.digest())?)) };
        self.upload_blob(r, desc, &bytes, sources, Some(&spath), opts.chunk_size, progress).await.map(drop)
    }

    /// Uploads one blob whose bytes `bytes` gives (called only if it must be sent), unless the
    /// registry has it or can mount it from one of `sources`. The session is kept at `spath`.
    /// Returns false when the registry had the blob already.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn upload_blob(
        &self,
        r: &Reference,
        desc: &Descriptor,
        bytes: &(dyn Fn() -> Result<Bytes> + Sync),
        sources: &[String],
        spath: Option<&std::path::Path>,
        chunk_size: u64,
        progress: Progress<'_>,
    ) -> Result<bool> {
        let d = desc.digest();
        let size = desc.size();
        let (reg, repo) = (r.registry(), r.repository());
        let mut scope = Scope::push(repo);
        for s in sources {
            scope = scope.and_pull(s);
        }
        let ev = |status| progress(Event::Layer { digest: d.clone(), size, status });
        if self.blob_exists(r, d, &scope).await? {
            if let Some(p) = spath {
                let _ = std::fs::remove_file(p);
            }
            ev(LayerStatus::Exists);
            return Ok(false);
        }
        let base = self.transport.base(reg).await?;
        let forget = || {
            if let Some(p) = spath {
                let _ = std::fs::remove_file(p);
            }
        };
        // A session kept from an interrupted push: where does the registry stand?
        let mut session = match spath.and_then(load_session) {
            Some(s) => match self.upload_status(r, &scope, &s.location).await? {
                Some(offset) => Some(Session { location: s.location, offset }),
                None => {
                    forget();
                    if self.blob_exists(r, d, &scope).await? {
                        ev(LayerStatus::Exists);
                        return Ok(false);
                    }
                    None
                }
            },
            None => None,
        };
        let mut min_chunk = 0u64;
        if session.is_none() {
            for from in sources {
                let resp = self
                    .transport
                    .send(reg, &scope, |c, base| {
                        c.post(format!("{base}/v2/{repo}/blobs/uploads/?mount={d}&from={from}"))
                            .header(CONTENT_LENGTH, "0")
                    })
                    .await?;
                if resp.status() == StatusCode::CREATED {
                    ev(LayerStatus::Mounted { from: from.clone() });
                    return Ok(true);
                }
                if resp.status() == StatusCode::ACCEPTED {
                    // Not mountable from there; the registry opened an upload session instead.
                    // Keep the latest one for the upload, cancel the one before (as docker does)
                    // and try the next source.
                    if let Some(loc) = resp.headers().get(LOCATION).and_then(|v| v.to_str().ok()) {
                        min_chunk = chunk_min(resp.headers());
                        let new = Session { location: absolute(&base, loc), offset: 0 };
                        if let Some(old) = session.replace(new) {
                            let _ = self.transport.send(reg, &scope, |c, _| c.delete(&old.location)).await;
                        }
                    }
                }
            }
        }
        let blob = bytes()?;
        if blob.len() as u64 != size {
            return Err(Error::new(
                ErrorKind::Store,
                format!("blob {d} has {} bytes but its descriptor says {size}", blob.len()),
            ));
        }
        let mut restarted = false;
        loop {
            let mut s = match session.take() {
                Some(s) => s,
                None => {
                    let resp = self
                        .transport
                        .send(reg, &scope, |c, base| {
                            c.post(format!("{base}/v2/{repo}/blobs/uploads/")).header(CONTENT_LENGTH, "0")
                        })
                        .await?;
                    if resp.status() != StatusCode::ACCEPTED {
                        return Err(self.transport.error_for(reg, resp, &format!("starting the upload of {d}")).await);
                    }
                    min_chunk = chunk_min(resp.headers());
                    let loc =
                        resp.headers().get(LOCATION).and_then(|v| v.to_str().ok()).ok_or_else(|| {
                            protocol(format!("the registry opened an upload of {d} without a Location"))
                        })?;
                    Session { location: absolute(&base, loc), offset: 0 }
                }
            };
            ev(LayerStatus::Transferring { from: s.offset });
            match self.upload(r, &scope, d, &blob, &mut s, spath, chunk_size.max(min_chunk), progress).await {
                Ok(()) => {
                    forget();
                    ev(LayerStatus::Complete);
                    return Ok(true);
                }
                Err(UploadError::Lost) if !restarted => {
                    // The session is gone or the commit's answer was lost: the blob may be there.
                    forget();
                    if self.blob_exists(r, d, &scope).await? {
                        ev(LayerStatus::Complete);
                        return Ok(true);
                    }
                    restarted = true;
                }
                Err(UploadError::Lost) => {
                    return Err(protocol(format!("the registry lost the upload of blob {d} twice; push again")))
                }
                Err(UploadError::Fatal(e)) => return Err(e),
            }
        }
    }

    /// Where upload session `location` stands: `Some(offset)`, or `None` if the registry no
    /// longer knows it.
    async fn upload_status(&self, r: &Reference, scope: &Scope, location: &str) -> Result<Option<u64>> {
        let resp = self.transport.send(r.registry(), scope, |c, _| c.get(location)).await?;
        match resp.status() {
            StatusCode::NO_CONTENT | StatusCode::OK => Ok(Some(range_end(resp.headers()).unwrap_or(0))),
            StatusCode::NOT_FOUND => Ok(None),
            _ => {
                let e = self.transport.error_for(r.registry(), resp, "checking an upload").await;
                if e.kind() == ErrorKind::NotFound {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Sends the blob from `s.offset` on, and commits it.
    #[allow(clippy::too_many_arguments)]
    async fn upload(
        &self,
        r: &Reference,
        scope: &Scope,
        d: &Digest,
        blob: &Bytes,
        s: &mut Session,
        spath: Option<&std::path::Path>,
        chunk: u64,
        progress: Progress<'_>,
    ) -> std::result::Result<(), UploadError> {
        let reg = r.registry();
        let size = blob.len() as u64;
        let base = self.transport.base(reg).await?;
        let mut chunk = chunk.max(1 << 20);
        if s.offset == 0 && size <= chunk {
            // Monolithic: the whole blob in the commit.
            let url = with_query(&s.location, &format!("digest={d}"));
            let body = blob.clone();
            let resp = self
                .transport
                .send(reg, scope, |c, _| {
                    c.put(&url)
                        .header(CONTENT_TYPE, "application/octet-stream")
                        .header(CONTENT_LENGTH, size)
                        .body(body.clone())
                })
                .await;
            return self.committed(r, d, resp).await;
        }
        let mut resynced = false;
        while s.offset < size {
            let end = (s.offset + chunk).min(size);
            let body = blob.slice(s.offset as usize..end as usize);
            let (start, loc) = (s.offset, s.location.clone());
            let resp = self
                .transport
                .send(reg, scope, |c, _| {
                    c.patch(&loc)
                        .header(CONTENT_TYPE, "application/octet-stream")
                        .header(CONTENT_RANGE, format!("{start}-{}", end - 1))
                        .header(CONTENT_LENGTH, end - start)
                        .body(body.clone())
                })
                .await?;
            match resp.status() {
                StatusCode::ACCEPTED | StatusCode::NO_CONTENT | StatusCode::CREATED => {
                    if let Some(l) = resp.headers().get(LOCATION).and_then(|v| v.to_str().ok()) {
                        s.location = absolute(&base, l);
                    }
                    s.offset = range_end(resp.headers()).unwrap_or(end);
                    if let Some(p) = spath {
                        save_session(p, s)?;
                    }
                    resynced = false;
                    progress(Event::Bytes { digest: d.clone(), done: s.offset });
                }
                StatusCode::PAYLOAD_TOO_LARGE if chunk > (256 << 10) => chunk /= 2,
                StatusCode::RANGE_NOT_SATISFIABLE if !resynced => {
                    // Out of step (a retried PATCH that had landed): ask where we are, once.
                    resynced = true;
                    match self.upload_status(r, scope, &s.location).await? {
                        Some(o) => s.offset = o,
                        None => return Err(UploadError::Lost),
                    }
                    continue;
                }
                _ => {
                    let e = self.transport.error_for(reg, resp, &format!("uploading blob {d}")).await;
                    if e.kind() == ErrorKind::NotFound || e.message().contains(ErrorCode::BlobUploadUnknown.as_str()) {
                        return Err(UploadError::Lost);
                    }
                    return Err(e.into());
                }
            }
        }
        let url = with_query(&s.location, &format!("digest={d}"));
        let resp = self.transport.send(reg, scope, |c, _| c.put(&url).header(CONTENT_LENGTH, "0")).await;
        self.committed(r, d, resp).await
    }

    /// Checks a commit's answer.
    async fn committed(
        &self,
        r: &Reference,
        d: &Digest,
        resp: Result<reqwest::Response>,
    ) -> std::result::Result<(), UploadError> {
        let resp = match resp {
            Ok(r) => r,
            // No answer: the commit may or may not have landed.
            Err(e) if e.kind() == ErrorKind::Unreachable => return Err(UploadError::Lost),
            Err(e) => return Err(e.into()),
        };
        if resp.status() == StatusCode::CREATED || resp.status().is_success() {
            return Ok(());
        }
        let e = self.transport.error_for(r.registry(), resp, &format!("committing blob {d}")).await;
        if e.kind() == ErrorKind::NotFound || e.message().contains(ErrorCode::BlobUploadUnknown.as_str()) {
            return Err(UploadError::Lost);
        }
        Err(e.into())
    }

    /// PUTs the manifest; returns the digest the registry acknowledged.
    pub(crate) async fn put_manifest(&self, r: &Reference, bytes: &[u8], media_type: &MediaType) -> Result<Digest> {
        let (reg, repo) = (r.registry(), r.repository());
        let ours = digest::sha256(bytes);
        let at = match r.tag() {
            Some(t) => t.to_string(),
            None => ours.to_string(),
        };
        let body = Bytes::copy_from_slice(bytes);
        let mt = media_type.to_string();
        let resp = self
            .transport
            .send(reg, &Scope::push(repo), |c, base| {
                c.put(format!("{base}/v2/{repo}/manifests/{at}")).header(CONTENT_TYPE, mt.as_str()).body(body.clone())
            })
            .await?;
        if !resp.status().is_success() {
            return Err(self
                .transport
                .error_for(reg, resp, &format!("pushing the manifest of {}", r.familiar()))
                .await);
        }
        if let Some(theirs) = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|s| digest::parse(s).ok())
        {
            if theirs != ours {
                return Err(Error::new(
                    ErrorKind::DigestMismatch,
                    format!("the registry stored the manifest as {theirs}, but it hashes to {ours}"),
                ));
            }
        }
        let _ = read_capped(resp, 64 << 10).await;
        Ok(ours)
    }
}

/// The registry's minimum chunk size, when it states one.
fn chunk_min(h: &reqwest::header::HeaderMap) -> u64 {
    h.get("oci-chunk-min-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// How an upload attempt ended badly.
enum UploadError {
    /// The session is gone or the commit's outcome is unknown: HEAD the blob, maybe restart.
    Lost,
    /// Anything else.
    Fatal(Error),
}

impl From<Error> for UploadError {
    fn from(e: Error) -> Self {
        UploadError::Fatal(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_urls() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(RANGE, "0-1023".parse().unwrap());
        assert_eq!(range_end(&h), Some(1024));
        h.insert(RANGE, "bytes=0-9".parse().unwrap());
        assert_eq!(range_end(&h), Some(10));
        assert_eq!(
            absolute("http://h:5", "/v2/x/blobs/uploads/u?_state=a"),
            "http://h:5/v2/x/blobs/uploads/u?_state=a"
        );
        assert_eq!(absolute("http://h:5", "https://s3/x"), "https://s3/x");
        assert_eq!(with_query("http://h/u?_state=a", "digest=d"), "http://h/u?_state=a&digest=d");
        assert_eq!(with_query("http://h/u", "digest=d"), "http://h/u?digest=d");
    }
}
