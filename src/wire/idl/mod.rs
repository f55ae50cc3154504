//! Code generated from `thrift/` by `scripts/gen-thrift.sh`. Never edit by hand:
//! change the IDL and run the script.
//!
//! Public so that tests (and anyone who wants to) can speak the protocol as any
//! Thrift client would; inside the crate only [`crate::wire`] uses it.

#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod diststore;
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod locator;
