//! Import: a root filesystem (a directory or a tarball) becomes a one-layer image, like
//! `docker import`; and the `--change` instructions (`CMD`, `ENV`, `EXPOSE`, …) that `import` and
//! `commit` apply to an image config.
//!
//! Lifecycle of an import: the tar stream (built from the directory, or the tarball decompressed)
//! goes through one pass that hashes it for the diff ID, gzips it and streams the result into a
//! blob ingest, which hashes the compressed bytes for the blob digest — no temp copy of the tar.
//! Then the config (host or chosen platform, `created` now, one history entry) and an OCI manifest
//! are written, the layer is unpacked into its snapshot (which checks the diff ID once more), and
//! only then is the image tagged. Everything is held by a lease until it is tagged, and a failed
//! import leaves nothing referenced, for GC to sweep.
//!
//! ```no_run
//! use strata_store::{Store, Reference};
//! use strata_store::import::{import, ImportOptions, ImportSource};
//! let store = Store::open("/var/lib/strata")?;
//! let opts = ImportOptions { changes: vec!["CMD [\"/bin/sh\"]".into()], ..Default::default() };
//! let r = Reference::parse("rootfs:1")?;
//! let img = import(&store, ImportSource::Dir("/srv/rootfs".into()), Some(&r), &opts)?;
//! println!("imported {}", img.id());
//! # Ok::<(), strata_store::Error>(())
//! ```

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use oci_spec::image::{
    Arch, Config, DescriptorBuilder, HistoryBuilder, ImageConfigurationBuilder, ImageManifestBuilder, MediaType, Os,
    RootFsBuilder,
};

use crate::archive::{self, canonical_json, decompressing, record_images, LEASE_TTL};
use crate::digest::HashingWriter;
use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::image::Image;
use crate::reference::Reference;
use crate::store::{now_unix, Store};

/// Where the root filesystem to import comes from.
pub enum ImportSource {
    /// A directory holding a root filesystem; it is archived in sorted order, without following
    /// symlinks, keeping modes, owners, times, hard links and device nodes (sockets are skipped).
    Dir(PathBuf),
    /// A tar file, plain or compressed with gzip or zstd (sniffed from its first bytes).
    Tarball(PathBuf),
    /// A tar stream (standard input, say), plain or compressed with gzip or zstd.
    Reader(Box<dyn Read>),
}

impl fmt::Debug for ImportSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImportSource::Dir(p) => f.debug_tuple("Dir").field(p).finish(),
            ImportSource::Tarball(p) => f.debug_tuple("Tarball").field(p).finish(),
            ImportSource::Reader(_) => f.write_str("Reader(..)"),
        }
    }
}

/// Options of [`import`].
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Dockerfile instructions applied to the config, in order (see [`apply_change`]).
    pub changes: Vec<String>,
    /// The history entry's comment (`docker import --message`).
    pub message: Option<String>,
    /// The image's platform as `os/arch[/variant]`; the host's by default.
    pub platform: Option<String>,
}

/// What the history entry of an imported layer says created it.
pub const CREATED_BY: &str = "strata import";

/// Imports a root filesystem as a one-layer image, tags it `reference` (or leaves it untagged, a
/// dangling image, when `None`) and returns it.
///
/// The layer is gzip-compressed; its diff ID and blob digest are computed in the same streaming
/// pass. Bad `changes` or a bad `platform` fail before anything is read.
pub fn import(
    store: &Store,
    source: ImportSource,
    reference: Option<&Reference>,
    opts: &ImportOptions,
) -> Result<Image> {
    if let Some(r) = reference {
        archive::check_taggable(r)?;
    }
    let crate::image::Platform { os, arch, variant } = crate::image::Platform::parse(opts.platform.as_deref())?;
    let mut run_config = Config::default();
    apply_changes(&mut run_config, &opts.changes)?;

    let lease = store.lease(LEASE_TTL)?;

    // One pass: tar bytes → diff ID hasher → gzip → ingest (which hashes the blob).
    let ingest = store.ingest()?;
    let gz = flate2::write::GzEncoder::new(ingest, flate2::Compression::default());
    let mut w = HashingWriter::new(gz);
    let tmp_dir = store.root().join(crate::store::TMP);
    match source {
        ImportSource::Dir(dir) => {
            tar_dir(&dir, &mut w).map_err(|e| e.context(format!("import of {}", dir.display())))?;
        }
        ImportSource::Tarball(path) => {
            let f = File::open(&path).at("cannot open", &path)?;
            copy_tar(f, &mut w, &format!("tarball {}", path.display()), &tmp_dir)?;
        }
        ImportSource::Reader(r) => copy_tar(r, &mut w, "the tar stream", &tmp_dir)?,
    }
    let (diff_id, _tar_size, gz) = w.finish();
    let ingest = gz.finish().at("cannot write the layer blob under", &tmp_dir)?;
    let layer = ingest.commit(None, None, &lease)?;

    let now = now_unix();
    let created = crate::time::format_rfc3339(now);
    let mut history = HistoryBuilder::default().created(created.clone()).created_by(CREATED_BY);
    if let Some(m) = &opts.message {
        history = history.comment(m.clone());
    }
    let history = history.build().map_err(spec_error)?;
    let rootfs =
        RootFsBuilder::default().typ("layers").diff_ids(vec![diff_id.to_string()]).build().map_err(spec_error)?;
    let mut config = ImageConfigurationBuilder::default()
        .created(created)
        .architecture(Arch::from(arch.as_str()))
        .os(Os::from(os.as_str()))
        .config(run_config)
        .rootfs(rootfs)
        .history(vec![history]);
    if let Some(v) = variant {
        config = config.variant(v);
    }
    let config = config.build().map_err(spec_error)?;
    let config_bytes = canonical_json(&config)?;
    let config_blob = store.write_blob(&config_bytes, None, &lease)?;

    let layers = vec![descriptor(MediaType::ImageLayerGzip, layer.size, &layer.digest)?];
    finish_image(store, &config_blob, layers, reference, &lease, now, "import")
}

