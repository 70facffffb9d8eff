//! Image archives: `load` reads a docker-archive (`docker save`, `skopeo copy … docker-archive:`)
//! or an OCI archive / OCI image layout directory into the store; `save` writes images out as
//! either.
//!
//! Lifecycle of a load, under one lease:
//!
//! 1. **Stream** the archive once (plain, gzip or zstd as a whole — sniffed). Small entries (JSON
//!    metadata, small layers) stay in memory by name; larger ones stream straight into blob
//!    ingests, hashed on the way (a `blobs/sha256/<hex>` entry is verified against its name).
//!    Symlinks and hard links between entries (`docker save` links repeated layers) are
//!    remembered and followed when a name is looked up. A directory input is read in place.
//! 2. **Resolve**: a docker-archive's `manifest.json` becomes one OCI manifest per image (the
//!    config kept byte for byte, so the image ID is docker's; layer media types from sniffing);
//!    an OCI layout's `index.json` is followed to manifests (an index to the host platform's
//!    manifest), and manifest, config and layers are kept as they are, verified by the digest and
//!    size of their descriptors.
//! 3. **Unpack** every image's layers, checking each layer's diff ID.
//! 4. **Tag**, all images in one `index.json` update, only once everything else succeeded. A load
//!    that fails changes nothing visible: what it ingested is unreferenced once the lease drops,
//!    and GC sweeps it.
//!
//! `save` writes deterministic archives (sorted, mode 0644, mtime 0, uid/gid 0): saving the same
//! images twice gives the same bytes. Docker archives carry layers decompressed (what `docker
//! load` expects), streamed from the mapped blob and checked against the diff ID on the way; OCI
//! archives carry the blobs exactly as stored.
//!
//! ```no_run
//! use strata_store::{Store, archive};
//! let store = Store::open("/var/lib/strata")?;
//! let report = archive::load(&store, "busybox.tar".as_ref())?;
//! let img = store.resolve_image("busybox")?;
//! let item = archive::SaveItem { tags: img.tags.clone(), image: img };
//! archive::save_to_file(&store, &[item], archive::SaveFormat::Oci, "busybox-oci.tar".as_ref())?;
//! # Ok::<(), strata_store::Error>(())
//! ```

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageIndexBuilder, ImageManifest, MediaType};
use serde::{Deserialize, Serialize};

use crate::blob::Committed;
use crate::digest::{self, Digest, Hasher};
use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::image::{docker, is_index, is_manifest, layer_compression, select_platform, Compression, Image};
use crate::import::{descriptor, spec_error};
use crate::reference::Reference;
use crate::refs::{annotate, set_tag, LAST_USED, REF_NAME};
use crate::store::{now_unix, Lease, Store};
use crate::unpack::{normalise, sniff};

/// How long a load, save or import lease protects its blobs if its process hangs.
pub(crate) const LEASE_TTL: Duration = Duration::from_secs(24 * 3600);
/// Entries up to this size are kept in memory while an archive streams.
const MEM_ENTRY_MAX: u64 = 4 << 20;
/// At most this much is kept in memory in all; later entries go to the store whatever their size.
const MEM_TOTAL_MAX: u64 = 256 << 20;
/// The largest metadata file (manifest.json, index.json, a manifest or config) read whole.
const METADATA_MAX: u64 = 64 << 20;
/// The annotation containerd (and docker ≥ 25) put on `index.json` entries: the full image name.
pub const CONTAINERD_IMAGE_NAME: &str = "io.containerd.image.name";
const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// What [`load`] loaded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// One entry per image (per distinct manifest), in archive order.
    pub images: Vec<LoadedImage>,
}

/// One image a load put in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedImage {
    /// The image ID: the config digest.
    pub id: Digest,
    /// The manifest digest.
    pub manifest: Digest,
    /// The tags it got, sorted; empty for an untagged image.
    pub tags: Vec<Reference>,
}

/// Loads a docker-archive or OCI archive file (plain, gzip or zstd), or an OCI image layout
/// directory, into the store, unpacks its images and tags them. See the module documentation.
pub fn load(store: &Store, input: &Path) -> Result<LoadReport> {
    let meta = fs::metadata(input).at("cannot read", input)?;
    let lease = store.lease(LEASE_TTL)?;
    if meta.is_dir() {
        let mut src = Source::new(store, &lease, format!("image layout {}", input.display()));
        src.dir = Some(input.to_path_buf());
        return finish_load(&src);
    }
    let f = File::open(input).at("cannot open", input)?;
    let mut src = Source::new(store, &lease, format!("archive {}", input.display()));
    src.read_tar(f)?;
    finish_load(&src)
}

/// Loads an archive from a stream (standard input, say); see [`load`].
pub fn load_reader(store: &Store, input: impl Read) -> Result<LoadReport> {
    let lease = store.lease(LEASE_TTL)?;
    let mut src = Source::new(store, &lease, "the archive".to_string());
    src.read_tar(input)?;
    finish_load(&src)
}

/// An archive's files: in memory, already in the store, or (a directory input) on disk.
struct Source<'a> {
    store: &'a Store,
    lease: &'a Lease,
    what: String,
    files: HashMap<String, Content>,
    /// Symlinks and hard links: name → target name (relative to the archive root).
    links: HashMap<String, String>,
    dir: Option<PathBuf>,
    /// Only the image named so (see [`stage`]); every image when `None`.
    select: Option<String>,
}

enum Content {
    Mem(Vec<u8>),
    Stored(Committed),
}

