//! Anti-entropy: two replicas compare bucket digests of the keys they share
//! ([`crate::antientropy`]) and exchange the entries of the buckets that
//! differ; a worker runs it after every ring change and one peer at a time
//! otherwise, and delivers hinted writes to peers that answer again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};

use super::Node;
use crate::addr::NodeAddr;
use crate::antientropy::{self, Digests, Rounds, bucket_of};
use crate::error::{Error, Result};
use crate::membership::Status;
use crate::peer::{BatchLimit, Entry, Reply, Request};
use crate::ring::Ring;
use crate::transport::unexpected;
use crate::version::Version;

/// The longest a periodic anti-entropy round waits for the store to be
/// quiet (see [`Node::anti_entropy_worker`]).
const MAX_DEFERRAL: Duration = Duration::from_secs(30);

/// `reconcile` calls one exchange keeps in flight.
const RECONCILE_IN_FLIGHT: usize = 4;

/// The most buckets one `reconcile` names. The peer answers with its newer
/// entries of those buckets, refusing an answer past what one reply carries:
/// a node that holds little (one coming back empty) would otherwise name
/// every differing bucket in one call, and its peer, holding them all, could
/// not answer it. A 64th of the circle per call keeps answers to a 64th of
/// what the two share.
const BUCKETS_PER_RECONCILE: usize = antientropy::BUCKETS / 64;

/// What one anti-entropy exchange with a peer did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Synced {
    /// Entries we sent (of the buckets that differed).
    pub sent: usize,
    /// Entries of ours that the peer's newer copies replaced (or added).
    pub repaired: usize,
}

impl Node {
    /// Digests of our copies of the keys we share with `peer`, from the
    /// store's range digests (no key is read).
    pub(super) fn digests_with(
        &self,
        ring: &Arc<Ring<NodeAddr>>,
        peer: &NodeAddr,
    ) -> Result<Digests> {
        if self.store.usage() == crate::store::Usage::default() {
            // Nothing held: nothing to add up (a node that just joined a
            // growing ring skips making cuts for every new ring).
            return Ok(Digests::new());
        }
        let ranges = self.store.range_digests(&self.cuts.of(ring))?;
        Ok(antientropy::pair_digests(
            ring,
            self.config.replicas,
            &self.me,
            peer,
            &ranges,
        ))
    }

    /// The ring to compare with `caller`, which must be a member in our view:
    /// comparing with a node we do not count (one coming back after being
    /// declared dead) would find nothing shared, and it would wrongly conclude
    /// that it has caught up.
    pub(super) fn ring_shared_with(&self, caller: &NodeAddr) -> Result<Arc<Ring<NodeAddr>>> {
        let view = self.view.read();
        if view.ring.contains(caller) {
            Ok(view.ring.clone())
        } else {
            Err(Error::Refused {
                peer: self.me.to_string(),
                message: format!(
                    "{caller} is not a member in this node's view yet; retry after gossip"
                ),
            })
        }
    }

    /// Answers `diff_buckets`: where our copies shared with `caller` differ.
    pub fn diff_buckets(&self, caller: &NodeAddr, digests: &[i64]) -> Result<Vec<i32>> {
        let ring = self.ring_shared_with(caller)?;
        Ok(self.digests_with(&ring, caller)?.differing(digests))
    }

    /// Our keys shared with `peer` in `buckets`, grouped by bucket.
    pub(super) fn shared_keys_in(
        &self,
        ring: &Ring<NodeAddr>,
        peer: &NodeAddr,
        buckets: &BTreeSet<usize>,
    ) -> Result<BTreeMap<usize, Vec<Vec<u8>>>> {
        let mut keys: BTreeMap<usize, Vec<Vec<u8>>> = BTreeMap::new();
        // Only the listing groups that hold those buckets are read.
        let groups = buckets.iter().fold(0u64, |groups, &bucket| {
            groups | 1 << antientropy::group_of_bucket(bucket)
        });
        self.store.scan_groups(groups, |key, _, _| {
            let bucket = bucket_of(key);
            if buckets.contains(&bucket)
                && antientropy::shares(ring, self.config.replicas, key, &self.me, peer)
            {
                keys.entry(bucket).or_default().push(key.to_vec());
            }
            true
        })?;
        Ok(keys)
    }

