//! The library's error type. Each variant's doc says whether any state changed.

use std::time::Duration;

/// Everything that can go wrong in the library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A `host:port` could not be parsed. Nothing changed.
    #[error("`{input}` is not a node address: {reason}")]
    BadAddress {
        /// What the user typed.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A peer could not be connected to. Nothing was sent to it.
    #[error(
        "cannot reach {peer}: {reason}; check that a node is running there (start one with `location PORT`)"
    )]
    Unreachable {
        /// The address tried.
        peer: String,
        /// The connect error.
        reason: String,
        /// Whether the connection was actively refused (nothing listens there),
        /// as opposed to timing out.
        refused: bool,
    },
    /// A peer was connected but the call failed midway (timeout, reset, protocol
    /// error). A write may or may not have been applied; retrying is safe because
    /// every write is versioned.
    #[error("call to {peer} failed: {reason}")]
    Rpc {
        /// The address called.
        peer: String,
        /// What failed.
        reason: String,
    },
    /// The peer answered with an error of its own. Nothing was stored.
    #[error("{peer} refused: {message}")]
    Refused {
        /// The address called.
        peer: String,
        /// The peer's message.
        message: String,
    },
    /// A value is larger than this node accepts. Nothing was stored.
    #[error(
        "value of {size} bytes exceeds the limit of {limit} bytes (raise it with --max-value-bytes)"
    )]
    TooLarge {
        /// The value's size.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A request bounced between nodes that disagree on the owner. Nothing stored.
    #[error(
        "the ring is changing and no node took key ownership after {hops} forwards; retry shortly"
    )]
    TooManyHops {
        /// Forwards made.
        hops: i8,
    },
    /// Fewer replicas than the write quorum stored a write. The write stays on
    /// the replicas that took it and may still spread; retrying is safe.
    #[error(
        "only {stored} of the {needed} replicas needed stored the write; retry, or check the ring's health"
    )]
    Quorum {
        /// Replicas that stored it.
        stored: usize,
        /// The write quorum.
        needed: usize,
    },
    /// Fewer replicas than a read needs could vouch for their copies (the
    /// ring is changing, or replicas are catching up). Nothing changed.
    #[error(
        "only {vouched} of the {needed} replicas a read needs could vouch for their copy (the ring is changing or catching up); retry shortly"
    )]
    ReadQuorum {
        /// Replicas that vouched for their copies.
        vouched: usize,
        /// The read quorum.
        needed: usize,
    },
    /// A relayed write arrived after its sender stopped waiting for it. Nothing
    /// was stored (the sender has retried elsewhere).
    #[error("the relayed write expired before this node could apply it")]
    Expired,
    /// No node of the ring is reachable or the ring is empty. Nothing stored.
    #[error("no reachable member owns the key; the ring may be empty or shutting down")]
    NoOwner,
    /// The node has not finished joining its ring (it was just started or
    /// restarted), so it can neither tell where a key lives nor vouch for its
    /// own copies. Nothing changed.
    #[error("this node is still joining the ring; retry in a moment, or use another node")]
    Joining,
    /// The node was just paused (SIGSTOP, a stalled machine) and refuses, for a
    /// moment, the writes that may have waited in it: a version taken now
    /// could bury a later write. Nothing was stored.
    #[error("this node was just paused and refuses writes for a moment; retry")]
    Paused,
    /// The node is shutting down and takes no more work. Nothing changed.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// Could not bind the listening socket. The node did not start.
    #[error("cannot listen on {addr}: {source}; choose another port or stop the process using it")]
    Bind {
        /// The address tried.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// No local node answered or no port was free in the probed range.
    #[error("no {what} on localhost ports {first}..={last}; {hint}")]
    NotFound {
        /// What was searched for.
        what: &'static str,
        /// First port probed.
        first: u16,
        /// Last port probed.
        last: u16,
        /// What to do.
        hint: &'static str,
    },
    /// Waited too long for something.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The local storage engine failed: an I/O error, a full or failing disk, an
    /// entry it cannot decode, or a data directory that is unusable or locked by
    /// another process. State may be unchanged, or the write being made may be
    /// lost; a write that already returned `Ok` is not affected.
    #[error("storage failed: {0}; check the --data-dir disk")]
    Storage(String),
    /// Any other I/O failure.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
