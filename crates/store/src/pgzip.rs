//! Parallel gzip, as pigz writes it: the input is cut into blocks, each compressed on its own
//! core into an independent gzip member, and the members are written in order. A sequence of
//! members is one valid gzip stream (RFC 1952 §2.2): every decoder of layers reads it (Go's
//! `compress/gzip` and flate2's `MultiGzDecoder` read multi-member streams by default).
//!
//! Each member restarts the dictionary, which costs a little ratio on compressible data and
//! nothing on data that does not compress; in exchange a commit of 100 MB compresses on every core.
//! A block whose samples do not compress (random, or already compressed, data) is stored in
//! deflate's stored blocks instead of being run through the compressor for nothing, as zstd
//! does with incompressible input: the output is the same size and costs a CRC. A stored member
//! is not even copied: its framing (gzip header, a 5-byte header per 64 KiB stored block,
//! trailer) is written around slices of the input block in one vectored write.
//!
//! Blocks are compressed as tasks on rayon's pool and written in order as they complete; at most
//! a window of blocks is in flight, so memory stays bounded whatever the input's size.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::Arc;

/// Input per member.
const BLOCK: usize = 1 << 20;

/// Whether `block` looks compressible: four 8 KiB samples spread over it, deflated at the
/// fastest level, shrink by at least 3 %.
fn compresses(block: &[u8]) -> bool {
    const SAMPLE: usize = 8 << 10;
    if block.len() < 4 * SAMPLE {
        return true;
    }
    let mut e = flate2::write::DeflateEncoder::new(Vec::with_capacity(4 * SAMPLE), flate2::Compression::fast());
    for k in 0..4 {
        let at = k * (block.len() - SAMPLE) / 3;
        if e.write_all(&block[at..at + SAMPLE]).is_err() {
            return true;
        }
    }
    e.finish().map_or(true, |out| out.len() * 100 < 4 * SAMPLE * 97)
}

/// One block's gzip member.
enum Member {
    /// A block that does not compress, with its CRC-32: framed as stored when written.
    Stored(Arc<Vec<u8>>, u32),
    /// A compressed member, complete.
    Deflated(Vec<u8>),
}

fn member(block: Arc<Vec<u8>>, level: flate2::Compression) -> io::Result<Member> {
    if level.level() == 0 || !compresses(&block) {
        let mut crc = flate2::Crc::new();
        crc.update(&block);
        return Ok(Member::Stored(block, crc.sum()));
    }
    let mut e = flate2::write::GzEncoder::new(Vec::with_capacity(block.len() / 2 + 64), level);
    e.write_all(&block)?;
    e.finish().map(Member::Deflated)
}

/// Largest stored deflate block (its length field has 16 bits).
const STORED_MAX: usize = 65535;

/// Writes `data` as one gzip member of stored deflate blocks (RFC 1951 §3.2.4: a byte holding
/// BFINAL and BTYPE=00 at a byte boundary, LEN, NLEN, the bytes), in one vectored write.
fn write_stored(w: &mut impl Write, data: &[u8], crc: u32) -> io::Result<()> {
    // ID1 ID2, CM=deflate, no flags, no mtime, XFL 0, OS unknown (what flate2 writes, but XFL).
    const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    let chunks: Vec<&[u8]> = if data.is_empty() { vec![&[][..]] } else { data.chunks(STORED_MAX).collect() };
    let heads: Vec<[u8; 5]> = chunks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let len = c.len() as u16;
            let [l0, l1] = len.to_le_bytes();
            let [n0, n1] = (!len).to_le_bytes();
            [u8::from(i + 1 == chunks.len()), l0, l1, n0, n1]
        })
        .collect();
    let mut trailer = [0u8; 8];
    trailer[..4].copy_from_slice(&crc.to_le_bytes());
    trailer[4..].copy_from_slice(&(data.len() as u32).to_le_bytes());
    let mut pieces: Vec<&[u8]> = Vec::with_capacity(2 * chunks.len() + 2);
    pieces.push(&HEADER);
    for (h, c) in heads.iter().zip(&chunks) {
        pieces.push(h);
        pieces.push(c);
    }
    pieces.push(&trailer);
    write_all_vectored(w, &pieces)
}

