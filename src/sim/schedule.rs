//! Random fault schedules, each drawn from a seed and run against a simulated
//! five-node ring (N=3, W=2, failure timeout 2 s) under a workload of
//! single-writer keys and readers through random nodes. One fault at a time:
//! a crash (restarted from its disk, or with the disk lost), a pause
//! (SIGSTOP), a partition of one node, or a graceful leave and rejoin. After
//! the faults the ring is healed, must settle, and every key is read through
//! every node; [`super::check`] judges the whole history.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};

use super::check::{History, Violation, Write, value_of};
use super::{Cluster, NetConfig, Outcome};
use crate::addr::NodeAddr;
use crate::config::Config;

/// What a fault does to its node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// `kill -9`, then a restart with its data directory.
    Crash,
    /// `kill -9`, then a restart with its data lost.
    CrashWiped,
    /// SIGSTOP, then SIGCONT.
    Pause,
    /// Cut off from every other node, then healed.
    Isolate,
    /// SIGINT (graceful leave), then started again.
    Leave,
}

/// One fault in a schedule.
#[derive(Clone, Debug)]
pub struct Fault {
    /// When it starts, after the workload starts.
    pub at: Duration,
    /// What it is.
    pub kind: FaultKind,
    /// Which node (index).
    pub node: usize,
    /// How long until it is undone.
    pub lasts: Duration,
}

/// A schedule: the ring, the network, the workload and the faults.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The seed everything was drawn from.
    pub seed: u64,
    /// Nodes in the ring.
    pub nodes: usize,
    /// How long the clients run.
    pub workload: Duration,
    /// Chance that a message is lost.
    pub drop_rate: f64,
    /// The faults, in order, one at a time.
    pub faults: Vec<Fault>,
    /// Each node's `--weight` (1 to 3), by index.
    pub weights: Vec<u32>,
}

/// Draws the schedule for `seed`.
pub fn plan(seed: u64) -> Plan {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_5eed);
    let nodes = 5;
    let workload = Duration::from_secs(20);
    let kinds = [
        FaultKind::Crash,
        FaultKind::CrashWiped,
        FaultKind::Pause,
        FaultKind::Isolate,
        FaultKind::Leave,
    ];
    let mut faults = Vec::new();
    let mut at = Duration::from_millis(rng.random_range(500..2000));
    while at < workload - Duration::from_secs(4) {
        let lasts = Duration::from_millis(rng.random_range(500..6000));
        faults.push(Fault {
            at,
            kind: kinds[rng.random_range(0..kinds.len())],
            node: rng.random_range(0..nodes),
            lasts,
        });
        at += lasts + Duration::from_millis(rng.random_range(1000..3000));
    }
    let drop_rate = if rng.random_bool(0.25) { 0.002 } else { 0.0 };
    // Drawn last, so the faults of a seed are what they were before weights.
    let weights = (0..nodes)
        .map(|_| {
            if rng.random_bool(0.6) {
                1
            } else {
                rng.random_range(2..=3)
            }
        })
        .collect();
    Plan {
        seed,
        nodes,
        workload,
        drop_rate,
        faults,
        weights,
    }
}

/// What running a schedule showed.
pub struct Report {
    /// The schedule.
    pub plan: Plan,
    /// Writes sent, writes acknowledged, reads answered.
    pub counts: (usize, usize, usize),
    /// Whether the ring settled after the faults.
    pub settled: bool,
    /// Tombstones the nodes running at the end had removed (a restarted
    /// node counts from its restart).
    pub tombstones_collected: i64,
    /// Tombstones still held by the running nodes at the end, after the
    /// ring settled and 30 s more: collection must converge (0) on a ring
    /// that settled with every member alive.
    pub tombstones_left: i64,
    /// Broken promises.
    pub violations: Vec<Violation>,
    /// A digest of the history (the same seed gives the same one).
    pub fingerprint: String,
}

impl Report {
    /// Whether the history kept every promise, the ring settled and its
    /// tombstones were collected.
    pub fn passed(&self) -> bool {
        self.violations.is_empty() && self.settled && self.tombstones_left == 0
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (writes, acked, reads) = self.counts;
        writeln!(
            f,
            "seed {}: {} nodes (weights {:?}), drop rate {}, {writes} writes ({acked} acknowledged), \
             {reads} reads, settled: {}, {} tombstones collected, {} left, history {}",
            self.plan.seed,
            self.plan.nodes,
            self.plan.weights,
            self.plan.drop_rate,
            self.settled,
            self.tombstones_collected,
            self.tombstones_left,
            self.fingerprint
        )?;
        for fault in &self.plan.faults {
            writeln!(
                f,
                "  at {:>6.3}s {:?} node {} for {:.3}s",
                fault.at.as_secs_f64(),
                fault.kind,
                fault.node,
                fault.lasts.as_secs_f64()
            )?;
        }
        for violation in self.violations.iter().take(20) {
            writeln!(f, "  VIOLATION {violation}")?;
        }
        if self.violations.len() > 20 {
            writeln!(f, "  ... and {} more", self.violations.len() - 20)?;
        }
        Ok(())
    }
}

