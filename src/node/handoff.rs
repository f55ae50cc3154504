//! Handoff: keys this node holds but no longer replicates go to their
//! replicas in bounded batches, and a copy is deleted only once a write
//! quorum of them holds it. What moves, where, and when a batch is done is
//! planned by [`crate::handoff`].

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use futures::stream::{FuturesUnordered, StreamExt};

use super::Node;
use crate::addr::NodeAddr;
use crate::error::Error;
use crate::handoff::{self, BatchTally, Group};
use crate::peer::{BatchLimit, Entry, Request};
use crate::ring::Ring;
use crate::version::Version;

/// Handoff batches in flight at once: enough to keep the link and the
/// receiver busy while the next batch is read and encoded.
const HANDOFF_IN_FLIGHT: usize = 4;

/// One batch in flight: its tally, the keys and versions it carried (to
/// delete here once it is settled), and the replicas that failed.
type Sent = (BatchTally, Vec<(Vec<u8>, Version)>, Vec<(NodeAddr, Error)>);

/// What one handoff pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HandoffReport {
    /// Keys found held here that should move.
    pub found: usize,
    /// Keys acknowledged by a write quorum of their replicas and deleted here.
    pub moved: usize,
    /// Keys that should move but did not (too few replicas took them).
    pub stuck: usize,
    /// The ring changed mid-pass; the pass should be run again.
    pub restarted: bool,
}

/// How often a leave's handoff says how far it got.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// A leave's handoff, told at info: what it moves, how far it got (at most
/// every [`PROGRESS_EVERY`]), and when it is done. Passes share it, since a
/// leave may take several.
#[derive(Debug)]
pub struct Progress {
    /// Entries (values and tombstones) the node held when the leave began.
    total: usize,
    /// Entries handed over so far.
    moved: usize,
    started: Instant,
    told: Instant,
}

impl Progress {
    /// Starts telling a handoff of `total` entries.
    pub fn new(total: usize) -> Progress {
        let now = Instant::now();
        Progress {
            total,
            moved: 0,
            started: now,
            told: now,
        }
    }

    /// `count` more entries were handed over; returns the progress line,
    /// if it was time to tell it (it is then logged).
    fn moved(&mut self, count: usize) -> Option<String> {
        self.moved += count;
        if self.told.elapsed() < PROGRESS_EVERY {
            return None;
        }
        self.told = Instant::now();
        let line = format!(
            "handed over {} of {} keys, {} remaining",
            self.moved,
            self.total,
            self.total.saturating_sub(self.moved)
        );
        log::info!("{line}");
        Some(line)
    }

    /// Entries handed over so far.
    pub fn done(&self) -> usize {
        self.moved
    }

