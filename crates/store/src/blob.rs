//! Blobs: verified ingest and mapped reads.
//!
//! An [`Ingest`] is a transaction: bytes stream into a temp file under `tmp/` while they are
//! hashed and counted; [`Ingest::commit`] checks size and digest against what was announced,
//! fsyncs, adds the digest to the caller's lease, renames the file into `blobs/sha256/` read-only
//! and fsyncs the folder. A blob that exists already is never rewritten ([`Committed::existed`]).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::ops::Deref;
use std::os::unix::fs::FileExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};

use crate::digest::{self, Digest, Hasher};
use crate::direct::{self, AlignedBuf, DirectWriter, ALIGN, STAGE};
use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::fsutil;
use crate::store::{Lease, Store, BLOBS};

/// The outcome of a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The blob's digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// True when the store had this blob already (the new copy was discarded).
    pub existed: bool,
}

/// A blob being written.
pub struct Ingest<'s> {
    store: &'s Store,
    file: Option<File>,
    path: PathBuf,
    hasher: Hasher,
    written: u64,
    /// Bytes written since writeback was last started.
    unflushed: u64,
    /// Whether dropping the ingest removes its file: not for a resumable one (its bytes are kept
    /// for the next attempt), nor once the file was renamed into place.
    remove_on_drop: bool,
    /// Readers following the bytes as they land ([`Ingest::follow`]).
    watch: Option<Arc<Watch>>,
    /// In bulk mode ([`Ingest::bulk`]), the staging of direct writes.
    stage: Option<DirectWriter>,
    /// How many of the file's bytes followers may read: all of `written`, but in bulk mode only
    /// what left the staging buffer.
    visible: u64,
}

/// Where a followed ingest stands.
#[derive(Default)]
struct Watch {
    state: Mutex<WatchState>,
    cond: Condvar,
}

#[derive(Default)]
struct WatchState {
    written: u64,
    /// Set when the ingest ends: the verified size, or why it failed.
    end: Option<std::result::Result<u64, String>>,
}

impl Watch {
    fn update(&self, f: impl FnOnce(&mut WatchState)) {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()));
        self.cond.notify_all();
    }
}

/// A reader of an ingest's bytes as they are written (see [`Ingest::follow`]). It reads what
/// has landed, waits for more, and returns end-of-file only once the ingest committed with its
/// digest and size verified; if the ingest fails or is dropped, reading fails.
pub struct Follower {
    file: File,
    watch: Arc<Watch>,
    pos: u64,
    /// What was read last: a window of the file.
    window: Window,
    /// For an ingest in bulk mode, the file is read with `O_DIRECT` (the bytes are not in the
    /// page cache, and reading them through it would cost what bulk mode saves), a block-aligned
    /// window at a time.
    direct: bool,
}

struct Window {
    buf: AlignedBuf,
    /// File offset of `buf`'s first byte, and how many bytes from there are valid.
    off: u64,
    len: usize,
}

impl Follower {
    /// Waits until bytes past `pos` have landed, then reads the next window of them; false at the
    /// end of the committed blob.
    fn refill(&mut self) -> io::Result<bool> {
        let avail = {
            let mut st = self.watch.state.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                match &st.end {
                    Some(Err(why)) => return Err(io::Error::other(why.clone())),
                    Some(Ok(size)) if self.pos >= *size => return Ok(false),
                    _ if st.written > self.pos => break st.written - self.pos,
                    _ => st = self.watch.cond.wait(st).unwrap_or_else(|e| e.into_inner()),
                }
            }
        };
        let w = &mut self.window;
        let cap = w.buf.cap() as u64;
        if self.direct {
            // Aligned reads: from the block holding `pos`, up to what has landed, rounded up to a
            // block (the file may hold more; only what has landed is used).
            let start = self.pos & !(ALIGN as u64 - 1);
            let end = (self.pos + avail).min(start + cap);
            let len = ((end - start) as usize).next_multiple_of(ALIGN);
            match direct::read_at(&self.file, &mut w.buf.all_mut()[..len], start) {
                Ok(n) => {
                    w.off = start;
                    w.len = n.min((end - start) as usize);
                }
                Err(e) if direct::refused(&e) => {
                    // A file system that takes the flag but not the read: read buffered.
                    direct::set(&self.file, false)?;
                    self.direct = false;
                    return self.refill();
                }
                Err(e) => return Err(e),
            }
        } else {
            let want = avail.min(cap) as usize;
            let n = direct::read_at(&self.file, &mut w.buf.all_mut()[..want], self.pos)?;
            w.off = self.pos;
            w.len = n;
        }
        if w.off + (w.len as u64) <= self.pos {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "blob file is shorter than written"));
        }
        Ok(true)
    }
}

