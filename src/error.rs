//! The library's one error type, streaming included. Each variant's doc says
//! whether any state changed. [`Error::kind`] names the failure in a way that
//! survives the wire: an error a node answers with arrives as
//! [`Error::Remote`] with the kind the node gave it, so a client tells a
//! quorum failure from a refusal wherever it happened.

use std::io;
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
    /// `location` was asked to join itself (its peer is its own address).
    /// Nothing started.
    #[error(
        "{peer} is this node's own address: to start a new ring run `location PORT`; \
         to join a ring, name another of its members"
    )]
    SelfJoin {
        /// The peer given.
        peer: String,
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
    /// A peer accepted the connection but did not answer a first `ping` in
    /// time: something listens there that is paused, overloaded, or not a
    /// thrifty-p2p node. Nothing was sent to it but the `ping`.
    #[error(
        "{peer} accepted the connection but did not answer within {} s; it may be paused, \
         overloaded or not a thrifty-p2p node: check it, or name another member with --peer",
        after.as_secs_f64()
    )]
    NoAnswer {
        /// The address called.
        peer: String,
        /// How long the first answer was waited for.
        after: Duration,
    },
    /// The node requires a secret that this connection has not proved, or a
    /// proof was wrong, or a peer could not prove the secret back (see
    /// `auth`). Nothing changed.
    #[error("not authorized: {0}")]
    Unauthorized(String),
    /// A secret file is missing, unreadable or too short. Nothing started.
    #[error("{0}")]
    BadSecret(String),
    /// A TLS file is missing or unusable, or a host cannot be checked
    /// against a certificate (see `tls`). Nothing started or was sent.
    #[error("{0}")]
    BadTls(String),
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
    /// The peer refused the request as invalid or not allowed here (a bad
    /// argument, an unknown method, a member it does not know). Nothing was
    /// stored.
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
    /// A key of a `fetch_many` batch whose value did not fit in the batch's
    /// reply, which carries at most `limit` bytes of values. Nothing
    /// changed: read the key again, alone or in a later batch.
    #[error(
        "`{key}` did not fit in the batch's reply of at most {limit} bytes of values: fetch it alone or in a later batch"
    )]
    BatchFull {
        /// The key, lossy UTF-8.
        key: String,
        /// The most value bytes one batch reply carries.
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
    /// A listing could not hear from enough members to be complete: a key
    /// stored only on the ones that did not answer would be missing.
    #[error(
        "cannot list the ring: {} did not answer, and a key may be stored only there ({needed} copies per write); retry once they are back or declared dead",
        silent.join(", ")
    )]
    ListIncomplete {
        /// The members that did not answer.
        silent: Vec<String>,
        /// Copies every acknowledged write has (the write quorum).
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
    /// Could not bind the HTTP socket asked for with `--http`. The node did
    /// not start.
    #[error(
        "cannot serve HTTP (--http) on {addr}: {source}; choose another address or port, \
         or leave --http out"
    )]
    HttpBind {
        /// The address tried.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// No local node answered or no port was free in the probed range.
    #[error("no {what} on localhost ports {first} to {last}; {hint}")]
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
    /// A node answered with an error of its own, of kind `kind` (as the node
    /// named it; see [`ErrorKind`] for what each kind changed). For example a
    /// write whose coordinator found too few replicas arrives as kind
    /// [`ErrorKind::Quorum`].
    #[error("{peer}: {message}")]
    Remote {
        /// The node that answered.
        peer: String,
        /// What kind of failure it reported.
        kind: ErrorKind,
        /// Its message.
        message: String,
    },
    /// A chunk of a large value could be stored neither at its owner nor at
    /// any other member. The key still holds its previous value.
    #[error(
        "storing chunk {index} of `{key}` failed at its owner {owner} ({reason}); check the ring's health and store the value again"
    )]
    ChunkNotStored {
        /// The value's key (lossily decoded for display).
        key: String,
        /// The chunk's index.
        index: u64,
        /// The chunk's owner on the client's view of the ring.
        owner: String,
        /// What failed there (and at the members tried after it).
        reason: String,
    },
    /// A value could not be read from its input. The key still holds its
    /// previous value.
    #[error("cannot read the value: {0}")]
    Input(io::Error),
    /// A value could not be written to its output. The ring is unchanged.
    #[error("cannot write the value: {0}")]
    Output(io::Error),
    /// The key is too long to carry a chunk key's suffix. Nothing changed.
    #[error(
        "a key of {len} bytes is too long for a streamed value (at most {max} bytes); use a shorter key"
    )]
    KeyTooLong {
        /// The key's length.
        len: usize,
        /// The longest key that can be streamed.
        max: usize,
    },
    /// Zero workers, or a chunk size of 0 or above the largest chunk.
    /// Nothing changed.
    #[error(
        "chunk size {chunk_bytes} with {workers} workers is invalid: use 1 to {max} bytes per chunk (no more than the nodes' --max-value-bytes) and at least 1 worker"
    )]
    BadOptions {
        /// The chunk size asked for.
        chunk_bytes: usize,
        /// The worker count asked for.
        workers: usize,
        /// The largest chunk allowed.
        max: usize,
    },
    /// An upload took longer than the nodes allow between a streamed value's
    /// first chunk and its manifest (half their `--chunk-grace`), so its
    /// chunks may already be collected: the manifest was not written and the
    /// key holds what it held before.
    #[error(
        "the upload of `{key}` took {took:.0?}, longer than the {window:.0?} the nodes allow before its chunks may be collected; the key is unchanged: store it again, or raise --chunk-grace on the nodes"
    )]
    UploadTooSlow {
        /// The value's key.
        key: String,
        /// How long the chunks took.
        took: std::time::Duration,
        /// Half the nodes' chunk grace.
        window: std::time::Duration,
    },
    /// The key holds something that begins like a manifest but is not a
    /// readable one. The ring is unchanged.
    #[error(
        "the value at `{key}` looks like a streamed-value manifest but {reason}; it was written by a newer or broken client"
    )]
    BadManifest {
        /// The value's key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A chunk named by the manifest is not stored. The ring is unchanged;
    /// chunks before it may have been written out.
    #[error(
        "chunk {index} of {chunks} of `{key}` is missing: its owner {owner} has no copy and found none on the other replicas; the value is damaged, store it again"
    )]
    MissingChunk {
        /// The value's key.
        key: String,
        /// The chunk's index.
        index: u64,
        /// How many chunks the value has.
        chunks: u64,
        /// The node that answered for the chunk.
        owner: String,
    },
    /// A chunk could be fetched neither from its owner nor through any other
    /// member. The ring is unchanged; chunks before it may have been written
    /// out.
    #[error(
        "fetching chunk {index} of {chunks} of `{key}` from its owner {owner} failed ({reason}); check the ring's health and retry"
    )]
    ChunkNotFetched {
        /// The value's key.
        key: String,
        /// The chunk's index.
        index: u64,
        /// How many chunks the value has.
        chunks: u64,
        /// The chunk's owner on the client's view of the ring.
        owner: String,
        /// What failed there (and at the members tried after it).
        reason: String,
    },
    /// A chunk came back with other bytes than were stored. The ring is
    /// unchanged; chunks before it may have been written out.
    #[error(
        "chunk {index} of {chunks} of `{key}` from {owner} is corrupt ({reason}); the value is damaged, store it again"
    )]
    CorruptChunk {
        /// The value's key.
        key: String,
        /// The chunk's index.
        index: u64,
        /// How many chunks the value has.
        chunks: u64,
        /// The node that answered for the chunk.
        owner: String,
        /// How it differs.
        reason: String,
    },
    /// `fetch` (or the 2009 `get`) of a key that holds a streamed value,
    /// which one message does not carry. Nothing changed.
    #[error(
        "`{key}` holds a streamed value of {size} bytes, which fetch does not return: read it with `describe` and `read_range` (README, Large values)"
    )]
    Streamed {
        /// The key, lossy UTF-8.
        key: String,
        /// The value's size in bytes.
        size: u64,
    },
    /// A ranged read named the value it was reading (`id`), and the key now
    /// holds another one, or none. Nothing changed.
    #[error(
        "the value at `{key}` was replaced while you read it; start again (describe, then read_range)"
    )]
    Changed {
        /// The key, lossy UTF-8.
        key: String,
    },
    /// A part or commit named an upload this node does not hold open. The
    /// key is unchanged.
    #[error(
        "no open upload {upload} of `{key}` on this node ({reason}); begin a new upload with begin_upload, and send its parts and commit to the same node"
    )]
    NoSuchUpload {
        /// The key, lossy UTF-8.
        key: String,
        /// The upload id named.
        upload: u64,
        /// Why: never begun here, committed, or expired.
        reason: String,
    },
    /// A create-only write found a value at the key (a tombstone does not
    /// count). Nothing changed.
    #[error(
        "`{key}` already holds a value, and the write was create-only; nothing changed: read it, or write without create-only to replace it"
    )]
    Exists {
        /// The key, lossy UTF-8.
        key: String,
    },
    /// `lock` of a key whose lease another holder has, not yet expired.
    /// Nothing changed.
    #[error(
        "`{key}` is leased by another holder until {until_ms} (wall-clock ms since the epoch, {left_ms} ms from now); nothing changed: retry after that, or lock with a wait"
    )]
    Held {
        /// The key, lossy UTF-8.
        key: String,
        /// When the current lease expires (wall-clock milliseconds).
        until_ms: i64,
        /// How long that is from when the owner decided.
        left_ms: i64,
    },
    /// A token (`unlock`, `renew`, a write's fence) that is not the key's
    /// current lease. Nothing changed.
    #[error(
        "token {token} is not the current lease on `{key}` ({reason}); nothing changed: the lease is lost, lock again if you still need the key"
    )]
    StaleToken {
        /// The key, lossy UTF-8.
        key: String,
        /// The token given.
        token: i64,
        /// Why: superseded by a newer lease, unlocked, or never granted.
        reason: String,
    },
    /// The write would take this node over its `--max-memory`
    /// ([`crate::Config::max_memory`]). Nothing was stored here and nothing
    /// was evicted; erases are always taken.
    #[error(
        "{node} is full: it holds {used} bytes of keys and values, and this write needs {needed} more, \
         over its --max-memory of {limit} bytes; nothing was stored there and nothing is evicted: \
         erase keys, raise --max-memory, or add nodes"
    )]
    Full {
        /// The node that refused.
        node: String,
        /// Key and value bytes it holds (and has admitted, being written).
        used: u64,
        /// What the write would add.
        needed: u64,
        /// Its cap.
        limit: u64,
    },
    /// The node asked reports no ring members. Nothing changed.
    #[error("{peer} reports no ring members; check that it is a running node")]
    NoMembers {
        /// The node asked.
        peer: String,
    },
    /// Any other I/O failure.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// What kind of failure an [`Error`] is, the same whether it happened here or
