//! What the load loop of [`crate::cells`] asks of a client engine: a prebuilt
//! request whose key is swapped in place, and a connection that sends bytes
//! and hands back its replies one at a time, in order, each checked against
//! the request it answers. [`crate::wire`] speaks Thrift to our nodes,
//! [`crate::resp`] speaks RESP to Redis; everything else (runtime, tasks,
//! keys drawn, pipelining, timing, statistics) is shared, so both are
//! measured the same way.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use thrifty_p2p::{Error, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::results::Op;

/// A whole request of one op, prebuilt once per connection.
pub trait Request: Send + 'static {
    /// Points the request at key number `index`; `seq` is its sequence number
    /// where the protocol carries one (Thrift does, RESP does not).
    fn set(&mut self, index: usize, seq: i32);

    /// The request as sent.
    fn bytes(&self) -> &[u8];
}

/// What the reply to one request must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expect {
    pub op: Op,
    /// Value size in bytes: a get must return exactly this many.
    pub value: usize,
    /// The key asked for.
    pub index: usize,
    /// The request's sequence number (checked where the protocol echoes it).
    pub seq: i32,
}

/// One client connection to one server.
pub trait Connection: Sized + Send + 'static {
    type Request: Request;

    /// The prebuilt request of `op`; a put stores `value`.
    fn request(op: Op, value: &[u8]) -> Self::Request;

    fn open(peer: SocketAddr) -> impl Future<Output = Result<Self>> + Send;

    /// Writes `bytes` (one or more whole requests) to the server.
    fn send(&mut self, bytes: &[u8]) -> impl Future<Output = Result<()>> + Send;

    /// Takes the oldest reply not yet taken if it is whole in the buffer,
    /// and checks it is what `expect` says: `Ok(false)` while more bytes are
    /// needed, an error for a wrong reply (a refusal, the wrong size, out of
    /// order).
    fn take_reply(&mut self, expect: &Expect) -> Result<bool>;

    /// Reads what the server has sent so far (at least one byte) into the
    /// buffer; an error when it closed the connection.
    fn read_more(&mut self) -> impl Future<Output = Result<()>> + Send;
}

/// Waits for the oldest reply of `conn` and checks it.
pub async fn reply<C: Connection>(conn: &mut C, expect: &Expect) -> Result<()> {
    while !conn.take_reply(expect)? {
        conn.read_more().await?;
    }
    Ok(())
}

/// A client socket with its reply buffer: what both engines' connections
/// are built on.
pub struct Socket {
    stream: TcpStream,
    /// Replies read and not yet taken start at `at`.
    buf: Vec<u8>,
    at: usize,
    pub peer: SocketAddr,
}

impl Socket {
    pub async fn open(peer: SocketAddr) -> Result<Socket> {
        let stream = TcpStream::connect(peer)
            .await
            .map_err(|e| Error::Unreachable {
                peer: peer.to_string(),
                reason: e.to_string(),
                refused: e.kind() == io::ErrorKind::ConnectionRefused,
            })?;
        stream.set_nodelay(true)?;
        Ok(Socket {
            stream,
            buf: Vec::with_capacity(128 << 10),
            at: 0,
            peer,
        })
    }

    pub async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        Ok(self.stream.write_all(bytes).await?)
    }

    /// What was read and not yet taken.
    pub fn unread(&self) -> &[u8] {
        &self.buf[self.at..]
    }

    /// Takes the first `len` bytes of [`Socket::unread`].
    pub fn consume(&mut self, len: usize) {
        self.at += len;
        if self.at == self.buf.len() {
            self.buf.clear();
            self.at = 0;
        }
    }

    /// Reads more, first moving the unread part of the buffer to its start
    /// (a partial reply, at most one value long). `Ok(false)` when the
    /// server closed the connection.
    pub async fn read_more(&mut self) -> Result<bool> {
        if self.at > 0 {
            self.buf.drain(..self.at);
            self.at = 0;
        }
        if self.buf.capacity() - self.buf.len() < 32 << 10 {
            self.buf.reserve(self.buf.len().max(64 << 10));
        }
        Ok(self.stream.read_buf(&mut self.buf).await? > 0)
    }
}