/// The follower hands out its window directly: a decompressor reading through `fill_buf`
/// takes the bytes with no copy in between.
impl io::BufRead for Follower {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        let w = &self.window;
        let inside = w.off <= self.pos && self.pos < w.off + w.len as u64;
        if !inside && !self.refill()? {
            return Ok(&[]);
        }
        let at = (self.pos - self.window.off) as usize;
        Ok(&self.window.buf.all()[at..self.window.len])
    }
    fn consume(&mut self, n: usize) {
        self.pos += n as u64;
    }
}

impl Read for Follower {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use io::BufRead;
        let have = self.fill_buf()?;
        let n = have.len().min(buf.len());
        buf[..n].copy_from_slice(&have[..n]);
        self.consume(n);
        Ok(n)
    }
}

/// Folder of `tmp/` holding resumable downloads, one file per blob digest.
pub const PARTIAL: &str = "tmp/partial";

/// Writeback of an ingest is started every this many bytes, so that the fsync at commit only
/// waits for the tail.
const WRITEBACK_EVERY: u64 = 8 << 20;

impl Store {
    /// Starts writing a blob.
    pub fn ingest(&self) -> Result<Ingest<'_>> {
        let path = self.tmp_path("ingest");
        let file =
            OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).at("cannot create", &path)?;
        Ok(Ingest {
            store: self,
            file: Some(file),
            path,
            hasher: Hasher::new(),
            written: 0,
            unflushed: 0,
            remove_on_drop: true,
            watch: None,
            stage: None,
            visible: 0,
        })
    }

    /// Starts or resumes writing blob `d`: bytes an earlier, interrupted attempt kept under
    /// `tmp/partial/` are re-hashed and written on from ([`Ingest::written`] says how many). The
    /// file is locked while in use; when another process holds it, a fresh ingest is returned.
    /// The kept bytes are only a head start: [`Ingest::commit`] verifies the whole blob, and a
    /// mismatch discards them.
    pub fn resume_ingest(&self, d: &Digest) -> Result<Ingest<'_>> {
        let dir = self.path(PARTIAL);
        fs::create_dir_all(&dir).at("cannot create", &dir)?;
        let path = dir.join(format!("{}-{}", d.algorithm(), digest::hex(d)?));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .at("cannot open", &path)?;
        if rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
            return self.ingest();
        }
        let mut hasher = Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut written = 0u64;
        loop {
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    hasher.update(&buf[..n]);
                    written += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("cannot read", &path, e)),
            }
        }
        Ok(Ingest {
            store: self,
            file: Some(file),
            path,
            hasher,
            written,
            unflushed: 0,
            remove_on_drop: false,
            watch: None,
            stage: None,
            visible: written,
        })
    }

    /// Writes `bytes` as a blob, verified against `expected` when given.
    pub fn write_blob(&self, bytes: &[u8], expected: Option<&Digest>, lease: &Lease) -> Result<Committed> {
        if let Some(d) = expected {
            if self.has_blob(d) && self.blob_size(d).ok() == Some(bytes.len() as u64) {
                lease.add(d)?;
                return Ok(Committed { digest: d.clone(), size: bytes.len() as u64, existed: true });
            }
        }
        let mut w = self.ingest()?;
        w.write_all(bytes).map_err(|e| Error::io("cannot write", &w.path, e))?;
        w.commit(expected, Some(bytes.len() as u64), lease)
    }

    /// Copies everything `r` yields into a blob, verified against `expected` when given.
    pub fn copy_blob(
        &self,
        r: &mut dyn Read,
        expected: Option<&Digest>,
        expected_size: Option<u64>,
        lease: &Lease,
    ) -> Result<Committed> {
        let mut w = self.ingest()?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::new(ErrorKind::InvalidContent, "cannot read blob content").with_source(e)),
            };
            w.write_all(&buf[..n]).map_err(|e| Error::io("cannot write", &w.path, e))?;
        }
        w.commit(expected, expected_size, lease)
    }

    /// Copies the file at `src` into a blob, verified against `expected` when given. The copy
    /// happens in the kernel (`copy_file_range`) and the hash reads the copy through a mapping,
    /// so the bytes never pass through a user-space buffer.
    pub fn copy_file_blob(
        &self,
        src: &std::path::Path,
        expected: Option<&Digest>,
        expected_size: Option<u64>,
        lease: &Lease,
    ) -> Result<Committed> {
        let mut from = File::open(src).at("cannot open", src)?;
        let mut w = self.ingest()?;
        let file = w.file.as_mut().expect("file present until commit");
        io::copy(&mut from, file).map_err(|e| Error::io("cannot copy", src, e))?;
        start_writeback(file, 0, 0);
        // Our own temp file, written and no longer written to: mapping it is sound.
        let copy = File::open(&w.path).at("cannot read", &w.path)?;
        let bytes = Blob::map(copy).at("cannot read", &w.path)?;
        w.hasher.update(&bytes);
        w.written = bytes.len() as u64;
        drop(bytes);
        w.commit(expected, expected_size, lease)
    }

    /// Whether blob `d` is in the store.
    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).map(|p| p.exists()).unwrap_or(false)
    }

    /// The size of blob `d`.
    pub fn blob_size(&self, d: &Digest) -> Result<u64> {
        let p = self.blob_path(d)?;
        match fs::metadata(&p) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(Error::not_found(format!("blob {d} is not in the store")))
            }
            Err(e) => Err(Error::io("cannot stat", p, e)),
        }
    }

    /// Opens blob `d` for reading through a memory map.
    pub fn blob(&self, d: &Digest) -> Result<Blob> {
        let p = self.blob_path(d)?;
        let file = match File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::not_found(format!(
                    "blob {d} is not in the store (run `strata system check` to find what refers to it)"
                )))
            }
            Err(e) => return Err(Error::io("cannot open", p, e)),
        };
        Blob::map(file).at("cannot read", &p)
    }

    /// Reads a small blob (a manifest or config) whole, checking its digest.
    pub fn read_verified(&self, d: &Digest) -> Result<Vec<u8>> {
        let b = self.blob(d)?;
        let got = digest::sha256(&b);
        if &got != d {
            return Err(Error::new(
                ErrorKind::DigestMismatch,
                format!("blob {d} is corrupt: its content hashes to {got} (run `strata system check --repair`)"),
            ));
        }
        Ok(b.to_vec())
    }

    /// Every blob in the store with its size.
    pub fn list_blobs(&self) -> Result<Vec<(Digest, u64)>> {
        let dir = self.path(BLOBS);
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).at("cannot read", &dir)? {
            let e = e.at("cannot read", &dir)?;
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            let Ok(d) = digest::from_hex(name) else { continue };
            let size = e.metadata().map(|m| m.len()).unwrap_or(0);
            out.push((d, size));
        }
        Ok(out)
    }

    /// Removes blob `d` (GC and repair only).
    pub(crate) fn delete_blob(&self, d: &Digest) -> Result<()> {
        let p = self.blob_path(d)?;
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("cannot remove", p, e)),
        }
    }
}

