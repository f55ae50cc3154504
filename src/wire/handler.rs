//! `Handler`: the generated Thrift service traits, implemented by calling `Node`,
//! for every method but the hot ones (see [`super::codec`]). Only conversion
//! and error mapping live here; decisions are the node's.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;
use thrift::{ApplicationError, ApplicationErrorKind};

use super::convert;
use super::idl::diststore::{
    Entry, Fetched, Item, KeyPage, Lease, LeaseOp, Lookup, Outcome, PeerSyncHandler, Replica,
    StoreSyncHandler, ValueInfo, WriteOptions,
};
use super::idl::locator::{BaseSyncHandler, Location, LocatorSyncHandler, Member};
use crate::addr::NodeAddr;
use crate::auth::Session;
use crate::error::Error;
use crate::node::Node;

/// The most derived service a node implements.
pub const SERVICE_TYPE: &str = "diststore.Store";

/// Every service a node implements, base first.
pub const SERVICE_TYPES: [&str; 3] = ["locator.Base", "locator.Locator", "diststore.Store"];
// `diststore.Peer` is left out on purpose: the 2009 clients ask what a node
// serves them, and peers know what they talk to.

/// Methods declared `oneway` in the IDL. The server never answers them, even
/// when the caller marked the message as a plain call.
pub const ONEWAY_METHODS: [&str; 6] = ["debug", "die", "join", "remove", "add", "put"];

/// Methods only nodes call on each other (and `ping`, which failure detection
/// uses): what an isolated node drops, to simulate a partition.
pub const PEER_METHODS: [&str; 18] = [
    "ping",
    "heartbeat",
    "replica_read",
    "replicate",
    "enter",
    "gossip",
    "probe",
    "join",
    "add",
    "remove",
    "relay_fetch",
    "relay_store",
    "relay_erase",
    "relay_write_with",
    "relay_lease",
    "peek",
    "diff_buckets",
    "reconcile",
];

/// Whether a method is node-to-node traffic (`absorb` included).
pub fn is_peer_method(name: &str) -> bool {
    name == "absorb" || PEER_METHODS.contains(&name)
}

/// Serves one connection's calls that the generated processor decodes: every
/// method but the hot ones of [`super::codec`], which reach it only when their
/// message was not in the shape the codec takes.
pub struct Handler {
    node: Arc<Node>,
    /// What the connection proved (see `auth`); the server checks it before
    /// each call.
    session: Arc<Mutex<Session>>,
}

impl Handler {
    /// A handler for `node`, on a connection whose proofs go to `session`.
    pub fn new(node: Arc<Node>, session: Arc<Mutex<Session>>) -> Self {
        Handler { node, session }
    }
}

/// The answer to a hot method whose message the codec did not take (a field
/// of another type than the IDL's): it is refused, not guessed at.
fn malformed() -> Error {
    Error::refused_here("malformed request: a field's type differs from the IDL's")
}

/// A library error as the `StoreError` exception of the new methods.
fn store_error(error: Error) -> thrift::Error {
    thrift::Error::User(Box::new(convert::store_error(&error)))
}

/// A library error as a Thrift application error, for the 2009 methods, which
/// declare no exceptions.
fn app_error(error: Error) -> thrift::Error {
    thrift::Error::Application(ApplicationError::new(
        ApplicationErrorKind::InternalError,
        error.to_string(),
    ))
}

/// Runs one of the node's async operations to its end from the generated
/// (synchronous) processor. The large-value methods wait on other nodes
/// (their parts and manifests go through the routed, replicated read and
/// write paths), and they are neither frequent nor small enough to be worth
/// decoding by hand like the hot methods ([`super::codec`]); so the
/// processor's call hands its tokio worker over to the runtime's other tasks
/// (`block_in_place`) while this one waits. That needs the multi-threaded
/// runtime every node process runs on; anywhere else (a processor built for
/// a test or a fuzz target) the call is refused rather than panic.
fn wait<T>(operation: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| handle.block_on(operation))
        }
        _ => Err(Error::refused_here(
            "large-value methods are served only by a node process",
        )),
    }
}

/// The calling node named in an anti-entropy call.
fn caller_of(location: &Location) -> Result<NodeAddr, Error> {
    convert::addr(location).ok_or_else(|| Error::refused_here("the caller's location is empty"))
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
}

impl StoreSyncHandler for Handler {
    fn handle_get(&self, _key: String) -> thrift::Result<String> {
        Err(app_error(malformed()))
    }

    fn handle_put(&self, _key: String, _value: String) -> thrift::Result<()> {
        // Oneway: nobody hears an error, so log it rather than return it.
        log::warn!("put: {}", malformed());
        Ok(())
    }

    fn handle_fetch(&self, _key: Vec<u8>) -> thrift::Result<Lookup> {
        Err(store_error(malformed()))
    }

    fn handle_store(&self, _key: Vec<u8>, _value: Vec<u8>) -> thrift::Result<()> {
        Err(store_error(malformed()))
    }

