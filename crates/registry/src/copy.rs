//! Copy an image between registries and OCI layouts, blob by blob, never unpacking a layer and
//! never touching the store: `docker://REF`, `oci:DIR[:REF]`, `docker-archive:FILE[:REF]`.
//!
//! Registry to registry streams each blob from the GET straight into the PUT (or mounts it when
//! both are repositories of one registry); blobs the destination has are skipped after a HEAD.
//! Every blob written to a layout is hashed on the way and renamed into place only if it matches.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use futures_util::StreamExt;
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, MediaType};
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::StatusCode;
use strata_store::digest::{self, Digest, Hasher};
use strata_store::image::{docker, is_index, is_manifest, select_platform};
use strata_store::refs::REF_NAME;
use strata_store::Reference;

use crate::dockerarchive::{ArchiveSource, ArchiveWriter};
use crate::error::{Error, ErrorKind, Result};
use crate::manifest::{manifest_ref, media_type_of};
use crate::progress::{Event, LayerStatus, Progress};
use crate::transport::Scope;
use crate::Client;

/// One end of a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `docker://REF` (or a bare reference).
    Registry(Reference),
    /// `oci:DIR[:REF]`: an OCI image layout; REF is its `org.opencontainers.image.ref.name`.
    Layout {
        /// The layout's directory.
        dir: PathBuf,
        /// The ref name, if given.
        name: Option<String>,
    },
    /// `docker-archive:FILE[:REF]`: what `docker save` writes; REF is one of its `RepoTags`.
    Archive {
        /// The archive file.
        path: PathBuf,
        /// The tag, if given.
        name: Option<String>,
    },
}

impl Endpoint {
    /// Parses `docker://REF`, `oci:DIR[:REF]`, or a bare `REF`.
    pub fn parse(s: &str) -> Result<Endpoint> {
        if let Some(rest) = s.strip_prefix("docker://") {
            return Ok(Endpoint::Registry(Reference::parse(rest)?));
        }
        if let Some(rest) = s.strip_prefix("oci:") {
            // As skopeo: the directory ends at the first ':', the rest is the ref name (which may
            // hold '/' and ':', as docker.io/library/busybox:latest does).
            let (dir, name) = match rest.split_once(':') {
                Some((d, n)) => (d, Some(n.to_string())),
                None => (rest, None),
            };
            if dir.is_empty() {
                return Err(Error::new(ErrorKind::InvalidArgument, format!("{s:?}: expected oci:DIR[:REF]")));
            }
            return Ok(Endpoint::Layout { dir: PathBuf::from(dir), name: name.filter(|n| !n.is_empty()) });
        }
        if let Some(rest) = s.strip_prefix("docker-archive:") {
            let (path, name) = match rest.split_once(':') {
                Some((p, n)) => (p, Some(n.to_string()).filter(|n| !n.is_empty())),
                None => (rest, None),
            };
            if path.is_empty() {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    format!("{s:?}: expected docker-archive:FILE[:REF]"),
                ));
            }
            return Ok(Endpoint::Archive { path: PathBuf::from(path), name });
        }
        if let Some((scheme, _)) = s.split_once(':') {
            if ["oci-archive", "dir", "containers-storage", "docker-daemon"].contains(&scheme) {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    format!("{s:?}: the {scheme}: transport is not supported by copy; use docker://REF or oci:DIR[:REF] (strata load/save handle archives)"),
                ));
            }
        }
        Ok(Endpoint::Registry(Reference::parse(s)?))
    }
}

/// How to copy.
#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    /// Copy every platform of a multi-platform image (default: only `platform`'s).
    pub all: bool,
    /// `os/arch[/variant]` to pick from an index (default: the host's).
    pub platform: Option<String>,
}

/// What a copy did.
#[derive(Debug, Clone)]
pub struct Copied {
    /// The digest of the manifest (or index) written to the destination.
    pub digest: Digest,
    /// Blobs transferred.
    pub copied: usize,
    /// Blobs the destination had.
    pub skipped: usize,
}

/// A manifest or index with its bytes.
struct Raw {
    digest: Digest,
    media_type: MediaType,
    bytes: Vec<u8>,
}

fn layout_blob(dir: &Path, d: &Digest) -> Result<PathBuf> {
    Ok(dir.join("blobs").join(d.algorithm().to_string()).join(digest::hex(d)?))
}