impl Ingest<'_> {
    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Verifies, syncs and moves the blob into place. On a mismatch the temp file is removed and
    /// the error names the expected and the actual digest or size.
    pub fn commit(mut self, expected: Option<&Digest>, expected_size: Option<u64>, lease: &Lease) -> Result<Committed> {
        let r = self.commit_inner(expected, expected_size, lease);
        if let Some(w) = &self.watch {
            let end = match &r {
                Ok(c) => Ok(c.size),
                Err(e) => Err(e.to_string()),
            };
            w.update(|st| st.end = Some(end));
        }
        r
    }

    /// A reader that follows this ingest's bytes from the start as they are written, for a
    /// consumer on another thread (a layer unpacked while it downloads).
    pub fn follow(&mut self) -> Result<Follower> {
        let visible = self.visible;
        let watch = self.watch.get_or_insert_with(|| Arc::new(Watch::default())).clone();
        watch.update(|st| st.written = visible);
        let file = File::open(&self.path).at("cannot open", &self.path)?;
        let direct = self.stage.is_some() && direct::try_enable(&file);
        let window = Window { buf: AlignedBuf::new(STAGE), off: 0, len: 0 };
        Ok(Follower { file, watch, pos: 0, window, direct })
    }

    /// Bulk mode, for a large blob written in large pieces (a download): whole blocks go to the
    /// device with direct I/O instead of through the page cache (see [`crate::direct`]), staged
    /// in an aligned buffer that followers see once it is written out. Without direct I/O (off,
    /// or a file system without it) this changes nothing.
    pub fn bulk(&mut self) -> Result<()> {
        if self.stage.is_some() {
            return Ok(());
        }
        if !direct::wanted() {
            return Ok(());
        }
        let file = self.file.as_ref().expect("file present until commit");
        // Resumed at an unaligned offset: the partial last block is staged again (read before
        // the file turns direct), to be rewritten with the same bytes first from its aligned start.
        let start = self.written & !(ALIGN as u64 - 1);
        let mut stage = DirectWriter::new(start, true);
        let head = (self.written - start) as usize;
        file.read_exact_at(&mut stage.buf().spare()[..head], start).at("cannot read", &self.path)?;
        stage.buf().advance(head);
        if direct::try_enable(file) {
            self.stage = Some(stage);
        }
        Ok(())
    }

    /// Whether the ingest is in bulk mode with direct I/O (it stages what it is given: callers
    /// need no buffer of their own).
    pub fn is_bulk(&self) -> bool {
        self.stage.is_some()
    }

    /// Writes out what bulk mode staged, and lets followers read it all.
    fn drain(&mut self) -> io::Result<()> {
        if let (Some(stage), Some(file)) = (&mut self.stage, &self.file) {
            stage.finish(file)?;
        }
        self.publish(self.written);
        Ok(())
    }

    /// Lets followers read the file's first `n` bytes.
    fn publish(&mut self, n: u64) {
        if n > self.visible {
            self.visible = n;
            if let Some(w) = &self.watch {
                w.update(|st| st.written = n);
            }
        }
    }

    fn commit_inner(
        &mut self,
        expected: Option<&Digest>,
        expected_size: Option<u64>,
        lease: &Lease,
    ) -> Result<Committed> {
        self.drain().at("cannot write", &self.path)?;
        let file = self.file.take().expect("file present until commit");
        let hasher = std::mem::take(&mut self.hasher);
        let digest = hasher.finish();
        let size = self.written;
        if let Some(want) = expected_size {
            if want != size {
                self.remove_on_drop = true;
                return Err(Error::new(
                    ErrorKind::SizeMismatch,
                    format!(
                        "blob {} has {size} bytes, expected {want} (truncated or corrupt input)",
                        expected.map(|d| d.to_string()).unwrap_or_else(|| digest.to_string())
                    ),
                ));
            }
        }
        if let Some(want) = expected {
            digest::hex(want)?;
            if *want != digest {
                self.remove_on_drop = true;
                return Err(Error::new(
                    ErrorKind::DigestMismatch,
                    format!("digest mismatch: expected {want}, content hashes to {digest} (corrupt or tampered input)"),
                ));
            }
        }
        lease.add(&digest)?;
        let dest = self.store.blob_path(&digest)?;
        if dest.exists() {
            self.remove_on_drop = true;
            return Ok(Committed { digest, size, existed: true });
        }
        file.sync_all().at("cannot sync", &self.path)?;
        let _ = file.set_permissions(fs::Permissions::from_mode(0o444));
        drop(file);
        fs::rename(&self.path, &dest).at("cannot move blob into place", &dest)?;
        self.remove_on_drop = false;
        fsutil::sync_dir(dest.parent().expect("blob has a parent"))?;
        Ok(Committed { digest, size, existed: false })
    }
}

