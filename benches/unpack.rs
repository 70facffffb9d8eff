//! `strata_store::unpack::unpack_layer` of a generated gzip layer (~5,000 entries, ≈ 40 MiB of
//! tar) in overlay format, each iteration into a fresh empty directory: on tmpfs (`/dev/shm`:
//! the CPU cost of decompress + parse + create + hash) and on disk (`/var/tmp`: adds the file
//! system's cost of creating inodes, still without any sync). `$STRATA_BENCH_DIR` replaces both
//! locations.
//!
//! Output trees are removed outside the timed part: on tmpfs after each iteration; on disk only
//! at the end of the bench. On ext4 without a journal (this machine's root file system) inode
//! allocation skips inodes freed in the last 60 s (`recently_deleted()` in fs/ext4/ialloc.c),
//! reading their inode-table blocks one by one, so an unpack right after an `rm -rf` of the
//! previous tree costs up to several times more in `ext4_create` than one on a quiet file system.
//!
//! As root the layer also carries whiteouts and an opaque directory (overlay markers need
//! CAP_MKNOD and trusted.* xattrs); otherwise it has none.
//!
//! `cargo bench -p strata-store --bench unpack`

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, SamplingMode, Throughput};
use strata_store::unpack::{unpack_layer, Format};

mod common;

fn bench(c: &mut Criterion) {
    let root = rustix::process::geteuid().is_root();
    let layer = common::layer_tar(5_000, 11, root);
    let gz = common::gzip(&layer.tar, 6);
    let want = strata_store::digest::sha256(&layer.tar);
    eprintln!(
        "layer: {} entries, {} in regular files, tar {}, gzip {}{}",
        layer.entries,
        common::mib(layer.content_bytes),
        common::mib(layer.tar.len() as u64),
        common::mib(gz.len() as u64),
        if root { ", with whiteouts" } else { " (not root: no whiteouts)" }
    );

    let mut g = c.benchmark_group("unpack");
    g.sampling_mode(SamplingMode::Flat);
    g.measurement_time(std::time::Duration::from_secs(6));
    g.throughput(Throughput::Elements(layer.entries as u64));
    for (name, base, keep_until_end) in
        [("gzip-5000-files/tmpfs", "/dev/shm", false), ("gzip-5000-files/disk", "/var/tmp", true)]
    {
        // Trees kept until the end of this bench (disk: see the module doc on ext4).
        let mut kept = Vec::new();
        // Check once that the unpack is right before timing it.
        let dir = common::scratch_dir(base);
        let idx = unpack_layer(&gz, dir.path(), Format::Overlay, "bench").expect("unpack");
        assert_eq!(idx.diff_id, want, "diff ID of the generated layer");
        assert_eq!(idx.content_bytes, layer.content_bytes);
        kept.push(dir);

        g.bench_function(name, |b| {
            b.iter_batched(
                || common::scratch_dir(base),
                |dir| {
                    let idx = unpack_layer(&gz, dir.path(), Format::Overlay, "bench").expect("unpack");
                    if keep_until_end {
                        kept.push(dir);
                        (None, idx)
                    } else {
                        // Returned, so that the tree is removed after the clock stops.
                        (Some(dir), idx)
                    }
                },
                BatchSize::PerIteration,
            )
        });
        drop(kept);
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::quick_criterion();
    targets = bench
}
criterion_main!(benches);
