//! `Node`: one member of the ring. It owns the membership view, the local store
//! and the outbound pool, and decides where each request goes: served here,
//! forwarded to the key's owner, or handed over when the ring changes.
//!
//! Everything here is synchronous; the server calls in from its connection tasks
//! (see `server`), and background work runs on plain threads. Calls to peers block,
//! so the request path wraps them in `tokio::task::block_in_place`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use md5::{Digest, Md5};
use parking_lot::{Condvar, Mutex, RwLock};

use crate::addr::NodeAddr;
use crate::client::{ClientOptions, Pool};
use crate::config::{Config, MAX_KEY_BYTES};
use crate::convert;
use crate::error::{Error, Result};
use crate::idl::diststore::{Entry, TStoreSyncClient};
use crate::idl::locator::{Member, TLocatorSyncClient};
use crate::membership::{Change, MemberState, Membership};
use crate::ring::Ring;
use crate::store::Store;
use crate::version::Clock;

/// Forwards a request may take before the node holding it serves it itself.
/// Two covers a leave in progress (client -> old owner -> new owner); more only
/// means nodes disagree, and then serving beats bouncing.
pub const MAX_HOPS: i8 = 2;

/// The `hops` of a relayed read that only looks in the receiver's own store:
/// how a settling node asks a key's previous owner without being asked back.
pub const PEEK: i8 = -1;

/// Who a node thinks the members are, and the rings derived from that.
struct View {
    members: Membership,
    /// Alive members.
    ring: Arc<Ring<NodeAddr>>,
    /// Where requests go: `ring`, or `ring` without us while we leave.
    routing: Arc<Ring<NodeAddr>>,
    /// `ring` without us, while we settle after joining: who owned our keys before.
    previous: Option<Arc<Ring<NodeAddr>>>,
    leaving: bool,
    joined_at: Option<Instant>,
}

/// Counts ring changes so the handoff worker knows when to look again.
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
    pool: Pool,
    epoch: Epoch,
    stop_requested: AtomicBool,
    stop_signal: Condvar,
    stop_lock: Mutex<()>,
    gossip_cursor: AtomicUsize,
}

