//! Digests of the store's entries by range of ring position, kept up to date
//! as writes land, so anti-entropy compares two replicas without reading
//! every key: a quiet ring costs nothing, whatever it holds.
//!
//! The circle is cut at a sorted set of positions, the *cuts* (every
//! anti-entropy bucket start and every point of the ring:
//! [`crate::antientropy::cuts`]); each range from one cut to the next holds
//! the XOR of the fingerprints ([`fingerprint_at`]) of the entries in it.
//! Every key of a range has the same preference list, so a node sums, bucket
//! by bucket, exactly the ranges it shares with a peer.
//!
//! # Keeping them exact
//!
//! Ranges are kept per listing group ([`LIST_GROUPS`] of them), each behind a
//! gate lock. A write holds its group's gate for reading across the engine
//! write and the XOR of its change (the fingerprint of what it replaced and of
//! what it wrote), so writes run side by side: XOR is commutative, and an
//! engine already orders the writes to one key, so the deltas add up to the
//! entry's final fingerprint in any order. Re-cutting a group holds its gate
//! for writing while it rescans the group's entries, so no write is counted
//! half. The ring changes rarely: a group whose cuts include every cut asked
//! for (a member left, its points went) stays as it is; only new cuts (a
//! member joined) cost a rescan, of one group at a time where the engine can
//! scan a group alone (memory), of all stale groups in one pass otherwise
//! (disk, whose keys are not ordered by group).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock, RwLockReadGuard};

use super::{Engine, Held, LIST_GROUPS, group_at, group_start};
use crate::antientropy::fingerprint_at;
use crate::error::Result;
use crate::ring::key_position;

/// One group's ranges: `starts[i]` begins range `i`, which ends where the
/// next begins (the last at the group's end). `starts[0]` is the group's
/// first position.
struct Cut {
    starts: Vec<u64>,
    digests: Vec<AtomicU64>,
    /// `slots[s]`: how many starts lie before the `s`-th of [`SLOTS`] equal
    /// slices of the group (one more entry: every start), so a write reads
    /// its slice's few starts rather than binary-searching them all (which
    /// missed the cache on every write).
    slots: Vec<u32>,
}

/// Slices of a group that [`Cut`] indexes its starts by.
const SLOTS: usize = 64;

/// Bits of a position below its slice within its group.
const SLOT_SHIFT: u32 = 64 - LIST_GROUPS.trailing_zeros() - SLOTS.trailing_zeros();

impl Cut {
    /// The cut of `group` with these `starts` (sorted, the first the
    /// group's start) and `digests`.
    fn new(group: usize, starts: Vec<u64>, digests: Vec<AtomicU64>) -> Self {
        let first = group_start(group);
        let mut slots = Vec::with_capacity(SLOTS + 1);
        let mut before = 0;
        for slot in 0..SLOTS as u64 {
            let start = first + (slot << SLOT_SHIFT);
            while before < starts.len() && starts[before] < start {
                before += 1;
            }
            slots.push(before as u32);
        }
        slots.push(starts.len() as u32);
        Cut {
            starts,
            digests,
            slots,
        }
    }

    /// The range holding `position` (of this cut's group).
    fn index(&self, position: u64) -> usize {
        // Every start of an earlier slice lies at or before `position`, every
        // start of a later one after it.
        let slot = (position >> SLOT_SHIFT) as usize % SLOTS;
        let (from, to) = (self.slots[slot] as usize, self.slots[slot + 1] as usize);
        (from + self.starts[from..to].partition_point(|&start| start <= position)).saturating_sub(1)
    }

    /// Whether every position of `wanted` is already a cut here.
    fn covers(&self, wanted: &[u64]) -> bool {
        let mut have = self.starts.iter().peekable();
        wanted.iter().all(|w| {
            while have.next_if(|&&h| h < *w).is_some() {}
            have.peek().is_some_and(|&&h| h == *w)
        })
    }
}

/// The digests of every group: `None` until a group is first cut (and while
/// a rescan of it failed), when writes need not track it.
pub(super) struct Ranges {
    groups: Vec<RwLock<Option<Cut>>>,
    /// The cuts every group was last seen to include, so asking again with
    /// the same ones checks nothing. Held while groups are checked and cut,
    /// which serialises callers (the repair worker and a peer's request).
    covered: Mutex<Option<Arc<Vec<u64>>>>,
}

impl Default for Ranges {
    fn default() -> Self {
        Ranges {
            groups: (0..LIST_GROUPS).map(|_| RwLock::new(None)).collect(),
            covered: Mutex::new(None),
        }
    }
}

/// Held by a write across the engine call: see the module doc.
pub(super) struct Gate<'a> {
    position: u64,
    cut: RwLockReadGuard<'a, Option<Cut>>,
}

impl Gate<'_> {
    /// Counts a write that replaced `was` with `now` at this gate's key.
    pub(super) fn record(&self, was: Held, now: Held) {
        let Some(cut) = self.cut.as_ref() else {
            return;
        };
        let print = |held: Held| {
            held.map_or(0, |(version, tombstone)| {
                fingerprint_at(self.position, version, tombstone)
            })
        };
        cut.digests[cut.index(self.position)].fetch_xor(print(was) ^ print(now), Ordering::Relaxed);
    }
}

