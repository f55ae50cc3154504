//! A blocking connection to one node, with domain-typed calls: what the
//! public [`crate::Client`], the streaming of large values and the tools
//! use. The generated client is the codec (except for `store`, whose value
//! is written from a borrowed slice); it reads replies through
//! [`ReplyReader`], which first reads a whole message and checks it with
//! [`frame::scan`], so a hostile or broken peer can neither make us allocate
//! from a forged length nor leave us half-way through a message.

use std::collections::BTreeMap;
use std::io::{self, BufWriter, Read};
use std::net::TcpStream;
use std::sync::Arc;

use parking_lot::Mutex;

use thrift::TConfiguration;
use thrift::protocol::{TBinaryInputProtocol, TBinaryOutputProtocol};

use super::convert;
use super::frame::{self, Limits};
use super::idl::diststore::{Item, PeerSyncClient, TPeerSyncClient, TStoreSyncClient};
use super::idl::locator::{TBaseSyncClient, TLocatorSyncClient};
use crate::addr::NodeAddr;
use crate::auth::{Caller, Role, Secret};
use crate::client::ClientOptions;
use crate::error::{Error, ErrorKind, Result};
use crate::membership::MemberState;
use crate::peer::Entry;
use crate::ring::Ring;
use crate::store::Listed;
use crate::tls::SyncStream;
use rustls::StreamOwned;

/// The generated client of one node's Store service (which includes Locator
/// and Base), over our checked reader: for tests that speak the protocol as
/// any Thrift client would.
pub type RawClient =
    PeerSyncClient<TBinaryInputProtocol<ReplyReader>, TBinaryOutputProtocol<BufWriter<Writer>>>;

/// The one stream of a connection, which its reader and writer share: a TLS
/// stream cannot be cloned as a socket can. (A mutex, not a `RefCell`, so
/// that a client stays `Send`; it is never contended: one call at a time.)
type Shared = Arc<Mutex<SyncStream>>;

/// The writing side of a connection's [`Shared`] stream.
#[derive(Debug)]
pub struct Writer(Shared);

impl io::Write for Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.lock().flush()
    }
}

/// Reads one whole, checked message at a time from a socket.
#[derive(Debug)]
pub struct ReplyReader {
    stream: Shared,
    buf: Vec<u8>,
    /// Next byte of the current message to hand out.
    pos: usize,
    /// End of the current message in `buf`.
    end: usize,
    limits: Limits,
}

