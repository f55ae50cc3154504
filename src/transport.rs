//! How a node reaches its peers: the [`Transport`] trait, in domain types
//! ([`crate::peer`]), and [`ThriftTransport`], which carries each request as
//! one Thrift call over pooled async connections ([`crate::relay`]).
//!
//! The node never names a socket: tests and the simulation ([`crate::sim`])
//! give it a transport that delivers in memory and can drop, delay, cut and
//! pause.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::addr::NodeAddr;
use crate::convert;
use crate::error::{Error, Result};
use crate::peer::{Reply, Request};
use crate::relay::{self, AsyncPool};

/// A boxed future, as the transport's calls return.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Carries requests to peers.
pub trait Transport: Send + Sync + 'static {
    /// Sends `request` to `peer` and waits at most `timeout` for its reply.
    ///
    /// Errors: [`Error::Unreachable`] when nothing was delivered (with
    /// `refused` when nothing listens there), [`Error::Rpc`] when the outcome
    /// is unknown (no reply in time, connection lost), [`Error::Refused`] when
    /// the peer answered with an error of its own.
    fn call(
        &self,
        peer: &NodeAddr,
        request: Request,
        timeout: Duration,
    ) -> BoxFuture<Result<Reply>>;

    /// Drops idle connections to `peer` (it left or died).
    fn forget(&self, _peer: &NodeAddr) {}
}

/// The transport between processes: each [`Request`] is its Thrift method,
/// encoded with the generated client, over the node's async pool.
pub struct ThriftTransport {
    pool: Arc<AsyncPool>,
}

impl ThriftTransport {
    /// A transport over `pool`.
    pub fn new(pool: Arc<AsyncPool>) -> Self {
        ThriftTransport { pool }
    }
}

impl Transport for ThriftTransport {
    fn call(
        &self,
        peer: &NodeAddr,
        request: Request,
        timeout: Duration,
    ) -> BoxFuture<Result<Reply>> {
        let pool = self.pool.clone();
        let peer = peer.clone();
        Box::pin(async move {
            let pool = &*pool;
            let peer = &peer;
            match request {
                Request::Enter(state) => {
                    let bytes = relay::encode(|c| c.enter(convert::member(&state)).map(drop));
                    let table = pool
                        .call_within(peer, &bytes, timeout, |c| c.enter(convert::member(&state)))
                        .await?;
                    Ok(Reply::Members(
                        table.iter().filter_map(convert::member_state).collect(),
                    ))
                }
                Request::Gossip(rows) => {
                    let wire: Vec<_> = rows.iter().map(convert::member).collect();
                    let bytes = relay::encode(|c| c.gossip(wire).map(drop));
                    let table = pool
                        .call_within(peer, &bytes, timeout, |c| c.gossip(Vec::new()))
                        .await?;
                    Ok(Reply::Members(
                        table.iter().filter_map(convert::member_state).collect(),
                    ))
                }
                Request::Probe(target) => {
                    let bytes = relay::encode(|c| c.probe(convert::location(&target)).map(drop));
                    let answered = pool
                        .call_within(peer, &bytes, timeout, |c| c.probe(convert::no_location()))
                        .await?;
                    Ok(Reply::Probed(answered))
                }
                Request::Read { key, hops } => {
                    let bytes = relay::encode(|c| c.relay_fetch(key, hops).map(drop));
                    let lookup = pool
                        .call_within(peer, &bytes, timeout, |c| c.relay_fetch(Vec::new(), 0))
                        .await?;
                    Ok(Reply::Found(convert::found(lookup)))
                }
                Request::Write {
                    key,
                    value,
                    hops,
                    version,
                    expires,
                } => {
                    let stamp = version.stamp as i64;
                    let origin = version.origin as i32;
                    let erase = value.is_none();
                    let bytes = match value {
                        Some(value) => relay::encode(|c| {
                            c.relay_store(key, value, hops, expires, stamp, origin)
                        }),
                        None => relay::encode(|c| c.relay_erase(key, hops, expires, stamp, origin)),
                    };
                    pool.call_within(peer, &bytes, timeout, |c| {
                        if erase {
                            c.relay_erase(Vec::new(), 0, 0, 0, 0)
                        } else {
                            c.relay_store(Vec::new(), Vec::new(), 0, 0, 0, 0)
                        }
                    })
                    .await?;
                    Ok(Reply::Done)
                }
                Request::Heartbeat { ring, caller } => {
                    let bytes = relay::encode(|c| {
                        c.heartbeat(ring as i64, convert::location(&caller))
                            .map(drop)
                    });
                    let theirs = pool
                        .call_within(peer, &bytes, timeout, |c| {
                            c.heartbeat(0, convert::no_location())
                        })
                        .await?;
                    Ok(Reply::Ring(theirs as u64))
                }
                Request::ReplicaRead { key, ring } => {
                    let bytes = relay::encode(|c| c.replica_read(key, ring as i64).map(drop));
                    let replica = pool
                        .call_within(peer, &bytes, timeout, |c| c.replica_read(Vec::new(), 0))
                        .await?;
                    Ok(convert::replica_reply(replica))
                }
                Request::Replicate { entries, ring } => {
                    let bytes =
                        relay::encode(|c| c.replicate(convert::entries_out(entries), ring as i64));
                    pool.call_within(peer, &bytes, timeout, |c| c.replicate(Vec::new(), 0))
                        .await?;
                    Ok(Reply::Done)
                }
                Request::DiffBuckets { caller, digests } => {
                    let bytes = relay::encode(|c| {
                        c.diff_buckets(convert::location(&caller), digests)
                            .map(drop)
                    });
                    let buckets = pool
                        .call_within(peer, &bytes, timeout, |c| {
                            c.diff_buckets(convert::no_location(), Vec::new())
                        })
                        .await?;
                    Ok(Reply::Buckets(buckets))
                }
                Request::Reconcile {
                    caller,
                    buckets,
                    entries,
                } => {
                    let bytes = relay::encode(|c| {
                        c.reconcile(
                            convert::location(&caller),
                            buckets,
                            convert::entries_out(entries),
                        )
                        .map(drop)
                    });
                    let entries = pool
                        .call_within(peer, &bytes, timeout, |c| {
                            c.reconcile(convert::no_location(), Vec::new(), Vec::new())
                        })
                        .await?;
                    Ok(Reply::Entries(convert::entries_in(entries)))
                }
                Request::Absorb(entries) => {
                    let bytes = relay::encode(|c| c.absorb(convert::entries_out(entries)));
                    pool.call_within(peer, &bytes, timeout, |c| c.absorb(Vec::new()))
                        .await?;
                    Ok(Reply::Done)
                }
            }
        })
    }

    fn forget(&self, peer: &NodeAddr) {
        self.pool.idle().forget(peer);
    }
}

/// A reply of the wrong kind for its request: a bug or a confused peer.
pub fn unexpected(peer: &NodeAddr, reply: &Reply) -> Error {
    Error::Rpc {
        peer: peer.to_string(),
        reason: format!("unexpected reply {reply:?}"),
    }
}
