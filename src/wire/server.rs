//! The accept loop and connections: our own, because the thrift crate's
//! `TServer` has no connection cap, no idle timeout, no shutdown, and answers
//! oneway calls that fail (which desynchronises the caller).
//!
//! Each connection reads whole messages (found with a [`frame::Scanner`],
//! within the node's limits) before anything is decoded. A hot request (see
//! [`super::codec`]) is decoded once into a domain call, served by the node
//! (waiting on other nodes as it must, without blocking a worker) and its reply
//! encoded once; any other message goes through the generated processor over
//! in-memory buffers. The reply is written unless the method is oneway.
//!
//! Hot requests are pipelined: while one waits on other nodes (a write
//! waiting for its replicas), the connection reads and starts the next, up
//! to [`PIPELINE`] at once, and writes the replies in the order of the
//! requests, several in one write when they are ready together. A request
//! for a key that an earlier one still in flight names waits for it, so the
//! requests of one connection take effect in order for every key. Any other
//! message (the generated processor's, a refusal) waits until every earlier
//! request has been answered.
//! Because framing is ours, an unknown method or a bad argument costs one
//! exception reply, never the connection's sync.
//!
//! What one connection can cost the node is bounded:
//! - CPU linear in the bytes it sends: the scanner resumes where it stopped,
//!   and a handled message is dropped by moving a read offset ([`Input`]), not
//!   by shifting the bytes after it.
//! - Time: besides the idle timeout (no byte for `idle_timeout`), a message
//!   must arrive whole within `message_timeout` of its first byte and a reply
//!   must be taken whole within `reply_timeout`, so trickling a byte now and
//!   then, or never reading, cannot hold a connection slot for ever.
//! - Memory: beyond 64 KiB, every byte a connection buffers (a request being
//!   read, a decoded request being served, a reply being written) is taken
//!   from the node-wide [`Budget`] of bytes in flight first.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;

use parking_lot::Mutex;

use thrift::protocol::{TBinaryInputProtocol, TBinaryOutputProtocol};
use thrift::server::TProcessor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::budget::{Budget, Share};
use super::codec::{self, Answer, Call, Method};
use super::conn::protocol_config;
use super::frame::{self, Frame, Limits, MessageKind, Scanner};
use super::handler::{Handler, ONEWAY_METHODS, is_peer_method};
use super::idl::diststore::PeerSyncProcessor;
use crate::auth::Session;
use crate::error::Error;
use crate::node::Node;
use crate::store::Stored;
use crate::tls::Stream;
use crate::version::Version;

/// How long a call refused for its size may go on sending before the
/// connection closes, so that the sender reads the refusal (see
/// [`Connection::refuse_oversize`]).
const OVERSIZE_DRAIN: Duration = Duration::from_secs(10);

/// How long shutdown waits for busy connections to finish their current call.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `listener` until `shutdown` turns true, then stops accepting, lets each
/// connection finish the call it is in, and returns.
pub async fn serve(listener: TcpListener, node: Arc<Node>, mut shutdown: watch::Receiver<bool>) {
    let max = node.config().max_connections;
    let permits = Arc::new(Semaphore::new(max));
    let budget = Arc::new(Budget::new(node.config().inflight_budget()));
    while let Some((socket, permit)) = accept(&listener, &permits, &mut shutdown, "").await {
        let node = node.clone();
        let shutdown = shutdown.clone();
        let budget = budget.clone();
        tokio::spawn(async move {
            // The handshake happens in the connection's task (a slow client
            // does not hold up accepting) and within the message timeout (a
            // client that never finishes it cannot hold a connection slot).
            let socket = match secure(socket, &node).await {
                Ok(socket) => socket,
                Err(e) => {
                    log::info!("connection not served (TLS handshake): {e}");
                    drop(permit);
                    return;
                }
            };
            let connection = Connection::new(socket, node, shutdown, budget);
            if let Err(e) = connection.run().await {
                log::debug!("connection closed: {e}");
            }
            drop(permit);
        });
    }
    drop(listener);
    // Every permit back means every connection has finished.
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, permits.acquire_many(all)).await;
}

/// The accepted `socket`, through a TLS handshake when the node serves TLS.
/// `set_nodelay` is set here, on the TCP socket, before any wrapping.
async fn secure(socket: TcpStream, node: &Arc<Node>) -> std::io::Result<Stream> {
    socket.set_nodelay(true)?;
    let Some(tls) = &node.config().tls else {
        return Ok(Stream::Plain(socket));
    };
    let timeout = node.config().message_timeout;
    match tokio::time::timeout(timeout, tls.acceptor().accept(socket)).await {
        Ok(Ok(stream)) => Ok(Stream::Tls(Box::new(stream.into()))),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no TLS handshake within {timeout:?}"),
        )),
    }
}

