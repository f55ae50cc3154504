//! `storebench`: measure thrifty-p2p beside Redis and print (and by default
//! write into BENCHMARKS.md) the figures against the project's targets.
//! `scripts/bench.sh` builds in release and runs it.
//!
//! # Layout
//!
//! - [`settings`]: what to measure and for how long ([`BenchConfig`], [`Part`]).
//! - [`run`]: one run: the parts in order, the processes they share.
//! - [`cells`]: the request-reply cells and their load loop, on our nodes and
//!   on Redis.
//! - [`bulk`]: the bulk transfer, join, handoff and memory rows.
//! - [`idle`]: a loaded, settled ring's CPU and memory while left alone.
//! - [`drain`]: a burst of oneway `put`s on one connection, then a `ping`.
//! - [`repair`]: a replica stopped while writes go on, resumed and repaired.
//! - [`target`]: which server gets each key.
//! - [`engine`]: what the load loop asks of a client engine.
//! - [`wire`]: the raw Thrift engine: prebuilt calls, replies read just far enough.
//! - [`resp`]: the RESP engine, the same for Redis; RESP replies parsed.
//! - [`nodes`]: the `location` processes under test, and core pinning.
//! - [`redis`]: `redis-server` and `redis-benchmark`.
//! - [`cluster`]: a 3-master Redis Cluster, hash slots and the slot map.
//! - [`procfs`]: CPU time and resident memory from `/proc`.
//! - [`facts`]: where and when the run happened.
//! - [`results`]: what a run measured, as data.
//! - [`report`]: the figures against the targets as Markdown; `BENCHMARKS.md`.

mod bulk;
mod cells;
mod cluster;
mod drain;
mod engine;
mod facts;
mod idle;
mod nodes;
mod procfs;
mod redis;
mod repair;
mod report;
mod resp;
mod results;
mod run;
mod settings;
mod target;
mod wire;

use std::io;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use thrifty_p2p::Error;

use crate::settings::{BenchConfig, Part};

/// Benchmark thrifty-p2p beside Redis: get and put at 1 and 50 connections
/// and on 1 connection with 32 requests in flight, 100 B and 64 KiB values,
/// on one node (beside one redis-server) and a 3-node ring through a
/// ring-aware client and through one forwarding node (beside a 3-master
/// Redis Cluster); a 1 GiB transfer; a join and a SIGINT handoff; a node's
/// memory; a 3-node ring's idle CPU at 3 copies per key, and the load
/// before; a burst of oneway puts drained on one connection; a stopped
/// replica's repair. Starts and stops its own nodes (the `location` binary
/// next to this one) and its own redis-servers.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Smoke test in one to two minutes: short windows, one run, small data. Rough
    /// figures; BENCHMARKS.md is left alone unless --results is given.
    #[arg(long)]
    quick: bool,
    /// Seconds of one measured window.
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Seconds of warm-up before each cell.
    #[arg(long, value_name = "SECS")]
    warmup: Option<f64>,
    /// Windows per cell and runs per bulk row; medians are reported.
    #[arg(long, value_name = "N")]
    repeat: Option<usize>,
    /// Keys preloaded for values up to 1 KiB.
    #[arg(long, value_name = "N")]
    keys: Option<usize>,
    /// Keys preloaded for larger values.
    #[arg(long, value_name = "N")]
    large_keys: Option<usize>,
    /// Threads running the client's connections.
    #[arg(long, value_name = "N")]
    client_threads: Option<usize>,
    /// MiB moved in and out by the bulk row.
    #[arg(long, value_name = "MIB")]
    bulk_mib: Option<usize>,
    /// MiB the join should move to the new node.
    #[arg(long, value_name = "MIB")]
    join_mib: Option<usize>,
    /// Keys held by the node whose memory is measured.
    #[arg(long, value_name = "N")]
    memory_keys: Option<usize>,
    /// Key counts of the idle part, comma-separated: a fresh 3-node ring at
    /// 3 copies per key is loaded with each, settled and measured (add
    /// 10000000 if about 5 GiB of memory is free) [default: 100000,1000000;
    /// 10000,100000 with --quick].
    #[arg(long, value_name = "N,..", value_delimiter = ',')]
    idle_keys: Vec<usize>,
    /// Seconds of the idle part's measured window [default: 20; 5 with
    /// --quick].
    #[arg(long, value_name = "SECS")]
    idle_secs: Option<f64>,
    /// Oneway puts (of 100 B) in each burst of the drain part [default:
    /// 100000; 20000 with --quick].
    #[arg(long, value_name = "N")]
    drain_puts: Option<usize>,
    /// MiB written (as 64 KiB values) while the repair part's replica is
    /// stopped [default: 256; 32 with --quick].
    #[arg(long, value_name = "MIB")]
    repair_mib: Option<usize>,
    /// Connection counts, comma-separated [default: 1,50].
    #[arg(long, value_name = "N,..", value_delimiter = ',')]
    conns: Vec<usize>,
    /// Value sizes in bytes, comma-separated [default: 100,65536].
    #[arg(long, value_name = "BYTES,..", value_delimiter = ',')]
    values: Vec<usize>,
    /// Requests in flight on the pipelined connection (its cells: 1
    /// connection, N in flight); 0 for no pipelined cells [default: 32].
    #[arg(long, value_name = "N")]
    pipeline: Option<usize>,
    /// Run only these parts, comma-separated: one-node (with Redis beside it),
    /// ring (with Redis Cluster beside it), bulk, join, memory, idle (a
    /// loaded 3-node ring's CPU while nothing is asked of it), drain (oneway
    /// puts on one connection, then a ping), repair (a stopped replica
    /// resumed) [default: all]. A partial run leaves BENCHMARKS.md alone (its
    /// figures would replace a full run's) unless --results is given.
    #[arg(long, value_name = "PART,..", value_delimiter = ',')]
    only: Vec<Part>,
    /// Copies of each key the nodes keep (their --replicas) [default: 1, as
    /// Redis beside them; the targets are about single copies].
    #[arg(long, value_name = "N")]
    replicas: Option<usize>,
    /// Copies of each key in a second set of ring cells, reported but not
    /// held to the targets; 0 for none [default: 3].
    #[arg(long, value_name = "N")]
    ring_replicas: Option<usize>,
    /// Skip Redis (and Redis Cluster).
    #[arg(long)]
    no_redis: bool,
    /// Let the scheduler place client and servers (default: servers on the
    /// first half of the cores, the client on the rest; see BENCHMARKS.md).
    #[arg(long)]
    no_pin: bool,
    /// The `location` binary to start nodes from.
    #[arg(long, value_name = "PATH")]
    location: Option<PathBuf>,
    /// File to write the results into, replacing the previous ones
    /// [default: BENCHMARKS.md, or none with --quick or --only].
    #[arg(long, value_name = "PATH")]
    results: Option<PathBuf>,
    /// Only print the results.
    #[arg(long, conflicts_with = "results")]
    no_results: bool,
}

