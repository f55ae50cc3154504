//! `Node`: one member of the ring. It owns the membership view, the local store,
//! replication and the peers it talks to, and decides where each request goes:
//! coordinated here, or forwarded to the key's replicas.
//!
//! Everything that waits is async on tokio: the server calls in from its
//! connection tasks, background work (gossip, failure detection,
//! anti-entropy, handoff, replication senders) runs as the node's [`Tasks`],
//! time is `tokio::time` and wall time the node's [`Clock`]. Peers are reached
//! only through a [`Transport`]. So the same code runs as a process (Thrift
//! over TCP) and in the deterministic simulation ([`crate::sim`]), where time
//! is virtual and the network is a seeded fault injector.
//!
//! # What keeps the guarantee (README, "Consistency model")
//!
//! - **One version per write**, taken by the node the client called and kept
//!   by every forward, retry and replica: a write that arrives late (its
//!   coordinator was paused, a forward was retried) carries its old version
//!   and loses to any later write instead of burying it.
//! - **An owner reads alone only while it can vouch for its copy**: it has
//!   joined, is not catching up, was not paused, and heard from a peer within
//!   the lease (a quarter of the failure timeout, shorter than the time peers
//!   need to declare it dead and move on). Otherwise, and on any stand-in,
//!   a read asks enough replicas that it meets every write quorum.
//! - **Forwarded reads keep tombstones**: the coordinator's answer carries the
//!   copy's version, so an erase is never answered with an older copy.
//! - **A write quorum counts every member not gone on purpose**, so a node cut
//!   off in a minority cannot acknowledge alone.
//! - **A leaving node says so first** (`Leaving`), so peers stop routing and
//!   replicating to it before it hands its keys over.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use md5::{Digest, Md5};
use parking_lot::RwLock;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::addr::NodeAddr;
use crate::antientropy::{BUCKETS, Digests, bucket_of};
use crate::config::{Config, MAX_KEY_BYTES};
use crate::error::{Error, Result};
use crate::membership::{MemberState, Status};
use crate::peer::{Entry, Reply, Request};
use crate::quorum::{ReadTally, newest};
use crate::replicate::{Ack, Replicator};
use crate::ring::Ring;
use crate::store::{Store, Stored};
use crate::swim::{Config as SwimConfig, Effect, Swim};
use crate::tasks::{Signal, Tasks};
use crate::transport::{BoxFuture, Transport, unexpected};
use crate::version::{Clock, Version, WallClock};

/// Forwards a request may take before the node holding it serves it itself.
/// Two covers a leave in progress (client -> old owner -> new owner); more only
/// means nodes disagree, and then serving beats bouncing.
pub const MAX_HOPS: i8 = 2;

/// The `hops` of a relayed read that only looks in the receiver's own store.
pub const PEEK: i8 = -1;

/// Who a node thinks the members are, and the ring derived from that.
struct View {
    /// The membership state machine, and through it the member table.
    swim: Swim,
    /// Alive members: where requests go (a leaving member is not in it, not
    /// even in its own view).
    ring: Arc<Ring<NodeAddr>>,
    /// A digest of `ring`'s members: two nodes with the same id place every
    /// key alike.
    ring_id: u64,
}

/// The id of a ring with these members (see [`View::ring_id`]).
fn ring_id_of(members: &[NodeAddr]) -> u64 {
    let mut md5 = Md5::new();
    for member in members {
        md5.update(member.to_string().as_bytes());
        md5.update(b"\n");
    }
    let digest = md5.finalize();
    u64::from_be_bytes(digest[..8].try_into().expect("an MD5 digest has 16 bytes"))
}

/// Handoff batches in flight at once: enough to keep the link and the
/// receiver busy while the next batch is read and encoded.
const HANDOFF_IN_FLIGHT: usize = 4;

/// One handoff batch's outcome: the acknowledgements it needs, the keys and
/// versions it carried, and the replicas' answers that came before it had them.
type HandoffBatch = (
    usize,
    Vec<(Vec<u8>, Version)>,
    Vec<(NodeAddr, Result<Reply>)>,
);

/// What one handoff pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HandoffReport {
    /// Keys acknowledged by a write quorum of their replicas and deleted here.
    pub moved: usize,
    /// Keys that should move but did not (too few replicas took them).
    pub stuck: usize,
    /// The ring changed mid-pass; the pass should be run again.
    pub restarted: bool,
}

/// The node's way out: the transport, behind the fault-injection switch.
struct Outbound {
    inner: Arc<dyn Transport>,
    isolated: AtomicBool,
}

impl Transport for Outbound {
    fn call(
        &self,
        peer: &NodeAddr,
        request: Request,
        timeout: Duration,
    ) -> BoxFuture<Result<Reply>> {
        if self.isolated.load(Ordering::Acquire) {
            let peer = peer.to_string();
            return Box::pin(async move {
                Err(Error::Unreachable {
                    peer,
                    reason: "this node is isolated (fault injection)".into(),
                    refused: false,
                })
            });
        }
        self.inner.call(peer, request, timeout)
    }

    fn forget(&self, peer: &NodeAddr) {
        self.inner.forget(peer);
    }
}

/// One member of the ring.
pub struct Node {
    config: Config,
    me: NodeAddr,
    clock: Clock,
    store: Store,
    view: RwLock<View>,
    out: Arc<Outbound>,
    replicator: Arc<Replicator>,
    tasks: Tasks,
    /// Counts ring changes, so background workers know when to look again.
    epoch: Signal<u64>,
    stop: Signal<bool>,
    /// Set while this node may hold stale data (just joined, came back after
    /// being declared dead, was paused, lost contact): reads then consult
    /// enough replicas to meet every write quorum.
    syncing: AtomicBool,
    /// Cleared until the node has joined its ring: it refuses reads and
    /// writes meanwhile, since it cannot tell where a key lives.
    ready: AtomicBool,
    /// When the node was made; the millisecond counts below are since then.
    started: Instant,
    /// When the pause watch last ran.
    last_tick: AtomicU64,
    /// When the node last noticed it had been paused.
    resumed: AtomicU64,
    /// How many times it noticed it had been paused.
    pauses: AtomicU64,
    /// When a peer last confirmed our ring id (it places keys as we do).
    agreed: AtomicU64,
    /// When a peer last answered with another ring id.
    disagreed: AtomicU64,
    /// Each peer's latest ring id, and when we heard it.
    views: parking_lot::Mutex<BTreeMap<NodeAddr, (u64, u64)>>,
    /// The membership state machine's timing.
    swim_config: SwimConfig,
    /// Wakes the membership worker when an input may have news to send.
    swim_wake: Notify,
    /// Our own incarnation as last seen, to notice refutations.
    incarnation: AtomicI64,
    /// Set while a burst of heartbeats to every peer is due.
    confirming: AtomicBool,
}

