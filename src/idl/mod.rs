//! Code generated from `thrift/` by `scripts/gen-thrift.sh`. Never edit by hand:
//! change the IDL and run the script.
//!
//! Only `convert` and the RPC edge (`client`, `server`, `handler`) use these types;
//! the rest of the crate speaks in domain types.

#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod diststore;
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod locator;
