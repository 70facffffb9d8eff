//! Direct I/O for the store's bulk writes: layer blobs as they download and the large files of
//! unpacked layers.
//!
//! Why: every byte a pull writes must reach the disk before the pull completes (the blob is
//! fsynced, the snapshot synced before it is renamed into place), so passing it through the page
//! cache buys no speed; it only costs a copy into freshly allocated page-cache memory. On a VM
//! that copy is the largest single cost of a pull: memory the guest has not touched recently
//! faults into the host once per page (here, `dd` of 600 MB into the page cache takes 2.6 s of
//! system time, with `oflag=direct` 0.1 s). It also evicts the user's working set to cache
//! layer data that is rarely read back soon. Large writes therefore go straight to the device
//! from an aligned buffer; the unaligned tail of a file is written through the page cache.
//!
//! It is an optimisation only: a file system that refuses `O_DIRECT` (`EINVAL` from `fcntl`, or
//! from the first write) gets buffered writes, and `STRATA_DIRECT_IO=0` turns it off.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use rustix::fs::OFlags;
use rustix::io::Errno;

/// Offset, length and memory alignment of direct I/O: a page, which every block device's logical
/// block size divides.
pub(crate) const ALIGN: usize = 4096;

/// Size of the staging buffers: large writes are what makes direct I/O cheap.
pub(crate) const STAGE: usize = 1 << 20;

/// Set once a file system refused direct I/O: this process stops trying.
static REFUSED: AtomicBool = AtomicBool::new(false);

/// Whether direct I/O is to be tried (`STRATA_DIRECT_IO=0` or `off` turns it off).
pub(crate) fn wanted() -> bool {
    static ENV: OnceLock<bool> = OnceLock::new();
    let on = *ENV.get_or_init(|| {
        !matches!(std::env::var("STRATA_DIRECT_IO").as_deref(), Ok("0") | Ok("off") | Ok("false") | Ok("no"))
    });
    on && !REFUSED.load(Ordering::Relaxed)
}

/// Turns `O_DIRECT` on or off for `f`'s open file description. Turning it on fails with
/// `EINVAL` where the file system does not support it.
pub(crate) fn set(f: impl AsFd, on: bool) -> io::Result<()> {
    let fd = f.as_fd();
    let flags = rustix::fs::fcntl_getfl(fd)?;
    let want = if on { flags | OFlags::DIRECT } else { flags - OFlags::DIRECT };
    if want != flags {
        rustix::fs::fcntl_setfl(fd, want)?;
    }
    Ok(())
}

/// Tries to turn direct I/O on for `f`; false (and buffered I/O) where it is not wanted or the
/// file system refuses it.
pub(crate) fn try_enable(f: impl AsFd) -> bool {
    if !wanted() {
        return false;
    }
    match set(f, true) {
        Ok(()) => true,
        Err(_) => {
            REFUSED.store(true, Ordering::Relaxed);
            false
        }
    }
}

/// A heap buffer aligned for direct I/O, filled from the front.
pub(crate) struct AlignedBuf {
    ptr: NonNull<u8>,
    cap: usize,
    len: usize,
}

