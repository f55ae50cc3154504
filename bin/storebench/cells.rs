//! The request-reply cells: get and put at each connection count and value
//! size, and on one pipelined connection, on one node, on a 3-node ring
//! (ring-aware and forwarding), on one Redis server and on a 3-master Redis
//! Cluster; the load loop and the statistics of its windows.
//!
//! Each connection is one task on a small tokio runtime (one thread by
//! default, like redis-benchmark's single event loop). A request-reply
//! connection sends one request and waits for its reply before the next; a
//! pipelined one keeps `depth` requests in flight, writing every free slot's
//! request in one write and taking each reply as the answer to the oldest
//! request not yet answered (Thrift replies must carry that request's
//! sequence number). Our nodes and Redis go through the same loop, only the
//! engine differs ([`crate::wire`] or [`crate::resp`], see
//! [`crate::engine`]). A cell runs a warm-up, then `repeat` back-to-back
//! windows on the same connections; each request counts in the window it
//! started in, and the median window is reported.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use thrifty_p2p::{Error, ErrorKind, Result};

use crate::engine::{self, Connection, Expect, Request};
use crate::failed;
use crate::procfs::{CpuSnapshot, ticks};
use crate::report::size;
use crate::resp;
use crate::results::{Cell, Figures, Op, Report, Setup};
use crate::run::Bench;
use crate::target::Target;
use crate::wire::{self, value_bytes};

/// The load of one cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Load {
    pub value: usize,
    pub conns: usize,
    /// Requests in flight per connection (1: request-reply).
    pub depth: usize,
    pub op: Op,
}

impl Load {
    /// `get 100 B x 50`, `put 64 KiB x 1 (32 in flight)`.
    fn label(&self) -> String {
        let pipelined = if self.depth > 1 {
            format!(" ({} in flight)", self.depth)
        } else {
            String::new()
        };
        format!(
            "{} {} x {}{pipelined}",
            self.op.label(),
            size(self.value),
            self.conns
        )
    }

    fn cell(&self, setup: Setup, replicas: usize, ours: Figures) -> Cell {
        Cell {
            setup,
            replicas,
            op: self.op,
            conns: self.conns,
            depth: self.depth,
            value: self.value,
            ours,
            redis: None,
            redis_benchmark: None,
        }
    }
}

