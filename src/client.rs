//! Outbound calls: a Thrift client over one TCP connection, and a pool of idle
//! connections per peer for node-to-node traffic.
//!
//! The generated client reads replies through `ReplyReader`, which first reads a
//! whole message and checks it with `frame::scan`, so a hostile or broken peer can
//! neither make us allocate from a forged length nor leave us half-way through a
//! message.

use std::collections::HashMap;
use std::io::{self, BufWriter, Read};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use thrift::TConfiguration;
use thrift::protocol::{TBinaryInputProtocol, TBinaryOutputProtocol};

use crate::addr::NodeAddr;
use crate::error::{Error, Result};
use crate::frame::{self, Limits};
use crate::idl::diststore::{StoreError, StoreSyncClient};

/// A client of one node's Store service (which includes Locator and Base).
pub type Client =
    StoreSyncClient<TBinaryInputProtocol<ReplyReader>, TBinaryOutputProtocol<BufWriter<TcpStream>>>;

/// How outbound connections behave.
#[derive(Clone, Copy, Debug)]
pub struct ClientOptions {
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Reply timeout.
    pub rpc_timeout: Duration,
    /// Limits on one reply.
    pub limits: Limits,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(2),
            rpc_timeout: Duration::from_secs(30),
            limits: Limits::default(),
        }
    }
}

/// Reads one whole, checked message at a time from a socket.
#[derive(Debug)]
pub struct ReplyReader {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Next byte of the current message to hand out.
    pos: usize,
    /// End of the current message in `buf`.
    end: usize,
    limits: Limits,
}

impl ReplyReader {
    fn new(stream: TcpStream, limits: Limits) -> Self {
        ReplyReader {
            stream,
            buf: Vec::new(),
            pos: 0,
            end: 0,
            limits,
        }
    }

    fn next_message(&mut self) -> io::Result<()> {
        self.buf.drain(..self.end);
        self.pos = 0;
        self.end = 0;
        loop {
            if !self.buf.is_empty() {
                match frame::scan(&self.buf, &self.limits) {
                    Ok(Some(frame)) => {
                        self.end = frame.len;
                        return Ok(());
                    }
                    Ok(None) => {}
                    Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
                }
            }
            // Grow geometrically so that re-scanning from the start stays linear.
            let filled = self.buf.len();
            let chunk = filled.max(64 * 1024);
            self.buf.resize(filled + chunk, 0);
            let n = match self.stream.read(&mut self.buf[filled..]) {
                Ok(n) => n,
                Err(e) => {
                    self.buf.truncate(filled);
                    return Err(e);
                }
            };
            self.buf.truncate(filled + n);
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }
}

impl Read for ReplyReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.end {
            self.next_message()?;
        }
        let n = out.len().min(self.end - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Protocol settings matching `limits`, so decoding also refuses what the frame
/// scanner would.
pub fn protocol_config(limits: &Limits) -> TConfiguration {
    TConfiguration::builder()
        .max_message_size(Some(limits.max_message))
        .max_frame_size(Some(limits.max_message))
        .max_string_size(Some(limits.max_message))
        .max_container_size(Some(limits.max_container))
        .max_recursion_depth(Some(limits.max_depth))
        .build()
        .expect("limits are positive")
}

/// Opens a connection to `peer`, trying each address its host resolves to.
pub fn connect(peer: &NodeAddr, options: &ClientOptions) -> Result<Client> {
    let mut last_error = None;
    for addr in peer.resolve()? {
        match TcpStream::connect_timeout(&addr, options.connect_timeout) {
            Ok(stream) => return client_over(stream, options),
            Err(e) => last_error = Some(e),
        }
    }
    Err(Error::Unreachable {
        peer: peer.to_string(),
        refused: last_error
            .as_ref()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused),
        reason: last_error.map_or_else(|| "no address".into(), |e| e.to_string()),
    })
}

fn client_over(stream: TcpStream, options: &ClientOptions) -> Result<Client> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(options.rpc_timeout))?;
    stream.set_write_timeout(Some(options.rpc_timeout))?;
    let reader = ReplyReader::new(stream.try_clone()?, options.limits);
    let writer = BufWriter::with_capacity(64 * 1024, stream);
    let input = TBinaryInputProtocol::with_config(reader, true, protocol_config(&options.limits));
    let output = TBinaryOutputProtocol::new(writer, true);
    Ok(StoreSyncClient::new(input, output))
}

/// Turns a Thrift error from a call to `peer` into ours. `StoreError`s raised by
/// the peer become `Refused`; everything else is a failed call.
pub fn call_error(peer: &NodeAddr, error: thrift::Error) -> Error {
    match error {
        thrift::Error::User(user) => match user.downcast::<StoreError>() {
            Ok(store) => Error::Refused {
                peer: peer.to_string(),
                message: store.message.unwrap_or_default(),
            },
            Err(other) => Error::Rpc {
                peer: peer.to_string(),
                reason: other.to_string(),
            },
        },
        thrift::Error::Application(app) => Error::Refused {
            peer: peer.to_string(),
            message: app.message,
        },
        other => Error::Rpc {
            peer: peer.to_string(),
            reason: other.to_string(),
        },
    }
}

/// Whether the connection that produced `error` is unusable afterwards.
fn breaks_connection(error: &thrift::Error) -> bool {
    matches!(
        error,
        thrift::Error::Transport(_) | thrift::Error::Protocol(_)
    )
}

/// Idle connections kept per peer; more are closed after use.
const MAX_IDLE_PER_PEER: usize = 64;

/// Idle connections of type `C` per peer, and the fault-injection switch that
/// cuts a node off from its peers. Shared by the blocking [`Pool`] and the
/// async `relay::AsyncPool`.
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

/// Idle connections to peers, reused across calls.
#[derive(Default)]
pub struct Pool {
    idle: Idle<Client>,
    options: ClientOptions,
}

impl Pool {
    /// An empty pool.
    pub fn new(options: ClientOptions) -> Self {
        Pool {
            idle: Idle::default(),
            options,
        }
    }

    /// The pool's idle connections and fault-injection switch.
    pub fn idle(&self) -> &Idle<Client> {
        &self.idle
    }

    /// Runs `call` on a connection to `peer`. A pooled connection that turns out
    /// dead (the peer restarted or closed it) is replaced by a fresh one and the
    /// call is made once more; every call we make between nodes is safe to repeat.
    pub fn call<R>(
        &self,
        peer: &NodeAddr,
        mut call: impl FnMut(&mut Client) -> thrift::Result<R>,
    ) -> Result<R> {
        if let Some(mut client) = self.idle.take(peer)? {
            match call(&mut client) {
                Ok(reply) => {
                    self.idle.give_back(peer, client);
                    return Ok(reply);
                }
                Err(e) if breaks_connection(&e) => {
                    log::debug!("pooled connection to {peer} failed ({e}); reconnecting");
                }
                Err(e) => {
                    self.idle.give_back(peer, client);
                    return Err(call_error(peer, e));
                }
            }
        }
        let mut client = connect(peer, &self.options)?;
        match call(&mut client) {
            Ok(reply) => {
                self.idle.give_back(peer, client);
                Ok(reply)
            }
            Err(e) => {
                if !breaks_connection(&e) {
                    self.idle.give_back(peer, client);
                }
                Err(call_error(peer, e))
            }
        }
    }
}
