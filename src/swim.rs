//! SWIM failure detection and dissemination, with Lifeguard's refinements, as a
//! pure state machine: no sockets, threads or clocks of its own. The runtime
//! passes time in (`now`: a [`Duration`] since any fixed start, the same for
//! every call), calls [`Swim::tick`] by [`Swim::next_deadline`], feeds it what
//! peers said, and carries out the [`Effect`]s it returns. Randomness comes from
//! a ChaCha8 generator seeded at construction, so a seed replays a history.
//!
//! # Protocol
//!
//! - **Probing.** Once per protocol period, one member is pinged: members are
//!   taken in a shuffled round-robin order (each member once per round; a new
//!   member goes in at a random place in the current round). A ping is a push of
//!   our piggyback (see below), and its reply is the ack. With no ack within the
//!   probe timeout (or as soon as the runtime reports the call failed), `k`
//!   other members are asked to probe it for us. No ack, direct or indirect, by
//!   the end of the period: the member is `Suspect`.
//! - **Suspicion.** Every member that learns the suspicion starts its own timer;
//!   if no refutation (the suspect alive at a newer incarnation) arrives in
//!   time, it declares the member `Dead`. The timeout starts at `suspicion_max`
//!   and shrinks towards `suspicion_min` as other members confirm the suspicion
//!   (Lifeguard's formula, `K` = `confirmations`). A confirmation is the same
//!   suspicion heard from another member, or our own failed probe. (Our wire row
//!   carries no accuser, so a confirmation may be a relay rather than an
//!   independent witness; it still shows the suspicion spread unrefuted.)
//!   A leaving member cannot be suspected at its incarnation (its own notice
//!   outranks a suspicion, see [`crate::membership`]), so a failed probe of it
//!   starts a local timer only, with the same timeout.
//! - **Dissemination.** Every table change goes into a queue of broadcasts,
//!   each to be sent about `retransmit_mult · ⌈log2(n + 1)⌉` times. Every push and
//!   every reply carries our own row, the receiver's row if we hold it suspect
//!   or dead (so it can refute at once), and up to `max_piggyback` of the
//!   freshest broadcasts: messages stay bounded whatever happens. While the
//!   queue is not empty, it is also pushed to `gossip_fanout` random members
//!   every `gossip_interval`, at once for our own verdicts and refutations.
//! - **Anti-entropy.** Every `sync_interval` the full table is pushed to one
//!   random member (every `dead_retry_every`-th time to a member we hold dead,
//!   so healed partitions find each other; a seed while we know nobody), and
//!   the receiver answers with its full table. That brings joiners up to date.
//! - **Local health** (Lifeguard). A score from 0 to `max_health` scales our
//!   probe period and timeout by `1 + score`. It rises when our probe failed and
//!   helpers did not even answer (so the fault may be ours), when we had to
//!   refute a suspicion about ourselves, and when we missed our own deadline
//!   (we were paused or starved: a tick or message arrived more than half a
//!   period after [`Swim::next_deadline`]). It falls by one per acked probe.
//!   After a missed deadline we also drop the probe in flight without a
//!   verdict and restart our suspicion timers: what we did not hear while
//!   stalled is no evidence against anyone.
//!
//! - **Confirmation.** A member we know only from others' word (gossip, a
//!   seed's table, a joiner's `enter`) serves no share of our ring until it
//!   answered a call we made to its address with its own row first (see
//!   [`crate::membership`]): a ping's ack, or the reply to a gossip push or
//!   sync. A push in which it names itself does not count, since anyone can
//!   write any row first. As soon as we learn of an unconfirmed member we push
//!   our piggyback to it ([`Effect::Gossip`]), at most `confirm_burst` such
//!   pushes per `gossip_interval`; the rest wait, and every unconfirmed member
//!   is also probed in its turn, so one that never answers (a port that
//!   accepts connections and stays silent) is suspected and declared dead like
//!   any other. Unconfirmed members are neither asked to probe for us nor
//!   chosen for gossip and syncs, so fakes cannot starve dissemination. A
//!   joiner learns the ring from its seed's table and confirms each member by
//!   its answer to the greeting it sends every member (`Node::join`).
//! - **Plausible incarnations.** The machine tells the table its wall clock
//!   (the incarnation it was given, a start time in milliseconds, plus `now`),
//!   which refuses rows more than an hour ahead of it (see
//!   [`crate::membership`]).
//!
//! # Timing, from one `failure_timeout` F
//!
//! With period `T = F/20`: probe timeout `0.4 T`; indirect probes until the end
//! of the period; `suspicion_min = 4 T`, `suspicion_max = 8 T`; gossip every
//! `T/2` to 3 members; full sync every `5 T`. A member that goes silent is dead
//! everywhere after at most the sum of
//!
//! | step | budget | why |
//! | --- | --- | --- |
//! | first probed | 7 T | each of the `n - 1` others probes it with chance `1/(n-1)` per period, so it escapes all of them for `k` periods with chance about `e^-k` (0.1% for 7), at any `n` |
//! | probe fails | 1 T | ping, 0.4 T, then indirect probes to the end of the period |
//! | first verdict | 4 T to 8 T | the first accuser's suspicion timer: 8 T alone, 4 T once `K` = 3 others confirm (they do within a period or two, since everyone's probes now fail too) |
//! | news spreads | 4 T | a node whose queue was idle forwards news at once to 3 members, then every T/2: `log4(n)` hops of one network delay each |
//!
//! that is 20 T = F. The budget holds for any `n` up to 64 because no step but
//! the last depends on `n`, and the last is a few network delays, not periods.
//! In the simulation (1 to 5 ms per message), over 100 seeds each, a member
//! paused at a random moment was dead everywhere after (median, worst):
//!
//! | n | F = 2 s | F = 5 s |
//! | --- | --- | --- |
//! | 5 | 0.56 s, 0.85 s | 1.39 s, 1.92 s |
//! | 24 | 0.56 s, 0.95 s | 1.45 s, 2.35 s |
//! | 64 | 0.61 s, 0.88 s | 1.44 s, 2.64 s |
//!
//! (`detection_times_over_many_seeds`, ignored by default). In the tests' runs
//! the first verdict came `suspicion_min` after the first suspicion:
//! confirmations arrived in time. A falsely suspected
//! member has at least `suspicion_min` to refute; at 64 members and 10% message
//! loss, thousands of suspicions over 30 s all ended refuted
//! (`false_deaths_under_heavy_loss`).
//!
//! # Driving it
//!
//! | effect | the runtime does | and reports |
//! | --- | --- | --- |
//! | [`Effect::Ping`] | `gossip(updates)` on `to` | the reply to [`Swim::on_reply`]; a failed call to [`Swim::on_no_reply`] (a late reply may still be given to `on_reply`) |
//! | [`Effect::IndirectPing`] | `probe(target)` on `via` (which pings `target` within `probe_timeout`) | [`Swim::on_indirect`]: `Some(answer)`, or `None` if `via` did not answer by the end of the period |
//! | [`Effect::Gossip`], [`Effect::Sync`] | `gossip(rows)` on `to` | the reply to [`Swim::on_gossip_reply`]; failures are ignored |
//! | [`Effect::Changed`] | rebuild the ring if the serving set changed | — |
//!
//! An incoming `gossip(rows)` goes to [`Swim::on_gossip`], whose first result
//! is the reply. Every push this machine makes starts with the sender's own row,
//! so the runtime names the caller with [`Swim::sender`].
//!
//! The wire must carry `Suspect` and `Leaving` for the protocol to work: a
//! suspicion that does not travel cannot be refuted, so a slow member would be
//! declared dead and come back, instead of clearing its name. Today's
//! `MemberStatus` has neither, and `wire::convert::member` sends both as
//! `ALIVE`; the runtime that adopts this machine needs two more values there.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand::rngs::ChaCha8Rng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{RngExt, SeedableRng};

