//! `docker-archive:FILE[:REF]` for `copy`: the tar `docker save` writes, read in place and
//! written as a stream.
//!
//! Reading maps the archive and finds each member's bytes by their offset in the tar, so a layer
//! goes from the archive to a registry or layout without being copied or unpacked; the image is
//! described by a Docker schema 2 manifest made from the archive's `manifest.json` (layers keep
//! whatever compression the archive has). Writing streams each blob into a tar member as it
//! arrives (its size is known from the manifest), hashing it on the way, into a temp file that
//! is renamed over FILE only when everything matched.

use std::collections::HashMap;
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use oci_spec::image::{Descriptor, ImageManifest, MediaType};
use strata_store::digest::{self, Digest, Hasher};
use strata_store::image::docker;
use strata_store::unpack::sniff;
use strata_store::Reference;

use crate::error::{Error, ErrorKind, Result};

fn bad(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::InvalidArgument, format!("{} is not a usable docker archive: {why}", path.display()))
}

/// An opened docker archive: the mapped bytes and where each blob lies in them.
pub struct ArchiveSource {
    data: Bytes,
    blobs: HashMap<Digest, Range<usize>>,
    /// The synthesised manifest's bytes and digest.
    pub manifest: Vec<u8>,
    /// Its digest.
    pub digest: Digest,
    /// Its media type.
    pub media_type: MediaType,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Entry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// Resolves a member name through the archive's symlinks (docker links duplicate layers).
fn resolve(links: &HashMap<String, String>, name: &str) -> String {
    let mut n = name.trim_start_matches("./").to_string();
    for _ in 0..16 {
        let Some(target) = links.get(&n) else { break };
        if let Some(abs) = target.strip_prefix('/') {
            n = abs.trim_start_matches("./").to_string();
            continue;
        }
        let base = Path::new(&n).parent().map(|p| p.to_path_buf()).unwrap_or_default();
        let mut parts: Vec<String> = base.iter().map(|s| s.to_string_lossy().into_owned()).collect();
        for c in target.split('/') {
            match c {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                c => parts.push(c.to_string()),
            }
        }
        n = parts.join("/");
    }
    n
}

impl ArchiveSource {
    /// Opens the archive at `path` and picks the image `name` (a tag in its `RepoTags`), or its
    /// only image. The manifest made for it is an OCI one when `oci` (for an OCI layout, which
    /// its readers expect to hold OCI manifests), else Docker schema 2 (for registries, as
    /// `docker push` makes).
    pub fn open(path: &Path, name: Option<&str>, oci: bool) -> Result<ArchiveSource> {
        let f = std::fs::File::open(path)
            .map_err(|e| Error::new(ErrorKind::Io, format!("cannot open {}", path.display())).with_source(e))?;
        // SAFETY: the archive is only read; like any reader of a file that another process could
        // rewrite meanwhile, a change would at worst give wrong bytes, which every blob's digest
        // check (here or at the destination) refuses.
        let map = unsafe { memmap2::Mmap::map(&f) }
            .map_err(|e| Error::new(ErrorKind::Io, format!("cannot map {}", path.display())).with_source(e))?;
        if map.len() < 512 {
            return Err(bad(path, "it is too short to be a tar"));
        }
        if !matches!(sniff(&map), strata_store::image::Compression::None) {
            return Err(bad(path, "it is compressed; decompress it first (or use strata load)"));
        }
        let data = Bytes::from_owner(map);
        let mut members: HashMap<String, Range<usize>> = HashMap::new();
        let mut links: HashMap<String, String> = HashMap::new();
        let mut ar = tar::Archive::new(std::io::Cursor::new(&data[..]));
        for e in ar.entries().map_err(|e| bad(path, e))? {
            let e = e.map_err(|e| bad(path, e))?;
            let name = e.path().map_err(|e| bad(path, e))?.to_string_lossy().trim_start_matches("./").to_string();
            let kind = e.header().entry_type();
            if kind.is_symlink() || kind.is_hard_link() {
                if let Ok(Some(t)) = e.link_name() {
                    let t = t.to_string_lossy().into_owned();
                    // A hard link names its target from the archive root.
                    let t = if kind.is_hard_link() { format!("/{t}") } else { t };
                    links.insert(name, t);
                }
                continue;
            }
            let start = e.raw_file_position() as usize;
            let len = e.size() as usize;
            if start + len > data.len() {
                return Err(bad(path, format!("member {name} runs past the end")));
            }
            members.insert(name, start..start + len);
        }
        let get = |n: &str| -> Result<Range<usize>> {
            let r = resolve(&links, n);
            members.get(&r).cloned().ok_or_else(|| bad(path, format!("member {n} is missing")))
        };
        let mf = get("manifest.json")?;
        let entries: Vec<Entry> =
            serde_json::from_slice(&data[mf]).map_err(|e| bad(path, format!("manifest.json: {e}")))?;
        let entry = match name {
            Some(n) => {
                let want = Reference::parse(n).map_err(Error::from)?;
                entries
                    .iter()
                    .find(|e| e.repo_tags.iter().flatten().any(|t| Reference::parse(t).is_ok_and(|r| r == want)))
                    .ok_or_else(|| bad(path, format!("no image tagged {n}")))?
            }
            None if entries.len() == 1 => &entries[0],
            None => {
                return Err(bad(
                    path,
                    format!("it holds {} images: name one with docker-archive:FILE:REF", entries.len()),
                ))
            }
        };
        let mut blobs = HashMap::new();
        let cfg = get(&entry.config)?;
        let cfg_d = digest::sha256(&data[cfg.clone()]);
        blobs.insert(cfg_d.clone(), cfg.clone());
        let mut layers = Vec::new();
        for l in &entry.layers {
            let r = get(l)?;
            let bytes = &data[r.clone()];
            let d = digest::sha256(bytes);
            use strata_store::image::Compression as C;
            let mt = match (sniff(bytes), oci) {
                (C::Gzip, true) => MediaType::ImageLayerGzip,
                (C::Zstd, true) => MediaType::ImageLayerZstd,
                (C::None, true) => MediaType::ImageLayer,
                (C::Gzip, false) => MediaType::Other(docker::LAYER_GZIP.to_string()),
                (C::Zstd, false) => MediaType::Other(docker::LAYER_ZSTD.to_string()),
                (C::None, false) => MediaType::Other(docker::LAYER_TAR.to_string()),
            };
            layers.push(Descriptor::new(mt, bytes.len() as u64, d.clone()));
            blobs.insert(d, r);
        }
        let (mt, cfg_mt) = if oci {
            (MediaType::ImageManifest.to_string(), MediaType::ImageConfig.to_string())
        } else {
            (docker::MANIFEST.to_string(), docker::CONFIG.to_string())
        };
        let manifest: ImageManifest = serde_json::from_value(serde_json::json!({
            "schemaVersion": 2,
            "mediaType": mt,
            "config": {"mediaType": cfg_mt, "size": cfg.len(), "digest": cfg_d.to_string()},
            "layers": layers,
        }))
        .map_err(|e| bad(path, e))?;
        let manifest = serde_json::to_vec(&manifest).map_err(|e| bad(path, e))?;
        let digest = digest::sha256(&manifest);
        let media_type = MediaType::from(mt.as_str());
        Ok(ArchiveSource { data, blobs, manifest, digest, media_type })
    }

