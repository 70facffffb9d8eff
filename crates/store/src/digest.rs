//! Digests: one parsed type everywhere (`oci_spec`'s [`Digest`]), SHA-256 hashing that picks the
//! CPU's SHA extensions at run time (sha2 detects SHA-NI through `cpufeatures`), and the check that a
//! digest is safe to use as a file name before it ever becomes one.

use std::io::{self, Write};
use std::str::FromStr;

pub use oci_spec::image::{Digest, DigestAlgorithm};
use sha2::Digest as _;

use crate::error::{Error, Result};

/// Parses `s` as a digest the store can hold: `sha256:` and 64 lower-case hex digits.
pub fn parse(s: &str) -> Result<Digest> {
    let d = Digest::from_str(s).map_err(|e| {
        Error::invalid_argument(format!("invalid digest {s:?}: expected sha256:<64 hex digits>")).with_source(e)
    })?;
    hex(&d)?;
    Ok(d)
}

/// The hex part of a SHA-256 digest, checked to be exactly 64 lower-case hex digits so that it can
/// name a file under `blobs/sha256/` without any path trickery.
pub fn hex(d: &Digest) -> Result<&str> {
    let h = d.digest();
    if *d.algorithm() != DigestAlgorithm::Sha256
        || h.len() != 64
        || !h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(Error::invalid_argument(format!("unsupported digest {d}: the store holds sha256 digests only")));
    }
    Ok(h)
}

/// The digest of `bytes`.
pub fn sha256(bytes: &[u8]) -> Digest {
    let mut h = Hasher::new();
    h.update(bytes);
    h.finish()
}

/// Builds a digest from a 64-digit lower-case hex string known to be valid.
pub fn from_hex(hex: &str) -> Result<Digest> {
    parse(&format!("sha256:{hex}"))
}

/// An incremental SHA-256.
#[derive(Clone, Default)]
pub struct Hasher(sha2::Sha256);

impl Hasher {
    /// A fresh hasher.
    pub fn new() -> Self {
        Hasher(sha2::Sha256::new())
    }
    /// Feeds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    /// The digest of everything fed.
    pub fn finish(self) -> Digest {
        let out = self.0.finalize();
        let mut s = String::with_capacity(71);
        s.push_str("sha256:");
        for b in out {
            s.push(char::from(HEX[(b >> 4) as usize]));
            s.push(char::from(HEX[(b & 15) as usize]));
        }
        Digest::from_str(&s).expect("a sha256 hex string is a valid digest")
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// A writer that hashes and counts what passes through it on the way to `inner`.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        HashingWriter { inner, hasher: Hasher::new(), written: 0 }
    }
    /// The digest and size of what was written, and the inner writer.
    pub fn finish(self) -> (Digest, u64, W) {
        (self.hasher.finish(), self.written, self.inner)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes and counts what is read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
    read: u64,
}

impl<R: io::Read> HashingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        HashingReader { inner, hasher: Hasher::new(), read: 0 }
    }
    /// The digest and size of what was read.
    pub fn finish(self) -> (Digest, u64) {
        (self.hasher.finish(), self.read)
    }
    /// The bytes read so far.
    pub fn count(&self) -> u64 {
        self.read
    }
}

impl<R: io::Read> io::Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digest() {
        assert_eq!(
            sha256(b"{}").to_string(),
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
    }

    #[test]
    fn rejects_unsafe_digests() {
        assert!(parse("sha256:../../etc/passwd").is_err());
        assert!(parse("sha512:abcd").is_err());
        assert!(parse(&format!("sha256:{}", "A".repeat(64))).is_err());
        assert!(parse(&format!("sha256:{}", "a".repeat(64))).is_ok());
    }
}
