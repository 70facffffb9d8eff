//! The per-layer file index, written while a layer unpacks and read by df, diff and inspection
//! so that none of them rereads files.
//!
//! Format (`snapshots/<diff-id>/files`), little-endian, versioned by its magic:
//!
//! ```text
//! magic "STRFIDX2" | u64 entries | u64 content bytes | u64 tar bytes | u64 created (unix s) | [32] diff id
//! entry: u8 kind | u32 mode | u32 uid | u32 gid | u64 size | i64 mtime | u32 dev major | u32 dev minor
//!        | u32 path len | path | u32 link len | link | u8 has digest | [32] digest (if has digest)
//! ```
//! Content digests are BLAKE3 (32 bytes). Paths are relative to the layer root, without a leading `/` or `./`, as raw bytes.

use std::io::{self, Read, Write};
use std::path::Path;

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};

const MAGIC: &[u8; 8] = b"STRFIDX2";

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A hard link to another entry of the same layer (`link` names it).
    Hardlink,
    /// A character device.
    Char,
    /// A block device.
    Block,
    /// A named pipe.
    Fifo,
    /// A whiteout: the path is deleted from the layers below.
    Whiteout,
    /// An opaque directory: the layers below contribute nothing under this path.
    Opaque,
}

impl Kind {
    fn to_u8(self) -> u8 {
        self as u8
    }
    fn from_u8(b: u8) -> Option<Kind> {
        use Kind::*;
        [File, Dir, Symlink, Hardlink, Char, Block, Fifo, Whiteout, Opaque].get(b as usize).copied()
    }
    /// docker-ish one-letter form for listings.
    pub fn letter(self) -> char {
        match self {
            Kind::File => '-',
            Kind::Dir => 'd',
            Kind::Symlink => 'l',
            Kind::Hardlink => 'h',
            Kind::Char => 'c',
            Kind::Block => 'b',
            Kind::Fifo => 'p',
            Kind::Whiteout => 'w',
            Kind::Opaque => 'o',
        }
    }
}

/// One entry of a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Path relative to the layer root.
    pub path: Vec<u8>,
    /// What it is.
    pub kind: Kind,
    /// Permission bits (with setuid/setgid/sticky).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Content size (regular files and hard links to them).
    pub size: u64,
    /// Modification time, Unix seconds.
    pub mtime: i64,
    /// Device numbers (character and block devices).
    pub dev: (u32, u32),
    /// Symlink or hard link target.
    pub link: Vec<u8>,
    /// BLAKE3 of the content (regular files and hard links).
    pub digest: Option<[u8; 32]>,
}

impl FileEntry {
    /// An entry that is only a path and a kind, owned by root: whiteouts, opaque markers, and
    /// directories a layer implies without listing them.
    pub fn bare(path: Vec<u8>, kind: Kind, mode: u32) -> FileEntry {
        FileEntry { path, kind, mode, uid: 0, gid: 0, size: 0, mtime: 0, dev: (0, 0), link: Vec::new(), digest: None }
    }
}

/// A layer's index: summary and entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileIndex {
    /// The layer's diff ID.
    pub diff_id: Digest,
    /// Sum of regular files' sizes, each inode counted once.
    pub content_bytes: u64,
    /// Size of the uncompressed tar stream.
    pub tar_bytes: u64,
    /// When the snapshot was made (Unix seconds).
    pub created: i64,
    /// Entries in tar order.
    pub entries: Vec<FileEntry>,
}

/// The fixed-size head of an index: enough for df without reading the entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexSummary {
    /// Number of entries.
    pub entries: u64,
    /// Sum of regular files' sizes.
    pub content_bytes: u64,
    /// Uncompressed tar size.
    pub tar_bytes: u64,
    /// When the snapshot was made.
    pub created: i64,
    /// The diff ID recorded.
    pub diff_id: Digest,
}

