//! The idle part: a 3-node ring keeping 3 copies of each key is loaded with
//! `keys` keys of 100 B through one connection (64 stores in flight), left
//! alone until it has settled, and then each node's CPU and memory are read
//! over a window in which nothing is asked of it.
//!
//! Settled means the ring has nothing left to do that the load caused: every
//! node is ready and not catching up, no write is queued for another replica,
//! no hint or handoff is pending, and the nodes hold every copy (`stats`);
//! then, with no client connected, two back-to-back windows of
//! [`SETTLE_WINDOW`] in which no node repaired a key by anti-entropy
//! (`/metrics`) and, from the first to the second, no node's CPU fell by
//! more than a fifth (or one clock tick): what the load left behind is done.
//! All of it before a deadline: a ring that does not settle is measured
//! anyway, and its row says so.

use std::time::{Duration, Instant};

use thrifty_p2p::Result;

use crate::nodes::{Metrics, NodeProc, connect_all};
use crate::procfs::{CpuSnapshot, cpu_ticks, rss_bytes, ticks};
use crate::report::{size, thousands};
use crate::results::{Idle, IdleNode, Settle};
use crate::run::Bench;
use crate::target::Target;
use crate::wire::Conn;

/// Length of each window the CPU is compared over while settling.
pub const SETTLE_WINDOW: Duration = Duration::from_secs(2);

/// How often `stats` is asked while replication and hints drain.
const POLL: Duration = Duration::from_millis(250);

/// Keys repaired by anti-entropy, counted by every node.
const REPAIRED: &str = r#"thrifty_repaired_keys_total{by="anti_entropy"}"#;
/// Anti-entropy comparisons a node answered (one per exchange a peer starts).
const COMPARED: &str = r#"thrifty_requests_total{method="diff_buckets"}"#;

impl Bench<'_> {
    /// One idle row: a fresh ring loaded with `keys` keys, settled, then
    /// measured over `idle_window`.
    pub fn idle(&self, keys: usize, progress: &mut dyn FnMut(&str)) -> Result<Idle> {
        let c = self.config;
        let nodes = self.start_ring_with(c.idle_replicas, true)?;
        let pids: Vec<u32> = nodes.iter().map(NodeProc::pid).collect();
        let what = format!("idle, {} keys", thousands(keys as f64));
        progress(&format!(
            "{what}: loading {} keys of {} at N={} over one connection, {} in flight",
            keys,
            size(c.idle_value),
            c.idle_replicas,
            c.idle_depth
        ));
        // One socket to one node: at 3 copies on 3 nodes it holds every key,
        // so it coordinates every write without forwarding. (Four such
        // connections loaded 100,000 keys slower here, 19k against 26k
        // keys/s: the three nodes share the servers' core, the bottleneck.)
        let before = CpuSnapshot::take(&pids);
        let load = self.fill::<Conn>(
            &Target::single(nodes[0].socket),
            keys,
            c.idle_value,
            1,
            c.idle_depth,
        )?;
        let load_elsewhere = before.elsewhere(&CpuSnapshot::take(&pids));
        progress(&format!(
            "{what}: loaded in {:.2} s ({} stores refused and sent again); waiting for the ring to settle",
            load.took.as_secs_f64(),
            load.retried
        ));

        let copies = keys * c.idle_replicas.min(nodes.len());
        let settle = settle(&nodes, copies, c.idle_settle_for(keys))?;
        progress(&format!(
            "{what}: {} after {:.1} s (the load's work drained after {}); measuring {:.0} s",
            if settle.settled {
                "settled"
            } else {
                "not settled"
            },
            settle.secs,
            settle.drained.map_or("-".into(), |s| format!("{s:.1} s")),
            c.idle_window.as_secs_f64()
        ));

        // The scrapes stay outside the window, so their cost does not count.
        let metrics_before = scrape(&nodes)?;
        let others_before = CpuSnapshot::take(&pids);
        let ticks_before = node_ticks(&pids)?;
        let started = Instant::now();
        // The measurement itself: nothing is asked of the nodes meanwhile.
        std::thread::sleep(c.idle_window);
        let ticks_after = node_ticks(&pids)?;
        let window = started.elapsed();
        let elsewhere = others_before.elsewhere(&CpuSnapshot::take(&pids));
        let metrics_after = scrape(&nodes)?;

        let mut idle_nodes = Vec::with_capacity(nodes.len());
        for (i, node) in nodes.iter().enumerate() {
            let counted = |series: &str| {
                (metrics_after[i].sample(series) - metrics_before[i].sample(series)).max(0.0) as u64
            };
            idle_nodes.push(IdleNode {
                cpu: share_of_core(ticks_after[i] - ticks_before[i], window),
                rss: rss_bytes(node.pid())?,
                repaired: counted(REPAIRED),
                compared: counted(COMPARED),
            });
        }
        Ok(Idle {
            keys,
            value: c.idle_value,
            replicas: c.idle_replicas,
            depth: c.idle_depth,
            load_secs: load.took.as_secs_f64(),
            load_retried: load.retried,
            load_elsewhere,
            settle,
            window,
            nodes: idle_nodes,
            elsewhere,
        })
    }
}

