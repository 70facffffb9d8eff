//! Parallel gzip, as pigz writes it: the input is cut into blocks, each compressed on its own
//! core into an independent gzip member, and the members are written in order. A sequence of
//! members is one valid gzip stream (RFC 1952 §2.2): every decoder of layers reads it (Go's
//! `compress/gzip` and flate2's `MultiGzDecoder` read multi-member streams by default).
//!
//! Each member restarts the dictionary, which costs a little ratio on compressible data and
//! nothing on data that does not compress; in exchange a commit of 100 MB compresses on every core.

use std::io::{self, Write};

use rayon::prelude::*;

/// Input per member.
const BLOCK: usize = 1 << 20;

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