    /// Blob `d`'s bytes (a slice of the mapping), verified.
    pub fn blob(&self, d: &Digest) -> Result<Bytes> {
        let r = self
            .blobs
            .get(d)
            .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("blob {d} is not in the archive")))?;
        Ok(self.data.slice(r.clone()))
    }
}

/// A docker archive being written: tar members streamed into a temp file beside the target.
pub struct ArchiveWriter {
    file: tempfile::NamedTempFile,
    dest: PathBuf,
    config: Option<String>,
    layers: Vec<String>,
    /// The blob being written: descriptor, is-config, member name, hash and count so far.
    current: Option<(Descriptor, bool, String, Hasher, u64)>,
}

fn tar_header(name: &str, size: u64) -> Result<[u8; 512]> {
    let mut h = tar::Header::new_ustar();
    h.set_path(name).map_err(|e| Error::new(ErrorKind::Io, format!("tar name {name}")).with_source(e))?;
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    Ok(*h.as_bytes())
}

impl ArchiveWriter {
    /// Starts writing the archive that will replace `dest`.
    pub fn create(dest: &Path) -> Result<ArchiveWriter> {
        let dir = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let file = tempfile::NamedTempFile::new_in(dir).map_err(|e| {
            Error::new(ErrorKind::Io, format!("cannot create a file in {}", dir.display())).with_source(e)
        })?;
        Ok(ArchiveWriter { file, dest: dest.to_path_buf(), config: None, layers: Vec::new(), current: None })
    }

    fn io(&self, e: std::io::Error) -> Error {
        Error::new(ErrorKind::Io, format!("cannot write {}", self.dest.display())).with_source(e)
    }

    /// Writes the header of member `name` of `size` bytes.
    fn member(&mut self, name: &str, size: u64) -> Result<()> {
        let h = tar_header(name, size)?;
        self.file.write_all(&h).map_err(|e| self.io(e))
    }

