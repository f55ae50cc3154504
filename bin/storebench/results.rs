//! What a run measured, as data: the request-reply cells (our figures beside
//! Redis's, from storebench's own RESP client and from redis-benchmark) and
//! the bulk, join, handoff and memory rows. [`crate::report`] renders them.

use std::time::Duration;

use crate::facts::Facts;
use crate::settings::BenchConfig;

/// How requests reach the keys' owners.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setup {
    /// One node.
    OneNode,
    /// Three nodes; the client computes each key's owner and asks it directly.
    RingAware,
    /// Three nodes; every request goes to one of them, which forwards.
    Forwarding,
    /// A Redis Cluster of three masters (no replicas); the client computes
    /// each key's slot and asks its master directly.
    RedisCluster,
}

impl Setup {
    pub fn label(self) -> &'static str {
        match self {
            Setup::OneNode => "1 node",
            Setup::RingAware => "3 nodes, ring-aware client",
            Setup::Forwarding => "3 nodes, all via 1 (forwarding)",
            Setup::RedisCluster => "Redis Cluster, 3 masters, cluster-aware client",
        }
    }
}

/// A request type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Get,
    Put,
}

impl Op {
    pub fn label(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Put => "put",
        }
    }

    pub fn redis_test(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Put => "set",
        }
    }
}

/// The figures of one cell (medians over its windows).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Figures {
    pub ops: f64,
    pub p50: Duration,
    pub p99: Duration,
    /// redis-benchmark's summary has no p99.9; it is read from its percentile
    /// ladder when printed.
    pub p999: Option<Duration>,
    /// Server CPU time (user + system, all server processes) per request.
    pub cpu_per_op: Option<Duration>,
    /// Client CPU time (this program, or redis-benchmark) per request.
    pub client_cpu_per_op: Option<Duration>,
    /// Share of the machine's CPU that processes other than the benchmark's
    /// used meanwhile (other work on the machine skews every figure).
    pub elsewhere: Option<f64>,
}

/// One row of the request-reply table.
#[derive(Clone, Debug)]
pub struct Cell {
    pub setup: Setup,
    pub op: Op,
    pub conns: usize,
    /// Requests each connection keeps in flight: 1 is request-reply, more
    /// is pipelined.
    pub depth: usize,
    pub value: usize,
    /// Copies of each key the nodes kept (1 for Redis).
    pub replicas: usize,
    /// The setup's own figures (for [`Setup::RedisCluster`], Redis Cluster's).
    pub ours: Figures,
    /// One `redis-server` driven by storebench's own RESP client, the same
    /// load loop as `ours` (1-node rows only).
    pub redis: Option<Figures>,
    /// The same `redis-server` driven by redis-benchmark (1-node rows only).
    pub redis_benchmark: Option<Figures>,
}

impl Cell {
    /// The setup, and the copies per key when they are not `usual`.
    pub fn label(&self, usual: usize) -> String {
        match self.setup {
            Setup::RingAware | Setup::Forwarding if self.replicas != usual => {
                format!("{}, {} copies", self.setup.label(), self.replicas)
            }
            _ => self.setup.label().to_string(),
        }
    }

    /// Whether `other` is the same load: op, connections, depth, value size.
    pub fn same_load(&self, other: &Cell) -> bool {
        self.op == other.op
            && self.conns == other.conns
            && self.depth == other.depth
            && self.value == other.value
    }
}

/// The bulk, join, handoff and memory rows.
#[derive(Clone, Debug, Default)]
pub struct Bulk {
    /// Bytes per direction, values, value size; seconds in, seconds out.
    pub transfer: Option<Transfer>,
    pub join: Option<Moved>,
    pub handoff: Option<Moved>,
    pub memory: Option<Memory>,
    /// One per key count of the idle part, in the order run.
    pub idle: Vec<Idle>,
    /// The drain part: one node at 1 copy, then one node of a 3-node ring at N=3.
    pub drain: Vec<Drain>,
    /// The repair part: resumed at once, then resumed once declared dead.
    pub repair: Vec<Repair>,
}

#[derive(Clone, Copy, Debug)]
pub struct Transfer {
    /// Share of the machine other processes took meanwhile.
    pub elsewhere: f64,
    pub values: usize,
    pub value: usize,
    pub secs_in: f64,
    pub secs_out: f64,
}

#[derive(Clone, Copy, Debug)]
pub struct Moved {
    /// Share of the machine other processes took meanwhile.
    pub elsewhere: f64,
    pub keys: usize,
    pub bytes: u64,
    pub secs: f64,
}

#[derive(Clone, Copy, Debug)]
pub struct Memory {
    pub keys: usize,
    pub raw: u64,
    pub rss_empty: u64,
    pub rss: u64,
    pub redis_rss: Option<u64>,
}

/// A 3-node ring loaded, settled and left alone (see [`crate::idle`]).
#[derive(Clone, Debug)]
pub struct Idle {
    pub keys: usize,
    pub value: usize,
    /// Copies of each key (every node's `--replicas`).
    pub replicas: usize,
    /// Stores in flight on the one connection that loaded the keys.
    pub depth: usize,
    /// Seconds the load took, every store acknowledged.
    pub load_secs: f64,
    /// Stores the nodes refused with "retry" during the load, sent again.
    pub load_retried: usize,
    /// Share of the machine other processes took during the load.
    pub load_elsewhere: f64,
    pub settle: Settle,
    /// The measured window.
    pub window: Duration,
    pub nodes: Vec<IdleNode>,
    /// Share of the machine other processes took during the window.
    pub elsewhere: f64,
}

