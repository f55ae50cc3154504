//! The repair part: issue 10 asks that a replica that missed writes be
//! repaired at 200 MB/s or more. A fresh 3-node ring at N=3 (every node
//! holds every key); the third node is stopped with SIGSTOP (it keeps its
//! sockets and answers nothing), `repair_bytes` of `repair_value` values are
//! written through the first (one connection, `repair_depth` stores in
//! flight, the load machinery of the other parts; every store acknowledged
//! by the two running nodes, a write quorum of 2 of 3), and the third is
//! resumed with SIGCONT. Timed from the resume until it holds every key
//! (`keys` in its `stats`, polled every [`POLL`], within a deadline); rate:
//! the key and value bytes it missed over that time.
//!
//! The node the load goes through replicates every key (3 copies on 3
//! nodes), so it coordinates every write itself: a write stores there and
//! is acknowledged by the running peer, a write quorum of 2 of 3, whether
//! the stopped node still counts as a member or not. Two cases, each the
//! median of `repeat` rounds on fresh rings:
//! - *at once*: the writes start as soon as the node is stopped, and it
//!   is resumed as soon as they are acknowledged. What its peers held for
//!   it then (writes still queued for it, keys hinted) comes to it, and
//!   anti-entropy repairs whatever else differs. Its peers may have
//!   declared it dead meanwhile (the row says what its status was).
//! - *once dead*: the writes start only once both peers have declared it
//!   dead (SWIM, within the node's failure timeout), and cover every key;
//!   then it is resumed, comes back as a member that lost its place, and the
//!   ring change starts a full anti-entropy round (and handoff).
//!
//! Which mechanism did the work is read from the resumed node's `/metrics`
//! (keys repaired by anti-entropy; `replicate` and `absorb` calls served,
//! which is how queued writes, delivered hints and handoff arrive) and the
//! peers' `stats` just before the resume (`replication_pending`, `hints`).
//! The node has no option to turn hints off or cap them lower (the cap is a
//! constant, 1,000,000 keys per peer), so a case where only anti-entropy can
//! repair cannot be set up from outside; the counters say what happened.

use std::time::{Duration, Instant};

use thrifty_p2p::wire::Conn as LibConn;
use thrifty_p2p::{ClientOptions, MemberStatus, NodeAddr, Result};

use crate::failed;
use crate::nodes::{NodeProc, connect_all};
use crate::procfs::CpuSnapshot;
use crate::report::size;
use crate::results::{Repair, RepairRound};
use crate::run::Bench;
use crate::target::Target;
use crate::wire::{Conn, KEY_LEN};

/// How often the resumed node's `stats` are asked.
const POLL: Duration = Duration::from_millis(20);

/// Keys repaired by anti-entropy on a node.
const REPAIRED: &str = r#"thrifty_repaired_keys_total{by="anti_entropy"}"#;
/// Calls a node served that carry entries to it: a coordinator's
/// replication (`replicate`; also queued writes and hints sent late, as
/// `absorb`) and handoff (`absorb`).
const REPLICATE: &str = r#"thrifty_requests_total{method="replicate"}"#;
const ABSORB: &str = r#"thrifty_requests_total{method="absorb"}"#;

/// Longest wait for the peers to declare the stopped node dead.
const DEATH_TIMEOUT: Duration = Duration::from_secs(60);