/// The parts a node is built from.
pub struct Parts {
    /// Settings.
    pub config: Config,
    /// The node's name on the ring.
    pub me: NodeAddr,
    /// Its keys.
    pub store: Store,
    /// How it reaches peers.
    pub transport: Arc<dyn Transport>,
    /// Where its tasks run (and what stops or freezes them).
    pub tasks: Tasks,
    /// Its wall clock (versions, incarnations, relay deadlines).
    pub wall: WallClock,
}

impl Node {
    /// A node alone in its own ring. When `config.seed` is set it refuses
    /// reads and writes until [`Node::join`] succeeds.
    pub fn new(parts: Parts) -> Arc<Self> {
        let Parts {
            config,
            me,
            store,
            transport,
            tasks,
            wall,
        } = parts;
        let digest = Md5::digest(me.to_string().as_bytes());
        let origin = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
        let clock = Clock::with_wall(origin, wall);
        let incarnation = (clock.wall_micros() / 1000) as i64;
        let swim_config = SwimConfig::from_failure_timeout(config.failure_timeout);
        let seed = u64::from(origin) ^ incarnation as u64;
        let swim = Swim::new(
            me.clone(),
            incarnation,
            swim_config.clone(),
            seed,
            Duration::ZERO,
        );
        let ring = Arc::new(Ring::new([me.clone()]));
        let ring_id = ring_id_of(ring.members());
        let out = Arc::new(Outbound {
            inner: transport,
            isolated: AtomicBool::new(false),
        });
        let replicator = Replicator::new(
            out.clone(),
            tasks.clone(),
            config.handoff_batch_entries,
            config.handoff_batch_bytes,
            config.rpc_timeout,
        );
        Arc::new(Node {
            clock,
            store,
            view: RwLock::new(View {
                swim,
                ring,
                ring_id,
            }),
            swim_config,
            swim_wake: Notify::new(),
            incarnation: AtomicI64::new(incarnation),
            confirming: AtomicBool::new(false),
            out,
            replicator,
            tasks,
            epoch: Signal::new(0),
            stop: Signal::new(false),
            syncing: AtomicBool::new(false),
            ready: AtomicBool::new(config.seed.is_none()),
            started: Instant::now(),
            last_tick: AtomicU64::new(0),
            resumed: AtomicU64::new(0),
            pauses: AtomicU64::new(0),
            agreed: AtomicU64::new(0),
            disagreed: AtomicU64::new(0),
            views: parking_lot::Mutex::new(BTreeMap::new()),
            config,
            me,
        })
    }

    /// Starts the background workers: membership (SWIM), view agreement, the
    /// pause watch, anti-entropy and handoff.
    pub fn start(self: &Arc<Self>) {
        // The pause watch measures from here, not from its first run: a
        // node frozen before that run (paused right after it joined) must
        // still notice the pause, and refuse the writes that waited in it.
        self.last_tick.store(self.now_ms(), Ordering::Release);
        let node = self.clone();
        self.tasks
            .spawn(async move { node.membership_worker().await });
        let node = self.clone();
        self.tasks
            .spawn(async move { node.agreement_worker().await });
        let node = self.clone();
        self.tasks.spawn(async move { node.pause_watch().await });
        let node = self.clone();
        self.tasks
            .spawn(async move { node.anti_entropy_worker().await });
        let node = self.clone();
        self.tasks.spawn(async move { node.handoff_worker().await });
    }

    /// This node's address (its name on the ring).
    pub fn me(&self) -> &NodeAddr {
        &self.me
    }

    /// The node's settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The local store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The node's tasks (the simulation serves requests with them).
    pub fn tasks(&self) -> &Tasks {
        &self.tasks
    }

    /// Whether the node has joined its ring and serves reads and writes.
    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Whether the node is catching up (its copies may be stale).
    pub fn syncing(&self) -> bool {
        self.syncing.load(Ordering::Acquire)
    }

    fn now_ms(&self) -> u64 {
        // Never 0, so that 0 in the atomics means "never".
        self.started.elapsed().as_millis() as u64 + 1
    }

    /// This node's ring id.
    pub fn ring_id(&self) -> u64 {
        self.view.read().ring_id
    }