enum Found<'s> {
    Mem(&'s [u8]),
    Stored(&'s Committed),
    File(PathBuf, u64),
}

impl<'a> Source<'a> {
    fn new(store: &'a Store, lease: &'a Lease, what: String) -> Self {
        Source { store, lease, what, files: HashMap::new(), links: HashMap::new(), dir: None, select: None }
    }

    fn corrupt(&self, e: io::Error) -> Error {
        Error::invalid_content(format!("{} is corrupt or truncated (not a complete tar archive)", self.what))
            .with_source(e)
    }

    /// Streams the whole archive once.
    fn read_tar(&mut self, input: impl Read) -> Result<()> {
        let r = decompressing(BufReader::with_capacity(1 << 20, input)).map_err(|e| self.corrupt(e))?;
        let mut ar = tar::Archive::new(BufReader::with_capacity(256 << 10, r));
        let mut mem_total = 0u64;
        let mut count = 0usize;
        let entries = ar.entries().map_err(|e| self.corrupt(e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| self.corrupt(e))?;
            count += 1;
            let raw = entry.path_bytes().into_owned();
            let name = self.entry_name(&raw)?;
            if name.is_empty() {
                continue;
            }
            let unsafe_link =
                |why: &str| Error::new(ErrorKind::UnsafePath, format!("{}: entry {name:?} refused: {why}", self.what));
            match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let size = entry.header().size().map_err(|e| self.corrupt(e))?;
                    let expected = blob_name_digest(&name);
                    self.links.remove(&name);
                    if size <= MEM_ENTRY_MAX && mem_total + size <= MEM_TOTAL_MAX {
                        let mut buf = Vec::with_capacity(size as usize);
                        if let Err(e) = entry.read_to_end(&mut buf) {
                            return Err(Error::invalid_content(format!(
                                "{}: entry {name} is truncated or corrupt",
                                self.what
                            ))
                            .with_source(e));
                        }
                        if buf.len() as u64 != size {
                            return Err(Error::invalid_content(format!(
                                "{}: entry {name} is truncated: {} of {size} bytes",
                                self.what,
                                buf.len()
                            )));
                        }
                        if let Some(d) = &expected {
                            let got = digest::sha256(&buf);
                            if &got != d {
                                return Err(Error::new(
                                    ErrorKind::DigestMismatch,
                                    format!(
                                        "{}: entry {name} hashes to {got} (corrupt or tampered archive)",
                                        self.what
                                    ),
                                ));
                            }
                        }
                        mem_total += size;
                        self.files.insert(name, Content::Mem(buf));
                    } else {
                        let c = self
                            .store
                            .copy_blob(&mut entry, expected.as_ref(), Some(size), self.lease)
                            .map_err(|e| e.context(format!("{}: entry {name}", self.what)))?;
                        self.files.insert(name, Content::Stored(c));
                    }
                }
                tar::EntryType::Symlink => {
                    let target = entry.link_name_bytes().map(|t| t.into_owned()).unwrap_or_default();
                    let target = String::from_utf8_lossy(&target);
                    let resolved = resolve_symlink(&name, &target)
                        .ok_or_else(|| unsafe_link("its symlink target leaves the archive"))?;
                    self.files.remove(&name);
                    self.links.insert(name, resolved);
                }
                tar::EntryType::Link => {
                    let target = entry.link_name_bytes().map(|t| t.into_owned()).unwrap_or_default();
                    let target =
                        normalise(&target).ok_or_else(|| unsafe_link("its hard link target has a '..' component"))?;
                    let target = String::from_utf8_lossy(&target).into_owned();
                    self.files.remove(&name);
                    self.links.insert(name, target);
                }
                _ => {}
            }
        }
        // Read to the end, so that a truncated or corrupt compressed stream is noticed.
        let mut rest = ar.into_inner();
        io::copy(&mut rest, &mut io::sink()).map_err(|e| self.corrupt(e))?;
        if count == 0 {
            return Err(Error::invalid_content(format!(
                "{} is empty or not a tar archive (expected a docker-archive or OCI archive)",
                self.what
            )));
        }
        Ok(())
    }

    fn entry_name(&self, raw: &[u8]) -> Result<String> {
        let n = normalise(raw).ok_or_else(|| {
            Error::new(
                ErrorKind::UnsafePath,
                format!(
                    "{}: entry {:?} refused: its path has a '..' component",
                    self.what,
                    String::from_utf8_lossy(raw)
                ),
            )
        })?;
        Ok(String::from_utf8_lossy(&n).into_owned())
    }

    /// A name as found in `manifest.json` or built from a digest, normalised, links followed.
    fn resolve(&self, name: &str) -> Result<String> {
        let mut cur = self.entry_name(name.as_bytes())?;
        for _ in 0..40 {
            match self.links.get(&cur) {
                Some(t) => cur = t.clone(),
                None => return Ok(cur),
            }
        }
        Err(Error::invalid_content(format!("{}: {name}: too many levels of links", self.what)))
    }

    fn exists(&self, name: &str) -> bool {
        let Ok(key) = self.resolve(name) else {
            return false;
        };
        match &self.dir {
            Some(d) => d.join(&key).is_file(),
            None => self.files.contains_key(&key),
        }
    }

    fn find(&self, name: &str, referrer: &str) -> Result<Found<'_>> {
        let key = self.resolve(name)?;
        let missing = || {
            Error::not_found(format!(
                "{} has no file {name} (referenced by {referrer}): the archive is incomplete; save or export it again",
                self.what
            ))
        };
        if let Some(dir) = &self.dir {
            let p = dir.join(&key);
            return match fs::metadata(&p) {
                Ok(m) if m.is_file() => Ok(Found::File(p, m.len())),
                Ok(_) => Err(missing()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Err(missing()),
                Err(e) => Err(Error::io("cannot read", p, e)),
            };
        }
        match self.files.get(&key) {
            Some(Content::Mem(b)) => Ok(Found::Mem(b)),
            Some(Content::Stored(c)) => Ok(Found::Stored(c)),
            None => Err(missing()),
        }
    }

    /// Reads a metadata file whole.
    fn read_small(&self, name: &str, referrer: &str) -> Result<Cow<'_, [u8]>> {
        let too_big = |size: u64| {
            Error::invalid_content(format!(
                "{}: {name} has {size} bytes, too large for image metadata (corrupt archive?)",
                self.what
            ))
        };
        match self.find(name, referrer)? {
            Found::Mem(b) => Ok(Cow::Borrowed(b)),
            Found::Stored(c) if c.size > METADATA_MAX => Err(too_big(c.size)),
            Found::Stored(c) => Ok(Cow::Owned(self.store.blob(&c.digest)?.to_vec())),
            Found::File(_, size) if size > METADATA_MAX => Err(too_big(size)),
            Found::File(p, _) => Ok(Cow::Owned(fs::read(&p).at("cannot read", &p)?)),
        }
    }

    /// Puts a file into the store as a blob, verified against `expected` (digest and size).
    fn ingest(&self, name: &str, expected: Option<(&Digest, u64)>, referrer: &str) -> Result<Committed> {
        let size_mismatch = |got: u64, want: u64| {
            Error::new(
                ErrorKind::SizeMismatch,
                format!(
                    "{}: {name} has {got} bytes, but {referrer} says {want} (truncated or corrupt archive)",
                    self.what
                ),
            )
        };
        let c = match self.find(name, referrer)? {
            Found::Mem(b) => {
                if let Some((_, want)) = expected {
                    if b.len() as u64 != want {
                        return Err(size_mismatch(b.len() as u64, want));
                    }
                }
                self.store
                    .write_blob(b, expected.map(|e| e.0), self.lease)
                    .map_err(|e| e.context(format!("{}: {name}", self.what)))?
            }
            Found::Stored(c) => {
                if let Some((want, size)) = expected {
                    if c.size != size {
                        return Err(size_mismatch(c.size, size));
                    }
                    if &c.digest != want {
                        return Err(Error::new(
                            ErrorKind::DigestMismatch,
                            format!(
                                "{}: {name} hashes to {}, but {referrer} says {want} (corrupt or tampered archive)",
                                self.what, c.digest
                            ),
                        ));
                    }
                }
                return Ok(c.clone());
            }
            Found::File(p, len) => {
                if let Some((want, size)) = expected {
                    if len != size {
                        return Err(size_mismatch(len, size));
                    }
                    if self.store.blob_size(want).ok() == Some(size) {
                        self.lease.add(want)?;
                        return Ok(Committed { digest: want.clone(), size, existed: true });
                    }
                }
                self.store
                    .copy_file_blob(&p, expected.map(|e| e.0), Some(len), self.lease)
                    .map_err(|e| e.context(format!("{}: {name}", self.what)))?
            }
        };
        Ok(c)
    }

    /// Reads a blob named by a descriptor whole, verified by digest and size.
    fn read_blob(&self, desc: &Descriptor, referrer: &str) -> Result<Vec<u8>> {
        let name = blob_name(desc.digest(), referrer)?;
        let bytes = self.read_small(&name, referrer)?;
        if bytes.len() as u64 != desc.size() {
            return Err(Error::new(
                ErrorKind::SizeMismatch,
                format!(
                    "{}: blob {} has {} bytes, but {referrer} says {} (truncated or corrupt archive)",
                    self.what,
                    desc.digest(),
                    bytes.len(),
                    desc.size()
                ),
            ));
        }
        let got = digest::sha256(&bytes);
        if &got != desc.digest() {
            return Err(Error::new(
                ErrorKind::DigestMismatch,
                format!("{}: blob {} hashes to {got} (corrupt or tampered archive)", self.what, desc.digest()),
            ));
        }
        Ok(bytes.into_owned())
    }

    /// Puts a blob named by a descriptor into the store, verified by digest and size.
    fn ingest_blob(&self, desc: &Descriptor, referrer: &str) -> Result<Committed> {
        let name = blob_name(desc.digest(), referrer)?;
        self.ingest(&name, Some((desc.digest(), desc.size())), referrer)
    }
}

fn blob_name(d: &Digest, referrer: &str) -> Result<String> {
    let hex = digest::hex(d)
        .map_err(|_| Error::invalid_content(format!("{referrer} refers to {d}: only sha256 digests are supported")))?;
    Ok(format!("blobs/sha256/{hex}"))
}

/// The digest a `blobs/sha256/<hex>` entry name announces.
fn blob_name_digest(name: &str) -> Option<Digest> {
    digest::from_hex(name.strip_prefix("blobs/sha256/")?).ok()
}