impl Bench<'_> {
    /// Both cases: written at once, then written once declared dead.
    pub fn repairs(&self, progress: &mut dyn FnMut(&str)) -> Result<Vec<Repair>> {
        [false, true]
            .into_iter()
            .map(|after_dead| self.repair(after_dead, progress))
            .collect()
    }

    fn repair(&self, after_dead: bool, progress: &mut dyn FnMut(&str)) -> Result<Repair> {
        let c = self.config;
        let keys = (c.repair_bytes / c.repair_value).max(1);
        let mut rounds = Vec::new();
        for round in 0..c.repeat.max(1) {
            progress(&format!(
                "repair{}: round {}, {keys} keys of {} written while a replica is stopped",
                if after_dead {
                    ", once dead"
                } else {
                    ", at once"
                },
                round + 1,
                size(c.repair_value)
            ));
            let done = self.repair_round(after_dead, keys)?;
            progress(&format!(
                "repair: written in {:.2} s, resumed ({}) after {:.1} s stopped; {}",
                done.load_secs,
                done.status,
                done.stopped_secs,
                match done.secs {
                    Some(secs) => format!("held every key {secs:.2} s later"),
                    None => format!("held only {} of {keys} keys by the deadline", done.held),
                }
            ));
            rounds.push(done);
        }
        Ok(Repair {
            after_dead,
            keys,
            value: c.repair_value,
            depth: c.repair_depth,
            rounds,
        })
    }

    /// One round on a fresh ring.
    fn repair_round(&self, after_dead: bool, keys: usize) -> Result<RepairRound> {
        let c = self.config;
        let nodes = self.start_ring_with(3, true)?;
        let (entry, peer, stopped) = (&nodes[0], &nodes[1], &nodes[2]);
        let pids: Vec<u32> = nodes.iter().map(NodeProc::pid).collect();
        let before = stopped.metrics()?;
        // Killed on drop, stopped or not, if anything below fails.
        stopped.signal("STOP")?;
        let stopped_at = Instant::now();
        if after_dead {
            wait_until_dead(&[entry, peer], &stopped.addr)?;
        }
        let load = self.fill::<Conn>(
            &Target::single(entry.socket),
            keys,
            c.repair_value,
            1,
            c.repair_depth,
        )?;
        let status = status_of(entry, &stopped.addr)?;
        let (mut queued, mut hinted) = (0, 0);
        for node in [entry, peer] {
            let stats = LibConn::open(&node.addr, &ClientOptions::default())?.stats()?;
            queued += stats.get("replication_pending").copied().unwrap_or(0);
            hinted += stats.get("hints").copied().unwrap_or(0);
        }
        let cpu = CpuSnapshot::take(&pids);
        let stopped_secs = stopped_at.elapsed().as_secs_f64();
        let resumed = Instant::now();
        stopped.signal("CONT")?;
        let bytes = keys * (KEY_LEN + c.repair_value);
        // A repair slower than 5 MB/s is far off the target: no need to wait
        // it out.
        let deadline =
            resumed + Duration::from_secs(60).max(Duration::from_secs_f64(bytes as f64 / 5e6));
        let held = wait_until_holding(stopped, keys, deadline)?;
        let secs = (held >= keys as i64).then(|| resumed.elapsed().as_secs_f64());
        let elsewhere = cpu.elsewhere(&CpuSnapshot::take(&pids));
        let after = stopped.metrics()?;
        let counted = |series: &str| (after.sample(series) - before.sample(series)).max(0.0) as u64;
        Ok(RepairRound {
            load_secs: load.took.as_secs_f64(),
            load_retried: load.retried,
            stopped_secs,
            status,
            queued,
            hinted,
            secs,
            held,
            by_anti_entropy: counted(REPAIRED),
            replicate_calls: counted(REPLICATE),
            absorb_calls: counted(ABSORB),
            elsewhere,
        })
    }
}

/// `member`'s status in `node`'s member table, e.g. `alive`.
fn status_of(node: &NodeProc, member: &NodeAddr) -> Result<String> {
    let table = LibConn::open(&node.addr, &ClientOptions::default())?.member_table()?;
    Ok(table
        .iter()
        .find(|row| &row.addr == member)
        .map_or("not a member".into(), |row| {
            format!("{:?}", row.status).to_lowercase()
        }))
}

/// Waits until every one of `nodes` counts `member` dead.
fn wait_until_dead(nodes: &[&NodeProc], member: &NodeAddr) -> Result<()> {
    let deadline = Instant::now() + DEATH_TIMEOUT;
    let mut conns = connect_all(nodes.iter().copied())?;
    loop {
        let mut dead = true;
        for conn in &mut conns {
            let table = conn.member_table()?;
            dead &= table
                .iter()
                .any(|row| &row.addr == member && row.status == MemberStatus::Dead);
        }
        if dead {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(failed(format!(
                "{member} was stopped, but its peers had not declared it dead after {DEATH_TIMEOUT:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Polls `node`'s `stats` until it holds `keys` keys, at most until
/// `deadline`; returns the keys it held last. A call that fails (the node
/// just resumed may drop the connection) is tried again on a new one.
fn wait_until_holding(node: &NodeProc, keys: usize, deadline: Instant) -> Result<i64> {
    let options = ClientOptions::default();
    let mut conn = None;
    let mut held = 0;
    loop {
        if conn.is_none() {
            conn = LibConn::open(&node.addr, &options).ok();
        }
        if let Some(open) = conn.as_mut() {
            match open.stats() {
                Ok(stats) => held = stats.get("keys").copied().unwrap_or(0),
                Err(_) => conn = None,
            }
        }
        if held >= keys as i64 || Instant::now() > deadline {
            return Ok(held);
        }
        std::thread::sleep(POLL);
    }
}
