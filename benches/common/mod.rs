//! Deterministic inputs shared by the criterion benches: a seeded generator, file contents that
//! compress about as well as a Debian layer's (gzip ratio ≈ 3), and a synthetic layer tar.
//!
//! Everything is generated in memory from fixed seeds, so every run of every bench sees the same
//! bytes and no bench needs a network or a prepared file.
#![allow(dead_code)]

use std::io::Write;
use std::time::Duration;

use criterion::Criterion;

/// The criterion settings every bench uses: few samples and short windows, so that the whole
/// `cargo bench -p strata-store` finishes in a few minutes on a 2-core machine.
pub fn quick_criterion() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .configure_from_args()
}

/// xorshift64*: fast, seeded, good enough for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() >> 32) * n) >> 32
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let v = self.next_u64().to_le_bytes();
        let n = rest.len();
        rest.copy_from_slice(&v[..n]);
    }
}

/// `n` incompressible bytes.
pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; n];
    Rng::new(seed).fill(&mut v);
    v
}

const WORDS: &[&str] = &[
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "for",
    "that",
    "with",
    "on",
    "as",
    "file",
    "package",
    "debian",
    "library",
    "version",
    "config",
    "return",
    "int",
    "char",
    "void",
    "static",
    "const",
    "struct",
    "if",
    "else",
    "while",
    "for",
    "error",
    "value",
    "size_t",
    "buffer",
    "license",
    "GNU",
    "General",
    "Public",
    "copyright",
    "usr",
    "lib",
    "share",
    "doc",
    "python3",
    "def",
    "self",
    "import",
    "from",
    "None",
];

/// Content shaped like a root filesystem's: text-like runs (docs, scripts, headers) and
/// binary-like runs (code, tables) with some redundancy, so deflate does real work.
pub fn file_content(rng: &mut Rng, size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size + 64);
    while out.len() < size {
        match rng.below(8) {
            // text: words and punctuation
            0..=3 => {
                for _ in 0..rng.below(48) + 8 {
                    out.extend_from_slice(WORDS[rng.below(WORDS.len() as u64) as usize].as_bytes());
                    out.push(match rng.below(12) {
                        0 => b'\n',
                        1 => b',',
                        _ => b' ',
                    });
                }
            }
            // binary: a few random bytes followed by small-alphabet "opcodes"
            4..=5 => {
                let n = rng.below(96) as usize + 16;
                let at = out.len();
                out.resize(at + n, 0);
                rng.fill(&mut out[at..]);
                for _ in 0..rng.below(64) + 16 {
                    out.push([0x48, 0x89, 0x8b, 0x00, 0xff, 0xe8, 0x0f, 0x85][rng.below(8) as usize]);
                }
            }
            // zero padding, as in sections and tables
            6 => out.resize(out.len() + rng.below(256) as usize, 0),
            // a repeat of something earlier in the file (redundancy the LZ77 window finds)
            _ => {
                if out.len() > 256 {
                    let len = rng.below(200) as usize + 32;
                    let start = rng.below((out.len() - len) as u64) as usize;
                    out.extend_from_within(start..start + len);
                }
            }
        }
    }
    out.truncate(size);
    out
}

/// What [`layer_tar`] made.
pub struct Layer {
    /// The uncompressed tar stream.
    pub tar: Vec<u8>,
    /// Entries in it (directories, files, links).
    pub entries: usize,
    /// Regular files' bytes.
    pub content_bytes: u64,
}