/// on a node that answered with it ([`Error::Remote`]). Kinds travel in
/// `StoreError.kind` (see `thrift/diststore.thrift`); a kind this build does
/// not know arrives as [`ErrorKind::Other`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A bad `host:port`. Nothing changed.
    BadAddress,
    /// A node could not be reached. Nothing was sent to it.
    Unreachable,
    /// A call failed midway; a write may or may not have been applied.
    Rpc,
    /// The request was refused as invalid or not allowed. Nothing stored.
    Refused,
    /// A value over the node's `--max-value-bytes`. Nothing stored.
    TooLarge,
    /// Nodes disagree on the owner while the ring changes. Nothing stored.
    TooManyHops,
    /// Too few replicas stored a write; it may still spread. Retry.
    Quorum,
    /// Too few replicas could vouch for their copies. Nothing changed.
    ReadQuorum,
    /// A relayed write arrived too late. Nothing stored.
    Expired,
    /// No reachable member owns the key. Nothing stored.
    NoOwner,
    /// The node is still joining its ring. Nothing changed.
    Joining,
    /// The node was just paused and refuses writes for a moment.
    Paused,
    /// The node is shutting down. Nothing changed.
    ShuttingDown,
    /// The node's storage failed.
    Storage,
    /// A secret was required and not proved, or proved wrong. Nothing changed.
    Unauthorized,
    /// Local set-up: a port could not be bound, no node or free port found,
    /// a wait timed out, bad streaming options or key.
    Local,
    /// A large value could not be read from or written to the local side.
    Io,
    /// A large value is damaged on the ring (a chunk missing or corrupt, a
    /// manifest unreadable).
    Damaged,
    /// `fetch` of a streamed value: read it with `describe` and
    /// `read_range` (or [`crate::Client::get`], which does). Nothing changed.
    Streamed,
    /// The value a ranged read was reading was replaced; start again.
    /// Nothing changed.
    Changed,
    /// The upload named is not open on that node (never begun there,
    /// committed, or expired). The key is unchanged.
    NoSuchUpload,
    /// A create-only write found a value at the key. Nothing changed.
    Exists,
    /// `lock` found another holder's lease not yet expired. Nothing changed.
    Held,
    /// A token that is not the key's current lease (superseded, unlocked,
    /// never granted). Nothing changed.
    StaleToken,
    /// A node's `--max-memory` would be exceeded. Nothing is evicted: erase
    /// keys, raise the cap or add nodes. If the coordinator was full nothing
    /// was stored; if a replica was, the write may stay on the others, as for
    /// [`ErrorKind::Quorum`].
    Full,
    /// A kind this build does not know (sent by a newer node).
    Other,
}

