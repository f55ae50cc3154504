//! `Node`: one member of the ring. It owns the membership view, the local store,
//! replication and the outbound pools, and decides where each request goes:
//! coordinated here, or forwarded to the key's replicas.
//!
//! Everything here is synchronous. The server calls in from its connection
//! tasks (see `server`) and background work runs on plain threads: gossip,
//! failure detection, anti-entropy, handoff and one replication sender per peer.
//! Calls to peers block, so the request path wraps them in
//! `tokio::task::block_in_place` (see [`blocking`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use md5::{Digest, Md5};
use parking_lot::{Condvar, Mutex, RwLock};

use crate::addr::NodeAddr;
use crate::antientropy::{BUCKETS, Digests, bucket_of};
use crate::client::{ClientOptions, Pool};
use crate::config::{Config, MAX_KEY_BYTES};
use crate::convert;
use crate::error::{Error, Result};
use crate::idl::diststore::{Entry, TStoreSyncClient};
use crate::idl::locator::{Location, Member, TBaseSyncClient, TLocatorSyncClient};
use crate::membership::{Change, MemberState, Membership, Status};
use crate::relay::{self, AsyncPool};
use crate::replicate::{Ack, Replicator};
use crate::ring::Ring;
use crate::store::{Store, Stored};
use crate::version::{Clock, Version, wall_micros};

/// Forwards a request may take before the node holding it serves it itself.
/// Two covers a leave in progress (client -> old owner -> new owner); more only
/// means nodes disagree, and then serving beats bouncing.
pub const MAX_HOPS: i8 = 2;

/// The `hops` of a relayed read that only looks in the receiver's own store.
pub const PEEK: i8 = -1;

/// Runs blocking work from the request path. On a multi-threaded tokio worker
/// it uses `block_in_place`, so the worker's other connections move to another
/// thread meanwhile; elsewhere it just runs.
pub fn blocking<R>(work: impl FnOnce() -> R) -> R {
    let on_worker = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if on_worker {
        tokio::task::block_in_place(work)
    } else {
        work()
    }
}

/// Who a node thinks the members are, and the rings derived from that.
struct View {
    members: Membership,
    /// Alive members.
    ring: Arc<Ring<NodeAddr>>,
    /// Where requests go: `ring`, or `ring` without us while we leave.
    routing: Arc<Ring<NodeAddr>>,
    leaving: bool,
}

/// Counts ring changes so background workers know when to look again.
#[derive(Default)]
struct Epoch {
    value: Mutex<u64>,
    changed: Condvar,
}

impl Epoch {
    fn get(&self) -> u64 {
        *self.value.lock()
    }

    fn bump(&self) {
        *self.value.lock() += 1;
        self.changed.notify_all();
    }

    /// Waits until the epoch moves past `seen` or `timeout` passes.
    fn wait_past(&self, seen: u64, timeout: Duration) -> u64 {
        let mut value = self.value.lock();
        if *value == seen {
            self.changed.wait_for(&mut value, timeout);
        }
        *value
    }
}

/// Handoff batches in flight at once: enough to keep the link and the
/// receiver busy while the next batch is read and encoded.
const HANDOFF_IN_FLIGHT: usize = 4;

/// One handoff batch's outcome: the keys and versions it carried.
struct HandoffBatch {
    owner: NodeAddr,
    sent: Vec<(Vec<u8>, Version)>,
    result: Result<()>,
}

/// What one handoff pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HandoffReport {
    /// Keys acknowledged by their new owners and deleted here.
    pub moved: usize,
    /// Keys that should move but did not (owner refused or failed).
    pub stuck: usize,
    /// The ring changed mid-pass; the pass should be run again.
    pub restarted: bool,
}

/// One member of the ring.
pub struct Node {
    config: Config,
    me: NodeAddr,
    clock: Clock,
    store: Store,
    view: RwLock<View>,
    /// Node-to-node calls.
    pool: Arc<Pool>,
    /// Direct failure-detection pings, with short timeouts.
    probes: Pool,
    /// Indirect probe requests (they wait for a ping of their own).
    indirect: Pool,
    replicator: Arc<Replicator>,
    /// The node's tokio runtime, for async work started from plain threads.
    runtime: tokio::runtime::Handle,
    /// Async calls from the request path (forwards, read fallbacks) and
    /// replication.
    relay: Arc<AsyncPool>,
    epoch: Epoch,
    stop_requested: AtomicBool,
    stop_signal: Condvar,
    stop_lock: Mutex<()>,
    gossip_cursor: AtomicUsize,
    /// Set while this node may hold stale data (just joined, came back after
    /// being declared dead, or was paused): reads then consult every replica.
    syncing: AtomicBool,
    isolated: AtomicBool,
}

