//! Layer unpacking: a compressed tar stream becomes one snapshot directory plus its file index.
//!
//! Safety: every entry is written relative to a directory file descriptor opened with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, so no entry can write outside the snapshot,
//! whatever symlinks earlier entries made. `..` components are refused, leading `/` and `./` are
//! stripped (as docker does), and a hard link may only point at a regular file created earlier in
//! the same layer. A refused entry fails the unpack with the layer and the entry named.
//!
//! Speed: on this kind of disk creating a file costs far more than writing its bytes, so each entry
//! costs as few syscalls as possible (create relative to a cached parent fd; chown, chmod and
//! xattrs only when they change something), decompression and hashing run on a second thread,
//! and directory times are set once at the end.
//!
//! The on-disk [`Format`] is a parameter: `Overlay` turns whiteouts into overlayfs markers (0/0
//! character devices, `trusted.overlay.opaque=y`), `Plain` applies them by deleting.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, BufRead, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::rc::Rc;
use std::sync::mpsc;

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags, Timestamps};
use rustix::io::Errno;

use crate::digest::{Digest, HashingReader};
use crate::direct::{self, DirectWriter};
use crate::error::{Error, ErrorKind, Result};
use crate::fileindex::{FileEntry, FileIndex, Kind};
use crate::image::Compression;

/// How whiteouts are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// overlayfs form: whiteouts become 0/0 character devices and opaque directories get
    /// `trusted.overlay.opaque=y`. Each layer goes into its own empty directory.
    Overlay,
    /// A plain tree: whiteouts delete what they name from the directory (layers applied in order
    /// onto one directory).
    Plain,
}

const WH_PREFIX: &[u8] = b".wh.";
const WH_OPAQUE: &[u8] = b".wh..wh..opq";

/// Sniffs the compression of a layer from its first bytes.
pub fn sniff(data: &[u8]) -> Compression {
    if data.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// A reader of the tar stream in a layer blob, its compression sniffed from its magic bytes.
pub fn decoder(data: &[u8]) -> io::Result<Box<dyn Read + '_>> {
    Ok(match sniff(data) {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(data)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(data)?),
        Compression::None => Box::new(data),
    })
}

/// A reader over the decompressed, hashed stream, produced on a helper thread in 1 MiB chunks;
/// spent chunks go back to the producer for reuse.
struct ChunkReader {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    spent: mpsc::Sender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    done: bool,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok(chunk)) if chunk.is_empty() => self.done = true,
                Ok(Ok(chunk)) => {
                    let old = std::mem::replace(&mut self.cur, chunk);
                    let _ = self.spent.send(old);
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(io::Error::new(io::ErrorKind::BrokenPipe, "decompressor stopped")),
            }
        }
        let n = (self.cur.len() - self.pos).min(buf.len());
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A reader of the tar stream in a layer blob that arrives as a stream (a download): the
/// compression is sniffed from the first bytes, which stay in the stream; the decompressor reads
/// the source's buffer directly.
pub fn stream_decoder<'a>(mut r: Box<dyn BufRead + Send + 'a>) -> io::Result<Box<dyn Read + 'a>> {
    let first = loop {
        match r.fill_buf() {
            Ok(b) => break b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    };
    if first.len() >= 4 {
        return decode(sniff(first), r);
    }
    // Fewer than 4 bytes in the first buffer: gather them, then put them back in front.
    let mut head = Vec::with_capacity(4);
    while head.len() < 4 {
        let b = r.fill_buf()?;
        if b.is_empty() {
            break;
        }
        let n = b.len().min(4 - head.len());
        head.extend_from_slice(&b[..n]);
        r.consume(n);
    }
    decode(sniff(&head), Box::new(io::Cursor::new(head).chain(r)))
}

fn decode<'a>(kind: Compression, r: Box<dyn BufRead + Send + 'a>) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match kind {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(r)?),
        Compression::None => Box::new(r),
    })
}

/// Where a layer's compressed bytes come from.
pub enum LayerBytes<'a> {
    /// All in memory (a mapped blob).
    Slice(&'a [u8]),
    /// Arriving as a stream; see [`stream_decoder`].
    Stream(Box<dyn BufRead + Send + 'a>),
}

/// Decompresses the layer (compression sniffed from its magic) and yields the tar stream, while
/// hashing it; returns the diff ID and byte count.
fn decompress_and_hash(
    data: LayerBytes<'_>,
    tx: mpsc::SyncSender<io::Result<Vec<u8>>>,
    spent: mpsc::Receiver<Vec<u8>>,
) -> Option<(Digest, u64)> {
    let made = match data {
        LayerBytes::Slice(d) => decoder(d),
        LayerBytes::Stream(r) => stream_decoder(r),
    };
    let inner = match made {
        Ok(d) => d,
        Err(e) => {
            let _ = tx.send(Err(e));
            return None;
        }
    };
    let mut r = HashingReader::new(inner);
    const CHUNK: usize = 1 << 20;
    loop {
        let mut buf = match spent.try_recv() {
            Ok(mut b) if b.capacity() >= CHUNK => {
                b.resize(CHUNK, 0);
                b
            }
            _ => vec![0u8; CHUNK],
        };
        let mut filled = 0;
        while filled < CHUNK {
            match r.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return None;
                }
            }
        }
        if filled == 0 {
            let _ = tx.send(Ok(Vec::new()));
            return Some(r.finish());
        }
        buf.truncate(filled);
        if tx.send(Ok(buf)).is_err() {
            return None;
        }
    }
}