impl Ranges {
    /// The gate a write of the key at `position` holds.
    pub(super) fn gate(&self, position: u64) -> Gate<'_> {
        Gate {
            position,
            cut: self.groups[group_at(position)].read(),
        }
    }

    /// `(start, digest)` of every range that holds entries (whose digest is
    /// not 0), in position order, cut at least at `cuts` (sorted,
    /// deduplicated; see the module doc), rescanning the groups whose cuts
    /// lack some of them.
    pub(super) fn digests(
        &self,
        engine: &dyn Engine,
        cuts: &Arc<Vec<u64>>,
    ) -> Result<Vec<(u64, u64)>> {
        {
            let mut covered = self.covered.lock();
            if !covered.as_ref().is_some_and(|c| Arc::ptr_eq(c, cuts)) {
                *covered = None;
                self.cover(engine, cuts)?;
                *covered = Some(cuts.clone());
            }
        }
        let mut all = Vec::new();
        for group in &self.groups {
            if let Some(cut) = group.read().as_ref() {
                let ranges = cut.starts.iter().zip(&cut.digests);
                all.extend(ranges.filter_map(|(&start, digest)| {
                    let digest = digest.load(Ordering::Relaxed);
                    (digest != 0).then_some((start, digest))
                }));
            }
        }
        Ok(all)
    }

    /// Cuts every group that lacks some of `cuts` afresh.
    fn cover(&self, engine: &dyn Engine, cuts: &[u64]) -> Result<()> {
        let wanted = |group: usize| {
            let from = cuts.partition_point(|&c| c < group_start(group));
            let to = from + cuts[from..].partition_point(|&c| group_at(c) == group);
            &cuts[from..to]
        };
        let stale: Vec<usize> = (0..LIST_GROUPS)
            .filter(|&group| {
                let cut = self.groups[group].read();
                !cut.as_ref().is_some_and(|cut| cut.covers(wanted(group)))
            })
            .collect();
        if engine.scans_groups_apart() {
            for &group in &stale {
                self.recut(engine, &[group], &wanted)?;
            }
        } else if !stale.is_empty() {
            self.recut(engine, &stale, &wanted)?;
        }
        Ok(())
    }

    /// Cuts `groups` afresh at `wanted(group)` and the group's start, from
    /// one scan of their entries, holding their gates for writing meanwhile.
    fn recut<'a>(
        &self,
        engine: &dyn Engine,
        groups: &[usize],
        wanted: &impl Fn(usize) -> &'a [u64],
    ) -> Result<()> {
        // Ascending order, and a writer holds one gate at a time: no deadlock.
        let mut gates: Vec<_> = groups.iter().map(|&g| self.groups[g].write()).collect();
        let mut fresh: Vec<Option<(Vec<u64>, Vec<u64>)>> = vec![None; LIST_GROUPS];
        let mut mask = 0u64;
        for (&group, gate) in groups.iter().zip(&mut gates) {
            **gate = None;
            let first = group_start(group);
            let mut starts = vec![first];
            starts.extend(wanted(group).iter().filter(|&&c| c != first));
            let digests = vec![0; starts.len()];
            fresh[group] = Some((starts, digests));
            mask |= 1 << group;
        }
        if mask == 0 {
            return Ok(());
        }
        engine.scan_groups(mask, &mut |key, version, tombstone| {
            let position = key_position(key);
            if let Some((starts, digests)) = &mut fresh[group_at(position)] {
                let i = starts.partition_point(|&s| s <= position) - 1;
                digests[i] ^= fingerprint_at(position, version, tombstone);
            }
            true
        })?;
        for (&group, gate) in groups.iter().zip(&mut gates) {
            if let Some((starts, digests)) = fresh[group].take() {
                let digests = digests.into_iter().map(AtomicU64::new).collect();
                **gate = Some(Cut::new(group, starts, digests));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The indexed search finds the range a search through every start does,
    /// at slice edges, at starts and between them.
    #[test]
    fn a_cut_finds_the_range_of_any_position_of_its_group() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for group in [0, 1, 37, LIST_GROUPS - 1] {
            let first = group_start(group);
            let span = 1u64 << (64 - LIST_GROUPS.trailing_zeros());
            for count in [0, 1, 3, 300] {
                let mut starts = vec![first];
                starts.extend((0..count).map(|_| first + next() % span));
                starts.sort_unstable();
                starts.dedup();
                let digests = starts.iter().map(|_| AtomicU64::new(0)).collect();
                let cut = Cut::new(group, starts.clone(), digests);
                let mut positions: Vec<u64> = (0..SLOTS as u64)
                    .flat_map(|s| {
                        let edge = first + (s << SLOT_SHIFT);
                        [edge, edge.saturating_sub(1).max(first), edge + 1]
                    })
                    .collect();
                positions.extend(
                    starts
                        .iter()
                        .flat_map(|&s| [s, s.saturating_sub(1).max(first)]),
                );
                positions.extend((0..200).map(|_| first + next() % span));
                positions.push(first + (span - 1));
                for position in positions {
                    let expected = starts.partition_point(|&s| s <= position) - 1;
                    assert_eq!(
                        cut.index(position),
                        expected,
                        "group {group}, at {position:#x}"
                    );
                }
            }
        }
    }
}