impl FileIndex {
    /// Serialises the index.
    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        w.write_all(MAGIC)?;
        w.write_all(&(self.entries.len() as u64).to_le_bytes())?;
        w.write_all(&self.content_bytes.to_le_bytes())?;
        w.write_all(&self.tar_bytes.to_le_bytes())?;
        w.write_all(&self.created.to_le_bytes())?;
        w.write_all(&hex_to_bytes(self.diff_id.digest()))?;
        for e in &self.entries {
            w.write_all(&[e.kind.to_u8()])?;
            for v in [e.mode, e.uid, e.gid] {
                w.write_all(&v.to_le_bytes())?;
            }
            w.write_all(&e.size.to_le_bytes())?;
            w.write_all(&e.mtime.to_le_bytes())?;
            w.write_all(&e.dev.0.to_le_bytes())?;
            w.write_all(&e.dev.1.to_le_bytes())?;
            w.write_all(&(e.path.len() as u32).to_le_bytes())?;
            w.write_all(&e.path)?;
            w.write_all(&(e.link.len() as u32).to_le_bytes())?;
            w.write_all(&e.link)?;
            match &e.digest {
                Some(d) => {
                    w.write_all(&[1])?;
                    w.write_all(d)?;
                }
                None => w.write_all(&[0])?,
            }
        }
        Ok(())
    }

    /// Parses an index from bytes.
    pub fn parse(bytes: &[u8], what: &Path) -> Result<FileIndex> {
        let bad = || {
            Error::invalid_content(format!(
                "file index {} is corrupt (run `strata system check --repair`)",
                what.display()
            ))
        };
        let mut c = Cursor { b: bytes, at: 0 };
        let s = summary_from(&mut c).ok_or_else(bad)?;
        let mut entries = Vec::with_capacity(s.entries.min(1 << 20) as usize);
        for _ in 0..s.entries {
            entries.push(entry_from(&mut c).ok_or_else(bad)?);
        }
        if c.at != bytes.len() {
            return Err(bad());
        }
        Ok(FileIndex {
            diff_id: s.diff_id,
            content_bytes: s.content_bytes,
            tar_bytes: s.tar_bytes,
            created: s.created,
            entries,
        })
    }

    /// Reads an index file.
    pub fn read(path: &Path) -> Result<FileIndex> {
        let f = std::fs::File::open(path).at("cannot open", path)?;
        let bytes = crate::blob::Blob::map(f).at("cannot read", path)?;
        FileIndex::parse(&bytes, path)
    }

    /// Reads only the summary at the head of an index file.
    pub fn read_summary(path: &Path) -> Result<IndexSummary> {
        let mut f = std::fs::File::open(path).at("cannot open", path)?;
        let mut head = [0u8; 8 + 32 + 32];
        f.read_exact(&mut head)
            .map_err(|_| Error::invalid_content(format!("file index {} is truncated", path.display())))?;
        summary_from(&mut Cursor { b: &head, at: 0 })
            .ok_or_else(|| Error::invalid_content(format!("file index {} is corrupt", path.display())))
    }
}

/// Calls `f` with the kind and path of every entry of the index file at `path`, without
/// building the entries: for questions about a few paths of a big index.
pub fn scan_paths(path: &Path, mut f: impl FnMut(Kind, &[u8])) -> Result<()> {
    let file = std::fs::File::open(path).at("cannot open", path)?;
    let bytes = crate::blob::Blob::map(file).at("cannot read", path)?;
    let bad = || {
        Error::invalid_content(format!("file index {} is corrupt (run `strata system check --repair`)", path.display()))
    };
    let mut c = Cursor { b: &bytes, at: 0 };
    let s = summary_from(&mut c).ok_or_else(bad)?;
    for _ in 0..s.entries {
        let (kind, p) = skip_entry(&mut c).ok_or_else(bad)?;
        f(kind, p);
    }
    Ok(())
}

fn skip_entry<'a>(c: &mut Cursor<'a>) -> Option<(Kind, &'a [u8])> {
    let kind = Kind::from_u8(c.take(1)?[0])?;
    c.take(4 * 3 + 8 + 8 + 4 * 2)?;
    let pl = c.u32()? as usize;
    let path = c.take(pl)?;
    let ll = c.u32()? as usize;
    c.take(ll)?;
    match c.take(1)?[0] {
        0 => {}
        1 => {
            c.take(32)?;
        }
        _ => return None,
    }
    Some((kind, path))
}

