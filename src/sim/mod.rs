//! A deterministic cluster simulation: many real [`Node`]s in one process,
//! on one current-thread tokio runtime with virtual time, talking over a
//! simulated network that delays, drops, cuts, and delivers to nodes that
//! can be paused (SIGSTOP), killed (`kill -9`, storage kept) and restarted.
//! All randomness comes from one seed, so a seed replays the same history.
//!
//! - [`Cluster`]: the nodes and the faults a test or schedule applies.
//! - [`check`]: the history clients record, and the checker that states the
//!   guarantee (no acknowledged write lost, no stale read, no erased value
//!   back) in code.
//! - [`schedule`]: random fault schedules with a workload, run from a seed.
//!
//! Run a simulation inside [`run`], which builds the runtime (virtual time
//! starts paused and jumps ahead whenever every task waits).

pub mod check;
pub mod schedule;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use tokio::sync::oneshot;
use tokio::time::Instant;

pub use crate::membership::Status;
pub use crate::tasks::current_node;

use crate::addr::NodeAddr;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::node::{Node, Parts};
use crate::peer::{Reply, Request};
use crate::store::Store;
use crate::tasks::{Gate, Tasks};
use crate::transport::{BoxFuture, Transport};
use crate::version::WallClock;

/// Runs `work` on a fresh current-thread runtime whose clock starts paused
/// (virtual time), and returns its output.
pub fn run<F: Future>(work: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime")
        .block_on(work)
}

thread_local! {
    static STARTED: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
}

/// Virtual time since the newest cluster on this thread was made (for logs).
pub fn sim_time() -> Option<Duration> {
    STARTED.with(|s| s.get()).map(|s| s.elapsed())
}

/// Wall time at the start of every simulation (2026-01-01), in microseconds.
const EPOCH_MICROS: u64 = 1_767_225_600_000_000;

/// How the simulated network behaves.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// Shortest one-way delay (whole milliseconds).
    pub min_delay: Duration,
    /// Longest one-way delay (whole milliseconds).
    pub max_delay: Duration,
    /// Chance that one leg of a call is lost (the caller then times out).
    pub drop_rate: f64,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(3),
            drop_rate: 0.0,
        }
    }
}

/// One simulated process.
struct Process {
    node: Arc<Node>,
    gate: Arc<Gate>,
}

/// The network and the processes on it.
struct Net {
    config: Mutex<NetConfig>,
    rng: Mutex<ChaCha8Rng>,
    processes: Mutex<BTreeMap<NodeAddr, Process>>,
    /// Directed links that lose everything.
    cut: Mutex<BTreeSet<(NodeAddr, NodeAddr)>>,
    started: Instant,
}

impl Net {
    /// One leg's fate: its delay, and whether it is lost.
    fn leg(&self, from: &NodeAddr, to: &NodeAddr) -> (Duration, bool) {
        let config = self.config.lock().clone();
        let mut rng = self.rng.lock();
        // Whole milliseconds: tokio's timers tick in milliseconds from a start
        // that is not aligned with the paused clock's, so a fraction would be
        // rounded differently from run to run, and the seed would not replay.
        let span = config
            .max_delay
            .saturating_sub(config.min_delay)
            .as_millis() as u64;
        let delay = config.min_delay + Duration::from_millis(rng.random_range(0..=span));
        let lost = self.cut.lock().contains(&(from.clone(), to.clone()))
            || (config.drop_rate > 0.0 && rng.random_bool(config.drop_rate));
        (delay, lost)
    }

    fn node(&self, addr: &NodeAddr) -> Option<Arc<Node>> {
        self.processes.lock().get(addr).map(|p| p.node.clone())
    }
}

/// A node's way onto the simulated network.
struct SimTransport {
    me: NodeAddr,
    net: Arc<Net>,
}

