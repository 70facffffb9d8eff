//! Attaching to a container: the wire protocol between a container's monitor, which serves a
//! unix socket (`attach.sock` in the container's folder), and the clients (`strata attach`,
//! `start -a`, `run` of a terminal).
//!
//! Every message is a frame: an 8-byte header (kind, three zero bytes, the payload length as a
//! big-endian u32, as in docker's multiplexed streams) and the payload. A client opens with
//! [`HELLO`] (whether it sends input, and its terminal's size), then sends [`STDIN`] data,
//! [`CLOSE_STDIN`], [`RESIZE`] and [`SIGNAL`] frames; the monitor sends [`STDOUT`] and
//! [`STDERR`] data as the container writes it (a terminal's output is all [`STDOUT`]) and, once
//! the container's exit is recorded, one [`EXIT`] frame with the exit code.
//!
//! The socket's path may be longer than a unix socket address holds (108 bytes) under a deep
//! store root, so it is reached through the folder's descriptor: `/proc/self/fd/N/attach.sock`.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use strata_store::Store;

use crate::container::Container;
use crate::error::{Error, ErrorKind, Result};

/// Client → monitor: the opening frame; payload: flags (bit 0: the client sends input), then
/// rows and columns (big-endian u16, 0 when the client has no terminal).
pub const HELLO: u8 = 0x10;
/// Client → monitor: input for the container.
pub const STDIN: u8 = 0;
/// Monitor → client: the container's standard output (and a terminal's output).
pub const STDOUT: u8 = 1;
/// Monitor → client: the container's standard error.
pub const STDERR: u8 = 2;
/// Monitor → client: the container exited; payload: its exit code (big-endian i32).
pub const EXIT: u8 = 3;
/// Client → monitor: the client's input ended.
pub const CLOSE_STDIN: u8 = 4;
/// Client → monitor: the client's terminal size changed; payload: rows, columns (u16 each).
pub const RESIZE: u8 = 5;
/// Client → monitor: send this signal (big-endian i32) to the container (`--sig-proxy`).
pub const SIGNAL: u8 = 6;

/// The socket's name in the container's folder.
pub const SOCKET: &str = "attach.sock";

/// The largest payload accepted in a frame.
const MAX_FRAME: usize = 1 << 20;

/// Writes one frame.
pub fn write_frame(w: &mut impl Write, kind: u8, payload: &[u8]) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(8 + payload.len());
    buf.extend_from_slice(&[kind, 0, 0, 0]);
    buf.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    buf.extend_from_slice(payload);
    w.write_all(&buf)
}

/// Reads one frame; `None` at the end of the stream.
pub fn read_frame(r: &mut impl Read) -> std::io::Result<Option<(u8, Vec<u8>)>> {
    let mut h = [0u8; 8];
    match r.read_exact(&mut h) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes([h[4], h[5], h[6], h[7]]) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("an attach frame of {len} bytes")));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    Ok(Some((h[0], payload)))
}

/// The payload of a [`RESIZE`] frame (and the size part of [`HELLO`]).
pub fn size_payload(rows: u16, cols: u16) -> [u8; 4] {
    let (r, c) = (rows.to_be_bytes(), cols.to_be_bytes());
    [r[0], r[1], c[0], c[1]]
}

/// Rows and columns from a size payload.
pub fn parse_size(p: &[u8]) -> Option<(u16, u16)> {
    (p.len() >= 4).then(|| (u16::from_be_bytes([p[0], p[1]]), u16::from_be_bytes([p[2], p[3]])))
}

/// `dir/name` reached through the descriptor `dir` (open while the path is used), so that its
/// length never exceeds a socket address.
pub fn via_fd(dir: &std::fs::File, name: &str) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}/{name}", dir.as_raw_fd()))
}

/// Opens `dir` to reach sockets in it with [`via_fd`].
pub fn open_dir(dir: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)
        .map_err(|e| Error::io("open", dir, e))
}

/// Connects to running container `c`'s monitor and says hello: `stdin` when this client sends
/// input, `size` its terminal's (rows, columns).
pub fn connect(store: &Store, c: &Container, stdin: bool, size: Option<(u16, u16)>) -> Result<UnixStream> {
    let dir = c.dir(store);
    let f = open_dir(&dir)?;
    let mut s = UnixStream::connect(via_fd(&f, SOCKET)).map_err(|e| {
        Error::new(
            ErrorKind::InvalidState,
            format!("cannot attach to container {}: its monitor does not answer", c.name),
        )
        .with_source(e)
    })?;
    let (rows, cols) = size.unwrap_or((0, 0));
    let mut hello = vec![u8::from(stdin)];
    hello.extend_from_slice(&size_payload(rows, cols));
    write_frame(&mut s, HELLO, &hello).map_err(|e| Error::io("write to", &dir.join(SOCKET), e))?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_bound_their_size() {
        let mut buf = Vec::new();
        write_frame(&mut buf, STDOUT, b"hello").unwrap();
        write_frame(&mut buf, RESIZE, &size_payload(24, 80)).unwrap();
        write_frame(&mut buf, EXIT, &3i32.to_be_bytes()).unwrap();
        assert_eq!(&buf[..8], &[1, 0, 0, 0, 0, 0, 0, 5]);
        let mut r = &buf[..];
        assert_eq!(read_frame(&mut r).unwrap(), Some((STDOUT, b"hello".to_vec())));
        let (k, p) = read_frame(&mut r).unwrap().unwrap();
        assert_eq!((k, parse_size(&p)), (RESIZE, Some((24, 80))));
        assert_eq!(read_frame(&mut r).unwrap(), Some((EXIT, 3i32.to_be_bytes().to_vec())));
        assert_eq!(read_frame(&mut r).unwrap(), None);
        // A truncated payload is an error, not a short frame.
        let mut cut = &buf[..10];
        assert!(read_frame(&mut cut).is_err());
        // An absurd length is refused before allocating.
        let huge = [1u8, 0, 0, 0, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(read_frame(&mut &huge[..]).unwrap_err().kind(), std::io::ErrorKind::InvalidData);
        assert_eq!(parse_size(&[0, 1]), None);
    }
}