impl Idle {
    /// The busiest node's share of one core.
    pub fn max_cpu(&self) -> f64 {
        self.nodes.iter().map(|n| n.cpu).fold(0.0, f64::max)
    }
}

/// How the wait for a ring to settle ended.
#[derive(Clone, Debug)]
pub struct Settle {
    /// Seconds from the end of the load until its work was done (nothing
    /// queued or pending, every copy held), if it was.
    pub drained: Option<f64>,
    /// Seconds from the end of the load.
    pub secs: f64,
    /// Whether it settled before the deadline.
    pub settled: bool,
    /// What was still going on, if it did not.
    pub why: String,
}

/// One node over the idle window.
#[derive(Clone, Copy, Debug)]
pub struct IdleNode {
    /// User + system CPU over the window, as a share of one core.
    pub cpu: f64,
    /// `VmRSS` at the end of the window.
    pub rss: u64,
    /// Keys anti-entropy repaired on it during the window.
    pub repaired: u64,
    /// Anti-entropy comparisons (`diff_buckets`) it answered in the window.
    pub compared: u64,
}

/// Bursts of oneway `put`s on one connection, each followed by a `ping`
/// (see [`crate::drain`]).
#[derive(Clone, Debug)]
pub struct Drain {
    /// Nodes in the ring (the burst goes to one of them).
    pub nodes: usize,
    /// Copies of each key (every node's `--replicas`).
    pub replicas: usize,
    /// Puts in each burst.
    pub puts: usize,
    pub value: usize,
    /// Seconds from the first byte written to the `ping`'s reply, one per
    /// round.
    pub secs: Vec<f64>,
    /// Seconds until the socket took the burst's last byte, one per round.
    pub written: Vec<f64>,
    /// Keys of every round read back, and those not holding the value put.
    pub checked: usize,
    pub lost: usize,
    /// What the first lost key held instead, if any was lost.
    pub first_lost: Option<String>,
    /// Share of the machine other processes took over the rounds.
    pub elsewhere: f64,
}

impl Drain {
    /// The median round's seconds until the `ping`'s reply.
    pub fn median_secs(&self) -> f64 {
        crate::cells::median(&mut self.secs.clone())
    }

    /// Puts per second in the median round.
    pub fn rate(&self) -> f64 {
        self.puts as f64 / self.median_secs()
    }
}

/// A replica stopped while writes went on, then resumed (see
/// [`crate::repair`]).
#[derive(Clone, Debug)]
pub struct Repair {
    /// Written only once its peers had declared it dead (else at once).
    pub after_dead: bool,
    pub keys: usize,
    pub value: usize,
    /// Stores in flight on the connection written through.
    pub depth: usize,
    /// One per round, fresh ring each.
    pub rounds: Vec<RepairRound>,
}

impl Repair {
    /// Key and value bytes the stopped replica missed.
    pub fn bytes(&self) -> u64 {
        (self.keys * (crate::wire::KEY_LEN + self.value)) as u64
    }

    /// The round whose repair took the median time (one never repaired
    /// counts as the slowest).
    pub fn median(&self) -> &RepairRound {
        let mut order: Vec<&RepairRound> = self.rounds.iter().collect();
        order.sort_by(|a, b| {
            let secs = |r: &RepairRound| r.secs.unwrap_or(f64::INFINITY);
            secs(a).total_cmp(&secs(b))
        });
        order[order.len() / 2]
    }
}

/// One round of the repair part.
#[derive(Clone, Debug)]
pub struct RepairRound {
    /// Seconds the writes took, every store acknowledged.
    pub load_secs: f64,
    /// Stores refused with "retry" and sent again.
    pub load_retried: usize,
    /// Seconds the replica was stopped.
    pub stopped_secs: f64,
    /// Its status in the table of the node written through, at the resume.
    pub status: String,
    /// Writes the two running nodes still had queued for it
    /// (`replication_pending`) and keys they had hinted for it (`hints`),
    /// just before the resume.
    pub queued: i64,
    pub hinted: i64,
    /// Seconds from the resume until it held every key; `None` if it did
    /// not by the deadline.
    pub secs: Option<f64>,
    /// Keys it held at the end.
    pub held: i64,
    /// On it, from the resume until it held every key: keys repaired by
    /// anti-entropy, and `replicate` and `absorb` calls served (queued
    /// replication, hint delivery and handoff all arrive as these).
    pub by_anti_entropy: u64,
    pub replicate_calls: u64,
    pub absorb_calls: u64,
    /// Share of the machine other processes took during the repair.
    pub elsewhere: f64,
}

/// Everything one run measured. [`Report::to_markdown`] renders it.
#[derive(Clone, Debug)]
pub struct Report {
    pub facts: Facts,
    pub config: BenchConfig,
    pub cells: Vec<Cell>,
    pub bulk: Bulk,
    pub notes: Vec<String>,
}
