//! Collecting old tombstones, so that erased keys stop costing memory.
//!
//! An erase leaves a tombstone (see [`crate::store`]): a replica that missed
//! the erase may later offer its older copy, and the tombstone is what makes
//! that copy lose. Once no replica can offer such a copy any more, the
//! tombstone only costs memory, and [`Node::collect_tombstones`] forgets it
//! ([`crate::store::Store::remove_if`], only the exact version judged).
//!
//! # When a tombstone may go
//!
//! A tombstone at key K with version V is removed by this node only if
//!
//! 1. it is older than [`Config::tombstone_grace`] (by V's wall time), and
//! 2. the ring is quiet: this node has joined, is not leaving, is not
//!    catching up (it is not [`Node::syncing`]: it did not just join, come
//!    back, resume from a pause or lose contact), sees every member that may
//!    hold data (every row but those that left on purpose) alive in its ring,
//!    and sees no ring change, from the pass that picked the tombstone to the
//!    pass that removes it; and
//! 3. since the pass that picked it, this node has completed an anti-entropy
//!    exchange ([`Node::sync_with`]) with every peer of its ring. An
//!    exchange that started after the tombstone was picked leaves the peer
//!    holding V or newer for every key the two share, so every replica of K
//!    then holds the tombstone (or has itself removed it by the same rule).
//!
//! So a replica that missed the erase (a lost message, a hint not delivered
//! yet) is repaired before the tombstone goes (rule 3); and while a member
//! is away (crashed, paused, cut off, leaving) no node removes any tombstone
//! (rule 2), so the member finds them when it comes back and loses its older
//! copies to them. What the rules cannot see is left to the grace, which
//! must exceed it (README, "Consistency model"): a member whose row was
//! forgotten by every other node (the whole ring restarted while it was
//! down), a handoff pending longer than the grace, clocks skewed by a
//! sizeable part of it. For a disk node the first is enforced at start:
//! its data directory records when the node last ran
//! ([`crate::store::Store::mark_alive`]), and a node that ran last longer
//! ago than the grace refuses to start with that data ([`check_downtime`]).
//!
//! A tombstone that one replica removed comes back from another that has
//! not yet by anti-entropy, unless refused: a node does not store a
//! tombstone older than the grace for a key it holds nothing at
//! ([`Node::merge_copy`]), since nothing is what collecting it leaves. A
//! key holding an older copy still takes it, so that copy loses.
//!
//! # Pacing
//!
//! A pass runs every quarter of the grace (at most a minute apart, at least
//! 100 ms). It picks at most [`MAX_PICKED`] tombstones and
//! [`MAX_PICKED_BYTES`] of their keys (the scan copies one shard at a time,
//! so writers are never held up), and the pass after it
//! removes them [`BATCH`] at a time, yielding to other tasks between
//! batches, so requests are never stalled behind it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Node;
use crate::error::{Error, Result};
use crate::store::Store;
use crate::version::Version;

/// The `stats` key that tells the node's tombstone grace, in milliseconds.
pub const GRACE_STAT: &str = "tombstone_grace_ms";

/// The `stats` key counting the tombstones this node has removed since it
/// started.
pub const COLLECTED_STAT: &str = "tombstones_collected";

/// Most tombstones picked by one pass; the rest wait for a later one.
const MAX_PICKED: usize = 100_000;

/// Most key bytes picked by one pass (keys may be up to 64 KiB each).
const MAX_PICKED_BYTES: usize = 16 << 20;

/// Tombstones removed between two yields to other tasks.
const BATCH: usize = 1_000;

/// Tombstones old enough to go, as one pass picked them, waiting for every
/// peer to be synced with (rule 3 of the module doc).
#[derive(Debug)]
pub(super) struct Picked {
    /// When they were picked ([`Node::now_ms`]).
    at: u64,
    /// The ring epoch they were picked at.
    epoch: u64,
    /// Key and the exact version judged.
    keys: Vec<(Vec<u8>, Version)>,
}

/// What one pass did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Swept {
    /// Tombstones picked, to be removed by a later pass.
    pub picked: usize,
    /// Tombstones removed.
    pub removed: usize,
}