impl ReplyReader {
    fn new(stream: Shared, limits: Limits) -> Self {
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
        // Resumed after each read, so a slow large reply costs linear time.
        let mut scanner = frame::Scanner::new();
        loop {
            if !self.buf.is_empty() {
                match scanner.scan(&self.buf, &self.limits) {
                    Ok(Some(frame)) => {
                        self.end = frame.len;
                        return Ok(());
                    }
                    Ok(None) => {}
                    Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
                }
            }
            // Grow geometrically so that growing stays linear.
            let filled = self.buf.len();
            let chunk = filled.max(64 * 1024);
            self.buf.resize(filled + chunk, 0);
            let mut stream = self.stream.lock();
            let n = match stream.read(&mut self.buf[filled..]) {
                Ok(n) => n,
                Err(e) => {
                    self.buf.truncate(filled);
                    return Err(say_timeout(e, stream.socket()));
                }
            };
            drop(stream);
            self.buf.truncate(filled + n);
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }
}

/// A read that timed out (`WouldBlock` from a socket with a read timeout,
/// which the thrift crate would report as an unknown transport error with
/// the OS's text) becomes `TimedOut`, saying how long was waited.
fn say_timeout(error: io::Error, stream: &TcpStream) -> io::Error {
    if !matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    ) {
        return error;
    }
    let waited = match stream.read_timeout() {
        Ok(Some(timeout)) => format!(" within {} s", timeout.as_secs_f64()),
        _ => String::new(),
    };
    io::Error::new(io::ErrorKind::TimedOut, format!("no reply{waited}"))
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

/// Opens a raw generated client to `peer` (see [`RawClient`]), trying each
/// address its host resolves to.
pub fn connect(peer: &NodeAddr, options: &ClientOptions) -> Result<RawClient> {
    connect_socket(peer, options).map(|(client, _, _)| client)
}

/// [`connect`], also returning a handle on the socket (to change its
/// timeouts) and on the shared stream (for the TLS handshake).
fn connect_socket(
    peer: &NodeAddr,
    options: &ClientOptions,
) -> Result<(RawClient, TcpStream, Shared)> {
    let mut last_error = None;
    for addr in peer.resolve()? {
        match TcpStream::connect_timeout(&addr, options.connect_timeout) {
            Ok(stream) => {
                let socket = stream.try_clone()?;
                let (client, shared) = client_over(stream, peer, options)?;
                return Ok((client, socket, shared));
            }
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

fn client_over(
    stream: TcpStream,
    peer: &NodeAddr,
    options: &ClientOptions,
) -> Result<(RawClient, Shared)> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(options.rpc_timeout))?;
    stream.set_write_timeout(Some(options.rpc_timeout))?;
    let stream = match &options.tls {
        Some(tls) => tls.wrap(&peer.host, stream)?,
        None => SyncStream::Plain(stream),
    };
    let shared: Shared = Arc::new(Mutex::new(stream));
    let reader = ReplyReader::new(shared.clone(), options.limits);
    let writer = BufWriter::with_capacity(64 * 1024, Writer(shared.clone()));
    let input = TBinaryInputProtocol::with_config(reader, true, protocol_config(&options.limits));
    let output = TBinaryOutputProtocol::new(writer, true);
    Ok((PeerSyncClient::new(input, output), shared))
}

/// Completes the TLS handshake on a new connection (nothing for plain
/// TCP), so that a refused certificate is reported as such, not as a
/// failed call.
fn handshake(peer: &NodeAddr, shared: &Shared, timeout: std::time::Duration) -> Result<()> {
    let mut stream = shared.lock();
    let SyncStream::Tls(tls) = &mut *stream else {
        return Ok(());
    };
    let StreamOwned { conn, sock } = &mut **tls;
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(sock) {
            let reason = if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) {
                format!("no TLS handshake within {timeout:?}")
            } else {
                e.to_string()
            };
            return Err(Error::BadTls(format!(
                "TLS handshake with {peer} failed: {reason}; check the certificate, key and CA (--tls-cert, --tls-key, --tls-ca)"
            )));
        }
    }
    Ok(())
}

/// A blocking connection to one node. A call that fails leaves the
/// connection unusable only when the failure was on the connection itself
/// (see [`Conn::is_broken`]); an error the node answered with does not.
pub struct Conn {
    peer: NodeAddr,
    client: RawClient,
    broken: bool,
}

impl Conn {
    /// Connects to `peer` and checks that it answers: a `service_type` call
    /// that must be answered within `options.answer_timeout` (else
    /// [`Error::NoAnswer`]), so a port that accepts but never answers costs
    /// seconds, not the much longer `rpc_timeout` of a call that may wait on
    /// replicas. (Not `ping`: failure detection uses that, and a node cut
    /// off by fault injection drops it, but still serves its clients.)
    pub fn open(peer: &NodeAddr, options: &ClientOptions) -> Result<Conn> {
        let (client, socket, shared) = connect_socket(peer, options)?;
        let first = options.answer_timeout.min(options.rpc_timeout);
        socket.set_read_timeout(Some(first))?;
        handshake(peer, &shared, first)?;
        let mut conn = Conn {
            peer: peer.clone(),
            client,
            broken: false,
        };
        match conn.client.service_type() {
            Ok(_) => {}
            Err(e) if timed_out(&e) => {
                return Err(Error::NoAnswer {
                    peer: peer.to_string(),
                    after: first,
                });
            }
            Err(e) => return Err(call_error(peer, e)),
        }
        socket.set_read_timeout(Some(options.rpc_timeout))?;
        if let Some((role, secret)) = &options.secret {
            conn.prove(*role, secret)?;
        }
        Ok(conn)
    }