/// Resolves once shutdown is signalled (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // Map the guard away here: it is not `Send` and must not live in a task.
    let _ = shutdown.wait_for(|stop| *stop).await.map(|_| ());
}

/// The next connection, once one of `permits` is free; `None` once
/// shutdown is signalled. Waiting for a permit before accepting leaves
/// excess clients in the kernel's backlog instead of spawning without
/// bound. `what` prefixes the log line of a failed accept.
pub(crate) async fn accept(
    listener: &TcpListener,
    permits: &Arc<Semaphore>,
    shutdown: &mut watch::Receiver<bool>,
    what: &str,
) -> Option<(TcpStream, OwnedSemaphorePermit)> {
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("semaphore never closed"),
            _ = stopped(shutdown) => return None,
        };
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => return Some((socket, permit)),
                Err(e) => {
                    // Usually EMFILE: back off a little instead of spinning.
                    log::warn!("{what}accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stopped(shutdown) => return None,
        }
    }
}

/// Why a connection ended, for the log.
#[derive(Debug, thiserror::Error)]
enum Closed {
    #[error("peer closed the connection")]
    Eof,
    #[error("idle for {0:?}")]
    Idle(Duration),
    #[error("a message was not whole {0:?} after its first byte")]
    MessageTimeout(Duration),
    #[error("a reply was not taken whole within {0:?}")]
    ReplyTimeout(Duration),
    #[error("server shutting down")]
    Shutdown,
    #[error("malformed message: {0}")]
    Malformed(#[from] frame::FrameError),
    #[error("unexpected {0:?} message from a client")]
    NotACall(MessageKind),
    #[error("dropped: this node is isolated (fault injection)")]
    Isolated,
    #[error("closed after a wrong proof of a secret")]
    Unauthorized,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Methods whose replies carry values, so may be as large as a message (or,
/// for `peek` and `reconcile`, hold several); every other reply is a few
/// bytes or the member table.
const VALUE_REPLIES: [&str; 7] = [
    "get",
    "fetch",
    "relay_fetch",
    "replica_read",
    "peek",
    "reconcile",
    "read_range",
];

/// Bytes a connection reads at a time while it does not know how long its
/// message is; also the read buffer it starts with.
const READ_CHUNK: usize = 16 * 1024;

/// A buffer grown past this for one large message is given back once that
/// message is handled, rather than kept for the life of the connection.
const KEEP_CAPACITY: usize = 4 * READ_CHUNK;

/// What a connection has read and not yet handled: one buffer and a read
/// offset into it. Handling a message moves the offset; the bytes after it
/// stay where they are (200,000 pipelined oneway pings after a 32 MiB store
/// cost seconds of CPU when every handled message shifted the rest down).
/// Bytes are moved to the front only when the buffer makes room for a read,
/// and then only the unread start of a message not yet whole, which is next
/// handled, not moved again: each byte moves so at most once (growing the
/// buffer copies too, but it grows geometrically).
struct Input {
    buf: Vec<u8>,
    /// The first unread byte.
    start: usize,
}

impl Input {
    fn new() -> Self {
        Input {
            buf: Vec::with_capacity(READ_CHUNK),
            start: 0,
        }
    }

    fn unread(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    fn is_empty(&self) -> bool {
        self.start == self.buf.len()
    }

    fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Marks the first `n` unread bytes handled. Once nothing is left unread
    /// the buffer starts over, and one that grew for a large message goes
    /// back to the allocator.
    fn consume(&mut self, n: usize) {
        self.start += n;
        debug_assert!(self.start <= self.buf.len());
        if self.is_empty() {
            self.start = 0;
            if self.buf.capacity() > KEEP_CAPACITY {
                self.buf = Vec::new();
            } else {
                self.buf.clear();
            }
        }
    }

    /// The capacity to read the rest of a message into, given that it is
    /// `wanted` bytes at least (its scanner says so) and at most `max`.
    ///
    /// The buffer grows only when it cannot hold `wanted`: straight to
    /// `wanted` when the message declared that much (a string's length), or
    /// to double its size when that is more, so that growing costs linear
    /// time in all. It never grows past what is certain while it has room for
    /// it: connections that each held a whole declared value and waited for
    /// a little more room beyond it, from a budget the others held, would
    /// wait on each other for ever. A buffer far larger than the message
    /// (kept from an earlier one) shrinks.
    fn capacity_for(&self, wanted: usize, max: usize) -> usize {
        let unread = self.buf.len() - self.start;
        let capacity = self.buf.capacity();
        // An unfinished message is longer than its unread bytes.
        let needed = wanted.max(unread + 1);
        if capacity < needed {
            needed.max(capacity.saturating_mul(2).max(READ_CHUNK).min(max))
        } else if capacity > 4 * needed.max(READ_CHUNK) {
            needed.max(READ_CHUNK)
        } else {
            capacity
        }
    }

    /// Moves the unread bytes to the front and gives the buffer `capacity`
    /// (from [`Input::capacity_for`]).
    fn make_room(&mut self, capacity: usize) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        if capacity > self.buf.capacity() {
            self.buf.reserve_exact(capacity - self.buf.len());
        } else if capacity < self.buf.capacity() {
            self.buf.shrink_to(capacity);
        }
    }
}

/// The most hot requests one connection has in the node's hands at once;
/// further bytes wait in the socket until the oldest is answered.
pub const PIPELINE: usize = 128;

/// The requests of one connection being served, oldest first.
type Queue = VecDeque<InFlight>;

/// A hot request taken from a connection and not yet answered.
struct InFlight {
    method: Method,
    seq: i32,
    strict: bool,
    /// Whether it gets a reply (not when sent oneway).
    answers: bool,
    /// When it was taken, for the method's latency.
    started: Instant,
    /// Bytes the connection counts for it until its reply is made.
    held: usize,
    /// A hash of its key, so that a later request of the same key waits.
    key: Option<u64>,
    outcome: Pending,
}

/// A request's outcome, or the task still serving it.
enum Pending {
    Ready(Result<Answer, Error>),
    Running(JoinHandle<Result<Answer, Error>>),
}

impl InFlight {
    /// Waits until the request is served. Cancel-safe: a wait cut short
    /// loses nothing.
    async fn served(&mut self) {
        if let Pending::Running(task) = &mut self.outcome {
            let outcome = task.await;
            self.outcome = Pending::Ready(outcome.unwrap_or_else(|e| Err(task_failed(e))));
        }
    }

    /// Whether the request is served, without waiting.
    fn is_served(&mut self) -> bool {
        if let Pending::Running(task) = &mut self.outcome {
            if !task.is_finished() {
                return false;
            }
            match task.now_or_never() {
                Some(outcome) => {
                    self.outcome = Pending::Ready(outcome.unwrap_or_else(|e| Err(task_failed(e))));
                }
                None => return false,
            }
        }
        true
    }

    /// The outcome of a served request.
    fn outcome(self) -> Result<Answer, Error> {
        match self.outcome {
            Pending::Ready(outcome) => outcome,
            Pending::Running(_) => unreachable!("finished only once served"),
        }
    }
}

/// A task serving a request panicked (a bug): its caller is told, and the
/// connection goes on.
fn task_failed(e: tokio::task::JoinError) -> Error {
    log::error!("a request's task failed: {e}");
    Error::refused_here(format!("the request failed inside the node: {e}"))
}

/// A key's hash, to tell whether two requests in flight name one key.
fn key_hash(key: &[u8]) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(key)
}

/// The time limits of one connection (see [`crate::Config`]).
#[derive(Clone, Copy)]
struct Timeouts {
    /// No byte either way for this long.
    idle: Duration,
    /// A message not whole this long after its first byte.
    message: Duration,
    /// A reply not taken whole this long after it was ready.
    reply: Duration,
}

impl Timeouts {
    /// The deadline for one read or write made now: the idle timeout, or
    /// `whole` (the message's or reply's deadline) if sooner; and what
    /// passing it means.
    fn next(&self, whole: Option<(Instant, Closed)>) -> (Instant, Closed) {
        let idle = Instant::now() + self.idle;
        match whole {
            Some((deadline, why)) if deadline < idle => (deadline, why),
            _ => (idle, Closed::Idle(self.idle)),
        }
    }
}

/// One client connection and everything it holds.
struct Connection {
    socket: Stream,
    node: Arc<Node>,
    shutdown: watch::Receiver<bool>,
    limits: Limits,
    timeouts: Timeouts,
    input: Input,
    scanner: Scanner,
    /// Replies made and not yet written, in order (empty for none).
    reply: Vec<u8>,
    /// Bytes held by the requests in flight (see [`InFlight::held`]).
    serving: usize,
    /// When the message being read must be whole (set at its first byte).
    deadline: Option<Instant>,
    /// A call refused for its size, to answer before closing.
    oversize: Option<frame::Oversize>,
    /// The node's budget of bytes in flight, and what this connection holds.
    budget: Arc<Budget>,
    share: Share,
    /// What the connection proved of the node's secrets.
    session: Arc<Mutex<Session>>,
}

impl Connection {
    fn new(
        socket: Stream,
        node: Arc<Node>,
        shutdown: watch::Receiver<bool>,
        budget: Arc<Budget>,
    ) -> Self {
        let config = node.config();
        let limits = config.limits();
        let timeouts = Timeouts {
            idle: config.idle_timeout,
            message: config.message_timeout,
            reply: config.reply_timeout,
        };
        Connection {
            socket,
            node,
            shutdown,
            limits,
            timeouts,
            input: Input::new(),
            scanner: Scanner::new(),
            reply: Vec::with_capacity(READ_CHUNK),
            serving: 0,
            deadline: None,
            oversize: None,
            share: Share::new(budget.clone()),
            budget,
            session: Arc::new(Mutex::new(Session::new())),
        }
    }

    /// Bytes this connection has in use, beyond `serving` (a decoded request
    /// still in the node's hands).
    fn in_use(&self, serving: usize) -> usize {
        self.input.capacity() + self.reply.capacity() + serving
    }

    /// Serves messages until the peer leaves, a limit is passed, or shutdown.
    /// Whatever ends it, the replies of requests already taken are written
    /// first (as far as the peer takes them).
    async fn run(mut self) -> Result<(), Closed> {
        let processor =
            PeerSyncProcessor::new(Handler::new(self.node.clone(), self.session.clone()));
        let mut queue = VecDeque::new();
        let ended = self.serve_all(&processor, &mut queue).await;
        if !matches!(ended, Err(Closed::Io(_) | Closed::ReplyTimeout(_))) {
            let _ = self.drain(&mut queue).await;
            if let Some(over) = self.oversize.take() {
                self.refuse_oversize(over).await;
            }
        }
        ended
    }

    async fn serve_all(
        &mut self,
        processor: &PeerSyncProcessor<Handler>,
        queue: &mut Queue,
    ) -> Result<(), Closed> {
        loop {
            let frame = self.next_frame(queue).await?;
            // The one place that knows both the method and when its reply is
            // ready. Measured to the reply made, not written: how fast the
            // client reads is its own latency, not the node's.
            let handling = Instant::now();
            check(&self.node, &frame)?;
            let secrets = &self.node.config().secrets;
            let allowed = if secrets.any() {
                self.session.lock().allows(secrets, &frame.name)
            } else {
                Ok(())
            };
            if let Err(refused) = allowed {
                // Refused before anything is decoded: nothing changes.
                self.input.consume(frame.len);
                if !answers(&frame) {
                    log::warn!("dropped a oneway `{}`: {refused}", frame.name);
                    continue;
                }
                self.drain(queue).await?;
                codec::encode_refusal(
                    &frame.name,
                    frame.seq,
                    frame.strict,
                    &refused,
                    &mut self.reply,
                );
                self.flush_replies().await?;
                continue;
            }
            // While replies hold the budget in debt, make no new reply that
            // can carry values: wait until earlier replies have drained (or
            // timed out). Other calls answer in a few bytes and go on.
            if VALUE_REPLIES.contains(&frame.name.as_str())
                && self.budget.no_debt().now_or_never().is_none()
            {
                // Our own replies may be what is owed: out with them first.
                self.drain(queue).await?;
                self.budget.no_debt().await;
            }
            let message = &self.input.unread()[..frame.len];
            let hot = Method::named(&frame.name)
                .and_then(|_| codec::decode(message, frame.strict, &self.limits));
            match hot {
                Some(request) => {
                    // Decoded, the request's bytes can go before it is served;
                    // its copy in the node's hands still counts.
                    self.input.consume(frame.len);
                    self.share.settle(self.in_use(frame.len));
                    self.start_hot(queue, request, &frame, handling).await?;
                }
                None => {
                    // The generated processor answers in place: after every
                    // earlier reply.
                    self.drain(queue).await?;
                    // A range read's or a batch's memory is known only as a
                    // bound: that much comes first.
                    if let Some(room) = room_bound(&self.node, &frame.name) {
                        self.share.reserve(self.in_use(frame.len) + room).await;
                    }
                    let message = &self.input.unread()[..frame.len];
                    process(processor, message, &frame, &self.limits, &mut self.reply);
                    self.input.consume(frame.len);
                    self.node
                        .metrics()
                        .method(&frame.name)
                        .observe(handling.elapsed());
                    // The reply exists already: count it, in debt if need be.
                    self.share.charge(self.in_use(0));
                    self.share.settle(self.in_use(0));
                    if answers(&frame) {
                        self.flush_replies().await?;
                    } else {
                        self.reply.clear();
                    }
                    if self.session.lock().failed() {
                        return Err(Closed::Unauthorized);
                    }
                }
            }
        }
    }

    /// Starts serving a hot request: at once when the node can answer
    /// without waiting, else in a task of its own while the connection reads
    /// on. Its reply is made, in order, by [`Connection::finish`].
    async fn start_hot(
        &mut self,
        queue: &mut Queue,
        request: codec::Decoded,
        frame: &Frame,
        started: Instant,
    ) -> Result<(), Closed> {
        let key = match &request.call {
            Call::Read { key, .. } | Call::Write { key, .. } => Some(key_hash(key)),
            Call::Probe(_) => None,
        };
        if key.is_some() && queue.iter().any(|earlier| earlier.key == key) {
            // An earlier request of this key is in flight: it goes first.
            self.drain(queue).await?;
        }
        // A read of a value this node holds: its size is known before the
        // reply is made, so the room for the copy and its encoding is taken
        // from the budget first (waiting, like a request being read), not
        // charged after.
        let mut held = frame.len;
        if let Call::Read { key, .. } = &request.call {
            held += reply_room(&self.node, key);
        }
        let want = self.in_use(self.serving + held);
        if self.share.reserve(want).now_or_never().is_none() {
            // What we hold ourselves may be what is missing: answer what is
            // in flight first, then wait.
            self.drain(queue).await?;
            self.share.reserve(self.in_use(self.serving + held)).await;
        }
        self.serving += held;
        let mut serving = Box::pin(serve_hot(self.node.clone(), request.method, request.call));
        let outcome = match (&mut serving).now_or_never() {
            Some(outcome) => Pending::Ready(outcome),
            None => Pending::Running(tokio::spawn(serving)),
        };
        queue.push_back(InFlight {
            method: request.method,
            seq: request.seq,
            strict: frame.strict,
            answers: answers(frame),
            started,
            held,
            key,
            outcome,
        });
        Ok(())
    }

    /// Makes the reply of the oldest request in flight, once it is served.
    async fn finish_front(&mut self, queue: &mut Queue) {
        if let Some(front) = queue.front_mut() {
            front.served().await;
            let front = queue.pop_front().expect("the front was just seen");
            self.finish(front);
        }
    }

    /// Makes the replies of the oldest requests already served, in order,
    /// stopping at the first still being served.
    fn finish_ready(&mut self, queue: &mut Queue) {
        while queue.front_mut().is_some_and(InFlight::is_served) {
            let front = queue.pop_front().expect("the front was just seen");
            self.finish(front);
        }
    }

    /// Appends a served request's reply to those to write, and lets go of
    /// what it held.
    fn finish(&mut self, served: InFlight) {
        let (method, started, held) = (served.method, served.started, served.held);
        let (seq, strict, answers) = (served.seq, served.strict, served.answers);
        let outcome = served.outcome();
        if answers {
            codec::encode_reply(method, seq, strict, outcome, &mut self.reply);
        } else if let Err(e) = outcome {
            // Oneway: nobody hears an error, so log it rather than return it.
            log::warn!("oneway {} failed: {e}", method.name());
        }
        self.node
            .metrics()
            .method(method.name())
            .observe(started.elapsed());
        self.serving -= held;
        // The reply exists already: count it, in debt if need be.
        self.share.charge(self.in_use(self.serving));
        self.share.settle(self.in_use(self.serving));
    }

    /// Answers every request in flight, in order, and writes the replies.
    async fn drain(&mut self, queue: &mut Queue) -> Result<(), Closed> {
        while !queue.is_empty() {
            self.finish_front(queue).await;
        }
        self.flush_replies().await
    }

    /// Writes the replies made so far, if any, and lets their buffer go.
    async fn flush_replies(&mut self) -> Result<(), Closed> {
        if self.reply.is_empty() {
            return Ok(());
        }
        self.write_reply().await?;
        if self.reply.capacity() > KEEP_CAPACITY {
            self.reply = Vec::with_capacity(READ_CHUNK);
        }
        self.reply.clear();
        self.share.settle(self.in_use(self.serving));
        Ok(())
    }

    /// Reads until the unread bytes start with a whole message, and returns
    /// its frame (the message is `input.unread()[..frame.len]`). Before it
    /// waits for bytes, the replies of requests served so far are written;
    /// while it waits, the oldest request in flight is answered as soon as
    /// it is served. With [`PIPELINE`] requests in flight it reads nothing
    /// until the oldest is answered.
    async fn next_frame(&mut self, queue: &mut Queue) -> Result<Frame, Closed> {
        loop {
            if queue.len() < PIPELINE
                && let Some(frame) = self.buffered_frame()?
            {
                self.deadline = None;
                return Ok(frame);
            }
            self.finish_ready(queue);
            self.flush_replies().await?;
            if queue.len() >= PIPELINE {
                self.finish_front(queue).await;
                continue;
            }
            if queue.is_empty() {
                self.read_some().await?;
                continue;
            }
            let front = queue.front_mut().expect("not empty");
            tokio::select! {
                biased;
                () = front.served() => {
                    // One acknowledgement round settles many requests at
                    // once, and their tasks were woken with ours: let them
                    // finish, so their replies go out in one write rather
                    // than one each.
                    tokio::task::yield_now().await;
                    self.finish_ready(queue);
                }
                read = self.read_some() => read?,
            }
        }
    }

    /// The frame of the whole message at the front of the unread bytes, if
    /// one is there (no socket read).
    fn buffered_frame(&mut self) -> Result<Option<Frame>, Closed> {
        if self.input.is_empty() {
            return Ok(None);
        }
        self.deadline
            .get_or_insert_with(|| Instant::now() + self.timeouts.message);
        match self.scanner.scan(self.input.unread(), &self.limits) {
            Ok(found) => Ok(found),
            Err(e) => {
                // Answered once the earlier requests are (see `run`).
                self.oversize = self.scanner.take_oversize();
                Err(e.into())
            }
        }
    }

    /// Reads what the socket has (at least one byte), within the idle and
    /// message timeouts and the budget. Cancel-safe: the bytes read are kept.
    async fn read_some(&mut self) -> Result<(), Closed> {
        let idle = self.input.is_empty();
        if *self.shutdown.borrow() && idle {
            return Err(Closed::Shutdown);
        }
        if !idle {
            self.deadline
                .get_or_insert_with(|| Instant::now() + self.timeouts.message);
        }
        let deadline = self.deadline;
        let whole = deadline.map(|at| (at, Closed::MessageTimeout(self.timeouts.message)));

        // Room for the rest of the message, taken from the budget first.
        // Waiting for it is waiting on other connections, so only the
        // message's deadline applies.
        let capacity = self
            .input
            .capacity_for(self.scanner.wanted(), self.limits.max_message);
        let reserve = self
            .share
            .reserve(capacity + self.reply.capacity() + self.serving);
        match deadline {
            Some(at) => tokio::time::timeout_at(at, reserve)
                .await
                .map_err(|_| Closed::MessageTimeout(self.timeouts.message))?,
            None => reserve.await,
        }
        self.input.make_room(capacity);
        self.share.settle(self.in_use(self.serving));

        let (until, why) = self.timeouts.next(whole);
        let read = tokio::select! {
            read = tokio::time::timeout_at(until, self.socket.read_buf(&mut self.input.buf)) => read,
            _ = self.shutdown.wait_for(|stop| *stop), if idle => return Err(Closed::Shutdown),
        };
        match read {
            Err(_) => Err(why),
            Ok(Ok(0)) => Err(Closed::Eof),
            Ok(Ok(n)) => {
                self.node.metrics().read(n);
                Ok(())
            }
            Ok(Err(e)) => Err(e.into()),
        }
    }

    /// Answers a call refused for its size with an error that names the
    /// limit, instead of only closing: a sender still writing its value would
    /// see a broken pipe and never read why. The rest of the message is read
    /// and thrown away (never buffered) until the sender is done or
    /// [`OVERSIZE_DRAIN`] has passed, so its write completes and it reads
    /// the answer; then the connection closes (the message cannot be skipped
    /// reliably, so the connection's sync is gone).
    async fn refuse_oversize(&mut self, over: frame::Oversize) {
        let Some(method) = Method::named(&over.name) else {
            return;
        };
        // Only writes carry values; any other call that large (a 2 GB key
        // in a `get`) is hostile, and its connection just closes.
        if over.kind != MessageKind::Call || !matches!(method, Method::Store | Method::RelayStore) {
            return;
        }
        let error = Error::TooLarge {
            size: over.size,
            limit: self.node.config().max_value_bytes,
        };
        log::info!("refused a `{}` call: {error}", over.name);
        let mut reply = Vec::new();
        codec::encode_reply(method, over.seq, over.strict, Err(error), &mut reply);
        let write = async {
            self.socket.write_all(&reply).await?;
            self.socket.flush().await
        };
        if tokio::time::timeout(OVERSIZE_DRAIN, write).await.is_err() {
            return;
        }
        let mut scratch = [0u8; 64 * 1024];
        let deadline = Instant::now() + OVERSIZE_DRAIN;
        while let Ok(Ok(n)) =
            tokio::time::timeout_at(deadline, self.socket.read(&mut scratch)).await
        {
            if n == 0 {
                break;
            }
        }
    }

    /// Writes the reply, giving up once the peer has taken none of it for the
    /// idle timeout (a peer that stops reading is as idle as one that stops
    /// sending) or not all of it within the reply timeout (a peer reading a
    /// byte now and then must not pin a large reply for ever).
    async fn write_reply(&mut self) -> Result<(), Closed> {
        let deadline = Instant::now() + self.timeouts.reply;
        let mut written = 0;
        while written < self.reply.len() {
            let whole = Some((deadline, Closed::ReplyTimeout(self.timeouts.reply)));
            let (until, why) = self.timeouts.next(whole);
            let n = tokio::time::timeout_at(until, self.socket.write(&self.reply[written..]))
                .await
                .map_err(|_| why)??;
            if n == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into());
            }
            written += n;
            self.node.metrics().written(n);
        }
        // TLS may hold the tail of the reply in its buffer (plain TCP: a
        // no-op).
        tokio::time::timeout_at(deadline, self.socket.flush())
            .await
            .map_err(|_| Closed::ReplyTimeout(self.timeouts.reply))??;
        Ok(())
    }
}

