//! `strata-registry`: the OCI distribution client (pull, push, tag, copy, login).
//!
//! References are parsed and normalised by the store ([`Reference`], Docker's rules) so that the
//! store can name what it holds without depending on this crate; the transport, auth flows and
//! pull/push pipelines are built on top of it here.
#![deny(missing_docs)]

pub use strata_store::Reference;
