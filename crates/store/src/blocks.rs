//! One byte stream, several consumers: the stream is cut into shared 1 MiB blocks and every
//! block goes to each consumer, on its own thread, without being copied for any of them. A
//! commit writes its layer's tar stream once and hashes it (diff ID), compresses it (blob) and
//! unpacks it (snapshot) at the same time from the same memory.
//!
//! Lifecycle: [`fan_out`] gives a [`BlockWriter`] and one receiver per consumer. The writer sends
//! each full block to every consumer over a bounded channel, so the slowest consumer paces the
//! writer and at most a few blocks per consumer are in memory; [`BlockWriter::finish`] sends the
//! last, partial block and then an empty block that marks the end. A consumer reads with
//! [`next_block`] or through a [`BlockReader`]: a channel that closes without the end mark means
//! the writer failed, and reads fail ([`Cut`]) rather than pass a truncated stream off as a whole
//! one. A consumer that fails drops its receiver; the writer's next send then fails
//! ([`HungUp`]), which tells the caller to look for that consumer's own error ([`caused_by`]
//! tells these two apart from real failures).
//!
//! Blocks are reference-counted; once every consumer has dropped one, the writer fills it again
//! (fresh memory costs page faults that reused memory does not).
//!
//! ```text
//! let (w, [a, b]) = fan_out::<2>(4);
//! thread 1: let (diff_id, len) = hash_blocks(a)?;
//! thread 2: unpack(BlockReader::new(b))?;
//! here:     w.write_all(..)?; w.finish()?;
//! ```

use std::io::{self, Read, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

use crate::digest::{Digest, Hasher};

/// A piece of the stream; empty marks its end.
pub type Block = Arc<Vec<u8>>;

/// Bytes per block.
pub const BLOCK: usize = 1 << 20;

/// Blocks kept for reuse at most.
const POOL: usize = 64;

/// A writer of a stream that goes to `N` consumers; `depth` is how many blocks each consumer's
/// channel holds.
pub fn fan_out<const N: usize>(depth: usize) -> (BlockWriter, [Receiver<Block>; N]) {
    let mut outs = Vec::with_capacity(N);
    let rxs = std::array::from_fn(|_| {
        let (tx, rx) = sync_channel(depth);
        outs.push(tx);
        rx
    });
    (BlockWriter { cur: vec![0; BLOCK], len: 0, outs, pool: Vec::new() }, rxs)
}

/// The writing end of [`fan_out`].
pub struct BlockWriter {
    /// The block being filled: always `BLOCK` bytes long, `len` of them written.
    cur: Vec<u8>,
    len: usize,
    outs: Vec<SyncSender<Block>>,
    /// Blocks sent, to be filled again once no consumer holds them.
    pool: Vec<Block>,
}

impl BlockWriter {
    /// Sends the current block (its first `len` bytes) to every consumer and starts a new one.
    fn send(&mut self) -> io::Result<()> {
        let next = self.spare();
        let mut full = std::mem::replace(&mut self.cur, next);
        full.truncate(self.len);
        self.len = 0;
        let block = Arc::new(full);
        for o in &self.outs {
            o.send(block.clone()).map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, HungUp))?;
        }
        if self.pool.len() < POOL {
            self.pool.push(block);
        }
        Ok(())
    }

    /// A block no consumer holds any more, or a new one.
    fn spare(&mut self) -> Vec<u8> {
        let free = self.pool.iter().position(|b| Arc::strong_count(b) == 1);
        // The pool holds the only reference: nobody else can take one (consumers only drop
        // theirs), so the unwrap succeeds.
        let mut v = free.and_then(|i| Arc::try_unwrap(self.pool.swap_remove(i)).ok()).unwrap_or_default();
        v.resize(BLOCK, 0);
        v
    }

    /// Sends what is left and the end mark.
    pub fn finish(mut self) -> io::Result<()> {
        if self.len > 0 {
            self.send()?;
        }
        let end = Block::default();
        for o in &self.outs {
            o.send(end.clone()).map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, HungUp))?;
        }
        Ok(())
    }
}