    /// Proves `role`'s secret on this connection (`hello`, then
    /// `authenticate`), and checks that the node proves it back.
    fn prove(&mut self, role: Role, secret: &Secret) -> Result<()> {
        let caller = Caller::new(role);
        let result = self.client.hello(caller.nonce().to_vec());
        let node = self.done(result)?;
        let result = self
            .client
            .authenticate(role.name().into(), caller.proof(secret, &node));
        let answer = self.done(result)?;
        caller.check(secret, &node, &answer, &self.peer.to_string())
    }

    /// The node this connection reaches.
    pub fn peer(&self) -> &NodeAddr {
        &self.peer
    }

    /// Whether a call failed on the connection itself (timeout, reset,
    /// protocol error): it may be out of step with its node; open another.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    fn done<R>(&mut self, result: thrift::Result<R>) -> Result<R> {
        result.map_err(|e| {
            self.broken |= breaks_connection(&e);
            call_error(&self.peer, e)
        })
    }

    /// `ping`: whether the node answers.
    pub fn ping(&mut self) -> Result<()> {
        let result = self.client.ping();
        self.done(result)
    }

    /// The value at `key`, if stored.
    pub fn fetch(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let result = self.client.fetch(key.to_vec());
        Ok(self.done(result)?.value)
    }

    /// Stores `value` at `key` (acknowledged once a write quorum has it).
    pub fn store(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let result = super::codec::store_borrowed(&mut self.client, key, value);
        self.done(result)
    }

    /// `fetch_many`: each key's value (`None`: not stored) or its own error,
    /// in the order given.
    pub fn fetch_many(&mut self, keys: &[&[u8]]) -> Result<Vec<Result<Option<Vec<u8>>>>> {
        let result = self
            .client
            .fetch_many(keys.iter().map(|k| k.to_vec()).collect());
        let fetched = self.done(result)?;
        if fetched.len() != keys.len() {
            return Err(self.miscounted("fetch_many", keys.len(), fetched.len()));
        }
        Ok(fetched
            .into_iter()
            .map(|f| match f.error {
                Some(error) => Err(convert::remote_error(&self.peer, error)),
                None => Ok(f.value),
            })
            .collect())
    }

    /// `store_many`: each item's outcome, in the order given.
    pub fn store_many(&mut self, items: &[(&[u8], &[u8])]) -> Result<Vec<Result<()>>> {
        let count = items.len();
        let items = items
            .iter()
            .map(|(key, value)| Item::new(key.to_vec(), value.to_vec()))
            .collect();
        let result = self.client.store_many(items);
        let outcomes = self.done(result)?;
        if outcomes.len() != count {
            return Err(self.miscounted("store_many", count, outcomes.len()));
        }
        Ok(outcomes
            .into_iter()
            .map(|o| match o.error {
                Some(error) => Err(convert::remote_error(&self.peer, error)),
                None => Ok(()),
            })
            .collect())
    }

    /// A batch answered with another number of outcomes than it asked for:
    /// the node is not keeping the protocol.
    fn miscounted(&self, method: &str, asked: usize, answered: usize) -> Error {
        Error::Rpc {
            peer: self.peer.to_string(),
            reason: format!("{method} of {asked} keys answered {answered} outcomes"),
        }
    }

    /// `store_with`: `store` with options (metadata, create-only).
    pub fn store_with(
        &mut self,
        key: &[u8],
        value: &[u8],
        options: &crate::value::WriteOptions,
    ) -> Result<()> {
        let options = convert::write_options_out(options);
        let result = self
            .client
            .store_with(key.to_vec(), value.to_vec(), options);
        self.done(result)
    }

    /// `append`: appends `suffix` at the key's owner; the value's new size.
    pub fn append(
        &mut self,
        key: &[u8],
        suffix: &[u8],
        options: &crate::value::WriteOptions,
    ) -> Result<u64> {
        let options = convert::write_options_out(options);
        let result = self.client.append(key.to_vec(), suffix.to_vec(), options);
        Ok(self.done(result)?.max(0) as u64)
    }

    /// `lock`: the lease on `key` for `ttl_ms`, or `ErrorKind::Held` at once.
    pub fn lock(&mut self, key: &[u8], ttl_ms: i64) -> Result<crate::lease::Lease> {
        let result = self.client.lock(key.to_vec(), ttl_ms);
        Ok(convert::lease_in(self.done(result)?))
    }

    /// `unlock`: gives lease `token` on `key` back.
    pub fn unlock(&mut self, key: &[u8], token: i64) -> Result<()> {
        let result = self.client.unlock(key.to_vec(), token);
        self.done(result)
    }

    /// `renew`: lease `token` on `key` now expires `ttl_ms` from now.
    pub fn renew(&mut self, key: &[u8], token: i64, ttl_ms: i64) -> Result<crate::lease::Lease> {
        let result = self.client.renew(key.to_vec(), token, ttl_ms);
        Ok(convert::lease_in(self.done(result)?))
    }

    /// `store_with` fenced with lease `token` (no other option): refused
    /// with `ErrorKind::StaleToken` unless `token` is the key's current lease.
    pub fn store_fenced(&mut self, key: &[u8], value: &[u8], token: i64) -> Result<()> {
        let options = crate::value::WriteOptions {
            fence: Some(token),
            ..Default::default()
        };
        let result = self.client.store_with(
            key.to_vec(),
            value.to_vec(),
            convert::write_options_out(&options),
        );
        self.done(result)
    }

    /// `describe`: what `key` holds (size, parts, identity, a streamed
    /// value's manifest).
    pub fn describe(&mut self, key: &[u8]) -> Result<crate::stream::ValueInfo> {
        let result = self.client.describe(key.to_vec());
        let info = self.done(result)?;
        convert::value_info_from(key, info)
    }

    /// `read_range`: up to `length` bytes of the value at `key` from
    /// `offset` on; `id` 0 reads whatever the key holds, another id fails
    /// with `ErrorKind::Changed` once the key holds another value.
    pub fn read_range(&mut self, key: &[u8], offset: u64, length: u32, id: u64) -> Result<Vec<u8>> {
        let offset = i64::try_from(offset).unwrap_or(i64::MAX);
        let length = i32::try_from(length).unwrap_or(i32::MAX);
        let result = self
            .client
            .read_range(key.to_vec(), offset, length, id as i64);
        self.done(result)
    }

    /// `begin_upload`: opens an upload in parts to `key` on this node.
    pub fn begin_upload(&mut self, key: &[u8]) -> Result<u64> {
        let result = self.client.begin_upload(key.to_vec());
        Ok(self.done(result)? as u64)
    }

    /// `upload_part`: stores part `index` of `upload`.
    pub fn upload_part(&mut self, key: &[u8], upload: u64, index: u64, data: &[u8]) -> Result<()> {
        let index = i64::try_from(index).unwrap_or(i64::MAX);
        let result = self
            .client
            .upload_part(key.to_vec(), upload as i64, index, data.to_vec());
        self.done(result)
    }

    /// `commit_upload`: makes `upload` the value at `key`, at once.
    pub fn commit_upload(&mut self, key: &[u8], upload: u64) -> Result<crate::stream::ValueInfo> {
        let result = self.client.commit_upload(key.to_vec(), upload as i64);
        let info = self.done(result)?;
        convert::value_info_from(key, info)
    }

    /// Erases `key` (a tombstone keeps older copies from coming back).
    pub fn erase(&mut self, key: &[u8]) -> Result<()> {
        let result = self.client.erase(key.to_vec());
        self.done(result)
    }

    /// The member that owns `key` in the node's view; `None` for an empty ring.
    pub fn locate(&mut self, key: &[u8]) -> Result<Option<NodeAddr>> {
        let result = self.client.locate(key.to_vec());
        Ok(convert::addr(&self.done(result)?))
    }

    /// The first `count` replicas of `key` in the node's view, owner first.
    pub fn replicas(&mut self, key: &[u8], count: usize) -> Result<Vec<NodeAddr>> {
        let count = i32::try_from(count).unwrap_or(i32::MAX);
        let result = self.client.replicas(key.to_vec(), count);
        Ok(self
            .done(result)?
            .iter()
            .filter_map(convert::addr)
            .collect())
    }

    /// The ring's members in the node's view (the 2009 `get_all`).
    pub fn members(&mut self) -> Result<Vec<NodeAddr>> {
        let result = self.client.get_all();
        Ok(self
            .done(result)?
            .iter()
            .filter_map(convert::addr)
            .collect())
    }

    /// The ring the node routes with, as a client builds it: the members of
    /// `get_all`, each at the weight its row in `members` gives (1 where the
    /// node is older than weights and has no `members`), so a ring-aware
    /// client places keys exactly as the node does.
    pub fn ring(&mut self) -> Result<Ring<NodeAddr>> {
        let members = self.members()?;
        let weights: BTreeMap<NodeAddr, u32> = match self.member_table() {
            Ok(table) => table
                .into_iter()
                .map(|row| (row.addr, row.weight))
                .collect(),
            Err(e) if e.kind() == ErrorKind::Rpc || e.kind() == ErrorKind::Unreachable => {
                return Err(e);
            }
            // A 2009 node: no `members`, no weights.
            Err(_) => BTreeMap::new(),
        };
        Ok(Ring::weighted(members.into_iter().map(|m| {
            let weight = weights.get(&m).copied().unwrap_or(1);
            (m, weight)
        })))
    }

    /// The node's member table, every status included (`members`, the
    /// read-only call for clients).
    pub fn member_table(&mut self) -> Result<Vec<MemberState>> {
        let result = self.client.members();
        Ok(self
            .done(result)?
            .iter()
            .filter_map(convert::member_state)
            .collect())
    }

    /// The node's member table, every status included (`gossip` with no
    /// rows: what a node asks a peer, so an isolated node drops it).
    pub fn table(&mut self) -> Result<Vec<MemberState>> {
        self.gossip(&[])
    }

    /// Pushes member rows to the node as a `gossip` from the member whose
    /// row comes first, and returns what the node answers (its whole table
    /// to a sender it did not know).
    pub(crate) fn gossip(&mut self, rows: &[MemberState]) -> Result<Vec<MemberState>> {
        let result = self
            .client
            .gossip(rows.iter().map(convert::member).collect());
        Ok(self
            .done(result)?
            .iter()
            .filter_map(convert::member_state)
            .collect())
    }

    /// The node's counters.
    pub fn stats(&mut self) -> Result<BTreeMap<String, i64>> {
        let result = self.client.stats();
        self.done(result)
    }

    /// A page of the keys the node holds copies of (see `list_keys` in the
    /// IDL).
    pub(crate) fn list_keys(&mut self, prefix: &[u8], start: &[u8], limit: u32) -> Result<Listed> {
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let result = self
            .client
            .list_keys(prefix.to_vec(), start.to_vec(), limit);
        Ok(convert::key_page_in(self.done(result)?))
    }

    /// The node's own copies of `keys`, tombstones included (a diagnostic).
    pub fn peek(&mut self, keys: &[Vec<u8>]) -> Result<Vec<Entry>> {
        let result = self.client.peek(keys.to_vec());
        Ok(convert::entries_in(self.done(result)?))
    }

    /// Announces `me` to the node the 2009 way (oneway `join`).
    pub fn join(&mut self, me: &NodeAddr) -> Result<()> {
        let result = self.client.join(convert::location(me));
        self.done(result)
    }

    /// Asks the node to leave its ring and stop (oneway `die`).
    pub fn die(&mut self) -> Result<()> {
        let result = self.client.die();
        self.done(result)
    }

    /// Cuts the node off from its peers, or restores it (a node started with
    /// `--fault-injection` only).
    pub fn isolate(&mut self, on: bool) -> Result<()> {
        let result = self.client.isolate(on);
        self.done(result)
    }
}

