//! The report: every figure against the targets of issue 10 as Markdown, and
//! the results block of `BENCHMARKS.md` it replaces.

use std::fmt::Write as _;
use std::io;
use std::path::Path;
use std::time::Duration;

use thrifty_p2p::Result;

use crate::bulk::JOIN_SAMPLE;
use crate::idle::resolution;
use crate::results::{Cell, Drain, Figures, Idle, Op, Repair, Report, Setup, Transfer};

/// One target of issue 10, checked.
struct Check {
    what: String,
    got: String,
    pass: bool,
}

impl Check {
    fn tag(&self) -> &'static str {
        if self.pass { "pass" } else { "**miss**" }
    }

    /// `ours / theirs >= want`.
    fn ratio(name: &str, ours: f64, theirs: f64, want: f64, whom: &str) -> Check {
        let ratio = ours / theirs;
        Check {
            what: format!("{name}: ops/s >= {want:.1}x {whom}"),
            got: format!("{ratio:.2}x"),
            pass: ratio >= want,
        }
    }
}

/// One node's ops/s over one Redis server's, at every load.
const REDIS_RATIO: f64 = 1.0;
/// One node's p99 at values up to this size, at every load.
const P99_TARGET: Duration = Duration::from_millis(1);
const P99_VALUE: usize = 100;
/// The ring-aware 3-node ring (one copy per key) over Redis Cluster.
const CLUSTER_RATIO: f64 = 1.0;
/// The 3-node ring keeping 3 copies, over one node keeping one, for puts
/// over many connections.
const REPLICATED_RATIO: f64 = 0.5;
/// Through a forwarding node, over the ring-aware client's ops/s.
const FORWARDING_RATIO: f64 = 0.6;
/// Target for moving bulk data, joins and handoffs (bytes per second).
const BULK_TARGET: f64 = 1e9;
const MOVE_TARGET: f64 = 200e6;
/// Target for resident memory over the raw bytes of keys and values.
const MEMORY_TARGET: f64 = 1.25;
/// Target for each idle node's CPU, as a share of one core.
const IDLE_TARGET: f64 = 0.01;
/// Idle CPU independent of the key count: the busiest node's at a key count
/// at most this times the first (smallest) key count's, or within two
/// clock ticks over the window of it (below that the figures are noise).
const IDLE_GROWTH: f64 = 2.0;
/// The load target: this many keys through one connection in under
/// `LOAD_TARGET` seconds.
const LOAD_KEYS: usize = 1_000_000;
const LOAD_TARGET: f64 = 10.0;
/// Oneway `put`s drained per second on one connection.
const DRAIN_TARGET: f64 = 100_000.0;
/// Bytes per second a replica that missed writes is repaired at.
const REPAIR_TARGET: f64 = 200e6;

/// `1 conn`, `50 conns`, `1 conn, 32 in flight`.
fn conns_label(cell: &Cell) -> String {
    let mut label = format!(
        "{} conn{}",
        cell.conns,
        if cell.conns == 1 { "" } else { "s" }
    );
    if cell.depth > 1 {
        let _ = write!(label, ", {} in flight", cell.depth);
    }
    label
}

impl Report {
    /// The cell of `setup` at the load of `like` (for our ring, also with
    /// as many copies per key).
    fn find(&self, setup: Setup, like: &Cell) -> Option<&Cell> {
        let ring = matches!(setup, Setup::RingAware | Setup::Forwarding);
        self.cells.iter().find(|c| {
            c.setup == setup && c.same_load(like) && (!ring || c.replicas == like.replicas)
        })
    }