fn io_err(what: &str, p: &Path, e: std::io::Error) -> Error {
    Error::new(ErrorKind::Io, format!("cannot {what} {}", p.display())).with_source(e)
}

fn read_layout_index(dir: &Path) -> Result<ImageIndex> {
    let p = dir.join("index.json");
    let bytes = std::fs::read(&p).map_err(|e| io_err("read", &p, e))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Error::new(ErrorKind::InvalidArgument, format!("{} is not an OCI image index", p.display())).with_source(e)
    })
}

/// The OCI media type for a Docker one (unchanged when it is not Docker's).
fn oci_media_type(mt: &str) -> Option<&'static str> {
    Some(match mt {
        docker::MANIFEST => "application/vnd.oci.image.manifest.v1+json",
        docker::MANIFEST_LIST => "application/vnd.oci.image.index.v1+json",
        docker::CONFIG => "application/vnd.oci.image.config.v1+json",
        docker::LAYER_GZIP => "application/vnd.oci.image.layer.v1.tar+gzip",
        docker::LAYER_TAR => "application/vnd.oci.image.layer.v1.tar",
        docker::LAYER_ZSTD => "application/vnd.oci.image.layer.v1.tar+zstd",
        docker::LAYER_FOREIGN_GZIP => "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        _ => return None,
    })
}

/// Rewrites the `mediaType` fields of a manifest or index (and of its descriptors) to OCI's.
fn convert_doc(bytes: &[u8], children: &std::collections::HashMap<String, (String, usize)>) -> Result<Option<Vec<u8>>> {
    let mut v: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| Error::new(ErrorKind::Protocol, "a manifest is not JSON").with_source(e))?;
    let mut changed = false;
    let mut fix = |d: &mut serde_json::Value| {
        if let Some(mt) = d.get("mediaType").and_then(|m| m.as_str()).and_then(oci_media_type) {
            d["mediaType"] = serde_json::Value::String(mt.to_string());
            changed = true;
        }
        if let Some((nd, size)) = d.get("digest").and_then(|x| x.as_str()).and_then(|x| children.get(x)) {
            d["digest"] = serde_json::Value::String(nd.clone());
            d["size"] = serde_json::json!(size);
            changed = true;
        }
    };
    fix(&mut v);
    if let Some(c) = v.get_mut("config") {
        fix(c);
    }
    for key in ["layers", "manifests"] {
        if let Some(list) = v.get_mut(key).and_then(|l| l.as_array_mut()) {
            list.iter_mut().for_each(&mut fix);
        }
    }
    if !changed {
        return Ok(None);
    }
    serde_json::to_vec(&v)
        .map(Some)
        .map_err(|e| Error::new(ErrorKind::Protocol, "cannot encode a manifest").with_source(e))
}

/// Docker schema 2 documents converted to OCI (children first, then the top that lists them).
fn to_oci(top: Raw, manifests: Vec<Raw>) -> Result<(Raw, Vec<Raw>)> {
    let mut renamed: std::collections::HashMap<String, (String, usize)> = std::collections::HashMap::new();
    let mut out = Vec::with_capacity(manifests.len());
    for m in manifests {
        match convert_doc(&m.bytes, &renamed)? {
            Some(bytes) => {
                let d = digest::sha256(&bytes);
                renamed.insert(m.digest.to_string(), (d.to_string(), bytes.len()));
                out.push(Raw { digest: d, media_type: media_type_of(None, &bytes)?, bytes });
            }
            None => out.push(m),
        }
    }
    let top = match convert_doc(&top.bytes, &renamed)? {
        Some(bytes) => Raw { digest: digest::sha256(&bytes), media_type: media_type_of(None, &bytes)?, bytes },
        None => top,
    };
    Ok((top, out))
}

/// A manifest or index of a layout by digest, verified.
fn layout_manifest(dir: &Path, d: &Digest) -> Result<Raw> {
    let p = layout_blob(dir, d)?;
    let bytes = std::fs::read(&p).map_err(|e| io_err("read", &p, e))?;
    let got = digest::sha256(&bytes);
    if &got != d {
        return Err(Error::new(ErrorKind::DigestMismatch, format!("{} hashes to {got}, not {d}", p.display())));
    }
    let media_type = media_type_of(None, &bytes)?;
    Ok(Raw { digest: got, media_type, bytes })
}