/// Resolves a symlink entry's target against the entry's folder, lexically, inside the archive.
fn resolve_symlink(name: &str, target: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    if !target.starts_with('/') {
        parts.extend(name.split('/'));
        parts.pop();
    }
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

/// An image resolved from the archive, ready to unpack and tag.
struct Pending {
    desc: Descriptor,
    tags: Vec<Reference>,
    /// The names the archive gives it, as written (RepoTags, ref name annotations).
    names: Vec<String>,
}

fn finish_load(src: &Source<'_>) -> Result<LoadReport> {
    let store = src.store;
    let merged = resolve_all(src)?;
    let mut report = LoadReport::default();
    for p in &merged {
        report.images.push(LoadedImage { id: p.id.clone(), manifest: p.desc.digest().clone(), tags: p.tags.clone() });
    }
    let records: Vec<(Descriptor, Vec<Reference>)> = merged.into_iter().map(|p| (p.desc, p.tags)).collect();
    record_images(store, &records, now_unix())?;
    Ok(report)
}

/// An image staged in the store by [`stage`], untagged.
#[derive(Debug, Clone)]
pub struct Staged {
    /// Its manifest's descriptor.
    pub desc: Descriptor,
    /// The image ID.
    pub id: Digest,
    /// The tags the archive gives it (not applied).
    pub tags: Vec<Reference>,
    /// The names the archive gives it, as written (what `select` matches).
    pub names: Vec<String>,
}

/// Puts the images of an archive file or OCI layout directory into the store **without tagging
/// them**: their blobs and snapshots are held by `lease` only, so GC collects them once it expires
/// unless a tag or a container comes to use them (what `strata diff` reads `oci:` and
/// `docker-archive:` inputs with). With `select`, only the image of that name is staged (an
/// `org.opencontainers.image.ref.name` such as `latest`, or a tag in the archive such as
/// `app:1`); the others' layers are not read.
pub fn stage(store: &Store, input: &Path, select: Option<&str>, lease: &Lease) -> Result<Vec<Staged>> {
    let meta = fs::metadata(input).at("cannot read", input)?;
    let what = if meta.is_dir() {
        format!("image layout {}", input.display())
    } else {
        format!("archive {}", input.display())
    };
    let mut src = Source::new(store, lease, what);
    src.select = select.map(str::to_string);
    if meta.is_dir() {
        src.dir = Some(input.to_path_buf());
    } else {
        src.read_tar(File::open(input).at("cannot open", input)?)?;
    }
    let out = resolve_all(&src)?;
    if out.is_empty() {
        return Err(Error::not_found(format!("{} has no image named {:?}", src.what, select.unwrap_or_default())));
    }
    Ok(out)
}

/// Whether an image the archive names `names` (raw names and parsed tags) is the one selected.
fn selected(src: &Source<'_>, raw: &[&str], tags: &[Reference]) -> bool {
    let Some(want) = src.select.as_deref() else {
        return true;
    };
    if raw.contains(&want) {
        return true;
    }
    match Reference::parse(want) {
        Ok(r) => tags.contains(&r),
        Err(_) => false,
    }
}

fn resolve_all(src: &Source<'_>) -> Result<Vec<Staged>> {
    let store = src.store;
    let pending = if src.exists("manifest.json") {
        resolve_docker(src)?
    } else if src.exists("index.json") {
        resolve_oci(src)?
    } else {
        return Err(Error::not_found(format!(
            "{} has neither manifest.json (docker-archive) nor index.json (OCI layout): not an image archive",
            src.what
        )));
    };
    // One entry per manifest, tags merged, archive order kept.
    let mut merged: Vec<Pending> = Vec::new();
    for p in pending {
        match merged.iter_mut().find(|m| m.desc.digest() == p.desc.digest()) {
            Some(m) => {
                for t in p.tags {
                    if !m.tags.contains(&t) {
                        m.tags.push(t);
                    }
                }
                for n in p.names {
                    if !m.names.contains(&n) {
                        m.names.push(n);
                    }
                }
            }
            None => merged.push(p),
        }
    }
    let mut out = Vec::with_capacity(merged.len());
    for mut p in merged {
        let image = store.load_image(&p.desc)?;
        let label = match p.tags.first() {
            Some(t) => format!("{}: image {}", src.what, t.familiar()),
            None => format!("{}: image {}", src.what, image.id()),
        };
        // Both resolvers unpacked every layer already; this only checks the config's diff IDs parse.
        image.diff_ids().map_err(|e| e.context(&label))?;
        p.tags.sort();
        out.push(Staged { desc: p.desc, id: image.id().clone(), tags: p.tags, names: p.names });
    }
    Ok(out)
}

/// Tags `images` in one `index.json` update (an image without tags is recorded untagged unless
/// the list has it already), marking them used at `now`.
pub(crate) fn record_images(store: &Store, images: &[(Descriptor, Vec<Reference>)], now: i64) -> Result<()> {
    store.update_refs(|list| {
        for (desc, tags) in images {
            if tags.is_empty() {
                let mut known = false;
                for d in list.iter_mut().filter(|d| d.digest() == desc.digest()) {
                    annotate(d, LAST_USED, &now.to_string());
                    known = true;
                }
                if !known {
                    let mut d = desc.clone();
                    annotate(&mut d, LAST_USED, &now.to_string());
                    list.push(d);
                }
            } else {
                for t in tags {
                    set_tag(list, &t.to_string(), desc, now);
                }
            }
        }
        Ok(())
    })
}

/// Refuses a reference that cannot name a tag (one pinned to a digest).
pub(crate) fn check_taggable(r: &Reference) -> Result<()> {
    if r.digest().is_some() {
        return Err(Error::invalid_argument(format!(
            "cannot tag an image as {r}: a reference with a digest names content, not a tag; give NAME[:TAG]"
        )));
    }
    Ok(())
}

/// Parses a tag found in an archive; references pinned to a digest are not tags and are skipped.
fn archive_tag(what: &str, s: &str, field: &str) -> Result<Option<Reference>> {
    let r = Reference::parse(s).map_err(|e| {
        Error::invalid_content(format!("{what}: {field} {s:?} is not a valid image reference")).with_source(e)
    })?;
    Ok(r.digest().is_none().then_some(r))
}

#[derive(Deserialize)]
struct DockerManifestIn {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

#[derive(Serialize)]
struct DockerManifestOut {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags")]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

fn parse_config(what: &str, name: &str, bytes: &[u8]) -> Result<(ImageConfiguration, Vec<Digest>)> {
    let cfg: ImageConfiguration = serde_json::from_slice(bytes).map_err(|e| {
        Error::invalid_content(format!("{what}: config {name} is not a valid image config")).with_source(e)
    })?;
    let diff_ids = cfg
        .rootfs()
        .diff_ids()
        .iter()
        .map(|s| {
            digest::parse(s).map_err(|e| {
                Error::invalid_content(format!("{what}: config {name} has an invalid diff ID {s:?}")).with_source(e)
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((cfg, diff_ids))
}

fn uncompressed_mismatch(what: &str, layer: &str, got: &Digest, diff_id: &Digest) -> Error {
    Error::new(
        ErrorKind::DigestMismatch,
        format!(
            "{what}: layer {layer} hashes to {got}, but the image config says diff ID {diff_id} (corrupt or tampered archive)"
        ),
    )
}

/// docker-archive: one OCI manifest per `manifest.json` entry.
fn resolve_docker(src: &Source<'_>) -> Result<Vec<Pending>> {
    let (store, lease, what) = (src.store, src.lease, src.what.as_str());
    let bytes = src.read_small("manifest.json", "the docker-archive")?;
    let entries: Vec<DockerManifestIn> = serde_json::from_slice(&bytes).map_err(|e| {
        Error::invalid_content(format!("{what}: manifest.json is not a valid docker-archive manifest")).with_source(e)
    })?;
    if entries.is_empty() {
        return Err(Error::invalid_content(format!("{what}: manifest.json lists no images")));
    }
    let mut out = Vec::new();
    for e in entries {
        let raw: Vec<&str> = e.repo_tags.iter().flatten().map(String::as_str).collect();
        let parsed: Vec<Reference> = raw.iter().filter_map(|t| Reference::parse(t).ok()).collect();
        if !selected(src, &raw, &parsed) {
            continue;
        }
        let cfg_bytes = src.read_small(&e.config, "manifest.json")?;
        let (_, diff_ids) = parse_config(what, &e.config, &cfg_bytes)?;
        if diff_ids.len() != e.layers.len() {
            return Err(Error::invalid_content(format!(
                "{what}: manifest.json lists {} layers for config {} but the config has {} diff IDs",
                e.layers.len(),
                e.config,
                diff_ids.len()
            )));
        }
        let cfg = store.write_blob(&cfg_bytes, None, lease)?;
        let referrer = format!("manifest.json (image {})", e.config);
        let mut layers = Vec::with_capacity(e.layers.len());
        for (name, diff_id) in e.layers.iter().zip(&diff_ids) {
            let c = src.ingest(name, None, &referrer)?;
            let blob = store.blob(&c.digest)?;
            let (mt, comp) = match sniff(&blob) {
                Compression::None => (MediaType::ImageLayer, Compression::None),
                Compression::Gzip => (MediaType::ImageLayerGzip, Compression::Gzip),
                Compression::Zstd => (MediaType::ImageLayerZstd, Compression::Zstd),
            };
            // An uncompressed layer's digest is its diff ID: a mismatch shows before any unpacking.
            if comp == Compression::None && &c.digest != diff_id {
                return Err(uncompressed_mismatch(what, name, &c.digest, diff_id));
            }
            layers.push(descriptor(mt, c.size, &c.digest)?);
        }
        // The blobs came in with the archive stream; unpack them all at once (diff IDs checked).
        let pairs: Vec<(Descriptor, Digest)> = layers.iter().cloned().zip(diff_ids.iter().cloned()).collect();
        store
            .unpack_layers(&pairs, lease, |_| Ok(crate::snapshot::LayerSource::Stored))
            .map_err(|e| e.context(format!("{what}: {referrer}")))?;
        let manifest = oci_spec::image::ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(descriptor(MediaType::ImageConfig, cfg.size, &cfg.digest)?)
            .layers(layers)
            .build()
            .map_err(spec_error)?;
        let m = store.write_blob(&canonical_json(&manifest)?, None, lease)?;
        let mut tags = Vec::new();
        for t in e.repo_tags.iter().flatten() {
            if let Some(r) = archive_tag(what, t, "RepoTags entry")? {
                tags.push(r);
            }
        }
        let names = raw.iter().map(|n| n.to_string()).collect();
        out.push(Pending { desc: descriptor(MediaType::ImageManifest, m.size, &m.digest)?, tags, names });
    }
    Ok(out)
}

/// OCI layout: manifests, configs and layers as they are, verified.
fn resolve_oci(src: &Source<'_>) -> Result<Vec<Pending>> {
    let (store, lease, what) = (src.store, src.lease, src.what.as_str());
    let bytes = src.read_small("index.json", "the OCI layout")?;
    let index: ImageIndex = serde_json::from_slice(&bytes).map_err(|e| {
        Error::invalid_content(format!("{what}: index.json is not a valid OCI image index")).with_source(e)
    })?;
    if index.manifests().is_empty() {
        return Err(Error::invalid_content(format!("{what}: index.json lists no images")));
    }
    let mut out = Vec::new();
    for top in index.manifests() {
        let ann = top.annotations().as_ref();
        let raw: Vec<&str> = [REF_NAME, CONTAINERD_IMAGE_NAME]
            .iter()
            .filter_map(|k| ann.and_then(|a| a.get(*k)).map(String::as_str))
            .collect();
        if src.select.is_some() && !selected(src, &raw, &oci_tags(what, top).unwrap_or_default()) {
            continue;
        }
        let mdesc = if is_index(top.media_type()) {
            let b = src.read_blob(top, "index.json")?;
            let nested: ImageIndex = serde_json::from_slice(&b).map_err(|e| {
                Error::invalid_content(format!("{what}: image index {} is not a valid image index", top.digest()))
                    .with_source(e)
            })?;
            select_platform(&nested, None)
                .map_err(|e| e.context(format!("{what}: image index {}", top.digest())))?
                .clone()
        } else if is_manifest(top.media_type()) {
            top.clone()
        } else {
            return Err(Error::new(
                ErrorKind::UnsupportedMediaType,
                format!(
                    "{what}: index.json entry {} has media type {}: strata loads image manifests and indexes",
                    top.digest(),
                    top.media_type()
                ),
            ));
        };
        let mref = format!("manifest {}", mdesc.digest());
        let mbytes = src.read_blob(&mdesc, "index.json")?;
        let manifest: ImageManifest = serde_json::from_slice(&mbytes).map_err(|e| {
            Error::invalid_content(format!("{what}: {mref} is not a valid image manifest")).with_source(e)
        })?;
        let cdesc = manifest.config();
        let is_config = matches!(cdesc.media_type(), MediaType::ImageConfig)
            || matches!(cdesc.media_type(), MediaType::Other(s) if s == docker::CONFIG);
        if !is_config {
            return Err(Error::new(
                ErrorKind::UnsupportedMediaType,
                format!(
                    "{what}: {mref} has a config of media type {}: not a container image (an artifact?)",
                    cdesc.media_type()
                ),
            ));
        }
        let cbytes = src.read_blob(cdesc, &mref)?;
        let (_, diff_ids) = parse_config(what, cdesc.digest().as_ref(), &cbytes)?;
        if diff_ids.len() != manifest.layers().len() {
            return Err(Error::invalid_content(format!(
                "{what}: {mref} lists {} layers but its config has {} diff IDs",
                manifest.layers().len(),
                diff_ids.len()
            )));
        }
        store.write_blob(&cbytes, Some(cdesc.digest()), lease)?;
        for l in manifest.layers() {
            layer_compression(l.media_type())
                .map_err(|e| e.context(format!("{what}: {mref}: layer {}", l.digest())))?;
        }
        // Copy each layer into the store and unpack it in one task, all layers at once: copying
        // one overlaps unpacking another. The unpack checks every diff ID.
        let pairs: Vec<(Descriptor, Digest)> = manifest.layers().iter().cloned().zip(diff_ids).collect();
        store
            .unpack_layers(&pairs, lease, |l| src.ingest_blob(l, &mref).map(|_| crate::snapshot::LayerSource::Stored))
            .map_err(|e| e.context(format!("{what}: {mref}")))?;
        store.write_blob(&mbytes, Some(mdesc.digest()), lease)?;
        out.push(Pending {
            desc: descriptor(mdesc.media_type().clone(), mdesc.size(), mdesc.digest())?,
            tags: oci_tags(what, top)?,
            names: raw.iter().map(|n| n.to_string()).collect(),
        });
    }
    Ok(out)
}

/// The tag of an `index.json` entry: `org.opencontainers.image.ref.name` when it is a full
/// reference; a bare tag (`latest`) names no repository, so then `io.containerd.image.name`, if
/// any; else none (the image loads untagged).
fn oci_tags(what: &str, d: &Descriptor) -> Result<Vec<Reference>> {
    let Some(ann) = d.annotations() else {
        return Ok(Vec::new());
    };
    let (name, field) = match ann.get(REF_NAME) {
        Some(n) if n.contains(':') || n.contains('/') => (Some(n), REF_NAME),
        _ => (ann.get(CONTAINERD_IMAGE_NAME), CONTAINERD_IMAGE_NAME),
    };
    match name {
        Some(n) => Ok(archive_tag(what, n, &format!("annotation {field}"))?.into_iter().collect()),
        None => Ok(Vec::new()),
    }
}

// ---------------------------------------------------------------------------------------------
// save

/// The archive format [`save`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveFormat {
    /// `docker save`'s format: `manifest.json`, `repositories`, `<config hex>.json`,
    /// `<diff ID hex>/layer.tar` (layers decompressed).
    DockerArchive,
    /// A tar of an OCI image layout: `oci-layout`, `index.json`, `blobs/sha256/…` as stored.
    Oci,
}

/// One image to save and the tags to save it under (none: saved untagged).
#[derive(Debug, Clone)]
pub struct SaveItem {
    /// The image.
    pub image: Image,
    /// Its names in the archive.
    pub tags: Vec<Reference>,
}

/// Writes `images` to `out` as one archive. The same image given twice is written once with
/// all its tags, and layers shared by several images once.
pub fn save(store: &Store, images: &[SaveItem], format: SaveFormat, out: &mut dyn Write) -> Result<()> {
    save_to(store, images, format, out, Path::new("the output"))
}

/// Writes the archive to `path` crash-safely: into a temp file in the same folder, fsynced, then
/// renamed over `path`. On error nothing is left behind and an existing `path` is untouched.
pub fn save_to_file(store: &Store, images: &[SaveItem], format: SaveFormat, path: &Path) -> Result<()> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::invalid_argument(format!("{} names no file to write the archive to", path.display())))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = dir.join(format!(".{name}.tmp-{}-{}", std::process::id(), crate::fsutil::unique()));
    let res = (|| {
        let f = OpenOptions::new().write(true).create_new(true).mode(0o644).open(&tmp).at("cannot create", &tmp)?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        save_to(store, images, format, &mut w, path)?;
        let f = w.into_inner().map_err(|e| Error::io("cannot write", path, e.into_error()))?;
        f.sync_all().at("cannot sync", &tmp)?;
        drop(f);
        fs::rename(&tmp, path).at("cannot rename the archive into place at", path)?;
        crate::fsutil::sync_dir(dir)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

fn save_to(store: &Store, items: &[SaveItem], format: SaveFormat, out: &mut dyn Write, dest: &Path) -> Result<()> {
    if items.is_empty() {
        return Err(Error::invalid_argument("nothing to save: give at least one image"));
    }
    // One entry per manifest, tags merged in order.
    let mut images: Vec<(&Image, Vec<Reference>)> = Vec::new();
    for it in items {
        let i = match images.iter().position(|(img, _)| img.digest() == it.image.digest()) {
            Some(i) => i,
            None => {
                images.push((&it.image, Vec::new()));
                images.len() - 1
            }
        };
        for t in &it.tags {
            if t.digest().is_none() && !images[i].1.contains(t) {
                images[i].1.push(t.clone());
            }
        }
    }
    let mut w = ArchiveWriter { b: tar::Builder::new(out), dest };
    match format {
        SaveFormat::DockerArchive => write_docker(store, &images, &mut w)?,
        SaveFormat::Oci => write_oci(store, &images, &mut w)?,
    }
    w.b.finish().map_err(|e| w.err(e))?;
    let out = w.b.into_inner().map_err(|e| Error::io("cannot write the archive to", dest, e))?;
    out.flush().map_err(|e| Error::io("cannot write the archive to", dest, e))
}

struct ArchiveWriter<'o, 'd> {
    b: tar::Builder<&'o mut dyn Write>,
    dest: &'d Path,
}

impl ArchiveWriter<'_, '_> {
    /// An error of the output, or one of ours that travelled through the tar writer.
    fn err(&self, e: io::Error) -> Error {
        if e.get_ref().is_some_and(|i| i.is::<Error>()) {
            return match e.into_inner().map(|i| i.downcast::<Error>()) {
                Some(Ok(err)) => *err,
                _ => Error::new(ErrorKind::Io, "cannot write the archive"),
            };
        }
        Error::io("cannot write the archive to", self.dest, e)
    }

    fn file(&mut self, name: &str, size: u64, data: impl Read) -> Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(size);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        self.b.append_data(&mut h, name, data).map_err(|e| self.err(e))
    }

    fn bytes(&mut self, name: &str, data: &[u8]) -> Result<()> {
        self.file(name, data.len() as u64, data)
    }

    fn dir(&mut self, name: &str) -> Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_size(0);
        h.set_mode(0o755);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        self.b.append_data(&mut h, name, io::empty()).map_err(|e| self.err(e))
    }

    /// A stored blob as it is, its digest checked on the way.
    fn blob(&mut self, store: &Store, d: &Digest, name: &str) -> Result<()> {
        let blob = store.blob(d)?;
        let r = VerifyingReader::new(&blob[..], blob.len() as u64, d.clone(), format!("blob {d}"));
        self.file(name, blob.len() as u64, r)
    }
}

fn write_docker(store: &Store, images: &[(&Image, Vec<Reference>)], w: &mut ArchiveWriter<'_, '_>) -> Result<()> {
    let mut written: HashSet<String> = HashSet::new();
    let mut manifest = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (img, tags) in images {
        let what = format!("image {}", img.id());
        let diff_ids = img.diff_ids().map_err(|e| e.context(&what))?;
        let layers = img.manifest.layers();
        if diff_ids.len() != layers.len() {
            return Err(Error::invalid_content(format!(
                "{what}: the manifest lists {} layers but the config has {} diff IDs",
                layers.len(),
                diff_ids.len()
            )));
        }
        if &digest::sha256(&img.config_raw) != img.id() {
            return Err(Error::new(
                ErrorKind::DigestMismatch,
                format!("{what}: its config does not hash to its ID (run `strata system check --repair`)"),
            ));
        }
        let config_name = format!("{}.json", digest::hex(img.id())?);
        if written.insert(config_name.clone()) {
            w.bytes(&config_name, &img.config_raw)?;
        }
        let mut layer_names = Vec::with_capacity(layers.len());
        for (l, diff_id) in layers.iter().zip(&diff_ids) {
            let name = format!("{}/layer.tar", digest::hex(diff_id)?);
            if written.insert(name.clone()) {
                write_layer_tar(store, w, l, diff_id, &name).map_err(|e| e.context(&what))?;
            }
            layer_names.push(name);
        }
        let mut repo_tags = Vec::new();
        for t in tags {
            let Some(tag) = t.tag() else { continue };
            repo_tags.push(format!("{}:{tag}", t.familiar_name()));
            if let Some(top) = diff_ids.last() {
                repositories
                    .entry(t.familiar_name())
                    .or_default()
                    .insert(tag.to_string(), digest::hex(top)?.to_string());
            }
        }
        manifest.push(DockerManifestOut {
            config: config_name,
            repo_tags: (!repo_tags.is_empty()).then_some(repo_tags),
            layers: layer_names,
        });
    }
    let bytes = serde_json::to_vec(&manifest).map_err(json_error)?;
    w.bytes("manifest.json", &bytes)?;
    if !repositories.is_empty() {
        let bytes = serde_json::to_vec(&repositories).map_err(json_error)?;
        w.bytes("repositories", &bytes)?;
    }
    Ok(())
}

/// One layer as `<diff ID hex>/layer.tar`: decompressed from the mapped blob as it is written,
/// its size known up front (from the snapshot's file index, or a counting pass), its diff ID
/// checked on the way.
fn write_layer_tar(
    store: &Store,
    w: &mut ArchiveWriter<'_, '_>,
    layer: &Descriptor,
    diff_id: &Digest,
    name: &str,
) -> Result<()> {
    let what = format!("layer {}", layer.digest());
    let blob = store.blob(layer.digest()).map_err(|e| e.context(&what))?;
    let bad = |e: io::Error| Error::invalid_content(format!("{what}: corrupt compressed stream")).with_source(e);
    let size = match sniff(&blob) {
        Compression::None => blob.len() as u64,
        _ => match store.snapshot_summary(diff_id) {
            Ok(s) if store.has_snapshot(diff_id) => s.tar_bytes,
            _ => io::copy(&mut crate::unpack::decoder(&blob).map_err(bad)?, &mut io::sink()).map_err(bad)?,
        },
    };
    let r = VerifyingReader::new(crate::unpack::decoder(&blob).map_err(bad)?, size, diff_id.clone(), what);
    w.file(name, size, r)
}

fn write_oci(store: &Store, images: &[(&Image, Vec<Reference>)], w: &mut ArchiveWriter<'_, '_>) -> Result<()> {
    w.bytes("oci-layout", OCI_LAYOUT)?;
    w.dir("blobs/")?;
    w.dir("blobs/sha256/")?;
    let mut written: HashSet<Digest> = HashSet::new();
    let mut manifests = Vec::new();
    for (img, tags) in images {
        let what = format!("image {}", img.id());
        let mut blobs: Vec<&Digest> = img.manifest.layers().iter().map(|l| l.digest()).collect();
        blobs.push(img.id());
        blobs.push(img.digest());
        for d in blobs {
            if written.insert(d.clone()) {
                let name = blob_name(d, &what)?;
                w.blob(store, d, &name).map_err(|e| e.context(&what))?;
            }
        }
        let size = store.blob_size(img.digest())?;
        let desc = descriptor(img.descriptor.media_type().clone(), size, img.digest())?;
        if tags.is_empty() {
            manifests.push(desc.clone());
        }
        for t in tags {
            let mut d = desc.clone();
            let mut ann = HashMap::new();
            ann.insert(REF_NAME.to_string(), t.to_string());
            ann.insert(CONTAINERD_IMAGE_NAME.to_string(), t.to_string());
            d.set_annotations(Some(ann));
            manifests.push(d);
        }
    }
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests)
        .build()
        .map_err(spec_error)?;
    w.bytes("index.json", &canonical_json(&index)?)
}

/// Yields exactly `size` bytes of `inner` and checks they hash to `expected`; an error (ours,
/// wrapped in the `io::Error` the tar writer passes on) if the stream is shorter, longer, corrupt
/// or hashes otherwise. A tar entry's size is written before its data, so it must be right.
struct VerifyingReader<R> {
    inner: R,
    remaining: u64,
    hasher: Hasher,
    expected: Digest,
    what: String,
    checked: bool,
}

impl<R: Read> VerifyingReader<R> {
    fn new(inner: R, size: u64, expected: Digest, what: String) -> Self {
        VerifyingReader { inner, remaining: size, hasher: Hasher::new(), expected, what, checked: false }
    }

    fn fail(&self, kind: ErrorKind, why: String) -> io::Error {
        io::Error::other(Error::new(kind, format!("{}: {why}", self.what)))
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.remaining == 0 {
            if !self.checked {
                self.checked = true;
                let mut extra = [0u8; 1];
                let n = loop {
                    match self.inner.read(&mut extra) {
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        other => break other,
                    }
                }
                .map_err(|e| {
                    io::Error::other(Error::invalid_content(format!("{}: corrupt stream", self.what)).with_source(e))
                })?;
                if n > 0 {
                    return Err(self.fail(
                        ErrorKind::InvalidContent,
                        "the content is longer than its recorded size (run `strata system check --repair`)".into(),
                    ));
                }
                let got = self.hasher.clone().finish();
                if got != self.expected {
                    return Err(self.fail(
                        ErrorKind::DigestMismatch,
                        format!(
                            "content hashes to {got}, expected {} (corrupt store: run `strata system check --repair`)",
                            self.expected
                        ),
                    ));
                }
            }
            return Ok(0);
        }
        let max = buf.len().min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max]).map_err(|e| {
            if e.kind() == io::ErrorKind::Interrupted {
                return e;
            }
            io::Error::other(Error::invalid_content(format!("{}: corrupt stream", self.what)).with_source(e))
        })?;
        if n == 0 {
            return Err(self.fail(
                ErrorKind::InvalidContent,
                "the content is shorter than its recorded size (run `strata system check --repair`)".into(),
            ));
        }
        self.hasher.update(&buf[..n]);
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// A reader of `r` decompressed: gzip and zstd are recognised by their magic bytes, anything else
/// passes through.
pub(crate) fn decompressing<'a, R: Read + 'a>(mut r: R) -> io::Result<Box<dyn Read + 'a>> {
    let mut head = [0u8; 4];
    let mut n = 0;
    while n < head.len() {
        match r.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let chained = io::Cursor::new(head[..n].to_vec()).chain(r);
    Ok(match sniff(&head[..n]) {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(chained)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(chained)?),
        Compression::None => Box::new(chained),
    })
}

/// JSON with object keys sorted (serde_json's map is ordered), so that documents built from
/// `HashMap`s (labels, annotations, exposed ports) serialise the same every time.
pub(crate) fn canonical_json<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    let value = serde_json::to_value(v).map_err(json_error)?;
    serde_json::to_vec(&value).map_err(json_error)
}

fn json_error(e: serde_json::Error) -> Error {
    Error::invalid_content("cannot serialise a JSON document").with_source(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fileindex::FileIndex;
    use crate::import::{import, ImportOptions, ImportSource};
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn store() -> (tempfile::TempDir, Store) {
        let d = tempfile::tempdir_in("/var/tmp").unwrap();
        let s = Store::open(d.path().join("root")).unwrap();
        (d, s)
    }

    /// A small root filesystem: files, a symlink, a hard link, a 0700 folder, a file of uid 1000.
    fn rootfs(dir: &Path) {
        fs::create_dir_all(dir.join("etc")).unwrap();
        fs::write(dir.join("etc/hostname"), "strata\n").unwrap();
        fs::write(dir.join("etc/empty"), "").unwrap();
        fs::create_dir(dir.join("private")).unwrap();
        fs::write(dir.join("private/secret"), "s3cr3t").unwrap();
        fs::set_permissions(dir.join("private"), fs::Permissions::from_mode(0o700)).unwrap();
        fs::write(dir.join("big"), vec![7u8; 300_000]).unwrap();
        fs::hard_link(dir.join("big"), dir.join("big-link")).unwrap();
        symlink("etc/hostname", dir.join("hostname-link")).unwrap();
        symlink("/nonexistent/target", dir.join("dangling")).unwrap();
        fs::write(dir.join("user-file"), "mine").unwrap();
        rustix::fs::chown(
            dir.join("user-file"),
            Some(rustix::fs::Uid::from_raw(1000)),
            Some(rustix::fs::Gid::from_raw(1000)),
        )
        .unwrap();
        let fifo = dir.join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
    }

    fn imported(store: &Store, name: &str) -> (tempfile::TempDir, Image) {
        let d = tempfile::tempdir_in("/var/tmp").unwrap();
        rootfs(d.path());
        let r = Reference::parse(name).unwrap();
        let opts = ImportOptions {
            changes: vec!["CMD [\"/bin/sh\"]".into(), "LABEL a=1 b=2 c=3".into(), "EXPOSE 80 443".into()],
            message: Some("test".into()),
            platform: None,
        };
        let img = import(store, ImportSource::Dir(d.path().to_path_buf()), Some(&r), &opts).unwrap();
        (d, img)
    }

    fn entries(store: &Store, img: &Image) -> Vec<FileIndex> {
        img.diff_ids()
            .unwrap()
            .iter()
            .map(|d| {
                let mut i = store.file_index(d).unwrap();
                i.created = 0;
                i
            })
            .collect()
    }

    fn save_bytes(store: &Store, img: &Image, format: SaveFormat) -> Vec<u8> {
        let mut out = Vec::new();
        let item = SaveItem { image: img.clone(), tags: img.tags.clone() };
        save(store, &[item], format, &mut out).unwrap();
        out
    }

    fn tar_names(bytes: &[u8]) -> Vec<String> {
        let mut ar = tar::Archive::new(bytes);
        ar.entries().unwrap().map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned()).collect()
    }

    fn tar_file(bytes: &[u8], name: &str) -> Vec<u8> {
        let mut ar = tar::Archive::new(bytes);
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            if e.path().unwrap().to_string_lossy() == name {
                let mut v = Vec::new();
                e.read_to_end(&mut v).unwrap();
                return v;
            }
        }
        panic!("no {name} in archive")
    }

    fn index_len(store: &Store) -> usize {
        store.read_index().unwrap().manifests().len()
    }

    #[test]
    fn import_save_docker_archive_load_round_trip() {
        let (_d1, s1) = store();
        let (_rootfs, img) = imported(&s1, "example.com/test/rootfs:1");
        let idx = entries(&s1, &img);
        let paths: Vec<String> = idx[0].entries.iter().map(|e| String::from_utf8_lossy(&e.path).into_owned()).collect();
        assert_eq!(
            paths,
            [
                "big",
                "big-link",
                "dangling",
                "etc",
                "etc/empty",
                "etc/hostname",
                "fifo",
                "hostname-link",
                "private",
                "private/secret",
                "user-file"
            ]
        );
        let by = |p: &str| idx[0].entries.iter().find(|e| e.path == p.as_bytes()).unwrap().clone();
        assert_eq!(by("private").mode, 0o700);
        assert_eq!((by("user-file").uid, by("user-file").gid), (1000, 1000));
        assert_eq!(by("big-link").kind, crate::fileindex::Kind::Hardlink);
        assert_eq!(by("hostname-link").link, b"etc/hostname");

        let bytes = save_bytes(&s1, &img, SaveFormat::DockerArchive);
        assert_eq!(bytes, save_bytes(&s1, &img, SaveFormat::DockerArchive), "saving is deterministic");
        let manifest: serde_json::Value = serde_json::from_slice(&tar_file(&bytes, "manifest.json")).unwrap();
        let idhex = img.id().digest();
        let dhex = img.diff_ids().unwrap()[0].digest().to_string();
        assert_eq!(
            manifest,
            serde_json::json!([{"Config": format!("{idhex}.json"), "RepoTags": ["example.com/test/rootfs:1"], "Layers": [format!("{dhex}/layer.tar")]}])
        );
        let repos: serde_json::Value = serde_json::from_slice(&tar_file(&bytes, "repositories")).unwrap();
        assert_eq!(repos, serde_json::json!({"example.com/test/rootfs": {"1": dhex}}));
        // The layer is decompressed: it hashes to the diff ID.
        assert_eq!(digest::sha256(&tar_file(&bytes, &format!("{dhex}/layer.tar"))), img.diff_ids().unwrap()[0]);

        let (_d2, s2) = store();
        let report = load_reader(&s2, &bytes[..]).unwrap();
        assert_eq!(report.images.len(), 1);
        assert_eq!(&report.images[0].id, img.id());
        assert_eq!(report.images[0].tags, img.tags);
        let img2 = s2.resolve_image("example.com/test/rootfs:1").unwrap();
        assert_eq!(img2.id(), img.id());
        assert_eq!(img2.manifest.layers()[0].media_type(), &MediaType::ImageLayer);
        assert_eq!(entries(&s2, &img2), idx);
        // Loading again changes nothing and still works (blobs and snapshots exist).
        let again = load_reader(&s2, &bytes[..]).unwrap();
        assert_eq!(again, report);
        assert_eq!(index_len(&s2), 1);
    }

    #[test]
    fn oci_archive_round_trip_and_layout_dir() {
        let (_d1, s1) = store();
        let (_rootfs, img) = imported(&s1, "rootfs:oci");
        let bytes = save_bytes(&s1, &img, SaveFormat::Oci);
        assert_eq!(bytes, save_bytes(&s1, &img, SaveFormat::Oci));
        let names = tar_names(&bytes);
        assert_eq!(names[..3], ["oci-layout", "blobs/", "blobs/sha256/"]);
        assert_eq!(names.last().map(String::as_str), Some("index.json"));
        let index: serde_json::Value = serde_json::from_slice(&tar_file(&bytes, "index.json")).unwrap();
        let ann = &index["manifests"][0]["annotations"];
        assert_eq!(ann[REF_NAME], "docker.io/library/rootfs:oci");
        assert_eq!(ann[CONTAINERD_IMAGE_NAME], "docker.io/library/rootfs:oci");

        let (_d2, s2) = store();
        let report = load_reader(&s2, &bytes[..]).unwrap();
        assert_eq!(&report.images[0].manifest, img.digest(), "OCI blobs are kept as they are");
        assert_eq!(report.images[0].tags, vec![Reference::parse("rootfs:oci").unwrap()]);
        let img2 = s2.resolve_image("rootfs:oci").unwrap();
        assert_eq!(entries(&s2, &img2), entries(&s1, &img));

        // The same archive unpacked into a directory loads as an OCI layout.
        let layout = tempfile::tempdir_in("/var/tmp").unwrap();
        tar::Archive::new(&bytes[..]).unpack(layout.path()).unwrap();
        let (_d3, s3) = store();
        let report = load(&s3, layout.path()).unwrap();
        assert_eq!(&report.images[0].manifest, img.digest());
        assert!(s3.resolve_image("rootfs:oci").is_ok());

        // And gzip- or zstd-compressed as a whole.
        for compressed in [gzip(&bytes), zstd::encode_all(&bytes[..], 3).unwrap()] {
            let (_d4, s4) = store();
            let report = load_reader(&s4, &compressed[..]).unwrap();
            assert_eq!(&report.images[0].manifest, img.digest());
        }
    }

    #[test]
    fn saves_several_images_sharing_layers_once() {
        let (_d1, s1) = store();
        let (_r, img) = imported(&s1, "one:1");
        let extra = Reference::parse("two:2").unwrap();
        let items = [
            SaveItem { image: img.clone(), tags: img.tags.clone() },
            SaveItem { image: img.clone(), tags: vec![extra.clone()] },
        ];
        let mut out = Vec::new();
        save(&s1, &items, SaveFormat::DockerArchive, &mut out).unwrap();
        let names = tar_names(&out);
        assert_eq!(names.iter().filter(|n| n.ends_with("layer.tar")).count(), 1);
        let manifest: serde_json::Value = serde_json::from_slice(&tar_file(&out, "manifest.json")).unwrap();
        assert_eq!(manifest[0]["RepoTags"], serde_json::json!(["one:1", "two:2"]));
        let (_d2, s2) = store();
        let report = load_reader(&s2, &out[..]).unwrap();
        assert_eq!(report.images.len(), 1);
        assert_eq!(report.images[0].tags.len(), 2);
        assert_eq!(index_len(&s2), 2);
    }

    #[test]
    fn save_to_file_is_atomic_and_loadable() {
        let (d1, s1) = store();
        let (_r, img) = imported(&s1, "file:1");
        let path = d1.path().join("out.tar");
        fs::write(&path, "old").unwrap();
        let item = SaveItem { image: img.clone(), tags: img.tags.clone() };
        save_to_file(&s1, std::slice::from_ref(&item), SaveFormat::Oci, &path).unwrap();
        let (_d2, s2) = store();
        assert_eq!(&load(&s2, &path).unwrap().images[0].id, img.id());
        // A failing save leaves the old file and no temp file.
        let mut broken = item;
        broken.image.manifest.layers_mut()[0].set_digest(digest::sha256(b"not in the store"));
        assert!(save_to_file(&s1, &[broken], SaveFormat::Oci, &path).is_err());
        assert_eq!(&load(&s2, &path).unwrap().images[0].id, img.id());
        let leftovers: Vec<_> = fs::read_dir(d1.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".out.tar"))
            .collect();
        assert!(leftovers.is_empty());
    }

    // ---- hand-made archives

    fn gzip(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }

    fn layer_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    enum E<'a> {
        File(&'a [u8]),
        Symlink(&'a str),
        Hardlink(&'a str),
    }

    fn archive(entries: &[(&str, E<'_>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, e) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            match e {
                E::File(data) => {
                    h.set_size(data.len() as u64);
                    h.set_entry_type(tar::EntryType::Regular);
                    b.append_data(&mut h, name, *data).unwrap();
                }
                E::Symlink(t) | E::Hardlink(t) => {
                    h.set_size(0);
                    h.set_entry_type(if matches!(e, E::Symlink(_)) {
                        tar::EntryType::Symlink
                    } else {
                        tar::EntryType::Link
                    });
                    b.append_link(&mut h, name, t).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    fn config_json(diff_ids: &[&Digest]) -> Vec<u8> {
        let (os, arch) = crate::image::host_platform();
        serde_json::to_vec(&serde_json::json!({
            "architecture": arch, "os": os, "config": {"Cmd": ["/hello"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>()}
        }))
        .unwrap()
    }

    #[test]
    fn docker_archive_with_linked_layers_and_gzip_layer() {
        let base = layer_tar(&[("base", b"base")]);
        let top = layer_tar(&[("top", b"top")]);
        let (db, dt) = (digest::sha256(&base), digest::sha256(&top));
        let c1 = config_json(&[&db]);
        let c2 = config_json(&[&db, &dt]);
        let manifest = serde_json::json!([
            {"Config": "c1.json", "RepoTags": ["first:latest"], "Layers": ["aaa/layer.tar"]},
            {"Config": "c2.json", "RepoTags": ["second:v2", "localhost:5000/second:v2"], "Layers": ["bbb/layer.tar", "ccc/layer.tar"]},
        ]);
        let top_gz = gzip(&top);
        let tar = archive(&[
            ("aaa/layer.tar", E::File(&base)),
            // docker save links a repeated layer to its first copy.
            ("bbb/layer.tar", E::Symlink("../aaa/layer.tar")),
            ("ccc/layer.tar", E::File(&top_gz)),
            ("ddd/layer.tar", E::Hardlink("ccc/layer.tar")),
            ("c1.json", E::File(&c1)),
            ("c2.json", E::File(&c2)),
            ("manifest.json", E::File(&serde_json::to_vec(&manifest).unwrap())),
        ]);
        let (_d, s) = store();
        let report = load_reader(&s, &gzip(&tar)[..]).unwrap();
        assert_eq!(report.images.len(), 2);
        assert_eq!(report.images[0].id, digest::sha256(&c1), "the image ID is docker's: the config digest");
        assert_eq!(report.images[1].tags.len(), 2);
        let img = s.resolve_image("second:v2").unwrap();
        let mts: Vec<MediaType> = img.manifest.layers().iter().map(|l| l.media_type().clone()).collect();
        assert_eq!(mts, [MediaType::ImageLayer, MediaType::ImageLayerGzip]);
        assert_eq!(s.file_index(&dt).unwrap().entries[0].path, b"top");
        assert_eq!(index_len(&s), 3);
    }

    #[test]
    fn docker_archive_layer_not_matching_diff_id_fails_without_tags() {
        let good = layer_tar(&[("a", b"a")]);
        let evil = layer_tar(&[("a", b"evil")]);
        let cfg = config_json(&[&digest::sha256(&good)]);
        let manifest = serde_json::json!([{"Config": "c.json", "RepoTags": ["x:1"], "Layers": ["l/layer.tar"]}]);
        for layer in [evil.clone(), gzip(&evil)] {
            let tar = archive(&[
                ("l/layer.tar", E::File(&layer)),
                ("c.json", E::File(&cfg)),
                ("manifest.json", E::File(&serde_json::to_vec(&manifest).unwrap())),
            ]);
            let (_d, s) = store();
            let e = load_reader(&s, &tar[..]).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::DigestMismatch, "{e}");
            assert!(e.to_string().contains("layer"), "{e}");
            assert_eq!(index_len(&s), 0);
        }
    }

    #[test]
    fn gzip_layer_tampered_while_snapshot_exists_is_caught() {
        let good = layer_tar(&[("a", b"a")]);
        let evil = gzip(&layer_tar(&[("a", b"evil")]));
        let d = digest::sha256(&good);
        let cfg = config_json(&[&d]);
        let manifest = serde_json::json!([{"Config": "c.json", "RepoTags": ["x:1"], "Layers": ["l/layer.tar"]}]);
        let mk = |layer: &[u8]| {
            archive(&[
                ("l/layer.tar", E::File(layer)),
                ("c.json", E::File(&cfg)),
                ("manifest.json", E::File(&serde_json::to_vec(&manifest).unwrap())),
            ])
        };
        let (_d, s) = store();
        load_reader(&s, &mk(&gzip(&good))[..]).unwrap();
        let before = s.read_index().unwrap();
        let e = load_reader(&s, &mk(&evil)[..]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::DigestMismatch, "{e}");
        assert_eq!(s.read_index().unwrap(), before);
    }

    #[test]
    fn truncated_and_corrupt_archives_fail_without_tags() {
        let (_d1, s1) = store();
        let (_r, img) = imported(&s1, "victim:1");
        let (_d2, s2) = store();
        for format in [SaveFormat::DockerArchive, SaveFormat::Oci] {
            let bytes = save_bytes(&s1, &img, format);
            for cut in [bytes.len() / 2, bytes.len() - 1024 - 700, 100] {
                let e = load_reader(&s2, &bytes[..cut]).unwrap_err();
                assert!(
                    matches!(e.kind(), ErrorKind::InvalidContent | ErrorKind::SizeMismatch | ErrorKind::NotFound),
                    "{format:?} cut at {cut}: {e}"
                );
            }
            let gz = gzip(&bytes);
            let e = load_reader(&s2, &gz[..gz.len() - 10]).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidContent, "{e}");
            // Flip a byte inside the layer (docker-archive: the big file's content; OCI: the
            // middle of the gzip stream).
            let mut bad = bytes.clone();
            let at = match format {
                SaveFormat::DockerArchive => bad.windows(64).position(|w| w.iter().all(|&b| b == 7)).unwrap(),
                SaveFormat::Oci => {
                    let blob = s1.blob(img.manifest.layers()[0].digest()).unwrap();
                    bad.windows(64).position(|w| w == &blob[..64]).unwrap() + blob.len() / 2
                }
            };
            bad[at] ^= 0x55;
            let e = load_reader(&s2, &bad[..]).unwrap_err();
            assert!(matches!(e.kind(), ErrorKind::DigestMismatch | ErrorKind::InvalidContent), "{format:?}: {e}");
            assert_eq!(index_len(&s2), 0);
        }
        let e = load_reader(&s2, &b"this is not a tar archive at all, not even close......"[..]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidContent, "{e}");
        let e = load_reader(&s2, &[][..]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidContent, "{e}");
        let e = load_reader(&s2, &archive(&[("foo", E::File(b"x"))])[..]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
        let e = load_reader(&s2, &archive(&[("manifest.json", E::File(b"{nope"))])[..]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidContent, "{e}");
        let mut evil = tar::Header::new_gnu();
        evil.as_old_mut().name[..9].copy_from_slice(b"../escape");
        evil.set_size(1);
        evil.set_entry_type(tar::EntryType::Regular);
        evil.set_cksum();
        let mut b = tar::Builder::new(Vec::new());
        b.append(&evil, &b"x"[..]).unwrap();
        let e = load_reader(&s2, &b.into_inner().unwrap()[..]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UnsafePath, "{e}");
        assert_eq!(index_len(&s2), 0);
    }

    /// An OCI layout archive with one image, from the given blobs and index entries.
    fn oci_archive(blobs: &[&[u8]], index: serde_json::Value) -> Vec<u8> {
        let mut entries: Vec<(String, Vec<u8>)> = vec![("oci-layout".into(), OCI_LAYOUT.to_vec())];
        for b in blobs {
            entries.push((format!("blobs/sha256/{}", digest::sha256(b).digest()), b.to_vec()));
        }
        entries.push(("index.json".into(), serde_json::to_vec(&index).unwrap()));
        let refs: Vec<(&str, E<'_>)> = entries.iter().map(|(n, b)| (n.as_str(), E::File(b))).collect();
        archive(&refs)
    }

    fn oci_image(layer: &[u8], layer_mt: &str) -> (Vec<u8>, Vec<u8>, serde_json::Value) {
        let diff = digest::sha256(&{
            let mut v = Vec::new();
            flate2::read::MultiGzDecoder::new(layer).read_to_end(&mut v).map(|_| v).unwrap_or_else(|_| layer.to_vec())
        });
        let cfg = config_json(&[&diff]);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest::sha256(&cfg).to_string(), "size": cfg.len()},
            "layers": [{"mediaType": layer_mt, "digest": digest::sha256(layer).to_string(), "size": layer.len()}]
        }))
        .unwrap();
        let desc = serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest::sha256(&manifest).to_string(), "size": manifest.len()});
        (cfg, manifest, desc)
    }

    #[test]
    fn oci_names_index_platforms_and_missing_blobs() {
        let layer = gzip(&layer_tar(&[("f", b"f")]));
        let (cfg, manifest, desc) = oci_image(&layer, "application/vnd.oci.image.layer.v1.tar+gzip");
        let with = |ann: serde_json::Value| {
            let mut d = desc.clone();
            d["annotations"] = ann;
            serde_json::json!({"schemaVersion": 2, "manifests": [d]})
        };
        let (_d, s) = store();
        // A bare tag names no repository: untagged …
        let r = load_reader(
            &s,
            &oci_archive(&[&layer, &cfg, &manifest], with(serde_json::json!({REF_NAME: "latest"})))[..],
        )
        .unwrap();
        assert!(r.images[0].tags.is_empty());
        assert_eq!(index_len(&s), 1);
        assert!(ref_name_of(&s).is_none());
        // … unless containerd's annotation names the image.
        let r = load_reader(
            &s,
            &oci_archive(
                &[&layer, &cfg, &manifest],
                with(serde_json::json!({REF_NAME: "latest", CONTAINERD_IMAGE_NAME: "docker.io/library/app:latest"})),
            )[..],
        )
        .unwrap();
        assert_eq!(r.images[0].tags, vec![Reference::parse("app").unwrap()]);
        assert_eq!(index_len(&s), 1, "the dangling entry became the tagged one");
        let r = load_reader(
            &s,
            &oci_archive(&[&layer, &cfg, &manifest], with(serde_json::json!({REF_NAME: "quay.io/x/y:z"})))[..],
        )
        .unwrap();
        assert_eq!(r.images[0].tags, vec![Reference::parse("quay.io/x/y:z").unwrap()]);

        // An index: the host platform's manifest is picked.
        let (os, arch) = crate::image::host_platform();
        let mut pd = desc.clone();
        pd["platform"] = serde_json::json!({"os": os, "architecture": arch});
        let other = serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest::sha256(b"other").to_string(), "size": 5, "platform": {"os": "plan9", "architecture": "mips"}});
        let idx = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [other, pd]})).unwrap();
        let top = serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json", "digest": digest::sha256(&idx).to_string(), "size": idx.len(), "annotations": {REF_NAME: "multi:1"}}]});
        let (_d2, s2) = store();
        let r = load_reader(&s2, &oci_archive(&[&layer, &cfg, &manifest, &idx], top)[..]).unwrap();
        assert_eq!(r.images[0].manifest, digest::sha256(&manifest));
        assert!(s2.resolve_image("multi:1").is_ok());

        // A missing layer blob is named.
        let (_d3, s3) = store();
        let e = load_reader(&s3, &oci_archive(&[&cfg, &manifest], with(serde_json::json!({REF_NAME: "a/b:c"})))[..])
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
        assert!(e.to_string().contains(digest::sha256(&layer).digest()), "{e}");
        // A descriptor whose size lies.
        let mut lying = desc.clone();
        lying["size"] = serde_json::json!(manifest.len() + 1);
        let e = load_reader(
            &s3,
            &oci_archive(&[&layer, &cfg, &manifest], serde_json::json!({"schemaVersion": 2, "manifests": [lying]}))[..],
        )
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::SizeMismatch, "{e}");
        // An unknown layer media type.
        let (cfg2, manifest2, desc2) = oci_image(&layer, "application/vnd.example.weird");
        let e =
            load_reader(
                &s3,
                &oci_archive(
                    &[&layer, &cfg2, &manifest2],
                    serde_json::json!({"schemaVersion": 2, "manifests": [desc2]}),
                )[..],
            )
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UnsupportedMediaType, "{e}");
        // A blob whose content does not match its name.
        let mut entries = oci_archive(&[&layer, &cfg, &manifest], with(serde_json::json!({})));
        let at = entries.windows(cfg.len()).position(|w| w == &cfg[..]).unwrap();
        entries[at + 2] ^= 1;
        let e = load_reader(&s3, &entries[..]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::DigestMismatch, "{e}");
        assert_eq!(index_len(&s3), 0);
    }

    fn ref_name_of(s: &Store) -> Option<String> {
        s.read_index().unwrap().manifests()[0].annotations().as_ref().and_then(|a| a.get(REF_NAME).cloned())
    }

    #[test]
    fn import_tarball_and_reader() {
        let (_d, s) = store();
        let tar = layer_tar(&[("hello", b"world")]);
        let d = tempfile::tempdir_in("/var/tmp").unwrap();
        let path = d.path().join("rootfs.tar.gz");
        fs::write(&path, gzip(&tar)).unwrap();
        let opts = ImportOptions { platform: Some("linux/arm64/v8".into()), ..Default::default() };
        let img = import(&s, ImportSource::Tarball(path), None, &opts).unwrap();
        assert_eq!(img.diff_ids().unwrap(), vec![digest::sha256(&tar)]);
        assert_eq!(img.config.architecture().to_string(), "arm64");
        assert_eq!(img.config.variant().as_deref(), Some("v8"));
        assert_eq!(img.manifest.layers()[0].media_type(), &MediaType::ImageLayerGzip);
        assert!(img.tags.is_empty());
        assert_eq!(index_len(&s), 1, "untagged images are recorded");
        let zst = zstd::encode_all(&tar[..], 3).unwrap();
        let r = Reference::parse("imported:zstd").unwrap();
        let img2 =
            import(&s, ImportSource::Reader(Box::new(io::Cursor::new(zst))), Some(&r), &ImportOptions::default())
                .unwrap();
        assert_eq!(img2.diff_ids().unwrap(), img.diff_ids().unwrap());
        assert_eq!(img2.tags, vec![r]);
        let h = img2.config.history().clone().unwrap();
        assert_eq!(h[0].created_by().as_deref(), Some(crate::import::CREATED_BY));
        // Not a tar: the unpack refuses it and nothing is tagged.
        let e = import(
            &s,
            ImportSource::Reader(Box::new(&b"garbage garbage garbage"[..])),
            Some(&Reference::parse("bad:1").unwrap()),
            &ImportOptions::default(),
        )
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidContent, "{e}");
        assert!(s.resolve_image("bad:1").is_err());
        // Bad options fail before anything is read.
        let bad = ImportOptions { changes: vec!["RUN x".into()], ..Default::default() };
        assert_eq!(
            import(&s, ImportSource::Dir("/nonexistent".into()), None, &bad).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        let pinned = Reference::parse(&format!("x@{}", digest::sha256(b"x"))).unwrap();
        assert_eq!(
            import(&s, ImportSource::Dir("/nonexistent".into()), Some(&pinned), &ImportOptions::default())
                .unwrap_err()
                .kind(),
            ErrorKind::InvalidArgument
        );
    }

    #[test]
    fn import_config_is_deterministic_json() {
        let (_d, s) = store();
        let (_r, a) = imported(&s, "det:1");
        // Labels and exposed ports come from HashMaps; the stored config must still be sorted.
        let v: serde_json::Value = serde_json::from_slice(&a.config_raw).unwrap();
        assert_eq!(serde_json::to_vec(&v).unwrap(), a.config_raw);
        assert_eq!(v["config"]["ExposedPorts"], serde_json::json!({"443/tcp": {}, "80/tcp": {}}));
        assert_eq!(v["history"][0]["comment"], "test");
    }
}
