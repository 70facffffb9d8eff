//! The store's one error type: a [`ErrorKind`] for callers to branch on, the subject it is about
//! (a digest, a reference, a path) and, for users, what to do next.

use std::fmt;
use std::path::PathBuf;

/// What went wrong, for callers that branch on it (the CLI maps kinds to exit codes).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A blob, image, reference or snapshot is not in the store.
    NotFound,
    /// The thing to create exists already.
    AlreadyExists,
    /// The caller passed something malformed (a reference, a digest, a size, a filter).
    InvalidArgument,
    /// Content did not hash to the digest it was announced with.
    DigestMismatch,
    /// Content had another size than announced.
    SizeMismatch,
    /// An archive, manifest, config or layer is malformed or truncated.
    InvalidContent,
    /// A media type the store does not handle.
    UnsupportedMediaType,
    /// A layer entry tried to write outside its snapshot.
    UnsafePath,
    /// The operation would remove something still in use (an image used by a container, say).
    InUse,
    /// Another process holds the store lock longer than we wait.
    Locked,
    /// The disk is full.
    NoSpace,
    /// Any other operating-system error.
    Io,
}

/// An error of the store, with its kind, its subject and the underlying cause.
#[derive(Debug, thiserror::Error)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(src) = &self.source {
            write!(f, ": {src}")?;
        }
        Ok(())
    }
}

impl Error {
    /// A new error of `kind` whose message names the subject.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error { kind, message: message.into(), source: None }
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Adds the cause.
    pub fn with_source(mut self, src: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(src));
        self
    }

    /// An I/O error about `path`, with ENOSPC told apart so the user learns the disk is full.
    pub fn io(what: impl fmt::Display, path: impl Into<PathBuf>, err: std::io::Error) -> Self {
        let path = path.into();
        let kind = match err.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => ErrorKind::NoSpace,
            _ if err.kind() == std::io::ErrorKind::NotFound => ErrorKind::NotFound,
            _ => ErrorKind::Io,
        };
        let mut message = format!("{what} {}", path.display());
        if kind == ErrorKind::NoSpace {
            message.push_str(" (the disk is full: free space, e.g. with `strata system prune`, and retry)");
        }
        Error { kind, message, source: Some(Box::new(err)) }
    }

    /// Content that is malformed: `what` names the file or blob.
    pub fn invalid_content(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidContent, message)
    }

    /// A subject that is not in the store.
    pub fn not_found(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::NotFound, message)
    }

    /// Malformed input from the caller.
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidArgument, message)
    }

    /// Prefixes the message with context (which layer, which image), keeping kind and source.
    pub fn context(mut self, ctx: impl fmt::Display) -> Self {
        self.message = format!("{ctx}: {}", self.message);
        self
    }
}

/// The store's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds a path and a verb to an `io::Result`.
pub(crate) trait IoContext<T> {
    fn at(self, what: &str, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, what: &str, path: &std::path::Path) -> Result<T> {
        self.map_err(|e| Error::io(what, path, e))
    }
}
