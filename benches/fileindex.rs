//! The per-layer file index (`snapshots/<id>/files`): serialising and parsing 50,000 entries,
//! about the size of a full Debian image's biggest layer. df, diff and inspect parse these, so
//! parse speed bounds `strata system df -v` on a store with many images.
//!
//! `cargo bench -p strata-store --bench fileindex`

use std::path::Path;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use strata_store::fileindex::{FileEntry, FileIndex, Kind};

mod common;

const N: usize = 50_000;

fn index() -> FileIndex {
    let mut rng = common::Rng::new(3);
    let mut entries = Vec::with_capacity(N);
    for i in 0..N {
        let path = format!("usr/lib/x86_64-linux-gnu/pkg{:04}/sub{}/file-{i:06}.so", rng.below(2_000), rng.below(8))
            .into_bytes();
        let (kind, link, digest, size) = match i % 20 {
            0 => (Kind::Dir, Vec::new(), None, 0),
            1 => (Kind::Symlink, b"../../libc.so.6".to_vec(), None, 0),
            _ => {
                let mut d = [0u8; 32];
                rng.fill(&mut d);
                (Kind::File, Vec::new(), Some(d), rng.below(1 << 20))
            }
        };
        entries.push(FileEntry {
            path,
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size,
            mtime: 1_700_000_000,
            dev: (0, 0),
            link,
            digest,
        });
    }
    FileIndex {
        diff_id: strata_store::digest::sha256(b"bench"),
        content_bytes: entries.iter().map(|e| e.size).sum(),
        tar_bytes: 0,
        created: 1_700_000_000,
        entries,
    }
}

fn bench(c: &mut Criterion) {
    let idx = index();
    let mut bytes = Vec::new();
    idx.write_to(&mut bytes).unwrap();
    eprintln!("index: {N} entries, {}", common::mib(bytes.len() as u64));

    let mut g = c.benchmark_group("fileindex");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("write-50k", |b| {
        let mut out = Vec::with_capacity(bytes.len());
        b.iter(|| {
            out.clear();
            black_box(&idx).write_to(&mut out).unwrap();
            out.len()
        })
    });
    // What the store does: write_to through a BufWriter into a file (here /dev/null-like sink).
    g.bench_function("write-50k-bufwriter", |b| {
        b.iter(|| {
            let mut w = std::io::BufWriter::with_capacity(1 << 20, std::io::sink());
            black_box(&idx).write_to(&mut w).unwrap();
        })
    });
    g.bench_function("parse-50k", |b| {
        b.iter(|| FileIndex::parse(black_box(&bytes), Path::new("bench")).unwrap().entries.len())
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::quick_criterion();
    targets = bench
}
criterion_main!(benches);