    /// How long since the handoff began.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

impl Node {
    /// Sends every key we hold but no longer replicate to its replicas
    /// ([`crate::handoff::plan`]), in bounded batches, deleting each copy only
    /// once a write quorum of them acknowledged it (and only if no newer write
    /// arrived meanwhile). Ownership is re-checked before each batch: a ring
    /// change ends the pass, to be run again on the new ring.
    ///
    /// A leave passes its `progress`, which the pass tells as it goes; the
    /// background worker passes none (it says what it moved at the end).
    pub async fn handoff_pass(
        self: &Arc<Self>,
        mut progress: Option<&mut Progress>,
    ) -> HandoffReport {
        let mut report = HandoffReport::default();
        let epoch = self.epoch();
        let routing = self.placement();
        let n = self.config.replicas;
        let keys = match self
            .store
            .keys_where(|k| handoff::moves(&routing, n, &self.me, k))
        {
            Ok(keys) => keys,
            Err(e) => {
                log::warn!("handoff could not list keys: {e}");
                return report;
            }
        };
        self.handoff_pending.store(keys.len(), Ordering::Relaxed);
        report.found = keys.len();
        let groups = handoff::plan(&routing, n, self.write_quorum(), &self.me, keys);
        let limit = BatchLimit {
            bytes: self.config.handoff_batch_bytes,
            entries: self.config.handoff_batch_entries,
        };
        let settle = |report: &mut HandoffReport,
                      progress: &mut Option<&mut Progress>,
                      (tally, sent, failed): Sent| {
            for (replica, e) in failed {
                // The error names the replica.
                log::warn!("handing {} keys over failed: {e}", sent.len());
                self.note_failure(&replica, &e);
            }
            if tally.settled() {
                for (key, version) in &sent {
                    if let Err(e) = self.store.remove_if(key, *version) {
                        log::warn!("deleting a handed-off key failed: {e}");
                    }
                }
                report.moved += sent.len();
                let _ = self.handoff_pending.fetch_update(
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                    |pending| Some(pending.saturating_sub(sent.len())),
                );
                self.metrics.handed_over(sent.len());
                if self.leaving() {
                    self.metrics.set_leave_remaining(self.store.len());
                }
                if let Some(progress) = progress {
                    let _ = progress.moved(sent.len());
                }
            } else {
                report.stuck += sent.len();
                report.restarted = true;
            }
        };
        // Batches are read here while earlier ones are in flight.
        let mut in_flight = FuturesUnordered::new();
        'groups: for group in &groups {
            let mut keys = group.keys.iter().peekable();
            while keys.peek().is_some() {
                if self.epoch() != epoch || report.restarted {
                    report.restarted = true;
                    break 'groups;
                }
                let mut batch = Vec::new();
                let mut sent = Vec::new();
                let mut bytes = 0;
                while !limit.full(bytes, batch.len()) {
                    let Some(key) = keys.next() else { break };
                    if let Ok(Some(stored)) = self.store.get(key) {
                        sent.push((key.clone(), stored.version));
                        let entry = Entry::new(key.clone(), stored);
                        bytes += entry.bytes();
                        batch.push(entry);
                    }
                }
                if batch.is_empty() {
                    continue;
                }
                while in_flight.len() >= HANDOFF_IN_FLIGHT {
                    if let Some(done) = in_flight.next().await {
                        settle(&mut report, &mut progress, done);
                    }
                }
                in_flight.push(self.send_batch(group, batch, sent));
            }
        }
        while let Some(done) = in_flight.next().await {
            settle(&mut report, &mut progress, done);
        }
        if report.moved > 0 && progress.is_none() {
            log::info!("handed {} keys to their replicas", report.moved);
        }
        report
    }

    /// Sends one batch to every replica of its group at once; it is settled
    /// once a write quorum took it (anti-entropy completes a slow replica), or
    /// every replica answered.
    async fn send_batch(
        &self,
        group: &Group,
        batch: Vec<Entry>,
        sent: Vec<(Vec<u8>, Version)>,
    ) -> Sent {
        let mut calls: FuturesUnordered<_> = group
            .replicas
            .iter()
            .map(|replica| {
                let request = Request::Absorb(batch.clone());
                async move {
                    let result = self.call(replica, request, self.config.rpc_timeout).await;
                    (replica, result)
                }
            })
            .collect();
        let mut tally = BatchTally::new(group.needed);
        let mut failed = Vec::new();
        while let Some((replica, result)) = calls.next().await {
            let stored = match result {
                Ok(_) => true,
                Err(e) => {
                    failed.push((replica.clone(), e));
                    false
                }
            };
            if tally.answer(stored) {
                break;
            }
        }
        (tally, sent, failed)
    }