/// Unpacks one layer blob into `dest` (an existing directory, empty for [`Format::Overlay`]) and
/// returns its file index. `what` names the layer in errors. The caller compares the returned
/// diff ID with the config's.
pub fn unpack_layer(data: &[u8], dest: &Path, format: Format, what: &str) -> Result<FileIndex> {
    unpack_layer_from(LayerBytes::Slice(data), dest, format, what)
}

/// [`unpack_layer`] from any [`LayerBytes`]: a stream is unpacked as it arrives.
pub fn unpack_layer_from(data: LayerBytes<'_>, dest: &Path, format: Format, what: &str) -> Result<FileIndex> {
    let (tx, rx) = mpsc::sync_channel(4);
    let (spent_tx, spent_rx) = mpsc::channel();
    std::thread::scope(|s| {
        let producer = s.spawn(move || decompress_and_hash(data, tx, spent_rx));
        // Chunks are large: the tar reader reads from them directly, with no buffer between.
        let reader = ChunkReader { rx, spent: spent_tx, cur: Vec::new(), pos: 0, done: false };
        let res = Unpacker::new(dest, format, what).and_then(|u| u.run(reader));
        let hashed = producer.join().expect("decompressor thread does not panic");
        let (entries, content_bytes) = res?;
        let (diff_id, tar_bytes) = hashed
            .ok_or_else(|| Error::invalid_content(format!("{what}: the layer stream ended early or is corrupt")))?;
        Ok(FileIndex { diff_id, content_bytes, tar_bytes, created: crate::store::now_unix(), entries })
    })
}

/// Unpacks a plain tar stream whose hashing the caller does (a commit hashes its layer once,
/// for blob and snapshot); returns the entries and the bytes of file content.
pub(crate) fn unpack_tar(tar: impl Read, dest: &Path, format: Format, what: &str) -> Result<(Vec<FileEntry>, u64)> {
    Unpacker::new(dest, format, what)?.run(tar)
}

struct Unpacker<'a> {
    root: Rc<OwnedFd>,
    format: Format,
    what: &'a str,
    /// A few recently used parent directories.
    dirs: Vec<(Vec<u8>, Rc<OwnedFd>)>,
    /// What this layer created, by path: kind and index into `entries`.
    created: HashMap<Vec<u8>, (Kind, usize)>,
    entries: Vec<FileEntry>,
    dir_times: Vec<(Vec<u8>, i64)>,
    umask: u32,
    root_user: bool,
    content_bytes: u64,
    buf: Vec<u8>,
    /// Staging for files written with direct I/O, made on first use.
    direct: Option<DirectWriter>,
}

