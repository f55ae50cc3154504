//! Failure detection's other half and view agreement: heartbeats that tell
//! whether a peer routes as we do, the pause watch, and the lease by which a
//! node vouches for its own copies (README, "Consistency model").

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Node;
use crate::addr::NodeAddr;
use crate::peer::{Reply, Request};

impl Node {
    /// Notes a peer's ring id: the same as ours confirms our view, another
    /// one means we disagree on where keys live (and the two views must meet:
    /// push-pull with that peer at once).
    pub(super) fn note_view(self: &Arc<Self>, peer: &NodeAddr, theirs: u64) {
        let now = self.now_ms();
        self.views.lock().insert(peer.clone(), (theirs, now));
        if theirs == self.ring_id() {
            self.agreed.fetch_max(now, Ordering::AcqRel);
        } else {
            let before = self.disagreed.swap(now, Ordering::AcqRel);
            log::debug!("{peer} routes with another ring than ours");
            if self.now_ms().saturating_sub(before) > self.lease().as_millis() as u64 {
                let node = self.clone();
                let peer = peer.clone();
                let table = self.view.read().swim.table();
                self.tasks
                    .spawn(async move { node.exchange(&peer, table).await });
            }
        }
    }

    /// Answers a peer's heartbeat with our ring id, noting theirs: one
    /// exchange tells both sides whether they agree.
    pub fn heartbeat(self: &Arc<Self>, caller: &NodeAddr, theirs: u64) -> u64 {
        if *caller != self.me && self.peers().contains(caller) {
            self.note_view(caller, theirs);
        }
        self.ring_id()
    }

    /// How long a confirmation of our view lasts: a quarter of the failure
    /// timeout, less than peers need to declare us dead and move on.
    pub(super) fn lease(&self) -> Duration {
        self.config.failure_timeout / 4
    }

    /// The timeout of a heartbeat.
    pub(super) fn probe_timeout(&self) -> Duration {
        self.config.failure_timeout / 5
    }

    /// Whether `target` answers a heartbeat within the probe timeout; its
    /// answer also tells whether it routes as we do.
    pub async fn ping(self: &Arc<Self>, target: &NodeAddr) -> bool {
        self.heartbeat_within(target, self.probe_timeout()).await
    }

    /// An indirect probe on a peer's behalf (`probe`): the asker waits only
    /// until the end of its protocol period, so the answer, yes or no, must
    /// come within SWIM's probe timeout; a later "no" would reach it as
    /// silence, which it counts against its own health.
    pub async fn probe_for_peer(self: &Arc<Self>, target: &NodeAddr) -> bool {
        self.heartbeat_within(target, self.swim_config.probe_timeout)
            .await
    }

    pub(super) async fn heartbeat_within(
        self: &Arc<Self>,
        target: &NodeAddr,
        timeout: Duration,
    ) -> bool {
        match self
            .call(
                target,
                Request::Heartbeat {
                    ring: self.ring_id(),
                    caller: self.me.clone(),
                },
                timeout,
            )
            .await
        {
            Ok(Reply::Ring(theirs)) => {
                self.note_view(target, theirs);
                true
            }
            Ok(_) => true,
            Err(_) => false,
        }
    }

    /// View agreement: every tenth of the failure timeout, a heartbeat to the
    /// next serving peer in turn, whose answer tells whether it routes keys
    /// as we do (failure detection itself is the membership worker's).
    pub(super) async fn agreement_worker(self: Arc<Self>) {
        let period = self.config.failure_timeout / 10;
        let mut cursor = 0usize;
        while !self.wait_for_stop_timeout(period).await {
            let peers = self.peers();
            if peers.is_empty() {
                continue;
            }
            cursor = cursor.wrapping_add(1);
            let target = peers[cursor % peers.len()].clone();
            let node = self.clone();
            self.tasks.spawn(async move {
                node.ping(&target).await;
            });
        }
    }

    /// Watches for lost time and lost contact. A tick far behind schedule
    /// means the process was paused (SIGSTOP, a stalled VM): peers may have
    /// declared us dead and moved on. No answer from any peer for the lease
    /// means we may be cut off while the others move on. Either way the node
    /// catches up before trusting its copies again. Only this loop's own sleep
    /// is measured, so slow probes elsewhere never look like a pause.
    pub(super) async fn pause_watch(self: Arc<Self>) {
        let period = self.config.failure_timeout / 10;
        while !self.wait_for_stop_timeout(period).await {
            self.noticed_pause();
        }
    }

    /// Whether the pause watch is late, meaning the node was just paused
    /// (noted, so the next look says no). Whoever looks first after a pause,
    /// the watch or a request, sees it; from then on the node catches up, and
    /// for a short grace refuses the writes that may have waited in it.
    pub(super) fn noticed_pause(&self) -> bool {
        let now = self.now_ms();
        let last = self.last_tick.swap(now, Ordering::AcqRel);
        let limit = (self.config.failure_timeout / 5).as_millis() as u64;
        if last == 0 || now.saturating_sub(last) <= limit {
            return false;
        }
        log::warn!(
            "{}: this node was paused for {} ms; re-syncing before trusting its data",
            self.me,
            now - last
        );
        self.resumed.store(now, Ordering::Release);
        self.pauses.fetch_add(1, Ordering::Relaxed);
        self.syncing.store(true, Ordering::Release);
        self.bump_epoch();
        true
    }

    /// Whether the node was paused within the last quarter of the failure
    /// timeout: writes that waited in it meanwhile are refused rather than
    /// given a version now (their clients may have moved on).
    pub(super) fn just_resumed(&self) -> bool {
        let resumed = self.resumed.load(Ordering::Acquire);
        resumed != 0 && self.now_ms().saturating_sub(resumed) < self.lease().as_millis() as u64
    }

    /// Whether a peer confirmed our ring recently enough (within the lease)
    /// that none can have declared us dead since, and no serving peer's latest
    /// word is another ring. The only member ever known holds it always; a node that
    /// holds every peer dead does not.
    pub(super) fn lease_held(&self) -> bool {
        if self.view.read().swim.membership().known() <= 1 {
            return true;
        }
        let lease = self.lease().as_millis() as u64;
        let now = self.now_ms();
        let agreed = self.agreed.load(Ordering::Acquire);
        if agreed == 0 || now.saturating_sub(agreed) >= lease {
            return false;
        }
        // No serving peer's latest word (within the lease) is another ring.
        let mine = self.ring_id();
        let views = self.views.lock();
        self.peers().iter().all(|peer| {
            views
                .get(peer)
                .is_none_or(|&(theirs, at)| theirs == mine || now.saturating_sub(at) >= lease)
        })
    }

    /// Whether this node's own copies can answer a read alone: joined, not
    /// catching up, not just resumed from a pause, and holding its lease.
    pub(super) fn trusts_itself(&self) -> bool {
        let paused = self.noticed_pause() || self.just_resumed();
        self.ready() && !self.syncing() && !paused && self.lease_held() && self.majority_view()
    }
}