/// The settings every simulated node runs with: tombstones are removed
/// after 3 s, shorter than most faults last, so schedules check that a
/// member away longer than the grace brings no erased value back.
pub fn sim_config() -> Config {
    Config {
        failure_timeout: Duration::from_secs(2),
        leave_timeout: Duration::from_secs(20),
        tombstone_grace: Duration::from_secs(3),
        ..Config::default()
    }
}

/// How long a client waits for an answer before giving up.
const PATIENCE: Duration = Duration::from_secs(1);

/// Runs the schedule for `seed` in a fresh simulation.
pub fn run_seed(seed: u64) -> Report {
    run_plan(plan(seed))
}

/// Runs `plan` in a fresh simulation.
pub fn run_plan(plan: Plan) -> Report {
    super::run(run(plan))
}

fn pick(rng: &mut ChaCha8Rng, nodes: &[NodeAddr]) -> Option<NodeAddr> {
    (!nodes.is_empty()).then(|| nodes[rng.random_range(0..nodes.len())].clone())
}

async fn run(plan: Plan) -> Report {
    let net = NetConfig {
        drop_rate: plan.drop_rate,
        ..NetConfig::default()
    };
    let cluster = Arc::new(Cluster::new(plan.seed, sim_config(), net));
    let addrs: Vec<NodeAddr> = (0..plan.nodes).map(Cluster::addr).collect();
    for (addr, weight) in addrs.iter().zip(&plan.weights) {
        cluster.set_weight(addr, *weight);
    }
    cluster
        .start(&addrs[0], None)
        .await
        .expect("the first node starts");
    for addr in &addrs[1..] {
        // A lost message can fail a join (the network drops some); retry.
        restart(&cluster, addr, false).await;
        assert!(cluster.node(addr).is_some(), "{addr} could not join");
    }
    cluster
        .wait_until(Duration::from_secs(30), Cluster::settled)
        .await;

    let history = Arc::new(History::default());
    let stop_at = cluster.now() + plan.workload;
    let started = tokio::time::Instant::now();
    let keys: Vec<Vec<String>> = (0..3)
        .map(|w| (0..2).map(|k| format!("key-{w}-{k}")).collect())
        .collect();
    let mut clients = Vec::new();
    for (w, own) in keys.iter().enumerate() {
        let (cluster, history, own) = (cluster.clone(), history.clone(), own.clone());
        let mut rng = ChaCha8Rng::seed_from_u64(plan.seed.wrapping_mul(31).wrapping_add(w as u64));
        clients.push(tokio::spawn(async move {
            let mut next = vec![0u64; own.len()];
            while cluster.now() < stop_at {
                let k = rng.random_range(0..own.len());
                let Some(via) = pick(&mut rng, &cluster.running()) else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                next[k] += 1;
                let index = next[k];
                let erase = rng.random_bool(0.1);
                let value = value_of(&own[k], index);
                let start = cluster.now();
                let outcome = cluster
                    .put(
                        &via,
                        own[k].as_bytes(),
                        (!erase).then_some(&value[..]),
                        PATIENCE,
                    )
                    .await;
                log::trace!(
                    "client: {} #{index}{} via {via}: {outcome:?}",
                    own[k],
                    if erase { " (erase)" } else { "" }
                );
                history.write(Write {
                    key: own[k].clone(),
                    index,
                    erase,
                    start,
                    end: cluster.now(),
                    acked: matches!(outcome, Outcome::Ok(())),
                });
                let pause = rng.random_range(5..30);
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
        }));
    }
    // Keys written once and erased a second or two later, whose tombstones
    // outlive the grace (the other keys are written again too soon), so a
    // fault between the write and the erase leaves a replica with an older
    // copy to bring back: one client of its own, each key read at the end.
    let erased_keys = Arc::new(parking_lot::Mutex::new(Vec::new()));
    {
        let (cluster, history, erased_keys) =
            (cluster.clone(), history.clone(), erased_keys.clone());
        let mut rng = ChaCha8Rng::seed_from_u64(plan.seed.wrapping_mul(41).wrapping_add(7));
        clients.push(tokio::spawn(async move {
            const LAG: usize = 8;
            let mut n = 0;
            while cluster.now() < stop_at {
                n += 1;
                let key = format!("once-{n}");
                erased_keys.lock().push(key.clone());
                let mut steps = vec![(key, 1, false)];
                if n > LAG {
                    steps.push((format!("once-{}", n - LAG), 2, true));
                }
                for (key, index, erase) in steps {
                    let Some(via) = pick(&mut rng, &cluster.running()) else {
                        break;
                    };
                    let value = value_of(&key, index);
                    let start = cluster.now();
                    let outcome = cluster
                        .put(
                            &via,
                            key.as_bytes(),
                            (!erase).then_some(&value[..]),
                            PATIENCE,
                        )
                        .await;
                    history.write(Write {
                        key,
                        index,
                        erase,
                        start,
                        end: cluster.now(),
                        acked: matches!(outcome, Outcome::Ok(())),
                    });
                }
                let pause = rng.random_range(100..400);
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
        }));
    }
    let all_keys: Vec<String> = keys.iter().flatten().cloned().collect();
    for r in 0..2 {
        let (cluster, history, all_keys) = (cluster.clone(), history.clone(), all_keys.clone());
        let mut rng = ChaCha8Rng::seed_from_u64(plan.seed.wrapping_mul(37).wrapping_add(100 + r));
        clients.push(tokio::spawn(async move {
            while cluster.now() < stop_at {
                let key = &all_keys[rng.random_range(0..all_keys.len())];
                let Some(via) = pick(&mut rng, &cluster.running()) else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let start = cluster.now();
                let outcome = cluster.get(&via, key.as_bytes(), PATIENCE).await;
                log::trace!(
                    "client: read {key} via {via}: {:?}",
                    match &outcome {
                        Outcome::Ok(v) => Outcome::Ok(v.as_deref().map(String::from_utf8_lossy)),
                        Outcome::Failed(e) => Outcome::Failed(e.clone()),
                        Outcome::TimedOut => Outcome::TimedOut,
                    }
                );
                if let Outcome::Ok(value) = outcome {
                    history.read(
                        key,
                        &via.to_string(),
                        start,
                        cluster.now(),
                        value.as_deref(),
                    );
                }
                let pause = rng.random_range(5..20);
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
        }));
    }

    for fault in &plan.faults {
        tokio::time::sleep_until(started + fault.at).await;
        apply(&cluster, &addrs, fault).await;
    }
    for client in clients {
        let _ = client.await;
    }

    // Heal everything, bring every node back, and let the ring settle.
    cluster.heal();
    for addr in &addrs {
        cluster.resume(addr);
        if cluster.node(addr).is_none() {
            restart(&cluster, addr, false).await;
        }
    }
    let settled = cluster
        .wait_until(Duration::from_secs(60), Cluster::settled)
        .await;
    // Let the tombstones go, so the reads below check that no erased value
    // came back once they were gone (not waited for when the ring did not
    // settle: that already fails the schedule).
    if settled {
        cluster
            .wait_until(Duration::from_secs(30), |cluster| {
                (cluster.running().iter())
                    .filter_map(|addr| cluster.node(addr))
                    .all(|node| node.stats()["tombstones"] == 0)
            })
            .await;
    }
    let all_keys: Vec<String> = all_keys
        .into_iter()
        .chain(erased_keys.lock().iter().cloned())
        .collect();
    for key in &all_keys {
        for via in cluster.running() {
            let start = cluster.now();
            if let Outcome::Ok(value) = cluster
                .get(&via, key.as_bytes(), Duration::from_secs(10))
                .await
            {
                history.read(
                    key,
                    &via.to_string(),
                    start,
                    cluster.now(),
                    value.as_deref(),
                );
            }
        }
    }
    let tombstones_collected = (cluster.running().iter())
        .filter_map(|addr| cluster.node(addr))
        .map(|node| node.stats()["tombstones_collected"])
        .sum();
    let tombstones_left = (cluster.running().iter())
        .filter_map(|addr| cluster.node(addr))
        .map(|node| node.stats()["tombstones"])
        .sum();
    for addr in cluster.running() {
        cluster.kill(&addr);
    }
    Report {
        tombstones_collected,
        tombstones_left,
        counts: history.counts(),
        violations: history.check(),
        fingerprint: history.fingerprint(),
        settled,
        plan,
    }
}

/// Starts `addr` again, joining any running node (a new ring if none runs).
async fn restart(cluster: &Cluster, addr: &NodeAddr, wiped: bool) {
    let seed = cluster.running().into_iter().find(|a| a != addr);
    for _ in 0..20 {
        let started = if wiped {
            cluster.start_empty(addr, seed.as_ref()).await
        } else {
            cluster.start(addr, seed.as_ref()).await
        };
        if started.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn apply(cluster: &Cluster, addrs: &[NodeAddr], fault: &Fault) {
    let addr = &addrs[fault.node];
    if cluster.node(addr).is_none() {
        return;
    }
    match fault.kind {
        FaultKind::Crash | FaultKind::CrashWiped => {
            cluster.kill(addr);
            tokio::time::sleep(fault.lasts).await;
            restart(cluster, addr, fault.kind == FaultKind::CrashWiped).await;
        }
        FaultKind::Pause => {
            cluster.pause(addr);
            tokio::time::sleep(fault.lasts).await;
            cluster.resume(addr);
        }
        FaultKind::Isolate => {
            cluster.isolate(addr);
            tokio::time::sleep(fault.lasts).await;
            cluster.heal();
        }
        FaultKind::Leave => {
            cluster.leave(addr).await;
            tokio::time::sleep(fault.lasts).await;
            restart(cluster, addr, false).await;
        }
    }
}
