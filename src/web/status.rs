//! `/status.json`: the serving node's view of the ring for the status page.
//! Its member table (address, status, incarnation), each member's share of
//! the routing ring, the ring cut into sectors for drawing, and every
//! member's `stats`, asked over Thrift (this node's own read directly).
//!
//! A member that does not answer is shown as unreachable, with the reason,
//! rather than failing the page: a status page is most wanted when a member
//! is in trouble. Each call runs on tokio's blocking pool (the public
//! [`Client`] is synchronous) with short timeouts, all members at once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::addr::NodeAddr;
use crate::auth::Role;
use crate::client::{Client, ClientOptions};
use crate::membership::{MemberState, Status};
use crate::node::Node;
use crate::ring::Ring;

/// Sectors the circle is drawn in: one a degree. Each member has 4096
/// points, far more arcs than a page can show; a sector takes the colour of
/// the member owning most of it.
pub(crate) const SECTORS: usize = 360;

/// How long a member's `stats` may take before it shows as unreachable:
/// well within the page's 2-second refresh.
const STATS_TIMEOUT: Duration = Duration::from_millis(800);

/// The whole report.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    /// The serving node's name on the ring.
    pub node: String,
    /// Its ring id (hex), the same on every node that places keys alike.
    pub ring_id: String,
    /// Every row of its member table, by address.
    pub members: Vec<MemberRow>,
    /// For each of [`SECTORS`] sectors from position 0 clockwise, the index
    /// in `members` of the member owning most of it on the drawn ring
    /// (every member not gone on purpose, see [`drawn_ring`]); empty when
    /// there is none.
    pub sectors: Vec<usize>,
    /// Each stat summed over the members that answered.
    pub totals: BTreeMap<String, i64>,
    /// Members whose stats came back.
    pub reachable: usize,
}

/// One member, as the serving node sees it.
#[derive(Debug, Serialize)]
pub(crate) struct MemberRow {
    /// Its address.
    pub addr: String,
    /// `alive`, `suspect`, `leaving`, `dead` or `left`.
    pub status: &'static str,
    /// Its incarnation (start time in milliseconds).
    pub incarnation: i64,
    /// Whether it is the serving node.
    pub me: bool,
    /// Its share of the routing ring (0 for a member that does not serve).
    pub share: f64,
    /// Its `stats`, if it answered.
    pub stats: Option<BTreeMap<String, i64>>,
    /// Why there are no stats.
    pub error: Option<String>,
}

/// The ring drawn on the page: every member not gone on purpose, so a dead
/// member's arcs stay visible (red) while its peers take them over, and a
/// leaving member's (blue) while it hands its keys over. The routing ring
/// holds only serving members; their `share` is taken from it.
pub(crate) fn drawn_ring(table: &[MemberState]) -> Ring<NodeAddr> {
    Ring::weighted(
        table
            .iter()
            .filter(|row| row.status != Status::Left)
            .map(|row| (row.addr.clone(), row.weight)),
    )
}

/// For each of `count` equal sectors of the circle, from position 0
/// clockwise, the member (an index into `ring.members()`) owning the most of
/// it; ties go to the smaller index. Empty for an empty ring.
pub(crate) fn sectors<M: Clone + Ord + std::fmt::Display>(
    ring: &Ring<M>,
    count: usize,
) -> Vec<usize> {
    let arcs = ring.arcs();
    if arcs.is_empty() || count == 0 {
        return Vec::new();
    }
    let circle = 1u128 << 64;
    let mut owners = Vec::with_capacity(count);
    // The arcs are contiguous from 0: walk them once, sector by sector.
    let mut arc = 0;
    let mut at = 0u128;
    let mut weights: Vec<(usize, u128)> = Vec::new();
    for sector in 0..count {
        let end = circle * (sector as u128 + 1) / count as u128;
        weights.clear();
        while at < end {
            let (start, length, member) = arcs[arc];
            let arc_end = u128::from(start) + length;
            let upto = arc_end.min(end);
            match weights.iter_mut().find(|(m, _)| *m == member) {
                Some((_, weight)) => *weight += upto - at,
                None => weights.push((member, upto - at)),
            }
            at = upto;
            if at == arc_end {
                arc += 1;
            }
        }
        let best = weights
            .iter()
            .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
            .map_or(0, |&(member, _)| member);
        owners.push(best);
    }
    owners
}