/// Turns a Thrift error from a call to `peer` into ours: an exception the node
/// raised becomes [`Error::Remote`] with the kind it named; a failed call is
/// [`Error::Rpc`].
pub(crate) fn call_error(peer: &NodeAddr, error: thrift::Error) -> Error {
    match error {
        thrift::Error::User(user) => match user.downcast::<super::idl::diststore::StoreError>() {
            Ok(store) => convert::remote_error(peer, *store),
            Err(other) => Error::Rpc {
                peer: peer.to_string(),
                reason: other.to_string(),
            },
        },
        thrift::Error::Application(app) => Error::Remote {
            peer: peer.to_string(),
            // Methods that declare no `StoreError` carry a refusal for a
            // missing secret as an application error (see `auth`).
            kind: if app.message.starts_with(UNAUTHORIZED_PREFIX) {
                crate::error::ErrorKind::Unauthorized
            } else {
                crate::error::ErrorKind::Refused
            },
            message: app.message,
        },
        other => Error::Rpc {
            peer: peer.to_string(),
            reason: describe(&other),
        },
    }
}

/// What a failed call's Thrift error says. The thrift crate's `Display` of
/// a transport or protocol error is its kind alone ("transport error"),
/// dropping the message that says what happened (the OS error, a timeout);
/// both are kept here, the kind only when it adds something.
fn describe(error: &thrift::Error) -> String {
    let (kind, message) = match error {
        thrift::Error::Transport(e) => (e.to_string(), &e.message),
        thrift::Error::Protocol(e) => (e.to_string(), &e.message),
        other => return other.to_string(),
    };
    if message.is_empty() || message.contains(&kind) {
        if message.is_empty() {
            kind
        } else {
            message.clone()
        }
    } else {
        format!("{kind}: {message}")
    }
}

