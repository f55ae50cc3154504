//! The accept loop and connections: our own, because the thrift crate's
//! `TServer` has no connection cap, no idle timeout, no shutdown, and answers
//! oneway calls that fail (which desynchronises the caller).
//!
//! Each connection reads whole messages (found with `frame::scan`, within the
//! node's limits) before anything is decoded. A hot request (see
//! [`super::codec`]) is decoded once into a domain call, served by the node
//! (waiting on other nodes as it must, without blocking a worker) and its reply
//! encoded once; any other message goes through the generated processor over
//! in-memory buffers. The reply is written unless the method is oneway.
//! Because framing is ours, an unknown method or a bad argument costs one
//! exception reply, never the connection's sync.

use std::sync::Arc;
use std::time::Duration;

use thrift::protocol::{TBinaryInputProtocol, TBinaryOutputProtocol};
use thrift::server::TProcessor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use super::codec::{self, Answer, Call, Method};
use super::conn::protocol_config;
use super::frame::{self, Frame, Limits, MessageKind};
use super::handler::{Handler, ONEWAY_METHODS, is_peer_method};
use super::idl::diststore::StoreSyncProcessor;
use crate::error::Error;
use crate::node::Node;
use crate::store::Stored;
use crate::version::Version;

/// How long shutdown waits for busy connections to finish their current call.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `listener` until `shutdown` turns true, then stops accepting, lets each
/// connection finish the call it is in, and returns.
pub async fn serve(listener: TcpListener, node: Arc<Node>, mut shutdown: watch::Receiver<bool>) {
    let max = node.config().max_connections;
    let permits = Arc::new(Semaphore::new(max));
    loop {
        // Waiting for a permit before accepting leaves excess clients in the
        // kernel's backlog instead of spawning without bound.
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("semaphore never closed"),
            _ = stopped(&mut shutdown) => break,
        };
        let socket = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => socket,
                Err(e) => {
                    // Usually EMFILE: back off a little instead of spinning.
                    log::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => break,
        };
        let node = node.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(socket, node, shutdown).await {
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

/// Resolves once shutdown is signalled (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // Map the guard away here: it is not `Send` and must not live in a task.
    let _ = shutdown.wait_for(|stop| *stop).await.map(|_| ());
}

/// Why a connection ended, for the log.
#[derive(Debug, thiserror::Error)]
enum Closed {
    #[error("peer closed the connection")]
    Eof,
    #[error("idle for {0:?}")]
    Idle(Duration),
    #[error("server shutting down")]
    Shutdown,
    #[error("malformed message: {0}")]
    Malformed(#[from] frame::FrameError),
    #[error("unexpected {0:?} message from a client")]
    NotACall(MessageKind),
    #[error("dropped: this node is isolated (fault injection)")]
    Isolated,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

async fn connection(
    mut socket: TcpStream,
    node: Arc<Node>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), Closed> {
    socket.set_nodelay(true)?;
    let limits = node.config().limits();
    let idle = node.config().idle_timeout;
    let processor = StoreSyncProcessor::new(Handler::new(node.clone()));
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut reply: Vec<u8> = Vec::with_capacity(16 * 1024);
    loop {
        let frame = loop {
            if !buf.is_empty()
                && let Some(frame) = frame::scan(&buf, &limits)?
            {
                break frame;
            }
            if *shutdown.borrow() && buf.is_empty() {
                return Err(Closed::Shutdown);
            }
            // Grow geometrically so that re-scanning from the start stays linear.
            buf.reserve(buf.len().max(16 * 1024));
            let read = tokio::select! {
                read = tokio::time::timeout(idle, socket.read_buf(&mut buf)) => read,
                _ = shutdown.wait_for(|stop| *stop), if buf.is_empty() => return Err(Closed::Shutdown),
            };
            match read {
                Err(_) => return Err(Closed::Idle(idle)),
                Ok(Ok(0)) => return Err(Closed::Eof),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e.into()),
            }
        };
        let message = &buf[..frame.len];
        check(&node, &frame)?;
        let hot =
            Method::named(&frame.name).and_then(|_| codec::decode(message, frame.strict, &limits));
        match hot {
            Some(request) => {
                let outcome = serve_hot(&node, request.method, request.call).await;
                codec::encode_reply(
                    request.method,
                    request.seq,
                    frame.strict,
                    outcome,
                    &mut reply,
                );
            }
            None => process(&processor, message, &frame, &limits, &mut reply),
        }
        let answer = answers(&frame) && !reply.is_empty();
        buf.drain(..frame.len);
        if answer {
            write_reply(&mut socket, &reply, idle).await?;
        }
    }
}

/// Serves a hot request: at once when the node can (a read it owns, a write
/// it can take without waiting), otherwise waiting on the other nodes.
async fn serve_hot(node: &Arc<Node>, method: Method, call: Call) -> Result<Answer, Error> {
    match call {
        Call::Read { key, hops } => {
            // A relayed read answers with the copy's version, which only the
            // waiting path gives.
            if matches!(method, Method::Get | Method::Fetch)
                && let Some(now) = node.fetch_now(&key, hops)
            {
                return now.map(|value| {
                    Answer::Copy(value.map(|value| Stored {
                        value: Some(value),
                        version: Version::default(),
                    }))
                });
            }
            node.fetch_copy(&key, hops).await.map(Answer::Copy)
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
            node.write(&key, value.as_deref(), hops, version, expires)
                .await
                .map(|()| Answer::Done)
        }
        Call::Probe(Some(target)) => Ok(Answer::Probed(node.probe_for_peer(&target).await)),
        Call::Probe(None) => Ok(Answer::Probed(false)),
    }
}

/// Writes `reply`, giving up once the peer has taken none of it for `idle`: a
/// peer that stops reading its replies is as idle as one that stops sending,
/// and must not hold its connection (and its permit) forever.
async fn write_reply(socket: &mut TcpStream, reply: &[u8], idle: Duration) -> Result<(), Closed> {
    let mut written = 0;
    while written < reply.len() {
        let n = tokio::time::timeout(idle, socket.write(&reply[written..]))
            .await
            .map_err(|_| Closed::Idle(idle))??;
        if n == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into());
        }
        written += n;
    }
    Ok(())
}

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
fn process(
    processor: &StoreSyncProcessor<Handler>,
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
