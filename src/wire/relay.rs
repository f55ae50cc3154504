//! The node's calls to its peers: [`ThriftTransport`] carries each
//! [`Request`] as its Thrift method over pooled async connections
//! ([`AsyncPool`]).
//!
//! Forwarding a request must not block a tokio worker (that stalls every other
//! connection on it, or costs a thread hand-off per request). The generated
//! client is synchronous, so it is used only as a codec, over memory:
//! [`encode`] lets it write a call into a buffer (its attempt to read the reply
//! fails at once and is ignored), the bytes travel over an async socket, the
//! reply is read whole with `frame::scan`, and [`decode`] lets a fresh client
//! read it. Both clients are fresh, so both number their call 1, and the
//! reply's sequence number matches. The arguments given to `decode` are never
//! sent anywhere; pass empty ones.

use std::cell::RefCell;
use std::io::{self, Write};
use std::rc::Rc;
use std::time::Duration;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use thrift::protocol::{TBinaryInputProtocol, TBinaryOutputProtocol};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::conn::{call_error, protocol_config};
use super::convert;
use super::frame::{self, Limits};
use super::idl::diststore::{PeerSyncClient, TPeerSyncClient};
use crate::addr::NodeAddr;
use crate::auth::{Caller, Role, Secret};
use crate::error::{Error, Result};
use crate::peer::{Reply, Request};
use crate::tls::{Stream, Tls, server_name};
use crate::transport::{BoxFuture, Transport};

