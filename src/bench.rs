//! `storebench`'s engine: starts its own `location` nodes and a `redis-server`
//! beside them, drives both with request-reply load, moves bulk data, times a
//! join and a handoff, weighs a node's memory, and reports every figure against
//! the targets of issue 4 as Markdown (printed, and written into `BENCHMARKS.md`).
//!
//! Why the client speaks raw Thrift instead of using [`crate::client`]: the
//! generated client copies each key and value into owned `Vec`s, and its
//! reader zero-fills a 64 KiB buffer for every reply. redis-benchmark builds
//! each command once per connection and only swaps the key in place; this
//! client does the same (every key has the same length: `key:` and 12 digits,
//! the names redis-benchmark's `-r` produces), and reads a reply only far
//! enough to find its end and check the answer. So the figures weigh the
//! server, as redis-benchmark's weigh Redis.
//!
//! Each connection is one task on a small tokio runtime (one thread by
//! default, like redis-benchmark's single event loop), sending one request and
//! waiting for its reply before the next: no pipelining. A cell runs a warm-up,
//! then `repeat` back-to-back windows on the same connections; each request
//! counts in the window it started in, and the median window is reported.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;

use crate::addr::NodeAddr;
use crate::client::{ClientOptions, call_error, connect};
use crate::convert;
use crate::error::{Error, Result};
use crate::idl::locator::TLocatorSyncClient;
use crate::node::PEEK;
use crate::ring::Ring;

// ---------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------

/// What to measure and for how long. `Default` is the full run (about four
/// minutes on two cores); [`BenchConfig::quick`] is a smoke test of about 30 s.
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
    /// Copies of each key the nodes keep (`location --replicas`). Default 1:
    /// Redis beside us keeps one copy, and the issue's targets for the ring
    /// (scale-out, forwarding, join, handoff) are about moving single copies;
    /// with more, every put also goes to the other replicas.
    pub replicas: usize,
    /// Run Redis beside us (needs `redis-server` and `redis-benchmark` on the
    /// path). Default true.
    pub redis: bool,
    /// The parts to run, for profiling one of them. Default all.
    pub parts: Vec<Part>,
    /// Pin servers and client to separate cores (with `taskset`): the servers
    /// (nodes, redis-server) to the first half, the client (this program,
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
            keys: 100_000,
            large_keys: 4_096,
            client_threads: 1,
            bulk_bytes: 1 << 30,
            bulk_chunk: crate::stream::DEFAULT_CHUNK_BYTES,
            join_bytes: 1 << 30,
            join_value: 64 << 10,
            memory_keys: 1_000_000,
            memory_value: 100,
            replicas: 1,
            redis: true,
            parts: Part::ALL.to_vec(),
            pin: true,
            log_dir: std::env::temp_dir().join(format!("storebench-{}", std::process::id())),
        }
    }
}

impl BenchConfig {
    /// A smoke test of the whole program in about 30 s: short windows, one
    /// run each, small keyspaces, 128 MiB bulk, a 64 MiB join, 100,000 keys
    /// for memory. Figures from it are rough.
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
            ..BenchConfig::default()
        }
    }

    /// The keyspace used with values of `value` bytes.
    fn keys_for(&self, value: usize) -> usize {
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
    /// Request-reply cells on a 3-node ring, ring-aware and forwarding.
    Ring,
    /// 1 GiB in and out of one node.
    Bulk,
    /// A join, then a SIGINT handoff.
    Join,
    /// A node's memory holding many small keys.
    Memory,
}

impl Part {
    /// Every part, in the order they run.
    pub const ALL: [Part; 5] = [
        Part::OneNode,
        Part::Ring,
        Part::Bulk,
        Part::Join,
        Part::Memory,
    ];

    /// The part's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Part::OneNode => "one-node",
            Part::Ring => "ring",
            Part::Bulk => "bulk",
            Part::Join => "join",
            Part::Memory => "memory",
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

// ---------------------------------------------------------------------------
// Results and the report
// ---------------------------------------------------------------------------

/// How requests reach the keys' owners.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Setup {
    /// One node.
    OneNode,
    /// Three nodes; the client computes each key's owner and asks it directly.
    RingAware,
    /// Three nodes; every request goes to one of them, which forwards.
    Forwarding,
}

impl Setup {
    fn label(self) -> &'static str {
        match self {
            Setup::OneNode => "1 node",
            Setup::RingAware => "3 nodes, ring-aware client",
            Setup::Forwarding => "3 nodes, all via 1 (forwarding)",
        }
    }
}

/// A request type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Get,
    Put,
}

impl Op {
    fn label(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Put => "put",
        }
    }

    fn redis_test(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Put => "set",
        }
    }
}

/// The figures of one cell (medians over its windows).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Figures {
    ops: f64,
    p50: Duration,
    p99: Duration,
    /// redis-benchmark's summary has no p99.9; it is read from its percentile
    /// ladder when printed.
    p999: Option<Duration>,
    /// Server CPU time (user + system, all server processes) per request.
    cpu_per_op: Option<Duration>,
    /// Client CPU time (this program, or redis-benchmark) per request.
    client_cpu_per_op: Option<Duration>,
    /// Share of the machine's CPU that processes other than the benchmark's
    /// used meanwhile (other work on the machine skews every figure).
    elsewhere: Option<f64>,
}

/// One row of the request-reply table.
#[derive(Clone, Debug)]
struct Cell {
    setup: Setup,
    op: Op,
    conns: usize,
    value: usize,
    ours: Figures,
    redis: Option<Figures>,
}

/// The bulk, join, handoff and memory rows.
#[derive(Clone, Debug, Default)]
struct Bulk {
    /// Bytes per direction, values, value size; seconds in, seconds out.
    transfer: Option<Transfer>,
    join: Option<Moved>,
    handoff: Option<Moved>,
    memory: Option<Memory>,
}

#[derive(Clone, Copy, Debug)]
struct Transfer {
    /// Share of the machine other processes took meanwhile.
    elsewhere: f64,
    values: usize,
    value: usize,
    secs_in: f64,
    secs_out: f64,
}

#[derive(Clone, Copy, Debug)]
struct Moved {
    /// Share of the machine other processes took meanwhile.
    elsewhere: f64,
    keys: usize,
    bytes: u64,
    secs: f64,
}

#[derive(Clone, Copy, Debug)]
struct Memory {
    keys: usize,
    raw: u64,
    rss_empty: u64,
    rss: u64,
    redis_rss: Option<u64>,
}

/// Where and when the run happened.
#[derive(Clone, Debug)]
struct Facts {
    placement: String,
    date: String,
    cores: usize,
    cpu: String,
    commit: String,
    load: String,
}

/// Everything one run measured. [`Report::to_markdown`] renders it.
#[derive(Clone, Debug)]
pub struct Report {
    facts: Facts,
    config: BenchConfig,
    cells: Vec<Cell>,
    bulk: Bulk,
    notes: Vec<String>,
}

/// One target of issue 4, checked.
struct Check {
    what: String,
    got: String,
    pass: bool,
}

impl Check {
    fn tag(&self) -> &'static str {
        if self.pass { "pass" } else { "**miss**" }
    }
}

/// Original 2009 program, one connection: about 2,200 gets/s. Target: 20x that.
const ONE_CONNECTION_GETS: f64 = 20.0 * 2_200.0;
/// Target for moving bulk data, joins and handoffs (bytes per second).
const BULK_TARGET: f64 = 1e9;
const MOVE_TARGET: f64 = 200e6;
/// Target for resident memory over the raw bytes of keys and values.
const MEMORY_TARGET: f64 = 1.5;

impl Report {
    fn one_node(&self, op: Op, conns: usize, value: usize) -> Option<&Cell> {
        self.cells.iter().find(|c| {
            c.setup == Setup::OneNode && c.op == op && c.conns == conns && c.value == value
        })
    }

    /// The targets that apply to `cell`.
    fn cell_checks(&self, cell: &Cell) -> Vec<Check> {
        let mut checks = Vec::new();
        let name = format!(
            "{}, {} {}, {} conn{}",
            cell.setup.label(),
            cell.op.label(),
            size(cell.value),
            cell.conns,
            if cell.conns == 1 { "" } else { "s" }
        );
        match cell.setup {
            Setup::OneNode => {
                if cell.conns == 50 && cell.value == 100 {
                    if let Some(redis) = cell.redis {
                        let ratio = cell.ours.ops / redis.ops;
                        checks.push(Check {
                            what: format!("{name}: ops/s >= 1.0x Redis"),
                            got: format!("{ratio:.2}x"),
                            pass: ratio >= 1.0,
                        });
                    }
                    checks.push(Check {
                        what: format!("{name}: p99 < 1 ms"),
                        got: format!("{} ms", ms(cell.ours.p99)),
                        pass: cell.ours.p99 < Duration::from_millis(1),
                    });
                }
                if cell.conns == 1 && cell.value == 100 && cell.op == Op::Get {
                    let ratio = cell.ours.ops / ONE_CONNECTION_GETS;
                    checks.push(Check {
                        what: format!("{name}: >= 20x 2.2k gets/s (44,000/s)"),
                        got: format!("{ratio:.2}x"),
                        pass: ratio >= 1.0,
                    });
                }
            }
            Setup::RingAware | Setup::Forwarding if cell.conns > 1 => {
                let want = if cell.setup == Setup::RingAware {
                    0.9
                } else {
                    0.6
                };
                if let Some(one) = self.one_node(cell.op, cell.conns, cell.value) {
                    let ratio = cell.ours.ops / one.ours.ops;
                    checks.push(Check {
                        what: format!("{name}: >= {want}x one node"),
                        got: format!("{ratio:.2}x"),
                        pass: ratio >= want,
                    });
                }
            }
            _ => {}
        }
        checks
    }

