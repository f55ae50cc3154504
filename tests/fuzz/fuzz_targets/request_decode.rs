//! A request's path through the server, from arbitrary bytes: the frame
//! scan with the node's limits, then either the hand-written decoder of the
//! hot methods (`codec::decode`) or the generated processor with the node's
//! own handler, as `wire::server` chooses.
//!
//! Input: the bytes a connection received (seeds: every request of
//! `tests/golden`, strict and not, and hostile ones).
//!
//! Checked:
//! - nothing panics and no allocation passes libFuzzer's `-malloc_limit_mb`
//!   (`scripts/fuzz.sh` sets it): the decoders are bounded by the message,
//!   not by the lengths it declares;
//! - whenever `codec::decode` takes a message, the generated processor reads
//!   the same call from it, with the same arguments (the codec must never
//!   see another request than the generated code would: its unit tests
//!   check this for well-formed calls, this target for any bytes);
//! - a message the codec does not take goes through the generated processor
//!   on a node-less recording handler and on a real node built in memory
//!   (`thrifty_p2p::fuzzing::serve_on_fresh_node`), and a reply, when there
//!   is one, is itself one whole message that echoes the call's header form.

#![no_main]

use std::collections::BTreeMap;
use std::sync::Mutex;

use libfuzzer_sys::fuzz_target;
use thrift::protocol::{TBinaryInputProtocol, TBinaryOutputProtocol};
use thrift::server::TProcessor;
use thrifty_p2p::fuzzing;
use thrifty_p2p::wire::codec::{self, Answer, Call, Method};
use thrifty_p2p::wire::conn::protocol_config;
use thrifty_p2p::wire::convert;
use thrifty_p2p::wire::frame::{self, Frame, Limits, MessageKind};
use thrifty_p2p::wire::idl::diststore::{
    Entry, Fetched, Item, KeyPage, Lease, LeaseOp, Lookup, Outcome, PeerSyncHandler,
    PeerSyncProcessor, Replica, StoreSyncHandler, ValueInfo, WriteOptions,
};
use thrifty_p2p::wire::idl::locator::{BaseSyncHandler, Location, LocatorSyncHandler, Member};

fuzz_target!(|data: &[u8]| {
    let limits = fuzzing::node_limits();
    // The codec on its own, on any bytes, both header forms: no panic.
    let _ = codec::decode(data, true, &limits);
    let _ = codec::decode(data, false, &limits);

    let Ok(Some(frame)) = frame::scan(data, &limits) else {
        return;
    };
    // The server serves calls and oneway calls only (`server::check`).
    if !matches!(frame.kind, MessageKind::Call | MessageKind::Oneway) {
        return;
    }
    let message = &data[..frame.len];
    let hot =
        Method::named(&frame.name).and_then(|_| codec::decode(message, frame.strict, &limits));
    let recorded = record(message, &frame, &limits);
    match hot {
        Some(decoded) => {
            assert_eq!(decoded.method, Method::named(&frame.name).unwrap());
            assert_eq!(decoded.seq, frame.seq);
            let generated = recorded
                .unwrap_or_else(|| panic!("codec took {decoded:?}; the generated code did not"));
            assert_eq!(
                expected(&generated).as_ref(),
                Some(&decoded.call),
                "codec and generated code read different calls"
            );
            // Every reply shape for it encodes without panicking.
            let mut out = Vec::new();
            for answer in [Answer::Copy(None), Answer::Done, Answer::Probed(true)] {
                codec::encode_reply(
                    decoded.method,
                    decoded.seq,
                    frame.strict,
                    Ok(answer),
                    &mut out,
                );
                check_reply(&out, &frame);
            }
        }
        None => {
            let reply = fuzzing::serve_on_fresh_node(message, &frame);
            check_reply(&reply, &frame);
        }
    }
});