impl Ingest<'_> {
    /// Counts `n` bytes just written (and hashed): followers learn of them, and writeback starts
    /// every [`WRITEBACK_EVERY`] bytes.
    fn wrote(&mut self, n: usize) {
        self.written += n as u64;
        if let Some(stage) = &self.stage {
            let end = stage.file_end();
            self.publish(end);
            return;
        }
        self.publish(self.written);
        self.unflushed += n as u64;
        if self.unflushed >= WRITEBACK_EVERY {
            let file = self.file.as_ref().expect("file present until commit");
            start_writeback(file, self.written - self.unflushed, self.unflushed);
            self.unflushed = 0;
        }
    }
}

impl Write for Ingest<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let file = self.file.as_mut().expect("file present until commit");
        if let Some(stage) = &mut self.stage {
            stage.write(file, buf)?;
            self.hasher.update(buf);
            self.wrote(buf.len());
            return Ok(buf.len());
        }
        let n = file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.wrote(n);
        Ok(n)
    }
    /// One `writev`, hashing what it took.
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        if self.stage.is_some() {
            let mut n = 0;
            for b in bufs {
                n += self.write(b)?;
            }
            return Ok(n);
        }
        let file = self.file.as_mut().expect("file present until commit");
        let n = file.write_vectored(bufs)?;
        let mut left = n;
        for b in bufs {
            if left == 0 {
                break;
            }
            let k = left.min(b.len());
            self.hasher.update(&b[..k]);
            left -= k;
        }
        self.wrote(n);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Ingest<'_> {
    fn drop(&mut self) {
        // Committed or abandoned: the temp name is gone either way (rename moved it, or this
        // removes it). A crash leaves it for GC's sweep of tmp/. A resumable ingest keeps its
        // bytes for the next attempt.
        if self.remove_on_drop {
            let _ = fs::remove_file(&self.path);
        } else if self.file.is_some() {
            // An interrupted resumable transfer keeps every byte it received.
            let _ = self.drain();
        }
        if let Some(w) = &self.watch {
            w.update(|st| {
                st.end.get_or_insert_with(|| Err("the blob's transfer was abandoned".to_string()));
            });
        }
    }
}