/// Refuses a disk store whose node last ran longer than `grace` before
/// `now_micros` (see the module doc): its older copies of keys erased since
/// could come back, once the other nodes have removed their tombstones.
/// A store that never recorded a run (memory, or a new directory) passes.
pub fn check_downtime(store: &Store, grace: Duration, now_micros: u64, dir: &str) -> Result<()> {
    let Some(last) = store.last_alive()? else {
        return Ok(());
    };
    let away = Duration::from_micros(now_micros.saturating_sub(last));
    if away <= grace {
        return Ok(());
    }
    Err(Error::Storage(format!(
        "the data in {dir} was last used {} ago, longer than the tombstone grace of {}: \
         the other nodes may have forgotten erases made since, so these copies could bring \
         erased keys back. Move {dir} aside (or delete it) and start the node again: the \
         ring copies its keys back to it. (Starting with a longer --tombstone-grace does \
         not help: the other nodes used theirs.)",
        shown(away),
        shown(grace)
    )))
}

/// A duration the way an operator reads it.
fn shown(duration: Duration) -> String {
    let secs = duration.as_secs();
    match secs {
        0..120 => format!("{:.1} s", duration.as_secs_f64()),
        120..7200 => format!("{} min", secs / 60),
        7200..172_800 => format!("{} h", secs / 3600),
        _ => format!("{} days", secs / 86_400),
    }
}

impl Node {
    /// Runs a pass every quarter of the grace (at most a minute apart, at
    /// least 100 ms) until the node stops; also records, on a disk store,
    /// that the node still runs with it.
    pub(super) async fn tombstone_collector(self: Arc<Self>) {
        let every = (self.config.tombstone_grace / 4)
            .clamp(Duration::from_millis(100), Duration::from_secs(60));
        self.mark_alive();
        while !self.stop_requested() {
            tokio::select! {
                biased;
                _ = self.stop.wait_for(|stop| *stop) => break,
                () = tokio::time::sleep(every) => {}
            }
            self.mark_alive();
            let swept = self.collect_tombstones().await;
            if swept.removed > 0 {
                log::info!("removed {} tombstones older than the grace", swept.removed);
            }
        }
    }

    fn mark_alive(&self) {
        if let Err(e) = self.store.mark_alive(self.clock.wall_micros()) {
            log::warn!("recording that the node runs with its data failed: {e}");
        }
    }

    /// Whether the ring is quiet enough to remove tombstones (rule 2 of the
    /// module doc).
    fn quiet(&self) -> bool {
        if !self.ready() || self.syncing() || self.leaving() {
            return false;
        }
        let view = self.view.read();
        view.ring.len() == view.swim.membership().known()
    }

    /// Whether every peer of the ring was synced with by an exchange that
    /// started at or after `since` (rule 3 of the module doc).
    fn synced_with_every_peer_since(&self, since: u64) -> bool {
        let synced = self.synced_at.lock();
        self.peers()
            .iter()
            .all(|peer| synced.get(peer).is_some_and(|&at| at >= since))
    }

    /// One pass: removes the tombstones the previous pass picked, if every
    /// peer has been synced with since and the ring stayed quiet; otherwise
    /// picks the tombstones older than the grace.
    pub(crate) async fn collect_tombstones(self: &Arc<Self>) -> Swept {
        let mut swept = Swept::default();
        if !self.quiet() {
            *self.picked.lock() = None;
            return swept;
        }
        let epoch = self.epoch();
        let picked = self.picked.lock().take();
        if let Some(picked) = picked {
            if picked.epoch != epoch {
                // Other replicas now: pick again on this ring.
            } else if !self.synced_with_every_peer_since(picked.at) {
                *self.picked.lock() = Some(picked);
                return swept;
            } else {
                swept.removed = self.remove_picked(picked).await;
                return swept;
            }
        }
        let picked = self.pick_tombstones(epoch);
        swept.picked = picked.keys.len();
        if !picked.keys.is_empty() {
            *self.picked.lock() = Some(picked);
        }
        swept
    }