    fn handle_erase(&self, _key: Vec<u8>) -> thrift::Result<()> {
        Err(store_error(malformed()))
    }

    fn handle_store_with(
        &self,
        key: Vec<u8>,
        value: Vec<u8>,
        options: WriteOptions,
    ) -> thrift::Result<()> {
        let options = convert::write_options_in(options);
        wait(self.node.store_with(&key, &value, &options)).map_err(store_error)
    }

    fn handle_append(
        &self,
        key: Vec<u8>,
        value: Vec<u8>,
        options: WriteOptions,
    ) -> thrift::Result<i64> {
        let options = convert::write_options_in(options);
        wait(self.node.append(&key, &value, &options))
            .map(|size| size as i64)
            .map_err(store_error)
    }

    fn handle_stats(&self) -> thrift::Result<BTreeMap<String, i64>> {
        Ok(self.node.stats())
    }

    fn handle_list_keys(
        &self,
        prefix: Vec<u8>,
        start: Vec<u8>,
        limit: i32,
    ) -> thrift::Result<KeyPage> {
        let listed = (self.node.list_keys(&prefix, &start, limit)).map_err(store_error)?;
        Ok(convert::key_page_out(listed))
    }

    fn handle_fetch_many(&self, keys: Vec<Vec<u8>>) -> thrift::Result<Vec<Fetched>> {
        let outcomes = wait(self.node.fetch_many(&keys)).map_err(store_error)?;
        Ok(outcomes
            .into_iter()
            .map(|outcome| match outcome {
                Ok(value) => Fetched::new(value, None),
                Err(e) => Fetched::new(None, convert::store_error(&e)),
            })
            .collect())
    }

    fn handle_store_many(&self, items: Vec<Item>) -> thrift::Result<Vec<Outcome>> {
        // A field left out is empty, as the generated code reads it.
        let items: Vec<(Vec<u8>, Vec<u8>)> = items
            .into_iter()
            .map(|item| (item.key.unwrap_or_default(), item.value.unwrap_or_default()))
            .collect();
        let outcomes = wait(self.node.store_many(&items)).map_err(store_error)?;
        Ok(outcomes
            .into_iter()
            .map(|outcome| Outcome::new(outcome.err().map(|e| convert::store_error(&e))))
            .collect())
    }

    fn handle_members(&self) -> thrift::Result<Vec<Member>> {
        Ok(self.node.table().iter().map(convert::member).collect())
    }

    fn handle_describe(&self, key: Vec<u8>) -> thrift::Result<ValueInfo> {
        let info = wait(self.node.describe(&key)).map_err(store_error)?;
        Ok(convert::value_info(&info))
    }

    fn handle_read_range(
        &self,
        key: Vec<u8>,
        offset: i64,
        length: i32,
        id: i64,
    ) -> thrift::Result<Vec<u8>> {
        wait(self.node.read_range(&key, offset, length, id)).map_err(store_error)
    }

    fn handle_begin_upload(&self, key: Vec<u8>) -> thrift::Result<i64> {
        self.node
            .begin_upload(&key)
            .map(|id| id as i64)
            .map_err(store_error)
    }

    fn handle_upload_part(
        &self,
        key: Vec<u8>,
        upload: i64,
        index: i64,
        data: Vec<u8>,
    ) -> thrift::Result<()> {
        wait(self.node.upload_part(&key, upload, index, &data)).map_err(store_error)
    }

    fn handle_commit_upload(&self, key: Vec<u8>, upload: i64) -> thrift::Result<ValueInfo> {
        let info = wait(self.node.commit_upload(&key, upload)).map_err(store_error)?;
        Ok(convert::value_info(&info))
    }

    fn handle_lock(&self, key: Vec<u8>, ttl_ms: i64) -> thrift::Result<Lease> {
        let op = crate::lease::Op::Lock { ttl_ms };
        let lease = wait(self.node.lease_op(&key, op, 0)).map_err(store_error)?;
        Ok(convert::lease_out(lease))
    }

    fn handle_unlock(&self, key: Vec<u8>, token: i64) -> thrift::Result<()> {
        let op = crate::lease::Op::Unlock { token };
        wait(self.node.lease_op(&key, op, 0))
            .map(drop)
            .map_err(store_error)
    }

    fn handle_renew(&self, key: Vec<u8>, token: i64, ttl_ms: i64) -> thrift::Result<Lease> {
        let op = crate::lease::Op::Renew { token, ttl_ms };
        let lease = wait(self.node.lease_op(&key, op, 0)).map_err(store_error)?;
        Ok(convert::lease_out(lease))
    }

    fn handle_hello(&self, nonce: Vec<u8>) -> thrift::Result<Vec<u8>> {
        self.session.lock().hello(nonce).map_err(app_error)
    }