/// Starts writeback of a byte range (0, 0: the whole file) without waiting, so that a later fsync
/// finds the data already on its way. A hint: errors are ignored, the fsync reports real ones.
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open fd; the call only schedules writeback of a page-cache range.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset as i64, len as i64, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// A blob's bytes, mapped.
///
/// Mapping is sound here because committed blobs are immutable: they are created read-only under
/// a fresh name, renamed into place and never written again; GC only unlinks them, which keeps an
/// existing mapping valid. Snapshot file indexes are mapped the same way, for the same reason:
/// written whole under a temporary name and renamed into place, never modified. Where mapping fails (an empty file, a file system without mmap), the
/// bytes are read instead.
pub struct Blob {
    inner: BlobBytes,
}

enum BlobBytes {
    Mapped(memmap2::Mmap),
    Read(Vec<u8>),
}

impl Blob {
    /// Maps a committed blob or snapshot file index (immutable, see the type's documentation).
    pub(crate) fn map(mut file: File) -> io::Result<Blob> {
        let len = file.metadata()?.len();
        if len > 0 {
            // SAFETY: the file is a committed blob or file index, immutable for as long as it
            // exists (see the type's documentation); nothing in this process or in strata writes
            // to it.
            if let Ok(m) = unsafe { memmap2::MmapOptions::new().map(&file) } {
                #[cfg(unix)]
                let _ = m.advise(memmap2::Advice::Sequential);
                return Ok(Blob { inner: BlobBytes::Mapped(m) });
            }
        }
        let mut v = Vec::with_capacity(len as usize);
        file.read_to_end(&mut v)?;
        Ok(Blob { inner: BlobBytes::Read(v) })
    }
}