/// Serves a hot request: at once when the node can (a read it owns, a write
/// it can take without waiting), otherwise waiting on the other nodes.
async fn serve_hot(node: Arc<Node>, method: Method, call: Call) -> Result<Answer, Error> {
    match call {
        Call::Read { key, hops } => {
            // A relayed read answers with the copy's version, which only the
            // waiting path gives.
            let client = matches!(method, Method::Get | Method::Fetch);
            if client && let Some(now) = node.fetch_now(&key, hops) {
                let value = now?;
                crate::node::refuse_streamed(&key, value.as_deref())?;
                return Ok(Answer::Copy(value.map(|value| Stored {
                    value: Some(value),
                    version: Version::default(),
                })));
            }
            let mut copy = node.fetch_copy(&key, hops).await?;
            if client {
                // What a client reads is the value it wrote: opened here
                // (relays carry the stored bytes).
                if let Some(stored) = copy.as_mut()
                    && let Some(value) = stored.value.take()
                {
                    stored.value = Some(node.open(&key, value)?.value);
                }
                crate::node::refuse_streamed(&key, copy.as_ref().and_then(|c| c.value.as_deref()))?;
            }
            Ok(Answer::Copy(copy))
        }
        Call::Write {
            key,
            value,
            hops,
            version,
            expires,
        } => {
            if version.is_none()
                && let Some(now) = node.write_now(&key, value.as_deref(), hops, expires)
            {
                return now.map(|()| Answer::Done);
            }
            // A relayed write carries the stored bytes its entry node sealed.
            if version.is_some() {
                node.write_stored(&key, value.as_deref(), hops, version, expires)
                    .await
            } else {
                node.write(&key, value.as_deref(), hops, version, expires)
                    .await
            }
            .map(|()| Answer::Done)
        }
        Call::Probe(Some(target)) => Ok(Answer::Probed(node.probe_for_peer(&target).await)),
        Call::Probe(None) => Ok(Answer::Probed(false)),
    }
}