/// Writes the OCI manifest of config `config` and `layers`, unpacks what is not unpacked yet,
/// tags it `reference` (or records it untagged) and returns the image (`what` names the
/// operation in errors).
pub(crate) fn finish_image(
    store: &Store,
    config: &crate::blob::Committed,
    layers: Vec<crate::Descriptor>,
    reference: Option<&Reference>,
    lease: &crate::store::Lease,
    now: i64,
    what: &str,
) -> Result<Image> {
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(descriptor(MediaType::ImageConfig, config.size, &config.digest)?)
        .layers(layers)
        .build()
        .map_err(spec_error)?;
    let manifest_bytes = canonical_json(&manifest)?;
    let manifest_blob = store.write_blob(&manifest_bytes, None, lease)?;
    let desc = descriptor(MediaType::ImageManifest, manifest_blob.size, &manifest_blob.digest)?;
    let mut image = store.load_image(&desc)?;
    store.unpack_image(&image, lease).map_err(|e| e.context(what))?;
    let tags: Vec<Reference> = reference.into_iter().cloned().collect();
    record_images(store, &[(desc, tags.clone())], now)?;
    image.tags = tags;
    image.last_used = Some(now);
    Ok(image)
}

pub(crate) fn descriptor(mt: MediaType, size: u64, digest: &crate::Digest) -> Result<crate::Descriptor> {
    DescriptorBuilder::default().media_type(mt).size(size).digest(digest.clone()).build().map_err(spec_error)
}

pub(crate) fn spec_error(e: oci_spec::OciSpecError) -> Error {
    Error::invalid_content("cannot build an OCI document").with_source(e)
}

/// Copies a tar stream (sniffed: plain, gzip or zstd) uncompressed into `w`.
fn copy_tar(r: impl Read, w: &mut impl Write, what: &str, tmp_dir: &Path) -> Result<()> {
    let bad =
        |e: io::Error| Error::invalid_content(format!("cannot read {what} (truncated or corrupt?)")).with_source(e);
    let mut r = decompressing(io::BufReader::with_capacity(1 << 20, r)).map_err(bad)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(bad(e)),
        };
        w.write_all(&buf[..n]).at("cannot write the layer blob under", tmp_dir)?;
    }
}

/// Writes the tree under `dir` as a tar stream into `out`: entries sorted by name, depth first,
/// symlinks not followed, mode/uid/gid/mtime kept, hard links detected by (device, inode), device
/// nodes and FIFOs kept, sockets skipped, and the `security.capability` xattr carried in a PAX
/// record (what docker keeps). The directory itself gets no entry. Returns `out`.
pub fn tar_dir<W: Write>(dir: &Path, out: W) -> Result<W> {
    tar_tree(dir, out, false)
}

/// [`tar_dir`] of an overlayfs upper directory, as a layer: whiteouts (0/0 character devices)
/// become `.wh.NAME` entries, opaque directories (`trusted.overlay.opaque=y`) get a
/// `.wh..wh..opq` entry, and every extended attribute but overlayfs' own is kept (PAX
/// `SCHILY.xattr.*`), so a commit of a container carries its deletions and xattrs.
pub fn tar_upper<W: Write>(dir: &Path, out: W) -> Result<W> {
    tar_tree(dir, out, true)
}

/// Every xattr of `path` (not following a symlink) but `trusted.overlay.*`, as PAX records.
fn xattr_records(path: &Path) -> Vec<u8> {
    let mut names = vec![0u8; 4096];
    let Ok(n) = rustix::fs::llistxattr(path, &mut names[..]) else { return Vec::new() };
    let mut out = Vec::new();
    for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if name.starts_with(b"trusted.overlay.") {
            continue;
        }
        let Ok(cname) = std::ffi::CString::new(name) else { continue };
        let mut val = vec![0u8; 64 << 10];
        if let Ok(vn) = rustix::fs::lgetxattr(path, cname.as_c_str(), &mut val[..]) {
            let mut key = b"SCHILY.xattr.".to_vec();
            key.extend_from_slice(name);
            out.extend(pax_record(&key, &val[..vn]));
        }
    }
    out
}

fn append_pax<W: Write>(b: &mut tar::Builder<W>, rec: &[u8], path: &Path) -> Result<()> {
    if rec.is_empty() {
        return Ok(());
    }
    let mut ph = tar::Header::new_ustar();
    ph.set_entry_type(tar::EntryType::XHeader);
    ph.set_size(rec.len() as u64);
    ph.set_mode(0o644);
    ph.set_mtime(0);
    b.append_data(&mut ph, "PaxHeader", rec).map_err(|e| Error::io("cannot write the tar stream for", path, e))
}