/// Writes every piece, in as few vectored writes as the writer takes.
fn write_all_vectored(w: &mut impl Write, pieces: &[&[u8]]) -> io::Result<()> {
    let (mut i, mut off) = (0, 0);
    while i < pieces.len() {
        let mut bufs: Vec<IoSlice<'_>> = Vec::with_capacity(pieces.len() - i);
        bufs.push(IoSlice::new(&pieces[i][off..]));
        bufs.extend(pieces[i + 1..].iter().map(|p| IoSlice::new(p)));
        let mut n = match w.write_vectored(&bufs) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "failed to write the whole member")),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        while i < pieces.len() && n >= pieces[i].len() - off {
            n -= pieces[i].len() - off;
            i += 1;
            off = 0;
        }
        off += n;
    }
    Ok(())
}

/// A writer that gzips what it is given in parallel blocks into `inner`.
///
/// It waits for rayon's pool: drive it from a thread of its own. (A rayon worker may too: while
/// it waits it runs other pool work, so the task it waits for is not stuck behind it.)
pub struct ParallelGzWriter<W: Write> {
    inner: W,
    level: flate2::Compression,
    /// Input of the [`Write`] side not yet a full block.
    cur: Vec<u8>,
    /// Members being made, in stream order.
    pending: VecDeque<Receiver<io::Result<Member>>>,
    window: usize,
    blocks: u64,
}

impl<W: Write> ParallelGzWriter<W> {
    /// A writer at compression `level`.
    pub fn new(inner: W, level: flate2::Compression) -> Self {
        let window = 2 * rayon::current_num_threads().max(1);
        ParallelGzWriter { inner, level, cur: Vec::new(), pending: VecDeque::new(), window, blocks: 0 }
    }

    /// Adds a block of input as one member (any size; 1 MiB suits). Anything written through
    /// [`Write`] and not yet a full block goes first.
    pub fn write_block(&mut self, block: Arc<Vec<u8>>) -> io::Result<()> {
        if !self.cur.is_empty() {
            let head = std::mem::take(&mut self.cur);
            self.submit(Arc::new(head))?;
        }
        self.submit(block)
    }

    fn submit(&mut self, block: Arc<Vec<u8>>) -> io::Result<()> {
        let (tx, rx) = mpsc::sync_channel(1);
        let level = self.level;
        rayon::spawn(move || {
            let _ = tx.send(member(block, level));
        });
        self.pending.push_back(rx);
        self.blocks += 1;
        while self.pending.len() > self.window {
            self.write_next()?;
        }
        Ok(())
    }

    /// Waits for the oldest member and writes it.
    fn write_next(&mut self) -> io::Result<()> {
        let Some(rx) = self.pending.pop_front() else { return Ok(()) };
        match wait(&rx)? {
            Member::Stored(block, crc) => write_stored(&mut self.inner, &block, crc),
            Member::Deflated(gz) => self.inner.write_all(&gz),
        }
    }

    /// Writes what is left (an empty input still makes one valid, empty member) and returns
    /// the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        if !self.cur.is_empty() || self.blocks == 0 {
            let last = std::mem::take(&mut self.cur);
            self.submit(Arc::new(last))?;
        }
        while !self.pending.is_empty() {
            self.write_next()?;
        }
        Ok(self.inner)
    }
}

