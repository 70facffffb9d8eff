//! The image model: a manifest descriptor from `index.json`, its manifest, its config and the
//! tags that name it. An image's ID is its config digest, as docker's is.

use std::collections::BTreeMap;

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType};

use crate::digest::{self, Digest};
use crate::error::{Error, ErrorKind, Result};
use crate::reference::Reference;
use crate::refs::{last_used, ref_name};
use crate::store::Store;

/// Docker schema 2 media types, accepted and kept as received.
pub mod docker {
    /// Docker image manifest (schema 2).
    pub const MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker manifest list.
    pub const MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    /// Docker image config.
    pub const CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    /// Docker gzip layer.
    pub const LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    /// Docker foreign gzip layer.
    pub const LAYER_FOREIGN_GZIP: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
    /// Docker uncompressed layer.
    pub const LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
    /// Docker zstd layer (as written by buildx).
    pub const LAYER_ZSTD: &str = "application/vnd.docker.image.rootfs.diff.tar.zstd";
}

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

/// The compression a layer media type announces, or an error for a media type that is not a
/// layer we can unpack.
pub fn layer_compression(mt: &MediaType) -> Result<Compression> {
    use MediaType::*;
    Ok(match mt {
        ImageLayer | ImageLayerNonDistributable => Compression::None,
        ImageLayerGzip | ImageLayerNonDistributableGzip => Compression::Gzip,
        ImageLayerZstd | ImageLayerNonDistributableZstd => Compression::Zstd,
        Other(s) if s == docker::LAYER_TAR => Compression::None,
        Other(s) if s == docker::LAYER_GZIP || s == docker::LAYER_FOREIGN_GZIP => Compression::Gzip,
        Other(s) if s == docker::LAYER_ZSTD => Compression::Zstd,
        other => {
            return Err(Error::new(
                ErrorKind::UnsupportedMediaType,
                format!("unsupported layer media type {other}: strata unpacks tar, tar+gzip and tar+zstd layers"),
            ))
        }
    })
}

/// Whether `mt` is an image manifest (OCI or Docker schema 2).
pub fn is_manifest(mt: &MediaType) -> bool {
    matches!(mt, MediaType::ImageManifest) || matches!(mt, MediaType::Other(s) if s == docker::MANIFEST)
}

/// Whether `mt` is an index (OCI index or Docker manifest list).
pub fn is_index(mt: &MediaType) -> bool {
    matches!(mt, MediaType::ImageIndex) || matches!(mt, MediaType::Other(s) if s == docker::MANIFEST_LIST)
}

/// The platform this binary runs on, in OCI words (`linux`, `amd64`).
pub fn host_platform() -> (&'static str, &'static str) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    };
    ("linux", arch)
}

/// An image in the store.
#[derive(Debug, Clone)]
pub struct Image {
    /// The manifest's descriptor (digest, size, media type).
    pub descriptor: Descriptor,
    /// The manifest.
    pub manifest: ImageManifest,
    /// The config.
    pub config: ImageConfiguration,
    /// The config's raw bytes, as stored (docker fields oci-spec does not model stay here).
    pub config_raw: Vec<u8>,
    /// The references that name this image, sorted.
    pub tags: Vec<Reference>,
    /// When it was last pulled, loaded, run or committed (Unix seconds).
    pub last_used: Option<i64>,
}

impl Image {
    /// The image ID: the config digest.
    pub fn id(&self) -> &Digest {
        self.manifest.config().digest()
    }
    /// The manifest digest.
    pub fn digest(&self) -> &Digest {
        self.descriptor.digest()
    }
    /// The layers' diff IDs, parsed, in order.
    pub fn diff_ids(&self) -> Result<Vec<Digest>> {
        self.config.rootfs().diff_ids().iter().map(|s| digest::parse(s)).collect()
    }
    /// The creation time from the config, in Unix seconds, if it parses.
    pub fn created(&self) -> Option<i64> {
        self.config.created().as_deref().and_then(crate::time::parse_rfc3339)
    }
}

