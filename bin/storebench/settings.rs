//! What a run measures and for how long: [`BenchConfig`] and its defaults,
//! and the [`Part`]s a run can be limited to.

use std::path::PathBuf;
use std::time::Duration;

/// What to measure and for how long. `Default` is the full run (about
/// fifteen minutes on two cores); [`BenchConfig::quick`] is a smoke test of one to
/// two minutes.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// The `location` binary nodes are started from. Default: the one next to
    /// the running program.
    pub location: PathBuf,
    /// Load before each cell's measured windows, not counted. Default 0.5 s.
    pub warmup: Duration,
    /// Length of one measured window. Default 2 s.
    pub duration: Duration,
    /// Measured windows per cell, and runs of each bulk row; the median is
    /// reported. Default 3.
    pub repeat: usize,
    /// Connection counts each cell runs at. Default 1 and 50.
    pub connections: Vec<usize>,
    /// Value sizes each cell runs at, in bytes. Default 100 and 65,536.
    pub value_sizes: Vec<usize>,
    /// Requests kept in flight on one pipelined connection: besides the
    /// request-reply cells at each of `connections`, every setup runs a
    /// cell of 1 connection with this many in flight. Default 32; 0 or 1
    /// for none.
    pub pipeline: usize,
    /// Keys in the keyspace of values up to 1 KiB, all preloaded so every get
    /// hits. Default 100,000 (redis-benchmark `-r 100000`).
    pub keys: usize,
    /// Keys in the keyspace of larger values. Default 4,096 (256 MiB of 64 KiB
    /// values per setup, preloaded).
    pub large_keys: usize,
    /// Threads running the client's connections. Default 1, like redis-benchmark.
    pub client_threads: usize,
    /// Bytes the bulk row moves in and out. Default 1 GiB.
    pub bulk_bytes: usize,
    /// Chunk size of the streamed bulk value (the streaming default, 8 MiB).
    pub bulk_chunk: usize,
    /// Bytes a join should move to the new node; the first node is loaded
    /// with twice this, since the new one takes about half. Default 1 GiB.
    pub join_bytes: usize,
    /// Value size of the keys moved by the join and the handoff. Default 64 KiB.
    pub join_value: usize,
    /// Keys a node holds for the memory row. Default 1,000,000.
    pub memory_keys: usize,
    /// Value size of those keys. Default 100 bytes.
    pub memory_value: usize,
    /// Key counts the idle part loads into a fresh 3-node ring, one ring
    /// each, in this order. Default 100,000 and 1,000,000 (10,000,000 takes
    /// about 5 GiB across the three nodes: only when asked).
    pub idle_keys: Vec<usize>,
    /// Value size of those keys. Default 100 bytes.
    pub idle_value: usize,
    /// Copies of each key in the idle part's ring. Default 3 (every node
    /// holds every key, so its idle work is the most it can be).
    pub idle_replicas: usize,
    /// Requests in flight on the one connection the idle part loads through.
    /// Default 64 (issue 10's load: one connection, 64 in flight, N=3).
    pub idle_depth: usize,
    /// Window over which each node's idle CPU is measured. Default 20 s.
    pub idle_window: Duration,
    /// Longest wait for the ring to settle after loading 1,000,000 keys
    /// (scaled with the keys, never less), before the window is measured
    /// anyway and the row says it did not settle. Default 120 s.
    pub idle_settle: Duration,
    /// Oneway `put`s the drain part writes in one burst on one connection
    /// before its `ping` (issue 10: at least 100,000/s must drain). Default
    /// 100,000.
    pub drain_puts: usize,
    /// Value size of those puts. Default 100 bytes.
    pub drain_value: usize,
    /// Bytes written while the repair part's stopped replica misses them
    /// (rounded down to whole values). Default 256 MiB.
    pub repair_bytes: usize,
    /// Value size of those writes. Default 64 KiB.
    pub repair_value: usize,
    /// Stores in flight on the one connection the repair part writes
    /// through. Default 32.
    pub repair_depth: usize,
    /// Copies of each key the nodes keep (`location --replicas`). Default 1:
    /// Redis beside us keeps one copy, and the targets for the ring
    /// (scale-out, forwarding, join, handoff) are about moving single copies;
    /// with more, every put also goes to the other replicas.
    pub replicas: usize,
    /// Copies of each key in a second set of ring cells, reported beside
    /// Redis Cluster but not held to the targets (Redis Cluster keeps one
    /// copy). Default 3; 0, 1 or `replicas` for none.
    pub ring_replicas: usize,
    /// Run Redis beside us (needs `redis-server`, `redis-cli` and
    /// `redis-benchmark` on the path): one server beside one node, a Redis
    /// Cluster of three masters beside the 3-node ring. Default true.
    pub redis: bool,
    /// The parts to run, for profiling one of them. Default all.
    pub parts: Vec<Part>,
    /// Pin servers and client to separate cores (with `taskset`): the servers
    /// (nodes, every redis-server) to the first half, the client (this program,
    /// redis-benchmark) to the rest; for the join and handoff, each node to
    /// a core of its own. Default true.
    ///
    /// Why: unpinned, the scheduler sometimes puts a one-connection client
    /// on the server's core and sometimes not, and on a virtual machine a
    /// wake-up across cores costs tens of microseconds, so one-connection
    /// figures flip between two modes 3-4x apart, for Redis as for us. Pinned,
    /// the client is on "another machine", as in production, and every run
    /// is placed the same way.
    pub pin: bool,
    /// Where node and Redis logs go. Default a fresh directory under the
    /// system's temporary directory.
    pub log_dir: PathBuf,
}