    /// Notes a peer's ring id: the same as ours confirms our view, another
    /// one means we disagree on where keys live (and the two views must meet:
    /// push-pull with that peer at once).
    fn note_view(self: &Arc<Self>, peer: &NodeAddr, theirs: u64) {
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
    fn lease(&self) -> Duration {
        self.config.failure_timeout / 4
    }

    async fn call(&self, peer: &NodeAddr, request: Request, timeout: Duration) -> Result<Reply> {
        self.out.call(peer, request, timeout).await
    }

    // ---- membership ----

    /// Alive members, ourselves included (unless we are leaving), sorted.
    pub fn members(&self) -> Vec<NodeAddr> {
        self.view.read().ring.members().to_vec()
    }

    /// The whole member table, tombstones included.
    pub fn table(&self) -> Vec<MemberState> {
        self.view.read().swim.membership().table()
    }

    /// Alive members other than ourselves.
    fn peers(&self) -> Vec<NodeAddr> {
        self.view.read().swim.membership().peers()
    }

    /// Whether we are leaving (or left).
    fn leaving(&self) -> bool {
        self.view.read().swim.membership().my_state().status != Status::Alive
    }

    /// The member that owns `key` for routing.
    pub fn owner(&self, key: &[u8]) -> Option<NodeAddr> {
        self.view.read().ring.owner(key).cloned()
    }

    /// The routing ring. It is shared, so a request borrows its preference
    /// list from it without copying any address.
    fn placement(&self) -> Arc<Ring<NodeAddr>> {
        self.view.read().ring.clone()
    }

    /// The members holding `key`, owner first: its preference list.
    pub fn replicas(&self, key: &[u8]) -> Vec<NodeAddr> {
        self.view
            .read()
            .ring
            .owners(key, self.config.replicas)
            .into_iter()
            .cloned()
            .collect()
    }

    /// The replica count quorums are computed from: the configured count,
    /// capped by the members that may hold data (every member not gone on
    /// purpose, dead ones included). A node cut off from most of its ring thus
    /// still needs the same quorum, which it cannot reach alone.
    fn quorum_base(&self) -> usize {
        let known = self.view.read().swim.membership().known();
        self.config.replicas.min(known).max(1)
    }

    /// Whether our ring holds a majority of the members that may hold data:
    /// a node cut off in a minority (or whose view lost most of the ring)
    /// neither coordinates writes nor vouches for its copies.
    fn majority_view(&self) -> bool {
        let view = self.view.read();
        view.ring.len() * 2 > view.swim.membership().known()
    }

    fn write_quorum(&self) -> usize {
        self.config.write_quorum_of(self.quorum_base())
    }

    /// Replicas a read must hear from when the local copy cannot answer
    /// alone: enough to meet every write quorum (R + W > N).
    fn read_quorum(&self) -> usize {
        let n = self.quorum_base();
        let meets_writes = n + 1 - self.write_quorum().min(n);
        self.config.read_quorum_of(n).max(meets_writes)
    }

    /// Carries out what the membership state machine asked for: rebuilds
    /// the ring when the serving set changed, and sends its messages from
    /// tasks of their own (their answers go back into the machine).
    fn run_effects(self: &Arc<Self>, effects: Vec<Effect>) {
        self.carry_out(effects);
        // An input may have queued news to send at once: let the worker look.
        self.swim_wake.notify_one();
    }

    /// [`Node::run_effects`] without waking the worker (the worker's own).
    fn carry_out(self: &Arc<Self>, effects: Vec<Effect>) {
        let mut ring_changed = false;
        let mut refuted = false;
        for effect in effects {
            match effect {
                Effect::Changed(row) => {
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
            log::info!("{}: ring is now {:?}", self.me, self.members_text());
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
    fn with_swim<R>(&self, input: impl FnOnce(&mut Swim, Duration) -> R) -> R {
        let now = self.started.elapsed();
        input(&mut self.view.write().swim, now)
    }

    /// Pushes `rows` to `peer` and merges its answer (dissemination, syncs,
    /// and telling a peer whose ring differs from ours what we know).
    async fn exchange(self: &Arc<Self>, peer: &NodeAddr, rows: Vec<MemberState>) {
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
    async fn membership_worker(self: Arc<Self>) {
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
    fn rebuild_ring(view: &mut View) -> bool {
        let alive: Vec<NodeAddr> = view.swim.membership().alive().cloned().collect();
        if alive.as_slice() == view.ring.members() {
            return false;
        }
        view.ring_id = ring_id_of(&alive);
        let old = view.ring.members();
        let added: Vec<&NodeAddr> = alive.iter().filter(|m| !old.contains(m)).collect();
        let removed: Vec<&NodeAddr> = old.iter().filter(|m| !alive.contains(m)).collect();
        // A member or two more or less: hash only theirs (a ring of 64 has
        // a quarter million points, and a ring forms one member at a time).
        view.ring = Arc::new(if added.len() + removed.len() <= 4 {
            let mut ring = removed
                .iter()
                .fold(Ring::clone(&view.ring), |ring, m| ring.without(m));
            for m in added {
                ring = ring.with(m.clone());
            }
            ring
        } else {
            Ring::new(alive)
        });
        true
    }

    fn bump_epoch(&self) {
        self.epoch.modify(|e| *e += 1);
    }

    fn epoch(&self) -> u64 {
        self.epoch.get()
    }

    /// Waits until the epoch moves past `seen`, a stop is requested, or
    /// `timeout` passes; returns the epoch.
    async fn wait_past(&self, seen: u64, timeout: Duration) -> u64 {
        tokio::select! {
            biased;
            _ = self.stop.wait_for(|s| *s) => {}
            _ = self.epoch.wait_for(|e| *e != seen) => {}
            () = tokio::time::sleep(timeout) => {}
        }
        self.epoch()
    }

    fn members_text(&self) -> Vec<String> {
        self.members().iter().map(ToString::to_string).collect()
    }

    /// A failed call to `peer`: a refused connection means nothing listens
    /// there any more, so it is dropped at once; anything else is left to the
    /// failure detector, which does not evict a node for one slow answer.
    fn note_failure(self: &Arc<Self>, peer: &NodeAddr, error: &Error) {
        if let Error::Unreachable { refused: true, .. } = error {
            if self.view.read().swim.membership().status(peer) == Some(Status::Alive) {
                log::warn!("{peer} refused a connection; dropping it from the ring");
            }
            self.declare_dead(peer);
        } else {
            log::debug!("call to {peer} failed: {error}");
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

    // ---- failure detection and view agreement ----

    /// The timeout of a heartbeat.
    fn probe_timeout(&self) -> Duration {
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

    async fn heartbeat_within(self: &Arc<Self>, target: &NodeAddr, timeout: Duration) -> bool {
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
    async fn agreement_worker(self: Arc<Self>) {
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
    async fn pause_watch(self: Arc<Self>) {
        let period = self.config.failure_timeout / 10;
        while !self.wait_for_stop_timeout(period).await {
            self.noticed_pause();
        }
    }

    /// Whether the pause watch is late, meaning the node was just paused
    /// (noted, so the next look says no). Whoever looks first after a pause,
    /// the watch or a request, sees it; from then on the node catches up, and
    /// for a short grace refuses the writes that may have waited in it.
    fn noticed_pause(&self) -> bool {
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
    fn just_resumed(&self) -> bool {
        let resumed = self.resumed.load(Ordering::Acquire);
        resumed != 0 && self.now_ms().saturating_sub(resumed) < self.lease().as_millis() as u64
    }

    /// Whether a peer confirmed our ring recently enough (within the lease)
    /// that none can have declared us dead since, and no serving peer's latest
    /// word is another ring. The only member ever known holds it always; a node that
    /// holds every peer dead does not.
    fn lease_held(&self) -> bool {
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
    fn trusts_itself(&self) -> bool {
        let paused = self.noticed_pause() || self.just_resumed();
        self.ready() && !self.syncing() && !paused && self.lease_held() && self.majority_view()
    }

    // ---- reads and writes ----

    fn check_sizes(&self, key: &[u8], value: Option<&[u8]>) -> Result<()> {
        if key.len() > MAX_KEY_BYTES {
            return Err(Error::TooLarge {
                size: key.len(),
                limit: MAX_KEY_BYTES,
            });
        }
        let size = value.map_or(0, <[u8]>::len);
        if size > self.config.max_value_bytes {
            return Err(Error::TooLarge {
                size,
                limit: self.config.max_value_bytes,
            });
        }
        Ok(())
    }

    /// Whether this node coordinates a request for a key with these replicas
    /// without forwarding it: it is the owner, or the request has been
    /// forwarded enough (a leaving node keeps forwarding: its handoff may be
    /// done already). Otherwise the request goes to the first replica that
    /// answers, which may still turn out to be this node.
    fn coordinates(&self, replicas: &[&NodeAddr], hops: i8) -> bool {
        replicas.first().is_some_and(|o| **o == self.me) || (hops >= MAX_HOPS && !self.leaving())
    }

    /// Checks a write before anything is stored. `relayed`: it carries the
    /// version its entry node took.
    fn admit_write(
        &self,
        key: &[u8],
        value: Option<&[u8]>,
        expires: Option<i64>,
        relayed: bool,
    ) -> Result<()> {
        if !self.ready() {
            return Err(Error::Joining);
        }
        if !relayed && (self.noticed_pause() || self.just_resumed()) {
            // A client's write that waited in a paused node: a version taken
            // now could bury a later write the client made elsewhere.
            return Err(Error::Paused);
        }
        if let Some(expires) = expires
            && self.clock.wall_micros() as i64 > expires
        {
            // The sender gave up on us (we were paused or swamped) and has
            // moved on; the client may have too.
            return Err(Error::Expired);
        }
        self.check_sizes(key, value)
    }

    /// Serves a read at once if nothing needs waiting for: this node owns the
    /// key, trusts its copy, and holds one (a tombstone counts). `None` means
    /// the read needs [`Node::fetch`].
    pub fn fetch_now(&self, key: &[u8], hops: i8) -> Option<Result<Option<Vec<u8>>>> {
        if hops == PEEK {
            return Some(self.store.get(key).map(|s| s.and_then(|s| s.value)));
        }
        if !self.ready() {
            return Some(Err(Error::Joining));
        }
        let ring = self.placement();
        let replicas = ring.owners(key, self.config.replicas);
        if replicas.first() != Some(&&self.me) || !self.reads_alone() {
            return None;
        }
        match self.store.get(key) {
            Ok(Some(stored)) => Some(Ok(stored.value)),
            // A miss asks the other replicas.
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }

    /// Whether an owner's read may be answered by its own copy alone: only
    /// where one copy meets every write quorum (one replica, or the read
    /// quorum set so), and the node trusts its copies. With the defaults
    /// (N=3, W=2) a read always hears from two replicas that vouch for their
    /// copies: an owner cannot know alone that no write was acknowledged
    /// without it (peers that declared it dead, a stand-in coordinator).
    fn reads_alone(&self) -> bool {
        self.read_quorum() <= 1 && self.trusts_itself()
    }

    /// Serves a write at once if nothing needs waiting for: this node
    /// coordinates it and no other replica must acknowledge it (one replica).
    /// `None` means the write needs [`Node::write`].
    pub fn write_now(
        &self,
        key: &[u8],
        value: Option<&[u8]>,
        hops: i8,
        expires: Option<i64>,
    ) -> Option<Result<()>> {
        if let Err(e) = self.admit_write(key, value, expires, hops != 0) {
            return Some(Err(e));
        }
        if hops != 0 {
            // A relayed write carries the version its entry node took.
            return None;
        }
        let ring = self.placement();
        let replicas = ring.owners(key, self.config.replicas);
        let alone = self.coordinates(&replicas, hops)
            && replicas.iter().all(|r| **r == self.me)
            && self.write_quorum() <= 1;
        if !alone || replicas.is_empty() {
            return None;
        }
        let version = self.clock.tick();
        Some(self.store.merge(key, value, version).map(drop))
    }

    /// Whether a failed forward should move on to the key's next replica.
    fn try_next(self: &Arc<Self>, peer: &NodeAddr, error: &Error) -> bool {
        match error {
            Error::Unreachable { .. } | Error::Rpc { .. } => {
                self.note_failure(peer, error);
                true
            }
            _ => false,
        }
    }

    /// Reads `key` for a client: coordinated by its owner (or, when the owner
    /// cannot be reached, the next replica). `hops` counts forwards so far.
    pub async fn fetch(self: &Arc<Self>, key: &[u8], hops: i8) -> Result<Option<Vec<u8>>> {
        Ok(self.fetch_copy(key, hops).await?.and_then(|s| s.value))
    }

    /// Reads `key`'s newest copy, tombstone included, as a forwarded read
    /// answers it: `None` when no replica asked has ever seen the key.
    pub async fn fetch_copy(self: &Arc<Self>, key: &[u8], hops: i8) -> Result<Option<Stored>> {
        if hops == PEEK {
            return self.store.get(key);
        }
        if !self.ready() {
            return Err(Error::Joining);
        }
        let ring = self.placement();
        let replicas = ring.owners(key, self.config.replicas);
        if replicas.is_empty() {
            return Err(Error::NoOwner);
        }
        if self.coordinates(&replicas, hops) {
            let owner = replicas[0] == &self.me;
            return self.settled_read(key, &replicas, owner).await;
        }
        for (i, &target) in replicas.iter().enumerate() {
            if *target == self.me {
                return self.settled_read(key, &replicas, i == 0).await;
            }
            let request = Request::Read {
                key: key.to_vec(),
                hops: hops + 1,
            };
            match self.call(target, request, self.config.rpc_timeout).await {
                // A key we still hold but no longer replicate is on its way
                // to its owner; the newer of its copy and ours is the answer
                // (a tombstone there wins over an older value here).
                Ok(Reply::Found(theirs)) => return Ok(newest(theirs, self.store.get(key)?)),
                Ok(other) => return Err(unexpected(target, &other)),
                Err(e) if self.try_next(target, &e) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::NoOwner)
    }

    /// [`Node::coordinate_read`], given a moment to settle: right after a
    /// ring change the replicas catch up (anti-entropy, heartbeats) before
    /// they vouch for their copies again, which takes milliseconds; a read
    /// that arrives then waits for it (up to half the failure timeout) rather
    /// than fail.
    async fn settled_read(
        self: &Arc<Self>,
        key: &[u8],
        replicas: &[&NodeAddr],
        owner: bool,
    ) -> Result<Option<Stored>> {
        let deadline = Instant::now() + self.config.failure_timeout / 2;
        let mut answer = self.coordinate_read(key, replicas, owner).await;
        while matches!(answer, Err(Error::ReadQuorum { .. })) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
            // The ring may have changed meanwhile: place the key again.
            let ring = self.placement();
            let replicas = ring.owners(key, self.config.replicas);
            if !replicas.contains(&&self.me) && replicas.first() != Some(&&self.me) {
                return Err(Error::ReadQuorum {
                    vouched: 0,
                    needed: self.read_quorum(),
                });
            }
            let owner = replicas.first() == Some(&&self.me);
            answer = self.coordinate_read(key, &replicas, owner).await;
        }
        answer
    }

    /// Serves a read here. An owner that trusts its copy answers alone;
    /// otherwise (a miss, catching up, a stand-in for the owner, a read quorum
    /// above one) the other replicas are asked at once, the newest copy wins,
    /// at least [`Node::read_quorum`] replicas must have answered, and stale
    /// replicas are repaired with it.
    async fn coordinate_read(
        self: &Arc<Self>,
        key: &[u8],
        replicas: &[&NodeAddr],
        owner: bool,
    ) -> Result<Option<Stored>> {
        let local = self.store.get(key)?;
        let holds = replicas.contains(&&self.me);
        let trusted = holds && self.trusts_itself();
        if owner && trusted && self.reads_alone() && local.is_some() {
            log::trace!("read {}: owner alone", String::from_utf8_lossy(key));
            return Ok(local);
        }
        // Never fewer than every write quorum needs, however few replicas
        // this view holds: a shrunken view must not lower the bar.
        let quorum = self.read_quorum();
        let mut tally = ReadTally::new(quorum, local, trusted);
        let ring = self.ring_id();
        let mut asks: FuturesUnordered<_> = replicas
            .iter()
            .filter(|p| ***p != self.me)
            .map(|&peer| async move {
                let request = Request::ReplicaRead {
                    key: key.to_vec(),
                    ring,
                };
                (
                    peer,
                    self.call(peer, request, self.config.rpc_timeout).await,
                )
            })
            .collect();
        while let Some((peer, reply)) = asks.next().await {
            match reply {
                Ok(Reply::Replica {
                    copy,
                    trusted,
                    ring: theirs,
                }) => {
                    self.note_view(peer, theirs);
                    tally.answer(peer, copy, trusted);
                }
                Ok(other) => log::debug!("{}", unexpected(peer, &other)),
                Err(e) => self.note_failure(peer, &e),
            }
        }
        log::trace!(
            "read {}: {} of {quorum} answered (trusted self: {trusted}), newest {:?}",
            String::from_utf8_lossy(key),
            tally.vouched(),
            tally.best().map(|b| b.version)
        );
        let verdict = tally.verdict(holds)?;
        if let Some(best) = &verdict.newest {
            self.clock.observe(best.version);
            if verdict.repair_here {
                self.store.merge(key, best.value.as_deref(), best.version)?;
            }
            for peer in &verdict.repair {
                let entry = Entry::new(key.to_vec(), best.clone());
                self.replicator.send(peer, entry, None);
            }
        }
        Ok(verdict.newest)
    }

    /// Writes `key` (a value, or `None` to erase it): coordinated by its owner
    /// (or, when the owner cannot be reached, the next replica), acknowledged
    /// once a write quorum of replicas stored it. `hops` counts forwards so
    /// far. `version` is the write's version when relayed (a client's own call
    /// gets one here, once, whatever path it then takes); `expires` is when
    /// the node that relayed it stops waiting (wall microseconds).
    pub async fn write(
        self: &Arc<Self>,
        key: &[u8],
        value: Option<&[u8]>,
        hops: i8,
        version: Option<Version>,
        expires: Option<i64>,
    ) -> Result<()> {
        self.admit_write(key, value, expires, version.is_some())?;
        let version = version.unwrap_or_else(|| self.clock.tick());
        let ring = self.placement();
        let replicas = ring.owners(key, self.config.replicas);
        if replicas.is_empty() {
            return Err(Error::NoOwner);
        }
        if self.coordinates(&replicas, hops) {
            return self.coordinate_write(key, value, version, &replicas).await;
        }
        // Give up on the relay a little before our own call times out.
        let ours =
            self.clock.wall_micros() as i64 + (self.config.rpc_timeout * 9 / 10).as_micros() as i64;
        let expires = expires.map_or(ours, |e| e.min(ours));
        for &target in &replicas {
            if *target == self.me {
                return self.coordinate_write(key, value, version, &replicas).await;
            }
            let request = Request::Write {
                key: key.to_vec(),
                value: value.map(<[u8]>::to_vec),
                hops: hops.saturating_add(1),
                version,
                expires,
            };
            match self.call(target, request, self.config.rpc_timeout).await {
                Ok(_) => return Ok(()),
                Err(e) if self.try_next(target, &e) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::NoOwner)
    }

    /// Stores the write here (unless a newer copy is already here: then the
    /// write is simply older, and superseded) and sends it to the other
    /// replicas; returns once the write quorum holds it.
    async fn coordinate_write(
        self: &Arc<Self>,
        key: &[u8],
        value: Option<&[u8]>,
        version: Version,
        replicas: &[&NodeAddr],
    ) -> Result<()> {
        self.clock.observe(version);
        // However few replicas this ring has, never fewer acknowledgements
        // than a write needs of them.
        let quorum = self.write_quorum();
        if !self.majority_view() {
            return Err(Error::Quorum {
                stored: 0,
                needed: quorum,
            });
        }
        let here = replicas.contains(&&self.me);
        if here {
            self.store.merge(key, value, version)?;
        }
        let here = usize::from(here);
        let others: Vec<&NodeAddr> = replicas
            .iter()
            .copied()
            .filter(|p| **p != self.me)
            .collect();
        let needed = quorum.saturating_sub(here);
        if others.is_empty() && needed == 0 {
            return Ok(());
        }
        let ack = Ack::new();
        let entry = Entry::new(
            key.to_vec(),
            Stored {
                value: value.map(<[u8]>::to_vec),
                version,
            },
        );
        let ring = self.ring_id();
        for peer in &others {
            self.replicator
                .send(peer, entry.clone(), Some((ack.clone(), ring)));
        }
        if needed == 0 {
            return Ok(());
        }
        let acked = if others.len() < needed {
            0
        } else {
            ack.wait(needed, others.len(), self.config.rpc_timeout)
                .await
        };
        log::trace!(
            "write {} {:?} to {:?}: {} acks of {needed} needed",
            String::from_utf8_lossy(key),
            version,
            replicas,
            acked
        );
        if acked >= needed {
            Ok(())
        } else {
            Err(Error::Quorum {
                stored: acked + here,
                needed: quorum,
            })
        }
    }

    /// Takes over entries sent by a peer; for each key the newer version wins.
    pub fn absorb(&self, entries: Vec<Entry>) -> Result<usize> {
        let mut applied = 0;
        for entry in entries {
            self.clock.observe(entry.stored.version);
            if self.store.merge(
                &entry.key,
                entry.stored.value.as_deref(),
                entry.stored.version,
            )? {
                applied += 1;
            }
        }
        Ok(applied)
    }

    /// Answers a coordinator's quorum read: our copy, whether we vouch for it
    /// (we hold the key in our ring, our ring is the caller's `ring`, and we
    /// trust our copies), and our ring id.
    pub fn replica_read(&self, key: &[u8], ring: u64) -> Result<(Option<Stored>, bool, u64)> {
        let copy = self.store.get(key)?;
        let (ours, holds) = {
            let view = self.view.read();
            let holds = view
                .ring
                .owners(key, self.config.replicas)
                .contains(&&self.me);
            (view.ring_id, holds)
        };
        let trusted = ours == ring && holds && self.trusts_itself();
        Ok((copy, trusted, ours))
    }

    /// Takes a coordinator's writes (the newer copy wins, as for `absorb`),
    /// and acknowledges them only if we route as the coordinator did.
    pub fn replicate(&self, entries: Vec<Entry>, ring: u64) -> Result<()> {
        self.absorb(entries)?;
        if ring == self.ring_id() {
            Ok(())
        } else {
            Err(Error::Refused {
                peer: self.me.to_string(),
                message: "this node routes with another ring than the coordinator; \
                          retry once the ring settles"
                    .into(),
            })
        }
    }

    /// Our own copies of `keys`, tombstones included, with versions.
    pub fn peek(&self, keys: Vec<Vec<u8>>) -> Result<Vec<Entry>> {
        let mut entries = Vec::new();
        for key in keys {
            if let Some(stored) = self.store.get(&key)? {
                entries.push(Entry::new(key, stored));
            }
        }
        Ok(entries)
    }

    // ---- anti-entropy ----

    /// Whether `a` and `b` both replicate `key` in `ring`.
    fn both_replicate(
        &self,
        ring: &Ring<NodeAddr>,
        key: &[u8],
        a: &NodeAddr,
        b: &NodeAddr,
    ) -> bool {
        let owners = ring.owners(key, self.config.replicas);
        owners.contains(&a) && owners.contains(&b)
    }

    /// Digests of our copies of the keys we share with `peer`.
    fn digests_with(&self, ring: &Ring<NodeAddr>, peer: &NodeAddr) -> Result<Digests> {
        let mut digests = Digests::new();
        self.store.scan(|key, version, tombstone| {
            if self.both_replicate(ring, key, &self.me, peer) {
                digests.add(key, version, tombstone);
            }
            true
        })?;
        Ok(digests)
    }

    /// The ring to compare with `caller`, which must be a member in our view:
    /// comparing with a node we do not count (one coming back after being
    /// declared dead) would find nothing shared, and it would wrongly conclude
    /// that it has caught up.
    fn ring_shared_with(&self, caller: &NodeAddr) -> Result<Arc<Ring<NodeAddr>>> {
        let view = self.view.read();
        if view.ring.contains(caller) {
            Ok(view.ring.clone())
        } else {
            Err(Error::Refused {
                peer: self.me.to_string(),
                message: format!(
                    "{caller} is not a member in this node's view yet; retry after gossip"
                ),
            })
        }
    }

    /// Answers `diff_buckets`: where our copies shared with `caller` differ.
    pub fn diff_buckets(&self, caller: &NodeAddr, digests: &[i64]) -> Result<Vec<i32>> {
        let ring = self.ring_shared_with(caller)?;
        Ok(self.digests_with(&ring, caller)?.differing(digests))
    }

    /// Our keys shared with `peer` in `buckets`, grouped by bucket.
    fn shared_keys_in(
        &self,
        ring: &Ring<NodeAddr>,
        peer: &NodeAddr,
        buckets: &BTreeSet<usize>,
    ) -> Result<BTreeMap<usize, Vec<Vec<u8>>>> {
        let mut keys: BTreeMap<usize, Vec<Vec<u8>>> = BTreeMap::new();
        self.store.scan(|key, _, _| {
            let bucket = bucket_of(key);
            if buckets.contains(&bucket) && self.both_replicate(ring, key, &self.me, peer) {
                keys.entry(bucket).or_default().push(key.to_vec());
            }
            true
        })?;
        Ok(keys)
    }

    /// Answers `reconcile`: keeps the newer of each entry sent, and returns our
    /// entries in `buckets` (shared with `caller`) that are newer than the
    /// caller's or that it lacks.
    pub fn reconcile(
        &self,
        caller: &NodeAddr,
        buckets: &[i32],
        entries: Vec<Entry>,
    ) -> Result<Vec<Entry>> {
        let ring = self.ring_shared_with(caller)?;
        let mut theirs: BTreeMap<Vec<u8>, Version> = BTreeMap::new();
        for entry in entries {
            self.clock.observe(entry.stored.version);
            self.store.merge(
                &entry.key,
                entry.stored.value.as_deref(),
                entry.stored.version,
            )?;
            theirs.insert(entry.key, entry.stored.version);
        }
        let buckets: BTreeSet<usize> = buckets
            .iter()
            .map(|&b| b as usize)
            .filter(|&b| b < BUCKETS)
            .collect();
        let mut answer = Vec::new();
        for key in self
            .shared_keys_in(&ring, caller, &buckets)?
            .into_values()
            .flatten()
        {
            if let Some(stored) = self.store.get(&key)?
                && theirs.get(&key).is_none_or(|v| *v < stored.version)
            {
                answer.push(Entry::new(key, stored));
            }
        }
        Ok(answer)
    }

    /// Brings our copies and `peer`'s copies of the keys we share to the same
    /// versions: compare bucket digests, then exchange entries of the buckets
    /// that differ, in bounded batches. Returns how many entries we sent.
    pub async fn sync_with(self: &Arc<Self>, peer: &NodeAddr) -> Result<usize> {
        let ring = self.placement();
        let digests = self.digests_with(&ring, peer)?.to_wire();
        let request = Request::DiffBuckets {
            caller: self.me.clone(),
            digests,
        };
        let differing = match self.call(peer, request, self.config.rpc_timeout).await? {
            Reply::Buckets(buckets) => buckets,
            other => return Err(unexpected(peer, &other)),
        };
        if differing.is_empty() {
            return Ok(0);
        }
        let wanted: BTreeSet<usize> = differing
            .iter()
            .map(|&b| b as usize)
            .filter(|&b| b < BUCKETS)
            .collect();
        let mut keys = self.shared_keys_in(&ring, peer, &wanted)?;
        let mut sent = 0;
        let mut batch_buckets = Vec::new();
        let mut batch = Vec::new();
        let mut bytes = 0;
        let buckets: Vec<usize> = wanted.into_iter().collect();
        for (i, bucket) in buckets.iter().enumerate() {
            for key in keys.remove(bucket).unwrap_or_default() {
                if let Some(stored) = self.store.get(&key)? {
                    let entry = Entry::new(key, stored);
                    bytes += entry.bytes();
                    batch.push(entry);
                }
            }
            batch_buckets.push(*bucket as i32);
            let last = i + 1 == buckets.len();
            if last
                || bytes >= self.config.handoff_batch_bytes
                || batch.len() >= self.config.handoff_batch_entries
            {
                sent += batch.len();
                let request = Request::Reconcile {
                    caller: self.me.clone(),
                    buckets: std::mem::take(&mut batch_buckets),
                    entries: std::mem::take(&mut batch),
                };
                match self.call(peer, request, self.config.rpc_timeout).await? {
                    Reply::Entries(newer) => {
                        self.absorb(newer)?;
                    }
                    other => return Err(unexpected(peer, &other)),
                }
                bytes = 0;
            }
        }
        Ok(sent)
    }

    /// Background worker: after every ring change (and while catching up),
    /// a full anti-entropy round with every peer; otherwise one peer in turn
    /// every interval. Also delivers hints to peers that answer again.
    async fn anti_entropy_worker(self: Arc<Self>) {
        let mut synced_epoch = u64::MAX;
        let mut turn = 0usize;
        while !self.stop_requested() {
            let epoch = self.epoch();
            let peers = self.peers();
            let full = epoch != synced_epoch || self.syncing();
            let round: Vec<NodeAddr> = if full {
                peers.clone()
            } else {
                turn = turn.wrapping_add(1);
                peers
                    .get(turn % peers.len().max(1))
                    .cloned()
                    .into_iter()
                    .collect()
            };
            let mut complete = self.ready();
            for peer in &round {
                match self.sync_with(peer).await {
                    Ok(0) => {}
                    Ok(n) => log::debug!("anti-entropy with {peer}: {n} entries compared"),
                    Err(e) => {
                        complete = false;
                        self.note_failure(peer, &e);
                    }
                }
            }
            let caught_up = full && complete && self.epoch() == epoch && self.lease_held();
            if caught_up {
                synced_epoch = epoch;
                if self.syncing.swap(false, Ordering::AcqRel) {
                    log::info!("{}: caught up with every replica", self.me);
                }
            }
            self.deliver_hints();
            // A round that could not finish catching up (a peer failed, or
            // the peers do not confirm our ring yet) is tried again soon.
            let pause = if caught_up || (complete && !full) {
                self.config.anti_entropy_interval
            } else {
                Duration::from_millis(20).max(self.config.failure_timeout / 100)
            };
            self.wait_past(epoch, pause).await;
        }
    }

    /// Sends hinted keys (with their current copies) to peers that are alive.
    fn deliver_hints(self: &Arc<Self>) {
        for peer in self.replicator.hinted_peers() {
            let alive = self
                .view
                .read()
                .swim
                .membership()
                .status(&peer)
                .is_some_and(Status::serves);
            if !alive {
                continue;
            }
            for key in self.replicator.take_hints(&peer) {
                match self.store.get(&key) {
                    Ok(Some(stored)) => self.replicator.send(&peer, Entry::new(key, stored), None),
                    Ok(None) => {}
                    Err(e) => log::warn!("reading a hinted key failed: {e}"),
                }
            }
        }
    }

    // ---- handoff ----

    /// Sends every key we hold but no longer replicate to its replicas, in
    /// bounded batches, deleting each copy only once a write quorum of them
    /// acknowledged it (and only if no newer write arrived meanwhile).
    /// Ownership is re-checked before each batch.
    ///
    /// Our copy may be one of the write quorum that acknowledged the key's
    /// latest write (we replicated it before the ring changed), and the new
    /// replicas need not hold it yet: a joiner starts empty, and a replica
    /// may have missed the write. Handing it to the owner alone would leave
    /// the write on one node, and losing that node (a crash with its disk)
    /// would lose an acknowledged write. Deleting our copy only once a write
    /// quorum of the new replicas holds it keeps every acknowledged write on
    /// as many nodes as its write needed.
    pub async fn handoff_pass(self: &Arc<Self>) -> HandoffReport {
        let mut report = HandoffReport::default();
        let epoch = self.epoch();
        let routing = self.placement();
        let n = self.config.replicas;
        let keys = match self
            .store
            .keys_where(|k| !routing.owners(k, n).contains(&&self.me))
        {
            Ok(keys) => keys,
            Err(e) => {
                log::warn!("handoff could not list keys: {e}");
                return report;
            }
        };
        // Keys with the same replicas travel in the same batches.
        let mut by_replicas: BTreeMap<Vec<NodeAddr>, Vec<Vec<u8>>> = BTreeMap::new();
        for key in keys {
            let replicas: Vec<NodeAddr> = routing.owners(&key, n).into_iter().cloned().collect();
            if !replicas.is_empty() {
                by_replicas.entry(replicas).or_default().push(key);
            }
        }
        // However few replicas this ring has, never fewer acknowledgements
        // than a write needs of them.
        let quorum = self.write_quorum();
        let settle = |report: &mut HandoffReport, (needed, sent, answers): HandoffBatch| {
            let mut acked = 0;
            for (replica, result) in answers {
                match result {
                    Ok(_) => acked += 1,
                    Err(e) => {
                        log::warn!("handing {} keys to {replica} failed: {e}", sent.len());
                        self.note_failure(&replica, &e);
                    }
                }
            }
            if acked >= needed {
                for (key, version) in &sent {
                    if let Err(e) = self.store.remove_if(key, *version) {
                        log::warn!("deleting a handed-off key failed: {e}");
                    }
                }
                report.moved += sent.len();
            } else {
                report.stuck += sent.len();
                report.restarted = true;
            }
        };
        // Batches are read here while earlier ones are in flight.
        let mut in_flight = FuturesUnordered::new();
        'groups: for (replicas, keys) in by_replicas {
            let mut keys = keys.into_iter().peekable();
            while keys.peek().is_some() {
                if self.epoch() != epoch || report.restarted {
                    report.restarted = true;
                    break 'groups;
                }
                let mut batch = Vec::new();
                let mut sent = Vec::new();
                let mut bytes = 0;
                while bytes < self.config.handoff_batch_bytes
                    && batch.len() < self.config.handoff_batch_entries
                {
                    let Some(key) = keys.next() else { break };
                    if let Ok(Some(stored)) = self.store.get(&key) {
                        sent.push((key.clone(), stored.version));
                        let entry = Entry::new(key, stored);
                        bytes += entry.bytes();
                        batch.push(entry);
                    }
                }
                if batch.is_empty() {
                    continue;
                }
                while in_flight.len() >= HANDOFF_IN_FLIGHT {
                    if let Some(done) = in_flight.next().await {
                        settle(&mut report, done);
                    }
                }
                let replicas = replicas.clone();
                let needed = quorum.min(replicas.len());
                in_flight.push(async move {
                    // The same copies go to every replica at once; the batch
                    // is settled once a write quorum took it (anti-entropy
                    // completes a slow replica), or every replica answered.
                    let mut calls: FuturesUnordered<_> = replicas
                        .iter()
                        .map(|replica| {
                            let request = Request::Absorb(batch.clone());
                            async move {
                                let result =
                                    self.call(replica, request, self.config.rpc_timeout).await;
                                (replica.clone(), result)
                            }
                        })
                        .collect();
                    let mut answers = Vec::new();
                    while let Some(answer) = calls.next().await {
                        answers.push(answer);
                        if answers.iter().filter(|(_, r)| r.is_ok()).count() >= needed {
                            break;
                        }
                    }
                    (needed, sent, answers)
                });
            }
        }
        while let Some(done) = in_flight.next().await {
            settle(&mut report, done);
        }
        if report.moved > 0 {
            log::info!("handed {} keys to their replicas", report.moved);
        }
        report
    }

    /// Background worker: runs a handoff pass whenever the ring changes, and
    /// every few seconds anyway (to pick up keys that were stored off-owner).
    async fn handoff_worker(self: Arc<Self>) {
        let mut seen = u64::MAX;
        while !self.stop_requested() {
            seen = self.wait_past(seen, Duration::from_secs(2)).await;
            if self.stop_requested() {
                break;
            }
            let mut report = self.handoff_pass().await;
            while report.restarted && report.stuck == 0 && !self.stop_requested() {
                report = self.handoff_pass().await;
            }
        }
    }

    // ---- stopping and leaving ----

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
    /// others we left. Returns how
    /// many keys could not be handed over.
    pub async fn leave(self: &Arc<Self>) -> usize {
        let effects = self.with_swim(|swim, now| swim.start_leaving(now));
        self.run_effects(effects);
        let announce = self.view.read().swim.membership().my_state();
        // Wait (bounded) until the peers heard: after that no new write is
        // replicated to us, so the handoff below converges.
        self.tell_peers(announce).await;
        let deadline = Instant::now() + self.config.leave_timeout;
        log::info!("leaving: handing over {} keys", self.store.len());
        // Tombstones travel too (they keep erased keys erased), so the loop
        // runs until a pass finds nothing left to move, not until `len` is 0.
        while Instant::now() < deadline {
            if self.placement().is_empty() {
                log::warn!(
                    "last member leaving: its {} keys have nowhere to go",
                    self.store.len()
                );
                break;
            }
            let report = self.handoff_pass().await;
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
        let left_behind = self.store.len();
        if left_behind > 0 && !self.placement().is_empty() {
            log::warn!("leaving with {left_behind} keys not handed over");
        }
        let effects = self.with_swim(|swim, now| swim.leave(now));
        self.run_effects(effects);
        let farewell = self.view.read().swim.membership().my_state();
        self.tell_peers(farewell).await;
        log::info!("left the ring");
        left_behind
    }

    /// Sends our own row to every peer at once and waits for them all (each
    /// within the RPC timeout).
    async fn tell_peers(self: &Arc<Self>, row: MemberState) {
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
                Err(e) => log::debug!("telling {peer} we are {:?} failed: {e}", row.status),
            }
        }
    }

    // ---- serving peers ----

    /// Serves one request from a peer (the simulation's transport calls this;
    /// the Thrift server reaches the same methods through the handler).
    pub async fn handle(self: &Arc<Self>, request: Request) -> Result<Reply> {
        Ok(match request {
            Request::Enter(state) => Reply::Members(self.enter(state)),
            Request::Gossip(rows) => Reply::Members(self.gossip(rows)),
            Request::Probe(target) => Reply::Probed(self.probe_for_peer(&target).await),
            Request::Read { key, hops } => Reply::Found(self.fetch_copy(&key, hops).await?),
            Request::Write {
                key,
                value,
                hops,
                version,
                expires,
            } => {
                self.write(&key, value.as_deref(), hops, Some(version), Some(expires))
                    .await?;
                Reply::Done
            }
            Request::Heartbeat { ring, caller } => Reply::Ring(self.heartbeat(&caller, ring)),
            Request::ReplicaRead { key, ring } => {
                let (copy, trusted, ring) = self.replica_read(&key, ring)?;
                Reply::Replica {
                    copy,
                    trusted,
                    ring,
                }
            }
            Request::Replicate { entries, ring } => {
                self.replicate(entries, ring)?;
                Reply::Done
            }
            Request::DiffBuckets { caller, digests } => {
                Reply::Buckets(self.diff_buckets(&caller, &digests)?)
            }
            Request::Reconcile {
                caller,
                buckets,
                entries,
            } => Reply::Entries(self.reconcile(&caller, &buckets, entries)?),
            Request::Absorb(entries) => {
                self.absorb(entries)?;
                Reply::Done
            }
        })
    }

    // ---- operations aids ----

    /// Counters for `stats`.
    pub fn stats(&self) -> BTreeMap<String, i64> {
        let view = self.view.read();
        let mut stats = BTreeMap::new();
        let mut put = |name: &str, value: usize| {
            stats.insert(name.to_string(), value as i64);
        };
        put("keys", self.store.len());
        put("members", view.ring.len());
        put("replicas", self.config.replicas.min(view.ring.len()));
        put("replication_pending", self.replicator.pending());
        put("hints", self.replicator.hint_count());
        put("syncing", usize::from(self.syncing()));
        put(
            "leaving",
            usize::from(view.swim.membership().my_state().status != Status::Alive),
        );
        put("ready", usize::from(self.ready()));
        put("pauses", self.pauses.load(Ordering::Relaxed) as usize);
        stats
    }

    /// Fault injection: cut this node off from its peers (or reconnect it).
    pub fn set_isolated(&self, on: bool) -> Result<()> {
        if !self.config.fault_injection {
            return Err(Error::Refused {
                peer: self.me.to_string(),
                message: "isolate needs a node started with --fault-injection".into(),
            });
        }
        log::warn!("fault injection: isolated = {on}");
        self.out.isolated.store(on, Ordering::Release);
        Ok(())
    }

    /// Whether the node is cut off from its peers by fault injection.
    pub fn isolated(&self) -> bool {
        self.out.isolated.load(Ordering::Acquire)
    }

    /// Logs the node's view (the 2009 `debug`).
    pub fn log_debug(&self) {
        let view = self.view.read();
        log::info!("debug: I am {}", self.me);
        for state in view.swim.membership().table() {
            log::info!(
                "debug: member {} incarnation {} {:?}",
                state.addr,
                state.incarnation,
                state.status
            );
        }
        let keys = self.store.keys_where(|_| true).unwrap_or_default();
        log::info!("debug: {} keys", keys.len());
        for key in keys.iter().take(100) {
            log::info!("debug: key {}", String::from_utf8_lossy(key));
        }
    }
}