    /// Answers `reconcile`: keeps the newer of each entry sent, and returns our
    /// entries in `buckets` (shared with `caller`) that are newer than the
    /// caller's or that it lacks.
    pub fn reconcile(
        &self,
        caller: &NodeAddr,
        buckets: &[i32],
        entries: Vec<Entry>,
    ) -> Result<Vec<Entry>> {
        let ring = self.ring_shared_with(caller)?;
        self.admit_batch("reconcile", &entries)?;
        let mut theirs: BTreeMap<Vec<u8>, Version> = BTreeMap::new();
        let mut repaired = 0;
        for entry in entries {
            self.clock.observe(entry.stored.version)?;
            repaired += usize::from(self.merge_copy(
                &entry.key,
                entry.stored.value.as_deref(),
                entry.stored.version,
            )?);
            theirs.insert(entry.key, entry.stored.version);
        }
        self.metrics.repaired_by_anti_entropy(repaired);
        if repaired > 0 {
            log::info!("anti-entropy: repaired {repaired} keys from {caller}");
        }
        let buckets = antientropy::valid_buckets(buckets);
        let mut answer = crate::peer::BoundedReply::new("reconcile", self.config.max_reply_bytes());
        for key in self
            .shared_keys_in(&ring, caller, &buckets)?
            .into_values()
            .flatten()
        {
            if let Some(stored) = self.store.get(&key)?
                && theirs.get(&key).is_none_or(|v| *v < stored.version)
            {
                answer.push(Entry::new(key, stored))?;
            }
        }
        Ok(answer.into_entries())
    }

    /// Brings our copies and `peer`'s copies of the keys we share to the same
    /// versions: compare bucket digests, then exchange entries of the buckets
    /// that differ, in bounded batches. Returns how many entries we sent and
    /// how many of ours the peer's answers repaired.
    pub async fn sync_with(self: &Arc<Self>, peer: &NodeAddr) -> Result<Synced> {
        let started = self.now_ms();
        let synced = self.exchange_with(peer).await?;
        // What tombstone collection waits for (see `tombstones`).
        self.synced_at.lock().insert(peer.clone(), started);
        Ok(synced)
    }

    /// [`Node::sync_with`], without noting that it succeeded.
    async fn exchange_with(self: &Arc<Self>, peer: &NodeAddr) -> Result<Synced> {
        let ring = self.placement();
        let digests = self.digests_with(&ring, peer)?.to_wire();
        let request = Request::DiffBuckets {
            caller: self.me.clone(),
            digests,
        };
        let differing = match self.call(peer, request, self.config.rpc_timeout).await? {
            Reply::Buckets(buckets) => buckets,
            other => return Err(unexpected(peer, &other)),
        };
        if differing.is_empty() {
            return Ok(Synced::default());
        }
        let wanted = antientropy::valid_buckets(&differing);
        let mut keys = self.shared_keys_in(&ring, peer, &wanted)?;
        let limit = BatchLimit {
            bytes: self.config.handoff_batch_bytes,
            entries: self.config.handoff_batch_entries,
        };
        let mut synced = Synced::default();
        let mut batch_buckets = Vec::new();
        let mut batch = Vec::new();
        let mut bytes = 0;
        // Batches are read here while earlier ones are in flight, as a
        // handoff's are: a replica that missed many writes is repaired at the
        // speed of the copies, not of one round trip per batch.
        let mut in_flight = FuturesUnordered::new();
        let buckets: Vec<usize> = wanted.into_iter().collect();
        for (i, bucket) in buckets.iter().enumerate() {
            for key in keys.remove(bucket).unwrap_or_default() {
                if let Some(stored) = self.store.get(&key)? {
                    let entry = Entry::new(key, stored);
                    bytes += entry.bytes();
                    batch.push(entry);
                }
            }
            batch_buckets.push(*bucket as i32);
            let last = i + 1 == buckets.len();
            let covered = batch_buckets.len() >= BUCKETS_PER_RECONCILE;
            if last || covered || limit.full(bytes, batch.len()) {
                synced.sent += batch.len();
                let request = Request::Reconcile {
                    caller: self.me.clone(),
                    buckets: std::mem::take(&mut batch_buckets),
                    entries: std::mem::take(&mut batch),
                };
                while in_flight.len() >= RECONCILE_IN_FLIGHT {
                    if let Some(answer) = in_flight.next().await {
                        synced.repaired += self.take_newer(peer, answer)?;
                    }
                }
                in_flight.push(self.call(peer, request, self.config.rpc_timeout));
                bytes = 0;
            }
        }
        while let Some(answer) = in_flight.next().await {
            synced.repaired += self.take_newer(peer, answer)?;
        }
        Ok(synced)
    }