// SAFETY: the buffer owns its allocation exclusively, like a Vec<u8>.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    /// A zeroed buffer of `cap` bytes (a multiple of [`ALIGN`]).
    pub(crate) fn new(cap: usize) -> Self {
        assert!(cap > 0 && cap.is_multiple_of(ALIGN), "aligned buffer size");
        let layout = std::alloc::Layout::from_size_align(cap, ALIGN).expect("valid layout");
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(ptr) else { std::alloc::handle_alloc_error(layout) };
        AlignedBuf { ptr, cap, len: 0 }
    }

    /// The bytes held.
    pub(crate) fn filled(&self) -> &[u8] {
        // SAFETY: the first `len` bytes are initialised (the allocation is zeroed) and owned.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The free space after the bytes held; [`AlignedBuf::advance`] counts what was put there.
    pub(crate) fn spare(&mut self) -> &mut [u8] {
        // SAFETY: the allocation has `cap` initialised bytes, exclusively borrowed through self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(self.len), self.cap - self.len) }
    }

    /// The whole allocation.
    pub(crate) fn all(&self) -> &[u8] {
        // SAFETY: the allocation has `cap` initialised bytes, owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.cap) }
    }

    /// Its size.
    pub(crate) fn cap(&self) -> usize {
        self.cap
    }

    /// The whole allocation, for reads into it.
    pub(crate) fn all_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `spare`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.cap) }
    }

    pub(crate) fn advance(&mut self, n: usize) {
        assert!(self.len + n <= self.cap);
        self.len += n;
    }

    pub(crate) fn set_len(&mut self, n: usize) {
        assert!(n <= self.cap);
        self.len = n;
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_full(&self) -> bool {
        self.len == self.cap
    }

    /// Appends as much of `data` as fits; returns how much.
    pub(crate) fn push(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.cap - self.len);
        self.spare()[..n].copy_from_slice(&data[..n]);
        self.len += n;
        n
    }

    /// Drops the first `n` bytes (a multiple of [`ALIGN`]), moving the rest to the front.
    fn consume(&mut self, n: usize) {
        let rest = self.len - n;
        // SAFETY: both ranges lie within the allocation; `copy` allows overlap.
        unsafe { std::ptr::copy(self.ptr.as_ptr().add(n), self.ptr.as_ptr(), rest) };
        self.len = rest;
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        let layout = std::alloc::Layout::from_size_align(self.cap, ALIGN).expect("valid layout");
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), layout) };
    }
}

/// Writes a file sequentially through an aligned staging buffer: whole blocks go to the device
/// with `O_DIRECT` (when the file has it on), the tail through the page cache at [`Self::finish`].
pub(crate) struct DirectWriter {
    buf: AlignedBuf,
    /// File offset of `buf`'s first byte.
    off: u64,
    /// Whether the file has `O_DIRECT` on.
    direct: bool,
}

impl DirectWriter {
    /// A writer at offset `off` (a multiple of [`ALIGN`]) of a file whose `O_DIRECT` state is
    /// `direct`.
    pub(crate) fn new(off: u64, direct: bool) -> Self {
        debug_assert!(off.is_multiple_of(ALIGN as u64));
        DirectWriter { buf: AlignedBuf::new(STAGE), off, direct }
    }

    /// Starts over for another file, at offset 0.
    pub(crate) fn reset(&mut self, direct: bool) {
        self.buf.set_len(0);
        self.off = 0;
        self.direct = direct;
    }

    /// The staging buffer, to fill in place (then [`Self::filled`]).
    pub(crate) fn buf(&mut self) -> &mut AlignedBuf {
        &mut self.buf
    }

    /// The offset up to which the file holds what was written.
    pub(crate) fn file_end(&self) -> u64 {
        self.off
    }

    /// Stages `data`, writing full buffers out.
    pub(crate) fn write(&mut self, file: &File, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = self.buf.push(data);
            data = &data[n..];
            if self.buf.is_full() {
                self.flush_blocks(file)?;
            }
        }
        Ok(())
    }

    /// After the staging buffer was filled in place: writes it out when full.
    pub(crate) fn filled(&mut self, file: &File) -> io::Result<()> {
        if self.buf.is_full() {
            self.flush_blocks(file)?;
        }
        Ok(())
    }

    /// Writes the whole blocks staged.
    pub(crate) fn flush_blocks(&mut self, file: &File) -> io::Result<()> {
        let n = self.buf.len() & !(ALIGN - 1);
        if n == 0 {
            return Ok(());
        }
        if let Err(e) = file.write_all_at(&self.buf.filled()[..n], self.off) {
            // A file system that takes the flag but not the write: go on buffered.
            if !(self.direct && refused(&e)) {
                return Err(e);
            }
            REFUSED.store(true, Ordering::Relaxed);
            set(file, false)?;
            self.direct = false;
            file.write_all_at(&self.buf.filled()[..n], self.off)?;
        }
        self.off += n as u64;
        self.buf.consume(n);
        Ok(())
    }

    /// Writes everything staged: whole blocks directly, the tail through the page cache (with
    /// `O_DIRECT` turned off for the file, which stays off).
    pub(crate) fn finish(&mut self, file: &File) -> io::Result<()> {
        self.flush_blocks(file)?;
        if self.buf.len() > 0 {
            if self.direct {
                set(file, false)?;
                self.direct = false;
            }
            file.write_all_at(self.buf.filled(), self.off)?;
            self.off += self.buf.len() as u64;
            self.buf.set_len(0);
        }
        Ok(())
    }
}