    /// The targets that apply to `cell`.
    fn cell_checks(&self, cell: &Cell) -> Vec<Check> {
        let mut checks = Vec::new();
        let name = format!(
            "{}, {} {}, {}",
            cell.label(self.config.replicas),
            cell.op.label(),
            size(cell.value),
            conns_label(cell)
        );
        // This cell's rate against the same cell of another setup.
        let against = |setup: Setup, target: f64, whom: &str| {
            (self.find(setup, cell))
                .map(|other| Check::ratio(&name, cell.ours.ops, other.ours.ops, target, whom))
        };
        match cell.setup {
            Setup::OneNode => {
                if let Some(redis) = cell.redis {
                    checks.push(Check::ratio(
                        &name,
                        cell.ours.ops,
                        redis.ops,
                        REDIS_RATIO,
                        "Redis",
                    ));
                }
                if cell.value <= P99_VALUE {
                    checks.push(Check {
                        what: format!("{name}: p99 < 1 ms"),
                        got: format!("{} ms", ms(cell.ours.p99)),
                        pass: cell.ours.p99 < P99_TARGET,
                    });
                }
            }
            // Redis Cluster keeps one copy of each key: with more, our ring
            // is reported beside it, not held to it.
            Setup::RingAware if cell.replicas == 1 => {
                checks.extend(against(Setup::RedisCluster, CLUSTER_RATIO, "Redis Cluster"));
            }
            // Replicated writes over many connections: the ring keeping more
            // copies against one node keeping one (the second set of ring
            // cells, `ring_replicas`, is otherwise reported only).
            Setup::RingAware if cell.replicas > 1 && cell.op == Op::Put && cell.conns > 1 => {
                checks.extend(against(
                    Setup::OneNode,
                    REPLICATED_RATIO,
                    "1 node at 1 copy",
                ));
            }
            Setup::Forwarding if cell.replicas == self.config.replicas => {
                checks.extend(against(Setup::RingAware, FORWARDING_RATIO, "ring-aware"));
            }
            _ => {}
        }
        checks
    }

