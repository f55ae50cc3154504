//! `Handler`: the generated Thrift service traits, implemented by calling `Node`.
//! Only conversion and error mapping live here; decisions are the node's.

use std::collections::BTreeMap;
use std::sync::Arc;

use thrift::{ApplicationError, ApplicationErrorKind};

use crate::addr::NodeAddr;
use crate::convert;
use crate::error::Error;
use crate::idl::diststore::{Entry, Lookup, StoreError, StoreSyncHandler};
use crate::idl::locator::{BaseSyncHandler, Location, LocatorSyncHandler, Member};
use crate::node::Node;

/// The most derived service a node implements.
pub const SERVICE_TYPE: &str = "diststore.Store";

/// Every service a node implements, base first.
pub const SERVICE_TYPES: [&str; 3] = ["locator.Base", "locator.Locator", "diststore.Store"];

/// Methods declared `oneway` in the IDL. The server never answers them, even
/// when the caller marked the message as a plain call.
pub const ONEWAY_METHODS: [&str; 6] = ["debug", "die", "join", "remove", "add", "put"];

/// Methods only nodes call on each other (and `ping`, which failure detection
/// uses): what an isolated node drops, to simulate a partition.
pub const PEER_METHODS: [&str; 13] = [
    "ping",
    "enter",
    "gossip",
    "probe",
    "join",
    "add",
    "remove",
    "relay_fetch",
    "relay_store",
    "relay_erase",
    "peek",
    "diff_buckets",
    "reconcile",
];

/// Whether a method is node-to-node traffic (`absorb` included).
pub fn is_peer_method(name: &str) -> bool {
    name == "absorb" || PEER_METHODS.contains(&name)
}

/// Serves one connection's calls.
#[derive(Clone)]
pub struct Handler {
    node: Arc<Node>,
}

impl Handler {
    /// A handler for `node`.
    pub fn new(node: Arc<Node>) -> Self {
        Handler { node }
    }
}

/// A library error as the `StoreError` exception of the new methods.
fn store_error(error: Error) -> thrift::Error {
    thrift::Error::User(Box::new(StoreError::new(error.to_string())))
}

/// A library error as a Thrift application error, for the 2009 methods, which
/// declare no exceptions.
fn app_error(error: Error) -> thrift::Error {
    thrift::Error::Application(ApplicationError::new(
        ApplicationErrorKind::InternalError,
        error.to_string(),
    ))
}

fn bad_location(location: &Location) -> Option<NodeAddr> {
    let addr = convert::addr(location);
    if addr.is_none() {
        log::warn!("ignoring a membership call with an empty location: {location:?}");
    }
    addr
}

impl BaseSyncHandler for Handler {
    fn handle_ping(&self) -> thrift::Result<()> {
        Ok(())
    }

    fn handle_service_type(&self) -> thrift::Result<String> {
        Ok(SERVICE_TYPE.to_string())
    }

    fn handle_service_types(&self) -> thrift::Result<Vec<String>> {
        Ok(SERVICE_TYPES.iter().map(ToString::to_string).collect())
    }

    fn handle_debug(&self) -> thrift::Result<()> {
        self.node.log_debug();
        Ok(())
    }

    fn handle_die(&self) -> thrift::Result<()> {
        log::info!("asked to die: leaving the ring");
        self.node.request_stop();
        Ok(())
    }
}

impl LocatorSyncHandler for Handler {
    fn handle_join(&self, location: Location) -> thrift::Result<()> {
        if let Some(addr) = bad_location(&location) {
            self.node.admit_legacy(&addr);
        }
        Ok(())
    }

    fn handle_remove(&self, location: Location, _authorities: Vec<Location>) -> thrift::Result<()> {
        // The 2009 program passed news on to peers not in `authorities`; our
        // nodes spread it to every member themselves.
        if let Some(addr) = bad_location(&location) {
            if addr == *self.node.me() {
                log::warn!("a peer says we were removed; gossip will refute it");
            }
            self.node.declare_dead(&addr);
        }
        Ok(())
    }

    fn handle_add(&self, location: Location, _authorities: Vec<Location>) -> thrift::Result<()> {
        if let Some(addr) = bad_location(&location) {
            self.node.admit_legacy(&addr);
        }
        Ok(())
    }

    fn handle_get_all(&self) -> thrift::Result<Vec<Location>> {
        Ok(self.node.members().iter().map(convert::location).collect())
    }

