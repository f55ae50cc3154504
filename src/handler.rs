//! `Handler`: the generated Thrift service traits, implemented by calling `Node`.
//! Only conversion and error mapping live here; decisions are the node's.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;

use thrift::{ApplicationError, ApplicationErrorKind};

use crate::addr::NodeAddr;
use crate::convert;
use crate::error::Error;
use crate::idl::diststore::{
    Entry, Lookup, Replica, StoreError, StoreSyncHandler, StoreSyncProcessor,
};
use crate::idl::locator::{BaseSyncHandler, Location, LocatorSyncHandler, Member};
use crate::node::Node;
use crate::store::Stored;
use crate::version::Version;

/// The most derived service a node implements.
pub const SERVICE_TYPE: &str = "diststore.Store";

/// Every service a node implements, base first.
pub const SERVICE_TYPES: [&str; 3] = ["locator.Base", "locator.Locator", "diststore.Store"];

/// Methods declared `oneway` in the IDL. The server never answers them, even
/// when the caller marked the message as a plain call.
pub const ONEWAY_METHODS: [&str; 6] = ["debug", "die", "join", "remove", "add", "put"];

/// Methods only nodes call on each other (and `ping`, which failure detection
/// uses): what an isolated node drops, to simulate a partition.
pub const PEER_METHODS: [&str; 16] = [
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
    "peek",
    "diff_buckets",
    "reconcile",
];

/// Whether a method is node-to-node traffic (`absorb` included).
pub fn is_peer_method(name: &str) -> bool {
    name == "absorb" || PEER_METHODS.contains(&name)
}

/// Methods that may wait on other nodes. The server serves them
/// asynchronously ([`serve_async`]), so they never block a tokio worker.
pub const ASYNC_METHODS: [&str; 9] = [
    "get",
    "put",
    "fetch",
    "store",
    "erase",
    "relay_fetch",
    "relay_store",
    "relay_erase",
    "probe",
];

/// A call that may wait, as an asynchronously served method asks for it.
#[derive(Debug)]
pub enum Call {
    /// `get`, `fetch`, `relay_fetch`.
    Read {
        /// The key.
        key: Vec<u8>,
        /// Forwards so far.
        hops: i8,
    },
    /// `put`, `store`, `erase` and their relays.
    Write {
        /// The key.
        key: Vec<u8>,
        /// The value; `None` erases.
        value: Option<Vec<u8>>,
        /// Forwards so far.
        hops: i8,
        /// The write's version, if relayed (the entry node took it).
        version: Option<Version>,
        /// When the relaying node stops waiting, if relayed.
        expires: Option<i64>,
    },
    /// `probe`: ping a member on a peer's behalf.
    Probe(NodeAddr),
}

/// The outcome of a [`Call`].
#[derive(Debug)]
pub enum Answer {
    /// A read's copy, tombstone included (`None`: never seen).
    Copy(Option<Stored>),
    /// A write was stored.
    Done,
    /// Whether the probed member answered.
    Probed(bool),
}

type Outcome = Result<Answer, Error>;

/// How the handler treats the asynchronously served methods. The generated
/// processor does all decoding and encoding. The server runs it once; a call
/// that can be answered at once is answered in that pass. Any other call is
/// captured, served asynchronously, and a second pass replays its answer as
/// the reply.
enum Mode {
    /// Serving everything else; the async methods never reach it.
    Serve,
    /// Serve the call at once if it needs no waiting (the reply the processor
    /// writes is then the answer); otherwise record it, and the reply written
    /// is thrown away.
    Capture(Arc<Mutex<Option<Call>>>),
    /// Answer with the outcome computed already.
    Replay(Arc<Mutex<Option<Outcome>>>),
}

/// Serves one connection's calls.
pub struct Handler {
    node: Arc<Node>,
    mode: Mode,
}

impl Handler {
    /// A handler for `node`.
    pub fn new(node: Arc<Node>) -> Self {
        Handler {
            node,
            mode: Mode::Serve,
        }
    }

    fn capture(&self, call: Call) {
        if let Mode::Capture(slot) = &self.mode {
            *slot.lock() = Some(call);
        }
    }

    fn replayed(&self) -> Outcome {
        match &self.mode {
            Mode::Replay(slot) => slot.lock().take().unwrap_or(Err(Error::NoOwner)),
            _ => Err(not_async()),
        }
    }

    /// A read: its copy (tombstone included) or `None`.
    fn read(&self, key: Vec<u8>, hops: i8) -> Result<Option<Stored>, Error> {
        match &self.mode {
            // A relayed read answers with the copy's version, which only
            // the async path gives.
            Mode::Capture(_) => match (hops == 0)
                .then(|| self.node.fetch_now(&key, hops))
                .flatten()
            {
                Some(answer) => answer.map(|v| {
                    v.map(|value| Stored {
                        value: Some(value),
                        version: Version::default(),
                    })
                }),
                None => {
                    self.capture(Call::Read { key, hops });
                    Ok(None)
                }
            },
            Mode::Replay(_) => match self.replayed()? {
                Answer::Copy(copy) => Ok(copy),
                other => Err(mismatch(&other)),
            },
            Mode::Serve => Err(not_async()),
        }
    }

    fn write(
        &self,
        key: Vec<u8>,
        value: Option<Vec<u8>>,
        hops: i8,
        version: Option<Version>,
        expires: Option<i64>,
    ) -> Result<(), Error> {
        match &self.mode {
            Mode::Capture(_) => {
                let now = if version.is_none() {
                    self.node.write_now(&key, value.as_deref(), hops, expires)
                } else {
                    None
                };
                match now {
                    Some(answer) => answer,
                    None => {
                        self.capture(Call::Write {
                            key,
                            value,
                            hops,
                            version,
                            expires,
                        });
                        Ok(())
                    }
                }
            }
            Mode::Replay(_) => self.replayed().map(drop),
            Mode::Serve => Err(not_async()),
        }
    }
}

