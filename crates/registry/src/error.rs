//! The registry crate's one error type.

use std::fmt;

/// What went wrong.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Malformed input (a registry name, a config file).
    InvalidArgument,
    /// A credential helper failed or is missing.
    CredentialHelper,
    /// A file could not be read or written.
    Io,
    /// The registry has no such repository, tag, manifest or blob.
    NotFound,
    /// The registry wants (other) credentials.
    Unauthorized,
    /// The credentials are valid but do not allow this.
    Denied,
    /// The registry is rate limiting us.
    TooManyRequests,
    /// The registry could not be reached (DNS, connection, TLS, timeouts).
    Unreachable,
    /// Content does not match its digest or size.
    DigestMismatch,
    /// A manifest or media type this client does not handle.
    Unsupported,
    /// The registry answered something the distribution spec does not allow.
    Protocol,
    /// The local store failed.
    Store,
}

/// An error of the registry crate. Messages never contain a secret.
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
}

impl From<strata_store::Error> for Error {
    fn from(e: strata_store::Error) -> Self {
        let kind = match e.kind() {
            strata_store::ErrorKind::DigestMismatch | strata_store::ErrorKind::SizeMismatch => {
                ErrorKind::DigestMismatch
            }
            strata_store::ErrorKind::NotFound => ErrorKind::NotFound,
            strata_store::ErrorKind::InvalidArgument => ErrorKind::InvalidArgument,
            strata_store::ErrorKind::UnsupportedMediaType => ErrorKind::Unsupported,
            _ => ErrorKind::Store,
        };
        Error::new(kind, e.to_string())
    }
}

impl Error {
    /// Prefixes the message with what was being done.
    pub fn context(mut self, what: impl std::fmt::Display) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }
    /// The message without the cause.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
