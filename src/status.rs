//! The ring at a glance: [`RingStatus`], every member of one node's table
//! with its own counters, and whether the ring is healthy. Gathered through
//! the public [`Client`] only (`members` at the entry node, then `stats` at
//! each member); what `storestat` prints.
//!
//! Healthy means nothing is left to do: every member in the table serves
//! (none suspect, dead, leaving or unreachable), none is joining or catching
//! up, no replication, hint or handoff is pending, every node sees the same
//! members, and there are at least as many serving members as the replicas
//! each key should have. A member that left on purpose does not count
//! against it; one that died does, until it comes back (the ring keeps
//! counting it toward quorums, since it may return with its data).

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::addr::NodeAddr;
use crate::client::{Client, ClientOptions};
use crate::error::Result;
use crate::membership::MemberState;

/// How often [`RingStatus::wait_healthy`] looks again.
const POLL: Duration = Duration::from_millis(250);

/// One member as the entry node's table has it, with the counters it
/// reports itself (`None` when it was not asked, being gone, or did not
/// answer).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeStatus {
    /// Its address, `host:port`.
    pub addr: String,
    /// `alive`, `suspect`, `leaving`, `dead` or `left`, in the entry's view.
    pub status: &'static str,
    /// Its incarnation (start time in milliseconds, raised by refutations).
    pub incarnation: i64,
    /// Whether it answered `stats`.
    pub reachable: bool,
    /// Why it did not, if it was asked.
    pub error: Option<String>,
    /// Its share of the ring in its own view, parts per million.
    pub share_ppm: Option<i64>,
    /// Its weight on the ring (`--weight`), as the entry's table has it.
    pub weight: u32,
    /// Its cap on key and value bytes (`--max-memory`); `None` when it has
    /// none (or did not answer).
    pub max_memory: Option<i64>,
    /// Keys holding a value.
    pub keys: Option<i64>,
    /// Their key and value bytes.
    pub bytes: Option<i64>,
    /// Erased keys it keeps tombstones for.
    pub tombstones: Option<i64>,
    /// Writes queued for other replicas.
    pub replication_pending: Option<i64>,
    /// Keys kept for replicas that could not be reached.
    pub hints: Option<i64>,
    /// Keys it holds but no longer replicates, not yet handed over.
    pub handoff_pending: Option<i64>,
    /// Whether it is catching up (its copies may be stale).
    pub syncing: Option<bool>,
    /// Whether it has joined and serves reads and writes.
    pub ready: Option<bool>,
    /// The members it routes to, in its own view.
    pub members: Option<i64>,
    /// Copies it keeps of each key (its `--replicas`).
    pub replicas: Option<i64>,
}

/// Sums over the members that answered.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Rows in the table (departed members included).
    pub members: usize,
    /// Members serving (alive or suspect) and answering.
    pub serving: usize,
    /// Shares of the ring, parts per million (about 1,000,000).
    pub share_ppm: i64,
    /// Keys, every copy counted: with N replicas, N times the keys stored.
    pub keys: i64,
    /// Bytes, every copy counted.
    pub bytes: i64,
    /// Tombstones, every copy counted.
    pub tombstones: i64,
    /// Writes queued for replicas.
    pub replication_pending: i64,
    /// Hinted keys.
    pub hints: i64,
    /// Keys waiting to be handed over.
    pub handoff_pending: i64,
    /// Members catching up.
    pub syncing: usize,
}

/// The ring as one node sees it, and each member's own counters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RingStatus {
    /// The node whose table this is.
    pub entry: String,
    /// Copies each key should have (the largest `--replicas` reported).
    pub replicas: i64,
    /// Every row of the entry's table, sorted by address.
    pub nodes: Vec<NodeStatus>,
    /// Sums over the members that answered.
    pub total: Totals,
    /// Whether nothing is wrong or pending (see the module doc).
    pub healthy: bool,
    /// What is wrong or pending, one sentence each; empty when healthy.
    pub problems: Vec<String>,
}

impl NodeStatus {
    fn new(row: &MemberState, stats: std::result::Result<BTreeMap<String, i64>, String>) -> Self {
        let (stats, error) = match stats {
            Ok(stats) => (Some(stats), None),
            Err(error) => (None, Some(error)),
        };
        let stat = |name: &str| stats.as_ref().and_then(|s| s.get(name).copied());
        let flag = |name: &str| stat(name).map(|v| v != 0);
        NodeStatus {
            addr: row.addr.to_string(),
            status: row.status.name(),
            incarnation: row.incarnation,
            reachable: stats.is_some(),
            error: error.filter(|_| row.status.is_up()),
            share_ppm: stat("share_ppm"),
            weight: row.weight,
            max_memory: stat("max_memory_bytes").filter(|&cap| cap > 0),
            keys: stat("keys"),
            bytes: stat("bytes"),
            tombstones: stat("tombstones"),
            replication_pending: stat("replication_pending"),
            hints: stat("hints"),
            handoff_pending: stat("handoff_pending"),
            syncing: flag("syncing"),
            ready: flag("ready"),
            members: stat("members"),
            replicas: stat("replicas_configured"),
        }
    }
}