/// How [`Error::Unauthorized`] reads, so that it is known again in an
/// application error's message.
const UNAUTHORIZED_PREFIX: &str = "not authorized: ";

/// Whether `error` is a read that timed out (see [`ReplyReader`]).
fn timed_out(error: &thrift::Error) -> bool {
    matches!(
        error,
        thrift::Error::Transport(t) if t.kind == thrift::TransportErrorKind::TimedOut
    )
}

/// Whether the connection that produced `error` is unusable afterwards.
fn breaks_connection(error: &thrift::Error) -> bool {
    matches!(
        error,
        thrift::Error::Transport(_) | thrift::Error::Protocol(_)
    )
}

#[cfg(test)]
mod tests {
    use thrift::{TransportError, TransportErrorKind};

    use super::*;

    #[test]
    fn a_refusal_for_a_missing_secret_is_known_again_from_its_message() {
        let refused = Error::Unauthorized("`absorb` needs the cluster secret".into());
        let app = thrift::Error::Application(thrift::ApplicationError::new(
            thrift::ApplicationErrorKind::Unknown,
            refused.to_string(),
        ));
        let peer = NodeAddr::new("127.0.0.1", 9901);
        assert_eq!(
            call_error(&peer, app).kind(),
            crate::error::ErrorKind::Unauthorized
        );
    }

    #[test]
    fn a_failed_call_names_its_peer_once_and_keeps_the_os_error() {
        let peer = NodeAddr::new("127.0.0.1", 9901);
        let io = io::Error::new(io::ErrorKind::BrokenPipe, "Broken pipe (os error 32)");
        let error = call_error(&peer, thrift::Error::from(io));
        assert_eq!(
            error.to_string(),
            "call to 127.0.0.1:9901 failed: transport error: Broken pipe (os error 32)"
        );
        // Without a message, the kind is all there is to say.
        let bare = thrift::Error::Transport(TransportError::new(
            TransportErrorKind::TimedOut,
            String::new(),
        ));
        assert_eq!(
            call_error(&peer, bare).to_string(),
            "call to 127.0.0.1:9901 failed: timed out"
        );
        // Passed on by a node and logged there, it is still said once.
        let remote = call_error(&peer, thrift::Error::from(io::Error::other("reset")))
            .into_remote(&NodeAddr::new("127.0.0.1", 9900));
        let text = remote.to_string();
        assert_eq!(text.matches("call to").count(), 1, "{text}");
    }
}