impl Store {
    /// Reads a manifest blob (verified).
    pub fn read_manifest(&self, d: &Digest) -> Result<ImageManifest> {
        let bytes = self.read_verified(d)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::invalid_content(format!("manifest {d} is not a valid image manifest")).with_source(e))
    }

    /// Reads an index blob (verified).
    pub fn read_image_index(&self, d: &Digest) -> Result<ImageIndex> {
        let bytes = self.read_verified(d)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::invalid_content(format!("index {d} is not a valid image index")).with_source(e))
    }

    /// Reads a config blob (verified), returning it parsed and raw.
    pub fn read_config(&self, d: &Digest) -> Result<(ImageConfiguration, Vec<u8>)> {
        let bytes = self.read_verified(d)?;
        let cfg = serde_json::from_slice(&bytes)
            .map_err(|e| Error::invalid_content(format!("config {d} is not a valid image config")).with_source(e))?;
        Ok((cfg, bytes))
    }

    /// Loads the image whose manifest descriptor is `desc` (an index is resolved to the host
    /// platform's manifest).
    pub fn load_image(&self, desc: &Descriptor) -> Result<Image> {
        let mut desc = desc.clone();
        if is_index(desc.media_type()) {
            let idx = self.read_image_index(desc.digest())?;
            desc = select_platform(&idx, None)?.clone();
        }
        let manifest = self.read_manifest(desc.digest())?;
        let (config, config_raw) = self.read_config(manifest.config().digest())?;
        Ok(Image { descriptor: desc, manifest, config, config_raw, tags: Vec::new(), last_used: None })
    }

    /// Every image in the store, grouped by manifest, with their tags; sorted newest first.
    pub fn images(&self) -> Result<Vec<Image>> {
        let index = self.read_index()?;
        let mut by_digest: BTreeMap<String, (Descriptor, Vec<Reference>, Option<i64>)> = BTreeMap::new();
        for d in index.manifests() {
            let e = by_digest.entry(d.digest().to_string()).or_insert_with(|| (d.clone(), Vec::new(), None));
            if let Some(name) = ref_name(d) {
                if let Ok(r) = Reference::parse(name) {
                    e.1.push(r);
                }
            }
            e.2 = e.2.max(last_used(d));
        }
        let mut out = Vec::with_capacity(by_digest.len());
        for (_, (desc, mut tags, used)) in by_digest {
            let mut img = self.load_image(&desc).map_err(|e| e.context(format!("image {}", desc.digest())))?;
            tags.sort();
            img.tags = tags;
            img.last_used = used;
            out.push(img);
        }
        out.sort_by(|a, b| b.created().cmp(&a.created()).then_with(|| a.tags.cmp(&b.tags)));
        Ok(out)
    }

    /// Finds one image by what a user typed: a full or short image ID (with or without
    /// `sha256:`), `name[:tag]`, or `name@digest`.
    pub fn resolve_image(&self, input: &str) -> Result<Image> {
        let images = self.images()?;
        find_image(&images, input).cloned()
    }
}

/// Finds an image in `images` by ID, ID prefix, `name:tag` or `name@digest`, like docker.
pub fn find_image<'a>(images: &'a [Image], input: &str) -> Result<&'a Image> {
    let not_found = || Error::not_found(format!("no such image: {input}"));
    let hexpart = input.strip_prefix("sha256:").unwrap_or(input);
    let is_hex = !hexpart.is_empty()
        && hexpart.len() <= 64
        && hexpart.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    if is_hex && hexpart.len() == 64 {
        if let Some(i) = images.iter().find(|i| i.id().digest() == hexpart) {
            return Ok(i);
        }
    }
    if let Ok(r) = Reference::parse(input) {
        if let Some(d) = r.digest() {
            if let Some(i) = images.iter().find(|i| i.digest() == d) {
                return Ok(i);
            }
        } else if let Some(i) = images.iter().find(|i| i.tags.contains(&r)) {
            return Ok(i);
        }
    }
    if is_hex {
        let mut hits: Vec<&Image> = images.iter().filter(|i| i.id().digest().starts_with(hexpart)).collect();
        // Two manifests of one config (an OCI and a Docker one) are one image ID: not ambiguous.
        hits.dedup_by(|a, b| a.id() == b.id());
        if hits.iter().all(|h| h.id() == hits[0].id()) {
            hits.truncate(1);
        }
        match hits.len() {
            0 => {}
            1 => return Ok(hits[0]),
            _ => {
                return Err(Error::invalid_argument(format!(
                    "image ID prefix {input} is ambiguous: it matches {} images; give more digits",
                    hits.len()
                )))
            }
        }
    }
    Err(not_found())
}

/// A platform: `os/arch[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// The OS (`linux`).
    pub os: String,
    /// The architecture (`amd64`, `arm64`).
    pub arch: String,
    /// The variant (`v8`), if any.
    pub variant: Option<String>,
}

impl Platform {
    /// Parses `OS/ARCH[/VARIANT]`; `None` is the host's platform.
    pub fn parse(p: Option<&str>) -> Result<Platform> {
        let Some(p) = p else {
            let (os, arch) = host_platform();
            return Ok(Platform { os: os.to_string(), arch: arch.to_string(), variant: None });
        };
        let parts: Vec<&str> = p.split('/').collect();
        let ok = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        let (os, arch, variant) = match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => (os, arch, None),
            [os, arch, v] if ok(os) && ok(arch) && ok(v) => (os, arch, Some(v.to_string())),
            _ => {
                return Err(Error::invalid_argument(format!(
                    "invalid platform {p:?}: expected OS/ARCH[/VARIANT], e.g. linux/amd64 or linux/arm64/v8"
                )))
            }
        };
        Ok(Platform { os: os.to_string(), arch: arch.to_string(), variant })
    }

    /// Whether index entry `d` is for this platform (a variant left out matches any).
    pub fn matches(&self, d: &Descriptor) -> bool {
        let Some(p) = d.platform() else { return false };
        p.os().to_string() == self.os
            && p.architecture().to_string() == self.arch
            && self.variant.as_ref().is_none_or(|v| p.variant().as_deref() == Some(v.as_str()))
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// Picks the manifest for `platform` (`os/arch[/variant]`, default the host's) from an index.
pub fn select_platform<'a>(idx: &'a ImageIndex, platform: Option<&str>) -> Result<&'a Descriptor> {
    let want = Platform::parse(platform)?;
    let manifests: Vec<&Descriptor> = idx.manifests().iter().filter(|d| is_manifest(d.media_type())).collect();
    // An index with one manifest that names no platform: that one is meant for everyone.
    if platform.is_none() && manifests.len() == 1 && manifests[0].platform().is_none() {
        return Ok(manifests[0]);
    }
    manifests.into_iter().find(|d| want.matches(d)).ok_or_else(|| {
        Error::not_found(format!("no manifest for platform {want} in the index (use --platform to choose one it has)"))
    })
}