fn errno_io(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

impl<'a> Unpacker<'a> {
    fn new(dest: &Path, format: Format, what: &'a str) -> Result<Self> {
        let root = rustix::fs::open(dest, OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| Error::io("cannot open", dest, errno_io(e)))?;
        Ok(Unpacker {
            root: Rc::new(root),
            format,
            what,
            dirs: Vec::new(),
            created: HashMap::new(),
            entries: Vec::new(),
            dir_times: Vec::new(),
            umask: process_umask(),
            root_user: rustix::process::geteuid().is_root(),
            content_bytes: 0,
            buf: vec![0u8; 256 * 1024],
            direct: None,
        })
    }

    fn refuse(&self, path: &[u8], why: &str) -> Error {
        Error::new(
            ErrorKind::UnsafePath,
            format!("{}: entry {:?} refused: {why}", self.what, String::from_utf8_lossy(path)),
        )
    }

    fn fail(&self, path: &[u8], op: &str, e: impl Into<io::Error>) -> Error {
        let e: io::Error = e.into();
        let kind = match e.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => ErrorKind::NoSpace,
            _ => ErrorKind::Io,
        };
        let mut msg = format!("{}: entry {:?}: cannot {op}", self.what, String::from_utf8_lossy(path));
        if kind == ErrorKind::NoSpace {
            msg.push_str(" (the disk is full: free space and retry)");
        }
        Error::new(kind, msg).with_source(e)
    }

    fn run(mut self, reader: impl Read) -> Result<(Vec<FileEntry>, u64)> {
        let mut ar = tar::Archive::new(reader);
        let entries = ar
            .entries()
            .map_err(|e| Error::invalid_content(format!("{}: not a tar stream", self.what)).with_source(e))?;
        for entry in entries {
            let entry = entry.map_err(|e| {
                Error::invalid_content(format!("{}: corrupt or truncated tar stream", self.what)).with_source(e)
            })?;
            self.entry(entry)?;
        }
        // Read to the end so that the whole stream (padding included) is hashed and a truncated
        // or corrupt compressed stream is noticed.
        let mut rest = ar.into_inner();
        io::copy(&mut rest, &mut io::sink()).map_err(|e| {
            Error::invalid_content(format!("{}: corrupt or truncated layer stream", self.what)).with_source(e)
        })?;
        self.finish_dirs()?;
        Ok((self.entries, self.content_bytes))
    }

    fn entry<R: Read>(&mut self, mut entry: tar::Entry<R>) -> Result<()> {
        let raw_path = entry.path_bytes().into_owned();
        let path = normalise(&raw_path).ok_or_else(|| self.refuse(&raw_path, "its path has a '..' component"))?;
        let header = entry.header();
        let et = header.entry_type();
        let mut uid = header.uid().unwrap_or(0) as u32;
        let mut gid = header.gid().unwrap_or(0) as u32;
        let mut mtime = header.mtime().unwrap_or(0) as i64;
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        let dev =
            (header.device_major().ok().flatten().unwrap_or(0), header.device_minor().ok().flatten().unwrap_or(0));
        let mut xattrs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        if let Ok(Some(exts)) = entry.pax_extensions() {
            for ext in exts.flatten() {
                let key = ext.key_bytes();
                let val = ext.value_bytes();
                if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    xattrs.push((name.to_vec(), val.to_vec()));
                } else if key == b"uid" {
                    uid = parse_num(val).unwrap_or(uid as i64) as u32;
                } else if key == b"gid" {
                    gid = parse_num(val).unwrap_or(gid as i64) as u32;
                } else if key == b"mtime" {
                    mtime = parse_num(val).unwrap_or(mtime);
                }
            }
        }
        let link = entry.link_name_bytes().map(|c| c.into_owned()).unwrap_or_default();
        if path.is_empty() {
            // The layer root ("./"): the snapshot directory itself is not changed.
            return Ok(());
        }
        let (parent, name) = split_last(&path);
        // Whiteouts.
        if name == WH_OPAQUE {
            let pfd = self.parent(parent, &path)?;
            match self.format {
                Format::Overlay => {
                    rustix::fs::fsetxattr(&pfd, "trusted.overlay.opaque", b"y", rustix::fs::XattrFlags::empty())
                        .map_err(|e| {
                            self.fail(&path, "mark the directory opaque (overlay whiteouts need root)", errno_io(e))
                        })?
                }
                Format::Plain => self.clear_dir_below(parent)?,
            }
            self.record(FileEntry::bare(parent.to_vec(), Kind::Opaque, 0));
            return Ok(());
        }
        if let Some(target) = name.strip_prefix(WH_PREFIX) {
            if target.is_empty() || target == b"." || target == b".." {
                return Err(self.refuse(&path, "invalid whiteout name"));
            }
            let pfd = self.parent(parent, &path)?;
            let gone = join(parent, target);
            // A whiteout applies to lower layers only (OCI image spec): what this layer made at
            // the path stays, and already hides lower files; a directory of this layer becomes
            // opaque so that lower layers' entries under it stay hidden.
            if let Some(&(kind, _)) = self.created.get(&gone) {
                if kind == Kind::Dir && self.format == Format::Overlay {
                    let dfd = self.parent(&gone, &path)?;
                    rustix::fs::fsetxattr(&dfd, "trusted.overlay.opaque", b"y", rustix::fs::XattrFlags::empty())
                        .map_err(|e| {
                            self.fail(&path, "mark the directory opaque (overlay whiteouts need root)", errno_io(e))
                        })?;
                }
                self.record(FileEntry::bare(gone, Kind::Whiteout, 0));
                return Ok(());
            }
            match self.format {
                Format::Overlay => {
                    self.remove_existing(&pfd, target)?;
                    rustix::fs::mknodat(
                        &pfd,
                        OsStr::from_bytes(target),
                        rustix::fs::FileType::CharacterDevice,
                        Mode::empty(),
                        0,
                    )
                    .map_err(|e| self.fail(&path, "create the overlay whiteout (needs root)", errno_io(e)))?;
                }
                Format::Plain => self.remove_existing(&pfd, target)?,
            }
            self.created.remove(&gone);
            self.record(FileEntry::bare(gone, Kind::Whiteout, 0));
            return Ok(());
        }

        let pfd = self.parent(parent, &path)?;
        let cname = OsStr::from_bytes(name);
        let mut rec = FileEntry {
            path: path.clone(),
            kind: Kind::File,
            mode,
            uid,
            gid,
            size: 0,
            mtime,
            dev: (0, 0),
            link: Vec::new(),
            digest: None,
        };
        use tar::EntryType as T;
        match et {
            T::Regular | T::Continuous | T::GNUSparse => {
                let fd = self.create(&pfd, name, &path, "create file", || {
                    rustix::fs::openat(
                        &pfd,
                        cname,
                        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::from_raw_mode(mode & 0o777),
                    )
                })?;
                let mut file = std::fs::File::from(fd);
                // The index's content digest is BLAKE3: several times faster than SHA-256 on the
                // writer thread, which is the bottleneck of file-heavy layers, and as strong.
                let mut hasher = blake3::Hasher::new();
                // Large files go to the device directly (see `direct`), small ones through the
                // page cache, where a direct write's round trip would cost more than the copy.
                let direct = entry.size() >= DIRECT_MIN && direct::try_enable(&file);
                let size = if direct {
                    self.write_direct(&mut entry, &file, &path, &mut hasher)?
                } else {
                    self.write_buffered(&mut entry, &mut file, &path, &mut hasher)?
                };
                self.set_owner_mode_fd(&file, &path, uid, gid, mode, &xattrs)?;
                rustix::fs::futimens(&file, &times(mtime)).map_err(|e| self.fail(&path, "set times", errno_io(e)))?;
                if !direct && size >= WRITEBACK_MIN {
                    start_writeback(&file);
                }
                rec.size = size;
                rec.digest = Some(*hasher.finalize().as_bytes());
                self.content_bytes += size;
            }
            T::Directory => {
                rec.kind = Kind::Dir;
                match rustix::fs::mkdirat(&pfd, cname, Mode::from_raw_mode(mode & 0o777)) {
                    Ok(()) => {}
                    Err(Errno::EXIST) => {
                        let st = rustix::fs::statat(&pfd, cname, AtFlags::SYMLINK_NOFOLLOW)
                            .map_err(|e| self.fail(&path, "stat", errno_io(e)))?;
                        if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::Directory {
                            self.remove_existing(&pfd, name)?;
                            rustix::fs::mkdirat(&pfd, cname, Mode::from_raw_mode(mode & 0o777))
                                .map_err(|e| self.fail(&path, "create directory", errno_io(e)))?;
                        } else {
                            rustix::fs::chmodat(&pfd, cname, Mode::from_raw_mode(mode), AtFlags::empty())
                                .map_err(|e| self.fail(&path, "chmod", errno_io(e)))?;
                        }
                    }
                    Err(e) => return Err(self.fail(&path, "create directory", errno_io(e))),
                }
                if uid != 0 || gid != 0 || mode & 0o7000 != 0 || mode & self.umask != 0 || !xattrs.is_empty() {
                    let dfd = rustix::fs::openat(
                        &pfd,
                        cname,
                        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|e| self.fail(&path, "open directory", errno_io(e)))?;
                    let f = std::fs::File::from(dfd);
                    self.set_owner_mode_fd(&f, &path, uid, gid, mode, &xattrs)?;
                }
                self.dir_times.push((path.clone(), mtime));
            }
            T::Symlink => {
                rec.kind = Kind::Symlink;
                rec.link = link.clone();
                self.create(&pfd, name, &path, "create symlink", || {
                    rustix::fs::symlinkat(OsStr::from_bytes(&link), &pfd, cname)
                })?;
                // A symlink's own mode means nothing on Linux.
                self.set_meta_at(&pfd, cname, &path, uid, gid, None, mtime)?;
                rec.mode = 0o777;
            }
            T::Link => {
                let target =
                    normalise(&link).ok_or_else(|| self.refuse(&path, "its hard link target has a '..' component"))?;
                let Some(&(tkind, ti)) = self.created.get(&target) else {
                    return Err(self.refuse(
                        &path,
                        &format!(
                            "hard link to {:?}, which is not a file of this layer",
                            String::from_utf8_lossy(&target)
                        ),
                    ));
                };
                if !matches!(tkind, Kind::File | Kind::Hardlink | Kind::Symlink | Kind::Fifo | Kind::Char | Kind::Block)
                {
                    return Err(self.refuse(&path, "hard link to a directory"));
                }
                let (tparent, tname) = split_last(&target);
                let tpfd = self.parent(tparent, &path)?;
                self.create(&pfd, name, &path, "create hard link", || {
                    rustix::fs::linkat(&tpfd, OsStr::from_bytes(tname), &pfd, cname, AtFlags::empty())
                })?;
                let t = &self.entries[ti];
                rec = FileEntry { path: path.clone(), kind: Kind::Hardlink, link: target.clone(), ..t.clone() };
            }
            T::Char | T::Block | T::Fifo => {
                let (ft, kind) = match et {
                    T::Char => (rustix::fs::FileType::CharacterDevice, Kind::Char),
                    T::Block => (rustix::fs::FileType::BlockDevice, Kind::Block),
                    _ => (rustix::fs::FileType::Fifo, Kind::Fifo),
                };
                rec.kind = kind;
                rec.dev = if kind == Kind::Fifo { (0, 0) } else { dev };
                let dev = rustix::fs::makedev(rec.dev.0, rec.dev.1);
                self.create(&pfd, name, &path, "create device node (needs root)", || {
                    rustix::fs::mknodat(&pfd, cname, ft, Mode::from_raw_mode(mode & 0o777), dev)
                })?;
                self.set_meta_at(&pfd, cname, &path, uid, gid, Some(mode), mtime)?;
            }
            // Metadata entries the tar reader already applied, and types a root filesystem does
            // not use (sockets cannot be archived meaningfully).
            _ => return Ok(()),
        }
        self.record(rec);
        Ok(())
    }

    /// Copies an entry's content into `file` through the page cache; returns its size.
    fn write_buffered<R: Read>(
        &mut self,
        entry: &mut tar::Entry<R>,
        file: &mut std::fs::File,
        path: &[u8],
        hasher: &mut blake3::Hasher,
    ) -> Result<u64> {
        let mut size = 0u64;
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => return Ok(size),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.truncated(path, e)),
            };
            io::Write::write_all(file, &self.buf[..n]).map_err(|e| self.fail(path, "write", e))?;
            hasher.update(&self.buf[..n]);
            size += n as u64;
        }
    }

    /// Copies an entry's content into `file` (opened with `O_DIRECT`): read straight into the
    /// aligned staging buffer, whole blocks written directly, the tail through the page cache.
    fn write_direct<R: Read>(
        &mut self,
        entry: &mut tar::Entry<R>,
        file: &std::fs::File,
        path: &[u8],
        hasher: &mut blake3::Hasher,
    ) -> Result<u64> {
        let mut w = self.direct.take().unwrap_or_else(|| DirectWriter::new(0, true));
        w.reset(true);
        let res = (|| {
            loop {
                let spare = w.buf().spare();
                let n = match entry.read(spare) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(self.truncated(path, e)),
                };
                hasher.update(&w.buf().spare()[..n]);
                w.buf().advance(n);
                w.filled(file).map_err(|e| self.fail(path, "write", e))?;
            }
            w.finish(file).map_err(|e| self.fail(path, "write", e))?;
            Ok(w.file_end())
        })();
        self.direct = Some(w);
        res
    }

    fn truncated(&self, path: &[u8], e: io::Error) -> Error {
        Error::invalid_content(format!("{}: entry {:?}: truncated content", self.what, String::from_utf8_lossy(path)))
            .with_source(e)
    }

    /// Runs `op` (which creates `name` in `pfd`); if something is there already, removes it and
    /// runs `op` once more, so a later entry of the same path replaces an earlier one.
    fn create<T>(
        &mut self,
        pfd: &OwnedFd,
        name: &[u8],
        path: &[u8],
        what: &str,
        mut op: impl FnMut() -> rustix::io::Result<T>,
    ) -> Result<T> {
        let res = match op() {
            Err(Errno::EXIST) => {
                self.remove_existing(pfd, name)?;
                op()
            }
            other => other,
        };
        res.map_err(|e| self.fail(path, what, errno_io(e)))
    }

    /// Owner, mode (when given and the create call could not set it) and times of `name` in
    /// `pfd`, not following a symlink.
    #[allow(clippy::too_many_arguments)]
    fn set_meta_at(
        &self,
        pfd: &OwnedFd,
        name: &OsStr,
        path: &[u8],
        uid: u32,
        gid: u32,
        mode: Option<u32>,
        mtime: i64,
    ) -> Result<()> {
        if self.root_user && (uid != 0 || gid != 0) {
            let (u, g) = (rustix::fs::Uid::from_raw(uid), rustix::fs::Gid::from_raw(gid));
            rustix::fs::chownat(pfd, name, Some(u), Some(g), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| self.fail(path, "chown", errno_io(e)))?;
        }
        if let Some(mode) = mode.filter(|m| m & 0o7000 != 0 || m & self.umask != 0) {
            rustix::fs::chmodat(pfd, name, Mode::from_raw_mode(mode), AtFlags::empty())
                .map_err(|e| self.fail(path, "chmod", errno_io(e)))?;
        }
        rustix::fs::utimensat(pfd, name, &times(mtime), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| self.fail(path, "set times", errno_io(e)))
    }

    fn record(&mut self, e: FileEntry) {
        if !matches!(e.kind, Kind::Whiteout | Kind::Opaque) {
            self.created.insert(e.path.clone(), (e.kind, self.entries.len()));
        }
        self.entries.push(e);
    }

    fn set_owner_mode_fd(
        &self,
        f: &std::fs::File,
        path: &[u8],
        uid: u32,
        gid: u32,
        mode: u32,
        xattrs: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<()> {
        if (uid != 0 || gid != 0) && self.root_user {
            rustix::fs::fchown(f, Some(rustix::fs::Uid::from_raw(uid)), Some(rustix::fs::Gid::from_raw(gid)))
                .map_err(|e| self.fail(path, "chown", errno_io(e)))?;
        }
        // chown clears setuid/setgid, so chmod comes after it; skip it when create's mode
        // (minus the umask) already was right.
        if mode & 0o7000 != 0 || mode & self.umask != 0 {
            rustix::fs::fchmod(f, Mode::from_raw_mode(mode)).map_err(|e| self.fail(path, "chmod", errno_io(e)))?;
        }
        for (k, v) in xattrs {
            match rustix::fs::fsetxattr(f, OsStr::from_bytes(k), v, rustix::fs::XattrFlags::empty()) {
                Ok(()) => {}
                // A file system without xattrs, or a namespace we may not write: docker ignores
                // these too rather than fail the pull.
                Err(Errno::OPNOTSUPP) | Err(Errno::PERM) => {}
                Err(e) => return Err(self.fail(path, "set xattr", errno_io(e))),
            }
        }
        Ok(())
    }

    /// The parent directory of an entry, opened beneath the root without following any symlink.
    /// Missing parents are created (0755, as docker does for layers that omit them).
    /// The fd is shared with a small cache (most entries of a layer sit in the directory of the
    /// entry before), so a hit costs no syscall.
    fn parent(&mut self, parent: &[u8], entry: &[u8]) -> Result<Rc<OwnedFd>> {
        if parent.is_empty() {
            return Ok(self.root.clone());
        }
        if let Some(i) = self.dirs.iter().position(|(p, _)| p == parent) {
            let hit = self.dirs.remove(i);
            let fd = hit.1.clone();
            self.dirs.insert(0, hit);
            return Ok(fd);
        }
        let fd = match open_beneath(self.root.as_fd(), parent) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => self.make_parents(parent, entry)?,
            Err(Errno::LOOP) | Err(Errno::XDEV) | Err(Errno::NOTDIR) => {
                return Err(self.refuse(
                    entry,
                    &format!("its parent {:?} is a symlink or not a directory", String::from_utf8_lossy(parent)),
                ))
            }
            Err(e) => return Err(self.fail(entry, "open parent directory", errno_io(e))),
        };
        let fd = Rc::new(fd);
        self.dirs.insert(0, (parent.to_vec(), fd.clone()));
        self.dirs.truncate(16);
        Ok(fd)
    }

    fn make_parents(&mut self, parent: &[u8], entry: &[u8]) -> Result<OwnedFd> {
        let mut cur =
            rustix::io::fcntl_dupfd_cloexec(&self.root, 0).map_err(|e| self.fail(entry, "dup", errno_io(e)))?;
        let mut sofar: Vec<u8> = Vec::new();
        for comp in parent.split(|&b| b == b'/') {
            if !sofar.is_empty() {
                sofar.push(b'/');
            }
            sofar.extend_from_slice(comp);
            let c = OsStr::from_bytes(comp);
            match rustix::fs::mkdirat(&cur, c, Mode::from_raw_mode(0o755)) {
                Ok(()) => {
                    self.record(FileEntry::bare(sofar.clone(), Kind::Dir, 0o755));
                }
                Err(Errno::EXIST) => {}
                Err(e) => return Err(self.fail(entry, "create parent directory", errno_io(e))),
            }
            cur = match rustix::fs::openat(
                &cur,
                c,
                OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => fd,
                Err(Errno::LOOP) | Err(Errno::NOTDIR) => {
                    return Err(self.refuse(
                        entry,
                        &format!("its parent {:?} is a symlink or not a directory", String::from_utf8_lossy(&sofar)),
                    ))
                }
                Err(e) => return Err(self.fail(entry, "open parent directory", errno_io(e))),
            };
        }
        Ok(cur)
    }

    /// Removes whatever is at `name` in `pfd` (a directory recursively), so a later entry of the
    /// same path replaces it, as in tar and docker.
    fn remove_existing(&mut self, pfd: &OwnedFd, name: &[u8]) -> Result<()> {
        let c = OsStr::from_bytes(name);
        match rustix::fs::unlinkat(pfd, c, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(Errno::ISDIR) | Err(Errno::PERM) => {
                self.dirs.clear();
                remove_dir_at(pfd.as_fd(), name).map_err(|e| self.fail(name, "remove directory", errno_io(e)))
            }
            Err(e) => Err(self.fail(name, "remove", errno_io(e))),
        }
    }

    /// Plain format, opaque marker: remove everything under `dir` this layer did not create.
    fn clear_dir_below(&mut self, dir: &[u8]) -> Result<()> {
        let dfd = self.parent(dir, dir)?;
        let names: Vec<Vec<u8>> = rustix::fs::Dir::read_from(&dfd)
            .map_err(|e| self.fail(dir, "read directory", errno_io(e)))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_bytes().to_vec())
            .filter(|n| n != b"." && n != b"..")
            .collect();
        for n in names {
            if !self.created.contains_key(&join(dir, &n)) {
                self.remove_existing(&dfd, &n)?;
            }
        }
        Ok(())
    }

    fn finish_dirs(&mut self) -> Result<()> {
        let mut times_ = std::mem::take(&mut self.dir_times);
        // Deepest first, so that setting a child's time does not change its parent's afterwards.
        times_.sort_by_key(|(p, _)| std::cmp::Reverse(p.iter().filter(|&&b| b == b'/').count()));
        self.dirs.clear();
        for (p, mtime) in times_ {
            if !matches!(self.created.get(&p), Some((Kind::Dir, _))) {
                continue;
            }
            let (parent, name) = split_last(&p);
            let pfd = self.parent(parent, &p)?;
            rustix::fs::utimensat(&pfd, OsStr::from_bytes(name), &times(mtime), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| self.fail(&p, "set times", errno_io(e)))?;
        }
        Ok(())
    }
}