impl Bench<'_> {
    /// Every cell's load, in the order they run: by value size, then the
    /// request-reply connection counts and the pipelined connection, get
    /// before put.
    fn loads(&self) -> Vec<Load> {
        let mut modes: Vec<(usize, usize)> =
            self.config.connections.iter().map(|&c| (c, 1)).collect();
        if self.config.pipeline > 1 {
            modes.push((1, self.config.pipeline));
        }
        let mut loads = Vec::new();
        for &value in &self.config.value_sizes {
            for &(conns, depth) in &modes {
                for op in [Op::Get, Op::Put] {
                    loads.push(Load {
                        value,
                        conns,
                        depth,
                        op,
                    });
                }
            }
        }
        loads
    }

    /// Preloads keyspace of `value` through `target` unless `loaded` says it
    /// is there already.
    fn preload<C: Connection>(
        &self,
        what: &str,
        target: &Target,
        value: usize,
        loaded: &mut Option<usize>,
        progress: &mut dyn FnMut(&str),
    ) -> Result<()> {
        if *loaded != Some(value) {
            let keys = self.config.keys_for(value);
            progress(&format!(
                "{what}: preloading {keys} keys of {}",
                size(value)
            ));
            self.fill::<C>(target, keys, value, 50, 1)?;
            *loaded = Some(value);
        }
        Ok(())
    }

    pub fn one_node_cells(
        &self,
        report: &mut Report,
        progress: &mut dyn FnMut(&str),
    ) -> Result<()> {
        let node = self.start_node(None)?;
        let target = Target::single(node.socket);
        let pids = [node.pid()];
        let mut loaded = None;
        for load in self.loads() {
            self.preload::<wire::Conn>("1 node", &target, load.value, &mut loaded, progress)?;
            progress(&format!("1 node: {}", load.label()));
            let ours = least_disturbed(|| self.cell::<wire::Conn>(&target, load, &pids))?;
            report
                .cells
                .push(load.cell(Setup::OneNode, self.config.replicas, ours));
        }
        Ok(())
    }

    /// The 3-node ring keeping `replicas` copies of each key, ring-aware
    /// and forwarding.
    pub fn ring_cells(
        &self,
        report: &mut Report,
        progress: &mut dyn FnMut(&str),
        replicas: usize,
    ) -> Result<()> {
        let nodes = self.start_ring(replicas)?;
        let copies = if replicas == 1 {
            String::new()
        } else {
            format!(", {replicas} copies")
        };
        let first = &nodes[0];
        let pids: Vec<u32> = nodes.iter().map(|n| n.pid()).collect();
        let most_keys = self.config.keys.max(self.config.large_keys);
        let ring_aware = Target::ring_aware(&first.addr, most_keys)?;
        let forwarding = Target::single(first.socket);
        let mut loaded = None;
        for load in self.loads() {
            let what = format!("3 nodes{copies}");
            self.preload::<wire::Conn>(&what, &ring_aware, load.value, &mut loaded, progress)?;
            for (setup, target) in [
                (Setup::RingAware, &ring_aware),
                (Setup::Forwarding, &forwarding),
            ] {
                progress(&format!("{}{copies}: {}", setup.label(), load.label()));
                let ours = least_disturbed(|| self.cell::<wire::Conn>(target, load, &pids))?;
                report.cells.push(load.cell(setup, replicas, ours));
            }
        }
        Ok(())
    }

    /// One `redis-server`, at every load of the 1-node cells: storebench's
    /// RESP client gives the Redis column, redis-benchmark the secondary one.
    pub fn redis_cells(&self, report: &mut Report, progress: &mut dyn FnMut(&str)) -> Result<()> {
        let redis = self.start_redis()?;
        let target = Target::single(redis.addr());
        let pids = [redis.pid()];
        let mut loaded = None;
        for load in self.loads() {
            self.preload::<resp::Conn>("Redis", &target, load.value, &mut loaded, progress)?;
            progress(&format!("Redis: {}", load.label()));
            let own = least_disturbed(|| self.cell::<resp::Conn>(&target, load, &pids))?;
            progress(&format!("Redis: {} (redis-benchmark)", load.label()));
            let keys = self.config.keys_for(load.value);
            // Secondary: a failure of redis-benchmark leaves its column
            // empty, with a note, rather than ending the run.
            let benchmark = least_disturbed(|| {
                redis.cell(
                    load.op,
                    load.conns,
                    load.depth,
                    load.value,
                    keys,
                    self.config,
                )
            })
            .map_err(|e| {
                report.notes.push(format!(
                    "redis-benchmark failed at {}, twice: {e}; its columns are empty there.",
                    load.label()
                ))
            })
            .ok();
            let ours = load.cell(Setup::OneNode, 1, Figures::default());
            if let Some(cell) = report
                .cells
                .iter_mut()
                .find(|c| c.setup == Setup::OneNode && c.same_load(&ours))
            {
                cell.redis = Some(own);
                cell.redis_benchmark = benchmark;
            }
        }
        Ok(())
    }

    /// A Redis Cluster of three masters, at every load of the ring cells,
    /// through a cluster-aware client of storebench's RESP engine.
    pub fn redis_cluster_cells(
        &self,
        report: &mut Report,
        progress: &mut dyn FnMut(&str),
    ) -> Result<()> {
        progress("Redis Cluster: starting 3 masters");
        let cluster = self.start_redis_cluster()?;
        let pids = cluster.pids();
        let most_keys = self.config.keys.max(self.config.large_keys);
        let target = cluster.target(most_keys)?;
        let mut loaded = None;
        for load in self.loads() {
            self.preload::<resp::Conn>(
                "Redis Cluster",
                &target,
                load.value,
                &mut loaded,
                progress,
            )?;
            progress(&format!(
                "{}: {}",
                Setup::RedisCluster.label(),
                load.label()
            ));
            let figures = least_disturbed(|| self.cell::<resp::Conn>(&target, load, &pids))?;
            report
                .cells
                .push(load.cell(Setup::RedisCluster, 1, figures));
        }
        Ok(())
    }

    /// Stores keys `0..keys` once each, over `conns` connections of engine
    /// `C` that each keep `depth` stores in flight (1: request-reply);
    /// every store's reply is checked, and one refused with "retry" is sent
    /// again (see [`Fill::run`]). Returns how long it took, and how many
    /// were sent again.
    pub fn fill<C: Connection>(
        &self,
        target: &Target,
        keys: usize,
        value: usize,
        conns: usize,
        depth: usize,
    ) -> Result<Filled> {
        let value_bytes = value_bytes(value);
        self.runtime.block_on(async {
            let next = Arc::new(AtomicUsize::new(0));
            let mut tasks = Vec::new();
            let started = Instant::now();
            for _ in 0..conns.min(keys.max(1)) {
                let connections = target.connect::<C>().await?;
                let request = C::request(Op::Put, &value_bytes);
                let fill = Fill {
                    next: next.clone(),
                    keys,
                    value,
                    depth: depth.max(1),
                    target: target.clone(),
                };
                tasks.push(tokio::spawn(fill.run(connections, request)));
            }
            let mut retried = 0;
            for task in tasks {
                retried += task.await.map_err(failed)??;
            }
            Ok(Filled {
                took: started.elapsed(),
                retried,
            })
        })
    }

    /// One cell: warm-up, then `repeat` windows; the median window's figures.
    fn cell<C: Connection>(&self, target: &Target, load: Load, pids: &[u32]) -> Result<Figures> {
        let config = self.config;
        let value_bytes = value_bytes(load.value);
        let windows = config.repeat.max(1);
        self.runtime.block_on(async {
            let mut connection_sets = Vec::with_capacity(load.conns);
            for _ in 0..load.conns {
                connection_sets.push(target.connect::<C>().await?);
            }
            let start = Instant::now();
            let plan = Arc::new(Plan {
                measure_from: start + config.warmup,
                window: config.duration,
                windows,
                end: start + config.warmup + config.duration * windows as u32,
                keys: config.keys_for(load.value),
                value: load.value,
                op: load.op,
                depth: load.depth.max(1),
                target: target.clone(),
            });
            let mut tasks = Vec::with_capacity(load.conns);
            for (i, connections) in connection_sets.into_iter().enumerate() {
                let request = C::request(load.op, &value_bytes);
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
    /// Requests in flight per connection.
    depth: usize,
    target: Target,
}

/// A request sent and not yet answered.
#[derive(Clone, Copy)]
struct Pending {
    index: usize,
    /// Which of the worker's connections it went on.
    conn: usize,
    seq: i32,
    started: Instant,
}

/// What a [`Bench::fill`] took.
#[derive(Clone, Copy, Debug)]
pub struct Filled {
    pub took: Duration,
    /// Stores refused with "retry" and sent again.
    pub retried: usize,
}

/// What one connection of [`Bench::fill`] stores: the keys it takes from
/// `next` (shared by every connection) until `keys`.
struct Fill {
    next: Arc<AtomicUsize>,
    keys: usize,
    value: usize,
    depth: usize,
    target: Target,
}

/// How long a connection of [`Bench::fill`] keeps retrying refused stores
/// without one being stored before it gives up.
const FILL_PATIENCE: Duration = Duration::from_secs(60);

/// Whether a refused store should be sent again: the node said so (it was
/// just paused, is still joining, or too few replicas stored it; every write
/// is versioned, so a retry is safe).
fn retry_store(e: &Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::Paused | ErrorKind::Joining | ErrorKind::Quorum
    )
}

impl Fill {
    /// Keeps `depth` stores in flight (written together, per socket) until
    /// every key is taken and stored, each reply checked as the answer to the
    /// oldest store not yet answered (as in [`worker`]). A store refused
    /// with "retry" is sent again after a pause that doubles while refusals
    /// go on (5 ms to 200 ms); returns how many were.
    async fn run<C: Connection>(
        self,
        mut connections: Vec<C>,
        mut request: C::Request,
    ) -> Result<usize> {
        let mut pending: VecDeque<(usize, usize, i32)> = VecDeque::with_capacity(self.depth);
        let mut again: VecDeque<usize> = VecDeque::new();
        let mut out: Vec<Vec<u8>> = connections.iter().map(|_| Vec::new()).collect();
        let mut seq: i32 = 0;
        let mut taken_all = false;
        let mut retried = 0;
        let mut backoff = RETRY_FIRST;
        let mut stored_at = Instant::now();
        loop {
            while pending.len() < self.depth {
                let index = match again.pop_front() {
                    Some(index) => index,
                    None if taken_all => break,
                    None => {
                        let index = self.next.fetch_add(1, Ordering::Relaxed);
                        if index >= self.keys {
                            taken_all = true;
                            break;
                        }
                        index
                    }
                };
                let conn = self.target.conn_for(index);
                seq = seq.wrapping_add(1);
                request.set(index, seq);
                out[conn].extend_from_slice(request.bytes());
                pending.push_back((index, conn, seq));
            }
            for (conn, bytes) in connections.iter_mut().zip(&mut out) {
                if !bytes.is_empty() {
                    conn.send(bytes).await?;
                    bytes.clear();
                }
            }
            let mut first = true;
            let mut refused = None;
            while let Some(&(index, conn, seq)) = pending.front() {
                let expect = Expect {
                    op: Op::Put,
                    value: self.value,
                    index,
                    seq,
                };
                let conn = &mut connections[conn];
                // A reply is taken whole before it is checked, so after a
                // refusal the connection is still in step.
                let took = if first {
                    engine::reply(conn, &expect).await.map(|()| true)
                } else {
                    conn.take_reply(&expect)
                };
                first = false;
                match took {
                    Ok(false) => break,
                    Ok(true) => {
                        stored_at = Instant::now();
                        backoff = RETRY_FIRST;
                    }
                    Err(e) if retry_store(&e) && stored_at.elapsed() < FILL_PATIENCE => {
                        again.push_back(index);
                        retried += 1;
                        refused = Some(e);
                    }
                    Err(e) => return Err(e),
                }
                pending.pop_front();
            }
            if refused.is_some() {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RETRY_MOST);
            }
            if taken_all && again.is_empty() && pending.is_empty() {
                return Ok(retried);
            }
        }
    }
}

/// The pause before refused stores are sent again, at first and at most.
const RETRY_FIRST: Duration = Duration::from_millis(5);
const RETRY_MOST: Duration = Duration::from_millis(200);

/// One connection's loop: random keys, `plan.depth` requests in flight (one
/// at a time for 1), until the plan ends and every reply is in. Returns the
/// latencies (ns) of the requests started in each window.
///
/// A connection of a ring-aware or cluster-aware client is one socket per
/// server; its requests in flight may be on any of them. Replies are taken
/// oldest request first: each socket's replies come in the order of its
/// requests, so the oldest request's reply is the next one on its socket.
async fn worker<C: Connection>(
    mut connections: Vec<C>,
    mut request: C::Request,
    plan: Arc<Plan>,
    seed: u64,
) -> Result<Vec<Vec<u64>>> {
    let mut samples: Vec<Vec<u64>> = (0..plan.windows)
        .map(|_| Vec::with_capacity(1 << 14))
        .collect();
    let mut rng = seed | 1;
    let window_ns = plan.window.as_nanos().max(1);
    let mut pending: VecDeque<Pending> = VecDeque::with_capacity(plan.depth);
    // Pipelined requests are gathered per socket and written together.
    let mut out: Vec<Vec<u8>> = connections.iter().map(|_| Vec::new()).collect();
    let mut seq: i32 = 0;
    let mut ended = false;
    loop {
        while !ended && pending.len() < plan.depth {
            let started = Instant::now();
            if started >= plan.end {
                ended = true;
                break;
            }
            // xorshift64*: cheap, and the same keys every run.
            rng ^= rng >> 12;
            rng ^= rng << 25;
            rng ^= rng >> 27;
            let index = (rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as usize % plan.keys;
            let conn = plan.target.conn_for(index);
            seq = seq.wrapping_add(1);
            request.set(index, seq);
            if plan.depth == 1 {
                connections[conn].send(request.bytes()).await?;
            } else {
                out[conn].extend_from_slice(request.bytes());
            }
            pending.push_back(Pending {
                index,
                conn,
                seq,
                started,
            });
        }
        for (conn, bytes) in connections.iter_mut().zip(&mut out) {
            if !bytes.is_empty() {
                conn.send(bytes).await?;
                bytes.clear();
            }
        }
        // Wait for the oldest reply, then take every later one already in.
        let mut first = true;
        while let Some(&p) = pending.front() {
            let expect = Expect {
                op: plan.op,
                value: plan.value,
                index: p.index,
                seq: p.seq,
            };
            let conn = &mut connections[p.conn];
            if first {
                engine::reply(conn, &expect).await?;
                first = false;
            } else if !conn.take_reply(&expect)? {
                break;
            }
            let took = p.started.elapsed();
            pending.pop_front();
            if p.started >= plan.measure_from {
                let w = ((p.started - plan.measure_from).as_nanos() / window_ns) as usize;
                if let Some(window) = samples.get_mut(w) {
                    window.push(took.as_nanos() as u64);
                }
            }
        }
        if ended && pending.is_empty() {
            return Ok(samples);
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

pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

fn median_duration(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

/// Each figure's median over the windows (taken separately per figure).
pub fn median_figures(runs: &[Figures]) -> Figures {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let sorted: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&sorted, 0.5), Duration::from_nanos(500));
        assert_eq!(percentile(&sorted, 0.99), Duration::from_nanos(990));
        assert_eq!(percentile(&sorted, 0.999), Duration::from_nanos(999));
    }
}