use crate::addr::NodeAddr;
use crate::membership::{Change, MemberState, Membership, Status};

/// Names one probe, so that late answers to an earlier one are told apart.
pub type ProbeId = u64;

/// Timing and sizes. Build it with [`Config::from_failure_timeout`]; every
/// field may then be changed, at the cost of the guarantee in the module doc.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The bound on detection this configuration is derived from.
    pub failure_timeout: Duration,
    /// The protocol period: one probe each (`F/20`).
    pub period: Duration,
    /// How long a direct ping may take before helpers are asked (`0.4 T`).
    /// Also the timeout a helper's `probe` handler should give its own ping.
    pub probe_timeout: Duration,
    /// How many members are asked to probe for us (`k`, 3).
    pub indirect_probes: usize,
    /// The suspicion timeout once confirmed by `confirmations` others (`4 T`).
    pub suspicion_min: Duration,
    /// The suspicion timeout without confirmation (`8 T`).
    pub suspicion_max: Duration,
    /// Lifeguard's `K`: how many confirmations bring the timeout to its
    /// minimum (3). In views of fewer than `K + 2` up members the minimum
    /// applies at once, since that many confirmations cannot come.
    pub confirmations: usize,
    /// How often the broadcast queue is pushed, while not empty (`T/2`).
    pub gossip_interval: Duration,
    /// To how many random members it is pushed (3).
    pub gossip_fanout: usize,
    /// How often the full table is pushed to a random member (`5 T`).
    pub sync_interval: Duration,
    /// Every how many syncs one goes to a member we hold dead (4).
    pub dead_retry_every: u64,
    /// `λ`: each change is sent about `λ · ⌈log2(n + 1)⌉` times (3).
    pub retransmit_mult: u32,
    /// At most this many broadcasts ride on one message (10).
    pub max_piggyback: usize,
    /// The highest local health score (8): timeouts scale up to 9 times.
    pub max_health: u32,
    /// At most this many pushes to unconfirmed members per `gossip_interval`
    /// (4): a message naming a thousand fake members costs a few calls a
    /// period, not a thousand at once. Kept low because 64 members started
    /// at once each learn 63 unconfirmed ones together: at 32 per half
    /// period, 64 real processes on two cores drowned in pushes and did not
    /// agree within 10 s (`tests/consistency.rs`); at 4 they did.
    pub confirm_burst: usize,
}