impl Node {
    /// A node named `me`, alone in its own ring.
    pub fn new(config: Config, me: NodeAddr) -> Arc<Self> {
        let incarnation = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let members = Membership::new(me.clone(), incarnation);
        let ring = Arc::new(Ring::new([me.clone()]));
        let pool = Pool::new(ClientOptions {
            connect_timeout: config.connect_timeout,
            rpc_timeout: config.rpc_timeout,
            limits: config.limits(),
        });
        let digest = Md5::digest(me.to_string().as_bytes());
        let origin = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
        Arc::new(Node {
            clock: Clock::new(origin),
            store: Store::new(),
            view: RwLock::new(View {
                members,
                routing: ring.clone(),
                ring,
                previous: None,
                leaving: false,
                joined_at: None,
            }),
            pool,
            epoch: Epoch::default(),
            stop_requested: AtomicBool::new(false),
            stop_signal: Condvar::new(),
            stop_lock: Mutex::new(()),
            gossip_cursor: AtomicUsize::new(0),
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

    /// Applies membership updates; rebuilds the ring when the alive set changed,
    /// and spreads news that is ours to spread. Returns whether the ring changed.
    fn update_members(
        self: &Arc<Self>,
        spread_updates: bool,
        update: impl FnOnce(&mut Membership) -> Vec<Change>,
    ) -> bool {
        let mut to_spread = Vec::new();
        let mut departed = Vec::new();
        let ring_changed;
        {
            let mut view = self.view.write();
            for change in update(&mut view.members) {
                match change {
                    Change::None => {}
                    Change::Updated(state) => {
                        if state.status != crate::membership::Status::Alive {
                            departed.push(state.addr.clone());
                        }
                        if spread_updates {
                            to_spread.push(state);
                        }
                    }
                    Change::Refuted(state) => to_spread.push(state),
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
                view.previous = view
                    .joined_at
                    .filter(|t| t.elapsed() < self.config.settle_window)
                    .map(|_| Arc::new(ring.without(&self.me)));
                view.ring = ring;
            }
        }
        for addr in &departed {
            self.pool.forget(addr);
        }
        if ring_changed {
            log::info!("ring is now {:?}", self.members_text());
            self.epoch.bump();
        }
        self.spread(to_spread);
        ring_changed
    }

    fn members_text(&self) -> Vec<String> {
        self.members().iter().map(ToString::to_string).collect()
    }

    /// Sends `updates` to every alive peer, in the background.
    fn spread(self: &Arc<Self>, updates: Vec<MemberState>) {
        if updates.is_empty() {
            return;
        }
        let message: Vec<Member> = updates.iter().map(convert::member).collect();
        for peer in self.view.read().members.peers() {
            let node = self.clone();
            let message = message.clone();
            std::thread::spawn(move || node.exchange(&peer, message));
        }
    }

    /// Push-pull with one peer: send `message`, merge the table it answers with.
    fn exchange(self: &Arc<Self>, peer: &NodeAddr, message: Vec<Member>) {
        match self.pool.call(peer, |c| c.gossip(message.clone())) {
            Ok(table) => self.merge_table(&table),
            Err(Error::Unreachable { reason, .. }) => {
                log::warn!("{peer} is unreachable ({reason}); dropping it from the ring");
                self.declare_dead(peer);
            }
            Err(e) => log::debug!("gossip with {peer} failed: {e}"),
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

    /// Drops `addr` from the ring and spreads the news (the 2009 `remove`, or a
    /// peer that could not be reached).
    pub fn declare_dead(self: &Arc<Self>, addr: &NodeAddr) {
        self.update_members(true, |m| vec![m.declare_dead(addr)]);
    }

    /// One round of background gossip with the next peer in turn; this is also
    /// how an unreachable member gets noticed and dropped.
    pub fn gossip_round(self: &Arc<Self>) {
        let peers = self.view.read().members.peers();
        if peers.is_empty() {
            return;
        }
        let turn = self.gossip_cursor.fetch_add(1, Ordering::Relaxed) % peers.len();
        let table: Vec<Member> = self.table().iter().map(convert::member).collect();
        self.exchange(&peers[turn], table);
    }

    /// Joins the ring that `seed` belongs to: announce ourselves, take its table,
    /// then greet every member directly so concurrent joiners learn of us quickly.
    pub fn join(self: &Arc<Self>, seed: &NodeAddr) -> Result<()> {
        let me = convert::member(&self.view.read().members.my_state());
        let table = match self.pool.call(seed, |c| c.enter(me.clone())) {
            Ok(table) => table,
            Err(Error::Refused { message, .. }) if message.contains("unknown method") => {
                return self.join_legacy(seed);
            }
            Err(e) => return Err(e),
        };
        self.view.write().joined_at = Some(Instant::now());
        self.merge_table(&table);
        let my_state = self.view.read().members.my_state();
        self.spread(vec![my_state]);
        Ok(())
    }

    /// Joins a ring of 2009 nodes: `get_all`, then `join` on the seed.
    fn join_legacy(self: &Arc<Self>, seed: &NodeAddr) -> Result<()> {
        let members = self.pool.call(seed, |c| c.get_all())?;
        self.view.write().joined_at = Some(Instant::now());
        let addrs: Vec<NodeAddr> = members.iter().filter_map(convert::addr).collect();
        self.update_members(false, |m| addrs.iter().map(|a| m.admit_legacy(a)).collect());
        let me = convert::location(&self.me);
        self.pool.call(seed, |c| c.join(me.clone()))?;
        Ok(())
    }

    // ---- reads and writes ----

    fn check_sizes(&self, key: &[u8], value: &[u8]) -> Result<()> {
        if key.len() > MAX_KEY_BYTES {
            return Err(Error::TooLarge {
                size: key.len(),
                limit: MAX_KEY_BYTES,
            });
        }
        if value.len() > self.config.max_value_bytes {
            return Err(Error::TooLarge {
                size: value.len(),
                limit: self.config.max_value_bytes,
            });
        }
        Ok(())
    }

    /// A call to a peer from the request path: blocking, so tokio may move this
    /// worker's other tasks to another thread meanwhile.
    fn forward<R>(
        &self,
        peer: &NodeAddr,
        call: impl FnMut(&mut crate::client::Client) -> thrift::Result<R>,
    ) -> Result<R> {
        let in_runtime = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if in_runtime {
            tokio::task::block_in_place(|| self.pool.call(peer, call))
        } else {
            self.pool.call(peer, call)
        }
    }

    /// Reads `key`, from here or from its owner. `hops` counts forwards so far.
    pub fn fetch(self: &Arc<Self>, key: &[u8], hops: i8) -> Result<Option<Vec<u8>>> {
        if hops == PEEK {
            return Ok(self.store.get(key).map(|s| s.value));
        }
        for _ in 0..3 {
            let owner = match self.owner(key) {
                Some(owner) if owner != self.me && hops < MAX_HOPS => owner,
                _ => return Ok(self.fetch_here(key)),
            };
            match self.forward(&owner, |c| c.relay_fetch(key.to_vec(), hops + 1)) {
                // A key we still hold but no longer own is on its way to the owner:
                // until it arrives, our copy is the answer.
                Ok(lookup) => {
                    return Ok(lookup
                        .value
                        .or_else(|| self.store.get(key).map(|s| s.value)));
                }
                Err(Error::Unreachable { .. }) => self.declare_dead(&owner),
                Err(e) => return Err(e),
            }
        }
        Err(Error::NoOwner)
    }

    /// Serves a read here. Shortly after joining, a miss also asks the key's
    /// previous owner, whose handoff to us may still be on its way.
    fn fetch_here(&self, key: &[u8]) -> Option<Vec<u8>> {
        if let Some(stored) = self.store.get(key) {
            return Some(stored.value);
        }
        let previous = self.view.read().previous.clone()?;
        let owner = previous.owner(key)?.clone();
        match self.forward(&owner, |c| c.relay_fetch(key.to_vec(), PEEK)) {
            Ok(lookup) => lookup.value,
            Err(e) => {
                log::debug!("asking previous owner {owner} for a key failed: {e}");
                None
            }
        }
    }

    /// Writes `key`, here or at its owner. `hops` counts forwards so far.
    pub fn store_value(self: &Arc<Self>, key: &[u8], value: &[u8], hops: i8) -> Result<()> {
        self.check_sizes(key, value)?;
        for _ in 0..3 {
            let (owner, leaving) = {
                let view = self.view.read();
                (view.routing.owner(key).cloned(), view.leaving)
            };
            // A leaving node never keeps a write: its handoff may be done already.
            let owner = match owner {
                Some(owner) if owner != self.me && (hops < MAX_HOPS || leaving) => owner,
                Some(_) if !leaving => {
                    self.store_here(key, value);
                    return Ok(());
                }
                _ => return Err(Error::NoOwner),
            };
            match self.forward(&owner, |c| {
                c.relay_store(key.to_vec(), value.to_vec(), hops.saturating_add(1))
            }) {
                Ok(()) => return Ok(()),
                Err(Error::Unreachable { .. }) => self.declare_dead(&owner),
                Err(e) => return Err(e),
            }
        }
        Err(Error::NoOwner)
    }

    fn store_here(&self, key: &[u8], value: &[u8]) {
        self.store.overwrite(key, value, |old| match old {
            Some(old) => self.clock.tick_after(old),
            None => self.clock.tick(),
        });
    }

    /// Takes over entries sent by a peer; for each key the newer version wins.
    pub fn absorb(&self, entries: Vec<Entry>) -> Result<usize> {
        let mut applied = 0;
        for entry in entries {
            let Some((key, value, version)) = convert::from_entry(entry) else {
                continue;
            };
            self.clock.observe(version);
            if self.store.merge(&key, &value, version) {
                applied += 1;
            }
        }
        Ok(applied)
    }

    // ---- handoff ----

    /// Sends every key we hold but do not own to its owner, in bounded batches,
    /// deleting each copy only after the owner acknowledged it (and only if no
    /// newer write arrived meanwhile). Ownership is re-checked before each batch.
    pub fn handoff_pass(self: &Arc<Self>) -> HandoffReport {
        let epoch = self.epoch.get();
        let routing = self.view.read().routing.clone();
        let mut by_owner: BTreeMap<NodeAddr, Vec<Vec<u8>>> = BTreeMap::new();
        for key in self
            .store
            .keys_where(|k| routing.owner(k).is_some_and(|o| *o != self.me))
        {
            if let Some(owner) = routing.owner(&key) {
                by_owner.entry(owner.clone()).or_default().push(key);
            }
        }
        let mut report = HandoffReport::default();
        for (owner, keys) in by_owner {
            let mut keys = keys.into_iter().peekable();
            while keys.peek().is_some() {
                if self.epoch.get() != epoch {
                    report.restarted = true;
                    return report;
                }
                let mut batch = Vec::new();
                let mut sent = Vec::new();
                let mut bytes = 0;
                while bytes < self.config.handoff_batch_bytes
                    && batch.len() < self.config.handoff_batch_entries
                {
                    let Some(key) = keys.next() else { break };
                    if let Some(stored) = self.store.get(&key) {
                        bytes += key.len() + stored.value.len();
                        sent.push((key.clone(), stored.version));
                        batch.push(convert::entry(key, stored));
                    }
                }
                if batch.is_empty() {
                    continue;
                }
                match self.pool.call(&owner, |c| c.absorb(batch.clone())) {
                    Ok(()) => {
                        for (key, version) in &sent {
                            self.store.remove_if(key, *version);
                        }
                        report.moved += sent.len();
                    }
                    Err(Error::Unreachable { .. }) => {
                        self.declare_dead(&owner);
                        report.restarted = true;
                        return report;
                    }
                    Err(e) => {
                        log::warn!("handing {} keys to {owner} failed: {e}", sent.len());
                        report.stuck += sent.len() + keys.count();
                        break;
                    }
                }
            }
        }
        if report.moved > 0 {
            log::info!("handed {} keys to their owners", report.moved);
        }
        report
    }

    /// Background worker: runs a handoff pass whenever the ring changes, and
    /// every few seconds anyway (to pick up keys that were stored off-owner).
    pub fn handoff_worker(self: &Arc<Self>) {
        let mut seen = u64::MAX;
        while !self.stop_requested.load(Ordering::Acquire) {
            let now = self.epoch.wait_past(seen, Duration::from_secs(2));
            seen = now;
            if self.stop_requested.load(Ordering::Acquire) {
                break;
            }
            while self.handoff_pass().restarted {}
        }
    }

    // ---- leaving ----

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
        while !self.store.is_empty() && Instant::now() < deadline {
            if self.view.read().routing.is_empty() {
                log::warn!(
                    "last member leaving: its {} keys have nowhere to go",
                    self.store.len()
                );
                break;
            }
            let report = self.handoff_pass();
            if report.moved == 0 && !report.restarted {
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
        let handles: Vec<_> = peers
            .into_iter()
            .map(|peer| {
                let node = self.clone();
                let farewell = farewell.clone();
                std::thread::spawn(move || {
                    if let Err(e) = node.pool.call(&peer, |c| c.gossip(vec![farewell.clone()])) {
                        log::debug!("telling {peer} we left failed: {e}");
                    }
                })
            })
            .collect();
        for handle in handles {
            let _ = handle.join();
        }
        log::info!("left the ring");
        left_behind
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
        let keys = self.store.keys_where(|_| true);
        log::info!("debug: {} keys", keys.len());
        for key in keys.iter().take(100) {
            log::info!("debug: key {}", String::from_utf8_lossy(key));
        }
    }
}
