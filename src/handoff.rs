//! Handoff planning: which of a node's keys must move after a ring change,
//! grouped by their new replicas, and when a batch that went to them may be
//! deleted here. Pure: the node ([`crate::node`]) reads the keys, sends the
//! batches and deletes what this module says it may.
//!
//! A batch is deleted here only once a write quorum of its replicas holds it:
//! our copy may be one of the quorum that acknowledged the key's latest write,
//! and the new replicas need not hold it yet (a joiner starts empty). Handing
//! it to the owner alone would leave the write on one node.

use std::collections::BTreeMap;

use crate::addr::NodeAddr;
use crate::ring::Ring;

/// Whether `me` holds `key` but no longer replicates it in `ring` (with
/// `replicas` copies per key): its copy must move. Every member of a ring of
/// at most `replicas` members holds every key, which needs no look at it.
pub(crate) fn moves(ring: &Ring<NodeAddr>, replicas: usize, me: &NodeAddr, key: &[u8]) -> bool {
    if ring.len() <= replicas {
        return !ring.contains(me);
    }
    !ring.owners(key, replicas).contains(&me)
}

/// Keys that travel to the same replicas, in the same batches.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Group {
    /// The key's replicas in the new ring, owner first.
    pub replicas: Vec<NodeAddr>,
    /// The keys, in the order given.
    pub keys: Vec<Vec<u8>>,
    /// Acknowledgements a batch of these keys needs before it is deleted
    /// here: the write quorum, or every replica when the ring has fewer.
    pub needed: usize,
}

/// Groups the keys that must move (see [`moves`]) by their new replicas.
/// `write_quorum` is what a write needs: never fewer acknowledgements than
/// that, however few replicas the ring has. An empty ring plans nothing (the
/// last member leaving has nowhere to send its keys).
pub(crate) fn plan(
    ring: &Ring<NodeAddr>,
    replicas: usize,
    write_quorum: usize,
    me: &NodeAddr,
    keys: impl IntoIterator<Item = Vec<u8>>,
) -> Vec<Group> {
    let mut groups: BTreeMap<Vec<NodeAddr>, Vec<Vec<u8>>> = BTreeMap::new();
    for key in keys {
        let owners = ring.owners(&key, replicas);
        if owners.is_empty() || owners.contains(&me) {
            continue;
        }
        groups
            .entry(owners.into_iter().cloned().collect())
            .or_default()
            .push(key);
    }
    groups
        .into_iter()
        .map(|(replicas, keys)| Group {
            needed: write_quorum.clamp(1, replicas.len()),
            replicas,
            keys,
        })
        .collect()
}

/// The answers to one batch sent to its replicas.
#[derive(Debug)]
pub(crate) struct BatchTally {
    needed: usize,
    acked: usize,
}

impl BatchTally {
    /// A tally for a batch of a [`Group`] that needs `needed` acknowledgements.
    pub fn new(needed: usize) -> Self {
        BatchTally { needed, acked: 0 }
    }

    /// Counts one replica's answer; returns whether the batch is settled
    /// (enough replicas took it: the rest are left to anti-entropy).
    pub fn answer(&mut self, stored: bool) -> bool {
        self.acked += usize::from(stored);
        self.settled()
    }

    /// Whether enough replicas took the batch that its keys may be deleted
    /// here.
    pub fn settled(&self) -> bool {
        self.acked >= self.needed
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    fn addr(port: u16) -> NodeAddr {
        NodeAddr::new("127.0.0.1", port)
    }

    fn ring_of(ports: &[u16]) -> Ring<NodeAddr> {
        Ring::new(ports.iter().map(|&p| addr(p)))
    }

    #[test]
    fn an_empty_ring_plans_nothing() {
        let empty: Ring<NodeAddr> = Ring::new(std::iter::empty());
        let planned = plan(&empty, 3, 2, &addr(1), vec![b"k".to_vec()]);
        assert!(planned.is_empty());
    }

    #[test]
    fn a_batch_needs_the_write_quorum_or_every_replica_of_a_smaller_ring() {
        let keys: Vec<Vec<u8>> = (0..50).map(|i| format!("k{i}").into_bytes()).collect();
        let ring = ring_of(&[2, 3, 4]);
        for group in plan(&ring, 3, 2, &addr(1), keys.clone()) {
            assert_eq!(group.replicas.len(), 3);
            assert_eq!(group.needed, 2);
        }
        let one = ring_of(&[2]);
        for group in plan(&one, 3, 2, &addr(1), keys) {
            assert_eq!(group.needed, 1, "a ring of one cannot give two acks");
        }
    }

    #[test]
    fn a_batch_is_settled_once_enough_replicas_took_it() {
        let mut tally = BatchTally::new(2);
        assert!(!tally.answer(true));
        assert!(!tally.answer(false), "a failure does not count");
        assert!(tally.answer(true));
        assert!(tally.settled());
    }

    proptest! {
        /// After any ring change, a node plans to move exactly the keys it no
        /// longer replicates, each to exactly its replicas in the new ring.
        #[test]
        fn handoff_moves_exactly_what_the_node_no_longer_replicates(
            members in proptest::collection::btree_set(1u16..40, 1..8),
            joiner in 40u16..50,
            leaver_index in 0usize..8,
            replicas in 1usize..4,
            key_count in 0usize..200,
        ) {
            let members: Vec<u16> = members.into_iter().collect();
            let old = ring_of(&members);
            // Either a member joins or (with two or more) one leaves.
            let mut after = members.clone();
            if members.len() > 1 && leaver_index < members.len() {
                after.remove(leaver_index);
            } else {
                after.push(joiner);
            }
            let new = ring_of(&after);
            let keys: Vec<Vec<u8>> =
                (0..key_count).map(|i| format!("key-{i}").into_bytes()).collect();
            for &m in &members {
                let me = addr(m);
                let held: Vec<Vec<u8>> = keys
                    .iter()
                    .filter(|k| old.owners(k, replicas).contains(&&me))
                    .cloned()
                    .collect();
                let planned = plan(&new, replicas, 2, &me, held.clone());
                let mut moved = BTreeSet::new();
                for group in &planned {
                    prop_assert!(!group.replicas.contains(&me));
                    for key in &group.keys {
                        let owners: Vec<NodeAddr> =
                            new.owners(key, replicas).into_iter().cloned().collect();
                        prop_assert_eq!(&owners, &group.replicas);
                        prop_assert!(moved.insert(key.clone()), "a key planned twice");
                    }
                }
                let expected: BTreeSet<Vec<u8>> = held
                    .into_iter()
                    .filter(|k| moves(&new, replicas, &me, k))
                    .collect();
                prop_assert_eq!(moved, expected);
            }
        }
    }
}