fn tar_tree<W: Write>(dir: &Path, out: W, upper: bool) -> Result<W> {
    let meta = fs::symlink_metadata(dir).at("cannot read", dir)?;
    if !meta.is_dir() {
        return Err(Error::invalid_argument(format!(
            "{} is not a directory: give the root filesystem's directory, or a tarball",
            dir.display()
        )));
    }
    let mut b = tar::Builder::new(out);
    let mut links: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    // Explicit stack (deep trees must not overflow the thread stack): (path on disk, tar name).
    let mut stack: Vec<(PathBuf, Vec<u8>)> = Vec::new();
    push_children(dir, &[], &mut stack)?;
    while let Some((path, name)) = stack.pop() {
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            // Gone since we listed its directory: like tar, leave it out.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("cannot stat", &path, e)),
        };
        let ft = meta.file_type();
        if ft.is_socket() {
            continue;
        }
        if upper && ft.is_char_device() && meta.rdev() == 0 {
            // An overlay whiteout: the OCI form is an empty `.wh.NAME` beside it.
            let (parent, base) = match name.iter().rposition(|&c| c == b'/') {
                Some(i) => (&name[..=i], &name[i + 1..]),
                None => (&name[..0], &name[..]),
            };
            let mut wh = parent.to_vec();
            wh.extend_from_slice(b".wh.");
            wh.extend_from_slice(base);
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o600);
            h.set_size(0);
            h.set_mtime(meta.mtime().max(0) as u64);
            b.append_data(&mut h, bytes_path(&wh), io::empty())
                .map_err(|e| Error::io("cannot write the tar stream for", &path, e))?;
            continue;
        }
        if upper && (ft.is_dir() || ft.is_file() || ft.is_symlink()) {
            append_pax(&mut b, &xattr_records(&path), &path)?;
        }
        let mut h = tar::Header::new_gnu();
        h.set_mode(meta.mode() & 0o7777);
        h.set_uid(u64::from(meta.uid()));
        h.set_gid(u64::from(meta.gid()));
        h.set_mtime(meta.mtime().max(0) as u64);
        h.set_size(0);
        let wr = |e: io::Error| Error::io("cannot write the tar stream for", &path, e);
        if !ft.is_dir() && meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = links.get(&key) {
                h.set_entry_type(tar::EntryType::Link);
                b.append_link(&mut h, bytes_path(&name), bytes_path(first)).map_err(wr)?;
                continue;
            }
            links.insert(key, name.clone());
        }
        if ft.is_dir() {
            h.set_entry_type(tar::EntryType::Directory);
            let mut dname = name.clone();
            dname.push(b'/');
            b.append_data(&mut h, bytes_path(&dname), io::empty()).map_err(wr)?;
            let mut opq = [0u8; 4];
            let opaque = upper
                && rustix::fs::lgetxattr(&path, "trusted.overlay.opaque", &mut opq[..])
                    .is_ok_and(|n| &opq[..n] == b"y");
            if opaque {
                let mut o = dname.clone();
                o.extend_from_slice(b".wh..wh..opq");
                let mut oh = tar::Header::new_gnu();
                oh.set_entry_type(tar::EntryType::Regular);
                oh.set_mode(0o600);
                oh.set_size(0);
                oh.set_mtime(meta.mtime().max(0) as u64);
                b.append_data(&mut oh, bytes_path(&o), io::empty()).map_err(wr)?;
            }
            push_children(&path, &name, &mut stack)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&path).at("cannot read symlink", &path)?;
            h.set_entry_type(tar::EntryType::Symlink);
            b.append_link(&mut h, bytes_path(&name), &target).map_err(wr)?;
        } else if ft.is_file() {
            let file = match OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("cannot open", &path, e)),
            };
            let fmeta = file.metadata().at("cannot stat", &path)?;
            let size = fmeta.len();
            h.set_size(size);
            h.set_mode(fmeta.mode() & 0o7777);
            h.set_mtime(fmeta.mtime().max(0) as u64);
            let mut cap = [0u8; 256];
            if upper {
                // All xattrs went out above.
            } else if let Ok(n) = rustix::fs::fgetxattr(&file, "security.capability", &mut cap[..]) {
                let rec = pax_record(b"SCHILY.xattr.security.capability", &cap[..n.min(cap.len())]);
                let mut ph = tar::Header::new_ustar();
                ph.set_entry_type(tar::EntryType::XHeader);
                ph.set_size(rec.len() as u64);
                ph.set_mode(0o644);
                ph.set_mtime(0);
                b.append_data(&mut ph, "PaxHeader", &rec[..]).map_err(wr)?;
            }
            h.set_entry_type(tar::EntryType::Regular);
            let exact = ExactReader { inner: file, remaining: size, path: &path };
            b.append_data(&mut h, bytes_path(&name), exact).map_err(|e| {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    Error::new(
                        ErrorKind::Io,
                        format!(
                            "{} shrank while it was being archived; retry when nothing writes to it",
                            path.display()
                        ),
                    )
                    .with_source(e)
                } else {
                    wr(e)
                }
            })?;
        } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
            let et = if ft.is_char_device() {
                tar::EntryType::Char
            } else if ft.is_block_device() {
                tar::EntryType::Block
            } else {
                tar::EntryType::Fifo
            };
            h.set_entry_type(et);
            if !ft.is_fifo() {
                let dev = meta.rdev();
                h.set_device_major(rustix::fs::major(dev)).map_err(wr)?;
                h.set_device_minor(rustix::fs::minor(dev)).map_err(wr)?;
            }
            b.append_data(&mut h, bytes_path(&name), io::empty()).map_err(wr)?;
        }
    }
    b.into_inner().at("cannot finish the tar stream for", dir)
}