impl Config {
    /// The configuration under which a silent member is declared dead by every
    /// other member within `failure_timeout`, at any size up to 64.
    pub fn from_failure_timeout(failure_timeout: Duration) -> Self {
        // At least a millisecond, so that time always moves on between ticks.
        let period = (failure_timeout / 20).max(Duration::from_millis(1));
        Config {
            failure_timeout,
            period,
            probe_timeout: period * 2 / 5,
            indirect_probes: 3,
            suspicion_min: period * 4,
            suspicion_max: period * 8,
            confirmations: 3,
            gossip_interval: period / 2,
            gossip_fanout: 3,
            sync_interval: period * 5,
            dead_retry_every: 4,
            retransmit_mult: 3,
            max_piggyback: 10,
            max_health: 8,
            confirm_burst: 4,
        }
    }
}

/// What the runtime is to do (see the table in the module doc).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Probe `to`: call `gossip(updates)` on it; report the reply with
    /// [`Swim::on_reply`], a failure with [`Swim::on_no_reply`].
    Ping {
        /// The member probed.
        to: NodeAddr,
        /// The probe the answer belongs to.
        probe: ProbeId,
        /// The rows to push (our own first).
        updates: Vec<MemberState>,
    },
    /// Ask `via` to probe `target`: call `probe(target)` on `via`; report with
    /// [`Swim::on_indirect`].
    IndirectPing {
        /// The helper.
        via: NodeAddr,
        /// The member it is to probe.
        target: NodeAddr,
        /// The probe the answer belongs to.
        probe: ProbeId,
    },
    /// Disseminate: call `gossip(updates)` on `to`; give the reply to
    /// [`Swim::on_gossip_reply`], ignore a failure.
    Gossip {
        /// The receiver.
        to: NodeAddr,
        /// The rows to push (our own first).
        updates: Vec<MemberState>,
    },
    /// Anti-entropy: call `gossip(table)` on `to` (it answers with its whole
    /// table); give the reply to [`Swim::on_gossip_reply`], ignore a failure.
    Sync {
        /// The receiver.
        to: NodeAddr,
        /// Our whole table (our own row first).
        table: Vec<MemberState>,
    },
    /// A row of our table changed (ours included), or its member was just
    /// confirmed: rebuild the ring if the set of serving members changed.
    Changed(MemberState),
}

/// The probe of the current protocol period.
#[derive(Clone, Debug)]
struct Probe {
    id: ProbeId,
    target: NodeAddr,
    sent: Duration,
    timeout: Duration,
    ends: Duration,
    acked: bool,
    indirect_sent: bool,
    helpers: Vec<NodeAddr>,
    answered: BTreeSet<NodeAddr>,
}

/// A suspicion we are timing.
#[derive(Clone, Debug)]
struct Suspicion {
    incarnation: i64,
    started: Duration,
    accusers: BTreeSet<NodeAddr>,
}

/// A change, and how many times it was sent.
#[derive(Clone, Debug)]
struct Broadcast {
    row: MemberState,
    sent: u32,
}

/// One node's SWIM state machine (see the module doc).
#[derive(Debug)]
pub struct Swim {
    members: Membership,
    config: Config,
    rng: ChaCha8Rng,
    /// Whom to sync with while we know nobody else.
    seeds: Vec<NodeAddr>,
    /// This round's probe order, and how far through it we are.
    order: Vec<NodeAddr>,
    cursor: usize,
    probe: Option<Probe>,
    next_probe_id: ProbeId,
    next_probe_at: Duration,
    /// Suspicions we time, by member (BTreeMaps throughout: iteration order
    /// is part of the history a seed replays).
    suspicions: BTreeMap<NodeAddr, Suspicion>,
    /// Changes still to piggyback, one per member (a newer row replaces an older).
    broadcasts: BTreeMap<NodeAddr, Broadcast>,
    next_gossip_at: Duration,
    next_sync_at: Duration,
    syncs: u64,
    health: u32,
    /// [`Swim::next_deadline`] as of the last input: an input much later than
    /// this means we were stalled.
    expected: Option<Duration>,
    missed_deadlines: u64,
    /// Our wall clock at `now` zero, in milliseconds: the incarnation we
    /// started with (see the module doc).
    wall_start: i64,
    /// Pushes to unconfirmed members still allowed in this gossip interval,
    /// and when the allowance is next refilled.
    confirm_budget: usize,
    next_confirm_refill: Duration,
    /// Unconfirmed members we pushed to, and when: each is asked again a
    /// period later if still unconfirmed (a push lost or timed out under load
    /// must not leave it waiting for its turn in a whole probe round).
    asked: BTreeMap<NodeAddr, Duration>,
}