/// The bytes a read of `key` needs while its reply is made, by the local
/// copy's size: the copy taken from the store and the reply it is encoded
/// into (a frame's few bytes more). Nothing when the key is not held here
/// (the reply, made from other nodes' copies, is charged once it exists).
fn reply_room(node: &Node, key: &[u8]) -> usize {
    match node.store().value_len(key) {
        Ok(Some(len)) => len.saturating_mul(2).saturating_add(REPLY_OVERHEAD),
        _ => 0,
    }
}

/// The memory a method served by the generated processor may hold, when
/// only a bound is known before it runs (see `Node::read_range_room`,
/// `Node::batch_room`).
fn room_bound(node: &Node, method: &str) -> Option<usize> {
    match method {
        "read_range" => Some(node.read_range_room()),
        "fetch_many" => Some(node.batch_room()),
        _ => None,
    }
}

/// Bytes a reply's frame adds to the value it carries (method name, sequence
/// number, field headers), rounded up generously.
const REPLY_OVERHEAD: usize = 256;

/// Whether this message may be served at all on this connection.
fn check(node: &Node, frame: &Frame) -> Result<(), Closed> {
    if !matches!(frame.kind, MessageKind::Call | MessageKind::Oneway) {
        return Err(Closed::NotACall(frame.kind));
    }
    if node.isolated() && is_peer_method(&frame.name) {
        return Err(Closed::Isolated);
    }
    Ok(())
}

