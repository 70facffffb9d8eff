//! Parallel gzip, as pigz writes it: the input is cut into blocks, each compressed on its own
//! core into an independent gzip member, and the members are written in order. A sequence of
//! members is one valid gzip stream (RFC 1952 §2.2): every decoder of layers reads it (Go's
//! `compress/gzip` and flate2's `MultiGzDecoder` read multi-member streams by default).
//!
//! Each member restarts the dictionary, which costs a little ratio on compressible data and
//! nothing on data that does not compress; in exchange a commit of 100 MB compresses on every core.
//! A block whose samples do not compress (random, or already compressed, data) is stored in
//! deflate's stored blocks instead of being run through the compressor for nothing, as zstd
//! does with incompressible input: the output is the same size and costs a copy and a CRC.

use std::io::{self, Write};

use rayon::prelude::*;

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

/// A writer that gzips what it is given in parallel blocks into `inner`.
pub struct ParallelGzWriter<W: Write> {
    inner: W,
    level: flate2::Compression,
    pending: Vec<Vec<u8>>,
    cur: Vec<u8>,
    batch: usize,
}

impl<W: Write> ParallelGzWriter<W> {
    /// A writer at compression `level`.
    pub fn new(inner: W, level: flate2::Compression) -> Self {
        let batch = 2 * rayon::current_num_threads().max(1);
        ParallelGzWriter { inner, level, pending: Vec::with_capacity(batch), cur: Vec::with_capacity(BLOCK), batch }
    }

    /// Compresses the pending blocks (in parallel) and writes them in order.
    fn flush_blocks(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let level = self.level;
        let members: Vec<io::Result<Vec<u8>>> = self
            .pending
            .par_iter()
            .map(|b| {
                let level = if level.level() > 0 && !compresses(b) { flate2::Compression::none() } else { level };
                let mut e = flate2::write::GzEncoder::new(Vec::with_capacity(b.len() / 2 + 64), level);
                e.write_all(b)?;
                e.finish()
            })
            .collect();
        self.pending.clear();
        for m in members {
            self.inner.write_all(&m?)?;
        }
        Ok(())
    }

    /// Writes what is left (an empty input still makes one valid, empty member) and returns
    /// the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        if !self.cur.is_empty() || self.pending.is_empty() {
            let last = std::mem::take(&mut self.cur);
            self.pending.push(last);
        }
        self.flush_blocks()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for ParallelGzWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = (BLOCK - self.cur.len()).min(buf.len());
        self.cur.extend_from_slice(&buf[..n]);
        if self.cur.len() == BLOCK {
            let full = std::mem::replace(&mut self.cur, Vec::with_capacity(BLOCK));
            self.pending.push(full);
            if self.pending.len() >= self.batch {
                self.flush_blocks()?;
            }
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