    fn bulk_checks(&self) -> Vec<Check> {
        let mut checks = Vec::new();
        if let Some(t) = self.bulk.transfer {
            let bytes = (t.values * t.value) as f64;
            for (way, secs) in [("in", t.secs_in), ("out", t.secs_out)] {
                let rate = bytes / secs;
                checks.push(Check {
                    what: format!("{}: >= 1 GB/s", transfer_label(&t, way)),
                    got: format!("{:.2} GB/s", rate / 1e9),
                    pass: rate >= BULK_TARGET,
                });
            }
        }
        for (what, moved) in [("join", self.bulk.join), ("handoff", self.bulk.handoff)] {
            if let Some(m) = moved.filter(|m| m.keys > 0) {
                let rate = m.bytes as f64 / m.secs;
                checks.push(Check {
                    what: format!("{what}: >= 200 MB/s"),
                    got: format!("{:.0} MB/s", rate / 1e6),
                    pass: rate >= MOVE_TARGET,
                });
            }
        }
        if let Some(m) = self.bulk.memory {
            let ratio = m.rss as f64 / m.raw as f64;
            checks.push(Check {
                what: format!("memory of {} keys: <= 1.5x raw", thousands(m.keys as f64)),
                got: format!("{ratio:.2}x"),
                pass: ratio <= MEMORY_TARGET,
            });
        }
        checks
    }

    /// The report as Markdown: facts, the request-reply table beside Redis, the
    /// bulk table, and every target with pass or miss.
    pub fn to_markdown(&self) -> String {
        let c = &self.config;
        let f = &self.facts;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Measured {} on {} cores ({}), commit `{}`, load average before the run {}. {}",
            f.date, f.cores, f.cpu, f.commit, f.load, f.placement
        );
        let _ = writeln!(
            out,
            "Each cell: {} warm-up, then {} window{} of {} on the same connections; \
             the median window is shown. Keyspaces: {} keys for values up to 1 KiB, \
             {} keys for larger ones, all preloaded. Nodes keep {} cop{} of each key. \
             Client: {} thread{}, one task per connection, request-reply (no pipelining). \
             MB and GB are 10^6 and 10^9 bytes.",
            secs(c.warmup),
            c.repeat,
            if c.repeat == 1 { "" } else { "s" },
            secs(c.duration),
            thousands(c.keys as f64),
            thousands(c.large_keys as f64),
            c.replicas,
            if c.replicas == 1 { "y" } else { "ies" },
            c.client_threads,
            if c.client_threads == 1 { "" } else { "s" },
        );
        out.push('\n');
        out.push_str(
            "| setup | op | conns | value | ops/s | p50 ms | p99 ms | p99.9 ms | CPU µs/op server+client \
             | Redis ops/s | Redis p50 | Redis p99 | Redis p99.9 | Redis CPU µs/op server+client | ratio | other procs' CPU | targets |\n",
        );
        out.push_str("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|\n");
        for cell in &self.cells {
            let o = &cell.ours;
            let (r_ops, r_p50, r_p99, r_p999, r_cpu) = match &cell.redis {
                Some(r) => (
                    thousands(r.ops),
                    ms(r.p50),
                    ms(r.p99),
                    r.p999.map_or("-".into(), ms),
                    cpu_pair(r),
                ),
                None => Default::default(),
            };
            let ratio = match (cell.setup, &cell.redis) {
                (Setup::OneNode, Some(r)) => format!("{:.2}x Redis", o.ops / r.ops),
                (Setup::OneNode, None) => String::new(),
                _ => self
                    .one_node(cell.op, cell.conns, cell.value)
                    .map(|one| format!("{:.2}x 1 node", o.ops / one.ours.ops))
                    .unwrap_or_default(),
            };
            let elsewhere = match (o.elsewhere, cell.redis.and_then(|r| r.elsewhere)) {
                (Some(ours), Some(redis)) => format!("{} / {}", percent(ours), percent(redis)),
                (Some(ours), None) => percent(ours),
                _ => String::new(),
            };
            let targets: Vec<String> = self
                .cell_checks(cell)
                .iter()
                .map(|check| {
                    let short = check.what.rsplit(": ").next().unwrap_or_default();
                    format!("{short}: {} {}", check.got, check.tag())
                })
                .collect();
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                cell.setup.label(),
                cell.op.label(),
                cell.conns,
                size(cell.value),
                thousands(o.ops),
                ms(o.p50),
                ms(o.p99),
                o.p999.map_or("-".into(), ms),
                cpu_pair(o),
                r_ops,
                r_p50,
                r_p99,
                r_p999,
                r_cpu,
                ratio,
                elsewhere,
                targets.join("; "),
            );
        }
        out.push('\n');
        out.push_str("| bulk | figure | detail | Redis | target |\n|---|--:|---|--:|---|\n");
        let bulk_checks = self.bulk_checks();
        let check_for = |prefix: &str| {
            bulk_checks
                .iter()
                .find(|ch| ch.what.starts_with(prefix))
                .map(|ch| {
                    format!(
                        "{}: {} {}",
                        ch.what.rsplit(": ").next().unwrap_or_default(),
                        ch.got,
                        ch.tag()
                    )
                })
                .unwrap_or_default()
        };
        if let Some(t) = self.bulk.transfer {
            let bytes = (t.values * t.value) as f64;
            for (way, secs) in [("in", t.secs_in), ("out", t.secs_out)] {
                let _ = writeln!(
                    out,
                    "| {} | {:.2} GB/s | {:.2} s, median of {}; other procs' CPU {} | | {} |",
                    transfer_label(&t, way),
                    bytes / secs / 1e9,
                    secs,
                    c.repeat,
                    percent(t.elsewhere),
                    check_for(&transfer_label(&t, way)),
                );
            }
        }
        let join_how = format!(
            "; start of the new node until a {JOIN_SAMPLE}-key sample is on it (all verified after)"
        );
        for (what, moved, how) in [
            ("join", &self.bulk.join, join_how.as_str()),
            ("handoff (SIGINT until exit)", &self.bulk.handoff, ""),
        ] {
            if moved.is_some_and(|m| m.keys == 0) {
                let _ = writeln!(
                    out,
                    "| {what} | - | no key was held only by the leaving node ({} copies) | | |",
                    c.replicas
                );
            }
            if let Some(m) = moved.filter(|m| m.keys > 0) {
                let _ = writeln!(
                    out,
                    "| {what} | {:.0} MB/s | {} keys of {} ({} MiB) in {:.2} s: {} keys/s{how}; other procs' CPU {} | | {} |",
                    m.bytes as f64 / m.secs / 1e6,
                    thousands(m.keys as f64),
                    size(c.join_value),
                    m.bytes >> 20,
                    m.secs,
                    thousands(m.keys as f64 / m.secs),
                    percent(m.elsewhere),
                    check_for(what.split(' ').next().unwrap_or(what)),
                );
            }
        }
        if let Some(m) = self.bulk.memory {
            let _ = writeln!(
                out,
                "| memory: {} keys of {} | {:.2}x raw | VmRSS {} MiB (empty node {} MiB, so {:.2}x raw for the data alone); raw keys+values {} MiB | {} | {} |",
                thousands(m.keys as f64),
                size(c.memory_value),
                m.rss as f64 / m.raw as f64,
                m.rss >> 20,
                m.rss_empty >> 20,
                m.rss.saturating_sub(m.rss_empty) as f64 / m.raw as f64,
                m.raw >> 20,
                m.redis_rss
                    .map(|r| format!("{:.2}x raw ({} MiB)", r as f64 / m.raw as f64, r >> 20))
                    .unwrap_or_default(),
                check_for("memory"),
            );
        }
        out.push('\n');
        let mut checks: Vec<Check> = self
            .cells
            .iter()
            .flat_map(|c| self.cell_checks(c))
            .collect();
        checks.extend(bulk_checks);
        let passed = checks.iter().filter(|c| c.pass).count();
        let _ = writeln!(out, "Targets met: {passed} of {}.\n", checks.len());
        for check in &checks {
            let _ = writeln!(out, "- {}: {} {}", check.what, check.got, check.tag());
        }
        let busiest = self
            .cells
            .iter()
            .flat_map(|c| [Some(c.ours), c.redis])
            .flatten()
            .filter_map(|f| f.elsewhere)
            .fold(0.0, f64::max);
        if busiest > 0.05 {
            let _ = writeln!(
                out,
                "\nNote: other processes used up to {} of the machine's CPU during a cell \
                 (column \"other procs' CPU\", ours / Redis's); rows where it is high are skewed.",
                percent(busiest)
            );
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for note in &self.notes {
                let _ = writeln!(out, "Note: {note}");
            }
        }
        out
    }
}