fn bytes_path(b: &[u8]) -> &Path {
    Path::new(std::ffi::OsStr::from_bytes(b))
}

/// Pushes the entries of `dir` onto `stack` so that they pop in ascending byte order of name.
fn push_children(dir: &Path, prefix: &[u8], stack: &mut Vec<(PathBuf, Vec<u8>)>) -> Result<()> {
    let mut names: Vec<std::ffi::OsString> = Vec::new();
    for e in fs::read_dir(dir).at("cannot read directory", dir)? {
        names.push(e.at("cannot read directory", dir)?.file_name());
    }
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    for n in names.into_iter().rev() {
        let mut rel = prefix.to_vec();
        if !rel.is_empty() {
            rel.push(b'/');
        }
        rel.extend_from_slice(n.as_bytes());
        stack.push((dir.join(&n), rel));
    }
    Ok(())
}

/// One PAX extended-header record: `<len> <key>=<value>\n`, where `<len>` counts itself.
fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut rec = format!("{len} ").into_bytes();
    rec.extend_from_slice(key);
    rec.push(b'=');
    rec.extend_from_slice(value);
    rec.push(b'\n');
    rec
}

/// Yields exactly `remaining` bytes of `inner` (a file whose size went into the tar header), and
/// fails if it ends sooner: a short entry would corrupt the whole archive.
struct ExactReader<'p, R> {
    inner: R,
    remaining: u64,
    path: &'p Path,
}

impl<R: Read> Read for ExactReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let max = buf.len().min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("{} ended early", self.path.display())));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

// ---------------------------------------------------------------------------------------------
// --change

/// The instructions [`apply_change`] accepts.
pub const CHANGE_INSTRUCTIONS: &str = "CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, STOPSIGNAL, USER, VOLUME, WORKDIR";

/// Applies `changes` in order, as `docker import/commit --change` does: like [`apply_change`]
/// each, except that an `ENTRYPOINT` keeps a `CMD` set by an earlier change of the same list
/// (docker resets only the inherited `CMD`).
pub fn apply_changes(config: &mut Config, changes: &[String]) -> Result<()> {
    let mut cmd_set = false;
    for c in changes {
        let before = config.cmd().clone();
        apply_change(config, c)?;
        match instruction(c).to_ascii_uppercase().as_str() {
            "CMD" => cmd_set = true,
            "ENTRYPOINT" if cmd_set => {
                config.set_cmd(before);
            }
            _ => {}
        }
    }
    Ok(())
}

fn instruction(change: &str) -> &str {
    change.split_whitespace().next().unwrap_or("")
}

