//! `strata-store`: the content-addressed store under every other strata crate.
//!
//! The store root is an OCI image layout that other tools read directly, plus strata's own
//! folders. Blobs are ingested as verified transactions ([`blob`]), tagged in `index.json`
//! ([`refs`]), their layers unpacked each into its own snapshot in parallel ([`snapshot`],
//! [`unpack`]) with a file index recorded on the way ([`fileindex`]); GC, disk usage and checks
//! work from those indexes ([`gc`], [`df`], [`check`]).
//!
//! ```no_run
//! use strata_store::{Store, Reference};
//! let store = Store::open("/var/lib/strata")?;
//! let img = store.resolve_image("busybox")?;
//! println!("{} has {} layers", img.id(), img.manifest.layers().len());
//! # Ok::<(), strata_store::Error>(())
//! ```
#![deny(missing_docs)]

pub mod archive;
pub mod blob;
pub mod blocks;
pub mod check;
pub mod commit;
pub mod compare;
pub mod df;
pub mod digest;
mod direct;
pub mod error;
pub mod fileindex;
pub mod fsutil;
pub mod gc;
pub mod image;
pub mod import;
pub mod packages;
pub mod pgzip;
pub mod reference;
pub mod refs;
pub mod snapshot;
pub mod store;
pub mod time;
pub mod unpack;
pub mod view;

pub use digest::Digest;
pub use error::{Error, ErrorKind, Result};
pub use image::Image;
pub use oci_spec;
pub use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType};
pub use reference::Reference;
pub use store::{Lease, Store, StoreLock};