/// Whether a message gets a reply: never for a oneway method, however the
/// caller marked it.
fn answers(frame: &Frame) -> bool {
    frame.kind != MessageKind::Oneway && !ONEWAY_METHODS.contains(&frame.name.as_str())
}

/// Runs one message through a generated processor, leaving in `reply` what it
/// wrote (an answer, an exception, or nothing for a oneway method).
pub(crate) fn process(
    processor: &PeerSyncProcessor<Handler>,
    message: &[u8],
    frame: &Frame,
    limits: &Limits,
    reply: &mut Vec<u8>,
) {
    reply.clear();
    // Nothing in a message is longer than the message. Bounding the decoder by
    // this message's length (not the node's limit) stops a wrongly typed field,
    // say an i32 that the generated code reads as a string length, from making
    // it reserve up to `max_message` bytes for a few bytes received.
    let within = Limits {
        max_message: message.len(),
        ..*limits
    };
    let mut input =
        TBinaryInputProtocol::with_config(message, frame.strict, protocol_config(&within));
    let mut output = TBinaryOutputProtocol::new(&mut *reply, frame.strict);
    if let Err(e) = processor.process(&mut input, &mut output) {
        // The processor already wrote an exception reply where one was due.
        log::debug!("call to {} failed: {e}", frame.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 64 << 20;

    fn input(unread: &[u8], capacity: usize) -> Input {
        let mut buf = Vec::with_capacity(capacity);
        buf.extend_from_slice(unread);
        Input { buf, start: 0 }
    }

    #[test]
    fn a_declared_value_gets_a_buffer_of_exactly_its_size() {
        let input = input(&[0; 100], READ_CHUNK);
        assert_eq!(input.capacity_for(40 << 20, MAX), 40 << 20);
    }

    #[test]
    fn a_message_of_unknown_size_doubles_its_buffer_up_to_the_limit() {
        let full = input(&vec![0; READ_CHUNK], READ_CHUNK);
        assert_eq!(full.capacity_for(READ_CHUNK + 8, MAX), 2 * READ_CHUNK);
        let near = input(&vec![0; 40 << 20], 40 << 20);
        assert_eq!(near.capacity_for((40 << 20) + 8, MAX), MAX);
    }

    #[test]
    fn a_buffer_that_holds_the_declared_value_never_grows_past_it() {
        // All but a few bytes of a declared value in: asking for more room
        // than certain would wait on a budget other such buffers hold.
        let wanted = 40 << 20;
        let input = input(&vec![0; wanted - 3], wanted);
        assert_eq!(input.capacity_for(wanted, MAX), wanted);
    }

    #[test]
    fn a_buffer_kept_from_a_large_message_shrinks_for_a_small_one() {
        let input = input(&[0; 10], 32 << 20);
        assert_eq!(input.capacity_for(20, MAX), READ_CHUNK);
    }

    #[test]
    fn handled_bytes_are_dropped_by_moving_the_offset_and_an_emptied_large_buffer_is_freed() {
        let mut input = input(&[1, 2, 3, 4, 5], 1 << 20);
        input.consume(2);
        assert_eq!(input.unread(), &[3, 4, 5]);
        assert_eq!(input.buf.len(), 5, "nothing moved");
        input.make_room(input.capacity_for(4, MAX));
        assert_eq!(input.buf, vec![3, 4, 5], "moved once, to make room");
        input.consume(3);
        assert!(input.is_empty());
        assert!(input.capacity() <= KEEP_CAPACITY);
    }
}