fn remove_dir_at(dir: BorrowedFd<'_>, name: &[u8]) -> rustix::io::Result<()> {
    let c = OsStr::from_bytes(name);
    let sub = rustix::fs::openat(
        dir,
        c,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let names: Vec<Vec<u8>> = rustix::fs::Dir::read_from(&sub)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_bytes().to_vec())
        .filter(|n| n != b"." && n != b"..")
        .collect();
    for n in names {
        match rustix::fs::unlinkat(&sub, OsStr::from_bytes(&n), AtFlags::empty()) {
            Ok(()) => {}
            Err(Errno::ISDIR) | Err(Errno::PERM) => remove_dir_at(sub.as_fd(), &n)?,
            Err(e) => return Err(e),
        }
    }
    rustix::fs::unlinkat(dir, c, AtFlags::REMOVEDIR)
}

/// Opens `path` (relative, no `..`) beneath `root` without following any symlink. The kernel
/// enforces it (openat2 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS); on kernels before 5.6 each
/// component is opened with O_NOFOLLOW instead.
pub(crate) fn open_beneath(root: BorrowedFd<'_>, path: &[u8]) -> rustix::io::Result<OwnedFd> {
    let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    match rustix::fs::openat2(
        root,
        OsStr::from_bytes(path),
        flags,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_XDEV,
    ) {
        Err(Errno::NOSYS) => {
            let mut cur = rustix::io::fcntl_dupfd_cloexec(root, 0)?;
            for comp in path.split(|&b| b == b'/') {
                cur = rustix::fs::openat(&cur, OsStr::from_bytes(comp), flags, Mode::empty())?;
            }
            Ok(cur)
        }
        other => other,
    }
}

