//! Where requests go: the servers a client connects to, and which one gets
//! each key (everything to one server, or each key straight to its owner: a
//! ring member for our nodes, a slot's master for Redis Cluster, see
//! [`crate::cluster`]).

use std::net::SocketAddr;
use std::sync::Arc;

use thrifty_p2p::ClientOptions;
use thrifty_p2p::{NodeAddr, Result};

use crate::engine::Connection;
use crate::wire::key;

/// The servers a client connects to, and which one gets each key.
#[derive(Clone)]
pub struct Target {
    nodes: Vec<SocketAddr>,
    /// Index into `nodes` of each key's owner; `None`: everything to `nodes[0]`.
    owners: Option<Arc<[u8]>>,
}

impl Target {
    pub fn single(node: SocketAddr) -> Target {
        Target {
            nodes: vec![node],
            owners: None,
        }
    }

    /// Key `i` to `nodes[owners[i]]`.
    pub fn routed(nodes: Vec<SocketAddr>, owners: Vec<u8>) -> Target {
        Target {
            nodes,
            owners: Some(owners.into()),
        }
    }

    /// A ring-aware client of the ring `seed` belongs to: the members come from
    /// `get_all`, and `Ring` says who owns each of keys `0..keys` (computed once
    /// up front, like the prebuilt keys, to keep the client cheap).
    pub fn ring_aware(seed: &NodeAddr, keys: usize) -> Result<Target> {
        let mut conn = thrifty_p2p::wire::Conn::open(seed, &ClientOptions::default())?;
        let ring = conn.ring()?;
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
        Ok(Target::routed(nodes, owners))
    }

    pub fn conn_for(&self, key: usize) -> usize {
        self.owners
            .as_ref()
            .map_or(0, |owners| usize::from(owners[key]))
    }

    /// One connection to each server.
    pub async fn connect<C: Connection>(&self) -> Result<Vec<C>> {
        let mut connections = Vec::with_capacity(self.nodes.len());
        for &node in &self.nodes {
            connections.push(C::open(node).await?);
        }
        Ok(connections)
    }
}
