//! What nodes say to each other, as domain types: one [`Request`] per
//! node-to-node call and its [`Reply`]. The node speaks only these; the
//! [`crate::transport`] carries them (as Thrift between processes, or in
//! memory in the simulation).
//!
//! # Bounds
//!
//! Every list a peer sends is capped here, well above what honest nodes send
//! (handoff and anti-entropy batches hold 2,000 entries or 4 MiB by default,
//! a ring's table a row per member) and far below the frame walker's
//! 1,000,000 elements: a list over its cap is refused whole, before any of it
//! is applied. Replies (`peek`, `reconcile`) are capped in count by the same
//! numbers and in bytes by [`crate::config::Config::max_reply_bytes`], the
//! most one message may carry; a repeated key is served once.

use crate::addr::NodeAddr;
use crate::membership::MemberState;
use crate::store::Stored;
use crate::version::Version;

/// The most entries in one `absorb`, `replicate` or `reconcile`, or in a
/// `peek` or `reconcile` reply: 32 times the default batch.
pub const MAX_ENTRIES: usize = 65_536;

/// The most keys one `peek` may name.
pub const MAX_KEYS: usize = 65_536;

/// The most member rows in one `gossip` push (and in a member table, see
/// [`crate::membership::MAX_ROWS`]).
pub const MAX_ROWS: usize = crate::membership::MAX_ROWS;

/// Refuses a list of `len` elements over `cap`, naming what it was.
pub fn within(what: &str, len: usize, cap: usize) -> crate::error::Result<()> {
    if len > cap {
        return Err(crate::error::Error::refused_here(format!(
            "{what}: {len} elements, at most {cap} are taken per request; send smaller batches (nothing was changed)"
        )));
    }
    Ok(())
}

/// A reply's entries, refused as soon as they pass [`MAX_ENTRIES`] or
/// `limit` key and value bytes (a reply cut short would read as complete).
#[derive(Debug)]
pub struct BoundedReply {
    what: &'static str,
    limit: usize,
    bytes: usize,
    entries: Vec<Entry>,
}

impl BoundedReply {
    /// An empty reply to `what`, of at most `limit` bytes.
    pub fn new(what: &'static str, limit: usize) -> Self {
        BoundedReply {
            what,
            limit,
            bytes: 0,
            entries: Vec::new(),
        }
    }

    /// Adds `entry`, or refuses the whole reply.
    pub fn push(&mut self, entry: Entry) -> crate::error::Result<()> {
        self.bytes = self.bytes.saturating_add(entry.bytes());
        if self.bytes > self.limit || self.entries.len() >= MAX_ENTRIES {
            return Err(crate::error::Error::refused_here(format!(
                "{}: the reply would pass {} entries or {} bytes, the most one reply carries; ask for fewer keys or buckets",
                self.what, MAX_ENTRIES, self.limit
            )));
        }
        self.entries.push(entry);
        Ok(())
    }

    /// The entries.
    pub fn into_entries(self) -> Vec<Entry> {
        self.entries
    }
}

/// A key's copy as it moves between nodes: a value or a tombstone, with the
/// version of the write that made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The key.
    pub key: Vec<u8>,
    /// The copy.
    pub stored: Stored,
}

impl Entry {
    /// An entry for `key`.
    pub fn new(key: Vec<u8>, stored: Stored) -> Self {
        Entry { key, stored }
    }

    /// Key and value bytes, for batch limits.
    pub fn bytes(&self) -> usize {
        self.key.len() + self.stored.value.as_ref().map_or(0, Vec::len)
    }
}

/// Limits of one batch (handoff, repair): whichever comes first.
#[derive(Clone, Copy, Debug)]
pub struct BatchLimit {
    /// Bytes of keys and values.
    pub bytes: usize,
    /// Entries.
    pub entries: usize,
}

impl BatchLimit {
    /// Whether a batch of `entries` entries and `bytes` bytes is full.
    pub fn full(&self, bytes: usize, entries: usize) -> bool {
        bytes >= self.bytes || entries >= self.entries
    }
}

