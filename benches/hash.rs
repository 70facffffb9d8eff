//! SHA-256 throughput of `strata_store::digest::Hasher`, the hasher of every ingest and of the
//! uncompressed layer stream during unpack. sha2 picks the CPU's SHA extensions (SHA-NI) at run
//! time; the figure to compare with is `openssl dgst -sha256` on the same machine (see
//! `benches/peers.sh`, which times `examples/sha256.rs` against openssl on a 1 GiB file).
//!
//! `cargo bench -p strata-store --bench hash`

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use strata_store::digest::Hasher;

mod common;

const LEN: usize = 64 << 20;

fn bench(c: &mut Criterion) {
    let data = common::random_bytes(LEN, 1);
    let mut g = c.benchmark_group("sha256");
    g.throughput(Throughput::Bytes(LEN as u64));
    g.bench_function("64MiB/one-update", |b| {
        b.iter(|| {
            let mut h = Hasher::new();
            h.update(black_box(&data));
            h.finish()
        })
    });
    // The shape ingest and unpack feed it: 256 KiB writes / 1 MiB chunks.
    g.bench_function("64MiB/256KiB-updates", |b| {
        b.iter(|| {
            let mut h = Hasher::new();
            for chunk in black_box(&data).chunks(256 << 10) {
                h.update(chunk);
            }
            h.finish()
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
