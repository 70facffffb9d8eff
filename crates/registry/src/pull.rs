//! Pull: reference → manifest (through an index for the platform) → config and layers.
//!
//! The manifest is resolved with a HEAD first; when the store has that digest already, nothing
//! else is downloaded, so re-pulling an unchanged image costs one request (and no Docker Hub
//! pull). Missing layers download concurrently (bounded), each streamed into a resumable,
//! verified ingest of the store while the same bytes, followed from the file as they land, are
//! decompressed, hashed against the config's diff ID and untarred into the layer's snapshot, all
//! layers at once: when the last byte arrives, only that layer's tail is left to unpack.
//!
//! An interrupted blob keeps its bytes under the store's `tmp/partial/`; the next attempt (in
//! this process after a reset or stall, or in the next `pull` after a crash) asks for the rest
//! with a `Range` request. A registry that answers 200 instead of 206 is read from the start,
//! skipping what is kept. Nothing is tagged until every blob and snapshot is in place.

use std::collections::HashSet;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::Duration;

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, MediaType};
use reqwest::header::{CONTENT_RANGE, RANGE};
use reqwest::StatusCode;
use strata_store::blob::{Follower, Ingest};
use strata_store::digest::Digest;
use strata_store::image::{is_index, is_manifest, select_platform, Platform};
use strata_store::snapshot::LayerSource;
use strata_store::{Lease, Reference, Store};

use crate::error::{Error, ErrorKind, Result};
use crate::manifest::{media_type_of, Fetched};
use crate::progress::{Event, LayerStatus, Progress};
use crate::transport::Scope;
use crate::Client;

/// The annotation on a tag recording the digest the registry resolved it to (an index's, for a
/// multi-platform image), so that a re-pull recognises it from a HEAD alone.
pub const REPO_DIGEST: &str = "io.strata.repo-digest";

/// Downloaded bytes are written to the store in pieces of this size.
const WRITE_PIECE: usize = 512 << 10;

/// How to pull.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// `os/arch[/variant]`; the host's by default.
    pub platform: Option<String>,
    /// Layers downloaded at once (docker's max-concurrent-downloads, 3 by default).
    pub concurrency: usize,
    /// Tag the image when it is in place (`false`: only fetch it, for a caller that holds it
    /// with its own lease, as `strata diff docker://…` does).
    pub tag: bool,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions { platform: None, concurrency: 3, tag: true }
    }
}

/// What a pull did.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The reference pulled, normalised.
    pub reference: Reference,
    /// What the registry resolved it to (the index's digest for a multi-platform image).
    pub digest: Digest,
    /// The image's manifest descriptor, as tagged.
    pub manifest: Descriptor,
    /// The image ID (config digest).
    pub image_id: Digest,
    /// False when the store had the image under this reference already ("Image is up to date").
    pub updated: bool,
}

/// A resolved manifest.
struct Resolved {
    top: Digest,
    desc: Descriptor,
    manifest: ImageManifest,
    fetched: bool,
}

fn cancelled() -> Error {
    Error::new(ErrorKind::Io, "transfer cancelled because another one failed")
}

impl Client {
    /// Pulls `r` into `store`: resolves it, downloads what the store lacks, unpacks the layers
    /// while they download, then tags the image. See the module documentation.
    pub fn pull(&self, store: &Store, r: &Reference, opts: &PullOptions, progress: Progress) -> Result<Pulled> {
        let lease = store.lease(Duration::from_secs(6 * 3600))?;
        self.pull_leased(store, r, opts, progress, &lease)
    }