impl Node {
    /// A node named `me`, alone in its own ring, keeping its keys in `store`;
    /// its async work (replication) runs on `runtime`.
    pub fn new(
        config: Config,
        me: NodeAddr,
        store: Store,
        runtime: tokio::runtime::Handle,
    ) -> Arc<Self> {
        let incarnation = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let members = Membership::new(me.clone(), incarnation);
        let ring = Arc::new(Ring::new([me.clone()]));
        let options = ClientOptions {
            connect_timeout: config.connect_timeout,
            rpc_timeout: config.rpc_timeout,
            limits: config.limits(),
        };
        let probe_timeout = config.failure_timeout / 5;
        let pool = Arc::new(Pool::new(options));
        let probes = Pool::new(ClientOptions {
            connect_timeout: probe_timeout,
            rpc_timeout: probe_timeout,
            ..options
        });
        let indirect = Pool::new(ClientOptions {
            connect_timeout: probe_timeout,
            rpc_timeout: probe_timeout * 3,
            ..options
        });
        let relay = Arc::new(AsyncPool::new(
            config.connect_timeout,
            config.rpc_timeout,
            config.limits(),
        ));
        let replicator = Replicator::new(
            relay.clone(),
            runtime.clone(),
            config.handoff_batch_entries,
            config.handoff_batch_bytes,
        );
        let digest = Md5::digest(me.to_string().as_bytes());
        let origin = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
        Arc::new(Node {
            clock: Clock::new(origin),
            store,
            view: RwLock::new(View {
                members,
                routing: ring.clone(),
                ring,
                leaving: false,
            }),
            pool,
            probes,
            indirect,
            replicator,
            runtime,
            relay,
            epoch: Epoch::default(),
            stop_requested: AtomicBool::new(false),
            stop_signal: Condvar::new(),
            stop_lock: Mutex::new(()),
            gossip_cursor: AtomicUsize::new(0),
            syncing: AtomicBool::new(false),
            isolated: AtomicBool::new(false),
            config,
            me,
        })
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

    // ---- membership ----

    /// Alive members, ourselves included, sorted.
    pub fn members(&self) -> Vec<NodeAddr> {
        self.view.read().ring.members().to_vec()
    }

    /// The whole member table, tombstones included.
    pub fn table(&self) -> Vec<MemberState> {
        self.view.read().members.table()
    }

    /// The member that owns `key` for routing.
    pub fn owner(&self, key: &[u8]) -> Option<NodeAddr> {
        self.view.read().routing.owner(key).cloned()
    }

    /// The routing ring and whether we are leaving, read together. The ring is
    /// shared, so a request borrows its preference list from it without
    /// copying any address.
    fn placement(&self) -> (Arc<Ring<NodeAddr>>, bool) {
        let view = self.view.read();
        (view.routing.clone(), view.leaving)
    }

    /// The members holding `key`, owner first: its preference list.
    pub fn replicas(&self, key: &[u8]) -> Vec<NodeAddr> {
        self.view
            .read()
            .routing
            .owners(key, self.config.replicas)
            .into_iter()
            .cloned()
            .collect()
    }

    /// Applies membership updates; rebuilds the ring when the alive set changed,
    /// and spreads news that is ours to spread. Returns whether the ring changed.
    fn update_members(
        self: &Arc<Self>,
        spread_updates: bool,
        update: impl FnOnce(&mut Membership) -> Vec<Change>,
    ) -> bool {
        let mut to_spread = Vec::new();
        let mut departed = Vec::new();
        let mut refuted = false;
        let ring_changed;
        {
            let mut view = self.view.write();
            for change in update(&mut view.members) {
                match change {
                    Change::None => {}
                    Change::Updated(state) => {
                        if state.status.is_gone() {
                            departed.push(state.addr.clone());
                        }
                        if spread_updates {
                            to_spread.push(state);
                        }
                    }
                    Change::Refuted(state) => {
                        refuted = true;
                        to_spread.push(state);
                    }
                }
            }
            let alive: Vec<NodeAddr> = view.members.alive().cloned().collect();
            ring_changed = alive.as_slice() != view.ring.members();
            if ring_changed {
                let ring = Arc::new(Ring::new(alive));
                view.routing = if view.leaving {
                    Arc::new(ring.without(&self.me))
                } else {
                    ring.clone()
                };
                view.ring = ring;
            }
        }
        for addr in &departed {
            self.pool.idle().forget(addr);
            self.relay.idle().forget(addr);
        }
        if refuted {
            // We were declared dead: writes went elsewhere meanwhile.
            log::warn!("peers declared us dead; rejoining and catching up");
            self.syncing.store(true, Ordering::Release);
        }
        if ring_changed {
            log::info!("ring is now {:?}", self.members_text());
            self.epoch.bump();
        }
        self.spread(to_spread, refuted);
        ring_changed
    }

    fn members_text(&self) -> Vec<String> {
        self.members().iter().map(ToString::to_string).collect()
    }

    /// Sends `updates` to every alive peer in the background; with `to_dead`
    /// also to members we think dead (a refutation must reach across a healed
    /// partition, where each side holds the other dead).
    fn spread(self: &Arc<Self>, updates: Vec<MemberState>, to_dead: bool) {
        if updates.is_empty() {
            return;
        }
        let message: Vec<Member> = updates.iter().map(convert::member).collect();
        let targets: Vec<NodeAddr> = if to_dead {
            self.table()
                .into_iter()
                .filter(|s| s.addr != self.me && s.status != Status::Left)
                .map(|s| s.addr)
                .collect()
        } else {
            self.view.read().members.peers()
        };
        for peer in targets {
            let node = self.clone();
            let message = message.clone();
            std::thread::spawn(move || node.exchange(&peer, message));
        }
    }

    /// Push-pull with one peer: send `message`, merge the table it answers with.
    fn exchange(self: &Arc<Self>, peer: &NodeAddr, message: Vec<Member>) {
        match self.pool.call(peer, |c| c.gossip(message.clone())) {
            Ok(table) => self.merge_table(&table),
            Err(e) => self.note_failure(peer, &e),
        }
    }

    /// A failed call to `peer`: a refused connection means nothing listens
    /// there any more, so it is dropped at once; anything else is left to the
    /// failure detector, which does not evict a node for one slow answer.
    fn note_failure(self: &Arc<Self>, peer: &NodeAddr, error: &Error) {
        if let Error::Unreachable { refused: true, .. } = error {
            if self.view.read().members.state(peer).map(|s| s.status) == Some(Status::Alive) {
                log::warn!("{peer} refused a connection; dropping it from the ring");
            }
            self.declare_dead(peer);
        } else {
            log::debug!("call to {peer} failed: {error}");
        }
    }

    /// Merges a member table received from a peer.
    pub fn merge_table(self: &Arc<Self>, table: &[Member]) {
        let states: Vec<MemberState> = table.iter().filter_map(convert::member_state).collect();
        self.update_members(false, |m| states.into_iter().map(|s| m.apply(s)).collect());
    }

    /// A peer sent its table (`gossip`): merge it and answer with ours.
    pub fn gossip(self: &Arc<Self>, table: &[Member]) -> Vec<Member> {
        self.merge_table(table);
        self.table().iter().map(convert::member).collect()
    }

    /// A new node announces itself (`enter`): admit it, tell the others, and
    /// answer with our table.
    pub fn enter(self: &Arc<Self>, member: &Member) -> Vec<Member> {
        if let Some(state) = convert::member_state(member) {
            log::info!("{} asks to join", state.addr);
            self.update_members(true, |m| vec![m.apply(state)]);
        }
        self.table().iter().map(convert::member).collect()
    }

    /// The 2009 `join`/`add`: admit `addr` (no incarnation on that wire).
    pub fn admit_legacy(self: &Arc<Self>, addr: &NodeAddr) {
        self.update_members(true, |m| vec![m.admit_legacy(addr)]);
    }

    /// Drops `addr` from the ring and spreads the news (the 2009 `remove`, a
    /// refused connection, or the failure detector's verdict).
    pub fn declare_dead(self: &Arc<Self>, addr: &NodeAddr) {
        self.update_members(true, |m| vec![m.declare_dead(addr)]);
    }

    /// One round of background gossip with the next peer in turn. Every fifth
    /// round also tries one member we hold dead, so that the two sides of a
    /// healed partition find each other again.
    pub fn gossip_round(self: &Arc<Self>) {
        let turn = self.gossip_cursor.fetch_add(1, Ordering::Relaxed);
        let table = self.table();
        let candidates: Vec<NodeAddr> = if turn % 5 == 4 {
            table
                .iter()
                .filter(|s| s.status == Status::Dead)
                .map(|s| s.addr.clone())
                .collect()
        } else {
            self.view.read().members.peers()
        };
        if candidates.is_empty() {
            return;
        }
        let peer = &candidates[turn % candidates.len()];
        let message: Vec<Member> = table.iter().map(convert::member).collect();
        self.exchange(peer, message);
    }

    /// Joins the ring that `seed` belongs to: announce ourselves, take its table,
    /// then greet every member directly so concurrent joiners learn of us quickly.
    pub fn join(self: &Arc<Self>, seed: &NodeAddr) -> Result<()> {
        // Until the first anti-entropy round, our data (if any) may be stale.
        self.syncing.store(true, Ordering::Release);
        let me = convert::member(&self.view.read().members.my_state());
        let table = match self.pool.call(seed, |c| c.enter(me.clone())) {
            Ok(table) => table,
            Err(Error::Refused { message, .. }) if message.contains("unknown method") => {
                return self.join_legacy(seed);
            }
            Err(e) => return Err(e),
        };
        self.merge_table(&table);
        let my_state = self.view.read().members.my_state();
        self.spread(vec![my_state], false);
        Ok(())
    }

    /// Joins a ring of 2009 nodes: `get_all`, then `join` on the seed.
    fn join_legacy(self: &Arc<Self>, seed: &NodeAddr) -> Result<()> {
        let members = self.pool.call(seed, |c| c.get_all())?;
        let addrs: Vec<NodeAddr> = members.iter().filter_map(convert::addr).collect();
        self.update_members(false, |m| addrs.iter().map(|a| m.admit_legacy(a)).collect());
        let me = convert::location(&self.me);
        self.pool.call(seed, |c| c.join(me.clone()))?;
        Ok(())
    }

    // ---- failure detection ----

    /// Whether `target` answers a ping within the probe timeout.
    pub fn ping(&self, target: &NodeAddr) -> bool {
        self.probes.call(target, |c| c.ping()).is_ok()
    }

    /// Failure detector, SWIM-style: every tenth of the failure timeout, ping
    /// the next peer in turn; if it does not answer, ask two other peers to
    /// ping it; only if none of them reaches it either is it declared dead.
    /// A loop that finds itself far behind schedule was paused (SIGSTOP, a
    /// stalled VM): peers may have declared us dead and moved on, so catch up.
    pub fn detector_worker(self: &Arc<Self>) {
        let period = self.config.failure_timeout / 10;
        let mut cursor = 0usize;
        let mut last = Instant::now();
        while !self.wait_for_stop_timeout(period) {
            let now = Instant::now();
            if now.duration_since(last) > period + self.config.failure_timeout / 2 {
                log::warn!("this node was paused; re-syncing before trusting its data");
                self.syncing.store(true, Ordering::Release);
                self.epoch.bump();
            }
            last = now;
            let peers = self.view.read().members.peers();
            if peers.is_empty() {
                continue;
            }
            cursor = cursor.wrapping_add(1);
            let target = peers[cursor % peers.len()].clone();
            if self.ping(&target) {
                continue;
            }
            if !self.probe_indirectly(&target, &peers) {
                log::warn!("{target} did not answer direct or indirect probes; declaring it dead");
                self.declare_dead(&target);
            }
        }
    }

    fn probe_indirectly(self: &Arc<Self>, target: &NodeAddr, peers: &[NodeAddr]) -> bool {
        let helpers: Vec<NodeAddr> = peers
            .iter()
            .filter(|p| *p != target)
            .take(2)
            .cloned()
            .collect();
        if helpers.is_empty() {
            // Nobody to ask: one more direct try before giving up.
            return self.ping(target);
        }
        let location = convert::location(target);
        std::thread::scope(|s| {
            let asks: Vec<_> = helpers
                .iter()
                .map(|helper| {
                    let location = location.clone();
                    s.spawn(move || {
                        self.indirect
                            .call(helper, |c| c.probe(location.clone()))
                            .unwrap_or(false)
                    })
                })
                .collect();
            asks.into_iter().any(|a| a.join().unwrap_or(false))
        })
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
    fn coordinates(&self, replicas: &[&NodeAddr], hops: i8, leaving: bool) -> bool {
        (hops >= MAX_HOPS && !leaving) || replicas.first().is_some_and(|o| **o == self.me)
    }

    /// Checks a write before anything is stored.
    fn admit_write(&self, key: &[u8], value: Option<&[u8]>, expires: Option<i64>) -> Result<()> {
        if let Some(expires) = expires
            && wall_micros() as i64 > expires
        {
            // The sender gave up on us (we were paused or swamped) and has
            // retried elsewhere; a fresh version for this stale write could
            // bury a newer one.
            return Err(Error::Expired);
        }
        self.check_sizes(key, value)
    }

    /// Stores `value` here under a new version, newer than the copy it replaces.
    fn store_new_version(&self, key: &[u8], value: Option<&[u8]>) -> Result<Version> {
        self.store.overwrite(key, value, |old| match old {
            Some(old) => self.clock.tick_after(old),
            None => self.clock.tick(),
        })
    }

    /// Serves a read at once if nothing needs waiting for: this node
    /// coordinates it and its own copy answers alone (the common case). `None`
    /// means the read needs [`Node::fetch`].
    pub fn fetch_now(&self, key: &[u8], hops: i8) -> Option<Result<Option<Vec<u8>>>> {
        if hops == PEEK {
            return Some(self.store.get(key).map(|s| s.and_then(|s| s.value)));
        }
        let (ring, leaving) = self.placement();
        let replicas = ring.owners(key, self.config.replicas);
        let alone = self.coordinates(&replicas, hops, leaving)
            && replicas.contains(&&self.me)
            && self.config.read_quorum_of(replicas.len()) == 1
            && !self.syncing.load(Ordering::Acquire);
        if !alone {
            return None;
        }
        match self.store.get(key) {
            Ok(Some(stored)) => Some(Ok(stored.value)),
            // A miss asks the other replicas.
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
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
        if let Err(e) = self.admit_write(key, value, expires) {
            return Some(Err(e));
        }
        let (ring, leaving) = self.placement();
        let replicas = ring.owners(key, self.config.replicas);
        let alone =
            self.coordinates(&replicas, hops, leaving) && replicas.iter().all(|r| **r == self.me);
        if !alone || replicas.is_empty() {
            return None;
        }
        Some(self.store_new_version(key, value).map(drop))
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

    /// Reads `key`: coordinated by its owner (or, when the owner cannot be
    /// reached, the next replica). `hops` counts forwards so far.
    pub async fn fetch(self: &Arc<Self>, key: &[u8], hops: i8) -> Result<Option<Vec<u8>>> {
        if hops == PEEK {
            return Ok(self.store.get(key)?.and_then(|s| s.value));
        }
        let (ring, leaving) = self.placement();
        let replicas = ring.owners(key, self.config.replicas);
        if replicas.is_empty() {
            return Err(Error::NoOwner);
        }
        if self.coordinates(&replicas, hops, leaving) {
            return self.coordinate_read(key, &replicas).await;
        }
        let request = relay::encode(|c| c.relay_fetch(key.to_vec(), hops + 1).map(drop));
        for &target in &replicas {
            if *target == self.me {
                return self.coordinate_read(key, &replicas).await;
            }
            let result = self
                .relay
                .call(target, &request, |c| c.relay_fetch(Vec::new(), 0))
                .await;
            match result {
                // A key we still hold but no longer replicate is on its way to
                // its owner: until it arrives, our copy is the answer.
                Ok(lookup) => {
                    return Ok(match lookup.value {
                        Some(value) => Some(value),
                        None => self.store.get(key)?.and_then(|s| s.value),
                    });
                }
                Err(e) if self.try_next(target, &e) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::NoOwner)
    }

    /// Serves a read here. The local copy answers alone unless it is missing,
    /// this node is catching up, or the read quorum asks for more; then every
    /// other replica is asked, the newest copy wins, and stale replicas are
    /// repaired with it.
    async fn coordinate_read(
        self: &Arc<Self>,
        key: &[u8],
        replicas: &[&NodeAddr],
    ) -> Result<Option<Vec<u8>>> {
        let local = self.store.get(key)?;
        let quorum = self.config.read_quorum_of(replicas.len());
        let holds = replicas.contains(&&self.me);
        if local.is_some() && holds && quorum == 1 && !self.syncing.load(Ordering::Acquire) {
            return Ok(local.and_then(|s| s.value));
        }
        let mut answers = usize::from(holds);
        let mut copies: Vec<(NodeAddr, Option<Version>)> = Vec::new();
        let mut newest = local.clone();
        let request = relay::encode(|c| c.peek(vec![key.to_vec()]).map(drop));
        for &peer in replicas.iter().filter(|p| ***p != self.me) {
            match self
                .relay
                .call(peer, &request, |c| c.peek(Vec::new()))
                .await
            {
                Ok(entries) => {
                    answers += 1;
                    let theirs = entries
                        .into_iter()
                        .find_map(convert::from_entry)
                        .map(|(_, s)| s);
                    copies.push((peer.clone(), theirs.as_ref().map(|s| s.version)));
                    if theirs.as_ref().map(|s| s.version) > newest.as_ref().map(|s| s.version) {
                        newest = theirs;
                    }
                }
                Err(e) => self.note_failure(peer, &e),
            }
        }
        if answers < quorum {
            return Err(Error::Quorum {
                stored: answers,
                needed: quorum,
            });
        }
        if let Some(best) = &newest {
            self.clock.observe(best.version);
            if local.as_ref().map(|s| s.version) < Some(best.version) && holds {
                self.store.merge(key, best.value.as_deref(), best.version)?;
            }
            let entry = convert::entry(key.to_vec(), best.clone());
            for (peer, version) in copies {
                if version < Some(best.version) {
                    self.replicator.send(&peer, entry.clone(), None);
                }
            }
        }
        Ok(newest.and_then(|s| s.value))
    }

    /// Writes `key` (a value, or `None` to erase it): coordinated by its owner
    /// (or, when the owner cannot be reached, the next replica), acknowledged
    /// once a write quorum of replicas stored it. `hops` counts forwards so far;
    /// `expires` is when the node that relayed the write stops waiting for it
    /// (microseconds since the epoch; `None` for a client's own call).
    pub async fn write(
        self: &Arc<Self>,
        key: &[u8],
        value: Option<&[u8]>,
        hops: i8,
        expires: Option<i64>,
    ) -> Result<()> {
        self.admit_write(key, value, expires)?;
        let (ring, leaving) = self.placement();
        let replicas = ring.owners(key, self.config.replicas);
        if replicas.is_empty() {
            return Err(Error::NoOwner);
        }
        if self.coordinates(&replicas, hops, leaving) {
            return self.coordinate_write(key, value, &replicas).await;
        }
        for &target in &replicas {
            if *target == self.me {
                return self.coordinate_write(key, value, &replicas).await;
            }
            let next = hops.saturating_add(1);
            // Give up on the relay a little before our own call times out.
            let expires =
                (wall_micros() + (self.config.rpc_timeout * 9 / 10).as_micros() as u64) as i64;
            let request = match value {
                Some(v) => {
                    relay::encode(|c| c.relay_store(key.to_vec(), v.to_vec(), next, expires))
                }
                None => relay::encode(|c| c.relay_erase(key.to_vec(), next, expires)),
            };
            let result = self
                .relay
                .call(target, &request, |c| match value {
                    Some(_) => c.relay_store(Vec::new(), Vec::new(), 0, 0),
                    None => c.relay_erase(Vec::new(), 0, 0),
                })
                .await;
            match result {
                Ok(()) => return Ok(()),
                Err(e) if self.try_next(target, &e) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::NoOwner)
    }

    /// Stores a new version here and sends it to the other replicas; returns
    /// once the write quorum holds it.
    async fn coordinate_write(
        self: &Arc<Self>,
        key: &[u8],
        value: Option<&[u8]>,
        replicas: &[&NodeAddr],
    ) -> Result<()> {
        let version = self.store_new_version(key, value)?;
        let here = usize::from(replicas.contains(&&self.me));
        let quorum = self.config.write_quorum_of(replicas.len());
        let others: Vec<&NodeAddr> = replicas
            .iter()
            .copied()
            .filter(|p| **p != self.me)
            .collect();
        let needed = quorum.saturating_sub(here);
        if others.is_empty() {
            return Ok(());
        }
        let ack = Ack::new();
        let entry = convert::entry(
            key.to_vec(),
            Stored {
                value: value.map(<[u8]>::to_vec),
                version,
            },
        );
        for peer in &others {
            self.replicator.send(peer, entry.clone(), Some(ack.clone()));
        }
        if needed == 0 {
            return Ok(());
        }
        let acked = ack
            .wait(needed, others.len(), self.config.rpc_timeout)
            .await;
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
            let Some((key, stored)) = convert::from_entry(entry) else {
                continue;
            };
            self.clock.observe(stored.version);
            if self
                .store
                .merge(&key, stored.value.as_deref(), stored.version)?
            {
                applied += 1;
            }
        }
        Ok(applied)
    }

    /// Our own copies of `keys`, tombstones included, with versions.
    pub fn peek(&self, keys: Vec<Vec<u8>>) -> Result<Vec<Entry>> {
        let mut entries = Vec::new();
        for key in keys {
            if let Some(stored) = self.store.get(&key)? {
                entries.push(convert::entry(key, stored));
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
    fn ring_shared_with(&self, caller: &Location) -> Result<(NodeAddr, Arc<Ring<NodeAddr>>)> {
        let view = self.view.read();
        match convert::addr(caller) {
            Some(addr) if view.ring.contains(&addr) => Ok((addr, view.routing.clone())),
            other => Err(Error::Refused {
                peer: self.me.to_string(),
                message: format!(
                    "{} is not a member in this node's view yet; retry after gossip",
                    other.map_or_else(|| "the caller".into(), |a| a.to_string())
                ),
            }),
        }
    }

    /// Answers `diff_buckets`: where our copies shared with `caller` differ.
    pub fn diff_buckets(&self, caller: &Location, digests: &[i64]) -> Result<Vec<i32>> {
        let (caller, ring) = self.ring_shared_with(caller)?;
        Ok(self.digests_with(&ring, &caller)?.differing(digests))
    }

    /// Our keys shared with `peer` in `buckets`, grouped by bucket.
    fn shared_keys_in(
        &self,
        ring: &Ring<NodeAddr>,
        peer: &NodeAddr,
        buckets: &HashSet<usize>,
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
        caller: &Location,
        buckets: &[i32],
        entries: Vec<Entry>,
    ) -> Result<Vec<Entry>> {
        let (caller, ring) = self.ring_shared_with(caller)?;
        let mut theirs: HashMap<Vec<u8>, Version> = HashMap::new();
        for entry in entries {
            if let Some((key, stored)) = convert::from_entry(entry) {
                self.clock.observe(stored.version);
                self.store
                    .merge(&key, stored.value.as_deref(), stored.version)?;
                theirs.insert(key, stored.version);
            }
        }
        let buckets: HashSet<usize> = buckets
            .iter()
            .map(|&b| b as usize)
            .filter(|&b| b < BUCKETS)
            .collect();
        let mut answer = Vec::new();
        for key in self
            .shared_keys_in(&ring, &caller, &buckets)?
            .into_values()
            .flatten()
        {
            if let Some(stored) = self.store.get(&key)?
                && theirs.get(&key).is_none_or(|v| *v < stored.version)
            {
                answer.push(convert::entry(key, stored));
            }
        }
        Ok(answer)
    }

    /// Brings our copies and `peer`'s copies of the keys we share to the same
    /// versions: compare bucket digests, then exchange entries of the buckets
    /// that differ, in bounded batches. Returns how many entries we sent.
    pub fn sync_with(self: &Arc<Self>, peer: &NodeAddr) -> Result<usize> {
        let ring = self.view.read().routing.clone();
        let me = convert::location(&self.me);
        let digests = self.digests_with(&ring, peer)?.to_wire();
        let differing = self
            .pool
            .call(peer, |c| c.diff_buckets(me.clone(), digests.clone()))?;
        if differing.is_empty() {
            return Ok(0);
        }
        let wanted: HashSet<usize> = differing
            .iter()
            .map(|&b| b as usize)
            .filter(|&b| b < BUCKETS)
            .collect();
        let mut keys = self.shared_keys_in(&ring, peer, &wanted)?;
        let mut sent = 0;
        let mut batch_buckets = Vec::new();
        let mut batch = Vec::new();
        let mut bytes = 0;
        let mut buckets: Vec<usize> = wanted.into_iter().collect();
        buckets.sort_unstable();
        for (i, bucket) in buckets.iter().enumerate() {
            for key in keys.remove(bucket).unwrap_or_default() {
                if let Some(stored) = self.store.get(&key)? {
                    bytes += key.len() + stored.value.as_ref().map_or(0, Vec::len);
                    batch.push(convert::entry(key, stored));
                }
            }
            batch_buckets.push(*bucket as i32);
            let last = i + 1 == buckets.len();
            if last
                || bytes >= self.config.handoff_batch_bytes
                || batch.len() >= self.config.handoff_batch_entries
            {
                sent += batch.len();
                let newer = self.pool.call(peer, |c| {
                    c.reconcile(me.clone(), batch_buckets.clone(), batch.clone())
                })?;
                self.absorb(newer)?;
                batch_buckets.clear();
                batch.clear();
                bytes = 0;
            }
        }
        Ok(sent)
    }

    /// Background worker: after every ring change (and while catching up),
    /// a full anti-entropy round with every peer; otherwise one peer in turn
    /// every interval. Also delivers hints to peers that answer again.
    pub fn anti_entropy_worker(self: &Arc<Self>) {
        let mut synced_epoch = u64::MAX;
        let mut turn = 0usize;
        while !self.stop_requested() {
            let epoch = self.epoch.get();
            let peers = self.view.read().members.peers();
            let full = epoch != synced_epoch || self.syncing.load(Ordering::Acquire);
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
            let mut complete = true;
            for peer in &round {
                match self.sync_with(peer) {
                    Ok(0) => {}
                    Ok(n) => log::debug!("anti-entropy with {peer}: {n} entries compared"),
                    Err(e) => {
                        complete = false;
                        self.note_failure(peer, &e);
                    }
                }
            }
            if full && complete && self.epoch.get() == epoch {
                synced_epoch = epoch;
                if self.syncing.swap(false, Ordering::AcqRel) {
                    log::info!("caught up with every replica");
                }
            }
            self.deliver_hints();
            let pause = if complete {
                self.config.anti_entropy_interval
            } else {
                Duration::from_millis(200)
            };
            self.epoch.wait_past(epoch, pause);
        }
    }

    /// Sends hinted keys (with their current copies) to peers that are alive.
    fn deliver_hints(self: &Arc<Self>) {
        for peer in self.replicator.hinted_peers() {
            let alive = self
                .view
                .read()
                .members
                .state(&peer)
                .is_some_and(|s| s.status.serves());
            if !alive {
                continue;
            }
            for key in self.replicator.take_hints(&peer) {
                match self.store.get(&key) {
                    Ok(Some(stored)) => {
                        self.replicator
                            .send(&peer, convert::entry(key, stored), None)
                    }
                    Ok(None) => {}
                    Err(e) => log::warn!("reading a hinted key failed: {e}"),
                }
            }
        }
    }

    // ---- handoff ----

    /// Sends every key we hold but no longer replicate to its owner, in bounded
    /// batches, deleting each copy only after the owner acknowledged it (and only
    /// if no newer write arrived meanwhile). Ownership is re-checked before each
    /// batch. (The owner's anti-entropy then completes the other replicas.)
    pub fn handoff_pass(self: &Arc<Self>) -> HandoffReport {
        let mut report = HandoffReport::default();
        let epoch = self.epoch.get();
        let routing = self.view.read().routing.clone();
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
        let mut by_owner: BTreeMap<NodeAddr, Vec<Vec<u8>>> = BTreeMap::new();
        for key in keys {
            if let Some(owner) = routing.owner(&key) {
                by_owner.entry(owner.clone()).or_default().push(key);
            }
        }
        // Batches are read and encoded here while earlier ones are in flight;
        // each is encoded once, so a retry resends the same bytes.
        let settle = |report: &mut HandoffReport, done: HandoffBatch| match done.result {
            Ok(()) => {
                for (key, version) in &done.sent {
                    if let Err(e) = self.store.remove_if(key, *version) {
                        log::warn!("deleting a handed-off key failed: {e}");
                    }
                }
                report.moved += done.sent.len();
            }
            Err(e) => {
                log::warn!(
                    "handing {} keys to {} failed: {e}",
                    done.sent.len(),
                    done.owner
                );
                self.note_failure(&done.owner, &e);
                report.stuck += done.sent.len();
                report.restarted = true;
            }
        };
        self.runtime.block_on(async {
            let mut in_flight = tokio::task::JoinSet::new();
            'owners: for (owner, keys) in by_owner {
                let mut keys = keys.into_iter().peekable();
                while keys.peek().is_some() {
                    if self.epoch.get() != epoch || report.restarted {
                        report.restarted = true;
                        break 'owners;
                    }
                    let mut batch = Vec::new();
                    let mut sent = Vec::new();
                    let mut bytes = 0;
                    while bytes < self.config.handoff_batch_bytes
                        && batch.len() < self.config.handoff_batch_entries
                    {
                        let Some(key) = keys.next() else { break };
                        if let Ok(Some(stored)) = self.store.get(&key) {
                            bytes += key.len() + stored.value.as_ref().map_or(0, Vec::len);
                            sent.push((key.clone(), stored.version));
                            batch.push(convert::entry(key, stored));
                        }
                    }
                    if batch.is_empty() {
                        continue;
                    }
                    let request = relay::encode(|c| c.absorb(batch));
                    while in_flight.len() >= HANDOFF_IN_FLIGHT {
                        if let Some(Ok(done)) = in_flight.join_next().await {
                            settle(&mut report, done);
                        }
                    }
                    let node = self.clone();
                    let owner = owner.clone();
                    in_flight.spawn(async move {
                        let result = node
                            .relay
                            .call(&owner, &request, |c| c.absorb(Vec::new()))
                            .await;
                        HandoffBatch {
                            owner,
                            sent,
                            result,
                        }
                    });
                }
            }
            while let Some(done) = in_flight.join_next().await {
                if let Ok(done) = done {
                    settle(&mut report, done);
                }
            }
        });
        if report.moved > 0 {
            log::info!("handed {} keys to their owners", report.moved);
        }
        report
    }

    /// Background worker: runs a handoff pass whenever the ring changes, and
    /// every few seconds anyway (to pick up keys that were stored off-owner).
    pub fn handoff_worker(self: &Arc<Self>) {
        let mut seen = u64::MAX;
        while !self.stop_requested() {
            seen = self.epoch.wait_past(seen, Duration::from_secs(2));
            if self.stop_requested() {
                break;
            }
            let mut report = self.handoff_pass();
            while report.restarted && report.stuck == 0 {
                report = self.handoff_pass();
            }
        }
    }

    // ---- stopping and leaving ----

    /// Asks the node to leave the ring (SIGINT, SIGTERM, `die`). `wait_for_stop`
    /// returns once this has been called.
    pub fn request_stop(&self) {
        let _guard = self.stop_lock.lock();
        self.stop_requested.store(true, Ordering::Release);
        self.stop_signal.notify_all();
        self.epoch.bump();
    }

    /// Waits up to `timeout` for a stop request; returns whether one came.
    pub fn wait_for_stop_timeout(&self, timeout: Duration) -> bool {
        let mut guard = self.stop_lock.lock();
        if !self.stop_requested.load(Ordering::Acquire) {
            self.stop_signal.wait_for(&mut guard, timeout);
        }
        self.stop_requested.load(Ordering::Acquire)
    }

    /// Whether a stop was requested.
    pub fn stop_requested(&self) -> bool {
        self.stop_requested.load(Ordering::Acquire)
    }

    /// Blocks until `request_stop` is called.
    pub fn wait_for_stop(&self) {
        let mut guard = self.stop_lock.lock();
        while !self.stop_requested.load(Ordering::Acquire) {
            self.stop_signal.wait(&mut guard);
        }
    }

    /// Leaves the ring gracefully: from now on requests route around us; every
    /// key goes to its new owner (acknowledged); then the others are told we
    /// left. Returns how many keys could not be handed over.
    pub fn leave(self: &Arc<Self>) -> usize {
        {
            let mut view = self.view.write();
            view.leaving = true;
            view.routing = Arc::new(view.ring.without(&self.me));
        }
        self.epoch.bump();
        let deadline = Instant::now() + self.config.leave_timeout;
        log::info!("leaving: handing over {} keys", self.store.len());
        // Tombstones travel too (they keep erased keys erased), so the loop
        // runs until a pass finds nothing left to move, not until `len` is 0.
        while Instant::now() < deadline {
            if self.view.read().routing.is_empty() {
                log::warn!(
                    "last member leaving: its {} keys have nowhere to go",
                    self.store.len()
                );
                break;
            }
            let report = self.handoff_pass();
            if report.restarted {
                continue;
            }
            if report.moved == 0 && report.stuck == 0 {
                break;
            }
            if report.moved == 0 {
                // Owners refused or failed; give the ring a moment to change.
                self.epoch
                    .wait_past(self.epoch.get(), Duration::from_millis(200));
            }
        }
        let left_behind = self.store.len();
        if left_behind > 0 {
            log::warn!("leaving with {left_behind} keys not handed over");
        }
        let farewell = {
            let mut view = self.view.write();
            convert::member(&view.members.leave())
        };
        let peers = self.view.read().members.peers();
        std::thread::scope(|s| {
            for peer in &peers {
                let farewell = farewell.clone();
                s.spawn(move || {
                    if let Err(e) = self.pool.call(peer, |c| c.gossip(vec![farewell.clone()])) {
                        log::debug!("telling {peer} we left failed: {e}");
                    }
                });
            }
        });
        log::info!("left the ring");
        left_behind
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
        put("syncing", usize::from(self.syncing.load(Ordering::Acquire)));
        put("leaving", usize::from(view.leaving));
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
        self.isolated.store(on, Ordering::Release);
        for pool in [&*self.pool, &self.probes, &self.indirect] {
            pool.idle().set_isolated(on);
        }
        self.relay.idle().set_isolated(on);
        Ok(())
    }

    /// Whether the node is cut off from its peers by fault injection.
    pub fn isolated(&self) -> bool {
        self.isolated.load(Ordering::Acquire)
    }

    /// Logs the node's view (the 2009 `debug`).
    pub fn log_debug(&self) {
        let view = self.view.read();
        log::info!("debug: I am {}", self.me);
        for state in view.members.table() {
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