/// Reads `buf.len()` bytes (a multiple of [`ALIGN`]) at `off` (aligned) into `buf` (aligned),
/// retrying on `EINTR`; fewer at end of file.
pub(crate) fn read_at(file: &File, buf: &mut [u8], off: u64) -> io::Result<usize> {
    loop {
        match file.read_at(buf, off) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            r => return r,
        }
    }
}

/// Whether `e` is the error a file system gives for direct I/O it cannot do.
pub(crate) fn refused(e: &io::Error) -> bool {
    e.raw_os_error() == Some(Errno::INVAL.raw_os_error())
}

/// How many of `path`'s pages are in the page cache (`mincore` of a mapping), for tests that
/// check that a file was written directly; `None` on a memory file system (tmpfs, ramfs), whose
/// files are all page cache.
#[cfg(test)]
pub(crate) fn cached_pages(path: &std::path::Path) -> Option<usize> {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    let f = File::open(path).unwrap();
    let fs_type = rustix::fs::fstatfs(&f).unwrap().f_type as i64;
    if fs_type == TMPFS_MAGIC || fs_type == RAMFS_MAGIC {
        return None;
    }
    let len = f.metadata().unwrap().len() as usize;
    if len == 0 {
        return Some(0);
    }
    // SAFETY: a private read-only mapping of a file nothing writes to during the test.
    let map = unsafe { memmap2::Mmap::map(&f) }.unwrap();
    let page = 4096;
    let mut vec = vec![0u8; len.div_ceil(page)];
    // SAFETY: `vec` has one byte per page of the mapping.
    let r = unsafe { libc::mincore(map.as_ptr() as *mut libc::c_void, len, vec.as_mut_ptr()) };
    assert_eq!(r, 0, "mincore");
    Some(vec.iter().filter(|b| **b & 1 == 1).count())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 4093) as u8).collect()
    }

    #[test]
    fn aligned_buffers_are_aligned_and_consume_keeps_the_tail() {
        let mut b = AlignedBuf::new(2 * ALIGN);
        assert_eq!(b.all_mut().as_ptr() as usize % ALIGN, 0);
        let data = pattern(ALIGN + 100);
        assert_eq!(b.push(&data), data.len());
        b.consume(ALIGN);
        assert_eq!(b.filled(), &data[ALIGN..]);
        assert_eq!(b.push(&pattern(3 * ALIGN)), ALIGN - 100 + ALIGN);
        assert!(b.is_full());
    }

    #[test]
    fn direct_writer_writes_every_byte_in_order() {
        let dir = tempfile::tempdir().unwrap();
        for size in [0, 1, ALIGN - 1, ALIGN, ALIGN + 1, STAGE - 1, STAGE, STAGE + 4097, 3 * STAGE + 123] {
            let p = dir.path().join(format!("f{size}"));
            let f = File::options().write(true).read(true).create_new(true).open(&p).unwrap();
            let direct = try_enable(&f);
            let mut w = DirectWriter::new(0, direct);
            let data = pattern(size);
            // Odd piece sizes, so that pieces straddle the buffer's end.
            for piece in data.chunks(100_003) {
                w.write(&f, piece).unwrap();
            }
            w.finish(&f).unwrap();
            assert_eq!(w.file_end(), size as u64);
            drop(f);
            if direct {
                // Only the unaligned tail went through the page cache.
                let cached = cached_pages(&p).unwrap_or(0);
                assert!(cached <= 1, "size {size}: {cached} pages cached");
            }
            assert_eq!(std::fs::read(&p).unwrap(), data, "size {size}");
        }
    }

    #[test]
    fn direct_reads_see_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let data = pattern(STAGE + 5000);
        std::fs::write(&p, &data).unwrap();
        let f = File::open(&p).unwrap();
        try_enable(&f);
        let mut b = AlignedBuf::new(STAGE + 2 * ALIGN);
        let n = read_at(&f, b.all_mut(), 0).unwrap();
        assert_eq!(&b.all_mut()[..n], &data[..]);
        let n = read_at(&f, &mut b.all_mut()[..ALIGN], STAGE as u64).unwrap();
        assert_eq!(&b.all_mut()[..n], &data[STAGE..STAGE + ALIGN]);
    }
}