impl Transport for SimTransport {
    fn call(
        &self,
        peer: &NodeAddr,
        request: Request,
        timeout: Duration,
    ) -> BoxFuture<Result<Reply>> {
        let net = self.net.clone();
        let from = self.me.clone();
        let peer = peer.clone();
        Box::pin(async move {
            let name = peer.to_string();
            let attempt = async {
                let (delay, lost) = net.leg(&from, &peer);
                tokio::time::sleep(delay).await;
                if lost {
                    std::future::pending::<()>().await;
                }
                // A process that is gone refuses the connection, as a closed port does.
                let Some(target) = net.node(&peer) else {
                    return Err(Error::Unreachable {
                        peer: name.clone(),
                        reason: "connection refused (simulated)".into(),
                        refused: true,
                    });
                };
                let (tx, rx) = oneshot::channel();
                let server = target.clone();
                target.tasks().spawn(async move {
                    let _ = tx.send(server.handle(request).await);
                });
                // The sender is dropped when the target is killed mid-call.
                let reply = rx.await.map_err(|_| Error::Rpc {
                    peer: name.clone(),
                    reason: "connection reset (simulated)".into(),
                })?;
                let (delay, lost) = net.leg(&peer, &from);
                tokio::time::sleep(delay).await;
                if lost {
                    std::future::pending::<()>().await;
                }
                // An error the peer answered with travels as it would over
                // the wire: its kind and message.
                reply.map_err(|e| e.into_remote(&peer))
            };
            match tokio::time::timeout(timeout, attempt).await {
                Ok(reply) => reply,
                Err(_) => Err(Error::Rpc {
                    peer: name.clone(),
                    reason: format!("no reply within {timeout:?} (simulated)"),
                }),
            }
        })
    }
}

/// What a client call through a node came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome<T> {
    /// The node answered.
    Ok(T),
    /// The node answered with an error.
    Failed(String),
    /// The client gave up waiting.
    TimedOut,
}

/// A simulated cluster of real nodes.
pub struct Cluster {
    net: Arc<Net>,
    config: Config,
    /// Every store ever used, by node, kept across crashes ("the disk").
    stores: Mutex<BTreeMap<NodeAddr, Store>>,
    /// Nodes that run with another `--weight` than `config`'s.
    weights: Mutex<BTreeMap<NodeAddr, u32>>,
}

impl Cluster {
    /// An empty cluster whose nodes run with `config` on a network seeded
    /// with `seed`.
    pub fn new(seed: u64, config: Config, net: NetConfig) -> Self {
        STARTED.with(|s| s.set(Some(Instant::now())));
        Cluster {
            net: Arc::new(Net {
                config: Mutex::new(net),
                rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
                processes: Mutex::new(BTreeMap::new()),
                cut: Mutex::new(BTreeSet::new()),
                started: Instant::now(),
            }),
            config,
            stores: Mutex::new(BTreeMap::new()),
            weights: Mutex::new(BTreeMap::new()),
        }
    }

    /// Runs `addr` with `--weight weight` from its next start on (it keeps
    /// it across restarts).
    pub fn set_weight(&self, addr: &NodeAddr, weight: u32) {
        self.weights.lock().insert(addr.clone(), weight);
    }

    /// The address of simulated node number `i`.
    pub fn addr(i: usize) -> NodeAddr {
        NodeAddr::new("10.0.0.1", 9000 + i as u16)
    }

    /// Changes the network's behaviour from now on.
    pub fn set_net(&self, net: NetConfig) {
        *self.net.config.lock() = net;
    }

    fn wall(&self) -> WallClock {
        let started = self.net.started;
        Arc::new(move || EPOCH_MICROS + started.elapsed().as_micros() as u64)
    }

    /// Starts node `addr` (joining `seed` if given) with the store it had
    /// before, if any: a restart from disk. Returns once it is serving, or
    /// the join's error.
    pub async fn start(&self, addr: &NodeAddr, seed: Option<&NodeAddr>) -> Result<()> {
        let store = self
            .stores
            .lock()
            .entry(addr.clone())
            .or_insert_with(Store::memory_deterministic)
            .clone();
        self.start_with(addr, seed, store).await
    }