/// A layout blob's bytes, mapped (an empty file, which cannot be mapped, is empty bytes).
fn map_blob(p: &Path) -> Result<Bytes> {
    let f = std::fs::File::open(p).map_err(|e| io_err("open", p, e))?;
    if f.metadata().map_err(|e| io_err("stat", p, e))?.len() == 0 {
        return Ok(Bytes::new());
    }
    // SAFETY: layout blobs are content-addressed files that nothing rewrites; every use checks
    // the digest (`layout_write` here, the registry on upload).
    let m = unsafe { memmap2::Mmap::map(&f) }.map_err(|e| io_err("map", p, e))?;
    Ok(Bytes::from_owner(m))
}

/// Writes `bytes` as blob `d` of a layout (verified), unless present.
fn layout_write(dir: &Path, d: &Digest, bytes: &[u8]) -> Result<()> {
    let got = digest::sha256(bytes);
    if &got != d {
        return Err(Error::new(ErrorKind::DigestMismatch, format!("blob {d}: content hashes to {got}")));
    }
    let p = layout_blob(dir, d)?;
    if p.exists() {
        return Ok(());
    }
    strata_store::fsutil::write_atomic(&p, bytes, 0o644)?;
    Ok(())
}

impl Client {
    /// Copies the image at `src` to `dst`.
    pub fn copy(&self, src: &Endpoint, dst: &Endpoint, opts: &CopyOptions, progress: Progress) -> Result<Copied> {
        let archive = match src {
            Endpoint::Archive { path, name } => {
                let oci = matches!(dst, Endpoint::Layout { .. });
                Some(ArchiveSource::open(path, name.as_deref(), oci)?)
            }
            _ => None,
        };
        let archive = archive.as_ref();
        if let Endpoint::Layout { dir, .. } = dst {
            let blobs = dir.join("blobs/sha256");
            std::fs::create_dir_all(&blobs).map_err(|e| io_err("create", &blobs, e))?;
            let ol = dir.join("oci-layout");
            if !ol.exists() {
                strata_store::fsutil::write_atomic(&ol, br#"{"imageLayoutVersion":"1.0.0"}"#, 0o644)?;
            }
        }
        self.block_on(async {
            let top = self.read_top(src, archive).await?;
            // The manifests to copy, children before the index that lists them.
            let mut manifests: Vec<Raw> = Vec::new();
            let mut put_top = true;
            if is_index(&top.media_type) {
                let idx: ImageIndex = serde_json::from_slice(&top.bytes)
                    .map_err(|e| Error::new(ErrorKind::Protocol, "the source index is malformed").with_source(e))?;
                if opts.all {
                    for d in idx.manifests() {
                        manifests.push(self.read_by_digest(src, d.digest(), archive).await?);
                    }
                } else {
                    let child = select_platform(&idx, opts.platform.as_deref()).map_err(Error::from)?;
                    manifests.push(self.read_by_digest(src, child.digest(), archive).await?);
                    put_top = false;
                }
            }
            let mut blobs: Vec<Descriptor> = Vec::new();
            for m in manifests.iter().chain(std::iter::once(&top)) {
                if !is_manifest(&m.media_type) {
                    continue;
                }
                let man: ImageManifest = serde_json::from_slice(&m.bytes).map_err(|e| {
                    Error::new(ErrorKind::Protocol, format!("manifest {} is malformed", m.digest)).with_source(e)
                })?;
                for b in std::iter::once(man.config()).chain(man.layers().iter()) {
                    if !blobs.iter().any(|x| x.digest() == b.digest()) {
                        blobs.push(b.clone());
                    }
                }
            }
            if let Endpoint::Archive { path, name } = dst {
                if put_top && is_index(&top.media_type) {
                    return Err(Error::new(
                        ErrorKind::InvalidArgument,
                        "a docker archive holds one platform of an image: copy without --all (and --platform to choose)",
                    ));
                }
                let m = if put_top { &top } else { manifests.last().expect("one manifest chosen") };
                let tag = match (name, src) {
                    (Some(n), _) => Some(Reference::parse(n)?),
                    (None, Endpoint::Registry(r)) if r.tag().is_some() => Some(r.clone()),
                    _ => None,
                };
                let n = blobs.len();
                let man: ImageManifest = serde_json::from_slice(&m.bytes)
                    .map_err(|e| Error::new(ErrorKind::Protocol, format!("manifest {} is malformed", m.digest)).with_source(e))?;
                let layers: Vec<Digest> = man.layers().iter().map(|l| l.digest().clone()).collect();
                self.write_archive(src, archive, path, &blobs, &layers, tag.as_ref(), progress).await?;
                return Ok(Copied { digest: m.digest.clone(), copied: n, skipped: 0 });
            }
            let sem = tokio::sync::Semaphore::new(3);
            let cancel = AtomicBool::new(false);
            let results = futures_util::future::join_all(blobs.iter().map(|b| {
                let (sem, cancel) = (&sem, &cancel);
                async move {
                    let _p = sem.acquire().await.map_err(|_| Error::new(ErrorKind::Io, "cancelled"))?;
                    if cancel.load(Ordering::Relaxed) {
                        return Err(Error::new(ErrorKind::Io, "transfer cancelled because another one failed"));
                    }
                    let r = self.copy_blob(src, archive, dst, b, progress).await;
                    if r.is_err() {
                        cancel.store(true, Ordering::Relaxed);
                    }
                    r
                }
            }))
            .await;
            let (mut copied, mut skipped) = (0, 0);
            let mut first_err = None;
            for r in results {
                match r {
                    Ok(true) => copied += 1,
                    Ok(false) => skipped += 1,
                    Err(e) => {
                        if first_err.is_none()
                            || first_err.as_ref().is_some_and(|f: &Error| f.message().starts_with("transfer cancelled"))
                        {
                            first_err = Some(e);
                        }
                    }
                }
            }
            if let Some(e) = first_err {
                return Err(e);
            }
            let (top, manifests) = if matches!(dst, Endpoint::Layout { .. }) {
                // An OCI layout's readers (skopeo, umoci) expect OCI documents: Docker schema 2
                // manifests and lists are converted, as `skopeo copy … oci:` does (their
                // digests change; the config and layers stay byte for byte).
                to_oci(top, manifests)?
            } else {
                (top, manifests)
            };
            let last = if put_top { &top } else { manifests.last().expect("one manifest chosen") };
            for m in &manifests {
                if !std::ptr::eq(m, last) {
                    self.write_manifest(dst, m, false).await?;
                }
            }
            self.write_manifest(dst, last, true).await?;
            Ok(Copied { digest: last.digest.clone(), copied, skipped })
        })
    }

    /// The manifest or index `src` names.
    async fn read_top(&self, src: &Endpoint, archive: Option<&ArchiveSource>) -> Result<Raw> {
        match src {
            Endpoint::Archive { .. } => {
                let a = archive.expect("an archive source is opened first");
                Ok(Raw { digest: a.digest.clone(), media_type: a.media_type.clone(), bytes: a.manifest.clone() })
            }
            Endpoint::Registry(r) => {
                let f = self.get_manifest(r, &manifest_ref(r), r.digest()).await?;
                Ok(Raw { digest: f.digest, media_type: f.media_type, bytes: f.bytes })
            }
            Endpoint::Layout { dir, name } => {
                let idx = read_layout_index(dir)?;
                let found: Vec<&Descriptor> = idx
                    .manifests()
                    .iter()
                    .filter(|d| match name {
                        Some(n) => d.annotations().as_ref().and_then(|a| a.get(REF_NAME)) == Some(n),
                        None => true,
                    })
                    .collect();
                let d = match (found.len(), name) {
                    (1, _) => found[0],
                    (0, Some(n)) => {
                        return Err(Error::new(
                            ErrorKind::NotFound,
                            format!("no image named {n:?} in the layout {}", dir.display()),
                        ))
                    }
                    _ => {
                        return Err(Error::new(
                            ErrorKind::InvalidArgument,
                            format!(
                                "the layout {} holds {} images: name one with oci:DIR:REF",
                                dir.display(),
                                found.len()
                            ),
                        ))
                    }
                };
                layout_manifest(dir, d.digest())
            }
        }
    }

    /// A manifest or index of `src` by digest, verified.
    async fn read_by_digest(&self, src: &Endpoint, d: &Digest, archive: Option<&ArchiveSource>) -> Result<Raw> {
        match src {
            Endpoint::Archive { .. } => {
                let top = self.read_top(src, archive).await?;
                if &top.digest != d {
                    return Err(Error::new(ErrorKind::NotFound, format!("manifest {d} is not in the archive")));
                }
                Ok(top)
            }
            Endpoint::Registry(r) => {
                let f = self.get_manifest(r, d.as_ref(), Some(d)).await?;
                Ok(Raw { digest: f.digest, media_type: f.media_type, bytes: f.bytes })
            }
            Endpoint::Layout { dir, .. } => layout_manifest(dir, d),
        }
    }

    /// Copies one blob; returns false when the destination had it.
    async fn copy_blob(
        &self,
        src: &Endpoint,
        archive: Option<&ArchiveSource>,
        dst: &Endpoint,
        b: &Descriptor,
        progress: Progress<'_>,
    ) -> Result<bool> {
        let d = b.digest();
        let ev = |status| progress(Event::Layer { digest: d.clone(), size: b.size(), status });
        match dst {
            Endpoint::Registry(to) => {
                // Local sources go through the push path, which HEADs, reports and uploads.
                match src {
                    Endpoint::Registry(from) => {
                        if self.blob_exists(to, d, &Scope::push(to.repository())).await? {
                            ev(LayerStatus::Exists);
                            return Ok(false);
                        }
                        self.stream_between(from, to, b, progress).await?;
                        ev(LayerStatus::Complete);
                        Ok(true)
                    }
                    Endpoint::Archive { .. } => {
                        let a = archive.expect("an archive source is opened first");
                        let bytes = || a.blob(d);
                        self.upload_blob(to, b, &bytes, &[], None, 32 << 20, progress).await
                    }
                    Endpoint::Layout { dir, .. } => {
                        let p = layout_blob(dir, d)?;
                        let bytes = || -> Result<Bytes> { map_blob(&p) };
                        self.upload_blob(to, b, &bytes, &[], None, 32 << 20, progress).await
                    }
                }
            }
            Endpoint::Layout { dir, .. } => {
                let dest = layout_blob(dir, d)?;
                if dest.exists() {
                    ev(LayerStatus::Exists);
                    return Ok(false);
                }
                ev(LayerStatus::Transferring { from: 0 });
                match src {
                    Endpoint::Layout { dir: sdir, .. } => {
                        // Mapped, not read into memory: layers can be large.
                        layout_write(dir, d, &map_blob(&layout_blob(sdir, d)?)?)?;
                    }
                    Endpoint::Registry(from) => self.download_to_layout(from, b, &dest, progress).await?,
                    Endpoint::Archive { .. } => {
                        let a = archive.expect("an archive source is opened first");
                        layout_write(dir, d, &a.blob(d)?)?;
                    }
                }
                ev(LayerStatus::Complete);
                Ok(true)
            }
            Endpoint::Archive { .. } => unreachable!("archives are written by write_archive"),
        }
    }

    /// Writes `blobs` (config first) from `src` into a new docker archive at `path`, in order;
    /// `layers` is the manifest's layer list for `manifest.json`.
    #[allow(clippy::too_many_arguments)]
    async fn write_archive(
        &self,
        src: &Endpoint,
        archive: Option<&ArchiveSource>,
        path: &Path,
        blobs: &[Descriptor],
        layers: &[Digest],
        tag: Option<&Reference>,
        progress: Progress<'_>,
    ) -> Result<()> {
        let mut w = ArchiveWriter::create(path)?;
        for (i, b) in blobs.iter().enumerate() {
            let d = b.digest();
            progress(Event::Layer { digest: d.clone(), size: b.size(), status: LayerStatus::Transferring { from: 0 } });
            w.begin(b, i == 0)?;
            match src {
                Endpoint::Registry(from) => {
                    let resp = self.get_blob(from, d).await?;
                    let mut stream = resp.bytes_stream();
                    while let Some(chunk) = stream.next().await {
                        let chunk = chunk.map_err(|e| {
                            Error::new(
                                ErrorKind::Unreachable,
                                format!("blob {d}: transfer interrupted; run the copy again"),
                            )
                            .with_source(e)
                        })?;
                        w.write(&chunk)?;
                    }
                }
                Endpoint::Layout { dir, .. } => {
                    let p = layout_blob(dir, d)?;
                    let bytes = std::fs::read(&p).map_err(|e| io_err("read", &p, e))?;
                    w.write(&bytes)?;
                }
                Endpoint::Archive { .. } => {
                    let a = archive.expect("an archive source is opened first");
                    w.write(&a.blob(d)?)?;
                }
            }
            w.end()?;
            progress(Event::Layer { digest: d.clone(), size: b.size(), status: LayerStatus::Complete });
        }
        w.finish(tag, layers)
    }

    /// Registry to registry: a mount within one registry, else the GET's body streamed into a
    /// monolithic upload.
    async fn stream_between(
        &self,
        from: &Reference,
        to: &Reference,
        b: &Descriptor,
        progress: Progress<'_>,
    ) -> Result<()> {
        let d = b.digest();
        let (treg, trepo) = (to.registry(), to.repository());
        let scope =
            if from.registry() == treg { Scope::push(trepo).and_pull(from.repository()) } else { Scope::push(trepo) };
        let frepo = from.repository();
        let resp = self
            .transport
            .send(treg, &scope, |c, base| {
                let url = if from.registry() == treg {
                    format!("{base}/v2/{trepo}/blobs/uploads/?mount={d}&from={frepo}")
                } else {
                    format!("{base}/v2/{trepo}/blobs/uploads/")
                };
                c.post(url).header(CONTENT_LENGTH, "0")
            })
            .await?;
        if resp.status() == StatusCode::CREATED {
            progress(Event::Layer {
                digest: d.clone(),
                size: b.size(),
                status: LayerStatus::Mounted { from: frepo.to_string() },
            });
            return Ok(());
        }
        if resp.status() != StatusCode::ACCEPTED {
            return Err(self.transport.error_for(treg, resp, &format!("starting the upload of {d}")).await);
        }
        let base = self.transport.base(treg).await?;
        let loc = resp.headers().get(LOCATION).and_then(|v| v.to_str().ok()).ok_or_else(|| {
            Error::new(ErrorKind::Protocol, format!("the registry opened an upload of {d} without a Location"))
        })?;
        let loc = if loc.starts_with("http") { loc.to_string() } else { format!("{base}{loc}") };
        let put = format!("{loc}{}digest={d}", if loc.contains('?') { "&" } else { "?" });
        let get = self.get_blob(from, d).await?;
        progress(Event::Layer { digest: d.clone(), size: b.size(), status: LayerStatus::Transferring { from: 0 } });
        let body = std::sync::Mutex::new(Some(reqwest::Body::wrap_stream(get.bytes_stream())));
        let resp = self
            .transport
            .send(treg, &scope, |c, _| {
                let rb = c.put(&put).header(CONTENT_TYPE, "application/octet-stream").header(CONTENT_LENGTH, b.size());
                match body.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    Some(body) => rb.body(body),
                    None => rb,
                }
            })
            .await?;
        if !resp.status().is_success() {
            return Err(self.transport.error_for(treg, resp, &format!("uploading blob {d}")).await);
        }
        Ok(())
    }