/// Names the bulk row by what it moved: one value, streamed as chunks.
fn transfer_label(t: &Transfer, way: &str) -> String {
    format!(
        "one {} value {way}, streamed as {} chunks of {} over 3 nodes",
        size(t.values * t.value),
        t.values,
        size(t.value)
    )
}

/// Where the results go in `BENCHMARKS.md`; everything between is replaced.
const BEGIN: &str = "<!-- storebench results: begin (written by storebench; do not edit) -->";
const END: &str = "<!-- storebench results: end -->";

/// `old` with the text between the result markers replaced by `results`
/// (or the marked block appended when there is none).
fn replace_results(old: &str, results: &str) -> String {
    let block = format!("{BEGIN}\n{}\n{END}\n", results.trim_end());
    match (old.find(BEGIN), old.find(END)) {
        (Some(begin), Some(end)) if end > begin => {
            let after = old[end + END.len()..].trim_start_matches('\n');
            format!("{}{block}{after}", &old[..begin])
        }
        _ if old.trim().is_empty() => format!("# Benchmarks\n\n{block}"),
        _ => format!("{}\n\n{block}", old.trim_end()),
    }
}

/// Writes `report` into the file at `path` in place of the previous results.
pub fn write_results(path: &Path, report: &Report) -> Result<()> {
    let old = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e.into()),
    };
    std::fs::write(path, replace_results(&old, &report.to_markdown()))?;
    Ok(())
}

// ---------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------

/// Runs every measurement in `config`, reporting progress through `progress`.
/// Starts and stops its own processes; every one is killed when this returns.
pub fn run(config: &BenchConfig, progress: &mut dyn FnMut(&str)) -> Result<Report> {
    if !config.location.is_file() {
        return Err(failed(format!(
            "no `location` binary at {}; build it with `cargo build --release`",
            config.location.display()
        )));
    }
    std::fs::create_dir_all(&config.log_dir)?;
    let facts = facts();
    progress(&format!(
        "{} cores, load average {}; logs in {}",
        facts.cores,
        facts.load,
        config.log_dir.display()
    ));
    let mut facts = facts;
    let placement = if config.pin {
        Placement::pin(facts.cores)
    } else {
        None
    };
    facts.placement = match &placement {
        Some(p) => format!(
            "Servers pinned to CPU {}, the client (and redis-benchmark) to CPU {}; \
             join and handoff nodes to a CPU each.",
            p.servers, p.client
        ),
        None => "Nothing pinned: the scheduler placed client and servers.".into(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.client_threads.max(1))
        .thread_name("storebench-client")
        .enable_all()
        .build()?;
    let bench = Bench {
        config,
        placement,
        runtime,
        next_log: AtomicUsize::new(0),
    };
    let mut report = Report {
        facts,
        config: config.clone(),
        cells: Vec::new(),
        bulk: Bulk::default(),
        notes: Vec::new(),
    };
    let runs = |part| config.parts.contains(&part);
    if runs(Part::OneNode) {
        bench.one_node_cells(&mut report, progress)?;
        match (config.redis, redis_missing()) {
            (false, _) => {}
            (true, None) => bench.redis_cells(&mut report, progress)?,
            (true, Some(why)) => report.notes.push(format!(
                "Redis was not run: {why}. `scripts/bench.sh` installs it \
                 (apt-get install redis-server redis-tools)."
            )),
        }
    }
    if runs(Part::Ring) {
        bench.ring_cells(&mut report, progress)?;
    }
    if runs(Part::Bulk) {
        progress("bulk transfer");
        report.bulk.transfer = Some(bench.transfer()?);
    }
    if runs(Part::Join) {
        let (join, handoff) = bench.join_and_handoff(progress)?;
        report.bulk.join = Some(join);
        report.bulk.handoff = Some(handoff);
    }
    if runs(Part::Memory) {
        progress("memory");
        report.bulk.memory = Some(bench.memory(config.redis && redis_missing().is_none())?);
    }
    report.notes.push(if bench.placement.is_some() {
        "client and servers share one machine, on separate cores; redis-benchmark and \
         Redis are placed the same way, which is why both run side by side."
            .into()
    } else {
        "the client competes with the servers for the same cores, as redis-benchmark \
         competes with Redis; that is why both run side by side on one machine."
            .into()
    });
    Ok(report)
}

/// State shared by the phases of one run.
struct Bench<'a> {
    config: &'a BenchConfig,
    placement: Option<Placement>,
    runtime: Runtime,
    next_log: AtomicUsize,
}