/// A reply, if any, is one whole message in the call's header form.
fn check_reply(reply: &[u8], call: &Frame) {
    if reply.is_empty() {
        return;
    }
    let limits = Limits::default();
    let found = frame::scan(reply, &limits)
        .unwrap_or_else(|e| panic!("the reply is not a message: {e}"))
        .expect("the reply is whole");
    assert_eq!(found.len, reply.len(), "one reply, one message");
    assert_eq!(
        found.strict, call.strict,
        "the reply mirrors the header form"
    );
    assert_eq!(found.seq, call.seq, "the reply echoes the sequence id");
}

/// What the generated code read, by method (arguments of the hot methods;
/// the name of any other).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Generated {
    Get(String),
    Put(String, String),
    Fetch(Vec<u8>),
    Store(Vec<u8>, Vec<u8>),
    Erase(Vec<u8>),
    RelayFetch(Vec<u8>, i8),
    RelayStore(Vec<u8>, Vec<u8>, i8, i64, i64, i32),
    RelayErase(Vec<u8>, i8, i64, i64, i32),
    Probe(Location),
    Other(&'static str),
}

/// The call the codec should have decoded, from what the generated code read.
fn expected(generated: &Generated) -> Option<Call> {
    let plain = |key: &[u8], value: Option<&[u8]>| Call::Write {
        key: key.to_vec(),
        value: value.map(<[u8]>::to_vec),
        hops: 0,
        version: None,
        expires: None,
    };
    Some(match generated {
        Generated::Get(key) => Call::Read {
            key: key.clone().into_bytes(),
            hops: 0,
        },
        Generated::Fetch(key) => Call::Read {
            key: key.clone(),
            hops: 0,
        },
        Generated::RelayFetch(key, hops) => Call::Read {
            key: key.clone(),
            hops: *hops,
        },
        Generated::Put(key, value) => plain(key.as_bytes(), Some(value.as_bytes())),
        Generated::Store(key, value) => plain(key, Some(value)),
        Generated::Erase(key) => plain(key, None),
        Generated::RelayStore(key, value, hops, expires, stamp, origin) => Call::Write {
            key: key.clone(),
            value: Some(value.clone()),
            hops: *hops,
            version: Some(convert::version(*stamp, *origin)),
            expires: Some(*expires),
        },
        Generated::RelayErase(key, hops, expires, stamp, origin) => Call::Write {
            key: key.clone(),
            value: None,
            hops: *hops,
            version: Some(convert::version(*stamp, *origin)),
            expires: Some(*expires),
        },
        Generated::Probe(location) => Call::Probe(convert::addr(location)),
        Generated::Other(_) => return None,
    })
}

/// Runs `message` through the generated processor, as `server::process`
/// does (same protocol limits), on a handler that only records what it was
/// called with. `None` when no handler method was reached.
fn record(message: &[u8], frame: &Frame, limits: &Limits) -> Option<Generated> {
    let within = Limits {
        max_message: message.len(),
        ..*limits
    };
    let mut input =
        TBinaryInputProtocol::with_config(message, frame.strict, protocol_config(&within));
    let mut reply = Vec::new();
    let mut output = TBinaryOutputProtocol::new(&mut reply, frame.strict);
    let processor = PeerSyncProcessor::new(Recorder);
    let _ = processor.process(&mut input, &mut output);
    check_reply(&reply, frame);
    // The processor owns the handler; take what it saw through a global.
    SEEN.lock().unwrap().take()
}

static SEEN: Mutex<Option<Generated>> = Mutex::new(None);

/// A handler that records its one call (see [`record`]).
struct Recorder;

impl Recorder {
    /// Records `call`, and answers with an application error (whose reply
    /// every method can carry).
    fn saw<T>(&self, call: Generated) -> thrift::Result<T> {
        let previous = SEEN.lock().unwrap().replace(call);
        assert!(previous.is_none(), "one message, one handler call");
        Err(thrift::Error::Application(thrift::ApplicationError::new(
            thrift::ApplicationErrorKind::Unknown,
            "recorded",
        )))
    }
}