    /// Like [`Cluster::start`], with an empty store (a crash that lost the
    /// disk, or an in-memory node).
    pub async fn start_empty(&self, addr: &NodeAddr, seed: Option<&NodeAddr>) -> Result<()> {
        let store = Store::memory_deterministic();
        self.stores.lock().insert(addr.clone(), store.clone());
        self.start_with(addr, seed, store).await
    }

    async fn start_with(
        &self,
        addr: &NodeAddr,
        seed: Option<&NodeAddr>,
        store: Store,
    ) -> Result<()> {
        assert!(
            self.net.node(addr).is_none(),
            "{addr} is already running in the simulation"
        );
        let gate = Arc::new(Gate::default());
        let tasks = Tasks::new(Some(gate.clone())).named(&addr.port.to_string());
        let config = Config {
            seed: seed.cloned(),
            weight: (self.weights.lock().get(addr).copied()).unwrap_or(self.config.weight),
            ..self.config.clone()
        };
        let node = Node::new(Parts {
            config,
            me: addr.clone(),
            store,
            transport: Arc::new(SimTransport {
                me: addr.clone(),
                net: self.net.clone(),
            }),
            tasks: tasks.clone(),
            wall: self.wall(),
        });
        self.net.processes.lock().insert(
            addr.clone(),
            Process {
                node: node.clone(),
                gate,
            },
        );
        if let Some(seed) = seed {
            let (tx, rx) = oneshot::channel();
            let joining = node.clone();
            let seed = seed.clone();
            tasks.spawn(async move {
                let _ = tx.send(joining.join(&seed).await);
            });
            let joined = rx.await.unwrap_or(Err(Error::ShuttingDown));
            if let Err(e) = joined {
                self.kill(addr);
                return Err(e);
            }
        }
        node.start();
        Ok(())
    }

    /// The running node at `addr`.
    pub fn node(&self, addr: &NodeAddr) -> Option<Arc<Node>> {
        self.net.node(addr)
    }

    /// Addresses of the running processes (paused ones included).
    pub fn running(&self) -> Vec<NodeAddr> {
        self.net.processes.lock().keys().cloned().collect()
    }

    /// `kill -9`: the process is gone at once (its tasks end, its calls are
    /// refused from now on); its store is kept for a restart.
    pub fn kill(&self, addr: &NodeAddr) {
        if let Some(process) = self.net.processes.lock().remove(addr) {
            process.node.tasks().kill();
            // Let frozen tasks run once, to see that they were killed.
            process.gate.resume();
        }
    }

    /// SIGSTOP: the process stops running but keeps its connections; calls
    /// to it wait, and time passes for it too.
    pub fn pause(&self, addr: &NodeAddr) {
        if let Some(process) = self.net.processes.lock().get(addr) {
            process.gate.pause();
        }
    }

    /// SIGCONT.
    pub fn resume(&self, addr: &NodeAddr) {
        if let Some(process) = self.net.processes.lock().get(addr) {
            process.gate.resume();
        }
    }

    /// Cuts `addr` off from every other node (both directions), as a network
    /// partition of one. Clients can still reach it.
    pub fn isolate(&self, addr: &NodeAddr) {
        let others = self.all_known();
        let mut cut = self.net.cut.lock();
        for other in others.iter().filter(|o| *o != addr) {
            cut.insert((addr.clone(), other.clone()));
            cut.insert((other.clone(), addr.clone()));
        }
    }

    /// Cuts the link between `a` and `b` (both directions): what one sends
    /// the other is lost. Clients and every other link are unaffected.
    pub fn cut(&self, a: &NodeAddr, b: &NodeAddr) {
        let mut cut = self.net.cut.lock();
        cut.insert((a.clone(), b.clone()));
        cut.insert((b.clone(), a.clone()));
    }

    /// Heals every cut link.
    pub fn heal(&self) {
        self.net.cut.lock().clear();
    }

