//! Quorum reads, as a pure tally: which answers count, which copy wins, and
//! which replicas a read must repair. The node feeds it the answers it gets
//! and acts on its verdict; nothing here waits or talks.

use crate::addr::NodeAddr;
use crate::error::Error;
use crate::store::Stored;
use crate::version::Version;

/// The answers to one quorum read.
///
/// Only replicas that vouch for their copies (they route with the
/// coordinator's ring and have caught up since it last changed) count toward
/// the quorum; every copy seen competes for newest, since a newer copy can
/// only come from a later write.
#[derive(Debug)]
pub struct ReadTally {
    needed: usize,
    vouched: usize,
    local: Option<Version>,
    best: Option<Stored>,
    copies: Vec<(NodeAddr, Option<Version>)>,
}

/// What a read that met its quorum found.
#[derive(Debug, PartialEq, Eq)]
pub struct ReadVerdict {
    /// The newest copy seen (a tombstone included); `None`: no replica has
    /// ever seen the key.
    pub newest: Option<Stored>,
    /// Whether the coordinator's own copy is older than the newest.
    pub repair_here: bool,
    /// The replicas that answered with an older copy (or none).
    pub repair: Vec<NodeAddr>,
}

impl ReadTally {
    /// A read that needs `needed` vouching replicas, starting from the
    /// coordinator's own copy (`local`), which counts when `vouched_here`.
    pub fn new(needed: usize, local: Option<Stored>, vouched_here: bool) -> Self {
        ReadTally {
            needed,
            vouched: usize::from(vouched_here),
            local: local.as_ref().map(|s| s.version),
            best: local,
            copies: Vec::new(),
        }
    }

    /// A replica's answer: its copy, and whether it vouches for it.
    pub fn answer(&mut self, peer: &NodeAddr, copy: Option<Stored>, vouched: bool) {
        self.vouched += usize::from(vouched);
        self.copies
            .push((peer.clone(), copy.as_ref().map(|s| s.version)));
        self.best = newest(self.best.take(), copy);
    }

    /// How many replicas vouched so far.
    pub fn vouched(&self) -> usize {
        self.vouched
    }

    /// The newest copy so far.
    pub fn best(&self) -> Option<&Stored> {
        self.best.as_ref()
    }

    /// The verdict: the newest copy and who must be repaired, or
    /// [`Error::ReadQuorum`] when too few replicas vouched (`holds`: whether
    /// the coordinator is itself a replica whose copy can be repaired).
    pub fn verdict(self, holds: bool) -> Result<ReadVerdict, Error> {
        if self.vouched < self.needed {
            return Err(Error::ReadQuorum {
                vouched: self.vouched,
                needed: self.needed,
            });
        }
        let Some(best) = self.best else {
            return Ok(ReadVerdict {
                newest: None,
                repair_here: false,
                repair: Vec::new(),
            });
        };
        let repair = self
            .copies
            .into_iter()
            .filter(|(_, version)| *version < Some(best.version))
            .map(|(peer, _)| peer)
            .collect();
        Ok(ReadVerdict {
            repair_here: holds && self.local < Some(best.version),
            repair,
            newest: Some(best),
        })
    }
}

/// The newer of two copies (a tombstone is a copy too); `a` on a tie.
pub fn newest(a: Option<Stored>, b: Option<Stored>) -> Option<Stored> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.version > a.version { b } else { a }),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(stamp: u64, value: Option<&str>) -> Option<Stored> {
        Some(Stored {
            value: value.map(|v| v.as_bytes().to_vec()),
            version: Version { stamp, origin: 1 },
        })
    }

    fn peer(port: u16) -> NodeAddr {
        NodeAddr::new("n", port)
    }

    #[test]
    fn too_few_vouching_replicas_fail_the_read_whatever_they_hold() {
        let mut tally = ReadTally::new(2, copy(5, Some("v")), false);
        tally.answer(&peer(1), copy(9, Some("newer")), true);
        // A copy from a replica that does not vouch still competes...
        tally.answer(&peer(2), copy(12, Some("newest")), false);
        assert_eq!(tally.best(), copy(12, Some("newest")).as_ref());
        // ...but does not count.
        assert!(matches!(
            tally.verdict(true),
            Err(Error::ReadQuorum {
                vouched: 1,
                needed: 2
            })
        ));
    }

    #[test]
    fn the_newest_copy_wins_and_older_ones_are_repaired() {
        let mut tally = ReadTally::new(2, copy(5, Some("old")), true);
        tally.answer(&peer(1), copy(9, Some("new")), true);
        tally.answer(&peer(2), None, true);
        tally.answer(&peer(3), copy(9, Some("new")), true);
        let verdict = tally.verdict(true).unwrap();
        assert_eq!(verdict.newest, copy(9, Some("new")));
        assert!(verdict.repair_here);
        assert_eq!(verdict.repair, vec![peer(2)]);
    }

    #[test]
    fn a_tombstone_beats_an_older_value_and_is_what_the_read_returns() {
        let mut tally = ReadTally::new(2, copy(5, Some("erased")), true);
        tally.answer(&peer(1), copy(7, None), true);
        let verdict = tally.verdict(true).unwrap();
        assert_eq!(verdict.newest, copy(7, None));
        assert!(verdict.repair_here);
    }

    #[test]
    fn a_key_nobody_has_seen_is_absent_and_needs_no_repair() {
        let mut tally = ReadTally::new(2, None, true);
        tally.answer(&peer(1), None, true);
        let verdict = tally.verdict(true).unwrap();
        assert_eq!(verdict.newest, None);
        assert!(verdict.repair.is_empty() && !verdict.repair_here);
    }

    #[test]
    fn a_coordinator_that_is_no_replica_repairs_only_the_replicas() {
        let mut tally = ReadTally::new(1, None, false);
        tally.answer(&peer(1), copy(3, Some("v")), true);
        let verdict = tally.verdict(false).unwrap();
        assert!(!verdict.repair_here);
        assert!(verdict.repair.is_empty());
    }
}