/// Files at least this big have their writeback started as soon as they are written.
const WRITEBACK_MIN: u64 = 256 << 10;

/// Files from this size up are written with direct I/O (see [`crate::direct`]). Below it a
/// direct write's round trip to the device (~150 µs here) costs more than the page-cache copy.
const DIRECT_MIN: u64 = 64 << 10;

/// Starts writing a file's dirty pages to disk without waiting (`sync_file_range(WRITE)`), so that
/// the one `syncfs` before a snapshot becomes visible finds most of the data already on its way
/// and the disk works while the CPU unpacks the rest. A hint only: errors are ignored (the
/// `syncfs` reports real ones).
fn start_writeback(f: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open fd; the call only schedules writeback of its page-cache range.
    unsafe {
        libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// Strips leading `/` and `./`, drops `.` components and trailing slashes; `None` on `..`.
pub(crate) fn normalise(p: &[u8]) -> Option<Vec<u8>> {
    let mut out: Vec<u8> = Vec::with_capacity(p.len());
    for comp in p.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => return None,
            c => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(c);
            }
        }
    }
    Some(out)
}

fn split_last(p: &[u8]) -> (&[u8], &[u8]) {
    match p.iter().rposition(|&b| b == b'/') {
        Some(i) => (&p[..i], &p[i + 1..]),
        None => (&[], p),
    }
}

fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    if parent.is_empty() {
        name.to_vec()
    } else {
        let mut v = parent.to_vec();
        v.push(b'/');
        v.extend_from_slice(name);
        v
    }
}

fn parse_num(v: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(v).ok()?;
    let s = s.split('.').next()?;
    s.parse().ok()
}

fn times(mtime: i64) -> Timestamps {
    let ts = rustix::fs::Timespec { tv_sec: mtime, tv_nsec: 0 };
    Timestamps { last_access: ts, last_modification: ts }
}

/// The process umask, read from /proc (Linux ≥ 4.7) without changing it; 022 if unknown.
fn process_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("Umask:")).and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn header(path: &str, kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_mtime(1_600_000_000);
        let name = path.as_bytes();
        h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name);
        h.set_cksum();
        h
    }

    #[derive(Default)]
    struct T(Vec<u8>);
    impl T {
        fn add(mut self, path: &str, kind: tar::EntryType, data: &[u8], mode: u32, link: Option<&str>) -> Self {
            let mut b = tar::Builder::new(Vec::new());
            let mut h = header(path, kind, data.len() as u64, mode);
            if let Some(l) = link {
                let lb = l.as_bytes();
                h.as_gnu_mut().unwrap().linkname[..lb.len()].copy_from_slice(lb);
                h.set_cksum();
            }
            b.append(&h, data).unwrap();
            let mut bytes = b.into_inner().unwrap();
            bytes.truncate(bytes.len() - 1024); // drop the end-of-archive blocks
            self.0.extend_from_slice(&bytes);
            self
        }
        fn file(self, p: &str, d: &[u8]) -> Self {
            self.add(p, tar::EntryType::Regular, d, 0o644, None)
        }
        fn dir(self, p: &str, mode: u32) -> Self {
            self.add(p, tar::EntryType::Directory, b"", mode, None)
        }
        fn symlink(self, p: &str, t: &str) -> Self {
            self.add(p, tar::EntryType::Symlink, b"", 0o777, Some(t))
        }
        fn hardlink(self, p: &str, t: &str) -> Self {
            self.add(p, tar::EntryType::Link, b"", 0o644, Some(t))
        }
        fn done(mut self) -> Vec<u8> {
            self.0.extend_from_slice(&[0u8; 1024]);
            self.0
        }
    }

    fn unpack(tar: &[u8]) -> (tempfile::TempDir, Result<FileIndex>) {
        let d = tempfile::tempdir_in("/var/tmp").unwrap();
        let r = unpack_layer(tar, d.path(), Format::Overlay, "layer test");
        (d, r)
    }

    #[test]
    fn unpacks_files_dirs_links_and_records_them() {
        let tar = T::default()
            .dir("etc/", 0o755)
            .file("etc/hostname", b"box\n")
            .dir("secret", 0o700)
            .symlink("etc/link", "/etc/hostname")
            .hardlink("etc/hard", "etc/hostname")
            .file("/abs/file", b"abs")
            .file("./etc/hostname", b"second wins\n")
            .done();
        let gz = {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&tar).unwrap();
            e.finish().unwrap()
        };
        let (d, r) = unpack(&gz);
        let idx = r.unwrap();
        assert_eq!(idx.diff_id, crate::digest::sha256(&tar));
        assert_eq!(idx.tar_bytes, tar.len() as u64);
        let root = d.path();
        assert_eq!(std::fs::read(root.join("etc/hostname")).unwrap(), b"second wins\n");
        assert_eq!(std::fs::read_link(root.join("etc/link")).unwrap(), Path::new("/etc/hostname"));
        assert_eq!(std::fs::read(root.join("abs/file")).unwrap(), b"abs");
        assert_eq!(std::fs::metadata(root.join("secret")).unwrap().permissions().mode() & 0o7777, 0o700);
        assert_eq!(std::fs::metadata(root.join("secret")).unwrap().mtime(), 1_600_000_000);
        let kinds: Vec<(String, Kind)> =
            idx.entries.iter().map(|e| (String::from_utf8_lossy(&e.path).into_owned(), e.kind)).collect();
        assert!(kinds.contains(&("etc/hard".into(), Kind::Hardlink)));
        assert!(kinds.contains(&("abs".into(), Kind::Dir)), "implicit parent recorded: {kinds:?}");
        let f = idx.entries.iter().find(|e| e.path == b"etc/hostname").unwrap();
        assert_eq!(&f.digest.unwrap(), blake3::hash(b"box\n").as_bytes());
    }

    #[test]
    fn large_files_are_written_directly_and_intact() {
        // Sizes around the direct-I/O threshold, the staging buffer and the block size; a small
        // file between them, and a later entry replacing a large one.
        let sizes =
            [DIRECT_MIN as usize - 1, DIRECT_MIN as usize, DIRECT_MIN as usize + 1, (1 << 20) + 17, (5 << 19) + 4095];
        let data: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(k, &n)| (0..n).map(|i| (i.wrapping_mul(31) ^ (i >> 9) ^ k) as u8).collect())
            .collect();
        let mut t = T::default().dir("big/", 0o755);
        for (k, d) in data.iter().enumerate() {
            t = t.file(&format!("big/f{k}"), d).file(&format!("big/s{k}"), b"small");
        }
        let tar = t.file("big/f4", &data[3]).hardlink("big/h3", "big/f3").done();
        let (d, r) = unpack(&tar);
        let idx = r.unwrap();
        assert_eq!(idx.diff_id, crate::digest::sha256(&tar));
        let f0 = d.path().join("big/f0");
        if let Some(cached) = direct::cached_pages(&f0) {
            assert_eq!(cached, (DIRECT_MIN as usize - 1).div_ceil(4096), "small files stay buffered");
        }
        for (k, want) in data.iter().enumerate() {
            let want = if k == 4 { &data[3] } else { want };
            let p = d.path().join(format!("big/f{k}"));
            if direct::wanted() && want.len() as u64 >= DIRECT_MIN {
                // Written around the page cache: at most the unaligned tail is cached.
                let cached = direct::cached_pages(&p).unwrap_or(0);
                assert!(cached <= 1, "f{k} ({} bytes): {cached} pages cached", want.len());
            }
            assert_eq!(&std::fs::read(&p).unwrap(), want, "f{k}");
            let e = idx.entries.iter().rev().find(|e| e.path == format!("big/f{k}").as_bytes()).unwrap();
            assert_eq!(e.size, want.len() as u64);
            assert_eq!(&e.digest.unwrap(), blake3::hash(want).as_bytes(), "f{k}");
            assert_eq!(std::fs::metadata(&p).unwrap().mtime(), 1_600_000_000);
            assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777, 0o644);
        }
        assert_eq!(std::fs::read(d.path().join("big/h3")).unwrap(), data[3]);
        assert_eq!(std::fs::read(d.path().join("big/s2")).unwrap(), b"small");
    }

    #[test]
    fn streams_are_sniffed_however_small_their_buffers() {
        let tar = T::default().file("a", b"alpha").file("b", &[7u8; 70_000]).done();
        let gz = {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&tar).unwrap();
            e.finish().unwrap()
        };
        let zst = zstd::encode_all(&tar[..], 1).unwrap();
        for (name, blob) in [("gzip", &gz), ("zstd", &zst), ("tar", &tar)] {
            // A source handing out 1, 3 or 64 KiB at a time: the magic may span its buffers.
            for cap in [1usize, 3, 64 << 10] {
                let d = tempfile::tempdir_in("/var/tmp").unwrap();
                let src = io::BufReader::with_capacity(cap, io::Cursor::new(blob.clone()));
                let idx = unpack_layer_from(LayerBytes::Stream(Box::new(src)), d.path(), Format::Overlay, "t").unwrap();
                assert_eq!(idx.diff_id, crate::digest::sha256(&tar), "{name}, buffers of {cap}");
                assert_eq!(std::fs::read(d.path().join("a")).unwrap(), b"alpha", "{name}, buffers of {cap}");
                assert_eq!(std::fs::read(d.path().join("b")).unwrap(), [7u8; 70_000], "{name}, buffers of {cap}");
            }
        }
        // Shorter than any magic: empty is an empty layer, one byte an error (not a panic).
        let stream =
            |b: &[u8]| LayerBytes::Stream(Box::new(io::BufReader::with_capacity(1, io::Cursor::new(b.to_vec()))));
        let d = tempfile::tempdir_in("/var/tmp").unwrap();
        let idx = unpack_layer_from(stream(b""), d.path(), Format::Overlay, "t").unwrap();
        assert!(idx.entries.is_empty() && idx.diff_id == crate::digest::sha256(b""));
        assert!(unpack_layer_from(stream(b"\x1f"), d.path(), Format::Overlay, "t").is_err());
    }

    #[test]
    fn whiteouts_become_overlay_markers() {
        let tar = T::default().dir("d", 0o755).file("d/.wh..wh..opq", b"").file(".wh.gone", b"").done();
        let (d, r) = unpack(&tar);
        let idx = r.unwrap();
        let m = std::fs::symlink_metadata(d.path().join("gone")).unwrap();
        use std::os::unix::fs::FileTypeExt;
        assert!(m.file_type().is_char_device() && m.rdev() == 0);
        let mut v = [0u8; 4];
        let n = rustix::fs::getxattr(d.path().join("d"), "trusted.overlay.opaque", &mut v).unwrap();
        assert_eq!(&v[..n], b"y");
        assert!(idx.entries.iter().any(|e| e.kind == Kind::Whiteout && e.path == b"gone"));
        assert!(idx.entries.iter().any(|e| e.kind == Kind::Opaque && e.path == b"d"));
    }

    #[test]
    fn refuses_escapes() {
        let outside = tempfile::tempdir_in("/var/tmp").unwrap();
        let target = outside.path().display().to_string();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("dotdot", T::default().file("../escape", b"x").done()),
            ("dotdot deep", T::default().file("a/../../escape", b"x").done()),
            ("symlink parent", T::default().symlink("out", &target).file("out/escape", b"x").done()),
            ("symlink dotdot", T::default().symlink("up", "..").file("up/escape", b"x").done()),
            ("hardlink outside", T::default().hardlink("h", "../../../etc/passwd").done()),
            ("hardlink absolute", T::default().hardlink("h", "/etc/passwd").done()),
        ];
        for (name, tar) in cases {
            let (_d, r) = unpack(&tar);
            let e = r.expect_err(name);
            assert_eq!(e.kind(), ErrorKind::UnsafePath, "{name}: {e}");
            assert!(e.to_string().contains("layer test: entry"), "{name}: {e}");
        }
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0, "nothing written outside");
    }

    #[test]
    fn truncated_and_garbage_streams_fail() {
        let tar = T::default().file("a", &[7u8; 5000]).done();
        let (_d, r) = unpack(&tar[..3000]);
        assert_eq!(r.unwrap_err().kind(), ErrorKind::InvalidContent);
        let gz = {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&tar).unwrap();
            e.finish().unwrap()
        };
        let (_d, r) = unpack(&gz[..gz.len() - 10]);
        assert!(r.is_err());
    }

    #[test]
    fn normalise_paths() {
        assert_eq!(normalise(b"./a/b/").unwrap(), b"a/b");
        assert_eq!(normalise(b"/etc//passwd").unwrap(), b"etc/passwd");
        assert_eq!(normalise(b"./").unwrap(), b"");
        assert!(normalise(b"a/../../b").is_none());
        assert!(normalise(b"..").is_none());
    }
}
