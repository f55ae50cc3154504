//! Async node-to-node calls for the request path.
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

use thrift::protocol::{TBinaryInputProtocol, TBinaryOutputProtocol};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::addr::NodeAddr;
use crate::client::{Idle, call_error, protocol_config};
use crate::error::{Error, Result};
use crate::frame::{self, Limits};
use crate::idl::diststore::{StoreSyncClient, TStoreSyncClient};

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
pub fn encode(call: impl FnOnce(&mut dyn TStoreSyncClient) -> thrift::Result<()>) -> Vec<u8> {
    let out = Captured::default();
    let mut client = StoreSyncClient::new(
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
pub fn decode<R>(
    reply: &[u8],
    limits: &Limits,
    call: impl FnOnce(&mut dyn TStoreSyncClient) -> thrift::Result<R>,
) -> thrift::Result<R> {
    let mut client = StoreSyncClient::new(
        TBinaryInputProtocol::with_config(reply, true, protocol_config(limits)),
        TBinaryOutputProtocol::new(io::sink(), true),
    );
    call(&mut client)
}

/// Idle async connections to peers, and the timeouts for calls on them.
pub struct AsyncPool {
    idle: Idle<TcpStream>,
    connect_timeout: Duration,
    rpc_timeout: Duration,
    limits: Limits,
}

impl AsyncPool {
    /// An empty pool.
    pub fn new(connect_timeout: Duration, rpc_timeout: Duration, limits: Limits) -> Self {
        AsyncPool {
            idle: Idle::default(),
            connect_timeout,
            rpc_timeout,
            limits,
        }
    }

    /// The pool's idle connections and fault-injection switch.
    pub fn idle(&self) -> &Idle<TcpStream> {
        &self.idle
    }

    async fn connect(&self, peer: &NodeAddr, timeout: Duration) -> Result<TcpStream> {
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

    /// Sends `request` to `peer` and returns the whole reply message.
    async fn exchange(&self, stream: &mut TcpStream, request: &[u8]) -> io::Result<Vec<u8>> {
        stream.write_all(request).await?;
        let mut reply = Vec::with_capacity(256);
        loop {
            if !reply.is_empty() {
                match frame::scan(&reply, &self.limits) {
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
    /// `decode_with` (see [`decode`]). A pooled connection that turns out dead
    /// is replaced by a fresh one once; every call we relay is safe to repeat.
    pub async fn call<R>(
        &self,
        peer: &NodeAddr,
        request: &[u8],
        decode_with: impl Fn(&mut dyn TStoreSyncClient) -> thrift::Result<R>,
    ) -> Result<R> {
        self.call_within(peer, request, self.rpc_timeout, decode_with)
            .await
    }

    /// [`AsyncPool::call`] with a reply timeout of its own (probes are short);
    /// connecting takes at most the shorter of it and the pool's.
    pub async fn call_within<R>(
        &self,
        peer: &NodeAddr,
        request: &[u8],
        rpc_timeout: Duration,
        decode_with: impl Fn(&mut dyn TStoreSyncClient) -> thrift::Result<R>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idl::diststore::Lookup;

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