/// A member from its task.
fn wait(rx: &Receiver<io::Result<Member>>) -> io::Result<Member> {
    let lost = || io::Error::other("a compression task panicked");
    if rayon::current_thread_index().is_none() {
        return rx.recv().map_err(|_| lost())?;
    }
    loop {
        match rx.try_recv() {
            Ok(m) => return m,
            Err(TryRecvError::Disconnected) => return Err(lost()),
            Err(TryRecvError::Empty) => {
                if rayon::yield_now() != Some(rayon::Yield::Executed) {
                    std::thread::yield_now();
                }
            }
        }
    }
}

impl<W: Write> Write for ParallelGzWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.cur.capacity() == 0 {
            self.cur.reserve_exact(BLOCK);
        }
        let n = (BLOCK - self.cur.len()).min(buf.len());
        self.cur.extend_from_slice(&buf[..n]);
        if self.cur.len() == BLOCK {
            let full = std::mem::take(&mut self.cur);
            self.submit(Arc::new(full))?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn incompressible_blocks_are_stored_and_still_round_trip() {
        let mut x: u64 = 0x9e3779b97f4a7c15;
        let random: Vec<u8> = (0..3 * BLOCK)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert!(!compresses(&random[..BLOCK]));
        assert!(compresses(&vec![b'a'; BLOCK]));
        let text: Vec<u8> = b"line of text\n".iter().copied().cycle().take(BLOCK).collect();
        let mut input = random.clone();
        input.extend_from_slice(&text);
        let mut w = ParallelGzWriter::new(Vec::new(), flate2::Compression::fast());
        w.write_all(&input).unwrap();
        let gz = w.finish().unwrap();
        // Stored random blocks cost a few bytes over their size; the text block still compresses.
        assert!(gz.len() < input.len() - BLOCK / 2, "{} of {}", gz.len(), input.len());
        assert!(gz.len() > 3 * BLOCK);
        let mut back = Vec::new();
        flate2::read::MultiGzDecoder::new(&gz[..]).read_to_end(&mut back).unwrap();
        assert!(back == input);
    }

    /// A writer that takes at most 1000 bytes a call, vectored or not.
    struct Trickle(Vec<u8>);

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(1000);
            self.0.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            let mut n = 0;
            for b in bufs {
                let k = b.len().min(1000 - n);
                self.0.extend_from_slice(&b[..k]);
                n += k;
                if n == 1000 {
                    break;
                }
            }
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn shared_blocks_of_any_size_survive_short_writes() {
        let mut x: u64 = 7;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        };
        let sizes = [BLOCK, 0, 65535, 65536, 3 * 65535 + 7, 100];
        let blocks: Vec<Vec<u8>> = sizes.iter().map(|&n| (0..n).map(|_| next()).collect()).collect();
        let mut w = ParallelGzWriter::new(Trickle(Vec::new()), flate2::Compression::fast());
        w.write_all(b"written first").unwrap();
        for b in &blocks {
            w.write_block(Arc::new(b.clone())).unwrap();
        }
        let gz = w.finish().unwrap().0;
        let mut back = Vec::new();
        flate2::read::MultiGzDecoder::new(&gz[..]).read_to_end(&mut back).unwrap();
        let mut want = b"written first".to_vec();
        blocks.iter().for_each(|b| want.extend_from_slice(b));
        assert!(back == want);
        // Nothing at all is still one valid, empty gzip stream.
        let gz = ParallelGzWriter::new(Vec::new(), flate2::Compression::fast()).finish().unwrap();
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut back).unwrap();
        assert!(back.is_empty());
    }

    #[test]
    fn round_trips_through_a_multi_member_decoder() {
        for len in [0usize, 10, BLOCK, BLOCK + 1, 5 * BLOCK + 123] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let mut w = ParallelGzWriter::new(Vec::new(), flate2::Compression::fast());
            for chunk in data.chunks(7777) {
                w.write_all(chunk).unwrap();
            }
            let gz = w.finish().unwrap();
            let mut out = Vec::new();
            flate2::read::MultiGzDecoder::new(&gz[..]).read_to_end(&mut out).unwrap();
            assert_eq!(out, data, "length {len}");
        }
    }
}