impl Swim {
    /// A node `me`, alone in its view, alive at `incarnation`, its randomness
    /// drawn from `seed`. `now` sets the phase of its first probe and sync.
    pub fn new(me: NodeAddr, incarnation: i64, config: Config, seed: u64, now: Duration) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let next_probe_at = now + jitter(&mut rng, config.period);
        let next_sync_at = now + jitter(&mut rng, config.sync_interval);
        let confirm_budget = config.confirm_burst;
        Swim {
            members: Membership::new(me, incarnation),
            config,
            rng,
            seeds: Vec::new(),
            order: Vec::new(),
            cursor: 0,
            probe: None,
            next_probe_id: 0,
            next_probe_at,
            suspicions: BTreeMap::new(),
            broadcasts: BTreeMap::new(),
            next_gossip_at: now,
            next_sync_at,
            syncs: 0,
            health: 0,
            expected: None,
            missed_deadlines: 0,
            wall_start: incarnation,
            confirm_budget,
            next_confirm_refill: now,
            asked: BTreeMap::new(),
        }
    }

    /// The member table.
    pub fn membership(&self) -> &Membership {
        &self.members
    }

    /// Sets our own weight on the ring, before our row is first sent (see
    /// [`Membership::set_my_weight`]).
    pub fn set_my_weight(&mut self, weight: u32) {
        self.members.set_my_weight(weight);
    }

    /// The configuration.
    #[cfg(test)]
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The local health score (0 is healthy; see the module doc).
    #[cfg(test)]
    pub fn health(&self) -> u32 {
        self.health
    }

    /// How many times we found we had missed our own deadline.
    #[cfg(test)]
    pub fn missed_deadlines(&self) -> u64 {
        self.missed_deadlines
    }

    /// The member that sent `rows`: every push starts with its sender's row.
    pub fn sender(rows: &[MemberState]) -> Option<&NodeAddr> {
        rows.first().map(|row| &row.addr)
    }

    /// When [`Swim::tick`] should next be called; `None` once we left and have
    /// said so enough times (the runtime may then stop).
    pub fn next_deadline(&self) -> Option<Duration> {
        let mut next: Option<Duration> = None;
        let mut at = |t: Duration| next = Some(next.map_or(t, |n| n.min(t)));
        if !self.broadcasts.is_empty() {
            at(self.next_gossip_at);
        }
        if self.has_left() {
            return next;
        }
        if self.members.unconfirmed().next().is_some() {
            // Refill the allowance, or ask again those asked a period ago.
            at(self.next_confirm_refill);
            if let Some(&asked) = self.asked.values().min() {
                at(asked + self.config.period);
            }
        }
        match &self.probe {
            Some(p) => {
                if !p.acked && !p.indirect_sent {
                    at(p.sent + p.timeout);
                }
                at(p.ends);
            }
            None => at(self.next_probe_at),
        }
        let up = self.members.up_peers().len() + 1;
        for s in self.suspicions.values() {
            at(s.started + self.suspicion_timeout(s.accusers.len(), up));
        }
        at(self.next_sync_at);
        next
    }

    /// Starts joining through `seeds`: pushes our table to each. Until we know
    /// another member, every sync goes to a seed.
    pub fn join(&mut self, seeds: &[NodeAddr], now: Duration) -> Vec<Effect> {
        self.observe(now);
        self.seeds = seeds
            .iter()
            .filter(|s| *s != self.members.me())
            .cloned()
            .collect();
        // The next sync (to a seed again, if this one is lost) at a random
        // moment, so that nodes started together do not come back together.
        let interval = self.config.sync_interval;
        self.next_sync_at = now + interval / 2 + jitter(&mut self.rng, interval);
        let effects = self
            .seeds
            .iter()
            .map(|seed| Effect::Sync {
                to: seed.clone(),
                table: self.full_table(),
            })
            .collect();
        self.settle();
        effects
    }

    /// Announces that we are handing our keys over: peers stop routing to us.
    pub fn start_leaving(&mut self, now: Duration) -> Vec<Effect> {
        self.observe(now);
        let mut effects = Vec::new();
        let row = self.members.start_leaving();
        self.own_news(row, now, &mut effects);
        self.gossip_if_due(now, &mut effects);
        self.settle();
        effects
    }

    /// Announces that we left. From now on we no longer probe or sync; we keep
    /// answering, and push our farewell until [`Swim::next_deadline`] is `None`.
    pub fn leave(&mut self, now: Duration) -> Vec<Effect> {
        self.observe(now);
        let mut effects = Vec::new();
        let row = self.members.leave();
        self.probe = None;
        self.suspicions.clear();
        self.own_news(row, now, &mut effects);
        self.gossip_if_due(now, &mut effects);
        self.settle();
        effects
    }

    /// Time passes: probe, time suspicions out, gossip, sync, as due.
    pub fn tick(&mut self, now: Duration) -> Vec<Effect> {
        self.observe(now);
        let mut effects = Vec::new();
        if !self.has_left() {
            self.step_probe(now, &mut effects);
            self.expire_suspicions(now, &mut effects);
            self.sync_if_due(now, &mut effects);
            self.confirm_pending(now, &mut effects);
        }
        self.gossip_if_due(now, &mut effects);
        self.settle();
        effects
    }

    /// A peer's push (`gossip(rows)`, ping or sync) from `from`: merges it and
    /// returns the reply rows. The reply is the whole table when the caller was
    /// new to us or gone in our view (a joiner, a healed partition), when the
    /// push was longer than a ping can be (a sync), or when the whole table is
    /// no longer than a ping; otherwise our own row and piggyback.
    pub fn on_gossip(
        &mut self,
        from: &NodeAddr,
        rows: Vec<MemberState>,
        now: Duration,
    ) -> (Vec<MemberState>, Vec<Effect>) {
        self.observe(now);
        let mut effects = Vec::new();
        let knew = self.members.status(from).is_some_and(Status::is_up);
        let pushed = rows.len();
        self.merge(from, rows, now, &mut effects);
        self.confirm_pending(now, &mut effects);
        let bound = self.config.max_piggyback + 2;
        let reply = if !knew || pushed > bound || self.members.size() <= bound {
            self.full_table()
        } else {
            self.outgoing(from)
        };
        self.settle();
        (reply, effects)
    }

    /// The reply to our [`Effect::Ping`] `probe`, from `from`: an ack if it is
    /// the current probe, and rows to merge in any case.
    pub fn on_reply(
        &mut self,
        probe: ProbeId,
        from: &NodeAddr,
        rows: Vec<MemberState>,
        now: Duration,
    ) -> Vec<Effect> {
        self.observe(now);
        let mut effects = Vec::new();
        let itself = Swim::sender(&rows) == Some(from);
        self.merge(from, rows, now, &mut effects);
        if itself {
            self.answered(from, &mut effects);
        }
        self.confirm_pending(now, &mut effects);
        if let Some(p) = self.probe.as_mut()
            && p.id == probe
            && p.target == *from
        {
            p.acked = true;
            self.forget_local_suspicion(from);
        }
        self.settle();
        effects
    }

    /// Our [`Effect::Ping`] `probe` failed before its timeout (e.g. the
    /// connection was refused): ask helpers now rather than at the timeout.
    pub fn on_no_reply(&mut self, probe: ProbeId, now: Duration) -> Vec<Effect> {
        self.observe(now);
        let mut effects = Vec::new();
        if self
            .probe
            .as_ref()
            .is_some_and(|p| p.id == probe && !p.acked && !p.indirect_sent)
        {
            self.send_indirect(&mut effects);
        }
        self.settle();
        effects
    }

    /// `via`'s answer to our [`Effect::IndirectPing`] for `probe`: `Some(true)`
    /// if it reached the target, `Some(false)` if it did not (a nack), `None` if
    /// `via` itself did not answer. (It returns no effects today; every input
    /// returns them, so the runtime handles all inputs alike.)
    pub fn on_indirect(
        &mut self,
        probe: ProbeId,
        via: &NodeAddr,
        answer: Option<bool>,
        now: Duration,
    ) -> Vec<Effect> {
        self.observe(now);
        if let Some(p) = self.probe.as_mut()
            && p.id == probe
            && p.helpers.contains(via)
            && let Some(reached) = answer
        {
            p.answered.insert(via.clone());
            if reached {
                p.acked = true;
                let target = p.target.clone();
                self.forget_local_suspicion(&target);
            }
        }
        self.settle();
        Vec::new()
    }

    /// The reply to our [`Effect::Gossip`] or [`Effect::Sync`] (or to any
    /// `gossip` call the runtime made) from `from`, the address called: if
    /// it answered with its own row first, it is confirmed.
    pub fn on_gossip_reply(
        &mut self,
        from: &NodeAddr,
        rows: Vec<MemberState>,
        now: Duration,
    ) -> Vec<Effect> {
        self.observe(now);
        let mut effects = Vec::new();
        let itself = Swim::sender(&rows) == Some(from);
        self.merge(from, rows, now, &mut effects);
        if itself {
            self.answered(from, &mut effects);
        }
        self.confirm_pending(now, &mut effects);
        self.settle();
        effects
    }

    /// News from outside the protocol (the 2009 `join`, `add` and `remove`, a
    /// joiner's `enter`): merges `rows` as if `from` had pushed them.
    pub fn learn(&mut self, from: &NodeAddr, rows: Vec<MemberState>, now: Duration) -> Vec<Effect> {
        self.observe(now);
        let mut effects = Vec::new();
        self.merge(from, rows, now, &mut effects);
        self.confirm_pending(now, &mut effects);
        self.settle();
        effects
    }

    /// Declares `addr` dead at once: a connection to it was refused, so
    /// nothing listens there any more (a crashed process), and waiting out a
    /// suspicion would only delay its replacement.
    pub fn declare_dead(&mut self, addr: &NodeAddr, now: Duration) -> Vec<Effect> {
        self.observe(now);
        let mut effects = Vec::new();
        self.suspicions.remove(addr);
        let prev = self.members.state(addr);
        if let Change::Updated(row) = self.members.declare_dead(addr) {
            let me = self.members.me().clone();
            self.changed(prev, row, &me, now, true, &mut effects);
        }
        self.settle();
        effects
    }

    /// Admits `addr` on the word of the 2009 protocol (no incarnation).
    pub fn admit_legacy(&mut self, addr: &NodeAddr, now: Duration) -> Vec<Effect> {
        self.observe(now);
        let mut effects = Vec::new();
        let prev = self.members.state(addr);
        if let Change::Updated(row) = self.members.admit_legacy(addr) {
            let me = self.members.me().clone();
            self.changed(prev, row, &me, now, true, &mut effects);
        }
        self.confirm_pending(now, &mut effects);
        self.settle();
        effects
    }

    /// Our whole table, our own row first (what a sync pushes).
    pub fn table(&self) -> Vec<MemberState> {
        self.full_table()
    }

    // ---- time ----

    /// Tells the table the wall clock, and notices a missed deadline: we
    /// were paused or starved.
    fn observe(&mut self, now: Duration) {
        let since_start = i64::try_from(now.as_millis()).unwrap_or(i64::MAX);
        self.members
            .set_wall(self.wall_start.saturating_add(since_start));
        let Some(expected) = self.expected else {
            return;
        };
        if now <= expected + self.config.period / 2 {
            return;
        }
        self.missed_deadlines += 1;
        self.raise_health(1);
        // What we did not hear while stalled is no evidence against anyone.
        self.probe = None;
        self.next_probe_at = now;
        for s in self.suspicions.values_mut() {
            s.started = now;
        }
        self.expected = None;
    }

    /// Records when we expect to be called next.
    fn settle(&mut self) {
        self.expected = self.next_deadline();
    }

    fn scaled(&self, d: Duration) -> Duration {
        d * (1 + self.health)
    }

    fn raise_health(&mut self, by: u32) {
        self.health = (self.health + by).min(self.config.max_health);
    }

    fn has_left(&self) -> bool {
        self.members.my_state().status == Status::Left
    }

    // ---- probing ----

    fn step_probe(&mut self, now: Duration, effects: &mut Vec<Effect>) {
        if self
            .probe
            .as_ref()
            .is_some_and(|p| !p.acked && !p.indirect_sent && now >= p.sent + p.timeout)
        {
            self.send_indirect(effects);
        }
        if self.probe.as_ref().is_some_and(|p| now >= p.ends) {
            self.finish_probe(now, effects);
        }
        if self.probe.is_none() && now >= self.next_probe_at {
            self.start_probe(now, effects);
        }
    }

    fn start_probe(&mut self, now: Duration, effects: &mut Vec<Effect>) {
        let period = self.scaled(self.config.period);
        self.next_probe_at = now + period;
        let Some(target) = self.next_target() else {
            return;
        };
        let id = self.next_probe_id;
        self.next_probe_id += 1;
        let updates = self.outgoing(&target);
        self.probe = Some(Probe {
            id,
            target: target.clone(),
            sent: now,
            timeout: self.scaled(self.config.probe_timeout),
            ends: now + period,
            acked: false,
            indirect_sent: false,
            helpers: Vec::new(),
            answered: BTreeSet::new(),
        });
        effects.push(Effect::Ping {
            to: target,
            probe: id,
            updates,
        });
    }

    /// The next member in the shuffled round-robin order; a new round
    /// (reshuffled) when this one is done.
    fn next_target(&mut self) -> Option<NodeAddr> {
        let mut reshuffled = false;
        loop {
            if self.cursor >= self.order.len() {
                if reshuffled {
                    return None;
                }
                self.order = self.members.up_peers();
                self.order.shuffle(&mut self.rng);
                self.cursor = 0;
                reshuffled = true;
                continue;
            }
            let candidate = self.order[self.cursor].clone();
            self.cursor += 1;
            if self.members.status(&candidate).is_some_and(Status::is_up) {
                return Some(candidate);
            }
        }
    }

    /// Puts a member that just came up at a random place in the current round.
    fn add_to_order(&mut self, addr: &NodeAddr) {
        if self.order[self.cursor.min(self.order.len())..].contains(addr) {
            return;
        }
        let at = self
            .rng
            .random_range(self.cursor.min(self.order.len())..=self.order.len());
        self.order.insert(at, addr.clone());
    }

    fn send_indirect(&mut self, effects: &mut Vec<Effect>) {
        let Some(p) = self.probe.as_ref() else {
            return;
        };
        let target = p.target.clone();
        let id = p.id;
        let mut candidates: Vec<NodeAddr> = self
            .members
            .confirmed_peers()
            .into_iter()
            .filter(|a| *a != target && self.members.status(a) == Some(Status::Alive))
            .collect();
        candidates.shuffle(&mut self.rng);
        candidates.truncate(self.config.indirect_probes);
        for via in &candidates {
            effects.push(Effect::IndirectPing {
                via: via.clone(),
                target: target.clone(),
                probe: id,
            });
        }
        let p = self.probe.as_mut().expect("checked above");
        p.indirect_sent = true;
        p.helpers = candidates;
    }

    fn finish_probe(&mut self, now: Duration, effects: &mut Vec<Effect>) {
        let Some(p) = self.probe.take() else {
            return;
        };
        if p.acked {
            self.health = self.health.saturating_sub(1);
            return;
        }
        // Helpers that did not even answer hint that the fault is ours.
        let missed = if p.helpers.is_empty() {
            1
        } else {
            p.helpers.len() - p.answered.len()
        };
        self.raise_health(missed as u32);
        self.accuse(&p.target, now, effects);
    }

    /// Our own probe of `target` failed.
    fn accuse(&mut self, target: &NodeAddr, now: Duration, effects: &mut Vec<Effect>) {
        let me = self.members.me().clone();
        match self.members.status(target) {
            Some(Status::Alive) => {
                let prev = self.members.state(target);
                if let Change::Updated(row) = self.members.suspect(target) {
                    self.changed(prev, row, &me, now, true, effects);
                }
            }
            Some(Status::Suspect | Status::Leaving) => {
                let incarnation = self.members.state(target).expect("known").incarnation;
                self.suspicions
                    .entry(target.clone())
                    .or_insert_with(|| Suspicion {
                        incarnation,
                        started: now,
                        accusers: BTreeSet::new(),
                    })
                    .accusers
                    .insert(me);
            }
            _ => {}
        }
    }

    /// A leaving member cannot refute a local suspicion at its incarnation (no
    /// one else holds it), so its ack ends the suspicion.
    fn forget_local_suspicion(&mut self, addr: &NodeAddr) {
        if self.members.status(addr) == Some(Status::Leaving) {
            self.suspicions.remove(addr);
        }
    }

    // ---- confirmation ----

    /// `from`, called by us, answered with its own row: it may serve.
    fn answered(&mut self, from: &NodeAddr, effects: &mut Vec<Effect>) {
        self.asked.remove(from);
        if self.members.confirm(from)
            && let Some(row) = self.members.state(from)
            && row.status.is_up()
        {
            // Its share of the ring is ours to rebuild.
            effects.push(Effect::Changed(row));
        }
    }

    /// Pushes to unconfirmed members not yet asked, within the budget.
    fn confirm_pending(&mut self, now: Duration, effects: &mut Vec<Effect>) {
        if self.has_left() {
            return;
        }
        if now >= self.next_confirm_refill {
            self.confirm_budget = self.config.confirm_burst;
            self.next_confirm_refill = now + self.config.gossip_interval;
        }
        // Forget the asked that were confirmed or went down meanwhile, so a
        // member coming up again is asked again.
        let members = &self.members;
        let retry = self.config.period;
        self.asked.retain(|a, at| {
            members.status(a).is_some_and(Status::is_up)
                && !members.is_confirmed(a)
                && now < *at + retry
        });
        if self.confirm_budget == 0 {
            return;
        }
        let to_ask: Vec<NodeAddr> = self
            .members
            .unconfirmed()
            .filter(|a| !self.asked.contains_key(*a))
            .take(self.confirm_budget)
            .cloned()
            .collect();
        for to in to_ask {
            self.confirm_budget -= 1;
            self.asked.insert(to.clone(), now);
            let updates = self.outgoing(&to);
            effects.push(Effect::Gossip { to, updates });
        }
    }

    // ---- suspicion ----

    /// Lifeguard: `max − (max − min) · log(C + 1) / log(K + 1)`, at least
    /// `min`, where `C` counts confirmations beyond the first accuser.
    fn suspicion_timeout(&self, accusers: usize, up: usize) -> Duration {
        let (min, max) = (self.config.suspicion_min, self.config.suspicion_max);
        let k = self.config.confirmations;
        if k == 0 || up < k + 2 || max <= min {
            return min;
        }
        let c = accusers.saturating_sub(1).min(k) as f64;
        let shrink = (c + 1.0).ln() / (k as f64 + 1.0).ln();
        max - (max - min).mul_f64(shrink)
    }

    fn expire_suspicions(&mut self, now: Duration, effects: &mut Vec<Effect>) {
        let up = self.members.up_peers().len() + 1;
        let expired: Vec<(NodeAddr, i64)> = self
            .suspicions
            .iter()
            .filter(|(_, s)| now >= s.started + self.suspicion_timeout(s.accusers.len(), up))
            .map(|(addr, s)| (addr.clone(), s.incarnation))
            .collect();
        let me = self.members.me().clone();
        for (addr, incarnation) in expired {
            self.suspicions.remove(&addr);
            let prev = self.members.state(&addr);
            if prev.as_ref().is_some_and(|p| p.incarnation == incarnation)
                && let Change::Updated(row) = self.members.declare_dead(&addr)
            {
                self.changed(prev, row, &me, now, true, effects);
            }
        }
    }

    // ---- merging ----

    fn merge(
        &mut self,
        from: &NodeAddr,
        rows: Vec<MemberState>,
        now: Duration,
        effects: &mut Vec<Effect>,
    ) {
        // A member we hold gone (one coming back from a partition, say) may
        // push a table in which it declared the rest of us dead while it was
        // cut off. Its verdicts are only suspicions to us: a live accused
        // refutes in time, a dead one is declared by our own timers. Taking
        // them as verdicts would drop several members at once.
        let sender_up =
            *from == *self.members.me() || self.members.status(from).is_some_and(Status::is_up);
        for mut row in rows {
            if !sender_up
                && row.status == Status::Dead
                && row.addr != *from
                && self.members.state(&row.addr).is_some_and(|known| {
                    known.incarnation == row.incarnation && known.status.serves()
                })
            {
                row.status = Status::Suspect;
            }
            if row.addr == *self.members.me() {
                if let Change::Refuted(mine) = self.members.apply(row) {
                    self.raise_health(1);
                    self.own_news(mine, now, effects);
                }
                continue;
            }
            let prev = self.members.state(&row.addr);
            match self.members.apply(row.clone()) {
                Change::Updated(new) => self.changed(prev, new, from, now, false, effects),
                Change::None => {
                    // The same suspicion from someone else confirms ours.
                    if row.status == Status::Suspect
                        && *from != row.addr
                        && let Some(s) = self.suspicions.get_mut(&row.addr)
                        && s.incarnation == row.incarnation
                    {
                        s.accusers.insert(from.clone());
                    }
                }
                Change::Refuted(_) => {}
            }
        }
    }

    /// A row about another member changed (`prev` was our row before).
    fn changed(
        &mut self,
        prev: Option<MemberState>,
        row: MemberState,
        from: &NodeAddr,
        now: Duration,
        urgent: bool,
        effects: &mut Vec<Effect>,
    ) {
        match row.status {
            Status::Suspect => {
                let s = self
                    .suspicions
                    .entry(row.addr.clone())
                    .or_insert_with(|| Suspicion {
                        incarnation: row.incarnation,
                        started: now,
                        accusers: BTreeSet::new(),
                    });
                if s.incarnation != row.incarnation {
                    *s = Suspicion {
                        incarnation: row.incarnation,
                        started: now,
                        accusers: BTreeSet::new(),
                    };
                }
                s.accusers.insert(from.clone());
            }
            Status::Alive | Status::Leaving => {
                if self
                    .suspicions
                    .get(&row.addr)
                    .is_some_and(|s| s.incarnation < row.incarnation)
                {
                    self.suspicions.remove(&row.addr);
                }
            }
            Status::Dead | Status::Left => {
                self.suspicions.remove(&row.addr);
            }
        }
        let was_up = prev.is_some_and(|p| p.status.is_up());
        if row.status.is_up() && !was_up {
            self.add_to_order(&row.addr);
        }
        self.enqueue(row.clone());
        if urgent {
            self.next_gossip_at = self.next_gossip_at.min(now);
        }
        effects.push(Effect::Changed(row));
    }

    /// Our own row changed (refutation, leaving, left): spread it at once.
    fn own_news(&mut self, row: MemberState, now: Duration, effects: &mut Vec<Effect>) {
        self.enqueue(row.clone());
        self.next_gossip_at = self.next_gossip_at.min(now);
        effects.push(Effect::Changed(row));
    }

    // ---- dissemination ----

    fn enqueue(&mut self, row: MemberState) {
        self.broadcasts
            .insert(row.addr.clone(), Broadcast { row, sent: 0 });
    }

    /// How many times each change is sent: `λ · ⌈log2(n + 1)⌉`, with `n` the
    /// table's size when it is sent (a joiner's first rows go out as often as
    /// its last).
    fn retransmit_limit(&self) -> u32 {
        let n = self.members.size() as u32;
        self.config.retransmit_mult * (u32::BITS - n.leading_zeros()).max(1)
    }

    /// Our whole table, our own row first.
    fn full_table(&self) -> Vec<MemberState> {
        let me = self.members.my_state();
        let mut rows = vec![me.clone()];
        rows.extend(
            self.members
                .table()
                .into_iter()
                .filter(|r| r.addr != me.addr),
        );
        rows
    }

    /// The rows for a message to `to`: our row, `to`'s row if we hold it
    /// suspect or dead, then the freshest broadcasts.
    fn outgoing(&mut self, to: &NodeAddr) -> Vec<MemberState> {
        let me = self.members.my_state();
        let mut rows = vec![me.clone()];
        if let Some(theirs) = self.members.state(to)
            && matches!(theirs.status, Status::Suspect | Status::Dead)
        {
            rows.push(theirs);
        }
        // The least sent first; ties by address, so the choice is reproducible.
        let mut fresh: Vec<(u32, NodeAddr)> = self
            .broadcasts
            .iter()
            .map(|(addr, b)| (b.sent, addr.clone()))
            .collect();
        fresh.sort();
        let limit = self.retransmit_limit();
        for (_, addr) in fresh.into_iter().take(self.config.max_piggyback) {
            let b = self.broadcasts.get_mut(&addr).expect("listed");
            if !rows.iter().any(|r| r.addr == addr) {
                rows.push(b.row.clone());
            }
            b.sent += 1;
            if b.sent >= limit {
                self.broadcasts.remove(&addr);
            }
        }
        rows
    }

    fn gossip_if_due(&mut self, now: Duration, effects: &mut Vec<Effect>) {
        if self.broadcasts.is_empty() || now < self.next_gossip_at {
            return;
        }
        self.next_gossip_at = now + self.config.gossip_interval;
        // Members that answered us first: fakes must not soak up the fanout.
        let mut peers = self.members.confirmed_peers();
        if peers.is_empty() {
            peers = self.members.up_peers();
        }
        if peers.is_empty() {
            // Nobody to tell: the news is moot.
            self.broadcasts.clear();
            return;
        }
        peers.shuffle(&mut self.rng);
        peers.truncate(self.config.gossip_fanout);
        for to in peers {
            let updates = self.outgoing(&to);
            effects.push(Effect::Gossip { to, updates });
        }
    }

    fn sync_if_due(&mut self, now: Duration, effects: &mut Vec<Effect>) {
        if now < self.next_sync_at {
            return;
        }
        self.next_sync_at = now + self.config.sync_interval;
        self.syncs += 1;
        let mut up = self.members.confirmed_peers();
        if up.is_empty() {
            up = self.members.up_peers();
        }
        let dead: Vec<NodeAddr> = self
            .members
            .table()
            .into_iter()
            .filter(|r| r.status == Status::Dead)
            .map(|r| r.addr)
            .collect();
        let every = self.config.dead_retry_every.max(1);
        let to = if up.is_empty() {
            self.seeds.choose(&mut self.rng)
        } else if self.syncs.is_multiple_of(every) && !dead.is_empty() {
            dead.choose(&mut self.rng)
        } else {
            up.choose(&mut self.rng)
        };
        if let Some(to) = to.cloned() {
            effects.push(Effect::Sync {
                to,
                table: self.full_table(),
            });
        }
    }
}

/// A random offset in `0..span`, so that nodes started together do not probe
/// and sync in lockstep.
fn jitter(rng: &mut ChaCha8Rng, span: Duration) -> Duration {
    let nanos = span.as_nanos() as u64;
    if nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(rng.random_range(0..nanos))
}

#[cfg(test)]
mod tests;