impl BaseSyncHandler for Recorder {
    fn handle_ping(&self) -> thrift::Result<()> {
        self.saw(Generated::Other("ping"))
    }
    fn handle_service_type(&self) -> thrift::Result<String> {
        self.saw(Generated::Other("service_type"))
    }
    fn handle_service_types(&self) -> thrift::Result<Vec<String>> {
        self.saw(Generated::Other("service_types"))
    }
    fn handle_debug(&self) -> thrift::Result<()> {
        self.saw(Generated::Other("debug"))
    }
    fn handle_die(&self) -> thrift::Result<()> {
        self.saw(Generated::Other("die"))
    }
}

impl LocatorSyncHandler for Recorder {
    fn handle_join(&self, _: Location) -> thrift::Result<()> {
        self.saw(Generated::Other("join"))
    }
    fn handle_remove(&self, _: Location, _: Vec<Location>) -> thrift::Result<()> {
        self.saw(Generated::Other("remove"))
    }
    fn handle_add(&self, _: Location, _: Vec<Location>) -> thrift::Result<()> {
        self.saw(Generated::Other("add"))
    }
    fn handle_get_all(&self) -> thrift::Result<Vec<Location>> {
        self.saw(Generated::Other("get_all"))
    }
    fn handle_get_node(&self, _: String) -> thrift::Result<Location> {
        self.saw(Generated::Other("get_node"))
    }
    fn handle_locate(&self, _: Vec<u8>) -> thrift::Result<Location> {
        self.saw(Generated::Other("locate"))
    }
    fn handle_replicas(&self, _: Vec<u8>, _: i32) -> thrift::Result<Vec<Location>> {
        self.saw(Generated::Other("replicas"))
    }
}

impl StoreSyncHandler for Recorder {
    fn handle_get(&self, key: String) -> thrift::Result<String> {
        self.saw(Generated::Get(key))
    }
    fn handle_put(&self, key: String, value: String) -> thrift::Result<()> {
        self.saw(Generated::Put(key, value))
    }
    fn handle_fetch(&self, key: Vec<u8>) -> thrift::Result<Lookup> {
        self.saw(Generated::Fetch(key))
    }
    fn handle_store(&self, key: Vec<u8>, value: Vec<u8>) -> thrift::Result<()> {
        self.saw(Generated::Store(key, value))
    }
    fn handle_erase(&self, key: Vec<u8>) -> thrift::Result<()> {
        self.saw(Generated::Erase(key))
    }
    fn handle_store_with(&self, _: Vec<u8>, _: Vec<u8>, _: WriteOptions) -> thrift::Result<()> {
        self.saw(Generated::Other("store_with"))
    }
    fn handle_append(&self, _: Vec<u8>, _: Vec<u8>, _: WriteOptions) -> thrift::Result<i64> {
        self.saw(Generated::Other("append"))
    }
    fn handle_lock(&self, _: Vec<u8>, _: i64) -> thrift::Result<Lease> {
        self.saw(Generated::Other("lock"))
    }
    fn handle_unlock(&self, _: Vec<u8>, _: i64) -> thrift::Result<()> {
        self.saw(Generated::Other("unlock"))
    }
    fn handle_renew(&self, _: Vec<u8>, _: i64, _: i64) -> thrift::Result<Lease> {
        self.saw(Generated::Other("renew"))
    }
    fn handle_stats(&self) -> thrift::Result<BTreeMap<String, i64>> {
        self.saw(Generated::Other("stats"))
    }
    fn handle_members(&self) -> thrift::Result<Vec<Member>> {
        self.saw(Generated::Other("members"))
    }
    fn handle_list_keys(&self, _: Vec<u8>, _: Vec<u8>, _: i32) -> thrift::Result<KeyPage> {
        self.saw(Generated::Other("list_keys"))
    }
    fn handle_fetch_many(&self, _: Vec<Vec<u8>>) -> thrift::Result<Vec<Fetched>> {
        self.saw(Generated::Other("fetch_many"))
    }
    fn handle_store_many(&self, _: Vec<Item>) -> thrift::Result<Vec<Outcome>> {
        self.saw(Generated::Other("store_many"))
    }
    fn handle_describe(&self, _: Vec<u8>) -> thrift::Result<ValueInfo> {
        self.saw(Generated::Other("describe"))
    }
    fn handle_read_range(&self, _: Vec<u8>, _: i64, _: i32, _: i64) -> thrift::Result<Vec<u8>> {
        self.saw(Generated::Other("read_range"))
    }
    fn handle_begin_upload(&self, _: Vec<u8>) -> thrift::Result<i64> {
        self.saw(Generated::Other("begin_upload"))
    }
    fn handle_upload_part(&self, _: Vec<u8>, _: i64, _: i64, _: Vec<u8>) -> thrift::Result<()> {
        self.saw(Generated::Other("upload_part"))
    }
    fn handle_commit_upload(&self, _: Vec<u8>, _: i64) -> thrift::Result<ValueInfo> {
        self.saw(Generated::Other("commit_upload"))
    }
    fn handle_hello(&self, _: Vec<u8>) -> thrift::Result<Vec<u8>> {
        self.saw(Generated::Other("hello"))
    }
    fn handle_authenticate(&self, _: String, _: Vec<u8>) -> thrift::Result<Vec<u8>> {
        self.saw(Generated::Other("authenticate"))
    }
}