/// Builds the report: the node's own view now, then every other member that
/// is up asked for its `stats` at once.
pub(crate) async fn report(node: &Arc<Node>) -> Report {
    let (mut table, routing) = node.table_and_ring();
    table.sort_by(|a, b| a.addr.cmp(&b.addr));
    let shares: BTreeMap<&NodeAddr, f64> = routing.members().iter().zip(routing.shares()).collect();
    // Usually every member serves: the routing ring is the one to draw, and
    // its 4096 points a member need not be hashed again.
    let drawn = if table.iter().all(|row| row.status.serves()) {
        routing.clone()
    } else {
        Arc::new(drawn_ring(&table))
    };
    let row_of: BTreeMap<&NodeAddr, usize> = table
        .iter()
        .enumerate()
        .map(|(i, row)| (&row.addr, i))
        .collect();
    // Every member of either ring is a row of the table read with it.
    let sectors = sectors(&drawn, SECTORS)
        .into_iter()
        .map(|member| row_of.get(&drawn.members()[member]).copied().unwrap_or(0))
        .collect();

    // Members asked for their counters are asked as a member would: with
    // the cluster secret if the ring has one (else the client secret).
    let secrets = &node.config().secrets;
    let secret = match (&secrets.cluster, &secrets.client) {
        (Some(cluster), _) => Some((Role::Cluster, cluster.clone())),
        (None, Some(client)) => Some((Role::Client, client.clone())),
        (None, None) => None,
    };
    let options = ClientOptions {
        secret,
        tls: node.config().tls.clone(),
        connect_timeout: STATS_TIMEOUT.min(node.config().connect_timeout),
        answer_timeout: STATS_TIMEOUT,
        rpc_timeout: STATS_TIMEOUT,
        ring_aware: false,
        ..ClientOptions::default()
    };
    let asks = table.iter().map(|row| {
        let addr = row.addr.clone();
        let me = addr == *node.me();
        let status = row.status;
        let node = node.clone();
        let options = options.clone();
        async move {
            if me {
                return Ok(node.stats());
            }
            if !status.is_up() {
                return Err(match status {
                    Status::Dead => "declared dead: not asked".to_string(),
                    _ => "left the ring".to_string(),
                });
            }
            tokio::task::spawn_blocking(move || {
                Client::with_options(addr, options).and_then(|mut client| client.stats())
            })
            .await
            .map_err(|e| format!("stats call failed: {e}"))?
            .map_err(|e| format!("unreachable: {e}"))
        }
    });
    let answers = futures::future::join_all(asks).await;

    let mut totals = BTreeMap::new();
    let mut reachable = 0;
    let members = table
        .iter()
        .zip(answers)
        .map(|(row, answer)| {
            let (stats, error) = match answer {
                Ok(stats) => {
                    reachable += 1;
                    for (name, value) in &stats {
                        *totals.entry(name.clone()).or_insert(0i64) += value;
                    }
                    (Some(stats), None)
                }
                Err(error) => (None, Some(error)),
            };
            MemberRow {
                addr: row.addr.to_string(),
                status: row.status.name(),
                incarnation: row.incarnation,
                me: row.addr == *node.me(),
                share: shares.get(&row.addr).copied().unwrap_or(0.0),
                stats,
                error,
            }
        })
        .collect();
    Report {
        node: node.me().to_string(),
        ring_id: format!("{:016x}", node.ring_id()),
        members,
        sectors,
        totals,
        reachable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addresses(count: usize) -> Vec<NodeAddr> {
        (0..count)
            .map(|i| NodeAddr::new("127.0.0.1", 9900 + i as u16))
            .collect()
    }

    #[test]
    fn every_sector_has_an_owner_and_they_add_up_to_the_circle() {
        let ring = Ring::new(addresses(3));
        let owners = sectors(&ring, SECTORS);
        assert_eq!(owners.len(), SECTORS);
        let mut counts = [0usize; 3];
        for owner in owners {
            counts[owner] += 1;
        }
        assert_eq!(counts.iter().sum::<usize>(), 360);
    }

    #[test]
    fn a_one_member_ring_owns_every_sector() {
        let ring = Ring::new(addresses(1));
        assert_eq!(sectors(&ring, SECTORS), vec![0; SECTORS]);
        assert!(sectors(&Ring::<NodeAddr>::new([]), SECTORS).is_empty());
    }

    #[test]
    fn sector_counts_follow_each_members_share_of_the_ring() {
        for count in [2, 3, 5] {
            let ring = Ring::new(addresses(count));
            let mut sectors_of = vec![0usize; count];
            for owner in sectors(&ring, SECTORS) {
                sectors_of[owner] += 1;
            }
            for (sectors, share) in sectors_of.iter().zip(ring.shares()) {
                let drawn = *sectors as f64 / SECTORS as f64;
                assert!(
                    (drawn - share).abs() < 0.07,
                    "{count} members: {drawn:.3} of the sectors for a share of {share:.3}"
                );
            }
        }
    }

    #[test]
    fn a_sector_goes_to_the_member_owning_most_of_it() {
        // Two points each: big, coarse arcs, so a sector's majority owner
        // is the owner of its middle (away from the few arc boundaries).
        let ring = Ring::with_points(addresses(2), 2);
        let owners = sectors(&ring, SECTORS);
        let arcs = ring.arcs();
        let circle = 1u128 << 64;
        for (sector, owner) in owners.iter().enumerate() {
            let start = circle * sector as u128 / SECTORS as u128;
            let end = circle * (sector as u128 + 1) / SECTORS as u128;
            let inside = arcs
                .iter()
                .filter(|(s, l, _)| u128::from(*s) < end && u128::from(*s) + l > start)
                .count();
            if inside == 1 {
                let middle = ((start + end) / 2) as u64;
                let owning = arcs
                    .iter()
                    .find(|(s, l, _)| *s <= middle && u128::from(middle) < u128::from(*s) + l)
                    .unwrap();
                assert_eq!(*owner, owning.2, "sector {sector}");
            }
        }
    }

    #[test]
    fn the_drawn_ring_keeps_dead_and_leaving_members_but_not_those_that_left() {
        let addrs = addresses(4);
        let row = |i: usize, status| MemberState {
            addr: addrs[i].clone(),
            incarnation: 1,
            status,
            weight: 1,
        };
        let table = [
            row(0, Status::Alive),
            row(1, Status::Dead),
            row(2, Status::Leaving),
            row(3, Status::Left),
        ];
        assert_eq!(drawn_ring(&table).members(), &addrs[..3]);
    }
}