/// Waits until the ring has settled (see the module docs), at most `timeout`.
fn settle(nodes: &[NodeProc], copies: usize, timeout: Duration) -> Result<Settle> {
    let started = Instant::now();
    let deadline = started + timeout;
    let outcome = |drained: Option<f64>, settled: bool, why: String| Settle {
        drained,
        secs: started.elapsed().as_secs_f64(),
        settled,
        why,
    };
    if let Err(why) = drained(nodes, copies, deadline)? {
        return Ok(outcome(None, false, why));
    }
    let drained = Some(started.elapsed().as_secs_f64());
    // No client is connected from here on; only `/metrics` is scraped
    // between windows.
    let pids: Vec<u32> = nodes.iter().map(NodeProc::pid).collect();
    let mut last: Option<Vec<u64>> = None;
    let mut metrics = scrape(nodes)?;
    let mut cpu = node_ticks(&pids)?;
    loop {
        if Instant::now() + SETTLE_WINDOW > deadline {
            return Ok(outcome(
                drained,
                false,
                "CPU still changing or anti-entropy still repairing".into(),
            ));
        }
        std::thread::sleep(SETTLE_WINDOW);
        let cpu_now = node_ticks(&pids)?;
        let metrics_now = scrape(nodes)?;
        let used: Vec<u64> = cpu_now.iter().zip(&cpu).map(|(b, a)| b - a).collect();
        let repairing = metrics_now
            .iter()
            .zip(&metrics)
            .any(|(now, then)| now.sample(REPAIRED) > then.sample(REPAIRED));
        // Stopped falling: the load's after-work is over once no node's CPU
        // drops by more than a fifth (or one tick) from one window to the next.
        let steady = last.as_ref().is_some_and(|last| {
            used.iter()
                .zip(last)
                .all(|(&now, &then)| now + (then / 5).max(1) >= then)
        });
        if steady && !repairing {
            return Ok(outcome(drained, true, String::new()));
        }
        last = (!repairing).then_some(used);
        cpu = cpu_now;
        metrics = metrics_now;
    }
}

/// Polls `stats` on every node until the load's work is done: every node
/// ready, none catching up, nothing queued for another replica, no hints or
/// handoff, and `copies` keys held between them. `Ok(Err(why))` at the
/// deadline. The connections are closed when it returns.
fn drained(
    nodes: &[NodeProc],
    copies: usize,
    deadline: Instant,
) -> Result<std::result::Result<(), String>> {
    let mut conns = connect_all(nodes)?;
    loop {
        let mut held = 0;
        let mut busy = Vec::new();
        for (node, conn) in nodes.iter().zip(&mut conns) {
            let stats = conn.stats()?;
            let stat = |name: &str| stats.get(name).copied().unwrap_or(0);
            held += stat("keys");
            for (name, want) in [
                ("ready", 1),
                ("syncing", 0),
                ("replication_pending", 0),
                ("hints", 0),
                ("handoff_pending", 0),
            ] {
                if stat(name) != want {
                    busy.push(format!("{} {name} {}", node.addr, stat(name)));
                }
            }
        }
        if held != copies as i64 {
            busy.push(format!("{held} of {copies} copies held"));
        }
        if busy.is_empty() {
            return Ok(Ok(()));
        }
        if Instant::now() > deadline {
            return Ok(Err(busy.join(", ")));
        }
        std::thread::sleep(POLL);
    }
}

fn scrape(nodes: &[NodeProc]) -> Result<Vec<Metrics>> {
    nodes.iter().map(NodeProc::metrics).collect()
}

fn node_ticks(pids: &[u32]) -> Result<Vec<u64>> {
    pids.iter().map(|&pid| cpu_ticks(pid)).collect()
}

/// `used` ticks over `window` as a share of one core (1.0: a whole core).
fn share_of_core(used: u64, window: Duration) -> f64 {
    if window.is_zero() {
        return 0.0;
    }
    ticks(used).as_secs_f64() / window.as_secs_f64()
}

/// A node's CPU share of one core can only be told apart from another to
/// within this (one clock tick over the window), for the report.
pub fn resolution(window: Duration) -> f64 {
    share_of_core(1, window)
}