    /// Background worker: runs a handoff pass whenever the ring changes, and
    /// every few seconds anyway (to pick up keys that were stored off-owner),
    /// unless the last pass found nothing to move and neither the ring nor
    /// the count of strays ([`Node::keep`]) changed since it began: a quiet
    /// node, or one taking only writes it replicates, reads no key.
    pub(super) async fn handoff_worker(self: Arc<Self>) {
        let mut seen = u64::MAX;
        // The ring and the count of strays at the start of the last pass, if
        // it found nothing to move.
        let mut nothing_at: Option<(Arc<Ring<NodeAddr>>, u64)> = None;
        while !self.stop_requested() {
            seen = self.wait_past(seen, Duration::from_secs(2)).await;
            if self.stop_requested() {
                break;
            }
            let (ring, strays) = (self.placement(), self.strays.load(Ordering::Acquire));
            if nothing_at
                .as_ref()
                .is_some_and(|(was, s)| Arc::ptr_eq(was, &ring) && *s == strays)
            {
                continue;
            }
            let mut report = self.handoff_pass(None).await;
            while report.restarted && report.stuck == 0 && !self.stop_requested() {
                report = self.handoff_pass(None).await;
            }
            nothing_at = (report.found == 0 && !report.restarted).then_some((ring, strays));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::schedule::sim_config;
    use crate::sim::{Cluster, NetConfig, Outcome, replicas_of};

    /// The handoff worker lists keys again only when the ring or the count
    /// of strays changed (not after every write): a copy absorbed by a node
    /// that does not replicate its key must count, or it would stay there.
    #[test]
    fn a_copy_absorbed_where_the_key_is_not_replicated_is_handed_over() {
        crate::sim::run(async {
            let second = Duration::from_secs(1);
            let cluster = Cluster::new(11, sim_config(), NetConfig::default());
            let addrs: Vec<NodeAddr> = (0..4).map(Cluster::addr).collect();
            cluster.start(&addrs[0], None).await.unwrap();
            for addr in &addrs[1..] {
                cluster.start(addr, Some(&addrs[0])).await.unwrap();
            }
            assert!(cluster.wait_until(30 * second, Cluster::settled).await);
            let key = b"stray".as_slice();
            let replicas = replicas_of(&cluster, &addrs[0], key);
            let elsewhere = addrs.iter().find(|a| !replicas.contains(a)).unwrap();
            let owner = cluster.node(&replicas[0]).unwrap();
            assert_eq!(
                cluster.put(&replicas[0], key, Some(b"value"), second).await,
                Outcome::Ok(())
            );
            // Every pass so far found nothing to move: the worker is idle.
            tokio::time::sleep(5 * second).await;
            let copy = owner.store().get(key).unwrap().expect("the owner's copy");
            let stray = cluster.node(elsewhere).unwrap();
            assert_eq!(
                stray.absorb(vec![Entry::new(key.to_vec(), copy)]).unwrap(),
                1
            );
            let handed = cluster
                .wait_until(10 * second, |c| {
                    c.node(elsewhere)
                        .is_some_and(|n| n.store().get(key).unwrap().is_none())
                })
                .await;
            assert!(
                handed,
                "{elsewhere} kept a copy of a key it does not replicate"
            );
            for replica in &replicas {
                let node = cluster.node(replica).unwrap();
                assert!(node.store().get(key).unwrap().is_some(), "{replica}");
            }
        });
    }

    #[tokio::test(start_paused = true)]
    async fn a_leave_tells_its_progress_at_most_every_two_seconds() {
        let mut progress = Progress::new(10_000);
        assert_eq!(progress.moved(2000), None);
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(progress.moved(2000), None);
        tokio::time::advance(Duration::from_millis(600)).await;
        assert_eq!(
            progress.moved(2000).as_deref(),
            Some("handed over 6000 of 10000 keys, 4000 remaining")
        );
        // Just told: quiet again for two seconds.
        assert_eq!(progress.moved(1000), None);
        tokio::time::advance(PROGRESS_EVERY).await;
        assert_eq!(
            progress.moved(3000).as_deref(),
            Some("handed over 10000 of 10000 keys, 0 remaining")
        );
        assert_eq!(progress.done(), 10_000);
        assert!(progress.elapsed() >= Duration::from_millis(4100));
    }
}
