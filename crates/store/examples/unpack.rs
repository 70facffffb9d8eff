//! Unpacks one layer blob (gzip, zstd or plain tar) into a directory with
//! `strata_store::unpack::unpack_layer` in overlay format, the way the store makes a snapshot
//! (minus the final syncfs and rename), and prints the diff ID and counts. Used by
//! `benches/peers.sh` to time a single layer against `tar -xzf`.
//!
//! `cargo build --release -p strata-store --example unpack && target/release/examples/unpack LAYER_BLOB DEST_DIR`

use std::fs::File;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use strata_store::unpack::{unpack_layer, Format};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [blob, dest] = &args[..] else {
        eprintln!("usage: unpack LAYER_BLOB DEST_DIR   (DEST_DIR is created if missing; it should be empty)");
        return ExitCode::from(2);
    };
    let start = Instant::now();
    let file = match File::open(blob) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("unpack: {blob}: {e}");
            return ExitCode::FAILURE;
        }
    };
    // SAFETY: a benchmark input nobody writes while it is read (the store maps committed,
    // read-only blobs the same way).
    let map = match unsafe { memmap2::Mmap::map(&file) } {
        Ok(m) => m,
        Err(e) => {
            eprintln!("unpack: cannot map {blob}: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = std::fs::create_dir_all(dest) {
        eprintln!("unpack: cannot create {dest}: {e}");
        return ExitCode::FAILURE;
    }
    match unpack_layer(&map, Path::new(dest), Format::Overlay, blob) {
        Ok(idx) => {
            eprintln!(
                "{} entries, {} content bytes, {} tar bytes, {:.3} s",
                idx.entries.len(),
                idx.content_bytes,
                idx.tar_bytes,
                start.elapsed().as_secs_f64()
            );
            println!("{}", idx.diff_id);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("unpack: {e}");
            ExitCode::FAILURE
        }
    }
}
