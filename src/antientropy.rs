//! Anti-entropy planning: digests that summarise which versions a node holds,
//! bucket by bucket, so two replicas find where they differ without sending
//! every key, and the [`Rounds`] that say whom a node compares with when.
//! Pure; the node's repair worker (`node/repair.rs`) runs it.
//!
//! Keys fall into [`BUCKETS`] buckets by the top bits of their ring position.
//! A bucket's digest is the XOR of a 64-bit fingerprint of each (key, version,
//! tombstone) in it, so it does not depend on scan order and two nodes holding
//! the same copies compute the same digest. Only keys that both nodes replicate
//! are summarised.
//!
//! A node does not read its keys to make them: the store keeps the XOR of the
//! fingerprints by range of ring position as writes land
//! ([`crate::store::Store::range_digests`]), cut at every bucket start and
//! every point of the ring ([`cuts`]), so every key of a range has the same
//! preference list; [`pair_digests`] adds up the ranges two nodes share.

use std::collections::BTreeSet;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::addr::NodeAddr;
use crate::ring::{Ring, key_position};
use crate::version::Version;

/// Number of buckets the key space is cut into for comparison.
pub const BUCKETS: usize = 4096;

/// The bucket a key falls into.
pub fn bucket_of(key: &[u8]) -> usize {
    bucket_at(key_position(key))
}

/// The bucket of a ring position.
pub fn bucket_at(position: u64) -> usize {
    (position >> (64 - BUCKETS.trailing_zeros())) as usize
}

/// The listing group ([`crate::store::list_group`]) that holds `bucket`:
/// buckets cut the circle finer, at the same top bits.
pub fn group_of_bucket(bucket: usize) -> usize {
    bucket >> (BUCKETS.trailing_zeros() - crate::store::LIST_GROUPS.trailing_zeros())
}

/// Where the store's digest ranges are cut for `ring`: every bucket start and
/// every point of the ring, sorted and deduplicated.
pub fn cuts<M: Clone + Ord + std::fmt::Display>(ring: &Ring<M>) -> Vec<u64> {
    // Both lists are sorted already: merged in one pass (a ring of 64 members
    // has 262,144 points, and every node makes its cuts at every ring change).
    let mut buckets = (0..BUCKETS as u64)
        .map(|b| b << (64 - BUCKETS.trailing_zeros()))
        .peekable();
    let mut points = ring.point_positions().peekable();
    let mut cuts = Vec::with_capacity(BUCKETS + ring.len() * ring.points_per_member());
    loop {
        let next = match (buckets.peek(), points.peek()) {
            (Some(&b), Some(&p)) if b <= p => buckets.next(),
            (_, Some(_)) => points.next(),
            (Some(_), None) => buckets.next(),
            (None, None) => break,
        };
        if let Some(cut) = next
            && cuts.last() != Some(&cut)
        {
            cuts.push(cut);
        }
    }
    cuts
}

/// [`cuts`] of the last ring asked for, made afresh only when the ring
/// changes, and the same `Arc` while it does not (which the store checks
/// nothing for: [`crate::store::Store::range_digests`]).
#[derive(Debug, Default)]
pub struct CutCache(Mutex<Option<CutsOf>>);

/// Cuts and the ring they were made for.
type CutsOf = (Arc<Ring<NodeAddr>>, Arc<Vec<u64>>);

impl CutCache {
    /// The cuts of `ring`.
    pub fn of(&self, ring: &Arc<Ring<NodeAddr>>) -> Arc<Vec<u64>> {
        let mut cached = self.0.lock();
        match &*cached {
            Some((made_for, cuts)) if Arc::ptr_eq(made_for, ring) => cuts.clone(),
            _ => {
                let cuts = Arc::new(cuts(ring));
                *cached = Some((ring.clone(), cuts.clone()));
                cuts
            }
        }
    }
}

/// Per-bucket digests of the keys `me` and `peer` both replicate in `ring`,
/// from the store's range digests (`(start, digest)` in position order, cut
/// at least at [`cuts`] of `ring`).
pub fn pair_digests(
    ring: &Ring<NodeAddr>,
    replicas: usize,
    me: &NodeAddr,
    peer: &NodeAddr,
    ranges: &[(u64, u64)],
) -> Digests {
    let mut digests = Digests::new();
    for &(start, digest) in ranges {
        // An empty range adds nothing: skip its preference list.
        if digest != 0 {
            let owners = ring.owners_at(start, replicas);
            if owners.contains(&me) && owners.contains(&peer) {
                digests.0[bucket_at(start)] ^= digest;
            }
        }
    }
    digests
}