    fn handle_get_node(&self, key: String) -> thrift::Result<Location> {
        self.handle_locate(key.into_bytes())
    }

    fn handle_enter(&self, member: Member) -> thrift::Result<Vec<Member>> {
        Ok(self.node.enter(&member))
    }

    fn handle_gossip(&self, members: Vec<Member>) -> thrift::Result<Vec<Member>> {
        Ok(self.node.gossip(&members))
    }

    fn handle_locate(&self, key: Vec<u8>) -> thrift::Result<Location> {
        Ok(self
            .node
            .owner(&key)
            .map_or_else(convert::no_location, |a| convert::location(&a)))
    }

    fn handle_replicas(&self, key: Vec<u8>, count: i32) -> thrift::Result<Vec<Location>> {
        let count = usize::try_from(count).unwrap_or(0);
        Ok(self
            .node
            .replicas(&key)
            .iter()
            .take(count)
            .map(convert::location)
            .collect())
    }

    fn handle_probe(&self, target: Location) -> thrift::Result<bool> {
        let Some(target) = convert::addr(&target) else {
            return Ok(false);
        };
        Ok(crate::node::blocking(|| self.node.ping(&target)))
    }

    fn handle_isolate(&self, on: bool) -> thrift::Result<()> {
        self.node.set_isolated(on).map_err(app_error)
    }
}

impl StoreSyncHandler for Handler {
    fn handle_get(&self, key: String) -> thrift::Result<String> {
        let value = self.node.fetch(key.as_bytes(), 0).map_err(app_error)?;
        // The 2009 interface answers "" for a missing key, and its values are text.
        Ok(value
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .unwrap_or_default())
    }

    fn handle_put(&self, key: String, value: String) -> thrift::Result<()> {
        // Oneway: nobody hears an error, so log it rather than return it.
        if let Err(e) = self
            .node
            .write(key.as_bytes(), Some(value.as_bytes()), 0, None)
        {
            log::warn!("put of a {}-byte value failed: {e}", value.len());
        }
        Ok(())
    }

    fn handle_fetch(&self, key: Vec<u8>) -> thrift::Result<Lookup> {
        let value = self.node.fetch(&key, 0).map_err(store_error)?;
        Ok(Lookup::new(value))
    }

    fn handle_store(&self, key: Vec<u8>, value: Vec<u8>) -> thrift::Result<()> {
        self.node
            .write(&key, Some(&value), 0, None)
            .map_err(store_error)
    }

    fn handle_erase(&self, key: Vec<u8>) -> thrift::Result<()> {
        self.node.write(&key, None, 0, None).map_err(store_error)
    }

    fn handle_stats(&self) -> thrift::Result<BTreeMap<String, i64>> {
        Ok(self.node.stats())
    }

    fn handle_relay_fetch(&self, key: Vec<u8>, hops: i8) -> thrift::Result<Lookup> {
        let value = self.node.fetch(&key, hops).map_err(store_error)?;
        Ok(Lookup::new(value))
    }

    fn handle_relay_store(
        &self,
        key: Vec<u8>,
        value: Vec<u8>,
        hops: i8,
        expires: i64,
    ) -> thrift::Result<()> {
        self.node
            .write(&key, Some(&value), hops, Some(expires))
            .map_err(store_error)
    }

    fn handle_relay_erase(&self, key: Vec<u8>, hops: i8, expires: i64) -> thrift::Result<()> {
        self.node
            .write(&key, None, hops, Some(expires))
            .map_err(store_error)
    }

    fn handle_peek(&self, keys: Vec<Vec<u8>>) -> thrift::Result<Vec<Entry>> {
        self.node.peek(keys).map_err(store_error)
    }

    fn handle_diff_buckets(&self, caller: Location, digests: Vec<i64>) -> thrift::Result<Vec<i32>> {
        crate::node::blocking(|| self.node.diff_buckets(&caller, &digests)).map_err(store_error)
    }

    fn handle_reconcile(
        &self,
        caller: Location,
        buckets: Vec<i32>,
        entries: Vec<Entry>,
    ) -> thrift::Result<Vec<Entry>> {
        crate::node::blocking(|| self.node.reconcile(&caller, &buckets, entries))
            .map_err(store_error)
    }

    fn handle_absorb(&self, entries: Vec<Entry>) -> thrift::Result<()> {
        crate::node::blocking(|| self.node.absorb(entries))
            .map(|_| ())
            .map_err(store_error)
    }
}
