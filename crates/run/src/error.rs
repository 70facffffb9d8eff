//! The run crate's one error type.

use std::fmt;

/// What went wrong.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Malformed input: a flag value, a mount, a user.
    InvalidArgument,
    /// No such container, image, user or runtime.
    NotFound,
    /// A name is taken.
    AlreadyExists,
    /// The container is in the wrong state for this (running when it must be stopped, …).
    InvalidState,
    /// The OCI runtime or a system call failed.
    Runtime,
    /// The container's command does not exist (docker's exit 127).
    CommandNotFound,
    /// The container's command cannot be executed (docker's exit 126).
    NotExecutable,
    /// The store failed.
    Store,
    /// A file could not be read or written.
    Io,
}

/// An error of the run crate.
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
        if let Some(s) = &self.source {
            write!(f, ": {s}")?;
        }
        Ok(())
    }
}

impl Error {
    /// A new error.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error { kind, message: message.into(), source: None }
    }
    /// Adds the cause.
    pub fn with_source(mut self, e: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(e));
        self
    }
    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
    /// An invalid-argument error.
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidArgument, message)
    }
    /// An I/O error about `path`.
    pub fn io(what: &str, path: &std::path::Path, e: std::io::Error) -> Self {
        Error::new(ErrorKind::Io, format!("cannot {what} {}", path.display())).with_source(e)
    }
}

impl From<strata_store::Error> for Error {
    fn from(e: strata_store::Error) -> Self {
        let kind = match e.kind() {
            strata_store::ErrorKind::NotFound => ErrorKind::NotFound,
            strata_store::ErrorKind::InvalidArgument => ErrorKind::InvalidArgument,
            _ => ErrorKind::Store,
        };
        Error::new(kind, e.to_string())
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
