//! Stopping and leaving: a stop request (SIGINT, SIGTERM, `die`), and the
//! graceful leave that announces itself, hands every key over and says
//! goodbye.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::time::Instant;

use super::Node;
use super::handoff::Progress;
use crate::addr::NodeAddr;
use crate::membership::MemberState;
use crate::peer::{Reply, Request};
use crate::transport::unexpected;

impl Node {
    /// Asks the node to leave the ring (SIGINT, SIGTERM, `die`).
    /// [`Node::wait_for_stop`] returns once this has been called.
    pub fn request_stop(&self) {
        self.stop.set(true);
    }

    /// Waits up to `timeout` for a stop request; returns whether one came.
    pub async fn wait_for_stop_timeout(&self, timeout: Duration) -> bool {
        let _ = tokio::time::timeout(timeout, self.stop.wait_for(|s| *s)).await;
        self.stop_requested()
    }

    /// Whether a stop was requested.
    pub fn stop_requested(&self) -> bool {
        self.stop.get()
    }

    /// Waits until [`Node::request_stop`] is called.
    pub async fn wait_for_stop(&self) {
        self.stop.wait_for(|s| *s).await;
    }

    /// Leaves the ring gracefully: first tells every peer we are leaving (so
    /// they stop routing and replicating to us), then hands every key to its
    /// new replicas (acknowledged by a write quorum of them), then tells the
    /// others we left. Returns how many keys could not be handed over (none
    /// for the last member with a data directory: its keys stay there).
    pub async fn leave(self: &Arc<Self>) -> usize {
        let effects = self.with_swim(|swim, now| swim.start_leaving(now));
        self.run_effects(effects);
        let announce = self.view.read().swim.membership().my_state();
        // Wait (bounded) until the peers heard: after that no new write is
        // replicated to us, so the handoff below converges.
        self.tell_peers(announce).await;
        let deadline = Instant::now() + self.config.leave_timeout;
        let usage = self.store.usage();
        let entries = usage.values + usage.tombstones;
        let receivers = self.placement().len();
        if receivers > 0 {
            log::info!(
                "leaving: handing over {entries} keys ({} values of {} bytes, {} tombstones) to {receivers} members",
                usage.values,
                usage.bytes,
                usage.tombstones
            );
        }
        self.metrics.set_leave_remaining(entries);
        let mut progress = Progress::new(entries);
        // Tombstones travel too (they keep erased keys erased), so the loop
        // runs until a pass finds nothing left to move, not until `len` is 0.
        while Instant::now() < deadline {
            if self.placement().is_empty() {
                break;
            }
            let report = self.handoff_pass(Some(&mut progress)).await;
            if report.restarted && report.stuck == 0 {
                continue;
            }
            if report.moved == 0 && report.stuck == 0 {
                break;
            }
            if report.moved == 0 {
                // Owners refused or failed; give the ring a moment to change.
                self.wait_past(self.epoch(), Duration::from_millis(200))
                    .await;
            }
        }
        let mut left_behind = self.store.len();
        if self.placement().is_empty() {
            // The last member: nobody to hand its keys to.
            match &self.config.data_dir {
                Some(dir) => {
                    // Kept on disk, not lost: a node started on the same
                    // directory serves them again.
                    log::info!(
                        "last member leaving: its {left_behind} keys stay in {} \
                         (start a node with --data-dir {} to serve them again)",
                        dir.display(),
                        dir.display()
                    );
                    left_behind = 0;
                }
                None if left_behind > 0 => log::warn!(
                    "last member leaving: its {left_behind} keys were in memory only \
                     and are gone (use --data-dir to keep them)"
                ),
                None => {}
            }
        } else if left_behind > 0 {
            log::warn!(
                "leaving with {left_behind} keys not handed over ({} handed over in {:.1} s)",
                progress.done(),
                progress.elapsed().as_secs_f64()
            );
        } else {
            log::info!(
                "handed over all {} keys in {:.1} s",
                progress.done(),
                progress.elapsed().as_secs_f64()
            );
        }
        self.metrics.set_leave_remaining(left_behind);
        let effects = self.with_swim(|swim, now| swim.leave(now));
        self.run_effects(effects);
        let farewell = self.view.read().swim.membership().my_state();
        self.tell_peers(farewell).await;
        log::info!("left the ring");
        left_behind
    }

    /// Sends our own row to every peer at once and waits for them all (each
    /// within the RPC timeout).
    pub(super) async fn tell_peers(self: &Arc<Self>, row: MemberState) {
        let peers: Vec<NodeAddr> = self
            .table()
            .into_iter()
            .filter(|s| s.addr != self.me && s.status.serves())
            .map(|s| s.addr)
            .collect();
        let mut calls: FuturesUnordered<_> = peers
            .iter()
            .map(|peer| {
                let request = Request::Gossip(vec![row.clone()]);
                async move {
                    let result = self.call(peer, request, self.config.rpc_timeout).await;
                    (peer, result)
                }
            })
            .collect();
        while let Some((peer, result)) = calls.next().await {
            match result {
                Ok(Reply::Members(table)) => {
                    let effects =
                        self.with_swim(|swim, now| swim.on_gossip_reply(peer, table, now));
                    self.run_effects(effects);
                }
                Ok(other) => log::debug!("{}", unexpected(peer, &other)),
                Err(e) => log::debug!("telling a peer we are {:?} failed: {e}", row.status),
            }
        }
    }
}