fn config(args: &Args) -> BenchConfig {
    let mut config = if args.quick {
        BenchConfig::quick()
    } else {
        BenchConfig::default()
    };
    let secs = |s: f64| Duration::from_secs_f64(s.max(0.0));
    config.duration = args.duration.map_or(config.duration, secs);
    config.warmup = args.warmup.map_or(config.warmup, secs);
    config.repeat = args.repeat.unwrap_or(config.repeat).max(1);
    config.keys = args.keys.unwrap_or(config.keys).max(1);
    config.large_keys = args.large_keys.unwrap_or(config.large_keys).max(1);
    config.client_threads = args.client_threads.unwrap_or(config.client_threads);
    config.bulk_bytes = args.bulk_mib.map_or(config.bulk_bytes, |m| m << 20);
    config.bulk_chunk = config.bulk_chunk.min(config.bulk_bytes.max(1));
    config.join_bytes = args.join_mib.map_or(config.join_bytes, |m| m << 20);
    config.memory_keys = args.memory_keys.unwrap_or(config.memory_keys);
    if !args.idle_keys.is_empty() {
        config.idle_keys = args.idle_keys.iter().map(|&k| k.max(1)).collect();
    }
    config.idle_window = args.idle_secs.map_or(config.idle_window, secs);
    config.drain_puts = args.drain_puts.unwrap_or(config.drain_puts).max(1);
    config.repair_bytes = args
        .repair_mib
        .map_or(config.repair_bytes, |m| m << 20)
        .max(config.repair_value);
    config.redis = !args.no_redis;
    config.pipeline = args.pipeline.unwrap_or(config.pipeline);
    config.replicas = args.replicas.unwrap_or(config.replicas).max(1);
    config.ring_replicas = args.ring_replicas.unwrap_or(config.ring_replicas);
    config.pin = !args.no_pin;
    if !args.conns.is_empty() {
        config.connections = args.conns.clone();
    }
    if !args.values.is_empty() {
        config.value_sizes = args.values.clone();
    }
    if !args.only.is_empty() {
        config.parts = args.only.clone();
    }
    if let Some(location) = &args.location {
        config.location = location.clone();
    }
    config
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = config(&args);
    let partial = args.no_results || args.quick || !args.only.is_empty();
    let results = match (&args.results, partial) {
        (Some(path), _) => Some(path.clone()),
        (None, false) => Some(PathBuf::from("BENCHMARKS.md")),
        (None, true) => None,
    };
    let report = match run::run(&config, &mut |step| eprintln!("storebench: {step}")) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("storebench: {e}");
            return ExitCode::from(2);
        }
    };
    println!("{}", report.to_markdown());
    if let Some(path) = results {
        if let Err(e) = report::write_results(&path, &report) {
            eprintln!("storebench: cannot write {}: {e}", path.display());
            return ExitCode::from(2);
        }
        eprintln!("storebench: results written to {}", path.display());
    }
    ExitCode::SUCCESS
}

/// An error that only says what failed (the library's errors name a peer or
/// a timeout; these are about our own processes and files).
fn failed(reason: impl ToString) -> Error {
    Error::Io(io::Error::other(reason.to_string()))
}
