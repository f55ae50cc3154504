//! Membership: carrying out what the SWIM state machine ([`crate::swim`])
//! decides, rebuilding the ring when the serving set changes, the gossip and
//! join handlers, and the ring-change epoch that wakes the other workers.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};

use super::{Node, View, ring_id_of};
use crate::addr::NodeAddr;
use crate::error::{Error, Result};
use crate::membership::{MemberState, Status};
use crate::peer::{Reply, Request};
use crate::ring::Ring;
use crate::swim::{Effect, Swim};
use crate::transport::{Transport, unexpected};

impl Node {
    /// Carries out what the membership state machine asked for: rebuilds
    /// the ring when the serving set changed, and sends its messages from
    /// tasks of their own (their answers go back into the machine).
    pub(super) fn run_effects(self: &Arc<Self>, effects: Vec<Effect>) {
        self.carry_out(effects);
        // An input may have queued news to send at once: let the worker look.
        self.swim_wake.notify_one();
    }

    /// [`Node::run_effects`] without waking the worker (the worker's own).
    pub(super) fn carry_out(self: &Arc<Self>, effects: Vec<Effect>) {
        let mut ring_changed = false;
        let mut refuted = false;
        // What happened to other members, for the operator's log line.
        let mut news: Vec<String> = Vec::new();
        for effect in effects {
            match effect {
                Effect::Changed(row) => {
                    if row.addr != self.me {
                        news.push(format!("{} {}", row.addr, row.status.name()));
                    }
                    if row.addr == self.me {
                        let before = self.incarnation.swap(row.incarnation, Ordering::AcqRel);
                        refuted |= row.status == Status::Alive && row.incarnation > before;
                    } else if row.status.is_gone() {
                        self.out.forget(&row.addr);
                    }
                    ring_changed |= Self::rebuild_ring(&mut self.view.write());
                }
                Effect::Ping { to, probe, updates } => {
                    let node = self.clone();
                    self.tasks.spawn(async move {
                        let timeout = node.swim_config.probe_timeout;
                        let answer = node.call(&to, Request::Gossip(updates), timeout).await;
                        let effects = match answer {
                            Ok(Reply::Members(rows)) => {
                                node.with_swim(|swim, now| swim.on_reply(probe, &to, rows, now))
                            }
                            Err(Error::Unreachable { refused: true, .. }) => {
                                // Nothing listens there: a crash, not a slow node.
                                log::warn!("{to} refused a connection; dropping it from the ring");
                                node.with_swim(|swim, now| swim.declare_dead(&to, now))
                            }
                            _ => node.with_swim(|swim, now| swim.on_no_reply(probe, now)),
                        };
                        node.run_effects(effects);
                    });
                }
                Effect::IndirectPing { via, target, probe } => {
                    let node = self.clone();
                    self.tasks.spawn(async move {
                        let timeout = node.swim_config.period;
                        let answer = node.call(&via, Request::Probe(target), timeout).await;
                        let answer = match answer {
                            Ok(Reply::Probed(reached)) => Some(reached),
                            _ => None,
                        };
                        let effects =
                            node.with_swim(|swim, now| swim.on_indirect(probe, &via, answer, now));
                        node.run_effects(effects);
                    });
                }
                Effect::Gossip { to, updates: rows } | Effect::Sync { to, table: rows } => {
                    let node = self.clone();
                    self.tasks
                        .spawn(async move { node.exchange(&to, rows).await });
                }
            }
        }
        if refuted {
            // We were suspected or declared dead: writes may have gone
            // elsewhere meanwhile.
            log::warn!(
                "{}: peers suspected or declared us dead; refuted, catching up",
                self.me
            );
            self.syncing.store(true, Ordering::Release);
        }
        if ring_changed {
            // Our share of the keys changed: keys we now own may have had
            // writes acknowledged without us. Until anti-entropy has compared
            // them with every peer, reads ask a quorum.
            let members = self.members_text();
            log::info!(
                "{}: ring is now {} members {members:?} ({})",
                self.me,
                members.len(),
                news.join(", ")
            );
            self.syncing.store(true, Ordering::Release);
            self.agreed.store(0, Ordering::Release);
            self.bump_epoch();
            // Confirm the new view with every peer soon (one burst for a
            // run of changes), so the node vouches for its copies again as
            // soon as they agree.
            if !self.confirming.swap(true, Ordering::AcqRel) {
                let node = self.clone();
                self.tasks.spawn(async move {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    node.confirming.store(false, Ordering::Release);
                    let peers = node.peers();
                    let mut pings: FuturesUnordered<_> =
                        peers.iter().map(|peer| node.ping(peer)).collect();
                    while pings.next().await.is_some() {}
                });
            }
        }
    }