impl Bench<'_> {
    fn log_path(&self, what: &str) -> PathBuf {
        let n = self.next_log.fetch_add(1, Ordering::Relaxed);
        self.config.log_dir.join(format!("{what}-{n}.log"))
    }

    /// Starts a node on the servers' cores.
    fn start_node(&self, seed: Option<&NodeAddr>) -> Result<NodeProc> {
        let cpus = self.placement.as_ref().map(|p| p.servers.as_str());
        NodeProc::start(
            &self.config.location,
            seed,
            self.config.replicas,
            cpus,
            &self.log_path("node"),
        )
    }

    /// Starts a node on a core of its own (the `n`th, wrapping), as if on its
    /// own machine.
    fn start_node_alone(&self, seed: Option<&NodeAddr>, n: usize) -> Result<NodeProc> {
        let cpu = self.placement.as_ref().map(|p| (n % p.cores).to_string());
        NodeProc::start(
            &self.config.location,
            seed,
            self.config.replicas,
            cpu.as_deref(),
            &self.log_path("node"),
        )
    }

    fn start_redis(&self) -> Result<RedisProc> {
        let cpus = self.placement.as_ref().map(|p| p.servers.as_str());
        RedisProc::start(cpus, &self.log_path("redis"))
    }

    /// Every (value, conns, op) cell, in the order they run.
    fn cells(&self) -> Vec<(usize, usize, Op)> {
        let mut cells = Vec::new();
        for &value in &self.config.value_sizes {
            for &conns in &self.config.connections {
                for op in [Op::Get, Op::Put] {
                    cells.push((value, conns, op));
                }
            }
        }
        cells
    }

    fn one_node_cells(&self, report: &mut Report, progress: &mut dyn FnMut(&str)) -> Result<()> {
        let node = self.start_node(None)?;
        let target = Target::single(node.socket);
        let pids = [node.pid()];
        let mut loaded = None;
        for (value, conns, op) in self.cells() {
            if loaded != Some(value) {
                progress(&format!(
                    "1 node: preloading {} keys of {}",
                    self.config.keys_for(value),
                    size(value)
                ));
                self.fill(&target, self.config.keys_for(value), value, 50)?;
                loaded = Some(value);
            }
            progress(&format!("1 node: {} {} x {conns}", op.label(), size(value)));
            let ours = least_disturbed(|| self.cell(&target, op, conns, value, &pids))?;
            report.cells.push(Cell {
                setup: Setup::OneNode,
                op,
                conns,
                value,
                ours,
                redis: None,
            });
        }
        Ok(())
    }

    /// Starts three nodes on the servers' cores and waits until they agree.
    fn start_ring(&self) -> Result<Vec<NodeProc>> {
        let first = self.start_node(None)?;
        let mut nodes = vec![
            self.start_node(Some(&first.addr))?,
            self.start_node(Some(&first.addr))?,
        ];
        nodes.insert(0, first);
        wait_for_ring(&nodes.iter().collect::<Vec<_>>(), Duration::from_secs(30))?;
        Ok(nodes)
    }

    fn ring_cells(&self, report: &mut Report, progress: &mut dyn FnMut(&str)) -> Result<()> {
        let nodes = self.start_ring()?;
        let first = &nodes[0];
        let pids: Vec<u32> = nodes.iter().map(|n| n.pid()).collect();
        let most_keys = self.config.keys.max(self.config.large_keys);
        let ring_aware = Target::ring_aware(&first.addr, most_keys)?;
        let forwarding = Target::single(first.socket);
        let mut loaded = None;
        for (value, conns, op) in self.cells() {
            if loaded != Some(value) {
                progress(&format!(
                    "3 nodes: preloading {} keys of {}",
                    self.config.keys_for(value),
                    size(value)
                ));
                self.fill(&ring_aware, self.config.keys_for(value), value, 50)?;
                loaded = Some(value);
            }
            for (setup, target) in [
                (Setup::RingAware, &ring_aware),
                (Setup::Forwarding, &forwarding),
            ] {
                progress(&format!(
                    "{}: {} {} x {conns}",
                    setup.label(),
                    op.label(),
                    size(value)
                ));
                let ours = least_disturbed(|| self.cell(target, op, conns, value, &pids))?;
                report.cells.push(Cell {
                    setup,
                    op,
                    conns,
                    value,
                    ours,
                    redis: None,
                });
            }
        }
        Ok(())
    }

    fn redis_cells(&self, report: &mut Report, progress: &mut dyn FnMut(&str)) -> Result<()> {
        let redis = self.start_redis()?;
        let mut loaded = None;
        for (value, conns, op) in self.cells() {
            let keys = self.config.keys_for(value);
            if loaded != Some(value) {
                progress(&format!("Redis: preloading {keys} keys of {}", size(value)));
                redis.fill(keys, value)?;
                loaded = Some(value);
            }
            progress(&format!(
                "Redis: {} {} x {conns}",
                op.redis_test(),
                size(value)
            ));
            let figures = least_disturbed(|| redis.cell(op, conns, value, keys, self.config))?;
            if let Some(cell) = report.cells.iter_mut().find(|c| {
                c.setup == Setup::OneNode && c.op == op && c.conns == conns && c.value == value
            }) {
                cell.redis = Some(figures);
            }
        }
        Ok(())
    }

    /// Stores keys `0..keys` once each, over `conns` connections.
    fn fill(&self, target: &Target, keys: usize, value: usize, conns: usize) -> Result<Duration> {
        let value_bytes = value_bytes(value);
        self.runtime.block_on(async {
            let next = Arc::new(AtomicUsize::new(0));
            let mut tasks = Vec::new();
            let started = Instant::now();
            for _ in 0..conns.min(keys.max(1)) {
                let mut connections = target.connect().await?;
                let mut request = Request::store(&value_bytes);
                let next = next.clone();
                let target = target.clone();
                tasks.push(tokio::spawn(async move {
                    loop {
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        if index >= keys {
                            return Ok::<(), Error>(());
                        }
                        request.set_key(index);
                        let conn = &mut connections[target.conn_for(index)];
                        let answer = conn.call(&request.bytes).await?;
                        conn.expect(answer, Op::Put, value, index)?;
                    }
                }));
            }
            for task in tasks {
                task.await.map_err(failed)??;
            }
            Ok(started.elapsed())
        })
    }

    /// One cell: warm-up, then `repeat` windows; the median window's figures.
    fn cell(
        &self,
        target: &Target,
        op: Op,
        conns: usize,
        value: usize,
        pids: &[u32],
    ) -> Result<Figures> {
        let config = self.config;
        let keys = config.keys_for(value);
        let value_bytes = value_bytes(value);
        let windows = config.repeat.max(1);
        self.runtime.block_on(async {
            let mut connection_sets = Vec::with_capacity(conns);
            for _ in 0..conns {
                connection_sets.push(target.connect().await?);
            }
            let start = Instant::now();
            let plan = Arc::new(Plan {
                measure_from: start + config.warmup,
                window: config.duration,
                windows,
                end: start + config.warmup + config.duration * windows as u32,
                keys,
                value,
                op,
                target: target.clone(),
            });
            let mut tasks = Vec::with_capacity(conns);
            for (i, connections) in connection_sets.into_iter().enumerate() {
                let request = match op {
                    Op::Get => Request::fetch(),
                    Op::Put => Request::store(&value_bytes),
                };
                // Distinct, fixed seeds: every run draws the same keys.
                let seed = 0x9e37_79b9_7f4a_7c15_u64.wrapping_mul(i as u64 + 1);
                tasks.push(tokio::spawn(worker(
                    connections,
                    request,
                    plan.clone(),
                    seed,
                )));
            }
            let mut cpu = Vec::with_capacity(windows + 1);
            for w in 0..=windows {
                let at = plan.measure_from + plan.window * w as u32;
                tokio::time::sleep_until(at.into()).await;
                cpu.push(CpuSnapshot::take(pids));
            }
            let mut samples: Vec<Vec<u64>> = vec![Vec::new(); windows];
            let deadline = plan.end + Duration::from_secs(30);
            for task in tasks {
                let done = tokio::time::timeout_at(deadline.into(), task)
                    .await
                    .map_err(|_| Error::Timeout(Duration::from_secs(30)))?;
                for (w, s) in done.map_err(failed)??.into_iter().enumerate() {
                    samples[w].extend(s);
                }
            }
            let per_window: Vec<Figures> = samples
                .iter_mut()
                .enumerate()
                .map(|(w, s)| window_figures(s, config.duration, &cpu[w], &cpu[w + 1]))
                .collect();
            Ok(median_figures(&per_window))
        })
    }

    /// Streams one value of `bulk_bytes` into a 3-node ring and reads it back
    /// (`stream::put` / `stream::get_large`: chunks go straight between this
    /// client and each chunk's owner, in parallel); median seconds each way.
    fn transfer(&self) -> Result<Transfer> {
        let c = self.config;
        let nodes = self.start_ring()?;
        let first = &nodes[0];
        let value = value_bytes(c.bulk_bytes);
        let options = crate::stream::Options {
            chunk_bytes: c.bulk_chunk,
            ..crate::stream::Options::default()
        };
        let failed = |e: crate::stream::StreamError| Error::Rpc {
            peer: first.addr.to_string(),
            reason: e.to_string(),
        };
        let (mut ins, mut outs) = (Vec::new(), Vec::new());
        let pids: Vec<u32> = nodes.iter().map(|n| n.pid()).collect();
        let before = CpuSnapshot::take(&pids);
        for _ in 0..c.repeat.max(1) {
            let started = Instant::now();
            crate::stream::put(&first.addr, b"bulk", &value[..], &options).map_err(failed)?;
            ins.push(started.elapsed().as_secs_f64());
            let started = Instant::now();
            let got = crate::stream::get_large(&first.addr, b"bulk", io::sink(), &options)
                .map_err(failed)?;
            outs.push(started.elapsed().as_secs_f64());
            if got != Some(value.len() as u64) {
                return Err(Error::Rpc {
                    peer: first.addr.to_string(),
                    reason: format!("streamed {got:?} bytes back, expected {}", value.len()),
                });
            }
        }
        Ok(Transfer {
            elsewhere: before.elsewhere(&CpuSnapshot::take(&pids)),
            values: value.len().div_ceil(c.bulk_chunk),
            value: c.bulk_chunk,
            secs_in: median(&mut ins),
            secs_out: median(&mut outs),
        })
    }

    /// Loads one node with twice `join_bytes`, starts a second that joins it and
    /// times until the second holds the keys it owns; then sends the second
    /// SIGINT and times until it exits, having handed those keys back.
    ///
    /// The join's end is seen with local-only reads on the new node. Reading
    /// every moved value while it arrives would double the new node's work, so
    /// the clock stops when an evenly spread sample of [`JOIN_SAMPLE`] moved
    /// keys is there (keys travel in hash order, so the sample's last key
    /// arrives on average within 1/(JOIN_SAMPLE+1) of the end); every moved key
    /// is then checked, untimed.
    fn join_and_handoff(&self, progress: &mut dyn FnMut(&str)) -> Result<(Moved, Moved)> {
        let c = self.config;
        let value = c.join_value;
        let keys = (2 * c.join_bytes / value).max(2);
        let first = self.start_node_alone(None, 0)?;
        progress(&format!("join: preloading {keys} keys of {}", size(value)));
        self.fill(&Target::single(first.socket), keys, value, 50)?;
        progress("join: starting a second node");

        let before = CpuSnapshot::take(&[first.pid()]);
        let started = Instant::now();
        let mut second = self.start_node_alone(Some(&first.addr), 1)?;
        let ring = Ring::new([first.addr.clone(), second.addr.clone()]);
        // The keys the new node replicates come to it; those only it holds
        // go back when it leaves (with one copy, the same keys).
        let copies = c.replicas.max(1);
        let moved: Vec<usize> = (0..keys)
            .filter(|&i| ring.owners(&key(i), copies).contains(&&second.addr))
            .collect();
        let handed: Vec<usize> = moved
            .iter()
            .copied()
            .filter(|&i| !ring.owners(&key(i), copies).contains(&&first.addr))
            .collect();
        let sample: Vec<usize> = moved
            .iter()
            .copied()
            .step_by((moved.len() / JOIN_SAMPLE).max(1))
            .collect();
        let timeout = Duration::from_secs(300);
        self.runtime
            .block_on(wait_until_held(second.socket, &sample, value, timeout))?;
        let join_secs = started.elapsed().as_secs_f64();
        let join_elsewhere = before.elsewhere(&CpuSnapshot::take(&[first.pid(), second.pid()]));
        self.runtime
            .block_on(wait_until_held(second.socket, &moved, value, timeout))?;
        let bytes = |keys: &[usize]| (keys.len() * (KEY_LEN + value)) as u64;

        progress("handoff: SIGINT to the second node");
        let before = CpuSnapshot::take(&[first.pid(), second.pid()]);
        let started = Instant::now();
        second.signal("INT")?;
        let status = second.wait()?;
        let leave_secs = started.elapsed().as_secs_f64();
        let leave_elsewhere = before.elsewhere(&CpuSnapshot::take(&[first.pid()]));
        if !status.success() {
            return Err(failed(format!(
                "the node sent SIGINT exited with {status}: not every key was handed over (log {})",
                second.log.display()
            )));
        }
        // Not timed: the keys are back on the first node.
        let sample: Vec<usize> = handed
            .iter()
            .copied()
            .step_by((handed.len() / 64).max(1))
            .collect();
        self.runtime.block_on(wait_until_held(
            first.socket,
            &sample,
            value,
            Duration::from_secs(10),
        ))?;
        Ok((
            Moved {
                elsewhere: join_elsewhere,
                keys: moved.len(),
                bytes: bytes(&moved),
                secs: join_secs,
            },
            Moved {
                elsewhere: leave_elsewhere,
                keys: handed.len(),
                bytes: bytes(&handed),
                secs: leave_secs,
            },
        ))
    }

    /// Resident memory of a node holding `memory_keys` keys (and of Redis
    /// holding the same, when `with_redis`).
    fn memory(&self, with_redis: bool) -> Result<Memory> {
        let c = self.config;
        let node = self.start_node(None)?;
        std::thread::sleep(Duration::from_millis(200));
        let rss_empty = rss_bytes(node.pid())?;
        self.fill(
            &Target::single(node.socket),
            c.memory_keys,
            c.memory_value,
            50,
        )?;
        std::thread::sleep(Duration::from_millis(200));
        let rss = rss_bytes(node.pid())?;
        drop(node);
        let redis_rss = if with_redis {
            let redis = self.start_redis()?;
            redis.fill(c.memory_keys, c.memory_value)?;
            Some(rss_bytes(redis.child.id())?)
        } else {
            None
        };
        Ok(Memory {
            keys: c.memory_keys,
            raw: (c.memory_keys * (KEY_LEN + c.memory_value)) as u64,
            rss_empty,
            rss,
            redis_rss,
        })
    }
}