/// A write-side transport whose bytes the caller can take afterwards.
#[derive(Clone, Default)]
struct Captured(Rc<RefCell<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The bytes of one call, as `call` makes it on a generated client.
fn encode(call: impl FnOnce(&mut dyn TPeerSyncClient) -> thrift::Result<()>) -> Vec<u8> {
    let out = Captured::default();
    let mut client = PeerSyncClient::new(
        TBinaryInputProtocol::new(io::empty(), true),
        TBinaryOutputProtocol::new(out.clone(), true),
    );
    // The call fails when it tries to read a reply from `io::empty()`: by then
    // the request is written, which is all we want from it.
    let _ = call(&mut client);
    drop(client);
    out.0.take()
}

/// Decodes a reply to the single call `call` makes (with any arguments).
fn decode<R>(
    reply: &[u8],
    limits: &Limits,
    call: impl FnOnce(&mut dyn TPeerSyncClient) -> thrift::Result<R>,
) -> thrift::Result<R> {
    let mut client = PeerSyncClient::new(
        TBinaryInputProtocol::with_config(reply, true, protocol_config(limits)),
        TBinaryOutputProtocol::new(io::sink(), true),
    );
    call(&mut client)
}

/// Idle connections kept per peer; more are closed after use.
const MAX_IDLE_PER_PEER: usize = 64;

/// Idle connections of type `C` per peer, and the fault-injection switch that
/// cuts a node off from its peers.
pub struct Idle<C> {
    conns: Mutex<HashMap<NodeAddr, Vec<C>>>,
    /// While set, every call fails as if the peer were cut off.
    isolated: AtomicBool,
}

impl<C> Default for Idle<C> {
    fn default() -> Self {
        Idle {
            conns: Mutex::new(HashMap::new()),
            isolated: AtomicBool::new(false),
        }
    }
}

impl<C> Idle<C> {
    /// An idle connection to `peer`, or `Ok(None)`; an error while isolated.
    pub fn take(&self, peer: &NodeAddr) -> Result<Option<C>> {
        if self.isolated.load(Ordering::Relaxed) {
            return Err(Error::Unreachable {
                peer: peer.to_string(),
                reason: "this node is isolated (fault injection)".into(),
                refused: false,
            });
        }
        Ok(self.conns.lock().get_mut(peer).and_then(Vec::pop))
    }

    /// Keeps `conn` for the next call to `peer`, unless enough are idle.
    pub fn give_back(&self, peer: &NodeAddr, conn: C) {
        let mut conns = self.conns.lock();
        let idle = conns.entry(peer.clone()).or_default();
        if idle.len() < MAX_IDLE_PER_PEER {
            idle.push(conn);
        }
    }

    /// Cuts the node off from every peer (fault injection), or restores it.
    pub fn set_isolated(&self, on: bool) {
        self.isolated.store(on, Ordering::Relaxed);
        if on {
            self.conns.lock().clear();
        }
    }

    /// Closes every idle connection to `peer` (it left or died).
    pub fn forget(&self, peer: &NodeAddr) {
        self.conns.lock().remove(peer);
    }
}

/// Idle async connections to peers, and the timeouts for calls on them.
pub struct AsyncPool {
    idle: Idle<Stream>,
    connect_timeout: Duration,
    limits: Limits,
    /// The cluster secret, proved on every new connection when set.
    secret: Option<Secret>,
    /// TLS for every connection to a peer, when set: the node's own
    /// certificate as the client's, the peer's checked against the CA and
    /// its host.
    tls: Option<Tls>,
}

impl AsyncPool {
    /// An empty pool; its connections prove `secret` (the cluster secret)
    /// when given.
    pub fn new(connect_timeout: Duration, limits: Limits, secret: Option<Secret>) -> Self {
        AsyncPool {
            idle: Idle::default(),
            connect_timeout,
            limits,
            secret,
            tls: None,
        }
    }

    /// The same pool, its connections over TLS with `tls`.
    pub fn with_tls(mut self, tls: Option<Tls>) -> Self {
        self.tls = tls;
        self
    }

    /// The pool's idle connections and fault-injection switch.
    pub fn idle(&self) -> &Idle<Stream> {
        &self.idle
    }

    async fn connect(&self, peer: &NodeAddr, timeout: Duration) -> Result<Stream> {
        let unreachable = |reason: String, refused: bool| Error::Unreachable {
            peer: peer.to_string(),
            reason,
            refused,
        };
        let mut last = unreachable("no address".into(), false);
        for addr in peer.resolve()? {
            match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    stream.set_nodelay(true)?;
                    let mut stream = match &self.tls {
                        None => Stream::Plain(stream),
                        Some(tls) => {
                            let name = server_name(&peer.host)?;
                            match tokio::time::timeout(
                                timeout,
                                tls.connector().connect(name, stream),
                            )
                            .await
                            {
                                Ok(Ok(stream)) => Stream::Tls(Box::new(stream.into())),
                                Ok(Err(e)) => {
                                    last = unreachable(format!("TLS: {e}"), false);
                                    continue;
                                }
                                Err(_) => {
                                    last = unreachable("TLS handshake timed out".into(), false);
                                    continue;
                                }
                            }
                        }
                    };
                    if let Some(secret) = &self.secret {
                        tokio::time::timeout(timeout, self.prove(&mut stream, peer, secret))
                            .await
                            .map_err(|_| Error::NoAnswer {
                                peer: peer.to_string(),
                                after: timeout,
                            })??;
                    }
                    return Ok(stream);
                }
                Ok(Err(e)) => {
                    let refused = e.kind() == io::ErrorKind::ConnectionRefused;
                    last = unreachable(e.to_string(), refused);
                }
                Err(_) => last = unreachable("connect timed out".into(), false),
            }
        }
        Err(last)
    }

    /// Proves the cluster secret on a new connection to `peer`, and checks
    /// that `peer` proves it back (an impostor member learns nothing).
    async fn prove(&self, stream: &mut Stream, peer: &NodeAddr, secret: &Secret) -> Result<()> {
        let rpc = |e: io::Error| Error::Rpc {
            peer: peer.to_string(),
            reason: e.to_string(),
        };
        let caller = Caller::new(Role::Cluster);
        let nonce = caller.nonce().to_vec();
        let request = encode(|c| c.hello(nonce).map(drop));
        let reply = self.exchange(stream, &request).await.map_err(rpc)?;
        let node = decode(&reply, &self.limits, |c| c.hello(Vec::new()))
            .map_err(|e| call_error(peer, e))?;
        let proof = caller.proof(secret, &node);
        let request = encode(|c| c.authenticate(Role::Cluster.name().into(), proof).map(drop));
        let reply = self.exchange(stream, &request).await.map_err(rpc)?;
        let answer = decode(&reply, &self.limits, |c| {
            c.authenticate(String::new(), Vec::new())
        })
        .map_err(|e| call_error(peer, e))?;
        caller.check(secret, &node, &answer, &peer.to_string())
    }

    /// Sends `request` to `peer` and returns the whole reply message.
    async fn exchange(&self, stream: &mut Stream, request: &[u8]) -> io::Result<Vec<u8>> {
        stream.write_all(request).await?;
        // TLS may hold the request in its buffer (plain TCP: a no-op).
        stream.flush().await?;
        let mut reply = Vec::with_capacity(256);
        // Resumed after each read: a peer trickling a large reply costs
        // linear time, not quadratic.
        let mut scanner = frame::Scanner::new();
        loop {
            if !reply.is_empty() {
                match scanner.scan(&reply, &self.limits) {
                    Ok(Some(frame)) if frame.len == reply.len() => return Ok(reply),
                    Ok(Some(_)) => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "a peer sent more than one reply",
                        ));
                    }
                    Ok(None) => {}
                    Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
                }
            }
            reply.reserve(reply.len().max(4096));
            if stream.read_buf(&mut reply).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Makes one call on `peer`: `request` from [`encode`], the reply read with
    /// `decode_with` (see [`decode`]) within `rpc_timeout`; connecting takes
    /// at most the shorter of it and the pool's connect timeout. A pooled
    /// connection that turns out dead is replaced by a fresh one once; every
    /// call a node makes to a peer is safe to repeat.
    async fn call_within<R>(
        &self,
        peer: &NodeAddr,
        request: &[u8],
        rpc_timeout: Duration,
        decode_with: impl Fn(&mut dyn TPeerSyncClient) -> thrift::Result<R>,
    ) -> Result<R> {
        let connect_timeout = self.connect_timeout.min(rpc_timeout);
        let (mut stream, mut fresh) = match self.idle.take(peer)? {
            Some(stream) => (stream, false),
            None => (self.connect(peer, connect_timeout).await?, true),
        };
        loop {
            let reply =
                tokio::time::timeout(rpc_timeout, self.exchange(&mut stream, request)).await;
            let reply = match reply {
                Ok(Ok(reply)) => reply,
                Ok(Err(e)) if !fresh => {
                    log::debug!("pooled async connection to {peer} failed ({e}); reconnecting");
                    stream = self.connect(peer, connect_timeout).await?;
                    fresh = true;
                    continue;
                }
                Ok(Err(e)) => {
                    return Err(Error::Rpc {
                        peer: peer.to_string(),
                        reason: e.to_string(),
                    });
                }
                Err(_) => {
                    return Err(Error::Rpc {
                        peer: peer.to_string(),
                        reason: format!("no reply within {rpc_timeout:?}"),
                    });
                }
            };
            let result = decode(&reply, &self.limits, &decode_with);
            self.idle.give_back(peer, stream);
            return result.map_err(|e| call_error(peer, e));
        }
    }
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
                    let bytes = encode(|c| c.enter(convert::member(&state)).map(drop));
                    let table = pool
                        .call_within(peer, &bytes, timeout, |c| c.enter(convert::member(&state)))
                        .await?;
                    Ok(Reply::Members(
                        table.iter().filter_map(convert::member_state).collect(),
                    ))
                }
                Request::Gossip(rows) => {
                    let wire: Vec<_> = rows.iter().map(convert::member).collect();
                    let bytes = encode(|c| c.gossip(wire).map(drop));
                    let table = pool
                        .call_within(peer, &bytes, timeout, |c| c.gossip(Vec::new()))
                        .await?;
                    Ok(Reply::Members(
                        table.iter().filter_map(convert::member_state).collect(),
                    ))
                }
                Request::Probe(target) => {
                    let bytes = encode(|c| c.probe(convert::location(&target)).map(drop));
                    let answered = pool
                        .call_within(peer, &bytes, timeout, |c| c.probe(convert::no_location()))
                        .await?;
                    Ok(Reply::Probed(answered))
                }
                Request::Read { key, hops } => {
                    let bytes = encode(|c| c.relay_fetch(key, hops).map(drop));
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
                        Some(value) => {
                            encode(|c| c.relay_store(key, value, hops, expires, stamp, origin))
                        }
                        None => encode(|c| c.relay_erase(key, hops, expires, stamp, origin)),
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
                Request::Conditional {
                    key,
                    value,
                    options,
                    append,
                    hops,
                } => {
                    let options = convert::write_options_out(&options);
                    let bytes = encode(|c| {
                        c.relay_write_with(key, value, options, append, hops)
                            .map(drop)
                    });
                    let size = pool
                        .call_within(peer, &bytes, timeout, |c| {
                            c.relay_write_with(Vec::new(), Vec::new(), Default::default(), false, 0)
                        })
                        .await?;
                    Ok(Reply::Size(size.max(0) as u64))
                }
                Request::Lease { key, op, hops } => {
                    let (op, ttl_ms, token) = convert::lease_op_out(op);
                    let bytes = encode(|c| c.relay_lease(key, op, ttl_ms, token, hops).map(drop));
                    let lease = pool
                        .call_within(peer, &bytes, timeout, |c| {
                            c.relay_lease(Vec::new(), op, 0, 0, 0)
                        })
                        .await?;
                    Ok(Reply::Lease(convert::lease_in(lease)))
                }
                Request::Heartbeat { ring, caller } => {
                    let bytes = encode(|c| {
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
                    let bytes = encode(|c| c.replica_read(key, ring as i64).map(drop));
                    let replica = pool
                        .call_within(peer, &bytes, timeout, |c| c.replica_read(Vec::new(), 0))
                        .await?;
                    Ok(convert::replica_reply(replica))
                }
                Request::Replicate { entries, ring } => {
                    let bytes = encode(|c| c.replicate(convert::entries_out(entries), ring as i64));
                    pool.call_within(peer, &bytes, timeout, |c| c.replicate(Vec::new(), 0))
                        .await?;
                    Ok(Reply::Done)
                }
                Request::DiffBuckets { caller, digests } => {
                    let bytes = encode(|c| {
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
                    let bytes = encode(|c| {
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
                    let bytes = encode(|c| c.absorb(convert::entries_out(entries)));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::idl::diststore::Lookup;

    #[test]
    fn an_encoded_call_is_one_whole_message() {
        let bytes = encode(|c| c.relay_fetch(b"key".to_vec(), 1).map(|_| ()));
        let frame = frame::scan(&bytes, &Limits::default()).unwrap().unwrap();
        assert_eq!(frame.name, "relay_fetch");
        assert_eq!(frame.len, bytes.len());
    }

    #[test]
    fn a_reply_decodes_through_a_fresh_client() {
        // Build the reply a server would send to call 1 of relay_fetch.
        use thrift::protocol::{TMessageIdentifier, TMessageType, TOutputProtocol};
        let mut reply = Vec::new();
        {
            let mut out = TBinaryOutputProtocol::new(&mut reply, true);
            out.write_message_begin(&TMessageIdentifier::new(
                "relay_fetch",
                TMessageType::Reply,
                1,
            ))
            .unwrap();
            out.write_struct_begin(&thrift::protocol::TStructIdentifier::new("r"))
                .unwrap();
            out.write_field_begin(&thrift::protocol::TFieldIdentifier::new(
                "success",
                thrift::protocol::TType::Struct,
                0,
            ))
            .unwrap();
            thrift::protocol::TSerializable::write_to_out_protocol(
                &Lookup::new(Some(b"v".to_vec()), None, None),
                &mut out,
            )
            .unwrap();
            out.write_field_end().unwrap();
            out.write_field_stop().unwrap();
            out.write_struct_end().unwrap();
            out.write_message_end().unwrap();
        }
        let got = decode(&reply, &Limits::default(), |c| c.relay_fetch(Vec::new(), 0)).unwrap();
        assert_eq!(got.value, Some(b"v".to_vec()));
    }
}
