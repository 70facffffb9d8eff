//! End-to-end tests of the `strata` binary. One test binary (see crates/cli/Cargo.toml); the
//! harness is in util.rs.

mod util;

mod attach;
mod compare;
mod interop;
mod registry;
mod registry_copy;
mod registry_push;
mod regserver;
mod run;
mod store;
