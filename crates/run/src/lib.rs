//! `strata-run`: containers from the store's images, behind a runtime trait with a built-in Linux
//! runtime and an external OCI runtime (`runc`/`crun`). The CLI depends on this crate through its
//! default `runtime` feature; built without it, `strata` is the image and registry toolkit alone.
#![deny(missing_docs)]

pub use strata_store::Store;