fn not_async() -> Error {
    Error::Refused {
        peer: "this node".into(),
        message: "internal error: an async method reached the synchronous handler".into(),
    }
}

fn mismatch(answer: &Answer) -> Error {
    Error::Refused {
        peer: "this node".into(),
        message: format!("internal error: unexpected answer {answer:?}"),
    }
}

/// Serves one asynchronously served message (see [`ASYNC_METHODS`]): the
/// generated processor decodes it, the node serves the call without blocking,
/// and the processor encodes the answer into `reply`. `run` runs a processor
/// over the message and `reply` (decoding and encoding limits are the
/// server's business).
pub async fn serve_async(node: &Arc<Node>, mut run: impl FnMut(&StoreSyncProcessor<Handler>)) {
    let captured = Arc::new(Mutex::new(None));
    run(&StoreSyncProcessor::new(Handler {
        node: node.clone(),
        mode: Mode::Capture(captured.clone()),
    }));
    // No call captured: it was served at once, or its arguments did not
    // decode; either way the processor has written the reply already.
    let Some(call) = captured.lock().take() else {
        return;
    };
    let outcome = match call {
        Call::Read { key, hops } => node.fetch_copy(&key, hops).await.map(Answer::Copy),
        Call::Write {
            key,
            value,
            hops,
            version,
            expires,
        } => node
            .write(&key, value.as_deref(), hops, version, expires)
            .await
            .map(|()| Answer::Done),
        Call::Probe(target) => Ok(Answer::Probed(node.probe_for_peer(&target).await)),
    };
    run(&StoreSyncProcessor::new(Handler {
        node: node.clone(),
        mode: Mode::Replay(Arc::new(Mutex::new(Some(outcome)))),
    }));
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

/// The calling node named in an anti-entropy call.
fn caller_of(location: &Location) -> Result<NodeAddr, Error> {
    convert::addr(location).ok_or_else(|| Error::Refused {
        peer: "this node".into(),
        message: "the caller's location is empty".into(),
    })
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
        let table = match convert::member_state(&member) {
            Some(state) => self.node.enter(state),
            None => self.node.table(),
        };
        Ok(table.iter().map(convert::member).collect())
    }

    fn handle_gossip(&self, members: Vec<Member>) -> thrift::Result<Vec<Member>> {
        let rows = members.iter().filter_map(convert::member_state).collect();
        let table = self.node.gossip(rows);
        Ok(table.iter().map(convert::member).collect())
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
        match &self.mode {
            Mode::Capture(_) => {
                self.capture(Call::Probe(target));
                Ok(false)
            }
            Mode::Replay(_) => match self.replayed() {
                Ok(Answer::Probed(answered)) => Ok(answered),
                Ok(other) => Err(app_error(mismatch(&other))),
                Err(e) => Err(app_error(e)),
            },
            Mode::Serve => Err(app_error(not_async())),
        }
    }

    fn handle_isolate(&self, on: bool) -> thrift::Result<()> {
        self.node.set_isolated(on).map_err(app_error)
    }
}

impl StoreSyncHandler for Handler {
    fn handle_get(&self, key: String) -> thrift::Result<String> {
        let value = self
            .read(key.into_bytes(), 0)
            .map_err(app_error)?
            .and_then(|s| s.value);
        // The 2009 interface answers "" for a missing key, and its values are text.
        Ok(value
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .unwrap_or_default())
    }

    fn handle_put(&self, key: String, value: String) -> thrift::Result<()> {
        // Oneway: nobody hears an error, so log it rather than return it.
        let size = value.len();
        if let Err(e) = self.write(key.into_bytes(), Some(value.into_bytes()), 0, None, None) {
            log::warn!("put of a {size}-byte value failed: {e}");
        }
        Ok(())
    }

    fn handle_fetch(&self, key: Vec<u8>) -> thrift::Result<Lookup> {
        let value = self
            .read(key, 0)
            .map_err(store_error)?
            .and_then(|s| s.value);
        Ok(Lookup::new(value, None, None))
    }

    fn handle_store(&self, key: Vec<u8>, value: Vec<u8>) -> thrift::Result<()> {
        self.write(key, Some(value), 0, None, None)
            .map_err(store_error)
    }

    fn handle_erase(&self, key: Vec<u8>) -> thrift::Result<()> {
        self.write(key, None, 0, None, None).map_err(store_error)
    }

    fn handle_stats(&self) -> thrift::Result<BTreeMap<String, i64>> {
        Ok(self.node.stats())
    }

    fn handle_relay_fetch(&self, key: Vec<u8>, hops: i8) -> thrift::Result<Lookup> {
        let copy = self.read(key, hops).map_err(store_error)?;
        Ok(convert::lookup(copy))
    }

    fn handle_relay_store(
        &self,
        key: Vec<u8>,
        value: Vec<u8>,
        hops: i8,
        expires: i64,
        stamp: i64,
        origin: i32,
    ) -> thrift::Result<()> {
        let version = convert::version(stamp, origin);
        self.write(key, Some(value), hops, Some(version), Some(expires))
            .map_err(store_error)
    }

    fn handle_relay_erase(
        &self,
        key: Vec<u8>,
        hops: i8,
        expires: i64,
        stamp: i64,
        origin: i32,
    ) -> thrift::Result<()> {
        let version = convert::version(stamp, origin);
        self.write(key, None, hops, Some(version), Some(expires))
            .map_err(store_error)
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