    /// The ratio column: what the row is compared with.
    fn ratio(&self, cell: &Cell) -> String {
        let over = |theirs: f64, whom: &str| format!("{:.2}x {whom}", cell.ours.ops / theirs);
        match cell.setup {
            Setup::OneNode => cell.redis.map(|r| over(r.ops, "Redis")),
            Setup::RingAware => self
                .find(Setup::RedisCluster, cell)
                .map(|c| over(c.ours.ops, "Redis Cluster"))
                .or_else(|| {
                    self.find(Setup::OneNode, cell)
                        .map(|one| over(one.ours.ops, "1 node"))
                }),
            Setup::Forwarding => self
                .find(Setup::RingAware, cell)
                .map(|direct| over(direct.ours.ops, "ring-aware")),
            Setup::RedisCluster => self
                .find(Setup::OneNode, cell)
                .and_then(|one| one.redis)
                .map(|redis| over(redis.ops, "1 Redis")),
        }
        .unwrap_or_default()
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
                what: format!(
                    "memory of {} keys: <= {MEMORY_TARGET}x raw",
                    thousands(m.keys as f64)
                ),
                got: format!("{ratio:.2}x"),
                pass: ratio <= MEMORY_TARGET,
            });
        }
        for idle in &self.bulk.idle {
            if idle.keys == LOAD_KEYS {
                checks.push(Check {
                    what: format!("{}: < {LOAD_TARGET} s", load_label(idle)),
                    got: format!("{:.2} s", idle.load_secs),
                    pass: idle.load_secs < LOAD_TARGET,
                });
            }
            checks.push(Check {
                what: format!(
                    "{}: < {} of a core per node",
                    idle_label(idle),
                    core_percent(IDLE_TARGET)
                ),
                got: core_percent(idle.max_cpu()),
                pass: idle.max_cpu() < IDLE_TARGET,
            });
        }
        if let Some((first, rest)) = self.bulk.idle.split_first() {
            for idle in rest {
                let floor = 2.0 * resolution(first.window).max(resolution(idle.window));
                let (ratio, got) = growth(first, idle);
                checks.push(Check {
                    what: format!(
                        "{}: <= {IDLE_GROWTH}x, or within {} of a core",
                        growth_label(first, idle),
                        core_percent(floor)
                    ),
                    got,
                    pass: ratio <= IDLE_GROWTH || idle.max_cpu() - first.max_cpu() <= floor,
                });
            }
        }
        for drain in &self.bulk.drain {
            let lost = match drain.lost {
                0 => String::new(),
                n => format!(", but {} puts lost", thousands(n as f64)),
            };
            checks.push(Check {
                what: format!(
                    "{}: >= {} puts/s, none lost",
                    drain_label(drain),
                    thousands(DRAIN_TARGET)
                ),
                got: format!("{} puts/s{lost}", thousands(drain.rate())),
                pass: drain.rate() >= DRAIN_TARGET && drain.lost == 0,
            });
        }
        for repair in &self.bulk.repair {
            let (got, pass) = match repair_rate(repair) {
                Some(rate) => (format!("{:.0} MB/s", rate / 1e6), rate >= REPAIR_TARGET),
                None => ("not repaired by the deadline".into(), false),
            };
            checks.push(Check {
                what: format!("{}: >= 200 MB/s", repair_label(repair)),
                got,
                pass,
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
        let redis = if f.redis.is_empty() {
            String::new()
        } else {
            format!(" Redis {}.", f.redis)
        };
        let _ = writeln!(
            out,
            "Measured {} on {} cores ({}), commit `{}`, load average before the run {}.{redis} {}",
            f.date, f.cores, f.cpu, f.commit, f.load, f.placement
        );
        let pipelined = if c.pipeline > 1 {
            format!(
                "request-reply, except the cells of 1 connection with {} requests in flight",
                c.pipeline
            )
        } else {
            "request-reply (no pipelining)".into()
        };
        let other_copies = self
            .cells
            .iter()
            .find(|cell| cell.label(c.replicas) != cell.setup.label())
            .map(|cell| {
                format!(
                    ", {0} in the rows marked \"{0} copies\" (reported beside Redis Cluster, \
                     not held to the targets)",
                    cell.replicas
                )
            })
            .unwrap_or_default();
        // Only the parts run are described (`--only idle` has no cells).
        if !self.cells.is_empty() {
            let _ = writeln!(
                out,
                "Each cell: {} warm-up, then {} window{} of {} on the same connections; \
                 the median window is shown. Keyspaces: {} keys for values up to 1 KiB, \
                 {} keys for larger ones, all preloaded. Nodes keep {} cop{} of each key{other_copies}. \
                 Client: {} thread{}, one task per connection, {pipelined}; the same client \
                 drives Redis and Redis Cluster over RESP (the Redis columns), redis-benchmark \
                 beside it for reference. MB and GB are 10^6 and 10^9 bytes.",
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
                 | Redis ops/s | Redis p50 | Redis p99 | Redis p99.9 | Redis CPU µs/op server+client \
                 | redis-benchmark ops/s | redis-benchmark p99 | ratio | other procs' CPU | targets |\n",
            );
            out.push_str(
                "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|\n",
            );
        }
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
            let (b_ops, b_p99) = match &cell.redis_benchmark {
                Some(b) => (thousands(b.ops), ms(b.p99)),
                None => Default::default(),
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
            let conns = if cell.depth > 1 {
                format!("{}, {} in flight", cell.conns, cell.depth)
            } else {
                cell.conns.to_string()
            };
            let _ = writeln!(
                out,
                "| {} | {} | {conns} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {b_ops} | {b_p99} | {} | {} | {} |",
                cell.label(c.replicas),
                cell.op.label(),
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
                self.ratio(cell),
                elsewhere,
                targets.join("; "),
            );
        }
        let b = &self.bulk;
        if b.transfer.is_some()
            || b.join.is_some()
            || b.handoff.is_some()
            || b.memory.is_some()
            || !b.idle.is_empty()
            || !b.drain.is_empty()
            || !b.repair.is_empty()
        {
            out.push('\n');
            out.push_str("| bulk | figure | detail | Redis | target |\n|---|--:|---|--:|---|\n");
        }
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
        for idle in &self.bulk.idle {
            let _ = writeln!(
                out,
                "| {} | {:.2} s | {} keys/s, every store acknowledged (a write quorum of the {} \
                 replicas), into a fresh ring of 3 nodes{}; other procs' CPU {} | | {} |",
                load_label(idle),
                idle.load_secs,
                thousands(idle.keys as f64 / idle.load_secs),
                idle.replicas,
                match idle.load_retried {
                    0 => String::new(),
                    n => format!(
                        "; {} stores refused (paused, joining or no quorum) and sent again",
                        thousands(n as f64)
                    ),
                },
                percent(idle.load_elsewhere),
                check_for(&format!("{}:", load_label(idle))),
            );
            let each = |f: &dyn Fn(&crate::results::IdleNode) -> String| {
                idle.nodes.iter().map(f).collect::<Vec<_>>().join(" / ")
            };
            let settled = if idle.settle.settled {
                format!(
                    "settled {:.1} s after the load (its work drained after {:.1} s)",
                    idle.settle.secs,
                    idle.settle.drained.unwrap_or_default()
                )
            } else {
                format!(
                    "**not settled** {:.0} s after the load ({}), measured anyway",
                    idle.settle.secs, idle.settle.why
                )
            };
            let _ = writeln!(
                out,
                "| {} | max {} of a core per node | {} of a core over {:.1} s, {settled}; \
                 VmRSS {} MiB; in the window anti-entropy compared {} times and repaired {} \
                 keys (per node); other procs' CPU {} | | {} |",
                idle_label(idle),
                core_percent(idle.max_cpu()),
                each(&|n| core_percent(n.cpu)),
                idle.window.as_secs_f64(),
                each(&|n| (n.rss >> 20).to_string()),
                each(&|n| n.compared.to_string()),
                each(&|n| n.repaired.to_string()),
                percent(idle.elsewhere),
                check_for(&format!("{}:", idle_label(idle))),
            );
        }
        if let Some((first, rest)) = self.bulk.idle.split_first() {
            for idle in rest {
                let (_, got) = growth(first, idle);
                let _ = writeln!(
                    out,
                    "| {} | {got} | the busiest node's idle CPU: {} of a core at {} keys, {} at {} | | {} |",
                    growth_label(first, idle),
                    core_percent(idle.max_cpu()),
                    thousands(idle.keys as f64),
                    core_percent(first.max_cpu()),
                    thousands(first.keys as f64),
                    check_for(&format!("{}:", growth_label(first, idle))),
                );
            }
        }
        for drain in &self.bulk.drain {
            let rates: Vec<String> = drain
                .secs
                .iter()
                .map(|secs| thousands(drain.puts as f64 / secs))
                .collect();
            let _ = writeln!(
                out,
                "| {} | {} puts/s | {:.3} s from the first byte written to the ping's reply \
                 (the socket took the {:.1} MiB burst in {:.3} s), median of {} ({} puts/s); \
                 every key read back: {} of {} as put; other procs' CPU {} | | {} |",
                drain_label(drain),
                thousands(drain.rate()),
                drain.median_secs(),
                (drain.puts * put_len(drain.value)) as f64 / f64::from(1 << 20),
                crate::cells::median(&mut drain.written.clone()),
                rounds(drain.secs.len()),
                rates.join(" / "),
                thousands((drain.checked - drain.lost) as f64),
                thousands(drain.checked as f64),
                percent(drain.elsewhere),
                check_for(&format!("{}:", drain_label(drain))),
            );
        }
        for repair in &self.bulk.repair {
            let r = repair.median();
            let all: Vec<String> = repair
                .rounds
                .iter()
                .map(|r| r.secs.map_or("-".into(), |s| format!("{s:.2}")))
                .collect();
            let held = match r.secs {
                Some(secs) => format!("held every key {secs:.2} s after SIGCONT"),
                None => format!(
                    "**held only {} of {} keys** by the deadline",
                    thousands(r.held as f64),
                    thousands(repair.keys as f64)
                ),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} keys ({} MiB with keys) missed; {held} (median of {}: {} s); \
                 written through another node in {:.2} s ({} in flight{}), stopped {:.1} s in all, \
                 {} in the writer's member table at the resume, when its peers had {} writes \
                 queued and {} keys hinted for it; on it during the repair: {} keys repaired by \
                 anti-entropy, {} `replicate` and {} `absorb` calls; other procs' CPU {} | | {} |",
                repair_label(repair),
                repair_rate(repair).map_or("-".into(), |rate| format!("{:.0} MB/s", rate / 1e6)),
                thousands(repair.keys as f64),
                repair.bytes() >> 20,
                rounds(repair.rounds.len()),
                all.join(" / "),
                r.load_secs,
                repair.depth,
                match r.load_retried {
                    0 => String::new(),
                    n => format!(", {n} stores refused and sent again"),
                },
                r.stopped_secs,
                r.status,
                thousands(r.queued as f64),
                thousands(r.hinted as f64),
                thousands(r.by_anti_entropy as f64),
                r.replicate_calls,
                r.absorb_calls,
                percent(r.elsewhere),
                check_for(&format!("{}:", repair_label(repair))),
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
            .flat_map(|c| [Some(c.ours), c.redis, c.redis_benchmark])
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

/// Names the load of an idle row.
fn load_label(idle: &Idle) -> String {
    format!(
        "load: {} keys of {} at N={} over one connection, {} in flight",
        thousands(idle.keys as f64),
        size(idle.value),
        idle.replicas,
        idle.depth
    )
}

/// Names an idle row.
fn idle_label(idle: &Idle) -> String {
    format!(
        "idle, {} nodes at N={} holding {} keys of {}",
        idle.nodes.len(),
        idle.replicas,
        thousands(idle.keys as f64),
        size(idle.value)
    )
}

/// `1 round`, `3 rounds`.
fn rounds(n: usize) -> String {
    format!("{n} round{}", if n == 1 { "" } else { "s" })
}

/// Names a drain row.
fn drain_label(drain: &Drain) -> String {
    let at = if drain.nodes == 1 {
        format!("1 node at N={}", drain.replicas)
    } else {
        format!("1 of {} nodes at N={}", drain.nodes, drain.replicas)
    };
    format!(
        "drain: {} oneway puts of {} on 1 connection, then a ping; {at}",
        thousands(drain.puts as f64),
        size(drain.value)
    )
}

/// Bytes of one prebuilt 2009 `put` of a `value`-byte value.
fn put_len(value: usize) -> usize {
    crate::wire::Request::put(&vec![b'a'; value]).bytes.len()
}

/// Names a repair row.
fn repair_label(repair: &Repair) -> String {
    format!(
        "repair: a replica stopped (SIGSTOP), {} of {} values written at N=3 {}, then resumed",
        size(repair.keys * repair.value),
        size(repair.value),
        if repair.after_dead {
            "once its peers declared it dead"
        } else {
            "at once"
        }
    )
}

/// The median round's bytes repaired per second, if it was repaired.
fn repair_rate(repair: &Repair) -> Option<f64> {
    repair
        .median()
        .secs
        .map(|secs| repair.bytes() as f64 / secs)
}

fn growth_label(first: &Idle, idle: &Idle) -> String {
    format!(
        "idle CPU at {} keys over {} keys",
        thousands(idle.keys as f64),
        thousands(first.keys as f64)
    )
}

/// The busiest node's idle CPU at `idle` over that at `first`, and as shown.
fn growth(first: &Idle, idle: &Idle) -> (f64, String) {
    let ratio = idle.max_cpu() / first.max_cpu();
    let shown = if ratio.is_finite() {
        format!("{ratio:.2}x")
    } else {
        format!("{} over nothing", core_percent(idle.max_cpu()))
    };
    (ratio, shown)
}

/// A share of one core, e.g. `0.35%`.
fn core_percent(share: f64) -> String {
    format!("{:.2}%", share * 100.0)
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

pub fn thousands(n: f64) -> String {
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

pub fn size(bytes: usize) -> String {
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
    fn results_replace_the_previous_block_and_keep_the_rest() {
        let first = replace_results("# Benchmarks\n\nHow to run.\n", "old table\n");
        assert!(first.starts_with("# Benchmarks\n\nHow to run.\n\n"));
        let second = replace_results(&format!("{first}\nAfter.\n"), "new table");
        assert!(second.contains("new table") && !second.contains("old table"));
        assert!(second.contains("How to run.") && second.ends_with("After.\n"));
        assert_eq!(second.matches(BEGIN).count(), 1);
    }

    fn idle(keys: usize, cpu: [f64; 3]) -> Idle {
        use crate::results::{IdleNode, Settle};
        Idle {
            keys,
            value: 100,
            replicas: 3,
            depth: 64,
            load_secs: 2.0,
            load_retried: 0,
            load_elsewhere: 0.0,
            settle: Settle {
                drained: Some(0.5),
                secs: 4.0,
                settled: true,
                why: String::new(),
            },
            window: Duration::from_secs(20),
            nodes: cpu
                .iter()
                .map(|&cpu| IdleNode {
                    cpu,
                    rss: 100 << 20,
                    repaired: 0,
                    compared: 10,
                })
                .collect(),
            elsewhere: 0.0,
        }
    }

    /// A report of this machine's facts and the default settings, holding
    /// nothing yet.
    fn empty_report() -> Report {
        Report {
            facts: crate::facts::facts(),
            config: crate::settings::BenchConfig::default(),
            cells: Vec::new(),
            bulk: Default::default(),
            notes: Vec::new(),
        }
    }

    #[test]
    fn idle_rows_show_every_node_and_the_busiest_against_the_fewest_keys() {
        let mut report = empty_report();
        report.bulk.idle = vec![
            idle(100_000, [0.002, 0.003, 0.001]),
            idle(1_000_000, [0.004, 0.006, 0.005]),
        ];
        let text = report.to_markdown();
        assert!(text.contains(
            "| idle, 3 nodes at N=3 holding 1,000,000 keys of 100 B | max 0.60% of a core per node \
             | 0.40% / 0.60% / 0.50% of a core over 20.0 s"
        ));
        assert!(text.contains("| load: 1,000,000 keys of 100 B at N=3 over one connection, 64 in flight | 2.00 s | 500,000 keys/s"));
        assert!(text.contains("| idle CPU at 1,000,000 keys over 100,000 keys | 2.00x |"));
        assert!(!text.contains("| setup | op |"), "no cells, no cell table");
    }

    #[test]
    fn a_drain_that_lost_puts_and_a_repair_that_never_ended_miss_their_targets() {
        use crate::results::{Drain, Repair, RepairRound};
        let mut report = empty_report();
        let drain = |nodes, lost| Drain {
            nodes,
            replicas: nodes,
            puts: 100_000,
            value: 100,
            secs: vec![0.5, 0.4, 0.9],
            written: vec![0.3; 3],
            checked: 300_000,
            lost,
            first_lost: None,
            elsewhere: 0.0,
        };
        report.bulk.drain = vec![drain(1, 0), drain(3, 7)];
        let round = |secs| RepairRound {
            load_secs: 3.0,
            load_retried: 0,
            stopped_secs: 5.0,
            status: "dead".into(),
            queued: 0,
            hinted: 0,
            secs,
            held: 2_000,
            by_anti_entropy: 4_096,
            replicate_calls: 0,
            absorb_calls: 0,
            elsewhere: 0.0,
        };
        let repair = |after_dead, secs: [Option<f64>; 3]| Repair {
            after_dead,
            keys: 4_096,
            value: 64 << 10,
            depth: 32,
            rounds: secs.into_iter().map(round).collect(),
        };
        report.bulk.repair = vec![
            repair(false, [Some(1.0), Some(0.5), Some(2.0)]),
            repair(true, [None, Some(0.5), None]),
        ];
        let text = report.to_markdown();
        // The median round: 0.5 s of three (200,000 puts/s).
        assert!(text.contains(
            "- drain: 100,000 oneway puts of 100 B on 1 connection, then a ping; 1 node at N=1: \
             >= 100,000 puts/s, none lost: 200,000 puts/s pass"
        ));
        assert!(text.contains("1 of 3 nodes at N=3: >= 100,000 puts/s, none lost: 200,000 puts/s, but 7 puts lost **miss**"));
        // 4,096 keys of 16 + 65,536 bytes in the median 1.0 s.
        assert!(text.contains("written at N=3 at once, then resumed: >= 200 MB/s: 269 MB/s pass"));
        assert!(text.contains("once its peers declared it dead, then resumed: >= 200 MB/s: not repaired by the deadline **miss**"));
        assert!(text.contains("Targets met: 2 of 4."));
    }

    #[test]
    fn numbers_print_for_people() {
        assert_eq!(thousands(1_234_567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(size(65_536), "64 KiB");
        assert_eq!(size(100), "100 B");
    }
}