    fn handle_authenticate(&self, role: String, proof: Vec<u8>) -> thrift::Result<Vec<u8>> {
        let secrets = &self.node.config().secrets;
        self.session
            .lock()
            .authenticate(secrets, &role, &proof)
            .map_err(store_error)
    }
}

impl PeerSyncHandler for Handler {
    fn handle_enter(&self, member: Member) -> thrift::Result<Vec<Member>> {
        let table = match convert::member_state(&member) {
            Some(state) => self.node.enter(state),
            None => self.node.table(),
        };
        Ok(table.iter().map(convert::member).collect())
    }

    fn handle_gossip(&self, members: Vec<Member>) -> thrift::Result<Vec<Member>> {
        crate::peer::within("gossip", members.len(), crate::peer::MAX_ROWS).map_err(app_error)?;
        let rows = members.iter().filter_map(convert::member_state).collect();
        let table = self.node.gossip(rows);
        Ok(table.iter().map(convert::member).collect())
    }

    fn handle_probe(&self, _target: Location) -> thrift::Result<bool> {
        Err(app_error(malformed()))
    }

    fn handle_isolate(&self, on: bool) -> thrift::Result<()> {
        self.node.set_isolated(on).map_err(app_error)
    }

    fn handle_relay_fetch(&self, _key: Vec<u8>, _hops: i8) -> thrift::Result<Lookup> {
        Err(store_error(malformed()))
    }

    fn handle_relay_store(
        &self,
        _key: Vec<u8>,
        _value: Vec<u8>,
        _hops: i8,
        _expires: i64,
        _stamp: i64,
        _origin: i32,
    ) -> thrift::Result<()> {
        Err(store_error(malformed()))
    }

    fn handle_relay_write_with(
        &self,
        key: Vec<u8>,
        value: Vec<u8>,
        options: WriteOptions,
        append: bool,
        hops: i8,
    ) -> thrift::Result<i64> {
        let options = convert::write_options_in(options);
        wait(
            self.node
                .relay_conditional(&key, &value, &options, append, hops),
        )
        .map(|size| size as i64)
        .map_err(store_error)
    }

    fn handle_relay_lease(
        &self,
        key: Vec<u8>,
        op: LeaseOp,
        ttl_ms: i64,
        token: i64,
        hops: i8,
    ) -> thrift::Result<Lease> {
        let op = convert::lease_op_in(op, ttl_ms, token).ok_or_else(|| {
            store_error(Error::refused_here(format!(
                "relay_lease: unknown op {}; this node knows LOCK, UNLOCK and RENEW",
                op.0
            )))
        })?;
        let lease = wait(self.node.lease_op(&key, op, hops)).map_err(store_error)?;
        Ok(convert::lease_out(lease))
    }

    fn handle_relay_erase(
        &self,
        _key: Vec<u8>,
        _hops: i8,
        _expires: i64,
        _stamp: i64,
        _origin: i32,
    ) -> thrift::Result<()> {
        Err(store_error(malformed()))
    }

    fn handle_peek(&self, keys: Vec<Vec<u8>>) -> thrift::Result<Vec<Entry>> {
        let entries = self.node.peek(keys).map_err(store_error)?;
        Ok(convert::entries_out(entries))
    }

    fn handle_diff_buckets(&self, caller: Location, digests: Vec<i64>) -> thrift::Result<Vec<i32>> {
        let caller = caller_of(&caller).map_err(store_error)?;
        self.node
            .diff_buckets(&caller, &digests)
            .map_err(store_error)
    }

    fn handle_reconcile(
        &self,
        caller: Location,
        buckets: Vec<i32>,
        entries: Vec<Entry>,
    ) -> thrift::Result<Vec<Entry>> {
        let caller = caller_of(&caller).map_err(store_error)?;
        let entries = convert::entries_in(entries);
        let newer = self
            .node
            .reconcile(&caller, &buckets, entries)
            .map_err(store_error)?;
        Ok(convert::entries_out(newer))
    }

    fn handle_heartbeat(&self, ring: i64, caller: Location) -> thrift::Result<i64> {
        let ours = match convert::addr(&caller) {
            Some(caller) => self.node.heartbeat(&caller, ring as u64),
            None => self.node.ring_id(),
        };
        Ok(ours as i64)
    }

    fn handle_replica_read(&self, key: Vec<u8>, ring: i64) -> thrift::Result<Replica> {
        let (copy, trusted, ours) = self
            .node
            .replica_read(&key, ring as u64)
            .map_err(store_error)?;
        Ok(convert::replica(copy, trusted, ours))
    }

    fn handle_replicate(&self, entries: Vec<Entry>, ring: i64) -> thrift::Result<()> {
        self.node
            .replicate(convert::entries_in(entries), ring as u64)
            .map_err(store_error)
    }

    fn handle_absorb(&self, entries: Vec<Entry>) -> thrift::Result<()> {
        self.node
            .absorb(convert::entries_in(entries))
            .map(drop)
            .map_err(store_error)
    }
}
