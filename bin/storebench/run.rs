//! One run: starts its own `location` nodes, and a `redis-server` and a
//! 3-master Redis Cluster beside them, runs each part asked for in order (the
//! request-reply cells of [`crate::cells`], the bulk rows of [`crate::bulk`],
//! [`crate::idle`], [`crate::drain`] and [`crate::repair`])
//! and collects every figure into a [`Report`]. [`Bench`] holds what the
//! parts share and starts their processes; every one is killed when its part
//! ends, also on an error (their handles kill them on drop).

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use thrifty_p2p::{NodeAddr, Result};
use tokio::runtime::Runtime;

use crate::cluster::RedisCluster;
use crate::facts::facts;
use crate::failed;
use crate::nodes::{NodeProc, Placement, wait_for_ring};
use crate::redis::{RedisProc, redis_missing, redis_version};
use crate::results::{Bulk, Report};
use crate::settings::{BenchConfig, Part};

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
    let with_redis = match (config.redis, redis_missing()) {
        (false, _) => false,
        (true, None) => true,
        (true, Some(why)) => {
            report.notes.push(format!(
                "Redis was not run: {why}. `scripts/bench.sh` installs it \
                 (apt-get install redis-server redis-tools)."
            ));
            false
        }
    };
    if with_redis {
        report.facts.redis = redis_version();
    }
    if runs(Part::OneNode) {
        bench.one_node_cells(&mut report, progress)?;
        if with_redis {
            bench.redis_cells(&mut report, progress)?;
        }
    }
    if runs(Part::Ring) {
        bench.ring_cells(&mut report, progress, config.replicas)?;
        if with_redis {
            bench.redis_cluster_cells(&mut report, progress)?;
        }
        if let Some(replicas) = config.replicated_ring() {
            bench.ring_cells(&mut report, progress, replicas)?;
        }
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
        report.bulk.memory = Some(bench.memory(with_redis)?);
    }
    if runs(Part::Idle) {
        for &keys in &config.idle_keys {
            let idle = bench.idle(keys, progress)?;
            report.bulk.idle.push(idle);
        }
    }
    if runs(Part::Drain) {
        report.bulk.drain = bench.drains(progress)?;
    }
    if runs(Part::Repair) {
        report.bulk.repair = bench.repairs(progress)?;
    }
    report.notes.push(if bench.placement.is_some() {
        "client and servers share one machine, on separate cores; Redis, Redis Cluster \
         and redis-benchmark are placed the same way, which is why they run side by side."
            .into()
    } else {
        "the client competes with the servers for the same cores, for Redis as for us; \
         that is why both run side by side on one machine."
            .into()
    });
    Ok(report)
}

/// State shared by the phases of one run; the phases are its methods in
/// [`crate::cells`] and [`crate::bulk`].
pub struct Bench<'a> {
    pub config: &'a BenchConfig,
    placement: Option<Placement>,
    /// Runs the client's connections.
    pub runtime: Runtime,
    next_log: AtomicUsize,
}

impl Bench<'_> {
    fn log_path(&self, what: &str) -> PathBuf {
        let n = self.next_log.fetch_add(1, Ordering::Relaxed);
        self.config.log_dir.join(format!("{what}-{n}.log"))
    }

    /// Starts a node on the servers' cores.
    pub fn start_node(&self, seed: Option<&NodeAddr>) -> Result<NodeProc> {
        self.start_node_keeping(seed, self.config.replicas, false)
    }

    /// Starts a node keeping `replicas` copies of each key, on the servers'
    /// cores; with `http`, serving `/metrics` too.
    pub fn start_node_keeping(
        &self,
        seed: Option<&NodeAddr>,
        replicas: usize,
        http: bool,
    ) -> Result<NodeProc> {
        let cpus = self.placement.as_ref().map(|p| p.servers.as_str());
        NodeProc::start(
            &self.config.location,
            seed,
            replicas,
            cpus,
            http,
            &self.log_path("node"),
        )
    }

    /// Starts a node on a core of its own (the `n`th, wrapping), as if on its
    /// own machine.
    pub fn start_node_alone(&self, seed: Option<&NodeAddr>, n: usize) -> Result<NodeProc> {
        let cpu = self.placement.as_ref().map(|p| (n % p.cores).to_string());
        NodeProc::start(
            &self.config.location,
            seed,
            self.config.replicas,
            cpu.as_deref(),
            false,
            &self.log_path("node"),
        )
    }

    pub fn start_redis(&self) -> Result<RedisProc> {
        let cpus = self.placement.as_ref().map(|p| p.servers.as_str());
        RedisProc::start(cpus, &self.log_path("redis"))
    }

    /// Starts a Redis Cluster of three masters on the servers' cores, its
    /// logs and config files in a directory of the log directory.
    pub fn start_redis_cluster(&self) -> Result<RedisCluster> {
        let cpus = self.placement.as_ref().map(|p| p.servers.as_str());
        let dir = self.log_path("redis-cluster").with_extension("");
        RedisCluster::start(3, cpus, &dir)
    }

    /// Starts three nodes keeping `replicas` copies of each key on the
    /// servers' cores, and waits until they agree.
    pub fn start_ring(&self, replicas: usize) -> Result<Vec<NodeProc>> {
        self.start_ring_with(replicas, false)
    }

    /// [`Bench::start_ring`], the nodes serving `/metrics` too with `http`.
    pub fn start_ring_with(&self, replicas: usize, http: bool) -> Result<Vec<NodeProc>> {
        let first = self.start_node_keeping(None, replicas, http)?;
        let mut nodes = vec![
            self.start_node_keeping(Some(&first.addr), replicas, http)?,
            self.start_node_keeping(Some(&first.addr), replicas, http)?,
        ];
        nodes.insert(0, first);
        wait_for_ring(&nodes.iter().collect::<Vec<_>>(), Duration::from_secs(30))?;
        Ok(nodes)
    }
}