/// Keys whose arrival on a joining node stops the join's clock.
const JOIN_SAMPLE: usize = 256;

/// Waits until the node at `addr` holds every key in `indices` (local-only
/// reads), polling each key until it is seen once, so each value crosses the
/// wire once.
async fn wait_until_held(
    addr: SocketAddr,
    indices: &[usize],
    value: usize,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut conn = Conn::open(addr).await?;
    let mut peek = Request::peek();
    let mut next = 0;
    while next < indices.len() {
        peek.set_key(indices[next]);
        match conn.call(&peek.bytes).await? {
            Answer::Value { len, .. } if len == value => next += 1,
            Answer::Absent => {
                if Instant::now() > deadline {
                    return Err(failed(format!(
                        "{addr} still lacks {} of {} keys after {timeout:?}",
                        indices.len() - next,
                        indices.len()
                    )));
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            other => conn.expect(other, Op::Get, value, indices[next])?,
        }
    }
    Ok(())
}

/// Share of the machine other processes may take during a cell before it is
/// run again.
const DISTURBED: f64 = 0.10;

/// Runs a cell, and again (at most twice more) while other processes took
/// more than [`DISTURBED`] of the machine; keeps the least disturbed run. The
/// column "other procs' CPU" shows what the kept run saw.
fn least_disturbed(mut run: impl FnMut() -> Result<Figures>) -> Result<Figures> {
    let disturbance = |f: &Figures| f.elsewhere.unwrap_or(0.0);
    let mut best = run()?;
    for _ in 0..2 {
        if disturbance(&best) <= DISTURBED {
            break;
        }
        let again = run()?;
        if disturbance(&again) < disturbance(&best) {
            best = again;
        }
    }
    Ok(best)
}

/// What every worker of one cell follows.
struct Plan {
    measure_from: Instant,
    window: Duration,
    windows: usize,
    end: Instant,
    keys: usize,
    value: usize,
    op: Op,
    target: Target,
}

/// One connection's loop: random keys, one request at a time, until the plan
/// ends. Returns the latencies (ns) of the requests started in each window.
async fn worker(
    mut connections: Vec<Conn>,
    mut request: Request,
    plan: Arc<Plan>,
    seed: u64,
) -> Result<Vec<Vec<u64>>> {
    let mut samples: Vec<Vec<u64>> = (0..plan.windows)
        .map(|_| Vec::with_capacity(1 << 14))
        .collect();
    let mut rng = seed | 1;
    let window_ns = plan.window.as_nanos().max(1);
    loop {
        // xorshift64*: cheap, and the same keys every run.
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        let index = (rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as usize % plan.keys;
        request.set_key(index);
        let conn = &mut connections[plan.target.conn_for(index)];
        let started = Instant::now();
        if started >= plan.end {
            return Ok(samples);
        }
        let answer = conn.call(&request.bytes).await?;
        let took = started.elapsed();
        conn.expect(answer, plan.op, plan.value, index)?;
        if started >= plan.measure_from {
            let w = ((started - plan.measure_from).as_nanos() / window_ns) as usize;
            if let Some(window) = samples.get_mut(w) {
                window.push(took.as_nanos() as u64);
            }
        }
    }
}

/// Figures of one window from its latencies (sorted here) and the CPU use at
/// its start and end.
fn window_figures(
    samples: &mut [u64],
    window: Duration,
    from: &CpuSnapshot,
    to: &CpuSnapshot,
) -> Figures {
    samples.sort_unstable();
    let n = samples.len();
    Figures {
        ops: n as f64 / window.as_secs_f64(),
        p50: percentile(samples, 0.50),
        p99: percentile(samples, 0.99),
        p999: Some(percentile(samples, 0.999)),
        cpu_per_op: (n > 0).then(|| ticks(to.servers.saturating_sub(from.servers)) / n as u32),
        client_cpu_per_op: (n > 0).then(|| ticks(to.client.saturating_sub(from.client)) / n as u32),
        elsewhere: Some(from.elsewhere(to)),
    }
}

/// Nearest-rank percentile of sorted nanoseconds.
fn percentile(sorted: &[u64], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Duration::from_nanos(sorted[rank - 1])
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

fn median_duration(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

/// Each figure's median over the windows (taken separately per figure).
fn median_figures(runs: &[Figures]) -> Figures {
    let mut ops: Vec<f64> = runs.iter().map(|f| f.ops).collect();
    let p999: Vec<Duration> = runs.iter().filter_map(|f| f.p999).collect();
    let cpu: Vec<Duration> = runs.iter().filter_map(|f| f.cpu_per_op).collect();
    let client_cpu: Vec<Duration> = runs.iter().filter_map(|f| f.client_cpu_per_op).collect();
    let mut elsewhere: Vec<f64> = runs.iter().filter_map(|f| f.elsewhere).collect();
    Figures {
        ops: median(&mut ops),
        p50: median_duration(runs.iter().map(|f| f.p50).collect()),
        p99: median_duration(runs.iter().map(|f| f.p99).collect()),
        p999: (!p999.is_empty()).then(|| median_duration(p999)),
        cpu_per_op: (!cpu.is_empty()).then(|| median_duration(cpu)),
        client_cpu_per_op: (!client_cpu.is_empty()).then(|| median_duration(client_cpu)),
        elsewhere: (!elsewhere.is_empty()).then(|| median(&mut elsewhere)),
    }
}

// ---------------------------------------------------------------------------
// Where requests go
// ---------------------------------------------------------------------------

/// The nodes a client connects to, and which one gets each key.
#[derive(Clone)]
struct Target {
    nodes: Vec<SocketAddr>,
    /// Index into `nodes` of each key's owner; `None`: everything to `nodes[0]`.
    owners: Option<Arc<[u8]>>,
}

impl Target {
    fn single(node: SocketAddr) -> Target {
        Target {
            nodes: vec![node],
            owners: None,
        }
    }

    /// A ring-aware client of the ring `seed` belongs to: the members come from
    /// `get_all`, and `Ring` says who owns each of keys `0..keys` (computed once
    /// up front, like the prebuilt keys, to keep the client cheap).
    fn ring_aware(seed: &NodeAddr, keys: usize) -> Result<Target> {
        let mut client = connect(seed, &ClientOptions::default())?;
        let locations = client.get_all().map_err(|e| call_error(seed, e))?;
        let ring = Ring::new(locations.iter().filter_map(convert::addr));
        let members = ring.members();
        let nodes = members
            .iter()
            .map(|m| Ok(m.resolve()?[0]))
            .collect::<Result<Vec<_>>>()?;
        let owners = (0..keys)
            .map(|i| {
                let owner = ring.owner(&key(i)).expect("the ring has members");
                members.binary_search(owner).unwrap_or(0) as u8
            })
            .collect();
        Ok(Target {
            nodes,
            owners: Some(owners),
        })
    }

    fn conn_for(&self, key: usize) -> usize {
        self.owners
            .as_ref()
            .map_or(0, |owners| usize::from(owners[key]))
    }

    /// One connection to each node.
    async fn connect(&self) -> Result<Vec<Conn>> {
        let mut connections = Vec::with_capacity(self.nodes.len());
        for &node in &self.nodes {
            connections.push(Conn::open(node).await?);
        }
        Ok(connections)
    }
}

// ---------------------------------------------------------------------------
// The wire: prebuilt calls, replies read just far enough
// ---------------------------------------------------------------------------

/// Key length: `key:` and 12 digits, as redis-benchmark names its `-r` keys.
const KEY_LEN: usize = 16;

const STRICT_VERSION: u32 = 0x8001_0000;
const CALL: u32 = 1;
const REPLY: u32 = 2;
const EXCEPTION: u32 = 3;
const T_STOP: u8 = 0;
const T_I08: u8 = 3;
const T_I16: u8 = 6;
const T_I32: u8 = 8;
const T_I64: u8 = 10;
const T_STRING: u8 = 11;
const T_STRUCT: u8 = 12;

/// Writes key number `index` into `out` (`KEY_LEN` bytes).
fn write_key(out: &mut [u8], index: usize) {
    out[..4].copy_from_slice(b"key:");
    let mut n = index;
    for digit in out[4..KEY_LEN].iter_mut().rev() {
        *digit = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

fn key(index: usize) -> [u8; KEY_LEN] {
    let mut key = [0; KEY_LEN];
    write_key(&mut key, index);
    key
}

/// A value of `len` bytes (any bytes do; these are printable).
fn value_bytes(len: usize) -> Vec<u8> {
    (0..len).map(|i| b'a' + (i % 26) as u8).collect()
}

/// A whole call message whose key can be swapped in place.
struct Request {
    bytes: Vec<u8>,
    key_at: usize,
}

impl Request {
    /// `method(1: binary key, ...)`: `rest` writes the fields after the key.
    fn call(method: &str, rest: impl FnOnce(&mut Vec<u8>)) -> Request {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&(STRICT_VERSION | CALL).to_be_bytes());
        bytes.extend_from_slice(&(method.len() as i32).to_be_bytes());
        bytes.extend_from_slice(method.as_bytes());
        bytes.extend_from_slice(&0i32.to_be_bytes());
        bytes.push(T_STRING);
        bytes.extend_from_slice(&1i16.to_be_bytes());
        bytes.extend_from_slice(&(KEY_LEN as i32).to_be_bytes());
        let key_at = bytes.len();
        bytes.extend_from_slice(&key(0));
        rest(&mut bytes);
        bytes.push(T_STOP);
        Request { bytes, key_at }
    }

    fn fetch() -> Request {
        Request::call("fetch", |_| {})
    }

    fn store(value: &[u8]) -> Request {
        Request::call("store", |bytes| {
            bytes.push(T_STRING);
            bytes.extend_from_slice(&2i16.to_be_bytes());
            bytes.extend_from_slice(&(value.len() as i32).to_be_bytes());
            bytes.extend_from_slice(value);
        })
    }

    /// `relay_fetch(key, PEEK)`: a read of the node's own store only.
    fn peek() -> Request {
        Request::call("relay_fetch", |bytes| {
            bytes.push(T_I08);
            bytes.extend_from_slice(&2i16.to_be_bytes());
            bytes.push(PEEK as u8);
        })
    }

    fn set_key(&mut self, index: usize) {
        write_key(&mut self.bytes[self.key_at..self.key_at + KEY_LEN], index);
    }
}

/// What a node answered.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Answer {
    /// `fetch`: the value is `len` bytes at offset `at` of the reply.
    Value { at: usize, len: usize },
    /// `fetch`: the key is not stored.
    Absent,
    /// `store`: stored.
    Stored,
    /// A `StoreError` or an application exception, with its message.
    Failed(String),
}

/// Reads bytes of a reply in order; `None` when the buffer ends first.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let bytes = self.buf.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(bytes)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }

    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }

    fn len(&mut self) -> Option<std::result::Result<usize, String>> {
        let n = self.i32()?;
        Some(usize::try_from(n).map_err(|_| format!("negative length {n}")))
    }
}

/// `Ok(None)` from `$e` (the bytes so far end early) returns "incomplete".
macro_rules! more {
    ($e:expr) => {
        match $e {
            Some(v) => v,
            None => return Ok(None),
        }
    };
}

/// Reads the reply at the start of `buf`: `Ok(None)` while incomplete, else
/// its length and answer. Only the shapes `fetch`, `store` and `relay_fetch`
/// answer with are understood; anything else is an error.
fn parse_reply(buf: &[u8]) -> std::result::Result<Option<(usize, Answer)>, String> {
    let mut c = Cursor { buf, pos: 0 };
    let head = more!(c.i32()) as u32;
    if head & 0xffff_0000 != STRICT_VERSION {
        return Err(format!(
            "reply header 0x{head:08x} is not a strict binary-protocol header"
        ));
    }
    let name = more!(c.len())?;
    more!(c.take(name));
    more!(c.i32());
    match head & 0xff {
        REPLY => {}
        EXCEPTION => {
            let message = more!(struct_message(&mut c))?;
            return Ok(Some((c.pos, Answer::Failed(message))));
        }
        other => return Err(format!("unexpected message type {other} in a reply")),
    }
    let field = more!(c.u8());
    if field == T_STOP {
        return Ok(Some((c.pos, Answer::Stored)));
    }
    let id = more!(c.i16());
    let answer = match (field, id) {
        (T_STRUCT, 0) => match more!(c.u8()) {
            T_STOP => Answer::Absent,
            T_STRING => {
                more!(c.i16());
                let len = more!(c.len())?;
                let at = c.pos;
                more!(c.take(len));
                if more!(c.u8()) != T_STOP {
                    return Err("unexpected field after Lookup.value".into());
                }
                Answer::Value { at, len }
            }
            other => return Err(format!("unexpected field type {other} in Lookup")),
        },
        (T_STRUCT, 1) => Answer::Failed(more!(struct_message(&mut c))?),
        _ => return Err(format!("unexpected result field {id} of type {field}")),
    };
    if more!(c.u8()) != T_STOP {
        return Err("unexpected field after the result".into());
    }
    Ok(Some((c.pos, answer)))
}

/// Reads a flat struct (an exception) and returns its field 1 string.
fn struct_message(c: &mut Cursor) -> Option<std::result::Result<String, String>> {
    let mut message = String::new();
    loop {
        let field = c.u8()?;
        if field == T_STOP {
            return Some(Ok(message));
        }
        let id = c.i16()?;
        match field {
            T_STRING => {
                let len = match c.len()? {
                    Ok(len) => len,
                    Err(e) => return Some(Err(e)),
                };
                let text = c.take(len)?;
                if id == 1 {
                    message = String::from_utf8_lossy(text).into_owned();
                }
            }
            T_I08 => drop(c.take(1)?),
            T_I16 => drop(c.take(2)?),
            T_I32 => drop(c.take(4)?),
            T_I64 => drop(c.take(8)?),
            other => {
                return Some(Err(format!(
                    "unexpected field type {other} in an exception"
                )));
            }
        }
    }
}

/// One client connection to a node, with its reply buffer.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    peer: SocketAddr,
}

impl Conn {
    async fn open(peer: SocketAddr) -> Result<Conn> {
        let stream = TcpStream::connect(peer)
            .await
            .map_err(|e| Error::Unreachable {
                peer: peer.to_string(),
                reason: e.to_string(),
                refused: e.kind() == io::ErrorKind::ConnectionRefused,
            })?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(128 << 10),
            peer,
        })
    }

    fn error(&self, reason: impl Into<String>) -> Error {
        Error::Rpc {
            peer: self.peer.to_string(),
            reason: reason.into(),
        }
    }

    /// Sends one whole call and reads its whole reply.
    async fn call(&mut self, request: &[u8]) -> Result<Answer> {
        self.stream.write_all(request).await?;
        self.buf.clear();
        loop {
            if !self.buf.is_empty()
                && let Some((len, answer)) = parse_reply(&self.buf).map_err(|e| self.error(e))?
            {
                if len != self.buf.len() {
                    return Err(self.error("bytes after the reply (the call was answered twice?)"));
                }
                return Ok(answer);
            }
            if self.buf.capacity() - self.buf.len() < 32 << 10 {
                self.buf.reserve(self.buf.len().max(64 << 10));
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(self.error("the node closed the connection"));
            }
        }
    }

    /// Checks that `answer` is what `op` on key `index` should get.
    fn expect(&self, answer: Answer, op: Op, value: usize, index: usize) -> Result<()> {
        match (op, answer) {
            (Op::Get, Answer::Value { len, .. }) if len == value => Ok(()),
            (Op::Put, Answer::Stored) => Ok(()),
            (_, Answer::Failed(message)) => Err(Error::Refused {
                peer: self.peer.to_string(),
                message,
            }),
            (_, other) => Err(self.error(format!(
                "{} of {} answered {other:?} (expected a {value}-byte value)",
                op.label(),
                String::from_utf8_lossy(&key(index))
            ))),
        }
    }
}