    /// Keeps the newer copies a peer answered a `reconcile` with; returns how
    /// many replaced (or added to) ours.
    fn take_newer(&self, peer: &NodeAddr, answer: Result<Reply>) -> Result<usize> {
        match answer? {
            Reply::Entries(newer) => {
                let repaired = self.absorb(newer)?;
                self.metrics.repaired_by_anti_entropy(repaired);
                Ok(repaired)
            }
            other => Err(unexpected(peer, &other)),
        }
    }

    /// Background worker: after every ring change (and while catching up),
    /// a full anti-entropy round with every peer; otherwise one peer in turn
    /// every interval. Also delivers hints to peers that answer again.
    ///
    /// While the store takes writes, two replicas' digests differ by the
    /// copies still in flight between them, whatever else they agree on, and
    /// a periodic exchange would send most of their keys for nothing (under
    /// a steady load every bucket changes between two rounds): a periodic
    /// round waits for an interval in which this node took no write, for at
    /// most [`MAX_DEFERRAL`], so a node under load still compares that
    /// often. Rounds after a ring change or while catching up never wait.
    pub(super) async fn anti_entropy_worker(self: Arc<Self>) {
        let mut rounds = Rounds::new();
        let mut writes = self.store.writes();
        let mut deferred = Duration::ZERO;
        while !self.stop_requested() {
            let round = rounds.next(self.epoch(), self.syncing(), &self.peers());
            let interval = self.config.anti_entropy_interval;
            let took = std::mem::replace(&mut writes, self.store.writes());
            if !round.full && took != writes && deferred < MAX_DEFERRAL {
                deferred += interval;
                self.deliver_hints();
                self.wait_past(round.epoch, interval).await;
                continue;
            }
            deferred = Duration::ZERO;
            let mut complete = self.ready();
            let mut repaired = 0;
            for peer in &round.peers {
                if self.epoch() != round.epoch {
                    // The ring changed: this round can no longer show that
                    // we caught up, and the next one compares on the new
                    // ring. (Members confirmed one at a time would otherwise
                    // cost a full round each: 64 members, 4,000 calls a node.)
                    complete = false;
                    break;
                }
                match self.sync_with(peer).await {
                    Ok(synced) => {
                        if synced.sent > 0 {
                            log::debug!(
                                "anti-entropy with {peer}: {} entries compared",
                                synced.sent
                            );
                        }
                        if synced.repaired > 0 {
                            log::info!(
                                "anti-entropy: repaired {} keys from {peer}",
                                synced.repaired
                            );
                        }
                        repaired += synced.repaired;
                    }
                    Err(e) => {
                        complete = false;
                        self.note_failure(peer, &e);
                    }
                }
            }
            let settled = self.epoch() == round.epoch && self.lease_held();
            let finished = rounds.finish(&round, complete, settled);
            if finished.caught_up && self.syncing.swap(false, Ordering::AcqRel) {
                if repaired > 0 {
                    log::info!(
                        "{}: caught up with every replica ({repaired} keys repaired in the last round)",
                        self.me
                    );
                } else {
                    log::info!("{}: caught up with every replica", self.me);
                }
            } else if repaired > 0 && round.peers.len() > 1 {
                log::info!(
                    "anti-entropy round with {} peers done: {repaired} keys repaired",
                    round.peers.len()
                );
            }
            self.deliver_hints();
            // A round that could not finish catching up (a peer failed, or
            // the peers do not confirm our ring yet) is tried again soon.
            let pause = if finished.retry_soon {
                Duration::from_millis(20).max(self.config.failure_timeout / 100)
            } else {
                interval
            };
            // Only writes taken from here on can defer the next round (the
            // repairs of this one do not).
            writes = self.store.writes();
            self.wait_past(round.epoch, pause).await;
        }
    }

    /// Sends hinted keys (with their current copies) to peers that are alive.
    pub(super) fn deliver_hints(self: &Arc<Self>) {
        for peer in self.replicator.hinted_peers() {
            let alive = self
                .view
                .read()
                .swim
                .membership()
                .status(&peer)
                .is_some_and(Status::serves);
            if !alive {
                continue;
            }
            for key in self.replicator.take_hints(&peer) {
                match self.store.get(&key) {
                    Ok(Some(stored)) => self.replicator.send(&peer, Entry::new(key, stored), None),
                    Ok(None) => {}
                    Err(e) => log::warn!("reading a hinted key failed: {e}"),
                }
            }
        }
    }
}