    /// Runs `input` on the membership state machine at the current time.
    pub(super) fn with_swim<R>(&self, input: impl FnOnce(&mut Swim, Duration) -> R) -> R {
        let now = self.started.elapsed();
        input(&mut self.view.write().swim, now)
    }

    /// Pushes `rows` to `peer` and merges its answer (dissemination, syncs,
    /// and telling a peer whose ring differs from ours what we know).
    pub(super) async fn exchange(self: &Arc<Self>, peer: &NodeAddr, rows: Vec<MemberState>) {
        match self
            .call(peer, Request::Gossip(rows), self.config.rpc_timeout)
            .await
        {
            Ok(Reply::Members(table)) => {
                let effects = self.with_swim(|swim, now| swim.on_gossip_reply(peer, table, now));
                self.run_effects(effects);
            }
            Ok(other) => log::debug!("{}", unexpected(peer, &other)),
            Err(e) => self.note_failure(peer, &e),
        }
    }

    /// The membership worker: wakes at the state machine's deadlines (or when
    /// an input asks for news to go out at once) and runs its timers. It runs
    /// through a leave (the farewell must spread) and ends once the machine
    /// has nothing left to do.
    pub(super) async fn membership_worker(self: Arc<Self>) {
        loop {
            let deadline = self.view.read().swim.next_deadline();
            let Some(deadline) = deadline else { return };
            let at = self.started + deadline;
            tokio::select! {
                biased;
                () = self.swim_wake.notified() => {}
                () = tokio::time::sleep_until(at) => {}
            }
            let effects = self.with_swim(|swim, now| swim.tick(now));
            self.carry_out(effects);
        }
    }

    /// Recomputes the ring from the table; returns whether it changed.
    pub(super) fn rebuild_ring(view: &mut View) -> bool {
        let alive: Vec<(NodeAddr, u32)> = view
            .swim
            .membership()
            .alive_weighted()
            .map(|(m, w)| (m.clone(), w))
            .collect();
        let old: Vec<(NodeAddr, u32)> = view
            .ring
            .weighted_members()
            .map(|(m, w)| (m.clone(), w))
            .collect();
        if alive == old {
            return false;
        }
        // A member whose weight changed is removed and added again.
        let added: Vec<&(NodeAddr, u32)> = alive.iter().filter(|m| !old.contains(m)).collect();
        let removed: Vec<&(NodeAddr, u32)> = old.iter().filter(|m| !alive.contains(m)).collect();
        // A member or two more or less: hash only theirs (a ring of 64 has
        // a quarter million points, and a ring forms one member at a time).
        view.ring = Arc::new(if added.len() + removed.len() <= 4 {
            let mut ring = removed
                .iter()
                .fold(Ring::clone(&view.ring), |ring, (m, _)| ring.without(m));
            for (m, weight) in added {
                ring = ring.with_weight(m.clone(), *weight);
            }
            ring
        } else {
            Ring::weighted(alive)
        });
        view.ring_id = ring_id_of(&view.ring);
        true
    }

    pub(super) fn bump_epoch(&self) {
        self.epoch.modify(|e| *e += 1);
    }

    pub(super) fn epoch(&self) -> u64 {
        self.epoch.get()
    }