// ---------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------

/// A `location` process on an ephemeral port of 127.0.0.1, killed on drop.
struct NodeProc {
    child: Child,
    addr: NodeAddr,
    socket: SocketAddr,
    log: PathBuf,
}

impl NodeProc {
    /// Starts a node, joining `seed` if given, and reads its first stdout line,
    /// `listening on ADDR as NAME`.
    fn start(
        location: &Path,
        seed: Option<&NodeAddr>,
        replicas: usize,
        cpus: Option<&str>,
        log: &Path,
    ) -> Result<NodeProc> {
        let mut command = on_cpus(cpus, location.as_os_str());
        command.args(["--bind", "127.0.0.1", "--replicas", &replicas.to_string()]);
        if let Some(seed) = seed {
            command.arg(seed.to_string());
        }
        let mut child = command
            .arg("0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log)?)
            .spawn()
            .map_err(|e| failed(format!("cannot start {}: {e}", location.display())))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        let parsed = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|rest| rest.split_once(" as "))
            .and_then(|(socket, name)| Some((socket.parse().ok()?, name.parse().ok()?)));
        let Some((socket, addr)) = parsed else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(failed(format!(
                "{} did not start: first line {line:?}; see {}",
                location.display(),
                log.display()
            )));
        };
        Ok(NodeProc {
            child,
            addr,
            socket,
            log: log.to_path_buf(),
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, name: &str) -> Result<()> {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.pid().to_string()])
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(failed(format!("kill -{name} {} failed", self.pid())))
        }
    }

    fn wait(&mut self) -> Result<ExitStatus> {
        Ok(self.child.wait()?)
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Which cores the servers and the client run on (see [`BenchConfig::pin`]).
#[derive(Clone, Debug)]
struct Placement {
    cores: usize,
    /// `taskset` CPU list of the servers, e.g. `0`.
    servers: String,
    /// `taskset` CPU list of the client, e.g. `1`.
    client: String,
}

impl Placement {
    /// Pins this process (the client, and the children it starts, unless they
    /// are started elsewhere) to the second half of `cores`. `None` when
    /// there is one core or `taskset` is missing.
    fn pin(cores: usize) -> Option<Placement> {
        if cores < 2 {
            return None;
        }
        let half = cores / 2;
        let list = |from: usize, to: usize| {
            if to - from == 1 {
                from.to_string()
            } else {
                format!("{from}-{}", to - 1)
            }
        };
        let placement = Placement {
            cores,
            servers: list(0, half),
            client: list(half, cores),
        };
        let pinned = Command::new("taskset")
            .args([
                "-a",
                "-p",
                "-c",
                &placement.client,
                &std::process::id().to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        pinned.then_some(placement)
    }
}

/// A command running `program` on `cpus` (through `taskset`, which then
/// replaces itself with the program, keeping the process id), or anywhere.
fn on_cpus(cpus: Option<&str>, program: &std::ffi::OsStr) -> Command {
    match cpus {
        Some(cpus) => {
            let mut command = Command::new("taskset");
            command.args(["-c", cpus]).arg(program);
            command
        }
        None => Command::new(program),
    }
}

/// Waits until every node reports all of them through `get_all`.
fn wait_for_ring(nodes: &[&NodeProc], timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let want: Vec<&NodeAddr> = nodes.iter().map(|n| &n.addr).collect();
    loop {
        let agreed = nodes.iter().all(|node| {
            let Ok(mut client) = connect(&node.addr, &ClientOptions::default()) else {
                return false;
            };
            let Ok(locations) = client.get_all() else {
                return false;
            };
            let members: Vec<NodeAddr> = locations.iter().filter_map(convert::addr).collect();
            members.len() == want.len() && want.iter().all(|w| members.contains(w))
        });
        if agreed {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::Timeout(timeout));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Why Redis cannot run here, if it cannot.
fn redis_missing() -> Option<String> {
    for tool in ["redis-server", "redis-benchmark"] {
        let found = Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Some(format!("`{tool}` was not found"));
        }
    }
    None
}

/// A `redis-server` without persistence on a free port, killed on drop.
struct RedisProc {
    child: Child,
    port: u16,
}

impl RedisProc {
    fn start(cpus: Option<&str>, log: &Path) -> Result<RedisProc> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = on_cpus(cpus, "redis-server".as_ref())
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(log)?)
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| failed(format!("cannot start redis-server: {e}")))?;
        let redis = RedisProc { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                let mut pong = [0; 7];
                if stream.write_all(b"PING\r\n").is_ok()
                    && stream.read_exact(&mut pong).is_ok()
                    && &pong == b"+PONG\r\n"
                {
                    return Ok(redis);
                }
            }
            if Instant::now() > deadline {
                return Err(failed(format!(
                    "redis-server did not answer on port {port}; see {}",
                    log.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `SET key:NNNNNNNNNNNN value` for keys `0..keys`, pipelined (loading only).
    fn fill(&self, keys: usize, value: usize) -> Result<()> {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let value = value_bytes(value);
        let per_batch = ((4 << 20) / (value.len() + 64)).clamp(1, 1000);
        let mut commands = Vec::new();
        let mut replies = Vec::new();
        for first in (0..keys).step_by(per_batch) {
            let n = per_batch.min(keys - first);
            commands.clear();
            for i in first..first + n {
                let _ = write!(commands, "*3\r\n$3\r\nSET\r\n${KEY_LEN}\r\n");
                commands.extend_from_slice(&key(i));
                let _ = write!(commands, "\r\n${}\r\n", value.len());
                commands.extend_from_slice(&value);
                commands.extend_from_slice(b"\r\n");
            }
            stream.write_all(&commands)?;
            replies.resize(5 * n, 0);
            stream.read_exact(&mut replies)?;
            if replies.chunks(5).any(|r| r != b"+OK\r\n") {
                return Err(failed(format!(
                    "redis-server refused a SET: {}",
                    String::from_utf8_lossy(&replies).trim()
                )));
            }
        }
        Ok(())
    }

    /// One cell with redis-benchmark: a short calibration run sizes `-n` to
    /// last `duration`, then `repeat` runs; the median of each figure.
    fn cell(
        &self,
        op: Op,
        conns: usize,
        value: usize,
        keys: usize,
        config: &BenchConfig,
    ) -> Result<Figures> {
        let calibration = self.benchmark(
            op,
            if conns == 1 { 2_000 } else { 10_000 },
            conns,
            value,
            keys,
        )?;
        let n = ((calibration.ops * config.duration.as_secs_f64()) as usize).max(1_000);
        let runs = (0..config.repeat.max(1))
            .map(|_| self.benchmark(op, n, conns, value, keys))
            .collect::<Result<Vec<_>>>()?;
        Ok(median_figures(&runs))
    }

    fn benchmark(
        &self,
        op: Op,
        n: usize,
        conns: usize,
        value: usize,
        keys: usize,
    ) -> Result<Figures> {
        let pid = [self.child.id()];
        let before = CpuSnapshot::take(&pid);
        let output = Command::new("redis-benchmark")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args([
                "-t",
                op.redis_test(),
                "-n",
                &n.to_string(),
                "-c",
                &conns.to_string(),
            ])
            .args([
                "-d",
                &value.to_string(),
                "-r",
                &keys.to_string(),
                "--precision",
                "3",
            ])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| failed(format!("cannot run redis-benchmark: {e}")))?;
        let after = CpuSnapshot::take(&pid);
        let text = String::from_utf8_lossy(&output.stdout);
        let mut figures = parse_redis_benchmark(&text).ok_or_else(|| {
            failed(format!(
                "could not read redis-benchmark's output ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        })?;
        figures.cpu_per_op = Some(ticks(after.servers.saturating_sub(before.servers)) / n as u32);
        figures.client_cpu_per_op =
            Some(ticks(after.client.saturating_sub(before.client)) / n as u32);
        figures.elsewhere = Some(before.elsewhere(&after));
        Ok(figures)
    }
}

impl Drop for RedisProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads the figures of one test from redis-benchmark's default (not `-q`,
/// not `--csv`) output: throughput and p50/p99 from its summary, and p99.9 as
/// the first rung of its percentile ladder at or above 99.9 % (the CSV output
/// has no p99.9).
fn parse_redis_benchmark(text: &str) -> Option<Figures> {
    let lines: Vec<&str> = text.split(['\r', '\n']).map(str::trim).collect();
    let ops = lines.iter().find_map(|l| {
        l.strip_prefix("throughput summary: ")?
            .strip_suffix(" requests per second")?
            .parse::<f64>()
            .ok()
    })?;
    let header = lines
        .iter()
        .position(|l| l.starts_with("avg") && l.contains("p50"))?;
    let names: Vec<&str> = lines[header].split_whitespace().collect();
    let values: Vec<f64> = lines[header + 1..]
        .iter()
        .find(|l| !l.is_empty())?
        .split_whitespace()
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    let at = |name: &str| {
        let i = names.iter().position(|n| *n == name)?;
        Some(Duration::from_secs_f64(values.get(i)? / 1e3))
    };
    let p999 = lines.iter().find_map(|l| {
        let (pct, rest) = l.split_once("% <= ")?;
        let pct: f64 = pct.parse().ok()?;
        let ms: f64 = rest.split_whitespace().next()?.parse().ok()?;
        (pct >= 99.9).then(|| Duration::from_secs_f64(ms / 1e3))
    });
    Some(Figures {
        ops,
        p50: at("p50")?,
        p99: at("p99")?,
        p999,
        cpu_per_op: None,
        client_cpu_per_op: None,
        elsewhere: None,
    })
}

/// CPU ticks (1/100 s, Linux's fixed `USER_HZ`) as a duration.
fn ticks(n: u64) -> Duration {
    Duration::from_millis(n * 10)
}

/// CPU time used so far by the servers under test, and by every other
/// process on the machine that is neither this program nor its child (kernel
/// threads aside), to tell how much other work skewed a measurement.
#[derive(Clone, Debug)]
struct CpuSnapshot {
    at: Instant,
    servers: u64,
    /// This program and its finished children (redis-benchmark runs).
    client: u64,
    others: HashMap<u32, u64>,
}

impl CpuSnapshot {
    fn take(servers: &[u32]) -> CpuSnapshot {
        let me = std::process::id();
        let mut others = HashMap::new();
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for entry in dir.flatten() {
                let Some(pid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| n.parse::<u32>().ok())
                else {
                    continue;
                };
                if let Some((ppid, ticks)) = process_ticks(pid)
                    && pid != me
                    && ppid != me
                    && pid != 2
                    && ppid != 2
                    && !servers.contains(&pid)
                {
                    others.insert(pid, ticks);
                }
            }
        }
        let client = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|stat| {
                let rest = stat.get(stat.rfind(')')? + 2..)?.to_string();
                // utime, stime, cutime, cstime: fields 14 to 17.
                Some(
                    rest.split_whitespace()
                        .skip(11)
                        .take(4)
                        .filter_map(|f| f.parse::<u64>().ok())
                        .sum(),
                )
            })
            .unwrap_or(0);
        CpuSnapshot {
            at: Instant::now(),
            client,
            servers: servers
                .iter()
                .filter_map(|&pid| process_ticks(pid))
                .map(|(_, ticks)| ticks)
                .sum(),
            others,
        }
    }

    /// Share of the machine's CPU that other processes used between `self`
    /// and `later` (processes that ended meanwhile are missed).
    fn elsewhere(&self, later: &CpuSnapshot) -> f64 {
        let used: u64 = later
            .others
            .iter()
            .map(|(pid, &ticks)| ticks.saturating_sub(self.others.get(pid).copied().unwrap_or(0)))
            .sum();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let wall = later.at.duration_since(self.at).as_secs_f64() * cores;
        if wall > 0.0 {
            (ticks(used).as_secs_f64() / wall).min(1.0)
        } else {
            0.0
        }
    }
}

/// The parent and the user plus system CPU ticks of process `pid`.
fn process_ticks(pid: u32) -> Option<(u32, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces: state is field 3,
    // ppid 4, utime 14 and stime 15.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ppid = fields.get(1)?.parse().ok()?;
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((ppid, ticks))
}

/// Resident memory (`VmRSS`) of process `pid`, in bytes.
fn rss_bytes(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")?
                .trim()
                .strip_suffix(" kB")?
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kb| kb * 1024)
        .ok_or_else(|| failed(format!("no VmRSS in /proc/{pid}/status")))
}

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

fn failed(reason: impl ToString) -> Error {
    Error::Io(io::Error::other(reason.to_string()))
}

fn facts() -> Facts {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| {
                Some(
                    l.strip_prefix("model name")?
                        .split_once(':')?
                        .1
                        .trim()
                        .to_string(),
                )
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = match git(&["rev-parse", "--short", "HEAD"]) {
        Some(hash) => match git(&["status", "--porcelain", "--untracked-files=no"]) {
            Some(changes) if !changes.is_empty() => format!("{hash} + uncommitted changes"),
            _ => hash,
        },
        None => "unknown".into(),
    };
    Facts {
        placement: String::new(),
        date: utc_date(SystemTime::now()),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu,
        commit,
        load,
    }
}

/// `YYYY-MM-DD` (UTC) of `time`.
fn utc_date(time: SystemTime) -> String {
    let days = time
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

fn thousands(n: f64) -> String {
    let digits = format!("{:.0}", n.max(0.0));
    let mut out = String::new();
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(d);
    }
    out
}

/// `server + client` CPU per request, in µs.
fn cpu_pair(f: &Figures) -> String {
    match (f.cpu_per_op, f.client_cpu_per_op) {
        (Some(server), Some(client)) => format!("{} + {}", us(server), us(client)),
        (Some(server), None) => us(server),
        _ => "-".into(),
    }
}

fn percent(share: f64) -> String {
    format!("{:.0}%", share * 100.0)
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

fn us(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

fn secs(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

fn size(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{} GiB", b >> 30),
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_sixteen_bytes_like_redis_benchmark_keys() {
        assert_eq!(&key(42), b"key:000000000042");
        let mut request = Request::fetch();
        request.set_key(123_456);
        assert!(
            request
                .bytes
                .windows(KEY_LEN)
                .any(|w| w == b"key:000000123456")
        );
    }

    #[test]
    fn a_prebuilt_store_call_decodes_as_the_generated_code_would() {
        use crate::frame::{Limits, MessageKind, scan};
        let mut request = Request::store(b"hello");
        request.set_key(7);
        let frame = scan(&request.bytes, &Limits::default()).unwrap().unwrap();
        assert_eq!(frame.name, "store");
        assert_eq!(frame.kind, MessageKind::Call);
        assert_eq!(frame.len, request.bytes.len());
    }

    fn reply(result: &[u8]) -> Vec<u8> {
        let mut bytes = (STRICT_VERSION | REPLY).to_be_bytes().to_vec();
        bytes.extend_from_slice(&5i32.to_be_bytes());
        bytes.extend_from_slice(b"fetch");
        bytes.extend_from_slice(&0i32.to_be_bytes());
        bytes.extend_from_slice(result);
        bytes
    }

    #[test]
    fn replies_are_read_only_once_complete() {
        let mut lookup = vec![T_STRUCT, 0, 0, T_STRING, 0, 1, 0, 0, 0, 3];
        lookup.extend_from_slice(b"abc");
        lookup.extend_from_slice(&[T_STOP, T_STOP]);
        let whole = reply(&lookup);
        for cut in 0..whole.len() {
            assert_eq!(parse_reply(&whole[..cut]), Ok(None), "cut at {cut}");
        }
        let (len, answer) = parse_reply(&whole).unwrap().unwrap();
        assert_eq!(len, whole.len());
        let Answer::Value { at, len } = answer else {
            panic!("not a value: {answer:?}");
        };
        assert_eq!(&whole[at..at + len], b"abc");
        assert_eq!(
            parse_reply(&reply(&[T_STRUCT, 0, 0, T_STOP, T_STOP]))
                .unwrap()
                .unwrap()
                .1,
            Answer::Absent
        );
        assert_eq!(
            parse_reply(&reply(&[T_STOP])).unwrap().unwrap().1,
            Answer::Stored
        );
    }

    #[test]
    fn a_store_error_is_read_with_its_message() {
        let mut err = vec![T_STRUCT, 0, 1, T_STRING, 0, 1, 0, 0, 0, 4];
        err.extend_from_slice(b"full");
        err.extend_from_slice(&[T_STOP, T_STOP]);
        let whole = reply(&err);
        assert_eq!(
            parse_reply(&whole).unwrap().unwrap(),
            (whole.len(), Answer::Failed("full".into()))
        );
    }

    #[test]
    fn redis_benchmark_output_gives_throughput_and_percentiles() {
        let text = "====== GET ======\r  20000 requests completed in 0.45 seconds\n\
            Latency by percentile distribution:\n\
            0.000% <= 0.151 milliseconds (cumulative count 1)\n\
            50.000% <= 0.567 milliseconds (cumulative count 10015)\n\
            99.805% <= 8.591 milliseconds (cumulative count 19961)\n\
            99.902% <= 8.879 milliseconds (cumulative count 19981)\n\
            100.000% <= 9.183 milliseconds (cumulative count 20000)\n\
            Summary:\n  throughput summary: 30349.01 requests per second\n\
            latency summary (msec):\n\
            avg       min       p50       p95       p99       max\n\
            1.135     0.160     0.383     4.847     7.783     9.599\n";
        let f = parse_redis_benchmark(text).unwrap();
        assert_eq!(f.ops, 30349.01);
        assert_eq!(f.p50, Duration::from_micros(383));
        assert_eq!(f.p99, Duration::from_micros(7783));
        assert_eq!(f.p999, Some(Duration::from_micros(8879)));
    }

    #[test]
    fn results_replace_the_previous_block_and_keep_the_rest() {
        let first = replace_results("# Benchmarks\n\nHow to run.\n", "old table\n");
        assert!(first.starts_with("# Benchmarks\n\nHow to run.\n\n"));
        let second = replace_results(&format!("{first}\nAfter.\n"), "new table");
        assert!(second.contains("new table") && !second.contains("old table"));
        assert!(second.contains("How to run.") && second.ends_with("After.\n"));
        assert_eq!(second.matches(BEGIN).count(), 1);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let sorted: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&sorted, 0.5), Duration::from_nanos(500));
        assert_eq!(percentile(&sorted, 0.99), Duration::from_nanos(990));
        assert_eq!(percentile(&sorted, 0.999), Duration::from_nanos(999));
    }

    #[test]
    fn dates_are_civil_utc() {
        assert_eq!(utc_date(UNIX_EPOCH), "1970-01-01");
        assert_eq!(
            utc_date(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29"
        );
    }

    #[test]
    fn numbers_print_for_people() {
        assert_eq!(thousands(1_234_567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(size(65_536), "64 KiB");
        assert_eq!(size(100), "100 B");
    }
}
