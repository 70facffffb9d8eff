//! Progress events. The library reports, the CLI renders: a bar on a terminal, periodic lines
//! otherwise, JSON lines for machines.

use std::time::Duration;

use strata_store::Digest;

/// Where a layer stands in a pull or push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerStatus {
    /// Already in the store (pull) or on the registry (push).
    Exists,
    /// Waiting for a transfer slot.
    Waiting,
    /// Transferring; `from` bytes were kept from an interrupted attempt.
    Transferring {
        /// Bytes resumed from.
        from: u64,
    },
    /// Mounted from another repository of the same registry (push).
    Mounted {
        /// The source repository.
        from: String,
    },
    /// All bytes arrived and the digest matched.
    Verified,
    /// Stored and unpacked (pull) or pushed (push).
    Complete,
}

/// A progress event.
#[derive(Debug, Clone)]
pub enum Event {
    /// The reference resolved to this manifest or index digest.
    Resolved {
        /// The digest.
        digest: Digest,
    },
    /// The registry's rate limit (`RateLimit-Remaining`, Docker Hub).
    RateLimit {
        /// As sent, e.g. `76;w=21600`.
        remaining: String,
    },
    /// A layer's status changed.
    Layer {
        /// The layer blob.
        digest: Digest,
        /// Its size.
        size: u64,
        /// Its new status.
        status: LayerStatus,
    },
    /// Bytes of a layer transferred so far (cumulative, including resumed bytes).
    Bytes {
        /// The layer blob.
        digest: Digest,
        /// Bytes so far.
        done: u64,
    },
    /// A transfer failed temporarily and will be retried.
    Retry {
        /// What is retried (a blob digest or URL path).
        what: String,
        /// Attempt number that failed.
        attempt: u32,
        /// The wait before the next attempt.
        wait: Duration,
        /// Why.
        reason: String,
    },
}

/// The progress callback type.
pub type Progress<'a> = &'a (dyn Fn(Event) + Sync);
