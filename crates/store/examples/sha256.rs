//! Hashes files the way the store reads blobs (a memory map, one `Hasher`) and prints
//! `sha256:<hex>  PATH`, like `sha256sum`. Used by `benches/peers.sh` to compare strata's hashing
//! with `openssl dgst -sha256` and `sha256sum` on the same file.
//!
//! `cargo build --release -p strata-store --example sha256 && target/release/examples/sha256 FILE...`

use std::fs::File;
use std::io::Read;
use std::process::ExitCode;

use strata_store::digest::Hasher;

fn hash(path: &str) -> std::io::Result<String> {
    let mut file = File::open(path)?;
    let mut h = Hasher::new();
    let len = file.metadata()?.len();
    // SAFETY: a benchmark input nobody writes while it is hashed; if it were truncated under us
    // the process would take SIGBUS, which is acceptable for this tool.
    match (len > 0).then(|| unsafe { memmap2::Mmap::map(&file) }) {
        Some(Ok(m)) => {
            let _ = m.advise(memmap2::Advice::Sequential);
            h.update(&m);
        }
        _ => {
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
        }
    }
    Ok(h.finish().to_string())
}

fn main() -> ExitCode {
    let paths: Vec<String> = std::env::args().skip(1).collect();
    if paths.is_empty() {
        eprintln!("usage: sha256 FILE...");
        return ExitCode::from(2);
    }
    let mut status = ExitCode::SUCCESS;
    for p in &paths {
        match hash(p) {
            Ok(d) => println!("{d}  {p}"),
            Err(e) => {
                eprintln!("sha256: {p}: {e}");
                status = ExitCode::FAILURE;
            }
        }
    }
    status
}