    fn pad(&mut self, size: u64) -> Result<()> {
        let rem = (512 - size % 512) % 512;
        self.file.write_all(&vec![0u8; rem as usize]).map_err(|e| self.io(e))
    }

    /// Starts blob `desc` (the config when `config`): its bytes follow through
    /// [`ArchiveWriter::write`], then [`ArchiveWriter::end`] checks them.
    pub fn begin(&mut self, desc: &Descriptor, config: bool) -> Result<()> {
        let hex = digest::hex(desc.digest())?.to_string();
        let name = if config { format!("{hex}.json") } else { format!("{hex}/layer.tar") };
        if !config {
            let mut h = tar::Header::new_ustar();
            h.set_path(format!("{hex}/")).map_err(|e| Error::new(ErrorKind::Io, "tar name").with_source(e))?;
            h.set_size(0);
            h.set_mode(0o755);
            h.set_mtime(0);
            h.set_entry_type(tar::EntryType::Directory);
            h.set_cksum();
            self.file.write_all(h.as_bytes()).map_err(|e| self.io(e))?;
        }
        self.member(&name, desc.size())?;
        self.current = Some((desc.clone(), config, name, Hasher::new(), 0));
        Ok(())
    }

    /// Bytes of the current blob.
    pub fn write(&mut self, chunk: &[u8]) -> Result<()> {
        let Some((desc, _, _, hasher, n)) = self.current.as_mut() else {
            return Err(Error::new(ErrorKind::Protocol, "no blob begun"));
        };
        *n += chunk.len() as u64;
        if *n > desc.size() {
            return Err(Error::new(
                ErrorKind::DigestMismatch,
                format!("blob {}: more bytes than its size", desc.digest()),
            ));
        }
        hasher.update(chunk);
        self.file.write_all(chunk).map_err(|e| Error::new(ErrorKind::Io, "cannot write the archive").with_source(e))
    }

    /// Ends the current blob, checking its size and digest.
    pub fn end(&mut self) -> Result<()> {
        let Some((desc, config, name, hasher, n)) = self.current.take() else {
            return Err(Error::new(ErrorKind::Protocol, "no blob begun"));
        };
        let got = hasher.finish();
        if n != desc.size() || &got != desc.digest() {
            return Err(Error::new(
                ErrorKind::DigestMismatch,
                format!("blob {}: {n} bytes hashing to {got} arrived (corrupt or tampered)", desc.digest()),
            ));
        }
        self.pad(n)?;
        if config {
            self.config = Some(name);
        } else {
            self.layers.push(name);
        }
        Ok(())
    }

    /// Writes `manifest.json` naming `tag` and listing `layers` in order (a layer may appear
    /// more than once; its bytes are in the archive once), and moves the archive into place.
    pub fn finish(mut self, tag: Option<&Reference>, layers: &[Digest]) -> Result<()> {
        let config = self.config.clone().ok_or_else(|| Error::new(ErrorKind::Protocol, "the image has no config"))?;
        let tags: Vec<String> = tag.map(|t| t.familiar()).into_iter().collect();
        let mut names = Vec::with_capacity(layers.len());
        for l in layers {
            let name = format!("{}/layer.tar", digest::hex(l)?);
            if !self.layers.contains(&name) {
                return Err(Error::new(ErrorKind::Protocol, format!("layer {l} was not written to the archive")));
            }
            names.push(name);
        }
        let mf = serde_json::to_vec(&serde_json::json!([{"Config": config, "RepoTags": tags, "Layers": names}]))
            .expect("manifest.json serialises");
        self.member("manifest.json", mf.len() as u64)?;
        self.file.write_all(&mf).map_err(|e| self.io(e))?;
        self.pad(mf.len() as u64)?;
        self.file.write_all(&[0u8; 1024]).map_err(|e| self.io(e))?;
        // Readable like any file the user writes (a temp file starts as 0600).
        use std::os::unix::fs::PermissionsExt;
        let _ = self.file.as_file().set_permissions(std::fs::Permissions::from_mode(0o644));
        self.file.as_file().sync_all().map_err(|e| self.io(e))?;
        let dest = self.dest.clone();
        self.file
            .persist(&dest)
            .map_err(|e| Error::new(ErrorKind::Io, format!("cannot write {}", dest.display())).with_source(e.error))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_resolve_relative_to_their_member() {
        let mut links = HashMap::new();
        links.insert("b/layer.tar".to_string(), "../a/layer.tar".to_string());
        assert_eq!(resolve(&links, "b/layer.tar"), "a/layer.tar");
        assert_eq!(resolve(&links, "./c/layer.tar"), "c/layer.tar");
    }
}