/// One call from a node to a peer.
#[derive(Clone, Debug)]
pub enum Request {
    /// A new node announces itself; the answer is the receiver's table.
    Enter(MemberState),
    /// Push-pull membership: our rows; the answer is the receiver's table.
    Gossip(Vec<MemberState>),
    /// Indirect probe: ping `0` yourself and say whether it answered.
    Probe(NodeAddr),
    /// A read forwarded toward the key's coordinator.
    Read {
        /// The key.
        key: Vec<u8>,
        /// Forwards so far, this one included.
        hops: i8,
    },
    /// A write (or erase, `value: None`) forwarded toward its coordinator.
    Write {
        /// The key.
        key: Vec<u8>,
        /// The value, or `None` to erase.
        value: Option<Vec<u8>>,
        /// Forwards so far, this one included.
        hops: i8,
        /// The write's version, taken once by the node the client called.
        version: Version,
        /// When the forwarding node stops waiting (wall microseconds).
        expires: i64,
    },
    /// A create-only write or an append forwarded toward the key's owner,
    /// which serialises them per key (`node::conditional`).
    Conditional {
        /// The key.
        key: Vec<u8>,
        /// The client's value, or the suffix to append (raw, not sealed).
        value: Vec<u8>,
        /// The client's options.
        options: crate::value::WriteOptions,
        /// An append (else a create-only write).
        append: bool,
        /// Forwards so far, this one included.
        hops: i8,
    },
    /// `lock`, `unlock` or `renew` forwarded toward the key's owner, which
    /// decides them one at a time per key (`node::lease`).
    Lease {
        /// The key (not its lease record's key).
        key: Vec<u8>,
        /// What is asked.
        op: crate::lease::Op,
        /// Forwards so far, this one included.
        hops: i8,
    },
    /// View agreement: our ring id (and who we are); the answer is theirs.
    Heartbeat {
        /// The caller's ring id.
        ring: u64,
        /// The caller.
        caller: NodeAddr,
    },
    /// A coordinator's quorum read of the receiver's own copy.
    ReplicaRead {
        /// The key.
        key: Vec<u8>,
        /// The coordinator's ring id.
        ring: u64,
    },
    /// A coordinator's replication of writes, acknowledged only by a replica
    /// whose ring id is `ring`.
    Replicate {
        /// The writes.
        entries: Vec<Entry>,
        /// The coordinator's ring id.
        ring: u64,
    },
    /// Anti-entropy step 1: where do our digests of shared keys differ?
    DiffBuckets {
        /// The calling node.
        caller: NodeAddr,
        /// One digest per bucket.
        digests: Vec<i64>,
    },
    /// Anti-entropy step 2: keep the newer of these; send back yours.
    Reconcile {
        /// The calling node.
        caller: NodeAddr,
        /// The buckets compared.
        buckets: Vec<i32>,
        /// The caller's entries in those buckets.
        entries: Vec<Entry>,
    },
    /// Take these entries (replication, handoff, repair).
    Absorb(Vec<Entry>),
}

impl Request {
    /// The Thrift method this request travels as (for logs and for the
    /// fault-injection switch).
    pub fn method(&self) -> &'static str {
        match self {
            Request::Enter(_) => "enter",
            Request::Gossip(_) => "gossip",
            Request::Probe(_) => "probe",
            Request::Read { .. } => "relay_fetch",
            Request::Write { value: Some(_), .. } => "relay_store",
            Request::Write { value: None, .. } => "relay_erase",
            Request::Conditional { .. } => "relay_write_with",
            Request::Lease { .. } => "relay_lease",
            Request::Heartbeat { .. } => "heartbeat",
            Request::ReplicaRead { .. } => "replica_read",
            Request::Replicate { .. } => "replicate",
            Request::DiffBuckets { .. } => "diff_buckets",
            Request::Reconcile { .. } => "reconcile",
            Request::Absorb(_) => "absorb",
        }
    }
}

/// A peer's answer to a [`Request`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Done, nothing to say (ping, write, absorb).
    Done,
    /// A member table (enter, gossip).
    Members(Vec<MemberState>),
    /// Whether the probed node answered.
    Probed(bool),
    /// The coordinator's copy of a key: `None` when it has never seen it, a
    /// tombstone when the key was erased.
    Found(Option<Stored>),
    /// Entries (peek, reconcile).
    Entries(Vec<Entry>),
    /// Bucket numbers (diff_buckets).
    Buckets(Vec<i32>),
    /// A ring id (heartbeat).
    Ring(u64),
    /// A value's size after an append (0 after a create-only write).
    Size(u64),
    /// A lease as granted, renewed or released.
    Lease(crate::lease::Lease),
    /// A replica's copy for a quorum read.
    Replica {
        /// Its copy (`None`: never seen).
        copy: Option<Stored>,
        /// Whether it vouches for the copy.
        trusted: bool,
        /// Its ring id.
        ring: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, bytes: usize) -> Entry {
        Entry::new(
            key.as_bytes().to_vec(),
            Stored {
                value: Some(vec![0; bytes]),
                version: Version::default(),
            },
        )
    }

    #[test]
    fn a_reply_past_its_byte_limit_is_refused_not_cut_short() {
        let mut reply = BoundedReply::new("peek", 100);
        reply.push(entry("a", 50)).unwrap();
        reply.push(entry("b", 40)).unwrap();
        let refused = reply.push(entry("c", 40)).unwrap_err().to_string();
        assert!(refused.contains("peek: the reply would pass"), "{refused}");
    }

    #[test]
    fn a_list_over_its_cap_is_refused_with_what_and_how_many() {
        assert!(within("absorb", MAX_ENTRIES, MAX_ENTRIES).is_ok());
        let refused = within("absorb", MAX_ENTRIES + 1, MAX_ENTRIES)
            .unwrap_err()
            .to_string();
        assert!(refused.contains("at most 65536"), "{refused}");
    }

    #[test]
    fn a_batch_is_full_at_either_limit() {
        let limit = BatchLimit {
            bytes: 100,
            entries: 3,
        };
        assert!(!limit.full(99, 2));
        assert!(limit.full(100, 1));
        assert!(limit.full(1, 3));
    }
}
