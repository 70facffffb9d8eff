//! `strata-registry`: the OCI distribution client (pull, push, tag, copy, login).
//!
//! References are parsed and normalised by the store ([`Reference`], Docker's rules) so that the
//! store can name what it holds without depending on this crate. Credentials come from the docker
//! CLI's config file and credential helpers ([`keychain`]); the transport, auth flows and
//! pull/push pipelines build on them.
#![deny(missing_docs)]

pub mod challenge;
pub mod errcode;
pub mod error;
pub mod keychain;

pub use error::{Error, ErrorKind, Result};
pub use strata_store::Reference;
