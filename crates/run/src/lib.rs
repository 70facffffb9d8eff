//! `strata-run`: containers from the store's images, behind a runtime trait with a built-in Linux
//! runtime and an external OCI runtime (`runc`/`crun`). The CLI depends on this crate through its
//! default `runtime` feature; built without it, `strata` is the image and registry toolkit alone.
//!
//! A container's life: [`lifecycle::create`] writes its record under the store's `containers/`;
//! [`lifecycle::prepare`] mounts its root file system (an overlay of the image's snapshots and
//! the container's own upper layer, [`sys`]) and writes the OCI bundle ([`spec`]);
//! a [`runtime::Runtime`] plugin runs it; the exit is recorded and the rootfs unmounted.
#![deny(missing_docs)]

pub mod attach;
pub mod builtin;
pub mod container;
pub mod copy;
pub mod diff;
pub mod error;
pub mod lifecycle;
pub mod monitor;
pub mod runtime;
pub mod seccomp;
pub mod spec;
pub mod sys;
pub mod volume;

pub use error::{Error, ErrorKind, Result};
pub use strata_store::Store;