    /// Waits until the epoch moves past `seen`, a stop is requested, or
    /// `timeout` passes; returns the epoch.
    pub(super) async fn wait_past(&self, seen: u64, timeout: Duration) -> u64 {
        tokio::select! {
            biased;
            _ = self.stop.wait_for(|s| *s) => {}
            _ = self.epoch.wait_for(|e| *e != seen) => {}
            () = tokio::time::sleep(timeout) => {}
        }
        self.epoch()
    }

    pub(super) fn members_text(&self) -> Vec<String> {
        self.members().iter().map(ToString::to_string).collect()
    }

    /// A failed call to `peer`: a refused connection means nothing listens
    /// there any more, so it is dropped at once; anything else is left to the
    /// failure detector, which does not evict a node for one slow answer.
    pub(super) fn note_failure(self: &Arc<Self>, peer: &NodeAddr, error: &Error) {
        if let Error::Unreachable { refused: true, .. } = error {
            if self.view.read().swim.membership().status(peer) == Some(Status::Alive) {
                log::warn!("{peer} refused a connection; dropping it from the ring");
            }
            self.declare_dead(peer);
        } else {
            // Every such error names the peer already.
            log::debug!("{error}");
        }
    }

    /// A peer's push (`gossip`): merge it and answer (with our table to a
    /// joiner or a sync, else our piggyback).
    pub fn gossip(self: &Arc<Self>, rows: Vec<MemberState>) -> Vec<MemberState> {
        let Some(from) = Swim::sender(&rows).cloned() else {
            return self.table();
        };
        let (reply, effects) = self.with_swim(|swim, now| swim.on_gossip(&from, rows, now));
        self.run_effects(effects);
        reply
    }

    /// A new node announces itself (`enter`): admit it (the news spreads with
    /// the state machine's gossip) and answer with our whole table.
    pub fn enter(self: &Arc<Self>, state: MemberState) -> Vec<MemberState> {
        log::info!("{} asks to join", state.addr);
        let from = state.addr.clone();
        let effects = self.with_swim(|swim, now| swim.learn(&from, vec![state], now));
        self.run_effects(effects);
        self.view.read().swim.table()
    }

    /// The 2009 `join`/`add`: admit `addr` (no incarnation on that wire).
    pub fn admit_legacy(self: &Arc<Self>, addr: &NodeAddr) {
        let effects = self.with_swim(|swim, now| swim.admit_legacy(addr, now));
        self.run_effects(effects);
    }

    /// Drops `addr` from the ring and spreads the news (the 2009 `remove`, or
    /// a refused connection).
    pub fn declare_dead(self: &Arc<Self>, addr: &NodeAddr) {
        let effects = self.with_swim(|swim, now| swim.declare_dead(addr, now));
        self.run_effects(effects);
    }

    /// Joins the ring that `seed` belongs to: announce ourselves, take its
    /// table, then greet every member directly and wait for them, so that no
    /// node still coordinates our keys as their owner once we do. Until then
    /// the node refuses reads and writes; after it, it catches up (reads
    /// consult a quorum) until a full anti-entropy round.
    pub async fn join(self: &Arc<Self>, seed: &NodeAddr) -> Result<()> {
        self.syncing.store(true, Ordering::Release);
        let me = self.view.read().swim.membership().my_state();
        let table = match self
            .call(seed, Request::Enter(me), self.config.rpc_timeout)
            .await?
        {
            Reply::Members(table) => table,
            other => return Err(unexpected(seed, &other)),
        };
        let mut effects = self.with_swim(|swim, now| swim.join(std::slice::from_ref(seed), now));
        effects.extend(self.with_swim(|swim, now| swim.on_gossip_reply(seed, table, now)));
        self.run_effects(effects);
        let my_state = self.view.read().swim.membership().my_state();
        self.tell_peers(my_state).await;
        self.ready.store(true, Ordering::Release);
        Ok(())
    }

    /// Marks the node as joined without a seed's table (the 2009 join path,
    /// which learns the members by other calls).
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }
}
