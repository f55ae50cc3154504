//! The one Thrift boundary: the only code in the crate that names the `thrift`
//! crate or the generated [`idl`]. Everything outside speaks domain types
//! ([`crate::peer`] between nodes, bytes and [`crate::Error`] with clients).
//!
//! A request's path through it, by file:
//! - [`server`]: our accept loop; reads whole messages, each checked by a
//!   [`frame::Scanner`] within the node's limits before anything is decoded,
//!   within deadlines for a whole message and for a reply to drain, and
//!   within the node-wide [`budget`] of bytes in flight.
//! - [`codec`]: the hot requests (`store`, `fetch`, `erase`, the 2009 `get`
//!   and `put`, the `relay_*` forwards, `probe`) decoded once, by hand, into a
//!   [`codec::Call`], and their replies encoded once; unit tests check every
//!   one byte for byte against the generated code, and `tests/golden.rs`
//!   pins every method's bytes.
//! - [`handler`]: every other method, through the generated processor (one
//!   decode, one encode).
//! - [`relay`]: the node's calls to peers, async, over pooled connections
//!   ([`relay::ThriftTransport`] implements [`crate::transport::Transport`]).
//! - [`conn`]: a blocking connection to one node, with domain-typed calls,
//!   for the public [`crate::Client`] and the tools.
//! - [`convert`]: generated types to and from domain types, error kinds
//!   included.
//!
//! Why the node owns framing and the accept loop instead of the thrift
//! crate's server: that server has no connection cap, idle timeout or
//! shutdown, answers oneway calls that fail (which desynchronises the
//! caller), ignores `TConfiguration` limits in its protocol factories, and the
//! generated code pre-allocates lists from untrusted lengths.

pub(crate) mod budget;
pub mod codec;
pub mod conn;
pub mod convert;
pub mod frame;
pub(crate) mod handler;
pub mod idl;
pub mod relay;
pub mod server;

/// The `hops` of a `relay_fetch` that looks only in the receiver's own store
/// (a diagnostic: which copy does this node hold?).
pub use crate::node::PEEK;
pub use conn::Conn;
pub use frame::Limits;
