//! A client's read: served at once by an owner that may answer alone, else
//! forwarded to the key's owner (or the next replica), which asks a read
//! quorum, lets the newest copy win ([`crate::quorum`]) and repairs the rest.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::time::Instant;

use super::{Node, PEEK};
use crate::addr::NodeAddr;
use crate::error::{Error, Result};
use crate::peer::{Entry, Reply, Request};
use crate::quorum::{ReadTally, newest};
use crate::store::Stored;
use crate::transport::unexpected;

impl Node {
    /// Serves a client's read at once if nothing needs waiting for: this
    /// node owns the key, trusts its copy, and holds one (a tombstone
    /// counts). `None` means the read needs [`Node::fetch`]. The value is
    /// the client's (opened, [`Node::open`]), except for a [`PEEK`], which
    /// answers the stored bytes.
    pub fn fetch_now(&self, key: &[u8], hops: i8) -> Option<Result<Option<Vec<u8>>>> {
        if hops == PEEK {
            return Some(self.store.get(key).map(|s| s.and_then(|s| s.value)));
        }
        if !self.ready() {
            return Some(Err(Error::Joining));
        }
        let ring = self.placement();
        let replicas = ring.owners(key, self.config.replicas);
        if replicas.first() != Some(&&self.me) || !self.reads_alone() {
            return None;
        }
        match self.store.get(key) {
            Ok(Some(stored)) => Some(match stored.value {
                Some(value) => self.open(key, value).map(|o| Some(o.value)),
                None => Ok(None),
            }),
            // A miss asks the other replicas.
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }

    /// Whether an owner's read may be answered by its own copy alone: only
    /// where one copy meets every write quorum (one replica, or the read
    /// quorum set so), and the node trusts its copies. With the defaults
    /// (N=3, W=2) a read always hears from two replicas that vouch for their
    /// copies: an owner cannot know alone that no write was acknowledged
    /// without it (peers that declared it dead, a stand-in coordinator).
    pub(super) fn reads_alone(&self) -> bool {
        self.read_quorum() <= 1 && self.trusts_itself()
    }

    /// Reads `key` for a client: coordinated by its owner (or, when the owner
    /// cannot be reached, the next replica). `hops` counts forwards so far.
    /// The value is the client's ([`Node::open`]).
    pub async fn fetch(self: &Arc<Self>, key: &[u8], hops: i8) -> Result<Option<Vec<u8>>> {
        match self.fetch_copy(key, hops).await?.and_then(|s| s.value) {
            Some(value) => Ok(Some(self.open(key, value)?.value)),
            None => Ok(None),
        }
    }

    /// A stored value opened for a client ([`crate::value::open`]): its
    /// bytes as written, its metadata. Damaged stored bytes are a
    /// [`Error::Storage`] naming the key.
    pub fn open(&self, key: &[u8], stored: Vec<u8>) -> Result<crate::value::Opened> {
        crate::value::open(stored, self.config.max_value_bytes).map_err(|reason| {
            Error::Storage(format!(
                "the stored value of `{}` cannot be read: {reason}",
                String::from_utf8_lossy(key)
            ))
        })
    }

    /// Reads `key`'s newest copy, tombstone included, as a forwarded read
    /// answers it: `None` when no replica asked has ever seen the key. The
    /// value is as stored (sealed).
    pub async fn fetch_copy(self: &Arc<Self>, key: &[u8], hops: i8) -> Result<Option<Stored>> {
        if hops == PEEK {
            return self.store.get(key);
        }
        if !self.ready() {
            return Err(Error::Joining);
        }
        let ring = self.placement();
        let replicas = ring.owners(key, self.config.replicas);
        if replicas.is_empty() {
            return Err(Error::NoOwner);
        }
        if self.coordinates(&replicas, hops) {
            let owner = replicas[0] == &self.me;
            return self.settled_read(key, &replicas, owner).await;
        }
        for (i, &target) in replicas.iter().enumerate() {
            if *target == self.me {
                return self.settled_read(key, &replicas, i == 0).await;
            }
            let request = Request::Read {
                key: key.to_vec(),
                hops: hops + 1,
            };
            match self.call(target, request, self.config.rpc_timeout).await {
                // A key we still hold but no longer replicate is on its way
                // to its owner; the newer of its copy and ours is the answer
                // (a tombstone there wins over an older value here).
                Ok(Reply::Found(theirs)) => return Ok(newest(theirs, self.store.get(key)?)),
                Ok(other) => return Err(unexpected(target, &other)),
                Err(e) if self.try_next(target, &e) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::NoOwner)
    }

    /// [`Node::coordinate_read`], given a moment to settle: right after a
    /// ring change the replicas catch up (anti-entropy, heartbeats) before
    /// they vouch for their copies again, which takes milliseconds; a read
    /// that arrives then waits for it (up to half the failure timeout) rather
    /// than fail.
    pub(super) async fn settled_read(
        self: &Arc<Self>,
        key: &[u8],
        replicas: &[&NodeAddr],
        owner: bool,
    ) -> Result<Option<Stored>> {
        let deadline = Instant::now() + self.config.failure_timeout / 2;
        let mut answer = self.coordinate_read(key, replicas, owner).await;
        while matches!(answer, Err(Error::ReadQuorum { .. })) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
            // The ring may have changed meanwhile: place the key again.
            let ring = self.placement();
            let replicas = ring.owners(key, self.config.replicas);
            if !replicas.contains(&&self.me) && replicas.first() != Some(&&self.me) {
                return Err(Error::ReadQuorum {
                    vouched: 0,
                    needed: self.read_quorum(),
                });
            }
            let owner = replicas.first() == Some(&&self.me);
            answer = self.coordinate_read(key, &replicas, owner).await;
        }
        answer
    }

    /// Serves a read here. An owner that trusts its copy answers alone;
    /// otherwise (a miss, catching up, a stand-in for the owner, a read quorum
    /// above one) the other replicas are asked at once, the newest copy wins,
    /// at least [`Node::read_quorum`] replicas must have answered, and stale
    /// replicas are repaired with it.
    pub(super) async fn coordinate_read(
        self: &Arc<Self>,
        key: &[u8],
        replicas: &[&NodeAddr],
        owner: bool,
    ) -> Result<Option<Stored>> {
        let local = self.store.get(key)?;
        let holds = replicas.contains(&&self.me);
        let trusted = holds && self.trusts_itself();
        if owner && trusted && self.reads_alone() && local.is_some() {
            log::trace!("read {}: owner alone", String::from_utf8_lossy(key));
            return Ok(local);
        }
        // Never fewer than every write quorum needs, however few replicas
        // this view holds: a shrunken view must not lower the bar.
        let quorum = self.read_quorum();
        let mut tally = ReadTally::new(quorum, local, trusted);
        let ring = self.ring_id();
        let mut asks: FuturesUnordered<_> = replicas
            .iter()
            .filter(|p| ***p != self.me)
            .map(|&peer| async move {
                let request = Request::ReplicaRead {
                    key: key.to_vec(),
                    ring,
                };
                (
                    peer,
                    self.call(peer, request, self.config.rpc_timeout).await,
                )
            })
            .collect();
        while let Some((peer, reply)) = asks.next().await {
            match reply {
                Ok(Reply::Replica {
                    copy,
                    trusted,
                    ring: theirs,
                }) => {
                    self.note_view(peer, theirs);
                    tally.answer(peer, copy, trusted);
                }
                Ok(other) => log::debug!("{}", unexpected(peer, &other)),
                Err(e) => self.note_failure(peer, &e),
            }
        }
        log::trace!(
            "read {}: {} of {quorum} answered (trusted self: {trusted}), newest {:?}",
            String::from_utf8_lossy(key),
            tally.vouched(),
            tally.best().map(|b| b.version)
        );
        let verdict = tally.verdict(holds)?;
        if let Some(best) = &verdict.newest {
            self.clock.observe(best.version)?;
            if verdict.repair_here {
                self.merge_copy(key, best.value.as_deref(), best.version)?;
            }
            self.metrics
                .repaired_by_read(usize::from(verdict.repair_here) + verdict.repair.len());
            for peer in &verdict.repair {
                let entry = Entry::new(key.to_vec(), best.clone());
                self.replicator.send(peer, entry, None);
            }
        }
        Ok(verdict.newest)
    }
}

/// A client's `fetch` or `get` of a streamed value is told so, never
/// answered with the manifest (internal bytes): [`Error::Streamed`] names
/// the methods that read it. A 16-byte compare of the value in hand, and a
/// decode only when it matches (see [`crate::stream::streamed_manifest`]).
/// Forwards between nodes (`relay_fetch`) carry the manifest as it is.
pub(crate) fn refuse_streamed(key: &[u8], value: Option<&[u8]>) -> Result<()> {
    match value.and_then(|value| crate::stream::streamed_manifest(key, value)) {
        Some(manifest) => Err(Error::Streamed {
            key: String::from_utf8_lossy(key).into_owned(),
            size: manifest.size,
        }),
        None => Ok(()),
    }
}