    /// [`Client::pull`] with the caller's lease holding what it fetches (which is all that
    /// holds it when `opts.tag` is false).
    pub fn pull_leased(
        &self,
        store: &Store,
        r: &Reference,
        opts: &PullOptions,
        progress: Progress,
        lease: &Lease,
    ) -> Result<Pulled> {
        let asked = opts.platform.as_deref().map(|p| Platform::parse(Some(p))).transpose()?;
        let res = self.block_on(self.resolve(store, r, opts.platform.as_deref(), lease, progress))?;
        let mut fetched = res.fetched;
        let cfg = res.manifest.config().clone();
        if !store.has_blob(cfg.digest()) {
            self.block_on(self.fetch_whole(store, r, &cfg, lease, progress))?;
            fetched = true;
        }
        lease.add(cfg.digest())?;
        let (config, _) = store.read_config(cfg.digest())?;
        if let Some(want) = &asked {
            let (os, arch) = (config.os().to_string(), config.architecture().to_string());
            if want.os != os || want.arch != arch {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "image {} was found but its platform ({os}/{arch}) does not match the specified platform ({want})",
                        r.familiar()
                    ),
                ));
            }
        }
        let diff_ids: Vec<Digest> = config
            .rootfs()
            .diff_ids()
            .iter()
            .map(|s| strata_store::digest::parse(s))
            .collect::<std::result::Result<_, _>>()?;
        let layers = res.manifest.layers();
        if diff_ids.len() != layers.len() {
            return Err(Error::new(
                ErrorKind::Protocol,
                format!(
                    "image {}: the manifest lists {} layers but the config has {} diff IDs",
                    r.familiar(),
                    layers.len(),
                    diff_ids.len()
                ),
            ));
        }
        let mut seen = HashSet::new();
        let pairs: Vec<(Descriptor, Digest)> =
            layers.iter().cloned().zip(diff_ids).filter(|(l, _)| seen.insert(l.digest().clone())).collect();
        let mut jobs = Vec::new();
        let mut waiting = Vec::new();
        let mut already = HashSet::new();
        for (l, diff_id) in &pairs {
            let status = if store.has_blob(l.digest()) {
                if store.has_snapshot(diff_id) {
                    already.insert(diff_id.clone());
                    LayerStatus::Exists
                } else {
                    LayerStatus::Verified
                }
            } else {
                let (tx, rx) = mpsc::sync_channel(1);
                jobs.push((l.clone(), tx));
                waiting.push((l.digest().clone(), Mutex::new(rx)));
                LayerStatus::Waiting
            };
            progress(Event::Layer { digest: l.digest().clone(), size: l.size(), status });
        }
        if !jobs.is_empty() {
            fetched = true;
        }
        jobs.sort_by_key(|(l, _)| std::cmp::Reverse(l.size()));
        let cancel = AtomicBool::new(false);
        let (downloaded, unpacked) = std::thread::scope(|ts| {
            let dl = ts.spawn(|| {
                let r = self.block_on(self.download_all(store, r, jobs, lease, opts.concurrency, progress, &cancel));
                if r.is_err() {
                    cancel.store(true, Ordering::Relaxed);
                }
                r
            });
            let unpacked = store.unpack_layers(&pairs, lease, |l| {
                let Some((_, rx)) = waiting.iter().find(|(d, _)| d == l.digest()) else {
                    return Ok(LayerSource::Stored);
                };
                let follower: Follower = rx.lock().unwrap_or_else(|e| e.into_inner()).recv().map_err(|_| {
                    strata_store::Error::invalid_content(format!("layer {}: download failed", l.digest()))
                })?;
                Ok(LayerSource::Stream(Box::new(follower)))
            });
            // An unpack failure does not cancel the downloads: they finish and are verified, so a
            // corrupt blob is reported as such (and its kept bytes dropped), and good blobs are
            // stored for the next attempt.
            (dl.join().unwrap_or_else(|_| Err(Error::new(ErrorKind::Io, "download thread panicked"))), unpacked)
        });
        // A download's own error says more than the unpack's view of it.
        downloaded?;
        unpacked.map_err(|e| Error::from(e).context(format!("pulling {}", r.familiar())))?;
        for (l, diff_id) in &pairs {
            if !already.contains(diff_id) {
                progress(Event::Layer { digest: l.digest().clone(), size: l.size(), status: LayerStatus::Complete });
            }
        }
        let mut desc = res.desc.clone();
        let mut ann = desc.annotations().clone().unwrap_or_default();
        ann.insert(REPO_DIGEST.to_string(), res.top.to_string());
        desc.set_annotations(Some(ann));
        let before = store
            .read_index()?
            .manifests()
            .iter()
            .find(|d| strata_store::refs::ref_name(d) == Some(r.to_string().as_str()))
            .map(|d| d.digest().clone());
        if opts.tag {
            store.tag(r, &desc)?;
        }
        Ok(Pulled {
            reference: r.clone(),
            digest: res.top,
            manifest: desc,
            image_id: cfg.digest().clone(),
            updated: fetched || before.as_ref() != Some(res.desc.digest()),
        })
    }

    /// Resolves `r` to a platform manifest, from the store where it can.
    async fn resolve(
        &self,
        store: &Store,
        r: &Reference,
        platform: Option<&str>,
        lease: &Lease,
        progress: Progress<'_>,
    ) -> Result<Resolved> {
        let mut fetched = false;
        let top = match r.digest() {
            Some(d) => d.clone(),
            None => {
                let head = self.head_manifest(r).await?;
                if let Some(rl) = head.rate_limit {
                    progress(Event::RateLimit { remaining: rl });
                }
                match head.digest {
                    Some(d) => d,
                    None => {
                        // No digest in the HEAD: fetch by tag.
                        let f = self.get_manifest(r, &crate::manifest::manifest_ref(r), None).await?;
                        store.write_blob(&f.bytes, Some(&f.digest), lease)?;
                        fetched = true;
                        f.digest
                    }
                }
            }
        };
        progress(Event::Resolved { digest: top.clone() });
        // A tag of this reference that was resolved to `top` before: the image is here.
        if let Some(desc) = self.known_locally(store, r, &top, platform)? {
            let manifest = store.read_manifest(desc.digest())?;
            lease.add(desc.digest())?;
            return Ok(Resolved { top, desc, manifest, fetched });
        }
        let top_m = self.manifest_bytes(store, r, &top, lease, &mut fetched).await?;
        let (desc, bytes) = if is_index(&top_m.media_type) {
            let idx: ImageIndex = serde_json::from_slice(&top_m.bytes).map_err(|e| {
                Error::new(ErrorKind::Protocol, format!("index {top} of {} is malformed", r.familiar())).with_source(e)
            })?;
            let child = select_platform(&idx, platform)
                .map_err(|e| Error::from(e).context(format!("image {}", r.familiar())))?
                .clone();
            let m = self.manifest_bytes(store, r, child.digest(), lease, &mut fetched).await?;
            if !is_manifest(&m.media_type) {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!(
                        "index {top} of {} points at another index; nested indexes are not supported",
                        r.familiar()
                    ),
                ));
            }
            (child, m.bytes)
        } else {
            let d = Descriptor::new(top_m.media_type.clone(), top_m.bytes.len() as u64, top.clone());
            (d, top_m.bytes)
        };
        let manifest: ImageManifest = serde_json::from_slice(&bytes).map_err(|e| {
            Error::new(ErrorKind::Protocol, format!("manifest {} of {} is malformed", desc.digest(), r.familiar()))
                .with_source(e)
        })?;
        Ok(Resolved { top, desc, manifest, fetched })
    }

    /// The tag's descriptor when this reference was resolved to `top` before and its manifest
    /// is stored (and matches `platform`, when one is asked for).
    fn known_locally(
        &self,
        store: &Store,
        r: &Reference,
        top: &Digest,
        platform: Option<&str>,
    ) -> Result<Option<Descriptor>> {
        let name = r.to_string();
        let idx = store.read_index()?;
        let found = idx.manifests().iter().find(|d| {
            strata_store::refs::ref_name(d) == Some(name.as_str())
                && d.annotations().as_ref().and_then(|a| a.get(REPO_DIGEST)).map(String::as_str)
                    == Some(top.to_string().as_str())
        });
        let want = Platform::parse(platform)?;
        // The stored child of the same index is only right if it is the platform wanted now
        // (the host's when none is named); a manifest without platform is the image itself.
        Ok(found
            .filter(|d| store.has_blob(d.digest()))
            .filter(|d| d.digest() == top || d.platform().is_none() || want.matches(d))
            .cloned())
    }

    /// A manifest or index by digest: from the store, else fetched, verified and stored.
    async fn manifest_bytes(
        &self,
        store: &Store,
        r: &Reference,
        d: &Digest,
        lease: &Lease,
        fetched: &mut bool,
    ) -> Result<Fetched> {
        if store.has_blob(d) {
            lease.add(d)?;
            let bytes = store.read_verified(d)?;
            let media_type = media_type_of(None, &bytes)?;
            return Ok(Fetched { digest: d.clone(), media_type, bytes, rate_limit: None });
        }
        let f = self.get_manifest(r, d.as_ref(), Some(d)).await?;
        store.write_blob(&f.bytes, Some(d), lease)?;
        *fetched = true;
        Ok(f)
    }

    /// Downloads a (small) blob whole into the store, verified.
    async fn fetch_whole(
        &self,
        store: &Store,
        r: &Reference,
        desc: &Descriptor,
        lease: &Lease,
        progress: Progress<'_>,
    ) -> Result<()> {
        let mut ingest = store.ingest()?;
        let never = AtomicBool::new(false);
        self.fetch_blob(r, desc, &mut ingest, progress, &never).await?;
        ingest.commit(Some(desc.digest()), Some(desc.size()), lease)?;
        Ok(())
    }

    /// Downloads the layer blobs of `jobs`, at most `concurrency` at once, largest first. Each
    /// job's channel gets a [`Follower`] of its ingest as soon as the transfer starts.
    #[allow(clippy::too_many_arguments)]
    async fn download_all(
        &self,
        store: &Store,
        r: &Reference,
        jobs: Vec<(Descriptor, mpsc::SyncSender<Follower>)>,
        lease: &Lease,
        concurrency: usize,
        progress: Progress<'_>,
        cancel: &AtomicBool,
    ) -> Result<()> {
        let sem = tokio::sync::Semaphore::new(concurrency.max(1));
        let futs = jobs.into_iter().map(|(desc, tx)| {
            let sem = &sem;
            async move {
                let _permit = sem.acquire().await.map_err(|_| cancelled())?;
                if cancel.load(Ordering::Relaxed) {
                    return Err(cancelled());
                }
                let d = desc.digest().clone();
                let mut ingest = store.resume_ingest(&d)?;
                let from = ingest.written();
                ingest.bulk()?;
                let follower = ingest.follow()?;
                let _ = tx.send(follower);
                progress(Event::Layer {
                    digest: d.clone(),
                    size: desc.size(),
                    status: LayerStatus::Transferring { from },
                });
                let res = self.fetch_blob(r, &desc, &mut ingest, progress, cancel).await;
                let res = res.and_then(|()| {
                    ingest
                        .commit(Some(&d), Some(desc.size()), lease)
                        .map_err(|e| Error::from(e).context(format!("layer {d} from {}", r.familiar())))
                });
                match res {
                    Ok(_) => {
                        progress(Event::Layer { digest: d, size: desc.size(), status: LayerStatus::Verified });
                        Ok(())
                    }
                    Err(e) => {
                        cancel.store(true, Ordering::Relaxed);
                        Err(e)
                    }
                }
            }
        });
        let results = futures_util::future::join_all(futs).await;
        // The first real error, not a "cancelled" that it caused.
        let mut first: Option<Error> = None;
        for e in results.into_iter().filter_map(|r| r.err()) {
            let is_cancel = e.message() == cancelled().message();
            match &first {
                None => first = Some(e),
                Some(f) if f.message() == cancelled().message() && !is_cancel => first = Some(e),
                _ => {}
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Streams blob `desc` of `r`'s repository into `ingest`, from what it holds already:
    /// retries resets, stalls and temporary statuses with backoff, resuming with `Range`.
    pub(crate) async fn fetch_blob(
        &self,
        r: &Reference,
        desc: &Descriptor,
        ingest: &mut Ingest<'_>,
        progress: Progress<'_>,
        cancel: &AtomicBool,
    ) -> Result<()> {
        let (reg, repo) = (r.registry(), r.repository());
        let d = desc.digest();
        let total = desc.size();
        let opts = &self.transport.options;
        let mut failures = 0u32;
        loop {
            let start = ingest.written();
            if start > total {
                return Err(Error::new(
                    ErrorKind::DigestMismatch,
                    format!("blob {d}: more bytes arrived than its size ({total})"),
                ));
            }
            if start == total && total > 0 {
                return Ok(());
            }
            let resp = self
                .transport
                .send(reg, &Scope::pull(repo), |c, base| {
                    let rb = c.get(format!("{base}/v2/{repo}/blobs/{d}"));
                    if start > 0 {
                        rb.header(RANGE, format!("bytes={start}-"))
                    } else {
                        rb
                    }
                })
                .await?;
            let status = resp.status();
            if !status.is_success() {
                return Err(self.transport.error_for(reg, resp, &format!("blob {d} of {}", r.familiar())).await);
            }
            // What to drop from the front of this response: all of what we hold when the
            // registry ignored the Range and sent the whole blob.
            let mut skip = 0u64;
            if start > 0 {
                let range_ok = status == StatusCode::PARTIAL_CONTENT
                    && resp
                        .headers()
                        .get(CONTENT_RANGE)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.strip_prefix("bytes "))
                        .and_then(|v| v.split('-').next())
                        .and_then(|v| v.parse::<u64>().ok())
                        == Some(start);
                if !range_ok {
                    if status != StatusCode::OK {
                        return Err(Error::new(
                            ErrorKind::Protocol,
                            format!("blob {d}: the registry answered a Range request with {status} and no matching Content-Range"),
                        ));
                    }
                    skip = start;
                }
            }
            let mut resp = resp;
            let mut progressed = false;
            // Bytes are written in large pieces: fewer syscalls, and fewer wake-ups of the layer's
            // unpacker, which follows the file.
            let mut buf: Vec<u8> = Vec::with_capacity(WRITE_PIECE);
            // In bulk mode the ingest stages bytes itself: chunks go straight in, and `unreported`
            // counts what progress has not been told of yet.
            let bulk = ingest.is_bulk();
            let mut unreported = 0usize;
            let flush = |ingest: &mut Ingest<'_>, buf: &mut Vec<u8>, unreported: &mut usize| -> Result<()> {
                if !buf.is_empty() {
                    ingest.write_all(buf).map_err(|e| {
                        Error::new(ErrorKind::Store, format!("cannot write blob {d} to the store")).with_source(e)
                    })?;
                    buf.clear();
                } else if *unreported == 0 {
                    return Ok(());
                }
                *unreported = 0;
                progress(Event::Bytes { digest: d.clone(), done: ingest.written() });
                Ok(())
            };
            let why = loop {
                if cancel.load(Ordering::Relaxed) {
                    return Err(cancelled());
                }
                match tokio::time::timeout(opts.stall_timeout, resp.chunk()).await {
                    Err(_) => {
                        flush(ingest, &mut buf, &mut unreported)?;
                        break format!("no data for {} s", opts.stall_timeout.as_secs());
                    }
                    Ok(Err(e)) => {
                        flush(ingest, &mut buf, &mut unreported)?;
                        break format!("transfer interrupted: {e}");
                    }
                    Ok(Ok(None)) => {
                        flush(ingest, &mut buf, &mut unreported)?;
                        if skip > 0 {
                            break "the response ended early".to_string();
                        }
                        if ingest.written() >= total || total == 0 {
                            return Ok(());
                        }
                        break format!("the response ended after {} of {total} bytes", ingest.written());
                    }
                    Ok(Ok(Some(mut chunk))) => {
                        if skip > 0 {
                            let n = skip.min(chunk.len() as u64);
                            skip -= n;
                            let _ = chunk.split_to(n as usize);
                            if chunk.is_empty() {
                                continue;
                            }
                        }
                        if ingest.written() + (buf.len() + chunk.len()) as u64 > total {
                            return Err(Error::new(
                                ErrorKind::DigestMismatch,
                                format!("blob {d}: the registry sent more bytes than its size ({total})"),
                            ));
                        }
                        progressed = true;
                        if bulk {
                            ingest.write_all(&chunk).map_err(|e| {
                                Error::new(ErrorKind::Store, format!("cannot write blob {d} to the store"))
                                    .with_source(e)
                            })?;
                            unreported += chunk.len();
                            if unreported >= WRITE_PIECE {
                                flush(ingest, &mut buf, &mut unreported)?;
                            }
                            continue;
                        }
                        buf.extend_from_slice(&chunk);
                        if buf.len() >= WRITE_PIECE {
                            flush(ingest, &mut buf, &mut unreported)?;
                        }
                    }
                }
            };
            if progressed {
                failures = 0;
            }
            failures += 1;
            if failures >= opts.attempts {
                return Err(Error::new(
                    ErrorKind::Unreachable,
                    format!(
                        "blob {d} of {}: {why}; gave up after {failures} attempts (run the pull again to resume)",
                        r.familiar()
                    ),
                ));
            }
            let wait = self.transport.backoff(failures, None);
            progress(Event::Retry { what: d.to_string(), attempt: failures, wait, reason: why });
            tokio::time::sleep(wait).await;
        }
    }
}

/// Whether a media type is a manifest or an index (for callers that resolve by hand).
pub fn is_image_media_type(mt: &MediaType) -> bool {
    is_manifest(mt) || is_index(mt)
}