impl Error {
    /// A request this node refuses as invalid or not allowed, saying why:
    /// [`Error::Refused`] from "this node".
    pub(crate) fn refused_here(message: impl Into<String>) -> Error {
        Error::Refused {
            peer: "this node".into(),
            message: message.into(),
        }
    }

    /// What kind of failure this is (see [`ErrorKind`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::BadAddress { .. } => ErrorKind::BadAddress,
            Error::Unreachable { .. } | Error::NoAnswer { .. } => ErrorKind::Unreachable,
            Error::Rpc { .. } | Error::ChunkNotStored { .. } | Error::ChunkNotFetched { .. } => {
                ErrorKind::Rpc
            }
            Error::Refused { .. } => ErrorKind::Refused,
            Error::TooLarge { .. } | Error::BatchFull { .. } => ErrorKind::TooLarge,
            Error::TooManyHops { .. } => ErrorKind::TooManyHops,
            Error::Quorum { .. } => ErrorKind::Quorum,
            Error::ReadQuorum { .. } | Error::ListIncomplete { .. } => ErrorKind::ReadQuorum,
            Error::Expired => ErrorKind::Expired,
            Error::NoOwner | Error::NoMembers { .. } => ErrorKind::NoOwner,
            Error::Joining => ErrorKind::Joining,
            Error::Paused => ErrorKind::Paused,
            Error::ShuttingDown => ErrorKind::ShuttingDown,
            Error::Storage(_) => ErrorKind::Storage,
            Error::Unauthorized(_) => ErrorKind::Unauthorized,
            Error::Bind { .. }
            | Error::BadSecret(_)
            | Error::BadTls(_)
            | Error::HttpBind { .. }
            | Error::NotFound { .. }
            | Error::SelfJoin { .. }
            | Error::Timeout(_)
            | Error::KeyTooLong { .. }
            | Error::BadOptions { .. }
            | Error::UploadTooSlow { .. } => ErrorKind::Local,
            Error::Input(_) | Error::Output(_) | Error::Io(_) => ErrorKind::Io,
            Error::BadManifest { .. } | Error::MissingChunk { .. } | Error::CorruptChunk { .. } => {
                ErrorKind::Damaged
            }
            Error::Streamed { .. } => ErrorKind::Streamed,
            Error::Changed { .. } => ErrorKind::Changed,
            Error::NoSuchUpload { .. } => ErrorKind::NoSuchUpload,
            Error::Exists { .. } => ErrorKind::Exists,
            Error::Held { .. } => ErrorKind::Held,
            Error::StaleToken { .. } => ErrorKind::StaleToken,
            Error::Full { .. } => ErrorKind::Full,
            Error::Remote { kind, .. } => *kind,
        }
    }

    /// This error as `peer` answering with it looks to the caller: its kind
    /// and message, as they cross the wire. The simulation's transport uses it
    /// too, so the node sees the same errors from peers in both.
    pub fn into_remote(self, peer: &crate::NodeAddr) -> Error {
        match self {
            remote @ Error::Remote { .. } => remote,
            other => Error::Remote {
                peer: peer.to_string(),
                kind: other.kind(),
                message: other.to_string(),
            },
        }
    }

    /// Whether the request may be retried as it is, here or at another node,
    /// with a fair chance of success: the ring was changing, catching up,
    /// paused or busy, or the outcome of a call is unknown. Every write is
    /// versioned, so repeating one is safe.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.kind(),
            ErrorKind::Unreachable
                | ErrorKind::Rpc
                | ErrorKind::TooManyHops
                | ErrorKind::Quorum
                | ErrorKind::ReadQuorum
                | ErrorKind::Expired
                | ErrorKind::NoOwner
                | ErrorKind::Joining
                | ErrorKind::Paused
                | ErrorKind::ShuttingDown
        )
    }
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