fn hex_to_bytes(h: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap_or(0);
    }
    out
}

/// Hex of a 32-byte digest.
pub fn bytes_to_hex(b: &[u8; 32]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(64);
    for x in b {
        s.push(H[(x >> 4) as usize] as char);
        s.push(H[(x & 15) as usize] as char);
    }
    s
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

fn summary_from(c: &mut Cursor) -> Option<IndexSummary> {
    if c.take(8)? != MAGIC {
        return None;
    }
    let entries = c.u64()?;
    let content_bytes = c.u64()?;
    let tar_bytes = c.u64()?;
    let created = c.u64()? as i64;
    let d: [u8; 32] = c.take(32)?.try_into().ok()?;
    let diff_id = crate::digest::from_hex(&bytes_to_hex(&d)).ok()?;
    Some(IndexSummary { entries, content_bytes, tar_bytes, created, diff_id })
}

fn entry_from(c: &mut Cursor) -> Option<FileEntry> {
    let kind = Kind::from_u8(c.take(1)?[0])?;
    let mode = c.u32()?;
    let uid = c.u32()?;
    let gid = c.u32()?;
    let size = c.u64()?;
    let mtime = c.u64()? as i64;
    let dev = (c.u32()?, c.u32()?);
    let pl = c.u32()? as usize;
    let path = c.take(pl)?.to_vec();
    let ll = c.u32()? as usize;
    let link = c.take(ll)?.to_vec();
    let digest = match c.take(1)?[0] {
        0 => None,
        1 => Some(c.take(32)?.try_into().ok()?),
        _ => return None,
    };
    Some(FileEntry { path, kind, mode, uid, gid, size, mtime, dev, link, digest })
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn round_trip_and_corruption() {
        let idx = FileIndex {
            diff_id: crate::digest::sha256(b"x"),
            content_bytes: 5,
            tar_bytes: 2048,
            created: 7,
            entries: vec![
                FileEntry {
                    path: b"etc".to_vec(),
                    kind: Kind::Dir,
                    mode: 0o755,
                    uid: 0,
                    gid: 0,
                    size: 0,
                    mtime: 1,
                    dev: (0, 0),
                    link: vec![],
                    digest: None,
                },
                FileEntry {
                    path: b"etc/a b".to_vec(),
                    kind: Kind::File,
                    mode: 0o4755,
                    uid: 1,
                    gid: 2,
                    size: 5,
                    mtime: -3,
                    dev: (0, 0),
                    link: vec![],
                    digest: Some([7; 32]),
                },
                FileEntry {
                    path: b"l".to_vec(),
                    kind: Kind::Symlink,
                    mode: 0o777,
                    uid: 0,
                    gid: 0,
                    size: 0,
                    mtime: 1,
                    dev: (0, 0),
                    link: b"/etc".to_vec(),
                    digest: None,
                },
            ],
        };
        let mut v = Vec::new();
        idx.write_to(&mut v).unwrap();
        assert_eq!(FileIndex::parse(&v, Path::new("t")).unwrap(), idx);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("files");
        std::fs::write(&p, &v).unwrap();
        let mut seen = Vec::new();
        scan_paths(&p, |k, path| seen.push((k, path.to_vec()))).unwrap();
        assert_eq!(seen, idx.entries.iter().map(|e| (e.kind, e.path.clone())).collect::<Vec<_>>());
        std::fs::write(&p, &v[..v.len() - 1]).unwrap();
        assert!(scan_paths(&p, |_, _| {}).is_err());
        assert!(FileIndex::parse(&v[..v.len() - 1], Path::new("t")).is_err());
        let mut w = v.clone();
        w.push(0);
        assert!(FileIndex::parse(&w, Path::new("t")).is_err());
    }
}