    /// Whether a tombstone of `version` is older than the grace (rule 1 of
    /// the module doc), by this node's wall clock.
    fn past_grace(&self, version: Version, now_micros: u64) -> bool {
        version.age(now_micros) > self.config.tombstone_grace
    }

    /// Merges a copy from a peer (replication, handoff, repair, read
    /// repair; see [`crate::store::Store::merge`]), except a tombstone older
    /// than the grace for a key this node holds nothing at, which is
    /// dropped: having nothing is what collecting it leaves, so storing it
    /// would undo a collection. Without this, replicas that collect at
    /// different moments hand the tombstone back to each other by repair,
    /// and it is never gone (it kept 21 chunk tombstones alive on two of
    /// three nodes, collected every pass and repaired back, in
    /// `a_256_mib_value_replaced_with_small_...`). A key holding an older
    /// copy still takes the tombstone, so that copy loses. Returns whether
    /// applied.
    pub(super) fn merge_copy(
        &self,
        key: &[u8],
        value: Option<&[u8]>,
        version: Version,
    ) -> Result<bool> {
        if value.is_none()
            && self.past_grace(version, self.clock.wall_micros())
            && self.store.get(key)?.is_none()
        {
            return Ok(false);
        }
        self.keep(key, value, version)
    }

    /// The tombstones older than the grace, at most [`MAX_PICKED`] of them
    /// and [`MAX_PICKED_BYTES`] of keys.
    fn pick_tombstones(&self, epoch: u64) -> Picked {
        let at = self.now_ms();
        let now = self.clock.wall_micros();
        let mut keys = Vec::new();
        if self.store.usage().tombstones == 0 {
            // Nothing to pick: a quiet store is not read at all.
            return Picked { at, epoch, keys };
        }
        let mut bytes = 0;
        let scanned = self.store.scan(|key, version, tombstone| {
            if tombstone && self.past_grace(version, now) {
                keys.push((key.to_vec(), version));
                bytes += key.len();
            }
            keys.len() < MAX_PICKED && bytes < MAX_PICKED_BYTES
        });
        if let Err(e) = scanned {
            log::warn!("collecting tombstones: scanning the store failed: {e}");
            keys.clear();
        }
        Picked { at, epoch, keys }
    }

    /// Removes what was picked, [`BATCH`] at a time, checking before each
    /// batch that the ring is still quiet and unchanged.
    async fn remove_picked(&self, picked: Picked) -> usize {
        let mut removed = 0;
        for batch in picked.keys.chunks(BATCH) {
            if self.stop_requested() || !self.quiet() || self.epoch() != picked.epoch {
                break;
            }
            let mut gone = 0;
            for (key, version) in batch {
                match self.store.remove_if(key, *version) {
                    Ok(true) => gone += 1,
                    // Written again meanwhile: what is there now stays.
                    Ok(false) => {}
                    Err(e) => {
                        log::warn!("collecting tombstones: removing one failed: {e}");
                        break;
                    }
                }
            }
            removed += gone;
            self.tombstones_collected
                .fetch_add(gone as u64, Ordering::Relaxed);
            tokio::task::yield_now().await;
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disk_store_last_used_longer_ago_than_the_grace_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), false).unwrap();
        let grace = Duration::from_secs(3600);
        let hour = grace.as_micros() as u64;
        let t0 = 1_800_000_000_000_000;
        // Never recorded (a new directory): taken.
        check_downtime(&store, grace, t0, "DIR").unwrap();
        store.mark_alive(t0).unwrap();
        check_downtime(&store, grace, t0 + hour, "DIR").unwrap();
        let error = check_downtime(&store, grace, t0 + hour + 1, "DIR")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("last used 60 min ago")
                && error.contains("tombstone grace of 60 min")
                && error.contains("Move DIR aside"),
            "{error}"
        );
        let error = check_downtime(&store, grace, t0 + 50 * hour, "DIR")
            .unwrap_err()
            .to_string();
        assert!(error.contains("last used 2 days ago"), "{error}");
        // The memory engine records nothing, so it is never refused.
        let memory = Store::memory();
        memory.mark_alive(t0).unwrap();
        check_downtime(&memory, grace, t0 + 50 * hour, "-").unwrap();
    }
}