/// SplitMix64's finaliser: spreads every input bit over the output.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A fingerprint of one copy of a key.
#[cfg(test)]
pub fn fingerprint(key: &[u8], version: Version, tombstone: bool) -> u64 {
    fingerprint_at(key_position(key), version, tombstone)
}

/// [`fingerprint`] of a copy of the key at ring position `position`.
pub fn fingerprint_at(position: u64, version: Version, tombstone: bool) -> u64 {
    let stamp = mix(version.stamp ^ (u64::from(version.origin) << 1) ^ u64::from(tombstone));
    mix(position ^ stamp)
}

/// Per-bucket digests of a set of copies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Digests(Vec<u64>);

impl Default for Digests {
    fn default() -> Self {
        Digests(vec![0; BUCKETS])
    }
}

impl Digests {
    /// Digests of nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one copy (the store adds up ranges instead; tests compare).
    #[cfg(test)]
    pub fn add(&mut self, key: &[u8], version: Version, tombstone: bool) {
        self.0[bucket_of(key)] ^= fingerprint(key, version, tombstone);
    }

    /// The digests as Thrift sends them.
    pub fn to_wire(&self) -> Vec<i64> {
        self.0.iter().map(|&d| d as i64).collect()
    }

    /// Buckets where `theirs` differs from ours. A peer sending the wrong number
    /// of buckets differs everywhere.
    pub fn differing(&self, theirs: &[i64]) -> Vec<i32> {
        if theirs.len() != BUCKETS {
            return (0..BUCKETS as i32).collect();
        }
        self.0
            .iter()
            .zip(theirs)
            .enumerate()
            .filter(|(_, (ours, theirs))| **ours != **theirs as u64)
            .map(|(bucket, _)| bucket as i32)
            .collect()
    }
}

/// Whether `a` and `b` both replicate `key` in `ring` (with `replicas` copies
/// per key): only such keys are compared between them.
pub fn shares(
    ring: &Ring<NodeAddr>,
    replicas: usize,
    key: &[u8],
    a: &NodeAddr,
    b: &NodeAddr,
) -> bool {
    let owners = ring.owners(key, replicas);
    owners.contains(&a) && owners.contains(&b)
}

/// The bucket numbers a peer named that exist, deduplicated and in order
/// (a peer's list is untrusted input).
pub fn valid_buckets(buckets: &[i32]) -> BTreeSet<usize> {
    buckets
        .iter()
        .filter_map(|&b| usize::try_from(b).ok())
        .filter(|&b| b < BUCKETS)
        .collect()
}

/// Which peers a node compares its copies with, round after round: every
/// peer after a ring change and while the node catches up (a "full" round,
/// which is what lets it vouch for its copies again), else one peer in turn.
#[derive(Debug, Default)]
pub struct Rounds {
    /// The ring epoch of the last full round that completed.
    synced: Option<u64>,
    turn: usize,
}

/// One round of comparisons.
#[derive(Debug, PartialEq, Eq)]
pub struct Round {
    /// The ring epoch the round was planned at.
    pub epoch: u64,
    /// Whether it compares with every peer.
    pub full: bool,
    /// The peers to compare with.
    pub peers: Vec<NodeAddr>,
}

/// What a finished round means.
#[derive(Debug, PartialEq, Eq)]
pub struct Finished {
    /// A full round completed on an unchanged ring: the node has caught up.
    pub caught_up: bool,
    /// The round should be tried again soon rather than after the interval
    /// (a full round could not complete).
    pub retry_soon: bool,
}

impl Rounds {
    /// No round run yet: the first one is full.
    pub fn new() -> Self {
        Self::default()
    }

    /// Plans the next round at ring `epoch`, given whether the node is
    /// catching up and its serving peers.
    pub fn next(&mut self, epoch: u64, catching_up: bool, peers: &[NodeAddr]) -> Round {
        let full = self.synced != Some(epoch) || catching_up;
        let peers = if full {
            peers.to_vec()
        } else {
            self.turn = self.turn.wrapping_add(1);
            peers
                .get(self.turn % peers.len().max(1))
                .cloned()
                .into_iter()
                .collect()
        };
        Round { epoch, full, peers }
    }