impl RingStatus {
    /// Reads the member table of `client`'s entry node, then every member's
    /// counters (members that died or left are not asked). Fails only when
    /// the entry node cannot be asked for its table; a member that does not
    /// answer is reported as unreachable.
    pub fn gather(client: &mut Client) -> Result<RingStatus> {
        let entry = client.entry().to_string();
        let mut table = client.member_table()?;
        table.sort_by(|a, b| a.addr.cmp(&b.addr));
        let nodes = table
            .iter()
            .map(|row| {
                let stats = if row.status.is_up() {
                    client.stats_of(&row.addr).map_err(|e| e.to_string())
                } else {
                    Err(format!("{} {}", row.addr, row.status.name()))
                };
                NodeStatus::new(row, stats)
            })
            .collect();
        Ok(RingStatus::assess(entry, nodes))
    }

    /// Polls (every 250 ms) until the ring is healthy or `wait` passed, and
    /// returns the last status. The entry node not answering is retried
    /// until the deadline too (a ring still starting), then is the error.
    pub fn wait_healthy(
        peer: Option<NodeAddr>,
        options: ClientOptions,
        wait: Duration,
    ) -> Result<RingStatus> {
        // A wait too long for the clock is as good as forever.
        let deadline = Instant::now()
            .checked_add(wait)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1 << 32));
        let mut client: Option<Client> = None;
        loop {
            let gathered = match client.as_mut() {
                Some(client) => RingStatus::gather(client),
                None => Client::open(peer.clone(), options.clone()).and_then(|mut opened| {
                    let status = RingStatus::gather(&mut opened);
                    client = Some(opened);
                    status
                }),
            };
            match gathered {
                Ok(status) if status.healthy || Instant::now() >= deadline => return Ok(status),
                Ok(_) => {}
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(e) => {
                    log::debug!("{e}; retrying");
                    client = None;
                }
            }
            std::thread::sleep(POLL.min(deadline.saturating_duration_since(Instant::now())));
        }
    }

    /// Totals and health of these rows of `entry`'s table.
    fn assess(entry: String, nodes: Vec<NodeStatus>) -> RingStatus {
        let mut total = Totals {
            members: nodes.len(),
            ..Totals::default()
        };
        let mut problems = Vec::new();
        let replicas = nodes.iter().filter_map(|n| n.replicas).max().unwrap_or(0);
        let serves = |n: &NodeStatus| matches!(n.status, "alive" | "suspect");
        for node in &nodes {
            let addr = &node.addr;
            match node.status {
                "suspect" => problems.push(format!("{addr} is suspect: it did not answer probes")),
                "dead" => problems.push(format!(
                    "{addr} is dead: it stopped without leaving; the ring counts it toward \
                     quorums until it comes back (restart it on the same address)"
                )),
                "leaving" => problems.push(format!("{addr} is leaving: handing its keys over")),
                _ => {}
            }
            if let Some(error) = &node.error {
                problems.push(format!("{addr} is unreachable: {error}"));
            }
            if !node.reachable {
                continue;
            }
            if serves(node) {
                total.serving += 1;
            }
            let count = |value: Option<i64>| value.unwrap_or(0);
            total.share_ppm += count(node.share_ppm);
            total.keys += count(node.keys);
            total.bytes += count(node.bytes);
            total.tombstones += count(node.tombstones);
            total.replication_pending += count(node.replication_pending);
            total.hints += count(node.hints);
            total.handoff_pending += count(node.handoff_pending);
            if node.syncing == Some(true) {
                total.syncing += 1;
                problems.push(format!("{addr} is catching up with its replicas"));
            }
            if node.ready == Some(false) {
                problems.push(format!("{addr} is still joining"));
            }
            if let (Some(cap), Some(bytes)) = (node.max_memory, node.bytes)
                && bytes >= cap
            {
                problems.push(format!(
                    "{addr} is full: it holds {bytes} bytes, its --max-memory is {cap}; \
                     writes it would store fail (erase keys, raise the cap or add nodes)"
                ));
            }
            for (what, value) in [
                ("writes queued for other replicas", node.replication_pending),
                ("hinted keys for replicas it could not reach", node.hints),
                ("keys to hand over", node.handoff_pending),
            ] {
                if let Some(n) = value.filter(|&n| n > 0) {
                    problems.push(format!("{addr} has {n} {what}"));
                }
            }
        }
        // Everyone should route to the same members the entry's table serves.
        let serving = nodes.iter().filter(|n| serves(n)).count() as i64;
        for node in nodes.iter().filter(|n| serves(n)) {
            if let Some(members) = node.members.filter(|&m| m != serving) {
                problems.push(format!(
                    "{} routes to {members} members, {entry} to {serving}: views differ",
                    node.addr
                ));
            }
        }
        if (total.serving as i64) < replicas {
            problems.push(format!(
                "only {} serving members for {replicas} replicas: keys have fewer copies than configured",
                total.serving
            ));
        }
        RingStatus {
            entry,
            replicas,
            healthy: problems.is_empty(),
            problems,
            nodes,
            total,
        }
    }
}

