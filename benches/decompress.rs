//! Decompression throughput of a generated layer (≈ 40 MiB tar of ~5,000 entries shaped like a
//! Debian /usr), through the same readers unpack uses: flate2's `MultiGzDecoder` (backend chosen
//! by the workspace's flate2 feature) and zstd's streaming decoder. Throughput is counted in
//! uncompressed bytes. `gzip+sha256` is the work of unpack's decompressor thread: inflate and
//! hash the tar stream for the diff ID.
//!
//! `cargo bench -p strata-store --bench decompress`

use std::io::{self, Read};

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use strata_store::digest::HashingReader;

mod common;

fn drain(mut r: impl Read) -> u64 {
    let mut buf = vec![0u8; 256 << 10];
    let mut n = 0u64;
    loop {
        match r.read(&mut buf) {
            Ok(0) => return n,
            Ok(k) => n += k as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("decompression failed: {e}"),
        }
    }
}

fn bench(c: &mut Criterion) {
    let layer = common::layer_tar(5_000, 7, false);
    let tar_len = layer.tar.len() as u64;
    let gz = common::gzip(&layer.tar, 6);
    let zst = common::zstd(&layer.tar, 3);
    eprintln!(
        "layer: {} entries, tar {}, gzip -6 {} (ratio {:.2}), zstd -3 {} (ratio {:.2})",
        layer.entries,
        common::mib(tar_len),
        common::mib(gz.len() as u64),
        tar_len as f64 / gz.len() as f64,
        common::mib(zst.len() as u64),
        tar_len as f64 / zst.len() as f64
    );

    let mut g = c.benchmark_group("decompress");
    // 55 iterations of up to ~100 ms each: give the 10 samples room.
    g.measurement_time(std::time::Duration::from_secs(7));
    g.throughput(Throughput::Bytes(tar_len));
    g.bench_function("gzip", |b| {
        b.iter(|| assert_eq!(drain(flate2::read::MultiGzDecoder::new(black_box(&gz[..]))), tar_len))
    });
    g.bench_function("gzip+sha256", |b| {
        b.iter(|| {
            let mut r = HashingReader::new(flate2::read::MultiGzDecoder::new(black_box(&gz[..])));
            assert_eq!(drain(&mut r), tar_len);
            r.finish()
        })
    });
    g.bench_function("zstd", |b| {
        b.iter(|| {
            let d = zstd::stream::read::Decoder::with_buffer(black_box(&zst[..])).unwrap();
            assert_eq!(drain(d), tar_len)
        })
    });
    g.bench_function("zstd+sha256", |b| {
        b.iter(|| {
            let d = zstd::stream::read::Decoder::with_buffer(black_box(&zst[..])).unwrap();
            let mut r = HashingReader::new(d);
            assert_eq!(drain(&mut r), tar_len);
            r.finish()
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::quick_criterion();
    targets = bench
}
criterion_main!(benches);