    /// Closes `round`. `complete`: every comparison succeeded (and the node
    /// had joined); `settled`: the ring is still at the round's epoch and the
    /// peers confirm the node's view (its lease holds).
    pub fn finish(&mut self, round: &Round, complete: bool, settled: bool) -> Finished {
        let caught_up = round.full && complete && settled;
        if caught_up {
            self.synced = Some(round.epoch);
        }
        Finished {
            caught_up,
            retry_soon: !caught_up && (!complete || round.full),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(stamp: u64) -> Version {
        Version { stamp, origin: 1 }
    }

    #[test]
    fn the_same_copies_in_any_order_give_the_same_digests() {
        let mut a = Digests::new();
        let mut b = Digests::new();
        for i in 0..1000u32 {
            a.add(&i.to_be_bytes(), v(u64::from(i)), false);
        }
        for i in (0..1000u32).rev() {
            b.add(&i.to_be_bytes(), v(u64::from(i)), false);
        }
        assert!(a.differing(&b.to_wire()).is_empty());
    }

    #[test]
    fn a_newer_version_or_a_tombstone_changes_only_its_bucket() {
        let mut base = Digests::new();
        base.add(b"k", v(1), false);
        base.add(b"other", v(1), false);
        let mut newer = Digests::new();
        newer.add(b"k", v(2), false);
        newer.add(b"other", v(1), false);
        let mut erased = Digests::new();
        erased.add(b"k", v(1), true);
        erased.add(b"other", v(1), false);
        let expected = vec![bucket_of(b"k") as i32];
        assert_eq!(base.differing(&newer.to_wire()), expected);
        assert_eq!(base.differing(&erased.to_wire()), expected);
    }

    #[test]
    fn a_missing_key_shows_as_a_difference() {
        let mut a = Digests::new();
        a.add(b"k", v(1), false);
        assert_eq!(
            a.differing(&Digests::new().to_wire()),
            vec![bucket_of(b"k") as i32]
        );
    }

    #[test]
    fn cuts_are_every_bucket_start_and_ring_point_sorted_once() {
        let ring = Ring::with_points(["a", "b", "c"].map(String::from), 300);
        let mut expected: Vec<u64> = (0..BUCKETS as u64)
            .map(|b| b << (64 - BUCKETS.trailing_zeros()))
            .chain(ring.point_positions())
            .collect();
        expected.sort_unstable();
        expected.dedup();
        assert_eq!(cuts(&ring), expected);
        assert_eq!(cuts(&Ring::<String>::new([])).len(), BUCKETS);
    }

    #[test]
    fn a_malformed_digest_list_differs_everywhere() {
        assert_eq!(Digests::new().differing(&[0; 3]).len(), BUCKETS);
    }

    fn peer(port: u16) -> NodeAddr {
        NodeAddr::new("127.0.0.1", port)
    }

    #[test]
    fn rounds_are_full_until_one_completes_then_one_peer_in_turn() {
        let peers = [peer(1), peer(2), peer(3)];
        let mut rounds = Rounds::new();
        let first = rounds.next(7, false, &peers);
        assert!(first.full);
        assert_eq!(first.peers.len(), 3);
        // A peer failed: tried again soon, and full again.
        let done = rounds.finish(&first, false, true);
        assert_eq!(
            done,
            Finished {
                caught_up: false,
                retry_soon: true
            }
        );
        let again = rounds.next(7, false, &peers);
        assert!(again.full);
        assert!(rounds.finish(&again, true, true).caught_up);
        let mut seen = BTreeSet::new();
        for _ in 0..3 {
            let round = rounds.next(7, false, &peers);
            assert!(!round.full);
            assert_eq!(round.peers.len(), 1);
            seen.insert(round.peers[0].clone());
            let done = rounds.finish(&round, true, true);
            assert_eq!(
                done,
                Finished {
                    caught_up: false,
                    retry_soon: false
                }
            );
        }
        assert_eq!(seen.len(), 3, "one peer in turn visits every peer");
    }

    #[test]
    fn a_ring_change_or_catching_up_makes_the_next_round_full() {
        let peers = [peer(1), peer(2)];
        let mut rounds = Rounds::new();
        let round = rounds.next(1, false, &peers);
        rounds.finish(&round, true, true);
        assert!(rounds.next(2, false, &peers).full, "the ring changed");
        let mut rounds = Rounds::new();
        let round = rounds.next(1, false, &peers);
        rounds.finish(&round, true, true);
        assert!(rounds.next(1, true, &peers).full, "the node fell behind");
    }

    #[test]
    fn a_full_round_on_a_ring_that_moved_on_has_not_caught_up() {
        let peers = [peer(1)];
        let mut rounds = Rounds::new();
        let round = rounds.next(1, false, &peers);
        let done = rounds.finish(&round, true, false);
        assert!(!done.caught_up);
        assert!(done.retry_soon);
        assert!(rounds.next(1, false, &peers).full);
    }

    #[test]
    fn bucket_numbers_from_a_peer_are_checked() {
        let buckets = valid_buckets(&[-1, 3, 3, BUCKETS as i32, 0]);
        assert_eq!(buckets.into_iter().collect::<Vec<_>>(), vec![0, 3]);
    }
}
