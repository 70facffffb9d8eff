//! `gunzip FILE.gz [FILE.gz...]`: decompresses like `gzip -dc` (all members, to stdout) through
//! flate2's `MultiGzDecoder` over a memory map, the way strata's unpack reads a layer. Which
//! inflate backs it is chosen at build time (features `zlib-rs`, `zlib-ng`, `miniz`, `zlib`, each
//! with or without `rt`, flate2's `runtime_detection`).
//! Prints the backend, bytes and MB/s on stderr.

use std::fs::File;
use std::io::{self, Read, Write};
use std::time::Instant;

fn backend() -> String {
    let b = if cfg!(feature = "zlib-ng") {
        "zlib-ng"
    } else if cfg!(feature = "zlib-rs") {
        "zlib-rs"
    } else if cfg!(feature = "zlib") {
        "zlib"
    } else {
        "miniz_oxide"
    };
    if cfg!(feature = "rt") {
        format!("{b}+runtime_detection")
    } else {
        b.to_string()
    }
}

fn main() -> io::Result<()> {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let mut buf = vec![0u8; 256 << 10];
    for path in std::env::args().skip(1) {
        let file = File::open(&path)?;
        // SAFETY: a benchmark input that nothing writes while it is read.
        let map = unsafe { memmap2::Mmap::map(&file)? };
        let _ = map.advise(memmap2::Advice::Sequential);
        let start = Instant::now();
        let mut d = flate2::read::MultiGzDecoder::new(&map[..]);
        let mut total = 0u64;
        loop {
            let n = match d.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            out.write_all(&buf[..n])?;
            total += n as u64;
        }
        let s = start.elapsed().as_secs_f64();
        eprintln!(
            "{}: {path}: {} -> {} bytes in {s:.3} s: {:.0} MB/s out, {:.0} MB/s in",
            backend(),
            map.len(),
            total,
            total as f64 / s / 1e6,
            map.len() as f64 / s / 1e6
        );
    }
    Ok(())
}
