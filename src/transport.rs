//! How a node reaches its peers: the [`Transport`] trait, in domain types
//! ([`crate::peer`]). Between processes it is
//! [`crate::wire::relay::ThriftTransport`], one Thrift call per request.
//!
//! The node never names a socket: tests and the simulation ([`crate::sim`])
//! give it a transport that delivers in memory and can drop, delay, cut and
//! pause.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::addr::NodeAddr;
use crate::error::{Error, Result};
use crate::peer::{Reply, Request};

/// A boxed future, as the transport's calls return.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Carries requests to peers.
pub trait Transport: Send + Sync + 'static {
    /// Sends `request` to `peer` and waits at most `timeout` for its reply.
    ///
    /// Errors: [`Error::Unreachable`] when nothing was delivered (with
    /// `refused` when nothing listens there), [`Error::Rpc`] when the outcome
    /// is unknown (no reply in time, connection lost), [`Error::Remote`] (or, in
    /// the simulation, the same error as the peer's) when the peer answered
    /// with an error of its own: match on [`Error::kind`].
    fn call(
        &self,
        peer: &NodeAddr,
        request: Request,
        timeout: Duration,
    ) -> BoxFuture<Result<Reply>>;

    /// Drops idle connections to `peer` (it left or died).
    fn forget(&self, _peer: &NodeAddr) {}
}

/// A reply of the wrong kind for its request: a bug or a confused peer.
pub fn unexpected(peer: &NodeAddr, reply: &Reply) -> Error {
    Error::Rpc {
        peer: peer.to_string(),
        reason: format!("unexpected reply {reply:?}"),
    }
}