    /// A successful GET of blob `d` from `from`'s repository.
    async fn get_blob(&self, from: &Reference, d: &Digest) -> Result<reqwest::Response> {
        let repo = from.repository();
        let resp = self
            .transport
            .send(from.registry(), &Scope::pull(repo), |c, base| c.get(format!("{base}/v2/{repo}/blobs/{d}")))
            .await?;
        if !resp.status().is_success() {
            return Err(self
                .transport
                .error_for(from.registry(), resp, &format!("blob {d} of {}", from.familiar()))
                .await);
        }
        Ok(resp)
    }

    /// Registry to layout: streamed into a temp file beside the destination, hashed, renamed.
    async fn download_to_layout(
        &self,
        from: &Reference,
        b: &Descriptor,
        dest: &Path,
        progress: Progress<'_>,
    ) -> Result<()> {
        let d = b.digest();
        let resp = self.get_blob(from, d).await?;
        let dir = dest.parent().expect("a blob path has a parent");
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| io_err("create a file in", dir, e))?;
        let mut h = Hasher::new();
        let mut n = 0u64;
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                Error::new(ErrorKind::Unreachable, format!("blob {d}: transfer interrupted; run the copy again"))
                    .with_source(e)
            })?;
            h.update(&chunk);
            n += chunk.len() as u64;
            if n > b.size() {
                return Err(Error::new(ErrorKind::DigestMismatch, format!("blob {d}: more bytes than its size")));
            }
            tmp.write_all(&chunk).map_err(|e| io_err("write", tmp.path(), e))?;
            progress(Event::Bytes { digest: d.clone(), done: n });
        }
        let got = h.finish();
        if &got != d || n != b.size() {
            return Err(Error::new(
                ErrorKind::DigestMismatch,
                format!("blob {d}: the registry sent {n} bytes hashing to {got} (corrupt or tampered)"),
            ));
        }
        tmp.as_file().sync_all().map_err(|e| io_err("sync", tmp.path(), e))?;
        use std::os::unix::fs::PermissionsExt;
        let _ = tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644));
        tmp.persist(dest).map_err(|e| io_err("write", dest, e.error))?;
        Ok(())
    }

    /// Writes a manifest to the destination: by digest, or as the named image when `top`.
    async fn write_manifest(&self, dst: &Endpoint, m: &Raw, top: bool) -> Result<()> {
        match dst {
            Endpoint::Registry(to) => {
                let at = if top { to.clone() } else { Reference::parse(&format!("{}@{}", to.name(), m.digest))? };
                self.put_manifest(&at, &m.bytes, &m.media_type).await?;
                Ok(())
            }
            Endpoint::Archive { .. } => unreachable!("archives are written by write_archive"),
            Endpoint::Layout { dir, name } => {
                layout_write(dir, &m.digest, &m.bytes)?;
                if !top {
                    return Ok(());
                }
                // A missing index.json starts a new layout; an unreadable one is not replaced (it
                // lists images this copy knows nothing about).
                let mut idx = if dir.join("index.json").exists() {
                    read_layout_index(dir)?
                } else {
                    serde_json::from_str(r#"{"schemaVersion":2,"manifests":[]}"#).expect("valid empty index")
                };
                let mut list = idx.manifests().clone();
                let mut desc = Descriptor::new(m.media_type.clone(), m.bytes.len() as u64, m.digest.clone());
                if let Some(n) = name {
                    list.retain(|d| d.annotations().as_ref().and_then(|a| a.get(REF_NAME)) != Some(n));
                    desc.set_annotations(Some([(REF_NAME.to_string(), n.clone())].into_iter().collect()));
                } else {
                    list.retain(|d| d.digest() != &m.digest);
                }
                list.push(desc);
                idx.set_manifests(list);
                idx.set_media_type(Some(MediaType::ImageIndex));
                let bytes = serde_json::to_vec(&idx)
                    .map_err(|e| Error::new(ErrorKind::Io, "cannot encode index.json").with_source(e))?;
                strata_store::fsutil::write_atomic(&dir.join("index.json"), &bytes, 0o644)?;
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            Endpoint::parse("docker://busybox").unwrap(),
            Endpoint::Registry(Reference::parse("busybox").unwrap())
        );
        assert_eq!(Endpoint::parse("busybox:1").unwrap(), Endpoint::Registry(Reference::parse("busybox:1").unwrap()));
        assert_eq!(
            Endpoint::parse("oci:/tmp/x:v1").unwrap(),
            Endpoint::Layout { dir: "/tmp/x".into(), name: Some("v1".into()) }
        );
        assert_eq!(Endpoint::parse("oci:/tmp/x").unwrap(), Endpoint::Layout { dir: "/tmp/x".into(), name: None });
        assert_eq!(
            Endpoint::parse("oci:/tmp/x:docker.io/library/busybox:latest").unwrap(),
            Endpoint::Layout { dir: "/tmp/x".into(), name: Some("docker.io/library/busybox:latest".into()) }
        );
        assert_eq!(
            Endpoint::parse("docker-archive:/tmp/x.tar:busybox:1").unwrap(),
            Endpoint::Archive { path: "/tmp/x.tar".into(), name: Some("busybox:1".into()) }
        );
        assert!(Endpoint::parse("oci-archive:/tmp/x.tar").unwrap_err().to_string().contains("not supported"));
        assert!(Endpoint::parse("oci:").is_err());
    }
}