/// Applies one Dockerfile instruction to a config, as `docker import/commit --change` does.
///
/// - `CMD` / `ENTRYPOINT`: JSON array (exec form) or anything else (shell form, run as
///   `["/bin/sh", "-c", "…"]`). `ENTRYPOINT` clears the inherited `CMD`, as in a Dockerfile.
/// - `ENV k=v [k2=v2 …]` (quotes and `\` escapes as in a shell) or the legacy `ENV k v…`.
/// - `LABEL k=v [k2=v2 …]` (same syntax).
/// - `WORKDIR dir` (relative to the current one), `USER name[:group]`.
/// - `EXPOSE 80 443/udp 8000-8002` (protocol `tcp` by default).
/// - `VOLUME /a /b` or `VOLUME ["/a", "/b"]`.
/// - `STOPSIGNAL SIGTERM` (a name, with or without `SIG`, or a number).
///
/// The instruction is case-insensitive. As in a Dockerfile, `$VAR`, `${VAR}`, `${VAR:-word}` and
/// `${VAR:+word}` expand from the config's `Env` in all but `CMD` and `ENTRYPOINT`.
pub fn apply_change(config: &mut Config, change: &str) -> Result<()> {
    // Line continuations, as in a Dockerfile.
    let line = change.replace("\\\r\n", "").replace("\\\n", "");
    let line = line.trim();
    let (instr, rest) = match line.find(char::is_whitespace) {
        Some(i) => (&line[..i], line[i..].trim()),
        None => (line, ""),
    };
    if instr.is_empty() {
        return Err(Error::invalid_argument(format!(
            "empty change: give a Dockerfile instruction ({CHANGE_INSTRUCTIONS})"
        )));
    }
    let upper = instr.to_ascii_uppercase();
    let env_now = config.env().clone().unwrap_or_default();
    let lookup = move |name: &str| -> Option<String> {
        env_now.iter().rev().find_map(|e| e.strip_prefix(name)?.strip_prefix('=').map(str::to_string))
    };
    let env: Env = &lookup;
    let need_arg = |what: &str| Error::invalid_argument(format!("{upper} needs {what}, e.g. {}", example(&upper)));
    match upper.as_str() {
        "CMD" | "ENTRYPOINT" => {
            let argv = match json_array(rest) {
                Some(v) => v,
                None if rest.is_empty() => return Err(need_arg("a command")),
                None => vec!["/bin/sh".to_string(), "-c".to_string(), rest.to_string()],
            };
            if upper == "CMD" {
                config.set_cmd(Some(argv));
            } else {
                config.set_entrypoint(Some(argv));
                config.set_cmd(None);
            }
        }
        "ENV" | "LABEL" => {
            let pairs = key_values(&upper, rest, env)?;
            if upper == "ENV" {
                let mut list = config.env().clone().unwrap_or_default();
                for (k, v) in pairs {
                    let prefix = format!("{k}=");
                    match list.iter_mut().find(|e| e.starts_with(&prefix) || **e == k) {
                        Some(e) => *e = format!("{k}={v}"),
                        None => list.push(format!("{k}={v}")),
                    }
                }
                config.set_env(Some(list));
            } else {
                let labels = config.labels_mut().get_or_insert_with(HashMap::new);
                for (k, v) in pairs {
                    labels.insert(k, v);
                }
            }
        }
        "WORKDIR" => {
            let dir = process_word(rest, env)?;
            if dir.is_empty() {
                return Err(need_arg("a directory"));
            }
            let dir = if dir.starts_with('/') {
                dir
            } else {
                let cur = config.working_dir().clone().unwrap_or_default();
                clean_path(&format!("/{cur}/{dir}"))
            };
            config.set_working_dir(Some(dir));
        }
        "USER" => {
            let user = process_word(rest, env)?;
            if user.is_empty() {
                return Err(need_arg("a user"));
            }
            config.set_user(Some(user));
        }
        "EXPOSE" => {
            let specs = lex(rest, env, true)?;
            if specs.is_empty() {
                return Err(need_arg("at least one port"));
            }
            let mut ports = config.exposed_ports().clone().unwrap_or_default();
            for spec in specs {
                for p in parse_port_spec(&spec)? {
                    if !ports.contains(&p) {
                        ports.push(p);
                    }
                }
            }
            config.set_exposed_ports(Some(ports));
        }
        "VOLUME" => {
            let vols = match json_array(rest) {
                Some(v) => v,
                None => lex(rest, env, true)?,
            };
            if vols.is_empty() {
                return Err(need_arg("at least one path"));
            }
            let mut list = config.volumes().clone().unwrap_or_default();
            for v in vols {
                let v = v.trim().to_string();
                if v.is_empty() {
                    return Err(Error::invalid_argument("VOLUME paths cannot be empty strings"));
                }
                if !list.contains(&v) {
                    list.push(v);
                }
            }
            config.set_volumes(Some(list));
        }
        "STOPSIGNAL" => {
            let sig = process_word(rest, env)?;
            if sig.is_empty() {
                return Err(need_arg("a signal"));
            }
            if !valid_signal(&sig) {
                return Err(Error::invalid_argument(format!(
                    "STOPSIGNAL: invalid signal {sig:?}: give a name like SIGTERM (or TERM) or a number from 1 to 64"
                )));
            }
            config.set_stop_signal(Some(sig));
        }
        "HEALTHCHECK" | "ONBUILD" | "SHELL" | "FROM" | "RUN" | "COPY" | "ADD" | "ARG" | "MAINTAINER" => {
            return Err(Error::invalid_argument(format!(
                "{upper} cannot be applied as a change: the accepted instructions are {CHANGE_INSTRUCTIONS}"
            )));
        }
        _ => {
            return Err(Error::invalid_argument(format!(
                "unknown instruction {instr:?} in change {change:?}: the accepted instructions are {CHANGE_INSTRUCTIONS}"
            )));
        }
    }
    Ok(())
}

fn example(instr: &str) -> &'static str {
    match instr {
        "CMD" => r#"CMD ["/bin/sh"] or CMD echo hello"#,
        "ENTRYPOINT" => r#"ENTRYPOINT ["/app"]"#,
        "ENV" => "ENV KEY=value",
        "LABEL" => r#"LABEL key="value""#,
        "WORKDIR" => "WORKDIR /app",
        "USER" => "USER 1000:1000",
        "EXPOSE" => "EXPOSE 80 443/udp",
        "VOLUME" => "VOLUME /data",
        "STOPSIGNAL" => "STOPSIGNAL SIGTERM",
        _ => "",
    }
}

/// The exec (JSON array of strings) form, if `s` is one.
fn json_array(s: &str) -> Option<Vec<String>> {
    if !s.starts_with('[') {
        return None;
    }
    serde_json::from_str::<Vec<String>>(s).ok()
}

/// `k=v k2="v 2"` pairs, or the legacy `k v…` form (one pair, the rest of the line as value).
/// All values expand against the environment before this instruction, as docker does.
fn key_values(instr: &str, rest: &str, env: Env) -> Result<Vec<(String, String)>> {
    let words = raw_words(rest, instr)?;
    let Some(first) = words.first() else {
        return Err(Error::invalid_argument(format!(
            "{instr} needs at least one key=value pair, e.g. {}",
            example(instr)
        )));
    };
    let mut out = Vec::new();
    if !first.contains('=') {
        // Legacy form: `ENV KEY value with spaces`.
        let (k, v) = match rest.find(char::is_whitespace) {
            Some(i) => (&rest[..i], rest[i..].trim()),
            None => (rest, ""),
        };
        if v.is_empty() {
            return Err(Error::invalid_argument(format!("{instr} {k}: missing value; write {instr} {k}=VALUE")));
        }
        out.push((process_word(k, env)?, process_word(v, env)?));
    } else {
        for w in &words {
            let Some((k, v)) = w.split_once('=') else {
                return Err(Error::invalid_argument(format!(
                    "{instr}: cannot find '=' in {w:?}; every item must be KEY=VALUE (quote values with spaces)"
                )));
            };
            out.push((process_word(k, env)?, process_word(v, env)?));
        }
    }
    for (k, _) in &out {
        if k.is_empty() {
            return Err(Error::invalid_argument(format!("{instr}: a key cannot be empty")));
        }
        if instr == "ENV" && k.contains(char::is_whitespace) {
            return Err(Error::invalid_argument(format!("ENV: variable name {k:?} contains whitespace")));
        }
    }
    Ok(out)
}