impl PeerSyncHandler for Recorder {
    fn handle_enter(&self, _: Member) -> thrift::Result<Vec<Member>> {
        self.saw(Generated::Other("enter"))
    }
    fn handle_gossip(&self, _: Vec<Member>) -> thrift::Result<Vec<Member>> {
        self.saw(Generated::Other("gossip"))
    }
    fn handle_probe(&self, target: Location) -> thrift::Result<bool> {
        self.saw(Generated::Probe(target))
    }
    fn handle_isolate(&self, _: bool) -> thrift::Result<()> {
        self.saw(Generated::Other("isolate"))
    }
    fn handle_relay_fetch(&self, key: Vec<u8>, hops: i8) -> thrift::Result<Lookup> {
        self.saw(Generated::RelayFetch(key, hops))
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
        self.saw(Generated::RelayStore(
            key, value, hops, expires, stamp, origin,
        ))
    }
    fn handle_relay_lease(
        &self,
        _: Vec<u8>,
        _: LeaseOp,
        _: i64,
        _: i64,
        _: i8,
    ) -> thrift::Result<Lease> {
        self.saw(Generated::Other("relay_lease"))
    }
    fn handle_relay_write_with(
        &self,
        _: Vec<u8>,
        _: Vec<u8>,
        _: WriteOptions,
        _: bool,
        _: i8,
    ) -> thrift::Result<i64> {
        self.saw(Generated::Other("relay_write_with"))
    }
    fn handle_relay_erase(
        &self,
        key: Vec<u8>,
        hops: i8,
        expires: i64,
        stamp: i64,
        origin: i32,
    ) -> thrift::Result<()> {
        self.saw(Generated::RelayErase(key, hops, expires, stamp, origin))
    }
    fn handle_peek(&self, _: Vec<Vec<u8>>) -> thrift::Result<Vec<Entry>> {
        self.saw(Generated::Other("peek"))
    }
    fn handle_diff_buckets(&self, _: Location, _: Vec<i64>) -> thrift::Result<Vec<i32>> {
        self.saw(Generated::Other("diff_buckets"))
    }
    fn handle_reconcile(
        &self,
        _: Location,
        _: Vec<i32>,
        _: Vec<Entry>,
    ) -> thrift::Result<Vec<Entry>> {
        self.saw(Generated::Other("reconcile"))
    }
    fn handle_heartbeat(&self, _: i64, _: Location) -> thrift::Result<i64> {
        self.saw(Generated::Other("heartbeat"))
    }
    fn handle_replica_read(&self, _: Vec<u8>, _: i64) -> thrift::Result<Replica> {
        self.saw(Generated::Other("replica_read"))
    }
    fn handle_replicate(&self, _: Vec<Entry>, _: i64) -> thrift::Result<()> {
        self.saw(Generated::Other("replicate"))
    }
    fn handle_absorb(&self, _: Vec<Entry>) -> thrift::Result<()> {
        self.saw(Generated::Other("absorb"))
    }
}