impl Write for BlockWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = (BLOCK - self.len).min(buf.len());
        self.cur[self.len..self.len + n].copy_from_slice(&buf[..n]);
        self.len += n;
        if self.len == BLOCK {
            self.send()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The next block of the stream, or `None` at its end; an error if the writer stopped first.
pub fn next_block(rx: &Receiver<Block>) -> io::Result<Option<Block>> {
    match rx.recv() {
        Ok(b) if b.is_empty() => Ok(None),
        Ok(b) => Ok(Some(b)),
        Err(_) => Err(io::Error::new(io::ErrorKind::UnexpectedEof, Cut)),
    }
}

/// What a consumer reads when the writer stopped before the end (it failed: its error is the one
/// to report).
#[derive(Debug)]
pub struct Cut;

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the stream stopped before its end")
    }
}

impl std::error::Error for Cut {}

/// What the writer gets when a consumer stopped (it failed: its error is the one to report).
#[derive(Debug)]
pub struct HungUp;

impl std::fmt::Display for HungUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a consumer of the stream stopped")
    }
}

impl std::error::Error for HungUp {}

/// Whether `T` ([`Cut`] or [`HungUp`]) is among the causes of `e`.
pub fn caused_by<T: std::error::Error + 'static>(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(c) = cur {
        // An io::Error hides its payload from `source()`: look inside.
        if c.is::<T>() || c.downcast_ref::<io::Error>().and_then(|io| io.get_ref()).is_some_and(|p| p.is::<T>()) {
            return true;
        }
        cur = c.source();
    }
    false
}

/// Hashes a whole stream: its SHA-256 digest and length.
pub fn hash_blocks(rx: Receiver<Block>) -> io::Result<(Digest, u64)> {
    let mut h = Hasher::new();
    let mut n = 0u64;
    while let Some(b) = next_block(&rx)? {
        h.update(&b);
        n += b.len() as u64;
    }
    Ok((h.finish(), n))
}

/// A consumer's stream as a reader.
pub struct BlockReader {
    rx: Receiver<Block>,
    cur: Block,
    pos: usize,
    done: bool,
}

impl BlockReader {
    /// Reads the blocks `rx` receives.
    pub fn new(rx: Receiver<Block>) -> Self {
        BlockReader { rx, cur: Block::default(), pos: 0, done: false }
    }
}

impl Read for BlockReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            if self.done {
                return Ok(0);
            }
            match next_block(&self.rx)? {
                Some(b) => {
                    self.cur = b;
                    self.pos = 0;
                }
                None => {
                    self.done = true;
                    self.cur = Block::default();
                    self.pos = 0;
                }
            }
        }
        let n = (self.cur.len() - self.pos).min(buf.len());
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_consumer_gets_the_whole_stream() {
        let data: Vec<u8> = (0..3 * BLOCK + 12345).map(|i| (i * 7 % 253) as u8).collect();
        let (mut w, [a, b]) = fan_out::<2>(2);
        let ((digest, len), back) = std::thread::scope(|s| {
            let ha = s.spawn(move || hash_blocks(a).unwrap());
            let hb = s.spawn(move || {
                let mut v = Vec::new();
                BlockReader::new(b).read_to_end(&mut v).unwrap();
                v
            });
            for c in data.chunks(100_000) {
                w.write_all(c).unwrap();
            }
            w.finish().unwrap();
            (ha.join().unwrap(), hb.join().unwrap())
        });
        assert_eq!(len, data.len() as u64);
        assert_eq!(digest, crate::digest::sha256(&data));
        assert!(back == data);
    }

    #[test]
    fn a_stream_cut_short_is_an_error_not_an_end() {
        let (mut w, [a]) = fan_out::<1>(8);
        w.write_all(&[1; 10]).unwrap();
        drop(w);
        let mut v = Vec::new();
        let e = BlockReader::new(a).read_to_end(&mut v).unwrap_err();
        assert!(caused_by::<Cut>(&e), "{e}");
        let wrapped = crate::Error::invalid_content("truncated").with_source(e);
        assert!(caused_by::<Cut>(&wrapped) && !caused_by::<HungUp>(&wrapped));
    }

    #[test]
    fn a_consumer_that_stops_stops_the_writer() {
        let (mut w, [a, b]) = fan_out::<2>(1);
        drop(b);
        let e = w.write_all(&vec![0; 2 * BLOCK]).unwrap_err();
        assert!(caused_by::<HungUp>(&e), "{e}");
        drop(a);
    }
}