/// Splits on whitespace outside quotes, keeping quotes and escapes for [`process_word`].
fn raw_words(s: &str, instr: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if let Some(q) = quote {
            cur.push(c);
            if c == '\\' && q == '"' {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            c if c.is_whitespace() => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            '\'' | '"' => {
                quote = Some(c);
                cur.push(c);
            }
            '\\' => {
                cur.push(c);
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            c => cur.push(c),
        }
    }
    if let Some(q) = quote {
        return Err(Error::invalid_argument(format!("{instr}: unmatched {q} quote in {s:?}")));
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Quote removal and variable expansion of one word (whitespace kept).
fn process_word(s: &str, env: Env) -> Result<String> {
    Ok(lex(s, env, false)?.into_iter().next().unwrap_or_default())
}

/// Docker's shell-word rules: `'…'` literal, `"…"` with `\"`, `\\`, `\$` escapes and expansion,
/// `\x` outside quotes is `x`, `$NAME` / `${NAME}` / `${NAME:-word}` / `${NAME:+word}` expand. With
/// `split`, unquoted whitespace (also inside expanded values) separates words.
fn lex(s: &str, env: Env, split: bool) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars().peekable();
    let unmatched = |q: char| Error::invalid_argument(format!("unmatched {q} quote in {s:?}"));
    while let Some(c) = chars.next() {
        match c {
            c if split && c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(x) => cur.push(x),
                        None => return Err(unmatched('\'')),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.peek().copied() {
                            Some(n @ ('"' | '\\' | '$')) => {
                                cur.push(n);
                                chars.next();
                            }
                            _ => cur.push('\\'),
                        },
                        Some('$') => cur.push_str(&expand(&mut chars, env, s)?),
                        Some(x) => cur.push(x),
                        None => return Err(unmatched('"')),
                    }
                }
            }
            '\\' => {
                in_word = true;
                cur.push(chars.next().unwrap_or('\\'));
            }
            '$' => {
                let v = expand(&mut chars, env, s)?;
                if !split {
                    in_word = true;
                    cur.push_str(&v);
                    continue;
                }
                let parts: Vec<&str> = v.split_whitespace().collect();
                if v.starts_with(char::is_whitespace) && in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
                for (i, p) in parts.iter().enumerate() {
                    if i > 0 {
                        out.push(std::mem::take(&mut cur));
                    }
                    cur.push_str(p);
                    in_word = true;
                }
                if !parts.is_empty() && v.ends_with(char::is_whitespace) {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

/// Expands what follows a `$` (already consumed).
/// Takes a variable name (letters, digits, `_`) off the front of `chars`.
fn take_name(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> String {
    let mut name = String::new();
    while let Some(&c) = chars.peek() {
        if !(c.is_ascii_alphanumeric() || c == '_') {
            break;
        }
        name.push(c);
        chars.next();
    }
    name
}

fn expand(chars: &mut std::iter::Peekable<std::str::Chars<'_>>, env: Env, whole: &str) -> Result<String> {
    let bad = |why: &str| Error::invalid_argument(format!("bad substitution in {whole:?}: {why}"));
    match chars.peek().copied() {
        Some('{') => {
            chars.next();
            let name = take_name(chars);
            if name.is_empty() {
                return Err(bad("missing variable name after ${"));
            }
            let value = env(&name);
            match chars.next() {
                Some('}') => Ok(value.unwrap_or_default()),
                Some(c @ (':' | '-' | '+')) => {
                    let (colon, op) = if c == ':' {
                        match chars.next() {
                            Some(op @ ('-' | '+')) => (true, op),
                            _ => return Err(bad("only ${VAR:-word} and ${VAR:+word} are supported")),
                        }
                    } else {
                        (false, c)
                    };
                    // The word runs to the matching '}'.
                    let mut word = String::new();
                    let mut depth = 0usize;
                    loop {
                        match chars.next() {
                            Some('}') if depth == 0 => break,
                            Some('}') => {
                                depth -= 1;
                                word.push('}');
                            }
                            Some('{') => {
                                depth += 1;
                                word.push('{');
                            }
                            Some(x) => word.push(x),
                            None => return Err(bad("missing '}'")),
                        }
                    }
                    let set = match &value {
                        Some(v) => !(colon && v.is_empty()),
                        None => false,
                    };
                    Ok(match (op, set) {
                        ('-', true) => value.unwrap_or_default(),
                        ('-', false) => process_word(&word, env)?,
                        (_, true) => process_word(&word, env)?,
                        (_, false) => String::new(),
                    })
                }
                Some(_) => Err(bad("only ${VAR}, ${VAR:-word} and ${VAR:+word} are supported")),
                None => Err(bad("missing '}'")),
            }
        }
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {
            let name = take_name(chars);
            Ok(env(&name).unwrap_or_default())
        }
        _ => Ok("$".to_string()),
    }
}

/// `80`, `80/tcp`, `53/UDP`, `8000-8002/tcp` → `["80/tcp"]`, … (one entry per port, as docker
/// expands ranges).
fn parse_port_spec(spec: &str) -> Result<Vec<String>> {
    let bad = |why: &str| {
        Error::invalid_argument(format!(
            "EXPOSE: invalid port {spec:?}: {why} (write PORT[-PORT][/tcp|/udp|/sctp], e.g. 80 or 53/udp)"
        ))
    };
    let (ports, proto) = match spec.split_once('/') {
        Some((p, proto)) => (p, proto.to_ascii_lowercase()),
        None => (spec, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(bad("the protocol must be tcp, udp or sctp"));
    }
    if ports.contains(':') {
        return Err(bad("EXPOSE takes container ports only; publish host ports when running"));
    }
    let num = |s: &str| -> Result<u16> {
        match s.parse::<u16>() {
            Ok(n) if n > 0 && s.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
            _ => Err(bad("a port is a number from 1 to 65535")),
        }
    };
    let (lo, hi) = match ports.split_once('-') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => {
            let n = num(ports)?;
            (n, n)
        }
    };
    if lo > hi {
        return Err(bad("the range's start is above its end"));
    }
    Ok((lo..=hi).map(|p| format!("{p}/{proto}")).collect())
}

fn valid_signal(s: &str) -> bool {
    if let Ok(n) = s.parse::<u32>() {
        return (1..=64).contains(&n);
    }
    let up = s.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    const NAMES: &[&str] = &[
        "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT", "KILL", "PIPE", "POLL",
        "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM", "TRAP", "TSTP", "TTIN", "TTOU", "URG", "USR1",
        "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ", "RTMIN", "RTMAX",
    ];
    if NAMES.contains(&name) {
        return true;
    }
    let rt = |prefix: &str, sep: char| {
        name.strip_prefix(prefix)
            .and_then(|r| r.strip_prefix(sep))
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| (1..=15).contains(&n))
    };
    rt("RTMIN", '+') || rt("RTMAX", '-')
}

/// Lexical clean of an absolute path (Go's `path.Clean`): no `.`, `..` or double slashes.
pub fn clean_path(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(changes: &[&str]) -> Config {
        let mut c = Config::default();
        apply_changes(&mut c, &changes.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        c
    }

    fn err(change: &str) -> Error {
        let mut c = Config::default();
        apply_change(&mut c, change).unwrap_err()
    }

    fn v(s: &[&str]) -> Option<Vec<String>> {
        Some(s.iter().map(|x| x.to_string()).collect())
    }

    #[test]
    fn cmd_and_entrypoint_forms() {
        assert_eq!(cfg(&[r#"CMD ["/bin/echo", "a b"]"#]).cmd(), &v(&["/bin/echo", "a b"]));
        assert_eq!(cfg(&["cmd echo $HOME 'x'"]).cmd(), &v(&["/bin/sh", "-c", "echo $HOME 'x'"]));
        // Single quotes are not JSON: shell form.
        assert_eq!(cfg(&["CMD ['a']"]).cmd(), &v(&["/bin/sh", "-c", "['a']"]));
        assert_eq!(cfg(&["Entrypoint [\"/app\"]"]).entrypoint(), &v(&["/app"]));
        assert_eq!(cfg(&["ENTRYPOINT []"]).entrypoint(), &v(&[]));
        assert_eq!(cfg(&["ENTRYPOINT /app --flag"]).entrypoint(), &v(&["/bin/sh", "-c", "/app --flag"]));
        // ENTRYPOINT resets an inherited CMD but keeps one set earlier in the same changes.
        let mut c = Config::default();
        c.set_cmd(v(&["old"]));
        apply_change(&mut c, r#"ENTRYPOINT ["/e"]"#).unwrap();
        assert_eq!(c.cmd(), &None);
        let c = cfg(&[r#"CMD ["x"]"#, r#"ENTRYPOINT ["/e"]"#]);
        assert_eq!((c.cmd(), c.entrypoint()), (&v(&["x"]), &v(&["/e"])));
        assert_eq!(err("CMD").kind(), ErrorKind::InvalidArgument);
        assert_eq!(err("ENTRYPOINT   ").kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn env_forms_quoting_and_expansion() {
        let c = cfg(&[
            r#"ENV A=1 B="two words" C='lit $A' D=a\ b"#,
            "env LEGACY value with  spaces",
            r#"ENV A=x E=$A F=${A}-${NOPE:-dflt} G=${A:+set} H="\$A" I=${NOPE:+no}"#,
        ]);
        assert_eq!(
            c.env(),
            &v(&[
                "A=x",
                "B=two words",
                "C=lit $A",
                "D=a b",
                "LEGACY=value with  spaces",
                // Expansions see the environment before the instruction (A=1).
                "E=1",
                "F=1-dflt",
                "G=set",
                "H=$A",
                "I=",
            ])
        );
        let c = cfg(&["ENV PATH=/usr/bin", "ENV PATH=$PATH:/opt/bin"]);
        assert_eq!(c.env(), &v(&["PATH=/usr/bin:/opt/bin"]));
        assert!(err("ENV").to_string().contains("key=value"));
        assert!(err("ENV A=1 B").to_string().contains("cannot find '='"));
        assert!(err("ENV ONLYKEY").to_string().contains("missing value"));
        assert!(err(r#"ENV A="unterminated"#).to_string().contains("unmatched"));
        assert!(err("ENV =x").to_string().contains("empty"));
        assert!(err("ENV A=${").to_string().contains("bad substitution"));
    }

    #[test]
    fn labels() {
        let c = cfg(&[r#"LABEL a=b "with space"="v v" c='x=y'"#, "LABEL a=override", "label legacy some value"]);
        let l = c.labels().clone().unwrap();
        assert_eq!(l.get("a").map(String::as_str), Some("override"));
        assert_eq!(l.get("with space").map(String::as_str), Some("v v"));
        assert_eq!(l.get("c").map(String::as_str), Some("x=y"));
        assert_eq!(l.get("legacy").map(String::as_str), Some("some value"));
        assert_eq!(err("LABEL").kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn workdir_user_stopsignal() {
        assert_eq!(cfg(&["WORKDIR /app"]).working_dir(), &Some("/app".into()));
        assert_eq!(cfg(&["WORKDIR /app", "workdir sub/../src"]).working_dir(), &Some("/app/src".into()));
        assert_eq!(cfg(&["WORKDIR rel"]).working_dir(), &Some("/rel".into()));
        assert_eq!(cfg(&["ENV D=/data", "WORKDIR $D/x"]).working_dir(), &Some("/data/x".into()));
        assert_eq!(cfg(&["USER 1000:1000"]).user(), &Some("1000:1000".into()));
        assert_eq!(cfg(&["user app"]).user(), &Some("app".into()));
        assert_eq!(cfg(&["STOPSIGNAL SIGKILL"]).stop_signal(), &Some("SIGKILL".into()));
        assert_eq!(cfg(&["STOPSIGNAL term"]).stop_signal(), &Some("term".into()));
        assert_eq!(cfg(&["STOPSIGNAL 9"]).stop_signal(), &Some("9".into()));
        assert_eq!(cfg(&["STOPSIGNAL SIGRTMIN+3"]).stop_signal(), &Some("SIGRTMIN+3".into()));
        assert!(err("STOPSIGNAL SIGNOPE").to_string().contains("invalid signal"));
        assert!(err("STOPSIGNAL 0").to_string().contains("invalid signal"));
        assert_eq!(err("WORKDIR").kind(), ErrorKind::InvalidArgument);
        assert_eq!(err("USER").kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn expose_and_volume() {
        let c = cfg(&["EXPOSE 80 443/udp 53/UDP", "expose 80/tcp 8000-8002"]);
        assert_eq!(c.exposed_ports(), &v(&["80/tcp", "443/udp", "53/udp", "8000/tcp", "8001/tcp", "8002/tcp"]));
        let c = cfg(&[r#"ENV PORTS="1 2""#, "EXPOSE $PORTS"]);
        assert_eq!(c.exposed_ports(), &v(&["1/tcp", "2/tcp"]));
        for bad in ["EXPOSE", "EXPOSE 0", "EXPOSE 70000", "EXPOSE 80/icmp", "EXPOSE 9-1", "EXPOSE 8080:80", "EXPOSE x"]
        {
            assert_eq!(err(bad).kind(), ErrorKind::InvalidArgument, "{bad}");
        }
        let c = cfg(&["VOLUME /a /b", r#"VOLUME ["/c", "/a"]"#]);
        assert_eq!(c.volumes(), &v(&["/a", "/b", "/c"]));
        assert!(err(r#"VOLUME [""]"#).to_string().contains("empty"));
        assert_eq!(err("VOLUME").kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn rejects_unknown_and_unsupported_instructions() {
        let e = err("RUN echo hi");
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(e.to_string().contains("RUN") && e.to_string().contains(CHANGE_INSTRUCTIONS));
        let e = err("FROBNICATE x");
        assert!(e.to_string().contains("FROBNICATE") && e.to_string().contains(CHANGE_INSTRUCTIONS));
        assert_eq!(err("HEALTHCHECK NONE").kind(), ErrorKind::InvalidArgument);
        assert_eq!(err("").kind(), ErrorKind::InvalidArgument);
        assert_eq!(err("   ").kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn line_continuation() {
        assert_eq!(cfg(&["ENV A=1 \\\n B=2"]).env(), &v(&["A=1", "B=2"]));
    }

    #[test]
    fn pax_record_length_counts_itself() {
        let r = pax_record(b"k", b"v");
        assert_eq!(r, b"6 k=v\n");
        let long = vec![b'x'; 95];
        let r = pax_record(b"k", &long);
        assert_eq!(r.len().to_string(), String::from_utf8_lossy(&r[..r.iter().position(|&b| b == b' ').unwrap()]));
    }

    #[test]
    fn platforms() {
        use crate::image::Platform;
        assert_eq!(
            Platform::parse(Some("linux/arm64/v8")).unwrap(),
            Platform { os: "linux".into(), arch: "arm64".into(), variant: Some("v8".into()) }
        );
        assert!(Platform::parse(Some("linux")).is_err());
        assert!(Platform::parse(Some("linux/../x")).is_err());
        assert_eq!(Platform::parse(None).unwrap().os, "linux");
        assert_eq!(Platform::parse(Some("linux/arm/v7")).unwrap().to_string(), "linux/arm/v7");
    }
}