impl Default for BenchConfig {
    fn default() -> Self {
        let location = std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.join("location")))
            .unwrap_or_else(|| PathBuf::from("location"));
        BenchConfig {
            location,
            warmup: Duration::from_millis(500),
            duration: Duration::from_secs(2),
            repeat: 3,
            connections: vec![1, 50],
            value_sizes: vec![100, 64 << 10],
            pipeline: 32,
            keys: 100_000,
            large_keys: 4_096,
            client_threads: 1,
            bulk_bytes: 1 << 30,
            bulk_chunk: thrifty_p2p::stream::DEFAULT_CHUNK_BYTES,
            join_bytes: 1 << 30,
            join_value: 64 << 10,
            memory_keys: 1_000_000,
            memory_value: 100,
            idle_keys: vec![100_000, 1_000_000],
            idle_value: 100,
            idle_replicas: 3,
            idle_depth: 64,
            idle_window: Duration::from_secs(20),
            idle_settle: Duration::from_secs(120),
            drain_puts: 100_000,
            drain_value: 100,
            repair_bytes: 256 << 20,
            repair_value: 64 << 10,
            repair_depth: 32,
            replicas: 1,
            ring_replicas: 3,
            redis: true,
            parts: Part::ALL.to_vec(),
            pin: true,
            log_dir: std::env::temp_dir().join(format!("storebench-{}", std::process::id())),
        }
    }
}

impl BenchConfig {
    /// A smoke test of the whole program in one to two minutes: short windows, one
    /// run each, small keyspaces, 128 MiB bulk, a 64 MiB join, 100,000 keys
    /// for memory, idle CPU at 10,000 and 100,000 keys over 5 s, bursts of
    /// 20,000 oneway puts, 32 MiB missed by a stopped replica. Figures from
    /// it are rough.
    pub fn quick() -> Self {
        BenchConfig {
            warmup: Duration::from_millis(100),
            duration: Duration::from_millis(300),
            repeat: 1,
            keys: 10_000,
            large_keys: 256,
            bulk_bytes: 128 << 20,
            join_bytes: 64 << 20,
            memory_keys: 100_000,
            idle_keys: vec![10_000, 100_000],
            idle_window: Duration::from_secs(5),
            drain_puts: 20_000,
            repair_bytes: 32 << 20,
            ..BenchConfig::default()
        }
    }

    /// The copies per key of the second set of ring cells, if there is one.
    pub fn replicated_ring(&self) -> Option<usize> {
        (self.ring_replicas > 1 && self.ring_replicas != self.replicas)
            .then_some(self.ring_replicas)
    }

    /// How long the idle part waits for a ring holding `keys` keys to settle.
    pub fn idle_settle_for(&self, keys: usize) -> Duration {
        self.idle_settle.mul_f64((keys as f64 / 1e6).max(1.0))
    }

    /// The keyspace used with values of `value` bytes.
    pub fn keys_for(&self, value: usize) -> usize {
        if value <= 1024 {
            self.keys
        } else {
            self.large_keys
        }
    }
}

/// A part of the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// Request-reply cells on one node (and Redis beside them).
    OneNode,
    /// Request-reply cells on a 3-node ring, ring-aware and forwarding (and
    /// a 3-master Redis Cluster beside it).
    Ring,
    /// 1 GiB in and out of one node.
    Bulk,
    /// A join, then a SIGINT handoff.
    Join,
    /// A node's memory holding many small keys.
    Memory,
    /// A settled 3-node ring's CPU and memory while nothing is asked of it,
    /// at each of `idle_keys`, and the load before.
    Idle,
    /// A burst of oneway `put`s on one connection, then a `ping`: how fast
    /// they drain, on one node and on one node of a 3-node ring at N=3.
    Drain,
    /// A replica stopped while writes go on, then resumed: how fast it is
    /// repaired.
    Repair,
}

impl Part {
    /// Every part, in the order they run.
    pub const ALL: [Part; 8] = [
        Part::OneNode,
        Part::Ring,
        Part::Bulk,
        Part::Join,
        Part::Memory,
        Part::Idle,
        Part::Drain,
        Part::Repair,
    ];

    /// The part's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Part::OneNode => "one-node",
            Part::Ring => "ring",
            Part::Bulk => "bulk",
            Part::Join => "join",
            Part::Memory => "memory",
            Part::Idle => "idle",
            Part::Drain => "drain",
            Part::Repair => "repair",
        }
    }
}

impl std::str::FromStr for Part {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Part::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Part::ALL.iter().map(|p| p.name()).collect();
                format!("unknown part `{s}`; choose from {}", names.join(", "))
            })
    }
}