    fn all_known(&self) -> Vec<NodeAddr> {
        let mut all: BTreeSet<NodeAddr> = self.stores.lock().keys().cloned().collect();
        all.extend(self.running());
        all.into_iter().collect()
    }

    /// SIGINT: the node leaves gracefully; resolves with the keys it could
    /// not hand over, once it is gone.
    pub async fn leave(&self, addr: &NodeAddr) -> Option<usize> {
        let node = self.node(addr)?;
        node.request_stop();
        let (tx, rx) = oneshot::channel();
        let leaving = node.clone();
        node.tasks().spawn(async move {
            let _ = tx.send(leaving.leave().await);
        });
        let left_behind = rx.await.ok();
        self.kill(addr);
        left_behind
    }

    /// A client's read of `key` through `via`, giving up after `patience`.
    /// The node goes on with the request after the client gives up.
    pub async fn get(
        &self,
        via: &NodeAddr,
        key: &[u8],
        patience: Duration,
    ) -> Outcome<Option<Vec<u8>>> {
        let Some(node) = self.node(via) else {
            return Outcome::Failed(format!("cannot reach {via}: connection refused"));
        };
        let key = key.to_vec();
        let server = node.clone();
        self.client_call(&node, patience, async move {
            match server.fetch_now(&key, 0) {
                Some(answer) => answer,
                None => server.fetch(&key, 0).await,
            }
        })
        .await
    }

    /// A client's write (or erase, `value: None`) through `via`.
    pub async fn put(
        &self,
        via: &NodeAddr,
        key: &[u8],
        value: Option<&[u8]>,
        patience: Duration,
    ) -> Outcome<()> {
        let Some(node) = self.node(via) else {
            return Outcome::Failed(format!("cannot reach {via}: connection refused"));
        };
        let key = key.to_vec();
        let value = value.map(<[u8]>::to_vec);
        let server = node.clone();
        self.client_call(&node, patience, async move {
            match server.write_now(&key, value.as_deref(), 0, None) {
                Some(answer) => answer,
                None => server.write(&key, value.as_deref(), 0, None, None).await,
            }
        })
        .await
    }

    async fn client_call<T: Send + 'static>(
        &self,
        node: &Arc<Node>,
        patience: Duration,
        work: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Outcome<T> {
        let (tx, rx) = oneshot::channel();
        node.tasks().spawn(async move {
            let _ = tx.send(work.await);
        });
        match tokio::time::timeout(patience, rx).await {
            Ok(Ok(Ok(value))) => Outcome::Ok(value),
            Ok(Ok(Err(e))) => Outcome::Failed(e.to_string()),
            Ok(Err(_)) => Outcome::Failed("connection reset".into()),
            Err(_) => Outcome::TimedOut,
        }
    }

    /// Virtual time since the cluster was made.
    pub fn now(&self) -> Duration {
        self.net.started.elapsed()
    }

    /// Waits (in virtual time) until `done` holds, checking every 10 ms, for
    /// at most `limit`; returns whether it held.
    pub async fn wait_until(
        &self,
        limit: Duration,
        mut done: impl FnMut(&Cluster) -> bool,
    ) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if done(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Whether every running node sees exactly the running, unpaused nodes
    /// as its ring, and has nothing left to replicate.
    pub fn settled(&self) -> bool {
        let processes = self.net.processes.lock();
        let alive: Vec<NodeAddr> = processes.keys().cloned().collect();
        processes.values().all(|p| {
            let stats = p.node.stats();
            p.node.members() == alive
                && stats.get("replication_pending") == Some(&0)
                && stats.get("hints") == Some(&0)
                && !p.node.syncing()
        })
    }
}

/// The key's replicas as `via` sees them, owner first.
pub fn replicas_of(cluster: &Cluster, via: &NodeAddr, key: &[u8]) -> Vec<NodeAddr> {
    cluster
        .node(via)
        .map(|n| n.replicas(key))
        .unwrap_or_default()
}