/// `n` bytes for people: B, KiB, MiB, GiB, TiB.
fn human_bytes(n: i64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

fn percent(ppm: i64) -> String {
    format!("{:.1}%", ppm as f64 / 10_000.0)
}

impl fmt::Display for RingStatus {
    /// A table, one member a line and a total line, then the verdict.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header = [
            "MEMBER",
            "STATUS",
            "INCARNATION",
            "SHARE",
            "WEIGHT",
            "KEYS",
            "BYTES",
            "BACKLOG",
            "HINTS",
            "HANDOFF",
            "SYNCING",
        ];
        let shown = |value: Option<i64>| value.map_or_else(|| "-".to_string(), |v| v.to_string());
        let mut rows: Vec<Vec<String>> = vec![header.iter().map(ToString::to_string).collect()];
        for node in &self.nodes {
            let status = if node.error.is_some() {
                format!("{} (unreachable)", node.status)
            } else {
                node.status.to_string()
            };
            rows.push(vec![
                node.addr.clone(),
                status,
                node.incarnation.to_string(),
                node.share_ppm.map_or_else(|| "-".into(), percent),
                node.weight.to_string(),
                shown(node.keys),
                match (node.bytes, node.max_memory) {
                    (Some(bytes), Some(cap)) => {
                        format!("{} of {}", human_bytes(bytes), human_bytes(cap))
                    }
                    (bytes, _) => bytes.map_or_else(|| "-".into(), human_bytes),
                },
                shown(node.replication_pending),
                shown(node.hints),
                shown(node.handoff_pending),
                node.syncing
                    .map_or("-", |s| if s { "yes" } else { "no" })
                    .to_string(),
            ]);
        }
        let t = &self.total;
        rows.push(vec![
            "TOTAL".into(),
            format!("{}/{} serving", t.serving, t.members),
            String::new(),
            percent(t.share_ppm),
            String::new(),
            t.keys.to_string(),
            human_bytes(t.bytes),
            t.replication_pending.to_string(),
            t.hints.to_string(),
            t.handoff_pending.to_string(),
            t.syncing.to_string(),
        ]);
        let widths: Vec<usize> = (0..header.len())
            .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
            .collect();
        for row in &rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                // Text left, numbers right.
                if c < 3 {
                    line.push_str(&format!("{cell:<w$}  ", w = widths[c]));
                } else {
                    line.push_str(&format!("{cell:>w$}  ", w = widths[c]));
                }
            }
            writeln!(f, "{}", line.trim_end())?;
        }
        if self.healthy {
            write!(
                f,
                "healthy: {} members serving, {} replicas per key",
                t.serving, self.replicas
            )
        } else {
            writeln!(f, "not healthy:")?;
            for (i, problem) in self.problems.iter().enumerate() {
                if i > 0 {
                    writeln!(f)?;
                }
                write!(f, "- {problem}")?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::Status;

    fn row(port: u16, status: Status) -> MemberState {
        MemberState {
            addr: NodeAddr::new("127.0.0.1", port),
            incarnation: 1_700_000_000_000 + i64::from(port),
            status,
            weight: 1,
        }
    }

    fn stats(keys: i64, extra: &[(&str, i64)]) -> BTreeMap<String, i64> {
        let mut stats: BTreeMap<String, i64> = [
            ("keys", keys),
            ("bytes", keys * 10),
            ("tombstones", 0),
            ("share_ppm", 333_333),
            ("replication_pending", 0),
            ("hints", 0),
            ("handoff_pending", 0),
            ("syncing", 0),
            ("ready", 1),
            ("members", 3),
            ("replicas_configured", 3),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        for (k, v) in extra {
            stats.insert(k.to_string(), *v);
        }
        stats
    }

    fn healthy_nodes() -> Vec<NodeStatus> {
        (1..=3)
            .map(|p| NodeStatus::new(&row(p, Status::Alive), Ok(stats(100, &[]))))
            .collect()
    }

    #[test]
    fn three_serving_members_with_nothing_pending_are_healthy() {
        let status = RingStatus::assess("127.0.0.1:1".into(), healthy_nodes());
        assert!(status.healthy, "{:?}", status.problems);
        assert_eq!(status.total.keys, 300);
        assert_eq!(status.total.serving, 3);
        assert_eq!(status.replicas, 3);
        let text = status.to_string();
        assert!(text.contains("healthy: 3 members serving"), "{text}");
        assert_eq!(text.lines().count(), 1 + 3 + 1 + 1, "{text}");
    }

    #[test]
    fn weights_and_caps_are_shown_and_a_full_member_is_a_problem() {
        let mut nodes = healthy_nodes();
        let heavy = MemberState {
            weight: 2,
            ..row(2, Status::Alive)
        };
        nodes[1] = NodeStatus::new(&heavy, Ok(stats(100, &[("max_memory_bytes", 4096)])));
        nodes[2] = NodeStatus::new(
            &row(3, Status::Alive),
            Ok(stats(100, &[("max_memory_bytes", 1000)])),
        );
        let status = RingStatus::assess("127.0.0.1:1".into(), nodes);
        assert_eq!(status.nodes[1].weight, 2);
        assert_eq!(status.nodes[0].max_memory, None);
        assert_eq!(status.nodes[1].max_memory, Some(4096));
        assert_eq!(
            status.problems,
            vec![
                "127.0.0.1:3 is full: it holds 1000 bytes, its --max-memory is 1000; writes it \
                 would store fail (erase keys, raise the cap or add nodes)"
                    .to_string()
            ]
        );
        let text = status.to_string();
        assert!(
            text.lines().next().unwrap().contains("SHARE  WEIGHT"),
            "{text}"
        );
        let line = |port: &str| text.lines().find(|l| l.contains(port)).unwrap().to_string();
        assert!(line("127.0.0.1:2 ").contains("1000 B of 4.0 KiB"), "{text}");
        assert!(line("127.0.0.1:1 ").contains(" 1000 B"), "{text}");
        assert!(line("127.0.0.1:2 ").contains("33.3%       2"), "{text}");
    }

    #[test]
    fn a_dead_member_a_backlog_or_too_few_members_is_not_healthy() {
        let mut nodes = healthy_nodes();
        nodes[2] = NodeStatus::new(&row(3, Status::Dead), Err("gone".into()));
        nodes[1] = NodeStatus::new(&row(2, Status::Alive), Ok(stats(100, &[("hints", 4)])));
        let status = RingStatus::assess("127.0.0.1:1".into(), nodes);
        assert!(!status.healthy);
        let problems = status.problems.join("\n");
        assert!(problems.contains("127.0.0.1:3 is dead"), "{problems}");
        assert!(
            problems.contains("127.0.0.1:2 has 4 hinted keys"),
            "{problems}"
        );
        assert!(
            problems.contains("only 2 serving members for 3 replicas"),
            "{problems}"
        );
        // The dead member was not asked, so no unreachable line for it.
        assert!(
            !problems.contains("127.0.0.1:3 is unreachable"),
            "{problems}"
        );
        assert!(status.to_string().contains("not healthy:"));
    }

    #[test]
    fn an_alive_member_that_does_not_answer_is_unreachable() {
        let mut nodes = healthy_nodes();
        nodes[0] = NodeStatus::new(&row(1, Status::Alive), Err("cannot reach it".into()));
        let status = RingStatus::assess("127.0.0.1:2".into(), nodes);
        assert!(!status.healthy);
        assert!(status.problems[0].contains("127.0.0.1:1 is unreachable"));
        assert!(status.to_string().contains("alive (unreachable)"));
    }

    #[test]
    fn a_member_that_left_on_purpose_does_not_count_against_the_ring() {
        let mut nodes = healthy_nodes();
        nodes.push(NodeStatus::new(&row(4, Status::Left), Err("left".into())));
        let status = RingStatus::assess("127.0.0.1:1".into(), nodes);
        assert!(status.healthy, "{:?}", status.problems);
        assert_eq!((status.total.members, status.total.serving), (4, 3));
    }

    #[test]
    fn bytes_are_shown_in_binary_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}