impl AsRef<[u8]> for Blob {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl Deref for Blob {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.inner {
            BlobBytes::Mapped(m) => m,
            BlobBytes::Read(v) => v,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i.wrapping_mul(131) ^ (i >> 12)) as u8).collect()
    }

    /// A store in a temp dir (on disk, where direct I/O works).
    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let store = Store::open(dir.path().join("root")).unwrap();
        (dir, store)
    }

    /// A resumable ingest of `d` in bulk mode, followed on a thread of its own whose handle
    /// yields what the follower read.
    fn bulk_followed<'s>(store: &'s Store, d: &Digest) -> (Ingest<'s>, std::thread::JoinHandle<io::Result<Vec<u8>>>) {
        let mut w = store.resume_ingest(d).unwrap();
        w.bulk().unwrap();
        let mut f = w.follow().unwrap();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            f.read_to_end(&mut got).map(|_| got)
        });
        (w, reader)
    }

    #[test]
    fn bulk_ingest_is_followed_byte_for_byte_and_bypasses_the_page_cache() {
        let (_dir, store) = store();
        let lease = store.lease(Duration::from_secs(60)).unwrap();
        let want = data((3 << 20) + 1234);
        let d = digest::sha256(&want);
        let (mut w, reader) = bulk_followed(&store, &d);
        for piece in want.chunks(100_003) {
            w.write_all(piece).unwrap();
        }
        let c = w.commit(Some(&d), Some(want.len() as u64), &lease).unwrap();
        assert_eq!(c, Committed { digest: d.clone(), size: want.len() as u64, existed: false });
        assert!(reader.join().unwrap().unwrap() == want, "the follower read other bytes");
        if direct::wanted() {
            // Written and followed around the page cache: at most the unaligned tail is cached.
            let cached = direct::cached_pages(&store.blob_path(&d).unwrap()).unwrap_or(0);
            assert!(cached <= 1, "{cached} pages cached");
        }
        assert!(*store.blob(&d).unwrap() == want[..]);
    }

    #[test]
    fn an_interrupted_bulk_ingest_keeps_every_byte_and_resumes_at_an_unaligned_offset() {
        let (_dir, store) = store();
        let lease = store.lease(Duration::from_secs(60)).unwrap();
        let want = data((5 << 20) + 99);
        let d = digest::sha256(&want);
        let cut = (3 << 19) + 77; // 1.5 MiB + 77: one staging buffer written, the rest staged
        {
            let (mut w, reader) = bulk_followed(&store, &d);
            w.write_all(&want[..cut]).unwrap();
            drop(w); // a transfer given up: the follower fails, the bytes stay
            assert!(reader.join().unwrap().is_err(), "a follower of an abandoned ingest fails");
        }
        let partial = store.path(PARTIAL).join(format!("sha256-{}", digest::hex(&d).unwrap()));
        assert_eq!(std::fs::read(&partial).unwrap(), &want[..cut], "every byte received is kept");

        let (mut w, reader) = bulk_followed(&store, &d);
        assert_eq!(w.written(), cut as u64);
        for piece in want[cut..].chunks(70_001) {
            w.write_all(piece).unwrap();
        }
        w.commit(Some(&d), Some(want.len() as u64), &lease).unwrap();
        assert!(reader.join().unwrap().unwrap() == want, "the follower read other bytes");
        assert!(*store.blob(&d).unwrap() == want[..]);
        assert!(!partial.exists());
    }

    #[test]
    fn a_bulk_ingest_with_wrong_content_is_refused_and_its_follower_fails() {
        let (_dir, store) = store();
        let lease = store.lease(Duration::from_secs(60)).unwrap();
        let want = data(2 << 20);
        let d = digest::sha256(&want);
        let (mut w, reader) = bulk_followed(&store, &d);
        let mut bad = want.clone();
        bad[(1 << 20) + 5] ^= 1;
        w.write_all(&bad).unwrap();
        let e = w.commit(Some(&d), Some(want.len() as u64), &lease).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::DigestMismatch, "{e}");
        assert!(reader.join().unwrap().is_err());
        assert!(!store.has_blob(&d));
    }
}