/// A layer tar of about `files` entries in a tree of directories three levels deep: regular files
/// of log-uniform sizes from 64 B to 64 KiB (median ≈ 2 KiB, mean ≈ 9 KiB, like /usr of a Debian
/// image), plus one symlink per 25 files and one hard link per 100, some files owned by uid 1000,
/// some executables. With `whiteouts`, a few whiteouts and one opaque directory too (unpacking
/// those in overlay form needs root).
pub fn layer_tar(files: usize, seed: u64, whiteouts: bool) -> Layer {
    let mut rng = Rng::new(seed);
    let mut b = tar::Builder::new(Vec::with_capacity(files * 10_000));
    let mut entries = 0;
    let mut content_bytes = 0u64;
    let mtime = 1_700_000_000;

    let header = |kind: tar::EntryType, mode: u32, uid: u64, size: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(uid);
        h.set_mtime(mtime);
        h.set_size(size);
        h
    };

    // Directories: 10 top-level, 5 below each, 4 below those = 260.
    let mut dirs = Vec::new();
    for a in 0..10 {
        let d1 = format!("usr/d{a}");
        dirs.push(d1.clone());
        for b2 in 0..5 {
            let d2 = format!("{d1}/sub{b2}");
            dirs.push(d2.clone());
            for c in 0..4 {
                dirs.push(format!("{d2}/leaf{c}"));
            }
        }
    }
    let mut h = header(tar::EntryType::Directory, 0o755, 0, 0);
    b.append_data(&mut h, "usr/", &[][..]).unwrap();
    entries += 1;
    for d in &dirs {
        let mut h = header(tar::EntryType::Directory, 0o755, 0, 0);
        b.append_data(&mut h, format!("{d}/"), &[][..]).unwrap();
        entries += 1;
    }

    let mut regular = Vec::new();
    for i in 0..files.saturating_sub(dirs.len() + 1) {
        let dir = &dirs[rng.below(dirs.len() as u64) as usize];
        let path = format!("{dir}/file{i:05}");
        if i % 25 == 24 {
            let mut h = header(tar::EntryType::Symlink, 0o777, 0, 0);
            let target = format!("../file{:05}", rng.below(i as u64));
            b.append_link(&mut h, &path, &target).unwrap();
        } else if i % 100 == 99 && !regular.is_empty() {
            let mut h = header(tar::EntryType::Link, 0o644, 0, 0);
            let target: &String = &regular[rng.below(regular.len() as u64) as usize];
            b.append_link(&mut h, &path, target).unwrap();
        } else {
            // log-uniform 2^6 .. 2^16
            let exp = 6.0 + 10.0 * (rng.below(1 << 20) as f64 / (1u64 << 20) as f64);
            let size = exp.exp2() as usize;
            let data = file_content(&mut rng, size);
            let mode = if i % 7 == 0 { 0o755 } else { 0o644 };
            let uid = if i % 50 == 0 { 1000 } else { 0 };
            let mut h = header(tar::EntryType::Regular, mode, uid, size as u64);
            b.append_data(&mut h, &path, &data[..]).unwrap();
            content_bytes += size as u64;
            regular.push(path);
        }
        entries += 1;
    }
    if whiteouts {
        for i in 0..10 {
            let path = format!("{}/.wh.gone{i}", dirs[i * 7]);
            let mut h = header(tar::EntryType::Regular, 0o644, 0, 0);
            b.append_data(&mut h, &path, &[][..]).unwrap();
            entries += 1;
        }
        let path = format!("{}/.wh..wh..opq", dirs[3]);
        let mut h = header(tar::EntryType::Regular, 0o644, 0, 0);
        b.append_data(&mut h, &path, &[][..]).unwrap();
        entries += 1;
    }
    let tar = b.into_inner().unwrap();
    Layer { tar, entries, content_bytes }
}

/// gzip at `level` (6 is what docker, umoci and skopeo write).
pub fn gzip(data: &[u8], level: u32) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::with_capacity(data.len() / 2), flate2::Compression::new(level));
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// zstd at `level` (3 is the default of containerd and podman).
pub fn zstd(data: &[u8], level: i32) -> Vec<u8> {
    zstd::bulk::compress(data, level).unwrap()
}

/// A fresh directory for a bench's output: under `$STRATA_BENCH_DIR` if set, else under `base`
/// (tmpfs `/dev/shm` or disk `/var/tmp`), falling back to the system temp dir.
pub fn scratch_dir(base: &str) -> tempfile::TempDir {
    let base = std::env::var("STRATA_BENCH_DIR").unwrap_or_else(|_| base.to_string());
    tempfile::Builder::new()
        .prefix("strata-bench-")
        .tempdir_in(&base)
        .or_else(|_| tempfile::tempdir())
        .expect("a temp dir for bench output")
}

pub fn mib(n: u64) -> String {
    format!("{:.1} MiB", n as f64 / (1 << 20) as f64)
}
