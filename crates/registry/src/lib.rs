//! `strata-registry`: the OCI distribution client (pull, push, tag, copy, login).
//!
//! References are parsed and normalised by the store ([`Reference`], Docker's rules) so that the
//! store can name what it holds without depending on this crate. Credentials come from the docker
//! CLI's config file and credential helpers ([`keychain`]); the [`transport`] does the auth
//! handshake and retries; [`Client`] runs pulls and pushes against a [`strata_store::Store`].
//!
//! The client is built on `reqwest` and `tokio` directly rather than on `oci-client`: a pull here
//! streams each blob into the store's verified ingest while the layer unpacks from the same
//! bytes, resumes interrupted blobs with `Range` requests from what `tmp/` kept, and a push
//! resumes its upload sessions across processes and mounts blobs across repositories — none of
//! which `oci-client`'s buffered, whole-blob API exposes.
//!
//! The public API is blocking; a [`Client`] owns a small tokio runtime that runs the transfers.
//!
//! ```no_run
//! use strata_registry::{Client, Reference, pull::PullOptions};
//! let store = strata_store::Store::open("/var/lib/strata")?;
//! let client = Client::from_docker_config(Default::default())?;
//! let r = Reference::parse("busybox")?;
//! let pulled = client.pull(&store, &r, &PullOptions::default(), &|_| {})?;
//! println!("{}", pulled.digest);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

pub mod challenge;
pub mod copy;
pub mod dockerarchive;
pub mod errcode;
pub mod error;
pub mod inspect;
pub mod keychain;
pub mod login;
pub mod manifest;
pub mod progress;
pub mod pull;
pub mod push;
pub mod transport;

pub use error::{Error, ErrorKind, Result};
pub use progress::{Event, LayerStatus};
pub use strata_store::Reference;
pub use transport::{Keychain, Options, StaticKeychain};

/// A registry client: the transport plus the runtime its transfers run on.
pub struct Client {
    rt: tokio::runtime::Runtime,
    /// The HTTP transport (auth, retries).
    pub transport: transport::Transport,
}

impl Client {
    /// A client with credentials from `keychain`.
    pub fn new(keychain: Box<dyn Keychain>, options: Options) -> Result<Client> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("strata-net")
            .enable_all()
            .build()
            .map_err(|e| Error::new(ErrorKind::Io, "cannot start the network runtime").with_source(e))?;
        // reqwest's client must be built inside a runtime context.
        let _guard = rt.enter();
        let transport = transport::Transport::new(keychain, options)?;
        drop(_guard);
        Ok(Client { rt, transport })
    }

    /// A client with credentials from the docker CLI's config (`DOCKER_CONFIG` or
    /// `~/.docker/config.json`).
    pub fn from_docker_config(options: Options) -> Result<Client> {
        let cfg = keychain::DockerConfig::load(keychain::DockerConfig::default_path())?;
        Client::new(Box::new(cfg), options)
    }

    /// Runs `f` to completion on the client's runtime.
    pub(crate) fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }
}
